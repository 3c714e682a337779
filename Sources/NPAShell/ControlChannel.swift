import NPAControlProtocol
import NPASystem
import SystemPackage

/// An error the host returned for a control operation, with its code and the host's words.
public struct HostRefusal: Error, CustomStringConvertible, Sendable, Equatable {
    public let code: UInt32
    public let message: String
    public var description: String { message }
    public var isPolicyRefusal: Bool { code == ControlMessage.ErrorCode.refusedByPolicy }
}

/// The guest's end of the control socket: synchronous request/reply, one at a time. Each
/// register access is one round trip, the user-space equivalent of a VM exit.
final class ControlChannel {
    let socket: SeqPacketSocket
    let timeoutMilliseconds: Int32

    init(path: String, timeoutMilliseconds: Int32 = 10_000) throws {
        socket = try SeqPacketSocket.connect(path: path)
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    func request(_ message: ControlMessage, descriptors: [FileDescriptor] = []) throws -> (ControlMessage, [FileDescriptor]) {
        try socket.send(message.encode(), descriptors: descriptors)
        guard socket.waitReadable(timeoutMilliseconds: timeoutMilliseconds) else {
            throw HostRefusal(code: 0, message: "the host did not answer within \(timeoutMilliseconds) ms")
        }
        guard let (bytes, fds) = try socket.receive() else {
            throw HostRefusal(code: 0, message: "the host closed the control connection")
        }
        let reply = try ControlMessage.parse(bytes)
        if case .error(let code, let text) = reply {
            for fd in fds { try? fd.close() }
            throw HostRefusal(code: code, message: text)
        }
        return (reply, fds)
    }

    @discardableResult
    func writeRegister(_ offset: UInt32, _ value: UInt32) throws -> UInt32 {
        let (reply, _) = try request(.registerWrite(bar: 1, offset: offset, value: value))
        guard case .registerResult(let status, let result, let text) = reply else {
            throw HostRefusal(code: 0, message: "unexpected reply to a register write")
        }
        if status != 0 { throw HostRefusal(code: status, message: text) }
        return result
    }

    func readRegister(_ offset: UInt32) throws -> UInt32 {
        let (reply, _) = try request(.registerRead(bar: 1, offset: offset))
        guard case .registerResult(let status, let value, let text) = reply else {
            throw HostRefusal(code: 0, message: "unexpected reply to a register read")
        }
        if status != 0 { throw HostRefusal(code: status, message: text) }
        return value
    }

    /// Writes a vmxnet3 command to CMD and returns what CMD reads back.
    func command(_ command: UInt32) throws -> UInt32 {
        try writeRegister(0x20, command)
    }
}
