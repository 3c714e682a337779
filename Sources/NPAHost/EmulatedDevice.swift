import CNPAShim
import Logging
import NPAControlProtocol
import NPANICModel
import NPARingFormats
import NPASystem

/// The host side of one vNIC: vmxnet3 device emulation. It owns the guest's memory mapping (as
/// a bounds-checked `GuestMemory`), the register page, the doorbell and interrupt eventfds, and
/// the device state the guest programs through BAR1 registers and commands.
///
/// It may touch: its guest's memory (only through `memory`), its register page, its port on the
/// vswitch. It trusts nothing the guest wrote: ring geometry is validated at ACTIVATE, every
/// descriptor on every use. Only the engine thread calls it.
final class EmulatedDevice {
    enum State: Equatable {
        case reset
        case active
        case quiesced
        /// The guest misbehaved too often; queues are stopped until RESET + ACTIVATE.
        case failed(String)
        /// Stopped by the host to be saved (`stop()`): no data-path work until `resume()`.
        case stopped

        var name: String {
            switch self {
            case .reset: "reset"
            case .active: "active"
            case .quiesced: "quiesced"
            case .failed: "error"
            case .stopped: "stopped"
            }
        }
    }

    /// Device-side cursors of one queue: its descriptor ring and its completion ring, each an
    /// index plus the generation the device expects (vmxnet3 gen-bit rules). Validated at ACTIVATE.
    struct Queue {
        var ringBase: UInt64 = 0
        var ringSize: UInt32 = 0
        var next: UInt32 = 0
        var generation: UInt32 = 1
        var compBase: UInt64 = 0
        var compSize: UInt32 = 0
        var compNext: UInt32 = 0
        var compGeneration: UInt32 = 1
        var vector: Int = 0
        var descriptorGPA: UInt64 = 0
    }

    let id: UInt32
    let name: String
    let policy: GuestPolicy
    let region: SharedMemory
    let memory: GuestMemory
    let registerPage: SharedMemory
    let doorbell: EventNotifier
    let interrupts: [EventNotifier]
    let maxQueues: Int
    let permanentMAC: MACAddress
    private(set) var mac: MACAddress
    let logger: Logger
    unowned let vswitch: VirtualSwitch
    /// Asked before any MAC, VLAN or rx-mode change is applied (policy and the whole host).
    unowned let admission: Admission
    let port: Int

    private(set) var state: State = .reset

    /// Which data path the guest uses. In passthrough the vNIC's vswitch port accepts nothing and
    /// holds no MAC; the VF has them (programmed by the PF driver).
    enum Mode: String { case emulated, passthrough }
    var mode: Mode { switching.isPassthrough ? .passthrough : .emulated }
    /// The vNIC's switches between emulation and a VF: which path carries it, the VF it holds
    /// and the switch under way. Only the PF driver sends it events.
    var switching = VNICSwitchMachine()
    /// The plugin the guest runs on its VF (the host's image name, then what the guest reports).
    var pluginName: String?
    /// VF counters of VFs this vNIC held before (a VF's counters restart at its next FLR).
    var earlierVFCounters: [String: UInt64] = [:]
    /// Set by a VF reset until the guest's `switchOutBegin`: the MAC is on neither the VF (FLR)
    /// nor the vswitch (the guest has not re-armed emulation yet), and frames for it are held
    /// back — in their senders' TX rings or the PF queue — until the MAC moves, as at a switch-out.
    var awaitingSwitchOut = false

