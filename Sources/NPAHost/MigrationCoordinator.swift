import Logging
import NPAControlProtocol
import NPAMigration
import NPASystem

/// This host's live migrations, both ways. For each it drives the state machine
/// (`MigrationSourceMachine` when the guest leaves, `MigrationDestinationMachine` when it comes)
/// and performs its actions through the host's roles: departure and arrival
/// (`HostDaemon+Departure.swift`, `HostDaemon+Arrival.swift`), the PF driver (out of and back
/// into passthrough), the data path (holding, forwarding, announcing). It owns the migration
/// listener and the channels (`NPAMigration`), all non-blocking in the host's epoll.
///
/// Host thread only: the event loop hands it its epoll events and calls `service(now:)` after
/// every wait (bounded by `nextDeadline`), and the control server reports the guest's answers
/// (`MoveEvent`) to it.
final class MigrationCoordinator {
    /// One guest leaving this host.
    final class Outgoing {
        let id: UInt64
        let name: String
        let destination: String
        var machine: MigrationSourceMachine
        var connection: MigrationConnection?
        /// The device stopped here (for the hold and the forwarding), once it is.
        var device: EmulatedDevice?
        var stoppedAt: UInt64?
        var framesForwarded: UInt64 = 0
        var framesLost: UInt64 = 0
        var connected = false

        init(id: UInt64, name: String, destination: String, machine: MigrationSourceMachine) {
            self.id = id
            self.name = name
            self.destination = destination
            self.machine = machine
        }
    }

    /// One guest coming to this host.
    final class Incoming {
        let id: UInt64
        let connection: MigrationConnection
        var machine: MigrationDestinationMachine
        var request: MigrationRequest?
        var token: MoveToken?
        var device: EmulatedDevice?
        var framesForwarded: UInt64 = 0
        var arrivedAt: UInt64?
        /// The first announcement round went out while actions were being performed; the machine
        /// hears of it once they all are (so the source hears `guestArrived` first).
        var announcedPending = false

        init(id: UInt64, connection: MigrationConnection, machine: MigrationDestinationMachine) {
            self.id = id
            self.connection = connection
            self.machine = machine
        }
    }

    /// The daemon whose roles it drives; set right after the daemon is built, which owns the
    /// coordinator (through its control server) and so outlives it.
    weak var host: HostDaemon!
    let key: MigrationKey?
    let listener: MigrationListener?
    let counters = MigrationChannelCounters()
    private let limits: MigrationSourceMachine.Limits
    private var outgoing: [UInt64: Outgoing] = [:]
    private var incoming: [UInt64: Incoming] = [:]
    /// Finished migrations, newest last, for `npa status` (the last `historyLimit`).
    private var history: [StatusReport.Migration] = []
    private var nextID: UInt64 = 1
    static let historyLimit = 32
    /// Frames per `frames` message while forwarding.
    static let framesPerMessage = 256

    private var logger: Logger { host.logger }

    init(configuration: HostConfiguration, key: MigrationKey?, listener: MigrationListener?) {
        self.key = key
        self.listener = listener
        let phase = UInt64(configuration.migrationTimeoutMilliseconds)
        limits = .init(phaseMilliseconds: phase, forwardingGraceMilliseconds: min(200, phase))
    }

    static func closeReason(_ connection: MigrationConnection) -> String {
        if case .closed(let why) = connection.state { return "\(why)" }
        return "closed"
    }

    var isActive: Bool { !outgoing.isEmpty || !incoming.isEmpty || !waitingToSwitchIn.isEmpty }

    /// When `service` must run next: soon while any migration is under way (its channels are
    /// polled for writes and its deadlines checked), never otherwise.
    var nextDeadline: UInt64? { isActive ? Clock.monotonicNanoseconds() + 1_000_000 : nil }

    // MARK: Starting one (the admin's request)

    enum StartRefusal: Error, CustomStringConvertible {
        case noKey
        case noSuchVNIC(String)
        case alreadyMigrating(String)
        case badAddress(String)
        case sameHost
        case unreachable(String)

