import Glibc
import NPARingFormats
import NPASystem

/// The emulated data path of one vNIC: pull TX descriptors (the "VM exit" work), fill RX
/// buffers, write completions, raise interrupts. Ring bases and sizes were validated at
/// ACTIVATE, so ring slots are addressed without further checks; every buffer address and
/// length inside a descriptor is checked on every use.
extension EmulatedDevice {
    /// The longest frame the guest's MTU allows (header and one 802.1Q tag, no FCS): the most it
    /// may send, and the most it is asked to receive — its receive buffers are sized for it.
    var maximumFrameLength: Int { Int(mtu) + 18 }

    /// Stages up to `budget` TX chains from queue `q` into `arena` (good frames copied out,
    /// bad chains noted with their reason) without completing any: `completeTransmit` does that
    /// once the switch has said how many frames it took. A chain asking for an offload (om in its
    /// SOP descriptor) has it done here, on the host-private copy: its checksum completed, or
    /// its TSO super-frame cut into MTU-sized segments, one arena frame each. Returns the chains
    /// staged.
    func pullTransmit(queue q: Int, arena: FrameArena, budget: Int) -> Int {
        arena.count = 0
        arena.chains = 0
        guard isActive else { return 0 }
        let tq = txQueues[q]
        let mask = tq.ringSize &- 1
        let ring = memory.base + Int(tq.ringBase)  // SAFETY: whole ring checked at ACTIVATE
        var idx = tq.next
        var gen = tq.generation
        while arena.chains < budget && arena.count < arena.capacity {
            // Phase 1: find a complete chain, reading each descriptor once into locals.
            var descriptors = 0
            var complete = false
            var eopIndex: UInt32 = 0
            var chainIdx = idx
            var chainGen = gen
            var request = OffloadRequest()
            var chainBytes = 0
            while descriptors < VMXNET3.maximumDescriptorsPerPacket {
                let d = ring + Int(chainIdx) &* 16
                // Acquire: the guest writes gen last; everything before it is then visible.
                let dword2 = UInt32(littleEndian: SharedWord.loadAcquire(d + 8))
                guard VMXNET3Descriptor.txGeneration(dword2: dword2) == chainGen else { break }
                // Read once into locals and decoded by the one vmxnet3 codec (the benchmark's).
                let descriptor = VMXNET3Descriptor.Tx(
                    dword2: dword2, dword3: UInt32(littleEndian: d.load(fromByteOffset: 12, as: UInt32.self)),
                    address: UInt64(littleEndian: d.load(as: UInt64.self)))
                // The SOP descriptor's om/hlen/msscof speak for the packet (vmxnet3 rule).
                if descriptors == 0 { request = OffloadRequest(descriptor) }
                arena.chainAddresses[descriptors] = descriptor.address
                arena.chainLengths[descriptors] = descriptor.length
                chainBytes += Int(descriptor.length)
                descriptors += 1
                eopIndex = chainIdx
                chainIdx = (chainIdx &+ 1) & mask
                if chainIdx == 0 { chainGen ^= 1 }
                if descriptor.endOfPacket {
                    complete = true
                    break
                }
            }
            if !complete && descriptors < VMXNET3.maximumDescriptorsPerPacket {
                break  // empty ring, or the guest has not finished publishing this chain
            }
            // A TSO chain needs a slot per segment: one that cannot fit what is left of this
            // burst waits for the next (an empty arena holds the most a plan may have).
            let isFirstChain = arena.chains == 0
            if complete && request.isSegmentation && arena.count > 0
                && request.estimatedSegments(chainBytes: chainBytes) > arena.capacity - arena.count
            {
                break
            }
            // Phase 2: validate and copy out of guest memory: a TSO chain whole into the
            // super-frame staging, any other straight into its slot.
            let staging = request.isSegmentation ? arena.superFrame : arena.slot(arena.count)
            let stagingLimit = request.isSegmentation ? FrameArena.superFrameSize : FrameArena.slotSize
            var reason: DropReason? = complete ? nil : .chainTooLong
            var length = 0
            if reason == nil {
                for i in 0..<descriptors {
                    let len = Int(arena.chainLengths[i])
                    guard length + len <= stagingLimit else { reason = .frameTooLong; break }
                    guard let src = memory.pointer(gpa: arena.chainAddresses[i], length: UInt64(len)) else {
                        reason = .badDescriptor
                        break
                    }
                    memcpy(staging + length, src, len)
                    length += len
                }
            }
            if reason == nil && length < EthernetFrame.headerLength { reason = .runt }
            if reason == nil && !request.isSegmentation && length > maximumFrameLength { reason = .frameTooLong }
            let first = arena.count
            var deferred = false
            if reason == nil {
                if request.isSegmentation {
                    // Only the first chain of a pass can be one the switch took part of.
                    let skip = isFirstChain ? tq.segmentsSent : 0
                    switch stageSegments(of: request, length: length, skipping: skip, into: arena) {
                    case .staged: break
                    case .refused: reason = .badOffload
                    case .noRoom: deferred = true  // the estimate was low (a hostile hlen): next pass
                    }
                } else {
                    arena.checksumBits[first] = 0
                    if request.isChecksum {
                        if let bits = completeChecksum(of: request, in: staging, length: length) {
                            arena.checksumBits[first] = bits
                        } else {
                            reason = .badOffload
                        }
                    } else if request.mode != 0 {
                        reason = .badOffload  // encapsulation offload: this device offers none
                    }
                    if reason == nil {
                        arena.lengths[first] = length
                        arena.count += 1
                    }
                }
            }
            if deferred { break }
            // The chain is consumed: it is completed once the switch has taken its frames.
            idx = chainIdx
            gen = chainGen
            let chain = arena.chains
            arena.chains += 1
            arena.chainEnds[chain] = idx << 1 | gen
            arena.chainEOPs[chain] = eopIndex
            arena.chainFrameEnds[chain] = Int32(arena.count)
            if let reason {
                arena.chainOutcomes[chain] = -1 - Int32(reason.rawValue)
                continue
            }
            arena.chainOutcomes[chain] = Int32(first)
        }
        return arena.chains
    }

