import Glibc
import SystemPackage

/// A stream socket, TCP or Unix SOCK_STREAM: the transport of the host-to-host migration channel.
/// Always non-blocking once connected or listening, so a single-threaded epoll loop can own it;
/// blocking callers (the CLI, tests) wait with `wait(readable:timeoutMilliseconds:)`. Reads and
/// writes say "would block" as a value; a broken connection (reset, pipe) throws. Sends never
/// raise SIGPIPE. Touches only its own descriptor and, for a Unix listener, its socket file
/// (`UnixSocketPath`'s rules).
public final class StreamSocket: @unchecked Sendable {
    public let fd: FileDescriptor
    private var boundFile: BoundSocketFile?

    private init(adopting fd: FileDescriptor) { self.fd = fd }

    /// Where a stream socket listens or connects: `HOST:PORT` with an IPv4 literal, an IPv6
    /// literal in brackets (`[::1]:7000`) or `localhost` (taken as 127.0.0.1: no resolver), or a
    /// Unix socket path (anything containing a `/`).
    public enum Address: Equatable, Sendable, CustomStringConvertible {
        case tcp(host: String, port: UInt16)
        case unix(path: String)

        public init(parsing text: String) throws(AddressError) {
            if text.contains("/") {
                self = .unix(path: text)
                return
            }
            guard let colon = text.lastIndex(of: ":") else { throw AddressError(text, "expected HOST:PORT or a socket path") }
            var host = String(text[..<colon])
            let portText = text[text.index(after: colon)...]
            guard !portText.isEmpty, portText.allSatisfy(\.isASCII), let port = UInt16(portText) else {
                throw AddressError(text, "the port must be a number 0-65535")
            }
            if host.hasPrefix("[") && host.hasSuffix("]") {
                host = String(host.dropFirst().dropLast())
                guard host.contains(":") else { throw AddressError(text, "brackets hold an IPv6 address") }
            } else if host.contains(":") {
                throw AddressError(text, "an IPv6 address is written in brackets: [::1]:PORT")
            }
            guard Self.socketAddress(host: host, port: port) != nil else {
                throw AddressError(text, "the host must be an IPv4 or IPv6 address or localhost")
            }
            self = .tcp(host: host, port: port)
        }

        public var description: String {
            switch self {
            case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
            case .unix(let path): path
            }
        }

        /// A sockaddr_in or sockaddr_in6 for a literal address, nil for anything else.
        fileprivate static func socketAddress(host: String, port: UInt16) -> SocketAddress? {
            let literal = host == "localhost" ? "127.0.0.1" : host
            var v4 = sockaddr_in()
            if inet_pton(AF_INET, literal, &v4.sin_addr) == 1 {
                v4.sin_family = sa_family_t(AF_INET)
                v4.sin_port = port.bigEndian
                return .v4(v4)
            }
            var v6 = sockaddr_in6()
            if inet_pton(AF_INET6, literal, &v6.sin6_addr) == 1 {
                v6.sin6_family = sa_family_t(AF_INET6)
                v6.sin6_port = port.bigEndian
                return .v6(v6)
            }
            return nil
        }
    }

    /// Why a text is not an `Address`, naming the text.
    public struct AddressError: Error, CustomStringConvertible, Sendable, Equatable {
        public let text: String
        public let reason: String
        init(_ text: String, _ reason: String) {
            self.text = text
            self.reason = reason
        }
        public var description: String { "'\(text)' is not a migration address: \(reason)" }
    }

