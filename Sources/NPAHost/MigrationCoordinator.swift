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
        /// While forwarding: when the destination's announcement came or a frame was last
        /// forwarded, whichever is later (forwarding ends once it is quiet for a while).
        var lastFrameOrAnnouncement: UInt64?
        /// Begun when the destination announced the guest: forwarding ends only once every frame
        /// the wires held by then has been through the hold.
        var wireFence: WireDrainFence?

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
        /// hears of it once they all are (so the source hears `guestArrived` first) and the
        /// wires have written it (`WireFlushFence`).
        var announcementFlush: WireFlushFence?

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
    let limits: MigrationSourceMachine.Limits
    var outgoing: [UInt64: Outgoing] = [:]
    var incoming: [UInt64: Incoming] = [:]
    /// Finished migrations, newest last, for `npa status` (the last `historyLimit`).
    var history: [StatusReport.Migration] = []
    /// Outgoing migrations whose vNIC is being switched out of passthrough.
    var waitingForSwitchOut: Set<UInt64> = []
    /// Outgoing migrations whose vNIC still has frames parked at a switch point to deliver
    /// before it can be stopped and saved.
    var waitingToStop: Set<UInt64> = []
    /// Guests that arrived in passthrough, to switch in once the frames forwarded to them are
    /// all in their emulated ring (a switch point must find no frames parked).
    var pendingSwitchIns: [(id: UInt64, device: EmulatedDevice)] = []
    var nextID: UInt64 = 1
    /// Set while accepting is paused after a failed accept.
    var listenerPausedUntil: UInt64?
    /// Connections closed at once because `maximumIncoming` were being served.
    var incomingRefused: UInt64 = 0
    static let maximumIncoming = 16
    static let historyLimit = 32
    /// Frames per `frames` message while forwarding.
    static let framesPerMessage = 256

    var logger: Logger { host.logger }

    init(configuration: HostConfiguration, key: MigrationKey?, listener: MigrationListener?) {
        self.key = key
        self.listener = listener
        let phase = UInt64(configuration.migrationTimeoutMilliseconds)
        limits = .init(
            phaseMilliseconds: phase, forwardingGraceMilliseconds: min(200, phase),
            forwardingQuietMilliseconds: UInt64(configuration.migrationForwardingQuietMilliseconds))
    }

    /// Sends what waits to be sent and takes what arrived. A channel that closed, refused a
    /// record or broke yields nothing more; the messages before it still count (its
    /// `isClosed` then says so to the caller).
    static func exchange(on connection: MigrationConnection) -> [MigrationMessage] {
        do {
            if connection.wantsWrite { try connection.flush() }
            return try connection.receive()
        } catch {
            return []
        }
    }

    static func closeReason(_ connection: MigrationConnection) -> String {
        if case .closed(let why) = connection.state { return "\(why)" }
        return "closed"
    }

    var isActive: Bool { !outgoing.isEmpty || !incoming.isEmpty || !pendingSwitchIns.isEmpty || listenerPausedUntil != nil }

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
        noteBegun(migration)
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
        if let until = listenerPausedUntil, now >= until, let listener {
            listenerPausedUntil = nil
            do { try host.loop.epoll.add(listener.fd, tag: HostEventTag.migrationListener) } catch {
                listenerPausedUntil = now + 100_000_000
            }
        }
        if !pendingSwitchIns.isEmpty { switchInPending(now: now) }
        for id in waitingForSwitchOut {
            guard let m = outgoing[id] else { continue }
            guard let device = host.dataPath.device(named: m.name) else {
                waitingForSwitchOut.remove(id)
                step(m, .guestGone, now)
                continue
            }
            // Done switching, and the frames parked at the switch point delivered: only then may
            // the device be saved (`beginDeparture` refuses a vNIC with frames still parked).
            guard !device.switching.isSwitching, device.switching.isPassthrough || device.switchOverflow == nil else { continue }
            waitingForSwitchOut.remove(id)
            if device.switching.isPassthrough {
                step(m, .switchOutFailed(device.switching.reason ?? "the switch-out was called off"), now)
            } else {
                step(m, .switchedOut, now)
            }
        }
        for id in waitingToStop {
            guard let m = outgoing[id], case .transferring = m.machine.state else {
                waitingToStop.remove(id)
                continue
            }
            if host.dataPath.device(named: m.name)?.switchOverflow == nil {
                waitingToStop.remove(id)
                stopHoldAndSendState(m)
            }
        }
        for m in Array(outgoing.values) {
            serviceChannel(m)
            guard outgoing[m.id] != nil else { continue }
            let drained = m.wireFence?.poll() ?? false
            perform(tick(m, now: now, wiresDrained: drained), for: m)
        }
        for m in Array(incoming.values) {
            serviceChannel(m)
            guard incoming[m.id] != nil else { continue }
            heardAnnouncementIfWritten(m, now)
            if incoming[m.id] != nil { perform(tick(m, now: now), for: m) }
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

    func acceptPending() {
        guard let listener, listenerPausedUntil == nil else { return }
        while true {
            let connection: MigrationConnection
            do {
                guard let accepted = try listener.accept() else { return }
                connection = accepted
            } catch {
                // Out of descriptors, say: the listener leaves epoll for a while (it is
                // level-triggered and would spin the loop); the connection waits in the backlog.
                logger.warning("migration listener: accept failed: \(error); pausing accept for 100 ms")
                host.loop.epoll.remove(listener.fd)
                listenerPausedUntil = Clock.monotonicNanoseconds() + 100_000_000
                return
            }
            guard incoming.count < Self.maximumIncoming else {
                // Unauthenticated peers cannot pile up connections: a few at a time are heard.
                incomingRefused &+= 1
                connection.close()
                continue
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
}

// MARK: Status

extension MigrationCoordinator {
    /// The channel's refusals (the listener's and the outgoing connections'); nil without a key.
    var channelStatus: StatusReport.MigrationChannel? {
        guard key != nil else { return nil }
        var refused: [String: UInt64] = [:]
        for (reason, count) in counters.recordsRefused.byReason { refused[reason.rawValue] = count }
        for (reason, count) in listener?.counters.recordsRefused.byReason ?? [] { refused[reason.rawValue, default: 0] += count }
        return StatusReport.MigrationChannel(
            listening: listener.map { "\($0.address)" }, recordsRefused: refused, connectionsRefused: incomingRefused)
    }

    /// Those under way, then the finished ones, oldest first.
    var statusEntries: [StatusReport.Migration] {
        let now = Clock.monotonicNanoseconds()
        return history + outgoing.values.sorted { $0.id < $1.id }.map { status(of: $0, now: now) }
            + incoming.values.sorted { $0.id < $1.id }.map { status(of: $0, now: now) }
    }

    func remember(_ entry: StatusReport.Migration) {
        history.append(entry)
        if history.count > Self.historyLimit { history.removeFirst(history.count - Self.historyLimit) }
    }

    func status(of m: Outgoing, now: UInt64) -> StatusReport.Migration {
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

    func status(of m: Incoming, now: UInt64) -> StatusReport.Migration {
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
