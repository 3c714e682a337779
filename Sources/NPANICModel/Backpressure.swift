import NPARingFormats
import NPASystem

/// The NIC's backpressure: a frame for a VF that has no free receive buffer waits where it is
/// (in the sender's TX ring, or in the PF driver's burst) instead of being dropped, for up to
/// `receiverStallLimitNanoseconds`. Runs under the NIC's lock, specialised per VF model; it
/// touches only the receiving VF's stall clock and the NIC's `heldBack` flag.
extension SoftNIC {
    /// Whether a frame must wait before it is taken (from a VF's TX ring, the PF or the wire):
    /// it is unicast to another enabled VF whose receive queue for its flow has no free buffer,
    /// and that VF has been without one for less than the stall limit. A hint read from the
    /// sender's buffer before the copy, on the same `route` the switch then uses; it never
    /// holds a frame the receiver would refuse anyway (too long for its buffers). `frames` > 1:
    /// the segments of one TSO super-frame (each `length` bytes at most), which wait until the
    /// receiver has a buffer for each (or as many as its ring can ever post).
    func mustWait<Model: VFModelEngine>(
        _: Model.Type, _ frame: UnsafeRawPointer, length: Int, route: inout FrameRoute, from sender: VirtualFunction?,
        frames: UInt32 = 1, fromPF: Bool = false
    ) -> Bool {
        guard let target = route.port, target != sender?.index else { return false }
        let wait = vfRefs[target]._withUnsafeGuaranteedRef { vf -> Bool in
            // Mid switch-in, older frames for this guest are still to come down the PF: newer ones
            // from elsewhere wait for them (no stall clock: the host ends the hold once they are down).
            if vf.holdsForPF && !fromPF { return true }
            guard vf.enabled, vf.grant != nil, vf.rxQueueCount > 0 else { return false }
            let q = vf.rxQueueCount == 1 ? 0 : Int(route.flowHash(frame, length: length) % UInt32(vf.rxQueueCount))
            let queue = vf.rxQueues + q
            guard length <= Int(queue.pointee.config.bufferSize) else { return false }
            let size = queue.pointee.config.ringSize
            // Buffers posted and not yet used; the guest's tail is read only when none are known.
            var available: UInt32 = 0
            let needed = min(frames, size &- 1)
            if needed == 1 && queue.pointee.head != queue.pointee.cachedTail && !vf.exceededStallLimit {
                available = 1
            } else {
                guard let posted = Model.postedReceiveBuffers(of: vf, queue: q) else { return false }  // a bad tail: deliver() refuses it
                available = posted
            }
            if available >= needed {
                // One that used up its stall limit is held for again only with half a ring posted.
                if vf.receiverStalledSince != 0 && (!vf.exceededStallLimit || available >= size / 2) {
                    vf.receiverStalledSince = 0
                    vf.exceededStallLimit = false
                    vf.guestSwitching = false  // it reads again: done with its switch
                }
                return false
            }
            let now = Clock.monotonicNanoseconds()
            if vf.receiverStalledSince == 0 { vf.receiverStalledSince = now }
            guard !vf.exceededStallLimit else { return false }
            if now - vf.receiverStalledSince < receiverStallLimitNanoseconds { return true }
            // A guest in a switch handshake reads no ring until its step is done: not stuck.
            if vf.guestSwitching && now - vf.receiverStalledSince < switchStallLimitNanoseconds { return true }
            vf.exceededStallLimit = true
            return false
        }
        if wait { heldBack = true }
        return wait
    }
}
