import NPANICModel
import NPARingFormats

/// What a switch-point drain of the PF queue does with a frame for the switching guest that its
/// emulated ring cannot take (`HostDataPath.receiveFromPF`).
enum SwitchParking: Equatable {
    /// Deliver it or drop it (`no_buffers`).
    case no
    /// Park it; it goes to the guest's emulated ring (a switch-out).
    case thenToEmulatedRing
    /// Park it; it goes down the PF to the NIC, which delivers the guest's MAC to its VF now (a
    /// switch-in).
    case thenToVirtualFunction
}

extension HostDataPath {
    /// Sends frames parked at switch points on, oldest first, before anything newer for their
    /// guest: into its emulated ring while it has buffers, or down the PF to its VF while the
    /// NIC takes them. What a guest does not take within its stall limit is dropped and counted
    /// as `no_buffers`. Runs at the start of a pass, only while frames are parked.
    func flushSwitchOverflows() {
        var left = false
        for device in devices {
            guard let overflow = device.switchOverflow else { continue }
            if overflow.toVirtualFunction {
                if let nic = uplinkNIC {
                    let sent = nic.transmitFromPF(count: overflow.count) { overflow.frame($0) }
                    overflow.removeFirst(sent)
                    if !overflow.isEmpty { heldBack = true }
                } else {
                    dropParked(device, overflow)
                }
            } else {
                deliverParked(device, overflow)
            }
            if overflow.isEmpty {
                device.switchOverflow = nil
                // Its older frames are down: newer ones for its VF may come in now.
                if overflow.toVirtualFunction { uplinkNIC?.endHoldForPF(mac: device.mac) }
            } else {
                left = true
            }
        }
        anySwitchOverflow = left
    }

    private func deliverParked(_ device: EmulatedDevice, _ overflow: SwitchOverflow) {
        // Stopped by the host (a migration that failed gave its held frames back before the
        // device resumed): they wait for it. A device in any other inactive state takes none.
        if device.state == .stopped { return }
        guard device.isActive else { return dropParked(device, overflow) }
        var delivered = 0
        while delivered < overflow.count {
            let (frame, length) = overflow.frame(delivered)
            let hash = EthernetFrame.flowHash(frame, length: length)
            guard device.hasReceiveBuffer(hash: hash) else {
                if !device.holdsSenders {
                    overflow.removeFirst(delivered)
                    return dropParked(device, overflow)
                }
                heldBack = true
                break
            }
            device.deliver(frame, length: length, hash: hash)
            delivered += 1
        }
        overflow.removeFirst(delivered)
    }

    private func dropParked(_ device: EmulatedDevice, _ overflow: SwitchOverflow) {
        for _ in 0..<overflow.count { device.drop(.noBuffers) }
        overflow.removeAll()
    }
}
