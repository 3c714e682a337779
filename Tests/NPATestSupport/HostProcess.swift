import Foundation
import NPAAdmin
import NPAControlProtocol
import NPASystem

/// A host in its own `npa host` process, on a fresh path; killed and its socket removed at
/// the end of the test whatever happens (`defer { host.end() }`).
package final class HostProcess {
    package let socketPath: String
    package let admin: AdminClient
    package let process: NPAProcess
    private let configPath: String?

    package init(config: String? = nil, extraArguments: [String] = []) throws {
        socketPath = TestHost.freshSocketPath()
        admin = AdminClient(controlSocket: socketPath)
        var arguments = ["host", "--socket", socketPath, "--log-level", "error"] + extraArguments
        if let config {
            let path = socketPath + ".yaml"
            try config.write(toFile: path, atomically: true, encoding: .utf8)
            configPath = path
            arguments += ["--config", path]
        } else {
            configPath = nil
        }
        process = try NPAProcess(arguments)
    }

    /// True once the host accepts connections on both its sockets (or false if it never does,
    /// or exited). The admin socket is bound just after the control socket: a test that asks the
    /// admin socket as soon as guests could attach would otherwise race that window.
    package func waitUntilListening() -> Bool {
        let admin = HostSocketPath.admin(forControl: socketPath)
        return eventually {
            !process.process.isRunning
                || ((try? SeqPacketSocket.probe(path: socketPath)) == .live && (try? SeqPacketSocket.probe(path: admin)) == .live)
        } && process.process.isRunning
    }

    /// SIGKILL, then wait until the process is gone: from then on the kernel has closed
    /// every descriptor it held, its end of each guest's control connection included.
    package func killAndReap() {
        process.kill()
        process.process.waitUntilExit()
    }

    package func end() {
        if process.process.isRunning { process.kill() }
        _ = process.finish()
        unlink(socketPath)
        if let configPath { unlink(configPath) }
    }
}
