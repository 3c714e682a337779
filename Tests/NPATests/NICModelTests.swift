import CNPAPluginABI
import CQPlugin
import DRingPlugin
import Foundation
import NPAControlProtocol
import NPANICModel
import NPARingFormats
import NPAShell
import NPASystem
import NPATestSupport
import NPAWorkload
import SystemPackage
import Testing

@Suite(.serialized) struct NICModelTests {
    @Test(arguments: NICModelRegistry.models)
    func vfToVFTrafficIsSwitchedByTheNICExactlyOnceInOrder(_ model: NICModel) throws {
        let nic = try SoftNIC(name: "t0", model: model, vfCount: 8)
        nic.start()
        defer { nic.stop() }
        let a = try VFGuest(nic: nic, vf: 0, mac: MACAddress("02:00:00:00:10:01")!)
        let b = try VFGuest(nic: nic, vf: 3, mac: MACAddress("02:00:00:00:10:02")!)
        let flows = 4, perFlow = 500
        var verifier = FlowVerifier()
        var queuesSeen = Set<Int>()
        for round in 0..<(perFlow / 25) {
            for flow in 0..<flows {
                var sent = 0
                while sent < 25 {
                    sent += a.dataPath.transmit(queue: flow % 2, count: 25 - sent) { i, buffer in
                        TrafficFrame.write(
                            into: buffer, destination: b.mac, source: a.mac, flow: UInt32(flow),
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
        #expect(a.pool.outstanding == a.postedRx)
        #expect(b.pool.outstanding == b.postedRx)
        #expect(nic.counters(vf: 0).txFrames == UInt64(flows * perFlow))
        #expect(nic.counters(vf: 3).rxFrames == UInt64(flows * perFlow))
    }

    @Test(arguments: NICModelRegistry.models)
    func theNICDropsSpoofedSourcesAndForeignVLANs(_ model: NICModel) throws {
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

    @Test(arguments: NICModelRegistry.models)
    func dmaOutsideTheGrantIsRefusedAndCounted(_ model: NICModel) throws {
        let nic = try SoftNIC(name: "t2", model: model, vfCount: 2)
        nic.start()
        defer { nic.stop() }
        let a = try VFGuest(nic: nic, vf: 0, mac: MACAddress("02:00:00:00:30:01")!)
        let b = try VFGuest(nic: nic, vf: 1, mac: MACAddress("02:00:00:00:30:02")!)
        // A plugin (or a guest scribbling on its ring) names memory the VF was never granted.
        var frames = [
            npa_tx_frame(
                gpa: UInt64(a.memory.size) + 4096, buf_id: 0, length: 100, vlan_tci: 0, flags: 0, offload_header_length: 0,
                offload_mss_or_csum: 0)
        ]
        let p = a.dataPath.plugin
        #expect(p.ops.add_tx_frames!(p.state, 0, &frames, 1, NPA_TX_FLAG_LAST_HINT) == 1)
        let good = ethernetFrame(to: b.mac, from: a.mac)
        #expect(a.send([good]) == 1)
        #expect(b.receive(count: 1) == [good])
        #expect(nic.counters(vf: 0).dmaFaults == 1)
    }

    @Test(arguments: NICModelRegistry.models)
    func aFunctionLevelResetStopsAllDMAToTheVF(_ model: NICModel) throws {
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
        #expect(nic.counters(vf: 1).rxFrames == 0)  // FLR restarts the counters; nothing new arrived
        #expect(b.dataPath.receive(maxFrames: 10, timeoutMilliseconds: 0).isEmpty)
    }

    @Test func pluginImagesAreFreestanding() throws {
        let out = try PluginImages.directory()
        for name in ["npa-dring", "npa-cq", "npa-cq-swift"] {
            let image = out.appendingPathComponent("\(name).so").path
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
    }

    /// The injection path: the image arrives as a memfd, the shell maps it from the descriptor
    /// and drives a VF with it (nothing is installed in the guest).
    @Test(arguments: NICModelRegistry.models)
    func anInjectedImageLoadsFromAMemfdAndDrivesItsVF(_ model: NICModel) throws {
        let out = try PluginImages.directory()
        let image = try PluginImage(adopting: PluginImages.memfd(holding: out.appendingPathComponent("\(model.name).so").path))
        #expect(image.name == model.name)
        #expect(image.version == "1.0")
        let nic = try SoftNIC(name: "t5", model: model, vfCount: 2)
        nic.start()
        defer { nic.stop() }
        let a = try VFGuest(nic: nic, vf: 0, mac: MACAddress("02:00:00:00:60:01")!, entry: image.entry)
        let b = try VFGuest(nic: nic, vf: 1, mac: MACAddress("02:00:00:00:60:02")!, entry: image.entry)
        let frames = (0..<100).map { ethernetFrame(to: b.mac, from: a.mac, payload: [UInt8($0)] + Array(repeating: 0, count: 60)) }
        var sent = 0
        while sent < frames.count { sent += a.send(Array(frames[sent...])) }
        #expect(b.receive(count: 100) == frames)
        _ = image  // keeps the image mapped while its code runs
    }

    /// The npa-cq plugin written in Embedded Swift, injected as a memfd, talks to a guest whose
    /// VF is driven by the C plugin for the same model: two independent implementations of one
    /// datasheet agree frame for frame.
    @Test func theEmbeddedSwiftPluginDrivesACQVF() throws {
        let out = try PluginImages.directory()
        let image = try PluginImage(adopting: PluginImages.memfd(holding: out.appendingPathComponent("npa-cq-swift.so").path))
        #expect(image.name == "npa-cq-swift")
        let nic = try SoftNIC(name: "t6", model: .cq, vfCount: 2)
        nic.start()
        defer { nic.stop() }
        let swiftGuest = try VFGuest(nic: nic, vf: 0, mac: MACAddress("02:00:00:00:70:01")!, entry: image.entry)
        let cGuest = try VFGuest(nic: nic, vf: 1, mac: MACAddress("02:00:00:00:70:02")!)
        for (from, to) in [(swiftGuest, cGuest), (cGuest, swiftGuest)] {
            let frames = (0..<600).map {
                ethernetFrame(to: to.mac, from: from.mac, payload: [UInt8($0 & 0xFF), UInt8($0 >> 8)] + Array(repeating: 0, count: 60))
            }
            // In chunks the receiver's single flow queue (255 buffers) always has room for.
            var received: [[UInt8]] = []
            for chunk in stride(from: 0, to: frames.count, by: 50) {
                let part = Array(frames[chunk..<min(chunk + 50, frames.count)])
                var sent = 0
                while sent < part.count { sent += from.send(Array(part[sent...])) }
                received += to.receive(count: part.count)
            }
            let firstMismatch = zip(received, frames).enumerated().first { $0.element.0 != $0.element.1 }?.offset
            #expect(
                received.count == frames.count && firstMismatch == nil,
                "\(from === swiftGuest ? "swift→C" : "C→swift"): \(received.count) received, first mismatch at \(firstMismatch.map(String.init) ?? "-")"
            )
            #expect(from.dataPath.flush(timeoutMilliseconds: 10_000))
        }
        #expect(swiftGuest.pool.outstanding == swiftGuest.postedRx)
        #expect(nic.counters(vf: 0).noBufferDrops == 0 && nic.counters(vf: 1).noBufferDrops == 0)
        _ = image
    }

    @Test func aCorruptImageIsRefusedWithAReason() throws {
        let junk = try SharedMemory(name: "junk-image", size: 4096)
        for i in 0..<4096 { junk.base.storeBytes(of: UInt8(truncatingIfNeeded: i &* 31), toByteOffset: i, as: UInt8.self) }
        #expect {
            _ = try PluginImage(adopting: junk.fd.duplicate())
        } throws: { "\($0)".hasPrefix("plugin image does not load:") }
    }

    /// The shell's half of switching: the sender and the receiver move between VFs (new plugin
    /// instance, new rings) 20 times while frames are in flight both in TX rings and in RX rings.
    /// Every frame is received exactly once, in order; every buffer comes back.
    @Test(arguments: NICModelRegistry.models)
    func movingBetweenVFsUnderLoadLosesNothing(_ model: NICModel) throws {
        let nic = try SoftNIC(name: "t4", model: model, vfCount: 4)
        nic.start()
        defer { nic.stop() }
        let a = try VFGuest(nic: nic, vf: 0, mac: MACAddress("02:00:00:00:50:01")!)
        // The receiver's rings hold more than the sender can have in flight, so a lagging
        // engine thread (CI shares two cores) cannot make it drop for lack of buffers.
        let b = try VFGuest(nic: nic, vf: 1, mac: MACAddress("02:00:00:00:50:02")!, ringSize: 1024)
        let flows = 2, switches = 20, perSwitch = 300
        let total = switches * perSwitch
        var verifier = FlowVerifier()
        var sequences = [UInt64](repeating: 0, count: flows)
        var unsentAtSwitches = 0, harvestedAtSwitches = 0
        for round in 0..<switches {
            // perSwitch frames, alternating flows in bursts of 10 (each flow on its own TX queue).
            for burst in 0..<(perSwitch / 10) {
                let flow = burst % flows
                var sent = 0
                while sent < 10 {
                    let first = sequences[flow]
                    let n = a.dataPath.transmit(queue: flow, count: 10 - sent) { i, buffer in
                        TrafficFrame.write(
                            into: buffer, destination: b.mac, source: a.mac, flow: UInt32(flow), sequence: first + UInt64(i), length: 128)
                    }
                    sequences[flow] += UInt64(n)
                    sent += n
                    // The receiver takes about what arrives but lags, so frames sit in its RX rings.
                    b.dataPath.receive(maxFrames: 12, timeoutMilliseconds: 0) { verifier.record($0.bytes) }
                    if n == 0 { _ = a.dataPath.waitForTransmitSpace(queue: flow, timeoutMilliseconds: 100) }
                }
            }
            // Switch both: quiesce the sender, then the receiver (so nothing is in the air to a
            // stopped VF); drain; move to the other VF pair; the receiver first, so its MAC is live.
            nic.quiesce(vf: a.vf)
            nic.quiesce(vf: b.vf)
            let drainedA = a.dataPath.quiesceAndDrain()
            let drainedB = b.dataPath.quiesceAndDrain()
            unsentAtSwitches += drainedA.unsent.reduce(0) { $0 + $1.count }
            harvestedAtSwitches += drainedB.received.count
            #expect(drainedB.reclaimedRxBuffers > 0)
            #expect(try b.bind(to: round % 2 == 0 ? 3 : 1, adopting: drainedB))
            #expect(try a.bind(to: round % 2 == 0 ? 2 : 0, adopting: drainedA))
        }
        let deadline = ContinuousClock.now + .seconds(30)
        while verifier.unique < total && ContinuousClock.now < deadline {
            b.dataPath.receive(maxFrames: 256, timeoutMilliseconds: 200) { verifier.record($0.bytes) }
        }
        let noBuffers = (0..<4).reduce(UInt64(0)) { $0 + nic.counters(vf: $1).noBufferDrops }
        #expect(noBuffers == 0, "a: \(a.pool.freeCount) free of \(a.pool.count); b: \(b.pool.freeCount) free")
        #expect(verifier.unique == total)
        #expect(verifier.duplicates == 0)
        #expect(verifier.outOfOrder == 0)
        #expect(verifier.invalid == 0)
        #expect(harvestedAtSwitches > 0)  // the test really switched with frames in the RX rings
        #expect(a.dataPath.flush(timeoutMilliseconds: 10_000))
        #expect(a.pool.outstanding == a.postedRx)
        #expect(b.pool.outstanding == b.postedRx)
        #expect(a.dataPath.plugin.pluginFaults == 0 && b.dataPath.plugin.pluginFaults == 0)
        _ = unsentAtSwitches
    }

    /// A VF mid switch-in — queues programmed, rx filters set, enabled, but the guest's MAC not
    /// moved to it yet (ACTIVATE_VF) — takes no flood: until then the vswitch's copy reaches the
    /// guest, and a copy in the VF's ring as well would be a duplicate, or, for the guest's own
    /// self-announcement, counted as a drop against it while its rings are still empty (a
    /// migration test's `vf_no_buffers`). A VF carrying a MAC still takes each flood once.
    @Test(arguments: NICModelRegistry.models)
    func aVFWithoutItsMACYetTakesNoFlood(_ model: NICModel) throws {
        let nic = try SoftNIC(name: "t5", model: model, vfCount: 2)
        let carrying = try VFGuest(nic: nic, vf: 0, mac: MACAddress("02:00:00:00:50:01")!)
        let switchingIn = try VFGuest(nic: nic, vf: 1, mac: MACAddress("02:00:00:00:50:02")!)
        nic.setMAC(vf: 1, .zero)
        nic.setPFEnabled(true)
        let announcement = ethernetFrame(to: MACAddress("ff:ff:ff:ff:ff:ff")!, from: switchingIn.mac)
        let broadcast = ethernetFrame(to: MACAddress("ff:ff:ff:ff:ff:ff")!, from: MACAddress("02:00:00:00:50:99")!)
        for frame in [announcement, broadcast] {
            let bytes = ContiguousArray(frame)
            let fromPF = bytes.withUnsafeBytes { b in nic.transmitFromPF(count: 1) { _ in (b.baseAddress!, b.count) } }
            let fromWire = bytes.withUnsafeBytes { b in nic.receiveFromWire(count: 1) { _ in (b.baseAddress!, b.count) } }
            #expect(fromPF == 1 && fromWire == 1)
        }
        #expect(nic.counters(vf: 1).rxFrames == 0 && nic.counters(vf: 1).noBufferDrops == 0)
        #expect(nic.counters(vf: 0).rxFrames == 4 && nic.counters(vf: 0).noBufferDrops == 0)
        #expect(carrying.receive(count: 4).count == 4)
        #expect(switchingIn.dataPath.receive(maxFrames: 8, timeoutMilliseconds: 0).isEmpty)
    }
}
