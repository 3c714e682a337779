import CNPAPluginABI
import NPAControlProtocol
@testable import NPANICModel
import NPARingFormats
import NPASystem

/// The NIC model's VF data path against a hostile plugin/guest on VF 0: ring geometry (plausible
/// or raw, as the PF driver would pass on what the guest asked for), TX and RX descriptors or
/// submission entries, doorbells (tails) with any value, scribbles over rings and the register
/// page, frames from a good VF, engine passes in between. Checked after every input: no DMA
/// outside the grant (guard pages, ASan), every descriptor the engine took, every bad doorbell
/// and every frame switched to the evil VF counted exactly once, no spoofed source reaches a good
/// VF, and the good VFs 1 and 2 still exchange frames.
public final class VFFuzz {
    public let nic: SoftNIC
    public let evil: SharedMemory
    let evilMemory: GuestMemory
    public let good1: VFGuestDriver
    public let good2: VFGuestDriver
    let interrupt: EventNotifier
    static let evilMAC = MACAddress(value: 0x0200_0000_0E01)
    static let sizes: [UInt32] = [32, 64, 128, 256, 512, 1024, 2048, 4096]
    private var sequence: UInt8 = 0
    private var configured = false

    public init(model: NICModel) throws {
        nic = try SoftNIC(name: "fuzz", model: model, vfCount: 3)
        // Frames for a VF without buffers are dropped at once, not held in the sender's ring:
        // every input ends with each frame accounted for.
        nic.receiverStallLimitNanoseconds = 0
        evil = try SharedMemory(name: "fuzz-evil", size: 1 << 20)
        evilMemory = GuestMemory(base: evil.base, size: evil.size)
        interrupt = try EventNotifier()
        good1 = try VFGuestDriver(nic: nic, vf: 1, mac: MACAddress(value: 0x0200_0000_0A01))
        good2 = try VFGuestDriver(nic: nic, vf: 2, mac: MACAddress(value: 0x0200_0000_0A02))
    }

    func register(_ offset: UInt32) -> UnsafeMutablePointer<UInt32> {
        (nic.vfs[0].registers.base + Int(offset)).assumingMemoryBound(to: UInt32.self)
    }

    struct Queue {
        var ring: UInt64
        var size: UInt32
        var completion: UInt64
    }

