import FuzzSupport
import NPAControlProtocol
@testable import NPAHost
import NPARingFormats

// The vmxnet3 TX and RX data path against a hostile guest: the input picks the ring geometry
// (plausible, or raw values ACTIVATE must refuse), then writes TX and RX descriptors, chains and
// frame headers, scribbles over rings and the shared area after ACTIVATE, issues commands, and
// makes a good guest send to it, with data-path passes in between. Checked after every input:
// no access outside guest memory (guard pages around every mapping, ASan for the host's heap),
// every TX chain the device took counted once (sent or dropped by reason), every frame for the
// evil guest counted once (delivered or dropped by reason), the fault limit holds, and a second
// pair of well-behaved vNICs still gets frames through, unspoofed.

nonisolated(unsafe) var host: EmulatedHost! = nil
let sizes: [UInt32] = [32, 64, 128, 256, 512, 1024, 2048, 4096]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    if host == nil { host = try! EmulatedHost() }
    var input = FuzzInput(UnsafeRawBufferPointer(start: data, count: size))
    run(&input, host)
    return 0
}

/// Counters of the evil vNIC whose sum must move by exactly the chains it put on its TX rings.
func txAccounted(_ c: DeviceCounters) -> UInt64 {
    let reasons: [DropReason] = [.badDescriptor, .chainTooLong, .frameTooLong, .runt, .spoofedSource, .vlanRefused, .badOffload]
    return c.txFrames + reasons.reduce(0) { $0 + c.drops[$1.rawValue] }
}

/// Counters of the evil vNIC whose sum must move by exactly the frames switched to it.
func rxAccounted(_ c: DeviceCounters) -> UInt64 {
    let reasons: [DropReason] = [.noBuffers, .bufferTooSmall, .rxFrameTooLong, .badRxDescriptor, .inactive]
    return c.rxFrames + reasons.reduce(0) { $0 + c.drops[$1.rawValue] }
}

