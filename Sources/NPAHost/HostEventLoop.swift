import Logging
import NPANICModel
import NPASystem

/// What an epoll event is about: the host's listeners, its stop eventfd, the PF's wake-up, one
/// connection, one vNIC's doorbell.
enum HostEventTag {
    static let listener: UInt64 = 0
    static let stop: UInt64 = 1
    static let pf: UInt64 = 2
    static let adminListener: UInt64 = 3
    static let uplinkWire: UInt64 = 4
    static let migrationListener: UInt64 = 5
    static let connectionBase: UInt64 = 1 << 32
    static let doorbellBase: UInt64 = 2 << 32
    static let migrationBase: UInt64 = 3 << 32

    static func connection(_ id: UInt64) -> UInt64 { connectionBase + id }
    static func doorbell(_ vnicID: UInt32) -> UInt64 { doorbellBase + UInt64(vnicID) }
    static func migration(_ id: UInt64) -> UInt64 { migrationBase + id }
}

/// The host's event loop: the one thread everything runs on. It polls the data path while there
/// is work and sleeps in epoll (asking guests to kick) after `idlePassesBeforeSleep` empty
/// passes; between passes it serves control events — accepting connections on both listeners,
/// handing readable connections to the control server, draining doorbells — and its timers: the
/// accept back-off after running out of descriptors, guest connections' attach deadlines, switch
/// step deadlines, the rounds of self-announcements (`SelfAnnouncer`).
///
/// It owns epoll, the stop eventfd and the listening sockets; it may touch the data path (passes,
/// sleep flags), the control server (new and readable connections, expired attaches) and the PF
/// driver (switch deadlines). `stop()` may be called from any thread or a signal handler.
final class HostEventLoop {
    let epoll: Epoll
    private let stopNotifier: EventNotifier
    private let listener: SeqPacketSocket
    private let adminListener: SeqPacketSocket
    private let configuration: HostConfiguration
    private let logger: Logger
    private let server: ControlServer
    private let dataPath: HostDataPath
    private let pfDriver: PFDriver
    private var sleeping = false
    /// Every TAP wire (the NICs' and the uplink's) with its port's name, and the ports whose
    /// wire was seen down (`checkWires` says so once each).
    private(set) var wires: [(port: String, wire: TAPWire)] = []
    private var wiresReportedDown: Set<String> = []
    /// Its sleeps in epoll and their length (the metrics read it; `HostDaemon.sleeps` too).
    let activity = HostThreadActivity()
    var sleeps: UInt64 { activity.sleeps }
    /// Unattached guest connections in accept order with their attach deadlines (one timeout for
    /// all, so accept order is deadline order: a FIFO, no heap). Entries of connections that
    /// attached or closed are skipped when they come up.
    private var attachDeadlines: [(id: UInt64, deadline: UInt64)] = []
    private var attachDeadlinesHead = 0
    /// While accept() fails for want of descriptors the listeners are out of the epoll set (they
    /// are level-triggered: left in, the pending connection would spin the loop) until this time.
    private var listenerPausedUntil: UInt64?
    /// How long accepting pauses after running out of descriptors: long enough not to spin,
    /// short enough that a freed descriptor is used soon.
    static let acceptBackoffNanoseconds: UInt64 = 100_000_000

    /// The two listening sockets, taken together: the control socket (guests) and the admin
    /// socket (mode 0600). Either refusal (`SocketPathError`) leaves no file of ours behind.
    struct Listeners {
        let control: SeqPacketSocket
        let admin: SeqPacketSocket

        init(control controlPath: String, admin adminPath: String) throws {
            control = try SeqPacketSocket.listen(path: controlPath)
            do {
                admin = try SeqPacketSocket.listen(path: adminPath, permissions: 0o600)
            } catch {
                control.removeSocketFileIfOurs()
                throw error
            }
        }

        /// Removes both socket files, each only if it is still the one this host bound.
        func removeSocketFiles() {
            control.removeSocketFileIfOurs()
            admin.removeSocketFileIfOurs()
        }
    }

    init(
        epoll: Epoll, listeners: Listeners, server: ControlServer, dataPath: HostDataPath, pfDriver: PFDriver,
        configuration: HostConfiguration, logger: Logger
    ) throws {
        self.epoll = epoll
        self.listener = listeners.control
        self.adminListener = listeners.admin
        self.server = server
        self.dataPath = dataPath
        self.pfDriver = pfDriver
        self.configuration = configuration
        self.logger = logger
        stopNotifier = try EventNotifier()
        listener.setNonBlocking()
        adminListener.setNonBlocking()
        try epoll.add(listener.fd, tag: HostEventTag.listener)
        try epoll.add(adminListener.fd, tag: HostEventTag.adminListener)
        try epoll.add(stopNotifier.fd, tag: HostEventTag.stop)
        if let nic = dataPath.uplinkNIC { try epoll.add(nic.pfReceive.wake.fd, tag: HostEventTag.pf) }
        if let wire = dataPath.uplinkWire { try epoll.add(wire.device.fd, tag: HostEventTag.uplinkWire) }
        wires = pfDriver.nics.compactMap { nic in nic.wire.map { ("NIC \(nic.name)", $0) } }
        if let wire = dataPath.uplinkWire { wires.append(("uplink", wire)) }
    }

