import NPAControlProtocol

/// The messages two hosts exchange to migrate one vNIC, A the source, B the destination. Each
/// travels as one authenticated record (`AuthenticatedRecords`): the record's type byte is the
/// message type, its payload the body below. Pure encode/decode, no I/O; decoding treats every
/// byte as hostile (bounded, exact, typed errors naming the field, never a trap) and encoding
/// refuses a value the decoder would refuse, so what is sent always decodes.
///
///     type  message           dir    payload (little endian; string = u16 length + UTF-8)
///     1     prepare           A→B    string guest · 6-byte MAC · u16 n · n × 6-byte multicast MAC ·
///                                    u16 m · m × u16 VLAN · u32 rx mode · u32 MTU · u8 TX queues ·
///                                    u8 RX queues · u8 was passthrough (0/1) · string source host
///     2     prepared          B→A    16-byte token · string control socket path
///     3     refused           both   string reason
///     4     deviceState       A→B    u32 length · the encoded DeviceState (1 B – 64 KiB)
///     5     stateAccepted     B→A    —
///     6     guestArrived      B→A    —
///     7     frames            A→B    u16 n (≤ 1024) · n × (u16 length (1 – 16 KiB) · frame)
///     8     announced         B→A    —
///     9     forwardingDone    A→B    —
///     10    abort             both   string reason
///     11    done              both   —
public enum MigrationMessage: Equatable, Sendable {
    /// A asks B to take the guest; B checks capacity, name, MAC and policy.
    case prepare(MigrationRequest)
    /// B accepts: the guest will re-attach to B's control socket presenting the one-time token.
    case prepared(token: [UInt8], controlSocket: String)
    case refused(reason: String)
    /// The stopped vNIC's encoded `DeviceState` (B decodes and validates it as guest input).
    case deviceState([UInt8])
    case stateAccepted
    /// The guest re-attached to B and its device resumed there.
    case guestArrived
    /// Frames that reached A for the guest after it stopped there, oldest first; B delivers them
    /// before newer ones.
    case frames([[UInt8]])
    /// B announced the guest's MAC on its wire.
    case announced
    /// A forwards no more frames.
    case forwardingDone
    case abort(reason: String)
    case done

    public static let tokenBytes = 16
    public static let maximumReasonBytes = 1024
    public static let maximumHostNameBytes = 255
    /// A Unix socket path: sockaddr_un holds 107 bytes and a NUL.
    public static let maximumControlSocketBytes = 107
    public static let maximumDeviceStateBytes = 64 * 1024
    public static let maximumFrameBytes = 16 * 1024
    public static let maximumFramesPerMessage = 1024
    public static let maximumMulticast = 256
    public static let maximumVLAN: UInt16 = 4094
    /// What one record carries: a `frames` message is also bounded by it (split with
    /// `framesMessages(_:)`).
    public static let maximumPayloadBytes = AuthenticatedRecords.maximumPayloadBytes

    private enum Tag: UInt8 {
        case prepare = 1, prepared, refused, deviceState, stateAccepted, guestArrived, frames, announced, forwardingDone, abort, done
    }

