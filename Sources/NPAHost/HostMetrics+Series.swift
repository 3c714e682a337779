import Prometheus

/// Each metric family the host fills from counters it keeps, with its Prometheus name and help.
/// Names follow Prometheus conventions: `npa_` prefix, base units, `_total` on counters.
enum HostMetricFamily: String {
    case vnicTxFrames = "npa_vnic_tx_frames_total"
    case vnicRxFrames = "npa_vnic_rx_frames_total"
    case vnicTxBytes = "npa_vnic_tx_bytes_total"
    case vnicRxBytes = "npa_vnic_rx_bytes_total"
    case vnicInterrupts = "npa_vnic_interrupts_total"
    case vnicDoorbellKicks = "npa_vnic_doorbell_kicks_total"
    case vnicSenderHolds = "npa_vnic_sender_holds_total"
    case vnicDrops = "npa_vnic_drops_total"
    case vnicGuestFaults = "npa_vnic_guest_faults_total"
    case vnicMode = "npa_vnic_mode"
    case vnicCaptureDropped = "npa_vnic_capture_dropped_total"
    case vfs = "npa_nic_vfs"
    case vfsInUse = "npa_nic_vfs_in_use"
    case engineCPUSeconds = "npa_engine_cpu_seconds_total"
    case engineSleepSeconds = "npa_engine_sleep_seconds_total"
    case engineSleeps = "npa_engine_sleeps_total"
    case controlRefusals = "npa_control_refusals_total"
    case connectionsShed = "npa_connections_shed_total"
    case events = "npa_events_total"

    /// The full name is the raw value (no namespace or unit parts to join).
    var descriptor: MetricNameDescriptor { MetricNameDescriptor(metricName: rawValue, unitName: "", helpText: help) }

    var help: String {
        switch self {
        case .vnicTxFrames: "Frames the guest sent, by the mode that carried them (emulated: device emulation; passthrough: its VFs)."
        case .vnicRxFrames: "Frames delivered to the guest, by the mode that carried them."
        case .vnicTxBytes: "Bytes the guest sent, by the mode that carried them."
        case .vnicRxBytes: "Bytes delivered to the guest, by the mode that carried them."
        case .vnicInterrupts: "Interrupts raised to the guest, by mode (wake-ups of the guest)."
        case .vnicDoorbellKicks:
            "Doorbell kicks the guest's driver sent to a sleeping device emulation (wake-ups of the host; emulated mode)."
        case .vnicSenderHolds:
            "Times the vNIC, with no free receive buffer, began holding its senders back (pause frames, in Ethernet terms; emulated mode)."
        case .vnicDrops: "Frames dropped for or from the vNIC, by mode and reason."
        case .vnicGuestFaults: "The guest's own faults (bad descriptors, DMA outside its memory, bad offload requests), by mode and reason."
        case .vnicMode: "1 for the vNIC's current mode, 0 for the other."
        case .vnicCaptureDropped:
            "Copies a capture of the vNIC (npa capture) dropped because its writer fell behind; the frames themselves were delivered."
        case .vfs: "Virtual functions the NIC has."
        case .vfsInUse: "Virtual functions held by vNICs (in passthrough or switching)."
        case .engineCPUSeconds:
            "CPU time of an engine thread (host: device emulation and control; a NIC's: its hardware), polling included."
        case .engineSleepSeconds: "Time an engine thread slept for want of work."
        case .engineSleeps: "Times an engine thread slept for want of work (each ends in a wake-up)."
        case .controlRefusals: "Control and admin requests refused, by wire error code."
        case .connectionsShed: "Control connections closed or refused by the host's limits, by reason."
        case .events: "Events recorded in the host's event log, by kind."
        }
    }
}

/// The series `HostMetrics` made from counters, each with the value it last applied, so a new
/// reading becomes an increment (swift-prometheus counters only go up; one that went down — a
/// vNIC detached and a new one by the same name attached — starts again from zero). Series not
/// seen in a round (a vNIC gone) are unregistered.
struct SeriesTable {
    private struct Entry {
        var counter: Counter?
        var gauge: Gauge?
        var last: UInt64
    }
    private var entries: [String: Entry] = [:]
    private var touched: Set<String> = []
    /// Switch-duration histograms, by vNIC and direction: recorded as switches end, dropped with
    /// the vNIC's other series when it is gone.
    private var histograms: [String: (vnic: String, histogram: DurationHistogram)] = [:]

    mutating func switchDuration(vnic: String, direction: String, _ registry: PrometheusCollectorRegistry) -> DurationHistogram {
        let key = vnic + "|" + direction
        if let (_, histogram) = histograms[key] { return histogram }
        let histogram = registry.makeDurationHistogram(
            descriptor: HostMetrics.switchDuration, labels: [("vnic", vnic), ("direction", direction)], buckets: HostMetrics.switchBuckets)
        histograms[key] = (vnic, histogram)
        return histogram
    }

