/// A counting sink as the vswitch's uplink (`uplink: counting`): frames for no local vNIC are
/// counted and dropped. The others are a software NIC's PF (`uplink: <nic>`), which
/// `HostDataPath` sends to in batches, and a TAP device (`uplink: { tap: IF }`, a `TAPWire`).
final class CountingWire {
    private(set) var framesOut: UInt64 = 0
    private(set) var bytesOut: UInt64 = 0

    @inline(__always)
    func transmit(length: Int) {
        framesOut &+= 1
        bytesOut &+= UInt64(length)
    }
}
