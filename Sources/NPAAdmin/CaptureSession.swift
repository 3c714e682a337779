import NPAControlProtocol
import NPASystem
import SystemPackage

/// One capture of a vNIC's frames (`npa capture`), on its own admin connection: the request
/// carries the output descriptor (the caller opened the file or pipe; the host writes the pcap
/// into it), and the capture lives as long as the connection, ending when the host reaches the
/// frame count (it sends `captureEnded`), on `stop()`, or when the connection closes. Touches
/// nothing but its socket.
public final class CaptureSession: @unchecked Sendable {
    private let socket: SeqPacketSocket
    /// The host's note on the running capture (the vNIC and its mode now).
    public let note: String

    /// Starts capturing `request.vnic` into `output` (the host gets its own copy; the caller
    /// may close `output` once this returns).
    public init(socketPath: String, request: CaptureRequest, output: FileDescriptor, timeoutMilliseconds: Int32 = 5000)
        throws(AdminClient.Failure)
    {
        do { socket = try SeqPacketSocket.connect(path: socketPath) } catch {
            throw .unreachable(path: socketPath, detail: "\(error)")
        }
        do { try socket.send(ControlMessage.captureStart(request).encode(), descriptors: [output]) } catch { throw .noAnswer }
        let reply = try Self.receive(on: socket, timeoutMilliseconds: timeoutMilliseconds)
        guard case .ok(let note) = reply else { throw .unexpectedReply("\(reply)") }
        self.note = note
    }

    /// The descriptor that becomes readable when the host sent `captureEnded` (or hung up).
    public var descriptor: FileDescriptor { socket.fd }

    /// Waits up to `timeoutMilliseconds` (-1: for ever) for the capture to end on its own (the
    /// frame count reached). nil if it has not ended by then.
    public func waitForEnd(timeoutMilliseconds: Int32) throws(AdminClient.Failure) -> CaptureOutcome? {
        guard socket.waitReadable(timeoutMilliseconds: timeoutMilliseconds) else { return nil }
        return try ended(Self.receive(on: socket, timeoutMilliseconds: 0))
    }

    /// Ends the capture now: the host writes what its rings still hold and says what it wrote.
    public func stop(timeoutMilliseconds: Int32 = 30_000) throws(AdminClient.Failure) -> CaptureOutcome {
        do { try socket.send(ControlMessage.captureStop.encode()) } catch { throw .noAnswer }
        // A `captureEnded` sent as the count was reached may cross the stop: it answers it
        // then (the host's refusal of the stop that follows is never read).
        return try ended(Self.receive(on: socket, timeoutMilliseconds: timeoutMilliseconds))
    }

    private func ended(_ reply: ControlMessage) throws(AdminClient.Failure) -> CaptureOutcome {
        guard case .captureEnded(let outcome) = reply else { throw .unexpectedReply("\(reply)") }
        return outcome
    }

    private static func receive(on socket: SeqPacketSocket, timeoutMilliseconds: Int32) throws(AdminClient.Failure) -> ControlMessage {
        guard socket.waitReadable(timeoutMilliseconds: timeoutMilliseconds), let received = try? socket.receive() else {
            throw .noAnswer
        }
        for fd in received.descriptors { try? fd.close() }
        let reply: ControlMessage
        do { reply = try ControlMessage.parse(received.bytes) } catch { throw .unexpectedReply("\(error)") }
        if case .error(let code, let text) = reply { throw .refused(code: code, message: text) }
        return reply
    }
}