    mutating func beginRound() { touched.removeAll(keepingCapacity: true) }

    /// Sets a counter series to `value` (an integer count).
    mutating func count(_ family: HostMetricFamily, _ labels: [(String, String)], _ value: UInt64, _ registry: PrometheusCollectorRegistry)
    {
        advance(family, labels, value, registry) { counter, delta in counter.increment(by: Int64(clamping: delta)) }
    }

    /// Sets a counter series of seconds to `nanoseconds`.
    mutating func count(
        _ family: HostMetricFamily, _ labels: [(String, String)], seconds nanoseconds: UInt64, _ registry: PrometheusCollectorRegistry
    ) {
        advance(family, labels, nanoseconds, registry) { counter, delta in counter.increment(by: Double(delta) / 1e9) }
    }

    mutating func set(_ family: HostMetricFamily, _ labels: [(String, String)], _ value: Double, _ registry: PrometheusCollectorRegistry) {
        let key = Self.key(family, labels)
        touched.insert(key)
        let gauge = entries[key]?.gauge ?? registry.makeGauge(descriptor: family.descriptor, labels: labels)
        entries[key] = Entry(gauge: gauge, last: 0)
        gauge.set(value)
    }

    /// One vNIC: both modes' frames, bytes, interrupts, drops and faults, and its mode.
    mutating func apply(_ v: HostMetricsSample.VNIC, _ registry: PrometheusCollectorRegistry) {
        for (mode, counters, prefix) in [("emulated", v.emulated, ""), ("passthrough", v.passthrough, "vf_")] {
            let labels = [("vnic", v.name), ("mode", mode)]
            count(.vnicTxFrames, labels, counters[prefix + "tx_frames"] ?? 0, registry)
            count(.vnicRxFrames, labels, counters[prefix + "rx_frames"] ?? 0, registry)
            count(.vnicTxBytes, labels, counters[prefix + "tx_bytes"] ?? 0, registry)
            count(.vnicRxBytes, labels, counters[prefix + "rx_bytes"] ?? 0, registry)
            count(.vnicInterrupts, labels, counters[prefix + "interrupts"] ?? 0, registry)
            if mode == "emulated" {
                count(.vnicDoorbellKicks, labels, counters["doorbell_kicks"] ?? 0, registry)
                count(.vnicSenderHolds, labels, counters["sender_holds"] ?? 0, registry)
            }
            let dropPrefix = "drop_" + prefix
            for (name, n) in counters where name.hasPrefix(dropPrefix) {
                let reason = String(name.dropFirst(dropPrefix.count))
                count(.vnicDrops, labels + [("reason", reason)], n, registry)
                if Self.guestFaults(mode).contains(reason) { count(.vnicGuestFaults, labels + [("reason", reason)], n, registry) }
            }
            set(.vnicMode, labels, v.mode == mode ? 1 : 0, registry)
        }
        count(.vnicCaptureDropped, [("vnic", v.name)], v.captureDropped, registry)
    }

    /// Unregisters every series not seen since `beginRound`, and the histograms of vNICs not in
    /// `vnics`.
    mutating func endRound(_ registry: PrometheusCollectorRegistry, vnics: Set<String>) {
        for (key, entry) in histograms where !vnics.contains(entry.vnic) {
            registry.unregisterDurationHistogram(entry.histogram)
            histograms[key] = nil
        }
        for (key, entry) in entries where !touched.contains(key) {
            if let counter = entry.counter { registry.unregisterCounter(counter) }
            if let gauge = entry.gauge { registry.unregisterGauge(gauge) }
            entries[key] = nil
        }
    }

    private mutating func advance(
        _ family: HostMetricFamily, _ labels: [(String, String)], _ value: UInt64, _ registry: PrometheusCollectorRegistry,
        increment: (Counter, UInt64) -> Void
    ) {
        let key = Self.key(family, labels)
        touched.insert(key)
        guard var entry = entries[key], let counter = entry.counter else {
            let counter = registry.makeCounter(descriptor: family.descriptor, labels: labels)
            if value > 0 { increment(counter, value) }
            entries[key] = Entry(counter: counter, last: value)
            return
        }
        if value < entry.last {
            counter.reset()
            increment(counter, value)
        } else if value > entry.last {
            increment(counter, value - entry.last)
        }
        entry.last = value
        entries[key] = entry
    }

    /// The drop reasons that are the guest's own faults, per mode.
    private static func guestFaults(_ mode: String) -> Set<String> {
        mode == "emulated" ? emulatedGuestFaults : ["bad_descriptor", "dma_fault", "bad_offload"]
    }
    private static let emulatedGuestFaults = Set(DropReason.allCases.filter(\.isGuestFault).map(\.name))

    private static func key(_ family: HostMetricFamily, _ labels: [(String, String)]) -> String {
        labels.reduce(family.rawValue) { $0 + "|" + $1.0 + "=" + $1.1 }
    }
}
