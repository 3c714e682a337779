import CNPAShim
import Glibc
import Logging
import NPAControlProtocol
import NPANICModel
import NPARingFormats
import NPASystem
import SystemPackage

/// The host: one daemon per machine. It listens on a Unix control socket, attaches guests
/// (their memory and eventfds arrive with SCM_RIGHTS), runs device emulation for every vNIC and
/// the vswitch between them.
///
/// Everything runs on the thread that calls `run()`: control messages are handled between data
/// path passes, so device and switch state need no locks. The data path polls while there is
/// work and sleeps in epoll (asking guests to kick) after `idlePassesBeforeSleep` empty passes.
/// `stop()` may be called from any thread or a signal handler.
///
/// Its socket path is its own: it refuses a path holding anything but a stale socket, and on
/// exit removes the socket file only if it is still the one it bound. Connections are capped
/// (`maxConnections`), must attach within `attachTimeoutSeconds`, and running out of
/// descriptors only pauses accepting (counted in `npa status`): the guests already attached
/// keep being served.
public final class HostDaemon: @unchecked Sendable {
    public let socketPath: String
    public let configuration: HostConfiguration
    let logger: Logger
    private let listener: SeqPacketSocket
    private let epoll: Epoll
    private let stopNotifier: EventNotifier
    let vswitch = VirtualSwitch()
    private let arena = FrameArena(capacity: 64)
    var connections: [UInt64: Connection] = [:]
    private var nextConnectionID: UInt64 = 1
    private var nextVNICID: UInt32 = 1
    var devices: [EmulatedDevice] = []
    /// Port index → the device on it, unretained so routing a frame costs no reference counting
    /// (`devices` keeps them alive).
    private var portOwners: [Unmanaged<EmulatedDevice>?] = []
    /// `devices`, unretained, in a buffer rebuilt on attach/detach: the per-pass loops read it
    /// without retaining the array or its elements (iterating `devices` retains each one).
    private var activeDevices = UnsafeMutableBufferPointer<Unmanaged<EmulatedDevice>>.allocate(capacity: 0)
    /// `uplinkNIC`, unretained, for the same reason (`nics` keeps it alive).
    private var uplinkRef: Unmanaged<SoftNIC>?
    private var wire: CountingWire?
    /// The host's software SR-IOV NICs (engines on their own threads, accounted as hardware).
    package private(set) var nics: [SoftNIC] = []
    /// The NIC whose PF is the vswitch's uplink, if any.
    private(set) var uplinkNIC: SoftNIC?
    /// VFs reserved or in use, per NIC name.
    var vfsInUse: [String: Set<Int>] = [:]
    /// Arena slots of the current burst bound for the PF (the uplink), sent as one burst.
    private let pfBatch = UnsafeMutablePointer<Int32>.allocate(capacity: 64)
    private var pfBatchCount = 0
    private var sleeping = false
    /// Frames from the PF that no vNIC took (unknown destination or filtered): shown with the
    /// uplink's dropped frames in `npa status`.
    private var pfFramesUnroutable: UInt64 = 0
    /// Set by a pass that held a frame back for a receiver without buffers (see `switchBurst`).
    private var heldBack = false
    /// Whether some vNIC's MAC waits for its switch-out after a VF reset (`awaitingSwitchOut`):
    /// only then does `switchBurst` look for it among frames bound for the uplink.
    private var anyAwaitingSwitchOut = false
    public private(set) var sleeps: UInt64 = 0
    /// Unattached connections in accept order with their attach deadlines (one timeout for all,
    /// so accept order is deadline order: a FIFO, no heap). Entries of connections that attached
    /// or closed are skipped when they come up.
    private var attachDeadlines: [(id: UInt64, deadline: UInt64)] = []
    private var attachDeadlinesHead = 0
    /// While accept() fails for want of descriptors the listener is out of the epoll set (it is
    /// level-triggered: left in, the pending connection would spin the loop) until this time.
    private var listenerPausedUntil: UInt64?
    private var connectionsRefused: UInt64 = 0
    private var attachTimeouts: UInt64 = 0
    private var acceptFDExhausted: UInt64 = 0
    /// How long accepting pauses after running out of descriptors: long enough not to spin,
    /// short enough that a freed descriptor is used soon.
    static let acceptBackoffNanoseconds: UInt64 = 100_000_000

    private static let listenerTag: UInt64 = 0
    private static let stopTag: UInt64 = 1
    private static let pfTag: UInt64 = 2
    private static let connectionTagBase: UInt64 = 1 << 32
    private static let doorbellTagBase: UInt64 = 2 << 32

    final class Connection {
        let id: UInt64
        let socket: SeqPacketSocket
        var device: EmulatedDevice?
        init(id: UInt64, socket: SeqPacketSocket) {
            self.id = id
            self.socket = socket
        }
    }

