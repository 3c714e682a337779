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
///
/// This file holds its identity, state and lifecycle (the only writers of `state`), the
/// configuration the guest programs (each change through Admission) and faults. Its other
/// roles are extensions in their own files: the BAR1 register file (`+Registers`), vmxnet3
/// commands (`+Commands`), the data path (`+DataPath`) and save/restore (`+Persist`).
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
        /// TX: segments of the TSO chain at `next` the switch already took (it stopped part-way
        /// through it: a receiver without buffers); the next pass resumes after them. Not saved
        /// with the device state: after a restore such a chain is sent whole (duplicate segments,
        /// which TCP discards) rather than in part.
        var segmentsSent: Int = 0
    }

    let id: UInt32
    let name: String
    /// What the host allows it; replaced only by `adopt(policy:)` (`npa policy set`).
    var policy: GuestPolicy
    let region: SharedMemory
    let memory: GuestMemory
    let registerPage: SharedMemory
    let doorbell: EventNotifier
    let interrupts: [EventNotifier]
    let maxQueues: Int
    let permanentMAC: MACAddress
    private(set) var mac: MACAddress
    let logger: Logger
    /// The host's event log (set once it is attached): told of the first fault of each reason
    /// and of the error state, where they are logged — never per frame.
    var events: HostEventLog?
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
    /// The file of the plugin bundle the host injected for the VF it holds (set at the offer).
    var pluginBundle: String?
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
        MemoryFence.sequentiallyConsistent()
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
    /// The same while the guest is in a switch handshake (`switch_timeout_ms`, when longer): it
    /// reads no ring until the step it is in is done (see `holdsSenders`).
    var switchStallLimitNanoseconds: UInt64 = 5_000_000_000
    /// Whether the guest is in a switch handshake it was asked for: it reads none of its rings
    /// until the step it is in is done, which on a loaded machine can outlast the stall limit.
    /// (A VF reset's switch-out keeps the stall limit; a step past its deadline ends this.)
    var isInSwitchHandshake: Bool { !awaitingSwitchOut && switching.isSwitching && !switching.deadlineExpired }
    /// When this vNIC was first found with no receive buffer for a waiting frame (0: it has one).
    var receiverStalledSince: UInt64 = 0
    /// Set once a stall outlasted the limit: frames to this vNIC are dropped, not held, until
    /// it has half a ring of buffers posted again.
    var exceededStallLimit = false
    /// Frames parked for it at its own switch-out (see `SwitchOverflow`); nil when none wait.
    var switchOverflow: SwitchOverflow?
    /// The capture of this vNIC running now (`npa capture`), and its ring unretained for the
    /// directions it wants: the per-frame check is one nil test (`HostDataPath+Capture.swift`).
    var capture: PacketCapture?
    var captureReceived: Unmanaged<CaptureRing>?
    var captureTransmitted: Unmanaged<CaptureRing>?
    var mtu: UInt32 = 1500
    /// Faults since the last ACTIVATE; at `faultLimit` the device enters the error state.
    var faults = 0
    let faultLimit = 256
    private(set) var loggedReasons: UInt32 = 0
    /// The state `stop()` left, which `save()` records and `resume()` returns to.
    private(set) var stateBeforeStop: State?

    // BAR1 latches: written only by the register file (`EmulatedDevice+Registers.swift`) and a
    // restore; everything else reads them.
    var driverSharedLow: UInt32 = 0
    var driverSharedPA: UInt64 = 0
    var macLowLatch: UInt32 = 0
    var lastCommandResult: UInt32 = 0
    // What the guest programmed: changed only through `program(...)` below, after Admission.
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
        // A capture of this vNIC ends with it (its VF's mirror went with the VF's release).
        if let capture {
            capture.wentAway = true
            capture.requestStop()
        }
        setCapture(nil)
    }

    @inline(__always)
    func registerWord(_ offset: Int) -> UnsafeMutablePointer<UInt32> {
        (registerPage.base + offset).assumingMemoryBound(to: UInt32.self)
    }

    var isActive: Bool { state == .active }

    // MARK: Lifecycle: the only writers of `state`

    /// ACTIVATE's last step, once every ring has been validated against guest memory
    /// (`activate()`): the queues start and faults are counted afresh.
    func start(transmit: [Queue], receive: [Queue], mtu: UInt32, autoMask: Bool) {
        self.autoMask = autoMask
        self.mtu = mtu
        txQueues = transmit
        rxQueues = receive
        faults = 0
        state = .active
    }

    /// QUIESCE_DEV: an active device stops its queues; any other state stays as it is.
    func quiesce() {
        if state == .active { state = .quiesced }
    }

    /// RESET_DEV: the queues are forgotten, faults cleared, every vector masked.
    func reset() {
        state = .reset
        txQueues = []
        rxQueues = []
        faults = 0
        maskAllVectors()
    }

    // MARK: Configuration the guest programs: MAC, VLAN and rx-mode changes pass Admission

    /// The MAC the guest wrote to MACL/MACH; a refusal changes nothing.
    func program(mac requested: MACAddress) -> AdmissionRefusal? {
        if let refusal = admission.admitMAC(requested, for: self) {
            logger.warning("refused: \(refusal)")
            return refusal
        }
        mac = requested
        vswitch.setOwnedMAC(port, requested)
        vswitch.setMAC(port, requested)
        logger.info("MAC set to \(requested)")
        return nil
    }

    /// UPDATE_RX_MODE's mode; a refusal changes nothing.
    func program(rxMode requested: VMXNET3.RxMode) -> AdmissionRefusal? {
        if let refusal = admission.admitRxMode(requested, for: self) {
            logger.warning("refused: \(refusal)")
            return refusal
        }
        rxMode = requested
        vswitch.setRxMode(port, requested)
        return nil
    }

    /// UPDATE_VLAN_FILTERS' VLANs; a refusal changes nothing.
    func program(vlans requested: Set<UInt16>) -> AdmissionRefusal? {
        if let refusal = admission.admitVLANs(requested, for: self) {
            logger.warning("refused: \(refusal)")
            return refusal
        }
        vlans = requested
        vswitch.setVLANs(port, requested)
        return nil
    }

    /// UPDATE_MAC_FILTERS' multicast list, already checked entry by entry (no policy governs it).
    func program(multicast list: Set<MACAddress>) {
        multicast = list
        vswitch.setMulticast(port, list)
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
            events?.record(.guestFault, vnic: name, "\(reason.name) (further ones are counted, not recorded)")
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
        events?.record(.guestError, vnic: name, "vNIC put in the error state: \(reason)")
    }
}
