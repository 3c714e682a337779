import CNPAPluginABI
import Foundation
import Logging
import NPAControlProtocol
import NPANICModel
import NPAPluginBundle
import NPASystem
import SystemPackage

/// The host's plugin store: the signed bundles (`*.npabundle`) in `plugin_dir`, verified once at
/// host start against the trusted keys of `plugin_trust` (`PluginBundleVerifier.enforcing`: the
/// signature, the digest, the licence, the ABI, the NIC models, the ELF rule). Accepted bundles
/// are indexed by the NIC models their manifests name; a refused bundle is logged, kept with its
/// reason for `npa status`, and never reaches a guest. Injection hands a guest the whole bundle in
/// a fresh memfd, read and verified again then, so a file changed on disk since is not injected.
/// It reads that directory and the key files and nothing else.
struct PluginStore {
    /// One bundle file and the store's verdict on it.
    struct Entry {
        let file: String
        let path: String
        let verdict: Result<PluginBundleVerifier.Accepted, PluginBundleRefusal>
    }

    /// Why a bundle could not be injected at the moment of a switch-in.
    struct InjectionError: Error, CustomStringConvertible {
        let description: String
    }

    let directory: String
    let verifier: PluginBundleVerifier
    /// Every bundle file in the directory, by file name.
    let entries: [Entry]
    /// NIC model name → the accepted bundle injected for it.
    let chosen: [String: Entry]
    /// Set when the host has NICs but trusts no key (`noTrustedKeys`).
    let trustWarning: String?

    static let noTrustedKeys =
        "no trusted keys: no plugin bundle can be accepted and every guest stays emulated; "
        + "list public key files (K.pub, from `npa plugin keygen`) in plugin_trust or pass --plugin-trust K.pub"

    /// `scan` false (a host without NICs, which injects nothing) leaves the store empty.
    init(directory: String, trustFiles: [String], scan: Bool = true, logger: Logger) {
        self.directory = directory
        let trust: PluginTrustStore
        do { trust = try PluginTrustStore(files: trustFiles) } catch {
            // A trust list that cannot be read whole is not the one the administrator meant:
            // trust none of it, so nothing is accepted by mistake.
            logger.error("plugin_trust: \(error); no key is trusted")
            trust = PluginTrustStore()
        }
        trustWarning = scan && trust.isEmpty ? Self.noTrustedKeys : nil
        if let trustWarning { logger.warning("\(trustWarning)") }
        verifier = .enforcing(trust: trust, expectedABI: NPA_PLUGIN_ABI_VERSION, knownModels: Set(NICModelRegistry.names))
        let files = (scan ? (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] : [])
            .filter { $0.hasSuffix(".npabundle") }.sorted()
        var entries: [Entry] = []
        for file in files {
            let path = directory + "/" + file
            let entry = Entry(file: file, path: path, verdict: Self.verify(path, name: file, with: verifier))
            if case .failure(let refusal) = entry.verdict { logger.warning("\(refusal)") }
            entries.append(entry)
        }
        self.entries = entries
        var chosen: [String: Entry] = [:]
        for model in NICModelRegistry.models {
            let candidates = entries.filter { e in
                (try? e.verdict.get())?.manifest.models.contains { $0.model == model.name } ?? false
            }
            // The model's preference order among the accepted bundles' names, else the first by file name.
            let preferred = model.pluginImages.lazy.compactMap { name in
                candidates.first { (try? $0.verdict.get())?.manifest.name == name }
            }.first
            if let entry = preferred ?? candidates.first { chosen[model.name] = entry }
        }
        self.chosen = chosen
    }

    /// The file's bytes, or why it is refused: it cannot be read (a directory, a dangling link),
    /// or it is over `limit` (then no more than `limit` + 1 bytes are read).
    private static func read(_ path: String, name: String, limit: Int) -> Result<[UInt8], PluginBundleRefusal> {
        func refuse(_ reason: PluginBundleRefusal.Reason) -> Result<[UInt8], PluginBundleRefusal> {
            .failure(PluginBundleRefusal(bundle: name, reason: reason))
        }
        let fd: FileDescriptor
        do { fd = try FileDescriptor.open(path, .readOnly, options: .closeOnExec) } catch { return refuse(.unreadable("\(error)")) }
        defer { try? fd.close() }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        do {
            while bytes.count <= limit {
                let n = try chunk.withUnsafeMutableBytes { try fd.read(fromAbsoluteOffset: Int64(bytes.count), into: $0) }
                if n == 0 { break }
                bytes += chunk[..<n]
            }
        } catch {
            return refuse(.unreadable("\(error)"))
        }
        guard bytes.count <= limit else {
            let size = (try? fd.seek(offset: 0, from: .end)).map(Int.init) ?? bytes.count
            return refuse(.malformed(.tooLarge(size: size, limit: limit)))
        }
        return .success(bytes)
    }

    private static func verify(
        _ path: String, name: String, with verifier: PluginBundleVerifier
    ) -> Result<PluginBundleVerifier.Accepted, PluginBundleRefusal> {
        Self.read(path, name: name, limit: verifier.maxSize).flatMap { bytes in
            Result { () throws(PluginBundleRefusal) in try verifier.verify(bytes, name: name) }
        }
    }

    /// The bundle the host injects for a NIC model: its plugin's name and the file.
    func image(for model: NICModel) -> (name: String, path: String)? {
        guard let entry = chosen[model.name], case .success(let accepted) = entry.verdict else { return nil }
        return (accepted.manifest.name, entry.path)
    }

    /// Why no bundle serves the host's models (for the switch refusal): each refusal's line, if any.
    var refusalSummary: String {
        let refused = entries.compactMap { e -> String? in
            if case .failure(let r) = e.verdict { return r.description } else { return nil }
        }
        return refused.isEmpty ? (trustWarning.map { " (\($0))" } ?? "") : " (\(refused.joined(separator: "; ")))"
    }

    /// Injection: the bundle's bytes, read and verified again (the file may have changed since
    /// the host started), in a fresh memfd.
    func memfd(_ path: String) throws -> SharedMemory {
        let name = URL(fileURLWithPath: path).lastPathComponent
        let bytes: [UInt8]
        switch Self.read(path, name: name, limit: verifier.maxSize) {
        case .failure(let refusal): throw InjectionError(description: refusal.description)
        case .success(let read): bytes = read
        }
        do { _ = try verifier.verify(bytes, name: name) } catch { throw InjectionError(description: error.description) }
        let memory = try SharedMemory(name: "npa-plugin-bundle", size: max(bytes.count, 1))
        bytes.withUnsafeBytes { memory.base.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        return memory
    }

    /// The store as `npa status` shows it.
    var status: StatusReport.PluginStore {
        StatusReport.PluginStore(
            directory: directory, trustedKeys: verifier.trust.keys.keys.map(\.description).sorted(),
            bundles: entries.map { e in
                switch e.verdict {
                case .success(let a):
                    return .init(
                        file: e.file, name: a.manifest.name, version: a.manifest.version, models: a.manifest.models.map(\.model),
                        signer: a.signer.description, accepted: true, refusal: nil, vendor: a.manifest.vendor,
                        licence: a.manifest.licence)
                case .failure(let r):
                    return .init(
                        file: e.file, name: nil, version: nil, models: [], signer: nil, accepted: false, refusal: r.description)
                }
            },
            used: chosen.mapValues(\.file), trustWarning: trustWarning)
    }
}
