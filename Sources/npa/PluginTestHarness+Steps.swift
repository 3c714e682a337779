import Foundation
import NPAAdmin
import NPAControlProtocol
import NPAShell
import NPASystem

/// Steps 3-11 of `PluginTestHarness`: switches, traffic, offloads, the VF reset and the dead VF,
/// teardown.
extension PluginTestHarness {
    // MARK: Switching

    /// Asks the host to switch the guest in (or out) and pumps both guests until the guest's
    /// shell has carried it out; checks the host's status agrees (and, in, names this bundle).
    func switchGuest(toPassthrough: Bool) throws -> String {
        let (host, guest, peer) = try parts()
        let target = toPassthrough ? "passthrough" : "emulated"
        let logBefore = guest.switchLog.count
        do { try host.admin.switchVNIC(name: guest.name, toPassthrough: toPassthrough) } catch {
            throw StepFailure("the host refused the switch: \(error)")
        }
        let done = waitUntil {
            _ = guest.reclaimTransmitted()  // a data-path call carries the switch out
            _ = peer.receive(maxFrames: 256, timeoutMilliseconds: 0) { _ in }
            if guest.mode == target { return true }
            // The shell finished a switch that did not end there: it failed.
            return guest.switchLog.count > logBefore && guest.lastSwitchError != nil && (try? self.isSwitchPending()) == false
        }
        guard guest.mode == target else {
            let why = done ? reason(guest) : "not done after \(Int(options.stallSeconds)) s"
            throw StepFailure("the guest is still \(guest.mode): \(why)")
        }
        let status = try vnicStatus()
        guard status.mode == target, status.switchPending == nil else {
            throw StepFailure("the host shows the guest \(status.mode)\(status.switchPending.map { ", \($0)" } ?? "")")
        }
        let took = (toPassthrough ? guest.switchInDurations : guest.switchOutDurations).last.map { String(format: " in %.1f ms", $0) } ?? ""
        guard toPassthrough else { return "on emulation\(took)" }
        guard let manifest, let vf = status.vf else { throw StepFailure("the host shows no VF for the guest") }
        // The shell reports the plugin it loaded as its ops name and version; `npa status`
        // shows that, so it should be the manifest's.
        let plugin = status.plugin ?? "nothing"
        guard plugin == manifest.name || plugin.hasPrefix(manifest.name + " ") else {
            throw StepFailure(
                "the loaded plugin calls itself \(plugin) (its ops name), the manifest \(manifest.name): npa status would show \(plugin)")
        }
        return "on \(vf) with \(guest.pluginName) (\(bundleFile))\(took)"
    }

    func isSwitchPending() throws -> Bool { try vnicStatus().switchPending != nil }

    /// Why the guest is not where it should be: the shell's last switch error, else the host's
    /// (a plugin's `report_fault` reason, a VF reset), else "no reason given".
    func reason(_ guest: VirtualNIC) -> String {
        guest.lastSwitchError ?? (try? vnicStatus().lastSwitchError) ?? "no reason given"
    }

    // MARK: Traffic

    /// `frames` each way between the guest and the peer, through the guest's current path,
    /// which must still be `expectMode` at the end (in passthrough: the VF carried the frames).
    func traffic(frames: Int? = nil, expectMode: String = "passthrough") throws -> String {
        let (_, guest, peer) = try parts()
        let before = try vnicStatus().counters
        let breachesBefore = guest.pluginContractViolations
        let outcome = exchange(frames: frames ?? options.frames, guest, peer)
        if let failure = outcome.failure { throw StepFailure(failure) }
        if expectMode == "passthrough", guest.mode == "passthrough", guest.pluginContractViolations > breachesBefore {
            throw StepFailure(
                "the plugin indicated \(guest.pluginContractViolations - breachesBefore) frames it may not: beyond check_rx_ring's max_frames, or in buffers it did not hold"
            )
        }
        guard guest.mode == expectMode else {
            throw StepFailure("the guest fell back to \(guest.mode): \(reason(guest))")
        }
        if expectMode == "passthrough" {
            let after = try vnicStatus().counters
            let sent = (after["vf_tx_frames"] ?? 0) - (before["vf_tx_frames"] ?? 0)
            let received = (after["vf_rx_frames"] ?? 0) - (before["vf_rx_frames"] ?? 0)
            guard sent >= UInt64(outcome.frames), received >= UInt64(outcome.frames) else {
                throw StepFailure("the VF carried \(sent) frames out and \(received) in, not \(outcome.frames) each way")
            }
        }
        return Self.describe(outcome)
    }

