import CNPAPluginABI
import CNPAShim
import Foundation
import NPAControlProtocol
import NPARingFormats
import NPASystem

/// A software SR-IOV NIC: the "hardware". One PF and N VFs of one model, an embedded L2 switch
/// joining the VFs and the uplink port, per-VF anti-spoofing (source MAC, VLAN) and DMA grants.
/// Its engine — `runPass()`, called by its own named thread (`start()`) or by a test — moves
/// frames straight between guest memories: one copy per destination, no host thread involved.
///
/// Only the PF driver (the host) programs it: MACs, VLANs, rx modes, grants, queue addresses,
/// enable, quiesce, reset. Guests reach it only through their VF's register page and rings.
/// Control operations and engine passes serialise on one lock, taken once per pass.
public final class SoftNIC: @unchecked Sendable {
    public enum Model: String, Sendable, CaseIterable {
        /// Descriptor rings, tail doorbell, descriptor-done write-back (82599 VF style).
        case dring = "npa-dring"
        /// Submission and completion queues with a phase bit (ENA / mlx5 style).
        case cq = "npa-cq"
    }

    public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    public let name: String
    public let model: Model
    public let vfs: [VirtualFunction]
    /// `vfs`, unretained, for the engine's loops: iterating or indexing the array retains and
    /// releases the element each time, once per pass per VF and once per frame.
    private let vfRefs: [Unmanaged<VirtualFunction>]
    private let lock = NSLock()
    private var macTable = MACTable()
    private let destinations: UnsafeMutablePointer<Int>
    /// Frames the embedded switch sent out of the uplink port (unknown unicast, floods).
    public private(set) var uplinkFrames: UInt64 = 0
    public private(set) var uplinkBytes: UInt64 = 0
    /// Frames that came in from the wire, and those the NIC could not take (malformed, or for
    /// no VF while no PF driver listens).
    public private(set) var wireFramesIn: UInt64 = 0
    public private(set) var wireFramesDropped: UInt64 = 0
    /// The PF's receive queue: frames for MACs that are not on a VF, for the host's PF driver,
    /// which plugs it into the vswitch as its uplink (NPA's "PF filter for every vswitch MAC").
    public let pfReceive = FrameQueue(capacity: 2048)
    private var pfEnabled = false
    /// Frames the PF driver sent into the NIC.
    public private(set) var pfTransmitted: UInt64 = 0
    private var thread: pthread_t?
    /// The engine's thread while it runs (for per-thread CPU accounting as "hardware").
    public var engineThread: pthread_t? { thread }
    private let stopFlag = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
    private let wake: EventNotifier
    public static let maximumFrame = 9018
    public let passBudget = 64
    /// How long a sender's frame waits (in its TX ring, or in the PF driver's burst) for a VF
    /// with no free receive buffer before frames to that VF are dropped as `vf_no_buffers`
    /// (the host's `receiver_stall_ms`; 0 drops at once). Set before `start()`.
    public var receiverStallLimitNanoseconds: UInt64 = 500_000_000
    /// Set by a pass that left a frame waiting for a receiver: the engine then keeps polling
    /// (yielding the core) instead of sleeping, since posting a buffer rings no doorbell.
    private var heldBack = false

    public init(name: String, model: Model, vfCount: Int) throws {
        guard (1...64).contains(vfCount) else { throw ConfigurationError(description: "a NIC has 1...64 VFs, not \(vfCount)") }
        self.name = name
        self.model = model
        vfs = try (0..<vfCount).map { try VirtualFunction(index: $0, model: model) }
        vfRefs = vfs.map { Unmanaged.passUnretained($0) }
        destinations = .allocate(capacity: vfCount + 1)
        wake = try EventNotifier()
        stopFlag.pointee = 0
    }

    deinit {
        stop()
        destinations.deallocate()
        stopFlag.deallocate()
    }

    private func locked<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    // MARK: PF driver operations

