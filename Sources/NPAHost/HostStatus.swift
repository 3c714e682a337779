import NPAControlProtocol
import NPASystem

/// Status reporting: the host's vNIC table, uplink and connection accounting as `npa status`
/// shows it (the admin socket's `statusReply`). It reads the data path, the PF driver and the
/// control server, and changes nothing.
enum HostStatus {
    /// A vNIC's state as status shows it (and as a guest's `peerQuery` judges "active"): in
    /// passthrough the emulated device is quiesced on purpose, the VF carries the vNIC.
    static func reportedState(of d: EmulatedDevice) -> String {
        d.mode == .passthrough && d.state == .quiesced ? "active" : d.state.name
    }

    /// Every TAP wire: the NICs' physical ports, then the uplink's; nil when there is none.
    static func wires(dataPath: HostDataPath, pfDriver: PFDriver) -> [StatusReport.Wire]? {
        var ports = pfDriver.nics.compactMap { nic in nic.wire.map { ("NIC \(nic.name)", $0) } }
        if let wire = dataPath.uplinkWire { ports.append(("uplink", wire)) }
        guard !ports.isEmpty else { return nil }
        return ports.map { port, wire in
            StatusReport.Wire(
                port: port, interface: wire.interfaceName, link: wire.isDown || wire.kernelLinkDown ? "down" : "up",
                created: wire.createdHere,
                error: wire.failure.map { "interface gone: \($0)" }
                    ?? (wire.kernelLinkDown
                        ? "the interface is down: the kernel refuses frames (ip link set \(wire.interfaceName) up)" : nil),
                counters: Dictionary(uniqueKeysWithValues: wire.named()))
        }
    }

    static func report(dataPath: HostDataPath, pfDriver: PFDriver, server: ControlServer) -> StatusReport {
        let configuration = server.configuration
        return StatusReport(
            vnics: dataPath.devices.map { d in
                var counters: [String: UInt64] = [:]
                for (k, v) in d.counters.named() { counters[k] = v }
                // Only for a vNIC a migration or a self-announcement touched here.
                for (k, v) in dataPath.migrationCounters(for: d)?.named() ?? [] { counters[k] = v }
                if let capture = d.capture { counters["capture_dropped", default: 0] &+= pfDriver.captureDropped(capture, of: d) }
                var v = StatusReport.VNIC(
                    name: d.name, mac: d.mac.description, mode: d.mode.rawValue, link: "up",
                    state: reportedState(of: d),
                    txQueues: d.txQueues.count, rxQueues: d.rxQueues.count, counters: counters)
                if d.mode == .passthrough, let (nic, index) = pfDriver.vf(of: d) {
                    v.vf = "\(nic.name)/vf\(index)"
                    v.plugin = d.pluginName
                    v.pluginBundle = d.pluginBundle
                    let current = PFDriver.vfCounters(nic.counters(vf: index))
                    v.counters["vf_tx_frames"] = current["vf_tx_frames"]
                    v.counters["vf_rx_frames"] = current["vf_rx_frames"]
                    v.counters["vf_tx_bytes"] = current["vf_tx_bytes"]
                    v.counters["vf_rx_bytes"] = current["vf_rx_bytes"]
                    v.counters["vf_spoofed_drops"] = current["drop_vf_spoofed_source"]
                    v.counters["vf_no_buffer_drops"] = current["drop_vf_no_buffers"]
                }
                v.lastSwitchMilliseconds = d.switching.lastSwitchMilliseconds
                v.lastSwitchError = d.switching.reason
                v.switchPending = pfDriver.switchPendingDescription(d, now: Clock.monotonicNanoseconds())
                return v
            },
            uplink: dataPath.uplinkNIC.map {
                StatusReport.Uplink(
                    kind: "PF of \($0.name)", framesOut: $0.pfTransmitted, bytesOut: 0,
                    framesInDropped: $0.pfReceive.drops &+ dataPath.pfFramesUnroutable)
            }
                ?? dataPath.uplinkWire.map {
                    StatusReport.Uplink(
                        kind: "tap \($0.interfaceName)", framesOut: $0.counters.framesOut, bytesOut: $0.counters.bytesOut)
                }
                ?? dataPath.wire.map { StatusReport.Uplink(kind: "counting", framesOut: $0.framesOut, bytesOut: $0.bytesOut) },
            host: StatusReport.Host(
                connections: server.guestConnectionCount, maxConnections: configuration.maxConnections,
                connectionsRefused: server.connectionsRefused,
                attachTimeouts: server.attachTimeouts, acceptFDExhausted: server.acceptFDExhausted,
                fdLimit: (try? ResourceLimits.openFiles().soft) ?? 0,
                adminRefused: server.adminRefused),
            wires: wires(dataPath: dataPath, pfDriver: pfDriver),
            migrations: server.migrations.flatMap { $0.statusEntries.isEmpty ? nil : $0.statusEntries },
            migrationChannel: server.migrations?.channelStatus,
            plugins: pfDriver.plugins.status)
    }
}
