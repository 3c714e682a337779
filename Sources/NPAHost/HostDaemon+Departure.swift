import NPAControlProtocol

/// The source half of moving a vNIC to another host (the orchestration calls it; the guest's
/// answers come through `ControlServer+Departure.swift`):
///
///     beginDeparture(named:)  device stopped and saved → the state's bytes (for the destination)
///     offerMove(named:...)    DIC: the guest's next switchQuery gets a `move` offer
///     guest: moved            → the vNIC is torn down here, MoveEvent.departed
///     guest: moveFailed       → the device runs here again, MoveEvent.moveFailed
///     abortDeparture(named:)  before the guest took the offer: the device runs here again
///
/// While it leaves, the vNIC does no data-path work here (frames the guest posts stay in its
/// TX ring for the destination's device) and refuses configuration changes (they would not
/// travel with the saved state). Every call runs on the host's thread, between data-path passes.
extension HostDaemon {
    /// Starts moving the vNIC of guest `name` away: stops its device and returns its saved
    /// state, encoded (`DeviceState+Codec.swift`). Only an emulated vNIC with no switch under
    /// way leaves (the orchestration switches it out first). A refusal changes nothing.
    ///
    /// `retainingAfterMove`: when the guest says `moved`, keep the stopped device (its port, so
    /// frames still reaching this host for the guest are held for forwarding) until
    /// `releaseDeparted(named:)`; otherwise it is torn down at once.
    package func beginDeparture(named name: String, retainingAfterMove: Bool = false) throws(DepartureRefusal) -> [UInt8] {
        guard let device = dataPath.device(named: name) else { throw .noSuchVNIC(name) }
        guard server.departures[name] == nil else { throw .alreadyLeaving(name) }
        if let reason = unsavableReason(device) { throw .notMovable(reason) }
        guard device.switchOverflow == nil else {
            throw .notMovable("frames parked at vNIC '\(name)''s last switch-out are still being delivered")
        }
        device.stop()
        // What is left of its announcements from an arrival here must not go out once it leaves:
        // a late round would pull the network back to this host from the destination's port.
        dataPath.cancelAnnouncements(for: device)
        let saved = device.save()
        do {
            try saved.validate()
        } catch {
            device.resume()
            throw .state("\(error)")
        }
        server.departures[name] = Departure(device: device, retainAfterMove: retainingAfterMove)
        logger.info("vNIC '\(name)' stopped and saved to leave this host")
        return saved.encoded()
    }

    /// Tells the guest of the leaving vNIC `name` to move to the host at `controlSocket`, which
    /// expects it under `token` (`expectArrival`): raises DIC as a switch does.
    package func offerMove(named name: String, controlSocket: String, token: MoveToken) throws(DepartureRefusal) {
        guard var departure = server.departures[name] else { throw .notLeaving(name) }
        guard departure.destination == nil else { throw .offerAlreadyMade(name) }
        guard token.isWellFormed else { throw .malformedToken }
        guard !controlSocket.isEmpty, controlSocket.utf8.count <= HostDaemon.maximumSocketPathBytes else {
            throw .badDestination(controlSocket)
        }
        departure.destination = .init(controlSocket: controlSocket, token: token)
        server.departures[name] = departure
        departure.device.raiseDeviceImplementationChange()
        logger.info("vNIC '\(name)': move to \(controlSocket) offered, DIC raised")
    }

    /// Calls off the departure of `name` (the destination refused, the transfer failed): its
    /// device runs here again. Refused once the guest took the offer — it may be resuming on the
    /// destination; its `moved` or `moveFailed` (or its connection closing) settles it. Nothing
    /// to undo (the guest's `moveFailed` already resumed it) is not an error.
    package func abortDeparture(named name: String) throws(DepartureRefusal) {
        guard let departure = server.departures[name] else {
            guard dataPath.device(named: name) != nil else { throw .noSuchVNIC(name) }
            return
        }
        guard !departure.offerTaken else { throw .guestMoving(name) }
        server.departures[name] = nil
        departure.device.resume()
        logger.info("vNIC '\(name)' stays: its departure was called off")
    }

    /// Names of the vNICs leaving this host now.
    package var departingVNICs: [String] { server.departures.keys.sorted() }

    /// Tears down the device of a guest that moved away and was retained for forwarding
    /// (`beginDeparture(named:retainingAfterMove: true)`): its port, MAC and name are free.
    /// The migration may end before the guest's `moved` reaches this host (the destination
    /// said the guest arrived): then the vNIC is torn down as soon as that `moved` comes.
    package func releaseDeparted(named name: String) {
        if let device = server.departed.removeValue(forKey: name) {
            server.tearDown(device, reason: "moved to another host; forwarding done")
        } else if server.departures[name] != nil {
            server.departures[name]?.retainAfterMove = false
        }
    }

    /// sockaddr_un's path: 108 bytes with the terminating NUL.
    static let maximumSocketPathBytes = 107
}

/// A vNIC leaving this host: its stopped device and, once offered, where the guest goes.
struct Departure {
    let device: EmulatedDevice
    /// Keep the device (stopped, its port in the vswitch) after `moved`, for the migration's
    /// forwarding, until `releaseDeparted`.
    var retainAfterMove = false
    var destination: ControlMessage.MoveDestination?
    /// The guest's switchQuery got the offer: it may be resuming on the destination, so the
    /// device here must not run again until the guest answers (or its connection closes).
    var offerTaken = false
}

/// Why the source refused a step of a move. A refusal changes nothing.
package enum DepartureRefusal: Error, Equatable, CustomStringConvertible {
    case noSuchVNIC(String)
    /// Passthrough, a switch under way, frames still parked: the orchestration switches out first.
    case notMovable(String)
    case alreadyLeaving(String)
    case notLeaving(String)
    case offerAlreadyMade(String)
    case malformedToken
    case badDestination(String)
    /// The guest took the offer: only its answer ends the move now.
    case guestMoving(String)
    case state(String)

    package var description: String {
        switch self {
        case .noSuchVNIC(let name): "no vNIC named '\(name)'"
        case .notMovable(let reason): "cannot move: \(reason)"
        case .alreadyLeaving(let name): "vNIC '\(name)' is already leaving this host"
        case .notLeaving(let name): "vNIC '\(name)' is not leaving this host (beginDeparture first)"
        case .offerAlreadyMade(let name): "vNIC '\(name)''s guest was already offered a move"
        case .malformedToken: "a move token has \(MoveToken.size) bytes"
        case .badDestination(let path): "'\(path)' is no control socket path (1-\(HostDaemon.maximumSocketPathBytes) bytes)"
        case .guestMoving(let name): "the guest of vNIC '\(name)' took the move offer: wait for its answer"
        case .state(let reason): "the device state could not be saved: \(reason)"
        }
    }
}
