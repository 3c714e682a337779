import CNPAPluginABI
import NPARingFormats

/// The NIC's TX offloads, where real hardware does them: a VF's descriptor (in its model's own
/// format, decoded by that model's codec into a `TransmitOffload`) asks for a checksum or for
/// TCP segmentation, and the NIC hands the embedded switch finished frames only, so no VF, PF
/// or wire ever sees a super-frame or a half-made checksum. Runs under the NIC's lock, inside an
/// engine pass, specialised per model; it touches the sender's frame (read only), the NIC's
/// `offloadScratch` and the sender's counters, and passes each frame it makes to the switch.
///
/// Nothing in a request is trusted: the codec's plan (`TCPSegmentation`) validates it against
/// the frame, and a refusal is counted (`badOffloads`) and the frame dropped.
extension SoftNIC {
    /// What became of a frame from a VF's TX queue.
    enum TransmitOutcome {
        /// Sent (or dropped and counted by the switch): the descriptor is done.
        case taken
        /// It must wait for a receiver's buffers or room in the PF's queue: the descriptor stays.
        case heldBack
        /// Its offload request was refused and counted: the descriptor is done, in error.
        case refused
    }

    /// The longest frame a VF's descriptor may name: a TSO super-frame may be up to
    /// NPA_TSO_MAX_FRAME bytes (its segments are at most `maximumFrame`); any other frame
    /// `maximumFrame`.
    @inline(__always)
    static func maximumTransmitLength(_ offload: TransmitOffload) -> Int {
        if case .segmentation = offload { return Int(NPA_TSO_MAX_FRAME) }
        return maximumFrame
    }

    /// A frame from a VF's TX queue (`frame` points into the VF's granted memory, `length` was
    /// checked against `maximumTransmitLength`) with what its descriptor asked for.
    @inline(__always)
    func transmit<Model: VFModelEngine>(
        _: Model.Type, from vf: VirtualFunction, _ frame: UnsafeRawPointer, length: Int, offload: TransmitOffload
    ) -> TransmitOutcome {
        switch offload {
        case .none:
            return transmit(Model.self, from: vf, frame, length: length) ? .taken : .heldBack
        case .checksum(let start, let field):
            return transmitCompletingChecksum(Model.self, from: vf, frame, length: length, start: start, field: field)
        case .segmentation(let headerLength, let mss):
            return transmitSegmenting(Model.self, from: vf, frame, length: length, headerLength: headerLength, mss: mss)
        }
    }

    /// CHECKSUM_PARTIAL: the frame is copied into the NIC's scratch (the sender's buffer is the
    /// guest's, and stays untouched, as a NIC's DMA read leaves it), completed there and sent
    /// from there; receivers are told the NIC made its checksum.
    private func transmitCompletingChecksum<Model: VFModelEngine>(
        _: Model.Type, from vf: VirtualFunction, _ frame: UnsafeRawPointer, length: Int, start: Int, field: Int
    ) -> TransmitOutcome {
        guard length <= Self.maximumFrame else {
            vf.counters.badOffloads &+= 1
            return .refused
        }
        var route = route(frame, length: length)
        if mustWait(Model.self, frame, length: length, route: &route, from: vf) { return .heldBack }
        offloadScratch.copyMemory(from: frame, byteCount: length)
        guard
            TCPSegmentation.completeChecksum(
                in: UnsafeMutableRawBufferPointer(start: offloadScratch, count: length), start: start, field: field)
        else {
            vf.counters.badOffloads &+= 1
            return .refused
        }
        vf.counters.checksumsCompleted &+= 1
        // The copy is what leaves: switched on its own header, so what was checked is what is sent.
        var sent = self.route(offloadScratch, length: length)
        forward(Model.self, from: vf, offloadScratch, length: length, route: &sent, checksumValid: true)
        return .taken
    }

    /// TSO: planned once (validated against the frame), held back whole while its receiver lacks
    /// a buffer per segment or the PF's queue a slot per segment, then cut segment by segment
    /// into the scratch and each segment switched like any frame (anti-spoofing included).
    ///
    /// The segments are read straight from the sender's buffer, as a NIC's DMA reads it: the
    /// codec reads it only within its plan's bounds and builds every length and checksum in the
    /// scratch, so a sender rewriting its buffer meanwhile garbles only its own segments (whose
    /// checksums are still right for what is sent) and can never make the NIC read or write
    /// outside the frame or the scratch.
    private func transmitSegmenting<Model: VFModelEngine>(
        _: Model.Type, from vf: VirtualFunction, _ frame: UnsafeRawPointer, length: Int, headerLength: Int, mss: Int
    ) -> TransmitOutcome {
        let source = UnsafeRawBufferPointer(start: frame, count: length)
        let plan: TCPSegmentation
        do {
            plan = try TCPSegmentation(frame: source, headerLength: headerLength, mss: mss, maxSegmentFrame: Self.maximumFrame)
        } catch {
            vf.counters.badOffloads &+= 1
            return .refused
        }
        let count = plan.segmentCount
        if pfEnabled && pfReceive.freeSlots < UInt32(count) { return .heldBack }
        var route = route(frame, length: length)
        if mustWait(Model.self, frame, length: plan.segmentLength(0), route: &route, from: vf, frames: UInt32(count)) {
            return .heldBack
        }
        vf.counters.segmentedFrames &+= 1
        vf.counters.segments &+= UInt64(count)
        for i in 0..<count {
            let n = plan.writeSegment(i, from: source, into: offloadScratch)
            var segment = self.route(offloadScratch, length: n)
            forward(Model.self, from: vf, offloadScratch, length: n, route: &segment, checksumValid: true)
        }
        return .taken
    }
}
