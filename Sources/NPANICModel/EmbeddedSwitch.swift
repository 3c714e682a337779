import Foundation
import NPARingFormats
import NPASystem

/// The NIC's embedded L2 switch: anti-spoofing on VF ports, switching by (MAC, VLAN) to VFs,
/// floods, and the way up (the PF's queue or the uplink wire); and the two ports a frame can
/// enter by from outside a VF, the PF and the wire. Runs under the NIC's lock, inside an engine
/// pass or a PF/wire burst, specialised per VF model.
extension SoftNIC {
    /// A frame from a VF's TX queue (`frame` points into the VF's granted memory): false if it
    /// must wait for its receiver (`mustWait`; the caller leaves it in the ring), otherwise it is
    /// taken: anti-spoofing, then switching. Each destination gets its own copy, re-checked after
    /// the copy (the sender could rewrite its buffer meanwhile; the copy is what the receiver gets).
    @inline(__always)
    func transmit<Model: VFModelEngine>(_: Model.Type, from vf: VirtualFunction, _ frame: UnsafeRawPointer, length: Int) -> Bool {
        var route = route(frame, length: length)
        if mustWait(Model.self, frame, length: length, route: &route, from: vf) { return false }
        forward(Model.self, from: vf, frame, length: length, route: &route)
        return true
    }

    /// Anti-spoofing, then switching, for a frame from a VF that may no longer wait.
    /// `checksumValid`: the NIC made the frame's checksums (a segment it cut, a checksum it
    /// completed); VF receivers are told so in their RX descriptor.
    func forward<Model: VFModelEngine>(
        _: Model.Type, from vf: VirtualFunction, _ frame: UnsafeRawPointer, length: Int, route: inout FrameRoute,
        checksumValid: Bool = false
    ) {
        guard route.source == vf.mac.value else {
            vf.counters.spoofedDrops &+= 1
            return
        }
        guard vf.isMember(vlan: route.vlan) else {
            vf.counters.vlanDrops &+= 1
            return
        }
        vf.counters.txFrames &+= 1
        vf.counters.txBytes &+= UInt64(length)
        vf.mirrorCopy(frame, length: length, .transmitted)
        if switchFrame(Model.self, frame, length: length, route: &route, from: vf, checksumValid: checksumValid) {
            sendUp(frame, length: length, checksumValid: checksumValid)
        }
    }

    /// The embedded switch proper, for frames from a VF or from the PF (`from: nil`): delivers
    /// to every VF the frame is for, one copy each, and says whether it also leaves the switch
    /// upward — floods, unknown unicast, and frames for a quiesced VF (mid-switch, the host owns
    /// that MAC next). Never back to the sender.
    private func switchFrame<Model: VFModelEngine>(
        _: Model.Type, _ frame: UnsafeRawPointer, length: Int, route: inout FrameRoute, from sender: VirtualFunction?,
        checksumValid: Bool = false
    ) -> Bool {
        let dst = route.destination, vlan = route.vlan
        var n = 0
        var upward = false
        if route.isMulticast {
            // Never back to the sender, nor to the VF owning the source MAC: a flood the PF sends
            // on a guest's behalf (its self-announcement after a migration) is not for that guest.
            // Nor to a VF that has no MAC yet: mid switch-in (enabled, before ACTIVATE_VF) the
            // guest's MAC is still on the vswitch, whose copy of the flood reaches the guest; one
            // in the VF's ring too would be a duplicate (and, its own announcement, not for it).
            let source = route.source
            for ref in vfRefs {
                ref._withUnsafeGuaranteedRef { other in
                    guard other !== sender, other.mac.value != source, other.mac.value != 0, other.enabled, other.isMember(vlan: vlan),
                        other.accepts(destination: dst)
                    else { return }
                    destinations[n] = other.index
                    n += 1
                }
            }
            upward = true
        } else if let target = route.port {
            if target == sender?.index {
                // no hairpin
            } else if vfRefs[target]._withUnsafeGuaranteedRef({ $0.enabled }) {
                destinations[0] = target
                n = 1
            } else {
                upward = true
            }
        } else {
            upward = true
        }
        guard n > 0 else { return upward }
        let hash = route.flowHash(frame, length: length)
        let src = route.source
        for k in 0..<n {
            vfRefs[destinations[k]]._withUnsafeGuaranteedRef { target in
                guard target.grant != nil, target.rxQueueCount > 0 else { return }
                let q = target.rxQueueCount == 1 ? 0 : Int(hash % UInt32(target.rxQueueCount))
                Model.deliver(
                    to: target, queue: q, frame, length: length, hash: hash, source: src, vlan: vlan, sender: sender,
                    checksumValid: checksumValid)
            }
        }
        return upward
    }

    /// Out of the embedded switch toward the host: the PF's queue when the PF driver listens,
    /// otherwise the uplink wire (a TAP wire's outbound queue, written by the engine after
    /// its pass).
    /// With a TAP wire and the PF listening, such a frame goes both ways, as a learning switch
    /// floods what it does not know: the NIC cannot tell a MAC behind the PF (on the vswitch)
    /// from one out on the wire. Frames leave finished (TSO segments, completed checksums); to
    /// the PF with the "checksums valid" mark when the NIC made them (the wire has no such mark).
    @inline(__always)
    private func sendUp(_ frame: UnsafeRawPointer, length: Int, checksumValid: Bool = false) {
        if pfEnabled {
            pfReceive.push(frame, length: length, checksumValid: checksumValid)
        }
        if !pfEnabled || wireOutbound != nil {
            uplinkFrames &+= 1
            uplinkBytes &+= UInt64(length)
            wireOutbound?._withUnsafeGuaranteedRef { _ = $0.push(frame, length: length) }
        }
    }