    /// The record type and payload. Throws `MigrationMessageError` for a value outside the
    /// format's bounds (a frame over 16 KiB, more than 1024 frames, a bad guest name...);
    /// reasons longer than `maximumReasonBytes` are cut (at a character boundary) instead.
    public func encoded() throws(MigrationMessageError) -> (type: UInt8, payload: [UInt8]) {
        var w = ByteWriter()
        let tag: Tag
        switch self {
        case .prepare(let r):
            tag = .prepare
            try Self.check(r)
            w.string(r.guestName)
            for b in r.mac.bytes { w.u8(b) }
            w.u16(UInt16(r.multicast.count))
            for m in r.multicast { for b in m.bytes { w.u8(b) } }
            w.u16(UInt16(r.vlans.count))
            for v in r.vlans { w.u16(v) }
            w.u32(r.rxMode)
            w.u32(r.mtu)
            w.u8(r.transmitQueues)
            w.u8(r.receiveQueues)
            w.u8(r.wasPassthrough ? 1 : 0)
            w.string(r.sourceHost)
        case .prepared(let token, let controlSocket):
            tag = .prepared
            guard token.count == Self.tokenBytes else {
                throw .invalid(field: "token", reason: "\(token.count) bytes, not \(Self.tokenBytes)")
            }
            try Self.checkLength(controlSocket.utf8.count, 1...Self.maximumControlSocketBytes, "controlSocket")
            for b in token { w.u8(b) }
            w.string(controlSocket)
        case .refused(let reason):
            tag = .refused
            w.string(Self.cut(reason))
        case .deviceState(let state):
            tag = .deviceState
            try Self.checkLength(state.count, 1...Self.maximumDeviceStateBytes, "deviceState")
            w.u32(UInt32(state.count))
            for b in state { w.u8(b) }
        case .stateAccepted: tag = .stateAccepted
        case .guestArrived: tag = .guestArrived
        case .frames(let frames):
            tag = .frames
            try Self.checkLength(frames.count, 0...Self.maximumFramesPerMessage, "frames.count")
            var size = 2
            for (i, frame) in frames.enumerated() {
                try Self.checkLength(frame.count, 1...Self.maximumFrameBytes, "frames[\(i)]")
                size += 2 + frame.count
            }
            try Self.checkLength(size, 0...Self.maximumPayloadBytes, "frames")
            w.u16(UInt16(frames.count))
            for frame in frames {
                w.u16(UInt16(frame.count))
                for b in frame { w.u8(b) }
            }
        case .announced: tag = .announced
        case .forwardingDone: tag = .forwardingDone
        case .abort(let reason):
            tag = .abort
            w.string(Self.cut(reason))
        case .done: tag = .done
        }
        return (tag.rawValue, w.bytes)
    }

    /// Decodes the payload of a record of type `type`.
    public init(type: UInt8, payload: ArraySlice<UInt8>) throws(MigrationMessageError) {
        guard let tag = Tag(rawValue: type) else { throw .unknownType(type) }
        var r = MigrationFieldReader(payload)
        switch tag {
        case .prepare:
            let name = try r.string("guestName", maximumBytes: GuestName.maximumLength)
            let mac = MACAddress(bytes: try r.take(6, "mac"))
            let multicastCount = Int(try r.u16("multicast.count"))
            try Self.checkLength(multicastCount, 0...Self.maximumMulticast, "multicast.count")
            var multicast: [MACAddress] = []
            for i in 0..<multicastCount { multicast.append(MACAddress(bytes: try r.take(6, "multicast[\(i)]"))) }
            let vlanCount = Int(try r.u16("vlans.count"))
            try Self.checkLength(vlanCount, 0...Int(Self.maximumVLAN) + 1, "vlans.count")
            var vlans: [UInt16] = []
            for i in 0..<vlanCount { vlans.append(try r.u16("vlans[\(i)]")) }
            let request = MigrationRequest(
                guestName: name, mac: mac, multicast: multicast, vlans: vlans, rxMode: try r.u32("rxMode"), mtu: try r.u32("mtu"),
                transmitQueues: try r.u8("transmitQueues"), receiveQueues: try r.u8("receiveQueues"),
                wasPassthrough: try r.bool("wasPassthrough"),
                sourceHost: try r.string("sourceHost", maximumBytes: Self.maximumHostNameBytes))
            try Self.check(request)
            self = .prepare(request)
        case .prepared:
            let token = Array(try r.take(Self.tokenBytes, "token"))
            let socket = try r.string("controlSocket", maximumBytes: Self.maximumControlSocketBytes)
            try Self.checkLength(socket.utf8.count, 1...Self.maximumControlSocketBytes, "controlSocket")
            self = .prepared(token: token, controlSocket: socket)
        case .refused: self = .refused(reason: try r.string("reason", maximumBytes: Self.maximumReasonBytes))
        case .deviceState:
            let n = Int(try r.u32("deviceState.length"))
            try Self.checkLength(n, 1...Self.maximumDeviceStateBytes, "deviceState.length")
            self = .deviceState(Array(try r.take(n, "deviceState")))
        case .stateAccepted: self = .stateAccepted
        case .guestArrived: self = .guestArrived
        case .frames:
            let count = Int(try r.u16("frames.count"))
            try Self.checkLength(count, 0...Self.maximumFramesPerMessage, "frames.count")
            var frames: [[UInt8]] = []
            frames.reserveCapacity(count)
            for i in 0..<count {
                let n = Int(try r.u16("frames[\(i)].length"))
                try Self.checkLength(n, 1...Self.maximumFrameBytes, "frames[\(i)].length")
                frames.append(Array(try r.take(n, "frames[\(i)]")))
            }
            self = .frames(frames)
        case .announced: self = .announced
        case .forwardingDone: self = .forwardingDone
        case .abort: self = .abort(reason: try r.string("reason", maximumBytes: Self.maximumReasonBytes))
        case .done: self = .done
        }
        try r.expectEnd()
    }