    /// Asks `run()` to return. Async-signal-safe (one eventfd write).
    func stop() { stopNotifier.signal() }

    /// The eventfd that stops the host when signalled (`TerminationSignals.deliver(to:)` aims SIGINT
    /// and SIGTERM at it).
    var stopDescriptor: Int32 { stopNotifier.fd.rawValue }

    /// Serves until `stop()`. Removes the socket files on return, each if it is still the one
    /// this host bound (another host may have replaced a path it thought stale).
    func run() throws {
        defer {
            listener.removeSocketFileIfOurs()
            adminListener.removeSocketFileIfOurs()
            server.closeAll(reason: "host stopping")
            logger.info("host stopped")
        }
        var idlePasses = 0
        var passesSinceControl = 0
        while true {
            let work = dataPath.isIdle ? 0 : dataPath.pass()
            idlePasses = work > 0 ? 0 : idlePasses + 1
            passesSinceControl += 1
            var timeout: Int32 = -2
            if dataPath.isIdle || idlePasses >= configuration.idlePassesBeforeSleep {
                // Announce sleep, then re-check: a doorbell written before the announcement is
                // seen here; one written after it comes with a kick.
                let uplinkNIC = dataPath.uplinkNIC
                for d in dataPath.devices { d.setSleeping(true) }
                uplinkNIC?.pfReceive.setConsumerSleeping(true)
                MemoryFence.sequentiallyConsistent()
                if dataPath.devices.contains(where: { $0.hasPendingTransmit() }) || uplinkNIC?.pfReceive.isEmpty == false
                    || dataPath.hasPendingWireFrames
                {
                    for d in dataPath.devices { d.setSleeping(false) }
                    uplinkNIC?.pfReceive.setConsumerSleeping(false)
                    idlePasses = 0
                    continue
                }
                sleeping = true
                timeout = 1000
            } else if passesSinceControl >= 64 {
                timeout = 0
            } else if work == 0 && dataPath.heldBack {
                // A sender waits for a receiver with no free buffer: give that receiver's vCPU
                // the core (the only syscall here, and only while frames are held back).
                EngineThread.yieldProcessor()
            } else if work == 0 {
                CPU.relax()
            }
            dataPath.heldBack = false
            if timeout != -2 {
                passesSinceControl = 0
                if timeout > 0 { timeout = min(timeout, millisecondsUntilNextTimer()) }
                let asleepAt = sleeping ? Clock.monotonicNanoseconds() : 0
                let tags = try epoll.wait(timeoutMilliseconds: timeout)  // a slice of Epoll's buffer: no allocation per wake-up
                if sleeping {
                    activity.noteSleep(since: asleepAt)
                    sleeping = false
                    dataPath.uplinkNIC?.pfReceive.setConsumerSleeping(false)
                    for d in dataPath.devices { d.setSleeping(false) }
                    idlePasses = 0
                }
                if handleEvents(tags) == false { return }
                serviceTimers()
                server.migrations?.service(now: Clock.monotonicNanoseconds())
                checkWires()
                if dataPath.devices.contains(where: { $0.switching.isSwitching }) {
                    pfDriver.expireSwitchSteps(now: Clock.monotonicNanoseconds())
                }
            }
        }
    }

    /// Handles the control events that are ready now without sleeping (FuzzTesting steps the
    /// host this way). Returns false if the host was asked to stop.
    func serveReadyEvents() throws -> Bool { try handleEvents(epoll.wait(timeoutMilliseconds: 0)) }

    /// Returns false when the host must stop.
    private func handleEvents(_ tags: ArraySlice<UInt64>) -> Bool {
        for tag in tags {
            if tag == HostEventTag.stop {
                stopNotifier.drain()
                return false
            } else if tag == HostEventTag.pf {
                dataPath.uplinkNIC?.pfReceive.wake.drain()
            } else if tag == HostEventTag.uplinkWire {
                dataPath.uplinkWire?.markReadable()
            } else if tag == HostEventTag.listener {
                acceptPending(admin: false)
            } else if tag == HostEventTag.adminListener {
                acceptPending(admin: true)
            } else if tag == HostEventTag.migrationListener || tag >= HostEventTag.migrationBase {
                server.migrations?.handle(tag: tag)
            } else if tag >= HostEventTag.doorbellBase {
                let id = UInt32(truncatingIfNeeded: tag - HostEventTag.doorbellBase)
                if let d = dataPath.devices.first(where: { $0.id == id }) {
                    d.doorbell.drain()
                    d.counters.doorbellKicks &+= 1
                }
            } else if tag >= HostEventTag.connectionBase {
                server.serve(connection: tag - HostEventTag.connectionBase)
            }
        }
        return true
    }

