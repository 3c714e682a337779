import Foundation
import NPAControlProtocol
@testable import NPAHost
import NPAShell
import NPATestSupport

/// The test's orchestration of moves from `source` to `destination`, on their threads, as the
/// migration state machines will do it; and the move events each host reported.
final class MoveOrchestration: @unchecked Sendable {
    let source: SteppedTestHost
    let destination: SteppedTestHost
    private static let lock = NSLock()
    nonisolated(unsafe) private static var logs: [ObjectIdentifier: [MoveEvent]] = [:]

    init(_ source: SteppedTestHost, _ destination: SteppedTestHost) throws {
        self.source = source
        self.destination = destination
        for host in [source, destination] { try Self.listen(host) }
    }

    private static func listen(_ host: SteppedTestHost) throws {
        let key = ObjectIdentifier(host)
        try host.onHostThread { daemon in
            guard daemon.moveEventHandler == nil else { return }
            // A new host: a log left by a host that lived at the same address before is not its.
            lock.withLock { logs[key] = [] }
            daemon.moveEventHandler = { event in lock.withLock { logs[key, default: []].append(event) } }
        }
    }

    /// What `host` reported so far.
    func events(_ host: SteppedTestHost) throws -> [MoveEvent] {
        // On the host's thread first: whatever it was doing when asked has been reported.
        try host.onHostThread { _ in }
        return Self.lock.withLock { Self.logs[ObjectIdentifier(host)] ?? [] }
    }

    /// Stops and saves the vNIC at the source, hands its state to the destination; the
    /// departure is called off if the destination refuses. Returns the token.
    @discardableResult
    func prepare(
        _ name: String, token: MoveToken = .random(), timeoutNanoseconds: UInt64 = HostDaemon.defaultArrivalTimeoutNanoseconds
    ) throws -> MoveToken {
        let bytes = try source.onHostThread { try $0.beginDeparture(named: name) }
        do {
            _ = try destination.onHostThread {
                try $0.expectArrival(stateBytes: bytes, token: token, timeoutNanoseconds: timeoutNanoseconds)
            }
        } catch {
            try source.onHostThread { try $0.abortDeparture(named: name) }
            throw error
        }
        return token
    }

    /// Offers the guest the move with `token`.
    func offer(_ name: String, token: MoveToken) throws {
        let path = destination.socketPath
        try source.onHostThread { try $0.offerMove(named: name, controlSocket: path, token: token) }
    }

    /// The whole move, with `guest`'s next data-path call carrying out its side. Returns the
    /// token it used.
    @discardableResult
    func move(_ name: String, driving guest: VirtualNIC) throws -> MoveToken {
        let token = try prepare(name)
        try offer(name, token: token)
        guest.reclaimTransmitted()
        return token
    }
}
