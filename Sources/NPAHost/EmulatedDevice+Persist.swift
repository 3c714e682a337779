import Logging
import NPAControlProtocol
import NPARingFormats
import NPASystem

/// Save and restore of a vNIC's device emulation (Firecracker's `persist.rs` role): a stopped
/// device is saved to a `DeviceState`; a new device is restored from one onto the guest's
/// handles and carries on where the saved one stopped.
///
/// A restore trusts the state no more than guest input: it validates it, then checks every ring
/// and queue descriptor against this guest's memory (the data path addresses ring slots without
/// further checks, as after ACTIVATE), the vector count against the interrupt eventfds, and
/// the MAC, VLANs and rx mode against this host's policy and MAC ownership.
extension EmulatedDevice {
    /// The OS handles a device runs on, which a restore takes over: the guest's memory, its
    /// doorbell and interrupt eventfds and — on the same host — the register page the guest
    /// has mapped and the vswitch port.
    struct Handles {
        var region: SharedMemory
        var doorbell: EventNotifier
        var interrupts: [EventNotifier]
        /// nil: a fresh page is made (the guest maps it anew), its masks set from the state.
        var registerPage: SharedMemory?
        /// nil: a new vswitch port is added.
        var port: Int?
    }

    /// Hands over this device's handles, for a restore on the same host.
    var handles: Handles {
        Handles(region: region, doorbell: doorbell, interrupts: interrupts, registerPage: registerPage, port: port)
    }

    /// Saves a stopped device (`stop()`). The IMR words are read from the register page: the
    /// guest writes them, the device keeps no copy.
    func save() -> DeviceState {
        precondition(state == .stopped, "vNIC '\(name)' must be stopped to be saved")
        var masked: UInt32 = 0
        for v in 0..<min(interrupts.count, 32) where SharedWord.loadRelaxed(registerWord(VMXNET3.RegisterPage.interruptMask(v))) != 0 {
            masked |= 1 << UInt32(v)
        }
        return DeviceState(
            identity: .init(id: id, name: name, permanentMAC: permanentMAC, mac: mac, mtu: mtu),
            filters: .init(rxMode: rxMode, multicast: multicast.sorted(), vlans: vlans.sorted()),
            interrupts: .init(vectorCount: UInt8(clamping: interrupts.count), autoMask: autoMask, masked: masked, pending: pendingVectors),
            queues: .init(transmit: txQueues.map(\.saved), receive: rxQueues.map(\.saved)),
            lifecycle: (stateBeforeStop ?? .reset).saved(faults: faults, loggedReasons: loggedReasons),
            latches: .init(
                driverSharedLow: driverSharedLow, driverSharedPA: driverSharedPA, macLow: macLowLatch, lastCommandResult: lastCommandResult),
            counters: .init(device: counters, earlierVF: earlierVFCounters))
    }

    /// Restores the device `saved` describes onto `handles`. The vswitch port (handed over or
    /// new) is programmed with the state's MAC, ownership and filters; a handed-over register
    /// page is left as it is — the guest owns its masks and may have changed them since the save.
    convenience init(
        restoring saved: DeviceState, handles: Handles, policy: GuestPolicy, maxQueues: Int, vswitch: VirtualSwitch, admission: Admission,
        logger: Logger
    ) throws(DeviceStateError) {
        try saved.validate()
        try Self.check(saved, fits: handles, maxQueues: maxQueues)
        // Its MAC, VLANs and rx mode pass the same admission as a running guest's requests.
        if let refusal = admission.admitRestored(saved, policy: policy, port: handles.port) { throw .refusedByPolicy(refusal.description) }
        let page: SharedMemory
        if let handed = handles.registerPage {
            page = handed
        } else {
            do {
                page = try SharedMemory(name: "npa-regs-\(saved.name)", size: VMXNET3.RegisterPage.size)
            } catch {
                throw .doesNotFit(field: "registerPage", reason: "no register page: \(error)")
            }
        }
        self.init(
            state: saved, policy: policy, region: handles.region, registerPage: page, doorbell: handles.doorbell,
            interrupts: handles.interrupts, maxQueues: maxQueues, vswitch: vswitch, admission: admission,
            port: handles.port ?? vswitch.addPort(mac: saved.identity.mac), logger: logger)
        if handles.registerPage == nil {
            // Vectors the device does not have stay masked, as after a reset.
            for v in 0..<VMXNET3.RegisterPage.maximumVectors {
                let unmasked = v < Int(saved.interrupts.vectorCount) && saved.interrupts.masked & (1 << UInt32(v)) == 0
                registerWord(VMXNET3.RegisterPage.interruptMask(v)).pointee = unmasked ? 0 : 1
            }
        }
        vswitch.setOwnedMAC(port, mac)
        vswitch.setMAC(port, mac)
        vswitch.setVLANs(port, effectiveVLANs)
        vswitch.setRxMode(port, effectiveRxMode)
        vswitch.setMulticast(port, multicast)
    }