    public init(socketPath: String, configuration: HostConfiguration = HostConfiguration(), logger: Logger) throws {
        self.socketPath = socketPath
        self.configuration = configuration
        self.logger = logger
        epoll = try Epoll()
        stopNotifier = try EventNotifier()
        // Throws SocketPathError if the path is not ours to take (a file, a live host).
        let listener = try SeqPacketSocket.listen(path: socketPath)
        self.listener = listener
        do {
            listener.setNonBlocking()
            try epoll.add(listener.fd, tag: Self.listenerTag)
            try epoll.add(stopNotifier.fd, tag: Self.stopTag)
            for n in configuration.nics {
                let model = SoftNIC.Model(rawValue: n.model) ?? .dring
                let nic = try SoftNIC(name: n.name, model: model, vfCount: n.vfs)
                nic.receiverStallLimitNanoseconds = UInt64(configuration.receiverStallMilliseconds) * 1_000_000
                nics.append(nic)
            }
            switch configuration.uplink {
            case .none:
                break
            case .counting:
                _ = vswitch.addUplink()
                wire = CountingWire()
            case .nic(let name):
                _ = vswitch.addUplink()
                uplinkNIC = nics.first { $0.name == name }
                uplinkNIC?.setPFEnabled(true)
                if let nic = uplinkNIC {
                    try epoll.add(nic.pfReceive.wake.fd, tag: Self.pfTag)
                    uplinkRef = Unmanaged.passUnretained(nic)
                }
            }
        } catch {
            // A host that never ran leaves no socket file behind.
            listener.removeSocketFileIfOurs()
            throw error
        }
        syncPortOwners()
        for nic in nics { nic.start(idlePasses: configuration.idlePassesBeforeSleep) }
        if let limit = try? ResourceLimits.openFiles().soft, UInt64(configuration.maxConnections) * 5 + 64 > limit {
            let text = "max_connections \(configuration.maxConnections) may need more descriptors than this process may open (\(limit)); "
            logger.warning("\(text)the host will pause accepting when it runs out")
        }
    }

    deinit {
        for nic in nics { nic.stop() }
        pfBatch.deallocate()
        activeDevices.deallocate()
    }

    /// Asks `run()` to return. Async-signal-safe (one eventfd write).
    public func stop() { stopNotifier.signal() }

    /// The descriptor a signal handler may write to (via `cnpa_eventfd_signal`) to stop the host.
    public var stopDescriptor: Int32 { stopNotifier.fd.rawValue }

    /// Serves until `stop()`. Removes the socket file on return, if it is still the one this
    /// host bound (another host may have replaced a path it thought stale).
    public func run() throws {
        EngineThread.setCurrentName("npa-host")
        logger.info("host listening on \(socketPath)")
        defer {
            listener.removeSocketFileIfOurs()
            for c in connections.values { closeConnection(c, reason: "host stopping") }
            logger.info("host stopped")
        }
        var idlePasses = 0
        var passesSinceControl = 0
        while true {
            let work = devices.isEmpty && uplinkNIC == nil ? 0 : dataPathPass()
            idlePasses = work > 0 ? 0 : idlePasses + 1
            passesSinceControl += 1
            var timeout: Int32 = -2
            if (devices.isEmpty && uplinkNIC == nil) || idlePasses >= configuration.idlePassesBeforeSleep {
                // Announce sleep, then re-check: a doorbell written before the announcement is
                // seen here; one written after it comes with a kick.
                for d in devices { d.setSleeping(true) }
                uplinkNIC?.pfReceive.setConsumerSleeping(true)
                cnpa_fence_seq_cst()
                if devices.contains(where: { $0.hasPendingTransmit() }) || uplinkNIC?.pfReceive.isEmpty == false {
                    for d in devices { d.setSleeping(false) }
                    uplinkNIC?.pfReceive.setConsumerSleeping(false)
                    idlePasses = 0
                    continue
                }
                sleeping = true
                sleeps &+= 1
                timeout = 1000
            } else if passesSinceControl >= 64 {
                timeout = 0
            } else if work == 0 && heldBack {
                // A sender waits for a receiver with no free buffer: give that receiver's vCPU
                // the core (the only syscall here, and only while frames are held back).
                sched_yield()
            } else if work == 0 {
                cnpa_cpu_relax()
            }
            heldBack = false
            if timeout != -2 {
                passesSinceControl = 0
                if timeout > 0 { timeout = min(timeout, millisecondsUntilNextTimer()) }
                let tags = try epoll.wait(timeoutMilliseconds: timeout)  // a slice of Epoll's buffer: no allocation per wake-up
                if sleeping {
                    sleeping = false
                    uplinkNIC?.pfReceive.setConsumerSleeping(false)
                    for d in devices { d.setSleeping(false) }
                    idlePasses = 0
                }
                if handleEvents(tags) == false { return }
                serviceTimers()
                if devices.contains(where: { $0.pendingSwitch != .none }) { expireSwitchSteps(now: Clock.monotonicNanoseconds()) }
            }
        }
    }

    /// One pass over every active vNIC's TX queues: stage a burst, switch it, deliver it; then
    /// raise the interrupts the pass earned. Returns the number of TX chains consumed.
    private func dataPathPass() -> Int {
        var work = 0
        for ref in activeDevices {
            work += ref._withUnsafeGuaranteedRef { device in
                guard device.isActive else { return 0 }
                var n = 0
                for q in 0..<device.txQueues.count {
                    guard device.pullTransmit(queue: q, arena: arena, budget: arena.capacity) > 0 else { continue }
                    let taken = switchBurst(from: device)
                    if taken < arena.count { heldBack = true }
                    n += device.completeTransmit(queue: q, arena: arena, framesTaken: taken)
                }
                return n
            }
        }
        if let nic = uplinkRef { work += nic._withUnsafeGuaranteedRef { receiveFromPF($0) } }
        for ref in activeDevices { ref._withUnsafeGuaranteedRef { $0.raiseInterrupts() } }
        return work
    }

