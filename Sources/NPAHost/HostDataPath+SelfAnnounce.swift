import NPAControlProtocol
import NPARingFormats
import NPASystem

/// Self-announcement of a vNIC that has just arrived on this host (a live migration's
/// destination): its gratuitous RARP frames (`SelfAnnounce`), one per VLAN it is a member of,
/// go out of every wire the host has — the vswitch's uplink (the PF of the uplink NIC, a TAP, or
/// the counting sink) and the physical port of each other software NIC — and into the vswitch
/// to the other vNICs in the VLAN, as if the guest had sent them, on `SelfAnnouncer`'s schedule.
/// The physical network's switches learn the guest's MAC on this host's port from them (so the
/// frames for it stop going to the source host). Host thread only, between passes.
extension HostDataPath {
    /// Announces `device`'s MAC now and on QEMU's schedule after (5 rounds over 800 ms).
    /// Starting again restarts the schedule. The rounds after the first are sent by
    /// `serviceAnnouncements(now:)`, which the event loop calls when `nextAnnouncementDeadline`
    /// passes.
    func announceSelf(_ device: EmulatedDevice, now: UInt64 = Clock.monotonicNanoseconds()) {
        guard devices.contains(where: { $0 === device }) else { return }
        announcer.start(device.name, now: now)
        serviceAnnouncements(now: now)
    }

    /// Stops announcing `device` (a migration that failed at its destination, or its vNIC leaving
    /// this host).
    func cancelAnnouncements(for device: EmulatedDevice) { announcer.cancel(device.name) }

    /// When the next round is due (monotonic nanoseconds), if one is.
    var nextAnnouncementDeadline: UInt64? { announcer.nextDeadline }

    /// Sends every round due at `now`. One comparison when none is.
    func serviceAnnouncements(now: UInt64) {
        guard let next = announcer.nextDeadline, next <= now else { return }
        for name in announcer.due(now: now) {
            guard let device = device(named: name) else { continue }
            // A stopped device is leaving (or its state is being saved): a round now would pull
            // the network's idea of where the guest is back to this host, behind the frames the
            // destination already gets directly — the late announcement reorders them.
            if device.state == .stopped {
                announcer.cancel(name)
                continue
            }
            let frames = sendAnnouncement(of: device)
            migrationCounters[name, default: .init()].announceRounds &+= 1
            migrationCounters[name, default: .init()].announceFrames &+= UInt64(frames)
        }
    }

    /// One round for `device`: per VLAN (ascending; VLAN 0 untagged), its frame out of every
    /// wire and to the vswitch's other ports. Returns the frames built (one per VLAN).
    @discardableResult
    func sendAnnouncement(of device: EmulatedDevice) -> Int {
        let vlans = device.effectiveVLANs.sorted()
        let mac = device.mac.value
        withUnsafeTemporaryAllocation(byteCount: SelfAnnounce.taggedFrameLength, alignment: 8) { buffer in
            let p = buffer.baseAddress!
            for vlan in vlans {
                let length = SelfAnnounce.write(mac: mac, vlan: vlan, into: p)
                flood(UnsafeRawPointer(p), length: length, vlan: vlan, from: device.port)
                for nic in nics where nic !== uplinkNIC {
                    _ = nic.transmitFromPF(count: 1) { _ in (UnsafeRawPointer(p), length) }
                }
            }
        }
        return vlans.count
    }

    /// A broadcast frame from `port` through the vswitch: to the other vNICs of `vlan` that take
    /// broadcasts (held for one whose frames a migration holds) and to the uplink.
    private func flood(_ frame: UnsafeRawPointer, length: Int, vlan: UInt16, from ingress: Int) {
        guard
            case .forward(let n) = vswitch.route(
                destination: MACAddress.broadcast.value, vlan: vlan, ingress: ingress, into: arena.destinations)
        else { return }
        let hash = EthernetFrame.flowHash(frame, length: length)
        for k in 0..<n {
            let port = Int(arena.destinations[k])
            if let owner = portOwners[port] {
                owner._withUnsafeGuaranteedRef { $0.deliver(frame, length: length, hash: hash) }
            } else if let hold = migrationHold(onPort: port) {
                hold.keep(frame, length: length)
            } else if port == vswitch.uplinkPort {
                if let nic = uplinkNIC {
                    _ = nic.transmitFromPF(count: 1) { _ in (frame, length) }
                } else if let tap = uplinkWire {
                    tap.send(frame, length: length)
                } else {
                    wire?.transmit(length: length)
                }
            }
        }
    }
}
