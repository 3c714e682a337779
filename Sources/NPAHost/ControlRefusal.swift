import NPAControlProtocol
import NPARingFormats

/// Every refusal the host's control server sends a guest or an administrator, typed. `code` is
/// the one place a wire code (`ControlMessage.ErrorCode`) is chosen for a refusal: callers say
/// what went wrong, never which number it is. (What the device's CMD register reads back is
/// vmxnet3's ABI, not a wire code: see `EmulatedDevice.CommandOutcome`.)
enum ControlRefusal: Error, Equatable, CustomStringConvertible {
    /// A policy or host-state rule refused it (`Admission`).
    case admission(AdmissionRefusal)
    /// The PF driver would not take, or could not finish, a switch step.
    case switching(SwitchRefusal)
    /// The emulated device refused a register access or a vmxnet3 command.
    case device(DeviceRefusal)
    /// The datagram did not parse.
    case malformed(String)
    /// A message a guest never sends (a reply type, an `.ok`).
    case unexpectedMessage
    /// An administrative request on a guest's connection.
    case administrativeOnGuestConnection
    /// A guest's message on the admin socket.
    case guestMessageOnAdminSocket
    /// A vNIC request before attach.
    case notAttached
    case onlyBAR1
    case noSuchVNIC(String)
    // Attach.
    case alreadyAttached
    case interruptVectors(Int)
    case descriptorCount(expected: Int, vectors: Int, got: Int)
    case invalidGuestName
    case guestNameInUse(String)
    case guestMemory(String)
    case vnicCreation(String)
    // Moves between hosts.
    /// A `resume` whose token this host does not expect (wrong, used, cancelled) or that expired.
    case moveToken(PendingArrivals.TokenRefusal)
    /// The token was issued for another guest than the one named in the `resume`.
    case moveTokenForAnotherGuest(String)
    /// A resume carries memory, doorbell, one eventfd per vector and the register page.
    case resumeDescriptorCount(expected: Int, vectors: Int, got: Int)
    /// The register page a resuming guest handed over is not one (wrong size, not shared memory).
    case registerPage(String)
    /// A change to a vNIC whose state was saved to leave this host.
    case moving(String)
    /// `moved` / `moveFailed` from a guest this host offered no move.
    case noMoveUnderWay
    /// An admin's migration that cannot start (no key, no such vNIC, a bad or own address...).
    case migration(String)
    /// An `eventsRequest` for a sequence the host's event log has not reached.
    case events(HostEventLog.Refusal)
    /// A `metricsRefresh` to a host started without metrics.
    case metricsNotServed
    /// A live policy change that is malformed or that the running state contradicts.
    case policy(PolicyRefusal)
    // Connections.
    case connectionCap(open: Int, max: Int)
    case adminConnectionCap(open: Int, max: Int)
    case attachTimeout(seconds: Double)
    case messageTooLarge(String)

    var code: UInt32 {
        switch self {
        case .admission(let refusal):
            switch refusal {
            case .macNotAllowed, .vlansNotAllowed, .promiscuousNotAllowed, .passthroughNotAllowed: ControlMessage.ErrorCode.refusedByPolicy
            case .macInUse: ControlMessage.ErrorCode.invalidState
            case .noFreeAllowedMAC: ControlMessage.ErrorCode.resourceExhausted
            }
        case .switching(.admission(let refusal)): ControlRefusal.admission(refusal).code
        case .switching: ControlMessage.ErrorCode.invalidState
        case .device(let refusal):
            switch refusal {
            case .admission(let refusal): ControlRefusal.admission(refusal).code
            case .noRegister, .unsupportedRevision, .unsupportedCommand: ControlMessage.ErrorCode.invalidArgument
            case .activation, .noSwitchUnderWay, .driverSharedNotSet, .multicastTableLength, .multicastTableOutsideMemory, .notMulticast:
                ControlMessage.ErrorCode.invalidState
            }
        case .malformed, .unexpectedMessage: ControlMessage.ErrorCode.malformed
        case .administrativeOnGuestConnection, .guestMessageOnAdminSocket: ControlMessage.ErrorCode.notPermitted
        case .notAttached: ControlMessage.ErrorCode.notAttached
        case .onlyBAR1, .noSuchVNIC, .interruptVectors, .descriptorCount, .invalidGuestName, .guestMemory:
            ControlMessage.ErrorCode.invalidArgument
        case .alreadyAttached, .guestNameInUse, .attachTimeout: ControlMessage.ErrorCode.invalidState
        case .moveToken, .moveTokenForAnotherGuest: ControlMessage.ErrorCode.notPermitted
        case .registerPage, .resumeDescriptorCount: ControlMessage.ErrorCode.invalidArgument
        case .moving, .noMoveUnderWay, .migration: ControlMessage.ErrorCode.invalidState
        case .events: ControlMessage.ErrorCode.invalidArgument
        case .metricsNotServed: ControlMessage.ErrorCode.invalidState
        case .policy(let refusal): refusal.code
        case .vnicCreation, .connectionCap, .adminConnectionCap, .messageTooLarge: ControlMessage.ErrorCode.resourceExhausted
        }
    }

