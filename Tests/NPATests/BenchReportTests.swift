@testable import npa
import Testing

/// The arithmetic `npa bench` reports, on made-up runs: ratios, the equal-load rate, the
/// placement test that keeps unlike rounds apart, and the JSON keys the issue names.
@Suite struct BenchReportTests {
    func run(_ passthrough: Bool, mpps: Double, guest: Double, host: Double, rt: Double? = 60) -> BenchRun {
        var r = BenchRun(passthrough: passthrough, frameBytes: 1514, offeredRate: nil)
        r.seconds = 2
        r.received = Int(mpps * 1e6 * 2)
        r.sent = r.received
        r.senderCPU = guest * 2
        r.receiverCPU = guest * 2
        r.hostCPU = host * 2
        r.coreRoundTripNS = rt
        return r
    }

    @Test func ratiosAreMbpsPerGHzOfGuestPlusHostCPU() throws {
        let machine = BenchReport.Machine(
            date: "d", cpus: 2, ghz: 2, ghzMethod: "m", model: "npa-dring", queues: 1, polling: "p",
            pinning: "none", secondsPerRun: 2, roundsPerPhase: 1, ringSize: 4096, window: "w", coreToCoreRoundTripNS: nil)
        var report = BenchReport(machine: machine)
        // Same throughput; emulated costs 0.5 guest + 1.0 host cores per direction, passthrough 0.5 + 0.
        report.add(fullRate: run(false, mpps: 1, guest: 0.5, host: 1.0))
        report.add(fullRate: run(true, mpps: 1, guest: 0.5, host: 0))
        report.addRatios(frameBytes: 1514)
        let tx = try #require(report.ratios.first { $0.direction == "TX" })
        #expect(abs(tx.passthroughOverEmulated - 3.0) < 1e-9)
        let row = try #require(report.results.first { $0.mode == "passthrough" && $0.direction == "RX" })
        // 1 Mpps × 1514 B × 8 = 12 112 Mbit/s over 0.5 cores × 2 GHz.
        #expect(abs(row.mbpsPerGHz - 12_112) < 1e-6)
        report.add(equalLoadOf: run(false, mpps: 0.5, guest: 0.25, host: 0.5), run(true, mpps: 0.5, guest: 0.25, host: 0))
        #expect(abs(report.equalLoad[0].savingPercent - 50) < 1e-9)
        let json = try report.json()
        for key in [
            "\"results\"", "\"ratios\"", "\"equal_load\"", "\"cpu_cores\"", "\"mbps_per_ghz\"", "\"frame_bytes\"", "\"saving_percent\"",
        ] {
            #expect(json.contains(key), "\(key)")
        }
    }

    @Test func theEqualLoadIsHalfTheSlowerModeToTwoDigits() {
        #expect(Bench.equalLoadRate(run(false, mpps: 2.468, guest: 0, host: 0), run(true, mpps: 9, guest: 0, host: 0)) == 1_200_000)
        #expect(Bench.equalLoadRate(run(false, mpps: 0, guest: 0, host: 0), run(true, mpps: 1, guest: 0, host: 0)) == 100)
    }

    @Test func roundsFromDifferentVCPUPlacementsAreNotCompared() {
        #expect(CoreToCoreLatency.samePlacement([60, 64]))
        #expect(CoreToCoreLatency.samePlacement([nil, nil]))
        #expect(CoreToCoreLatency.samePlacement([320, nil]))
        #expect(!CoreToCoreLatency.samePlacement([62, 320]))
    }
}
