import Foundation
import NPAAdmin
import NPAControlProtocol
import NPAHost
import NPANICModel
import NPAPluginBundle
import NPAShell
import NPASystem

/// `npa plugin test`'s engine: takes a vendor's bundle through what a host and a guest will do
/// with it, against the software NIC model, and reports each step (`PluginTestReport`).
///
/// The steps, in order; each needs the one before it, so after a failure the rest are skipped,
/// except `teardown`, which runs whenever the host started (it is also the cleanup):
/// verify (as a host does, against `--trust`) → host (an in-process host whose plugin store holds
/// only this bundle, one NIC of the model, a peer guest on the emulated path) → attach (the guest
/// under test attaches, emulated, and exchanges frames with the peer) → switch-in (to a VF with
/// this bundle's plugin) → traffic (through the VF) → offloads (checksum and TSO requests through
/// the VF) → switch-out (under traffic, to emulation;
/// no frame lost, no buffer leaked) → switch-in-again → flr (the host resets the VF under
/// traffic; the guest ends on emulation, traffic intact) → switch-in-after-flr → vf-disabled (the
/// VF dies under the plugin without notice; the plugin must report the fault) → teardown
/// (buffers back, guests detached, no VF held).
///
/// Every wait is bounded by `stallSeconds` without progress, so a broken plugin fails a step
/// rather than hanging. What it cannot catch in this process is a plugin that crashes it or
/// loops inside one call: `PluginTestCommand` runs the harness in a child process for that.
/// It touches a private temporary directory (the store), the host it starts and its two guests.
final class PluginTestHarness {
    struct Options {
        var bundle: String
        var model: String
        var trust: [String]
        /// Frames each way in each traffic step (the attach step sends at most 1000).
        var frames = 10_000
        /// How long any wait may go without progress before its step fails.
        var stallSeconds = 30.0
    }

    /// A step's failure: its one-line reason.
    struct StepFailure: Error {
        let detail: String
        init(_ detail: String) { self.detail = detail }
    }

    static let steps = [
        "verify", "host", "attach", "switch-in", "traffic", "offloads", "switch-out", "switch-in-again", "flr",
        "switch-in-after-flr", "vf-disabled", "teardown",
    ]

    let options: Options
    /// Called as each step ends (the command streams them).
    var onStep: (PluginTestReport.Step) -> Void = { _ in }

    private(set) var report: PluginTestReport
    private var storeDirectory: String?
    // What the steps build up, in the order they do (the later steps are in +Steps).
    private(set) var manifest: PluginManifest?
    private(set) var bundleFile = ""
    private(set) var host: InProcessHost?
    private(set) var peer: VirtualNIC?
    private(set) var guest: VirtualNIC?
    /// Traffic runs so far: each run's flows get their own ids.
    var runs: UInt32 = 0

    init(_ options: Options) {
        self.options = options
        report = PluginTestReport(bundle: options.bundle, model: options.model)
    }

    func run() -> PluginTestReport {
        let bodies: [() throws -> String] = [
            verify, startHost, attach, { try self.switchGuest(toPassthrough: true) }, { try self.traffic() }, offloads,
            switchOutUnderTraffic,
            { try self.switchGuest(toPassthrough: true) + "; " + self.traffic() }, resetUnderTraffic,
            { try self.switchGuest(toPassthrough: true) + "; " + self.traffic() }, disableUnderTraffic,
        ]
        var failed = false
        for (index, body) in bodies.enumerated() {
            if failed {
                record(index, .skipped, "skipped: an earlier step failed", seconds: 0)
                continue
            }
            let start = Clock.monotonicNanoseconds()
            do {
                let detail = try body()
                record(index, .passed, detail, seconds: Self.seconds(since: start))
            } catch let failure as StepFailure {
                record(index, .failed, failure.detail, seconds: Self.seconds(since: start))
                failed = true
            } catch {
                record(index, .failed, "\(error)", seconds: Self.seconds(since: start))
                failed = true
            }
        }
        let start = Clock.monotonicNanoseconds()
        if host == nil {
            record(bodies.count, .skipped, "skipped: no host was started", seconds: 0)
        } else {
            do {
                record(bodies.count, .passed, try teardown(), seconds: Self.seconds(since: start))
            } catch {
                record(bodies.count, .failed, (error as? StepFailure)?.detail ?? "\(error)", seconds: Self.seconds(since: start))
            }
        }
        cleanUp()
        return report
    }

