import CNPAPluginABI
import CNPAShim
import NPAControlProtocol
import NPARingFormats
import NPASystem
import SystemPackage

/// A guest's virtual NIC: the guest API. Attaching creates the guest's memory region, hands it
/// and the doorbell/interrupt eventfds to the host, loads the data-path plugin (the built-in
/// vmxnet3 emulation plugin) and activates the device. Sending and receiving then go through
/// the plugin's rings in guest memory; every control operation (MAC, VLANs, rx mode, counters)
/// is a vmxnet3 register access or command to the host's device emulation.
///
/// When the host goes away (its control connection closes) the link goes down for good:
/// `hostGone` says why, data-path calls return at once (0 frames, `false`), control operations
/// throw `HostGone`. A caller's loop checks `isHostGone` (one load) to stop.
///
/// Not thread-safe: one guest thread drives one vNIC, as one driver instance would.
public final class VirtualNIC {
    /// How a guest wants its vNIC.
    public struct Configuration: Sendable {
        public var name: String
        /// nil lets the host choose from its policy.
        public var mac: MACAddress?
        /// Size of the guest memory region (memfd) handed to the host.
        public var memoryBytes: Int = 64 << 20
        public var txQueues: Int = 2
        public var rxQueues: Int = 2
        /// Descriptors per ring (power of two, 32...4096).
        public var ringSize: Int = 1024
        /// Bytes per buffer; a frame must fit in one.
        public var bufferSize: Int = 2048
        public var mtu: Int = 1500
        /// Receive polls before sleeping on the interrupt; spinning a little saves wake-ups.
        /// `Int.max` is busy-poll mode: the guest never sleeps on its interrupt line.
        public var spinPolls: Int = 200

        public init(name: String, mac: MACAddress? = nil) {
            self.name = name
            self.mac = mac
        }
    }

    /// One received frame, valid only inside the receive handler (it points into the buffer).
    public struct ReceivedFrame {
        public let bytes: UnsafeRawBufferPointer
        public let queue: Int
        public let rssHash: UInt32
    }

    public enum AttachError: Error, CustomStringConvertible {
        case invalidConfiguration(String)
        case activationFailed(String)
        public var description: String {
            switch self {
            case .invalidConfiguration(let s): "invalid vNIC configuration: \(s)"
            case .activationFailed(let s): "device activation failed: \(s)"
            }
        }
    }

    public let name: String
    public let configuration: Configuration
    public private(set) var mac: MACAddress
    public let vnicID: UInt32
    public var txQueueCount: Int { configuration.txQueues }
    public var rxQueueCount: Int { configuration.rxQueues }
    /// "emulated" while the built-in plugin drives the data path, "passthrough" on a VF.
    public var mode: String { passthrough == nil ? "emulated" : "passthrough" }
    public var pluginName: String { dataPath.plugin.name }
    /// Duration of each completed switch, in milliseconds, and what the last failed one said.
    public private(set) var switchDurations: [Double] = []
    public private(set) var switchInDurations: [Double] = []
    public private(set) var switchOutDurations: [Double] = []
    public private(set) var lastSwitchError: String?
    /// Every switch transition the shell made, oldest first (the last 256), with the time since
    /// attach: the guest side of the switch state machine, for people reading what happened.
    public private(set) var switchLog: [String] = []
    private let attachedAt = cnpa_monotonic_ns()

    private func logTransition(_ text: String) {
        if switchLog.count == 256 { switchLog.removeFirst() }
        switchLog.append(String(format: "%9.3f ms  ", Double(cnpa_monotonic_ns() - attachedAt) / 1e6) + text)
    }

    private let memory: SharedMemory
    private let registers: SharedMemory
    private let channel: ControlChannel
    private let doorbell: EventNotifier
    private let interrupt: EventNotifier
    /// The active data path: the emulation path, or the VF's while in passthrough.
    private var dataPath: ShellDataPath
    private let emulationPath: ShellDataPath
    /// What keeps the VF path alive: the injected image, the VF's register page and kick eventfd.
    private var passthrough: (path: ShellDataPath, image: PluginImage, registers: SharedMemory, kick: EventNotifier)?
    private let vfTxRegions: [npa_queue_region]
    private let vfRxRegions: [npa_queue_region]
    private let txRegions: [npa_queue_region]
    private let rxRegions: [npa_queue_region]
    // GPA 0 stays unused: a zero DriverShared address means "not set" to the device.
    private let driverSharedGPA: UInt64 = 4096
    private let queueTableGPA: UInt64 = 8192
    private let multicastTableGPA: UInt64 = 12288
    private var detached = false

