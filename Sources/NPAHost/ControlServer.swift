import Logging
import NPAControlProtocol
import NPANICModel
import NPARingFormats
import NPASystem
import SystemPackage

/// The host's control server: its connections, guests' and administrators', and what each may
/// ask. A guest's connection attaches one vNIC (memory and eventfds arrive with SCM_RIGHTS), or
/// resumes one moved here from another host (`ControlServer+Attach.swift`), and then acts only
/// on it: register accesses, its counters, its switch steps, its answers to a move offer
/// (`ControlServer+Departure.swift`), whether a peer is there. An admin connection (the 0600 admin socket) asks for status, switches and VF resets,
/// and never attaches. Every refusal is a typed `ControlRefusal`.
///
/// It may touch: the connections, the data path's vNIC table (attach, detach), the PF driver
/// (switch steps), admission (the attach MAC). Only the host's thread calls it, between data
/// path passes, so device and switch state need no locks.
final class ControlServer {
    /// One accepted connection; a guest's holds its vNIC once attached.
    final class Connection {
        let id: UInt64
        let socket: SeqPacketSocket
        /// Accepted on the admin socket: administrative requests only, never a vNIC.
        let isAdmin: Bool
        var device: EmulatedDevice?
        /// Refusals sent on it (a guest's are recorded in the event log at 1, 2, 4, 8, ...).
        var refusals: UInt64 = 0
        /// An admin connection's running capture (`ControlServer+Capture.swift`).
        var capture: PacketCapture?
        init(id: UInt64, socket: SeqPacketSocket, isAdmin: Bool) {
            self.id = id
            self.socket = socket
            self.isAdmin = isAdmin
        }
    }

    let configuration: HostConfiguration
    /// The guests' policies now: the configuration's and the changes made since start.
    private(set) lazy var policies = LivePolicies(configuration: configuration)
    let logger: Logger
    let adminSocketPath: String
    let epoll: Epoll
    let dataPath: HostDataPath
    let pfDriver: PFDriver
    let admission: Admission
    /// Where attaches, detaches, refusals and plugin faults are recorded (`ControlServer+Events.swift`).
    let events: HostEventLog
    private(set) var connections: [UInt64: Connection] = [:]
    private var nextConnectionID: UInt64 = 1
    var nextVNICID: UInt32 = 1
    /// vNICs expected from other hosts, by the token their guests will present (`resume`).
    let arrivals = PendingArrivals()
    /// vNICs leaving for another host, by guest name (`HostDaemon+Departure.swift`).
    var departures: [String: Departure] = [:]
    /// Devices of guests that moved away, kept (stopped) for the migration's forwarding until
    /// `HostDaemon.releaseDeparted`.
    var departed: [String: EmulatedDevice] = [:]
    /// Told of every move's outcome on this host, on the host's thread.
    var moveEventHandler: ((MoveEvent) -> Void)?
    /// The host's migrations (set once by `HostDaemon`): told every `MoveEvent` first, asked
    /// to start one by `adminMigrate`, and shown in status.
    var migrations: MigrationCoordinator?
    /// Admin connections open now: capped apart from the guests' (`maxAdminConnections`), so
    /// guests filling `max_connections` cannot lock the administrator out.
    private(set) var adminConnectionCount = 0
    static let maxAdminConnections = 16
    var guestConnectionCount: Int { connections.count - adminConnectionCount }
    private(set) var connectionsRefused: UInt64 = 0
    private(set) var attachTimeouts: UInt64 = 0
    /// accept() failures for want of descriptors, counted by the event loop.
    var acceptFDExhausted: UInt64 = 0
    /// Administrative requests refused on guests' connections.
    var adminRefused: UInt64 = 0
    /// Every refusal sent, by wire error code's name (the metrics' `npa_control_refusals_total`).
    var refusalsByCode: [String: UInt64] = [:]
    /// Set when the host serves metrics (`npa host --metrics`); with the host thread's activity.
    var metrics: HostMetrics?
    var hostActivity: HostThreadActivity?

    init(
        configuration: HostConfiguration, adminSocketPath: String, epoll: Epoll, dataPath: HostDataPath, pfDriver: PFDriver,
        admission: Admission, events: HostEventLog, logger: Logger
    ) {
        self.events = events
        self.configuration = configuration
        self.adminSocketPath = adminSocketPath
        self.epoll = epoll
        self.dataPath = dataPath
        self.pfDriver = pfDriver
        self.admission = admission
        self.logger = logger
    }

