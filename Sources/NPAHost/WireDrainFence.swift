import NPANICModel

/// Proof that every frame this host's wires held at one moment has reached the vswitch (and so a
/// migration's hold): what the source of a migration waits for, once the destination announced
/// the guest, before it tells the destination that forwarding is done. From the announcement on,
/// the network sends nothing more for the guest here; what it sent before may still sit in a
/// TAP's kernel queue or in the NIC's PF queue. A quiet period alone cannot tell: on a loaded
/// machine a NIC engine's thread may wait for a core longer than any quiet period, and a frame
/// it reads after forwarding ended would find the vNIC gone and be lost.
///
/// A NIC's wire has drained once its engine read it empty, with all it read before switched,
/// twice since the fence began (the first such read may have begun before it); the NIC's PF
/// queue has drained once the host popped every frame pushed by then. The vswitch's own uplink
/// TAP is read by the host's passes: it drains the same way. A wire that goes down is not waited
/// for. Host thread only; it polls, never blocks (the migration's deadline bounds the wait).
struct WireDrainFence {
    private var engineWires: [(nic: SoftNIC, start: UInt64)]
    private var uplinkWire: (wire: TAPWire, start: UInt64)?
    private let uplinkNIC: SoftNIC?
    /// The uplink NIC's PF queue position to reach, once every engine wire drained.
    private var pfTarget: UInt32?
    private(set) var isPassed = false

    /// Reads every wire's drain count now, and wakes whoever services it.
    init(dataPath: HostDataPath) {
        engineWires = dataPath.nics.compactMap { nic in nic.wireDrains.map { (nic, $0) } }
        uplinkNIC = dataPath.uplinkNIC
        if let wire = dataPath.uplinkWire, !wire.isDown { uplinkWire = (wire, wire.drains) }
        nudge()
    }

    /// Checks again (and wakes the wires' services again); true once every wire and the PF queue
    /// have drained.
    mutating func poll() -> Bool {
        guard !isPassed else { return true }
        engineWires.removeAll { nic, start in nic.wireDrains.map { $0 &- start >= 2 } ?? true }
        if let (wire, start) = uplinkWire, wire.isDown || wire.drains &- start >= 2 { uplinkWire = nil }
        guard engineWires.isEmpty else {
            nudge()
            return false
        }
        guard let pf = uplinkNIC?.pfReceive else {
            isPassed = uplinkWire == nil
            return isPassed
        }
        let target = pfTarget ?? pf.pushed
        pfTarget = target
        isPassed = uplinkWire == nil && Int32(bitPattern: pf.popped &- target) >= 0
        if !isPassed { nudge() }
        return isPassed
    }

    private func nudge() {
        for (nic, _) in engineWires { nic.nudgeEngine() }
        uplinkWire?.wire.markReadable()
    }
}
