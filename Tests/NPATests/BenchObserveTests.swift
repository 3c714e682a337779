import Foundation
import NPATestSupport
import Testing

@testable import npa

/// `npa bench --observe metrics,capture`: each observed run is a real run with a Prometheus scrape
/// of the host, or a capture of the receiver, beside it (counted), next to a plain run of the same mode; the relative figures are those
/// runs' own. No figure is judged here (timing is the benchmark's business, not a test's).
@Suite struct BenchObserveTests {
    @Test func anObservedRunIsReportedBesideAPlainOne() throws {
        let p = try NPAProcess([
            "bench", "--only", "emulated", "--sizes", "64", "--duration", "1.2", "--repeat", "1", "--observe", "metrics,capture", "--json",
            "--cpus", "none",
        ])
        let (status, stdout, stderr) = p.finish()
        #expect(status == 0, "\(stderr)")
        let report = try JSONDecoder().decode(BenchReport.self, from: Data(stdout.utf8))
        let plain = try #require(report.observed.first { $0.observer == "none" })
        let observed = try #require(report.observed.first { $0.observer == "metrics" })
        #expect(plain.mode == "emulated" && observed.mode == "emulated")
        // A scrape at the start and one a second later, at least: both answered.
        #expect(observed.observations >= 1)
        #expect(observed.received == observed.sent && observed.received > 0)
        #expect(abs(observed.relativeMpps - observed.mpps / plain.mpps) < 1e-9)
        #expect(plain.relativeMpps == 1)
        // The capture saw every frame the receiver verified (and its acknowledgements), or says
        // how many copies it dropped.
        let captured = try #require(report.observed.first { $0.observer == "capture" })
        #expect(captured.received == captured.sent && captured.received > 0)
        #expect(UInt64(captured.observations) + captured.observerDropped >= UInt64(captured.received))
    }

    @Test func anUnknownObserverIsRefusedNamingTheKnownOnes() throws {
        let (status, _, stderr) = try NPAProcess(["bench", "--observe", "metrics,tcpdump"]).finish()
        #expect(status == 64 && stderr.contains("--observe takes a comma-separated list of: metrics, capture"), "\(stderr)")
    }
}
