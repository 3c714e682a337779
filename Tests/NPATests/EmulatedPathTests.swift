import NPAAdmin
import NPAControlProtocol
import NPAHost
import NPARingFormats
import NPAShell
import NPATestSupport
import NPAWorkload
import Testing

/// The emulated data path and the control path, with the host and guests in this process
/// (each guest with its own memfd, attached over the real socket).
@Suite(.serialized) struct EmulatedPathTests {
    @Test func framesAreDeliveredExactlyOnceAndInOrderBetweenThreeGuests() throws {
        let host = try TestHost()
        defer { host.stop() }
        let a = try attach(host, "a"), b = try attach(host, "b"), c = try attach(host, "c")
        // a → b and a → c, each a numbered stream.
        for (dst, tag) in [(b, UInt8(1)), (c, UInt8(2))] {
            var sent = 0
            while sent < 300 {
                let n = a.transmit(count: min(50, 300 - sent)) { i, buffer in
                    let f = ethernetFrame(
                        to: dst.mac, from: a.mac,
                        payload: [tag, UInt8((sent + i) >> 8), UInt8((sent + i) & 0xFF)] + Array(repeating: 0, count: 43))
                    buffer.copyBytes(from: f)
                    return f.count
                }
                sent += n
                let got = receiveFrames(dst, count: n)
                #expect(got.count == n)
                for (k, f) in got.enumerated() {
                    #expect(f[14] == tag)
                    #expect(Int(f[15]) << 8 | Int(f[16]) == sent - n + k)
                }
            }
        }
        let counters = try a.deviceCounters()
        #expect(counters["tx_frames"] == 600)
        #expect(try b.deviceCounters()["rx_frames"] == 300)
        #expect(try c.deviceCounters()["rx_frames"] == 300)
        #expect(a.flush(timeoutMilliseconds: 10_000))
        #expect(a.buffersOutstanding == (256 - 1) * 2)  // only the posted RX buffers are lent out
    }

    @Test func broadcastFloodsTheVLANButNotOtherVLANsOrTheSender() throws {
        var config = HostConfiguration()
        config.defaultPolicy = GuestPolicy(allowedVLANs: [0, 10, 20])
        let host = try TestHost(configuration: config)
        defer { host.stop() }
        let a = try attach(host, "a"), b = try attach(host, "b"), c = try attach(host, "c"), d = try attach(host, "d")
        try a.setVLANs([10])
        try b.setVLANs([10])
        try c.setVLANs([20])
        // d stays untagged-only.
        let tagged = ethernetFrame(to: .broadcast, from: a.mac, vlan: 10)
        #expect(a.send([tagged]) == 1)
        #expect(receiveFrames(b, count: 1) == [tagged])
        let untagged = ethernetFrame(to: .broadcast, from: a.mac)
        #expect(a.send([untagged]) == 1)
        #expect(receiveFrames(b, count: 1) == [untagged])
        #expect(receiveFrames(d, count: 1) == [untagged])
        #expect(receiveFrames(c, count: 1) == [untagged])
        // The VLAN-10 frame reached neither c (VLAN 20) nor d: their only frame is the untagged one.
        #expect(try c.deviceCounters()["rx_frames"] == 1)
        #expect(try d.deviceCounters()["rx_frames"] == 1)
        #expect(drain(a).isEmpty)
        #expect(try a.deviceCounters()["tx_broadcast"] == 2)
    }

    @Test func unicastFollowsTheVLAN() throws {
        var config = HostConfiguration()
        config.defaultPolicy = GuestPolicy(allowedVLANs: [0, 10])
        let host = try TestHost(configuration: config)
        defer { host.stop() }
        let a = try attach(host, "a"), b = try attach(host, "b")
        try a.setVLANs([10])
        // b is not in VLAN 10: a tagged unicast to b has no destination.
        #expect(a.send([ethernetFrame(to: b.mac, from: a.mac, vlan: 10)]) == 1)
        #expect(try eventually { try a.deviceCounters()["drop_unknown_destination"] == 1 })
        try b.setVLANs([10])
        let f = ethernetFrame(to: b.mac, from: a.mac, vlan: 10)
        #expect(a.send([f]) == 1)
        #expect(receiveFrames(b, count: 1) == [f])
    }

