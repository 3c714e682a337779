import ArgumentParser
import NPAHost
import NPAMetricsEndpoint

/// What `npa bench --observe` runs beside the traffic, to measure what operating a host costs
/// its data path: a Prometheus server scraping the host's metrics once a second. Each observed
/// run is measured back to back with a plain run of the same mode, so the ratio compares one
/// machine state.
enum BenchObserver: String, CaseIterable, ExpressibleByArgument, Codable {
    case metrics

    var label: String {
        switch self {
        case .metrics: "metrics scraped every second"
        }
    }

    /// The observer started beside a run on `host`; `stop()` ends it and says what it did.
    final class Running {
        private let endpoint: MetricsHTTPServer
        private let scraper: MetricsScraper

        init(_ observer: BenchObserver, host: InProcessHost) throws {
            guard let metrics = host.daemon.metrics else { throw CommandFailure("bench: the host was started without metrics") }
            endpoint = try HostMetricsEndpoint.start(
                on: MetricsListenAddress(host: "127.0.0.1", port: 0), metrics: metrics, adminSocketPath: host.daemon.adminSocketPath)
            scraper = try MetricsScraper(port: endpoint.address.port)
            scraper.start()
        }

        /// Stops it; the scrapes that succeeded (a failed one fails the run: its figures would
        /// not be those of an observed host).
        func stop() throws -> Int {
            scraper.stop()
            endpoint.stop()
            guard scraper.failures == 0 else { throw CommandFailure("bench: \(scraper.failures) metrics scrapes failed") }
            return scraper.scrapes
        }
    }
}
