/// Little-endian writer for control messages.
public struct ByteWriter: Sendable {
    public private(set) var bytes: [UInt8] = []
    public init() {}

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    public mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    public mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    /// A string as u16 length + UTF-8 bytes, truncated to 65535 bytes.
    public mutating func string(_ s: String) {
        let utf8 = Array(s.utf8.prefix(65535))
        u16(UInt16(utf8.count))
        bytes += utf8
    }
}

/// Why a control message did not parse.
public struct ProtocolError: Error, Equatable, Sendable, CustomStringConvertible {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// Little-endian reader over untrusted bytes: every read is bounds-checked and throws.
public struct ByteReader {
    private let bytes: ArraySlice<UInt8>
    private var position: Int

    public init(_ bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
        self.position = bytes.startIndex
    }

    public var remaining: Int { bytes.endIndex - position }

    private mutating func take(_ n: Int) throws -> ArraySlice<UInt8> {
        guard n >= 0, remaining >= n else {
            throw ProtocolError("message truncated: needed \(n) more bytes, have \(remaining)")
        }
        defer { position += n }
        return bytes[position..<position + n]
    }

    private mutating func integer<T: FixedWidthInteger>(_: T.Type) throws -> T {
        var v: T = 0
        for (i, b) in try take(MemoryLayout<T>.size).enumerated() { v |= T(b) << (8 * i) }
        return v
    }

    public mutating func u8() throws -> UInt8 { try integer(UInt8.self) }
    public mutating func u16() throws -> UInt16 { try integer(UInt16.self) }
    public mutating func u32() throws -> UInt32 { try integer(UInt32.self) }
    public mutating func u64() throws -> UInt64 { try integer(UInt64.self) }
    public mutating func raw(_ n: Int) throws -> [UInt8] { Array(try take(n)) }

    public mutating func string() throws -> String {
        let n = Int(try u16())
        let utf8 = try take(n)
        guard let s = String(validating: utf8, as: UTF8.self) else {
            throw ProtocolError("string is not valid UTF-8")
        }
        return s
    }

    public func expectEnd() throws {
        guard remaining == 0 else { throw ProtocolError("\(remaining) unexpected trailing bytes") }
    }
}
