import Glibc
import SystemPackage

/// What a non-blocking connect to a Unix socket path says about the socket there.
public enum UnixSocketProbe: Equatable, Sendable {
    /// Nothing at the path.
    case absent
    /// A socket file nobody listens on (its owner exited without removing it).
    case stale
    /// A process listens on it (a connection was accepted into its backlog, or the backlog
    /// is full).
    case live
    /// A live socket of another type (a datagram or stream server where we expected the other
    /// kind): someone else's.
    case foreign
    /// A file that is not a socket.
    case notASocket
}

/// The rules every listening Unix socket of ours follows for its file, whatever its type
/// (the guests' SOCK_SEQPACKET control socket, a SOCK_STREAM migration socket): bind only where
/// nothing lives, remove only a stale socket, set the permissions before `listen`, and later
/// remove only the very file bound (same inode). Touches the file system at the path only.
enum UnixSocketPath {
    /// Looks at `path` without changing it. The connect is non-blocking, so a live listener with
    /// a full backlog answers EAGAIN at once instead of making us wait. `type` is the socket type
    /// we would bind there: a live socket of another type is `foreign`.
    static func probe(path: String, type: Int32) throws -> UnixSocketProbe {
        var st = stat()
        if lstat(path, &st) != 0 {
            let err = Errno(rawValue: Glibc.errno)
            if err == .noSuchFileOrDirectory { return .absent }
            throw SystemCallError("lstat(\(path))", err)
        }
        guard st.st_mode & S_IFMT == S_IFSOCK else { return .notASocket }
        var addr = try address(path)
        let flags = type | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
        let raw = try syscall("socket") { socket(AF_UNIX, flags, 0) }
        defer { close(raw) }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(raw, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if rc == 0 { return .live }
        switch Errno(rawValue: Glibc.errno) {
        case .resourceTemporarilyUnavailable, .wouldBlock, .interrupted: return .live
        case .connectionRefused: return .stale
        case .protocolWrongTypeForSocket: return .foreign
        case .noSuchFileOrDirectory: return .absent
        case let err: throw SystemCallError("connect(\(path))", err)
        }
    }

    /// Binds `fd` (a fresh Unix socket of `type`) to `path` and sets `permissions` on the file
    /// (before the caller's `listen`, so no client connects while the file has the umask's mode).
    /// Refuses a path that holds anything but a socket, and a socket some process still listens
    /// on; removes only a stale socket. Throws `SocketPathError` for those refusals,
    /// `SystemCallError` for the environment.
    static func bind(_ fd: Int32, path: String, type: Int32, permissions: mode_t?) throws -> BoundSocketFile? {
        var addr = try address(path)
        try removeStaleSocket(at: path, type: type)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if rc != 0 {
            let err = Errno(rawValue: Glibc.errno)
            // bind creates the file or fails: someone created it between our check and now.
            if err == .addressInUse { throw SocketPathError.inUse(path: path, detail: "another process bound it while this one started") }
            throw SystemCallError("bind(\(path))", err)
        }
        var st = stat()
        let bound = lstat(path, &st) == 0 ? BoundSocketFile(path: path, device: UInt64(st.st_dev), inode: UInt64(st.st_ino)) : nil
        if let permissions {
            do {
                _ = try syscall("chmod(\(path))") { chmod(path, permissions) }
            } catch {
                bound?.removeIfUnchanged()
                throw error
            }
        }
        return bound
    }

    /// Clears the way for `bind`: nothing there is fine, a stale socket is removed, anything
    /// else is refused.
    private static func removeStaleSocket(at path: String, type: Int32) throws {
        var before = stat()
        guard lstat(path, &before) == 0 else { return }
        switch try probe(path: path, type: type) {
        case .absent:
            return
        case .notASocket:
            throw SocketPathError.notASocket(path: path)
        case .live:
            throw SocketPathError.inUse(path: path, detail: "a host is already listening on it")
        case .foreign:
            throw SocketPathError.inUse(path: path, detail: "another program listens on it")
        case .stale:
            // Remove the very file we probed, not one another host may have bound there since.
            // (Two hosts starting at the same instant on one stale path still race between this
            // check and unlink; bind itself never replaces a file, so a host that loses finds
            // the path taken and says so.)
            var now = stat()
            if lstat(path, &now) == 0, now.st_dev == before.st_dev, now.st_ino == before.st_ino {
                unlink(path)
            }
        }
    }

    static func address(_ path: String) throws -> sockaddr_un {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            throw SystemCallError("socket path too long: \(path)", .fileNameTooLong)
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes + [0]) }
        return addr
    }
}

/// The socket file a listening socket created, identified by its inode, so that only that file
/// is ever removed (another host may have replaced it since).
struct BoundSocketFile {
    let path: String
    let device: UInt64
    let inode: UInt64

    /// Removes the file if the file at the path is still this one. Returns whether it did.
    @discardableResult
    func removeIfUnchanged() -> Bool {
        var st = stat()
        guard lstat(path, &st) == 0, UInt64(st.st_dev) == device, UInt64(st.st_ino) == inode else { return false }
        return unlink(path) == 0
    }
}
