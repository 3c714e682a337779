import NPAControlProtocol
import NPAShell
import NPASystem
import NPAWorkload

/// The traffic of `PluginTestHarness`: two guests send each other `frames` sequence-numbered
/// frames (`TrafficFrame`, four flows spread over the TX queues, 64 to 1514 bytes, the payload a
/// pattern derived from the sequence so a damaged byte is seen), with at most `window`
/// unverified frames in flight per direction so a receiver never runs out of buffers, and
/// checks that every frame arrives exactly once, in order per flow, intact, and that every
/// frame sent is completed. `midway` runs once, when half of the first guest's frames are sent
/// (a switch or a reset under traffic). A run ends when it has made no progress for
/// `stallSeconds`: a plugin that stops completing or receiving fails the run, it does not hang
/// it. It touches only the two vNICs (and the host's drop counters through them).
struct PluginTestTraffic {
    /// What one run saw.
    struct Outcome {
        var frames: Int
        var seconds: Double
        /// Nil if every frame went through exactly once, in order, intact and completed.
        var failure: String?
        /// Receive-side drops the vNICs counted (by reason), both directions.
        var drops: [String: UInt64]
        /// What `midway` said (nil if it did not run or said nothing).
        var midwayNote: String?
    }

    /// One direction's sender and receiver state.
    final class Direction {
        let name: String
        let from: VirtualNIC
        let to: VirtualNIC
        var sequences: [UInt64]
        var nextFlow = 0
        var receiveCalls = 0
        var sent = 0
        var verifier = FlowVerifier(maximumFlows: 64)
        /// Frames whose payload pattern was wrong, and frames of other flows (an earlier run's).
        var damaged = 0
        var stale = 0
        /// This run's receive-side drops at `to` (its counters less `dropsBefore`).
        var drops: UInt64 = 0
        var dropsBefore: [String: UInt64] = [:]

        init(_ name: String, from: VirtualNIC, to: VirtualNIC, flows: Int) {
            self.name = name
            self.from = from
            self.to = to
            sequences = [UInt64](repeating: 0, count: flows)
        }
    }

    static let flows = 4
    /// Bytes before the pattern: the frame's headers and TrafficFrame's fields.
    static let patternOffset = 64

    let frames: Int
    let window: Int
    let stallSeconds: Double
    /// Flow ids of this run start here, so a frame left over from an earlier run is told apart.
    let flowBase: UInt32

    /// Sends `frames` each way between `a` and `b`; see the type's comment.
    func run(_ a: VirtualNIC, _ b: VirtualNIC, midway: (() -> String?)? = nil) -> Outcome {
        let start = Clock.monotonicNanoseconds()
        let directions = [
            Direction("\(a.name)→\(b.name)", from: a, to: b, flows: Self.flows),
            Direction("\(b.name)→\(a.name)", from: b, to: a, flows: Self.flows),
        ]
        for d in directions { d.dropsBefore = Self.receiveDrops(d.to) }
        var midwayDone = midway == nil
        var midwayNote: String?
        var lastProgress = start
        var lastDropQuery: UInt64 = 0
        var progressMark = -1
        while true {
            var moved = 0
            for d in directions {
                moved += send(d)
                moved += receive(d)
            }
            if !midwayDone && directions[0].sent >= frames / 2 {
                midwayDone = true
                midwayNote = midway?()
            }
            let verified = directions.allSatisfy { $0.verifier.unique >= frames }
            if verified { break }
            let now = Clock.monotonicNanoseconds()
            let mark = directions.reduce(0) { $0 + $1.sent + $1.verifier.unique + $1.verifier.duplicates + $1.damaged + $1.stale }
            if mark != progressMark {
                progressMark = mark
                lastProgress = now
            } else if moved == 0 {
                // Quiet: frames the receiving vNIC counted as dropped will never come; ask once a
                // quiet 200 ms.
                if now - lastDropQuery > 200_000_000 {
                    lastDropQuery = now
                    for d in directions { d.drops = d.dropsSinceStart().values.reduce(0, +) }
                    if directions.allSatisfy({ $0.sent == frames && UInt64($0.verifier.unique) + $0.drops >= UInt64(frames) }) { break }
                }
                if Double(now - lastProgress) / 1e9 > stallSeconds { break }
                // Nothing moved: sleep on the first receiver's interrupt for a millisecond.
                let d = directions[0], base = flowBase
                _ = d.to.receive(maxFrames: 256, timeoutMilliseconds: 1) { d.record($0.bytes, flowBase: base) }
            }
        }
        // Every frame sent must also be completed: a plugin that never reports completions
        // holds the guest's buffers for ever.
        let stalledFor = Double(Clock.monotonicNanoseconds() - lastProgress) / 1e9
        // (After a stall, only what has completed by now counts: the run already waited.)
        let stallMilliseconds = directions.allSatisfy { $0.verifier.unique >= frames } ? Int(stallSeconds * 1000) : 0
        let completed = [a, b].map { $0.flush(timeoutMilliseconds: stallMilliseconds) }
        for d in directions { d.drops = d.dropsSinceStart().values.reduce(0, +) }
        let drops = directions[0].dropsSinceStart().merging(directions[1].dropsSinceStart(), uniquingKeysWith: +)
        return Outcome(
            frames: frames, seconds: Double(Clock.monotonicNanoseconds() - start) / 1e9,
            failure: failure(directions, completed: completed, stalled: stalledFor),
            drops: drops, midwayNote: midwayNote)
    }