    /// Raises DIC ("device implementation change") in DriverShared.ecr and fires the event
    /// interrupt: the guest's shell then asks the host what changed.
    func raiseDeviceImplementationChange() {
        if driverSharedPA != 0, let ecr = memory.loadU32(gpa: driverSharedPA &+ VMXNET3.DriverShared.ecr) {
            memory.storeU32(gpa: driverSharedPA &+ VMXNET3.DriverShared.ecr, ecr | VMXNET3.Event.deviceImplementationChange)
        }
        cnpa_fence_seq_cst()
        interrupts.first?.signal()
    }
    var txQueues: [Queue] = []
    var rxQueues: [Queue] = []
    var counters = DeviceCounters()
    var autoMask = true
    var pendingVectors: UInt32 = 0
    /// How long senders are held back for this vNIC when it has no free receive buffer before
    /// frames to it are dropped instead (as `no_buffers`): long enough for a guest the scheduler
    /// set aside to run again, short enough that a guest that stopped receiving cannot hold
    /// others up for long (`receiver_stall_ms`).
    var receiverStallLimitNanoseconds: UInt64 = 500_000_000
    /// When this vNIC was first found with no receive buffer for a waiting frame (0: it has one).
    var receiverStalledSince: UInt64 = 0
    /// Set once a stall outlasted the limit: frames to this vNIC are dropped, not held, until
    /// it has half a ring of buffers posted again.
    var exceededStallLimit = false
    var mtu: UInt32 = 1500
    /// Faults since the last ACTIVATE; at `faultLimit` the device enters the error state.
    var faults = 0
    let faultLimit = 256
    private(set) var loggedReasons: UInt32 = 0
    /// The state `stop()` left, which `save()` records and `resume()` returns to.
    private(set) var stateBeforeStop: State?

    // BAR1 latches.
    private(set) var driverSharedLow: UInt32 = 0
    private(set) var driverSharedPA: UInt64 = 0
    private(set) var macLowLatch: UInt32 = 0
    private(set) var lastCommandResult: UInt32 = 0
    private(set) var rxMode: VMXNET3.RxMode = [.unicast, .broadcast]
    private(set) var multicast: Set<MACAddress> = []
    private(set) var vlans: Set<UInt16> = [0]

    /// A new vNIC at attach: a fresh register page (every vector masked) and a new vswitch port.
    convenience init(
        id: UInt32, name: String, mac: MACAddress, policy: GuestPolicy, region: SharedMemory,
        doorbell: EventNotifier, interrupts: [EventNotifier], maxQueues: Int, vswitch: VirtualSwitch, admission: Admission, logger: Logger
    ) throws {
        let registerPage = try SharedMemory(name: "npa-regs-\(name)", size: VMXNET3.RegisterPage.size)
        self.init(
            state: .initial(id: id, name: name, mac: mac, vectorCount: interrupts.count), policy: policy, region: region,
            registerPage: registerPage, doorbell: doorbell, interrupts: interrupts, maxQueues: maxQueues,
            vswitch: vswitch, admission: admission, port: vswitch.addPort(mac: mac), logger: logger)
        maskAllVectors()
    }

    /// The device `saved` describes, on these handles and vswitch port. Touches neither the
    /// register page nor the port: the caller (`init(restoring:...)`, or the attach init above)
    /// has checked `saved` against guest memory and programs them.
    init(
        state saved: DeviceState, policy: GuestPolicy, region: SharedMemory, registerPage: SharedMemory,
        doorbell: EventNotifier, interrupts: [EventNotifier], maxQueues: Int, vswitch: VirtualSwitch, admission: Admission, port: Int,
        logger: Logger
    ) {
        id = saved.identity.id
        name = saved.identity.name
        mac = saved.identity.mac
        permanentMAC = saved.identity.permanentMAC
        mtu = saved.identity.mtu
        self.policy = policy
        self.region = region
        memory = GuestMemory(base: region.base, size: region.size)
        self.registerPage = registerPage
        self.doorbell = doorbell
        self.interrupts = interrupts
        self.maxQueues = maxQueues
        self.vswitch = vswitch
        self.admission = admission
        self.port = port
        var l = logger
        l[metadataKey: "vnic"] = "\(name)"
        self.logger = l
        rxMode = saved.filters.rxMode
        multicast = Set(saved.filters.multicast)
        vlans = Set(saved.filters.vlans)
        autoMask = saved.interrupts.autoMask
        pendingVectors = saved.interrupts.pending
        txQueues = saved.queues.transmit.map(Queue.init(restoring:))
        rxQueues = saved.queues.receive.map(Queue.init(restoring:))
        state = State(restoring: saved.lifecycle)
        faults = Int(saved.lifecycle.faults)
        loggedReasons = saved.lifecycle.loggedReasons
        driverSharedLow = saved.latches.driverSharedLow
        driverSharedPA = saved.latches.driverSharedPA
        macLowLatch = saved.latches.macLow
        lastCommandResult = saved.latches.lastCommandResult
        counters = saved.counters.device
        earlierVFCounters = saved.counters.earlierVF
    }

