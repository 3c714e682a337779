import CNPAShim

/// Clocks used for measurements and deadlines: monotonic time and the calling thread's CPU time.
/// The monotonic clock is read through the vDSO (no system call on Linux), so a deadline check in
/// a polling loop costs a function call; the thread CPU clock is a real system call, for
/// measurements at the start and end of a run, never per frame.
public enum Clock {
    /// CLOCK_MONOTONIC in nanoseconds.
    @inlinable @inline(__always)
    public static func monotonicNanoseconds() -> UInt64 { cnpa_monotonic_ns() }

    /// CPU time the calling thread has consumed, in nanoseconds (one system call).
    @inlinable @inline(__always)
    public static func threadCPUNanoseconds() -> UInt64 { cnpa_thread_cpu_ns() }
}
