import Foundation
import NPAAdmin
import NPAControlProtocol
import NPAHost
import NPAMetricsEndpoint
import NPAShell
import NPATestSupport
import Testing

@testable import npa

/// `npa host --metrics`: a real Prometheus text-format parser (python's prometheus_client) reads
/// the endpoint, and the counters it reads are the traffic the test sent, in each mode; the
/// switch histogram, VF usage, engines, refusals and drops are there; bad requests get clear
/// answers.
@Suite(.serialized) struct MetricsEndpointTests {
    /// A host with one npa-dring NIC and metrics, and its endpoint on a port the kernel picks.
    struct MetricsHost {
        let host: TestHost
        let endpoint: MetricsHTTPServer
        var url: String { "http://127.0.0.1:\(endpoint.address.port)/metrics" }

        init() throws {
            host = try TestHost(configuration: .withNIC(model: "npa-dring", vfs: 4), metrics: HostMetrics())
            endpoint = try HostMetricsEndpoint.start(
                on: MetricsListenAddress(host: "127.0.0.1", port: 0), metrics: host.daemon.metrics!, adminSocketPath: host.adminSocketPath)
        }

        func scrape() throws -> PrometheusScrape { try PrometheusScrape(url: url) }

        func stop() {
            endpoint.stop()
            host.stop()
        }
    }

    static var parserMissing: Bool { PrometheusScrape.python == nil }

