import NPANICModel

/// Proof that the frames this host has queued for its NICs' TAP wires until one moment have
/// been written to the kernel: what the destination of a migration waits for after its first
/// self-announcement before it tells the source `announced`. The announcement leaves by the
/// NICs' wires through their engines' outbound queues, which a NIC engine on a busy machine
/// may write some milliseconds later; until it does, the network still sends the guest's frames
/// to the source, so the source must not start counting its quiet period yet. The vswitch's own
/// uplink TAP is written at once by the host's thread: nothing to wait for. A wire that goes
/// down is not waited for. Host thread only; it polls, never blocks.
struct WireFlushFence {
    private var queued: [(wire: TAPWire, through: UInt32)]

    /// Notes how far each NIC wire's outbound queue has been filled now.
    init(dataPath: HostDataPath) {
        queued = dataPath.nics.compactMap { nic in nic.wire.flatMap { $0.isDown ? nil : ($0, $0.outbound.pushed) } }
    }

    /// True once every such wire has written (or dropped) all it had queued at `init`.
    mutating func poll() -> Bool {
        queued.removeAll { wire, through in wire.isDown || Int32(bitPattern: wire.outbound.popped &- through) >= 0 }
        return queued.isEmpty
    }
}