    fileprivate enum SocketAddress {
        case v4(sockaddr_in)
        case v6(sockaddr_in6)
        case unix(sockaddr_un)

        var family: Int32 {
            switch self {
            case .v4: AF_INET
            case .v6: AF_INET6
            case .unix: AF_UNIX
            }
        }

        func withSockaddr<T>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
            func rebind<A>(_ a: A) -> T {
                withUnsafePointer(to: a) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<A>.size)) }
                }
            }
            switch self {
            case .v4(let a): return rebind(a)
            case .v6(let a): return rebind(a)
            case .unix(let a): return rebind(a)
            }
        }

        init(_ address: Address) throws {
            switch address {
            case .tcp(let host, let port):
                guard let a = Address.socketAddress(host: host, port: port) else {
                    throw AddressError(address.description, "the host must be an IPv4 or IPv6 address or localhost")
                }
                self = a
            case .unix(let path):
                self = .unix(try UnixSocketPath.address(path))
            }
        }
    }

    private static func open(family: Int32) throws -> StreamSocket {
        let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
        let raw = try syscall("socket") { socket(family, type, 0) }
        return StreamSocket(adopting: FileDescriptor(rawValue: raw))
    }

    /// Listens on `address` (non-blocking: `accept` returns nil when nobody waits). TCP port 0
    /// asks the kernel for a free port (`localPort` says which). A Unix path follows the control
    /// socket's rules (`UnixSocketPath`) and gets `permissions`.
    public static func listen(_ address: Address, backlog: Int32 = 16, permissions: mode_t? = 0o600) throws -> StreamSocket {
        let target = try SocketAddress(address)
        let sock = try open(family: target.family)
        switch address {
        case .unix(let path):
            sock.boundFile = try UnixSocketPath.bind(
                sock.fd.rawValue, path: path, type: Int32(SOCK_STREAM.rawValue), permissions: permissions)
        case .tcp:
            var one: Int32 = 1
            _ = setsockopt(sock.fd.rawValue, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            _ = try syscall("bind(\(address))") { target.withSockaddr { Glibc.bind(sock.fd.rawValue, $0, $1) } }
        }
        _ = try syscall("listen(\(address))") { Glibc.listen(sock.fd.rawValue, backlog) }
        return sock
    }

    /// Starts connecting to `address` without waiting: the socket is returned at once, its TCP
    /// connection possibly still being made. Until it is, reads and writes say "would block"
    /// (it becomes writable when made); a connection that fails reports its error on the next
    /// read or write. Throws for what fails at once (a full Unix backlog: EAGAIN; nobody at a
    /// Unix path: ECONNREFUSED or ENOENT).
    public static func startConnect(_ address: Address) throws -> StreamSocket {
        let target = try SocketAddress(address)
        let sock = try open(family: target.family)
        if target.family != AF_UNIX { sock.disableNagle() }
        let rc = target.withSockaddr { Glibc.connect(sock.fd.rawValue, $0, $1) }
        if rc != 0 {
            let err = Errno(rawValue: Glibc.errno)
            // EINTR: the connection goes on being made, as with EINPROGRESS.
            guard err == .nowInProgress || err == .interrupted else { throw SystemCallError("connect(\(address))", err) }
        }
        return sock
    }

    /// Connects to `address`, waiting at most `timeoutMilliseconds` for the connection to be
    /// made. The socket is non-blocking afterwards. Throws `SystemCallError` (ETIMEDOUT when the
    /// time ran out, ECONNREFUSED when nobody listens).
    public static func connect(_ address: Address, timeoutMilliseconds: Int32) throws -> StreamSocket {
        let sock = try startConnect(address)
        guard sock.wait(writable: true, timeoutMilliseconds: timeoutMilliseconds) else {
            throw SystemCallError("connect(\(address))", .timedOut)
        }
        var soError: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        _ = try syscall("getsockopt(SO_ERROR)") { getsockopt(sock.fd.rawValue, SOL_SOCKET, SO_ERROR, &soError, &length) }
        if soError != 0 { throw SystemCallError("connect(\(address))", Errno(rawValue: soError)) }
        return sock
    }

    /// Small records go out at once: the migration channel is request/reply, latency-bound.
    private func disableNagle() {
        var one: Int32 = 1
        _ = setsockopt(fd.rawValue, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Accepts one pending connection (non-blocking), or nil if none is pending. Throws for the
    /// environment, notably EMFILE/ENFILE, which leave the connection pending.
    public func accept() throws -> StreamSocket? {
        // accept4 is a GNU extension Swift's Glibc does not show: set the flags after, as
        // SeqPacketSocket does.
        let raw = Glibc.accept(fd.rawValue, nil, nil)
        if raw < 0 {
            let err = Errno(rawValue: Glibc.errno)
            // ECONNABORTED: that peer gave up while queued; the next one is reported again by epoll.
            if err == .wouldBlock || err == .resourceTemporarilyUnavailable || err == .interrupted || err == .connectionAbort { return nil }
            throw SystemCallError("accept", err)
        }
        _ = fcntl(raw, F_SETFD, FD_CLOEXEC)
        _ = fcntl(raw, F_SETFL, fcntl(raw, F_GETFL) | O_NONBLOCK)
        let sock = StreamSocket(adopting: FileDescriptor(rawValue: raw))
        var family = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let isInet =
            withUnsafeMutablePointer(to: &family) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(raw, $0, &length) }
            } == 0 && Int32(family.ss_family) != AF_UNIX
        if isInet { sock.disableNagle() }
        return sock
    }

    /// The TCP port this socket is bound to (the one the kernel chose for port 0); nil for Unix.
    public var localPort: UInt16? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd.rawValue, $0, &length) }
        }
        guard rc == 0 else { return nil }
        switch Int32(storage.ss_family) {
        case AF_INET: return withUnsafeBytes(of: storage) { UInt16(bigEndian: $0.load(as: sockaddr_in.self).sin_port) }
        case AF_INET6: return withUnsafeBytes(of: storage) { UInt16(bigEndian: $0.load(as: sockaddr_in6.self).sin6_port) }
        default: return nil
        }
    }

    /// What one read found.
    public enum ReadResult: Equatable, Sendable {
        case bytes(Int)
        case wouldBlock
        /// The peer closed its end.
        case endOfStream
    }

    /// Reads what is there into `buffer`. Throws when the connection broke (ECONNRESET...).
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> ReadResult {
        guard buffer.count > 0 else { return .bytes(0) }
        while true {
            let n = Glibc.read(fd.rawValue, buffer.baseAddress, buffer.count)
            if n > 0 { return .bytes(n) }
            if n == 0 { return .endOfStream }
            let err = Errno(rawValue: Glibc.errno)
            if err == .interrupted { continue }
            if err == .wouldBlock || err == .resourceTemporarilyUnavailable { return .wouldBlock }
            precondition(err != .badFileDescriptor && err != .badAddress, "read: \(err) is a bug")
            throw SystemCallError("read", err)
        }
    }

    /// Writes what the socket takes of `bytes` now; returns how many (0: it would block). Throws
    /// when the connection broke (EPIPE, ECONNRESET); never raises SIGPIPE.
    public func write(_ bytes: UnsafeRawBufferPointer) throws -> Int {
        guard bytes.count > 0 else { return 0 }
        while true {
            let n = Glibc.send(fd.rawValue, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL))
            if n >= 0 { return n }
            let err = Errno(rawValue: Glibc.errno)
            if err == .interrupted { continue }
            if err == .wouldBlock || err == .resourceTemporarilyUnavailable { return 0 }
            precondition(err != .badFileDescriptor && err != .badAddress, "send: \(err) is a bug")
            throw SystemCallError("send", err)
        }
    }

    /// Waits until the socket is readable (or writable), it hangs up, or the timeout passes
    /// (-1: no limit). True unless the time ran out.
    public func wait(writable: Bool = false, timeoutMilliseconds: Int32) -> Bool {
        var pfd = pollfd(fd: fd.rawValue, events: Int16(writable ? POLLOUT : POLLIN), revents: 0)
        while true {
            let n = poll(&pfd, 1, timeoutMilliseconds)
            if n < 0 && Glibc.errno == EINTR { continue }
            return n > 0
        }
    }

    /// Removes the Unix socket file `listen` created, if the file at that path is still it.
    @discardableResult
    public func removeSocketFileIfOurs() -> Bool {
        guard let bound = boundFile else { return false }
        boundFile = nil
        return bound.removeIfUnchanged()
    }

    deinit { try? fd.close() }
}
