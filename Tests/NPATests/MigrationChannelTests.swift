import Foundation
import Glibc
import NPAControlProtocol
@testable import NPAMigration
import NPASystem
import NPATestSupport
import Testing

/// The migration channel over real sockets (TCP on loopback, IPv4 and IPv6, and a Unix stream
/// socket): the handshake and every message both ways, driven non-blocking from one thread as
/// the host's loop will, and with the blocking helpers across two threads as the CLI will; a
/// host without the key refused on both sides; captured bytes replayed on a new connection,
/// records reflected, bit-flipped, duplicated, truncated or oversize refused, each counted by
/// reason; a peer that sends no hello closed at its deadline; the Unix path rules.
@Suite struct MigrationChannelTests {
    static let key = try! MigrationKey(bytes: Array(repeating: 0x11, count: 32))
    static let otherKey = try! MigrationKey(bytes: Array(repeating: 0x22, count: 32))

    static func unixPath() -> String { "/tmp/npa-migchan-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock" }

    /// One end as the host's loop drives it: flush when writable, receive when readable.
    final class Peer {
        let connection: MigrationConnection
        var received: [MigrationMessage] = []
        var error: MigrationChannelError?
        init(_ connection: MigrationConnection) { self.connection = connection }

        func step() {
            if connection.wantsWrite { try? connection.flush() }
            do {
                received += try connection.receive()
            } catch {
                if self.error == nil { self.error = error }
            }
        }
    }

    /// Steps `peers` whenever one of their sockets is ready until `condition` holds (20 s at most).
    @discardableResult
    static func pump(_ peers: [Peer], until condition: () -> Bool) -> Bool {
        let deadline = Clock.monotonicNanoseconds() + 20_000_000_000
        while !condition() {
            guard Clock.monotonicNanoseconds() < deadline else { return false }
            var fds = peers.filter { !$0.connection.isClosed }.map {
                pollfd(fd: $0.connection.fd.rawValue, events: Int16(POLLIN) | ($0.connection.wantsWrite ? Int16(POLLOUT) : 0), revents: 0)
            }
            _ = poll(&fds, nfds_t(fds.count), 100)
            for peer in peers { peer.step() }
        }
        return true
    }

    /// A listener's next connection, accepted as the host's loop would when its fd is readable.
    static func acceptOne(_ listener: MigrationListener) throws -> Peer {
        let connection = try #require(try listener.accept(timeoutMilliseconds: 20_000))
        return Peer(connection)
    }

    /// A client and the server end a listener accepted for it, handshake completed.
    static func connectedPair(
        _ listener: MigrationListener, clientKey: MigrationKey = key, clientCounters: MigrationChannelCounters = MigrationChannelCounters()
    ) throws -> (client: Peer, server: Peer) {
        let client = Peer(try MigrationConnection.open(to: listener.address, key: clientKey, counters: clientCounters))
        let server = try acceptOne(listener)
        pump([client, server]) {
            (client.connection.isEstablished || client.connection.isClosed)
                && (server.connection.isEstablished || server.connection.isClosed)
        }
        return (client, server)
    }

    static let conversation: (toB: [MigrationMessage], toA: [MigrationMessage]) = (
        toB: [
            .prepare(MigrationMessageTests.request), .deviceState(Array(repeating: 0x42, count: 65536)),
            .frames((0..<50).map { Array(repeating: UInt8($0), count: 1514) }), .forwardingDone, .abort(reason: "test"), .done,
        ],
        toA: [
            .prepared(token: Array(100..<116), controlSocket: "/tmp/b.sock"), .stateAccepted, .guestArrived, .announced,
            .refused(reason: "no"), .done,
        ]
    )

    @Test(arguments: ["127.0.0.1:0", "localhost:0", "[::1]:0", "unix"])
    func everyMessageCrossesBothWays(_ where: String) throws {
        let address = try StreamSocket.Address(parsing: `where` == "unix" ? Self.unixPath() : `where`)
        let listener: MigrationListener
        do {
            listener = try MigrationListener(listeningOn: address, key: Self.key)
        } catch let error as SystemCallError where `where`.hasPrefix("[") && error.errno == .addressNotAvailable {
            print("skipped: IPv6 loopback is not available here (\(error))")
            return
        }
        if case .tcp = address { #expect(listener.port != nil && listener.port != 0) }
        let (client, server) = try Self.connectedPair(listener)
        #expect(client.connection.isEstablished && server.connection.isEstablished)
        #expect(client.connection.role == .initiator && server.connection.role == .responder)
        for m in Self.conversation.toB { try client.connection.send(m) }
        for m in Self.conversation.toA { try server.connection.send(m) }
        #expect(
            Self.pump([client, server]) {
                server.received.count == Self.conversation.toB.count && client.received.count == Self.conversation.toA.count
            })
        #expect(server.received == Self.conversation.toB)
        #expect(client.received == Self.conversation.toA)
        #expect(listener.counters.recordsRefused.total == 0)
        server.connection.close()
        #expect(Self.pump([client]) { client.error != nil })
        #expect(client.error == .peerClosed)
    }

