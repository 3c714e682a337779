import NPAAdmin
import NPAControlProtocol
import NPAHost
import NPARingFormats
import NPATestSupport
import NPAWorkload
import NPAShell
import Testing

/// A guest that writes garbage into its own rings must not crash, hang or corrupt the host:
/// each bad descriptor is counted and dropped, and other guests keep being served.
@Suite(.serialized) struct HostileGuestTests {
    /// Writes TX descriptor `slot` of queue 0 straight into guest memory, as a hostile driver would.
    func writeTx(_ nic: VirtualNIC, slot: Int, address: UInt64, length: UInt32, generation: UInt32, eop: Bool) {
        let gm = nic.guestMemoryForTesting
        let ring = gm.loadU64(gpa: nic.queueTableGPAForTesting + VMXNET3.TxQueueDesc.txRingBasePA)!
        let d = ring + UInt64(slot) * 16
        gm.storeU64(gpa: d, address)
        let desc = VMXNET3Descriptor.Tx(address: address, length: length, generation: generation, endOfPacket: eop)
        gm.storeU32(gpa: d + 12, desc.dword3)
        gm.storeU32(gpa: d + 8, desc.dword2)
    }

    func goodPairStillWorks(_ host: TestHost, _ x: VirtualNIC, _ y: VirtualNIC) -> Bool {
        let f = ethernetFrame(to: y.mac, from: x.mac, payload: Array(repeating: 0x42, count: 100))
        guard x.send([f]) == 1 else { return false }
        return receiveFrames(y, count: 1) == [f]
    }

