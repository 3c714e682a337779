import NPARingFormats

/// What to do with the frames still held for a vNIC when holding ends (`stopHolding`).
enum HeldFramesDisposal: Equatable {
    /// The migration failed and the device carries on here (`EmulatedDevice.resume()` first):
    /// the held frames go to its RX ring before any newer frame for it.
    case deliverToDevice
    /// The migration is done (or they were forwarded already): the device is about to be
    /// removed; what is left is dropped and counted as `migration_discarded`.
    case discard
}

/// A live migration's frames on this host's data path — the source's hold and the
/// destination's "forwarded first" — as host-thread calls the migration orchestration makes
/// between data-path passes (never from another thread, never mid-pass).
///
/// Source host A, after `device.stop()`:
///
///     holdFrames(for:) → takeHeldFrames(for:max:)* → stopHolding(for:, then: .discard)
///                                                  or (failed) resume(), stopHolding(for:, then: .deliverToDevice)
///
/// Destination host B, in the same host-thread turn that adds the restored device:
///
///     beginForwarding(for:) → deliverForwarded(_:to:)* → endForwarding(for:)
///
/// Why this keeps per-flow order: a peer's frames for the guest reach A until the physical
/// network moves the guest's MAC to B's port, and B from then on; the network moves it at one
/// instant (when a switch learns it from B's self-announcement), so every frame a peer sent to
/// A was sent before every frame it sent to B. A forwards everything it held, in arrival order,
/// and B gives the guest all of A's (forwarded) frames before any of its own (direct) ones.
/// Within a flow that is sending order. (Frames a sender flooded — broadcast, unknown unicast —
/// may reach both hosts; the guest can then see such a frame twice, as on any network while a
/// MAC moves.)
extension HostDataPath {
    /// The frames held for the vNIC on `port`, if a migration holds them. Asked only for a port
    /// the switch found no owner for (`portOwners`): never on the path of a frame to a vNIC that
    /// is not held. (A port added since the table last grew holds none.)
    @inline(__always)
    func migrationHold(onPort port: Int) -> MigrationHeldFrames? {
        anyMigrationHold && port < migrationHolds.count ? migrationHolds[port] : nil
    }

    /// What migrations did here with the frames of `device`, and its announcements (including
    /// a hold under way); nil if nothing did.
    func migrationCounters(for device: EmulatedDevice) -> MigrationFrameCounters? {
        var counters = migrationCounters[device.name]
        if device.port < migrationHolds.count, let hold = migrationHolds[device.port], hold.device === device {
            counters = (counters ?? .init()).adding(hold)
        }
        return counters
    }

    // MARK: Source host (A)

    /// From now until `stopHolding`, every frame the vswitch or the PF path would deliver to
    /// `device` — unicast, and its copy of flooded ones — is kept, in arrival order, neither
    /// delivered nor dropped (up to the hold's bound; past it, counted as
    /// `migration_overflow`). Its senders are never held back for it. Frames parked for it at a
    /// switch point are held first: they arrived earlier. Call after `device.stop()`.
    func holdFrames(for device: EmulatedDevice) {
        guard let port = heldPort(of: device), migrationHolds[port] == nil else { return }
        let hold = MigrationHeldFrames(for: device)
        if let parked = device.switchOverflow {
            for k in 0..<parked.count {
                let (frame, length) = parked.frame(k)
                hold.keep(frame, length: length)
            }
            device.switchOverflow = nil
        }
        migrationHolds[port] = hold
        anyMigrationHold = true
        syncPortOwners()
    }

    /// Up to `max` of the oldest frames held for `device`, removed from the hold (for the
    /// orchestration to forward to the destination). Empty when none are held.
    func takeHeldFrames(for device: EmulatedDevice, max: Int) -> [[UInt8]] {
        guard let port = heldPort(of: device), let hold = migrationHolds[port] else { return [] }
        let frames = hold.take(max: max)
        migrationCounters[device.name, default: .init()].forwardedOut &+= UInt64(frames.count)
        return frames
    }

    /// How many frames are held for `device` now.
    func heldFrameCount(for device: EmulatedDevice) -> Int {
        guard let port = heldPort(of: device) else { return 0 }
        return migrationHolds[port]?.count ?? 0
    }

    /// Ends holding for `device`. `.deliverToDevice`: the held frames go to its RX ring, oldest
    /// first, before any frame that arrives for it after this call (they are parked for it as
    /// at a switch point: `SwitchOverflow`, flushed at the start of every pass, its senders held
    /// meanwhile within the receiver's stall limit). Call it after `device.resume()`.
    /// `.discard`: they are dropped and counted (`migration_discarded`).
    func stopHolding(for device: EmulatedDevice, then disposal: HeldFramesDisposal) {
        guard let port = heldPort(of: device), let hold = migrationHolds[port] else { return }
        endHold(onPort: port)
        switch disposal {
        case .deliverToDevice:
            let moved = park(hold.frames, for: device)
            migrationCounters[device.name, default: .init()].released &+= UInt64(moved)
        case .discard:
            migrationCounters[device.name, default: .init()].discarded &+= UInt64(hold.count)
            hold.frames.removeAll()
        }
    }

