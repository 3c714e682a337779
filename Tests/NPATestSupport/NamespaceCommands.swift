import Foundation

/// The Linux tools the kernel-stack tests drive (`ip`, and programs run inside a network
/// namespace with `ip netns exec`): thin wrappers that start them and collect what they say.
/// They touch nothing but the processes they start.

/// Where `ip` lives: /usr/sbin on Debian and Ubuntu, /sbin on older layouts.
private var ipExecutable: URL {
    URL(fileURLWithPath: FileManager.default.fileExists(atPath: "/usr/sbin/ip") ? "/usr/sbin/ip" : "/sbin/ip")
}

/// `ip ARGS` exited non-zero; says the command and its standard error.
package struct IPCommandFailed: Error, CustomStringConvertible {
    package let description: String
}

/// Runs `ip ARGS`, throwing with its standard error if it fails.
@discardableResult
package func ip(_ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = ipExecutable
    process.arguments = arguments
    let errors = Pipe()
    process.standardError = errors
    process.standardOutput = Pipe()
    try process.run()
    process.waitUntilExit()
    let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    if process.terminationStatus != 0 { throw IPCommandFailed(description: "ip \(arguments.joined(separator: " ")): \(message)") }
    return message
}

/// Runs `ip ARGS` and returns its standard output.
package func ipOutput(_ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = ipExecutable
    process.arguments = arguments
    let output = Pipe()
    process.standardOutput = output
    try process.run()
    let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return text
}

/// Starts `python3 -c SCRIPT` inside the namespace `ns`, its standard output on a pipe.
package func python(in ns: String, _ script: String, arguments: [String] = []) throws -> Process {
    let process = Process()
    process.executableURL = ipExecutable
    process.arguments = ["netns", "exec", ns, "python3", "-c", script] + arguments
    process.standardOutput = Pipe()
    try process.run()
    return process
}

/// Whether `tool` is an executable in one of PATH's directories (or the sbin ones).
package func toolIsInstalled(_ tool: String) -> Bool {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
    return (path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin"])
        .contains { FileManager.default.isExecutableFile(atPath: "\($0)/\(tool)") }
}

/// Starts `COMMAND` inside the namespace `ns`, its standard output and error on one pipe.
package func start(in ns: String, _ command: [String]) throws -> Process {
    let process = Process()
    process.executableURL = ipExecutable
    process.arguments = ["netns", "exec", ns] + command
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    try process.run()
    return process
}

/// Runs `COMMAND` inside the namespace `ns` to its end: its exit status and combined output.
package func run(in ns: String, _ command: [String]) throws -> (status: Int32, output: String) {
    let process = try start(in: ns, command)
    // Read to the end first: a full pipe would otherwise block the child before it exits.
    let data = (process.standardOutput as! Pipe).fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}