        var description: String {
            switch self {
            case .noKey: "this host has no migration_key_file: it neither sends nor takes guests"
            case .noSuchVNIC(let name): "no vNIC named '\(name)'"
            case .alreadyMigrating(let name): "vNIC '\(name)' is already migrating"
            case .badAddress(let why): why
            case .sameHost: "that is this host's own migration listener: a guest cannot migrate to the host it is on"
            case .unreachable(let why): "the destination is unreachable: \(why)"
            }
        }
    }

    func start(vnic name: String, to destination: String) -> Result<UInt64, StartRefusal> {
        guard let key else { return .failure(.noKey) }
        guard let device = host.dataPath.device(named: name) else { return .failure(.noSuchVNIC(name)) }
        guard !outgoing.values.contains(where: { $0.name == name }), !host.departingVNICs.contains(name) else {
            return .failure(.alreadyMigrating(name))
        }
        let address: StreamSocket.Address
        do { address = try StreamSocket.Address(parsing: destination) } catch { return .failure(.badAddress("\(error)")) }
        if let listener, listener.address == address { return .failure(.sameHost) }
        let connection: MigrationConnection
        do {
            connection = try MigrationConnection.open(
                to: address, key: key, counters: counters, handshakeTimeoutMilliseconds: Int32(clamping: limits.phaseMilliseconds))
        } catch {
            return .failure(.unreachable("\(error)"))
        }
        let id = nextID
        nextID += 1
        let now = Clock.monotonicNanoseconds()
        let migration = Outgoing(
            id: id, name: name, destination: destination,
            machine: MigrationSourceMachine(wasPassthrough: device.switching.isPassthrough, limits: limits, now: now))
        migration.connection = connection
        do { try host.loop.epoll.add(connection.fd, tag: HostEventTag.migration(id)) } catch {
            connection.close()
            return .failure(.unreachable("\(error)"))
        }
        outgoing[id] = migration
        logger.info("migration \(id): vNIC '\(name)' to \(destination) begins")
        return .success(id)
    }

    // MARK: Events

    /// An epoll event for the listener or a channel.
    func handle(tag: UInt64) {
        if tag == HostEventTag.migrationListener {
            acceptPending()
        } else {
            let id = tag - HostEventTag.migrationBase
            if let m = outgoing[id] { serviceChannel(m) } else if let m = incoming[id] { serviceChannel(m) }
        }
    }

    /// Channels flushed and read, deadlines checked, held frames forwarded.
    func service(now: UInt64) {
        for id in waitingForSwitchOut {
            guard let m = outgoing[id] else { continue }
            guard let device = host.dataPath.device(named: m.name) else {
                waitingForSwitchOut.remove(id)
                step(m, .guestGone, now)
                continue
            }
            // Frames parked at the switch-out go to the guest's emulated ring first: the device
            // stops only once they are delivered (a departure refuses to leave them behind).
            guard !device.switching.isSwitching, device.switching.isPassthrough || device.switchOverflow == nil else { continue }
            waitingForSwitchOut.remove(id)
            if device.switching.isPassthrough {
                step(m, .switchOutFailed(device.switching.reason ?? "the switch-out was called off"), now)
            } else {
                step(m, .switchedOut, now)
            }
        }
        switchInWhereDelivered()
        for m in Array(outgoing.values) {
            serviceChannel(m)
            if outgoing[m.id] != nil { perform(m.machine.tick(now: now), for: m) }
        }
        for m in Array(incoming.values) {
            serviceChannel(m)
            if incoming[m.id] != nil { perform(m.machine.tick(now: now), for: m) }
        }
    }

    /// What the control server heard from a moving guest, or of an arrival.
    func moveEvent(_ event: MoveEvent) {
        let now = Clock.monotonicNanoseconds()
        switch event {
        case .departed(let name):
            guard let m = outgoing.values.first(where: { $0.name == name }) else { return }
            step(m, .guestMoved, now)
        case .moveFailed(let name, let reason):
            guard let m = outgoing.values.first(where: { $0.name == name }) else { return }
            if host.dataPath.device(named: name) == nil && !m.machine.isCommitted {
                step(m, .guestGone, now)
            } else {
                step(m, .guestMoveFailed(reason), now)
            }
        case .arrived(let name):
            guard let m = incoming.values.first(where: { $0.request?.guestName == name }) else { return }
            m.device = host.dataPath.device(named: name)
            m.arrivedAt = now
            step(m, .guestArrived, now)
        case .arrivalFailed(let name, let reason):
            guard let m = incoming.values.first(where: { $0.request?.guestName == name }) else { return }
            step(m, .abort("the guest could not resume here: \(reason)"), now)
        }
    }

