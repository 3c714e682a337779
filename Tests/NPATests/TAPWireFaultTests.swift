import Foundation
import NPAControlProtocol
import NPASystem
import NPATestSupport
import Testing

/// The TAP wire's life and faults in a running `npa host`: who creates and removes the
/// interface, what a deleted interface does to its port (and not to the others), and the
/// malformed frames the kernel hands up. Namespaces and interfaces are removed in `defer`.
@Suite(.serialized) struct TAPWireFaultTests {
    /// A host whose vswitch uplink and whose NIC each have a TAP wire: the uplink's moved into a
    /// namespace ("the LAN"), a kernel-stack guest pinging across it. The uplink's interface set
    /// down shows as link down with its drops counted, and carries traffic again once up. Deleting the NIC's TAP
    /// puts that port down (counted, in status) while the guest keeps pinging by the uplink; an
    /// oversize frame from the kernel is counted and dropped; deleting the uplink's TAP too
    /// leaves the host serving status and the guest attached.
    @Test(.enabled(if: TAPWireTests.available, Comment(rawValue: TAPWireTests.skipReason)))
    func aDeletedTAPTakesOnlyItsPortDownAndTheHostServesOn() throws {
        let lab = NetworkLab()
        defer { lab.removeAll() }
        let (uplinkTAP, nicTAP) = ("npw\(lab.tag)up", "npw\(lab.tag)nw")
        let host = try HostProcess(
            config: "uplink: { tap: \(uplinkTAP) }\nnics:\n  - { name: nic0, model: npa-dring, vfs: 2, wire: { tap: \(nicTAP) } }\n")
        defer { host.end() }
        #expect(host.waitUntilListening())
        for tap in [uplinkTAP, nicTAP] {
            #expect(eventually { (try? lab.ip(["-o", "link", "show", tap]))?.contains(",UP") == true }, "\(tap) never came up")
        }
        let peer = try lab.addNamespace("peer")
        try lab.ip(["link", "set", uplinkTAP, "netns", peer])
        try lab.ip(["-n", peer, "link", "set", uplinkTAP, "mtu", "9200", "up"])
        try lab.ip(["-n", peer, "addr", "add", "10.80.0.100/24", "dev", uplinkTAP])
        let ns = try lab.addNamespace("g")
        let ifname = "npw\(lab.tag)g"
        let guest = try NPAProcess([
            "guest", "tap", "--host", host.socketPath, "--name", "fault-g", "--mac", "02:00:00:00:80:01", "--ifname", ifname, "--netns", ns,
        ])
        defer {
            guest.kill()
            _ = guest.finish()
        }
        #expect(guest.waitUntilAttached())
        try lab.ip(["-n", ns, "addr", "add", "10.80.0.1/24", "dev", ifname])
        try lab.ip(["-n", ns, "link", "set", ifname, "up"])
        let before = try lab.run(in: ns, ["ping", "-c", "3", "-w", "60", "10.80.0.100"])
        #expect(before.status == 0, "ping by the uplink TAP: \(before.output)")

        // The admin sets the uplink's interface down: the kernel refuses what the host writes
        // (counted, link down in status) until it is up again.
        try lab.ip(["-n", peer, "link", "set", uplinkTAP, "down"])
        _ = try lab.run(in: ns, ["ping", "-c", "1", "-w", "2", "10.80.0.100"])  // fails: only its frames matter
        let refused = try eventually {
            let wire = try host.admin.status().wires?.first { $0.port == "uplink" }
            return wire?.link == "down" && (wire?.counters["drop_link_down"] ?? 0) > 0 && wire?.error?.contains("is down") == true
        }
        #expect(refused, "\(String(describing: try? host.admin.status().wires))")
        try lab.ip(["-n", peer, "link", "set", uplinkTAP, "up"])
        let again = try lab.run(in: ns, ["ping", "-c", "3", "-w", "60", "10.80.0.100"])
        #expect(again.status == 0, "ping by the uplink TAP once it is up again: \(again.output)")
        #expect(try host.admin.status().wires?.first { $0.port == "uplink" }?.link == "up")

        try lab.ip(["link", "delete", nicTAP])
        let nicDown = try eventually {
            let wire = try host.admin.status().wires?.first { $0.port == "NIC nic0" }
            return wire?.link == "down" && wire?.error?.contains("gone") == true
        }
        #expect(nicDown, "the NIC's port never went down: \(String(describing: try? host.admin.status().wires))")
        #expect(try host.admin.status().wires?.first { $0.port == "uplink" }?.link == "up")
        let text = try NPAProcess(["status", "--host", host.socketPath]).finish()
        #expect(text.stdout.contains("wire of NIC nic0: tap \(nicTAP) down (interface gone: "), "\(text.stdout)")
        #expect(text.stdout.contains("wire of uplink: tap \(uplinkTAP) up, "), "\(text.stdout)")
        let after = try lab.run(in: ns, ["ping", "-c", "3", "-w", "60", "10.80.0.100"])
        #expect(after.status == 0, "ping by the uplink TAP after the NIC's TAP went: \(after.output)")

        // 9100 bytes of payload: within the interface's MTU, beyond what a port takes (9018).
        let oversize = try lab.run(
            in: peer,
            [
                "python3", "-c",
                """
                import socket
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(("\(uplinkTAP)", 0))
                s.send(bytes.fromhex("ffffffffffff020000008099") + b"\\x08\\x00" + bytes(9100))
                """,
            ])
        #expect(oversize.status == 0, "\(oversize.output)")
        let counted = try eventually { try host.admin.status().wires?.first { $0.port == "uplink" }?.counters["drop_oversize"] == 1 }
        #expect(counted, "\(String(describing: try? host.admin.status().wires))")

        try lab.ip(["-n", peer, "link", "delete", uplinkTAP])
        let uplinkDown = try eventually { try host.admin.status().wires?.allSatisfy { $0.link == "down" } == true }
        #expect(uplinkDown)
        #expect(host.process.process.isRunning)
        #expect(try host.admin.status().vnics.first { $0.name == "fault-g" }?.state == "active")
    }

