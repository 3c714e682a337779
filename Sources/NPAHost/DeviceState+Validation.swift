import NPAControlProtocol
import NPARingFormats

/// Why a device state was refused: by the decoder (its bytes), by `validate()` (its values) or
/// by a restore (it does not fit this guest's memory, handles or policy). Each case names the
/// field, so a refused migration says what was wrong.
enum DeviceStateError: Error, Equatable, CustomStringConvertible {
    case badMagic
    case unsupportedFormat(UInt16)
    /// A piece's version this host cannot read.
    case unsupportedVersion(piece: String, version: UInt16)
    /// The bytes ended inside `field`.
    case truncated(field: String)
    case invalid(field: String, reason: String)
    case trailingBytes(Int)
    /// The state does not fit the guest memory or handles it is restored onto.
    case doesNotFit(field: String, reason: String)
    case refusedByPolicy(String)

    var description: String {
        switch self {
        case .badMagic: "not a device state (bad magic)"
        case .unsupportedFormat(let v): "device state format \(v) is not supported (this host reads \(DeviceState.formatVersion))"
        case .unsupportedVersion(let piece, let v): "device state piece '\(piece)' version \(v) is not supported"
        case .truncated(let field): "device state truncated in \(field)"
        case .invalid(let field, let reason): "device state field \(field) is invalid: \(reason)"
        case .trailingBytes(let n): "device state has \(n) trailing bytes"
        case .doesNotFit(let field, let reason): "device state field \(field) does not fit this guest: \(reason)"
        case .refusedByPolicy(let reason): "device state refused by host policy: \(reason)"
        }
    }
}

extension DeviceState {
    /// Checks every invariant a device relies on without further checks (ring sizes are used as
    /// masks, positions as indices) and every bound on a count. The decoder runs it on what it
    /// decoded and a restore on what it is given: a state that passes is safe to restore as far
    /// as its own values go (the restore then checks it against guest memory and policy).
    func validate() throws(DeviceStateError) {
        func check(_ ok: Bool, _ field: String, _ reason: @autoclosure () -> String) throws(DeviceStateError) {
            if !ok { throw .invalid(field: field, reason: reason()) }
        }
        try check(identity.id != 0, "identity.id", "0 is no vNIC id")
        try check(GuestName.isValid(identity.name), "identity.name", GuestName.rule)
        try check(
            identity.permanentMAC.isUnicast && identity.permanentMAC != .zero, "identity.permanentMAC",
            "\(identity.permanentMAC) is not a unicast address")
        try check(identity.mac.isUnicast && identity.mac != .zero, "identity.mac", "\(identity.mac) is not a unicast address")
        try check(Self.mtuRange.contains(identity.mtu), "identity.mtu", "\(identity.mtu) is not in \(Self.mtuRange)")

        try check(filters.rxMode.rawValue & ~0x1F == 0, "filters.rxMode", "unknown bits in 0x\(String(filters.rxMode.rawValue, radix: 16))")
        try check(
            filters.multicast.count <= Self.maximumMulticast, "filters.multicast",
            "\(filters.multicast.count) entries, at most \(Self.maximumMulticast)")
        for (i, m) in filters.multicast.enumerated() {
            try check(m.isMulticast, "filters.multicast[\(i)]", "\(m) is not a multicast address")
            try check(i == 0 || filters.multicast[i - 1] < m, "filters.multicast[\(i)]", "entries are not strictly ascending")
        }
        try check(filters.vlans.first == 0, "filters.vlans", "VLAN 0 (untagged) is always a member")
        try check(filters.vlans.count <= Int(Self.maximumVLAN) + 1, "filters.vlans", "\(filters.vlans.count) entries")
        for (i, v) in filters.vlans.enumerated() {
            try check(v <= Self.maximumVLAN, "filters.vlans[\(i)]", "\(v) is not a VLAN ID in 0...\(Self.maximumVLAN)")
            try check(i == 0 || filters.vlans[i - 1] < v, "filters.vlans[\(i)]", "entries are not strictly ascending")
        }

        let vectors = Int(interrupts.vectorCount)
        try check(
            (1...VMXNET3.RegisterPage.maximumVectors).contains(vectors), "interrupts.vectorCount",
            "\(vectors) is not in 1...\(VMXNET3.RegisterPage.maximumVectors)")
        let vectorBits: UInt32 = (1 << UInt32(vectors)) &- 1
        try check(interrupts.masked & ~vectorBits == 0, "interrupts.masked", "masks a vector beyond the \(vectors) the device has")
        try check(interrupts.pending & ~vectorBits == 0, "interrupts.pending", "a vector beyond the \(vectors) the device has is pending")

        let hasQueues = lifecycle.phase != .reset
        for (kind, list, ringMaximum, completionMaximum) in [
            ("transmit", queues.transmit, VMXNET3.maximumTxRingSize, VMXNET3.maximumTxRingSize),
            ("receive", queues.receive, VMXNET3.maximumRxRingSize, VMXNET3.maximumRxRingSize * 2),
        ] {
            let field = "queues.\(kind)"
            if hasQueues {
                try check(
                    (1...Self.maximumQueues).contains(list.count), field,
                    "\(list.count) queues, an activated device has 1...\(Self.maximumQueues)")
            } else {
                try check(list.isEmpty, field, "a device in reset has no queues")
            }
            for (i, q) in list.enumerated() {
                try q.validate("\(field)[\(i)]", ringMaximum: ringMaximum, completionMaximum: completionMaximum, vectors: vectors)
            }
        }

        try check(
            lifecycle.phase == .failed || lifecycle.failureReason.isEmpty, "lifecycle.failureReason", "only an error state has a reason")
        try check(
            lifecycle.failureReason.utf8.count <= Self.maximumFailureReasonBytes, "lifecycle.failureReason",
            "longer than \(Self.maximumFailureReasonBytes) bytes")
        let reasonBits: UInt32 = (1 << UInt32(DropReason.allCases.count)) &- 1
        try check(lifecycle.loggedReasons & ~reasonBits == 0, "lifecycle.loggedReasons", "names a drop reason that does not exist")

        try check(
            counters.device.drops.count == DropReason.allCases.count, "counters.drops",
            "\(counters.device.drops.count) reasons, not \(DropReason.allCases.count)")
        try check(
            counters.earlierVF.count <= Self.maximumEarlierVFCounters, "counters.earlierVF",
            "\(counters.earlierVF.count) entries, at most \(Self.maximumEarlierVFCounters)")
        for name in counters.earlierVF.keys {
            try check(Self.isCounterName(name), "counters.earlierVF", "'\(name)' is not 1-\(Self.maximumCounterNameBytes) of a-z, 0-9, _")
        }
    }

