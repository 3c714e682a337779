// The stepping calls are internal to the host (only a test or a fuzzer drives a host a pass at a
// time), hence `@testable`, which debug builds allow; `swift test` builds debug. A release build
// of every target (`swift build -c release`) leaves this type out instead of failing.
#if DEBUG
    import Foundation
    import Logging
    @testable import NPAHost
    import NPASystem

    /// A host daemon stepped on a thread of its own by the test (control events, then one
    /// data-path pass, as FuzzTesting steps a host), which also runs work the test hands it
    /// between two passes: how a test reaches host-thread-only operations (checkpoint and restore)
    /// while guests keep running on other threads.
    package final class SteppedTestHost: @unchecked Sendable {
        package let daemon: HostDaemon
        package let socketPath: String
        private let condition = NSCondition()
        private var requests: [() -> Void] = []
        private var stopping = false
        private var thread: pthread_t?

        package init(configuration: HostConfiguration = HostConfiguration()) throws {
            var configuration = configuration
            // As TestHost: no outcome may depend on how long a loaded machine sets a guest aside.
            configuration.receiverStallMilliseconds = 60_000
            configuration.switchTimeoutMilliseconds = 60_000
            if configuration.pluginTrust.isEmpty && !configuration.nics.isEmpty {
                configuration.pluginTrust = [try PluginImages.publicKeyPath()]
            }
            socketPath = TestHost.freshSocketPath()
            var logger = Logger(label: "npa.test.stepped-host")
            logger.logLevel = ProcessInfo.processInfo.environment["NPA_TEST_LOG"] != nil ? .debug : .critical
            daemon = try HostDaemon(socketPath: socketPath, configuration: configuration, logger: logger)
            thread = EngineThread.start(name: "npa-host") { [self] in step() }
        }

        private func step() {
            while true {
                condition.lock()
                let work = requests, stop = stopping
                requests = []
                condition.unlock()
                for request in work { request() }
                if stop { return }
                guard (try? daemon.serveReadyEvents()) == true else { return }
                // Never asleep: guests see the device polling and need not kick.
                if daemon.runDataPathPass() == 0 { sched_yield() }
            }
        }

        /// Runs `body` on the host's thread between two data-path passes; returns what it returned.
        package func onHostThread<T>(_ body: @escaping (HostDaemon) throws -> T) throws -> T {
            var result: Result<T, Error>?
            let daemon = self.daemon
            condition.lock()
            defer { condition.unlock() }
            requests.append { [condition] in
                let outcome = Result { try body(daemon) }
                condition.lock()
                result = outcome
                condition.broadcast()
                condition.unlock()
            }
            while result == nil { condition.wait() }
            return try result!.get()
        }

        package func stop() {
            condition.lock()
            stopping = true
            condition.unlock()
            if let t = thread { EngineThread.join(t) }
            thread = nil
            // Never run, the daemon removes neither socket file itself.
            unlink(socketPath)
            unlink(daemon.adminSocketPath)
        }

        deinit { stop() }
    }
#endif