    /// `frames` split into as few `frames` messages as the bounds allow (count and record size),
    /// order kept. Every frame must be 1 – 16 KiB (else encoding the message throws).
    public static func framesMessages(_ frames: [[UInt8]]) -> [MigrationMessage] {
        var messages: [MigrationMessage] = []
        var batch: [[UInt8]] = []
        var size = 2
        for frame in frames {
            if !batch.isEmpty && (batch.count == maximumFramesPerMessage || size + 2 + frame.count > maximumPayloadBytes) {
                messages.append(.frames(batch))
                batch = []
                size = 2
            }
            batch.append(frame)
            size += 2 + frame.count
        }
        if !batch.isEmpty { messages.append(.frames(batch)) }
        return messages
    }

    /// The checks a request passes both ways (bounds; B applies its own policy afterwards).
    private static func check(_ r: MigrationRequest) throws(MigrationMessageError) {
        guard GuestName.isValid(r.guestName) else { throw .invalid(field: "guestName", reason: GuestName.rule) }
        guard r.mac.isUnicast else { throw .invalid(field: "mac", reason: "\(r.mac) is not a unicast address") }
        try checkLength(r.multicast.count, 0...maximumMulticast, "multicast.count")
        for (i, m) in r.multicast.enumerated() where !m.isMulticast {
            throw .invalid(field: "multicast[\(i)]", reason: "\(m) is not a multicast address")
        }
        try checkLength(r.vlans.count, 0...Int(maximumVLAN) + 1, "vlans.count")
        for (i, v) in r.vlans.enumerated() where v > maximumVLAN {
            throw .invalid(field: "vlans[\(i)]", reason: "\(v) is not a VLAN ID in 0...\(maximumVLAN)")
        }
        try checkLength(r.sourceHost.utf8.count, 0...maximumHostNameBytes, "sourceHost")
    }

    private static func checkLength(_ n: Int, _ range: ClosedRange<Int>, _ field: String) throws(MigrationMessageError) {
        guard range.contains(n) else { throw .invalid(field: field, reason: "\(n), expected \(range.lowerBound)...\(range.upperBound)") }
    }

    /// `reason` cut to `maximumReasonBytes` of UTF-8 without splitting a character.
    private static func cut(_ reason: String) -> String {
        var utf8 = Array(reason.utf8)
        guard utf8.count > maximumReasonBytes else { return reason }
        utf8.removeLast(utf8.count - maximumReasonBytes)
        // Drop the last character if the cut went through it: find its lead byte (skipping
        // 10xxxxxx continuation bytes) and compare the bytes left with the length it announces.
        var lead = utf8.count - 1
        while lead > 0 && utf8[lead] & 0xC0 == 0x80 { lead -= 1 }
        let announced = utf8[lead] < 0x80 ? 1 : utf8[lead] >= 0xF0 ? 4 : utf8[lead] >= 0xE0 ? 3 : 2
        if utf8.count - lead < announced { utf8.removeLast(utf8.count - lead) }
        return String(decoding: utf8, as: UTF8.self)
    }
}
