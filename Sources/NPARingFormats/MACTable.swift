/// The (MAC, VLAN) → port lookup of an L2 switch: the host's vswitch and the NIC model's
/// embedded switch both route every frame through one. Open addressing with linear probing
/// over a power-of-two array, keyed by `vlan << 48 | mac`, hashed by one multiplication: a
/// lookup is a multiply, a shift and (almost always) one probe, where a `Dictionary` would run
/// SipHash per frame. Only `insert`/`remove` (control path) may grow or reshuffle the array.
public struct MACTable {
    @usableFromInline var keys: [UInt64]
    @usableFromInline var values: [Int32]
    @usableFromInline var shift: UInt64
    public private(set) var count = 0

    /// Marks an empty slot; no real key has all 64 bits set (VLAN IDs stop at 4095).
    @usableFromInline static let empty = UInt64.max

    public init(capacity: Int = 64) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        keys = [UInt64](repeating: Self.empty, count: size)
        values = [Int32](repeating: -1, count: size)
        shift = UInt64(64 - size.trailingZeroBitCount)
    }

    @inlinable @inline(__always)
    public static func key(mac: UInt64, vlan: UInt16) -> UInt64 { UInt64(vlan) << 48 | mac }

    @inlinable @inline(__always)
    func slot(_ key: UInt64) -> Int { Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> shift) }

    /// The port for (mac, vlan), or nil.
    @inlinable @inline(__always)
    public func port(mac: UInt64, vlan: UInt16) -> Int? { self[Self.key(mac: mac, vlan: vlan)] }

    @inlinable
    public subscript(key: UInt64) -> Int? {
        @inline(__always) get {
            keys.withUnsafeBufferPointer { k in
                let mask = k.count - 1
                var i = slot(key)
                while true {
                    let found = k[i]
                    if found == key { return Int(values[i]) }
                    if found == Self.empty { return nil }
                    i = (i + 1) & mask
                }
            }
        }
    }

    public mutating func insert(_ key: UInt64, port: Int) {
        precondition(key != Self.empty && port >= 0 && port <= Int(Int32.max))
        if (count + 1) * 2 > keys.count { grow() }
        let mask = keys.count - 1
        var i = slot(key)
        while keys[i] != Self.empty && keys[i] != key { i = (i + 1) & mask }
        if keys[i] == Self.empty { count += 1 }
        keys[i] = key
        values[i] = Int32(port)
    }

    /// Removes `key`, shifting later entries of its probe run back so no lookup needs tombstones.
    public mutating func remove(_ key: UInt64) {
        let mask = keys.count - 1
        var i = slot(key)
        while keys[i] != key {
            if keys[i] == Self.empty { return }
            i = (i + 1) & mask
        }
        count -= 1
        var hole = i
        var j = i
        while true {
            j = (j + 1) & mask
            if keys[j] == Self.empty { break }
            let home = slot(keys[j])
            // Move j into the hole if its home slot is not cyclically within (hole, j].
            let between = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j)
            if !between {
                keys[hole] = keys[j]
                values[hole] = values[j]
                hole = j
            }
        }
        keys[hole] = Self.empty
        values[hole] = -1
    }

    private mutating func grow() {
        let old = zip(keys, values).filter { $0.0 != Self.empty }
        self = MACTable(capacity: keys.count)
        for (k, v) in old { insert(k, port: Int(v)) }
    }
}