    @Test func theBlockingHelpersTalkAcrossThreads() throws {
        let listener = try MigrationListener(listeningOn: .tcp(host: "127.0.0.1", port: 0), key: Self.key)
        final class Outcome: @unchecked Sendable { var received: MigrationMessage?; var error: (any Error)? }
        let outcome = Outcome()
        let address = listener.address
        let thread = EngineThread.start(name: "migchan-client") {
            do {
                let connection = try MigrationConnection.connect(to: address, key: Self.key, timeoutMilliseconds: 20_000)
                try connection.send(.prepare(MigrationMessageTests.request), timeoutMilliseconds: 20_000)
                outcome.received = try connection.receive(timeoutMilliseconds: 20_000)
                try connection.send(.done, timeoutMilliseconds: 20_000)
            } catch {
                outcome.error = error
            }
        }
        let server = try #require(try listener.accept(timeoutMilliseconds: 20_000))
        try server.waitForHandshake()
        #expect(try server.receive(timeoutMilliseconds: 20_000) == .prepare(MigrationMessageTests.request))
        try server.send(.prepared(token: Array(0..<16), controlSocket: "/tmp/b.sock"), timeoutMilliseconds: 20_000)
        #expect(try server.receive(timeoutMilliseconds: 20_000) == .done)
        EngineThread.join(thread)
        #expect(outcome.error == nil)
        #expect(outcome.received == .prepared(token: Array(0..<16), controlSocket: "/tmp/b.sock"))
        #expect(throws: MigrationChannelError.peerClosed) { try server.receive(timeoutMilliseconds: 20_000) }
    }

    @Test func aHostWithoutTheKeyIsRefusedAndCountedOnBothSides() throws {
        let listener = try MigrationListener(listeningOn: .tcp(host: "127.0.0.1", port: 0), key: Self.key)
        let clientCounters = MigrationChannelCounters()
        let (client, server) = try Self.connectedPair(listener, clientKey: Self.otherKey, clientCounters: clientCounters)
        Self.pump([client, server]) { client.error != nil && server.error != nil }
        guard case .refused(let clientRefusal) = client.error, case .refused(let serverRefusal) = server.error else {
            Issue.record("expected refusals, got \(String(describing: client.error)) and \(String(describing: server.error))")
            return
        }
        #expect(clientRefusal.reason == .badHello && serverRefusal.reason == .badHello)
        #expect(clientRefusal.detail.contains("key"))
        #expect(clientCounters.recordsRefused.badHello == 1 && clientCounters.recordsRefused.total == 1)
        #expect(listener.counters.recordsRefused.badHello == 1 && listener.counters.recordsRefused.total == 1)
        // The blocking connect says the same.
        let counters = MigrationChannelCounters()
        let address = listener.address
        final class Outcome: @unchecked Sendable { var error: (any Error)? }
        let outcome = Outcome()
        let thread = EngineThread.start(name: "migchan-badkey") {
            do {
                _ = try MigrationConnection.connect(to: address, key: Self.otherKey, timeoutMilliseconds: 20_000, counters: counters)
            } catch {
                outcome.error = error
            }
        }
        let accepted = try Self.acceptOne(listener)
        EngineThread.join(thread)
        Self.pump([accepted]) { accepted.error != nil }
        guard case .refused(let refusal) = outcome.error as? MigrationChannelError else {
            Issue.record("connect with the wrong key: \(String(describing: outcome.error))")
            return
        }
        #expect(refusal.reason == .badHello && counters.recordsRefused.badHello == 1)
        #expect(listener.counters.recordsRefused.badHello == 2)
    }

    /// The host's epoll set watches only readability: `receive()` alone must get an outgoing
    /// connection's hello out once TCP has connected (it was queued while connecting).
    @Test func aLoopThatOnlyReceivesStillCompletesTheHandshake() throws {
        let listener = try MigrationListener(listeningOn: .tcp(host: "127.0.0.1", port: 0), key: Self.key)
        let client = try MigrationConnection.open(to: listener.address, key: Self.key)
        let server = try #require(try listener.accept(timeoutMilliseconds: 20_000))
        let deadline = Clock.monotonicNanoseconds() + 20_000_000_000
        while !(client.isEstablished && server.isEstablished) && Clock.monotonicNanoseconds() < deadline {
            var fds = [client.fd, server.fd].map { pollfd(fd: $0.rawValue, events: Int16(POLLIN), revents: 0) }
            _ = poll(&fds, 2, 100)
            _ = try client.receive()
            _ = try server.receive()
        }
        #expect(client.isEstablished && server.isEstablished)
        try client.send(.done)
        var received: [MigrationMessage] = []
        while received.isEmpty && Clock.monotonicNanoseconds() < deadline {
            var fds = [pollfd(fd: server.fd.rawValue, events: Int16(POLLIN), revents: 0)]
            _ = poll(&fds, 1, 100)
            received += try server.receive()
        }
        #expect(received == [.done])
    }
}
