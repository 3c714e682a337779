import Foundation

/// What `npa plugin test` found: one entry per step of `PluginTestHarness`, in order, each
/// passed, failed or skipped (a step that depends on a failed one does not run) with one line
/// saying what was checked or why it failed. Printed as a table, or as one JSON object with
/// `--json`. A plain value: it touches nothing.
struct PluginTestReport: Codable, Equatable {
    enum Outcome: String, Codable, Equatable {
        case passed = "pass"
        case failed = "fail"
        case skipped = "skip"
    }

    struct Step: Codable, Equatable {
        var number: Int
        var name: String
        var outcome: Outcome
        /// Frames, time, the plugin and VF used; or, for a failure, the reason.
        var detail: String
        var seconds: Double
    }

    var bundle: String
    var model: String
    /// The plugin's name and version from its manifest, once the bundle verified.
    var plugin: String?
    var steps: [Step] = []

    /// True only if every step ran and passed.
    var passed: Bool { !steps.isEmpty && steps.allSatisfy { $0.outcome == .passed } }

    /// The step named `name`, if the report has it.
    func step(_ name: String) -> Step? { steps.first { $0.name == name } }

    func json() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var object = (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        // `passed` is derived, not stored: added so a script need not recompute it.
        object.removeLast()
        return object + ",\"passed\":\(passed)}"
    }

    /// The header, one line per step ("  3 switch-in           pass  …"), then the verdict.
    func lines() -> [String] {
        var out = ["plugin test: \(bundle) on model \(model)\(plugin.map { " (\($0))" } ?? "")"]
        out += steps.map(Self.line)
        out.append(verdict)
        return out
    }

    var verdict: String {
        let failed = steps.filter { $0.outcome == .failed }.map(\.name)
        return passed ? "PASS: every step passed" : "FAIL: \(failed.isEmpty ? "steps skipped" : failed.joined(separator: ", ") + " failed")"
    }

    static func line(_ s: Step) -> String {
        let width = PluginTestHarness.steps.map(\.count).max()! + 2
        let time = s.outcome == .skipped ? "" : String(format: " (%.2f s)", s.seconds)
        return String(format: "%3d ", s.number) + s.name.padding(toLength: width, withPad: " ", startingAt: 0)
            + s.outcome.rawValue.padding(toLength: 6, withPad: " ", startingAt: 0) + s.detail + time
    }
}
