import Crypto
import Foundation

/// A plugin signer's Ed25519 public key as a trust store holds it. Its file (`K.pub`) is the hex of
/// the raw 32-byte key and a newline. Touches the file system only in `init(contentsOfFile:)` and
/// `write(to:)`.
public struct PluginPublicKey: Sendable {
    /// The raw 32-byte key (kept as bytes: swift-crypto's key types are not `Sendable`).
    public let rawRepresentation: [UInt8]
    public let keyID: PluginKeyID

    public init(_ key: Curve25519.Signing.PublicKey) {
        rawRepresentation = Array(key.rawRepresentation)
        keyID = PluginKeyID(publicKeyRaw: rawRepresentation)
    }

    /// The key in a `.pub` file's text (surrounding whitespace allowed), or nil if it is not 64
    /// hex digits of a valid key.
    public init?(hex text: String) {
        guard let raw = BundleHex.decode(text.trimmingCharacters(in: .whitespacesAndNewlines)[...], count: 32),
            let key = try? Curve25519.Signing.PublicKey(rawRepresentation: raw)
        else { return nil }
        self.init(key)
    }

    public init(contentsOfFile path: String) throws(PluginKeyFileError) {
        let text = try readKeyFile(path)
        guard let key = PluginPublicKey(hex: text) else {
            throw PluginKeyFileError(path, "not a public key (64 hex digits of a raw Ed25519 key expected)")
        }
        self = key
    }

    public var hex: String { BundleHex.encode(rawRepresentation) }

    public func write(to path: String) throws(PluginKeyFileError) {
        try writeKeyFile(path, Array((hex + "\n").utf8), permissions: 0o644)
    }

    /// Whether `signature` is this key's over `message`.
    public func isValidSignature(_ signature: [UInt8], for message: [UInt8]) -> Bool {
        // The bytes were a valid key when this value was made, so this cannot fail.
        guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: rawRepresentation) else { return false }
        return key.isValidSignature(signature, for: message)
    }
}

/// Key files are tiny; a larger file is not a key, and is not read whole.
let maxKeyFileSize = 4096

func readKeyFile(_ path: String) throws(PluginKeyFileError) -> String {
    guard let handle = FileHandle(forReadingAtPath: path) else { throw PluginKeyFileError(path, "cannot be opened") }
    defer { try? handle.close() }
    let data: Data?
    do { data = try handle.read(upToCount: maxKeyFileSize + 1) } catch { throw PluginKeyFileError(path, "cannot be read: \(error)") }
    let bytes = data ?? Data()
    guard bytes.count <= maxKeyFileSize else { throw PluginKeyFileError(path, "over \(maxKeyFileSize) bytes: not a key file") }
    return String(decoding: bytes, as: UTF8.self)
}

func writeKeyFile(_ path: String, _ bytes: [UInt8], permissions: Int) throws(PluginKeyFileError) {
    let manager = FileManager.default
    // Remove first, then create with the mode: an existing file's wider mode must not be kept.
    if manager.fileExists(atPath: path) {
        do { try manager.removeItem(atPath: path) } catch { throw PluginKeyFileError(path, "cannot replace: \(error)") }
    }
    // Create empty, narrow the mode, then write: the secret never sits in a file with a wider
    // mode (Foundation may create through a temporary file and apply attributes after).
    guard manager.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: permissions]) else {
        throw PluginKeyFileError(path, "cannot be written")
    }
    do { try manager.setAttributes([.posixPermissions: permissions], ofItemAtPath: path) } catch {
        throw PluginKeyFileError(path, "cannot set its permissions: \(error)")
    }
    guard let handle = FileHandle(forWritingAtPath: path) else { throw PluginKeyFileError(path, "cannot be opened for writing") }
    defer { try? handle.close() }
    do { try handle.write(contentsOf: Data(bytes)) } catch { throw PluginKeyFileError(path, "cannot be written: \(error)") }
}
