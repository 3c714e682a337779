/// Why device emulation dropped a frame or refused a descriptor. Every drop has one.
enum DropReason: Int, CaseIterable, Sendable {
    // Guest misbehaviour on TX (each also counts as a fault toward the error state).
    case badDescriptor, chainTooLong, frameTooLong, runt
    // Policy on TX.
    case spoofedSource, vlanRefused
    // Switching.
    case unknownDestination, filtered
    // Receive side. `rxFrameTooLong`: longer than the receiver's MTU allows (its buffers are
    // sized for that); the sender's doing, so no fault of the receiver.
    case noBuffers, bufferTooSmall, badRxDescriptor, inactive, rxFrameTooLong
    // Guest misbehaviour on TX, appended: an offload request (vmxnet3 om/hlen/msscof) the frame
    // does not bear out (not TCP, a header length that is not the headers', a bad MSS, a
    // checksum offset outside the frame, the encapsulation mode this device does not offer).
    case badOffload

    var name: String {
        switch self {
        case .badDescriptor: "bad_descriptor"
        case .chainTooLong: "chain_too_long"
        case .frameTooLong: "frame_too_long"
        case .runt: "runt"
        case .spoofedSource: "spoofed_source"
        case .vlanRefused: "vlan_refused"
        case .unknownDestination: "unknown_destination"
        case .filtered: "filtered"
        case .noBuffers: "no_buffers"
        case .bufferTooSmall: "buffer_too_small"
        case .badRxDescriptor: "bad_rx_descriptor"
        case .inactive: "vnic_inactive"
        case .rxFrameTooLong: "rx_frame_too_long"
        case .badOffload: "bad_offload"
        }
    }

    /// Faults are the guest's own doing with its rings; enough of them put the vNIC in error.
    var isGuestFault: Bool {
        switch self {
        case .badDescriptor, .chainTooLong, .frameTooLong, .runt, .badRxDescriptor, .bufferTooSmall, .badOffload: true
        default: false
        }
    }
}

/// One vNIC's counters. Written only by the engine thread (single writer, no atomics); read by
/// the same thread when it answers status and counter requests.
struct DeviceCounters: Equatable {
    var txFrames: UInt64 = 0
    var txBytes: UInt64 = 0
    var rxFrames: UInt64 = 0
    var rxBytes: UInt64 = 0
    var txBroadcast: UInt64 = 0
    var txMulticast: UInt64 = 0
    var doorbellKicks: UInt64 = 0
    var interruptsRaised: UInt64 = 0
    /// Times this vNIC began holding its senders back (no free receive buffer, or its MAC
    /// waiting for a switch-out after a VF reset): pause frames, in Ethernet terms.
    var senderHolds: UInt64 = 0
    /// Capture copies (`npa capture`) dropped because the capture's writer fell behind, over
    /// the captures that ended; `npa status` adds the running capture's.
    var captureDropped: UInt64 = 0
    var drops = [UInt64](repeating: 0, count: DropReason.allCases.count)

    var totalDrops: UInt64 { drops.reduce(0, &+) }

    func named() -> [(String, UInt64)] {
        var out: [(String, UInt64)] = [
            ("tx_frames", txFrames), ("tx_bytes", txBytes), ("rx_frames", rxFrames), ("rx_bytes", rxBytes),
            ("tx_broadcast", txBroadcast), ("tx_multicast", txMulticast),
            ("doorbell_kicks", doorbellKicks), ("interrupts", interruptsRaised), ("sender_holds", senderHolds),
            ("capture_dropped", captureDropped),
        ]
        for r in DropReason.allCases { out.append(("drop_" + r.name, drops[r.rawValue])) }
        return out
    }
}
