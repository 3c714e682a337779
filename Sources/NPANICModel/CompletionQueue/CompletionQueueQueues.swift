import CNPAPluginABI
import NPARingFormats
import NPASystem

/// npa-cq's queue configuration: per queue a submission queue (`ringGPA`) and a completion queue
/// (`completionGPA`) of the same number of entries, and one free-running tail register per queue
/// and direction that the driver writes (npa_nic_models.h: TX_SQ_TAIL, RX_SQ_TAIL). Cursors:
/// `Queue.head` counts submission entries consumed (free running) with `submissionPhase`, the
/// phase the next entry must carry; `completionIndex` and `completionPhase` say where and with
/// which phase the next completion is written.
extension CompletionQueueEngine {
    /// The queue needs its completion queue, inside the grant and 16-byte aligned like the ring.
    static func queueFits(_ config: VirtualFunction.QueueConfig, in memory: GuestMemory) -> Bool {
        guard let completion = config.completionGPA else { return false }
        return completion & 15 == 0
            && memory.contains(gpa: completion, length: UInt64(config.ringSize) * UInt64(CompletionQueueCodec.entrySize))
    }

    static func resetQueueRegisters(of vf: VirtualFunction, queue q: Int) {
        vf.write(NPA_CQ_REG_TX_SQ_TAIL(UInt32(q)), 0)
        vf.write(NPA_CQ_REG_RX_SQ_TAIL(UInt32(q)), 0)
    }

    /// Entries submitted and not yet consumed (both counts free running).
    static func postedReceiveBuffers(of vf: VirtualFunction, queue q: Int) -> UInt32? {
        let queue = vf.rxQueues + q
        let posted = vf.read(NPA_CQ_REG_RX_SQ_TAIL(UInt32(q))) &- queue.pointee.head
        return posted <= queue.pointee.config.ringSize ? posted : nil
    }

    /// The driver learns RX progress from the completions alone.
    @inline(__always)
    static func publishReceiveHeads(of vf: VirtualFunction) {}
}
