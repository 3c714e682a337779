import NPANICModel
import NPARingFormats
import NPASystem

/// Device emulation's side of `npa capture`: the frames a vNIC sends are copied into its
/// capture once the switch has taken them (received frames are copied where `deliver` writes
/// them into the guest's ring). With no capture running, the cost is one nil check per burst.
extension HostDataPath {
    /// `switchBurst`, then a copy of each frame it took that left the vNIC's port (its source
    /// MAC and VLAN passed the port's policy, as the VF's port mirror copies only frames its
    /// anti-spoofing let through). Frames the switch did not take stay in the guest's ring and
    /// are copied when it takes them: never twice.
    func switchBurstCapturing(from device: EmulatedDevice) -> Int {
        let taken = switchBurst(from: device)
        guard let ring = device.captureTransmitted, taken > 0 else { return taken }
        let now = Clock.monotonicNanoseconds()
        let mac = device.mac.value
        ring._withUnsafeGuaranteedRef { ring in
            for i in 0..<taken {
                let frame = UnsafeRawPointer(arena.slot(i))
                let length = arena.lengths[i]
                guard EthernetFrame.mac(frame, at: 6) == mac,
                    vswitch.isMember(device.port, vlan: EthernetFrame.vlanID(frame, length: length))
                else { continue }
                ring.push(frame, length: length, direction: .transmitted, timestamp: now)
            }
        }
        return taken
    }
}

extension EmulatedDevice {
    /// From now on device emulation copies this vNIC's frames into `capture` (nil: no more).
    func setCapture(_ capture: PacketCapture?) {
        self.capture = capture
        captureReceived = capture?.receivedRing
        captureTransmitted = capture?.transmittedRing
    }
}

extension CaptureRing {
    /// Copies a frame device emulation just wrote into its guest's receive ring.
    @inline(__always)
    func copyReceived(_ frame: UnsafeRawPointer, length: Int) {
        push(frame, length: length, direction: .received, timestamp: Clock.monotonicNanoseconds())
    }
}
