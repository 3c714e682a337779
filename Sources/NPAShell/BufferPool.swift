/// The shell's buffers: every RX and TX buffer lives in guest memory, in one pool of equal-sized
/// buffers named by id. The shell owns them all — plugins and devices only borrow them — so on
/// a plugin switch the shell can account for every one (`outstanding` returns to zero).
///
/// A free-list stack allocated once; take and give are O(1) and allocate nothing.
package final class BufferPool {
    let baseVA: UnsafeMutableRawPointer
    let baseGPA: UInt64
    let bufferSize: Int
    package let count: Int
    private let freeList: UnsafeMutablePointer<UInt32>
    package private(set) var freeCount: Int

    package init(baseVA: UnsafeMutableRawPointer, baseGPA: UInt64, bufferSize: Int, count: Int) {
        precondition(count > 0 && count < Int(UInt32.max))
        self.baseVA = baseVA
        self.baseGPA = baseGPA
        self.bufferSize = bufferSize
        self.count = count
        freeList = .allocate(capacity: count)
        for i in 0..<count { freeList[i] = UInt32(count - 1 - i) }
        freeCount = count
    }

    package var outstanding: Int { count - freeCount }

    @inline(__always)
    func take() -> UInt32? {
        guard freeCount > 0 else { return nil }
        freeCount -= 1
        return freeList[freeCount]
    }

    @inline(__always)
    func give(_ id: UInt32) {
        precondition(Int(id) < count && freeCount < count, "buffer \(id) returned twice or never taken")
        freeList[freeCount] = id
        freeCount += 1
    }

    @inline(__always)
    func gpa(_ id: UInt32) -> UInt64 { baseGPA + UInt64(id) * UInt64(bufferSize) }

    @inline(__always)
    func va(_ id: UInt32) -> UnsafeMutableRawPointer { baseVA + Int(id) * bufferSize }

    deinit { freeList.deallocate() }
}

/// A FIFO of buffer ids, fixed capacity: the TX buffers a queue has handed to its plugin, in
/// order, so an in-order completion count names exactly which buffers came back.
struct BufferFIFO {
    private let slots: UnsafeMutablePointer<UInt32>
    private let mask: Int
    private(set) var head = 0
    private(set) var tail = 0

    init(capacity: Int) {
        precondition(capacity > 0 && capacity & (capacity - 1) == 0)
        slots = .allocate(capacity: capacity)
        mask = capacity - 1
    }

    var count: Int { tail - head }

    @inline(__always)
    mutating func push(_ id: UInt32) {
        precondition(count <= mask, "TX FIFO overflow")
        slots[tail & mask] = id
        tail += 1
    }

    @inline(__always)
    mutating func pop() -> UInt32? {
        guard head < tail else { return nil }
        defer { head += 1 }
        return slots[head & mask]
    }

    func deallocate() { slots.deallocate() }
}
