import Crypto
import Foundation

/// A plugin signer's Ed25519 private key: generates keys, reads and writes key files, signs
/// bundles. The private key file `K` holds the hex of the raw 32-byte key and a newline, mode
/// 0600; `K.pub` beside it holds the public key (`PluginPublicKey`). Touches the file system only
/// in `init(contentsOfFile:)` and `writeKeyFiles(at:)`.
public struct PluginSigningKey: Sendable {
    /// The raw 32-byte private key (kept as bytes: swift-crypto's key types are not `Sendable`).
    let raw: [UInt8]
    public let publicKey: PluginPublicKey

    public static func generate() -> PluginSigningKey { PluginSigningKey(Curve25519.Signing.PrivateKey()) }

    init(_ key: Curve25519.Signing.PrivateKey) {
        raw = Array(key.rawRepresentation)
        publicKey = PluginPublicKey(key.publicKey)
    }

    /// The key of a raw 32-byte private key, or nil if it is not 32 bytes.
    public init?(rawRepresentation raw: [UInt8]) {
        guard raw.count == 32, let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: raw) else { return nil }
        self.init(key)
    }

    private var privateKey: Curve25519.Signing.PrivateKey {
        // `raw` came from a valid key.
        guard let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: raw) else { preconditionFailure("invalid stored key") }
        return key
    }

    public init(contentsOfFile path: String) throws(PluginKeyFileError) {
        let text = try readKeyFile(path)
        guard let raw = BundleHex.decode(text.trimmingCharacters(in: .whitespacesAndNewlines)[...], count: 32),
            let key = PluginSigningKey(rawRepresentation: raw)
        else { throw PluginKeyFileError(path, "not a private key (64 hex digits of a raw Ed25519 key expected)") }
        self = key
    }

    public var keyID: PluginKeyID { publicKey.keyID }

    /// Writes the private key to `path` (mode 0600) and the public key to `path.pub`.
    public func writeKeyFiles(at path: String) throws(PluginKeyFileError) {
        try writeKeyFile(path, Array((BundleHex.encode(raw) + "\n").utf8), permissions: 0o600)
        try publicKey.write(to: path + ".pub")
    }

    /// Fills `bundle`'s signature block: this key's signature over its manifest bytes and its
    /// binary's digest (replacing any earlier signature).
    public func sign(_ bundle: inout PluginBundle) {
        let digest = Array(SHA256.hash(data: bundle.binary))
        let message = PluginBundle.signedMessage(manifestBytes: bundle.manifestBytes, binaryDigest: digest)
        // Ed25519 signing of bytes in memory has no failure mode but a broken library.
        guard let signature = try? privateKey.signature(for: message) else { preconditionFailure("Ed25519 signing failed") }
        bundle.signature = .init(keyID: keyID, bytes: Array(signature))
    }
}
