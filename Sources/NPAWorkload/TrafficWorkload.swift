import NPAControlProtocol
import NPAShell
import NPASystem

/// The traffic workloads `npa guest` runs (send, recv, echo, duplex), as plain functions over
/// the guest API so tests and the demo run exactly what a user runs.
public struct TrafficWorkload {
    public var count: Int
    public var frameBytes: Int = 1514
    /// Frames per second to offer; nil sends as fast as the ring allows.
    public var rate: Double?
    public var flows: Int = 1
    /// The first flow id this sender uses, so several senders to one receiver use disjoint flows.
    public var flowBase: Int = 0
    public var timeoutSeconds: Double = 30
    /// Frames the sender keeps in flight before it waits for the receiver's acknowledgement (a
    /// windowed stream, like netperf's TCP_STREAM: a fast sender cannot overrun the receiver);
    /// nil sends without waiting (like UDP). The receiver acknowledges every quarter window.
    public var window: Int?

    public init(count: Int, frameBytes: Int = 1514, rate: Double? = nil, flows: Int = 1, flowBase: Int = 0, timeoutSeconds: Double = 30) {
        self.count = count
        self.flowBase = flowBase
        self.frameBytes = frameBytes
        self.rate = rate
        self.flows = flows
        self.timeoutSeconds = timeoutSeconds
    }

    /// Validates the parameters; the message says what is wrong.
    public func validate() throws {
        struct Invalid: Error, CustomStringConvertible { let description: String }
        guard count >= 0 else { throw Invalid(description: "--count must be at least 0") }
        guard (TrafficFrame.minimumLength...TrafficFrame.maximumLength).contains(frameBytes) else {
            throw Invalid(description: "--size must be \(TrafficFrame.minimumLength)...\(TrafficFrame.maximumLength) bytes")
        }
        guard (1...1024).contains(flows) else { throw Invalid(description: "--flows must be 1...1024") }
        guard (0...(1 << 20)).contains(flowBase) else { throw Invalid(description: "--flow-base must be 0...1048576") }
        if let rate, rate <= 0 { throw Invalid(description: "--rate must be positive") }
        guard timeoutSeconds > 0 else { throw Invalid(description: "--timeout must be positive") }
        if let window, window < 4 { throw Invalid(description: "--window must be at least 4 frames") }
    }

    private struct Sender {
        let destination: MACAddress
        let workload: TrafficWorkload
        var sequences: [UInt64]
        var sent = 0
        var nextFlow = 0
        let start = Clock.monotonicNanoseconds()

        init(destination: MACAddress, workload: TrafficWorkload) {
            self.destination = destination
            self.workload = workload
            sequences = [UInt64](repeating: 0, count: workload.flows)
        }

        /// Frames of the current paced burst not yet sent.
        var burstRemaining = 0

        var done: Bool { sent >= workload.count }

        /// A paced sender waits until a quantum's worth of frames (50 µs, about the shortest
        /// sleep the kernel gives) has fallen due and then sends them back to back, so a high
        /// rate does not turn into a busy loop of one-frame bursts.
        static let pacingQuantum = 200e-6

        private func pacedBurst(_ rate: Double) -> Int { max(1, min(workload.count - sent, Int(rate * Self.pacingQuantum))) }

        /// Microseconds until the rate allows the next burst (0 when it already does).
        var microsecondsUntilNextBurst: Int {
            guard let rate = workload.rate, burstRemaining == 0 else { return 0 }
            let due = start + UInt64(Double(sent + pacedBurst(rate) - 1) / rate * 1e9)
            let now = Clock.monotonicNanoseconds()
            return due > now ? Int((due - now) / 1_000) : 0
        }

