import NPAControlProtocol
import NPAShell
import NPAWorkload

/// Builds an Ethernet frame: dst, src, optional 802.1Q tag, EtherType 0x88B5, payload.
package func ethernetFrame(
    to dst: MACAddress, from src: MACAddress, vlan: UInt16? = nil, payload: [UInt8] = Array(repeating: 0xAB, count: 46)
) -> [UInt8] {
    var f = dst.bytes + src.bytes
    if let vlan { f += [0x81, 0x00, UInt8(vlan >> 8), UInt8(vlan & 0xFF)] }
    return f + [0x88, 0xB5] + payload
}

/// Receives until `count` frames arrived or `timeoutMilliseconds` passed (a generous bound,
/// never a synchronisation: the loop returns as soon as the condition holds).
package func receiveFrames(_ nic: VirtualNIC, count: Int, timeoutMilliseconds: Int = 20_000) -> [[UInt8]] {
    var frames: [[UInt8]] = []
    let deadline = ContinuousClock.now + .milliseconds(timeoutMilliseconds)
    while frames.count < count && ContinuousClock.now < deadline {
        frames += nic.receive(maxFrames: count - frames.count, timeoutMilliseconds: 200)
    }
    return frames
}

/// Receives whatever arrives until the device has nothing in flight for `nic` for a short quiet
/// period after `sender` finished: used to prove that a frame was NOT delivered. The proof is
/// the host's counters (the frame was counted as dropped or delivered elsewhere), not the wait.
package func drain(_ nic: VirtualNIC) -> [[UInt8]] {
    nic.receive(maxFrames: 1024, timeoutMilliseconds: 0)
}

/// Polls a condition on the host's counters until it holds or the timeout passes.
package func eventually(timeoutMilliseconds: Int = 20_000, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(timeoutMilliseconds)
    while ContinuousClock.now < deadline {
        if try condition() { return true }
        _ = try? Task.checkCancellation()
        usleep(2000)
    }
    return try condition()
}

import Glibc

/// Receives on `nic` until each of `total` frames sent to it is either verified or counted as
/// dropped by its NIC (waiting up to `timeoutMilliseconds`, a generous bound, never a quiet
/// period). Returns the drop counts by reason.
package func receiveUntilAccounted(_ nic: VirtualNIC, _ verifier: inout FlowVerifier, total: Int, timeoutMilliseconds: Int = 10_000) throws
    -> [String: UInt64]
{
    var drops = try nic.dropCounts()
    let deadline = ContinuousClock.now + .milliseconds(timeoutMilliseconds)
    while UInt64(verifier.unique) + drops.values.reduce(0, +) < UInt64(total) && ContinuousClock.now < deadline {
        nic.receive(maxFrames: 256, timeoutMilliseconds: 10) { verifier.record($0.bytes) }
        drops = try nic.dropCounts()
    }
    return drops
}
