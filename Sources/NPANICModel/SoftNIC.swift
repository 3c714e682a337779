import CNPAPluginABI
import Foundation
import NPAControlProtocol
import NPARingFormats
import NPASystem

/// A software SR-IOV NIC: the "hardware". One PF and N VFs of one model, an embedded L2 switch
/// joining the VFs and the uplink port, per-VF anti-spoofing (source MAC, VLAN) and DMA grants.
/// Its engine — `runPass()`, called by its own named thread (`start()`) or by a test — moves
/// frames straight between guest memories: one copy per destination, no host thread involved.
/// The model-independent parts live here and beside this file (`NICEngine`, `EmbeddedSwitch`,
/// `Backpressure`); each VF model's ring code lives in its own folder, behind `VFModelEngine`,
/// chosen once in `init`.
///
/// Only the PF driver (the host) programs it: MACs, VLANs, rx modes, grants, queue addresses,
/// enable, quiesce, reset. Guests reach it only through their VF's register page and rings.
/// Control operations and engine passes serialise on one lock, taken once per pass.
public final class SoftNIC: @unchecked Sendable {
    public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    public let name: String
    public let model: NICModel
    /// The model's engine, chosen once here: the only dynamic dispatch, once per pass or burst.
    let engine: any VFModelEngine.Type
    public let vfs: [VirtualFunction]
    /// `vfs`, unretained, for the engine's loops: iterating or indexing the array retains and
    /// releases the element each time, once per pass per VF and once per frame.
    let vfRefs: [Unmanaged<VirtualFunction>]
    let lock = NSLock()
    var macTable = MACTable()
    let destinations: UnsafeMutablePointer<Int>
    /// Frames the embedded switch sent out of the uplink port (unknown unicast, floods).
    public internal(set) var uplinkFrames: UInt64 = 0
    public internal(set) var uplinkBytes: UInt64 = 0
    /// Frames that came in from the wire, and those the NIC could not take (malformed, or for
    /// no VF while no PF driver listens).
    public internal(set) var wireFramesIn: UInt64 = 0
    public internal(set) var wireFramesDropped: UInt64 = 0
    /// The physical port's other end when it is a TAP device (`attachWire`); without one,
    /// frames leaving by the wire are only counted.
    public internal(set) var wire: TAPWire?
    /// `wire.outbound`, unretained, for the switch's per-frame path.
    var wireOutbound: Unmanaged<FrameQueue>?
    /// The PF's receive queue: frames for MACs that are not on a VF, for the host's PF driver,
    /// which plugs it into the vswitch as its uplink (NPA's "PF filter for every vswitch MAC").
    public let pfReceive = FrameQueue(capacity: 2048)
    var pfEnabled = false
    /// Frames the PF driver sent into the NIC.
    public internal(set) var pfTransmitted: UInt64 = 0
    var thread: pthread_t?
    /// The engine's thread while it runs (for per-thread CPU accounting as "hardware").
    public var engineThread: pthread_t? { thread }
    let stopFlag = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
    /// The engine thread's sleeps (slot 0) and nanoseconds asleep (slot 1), written by it at each
    /// sleep and read relaxed by the host for its metrics (`engineSleeps`): never touched per frame.
    let engineActivity = UnsafeMutablePointer<UInt64>.allocate(capacity: 2)
    let wake: EventNotifier
    public static let maximumFrame = 9018
    /// Where the NIC builds a frame it makes from a VF's request (a segment it cuts, a frame whose
    /// checksum it completes): `maximumFrame` bytes of host memory, used under the lock.
    let offloadScratch = UnsafeMutableRawPointer.allocate(byteCount: SoftNIC.maximumFrame, alignment: 64)
    public let passBudget = 64
    /// How long a sender's frame waits (in its TX ring, or in the PF driver's burst) for a VF
    /// with no free receive buffer before frames to that VF are dropped as `vf_no_buffers`
    /// (the host's `receiver_stall_ms`; 0 drops at once). Set before `start()`.
    public var receiverStallLimitNanoseconds: UInt64 = 500_000_000
    /// The same for a VF whose guest is in a switch handshake (`VirtualFunction.guestSwitching`;
    /// the host's `switch_timeout_ms`, when longer). Set before `start()`.
    public var switchStallLimitNanoseconds: UInt64 = 5_000_000_000
    /// Set by a pass that left a frame waiting for a receiver: the engine then keeps polling
    /// (yielding the core) instead of sleeping, since posting a buffer rings no doorbell.
    var heldBack = false