    private func acceptPending() {
        guard let listener else { return }
        while true {
            let connection: MigrationConnection
            do {
                guard let accepted = try listener.accept() else { return }
                connection = accepted
            } catch {
                logger.warning("migration listener: accept failed: \(error)")
                return
            }
            let id = nextID
            nextID += 1
            let m = Incoming(
                id: id, connection: connection, machine: MigrationDestinationMachine(limits: limits, now: Clock.monotonicNanoseconds()))
            do { try host.loop.epoll.add(connection.fd, tag: HostEventTag.migration(id)) } catch {
                connection.close()
                continue
            }
            incoming[id] = m
        }
    }

    // MARK: The source's channel and actions

    private func serviceChannel(_ m: Outgoing) {
        guard let connection = m.connection else { return }
        let now = Clock.monotonicNanoseconds()
        var messages: [MigrationMessage] = []
        do {
            if connection.wantsWrite { try connection.flush() }
            messages = try connection.receive()
        } catch {
            // Closed, refused or broken: the messages before it still count, then the loss.
        }
        if !m.connected && connection.isEstablished {
            m.connected = true
            step(m, .connected, now)
        }
        for message in messages {
            guard outgoing[m.id] != nil else { return }
            switch message {
            case .prepared(let token, let socket): step(m, .prepared(.init(token: token, controlSocket: socket)), now)
            case .refused(let reason): step(m, .refused(reason), now)
            case .stateAccepted: step(m, .stateAccepted, now)
            case .guestArrived: step(m, .guestArrived, now)
            case .announced: step(m, .announced, now)
            case .abort(let reason): step(m, .refused(reason), now)
            default: step(m, .refused("unexpected message \(message)"), now)
            }
        }
        if outgoing[m.id] != nil, connection.isClosed {
            step(m, .channelLost(Self.closeReason(connection)), now)
        }
    }

    private func step(_ m: Outgoing, _ event: MigrationSourceMachine.Event, _ now: UInt64) {
        do {
            perform(try m.machine.handle(event, now: now), for: m)
        } catch {
            logger.debug("migration \(m.id): \(error)")
        }
    }

    private func perform(_ actions: [MigrationSourceMachine.Action], for m: Outgoing) {
        for action in actions {
            switch action {
            case .sendPrepare:
                guard let device = host.dataPath.device(named: m.name) else {
                    step(m, .guestGone, Clock.monotonicNanoseconds())
                    return
                }
                send(.prepare(prepareRequest(device)), on: m)
            case .switchOut:
                switchOut(m)
            case .stopHoldAndSendState:
                stopHoldAndSendState(m)
            case .offerMove(let ticket):
                do {
                    try host.offerMove(named: m.name, controlSocket: ticket.controlSocket, token: MoveToken(bytes: ticket.token))
                } catch {
                    step(m, .guestMoveFailed("\(error)"), Clock.monotonicNanoseconds())
                }
            case .forwardHeldFrames:
                forwardHeldFrames(m)
            case .sendForwardingDone:
                send(.forwardingDone, on: m)
            case .releaseVNIC:
                if let device = m.device {
                    let left = host.dataPath.heldFrameCount(for: device)
                    m.framesLost &+= UInt64(left)
                    host.dataPath.stopHolding(for: device, then: .discard)
                    host.releaseDeparted(named: m.name)
                }
            case .resumeDevice:
                resumeDevice(m)
            case .switchBackIn:
                switchBackIn(m)
            case .sendAbort(let reason):
                send(.abort(reason: reason), on: m)
            case .closeChannel:
                close(m)
            }
        }
    }

    private func prepareRequest(_ d: EmulatedDevice) -> MigrationRequest {
        MigrationRequest(
            guestName: d.name, mac: d.mac, multicast: d.multicast.sorted(), vlans: d.vlans.sorted(), rxMode: d.rxMode.rawValue,
            mtu: UInt32(d.mtu), transmitQueues: UInt8(d.txQueues.count), receiveQueues: UInt8(d.rxQueues.count),
            wasPassthrough: d.switching.isPassthrough, sourceHost: host.socketPath)
    }

