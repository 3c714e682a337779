import Foundation
import Glibc

/// A program `npa bench --tcp` starts (`ip`, `iperf3`) and reaps itself, with posix_spawn(3) and
/// wait4(2) rather than Foundation's `Process`: wait4 returns the child's user and system CPU time
/// exactly at its exit (the utime and stime /proc/PID/stat shows while it runs, plus those of
/// any children it reaped). A child spawned from a thread inside a network namespace runs there.
/// Standard output and error go to one temporary file, read once the child has exited.
final class ChildProgram: @unchecked Sendable {
    /// How a child ended and the CPU it used.
    struct Exit {
        var status: Int32
        var userSeconds: Double
        var systemSeconds: Double
        var output: String
        var cpuSeconds: Double { userSeconds + systemSeconds }
    }

    let pid: pid_t
    let command: String
    private let outputPath: String
    private(set) var exit: Exit?

    /// Starts `arguments[0]` (an absolute path) with the rest as its arguments.
    init(_ arguments: [String]) throws {
        command = arguments.joined(separator: " ")
        outputPath = NSTemporaryDirectory() + "npa-bench-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).out"
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var child = pid_t()
        let result = posix_spawn(&child, arguments[0], &actions, nil, argv, environ)
        guard result == 0 else { throw CommandFailure("cannot start \(arguments[0]): \(String(cString: strerror(result)))") }
        pid = child
    }

    /// Waits for the child's exit, polling every 10 ms (this thread's CPU is not measured), up to
    /// `timeoutSeconds`; nil if it is still running then.
    @discardableResult
    func wait(timeoutSeconds: Double) -> Exit? {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while exit == nil {
            var status: Int32 = 0
            var usage = rusage()
            let reaped = wait4(pid, &status, WNOHANG, &usage)
            if reaped == pid {
                let code = (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
                let output = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
                unlink(outputPath)
                exit = Exit(
                    status: code, userSeconds: Self.seconds(usage.ru_utime), systemSeconds: Self.seconds(usage.ru_stime), output: output)
            } else if reaped < 0 && errno != EINTR {
                exit = Exit(status: -1, userSeconds: 0, systemSeconds: 0, output: "wait4: \(String(cString: strerror(errno)))")
            } else if Date() >= deadline {
                return nil
            } else {
                usleep(10_000)
            }
        }
        return exit
    }

    /// Kills the child (if it still runs) and reaps it.
    func kill() {
        guard exit == nil else { return }
        Glibc.kill(pid, SIGKILL)
        wait(timeoutSeconds: 10)
    }

    /// Runs a program to its end; throws with its output if it fails.
    @discardableResult
    static func run(_ arguments: [String], timeoutSeconds: Double = 30) throws -> Exit {
        let child = try ChildProgram(arguments)
        guard let exit = child.wait(timeoutSeconds: timeoutSeconds) else {
            child.kill()
            throw CommandFailure("\(child.command): no exit after \(Int(timeoutSeconds)) s")
        }
        guard exit.status == 0 else {
            throw CommandFailure("\(child.command): exit \(exit.status): \(exit.output.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return exit
    }

    /// The absolute path of `tool` in PATH or the sbin folders, or nil if it is not installed.
    static func find(_ tool: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        return (path.split(separator: ":").map(String.init) + ["/usr/local/bin", "/usr/bin", "/usr/sbin", "/sbin"])
            .map { "\($0)/\(tool)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    private static func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
}
