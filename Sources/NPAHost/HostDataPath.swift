import NPAControlProtocol
import NPANICModel
import NPARingFormats
import NPASystem

/// The host's data path: the attached vNICs and the uplink, and the frames between them. Each
/// pass takes a burst from every active vNIC's TX queues, applies anti-spoofing and VLAN policy,
/// asks the vswitch where each frame goes and copies it there (another vNIC's RX ring, the PF's
/// queues, the counting wire); then it takes what the NIC sent up the PF. It owns the table of
/// attached vNICs and the unretained views of it that the per-pass loops read.
///
/// It may touch: the vNICs (through their device emulation), the vswitch, the uplink NIC's PF
/// queues. Per frame it allocates nothing, counts no references and calls no existential: every
/// type here is a concrete final class, references are unretained, the arena preallocated.
/// Only the host's thread calls it.
final class HostDataPath {
    let vswitch: VirtualSwitch
    let arena = FrameArena(capacity: 64)
    /// The attached vNICs, in attach order.
    private(set) var devices: [EmulatedDevice] = []
    /// Port index → the device on it, unretained so routing a frame costs no reference counting
    /// (`devices` keeps them alive).
    private(set) var portOwners: [Unmanaged<EmulatedDevice>?] = []
    /// `devices`, unretained, in a buffer rebuilt on attach/detach: the per-pass loops read it
    /// without retaining the array or its elements (iterating `devices` retains each one).
    private var activeDevices = UnsafeMutableBufferPointer<Unmanaged<EmulatedDevice>>.allocate(capacity: 0)
    /// The NIC whose PF is the vswitch's uplink, if any.
    let uplinkNIC: SoftNIC?
    /// Every software NIC of the host (the uplink's among them): each has a physical port a
    /// self-announcement goes out of.
    let nics: [SoftNIC]
    /// `uplinkNIC`, unretained, for the same reason (the PF driver's `nics` keeps it alive).
    private let uplinkRef: Unmanaged<SoftNIC>?
    let wire: CountingWire?
    /// The vswitch's uplink when it is a TAP device (`uplink: { tap: IF }`), and unretained.
    let uplinkWire: TAPWire?
    let uplinkWireRef: Unmanaged<TAPWire>?
    /// Arena slots of the current burst bound for the PF (the uplink), sent as one burst.
    private let pfBatch = UnsafeMutablePointer<Int32>.allocate(capacity: 64)
    private var pfBatchCount = 0
    /// Frames from the PF that no vNIC took (unknown destination or filtered): shown with the
    /// uplink's dropped frames in `npa status`.
    private(set) var pfFramesUnroutable: UInt64 = 0
    /// Set by a pass that held a frame back for a receiver without buffers (see `switchBurst`);
    /// the event loop reads and clears it.
    var heldBack = false
    /// Whether some vNIC has frames parked at a switch point (`SwitchOverflow`).
    var anySwitchOverflow = false
    /// Whether some vNIC's MAC waits for its switch-out after a VF reset (`awaitingSwitchOut`):
    /// only then does `switchBurst` look for it among frames bound for the uplink.
    private var anyAwaitingSwitchOut = false
    /// Per port: the frames held for its vNIC while it migrates. A held vNIC's port has no entry
    /// in `portOwners`, so the per-frame path looks here only for a port without an owner.
    var migrationHolds: [MigrationHeldFrames?] = []
    var anyMigrationHold = false
    /// Per guest name: what migrations did with its frames here, and its self-announcements.
    var migrationCounters: [String: MigrationFrameCounters] = [:]
    /// The vNICs announcing themselves after arriving here, and when each round is due.
    var announcer = SelfAnnouncer()