    /// Frames the NIC sent up to its PF (for MACs not on a VF) enter the vswitch by the uplink.
    /// A unicast frame whose receiver has no free buffer (within its stall limit) stays in the
    /// PF queue, which then fills and holds back the NIC's senders in turn. At a switch point
    /// (`switching` given) frames for the switching guest, and for a guest whose VF was reset,
    /// are not held: the drain must finish, and those guests are busy in their own switch.
    /// A frame for no vNIC is counted in `pfFramesUnroutable`.
    func receiveFromPF(_ nic: SoftNIC, switching exempt: EmulatedDevice? = nil) -> Int {
        guard let ingress = vswitch.uplinkPort else { return 0 }
        let exemptOwner = exempt.map { Unmanaged.passUnretained($0).toOpaque() }
        return nic.pfReceive.pop(max: arena.capacity, while: { frame, length in
            let dst = EthernetFrame.mac(frame, at: 0)
            let vlan = EthernetFrame.vlanID(frame, length: length)
            guard case .forward(let n) = vswitch.route(destination: dst, vlan: vlan, ingress: ingress, into: arena.destinations) else {
                // For a vNIC in passthrough whose VF did not take it (reset, or disabled under
                // the plugin): it waits here until the MAC is back on the vswitch (the guest is
                // switching out), or is dropped and counted where that guest sees it.
                if let owner = passthroughOwner(of: dst, vlan: vlan) {
                    if exempt == nil && owner._withUnsafeGuaranteedRef({ $0.holdsSendersUntilSwitchOut() }) {
                        heldBack = true
                        return false
                    }
                    owner._withUnsafeGuaranteedRef { $0.drop(.inactive) }
                    return true
                }
                pfFramesUnroutable &+= 1
                return true
            }
            let hash = EthernetFrame.flowHash(frame, length: length)
            if n == 1, let owner = portOwners[Int(arena.destinations[0])], owner.toOpaque() != exemptOwner,
                owner._withUnsafeGuaranteedRef({ !$0.hasReceiveBuffer(hash: hash) && $0.holdsSenders }) {
                heldBack = true
                return false
            }
            for k in 0..<n {
                if let owner = portOwners[Int(arena.destinations[k])] {
                    owner._withUnsafeGuaranteedRef { $0.deliver(frame, length: length, hash: hash) }
                }
            }
            return true
        })
    }

    /// Anti-spoofing, VLAN policy, then the vswitch decides; the copies into each destination
    /// happen here. No allocation or reference counting per frame.
    ///
    /// Returns how many of the burst's frames were taken. It stops at a unicast frame whose
    /// receiver has no free buffer but is still within its stall limit — a vNIC here, or a VF
    /// behind the PF (the NIC takes a PF burst only up to such a frame): that frame and the rest
    /// stay in the sender's TX ring (backpressure, like a NIC honouring pause frames) and are
    /// offered again on the next pass, in order. Broadcast and flooded frames never wait: one
    /// slow receiver must not hold up a frame meant for many. Frames for the PF are batched
    /// (one NIC lock per batch); the batch goes before any later frame is delivered here, so
    /// what was taken is always a prefix of the burst.
    private func switchBurst(from device: EmulatedDevice) -> Int {
        let ingress = device.port
        var taken = arena.count
        frames: for i in 0..<arena.count {
            let frame = UnsafeRawPointer(arena.slot(i))
            let length = arena.lengths[i]
            guard let vlan = device.admittedVLAN(ofTransmitted: frame, length: length, on: vswitch) else { continue }
            let dst = EthernetFrame.mac(frame, at: 0)
            let route = vswitch.route(destination: dst, vlan: vlan, ingress: ingress, into: arena.destinations)
            var hash: UInt32 = 0
            if case .forward(let n) = route {
                hash = EthernetFrame.flowHash(frame, length: length)
                if n == 1, let owner = portOwners[Int(arena.destinations[0])],
                    owner._withUnsafeGuaranteedRef({ !$0.hasReceiveBuffer(hash: hash) && $0.holdsSenders }) {
                    taken = i
                    heldBack = true
                    break
                } else if n == 1, anyAwaitingSwitchOut, Int(arena.destinations[0]) == vswitch.uplinkPort,
                    let owner = awaitingOwner(of: dst, vlan: vlan)
                {
                    // Unknown to the vswitch because its VF was reset and its guest has not yet
                    // switched out: not for the uplink (the NIC forgot the MAC) but held back.
                    if owner._withUnsafeGuaranteedRef({ $0.holdsSendersUntilSwitchOut() }) {
                        taken = i
                        heldBack = true
                        break
                    }
                    owner._withUnsafeGuaranteedRef { $0.drop(.inactive) }
                    continue
                }
            }
            countTransmit(device, destination: dst, length: length, sign: 1)
            switch route {
            case .forward(let n):
                for k in 0..<n {
                    let port = Int(arena.destinations[k])
                    if let owner = portOwners[port] {
                        if let held = flushPFBatch() {
                            uncountBurst(device, from: held, through: i)
                            taken = held
                            break frames
                        }
                        owner._withUnsafeGuaranteedRef { $0.deliver(frame, length: length, hash: hash) }
                    } else if port == vswitch.uplinkPort {
                        if uplinkNIC != nil {
                            pfBatch[pfBatchCount] = Int32(i)
                            pfBatchCount += 1
                        } else {
                            wire?.transmit(length: length)
                        }
                    }
                }
            case .unknownDestination:
                device.drop(.unknownDestination)
            case .filtered:
                device.drop(.filtered)
            }
        }
        if let held = flushPFBatch() {
            uncountBurst(device, from: held, through: taken - 1)
            taken = held
        }
        return taken
    }

