import CNPAPluginABI
import NPARingFormats
import NPASystem

/// The built-in emulation plugin: the shell's data path over vmxnet3 rings that the host's
/// device emulation serves. It implements the same C operations table (`npa_plugin_ops`) a
/// vendor plugin does, so the shell treats every plugin alike.
///
/// It may touch only what the table hands it: its private area, its queue regions (which it
/// carves as: descriptor ring, then completion ring, then a buffer-id shadow of the ring — the
/// layout the device side is told in DriverShared), the register page, and buffers by GPA.
/// Like any plugin it makes no system call: waking a sleeping device is the shell's `kick`.
enum EmulationPlugin {
    /// Per-queue cursors, kept in the private area the shell allocates (16 of them: TX 0-7, RX 8-15).
    struct Cursor {
        var ring: UnsafeMutableRawPointer?
        var completions: UnsafeMutableRawPointer?
        var bufferIDs: UnsafeMutablePointer<UInt32>?
        var size: UInt32 = 0
        var next: UInt32 = 0
        var generation: UInt32 = 1
        /// TX: oldest descriptor not yet completed. RX: unused.
        var oldest: UInt32 = 0
        /// TX: descriptors in flight. RX: buffers posted.
        var inFlight: UInt32 = 0
        var completionNext: UInt32 = 0
        var completionGeneration: UInt32 = 1
        var packets: UInt64 = 0
        var bytes: UInt64 = 0
        var errors: UInt64 = 0
    }

    static let name: StaticString = "vmxnet3-emulation"
    static let version: StaticString = "1.0"

    /// Bytes a queue region needs for a ring of `size` descriptors.
    static func regionBytes(ringSize size: Int) -> Int { size * 16 * 2 + size * 4 }

    static let entry: npa_plugin_entry_fn = { ops in
        guard let ops else { return NPA_ERR_INVALID }
        ops.pointee = npa_plugin_ops(
            abi_version: NPA_PLUGIN_ABI_VERSION,
            private_size: UInt32(MemoryLayout<Cursor>.stride * 16),
            name: UnsafeRawPointer(EmulationPlugin.name.utf8Start).assumingMemoryBound(to: CChar.self),
            version: UnsafeRawPointer(EmulationPlugin.version.utf8Start).assumingMemoryBound(to: CChar.self),
            sw_init: { state in EmulationPlugin.softwareInit(state!) },
            reinit_tx_ring: { state, q in EmulationPlugin.reinit(state!, index: Int(q), isRx: false) },
            reinit_rx_ring: { state, q in EmulationPlugin.reinit(state!, index: Int(q), isRx: true) },
            enable_interrupt: { state, v in EmulationPlugin.setMask(state!, vector: Int(v), masked: false) },
            disable_interrupt: { state, v in EmulationPlugin.setMask(state!, vector: Int(v), masked: true) },
            add_tx_frames: { state, q, frames, n, flags in EmulationPlugin.addTx(state!, Int(q), frames!, n, flags) },
            check_tx_ring: { state, q in EmulationPlugin.checkTx(state!, Int(q)) },
            check_rx_ring: { state, q, max in EmulationPlugin.checkRx(state!, Int(q), max) },
            refill_rx_ring: { state, q in EmulationPlugin.refillRx(state!, Int(q)) },
            get_stats: { state, q, isRx, out in EmulationPlugin.stats(state!, Int(q), isRx != 0, out!) },
            // The host's device emulation completes checksums and cuts TSO super-frames (vmxnet3's
            // om 2 and 3), as VMware's device does for its driver.
            tx_offloads: NPA_PLUGIN_OFFLOAD_TX_CSUM | NPA_PLUGIN_OFFLOAD_TSO, reserved_ops: 0)
        return NPA_OK
    }

    @inline(__always)
    static func cursors(_ state: UnsafeMutablePointer<npa_plugin_state>) -> UnsafeMutablePointer<Cursor> {
        state.pointee.private_area.assumingMemoryBound(to: Cursor.self)
    }

