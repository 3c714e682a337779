import NPASystem

/// The NIC's physical port on a TAP device: plugging it in, and the engine's service of it
/// between passes — what the embedded switch sent to the wire is written out, then a batch the
/// kernel sent is read and switched in with `receiveFromWire` (one lock per batch). Runs on the
/// engine's thread (or a test's, with `runPass`); never under the NIC's lock, so the system
/// calls it makes hold up no VF and no PF driver.
extension SoftNIC {
    /// Plugs the physical port into `wire`. Before `start()`: the engine watches its descriptor.
    public func attachWire(_ wire: TAPWire) {
        locked {
            self.wire = wire
            wireOutbound = Unmanaged.passUnretained(wire.outbound)
        }
    }

    /// One service of the wire: returns the frames moved either way (0: nothing to do).
    @discardableResult
    public func serviceWire() -> Int {
        guard let wire else { return 0 }
        var work = wire.flush()
        let pending = wire.fill()
        if pending > 0 {
            let taken = receiveFromWire(count: pending) { wire.pending($0) }
            wire.consume(taken)
            work += taken
        }
        return work
    }

    /// Times the engine read the wire empty with everything read before switched (`TAPWire.drains`);
    /// nil without a wire, or with one that is gone. Any thread.
    public var wireDrains: UInt64? {
        guard let wire, !wire.isDown else { return nil }
        return wire.drains
    }

    /// Wakes a sleeping engine for a pass (and, a few passes later, a read of its wire) without
    /// a frame to give it: a live migration's source waits for its wire to drain.
    public func nudgeEngine() { wake.signal() }

    /// The wire's counters as `npa status` shows them, and whether its link is up.
    public var wireStatus: (interface: String, up: Bool, createdHere: Bool, counters: [(String, UInt64)], failure: String?)? {
        guard let wire else { return nil }
        return (wire.interfaceName, !wire.isDown, wire.createdHere, wire.named(), wire.failure.map { "\($0)" })
    }
}
