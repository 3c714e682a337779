import NPAControlProtocol
import NPARingFormats

/// Everything an emulated vNIC (`EmulatedDevice`) is, apart from guest memory and the OS handles
/// it was given (the memory region, doorbell, interrupt eventfds, register page): a plain value
/// that a stopped device is saved to and a new device is restored from, on this host or, later,
/// on another one (migration). As Firecracker's `persist.rs` does, it is made of small pieces,
/// one per component, and each piece is encoded with its own version (`DeviceState+Codec.swift`).
///
/// What it does not hold, and why:
/// - Frames. Between data-path passes the device holds none: a TX burst lives in the host's
///   `FrameArena` only within one pass, and frames held back by backpressure (their receiver had
///   no free buffer) were never completed, so they stay in the sender's TX ring — guest memory,
///   which the guest keeps — and are pulled again by whichever device serves that ring next.
/// - Host policy and host tuning (the guest's `GuestPolicy`, `max_queues`, `receiver_stall_ms`):
///   they belong to the host that runs the device; a restore checks the state against them.
/// - The receiver stall clock (a monotonic timestamp of this host): it starts afresh.
/// - Switching bookkeeping (mode, VF, switch under way): only an emulated device with no switch
///   under way is saved; the switching state machine owns the rest.
///
/// Invariants (checked by the decoder, again by the restore against the guest's memory):
/// ring sizes are powers of two in vmxnet3's ranges, positions lie inside their rings,
/// generation bits are 0 or 1, every vector is one the device has.
struct DeviceState: Equatable, Sendable {
    /// Who the device is: its name and id on the host, its MACs and MTU.
    struct Identity: Equatable, Sendable {
        var id: UInt32
        var name: String
        var permanentMAC: MACAddress
        var mac: MACAddress
        var mtu: UInt32
    }

    /// What the guest asked to receive: rx mode, multicast list, VLANs (each list sorted, so a
    /// state has one encoding).
    struct Filters: Equatable, Sendable {
        var rxMode: VMXNET3.RxMode
        var multicast: [MACAddress]
        var vlans: [UInt16]
    }

    /// One queue's device-side cursors: its descriptor ring and its completion ring (index and
    /// expected generation each), the vector it raises and where its queue descriptor lies.
    struct QueueState: Equatable, Sendable {
        var ringBase: UInt64
        var ringSize: UInt32
        var next: UInt32
        var generation: UInt32
        var completionBase: UInt64
        var completionSize: UInt32
        var completionNext: UInt32
        var completionGeneration: UInt32
        var vector: UInt8
        var descriptorGPA: UInt64
    }

    struct Queues: Equatable, Sendable {
        var transmit: [QueueState]
        var receive: [QueueState]
    }

    /// Interrupt state: how many vectors the device has, auto-mask, which vectors the guest has
    /// masked (IMR words, bit v set = masked) and which have completions not yet signalled.
    struct Interrupts: Equatable, Sendable {
        var vectorCount: UInt8
        var autoMask: Bool
        var masked: UInt32
        var pending: UInt32
    }

    /// The device's life: its state (with the reason of an error state), the faults counted
    /// toward the error state since the last ACTIVATE, and which fault reasons were logged.
    struct Lifecycle: Equatable, Sendable {
        enum Phase: UInt8, Sendable { case reset = 0, active = 1, quiesced = 2, failed = 3 }
        var phase: Phase
        var failureReason: String
        var faults: UInt32
        var loggedReasons: UInt32
    }

    /// BAR1 values the guest wrote that a later write or read completes.
    struct Latches: Equatable, Sendable {
        var driverSharedLow: UInt32
        var driverSharedPA: UInt64
        var macLow: UInt32
        var lastCommandResult: UInt32
    }

    /// The device's counters, and the VF counters of VFs it held before (the guest sees both).
    struct Counters: Equatable, Sendable {
        var device: DeviceCounters
        var earlierVF: [String: UInt64]
    }

    var identity: Identity
    var filters: Filters
    var interrupts: Interrupts
    var queues: Queues
    var lifecycle: Lifecycle
    var latches: Latches
    var counters: Counters

    var name: String { identity.name }
}

/// Bounds of a `DeviceState` that come from vmxnet3 and from the host, not from one host's
/// configuration: what a decoder accepts at most.
extension DeviceState {
    /// vmxnet3's limit on TX and RX queues per device (Linux `VMXNET3_DEVICE_MAX_TX_QUEUES`).
    static let maximumQueues = 32
    /// The multicast table holds at most 256 entries (`updateMACFilters`).
    static let maximumMulticast = 256
    /// vmxnet3's VLAN table has 4096 bits; 4095 is reserved and never kept.
    static let maximumVLAN: UInt16 = 4094
    static let maximumFailureReasonBytes = 256
    static let maximumEarlierVFCounters = 64
    static let maximumCounterNameBytes = 64
    static let mtuRange: ClosedRange<UInt32> = 68...9000
}

extension DeviceState {
    /// A vNIC as attach creates it: reset, no queues, every vector masked, nothing counted.
    static func initial(id: UInt32, name: String, mac: MACAddress, vectorCount: Int) -> DeviceState {
        DeviceState(
            identity: Identity(id: id, name: name, permanentMAC: mac, mac: mac, mtu: 1500),
            filters: Filters(rxMode: [.unicast, .broadcast], multicast: [], vlans: [0]),
            interrupts: Interrupts(
                vectorCount: UInt8(clamping: vectorCount), autoMask: true,
                masked: vectorCount >= 32 ? .max : (1 << UInt32(vectorCount)) &- 1, pending: 0),
            queues: Queues(transmit: [], receive: []),
            lifecycle: Lifecycle(phase: .reset, failureReason: "", faults: 0, loggedReasons: 0),
            latches: Latches(driverSharedLow: 0, driverSharedPA: 0, macLow: 0, lastCommandResult: 0),
            counters: Counters(device: DeviceCounters(), earlierVF: [:]))
    }
}
