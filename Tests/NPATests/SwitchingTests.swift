import Foundation
import NPAAdmin
import NPAControlProtocol
import NPAHost
import NPAPluginBundle
import NPANICModel
import NPARingFormats
import NPAShell
import NPASystem
import NPATestSupport
import NPAWorkload
import Testing

/// Switching end to end: the host's PF driver, the injected plugin, the shell's drain/adopt.
/// Guest `b` switches in and out repeatedly while `a` (emulated) and `b` stream to each other.
@Suite(.serialized) struct SwitchingTests {
    @Test(arguments: NICModelRegistry.names)
    func aGuestSwitchesInAndOutUnderBidirectionalLoadLosingNothing(_ model: String) throws {
        let fixture = try PassthroughFixture(
            model: model, a: GuestSpec("a", mac: "02:00:00:00:90:01", ringSize: 1024, memoryMiB: 32),
            b: GuestSpec("b", mac: "02:00:00:00:90:02", ringSize: 1024, memoryMiB: 32), switchIn: (false, false))
        defer { fixture.stop() }
        let (host, a, b) = (fixture.host, fixture.a, fixture.b)
        let switches = 40, perPhase = 80, flows = 2  // 40 frames per send call: 20 per flow
        let total = switches * perPhase
        var atB = FlowVerifier()
        var atA = FlowVerifier()
        var seqA = [UInt64](repeating: 0, count: flows), seqB = [UInt64](repeating: 0, count: flows)
        func send(_ from: VirtualNIC, _ to: VirtualNIC, _ seq: inout [UInt64], count: Int) {
            var sent = 0
            while sent < count {
                let flow = sent / 10 % flows
                let first = seq[flow]
                let n = from.transmit(queue: flow, count: min(10, count - sent, 10 - sent % 10)) { i, buffer in
                    TrafficFrame.write(
                        into: buffer, destination: to.mac, source: from.mac, flow: UInt32(flow), sequence: first + UInt64(i), length: 200)
                }
                seq[flow] += UInt64(n)
                sent += n
                a.receive(maxFrames: 64, timeoutMilliseconds: 0) { atA.record($0.bytes) }
                b.receive(maxFrames: 64, timeoutMilliseconds: 0) { atB.record($0.bytes) }
                if n == 0 { _ = from.waitForTransmitSpace(queue: flow, timeoutMilliseconds: 10) }
            }
        }
        for round in 0..<switches {
            send(a, b, &seqA, count: perPhase / 2)
            send(b, a, &seqB, count: perPhase / 2)
            // Switch with frames in flight both ways.
            try host.admin.switchVNIC(name: b.name, toPassthrough: round % 2 == 0)
            send(a, b, &seqA, count: perPhase / 2)
            send(b, a, &seqB, count: perPhase / 2)
            #expect(b.mode == (round % 2 == 0 ? "passthrough" : "emulated"), "round \(round): \(b.lastSwitchError ?? "")")
        }
        let deadline = ContinuousClock.now + .seconds(30)
        while (atA.unique < total || atB.unique < total) && ContinuousClock.now < deadline {
            a.receive(maxFrames: 256, timeoutMilliseconds: 20) { atA.record($0.bytes) }
            b.receive(maxFrames: 256, timeoutMilliseconds: 20) { atB.record($0.bytes) }
        }
        for (name, v) in [("at a", atA), ("at b", atB)] {
            #expect(v.unique == total, "\(name)")
            #expect(v.duplicates == 0, "\(name)")
            #expect(v.outOfOrder == 0, "\(name)")
            #expect(v.invalid == 0, "\(name)")
        }
        #expect(b.switchDurations.count == switches)
        #expect(b.switchLog.contains { $0.contains("ACTIVATE_VF done") })
        #expect(b.switchLog.contains { $0.contains("VF quiesced, MAC back on the vswitch") })
        #expect(b.flush(timeoutMilliseconds: 10_000))
        // Pool accounting: only the posted RX buffers of the active path are lent out.
        #expect(b.buffersOutstanding == 2 * 1023)
        let status = try host.admin.status()
        #expect(status.vnics.first { $0.name == "b" }?.mode == "emulated")
    }

    @Test func passthroughRefusedByPolicyLeavesTheGuestOnEmulation() throws {
        let host = try TestHost(
            configuration: .withNIC(model: "npa-dring", vfs: 2, policies: ["locked": GuestPolicy(allowPassthrough: false)]))
        defer { host.stop() }
        let g = try attach(host, "locked")
        #expect {
            try host.admin.switchVNIC(name: g.name, toPassthrough: true)
        } throws: { ($0 as? AdminClient.Failure)?.description == "passthrough is not allowed for guest 'locked' by host policy" }
        #expect(g.mode == "emulated")
    }
}

