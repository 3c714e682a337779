/// Frames for a guest that is in its own switch handshake and whose emulated ring cannot take
/// them: the PF queue must be emptied at a switch point (frames left behind would be overtaken
/// by what the guest sends next on its new path, or routed after its MAC moved), but the guest
/// cannot take more until the handshake is over, so they wait here, in order, instead of being
/// dropped. After a switch-out they go to its emulated ring; after a switch-in, down the PF to
/// the NIC, which now delivers its MAC to the VF. `HostDataPath` sends them before any later
/// frame for the guest (it flushes them at the start of every pass and holds senders
/// meanwhile) and drops what is left as `no_buffers` once the guest's stall limit passes.
///
/// Owned by one `EmulatedDevice`; touched only by the host's thread. Its storage is allocated
/// when a switch first needs it (not per frame) and freed when it empties.
///
/// It is also the storage of a migration's held frames (`MigrationHeldFrames`): an ordered,
/// bounded queue of frame copies, with a capacity chosen by its owner.
final class SwitchOverflow {
    /// The PF queue's capacity: everything it held could have been for this guest.
    static let switchPointCapacity = 2048
    /// The most frames it keeps (`switchPointCapacity` at a switch point).
    let capacity: Int
    private let slotBytes: Int
    private let slots: UnsafeMutableRawPointer
    private let lengths: UnsafeMutablePointer<Int>
    private var head = 0
    private(set) var count = 0
    /// Where the frames go: the vNIC's emulated ring, or (after a switch-in) its VF via the PF.
    var toVirtualFunction = false

    init(maximumFrameLength: Int, capacity: Int = SwitchOverflow.switchPointCapacity) {
        precondition(capacity > 0 && maximumFrameLength > 0)
        self.capacity = capacity
        slotBytes = maximumFrameLength
        slots = .allocate(byteCount: capacity * maximumFrameLength, alignment: 64)
        lengths = .allocate(capacity: capacity)
    }

    /// The longest frame a slot holds.
    var maximumFrameLength: Int { slotBytes }

    deinit {
        slots.deallocate()
        lengths.deallocate()
    }

    var isEmpty: Bool { count == 0 }

    /// Keeps a copy of `frame`; false (the caller drops it) when full or longer than a slot.
    func append(_ frame: UnsafeRawPointer, length: Int) -> Bool {
        guard count < capacity, length <= slotBytes else { return false }
        let i = (head + count) % capacity
        (slots + i * slotBytes).copyMemory(from: frame, byteCount: length)
        lengths[i] = length
        count += 1
        return true
    }

    /// The `k`th oldest frame (`k < count`).
    func frame(_ k: Int) -> (UnsafeRawPointer, Int) {
        let i = (head + k) % capacity
        return (UnsafeRawPointer(slots + i * slotBytes), lengths[i])
    }

    func removeFirst(_ n: Int) {
        head = (head + n) % capacity
        count -= n
    }

    func removeAll() {
        head = 0
        count = 0
    }
}