    /// Completes, in ring order, the staged chains whose frames the switch took all of
    /// (`framesTaken`: a prefix of the arena's frames), counting the bad ones' drops; the rest
    /// stay in the guest's ring and are staged again on a later pass. A TSO chain is one
    /// completion for all its segments; one the switch took part of stays, and the queue
    /// remembers how many of its segments went. Returns the chains completed.
    func completeTransmit(queue q: Int, arena: FrameArena, framesTaken: Int) -> Int {
        var tq = txQueues[q]
        var completed = 0
        while completed < arena.chains {
            let outcome = arena.chainOutcomes[completed]
            if outcome >= 0 && Int(arena.chainFrameEnds[completed]) > framesTaken {
                if Int(outcome) < framesTaken { tq.segmentsSent += framesTaken - Int(outcome) }
                break
            }
            let end = arena.chainEnds[completed]
            tq.next = end >> 1
            tq.generation = end & 1
            tq.segmentsSent = 0
            writeTxCompletion(&tq, eopIndex: arena.chainEOPs[completed])
            completed += 1
            if outcome < 0 {
                drop(DropReason(rawValue: Int(-1 - outcome))!)
                if !isActive { break }  // too many faults: the device stopped
            }
        }
        txQueues[q] = tq
        if completed > 0 { pendingVectors |= 1 << UInt32(tq.vector) }
        return completed
    }

    /// TX policy, applied to the host-private copy of a frame the guest sent (never to guest
    /// memory, which the guest may rewrite meanwhile): its source MAC must be this vNIC's
    /// (anti-spoofing) and its VLAN one this vNIC's port is a member of. Returns that VLAN if
    /// the frame may go on; nil if not, counted as `spoofed_source` or `vlan_refused`.
    /// `vswitch` is the device's own, passed in by the caller, which holds it: reading the
    /// device's `unowned` reference per frame would cost a retain and a release.
    @inline(__always)
    func admittedVLAN(ofTransmitted frame: UnsafeRawPointer, length: Int, on vswitch: VirtualSwitch) -> UInt16? {
        let (vlan, refusal) = txPolicyVerdict(frame, length: length, on: vswitch)
        if let refusal { drop(refusal) }
        return refusal == nil ? vlan : nil
    }

    /// As `admittedVLAN`, for a frame of a burst the switch did not take after all (it stays in
    /// the guest's ring and is checked again when offered again): a refusal's count is taken back.
    func readmittedVLAN(ofTransmitted frame: UnsafeRawPointer, length: Int, on vswitch: VirtualSwitch) -> UInt16? {
        let (vlan, refusal) = txPolicyVerdict(frame, length: length, on: vswitch)
        if let refusal { counters.drops[refusal.rawValue] &-= 1 }
        return refusal == nil ? vlan : nil
    }