    /// Every ring and queue descriptor lies inside guest memory; the handles match the state.
    private static func check(_ s: DeviceState, fits handles: Handles, maxQueues: Int) throws(DeviceStateError) {
        guard Int(s.interrupts.vectorCount) == handles.interrupts.count else {
            throw .doesNotFit(
                field: "interrupts.vectorCount",
                reason: "\(s.interrupts.vectorCount) vectors, the guest attached \(handles.interrupts.count) interrupt eventfds")
        }
        let memory = GuestMemory(base: handles.region.base, size: handles.region.size)
        for (kind, list) in [("transmit", s.queues.transmit), ("receive", s.queues.receive)] {
            guard list.count <= maxQueues else {
                throw .doesNotFit(field: "queues.\(kind)", reason: "\(list.count) queues, this host allows \(maxQueues) (max_queues)")
            }
            for (i, q) in list.enumerated() {
                let field = "queues.\(kind)[\(i)]"
                guard memory.contains(gpa: q.ringBase, length: UInt64(q.ringSize) * VMXNET3.descriptorSize) else {
                    throw .doesNotFit(field: "\(field).ringBase", reason: "the ring lies outside guest memory")
                }
                guard memory.contains(gpa: q.completionBase, length: UInt64(q.completionSize) * VMXNET3.descriptorSize) else {
                    throw .doesNotFit(field: "\(field).completionBase", reason: "the completion ring lies outside guest memory")
                }
                guard memory.contains(gpa: q.descriptorGPA, length: VMXNET3.queueDescriptorSize) else {
                    throw .doesNotFit(field: "\(field).descriptorGPA", reason: "the queue descriptor lies outside guest memory")
                }
            }
        }
    }
}

extension EmulatedDevice.Queue {
    init(restoring q: DeviceState.QueueState) {
        self.init(
            ringBase: q.ringBase, ringSize: q.ringSize, next: q.next, generation: q.generation, compBase: q.completionBase,
            compSize: q.completionSize, compNext: q.completionNext, compGeneration: q.completionGeneration, vector: Int(q.vector),
            descriptorGPA: q.descriptorGPA)
    }

    var saved: DeviceState.QueueState {
        DeviceState.QueueState(
            ringBase: ringBase, ringSize: ringSize, next: next, generation: generation, completionBase: compBase, completionSize: compSize,
            completionNext: compNext, completionGeneration: compGeneration, vector: UInt8(clamping: vector), descriptorGPA: descriptorGPA)
    }
}

extension EmulatedDevice.State {
    init(restoring l: DeviceState.Lifecycle) {
        switch l.phase {
        case .reset: self = .reset
        case .active: self = .active
        case .quiesced: self = .quiesced
        case .failed: self = .failed(l.failureReason)
        }
    }

    /// `.stopped` is never saved: `save()` records the state `stop()` left.
    func saved(faults: Int, loggedReasons: UInt32) -> DeviceState.Lifecycle {
        let phase: DeviceState.Lifecycle.Phase
        var reason = ""
        switch self {
        case .reset, .stopped: phase = .reset
        case .active: phase = .active
        case .quiesced: phase = .quiesced
        case .failed(let r):
            phase = .failed
            reason = r
            while reason.utf8.count > DeviceState.maximumFailureReasonBytes { reason.removeLast() }
        }
        return DeviceState.Lifecycle(phase: phase, failureReason: reason, faults: UInt32(clamping: faults), loggedReasons: loggedReasons)
    }
}
