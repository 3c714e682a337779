import CNPAShim
import Glibc
import SystemPackage

/// A Unix SOCK_SEQPACKET socket: the control channel between a guest and its host. Message
/// boundaries are kept by the kernel; descriptors travel with SCM_RIGHTS.
public final class SeqPacketSocket: @unchecked Sendable {
    public let fd: FileDescriptor
    public static let maximumMessageSize = 65536
    public static let maximumDescriptors = 16

    public init(adopting fd: FileDescriptor) { self.fd = fd }

    /// The socket file a listening socket created, so that only that file is ever removed.
    private var boundFile: BoundSocketFile?

    /// Creates a listening socket at `path`, by the rules of `UnixSocketPath`: refuses a path
    /// that holds anything but a socket, and a socket some process still listens on; removes only
    /// a stale socket (nobody listening). Throws `SocketPathError` for those refusals,
    /// `SystemCallError` for the environment. `permissions` (e.g. 0o600 for an admin socket) is
    /// set between bind and listen, so no client can connect while the file still has the umask's mode.
    public static func listen(path: String, backlog: Int32 = 64, permissions: mode_t? = nil) throws -> SeqPacketSocket {
        let sock = try open()
        sock.boundFile = try UnixSocketPath.bind(sock.fd.rawValue, path: path, type: socketType, permissions: permissions)
        _ = try syscall("listen") { Glibc.listen(sock.fd.rawValue, backlog) }
        return sock
    }

    /// Removes the socket file `listen` created, if the file at that path is still it (same
    /// inode): a host must never delete a socket another host bound there since. Returns whether
    /// it removed the file.
    @discardableResult
    public func removeSocketFileIfOurs() -> Bool {
        guard let bound = boundFile else { return false }
        boundFile = nil
        return bound.removeIfUnchanged()
    }

    /// What a non-blocking connect to `path` says about the socket there.
    public typealias Probe = UnixSocketProbe

    /// Looks at `path` without changing it (`UnixSocketPath.probe`): a live SOCK_STREAM or
    /// datagram server there is `foreign`.
    public static func probe(path: String) throws -> Probe {
        try UnixSocketPath.probe(path: path, type: socketType)
    }

    /// Connects to the listener at `path`. Non-blocking, a full backlog throws EAGAIN at once
    /// instead of waiting for room (and the socket stays non-blocking).
    public static func connect(path: String, nonBlocking: Bool = false) throws -> SeqPacketSocket {
        let sock = try open()
        if nonBlocking { sock.setNonBlocking() }
        var addr = try UnixSocketPath.address(path)
        _ = try syscall("connect(\(path))") {
            withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(sock.fd.rawValue, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
        }
        return sock
    }

    /// Accepts one pending connection, or nil if none is pending (the socket is non-blocking).
    /// Throws for the environment, notably EMFILE/ENFILE (out of descriptors), which leave the
    /// connection pending: the caller decides how to back off.
    public func accept() throws -> SeqPacketSocket? {
        let raw = Glibc.accept(fd.rawValue, nil, nil)
        if raw < 0 {
            let err = Errno(rawValue: Glibc.errno)
            // ECONNABORTED: that peer gave up while queued; the next one is reported again by epoll.
            if err == .wouldBlock || err == .resourceTemporarilyUnavailable || err == .interrupted || err == .connectionAbort { return nil }
            throw SystemCallError("accept", err)
        }
        _ = fcntl(raw, F_SETFD, FD_CLOEXEC)
        return SeqPacketSocket(adopting: FileDescriptor(rawValue: raw))
    }

    public func setNonBlocking() {
        let flags = fcntl(fd.rawValue, F_GETFL)
        _ = fcntl(fd.rawValue, F_SETFL, flags | O_NONBLOCK)
    }

    /// Sends one message with descriptors attached.
    public func send(_ bytes: [UInt8], descriptors: [FileDescriptor] = []) throws {
        precondition(descriptors.count <= Self.maximumDescriptors)
        let raw = descriptors.map(\.rawValue)
        _ = try shimCall("sendmsg") {
            bytes.withUnsafeBytes { b in
                raw.withUnsafeBufferPointer { f in
                    cnpa_send_with_fds(fd.rawValue, b.baseAddress, b.count, f.baseAddress, Int32(f.count))
                }
            }
        }
    }

    /// Receives one message. Returns nil at end of stream (the peer closed). Descriptors that
    /// arrived are returned owned by the caller.
    public func receive() throws -> (bytes: [UInt8], descriptors: [FileDescriptor])? {
        var buffer = [UInt8](repeating: 0, count: Self.maximumMessageSize)
        var fds = [Int32](repeating: -1, count: Self.maximumDescriptors)
        var nfds: Int32 = 0
        let n = try shimCall("recvmsg") {
            buffer.withUnsafeMutableBytes { b in
                fds.withUnsafeMutableBufferPointer { f in
                    cnpa_recv_with_fds(fd.rawValue, b.baseAddress, b.count, f.baseAddress, Int32(f.count), &nfds)
                }
            }
        }
        let received = fds[0..<Int(nfds)].map { FileDescriptor(rawValue: $0) }
        if n == 0 && received.isEmpty { return nil }
        return (Array(buffer[0..<n]), received)
    }

    /// True once the peer has closed its end (or the connection broke): one non-blocking poll.
    /// Asks for no events, so only hang-up and error conditions answer; a pending message does not.
    public func peerHasHungUp() -> Bool {
        var pfd = pollfd(fd: fd.rawValue, events: 0, revents: 0)
        return poll(&pfd, 1, 0) > 0 && pfd.revents & Int16(POLLHUP | POLLERR) != 0
    }

    /// Sleeps until the peer hangs up, `other` (if given) becomes readable, or the timeout passes
    /// (-1: no limit). True if the peer hung up.
    public func waitForHangUp(timeoutMilliseconds: Int32, orReadable other: Int32? = nil) -> Bool {
        var pfds = (pollfd(fd: fd.rawValue, events: 0, revents: 0), pollfd(fd: other ?? -1, events: Int16(POLLIN), revents: 0))
        let n = withUnsafeMutablePointer(to: &pfds) {
            $0.withMemoryRebound(to: pollfd.self, capacity: 2) { poll($0, other == nil ? 1 : 2, timeoutMilliseconds) }
        }
        return n > 0 && pfds.0.revents & Int16(POLLHUP | POLLERR) != 0
    }

    /// Waits until a message can be read, up to `timeoutMilliseconds`. False on timeout.
    public func waitReadable(timeoutMilliseconds: Int32) -> Bool {
        var pfd = pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0)
        return poll(&pfd, 1, timeoutMilliseconds) > 0
    }

    private static let socketType = Int32(SOCK_SEQPACKET.rawValue)

    private static func open() throws -> SeqPacketSocket {
        let type = socketType | Int32(SOCK_CLOEXEC.rawValue)
        let raw = try syscall("socket") { socket(AF_UNIX, type, 0) }
        return SeqPacketSocket(adopting: FileDescriptor(rawValue: raw))
    }

    deinit { try? fd.close() }
}

/// Why a host could not take its socket path. One line each, naming the path.
public enum SocketPathError: Error, CustomStringConvertible, Sendable, Equatable {
    /// Something other than a socket is there (a regular file, a directory): never removed.
    case notASocket(path: String)
    /// A process listens on the socket there.
    case inUse(path: String, detail: String)

    public var description: String {
        switch self {
        case .notASocket(let path): "\(path) exists and is not a socket; refusing to replace it"
        case .inUse(let path, let detail): "\(path) is in use: \(detail)"
        }
    }
}
