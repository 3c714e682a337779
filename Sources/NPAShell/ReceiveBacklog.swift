/// Frames a data path holds for the user that no ring holds any more (received before a
/// switch, harvested from the old path), in arrival order: buffer id and length. A FIFO
/// allocated once, as large as the buffer pool (it can never hold more frames than there are
/// buffers); append and removeFirst allocate nothing.
package struct ReceiveBacklog {
    private let ids: UnsafeMutablePointer<UInt32>
    private let lengths: UnsafeMutablePointer<UInt32>
    private let capacity: Int
    private var head = 0
    package private(set) var count = 0

    package init(capacity: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
        ids = .allocate(capacity: capacity)
        lengths = .allocate(capacity: capacity)
    }

    package var isEmpty: Bool { count == 0 }

    package mutating func append(id: UInt32, length: UInt32) {
        precondition(count < capacity, "receive backlog overflow")
        let slot = (head + count) % capacity
        ids[slot] = id
        lengths[slot] = length
        count += 1
    }

    package mutating func removeFirst() -> (id: UInt32, length: UInt32) {
        precondition(count > 0, "receive backlog is empty")
        let frame = (ids[head], lengths[head])
        head = (head + 1) % capacity
        count -= 1
        return frame
    }

    package func deallocate() {
        ids.deallocate()
        lengths.deallocate()
    }
}