    /// Shell-side counters (what the guest saw), apart from the host's device counters.
    public var framesSent: UInt64 { dataPath.framesSent }
    public var framesReceived: UInt64 { dataPath.framesReceived }
    public var receiveErrors: UInt64 { dataPath.receiveErrors }
    public var interruptWaits: UInt64 { dataPath.interruptWaits }
    public var doorbellKicks: UInt64 { dataPath.plugin.kicks }
    /// RX buffers the active path's rings hold when full: after a flush, `buffersOutstanding`
    /// beyond this is a leak.
    public var postedReceiveBuffers: Int { rxQueueCount * (configuration.ringSize - 1) }
    /// Buffers lent to the plugin/device (RX posted + TX in flight); the rest are free.
    public var buffersOutstanding: Int { dataPath.plugin.pool.outstanding }
    public var buffersTotal: Int { dataPath.plugin.pool.count }

    /// Attaches to the host listening at `hostSocket`.
    public static func attach(hostSocket: String, configuration: Configuration) throws -> VirtualNIC {
        try VirtualNIC(hostSocket: hostSocket, configuration: configuration)
    }

    private init(hostSocket: String, configuration c: Configuration) throws {
        guard GuestName.isValid(c.name) else { throw AttachError.invalidConfiguration(GuestName.rule) }
        guard (1...8).contains(c.txQueues), (1...8).contains(c.rxQueues) else {
            throw AttachError.invalidConfiguration("queues must be 1...8 per direction")
        }
        guard c.ringSize >= 32, c.ringSize <= 4096, c.ringSize & (c.ringSize - 1) == 0 else {
            throw AttachError.invalidConfiguration("ring size \(c.ringSize) is not a power of two in 32...4096")
        }
        guard (68...9000).contains(c.mtu), c.bufferSize >= c.mtu + 18, c.bufferSize <= 16383 else {
            throw AttachError.invalidConfiguration("buffer size \(c.bufferSize) must hold MTU \(c.mtu) + 18 and be at most 16383")
        }
        let regionBytes = (EmulationPlugin.regionBytes(ringSize: c.ringSize) + 4095) & ~4095
        // Two sets of queue regions: the emulation plugin's, and the VF plugin's after a switch-in.
        let poolBase = 16384 + regionBytes * 2 * (c.txQueues + c.rxQueues)
        let buffers = min(65536, (c.memoryBytes - poolBase) / c.bufferSize)
        let needed = c.rxQueues * c.ringSize + c.txQueues * c.ringSize
        guard c.memoryBytes >= 1 << 20, buffers >= needed else {
            throw AttachError.invalidConfiguration("\(c.memoryBytes) bytes of guest memory hold \(max(0, buffers)) buffers; the rings need \(needed)")
        }
        name = c.name
        configuration = c
        memory = try SharedMemory(name: "npa-guest-\(c.name)", size: c.memoryBytes)
        doorbell = try EventNotifier()
        interrupt = try EventNotifier()
        channel = try ControlChannel(path: hostSocket)
        let (reply, fds) = try channel.request(
            .attach(.init(name: c.name, mac: c.mac, interruptVectors: 1)),
            descriptors: [memory.fd, doorbell.fd, interrupt.fd])
        guard case .attached(let attached) = reply, let registerFD = fds.first else {
            for fd in fds { try? fd.close() }
            throw HostRefusal(code: 0, message: "unexpected reply to attach")
        }
        for fd in fds.dropFirst() { try? fd.close() }
        let registerPage = try SharedMemory(adopting: registerFD, minimumSize: VMXNET3.RegisterPage.size)
        registers = registerPage
        guard c.txQueues <= Int(attached.maxTxQueues), c.rxQueues <= Int(attached.maxRxQueues) else {
            throw AttachError.invalidConfiguration("the host allows at most \(attached.maxTxQueues) TX / \(attached.maxRxQueues) RX queues")
        }
        mac = attached.mac
        vnicID = attached.vnicID

        // Queue regions in guest memory: the shell allocates them; the plugin carves them.
        let base = memory.base
        func region(_ i: Int) -> npa_queue_region {
            let gpa = UInt64(16384 + regionBytes * i)
            return npa_queue_region(va: base + Int(gpa), gpa: gpa, size: UInt32(regionBytes), ring_size: UInt32(c.ringSize), interrupt_vector: 0, completion_offset: 0)
        }
        let tx = (0..<c.txQueues).map { region($0) }
        let rx = (0..<c.rxQueues).map { region(c.txQueues + $0) }
        let queues = c.txQueues + c.rxQueues
        txRegions = tx
        rxRegions = rx
        vfTxRegions = (0..<c.txQueues).map { region(queues + $0) }
        vfRxRegions = (0..<c.rxQueues).map { region(queues + c.txQueues + $0) }
        let pool = BufferPool(baseVA: base + poolBase, baseGPA: UInt64(poolBase), bufferSize: c.bufferSize, count: buffers)
        let plugin = try PluginHost(
            entry: EmulationPlugin.entry, txRegions: tx, rxRegions: rx, registers: registerPage.base,
            registersSize: registerPage.size, pool: pool, ringSize: c.ringSize, doorbell: doorbell)
        dataPath = ShellDataPath(plugin: plugin, interrupt: interrupt, ringSize: c.ringSize, spinPolls: c.spinPolls)
        dataPath.link = channel.link
        emulationPath = dataPath
        try activate(tx: tx, rx: rx)
        installInterruptHook(emulationPath)
    }