    /// Stops the device for a save: it does no data-path work (it is not active) until
    /// `resume()`, or until it is discarded for the device restored from its state.
    func stop() {
        precondition(stateBeforeStop == nil, "vNIC '\(name)' is stopped already")
        stateBeforeStop = state
        state = .stopped
    }

    /// Undoes `stop()` (a save or restore failed): the device carries on as it was.
    func resume() {
        guard let previous = stateBeforeStop else { return }
        state = previous
        stateBeforeStop = nil
    }

    /// All vectors masked, as after a device reset.
    private func maskAllVectors() {
        for v in 0..<VMXNET3.RegisterPage.maximumVectors { registerWord(VMXNET3.RegisterPage.interruptMask(v)).pointee = 1 }
    }

    func detach() {
        vswitch.removePort(port)
        state = .reset
    }

    @inline(__always)
    func registerWord(_ offset: Int) -> UnsafeMutablePointer<UInt32> {
        (registerPage.base + offset).assumingMemoryBound(to: UInt32.self)
    }

    var isActive: Bool { state == .active }

    // MARK: Registers (BAR1), reached through the control channel

    /// A guest's register write. Returns (status, message) for the reply.
    func writeRegister(offset: UInt32, value: UInt32) -> (UInt32, String) {
        guard let reg = VMXNET3.Register(rawValue: offset) else {
            return (ControlMessage.ErrorCode.invalidArgument, "no register at BAR1 offset 0x\(String(offset, radix: 16))")
        }
        switch reg {
        case .vrrs, .uvrs:
            // Only revision 1 exists here; the driver must pick bit 0.
            return value == 1 ? (0, "") : (ControlMessage.ErrorCode.invalidArgument, "only revision 1 is supported")
        case .dsal:
            driverSharedLow = value
            if value == 0 { driverSharedPA = 0 }
            return (0, "")
        case .dsah:
            driverSharedPA = UInt64(value) << 32 | UInt64(driverSharedLow)
            return (0, "")
        case .cmd:
            let outcome = execute(command: value)
            lastCommandResult = outcome.result
            return (outcome.status, outcome.message)
        case .macl:
            macLowLatch = value
            return (0, "")
        case .mach:
            // MACL holds bytes 0-3 and MACH bytes 4-5, little endian: byte 0 is the first on the wire.
            let bytes: [UInt8] = [
                UInt8(truncatingIfNeeded: macLowLatch), UInt8(truncatingIfNeeded: macLowLatch >> 8),
                UInt8(truncatingIfNeeded: macLowLatch >> 16), UInt8(truncatingIfNeeded: macLowLatch >> 24),
                UInt8(truncatingIfNeeded: value), UInt8(truncatingIfNeeded: value >> 8),
            ]
            let requested = MACAddress(bytes: bytes)
            if let refusal = admission.admitMAC(requested, for: self) {
                logger.warning("refused: \(refusal)")
                return (refusal.code, refusal.description)
            }
            mac = requested
            vswitch.setOwnedMAC(port, requested)
            vswitch.setMAC(port, requested)
            logger.info("MAC set to \(requested)")
            return (0, "")
        case .icr:
            return (0, "")
        case .ecr:
            // Write-1-to-clear acknowledgement of events in DriverShared.ecr.
            if driverSharedPA != 0, let ecr = memory.loadU32(gpa: driverSharedPA &+ VMXNET3.DriverShared.ecr) {
                memory.storeU32(gpa: driverSharedPA &+ VMXNET3.DriverShared.ecr, ecr & ~value)
            }
            return (0, "")
        }
    }

