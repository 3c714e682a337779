import NPAControlProtocol
@testable import NPAMigration
import Testing

/// The migration message codec: every message survives encode → decode; every truncation,
/// trailing byte and out-of-bounds field is refused with an error naming the field (never a
/// trap); the encoder refuses what the decoder would.
@Suite struct MigrationMessageTests {
    static let request = MigrationRequest(
        guestName: "web-1.a", mac: MACAddress("02:00:00:00:00:0a")!,
        multicast: [MACAddress("01:00:5e:00:00:01")!, MACAddress("33:33:00:00:00:01")!], vlans: [0, 10, 4094], rxMode: 0x1F, mtu: 9000,
        transmitQueues: 2, receiveQueues: 4, wasPassthrough: true, sourceHost: "host-a")

    static let everyMessage: [MigrationMessage] = [
        .prepare(request),
        .prepare(
            MigrationRequest(
                guestName: "g", mac: MACAddress("02:00:00:00:00:01")!, multicast: [], vlans: [], rxMode: 0, mtu: 1500, transmitQueues: 1,
                receiveQueues: 1, wasPassthrough: false, sourceHost: "")),
        .prepared(token: Array(0..<16), controlSocket: "/tmp/npa-b.sock"),
        .refused(reason: "name web-1.a is in use"),
        .deviceState(Array(repeating: 0xAB, count: 65536)),
        .deviceState([1]),
        .stateAccepted,
        .guestArrived,
        .frames([]),
        .frames([Array(repeating: 7, count: 60), Array(repeating: 9, count: 16384), [1]]),
        .announced,
        .forwardingDone,
        .abort(reason: "guest did not re-attach within 2000 ms"),
        .abort(reason: ""),
        .done,
    ]

    static func roundTrip(_ m: MigrationMessage) throws -> MigrationMessage {
        let (type, payload) = try m.encoded()
        return try MigrationMessage(type: type, payload: payload[...])
    }

    @Test func everyMessageSurvivesARoundTrip() throws {
        for message in Self.everyMessage {
            #expect(try Self.roundTrip(message) == message)
        }
    }

    @Test func everyTruncationAndTrailingByteIsRefused() throws {
        for message in Self.everyMessage {
            let (type, payload) = try message.encoded()
            // Every cut of the small ones; the 64 KiB ones at the field edges and a sample between.
            let cuts =
                payload.count <= 1024
                ? Array(0..<payload.count)
                : [0, 1, 2, 3, 4, 5, 6] + Array(stride(from: 7, to: payload.count, by: 997)) + [payload.count - 1]
            for cut in cuts {
                #expect(throws: MigrationMessageError.self) { try MigrationMessage(type: type, payload: payload[0..<cut]) }
            }
            #expect(throws: MigrationMessageError.trailingBytes(1)) { try MigrationMessage(type: type, payload: (payload + [0])[...]) }
        }
    }

    @Test func unknownTypesAreRefused() {
        for type: UInt8 in [0, 12, 200, 255] {
            #expect(throws: MigrationMessageError.unknownType(type)) { try MigrationMessage(type: type, payload: [][...]) }
        }
    }

    /// Decoding the payload of `message` with byte `offset` replaced by `value` throws an error naming `field`.
    func expectRefused(_ message: MigrationMessage, patching offset: Int, with value: [UInt8], field: String) throws {
        var (type, payload) = try message.encoded()
        payload.replaceSubrange(offset..<offset + value.count, with: value)
        do {
            let decoded = try MigrationMessage(type: type, payload: payload[...])
            Issue.record("decoded \(decoded), expected a refusal of \(field)")
        } catch {
            #expect("\(error)".contains(field), "\(error) does not name \(field)")
        }
    }

