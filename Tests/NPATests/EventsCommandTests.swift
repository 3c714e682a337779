import Foundation
import NPAAdmin
import NPAControlProtocol
import NPAHost
import NPAShell
import NPASystem
import NPATestSupport
import Testing

/// `npa events` through the built binary: it prints the host's events as JSON lines, follows
/// new ones as they come, and says clearly when the host is not there or the request is wrong.
@Suite(.serialized) struct EventsCommandTests {
    /// Kills `process` if it is still running after a generous while, so that a missing line
    /// fails the test instead of hanging it (no outcome depends on this time).
    static func watchdog(_ process: NPAProcess) -> DispatchWorkItem {
        let kill = DispatchWorkItem { process.kill() }
        DispatchQueue.global().asyncAfter(deadline: .now() + 120, execute: kill)
        return kill
    }

    @Test func theJSONLinesAreTheHostsEventsInOrder() throws {
        let host = try TestHost(configuration: .withNIC(model: "npa-dring", vfs: 2))
        defer { host.stop() }
        let a = try attach(host, "alpha", mac: "02:00:00:00:e1:01")
        try host.switchIn(a)
        #expect(throws: AdminClient.Failure.self) { try host.admin.switchVNIC(name: "ghost", toPassthrough: true) }
        let p = try NPAProcess(["events", "--host", host.socketPath, "--json"])
        let (status, stdout, stderr) = p.finish()
        #expect(status == 0, "\(stderr)")
        let events = try stdout.split(separator: "\n").map { try JSONDecoder().decode(HostEvent.self, from: Data($0.utf8)) }
        let expected = try host.admin.allEvents(after: 0).events.prefix(events.count)
        #expect(events == Array(expected))
        #expect(events.first?.kind == .attach && events.first?.vnic == "alpha")
        #expect(events.contains { $0.kind == .switchPhase && $0.detail.hasPrefix("passthrough on nic0/vf") })
        #expect(events.last?.kind == .refusal && events.last?.vnic == "ghost")
        #expect(events.map(\.sequence) == Array(1...UInt64(events.count)))
    }

    @Test func followPrintsAnEventThatHappensAfterItStarted() throws {
        let host = try TestHost()
        defer { host.stop() }
        #expect(throws: AdminClient.Failure.self) { try host.admin.switchVNIC(name: "early", toPassthrough: true) }
        let p = try NPAProcess(["events", "--host", host.socketPath, "--json", "--follow", "--interval-ms", "10"])
        let watchdog = Self.watchdog(p)
        defer {
            watchdog.cancel()
            p.kill()
            _ = p.finish()
        }
        // It has read the log as it was (the early event) before the late one happens.
        #expect(p.line(containing: "\"vnic\":\"early\"") != nil)
        #expect(throws: AdminClient.Failure.self) { try host.admin.switchVNIC(name: "late", toPassthrough: true) }
        let late = try #require(p.line(containing: "\"vnic\":\"late\""))
        let event = try JSONDecoder().decode(HostEvent.self, from: Data(late.utf8))
        #expect(event.sequence == 2 && event.kind == .refusal && event.detail == "admin request: no vNIC named 'late'")
    }

    @Test func aReaderThatFellBehindIsToldHowManyEventsItMissed() throws {
        var config = HostConfiguration()
        config.eventLogSize = 4
        let host = try TestHost(configuration: config)
        defer { host.stop() }
        for i in 1...7 {
            #expect(throws: AdminClient.Failure.self) { try host.admin.switchVNIC(name: "g\(i)", toPassthrough: true) }
        }
        let (status, stdout, _) = try NPAProcess(["events", "--host", host.socketPath]).finish()
        #expect(status == 0)
        let lines = stdout.split(separator: "\n")
        #expect(lines.first == "… 3 events lost (the host keeps the last 4)")
        #expect(lines.dropFirst().map { $0.split(separator: " ").first } == ["#4", "#5", "#6", "#7"])
        let (_, json, _) = try NPAProcess(["events", "--host", host.socketPath, "--json", "--after", "1"]).finish()
        #expect(json.split(separator: "\n").first == #"{"capacity":4,"lost":2}"#)
    }

    @Test func anUnknownHostAndASequenceFromTheFutureAreClearErrors() throws {
        let nowhere = NSTemporaryDirectory() + "npa-no-host-\(getpid()).sock"
        let (status, _, stderr) = try NPAProcess(["events", "--host", nowhere]).finish()
        #expect(status == 2)
        #expect(stderr.hasPrefix("npa: cannot reach the host's admin socket \(nowhere).admin"), "\(stderr)")
        let host = try TestHost()
        defer { host.stop() }
        let (futureStatus, _, futureError) = try NPAProcess(["events", "--host", host.socketPath, "--after", "5"]).finish()
        #expect(futureStatus == 2)
        #expect(futureError == "npa: no events after sequence 5: the newest is 0 (was the host restarted? start again from 0)\n")
        let (usageStatus, _, usageError) = try NPAProcess(["events", "--host", host.socketPath, "--interval-ms", "0"]).finish()
        #expect(usageStatus == 64)
        #expect(usageError.contains("--interval-ms"))
    }
}
