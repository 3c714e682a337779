import Foundation
import NPAControlProtocol
import NPAHost
import NPATestSupport
import Testing

/// `npa policy set|show` through the built binary: it changes a guest's policy on a running
/// host and prints what changed, shows the policies as a table or JSON, and says clearly what
/// is wrong with a bad request.
@Suite(.serialized) struct PolicyCommandTests {
    static func run(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        try NPAProcess(arguments).finish()
    }

    @Test func setPrintsWhatChangedAndShowPrintsTheTableAndJSON() throws {
        var config = HostConfiguration()
        config.guestPolicies["alpha"] = GuestPolicy(
            allowedMACs: [MACAddress("02:00:00:00:00:0a")!], allowedVLANs: [0, 10], allowPromiscuous: true)
        let host = try TestHost(configuration: config)
        defer { host.stop() }
        let beta = try attach(host, "beta")
        defer { beta.detach() }

        let set = try Self.run(["policy", "set", "beta", "--host", host.socketPath, "--vlans", "0,10", "--promiscuous", "true"])
        #expect(set.status == 0, "\(set.stderr)")
        #expect(
            set.stdout
                == "guest 'beta': vlans 0 -> 0,10; promiscuous no -> yes. Lasts until the host stops (the config file stays the default at start).\n"
        )

        let show = try Self.run(["policy", "show", "--host", host.socketPath])
        #expect(show.status == 0, "\(show.stderr)")
        #expect(
            show.stdout == """
                GUEST            SOURCE   ATTACHED  VLANS            PROMISC  PASSTHROUGH  MACS
                alpha            config   no        0,10             yes      yes          02:00:00:00:00:0a
                beta             live     yes       0,10             yes      yes          any
                (source live: changed by npa policy set; it lasts until the host stops, the config file stays the default at start)

                """)

        let json = try Self.run(["policy", "show", "alpha", "--host", host.socketPath, "--json"])
        #expect(json.status == 0, "\(json.stderr)")
        #expect(
            json.stdout
                == #"{"guests":[{"attached":false,"macs":["02:00:00:00:00:0a"],"name":"alpha","passthrough":true,"promiscuous":true,"source":"config","vlans":[0,10]}]}"#
                + "\n")
        #expect(try PolicyReport.decode(json.stdout) == host.admin.policies(guest: "alpha"))
    }

    @Test func badRequestsSayWhatIsWrongAndChangeNothing() throws {
        let host = try TestHost()
        defer { host.stop() }
        let beta = try attach(host, "beta")
        defer { beta.detach() }
        let before = try host.admin.policies()
        let cases: [([String], String)] = [
            (["policy", "set", "beta", "--vlans", "0,ten"], "--vlans: 'ten' is not a VLAN ID from 0 to 4094"),
            (
                ["policy", "set", "beta", "--macs", "02:00:00:00:00"],
                "--macs: '02:00:00:00:00' is not a MAC like 02:00:00:00:00:01 (or give any)"
            ),
            (["policy", "set", "beta", "--vlans", "4095"], "VLAN 4095 is not a VLAN ID from 0 to 4094"),
            (["policy", "set", "beta"], "no policy change for guest 'beta': give --vlans, --macs, --promiscuous or --passthrough"),
            (["policy", "set", "ghost", "--passthrough", "false"], "no guest named 'ghost' is attached or configured (known: beta)"),
            (["policy", "show", "ghost"], "no guest named 'ghost' is attached or configured (known: beta)"),
        ]
        for (arguments, message) in cases {
            let result = try Self.run(arguments + ["--host", host.socketPath])
            #expect(result.status != 0, "\(arguments)")
            #expect(result.stderr.contains(message), "\(arguments): \(result.stderr)")
        }
        #expect(try host.admin.policies() == before)
    }
}
