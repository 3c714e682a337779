import Foundation
import NPAShell
import NPASystem
import NPATestSupport
import NPAWorkload
import Testing

/// The kernel's TCP/IP stack as the guest's OS: two guests on one host, each vNIC bridged to a
/// TAP interface in a network namespace this test creates (and always removes), and a real TCP
/// transfer between the namespaces, checked byte for byte.
@Suite(.serialized) struct TAPGuestTests {
    static let skipReason = "needs root and /dev/net/tun (TAP devices, network namespaces)"

    /// With offloads (the TAPs' virtio-net header, super-frames up to one vNIC buffer, cut by
    /// device emulation) and without.
    @Test(.enabled(if: TAPDevice.isAvailable, Comment(rawValue: skipReason)), arguments: [true, false])
    func aTCPTransferBetweenTwoKernelStackGuestsArrivesIntact(offloads: Bool) throws {
        let host = try TestHost()
        defer { host.stop() }
        // With offloads, buffers that take a super-frame (what `npa guest tap` sizes them to).
        func configuration(_ i: Int) -> VirtualNIC.Configuration {
            var c = VirtualNIC.Configuration(name: "tap-guest-\(i)")
            if offloads {
                c.memoryBytes = 80 << 20
                c.bufferSize = 16320
            }
            return c
        }
        let guests = try KernelStackGuests(
            nics: [
                try VirtualNIC.attach(hostSocket: host.socketPath, configuration: configuration(0)),
                try VirtualNIC.attach(hostSocket: host.socketPath, configuration: configuration(1)),
            ],
            subnet: 77, placements: [.movedIntoNamespace, .madeInNamespace], offloads: offloads)
        defer { guests.tearDown() }
        let namespaces = guests.namespaces
        for bridge in guests.bridges { #expect(bridge.bridge.offloadsEnabled == offloads) }

        // The server takes everything until end of stream and answers its SHA-256; the client
        // sends 4 MiB of seeded bytes and checks the answer against its own digest. (4 MiB, not 1:
        // the receiver's kernel acknowledges each coalesced super-frame once, and the sender's bridge
        // should still carry over a hundred ACKs.)
        let server = try python(
            in: namespaces[1],
            """
            import socket, hashlib
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("10.77.0.2", 5001)); s.listen(1); s.settimeout(120)
            c, _ = s.accept(); c.settimeout(120); h = hashlib.sha256(); n = 0
            while True:
                b = c.recv(65536)
                if not b: break
                h.update(b); n += len(b)
            c.sendall(f"{n} {h.hexdigest()}".encode()); c.close()
            """)
        let client = try python(
            in: namespaces[0],
            """
            import socket, hashlib, random, time
            data = random.Random(10).randbytes(1 << 22)
            deadline = time.monotonic() + 120
            while True:
                try:
                    s = socket.create_connection(("10.77.0.2", 5001), timeout=5); break
                except OSError:
                    if time.monotonic() > deadline: raise
                    time.sleep(0.05)  # the server is not listening yet: poll for it
            s.settimeout(120); s.sendall(data); s.shutdown(socket.SHUT_WR)
            reply = b""
            while True:
                b = s.recv(4096)
                if not b: break
                reply += b
            expected = f"{len(data)} {hashlib.sha256(data).hexdigest()}"
            print(reply.decode()); print(expected)
            assert reply.decode() == expected
            """)
        client.waitUntilExit()
        server.waitUntilExit()
        let output = String(decoding: (client.standardOutput as! Pipe).fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(client.terminationStatus == 0, "client: \(output)")
        #expect(server.terminationStatus == 0)
        guests.stopBridges()
        for bridge in guests.bridges {
            #expect(bridge.error == nil)
            // With offloads 4 MiB leaves the sender's kernel in about 256 super-frames of 16 KB, and
            // reaches the receiver's kernel coalesced (GRO, up to 64 KB a frame: at least 64; more
            // coalescing under load means fewer frames, 95 seen on a loaded machine).
            #expect(bridge.bridge.counters.framesToVNIC > (offloads ? 50 : 100))
            #expect(bridge.bridge.counters.framesToTAP > (offloads ? 50 : 100))
            #expect(bridge.bridge.counters.malformedFromTAP == 0)
            #expect(bridge.bridge.counters.badVirtioHeader == 0)
        }
        // The sender's kernel handed over super-frames; the receiver's got checksum-valid frames.
        let (sender, receiver) = (guests.bridges[0].bridge.counters, guests.bridges[1].bridge.counters)
        #expect((sender.superFramesToVNIC > 0) == offloads, "\(sender)")
        #expect((receiver.checksumValidToTAP > 0) == offloads, "\(receiver)")
        // The receiver's bridge coalesced the stream's segments into super-frames (GRO).
        #expect((receiver.superFramesToTAP > 0) == offloads, "\(receiver)")
        #expect(receiver.segmentsCoalesced >= 2 * receiver.superFramesToTAP, "\(receiver)")
    }

    /// `npa guest ... tap` creates its interface (in the namespace `--netns` names, or its own)
    /// with the vNIC's MAC and MTU, and SIGTERM ends it with exit 0 and a count of what it
    /// moved; the interface goes with it.
    @Test(.enabled(if: TAPDevice.isAvailable, Comment(rawValue: skipReason)), arguments: [false, true])
    func theTapCommandBridgesUntilSIGTERMAndExitsZero(inNamespace: Bool) throws {
        let host = try TestHost()
        defer { host.stop() }
        let ns = "npa-t-\(getpid())-\(UInt32.random(in: 0...0xFFFF))-cli"
        if inNamespace { try ip(["netns", "add", ns]) }
        defer { if inNamespace { _ = try? ip(["netns", "delete", ns]) } }
        let ifname = "npac\(UInt32.random(in: 0...0xFF_FFFF))"
        let guest = try NPAProcess(
            ["guest", "tap", "--host", host.socketPath, "--name", "tap-cli", "--mac", "02:00:00:00:0a:01", "--ifname", ifname]
                + (inNamespace ? ["--netns", ns] : []))
        defer { guest.kill() }
        #expect(guest.waitUntilAttached())
        let namespaceOption = inNamespace ? ["-n", ns] : []
        let link = try ipOutput(namespaceOption + ["-o", "link", "show", ifname])
        #expect(link.contains("02:00:00:00:0a:01") && link.contains("mtu 1500"), "\(link)")
        // A queue deep enough for what TCP keeps in flight (the kernel drops past it).
        #expect(link.contains("qlen \(TAPBridge.kernelQueueFrames)"), "\(link)")
        if inNamespace { #expect(try ipOutput(["-o", "link", "show"]).contains(ifname) == false) }
        kill(guest.process.processIdentifier, SIGTERM)
        let out = guest.finish()
        #expect(out.status == 0, "\(out.stderr)")
        #expect(out.stdout.contains("tap \(ifname): "), "\(out.stdout)")
        #expect(throws: IPCommandFailed.self) { try ip(namespaceOption + ["link", "show", ifname]) }
    }

    /// A guest whose TAP interface an admin deletes under it ends at once with one line that
    /// names the interface, exit 2, and the host tears its vNIC down.
    @Test(.enabled(if: TAPDevice.isAvailable, Comment(rawValue: skipReason)))
    func aGuestWhoseTAPIsDeletedSaysSoAndExitsTwo() throws {
        let host = try TestHost()
        defer { host.stop() }
        let ns = "npa-t-\(getpid())-\(UInt32.random(in: 0...0xFFFF))-gone"
        try ip(["netns", "add", ns])
        defer { _ = try? ip(["netns", "delete", ns]) }
        let ifname = "npag\(UInt32.random(in: 0...0xFF_FFFF))"
        let guest = try NPAProcess(["guest", "tap", "--host", host.socketPath, "--name", "tap-gone", "--ifname", ifname, "--netns", ns])
        defer { guest.kill() }
        #expect(guest.waitUntilAttached())
        try ip(["-n", ns, "link", "delete", ifname])
        let out = guest.finish()
        #expect(out.status == 2, "\(out.stderr)")
        let lines = out.stderr.split(separator: "\n").filter { !$0.hasPrefix("attached as") }
        #expect(lines.count == 1 && lines.first?.contains(ifname) == true, "\(out.stderr)")
        #expect(try eventually { try host.status(of: "tap-gone") == nil })
    }

    static let pingSkipReason = "needs root, /dev/net/tun and ping (scripts/install-deps.sh installs it)"

    /// An idle bridge sleeps on the vNIC's interrupt and the TAP's descriptor together: a frame
    /// from either side wakes it (ping's ARP and ICMP cross both bridges, each way), and
    /// otherwise it wakes only to look at its stop flag, never polls. The proof counts turns of
    /// its loop, not time: every turn either moves a frame (or takes the interrupt of one sent)
    /// or sleeps a full `stopCheckMilliseconds`, so the turns the frames do not explain are at
    /// most the run's length over that. A poll every millisecond makes ~20 times the bound.
    @Test(.enabled(if: TAPDevice.isAvailable && toolIsInstalled("ping"), Comment(rawValue: pingSkipReason)))
    func anIdleBridgeSleepsOnTheInterruptAndTheTAPTogether() throws {
        let host = try TestHost()
        defer { host.stop() }
        let started = Clock.monotonicNanoseconds()
        let guests = try KernelStackGuests(nics: [attach(host, "idle-a"), attach(host, "idle-b")], subnet: 81)
        defer { guests.tearDown() }
        // ping's default one-second interval leaves the bridges idle between echoes.
        let ping = try run(in: guests.namespaces[0], ["ping", "-c", "3", "-w", "60", guests.addresses[1]])
        #expect(ping.status == 0, "\(ping.output)")
        guests.stopBridges()
        let elapsedMilliseconds = (Clock.monotonicNanoseconds() - started) / 1_000_000
        for bridge in guests.bridges {
            let counters = bridge.bridge.counters
            #expect(bridge.error == nil)
            #expect(counters.framesToVNIC > 0 && counters.framesToTAP > 0, "\(counters)")
            // Half the stop-check period, doubled frames and a few turns spare: slack, not timing.
            let bound =
                elapsedMilliseconds / UInt64(TAPBridge.stopCheckMilliseconds / 2) + 2 * (counters.framesToVNIC + counters.framesToTAP) + 4
            #expect(counters.wakeUps <= bound, "\(counters) in \(elapsedMilliseconds) ms")
        }
    }

    /// The sleeping bridge's wait follows its guest across switches: with the stop check a
    /// minute apart, only events wake the bridges, yet an idle guest carries out each switch the
    /// host asks for (DIC fires its interrupt) and `ping` gets through after each one (the VF's
    /// interrupt in passthrough, emulation's after switching back, the TAP's frames in both).
    /// A missed wake-up would stall a ping or a switch for the whole minute, past their limits.
    @Test(
        .enabled(if: TAPDevice.isAvailable && toolIsInstalled("ping"), Comment(rawValue: pingSkipReason)),
        arguments: ["npa-dring", "npa-cq"])
    func aSleepingBridgeFollowsItsGuestAcrossSwitches(model: String) throws {
        let fixture = try PassthroughFixture(model: model, a: GuestSpec("sleep-a"), b: GuestSpec("sleep-b"), switchIn: (false, false))
        defer { fixture.stop() }
        let guests = try KernelStackGuests(nics: [fixture.a, fixture.b], subnet: 82, stopCheckMilliseconds: 60_000)
        defer { guests.tearDown() }
        func pingGetsThrough(_ when: String) throws {
            let ping = try run(in: guests.namespaces[0], ["ping", "-c", "2", "-w", "30", guests.addresses[1]])
            #expect(ping.status == 0, "\(when): \(ping.output)")
        }
        try pingGetsThrough("both emulated")
        for (name, toPassthrough) in [("sleep-a", true), ("sleep-b", true), ("sleep-a", false), ("sleep-b", false)] {
            try fixture.host.admin.switchVNIC(name: name, toPassthrough: toPassthrough)
            let mode = toPassthrough ? "passthrough" : "emulated"
            let switched = try eventually(timeoutMilliseconds: 30_000) {
                let status = try fixture.host.status(of: name)
                return status?.mode == mode && status?.switchPending == nil
            }
            #expect(switched, "\(name) never reached \(mode): \(String(describing: try? fixture.host.status(of: name)))")
            try pingGetsThrough("after \(name) went \(mode)")
        }
        // Each bridge stops at its next wake-up: a frame from its kernel (ARP or ICMP) is one.
        guests.requestStop()
        for (from, to) in [(0, 1), (1, 0)] {
            _ = try run(in: guests.namespaces[from], ["ping", "-c", "1", "-W", "1", guests.addresses[to]])
        }
        guests.stopBridges()
        for bridge in guests.bridges {
            #expect(bridge.error == nil)
            #expect(bridge.ending == .stopped)
        }
        #expect(fixture.a.switchInDurations.count == 1 && fixture.a.switchOutDurations.count == 1, "\(fixture.a.switchLog)")
        #expect(fixture.b.switchInDurations.count == 1 && fixture.b.switchOutDurations.count == 1, "\(fixture.b.switchLog)")
    }

    /// A busy-polling guest (`spinPolls` = `Int.max`) never sleeps on its interrupt, so its
    /// bridge would never reach the poll that watches the TAP: the spin itself looks at the TAP
    /// (every 1024 polls). With the stop check a minute apart, ping gets through only if it does,
    /// emulated and on a VF.
    @Test(.enabled(if: TAPDevice.isAvailable && toolIsInstalled("ping"), Comment(rawValue: pingSkipReason)))
    func aBusyPollingBridgeStillSeesTheKernelsFrames() throws {
        let fixture = try PassthroughFixture(
            model: "npa-dring", a: GuestSpec("spin-a", spinPolls: Int.max), b: GuestSpec("spin-b", spinPolls: Int.max),
            switchIn: (false, false))
        defer { fixture.stop() }
        let guests = try KernelStackGuests(nics: [fixture.a, fixture.b], subnet: 83, stopCheckMilliseconds: 60_000)
        defer { guests.tearDown() }
        let emulated = try run(in: guests.namespaces[0], ["ping", "-c", "2", "-w", "30", guests.addresses[1]])
        #expect(emulated.status == 0, "\(emulated.output)")
        try fixture.host.admin.switchVNIC(name: "spin-a", toPassthrough: true)
        #expect(try eventually(timeoutMilliseconds: 30_000) { try fixture.host.status(of: "spin-a")?.mode == "passthrough" })
        let passthrough = try run(in: guests.namespaces[0], ["ping", "-c", "2", "-w", "30", guests.addresses[1]])
        #expect(passthrough.status == 0, "\(passthrough.output)")
        guests.requestStop()
        for (from, to) in [(0, 1), (1, 0)] {
            _ = try run(in: guests.namespaces[from], ["ping", "-c", "1", "-W", "1", guests.addresses[to]])
        }
        guests.stopBridges()
        for bridge in guests.bridges { #expect(bridge.error == nil) }
    }

    /// A frame from the kernel longer than the vNIC takes (an admin raised the TAP's MTU past
    /// the vNIC's) is counted and dropped, never sent; the bridge carries on. The ping after it
    /// proves the bridge read past it: the kernel queues the TAP's frames in order.
    @Test(.enabled(if: TAPDevice.isAvailable && toolIsInstalled("ping"), Comment(rawValue: pingSkipReason)))
    func anOversizeFrameFromTheKernelIsCountedAndDropped() throws {
        let host = try TestHost()
        defer { host.stop() }
        let guests = try KernelStackGuests(nics: [attach(host, "big-a"), attach(host, "big-b")], subnet: 84)
        defer { guests.tearDown() }
        // Resolve the peer first, so that the big frame leaves at once and not from ARP's queue.
        let first = try run(in: guests.namespaces[0], ["ping", "-c", "1", "-w", "30", guests.addresses[1]])
        #expect(first.status == 0, "\(first.output)")
        try ip(["-n", guests.namespaces[0], "link", "set", guests.interfaces[0], "mtu", "9000"])
        // 4000 bytes of ICMP in one frame (-M do: no fragments); no reply can come.
        let big = try run(in: guests.namespaces[0], ["ping", "-c", "1", "-W", "1", "-M", "do", "-s", "4000", guests.addresses[1]])
        #expect(big.status != 0, "\(big.output)")
        let small = try run(in: guests.namespaces[0], ["ping", "-c", "1", "-w", "30", guests.addresses[1]])
        #expect(small.status == 0, "\(small.output)")
        guests.stopBridges()
        #expect(guests.bridges[0].error == nil)
        #expect(guests.bridges[0].bridge.counters.malformedFromTAP >= 1, "\(guests.bridges[0].bridge.counters)")
    }

    static let toolsSkipReason = "needs root, /dev/net/tun, ping and iperf3 (scripts/install-deps.sh installs them)"

    /// Real tools between two kernel-stack guests, emulated and switched in to VFs of either NIC
    /// model (descriptor rings, or submission/completion queues): kernel ICMP
    /// (`ping -c 3`) and an iperf3 TCP run (server in one namespace, client in the other) both
    /// complete, and in passthrough the host's status still says passthrough afterwards.
    @Test(
        .enabled(if: TAPDevice.isAvailable && toolIsInstalled("ping") && toolIsInstalled("iperf3"), Comment(rawValue: toolsSkipReason)),
        arguments: ["emulated", "passthrough"], ["npa-dring", "npa-cq"])
    func pingAndIperf3CrossBothModes(mode: String, model: String) throws {
        let passthrough = mode == "passthrough"
        let fixture = try PassthroughFixture(
            model: model, a: GuestSpec("tap-a", memoryMiB: 32, bufferSize: 16320), b: GuestSpec("tap-b", memoryMiB: 32, bufferSize: 16320),
            switchIn: (passthrough, passthrough))
        defer { fixture.stop() }
        for nic in [fixture.a, fixture.b] { #expect(nic.mode == mode, "\(nic.lastSwitchError ?? "")") }
        // With offloads: super-frames up to a buffer, cut by device emulation, or by the shell on
        // a VF whose plugin does not declare TSO.
        let guests = try KernelStackGuests(nics: [fixture.a, fixture.b], subnet: 78, offloads: true)
        defer { guests.tearDown() }
        let namespaces = guests.namespaces

        // -w 60 with -c 3: exit 0 only once three replies came back, however long ARP takes.
        let ping = try run(in: namespaces[0], ["ping", "-c", "3", "-w", "60", "10.78.0.2"])
        #expect(ping.status == 0, "\(ping.output)")

        let server = try start(in: namespaces[1], ["iperf3", "-s", "-1", "-B", "10.78.0.2"])
        defer { if server.isRunning { server.terminate() } }
        let listening = try eventually(timeoutMilliseconds: 60_000) {
            try ipOutput(["netns", "exec", namespaces[1], "ss", "-Hltn", "sport = :5201"]).contains("5201")
        }
        #expect(listening, "iperf3 server never listened")
        let client = try run(in: namespaces[0], ["iperf3", "-c", "10.78.0.2", "-t", "2", "-J"])
        #expect(client.status == 0, "\(client.output)")
        let report = try JSONSerialization.jsonObject(with: Data(client.output.utf8)) as? [String: Any]
        let received = ((report?["end"] as? [String: Any])?["sum_received"] as? [String: Any])?["bytes"] as? Int
        #expect((received ?? 0) > 0, "\(client.output)")
        server.waitUntilExit()
        #expect(server.terminationStatus == 0)

        guests.stopBridges()
        for bridge in guests.bridges {
            #expect(bridge.error == nil)
            #expect(bridge.bridge.counters.badVirtioHeader == 0)
        }
        #expect(guests.bridges[0].bridge.counters.superFramesToVNIC > 0, "\(guests.bridges[0].bridge.counters)")
        for name in ["tap-a", "tap-b"] { #expect(try fixture.host.status(of: name)?.mode == mode) }
    }
}
