import CNPAPluginABI
import CQPlugin
import DRingPlugin
import Foundation
import NPAControlProtocol
import NPANICModel
import NPARingFormats
import NPAShell
import NPASystem

/// A guest driving a VF directly: its memory and buffer pool, the vendor plugin for the NIC's
/// model behind the shell's data path, and the PF driver's part (grant, MAC, queue addresses,
/// enable) done here. `bind(to:)` moves it to another VF with a fresh plugin instance, in its own
/// queue regions, the way a switch-in does. Touches only its own memory and the VF it is bound to.
package final class VFGuest {
    package let memory: SharedMemory
    package let pool: BufferPool
    package let nic: SoftNIC
    package let mac: MACAddress
    package let queues: Int
    package let ringSize: Int
    private let regionBytes: Int
    package private(set) var dataPath: ShellDataPath
    package private(set) var vf: Int
    /// 64 KiB of guest memory outside the buffer pool (at its end) for a test to build a frame
    /// larger than a buffer in, e.g. a TSO super-frame handed straight to the plugin.
    package let scratchGPA: UInt64
    package static let scratchBytes = 0x10000
    private var generation = 0
    package var postedRx: Int { queues * (ringSize - 1) }

    private let entry: npa_plugin_entry_fn
    /// The injected image `entry` is in, for a model whose plugin is not linked into the tests.
    private let image: PluginImage?

    package init(nic: SoftNIC, vf: Int, mac: MACAddress, queues: Int = 2, ringSize: Int = 256, entry: npa_plugin_entry_fn? = nil) throws {
        switch (entry, nic.model) {
        case (let entry?, _): (self.entry, image) = (entry, nil)
        case (nil, .dring): (self.entry, image) = (npa_dring_plugin_main, nil)
        case (nil, .cq): (self.entry, image) = (npa_cq_plugin_main, nil)
        case (nil, let model):
            let path = try PluginImages.directory().appendingPathComponent("\(model.pluginImages[0]).so").path
            let image = try PluginImage(adopting: PluginImages.memfd(holding: path))
            (self.entry, self.image) = (image.entry, image)
        }
        self.nic = nic
        self.mac = mac
        self.queues = queues
        self.ringSize = ringSize
        self.vf = vf
        memory = try SharedMemory(name: "vf-guest-\(vf)", size: 8 << 20)
        regionBytes = (ringSize * 36 + 4095) & ~4095
        let poolBase = 0x10000 + regionBytes * 4 * queues  // room for two generations of regions
        scratchGPA = UInt64(memory.size - Self.scratchBytes)
        pool = BufferPool(
            baseVA: memory.base + poolBase, baseGPA: UInt64(poolBase), bufferSize: 2048,
            count: (memory.size - Self.scratchBytes - poolBase) / 2048)
        dataPath = try Self.makeDataPath(
            nic: nic, vf: vf, memory: memory, pool: pool, queues: queues, ringSize: ringSize, regionBytes: regionBytes, firstRegion: 0,
            mac: mac,
            entry: self.entry)
    }

    private static func makeDataPath(
        nic: SoftNIC, vf: Int, memory: SharedMemory, pool: BufferPool, queues: Int, ringSize: Int, regionBytes: Int, firstRegion: Int,
        mac: MACAddress,
        entry: npa_plugin_entry_fn
    ) throws -> ShellDataPath {
        let base = memory.base
        func region(_ i: Int) -> npa_queue_region {
            let gpa = UInt64(0x10000 + regionBytes * (firstRegion + i))
            return npa_queue_region(
                va: base + Int(gpa), gpa: gpa, size: UInt32(regionBytes), ring_size: UInt32(ringSize), interrupt_vector: 0,
                completion_offset: 0)
        }
        let tx = (0..<queues).map { region($0) }
        let rx = (0..<queues).map { region(queues + $0) }
        let function = nic.vfs[vf]
        let interrupt = try EventNotifier()
        let plugin = try PluginHost(
            entry: entry, txRegions: tx, rxRegions: rx, registers: function.registers.base, registersSize: function.registers.size,
            pool: pool, ringSize: ringSize, doorbell: function.kick)
        let dataPath = ShellDataPath(plugin: plugin, interrupt: interrupt, ringSize: ringSize, spinPolls: 100)
        // The PF driver's part, from where the plugin says its rings are.
        func config(_ r: ControlMessage.QueueRegion) -> VirtualFunction.QueueConfig {
            .init(ringGPA: r.gpa, ringSize: r.ringSize, completionGPA: r.completionGPA)
        }
        nic.grant(vf: vf, memory: GuestMemory(base: memory.base, size: memory.size))
        nic.setMAC(vf: vf, mac)
        try nic.initializeQueues(
            vf: vf, tx: plugin.reportedRegions(rx: false).map(config), rx: plugin.reportedRegions(rx: true).map(config),
            interrupt: interrupt)
        dataPath.refillAll()
        nic.enable(vf: vf)
        return dataPath
    }

    /// Moves to `newVF`: the old VF must be quiesced and drained by the caller (the returned
    /// state is adopted here), then it is reset.
    package func bind(to newVF: Int, adopting drained: ShellDataPath.DrainedState) throws -> Bool {
        nic.reset(vf: vf)
        generation ^= 1
        vf = newVF
        dataPath = try Self.makeDataPath(
            nic: nic, vf: newVF, memory: memory, pool: pool, queues: queues, ringSize: ringSize, regionBytes: regionBytes,
            firstRegion: generation * 2 * queues, mac: mac, entry: entry)
        return dataPath.adopt(drained)
    }

    package func send(_ frames: [[UInt8]], queue: Int = 0) -> Int { dataPath.send(frames, queue: queue) }

    package func receive(count: Int, timeoutMilliseconds: Int = 20_000) -> [[UInt8]] {
        var frames: [[UInt8]] = []
        let deadline = ContinuousClock.now + .milliseconds(timeoutMilliseconds)
        while frames.count < count && ContinuousClock.now < deadline {
            frames += dataPath.receive(maxFrames: count - frames.count, timeoutMilliseconds: 200)
        }
        return frames
    }
}
