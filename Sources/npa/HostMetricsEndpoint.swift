import CoreMetrics
import NPAAdmin
import NPAHost
import NPAMetricsEndpoint
import Prometheus

/// `npa host --metrics ADDR:PORT`: the scrape endpoint wired to one host. Each scrape first asks
/// the host, over its admin socket, to bring its metrics up to date (the host reads its own
/// counters on its own thread), then renders the registry; a host that does not answer makes the
/// scrape a 503 rather than stale numbers. The endpoint's own scrapes and failed refreshes are
/// counted through swift-metrics on the same registry.
enum HostMetricsEndpoint {
    struct RefreshFailed: Error, CustomStringConvertible {
        let reason: String
        var description: String { "the host did not bring its metrics up to date: \(reason)" }
    }

    static func start(on address: MetricsListenAddress, metrics: HostMetrics, adminSocketPath: String) throws -> MetricsHTTPServer {
        let admin = AdminClient(socketPath: adminSocketPath)
        let factory = PrometheusMetricsFactory(registry: metrics.registry)
        let scrapes = CoreMetrics.Counter(label: "npa_metrics_scrapes_total", factory: factory)
        let failures = CoreMetrics.Counter(label: "npa_metrics_refresh_failures_total", factory: factory)
        return try MetricsHTTPServer.start(on: address) {
            scrapes.increment()
            do { try admin.refreshMetrics() } catch {
                failures.increment()
                throw RefreshFailed(reason: "\(error)")
            }
            return metrics.exposition()
        }
    }
}
