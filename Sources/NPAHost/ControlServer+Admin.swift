import NPAControlProtocol

/// The admin socket's requests (status, switches, VF resets, migrations, events, captures,
/// policy, metrics), and the same requests refused on a guest's connection.
extension ControlServer {
    /// An administrative request on a guest's connection: refused, counted, nothing changed.
    func refuseAdministrative(_ message: ControlMessage, from c: Connection) {
        adminRefused &+= 1
        if adminRefused & (adminRefused - 1) == 0 {  // logged at 1, 2, 4, 8, ...
            logger.warning(
                "administrative request refused on a guest's connection (\(adminRefused) so far); the admin socket is \(adminSocketPath)")
        }
        reply(c, ControlRefusal.administrativeOnGuestConnection.reply)
    }

    /// A request on the admin socket; anything else is refused as a guest's message there.
    func handleAdmin(_ message: ControlMessage, from c: Connection) {
        switch message {
        case .statusRequest:
            reply(c, .statusReply(json: HostStatus.report(dataPath: dataPath, pfDriver: pfDriver, server: self).json()))
        case .adminSwitch(let name, let toPassthrough):
            guard let d = dataPath.device(named: name) else {
                return reply(c, ControlRefusal.noSuchVNIC(name).reply, about: name)
            }
            switch pfDriver.requestSwitch(d, toPassthrough: toPassthrough) {
            case .success(let note): reply(c, .ok(note))
            case .failure(let r): reply(c, ControlRefusal.switching(r).reply, about: name)
            }
        case .adminResetVF(let name):
            guard let d = dataPath.device(named: name) else {
                return reply(c, ControlRefusal.noSuchVNIC(name).reply, about: name)
            }
            switch pfDriver.resetVF(d) {
            case .success(let note): reply(c, .ok(note))
            case .failure(let r): reply(c, ControlRefusal.switching(r).reply, about: name)
            }
        case .adminMigrate(let name, let destination):
            guard let migrations else { return reply(c, ControlRefusal.migration("this host cannot migrate guests").reply) }
            switch migrations.start(vnic: name, to: destination) {
            case .success(let id): reply(c, .ok("\(id)"))
            case .failure(let refusal): reply(c, ControlRefusal.migration(refusal.description).reply, about: name)
            }
        case .eventsRequest(let after):
            serveEvents(after: after, to: c)
        case .metricsRefresh: refreshMetrics(for: c)
        case .policySet, .policyRequest: handlePolicy(message, from: c)
        case .captureStop: stopCapture(on: c)
        default:
            reply(c, ControlRefusal.guestMessageOnAdminSocket.reply)
        }
    }
}
