import CNPAPluginABI
import NPARingFormats
import NPASystem
import SystemPackage

/// The shell's data path over whichever plugin is loaded: batched transmit into shell-owned
/// buffers, in-order reclaim, zero-copy receive, and the sleep/wake handshake on the interrupt
/// line. It knows no ring format; only the plugin does. A `VirtualNIC` owns one per mode; tests
/// drive one straight over a VF. What one path hands the next at a switch (drain, adopt) is in
/// ShellDataPath+Handover.swift.
///
/// It may touch its plugin (through the operations table), the buffers it takes from the pool,
/// the interrupt eventfd and the host link's socket (a poll, never a message).
///
/// Single-threaded, like the driver instance it stands for.
package final class ShellDataPath {
    package let plugin: PluginHost
    package let interrupt: EventNotifier
    package let ringSize: Int
    package var spinPolls: Int
    /// Checked after every wake-up from the interrupt line: true makes a wait return early (the
    /// vNIC uses it to notice a device-implementation-change event while it sleeps).
    package var interruptHook: () -> Bool = { false }
    /// The vNIC's link to its host, if it has one (tests may drive a data path straight over a
    /// VF without a host). Once it is down, waits return false at once.
    package var link: HostLink?
    /// One add_tx_frames batch: 64 frames, or, in software TSO, one super-frame's segments more.
    static let txBatchCapacity = 64 + TCPSegmentation.maximumSegments
    let txBatch = UnsafeMutablePointer<npa_tx_frame>.allocate(capacity: ShellDataPath.txBatchCapacity)
    /// Per batch entry of `transmitOffloaded`: which of the caller's frames it carries.
    let txBatchFrames = UnsafeMutablePointer<Int>.allocate(capacity: ShellDataPath.txBatchCapacity)
    /// The longest frame the vNIC's MTU allows (MTU + 18): what software segmentation makes.
    package var maximumFrameLength: Int
    /// The NPA_PLUGIN_OFFLOAD_* bits the shell may use of those its plugin declares.
    package var offloadMask: UInt32 = ~0
    /// What the shell asks of this path's device: declared and allowed.
    var deviceOffloads: UInt32 { plugin.ops.tx_offloads & offloadMask }
    package internal(set) var framesSent: UInt64 = 0
    /// Frames `transmitOffloaded` dropped because their offload request did not fit the frame
    /// (the caller's translation let a bad one through): never sent half-done.
    package internal(set) var offloadRequestsRefused: UInt64 = 0
    package private(set) var framesReceived: UInt64 = 0
    package internal(set) var receiveErrors: UInt64 = 0
    package private(set) var interruptWaits: UInt64 = 0

    package var txQueueCount: Int { Int(plugin.state.pointee.num_tx_queues) }
    package var rxQueueCount: Int { Int(plugin.state.pointee.num_rx_queues) }
    /// RX buffers the rings hold when full (each ring keeps one slot empty).
    private var postedTarget: Int { rxQueueCount * (ringSize - 1) }

    /// Frames received before a switch and not yet handed to the user, delivered first.
    var backlog: ReceiveBacklog

    package init(plugin: PluginHost, interrupt: EventNotifier, ringSize: Int, spinPolls: Int) {
        self.plugin = plugin
        self.interrupt = interrupt
        self.ringSize = ringSize
        self.spinPolls = spinPolls
        maximumFrameLength = plugin.pool.bufferSize
        backlog = ReceiveBacklog(capacity: plugin.pool.count)
    }

    deinit {
        txBatch.deallocate()
        txBatchFrames.deallocate()
        backlog.deallocate()
    }

    /// Posts RX buffers on every queue.
    package func refillAll() {
        for q in 0..<rxQueueCount { _ = plugin.ops.refill_rx_ring!(plugin.state, UInt32(q)) }
    }

    // MARK: Transmit

    /// Sends up to `count` frames on TX queue `queue`. For each frame `fill` writes it into the
    /// buffer it is given (in guest memory, no extra copy) and returns its length. Returns how
    /// many frames were handed to the device: fewer than `count` when the ring or the buffer
    /// pool is full (nothing is filled that is not sent).
    @discardableResult
    package func transmit(queue: Int = 0, count: Int, _ fill: (Int, UnsafeMutableRawBufferPointer) -> Int) -> Int {
        precondition(queue >= 0 && queue < txQueueCount, "TX queue \(queue) does not exist")
        let q = UInt32(queue)
        var sent = 0
        while sent < count {
            var room = ringSize - 1 - plugin.txFIFOs[queue].count
            if room < 32 || plugin.pool.freeCount < 32 {
                _ = plugin.ops.check_tx_ring!(plugin.state, q)
                room = ringSize - 1 - plugin.txFIFOs[queue].count
            }
            let n = min(count - sent, room, 64, plugin.pool.freeCount)
            if n <= 0 {
                // No room: the device is behind, or dead. Look (at most every few ms) which.
                _ = link?.checkIfDue()
                break
            }
            for i in 0..<n {
                let id = plugin.pool.take()!
                let length = fill(sent + i, UnsafeMutableRawBufferPointer(start: plugin.pool.va(id), count: plugin.pool.bufferSize))
                precondition(length > 0 && length <= plugin.pool.bufferSize, "frame length \(length) does not fit a buffer")
                plugin.txLengths[Int(id)] = UInt32(length)
                plugin.txOffloads[Int(id)] = .none
                txBatch[i] = npa_tx_frame(
                    gpa: plugin.pool.gpa(id), buf_id: id, length: UInt32(length), vlan_tci: 0, flags: 0, offload_header_length: 0,
                    offload_mss_or_csum: 0)
            }
            let accepted = Int(plugin.ops.add_tx_frames!(plugin.state, q, txBatch, UInt32(n), NPA_TX_FLAG_LAST_HINT))
            for i in 0..<accepted { plugin.txFIFOs[queue].push(txBatch[i].buf_id) }
            // Our FIFO mirrors the ring, so the plugin takes all; anything refused is unsent.
            for i in accepted..<n { plugin.pool.give(txBatch[i].buf_id) }
            sent += accepted
            if accepted < n { break }
        }
        framesSent &+= UInt64(sent)
        return sent
    }

    /// Sends copies of `frames`; returns how many were handed to the device.
    @discardableResult
    package func send(_ frames: [[UInt8]], queue: Int = 0) -> Int {
        transmit(queue: queue, count: frames.count) { i, buffer in
            buffer.copyBytes(from: frames[i])
            return frames[i].count
        }
    }

    /// Reclaims completed TX buffers on every queue; returns how many frames completed.
    @discardableResult
    package func reclaimTransmitted() -> Int {
        var n = 0
        for q in 0..<txQueueCount { n += Int(plugin.ops.check_tx_ring!(plugin.state, UInt32(q))) }
        // Nothing completed while frames are in flight: a paced sender calls this between bursts,
        // and a dead host completes nothing, so this is where such a sender learns it (cheaply:
        // at most one poll every few ms, none while completions flow).
        if n == 0, let link, transmitsInFlight > 0 { _ = link.checkIfDue() }
        return n
    }

    /// Frames handed to the device and not yet completed.
    package var transmitsInFlight: Int { plugin.txFIFOs.reduce(0) { $0 + $1.count } }

    /// Waits until TX ring space frees up on `queue` or `timeoutMilliseconds` passes.
    package func waitForTransmitSpace(queue: Int = 0, timeoutMilliseconds: Int) -> Bool {
        waitFor(timeoutMilliseconds: timeoutMilliseconds) {
            self.reclaimTransmitted()
            return self.ringSize - 1 - self.plugin.txFIFOs[queue].count >= 32 || self.plugin.txFIFOs[queue].count == 0
        }
    }

    /// Waits until every frame sent has completed, up to `timeoutMilliseconds`.
    package func flush(timeoutMilliseconds: Int) -> Bool {
        waitFor(timeoutMilliseconds: timeoutMilliseconds) {
            self.reclaimTransmitted()
            return self.transmitsInFlight == 0
        }
    }

    // MARK: Receive

    /// Receives up to `maxFrames` frames, calling `handler` for each (the bytes are valid only
    /// during the call). Polls briefly, then sleeps on the interrupt until a frame arrives or
    /// `timeoutMilliseconds` passes (0: poll once; negative: wait forever), or `wakingFor` (if
    /// given) becomes readable. Returns frames handled.
    @discardableResult
    package func receive(
        maxFrames: Int = 256, timeoutMilliseconds: Int = 0, wakingFor other: FileDescriptor? = nil,
        _ handler: (VirtualNIC.ReceivedFrame) -> Void
    ) -> Int {
        var n = 0
        _ = waitFor(timeoutMilliseconds: timeoutMilliseconds, wakingFor: other) {
            n = self.pollReceive(maxFrames: maxFrames, handler)
            self.reclaimTransmitted()
            return n > 0
        }
        return n
    }

    /// Receives into copies; convenient, not fast.
    package func receive(maxFrames: Int = 256, timeoutMilliseconds: Int = 0) -> [[UInt8]] {
        var frames: [[UInt8]] = []
        receive(maxFrames: maxFrames, timeoutMilliseconds: timeoutMilliseconds) { frames.append(Array($0.bytes)) }
        return frames
    }

    private func pollReceive(maxFrames: Int, _ handler: (VirtualNIC.ReceivedFrame) -> Void) -> Int {
        var total = 0
        while !backlog.isEmpty && total < maxFrames {
            let (id, length) = backlog.removeFirst()
            handler(
                VirtualNIC.ReceivedFrame(bytes: UnsafeRawBufferPointer(start: plugin.pool.va(id), count: Int(length)), queue: 0, rssHash: 0)
            )
            plugin.pool.give(id)
            total += 1
        }
        for q in 0..<rxQueueCount where total < maxFrames {
            plugin.receivedCount = 0
            let budget = UInt32(min(maxFrames - total, PluginHost.batchCapacity))
            plugin.receiveLimit = Int(budget)
            let n = Int(plugin.ops.check_rx_ring!(plugin.state, UInt32(q), budget))
            for i in 0..<n { CPU.prefetch(plugin.pool.va(plugin.receivedIDs[i])) }
            for i in 0..<n {
                let id = plugin.receivedIDs[i]
                if plugin.receivedFlags[i] & UInt16(NPA_RX_FLAG_ERROR) != 0 || Int(plugin.receivedLengths[i]) > plugin.pool.bufferSize {
                    receiveErrors &+= 1
                } else {
                    handler(
                        VirtualNIC.ReceivedFrame(
                            bytes: UnsafeRawBufferPointer(start: plugin.pool.va(id), count: Int(plugin.receivedLengths[i])),
                            queue: q, rssHash: plugin.receivedHashes[i],
                            checksumValid: plugin.receivedFlags[i] & UInt16(NPA_RX_FLAG_CSUM_VALID) != 0))
                    total += 1
                }
                plugin.pool.give(id)
            }
            // Refill after taking frames, and also whenever the rings are short of buffers (the
            // pool may have been empty at the last refill; a ring with no buffers gets no frames).
            if n > 0 || plugin.rxLentCount < postedTarget { _ = plugin.ops.refill_rx_ring!(plugin.state, UInt32(q)) }
        }
        framesReceived &+= UInt64(total)
        return total
    }

    /// Polls `condition`, spinning briefly, then sleeping on the interrupt line with the
    /// vmxnet3 handshake: unmask, re-check, sleep. No wake-up is lost: the device fences between
    /// publishing a completion and reading the mask, and so do we between unmasking and re-checking.
    /// With `wakingFor`, the wait also ends (false, unless `condition` then holds) once that
    /// descriptor is readable: the caller has other work, e.g. frames a TAP has for it.
    package func waitFor(timeoutMilliseconds: Int, wakingFor other: FileDescriptor? = nil, _ condition: () -> Bool) -> Bool {
        if link?.gone != nil { return false }
        if condition() { return true }
        if timeoutMilliseconds == 0 {
            _ = link?.checkIfDue()
            return false
        }
        let deadline = timeoutMilliseconds < 0 ? UInt64.max : Clock.monotonicNanoseconds() + UInt64(timeoutMilliseconds) * 1_000_000
        while true {
            var spins = 0
            while spins < spinPolls {
                CPU.relax()
                if condition() { return true }
                spins += 1
                // A long spin (busy-poll mode) still honours the deadline, the DIC event and the
                // host's hang-up (that last one at most every few ms).
                if spins & 1023 == 0 {
                    let now = Clock.monotonicNanoseconds()
                    if now >= deadline || interruptHook() || link?.checkIfDue(now: now) == true { return false }
                    if let other, EventNotifier.isReadable(other) { return false }
                }
            }
            _ = plugin.ops.enable_interrupt!(plugin.state, 0)
            if condition() {
                _ = plugin.ops.disable_interrupt!(plugin.state, 0)
                return true
            }
            let now = Clock.monotonicNanoseconds()
            if now >= deadline {
                _ = plugin.ops.disable_interrupt!(plugin.state, 0)
                _ = link?.checkIfDue(now: now)
                return false
            }
            let remaining = Int32(min((deadline - now) / 1_000_000 + 1, 1000))
            interruptWaits &+= 1
            // The control socket sleeps in the same poll: a host that dies wakes us at once.
            let woke: EventNotifier.WaitResult
            if let other {
                woke = interrupt.wait(timeoutMilliseconds: remaining, orHangUpOf: link?.socket.fd, orReadable: other)
            } else if let link {
                woke = interrupt.wait(timeoutMilliseconds: remaining, orHangUpOf: link.socket.fd)
            } else {
                woke = interrupt.wait(timeoutMilliseconds: remaining) ? .signalled : .timedOut
            }
            _ = plugin.ops.disable_interrupt!(plugin.state, 0)
            if woke == .peerHungUp {
                link?.markGone("the control connection closed")
                return false
            }
            if condition() { return true }
            if woke == .otherReadable || interruptHook() { return false }
        }
    }
}
