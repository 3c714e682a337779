import Foundation
import NPAControlProtocol
import NPANICModel
import NPARingFormats
import NPASystem
import SystemPackage

/// The host's PF driver role: it alone programs VFs and the embedded switch, on behalf of the
/// guests, after policy. It keeps which VFs are in use and where the plugin images live, and it
/// moves a vNIC's MAC between the vswitch and a VF at exactly one point of each switch.
extension HostDaemon {
    /// The image the host injects for a NIC model (first one found in the plugin directory).
    func pluginImagePath(for model: NICModel) -> (name: String, path: String)? {
        for name in model.pluginImages {
            let path = configuration.pluginDirectory + "/" + name + ".so"
            if FileManager.default.fileExists(atPath: path) { return (name, path) }
        }
        return nil
    }

    /// A free VF on a NIC that has a plugin image, or the reason there is none.
    func acquireVF() -> Result<(nic: SoftNIC, index: Int, plugin: String, path: String), SwitchRefusal> {
        for nic in nics {
            guard let image = pluginImagePath(for: nic.model) else { continue }
            let used = vfsInUse[nic.name, default: []]
            if let free = (0..<nic.vfs.count).first(where: { !used.contains($0) }) {
                vfsInUse[nic.name, default: []].insert(free)
                return .success((nic, free, image.name, image.path))
            }
        }
        if nics.isEmpty { return .failure(SwitchRefusal("this host has no NIC with VFs")) }
        if nics.allSatisfy({ pluginImagePath(for: $0.model) == nil }) {
            return .failure(SwitchRefusal("no plugin image for this host's NICs in \(configuration.pluginDirectory) (run scripts/build-plugins.sh)"))
        }
        return .failure(SwitchRefusal("no free VF"))
    }

    /// The guest-visible counters of a VF, by name (drops as `drop_vf_<reason>`).
    static func vfCounters(_ v: VirtualFunction.Counters) -> [String: UInt64] {
        [
            "vf_tx_frames": v.txFrames, "vf_rx_frames": v.rxFrames, "drop_vf_no_buffers": v.noBufferDrops,
            "drop_vf_spoofed_source": v.spoofedDrops, "drop_vf_vlan_refused": v.vlanDrops, "drop_vf_dma_fault": v.dmaFaults,
            "drop_vf_bad_descriptor": v.badDescriptors, "drop_vf_frame_too_long": v.frameTooLong, "vf_interrupts": v.interrupts,
        ]
    }

    /// Counters of the VF now held plus those held before, so nothing the guest's NIC counted
    /// disappears when it moves back to emulation.
    func vfCounterTotals(_ device: EmulatedDevice) -> [String: UInt64] {
        var totals = device.earlierVFCounters
        if let (nic, index) = device.vf {
            for (k, v) in Self.vfCounters(nic.counters(vf: index)) { totals[k, default: 0] += v }
        }
        return totals
    }

    func releaseVF(_ device: EmulatedDevice) {
        setAwaitingSwitchOut(device, false)
        guard let (nic, index) = device.vf else { return }
        device.earlierVFCounters = vfCounterTotals(device)
        nic.reset(vf: index)
        vfsInUse[nic.name]?.remove(index)
        device.vf = nil
        device.pluginName = nil
    }

    struct SwitchRefusal: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    /// `npa vnic switch-in/out`: reserve what the switch needs, raise DIC; the guest drives the rest.
    func requestSwitch(_ device: EmulatedDevice, toPassthrough: Bool) -> Result<String, SwitchRefusal> {
        guard device.pendingSwitch == .none else { return .failure(SwitchRefusal("a switch is already under way")) }
        if toPassthrough {
            guard device.mode == .emulated else { return .failure(SwitchRefusal("already in passthrough")) }
            guard device.isActive else { return .failure(SwitchRefusal("the vNIC is not active")) }
            guard device.policy.allowPassthrough else { return .failure(SwitchRefusal("passthrough is not allowed for guest '\(device.name)' by host policy")) }
            switch acquireVF() {
            case .failure(let refusal):
                return .failure(refusal)
            case .success(let vf):
                device.vf = (vf.nic, vf.index)
                device.pluginName = vf.plugin
                device.pendingSwitch = .switchIn
            }
        } else {
            guard device.mode == .passthrough else { return .failure(SwitchRefusal("already emulated")) }
            device.pendingSwitch = .switchOut
        }
        device.switchStartedNanoseconds = Clock.monotonicNanoseconds()
        device.switchStepStartedNanoseconds = device.switchStartedNanoseconds
        device.switchStepExpired = false
        logger.info("vNIC '\(device.name)': switch \(toPassthrough ? "in" : "out") requested, DIC raised")
        device.raiseDeviceImplementationChange()
        return .success(toPassthrough ? "switch-in of '\(device.name)' to \(device.vf!.nic.name)/vf\(device.vf!.index) started" : "switch-out of '\(device.name)' started")
    }

