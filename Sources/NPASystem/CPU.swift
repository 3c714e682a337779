import CNPAShim

/// Hints to the processor for the polling and batch loops of the data paths. No system call, no
/// effect on correctness: each is one instruction, inlined.
public enum CPU {
    /// A spin-wait pause (`pause` on x86, `yield` on arm64): lets an SMT sibling run and saves
    /// power while polling a word another core will write.
    @inlinable @inline(__always)
    public static func relax() {
        cnpa_cpu_relax()
    }

    /// Starts pulling the cache line at `pointer` toward this core for reading (never faults).
    /// The data paths issue these for a whole batch before touching any of it, so the misses on
    /// lines another core wrote overlap instead of queueing one behind the other.
    @inlinable @inline(__always)
    public static func prefetch(_ pointer: UnsafeRawPointer) {
        cnpa_prefetch(pointer)
    }

    /// The same for a line about to be written.
    @inlinable @inline(__always)
    public static func prefetchForWrite(_ pointer: UnsafeRawPointer) {
        cnpa_prefetch_for_write(pointer)
    }
}
