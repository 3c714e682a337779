import NPAControlProtocol
import NPARingFormats

/// vmxnet3 commands, written to CMD: ACTIVATE (which validates the guest's ring geometry before
/// any queue starts), QUIESCE, RESET, the UPDATE_* filters and rx mode, and the GET_* queries.
///
/// It may read DriverShared, the queue descriptor table and the multicast and VLAN tables in
/// guest memory (every address checked), write stats and queue status into the queue
/// descriptors, and change the device only through its lifecycle (`start`, `quiesce`, `reset`)
/// and `program(...)` methods. Switch commands belong to the PF driver and are refused here.
extension EmulatedDevice {
    /// What a command did: the value CMD reads back (vmxnet3's ABI: 0 = success for SET
    /// commands, `UInt32.max` for a command the device does not take) and why it was refused.
    struct CommandOutcome {
        var result: UInt32
        var refusal: DeviceRefusal?

        static func done(_ result: UInt32 = 0) -> CommandOutcome { CommandOutcome(result: result) }
        static func refused(_ refusal: DeviceRefusal, result: UInt32 = 1) -> CommandOutcome {
            CommandOutcome(result: result, refusal: refusal)
        }
    }

    /// Executes a vmxnet3 command; each refusal names its rule (`DeviceRefusal`).
    func execute(command raw: UInt32) -> CommandOutcome {
        guard let command = VMXNET3.Command(rawValue: raw) else { return .refused(.unsupportedCommand(raw), result: UInt32.max) }
        switch command {
        case .activateDevice:
            do {
                try activate()
                return .done()
            } catch {
                logger.warning("ACTIVATE refused: \(error.reason)")
                return .refused(.activation(reason: error.reason))
            }
        case .quiesceDevice:
            quiesce()
            return .done()
        case .resetDevice:
            reset()
            return .done()
        case .updateRxMode: return updateRxMode()
        case .updateMACFilters: return updateMACFilters()
        case .updateVLANFilters: return updateVLANFilters()
        case .getStats:
            writeStats()
            return .done()
        case .getLink: return .done(VMXNET3.linkUp10G)
        case .getPermanentMACLow:
            let b = permanentMAC.bytes
            return .done(UInt32(b[0]) | UInt32(b[1]) << 8 | UInt32(b[2]) << 16 | UInt32(b[3]) << 24)
        case .getPermanentMACHigh:
            let b = permanentMAC.bytes
            return .done(UInt32(b[4]) | UInt32(b[5]) << 8)
        case .getDeviceIDLow: return .done(mode == .passthrough ? VMXNET3.passthroughDeviceID : VMXNET3.emulatedDeviceID)
        case .getDeviceIDHigh: return .done()
        case .getConfiguredInterrupts:
            // MSI-X (3) with auto-mask (mask mode ACTIVE = 1 << 2).
            return .done(3 | (1 << 2))
        case .getQueueStatus:
            writeQueueStatus()
            return .done()
        case .stopEmulation, .loadPlugin, .activateVF:
            // Handled by the host's PF driver (PFDriver, reached through ControlServer) when a switch is under way.
            return .refused(.noSwitchUnderWay, result: UInt32.max)
        }
    }

    struct ActivationError: Error { let reason: String }

    private func require(_ condition: Bool, _ reason: @autoclosure () -> String) throws(ActivationError) {
        if !condition { throw ActivationError(reason: reason()) }
    }