@Suite(.serialized) struct PassthroughTests {
    /// Guests a and b on a NIC of `model`, both switched in.
    func switchedIn(model: String = "npa-dring", macs: (String, String), policies: [String: GuestPolicy] = [:]) throws -> PassthroughFixture
    {
        let fixture = try PassthroughFixture(model: model, a: GuestSpec("a", mac: macs.0), b: GuestSpec("b", mac: macs.1)) {
            $0.guestPolicies = policies
        }
        for nic in [fixture.a, fixture.b] { #expect(nic.mode == "passthrough", "\(nic.lastSwitchError ?? "")") }
        return fixture
    }

    /// In passthrough the frames cross no host thread: device emulation's counters stay flat
    /// while the VF counters rise, and the NIC switches VF to VF.
    @Test(arguments: NICModelRegistry.names)
    func passthroughTrafficBypassesTheHost(_ model: String) throws {
        let fixture = try switchedIn(model: model, macs: ("02:00:00:00:a0:01", "02:00:00:00:a0:02"))
        defer { fixture.stop() }
        let (host, a, b) = (fixture.host, fixture.a, fixture.b)
        let before = try a.deviceCounters()
        let frames = (0..<200).map { ethernetFrame(to: b.mac, from: a.mac, payload: [UInt8($0)] + Array(repeating: 0, count: 100)) }
        var got: [[UInt8]] = []
        for chunk in stride(from: 0, to: 200, by: 50) {
            var sent = 0
            while sent < 50 { sent += a.send(Array(frames[(chunk + sent)..<(chunk + 50)])) }
            got += receiveFrames(b, count: 50)
        }
        #expect(got == frames)
        let after = try a.deviceCounters()
        #expect(after["tx_frames"] == before["tx_frames"])
        #expect(try b.deviceCounters()["rx_frames"] == 0)
        let status = try host.admin.status()
        let sa = status.vnics.first { $0.name == "a" }, sb = status.vnics.first { $0.name == "b" }
        #expect(sa?.mode == "passthrough")
        #expect(sa?.plugin == (model == "npa-cq" ? "npa-cq-swift 1.0" : "npa-dring 1.0"))
        #expect(sa?.counters["vf_tx_frames"] == 200)
        #expect(sb?.counters["vf_rx_frames"] == 200)
        // Bytes too, so `npa status` shows a passthrough vNIC's MB (it read the emulated ones).
        let bytes = UInt64(frames.reduce(0) { $0 + $1.count })
        #expect(
            sa?.counters["vf_tx_bytes"] == bytes && sb?.counters["vf_rx_bytes"] == bytes,
            "\(sa?.counters["vf_tx_bytes"] ?? 0) \(sb?.counters["vf_rx_bytes"] ?? 0) of \(bytes)")
        #expect(sa?.lastSwitchMilliseconds != nil)
        #expect(try a.writeRegister(.cmd, VMXNET3.Command.getDeviceIDLow.rawValue) == VMXNET3.passthroughDeviceID)
    }

    /// Control operations in passthrough go through the PF to the embedded switch, with the same
    /// policy and the same errors as emulated; a spoofed source from a VF is dropped by the NIC.
    @Test func controlInPassthroughGoesThroughThePF() throws {
        let fixture = try switchedIn(
            macs: ("02:00:00:00:b0:01", "02:00:00:00:b0:02"),
            policies: [
                "a": GuestPolicy(allowedMACs: [MACAddress("02:00:00:00:b0:01")!, MACAddress("02:00:00:00:b0:09")!], allowedVLANs: [0, 5]),
                "b": GuestPolicy(allowedVLANs: [0, 5]),
            ])
        defer { fixture.stop() }
        let (host, a, b) = (fixture.host, fixture.a, fixture.b)
        #expect {
            try a.setMAC(MACAddress("02:00:00:00:66:66")!)
        } throws: { ($0 as? HostRefusal)?.isPolicyRefusal == true }
        #expect {
            try a.setVLANs([7])
        } throws: { ($0 as? HostRefusal)?.message == "VLAN 7 not allowed for guest 'a' by host policy" }
        // A MAC change within policy takes effect on the VF: b reaches a at its new MAC.
        try a.setMAC(MACAddress("02:00:00:00:b0:09")!)
        let f = ethernetFrame(to: a.mac, from: b.mac)
        #expect(b.send([f]) == 1)
        #expect(receiveFrames(a, count: 1) == [f])
        // VLAN 5 within policy: tagged frames flow VF to VF.
        try a.setVLANs([5])
        try b.setVLANs([5])
        let tagged = ethernetFrame(to: b.mac, from: a.mac, vlan: 5)
        #expect(a.send([tagged]) == 1)
        #expect(receiveFrames(b, count: 1) == [tagged])
        // A spoofed source from the VF: dropped and counted by the NIC.
        let spoofed = ethernetFrame(to: b.mac, from: MACAddress("02:00:00:00:b0:01")!)
        #expect(a.send([spoofed]) == 1)
        #expect(a.flush(timeoutMilliseconds: 10_000))
        #expect(try eventually { try host.status(of: "a")?.counters["vf_spoofed_drops"] == 1 })
        #expect(b.receive(maxFrames: 4, timeoutMilliseconds: 0).isEmpty)
    }
}

