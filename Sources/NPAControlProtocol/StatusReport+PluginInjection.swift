import Foundation

extension StatusReport {
    /// Which bundle a plugin store injects for one NIC model, as the commands that inject a plugin
    /// (`npa demo`, `npa bench`, `npa soak`) say before their run and in their JSON, and as a host
    /// logs at start. Read from the store's own verdicts (`PluginStore.injection(for:)`), so it is
    /// what the host injects, not a guess. Pure value.
    public struct PluginInjection: Codable, Equatable, Sendable {
        public var model: String
        /// The bundle's file name in the store.
        public var file: String
        public var name: String
        public var version: String
        public var vendor: String
        /// The signer's key id.
        public var signer: String
        /// The manifest's SPDX licence id.
        public var licence: String

        public init(model: String, file: String, name: String, version: String, vendor: String, signer: String, licence: String) {
            self.model = model
            self.file = file
            self.name = name
            self.version = version
            self.vendor = vendor
            self.signer = signer
            self.licence = licence
        }

        /// "plugin for npa-cq: npa-cq 1.0 by NPA-Swift (npa-cq.npabundle, key 1a2b3c4d5e6f7a8b, GPL-2.0-only)"
        public var line: String { "plugin for \(model): \(name) \(version) by \(vendor) (\(file), key \(signer), \(licence))" }
    }
}

extension StatusReport.PluginStore {
    /// The accepted bundle the store injects for `model`, or nil when it has none.
    public func injection(for model: String) -> StatusReport.PluginInjection? {
        guard let file = used[model], let b = bundles.first(where: { $0.file == file && $0.accepted }) else { return nil }
        return StatusReport.PluginInjection(
            model: model, file: file, name: b.name ?? "?", version: b.version ?? "?", vendor: b.vendor ?? "?", signer: b.signer ?? "?",
            licence: b.licence ?? "?")
    }

    /// Why the store has nothing for `model`: a first line naming the store and its keys, then one
    /// line per bundle file: each refusal with its reason, each accepted bundle with its models.
    public func noBundleLines(for model: String) -> [String] {
        let keys = trustedKeys.isEmpty ? "no trusted keys" : "trusting key \(trustedKeys.joined(separator: ", "))"
        var lines = ["no accepted plugin bundle for \(model) in \(directory) (\(keys))"]
        if bundles.isEmpty { lines.append("  no bundles (*.npabundle) there") }
        for b in bundles {
            if b.accepted {
                lines.append("  \(b.file): accepted, but for \(b.models.joined(separator: ", "))")
            } else {
                lines.append("  \(b.refusal ?? "plugin bundle \(b.file) refused")")
            }
        }
        return lines
    }
}
