import Crypto
import NPASystem

/// The secret two hosts share to authenticate their migration channel (`migration_key_file`).
/// Loaded once from a file and then only handed to `AuthenticatedRecords`, which keys HMAC-SHA256
/// with it; never logged, never sent.
///
/// The file holds at least 32 bytes of key material, in one of two forms:
/// - **hex text**: the whole file, apart from trailing whitespace (a final newline), is hex
///   digits, an even number of at least 64 (`openssl rand -hex 32 > key`). It is decoded.
/// - **raw bytes**: anything else, taken as it is (`head -c 32 /dev/urandom > key`).
/// So a raw file that happens to consist only of hex digits is read as hex; random raw bytes
/// never do. The file must be a regular file that only its owner may read or write (no group or
/// other permission bits, as ssh demands of a private key): `chmod 600 key`.
public struct MigrationKey: @unchecked Sendable {
    // @unchecked: SymmetricKey is not marked Sendable on Linux, but it is an immutable value
    // (its bytes are never changed after init), so sharing it between threads is safe.
    let symmetricKey: SymmetricKey

    public static let minimumBytes = 32
    /// A key file is small; a larger one is surely the wrong file.
    public static let maximumFileBytes = 4096

    /// A key from key material in memory (tests, or a caller that has its own source).
    public init(bytes: [UInt8]) throws(MigrationKeyError) {
        guard bytes.count >= Self.minimumBytes else { throw .tooShort(path: nil, bytes: bytes.count) }
        symmetricKey = SymmetricKey(data: bytes)
    }

    /// Loads the key file at `path` by the rules above.
    public init(contentsOf path: String) throws(MigrationKeyError) {
        let file: SecretFile
        do {
            file = try SecretFile.read(path: path, maximumBytes: Self.maximumFileBytes)
        } catch {
            throw .unreadable(path: path, reason: "\(error)")
        }
        guard file.isRegularFile else { throw .notARegularFile(path: path) }
        guard file.permissions & 0o077 == 0 else { throw .tooOpen(path: path, permissions: UInt32(file.permissions)) }
        guard file.bytes.count <= Self.maximumFileBytes else { throw .tooLong(path: path, limit: Self.maximumFileBytes) }
        guard !file.bytes.isEmpty else { throw .empty(path: path) }
        let material = Self.hexDecoded(file.bytes) ?? file.bytes
        guard material.count >= Self.minimumBytes else { throw .tooShort(path: path, bytes: material.count) }
        symmetricKey = SymmetricKey(data: material)
    }

    /// The bytes `text` spells in hex, if all of it (but trailing whitespace) is an even number
    /// of hex digits; nil if it is not hex text.
    static func hexDecoded(_ text: [UInt8]) -> [UInt8]? {
        var end = text.count
        while end > 0, [0x20, 0x09, 0x0A, 0x0D].contains(text[end - 1]) { end -= 1 }
        guard end > 0, end % 2 == 0 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(end / 2)
        for i in stride(from: 0, to: end, by: 2) {
            guard let high = nibble(text[i]), let low = nibble(text[i + 1]) else { return nil }
            bytes.append(high << 4 | low)
        }
        return bytes
    }
}

/// Why a migration key was refused: one line naming the file and what to do.
public enum MigrationKeyError: Error, Equatable, Sendable, CustomStringConvertible {
    case unreadable(path: String, reason: String)
    case notARegularFile(path: String)
    /// Group or other may access the file: someone else could read the key.
    case tooOpen(path: String, permissions: UInt32)
    case empty(path: String)
    case tooLong(path: String, limit: Int)
    /// Fewer than 32 bytes of key material (after hex decoding).
    case tooShort(path: String?, bytes: Int)

    public var description: String {
        switch self {
        case .unreadable(let path, let reason): "migration key file \(path) cannot be read: \(reason)"
        case .notARegularFile(let path): "migration key file \(path) is not a regular file"
        case .tooOpen(let path, let permissions):
            "migration key file \(path) has permissions \(String(permissions, radix: 8)): it must not be accessible by group or others (chmod 600 \(path))"
        case .empty(let path): "migration key file \(path) is empty"
        case .tooLong(let path, let limit): "migration key file \(path) is longer than \(limit) bytes: not a key file"
        case .tooShort(let path, let bytes):
            "migration key\(path.map { " file \($0)" } ?? "") holds \(bytes) bytes of key material, at least \(MigrationKey.minimumBytes) are needed (e.g. openssl rand -hex 32)"
        }
    }
}