    /// Fills DriverShared and the queue descriptor table as the vmxnet3 driver does, then
    /// ACTIVATE_DEV. The emulation plugin carves each region as descriptor ring, then
    /// completion ring; that is what the device is told here.
    private func activate(tx: [npa_queue_region], rx: [npa_queue_region]) throws {
        let gm = GuestMemory(base: memory.base, size: memory.size)
        let ds = driverSharedGPA
        gm.pointer(gpa: ds, length: 4096)!.initializeMemory(as: UInt8.self, repeating: 0, count: 4096)
        gm.storeU32(gpa: ds + VMXNET3.DriverShared.magic, VMXNET3.driverSharedMagic)
        gm.storeU32(gpa: ds + VMXNET3.DriverShared.driverVersion, 1)
        gm.storeU64(gpa: ds + VMXNET3.DriverShared.queueDescPA, queueTableGPA)
        gm.storeU32(gpa: ds + VMXNET3.DriverShared.queueDescLength, UInt32((tx.count + rx.count) * 256))
        gm.storeU32(gpa: ds + VMXNET3.DriverShared.mtu, UInt32(configuration.mtu))
        let counts = UInt32(tx.count) << 16 | UInt32(rx.count) << 24 | 1  // maxNumRxSG = 1
        gm.storeU32(gpa: ds + VMXNET3.DriverShared.maxRxSG, counts)
        gm.storeU32(gpa: ds + VMXNET3.DriverShared.intrAutoMask, 1 | 1 << 8)  // autoMask, numIntrs = 1
        gm.storeU32(gpa: ds + VMXNET3.DriverShared.rxMode, VMXNET3.RxMode([.unicast, .broadcast, .multicast]).rawValue)
        gm.pointer(gpa: queueTableGPA, length: 4096)!.initializeMemory(as: UInt8.self, repeating: 0, count: 4096)
        for (q, r) in tx.enumerated() {
            let d = queueTableGPA + UInt64(q) * 256
            gm.storeU64(gpa: d + VMXNET3.TxQueueDesc.txRingBasePA, r.gpa)
            gm.storeU64(gpa: d + VMXNET3.TxQueueDesc.compRingBasePA, r.gpa + UInt64(r.ring_size) * 16)
            gm.storeU32(gpa: d + VMXNET3.TxQueueDesc.txRingSize, r.ring_size)
            gm.storeU32(gpa: d + VMXNET3.TxQueueDesc.compRingSize, r.ring_size)
        }
        for (q, r) in rx.enumerated() {
            let d = queueTableGPA + UInt64(tx.count + q) * 256
            gm.storeU64(gpa: d + VMXNET3.RxQueueDesc.rxRingBasePA0, r.gpa)
            gm.storeU64(gpa: d + VMXNET3.RxQueueDesc.compRingBasePA, r.gpa + UInt64(r.ring_size) * 16)
            gm.storeU32(gpa: d + VMXNET3.RxQueueDesc.rxRingSize0, r.ring_size)
            gm.storeU32(gpa: d + VMXNET3.RxQueueDesc.compRingSize, r.ring_size)
        }
        // Post RX buffers before ACTIVATE, as the Linux driver does, so that the first frame
        // addressed to us after activation finds a buffer.
        dataPath.refillAll()
        try channel.writeRegister(VMXNET3.Register.vrrs.rawValue, 1)
        try channel.writeRegister(VMXNET3.Register.uvrs.rawValue, 1)
        try channel.writeRegister(VMXNET3.Register.dsal.rawValue, UInt32(truncatingIfNeeded: ds))
        try channel.writeRegister(VMXNET3.Register.dsah.rawValue, UInt32(truncatingIfNeeded: ds >> 32))
        do {
            let result = try channel.command(VMXNET3.Command.activateDevice.rawValue)
            guard result == 0 else { throw AttachError.activationFailed("ACTIVATE returned \(result)") }
        } catch let refusal as HostRefusal {
            throw AttachError.activationFailed(refusal.message)
        }
        _ = try channel.command(VMXNET3.Command.updateRxMode.rawValue)
    }

