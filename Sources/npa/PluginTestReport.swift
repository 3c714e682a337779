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

    private enum CodingKeys: String, CodingKey { case bundle, model, plugin, steps, passed }

    init(bundle: String, model: String, plugin: String? = nil, steps: [Step] = []) {
        self.bundle = bundle
        self.model = model
        self.plugin = plugin
        self.steps = steps
    }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            bundle: try c.decode(String.self, forKey: .bundle), model: try c.decode(String.self, forKey: .model),
            plugin: try c.decodeIfPresent(String.self, forKey: .plugin), steps: try c.decode([Step].self, forKey: .steps))
    }

    /// `passed` is derived, not stored, and written too, so a script need not recompute it.
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(bundle, forKey: .bundle)
        try c.encode(model, forKey: .model)
        try c.encodeIfPresent(plugin, forKey: .plugin)
        try c.encode(steps, forKey: .steps)
        try c.encode(passed, forKey: .passed)
    }

    func json() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
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