    static func region(_ state: UnsafeMutablePointer<npa_plugin_state>, index: Int, isRx: Bool) -> npa_queue_region {
        withUnsafePointer(to: isRx ? state.pointee.rx_queues : state.pointee.tx_queues) {
            $0.withMemoryRebound(to: npa_queue_region.self, capacity: Int(NPA_PLUGIN_MAX_QUEUES)) { $0[index] }
        }
    }

    static func softwareInit(_ state: UnsafeMutablePointer<npa_plugin_state>) -> Int32 {
        let s = state.pointee
        guard s.num_tx_queues >= 1, s.num_tx_queues <= NPA_PLUGIN_MAX_QUEUES,
            s.num_rx_queues >= 1, s.num_rx_queues <= NPA_PLUGIN_MAX_QUEUES, s.registers != nil
        else { return NPA_ERR_INVALID }
        for (count, isRx) in [(Int(s.num_tx_queues), false), (Int(s.num_rx_queues), true)] {
            for q in 0..<count {
                let r = region(state, index: q, isRx: isRx)
                let size = Int(r.ring_size)
                guard size >= 32, size & (size - 1) == 0, size <= 4096, let va = r.va else { return NPA_ERR_INVALID }
                guard Int(r.size) >= regionBytes(ringSize: size) else { return NPA_ERR_NO_SPACE }
                var c = Cursor()
                c.ring = va
                c.completions = va + size * 16
                c.bufferIDs = (va + size * 32).assumingMemoryBound(to: UInt32.self)
                c.size = UInt32(size)
                cursors(state)[q + (isRx ? 8 : 0)] = c
                _ = reinit(state, index: q, isRx: isRx)
            }
        }
        return NPA_OK
    }

    static func reinit(_ state: UnsafeMutablePointer<npa_plugin_state>, index: Int, isRx: Bool) -> Int32 {
        let cp = cursors(state) + index + (isRx ? 8 : 0)
        guard let ring = cp.pointee.ring, let comp = cp.pointee.completions else { return NPA_ERR_INVALID }
        let size = Int(cp.pointee.size)
        ring.initializeMemory(as: UInt8.self, repeating: 0, count: size * 16)
        comp.initializeMemory(as: UInt8.self, repeating: 0, count: size * 16)
        cp.pointee.next = 0
        cp.pointee.generation = VMXNET3.initialGeneration
        cp.pointee.oldest = 0
        cp.pointee.inFlight = 0
        cp.pointee.completionNext = 0
        cp.pointee.completionGeneration = VMXNET3.initialGeneration
        return NPA_OK
    }

    static func setMask(_ state: UnsafeMutablePointer<npa_plugin_state>, vector: Int, masked: Bool) -> Int32 {
        guard vector < VMXNET3.RegisterPage.maximumVectors, let regs = state.pointee.registers else { return NPA_ERR_INVALID }
        SharedWord.storeRelaxed(regs + VMXNET3.RegisterPage.interruptMask(vector), masked ? 1 : 0)
        // Unmask, then the caller re-checks its rings: the fence orders the two so that either
        // the device sees the unmask and interrupts, or we see its completion.
        MemoryFence.sequentiallyConsistent()
        return NPA_OK
    }