    // MARK: The host's presence

    /// Why the host is gone, once the shell saw its control connection close; nil while it is
    /// there. Set by any data-path call or control operation that noticed (no syscall to read).
    public var hostGone: HostGone? { channel.link.gone }

    /// True once the host is gone (one load): what a workload loop checks to stop.
    public var isHostGone: Bool { channel.link.gone != nil }

    /// Looks now (one non-blocking poll of the control socket), for a caller that makes no
    /// data-path calls for a while. Returns why the host is gone, or nil.
    @discardableResult
    public func checkHost() -> HostGone? { channel.link.check() }

    /// Sleeps until the host goes away, `descriptor` (if given) becomes readable, or
    /// `timeoutMilliseconds` passes (negative: no limit). Returns why the host is gone, or nil
    /// (then the descriptor is readable, or the time is up). For a guest that holds its vNIC
    /// while it waits for something else, e.g. `--hold` waiting for standard input to close.
    public func waitForHostGone(timeoutMilliseconds: Int, orReadable descriptor: Int32? = nil) -> HostGone? {
        let link = channel.link
        if let gone = link.gone { return gone }
        let timeout = Int32(clamping: timeoutMilliseconds < 0 ? -1 : timeoutMilliseconds)
        if link.socket.waitForHangUp(timeoutMilliseconds: timeout, orReadable: descriptor) {
            link.markGone("the control connection closed")
        }
        return link.gone
    }

    // MARK: Data path (forwarded to the active plugin's data path)

    /// Sends up to `count` frames on TX queue `queue`. For each frame `fill` writes it into the
    /// buffer it is given (in guest memory, no extra copy) and returns its length. Returns how
    /// many frames were handed to the device: fewer than `count` when the ring or the buffer
    /// pool is full (nothing is filled that is not sent).
    @discardableResult
    public func transmit(queue: Int = 0, count: Int, _ fill: (Int, UnsafeMutableRawBufferPointer) -> Int) -> Int {
        if channel.link.gone != nil { return 0 }
        serviceSwitchIfRequested()
        return dataPath.transmit(queue: queue, count: count, fill)
    }

    /// Sends copies of `frames`; returns how many were handed to the device.
    @discardableResult
    public func send(_ frames: [[UInt8]], queue: Int = 0) -> Int {
        if channel.link.gone != nil { return 0 }
        return dataPath.send(frames, queue: queue)
    }

    /// Reclaims completed TX buffers on every queue; returns how many frames completed.
    @discardableResult
    public func reclaimTransmitted() -> Int {
        if channel.link.gone != nil { return 0 }
        serviceSwitchIfRequested()
        return dataPath.reclaimTransmitted()
    }

    /// Frames handed to the device and not yet completed.
    public var transmitsInFlight: Int { dataPath.transmitsInFlight }

