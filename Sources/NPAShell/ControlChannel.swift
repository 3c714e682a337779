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

/// The host is gone: the vNIC's control connection closed (the host process died, or was
/// stopped). From then on the link is down for good: data-path calls return at once (0 frames,
/// `false`) and control operations throw this. A guest that wants a network again attaches a
/// new vNIC.
public struct HostGone: Error, CustomStringConvertible, Sendable, Equatable {
    /// The control socket the vNIC was attached through.
    public let socketPath: String
    /// What the shell saw: the connection closed, a send failed, ...
    public let reason: String

    public init(socketPath: String, reason: String) {
        self.socketPath = socketPath
        self.reason = reason
    }

    public var description: String { "the host at \(socketPath) is gone: \(reason)" }
}

/// Whether the host is still there, shared by the control channel and every data path of one
/// vNIC. The host never talks first on the control socket, so a hang-up there is the one sign
/// that it died; the shell looks for it where it costs nothing extra: in the poll that sleeps on
/// the interrupt, on a failed request, and, at most every `checkInterval`, when a data-path
/// call makes no progress (a dead host completes nothing). Never per frame.
///
/// Single-threaded, like the vNIC that owns it.
package final class HostLink {
    /// The control connection; replaced in place when the vNIC moves to another host.
    package private(set) var socket: SeqPacketSocket
    package private(set) var socketPath: String
    package private(set) var gone: HostGone?
    private var nextCheck: UInt64 = 0
    /// How stale the answer of `checkIfDue` may be: short enough that a guest notices well within
    /// a second, long enough that an idle poller pays one syscall per 5 ms, not one per call.
    static let checkInterval: UInt64 = 5_000_000

    init(socket: SeqPacketSocket, socketPath: String) {
        self.socket = socket
        self.socketPath = socketPath
    }

    /// Watches `socket` (to the host at `socketPath`) from now on: the vNIC moved there.
    func replace(socket: SeqPacketSocket, socketPath: String) {
        self.socket = socket
        self.socketPath = socketPath
        nextCheck = 0
    }

    /// Marks the link down (the first reason sticks) and returns the error to throw.
    @discardableResult
    package func markGone(_ reason: String) -> HostGone {
        if let gone { return gone }
        let error = HostGone(socketPath: socketPath, reason: reason)
        gone = error
        return error
    }

    /// Looks now (one non-blocking poll).
    @discardableResult
    package func check() -> HostGone? {
        if gone == nil && socket.peerHasHungUp() { markGone("the control connection closed") }
        return gone
    }

    /// Looks if the last look is older than `checkInterval`; true if the host is gone.
    @inline(__always)
    package func checkIfDue(now: UInt64 = Clock.monotonicNanoseconds()) -> Bool {
        if gone != nil { return true }
        guard now >= nextCheck else { return false }
        nextCheck = now + Self.checkInterval
        return check() != nil
    }
}

/// The guest's end of the control socket, and the one place the shell talks on it: synchronous
/// request/reply, one at a time (plus the one message that has no reply, detach). Each register
/// access is one round trip, the user-space equivalent of a VM exit. A closed connection marks
/// the link down and every request then throws `HostGone`; an `error` reply throws
/// `HostRefusal`.
///
/// When the vNIC moves to another host the channel takes over the connection to it in place
/// (`adoptConnection(of:)`), so everything holding the channel or its link keeps working.
///
/// It may touch its socket and the link it shares with the data paths (`HostLink`), nothing else.
final class ControlChannel {
    var socket: SeqPacketSocket { link.socket }
    let link: HostLink
    let timeoutMilliseconds: Int32
    /// The vNIC's id on the host at the other end (set at attach, and by a move).
    var vnicID: UInt32 = 0

    init(path: String, timeoutMilliseconds: Int32 = 10_000) throws {
        link = HostLink(socket: try SeqPacketSocket.connect(path: path), socketPath: path)
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    /// Takes over `other`'s connection (to the host the vNIC moved to): requests go there from
    /// now on and the link the data paths share watches it. Returns the former connection,
    /// closed when the caller lets it go.
    func adoptConnection(of other: ControlChannel) -> SeqPacketSocket {
        let former = link.socket
        link.replace(socket: other.link.socket, socketPath: other.link.socketPath)
        vnicID = other.vnicID
        return former
    }

    func request(_ message: ControlMessage, descriptors: [FileDescriptor] = []) throws -> (ControlMessage, [FileDescriptor]) {
        if let gone = link.gone { throw gone }
        do {
            try socket.send(message.encode(), descriptors: descriptors)
        } catch let error as SystemCallError where Self.meansClosed(error.errno) {
            throw closed(error.errno)
        }
        guard socket.waitReadable(timeoutMilliseconds: timeoutMilliseconds) else {
            throw HostRefusal(code: 0, message: "the host did not answer within \(timeoutMilliseconds) ms")
        }
        let received: (bytes: [UInt8], descriptors: [FileDescriptor])?
        do {
            received = try socket.receive()
        } catch let error as SystemCallError where Self.meansClosed(error.errno) {
            throw closed(error.errno)
        }
        guard let (bytes, fds) = received else {
            throw link.markGone("the control connection closed")
        }
        let reply = try ControlMessage.parse(bytes)
        if case .error(let code, let text) = reply {
            for fd in fds { try? fd.close() }
            throw HostRefusal(code: code, message: text)
        }
        return (reply, fds)
    }

    /// A request whose one good answer is `ok` (the switch steps); returns the host's note.
    /// Descriptors that came with the reply are closed; any other reply is refused.
    @discardableResult
    func requestAcknowledged(_ message: ControlMessage) throws -> String {
        let (reply, fds) = try request(message)
        for fd in fds { try? fd.close() }
        guard case .ok(let note) = reply else { throw HostRefusal(code: 0, message: "unexpected reply") }
        return note
    }

    /// Sends a message that has no reply (detach: the host closes the connection instead).
    func notify(_ message: ControlMessage) throws {
        if let gone = link.gone { throw gone }
        try socket.send(message.encode())
    }

    /// The connection closed under a request. A host that refuses a connection (too many, no
    /// attach in time) says why before it closes, and that message is still queued here: more
    /// useful than "broken pipe". (The first read after the peer closed with our request
    /// unread may report ECONNRESET instead; the message comes on the next.)
    private func closed(_ errno: Errno) -> Error {
        for _ in 0..<2 {
            do {
                guard let (bytes, fds) = try socket.receive() else { break }
                for fd in fds { try? fd.close() }
                if case .error(let code, let text) = try ControlMessage.parse(bytes) {
                    link.markGone("it closed the connection: \(text)")
                    return HostRefusal(code: code, message: text)
                }
            } catch {
                continue
            }
        }
        return link.markGone("the control connection closed (\(errno))")
    }

    private static func meansClosed(_ errno: Errno) -> Bool {
        errno == .brokenPipe || errno == .connectionReset || errno == .socketNotConnected
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
