import NPASystem

/// SIGINT and SIGTERM for a command that runs a loop: the signals signal an eventfd, and the loop
/// asks `requested` between batches. The eventfd is looked at once per 50 ms of the clock (read
/// through the vDSO, no syscall), not on every turn: that would be a syscall per batch. Once
/// seen, the request stays.
final class TerminationCheck {
    private let signal: EventNotifier
    private var nextLook: UInt64 = 0
    private var seen = false

    init() throws {
        signal = try EventNotifier()
        TerminationSignals.deliver(to: signal.fd.rawValue)
    }

    var requested: Bool {
        if seen { return true }
        let now = Clock.monotonicNanoseconds()
        guard now >= nextLook else { return false }
        nextLook = now + 50_000_000
        seen = signal.drain() > 0
        return seen
    }
}
