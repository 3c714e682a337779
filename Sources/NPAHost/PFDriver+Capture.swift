import NPANICModel

/// The PF driver's part in `npa capture`: in passthrough the host sees none of a vNIC's frames,
/// so it programs the NIC's port mirror for the VF the vNIC is on (a PF-only control, like its
/// filters), and only while a capture of that vNIC runs. A VF the vNIC takes later gets the
/// mirror when the PF initialises it (`prepareVF`); the FLR that releases a VF clears it.
extension PFDriver {
    /// Points the port mirror of the VF `device` holds now (if any) at its capture's mirror
    /// ring, or clears it (`nil`). Once this returns with nil the NIC copies nothing more.
    func setMirror(of device: EmulatedDevice, to capture: PacketCapture?) {
        guard let (nic, index) = vf(of: device) else { return }
        nic.setMirror(vf: index, to: capture?.mirrorRing)
    }

    /// The copies `capture` of `device` dropped so far, both rings: the mirror's counter is
    /// read under the lock of the NIC that fills it.
    func captureDropped(_ capture: PacketCapture, of device: EmulatedDevice) -> UInt64 {
        let mirrored = vf(of: device).map { $0.nic.mirrorDrops(of: capture.mirrorRing) } ?? capture.mirrorRing.drops
        return capture.emulatedRing.drops &+ mirrored
    }
}
