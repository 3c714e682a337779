import NPAControlProtocol
import Testing

/// The live-policy messages (types 40-42): each round-trips, and a hostile or truncated one is
/// refused by the parser without trapping.
@Suite struct PolicyMessageTests {
    static let samples: [ControlMessage] = [
        .policySet(PolicyChange(guest: "alpha", vlans: [0, 10])),
        .policySet(PolicyChange(guest: "alpha", macs: .any, allowPromiscuous: false)),
        .policySet(
            PolicyChange(
                guest: "beta", macs: .only([MACAddress("02:00:00:00:00:0a")!, MACAddress("02:00:00:00:00:0b")!]), vlans: [],
                allowPromiscuous: true, allowPassthrough: false)),
        .policySet(PolicyChange(guest: "gamma")),
        .policyRequest(guest: ""),
        .policyRequest(guest: "alpha"),
        .policyReply(json: PolicyReport(guests: []).json()),
    ]

    @Test(arguments: samples)
    func everyPolicyMessageRoundTrips(_ message: ControlMessage) throws {
        #expect(try ControlMessage.parse(message.encode()) == message)
    }

    @Test func theyAreAdministrative() {
        for message in Self.samples where message != .policyReply(json: PolicyReport(guests: []).json()) {
            #expect(message.isAdministrative, "\(message)")
        }
    }

    @Test func aTruncatedOrHostileChangeIsRefusedByTheParser() throws {
        let full = ControlMessage.policySet(PolicyChange(guest: "a", vlans: [0, 10], allowPassthrough: true)).encode()
        // Every shorter payload (with a header that says so) fails to parse, never traps.
        for cut in ControlMessage.headerSize..<full.count {
            var bytes = Array(full[..<cut])
            let length = UInt32(cut - ControlMessage.headerSize)
            withUnsafeBytes(of: length.littleEndian) { bytes.replaceSubrange(8..<12, with: $0) }
            #expect(throws: ProtocolError.self) { try ControlMessage.parse(bytes) }
        }
        func payload(_ build: (inout ByteWriter) -> Void) -> [UInt8] {
            var p = ByteWriter()
            build(&p)
            var out = ByteWriter()
            out.u32(ControlMessage.magic)
            out.u16(ControlMessage.version)
            out.u16(40)
            out.u32(UInt32(p.bytes.count))
            return out.bytes + p.bytes
        }
        let unknownField = payload {
            $0.string("a")
            $0.u8(0x10)
        }
        #expect(throws: ProtocolError("unknown policy fields 0x10")) { try ControlMessage.parse(unknownField) }
        let tooMany = payload {
            $0.string("a")
            $0.u8(2)
            $0.u16(5000)
        }
        #expect(throws: ProtocolError("5000 VLANs, at most 4096")) { try ControlMessage.parse(tooMany) }
    }
}
