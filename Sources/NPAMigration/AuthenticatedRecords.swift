import Crypto

/// The record layer of the migration channel, without I/O: it writes this end's hello, checks
/// the peer's, seals outgoing records and opens incoming ones from whatever bytes have arrived
/// (a partial record stays buffered). One value per connection end; the first refusal is final.
///
/// Hello (each end sends one first, 55 bytes):
///
///     magic "NPAM" · u16 version (1) · u8 role (1 initiator, 2 responder) · 16-byte random nonce ·
///     32-byte HMAC-SHA256(key, magic · version · role · nonce)
///
/// Then records, little endian:
///
///     u32 length (of what follows) · u64 sequence · u8 type · payload · 32-byte tag
///     tag = HMAC-SHA256(key, direction · initiator nonce · responder nonce · sequence · type · payload)
///
/// `direction` is the sender's role byte. Sequences count 0, 1, 2… per direction and the
/// receiver expects exactly the next one. So a record is refused if it was altered (tag), comes
/// from a host without the key (tag), from another connection (its nonces are in the tag),
/// reflected back to its sender (the direction is in the tag), or replayed, duplicated or
/// reordered within the connection (sequence). A length over `maximumRecordBytes` is refused
/// before its body is read.
public struct AuthenticatedRecords {
    public enum Role: UInt8, Sendable {
        case initiator = 1
        case responder = 2

        var peer: Role { self == .initiator ? .responder : .initiator }
    }

    /// One verified record.
    public struct Record: Equatable, Sendable {
        public let sequence: UInt64
        public let type: UInt8
        public let payload: [UInt8]
    }

    public static let magic: [UInt8] = Array("NPAM".utf8)
    public static let version: UInt16 = 1
    public static let nonceBytes = 16
    public static let tagBytes = 32
    public static let helloBytes = magic.count + 2 + 1 + nonceBytes + tagBytes
    /// Length field, sequence, type.
    public static let headerBytes = 4 + 8 + 1
    /// A whole record, length field included.
    public static let maximumRecordBytes = 1 << 20
    public static let maximumPayloadBytes = maximumRecordBytes - headerBytes - tagBytes

    public let role: Role
    public let localNonce: [UInt8]
    public private(set) var peerNonce: [UInt8]?
    public private(set) var refusal: MigrationRefusal?
    private let key: SymmetricKey
    private var nextSendSequence: UInt64 = 0
    private var nextReceiveSequence: UInt64 = 0
    /// Received bytes not yet consumed start at `inputStart`.
    private var input: [UInt8] = []
    private var inputStart = 0

    /// `nonce` is for tests and the fuzzer (fixed bytes); by default 16 random bytes.
    public init(role: Role, key: MigrationKey, nonce: [UInt8]? = nil) {
        precondition(nonce == nil || nonce!.count == Self.nonceBytes)
        self.role = role
        self.key = key.symmetricKey
        var generator = SystemRandomNumberGenerator()
        self.localNonce = nonce ?? (0..<Self.nonceBytes).map { _ in UInt8.random(in: 0...255, using: &generator) }
    }

    /// The peer's hello verified: records may flow.
    public var isEstablished: Bool { peerNonce != nil && refusal == nil }
    /// Bytes received and not yet consumed (a partial hello or record).
    public var bufferedBytes: Int { input.count - inputStart }

    /// This end's hello, to send first.
    public func hello() -> [UInt8] {
        var body = Self.magic
        Self.append(Self.version, to: &body)
        body.append(role.rawValue)
        body += localNonce
        return body + Self.authenticate([body], key: key)
    }

    /// Seals one record. Only once established (the tag covers the peer's nonce); the payload
    /// is at most `maximumPayloadBytes` (a `MigrationMessage` never encodes more).
    public mutating func seal(type: UInt8, payload: [UInt8]) -> [UInt8] {
        precondition(isEstablished, "a record sealed before the handshake completed")
        precondition(payload.count <= Self.maximumPayloadBytes)
        var record: [UInt8] = []
        record.reserveCapacity(Self.headerBytes + payload.count + Self.tagBytes)
        Self.append(UInt32(8 + 1 + payload.count + Self.tagBytes), to: &record)
        Self.append(nextSendSequence, to: &record)
        record.append(type)
        record += payload
        record += tag(direction: role, sequence: nextSendSequence, type: type, payload: payload[...])
        nextSendSequence &+= 1
        return record
    }