    /// Sends the frames batched for the PF into the NIC. Returns the arena index of the first
    /// frame it did not take (its VF has no free buffer yet), or nil when it took them all.
    private func flushPFBatch() -> Int? {
        guard pfBatchCount > 0, let nic = uplinkNIC else { return nil }
        let arena = self.arena, batch = pfBatch, count = pfBatchCount
        pfBatchCount = 0
        let sent = nic.transmitFromPF(count: count) { k in (UnsafeRawPointer(arena.slot(Int(batch[k]))), arena.lengths[Int(batch[k])]) }
        guard sent < count else { return nil }
        heldBack = true
        return Int(batch[sent])
    }

    @inline(__always)
    private func countTransmit(_ device: EmulatedDevice, destination dst: UInt64, length: Int, sign: UInt64) {
        device.counters.txFrames &+= sign
        device.counters.txBytes &+= UInt64(length) &* sign
        if dst == MACAddress.broadcast.value {
            device.counters.txBroadcast &+= sign
        } else if (dst >> 40) & 1 == 1 {
            device.counters.txMulticast &+= sign
        }
    }

    /// Takes back what `switchBurst` counted for frames `first...last`, which stay in the guest's
    /// ring and will be counted when they are taken. (The same checks on the same private copy
    /// under the same switch state give the same outcome, so nothing needs remembering.)
    private func uncountBurst(_ device: EmulatedDevice, from first: Int, through last: Int) {
        guard first <= last else { return }
        let back = UInt64.max  // adding 2^64 - 1 wraps to subtracting one
        for i in first...last {
            let frame = UnsafeRawPointer(arena.slot(i))
            let length = arena.lengths[i]
            guard let vlan = device.readmittedVLAN(ofTransmitted: frame, length: length, on: vswitch) else { continue }
            let dst = EthernetFrame.mac(frame, at: 0)
            let route = vswitch.route(destination: dst, vlan: vlan, ingress: device.port, into: arena.destinations)
            if case .forward(1) = route, anyAwaitingSwitchOut, Int(arena.destinations[0]) == vswitch.uplinkPort,
                let owner = awaitingOwner(of: dst, vlan: vlan) {
                owner._withUnsafeGuaranteedRef { $0.counters.drops[DropReason.inactive.rawValue] &-= 1 }  // dropped for a reset VF's guest
                continue
            }
            countTransmit(device, destination: dst, length: length, sign: back)
            switch route {
            case .forward: break
            case .unknownDestination: device.counters.drops[DropReason.unknownDestination.rawValue] &-= 1
            case .filtered: device.counters.drops[DropReason.filtered.rawValue] &-= 1
            }
        }
    }

    /// The vNIC in passthrough that owns unicast `dst` in `vlan` (its port keeps its VLANs, not
    /// its MAC). A frame the vswitch cannot route: a linear search, off the per-frame path.
    private func passthroughOwner(of dst: UInt64, vlan: UInt16) -> Unmanaged<EmulatedDevice>? {
        guard (dst >> 40) & 1 == 0 else { return nil }
        for ref in activeDevices {
            let found = ref._withUnsafeGuaranteedRef { $0.mode == .passthrough && $0.mac.value == dst && vswitch.isMember($0.port, vlan: vlan) }
            if found { return ref }
        }
        return nil
    }

    /// As `passthroughOwner`, among vNICs whose VF was reset and whose guest has not switched out.
    private func awaitingOwner(of dst: UInt64, vlan: UInt16) -> Unmanaged<EmulatedDevice>? {
        guard let ref = passthroughOwner(of: dst, vlan: vlan), ref._withUnsafeGuaranteedRef({ $0.awaitingSwitchOut }) else { return nil }
        return ref
    }

    func setAwaitingSwitchOut(_ d: EmulatedDevice, _ awaiting: Bool) {
        guard d.awaitingSwitchOut != awaiting else { return }
        d.awaitingSwitchOut = awaiting
        // The MAC moves now (or the vNIC goes): its stall clock starts afresh.
        d.receiverStalledSince = 0
        d.exceededStallLimit = false
        anyAwaitingSwitchOut = devices.contains { $0.awaitingSwitchOut }
    }

    /// Passthrough: the vNIC's port keeps its place but holds no MAC and accepts nothing, so the
    /// vswitch sends frames for the guest to the uplink (the PF, then the VF) and never twice.
    func detachFromSwitch(_ d: EmulatedDevice) {
        vswitch.setMAC(d.port, .zero)
        vswitch.setRxMode(d.port, [])
    }

