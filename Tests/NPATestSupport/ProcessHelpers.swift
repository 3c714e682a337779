import Foundation

/// The `npa` executable built next to this test binary.
package let npaExecutable: URL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    .deletingLastPathComponent().appendingPathComponent("npa")

/// A child `npa` process whose output is read line by line.
package final class NPAProcess {
    package let process = Process()
    private let stdout = Pipe()
    private let stderr = Pipe()
    private let stdin = Pipe()
    private var buffered = Data()
    private var bufferedErrors = Data()

    /// `environment`: variables added to (or replacing) this process's for the child.
    package init(_ arguments: [String], environment: [String: String] = [:]) throws {
        process.executableURL = npaExecutable
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        }
        process.standardOutput = stdout
        process.standardError = stderr
        process.standardInput = stdin
        try process.run()
    }

    /// Reads standard output (or standard error) until a line contains `marker`; nil at end.
    package func line(containing marker: String, onStandardError: Bool = false) -> String? {
        while true {
            let seen = onStandardError ? bufferedErrors : buffered
            if let text = String(data: seen, encoding: .utf8) {
                for line in text.split(separator: "\n") where line.contains(marker) { return String(line) }
            }
            let chunk = (onStandardError ? stderr : stdout).fileHandleForReading.availableData
            if chunk.isEmpty { return nil }
            if onStandardError { bufferedErrors.append(chunk) } else { buffered.append(chunk) }
        }
    }

    /// Waits until the guest says it is attached (on standard error).
    package func waitUntilAttached() -> Bool { line(containing: "attached as", onStandardError: true) != nil }

    /// Waits for exit; returns (status, all remaining stdout, stderr).
    package func finish() -> (status: Int32, stdout: String, stderr: String) {
        try? stdin.fileHandleForWriting.close()
        let rest = stdout.fileHandleForReading.readDataToEndOfFile()
        let err = stderr.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        buffered.append(rest)
        bufferedErrors.append(err)
        return (process.terminationStatus, String(decoding: buffered, as: UTF8.self), String(decoding: bufferedErrors, as: UTF8.self))
    }

    package func kill() { Foundation.kill(process.processIdentifier, SIGKILL) }
}