    func readRegister(offset: UInt32) -> (UInt32, UInt32, String) {
        guard let reg = VMXNET3.Register(rawValue: offset) else {
            return (ControlMessage.ErrorCode.invalidArgument, 0, "no register at BAR1 offset 0x\(String(offset, radix: 16))")
        }
        switch reg {
        case .vrrs, .uvrs: return (0, 1, "")
        case .dsal: return (0, UInt32(truncatingIfNeeded: driverSharedPA), "")
        case .dsah: return (0, UInt32(truncatingIfNeeded: driverSharedPA >> 32), "")
        case .cmd: return (0, lastCommandResult, "")
        case .macl:
            let b = mac.bytes
            return (0, UInt32(b[0]) | UInt32(b[1]) << 8 | UInt32(b[2]) << 16 | UInt32(b[3]) << 24, "")
        case .mach:
            let b = mac.bytes
            return (0, UInt32(b[4]) | UInt32(b[5]) << 8, "")
        case .icr, .ecr:
            return (0, 0, "")
        }
    }

    // MARK: Commands

    /// What a command did: the value CMD reads back (0 = success for SET commands) and, on
    /// refusal, the control-channel status and the reason for the guest.
    struct CommandOutcome {
        var result: UInt32
        var status: UInt32 = 0
        var message: String = ""

        static func done(_ result: UInt32 = 0) -> CommandOutcome { CommandOutcome(result: result) }
        static func refused(_ status: UInt32, _ message: String, result: UInt32 = 1) -> CommandOutcome {
            CommandOutcome(result: result, status: status, message: message)
        }
    }

    /// Executes a vmxnet3 command; each refusal carries its own status (policy, state, argument).
    func execute(command raw: UInt32) -> CommandOutcome {
        guard let command = VMXNET3.Command(rawValue: raw) else {
            return .refused(ControlMessage.ErrorCode.invalidArgument, "unsupported command 0x\(String(raw, radix: 16))", result: UInt32.max)
        }
        switch command {
        case .activateDevice:
            do {
                try activate()
                return .done()
            } catch let error as ActivationError {
                logger.warning("ACTIVATE refused: \(error.reason)")
                return .refused(ControlMessage.ErrorCode.invalidState, "ACTIVATE refused: \(error.reason)")
            } catch {
                return .refused(ControlMessage.ErrorCode.invalidState, "ACTIVATE refused: \(error)")
            }
        case .quiesceDevice:
            if state == .active { state = .quiesced }
            return .done()
        case .resetDevice:
            state = .reset
            txQueues = []
            rxQueues = []
            faults = 0
            maskAllVectors()
            return .done()
        case .updateRxMode: return updateRxMode()
        case .updateMACFilters: return updateMACFilters()
        case .updateVLANFilters: return updateVLANFilters()
        case .getStats:
            writeStats()
            return .done()
        case .getLink: return .done(VMXNET3.linkUp10G)
        case .getPermanentMACLow:
            let b = permanentMAC.bytes
            return .done(UInt32(b[0]) | UInt32(b[1]) << 8 | UInt32(b[2]) << 16 | UInt32(b[3]) << 24)
        case .getPermanentMACHigh:
            let b = permanentMAC.bytes
            return .done(UInt32(b[4]) | UInt32(b[5]) << 8)
        case .getDeviceIDLow: return .done(mode == .passthrough ? VMXNET3.passthroughDeviceID : VMXNET3.emulatedDeviceID)
        case .getDeviceIDHigh: return .done()
        case .getConfiguredInterrupts:
            // MSI-X (3) with auto-mask (mask mode ACTIVE = 1 << 2).
            return .done(3 | (1 << 2))
        case .getQueueStatus:
            writeQueueStatus()
            return .done()
        case .stopEmulation, .loadPlugin, .activateVF:
            // Handled by the host's PF driver (PFDriver, reached through ControlServer) when a switch is under way.
            return .refused(ControlMessage.ErrorCode.invalidState, "no switch to passthrough is under way for this vNIC", result: UInt32.max)
        }
    }

    struct ActivationError: Error { let reason: String }

    private func require(_ condition: Bool, _ reason: @autoclosure () -> String) throws {
        if !condition { throw ActivationError(reason: reason()) }
    }