    func exchange(frames: Int, _ guest: VirtualNIC, _ peer: VirtualNIC, midway: (() -> String?)? = nil) -> PluginTestTraffic.Outcome {
        runs += 1
        let traffic = PluginTestTraffic(
            frames: frames, window: 256, stallSeconds: options.stallSeconds, flowBase: runs * UInt32(PluginTestTraffic.flows))
        return traffic.run(guest, peer, midway: midway)
    }

    /// Step 5: TCP frames with checksum and TSO requests through the VF (`PluginTestOffloads`).
    func offloads() throws -> String {
        let (_, guest, peer) = try parts()
        // The guest's own counters carry its VFs' totals (the host's status shows only a few).
        let before = try guest.deviceCounters()["vf_tso_segments"] ?? 0
        let frames = min(options.frames, 1000)
        let (failure, segments) = PluginTestOffloads(frames: frames, stallSeconds: options.stallSeconds).run(guest, peer)
        if let failure { throw StepFailure(failure) }
        guard guest.mode == "passthrough" else {
            throw StepFailure("the guest fell back to \(guest.mode): \(reason(guest))")
        }
        let cut = (try guest.deviceCounters()["vf_tso_segments"] ?? 0) - before
        return
            "\(frames - frames / 2) checksum and \(frames / 2) TSO requests: \(segments) segments, every byte in place, checksums valid; "
            + (cut > 0 ? "the NIC cut \(cut) segments (the plugin passes TSO)" : "the shell cut them (the plugin declares no TSO)")
    }

    static func describe(_ outcome: PluginTestTraffic.Outcome) -> String {
        String(
            format: "%d frames each way, each once, in order, intact (%.0f frames/s)", outcome.frames,
            Double(2 * outcome.frames) / max(outcome.seconds, 1e-9))
    }

    /// Step 6: switch out while frames flow; nothing lost, nothing leaked.
    func switchOutUnderTraffic() throws -> String {
        let (host, guest, peer) = try parts()
        let outcome = exchange(frames: options.frames, guest, peer) {
            do { try host.admin.switchVNIC(name: guest.name, toPassthrough: false) } catch { return "the host refused: \(error)" }
            return nil
        }
        if let note = outcome.midwayNote { throw StepFailure("switch-out: \(note)") }
        if let failure = outcome.failure { throw StepFailure(failure) }
        guard guest.mode == "emulated" else { throw StepFailure("the guest is still \(guest.mode) after the switch-out") }
        if let error = guest.lastSwitchError { throw StepFailure("the switch-out reported: \(error)") }
        try checkNoBufferLeak()
        let took = guest.switchOutDurations.last.map { String(format: " (switch %.1f ms)", $0) } ?? ""
        return "switched out under traffic\(took); " + Self.describe(outcome) + "; no buffer leaked"
    }

    /// Step 8: the host resets the VF (FLR) under traffic: the guest must end on emulation with
    /// every frame through and the reason in the host's status.
    func resetUnderTraffic() throws -> String {
        try fallBackUnderTraffic(expecting: nil) { host, guest in
            do { try host.admin.resetVF(name: guest.name) } catch { return "the host refused the reset: \(error)" }
            return nil
        }
    }

    /// Step 10: the VF stops under the plugin with no switch event (the PF's error recovery): the
    /// plugin must see it (`npa_vf_check_enabled`) and report the fault, or the guest would sit on
    /// a dead VF.
    func disableUnderTraffic() throws -> String {
        let (host, _, _) = try parts()
        guard let nic = host.daemon.nics.first, let vf = try vnicStatus().vf?.split(separator: "f").last.flatMap({ Int($0) }) else {
            throw StepFailure("the guest holds no VF")
        }
        return try fallBackUnderTraffic(expecting: "plugin fault") { _, _ in
            nic.quiesce(vf: vf)
            return nil
        }
    }

