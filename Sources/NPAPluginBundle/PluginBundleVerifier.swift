import Crypto

/// The checks a bundle must pass before anything of it is used, shared by the host (before its
/// store offers it) and the shell (before it maps an injected image). Pure: reads only the bytes
/// given, no I/O; never traps on any input.
///
/// Order: container, signature (present, by a trusted key, valid), manifest, digest, licence, ABI,
/// NIC models, then the binary check. The signature comes before the manifest is parsed so that
/// hostile JSON from an unknown signer never reaches the decoder.
public struct PluginBundleVerifier: Sendable {
    /// A check of the binary's bytes (the ELF policy: machine, exported and undefined symbols),
    /// run last, on an authenticated binary. Throws a one-line reason.
    public typealias BinaryCheck = @Sendable (UnsafeRawBufferPointer) throws -> Void

    public var trust: PluginTrustStore
    /// The plugin ABI this build's shell speaks (`NPA_PLUGIN_ABI_VERSION`).
    public var expectedABI: UInt32
    /// The NIC model names this build has (`NICModelRegistry.names`): every model a manifest
    /// names must be one of them. Nil for a caller with no model list (the shell).
    public var knownModels: Set<String>?
    /// A model the manifest must name (the shell's: the model of the VF it was offered for).
    public var requiredModel: String?
    public var maxSize: Int
    /// Hook for `PluginBinaryPolicy.check`, wired by the caller; nil skips it.
    public var binaryCheck: BinaryCheck?

    public init(
        trust: PluginTrustStore, expectedABI: UInt32, knownModels: Set<String>?, requiredModel: String? = nil,
        maxSize: Int = PluginBundle.defaultMaxSize, binaryCheck: BinaryCheck? = nil
    ) {
        self.trust = trust
        self.expectedABI = expectedABI
        self.knownModels = knownModels
        self.requiredModel = requiredModel
        self.maxSize = maxSize
        self.binaryCheck = binaryCheck
    }

    /// What an accepted bundle offers: its manifest, who signed it, and where the binary lies in
    /// the bytes verified (so exactly that range of the memfd can be mapped).
    public struct Accepted: Equatable, Sendable {
        public var manifest: PluginManifest
        public var signer: PluginKeyID
        public var layout: PluginBundle.Layout
        public var binaryRange: Range<Int> { layout.binary }
    }

    /// One-shot form for callers that verify a single bundle.
    public static func verify(
        _ bytes: [UInt8], name: String, trust: PluginTrustStore, expectedABI: UInt32, knownModels: Set<String>,
        binaryCheck: BinaryCheck? = nil
    ) throws(PluginBundleRefusal) -> Accepted {
        try PluginBundleVerifier(trust: trust, expectedABI: expectedABI, knownModels: knownModels, binaryCheck: binaryCheck)
            .verify(bytes, name: name)
    }

    public func verify(_ bytes: [UInt8], name: String) throws(PluginBundleRefusal) -> Accepted {
        try bytes.withUnsafeBytes { raw in Result { () throws(PluginBundleRefusal) in try verify(raw, name: name) } }.get()
    }

    /// Verifies a bundle in place (e.g. a mapped memfd) without copying its binary.
    public func verify(_ bytes: UnsafeRawBufferPointer, name: String) throws(PluginBundleRefusal) -> Accepted {
        func refuse(_ reason: PluginBundleRefusal.Reason) -> PluginBundleRefusal { PluginBundleRefusal(bundle: name, reason: reason) }
        let layout: PluginBundle.Layout
        do { layout = try PluginBundle.layout(of: bytes, maxSize: maxSize) } catch { throw refuse(.malformed(error)) }
        guard !layout.signature.isEmpty else { throw refuse(.unsigned) }
        let keyID = PluginKeyID(bytes: bytes[layout.signature.prefix(PluginKeyID.byteCount)])
        guard let key = trust.key(for: keyID) else { throw refuse(.untrustedSigner(keyID)) }

        let manifestBytes = Array(bytes[layout.manifest])
        let binary = UnsafeRawBufferPointer(rebasing: bytes[layout.binary])
        let digest = Array(SHA256.hash(data: binary))
        let message = PluginBundle.signedMessage(manifestBytes: manifestBytes, binaryDigest: digest)
        guard key.isValidSignature(Array(bytes[layout.signature.dropFirst(PluginKeyID.byteCount)]), for: message) else {
            // Only to name the cause: an altered binary shows as a digest the (signed) manifest
            // does not state. The manifest is parsed here though unauthenticated, but its signer
            // is trusted and the decoder is capped and fuzzed.
            if let manifest = try? PluginManifest.decode(manifestBytes), manifest.binaryDigest != digest {
                throw refuse(.tamperedBinary(manifest: manifest.binarySHA256, actual: BundleHex.encode(digest)))
            }
            throw refuse(.badSignature(keyID))
        }

        let manifest: PluginManifest
        do { manifest = try PluginManifest.decode(manifestBytes) } catch {
            switch error {
            case .unknownSchema(let v): throw refuse(.unknownSchema(v))
            case .invalid(let why): throw refuse(.invalidManifest(why))
            }
        }
        // A trusted signer may still have signed a manifest that does not describe this binary.
        guard manifest.binaryDigest == digest else {
            throw refuse(.tamperedBinary(manifest: manifest.binarySHA256, actual: BundleHex.encode(digest)))
        }
        do { try PluginLicence.check(manifest.licence) } catch { throw refuse(.licence(error)) }
        guard manifest.abiVersion == expectedABI else { throw refuse(.abiMismatch(bundle: manifest.abiVersion, expected: expectedABI)) }
        if let knownModels {
            for m in manifest.models where !knownModels.contains(m.model) { throw refuse(.unknownModel(m.model)) }
        }
        if let requiredModel, !manifest.models.contains(where: { $0.model == requiredModel }) {
            throw refuse(.doesNotDrive(requiredModel))
        }
        if let binaryCheck {
            do { try binaryCheck(binary) } catch { throw refuse(.binary(String(describing: error))) }
        }
        return Accepted(manifest: manifest, signer: keyID, layout: layout)
    }
}