    var description: String {
        switch self {
        case .admission(let refusal): refusal.description
        case .switching(let refusal): refusal.description
        case .device(let refusal): refusal.description
        case .malformed(let detail): "malformed message: \(detail)"
        case .unexpectedMessage: "unexpected message from a guest"
        case .administrativeOnGuestConnection:
            "a guest's connection may act only on its own vNIC: administration goes through the host's admin socket"
        case .guestMessageOnAdminSocket:
            "the admin socket takes only status, switch, VF-reset, migrate, events and policy requests; guests attach on the control socket"
        case .notAttached: "this connection has no vNIC: attach first"
        case .onlyBAR1: "only BAR1 registers are reached through the control channel"
        case .noSuchVNIC(let name): "no vNIC named '\(name)'"
        case .alreadyAttached: "this connection already has a vNIC"
        case .interruptVectors(let n): "interrupt vectors must be 1...\(VMXNET3.RegisterPage.maximumVectors), got \(n)"
        case .descriptorCount(let expected, let vectors, let got):
            "attach needs \(expected) descriptors (memory, doorbell, \(vectors) interrupts), got \(got)"
        case .invalidGuestName: GuestName.rule
        case .guestNameInUse(let name): "a guest named '\(name)' is already attached"
        case .guestMemory(let detail): "guest memory must be a memfd of 1 MiB to 16 GiB: \(detail)"
        case .vnicCreation(let detail): "could not create the vNIC: \(detail)"
        case .moveToken(let refusal): refusal.description
        case .moveTokenForAnotherGuest(let name): "the move token was not issued for guest '\(name)'"
        case .resumeDescriptorCount(let expected, let vectors, let got):
            "resume needs \(expected) descriptors (memory, doorbell, \(vectors) interrupts, register page), got \(got)"
        case .registerPage(let detail): "the register page must be shared memory of \(VMXNET3.RegisterPage.size) bytes: \(detail)"
        case .moving(let name): "vNIC '\(name)' is moving to another host: its configuration cannot change now"
        case .noMoveUnderWay: "this host offered this vNIC no move"
        case .migration(let why): "cannot migrate: \(why)"
        case .events(let refusal): refusal.description
        case .metricsNotServed: "this host serves no metrics (start it with --metrics ADDR:PORT)"
        case .policy(let refusal): refusal.description
        case .connectionCap(let open, let max): "the host has \(open) connections open (max_connections \(max)); try again later"
        case .adminConnectionCap(let open, let max): "the host has \(open) admin connections open (at most \(max)); try again later"
        case .attachTimeout(let seconds): "no vNIC attached within \(seconds) s (attach_timeout): closing"
        case .messageTooLarge(let detail): "the host could not take this message and its descriptors (\(detail))"
        }
    }

    /// The refusal as the control protocol's error reply.
    var reply: ControlMessage { .error(code: code, message: description) }
}

extension AdmissionRefusal {
    /// Its wire code, as `ControlRefusal` chooses it.
    var code: UInt32 { ControlRefusal.admission(self).code }
}