    func reattachToSwitch(_ d: EmulatedDevice) {
        vswitch.setMAC(d.port, d.mac)
        vswitch.setRxMode(d.port, d.rxMode)
    }

    func syncPortOwners() {
        portOwners = [Unmanaged<EmulatedDevice>?](repeating: nil, count: vswitch.portCount)
        for d in devices { portOwners[d.port] = Unmanaged.passUnretained(d) }
        activeDevices.deallocate()
        activeDevices = .allocate(capacity: devices.count)
        _ = activeDevices.initialize(from: devices.map { Unmanaged.passUnretained($0) })
        arena.ensureDestinations(vswitch.portCount)
    }

    // MARK: Control plane

    /// Returns false when the host must stop.
    private func handleEvents(_ tags: ArraySlice<UInt64>) -> Bool {
        for tag in tags {
            if tag == Self.stopTag {
                stopNotifier.drain()
                return false
            } else if tag == Self.pfTag {
                uplinkNIC?.pfReceive.wake.drain()
            } else if tag == Self.listenerTag {
                acceptPending()
            } else if tag >= Self.doorbellTagBase {
                let id = UInt32(truncatingIfNeeded: tag - Self.doorbellTagBase)
                if let d = devices.first(where: { $0.id == id }) {
                    d.doorbell.drain()
                    d.counters.doorbellKicks &+= 1
                }
            } else if tag >= Self.connectionTagBase, let c = connections[tag - Self.connectionTagBase] {
                serve(c)
            }
        }
        return true
    }

    /// Accepts every pending connection, within `maxConnections`. Never throws: no failure to
    /// accept one more client is a reason to drop the guests already attached.
    private func acceptPending() {
        while listenerPausedUntil == nil {
            let socket: SeqPacketSocket
            do {
                guard let accepted = try listener.accept() else { return }
                socket = accepted
            } catch let error as SystemCallError {
                if error.errno == .tooManyOpenFiles || error.errno == .tooManyOpenFilesInSystem { acceptFDExhausted &+= 1 }
                pauseAccepting(error)
                return
            } catch {
                pauseAccepting(error)
                return
            }
            socket.setNonBlocking()
            guard connections.count < configuration.maxConnections else {
                // Say why before closing: the client reads this instead of a bare hang-up.
                connectionsRefused &+= 1
                let text =
                    "the host has \(connections.count) connections open (max_connections \(configuration.maxConnections)); try again later"
                try? socket.send(ControlMessage.error(code: ControlMessage.ErrorCode.resourceExhausted, message: text).encode())
                if connectionsRefused & (connectionsRefused - 1) == 0 {  // logged at 1, 2, 4, 8, ...
                    logger.warning("connection refused (\(connectionsRefused) so far): \(text)")
                }
                continue  // `socket` is released here, which closes it
            }
            let c = Connection(id: nextConnectionID, socket: socket)
            do {
                try epoll.add(socket.fd, tag: Self.connectionTagBase + c.id)
            } catch {
                logger.warning("connection dropped: \(error)")
                continue
            }
            nextConnectionID += 1
            connections[c.id] = c
            let timeout = UInt64(configuration.attachTimeoutSeconds * 1e9)
            attachDeadlines.append((c.id, cnpa_monotonic_ns() + timeout))
        }
    }

    /// Out of descriptors (or kernel memory): stop asking for a while. The connection stays in
    /// the backlog and is accepted once descriptors free up (an idle connection closing at its
    /// attach deadline, a guest leaving).
    private func pauseAccepting(_ error: Error) {
        epoll.remove(listener.fd)
        listenerPausedUntil = cnpa_monotonic_ns() + Self.acceptBackoffNanoseconds
        let exhausted = acceptFDExhausted
        if exhausted <= 1 || exhausted & (exhausted - 1) == 0 {  // logged at 1, 2, 4, 8, ...
            let text = "accept failed (\(error)); \(connections.count) connections open, \(exhausted) times out of descriptors so far; "
            logger.warning("\(text)pausing accept for \(Self.acceptBackoffNanoseconds / 1_000_000) ms")
        }
    }

    private func millisecondsUntilNextTimer() -> Int32 {
        var next = listenerPausedUntil ?? UInt64.max
        if attachDeadlinesHead < attachDeadlines.count { next = min(next, attachDeadlines[attachDeadlinesHead].deadline) }
        guard next != UInt64.max else { return Int32.max }
        let now = cnpa_monotonic_ns()
        return next <= now ? 0 : Int32(clamping: (next - now) / 1_000_000 + 1)
    }

