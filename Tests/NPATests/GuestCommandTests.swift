import Foundation
import NPAControlProtocol
import NPAShell
import NPATestSupport
import NPAWorkload
import Testing

/// `npa guest` as a user runs it: what it verifies, what it prints where, and its exit status
/// (0 verified, 1 not verified, 2 could not go on, 64 usage).
@Suite(.serialized) struct GuestCommandTests {
    /// The whole of standard output, parsed as one JSON summary (fails if anything else is there).
    func onlySummary(_ stdout: String) throws -> TrafficSummary {
        try TrafficSummary.decode(stdout.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// The README's example: a receiver told only the count verifies all four flows of a sender,
    /// reports the 64-byte frames it actually got, prints one JSON object, and exits 0.
    @Test func aReceiverVerifiesEveryFlowItSeesAndCountsTheBytesItGot() throws {
        let host = try TestHost()
        defer { host.stop() }
        let recv = try NPAProcess.attachedGuest(
            "recv", host: host, name: "rx", mac: "02:00:00:00:01:02",
            ["--count", "8000", "--timeout", "120", "--json"])
        let send = try NPAProcess.guest(
            "send", host: host, name: "tx", mac: "02:00:00:00:01:01",
            ["--to", "02:00:00:00:01:02", "--count", "8000", "--size", "64", "--flows", "4", "--rate", "20000", "--json"])
        let sent = send.finish()
        let received = recv.finish()
        let s = try onlySummary(sent.stdout), r = try onlySummary(received.stdout)
        #expect(sent.status == 0 && received.status == 0, "\(sent.stderr) \(received.stderr)")
        #expect(s.sent == 8000)
        #expect(r.received == 8000 && r.lost == 0 && r.invalid == 0 && r.duplicates == 0 && r.outOfOrder == 0)
        #expect(r.frameBytes == 64)
        #expect(r.bytes == 8000 * 64)
        // Throughput from those bytes: Gbit/s and Mpps agree on 64-byte frames.
        #expect(abs(r.gbps - r.mpps * 1e6 * 64 * 8 / 1e9) < 1e-6 * max(1, r.gbps))
        #expect(received.stderr.contains("attached as 02:00:00:00:01:02"))
    }

    /// Ctrl-C (SIGINT) or SIGTERM ends a guest cleanly: it prints its summary so far, detaches
    /// (the host's event log says "guest detached", not a lost connection), and an echo, which
    /// runs until stopped, exits 0.
    @Test(arguments: [SIGINT, SIGTERM]) func aSignalEndsTheWorkloadAndTheGuestDetaches(signal: Int32) throws {
        let host = try TestHost()
        defer { host.stop() }
        let echo = try NPAProcess.attachedGuest("echo", host: host, name: "mirror", ["--json"])
        kill(echo.process.processIdentifier, signal)
        let result = echo.finish()
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("npa guest mirror: stopped by a signal"), "\(result.stderr)")
        #expect(try onlySummary(result.stdout).role == "echo")
        // The host takes the guest's detach on its own connection: wait for it (a generous bound).
        var detach: HostEvent?
        for _ in 0..<6000 where detach == nil {
            detach = try host.admin.allEvents(after: 0).events.last { $0.kind == .detach && $0.vnic == "mirror" }
            if detach == nil { usleep(10_000) }
        }
        let event = try #require(detach)
        #expect(event.detail.hasSuffix("guest detached"), "\(event.detail)")
    }

    /// Frames that never arrive make the receiver exit 1 with one line saying how many.
    @Test func lossExitsOneAndSaysWhatWasLost() throws {
        let host = try TestHost()
        defer { host.stop() }
        let recv = try NPAProcess.attachedGuest(
            "recv", host: host, name: "rx", mac: "02:00:00:00:02:02",
            ["--count", "2000", "--timeout", "600", "--json", "--until-eof"])
        let send = try NPAProcess.guest(
            "send", host: host, name: "tx", mac: "02:00:00:00:02:01",
            ["--to", "02:00:00:00:02:02", "--count", "1500", "--rate", "20000", "--json"])
        #expect(send.finish().status == 0)
        // The sender waited for its frames to complete: they are in the receiver's ring.
        let out = recv.finish()
        let r = try onlySummary(out.stdout)
        #expect(r.received == 1500 && r.lost == 500)
        #expect(out.status == 1)
        #expect(out.stderr.contains("not verified: 500 lost"), "\(out.stderr)")
    }

    /// A host refusal is not a usage error: one line, exit 2, no usage text.
    @Test func aRefusedAttachIsOneLineAndExitTwo() throws {
        let host = try TestHost()
        defer { host.stop() }
        let taken = try attach(host, "taken")
        let out = try NPAProcess.guest("recv", host: host, name: "taken", ["--count", "1"]).finish()
        #expect(out.status == 2)
        #expect(out.stderr.contains("already attached"), "\(out.stderr)")
        #expect(!out.stderr.contains("Usage"))
        #expect(out.stderr.split(separator: "\n").count == 1, "\(out.stderr)")
        _ = taken
    }

    /// A guest whose host is killed says so in one line and exits 2 at once — not at its
    /// timeout — whether it is receiving, sending at a rate, or holding after its workload.
    @Test(arguments: [
        ["recv", "--count", "1000000"], ["send", "--to", "02:00:00:00:04:09", "--count", "100000000", "--rate", "1000"],
        ["recv", "--count", "0", "--hold"],
    ])
    func aGuestWhoseHostDiesSaysSoAndExits(_ workload: [String]) throws {
        let host = try HostProcess()
        defer { host.end() }
        #expect(host.waitUntilListening())
        let guest = try NPAProcess(
            ["guest"] + workload.prefix(1) + ["--host", host.socketPath, "--name", "g", "--timeout", "600"] + workload.dropFirst())
        defer { guest.kill() }
        #expect(guest.waitUntilAttached())
        host.process.kill()
        // The guest ends by itself when it sees the host gone; standard input stays open until
        // then (closing it at once would race the hang-up: `--hold` also ends on end of input).
        #expect(eventually(timeoutMilliseconds: 60_000) { !guest.process.isRunning }, "the guest outlived its host")
        let out = guest.finish()
        #expect(out.status == 2)
        let lines = out.stderr.split(separator: "\n").filter { !$0.hasPrefix("attached as") }
        #expect(lines.count == 1 && lines.first?.contains("is gone") == true, "\(out.stderr)")
    }

    /// Jumbo frames reach a receiver that was not told their size: it verifies what each frame
    /// says about itself.
    @Test func aReceiverTakesJumboFramesWithoutBeingTold() throws {
        let host = try TestHost()
        defer { host.stop() }
        let recv = try NPAProcess.attachedGuest(
            "recv", host: host, name: "rx", mac: "02:00:00:00:03:02",
            ["--count", "500", "--timeout", "120", "--json"])
        let send = try NPAProcess.guest(
            "send", host: host, name: "tx", mac: "02:00:00:00:03:01",
            ["--to", "02:00:00:00:03:02", "--count", "500", "--size", "9014", "--rate", "5000", "--json"])
        #expect(send.finish().status == 0)
        let out = recv.finish()
        let r = try onlySummary(out.stdout)
        #expect(out.status == 0, "\(out.stderr)")
        #expect(r.received == 500 && r.frameBytes == 9014 && r.invalid == 0)
    }

    /// Usage errors exit 64 and name the option; options a workload would ignore are refused.
    @Test(arguments: [
        (["recv", "--rate", "5"], "--rate"), (["recv", "--to", "02:00:00:00:00:01"], "--to"),
        (["recv", "--flow-base", "3"], "--flow-base"), (["recv", "--flows", "2"], "--flows"), (["echo", "--size", "64"], "--size"),
        (["send", "--to", "02:00:00:00:00:01", "--flows", "0"], "--flows"),
        (["recv", "--name-override"], "name-override"),
        (["tap", "--count", "5"], "--count"), (["tap", "--to", "02:00:00:00:00:01"], "--to"), (["recv", "--ifname", "t0"], "--ifname"),
        (["tap", "--ifname", "sixteen-bytes-xx"], "--ifname"), (["tap", "--netns", "../x"], "--netns"),
        (["recv", "--netns", "n"], "--netns"),
    ])
    func usageErrorsExit64AndNameTheOption(_ arguments: [String], _ option: String) throws {
        let out = try NPAProcess(["guest"] + arguments.prefix(1) + ["--name", "g"] + arguments.dropFirst()).finish()
        #expect(out.status == 64)
        #expect(out.stderr.contains(option), "\(out.stderr)")
    }

    /// A name longer than the host accepts is refused by its rule before anything is created.
    @Test func anOverlongNameIsRefusedByTheRule() throws {
        let out = try NPAProcess(["guest", "recv", "--name", String(repeating: "n", count: 5000)]).finish()
        #expect(out.status == 64)
        #expect(out.stderr.contains(GuestName.rule), "\(out.stderr)")
        #expect(!out.stderr.contains("memfd"))
    }

    /// `bench --plot` into a folder that does not exist fails before measuring anything.
    @Test func benchRefusesAPlotPathItCannotWriteBeforeItRuns() throws {
        let out = try NPAProcess(["bench", "--plot", "/nonexistent-\(getpid())/chart.svg"]).finish()
        #expect(out.status == 2)
        #expect(out.stderr.contains("cannot create"), "\(out.stderr)")
        #expect(out.stdout.isEmpty)
    }
}

/// The receiver's verifier, which is told nothing about the flows it will see.
@Suite struct FlowVerifierTests {
    func record(_ v: inout FlowVerifier, _ flow: UInt32, _ sequences: [UInt64]) {
        for s in sequences { v.record(flow: flow, sequence: s, length: 100) }
    }