        /// Sends one batch (one flow, up to 32 frames and `limit`; paced: from the burst that
        /// has fallen due); returns frames sent.
        mutating func step(_ nic: VirtualNIC, limit: Int = 32) -> Int {
            var burst = min(32, limit, workload.count - sent)
            if let rate = workload.rate {
                if burstRemaining == 0 {
                    let due = Int(rate * Double(Clock.monotonicNanoseconds() - start) / 1e9) + 1 - sent
                    if due < pacedBurst(rate) { return 0 }
                    burstRemaining = due
                }
                burst = min(burst, burstRemaining)
            }
            let flow = nextFlow
            let queue = flow % nic.txQueueCount
            let perFlow = (workload.count + workload.flows - 1) / workload.flows
            burst = min(burst, perFlow - Int(sequences[flow]))
            let source = nic.mac
            let first = sequences[flow]
            let size = workload.frameBytes
            let dst = destination
            let base = workload.flowBase
            let n = nic.transmit(queue: queue, count: burst) { i, buffer in
                TrafficFrame.write(
                    into: buffer, destination: dst, source: source, flow: UInt32(base + flow), sequence: first + UInt64(i), length: size)
            }
            sequences[flow] += UInt64(n)
            sent += n
            burstRemaining = max(0, burstRemaining - n)
            // Round-robin over flows that still have frames to send.
            if n == burst || burst == 0 {
                for _ in 0..<workload.flows {
                    nextFlow = (nextFlow + 1) % workload.flows
                    if Int(sequences[nextFlow]) < perFlow { break }
                }
            }
            return n
        }
    }

    /// Fills in time, CPU and rates. `frames` and `bytes` are what the rates count: what was
    /// sent for a sender, what was verified for a receiver (its actual lengths), both for duplex.
    private func finish(_ s: inout TrafficSummary, nic: VirtualNIC, start: UInt64, cpuStart: UInt64, frames: Int, bytes: Int) {
        s.seconds = Double(Clock.monotonicNanoseconds() - start) / 1e9
        s.cpuSeconds = Double(Clock.threadCPUNanoseconds() - cpuStart) / 1e9
        s.bytes = bytes
        s.frameBytes = frames > 0 ? (bytes + frames / 2) / frames : 0
        if s.seconds > 0 {
            s.mpps = Double(frames) / s.seconds / 1e6
            s.gbps = Double(bytes) * 8 / s.seconds / 1e9
        }
        s.dropped = (try? nic.dropCounts()) ?? [:]
        s.hostGone = nic.hostGone?.description
        s.doorbellKicks = nic.doorbellKicks
        s.interruptWaits = nic.interruptWaits
    }

    /// Sends `count` frames to `destination` (fewer if `shouldStop` says so first; checked
    /// between bursts); waits until the device completed them all.
    public func send(_ nic: VirtualNIC, to destination: MACAddress, shouldStop: () -> Bool = { false }) -> TrafficSummary {
        var s = TrafficSummary(role: "send")
        let start = Clock.monotonicNanoseconds()
        let cpu = Clock.threadCPUNanoseconds()
        let deadline = start + UInt64(timeoutSeconds * 1e9)
        var sender = Sender(destination: destination, workload: self)
        var window = WindowState()
        while !sender.done && Clock.monotonicNanoseconds() < deadline && !shouldStop() && !nic.isHostGone {
            var limit = 32
            if let size = self.window {
                window.takeAcknowledgements(nic, waitMilliseconds: 0)
                limit = size - window.inFlight(sent: sender.sent)
                if limit <= 0 {
                    // Window full: wait on the receive interrupt for the next acknowledgement.
                    if !window.takeAcknowledgements(nic, waitMilliseconds: WindowState.stallMilliseconds) {
                        window.writeOff(sent: sender.sent)
                    }
                    continue
                }
            }
            if sender.step(nic, limit: limit) == 0 {
                let wait = sender.microsecondsUntilNextBurst
                if rate != nil {
                    nic.reclaimTransmitted()
                    EngineThread.sleep(microseconds: UInt32(max(50, min(wait, 100_000))))  // pacing, not synchronisation
                } else {
                    _ = nic.waitForTransmitSpace(queue: 0, timeoutMilliseconds: 10)
                }
            }
        }
        _ = nic.flush(timeoutMilliseconds: 10_000)
        // A windowed stream ends when the receiver has acknowledged everything (or stalls).
        while self.window != nil && window.inFlight(sent: sender.sent) > 0 && !nic.isHostGone {
            if !window.takeAcknowledgements(nic, waitMilliseconds: WindowState.stallMilliseconds) {
                window.writeOff(sent: sender.sent)
            }
        }
        s.expected = count
        s.sent = sender.sent
        s.windowStalls = window.stalls
        finish(&s, nic: nic, start: start, cpuStart: cpu, frames: s.sent, bytes: s.sent * frameBytes)
        return s
    }

    /// The sender's view of a windowed stream: what the receiver has acknowledged.
    private struct WindowState {
        /// Without a new acknowledgement for this long, the frames in flight count as lost (the
        /// receiver dropped some), so a lost frame cannot stall the stream for good.
        static let stallMilliseconds = 50
        var acknowledged = 0
        var writtenOff = 0
        var stalls = 0