    public func run(_ input: inout FuzzInput) {
        let cq = nic.model == .cq
        let memory = evilMemory
        // The PF driver's part with the geometry the input asks for: quiesce and re-initialise
        // the queues, or (the input's choice, and on the first input) a full FLR and set-up.
        // Counters are compared by delta, so both start every input from the same state.
        let g = input.u8()
        if g & 0x70 == 0x70 || !configured {
            nic.reset(vf: 0)
            nic.grant(vf: 0, memory: memory)
            nic.setMAC(vf: 0, Self.evilMAC)
            nic.setVLANs(vf: 0, [0, 10])
            configured = true
        } else {
            nic.quiesce(vf: 0)
        }
        let before = nic.counters(vf: 0)
        let raw = g & 0x80 != 0
        let numTx = raw ? Int(g & 15) : 1 + Int(g & 1), numRx = raw ? Int((g >> 4) & 7) : 1 + Int((g >> 1) & 1)
        func queue(_ i: Int, rx: Bool) -> Queue {
            let s = input.u8()
            let size = s & 0x80 != 0 && raw ? input.u32() : Self.sizes[Int(s & 7)]
            var ring = (rx ? 0x40000 : 0x0) + UInt64(i) * 0x20000
            if raw && s & 0x40 != 0 {
                ring = input.u64()
            } else if raw && s & 0x20 != 0 {
                ring = memory.size &- UInt64(size) * 16 &+ UInt64(input.u8())
            }
            return Queue(ring: ring, size: size, completion: ring &+ 0x10000)
        }
        var tx = (0..<numTx).map { queue($0, rx: false) }
        var rx = (0..<numRx).map { queue($0, rx: true) }
        for q in tx + rx where memory.contains(gpa: q.ring, length: UInt64(q.size) * 16) && q.size <= 4096 {
            memory.pointer(gpa: q.ring, length: UInt64(q.size) * 16)!.initializeMemory(
                as: UInt8.self, repeating: 0, count: Int(q.size) * 16)
            if cq, memory.contains(gpa: q.completion, length: UInt64(q.size) * 16) {
                memory.pointer(gpa: q.completion, length: UInt64(q.size) * 16)!.initializeMemory(
                    as: UInt8.self, repeating: 0, count: Int(q.size) * 16)
            }
        }
        memory.pointer(gpa: 0xC0000, length: 0x4000)!.initializeMemory(as: UInt8.self, repeating: 0, count: 0x4000)
        let enabled: Bool
        do {
            try nic.initializeQueues(
                vf: 0, tx: tx.map { .init(ringGPA: $0.ring, ringSize: $0.size, completionGPA: $0.completion) },
                rx: rx.map { .init(ringGPA: $0.ring, ringSize: $0.size, completionGPA: $0.completion) }, interrupt: interrupt)
            nic.enable(vf: 0)
            enabled = true
        } catch {
            enabled = false
        }
        if !enabled { tx = []; rx = [] }

        var work = 0, badTails = 0, good1Frames = 0
        let good1Before = nic.counters(vf: 1)
        var txCursor = [UInt32](repeating: 0, count: tx.count), rxCursor = [UInt32](repeating: 0, count: rx.count)

        /// One engine pass, with the doorbell checks the engine will make counted beforehand.
        func pass() {
            let vf = nic.vfs[0]
            for (q, t) in tx.enumerated() {
                let tail = register(cq ? NPA_CQ_REG_TX_SQ_TAIL(UInt32(q)) : NPA_DRING_REG_TDT(UInt32(q))).pointee
                if cq ? tail &- vf.txQueues[q].head > t.size : tail >= t.size { badTails += 1 }
            }
            work += nic.runPass()
        }
        func address(_ sel: UInt8, _ length: UInt16) -> UInt64 {
            switch sel % 8 {
            case 0, 1, 2: return 0xC0000 + UInt64(input.u16() % 0x3C00)
            case 3: return memory.size &- UInt64(length)
            case 4: return memory.size &- UInt64(input.u16() % 4096)
            case 5: return input.u64()
            case 6: return UInt64(input.u32() % UInt32(memory.size))
            default: return UInt64.max &- UInt64(input.u16())
            }
        }
        func writeHeader(at gpa: UInt64) {
            guard let p = memory.pointer(gpa: gpa, length: 18) else { return }
            let d = input.u8()
            let dst: UInt64 = [good2.mac.value, good1.mac.value, Self.evilMAC.value, 0xFFFF_FFFF_FFFF, 0x0100_5E00_0001, 0x0200_0000_0099][
                Int(d % 6)]
            let src: UInt64 = [Self.evilMAC.value, Self.evilMAC.value, good1.mac.value, input.u64() & 0xFFFF_FFFF_FFFF][Int((d >> 3) & 3)]
            EthernetFrame.storeMAC(dst, p, at: 0)
            EthernetFrame.storeMAC(src, p, at: 6)
            switch (d >> 5) & 3 {
            case 0: p.storeBytes(of: UInt16(0x88B5).bigEndian, toByteOffset: 12, as: UInt16.self)
            case 1: p.storeBytes(of: UInt32(0x8100_000A).bigEndian, toByteOffset: 12, as: UInt32.self)
            case 2: p.storeBytes(of: UInt32(0x8100_0000 | UInt32(input.u16())).bigEndian, toByteOffset: 12, as: UInt32.self)
            default: p.storeBytes(of: UInt16(0x0800).bigEndian, toByteOffset: 12, as: UInt16.self)
            }
        }
        /// A TX descriptor (dring) or submission entry (cq) in slot `slot` of ring `q`.
        func writeEntry(ring: UInt64, size: UInt32, slot: UInt32, address a: UInt64, length: UInt16, flags: UInt8, id: UInt16) {
            let e = ring + UInt64(slot & (size &- 1)) * 16
            guard memory.contains(gpa: e, length: 16) else { return }
            memory.storeU64(gpa: e, a)
            memory.storeU32(gpa: e + 8, UInt32(length) | UInt32(id) << 16)
            memory.storeU32(gpa: e + 12, UInt32(flags))
        }

        var ops = 0
        while !input.isAtEnd && ops < 64 {
            ops += 1
            let op = input.u8()
            let q = Int(op >> 5)
            switch op % 11 {
            case 0, 1:  // one TX entry, anything in it
                guard !tx.isEmpty else { break }
                let t = tx[q % tx.count]
                let slot = UInt32(input.u16()), sel = input.u8(), length = input.u16() % 9100
                let a = address(sel, length)
                if sel % 8 < 3 { writeHeader(at: a) }
                writeEntry(ring: t.ring, size: t.size, slot: slot, address: a, length: length, flags: sel >> 6, id: input.u16())
            case 2:  // a burst of well-formed TX entries, then the doorbell
                guard !tx.isEmpty else { break }
                let qi = q % tx.count, t = tx[qi]
                let n = Int(input.u8() % 70)
                for i in 0..<n {
                    let length = UInt16(input.u8()) * 8 + 14
                    let a = 0xC0000 + UInt64(i % 16) * 1024
                    writeHeader(at: a)
                    let phase: UInt8 = cq ? ((txCursor[qi] / t.size) & 1 == 0 ? 1 : 0) : UInt8(NPA_DRING_TXD_CMD_EOP)
                    writeEntry(ring: t.ring, size: t.size, slot: txCursor[qi], address: a, length: length, flags: phase, id: UInt16(i))
                    txCursor[qi] &+= 1
                }
                register(cq ? NPA_CQ_REG_TX_SQ_TAIL(UInt32(qi)) : NPA_DRING_REG_TDT(UInt32(qi))).pointee =
                    cq ? txCursor[qi] : txCursor[qi] & (t.size &- 1)
            case 3:  // one RX entry
                guard !rx.isEmpty else { break }
                let r = rx[q % rx.count]
                let slot = UInt32(input.u16()), sel = input.u8(), length = input.u16()
                writeEntry(
                    ring: r.ring, size: r.size, slot: slot, address: address(sel, length), length: length, flags: sel >> 6, id: input.u16())
            case 4:  // post RX buffers in order, then the doorbell
                guard !rx.isEmpty else { break }
                let qi = q % rx.count, r = rx[qi]
                let n = Int(input.u8() % 70), capacity = [2048, 64, 9018, 0][Int(input.u8() & 3)]
                for i in 0..<n {
                    let phase: UInt8 = cq ? ((rxCursor[qi] / r.size) & 1 == 0 ? 1 : 0) : 0
                    writeEntry(
                        ring: r.ring, size: r.size, slot: rxCursor[qi], address: 0xC4000 + UInt64(i % 32) * 2048, length: UInt16(capacity),
                        flags: phase, id: UInt16(i))
                    rxCursor[qi] &+= 1
                }
                register(cq ? NPA_CQ_REG_RX_SQ_TAIL(UInt32(qi)) : NPA_DRING_REG_RDT(UInt32(qi))).pointee =
                    cq ? rxCursor[qi] : rxCursor[qi] & (r.size &- 1)
            case 5:
                pass()
            case 6:  // a good VF sends to the evil one
                let n = 1 + Int(input.u8() % 8), length = 60 + Int(input.u16() % 1455)
                for i in 0..<n where good1.send(ethernetFrame(to: Self.evilMAC, from: good1.mac, payloadBytes: length - 14, fill: UInt8(i)))
                {
                    good1Frames += 1
                }
            case 7:  // any word of the register page (doorbells, masks, status, heads)
                register(UInt32(input.u16() % 1024) * 4).pointee = input.u32()
            case 8:  // scribble over any ring
                memory.storeU64(gpa: UInt64(input.u32() % 0xC0000) & ~7, input.u64())
            case 9:  // doorbell with any value
                let o = UInt32(input.u8() % 16) * 8
                register((input.bool() ? 0x100 : 0x200) + o).pointee = input.u32()
            default:  // offload requests in the model's own format, then the doorbell
                guard !tx.isEmpty else { break }
                let qi = q % tx.count
                writeOffloadRequests(&input, ring: tx[qi].ring, size: tx[qi].size, cursor: &txCursor[qi])
                register(cq ? NPA_CQ_REG_TX_SQ_TAIL(UInt32(qi)) : NPA_DRING_REG_TDT(UInt32(qi))).pointee =
                    cq ? txCursor[qi] : txCursor[qi] & (tx[qi].size &- 1)
            }
        }
        for _ in 0..<256 {
            let before = work
            pass()
            if work == before { break }
        }

        // Every descriptor the engine took, every bad doorbell and every frame switched to the
        // evil VF moved exactly one counter; a TSO super-frame's descriptor one per segment.
        let a = nic.counters(vf: 0)
        let c = VirtualFunction.Counters(
            txFrames: a.txFrames - before.txFrames, rxFrames: a.rxFrames - before.rxFrames,
            spoofedDrops: a.spoofedDrops - before.spoofedDrops,
            vlanDrops: a.vlanDrops - before.vlanDrops, dmaFaults: a.dmaFaults - before.dmaFaults,
            noBufferDrops: a.noBufferDrops - before.noBufferDrops,
            badDescriptors: a.badDescriptors - before.badDescriptors, frameTooLong: a.frameTooLong - before.frameTooLong,
            badOffloads: a.badOffloads - before.badOffloads, segmentedFrames: a.segmentedFrames - before.segmentedFrames,
            segments: a.segments - before.segments, contextDescriptors: a.contextDescriptors - before.contextDescriptors)
        let evilWork = UInt64(work - good1Frames)
        let framesToEvil = enabled ? UInt64(good1Frames) : 0
        let counted =
            c.txFrames + c.spoofedDrops + c.vlanDrops + c.dmaFaults + c.badDescriptors + c.rxFrames + c.noBufferDrops + c.frameTooLong
            + c.badOffloads + c.contextDescriptors
        let extraSegments = c.segments - c.segmentedFrames
        invariant(
            counted == evilWork + UInt64(badTails) + framesToEvil + extraSegments,
            "evil VF: \(evilWork) descriptors taken (\(extraSegments) extra segments), \(badTails) bad doorbells, \(framesToEvil) frames for it, but counters moved by \(counted): \(c)"
        )
        invariant(c.segments <= c.segmentedFrames * UInt64(TCPSegmentation.maximumSegments), "more segments than a plan allows: \(c)")
        invariant(
            nic.counters(vf: 1).txFrames - good1Before.txFrames == UInt64(good1Frames),
            "good VF 1 sent \(good1Frames), counted \(nic.counters(vf: 1).txFrames - good1Before.txFrames)")
        checkGoodPair()
    }