    @Test(.disabled(if: parserMissing, "needs python3 with prometheus_client (scripts/install-deps.sh installs it)"))
    func theScrapeCountsTheFramesEachModeCarried() throws {
        let m = try MetricsHost()
        defer { m.stop() }
        let a = try attach(m.host, "alpha", mac: "02:00:00:00:3e:01")
        let b = try attach(m.host, "beta", mac: "02:00:00:00:3e:02")
        /// `count` frames each way, each side receiving exactly those, in order.
        func exchange(_ count: Int) {
            let ab = (0..<count).map {
                ethernetFrame(to: b.mac, from: a.mac, payload: [UInt8(truncatingIfNeeded: $0)] + [UInt8](repeating: 1, count: 59))
            }
            let ba = (0..<count).map {
                ethernetFrame(to: a.mac, from: b.mac, payload: [UInt8(truncatingIfNeeded: $0)] + [UInt8](repeating: 2, count: 59))
            }
            #expect(a.send(ab) == count && b.send(ba) == count)
            #expect(receiveFrames(b, count: count) == ab)
            #expect(receiveFrames(a, count: count) == ba)
        }
        let alpha = { (mode: String) in ["vnic": "alpha", "mode": mode] }

        let before = try m.scrape()
        exchange(40)
        let emulated = try m.scrape()
        func delta(_ name: String, _ labels: [String: String], _ from: PrometheusScrape, _ to: PrometheusScrape) -> Double? {
            guard let x = to.value(name, labels) else { return nil }
            return x - (from.value(name, labels) ?? 0)
        }
        #expect(delta("npa_vnic_tx_frames_total", alpha("emulated"), before, emulated) == 40)
        #expect(delta("npa_vnic_rx_frames_total", alpha("emulated"), before, emulated) == 40)
        #expect(delta("npa_vnic_tx_bytes_total", alpha("emulated"), before, emulated) == Double(40 * (14 + 60)))
        #expect(emulated.value("npa_vnic_tx_frames_total", alpha("passthrough")) == 0)
        #expect(emulated.value("npa_vnic_mode", alpha("emulated")) == 1)
        #expect(emulated.value("npa_vnic_mode", alpha("passthrough")) == 0)
        #expect(emulated.value("npa_nic_vfs", ["nic": "nic0"]) == 4)
        // Wake-ups: the interrupts and doorbell kicks status counts, as status counts them.
        let counters = try #require(try m.host.status(of: "alpha")?.counters)
        let interrupts = try #require(emulated.value("npa_vnic_interrupts_total", alpha("emulated")))
        let kicks = try #require(emulated.value("npa_vnic_doorbell_kicks_total", alpha("emulated")))
        #expect(interrupts <= Double(counters["interrupts"] ?? 0) && kicks <= Double(counters["doorbell_kicks"] ?? 0))
        #expect(emulated.value("npa_nic_vfs_in_use", ["nic": "nic0"]) == 0)

        #expect(try m.host.switchIn(a))
        exchange(30)
        let passthrough = try m.scrape()
        #expect(delta("npa_vnic_tx_frames_total", alpha("passthrough"), emulated, passthrough) == 30)
        #expect(delta("npa_vnic_rx_frames_total", alpha("passthrough"), emulated, passthrough) == 30)
        #expect(delta("npa_vnic_tx_frames_total", alpha("emulated"), emulated, passthrough) == 0)
        #expect(passthrough.value("npa_vnic_mode", alpha("passthrough")) == 1)
        #expect(passthrough.value("npa_nic_vfs_in_use", ["nic": "nic0"]) == 1)
        #expect(passthrough.value("npa_switch_duration_seconds_count", ["vnic": "alpha", "direction": "in"]) == 1)
        let took = try #require(passthrough.value("npa_switch_duration_seconds_sum", ["vnic": "alpha", "direction": "in"]))
        let reported = try #require(try m.host.status(of: "alpha")?.lastSwitchMilliseconds)
        #expect(abs(took * 1000 - reported) < 0.001, "the histogram has the duration status reports")

        // Back to emulation: what the VF carried stays counted under passthrough.
        try m.host.admin.switchVNIC(name: "alpha", toPassthrough: false)
        _ = a.reclaimTransmitted()
        exchange(20)
        let back = try m.scrape()
        #expect(delta("npa_vnic_tx_frames_total", alpha("passthrough"), passthrough, back) == 0)
        #expect(
            back.value("npa_vnic_tx_frames_total", alpha("passthrough"))
                == passthrough.value("npa_vnic_tx_frames_total", alpha("passthrough")))
        #expect(delta("npa_vnic_tx_frames_total", alpha("emulated"), passthrough, back) == 20)
        #expect(back.value("npa_switch_duration_seconds_count", ["vnic": "alpha", "direction": "out"]) == 1)
        #expect(back.value("npa_nic_vfs_in_use", ["nic": "nic0"]) == 0)
        #expect(a.mode == "emulated")
        // Once alpha is gone, so are its series, its switch histograms included.
        a.detach()
        let gone = try waitForScrape(m) { $0.samples.allSatisfy { $0.labels["vnic"] != "alpha" } }
        #expect(
            gone.samples.allSatisfy { $0.labels["vnic"] != "alpha" }, "\(gone.samples.filter { $0.labels["vnic"] == "alpha" }.map(\.name))")
        #expect(gone.value("npa_vnic_mode", ["vnic": "beta", "mode": "emulated"]) == 1)
    }

    @Test(.disabled(if: parserMissing, "needs python3 with prometheus_client (scripts/install-deps.sh installs it)"))
    func dropsRefusalsEventsAndEnginesAreCountedByReason() throws {
        let m = try MetricsHost()
        defer { m.stop() }
        let a = try attach(m.host, "alpha", mac: "02:00:00:00:3e:11")
        let b = try attach(m.host, "beta", mac: "02:00:00:00:3e:12")
        let before = try m.scrape()
        // Every refusal code is there from the start, at 0 until its first refusal.
        for code in ControlMessage.ErrorCode.all.map(ControlMessage.ErrorCode.name(of:)) {
            #expect(before.value("npa_control_refusals_total", ["code": code]) == 0, "\(code)")
        }
        // Three frames whose source is not alpha's MAC: dropped by emulation as spoofed.
        let spoofed = (0..<3).map { _ in ethernetFrame(to: b.mac, from: MACAddress(value: 0x0200_0000_3eff)) }
        #expect(a.send(spoofed) == 3)
        // Two admin requests refused: no such vNIC.
        for _ in 0..<2 { #expect(throws: AdminClient.Failure.self) { try m.host.admin.switchVNIC(name: "ghost", toPassthrough: true) } }
        let spoof = ["vnic": "alpha", "mode": "emulated", "reason": "spoofed_source"]
        let after = try waitForScrape(m) { $0.value("npa_vnic_drops_total", spoof) == 3 }
        #expect(after.value("npa_vnic_drops_total", spoof) == 3)
        #expect(
            after.value("npa_vnic_tx_frames_total", ["vnic": "alpha", "mode": "emulated"])
                == before.value("npa_vnic_tx_frames_total", ["vnic": "alpha", "mode": "emulated"]))
        // Spoofing is policy, not a fault of the guest's rings.
        #expect(after.value("npa_vnic_guest_faults_total", spoof) == nil)
        let refused = ["code": ControlMessage.ErrorCode.name(of: ControlMessage.ErrorCode.invalidArgument)]
        #expect((after.value("npa_control_refusals_total", refused) ?? 0) - (before.value("npa_control_refusals_total", refused) ?? 0) == 2)
        #expect((after.value("npa_events_total", ["kind": "refusal"]) ?? 0) >= 2)
        #expect(after.value("npa_events_total", ["kind": "attach"]) == 2)
        for engine in ["host", "nic0"] {
            #expect(after.value("npa_engine_cpu_seconds_total", ["engine": engine]) ?? 0 > 0, "\(engine)")
            #expect(after.value("npa_engine_sleeps_total", ["engine": engine]) != nil, "\(engine)")
        }
        #expect((after.value("npa_metrics_scrapes_total") ?? 0) >= 2)

        // A vNIC that detaches takes its series with it.
        b.detach()
        let gone = try waitForScrape(m) { $0.all("npa_vnic_mode").allSatisfy { $0.labels["vnic"] != "beta" } }
        #expect(gone.value("npa_vnic_mode", ["vnic": "alpha", "mode": "emulated"]) == 1)
    }

    @Test func badRequestsGetClearAnswers() throws {
        let m = try MetricsHost()
        defer { m.stop() }
        let root = try httpGet(port: m.endpoint.address.port, path: "/")
        #expect(root.status == 404 && root.body.contains("/metrics"))
        let post = try httpGet(port: m.endpoint.address.port, path: "/metrics", method: "POST")
        #expect(post.status == 405 && post.body.contains("GET"))
        let ok = try httpGet(port: m.endpoint.address.port, path: "/metrics")
        #expect(ok.status == 200 && ok.body.contains("# TYPE npa_engine_cpu_seconds_total counter"))
        // A host without metrics refuses the refresh, naming the option.
        let plain = try TestHost()
        defer { plain.stop() }
        #expect {
            try plain.admin.refreshMetrics()
        } throws: { error in
            "\(error)".contains("--metrics")
        }
        // Addresses that do not parse, each with the form that does.
        #expect(throws: MetricsListenAddress.ParseError.noPort("9464")) { try MetricsListenAddress(parsing: "9464") }
        #expect(throws: MetricsListenAddress.ParseError.badPort("h:99999")) { try MetricsListenAddress(parsing: "h:99999") }
        #expect(try MetricsListenAddress(parsing: ":9464") == MetricsListenAddress(host: "0.0.0.0", port: 9464))
        #expect(try MetricsListenAddress(parsing: "[::1]:9464") == MetricsListenAddress(host: "::1", port: 9464))
        #expect(throws: MetricsListenAddress.ParseError.url("http://127.0.0.1:9464/metrics")) {
            try MetricsListenAddress(parsing: "http://127.0.0.1:9464/metrics")
        }
        let cli = try NPAProcess(["host", "--socket", TestHost.freshSocketPath(), "--metrics", "localhost"])
        let (status, _, stderr) = cli.finish()
        #expect(status != 0 && stderr.contains("has no port"), "\(stderr)")
        // An address in use is refused before the host creates its sockets.
        let socket = TestHost.freshSocketPath()
        let busy = try NPAProcess(["host", "--socket", socket, "--metrics", "127.0.0.1:\(m.endpoint.address.port)"])
        let refusal = busy.finish()
        #expect(
            refusal.status != 0
                && refusal.stderr.contains("cannot serve metrics on 127.0.0.1:\(m.endpoint.address.port): Address already in use"),
            "\(refusal.stderr)")
        #expect(!FileManager.default.fileExists(atPath: socket))
    }

    /// Scrapes until `condition` holds (the host counts a frame when its pass takes it), up to
    /// a generous bound; returns the last scrape.
    private func waitForScrape(_ m: MetricsHost, _ condition: (PrometheusScrape) -> Bool) throws -> PrometheusScrape {
        var scrape = try m.scrape()
        for _ in 0..<2000 where !condition(scrape) {
            usleep(10_000)
            scrape = try m.scrape()
        }
        return scrape
    }

    /// One HTTP/1.1 request over a plain TCP socket (curl is not always there): status and body.
    private func httpGet(port: Int, path: String, method: String = "GET") throws -> (status: Int, body: String) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw PrometheusScrape.Failed(description: "connect: \(errno)") }
        let request = "\(method) \(path) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        _ = request.withCString { send(fd, $0, strlen($0), 0) }
        var response = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { break }
            response += buffer[0..<n]
        }
        let text = String(decoding: response, as: UTF8.self)
        let status = Int(text.split(separator: " ").dropFirst().first ?? "") ?? 0
        let body = text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? ""
        return (status, body)
    }
}
