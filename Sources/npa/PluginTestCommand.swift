import ArgumentParser
import Foundation

/// `npa plugin test BUNDLE --model M --trust K.pub [--frames N] [--timeout S] [--json]`: a
/// vendor's test of a plugin bundle against the software NIC model (`PluginTestHarness`), step
/// by step, pass or fail. Exit status 0 only if every step passed, 1 if one failed.
struct PluginTest: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "test",
        abstract: "Test a plugin bundle against the software NIC model: attach, traffic, switch out and in, FLR; pass/fail per step.",
        discussion: """
            Steps: verify (as a host does, against --trust), host (a host whose store holds only this \
            bundle, one NIC of --model), attach (emulated, frames with a peer), switch-in (to a VF with \
            this plugin), traffic, switch-out (under traffic: nothing lost, no buffer leaked), \
            switch-in-again, flr (the host resets the VF under traffic: the guest ends on emulation, \
            nothing lost), switch-in-after-flr, vf-disabled (the VF dies under the plugin: it must \
            report the fault), teardown (buffers back, no VF held). A failed step skips the rest \
            (teardown still runs). Every wait ends after --timeout seconds without progress. \
            Exit status: 0 every step passed; 1 a step failed.
            """)

    @Argument(help: "The bundle file (npa plugin build).") var bundle: String
    @Option(help: NICModelOption.help) var model: String
    @Option(name: .customLong("trust"), help: "A trusted public key file (K.pub); repeat for more.")
    var trust: [String] = []
    @Option(help: "Frames each way in each traffic step.") var frames: Int = 10_000
    @Option(help: "Seconds any wait may go without progress before its step fails.") var timeout: Double = 30
    @Flag(help: "Print the report as one JSON object.") var json = false

    func validate() throws {
        try NICModelOption.validate(model)
        guard frames >= 2 else { throw ValidationError("--frames must be at least 2") }
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
    }

    func run() throws {
        let harness = PluginTestHarness(
            .init(bundle: bundle, model: model, trust: trust, frames: frames, stallSeconds: timeout))
        if !json {
            print("plugin test: \(bundle) on model \(model)")
            harness.onStep = { step in
                print(PluginTestReport.line(step))
                fflush(nil)
            }
        }
        let report = harness.run()
        if json {
            print(report.json())
        } else {
            print(report.verdict)
        }
        if !report.passed { throw ExitCode(ExitStatus.notVerified) }
    }
}