    private func switchOut(_ m: Outgoing) {
        guard let device = host.dataPath.device(named: m.name) else { return step(m, .guestGone, Clock.monotonicNanoseconds()) }
        switch host.pfDriver.requestSwitch(device, toPassthrough: false) {
        case .success: waitingForSwitchOut.insert(m.id)
        case .failure(let refusal): step(m, .switchOutFailed("\(refusal)"), Clock.monotonicNanoseconds())
        }
    }

    private var waitingForSwitchOut: Set<UInt64> = []
    /// Arrived guests to switch in once the frames forwarded to them are delivered.
    private var waitingToSwitchIn: [(UInt64, EmulatedDevice)] = []

    private func stopHoldAndSendState(_ m: Outgoing) {
        let now = Clock.monotonicNanoseconds()
        let bytes: [UInt8]
        do {
            bytes = try host.beginDeparture(named: m.name, retainingAfterMove: true)
        } catch {
            return step(m, .refused("the vNIC cannot leave: \(error)"), now)
        }
        m.device = host.dataPath.device(named: m.name)
        m.stoppedAt = now
        if let device = m.device { host.dataPath.holdFrames(for: device) }
        send(.deviceState(bytes), on: m)
    }

    private func forwardHeldFrames(_ m: Outgoing) {
        guard let device = m.device, let connection = m.connection, !connection.isClosed else { return }
        while true {
            let frames = host.dataPath.takeHeldFrames(for: device, max: Self.framesPerMessage)
            if frames.isEmpty { return }
            m.framesForwarded &+= UInt64(frames.count)
            for message in MigrationMessage.framesMessages(frames) { send(message, on: m) }
        }
    }

    private func resumeDevice(_ m: Outgoing) {
        if let device = m.device {
            host.dataPath.stopHolding(for: device, then: .deliverToDevice)
        }
        do { try host.abortDeparture(named: m.name) } catch {
            logger.debug("migration \(m.id): abort of the departure: \(error)")
        }
    }

    private func switchBackIn(_ m: Outgoing) {
        guard let device = host.dataPath.device(named: m.name) else { return }
        if case .failure(let refusal) = host.pfDriver.requestSwitch(device, toPassthrough: true) {
            logger.warning("migration \(m.id): vNIC '\(m.name)' stays emulated after the failed migration: \(refusal)")
        }
    }

    private func send(_ message: MigrationMessage, on m: Outgoing) {
        guard let connection = m.connection, !connection.isClosed else { return }
        do { try connection.send(message) } catch {
            logger.debug("migration \(m.id): send failed: \(error)")
        }
    }

    private func close(_ m: Outgoing) {
        if let connection = m.connection {
            if connection.wantsWrite { try? connection.flush() }
            host.loop.epoll.remove(connection.fd)
            connection.close()
        }
        m.connection = nil
        guard m.machine.isFinished else { return }
        outgoing[m.id] = nil
        waitingForSwitchOut.remove(m.id)
        remember(status(of: m, now: Clock.monotonicNanoseconds()))
        switch m.machine.state {
        case .failed(let why): logger.warning("migration \(m.id) of '\(m.name)' failed: \(why)")
        default: logger.info("migration \(m.id): '\(m.name)' now runs at \(m.destination)")
        }
    }
}

// MARK: The destination's channel and actions

