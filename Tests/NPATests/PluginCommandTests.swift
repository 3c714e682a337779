import Foundation
import NPAPluginBundle
import NPATestSupport
import Testing

/// `npa plugin …` as a vendor runs it: a key, each in-tree plugin built from its sources into a
/// signed bundle, verified and inspected against the key, and refused — exit 1 and one line
/// naming the bundle and the reason — against another key, tampered, or unsigned.
@Suite(.serialized) struct PluginCommandTests {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
        "npa-plugin-cli-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    ).path
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func npa(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) { try NPAProcess(arguments).finish() }

    @Test func everyInTreePluginBuildsIntoASignedBundleThatVerifiesAndInspects() throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let keygen = try npa(["plugin", "keygen", "--out", "\(dir)/vendor"])
        #expect(keygen.status == 0, "\(keygen.stderr)")
        let mode = try FileManager.default.attributesOfItem(atPath: "\(dir)/vendor")[.posixPermissions] as? Int
        #expect(mode == 0o600)
        for plugin in ["dring", "cq", "cq-swift"] {
            let bundle = "\(dir)/npa-\(plugin).npabundle"
            let source = Self.root.appendingPathComponent("Plugins/\(plugin)").path
            let built = try npa(["plugin", "build", source, "--out", bundle, "--key", "\(dir)/vendor"])
            #expect(built.status == 0 && built.stdout.contains("signed by key"), "\(plugin): \(built.stdout) \(built.stderr)")
            let verified = try npa(["plugin", "verify", bundle, "--trust", "\(dir)/vendor.pub"])
            #expect(
                verified.status == 0 && verified.stdout.contains("accepted — npa-\(plugin) 1.0"), "\(verified.stdout) \(verified.stderr)")
            let inspected = try npa(["plugin", "inspect", bundle, "--trust", "\(dir)/vendor.pub"])
            #expect(inspected.status == 0, "\(inspected.stderr)")
            #expect(
                inspected.stdout.contains("exports: npa_plugin_main;") && inspected.stdout.contains("verdict: accepted"),
                "\(inspected.stdout)")
            #expect(inspected.stdout.contains("licence GPL-2.0-only"), "\(inspected.stdout)")
        }
    }

    @Test func refusedBundlesExitOneWithOneLineNamingTheBundleAndTheReason() throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try npa(["plugin", "keygen", "--out", "\(dir)/vendor"]).status == 0)
        #expect(try npa(["plugin", "keygen", "--out", "\(dir)/stranger"]).status == 0)
        let bundle = "\(dir)/b.npabundle"
        let source = Self.root.appendingPathComponent("Plugins/dring").path
        #expect(try npa(["plugin", "build", source, "--out", bundle]).status == 0)

        func refusal(_ path: String, trusting key: String = "vendor") throws -> String {
            let result = try npa(["plugin", "verify", path, "--trust", "\(dir)/\(key).pub"])
            #expect(result.status == 1, "\(path): \(result.stdout)")
            let lines = result.stderr.split(separator: "\n")
            #expect(lines.count == 1 && lines[0].contains("plugin bundle \(path) refused: "), "\(result.stderr)")
            return result.stderr
        }
        #expect(try refusal(bundle).contains("unsigned"))
        #expect(try npa(["plugin", "sign", bundle, "--key", "\(dir)/stranger"]).status == 0)
        #expect(try refusal(bundle).contains("not trusted"))
        #expect(try npa(["plugin", "sign", bundle, "--key", "\(dir)/vendor"]).status == 0)
        #expect(try npa(["plugin", "verify", bundle, "--trust", "\(dir)/vendor.pub"]).status == 0)
        // One byte of the binary's code changed after signing.
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: bundle)))
        let layout = try bytes.withUnsafeBytes { try PluginBundle.layout(of: $0) }
        bytes[layout.binary.lowerBound + layout.binary.count / 2] ^= 0x40
        let tampered = "\(dir)/tampered.npabundle"
        try Data(bytes).write(to: URL(fileURLWithPath: tampered))
        #expect(try refusal(tampered).contains("binary altered"))
        let notABundle = "\(dir)/plain.so"
        try Data([0x7F, 0x45, 0x4C, 0x46, 2, 1, 1]).write(to: URL(fileURLWithPath: notABundle))
        let unreadable = try npa(["plugin", "verify", notABundle, "--trust", "\(dir)/vendor.pub"])
        #expect(unreadable.status == 1 && unreadable.stderr.contains("not a plugin bundle"), "\(unreadable.stderr)")
    }

    @Test func aNonGPLPluginIsNotBuilt() throws {
        try FileManager.default.createDirectory(atPath: "\(dir)/mit", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let source = Self.root.appendingPathComponent("Plugins/dring/npa_dring_plugin.c").path
        try FileManager.default.copyItem(atPath: source, toPath: "\(dir)/mit/plugin.c")
        let description =
            #"{"name": "mit-plugin", "version": "1", "vendor": "v", "models": [{"model": "npa-dring", "vfDeviceIDs": []}], "licence": "MIT"}"#
        try Data(description.utf8).write(to: URL(fileURLWithPath: "\(dir)/mit/plugin.json"))
        let built = try npa(["plugin", "build", "\(dir)/mit", "--out", "\(dir)/mit.npabundle"])
        #expect(built.status == 2 && built.stderr.contains("not the GPL"), "\(built.stdout) \(built.stderr)")
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/mit.npabundle"))
    }
}
