/// Checks a received stream against what was sent: every (flow, sequence) once, in order per
/// flow. Keeps one bit per expected frame, allocated up front, so checking costs no allocation.
public struct FlowVerifier {
    public let flows: Int
    public let framesPerFlow: Int
    private var seen: [UInt64]
    private var highest: [Int64]
    public private(set) var unique = 0
    public private(set) var duplicates = 0
    public private(set) var outOfOrder = 0
    /// Frames that were not workload frames, had a wrong length, or named an unknown flow/sequence.
    public private(set) var invalid = 0

    /// Expects `total` frames spread over `flows` flows (sequence numbers 0..<ceil(total/flows)).
    public init(total: Int, flows: Int) {
        self.flows = max(1, flows)
        framesPerFlow = (total + self.flows - 1) / self.flows
        seen = [UInt64](repeating: 0, count: (self.flows * framesPerFlow + 63) / 64 + 1)
        highest = [Int64](repeating: -1, count: self.flows)
    }

    @inline(__always)
    public mutating func record(flow: UInt32, sequence: UInt64) {
        guard Int(flow) < flows, sequence < UInt64(framesPerFlow) else {
            invalid += 1
            return
        }
        let bit = Int(flow) * framesPerFlow + Int(sequence)
        let word = bit >> 6
        let mask: UInt64 = 1 << UInt64(bit & 63)
        if seen[word] & mask != 0 {
            duplicates += 1
            return
        }
        seen[word] |= mask
        unique += 1
        if Int64(sequence) < highest[Int(flow)] { outOfOrder += 1 } else { highest[Int(flow)] = Int64(sequence) }
    }

    @inline(__always)
    public mutating func recordInvalid() { invalid += 1 }

    /// Records a received frame: a workload frame by its flow and sequence, anything else as invalid.
    @inline(__always)
    public mutating func record(_ frame: UnsafeRawBufferPointer) {
        if let (flow, sequence) = TrafficFrame.parse(frame) { record(flow: flow, sequence: sequence) } else { invalid += 1 }
    }
}
