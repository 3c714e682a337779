import NPASystem

/// How the host thread spends its time, for the metrics: the times it slept in epoll for want
/// of work, and how long it slept. Written by the event loop at each sleep (never per frame),
/// read by the metrics sample on the same thread: no lock.
final class HostThreadActivity {
    private(set) var sleeps: UInt64 = 0
    private(set) var sleepNanoseconds: UInt64 = 0

    /// A sleep that began at `asleepAt` (monotonic nanoseconds) just ended.
    func noteSleep(since asleepAt: UInt64) {
        sleeps &+= 1
        sleepNanoseconds &+= Clock.monotonicNanoseconds() &- asleepAt
    }
}
