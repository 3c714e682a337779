import CNPAPluginABI
import NPAControlProtocol
import NPARingFormats
import NPASystem

/// One SR-IOV virtual function of a `SoftNIC`: its register page (mapped into the guest), its
/// queues as the PF driver initialised them, its DMA grant, and what the PF programmed for it in
/// the embedded switch (MAC, VLANs, rx mode). The guest's plugin touches only the register page
/// and the rings in guest memory; everything else here is the PF driver's to set.
///
/// Only the NIC's engine (under the NIC's lock) and the PF driver (under the same lock) touch it.
public final class VirtualFunction {
    /// Where a queue's rings live in the granted guest memory (set by the PF driver).
    public struct QueueConfig: Sendable, Equatable {
        public var ringGPA: UInt64
        public var ringSize: UInt32
        /// The completion ring's GPA, as the guest's plugin reported it; nil if it has none
        /// (npa-cq needs one, npa-dring has none).
        public var completionGPA: UInt64?
        /// RX queues: the size of every receive buffer the guest posts (the 82599's
        /// SRRCTL.BSIZEPACKET, which the PF driver programs). The NIC writes no frame longer than
        /// this into a buffer: it drops and counts it (`Counters.frameTooLong`) before taking a
        /// descriptor. The default is the 82599's reset value, 2 KiB. TX queues ignore it.
        public var bufferSize: UInt32

        public static let defaultBufferSize: UInt32 = 2048
        /// What a PF may program: at least a minimum Ethernet frame, at most 16 KiB.
        public static let bufferSizes: ClosedRange<UInt32> = 64...16384

        public init(ringGPA: UInt64, ringSize: UInt32, completionGPA: UInt64? = nil, bufferSize: UInt32 = Self.defaultBufferSize) {
            self.ringGPA = ringGPA
            self.ringSize = ringSize
            self.completionGPA = completionGPA
            self.bufferSize = bufferSize
        }
    }

    /// NIC-side cursors of one queue.
    struct Queue {
        var config: QueueConfig
        /// `config.completionGPA`, checked at init (the model's `queueFits`); 0 if none.
        var completionGPA: UInt64
        /// dring: head index. cq: submission entries consumed (free running).
        var head: UInt32 = 0
        /// cq: phase expected in submission entries / written into completions.
        var submissionPhase: UInt8 = 1
        var completionIndex: UInt32 = 0
        var completionPhase: UInt8 = 1
        /// dring RX: requests to write back; cq RX: posted buffers not yet used (free running).
        var posted: UInt32 = 0
        /// RX: the guest's tail as last read. The engine re-reads the register only when the
        /// ring looks empty, so it does not pull the guest's cache line once per frame.
        var cachedTail: UInt32 = 0
        /// dring RX: the head last published in RDH (written once per pass, not per frame).
        var publishedHead: UInt32 = 0
        /// dring TX: the TSO context the last context descriptor set (MSS 0 until one does, so a
        /// CMD_TSE frame before any context is refused); queue init forgets it.
        var segmentationHeaderLength = 0
        var segmentationMSS = 0

        init(config: QueueConfig) {
            self.config = config
            completionGPA = config.completionGPA ?? 0
        }
    }

    public struct Counters: Sendable, Equatable {
        public var txFrames: UInt64 = 0
        public var txBytes: UInt64 = 0
        public var rxFrames: UInt64 = 0
        public var rxBytes: UInt64 = 0
        public var spoofedDrops: UInt64 = 0
        public var vlanDrops: UInt64 = 0
        public var dmaFaults: UInt64 = 0
        public var noBufferDrops: UInt64 = 0
        public var badDescriptors: UInt64 = 0
        /// Frames for this VF longer than its RX queue's buffer size: dropped, never written.
        public var frameTooLong: UInt64 = 0
        public var interrupts: UInt64 = 0
        /// TX offload requests the NIC refused (not TCP over IPv4/IPv6, a header length that is
        /// not the headers', MSS 0 or a segment over the largest frame, checksum offsets outside
        /// the frame, a super-frame with no TSO asked): the frame was dropped, nothing sent.
        public var badOffloads: UInt64 = 0
        /// TSO super-frames the NIC cut, and the segments it made of them (each segment then
        /// counts like any frame: `txFrames`, or a drop).
        public var segmentedFrames: UInt64 = 0
        public var segments: UInt64 = 0
        /// Checksums the NIC completed for frames that asked (CSUM offload).
        public var checksumsCompleted: UInt64 = 0
        /// dring context descriptors taken (they set a queue's TSO context and carry no frame).
        public var contextDescriptors: UInt64 = 0
    }