    @inline(__always)
    private func txPolicyVerdict(_ frame: UnsafeRawPointer, length: Int, on vswitch: VirtualSwitch) -> (vlan: UInt16, refusal: DropReason?)
    {
        guard EthernetFrame.mac(frame, at: 6) == mac.value else { return (0, .spoofedSource) }
        let vlan = EthernetFrame.vlanID(frame, length: length)
        guard vswitch.isMember(port, vlan: vlan) else { return (vlan, .vlanRefused) }
        return (vlan, nil)
    }

    @inline(__always)
    private func writeTxCompletion(_ tq: inout Queue, eopIndex: UInt32) {
        let c = memory.base + Int(tq.compBase) + Int(tq.compNext) &* 16  // SAFETY: checked at ACTIVATE
        let completion = VMXNET3Descriptor.txCompletion(eopIndex: eopIndex, generation: tq.compGeneration)
        c.storeBytes(of: completion.dword0.littleEndian, as: UInt32.self)
        c.storeBytes(of: 0, toByteOffset: 4, as: UInt64.self)
        // Release: the guest must see dword0 once it sees the new gen.
        SharedWord.storeRelease(c + 12, completion.dword3.littleEndian)
        tq.compNext &+= 1
        if tq.compNext == tq.compSize {
            tq.compNext = 0
            tq.compGeneration ^= 1
        }
    }

    /// True if the RX queue `hash` selects has a buffer posted. False also starts (or continues)
    /// this receiver's stall clock.
    @inline(__always)
    func hasReceiveBuffer(hash: UInt32) -> Bool {
        guard isActive else { return true }  // deliver() drops it as vnic_inactive: nothing to wait for
        let rq = rxQueues[Int(hash % UInt32(rxQueues.count))]
        guard isPosted(rq, ahead: 0) else {
            if receiverStalledSince == 0 {
                receiverStalledSince = Clock.monotonicNanoseconds()
                counters.senderHolds &+= 1
            }
            return false
        }
        // A receiver that used up its stall limit is held for again only once it has half its
        // ring posted: one that posts a buffer now and then cannot keep its senders waiting.
        if receiverStalledSince != 0 && (!exceededStallLimit || isPosted(rq, ahead: rq.ringSize / 2)) {
            receiverStalledSince = 0
            exceededStallLimit = false
        }
        return true
    }

    /// Whether the RX descriptor `ahead` slots after the queue's next one is posted.
    @inline(__always)
    private func isPosted(_ rq: Queue, ahead: UInt32) -> Bool {
        let index = rq.next &+ ahead
        let wraps = index >= rq.ringSize
        let d = memory.base + Int(rq.ringBase) + Int(wraps ? index &- rq.ringSize : index) &* 16  // SAFETY: checked at ACTIVATE
        let dw2 = UInt32(littleEndian: SharedWord.loadAcquire(d + 8))
        return VMXNET3Descriptor.rxDescriptorGeneration(dword2: dw2) == (wraps ? rq.generation ^ 1 : rq.generation)
    }

    /// Whether a sender should wait with a frame for this vNIC while it is in passthrough and its
    /// VF cannot take frames (reset, or disabled under the plugin): yes until the receiver's stall
    /// limit passes (the guest is expected to switch out meanwhile), then the frame is dropped
    /// and counted as `vnic_inactive` by the caller.
    func holdsSendersUntilSwitchOut() -> Bool {
        if receiverStalledSince == 0 {
            receiverStalledSince = Clock.monotonicNanoseconds()
            counters.senderHolds &+= 1
        }
        return holdsSenders
    }

    /// Whether a frame of flow `hash` for this vNIC must wait in its sender's ring: the RX queue
    /// it hashes to has no buffer posted, and the receiver is still within its stall limit.
    @inline(__always)
    func holdsSenderWithoutBuffer(hash: UInt32) -> Bool {
        (switchOverflow != nil || !hasReceiveBuffer(hash: hash)) && holdsSenders
    }

    /// Whether a sender should wait for this receiver (it has been without buffers for less
    /// than the stall limit) rather than have its frame dropped.
    var holdsSenders: Bool {
        guard receiverStalledSince != 0, !exceededStallLimit else { return false }
        let stalled = Clock.monotonicNanoseconds() - receiverStalledSince
        if stalled < receiverStallLimitNanoseconds { return true }
        // Busy in a switch handshake, not stuck: waited for as long as a switch step may take.
        if stalled < switchStallLimitNanoseconds && isInSwitchHandshake { return true }
        exceededStallLimit = true
        return false
    }

