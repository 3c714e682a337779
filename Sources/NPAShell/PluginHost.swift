import CNPAPluginABI
import NPAControlProtocol
import NPARingFormats
import NPASystem

/// The shell's side of the plugin ABI: it fills `npa_plugin_state`, provides the shell services
/// (buffers by id, receive indication, send completion, kick, log, time) and owns every buffer.
/// One per vNIC; the plugin behind it is whichever the vNIC's mode calls for.
///
/// It may touch: the buffer pool, the TX FIFOs, the received-frame batch, the doorbell. Only the
/// guest thread driving the vNIC calls it.
package final class PluginHost {
    package let ops: npa_plugin_ops
    package let state: UnsafeMutablePointer<npa_plugin_state>
    private let services: UnsafeMutablePointer<npa_shell_services>
    private let privateArea: UnsafeMutableRawPointer
    package let pool: BufferPool
    var txFIFOs: [BufferFIFO]
    let doorbell: EventNotifier

    /// Frames indicated during one check_rx_ring call.
    static let batchCapacity = 256
    /// The largest private area a plugin may ask for (the in-tree ones need under 2 KiB).
    package static let maximumPrivateSize: UInt32 = 1 << 20
    let receivedIDs = UnsafeMutablePointer<UInt32>.allocate(capacity: batchCapacity)
    let receivedLengths = UnsafeMutablePointer<UInt32>.allocate(capacity: batchCapacity)
    let receivedHashes = UnsafeMutablePointer<UInt32>.allocate(capacity: batchCapacity)
    let receivedFlags = UnsafeMutablePointer<UInt16>.allocate(capacity: batchCapacity)
    var receivedCount = 0
    /// Per buffer id: 1 while the plugin holds it as a posted RX buffer. The shell can then take
    /// every buffer back on switch-out without knowing the plugin's ring format.
    private let rxLent: UnsafeMutablePointer<UInt8>
    private(set) var rxLentCount = 0
    /// Per buffer id: the length of the TX frame it carries (so unsent frames can be re-sent).
    let txLengths: UnsafeMutablePointer<UInt32>
    /// Per buffer id: the offload its TX frame asked of the device (so an unsent one is re-sent
    /// with it, or finished in software if the next plugin cannot do it).
    let txOffloads: UnsafeMutablePointer<TransmitOffload>
    /// Indications naming a buffer the plugin did not hold: a plugin bug, counted and ignored.
    package private(set) var pluginFaults: UInt64 = 0
    /// The `max_frames` of the `check_rx_ring` call under way (set by the caller).
    var receiveLimit = PluginHost.batchCapacity
    package var kicks: UInt64 = 0
    /// What the plugin reported through `report_fault`, first report only (the shell's switch
    /// state machine decides what to do about it, once).
    package private(set) var deviceFault: String?
    var receiveErrors: UInt64 = 0

    package struct LoadError: Error, CustomStringConvertible {
        package let description: String
    }

    /// Loads a plugin through its entry point and runs its software init.
    package init(
        entry: npa_plugin_entry_fn, txRegions: [npa_queue_region], rxRegions: [npa_queue_region],
        registers: UnsafeMutableRawPointer, registersSize: Int, pool: BufferPool, ringSize: Int, doorbell: EventNotifier
    ) throws {
        var ops = npa_plugin_ops()
        guard entry(&ops) == NPA_OK else { throw LoadError(description: "plugin entry point failed") }
        guard ops.abi_version == NPA_PLUGIN_ABI_VERSION else {
            throw LoadError(description: "plugin ABI version \(ops.abi_version) does not match the shell's \(NPA_PLUGIN_ABI_VERSION)")
        }
        guard ops.sw_init != nil, ops.add_tx_frames != nil, ops.check_tx_ring != nil, ops.check_rx_ring != nil,
            ops.refill_rx_ring != nil, ops.enable_interrupt != nil, ops.disable_interrupt != nil
        else { throw LoadError(description: "plugin operations table is incomplete") }
        // The area is the guest's memory, allocated on the plugin's word: bound it.
        guard ops.private_size <= Self.maximumPrivateSize else {
            throw LoadError(
                description: "plugin asks for a private area of \(ops.private_size) bytes, more than \(Self.maximumPrivateSize)")
        }
        self.ops = ops
        self.pool = pool
        rxLent = .allocate(capacity: pool.count)
        rxLent.initialize(repeating: 0, count: pool.count)
        txLengths = .allocate(capacity: pool.count)
        txLengths.initialize(repeating: 0, count: pool.count)
        txOffloads = .allocate(capacity: pool.count)
        txOffloads.initialize(repeating: .none, count: pool.count)
        self.doorbell = doorbell
        txFIFOs = txRegions.map { _ in BufferFIFO(capacity: ringSize) }
        privateArea = .allocate(byteCount: max(Int(ops.private_size), 16), alignment: 64)
        privateArea.initializeMemory(as: UInt8.self, repeating: 0, count: max(Int(ops.private_size), 16))
        services = .allocate(capacity: 1)
        state = .allocate(capacity: 1)
        state.initialize(to: npa_plugin_state())
        services.initialize(
            to: npa_shell_services(
                shell: nil,
                alloc_rx_buffer: { shell, _, id, gpa in
                    Unmanaged<PluginHost>.fromOpaque(shell!)._withUnsafeGuaranteedRef { host in
                        guard let b = host.pool.take() else { return NPA_ERR_BUSY }
                        host.rxLent[Int(b)] = 1
                        host.rxLentCount += 1
                        id!.pointee = b
                        gpa!.pointee = host.pool.gpa(b)
                        return NPA_OK
                    }
                },
                indicate_recv: { shell, _, frame in
                    Unmanaged<PluginHost>.fromOpaque(shell!)._withUnsafeGuaranteedRef { host in
                        let f = frame!.pointee
                        guard Int(f.buf_id) < host.pool.count, host.rxLent[Int(f.buf_id)] == 1 else {
                            host.pluginFaults &+= 1
                            return
                        }
                        // Over the call's max_frames: taken (the buffer is the guest's), counted.
                        if host.receivedCount >= host.receiveLimit { host.pluginFaults &+= 1 }
                        host.rxLent[Int(f.buf_id)] = 0
                        host.rxLentCount -= 1
                        let i = host.receivedCount
                        precondition(i < PluginHost.batchCapacity, "plugin indicated more frames than asked")
                        host.receivedIDs[i] = f.buf_id
                        host.receivedLengths[i] = f.length
                        host.receivedHashes[i] = f.rss_hash
                        host.receivedFlags[i] = f.flags
                        host.receivedCount = i + 1
                    }
                },
                complete_send: { shell, queue, count in
                    Unmanaged<PluginHost>.fromOpaque(shell!)._withUnsafeGuaranteedRef { host in
                        host.completeSend(queue: Int(queue), count: Int(count))
                    }
                },
                kick: { shell, _ in
                    Unmanaged<PluginHost>.fromOpaque(shell!)._withUnsafeGuaranteedRef { host in
                        host.kicks &+= 1
                        host.doorbell.signal()
                    }
                },
                log: { _, level, message in
                    if level <= NPA_LOG_WARNING, let message { print("plugin: \(String(cString: message))") }
                },
                time_ns: { _ in Clock.monotonicNanoseconds() },
                report_fault: { shell, reason in
                    Unmanaged<PluginHost>.fromOpaque(shell!)._withUnsafeGuaranteedRef { host in
                        if host.deviceFault == nil { host.deviceFault = reason.map { String(cString: $0) } ?? "unspecified" }
                    }
                }))
        services.pointee.shell = Unmanaged.passUnretained(self).toOpaque()
        state.pointee.abi_version = NPA_PLUGIN_ABI_VERSION
        state.pointee.num_tx_queues = UInt32(txRegions.count)
        state.pointee.num_rx_queues = UInt32(rxRegions.count)
        state.pointee.rx_buffer_size = UInt32(pool.bufferSize)
        withUnsafeMutablePointer(to: &state.pointee.tx_queues) {
            $0.withMemoryRebound(to: npa_queue_region.self, capacity: Int(NPA_PLUGIN_MAX_QUEUES)) { p in
                for (i, r) in txRegions.enumerated() { p[i] = r }
            }
        }
        withUnsafeMutablePointer(to: &state.pointee.rx_queues) {
            $0.withMemoryRebound(to: npa_queue_region.self, capacity: Int(NPA_PLUGIN_MAX_QUEUES)) { p in
                for (i, r) in rxRegions.enumerated() { p[i] = r }
            }
        }
        state.pointee.registers = registers
        state.pointee.registers_size = UInt64(registersSize)
        state.pointee.shell = UnsafePointer(services)
        state.pointee.private_area = privateArea
        let rc = ops.sw_init!(state)
        guard rc == NPA_OK else { throw LoadError(description: "plugin software init failed (\(rc))") }
        for rx in [false, true] {
            for r in queueRegions(rx: rx) where r.completion_offset != 0 {
                guard r.completion_offset & 15 == 0, UInt64(r.completion_offset) + UInt64(r.ring_size) * 16 <= UInt64(r.size) else {
                    throw LoadError(
                        description: "the plugin put a completion ring outside its queue region (offset \(r.completion_offset))")
                }
            }
        }
    }

    /// The queue regions as the plugin left them after its software init.
    private func queueRegions(rx: Bool) -> [npa_queue_region] {
        let count = Int(rx ? state.pointee.num_rx_queues : state.pointee.num_tx_queues)
        return withUnsafePointer(to: rx ? state.pointee.rx_queues : state.pointee.tx_queues) {
            $0.withMemoryRebound(to: npa_queue_region.self, capacity: Int(NPA_PLUGIN_MAX_QUEUES)) {
                Array(UnsafeBufferPointer(start: $0, count: count))
            }
        }
    }

    /// The queue regions for the host's PF driver: where each ring is, as the plugin reported
    /// it (the completion ring's GPA from the plugin's `completion_offset`, none if it has none).
    package func reportedRegions(rx: Bool) -> [ControlMessage.QueueRegion] {
        queueRegions(rx: rx).map {
            ControlMessage.QueueRegion(
                gpa: $0.gpa, ringSize: $0.ring_size, completionGPA: $0.completion_offset == 0 ? nil : $0.gpa + UInt64($0.completion_offset))
        }
    }

    /// In-order completion: the first `count` buffers handed to this queue are free again.
    func completeSend(queue: Int, count: Int) {
        for _ in 0..<count {
            guard let id = txFIFOs[queue].pop() else { break }
            pool.give(id)
        }
    }

    /// Takes back every RX buffer the plugin still holds (after the device is quiesced and the
    /// rings harvested); returns how many.
    package func reclaimPostedRxBuffers() -> Int {
        var n = 0
        for id in 0..<pool.count where rxLent[id] == 1 {
            rxLent[id] = 0
            pool.give(UInt32(id))
            n += 1
        }
        rxLentCount = 0
        return n
    }

    package var name: String { ops.name.map { String(cString: $0) } ?? "?" }
    package var version: String { ops.version.map { String(cString: $0) } ?? "?" }

    deinit {
        for f in txFIFOs { f.deallocate() }
        rxLent.deallocate()
        txLengths.deallocate()
        txOffloads.deallocate()
        receivedIDs.deallocate()
        receivedLengths.deallocate()
        receivedHashes.deallocate()
        receivedFlags.deallocate()
        state.deallocate()
        services.deallocate()
        privateArea.deallocate()
    }
}
