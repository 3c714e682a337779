import CNPAPluginABI
import Foundation
import NPARingFormats
import NPASystem

/// The engine of npa-dring, the 82599-VF-style model: per queue one descriptor ring, a tail
/// doorbell the driver writes, a head the NIC keeps, and "descriptor done" written back into
/// the descriptor. It touches the VF's rings and buffers inside its grant and the VF's register
/// page, under the NIC's lock; switching and backpressure are the NIC's (it calls them).
enum DescriptorRingEngine: VFModelEngine {
    static func pullTransmitQueue(_ nic: SoftNIC, _ vf: VirtualFunction, _ q: Int) -> Int {
        guard let memory = vf.grant else { return 0 }
        var queue = vf.txQueues[q]  // a local copy for the loop, stored back once
        let size = queue.config.ringSize
        let tail = vf.read(NPA_DRING_REG_TDT(UInt32(q)))
        guard tail < size else {
            vf.counters.badDescriptors &+= 1
            return 0
        }
        let ring = memory.base + Int(queue.config.ringGPA)  // SAFETY: inside the grant, checked at init
        var n = 0
        // Backpressure, not loss: while the PF's queue is full the engine leaves the VF's
        // descriptors where they are (like a NIC honouring pause frames); the guest's ring fills.
        sending: while queue.head != tail && n < nic.passBudget && (!nic.pfEnabled || nic.pfReceive.hasRoom) {
            let d = DescriptorRingCodec.slot(ring, queue.head)
            let slot = DescriptorRingCodec.readTransmit(d, context: (queue.segmentationHeaderLength, queue.segmentationMSS))
            let length = slot.length
            var refused = false
            if slot.isContext {
                // 82599-style: the context stays in force for the queue until the next one.
                if case .segmentation(let headerLength, let mss) = slot.offload {
                    (queue.segmentationHeaderLength, queue.segmentationMSS) = (headerLength, mss)
                }
                vf.counters.contextDescriptors &+= 1
            } else if length < EthernetFrame.headerLength || length > SoftNIC.maximumTransmitLength(slot.offload) {
                vf.counters.badDescriptors &+= 1
                refused = true
            } else if let p = memory.pointer(gpa: slot.address, length: UInt64(length)) {
                switch nic.transmit(Self.self, from: vf, p, length: length, offload: slot.offload) {
                case .taken: break
                case .refused: refused = true
                case .heldBack: break sending  // the descriptor stays for a later pass
                }
            } else {
                vf.counters.dmaFaults &+= 1
                refused = true
            }
            DescriptorRingCodec.writeBackTransmit(d, refused: refused)
            queue.head = (queue.head + 1) & (size - 1)
            n += 1
        }
        vf.txQueues[q] = queue
        vf.write(NPA_DRING_REG_TDH(UInt32(q)), queue.head)
        if n > 0 { vf.pendingInterrupt = true }
        return n
    }

    static func deliver(
        to vf: VirtualFunction, queue q: Int, _ frame: UnsafeRawPointer, length: Int, hash: UInt32, source: UInt64, vlan: UInt16,
        sender: VirtualFunction?, checksumValid: Bool
    ) {
        guard let memory = vf.grant else { return }
        let queue = vf.rxQueues + q
        // The descriptor names only an address; the buffer's size is the PF's (SRRCTL). A longer
        // frame is dropped here, before a descriptor is taken or a byte is written.
        guard length <= Int(queue.pointee.config.bufferSize) else {
            vf.counters.frameTooLong &+= 1
            return
        }
        let size = queue.pointee.config.ringSize
        if queue.pointee.head == queue.pointee.cachedTail {
            let tail = vf.read(NPA_DRING_REG_RDT(UInt32(q)))
            guard tail < size, queue.pointee.head != tail else {
                vf.counters.noBufferDrops &+= 1
                return
            }
            queue.pointee.cachedTail = tail
        }
        let d = DescriptorRingCodec.slot(memory.base + Int(queue.pointee.config.ringGPA), queue.pointee.head)
        let address = DescriptorRingCodec.readReceiveBuffer(d)
        var error = false
        var written = length
        if let dst = memory.pointer(gpa: address, length: UInt64(length)) {
            memcpy(dst, frame, length)
            if !SoftNIC.copyIsFaithful(dst, length: length, source: source, vlan: vlan) {
                sender?.counters.spoofedDrops &+= 1
                error = true
            }
        } else {
            vf.counters.dmaFaults &+= 1
            error = true
            written = 0
        }
        DescriptorRingCodec.writeBackReceive(d, length: written, error: error, checksumValid: checksumValid)
        queue.pointee.head = (queue.pointee.head + 1) & (size - 1)
        if !error {
            vf.counters.rxFrames &+= 1
            vf.counters.rxBytes &+= UInt64(length)
            vf.mirrorCopy(frame, length: length, .received)
        }
        vf.pendingInterrupt = true
    }
}