    /// Waits until TX ring space frees up on `queue` or `timeoutMilliseconds` passes. False at
    /// once when the host is gone.
    public func waitForTransmitSpace(queue: Int = 0, timeoutMilliseconds: Int) -> Bool {
        dataPath.waitForTransmitSpace(queue: queue, timeoutMilliseconds: timeoutMilliseconds)
    }

    /// Waits until every frame sent has completed, up to `timeoutMilliseconds`. False at once
    /// when the host is gone (what is in flight then is lost with it).
    public func flush(timeoutMilliseconds: Int) -> Bool {
        if channel.link.gone != nil { return false }
        serviceSwitchIfRequested()
        return dataPath.flush(timeoutMilliseconds: timeoutMilliseconds)
    }

    /// Receives up to `maxFrames` frames, calling `handler` for each (the bytes are valid only
    /// during the call). Polls briefly, then sleeps on the interrupt until a frame arrives or
    /// `timeoutMilliseconds` passes (0: poll once; negative: wait forever), or the host goes
    /// away (then 0, at once, and `hostGone` says why). Returns frames handled.
    @discardableResult
    public func receive(maxFrames: Int = 256, timeoutMilliseconds: Int = 0, _ handler: (ReceivedFrame) -> Void) -> Int {
        if channel.link.gone != nil { return 0 }
        serviceSwitchIfRequested()
        let deadline = timeoutMilliseconds < 0 ? UInt64.max : cnpa_monotonic_ns() + UInt64(timeoutMilliseconds) * 1_000_000
        while true {
            let now = cnpa_monotonic_ns()
            let remaining = timeoutMilliseconds < 0 ? -1 : (deadline > now ? Int((deadline - now) / 1_000_000) : 0)
            let n = dataPath.receive(maxFrames: maxFrames, timeoutMilliseconds: remaining, handler)
            // A wait cut short by a switch request: switch, then keep waiting on the new path.
            if n == 0 && serviceSwitchIfRequested() && remaining != 0 { continue }
            return n
        }
    }

    /// Receives into copies; convenient, not fast.
    public func receive(maxFrames: Int = 256, timeoutMilliseconds: Int = 0) -> [[UInt8]] {
        var frames: [[UInt8]] = []
        receive(maxFrames: maxFrames, timeoutMilliseconds: timeoutMilliseconds) { frames.append(Array($0.bytes)) }
        return frames
    }

    // MARK: Switching (the shell's state machine; the host drives it with DIC)

    private var dicPending: Bool {
        let ecr = GuestMemory(base: memory.base, size: memory.size).loadU32(gpa: driverSharedGPA + VMXNET3.DriverShared.ecr) ?? 0
        return ecr & VMXNET3.Event.deviceImplementationChange != 0
    }

    private func installInterruptHook(_ path: ShellDataPath) {
        let ds = memory.base + Int(driverSharedGPA + VMXNET3.DriverShared.ecr)
        let plugin = path.plugin
        path.interruptHook = { [unowned plugin] in
            cnpa_load_acquire_u32(ds) & VMXNET3.Event.deviceImplementationChange != 0 || plugin.unforwardedFault != nil
        }
    }

    /// If the host raised DIC, asks it what changed and carries the switch out. Returns true if
    /// a switch request was handled (whether or not it succeeded).
    @discardableResult
    private func serviceSwitchIfRequested() -> Bool {
        // A dead host asks for nothing; its last DIC cannot be carried out.
        if channel.link.gone != nil { return false }
        // A plugin that reported its device dead: ask the host (once) to reset the VF; it answers
        // with DIC, handled below. A switch the host already started comes first.
        if !dicPending, let current = passthrough, let fault = current.path.plugin.unforwardedFault {
            current.path.plugin.faultForwarded = true
            logTransition("plugin fault: \(fault)")
            _ = try? channel.request(.pluginFault(reason: fault))
        }
        guard dicPending else { return false }
        _ = try? channel.writeRegister(VMXNET3.Register.ecr.rawValue, VMXNET3.Event.deviceImplementationChange)
        logTransition("DIC: device implementation change")
        let start = cnpa_monotonic_ns()
        do {
            let (reply, fds) = try channel.request(.switchQuery)
            guard case .switchOffer(let offer) = reply else {
                for fd in fds { try? fd.close() }
                return true
            }
            switch offer.kind {
            case .none:
                for fd in fds { try? fd.close() }
                logTransition("host offers no change")
                return true
            case .switchIn:
                logTransition("host offers switch-in to VF \(offer.vf) (\(offer.model), plugin \(offer.plugin))")
                try switchIn(fds)
                switchInDurations.append(Double(cnpa_monotonic_ns() - start) / 1e6)
            case .switchOut:
                for fd in fds { try? fd.close() }
                logTransition("host asks for switch-out")
                try switchOut()
                switchOutDurations.append(Double(cnpa_monotonic_ns() - start) / 1e6)
            }
            switchDurations.append(Double(cnpa_monotonic_ns() - start) / 1e6)
            lastSwitchError = nil
            logTransition(String(format: "now %@ (%.3f ms)", mode, switchDurations.last!))
        } catch {
            lastSwitchError = "\(error)"
            logTransition("switch failed, staying \(mode): \(error)")
        }
        return true
    }