    // MARK: Destination host (B)

    /// Frames that reach the restored `device` directly wait (held, as on the source) until
    /// `endForwarding`, so that the frames the source forwards go to the guest first. Call in
    /// the host-thread turn that adds the device, before any pass can deliver to it.
    func beginForwarding(for device: EmulatedDevice) { holdFrames(for: device) }

    /// Frames the source host held for the guest (`takeHeldFrames` there), in the order it took
    /// them: queued for the guest's RX ring after any forwarded before, ahead of every frame
    /// held since `beginForwarding`. They come from another host: each is checked (an Ethernet
    /// header at least, the device's largest frame at most) before it is copied. Returns how
    /// many were accepted.
    @discardableResult
    func deliverForwarded(_ frames: [[UInt8]], to device: EmulatedDevice) -> Int {
        guard devices.contains(where: { $0 === device }) else { return 0 }
        var accepted = 0
        let queue = forwardingQueue(of: device)
        for frame in frames {
            guard frame.count >= EthernetFrame.headerLength else {
                migrationCounters[device.name, default: .init()].forwardedRefused &+= 1
                continue
            }
            guard frame.count <= device.maximumFrameLength else {
                device.drop(.rxFrameTooLong)  // as `deliver` would: the sender's doing
                continue
            }
            let kept = frame.withUnsafeBytes { queue.append($0.baseAddress!, length: frame.count) }
            if kept {
                accepted += 1
            } else {
                migrationCounters[device.name, default: .init()].overflowDrops &+= 1
            }
        }
        migrationCounters[device.name, default: .init()].forwardedIn &+= UInt64(accepted)
        anySwitchOverflow = anySwitchOverflow || device.switchOverflow != nil
        return accepted
    }

    /// No more frames come from the source: the frames held since `beginForwarding` follow the
    /// forwarded ones to the guest, in order, and newer frames follow them.
    func endForwarding(for device: EmulatedDevice) { stopHolding(for: device, then: .deliverToDevice) }

    // MARK: Shared

    /// The port of `device` if it is attached here.
    private func heldPort(of device: EmulatedDevice) -> Int? {
        guard devices.contains(where: { $0 === device }), device.port < migrationHolds.count else { return nil }
        return device.port
    }

    /// The hold's counts join the vNIC's migration counters; its port gets its owner back.
    private func endHold(onPort port: Int) {
        guard let hold = migrationHolds[port] else { return }
        migrationCounters[hold.device.name] = (migrationCounters[hold.device.name] ?? .init()).adding(hold)
        migrationHolds[port] = nil
        anyMigrationHold = migrationHolds.contains { $0 != nil }
        syncPortOwners()
    }

    /// A vNIC leaves the host: what a migration held for it and its announcements go with it
    /// (its port may serve another vNIC next), and so do its migration counters.
    func forgetMigration(of device: EmulatedDevice) {
        if device.port < migrationHolds.count, migrationHolds[device.port] != nil {
            migrationHolds[device.port] = nil
            anyMigrationHold = migrationHolds.contains { $0 != nil }
        }
        migrationCounters[device.name] = nil
        announcer.cancel(device.name)
    }

    /// One hold slot per vswitch port (ports are added, never removed).
    func growMigrationHolds(to ports: Int) {
        guard migrationHolds.count < ports else { return }
        migrationHolds += [MigrationHeldFrames?](repeating: nil, count: ports - migrationHolds.count)
    }

    /// The queue forwarded frames wait in for `device`'s RX ring: the frames parked for it, as
    /// at a switch point (flushed before anything newer at the start of every pass), with room
    /// for a whole migration hold.
    private func forwardingQueue(of device: EmulatedDevice) -> SwitchOverflow {
        if let parked = device.switchOverflow { return parked }
        let length = device.maximumFrameLength
        let queue = SwitchOverflow(maximumFrameLength: length, capacity: MigrationHeldFrames.capacity(maximumFrameLength: length))
        device.switchOverflow = queue
        return queue
    }

    /// Moves `frames` behind whatever is parked for `device`, to be flushed into its RX ring
    /// before anything newer. Returns how many moved (the rest found the queue full: counted).
    private func park(_ frames: SwitchOverflow, for device: EmulatedDevice) -> Int {
        guard !frames.isEmpty else { return 0 }
        var moved = 0
        if device.switchOverflow == nil {
            device.switchOverflow = frames
            moved = frames.count
        } else {
            let queue = forwardingQueue(of: device)
            for k in 0..<frames.count {
                let (frame, length) = frames.frame(k)
                if queue.append(frame, length: length) {
                    moved += 1
                } else {
                    migrationCounters[device.name, default: .init()].overflowDrops &+= 1
                }
            }
        }
        device.switchOverflow?.toVirtualFunction = false
        anySwitchOverflow = true
        return moved
    }
}
