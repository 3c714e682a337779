import NPAShell
import NPASystem

/// Lets a receiver stop as soon as every frame it expects is either verified or counted as
/// dropped by its own vNIC, instead of waiting for its timeout when some were dropped.
///
/// Asking the host costs a control round trip, so it asks only once the stream has gone quiet
/// (no frame for `quietNanoseconds`) and then at most once per quiet period.
public struct ReceiveAccounting {
    /// Drops that happen at the receiving vNIC (emulated or VF): frames that reached it and
    /// found no place. Drops at the sender (spoofing, policy, unknown destination) are the
    /// sender's to report.
    public static let receiveSideReasons: Set<String> = [
        "no_buffers", "buffer_too_small", "bad_rx_descriptor", "vnic_inactive", "rx_error",
        "vf_no_buffers", "rx_frame_too_long", "vf_frame_too_long",
    ]
    static let quietNanoseconds: UInt64 = 100_000_000

    private var lastFrame = Clock.monotonicNanoseconds()
    private var lastQuery: UInt64 = 0
    private(set) var droppedHere: UInt64 = 0

    /// Call after each receive attempt; true when `verified` plus the vNIC's receive-side drops
    /// reach `expected`.
    mutating func accounted(_ nic: VirtualNIC, received: Int, verified: Int, expected: Int) -> Bool {
        if verified >= expected { return true }
        let now = Clock.monotonicNanoseconds()
        if received > 0 {
            lastFrame = now
            return false
        }
        guard now - lastFrame >= Self.quietNanoseconds, now - lastQuery >= Self.quietNanoseconds else { return false }
        lastQuery = now
        guard let drops = try? nic.dropCounts() else { return false }
        droppedHere = drops.filter { Self.receiveSideReasons.contains($0.key) }.values.reduce(0, +)
        return UInt64(verified) + droppedHere >= UInt64(expected)
    }
}
