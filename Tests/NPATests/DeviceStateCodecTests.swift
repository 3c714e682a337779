import Foundation
import NPAControlProtocol
@testable import NPAHost
import NPARingFormats
import Testing

/// The device-state codec: what it encodes decodes to the same value and re-encodes to the same
/// bytes; every truncation and every corrupted field is refused with an error naming the field.
@Suite struct DeviceStateCodecTests {
    /// An activated device with something in every piece.
    static func sample() -> DeviceState {
        var s = DeviceState.initial(id: 7, name: "guest-a.1", mac: MACAddress("02:00:00:00:07:01")!, vectorCount: 3)
        s.identity.mac = MACAddress("02:00:00:00:07:02")!
        s.identity.mtu = 9000
        s.filters = .init(
            rxMode: [.unicast, .broadcast, .multicast], multicast: [MACAddress("01:00:5e:00:00:01")!, MACAddress("33:33:00:00:00:01")!],
            vlans: [0, 10, 4094])
        s.interrupts = .init(vectorCount: 3, autoMask: true, masked: 0b101, pending: 0b010)
        func queue(_ base: UInt64, vector: UInt8) -> DeviceState.QueueState {
            .init(
                ringBase: base, ringSize: 256, next: 255, generation: 0, completionBase: base + 4096, completionSize: 512,
                completionNext: 3, completionGeneration: 1, vector: vector, descriptorGPA: 0x10000 + UInt64(vector) * 256)
        }
        s.queues = .init(transmit: [queue(0x20000, vector: 0), queue(0x30000, vector: 1)], receive: [queue(0x40000, vector: 2)])
        s.lifecycle = .init(phase: .failed, failureReason: "256 descriptor faults", faults: 256, loggedReasons: 0b1001)
        s.latches = .init(driverSharedLow: 0x8000, driverSharedPA: 0x8000, macLow: 0x0000_0202, lastCommandResult: 1)
        s.counters.device.txFrames = 12345
        s.counters.device.rxBytes = 1 << 40
        s.counters.device.drops[DropReason.noBuffers.rawValue] = 9
        s.counters.earlierVF = ["vf_tx_frames": 77, "drop_vf_no_buffers": 2]
        return s
    }

    /// The byte offset of `piece`'s payload in an encoding.
    static func payloadOffset(_ bytes: [UInt8], _ piece: DeviceState.Piece) -> Int {
        var offset = 8
        for p in DeviceState.Piece.allCases {
            if p == piece { return offset + 8 }
            let length = Int(bytes[offset + 4]) | Int(bytes[offset + 5]) << 8 | Int(bytes[offset + 6]) << 16 | Int(bytes[offset + 7]) << 24
            offset += 8 + length
        }
        fatalError("no piece \(piece)")
    }

    func refusal(_ bytes: [UInt8]) -> DeviceStateError? {
        do {
            _ = try DeviceState(decoding: bytes)
            return nil
        } catch {
            return error
        }
    }

    @Test func aStateRoundTripsToTheSameValueAndTheSameBytes() throws {
        for state in [Self.sample(), DeviceState.initial(id: 1, name: "a", mac: MACAddress("02:4e:50:00:00:01")!, vectorCount: 25)] {
            try state.validate()
            let bytes = state.encoded()
            let decoded = try DeviceState(decoding: bytes)
            #expect(decoded == state)
            #expect(decoded.encoded() == bytes)
        }
    }

    @Test func everyTruncationIsRefusedNamingWhereTheBytesEnded() {
        let bytes = Self.sample().encoded()
        for length in 0..<bytes.count {
            let error = refusal(Array(bytes[..<length]))
            guard case .truncated(let field) = error else {
                Issue.record("a \(length)-byte prefix of \(bytes.count) gave \(String(describing: error))")
                continue
            }
            #expect(!field.isEmpty)
        }
    }

