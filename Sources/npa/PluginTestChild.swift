import Foundation
import Glibc

/// Runs `PluginTestHarness` in a child `npa plugin test … --step-lines` process, so that a
/// plugin that crashes the process (it runs inside the guest's shell, with the guest's rights)
/// or never returns from a call fails its step instead of taking the report with it. The child
/// prints each step as it ends, one JSON line; this side forwards them and, if the child dies
/// or says nothing for `silenceSeconds`, fails the step it was in and skips the rest. Touches
/// the child, its pipe and a temporary file for its standard error.
struct PluginTestChild {
    /// The marker before each step's JSON line on the child's standard output.
    static let marker = "npa-plugin-test-step "

    let options: PluginTestHarness.Options
    var onStep: (PluginTestReport.Step) -> Void = { _ in }

    /// How long the child may go without finishing a step: a step waits at most a few times
    /// `stallSeconds` (traffic, then the flush, then a switch), so well beyond that it is stuck.
    var silenceSeconds: Double { options.stallSeconds * 6 + 30 }

    func run(plugin: inout String?) throws -> [PluginTestReport.Step] {
        let errors = NSTemporaryDirectory() + "npa-plugin-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).err"
        guard FileManager.default.createFile(atPath: errors, contents: nil) else { throw CommandFailure("\(errors): cannot be written") }
        defer { unlink(errors) }
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        child.arguments =
            [
                "plugin", "test", options.bundle, "--model", options.model, "--frames", "\(options.frames)", "--timeout",
                "\(options.stallSeconds)",
            ]
            + options.trust.flatMap { ["--trust", $0] } + ["--step-lines"]
        let output = Pipe()
        child.standardOutput = output
        child.standardError = FileHandle(forWritingAtPath: errors)
        child.standardInput = FileHandle.nullDevice
        // A crash is reported by its signal; the runtime's backtrace would only cost seconds.
        var environment = ProcessInfo.processInfo.environment
        environment["SWIFT_BACKTRACE"] = "enable=no"
        child.environment = environment
        do { try child.run() } catch { throw CommandFailure("cannot start the test process: \(error)") }
        let reader = output.fileHandleForReading
        var steps: [PluginTestReport.Step] = []
        var buffered = Data()
        var ended = false
        var stepStart = Date()
        while !ended && steps.count < PluginTestHarness.steps.count {
            var poller = pollfd(fd: reader.fileDescriptor, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, Int32(silenceSeconds * 1000))
            if ready < 0 && errno == EINTR { continue }
            if ready <= 0 {
                kill(child.processIdentifier, SIGKILL)
                child.waitUntilExit()
                removeLeftovers(of: child.processIdentifier)
                finish(
                    &steps,
                    why: String(
                        format: "no answer for %.0f s: the plugin seems to loop inside a call (the test process was killed)", silenceSeconds
                    ),
                    seconds: -stepStart.timeIntervalSinceNow)
                return steps
            }
            let chunk = reader.availableData
            if chunk.isEmpty { ended = true }
            buffered.append(chunk)
            while let newline = buffered.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffered[buffered.startIndex..<newline], as: UTF8.self)
                buffered.removeSubrange(buffered.startIndex...newline)
                guard line.hasPrefix(Self.marker) else { continue }
                let json = Data(line.dropFirst(Self.marker.count).utf8)
                if let step = try? JSONDecoder().decode(PluginTestReport.Step.self, from: json) {
                    steps.append(step)
                    onStep(step)
                    stepStart = Date()
                } else if let name = try? JSONDecoder().decode(String.self, from: json) {
                    plugin = name
                }
            }
        }
        child.waitUntilExit()
        if steps.count < PluginTestHarness.steps.count {
            removeLeftovers(of: child.processIdentifier)
            let said = ((try? String(contentsOfFile: errors, encoding: .utf8)) ?? "").split(separator: "\n").last.map { ": \($0)" } ?? ""
            let how =
                child.terminationReason == .uncaughtSignal
                ? "killed by signal \(child.terminationStatus), \(String(cString: strsignal(child.terminationStatus)))"
                : "exit status \(child.terminationStatus)\(said)"
            finish(&steps, why: "the test process died in this step (\(how))", seconds: -stepStart.timeIntervalSinceNow)
        }
        return steps
    }

    /// A child that died left its store directory and host sockets (named after its pid, by
    /// `PluginTestHarness` and `InProcessHost`) in the temporary directory.
    private func removeLeftovers(of pid: pid_t) {
        let directory = NSTemporaryDirectory()
        let prefix = "npa-plugin-test-\(pid)-"
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] where name.hasPrefix(prefix) {
            try? FileManager.default.removeItem(atPath: directory + "/" + name)
        }
    }

    /// The step the child was in fails with `why`; the ones after it are skipped.
    private func finish(_ steps: inout [PluginTestReport.Step], why: String, seconds: Double) {
        let failing = steps.count
        for index in failing..<PluginTestHarness.steps.count {
            let first = index == failing
            let step = PluginTestReport.Step(
                number: index, name: PluginTestHarness.steps[index], outcome: first ? .failed : .skipped,
                detail: first ? why : "skipped: the test process is gone", seconds: first ? seconds : 0)
            steps.append(step)
            onStep(step)
        }
    }
}
