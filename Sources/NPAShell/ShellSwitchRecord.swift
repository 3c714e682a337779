import Foundation
import NPASystem

/// What the shell's switches did, for people and tools (`npa guest`, `npa soak`, the tests):
/// the duration of each completed switch, what the last failed one said, and every transition,
/// oldest first (the last 256), timed from attach. Moves to another host are kept apart
/// (`moveDurations`, `lastMoveError`), their transitions in the same log.
///
/// A plain value; only `ShellSwitcher` writes it.
struct ShellSwitchRecord {
    private(set) var durations: [Double] = []
    private(set) var switchInDurations: [Double] = []
    private(set) var switchOutDurations: [Double] = []
    private(set) var lastError: String?
    private(set) var moveDurations: [Double] = []
    private(set) var lastMoveError: String?
    private(set) var log: [String] = []
    private let startedAt = Clock.monotonicNanoseconds()

    mutating func note(_ text: String) {
        if log.count == 256 { log.removeFirst() }
        log.append(String(format: "%9.3f ms  ", Double(Clock.monotonicNanoseconds() - startedAt) / 1e6) + text)
    }

    /// A switch completed after `milliseconds`; the guest is now in `mode`.
    mutating func completed(switchIn: Bool, milliseconds: Double, mode: String) {
        if switchIn { switchInDurations.append(milliseconds) } else { switchOutDurations.append(milliseconds) }
        durations.append(milliseconds)
        lastError = nil
        note(String(format: "now %@ (%.3f ms)", mode, milliseconds))
    }

    /// A switch failed; the guest stays in `mode`.
    mutating func failed(_ reason: String, mode: String) {
        lastError = reason
        note("switch failed, staying \(mode): \(reason)")
    }

    /// A move completed after `milliseconds`; the vNIC is attached to the host at `host` now.
    mutating func completedMove(milliseconds: Double, host: String) {
        moveDurations.append(milliseconds)
        lastMoveError = nil
        note(String(format: "now on %@ (%.3f ms)", host, milliseconds))
    }

    /// A move failed; the vNIC stays on its host.
    mutating func moveFailed(_ reason: String) {
        lastMoveError = reason
        note("move failed, staying: \(reason)")
    }
}
