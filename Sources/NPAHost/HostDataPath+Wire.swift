import NPANICModel

/// The vswitch's uplink on a TAP device (`uplink: { tap: IF }`): frames the kernel sends enter
/// the vswitch by the uplink port, a batch per pass; frames for the uplink are written straight
/// from the burst's arena (`switchBurst`). Only the host's thread calls it.
extension HostDataPath {
    /// Reads a batch from the wire (when one is due: see `TAPWire.fill`) and switches it in, as
    /// frames from the PF are. A frame whose receiver has no free buffer stays in the wire's
    /// batch for the next pass (the kernel's queue backs up behind it, then drops).
    func receiveFromWire(_ wire: TAPWire) -> Int {
        guard let ingress = vswitch.uplinkPort else { return 0 }
        let pending = wire.fill()
        var taken = 0
        while taken < pending {
            let (frame, length) = wire.pending(taken)
            guard admitFromUplink(frame, length: length, ingress: ingress, exempt: nil) else { break }
            taken += 1
        }
        wire.consume(taken)
        return taken
    }

    /// Frames read from the wire and not yet taken: the host must not sleep on them.
    var hasPendingWireFrames: Bool { (uplinkWire?.pendingCount ?? 0) > 0 }
}
