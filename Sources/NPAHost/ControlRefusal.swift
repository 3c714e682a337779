import NPAControlProtocol

/// Every refusal the host's control server sends a guest or an administrator, typed. `code` is
/// the one place a wire code (`ControlMessage.ErrorCode`) is chosen for a refusal: callers say
/// what went wrong, never which number it is.
enum ControlRefusal: Error, Equatable, CustomStringConvertible {
    /// A policy or host-state rule refused it (`Admission`).
    case admission(AdmissionRefusal)

    var code: UInt32 {
        switch self {
        case .admission(let refusal):
            switch refusal {
            case .macNotAllowed, .vlansNotAllowed, .promiscuousNotAllowed, .passthroughNotAllowed: ControlMessage.ErrorCode.refusedByPolicy
            case .macInUse: ControlMessage.ErrorCode.invalidState
            case .noFreeAllowedMAC: ControlMessage.ErrorCode.resourceExhausted
            }
        }
    }

    var description: String {
        switch self {
        case .admission(let refusal): refusal.description
        }
    }

    /// The refusal as the control protocol's error reply.
    var reply: ControlMessage { .error(code: code, message: description) }
}

extension AdmissionRefusal {
    /// Its wire code, as `ControlRefusal` chooses it.
    var code: UInt32 { ControlRefusal.admission(self).code }
}
