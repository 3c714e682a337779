import NPAControlProtocol
import NPASystem

/// What the host's counters read at one instant, for its metrics: taken on the host thread
/// (where every counter it reads is written, or read relaxed), then handed to `HostMetrics`.
/// Reads the data path, the PF driver, the NICs and the control server; changes nothing.
/// Taken once per scrape: it may allocate, the data path never sees it.
struct HostMetricsSample {
    /// One vNIC: its mode now, and what each mode carried (emulation's device counters; the
    /// VFs' counters, summed over every VF it held).
    struct VNIC {
        var name: String
        var mode: String
        var emulated: [String: UInt64]
        var passthrough: [String: UInt64]
        /// Capture copies dropped because the capture's writer fell behind (the frames were not).
        var captureDropped: UInt64
    }

    /// One engine thread: the host's or a NIC's.
    struct Engine {
        var name: String
        var cpuNanoseconds: UInt64
        var sleeps: UInt64
        var sleepNanoseconds: UInt64
    }

    var vnics: [VNIC]
    /// Each NIC's VFs and how many are held by vNICs.
    var nics: [(name: String, vfs: Int, inUse: Int)]
    var engines: [Engine]
    /// Refusals the control server sent, by wire error code's name (`register_access`: a
    /// register write or vmxnet3 command the device refused).
    var refusalsByCode: [String: UInt64]
    /// Connections shed: refused at the cap, closed at the attach timeout, left in the backlog
    /// while accept() had no descriptors.
    var connectionsShed: [String: UInt64]
    var eventsByKind: [String: UInt64]

    static func take(dataPath: HostDataPath, pfDriver: PFDriver, server: ControlServer, activity: HostThreadActivity?) -> HostMetricsSample
    {
        let vnics = dataPath.devices.map { d in
            VNIC(
                name: d.name, mode: d.mode.rawValue, emulated: Dictionary(uniqueKeysWithValues: d.counters.named()),
                passthrough: pfDriver.vfCounterTotals(d),
                captureDropped: d.counters.captureDropped &+ (d.capture.map { pfDriver.captureDropped($0, of: d) } ?? 0))
        }
        var engines = [
            Engine(
                name: "host", cpuNanoseconds: Clock.threadCPUNanoseconds(), sleeps: activity?.sleeps ?? 0,
                sleepNanoseconds: activity?.sleepNanoseconds ?? 0)
        ]
        for nic in pfDriver.nics {
            engines.append(
                Engine(
                    name: nic.name, cpuNanoseconds: nic.engineCPUNanoseconds, sleeps: nic.engineSleeps,
                    sleepNanoseconds: nic.engineSleepNanoseconds))
        }
        return HostMetricsSample(
            vnics: vnics,
            nics: pfDriver.nics.map { ($0.name, $0.vfs.count, pfDriver.vfsInUse[$0.name]?.count ?? 0) },
            engines: engines,
            // Every code from the start, at 0 until its first refusal: a dashboard sees 0, not "no data".
            refusalsByCode: ControlMessage.ErrorCode.all.reduce(into: ["register_access": 0]) {
                $0[ControlMessage.ErrorCode.name(of: $1)] = 0
            }
            .merging(server.refusalsByCode) { _, counted in counted },
            connectionsShed: [
                "connection_cap": server.connectionsRefused, "attach_timeout": server.attachTimeouts,
                "accept_without_descriptors": server.acceptFDExhausted,
            ],
            eventsByKind: Dictionary(uniqueKeysWithValues: server.events.recordedByKind.map { ($0.key.rawValue, $0.value) }))
    }
}