    private func fallBackUnderTraffic(expecting prefix: String?, _ action: @escaping (InProcessHost, VirtualNIC) -> String?) throws
        -> String
    {
        let (host, guest, peer) = try parts()
        guard guest.mode == "passthrough" else { throw StepFailure("the guest is not in passthrough") }
        let outcome = exchange(frames: options.frames, guest, peer) { action(host, guest) }
        if let note = outcome.midwayNote { throw StepFailure(note) }
        guard guest.mode == "emulated" else {
            throw StepFailure(
                "the guest is still \(guest.mode)"
                    + (prefix != nil ? ": the plugin did not report the dead VF (npa_vf_check_enabled in its check functions)" : "")
                    + (outcome.failure.map { "; \($0)" } ?? ""))
        }
        if let failure = outcome.failure { throw StepFailure(failure) }
        let reason = try vnicStatus().lastSwitchError
        guard let reason, prefix.map({ reason.hasPrefix($0) }) ?? true else {
            throw StepFailure("the host's status shows reason \(reason ?? "none"), expected \(prefix ?? "one")")
        }
        try checkNoBufferLeak()
        return "on emulation (\(reason)); " + Self.describe(outcome) + "; no buffer leaked"
    }

    // MARK: Teardown

    /// Step 11: back on emulation, the guest's buffers are all its own again; both guests detach;
    /// the host keeps no vNIC and no VF.
    func teardown() throws -> String {
        let (host, guest, peer) = try parts()
        if guest.mode != "emulated" { _ = try switchGuest(toPassthrough: false) }
        let leak = leakedBuffers(guest, peer)
        let held = try host.admin.status().vnics.compactMap { v in v.vf.map { "\(v.name) holds \($0)" } }
        guest.detach()
        peer.detach()
        let gone = waitUntil { (try? host.admin.status().vnics.isEmpty) ?? false }
        var problems: [String] = []
        if leak > 0 { problems.append("\(leak) of the guest's buffers never came back") }
        if !held.isEmpty { problems.append("VFs still held on emulation: \(held.joined(separator: ", "))") }
        if !gone { problems.append("the host still has vNICs \((try? host.admin.status().vnics.map(\.name)) ?? [])") }
        if !problems.isEmpty { throw StepFailure(problems.joined(separator: "; ")) }
        return "all \(guest.buffersTotal) guest buffers accounted for; both guests detached; no VF held"
    }

    /// Buffers lent out beyond the posted RX ring and the frames in flight: a leak.
    /// Waits for the guest's frames in flight to complete first, reading the peer meanwhile (a
    /// switch-out re-sends what the VF had not sent, and the peer's ring must make room).
    func leakedBuffers(_ guest: VirtualNIC, _ peer: VirtualNIC) -> Int {
        _ = waitUntil {
            _ = guest.reclaimTransmitted()
            _ = guest.receive(maxFrames: 256, timeoutMilliseconds: 0) { _ in }
            _ = peer.receive(maxFrames: 256, timeoutMilliseconds: 0) { _ in }
            return guest.transmitsInFlight == 0
        }
        return max(0, guest.buffersOutstanding - guest.postedReceiveBuffers - guest.transmitsInFlight)
    }

    func checkNoBufferLeak() throws {
        let (_, guest, peer) = try parts()
        let leak = leakedBuffers(guest, peer)
        if leak > 0 { throw StepFailure("\(leak) buffers leaked (lent out beyond the RX ring and the frames in flight)") }
    }

    // MARK: Helpers

    func vnicStatus() throws -> StatusReport.VNIC {
        let (host, guest, _) = try parts()
        guard let status = try host.admin.status().vnics.first(where: { $0.name == guest.name }) else {
            throw StepFailure("the host no longer has the guest's vNIC")
        }
        return status
    }

    /// Polls `condition` until it holds or `stallSeconds` pass; whether it held.
    func waitUntil(_ condition: () -> Bool) -> Bool {
        let deadline = Clock.monotonicNanoseconds() + UInt64(options.stallSeconds * 1e9)
        while Clock.monotonicNanoseconds() < deadline {
            if condition() { return true }
            EngineThread.sleep(microseconds: 1_000)
        }
        return condition()
    }
}