    public init(name: String, model: NICModel, vfCount: Int) throws {
        guard (1...64).contains(vfCount) else { throw ConfigurationError(description: "a NIC has 1...64 VFs, not \(vfCount)") }
        self.name = name
        self.model = model
        engine = model.engine
        vfs = try (0..<vfCount).map { try VirtualFunction(index: $0) }
        vfRefs = vfs.map { Unmanaged.passUnretained($0) }
        destinations = .allocate(capacity: vfCount + 1)
        wake = try EventNotifier()
        stopFlag.pointee = 0
        engineActivity.initialize(repeating: 0, count: 2)
    }

    deinit {
        stop()
        destinations.deallocate()
        stopFlag.deallocate()
        engineActivity.deallocate()
        offloadScratch.deallocate()
    }

    func locked<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    // MARK: PF driver operations

    /// Points `mac` (in every VLAN the VF is a member of) at the VF in the embedded switch.
    /// `switchingIn`: frames for the VF from anywhere but the PF wait until `endHoldForPF` (the
    /// host has older frames for this guest to send down first), and its guest is in a switch
    /// handshake (`guestSwitches`); a hold already set stays.
    public func setMAC(vf: Int, _ mac: MACAddress, switchingIn: Bool = false) {
        locked {
            forget(vf)
            vfs[vf].mac = mac
            if switchingIn {
                vfs[vf].holdsForPF = true
                vfs[vf].guestSwitching = true
            }
            learn(vf)
        }
    }

    /// The VF's guest is in a switch handshake: a stall of its is waited for up to
    /// `switchStallLimitNanoseconds` (see `VirtualFunction.guestSwitching`).
    public func guestSwitches(vf: Int) { locked { vfs[vf].guestSwitching = true } }

    /// Lets frames for the VF owning `mac` from other VFs and the wire in again (see `setMAC`).
    public func endHoldForPF(mac: MACAddress) {
        locked {
            for vf in vfs where vf.mac == mac { vf.holdsForPF = false }
            wake.signal()  // senders left waiting in their rings go on at the engine's next pass
        }
    }

    public func setVLANs(vf: Int, _ vlans: Set<UInt16>) {
        locked {
            forget(vf)
            var bitmap = [UInt64](repeating: 0, count: 64)
            for v in vlans.union([0]) where v < 4096 { bitmap[Int(v >> 6)] |= 1 << UInt64(v & 63) }
            vfs[vf].vlans = bitmap
            learn(vf)
        }
    }

    public func setRxMode(vf: Int, _ mode: VMXNET3.RxMode, multicast: Set<MACAddress> = []) {
        locked {
            vfs[vf].rxMode = mode
            vfs[vf].multicast = multicast
        }
    }

    /// The IOMMU role: the VF may DMA only inside this memory. A new grant stops the VF and
    /// forgets its queues: the engine addresses ring slots without re-checking them, on the
    /// strength of `initializeQueues` having checked the rings against the grant in force then,
    /// so the PF initialises the queues again (inside the new grant) before enabling the VF.
    public func grant(vf: Int, memory: GuestMemory) {
        locked {
            let f = vfs[vf]
            f.grant = memory
            f.enabled = false
            f.txQueueCount = 0
            f.rxQueueCount = 0
            f.write(NPA_VF_REG_STATUS, 0)
        }
    }