    static func addTx(
        _ state: UnsafeMutablePointer<npa_plugin_state>, _ q: Int, _ frames: UnsafePointer<npa_tx_frame>, _ count: UInt32, _ flags: UInt32
    ) -> UInt32 {
        let cp = cursors(state) + q
        guard let ring = cp.pointee.ring else { return 0 }
        var c = cp.pointee
        let mask = c.size - 1
        var added: UInt32 = 0
        while added < count && c.inFlight < c.size - 1 {
            let f = frames[Int(added)]
            let d = ring + Int(c.next) * 16
            d.storeBytes(of: f.gpa.littleEndian, as: UInt64.self)
            let vlan = f.flags & UInt16(NPA_TX_FLAG_VLAN_INSERT) != 0
            // One descriptor per frame (a shell buffer is at most 16384 bytes, len 0 meaning
            // 16384), so this one is SOP and EOP and carries the offload request (Linux
            // vmxnet3_tq_xmit: om, hlen, msscof in the SOP descriptor).
            let mode: VMXNET3Descriptor.OffloadMode =
                f.flags & UInt16(NPA_TX_FLAG_TSO) != 0 ? .segmentation : f.flags & UInt16(NPA_TX_FLAG_CSUM) != 0 ? .checksum : .none
            let offload = VMXNET3Descriptor.txOffloadBits(
                mode: mode, headerLength: UInt32(f.offload_header_length), mssOrChecksumOffset: UInt32(f.offload_mss_or_csum))
            let dw3 =
                VMXNET3Descriptor.txEOPBit | VMXNET3Descriptor.txCQBit | offload.dword3
                | (vlan ? VMXNET3Descriptor.txVLANInsertBit | UInt32(f.vlan_tci) << 16 : 0)
            d.storeBytes(of: dw3.littleEndian, toByteOffset: 12, as: UInt32.self)
            // Release: the device must see address and flags once it sees the gen bit.
            SharedWord.storeRelease(d + 8, ((f.length & 0x3FFF) | (c.generation << 14) | offload.dword2).littleEndian)
            c.bytes &+= UInt64(f.length)
            c.next = (c.next + 1) & mask
            if c.next == 0 { c.generation ^= 1 }
            c.inFlight += 1
            added += 1
        }
        c.packets &+= UInt64(added)
        cp.pointee = c
        if added > 0 && flags & NPA_TX_FLAG_LAST_HINT != 0 {
            let regs = state.pointee.registers!
            SharedWord.storeRelaxed(regs + VMXNET3.RegisterPage.txProducer(q), c.next)
            // Publish, then read the device's sleep flag; pairs with the device's "announce
            // sleep, fence, re-check rings". Taking the flag with an exchange makes one sleep
            // cost one kick, not one per batch written while the device wakes up.
            MemoryFence.sequentiallyConsistent()
            let sleeping = regs + VMXNET3.RegisterPage.deviceSleeping
            if SharedWord.loadRelaxed(sleeping) != 0 && SharedWord.exchange(sleeping, 0) != 0 {
                state.pointee.shell.pointee.kick(state.pointee.shell.pointee.shell, UInt32(q))
            }
        }
        return added
    }

    static func checkTx(_ state: UnsafeMutablePointer<npa_plugin_state>, _ q: Int) -> UInt32 {
        let cp = cursors(state) + q
        guard let comp = cp.pointee.completions else { return 0 }
        var c = cp.pointee
        let mask = c.size - 1
        var completed: UInt32 = 0
        while true {
            let d = comp + Int(c.completionNext) * 16
            let dw3 = UInt32(littleEndian: SharedWord.loadAcquire(d + 12))
            guard VMXNET3Descriptor.generation(dword3: dw3) == c.completionGeneration else { break }
            let eop = VMXNET3Descriptor.txCompletionIndex(dword0: UInt32(littleEndian: d.load(as: UInt32.self)))
            let span = (eop &- c.oldest) & mask
            guard span < c.inFlight else {
                c.errors &+= 1  // the device completed a descriptor we never gave it
                break
            }
            c.oldest = (eop + 1) & mask
            c.inFlight -= span + 1
            completed += 1
            c.completionNext += 1
            if c.completionNext == c.size {
                c.completionNext = 0
                c.completionGeneration ^= 1
            }
        }
        cp.pointee = c
        if completed > 0 {
            let shell = state.pointee.shell.pointee
            shell.complete_send(shell.shell, UInt32(q), completed)
        }
        return completed
    }