    /// ACTIVATE_DEV: reads DriverShared and the queue descriptor table once, validates every
    /// ring against the guest's region, and only then starts the queues.
    private func activate() throws {
        let ds = driverSharedPA
        try require(ds != 0, "DriverShared address (DSAL/DSAH) is not set")
        try require(memory.contains(gpa: ds, length: VMXNET3.DriverShared.size), "DriverShared at 0x\(String(ds, radix: 16)) lies outside guest memory")
        try require(memory.loadU32(gpa: ds) == VMXNET3.driverSharedMagic, "DriverShared magic is not 0xBABEFEE1")
        let numTx = Int(memory.loadU8(gpa: ds + VMXNET3.DriverShared.numTxQueues) ?? 0)
        let numRx = Int(memory.loadU8(gpa: ds + VMXNET3.DriverShared.numRxQueues) ?? 0)
        try require((1...maxQueues).contains(numTx), "numTxQueues \(numTx) is not in 1...\(maxQueues)")
        try require((1...maxQueues).contains(numRx), "numRxQueues \(numRx) is not in 1...\(maxQueues)")
        let numIntrs = Int(memory.loadU8(gpa: ds + VMXNET3.DriverShared.numInterrupts) ?? 0)
        try require(numIntrs >= 1 && numIntrs <= interrupts.count, "numIntrs \(numIntrs) exceeds the \(interrupts.count) interrupt eventfds attached")
        let mtuValue = memory.loadU32(gpa: ds + VMXNET3.DriverShared.mtu) ?? 0
        try require((68...9000).contains(mtuValue), "MTU \(mtuValue) is not in 68...9000")
        let queueTable = memory.loadU64(gpa: ds + VMXNET3.DriverShared.queueDescPA) ?? 0
        let tableLength = UInt64(numTx + numRx) * VMXNET3.queueDescriptorSize
        try require(queueTable & 127 == 0 && memory.contains(gpa: queueTable, length: tableLength), "queue descriptor table at 0x\(String(queueTable, radix: 16)) is misaligned or outside guest memory")

        func ring(_ base: UInt64, _ size: UInt32, _ what: String, maximum: UInt32) throws {
            try require(size >= VMXNET3.minimumRingSize && size <= maximum && size & (size - 1) == 0, "\(what) size \(size) is not a power of two in \(VMXNET3.minimumRingSize)...\(maximum)")
            try require(base & 15 == 0 && memory.contains(gpa: base, length: UInt64(size) * VMXNET3.descriptorSize), "\(what) at 0x\(String(base, radix: 16)) is misaligned or outside guest memory")
        }

        var tx: [Queue] = []
        for q in 0..<numTx {
            let d = queueTable + UInt64(q) * VMXNET3.queueDescriptorSize
            var t = Queue()
            t.descriptorGPA = d
            t.ringBase = memory.loadU64(gpa: d + VMXNET3.TxQueueDesc.txRingBasePA) ?? 0
            t.ringSize = memory.loadU32(gpa: d + VMXNET3.TxQueueDesc.txRingSize) ?? 0
            t.compBase = memory.loadU64(gpa: d + VMXNET3.TxQueueDesc.compRingBasePA) ?? 0
            t.compSize = memory.loadU32(gpa: d + VMXNET3.TxQueueDesc.compRingSize) ?? 0
            t.vector = Int(memory.loadU8(gpa: d + VMXNET3.TxQueueDesc.intrIdx) ?? 0)
            try ring(t.ringBase, t.ringSize, "TX ring \(q)", maximum: VMXNET3.maximumTxRingSize)
            try ring(t.compBase, t.compSize, "TX completion ring \(q)", maximum: VMXNET3.maximumTxRingSize)
            try require(t.compSize >= t.ringSize, "TX completion ring \(q) is smaller than its TX ring")
            try require(t.vector < numIntrs, "TX queue \(q) interrupt index \(t.vector) >= numIntrs \(numIntrs)")
            tx.append(t)
        }
        var rx: [Queue] = []
        for q in 0..<numRx {
            let d = queueTable + UInt64(numTx + q) * VMXNET3.queueDescriptorSize
            var r = Queue()
            r.descriptorGPA = d
            r.ringBase = memory.loadU64(gpa: d + VMXNET3.RxQueueDesc.rxRingBasePA0) ?? 0
            r.ringSize = memory.loadU32(gpa: d + VMXNET3.RxQueueDesc.rxRingSize0) ?? 0
            r.compBase = memory.loadU64(gpa: d + VMXNET3.RxQueueDesc.compRingBasePA) ?? 0
            r.compSize = memory.loadU32(gpa: d + VMXNET3.RxQueueDesc.compRingSize) ?? 0
            r.vector = Int(memory.loadU8(gpa: d + VMXNET3.RxQueueDesc.intrIdx) ?? 0)
            try ring(r.ringBase, r.ringSize, "RX ring \(q)", maximum: VMXNET3.maximumRxRingSize)
            try ring(r.compBase, r.compSize, "RX completion ring \(q)", maximum: VMXNET3.maximumRxRingSize * 2)
            try require(r.compSize >= r.ringSize, "RX completion ring \(q) is smaller than its RX ring")
            try require(r.vector < numIntrs, "RX queue \(q) interrupt index \(r.vector) >= numIntrs \(numIntrs)")
            rx.append(r)
        }
        // Completion rings start zeroed (all-zero = empty, since gen starts at 1).
        for t in tx { memory.pointer(gpa: t.compBase, length: UInt64(t.compSize) * 16)!.initializeMemory(as: UInt8.self, repeating: 0, count: Int(t.compSize) * 16) }
        for r in rx { memory.pointer(gpa: r.compBase, length: UInt64(r.compSize) * 16)!.initializeMemory(as: UInt8.self, repeating: 0, count: Int(r.compSize) * 16) }
        for t in tx {
            // txThreshold = 1: the device wants every doorbell (it polls anyway while awake).
            memory.storeU32(gpa: t.descriptorGPA + VMXNET3.TxQueueDesc.txThreshold, 1)
            memory.storeU32(gpa: t.descriptorGPA + VMXNET3.TxQueueDesc.error, 0)
        }
        autoMask = (memory.loadU8(gpa: ds + VMXNET3.DriverShared.intrAutoMask) ?? 1) != 0
        mtu = mtuValue
        txQueues = tx
        rxQueues = rx
        faults = 0
        state = .active
        logger.info("activated: \(numTx) TX / \(numRx) RX queues, MTU \(mtuValue), \(numIntrs) vectors")
    }

