import Foundation
import NPAControlProtocol
import NPAHost
import NPAPluginBundle
import NPAShell
import NPATestSupport
import Testing

/// A command that injects a plugin takes the store (`--plugin-store`, `--plugin-trust`) and says
/// which bundle it injects, before its run and in its JSON; a store with nothing acceptable for
/// the model is an error listing each refusal on its own line, never a quiet run on emulation.
/// And `npa status` names the bundle a vNIC in passthrough was injected from.
@Suite(.serialized) struct PluginStoreOptionTests {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
        "npa-store-option-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    ).path

    /// `dir/store` holding only an npa-cq bundle signed by `key`, and `dir/keys` holding only the
    /// test key's public key.
    func makeStore(signedBy key: PluginSigningKey) throws -> (store: String, keys: String) {
        let store = dir + "/store", keys = dir + "/keys"
        try FileManager.default.createDirectory(atPath: store, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: keys, withIntermediateDirectories: true)
        let images = try PluginImages.directory()
        let binary = [UInt8](try Data(contentsOf: images.appendingPathComponent("npa-cq.so")))
        let bundle = PluginImages.bundle(try PluginImages.manifest(of: "cq"), binary: binary, key: key)
        try Data(bundle).write(to: URL(fileURLWithPath: store + "/npa-cq.npabundle"))
        try PluginImages.signingKey.publicKey.write(to: keys + "/vendor.pub")
        return (store, keys)
    }

    static let soak = ["soak", "--model", "npa-cq", "--switches", "2", "--frames-per-switch", "40"]

    @Test func theSoakInjectsTheStoresBundleAndSaysWhichBeforeItsRunAndInItsJSON() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (store, keys) = try makeStore(signedBy: PluginImages.signingKey)
        let keyID = PluginImages.signingKey.keyID.description
        let expected = "plugin for npa-cq: npa-cq 1.0 by NPA-Swift (npa-cq.npabundle, key \(keyID), GPL-2.0-only)"

        // The trust as a directory of keys.
        let text = try NPAProcess(Self.soak + ["--plugin-store", store, "--plugin-trust", keys]).finish()
        #expect(text.status == 0, "\(text.stdout) \(text.stderr)")
        let lines = text.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first == expected, "\(text.stdout)")
        #expect(lines.contains { $0.hasPrefix("soak (npa-cq): 4 switches") }, "\(text.stdout)")

        // The trust as a key file; the JSON carries the same.
        let json = try NPAProcess(Self.soak + ["--json", "--plugin-store", store, "--plugin-trust", keys + "/vendor.pub"]).finish()
        #expect(json.status == 0, "\(json.stdout) \(json.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
        #expect(object?["switches"] as? Int == 4)
        let plugins = object?["plugins"] as? [[String: String]] ?? []
        #expect(
            plugins == [
                [
                    "model": "npa-cq", "file": "npa-cq.npabundle", "name": "npa-cq", "version": "1.0", "vendor": "NPA-Swift",
                    "signer": keyID, "licence": "GPL-2.0-only",
                ]
            ], "\(json.stdout)")
    }

    @Test func aStoreWhoseBundleIsSignedByAnUntrustedKeyIsAnErrorNamingTheRefusal() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let stranger = PluginSigningKey.generate()
        let (store, keys) = try makeStore(signedBy: stranger)
        let out = try NPAProcess(Self.soak + ["--plugin-store", store, "--plugin-trust", keys]).finish()
        #expect(out.status == 2, "\(out.stdout) \(out.stderr)")
        #expect(!out.stdout.contains("plugin for"), "\(out.stdout)")
        #expect(!out.stdout.contains("soak ("), "it must not run on emulation: \(out.stdout)")
        let lines = out.stderr.split(separator: "\n").map(String.init)
        #expect(
            lines == [
                "npa: no accepted plugin bundle for npa-cq in \(store) (trusting key \(PluginImages.signingKey.keyID))",
                "  plugin bundle npa-cq.npabundle refused: signed by key \(stranger.keyID), which is not trusted",
            ], "\(out.stderr)")
    }

    @Test func aStoreWithoutTrustOrTrustWithoutAStoreIsAUsageError() throws {
        let alone = try NPAProcess(Self.soak + ["--plugin-store", dir]).finish()
        #expect(alone.status == 64)
        #expect(alone.stderr.contains("--plugin-store \(dir) needs --plugin-trust"), "\(alone.stderr)")
        let keyOnly = try NPAProcess(["bench", "--plugin-trust", dir + "/k.pub"]).finish()
        #expect(keyOnly.status == 64)
        #expect(keyOnly.stderr.contains("--plugin-trust is for a --plugin-store"), "\(keyOnly.stderr)")
        let missingKey = try NPAProcess(Self.soak + ["--plugin-store", NSTemporaryDirectory(), "--plugin-trust", dir + "/k.pub"]).finish()
        #expect(missingKey.status == 2)
        #expect(missingKey.stderr.contains("--plugin-trust \(dir)/k.pub: no such file or directory"), "\(missingKey.stderr)")
    }

    /// In passthrough the vNIC's status names the bundle the host injected (table and JSON); back
    /// on emulation it names none.
    @Test func statusNamesTheBundleOfAPassthroughVNIC() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (store, _) = try makeStore(signedBy: PluginImages.signingKey)
        let host = try TestHost(configuration: .withNIC(model: "npa-cq", vfs: 2, pluginDirectory: store))
        defer { host.stop() }
        let a = try attach(host, "a", queues: 1)
        #expect(try host.status(of: "a")?.pluginBundle == nil)
        #expect(try host.switchIn(a), "\(a.lastSwitchError ?? "")")
        #expect(try host.status(of: "a")?.pluginBundle == "npa-cq.npabundle")
        #expect(try host.admin.status().plugins?.injection(for: "npa-cq")?.file == "npa-cq.npabundle")

        let table = try NPAProcess(["status", "--host", host.socketPath]).finish()
        #expect(table.status == 0, "\(table.stderr)")
        let row = table.stdout.split(separator: "\n").first { $0.hasPrefix("a ") }.map(String.init) ?? ""
        #expect(row.contains("passthrough") && row.contains("(npa-cq.npabundle)"), "\(table.stdout)")
        let json = try NPAProcess(["status", "--host", host.socketPath, "--json"]).finish()
        let report = try StatusReport.decode(json.stdout)
        #expect(report.vnics.first { $0.name == "a" }?.pluginBundle == "npa-cq.npabundle", "\(json.stdout)")

        try host.admin.switchVNIC(name: a.name, toPassthrough: false)
        _ = a.reclaimTransmitted()
        #expect(a.mode == "emulated")
        #expect(try host.status(of: "a")?.pluginBundle == nil)
    }
}
