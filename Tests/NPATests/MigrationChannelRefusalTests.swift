import Foundation
import Glibc
@testable import NPAMigration
import NPASystem
import Testing

/// What the migration channel refuses over a real socket, from a hand-driven peer that decides
/// every byte it sends: captured bytes replayed on a new connection, a record reflected back,
/// bit-flipped, duplicated, reordered, truncated, oversize; a peer that sends no hello; each one
/// closes the connection and moves exactly one counter. Also: bytes arriving one at a time,
/// the Unix path rules, addresses, and connections that cannot be made.
@Suite struct MigrationChannelRefusalTests {
    typealias Peer = MigrationChannelTests.Peer
    static let key = MigrationChannelTests.key

    /// An initiator whose bytes the test writes itself, over a plain stream socket.
    final class RawInitiator {
        var socket: StreamSocket?
        var records: AuthenticatedRecords

        init(_ address: StreamSocket.Address, key: MigrationKey = MigrationChannelRefusalTests.key) throws {
            socket = try StreamSocket.connect(address, timeoutMilliseconds: 20_000)
            records = AuthenticatedRecords(role: .initiator, key: key)
        }

        func write(_ bytes: [UInt8]) throws {
            let socket = try #require(socket)
            var start = 0
            while start < bytes.count {
                start += try bytes[start...].withUnsafeBytes { try socket.write($0) }
                if start < bytes.count { _ = socket.wait(writable: true, timeoutMilliseconds: 20_000) }
            }
        }

        /// Waits for what the peer sends next (up to 20 s), as raw bytes.
        func read() throws -> [UInt8] {
            let socket = try #require(socket)
            var buffer = [UInt8](repeating: 0, count: 65536)
            _ = socket.wait(timeoutMilliseconds: 20_000)
            guard case .bytes(let n) = try buffer.withUnsafeMutableBytes({ try socket.read(into: $0) }) else { return [] }
            return Array(buffer[0..<n])
        }

        /// Sends the hello and takes the responder's (whose hello the listener sent on accept).
        func handshake() throws -> [UInt8] {
            let hello = records.hello()
            try write(hello)
            while !records.isEstablished {
                let bytes = try read()
                try #require(!bytes.isEmpty)
                records.append(bytes)
                _ = try records.nextRecord()
            }
            return hello
        }

        func record(_ message: MigrationMessage) throws -> [UInt8] {
            let (type, payload) = try message.encoded()
            return records.seal(type: type, payload: payload)
        }

        func close() { socket = nil }
    }

    static func listener() throws -> MigrationListener {
        try MigrationListener(listeningOn: .tcp(host: "127.0.0.1", port: 0), key: key)
    }