    /// ACTIVATE_DEV: reads DriverShared and the queue descriptor table once, validates every
    /// ring against the guest's region, and only then starts the queues.
    private func activate() throws(ActivationError) {
        let ds = driverSharedPA
        try require(ds != 0, "DriverShared address (DSAL/DSAH) is not set")
        try require(
            memory.contains(gpa: ds, length: VMXNET3.DriverShared.size),
            "DriverShared at 0x\(String(ds, radix: 16)) lies outside guest memory")
        try require(memory.loadU32(gpa: ds) == VMXNET3.driverSharedMagic, "DriverShared magic is not 0xBABEFEE1")
        let numTx = Int(memory.loadU8(gpa: ds + VMXNET3.DriverShared.numTxQueues) ?? 0)
        let numRx = Int(memory.loadU8(gpa: ds + VMXNET3.DriverShared.numRxQueues) ?? 0)
        try require((1...maxQueues).contains(numTx), "numTxQueues \(numTx) is not in 1...\(maxQueues)")
        try require((1...maxQueues).contains(numRx), "numRxQueues \(numRx) is not in 1...\(maxQueues)")
        let numIntrs = Int(memory.loadU8(gpa: ds + VMXNET3.DriverShared.numInterrupts) ?? 0)
        try require(
            numIntrs >= 1 && numIntrs <= interrupts.count,
            "numIntrs \(numIntrs) exceeds the \(interrupts.count) interrupt eventfds attached")
        let mtuValue = memory.loadU32(gpa: ds + VMXNET3.DriverShared.mtu) ?? 0
        try require((68...9000).contains(mtuValue), "MTU \(mtuValue) is not in 68...9000")
        let queueTable = memory.loadU64(gpa: ds + VMXNET3.DriverShared.queueDescPA) ?? 0
        let tableLength = UInt64(numTx + numRx) * VMXNET3.queueDescriptorSize
        try require(
            queueTable & 127 == 0 && memory.contains(gpa: queueTable, length: tableLength),
            "queue descriptor table at 0x\(String(queueTable, radix: 16)) is misaligned or outside guest memory")

        func ring(_ base: UInt64, _ size: UInt32, _ what: String, maximum: UInt32) throws(ActivationError) {
            try require(
                size >= VMXNET3.minimumRingSize && size <= maximum && size & (size - 1) == 0,
                "\(what) size \(size) is not a power of two in \(VMXNET3.minimumRingSize)...\(maximum)")
            try require(
                base & 15 == 0 && memory.contains(gpa: base, length: UInt64(size) * VMXNET3.descriptorSize),
                "\(what) at 0x\(String(base, radix: 16)) is misaligned or outside guest memory")
        }

        var tx: [Queue] = []
        for q in 0..<numTx {
            let d = queueTable + UInt64(q) * VMXNET3.queueDescriptorSize
            var t = Queue()
            t.descriptorGPA = d
            t.ringBase = memory.loadU64(gpa: d + VMXNET3.TxQueueDesc.txRingBasePA) ?? 0
            t.ringSize = memory.loadU32(gpa: d + VMXNET3.TxQueueDesc.txRingSize) ?? 0
            t.compBase = memory.loadU64(gpa: d + VMXNET3.TxQueueDesc.compRingBasePA) ?? 0
            t.compSize = memory.loadU32(gpa: d + VMXNET3.TxQueueDesc.compRingSize) ?? 0
            t.vector = Int(memory.loadU8(gpa: d + VMXNET3.TxQueueDesc.intrIdx) ?? 0)
            try ring(t.ringBase, t.ringSize, "TX ring \(q)", maximum: VMXNET3.maximumTxRingSize)
            try ring(t.compBase, t.compSize, "TX completion ring \(q)", maximum: VMXNET3.maximumTxRingSize)
            try require(t.compSize >= t.ringSize, "TX completion ring \(q) is smaller than its TX ring")
            try require(t.vector < numIntrs, "TX queue \(q) interrupt index \(t.vector) >= numIntrs \(numIntrs)")
            tx.append(t)
        }
        var rx: [Queue] = []
        for q in 0..<numRx {
            let d = queueTable + UInt64(numTx + q) * VMXNET3.queueDescriptorSize
            var r = Queue()
            r.descriptorGPA = d
            r.ringBase = memory.loadU64(gpa: d + VMXNET3.RxQueueDesc.rxRingBasePA0) ?? 0
            r.ringSize = memory.loadU32(gpa: d + VMXNET3.RxQueueDesc.rxRingSize0) ?? 0
            r.compBase = memory.loadU64(gpa: d + VMXNET3.RxQueueDesc.compRingBasePA) ?? 0
            r.compSize = memory.loadU32(gpa: d + VMXNET3.RxQueueDesc.compRingSize) ?? 0
            r.vector = Int(memory.loadU8(gpa: d + VMXNET3.RxQueueDesc.intrIdx) ?? 0)
            try ring(r.ringBase, r.ringSize, "RX ring \(q)", maximum: VMXNET3.maximumRxRingSize)
            try ring(r.compBase, r.compSize, "RX completion ring \(q)", maximum: VMXNET3.maximumRxRingSize * 2)
            try require(r.compSize >= r.ringSize, "RX completion ring \(q) is smaller than its RX ring")
            try require(r.vector < numIntrs, "RX queue \(q) interrupt index \(r.vector) >= numIntrs \(numIntrs)")
            rx.append(r)
        }
        // Completion rings start zeroed (all-zero = empty, since gen starts at 1).
        for t in tx {
            memory.pointer(gpa: t.compBase, length: UInt64(t.compSize) * 16)!.initializeMemory(
                as: UInt8.self, repeating: 0, count: Int(t.compSize) * 16)
        }
        for r in rx {
            memory.pointer(gpa: r.compBase, length: UInt64(r.compSize) * 16)!.initializeMemory(
                as: UInt8.self, repeating: 0, count: Int(r.compSize) * 16)
        }
        for t in tx {
            // txThreshold = 1: the device wants every doorbell (it polls anyway while awake).
            memory.storeU32(gpa: t.descriptorGPA + VMXNET3.TxQueueDesc.txThreshold, 1)
            memory.storeU32(gpa: t.descriptorGPA + VMXNET3.TxQueueDesc.error, 0)
        }
        start(transmit: tx, receive: rx, mtu: mtuValue, autoMask: (memory.loadU8(gpa: ds + VMXNET3.DriverShared.intrAutoMask) ?? 1) != 0)
        logger.info("activated: \(numTx) TX / \(numRx) RX queues, MTU \(mtuValue), \(numIntrs) vectors")
    }

