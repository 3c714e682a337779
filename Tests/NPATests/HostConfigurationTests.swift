import Foundation
import NPAAdmin
import NPAControlProtocol
import NPAHost
import NPATestSupport
import Testing

@Suite struct HostConfigurationTests {
    @Test func theExampleConfigurationParses() throws {
        let config = try HostConfiguration.parse(yaml: HostConfiguration.example, file: "example.yaml")
        #expect(config.maxQueuesPerVNIC == 4)
        #expect(config.uplink == .nic("nic0"))
        #expect(config.nics == [.init(name: "nic0", model: "npa-dring", vfs: 8)])
        let alpha = config.policy(forGuest: "alpha")
        #expect(alpha.allowedMACs == [MACAddress("02:00:00:00:00:0a")!])
        #expect(alpha.allowedVLANs == [0, 10])
        #expect(alpha.allowPromiscuous)
        #expect(config.policy(forGuest: "other") == config.defaultPolicy)
        #expect(config.defaultPolicy.allowedMACs == nil)
        #expect(config.maxConnections == 256)
        #expect(config.attachTimeoutSeconds == 5)
    }

    @Test func migrationSettingsParse() throws {
        let config = try HostConfiguration.parse(
            yaml: "migration_key_file: /k\nmigration_listen: 127.0.0.1:7470\nmigration_timeout_ms: 800\n", file: "host.yaml")
        #expect(config.migrationKeyFile == "/k")
        #expect(config.migrationListen == "127.0.0.1:7470")
        #expect(config.migrationTimeoutMilliseconds == 800)
        let defaults = try HostConfiguration.parse(yaml: "", file: "host.yaml")
        #expect(defaults.migrationKeyFile == nil && defaults.migrationListen == nil)
    }

    @Test func connectionLimitsParse() throws {
        let config = try HostConfiguration.parse(yaml: "max_connections: 12\nattach_timeout: 0.25\n", file: "host.yaml")
        #expect(config.maxConnections == 12)
        #expect(config.attachTimeoutSeconds == 0.25)
    }

    @Test(arguments: [
        ("max_queues: 9\n", "host.yaml:1: max_queues must be an integer from 1 to 8"),
        ("uplink: wire\n", "host.yaml:1: uplink must be none, counting or a NIC name; no NIC is named 'wire'"),
        ("nics:\n  - { name: n, model: e1000, vfs: 2 }\n", "host.yaml:2: NIC model must be npa-dring or npa-cq, not 'e1000'"),
        (
            "colour: blue\n",
            "host.yaml:1: unknown key 'colour' (known: max_queues, uplink, nics, auto_passthrough, plugin_dir, plugin_trust, idle_passes, receiver_stall_ms, switch_timeout_ms, max_connections, attach_timeout, migration_key_file, migration_listen, migration_timeout_ms, migration_forwarding_quiet_ms, event_log_size, default_policy, guests)"
        ),
        (
            "guests:\n  a:\n    macs: [\"01:00:5e:00:00:01\"]\n",
            "host.yaml:3: guests.a.macs: '01:00:5e:00:00:01' is not a unicast MAC like 02:00:00:00:00:01"
        ),
        ("guests:\n  a:\n    vlans: [5000]\n", "host.yaml:3: guests.a.vlans: '5000' is not a VLAN ID from 0 to 4094"),
        ("default_policy:\n  promiscuous: maybe\n", "host.yaml:2: default_policy.promiscuous must be true or false"),
        ("max_connections: 0\n", "host.yaml:1: max_connections must be an integer from 1 to 65536"),
        ("attach_timeout: never\n", "host.yaml:1: attach_timeout must be a number of seconds above 0 and at most 3600"),
        ("migration_timeout_ms: 0\n", "host.yaml:1: migration_timeout_ms must be 1...600000"),
        ("migration_listen: []\n", "host.yaml:1: migration_listen must be ADDR:PORT or a Unix socket path"),
        ("migration_key_file: \"\"\n", "host.yaml:1: migration_key_file must be a file path"),
    ])
    func badConfigurationNamesFileAndLine(_ yaml: String, _ expected: String) {
        do {
            _ = try HostConfiguration.parse(yaml: yaml, file: "host.yaml")
            Issue.record("expected an error")
        } catch {
            #expect("\(error)" == expected)
        }
    }

    @Test func invalidYAMLIsOneLine() {
        do {
            _ = try HostConfiguration.parse(yaml: "guests: [a\n", file: "x.yaml")
            Issue.record("expected an error")
        } catch {
            #expect("\(error)".hasPrefix("x.yaml: not valid YAML"))
            #expect(!"\(error)".contains("\n"))
        }
    }
}

/// The example configuration is a working one, and the README shows exactly it.
@Suite(.serialized) struct ExampleConfigurationTests {
    @Test func theREADMEShowsTheExampleConfigurationVerbatim() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        let section = try #require(readme.range(of: "## The host configuration"))
        let open = try #require(readme.range(of: "```yaml\n", range: section.upperBound..<readme.endIndex))
        let close = try #require(readme.range(of: "```", range: open.upperBound..<readme.endIndex))
        #expect(String(readme[open.upperBound..<close.lowerBound]) == HostConfiguration.example + "\n")
    }

    @Test func aConfigurationThatWouldSurpriseItsUserSaysWhy() throws {
        let example = try HostConfiguration.parse(yaml: HostConfiguration.example, file: "example.yaml")
        #expect(example.warnings(fileExists: { _ in true }).isEmpty)
        let missing = example.warnings(fileExists: { _ in false })
        #expect(missing.count == 1 && missing[0].contains("plugin_dir '.build/plugins' does not exist"))
        var isolated = example
        isolated.uplink = .none
        #expect(isolated.warnings(fileExists: { _ in true }).first?.contains("NIC 'nic0' is not the uplink") == true)
    }

    /// Under the example configuration, a guest switched to a VF still gets every frame an
    /// emulated guest sends it (with `uplink: none` half the traffic was unknown_destination).
    @Test func underTheExampleConfigurationASwitchedGuestIsReachable() throws {
        var config = try HostConfiguration.parse(yaml: HostConfiguration.example, file: "example.yaml")
        config.pluginDirectory = try PluginImages.directory().path
        config.pluginTrust = [try PluginImages.publicKeyPath()]
        let host = try TestHost(configuration: config)
        defer { host.stop() }
        let a = try attach(host, "a", mac: "02:00:00:00:ee:01", queues: 1, memoryMiB: 32)
        let b = try attach(host, "b", mac: "02:00:00:00:ee:02", queues: 1, memoryMiB: 32)
        try host.switchIn(b)
        #expect(b.mode == "passthrough")
        let frames = (0..<50).map { i in ethernetFrame(to: b.mac, from: a.mac, payload: Array(repeating: UInt8(i), count: 60)) }
        #expect(a.send(frames) == 50)
        #expect(receiveFrames(b, count: 50) == frames)
        #expect(try a.dropCounts().isEmpty)
    }
}
