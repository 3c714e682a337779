import Foundation
import Logging
import NPAHost
import NPASystem

/// A host daemon running on its own thread for one test, on a fresh socket path.
final class TestHost: @unchecked Sendable {
    let daemon: HostDaemon
    let socketPath: String
    private var thread: pthread_t?

    init(configuration: HostConfiguration = HostConfiguration(), label: String = #function) throws {
        socketPath = NSTemporaryDirectory() + "npa-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        var logger = Logger(label: "npa.test.host")
        logger.logLevel = ProcessInfo.processInfo.environment["NPA_TEST_LOG"] != nil ? .debug : .critical
        daemon = try HostDaemon(socketPath: socketPath, configuration: configuration, logger: logger)
        let d = daemon
        thread = EngineThread.start(name: "npa-host") {
            do { try d.run() } catch { print("host failed: \(error)") }
        }
    }

    func stop() {
        daemon.stop()
        if let t = thread { EngineThread.join(t) }
        thread = nil
    }

    deinit { stop() }
}
