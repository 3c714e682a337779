import Crypto

/// Names a signing key in a bundle's signature block and in refusals: the first 8 bytes of the
/// SHA-256 of the key's raw 32-byte Ed25519 public key. Short enough to print, long enough that
/// two keys in one trust store do not collide by accident; it only selects the key to try, the
/// signature check is what authenticates. Pure value.
public struct PluginKeyID: Hashable, Sendable, CustomStringConvertible {
    public static let byteCount = 8
    /// The 8 bytes, big-endian order as they appear in the bundle.
    public let bytes: [UInt8]

    /// `bytes` must be exactly `byteCount` long (callers read it from a bounds-checked slice).
    init(bytes: some Collection<UInt8>) {
        precondition(bytes.count == Self.byteCount, "a key id is \(Self.byteCount) bytes")
        self.bytes = Array(bytes)
    }

    /// The key id of a raw 32-byte Ed25519 public key.
    public init(publicKeyRaw: some Collection<UInt8>) {
        self.init(bytes: Array(SHA256.hash(data: Array(publicKeyRaw))).prefix(Self.byteCount))
    }

    public var description: String { BundleHex.encode(bytes) }
}
