import Foundation
@testable import NPAMigration
import Testing

/// The record layer without sockets: the handshake, sealing and opening records, and every way
/// a record is refused — a host without the key, another version or the same role in a hello;
/// a record replayed from another connection, reordered, duplicated, reflected to its sender,
/// truncated, bit-flipped or oversize. Each refusal is final.
@Suite struct AuthenticatedRecordsTests {
    static let key = try! MigrationKey(bytes: Array(repeating: 0x5A, count: 32))
    static let otherKey = try! MigrationKey(bytes: Array(repeating: 0xA5, count: 32))

    /// An initiator and a responder that have exchanged hellos.
    static func pair(
        initiatorKey: MigrationKey = key, responderKey: MigrationKey = key
    ) throws -> (AuthenticatedRecords, AuthenticatedRecords) {
        var a = AuthenticatedRecords(role: .initiator, key: initiatorKey)
        var b = AuthenticatedRecords(role: .responder, key: responderKey)
        a.append(b.hello())
        b.append(a.hello())
        #expect(try a.nextRecord() == nil)
        #expect(try b.nextRecord() == nil)
        return (a, b)
    }

    /// Every record `receiver` yields from `bytes`.
    static func open(_ bytes: [UInt8], into receiver: inout AuthenticatedRecords) throws(MigrationRefusal) -> [AuthenticatedRecords.Record]
    {
        receiver.append(bytes)
        var records: [AuthenticatedRecords.Record] = []
        while let record = try receiver.nextRecord() { records.append(record) }
        return records
    }

    /// The refusal `receiver` raises on `bytes` (and at the end of the stream), nil if none.
    static func refusal(_ bytes: [UInt8], into receiver: inout AuthenticatedRecords) -> MigrationRefusal? {
        do {
            _ = try open(bytes, into: &receiver)
            return receiver.endOfStream()
        } catch {
            return error
        }
    }

    @Test func recordsFlowBothWaysInOrder() throws {
        var (a, b) = try Self.pair()
        #expect(a.isEstablished && b.isEstablished)
        #expect(a.peerNonce == b.localNonce && b.peerNonce == a.localNonce)
        let sent = (0..<5).map { i in a.seal(type: UInt8(i + 1), payload: Array(repeating: UInt8(i), count: i * 100)) }
        let opened = try Self.open(sent.flatMap { $0 }, into: &b)
        #expect(opened.map(\.sequence) == [0, 1, 2, 3, 4])
        #expect(opened.map(\.type) == [1, 2, 3, 4, 5])
        #expect(opened.map(\.payload) == (0..<5).map { i in Array(repeating: UInt8(i), count: i * 100) })
        let reply = try Self.open(b.seal(type: 9, payload: [1, 2, 3]), into: &a)
        #expect(reply == [.init(sequence: 0, type: 9, payload: [1, 2, 3])])
        #expect(b.bufferedBytes == 0 && a.bufferedBytes == 0)
    }

    @Test func bytesArrivingOneAtATimeStillDecode() throws {
        var a = AuthenticatedRecords(role: .initiator, key: Self.key)
        var b = AuthenticatedRecords(role: .responder, key: Self.key)
        a.append(b.hello())
        var stream = a.hello()
        b.append(stream)
        _ = try b.nextRecord()
        _ = try a.nextRecord()
        stream = []
        for i in 0..<3 { stream += a.seal(type: UInt8(i + 1), payload: Array(repeating: 0xEE, count: 50 * i)) }
        var receiver = AuthenticatedRecords(role: .responder, key: Self.key, nonce: b.localNonce)
        receiver.append(a.hello())
        var opened: [AuthenticatedRecords.Record] = []
        for byte in stream {
            receiver.append([byte])
            while let record = try receiver.nextRecord() { opened.append(record) }
        }
        #expect(opened.map(\.type) == [1, 2, 3])
        #expect(receiver.endOfStream() == nil)
    }

    @Test func aHostWithoutTheKeyIsRefusedOnBothSides() {
        var a = AuthenticatedRecords(role: .initiator, key: Self.key)
        var b = AuthenticatedRecords(role: .responder, key: Self.otherKey)
        a.append(b.hello())
        b.append(a.hello())
        #expect(throws: MigrationRefusal.self) { try a.nextRecord() }
        #expect(throws: MigrationRefusal.self) { try b.nextRecord() }
        #expect(a.refusal?.reason == .badHello && b.refusal?.reason == .badHello)
        #expect(!a.isEstablished && !b.isEstablished)
    }

    @Test func aHelloOfAnotherVersionMagicOrTheSameRoleIsRefused() {
        let hello = AuthenticatedRecords(role: .initiator, key: Self.key).hello()
        var version = hello
        version[4] = 2
        var magic = hello
        magic[0] = UInt8(ascii: "X")
        var tag = hello
        tag[hello.count - 1] ^= 1
        var nonce = hello
        nonce[10] ^= 0x80
        let cases: [([UInt8], String)] = [
            (version, "version 2"), (magic, "magic"), (tag, "tag"), (nonce, "tag"),
            (AuthenticatedRecords(role: .responder, key: Self.key).hello(), "role"),
            (Array(hello.prefix(30)), "ended"),
        ]
        for (bytes, detail) in cases {
            // A responder expects an initiator's hello; an initiator's own hello reflected to it is
            // the "responder" hello case above seen from the other side.
            var responder = AuthenticatedRecords(role: .responder, key: Self.key)
            let refusal = Self.refusal(bytes, into: &responder)
            #expect(refusal?.reason == .badHello, "\(detail)")
            #expect(refusal?.detail.contains(detail) == true, "\(refusal?.detail ?? "no refusal") does not say \(detail)")
        }
        // A bad magic is refused as soon as its first byte shows.
        var early = AuthenticatedRecords(role: .responder, key: Self.key)
        #expect(Self.refusal([0x00], into: &early)?.reason == .badHello)
    }

