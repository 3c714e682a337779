import ArgumentParser
import Glibc
import NPAAdmin
import NPAControlProtocol
import NPAHost
import NPAMetricsEndpoint
import SystemPackage

/// What `npa bench --observe` runs beside the traffic, to measure what operating a host costs
/// its data path: a Prometheus server scraping the host's metrics once a second, or a capture of
/// the receiving guest's frames (`npa capture`, written to /dev/null: the copies, the writer's
/// formatting and its writes, without a disk that could not keep up). Each observed run is
/// measured back to back with a plain run of the same mode, so the ratio compares one machine
/// state.
enum BenchObserver: String, CaseIterable, ExpressibleByArgument, Codable {
    case metrics
    case capture

    var label: String {
        switch self {
        case .metrics: "metrics scraped every second"
        case .capture: "capture of the receiver"
        }
    }

    /// The observer started beside a run on `host`; `stop()` ends it and says what it did.
    enum Running {
        case metrics(MetricsHTTPServer, MetricsScraper)
        case capture(CaptureSession)

        init(_ observer: BenchObserver, host: InProcessHost, receiver: String) throws {
            switch observer {
            case .metrics:
                guard let metrics = host.daemon.metrics else { throw CommandFailure("bench: the host was started without metrics") }
                let endpoint = try HostMetricsEndpoint.start(
                    on: MetricsListenAddress(host: "127.0.0.1", port: 0), metrics: metrics, adminSocketPath: host.daemon.adminSocketPath)
                let scraper = try MetricsScraper(port: endpoint.address.port)
                scraper.start()
                self = .metrics(endpoint, scraper)
            case .capture:
                let output = open("/dev/null", O_WRONLY | O_CLOEXEC)
                guard output >= 0 else { throw CommandFailure("bench: cannot open /dev/null") }
                defer { close(output) }  // the host keeps its own copy
                self = .capture(
                    try CaptureSession(
                        socketPath: host.daemon.adminSocketPath, request: CaptureRequest(vnic: receiver, direction: .both),
                        output: FileDescriptor(rawValue: output)))
            }
        }

        /// Stops it: the scrapes that succeeded (a failed one fails the run: its figures would
        /// not be those of an observed host), or the frames the capture wrote; and the capture
        /// copies it dropped because its writer fell behind.
        func stop() throws -> (observations: Int, dropped: UInt64) {
            switch self {
            case .metrics(let endpoint, let scraper):
                scraper.stop()
                endpoint.stop()
                guard scraper.failures == 0 else { throw CommandFailure("bench: \(scraper.failures) metrics scrapes failed") }
                return (scraper.scrapes, 0)
            case .capture(let session):
                let outcome = try session.stop()
                guard outcome.failure.isEmpty else { throw CommandFailure("bench: the capture failed: \(outcome.failure)") }
                return (Int(outcome.frames), outcome.dropped)
            }
        }
    }
}
