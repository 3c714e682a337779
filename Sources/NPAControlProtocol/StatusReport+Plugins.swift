import Foundation

extension StatusReport {
    /// The host's plugin store as `npa status` and `npa plugin list` show it: every bundle file in
    /// `plugin_dir` with the store's verdict, and which bundle each NIC model gets.
    public struct PluginStore: Codable, Equatable, Sendable {
        /// One bundle file and what the store made of it.
        public struct Bundle: Codable, Equatable, Sendable {
            /// The file's name in the directory.
            public var file: String
            /// From the manifest, when the bundle got far enough for it to be read.
            public var name: String?
            public var version: String?
            public var models: [String]
            /// From the manifest of an accepted bundle: who made it, and its SPDX licence id.
            public var vendor: String?
            public var licence: String?
            /// The signer's key id, when it is signed.
            public var signer: String?
            public var accepted: Bool
            /// Why it was refused, the refusal's one line ("plugin bundle FILE refused: REASON");
            /// nil when accepted.
            public var refusal: String?

            public init(
                file: String, name: String?, version: String?, models: [String], signer: String?, accepted: Bool, refusal: String?,
                vendor: String? = nil, licence: String? = nil
            ) {
                self.file = file
                self.name = name
                self.version = version
                self.models = models
                self.vendor = vendor
                self.licence = licence
                self.signer = signer
                self.accepted = accepted
                self.refusal = refusal
            }
        }

        public var directory: String
        /// The trusted key ids.
        public var trustedKeys: [String]
        public var bundles: [Bundle]
        /// NIC model name → the bundle file injected for it.
        public var used: [String: String]
        /// Set when the host has NICs to inject plugins for but trusts no key, so that no bundle
        /// can ever be accepted: what is wrong and how to fix it.
        public var trustWarning: String?

        public init(directory: String, trustedKeys: [String], bundles: [Bundle], used: [String: String], trustWarning: String? = nil) {
            self.directory = directory
            self.trustedKeys = trustedKeys
            self.bundles = bundles
            self.used = used
            self.trustWarning = trustWarning
        }

        enum CodingKeys: String, CodingKey {
            case directory, bundles, used
            case trustedKeys = "trusted_keys"
            case trustWarning = "trust_warning"
        }

        /// The store alone as JSON (`npa plugin list --json`).
        public func json() -> String {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            return String(decoding: (try? encoder.encode(self)) ?? Data(), as: UTF8.self)
        }

        /// The store as lines of text (`npa status`, `npa plugin list`).
        public var lines: [String] {
            var out = ["plugin store \(directory) (trusted keys: \(trustedKeys.isEmpty ? "none" : trustedKeys.joined(separator: ", ")))"]
            if let trustWarning { out.append("  \(trustWarning)") }
            if bundles.isEmpty { out.append("  no bundles") }
            for b in bundles {
                guard b.accepted else {
                    // The refusal's own line names the bundle.
                    out.append("  \(b.refusal ?? "plugin bundle \(b.file) refused")")
                    continue
                }
                let what = [b.name, b.version].compactMap { $0 }.joined(separator: " ")
                let models = b.models.isEmpty ? "" : " for \(b.models.joined(separator: ", "))"
                let signer = b.signer.map { ", signed by \($0)" } ?? ""
                out.append("  \(b.file): \(what.isEmpty ? "?" : what)\(models)\(signer): accepted")
            }
            for model in used.keys.sorted() { out.append("  \(model) uses \(used[model]!)") }
            return out
        }
    }
}
