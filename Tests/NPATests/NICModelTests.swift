import CNPAPluginABI
import CQPlugin
import DRingPlugin
import Foundation
import NPAControlProtocol
import NPANICModel
import NPARingFormats
import NPAShell
import NPASystem
import NPAWorkload
import Testing

/// A guest driving a VF directly: its memory, the vendor plugin for the NIC's model behind the
/// shell's data path, and the PF driver's part (grant, MAC, queue addresses, enable) done here.
final class VFGuest {
    let memory: SharedMemory
    let dataPath: ShellDataPath
    let mac: MACAddress
    let vf: Int
    let postedRx: Int

    init(nic: SoftNIC, vf: Int, mac: MACAddress, queues: Int = 2, ringSize: Int = 256) throws {
        self.vf = vf
        self.mac = mac
        memory = try SharedMemory(name: "vf-guest-\(vf)", size: 8 << 20)
        let regionBytes = (ringSize * 36 + 4095) & ~4095
        let base = memory.base
        func region(_ i: Int) -> npa_queue_region {
            let gpa = UInt64(0x10000 + regionBytes * i)
            return npa_queue_region(va: base + Int(gpa), gpa: gpa, size: UInt32(regionBytes), ring_size: UInt32(ringSize), interrupt_vector: 0, reserved: 0)
        }
        let tx = (0..<queues).map { region($0) }
        let rx = (0..<queues).map { region(queues + $0) }
        let poolBase = 0x10000 + regionBytes * 2 * queues
        let pool = BufferPool(baseVA: base + poolBase, baseGPA: UInt64(poolBase), bufferSize: 2048, count: (memory.size - poolBase) / 2048)
        let entry: npa_plugin_entry_fn = nic.model == .dring ? npa_dring_plugin_main : npa_cq_plugin_main
        let function = nic.vfs[vf]
        let interrupt = try EventNotifier()
        let plugin = try PluginHost(
            entry: entry, txRegions: tx, rxRegions: rx, registers: function.registers.base, registersSize: function.registers.size,
            pool: pool, ringSize: ringSize, doorbell: function.kick)
        dataPath = ShellDataPath(plugin: plugin, interrupt: interrupt, ringSize: ringSize, spinPolls: 100)
        // The PF driver's part: grant, MAC, queues from the shell's GPAs, then enable.
        func config(_ r: npa_queue_region) -> VirtualFunction.QueueConfig {
            .init(ringGPA: r.gpa, ringSize: r.ring_size, completionGPA: r.gpa + UInt64(r.ring_size) * 16)
        }
        nic.grant(vf: vf, memory: GuestMemory(base: memory.base, size: memory.size))
        nic.setMAC(vf: vf, mac)
        try nic.initializeQueues(vf: vf, tx: tx.map(config), rx: rx.map(config), interrupt: interrupt)
        dataPath.refillAll()
        postedRx = queues * (ringSize - 1)
        nic.enable(vf: vf)
    }

    func send(_ frames: [[UInt8]], queue: Int = 0) -> Int { dataPath.send(frames, queue: queue) }

    func receive(count: Int, timeoutMilliseconds: Int = 20_000) -> [[UInt8]] {
        var frames: [[UInt8]] = []
        let deadline = ContinuousClock.now + .milliseconds(timeoutMilliseconds)
        while frames.count < count && ContinuousClock.now < deadline {
            frames += dataPath.receive(maxFrames: count - frames.count, timeoutMilliseconds: 200)
        }
        return frames
    }
}

@Suite(.serialized) struct NICModelTests {
    @Test(arguments: SoftNIC.Model.allCases)
    func vfToVFTrafficIsSwitchedByTheNICExactlyOnceInOrder(_ model: SoftNIC.Model) throws {
        let nic = try SoftNIC(name: "t0", model: model, vfCount: 8)
        nic.start()
        defer { nic.stop() }
        let a = try VFGuest(nic: nic, vf: 0, mac: MACAddress("02:00:00:00:10:01")!)
        let b = try VFGuest(nic: nic, vf: 3, mac: MACAddress("02:00:00:00:10:02")!)
        let flows = 4, perFlow = 500
        var verifier = FlowVerifier(total: flows * perFlow, flows: flows)
        var queuesSeen = Set<Int>()
        for round in 0..<(perFlow / 25) {
            for flow in 0..<flows {
                var sent = 0
                while sent < 25 {
                    sent += a.dataPath.transmit(queue: flow % 2, count: 25 - sent) { i, buffer in
                        TrafficFrame.write(into: buffer, destination: b.mac, source: a.mac, flow: UInt32(flow),
                                           sequence: UInt64(round * 25 + sent + i), length: 64 + flow * 300)
                    }
                    if sent < 25 { _ = a.dataPath.waitForTransmitSpace(queue: flow % 2, timeoutMilliseconds: 100) }
                }
            }
            let deadline = ContinuousClock.now + .seconds(20)
            while verifier.unique < (round + 1) * flows * 25 && ContinuousClock.now < deadline {
                b.dataPath.receive(maxFrames: 256, timeoutMilliseconds: 200) { frame in
                    queuesSeen.insert(frame.queue)
                    verifier.record(frame.bytes)
                }
            }
            if verifier.unique < (round + 1) * flows * 25 { break }  // fail fast; the expectations below say what is missing
        }
        #expect(verifier.unique == flows * perFlow)
        #expect(verifier.duplicates == 0)
        #expect(verifier.outOfOrder == 0)
        #expect(verifier.invalid == 0)
        #expect(queuesSeen == [0, 1])
        #expect(a.dataPath.flush(timeoutMilliseconds: 10_000))
        // Pool accounting: only the posted RX buffers are lent out, nothing leaked.
        #expect(a.dataPath.plugin.pool.outstanding == a.postedRx)
        #expect(b.dataPath.plugin.pool.outstanding == b.postedRx)
        #expect(nic.counters(vf: 0).txFrames == UInt64(flows * perFlow))
        #expect(nic.counters(vf: 3).rxFrames == UInt64(flows * perFlow))
    }