    /// Resumes accepting after a back-off and closes connections past their attach deadline.
    /// Runs after every epoll wait: one clock read when nothing is due.
    private func serviceTimers() {
        let now = cnpa_monotonic_ns()
        if let until = listenerPausedUntil, now >= until {
            do {
                try epoll.add(listener.fd, tag: Self.listenerTag)
                listenerPausedUntil = nil
            } catch {
                listenerPausedUntil = now + Self.acceptBackoffNanoseconds
            }
        }
        while attachDeadlinesHead < attachDeadlines.count, attachDeadlines[attachDeadlinesHead].deadline <= now {
            let id = attachDeadlines[attachDeadlinesHead].id
            attachDeadlinesHead += 1
            guard let c = connections[id], c.device == nil else { continue }
            attachTimeouts &+= 1
            let text = "no vNIC attached within \(configuration.attachTimeoutSeconds) s (attach_timeout): closing"
            reply(c, .error(code: ControlMessage.ErrorCode.invalidState, message: text))
            closeConnection(c, reason: text)
        }
        if attachDeadlinesHead == attachDeadlines.count {
            attachDeadlines.removeAll(keepingCapacity: true)
            attachDeadlinesHead = 0
        } else if attachDeadlinesHead >= 1024 {
            attachDeadlines.removeFirst(attachDeadlinesHead)
            attachDeadlinesHead = 0
        }
    }

    private func serve(_ c: Connection) {
        while true {
            let received: (bytes: [UInt8], descriptors: [FileDescriptor])?
            do {
                received = try c.socket.receive()
            } catch let e as SystemCallError where e.errno == .wouldBlock || e.errno == .resourceTemporarilyUnavailable {
                return
            } catch let e as SystemCallError where e.errno == .messageTooLong {
                // The message or its descriptors did not fit; with descriptors, usually because
                // this process is out of them. Say so before closing.
                let text = "the host could not take this message and its descriptors (\(e))"
                reply(c, .error(code: ControlMessage.ErrorCode.resourceExhausted, message: text))
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
                reply(c, .error(code: ControlMessage.ErrorCode.malformed, message: "malformed message: \(error)"))
                continue
            }
            if case .attach(let request) = message {
                attach(c, request, fds)
                continue
            }
            for fd in fds { try? fd.close() }
            handle(message, from: c)
            if connections[c.id] == nil { return }
        }
    }

    func reply(_ c: Connection, _ message: ControlMessage, descriptors: [FileDescriptor] = []) {
        do {
            try c.socket.send(message.encode(), descriptors: descriptors)
        } catch {
            logger.debug("reply to connection \(c.id) failed: \(error)")
        }
    }

    private func handle(_ message: ControlMessage, from c: Connection) {
        // The guest is answering: its switch under way gets a new step deadline.
        if let d = c.device, d.pendingSwitch != .none {
            switch message {
            case .switchQuery, .switchInReady, .switchOutBegin, .switchOutDone, .registerWrite: d.switchStepStartedNanoseconds = Clock.monotonicNanoseconds()
            default: break
            }
        }
        switch message {
        case .statusRequest:
            reply(c, .statusReply(json: status().json()))
        case .registerWrite(let bar, let offset, let value):
            guard let d = c.device else { return reply(c, notAttached) }
            guard bar == 1 else { return reply(c, .registerResult(status: ControlMessage.ErrorCode.invalidArgument, value: 0, message: "only BAR1 registers are reached through the control channel")) }
            if offset == VMXNET3.Register.cmd.rawValue && value == VMXNET3.Command.activateVF.rawValue {
                switch activateVF(d) {
                case .success: return reply(c, .registerResult(status: 0, value: 0, message: ""))
                case .failure(let r): return reply(c, .registerResult(status: ControlMessage.ErrorCode.invalidState, value: VMXNET3.QueueError.modeSwitchFailed, message: r.description))
                }
            }
            let (status, text) = d.writeRegister(offset: offset, value: value)
            if status == 0 { syncPassthroughFilters(d) }
            if status == 0 && offset == VMXNET3.Register.cmd.rawValue && value == VMXNET3.Command.activateDevice.rawValue
                && d.readRegister(offset: offset).1 == 0 && configuration.autoPassthrough && d.mode == .emulated && d.policy.allowPassthrough
            {
                if case .failure(let refusal) = requestSwitch(d, toPassthrough: true) {
                    logger.info("vNIC '\(d.name)' stays emulated: \(refusal)")
                }
            }
            let result = offset == VMXNET3.Register.cmd.rawValue ? d.readRegister(offset: offset).1 : 0
            reply(c, .registerResult(status: status, value: result, message: text))
        case .registerRead(let bar, let offset):
            guard let d = c.device else { return reply(c, notAttached) }
            guard bar == 1 else { return reply(c, .registerResult(status: ControlMessage.ErrorCode.invalidArgument, value: 0, message: "only BAR1 registers are reached through the control channel")) }
            let (status, value, text) = d.readRegister(offset: offset)
            reply(c, .registerResult(status: status, value: value, message: text))
        case .countersRequest:
            guard let d = c.device else { return reply(c, notAttached) }
            // The VF's drops (now and in earlier passthrough periods) are the guest NIC's too.
            let counters = d.counters.named().map { ControlMessage.Counter($0.0, $0.1) }
                + vfCounterTotals(d).sorted { $0.key < $1.key }.map { ControlMessage.Counter($0.key, $0.value) }
            reply(c, .countersReply(counters))
        case .detach:
            closeConnection(c, reason: "guest detached")
        case .switchQuery:
            guard let d = c.device else { return reply(c, notAttached) }
            offerSwitch(d, to: c)
        case .switchInReady(let tx, let rx, let plugin):
            guard let d = c.device else { return reply(c, notAttached) }
            if !plugin.isEmpty { d.pluginName = String(plugin.prefix(64)) }
            switch prepareVF(d, tx: tx, rx: rx) {
            case .success: reply(c, .ok("VF initialised"))
            case .failure(let r): reply(c, .error(code: ControlMessage.ErrorCode.invalidState, message: r.description))
            }
        case .switchOutBegin:
            guard let d = c.device else { return reply(c, notAttached) }
            switch beginSwitchOut(d) {
            case .success: reply(c, .ok("VF quiesced"))
            case .failure(let r): reply(c, .error(code: ControlMessage.ErrorCode.invalidState, message: r.description))
            }
        case .switchOutDone:
            guard let d = c.device else { return reply(c, notAttached) }
            switch finishSwitchOut(d) {
            case .success: reply(c, .ok("emulated"))
            case .failure(let r): reply(c, .error(code: ControlMessage.ErrorCode.invalidState, message: r.description))
            }
        case .adminSwitch(let name, let toPassthrough):
            guard let d = devices.first(where: { $0.name == name }) else {
                return reply(c, .error(code: ControlMessage.ErrorCode.invalidArgument, message: "no vNIC named '\(name)'"))
            }
            switch requestSwitch(d, toPassthrough: toPassthrough) {
            case .success(let note): reply(c, .ok(note))
            case .failure(let r):
                let code = r.description.contains("policy") ? ControlMessage.ErrorCode.refusedByPolicy : ControlMessage.ErrorCode.invalidState
                reply(c, .error(code: code, message: r.description))
            }
        case .switchInFailed(let reason):
            guard let d = c.device else { return reply(c, notAttached) }
            if d.pendingSwitch == .switchIn && d.mode == .emulated { abandonSwitch(d, "guest: \(reason)") }
            reply(c, .ok("staying on emulation"))
        case .pluginFault(let reason):
            guard let d = c.device else { return reply(c, notAttached) }
            switch resetVF(d, reason: "plugin fault: \(reason)") {
            case .success(let note): reply(c, .ok(note))
            case .failure(let r): reply(c, .error(code: ControlMessage.ErrorCode.invalidState, message: r.description))
            }
        case .adminResetVF(let name):
            guard let d = devices.first(where: { $0.name == name }) else {
                return reply(c, .error(code: ControlMessage.ErrorCode.invalidArgument, message: "no vNIC named '\(name)'"))
            }
            switch resetVF(d) {
            case .success(let note): reply(c, .ok(note))
            case .failure(let r): reply(c, .error(code: ControlMessage.ErrorCode.invalidState, message: r.description))
            }
        case .attach, .attached, .registerResult, .statusReply, .countersReply, .error, .switchOffer, .ok:
            reply(c, .error(code: ControlMessage.ErrorCode.malformed, message: "unexpected message from a guest"))
        }
    }

