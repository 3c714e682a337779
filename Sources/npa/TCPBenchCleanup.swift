import Foundation
import Glibc
import NPASystem

/// What `npa bench --tcp` must undo however it ends: the network namespaces it made and the
/// programs it started in them. `removeAll()` runs on the normal path and on errors (a `defer`);
/// on SIGINT or SIGTERM a watcher thread runs it and exits with 130. A namespace is registered
/// before it is created, so a signal in between removes it too (deleting one that does not
/// exist yet fails harmlessly).
final class TCPBenchCleanup: @unchecked Sendable {
    private let lock = NSLock()
    private var namespaces: [String] = []
    private var children: [ChildProgram] = []
    let ip: String

    init(ip: String) { self.ip = ip }

    /// From now on SIGINT and SIGTERM remove everything registered and end the process (130).
    func removeAllOnTerminationSignals() throws {
        let signalled = try EventNotifier()
        TerminationSignals.deliver(to: signalled.fd.rawValue)
        _ = EngineThread.start(name: "npa-bench-sig") { [self] in
            while !signalled.wait(timeoutMilliseconds: -1) {}
            removeAll()
            standardError("npa bench: interrupted; its namespaces and programs were removed")
            Glibc.exit(130)
        }
    }

    func register(namespace: String) { lock.withLock { namespaces.append(namespace) } }
    func register(_ child: ChildProgram) { lock.withLock { children.append(child) } }
    func forget(_ child: ChildProgram) { lock.withLock { children.removeAll { $0 === child } } }

    /// Kills the registered programs, then deletes the namespaces. Idempotent.
    func removeAll() {
        let (programs, names) = lock.withLock { () -> ([ChildProgram], [String]) in
            defer {
                children = []
                namespaces = []
            }
            return (children, namespaces)
        }
        for child in programs { Glibc.kill(child.pid, SIGKILL) }
        for name in names { _ = try? ChildProgram.run([ip, "netns", "delete", name]) }
    }
}