    /// Takes an accepted connection within its cap (`max_connections` for guests,
    /// `maxAdminConnections` for the admin socket); one over the cap is told why and closed.
    /// Returns the id of a guest connection, which must attach by its deadline; nil otherwise
    /// (an admin connection stays as long as its client keeps it: it is the administrator's).
    func adopt(_ socket: SeqPacketSocket, admin: Bool) -> UInt64? {
        socket.setNonBlocking()
        if admin {
            guard adminConnectionCount < Self.maxAdminConnections else {
                try? socket.send(
                    ControlRefusal.adminConnectionCap(open: adminConnectionCount, max: Self.maxAdminConnections).reply.encode())
                return nil
            }
        } else if guestConnectionCount >= configuration.maxConnections {
            // Say why before closing: the client reads this instead of a bare hang-up.
            connectionsRefused &+= 1
            let refusal = ControlRefusal.connectionCap(open: guestConnectionCount, max: configuration.maxConnections)
            try? socket.send(refusal.reply.encode())
            events.record(.refusal, "connection: \(refusal)")
            if connectionsRefused & (connectionsRefused - 1) == 0 {  // logged at 1, 2, 4, 8, ...
                logger.warning("connection refused (\(connectionsRefused) so far): \(refusal)")
            }
            return nil  // `socket` is released here, which closes it
        }
        let c = Connection(id: nextConnectionID, socket: socket, isAdmin: admin)
        do {
            try epoll.add(socket.fd, tag: HostEventTag.connection(c.id))
        } catch {
            logger.warning("connection dropped: \(error)")
            return nil
        }
        nextConnectionID += 1
        connections[c.id] = c
        if admin {
            adminConnectionCount += 1
            return nil
        }
        return c.id
    }

    /// Closes the connection `id` if it is still open without a vNIC (its attach deadline passed).
    func expireAttach(_ id: UInt64) {
        guard let c = connections[id], c.device == nil else { return }
        attachTimeouts &+= 1
        let refusal = ControlRefusal.attachTimeout(seconds: configuration.attachTimeoutSeconds)
        reply(c, refusal.reply)
        closeConnection(c, reason: refusal.description)
    }

    /// Serves the connection `id` (its socket is readable).
    func serve(connection id: UInt64) {
        if let c = connections[id] { serve(c) }
    }

    /// The guest connection holding `old` holds `new` from now on (a device restored in its place).
    func rebind(_ old: EmulatedDevice, to new: EmulatedDevice) {
        for c in connections.values where c.device === old { c.device = new }
    }

    /// Closes every connection (the host is stopping).
    func closeAll(reason: String) {
        for c in connections.values { closeConnection(c, reason: reason) }
    }

    private func serve(_ c: Connection) {
        serveCapture(c)  // a capture's writer that finished wakes its connection
        while true {
            let received: (bytes: [UInt8], descriptors: [FileDescriptor])?
            do {
                received = try c.socket.receive()
            } catch let e as SystemCallError where e.errno == .wouldBlock || e.errno == .resourceTemporarilyUnavailable {
                return
            } catch let e as SystemCallError where e.errno == .messageTooLong {
                // The message or its descriptors did not fit; with descriptors, usually because
                // this process is out of them. Say so before closing.
                reply(c, ControlRefusal.messageTooLarge("\(e)").reply)
                closeConnection(c, reason: "receive failed: \(e)")
                return
            } catch {
                closeConnection(c, reason: "receive failed: \(error)")
                return
            }
            guard let (bytes, fds) = received else {
                closeConnection(c, reason: "peer closed the connection")
                return
            }
            let message: ControlMessage
            do {
                message = try ControlMessage.parse(bytes)
            } catch {
                for fd in fds { try? fd.close() }
                reply(c, ControlRefusal.malformed("\(error)").reply)
                continue
            }
            if c.isAdmin, case .captureStart(let request) = message {
                startCapture(request, descriptors: fds, on: c)
                continue
            }
            if c.isAdmin {
                for fd in fds { try? fd.close() }
                handleAdmin(message, from: c)
                continue
            }
            if case .attach(let request) = message {
                attach(c, request, fds)
                continue
            }
            if case .resume(let request) = message {
                resume(c, request, fds)
                continue
            }
            for fd in fds { try? fd.close() }
            if message.isAdministrative {
                refuseAdministrative(message, from: c)
                continue
            }
            handle(message, from: c)
            if connections[c.id] == nil { return }
        }
    }

