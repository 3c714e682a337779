/// What the vswitch's uplink port is plugged into. For now the only wire is a counting sink that
/// stands in for the physical network (the NIC model's PF queues plug in here next).
final class CountingWire {
    private(set) var framesOut: UInt64 = 0
    private(set) var bytesOut: UInt64 = 0

    @inline(__always)
    func transmit(length: Int) {
        framesOut &+= 1
        bytesOut &+= UInt64(length)
    }
}
