import CNPAPluginABI
import Foundation
import NPARingFormats
import NPASystem

/// The engine of npa-cq, the ENA / mlx5-style model: per queue a submission queue and a
/// completion queue, entries matched by request id, ownership by a phase bit that flips on every
/// wrap. It touches the VF's queues and buffers inside its grant and the VF's register page,
/// under the NIC's lock; switching and backpressure are the NIC's (it calls them).
enum CompletionQueueEngine: VFModelEngine {
    static func pullTransmitQueue(_ nic: SoftNIC, _ vf: VirtualFunction, _ q: Int) -> Int {
        guard let memory = vf.grant else { return 0 }
        var queue = vf.txQueues[q]
        let size = queue.config.ringSize
        let tail = vf.read(NPA_CQ_REG_TX_SQ_TAIL(UInt32(q)))
        guard tail &- queue.head <= size else {
            vf.counters.badDescriptors &+= 1
            return 0
        }
        let sq = memory.base + Int(queue.config.ringGPA)  // SAFETY: inside the grant, checked at init
        var n = 0
        sending: while queue.head != tail && n < nic.passBudget && (!nic.pfEnabled || nic.pfReceive.hasRoom) {
            let entry = CompletionQueueCodec.readSubmission(CompletionQueueCodec.slot(sq, queue.head, size: size))
            let length = entry.length
            var status: UInt8 = 0
            if entry.phase != queue.submissionPhase || length < EthernetFrame.headerLength
                || length > SoftNIC.maximumTransmitLength(entry.offload)
            {
                vf.counters.badDescriptors &+= 1
                status = UInt8(NPA_CQ_STATUS_ERROR)
            } else if let p = memory.pointer(gpa: entry.address, length: UInt64(length)) {
                switch nic.transmit(Self.self, from: vf, p, length: length, offload: entry.offload) {
                case .taken: break
                case .refused: status = UInt8(NPA_CQ_STATUS_ERROR)
                case .heldBack: break sending  // the entry stays for a later pass
                }
            } else {
                vf.counters.dmaFaults &+= 1
                status = UInt8(NPA_CQ_STATUS_ERROR)
            }
            complete(memory, &queue, requestID: entry.requestID, length: UInt16(length), status: status, hash: 0)
            queue.head &+= 1
            if queue.head & (size - 1) == 0 { queue.submissionPhase ^= 1 }
            n += 1
        }
        vf.txQueues[q] = queue
        if n > 0 { vf.pendingInterrupt = true }
        return n
    }

    /// Writes the next completion of `queue` and moves its cursor (the phase flips on a wrap).
    @inline(__always)
    private static func complete(
        _ memory: GuestMemory, _ queue: inout VirtualFunction.Queue, requestID: UInt16, length: UInt16, status: UInt8, hash: UInt32,
        checksumValid: Bool = false
    ) {
        // SAFETY: the completion queue is inside the grant, checked at init (`queueFits`).
        let c = memory.base + Int(queue.completionGPA) + Int(queue.completionIndex) * CompletionQueueCodec.entrySize
        CompletionQueueCodec.writeCompletion(
            c, requestID: requestID, length: length, status: status, hash: hash, phase: queue.completionPhase, checksumValid: checksumValid)
        queue.completionIndex += 1
        if queue.completionIndex == queue.config.ringSize {
            queue.completionIndex = 0
            queue.completionPhase ^= 1
        }
    }

    static func deliver(
        to vf: VirtualFunction, queue q: Int, _ frame: UnsafeRawPointer, length: Int, hash: UInt32, source: UInt64, vlan: UInt16,
        sender: VirtualFunction?, checksumValid: Bool
    ) {
        guard let memory = vf.grant else { return }
        let rxQueue = vf.rxQueues + q
        // As in npa-dring: longer than the PF-programmed buffer size, dropped before an entry is
        // taken. (An entry's own length, the guest's word, can only lower the limit below.)
        guard length <= Int(rxQueue.pointee.config.bufferSize) else {
            vf.counters.frameTooLong &+= 1
            return
        }
        var queue = rxQueue.pointee
        let size = queue.config.ringSize
        if queue.head == queue.cachedTail {
            let tail = vf.read(NPA_CQ_REG_RX_SQ_TAIL(UInt32(q)))
            guard tail &- queue.head <= size, tail != queue.head else {
                vf.counters.noBufferDrops &+= 1
                return
            }
            queue.cachedTail = tail
        }
        let entry = CompletionQueueCodec.readSubmission(
            CompletionQueueCodec.slot(memory.base + Int(queue.config.ringGPA), queue.head, size: size))
        var status: UInt8 = 0
        var written = length
        if entry.phase != queue.submissionPhase || entry.length < length {
            vf.counters.badDescriptors &+= 1
            status = UInt8(NPA_CQ_STATUS_ERROR)
            written = 0
        } else if let dst = memory.pointer(gpa: entry.address, length: UInt64(length)) {
            memcpy(dst, frame, length)
            if !SoftNIC.copyIsFaithful(dst, length: length, source: source, vlan: vlan) {
                sender?.counters.spoofedDrops &+= 1
                status = UInt8(NPA_CQ_STATUS_ERROR)
            }
        } else {
            vf.counters.dmaFaults &+= 1
            status = UInt8(NPA_CQ_STATUS_ERROR)
            written = 0
        }
        complete(
            memory, &queue, requestID: entry.requestID, length: UInt16(written), status: status, hash: hash, checksumValid: checksumValid)
        queue.head &+= 1
        if queue.head & (size - 1) == 0 { queue.submissionPhase ^= 1 }
        rxQueue.pointee = queue
        if status == 0 {
            vf.counters.rxFrames &+= 1
            vf.counters.rxBytes &+= UInt64(length)
            vf.mirrorCopy(frame, length: length, .received)
        }
        vf.pendingInterrupt = true
    }
}