    /// Joins the vswitch to its uplink as `uplink` says: none, a counting wire, or the PF of one
    /// of `nics` (whose PF is then enabled), or `uplinkWire` (opened by the caller).
    init(vswitch: VirtualSwitch, uplink: HostConfiguration.UplinkKind, nics: [SoftNIC], uplinkWire: TAPWire? = nil) {
        self.vswitch = vswitch
        var uplinkNIC: SoftNIC?
        var wire: CountingWire?
        switch uplink {
        case .none:
            break
        case .counting:
            _ = vswitch.addUplink()
            wire = CountingWire()
        case .nic(let name):
            _ = vswitch.addUplink()
            uplinkNIC = nics.first { $0.name == name }
            uplinkNIC?.setPFEnabled(true)
        case .tap:
            _ = vswitch.addUplink()
        }
        self.uplinkNIC = uplinkNIC
        self.nics = nics
        self.wire = wire
        self.uplinkWire = uplinkWire
        uplinkWireRef = uplinkWire.map { Unmanaged.passUnretained($0) }
        uplinkRef = uplinkNIC.map { Unmanaged.passUnretained($0) }
        syncPortOwners()
    }

    deinit {
        pfBatch.deallocate()
        activeDevices.deallocate()
    }

    /// Whether a pass has anything to do: a vNIC or a PF to take frames from.
    var isIdle: Bool { devices.isEmpty && uplinkNIC == nil && uplinkWire == nil }

    func add(_ device: EmulatedDevice) {
        devices.append(device)
        syncPortOwners()
    }

    func remove(_ device: EmulatedDevice) {
        devices.removeAll { $0 === device }
        forgetMigration(of: device)
        syncPortOwners()
    }

    /// Puts `new` in `old`'s place (same port, same position): a device restored from `old`'s
    /// saved state takes over (the device-state checkpoint).
    func replace(_ old: EmulatedDevice, with new: EmulatedDevice) {
        guard let index = devices.firstIndex(where: { $0 === old }) else { return }
        devices[index] = new
        migrationHold(onPort: new.port)?.device = new  // a held port stays held, for the new device
        syncPortOwners()
    }

    /// The vNIC of the guest named `name`.
    func device(named name: String) -> EmulatedDevice? { devices.first { $0.name == name } }

    /// One pass over every active vNIC's TX queues: stage a burst, switch it, deliver it; then
    /// raise the interrupts the pass earned. Returns the number of TX chains consumed.
    func pass() -> Int {
        var work = 0
        if anySwitchOverflow { flushSwitchOverflows() }
        for ref in activeDevices {
            work += ref._withUnsafeGuaranteedRef { device in
                guard device.isActive else { return 0 }
                var n = 0
                for q in 0..<device.txQueues.count {
                    guard device.pullTransmit(queue: q, arena: arena, budget: arena.capacity) > 0 else { continue }
                    let taken = switchBurstCapturing(from: device)
                    if taken < arena.count { heldBack = true }
                    n += device.completeTransmit(queue: q, arena: arena, framesTaken: taken)
                }
                return n
            }
        }
        if let nic = uplinkRef { work += nic._withUnsafeGuaranteedRef { receiveFromPF($0) } }
        if let wire = uplinkWireRef { work += wire._withUnsafeGuaranteedRef { receiveFromWire($0) } }
        for ref in activeDevices { ref._withUnsafeGuaranteedRef { $0.raiseInterrupts() } }
        return work
    }

    /// Frames the NIC sent up to its PF (for MACs not on a VF) enter the vswitch by the uplink.
    /// A unicast frame whose receiver has no free buffer (within its stall limit) stays in the
    /// PF queue, which then fills and holds back the NIC's senders in turn. At a switch point
    /// (`switching` given) frames for the switching guest, and for a guest whose VF was reset,
    /// are not waited for: the drain must finish, and those guests are busy in their own switch.
    /// With `parking`, the switching guest's frames its ring cannot take yet are parked for it
    /// (`SwitchOverflow`) rather than dropped. A frame for no vNIC is counted in
    /// `pfFramesUnroutable`.
    func receiveFromPF(_ nic: SoftNIC, switching exempt: EmulatedDevice? = nil, parking: SwitchParking = .no) -> Int {
        guard let ingress = vswitch.uplinkPort else { return 0 }
        return nic.pfReceive.popMarked(
            max: arena.capacity,
            while: { admitFromUplink($0, length: $1, ingress: ingress, exempt: exempt, parking: parking, checksumValid: $2) })
    }

