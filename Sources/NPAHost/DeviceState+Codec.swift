import NPAControlProtocol
import NPARingFormats

/// The binary form of a `DeviceState`, as migration will send it between hosts. Little endian.
///
///     magic "NPDS" · u16 format version · u16 piece count
///     per piece, in this order: u16 piece id · u16 piece version · u32 payload length · payload
///
///     1 identity    v1  u32 id · string name · mac permanent · mac current · u32 mtu
///     2 filters     v1  u32 rx mode · u16 n · n × mac · u16 m · m × u16 VLAN
///     3 interrupts  v1  u8 vectors · u8 auto-mask · u32 masked · u32 pending
///     4 queues      v1  u8 tx · u8 rx · (tx + rx) × queue
///                       queue: u64 ring base · u32 size · u32 next · u8 gen ·
///                              u64 completion base · u32 size · u32 next · u8 gen ·
///                              u8 vector · u64 queue descriptor GPA
///     5 lifecycle   v1  u8 phase · string error reason · u32 faults · u32 logged reasons
///     6 latches     v1  u32 DSAL · u64 DriverShared GPA · u32 MACL · u32 last CMD result
///     7 counters    v2  9 × u64 · u8 n · n × u64 drops · u8 m · m × (string name · u64)
///                   (v1: the same with the 13 drop reasons before `bad_offload`; read, not written)
///
/// A string is a u16 byte count and UTF-8; a mac is 6 bytes in wire order; a bool is 0 or 1.
///
/// Each piece has its own version, so one component's format can change without the others
/// (Firecracker's persist.rs does the same per device component); a reader refuses a version it
/// does not know rather than guess. Decoding is as strict as guest input — the bytes come from
/// another host: every read is bounds-checked, every count bounded before it is used, every
/// value checked (`validate()`), and the form is canonical (pieces in order, lists sorted,
/// bools 0 or 1, no trailing bytes), so what decodes re-encodes to the same bytes.
extension DeviceState {
    static let magic: [UInt8] = Array("NPDS".utf8)
    static let formatVersion: UInt16 = 1
    /// Drop reasons a version 1 counters piece holds (all before `bad_offload`).
    static let dropReasonsInCountersV1 = 13

    /// The pieces, in their order, with the version this host writes and reads.
    enum Piece: UInt16, CaseIterable {
        case identity = 1, filters, interrupts, queues, lifecycle, latches, counters

        /// The version written. Counters went to 2 when `bad_offload` joined the drop reasons.
        var version: UInt16 { self == .counters ? 2 : 1 }
        /// Versions read: the written one, and counters' v1 (its drops then lack the newer reasons).
        func reads(_ version: UInt16) -> Bool { version == self.version || (self == .counters && version == 1) }
        var name: String { "\(self)" }
    }

    func encoded() -> [UInt8] {
        var w = ByteWriter()
        for b in Self.magic { w.u8(b) }
        w.u16(Self.formatVersion)
        w.u16(UInt16(Piece.allCases.count))
        for piece in Piece.allCases {
            var p = ByteWriter()
            encode(piece, into: &p)
            w.u16(piece.rawValue)
            w.u16(piece.version)
            w.u32(UInt32(p.bytes.count))
            for b in p.bytes { w.u8(b) }
        }
        return w.bytes
    }

    private func encode(_ piece: Piece, into w: inout ByteWriter) {
        func mac(_ m: MACAddress) { for b in m.bytes { w.u8(b) } }
        switch piece {
        case .identity:
            w.u32(identity.id)
            w.string(identity.name)
            mac(identity.permanentMAC)
            mac(identity.mac)
            w.u32(identity.mtu)
        case .filters:
            w.u32(filters.rxMode.rawValue)
            w.u16(UInt16(truncatingIfNeeded: filters.multicast.count))
            for m in filters.multicast { mac(m) }
            w.u16(UInt16(truncatingIfNeeded: filters.vlans.count))
            for v in filters.vlans { w.u16(v) }
        case .interrupts:
            w.u8(interrupts.vectorCount)
            w.u8(interrupts.autoMask ? 1 : 0)
            w.u32(interrupts.masked)
            w.u32(interrupts.pending)
        case .queues:
            w.u8(UInt8(truncatingIfNeeded: queues.transmit.count))
            w.u8(UInt8(truncatingIfNeeded: queues.receive.count))
            for q in queues.transmit + queues.receive {
                w.u64(q.ringBase)
                w.u32(q.ringSize)
                w.u32(q.next)
                w.u8(UInt8(truncatingIfNeeded: q.generation))
                w.u64(q.completionBase)
                w.u32(q.completionSize)
                w.u32(q.completionNext)
                w.u8(UInt8(truncatingIfNeeded: q.completionGeneration))
                w.u8(q.vector)
                w.u64(q.descriptorGPA)
            }
        case .lifecycle:
            w.u8(lifecycle.phase.rawValue)
            w.string(lifecycle.failureReason)
            w.u32(lifecycle.faults)
            w.u32(lifecycle.loggedReasons)
        case .latches:
            w.u32(latches.driverSharedLow)
            w.u64(latches.driverSharedPA)
            w.u32(latches.macLow)
            w.u32(latches.lastCommandResult)
        case .counters:
            let c = counters.device
            for v in [
                c.txFrames, c.txBytes, c.rxFrames, c.rxBytes, c.txBroadcast, c.txMulticast, c.doorbellKicks, c.interruptsRaised,
                c.senderHolds,
            ] {
                w.u64(v)
            }
            w.u8(UInt8(truncatingIfNeeded: c.drops.count))
            for d in c.drops { w.u64(d) }
            w.u8(UInt8(truncatingIfNeeded: counters.earlierVF.count))
            for (name, value) in counters.earlierVF.sorted(by: { $0.key < $1.key }) {
                w.string(name)
                w.u64(value)
            }
        }
    }

