import Foundation
import NPAControlProtocol
import NPAHost
import NPAShell
import NPATestSupport
import Testing

/// The host's plugin store refuses each bad bundle: `npa status` lists it with one line naming
/// the bundle and the reason, it is never offered to a guest (the host refuses the switch-in,
/// saying why), and the guest, offered nothing, stays emulated with frames flowing both ways.
/// Also a bundle file that cannot be read, and a host that trusts no key.
@Suite(.serialized) struct PluginStoreRefusalTests {
    /// A fresh, empty store directory.
    static func storeDirectory() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "npa-store-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test(arguments: BadBundle.allCases)
    func theHostRefusesEachBadBundleAndTheGuestStaysEmulated(_ bad: BadBundle) throws {
        let dir = try Self.storeDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try bad.write(into: dir)
        let host = try TestHost(configuration: .withNIC(model: BadBundle.model, vfs: 2, pluginDirectory: dir.path))
        defer { host.stop() }

        let store = try #require(try host.admin.status().plugins)
        #expect(store.bundles.map(\.file) == [bad.file])
        #expect(store.bundles.allSatisfy { !$0.accepted })
        let line = store.bundles.first?.refusal ?? ""
        #expect(line.hasPrefix("plugin bundle \(bad.file) refused: ") && line.contains(bad.expectedReason), "\(line)")
        #expect(!line.contains("\n"), "\(line)")
        #expect(store.used.isEmpty)

        let a = try attach(host, "a", queues: 1), b = try attach(host, "b", queues: 1)
        var traffic = CountedExchange(host: host, a: a, b: b)
        try traffic.exchange(4)
        var refusal = ""
        do { try host.admin.switchVNIC(name: a.name, toPassthrough: true) } catch { refusal = "\(error)" }
        #expect(refusal.contains("no accepted plugin bundle") && refusal.contains(line), "\(refusal)")
        _ = a.reclaimTransmitted()
        // Offered nothing: the shell never saw an offer to refuse.
        #expect(a.mode == "emulated" && a.lastSwitchError == nil)
        #expect(try host.status(of: a.name)?.mode == "emulated")
        try traffic.exchange(4)
    }

    /// A directory and a dangling link, each named like a bundle, are refused as files that
    /// cannot be read, with the system's reason; the good bundle beside them is still used.
    @Test func aBundleFileThatCannotBeReadIsRefusedSayingWhy() throws {
        let dir = try Self.storeDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("a-directory.npabundle"), withIntermediateDirectories: false)
        try FileManager.default.createSymbolicLink(
            atPath: dir.appendingPathComponent("dangling.npabundle").path, withDestinationPath: dir.appendingPathComponent("nowhere").path)
        try FileManager.default.copyItem(
            at: PluginImages.directory().appendingPathComponent("npa-cq.npabundle"), to: dir.appendingPathComponent("npa-cq.npabundle"))
        let host = try TestHost(configuration: .withNIC(model: "npa-cq", vfs: 1, pluginDirectory: dir.path))
        defer { host.stop() }

        let store = try #require(try host.admin.status().plugins)
        let refusals = Dictionary(uniqueKeysWithValues: store.bundles.map { ($0.file, $0.refusal ?? "accepted") })
        #expect(
            refusals == [
                "a-directory.npabundle": "plugin bundle a-directory.npabundle refused: cannot be read: Is a directory",
                "dangling.npabundle": "plugin bundle dangling.npabundle refused: cannot be read: No such file or directory",
                "npa-cq.npabundle": "accepted",
            ])
        #expect(store.used == ["npa-cq": "npa-cq.npabundle"])
    }

    /// A host with NICs and no `plugin_trust` says so in `npa status` (and refuses every bundle as
    /// signed by a key it does not trust); a host without NICs, which injects nothing, does not.
    @Test func aHostWithNICsThatTrustsNoKeySaysSo() throws {
        var configuration = try HostConfiguration.withNIC(model: "npa-cq", vfs: 1)
        configuration.pluginTrust = []
        let host = try TestHost(configuration: configuration, trustingTestKey: false)
        defer { host.stop() }

        let store = try #require(try host.admin.status().plugins)
        #expect(store.trustedKeys.isEmpty)
        #expect(store.trustWarning?.hasPrefix("no trusted keys: no plugin bundle can be accepted") == true, "\(store.trustWarning ?? "-")")
        #expect(store.used.isEmpty && !store.bundles.isEmpty)
        for bundle in store.bundles {
            #expect(bundle.refusal?.hasPrefix("plugin bundle \(bundle.file) refused: signed by key") == true, "\(bundle.refusal ?? "-")")
        }
        let status = try NPAProcess(["status", "--host", host.socketPath]).finish()
        #expect(status.status == 0)
        #expect(status.stdout.split(separator: "\n").contains { $0.contains("no trusted keys") }, "\(status.stdout)")
        var refusal = ""
        let a = try attach(host, "a", queues: 1)
        do { try host.admin.switchVNIC(name: a.name, toPassthrough: true) } catch { refusal = "\(error)" }
        #expect(refusal.contains("no accepted plugin bundle"), "\(refusal)")

        let bare = try TestHost()
        defer { bare.stop() }
        #expect(try bare.admin.status().plugins?.trustWarning == nil)
        #expect(try !NPAProcess(["status", "--host", bare.socketPath]).finish().stdout.contains("trusted keys"))
    }
}