    @Test func bytesCapturedFromOneConnectionAndReplayedOnAnotherAreRefused() throws {
        let listener = try Self.listener()
        let first = try RawInitiator(listener.address)
        let server = try MigrationChannelTests.acceptOne(listener)
        var captured = try first.handshake()
        let records = try first.record(.prepare(MigrationMessageTests.request)) + first.record(.done)
        captured += records
        try first.write(records)
        #expect(MigrationChannelTests.pump([server]) { server.received.count == 2 })
        // The same bytes on a new connection: the hello is genuine, but the new responder's nonce
        // is in every tag.
        let replay = try RawInitiator(listener.address)
        let victim = try MigrationChannelTests.acceptOne(listener)
        try replay.write(captured)
        #expect(MigrationChannelTests.pump([victim]) { victim.error != nil })
        #expect(victim.received.isEmpty)
        guard case .refused(let refusal) = victim.error else {
            Issue.record("replay not refused: \(String(describing: victim.error))")
            return
        }
        #expect(refusal.reason == .badTag)
        #expect(
            listener.counters.recordsRefused
                == {
                    var r = MigrationChannelCounters.Refused(); r.badTag = 1; return r
                }())
    }

    enum Tamper: String, CaseIterable {
        case bitFlipInPayload, bitFlipInTag, bitFlipInSequence, duplicate, reorder, truncate, oversize, tooShort
    }

    @Test(arguments: Tamper.allCases)
    func aTamperedRecordClosesTheConnectionAndIsCounted(_ tamper: Tamper) throws {
        let listener = try Self.listener()
        let raw = try RawInitiator(listener.address)
        let server = try MigrationChannelTests.acceptOne(listener)
        _ = try raw.handshake()
        let r0 = try raw.record(.prepare(MigrationMessageTests.request))
        let r1 = try raw.record(.done)
        let expected: MigrationRefusal.Reason
        var delivered = 1
        switch tamper {
        case .bitFlipInPayload, .bitFlipInTag, .bitFlipInSequence:
            var bad = r1
            bad[tamper == .bitFlipInPayload ? 13 : tamper == .bitFlipInTag ? bad.count - 5 : 4] ^= 0x10
            try raw.write(r0 + bad)
            expected = .badTag
        case .duplicate:
            try raw.write(r0 + r0)
            expected = .badSequence
        case .reorder:
            try raw.write(r1 + r0)
            (expected, delivered) = (.badSequence, 0)
        case .truncate:
            try raw.write(r0 + r1.dropLast(3))
            raw.close()
            expected = .malformed
        case .oversize:
            try raw.write(r0 + [0xFF, 0xFF, 0x10, 0x00])
            expected = .oversize
        case .tooShort:
            try raw.write(r0 + [0x08, 0x00, 0x00, 0x00] + Array(repeating: 0, count: 8))
            expected = .malformed
        }
        #expect(MigrationChannelTests.pump([server]) { server.error != nil })
        #expect(server.received.count == delivered, "the records before the bad one are delivered, none after")
        guard case .refused(let refusal) = server.error else {
            Issue.record("\(tamper) not refused: \(String(describing: server.error))")
            return
        }
        #expect(refusal.reason == expected)
        #expect(listener.counters.recordsRefused[expected] == 1 && listener.counters.recordsRefused.total == 1)
        #expect(server.connection.isClosed)
    }

    @Test func aRecordReflectedBackToItsSenderIsRefused() throws {
        let listener = try Self.listener()
        let raw = try RawInitiator(listener.address)
        let server = try MigrationChannelTests.acceptOne(listener)
        _ = try raw.handshake()
        #expect(MigrationChannelTests.pump([server]) { server.connection.isEstablished })
        try server.connection.send(.stateAccepted)
        var record: [UInt8] = []
        while record.count < 4 + 8 + 1 + 32 { record += try raw.read() }
        try raw.write(record)
        #expect(MigrationChannelTests.pump([server]) { server.error != nil })
        #expect(server.error.map { if case .refused(let r) = $0 { r.reason == .badTag } else { false } } == true)
        #expect(listener.counters.recordsRefused.badTag == 1)
    }

    @Test func recordsArrivingOneByteAtATimeDecodeOnce() throws {
        let path = MigrationChannelTests.unixPath()
        let listener = try MigrationListener(listeningOn: .unix(path: path), key: Self.key)
        let raw = try RawInitiator(listener.address)
        let server = try MigrationChannelTests.acceptOne(listener)
        let messages: [MigrationMessage] = [.prepare(MigrationMessageTests.request), .frames([[1, 2, 3]]), .done]
        var stream = raw.records.hello()
        // The responder's hello was sent on accept: take it first so records can be sealed.
        raw.records.append(try raw.read())
        _ = try raw.records.nextRecord()
        for m in messages { stream += try raw.record(m) }
        for byte in stream {
            try raw.write([byte])
            server.step()
        }
        #expect(MigrationChannelTests.pump([server]) { server.received.count == messages.count })
        #expect(server.received == messages)
        #expect(server.error == nil && listener.counters.recordsRefused.total == 0)
    }

    @Test func aPeerThatSendsNoHelloIsClosedAtItsDeadline() throws {
        let listener = try MigrationListener(
            listeningOn: .tcp(host: "127.0.0.1", port: 0), key: Self.key, handshakeTimeoutMilliseconds: 3000)
        let raw = try RawInitiator(listener.address)
        let server = try MigrationChannelTests.acceptOne(listener)
        server.step()
        #expect(!server.connection.closeIfHandshakeOverdue(now: server.connection.handshakeDeadline - 1))
        #expect(server.connection.state == .handshaking)
        #expect(server.connection.closeIfHandshakeOverdue(now: server.connection.handshakeDeadline))
        #expect(
            server.connection.state == .closed(.refused(MigrationRefusal(.handshakeTimeout, "no hello from the peer before the deadline"))))
        #expect(listener.counters.recordsRefused.handshakeTimeout == 1 && listener.counters.recordsRefused.total == 1)
        // An established connection has no deadline.
        let (client, good) = try MigrationChannelTests.connectedPair(listener)
        #expect(!good.connection.closeIfHandshakeOverdue(now: .max) && !client.connection.closeIfHandshakeOverdue(now: .max))
        _ = raw
    }

    @Test func aUnixListenerFollowsTheControlSocketsPathRules() throws {
        let path = MigrationChannelTests.unixPath()
        _ = FileManager.default.createFile(atPath: path, contents: Data("not a socket".utf8))
        #expect(throws: SocketPathError.notASocket(path: path)) { try MigrationListener(listeningOn: .unix(path: path), key: Self.key) }
        unlink(path)
        var listener: MigrationListener? = try MigrationListener(listeningOn: .unix(path: path), key: Self.key)
        var st = stat()
        #expect(lstat(path, &st) == 0 && st.st_mode & 0o777 == 0o600)
        #expect(throws: SocketPathError.self) { try MigrationListener(listeningOn: .unix(path: path), key: Self.key) }
        listener = nil
        #expect(lstat(path, &st) != 0, "the socket file is removed with its listener")
        _ = listener
    }

    @Test func addressesParse() throws {
        #expect(try StreamSocket.Address(parsing: "127.0.0.1:7000") == .tcp(host: "127.0.0.1", port: 7000))
        #expect(try StreamSocket.Address(parsing: "[::1]:0") == .tcp(host: "::1", port: 0))
        #expect(try StreamSocket.Address(parsing: "localhost:65535") == .tcp(host: "localhost", port: 65535))
        #expect(try StreamSocket.Address(parsing: "/tmp/b.sock") == .unix(path: "/tmp/b.sock"))
        #expect(try StreamSocket.Address(parsing: "./b.sock") == .unix(path: "./b.sock"))
        #expect(StreamSocket.Address.tcp(host: "::1", port: 9).description == "[::1]:9")
        for bad in ["127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "::1:80", "[127.0.0.1]:80", "example.com:80", "1.2.3:80", ":80", "h:-1"] {
            #expect(throws: StreamSocket.AddressError.self, "\(bad)") { try StreamSocket.Address(parsing: bad) }
        }
    }

    @Test func aConnectionThatCannotBeMadeFails() throws {
        let nobody = StreamSocket.Address.unix(path: MigrationChannelTests.unixPath())
        #expect(throws: MigrationChannelError.self) { try MigrationConnection.open(to: nobody, key: Self.key) }
        #expect(throws: MigrationChannelError.self) {
            try MigrationConnection.connect(to: nobody, key: Self.key, timeoutMilliseconds: 1000)
        }
        // A TCP port nobody listens on (a listener's, released): the non-blocking open fails later.
        let port = try #require(try Self.listener().port)
        let connection = try MigrationConnection.open(to: .tcp(host: "127.0.0.1", port: port), key: Self.key)
        let peer = Peer(connection)
        #expect(MigrationChannelTests.pump([peer]) { peer.error != nil })
        guard case .failed(let why) = peer.error else {
            Issue.record("expected a failed connection, got \(String(describing: peer.error))")
            return
        }
        #expect(why.contains("refused"))
    }
}