    /// One frame in by the uplink (the PF's queue or a TAP wire): false if it must wait for its
    /// receiver (see `receiveFromPF`), true once it is delivered, dropped or counted.
    func admitFromUplink(
        _ frame: UnsafeRawPointer, length: Int, ingress: Int, exempt: EmulatedDevice?, parking: SwitchParking = .no,
        checksumValid: Bool = false
    ) -> Bool {
        let exemptOwner = exempt.map { Unmanaged.passUnretained($0).toOpaque() }
        let dst = EthernetFrame.mac(frame, at: 0)
        let vlan = EthernetFrame.vlanID(frame, length: length)
        guard case .forward(let n) = vswitch.route(destination: dst, vlan: vlan, ingress: ingress, into: arena.destinations) else {
            // For a vNIC in passthrough whose VF did not take it (reset, or disabled under
            // the plugin): it waits here until the MAC is back on the vswitch (the guest is
            // switching out), or is dropped and counted where that guest sees it.
            if let owner = passthroughOwner(of: dst, vlan: vlan) {
                if exempt == nil && owner._withUnsafeGuaranteedRef({ $0.holdsSendersUntilSwitchOut() }) {
                    heldBack = true
                    return false
                }
                owner._withUnsafeGuaranteedRef { $0.drop(.inactive) }
                return true
            }
            pfFramesUnroutable &+= 1
            return true
        }
        let hash = EthernetFrame.flowHash(frame, length: length)
        if parking != .no, n == 1, let owner = portOwners[Int(arena.destinations[0])], owner.toOpaque() == exemptOwner {
            owner._withUnsafeGuaranteedRef {
                $0.deliverOrPark(frame, length: length, hash: hash, toVirtualFunction: parking == .thenToVirtualFunction)
            }
            anySwitchOverflow = anySwitchOverflow || owner._withUnsafeGuaranteedRef { $0.switchOverflow != nil }
            return true
        }
        if n == 1, let owner = portOwners[Int(arena.destinations[0])], owner.toOpaque() != exemptOwner,
            owner._withUnsafeGuaranteedRef({ $0.holdsSenderWithoutBuffer(hash: hash) })
        {
            heldBack = true
            return false
        }
        // The NIC made this frame's checksums (a segment it cut, a checksum it completed): the
        // receiver's RX completion says so, as it does for frames the device made.
        let checksumBits = checksumValid ? EmulatedDevice.checksumBits(ofMarked: frame, length: length) : 0
        for k in 0..<n {
            if let owner = portOwners[Int(arena.destinations[k])] {
                owner._withUnsafeGuaranteedRef { $0.deliver(frame, length: length, hash: hash, checksumBits: checksumBits) }
            } else if let hold = migrationHold(onPort: Int(arena.destinations[k])) {
                hold.keep(frame, length: length)
            }
        }
        return true
    }