    /// Switch-in: load the injected plugin, have the PF initialise the VF from our regions, post
    /// RX buffers, finish emulated TX, ACTIVATE_VF (the MAC moves), then hand everything the
    /// emulation path still holds to the VF path. On failure the guest stays on emulation.
    private func switchIn(_ fds: [FileDescriptor]) throws {
        guard fds.count == 3 else {
            for fd in fds { try? fd.close() }
            throw HostRefusal(code: 0, message: "switch-in offer without its three descriptors")
        }
        let image: PluginImage
        let registers: SharedMemory
        do {
            image = try PluginImage(adopting: fds[0])
        } catch {
            try? fds[1].close()
            try? fds[2].close()
            _ = try? channel.request(.switchInFailed(reason: "\(error)"))
            throw error
        }
        logTransition("plugin \(image.name) \(image.version) loaded from the injected image")
        registers = try SharedMemory(adopting: fds[1], minimumSize: 4096)
        let kick = EventNotifier(adopting: fds[2])
        let plugin: PluginHost
        do {
            plugin = try PluginHost(
                entry: image.entry, txRegions: vfTxRegions, rxRegions: vfRxRegions, registers: registers.base,
                registersSize: registers.size, pool: emulationPath.plugin.pool, ringSize: configuration.ringSize, doorbell: kick)
        } catch {
            _ = try? channel.request(.switchInFailed(reason: "\(error)"))
            throw error
        }
        let path = ShellDataPath(plugin: plugin, interrupt: interrupt, ringSize: configuration.ringSize, spinPolls: configuration.spinPolls)
        path.link = channel.link
        do {
            _ = try channel.request(.switchInReady(txRegions: plugin.reportedRegions(rx: false), rxRegions: plugin.reportedRegions(rx: true), plugin: "\(image.name) \(image.version)"))
        } catch {
            _ = plugin.reclaimPostedRxBuffers()
            _ = try? channel.request(.switchInFailed(reason: "\(error)"))
            throw error
        }
        logTransition("VF queues initialised by the PF driver from our regions")
        path.refillAll()
        _ = emulationPath.flush(timeoutMilliseconds: 5000)
        do {
            _ = try channel.command(VMXNET3.Command.activateVF.rawValue)
        } catch {
            _ = path.quiesceAndDrain()
            _ = try? channel.request(.switchInFailed(reason: "\(error)"))
            throw error
        }
        // From the host's reply on, nothing more arrives on the emulated rings. Quiesce the
        // emulated device too: its rings still hold descriptors for buffers we are about to
        // reuse, and if the host ever hands the MAC back before we re-arm (a VF reset), frames
        // must be refused and counted, not written into those buffers. Then harvest.
        logTransition("ACTIVATE_VF done: the MAC is on the VF")
        _ = try? channel.command(VMXNET3.Command.quiesceDevice.rawValue)
        let harvested = emulationPath.quiesceAndDrain()
        logTransition("emulated rings harvested: \(harvested.received.count) frames to deliver, \(harvested.unsent.reduce(0) { $0 + $1.count }) to re-send")
        _ = path.adopt(harvested)
        installInterruptHook(path)
        passthrough = (path, image, registers, kick)
        dataPath = path
    }

