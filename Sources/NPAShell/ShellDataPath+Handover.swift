import CNPAPluginABI
import NPARingFormats

/// A data path's part in a switch: the old path is drained (`quiesceAndDrain`) and the new one
/// adopts what it held (`adopt`). Neither step knows a ring format: they work on buffer ids, the
/// TX FIFOs and the receive backlog, and call the plugin only through its operations table.
extension ShellDataPath {
    /// What a data path hands the next one at a switch: nothing the guest sent or received is
    /// lost, because the shell owns every buffer and TX completions are in-order counts.
    package struct DrainedState {
        /// Per TX queue, in order: buffers handed to the old plugin that the device never sent,
        /// with the offload each asked of that plugin's device.
        package var unsent: [[(id: UInt32, length: UInt32, offload: TransmitOffload)]]
        /// Received frames not yet handed to the user, in arrival order per queue.
        package var received: [(id: UInt32, length: UInt32)]
        /// Frames the old device completed during the drain.
        package var completedDuringDrain: Int
        /// RX buffers taken back from the old plugin's rings.
        package var reclaimedRxBuffers: Int
    }

    /// Switch-out, shell side, after the device was quiesced: mask the interrupt, reap TX
    /// completions (the rest of each TX FIFO is exactly what was not sent), harvest every
    /// received frame, take back every posted RX buffer. The plugin can be torn down after this.
    package func quiesceAndDrain() -> DrainedState {
        _ = plugin.ops.disable_interrupt!(plugin.state, 0)
        var completed = 0
        for q in 0..<txQueueCount { completed += Int(plugin.ops.check_tx_ring!(plugin.state, UInt32(q))) }
        var unsent: [[(id: UInt32, length: UInt32, offload: TransmitOffload)]] = []
        for q in 0..<txQueueCount {
            var frames: [(id: UInt32, length: UInt32, offload: TransmitOffload)] = []
            while let id = plugin.txFIFOs[q].pop() { frames.append((id, plugin.txLengths[Int(id)], plugin.txOffloads[Int(id)])) }
            unsent.append(frames)
        }
        var received: [(id: UInt32, length: UInt32)] = []
        while !backlog.isEmpty { received.append(backlog.removeFirst()) }
        for q in 0..<rxQueueCount {
            while true {
                plugin.receivedCount = 0
                plugin.receiveLimit = PluginHost.batchCapacity
                let n = Int(plugin.ops.check_rx_ring!(plugin.state, UInt32(q), UInt32(PluginHost.batchCapacity)))
                for i in 0..<plugin.receivedCount {
                    let id = plugin.receivedIDs[i]
                    if plugin.receivedFlags[i] & UInt16(NPA_RX_FLAG_ERROR) != 0 || Int(plugin.receivedLengths[i]) > plugin.pool.bufferSize {
                        receiveErrors &+= 1
                        plugin.pool.give(id)
                    } else {
                        received.append((id, plugin.receivedLengths[i]))
                    }
                }
                if n == 0 { break }
            }
        }
        let reclaimed = plugin.reclaimPostedRxBuffers()
        return DrainedState(unsent: unsent, received: received, completedDuringDrain: completed, reclaimedRxBuffers: reclaimed)
    }

    /// Switch-in, shell side: takes over what the previous data path left. Received frames go
    /// to the user first; unsent frames are re-sent in their order (TX queue q maps to
    /// q mod this path's TX queue count, so a flow stays in order). Returns false if the new
    /// device did not take every unsent frame within `timeoutMilliseconds`.
    package func adopt(_ state: DrainedState, timeoutMilliseconds: Int = 10_000) -> Bool {
        for (id, length) in state.received { backlog.append(id: id, length: length) }
        for (q, frames) in state.unsent.enumerated() where !frames.isEmpty {
            let target = q % txQueueCount
            var next = 0
            while next < frames.count {
                // Each frame goes with its offload if this plugin does it, finished here if not
                // (a super-frame then takes a ring slot per segment).
                let room = ringSize - 1 - plugin.txFIFOs[target].count
                var entries = 0
                while next < frames.count {
                    let f = frames[next]
                    let worst = slotsNeeded(by: f.offload)
                    // Only software segmentation takes buffers of its own; a plain re-send takes none.
                    guard entries + worst <= Self.txBatchCapacity, room - entries >= worst, worst == 1 || plugin.pool.freeCount >= worst
                    else { break }
                    entries += encode(f.id, length: Int(f.length), offload: f.offload, into: entries)
                    next += 1
                }
                if entries == 0 {
                    guard next < frames.count else { break }  // the last ones were refused and dropped
                    guard waitForTransmitSpace(queue: target, timeoutMilliseconds: timeoutMilliseconds) else {
                        for f in frames[next...] { plugin.pool.give(f.id) }
                        return false
                    }
                    continue
                }
                let accepted = Int(plugin.ops.add_tx_frames!(plugin.state, UInt32(target), txBatch, UInt32(entries), NPA_TX_FLAG_LAST_HINT))
                for i in 0..<accepted { plugin.txFIFOs[target].push(txBatch[i].buf_id) }
                // Our FIFO mirrors the ring, so the plugin takes all; one that does not loses these.
                for i in accepted..<entries { plugin.pool.give(txBatch[i].buf_id) }
                if accepted < entries {
                    for f in frames[next...] { plugin.pool.give(f.id) }
                    return false
                }
            }
        }
        return true
    }

    /// Ring slots (and buffers) a frame with `offload` takes on this plugin.
    private func slotsNeeded(by offload: TransmitOffload) -> Int {
        guard case .segmentation = offload, deviceOffloads & NPA_PLUGIN_OFFLOAD_TSO == 0 else { return 1 }
        return TCPSegmentation.maximumSegments
    }
}
