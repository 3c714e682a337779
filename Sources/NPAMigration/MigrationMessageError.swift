/// Why a migration message was refused, naming the field. Raised by `MigrationMessage`'s decoder
/// (the bytes came from another host) and by its encoder (a value that breaks a bound would not
/// decode at the other end, so it is refused before it is sent).
public enum MigrationMessageError: Error, Equatable, Sendable, CustomStringConvertible {
    case unknownType(UInt8)
    /// The payload ended inside `field`.
    case truncated(field: String)
    case invalid(field: String, reason: String)
    case trailingBytes(Int)

    public var description: String {
        switch self {
        case .unknownType(let t): "unknown migration message type \(t)"
        case .truncated(let field): "migration message truncated in \(field)"
        case .invalid(let field, let reason): "migration message field \(field) is invalid: \(reason)"
        case .trailingBytes(let n): "migration message has \(n) trailing bytes"
        }
    }
}

/// Little-endian reads over untrusted bytes, each naming its field: every read is bounds-checked
/// and throws, never traps.
struct MigrationFieldReader {
    private let bytes: ArraySlice<UInt8>
    private var position: Int

    init(_ bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
        self.position = bytes.startIndex
    }

    var remaining: Int { bytes.endIndex - position }

    mutating func take(_ n: Int, _ field: String) throws(MigrationMessageError) -> ArraySlice<UInt8> {
        guard n >= 0, remaining >= n else { throw .truncated(field: field) }
        defer { position += n }
        return bytes[position..<position + n]
    }

    mutating func integer<T: FixedWidthInteger & UnsignedInteger>(_: T.Type, _ field: String) throws(MigrationMessageError) -> T {
        var v: T = 0
        for (i, b) in try take(MemoryLayout<T>.size, field).enumerated() { v |= T(b) << (8 * i) }
        return v
    }

    mutating func u8(_ field: String) throws(MigrationMessageError) -> UInt8 { try integer(UInt8.self, field) }
    mutating func u16(_ field: String) throws(MigrationMessageError) -> UInt16 { try integer(UInt16.self, field) }
    mutating func u32(_ field: String) throws(MigrationMessageError) -> UInt32 { try integer(UInt32.self, field) }

    mutating func bool(_ field: String) throws(MigrationMessageError) -> Bool {
        switch try u8(field) {
        case 0: return false
        case 1: return true
        case let v: throw .invalid(field: field, reason: "\(v) is not a boolean (0 or 1)")
        }
    }

    /// A u16 byte count (at most `maximumBytes`) and that many bytes of UTF-8.
    mutating func string(_ field: String, maximumBytes: Int) throws(MigrationMessageError) -> String {
        let n = Int(try u16("\(field).length"))
        guard n <= maximumBytes else { throw .invalid(field: field, reason: "\(n) bytes, at most \(maximumBytes)") }
        guard let s = String(validating: try take(n, field), as: UTF8.self) else {
            throw .invalid(field: field, reason: "not valid UTF-8")
        }
        return s
    }

    func expectEnd() throws(MigrationMessageError) {
        guard remaining == 0 else { throw .trailingBytes(remaining) }
    }
}
