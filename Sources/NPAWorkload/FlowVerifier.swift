/// Checks a received stream: every (flow, sequence) exactly once, in order per flow, for
/// whatever flows arrive. The receiver is not told how many flows or how many frames per flow:
/// a flow's state is created the first time one of its frames is seen.
///
/// Bounded and allocation-free after `init`: at most `maximumFlows` flows (a frame of any
/// further flow counts as `invalid`), and per flow a window of the last `windowFrames`
/// sequence numbers, enough to tell a late frame from a duplicate. A frame older than its flow's
/// window counts as `outOfOrder` and `tooLate` but not as received (this stream never reorders
/// that far; if it did, the report says so instead of guessing).
public struct FlowVerifier {
    public static let defaultMaximumFlows = 4096
    /// Sequence numbers remembered per flow behind the highest seen (a multiple of 64).
    public static let windowFrames = 4096
    private static let windowWords = windowFrames / 64

    public let maximumFlows: Int
    /// Flow id → slot, open addressing with linear probing; `emptyKey` marks a free entry.
    private var keys: [UInt32]
    private var slotOfKey: [Int32]
    private let keyMask: Int
    private static let emptyKey = UInt32.max
    /// Per slot: one past the highest sequence seen, and a ring of `windowFrames` bits
    /// (bit `sequence % windowFrames` set = seen, for sequences in [next - window, next)).
    private var next: [UInt64]
    private var window: [UInt64]
    public private(set) var flows = 0
    private var lastFlow = UInt32.max
    private var lastSlot = 0

    /// Distinct frames received (each (flow, sequence) once).
    public private(set) var unique = 0
    public private(set) var duplicates = 0
    public private(set) var outOfOrder = 0
    /// Frames older than their flow's window: late, and whether they were duplicates is unknown.
    public private(set) var tooLate = 0
    /// Frames that were not workload frames, had a length other than the one they carry, or
    /// belonged to a flow beyond `maximumFlows`.
    public private(set) var invalid = 0
    /// Bytes of the distinct frames received (what throughput is computed from).
    public private(set) var bytes = 0
    /// Frames the senders sent before the highest sequence seen in each flow that never arrived:
    /// gaps. Frames missing at a flow's end are not gaps; only the sender's count tells them.
    public var gaps: Int {
        var expected: UInt64 = 0
        for slot in 0..<flows { expected &+= next[slot] }
        return max(0, Int(truncatingIfNeeded: expected) - unique - tooLate)
    }

    /// All state is allocated here, before the receive loop.
    public init(maximumFlows: Int = FlowVerifier.defaultMaximumFlows) {
        self.maximumFlows = max(1, maximumFlows)
        var capacity = 1
        while capacity < 2 * self.maximumFlows { capacity <<= 1 }
        keyMask = capacity - 1
        keys = [UInt32](repeating: Self.emptyKey, count: capacity)
        slotOfKey = [Int32](repeating: 0, count: capacity)
        next = [UInt64](repeating: 0, count: self.maximumFlows)
        window = [UInt64](repeating: 0, count: self.maximumFlows * Self.windowWords)
    }

    /// The slot of `flow`, created on first sight; nil when the table is full.
    @inline(__always)
    private mutating func slot(of flow: UInt32) -> Int? {
        if flow == lastFlow { return lastSlot }
        var index = Int(truncatingIfNeeded: (flow &* 0x9E37_79B1) >> 7) & keyMask
        while true {
            let key = keys[index]
            if key == flow { break }
            if key == Self.emptyKey {
                guard flows < maximumFlows else { return nil }
                keys[index] = flow
                slotOfKey[index] = Int32(flows)
                flows += 1
                break
            }
            index = (index + 1) & keyMask
        }
        lastFlow = flow
        lastSlot = Int(slotOfKey[index])
        return lastSlot
    }

    @inline(__always)
    public mutating func record(flow: UInt32, sequence: UInt64, length: Int = 0) {
        // UInt32.max is the table's empty marker (and the windowed stream's acknowledgement flow).
        guard flow != Self.emptyKey, let slot = slot(of: flow) else {
            invalid += 1
            return
        }
        let words = slot * Self.windowWords
        let bit = Int(truncatingIfNeeded: sequence % UInt64(Self.windowFrames))
        let word = words + bit >> 6
        let mask: UInt64 = 1 << UInt64(bit & 63)
        let expected = next[slot]
        if sequence >= expected {
            // In order (or after a gap): forget the window positions being skipped over.
            if sequence &- expected >= UInt64(Self.windowFrames) {
                for w in words..<(words + Self.windowWords) { window[w] = 0 }
            } else {
                var s = expected
                while s < sequence {
                    let b = Int(truncatingIfNeeded: s % UInt64(Self.windowFrames))
                    window[words + b >> 6] &= ~(1 << UInt64(b & 63))
                    s += 1
                }
            }
            window[word] |= mask
            next[slot] = sequence &+ 1
        } else if expected - sequence > UInt64(Self.windowFrames) {
            tooLate += 1
            outOfOrder += 1
            return
        } else if window[word] & mask != 0 {
            duplicates += 1
            return
        } else {
            window[word] |= mask
            outOfOrder += 1
        }
        unique += 1
        bytes += length
    }

    @inline(__always)
    public mutating func recordInvalid() { invalid += 1 }

    /// Records a received frame: a workload frame by its flow and sequence, anything else as
    /// invalid. The frame's length is checked against the length it carries, not a fixed size.
    @inline(__always)
    public mutating func record(_ frame: UnsafeRawBufferPointer) {
        if let (flow, sequence) = TrafficFrame.parse(frame) {
            record(flow: flow, sequence: sequence, length: frame.count)
        } else {
            invalid += 1
        }
    }
}
