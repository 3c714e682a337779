import NPARingFormats
import NPASystem

/// What one VF model contributes to the NIC's engine: how a TX queue is pulled, how a frame is
/// written into an RX queue, how many receive buffers a queue has posted, what its queue
/// configuration must satisfy. Each model implements it once, in its own folder
/// (`DescriptorRing/`, `CompletionQueue/`), on a caseless enum: it has no state of its own; a
/// queue's cursors live in `VirtualFunction.Queue`, under the NIC's lock.
///
/// The NIC picks its model's engine once, when it is created, and stores it as a metatype. The
/// three entry points (`runPass`, `transmitFromPF`, `receiveFromWire`) are the only calls made
/// through it, once per pass or burst; their default implementations below call the NIC's
/// generic pass code with `Self`, so each model's whole pass — switching, backpressure and its
/// own ring code — is specialised for it, with no dynamic dispatch per queue or frame.
protocol VFModelEngine: SendableMetatype {
    /// The model-specific checks of a queue the PF initialises (the NIC checked the ring
    /// itself: size, alignment, inside the grant).
    static func queueFits(_ config: VirtualFunction.QueueConfig, in memory: GuestMemory) -> Bool
    /// Zeroes the doorbell and head registers of queue `q` in the VF's page.
    static func resetQueueRegisters(of vf: VirtualFunction, queue q: Int)
    /// Takes up to the NIC's pass budget of frames from TX queue `q`; returns how many.
    static func pullTransmitQueue(_ nic: SoftNIC, _ vf: VirtualFunction, _ q: Int) -> Int
    /// Writes one frame into RX queue `q` of `vf` (chosen by the caller), or drops and counts it.
    /// `checksumValid`: the NIC made the frame's checksums; the completion says so.
    static func deliver(
        to vf: VirtualFunction, queue q: Int, _ frame: UnsafeRawPointer, length: Int, hash: UInt32, source: UInt64, vlan: UInt16,
        sender: VirtualFunction?, checksumValid: Bool)
    /// Receive buffers posted to RX queue `q` and not yet used, from the guest's tail register;
    /// nil if the tail is impossible (delivery refuses it and counts).
    static func postedReceiveBuffers(of vf: VirtualFunction, queue q: Int) -> UInt32?
    /// End of a pass: makes the RX progress of `vf` visible in its register page, if the model
    /// reports it there (once per pass, not per frame).
    static func publishReceiveHeads(of vf: VirtualFunction)

    // Entry points: the one dynamic call per pass or burst (see above). Not to be reimplemented.
    static func runPass(on nic: SoftNIC) -> Int
    static func transmitFromPF(on nic: SoftNIC, count: Int, frame: (Int) -> (UnsafeRawPointer, Int)) -> Int
    static func receiveFromWire(on nic: SoftNIC, count: Int, frame: (Int) -> (UnsafeRawPointer, Int)) -> Int
}

extension VFModelEngine {
    static func runPass(on nic: SoftNIC) -> Int { nic.runPass(Self.self) }

    static func transmitFromPF(on nic: SoftNIC, count: Int, frame: (Int) -> (UnsafeRawPointer, Int)) -> Int {
        nic.transmitFromPF(Self.self, count: count, frame: frame)
    }

    static func receiveFromWire(on nic: SoftNIC, count: Int, frame: (Int) -> (UnsafeRawPointer, Int)) -> Int {
        nic.receiveFromWire(Self.self, count: count, frame: frame)
    }
}
