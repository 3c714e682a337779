import Glibc

/// Turns SIGINT and SIGTERM into a signal on an eventfd, so a daemon's event loop stops as if
/// asked by its own code: the handler does one async-signal-safe write and nothing else. One per
/// process (signal dispositions are process-wide); touches only the signal handlers and mask.
public enum TerminationSignals {
    nonisolated(unsafe) private static var descriptor: Int32 = -1

    /// From now on SIGINT and SIGTERM signal the eventfd `descriptor` (which must stay open for
    /// the life of the process). Unblocks both: a parent may have started us with them blocked
    /// (the mask is inherited).
    public static func deliver(to descriptor: Int32) {
        Self.descriptor = descriptor
        let handler: @convention(c) (Int32) -> Void = { _ in EventNotifier.signal(descriptor: TerminationSignals.descriptor) }
        signal(SIGINT, handler)
        signal(SIGTERM, handler)
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }
}