extension MigrationCoordinator {
    private func serviceChannel(_ m: Incoming) {
        let connection = m.connection
        let now = Clock.monotonicNanoseconds()
        var messages: [MigrationMessage] = []
        do {
            if connection.wantsWrite { try connection.flush() }
            messages = try connection.receive()
        } catch {
            // Closed, refused or broken: the messages before it still count, then the loss.
        }
        for message in messages {
            guard incoming[m.id] != nil else { return }
            switch message {
            case .prepare(let request):
                m.request = request
                if let refusal = refusalToPrepare(request) {
                    step(m, .prepareRefused(refusal), now)
                } else {
                    let token = MoveToken.random()
                    m.token = token
                    step(m, .prepareAccepted(token: token.bytes), now)
                }
            case .deviceState(let bytes):
                guard let token = m.token, let request = m.request else {
                    step(m, .abort("device state before prepare"), now)
                    continue
                }
                do {
                    let (name, _) = try host.expectArrival(
                        stateBytes: bytes, token: token, timeoutNanoseconds: limits.phaseMilliseconds * 1_000_000)
                    if name != request.guestName {
                        host.cancelArrival(token: token)
                        step(m, .stateRefused("the device state is guest '\(name)''s, not '\(request.guestName)''s"), now)
                    } else {
                        step(m, .stateAccepted, now)
                    }
                } catch {
                    step(m, .stateRefused("\(error)"), now)
                }
            case .frames(let frames):
                guard let device = m.device else {
                    step(m, .abort("frames before the guest arrived"), now)
                    continue
                }
                m.framesForwarded &+= UInt64(host.dataPath.deliverForwarded(frames, to: device))
                step(m, .forwardedFrames, now)
            case .forwardingDone: step(m, .forwardingDone, now)
            case .abort(let reason): step(m, .abort(reason), now)
            case .refused(let reason): step(m, .abort(reason), now)
            default: step(m, .abort("unexpected message \(message)"), now)
            }
        }
        if incoming[m.id] != nil, connection.isClosed {
            step(m, .channelLost(Self.closeReason(connection)), now)
        }
    }

    /// What this host says to a `prepare` before anything stops at the source: the name and MAC
    /// free here, the MAC, VLANs and queues within this host's policy. The device state is
    /// checked again, whole, when it comes (`expectArrival`).
    private func refusalToPrepare(_ r: MigrationRequest) -> String? {
        guard GuestName.isValid(r.guestName) else { return "'\(r.guestName)' is no guest name" }
        if host.dataPath.device(named: r.guestName) != nil { return "a guest named '\(r.guestName)' is already here" }
        if host.dataPath.devices.contains(where: { $0.mac == r.mac }) { return "MAC \(r.mac) is in use here" }
        let policy = host.configuration.policy(forGuest: r.guestName)
        guard policy.allows(mac: r.mac) else { return "this host's policy does not allow guest '\(r.guestName)' MAC \(r.mac)" }
        if let vlan = r.vlans.first(where: { !policy.allowedVLANs.contains($0) }) {
            return "this host's policy does not allow guest '\(r.guestName)' VLAN \(vlan)"
        }
        let queues = Int(max(r.transmitQueues, r.receiveQueues))
        if queues > host.configuration.maxQueuesPerVNIC {
            return "guest '\(r.guestName)' has \(queues) queues, this host allows \(host.configuration.maxQueuesPerVNIC) (max_queues)"
        }
        return nil
    }

    private func step(_ m: Incoming, _ event: MigrationDestinationMachine.Event, _ now: UInt64) {
        do {
            perform(try m.machine.handle(event, now: now), for: m)
        } catch {
            logger.debug("migration \(m.id): \(error)")
        }
        if m.announcedPending {
            m.announcedPending = false
            step(m, .announced, now)
        }
    }

    private func perform(_ actions: [MigrationDestinationMachine.Action], for m: Incoming) {
        for action in actions {
            switch action {
            case .sendPrepared(let token):
                send(.prepared(token: token, controlSocket: host.socketPath), on: m)
            case .sendRefused(let why):
                send(.refused(reason: why), on: m)
            case .sendStateAccepted:
                send(.stateAccepted, on: m)
            case .cancelArrival:
                if let token = m.token { host.cancelArrival(token: token) }
            case .holdDirectFramesAndAnnounce:
                guard let device = m.device else { continue }
                host.dataPath.beginForwarding(for: device)
                host.dataPath.announceSelf(device)
                // The first round went out with that call (QEMU's schedule starts at once).
                m.announcedPending = true
            case .sendGuestArrived:
                send(.guestArrived, on: m)
            case .sendAnnounced:
                send(.announced, on: m)
            case .deliverForwardedFrames:
                break  // delivered as the message came (`serviceChannel`), before newer frames
            case .endForwarding:
                if let device = m.device { host.dataPath.endForwarding(for: device) }
            case .switchInIfAllowed:
                switchInIfAllowed(m)
            case .closeChannel:
                close(m)
            }
        }
    }