    /// Adds received bytes.
    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard refusal == nil else { return }
        if inputStart > 0 && inputStart >= input.count / 2 {
            input.removeFirst(inputStart)
            inputStart = 0
        }
        input.append(contentsOf: bytes)
    }

    public mutating func append(_ bytes: [UInt8]) { bytes.withUnsafeBytes { append($0) } }

    /// The next verified record, nil if more bytes are needed. The peer's hello is consumed
    /// first (it yields no record). Throws the refusal, now and on every later call.
    public mutating func nextRecord() throws(MigrationRefusal) -> Record? {
        if let refusal { throw refusal }
        do {
            if peerNonce == nil {
                guard try readHello() else { return nil }
            }
            return try readRecord()
        } catch {
            refusal = error
            input = []
            inputStart = 0
            throw error
        }
    }

    /// The peer closed its end: a refusal if it did so inside a hello or a record.
    public mutating func endOfStream() -> MigrationRefusal? {
        guard refusal == nil, bufferedBytes > 0 else { return nil }
        let refusal =
            peerNonce == nil
            ? MigrationRefusal(.badHello, "the stream ended after \(bufferedBytes) of the hello's \(Self.helloBytes) bytes")
            : MigrationRefusal(.malformed, "the stream ended inside a record (\(bufferedBytes) bytes buffered)")
        self.refusal = refusal
        return refusal
    }

    /// Marks the channel refused for a reason found above this layer (a message that does not
    /// decode, a hello deadline passed).
    public mutating func refuse(_ refusal: MigrationRefusal) {
        if self.refusal == nil { self.refusal = refusal }
    }

    private mutating func readHello() throws(MigrationRefusal) -> Bool {
        guard bufferedBytes >= Self.helloBytes else {
            // Refuse a wrong magic as soon as it shows: it is not our protocol.
            let seen = min(bufferedBytes, Self.magic.count)
            guard input[inputStart..<inputStart + seen].elementsEqual(Self.magic.prefix(seen)) else {
                throw MigrationRefusal(.badHello, "bad magic: not a migration channel")
            }
            return false
        }
        let hello = input[inputStart..<inputStart + Self.helloBytes]
        let body = hello.prefix(Self.helloBytes - Self.tagBytes)
        guard body.prefix(Self.magic.count).elementsEqual(Self.magic) else {
            throw MigrationRefusal(.badHello, "bad magic: not a migration channel")
        }
        let versionStart = body.startIndex + Self.magic.count
        let version = UInt16(body[versionStart]) | UInt16(body[versionStart + 1]) << 8
        guard version == Self.version else {
            throw MigrationRefusal(.badHello, "the peer speaks version \(version), this host \(Self.version)")
        }
        let peerRole = body[versionStart + 2]
        guard peerRole == role.peer.rawValue else {
            throw MigrationRefusal(.badHello, "the peer's hello has role \(peerRole), expected \(role.peer.rawValue) (\(role.peer))")
        }
        guard Self.constantTimeEqual(Self.authenticate([body], key: key), hello.suffix(Self.tagBytes)) else {
            throw MigrationRefusal(.badHello, "the hello's tag does not verify: the peer does not hold this host's migration key")
        }
        peerNonce = Array(body.suffix(Self.nonceBytes))
        inputStart += Self.helloBytes
        return true
    }

    private mutating func readRecord() throws(MigrationRefusal) -> Record? {
        guard bufferedBytes >= 4 else { return nil }
        let length = Int(Self.u32(input, at: inputStart))
        guard length <= Self.maximumRecordBytes - 4 else {
            throw MigrationRefusal(.oversize, "record length \(length), at most \(Self.maximumRecordBytes - 4)")
        }
        guard length >= 8 + 1 + Self.tagBytes else {
            throw MigrationRefusal(.malformed, "record length \(length), at least \(8 + 1 + Self.tagBytes)")
        }
        guard bufferedBytes >= 4 + length else { return nil }
        let start = inputStart + 4
        let sequence = UInt64(Self.u32(input, at: start)) | UInt64(Self.u32(input, at: start + 4)) << 32
        let type = input[start + 8]
        let payload = input[(start + 9)..<(start + length - Self.tagBytes)]
        let received = input[(start + length - Self.tagBytes)..<(start + length)]
        guard Self.constantTimeEqual(tag(direction: role.peer, sequence: sequence, type: type, payload: payload), received) else {
            throw MigrationRefusal(
                .badTag, "record \(nextReceiveSequence): its tag does not verify (altered, replayed from another connection, or reflected)")
        }
        guard sequence == nextReceiveSequence else {
            throw MigrationRefusal(.badSequence, "record sequence \(sequence), expected \(nextReceiveSequence) (replayed or reordered)")
        }
        nextReceiveSequence &+= 1
        inputStart += 4 + length
        return Record(sequence: sequence, type: type, payload: Array(payload))
    }

    private func tag(direction: Role, sequence: UInt64, type: UInt8, payload: ArraySlice<UInt8>) -> [UInt8] {
        guard let peerNonce else { preconditionFailure("a record tag before the handshake") }
        let (initiatorNonce, responderNonce) = role == .initiator ? (localNonce, peerNonce) : (peerNonce, localNonce)
        var header: [UInt8] = [direction.rawValue]
        header += initiatorNonce
        header += responderNonce
        Self.append(sequence, to: &header)
        header.append(type)
        return Self.authenticate([header[...], payload], key: key)
    }

    private static func authenticate(_ parts: [ArraySlice<UInt8>], key: SymmetricKey) -> [UInt8] {
        var mac = HMAC<SHA256>(key: key)
        for part in parts { mac.update(data: part) }
        return Array(mac.finalize())
    }

    private static func authenticate(_ parts: [[UInt8]], key: SymmetricKey) -> [UInt8] {
        authenticate(parts.map { $0[...] }, key: key)
    }

    /// Compares without an early exit, so the time taken does not tell how much of a forged tag
    /// was right.
    private static func constantTimeEqual(_ a: [UInt8], _ b: ArraySlice<UInt8>) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for (x, y) in zip(a, b) { difference |= x ^ y }
        return difference == 0
    }

    private static func append<T: FixedWidthInteger>(_ value: T, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { bytes += $0 }
    }

    private static func u32(_ bytes: [UInt8], at i: Int) -> UInt32 {
        UInt32(bytes[i]) | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2]) << 16 | UInt32(bytes[i + 3]) << 24
    }
}
