/// The one-time secret a host that expects a moving vNIC admits its guest with: 16 random bytes
/// the destination remembers (with a deadline) and the source hands the guest in its `move`
/// offer. Whoever presents it first gets the vNIC; it works once.
///
/// On the wire it is a u8 length and the bytes; a parser takes exactly `size` bytes and refuses
/// anything else, so a token of the wrong length never reaches the host's table.
public struct MoveToken: Hashable, Sendable, CustomStringConvertible {
    public static let size = 16
    public let bytes: [UInt8]

    public init(bytes: [UInt8]) { self.bytes = bytes }

    /// A fresh token from the system's cryptographically secure generator (getrandom).
    public static func random() -> MoveToken {
        var generator = SystemRandomNumberGenerator()
        return MoveToken(bytes: (0..<size).map { _ in UInt8.random(in: 0...255, using: &generator) })
    }

    /// Whether it has the length a host issues.
    public var isWellFormed: Bool { bytes.count == Self.size }

    /// Its first bytes in hex: enough to tell tokens apart in a log, not enough to use one.
    public var description: String {
        bytes.prefix(4).map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined() + "…"
    }

    func encode(into writer: inout ByteWriter) {
        let count = min(bytes.count, Int(UInt8.max))
        writer.u8(UInt8(count))
        for b in bytes.prefix(count) { writer.u8(b) }
    }

    init(from reader: inout ByteReader) throws {
        let count = Int(try reader.u8())
        guard count == Self.size else { throw ProtocolError("a move token has \(Self.size) bytes, not \(count)") }
        bytes = try reader.raw(count)
    }
}
