import Foundation
import NPAAdmin
import NPAControlProtocol
import NPAHost
import NPAShell
import NPASystem
import NPATestSupport
import Testing

/// The host's event log (issue 13): what happened, in the order it happened, with its reasons;
/// the last `event_log_size` events kept, the rest counted as lost for a reader; bad requests
/// answered with clear errors.
@Suite(.serialized) struct HostEventLogTests {
    /// Waits (generously, on a condition, never on a time) until `done` holds.
    static func waitUntil(_ what: String, _ done: () throws -> Bool) throws {
        let deadline = Clock.monotonicNanoseconds() + 60_000_000_000
        while try !done() {
            guard Clock.monotonicNanoseconds() < deadline else { throw Failed("never happened: \(what)") }
            EngineThread.sleep(microseconds: 1000)
        }
    }

    struct Failed: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    /// Lets the guest carry out the switch the host asked for (its next data-path calls do).
    static func carryOut(_ guest: VirtualNIC, until mode: String) throws {
        try waitUntil("'\(guest.name)' in \(mode)") {
            _ = guest.reclaimTransmitted()
            return guest.mode == mode
        }
    }

    @Test func aScriptedSequenceIsLoggedInOrderWithItsKindsNamesAndReasons() throws {
        let host = try TestHost(configuration: .withNIC(model: "npa-dring", vfs: 2))
        defer { host.stop() }
        var alpha: VirtualNIC? = try attach(host, "alpha", mac: "02:00:00:00:e0:01")
        let a = try #require(alpha)
        try host.switchIn(a)
        try Self.carryOut(a, until: "passthrough")
        try host.admin.switchVNIC(name: "alpha", toPassthrough: false)
        try Self.carryOut(a, until: "emulated")
        try host.switchIn(a)
        try Self.carryOut(a, until: "passthrough")
        try host.admin.resetVF(name: "alpha")
        try Self.carryOut(a, until: "emulated")
        #expect(throws: (any Error).self) { try attach(host, "beta", mac: "02:00:00:00:e0:01") }
        alpha?.detach()
        alpha = nil
        try Self.waitUntil("alpha's detach logged") { try host.admin.allEvents(after: 0).events.contains { $0.kind == .detach } }

        let log = try host.admin.allEvents(after: 0)
        #expect(log.lost == 0)
        #expect(log.events.map(\.sequence) == Array(1...UInt64(log.events.count)))
        let switchIn: [(HostEvent.Kind, String, String)] = [
            (.switchPhase, "alpha", "switch-in requested: nic0/vf"), (.switchPhase, "alpha", "switch-in offered: plugin npa-dring"),
            (.switchPhase, "alpha", "queues programmed"), (.switchPhase, "alpha", "passthrough on nic0/vf"),
        ]
        let guestSwitchOut: [(HostEvent.Kind, String, String)] = [
            (.switchPhase, "alpha", "switch-out offered"), (.switchPhase, "alpha", "quiesced, MAC back on the vswitch"),
            (.switchPhase, "alpha", "emulated after"),
        ]
        let expected: [(HostEvent.Kind, String, String)] =
            [(.attach, "alpha", "attached as vNIC 1, MAC 02:00:00:00:e0:01")] + switchIn
            + [(.switchPhase, "alpha", "switch-out requested from nic0/vf")] + guestSwitchOut + switchIn
            + [(.vfReset, "alpha", "reset (FLR): VF reset by the host; switching the guest out")] + guestSwitchOut
            + [(.refusal, "beta", "MAC 02:00:00:00:e0:01 is already used by another vNIC"), (.detach, "alpha", "guest detached")]
        let seen = log.events.map { "\($0.kind.rawValue) \($0.vnic ?? "-"): \($0.detail)" }
        #expect(log.events.count == expected.count, "\(seen.joined(separator: "\n"))")
        for (event, (kind, vnic, detail)) in zip(log.events, expected) {
            #expect(event.kind == kind && event.vnic == vnic && event.detail.contains(detail), "\(event.line) expected \(kind) \(detail)")
        }
        // Times: monotonic, and the wall clock is today's.
        #expect(zip(log.events, log.events.dropFirst()).allSatisfy { $0.uptimeNanoseconds <= $1.uptimeNanoseconds })
        let now = UInt64(Date().timeIntervalSince1970 * 1e9)
        #expect(log.events.allSatisfy { $0.wallClockNanoseconds <= now && now - $0.wallClockNanoseconds < 3_600_000_000_000 })
    }

