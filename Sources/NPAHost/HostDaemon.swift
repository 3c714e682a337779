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
public final class HostDaemon: @unchecked Sendable {
    public let socketPath: String
    public let configuration: HostConfiguration
    let logger: Logger
    private let listener: SeqPacketSocket
    private let epoll: Epoll
    private let stopNotifier: EventNotifier
    private let vswitch = VirtualSwitch()
    private let arena = FrameArena(capacity: 64)
    private var connections: [UInt64: Connection] = [:]
    private var nextConnectionID: UInt64 = 1
    private var nextVNICID: UInt32 = 1
    private var devices: [EmulatedDevice] = []
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
    public private(set) var sleeps: UInt64 = 0

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
        listener = try SeqPacketSocket.listen(path: socketPath)
        listener.setNonBlocking()
        epoll = try Epoll()
        stopNotifier = try EventNotifier()
        try epoll.add(listener.fd, tag: Self.listenerTag)
        try epoll.add(stopNotifier.fd, tag: Self.stopTag)
        for n in configuration.nics {
            let model = SoftNIC.Model(rawValue: n.model) ?? .dring
            nics.append(try SoftNIC(name: n.name, model: model, vfCount: n.vfs))
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
        syncPortOwners()
        for nic in nics { nic.start(idlePasses: configuration.idlePassesBeforeSleep) }
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

    /// Serves until `stop()`. Removes the socket file on return.
    public func run() throws {
        EngineThread.setCurrentName("npa-host")
        logger.info("host listening on \(socketPath)")
        defer {
            unlink(socketPath)
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
            } else if work == 0 {
                cnpa_cpu_relax()
            }
            if timeout != -2 {
                passesSinceControl = 0
                let tags = try epoll.wait(timeoutMilliseconds: timeout)  // a slice of Epoll's buffer: no allocation per wake-up
                if sleeping {
                    sleeping = false
                    uplinkNIC?.pfReceive.setConsumerSleeping(false)
                    for d in devices { d.setSleeping(false) }
                    idlePasses = 0
                }
                if try handleEvents(tags) == false { return }
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
                    let pulled = device.pullTransmit(queue: q, arena: arena, budget: arena.capacity)
                    if pulled > 0 {
                        n += pulled
                        switchBurst(from: device)
                    }
                }
                return n
            }
        }
        if let nic = uplinkRef { work += nic._withUnsafeGuaranteedRef { receiveFromPF($0) } }
        for ref in activeDevices { ref._withUnsafeGuaranteedRef { $0.raiseInterrupts() } }
        return work
    }

    /// Frames the NIC sent up to its PF (for MACs not on a VF) enter the vswitch by the uplink.
    func receiveFromPF(_ nic: SoftNIC) -> Int {
        guard let ingress = vswitch.uplinkPort else { return 0 }
        return nic.pfReceive.pop(max: arena.capacity) { frame, length in
            let dst = EthernetFrame.mac(frame, at: 0)
            let vlan = EthernetFrame.vlanID(frame, length: length)
            guard case .forward(let n) = vswitch.route(destination: dst, vlan: vlan, ingress: ingress, into: arena.destinations) else { return }
            let hash = EthernetFrame.flowHash(frame, length: length)
            for k in 0..<n {
                if let owner = portOwners[Int(arena.destinations[k])] {
                    owner._withUnsafeGuaranteedRef { $0.deliver(frame, length: length, hash: hash) }
                }
            }
        }
    }

    /// Anti-spoofing, VLAN policy, then the vswitch decides; the copies into each destination
    /// happen here. No allocation or reference counting per frame.
    private func switchBurst(from device: EmulatedDevice) {
        let ingress = device.port
        let mac = device.mac.value
        for i in 0..<arena.count {
            let frame = UnsafeRawPointer(arena.slot(i))
            let length = arena.lengths[i]
            guard EthernetFrame.mac(frame, at: 6) == mac else {
                device.drop(.spoofedSource)
                continue
            }
            let vlan = EthernetFrame.vlanID(frame, length: length)
            guard vswitch.isMember(ingress, vlan: vlan) else {
                device.drop(.vlanRefused)
                continue
            }
            let dst = EthernetFrame.mac(frame, at: 0)
            device.counters.txFrames &+= 1
            device.counters.txBytes &+= UInt64(length)
            if dst == MACAddress.broadcast.value {
                device.counters.txBroadcast &+= 1
            } else if (dst >> 40) & 1 == 1 {
                device.counters.txMulticast &+= 1
            }
            switch vswitch.route(destination: dst, vlan: vlan, ingress: ingress, into: arena.destinations) {
            case .forward(let n):
                let hash = EthernetFrame.flowHash(frame, length: length)
                for k in 0..<n {
                    let port = Int(arena.destinations[k])
                    if let owner = portOwners[port] {
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
        if pfBatchCount > 0, let nic = uplinkNIC {
            let arena = self.arena, batch = pfBatch
            nic.transmitFromPF(count: pfBatchCount) { k in (UnsafeRawPointer(arena.slot(Int(batch[k]))), arena.lengths[Int(batch[k])]) }
            pfBatchCount = 0
        }
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

    private func syncPortOwners() {
        portOwners = [Unmanaged<EmulatedDevice>?](repeating: nil, count: vswitch.portCount)
        for d in devices { portOwners[d.port] = Unmanaged.passUnretained(d) }
        activeDevices.deallocate()
        activeDevices = .allocate(capacity: devices.count)
        _ = activeDevices.initialize(from: devices.map { Unmanaged.passUnretained($0) })
        arena.ensureDestinations(vswitch.portCount)
    }

    // MARK: Control plane

    /// Returns false when the host must stop.
    private func handleEvents(_ tags: ArraySlice<UInt64>) throws -> Bool {
        for tag in tags {
            if tag == Self.stopTag {
                stopNotifier.drain()
                return false
            } else if tag == Self.pfTag {
                uplinkNIC?.pfReceive.wake.drain()
            } else if tag == Self.listenerTag {
                while let socket = try listener.accept() {
                    socket.setNonBlocking()
                    let c = Connection(id: nextConnectionID, socket: socket)
                    nextConnectionID += 1
                    connections[c.id] = c
                    try epoll.add(socket.fd, tag: Self.connectionTagBase + c.id)
                }
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

    private func serve(_ c: Connection) {
        while true {
            let received: (bytes: [UInt8], descriptors: [FileDescriptor])?
            do {
                received = try c.socket.receive()
            } catch let e as SystemCallError where e.errno == .wouldBlock || e.errno == .resourceTemporarilyUnavailable {
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
        guard !name.isEmpty, name.utf8.count <= 64, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
            return refuse(ControlMessage.ErrorCode.invalidArgument, "guest name must be 1-64 letters, digits, '-', '_' or '.'")
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
                return v
            },
            uplink: uplinkNIC.map { StatusReport.Uplink(kind: "PF of \($0.name)", framesOut: $0.pfTransmitted, bytesOut: 0, framesInDropped: $0.pfReceive.drops) }
                ?? wire.map { StatusReport.Uplink(kind: "counting", framesOut: $0.framesOut, bytesOut: $0.bytesOut) })
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