    @Test func outOfBoundsFieldsAreRefusedByName() throws {
        let prepare = MigrationMessage.prepare(Self.request)
        // guest name: u16 length 7 at 0, then "web-1.a"; MAC at 9; multicast count at 15.
        try expectRefused(prepare, patching: 2, with: Array("web 1.a".utf8), field: "guestName")
        try expectRefused(prepare, patching: 0, with: [65, 0], field: "guestName")
        try expectRefused(prepare, patching: 9, with: [0x01], field: "mac")
        try expectRefused(prepare, patching: 15, with: [0x01, 0x01], field: "multicast.count")
        try expectRefused(prepare, patching: 17, with: [0x02], field: "multicast[0]")
        // VLAN count at 29, VLANs at 31.
        try expectRefused(prepare, patching: 29, with: [0x00, 0x10], field: "vlans.count")
        try expectRefused(prepare, patching: 31, with: [0xFF, 0x0F], field: "vlans[0]")
        // rx mode 37, MTU 41, queues 45/46, passthrough 47, source host 48.
        try expectRefused(prepare, patching: 47, with: [2], field: "wasPassthrough")
        try expectRefused(prepare, patching: 48, with: [0, 1], field: "sourceHost")
        try expectRefused(.deviceState([1, 2]), patching: 0, with: [0, 0, 0, 0], field: "deviceState.length")
        try expectRefused(.deviceState([1, 2]), patching: 0, with: [1, 0, 1, 0], field: "deviceState.length")
        try expectRefused(.frames([[1]]), patching: 0, with: [0x01, 0x04], field: "frames.count")
        try expectRefused(.frames([[1]]), patching: 2, with: [0, 0], field: "frames[0].length")
        try expectRefused(.frames([[1]]), patching: 2, with: [0x01, 0x40], field: "frames[0].length")
        try expectRefused(.refused(reason: "é"), patching: 2, with: [0xC3, 0x28], field: "reason")
        try expectRefused(.prepared(token: Array(0..<16), controlSocket: "/s"), patching: 16, with: [0, 0], field: "controlSocket")
    }

    @Test func theEncoderRefusesWhatTheDecoderWould() {
        var badName = Self.request
        badName.guestName = "no spaces"
        var multicastMAC = Self.request
        multicastMAC.mac = MACAddress("01:00:5e:00:00:01")!
        var unicastFilter = Self.request
        unicastFilter.multicast = [MACAddress("02:00:00:00:00:01")!]
        var badVLAN = Self.request
        badVLAN.vlans = [4095]
        let refusals: [(MigrationMessage, String)] = [
            (.prepare(badName), "guestName"), (.prepare(multicastMAC), "mac"), (.prepare(unicastFilter), "multicast[0]"),
            (.prepare(badVLAN), "vlans[0]"), (.prepared(token: [1, 2], controlSocket: "/s"), "token"),
            (.prepared(token: Array(0..<16), controlSocket: ""), "controlSocket"),
            (.prepared(token: Array(0..<16), controlSocket: String(repeating: "s", count: 108)), "controlSocket"),
            (.deviceState([]), "deviceState"), (.deviceState(Array(repeating: 0, count: 65537)), "deviceState"),
            (.frames([[]]), "frames[0]"), (.frames([Array(repeating: 0, count: 16385)]), "frames[0]"),
            (.frames(Array(repeating: [1], count: 1025)), "frames.count"),
            (.frames(Array(repeating: Array(repeating: 0, count: 16384), count: 64)), "frames"),
        ]
        for (message, field) in refusals {
            do {
                _ = try message.encoded()
                Issue.record("encoded \(field) out of bounds")
            } catch {
                #expect("\(error)".contains(field), "\(error) does not name \(field)")
            }
        }
    }

    @Test func framesSplitIntoMessagesThatEachFitARecord() throws {
        let frames = (0..<1500).map { i in Array(repeating: UInt8(truncatingIfNeeded: i), count: i % 3 == 0 ? 16384 : 64) }
        let messages = MigrationMessage.framesMessages(frames)
        var joined: [[UInt8]] = []
        for message in messages {
            guard case .frames(let batch) = try Self.roundTrip(message) else {
                Issue.record("not a frames message")
                continue
            }
            joined += batch
        }
        #expect(joined == frames)
        #expect(messages.count > 1)
        #expect(MigrationMessage.framesMessages([]).isEmpty)
    }

    @Test func longReasonsAreCutAtACharacterBoundary() throws {
        for prefix in ["", "a", "ab"] {
            let reason = prefix + String(repeating: "é€😀", count: 200)
            guard case .abort(let sent) = try Self.roundTrip(.abort(reason: reason)) else {
                Issue.record("not an abort")
                continue
            }
            #expect(sent.utf8.count <= MigrationMessage.maximumReasonBytes)
            #expect(sent.utf8.count > MigrationMessage.maximumReasonBytes - 4)
            #expect(reason.hasPrefix(sent))
        }
    }
}
