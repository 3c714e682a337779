import NPAHost
import Testing

/// The TAP wire keys of the host configuration: `wire: { tap: IF }` on a NIC and
/// `uplink: { tap: IF }`, and the errors bad input gets (file and line, as every key's).
@Suite struct TAPWireConfigurationTests {
    @Test func aNICWireAndATAPUplinkParse() throws {
        let config = try HostConfiguration.parse(
            yaml: """
                uplink: { tap: npa-up1 }
                nics:
                  - { name: nic0, model: npa-dring, vfs: 8, wire: { tap: npa-up0 } }
                  - { name: nic1, model: npa-cq, vfs: 2 }
                """, file: "host.yaml")
        #expect(config.uplink == .tap("npa-up1"))
        #expect(config.nics.map(\.wireTAP) == ["npa-up0", nil])
        #expect(config.tapWires.map(\.port) == ["NIC nic0", "uplink"])
        #expect(config.tapWires.map(\.tap) == ["npa-up0", "npa-up1"])
    }

    @Test(arguments: [
        ("uplink: { tap: }\n", "host.yaml:1: uplink: '' is not an interface name (1 to 15 bytes, no '/', ':' or spaces)"),
        (
            "uplink: { tap: a-name-of-16-byte }\n",
            "host.yaml:1: uplink: 'a-name-of-16-byte' is not an interface name (1 to 15 bytes, no '/', ':' or spaces)"
        ),
        ("uplink: { tap: \"a/b\" }\n", "host.yaml:1: uplink: 'a/b' is not an interface name (1 to 15 bytes, no '/', ':' or spaces)"),
        ("uplink: { bridge: br0 }\n", "host.yaml:1: uplink must be { tap: IF } (a TAP interface name)"),
        ("uplink: [a]\n", "host.yaml:1: uplink must be none, counting, a NIC name or { tap: IF }"),
        (
            "nics:\n  - { name: n, model: npa-dring, vfs: 2, wire: tap0 }\n",
            "host.yaml:2: NIC 'n' wire must be { tap: IF } (a TAP interface name)"
        ),
        (
            "nics:\n  - { name: n, model: npa-dring, vfs: 2, wire: { tap: t0, mtu: 9000 } }\n",
            "host.yaml:2: NIC 'n' wire must be { tap: IF } (a TAP interface name)"
        ),
        (
            "uplink: { tap: t0 }\nnics:\n  - { name: n, model: npa-dring, vfs: 2, wire: { tap: t0 } }\n",
            "host.yaml: TAP interface 't0' is the wire of two ports (each NIC and the uplink need their own)"
        ),
    ])
    func badTAPWiresAreRefusedWithFileAndLine(_ yaml: String, _ expected: String) {
        do {
            _ = try HostConfiguration.parse(yaml: yaml, file: "host.yaml")
            Issue.record("expected an error")
        } catch {
            #expect("\(error)" == expected)
        }
    }
}