@Suite(.serialized) struct AutoPassthroughTests {
    /// With auto_passthrough, an allowed guest lands on a VF at its first data-path call after
    /// activation; a guest whose policy refuses passthrough stays emulated; both can talk.
    @Test func allowedGuestsAreSwitchedInAutomatically() throws {
        let fixture = try PassthroughFixture(
            model: "npa-cq", vfs: 2, a: GuestSpec("moves"), b: GuestSpec("stays"), switchIn: (false, false)
        ) {
            $0.autoPassthrough = true
            $0.guestPolicies = ["stays": GuestPolicy(allowPassthrough: false)]
        }
        defer { fixture.stop() }
        let (moves, stays) = (fixture.a, fixture.b)
        _ = moves.reclaimTransmitted()
        _ = stays.reclaimTransmitted()
        #expect(moves.mode == "passthrough")
        #expect(moves.pluginName == "npa-cq-swift")
        #expect(stays.mode == "emulated")
        let f = ethernetFrame(to: stays.mac, from: moves.mac), g = ethernetFrame(to: moves.mac, from: stays.mac)
        #expect(moves.send([f]) == 1)
        #expect(receiveFrames(stays, count: 1) == [f])
        #expect(stays.send([g]) == 1)
        #expect(receiveFrames(moves, count: 1) == [g])
    }
}

@Suite(.serialized) struct VFResetTests {
    /// The host resets a guest's VF while traffic flows both ways: the guest ends on emulation,
    /// still working; nothing either side sent is lost silently (a's unsent frames are re-sent
    /// through emulation): every frame is received once, in order, or counted as dropped by the
    /// receiving NIC.
    @Test(arguments: NICModelRegistry.names)
    func aVFResetUnderTrafficLosesOnlyWhatTheGuestIsToldItLost(_ model: String) throws {
        let fixture = try PassthroughFixture(
            model: model, vfs: 4, a: GuestSpec("a", mac: "02:00:00:00:d0:01", ringSize: 1024, memoryMiB: 32),
            b: GuestSpec("b", mac: "02:00:00:00:d0:02", ringSize: 1024, memoryMiB: 32), switchIn: (true, false))
        defer { fixture.stop() }
        let (host, a, b) = (fixture.host, fixture.a, fixture.b)
        #expect(a.mode == "passthrough")
        let total = 2000
        var atA = FlowVerifier(), atB = FlowVerifier()
        var sentA = 0, sentB = 0
        while sentA < total || sentB < total {
            if sentA == total / 2 && a.mode == "passthrough" { try host.admin.resetVF(name: a.name) }
            if sentA < total {
                let first = sentA
                sentA += a.transmit(count: min(20, total - sentA)) { i, buf in
                    TrafficFrame.write(into: buf, destination: b.mac, source: a.mac, flow: 0, sequence: UInt64(first + i), length: 300)
                }
            }
            if sentB < total {
                let first = sentB
                sentB += b.transmit(count: min(20, total - sentB)) { i, buf in
                    TrafficFrame.write(into: buf, destination: a.mac, source: b.mac, flow: 0, sequence: UInt64(first + i), length: 300)
                }
            }
            a.receive(maxFrames: 64, timeoutMilliseconds: 0) { atA.record($0.bytes) }
            b.receive(maxFrames: 64, timeoutMilliseconds: 0) { atB.record($0.bytes) }
        }
        #expect(a.flush(timeoutMilliseconds: 10_000))
        #expect(b.flush(timeoutMilliseconds: 10_000))
        // Every frame sent either way arrives, or the receiving NIC says it dropped it (e.g. no
        // buffers when the PF queue, up to 2048 frames, drains into a 1023-buffer ring at the
        // reset).
        let dropsB = try receiveUntilAccounted(b, &atB, total: total)
        let dropsA = try receiveUntilAccounted(a, &atA, total: total)
        let toldB = dropsB.values.reduce(0, +), toldA = dropsA.values.reduce(0, +)
        #expect(a.mode == "emulated")
        // Nothing a sent was lost silently (its unsent frames were re-sent through emulation).
        #expect(UInt64(atB.unique) + toldB == UInt64(total), "received \(atB.unique), told \(dropsB)")
        #expect(atB.duplicates == 0 && atB.outOfOrder == 0)
        let ca = try a.deviceCounters().filter { $0.value > 0 }, cb = try b.deviceCounters().filter { $0.value > 0 }
        let up = try host.admin.status().uplink
        #expect(
            UInt64(atA.unique) + toldA == UInt64(total),
            "received \(atA.unique) (invalid \(atA.invalid)), told \(dropsA), b sent \(sentB), a: \(ca), b: \(cb), uplink \(String(describing: up)), switchError \(a.lastSwitchError ?? "-")"
        )
        #expect(atA.duplicates == 0 && atA.outOfOrder == 0)
        let status = try host.status(of: "a")
        #expect(status?.mode == "emulated")
        #expect(status?.lastSwitchError == "VF reset by the host")
    }
}