    /// Initialises a VF's queues from the GPAs the guest's shell allocated (the PF does this on
    /// the VF's behalf, as in NPA), with each RX queue's buffer size (SRRCTL). Every ring must
    /// lie inside the grant and be 16-byte aligned (the engine loads descriptor words in place).
    public func initializeQueues(vf: Int, tx: [VirtualFunction.QueueConfig], rx: [VirtualFunction.QueueConfig], interrupt: EventNotifier)
        throws
    {
        try locked {
            let f = vfs[vf]
            guard let memory = f.grant else { throw ConfigurationError(description: "VF \(vf) has no DMA grant") }
            guard (1...Int(NPA_VF_MAX_QUEUES)).contains(tx.count), (1...Int(NPA_VF_MAX_QUEUES)).contains(rx.count) else {
                throw ConfigurationError(description: "a VF has 1...\(NPA_VF_MAX_QUEUES) queues per direction")
            }
            for q in tx + rx {
                // The one rule a model adds that a driver most easily misses gets its own words.
                if q.completionGPA == nil, !engine.queueFits(q, in: memory) {
                    throw ConfigurationError(
                        description:
                            "VF \(vf): model \(model.name) needs a completion ring per queue (the plugin reported none: completion_offset 0)"
                    )
                }
                guard q.ringSize >= 32, q.ringSize <= 4096, q.ringSize & (q.ringSize - 1) == 0,
                    q.ringGPA & 15 == 0, memory.contains(gpa: q.ringGPA, length: UInt64(q.ringSize) * 16), engine.queueFits(q, in: memory)
                else {
                    throw ConfigurationError(
                        description: "VF \(vf): a ring lies outside the grant, is not 16-byte aligned or has a bad size")
                }
            }
            for q in rx where !VirtualFunction.QueueConfig.bufferSizes.contains(q.bufferSize) {
                throw ConfigurationError(
                    description: "VF \(vf): RX buffer size \(q.bufferSize) is not in \(VirtualFunction.QueueConfig.bufferSizes)")
            }
            f.setQueues(tx: tx, rx: rx)
            f.interrupt = interrupt
            for q in 0..<Int(NPA_VF_MAX_QUEUES) {
                engine.resetQueueRegisters(of: f, queue: q)
                f.write(NPA_VF_REG_RX_BUFFER_SIZE(UInt32(q)), q < rx.count ? rx[q].bufferSize : 0)
            }
        }
    }

    public func enable(vf: Int) {
        locked {
            vfs[vf].enabled = vfs[vf].grant != nil && vfs[vf].txQueueCount > 0
            vfs[vf].write(NPA_VF_REG_STATUS, vfs[vf].enabled ? NPA_VF_STATUS_ENABLED : 0)
        }
        wake.signal()
    }

    /// Stops the VF's queues; its rings keep their state (the shell drains them next).
    public func quiesce(vf: Int) {
        locked {
            vfs[vf].enabled = false
            vfs[vf].holdsForPF = false
            vfs[vf].guestSwitching = false
            vfs[vf].write(NPA_VF_REG_STATUS, 0)
        }
    }

    /// Function-level reset: all DMA stops before this returns; queues and grant are gone.
    public func reset(vf: Int) {
        locked {
            forget(vf)
            vfs[vf].functionLevelReset()
            vfs[vf].mac = .zero
        }
    }

    public func counters(vf: Int) -> VirtualFunction.Counters { locked { vfs[vf].counters } }

    /// Port mirroring, a PF-only control: from now on every frame the VF sends or receives is
    /// copied into `ring` (nil: no more). The engine pushes under this lock, so once this returns
    /// with nil it pushes no more copies; `ring` must have no other producer while it is set.
    public func setMirror(vf: Int, to ring: CaptureRing?) {
        locked {
            vfs[vf].mirrorRing = ring
            vfs[vf].mirror = ring.map { Unmanaged.passUnretained($0) }
        }
    }

    /// The copies a mirror ring dropped so far, read under the lock its producer holds.
    public func mirrorDrops(of ring: CaptureRing) -> UInt64 { locked { ring.drops } }

    /// Whether the VF's frames are mirrored now.
    public func isMirrored(vf: Int) -> Bool { locked { vfs[vf].mirror != nil } }

    private func learn(_ vf: Int) {
        let f = vfs[vf]
        guard f.mac != .zero else { return }
        for v in 0..<4096 where f.isMember(vlan: UInt16(v)) { macTable.insert(MACTable.key(mac: f.mac.value, vlan: UInt16(v)), port: vf) }
    }

    private func forget(_ vf: Int) {
        let f = vfs[vf]
        for v in 0..<4096 where f.isMember(vlan: UInt16(v)) {
            let k = MACTable.key(mac: f.mac.value, vlan: UInt16(v))
            if macTable[k] == vf { macTable.remove(k) }
        }
    }
}
