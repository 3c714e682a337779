import NPAControlProtocol
import NPAPluginBundle
import NPARingFormats
import NPASystem
import SystemPackage

/// A guest's virtual NIC: the guest API. Attaching creates the guest's memory region, hands it
/// and the doorbell/interrupt eventfds to the host, loads the data-path plugin (the built-in
/// vmxnet3 emulation plugin) and activates the device. Sending and receiving then go through
/// the plugin's rings in guest memory; every control operation (MAC, VLANs, rx mode, counters)
/// is a vmxnet3 register access or command to the host's device emulation.
///
/// It is the public face over the shell's parts and may touch only them and its control
/// channel: `GuestMemoryLayout` (where everything lives in guest memory), `VMXNET3Programming`
/// (DriverShared, activation, the control operations' tables and commands), `ShellSwitcher`
/// (the switch state machine; it says which `ShellDataPath` carries the data) and the active
/// data path itself.
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
        /// Whether the shell may ask the device (any plugin's) for the TX offloads it declares;
        /// false makes the shell do them all in software (`ethtool -K tx off tso off` of a driver).
        public var deviceOffloads = true
        /// The keys whose signatures this guest accepts on an injected plugin bundle (as a VM has
        /// its OS vendor's keys); empty trusts nothing: every switch-in is refused and the guest
        /// stays emulated.
        public var pluginTrust = PluginTrustStore()

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
        /// The device checked (or made) the frame's IP and TCP/UDP checksums
        /// (NPA_RX_FLAG_CSUM_VALID): a guest OS need not verify them again.
        public let checksumValid: Bool

        init(bytes: UnsafeRawBufferPointer, queue: Int, rssHash: UInt32, checksumValid: Bool = false) {
            self.bytes = bytes
            self.queue = queue
            self.rssHash = rssHash
            self.checksumValid = checksumValid
        }
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
    /// The vNIC's id on the host it is attached to now (a move gets it a new one).
    public var vnicID: UInt32 { channel.vnicID }
    public var txQueueCount: Int { configuration.txQueues }
    public var rxQueueCount: Int { configuration.rxQueues }
    /// "emulated" while the built-in plugin drives the data path, "passthrough" on a VF.
    public var mode: String { switcher.mode }
    public var pluginName: String { dataPath.plugin.name }
    /// Breaches of the ABI by the loaded plugin, since it was loaded: a frame indicated beyond a
    /// `check_rx_ring` call's `max_frames`, or in a buffer it did not hold (each taken or ignored
    /// safely, and counted here).
    public var pluginContractViolations: UInt64 { dataPath.plugin.pluginFaults }
    /// Duration of each completed switch, in milliseconds, and what the last failed one said.
    public var switchDurations: [Double] { switcher.record.durations }
    public var switchInDurations: [Double] { switcher.record.switchInDurations }
    public var switchOutDurations: [Double] { switcher.record.switchOutDurations }
    public var lastSwitchError: String? { switcher.record.lastError }
    /// Every switch transition the shell made, oldest first (the last 256), with the time since
    /// attach: the guest side of the switch state machine, for people reading what happened.
    public var switchLog: [String] { switcher.record.log }

    private let memory: SharedMemory
    private let registers: SharedMemory
    /// The control connection (to the host the vNIC is attached to now).
    let channel: ControlChannel
    private let doorbell: EventNotifier
    private let interrupt: EventNotifier
    private let device: VMXNET3Programming
    /// Carries switches out and says which data path is active: the emulation path, or the VF's
    /// while in passthrough.
    let switcher: ShellSwitcher
    private var dataPath: ShellDataPath { switcher.activePath }
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
        let layout = try GuestMemoryLayout(c)
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
        channel.vnicID = attached.vnicID

        // Queue regions in guest memory: the shell allocates them; the plugin carves them.
        let (tx, rx) = layout.emulationRegions(base: memory.base)
        let plugin = try PluginHost(
            entry: EmulationPlugin.entry, txRegions: tx, rxRegions: rx, registers: registerPage.base,
            registersSize: registerPage.size, pool: layout.bufferPool(base: memory.base), ringSize: c.ringSize, doorbell: doorbell)
        let emulationPath = ShellDataPath(plugin: plugin, interrupt: interrupt, ringSize: c.ringSize, spinPolls: c.spinPolls)
        emulationPath.link = channel.link
        emulationPath.maximumFrameLength = c.mtu + 18
        emulationPath.offloadMask = c.deviceOffloads ? ~0 : 0
        device = VMXNET3Programming(memory: GuestMemory(base: memory.base, size: memory.size), channel: channel)
        switcher = ShellSwitcher(
            emulationPath: emulationPath, device: device, channel: channel, interrupt: interrupt,
            vfRegions: layout.vfRegions(base: memory.base), ringSize: c.ringSize, spinPolls: c.spinPolls,
            attachment: GuestAttachment(
                name: c.name, memory: memory.fd, doorbell: doorbell.fd, interrupts: [interrupt.fd],
                registerPage: registerPage.fd),
            pluginTrust: c.pluginTrust)
        device.fillDriverShared(mtu: c.mtu, tx: tx, rx: rx)
        // Post RX buffers before ACTIVATE, as the Linux driver does, so that the first frame
        // addressed to us after activation finds a buffer.
        emulationPath.refillAll()
        try device.activate()
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

    /// As `transmit`, with an offload request per frame: `fill` returns the frame's length and
    /// what the device should finish (its TCP/UDP checksum, or cutting a TCP super-frame of at
    /// most one buffer into MTU-sized segments). The shell asks the plugin only for what its
    /// device declared and does the rest itself, so the bytes on the wire are the same
    /// whichever data path is active. A frame whose request does not fit it is dropped and
    /// counted in `offloadRequestsRefused`.
    @discardableResult
    public func transmitOffloaded(
        queue: Int = 0, count: Int, _ fill: (Int, UnsafeMutableRawBufferPointer) -> (length: Int, offload: TransmitOffload)
    ) -> Int {
        if channel.link.gone != nil { return 0 }
        serviceSwitchIfRequested()
        return dataPath.transmitOffloaded(queue: queue, count: count, fill)
    }

    /// Frames `transmitOffloaded` dropped because their offload request did not fit them.
    public var offloadRequestsRefused: UInt64 {
        switcher.emulationPath.offloadRequestsRefused + (dataPath === switcher.emulationPath ? 0 : dataPath.offloadRequestsRefused)
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
    ///
    /// With `wakingFor`, the sleep also ends (returning 0) once that descriptor is readable: a
    /// guest with a second source of work (a TAP bridge, the kernel's frames) sleeps on both in
    /// one poll. The wait follows the active data path across switches, like any receive.
    @discardableResult
    public func receive(
        maxFrames: Int = 256, timeoutMilliseconds: Int = 0, wakingFor other: FileDescriptor? = nil, _ handler: (ReceivedFrame) -> Void
    ) -> Int {
        if channel.link.gone != nil { return 0 }
        serviceSwitchIfRequested()
        let deadline = timeoutMilliseconds < 0 ? UInt64.max : Clock.monotonicNanoseconds() + UInt64(timeoutMilliseconds) * 1_000_000
        while true {
            let now = Clock.monotonicNanoseconds()
            let remaining = timeoutMilliseconds < 0 ? -1 : (deadline > now ? Int((deadline - now) / 1_000_000) : 0)
            let n = dataPath.receive(maxFrames: maxFrames, timeoutMilliseconds: remaining, wakingFor: other, handler)
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

    /// If the host raised DIC, the switcher carries the switch out. Returns true if a switch
    /// request was handled (whether or not it succeeded).
    @discardableResult
    private func serviceSwitchIfRequested() -> Bool { switcher.serviceIfRequested() }

    // MARK: Control path: every operation is a register access or command to the host

    /// Changes the vNIC's MAC (MACL, then MACH applies it). Throws `HostRefusal` if policy refuses.
    public func setMAC(_ newMAC: MACAddress) throws {
        try device.setMAC(newMAC)
        mac = newMAC
    }

    /// Sets the receive mode (UPDATE_RX_MODE). Promiscuous needs the host's permission.
    public func setRxMode(_ mode: VMXNET3.RxMode) throws {
        try device.setRxMode(mode)
    }

    /// Joins exactly these VLANs (UPDATE_VLAN_FILTERS); VLAN 0 (untagged) is always kept.
    public func setVLANs(_ vlans: Set<UInt16>) throws {
        try device.setVLANs(vlans)
    }

    /// Sets the multicast addresses this vNIC accepts (UPDATE_MAC_FILTERS).
    public func setMulticastFilter(_ macs: [MACAddress]) throws {
        try device.setMulticastFilter(macs)
    }

    /// The link state (GET_LINK).
    public func linkIsUp() throws -> Bool {
        try device.linkIsUp()
    }

    /// The host's counters for this vNIC (frames, bytes, drops by reason: `drop_<reason>`).
    public func deviceCounters() throws -> [String: UInt64] {
        let (reply, _) = try channel.request(.countersRequest)
        guard case .countersReply(let counters) = reply else { throw HostRefusal(code: 0, message: "unexpected reply") }
        var out: [String: UInt64] = [:]
        for c in counters { out[c.name] = c.value }
        return out
    }

    /// Waits until a vNIC with `peer` as its MAC is attached to the host and active (or the
    /// timeout passes; 0 asks once). Asks the host with `peerQuery`, the one question about
    /// other guests a guest's connection may put. Throws `HostGone` as soon as the host is gone.
    public func waitForPeer(_ peer: MACAddress, timeoutMilliseconds: Int) throws -> Bool {
        let deadline = Clock.monotonicNanoseconds() + UInt64(timeoutMilliseconds) * 1_000_000
        while true {
            let (reply, _) = try channel.request(.peerQuery(mac: peer))
            guard case .peerReply(_, let active) = reply else { throw HostRefusal(code: 0, message: "unexpected reply") }
            if active { return true }
            guard Clock.monotonicNanoseconds() < deadline else { return false }
            _ = interrupt.wait(timeoutMilliseconds: 20)
        }
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
    public var queueTableGPAForTesting: UInt64 { GuestMemoryLayout.queueTableGPA }
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
        try? channel.notify(.detach)
    }

    deinit {
        detach()
    }
}