    /// Sends `message` on `c`; a refusal is recorded in the event log first, for the vNIC
    /// `vnic` names (default: the connection's own).
    func reply(_ c: Connection, _ message: ControlMessage, descriptors: [FileDescriptor] = [], about vnic: String? = nil) {
        noteIfRefusal(message, on: c, about: vnic)
        do {
            try c.socket.send(message.encode(), descriptors: descriptors)
        } catch {
            logger.debug("reply to connection \(c.id) failed: \(error)")
        }
    }

    private func handle(_ message: ControlMessage, from c: Connection) {
        // The guest is answering: its switch under way gets a new step deadline.
        if let d = c.device, d.switching.isSwitching {
            switch message {
            case .switchQuery, .switchInReady, .switchOutBegin, .switchOutDone, .registerWrite:
                d.switching.guestAnswered(now: Clock.monotonicNanoseconds())
            default: break
            }
        }
        switch message {
        case .peerQuery(let mac):
            guard c.device != nil else { return reply(c, notAttached) }
            let active = dataPath.devices.contains { $0.mac == mac && HostStatus.reportedState(of: $0) == "active" }
            reply(c, .peerReply(mac: mac, active: active))
        case .registerWrite(let bar, let offset, let value):
            guard let d = c.device else { return reply(c, notAttached) }
            guard bar == 1 else { return reply(c, registerRefusal(.onlyBAR1)) }
            // A leaving vNIC's state was saved: a change now would not travel with it. Only the
            // DIC acknowledgement (ECR lives in guest memory) goes through.
            if departures[d.name] != nil && offset != VMXNET3.Register.ecr.rawValue {
                return reply(c, registerRefusal(.moving(d.name)))
            }
            if offset == VMXNET3.Register.cmd.rawValue && value == VMXNET3.Command.activateVF.rawValue {
                switch pfDriver.activateVF(d) {
                case .success: return reply(c, .registerResult(status: 0, value: 0, message: ""))
                case .failure(let r): return reply(c, registerRefusal(.switching(r), value: VMXNET3.QueueError.modeSwitchFailed))
                }
            }
            let refusal = d.writeRegister(offset: offset, value: value)
            if refusal == nil { pfDriver.syncPassthroughFilters(d) }
            if refusal == nil && offset == VMXNET3.Register.cmd.rawValue && value == VMXNET3.Command.activateDevice.rawValue
                && d.lastCommandResult == 0 && configuration.autoPassthrough && d.mode == .emulated
                && admission.admitSwitch(toPassthrough: true, for: d) == nil
            {
                if case .failure(let refusal) = pfDriver.requestSwitch(d, toPassthrough: true) {
                    logger.info("vNIC '\(d.name)' stays emulated: \(refusal)")
                }
            }
            let result = offset == VMXNET3.Register.cmd.rawValue ? d.lastCommandResult : 0
            reply(c, refusal.map { registerRefusal(.device($0), value: result) } ?? .registerResult(status: 0, value: result, message: ""))
        case .registerRead(let bar, let offset):
            guard let d = c.device else { return reply(c, notAttached) }
            guard bar == 1 else { return reply(c, registerRefusal(.onlyBAR1)) }
            switch d.readRegister(offset: offset) {
            case .success(let value): reply(c, .registerResult(status: 0, value: value, message: ""))
            case .failure(let refusal): reply(c, registerRefusal(.device(refusal)))
            }
        case .countersRequest:
            guard let d = c.device else { return reply(c, notAttached) }
            // The VF's drops (now and in earlier passthrough periods) are the guest NIC's too.
            let counters =
                d.counters.named().map { ControlMessage.Counter($0.0, $0.1) }
                + pfDriver.vfCounterTotals(d).sorted { $0.key < $1.key }.map { ControlMessage.Counter($0.key, $0.value) }
            reply(c, .countersReply(counters))
        case .detach:
            closeConnection(c, reason: "guest detached")
        case .switchQuery:
            guard let d = c.device else { return reply(c, notAttached) }
            if let offer = takeMoveOffer(for: d) { return reply(c, .switchOffer(offer)) }
            pfDriver.offerSwitch(d) { message, descriptors in reply(c, message, descriptors: descriptors) }
        case .switchInReady(let tx, let rx, let plugin):
            guard let d = c.device else { return reply(c, notAttached) }
            if !plugin.isEmpty { d.pluginName = String(plugin.prefix(64)) }
            switch pfDriver.prepareVF(d, tx: tx, rx: rx) {
            case .success: reply(c, .ok("VF initialised"))
            case .failure(let r): reply(c, ControlRefusal.switching(r).reply)
            }
        case .switchOutBegin:
            guard let d = c.device else { return reply(c, notAttached) }
            switch pfDriver.beginSwitchOut(d) {
            case .success: reply(c, .ok("VF quiesced"))
            case .failure(let r): reply(c, ControlRefusal.switching(r).reply)
            }
        case .switchOutDone:
            guard let d = c.device else { return reply(c, notAttached) }
            switch pfDriver.finishSwitchOut(d) {
            case .success: reply(c, .ok("emulated"))
            case .failure(let r): reply(c, ControlRefusal.switching(r).reply)
            }
        case .switchInFailed(let reason):
            guard let d = c.device else { return reply(c, notAttached) }
            switch pfDriver.guestFailedSwitchIn(d, reason: reason) {
            case .success: reply(c, .ok("staying on emulation"))
            case .failure(let r): reply(c, ControlRefusal.switching(r).reply)
            }
        case .pluginFault(let reason):
            guard let d = c.device else { return reply(c, notAttached) }
            events.record(.pluginFault, vnic: d.name, reason)
            switch pfDriver.resetVF(d, reason: "plugin fault: \(reason)") {
            case .success(let note): reply(c, .ok(note))
            case .failure(let r): reply(c, ControlRefusal.switching(r).reply)
            }
        case .moved:
            guard let d = c.device else { return reply(c, notAttached) }
            guestMoved(d, connection: c)
        case .moveFailed(let reason):
            guard let d = c.device else { return reply(c, notAttached) }
            guestFailedToMove(d, reason: reason, connection: c)
        case .statusRequest, .adminSwitch, .adminResetVF, .adminMigrate, .eventsRequest, .captureStart, .captureStop, .policySet,
            .policyRequest, .metricsRefresh:
            refuseAdministrative(message, from: c)
        case .resume, .attach, .attached, .registerResult, .statusReply, .countersReply, .error, .switchOffer, .ok, .peerReply,
            .eventsReply, .captureEnded, .policyReply:
            reply(c, ControlRefusal.unexpectedMessage.reply)
        }
    }

