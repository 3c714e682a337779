import Glibc
import SystemPackage

/// An environment failure from a system call, with the call's name for the log line.
public struct SystemCallError: Error, CustomStringConvertible, Sendable {
    public let call: String
    public let errno: Errno

    public init(_ call: String, _ errno: Errno) {
        self.call = call
        self.errno = errno
    }

    public var description: String { "\(call): \(errno)" }
}

/// The one funnel for raw system calls: retries EINTR, throws everything else.
/// Our own bugs (EBADF, EFAULT) trap, as SwiftNIO does: they mean a descriptor was used after close.
@inline(__always)
package func syscall<T: BinaryInteger>(_ name: String, _ body: () -> T) throws -> T {
    while true {
        let result = body()
        if result >= 0 { return result }
        let err = Errno(rawValue: Glibc.errno)
        if err == .interrupted { continue }
        precondition(err != .badFileDescriptor && err != .badAddress, "\(name): \(err) is a bug")
        throw SystemCallError(name, err)
    }
}

/// The same for the shim's calls that return -errno instead of setting errno.
@inline(__always)
package func shimCall<T: BinaryInteger & SignedInteger>(_ name: String, _ body: () -> T) throws -> T {
    while true {
        let result = body()
        if result >= 0 { return result }
        let err = Errno(rawValue: Int32(truncatingIfNeeded: 0 - result))
        if err == .interrupted { continue }
        precondition(err != .badFileDescriptor && err != .badAddress, "\(name): \(err) is a bug")
        throw SystemCallError(name, err)
    }
}
