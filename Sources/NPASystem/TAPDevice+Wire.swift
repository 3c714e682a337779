import CNPAShim
import Glibc
import SystemPackage

/// What one read or write on a TAP device came to. The wire's batch loops use these instead of
/// `readFrame`/`writeFrame`: no error value is built per frame, and a link that is down (an
/// admin's `ip link set down`, or the interface just moved to another namespace) is told apart
/// from an interface that is gone (deleted: the kernel answers EBADFD from then on).
public enum TAPTransfer: Equatable, Sendable {
    /// The frame's length in bytes.
    case done(Int)
    /// Nothing to read, or the kernel's queue is full.
    case wouldBlock
    /// EIO: the interface is down; a written frame was not taken.
    case linkDown
    /// The interface is unusable (EBADFD: deleted under us); every later call fails the same way.
    case failed(Errno)
}

extension TAPDevice {
    /// Whether an interface named `name` exists in this thread's network namespace.
    public static func interfaceExists(_ name: String) -> Bool { if_nametoindex(name) != 0 }

    /// Brings the interface up (what `ip link set IF up` does).
    public func setLinkUp() throws {
        _ = try shimCall("SIOCSIFFLAGS(\(interfaceName), up)") { cnpa_netif_set_up(interfaceName) }
    }

    /// Reads one frame into `buffer` (a frame longer than the buffer comes back truncated to
    /// exactly its size: size it above the longest frame you accept).
    public func transfer(into buffer: UnsafeMutableRawPointer, capacity: Int) -> TAPTransfer {
        while true {
            let n = Glibc.read(fd.rawValue, buffer, capacity)
            if n >= 0 { return .done(n) }
            let err = Errno(rawValue: Glibc.errno)
            switch err {
            case .interrupted: continue
            case .wouldBlock: return .wouldBlock
            case .ioError: return .linkDown
            default:
                precondition(err != .badFileDescriptor && err != .badAddress, "read(TAP): \(err) is a bug")
                return .failed(err)
            }
        }
    }

    /// Writes one frame: the kernel receives it as if it came in on the interface.
    public func transfer(from frame: UnsafeRawPointer, length: Int) -> TAPTransfer {
        while true {
            let n = Glibc.write(fd.rawValue, frame, length)
            if n >= 0 { return .done(n) }
            let err = Errno(rawValue: Glibc.errno)
            switch err {
            case .interrupted: continue
            case .wouldBlock, .noBufferSpace: return .wouldBlock
            case .ioError: return .linkDown
            default:
                precondition(err != .badFileDescriptor && err != .badAddress, "write(TAP): \(err) is a bug")
                return .failed(err)
            }
        }
    }
}
