import Foundation
import NPAControlProtocol
import NPATestSupport
import NPAWorkload
import Testing

@Suite struct ControlProtocolTests {
    static let samples: [ControlMessage] = [
        .attach(.init(name: "alpha", mac: MACAddress("02:00:00:00:00:0a"), interruptVectors: 1)),
        .attach(.init(name: "beta", mac: nil, interruptVectors: 3)),
        .attached(.init(vnicID: 7, mac: MACAddress(value: 0x0200_0000_0001), maxTxQueues: 4, maxRxQueues: 2)),
        .registerWrite(bar: 1, offset: 0x20, value: 0xCAFE_0000),
        .registerRead(bar: 1, offset: 0x28),
        .registerResult(status: 3, value: 1, message: "refused by policy"),
        .statusRequest,
        .statusReply(json: "{\"vnics\":[]}"),
        .countersRequest,
        .countersReply([.init("tx_frames", 5), .init("drop_no_buffers", 1)]),
        .detach,
        .error(code: 1, message: "malformed"),
        .switchQuery,
        .switchOffer(.init(kind: .switchIn, vf: 3, model: "npa-cq", plugin: "npa-cq-swift")),
        .switchOffer(.init(kind: .none)),
        .switchInReady(
            txRegions: [.init(gpa: 0x10000, ringSize: 256)],
            rxRegions: [.init(gpa: 0x20000, ringSize: 256), .init(gpa: 0x30000, ringSize: 512)], plugin: "npa-cq-swift 1.0"),
        .switchOutBegin,
        .switchOutDone,
        .adminSwitch(vnic: "alpha", toPassthrough: true),
        .adminMigrate(vnic: "alpha", to: "127.0.0.1:7470"),
        .ok("switched"),
        .adminResetVF(vnic: "beta"),
        .switchInFailed(reason: "plugin image does not load"),
        .pluginFault(reason: "VF disabled under the plugin"),
        .peerQuery(mac: MACAddress(value: 0x0200_0000_0002)),
        .peerReply(mac: MACAddress(value: 0x0200_0000_0002), active: true),
        .switchOffer(
            .init(kind: .move, destination: .init(controlSocket: "/run/npa/b.sock", token: MoveToken(bytes: Array(100..<116))))),
        .resume(.init(token: MoveToken(bytes: Array(0..<16)), name: "alpha", interruptVectors: 1)),
        .moved,
        .moveFailed(reason: "the destination refused the token"),
        .eventsRequest(after: 41),
        .eventsReply(
            HostEventBatch(
                oldestHeld: 3, latest: 4, capacity: 1024,
                events: [
                    HostEvent(
                        sequence: 3, uptimeNanoseconds: 10, wallClockNanoseconds: 20, kind: .attach, vnic: "alpha", detail: "attached"),
                    HostEvent(sequence: 4, uptimeNanoseconds: 11, wallClockNanoseconds: 21, kind: .refusal, vnic: nil, detail: "no"),
                ])),
    ]

    @Test(arguments: samples)
    func everyMessageRoundTrips(_ message: ControlMessage) throws {
        #expect(try ControlMessage.parse(message.encode()) == message)
    }

    /// The move kind added fields after the offer's others, for itself alone: the other kinds
    /// are the bytes they were (a shell that predates moves reads them as before).
    @Test func switchOffersOtherThanAMoveKeepTheirBytes() {
        let header: [UInt8] = [0x4E, 0x50, 0x41, 0x31, 2, 0, 17, 0]
        #expect(ControlMessage.switchOffer(.init(kind: .none)).encode() == header + [7, 0, 0, 0] + [0, 0, 0, 0, 0, 0, 0])
        #expect(
            ControlMessage.switchOffer(.init(kind: .switchOut, vf: 3)).encode() == header + [7, 0, 0, 0] + [2, 3, 0, 0, 0, 0, 0])
    }

    /// A token is 16 bytes on the wire or the message is refused.
    @Test func aMoveTokenOfAnotherLengthDoesNotParse() {
        for length in [0, 15, 17] {
            let message = ControlMessage.resume(
                .init(token: MoveToken(bytes: Array(repeating: 1, count: length)), name: "a", interruptVectors: 1))
            #expect(throws: ProtocolError("a move token has 16 bytes, not \(length)")) { try ControlMessage.parse(message.encode()) }
        }
        #expect(MoveToken.random() != MoveToken.random() && MoveToken.random().isWellFormed)
    }

    /// The fuzzer's seeds for the move messages (`FuzzTesting/make-seeds.py`) are messages this
    /// protocol parses, so the fuzzer starts from inside the parser, not at its version check.
    @Test func theMoveSeedsOfTheControlMessageFuzzerParse() throws {
        let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("FuzzTesting/corpus/control-message")
        for seed in ["switch-offer-move", "resume", "moved", "move-failed"] {
            let bytes = try [UInt8](Data(contentsOf: corpus.appendingPathComponent(seed)))
            let message = try ControlMessage.parse(bytes)
            #expect(message.encode() == bytes, "\(seed)")
        }
    }

    @Test func truncatedMessagesAreRejectedNotTrapped() {
        for message in Self.samples {
            let bytes = message.encode()
            for cut in 0..<bytes.count {
                #expect(throws: ProtocolError.self) { try ControlMessage.parse(Array(bytes[0..<cut])) }
            }
        }
    }

    @Test func headerIsCheckedField_by_field() {
        var bytes = ControlMessage.statusRequest.encode()
        bytes[0] ^= 0xFF
        #expect(throws: ProtocolError("bad magic")) { try ControlMessage.parse(bytes) }
        bytes = ControlMessage.statusRequest.encode()
        bytes[4] = 9
        #expect(throws: ProtocolError.self) { try ControlMessage.parse(bytes) }
        bytes = ControlMessage.statusRequest.encode()
        bytes[6] = 200
        #expect(throws: ProtocolError("unknown message type 200")) { try ControlMessage.parse(bytes) }
        bytes = ControlMessage.statusRequest.encode() + [0]
        #expect(throws: ProtocolError.self) { try ControlMessage.parse(bytes) }
    }

    /// A deterministic fuzz: random mutations of valid messages and random bytes never trap.
    @Test func randomBytesNeverTrapTheParser() {
        var rng = SplitMix(seed: 0x5EED)
        var parsed = 0
        for i in 0..<20_000 {
            var bytes: [UInt8]
            if i % 2 == 0 {
                bytes = Self.samples[Int(rng.next() % UInt64(Self.samples.count))].encode()
                for _ in 0..<Int(rng.next() % 4 + 1) where !bytes.isEmpty {
                    bytes[Int(rng.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: rng.next())
                }
            } else {
                bytes = (0..<Int(rng.next() % 64)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            }
            if (try? ControlMessage.parse(bytes)) != nil { parsed += 1 }
        }
        #expect(parsed < 20_000)
    }

    @Test func macAddressesParseAndPrint() {
        let mac = MACAddress("02:AB:cd:00:10:ff")
        #expect(mac?.description == "02:ab:cd:00:10:ff")
        #expect(mac?.isUnicast == true)
        #expect(MACAddress("01:00:5e:00:00:01")?.isMulticast == true)
        #expect(MACAddress.broadcast.isBroadcast)
        #expect(MACAddress("02:00:00:00:00") == nil)
        #expect(MACAddress("zz:00:00:00:00:00") == nil)
        #expect(MACAddress("002:00:00:00:00:00") == nil)
    }
}