    /// The PF driver starts (or stops) taking frames for MACs not on a VF.
    public func setPFEnabled(_ enabled: Bool) { locked { pfEnabled = enabled } }

    /// The PF driver sends a burst into the NIC (one lock for the whole burst). Frames are
    /// switched to VFs by (MAC, VLAN); frames for no VF leave by the uplink wire, never back up
    /// to the PF. The PF is trusted: no anti-spoofing on this port. Returns how many frames were
    /// taken: it stops at a frame for a VF that has no free buffer and is within its stall limit
    /// (backpressure); the caller keeps that frame and the rest.
    @discardableResult
    public func transmitFromPF(count: Int, frame: (Int) -> (UnsafeRawPointer, Int)) -> Int {
        engine.transmitFromPF(on: self, count: count, frame: frame)
    }

    func transmitFromPF<Model: VFModelEngine>(_: Model.Type, count: Int, frame: (Int) -> (UnsafeRawPointer, Int)) -> Int {
        lock.lock()
        defer { lock.unlock() }
        var taken = 0
        defer { publishAndInterrupt(Model.self) }
        for i in 0..<count {
            let (p, length) = frame(i)
            guard length >= EthernetFrame.headerLength, length <= Self.maximumFrame else {
                taken += 1
                continue
            }
            var route = route(p, length: length)
            if mustWait(Model.self, p, length: length, route: &route, from: nil, fromPF: true) { return taken }
            taken += 1
            pfTransmitted &+= 1
            // The PF is trusted and its frames sit in host memory the host does not change
            // mid-copy. What is for no VF leaves by the wire, never back up to the PF — except a
            // frame for a VF that is stopped (disabled under its plugin): the PF driver owns that
            // MAC next, so it goes back up to the PF, which holds it for the guest's switch-out.
            if switchFrame(Model.self, p, length: length, route: &route, from: nil) {
                if pfEnabled, let stopped = stoppedVF(route) {
                    if !pfReceive.push(p, length: length) { vfs[stopped].counters.noBufferDrops &+= 1 }
                } else {
                    uplinkFrames &+= 1
                    uplinkBytes &+= UInt64(length)
                    wireOutbound?._withUnsafeGuaranteedRef { _ = $0.push(p, length: length) }
                }
            }
        }
        return taken
    }

    /// Frames arriving from the wire on the uplink port (a traffic source or a test plays the
    /// network): switched to the VFs that own their (MAC, VLAN), flooded to VFs, and sent up the
    /// PF for the vswitch — unknown unicast, floods, frames for a quiesced VF — when the PF
    /// driver listens (otherwise those are counted in `wireFramesDropped`). Returns how many
    /// frames were taken: it stops early while the PF queue is full, as a port honouring pause
    /// frames would; the caller offers the rest again. Malformed frames are taken and counted.
    public func receiveFromWire(count: Int, frame: (Int) -> (UnsafeRawPointer, Int)) -> Int {
        engine.receiveFromWire(on: self, count: count, frame: frame)
    }

    func receiveFromWire<Model: VFModelEngine>(_: Model.Type, count: Int, frame: (Int) -> (UnsafeRawPointer, Int)) -> Int {
        lock.lock()
        defer { lock.unlock() }
        var taken = 0
        while taken < count && (!pfEnabled || pfReceive.hasRoom) {
            let (p, length) = frame(taken)
            guard length >= EthernetFrame.headerLength, length <= Self.maximumFrame else {
                taken += 1
                wireFramesDropped &+= 1
                continue
            }
            var route = route(p, length: length)
            if mustWait(Model.self, p, length: length, route: &route, from: nil) { break }
            taken += 1
            wireFramesIn &+= 1
            if switchFrame(Model.self, p, length: length, route: &route, from: nil) {
                if pfEnabled { pfReceive.push(p, length: length) } else { wireFramesDropped &+= 1 }
            }
        }
        publishAndInterrupt(Model.self)
        return taken
    }

    /// The VF a unicast frame is addressed to if that VF is known but stopped (the frame then
    /// left the switch upward instead of reaching it). The same lookup the switch used: the MAC
    /// table and the VFs' state change only under the lock this burst holds.
    private func stoppedVF(_ route: FrameRoute) -> Int? {
        guard let target = route.port, !vfRefs[target]._withUnsafeGuaranteedRef({ $0.enabled }) else { return nil }
        return target
    }
}

extension SoftNIC {
    /// True if the received copy still carries the source MAC and VLAN that were checked (the
    /// sender could rewrite its buffer during the copy; the copy is what the receiver gets).
    @inline(__always)
    static func copyIsFaithful(_ copy: UnsafeRawPointer, length: Int, source: UInt64, vlan: UInt16) -> Bool {
        EthernetFrame.mac(copy, at: 6) == source && EthernetFrame.vlanID(copy, length: length) == vlan
    }
}
