import Foundation
import NPAControlProtocol
import NPASystem

/// The client of a host's admin socket: what `npa status`, `npa vnic`, the demo's and the soaks'
/// switch schedules and the tests use to administer a host. One request, one reply, over one
/// connection kept open between requests (a host out of descriptors still answers a client
/// that connected before) and opened again once if the host dropped it. Requests from several
/// threads take turns. It touches nothing but that socket.
public final class AdminClient: @unchecked Sendable {
    /// The host's admin socket (`HostSocketPath.admin(forControl:)` by default).
    public let socketPath: String
    /// How long a request waits for the host's answer.
    public let timeoutMilliseconds: Int32
    private let lock = NSLock()
    private var connection: SeqPacketSocket?

    public init(socketPath: String, timeoutMilliseconds: Int32 = 5000) {
        self.socketPath = socketPath
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    /// The admin client of the host whose control socket is `controlSocket`.
    public convenience init(controlSocket: String) { self.init(socketPath: HostSocketPath.admin(forControl: controlSocket)) }

    /// Why a request did not succeed.
    public enum Failure: Error, CustomStringConvertible, Sendable, Equatable {
        /// The socket could not be reached (no host, or not ours to open).
        case unreachable(path: String, detail: String)
        /// The host took the request but did not answer in time, or hung up.
        case noAnswer
        /// The host refused it: an `ErrorCode` and its reason.
        case refused(code: UInt32, message: String)
        /// The host answered with a message this request does not expect.
        case unexpectedReply(String)

        public var description: String {
            switch self {
            case .unreachable(let path, let detail): "cannot reach the host's admin socket \(path): \(detail)"
            case .noAnswer: "the host did not answer"
            case .refused(_, let message): message
            case .unexpectedReply(let reply): "unexpected reply from the host: \(reply)"
            }
        }
    }

    /// Sends one request and returns the host's reply; an `.error` reply is thrown as `.refused`.
    public func request(_ message: ControlMessage) throws(Failure) -> ControlMessage {
        lock.lock()
        defer { lock.unlock() }
        // A kept connection the host closed (it restarted, or stopped) is replaced once.
        if let kept = connection, kept.peerHasHungUp() { connection = nil }
        let socket: SeqPacketSocket
        if let kept = connection {
            socket = kept
        } else {
            do { socket = try SeqPacketSocket.connect(path: socketPath) } catch {
                throw .unreachable(path: socketPath, detail: "\(error)")
            }
            connection = socket
        }
        do { try socket.send(message.encode()) } catch {
            connection = nil
            throw .noAnswer
        }
        guard socket.waitReadable(timeoutMilliseconds: timeoutMilliseconds), let received = try? socket.receive() else {
            connection = nil
            throw .noAnswer
        }
        let reply: ControlMessage
        do { reply = try ControlMessage.parse(received.bytes) } catch { throw .unexpectedReply("\(error)") }
        for fd in received.descriptors { try? fd.close() }
        if case .error(let code, let text) = reply { throw .refused(code: code, message: text) }
        return reply
    }

    /// The host's vNIC table and counters (`npa status`).
    public func status() throws(Failure) -> StatusReport {
        let reply = try request(.statusRequest)
        guard case .statusReply(let json) = reply else { throw .unexpectedReply("\(reply)") }
        do { return try StatusReport.decode(json) } catch { throw .unexpectedReply("status that does not decode: \(error)") }
    }

    /// Asks the host to switch the vNIC `name` to a VF (`toPassthrough`) or back to emulation;
    /// the host raises DIC and the guest carries the switch out. Returns the host's note.
    @discardableResult
    public func switchVNIC(name: String, toPassthrough: Bool) throws(Failure) -> String {
        try okNote(request(.adminSwitch(vnic: name, toPassthrough: toPassthrough)))
    }

    /// Asks the host to reset (FLR) the VF of the vNIC `name` now; the guest then falls back to
    /// emulation. Returns the host's note.
    @discardableResult
    public func resetVF(name: String) throws(Failure) -> String {
        try okNote(request(.adminResetVF(vnic: name)))
    }

    /// Asks the host to migrate the vNIC `name` to the host listening for migrations at `to`.
    /// Returns the migration's id once it has started; `migration(id:)` follows it.
    public func migrate(name: String, to destination: String) throws(Failure) -> UInt64 {
        let note = try okNote(request(.adminMigrate(vnic: name, to: destination)))
        guard let id = UInt64(note) else { throw .unexpectedReply("migration id '\(note)'") }
        return id
    }

    /// The migration `id` as the host's status shows it (nil: the host does not know it).
    public func migration(id: UInt64) throws(Failure) -> StatusReport.Migration? {
        try status().migrations?.first { $0.id == id && $0.direction == "outgoing" }
    }

    private func okNote(_ reply: ControlMessage) throws(Failure) -> String {
        guard case .ok(let note) = reply else { throw .unexpectedReply("\(reply)") }
        return note
    }
}
