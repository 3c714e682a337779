import NPAControlProtocol

/// The guest's control operations (MAC, VLANs, rx mode, multicast) carried to its VF while it is
/// in passthrough: the host keeps its policy, the NIC's embedded switch applies it.
extension PFDriver {
    /// In passthrough the guest's control operations go to the VF too (through the PF).
    func syncPassthroughFilters(_ device: EmulatedDevice) {
        // Not while a switch is under way: the switch itself decides where the MAC lives (the
        // guest re-arms emulation with commands before the host hands the MAC back).
        guard device.switching.filtersFollowVF, let (nic, index) = vf(of: device) else { return }
        nic.setMAC(vf: index, device.mac)
        nic.setVLANs(vf: index, device.vlans)
        nic.setRxMode(vf: index, device.rxMode, multicast: device.multicast)
        dataPath.detachFromSwitch(device)
    }
}