    private func switchInIfAllowed(_ m: Incoming) {
        guard let device = m.device, host.dataPath.devices.contains(where: { $0 === device }) else { return }
        guard m.request?.wasPassthrough == true || host.configuration.autoPassthrough else { return }
        // The frames forwarded from the source, and those held behind them, are still on their
        // way to the guest's emulated ring: a switch-in now would let newer frames, which the
        // NIC puts straight into the VF's ring, overtake them. It waits until they are delivered.
        waitingToSwitchIn.append((m.id, device))
    }

    /// Switches in each arrived guest whose forwarded and held frames have all reached it (or
    /// that left meanwhile: then nothing).
    func switchInWhereDelivered() {
        guard !waitingToSwitchIn.isEmpty else { return }
        waitingToSwitchIn.removeAll { id, device in
            guard host.dataPath.devices.contains(where: { $0 === device }) else { return true }
            guard device.switchOverflow == nil else { return false }
            switchIn(device, migration: id)
            return true
        }
    }

    private func switchIn(_ device: EmulatedDevice, migration id: UInt64) {
        if let refusal = host.admission.admitSwitch(toPassthrough: true, for: device) {
            logger.info("migration \(id): '\(device.name)' stays emulated here: \(refusal)")
            return
        }
        if case .failure(let refusal) = host.pfDriver.requestSwitch(device, toPassthrough: true) {
            logger.info("migration \(id): '\(device.name)' stays emulated here: \(refusal)")
        }
    }

    private func send(_ message: MigrationMessage, on m: Incoming) {
        guard !m.connection.isClosed else { return }
        do { try m.connection.send(message) } catch {
            logger.debug("migration \(m.id): send failed: \(error)")
        }
    }

    private func close(_ m: Incoming) {
        if m.connection.wantsWrite { try? m.connection.flush() }
        host.loop.epoll.remove(m.connection.fd)
        m.connection.close()
        guard m.machine.isFinished else { return }
        incoming[m.id] = nil
        remember(status(of: m, now: Clock.monotonicNanoseconds()))
        let name = m.request?.guestName ?? "?"
        switch m.machine.state {
        case .failed(let why): logger.warning("migration \(m.id) of '\(name)' to this host failed: \(why)")
        default: logger.info("migration \(m.id): '\(name)' arrived and runs here")
        }
    }
}

// MARK: Status

extension MigrationCoordinator {
    /// Those under way, then the finished ones, oldest first.
    var statusEntries: [StatusReport.Migration] {
        let now = Clock.monotonicNanoseconds()
        return history + outgoing.values.sorted { $0.id < $1.id }.map { status(of: $0, now: now) }
            + incoming.values.sorted { $0.id < $1.id }.map { status(of: $0, now: now) }
    }

    private func remember(_ entry: StatusReport.Migration) {
        history.append(entry)
        if history.count > Self.historyLimit { history.removeFirst(history.count - Self.historyLimit) }
    }

    private func status(of m: Outgoing, now: UInt64) -> StatusReport.Migration {
        let t = m.machine.times
        var error: String?
        if case .failed(let why) = m.machine.state { error = why }
        let downtime = zip(m.stoppedAt, t.committedAt).map { Double($1 &- $0) / 1e6 }
        return StatusReport.Migration(
            id: m.id, vnic: m.name, direction: "outgoing", peer: m.destination, phase: m.machine.phase,
            phases: t.phases.map { .init(name: $0.name, milliseconds: $0.milliseconds) }, totalMilliseconds: t.totalMilliseconds(now: now),
            committed: m.machine.isCommitted, deviceDowntimeMilliseconds: downtime, framesForwarded: m.framesForwarded,
            framesLost: m.framesLost, error: error)
    }

    private func status(of m: Incoming, now: UInt64) -> StatusReport.Migration {
        let t = m.machine.times
        var error: String?
        if case .failed(let why) = m.machine.state { error = why }
        return StatusReport.Migration(
            id: m.id, vnic: m.request?.guestName ?? "?", direction: "incoming", peer: m.request?.sourceHost ?? "?",
            phase: m.machine.phase, phases: t.phases.map { .init(name: $0.name, milliseconds: $0.milliseconds) },
            totalMilliseconds: t.totalMilliseconds(now: now), committed: t.committedAt != nil, framesForwarded: m.framesForwarded,
            error: error)
    }
}

private func zip(_ a: UInt64?, _ b: UInt64?) -> (UInt64, UInt64)? {
    guard let a, let b else { return nil }
    return (a, b)
}
