import Crypto

/// The plugin bundle container: one file (so the host can inject it into a guest as one memfd and
/// the shell can check it there before mapping the binary) holding the manifest JSON, the binary,
/// and an optional signature block. Layout, all lengths u32 little-endian:
///
///     "NPABNDL1" | len | manifest | len | binary | len | signature block (0 = unsigned)
///
/// The signature block is the signer's key id (8 bytes) and the Ed25519 signature (64 bytes) over
/// `signedMessage`. Nothing may follow the last section. The codec is pure: decoding checks every
/// length against what remains before reading, never allocates more than the input, never traps.
public struct PluginBundle: Equatable, Sendable {
    public static let magic: [UInt8] = Array("NPABNDL1".utf8)
    /// The default cap on a whole bundle: plugins are freestanding images of tens of KiB.
    public static let defaultMaxSize = 16 * 1024 * 1024
    /// Domain separation: a signature over a bundle can never be replayed as one over anything else.
    public static let signaturePrefix: [UInt8] = Array("npa-plugin-bundle-v1".utf8) + [0]

    /// Who signed, and the signature.
    public struct Signature: Equatable, Sendable {
        public static let byteCount = 64
        public static let blockSize = PluginKeyID.byteCount + byteCount
        public var keyID: PluginKeyID
        /// The 64-byte Ed25519 signature.
        public var bytes: [UInt8]
        public init(keyID: PluginKeyID, bytes: [UInt8]) {
            self.keyID = keyID
            self.bytes = bytes
        }
    }

    /// Where each section lies within the encoded bundle, so the shell can map exactly the
    /// binary's part of the memfd.
    public struct Layout: Equatable, Sendable {
        public var manifest: Range<Int>
        public var binary: Range<Int>
        /// Empty when the bundle is unsigned.
        public var signature: Range<Int>
        public var binaryOffset: Int { binary.lowerBound }
        public var binaryLength: Int { binary.count }
    }

    /// Why bytes are not a well-formed bundle, in one line.
    public enum FormatError: Error, Equatable, Sendable, CustomStringConvertible {
        case tooLarge(size: Int, limit: Int)
        case wrongMagic
        /// The bytes end inside the named section (or its length field).
        case truncated(section: String)
        case manifestTooLarge(Int)
        case signatureBlockLength(Int)
        case trailingBytes(Int)

        public var description: String {
            switch self {
            case .tooLarge(let size, let limit): "bundle is \(size) bytes, over the \(limit)-byte limit"
            case .wrongMagic: "not a plugin bundle (no NPABNDL1 magic)"
            case .truncated(let section): "bundle truncated in its \(section)"
            case .manifestTooLarge(let n): "manifest section is \(n) bytes, over \(PluginManifest.maxEncodedSize)"
            case .signatureBlockLength(let n): "signature block is \(n) bytes (0 or \(Signature.blockSize) expected)"
            case .trailingBytes(let n): "\(n) bytes after the signature block"
            }
        }
    }

    /// The manifest exactly as carried (and signed); not re-encoded, so any byte change shows.
    public var manifestBytes: [UInt8]
    public var binary: [UInt8]
    public var signature: Signature?

    public init(manifestBytes: [UInt8], binary: [UInt8], signature: Signature? = nil) {
        self.manifestBytes = manifestBytes
        self.binary = binary
        self.signature = signature
    }

    /// A bundle of `binary` described by `manifest`, its digest filled in, unsigned.
    public init(manifest: PluginManifest, binary: [UInt8]) {
        var manifest = manifest
        manifest.binarySHA256 = BundleHex.encode(SHA256.hash(data: binary))
        self.init(manifestBytes: manifest.canonicalBytes(), binary: binary)
    }

    public func encode() -> [UInt8] {
        var out = Self.magic
        out.reserveCapacity(Self.magic.count + 12 + manifestBytes.count + binary.count + Signature.blockSize)
        func section(_ bytes: [UInt8]) {
            withUnsafeBytes(of: UInt32(bytes.count).littleEndian) { out.append(contentsOf: $0) }
            out.append(contentsOf: bytes)
        }
        section(manifestBytes)
        section(binary)
        section(signature.map { $0.keyID.bytes + $0.bytes } ?? [])
        return out
    }

    /// Decodes a bundle held in an array.
    public static func decode(_ bytes: [UInt8], maxSize: Int = defaultMaxSize) throws(FormatError) -> PluginBundle {
        let layout = try bytes.withUnsafeBytes { raw in Result { () throws(FormatError) in try Self.layout(of: raw, maxSize: maxSize) } }
            .get()
        let signature =
            layout.signature.isEmpty
            ? nil
            : Signature(
                keyID: PluginKeyID(bytes: bytes[layout.signature.prefix(PluginKeyID.byteCount)]),
                bytes: Array(bytes[layout.signature.dropFirst(PluginKeyID.byteCount)]))
        return PluginBundle(manifestBytes: Array(bytes[layout.manifest]), binary: Array(bytes[layout.binary]), signature: signature)
    }

    /// Finds the sections of an encoded bundle without copying it (the shell reads a memfd's
    /// mapping this way). Every length is checked against what remains before it is used.
    public static func layout(of bytes: UnsafeRawBufferPointer, maxSize: Int = defaultMaxSize) throws(FormatError) -> Layout {
        guard bytes.count <= maxSize else { throw .tooLarge(size: bytes.count, limit: maxSize) }
        guard bytes.count >= magic.count, bytes.prefix(magic.count).elementsEqual(magic) else {
            // Too short to hold the magic counts as truncated if what is there matches its start.
            if bytes.count < magic.count, bytes.elementsEqual(magic.prefix(bytes.count)) { throw .truncated(section: "magic") }
            throw .wrongMagic
        }
        var cursor = magic.count
        func section(_ name: String) throws(FormatError) -> Range<Int> {
            guard bytes.count - cursor >= 4 else { throw .truncated(section: "\(name) length") }
            let length = Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: cursor, as: UInt32.self)))
            cursor += 4
            guard bytes.count - cursor >= length else { throw .truncated(section: name) }
            defer { cursor += length }
            return cursor..<(cursor + length)
        }
        let manifest = try section("manifest")
        guard manifest.count <= PluginManifest.maxEncodedSize else { throw .manifestTooLarge(manifest.count) }
        let binary = try section("binary")
        let signature = try section("signature block")
        guard signature.isEmpty || signature.count == Signature.blockSize else { throw .signatureBlockLength(signature.count) }
        guard cursor == bytes.count else { throw .trailingBytes(bytes.count - cursor) }
        return Layout(manifest: manifest, binary: binary, signature: signature)
    }

    /// What the signature covers: the domain prefix, the manifest bytes, the binary's SHA-256.
    /// The digest (not the binary) keeps the message small; the manifest states the same digest,
    /// and the verifier checks both agree.
    public static func signedMessage(manifestBytes: some Collection<UInt8>, binaryDigest: some Collection<UInt8>) -> [UInt8] {
        var message = signaturePrefix
        message.reserveCapacity(signaturePrefix.count + manifestBytes.count + binaryDigest.count)
        message.append(contentsOf: manifestBytes)
        message.append(contentsOf: binaryDigest)
        return message
    }
}