    /// A wire named after an interface that is not a TAP (here the loopback) stops the host at
    /// start with one line saying so, and leaves no socket behind.
    @Test(.enabled(if: TAPDevice.isAvailable, Comment(rawValue: "needs root and /dev/net/tun")))
    func aWireNamedAfterAnotherKindOfInterfaceIsRefusedAtStart() throws {
        let socket = TestHost.freshSocketPath()
        let config = socket + ".yaml"
        try "uplink: { tap: lo }\n".write(toFile: config, atomically: true, encoding: .utf8)
        defer { unlink(config) }
        let out = try NPAProcess(["host", "--socket", socket, "--config", config]).finish()
        #expect(out.status != 0)
        #expect(
            out.stderr.contains("npa: uplink: TAP 'lo': an interface of that name exists but is not a TAP device this host can open"),
            "\(out.stderr)")
        #expect(access(socket, F_OK) != 0, "the socket file was left behind")
    }

    /// An existing (persistent) TAP is attached to, left down if it was, and still there after
    /// the host exits; a TAP the host created is gone when the host exits.
    @Test(.enabled(if: TAPDevice.isAvailable, Comment(rawValue: "needs root and /dev/net/tun")))
    func onlyATAPTheHostCreatedGoesWithIt() throws {
        let lab = NetworkLab()
        let (existing, created) = ("npw\(lab.tag)ex", "npw\(lab.tag)cr")
        try lab.ip(["tuntap", "add", "mode", "tap", "name", existing])
        defer { _ = try? lab.ip(["link", "delete", existing]) }
        defer { _ = try? lab.ip(["link", "delete", created]) }
        let host = try HostProcess(
            config: """
                nics:
                  - { name: nic0, model: npa-dring, vfs: 1, wire: { tap: \(existing) } }
                  - { name: nic1, model: npa-cq, vfs: 1, wire: { tap: \(created) } }

                """)
        defer { host.end() }
        #expect(host.waitUntilListening())
        let wires = try #require(try eventually { try host.admin.status().wires?.count == 2 } ? host.admin.status().wires : nil)
        #expect(wires.map(\.port) == ["NIC nic0", "NIC nic1"])
        #expect(wires.map(\.interface) == [existing, created])
        #expect(wires.map(\.created) == [false, true])
        #expect(try !lab.ip(["-o", "link", "show", existing]).contains(",UP"), "an existing TAP's link is the admin's")
        kill(host.process.process.processIdentifier, SIGTERM)
        host.process.process.waitUntilExit()
        #expect(host.process.process.terminationStatus == 0)
        #expect(try lab.ip(["-o", "link", "show", existing]).contains(existing))
        #expect(throws: LabFailure.self) { try lab.ip(["link", "show", created]) }
    }
}
