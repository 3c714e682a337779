import CNPAPluginABI
import NPARingFormats
import NPASystem

/// npa-dring's queue configuration: one descriptor ring per queue (no completion ring), a tail
/// register the driver writes and a head register the NIC keeps, per queue and direction
/// (npa_nic_models.h: TDT/TDH, RDT/RDH). Cursors: `Queue.head` is the ring index the NIC
/// processes next; RX `publishedHead` is the head last written to RDH.
extension DescriptorRingEngine {
    /// The ring alone is the queue: nothing beyond the NIC's own checks.
    static func queueFits(_ config: VirtualFunction.QueueConfig, in memory: GuestMemory) -> Bool { true }

    static func resetQueueRegisters(of vf: VirtualFunction, queue q: Int) {
        vf.write(NPA_DRING_REG_TDT(UInt32(q)), 0)
        vf.write(NPA_DRING_REG_TDH(UInt32(q)), 0)
        vf.write(NPA_DRING_REG_RDT(UInt32(q)), 0)
        vf.write(NPA_DRING_REG_RDH(UInt32(q)), 0)
    }

    /// Buffers between the NIC's head and the driver's tail (RDT is an index into the ring).
    static func postedReceiveBuffers(of vf: VirtualFunction, queue q: Int) -> UInt32? {
        let queue = vf.rxQueues + q
        let size = queue.pointee.config.ringSize
        let tail = vf.read(NPA_DRING_REG_RDT(UInt32(q)))
        guard tail < size else { return nil }
        return (tail &- queue.pointee.head) & (size &- 1)
    }

    /// RDH is written once per pass, for every RX queue whose head moved.
    static func publishReceiveHeads(of vf: VirtualFunction) {
        for q in 0..<vf.rxQueueCount where vf.rxQueues[q].publishedHead != vf.rxQueues[q].head {
            vf.rxQueues[q].publishedHead = vf.rxQueues[q].head
            vf.write(NPA_DRING_REG_RDH(UInt32(q)), vf.rxQueues[q].head)
        }
    }
}