    public let index: Int
    public let registers: SharedMemory
    /// The eventfd a guest writes to wake a sleeping engine (handed to the guest's shell).
    public let kick: EventNotifier
    var interrupt: EventNotifier?
    var grant: GuestMemory?
    /// Queue cursors, allocated once at the VF maximum: the engine updates them in place per
    /// frame (an array of structs would be copied in and out, with a uniqueness check each time).
    let txQueues: UnsafeMutablePointer<Queue>
    let rxQueues: UnsafeMutablePointer<Queue>
    var txQueueCount = 0
    var rxQueueCount = 0
    var enabled = false
    var pendingInterrupt = false
    /// When a frame for this VF first found no free receive buffer (0: it has one), and whether
    /// that stall outlasted the NIC's limit (see `SoftNIC.receiverStallLimitNanoseconds`).
    var receiverStalledSince: UInt64 = 0
    var exceededStallLimit = false
    /// Set from a switch-in's MAC move until the frames the host parked for this VF's guest have
    /// come down the PF: until then frames for it from other VFs and the wire wait (they are
    /// newer than the parked ones), so the guest gets its frames in order.
    var holdsForPF = false
    /// Set while this VF's guest is in a switch handshake (from its switch-in's MAC move, from
    /// its switch-out's request and offer): it reads its rings only once its step is done, so a
    /// stall of its may last up to `SoftNIC.switchStallLimitNanoseconds`. Cleared once such a
    /// stall ends (the guest reads again), and at quiesce and FLR.
    var guestSwitching = false
    public internal(set) var mac: MACAddress = .zero
    var vlans = [UInt64](repeating: 1, count: 1) + [UInt64](repeating: 0, count: 63)
    var rxMode: VMXNET3.RxMode = [.unicast, .broadcast, .multicast]
    var multicast: Set<MACAddress> = []
    public internal(set) var counters = Counters()
    /// The port mirror the PF driver set while a capture of this VF's guest runs
    /// (`SoftNIC.setMirror`): each frame the VF sends or receives is copied into it. `mirror`
    /// is the ring unretained, for the per-frame check; `mirrorRing` keeps it alive. An FLR
    /// clears it, as it clears everything else the PF programmed for the VF.
    var mirrorRing: CaptureRing?
    var mirror: Unmanaged<CaptureRing>?

    init(index: Int) throws {
        self.index = index
        registers = try SharedMemory(name: "npa-vf\(index)-regs", size: Int(NPA_VF_REG_PAGE_SIZE))
        kick = try EventNotifier()
        txQueues = .allocate(capacity: Int(NPA_VF_MAX_QUEUES))
        rxQueues = .allocate(capacity: Int(NPA_VF_MAX_QUEUES))
        write(NPA_VF_REG_INTR_MASK, 1)
    }

    deinit {
        txQueues.deallocate()
        rxQueues.deallocate()
    }

    /// Sets up the queue cursors for the rings the PF driver initialised.
    func setQueues(tx: [QueueConfig], rx: [QueueConfig]) {
        for (i, c) in tx.enumerated() { (txQueues + i).initialize(to: Queue(config: c)) }
        for (i, c) in rx.enumerated() { (rxQueues + i).initialize(to: Queue(config: c)) }
        txQueueCount = tx.count
        rxQueueCount = rx.count
    }

    @inline(__always)
    func read(_ offset: UInt32) -> UInt32 { SharedWord.loadAcquire(registers.base + Int(offset)) }

    @inline(__always)
    func write(_ offset: UInt32, _ value: UInt32) { SharedWord.storeRelease(registers.base + Int(offset), value) }

    /// Copies a frame this VF sent or received into its port mirror, if one is set: one nil
    /// check per frame when none is; a full mirror drops the copy, never the frame.
    @inline(__always)
    func mirrorCopy(_ frame: UnsafeRawPointer, length: Int, _ direction: CaptureRing.Direction) {
        guard let mirror else { return }
        mirror._withUnsafeGuaranteedRef {
            _ = $0.push(frame, length: length, direction: direction, timestamp: Clock.monotonicNanoseconds())
        }
    }

    func isMember(vlan: UInt16) -> Bool { vlans[Int(vlan >> 6)] & (1 << UInt64(vlan & 63)) != 0 }

    func accepts(destination dst: UInt64) -> Bool {
        if rxMode.contains(.promiscuous) { return true }
        let m = MACAddress(value: dst)
        if m.isBroadcast { return rxMode.contains(.broadcast) }
        if m.isMulticast { return rxMode.contains(.allMulticast) || (rxMode.contains(.multicast) && multicast.contains(m)) }
        return rxMode.contains(.unicast) && m == mac
    }

    /// Function-level reset: stops all DMA at once, forgets the queues and the grant.
    func functionLevelReset() {
        enabled = false
        grant = nil
        txQueueCount = 0
        rxQueueCount = 0
        interrupt = nil
        pendingInterrupt = false
        receiverStalledSince = 0
        exceededStallLimit = false
        holdsForPF = false
        guestSwitching = false
        counters = Counters()
        mirror = nil
        mirrorRing = nil
        registers.base.initializeMemory(as: UInt8.self, repeating: 0, count: registers.size)
        write(NPA_VF_REG_INTR_MASK, 1)
    }
}
