import Foundation
import NPAControlProtocol

/// What the PF driver tells the event log: each phase a vNIC's switch reaches, read from its
/// switch machine right after the machine took the step (so the log says what the machine
/// decided, in the order it decided it), with the time since the switch was requested; a VF
/// reset; a switch that ended short of its goal, and why. Called only at switch steps.
extension PFDriver {
    /// The step the switch machine of `device` just took (an event it accepted).
    func noteSwitchStep(_ device: EmulatedDevice, now: UInt64) {
        let s = device.switching
        let since = Self.milliseconds(now &- s.startedAt)
        switch s.state {
        case .switchInRequested(let lease):
            events.record(.switchPhase, vnic: device.name, "switch-in requested: \(Self.name(lease)) reserved, DIC raised")
        case .switchInOffered(let lease):
            events.record(.switchPhase, vnic: device.name, "switch-in offered: plugin \(lease.plugin) (\(since) since the request)")
        case .switchInPrepared(let lease):
            events.record(.switchPhase, vnic: device.name, "switch-in: \(Self.name(lease)) queues programmed (\(since))")
        case .passthrough(let lease):
            let took = s.lastSwitchMilliseconds.map { String(format: "%.2f ms", $0) } ?? since
            if let ms = s.lastSwitchMilliseconds { metrics?.recordSwitch(vnic: device.name, direction: "in", milliseconds: ms) }
            events.record(.switchPhase, vnic: device.name, "passthrough on \(Self.name(lease)) (\(lease.plugin)) after \(took)")
        case .switchOutRequested(let lease):
            events.record(.switchPhase, vnic: device.name, "switch-out requested from \(Self.name(lease)), DIC raised")
        case .switchOutAfterReset(let lease, _):
            events.record(
                .vfReset, vnic: device.name, "\(Self.name(lease)) reset (FLR): \(s.reason ?? "by the host"); switching the guest out")
        case .switchOutQuiesced(let lease, _):
            events.record(.switchPhase, vnic: device.name, "switch-out: \(Self.name(lease)) quiesced, MAC back on the vswitch (\(since))")
        case .emulated:
            if let took = s.lastSwitchMilliseconds {
                metrics?.recordSwitch(vnic: device.name, direction: "out", milliseconds: took)
                events.record(.switchPhase, vnic: device.name, "emulated after \(String(format: "%.2f ms", took)); VF released")
            } else {
                events.record(.switchFailed, vnic: device.name, s.reason ?? "the switch-in was abandoned")
            }
        }
    }

    /// The guest was offered the switch-out it must carry out (the switch-in offer is a step).
    func noteSwitchOutOffered(_ device: EmulatedDevice, now: UInt64) {
        let since = Self.milliseconds(now &- device.switching.startedAt)
        events.record(.switchPhase, vnic: device.name, "switch-out offered (\(since) since the request)")
    }

    /// A switch step's deadline was checked: what the machine made of it, if it changed its
    /// reason (`reasonBefore` is the one before the check).
    func noteSwitchDeadline(_ device: EmulatedDevice, reasonBefore: String?) {
        guard let reason = device.switching.reason, reason != reasonBefore else { return }
        events.record(.switchFailed, vnic: device.name, reason)
    }

    private static func name(_ lease: VNICSwitchMachine.VFLease) -> String { "\(lease.nic)/vf\(lease.index)" }

    private static func milliseconds(_ nanoseconds: UInt64) -> String { String(format: "%.2f ms", Double(nanoseconds) / 1e6) }
}