func run(_ input: inout FuzzInput, _ host: EmulatedHost) {
    let evil = host.evil!, memory = evil.memory
    let device = host.evilDevice!
    let cmd = VMXNET3.Register.cmd.rawValue

    // Geometry.
    let g = input.u8()
    let numTx = 1 + Int(g & 1), numRx = 1 + Int((g >> 1) & 1)
    let mtu: UInt32 = [1500, 9000, 68, 1500][Int((g >> 2) & 3)]
    let s1 = input.u8(), s2 = input.u8()
    let txSize = sizes[Int(s1 & 7)], txCompSize = s1 & 8 == 0 ? txSize : sizes[Int((s1 >> 4) & 7)]
    let rxSize = sizes[Int(s2 & 7)], rxCompSize = s2 & 8 == 0 ? rxSize : sizes[Int((s2 >> 4) & 7)] * (s2 & 0x80 == 0 ? 1 : 2)
    evil.writeSharedArea(tx: numTx, rx: numRx, ringSize: txSize, rxCompSize: rxCompSize, mtu: mtu)
    for q in 0..<numTx {
        memory.storeU32(gpa: VMXNET3Guest.queueTable + UInt64(q) * 256 + VMXNET3.TxQueueDesc.compRingSize, txCompSize)
        evil.zeroRing(VMXNET3Guest.txRing(q), txSize)
    }
    for q in 0..<numRx {
        memory.storeU32(gpa: VMXNET3Guest.queueTable + UInt64(numTx + q) * 256 + VMXNET3.RxQueueDesc.rxRingSize0, rxSize)
        evil.zeroRing(VMXNET3Guest.rxRing(q), rxSize)
    }
    memory.pointer(gpa: VMXNET3Guest.bufferBase, length: 0x4000)!.initializeMemory(as: UInt8.self, repeating: 0, count: 0x4000)
    if (g >> 4) & 3 == 3 {
        // Raw geometry: a few words anywhere in DriverShared and the queue table.
        for _ in 0..<(input.u8() & 7) {
            let offset = UInt64(input.u16() % 0x1400) & ~7
            memory.storeU64(gpa: 0x1000 + offset, input.u64())
        }
    }
    _ = device.writeRegister(offset: cmd, value: VMXNET3.Command.resetDevice.rawValue)
    _ = device.writeRegister(offset: cmd, value: VMXNET3.Command.activateDevice.rawValue)

    let before = device.counters, good1Before = host.good1Device.counters
    var work = 0, good1Frames = 0
    var txNext = [UInt32](repeating: 0, count: 2), txGen = [UInt32](repeating: 1, count: 2)
    var rxNext = [UInt32](repeating: 0, count: 2), rxGen = [UInt32](repeating: 1, count: 2)

    func address(_ selector: UInt8, length: UInt32) -> UInt64 {
        let size = memory.size
        switch selector % 8 {
        case 0, 1: return VMXNET3Guest.bufferBase + UInt64(input.u16() % 0x3C00)
        case 2: return size &- UInt64(input.u16() % 4096)
        case 3: return input.u64()
        case 4: return 0x10000 + UInt64(input.u32() % 0xB0000)
        case 5: return UInt64(input.u16() % 0x4000)
        case 6: return size &- UInt64(length)
        default: return UInt64.max &- UInt64(input.u16())
        }
    }
    func writeHeader(at gpa: UInt64) {
        guard let p = memory.pointer(gpa: gpa, length: 18) else { return }
        let d = input.u8()
        let dst: UInt64 = [
            host.good2.mac.value, host.good1.mac.value, EmulatedHost.evilMAC.value, 0xFFFF_FFFF_FFFF, 0x0100_5E00_0001, 0x0200_0000_0099,
        ][Int(d % 6)]
        let src: UInt64 = [EmulatedHost.evilMAC.value, EmulatedHost.evilMAC.value, host.good1.mac.value, input.u64() & 0xFFFF_FFFF_FFFF][
            Int((d >> 3) & 3)]
        EthernetFrame.storeMAC(dst, p, at: 0)
        EthernetFrame.storeMAC(src, p, at: 6)
        switch (d >> 5) & 3 {
        case 0: p.storeBytes(of: UInt16(0x88B5).bigEndian, toByteOffset: 12, as: UInt16.self)
        case 1: p.storeBytes(of: UInt32(0x8100_000A).bigEndian, toByteOffset: 12, as: UInt32.self)
        case 2: p.storeBytes(of: UInt32(0x8100_0000 | UInt32(input.u16())).bigEndian, toByteOffset: 12, as: UInt32.self)
        default: p.storeBytes(of: UInt16(0x0800).bigEndian, toByteOffset: 12, as: UInt16.self)
        }
    }
    func writeTx(_ q: Int, slot: UInt32, address: UInt64, length: UInt32, gen: UInt32, eop: Bool) {
        let d = VMXNET3Guest.txRing(q) + UInt64(slot % txSize) * 16
        let desc = VMXNET3Descriptor.Tx(address: address, length: length, generation: gen, endOfPacket: eop)
        memory.storeU64(gpa: d, address)
        memory.storeU32(gpa: d + 12, desc.dword3)
        memory.storeU32(gpa: d + 8, desc.dword2)
    }
    func writeRx(_ q: Int, slot: UInt32, address: UInt64, length: UInt32, gen: UInt32) {
        let d = VMXNET3Guest.rxRing(q) + UInt64(slot % rxSize) * 16
        memory.storeU64(gpa: d, address)
        memory.storeU32(gpa: d + 12, 0)
        memory.storeU32(gpa: d + 8, VMXNET3Descriptor.rxDescriptorDword2(length: length, generation: gen))
    }

    var ops = 0
    while !input.isAtEnd && ops < 64 {
        ops += 1
        let op = input.u8()
        let q = Int(op >> 7) % 2
        switch op % 10 {
        case 0, 1:  // one TX descriptor, anywhere in the ring, anything in it
            let slot = UInt32(input.u16()), sel = input.u8(), length = UInt32(input.u16() & 0x3FFF)
            let a = address(sel, length: length)
            if sel % 8 < 2 { writeHeader(at: a) }
            writeTx(q, slot: slot, address: a, length: length, gen: UInt32(sel >> 7), eop: sel & 0x40 != 0)
        case 2:  // a burst of chains in order (descriptors per chain 1...17), as a driver would
            let n = Int(input.u8() % 48), perChain = 1 + Int(input.u8() % 17)
            for i in 0..<n {
                let length = (UInt32(input.u8()) + 14) * UInt32(1 + i % 4)
                let a = VMXNET3Guest.bufferBase + UInt64(i % 16) * 1024
                if i % perChain == 0 { writeHeader(at: a) }
                writeTx(q, slot: txNext[q], address: a, length: length, gen: txGen[q], eop: (i + 1) % perChain == 0 || i == n - 1)
                txNext[q] += 1
                if txNext[q] == txSize { txNext[q] = 0; txGen[q] ^= 1 }
            }
        case 3:  // one RX descriptor
            let slot = UInt32(input.u16()), sel = input.u8(), length = UInt32(input.u16() & 0x3FFF)
            writeRx(q, slot: slot, address: address(sel, length: length), length: length, gen: UInt32(sel >> 7))
        case 4:  // post RX buffers in order
            let n = Int(input.u8() % 64), length = UInt32([2048, 64, 1514, 16383][Int(input.u8() & 3)])
            for i in 0..<n {
                writeRx(
                    q, slot: rxNext[q], address: VMXNET3Guest.bufferBase + 0x4000 + UInt64(i % 32) * 2048, length: length, gen: rxGen[q])
                rxNext[q] += 1
                if rxNext[q] == rxSize { rxNext[q] = 0; rxGen[q] ^= 1 }
            }
        case 5:
            work += host.daemon.runDataPathPass()
        case 6:  // the good guest sends to the evil one
            let n = 1 + Int(input.u8() % 8), length = 60 + Int(input.u16() % 1455)
            for i in 0..<n
            where host.good1.send(ethernetFrame(to: EmulatedHost.evilMAC, from: host.good1.mac, payloadBytes: length - 14, fill: UInt8(i)))
            {
                good1Frames += 1
            }
        case 7:  // rewrite DriverShared or the queue table after ACTIVATE (the device must not re-read)
            memory.storeU64(gpa: 0x1000 + (UInt64(input.u16() % 0x1400) & ~7), input.u64())
        case 8:  // scribble over any ring
            memory.storeU64(gpa: 0x10000 + (UInt64(input.u32() % 0xB0000) & ~7), input.u64())
        default:
            let commands: [VMXNET3.Command] = [
                .activateDevice, .quiesceDevice, .resetDevice, .updateRxMode, .updateMACFilters, .updateVLANFilters, .getStats,
                .getQueueStatus,
            ]
            _ = device.writeRegister(offset: cmd, value: commands[Int(input.u8() % 8)].rawValue)
        }
        host.good1.reclaimTx()
    }
    work += host.runPasses()

    // Every chain the evil guest handed over was counted, sent or dropped by reason: once, or
    // (a TSO chain the device cut into segments) once per segment, at most 64.
    let after = device.counters, good1After = host.good1Device.counters
    let evilChains = UInt64(work - good1Frames)
    let accounted = txAccounted(after) - txAccounted(before)
    invariant(
        accounted >= evilChains && accounted <= evilChains * UInt64(TCPSegmentation.maximumSegments),
        "evil TX: \(evilChains) chains taken, but sent + dropped moved by \(accounted)")
    let routedAway =
        (after.drops[DropReason.unknownDestination.rawValue] - before.drops[DropReason.unknownDestination.rawValue])
        + (after.drops[DropReason.filtered.rawValue] - before.drops[DropReason.filtered.rawValue])
    invariant(routedAway <= after.txFrames - before.txFrames, "evil: more frames unroutable than sent")
    // Every frame the good guest sent to the evil one was delivered or dropped by reason.
    let good1Sent = good1After.txFrames - good1Before.txFrames
    let good1Unrouted =
        (good1After.drops[DropReason.filtered.rawValue] - good1Before.drops[DropReason.filtered.rawValue])
        + (good1After.drops[DropReason.unknownDestination.rawValue] - good1Before.drops[DropReason.unknownDestination.rawValue])
    invariant(good1Sent == UInt64(good1Frames), "good1 sent \(good1Frames) frames, tx_frames moved by \(good1Sent)")
    invariant(
        rxAccounted(after) - rxAccounted(before) + good1Unrouted == good1Sent,
        "evil RX: \(good1Sent) frames switched to it, delivered + dropped moved by \(rxAccounted(after) - rxAccounted(before)), unrouted \(good1Unrouted)"
    )
    invariant(!device.isActive || device.faults < device.faultLimit, "evil is active with \(device.faults) faults")
    host.checkWellBehavedPairStillServed()
}
