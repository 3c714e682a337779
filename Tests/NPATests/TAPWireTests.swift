import Foundation
import NPAControlProtocol
import NPASystem
import NPATestSupport
import Testing

/// The TAP wire: NPA-Swift hosts whose NICs' physical ports are TAP devices, joined by a Linux
/// bridge in a namespace this test creates (and always removes), with a plain namespace on the
/// bridge as "a machine on the LAN". Kernel-stack guests (`npa guest tap`) reach across it.
@Suite(.serialized) struct TAPWireTests {
    static let available =
        TAPDevice.isAvailable && NetworkLab.toolIsInstalled("ping") && NetworkLab.toolIsInstalled("python3")
    static let skipReason = "needs root, /dev/net/tun, ping and python3 (scripts/install-deps.sh installs them)"

    /// Two `npa host` processes, each NIC's wire a TAP the host created, moved into the LAN
    /// namespace and joined by its bridge (a TAP's descriptor keeps working when its interface
    /// changes namespace). A guest on host A pings and sends 1 MiB over TCP (checked by SHA-256)
    /// to a guest on host B and to the LAN machine, emulated, then with both guests switched in
    /// to VFs.
    @Test(.enabled(if: available, Comment(rawValue: skipReason)))
    func guestsOnTwoHostsAndALANMachineTalkOverTAPWiresInBothModes() throws {
        let lab = NetworkLab()
        defer { lab.removeAll() }
        let plugins = try PluginImages.directory().path
        let taps = ["npw\(lab.tag)ta", "npw\(lab.tag)tb"]
        var hosts: [HostProcess] = []
        var guests: [NPAProcess] = []
        defer {
            for guest in guests { guest.kill() }
            for guest in guests { _ = guest.finish() }
            for host in hosts { host.end() }
        }
        for tap in taps {
            let host = try HostProcess(
                config:
                    "uplink: nic0\nplugin_dir: \(plugins)\nplugin_trust: [\(try PluginImages.publicKeyPath())]\nnics:\n  - { name: nic0, model: npa-dring, vfs: 4, wire: { tap: \(tap) } }\n"
            )
            hosts.append(host)
            #expect(host.waitUntilListening(), "host with wire \(tap) did not start")
            // Created by the host, link up, in the host's namespace (the host listens before it
            // makes its NICs, so this may take a moment).
            #expect(eventually { (try? lab.ip(["-o", "link", "show", tap]))?.contains(",UP") == true }, "\(tap) never came up")
        }

        let lan = try lab.addNamespace("lan")
        try lab.ip(["-n", lan, "link", "add", "br0", "type", "bridge", "forward_delay", "0"])
        try lab.ip(["-n", lan, "link", "set", "br0", "up"])
        for tap in taps {
            try lab.ip(["link", "set", tap, "netns", lan])
            try lab.ip(["-n", lan, "link", "set", tap, "master", "br0", "up"])
        }
        let machine = try lab.addNamespace("m")
        let (machineEnd, bridgeEnd) = ("npw\(lab.tag)vm", "npw\(lab.tag)vb")
        try lab.ip(["link", "add", machineEnd, "netns", machine, "type", "veth", "peer", "name", bridgeEnd, "netns", lan])
        try lab.ip(["-n", lan, "link", "set", bridgeEnd, "master", "br0", "up"])
        try lab.ip(["-n", machine, "addr", "add", "10.79.0.100/24", "dev", machineEnd])
        try lab.ip(["-n", machine, "link", "set", machineEnd, "up"])

        var guestNamespaces: [String] = []
        for (i, host) in hosts.enumerated() {
            let ns = try lab.addNamespace("g\(i)")
            let ifname = "npw\(lab.tag)g\(i)"
            let guest = try NPAProcess([
                "guest", "tap", "--host", host.socketPath, "--name", "wire-\(i)", "--mac", "02:00:00:00:79:0\(i + 1)",
                "--ifname", ifname, "--netns", ns, "--plugin-trust", PluginImages.publicKeyPath(),
            ])
            guests.append(guest)
            #expect(guest.waitUntilAttached(), "guest \(i) did not attach")
            try lab.ip(["-n", ns, "addr", "add", "10.79.0.\(i + 1)/24", "dev", ifname])
            try lab.ip(["-n", ns, "link", "set", ifname, "up"])
            guestNamespaces.append(ns)
        }

        for mode in ["emulated", "passthrough"] {
            if mode == "passthrough" {
                for (i, host) in hosts.enumerated() { _ = try host.admin.switchVNIC(name: "wire-\(i)", toPassthrough: true) }
            }
            for (i, host) in hosts.enumerated() {
                // A switch-in completes when the guest's shell has taken its VF.
                let inMode = try eventually(timeoutMilliseconds: 30_000) {
                    try host.admin.status().vnics.first { $0.name == "wire-\(i)" }?.mode == mode
                }
                #expect(inMode, "guest \(i) is not \(mode)")
            }
            // -w 60 with -c 3: exit 0 once three replies came back, however long ARP takes.
            for target in ["10.79.0.2", "10.79.0.100"] {
                let ping = try lab.run(in: guestNamespaces[0], ["ping", "-c", "3", "-w", "60", target])
                #expect(ping.status == 0, "\(mode): ping \(target): \(ping.output)")
            }
            let port = mode == "emulated" ? 5101 : 5102
            let toGuest = try lab.tcpTransfer(
                from: guestNamespaces[0], to: guestNamespaces[1], address: "10.79.0.2", port: port, bytes: 1 << 20)
            #expect(toGuest.ok, "\(mode): TCP to the guest on host B: \(toGuest.output)")
            let toMachine = try lab.tcpTransfer(from: guestNamespaces[0], to: machine, address: "10.79.0.100", port: port, bytes: 1 << 20)
            #expect(toMachine.ok, "\(mode): TCP to the LAN machine: \(toMachine.output)")
            if NetworkLab.toolIsInstalled("iperf3") {
                let mbps = try iperf3(lab, from: guestNamespaces[0], to: machine, address: "10.79.0.100")
                print("TAP wire, \(mode): iperf3 from the guest on host A to the LAN machine: \(Int(mbps)) Mbit/s")
            }
        }

        for (i, host) in hosts.enumerated() {
            let status = try host.admin.status()
            let vnic = status.vnics.first { $0.name == "wire-\(i)" }
            #expect(vnic?.mode == "passthrough")
            #expect((vnic?.counters["vf_tx_frames"] ?? 0) > 0, "passthrough traffic went by the VF")
            let wire = status.wires?.first
            #expect(wire?.port == "NIC nic0" && wire?.interface == taps[i] && wire?.link == "up" && wire?.created == true)
            #expect((wire?.counters["frames_in"] ?? 0) > 100 && (wire?.counters["frames_out"] ?? 0) > 100, "\(wire?.counters ?? [:])")
            #expect(wire?.counters["drop_runt"] == 0 && wire?.counters["drop_oversize"] == 0)
            let framesIn = wire?.counters["frames_in"] ?? 0, batches = max(1, wire?.counters["read_batches"] ?? 1)
            print("TAP wire of host \(i): \(framesIn) frames in, \(batches) read batches (mean \(framesIn / batches) per wake-up)")
        }
    }

    /// A 2-second iperf3 TCP run from `client` to a server in `server`; its received rate (bytes
    /// checked to be above zero).
    private func iperf3(_ lab: NetworkLab, from client: String, to server: String, address: String) throws -> Double {
        let listener = try lab.start(in: server, ["iperf3", "-s", "-1", "-B", address])
        defer { if listener.isRunning { listener.terminate() } }
        let listening = try eventually(timeoutMilliseconds: 60_000) {
            try lab.run(in: server, ["ss", "-Hltn", "sport = :5201"]).output.contains("5201")
        }
        #expect(listening, "iperf3 server never listened")
        let run = try lab.run(in: client, ["iperf3", "-c", address, "-t", "2", "-J"])
        #expect(run.status == 0, "\(run.output)")
        let report = try JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Any]
        let received = ((report?["end"] as? [String: Any])?["sum_received"] as? [String: Any])
        #expect(((received?["bytes"] as? Int) ?? 0) > 0, "\(run.output)")
        listener.waitUntilExit()
        return ((received?["bits_per_second"] as? Double) ?? 0) / 1e6
    }
}