    static func refillRx(_ state: UnsafeMutablePointer<npa_plugin_state>, _ q: Int) -> UInt32 {
        let cp = cursors(state) + 8 + q
        guard let ring = cp.pointee.ring, let ids = cp.pointee.bufferIDs else { return 0 }
        var c = cp.pointee
        let shell = state.pointee.shell.pointee
        let length = UInt32(min(Int(state.pointee.rx_buffer_size), Int(VMXNET3.maximumBufferLength)))
        var posted: UInt32 = 0
        // vmxnet3 rule: fill size-1 buffers, or the device would see a full ring as empty.
        while c.inFlight < c.size - 1 {
            var id: UInt32 = 0
            var gpa: UInt64 = 0
            guard shell.alloc_rx_buffer(shell.shell, UInt32(q), &id, &gpa) == NPA_OK else { break }
            let d = ring + Int(c.next) * 16
            d.storeBytes(of: gpa.littleEndian, as: UInt64.self)
            d.storeBytes(of: UInt32(0), toByteOffset: 12, as: UInt32.self)
            SharedWord.storeRelease(d + 8, VMXNET3Descriptor.rxDescriptorDword2(length: length, generation: c.generation).littleEndian)
            ids[Int(c.next)] = id
            c.next = (c.next + 1) & (c.size - 1)
            if c.next == 0 { c.generation ^= 1 }
            c.inFlight += 1
            posted += 1
        }
        cp.pointee = c
        if posted > 0, let regs = state.pointee.registers {
            SharedWord.storeRelaxed(regs + VMXNET3.RegisterPage.rxProducer(q), c.next)
        }
        return posted
    }

    static func checkRx(_ state: UnsafeMutablePointer<npa_plugin_state>, _ q: Int, _ maxFrames: UInt32) -> UInt32 {
        let cp = cursors(state) + 8 + q
        guard let comp = cp.pointee.completions, let ids = cp.pointee.bufferIDs else { return 0 }
        var c = cp.pointee
        let shell = state.pointee.shell.pointee
        var indicated: UInt32 = 0
        while indicated < maxFrames && c.inFlight > 0 {
            let d = comp + Int(c.completionNext) * 16
            let dw3 = UInt32(littleEndian: SharedWord.loadAcquire(d + 12))
            guard VMXNET3Descriptor.generation(dword3: dw3) == c.completionGeneration else { break }
            let completion = VMXNET3Descriptor.RxCompletion(
                dwords: (
                    UInt32(littleEndian: d.load(as: UInt32.self)),
                    UInt32(littleEndian: d.load(fromByteOffset: 4, as: UInt32.self)),
                    UInt32(littleEndian: d.load(fromByteOffset: 8, as: UInt32.self)), dw3
                ))
            guard completion.descriptorIndex < c.size else {
                c.errors &+= 1
                break
            }
            var frame = npa_rx_frame(
                buf_id: ids[Int(completion.descriptorIndex)], length: completion.length, rss_hash: completion.rssHash,
                vlan_tci: completion.vlanTCI,
                flags: UInt16(NPA_RX_FLAG_RSS) | (completion.error ? UInt16(NPA_RX_FLAG_ERROR) : 0)
                    | (completion.vlanStripped ? UInt16(NPA_RX_FLAG_VLAN) : 0)
                    | (completion.checksum.vouchesForChecksums ? UInt16(NPA_RX_FLAG_CSUM_VALID) : 0))
            c.inFlight -= 1
            c.completionNext += 1
            if c.completionNext == c.size {
                c.completionNext = 0
                c.completionGeneration ^= 1
            }
            if completion.error {
                c.errors &+= 1
            } else {
                c.packets &+= 1
                c.bytes &+= UInt64(completion.length)
            }
            cp.pointee = c
            shell.indicate_recv(shell.shell, UInt32(q), &frame)
            indicated += 1
        }
        cp.pointee = c
        return indicated
    }

    static func stats(_ state: UnsafeMutablePointer<npa_plugin_state>, _ q: Int, _ isRx: Bool, _ out: UnsafeMutablePointer<npa_queue_stats>)
    {
        let c = cursors(state)[q + (isRx ? 8 : 0)]
        out.pointee = npa_queue_stats(packets: c.packets, bytes: c.bytes, errors: c.errors, reserved: 0)
    }
}