    /// Decodes and validates a device state from untrusted bytes. Never traps; every refusal
    /// names the field.
    init(decoding bytes: [UInt8]) throws(DeviceStateError) {
        var r = FieldReader(ByteReader(bytes[...]), piece: "header")
        for b in Self.magic {
            guard try r.u8("magic") == b else { throw .badMagic }
        }
        let format = try r.u16("formatVersion")
        guard format == Self.formatVersion else { throw .unsupportedFormat(format) }
        let count = try r.u16("pieceCount")
        guard count == Piece.allCases.count else {
            throw .invalid(field: "header.pieceCount", reason: "\(count) pieces, format \(format) has \(Piece.allCases.count)")
        }
        var payloads: [FieldReader] = []
        var countersVersion = Piece.counters.version
        for piece in Piece.allCases {
            let id = try r.u16("\(piece.name).id")
            guard id == piece.rawValue else {
                throw .invalid(field: "\(piece.name).id", reason: "piece \(id) where piece \(piece.rawValue) (\(piece.name)) belongs")
            }
            let version = try r.u16("\(piece.name).version")
            guard piece.reads(version) else { throw .unsupportedVersion(piece: piece.name, version: version) }
            if piece == .counters { countersVersion = version }
            let length = Int(try r.u32("\(piece.name).length"))
            guard length <= r.remaining else { throw .truncated(field: "\(piece.name) (\(length) bytes declared, \(r.remaining) left)") }
            payloads.append(FieldReader(ByteReader(try r.raw(length, "\(piece.name).payload")[...]), piece: piece.name))
        }
        guard r.remaining == 0 else { throw .trailingBytes(r.remaining) }

        var p = payloads[0]
        let identity = Identity(
            id: try p.u32("id"), name: try p.string("name"), permanentMAC: try p.mac("permanentMAC"), mac: try p.mac("mac"),
            mtu: try p.u32("mtu"))
        try p.expectEnd()

        p = payloads[1]
        let rxMode = VMXNET3.RxMode(rawValue: try p.u32("rxMode"))
        let multicastCount = Int(try p.u16("multicast.count"))
        guard multicastCount <= Self.maximumMulticast else {
            throw .invalid(field: "filters.multicast.count", reason: "\(multicastCount), at most \(Self.maximumMulticast)")
        }
        var multicast: [MACAddress] = []
        for i in 0..<multicastCount { multicast.append(try p.mac("multicast[\(i)]")) }
        let vlanCount = Int(try p.u16("vlans.count"))
        guard vlanCount <= Int(Self.maximumVLAN) + 1 else {
            throw .invalid(field: "filters.vlans.count", reason: "\(vlanCount), at most \(Int(Self.maximumVLAN) + 1)")
        }
        var vlans: [UInt16] = []
        for i in 0..<vlanCount { vlans.append(try p.u16("vlans[\(i)]")) }
        try p.expectEnd()
        let filters = Filters(rxMode: rxMode, multicast: multicast, vlans: vlans)

        p = payloads[2]
        let interrupts = Interrupts(
            vectorCount: try p.u8("vectorCount"), autoMask: try p.bool("autoMask"), masked: try p.u32("masked"),
            pending: try p.u32("pending"))
        try p.expectEnd()

        p = payloads[3]
        let txCount = Int(try p.u8("transmit.count")), rxCount = Int(try p.u8("receive.count"))
        guard txCount <= Self.maximumQueues else {
            throw .invalid(field: "queues.transmit.count", reason: "\(txCount), at most \(Self.maximumQueues)")
        }
        guard rxCount <= Self.maximumQueues else {
            throw .invalid(field: "queues.receive.count", reason: "\(rxCount), at most \(Self.maximumQueues)")
        }
        var all: [QueueState] = []
        for i in 0..<(txCount + rxCount) {
            let f = i < txCount ? "transmit[\(i)]" : "receive[\(i - txCount)]"
            all.append(
                QueueState(
                    ringBase: try p.u64("\(f).ringBase"), ringSize: try p.u32("\(f).ringSize"), next: try p.u32("\(f).next"),
                    generation: UInt32(try p.u8("\(f).generation")), completionBase: try p.u64("\(f).completionBase"),
                    completionSize: try p.u32("\(f).completionSize"), completionNext: try p.u32("\(f).completionNext"),
                    completionGeneration: UInt32(try p.u8("\(f).completionGeneration")), vector: try p.u8("\(f).vector"),
                    descriptorGPA: try p.u64("\(f).descriptorGPA")))
        }
        try p.expectEnd()
        let queues = Queues(transmit: Array(all[..<txCount]), receive: Array(all[txCount...]))

        p = payloads[4]
        let rawPhase = try p.u8("phase")
        guard let phase = Lifecycle.Phase(rawValue: rawPhase) else {
            throw .invalid(field: "lifecycle.phase", reason: "\(rawPhase) is no device state")
        }
        let lifecycle = Lifecycle(
            phase: phase, failureReason: try p.string("failureReason"), faults: try p.u32("faults"),
            loggedReasons: try p.u32("loggedReasons"))
        try p.expectEnd()

        p = payloads[5]
        let latches = Latches(
            driverSharedLow: try p.u32("driverSharedLow"), driverSharedPA: try p.u64("driverSharedPA"), macLow: try p.u32("macLow"),
            lastCommandResult: try p.u32("lastCommandResult"))
        try p.expectEnd()

        p = payloads[6]
        var device = DeviceCounters()
        device.txFrames = try p.u64("txFrames")
        device.txBytes = try p.u64("txBytes")
        device.rxFrames = try p.u64("rxFrames")
        device.rxBytes = try p.u64("rxBytes")
        device.txBroadcast = try p.u64("txBroadcast")
        device.txMulticast = try p.u64("txMulticast")
        device.doorbellKicks = try p.u64("doorbellKicks")
        device.interruptsRaised = try p.u64("interruptsRaised")
        device.senderHolds = try p.u64("senderHolds")
        let dropCount = Int(try p.u8("drops.count"))
        let versionDrops = countersVersion == 1 ? Self.dropReasonsInCountersV1 : DropReason.allCases.count
        guard dropCount == versionDrops else {
            throw .invalid(field: "counters.drops.count", reason: "\(dropCount) reasons, version \(countersVersion) has \(versionDrops)")
        }
        for i in 0..<dropCount { device.drops[i] = try p.u64("drops[\(i)]") }
        let earlierCount = Int(try p.u8("earlierVF.count"))
        guard earlierCount <= Self.maximumEarlierVFCounters else {
            throw .invalid(field: "counters.earlierVF.count", reason: "\(earlierCount), at most \(Self.maximumEarlierVFCounters)")
        }
        var earlier: [String: UInt64] = [:]
        var previous: String?
        for i in 0..<earlierCount {
            let name = try p.string("earlierVF[\(i)].name")
            // Sorted and unique: one state has one encoding.
            if let previous, !(previous < name) {
                throw .invalid(field: "counters.earlierVF[\(i)].name", reason: "names are not strictly ascending")
            }
            previous = name
            earlier[name] = try p.u64("earlierVF[\(i)].value")
        }
        try p.expectEnd()

        self.init(
            identity: identity, filters: filters, interrupts: interrupts, queues: queues, lifecycle: lifecycle, latches: latches,
            counters: Counters(device: device, earlierVF: earlier))
        try validate()
    }
}