    /// Switch-out: re-arm emulation (RESET, fresh rings, RX buffers, ACTIVATE), have the host
    /// move the MAC back and quiesce the VF, drain the VF path into the emulation path, release.
    private func switchOut() throws {
        guard let pt = passthrough else { return }
        _ = try channel.command(VMXNET3.Command.resetDevice.rawValue)
        let ops = emulationPath.plugin.ops, state = emulationPath.plugin.state
        for q in 0..<txQueueCount { _ = ops.reinit_tx_ring!(state, UInt32(q)) }
        for q in 0..<rxQueueCount { _ = ops.reinit_rx_ring!(state, UInt32(q)) }
        emulationPath.refillAll()
        let result = try channel.command(VMXNET3.Command.activateDevice.rawValue)
        guard result == 0 else { throw HostRefusal(code: 0, message: "emulation did not re-activate (\(result))") }
        _ = try channel.command(VMXNET3.Command.updateRxMode.rawValue)
        logTransition("emulation re-armed (RESET, fresh rings, ACTIVATE)")
        _ = try channel.request(.switchOutBegin)
        logTransition("VF quiesced, MAC back on the vswitch")
        let drained = pt.path.quiesceAndDrain()
        logTransition("VF drained: \(drained.received.count) frames to deliver, \(drained.unsent.reduce(0) { $0 + $1.count }) to re-send, \(drained.reclaimedRxBuffers) buffers back")
        _ = emulationPath.adopt(drained)
        dataPath = emulationPath
        passthrough = nil
        _ = try channel.request(.switchOutDone)
    }

    /// Asks the host to reset this vNIC's VF (FLR) now; the switch-out follows on the next
    /// data-path call. For tests and tools; a host does this on its own to reclaim a VF.
    public func requestVFReset() throws {
        let (reply, _) = try channel.request(.adminResetVF(vnic: name))
        guard case .ok = reply else { throw HostRefusal(code: 0, message: "unexpected reply") }
    }

    /// Asks the host to switch this vNIC (the admin path `npa vnic` uses, here for the guest
    /// itself or a test); the switch then happens on the next data-path call.
    public func requestSwitch(toPassthrough: Bool) throws {
        let (reply, _) = try channel.request(.adminSwitch(vnic: name, toPassthrough: toPassthrough))
        guard case .ok = reply else { throw HostRefusal(code: 0, message: "unexpected reply") }
    }

    // MARK: Control path: every operation is a register access or command to the host

    /// Changes the vNIC's MAC (MACL, then MACH applies it). Throws `HostRefusal` if policy refuses.
    public func setMAC(_ newMAC: MACAddress) throws {
        let b = newMAC.bytes
        try channel.writeRegister(VMXNET3.Register.macl.rawValue, UInt32(b[0]) | UInt32(b[1]) << 8 | UInt32(b[2]) << 16 | UInt32(b[3]) << 24)
        try channel.writeRegister(VMXNET3.Register.mach.rawValue, UInt32(b[4]) | UInt32(b[5]) << 8)
        mac = newMAC
    }

    /// Sets the receive mode (UPDATE_RX_MODE). Promiscuous needs the host's permission.
    public func setRxMode(_ mode: VMXNET3.RxMode) throws {
        let gm = GuestMemory(base: memory.base, size: memory.size)
        let previous = gm.loadU32(gpa: driverSharedGPA + VMXNET3.DriverShared.rxMode) ?? 0
        gm.storeU32(gpa: driverSharedGPA + VMXNET3.DriverShared.rxMode, mode.rawValue)
        do {
            _ = try channel.command(VMXNET3.Command.updateRxMode.rawValue)
        } catch {
            gm.storeU32(gpa: driverSharedGPA + VMXNET3.DriverShared.rxMode, previous)
            throw error
        }
    }

    /// Joins exactly these VLANs (UPDATE_VLAN_FILTERS); VLAN 0 (untagged) is always kept.
    public func setVLANs(_ vlans: Set<UInt16>) throws {
        let gm = GuestMemory(base: memory.base, size: memory.size)
        let table = gm.pointer(gpa: driverSharedGPA + VMXNET3.DriverShared.vlanTable, length: 512)!
        table.initializeMemory(as: UInt8.self, repeating: 0, count: 512)
        for v in vlans.union([0]) where v < 4096 {
            let word = table.advanced(by: Int(v / 32) * 4).assumingMemoryBound(to: UInt32.self)
            word.pointee |= (UInt32(1) << UInt32(v % 32)).littleEndian
        }
        _ = try channel.command(VMXNET3.Command.updateVLANFilters.rawValue)
    }