        func inFlight(sent: Int) -> Int { sent - acknowledged - writtenOff }

        mutating func writeOff(sent: Int) {
            writtenOff = sent - acknowledged
            stalls += 1
        }

        /// Takes the acknowledgements that arrived (waiting up to `waitMilliseconds` for one);
        /// returns whether one arrived.
        @discardableResult
        mutating func takeAcknowledgements(_ nic: VirtualNIC, waitMilliseconds: Int) -> Bool {
            var newest = acknowledged
            let n = nic.receive(maxFrames: 64, timeoutMilliseconds: waitMilliseconds) { frame in
                if let (flow, count) = TrafficFrame.parse(frame.bytes), flow == TrafficFrame.acknowledgementFlow {
                    newest = max(newest, Int(count))
                }
            }
            acknowledged = newest
            return n > 0
        }
    }

    /// Receives until `count` distinct frames arrived, the timeout passed, or `shouldStop` says
    /// so (checked between bursts; frames already in the ring are still taken), verifying each.
    public func receive(_ nic: VirtualNIC, shouldStop: () -> Bool = { false }) -> TrafficSummary {
        var s = TrafficSummary(role: "recv")
        var verifier = FlowVerifier()
        let start = Clock.monotonicNanoseconds()
        let cpu = Clock.threadCPUNanoseconds()
        let deadline = start + UInt64(timeoutSeconds * 1e9)
        var firstFrame: UInt64 = 0
        var stopping = false
        // A windowed stream: acknowledge to the sender every quarter window, and whenever the
        // ring runs dry, so the sender never waits on frames already verified.
        var peer: MACAddress?
        var acknowledged = 0
        let ackEvery = max(1, (window ?? 0) / 4)
        let record = { (frame: VirtualNIC.ReceivedFrame) in
            verifier.record(frame.bytes)
            if peer == nil, window != nil { peer = TrafficFrame.source(frame.bytes) }
        }
        var accounting = ReceiveAccounting()
        while verifier.unique < count && !nic.isHostGone {
            let now = Clock.monotonicNanoseconds()
            if now >= deadline { break }
            var n = nic.receive(maxFrames: 256, timeoutMilliseconds: 0, record)
            if let to = peer, verifier.unique > acknowledged, verifier.unique - acknowledged >= ackEvery || n == 0 {
                if acknowledge(nic, to: to, count: verifier.unique) { acknowledged = verifier.unique }
            }
            if n == 0 {
                // Once the sender has finished, a short wait drains frames still being delivered.
                n = nic.receive(
                    maxFrames: 256, timeoutMilliseconds: stopping ? 10 : Int(min(100, (deadline - now) / 1_000_000 + 1)), record)
            }
            if firstFrame == 0 && verifier.unique > 0 { firstFrame = Clock.monotonicNanoseconds() }
            if stopping && n == 0 { break }
            // Whatever did not arrive was dropped here, with a reason: nothing more will come.
            if accounting.accounted(nic, received: n, verified: verifier.unique, expected: count) { break }
            if !stopping && shouldStop() { stopping = true }
        }
        // The last frames end the loop: acknowledge them too, or the sender waits for nothing.
        if let to = peer, verifier.unique > acknowledged { _ = acknowledge(nic, to: to, count: verifier.unique) }
        s.record(verifier, expected: count)
        finish(&s, nic: nic, start: firstFrame == 0 ? start : firstFrame, cpuStart: cpu, frames: s.received, bytes: verifier.bytes)
        return s
    }

    /// Sends the receiver's acknowledgement (frames verified so far) to the sender.
    private func acknowledge(_ nic: VirtualNIC, to sender: MACAddress, count: Int) -> Bool {
        let own = nic.mac
        return nic.transmit(queue: 0, count: 1) { _, buffer in
            TrafficFrame.write(
                into: buffer, destination: sender, source: own, flow: TrafficFrame.acknowledgementFlow,
                sequence: UInt64(count), length: TrafficFrame.minimumLength)
        } == 1
    }