    @Test func policyRefusalsAreClearErrorsAndChangeNothing() throws {
        var config = HostConfiguration()
        config.guestPolicies["strict"] = GuestPolicy(
            allowedMACs: [MACAddress("02:00:00:00:01:01")!, MACAddress("02:00:00:00:01:02")!], allowedVLANs: [0, 5])
        let host = try TestHost(configuration: config)
        defer { host.stop() }
        // Attaching with a MAC outside policy is refused.
        #expect {
            _ = try attach(host, "strict", mac: "02:00:00:00:09:09")
        } throws: { ($0 as? HostRefusal)?.isPolicyRefusal == true && "\($0)".contains("not allowed") }
        let s = try attach(host, "strict")
        #expect(s.mac == MACAddress("02:00:00:00:01:01"))
        #expect {
            try s.setMAC(MACAddress("02:00:00:00:09:09")!)
        } throws: { ($0 as? HostRefusal)?.message == "MAC 02:00:00:00:09:09 is not allowed for guest 'strict' by host policy" }
        try s.setMAC(MACAddress("02:00:00:00:01:02")!)
        #expect {
            try s.setRxMode([.unicast, .promiscuous])
        } throws: { ($0 as? HostRefusal)?.message == "promiscuous mode is not allowed for guest 'strict' by host policy" }
        #expect {
            try s.setVLANs([5, 7])
        } throws: { ($0 as? HostRefusal)?.message == "VLAN 7 not allowed for guest 'strict' by host policy" }
        try s.setVLANs([5])
        let status = try host.admin.status()
        #expect(status.vnics.first?.mac == "02:00:00:00:01:02")
    }

    @Test func spoofedSourceMACIsDroppedAndCounted() throws {
        let host = try TestHost()
        defer { host.stop() }
        let a = try attach(host, "a"), b = try attach(host, "b")
        let spoofed = ethernetFrame(to: b.mac, from: MACAddress("02:66:66:66:66:66")!)
        let honest = ethernetFrame(to: b.mac, from: a.mac)
        #expect(a.send([spoofed, spoofed, honest]) == 3)
        #expect(receiveFrames(b, count: 1) == [honest])
        let counters = try a.deviceCounters()
        #expect(counters["drop_spoofed_source"] == 2)
        #expect(counters["tx_frames"] == 1)
        #expect(try b.deviceCounters()["rx_frames"] == 1)
    }

    @Test func flowsSpreadOverRxQueuesAndKeepTheirOrder() throws {
        let host = try TestHost()
        defer { host.stop() }
        let a = try attach(host, "a", queues: 2), b = try attach(host, "b", queues: 2)
        let flows = 8, perFlow = 40
        var queuesSeen = Set<Int>()
        var verifier = FlowVerifier()
        var sequences = [UInt64](repeating: 0, count: flows)
        var received = 0
        for round in 0..<perFlow / 10 {
            for flow in 0..<flows {
                let first = sequences[flow]
                let n = a.transmit(queue: flow % 2, count: 10) { i, buffer in
                    TrafficFrame.write(
                        into: buffer, destination: b.mac, source: a.mac, flow: UInt32(flow), sequence: first + UInt64(i), length: 128)
                }
                sequences[flow] += UInt64(n)
            }
            let deadline = ContinuousClock.now + .seconds(20)
            while received < (round + 1) * flows * 10 && ContinuousClock.now < deadline {
                received += b.receive(maxFrames: 256, timeoutMilliseconds: 200) { frame in
                    queuesSeen.insert(frame.queue)
                    if let (flow, seq) = TrafficFrame.parse(frame.bytes) { verifier.record(flow: flow, sequence: seq) }
                }
            }
        }
        #expect(verifier.unique == flows * perFlow)
        #expect(verifier.duplicates == 0)
        #expect(verifier.outOfOrder == 0)
        #expect(queuesSeen == [0, 1])
    }

    @Test func multicastReachesOnlySubscribers() throws {
        let host = try TestHost()
        defer { host.stop() }
        let a = try attach(host, "a"), b = try attach(host, "b"), c = try attach(host, "c")
        let group = MACAddress("01:00:5e:00:00:fb")!
        try b.setMulticastFilter([group])
        let f = ethernetFrame(to: group, from: a.mac)
        #expect(a.send([f]) == 1)
        #expect(receiveFrames(b, count: 1) == [f])
        #expect(try eventually { try c.deviceCounters()["drop_filtered"] == 0 && a.deviceCounters()["tx_multicast"] == 1 })
        #expect(try c.deviceCounters()["rx_frames"] == 0)
    }

    @Test func unknownUnicastGoesToTheUplinkOrIsCounted() throws {
        let host = try TestHost()
        let a = try attach(host, "a")
        #expect(a.send([ethernetFrame(to: MACAddress("02:77:77:77:77:77")!, from: a.mac)]) == 1)
        #expect(try eventually { try a.deviceCounters()["drop_unknown_destination"] == 1 })
        a.detach()
        host.stop()

        var config = HostConfiguration()
        config.uplink = .counting
        let host2 = try TestHost(configuration: config)
        defer { host2.stop() }
        let b = try attach(host2, "b")
        #expect(b.send([ethernetFrame(to: MACAddress("02:77:77:77:77:77")!, from: b.mac)]) == 1)
        #expect(try eventually { try host2.admin.status().uplink?.framesOut == 1 })
        #expect(try b.deviceCounters()["drop_unknown_destination"] == 0)
    }

    @Test func controlCommandsAnswerAsVMXNET3Does() throws {
        let host = try TestHost()
        defer { host.stop() }
        let a = try attach(host, "a")
        #expect(try a.linkIsUp())
        #expect(try a.writeRegister(.cmd, VMXNET3.Command.getDeviceIDLow.rawValue) == VMXNET3.emulatedDeviceID)
        #expect(throws: HostRefusal.self) { try a.writeRegister(.cmd, 0xCAFE_00FF) }
        #expect(a.mode == "emulated")
        #expect(a.pluginName == "vmxnet3-emulation")
    }
}