    private func updateRxMode() -> CommandOutcome {
        guard driverSharedPA != 0, let raw = memory.loadU32(gpa: driverSharedPA &+ VMXNET3.DriverShared.rxMode) else {
            return .refused(ControlMessage.ErrorCode.invalidState, "DriverShared is not set")
        }
        let mode = VMXNET3.RxMode(rawValue: raw & 0x1F)
        if let refusal = admission.admitRxMode(mode, for: self) {
            logger.warning("refused: \(refusal)")
            return .refused(refusal.code, refusal.description)
        }
        rxMode = mode
        vswitch.setRxMode(port, mode)
        return .done()
    }

    private func updateMACFilters() -> CommandOutcome {
        let ds = driverSharedPA
        guard ds != 0, let lenWord = memory.loadU32(gpa: ds &+ VMXNET3.DriverShared.multicastTableLength),
            let tablePA = memory.loadU64(gpa: ds &+ VMXNET3.DriverShared.multicastTablePA)
        else { return .refused(ControlMessage.ErrorCode.invalidState, "DriverShared is not set") }
        let length = Int(lenWord & 0xFFFF)
        guard length % 6 == 0, length <= 6 * 256 else { return .refused(ControlMessage.ErrorCode.invalidState, "multicast table length \(length) is not a multiple of 6 up to 1536") }
        guard let p = memory.pointer(gpa: tablePA, length: UInt64(length)) else { return .refused(ControlMessage.ErrorCode.invalidState, "multicast table lies outside guest memory") }
        var list = Set<MACAddress>()
        for i in 0..<(length / 6) {
            let mac = MACAddress(value: EthernetFrame.mac(p, at: i * 6))
            guard mac.isMulticast else { return .refused(ControlMessage.ErrorCode.invalidState, "MAC filter entry \(mac) is not a multicast address") }
            list.insert(mac)
        }
        multicast = list
        vswitch.setMulticast(port, list)
        return .done()
    }