    /// Points `mac` (in every VLAN the VF is a member of) at the VF in the embedded switch.
    public func setMAC(vf: Int, _ mac: MACAddress) {
        locked {
            forget(vf)
            vfs[vf].mac = mac
            learn(vf)
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
    public func initializeQueues(vf: Int, tx: [VirtualFunction.QueueConfig], rx: [VirtualFunction.QueueConfig], interrupt: EventNotifier) throws {
        try locked {
            let f = vfs[vf]
            guard let memory = f.grant else { throw ConfigurationError(description: "VF \(vf) has no DMA grant") }
            guard (1...Int(NPA_VF_MAX_QUEUES)).contains(tx.count), (1...Int(NPA_VF_MAX_QUEUES)).contains(rx.count) else {
                throw ConfigurationError(description: "a VF has 1...\(NPA_VF_MAX_QUEUES) queues per direction")
            }
            for q in tx + rx {
                guard q.ringSize >= 32, q.ringSize <= 4096, q.ringSize & (q.ringSize - 1) == 0,
                    q.ringGPA & 15 == 0, memory.contains(gpa: q.ringGPA, length: UInt64(q.ringSize) * 16),
                    model == .dring || (q.completionGPA & 15 == 0 && memory.contains(gpa: q.completionGPA, length: UInt64(q.ringSize) * 16))
                else { throw ConfigurationError(description: "VF \(vf): a ring lies outside the grant, is not 16-byte aligned or has a bad size") }
            }
            for q in rx where !VirtualFunction.QueueConfig.bufferSizes.contains(q.bufferSize) {
                throw ConfigurationError(description: "VF \(vf): RX buffer size \(q.bufferSize) is not in \(VirtualFunction.QueueConfig.bufferSizes)")
            }
            f.setQueues(tx: tx, rx: rx)
            f.interrupt = interrupt
            for q in 0..<Int(NPA_VF_MAX_QUEUES) {
                f.write(0x100 + 8 * UInt32(q), 0)
                f.write(0x104 + 8 * UInt32(q), 0)
                f.write(0x200 + 8 * UInt32(q), 0)
                f.write(0x204 + 8 * UInt32(q), 0)
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

    // MARK: Engine

    /// One engine pass over every enabled VF's TX queues; returns frames processed.
    @discardableResult
    public func runPass() -> Int {
        lock.lock()
        defer { lock.unlock() }
        heldBack = false
        var work = 0
        for ref in vfRefs {
            work += ref._withUnsafeGuaranteedRef { vf in
                guard vf.enabled else { return 0 }
                var n = 0
                for q in 0..<vf.txQueueCount {
                    n += model == .dring ? pullDescriptorRing(vf, q) : pullSubmissionQueue(vf, q)
                }
                return n
            }
        }
        publishAndInterrupt()
        return work
    }

    /// Starts the engine on its own thread ("npa-nic-<name>", accounted as hardware). It polls
    /// while there is work and sleeps, with each VF page saying so, after `idlePasses` empty passes.
    public func start(idlePasses: Int = 256) {
        guard thread == nil else { return }
        stopFlag.pointee = 0
        let flag = stopFlag
        thread = EngineThread.start(name: "npa-nic-\(name)") { [self] in
            let epoll = try! Epoll()
            try! epoll.add(wake.fd, tag: UInt64.max)
            for vf in vfs { try! epoll.add(vf.kick.fd, tag: UInt64(vf.index)) }
            var idle = 0
            while cnpa_load_relaxed_u32(flag) == 0 {
                if runPass() > 0 { idle = 0; continue }
                if heldBack {
                    // A sender waits for a receiver's buffers: let the receiver's vCPU run.
                    sched_yield()
                    continue
                }
                idle += 1
                if idle < idlePasses { cnpa_cpu_relax(); continue }
                for vf in vfs { vf.write(NPA_VF_REG_ENGINE_SLEEPING, 1) }
                cnpa_fence_seq_cst()
                if runPass() == 0 {
                    for tag in (try? epoll.wait(timeoutMilliseconds: 100)) ?? [] {
                        if tag == UInt64.max { wake.drain() } else { vfs[Int(tag)].kick.drain() }
                    }
                }
                for vf in vfs { vf.write(NPA_VF_REG_ENGINE_SLEEPING, 0) }
                idle = 0
            }
        }
    }

    public func stop() {
        guard let t = thread else { return }
        cnpa_store_relaxed_u32(stopFlag, 1)
        wake.signal()
        EngineThread.join(t)
        thread = nil
    }

    /// End of a pass: publish each RX head that moved (once per pass, not per frame), then
    /// raise the interrupts the pass earned.
    private func publishAndInterrupt() {
        if model == .dring {
            for ref in vfRefs {
                ref._withUnsafeGuaranteedRef { vf in
                    guard vf.pendingInterrupt else { return }
                    for q in 0..<vf.rxQueueCount where vf.rxQueues[q].publishedHead != vf.rxQueues[q].head {
                        vf.rxQueues[q].publishedHead = vf.rxQueues[q].head
                        vf.write(NPA_DRING_REG_RDH(UInt32(q)), vf.rxQueues[q].head)
                    }
                }
            }
        }
        cnpa_fence_seq_cst()
        for ref in vfRefs {
            ref._withUnsafeGuaranteedRef { vf in
                guard vf.pendingInterrupt else { return }
                vf.pendingInterrupt = false
                if vf.read(NPA_VF_REG_INTR_MASK) == 0 {
                    vf.write(NPA_VF_REG_INTR_MASK, 1)
                    vf.interrupt?.signal()
                    vf.counters.interrupts &+= 1
                }
            }
        }
    }

    // MARK: Embedded switch

    /// Anti-spoofing, then switching. `frame` points into the sender's granted memory; each
    /// destination gets its own copy, re-checked after the copy (the sender could rewrite its
    /// buffer meanwhile; the copy is what the receiver gets).
    private func forward(from vf: VirtualFunction, _ frame: UnsafeRawPointer, length: Int) {
        let src = EthernetFrame.mac(frame, at: 6)
        guard src == vf.mac.value else {
            vf.counters.spoofedDrops &+= 1
            return
        }
        let vlan = EthernetFrame.vlanID(frame, length: length)
        guard vf.isMember(vlan: vlan) else {
            vf.counters.vlanDrops &+= 1
            return
        }
        vf.counters.txFrames &+= 1
        vf.counters.txBytes &+= UInt64(length)
        if switchFrame(frame, length: length, destination: EthernetFrame.mac(frame, at: 0), source: src, vlan: vlan, from: vf) {
            sendUp(frame, length: length)
        }
    }

    /// The embedded switch proper, for frames from a VF or from the PF (`from: nil`): delivers
    /// to every VF the frame is for, one copy each, and says whether it also leaves the switch
    /// upward — floods, unknown unicast, and frames for a quiesced VF (mid-switch, the host owns
    /// that MAC next). Never back to the sender.
    private func switchFrame(
        _ frame: UnsafeRawPointer, length: Int, destination dst: UInt64, source src: UInt64, vlan: UInt16, from sender: VirtualFunction?
    ) -> Bool {
        var n = 0
        var upward = false
        if (dst >> 40) & 1 == 1 {
            for ref in vfRefs {
                ref._withUnsafeGuaranteedRef { other in
                    guard other !== sender, other.enabled, other.isMember(vlan: vlan), other.accepts(destination: dst) else { return }
                    destinations[n] = other.index
                    n += 1
                }
            }
            upward = true
        } else if let target = macTable.port(mac: dst, vlan: vlan) {
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
        let hash = EthernetFrame.flowHash(frame, length: min(length, 64))
        for k in 0..<n {
            vfRefs[destinations[k]]._withUnsafeGuaranteedRef { target in
                if model == .dring {
                    deliverDescriptorRing(to: target, frame, length: length, hash: hash, source: src, vlan: vlan, sender: sender)
                } else {
                    deliverCompletionQueue(to: target, frame, length: length, hash: hash, source: src, vlan: vlan, sender: sender)
                }
            }
        }
        return upward
    }

    /// Out of the embedded switch toward the host: the PF's queue when the PF driver listens,
    /// otherwise the uplink wire.
    @inline(__always)
    private func sendUp(_ frame: UnsafeRawPointer, length: Int) {
        if pfEnabled {
            pfReceive.push(frame, length: length)
        } else {
            uplinkFrames &+= 1
            uplinkBytes &+= UInt64(length)
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
        lock.lock()
        defer { lock.unlock() }
        var taken = 0
        defer { publishAndInterrupt() }
        for i in 0..<count {
            let (p, length) = frame(i)
            guard length >= EthernetFrame.headerLength, length <= Self.maximumFrame else {
                taken += 1
                continue
            }
            if mustWait(p, length: length, from: nil) { return taken }
            taken += 1
            pfTransmitted &+= 1
            // The PF is trusted and its frames sit in host memory the host does not change
            // mid-copy. What is for no VF leaves by the wire, never back up to the PF — except a
            // frame for a VF that is stopped (disabled under its plugin): the PF driver owns that
            // MAC next, so it goes back up to the PF, which holds it for the guest's switch-out.
            if switchFromUplinkPort(p, length: length) {
                if pfEnabled, let stopped = stoppedVF(owning: p, length: length) {
                    if !pfReceive.push(p, length: length) { vfs[stopped].counters.noBufferDrops &+= 1 }
                } else {
                    uplinkFrames &+= 1
                    uplinkBytes &+= UInt64(length)
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
            if mustWait(p, length: length, from: nil) { break }
            taken += 1
            wireFramesIn &+= 1
            if switchFromUplinkPort(p, length: length) {
                if pfEnabled { pfReceive.push(p, length: length) } else { wireFramesDropped &+= 1 }
            }
        }
        publishAndInterrupt()
        return taken
    }

    /// The VF a unicast frame is addressed to if that VF is known but stopped (the frame then
    /// left the switch upward instead of reaching it).
    private func stoppedVF(owning p: UnsafeRawPointer, length: Int) -> Int? {
        let dst = EthernetFrame.mac(p, at: 0)
        guard (dst >> 40) & 1 == 0, let target = macTable.port(mac: dst, vlan: EthernetFrame.vlanID(p, length: length)),
            !vfRefs[target]._withUnsafeGuaranteedRef({ $0.enabled })
        else { return nil }
        return target
    }

    /// A frame from the PF or the wire (no anti-spoofing on these ports) into the embedded
    /// switch; true if it is also for no VF (flood, unknown unicast, quiesced VF).
    @inline(__always)
    private func switchFromUplinkPort(_ p: UnsafeRawPointer, length: Int) -> Bool {
        switchFrame(p, length: length, destination: EthernetFrame.mac(p, at: 0), source: EthernetFrame.mac(p, at: 6),
                    vlan: EthernetFrame.vlanID(p, length: length), from: nil)
    }

    /// Whether a frame must wait before it is taken (from a VF's TX ring, the PF or the wire):
    /// it is unicast to another enabled VF whose receive queue for its flow has no free buffer,
    /// and that VF has been without one for less than the stall limit. A hint read from the
    /// sender's buffer before the copy (the switch decides again on what it copies); it never
    /// holds a frame the receiver would refuse anyway (too long for its buffers).
    private func mustWait(_ frame: UnsafeRawPointer, length: Int, from sender: VirtualFunction?) -> Bool {
        let dst = EthernetFrame.mac(frame, at: 0)
        guard (dst >> 40) & 1 == 0, let target = macTable.port(mac: dst, vlan: EthernetFrame.vlanID(frame, length: length)),
            target != sender?.index
        else { return false }
        let wait = vfRefs[target]._withUnsafeGuaranteedRef { vf -> Bool in
            guard vf.enabled, vf.grant != nil, vf.rxQueueCount > 0 else { return false }
            let q = vf.rxQueueCount == 1 ? 0 : Int(EthernetFrame.flowHash(frame, length: min(length, 64)) % UInt32(vf.rxQueueCount))
            let queue = vf.rxQueues + q
            guard length <= Int(queue.pointee.config.bufferSize) else { return false }
            let size = queue.pointee.config.ringSize
            // Buffers posted and not yet used; the guest's tail is read only when none are known.
            var available: UInt32 = 0
            if queue.pointee.head != queue.pointee.cachedTail && !vf.exceededStallLimit {
                available = 1
            } else {
                let tail = vf.read(model == .dring ? NPA_DRING_REG_RDT(UInt32(q)) : NPA_CQ_REG_RX_SQ_TAIL(UInt32(q)))
                let posted = model == .dring ? (tail &- queue.pointee.head) & (size &- 1) : tail &- queue.pointee.head
                guard model == .cq || tail < size, posted <= size else { return false }  // a bad tail: deliver() refuses it
                available = posted
            }
            if available > 0 {
                // One that used up its stall limit is held for again only with half a ring posted.
                if vf.receiverStalledSince != 0 && (!vf.exceededStallLimit || available >= size / 2) {
                    vf.receiverStalledSince = 0
                    vf.exceededStallLimit = false
                }
                return false
            }
            let now = cnpa_monotonic_ns()
            if vf.receiverStalledSince == 0 { vf.receiverStalledSince = now }
            guard !vf.exceededStallLimit else { return false }
            if now - vf.receiverStalledSince < receiverStallLimitNanoseconds { return true }
            vf.exceededStallLimit = true
            return false
        }
        if wait { heldBack = true }
        return wait
    }

    /// True if the received copy still carries the source MAC and VLAN that were checked.
    @inline(__always)
    private func copyIsFaithful(_ copy: UnsafeRawPointer, length: Int, source: UInt64, vlan: UInt16) -> Bool {
        EthernetFrame.mac(copy, at: 6) == source && EthernetFrame.vlanID(copy, length: length) == vlan
    }

    // MARK: npa-dring ("82599 VF")

    private func pullDescriptorRing(_ vf: VirtualFunction, _ q: Int) -> Int {
        guard let memory = vf.grant else { return 0 }
        var queue = vf.txQueues[q]  // a local copy for the loop, stored back once
        let size = queue.config.ringSize
        let tail = vf.read(NPA_DRING_REG_TDT(UInt32(q)))
        guard tail < size else {
            vf.counters.badDescriptors &+= 1
            return 0
        }
        let ring = memory.base + Int(queue.config.ringGPA)  // SAFETY: inside the grant, checked at init
        var n = 0
        // Backpressure, not loss: while the PF's queue is full the engine leaves the VF's
        // descriptors where they are (like a NIC honouring pause frames); the guest's ring fills.
        while queue.head != tail && n < passBudget && (!pfEnabled || pfReceive.hasRoom) {
            let d = ring + Int(queue.head) * 16
            let address = UInt64(littleEndian: d.load(as: UInt64.self))
            let length = Int(UInt16(littleEndian: d.load(fromByteOffset: 8, as: UInt16.self)))
            var status = UInt8(NPA_DRING_TXD_STATUS_DD)
            if length < EthernetFrame.headerLength || length > Self.maximumFrame {
                vf.counters.badDescriptors &+= 1
                status |= UInt8(NPA_DRING_TXD_STATUS_ERR)
            } else if let p = memory.pointer(gpa: address, length: UInt64(length)) {
                if mustWait(p, length: length, from: vf) { break }  // the descriptor stays for a later pass
                forward(from: vf, p, length: length)
            } else {
                vf.counters.dmaFaults &+= 1
                status |= UInt8(NPA_DRING_TXD_STATUS_ERR)
            }
            // Write-back: status last, so the driver sees DD only when the slot is finished.
            cnpa_fence_release()
            d.storeBytes(of: status, toByteOffset: 12, as: UInt8.self)
            queue.head = (queue.head + 1) & (size - 1)
            n += 1
        }
        vf.txQueues[q] = queue
        vf.write(NPA_DRING_REG_TDH(UInt32(q)), queue.head)
        if n > 0 { vf.pendingInterrupt = true }
        return n
    }

    private func deliverDescriptorRing(
        to vf: VirtualFunction, _ frame: UnsafeRawPointer, length: Int, hash: UInt32, source: UInt64, vlan: UInt16, sender: VirtualFunction?
    ) {
        guard let memory = vf.grant, vf.rxQueueCount > 0 else { return }
        let q = vf.rxQueueCount == 1 ? 0 : Int(hash % UInt32(vf.rxQueueCount))
        let queue = vf.rxQueues + q
        // The descriptor names only an address; the buffer's size is the PF's (SRRCTL). A longer
        // frame is dropped here, before a descriptor is taken or a byte is written.
        guard length <= Int(queue.pointee.config.bufferSize) else {
            vf.counters.frameTooLong &+= 1
            return
        }
        let size = queue.pointee.config.ringSize
        if queue.pointee.head == queue.pointee.cachedTail {
            let tail = vf.read(NPA_DRING_REG_RDT(UInt32(q)))
            guard tail < size, queue.pointee.head != tail else {
                vf.counters.noBufferDrops &+= 1
                return
            }
            queue.pointee.cachedTail = tail
        }
        let d = memory.base + Int(queue.pointee.config.ringGPA) + Int(queue.pointee.head) * 16
        let address = UInt64(littleEndian: d.load(as: UInt64.self))
        var errors: UInt32 = 0
        var written = length
        if let dst = memory.pointer(gpa: address, length: UInt64(length)) {
            memcpy(dst, frame, length)
            if !copyIsFaithful(dst, length: length, source: source, vlan: vlan) {
                sender?.counters.spoofedDrops &+= 1
                errors = 1
            }
        } else {
            vf.counters.dmaFaults &+= 1
            errors = 1
            written = 0
        }
        d.storeBytes(of: UInt32(written).littleEndian, toByteOffset: 8, as: UInt32.self)
        let status = NPA_DRING_RXD_STATUS_DD | NPA_DRING_RXD_STATUS_EOP
        cnpa_store_release_u32(d + 12, (status | errors << 8).littleEndian)
        queue.pointee.head = (queue.pointee.head + 1) & (size - 1)
        if errors == 0 {
            vf.counters.rxFrames &+= 1
            vf.counters.rxBytes &+= UInt64(length)
        }
        vf.pendingInterrupt = true
    }

    // MARK: npa-cq ("ENA")

    private func pullSubmissionQueue(_ vf: VirtualFunction, _ q: Int) -> Int {
        guard let memory = vf.grant else { return 0 }
        var queue = vf.txQueues[q]
        let size = queue.config.ringSize
        let tail = vf.read(NPA_CQ_REG_TX_SQ_TAIL(UInt32(q)))
        guard tail &- queue.head <= size else {
            vf.counters.badDescriptors &+= 1
            return 0
        }
        let sq = memory.base + Int(queue.config.ringGPA)  // SAFETY: inside the grant, checked at init
        var n = 0
        while queue.head != tail && n < passBudget && (!pfEnabled || pfReceive.hasRoom) {
            let e = sq + Int(queue.head & (size - 1)) * 16
            let flags = e.load(fromByteOffset: 12, as: UInt8.self)
            let requestID = UInt16(littleEndian: e.load(fromByteOffset: 10, as: UInt16.self))
            let address = UInt64(littleEndian: e.load(as: UInt64.self))
            let length = Int(UInt16(littleEndian: e.load(fromByteOffset: 8, as: UInt16.self)))
            var status: UInt8 = 0
            if flags & UInt8(NPA_CQ_FLAG_PHASE) != queue.submissionPhase || length < EthernetFrame.headerLength || length > Self.maximumFrame {
                vf.counters.badDescriptors &+= 1
                status = UInt8(NPA_CQ_STATUS_ERROR)
            } else if let p = memory.pointer(gpa: address, length: UInt64(length)) {
                if mustWait(p, length: length, from: vf) { break }  // the entry stays for a later pass
                forward(from: vf, p, length: length)
            } else {
                vf.counters.dmaFaults &+= 1
                status = UInt8(NPA_CQ_STATUS_ERROR)
            }
            writeCompletion(memory, &queue, requestID: requestID, length: UInt16(length), status: status, hash: 0)
            queue.head &+= 1
            if queue.head & (size - 1) == 0 { queue.submissionPhase ^= 1 }
            n += 1
        }
        vf.txQueues[q] = queue
        if n > 0 { vf.pendingInterrupt = true }
        return n
    }

    @inline(__always)
    private func writeCompletion(_ memory: GuestMemory, _ queue: inout VirtualFunction.Queue, requestID: UInt16, length: UInt16, status: UInt8, hash: UInt32) {
        let c = memory.base + Int(queue.config.completionGPA) + Int(queue.completionIndex) * 16
        c.storeBytes(of: requestID.littleEndian, as: UInt16.self)
        c.storeBytes(of: length.littleEndian, toByteOffset: 2, as: UInt16.self)
        c.storeBytes(of: hash.littleEndian, toByteOffset: 8, as: UInt32.self)
        // flags (phase) | status << 8 | vlan << 16, published last with release.
        cnpa_store_release_u32(c + 4, (UInt32(queue.completionPhase) | UInt32(status) << 8).littleEndian)
        queue.completionIndex += 1
        if queue.completionIndex == queue.config.ringSize {
            queue.completionIndex = 0
            queue.completionPhase ^= 1
        }
    }

    private func deliverCompletionQueue(
        to vf: VirtualFunction, _ frame: UnsafeRawPointer, length: Int, hash: UInt32, source: UInt64, vlan: UInt16, sender: VirtualFunction?
    ) {
        guard let memory = vf.grant, vf.rxQueueCount > 0 else { return }
        let q = vf.rxQueueCount == 1 ? 0 : Int(hash % UInt32(vf.rxQueueCount))
        let rxQueue = vf.rxQueues + q
        // As in npa-dring: longer than the PF-programmed buffer size, dropped before an entry is
        // taken. (An entry's own length, the guest's word, can only lower the limit below.)
        guard length <= Int(rxQueue.pointee.config.bufferSize) else {
            vf.counters.frameTooLong &+= 1
            return
        }
        var queue = rxQueue.pointee
        let size = queue.config.ringSize
        if queue.head == queue.cachedTail {
            let tail = vf.read(NPA_CQ_REG_RX_SQ_TAIL(UInt32(q)))
            guard tail &- queue.head <= size, tail != queue.head else {
                vf.counters.noBufferDrops &+= 1
                return
            }
            queue.cachedTail = tail
        }
        let e = memory.base + Int(queue.config.ringGPA) + Int(queue.head & (size - 1)) * 16
        let flags = e.load(fromByteOffset: 12, as: UInt8.self)
        let requestID = UInt16(littleEndian: e.load(fromByteOffset: 10, as: UInt16.self))
        let address = UInt64(littleEndian: e.load(as: UInt64.self))
        let capacity = Int(UInt16(littleEndian: e.load(fromByteOffset: 8, as: UInt16.self)))
        var status: UInt8 = 0
        var written = length
        if flags & UInt8(NPA_CQ_FLAG_PHASE) != queue.submissionPhase || capacity < length {
            vf.counters.badDescriptors &+= 1
            status = UInt8(NPA_CQ_STATUS_ERROR)
            written = 0
        } else if let dst = memory.pointer(gpa: address, length: UInt64(length)) {
            memcpy(dst, frame, length)
            if !copyIsFaithful(dst, length: length, source: source, vlan: vlan) {
                sender?.counters.spoofedDrops &+= 1
                status = UInt8(NPA_CQ_STATUS_ERROR)
            }
        } else {
            vf.counters.dmaFaults &+= 1
            status = UInt8(NPA_CQ_STATUS_ERROR)
            written = 0
        }
        writeCompletion(memory, &queue, requestID: requestID, length: UInt16(written), status: status, hash: hash)
        queue.head &+= 1
        if queue.head & (size - 1) == 0 { queue.submissionPhase ^= 1 }
        rxQueue.pointee = queue
        if status == 0 {
            vf.counters.rxFrames &+= 1
            vf.counters.rxBytes &+= UInt64(length)
        }
        vf.pendingInterrupt = true
    }
}