    private func updateRxMode() -> CommandOutcome {
        guard driverSharedPA != 0, let raw = memory.loadU32(gpa: driverSharedPA &+ VMXNET3.DriverShared.rxMode) else {
            return .refused(.driverSharedNotSet)
        }
        if let refusal = program(rxMode: VMXNET3.RxMode(rawValue: raw & 0x1F)) { return .refused(.admission(refusal)) }
        return .done()
    }

    private func updateMACFilters() -> CommandOutcome {
        let ds = driverSharedPA
        guard ds != 0, let lenWord = memory.loadU32(gpa: ds &+ VMXNET3.DriverShared.multicastTableLength),
            let tablePA = memory.loadU64(gpa: ds &+ VMXNET3.DriverShared.multicastTablePA)
        else { return .refused(.driverSharedNotSet) }
        let length = Int(lenWord & 0xFFFF)
        guard length % 6 == 0, length <= 6 * 256 else { return .refused(.multicastTableLength(length)) }
        guard let p = memory.pointer(gpa: tablePA, length: UInt64(length)) else { return .refused(.multicastTableOutsideMemory) }
        var list = Set<MACAddress>()
        for i in 0..<(length / 6) {
            let mac = MACAddress(value: EthernetFrame.mac(p, at: i * 6))
            guard mac.isMulticast else { return .refused(.notMulticast(mac)) }
            list.insert(mac)
        }
        program(multicast: list)
        return .done()
    }

    private func updateVLANFilters() -> CommandOutcome {
        let ds = driverSharedPA
        guard ds != 0, let p = memory.pointer(gpa: ds &+ VMXNET3.DriverShared.vlanTable, length: VMXNET3.DriverShared.vlanTableBytes) else {
            return .refused(.driverSharedNotSet)
        }
        var requested = Set<UInt16>([0])
        for word in 0..<128 {
            let bits = UInt32(littleEndian: p.load(fromByteOffset: word * 4, as: UInt32.self))
            if bits == 0 { continue }
            for b in 0..<32 where bits & (1 << UInt32(b)) != 0 { requested.insert(UInt16(word * 32 + b)) }
        }
        requested.remove(4095)
        if let refusal = program(vlans: requested) { return .refused(.admission(refusal)) }
        return .done()
    }

    /// GET_STATS: the device writes UPT1 stats into each queue descriptor.
    private func writeStats() {
        // Totals go in queue 0's stats; a per-queue split is not kept.
        if let t = txQueues.first {
            let s = t.descriptorGPA + VMXNET3.TxQueueDesc.stats
            memory.storeU64(gpa: s + 16, counters.txFrames)  // ucastPkts (all frames here)
            memory.storeU64(gpa: s + 24, counters.txBytes)
            memory.storeU64(
                gpa: s + 64, counters.drops[DropReason.badDescriptor.rawValue] + counters.drops[DropReason.chainTooLong.rawValue])
            memory.storeU64(
                gpa: s + 72, counters.drops[DropReason.spoofedSource.rawValue] + counters.drops[DropReason.vlanRefused.rawValue])
        }
        if let r = rxQueues.first {
            let s = r.descriptorGPA + VMXNET3.RxQueueDesc.stats
            memory.storeU64(gpa: s + 16, counters.rxFrames)
            memory.storeU64(gpa: s + 24, counters.rxBytes)
            memory.storeU64(gpa: s + 64, counters.drops[DropReason.noBuffers.rawValue])
            memory.storeU64(
                gpa: s + 72,
                counters.drops[DropReason.bufferTooSmall.rawValue] + counters.drops[DropReason.badRxDescriptor.rawValue]
                    + counters.drops[DropReason.rxFrameTooLong.rawValue])
        }
    }

    /// GET_QUEUE_STATUS, and the error state: each queue descriptor's `stopped` byte.
    func writeQueueStatus() {
        let stopped: UInt8 = isActive ? 0 : 1
        for t in txQueues {
            memory.pointer(gpa: t.descriptorGPA + VMXNET3.TxQueueDesc.stopped, length: 1)?.storeBytes(of: stopped, as: UInt8.self)
        }
        for r in rxQueues {
            memory.pointer(gpa: r.descriptorGPA + VMXNET3.RxQueueDesc.stopped, length: 1)?.storeBytes(of: stopped, as: UInt8.self)
        }
    }
}
