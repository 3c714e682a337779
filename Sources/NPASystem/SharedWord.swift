import CNPAShim

/// Atomic loads and stores of 32- and 64-bit words in memory another party writes concurrently:
/// the rings and register pages shared by a guest (the shell and its plugin), the host's device
/// emulation, and the NIC model's engines, each possibly in its own process. The only way Swift
/// code outside this module reaches a shared word; every ring field the other side may be writing
/// goes through here, never through a plain load or store the compiler may reorder, merge or tear.
///
/// Why C11 atomics through the shim and not swift-atomics' `UnsafeAtomic` (or the standard
/// library's `Atomic`): these words live in a memfd mapped by two processes, at offsets fixed by
/// the ring formats, and the plugins (freestanding C, `npa_plugin_atomics.h`) access the same
/// words with C11/GCC atomics. `Atomic` must live in Swift-owned storage and cannot be placed at
/// an address; `UnsafeAtomic` could be pointed at the mapping, but then the guarantee that its
/// storage has the layout and lock-free behaviour of a C `_Atomic uint32_t` would be ours to
/// assume, not documented. The shim's accessors are C11 `atomic_load_explicit` /
/// `atomic_store_explicit` on `_Atomic uint32_t`: the same memory model, and the same compiled
/// instructions, as the C on the other side of the ring. Each wrapper is `@inlinable` and
/// `@inline(__always)` over a `static inline` C function, so the hot path compiles to the bare
/// load or store (no call).
///
/// Values are in host byte order: callers convert ring fields (little-endian) themselves.
public enum SharedWord {
    /// Reads a word the other side published with a release store (a descriptor's generation or
    /// status word, a producer or consumer index): everything the other side wrote before
    /// publishing it (the descriptor's other words, the frame bytes) is visible after this load.
    /// Pairs with `storeRelease` on the other side of the ring (guest ↔ host, guest ↔ NIC).
    @inlinable @inline(__always)
    public static func loadAcquire(_ pointer: UnsafeRawPointer) -> UInt32 {
        cnpa_load_acquire_u32(pointer)
    }

    /// Publishes a word the other side will read with `loadAcquire`: every write made before it
    /// (descriptor fields, frame bytes) becomes visible to the other side no later than the word.
    /// The last write of each descriptor or index update.
    @inlinable @inline(__always)
    public static func storeRelease(_ pointer: UnsafeMutableRawPointer, _ value: UInt32) {
        cnpa_store_release_u32(pointer, value)
    }

    /// Reads a word whose value orders nothing else: a flag (sleeping, stop, interrupt mask), an
    /// index this side itself writes, or a field already covered by an acquire on the word that
    /// published it. Atomic only so that it is neither torn nor cached in a register; orderings
    /// come from the fences around it (see `MemoryFence`).
    @inlinable @inline(__always)
    public static func loadRelaxed(_ pointer: UnsafeRawPointer) -> UInt32 {
        cnpa_load_relaxed_u32(pointer)
    }

    /// Writes a word whose value orders nothing else (the counterpart of `loadRelaxed`): a flag,
    /// a doorbell register, or a descriptor field that a later release store publishes.
    @inlinable @inline(__always)
    public static func storeRelaxed(_ pointer: UnsafeMutableRawPointer, _ value: UInt32) {
        cnpa_store_relaxed_u32(pointer, value)
    }

    /// `loadRelaxed` for a 64-bit field (a buffer address in a descriptor): not torn, ordered by
    /// the acquire on the word that published the descriptor.
    @inlinable @inline(__always)
    public static func loadRelaxedU64(_ pointer: UnsafeRawPointer) -> UInt64 {
        cnpa_load_relaxed_u64(pointer)
    }

    /// `storeRelaxed` for a 64-bit field, published by a later release store.
    @inlinable @inline(__always)
    public static func storeRelaxedU64(_ pointer: UnsafeMutableRawPointer, _ value: UInt64) {
        cnpa_store_relaxed_u64(pointer, value)
    }

    /// Replaces a word and returns its old value, sequentially consistent: the waker's half of a
    /// sleep/wake handshake takes the other side's "sleeping" flag so that exactly one waker
    /// signals it (the plugin does the same with `npa_exchange_u32`).
    @inlinable @inline(__always)
    public static func exchange(_ pointer: UnsafeMutableRawPointer, _ value: UInt32) -> UInt32 {
        cnpa_exchange_u32(pointer, value)
    }
}