    private var notAttached: ControlMessage {
        .error(code: ControlMessage.ErrorCode.notAttached, message: "this connection has no vNIC: attach first")
    }

    private func attach(_ c: Connection, _ request: ControlMessage.AttachRequest, _ fds: [FileDescriptor]) {
        func refuse(_ code: UInt32, _ text: String) {
            for fd in fds { try? fd.close() }
            logger.warning("attach of '\(request.name)' refused: \(text)")
            reply(c, .error(code: code, message: text))
        }
        guard c.device == nil else { return refuse(ControlMessage.ErrorCode.invalidState, "this connection already has a vNIC") }
        let vectors = Int(request.interruptVectors)
        guard (1...VMXNET3.RegisterPage.maximumVectors).contains(vectors) else {
            return refuse(ControlMessage.ErrorCode.invalidArgument, "interrupt vectors must be 1...\(VMXNET3.RegisterPage.maximumVectors), got \(vectors)")
        }
        guard fds.count == 2 + vectors else {
            return refuse(ControlMessage.ErrorCode.invalidArgument, "attach needs \(2 + vectors) descriptors (memory, doorbell, \(vectors) interrupts), got \(fds.count)")
        }
        let name = request.name
        guard GuestName.isValid(name) else {
            return refuse(ControlMessage.ErrorCode.invalidArgument, GuestName.rule)
        }
        guard !devices.contains(where: { $0.name == name }) else {
            return refuse(ControlMessage.ErrorCode.invalidState, "a guest named '\(name)' is already attached")
        }
        let policy = configuration.policy(forGuest: name)
        let inUse = Set(devices.map(\.mac))
        let mac: MACAddress
        if let requested = request.mac {
            guard policy.allows(mac: requested) else {
                return refuse(ControlMessage.ErrorCode.refusedByPolicy, "MAC \(requested) is not allowed for guest '\(name)' by host policy")
            }
            guard !inUse.contains(requested) else {
                return refuse(ControlMessage.ErrorCode.invalidState, "MAC \(requested) is already used by another vNIC")
            }
            mac = requested
        } else if let allowed = policy.allowedMACs {
            guard let free = allowed.first(where: { !inUse.contains($0) }) else {
                return refuse(ControlMessage.ErrorCode.resourceExhausted, "every MAC policy allows guest '\(name)' is in use")
            }
            mac = free
        } else {
            var candidate = nextVNICID
            while inUse.contains(MACAddress(value: 0x024E_5000_0000 | UInt64(candidate))) { candidate += 1 }
            mac = MACAddress(value: 0x024E_5000_0000 | UInt64(candidate))
        }
        let region: SharedMemory
        do {
            region = try SharedMemory(adopting: fds[0], minimumSize: 1 << 20, maximumSize: 1 << 34)
        } catch {
            for fd in fds.dropFirst() { try? fd.close() }
            logger.warning("attach of '\(name)' refused: guest memory: \(error)")
            return reply(c, .error(code: ControlMessage.ErrorCode.invalidArgument, message: "guest memory must be a memfd of 1 MiB to 16 GiB: \(error)"))
        }
        let device: EmulatedDevice
        do {
            device = try EmulatedDevice(
                id: nextVNICID, name: name, mac: mac, policy: policy, region: region,
                doorbell: EventNotifier(adopting: fds[1]), interrupts: fds[2...].map { EventNotifier(adopting: $0) },
                maxQueues: configuration.maxQueuesPerVNIC, vswitch: vswitch, logger: logger)
            try epoll.add(device.doorbell.fd, tag: Self.doorbellTagBase + UInt64(device.id))
        } catch {
            return reply(c, .error(code: ControlMessage.ErrorCode.resourceExhausted, message: "could not create the vNIC: \(error)"))
        }
        device.receiverStallLimitNanoseconds = UInt64(configuration.receiverStallMilliseconds) * 1_000_000
        nextVNICID += 1
        c.device = device
        devices.append(device)
        syncPortOwners()
        logger.info("attached guest '\(name)' as vNIC \(device.id), MAC \(mac), \(region.size >> 20) MiB")
        reply(c, .attached(.init(vnicID: device.id, mac: mac, maxTxQueues: UInt8(configuration.maxQueuesPerVNIC), maxRxQueues: UInt8(configuration.maxQueuesPerVNIC))), descriptors: [device.registerPage.fd])
    }

