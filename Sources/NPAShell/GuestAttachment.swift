import NPAControlProtocol
import NPARingFormats
import SystemPackage

/// What a guest hands a host to attach its vNIC, kept for the moment the vNIC moves to another
/// host and the guest hands it again (`resume`): its name, the descriptors of its memory,
/// doorbell and interrupt eventfds, and the register page the first host gave it. The guest's
/// objects own the descriptors; this borrows them for the length of the vNIC.
struct GuestAttachment {
    let name: String
    let memory: FileDescriptor
    let doorbell: FileDescriptor
    let interrupts: [FileDescriptor]
    /// Stays where the guest (and the plugin) mapped it, like a BAR that keeps its guest
    /// address across a migration: the new host adopts the page instead of making one.
    let registerPage: FileDescriptor
}

extension ControlChannel {
    /// Connects to the host a move offer names and re-attaches the vNIC there with `token`,
    /// handing over `attachment`'s descriptors. Returns the channel to that host once it answered
    /// `attached` (the move's commit point: the vNIC runs there now); throws
    /// `HostRefusal` (a refused token, a state that did not fit) or a connection error otherwise,
    /// and the new connection is closed.
    static func resuming(
        at destination: ControlMessage.MoveDestination, attachment: GuestAttachment, timeoutMilliseconds: Int32
    ) throws -> ControlChannel {
        let arrival = try ControlChannel(path: destination.controlSocket, timeoutMilliseconds: timeoutMilliseconds)
        let request = ControlMessage.ResumeRequest(
            token: destination.token, name: attachment.name, interruptVectors: UInt8(attachment.interrupts.count))
        let (reply, fds) = try arrival.request(
            .resume(request), descriptors: [attachment.memory, attachment.doorbell] + attachment.interrupts + [attachment.registerPage])
        for fd in fds { try? fd.close() }
        guard case .attached(let attached) = reply else { throw HostRefusal(code: 0, message: "unexpected reply to resume") }
        arrival.vnicID = attached.vnicID
        return arrival
    }
}
