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

    /// Creates a listening socket at `path`, replacing a stale socket file there.
    public static func listen(path: String) throws -> SeqPacketSocket {
        let sock = try open()
        var addr = try address(path)
        unlink(path)
        _ = try syscall("bind(\(path))") {
            withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(sock.fd.rawValue, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
        }
        _ = try syscall("listen") { Glibc.listen(sock.fd.rawValue, 64) }
        return sock
    }

    public static func connect(path: String) throws -> SeqPacketSocket {
        let sock = try open()
        var addr = try address(path)
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
    public func accept() throws -> SeqPacketSocket? {
        let raw = Glibc.accept(fd.rawValue, nil, nil)
        if raw < 0 {
            let err = Errno(rawValue: Glibc.errno)
            if err == .wouldBlock || err == .resourceTemporarilyUnavailable || err == .interrupted { return nil }
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

    /// Waits until a message can be read, up to `timeoutMilliseconds`. False on timeout.
    public func waitReadable(timeoutMilliseconds: Int32) -> Bool {
        var pfd = pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0)
        return poll(&pfd, 1, timeoutMilliseconds) > 0
    }

    private static func open() throws -> SeqPacketSocket {
        let type = Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        let raw = try syscall("socket") { socket(AF_UNIX, type, 0) }
        return SeqPacketSocket(adopting: FileDescriptor(rawValue: raw))
    }

    private static func address(_ path: String) throws -> sockaddr_un {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            throw SystemCallError("socket path too long: \(path)", .fileNameTooLong)
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes + [0]) }
        return addr
    }

    deinit { try? fd.close() }
}