    /// Parks a frame for this vNIC while it is in a switch handshake, if its ring cannot take
    /// it now or earlier frames are already parked (order is kept); else delivers it.
    func deliverOrPark(_ frame: UnsafeRawPointer, length: Int, hash: UInt32, toVirtualFunction: Bool, checksumBits: UInt32 = 0) {
        if switchOverflow == nil && hasReceiveBuffer(hash: hash) {
            deliver(frame, length: length, hash: hash, checksumBits: checksumBits)
            return
        }
        let overflow = switchOverflow ?? SwitchOverflow(maximumFrameLength: maximumFrameLength)
        switchOverflow = overflow
        overflow.toVirtualFunction = toVirtualFunction
        if !overflow.append(frame, length: length) { drop(.noBuffers) }
    }

    /// Copies one frame into the next RX buffer of the queue its flow hashes to. `checksumBits`
    /// (`RxCompletion.ChecksumBits`) go in its completion: what the sending device vouches for.
    func deliver(_ frame: UnsafeRawPointer, length: Int, hash: UInt32, checksumBits: UInt32 = 0) {
        guard isActive else {
            drop(.inactive)
            return
        }
        // Longer than the guest's MTU allows: the sender's doing, not this guest's, so it is
        // dropped before a descriptor is taken and is no fault (else a stream of jumbo frames
        // from anyone would put this vNIC in the error state). The VF path drops the same frames.
        guard length <= maximumFrameLength else {
            drop(.rxFrameTooLong)
            return
        }
        let q = Int(hash % UInt32(rxQueues.count))
        var rq = rxQueues[q]
        let d = memory.base + Int(rq.ringBase) + Int(rq.next) &* 16  // SAFETY: checked at ACTIVATE
        let dw2 = UInt32(littleEndian: SharedWord.loadAcquire(d + 8))
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
        // Never past the buffer the descriptor names. A guest whose buffer cannot hold a frame
        // its own MTU allows posted it wrong: that is its fault.
        if length > capacity {
            drop(.bufferTooSmall)
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
            error: failed, checksum: .init(rawValue: failed ? 0 : checksumBits), generation: rq.compGeneration)
        let w = completion.dwords
        c.storeBytes(of: w.0.littleEndian, as: UInt32.self)
        c.storeBytes(of: w.1.littleEndian, toByteOffset: 4, as: UInt32.self)
        c.storeBytes(of: w.2.littleEndian, toByteOffset: 8, as: UInt32.self)
        SharedWord.storeRelease(c + 12, w.3.littleEndian)
        rq.compNext &+= 1
        if rq.compNext == rq.compSize {
            rq.compNext = 0
            rq.compGeneration ^= 1
        }
        rxQueues[q] = rq
        if !failed {
            counters.rxFrames &+= 1
            counters.rxBytes &+= UInt64(length)
            captureReceived?._withUnsafeGuaranteedRef { $0.copyReceived(frame, length: length) }
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
        MemoryFence.sequentiallyConsistent()
        var pending = pendingVectors
        pendingVectors = 0
        while pending != 0 {
            let v = pending.trailingZeroBitCount
            pending &= pending &- 1
            guard v < interrupts.count else { continue }
            let mask = registerWord(VMXNET3.RegisterPage.interruptMask(v))
            if SharedWord.loadRelaxed(mask) == 0 {
                if autoMask { SharedWord.storeRelaxed(mask, 1) }
                interrupts[v].signal()
                counters.interruptsRaised &+= 1
            }
        }
    }

    /// Tells the guest whether the engine is about to sleep (it must kick) or polls (no kick).
    func setSleeping(_ sleeping: Bool) {
        // A stopped device's register page may already be another host's (the guest moved and
        // the destination adopted the page): what this engine does is no longer the guest's news.
        guard state != .stopped else { return }
        SharedWord.storeRelaxed(registerWord(VMXNET3.RegisterPage.deviceSleeping), sleeping ? 1 : 0)
    }

    /// True if any TX ring has a descriptor the device has not consumed: the re-check after
    /// announcing sleep, so a doorbell written just before is not missed.
    func hasPendingTransmit() -> Bool {
        guard isActive else { return false }
        for tq in txQueues {
            let d = memory.base + Int(tq.ringBase) + Int(tq.next) &* 16
            if VMXNET3Descriptor.txGeneration(dword2: UInt32(littleEndian: SharedWord.loadAcquire(d + 8))) == tq.generation { return true }
        }
        return false
    }
}
