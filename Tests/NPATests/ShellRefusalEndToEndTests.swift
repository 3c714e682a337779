import Foundation
import NPAControlProtocol
import NPAHost
import NPAPluginBundle
import NPAShell
import NPATestSupport
import Testing

/// A bundle the host's store accepts and offers, refused by the guest's own shell before it maps
/// anything: the switch-in fails naming the bundle and the reason, the host's `npa status` shows
/// that line for the guest, the guest stays emulated, and frames flow both ways, each counted,
/// before the offer, while it is pending and after it is refused. The VF goes back to the pool.
/// No host is bent for this: each case is a real disagreement between a host and a guest.
@Suite(.serialized) struct ShellRefusalEndToEndTests {
    enum Disagreement: String, CaseIterable, Sendable, CustomTestStringConvertible {
        /// The host trusts the test signing key and offers the in-tree npa-dring bundle; the guest
        /// trusts only another key.
        case signerTheGuestDoesNotTrust

        var testDescription: String { rawValue }
        var model: String { "npa-dring" }
        /// The line the shell's refusal must start with, and a fragment of its reason.
        var expectedLine: (prefix: String, reason: String) {
            ("plugin bundle npa-dring.npabundle refused: signed by key", "which is not trusted")
        }

        /// The store directory (nil: the in-tree bundles) and the guest's trusted keys.
        func setUp() throws -> (store: URL?, guestTrust: PluginTrustStore) {
            (nil, PluginTrustStore(keys: [PluginSigningKey.generate().publicKey]))
        }
    }

    /// Not a refusal: a bundle may name models besides its VF's (one plugin for a vendor's
    /// family of VFs); the host knows them all, the shell requires only its VF's model. The guest
    /// on an npa-cq VF maps a bundle naming npa-cq and npa-dring, and frames flow through it.
    @Test func aBundleNamingMoreModelsThanTheVFsIsMappedByTheShell() throws {
        let dir = try PluginStoreRefusalTests.storeDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        var manifest = try PluginImages.manifest(of: "cq")
        manifest.models.append(.init(model: "npa-dring", vfDeviceIDs: []))
        let binary = try Data(contentsOf: PluginImages.directory().appendingPathComponent("npa-cq.so"))
        let bundle = PluginImages.bundle(manifest, binary: [UInt8](binary), key: PluginImages.signingKey)
        try Data(bundle).write(to: dir.appendingPathComponent("npa-cq.npabundle"))
        let host = try TestHost(configuration: .withNIC(model: "npa-cq", vfs: 1, pluginDirectory: dir.path))
        defer { host.stop() }
        let a = try attach(host, "family", queues: 1), b = try attach(host, "b", queues: 1)
        #expect(try host.switchIn(a), "\(a.lastSwitchError ?? "")")
        #expect(a.mode == "passthrough" && a.lastSwitchError == nil)
        // Through the plugin both ways, whole and in order.
        let ab = (0..<16).map {
            ethernetFrame(to: b.mac, from: a.mac, payload: [UInt8(truncatingIfNeeded: $0)] + [UInt8](repeating: 1, count: 59))
        }
        let ba = (0..<16).map {
            ethernetFrame(to: a.mac, from: b.mac, payload: [UInt8(truncatingIfNeeded: $0)] + [UInt8](repeating: 2, count: 59))
        }
        #expect(a.send(ab) == 16 && b.send(ba) == 16)
        #expect(receiveFrames(b, count: 16) == ab)
        #expect(receiveFrames(a, count: 16) == ba)
    }

    @Test(arguments: Disagreement.allCases)
    func aGuestThatRefusesTheOfferedBundleStaysEmulatedWithTrafficFlowing(_ disagreement: Disagreement) throws {
        let (store, guestTrust) = try disagreement.setUp()
        defer { store.map { try? FileManager.default.removeItem(at: $0) } }
        let host = try TestHost(configuration: .withNIC(model: disagreement.model, vfs: 1, pluginDirectory: store?.path))
        defer { host.stop() }
        // The host accepted the bundle: it is what it will offer.
        #expect(try host.admin.status().plugins?.used[disagreement.model] != nil)
        var spec = GuestSpec("refusing", queues: 1)
        spec.pluginTrust = guestTrust
        let a = try attach(host, spec), b = try attach(host, "b", queues: 1)
        var traffic = CountedExchange(host: host, a: a, b: b)

        try traffic.exchange(8)
        // The host raises DIC; the offer waits for the guest's next data-path call that services it.
        try host.admin.switchVNIC(name: a.name, toPassthrough: true)
        #expect(try host.status(of: a.name)?.switchPending?.hasPrefix("switch-in") == true)
        // Sent while the offer is pending (sending does not service a switch); the guest takes
        // the offer, and refuses it, in its first receive.
        let during = try traffic.nextRound(8)
        #expect(a.send(during.ab) == 8)
        #expect(b.send(during.ba) == 8)
        try traffic.expectDelivered(during)
        _ = a.reclaimTransmitted()

        let (prefix, reason) = disagreement.expectedLine
        let line = a.lastSwitchError ?? ""
        #expect(line.hasPrefix(prefix) && line.contains(reason) && !line.contains("\n"), "\(line)")
        #expect(a.mode == "emulated")
        let status = try host.status(of: a.name)
        #expect(status?.mode == "emulated" && status?.vf == nil && status?.switchPending == nil)
        #expect(status?.lastSwitchError?.contains(line) == true, "\(status?.lastSwitchError ?? "-")")
        try traffic.exchange(8)
        #expect(traffic.total == 24)

        // The only VF went back to the pool: the next guest is offered it (and takes it if it
        // trusts the bundle; otherwise its shell refuses it the same way, not the host).
        #expect(try host.switchIn(b), "\(b.lastSwitchError ?? "")")
    }
}
