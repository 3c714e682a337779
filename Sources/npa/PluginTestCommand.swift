import ArgumentParser
import Foundation

/// `npa plugin test BUNDLE --model M --trust K.pub [--frames N] [--timeout S] [--json]`: a
/// vendor's test of a plugin bundle against the software NIC model (`PluginTestHarness`), step
/// by step, pass or fail, run in a child process (`PluginTestChild`) so that a plugin that
/// crashes or hangs fails its step. Exit status 0 only if every step passed, 1 if one failed.
struct PluginTest: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "test",
        abstract: "Test a plugin bundle against the software NIC model: attach, traffic, switch out and in, FLR; pass/fail per step.",
        discussion: """
            Steps: verify (as a host does, against --trust), host (a host whose store holds only this \
            bundle, one NIC of --model), attach (emulated, frames with a peer), switch-in (to a VF with \
            this plugin), traffic, offloads (checksum and TSO requests through the VF), switch-out (under traffic: nothing lost, no buffer leaked), \
            switch-in-again, flr (the host resets the VF under traffic: the guest ends on emulation, \
            nothing lost), switch-in-after-flr, vf-disabled (the VF dies under the plugin: it must \
            report the fault), teardown (buffers back, no VF held). A failed step skips the rest \
            (teardown still runs). Every wait ends after --timeout seconds without progress; a plugin \
            that crashes the test process or never returns fails the step it was in. \
            Exit status: 0 every step passed; 1 a step failed.
            """)

    @Argument(help: "The bundle file (npa plugin build).") var bundle: String
    @Option(help: NICModelOption.help) var model: String
    @Option(name: .customLong("trust"), help: "A trusted public key file (K.pub); repeat for more.")
    var trust: [String] = []
    @Option(help: "Frames each way in each traffic step.") var frames: Int = 10_000
    @Option(help: "Seconds any wait may go without progress before its step fails.") var timeout: Double = 30
    @Flag(help: "Print the report as one JSON object.") var json = false
    @Flag(help: "Run the guests in this process (for a debugger): a plugin that crashes ends the test with no report.")
    var inProcess = false
    /// The child's side of `PluginTestChild`: each step as a marked JSON line, nothing else.
    @Flag(help: .hidden) var stepLines = false

    func validate() throws {
        try NICModelOption.validate(model)
        guard frames >= 2 else { throw ValidationError("--frames must be at least 2") }
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
    }

    func run() throws {
        let options = PluginTestHarness.Options(bundle: bundle, model: model, trust: trust, frames: frames, stallSeconds: timeout)
        let show: (PluginTestReport.Step) -> Void = { step in
            guard !json else { return }
            print(PluginTestReport.line(step))
            fflush(nil)
        }
        if !json && !stepLines { print("plugin test: \(bundle) on model \(model)") }
        var report = PluginTestReport(bundle: bundle, model: model)
        if stepLines {
            let harness = PluginTestHarness(options)
            harness.onStep = { step in
                let encoder = JSONEncoder()
                if step.number == 0, let plugin = harness.report.plugin, let name = try? encoder.encode(plugin) {
                    print(PluginTestChild.marker + String(decoding: name, as: UTF8.self))
                }
                if let line = try? encoder.encode(step) { print(PluginTestChild.marker + String(decoding: line, as: UTF8.self)) }
                fflush(nil)
            }
            _ = harness.run()
            return
        } else if inProcess {
            let harness = PluginTestHarness(options)
            harness.onStep = show
            report = harness.run()
        } else {
            var child = PluginTestChild(options: options)
            child.onStep = show
            report.steps = try child.run(plugin: &report.plugin)
        }
        print(json ? report.json() : report.verdict)
        if !report.passed { throw ExitCode(ExitStatus.notVerified) }
    }
}
