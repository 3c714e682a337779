import Foundation
import NPAAdmin
import NPAControlProtocol
@testable import NPAHost
import NPANICModel
import NPARingFormats
import NPAShell
import NPASystem
import NPATestSupport
import Testing

/// Self-announcement after a migration: QEMU's gratuitous RARP frame, byte for byte, on QEMU's
/// schedule (5 rounds: at once, then after 50, 150, 250 and 350 ms), one frame per VLAN of the
/// vNIC per round, out of every wire of the host and to the vNICs on the vswitch. The schedule
/// is driven with given times (no test waits on a clock); one test lets the host's own event
/// loop run it, and one (root) has a Linux bridge learn the MAC from the frames.
@Suite(.serialized) struct SelfAnnounceTests {
    static let mac = MACAddress("02:00:00:00:a0:01")!

    /// QEMU's announce_self_create for 02:00:00:00:a0:01, written out by hand.
    static let untagged: [UInt8] =
        [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02, 0x00, 0x00, 0x00, 0xA0, 0x01, 0x80, 0x35]
        + [0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x03]
        + [0x02, 0x00, 0x00, 0x00, 0xA0, 0x01, 0x00, 0x00, 0x00, 0x00]
        + [0x02, 0x00, 0x00, 0x00, 0xA0, 0x01, 0x00, 0x00, 0x00, 0x00]
        + [UInt8](repeating: 0, count: 18)

    /// The same in VLAN 10: an 802.1Q tag after the source MAC.
    static let tagged10: [UInt8] = Array(untagged[0..<12]) + [0x81, 0x00, 0x00, 0x0A] + Array(untagged[12...])

    @Test func theFrameIsQEMUsGratuitousRARPByteForByte() {
        #expect(Self.untagged.count == 60 && Self.tagged10.count == 64)
        #expect(SelfAnnounce.frame(mac: Self.mac.value) == Self.untagged)
        #expect(SelfAnnounce.frame(mac: Self.mac.value, vlan: 0) == Self.untagged, "VLAN 0 is untagged traffic")
        #expect(SelfAnnounce.frame(mac: Self.mac.value, vlan: 10) == Self.tagged10)
    }

    @Test func parseAcceptsExactlyTheAnnouncement() {
        func parse(_ bytes: [UInt8]) -> (mac: UInt64, vlan: UInt16?)? { bytes.withUnsafeBytes { SelfAnnounce.parse($0) } }
        #expect(parse(Self.untagged)?.mac == Self.mac.value && parse(Self.untagged)?.vlan == nil)
        #expect(parse(Self.tagged10)?.mac == Self.mac.value && parse(Self.tagged10)?.vlan == 10)
        var priority = Self.tagged10
        priority[14] |= 0xA0  // PCP 5: the sender's choice
        #expect(parse(priority)?.vlan == 10)
        for i in 0..<Self.untagged.count where !(6..<12).contains(i) {
            var changed = Self.untagged
            changed[i] ^= 0x01
            #expect(parse(changed) == nil, "byte \(i) changed and still parsed")
        }
        #expect(parse(Array(Self.untagged.dropLast())) == nil && parse(Self.untagged + [0]) == nil)
    }

    @Test func theScheduleIsQEMUsDefaults() {
        var announcer = SelfAnnouncer()
        let ms: UInt64 = 1_000_000
        let t0: UInt64 = 1_000 * ms
        announcer.start("g", now: t0)
        var rounds: [UInt64] = []
        // Every millisecond for a second: the rounds fall exactly at 0, 50, 200, 450, 800 ms.
        for t in stride(from: t0, through: t0 + 1_000 * ms, by: Int(ms)) where announcer.due(now: t) == ["g"] {
            rounds.append((t - t0) / ms)
        }
        #expect(rounds == [0, 50, 200, 450, 800])
        #expect(announcer.nextDeadline == nil)
        let s = SelfAnnouncer.Schedule()
        #expect(s.initialMilliseconds == 50 && s.maximumMilliseconds == 550 && s.rounds == 5 && s.stepMilliseconds == 100)
        #expect(s.delayNanoseconds(afterRound: 9) == 550 * ms, "capped at announce-max")
    }

    func configuration(uplink: HostConfiguration.UplinkKind) throws -> HostConfiguration {
        var config = try HostConfiguration.withNIC(
            model: "npa-dring", vfs: 2,
            policies: ["mig": GuestPolicy(allowedVLANs: [0, 10]), "peer": GuestPolicy(allowedVLANs: [0, 10])])
        config.uplink = uplink
        return config
    }

    /// One RX queue: the untagged and the tagged frame hash to different queues otherwise.
    func attach(_ socketPath: String, _ name: String, mac: MACAddress? = nil) throws -> VirtualNIC {
        let nic = try GuestSpec(name, mac: mac?.description, queues: 1).attach(to: socketPath)
        try nic.setVLANs([0, 10])
        return nic
    }