    @Test func theRingKeepsTheLastNAndAReaderLearnsHowManyItMissed() throws {
        var config = HostConfiguration()
        config.eventLogSize = 8
        let host = try TestHost(configuration: config)
        defer { host.stop() }
        // N + 10 events: refusals of switches of vNICs that are not there.
        for i in 1...18 {
            #expect(throws: AdminClient.Failure.self) { try host.admin.switchVNIC(name: "ghost-\(i)", toPassthrough: true) }
        }
        let all = try host.admin.allEvents(after: 0)
        #expect(all.lost == 10)
        #expect(all.capacity == 8)
        #expect(all.events.map(\.sequence) == Array(11...18))
        #expect(all.events.map(\.vnic) == (11...18).map { "ghost-\($0)" })
        #expect(all.events.allSatisfy { $0.kind == .refusal && $0.detail == "admin request: no vNIC named '\($0.vnic ?? "")'" })
        // A reader that had read up to 5 missed 6...10; one that had read 12 missed nothing.
        let behind = try host.admin.events(after: 5)
        #expect(behind.lost(after: 5) == 5 && behind.oldestHeld == 11 && behind.latest == 18)
        #expect(behind.events.first?.sequence == 11)
        let current = try host.admin.events(after: 12)
        #expect(current.lost(after: 12) == 0 && current.events.map(\.sequence) == Array(13...18))
        #expect(try host.admin.events(after: 18).events.isEmpty)
    }

    @Test func aPageHoldsWhatFitsAndThePagesTogetherHoldEverything() throws {
        var config = HostConfiguration()
        config.eventLogSize = 1000
        let host = try TestHost(configuration: config)
        defer { host.stop() }
        let long = String(repeating: "x", count: 64)
        for i in 1...400 {
            #expect(throws: AdminClient.Failure.self) { try host.admin.switchVNIC(name: "\(long)-\(i)", toPassthrough: true) }
        }
        let first = try host.admin.events(after: 0)
        #expect(first.events.count < 400 && first.events.count > 10)
        let all = try host.admin.allEvents(after: 0)
        #expect(all.lost == 0 && all.events.map(\.sequence) == Array(1...400))
    }

