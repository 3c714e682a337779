/// The Internet checksum (RFC 1071) as device offloads compute it: a one's-complement sum of
/// 16-bit big-endian words. Pure arithmetic over bytes the caller owns; no allocation.
public enum InternetChecksum {
    /// Adds `count` bytes at `p` to `sum` as big-endian 16-bit words (an odd last byte is the
    /// high half of a word), unfolded. Sums of different spans add up only when every span but
    /// the last starts at an even offset of the whole.
    @inlinable
    public static func accumulate(_ p: UnsafeRawPointer, count: Int, into sum: UInt64 = 0) -> UInt64 {
        var s = sum
        var i = 0
        // Eight bytes at a time: the carries of 32-bit halves fit the 64-bit accumulator for any
        // frame this project handles (< 2^32 words).
        while i + 8 <= count {
            let w = UInt64(bigEndian: p.loadUnaligned(fromByteOffset: i, as: UInt64.self))
            s &+= (w >> 32) &+ (w & 0xFFFF_FFFF)
            i += 8
        }
        while i + 2 <= count {
            s &+= UInt64(UInt16(bigEndian: p.loadUnaligned(fromByteOffset: i, as: UInt16.self)))
            i += 2
        }
        if i < count { s &+= UInt64(p.load(fromByteOffset: i, as: UInt8.self)) << 8 }
        return s
    }

    /// Folds a sum to 16 bits, NOT complemented (what a pseudo-header seed holds).
    @inlinable
    public static func fold(_ sum: UInt64) -> UInt16 {
        var s = sum
        while s >> 16 != 0 { s = (s & 0xFFFF) &+ (s >> 16) }
        return UInt16(s)
    }
}