@Suite(.serialized) struct PluginFaultTests {
    /// The PF side disables a guest's VF without telling it (no DIC). The plugin notices on its
    /// next poll and reports the fault; the shell asks the host to reset the VF; the guest moves
    /// to emulation with the reason in `npa status`, and nothing it sent is lost silently.
    @Test(arguments: NICModelRegistry.names)
    func aVFThatDiesUnderThePluginIsReportedAndTheGuestMovesToEmulation(_ model: String) throws {
        let fixture = try PassthroughFixture(
            model: model, vfs: 2, a: GuestSpec("a", mac: "02:00:00:00:f0:01", queues: 1, ringSize: 1024, memoryMiB: 32),
            b: GuestSpec("b", mac: "02:00:00:00:f0:02", queues: 1, ringSize: 1024, memoryMiB: 32), switchIn: (true, false))
        defer { fixture.stop() }
        let (host, a, b) = (fixture.host, fixture.a, fixture.b)
        #expect(a.mode == "passthrough")
        let nic = try #require(host.daemon.nics.first)
        let vf = try #require(try host.vfIndex(of: "a"))
        let total = 2000
        var atB = FlowVerifier()
        var sent = 0
        let deadline = ContinuousClock.now + .seconds(30)
        while sent < total && ContinuousClock.now < deadline {
            if sent == total / 2 && a.mode == "passthrough" { nic.quiesce(vf: vf) }  // dies silently
            let first = sent
            sent += a.transmit(count: min(20, total - sent)) { i, buf in
                TrafficFrame.write(into: buf, destination: b.mac, source: a.mac, flow: 0, sequence: UInt64(first + i), length: 200)
            }
            a.receive(maxFrames: 64, timeoutMilliseconds: 0) { _ in }
            b.receive(maxFrames: 256, timeoutMilliseconds: 0) { atB.record($0.bytes) }
        }
        #expect(a.flush(timeoutMilliseconds: 10_000))
        let drops = try receiveUntilAccounted(b, &atB, total: total)
        #expect(sent == total)
        #expect(a.mode == "emulated")
        #expect(UInt64(atB.unique) + drops.values.reduce(0, +) == UInt64(total), "received \(atB.unique), told \(drops)")
        #expect(atB.duplicates == 0 && atB.outOfOrder == 0)
        let status = try host.status(of: "a")
        #expect(status?.mode == "emulated")
        #expect(status?.lastSwitchError == "plugin fault: VF disabled under the plugin")
        #expect(a.switchLog.contains { $0.contains("plugin fault") })
    }
}