    private func updateVLANFilters() -> CommandOutcome {
        let ds = driverSharedPA
        guard ds != 0, let p = memory.pointer(gpa: ds &+ VMXNET3.DriverShared.vlanTable, length: VMXNET3.DriverShared.vlanTableBytes) else {
            return .refused(ControlMessage.ErrorCode.invalidState, "DriverShared is not set")
        }
        var requested = Set<UInt16>([0])
        for word in 0..<128 {
            let bits = UInt32(littleEndian: p.load(fromByteOffset: word * 4, as: UInt32.self))
            if bits == 0 { continue }
            for b in 0..<32 where bits & (1 << UInt32(b)) != 0 { requested.insert(UInt16(word * 32 + b)) }
        }
        requested.remove(4095)
        if let refusal = admission.admitVLANs(requested, for: self) {
            logger.warning("refused: \(refusal)")
            return .refused(refusal.code, refusal.description)
        }
        vlans = requested
        vswitch.setVLANs(port, requested)
        return .done()
    }

    /// GET_STATS: the device writes UPT1 stats into each queue descriptor.
    private func writeStats() {
        // Totals go in queue 0's stats; a per-queue split is not kept.
        if let t = txQueues.first {
            let s = t.descriptorGPA + VMXNET3.TxQueueDesc.stats
            memory.storeU64(gpa: s + 16, counters.txFrames)  // ucastPkts (all frames here)
            memory.storeU64(gpa: s + 24, counters.txBytes)
            memory.storeU64(gpa: s + 64, counters.drops[DropReason.badDescriptor.rawValue] + counters.drops[DropReason.chainTooLong.rawValue])
            memory.storeU64(gpa: s + 72, counters.drops[DropReason.spoofedSource.rawValue] + counters.drops[DropReason.vlanRefused.rawValue])
        }
        if let r = rxQueues.first {
            let s = r.descriptorGPA + VMXNET3.RxQueueDesc.stats
            memory.storeU64(gpa: s + 16, counters.rxFrames)
            memory.storeU64(gpa: s + 24, counters.rxBytes)
            memory.storeU64(gpa: s + 64, counters.drops[DropReason.noBuffers.rawValue])
            memory.storeU64(
                gpa: s + 72,
                counters.drops[DropReason.bufferTooSmall.rawValue] + counters.drops[DropReason.badRxDescriptor.rawValue]
                    + counters.drops[DropReason.rxFrameTooLong.rawValue])
        }
    }

    private func writeQueueStatus() {
        let stopped: UInt8 = isActive ? 0 : 1
        for t in txQueues { memory.pointer(gpa: t.descriptorGPA + VMXNET3.TxQueueDesc.stopped, length: 1)?.storeBytes(of: stopped, as: UInt8.self) }
        for r in rxQueues { memory.pointer(gpa: r.descriptorGPA + VMXNET3.RxQueueDesc.stopped, length: 1)?.storeBytes(of: stopped, as: UInt8.self) }
    }

    // MARK: Faults

    /// Counts a drop; guest faults also count toward the error state. Logs the first of each
    /// reason (rate limit: once per reason per activation) so a hostile guest cannot flood logs.
    @inline(__always)
    func drop(_ reason: DropReason) {
        counters.drops[reason.rawValue] &+= 1
        guard reason.isGuestFault else { return }
        faults += 1
        if loggedReasons & (1 << UInt32(reason.rawValue)) == 0 {
            loggedReasons |= 1 << UInt32(reason.rawValue)
            logger.warning("guest fault: \(reason.name) (further ones are counted, not logged)")
        }
        if faults >= faultLimit, isActive { fail("\(faults) descriptor faults") }
    }

    /// Puts the vNIC in the error state: queues stop, the queue error and the TQERR event are
    /// set and the event interrupt fires, as a real device would.
    func fail(_ reason: String) {
        state = .failed(reason)
        for t in txQueues { memory.storeU32(gpa: t.descriptorGPA + VMXNET3.TxQueueDesc.error, VMXNET3.QueueError.invalidTxDescriptor) }
        writeQueueStatus()
        if driverSharedPA != 0, let ecr = memory.loadU32(gpa: driverSharedPA &+ VMXNET3.DriverShared.ecr) {
            memory.storeU32(gpa: driverSharedPA &+ VMXNET3.DriverShared.ecr, ecr | VMXNET3.Event.txQueueError)
        }
        interrupts.first?.signal()
        logger.error("vNIC put in error state: \(reason)")
    }
}
