import NPASystem
import SystemPackage

/// Where a host accepts migration connections (`npa host --listen ADDR:PORT` or a Unix socket
/// path). Non-blocking: register `fd` for reading and call `accept()` when it is readable; each
/// connection it returns has sent its hello as the responder and completes its handshake in the
/// caller's loop (`MigrationConnection`). A Unix path follows the control socket's rules
/// (`UnixSocketPath`: never replaces a live socket or a non-socket; 0600). Owns the listening
/// socket and, for a path, the socket file it created (removed when it is released, if still ours).
public final class MigrationListener {
    /// The address listened on, with the port the kernel chose if port 0 was asked for.
    public let address: StreamSocket.Address
    public var fd: FileDescriptor { socket.fd }
    public let counters: MigrationChannelCounters
    private let socket: StreamSocket
    private let key: MigrationKey
    private let handshakeTimeoutMilliseconds: Int32

    /// Throws `SystemCallError` or `SocketPathError` when the address cannot be taken.
    public init(
        listeningOn address: StreamSocket.Address, key: MigrationKey, counters: MigrationChannelCounters = MigrationChannelCounters(),
        handshakeTimeoutMilliseconds: Int32 = MigrationConnection.defaultHandshakeTimeoutMilliseconds
    ) throws {
        socket = try StreamSocket.listen(address)
        if case .tcp(let host, _) = address, let port = socket.localPort {
            self.address = .tcp(host: host, port: port)
        } else {
            self.address = address
        }
        self.key = key
        self.counters = counters
        self.handshakeTimeoutMilliseconds = handshakeTimeoutMilliseconds
    }

    /// The TCP port listened on (the chosen one for port 0); nil for a Unix path.
    public var port: UInt16? {
        if case .tcp(_, let port) = address { return port }
        return nil
    }

    /// Accepts one pending connection as the responder, or nil if none is pending. Throws
    /// `SystemCallError` for the environment (EMFILE...), which leaves the connection pending.
    public func accept() throws -> MigrationConnection? {
        guard let accepted = try socket.accept() else { return nil }
        return MigrationConnection(
            socket: accepted, role: .responder, key: key, counters: counters, handshakeTimeoutMilliseconds: handshakeTimeoutMilliseconds)
    }

    /// Blocking helper: waits up to `timeoutMilliseconds` for a connection and accepts it.
    public func accept(timeoutMilliseconds: Int32) throws -> MigrationConnection? {
        let deadline = Clock.monotonicNanoseconds() + UInt64(max(0, timeoutMilliseconds)) * 1_000_000
        while true {
            if let connection = try accept() { return connection }
            let now = Clock.monotonicNanoseconds()
            guard now < deadline else { return nil }
            _ = socket.wait(timeoutMilliseconds: Int32(clamping: (deadline - now) / 1_000_000 + 1))
        }
    }

    /// Removes the Unix socket file if it is still the one this listener bound (also done when
    /// the listener is released, which closes its descriptor). Returns whether it removed it.
    @discardableResult
    public func removeSocketFileIfOurs() -> Bool { socket.removeSocketFileIfOurs() }

    deinit { socket.removeSocketFileIfOurs() }
}