    /// Each round: one frame per VLAN out of the counting uplink and out of the (non-uplink)
    /// NIC's physical port, and the same bytes to the peer vNIC on the vswitch; nothing back to
    /// the announcing vNIC; nothing between rounds.
    @Test func eachRoundGoesOutOfEveryWireAndToThePeersOncePerVLAN() throws {
        let host = try SteppedTestHost(configuration: configuration(uplink: .counting))
        defer { host.stop() }
        let mig = try attach(host.socketPath, "mig", mac: Self.mac), peer = try attach(host.socketPath, "peer")
        let ms: UInt64 = 1_000_000
        let t0 = Clock.monotonicNanoseconds()
        /// (frames out of the uplink, bytes, frames out of nic0's port) after serving `t`.
        func serve(at t: UInt64?) throws -> (UInt64, UInt64, UInt64) {
            try host.onHostThread { d in
                if let t { d.dataPath.serviceAnnouncements(now: t) } else { d.dataPath.announceSelf(try d.attachedDevice("mig"), now: t0) }
                let (wire, nic) = (d.dataPath.wire, d.nics.first)
                return (wire?.framesOut ?? 0, wire?.bytesOut ?? 0, nic?.uplinkFrames ?? 0)
            }
        }
        let start = try serve(at: t0 + 1_000 * ms)  // nothing is due before the first
        var expected = start
        for (offset, due) in [
            (nil, true), (49, false), (50, true), (199, false), (200, true), (449, false), (450, true), (799, false), (800, true),
            (5_000, false),
        ] {
            let now = try serve(at: offset.map { t0 + UInt64($0) * ms })
            if due { expected = (expected.0 + 2, expected.1 + 60 + 64, expected.2 + 2) }
            #expect(now == expected, "at \(offset ?? 0) ms")
        }
        var frames: [[UInt8]] = []
        #expect(
            eventually {
                frames += peer.receive(maxFrames: 16, timeoutMilliseconds: 10); return frames.count >= 10
            })
        frames += peer.receive(maxFrames: 16, timeoutMilliseconds: 20)
        #expect(frames == [[UInt8]](repeating: [], count: 5).flatMap { _ in [Self.untagged, Self.tagged10] })
        #expect(mig.receive(maxFrames: 16, timeoutMilliseconds: 20).isEmpty, "the vNIC got its own announcement")
        let status = try host.onHostThread { $0.status() }.vnics.first { $0.name == "mig" }
        #expect(status?.counters["announce_rounds"] == 5 && status?.counters["announce_frames"] == 10)
    }

    /// A vNIC that leaves while its announcements from an arrival here are still due sends no
    /// further round: a late one would pull the network back to this host after the guest moved
    /// on (this reordered a LAN machine's frames at the destination). Rounds stop as soon as the
    /// device stops, and do not come back if the departure is called off.
    @Test func aLeavingVNICStopsAnnouncing() throws {
        let host = try SteppedTestHost(configuration: configuration(uplink: .counting))
        defer { host.stop() }
        let mig = try attach(host.socketPath, "mig", mac: Self.mac)
        let ms: UInt64 = 1_000_000
        let t0 = Clock.monotonicNanoseconds()
        let (first, afterDeparture, afterAbort, next) = try host.onHostThread { d in
            d.dataPath.announceSelf(try d.attachedDevice("mig"), now: t0)
            let first = d.dataPath.wire?.framesOut ?? 0
            _ = try d.beginDeparture(named: "mig")
            for t in stride(from: t0, through: t0 + 1_000 * ms, by: Int(10 * ms)) { d.dataPath.serviceAnnouncements(now: t) }
            let afterDeparture = d.dataPath.wire?.framesOut ?? 0
            try d.abortDeparture(named: "mig")
            for t in stride(from: t0, through: t0 + 1_000 * ms, by: Int(10 * ms)) { d.dataPath.serviceAnnouncements(now: t) }
            return (first, afterDeparture, d.dataPath.wire?.framesOut ?? 0, d.dataPath.nextAnnouncementDeadline)
        }
        #expect(first == 2, "the first round: one frame per VLAN")
        #expect(afterDeparture == first && afterAbort == first, "rounds after the departure began: \(afterDeparture - first)")
        #expect(next == nil)
        withExtendedLifetime(mig) {}
    }

    /// The host's own event loop sends the rounds: its epoll wait is bounded by the next one.
    @Test func theHostsEventLoopSendsEveryRoundOnItsTimers() throws {
        let host = try SteppedTestHost(configuration: configuration(uplink: .counting))
        defer { host.stop() }
        let mig = try attach(host.socketPath, "mig", mac: Self.mac)
        defer { withExtendedLifetime(mig) {} }
        let peer = try attach(host.socketPath, "peer")
        // The stepped thread runs the real loop (`run()`) until the test stops it.
        let finished = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            _ = try? host.onHostThread { d in
                d.dataPath.announceSelf(try d.attachedDevice("mig"))
                try d.run()
            }
            finished.signal()
        }
        let admin = AdminClient(socketPath: host.daemon.adminSocketPath)
        #expect(
            eventually(timeoutMilliseconds: 30_000) {
                (try? admin.status())?.vnics.first { $0.name == "mig" }?.counters["announce_rounds"] == 5
            })
        let status = try admin.status()
        #expect(status.vnics.first { $0.name == "mig" }?.counters["announce_frames"] == 10)
        #expect(status.uplink?.framesOut == 10 && status.uplink?.bytesOut == 5 * (60 + 64))
        var frames: [[UInt8]] = []
        #expect(
            eventually {
                frames += peer.receive(maxFrames: 16, timeoutMilliseconds: 10); return frames.count >= 10
            })
        #expect(frames.count == 10 && Set(frames) == [Self.untagged, Self.tagged10])
        host.daemon.stop()
        finished.wait()
    }

    static let bridgeAvailable = TAPDevice.isAvailable && NetworkLab.toolIsInstalled("bridge")

    /// Real wires: the vswitch's uplink and the NIC's physical port are TAPs, each on its own
    /// Linux bridge (in a namespace this test makes and removes) where the test listens on a
    /// second TAP. Exactly the 5 × 2 frames come across each, byte for byte, and each bridge has
    /// learnt the guest's MAC on the host's port.
    @Test(.enabled(if: bridgeAvailable, Comment(rawValue: "needs root, /dev/net/tun and the bridge tool (iproute2)")))
    func linuxBridgesLearnTheMACFromTheFramesOnTheUplinkAndTheNICsTAPs() throws {
        let lab = NetworkLab()
        defer { lab.removeAll() }
        let ports = [("br0", "npa\(lab.tag)h", "npa\(lab.tag)l"), ("br1", "npa\(lab.tag)n", "npa\(lab.tag)m")]
        var config = try configuration(uplink: .tap(ports[0].1))
        config.nics[0].wireTAP = ports[1].1
        let host = try SteppedTestHost(configuration: config)
        defer { host.stop() }
        let listeners = try ports.map { try TAPWire(name: $0.2, maximumFrame: SoftNIC.maximumFrame) }
        let lan = try lab.addNamespace("lan")
        for (bridge, hostTap, listenerTap) in ports {
            try lab.ip(["-n", lan, "link", "add", bridge, "type", "bridge", "forward_delay", "0"])
            try lab.ip(["-n", lan, "link", "set", bridge, "up"])
            for tap in [hostTap, listenerTap] {
                try lab.ip(["link", "set", tap, "netns", lan])
                try lab.ip(["-n", lan, "link", "set", tap, "master", bridge, "up"])
            }
        }
        let mig = try attach(host.socketPath, "mig", mac: Self.mac)
        defer { withExtendedLifetime(mig) {} }

        let ms: UInt64 = 1_000_000
        let t0 = Clock.monotonicNanoseconds()
        try host.onHostThread { d in
            d.dataPath.announceSelf(try d.attachedDevice("mig"), now: t0)
            for offset: UInt64 in [50, 200, 450, 800] { d.dataPath.serviceAnnouncements(now: t0 + offset * ms) }
        }
        let expected = [[UInt8]](repeating: [], count: 5).flatMap { _ in [Self.untagged, Self.tagged10] }
        for (listener, (bridge, hostTap, _)) in zip(listeners, ports) {
            // The kernel may send frames of its own (IPv6 neighbour discovery): only the
            // guest's count.
            var announcements: [[UInt8]] = []
            func read() {
                listener.markReadable()
                let n = listener.fill()
                for i in 0..<n {
                    let (p, length) = listener.pending(i)
                    if EthernetFrame.mac(p, at: 6) == Self.mac.value {
                        announcements.append([UInt8](UnsafeRawBufferPointer(start: p, count: length)))
                    }
                }
                listener.consume(n)
            }
            #expect(
                eventually {
                    read(); return announcements.count >= 10
                }, "\(bridge): \(announcements.count) frames")
            read()
            #expect(announcements == expected, "\(bridge)")
            let fdb = try lab.run(in: lan, ["bridge", "fdb", "show", "br", bridge]).output
            #expect(fdb.contains("\(Self.mac) dev \(hostTap)"), "\(bridge) did not learn the MAC on the host's port:\n\(fdb)")
        }
    }
}
