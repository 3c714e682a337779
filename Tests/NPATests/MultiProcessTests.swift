import Foundation
import NPAAdmin
import FoundationXML
import NPAControlProtocol
import NPAHost
import NPANICModel
import NPAShell
import NPATestSupport
import NPAWorkload
import Testing

/// The small real multi-process tier: guests are `npa guest` processes, as a user runs them.
@Suite(.serialized) struct MultiProcessTests {
    func summary(_ output: String) throws -> TrafficSummary {
        let line = output.split(separator: "\n").last { $0.contains("\"role\"") }.map(String.init) ?? ""
        return try TrafficSummary.decode(line)
    }

    @Test func atARateTheReceiverKeepsUpWithEveryFrameArrivesOnceInOrder() throws {
        let host = try TestHost()
        defer { host.stop() }
        let recv = try NPAProcess.attachedGuest(
            "recv", host: host, name: "rx", mac: "02:00:00:00:00:02",
            ["--count", "4000", "--timeout", "120", "--json"])
        let send = try NPAProcess.guest(
            "send", host: host, name: "tx", mac: "02:00:00:00:00:01",
            ["--to", "02:00:00:00:00:02", "--count", "4000", "--flows", "2", "--rate", "20000", "--json"])
        let s = try summary(send.finish().stdout)
        let r = try summary(recv.finish().stdout)
        #expect(s.sent == 4000)
        #expect(r.received == 4000)
        #expect(r.lost == 0)
        #expect(r.duplicates == 0)
        #expect(r.outOfOrder == 0)
        #expect(r.invalid == 0)
        #expect(r.dropped.isEmpty)
    }

    @Test func underLoadFromSeveralGuestsEveryFrameIsReceivedOnceOrCountedAsDropped() throws {
        let host = try TestHost()
        defer { host.stop() }
        let perSender = 20_000
        let recv = try NPAProcess.attachedGuest(
            "recv", host: host, name: "rx", mac: "02:00:00:00:00:10",
            ["--count", "\(3 * perSender)", "--timeout", "600", "--json", "--until-eof"])
        let senders = try (0..<3).map { i in
            try NPAProcess.guest(
                "send", host: host, name: "tx\(i)", mac: "02:00:00:00:00:2\(i)",
                [
                    "--to", "02:00:00:00:00:10", "--count", "\(perSender)", "--flows", "2", "--flow-base", "\(2 * i)", "--size", "256",
                    "--json",
                ])
        }
        var sent = 0
        for s in senders { sent += try summary(s.finish().stdout).sent }
        // Each sender waited for all its frames to complete, so the host has delivered or
        // dropped every one of them: now let the receiver take what is in its ring and stop.
        let r = try summary(recv.finish().stdout)
        #expect(sent == 3 * perSender)
        #expect(r.duplicates == 0)
        #expect(r.outOfOrder == 0)
        #expect(r.invalid == 0)
        // Nothing vanished: what did not arrive was counted by the receiving vNIC, with a reason.
        let dropped = r.dropped.values.reduce(0, +)
        #expect(UInt64(r.received) + dropped == UInt64(sent), "received \(r.received), dropped \(r.dropped)")
    }

    /// Two processes at full speed with `--window`: the sender waits for acknowledgements, so
    /// the receiver is never overrun: every frame arrives, nothing is even counted as dropped.
    @Test func aWindowedStreamBetweenProcessesDropsNothingAtFullSpeed() throws {
        let host = try TestHost()
        defer { host.stop() }
        let recv = try NPAProcess.attachedGuest(
            "recv", host: host, name: "rx", mac: "02:00:00:00:00:32",
            ["--count", "30000", "--window", "128", "--timeout", "120", "--json"])
        let send = try NPAProcess.guest(
            "send", host: host, name: "tx", mac: "02:00:00:00:00:31",
            ["--to", "02:00:00:00:00:32", "--count", "30000", "--size", "128", "--window", "128", "--wait-peer", "--json"])
        let s = try summary(send.finish().stdout)
        let r = try summary(recv.finish().stdout)
        #expect(s.sent == 30_000)
        #expect(r.received == 30_000)
        #expect(r.duplicates == 0 && r.outOfOrder == 0 && r.invalid == 0)
        #expect(r.dropped.isEmpty, "\(r.dropped)")
    }

