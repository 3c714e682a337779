import Prometheus
import Synchronization

/// The host's Prometheus metrics (`npa host --metrics`): a swift-prometheus registry that the
/// scrape endpoint renders, filled two ways. What the host already counts (frames, bytes, drops,
/// VF usage, engine time, refusals) is read from its counters when a scrape asks (`apply`, on
/// the host thread, once per scrape): the data path keeps no second copy and takes no lock for
/// it. What happens rarely and is not kept as a counter — a switch's duration — is recorded into
/// a histogram as it happens (`recordSwitch`, at the switch's last step).
///
/// It touches only its registry; the host thread writes it, the endpoint's thread renders it.
public final class HostMetrics: Sendable {
    /// The registry the endpoint renders. A library user may bootstrap swift-metrics with
    /// `PrometheusMetricsFactory(registry:)` on it to add their own metrics to the same scrape.
    public let registry: PrometheusCollectorRegistry
    private let series = Mutex(SeriesTable())

    /// Switch durations span a fraction of a millisecond (an idle guest) to the switch timeout.
    static let switchBuckets: [Duration] = [0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000].map {
        .microseconds(Int64($0 * 1000))
    }

    static var switchDuration: MetricNameDescriptor {
        MetricNameDescriptor(
            metricName: "npa_switch_duration", unitName: "seconds",
            helpText: "Time from a switch's request to its completion (direction in: to passthrough; out: to emulation).")
    }

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
    }

    /// The exposition to serve now, in the Prometheus text format.
    public func exposition() -> [UInt8] { registry.emitToBuffer() }

    /// A switch of `vnic` finished `milliseconds` after it was requested (direction "in": to
    /// passthrough).
    func recordSwitch(vnic: String, direction: String, milliseconds: Double) {
        series.withLock { table in
            table.switchDuration(vnic: vnic, direction: direction, registry).recordNanoseconds(Int64(milliseconds * 1e6))
        }
    }

    /// Brings every counter-backed series to the sample's values, and drops the series of
    /// vNICs that are gone.
    func apply(_ sample: HostMetricsSample) {
        series.withLock { table in
            table.beginRound()
            for v in sample.vnics { table.apply(v, registry) }
            for nic in sample.nics {
                let labels = [("nic", nic.name)]
                table.set(.vfs, labels, Double(nic.vfs), registry)
                table.set(.vfsInUse, labels, Double(nic.inUse), registry)
            }
            for e in sample.engines {
                let labels = [("engine", e.name)]
                table.count(.engineCPUSeconds, labels, seconds: e.cpuNanoseconds, registry)
                table.count(.engineSleepSeconds, labels, seconds: e.sleepNanoseconds, registry)
                table.count(.engineSleeps, labels, e.sleeps, registry)
            }
            for (code, n) in sample.refusalsByCode { table.count(.controlRefusals, [("code", code)], n, registry) }
            for (reason, n) in sample.connectionsShed { table.count(.connectionsShed, [("reason", reason)], n, registry) }
            for (kind, n) in sample.eventsByKind { table.count(.events, [("kind", kind)], n, registry) }
            table.endRound(registry, vnics: Set(sample.vnics.map(\.name)))
        }
    }
}
