import CNPAPluginABI

/// A data path's part in a switch: the old path is drained (`quiesceAndDrain`) and the new one
/// adopts what it held (`adopt`). Neither step knows a ring format: they work on buffer ids, the
/// TX FIFOs and the receive backlog, and call the plugin only through its operations table.
extension ShellDataPath {
    /// What a data path hands the next one at a switch: nothing the guest sent or received is
    /// lost, because the shell owns every buffer and TX completions are in-order counts.
    package struct DrainedState {
        /// Per TX queue, in order: buffers handed to the old plugin that the device never sent.
        package var unsent: [[(id: UInt32, length: UInt32)]]
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
        var unsent: [[(id: UInt32, length: UInt32)]] = []
        for q in 0..<txQueueCount {
            var frames: [(id: UInt32, length: UInt32)] = []
            while let id = plugin.txFIFOs[q].pop() { frames.append((id, plugin.txLengths[Int(id)])) }
            unsent.append(frames)
        }
        var received: [(id: UInt32, length: UInt32)] = []
        while !backlog.isEmpty { received.append(backlog.removeFirst()) }
        for q in 0..<rxQueueCount {
            while true {
                plugin.receivedCount = 0
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
                let n = min(64, frames.count - next, ringSize - 1 - plugin.txFIFOs[target].count)
                if n <= 0 {
                    guard waitForTransmitSpace(queue: target, timeoutMilliseconds: timeoutMilliseconds) else {
                        for f in frames[next...] { plugin.pool.give(f.id) }
                        return false
                    }
                    continue
                }
                for i in 0..<n {
                    let (id, length) = frames[next + i]
                    plugin.txLengths[Int(id)] = length
                    txBatch[i] = npa_tx_frame(
                        gpa: plugin.pool.gpa(id), buf_id: id, length: length, vlan_tci: 0, flags: 0, offload_header_length: 0,
                        offload_mss_or_csum: 0)
                }
                let accepted = Int(plugin.ops.add_tx_frames!(plugin.state, UInt32(target), txBatch, UInt32(n), NPA_TX_FLAG_LAST_HINT))
                for i in 0..<accepted { plugin.txFIFOs[target].push(txBatch[i].buf_id) }
                next += accepted
            }
        }
        return true
    }
}