    @Test func aGuestThatDiesIsTornDownAndTheOthersKeepRunning() throws {
        let host = try TestHost()
        defer { host.stop() }
        let a = try attach(host, "a"), b = try attach(host, "b")
        let doomed = try NPAProcess.attachedGuest("recv", host: host, name: "doomed", ["--count", "1000000", "--timeout", "600"])
        #expect(try host.admin.status().vnics.contains { $0.name == "doomed" })
        doomed.kill()
        _ = doomed.finish()
        #expect(try eventually { try !host.admin.status().vnics.contains { $0.name == "doomed" } })
        let f = ethernetFrame(to: b.mac, from: a.mac)
        #expect(a.send([f]) == 1)
        #expect(receiveFrames(b, count: 1) == [f])
        // Its name is free again.
        let again = try attach(host, "doomed")
        #expect(again.name == "doomed")
    }

    @Test func statusListsVNICsAsJSON() throws {
        let host = try TestHost()
        defer { host.stop() }
        let a = try attach(host, "alpha", mac: "02:00:00:00:00:0a")
        let out = try NPAProcess(["status", "--host", host.socketPath, "--json"]).finish()
        #expect(out.status == 0)
        let json = try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any]
        let vnics = json?["vnics"] as? [[String: Any]]
        #expect(vnics?.count == 1)
        #expect(vnics?.first?["name"] as? String == "alpha")
        #expect(vnics?.first?["mac"] as? String == "02:00:00:00:00:0a")
        #expect(vnics?.first?["mode"] as? String == "emulated")
        #expect(vnics?.first?["link"] as? String == "up")
        #expect((vnics?.first?["counters"] as? [String: Any])?["tx_frames"] != nil)
        let table = try NPAProcess(["status", "--host", host.socketPath]).finish()
        #expect(table.stdout.contains("alpha"))
        _ = a
    }

    @Test func aBadConfigFileIsOneLineAndANonZeroExit() throws {
        let path = NSTemporaryDirectory() + "npa-bad-\(getpid()).yaml"
        try "max_queues: 4\nuplink: fibre\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { unlink(path) }
        let out = try NPAProcess(["host", "--socket", NSTemporaryDirectory() + "npa-never.sock", "--config", path]).finish()
        #expect(out.status == 2)
        #expect(out.stderr.split(separator: "\n").count == 1, "\(out.stderr)")
        #expect(out.stderr.contains("\(path):2: uplink must be none, counting or a NIC name; no NIC is named 'fibre'"))
        let flag = try NPAProcess(["guest", "send", "--name", "x", "--to", "nonsense"]).finish()
        #expect(flag.status != 0)
        #expect(flag.stderr.contains("--to 'nonsense' is not a unicast MAC"))
    }

    @Test func theHostStopsCleanlyOnSIGTERMAndRemovesItsSocket() throws {
        let host = try HostProcess()
        #expect(host.waitUntilListening())
        kill(host.process.process.processIdentifier, SIGTERM)
        let out = host.process.finish()
        #expect(out.status == 0)
        #expect(!FileManager.default.fileExists(atPath: host.socketPath))
    }

    @Test func theDemoRunsAndAccountsForEveryFrame() throws {
        let out = try NPAProcess(["demo", "--frames", "3000", "--rate", "5000", "--json"]).finish()
        #expect(out.status == 0)
        let json = try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any]
        let guests = json?["guests"] as? [String: [String: Any]]
        #expect(guests?.count == 4)
        for (name, g) in guests ?? [:] {
            #expect(g["sent"] as? Int == 3000, "\(name)")
            #expect(g["duplicates"] as? Int == 0, "\(name)")
            #expect(g["out_of_order"] as? Int == 0, "\(name)")
            // Receivers that fall behind hold their senders back: nothing is dropped.
            #expect(g["received"] as? Int == 3000, "\(name): \(g)")
            #expect((g["dropped"] as? [String: Int] ?? [:]).isEmpty, "\(name): \(g)")
        }
    }
}

