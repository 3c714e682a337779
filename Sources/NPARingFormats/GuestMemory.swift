import NPASystem

/// A bounds-checked view of one guest's memory region: the only way host code turns a guest
/// physical address (GPA, an offset into the region) into a pointer.
///
/// Every access checks `gpa + length <= size` without overflow. The view does not own the
/// mapping; its owner keeps the region mapped while any view is in use. The guest may change the
/// bytes at any time, so callers read each guest-written field once into a local and validate the
/// local (no double fetch).
///
/// Makes no system call: its word accesses are NPASystem's `SharedWord` atomics (relaxed: not
/// torn, not cached; ordering is the ring code's business), inlined to plain loads and stores.
public struct GuestMemory: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let size: UInt64

    public init(base: UnsafeMutableRawPointer, size: Int) {
        self.base = base
        self.size = UInt64(size)
    }

    /// True if `[gpa, gpa + length)` lies inside the region.
    @inlinable
    public func contains(gpa: UInt64, length: UInt64) -> Bool {
        gpa <= size && length <= size &- gpa
    }

    /// A pointer to `length` bytes at `gpa`, or nil if any of them lies outside the region.
    @inlinable
    public func pointer(gpa: UInt64, length: UInt64) -> UnsafeMutableRawPointer? {
        guard contains(gpa: gpa, length: length) else { return nil }
        // SAFETY: [gpa, gpa+length) was just checked to lie within the mapping.
        return base + Int(gpa)
    }

    @inlinable
    public func loadU32(gpa: UInt64) -> UInt32? {
        guard let p = pointer(gpa: gpa, length: 4), gpa & 3 == 0 else { return nil }
        return UInt32(littleEndian: SharedWord.loadRelaxed(p))
    }

    @inlinable
    public func loadU64(gpa: UInt64) -> UInt64? {
        guard let p = pointer(gpa: gpa, length: 8), gpa & 7 == 0 else { return nil }
        return UInt64(littleEndian: SharedWord.loadRelaxedU64(p))
    }

    @inlinable
    public func loadU8(gpa: UInt64) -> UInt8? {
        guard let p = pointer(gpa: gpa, length: 1) else { return nil }
        return p.load(as: UInt8.self)
    }

    @inlinable
    @discardableResult
    public func storeU32(gpa: UInt64, _ value: UInt32) -> Bool {
        guard let p = pointer(gpa: gpa, length: 4), gpa & 3 == 0 else { return false }
        SharedWord.storeRelaxed(p, value.littleEndian)
        return true
    }

    @inlinable
    @discardableResult
    public func storeU64(gpa: UInt64, _ value: UInt64) -> Bool {
        guard let p = pointer(gpa: gpa, length: 8), gpa & 7 == 0 else { return false }
        SharedWord.storeRelaxedU64(p, value.littleEndian)
        return true
    }
}