    /// Sends every frame received back to its source, `count` times, until the timeout or until
    /// `shouldStop` says so (checked between batches).
    public func echo(_ nic: VirtualNIC, shouldStop: () -> Bool = { false }) -> TrafficSummary {
        var s = TrafficSummary(role: "echo")
        s.expected = count
        let start = Clock.monotonicNanoseconds()
        let cpu = Clock.threadCPUNanoseconds()
        let deadline = start + UInt64(timeoutSeconds * 1e9)
        let own = nic.mac
        var pending: [[UInt8]] = []
        var bytes = 0
        while (count == 0 || s.sent < count) && Clock.monotonicNanoseconds() < deadline && !nic.isHostGone && !shouldStop() {
            pending.removeAll(keepingCapacity: true)
            nic.receive(maxFrames: 64, timeoutMilliseconds: 200) { frame in
                var bytes = Array(frame.bytes)
                guard bytes.count >= 14 else { return }
                for i in 0..<6 { bytes[i] = bytes[6 + i] }
                for (i, b) in own.bytes.enumerated() { bytes[6 + i] = b }
                pending.append(bytes)
            }
            for frame in pending { bytes += frame.count }
            s.received += pending.count
            var offset = 0
            while offset < pending.count && Clock.monotonicNanoseconds() < deadline && !nic.isHostGone {
                let n = nic.send(Array(pending[offset...]))
                offset += n
                s.sent += n
                if n == 0 { _ = nic.waitForTransmitSpace(timeoutMilliseconds: 10) }
            }
        }
        _ = nic.flush(timeoutMilliseconds: 10_000)
        finish(&s, nic: nic, start: start, cpuStart: cpu, frames: s.sent, bytes: bytes)
        return s
    }

    /// Sends `count` frames to `peer` while receiving `count` from it, verifying them.
    /// Sending starts once the peer is attached and active (asked of the host every 20 ms);
    /// receiving starts at once, so the peer's first frames find buffers.
    /// `shouldStop` ends it early (checked between batches).
    public func duplex(_ nic: VirtualNIC, peer: MACAddress, shouldStop: () -> Bool = { false }) -> TrafficSummary {
        var s = TrafficSummary(role: "duplex")
        var verifier = FlowVerifier()
        var start = Clock.monotonicNanoseconds()
        let cpu = Clock.threadCPUNanoseconds()
        var deadline = start + UInt64(timeoutSeconds * 1e9)
        var sender: Sender?
        var lastPeerCheck: UInt64 = 0
        var accounting = ReceiveAccounting()
        var receiveAccounted = false
        while !receiveAccounted || sender?.done != true {
            let now = Clock.monotonicNanoseconds()
            if now >= deadline || nic.isHostGone || shouldStop() { break }
            if sender == nil, now - lastPeerCheck > 20_000_000 {
                lastPeerCheck = now
                let present = (try? nic.waitForPeer(peer, timeoutMilliseconds: 0)) ?? false
                if present {
                    sender = Sender(destination: peer, workload: self)
                    start = Clock.monotonicNanoseconds()
                    deadline = start + UInt64(timeoutSeconds * 1e9)
                }
            }
            guard var active = sender else {
                let n = nic.receive(maxFrames: 256, timeoutMilliseconds: 5) { verifier.record($0.bytes) }
                receiveAccounted = accounting.accounted(nic, received: n, verified: verifier.unique, expected: count)
                continue
            }
            defer { sender = active }
            var progressed = false
            if !active.done { progressed = active.step(nic) > 0 }
            // Between paced bursts, sleep on the receive interrupt rather than spin.
            let idle = active.done ? 100 : (progressed ? 0 : active.microsecondsUntilNextBurst / 1000)
            let n = nic.receive(maxFrames: 256, timeoutMilliseconds: receiveAccounted ? 0 : idle) { verifier.record($0.bytes) }
            receiveAccounted = accounting.accounted(nic, received: n, verified: verifier.unique, expected: count)
            if !progressed && n == 0 && !active.done {
                if rate != nil {
                    EngineThread.sleep(microseconds: 50)  // pacing below a millisecond: yield the core instead of spinning
                } else {
                    _ = nic.waitForTransmitSpace(timeoutMilliseconds: 1)
                }
            }
        }
        _ = nic.flush(timeoutMilliseconds: 10_000)
        s.sent = sender?.sent ?? 0
        s.record(verifier, expected: count)
        finish(&s, nic: nic, start: start, cpuStart: cpu, frames: s.sent + s.received, bytes: s.sent * frameBytes + verifier.bytes)
        return s
    }
}