    @Test func badDescriptorsAreCountedDroppedAndHarmless() throws {
        let host = try TestHost()
        defer { host.stop() }
        let good1 = try attach(host, "good1"), good2 = try attach(host, "good2")
        let evil = try attach(host, "evil", memoryMiB: 4)
        let size = evil.guestMemoryForTesting.size
        var slot = 0
        // A GPA past the end of the region, and a length that runs past it.
        writeTx(evil, slot: slot, address: size + 4096, length: 100, generation: 1, eop: true); slot += 1
        writeTx(evil, slot: slot, address: size - 10, length: 1000, generation: 1, eop: true); slot += 1
        writeTx(evil, slot: slot, address: UInt64.max - 8, length: 64, generation: 1, eop: true); slot += 1
        // Longer than the MTU allows, and shorter than an Ethernet header.
        writeTx(evil, slot: slot, address: 1 << 20, length: 9000, generation: 1, eop: true); slot += 1
        writeTx(evil, slot: slot, address: 1 << 20, length: 6, generation: 1, eop: true); slot += 1
        // A chain that never ends: 20 descriptors, none with EOP.
        for _ in 0..<20 {
            writeTx(evil, slot: slot, address: 1 << 20, length: 64, generation: 1, eop: false)
            slot += 1
        }
        // Garbage in the doorbell registers: the device does not trust TXPROD.
        evil.registerPageForTesting.storeBytes(of: UInt32.max, toByteOffset: VMXNET3.RegisterPage.txProducer(0), as: UInt32.self)
        evil.kickForTesting()
        #expect(
            try eventually {
                let c = try evil.deviceCounters()
                return c["drop_bad_descriptor"] == 3 && c["drop_frame_too_long"] == 1 && c["drop_runt"] == 1
                    && c["drop_chain_too_long"] == 1
            })
        #expect(try evil.deviceCounters()["tx_frames"] == 0)
        #expect(goodPairStillWorks(host, good1, good2))
        #expect(goodPairStillWorks(host, good2, good1))
        #expect(try host.status(of: "evil")?.state == "active")
    }

    @Test func aDescriptorWithTheWrongGenerationIsNotConsumed() throws {
        let host = try TestHost()
        defer { host.stop() }
        let evil = try attach(host, "evil"), peer = try attach(host, "peer")
        let gm = evil.guestMemoryForTesting
        let frame = ethernetFrame(to: peer.mac, from: evil.mac)
        let buffer: UInt64 = 2 << 20
        gm.pointer(gpa: buffer, length: UInt64(frame.count))!.copyMemory(from: frame, byteCount: frame.count)
        // Generation 0 on a fresh ring means "not yet the device's": it must wait, not take it.
        writeTx(evil, slot: 0, address: buffer, length: UInt32(frame.count), generation: 0, eop: true)
        evil.kickForTesting()
        // Prove the device looked (a status round trip is handled after a data-path pass) and left it.
        _ = try host.admin.status()
        _ = try host.admin.status()
        #expect(try evil.deviceCounters()["tx_frames"] == 0)
        #expect(drain(peer).isEmpty)
        // Handing it over (gen 1) delivers it exactly once.
        writeTx(evil, slot: 0, address: buffer, length: UInt32(frame.count), generation: 1, eop: true)
        evil.kickForTesting()
        #expect(receiveFrames(peer, count: 1) == [frame])
        #expect(try evil.deviceCounters()["tx_frames"] == 1)
    }

    @Test(arguments: [
        (VMXNET3.TxQueueDesc.txRingSize, UInt64(100), "TX ring 0 size 100 is not a power of two in 32...4096"),
        (VMXNET3.TxQueueDesc.txRingSize, UInt64(8192), "TX ring 0 size 8192 is not a power of two in 32...4096"),
        (VMXNET3.TxQueueDesc.txRingBasePA, UInt64(1 << 40), "TX ring 0 at 0x10000000000 is misaligned or outside guest memory"),
        (VMXNET3.TxQueueDesc.compRingBasePA, UInt64(3), "TX completion ring 0 at 0x3 is misaligned or outside guest memory"),
        (VMXNET3.TxQueueDesc.intrIdx, UInt64(7), "TX queue 0 interrupt index 7 >= numIntrs 1"),
    ])
    func badRingGeometryIsRefusedAtActivate(_ field: UInt64, _ value: UInt64, _ reason: String) throws {
        let host = try TestHost()
        defer { host.stop() }
        let evil = try attach(host, "evil"), good1 = try attach(host, "g1"), good2 = try attach(host, "g2")
        let gm = evil.guestMemoryForTesting
        let d = evil.queueTableGPAForTesting
        _ = try evil.writeRegister(.cmd, VMXNET3.Command.resetDevice.rawValue)
        if field == VMXNET3.TxQueueDesc.intrIdx {
            gm.pointer(gpa: d + field, length: 1)!.storeBytes(of: UInt8(value), as: UInt8.self)
        } else if field == VMXNET3.TxQueueDesc.txRingSize {
            gm.storeU32(gpa: d + field, UInt32(value))
        } else {
            gm.storeU64(gpa: d + field, value)
        }
        #expect {
            _ = try evil.writeRegister(.cmd, VMXNET3.Command.activateDevice.rawValue)
        } throws: { ($0 as? HostRefusal)?.message == "ACTIVATE refused: \(reason)" }
        #expect(try host.status(of: "evil")?.state == "reset")
        #expect(goodPairStillWorks(host, good1, good2))
    }

    @Test func bogusRxBuffersAreCountedAndTheFrameDropped() throws {
        let host = try TestHost()
        defer { host.stop() }
        let sender = try attach(host, "s"), evil = try attach(host, "evil", queues: 1)
        let gm = evil.guestMemoryForTesting
        let rxDesc = evil.queueTableGPAForTesting + 256  // 1 TX queue, then RX queue 0
        let ring = gm.loadU64(gpa: rxDesc + VMXNET3.RxQueueDesc.rxRingBasePA0)!
        // Point every posted RX buffer outside guest memory.
        for slot in 0..<255 { gm.storeU64(gpa: ring + UInt64(slot) * 16, gm.size + 4096) }
        #expect(sender.send([ethernetFrame(to: evil.mac, from: sender.mac), ethernetFrame(to: evil.mac, from: sender.mac)]) == 2)
        #expect(try eventually { try evil.deviceCounters()["drop_bad_rx_descriptor"] == 2 })
        #expect(try evil.deviceCounters()["rx_frames"] == 0)
    }

    @Test func aGuestThatKeepsMisbehavingIsPutInTheErrorState() throws {
        let host = try TestHost()
        defer { host.stop() }
        let evil = try attach(host, "evil"), good1 = try attach(host, "g1"), good2 = try attach(host, "g2")
        let size = evil.guestMemoryForTesting.size
        // One lap of the 256-entry ring with bad addresses: 256 faults reach the limit.
        for slot in 0..<256 { writeTx(evil, slot: slot, address: size + 1, length: 64, generation: 1, eop: true) }
        evil.kickForTesting()
        #expect(try eventually { try host.status(of: "evil")?.state == "error" })
        // In the error state the device takes no more descriptors: a second lap is ignored.
        for slot in 0..<256 { writeTx(evil, slot: slot, address: size + 1, length: 64, generation: 0, eop: true) }
        evil.kickForTesting()
        _ = try host.admin.status()  // two round trips: the host ran at least one data-path pass between them
        _ = try host.admin.status()
        #expect(try evil.deviceCounters()["drop_bad_descriptor"] == 256)
        // The guest can recover the way a vmxnet3 driver does: RESET, then ACTIVATE.
        _ = try evil.writeRegister(.cmd, VMXNET3.Command.resetDevice.rawValue)
        _ = try evil.writeRegister(.cmd, VMXNET3.Command.activateDevice.rawValue)
        #expect(try host.status(of: "evil")?.state == "active")
        #expect(goodPairStillWorks(host, good1, good2))
    }
}