    @Test func corruptedHeadersAndPiecesAreRefused() {
        let good = Self.sample().encoded()
        func patched(_ offset: Int, _ value: UInt8) -> [UInt8] {
            var b = good
            b[offset] = value
            return b
        }
        let interrupts = Self.payloadOffset(good, .interrupts)
        #expect(refusal(patched(0, UInt8(ascii: "X"))) == .badMagic)
        #expect(refusal(patched(4, 2)) == .unsupportedFormat(2))
        #expect(refusal(patched(6, 8)) == .invalid(field: "header.pieceCount", reason: "8 pieces, format 1 has 7"))
        #expect(refusal(patched(8, 2)) == .invalid(field: "identity.id", reason: "piece 2 where piece 1 (identity) belongs"))
        #expect(refusal(patched(interrupts - 6, 9)) == .unsupportedVersion(piece: "interrupts", version: 9))
        #expect(refusal(patched(interrupts + 1, 2)) == .invalid(field: "interrupts.autoMask", reason: "2 is not 0 or 1"))
        #expect(refusal(good + [0]) == .trailingBytes(1))
        // A piece longer than its fields: its declared length grows by one, a byte is added.
        var longer = good
        longer[interrupts - 4] &+= 1
        longer.insert(0, at: interrupts + 10)
        #expect(refusal(longer) == .invalid(field: "interrupts", reason: "1 bytes after its last field"))
        let queues = Self.payloadOffset(good, .queues)
        #expect(refusal(patched(queues, 33)) == .invalid(field: "queues.transmit.count", reason: "33, at most 32"))
        let lifecycle = Self.payloadOffset(good, .lifecycle)
        #expect(refusal(patched(lifecycle, 4)) == .invalid(field: "lifecycle.phase", reason: "4 is no device state"))
        let identity = Self.payloadOffset(good, .identity)
        #expect(refusal(patched(identity + 6, 0xFF)) == .invalid(field: "identity.name", reason: "not UTF-8"))
    }

    /// Values the decoder must refuse even when the bytes are well formed: each a state with one
    /// bad field, encoded as it is.
    @Test func aWellFormedStateWithAnInvalidFieldIsRefused() {
        let corruptions: [(String, (inout DeviceState) -> Void)] = [
            ("queues.transmit[0].ringSize", { (s: inout DeviceState) in s.queues.transmit[0].ringSize = 384 }),
            ("queues.transmit[0].ringSize", { (s: inout DeviceState) in s.queues.transmit[0].ringSize = 8192 }),
            ("queues.receive[0].completionSize", { (s: inout DeviceState) in s.queues.receive[0].completionSize = 128 }),
            ("queues.transmit[1].next", { (s: inout DeviceState) in s.queues.transmit[1].next = 256 }),
            ("queues.receive[0].completionNext", { (s: inout DeviceState) in s.queues.receive[0].completionNext = 512 }),
            ("queues.transmit[0].generation", { (s: inout DeviceState) in s.queues.transmit[0].generation = 2 }),
            ("queues.receive[0].completionGeneration", { (s: inout DeviceState) in s.queues.receive[0].completionGeneration = 255 }),
            ("queues.transmit[0].ringBase", { (s: inout DeviceState) in s.queues.transmit[0].ringBase += 8 }),
            ("queues.receive[0].vector", { (s: inout DeviceState) in s.queues.receive[0].vector = 3 }),
            ("queues.receive", { (s: inout DeviceState) in s.queues.receive = [] }),
            ("queues.transmit", { (s: inout DeviceState) in s.lifecycle.phase = .reset }),
            ("identity.name", { (s: inout DeviceState) in s.identity.name = "no spaces" }),
            ("identity.name", { (s: inout DeviceState) in s.identity.name = "" }),
            ("identity.id", { (s: inout DeviceState) in s.identity.id = 0 }),
            ("identity.mac", { (s: inout DeviceState) in s.identity.mac = .broadcast }),
            ("identity.mtu", { (s: inout DeviceState) in s.identity.mtu = 9001 }),
            ("filters.rxMode", { (s: inout DeviceState) in s.filters.rxMode = .init(rawValue: 0x20) }),
            ("filters.multicast[1]", { (s: inout DeviceState) in s.filters.multicast.reverse() }),
            ("filters.multicast[0]", { (s: inout DeviceState) in s.filters.multicast[0] = MACAddress("02:00:00:00:00:01")! }),
            ("filters.vlans", { (s: inout DeviceState) in s.filters.vlans.removeFirst() }),
            ("filters.vlans[2]", { (s: inout DeviceState) in s.filters.vlans[2] = 4095 }),
            ("filters.vlans[2]", { (s: inout DeviceState) in s.filters.vlans[2] = 10 }),
            ("interrupts.vectorCount", { (s: inout DeviceState) in s.interrupts.vectorCount = 26 }),
            ("interrupts.masked", { (s: inout DeviceState) in s.interrupts.masked = 0b1000 }),
            ("interrupts.pending", { (s: inout DeviceState) in s.interrupts.pending = 1 << 31 }),
            ("lifecycle.failureReason", { (s: inout DeviceState) in s.lifecycle.phase = .active }),
            ("lifecycle.loggedReasons", { (s: inout DeviceState) in s.lifecycle.loggedReasons = 1 << 20 }),
            ("counters.earlierVF", { (s: inout DeviceState) in s.counters.earlierVF["Bad Name"] = 1 }),
        ]
        for (field, corrupt) in corruptions {
            var state = Self.sample()
            corrupt(&state)
            guard case .invalid(let named, let reason) = refusal(state.encoded()) else {
                Issue.record("\(field): not refused as invalid")
                continue
            }
            #expect(named == field, "\(reason)")
            #expect(!reason.isEmpty)
        }
    }
}

