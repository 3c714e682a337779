import CNPAShim
import SystemPackage

/// An epoll set whose events carry a 64-bit tag chosen by the caller.
public final class Epoll: @unchecked Sendable {
    public let fd: FileDescriptor
    private var tags = [UInt64](repeating: 0, count: 64)

    public init() throws {
        fd = FileDescriptor(rawValue: try syscall("epoll_create1") { cnpa_epoll_create() })
    }

    public func add(_ watched: FileDescriptor, tag: UInt64) throws {
        _ = try shimCall("epoll_ctl(ADD)") { cnpa_epoll_add(fd.rawValue, watched.rawValue, tag) }
    }

    public func remove(_ watched: FileDescriptor) {
        _ = cnpa_epoll_remove(fd.rawValue, watched.rawValue)
    }

    /// Waits up to `timeoutMilliseconds` (-1 forever, 0 poll) and returns the ready tags.
    public func wait(timeoutMilliseconds: Int32) throws -> ArraySlice<UInt64> {
        let n = try shimCall("epoll_wait") {
            tags.withUnsafeMutableBufferPointer {
                cnpa_epoll_wait(fd.rawValue, $0.baseAddress, Int32($0.count), timeoutMilliseconds)
            }
        }
        return tags[0..<Int(n)]
    }

    deinit { try? fd.close() }
}