@Suite(.serialized) struct SoakCommandTests {
    /// `npa soak` in a child process, short: both guests switch 100 times each under load (200 switches).
    @Test(arguments: NICModelRegistry.names)
    func theSoakLosesNothingAndLeaksNothing(_ model: String) throws {
        _ = try PluginImages.directory()  // makes sure images exist for the soak's host
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let p = Process()
        let out = Pipe()
        p.executableURL = npaExecutable
        p.arguments = ["soak", "--switches", "100", "--frames-per-switch", "40", "--model", model, "--json"]
        p.currentDirectoryURL = root
        p.standardOutput = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "\(text)")
        let json = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        #expect(json?["sent"] as? Int == 8000)
        #expect(json?["received"] as? Int == 8000)
        #expect(json?["lost"] as? Int == 0)
        #expect(json?["duplicates"] as? Int == 0)
        #expect(json?["out_of_order"] as? Int == 0)
        #expect(json?["leaked_buffers"] as? Int == 0)
        #expect(json?["switches"] as? Int == 200)
        #expect((json?["switch_out_ms"] as? [String: Double])?["p99"] != nil)
    }
}

@Suite(.serialized) struct BenchCommandTests {
    /// Bad options are refused before anything runs, each with a message naming the option.
    @Test(arguments: [
        (["--sizes", "10"], "--sizes"), (["--sizes", "64,abc"], "--sizes"), (["--cpus", "0,1"], "--cpus"),
        (["--cpus", "0,1,0,99"], "--cpus"), (["--ring", "1000"], "--ring"), (["--window", "5000"], "--window"),
        (["--plot", "chart.png"], "--plot"), (["--queues", "9"], "--queues"), (["--duration", "0"], "--duration"),
        (["--model", "e1000"], "--model"), (["--repeat", "0"], "--repeat"),
    ])
    func badOptionsAreRefusedWithTheirName(_ arguments: [String], _ option: String) throws {
        let p = try NPAProcess(["bench"] + arguments)
        let (status, _, stderr) = p.finish()
        #expect(status != 0)
        #expect(stderr.contains(option), "\(stderr)")
    }

    /// `npa bench`, short: both modes run, every offered frame is verified or counted, and the
    /// JSON has the documented shape.
    @Test func theBenchRunsBothModesAndReportsRatios() throws {
        _ = try PluginImages.directory()
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let p = Process()
        let out = Pipe()
        p.executableURL = npaExecutable
        let plot = NSTemporaryDirectory() + "npa-bench-\(getpid()).svg"
        defer { try? FileManager.default.removeItem(atPath: plot) }
        p.arguments = ["bench", "--duration", "0.3", "--repeat", "1", "--sizes", "1514", "--json", "--plot", plot]
        p.currentDirectoryURL = root
        p.standardOutput = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "\(text)")
        let json = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        let results = json?["results"] as? [[String: Any]] ?? []
        #expect(results.count == 4)  // TX and RX, emulated and passthrough
        for r in results {
            let sent = r["sent"] as? Int ?? -1, received = r["received"] as? Int ?? -2, dropped = r["dropped"] as? Int ?? -3
            #expect(sent > 0 && received + dropped == sent, "\(r)")
            #expect(r["duplicates"] as? Int == 0 && r["out_of_order"] as? Int == 0 && r["invalid"] as? Int == 0, "\(r)")
            #expect((r["cpu_cores"] as? [String: Double])?["guest"] != nil)
        }
        let ratios = json?["ratios"] as? [[String: Any]] ?? []
        #expect(Set(ratios.compactMap { $0["direction"] as? String }) == ["TX", "RX"])
        #expect(ratios.allSatisfy { ($0["passthrough_over_emulated"] as? Double ?? 0) > 0 && $0["frame_bytes"] as? Int == 1514 })
        let equal = (json?["equal_load"] as? [[String: Any]])?.first ?? [:]
        let offered = equal["sent"] as? Int ?? -1
        #expect(offered > 0 && equal["saving_percent"] is Double)
        #expect((equal["emulated_verified"] as? Int).map { $0 > 0 && $0 <= offered } == true, "\(equal)")
        #expect((equal["passthrough_verified"] as? Int).map { $0 > 0 && $0 <= offered } == true, "\(equal)")
        #expect(((json?["machine"] as? [String: Any])?["ghz"] as? Double ?? 0) > 0)
        // The chart is well-formed SVG with a bar per mode and group.
        let svg = try XMLDocument(contentsOf: URL(fileURLWithPath: plot))
        let bars = try svg.nodes(forXPath: "//*[local-name()='rect'][*[local-name()='title']]")
        #expect(bars.count == 2 * 2 + 2 + 2 + 2)  // Mbps/GHz (TX, RX), ratios (TX, RX), throughput, equal load
    }
}