    /// Accepts every pending connection on one listener and hands it to the control server
    /// (which applies the caps). Never throws: no failure to accept one more client is a reason
    /// to drop the guests already attached.
    private func acceptPending(admin: Bool) {
        while listenerPausedUntil == nil {
            let socket: SeqPacketSocket
            do {
                guard let accepted = try (admin ? adminListener : listener).accept() else { return }
                socket = accepted
            } catch let error as SystemCallError {
                if error.errno == .tooManyOpenFiles || error.errno == .tooManyOpenFilesInSystem { server.acceptFDExhausted &+= 1 }
                pauseAccepting(error)
                return
            } catch {
                pauseAccepting(error)
                return
            }
            guard let id = server.adopt(socket, admin: admin) else { continue }
            let timeout = UInt64(configuration.attachTimeoutSeconds * 1e9)
            attachDeadlines.append((id, Clock.monotonicNanoseconds() + timeout))
        }
    }

    /// Out of descriptors (or kernel memory): stop asking for a while. The connection stays in
    /// the backlog and is accepted once descriptors free up (an idle connection closing at its
    /// attach deadline, a guest leaving).
    private func pauseAccepting(_ error: Error) {
        epoll.remove(listener.fd)
        epoll.remove(adminListener.fd)
        listenerPausedUntil = Clock.monotonicNanoseconds() + Self.acceptBackoffNanoseconds
        let exhausted = server.acceptFDExhausted
        if exhausted <= 1 || exhausted & (exhausted - 1) == 0 {  // logged at 1, 2, 4, 8, ...
            let text =
                "accept failed (\(error)); \(server.connections.count) connections open, \(exhausted) times out of descriptors so far; "
            logger.warning("\(text)pausing accept for \(Self.acceptBackoffNanoseconds / 1_000_000) ms")
        }
    }

    /// A TAP wire whose interface was deleted under the host: its port is down for good (the
    /// NIC's engine or the data path saw it and counts what it drops); said once, and the
    /// uplink's descriptor leaves epoll (it would report an error forever). The other ports and
    /// the guests carry on.
    private func checkWires() {
        for (port, wire) in wires where wire.isDown && !wiresReportedDown.contains(port) {
            wiresReportedDown.insert(port)
            if wire === dataPath.uplinkWire { epoll.remove(wire.device.fd) }
            logger.error("\(port) wire: TAP \(wire.interfaceName) is gone (\(wire.failure.map { "\($0)" } ?? "")): link down")
        }
    }

    private func millisecondsUntilNextTimer() -> Int32 {
        var next = listenerPausedUntil ?? UInt64.max
        if let migration = server.migrations?.nextDeadline { next = min(next, migration) }
        if attachDeadlinesHead < attachDeadlines.count { next = min(next, attachDeadlines[attachDeadlinesHead].deadline) }
        if let announcement = dataPath.nextAnnouncementDeadline { next = min(next, announcement) }
        guard next != UInt64.max else { return Int32.max }
        let now = Clock.monotonicNanoseconds()
        return next <= now ? 0 : Int32(clamping: (next - now) / 1_000_000 + 1)
    }

    /// Resumes accepting after a back-off, closes connections past their attach deadline and
    /// sends the self-announcement rounds that are due. Runs after every epoll wait: one clock
    /// read when nothing is due.
    private func serviceTimers() {
        let now = Clock.monotonicNanoseconds()
        dataPath.serviceAnnouncements(now: now)
        if let until = listenerPausedUntil, now >= until {
            do {
                try epoll.add(listener.fd, tag: HostEventTag.listener)
                do {
                    try epoll.add(adminListener.fd, tag: HostEventTag.adminListener)
                } catch {
                    epoll.remove(listener.fd)  // both or neither, so the next try starts clean
                    throw error
                }
                listenerPausedUntil = nil
            } catch {
                listenerPausedUntil = now + Self.acceptBackoffNanoseconds
            }
        }
        while attachDeadlinesHead < attachDeadlines.count, attachDeadlines[attachDeadlinesHead].deadline <= now {
            let id = attachDeadlines[attachDeadlinesHead].id
            attachDeadlinesHead += 1
            server.expireAttach(id)
        }
        if attachDeadlinesHead == attachDeadlines.count {
            attachDeadlines.removeAll(keepingCapacity: true)
            attachDeadlinesHead = 0
        } else if attachDeadlinesHead >= 1024 {
            attachDeadlines.removeFirst(attachDeadlinesHead)
            attachDeadlinesHead = 0
        }
    }
}
