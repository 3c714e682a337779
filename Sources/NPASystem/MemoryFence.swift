import CNPAShim

/// Thread fences for the handshakes over shared memory that one atomic word cannot order by
/// itself (C11 `atomic_thread_fence`, as the plugins' `npa_fence_seq_cst`). See `SharedWord` for
/// why these are C11 atomics through the shim; inlined, they are the bare fence instruction.
public enum MemoryFence {
    /// Orders earlier writes before later reads. The "store my sleeping flag, then re-check the
    /// ring" half of every sleep/wake handshake, and the "publish work, then read the other
    /// side's sleeping flag" half: both sides (guest, host, NIC engine) fence, so one of them
    /// always sees the other's write and no wake-up is lost.
    @inlinable @inline(__always)
    public static func sequentiallyConsistent() {
        cnpa_fence_seq_cst()
    }

    /// Orders earlier writes before any later write: lets a batch of relaxed descriptor stores be
    /// published by later relaxed stores, with one fence instead of a release on each.
    @inlinable @inline(__always)
    public static func release() {
        cnpa_fence_release()
    }

    /// Orders earlier reads before any later read or write: the counterpart of `release()` after
    /// relaxed loads of words the other side published.
    @inlinable @inline(__always)
    public static func acquire() {
        cnpa_fence_acquire()
    }
}
