import CNPAPluginABI
import NPARingFormats

/// Transmit with a per-frame offload request (checksum completion, TCP segmentation). The shell
/// passes a request to the plugin only when the plugin declared it in `ops.tx_offloads`, and
/// otherwise does the work here, in the guest's own buffers, before `add_tx_frames`: a
/// checksum is completed in place, a super-frame is cut into MTU-sized segments in buffers of
/// their own. Either way the wire sees the same bytes, whichever plugin is loaded, and a switch
/// between plugins that differ loses nothing (`adopt` re-encodes what was in flight).
extension ShellDataPath {
    /// The widest `offload_header_length` and `offload_mss_or_csum` every plugin takes: vmxnet3's
    /// TxDesc has 10 bits of hlen and 14 of msscof. A request beyond them is done in software.
    static let maximumOffloadHeaderLength = 1023
    static let maximumOffloadMSSOrOffset = 16383

    /// Sends up to `count` frames on TX queue `queue`, as `transmit` does, each with the offload
    /// `fill` asks for it. A TSO super-frame must fit one buffer. Returns how many of the
    /// caller's frames were handed to the device (a frame whose request does not fit its bytes
    /// is counted in `offloadRequestsRefused`, dropped, and counts as handed over).
    @discardableResult
    package func transmitOffloaded(
        queue: Int = 0, count: Int, _ fill: (Int, UnsafeMutableRawBufferPointer) -> (length: Int, offload: TransmitOffload)
    ) -> Int {
        precondition(queue >= 0 && queue < txQueueCount, "TX queue \(queue) does not exist")
        let q = UInt32(queue)
        // Ring slots and buffers one frame may need: one, or a super-frame's segments.
        let worst = deviceOffloads & NPA_PLUGIN_OFFLOAD_TSO != 0 ? 1 : TCPSegmentation.maximumSegments
        var sent = 0
        while sent < count {
            var room = ringSize - 1 - plugin.txFIFOs[queue].count
            if room < 32 + worst || plugin.pool.freeCount < 32 + worst {
                _ = plugin.ops.check_tx_ring!(plugin.state, q)
                room = ringSize - 1 - plugin.txFIFOs[queue].count
            }
            var entries = 0
            var frames = 0
            while sent + frames < count, frames < 64, entries + worst <= Self.txBatchCapacity, room - entries >= worst,
                plugin.pool.freeCount > worst
            {
                let id = plugin.pool.take()!
                let buffer = UnsafeMutableRawBufferPointer(start: plugin.pool.va(id), count: plugin.pool.bufferSize)
                let (length, offload) = fill(sent + frames, buffer)
                precondition(length > 0 && length <= plugin.pool.bufferSize, "frame length \(length) does not fit a buffer")
                let added = encode(id, length: length, offload: offload, into: entries)
                for e in entries..<entries + added { txBatchFrames[e] = frames }
                entries += added
                frames += 1
            }
            if frames == 0 {
                // No room: the device is behind, or dead. Look (at most every few ms) which.
                _ = link?.checkIfDue()
                break
            }
            let accepted =
                entries == 0 ? 0 : Int(plugin.ops.add_tx_frames!(plugin.state, q, txBatch, UInt32(entries), NPA_TX_FLAG_LAST_HINT))
            for i in 0..<accepted { plugin.txFIFOs[queue].push(txBatch[i].buf_id) }
            // Our FIFO mirrors the ring, so the plugin takes all; anything refused is unsent.
            for i in accepted..<entries { plugin.pool.give(txBatch[i].buf_id) }
            if accepted < entries {
                sent += txBatchFrames[accepted]
                break
            }
            sent += frames
        }
        framesSent &+= UInt64(sent)
        return sent
    }

    /// Puts the frame in buffer `id` into `txBatch` from entry `first` on, as this plugin can
    /// take it: with its offload request, or finished here. Returns the entries it took (0: the
    /// request was refused and the buffer is free again). Buffers it adds come from the pool,
    /// which the caller made sure holds enough.
    func encode(_ id: UInt32, length: Int, offload: TransmitOffload, into first: Int) -> Int {
        let offloads = deviceOffloads
        var flags: UInt32 = 0
        var headerLength = 0
        var mssOrOffset = 0
        switch offload {
        case .none:
            break
        case .checksum(let start, let field):
            if offloads & NPA_PLUGIN_OFFLOAD_TX_CSUM != 0, (0...Self.maximumOffloadHeaderLength).contains(start),
                (start...Self.maximumOffloadMSSOrOffset).contains(field), field + 2 <= length
            {
                (flags, headerLength, mssOrOffset) = (NPA_TX_FLAG_CSUM, start, field)
            } else if !TCPSegmentation.completeChecksum(
                in: UnsafeMutableRawBufferPointer(start: plugin.pool.va(id), count: length), start: start, field: field)
            {
                return refuse(id)
            }
        case .segmentation(let header, let mss):
            if offloads & NPA_PLUGIN_OFFLOAD_TSO != 0, (1...Self.maximumOffloadHeaderLength).contains(header),
                (1...Self.maximumOffloadMSSOrOffset).contains(mss)
            {
                (flags, headerLength, mssOrOffset) = (NPA_TX_FLAG_TSO, header, mss)
            } else {
                return segment(id, length: length, headerLength: header, mss: mss, into: first)
            }
        }
        plugin.txLengths[Int(id)] = UInt32(length)
        plugin.txOffloads[Int(id)] = flags == 0 ? .none : offload
        txBatch[first] = npa_tx_frame(
            gpa: plugin.pool.gpa(id), buf_id: id, length: UInt32(length), vlan_tci: 0, flags: UInt16(flags),
            offload_header_length: UInt16(headerLength), offload_mss_or_csum: UInt16(mssOrOffset))
        return 1
    }

    /// Software TSO: the super-frame in buffer `id` becomes finished segments in buffers of
    /// their own (checksums made by the codec); its own buffer goes back to the pool.
    private func segment(_ id: UInt32, length: Int, headerLength: Int, mss: Int, into first: Int) -> Int {
        let frame = UnsafeRawBufferPointer(start: plugin.pool.va(id), count: length)
        // Each segment's IP packet fits the MTU: MTU + 14, or + 18 with an 802.1Q tag.
        let tagged = length >= 14 && EthernetFrame.u16(frame.baseAddress!, at: 12) == EthernetFrame.etherTypeVLAN
        let maxSegmentFrame = maximumFrameLength - (tagged ? 0 : EthernetFrame.vlanTagLength)
        guard
            let plan = try? TCPSegmentation(frame: frame, headerLength: headerLength, mss: mss, maxSegmentFrame: maxSegmentFrame),
            plan.segmentCount <= plugin.pool.freeCount, first + plan.segmentCount <= Self.txBatchCapacity
        else { return refuse(id) }
        for k in 0..<plan.segmentCount {
            let segment = plugin.pool.take()!
            let written = plan.writeSegment(k, from: frame, into: plugin.pool.va(segment))
            plugin.txLengths[Int(segment)] = UInt32(written)
            plugin.txOffloads[Int(segment)] = .none
            txBatch[first + k] = npa_tx_frame(
                gpa: plugin.pool.gpa(segment), buf_id: segment, length: UInt32(written), vlan_tci: 0, flags: 0,
                offload_header_length: 0, offload_mss_or_csum: 0)
        }
        plugin.pool.give(id)
        return plan.segmentCount
    }

    private func refuse(_ id: UInt32) -> Int {
        offloadRequestsRefused &+= 1
        plugin.pool.give(id)
        return 0
    }
}
