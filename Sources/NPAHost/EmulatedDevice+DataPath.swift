import CNPAShim
import Glibc
import NPARingFormats

/// The emulated data path of one vNIC: pull TX descriptors (the "VM exit" work), fill RX
/// buffers, write completions, raise interrupts. Ring bases and sizes were validated at
/// ACTIVATE, so ring slots are addressed without further checks; every buffer address and
/// length inside a descriptor is checked on every use.
extension EmulatedDevice {
    /// Stages up to `budget` frames from TX queue `q` into `arena` and completes them.
    /// Returns the number of descriptor chains consumed (good or bad).
    func pullTransmit(queue q: Int, arena: FrameArena, budget: Int) -> Int {
        guard isActive else { return 0 }
        var tq = txQueues[q]
        let mask = tq.ringSize &- 1
        let ring = memory.base + Int(tq.ringBase)  // SAFETY: whole ring checked at ACTIVATE
        var consumed = 0
        arena.count = 0
        while consumed < budget && arena.count < arena.capacity {
            // Phase 1: find a complete chain, reading each descriptor once into locals.
            var idx = tq.next
            var gen = tq.generation
            var descriptors = 0
            var complete = false
            var eopIndex: UInt32 = 0
            while descriptors < VMXNET3.maximumDescriptorsPerPacket {
                let d = ring + Int(idx) &* 16
                // Acquire: the guest writes gen last; everything before it is then visible.
                let dw2 = UInt32(littleEndian: cnpa_load_acquire_u32(d + 8))
                guard (dw2 >> 14) & 1 == gen else { break }
                let dw3 = UInt32(littleEndian: d.load(fromByteOffset: 12, as: UInt32.self))
                let len = dw2 & 0x3FFF
                arena.chainAddresses[descriptors] = UInt64(littleEndian: d.load(as: UInt64.self))
                arena.chainLengths[descriptors] = len == 0 ? 16384 : len
                descriptors += 1
                eopIndex = idx
                idx = (idx &+ 1) & mask
                if idx == 0 { gen ^= 1 }
                if dw3 & VMXNET3Descriptor.txEOPBit != 0 {
                    complete = true
                    break
                }
            }
            if !complete && descriptors < VMXNET3.maximumDescriptorsPerPacket {
                break  // empty ring, or the guest has not finished publishing this chain
            }
            tq.next = idx
            tq.generation = gen
            consumed += 1
            // Phase 2: validate and copy out of guest memory.
            var reason: DropReason? = complete ? nil : .chainTooLong
            var length = 0
            let slot = arena.slot(arena.count)
            if reason == nil {
                for i in 0..<descriptors {
                    let len = Int(arena.chainLengths[i])
                    guard length + len <= FrameArena.slotSize else { reason = .frameTooLong; break }
                    guard let src = memory.pointer(gpa: arena.chainAddresses[i], length: UInt64(len)) else {
                        reason = .badDescriptor
                        break
                    }
                    memcpy(slot + length, src, len)
                    length += len
                }
            }
            if reason == nil && length < EthernetFrame.headerLength { reason = .runt }
            if reason == nil && length > Int(mtu) + 18 { reason = .frameTooLong }
            writeTxCompletion(&tq, eopIndex: eopIndex)
            if let reason {
                drop(reason)
                if !isActive { break }
                continue
            }
            arena.lengths[arena.count] = length
            arena.count += 1
        }
        txQueues[q] = tq
        if consumed > 0 { pendingVectors |= 1 << UInt32(tq.vector) }
        return consumed
    }

    @inline(__always)
    private func writeTxCompletion(_ tq: inout Queue, eopIndex: UInt32) {
        let c = memory.base + Int(tq.compBase) + Int(tq.compNext) &* 16  // SAFETY: checked at ACTIVATE
        c.storeBytes(of: (eopIndex & 0xFFF).littleEndian, as: UInt32.self)
        c.storeBytes(of: 0, toByteOffset: 4, as: UInt64.self)
        // Release: the guest must see dword0 once it sees the new gen.
        cnpa_store_release_u32(c + 12, (tq.compGeneration << 31).littleEndian)
        tq.compNext &+= 1
        if tq.compNext == tq.compSize {
            tq.compNext = 0
            tq.compGeneration ^= 1
        }
    }