    private func record(_ index: Int, _ outcome: PluginTestReport.Outcome, _ detail: String, seconds: Double) {
        let step = PluginTestReport.Step(number: index, name: Self.steps[index], outcome: outcome, detail: detail, seconds: seconds)
        report.steps.append(step)
        onStep(step)
    }

    private static func seconds(since start: UInt64) -> Double { Double(Clock.monotonicNanoseconds() - start) / 1e9 }

    // MARK: Steps 0-2: the bundle, the host, the guests

    /// Step 0: the checks a host applies, against `--trust`; the model must be known and named.
    private func verify() throws -> String {
        let bytes = try readFile(options.bundle)
        let trust: PluginTrustStore
        do { trust = try PluginTrustStore(files: options.trust) } catch { throw StepFailure("\(error)") }
        let accepted: PluginBundleVerifier.Accepted
        do { accepted = try Plugin.verifier(trusting: trust).verify(bytes, name: options.bundle) } catch {
            throw StepFailure("\(error)")
        }
        let m = accepted.manifest
        report.plugin = "\(m.name) \(m.version) by \(m.vendor)"
        guard NICModelRegistry.names.contains(options.model) else {
            throw StepFailure("unknown NIC model \(options.model) (known: \(NICModelRegistry.names.joined(separator: ", ")))")
        }
        guard m.models.contains(where: { $0.model == options.model }) else {
            throw StepFailure(
                "the manifest names \(m.models.map(\.model).joined(separator: ", ")), not \(options.model): a host would not inject it for that model"
            )
        }
        manifest = m
        return "accepted: \(m.name) \(m.version) by \(m.vendor), \(m.licence), ABI \(m.abiVersion), signed by key \(accepted.signer)"
    }

    /// Step 1: a host whose store is a private directory holding only this bundle.
    private func startHost() throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "npa-plugin-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        ).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        storeDirectory = directory
        let name = URL(fileURLWithPath: options.bundle).lastPathComponent
        bundleFile = name.hasSuffix(".npabundle") ? name : name + ".npabundle"
        try FileManager.default.copyItem(atPath: options.bundle, toPath: directory + "/" + bundleFile)
        var config = HostConfiguration()
        config.nics = [.init(name: "nic0", model: options.model, vfs: 2)]
        config.uplink = .nic("nic0")
        config.pluginDirectory = directory
        config.pluginTrust = options.trust.map { URL(fileURLWithPath: $0).path }
        // The guests here are driven by one thread that never stops reading: the host may hold a
        // sender back, or wait for a switch step, as long as any wait of this harness.
        config.receiverStallMilliseconds = Int(options.stallSeconds * 1000)
        config.switchTimeoutMilliseconds = Int(options.stallSeconds * 1000)
        let started = try InProcessHost(label: "plugin-test", configuration: config)
        host = started
        let store = try started.admin.status().plugins
        guard let entry = store?.bundles.first(where: { $0.file == bundleFile }), entry.accepted else {
            let why = store?.bundles.first { $0.file == bundleFile }?.refusal ?? "not in the store"
            throw StepFailure("the host's plugin store refused \(bundleFile): \(why)")
        }
        guard store?.used[options.model] == bundleFile else {
            throw StepFailure("the host does not pick \(bundleFile) for \(options.model)")
        }
        peer = try started.attach("peer", mac: "02:00:00:00:7e:01")
        return "host with one \(options.model) NIC (2 VFs); its store accepted \(bundleFile) for \(options.model); peer attached"
    }

    /// Step 2: the guest under test attaches (emulated) and exchanges frames with the peer.
    private func attach() throws -> String {
        guard let host, let peer else { throw StepFailure("no host") }
        let attached = try host.attach("tested", mac: "02:00:00:00:7e:02")
        guest = attached
        guard try attached.waitForPeer(peer.mac, timeoutMilliseconds: Int(options.stallSeconds * 1000)) else {
            throw StepFailure("the peer never became active")
        }
        guard attached.mode == "emulated" else { throw StepFailure("attached in mode \(attached.mode), not emulated") }
        return try traffic(frames: min(options.frames, 1000), expectMode: "emulated")
    }

    /// The host and both guests, or a failure if an earlier step did not make them.
    func parts() throws -> (InProcessHost, VirtualNIC, VirtualNIC) {
        guard let host, let guest, let peer else { throw StepFailure("the guest is not attached") }
        return (host, guest, peer)
    }

    private func cleanUp() {
        guest?.detach()
        peer?.detach()
        guest = nil
        peer = nil
        host?.stop()
        host = nil
        if let storeDirectory { try? FileManager.default.removeItem(atPath: storeDirectory) }
        storeDirectory = nil
    }
}
