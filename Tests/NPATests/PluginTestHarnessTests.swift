import Foundation
import NPAPluginBundle
import NPATestSupport
import Testing

@testable import npa

/// `npa plugin test` as a vendor meets it: each in-tree bundle passes every step on its model;
/// a bundle the trust store does not cover, or a model its manifest does not name, fails at
/// step 0 and nothing else runs; a deliberately broken plugin (one that never reports a TX
/// completion, one that crashes the guest) fails the step where it breaks, with the reason, and
/// the command ends (exit 1) instead of hanging.
@Suite(.serialized) struct PluginTestHarnessTests {
    /// Generous: no step here should stall, and a broken plugin's step ends after it.
    static let stallSeconds = 60.0

    func options(_ bundle: String, model: String, trust: [String]? = nil) throws -> PluginTestHarness.Options {
        PluginTestHarness.Options(
            bundle: try PluginImages.directory().appendingPathComponent("\(bundle).npabundle").path, model: model,
            trust: try trust ?? [PluginImages.publicKeyPath()], frames: 400, stallSeconds: Self.stallSeconds)
    }

    @Test(arguments: [("npa-dring", "npa-dring"), ("npa-cq", "npa-cq"), ("npa-cq-swift", "npa-cq")])
    func everyInTreeBundlePassesEveryStepOnItsModel(_ bundle: String, _ model: String) throws {
        let report = PluginTestHarness(try options(bundle, model: model)).run()
        #expect(report.steps.map(\.name) == PluginTestHarness.steps)
        for step in report.steps {
            #expect(step.outcome == .passed, "\(step.name): \(step.detail)")
        }
        #expect(report.passed)
        #expect(report.step("switch-in")?.detail.contains("with \(bundle) (\(bundle).npabundle)") == true)
        #expect(report.step("offloads")?.detail.contains("the NIC cut") == true, "\(report.step("offloads")?.detail ?? "")")
        #expect(report.step("flr")?.detail.contains("VF reset by the host") == true)
        #expect(report.step("vf-disabled")?.detail.contains("plugin fault") == true)
    }