    @Test func flowsAreLearnedOnFirstSightAndCheckedEachOnTheirOwn() {
        var v = FlowVerifier()
        record(&v, 7, [0, 1, 2])
        record(&v, 1_000_000, [0, 1])
        record(&v, 7, [3])
        #expect(v.flows == 2 && v.unique == 6 && v.bytes == 600)
        #expect(v.duplicates == 0 && v.outOfOrder == 0 && v.invalid == 0 && v.gaps == 0)
    }

    @Test func duplicatesLateFramesAndGapsAreToldApart() {
        var v = FlowVerifier()
        record(&v, 0, [0, 1, 3, 4])  // 2 is missing so far
        #expect(v.gaps == 1)
        record(&v, 0, [2])  // late, not a duplicate
        #expect(v.outOfOrder == 1 && v.duplicates == 0 && v.unique == 5 && v.gaps == 0)
        record(&v, 0, [2, 4, 0])  // each seen before
        #expect(v.duplicates == 3 && v.unique == 5)
        // A jump past the window forgets what it skipped; a frame from before the window is too late to judge.
        record(&v, 0, [UInt64(FlowVerifier.windowFrames) * 3])
        #expect(v.gaps == FlowVerifier.windowFrames * 3 - 5)
        record(&v, 0, [1])
        #expect(v.tooLate == 1 && v.duplicates == 3 && v.unique == 6)
    }