    /// Anti-spoofing, VLAN policy, then the vswitch decides; the copies into each destination
    /// happen here. No allocation or reference counting per frame.
    ///
    /// Returns how many of the burst's frames were taken. It stops at a unicast frame whose
    /// receiver has no free buffer but is still within its stall limit — a vNIC here, or a VF
    /// behind the PF (the NIC takes a PF burst only up to such a frame): that frame and the rest
    /// stay in the sender's TX ring (backpressure, like a NIC honouring pause frames) and are
    /// offered again on the next pass, in order. Broadcast and flooded frames never wait: one
    /// slow receiver must not hold up a frame meant for many. Frames for the PF are batched
    /// (one NIC lock per batch); the batch goes before any later frame is delivered here, so
    /// what was taken is always a prefix of the burst.
    func switchBurst(from device: EmulatedDevice) -> Int {
        let ingress = device.port
        var taken = arena.count
        frames: for i in 0..<arena.count {
            let frame = UnsafeRawPointer(arena.slot(i))
            let length = arena.lengths[i]
            let checksumBits = arena.checksumBits[i]
            // The device's TX policy (anti-spoofing, VLAN membership), on the private copy.
            guard let vlan = device.admittedVLAN(ofTransmitted: frame, length: length, on: vswitch) else { continue }
            let dst = EthernetFrame.mac(frame, at: 0)
            let route = vswitch.route(destination: dst, vlan: vlan, ingress: ingress, into: arena.destinations)
            var hash: UInt32 = 0
            if case .forward(let n) = route {
                hash = EthernetFrame.flowHash(frame, length: length)
                if n == 1, let owner = portOwners[Int(arena.destinations[0])],
                    owner._withUnsafeGuaranteedRef({ $0.holdsSenderWithoutBuffer(hash: hash) })
                {
                    taken = i
                    heldBack = true
                    break
                } else if n == 1, anyAwaitingSwitchOut, Int(arena.destinations[0]) == vswitch.uplinkPort,
                    let owner = awaitingOwner(of: dst, vlan: vlan)
                {
                    // Unknown to the vswitch because its VF was reset and its guest has not yet
                    // switched out: not for the uplink (the NIC forgot the MAC) but held back.
                    if owner._withUnsafeGuaranteedRef({ $0.holdsSendersUntilSwitchOut() }) {
                        taken = i
                        heldBack = true
                        break
                    }
                    owner._withUnsafeGuaranteedRef { $0.drop(.inactive) }
                    continue
                }
            }
            countTransmit(device, destination: dst, length: length, sign: 1)
            switch route {
            case .forward(let n):
                for k in 0..<n {
                    let port = Int(arena.destinations[k])
                    if let owner = portOwners[port] {
                        if let held = flushPFBatch() {
                            uncountBurst(device, from: held, through: i)
                            taken = held
                            break frames
                        }
                        owner._withUnsafeGuaranteedRef { $0.deliver(frame, length: length, hash: hash, checksumBits: checksumBits) }
                    } else if port == vswitch.uplinkPort {
                        if uplinkNIC != nil {
                            pfBatch[pfBatchCount] = Int32(i)
                            pfBatchCount += 1
                        } else if let tap = uplinkWireRef {
                            tap._withUnsafeGuaranteedRef { $0.send(frame, length: length) }
                        } else {
                            wire?.transmit(length: length)
                        }
                    } else if let hold = migrationHold(onPort: port) {
                        // Taken like a delivery: what went to the PF goes first.
                        if let held = flushPFBatch() {
                            uncountBurst(device, from: held, through: i)
                            taken = held
                            break frames
                        }
                        hold.keep(frame, length: length)
                    }
                }
            case .unknownDestination:
                device.drop(.unknownDestination)
            case .filtered:
                device.drop(.filtered)
            }
        }
        if let held = flushPFBatch() {
            uncountBurst(device, from: held, through: taken - 1)
            taken = held
        }
        return taken
    }

    /// Sends the frames batched for the PF into the NIC. Returns the arena index of the first
    /// frame it did not take (its VF has no free buffer yet), or nil when it took them all.
    private func flushPFBatch() -> Int? {
        guard pfBatchCount > 0, let nic = uplinkNIC else { return nil }
        let arena = self.arena, batch = pfBatch, count = pfBatchCount
        pfBatchCount = 0
        let sent = nic.transmitFromPF(count: count) { k in (UnsafeRawPointer(arena.slot(Int(batch[k]))), arena.lengths[Int(batch[k])]) }
        guard sent < count else { return nil }
        heldBack = true
        return Int(batch[sent])
    }

    @inline(__always)
    private func countTransmit(_ device: EmulatedDevice, destination dst: UInt64, length: Int, sign: UInt64) {
        device.counters.txFrames &+= sign
        device.counters.txBytes &+= UInt64(length) &* sign
        if dst == MACAddress.broadcast.value {
            device.counters.txBroadcast &+= sign
        } else if (dst >> 40) & 1 == 1 {
            device.counters.txMulticast &+= sign
        }
    }