    @Test func aBundleSignedByAnUntrustedKeyFailsAtVerifyAndNothingElseRuns() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try PluginSigningKey.generate().publicKey.write(to: "\(dir)/stranger.pub")
        let report = PluginTestHarness(try options("npa-dring", model: "npa-dring", trust: ["\(dir)/stranger.pub"])).run()
        let verify = try #require(report.step("verify"))
        #expect(verify.outcome == .failed)
        #expect(verify.detail.contains("npa-dring.npabundle refused: ") && verify.detail.contains("not trusted"), "\(verify.detail)")
        #expect(report.steps.dropFirst().allSatisfy { $0.outcome == .skipped })
        #expect(!report.passed)
    }

    @Test func aModelTheManifestDoesNotNameFailsAtVerify() throws {
        let report = PluginTestHarness(try options("npa-dring", model: "npa-cq")).run()
        let verify = try #require(report.step("verify"))
        #expect(verify.outcome == .failed)
        #expect(verify.detail.contains("the manifest names npa-dring, not npa-cq"), "\(verify.detail)")
        #expect(report.steps.dropFirst().allSatisfy { $0.outcome == .skipped })
    }

    /// Through the command (the guests in a child process): exit 0 and a JSON report.
    @Test func theCommandPassesAnInTreeBundleAndPrintsJSON() throws {
        let bundle = try PluginImages.directory().appendingPathComponent("npa-dring.npabundle").path
        let result = try NPAProcess([
            "plugin", "test", bundle, "--model", "npa-dring", "--trust", try PluginImages.publicKeyPath(), "--frames", "200", "--timeout",
            "\(Self.stallSeconds)", "--json",
        ]).finish()
        #expect(result.status == 0, "\(result.stdout) \(result.stderr)")
        let report = try JSONDecoder().decode(PluginTestReport.self, from: Data(result.stdout.utf8))
        #expect(report.passed && report.steps.map(\.name) == PluginTestHarness.steps)
        #expect(result.stdout.contains("\"passed\":true"))
    }

    /// A plugin (npa-dring's, with `check_tx_ring` replaced) that never reports a completion:
    /// the VF sends its frames, but the guest's ring fills and its buffers never come back.
    /// The traffic step fails after --timeout without progress and says so; exit status 1.
    @Test func aPluginThatNeverCompletesATransmitFailsTheTrafficStep() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bundle = try buildBrokenPlugin(
            in: dir, name: "never-completes",
            replacing: "static uint32_t broken(npa_plugin_state *s, uint32_t q) { (void)s; (void)q; return 0; }", op: "check_tx_ring")
        let (status, report) = try runPluginTest(bundle, trust: "\(dir)/vendor.pub", frames: 3000, timeout: 8)
        #expect(status == 1, "\(report.lines())")
        #expect(report.step("switch-in")?.outcome == .passed, "\(report.lines())")
        let traffic = try #require(report.step("traffic"))
        #expect(traffic.outcome == .failed)
        #expect(traffic.detail.contains("never completed"), "\(traffic.detail)")
        #expect(report.steps.filter { $0.number > traffic.number && $0.name != "teardown" }.allSatisfy { $0.outcome == .skipped })
        // The shell owns every buffer: switched out, the guest has them all back.
        #expect(report.step("teardown")?.outcome == .passed, "\(report.lines())")
    }

    /// The SDK's C walk-through (docs/plugin-sdk.md §6), taken from the page as it stands and
    /// built, signed and tested as the page says: it must pass every step, so the page stays true.
    @Test func theSDKWalkThroughPluginPassesEveryStep() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let page = try String(contentsOf: PluginImages.root.appendingPathComponent("docs/plugin-sdk.md"), encoding: .utf8)
        let section = try #require(page.components(separatedBy: "## 6. Walk-through: a plugin in C").dropFirst().first)
        let code = try #require(section.components(separatedBy: "```c\n").dropFirst().first?.components(separatedBy: "```").first)
        try FileManager.default.createDirectory(atPath: "\(dir)/acme", withIntermediateDirectories: true)
        try Data(code.utf8).write(to: URL(fileURLWithPath: "\(dir)/acme/acme.c"))
        let manifest =
            #"{"name": "acme-vf", "version": "0.1", "vendor": "ACME Networks", "models": [{"model": "npa-dring", "vfDeviceIDs": []}], "licence": "GPL-2.0-only"}"#
        try Data(manifest.utf8).write(to: URL(fileURLWithPath: "\(dir)/acme/plugin.json"))
        #expect(try NPAProcess(["plugin", "keygen", "--out", "\(dir)/acme.key"]).finish().status == 0)
        let built = try NPAProcess(["plugin", "build", "\(dir)/acme", "--out", "\(dir)/acme.npabundle", "--key", "\(dir)/acme.key"])
            .finish()
        try #require(built.status == 0, "\(built.stdout) \(built.stderr)")
        let (status, report) = try runPluginTest(
            "\(dir)/acme.npabundle", trust: "\(dir)/acme.key.pub", frames: 1000, timeout: Self.stallSeconds)
        #expect(status == 0 && report.passed, "\(report.lines())")
    }

    /// A plugin (npa-dring's, with `check_rx_ring` ignoring `max_frames`) that hands the shell
    /// more frames than it asked for: the shell takes them (the buffers are the guest's) and
    /// counts the breach, and the traffic step fails naming it.
    @Test func aPluginThatIndicatesMoreThanAskedFailsTheTrafficStep() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bundle = try buildBrokenPlugin(
            in: dir, name: "ignores-max",
            replacing: "static uint32_t broken(npa_plugin_state *s, uint32_t q, uint32_t n) { (void)n; return check_rx_ring(s, q, 256); }",
            op: "check_rx_ring")
        let (status, report) = try runPluginTest(bundle, trust: "\(dir)/vendor.pub", frames: 3000, timeout: Self.stallSeconds)
        #expect(status == 1, "\(report.lines())")
        let traffic = try #require(report.step("traffic"))
        #expect(traffic.outcome == .failed && traffic.detail.contains("beyond check_rx_ring's max_frames"), "\(report.lines())")
    }

    /// A plugin that dereferences a null pointer when asked for received frames kills the
    /// guest's process: the step it was in fails with the signal, the rest are skipped.
    @Test func aPluginThatCrashesTheGuestFailsTheStepItCrashedIn() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bundle = try buildBrokenPlugin(
            in: dir, name: "crashes",
            replacing:
                "static uint32_t broken(npa_plugin_state *s, uint32_t q, uint32_t n) { (void)s; (void)q; (void)n; *(volatile uint32_t *)0 = 1; return 0; }",
            op: "check_rx_ring")
        let (status, report) = try runPluginTest(bundle, trust: "\(dir)/vendor.pub", frames: 200, timeout: Self.stallSeconds)
        #expect(status == 1, "\(report.lines())")
        let failed = report.steps.filter { $0.outcome == .failed }
        #expect(failed.count == 1 && failed[0].detail.contains("killed by signal 11"), "\(report.lines())")
        #expect(report.steps.filter { $0.number > (failed.first?.number ?? 0) }.allSatisfy { $0.outcome == .skipped })
    }

    // MARK: Helpers

    /// `npa plugin test BUNDLE --model npa-dring --json` through the built binary: its exit
    /// status and its report.
    func runPluginTest(_ bundle: String, trust: String, frames: Int, timeout: Double) throws -> (status: Int32, report: PluginTestReport) {
        let result = try NPAProcess([
            "plugin", "test", bundle, "--model", "npa-dring", "--trust", trust, "--frames", "\(frames)", "--timeout", "\(timeout)",
            "--json",
        ]).finish()
        let report = try #require(
            try? JSONDecoder().decode(PluginTestReport.self, from: Data(result.stdout.utf8)), "\(result.stdout) \(result.stderr)")
        return (result.status, report)
    }

    func temporaryDirectory() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "npa-plugin-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        ).path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    /// npa-dring's plugin with one operation replaced by `function` (named `broken`), built and
    /// signed with a fresh key (`dir/vendor`, trusted through `dir/vendor.pub`) by `npa plugin
    /// build`, as a vendor would. Returns the bundle's path.
    func buildBrokenPlugin(in dir: String, name: String, replacing function: String, op: String) throws -> String {
        let source = "\(dir)/\(name)"
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
        let original = PluginImages.root.appendingPathComponent("Plugins/dring/npa_dring_plugin.c").path
        let c = """
            // SPDX-License-Identifier: GPL-2.0-only
            #define NPA_PLUGIN_ENTRY_NAME working_plugin_main
            #include "\(original)"
            \(function)
            EXPORT int32_t npa_plugin_main(npa_plugin_ops *ops) {
                int32_t result = working_plugin_main(ops);
                ops->\(op) = broken;
                ops->name = "\(name)";
                return result;
            }

            """
        try Data(c.utf8).write(to: URL(fileURLWithPath: "\(source)/\(name).c"))
        let manifest =
            #"{"name": "\#(name)", "version": "0.1", "vendor": "test", "models": [{"model": "npa-dring", "vfDeviceIDs": []}], "licence": "GPL-2.0-only"}"#
        try Data(manifest.utf8).write(to: URL(fileURLWithPath: "\(source)/plugin.json"))
        #expect(try NPAProcess(["plugin", "keygen", "--out", "\(dir)/vendor"]).finish().status == 0)
        let bundle = "\(dir)/\(name).npabundle"
        let built = try NPAProcess(["plugin", "build", source, "--out", bundle, "--key", "\(dir)/vendor"]).finish()
        try #require(built.status == 0, "\(built.stdout) \(built.stderr)")
        return bundle
    }
}
