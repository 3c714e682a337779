import NPAControlProtocol

/// The guest's side of leaving this host, as the control server hears it: its `switchQuery`
/// after the move's DIC gets the offer, then it answers `moved` (the vNIC is torn down here) or
/// `moveFailed` (the device runs here again). See `HostDaemon+Departure.swift`.
extension ControlServer {
    /// The move offer for `device`'s guest, if one is waiting; marks it taken.
    func takeMoveOffer(for device: EmulatedDevice) -> ControlMessage.SwitchOffer? {
        guard var departure = departures[device.name], departure.device === device, let destination = departure.destination else {
            return nil
        }
        departure.offerTaken = true
        departures[device.name] = departure
        logger.info("vNIC '\(device.name)': the guest took the move offer to \(destination.controlSocket)")
        return .init(kind: .move, destination: destination)
    }

    /// The guest runs on the destination: acknowledged, then its vNIC here is torn down (its
    /// MAC, name and port are free again). Nobody here sees a host go away.
    func guestMoved(_ device: EmulatedDevice, connection c: Connection) {
        guard let departure = departures[device.name], departure.offerTaken else { return reply(c, ControlRefusal.noMoveUnderWay.reply) }
        departures[device.name] = nil
        reply(c, .ok("departed"))
        if departure.retainAfterMove {
            // The device stays (stopped) with its port until the migration's forwarding ends.
            departed[device.name] = device
            c.device = nil
            // The doorbell is the destination's now: a kick drained here would be lost there.
            epoll.remove(device.doorbell.fd)
        }
        closeConnection(c, reason: "moved to \(departure.destination?.controlSocket ?? "another host")")
        report(.departed(name: device.name))
    }

    /// The guest could not move: its device runs here again.
    func guestFailedToMove(_ device: EmulatedDevice, reason: String, connection c: Connection) {
        guard let departure = departures[device.name], departure.offerTaken else { return reply(c, ControlRefusal.noMoveUnderWay.reply) }
        departures[device.name] = nil
        departure.device.resume()
        let why = String(reason.prefix(256))
        logger.warning("vNIC '\(device.name)' stays: the guest could not move: \(why)")
        reply(c, .ok("staying"))
        report(.moveFailed(name: device.name, reason: why))
    }
}