    /// A VF reset without the guest's cooperation (VF reclaim, a faulting plugin): FLR now, then
    /// DIC so the guest moves to emulation. The MAC moves back to the vswitch where it does at
    /// any switch-out, at `switchOutBegin`, once the guest has re-armed its emulated device:
    /// until then its emulated rings are quiesced and hold buffers the VF path reuses, so a frame
    /// handed to it now could only be dropped. Frames for the guest meanwhile wait in their
    /// senders' TX rings or the PF queue (`awaitingSwitchOut`), up to the receiver stall limit.
    func resetVF(_ device: EmulatedDevice, reason: String = "VF reset by the host") -> Result<String, SwitchRefusal> {
        guard device.mode == .passthrough, let (nic, index) = device.vf else { return .failure(SwitchRefusal("the vNIC is not in passthrough")) }
        guard device.pendingSwitch == .none else { return .failure(SwitchRefusal("a switch is already under way")) }
        // FLR restarts the VF's counters: keep what it counted for this guest.
        device.earlierVFCounters = vfCounterTotals(device)
        nic.reset(vf: index)
        setAwaitingSwitchOut(device, true)
        device.pendingSwitch = .switchOut
        device.switchOutCommitted = true
        device.switchStartedNanoseconds = Clock.monotonicNanoseconds()
        device.switchStepStartedNanoseconds = device.switchStartedNanoseconds
        device.switchStepExpired = false
        device.switchReason = reason
        logger.warning("vNIC '\(device.name)': \(nic.name)/vf\(index) reset (FLR); switching the guest out")
        device.raiseDeviceImplementationChange()
        return .success("\(nic.name)/vf\(index) of '\(device.name)' reset; the guest is moving to emulation")
    }

    /// The guest asks what changed: offer the plugin image, the VF page and its kick eventfd.
    func offerSwitch(_ device: EmulatedDevice, to c: Connection) {
        switch device.pendingSwitch {
        case .switchIn:
            guard let (nic, index) = device.vf, let plugin = device.pluginName, let path = pluginImagePath(for: nic.model)?.path,
                let image = try? imageMemfd(path)
            else {
                abandonSwitch(device, "the plugin image could not be read")
                return reply(c, .switchOffer(.init(kind: .none)))
            }
            let vf = nic.vfs[index]
            reply(c, .switchOffer(.init(kind: .switchIn, vf: UInt16(index), model: nic.model.name, plugin: plugin)),
                  descriptors: [image.fd, vf.registers.fd, vf.kick.fd])
        case .switchOut:
            reply(c, .switchOffer(.init(kind: .switchOut, vf: UInt16(device.vf?.index ?? 0))))
        case .none:
            reply(c, .switchOffer(.init(kind: .none)))
        }
    }

    /// Calls off switch steps the guest has not answered within `switch_timeout_ms` (a stopped
    /// or hung guest must not hold a VF or a pending switch for ever). A switch-in is abandoned
    /// and its VF released; a switch-out an admin asked for is cancelled (the guest keeps its
    /// VF, consistent with what it runs on); a switch-out that is already committed — the VF
    /// quiesced or reset, the MAC back on the vswitch — cannot be undone: it stays pending for
    /// the guest to finish (or its detach to clean up), and status says it timed out.
    func expireSwitchSteps(now: UInt64) {
        let limit = UInt64(configuration.switchTimeoutMilliseconds) * 1_000_000
        for device in devices where device.pendingSwitch != .none && !device.switchStepExpired {
            guard now &- device.switchStepStartedNanoseconds > limit else { continue }
            let waited = "the guest did not answer within \(configuration.switchTimeoutMilliseconds) ms"
            switch device.pendingSwitch {
            case .switchIn where device.mode == .emulated:
                abandonSwitch(device, "switch-in timed out: \(waited); VF released")
            case .switchOut where !device.switchOutCommitted:
                device.pendingSwitch = .none
                device.lastSwitchMilliseconds = nil
                device.switchReason = "switch-out timed out: \(waited); it stays in passthrough"
                logger.warning("vNIC '\(device.name)': \(device.switchReason!)")
            default:
                device.switchStepExpired = true
                device.switchReason = "switch-out timed out: \(waited) (\(device.switchReason ?? "requested")); its VF stays reset until it answers or detaches"
                logger.warning("vNIC '\(device.name)': \(device.switchReason!)")
            }
        }
    }