    private func send(_ d: Direction) -> Int {
        let unverified = d.sent - d.verifier.unique - Int(d.drops)
        let count = min(16, frames - d.sent, window - unverified)
        guard count > 0 else { return 0 }
        let flow = d.nextFlow
        let first = d.sequences[flow]
        let (source, destination, id) = (d.from.mac, d.to.mac, flowBase + UInt32(flow))
        let n = d.from.transmit(queue: flow % d.from.txQueueCount, count: count) { i, buffer in
            Self.write(into: buffer, destination: destination, source: source, flow: id, sequence: first + UInt64(i))
        }
        d.sequences[flow] += UInt64(n)
        d.sent += n
        d.nextFlow = (flow + 1) % Self.flows
        return n
    }

    private func receive(_ d: Direction) -> Int {
        let base = flowBase
        // Batches of every size from 1 to 61 frames, so a plugin that indicates more than
        // check_rx_ring's max_frames is caught (the shell counts the breach) while frames wait.
        d.receiveCalls &+= 1
        return d.to.receive(maxFrames: 1 + d.receiveCalls % 61, timeoutMilliseconds: 0) { d.record($0.bytes, flowBase: base) }
    }

    private func failure(_ directions: [Direction], completed: [Bool], stalled: Double) -> String? {
        var problems: [String] = []
        for d in directions {
            let v = d.verifier
            if v.unique < frames {
                problems.append(
                    "\(d.name): \(v.unique) of \(frames) frames arrived (\(d.sent) sent"
                        + (d.sent < frames ? ", the sender's ring took no more" : "")
                        + (d.drops > 0 ? ", \(d.drops) counted as dropped by the receiver" : "") + ")")
            }
            if v.duplicates > 0 { problems.append("\(d.name): \(v.duplicates) duplicates") }
            if v.outOfOrder > 0 { problems.append("\(d.name): \(v.outOfOrder) out of order") }
            if v.invalid > 0 || d.damaged > 0 { problems.append("\(d.name): \(v.invalid + d.damaged) damaged frames") }
            if d.stale > 0 { problems.append("\(d.name): \(d.stale) frames of an earlier run") }
        }
        for (nic, done) in zip(directions.map(\.from), completed) where !done {
            problems.append("\(nic.name): \(nic.transmitsInFlight) frames sent but never completed")
        }
        if problems.isEmpty { return nil }
        let stall = directions.contains { $0.verifier.unique < frames } ? String(format: " (no progress for %.0f s)", stalled) : ""
        return problems.joined(separator: "; ") + stall
    }

    /// Receive-side drops the host counted for `nic` (frames that reached it and found no place).
    static func receiveDrops(_ nic: VirtualNIC) -> [String: UInt64] {
        ((try? nic.dropCounts()) ?? [:]).filter { ReceiveAccounting.receiveSideReasons.contains($0.key) }
    }

    // MARK: Frames

    /// The frame length of `sequence`: 64 to 1514 bytes, varied so every size class is sent.
    static func length(of sequence: UInt64) -> Int { 64 + Int((sequence &* 2_654_435_761) % 1451) }

    /// A traffic frame whose bytes after `patternOffset` are 8-byte words derived from the sequence.
    static func write(
        into buffer: UnsafeMutableRawBufferPointer, destination: MACAddress, source: MACAddress, flow: UInt32, sequence: UInt64
    )
        -> Int
    {
        let length = length(of: sequence)
        _ = TrafficFrame.write(into: buffer, destination: destination, source: source, flow: flow, sequence: sequence, length: length)
        var offset = patternOffset
        while offset + 8 <= length {
            buffer.storeBytes(of: pattern(sequence, offset), toByteOffset: offset, as: UInt64.self)
            offset += 8
        }
        return length
    }

    static func pattern(_ sequence: UInt64, _ offset: Int) -> UInt64 { (sequence &* 0x9E37_79B9_7F4A_7C15) ^ UInt64(offset) }

    /// Whether the frame's payload pattern is intact (its sequence already parsed).
    static func intact(_ bytes: UnsafeRawBufferPointer, sequence: UInt64) -> Bool {
        var offset = patternOffset
        while offset + 8 <= bytes.count {
            if bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self) != pattern(sequence, offset) { return false }
            offset += 8
        }
        return true
    }
}

extension PluginTestTraffic.Direction {
    /// The receiving vNIC's receive-side drops since the run began, by reason.
    func dropsSinceStart() -> [String: UInt64] {
        var out: [String: UInt64] = [:]
        for (reason, n) in PluginTestTraffic.receiveDrops(to) where n > dropsBefore[reason] ?? 0 {
            out[reason] = n - (dropsBefore[reason] ?? 0)
        }
        return out
    }

    func record(_ bytes: UnsafeRawBufferPointer, flowBase: UInt32) {
        guard let (flow, sequence) = TrafficFrame.parse(bytes) else {
            verifier.recordInvalid()
            return
        }
        guard flow >= flowBase, flow < flowBase + UInt32(PluginTestTraffic.flows) else {
            stale += 1
            return
        }
        guard PluginTestTraffic.intact(bytes, sequence: sequence) else {
            damaged += 1
            return
        }
        verifier.record(flow: flow, sequence: sequence, length: bytes.count)
    }
}