/// A deterministic fuzz of device emulation: a guest scribbles random bytes over its
/// DriverShared, queue table and rings, re-activates and kicks, over and over. The host must keep
/// serving a well-behaved pair throughout.
@Suite(.serialized) struct DeviceEmulationFuzzTests {
    @Test func randomRingGarbageNeverHurtsTheHostOrOtherGuests() throws {
        let host = try TestHost()
        defer { host.stop() }
        let evil = try attach(host, "evil", ringSize: 32, memoryMiB: 2)
        let good1 = try attach(host, "g1"), good2 = try attach(host, "g2")
        let gm = evil.guestMemoryForTesting
        var rng = SplitMix(seed: 0xF022)
        var activations = 0
        for round in 0..<200 {
            // Scribble over the control structures and the first rings (GPA 0x1000..0x20000).
            for _ in 0..<64 {
                let gpa = 0x1000 + (rng.next() % 0x1F000) & ~7
                gm.storeU64(gpa: gpa, rng.next())
            }
            // Sometimes make the geometry plausible so ACTIVATE succeeds and the data path runs.
            if round % 3 == 0 {
                let q = evil.queueTableGPAForTesting
                gm.storeU32(gpa: 0x1000, VMXNET3.driverSharedMagic)
                gm.storeU32(gpa: 0x1000 + VMXNET3.DriverShared.mtu, 1500)
                gm.storeU32(gpa: 0x1000 + VMXNET3.DriverShared.maxRxSG, 1 << 16 | 1 << 24 | 1)
                gm.storeU32(gpa: 0x1000 + VMXNET3.DriverShared.intrAutoMask, 1 | 1 << 8)
                gm.storeU64(gpa: 0x1000 + VMXNET3.DriverShared.queueDescPA, q)
                for (i, base) in [(0, UInt64(0x4000)), (1, UInt64(0x8000))] {
                    let d = q + UInt64(i) * 256
                    gm.storeU64(gpa: d + 16, base)
                    gm.storeU64(gpa: d + 32, base + 0x1000)
                    gm.storeU32(gpa: d + 56, 32)
                    gm.storeU32(gpa: d + 64, 32)
                    gm.pointer(gpa: d + 72, length: 1)!.storeBytes(of: 0, as: UInt8.self)
                }
            }
            _ = try? evil.writeRegister(.cmd, VMXNET3.Command.resetDevice.rawValue)
            if (try? evil.writeRegister(.cmd, VMXNET3.Command.activateDevice.rawValue)) == 0 { activations += 1 }
            for command in [VMXNET3.Command.updateRxMode, .updateMACFilters, .updateVLANFilters, .getStats, .getQueueStatus] {
                _ = try? evil.writeRegister(.cmd, command.rawValue)
            }
            evil.kickForTesting()
            if round % 20 == 0 {
                let f = ethernetFrame(to: good2.mac, from: good1.mac, payload: [UInt8(round)] + Array(repeating: 0, count: 45))
                #expect(good1.send([f]) == 1)
                #expect(receiveFrames(good2, count: 1) == [f])
            }
        }
        #expect(activations > 20)  // the garbage really reached the data path, not just ACTIVATE's checks
        let status = try host.admin.status()
        #expect(status.vnics.count == 3)
        #expect(status.vnics.first { $0.name == "g2" }?.counters["rx_frames"] == 10)
    }
}
