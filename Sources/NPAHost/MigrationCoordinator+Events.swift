import Foundation
import NPAControlProtocol

/// What the migration coordinator tells the host's event log: a migration begun by an admin,
/// and each phase change of either machine, right after the machine made it (before its actions
/// are performed, so nested steps come after in the log), with how long the phase that ended
/// took and, at the end, the whole migration's time or why it failed. Host thread only.
extension MigrationCoordinator {
    func noteBegun(_ m: Outgoing) {
        host.events.record(.migration, vnic: m.name, "migration \(m.id) to \(m.destination) begins (\(m.machine.phase))")
    }

    /// Steps the source machine by `tick` and records a phase change it made.
    func tick(_ m: Outgoing, now: UInt64, wiresDrained: Bool) -> [MigrationSourceMachine.Action] {
        let before = m.machine.phase
        let actions = m.machine.tick(now: now, lastFrameOrAnnouncement: m.lastFrameOrAnnouncement, wiresDrained: wiresDrained)
        notePhase(m, since: before, now: now)
        return actions
    }

    /// Steps the destination machine by `tick` and records a phase change it made.
    func tick(_ m: Incoming, now: UInt64) -> [MigrationDestinationMachine.Action] {
        let before = m.machine.phase
        let actions = m.machine.tick(now: now)
        notePhase(m, since: before, now: now)
        return actions
    }

    func notePhase(_ m: Outgoing, since before: String, now: UInt64) {
        guard m.machine.phase != before else { return }
        var failure: String?
        if case .failed(let why) = m.machine.state { failure = why }
        record(
            vnic: m.name, "migration \(m.id) to \(m.destination)", before: before, after: m.machine.phase, times: m.machine.times,
            failure: failure, now: now)
    }

    func notePhase(_ m: Incoming, since before: String, now: UInt64) {
        guard m.machine.phase != before else { return }
        var failure: String?
        if case .failed(let why) = m.machine.state { failure = why }
        record(
            vnic: m.request?.guestName, "migration \(m.id) from \(m.request?.sourceHost ?? "?")", before: before, after: m.machine.phase,
            times: m.machine.times, failure: failure, now: now)
    }

    private func record(
        vnic: String?, _ what: String, before: String, after: String, times: MigrationTimeline, failure: String?, now: UInt64
    ) {
        var line = "\(what): \(before) -> \(after)"
        if let ended = times.phases.last, ended.name == before { line += String(format: " (%@ took %.2f ms)", before, ended.milliseconds) }
        if after == "completed" { line += String(format: " in %.2f ms", times.totalMilliseconds(now: now)) }
        if let failure { line += ": \(failure)" }
        host.events.record(.migration, vnic: vnic, line)
    }
}
