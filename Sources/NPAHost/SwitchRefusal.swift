/// Why the PF driver would not take, or could not finish, a step of a switch. Each case names
/// its rule; its wire code is chosen in `ControlRefusal`.
enum SwitchRefusal: Error, Equatable, CustomStringConvertible {
    /// Admission refused it (policy).
    case admission(AdmissionRefusal)
    case alreadyUnderWay
    case alreadyInPassthrough
    case alreadyEmulated
    case notActive
    case notInPassthrough
    case noSwitchInUnderWay
    case noSwitchOutUnderWay
    /// The host has no NIC with VFs at all.
    case noNICWithVFs
    /// None of the host's NICs has an accepted plugin bundle in the plugin store; `refusals`
    /// says what the store refused (empty if nothing).
    case noPluginImage(directory: String, refusals: String)
    case noFreeVF
    /// The NIC refused the queues the guest offered (outside its grant, misaligned...).
    case queueSetupFailed(String)
    /// A guest's switch step out of order (`VNICSwitchMachine` refused it).
    case outOfOrder(VNICSwitchMachine.Refusal)

    /// The switch machine's refusal, as the PF driver names it.
    init(_ refusal: VNICSwitchMachine.Refusal) {
        switch refusal {
        case .alreadyPassthrough: self = .alreadyInPassthrough
        case .alreadyEmulated: self = .alreadyEmulated
        case .switchUnderWay: self = .alreadyUnderWay
        case .notInPassthrough: self = .notInPassthrough
        case .noSwitchInUnderWay: self = .noSwitchInUnderWay
        case .noSwitchOutUnderWay: self = .noSwitchOutUnderWay
        case .switchInNotOffered, .vfNotInitialised, .switchOutAlreadyBegun, .switchOutNotBegun: self = .outOfOrder(refusal)
        }
    }

    var description: String {
        switch self {
        case .admission(let refusal): refusal.description
        case .alreadyUnderWay: "a switch is already under way"
        case .alreadyInPassthrough: "already in passthrough"
        case .alreadyEmulated: "already emulated"
        case .notActive: "the vNIC is not active"
        case .notInPassthrough: "the vNIC is not in passthrough"
        case .noSwitchInUnderWay: "no switch-in under way"
        case .noSwitchOutUnderWay: "no switch-out under way"
        case .noNICWithVFs: "this host has no NIC with VFs"
        case .noPluginImage(let directory, let refusals):
            "no accepted plugin bundle for this host's NICs in \(directory)\(refusals)"
        case .noFreeVF: "no free VF"
        case .queueSetupFailed(let reason): reason
        case .outOfOrder(let refusal): refusal.description
        }
    }
}