    @Test(arguments: SoftNIC.Model.allCases)
    func theNICDropsSpoofedSourcesAndForeignVLANs(_ model: SoftNIC.Model) throws {
        let nic = try SoftNIC(name: "t1", model: model, vfCount: 4)
        nic.start()
        defer { nic.stop() }
        let a = try VFGuest(nic: nic, vf: 0, mac: MACAddress("02:00:00:00:20:01")!)
        let b = try VFGuest(nic: nic, vf: 1, mac: MACAddress("02:00:00:00:20:02")!)
        nic.setVLANs(vf: 0, [7])
        nic.setVLANs(vf: 1, [7])
        let spoofed = ethernetFrame(to: b.mac, from: MACAddress("02:66:00:00:00:01")!)
        let foreignVLAN = ethernetFrame(to: b.mac, from: a.mac, vlan: 9)
        let good = ethernetFrame(to: b.mac, from: a.mac, vlan: 7)
        #expect(a.send([spoofed, foreignVLAN, good]) == 3)
        #expect(b.receive(count: 1) == [good])
        #expect(a.dataPath.flush(timeoutMilliseconds: 10_000))
        let c = nic.counters(vf: 0)
        #expect(c.spoofedDrops == 1)
        #expect(c.vlanDrops == 1)
        #expect(c.txFrames == 1)
        #expect(nic.counters(vf: 1).rxFrames == 1)
    }

    @Test(arguments: SoftNIC.Model.allCases)
    func dmaOutsideTheGrantIsRefusedAndCounted(_ model: SoftNIC.Model) throws {
        let nic = try SoftNIC(name: "t2", model: model, vfCount: 2)
        nic.start()
        defer { nic.stop() }
        let a = try VFGuest(nic: nic, vf: 0, mac: MACAddress("02:00:00:00:30:01")!)
        let b = try VFGuest(nic: nic, vf: 1, mac: MACAddress("02:00:00:00:30:02")!)
        // A plugin (or a guest scribbling on its ring) names memory the VF was never granted.
        var frames = [npa_tx_frame(gpa: UInt64(a.memory.size) + 4096, buf_id: 0, length: 100, vlan_tci: 0, flags: 0, reserved: 0)]
        let p = a.dataPath.plugin
        #expect(p.ops.add_tx_frames!(p.state, 0, &frames, 1, NPA_TX_FLAG_LAST_HINT) == 1)
        let good = ethernetFrame(to: b.mac, from: a.mac)
        #expect(a.send([good]) == 1)
        #expect(b.receive(count: 1) == [good])
        #expect(nic.counters(vf: 0).dmaFaults == 1)
    }

    @Test(arguments: SoftNIC.Model.allCases)
    func aFunctionLevelResetStopsAllDMAToTheVF(_ model: SoftNIC.Model) throws {
        let nic = try SoftNIC(name: "t3", model: model, vfCount: 2)
        nic.start()
        defer { nic.stop() }
        let a = try VFGuest(nic: nic, vf: 0, mac: MACAddress("02:00:00:00:40:01")!)
        let b = try VFGuest(nic: nic, vf: 1, mac: MACAddress("02:00:00:00:40:02")!)
        let f = ethernetFrame(to: b.mac, from: a.mac)
        #expect(a.send([f]) == 1)
        #expect(b.receive(count: 1) == [f])
        nic.reset(vf: 1)
        let before = nic.uplinkFrames
        #expect(a.send([f, f]) == 2)
        #expect(a.dataPath.flush(timeoutMilliseconds: 10_000))
        // The NIC no longer knows b's MAC: the frames leave by the uplink; b's memory is untouched.
        #expect(nic.uplinkFrames == before + 2)
        #expect(nic.counters(vf: 1).rxFrames == 1)
        #expect(b.dataPath.receive(maxFrames: 10, timeoutMilliseconds: 0).isEmpty)
    }

    @Test func pluginImagesAreFreestanding() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("npa-plugins-\(getpid())")
        let build = Process()
        build.executableURL = URL(fileURLWithPath: "/bin/bash")
        build.arguments = [root.appendingPathComponent("scripts/build-plugins.sh").path, out.path]
        try build.run()
        build.waitUntilExit()
        #expect(build.terminationStatus == 0)
        for model in SoftNIC.Model.allCases {
            let image = out.appendingPathComponent("\(model.rawValue).so").path
            let nm = Process()
            let pipe = Pipe()
            nm.executableURL = URL(fileURLWithPath: "/usr/bin/nm")
            nm.arguments = ["-D", "--undefined-only", image]
            nm.standardOutput = pipe
            try nm.run()
            let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            nm.waitUntilExit()
            #expect(nm.terminationStatus == 0)
            let undefined = text.split(separator: "\n").compactMap { $0.split(separator: " ").last.map(String.init) }
            #expect(Set(undefined).isSubset(of: ["memset", "memcpy", "memmove"]), "\(image): \(undefined)")
            let size = (try FileManager.default.attributesOfItem(atPath: image)[.size] as? Int) ?? 0
            #expect(size > 0 && size < 64 * 1024)
        }
        try? FileManager.default.removeItem(at: out)
    }
}