    @Test func badRequestsGetClearErrors() throws {
        let host = try TestHost()
        defer { host.stop() }
        #expect(throws: AdminClient.Failure.self) { try host.admin.switchVNIC(name: "nobody", toPassthrough: true) }
        // A sequence the host has not reached.
        #expect {
            try host.admin.events(after: 99)
        } throws: { error in
            guard case .refused(let code, let message) = error as? AdminClient.Failure else { return false }
            return code == ControlMessage.ErrorCode.invalidArgument
                && message == "no events after sequence 99: the newest is 1 (was the host restarted? start again from 0)"
        }
        // A malformed request: an events request whose sequence is cut short.
        let socket = try SeqPacketSocket.connect(path: host.adminSocketPath)
        var bytes = ControlMessage.eventsRequest(after: 1).encode()
        bytes.removeLast(3)
        bytes[8] = 5
        try socket.send(bytes)
        #expect(socket.waitReadable(timeoutMilliseconds: 60_000))
        let reply = try ControlMessage.parse(try #require(try socket.receive()).bytes)
        #expect(
            reply
                == .error(
                    code: ControlMessage.ErrorCode.malformed, message: "malformed message: message truncated: needed 8 more bytes, have 5"))
        // A host that is not there.
        let nowhere = AdminClient(socketPath: NSTemporaryDirectory() + "npa-no-host-\(getpid()).sock.admin")
        #expect {
            try nowhere.events(after: 0)
        } throws: { error in
            guard case .unreachable = error as? AdminClient.Failure else { return false }
            return "\(error)".contains("cannot reach the host's admin socket")
        }
        // A guest may not read the host's events.
        let guest = try AdminSocketTests.RawGuest(socketPath: host.socketPath, name: "nosy")
        guard case .error(let code, _) = try guest.request(.eventsRequest(after: 0)) else {
            Issue.record("a guest's events request was answered")
            return
        }
        #expect(code == ControlMessage.ErrorCode.notPermitted)
    }

    /// A guest's attach under a name far longer than any guest's is refused, and its event keeps
    /// only the first bytes of the name: no event can outgrow a reply page.
    @Test func aHostileNameIsCutInTheLog() throws {
        let host = try TestHost()
        defer { host.stop() }
        let control = try SeqPacketSocket.connect(path: host.socketPath)
        let memory = try SharedMemory(name: "npa-test-events", size: 2 << 20)
        let doorbell = try EventNotifier(), interrupt = try EventNotifier()
        let name = String(repeating: "n", count: 50_000)
        try control.send(
            ControlMessage.attach(.init(name: name, mac: nil, interruptVectors: 1)).encode(),
            descriptors: [memory.fd, doorbell.fd, interrupt.fd])
        #expect(control.waitReadable(timeoutMilliseconds: 60_000))
        let reply = try ControlMessage.parse(try #require(try control.receive()).bytes)
        #expect(reply == .error(code: ControlMessage.ErrorCode.invalidArgument, message: GuestName.rule))
        let events = try host.admin.allEvents(after: 0).events
        #expect(events.map(\.kind) == [.refusal])
        #expect(events.first?.vnic == String(repeating: "n", count: GuestName.maximumLength - 3) + "...")
        #expect(events.first?.detail == GuestName.rule)
    }

    /// A guest that sends bad requests in a loop has its refusals recorded at the 1st, 2nd, 4th,
    /// 8th...: it cannot push the rest of the log out. An administrator's are all recorded.
    @Test func aGuestsRefusalsAreRecordedAtPowersOfTwo() throws {
        let host = try TestHost()
        defer { host.stop() }
        let guest = try AdminSocketTests.RawGuest(socketPath: host.socketPath, name: "noisy")
        for _ in 1...20 {
            guard case .registerResult(let status, _, _) = try guest.request(.registerRead(bar: 2, offset: 0)) else {
                Issue.record("a read of BAR 2 was not answered with a register result")
                return
            }
            #expect(status == ControlMessage.ErrorCode.invalidArgument)
        }
        let events = try host.admin.allEvents(after: 0).events
        #expect(events.map(\.kind) == [.attach, .refusal, .refusal, .refusal, .refusal, .refusal])
        let bar1 = "only BAR1 registers are reached through the control channel"
        #expect(
            events.dropFirst().map(\.detail) == [bar1]
                + [2, 4, 8, 16].map { "\(bar1) (refusal \($0) on this connection; recorded at 1, 2, 4, 8, ...)" })
        #expect(events.allSatisfy { $0.vnic == "noisy" })
    }

    @Test func theEventRoundTripsOnTheWireAndInJSON() throws {
        let event = HostEvent(
            sequence: 7, uptimeNanoseconds: 1_500_000, wallClockNanoseconds: 1_796_338_267_123_456_789, kind: .vfReset, vnic: "alpha",
            detail: "nic0/vf1 reset \"now\"")
        let batch = HostEventBatch(
            oldestHeld: 3, latest: 9, capacity: 8,
            events: [
                event,
                .init(
                    sequence: 8, uptimeNanoseconds: 2, wallClockNanoseconds: 3, kind: .refusal, vnic: nil, detail: ""),
            ])
        #expect(try ControlMessage.parse(ControlMessage.eventsReply(batch).encode()) == .eventsReply(batch))
        #expect(try ControlMessage.parse(ControlMessage.eventsRequest(after: 42).encode()) == .eventsRequest(after: 42))
        #expect(
            event.json()
                == #"{"detail":"nic0/vf1 reset \"now\"","kind":"vf-reset","seq":7,"time":"2026-12-03T22:51:07.123456Z","uptime_ns":1500000,"vnic":"alpha","wall_ns":1796338267123456789}"#
        )
        #expect(try JSONDecoder().decode(HostEvent.self, from: Data(event.json().utf8)) == event)
        #expect(event.line == #"#7 22:51:07.123456 vf-reset      alpha  nic0/vf1 reset "now""#)
        #expect(!batch.events[1].json().contains("vnic"))
    }
}

/// Migrations in both hosts' logs: each phase change in order, the guest's re-attach at the
/// destination while it awaits the guest, and its detach at the source once forwarding is done
/// (the source keeps the stopped device for forwarding until then).
@Suite(.serialized) struct MigrationEventLogTests {
    /// A migration event as "from -> to" (or "begins"), any other as its kind.
    static func step(_ e: HostEvent) -> String {
        guard e.kind == .migration else { return e.kind.rawValue }
        if e.detail.contains(" begins ") { return "begins" }
        guard let m = e.detail.firstMatch(of: /([a-z-]+) -> ([a-z-]+)/) else { return e.detail }
        return "\(m.1) -> \(m.2)"
    }