    /// Takes back what `switchBurst` counted for frames `first...last`, which stay in the guest's
    /// ring and will be counted when they are taken. (The same checks on the same private copy
    /// under the same switch state give the same outcome, so nothing needs remembering.)
    private func uncountBurst(_ device: EmulatedDevice, from first: Int, through last: Int) {
        guard first <= last else { return }
        let back = UInt64.max  // adding 2^64 - 1 wraps to subtracting one
        for i in first...last {
            let frame = UnsafeRawPointer(arena.slot(i))
            let length = arena.lengths[i]
            guard let vlan = device.readmittedVLAN(ofTransmitted: frame, length: length, on: vswitch) else { continue }
            let dst = EthernetFrame.mac(frame, at: 0)
            let route = vswitch.route(destination: dst, vlan: vlan, ingress: device.port, into: arena.destinations)
            if case .forward(1) = route, anyAwaitingSwitchOut, Int(arena.destinations[0]) == vswitch.uplinkPort,
                let owner = awaitingOwner(of: dst, vlan: vlan)
            {
                owner._withUnsafeGuaranteedRef { $0.counters.drops[DropReason.inactive.rawValue] &-= 1 }  // dropped for a reset VF's guest
                continue
            }
            countTransmit(device, destination: dst, length: length, sign: back)
            switch route {
            case .forward: break
            case .unknownDestination: device.counters.drops[DropReason.unknownDestination.rawValue] &-= 1
            case .filtered: device.counters.drops[DropReason.filtered.rawValue] &-= 1
            }
        }
    }

    /// The vNIC in passthrough that owns unicast `dst` in `vlan` (its port keeps its VLANs, not
    /// its MAC). A frame the vswitch cannot route: a linear search, off the per-frame path.
    private func passthroughOwner(of dst: UInt64, vlan: UInt16) -> Unmanaged<EmulatedDevice>? {
        guard (dst >> 40) & 1 == 0 else { return nil }
        for ref in activeDevices {
            let found = ref._withUnsafeGuaranteedRef {
                $0.mode == .passthrough && $0.mac.value == dst && vswitch.isMember($0.port, vlan: vlan)
            }
            if found { return ref }
        }
        return nil
    }

    /// As `passthroughOwner`, among vNICs whose VF was reset and whose guest has not switched out.
    private func awaitingOwner(of dst: UInt64, vlan: UInt16) -> Unmanaged<EmulatedDevice>? {
        guard let ref = passthroughOwner(of: dst, vlan: vlan), ref._withUnsafeGuaranteedRef({ $0.awaitingSwitchOut }) else { return nil }
        return ref
    }

    func setAwaitingSwitchOut(_ d: EmulatedDevice, _ awaiting: Bool) {
        guard d.awaitingSwitchOut != awaiting else { return }
        d.awaitingSwitchOut = awaiting
        // The MAC moves now (or the vNIC goes): its stall clock starts afresh.
        d.receiverStalledSince = 0
        d.exceededStallLimit = false
        anyAwaitingSwitchOut = devices.contains { $0.awaitingSwitchOut }
    }

    /// Passthrough: the vNIC's port keeps its place but holds no MAC and accepts nothing, so the
    /// vswitch sends frames for the guest to the uplink (the PF, then the VF) and never twice.
    func detachFromSwitch(_ d: EmulatedDevice) {
        vswitch.setMAC(d.port, .zero)
        vswitch.setRxMode(d.port, [])
    }

    func reattachToSwitch(_ d: EmulatedDevice) {
        vswitch.setMAC(d.port, d.mac)
        vswitch.setRxMode(d.port, d.effectiveRxMode)
    }

    /// Rebuilds the per-pass views of `devices`. A vNIC whose frames a migration holds gets no
    /// owner entry: the switch then neither delivers to it nor holds a sender back for it.
    func syncPortOwners() {
        growMigrationHolds(to: vswitch.portCount)
        portOwners = [Unmanaged<EmulatedDevice>?](repeating: nil, count: vswitch.portCount)
        for d in devices where migrationHolds[d.port] == nil { portOwners[d.port] = Unmanaged.passUnretained(d) }
        activeDevices.deallocate()
        activeDevices = .allocate(capacity: devices.count)
        _ = activeDevices.initialize(from: devices.map { Unmanaged.passUnretained($0) })
        arena.ensureDestinations(vswitch.portCount)
    }
}