    @Test func flowsBeyondTheBoundAreInvalidNotAllocated() {
        var v = FlowVerifier(maximumFlows: 4)
        for flow in UInt32(0)..<6 { record(&v, flow, [0]) }
        #expect(v.flows == 4 && v.unique == 4 && v.invalid == 2)
        record(&v, UInt32.max, [0])  // the acknowledgement flow is not a data flow
        #expect(v.invalid == 3)
    }

    @Test func aFrameWhoseLengthDisagreesWithItselfIsInvalid() {
        var v = FlowVerifier()
        var bytes = [UInt8](repeating: 0, count: 256)
        bytes.withUnsafeMutableBytes { buffer in
            _ = TrafficFrame.write(
                into: buffer, destination: MACAddress(value: 0x0200_0000_0002), source: MACAddress(value: 0x0200_0000_0001),
                flow: 3, sequence: 0, length: 200)
        }
        bytes.withUnsafeBytes { v.record(UnsafeRawBufferPointer(rebasing: $0[0..<200])) }
        bytes.withUnsafeBytes { v.record(UnsafeRawBufferPointer(rebasing: $0[0..<256])) }
        #expect(v.unique == 1 && v.invalid == 1 && v.bytes == 200)
    }
}

/// The guest name rule holds for library users too: refused before any kernel object is named.
@Suite struct GuestNameTests {
    @Test func anOverlongNameIsRefusedByTheGuestAPIWithTheRule() throws {
        let host = try TestHost()
        defer { host.stop() }
        var c = VirtualNIC.Configuration(name: String(repeating: "n", count: 5000), mac: nil)
        c.memoryBytes = 4 << 20
        #expect(
            performing: { try VirtualNIC.attach(hostSocket: host.socketPath, configuration: c) },
            throws: { ($0 as? VirtualNIC.AttachError)?.description.contains(GuestName.rule) == true })
        #expect(GuestName.isValid("web-1.a_b") && !GuestName.isValid("") && !GuestName.isValid("naïve") && !GuestName.isValid("a b"))
    }
}

/// What makes each workload's run "not verified" (exit status 1 of `npa guest` and `npa demo`).
@Suite struct TrafficSummaryFailureTests {
    @Test func eachRoleFailsOnWhatItCanSee() {
        var send = TrafficSummary(role: "send")
        send.expected = 100
        send.sent = 100
        #expect(send.failures.isEmpty)
        send.sent = 90
        send.dropped = ["unknown_destination": 3]
        #expect(send.failures == ["sent 90 of 100", "3 dropped by the vNIC"])

        var recv = TrafficSummary(role: "recv")
        recv.expected = 100
        recv.received = 100
        #expect(recv.failures.isEmpty)
        recv.received = 98
        recv.lost = 2
        recv.duplicates = 1
        recv.outOfOrder = 4
        recv.invalid = 5
        #expect(recv.failures == ["2 lost", "1 duplicates", "4 out of order", "5 invalid"])

        var echo = TrafficSummary(role: "echo")
        echo.received = 10
        echo.sent = 7
        #expect(echo.failures == ["echoed 7 of 10"])

        var duplex = TrafficSummary(role: "duplex")
        duplex.expected = 50
        duplex.sent = 50
        duplex.received = 50
        #expect(duplex.failures.isEmpty)
        duplex.sent = 49
        duplex.lost = 1
        #expect(duplex.failures == ["sent 49 of 50", "1 lost"])
    }
}