    /// The two good VFs still exchange frames, byte for byte, exactly once; nothing they receive
    /// carries a source MAC its sender does not own.
    func checkGoodPair() {
        let owners = [Self.evilMAC, good1.mac, good2.mac]
        func check(_ f: [UInt8]) {
            invariant(
                f.count >= 14 && owners.contains(MACAddress(bytes: f[6..<12])),
                "a good VF received a spoofed or short frame (\(f.count) bytes)")
        }
        good1.receive(check)
        good2.receive(check)
        sequence &+= 1
        let f = ethernetFrame(to: good2.mac, from: good1.mac, payloadBytes: 50, fill: sequence)
        let back = ethernetFrame(to: good1.mac, from: good2.mac, payloadBytes: 60, fill: sequence)
        invariant(good1.send(f) && good2.send(back), "a good VF's TX ring is full")
        for _ in 0..<4 where nic.runPass() > 0 {}
        var got1: [[UInt8]] = [], got2: [[UInt8]] = []
        good2.receive { got2.append($0) }
        good1.receive { got1.append($0) }
        got1.filter { $0 != back }.forEach(check)
        got2.filter { $0 != f }.forEach(check)
        invariant(got2.filter { $0 == f }.count == 1, "good VF 2 did not receive good VF 1's frame exactly once: \(nic.counters(vf: 2))")
        invariant(got1.filter { $0 == back }.count == 1, "good VF 1 did not receive good VF 2's frame exactly once: \(nic.counters(vf: 1))")
        good1.reclaim()
        good2.reclaim()
    }
}