    @Test func bothHostsLogTheMigrationsPhasesInOrder() throws {
        let pair = try MigrationPair()
        defer { pair.stop() }
        let mover = try attach(pair.a, "mover", mac: "02:00:00:00:e2:01", queues: 1)
        let record = try #require(try pair.migrate(mover, from: pair.a, to: pair.b))
        #expect(record.phase == "completed", "\(record.error ?? "")")
        try HostEventLogTests.waitUntil("the destination's migration completed") {
            try pair.b.admin.allEvents(after: 0).events.contains { $0.kind == .migration && $0.detail.contains("-> completed") }
        }
        try HostEventLogTests.waitUntil("the source's detach") {
            try pair.a.admin.allEvents(after: 0).events.contains { $0.kind == .detach }
        }
        let atA = try pair.a.admin.allEvents(after: 0).events.filter { $0.vnic == "mover" }
        #expect(
            atA.map(Self.step) == [
                "attach", "begins", "connecting -> preparing", "preparing -> transferring", "transferring -> awaiting-guest",
                "awaiting-guest -> forwarding", "forwarding -> completed", "detach",
            ], "\(atA.map(\.line).joined(separator: "\n"))")
        #expect(atA.count > 1 && atA[1].detail.hasPrefix("migration \(record.id) to \(pair.address(of: pair.b)) begins"))
        let atB = try pair.b.admin.allEvents(after: 0).events.filter { $0.vnic == "mover" }
        #expect(
            atB.map(Self.step) == [
                "awaiting-prepare -> awaiting-state", "awaiting-state -> awaiting-guest", "attach", "awaiting-guest -> forwarding",
                "forwarding -> completed",
            ], "\(atB.map(\.line).joined(separator: "\n"))")
        #expect(atB.first { $0.kind == .attach }?.detail.hasPrefix("resumed here from another host as vNIC") == true)
    }
}

/// A hostile guest in the log: its first fault of a kind when it is counted, and the error
/// state when its faults reach the limit — once each, however many descriptors were bad.
@Suite(.serialized) struct HostileGuestEventLogTests {
    @Test func aGuestsFirstFaultAndItsErrorStateAreLoggedOnce() throws {
        let host = try TestHost()
        defer { host.stop() }
        let evil = try attach(host, "evil")
        let size = evil.guestMemoryForTesting.size
        for slot in 0..<256 { HostileGuestTests().writeTx(evil, slot: slot, address: size + 1, length: 64, generation: 1, eop: true) }
        evil.kickForTesting()
        #expect(try eventually { try host.status(of: "evil")?.state == "error" })
        let events = try host.admin.allEvents(after: 0).events.filter { $0.vnic == "evil" }
        #expect(events.map(\.kind) == [.attach, .guestFault, .guestError], "\(events.map(\.line).joined(separator: "\n"))")
        #expect(events.count == 3 && events[1].detail.hasPrefix("bad_descriptor"))
        #expect(events.count == 3 && events[2].detail == "vNIC put in the error state: 256 descriptor faults")
    }
}

/// A switch step the guest never answers ends in the log as the host decided it.
@Suite(.serialized) struct SwitchDeadlineEventLogTests {
    @Test func aSwitchInTheGuestNeverAnswersIsLoggedAsFailedWithItsReason() throws {
        let fixture = try PassthroughFixture(
            model: "npa-dring", vfs: 1, a: GuestSpec("a", mac: "02:00:00:00:e3:01", queues: 1, memoryMiB: 32),
            b: GuestSpec("b", mac: "02:00:00:00:e3:02", queues: 1, memoryMiB: 32), switchIn: (false, false)
        ) { $0.switchTimeoutMilliseconds = 200 }
        defer { fixture.stop() }
        let host = fixture.host
        // `a` makes no data-path call from here on: it never sees DIC.
        try host.admin.switchVNIC(name: "a", toPassthrough: true)
        #expect(try eventually { try host.status(of: "a")?.switchPending == nil })
        let events = try host.admin.allEvents(after: 0).events.filter { $0.vnic == "a" }
        #expect(events.map(\.kind) == [.attach, .switchPhase, .switchFailed], "\(events.map(\.line).joined(separator: "\n"))")
        #expect(events.last?.detail.hasPrefix("switch-in timed out: the guest did not answer within 200 ms; VF released") == true)
    }
}