    /// Copies one frame into the next RX buffer of the queue its flow hashes to.
    func deliver(_ frame: UnsafeRawPointer, length: Int, hash: UInt32) {
        guard isActive else {
            drop(.inactive)
            return
        }
        let q = Int(hash % UInt32(rxQueues.count))
        var rq = rxQueues[q]
        let d = memory.base + Int(rq.ringBase) + Int(rq.next) &* 16  // SAFETY: checked at ACTIVATE
        let dw2 = UInt32(littleEndian: cnpa_load_acquire_u32(d + 8))
        guard VMXNET3Descriptor.rxDescriptorGeneration(dword2: dw2) == rq.generation else {
            drop(.noBuffers)
            return
        }
        let address = UInt64(littleEndian: d.load(as: UInt64.self))
        let capacity = Int(VMXNET3Descriptor.rxDescriptorLength(dword2: dw2))
        let index = rq.next
        rq.next &+= 1
        if rq.next == rq.ringSize {
            rq.next = 0
            rq.generation ^= 1
        }
        var written = length
        var failed = false
        if length > capacity {
            // A frame longer than this vNIC's MTU allows (a jumbo frame from a 9000-byte sender)
            // is the sender's doing, not a fault of this guest's ring: counted, never held against
            // it, or any sender could put any receiver in the error state.
            if length > Int(mtu) + 18 {
                counters.drops[DropReason.bufferTooSmall.rawValue] &+= 1
            } else {
                drop(.bufferTooSmall)
            }
            failed = true
        } else if let dst = memory.pointer(gpa: address, length: UInt64(length)) {
            memcpy(dst, frame, length)
        } else {
            drop(.badRxDescriptor)
            failed = true
        }
        if failed { written = 0 }
        // Write the completion; the buffer goes back to the guest either way (err bit on failure).
        let c = memory.base + Int(rq.compBase) + Int(rq.compNext) &* 16
        let completion = VMXNET3Descriptor.RxCompletion(
            descriptorIndex: index, ringID: UInt32(q), rssType: 0, rssHash: hash, length: UInt32(written),
            error: failed, generation: rq.compGeneration)
        let w = completion.dwords
        c.storeBytes(of: w.0.littleEndian, as: UInt32.self)
        c.storeBytes(of: w.1.littleEndian, toByteOffset: 4, as: UInt32.self)
        c.storeBytes(of: w.2.littleEndian, toByteOffset: 8, as: UInt32.self)
        cnpa_store_release_u32(c + 12, w.3.littleEndian)
        rq.compNext &+= 1
        if rq.compNext == rq.compSize {
            rq.compNext = 0
            rq.compGeneration ^= 1
        }
        rxQueues[q] = rq
        if !failed {
            counters.rxFrames &+= 1
            counters.rxBytes &+= UInt64(length)
        }
        pendingVectors |= 1 << UInt32(rq.vector)
    }

    /// Fires each vector that has new completions and that the guest left unmasked (it is
    /// waiting). A masked vector means the guest is polling and will see the completions.
    /// At most one signal per vector per engine pass: that is the interrupt moderation.
    func raiseInterrupts() {
        guard pendingVectors != 0 else { return }
        // Completions were published with release stores; this orders them before the mask
        // reads below, pairing with the guest's "unmask, fence, re-check ring".
        cnpa_fence_seq_cst()
        var pending = pendingVectors
        pendingVectors = 0
        while pending != 0 {
            let v = pending.trailingZeroBitCount
            pending &= pending &- 1
            guard v < interrupts.count else { continue }
            let mask = registerWord(VMXNET3.RegisterPage.interruptMask(v))
            if cnpa_load_relaxed_u32(mask) == 0 {
                if autoMask { cnpa_store_relaxed_u32(mask, 1) }
                interrupts[v].signal()
                counters.interruptsRaised &+= 1
            }
        }
    }

    /// Tells the guest whether the engine is about to sleep (it must kick) or polls (no kick).
    func setSleeping(_ sleeping: Bool) {
        cnpa_store_relaxed_u32(registerWord(VMXNET3.RegisterPage.deviceSleeping), sleeping ? 1 : 0)
    }

    /// True if any TX ring has a descriptor the device has not consumed: the re-check after
    /// announcing sleep, so a doorbell written just before is not missed.
    func hasPendingTransmit() -> Bool {
        guard isActive else { return false }
        for tq in txQueues {
            let d = memory.base + Int(tq.ringBase) + Int(tq.next) &* 16
            if (UInt32(littleEndian: cnpa_load_acquire_u32(d + 8)) >> 14) & 1 == tq.generation { return true }
        }
        return false
    }
}
