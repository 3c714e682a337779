import Foundation
import NPAControlProtocol
import NPAHost
import NPAPluginBundle
import NPAShell
import NPATestSupport
import Testing

/// The host's plugin store end to end: only bundles signed by a trusted key and passing every
/// check reach a guest; each refused bundle is shown with its reason (`npa status`, `npa plugin
/// list`); a guest whose NIC has no accepted bundle stays emulated and keeps exchanging frames.
/// (Each refusal on its own: `PluginStoreRefusalTests`; the shell's own check of an injected
/// bundle: `InjectedBundleRefusalTests`, `ShellRefusalEndToEndTests`.)
@Suite(.serialized) struct PluginStoreTests {
    /// A store directory holding the in-tree npa-cq bundle (good) and five bad npa-dring bundles.
    static func storeWithRefusals() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "npa-store-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let images = try PluginImages.directory()
        let key = PluginImages.signingKey
        let dring = [UInt8](try Data(contentsOf: images.appendingPathComponent("npa-dring.so")))
        let manifest = try PluginImages.manifest(of: "dring")
        func write(_ name: String, _ bytes: [UInt8]) throws { try Data(bytes).write(to: dir.appendingPathComponent(name)) }

        var tampered = PluginBundle(manifest: manifest, binary: dring)
        key.sign(&tampered)
        tampered.binary[tampered.binary.count / 2] ^= 0x01
        try write("dring-tampered.npabundle", tampered.encode())
        try write("dring-untrusted.npabundle", PluginImages.bundle(manifest, binary: dring, key: .generate()))
        try write("dring-unsigned.npabundle", PluginImages.bundle(manifest, binary: dring, key: nil))
        var mit = manifest
        mit.licence = "MIT"
        try write("dring-mit.npabundle", PluginImages.bundle(mit, binary: dring, key: key))
        var otherABI = manifest
        otherABI.abiVersion += 1
        try write("dring-abi.npabundle", PluginImages.bundle(otherABI, binary: dring, key: key))
        try FileManager.default.copyItem(
            at: images.appendingPathComponent("npa-cq.npabundle"), to: dir.appendingPathComponent("npa-cq.npabundle"))
        return dir
    }

    static let expectedRefusals = [
        "dring-abi.npabundle": "built for plugin ABI",
        "dring-mit.npabundle": "licence 'MIT'",
        "dring-tampered.npabundle": "binary altered",
        "dring-unsigned.npabundle": "unsigned",
        "dring-untrusted.npabundle": "which is not trusted",
    ]

    @Test func theStoreRefusesEachBadBundleWithItsReasonAndInjectsOnlyTheGoodOne() throws {
        let dir = try Self.storeWithRefusals()
        defer { try? FileManager.default.removeItem(at: dir) }
        let cqHost = try TestHost(configuration: .withNIC(model: "npa-cq", vfs: 2, pluginDirectory: dir.path))
        defer { cqHost.stop() }

        let store = try #require(try cqHost.admin.status().plugins)
        #expect(
            store.bundles.map(\.file) == [
                "dring-abi.npabundle", "dring-mit.npabundle", "dring-tampered.npabundle",
                "dring-unsigned.npabundle", "dring-untrusted.npabundle", "npa-cq.npabundle",
            ])
        for bundle in store.bundles where bundle.file != "npa-cq.npabundle" {
            #expect(!bundle.accepted)
            #expect(bundle.refusal?.contains(Self.expectedRefusals[bundle.file]!) == true, "\(bundle.file): \(bundle.refusal ?? "-")")
        }
        let good = try #require(store.bundles.first { $0.file == "npa-cq.npabundle" })
        #expect(good.accepted && good.name == "npa-cq" && good.models == ["npa-cq"])
        #expect(good.signer == PluginImages.signingKey.keyID.description)
        #expect(store.used == ["npa-cq": "npa-cq.npabundle"])

        // npa plugin list says the same, one line per bundle.
        let list = try NPAProcess(["plugin", "list", "--host", cqHost.socketPath]).finish()
        #expect(list.status == 0)
        for (file, reason) in Self.expectedRefusals {
            #expect(list.stdout.split(separator: "\n").contains { $0.contains(file) && $0.contains("refused") && $0.contains(reason) })
        }
        #expect(list.stdout.contains("npa-cq uses npa-cq.npabundle"))
        let json = try NPAProcess(["plugin", "list", "--host", cqHost.socketPath, "--json"]).finish()
        #expect(try JSONDecoder().decode(StatusReport.PluginStore.self, from: Data(json.stdout.utf8)) == store)

        // The good bundle is injected: a guest switches in on the npa-cq NIC.
        let a = try attach(cqHost, "a", queues: 1), b = try attach(cqHost, "b", queues: 1)
        #expect(try cqHost.switchIn(a), "\(a.lastSwitchError ?? "")")
        let plugin = try cqHost.status(of: "a")?.plugin ?? "-"
        #expect(plugin.hasPrefix("npa-cq"), "\(plugin)")
        let ab = ethernetFrame(to: b.mac, from: a.mac), ba = ethernetFrame(to: a.mac, from: b.mac)
        #expect(a.send([ab]) == 1)
        #expect(receiveFrames(b, count: 1) == [ab])
        #expect(b.send([ba]) == 1)
        #expect(receiveFrames(a, count: 1) == [ba])
    }

    /// A NIC whose only bundles are refused: the switch-in is refused, saying why, and the guest
    /// stays emulated, exchanging frames.
    @Test func aGuestOnANICWhoseBundlesAreAllRefusedStaysEmulated() throws {
        let dir = try Self.storeWithRefusals()
        defer { try? FileManager.default.removeItem(at: dir) }
        let host = try TestHost(configuration: .withNIC(model: "npa-dring", vfs: 2, pluginDirectory: dir.path))
        defer { host.stop() }
        #expect(try host.admin.status().plugins?.used == ["npa-cq": "npa-cq.npabundle"])
        let a = try attach(host, "a", queues: 1), b = try attach(host, "b", queues: 1)
        var refusal = ""
        do { try host.admin.switchVNIC(name: a.name, toPassthrough: true) } catch { refusal = "\(error)" }
        #expect(refusal.contains("no accepted plugin bundle"), "\(refusal)")
        #expect(refusal.contains("dring-untrusted.npabundle"), "\(refusal)")
        _ = a.reclaimTransmitted()
        #expect(a.mode == "emulated")
        #expect(try host.status(of: "a")?.mode == "emulated")
        for i in 0..<20 {
            let ab = ethernetFrame(to: b.mac, from: a.mac, payload: [UInt8](repeating: UInt8(i), count: 60))
            let ba = ethernetFrame(to: a.mac, from: b.mac, payload: [UInt8](repeating: UInt8(i), count: 60))
            #expect(a.send([ab]) == 1)
            #expect(receiveFrames(b, count: 1) == [ab])
            #expect(b.send([ba]) == 1)
            #expect(receiveFrames(a, count: 1) == [ba])
        }
    }
}
