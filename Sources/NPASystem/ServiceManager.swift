import Glibc

/// The service manager's readiness protocol (systemd's `sd_notify`): a datagram such as
/// "READY=1" to the Unix socket `$NOTIFY_SOCKET` names (a path, or "@name" for the abstract
/// namespace). A process not started by a service manager has no such variable, and every
/// call is then a no-op. Touches only that one socket, opened and closed per message.
public enum ServiceManager {
    /// Sends `state` ("READY=1", "STOPPING=1", "STATUS=..."); whether a manager was told.
    /// Failures are not fatal: the service still runs, the manager just learns nothing.
    @discardableResult
    public static func notify(_ state: String) -> Bool {
        guard let path = getenv("NOTIFY_SOCKET").map({ String(cString: $0) }), !path.isEmpty else { return false }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }  // the abstract namespace
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (bytes.first == 0 ? 0 : 1))
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let sent = state.utf8CString.withUnsafeBytes { message in
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, message.baseAddress, message.count - 1, 0, $0, length) }
            }
        }
        return sent == state.utf8.count
    }
}
