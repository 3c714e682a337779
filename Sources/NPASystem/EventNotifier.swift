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

    /// Signals the eventfd `descriptor` from a signal handler, which can reach no object: one
    /// write(2), async-signal-safe. Errors are ignored (a handler can do nothing about them).
    public static func signal(descriptor: Int32) { _ = cnpa_eventfd_signal(descriptor) }

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

    /// How `wait(timeoutMilliseconds:orHangUpOf:)` ended.
    public enum WaitResult: Equatable, Sendable {
        case signalled
        case timedOut
        /// The watched connection's peer closed it (checked before the signal: a dead peer
        /// signals nothing more).
        case peerHungUp
        /// Not signalled, but the other descriptor the sleeper watches has something to read.
        case otherReadable
    }

    /// Like `wait(timeoutMilliseconds:)`, but also returns when `connection`'s peer hangs up:
    /// both descriptors in one poll, so a sleeper learns that its host died at no extra cost.
    /// The connection is polled for no events: a pending message does not wake the sleeper,
    /// only a hang-up or an error does.
    public func wait(timeoutMilliseconds: Int32, orHangUpOf connection: FileDescriptor) -> WaitResult {
        var pfds = (pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0), pollfd(fd: connection.rawValue, events: 0, revents: 0))
        let n = withUnsafeMutablePointer(to: &pfds) {
            $0.withMemoryRebound(to: pollfd.self, capacity: 2) { poll($0, 2, timeoutMilliseconds) }
        }
        if n <= 0 { return .timedOut }
        if pfds.1.revents & Int16(POLLHUP | POLLERR) != 0 { return .peerHungUp }
        if pfds.0.revents != 0 {
            drain()
            return .signalled
        }
        return .timedOut
    }

    /// Like `wait(timeoutMilliseconds:orHangUpOf:)` (with a connection, if any), and also
    /// returns when `other` becomes readable: a sleeper with a second source of work (a TAP
    /// bridge: the kernel's frames) waits for both in one poll instead of polling one of them.
    /// A signal is reported (and drained) before `other`; `other` stays readable until read.
    public func wait(timeoutMilliseconds: Int32, orHangUpOf connection: FileDescriptor?, orReadable other: FileDescriptor) -> WaitResult {
        // poll(2) skips entries with a negative descriptor: the connection is optional.
        var pfds = (
            pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0),
            pollfd(fd: connection?.rawValue ?? -1, events: 0, revents: 0),
            pollfd(fd: other.rawValue, events: Int16(POLLIN), revents: 0)
        )
        let n = withUnsafeMutablePointer(to: &pfds) {
            $0.withMemoryRebound(to: pollfd.self, capacity: 3) { poll($0, 3, timeoutMilliseconds) }
        }
        if n <= 0 { return .timedOut }
        if pfds.1.revents & Int16(POLLHUP | POLLERR) != 0 { return .peerHungUp }
        if pfds.0.revents != 0 {
            drain()
            return .signalled
        }
        return pfds.2.revents != 0 ? .otherReadable : .timedOut
    }

    /// Whether `descriptor` has something to read now (or is in error): one poll(2) that does
    /// not sleep. For a busy-polling loop that must still notice a second source of work.
    public static func isReadable(_ descriptor: FileDescriptor) -> Bool {
        var pfd = pollfd(fd: descriptor.rawValue, events: Int16(POLLIN), revents: 0)
        return poll(&pfd, 1, 0) > 0
    }

    deinit { try? fd.close() }
}