@Suite(.serialized) struct FailedPluginTests {
    /// A plugin image that does not load leaves the guest on emulation, working, with the reason
    /// in `npa status`; the VF goes back to the pool.
    @Test func aPluginThatFailsToLoadLeavesTheGuestOnEmulation() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("npa-bad-plugins-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        // A signed bundle the host accepts (the ELF rule reads the symbol tables) whose binary the
        // loader refuses: its ELF header's e_version is not EV_CURRENT.
        var binary = [UInt8](try Data(contentsOf: PluginImages.directory().appendingPathComponent("npa-dring.so")))
        binary[20] = 2
        try Data(PluginImages.bundle(PluginImages.manifest(of: "dring"), binary: binary, key: PluginImages.signingKey))
            .write(to: dir.appendingPathComponent("npa-dring.npabundle"))
        let host = try TestHost(configuration: .withNIC(model: "npa-dring", vfs: 1, pluginDirectory: dir.path))
        defer { host.stop() }
        let a = try attach(host, "a"), b = try attach(host, "b")
        try host.switchIn(a)
        #expect(a.mode == "emulated")
        #expect(a.lastSwitchError?.hasPrefix("plugin image does not load") == true)
        #expect(a.switchLog.last?.contains("switch failed, staying emulated") == true)
        let status = try host.status(of: "a")
        #expect(status?.mode == "emulated")
        #expect(status?.lastSwitchError?.hasPrefix("guest: plugin image does not load") == true)
        // Still working, and the only VF is free again for the next guest.
        let f = ethernetFrame(to: b.mac, from: a.mac)
        #expect(a.send([f]) == 1)
        #expect(receiveFrames(b, count: 1) == [f])
        try host.admin.switchVNIC(name: b.name, toPassthrough: true)  // would throw "no free VF" if the VF leaked
    }
}

@Suite(.serialized) struct WireTrafficTests {
    /// Frames from the wire for a guest that switches in and out while they arrive: before a
    /// switch-in they go up the PF to the vswitch and the emulated rings, after it straight to
    /// the VF; at each switch the PF queue drains first. The guest gets every one exactly once,
    /// in order. The wire keeps at most 512 frames in flight, fewer than a ring's buffers, so
    /// nothing may be dropped either.
    @Test(arguments: NICModelRegistry.names)
    func wireFramesReachASwitchingGuestExactlyOnceInOrder(_ model: String) throws {
        let host = try TestHost(configuration: .withNIC(model: model, vfs: 2))
        defer { host.stop() }
        let g = try attach(host, "g", mac: "02:00:00:00:a0:01", queues: 1, ringSize: 1024, memoryMiB: 32)
        let nic = try #require(host.daemon.nics.first)
        let total = 12_000, window = 512, switchEvery = 1_000
        let progress = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)  // frames the guest verified
        progress.initialize(to: 0)
        defer { progress.deallocate() }
        let shared = SharedCounters(progress)
        let destination = g.mac
        let wire = EngineThread.start(name: "test-wire") {
            let frames = UnsafeMutableRawPointer.allocate(byteCount: 16 * 128, alignment: 64)
            defer { frames.deallocate() }
            let source = MACAddress("02:ee:00:00:00:01")!
            let deadline = ContinuousClock.now + .seconds(60)
            var injected = 0
            while injected < total && ContinuousClock.now < deadline {
                // Window: wait until the guest has caught up (a condition, polled).
                if injected - Int(SharedWord.loadAcquire(shared.pointer)) >= window {
                    usleep(100)
                    continue
                }
                let burst = min(16, total - injected)
                for i in 0..<burst {
                    _ = TrafficFrame.write(
                        into: UnsafeMutableRawBufferPointer(start: frames + i * 128, count: 128), destination: destination,
                        source: source, flow: 0, sequence: UInt64(injected + i), length: 128)
                }
                var taken = 0
                while taken < burst && ContinuousClock.now < deadline {
                    let first = taken
                    taken += nic.receiveFromWire(count: burst - first) { i in (UnsafeRawPointer(frames + (first + i) * 128), 128) }
                }
                injected += burst
            }
        }
        var verifier = FlowVerifier()
        var switches = 0, nextSwitch = switchEvery
        let deadline = ContinuousClock.now + .seconds(60)
        while verifier.unique < total && ContinuousClock.now < deadline {
            g.receive(maxFrames: 256, timeoutMilliseconds: 10) { verifier.record($0.bytes) }
            SharedWord.storeRelease(progress, UInt32(verifier.unique))
            if verifier.unique >= nextSwitch && verifier.unique < total {
                try host.admin.switchVNIC(name: g.name, toPassthrough: g.mode == "emulated")
                switches += 1
                nextSwitch += switchEvery
            }
        }
        EngineThread.join(wire)
        #expect(switches >= 10)
        let drops = try g.dropCounts()
        #expect(verifier.unique == total, "drops \(drops), wire dropped \(nic.wireFramesDropped)")
        #expect(verifier.duplicates == 0 && verifier.outOfOrder == 0 && verifier.invalid == 0)
        #expect(nic.wireFramesIn == UInt64(total) && nic.wireFramesDropped == 0)
        #expect(g.switchDurations.count == switches, "\(g.lastSwitchError ?? "")")
    }

    final class SharedCounters: @unchecked Sendable {
        let pointer: UnsafeMutablePointer<UInt32>
        init(_ pointer: UnsafeMutablePointer<UInt32>) { self.pointer = pointer }
    }
}
