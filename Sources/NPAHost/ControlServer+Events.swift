import NPAControlProtocol

/// The control server and the event log: what it records (attaches, every refusal it sends,
/// through the one reply funnel) and the admin socket's "events since sequence S" request.
extension ControlServer {
    /// A refusal on its way to a guest or an administrator is recorded with its reason: an
    /// `error` reply, or a register access the device refused (a nonzero status). `vnic`: the
    /// vNIC it concerns when the connection has none (an attach's or an admin's request).
    /// Every admin refusal is recorded; a guest's connection's at its 1st, 2nd, 4th, 8th, ...
    /// (the rate limit the host's logs use), so that a guest sending bad requests in a loop
    /// cannot push everything else out of the log.
    func noteIfRefusal(_ message: ControlMessage, on c: Connection, about vnic: String?) {
        let reason: String
        switch message {
        case .error(let code, let text):
            reason = text
            refusalsByCode[ControlMessage.ErrorCode.name(of: code), default: 0] &+= 1
        case .registerResult(let status, _, let text) where status != 0:
            reason = text
            refusalsByCode["register_access", default: 0] &+= 1
        default: return
        }
        c.refusals &+= 1
        if c.isAdmin { return events.record(.refusal, vnic: vnic, "admin request: \(reason)") }
        guard c.refusals & (c.refusals - 1) == 0 else { return }
        let count = c.refusals == 1 ? "" : " (refusal \(c.refusals) on this connection; recorded at 1, 2, 4, 8, ...)"
        events.record(.refusal, vnic: vnic ?? c.device?.name, reason + count)
    }

    /// A new vNIC runs here (`attach`, or `resume` of one that moved here).
    func noteAttached(_ device: EmulatedDevice, memoryMiB: Int, resumed: Bool) {
        device.events = events
        let how = resumed ? "resumed here from another host as" : "attached as"
        events.record(.attach, vnic: device.name, "\(how) vNIC \(device.id), MAC \(device.mac), \(memoryMiB) MiB")
    }

    /// `eventsRequest`: the page of events after `sequence`, or why not.
    func serveEvents(after sequence: UInt64, to c: Connection) {
        switch events.events(after: sequence) {
        case .success(let batch): reply(c, .eventsReply(batch))
        case .failure(let refusal): reply(c, ControlRefusal.events(refusal).reply)
        }
    }
}
