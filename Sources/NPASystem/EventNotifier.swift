import CNPAShim
import Glibc
import SystemPackage

/// An eventfd used as a doorbell (guest → host) or an interrupt line (host → guest).
/// Non-blocking; `signal` is one syscall, so callers signal once per batch and only when the
/// other side said it is about to sleep.
public final class EventNotifier: @unchecked Sendable {
    public let fd: FileDescriptor

    public init() throws {
        fd = FileDescriptor(rawValue: try syscall("eventfd") { cnpa_eventfd_create() })
    }

    /// Takes ownership of a received eventfd.
    public init(adopting fd: FileDescriptor) { self.fd = fd }

    public func signal() { _ = cnpa_eventfd_signal(fd.rawValue) }

    /// Clears pending signals; returns how many had accumulated.
    @discardableResult
    public func drain() -> Int64 { max(0, cnpa_eventfd_drain(fd.rawValue)) }

    /// Blocks until signalled or `timeoutMilliseconds` passes (-1: forever). True if signalled.
    public func wait(timeoutMilliseconds: Int32) -> Bool {
        var pfd = pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0)
        let n = poll(&pfd, 1, timeoutMilliseconds)
        if n > 0 {
            drain()
            return true
        }
        return false
    }

    deinit { try? fd.close() }
}