    /// Sets the multicast addresses this vNIC accepts (UPDATE_MAC_FILTERS).
    public func setMulticastFilter(_ macs: [MACAddress]) throws {
        precondition(macs.count <= 256)
        let gm = GuestMemory(base: memory.base, size: memory.size)
        let table = gm.pointer(gpa: multicastTableGPA, length: UInt64(macs.count * 6))!
        for (i, m) in macs.enumerated() { EthernetFrame.storeMAC(m.value, table, at: i * 6) }
        gm.storeU32(gpa: driverSharedGPA + VMXNET3.DriverShared.multicastTableLength, UInt32(macs.count * 6))
        gm.storeU64(gpa: driverSharedGPA + VMXNET3.DriverShared.multicastTablePA, multicastTableGPA)
        _ = try channel.command(VMXNET3.Command.updateMACFilters.rawValue)
    }

    /// The link state (GET_LINK).
    public func linkIsUp() throws -> Bool {
        try channel.command(VMXNET3.Command.getLink.rawValue) & 1 == 1
    }

    /// The host's counters for this vNIC (frames, bytes, drops by reason: `drop_<reason>`).
    public func deviceCounters() throws -> [String: UInt64] {
        let (reply, _) = try channel.request(.countersRequest)
        guard case .countersReply(let counters) = reply else { throw HostRefusal(code: 0, message: "unexpected reply") }
        var out: [String: UInt64] = [:]
        for c in counters { out[c.name] = c.value }
        return out
    }

    /// The host's vNIC table (what `npa status` shows).
    public func hostStatus() throws -> StatusReport {
        let (reply, _) = try channel.request(.statusRequest)
        guard case .statusReply(let json) = reply else { throw HostRefusal(code: 0, message: "unexpected reply") }
        return try StatusReport.decode(json)
    }

    /// Waits until a vNIC with `peer` as its MAC is attached to the host (or the timeout passes).
    /// Throws `HostGone` as soon as the host is gone.
    public func waitForPeer(_ peer: MACAddress, timeoutMilliseconds: Int) throws -> Bool {
        let deadline = cnpa_monotonic_ns() + UInt64(timeoutMilliseconds) * 1_000_000
        while cnpa_monotonic_ns() < deadline {
            if try hostStatus().vnics.contains(where: { $0.mac == peer.description && $0.state == "active" }) { return true }
            _ = interrupt.wait(timeoutMilliseconds: 20)
        }
        return false
    }

    /// Drops by reason as the host's device reports them (only reasons with a non-zero count).
    public func dropCounts() throws -> [String: UInt64] {
        var out: [String: UInt64] = [:]
        for (k, v) in try deviceCounters() where k.hasPrefix("drop_") && v > 0 { out[String(k.dropFirst(5))] = v }
        if receiveErrors > 0 { out["rx_error", default: 0] += receiveErrors }
        return out
    }

    /// Raw register access for tools and tests: one BAR1 write / read.
    public func writeRegister(_ register: VMXNET3.Register, _ value: UInt32) throws -> UInt32 {
        try channel.writeRegister(register.rawValue, value)
    }

    /// Test hook: the guest memory region, so tests can play a hostile guest writing its rings.
    public var guestMemoryForTesting: GuestMemory { GuestMemory(base: memory.base, size: memory.size) }
    public var queueTableGPAForTesting: UInt64 { queueTableGPA }
    /// Test hook: the register page (doorbells, interrupt masks) as the guest maps it.
    public var registerPageForTesting: UnsafeMutableRawPointer { registers.base }
    /// Test hook: rings the doorbell eventfd unconditionally, as a guest that ignores the
    /// device's sleep flag would.
    public func kickForTesting() { doorbell.signal() }

    /// Detaches cleanly: the host tears the vNIC down.
    public func detach() {
        guard !detached else { return }
        detached = true
        if channel.link.gone != nil { return }
        try? channel.socket.send(ControlMessage.detach.encode())
    }

    deinit {
        detach()
    }
}