    /// A counter name: 1-64 of `a-z`, `0-9`, `_` (what `npa status` and the counters reply show).
    static func isCounterName(_ name: String) -> Bool {
        let utf8 = name.utf8
        return !utf8.isEmpty && utf8.count <= maximumCounterNameBytes
            && utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5F }
    }
}

extension DeviceState.QueueState {
    /// vmxnet3's ring rules (as ACTIVATE checks them) and positions inside their rings.
    func validate(_ field: String, ringMaximum: UInt32, completionMaximum: UInt32, vectors: Int) throws(DeviceStateError) {
        func check(_ ok: Bool, _ name: String, _ reason: @autoclosure () -> String) throws(DeviceStateError) {
            if !ok { throw .invalid(field: "\(field).\(name)", reason: reason()) }
        }
        func isRingSize(_ size: UInt32, maximum: UInt32) -> Bool {
            size >= VMXNET3.minimumRingSize && size <= maximum && size & (size &- 1) == 0
        }
        try check(
            isRingSize(ringSize, maximum: ringMaximum), "ringSize",
            "\(ringSize) is not a power of two in \(VMXNET3.minimumRingSize)...\(ringMaximum)")
        try check(
            isRingSize(completionSize, maximum: completionMaximum), "completionSize",
            "\(completionSize) is not a power of two in \(VMXNET3.minimumRingSize)...\(completionMaximum)")
        try check(completionSize >= ringSize, "completionSize", "the completion ring is smaller than its ring")
        try check(next < ringSize, "next", "\(next) is not below the ring size \(ringSize)")
        try check(
            completionNext < completionSize, "completionNext", "\(completionNext) is not below the completion ring size \(completionSize)")
        try check(generation <= 1, "generation", "\(generation) is not 0 or 1")
        try check(completionGeneration <= 1, "completionGeneration", "\(completionGeneration) is not 0 or 1")
        try check(ringBase & 15 == 0, "ringBase", "0x\(String(ringBase, radix: 16)) is not 16-byte aligned")
        try check(completionBase & 15 == 0, "completionBase", "0x\(String(completionBase, radix: 16)) is not 16-byte aligned")
        try check(descriptorGPA & 127 == 0, "descriptorGPA", "0x\(String(descriptorGPA, radix: 16)) is not 128-byte aligned")
        try check(Int(vector) < vectors, "vector", "\(vector) is not below the \(vectors) vectors")
    }
}