extension DeviceStateCodecTests {
    /// The fuzzer's seeds (FuzzTesting/make-seeds.py) are states this codec reads: a format
    /// change that forgets them fails here, not silently in a fuzz run that only sees refusals.
    @Test func theFuzzSeedsDecodeAndReencodeUnchanged() throws {
        let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "../../FuzzTesting/corpus/device-state"
        ).standardized
        let files = try FileManager.default.contentsOfDirectory(at: directory, includingPropertiesForKeys: nil)
        #expect(files.count >= 4)
        for file in files {
            let bytes = [UInt8](try Data(contentsOf: file))
            let state = try DeviceState(decoding: bytes)
            #expect(state.encoded() == bytes, "\(file.lastPathComponent)")
        }
    }

    /// Counters version 1 (before `bad_offload` joined the drop reasons: 13 of them) is still
    /// read, the newer reason at 0; what is written is version 2.
    @Test func aVersion1CountersPieceIsReadWithTheNewerDropReasonsAtZero() throws {
        var state = Self.sample()
        state.counters.device.drops[DropReason.badOffload.rawValue] = 0
        let current = state.encoded()
        let header = Self.payloadOffset(current, .counters) - 8
        #expect(current[header + 2] == 2)
        // v1: the same payload with one drop counter fewer (the last, bad_offload).
        let dropsCount = header + 8 + 9 * 8
        #expect(Int(current[dropsCount]) == DropReason.allCases.count)
        var old = Array(current[..<dropsCount]) + [UInt8(DeviceState.dropReasonsInCountersV1)]
        old += current[(dropsCount + 1)..<(dropsCount + 1 + 13 * 8)]
        old += current[(dropsCount + 1 + 14 * 8)...]
        old[header + 2] = 1
        let length = Int(current[header + 4]) | Int(current[header + 5]) << 8 - 8
        old[header + 4] = UInt8(length & 0xFF)
        old[header + 5] = UInt8(length >> 8)
        let decoded = try DeviceState(decoding: old)
        #expect(decoded == state)
        #expect(decoded.encoded() == current)
    }
}
