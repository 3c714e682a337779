import Foundation
import NPAControlProtocol
import NPAHost
import NPAShell
import NPASystem

/// Two in-process hosts that may migrate guests to each other: one key file (0600, removed at
/// `stop`), each host's migration listener on a Unix socket path of its own. `migrate` asks the
/// source's admin socket, as `npa migrate` does, and drives the moving guest meanwhile (a guest
/// carries a move out on its next data-path call, as it does a switch).
package final class MigrationPair: @unchecked Sendable {
    package let a: TestHost
    package let b: TestHost
    package let keyFile: String

    /// `configure` adjusts each host's configuration (0 = A, 1 = B) before it starts; `keyFor`
    /// may give B another key (a host without the right key).
    package init(
        configure: (Int, inout HostConfiguration) throws -> Void = { _, _ in }, otherKeyForB: Bool = false, label: String = #function
    ) throws {
        keyFile = Self.writeKey()
        let otherKey = otherKeyForB ? Self.writeKey() : keyFile
        var hosts: [TestHost] = []
        for i in 0..<2 {
            var configuration = HostConfiguration()
            configuration.migrationKeyFile = i == 1 ? otherKey : keyFile
            configuration.migrationListen = TestHost.freshSocketPath() + ".migrate"
            try configure(i, &configuration)
            hosts.append(try TestHost(configuration: configuration, label: label))
        }
        a = hosts[0]
        b = hosts[1]
        if otherKey != keyFile { unlink(otherKey) }
    }

    /// Where `host` takes migrations.
    package func address(of host: TestHost) -> String { host.daemon.migrationAddress ?? "" }

    /// Migrates `guest` from `source` to `destination` and returns the source's record of it once
    /// finished (completed or failed). Between status polls the guest's data path is called
    /// (`drive`, default: reclaim and a receive that keeps what it gets in `received`).
    package func migrate(
        _ guest: VirtualNIC, from source: TestHost, to destination: TestHost, timeoutMilliseconds: Int = 60_000,
        drive: (() -> Void)? = nil
    ) throws -> StatusReport.Migration? {
        let id = try source.admin.migrate(name: guest.name, to: address(of: destination))
        var finished: StatusReport.Migration?
        let deadline = ContinuousClock.now + .milliseconds(timeoutMilliseconds)
        while ContinuousClock.now < deadline {
            if let drive { drive() } else { _ = guest.reclaimTransmitted() }
            if let m = try source.admin.migration(id: id), m.isFinished {
                finished = m
                break
            }
        }
        return finished
    }

    /// The destination's record of the migration of `name` (the newest).
    package func incoming(_ name: String, at host: TestHost) throws -> StatusReport.Migration? {
        try host.admin.status().migrations?.last { $0.vnic == name && $0.direction == "incoming" }
    }

    package func stop() {
        a.stop()
        b.stop()
        unlink(keyFile)
    }

    deinit { stop() }

    /// A 32-byte key in hex, in a file only its owner may read.
    package static func writeKey() -> String {
        let path = NSTemporaryDirectory() + "npa-test-key-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        var generator = SystemRandomNumberGenerator()
        let hex = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
        _ = FileManager.default.createFile(atPath: path, contents: Data(hex.utf8), attributes: [.posixPermissions: 0o600])
        return path
    }
}
