import NPAControlProtocol
import NPARingFormats

/// What the host lets the vNIC's filters do, as opposed to what the guest asked: the guest's
/// VLAN filter table and rx mode stay what it programmed (`vlans`, `rxMode`); its port on the
/// vswitch, and its VF in passthrough, get only the part its policy allows. The two differ only
/// after an administrator narrowed the policy of a running guest (`npa policy set`): every
/// request the guest makes is checked against the policy in force (Admission), so it cannot
/// widen them again.
extension EmulatedDevice {
    /// The VLANs the vNIC is a member of: those it joined that its policy allows.
    var effectiveVLANs: Set<UInt16> { vlans.intersection(policy.allowedVLANs) }

    /// The rx mode its filters apply: the guest's, less promiscuous if its policy forbids it.
    var effectiveRxMode: VMXNET3.RxMode { policy.allowPromiscuous ? rxMode : rxMode.subtracting(.promiscuous) }

    /// Replaces its policy and applies it to its vswitch port at once: the port's VLAN
    /// membership always (in passthrough too: the data path asks it which VLANs the vNIC's VF
    /// is in), its rx mode while the port carries the vNIC (in passthrough the port takes
    /// nothing; the PF driver programs the VF). The caller checked that the running state
    /// allows it (`ControlServer+Policy`): no switch under way, its MAC allowed.
    func adopt(policy new: GuestPolicy) {
        policy = new
        vswitch.setVLANs(port, effectiveVLANs)
        if mode == .emulated { vswitch.setRxMode(port, effectiveRxMode) }
    }
}