    @Test func aRecordReplayedFromAnotherConnectionIsRefused() throws {
        // Capture what an initiator sent on one connection (hello and records) ...
        var (a, b) = try Self.pair()
        let captured = a.hello() + a.seal(type: 1, payload: [1, 2, 3]) + a.seal(type: 2, payload: [])
        _ = b
        // ... and play it to a fresh responder: the hello is a real one and passes, but the
        // responder's new nonce is in every tag.
        var victim = AuthenticatedRecords(role: .responder, key: Self.key)
        let refusal = Self.refusal(captured, into: &victim)
        #expect(victim.peerNonce == a.localNonce)
        #expect(refusal?.reason == .badTag)
    }

    @Test func reorderedAndDuplicatedRecordsAreRefused() throws {
        var (a, b) = try Self.pair()
        let r = (0..<3).map { a.seal(type: 1, payload: [UInt8($0)]) }
        for order in [[0, 2, 1], [0, 0], [1], [0, 1, 1], [0, 1, 0]] {
            var receiver = b
            let refusal = Self.refusal(order.flatMap { r[$0] }, into: &receiver)
            #expect(refusal?.reason == .badSequence, "\(order)")
        }
        #expect(try Self.open(r.flatMap { $0 }, into: &b).count == 3)
    }

    @Test func aRecordReflectedToItsSenderIsRefused() throws {
        var (a, _) = try Self.pair()
        let record = a.seal(type: 1, payload: [42])
        #expect(Self.refusal(record, into: &a)?.reason == .badTag)
    }

    @Test func everyBitFlipAndTruncationOfARecordIsRefused() throws {
        let (a0, b0) = try Self.pair()
        var a = a0
        let record = a.seal(type: 3, payload: Array("abcdefgh".utf8))
        for bit in 0..<(record.count * 8) {
            var flipped = record
            flipped[bit / 8] ^= 1 << (bit % 8)
            var receiver = b0
            let refusal = Self.refusal(flipped, into: &receiver)
            #expect(refusal != nil, "bit \(bit) flipped went through")
        }
        for cut in 1..<record.count {
            var receiver = b0
            #expect(Self.refusal(Array(record.prefix(cut)), into: &receiver)?.reason == .malformed, "cut at \(cut)")
        }
    }

    @Test func anOversizeLengthIsRefusedBeforeItsBodyArrives() throws {
        let (_, b) = try Self.pair()
        for length in [UInt32.max, UInt32(AuthenticatedRecords.maximumRecordBytes - 3)] {
            var receiver = b
            let header = withUnsafeBytes(of: length.littleEndian) { Array($0) }
            #expect(Self.refusal(header, into: &receiver)?.reason == .oversize)
            #expect(receiver.bufferedBytes == 0)
        }
        var short = b
        #expect(Self.refusal([40, 0, 0, 0], into: &short)?.reason == .malformed)
    }

    @Test func aRefusalIsFinal() throws {
        var (a, b) = try Self.pair()
        var bad = a.seal(type: 1, payload: [1])
        bad[bad.count - 1] ^= 0xFF
        let good = a.seal(type: 1, payload: [2])
        #expect(Self.refusal(bad, into: &b)?.reason == .badTag)
        b.append(good)
        #expect(throws: MigrationRefusal.self) { try b.nextRecord() }
        #expect(b.refusal?.reason == .badTag && !b.isEstablished)
    }

    /// The `migration-records` fuzz seeds (FuzzTesting/make-seeds.py computes their tags in
    /// Python) are records this code opens: the two implementations of the format agree, and
    /// the fuzzer starts past the tag check.
    @Test func theFuzzSeedsAreRealRecords() throws {
        let seed = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "../../FuzzTesting/corpus/migration-records/stream-whole")
        let bytes = try [UInt8](Data(contentsOf: seed))
        let key = try MigrationKey(bytes: Array(repeating: 0x4B, count: 32))
        var responder = AuthenticatedRecords(role: .responder, key: key, nonce: Array(repeating: 0x02, count: 16))
        let records = try Self.open(Array(bytes.dropFirst()), into: &responder)
        let messages = try records.map { try MigrationMessage(type: $0.type, payload: $0.payload[...]) }
        #expect(messages.count == 11)
        #expect(
            messages.first.map { if case .prepare(let r) = $0 { r.guestName == "web-1" && r.vlans == [0, 10] } else { false } } == true)
        #expect(messages.last == .done)
        #expect(responder.peerNonce == Array(repeating: 0x01, count: 16) && responder.endOfStream() == nil)
    }
}