    private func closeConnection(_ c: Connection, reason: String) {
        epoll.remove(c.socket.fd)
        connections.removeValue(forKey: c.id)
        if let d = c.device {
            epoll.remove(d.doorbell.fd)
            releaseVF(d)
            d.detach()
            devices.removeAll { $0 === d }
            c.device = nil
            syncPortOwners()
            logger.info("vNIC \(d.id) of guest '\(d.name)' torn down: \(reason)")
        }
    }

    /// The vNIC table, as `npa status` shows it.
    public func status() -> StatusReport {
        StatusReport(
            vnics: devices.map { d in
                var counters: [String: UInt64] = [:]
                for (k, v) in d.counters.named() { counters[k] = v }
                var v = StatusReport.VNIC(
                    name: d.name, mac: d.mac.description, mode: d.mode.rawValue, link: "up",
                    // In passthrough the emulated device is quiesced on purpose; the VF carries the vNIC.
                    state: d.mode == .passthrough && d.state == .quiesced ? "active" : d.state.name,
                    txQueues: d.txQueues.count, rxQueues: d.rxQueues.count, counters: counters)
                if d.mode == .passthrough, let (nic, index) = d.vf {
                    v.vf = "\(nic.name)/vf\(index)"
                    v.plugin = d.pluginName
                    let current = Self.vfCounters(nic.counters(vf: index))
                    v.counters["vf_tx_frames"] = current["vf_tx_frames"]
                    v.counters["vf_rx_frames"] = current["vf_rx_frames"]
                    v.counters["vf_spoofed_drops"] = current["drop_vf_spoofed_source"]
                    v.counters["vf_no_buffer_drops"] = current["drop_vf_no_buffers"]
                }
                v.lastSwitchMilliseconds = d.lastSwitchMilliseconds
                v.lastSwitchError = d.switchReason
                v.switchPending = switchPendingDescription(d, now: Clock.monotonicNanoseconds())
                return v
            },
            uplink: uplinkNIC.map { StatusReport.Uplink(kind: "PF of \($0.name)", framesOut: $0.pfTransmitted, bytesOut: 0, framesInDropped: $0.pfReceive.drops &+ pfFramesUnroutable) }
                ?? wire.map { StatusReport.Uplink(kind: "counting", framesOut: $0.framesOut, bytesOut: $0.bytesOut) },
            host: StatusReport.Host(
                connections: connections.count, maxConnections: configuration.maxConnections, connectionsRefused: connectionsRefused,
                attachTimeouts: attachTimeouts, acceptFDExhausted: acceptFDExhausted, fdLimit: (try? ResourceLimits.openFiles().soft) ?? 0))
    }
}

// MARK: Stepping in-process (FuzzTesting drives the host on its own thread: no engine thread)

extension HostDaemon {
    /// Handles the control events that are ready now (connections, attach, register writes)
    /// without sleeping. Returns false if the host was asked to stop.
    func serveReadyEvents() throws -> Bool { try handleEvents(epoll.wait(timeoutMilliseconds: 0)) }

    /// One data-path pass, as `run()` makes it. Returns the TX chains consumed.
    func runDataPathPass() -> Int { devices.isEmpty && uplinkNIC == nil ? 0 : dataPathPass() }

    /// The vNIC of the guest named `name`.
    func device(named name: String) -> EmulatedDevice? { devices.first { $0.name == name } }
}
