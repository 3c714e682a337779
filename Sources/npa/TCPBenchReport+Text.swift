import Foundation

/// The text table of `npa bench --tcp`.
extension TCPBenchReport {
    func text() -> String {
        let m = machine
        var out =
            "\(m.date), \(m.cpus) CPUs, NIC model \(m.model), iperf3 TCP stream: \(m.writeBytes) B writes (-l), \(m.socketBufferBytes) B "
            + "socket buffers (-w), \(m.secondsPerRun) s per run, \(m.rounds) round(s) of emulated, passthrough, then veth (the kernel's reference), offloads \(m.offloads)\n"
        out += String(format: "clock: %.2f GHz (calibrated: %@; ratios do not depend on it)\n", m.ghz, m.ghzMethod)
        out += "cores = CPU seconds per second of a run's window (client start to both iperf3 exits); \(Self.attribution)\n\n"
        out += table(phase: "full", title: "full rate")
        out += "\nmedian per mode (full rate):\n"
        out += StatusTable.table(
            [["mode", "Mbit/s", "TX Mbit/s/GHz", "RX Mbit/s/GHz"]]
                + modes.map {
                    [
                        $0.mode, String(format: "%.0f", $0.mbps), String(format: "%.0f", $0.txMbpsPerGHz),
                        String(format: "%.0f", $0.rxMbpsPerGHz),
                    ]
                })
        if let r = ratios {
            out += "\npassthrough / emulated Mbit/s per GHz of guest + host CPU:   here   RFC 2010 (netperf 16 KiB, 64 KiB sockets)\n"
            out += String(format: "  TX (sender's guest + host)                              %5.2f   %.2f\n", r.tx, r.rfcTX)
            out += String(format: "  RX (receiver's guest + host)                            %5.2f   %.2f\n", r.rx, r.rfcRX)
        }
        if let e = equalLoad {
            out += "\n" + table(phase: "equal_load", title: String(format: "equal offered load (iperf3 -b %.0f Mbit/s)", e.offeredMbps))
            out += String(
                format:
                    "\nat %.0f Mbit/s offered (delivered, median: emulated %.0f, passthrough %.0f), median guest + host cores: "
                    + "emulated %.3f, passthrough %.3f; emulated/passthrough %.2f (saving %.0f %%)\n"
                    + "  TX side (sender's guest + host): emulated %.3f, passthrough %.3f; RX side (receiver's guest + host): emulated %.3f, passthrough %.3f\n",
                e.offeredMbps, e.emulatedMbps, e.passthroughMbps, e.emulatedCores, e.passthroughCores, e.emulatedOverPassthrough,
                e.savingPercent, e.emulatedTXCores,
                e.passthroughTXCores, e.emulatedRXCores, e.passthroughRXCores)
        }
        for b in bridges {
            out +=
                "\nbridge of \(b.guest), whole bench: \(b.framesToVNIC) frames kernel → vNIC, \(b.framesToTAP) vNIC → kernel "
                + "(\(b.segmentsCoalesced) of them coalesced into \(b.superFramesToTAP) super-frames); dropped: "
                + "\(b.transmitRingFull) on a full TX ring, \(b.tapQueueFull) on a full TAP queue, \(b.malformedFromTAP) malformed; "
                + "kernel's TAP drops: \(b.kernelDropsToBridge) before the bridge read them, \(b.kernelDropsFromBridge) after it wrote them; "
                + "host's drop counters: \(b.hostDrops.isEmpty ? "none" : b.hostDrops.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))"
        }
        return out + (bridges.isEmpty ? "" : "\n")
    }

    private func table(phase: String, title: String) -> String {
        var rows = [
            [
                "round", "mode", "Mbit/s", "retrans", "tx guest", "bridge (sys)", "iperf3 usr/sys", "rx guest", "bridge (sys)",
                "iperf3 usr/sys", "host",
                "hw", "softirq", "TX Mbit/s/GHz", "RX Mbit/s/GHz",
            ]
        ]
        for r in runs where r.phase == phase {
            let c = r.cpuCores
            rows.append([
                "\(r.round)", r.mode, String(format: "%.0f", r.mbps), "\(r.retransmits)", String(format: "%.2f", c.senderGuest),
                String(format: "%.2f (%.2f)", c.senderBridge, c.senderBridgeSystem),
                String(format: "%.2f/%.2f", c.senderIperf3User, c.senderIperf3System), String(format: "%.2f", c.receiverGuest),
                String(format: "%.2f (%.2f)", c.receiverBridge, c.receiverBridgeSystem),
                String(format: "%.2f/%.2f", c.receiverIperf3User, c.receiverIperf3System),
                String(format: "%.2f", c.host), String(format: "%.2f", c.hardware), String(format: "%.2f", c.softirq),
                String(format: "%.0f", r.txMbpsPerGHz), String(format: "%.0f", r.rxMbpsPerGHz),
            ])
        }
        return "\(title) (cores):\n" + StatusTable.table(rows)
    }
}