    private var notAttached: ControlMessage { ControlRefusal.notAttached.reply }

    /// A refused register access, as the register result the guest's driver reads.
    private func registerRefusal(_ refusal: ControlRefusal, value: UInt32 = 0) -> ControlMessage {
        .registerResult(status: refusal.code, value: value, message: refusal.description)
    }

    func closeConnection(_ c: Connection, reason: String) {
        epoll.remove(c.socket.fd)
        guard connections.removeValue(forKey: c.id) != nil else { return }
        if c.isAdmin { adminConnectionCount -= 1 }
        endCapture(on: c, replying: false)
        if let d = c.device {
            let wasLeaving = departures.removeValue(forKey: d.name) != nil
            c.device = nil
            tearDown(d, reason: reason)
            // Reported once the vNIC is gone, so that the orchestration finds the host as it says.
            if wasLeaving { report(.moveFailed(name: d.name, reason: "the guest's connection closed while it was leaving: \(reason)")) }
        }
    }

    /// Removes a vNIC from the host: doorbell, VF, device, port.
    func tearDown(_ d: EmulatedDevice, reason: String) {
        epoll.remove(d.doorbell.fd)
        pfDriver.releaseVF(d)
        d.detach()
        dataPath.remove(d)
        logger.info("vNIC \(d.id) of guest '\(d.name)' torn down: \(reason)")
        events.record(.detach, vnic: d.name, "vNIC \(d.id) torn down: \(reason)")
    }
}
