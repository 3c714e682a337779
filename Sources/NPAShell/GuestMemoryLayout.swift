import CNPAPluginABI

/// Where the shell keeps everything in guest memory, by GPA (docs/architecture.md, "Guest
/// memory layout"): DriverShared, the queue descriptor table, the multicast table, one region
/// per queue for the emulation plugin and another for a VF plugin, then the buffer pool.
///
/// Pure arithmetic over a configuration: it touches no memory. Its regions and pool carry
/// virtual addresses only when given the mapping's base.
package struct GuestMemoryLayout {
    /// GPA 0 stays unused: a zero DriverShared address means "not set" to the device.
    package static let driverSharedGPA: UInt64 = 0x1000
    /// TX queues, then RX queues, 256 bytes each.
    package static let queueTableGPA: UInt64 = 0x2000
    /// Up to 256 six-byte MACs.
    package static let multicastTableGPA: UInt64 = 0x3000
    package static let queueRegionsGPA = 0x4000

    package let txQueues: Int
    package let rxQueues: Int
    package let ringSize: Int
    /// Bytes of one queue region (page-aligned), carved by its plugin.
    package let regionBytes: Int
    package let poolGPA: Int
    package let bufferSize: Int
    package let bufferCount: Int

    /// Lays out `configuration` in its memory size; throws if the pool cannot hold the buffers
    /// the rings need.
    package init(_ c: VirtualNIC.Configuration) throws {
        txQueues = c.txQueues
        rxQueues = c.rxQueues
        ringSize = c.ringSize
        bufferSize = c.bufferSize
        regionBytes = (EmulationPlugin.regionBytes(ringSize: c.ringSize) + 4095) & ~4095
        // Two sets of queue regions: the emulation plugin's, and the VF plugin's after a switch-in.
        poolGPA = Self.queueRegionsGPA + regionBytes * 2 * (c.txQueues + c.rxQueues)
        bufferCount = min(65536, (c.memoryBytes - poolGPA) / c.bufferSize)
        let needed = c.rxQueues * c.ringSize + c.txQueues * c.ringSize
        guard c.memoryBytes >= 1 << 20, bufferCount >= needed else {
            throw VirtualNIC.AttachError.invalidConfiguration(
                "\(c.memoryBytes) bytes of guest memory hold \(max(0, bufferCount)) buffers; the rings need \(needed)"
                    + " (at least \(Self.minimumMiB(for: c, buffers: needed)) MiB: more memory, fewer queues or smaller rings)")
        }
    }

    /// The least memory, in MiB, that holds `buffers` buffers after the queue regions.
    static func minimumMiB(for c: VirtualNIC.Configuration, buffers: Int) -> Int {
        let regionBytes = (EmulationPlugin.regionBytes(ringSize: c.ringSize) + 4095) & ~4095
        let bytes = queueRegionsGPA + regionBytes * 2 * (c.txQueues + c.rxQueues) + buffers * c.bufferSize
        return max(1, (bytes + (1 << 20) - 1) >> 20)
    }

    /// The queue regions the emulation plugin carves (and the device is told of in the queue
    /// table), with their addresses in the mapping at `base`.
    package func emulationRegions(base: UnsafeMutableRawPointer) -> (tx: [npa_queue_region], rx: [npa_queue_region]) {
        regions(firstIndex: 0, base: base)
    }

    /// The queue regions a VF plugin carves (the PF driver initialises the VF's queues from them).
    package func vfRegions(base: UnsafeMutableRawPointer) -> (tx: [npa_queue_region], rx: [npa_queue_region]) {
        regions(firstIndex: txQueues + rxQueues, base: base)
    }

    private func regions(firstIndex: Int, base: UnsafeMutableRawPointer) -> (tx: [npa_queue_region], rx: [npa_queue_region]) {
        func region(_ i: Int) -> npa_queue_region {
            let gpa = UInt64(Self.queueRegionsGPA + regionBytes * (firstIndex + i))
            return npa_queue_region(
                va: base + Int(gpa), gpa: gpa, size: UInt32(regionBytes), ring_size: UInt32(ringSize), interrupt_vector: 0,
                completion_offset: 0)
        }
        return ((0..<txQueues).map { region($0) }, (0..<rxQueues).map { region(txQueues + $0) })
    }

    /// The buffer pool over the mapping at `base`.
    func bufferPool(base: UnsafeMutableRawPointer) -> BufferPool {
        BufferPool(baseVA: base + poolGPA, baseGPA: UInt64(poolGPA), bufferSize: bufferSize, count: bufferCount)
    }
}