    /// What `npa status` says about a switch under way.
    func switchPendingDescription(_ device: EmulatedDevice, now: UInt64) -> String? {
        guard device.pendingSwitch != .none else { return nil }
        let kind = device.pendingSwitch == .switchIn ? "switch-in" : "switch-out"
        return String(format: "%@ for %.0f ms, waiting for the guest", kind, Double(now &- device.switchStartedNanoseconds) / 1e6)
    }

    /// Injection: the image's bytes in a memfd (nothing is installed in the guest).
    private func imageMemfd(_ path: String) throws -> SharedMemory {
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let memory = try SharedMemory(name: "npa-plugin-image", size: max(bytes.count, 1))
        bytes.withUnsafeBytes { memory.base.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        return memory
    }

    /// A switch that cannot go on ends in a consistent emulated state, with the reason kept.
    func abandonSwitch(_ device: EmulatedDevice, _ reason: String) {
        logger.warning("vNIC '\(device.name)': switch abandoned: \(reason)")
        if device.mode == .emulated { releaseVF(device) }
        device.pendingSwitch = .none
        device.switchReason = reason
        device.lastSwitchMilliseconds = nil
    }

    /// Switch-in step: the PF initialises the VF's queues from the shell's GPAs and grants it the
    /// guest's memory. The MAC stays on the vswitch until ACTIVATE_VF.
    ///
    /// Each RX queue's buffer size (SRRCTL.BSIZEPACKET) is the longest frame the guest's MTU
    /// allows, MTU + 18 (header and an 802.1Q tag), the MTU being what the guest declared in
    /// DriverShared at ACTIVATE: a vmxnet3 driver sizes its receive buffers for it, and the
    /// shell refuses a configuration whose buffers do not hold it. So the NIC never writes past
    /// a buffer, and a frame is taken or refused by the same rule on both paths (the emulated
    /// device drops the same frames as `rx_frame_too_long`).
    func prepareVF(_ device: EmulatedDevice, tx: [ControlMessage.QueueRegion], rx: [ControlMessage.QueueRegion]) -> Result<Void, SwitchRefusal> {
        guard device.pendingSwitch == .switchIn, let (nic, index) = device.vf else { return .failure(SwitchRefusal("no switch-in under way")) }
        let bufferSize = device.maximumFrameLength
        func config(_ r: ControlMessage.QueueRegion) -> VirtualFunction.QueueConfig {
            .init(ringGPA: r.gpa, ringSize: r.ringSize, completionGPA: r.completionGPA, bufferSize: UInt32(bufferSize))
        }
        nic.grant(vf: index, memory: device.memory)
        do {
            try nic.initializeQueues(vf: index, tx: tx.map(config), rx: rx.map(config), interrupt: device.interrupts[0])
        } catch {
            abandonSwitch(device, "\(error)")
            return .failure(SwitchRefusal("\(error)"))
        }
        nic.setVLANs(vf: index, device.vlans)
        nic.setRxMode(vf: index, device.rxMode, multicast: device.multicast)
        nic.enable(vf: index)
        return .success(())
    }

    /// ACTIVATE_VF: the one point where the MAC moves from the vswitch to the VF. Frames the NIC
    /// already sent up for this MAC are delivered to the emulated rings first (the guest harvests
    /// them before anything from the VF), so per-flow order survives the move.
    func activateVF(_ device: EmulatedDevice) -> Result<Void, SwitchRefusal> {
        guard device.pendingSwitch == .switchIn, let (nic, index) = device.vf else { return .failure(SwitchRefusal("no switch-in under way")) }
        nic.setMAC(vf: index, device.mac)
        if let uplink = uplinkNIC { drainPF(uplink, switching: device) }
        detachFromSwitch(device)
        device.mode = .passthrough
        // The emulated device's stall clock is of no use now (nothing consults it while the VF
        // carries the vNIC); left running, a later wait for a failing VF would start expired.
        device.receiverStalledSince = 0
        device.exceededStallLimit = false
        device.pendingSwitch = .none
        device.switchReason = nil
        device.lastSwitchMilliseconds = Double(Clock.monotonicNanoseconds() - device.switchStartedNanoseconds) / 1e6
        logger.info("vNIC '\(device.name)' in passthrough on \(nic.name)/vf\(index) (\(device.pluginName ?? "?"))")
        return .success(())
    }

    /// Switch-out step, in this order: quiesce the VF (it sends nothing more up the PF), forget
    /// its MAC in the NIC (frames for it now go up the PF too), give the MAC back to the vswitch,
    /// then deliver everything the PF holds. The VF's last frames thus reach their receivers
    /// before anything the guest re-sends through emulation, and frames for the guest reach its
    /// emulated rings after everything the VF still holds (the guest harvests that first).
    func beginSwitchOut(_ device: EmulatedDevice) -> Result<Void, SwitchRefusal> {
        guard device.pendingSwitch == .switchOut, let (nic, index) = device.vf else { return .failure(SwitchRefusal("no switch-out under way")) }
        nic.quiesce(vf: index)
        nic.setMAC(vf: index, .zero)
        device.switchOutCommitted = true
        reattachToSwitch(device)
        // Frames held back for it (after a VF reset) go now: the PF queue's first, then, from
        // the next pass on, those in emulated senders' TX rings — each sender's in its order.
        setAwaitingSwitchOut(device, false)
        if let uplink = uplinkNIC { drainPF(uplink, switching: device) }
        return .success(())
    }

    func finishSwitchOut(_ device: EmulatedDevice) -> Result<Void, SwitchRefusal> {
        if device.pendingSwitch == .switchIn && device.mode == .emulated {
            // The guest could not complete a switch-in: it stays on emulation; release the VF.
            abandonSwitch(device, "the guest abandoned the switch-in")
            return .success(())
        }
        guard device.pendingSwitch == .switchOut else { return .failure(SwitchRefusal("no switch-out under way")) }
        releaseVF(device)
        device.mode = .emulated
        device.pendingSwitch = .none
        device.switchOutCommitted = false
        device.lastSwitchMilliseconds = Double(Clock.monotonicNanoseconds() - device.switchStartedNanoseconds) / 1e6
        logger.info("vNIC '\(device.name)' back on emulation")
        return .success(())
    }

    /// Delivers everything the PF holds now (at a switch point, not one burst: frames left behind
    /// would be overtaken by what the guest sends next on its new path, or routed after its MAC
    /// moved). A receiver with no free buffer is waited for — the host thread yields until it
    /// posts one, within that receiver's stall limit — so a switch loses nothing to a slow
    /// receiver; the wait is bounded by the limit and happens only at a switch point. Frames for
    /// the switching guest itself are not waited for: it is busy in the switch handshake.
    func drainPF(_ nic: SoftNIC, switching device: EmulatedDevice) {
        while !nic.pfReceive.isEmpty {
            if receiveFromPF(nic, switching: device) == 0 {
                for d in devices { d.raiseInterrupts() }  // a sleeping receiver must wake to take its frames
                sched_yield()
            }
        }
        for d in devices { d.raiseInterrupts() }
    }

    /// In passthrough the guest's control operations go to the VF too (through the PF).
    func syncPassthroughFilters(_ device: EmulatedDevice) {
        // Not while a switch is under way: the switch itself decides where the MAC lives (the
        // guest re-arms emulation with commands before the host hands the MAC back).
        guard device.mode == .passthrough, device.pendingSwitch == .none, let (nic, index) = device.vf else { return }
        nic.setMAC(vf: index, device.mac)
        nic.setVLANs(vf: index, device.vlans)
        nic.setRxMode(vf: index, device.rxMode, multicast: device.multicast)
        detachFromSwitch(device)
    }
}