/// A `ByteReader` whose every read names the field it was reading when the bytes ran out.
private struct FieldReader {
    var reader: ByteReader
    let piece: String

    init(_ reader: ByteReader, piece: String) {
        self.reader = reader
        self.piece = piece
    }

    var remaining: Int { reader.remaining }

    private func truncated(_ field: String) -> DeviceStateError { .truncated(field: "\(piece).\(field)") }

    mutating func u8(_ field: String) throws(DeviceStateError) -> UInt8 {
        do { return try reader.u8() } catch { throw truncated(field) }
    }
    mutating func u16(_ field: String) throws(DeviceStateError) -> UInt16 {
        do { return try reader.u16() } catch { throw truncated(field) }
    }
    mutating func u32(_ field: String) throws(DeviceStateError) -> UInt32 {
        do { return try reader.u32() } catch { throw truncated(field) }
    }
    mutating func u64(_ field: String) throws(DeviceStateError) -> UInt64 {
        do { return try reader.u64() } catch { throw truncated(field) }
    }
    mutating func raw(_ count: Int, _ field: String) throws(DeviceStateError) -> [UInt8] {
        do { return try reader.raw(count) } catch { throw truncated(field) }
    }
    mutating func bool(_ field: String) throws(DeviceStateError) -> Bool {
        let v = try u8(field)
        guard v <= 1 else { throw .invalid(field: "\(piece).\(field)", reason: "\(v) is not 0 or 1") }
        return v == 1
    }
    mutating func mac(_ field: String) throws(DeviceStateError) -> MACAddress {
        MACAddress(bytes: try raw(6, field))
    }
    mutating func string(_ field: String) throws(DeviceStateError) -> String {
        let count = Int(try u16("\(field).length"))
        let bytes = try raw(count, field)
        guard let s = String(validating: bytes, as: UTF8.self) else { throw .invalid(field: "\(piece).\(field)", reason: "not UTF-8") }
        return s
    }
    func expectEnd() throws(DeviceStateError) {
        guard reader.remaining == 0 else { throw .invalid(field: piece, reason: "\(reader.remaining) bytes after its last field") }
    }
}
