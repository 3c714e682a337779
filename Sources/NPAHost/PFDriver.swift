import Foundation
import Logging
import NPAControlProtocol
import NPANICModel
import NPARingFormats
import NPASystem
import SystemPackage

/// The host's PF driver: it alone programs VFs and the embedded switch, on behalf of the
/// guests, after admission. It owns the host's software NICs, keeps which VFs are in use, takes
/// plugin images from the plugin store, and moves a vNIC's MAC between the vswitch and a VF at
/// exactly one point of each switch (the switching functions below; see docs/architecture.md).
///
/// It may touch: the NICs (VF grants, queues, MAC/VLAN/rx-mode filters, resets), the vNICs'
/// switch machines (`EmulatedDevice.switching`: it sends their events and performs their actions), and the data path's vswitch ports and PF queue at switch points. Only the
/// host's thread calls it.
final class PFDriver {
    let configuration: HostConfiguration
    let logger: Logger
    let admission: Admission
    let plugins: PluginStore
    let dataPath: HostDataPath
    /// Where switch phases and VF resets are recorded (`PFDriver+Events.swift`).
    let events: HostEventLog
    /// The host's metrics, when it serves them: switch durations are recorded as switches end.
    var metrics: HostMetrics?
    /// The host's software SR-IOV NICs (engines on their own threads, accounted as hardware).
    let nics: [SoftNIC]
    /// VFs reserved or in use, per NIC name.
    var vfsInUse: [String: Set<Int>] = [:]

    init(
        configuration: HostConfiguration, nics: [SoftNIC], dataPath: HostDataPath, admission: Admission, events: HostEventLog,
        logger: Logger
    ) {
        self.configuration = configuration
        self.events = events
        self.nics = nics
        self.dataPath = dataPath
        self.admission = admission
        self.logger = logger
        plugins = PluginStore(
            directory: configuration.pluginDirectory, trustFiles: configuration.pluginTrust, scan: !nics.isEmpty, logger: logger)
        // Which bundle each NIC will inject, said once at start (`npa status` shows it too).
        let store = plugins.status
        for model in Set(nics.map(\.model.name)).sorted() {
            if let injection = store.injection(for: model) { logger.info("\(injection.line)") }
        }
    }

    /// The NICs `configuration` describes, each with its receiver stall limit and its TAP wire
    /// if it has one (opened, or created, here; not started).
    static func makeNICs(_ configuration: HostConfiguration) throws -> [SoftNIC] {
        try configuration.nics.map { n in
            let nic = try SoftNIC(name: n.name, model: NICModelRegistry.model(named: n.model), vfCount: n.vfs)
            nic.receiverStallLimitNanoseconds = UInt64(configuration.receiverStallMilliseconds) * 1_000_000
            nic.switchStallLimitNanoseconds = UInt64(configuration.switchTimeoutMilliseconds) * 1_000_000
            if let tap = n.wireTAP {
                do {
                    nic.attachWire(try TAPWire(name: tap, maximumFrame: SoftNIC.maximumFrame))
                } catch {
                    throw TAPWireError(description: "NIC '\(n.name)' wire: \(error)")
                }
            }
            return nic
        }
    }

    private var devices: [EmulatedDevice] { dataPath.devices }
    private var uplinkNIC: SoftNIC? { dataPath.uplinkNIC }

    /// A free VF on a NIC that has an accepted plugin bundle, or the reason there is none.
    func acquireVF() -> Result<(nic: SoftNIC, index: Int, plugin: String, path: String), SwitchRefusal> {
        for nic in nics {
            guard let image = plugins.image(for: nic.model) else { continue }
            let used = vfsInUse[nic.name, default: []]
            if let free = (0..<nic.vfs.count).first(where: { !used.contains($0) }) {
                vfsInUse[nic.name, default: []].insert(free)
                return .success((nic, free, image.name, image.path))
            }
        }
        if nics.isEmpty { return .failure(.noNICWithVFs) }
        if nics.allSatisfy({ plugins.image(for: $0.model) == nil }) {
            return .failure(.noPluginImage(directory: configuration.pluginDirectory, refusals: plugins.refusalSummary))
        }
        return .failure(.noFreeVF)
    }

    /// The NIC and VF a lease names.
    func vf(of lease: VNICSwitchMachine.VFLease) -> (nic: SoftNIC, index: Int)? {
        nics.first { $0.name == lease.nic }.map { ($0, lease.index) }
    }

    /// The VF a vNIC holds now, if any.
    func vf(of device: EmulatedDevice) -> (nic: SoftNIC, index: Int)? {
        device.switching.lease.flatMap { vf(of: $0) }
    }

    // MARK: Events to a vNIC's switch machine, and its actions carried out

    /// Carries out what the switch machine decided that needs no more than the vNIC: DIC, a VF
    /// reset, handing the MAC between the vswitch and the VF, releasing the VF. (Offers and VF
    /// programming need a connection or the guest's regions: their events' callers do those.)
    private func perform(_ actions: [VNICSwitchMachine.Action], for device: EmulatedDevice) {
        for action in actions {
            switch action {
            case .raiseDeviceImplementationChange:
                device.raiseDeviceImplementationChange()
            case .resetVF(let lease):
                guard let (nic, index) = vf(of: lease) else { continue }
                // FLR restarts the VF's counters: keep what it counted for this guest.
                device.earlierVFCounters = vfCounterTotals(device)
                nic.reset(vf: index)
                dataPath.setAwaitingSwitchOut(device, true)
                logger.warning("vNIC '\(device.name)': \(nic.name)/vf\(index) reset (FLR); switching the guest out")
            case .moveMACToVF(let lease):
                guard let (nic, index) = vf(of: lease) else { continue }
                nic.setMAC(vf: index, device.mac, switchingIn: true)
                if let uplink = uplinkNIC { drainPF(uplink, switching: device, parking: .thenToVirtualFunction) }
                if device.switchOverflow == nil || nic !== uplinkNIC { nic.endHoldForPF(mac: device.mac) }
                dataPath.detachFromSwitch(device)
                // The emulated device's stall clock is of no use now (nothing consults it while the VF
                // carries the vNIC); left running, a later wait for a failing VF would start expired.
                device.receiverStalledSince = 0
                device.exceededStallLimit = false
                logger.info("vNIC '\(device.name)' in passthrough on \(nic.name)/vf\(index) (\(device.pluginName ?? "?"))")
            case .quiesceVFAndReturnMAC(let lease):
                guard let (nic, index) = vf(of: lease) else { continue }
                nic.quiesce(vf: index)
                nic.setMAC(vf: index, .zero)
                dataPath.reattachToSwitch(device)
                // Frames held back for it (after a VF reset) go now: the PF queue's first, then, from
                // the next pass on, those in emulated senders' TX rings — each sender's in its order.
                dataPath.setAwaitingSwitchOut(device, false)
                if let uplink = uplinkNIC { drainPF(uplink, switching: device, parking: .thenToEmulatedRing) }
            case .releaseVF(let lease):
                release(lease, of: device)
            case .offerSwitchIn, .offerSwitchOut, .offerNothing, .programVF:
                preconditionFailure("\(action) is carried out by its event's caller")
            }
        }
    }

    private func release(_ lease: VNICSwitchMachine.VFLease, of device: EmulatedDevice) {
        dataPath.setAwaitingSwitchOut(device, false)
        guard let (nic, index) = vf(of: lease) else { return }
        var totals = device.earlierVFCounters
        for (k, v) in Self.vfCounters(nic.counters(vf: index)) { totals[k, default: 0] += v }
        device.earlierVFCounters = totals
        nic.reset(vf: index)
        vfsInUse[nic.name]?.remove(index)
        device.pluginName = nil
        device.pluginBundle = nil
    }

    /// Performs an event's actions, or turns its refusal into the PF driver's.
    private func apply(_ result: Result<[VNICSwitchMachine.Action], VNICSwitchMachine.Refusal>, to device: EmulatedDevice) -> Result<
        Void, SwitchRefusal
    > {
        switch result {
        case .success(let actions):
            noteSwitchStep(device, now: Clock.monotonicNanoseconds())
            perform(actions, for: device)
            return .success(())
        case .failure(let refusal):
            return .failure(SwitchRefusal(refusal))
        }
    }

    /// The vNIC goes (its connection closed): whatever VF it holds is released.
    func releaseVF(_ device: EmulatedDevice) {
        perform(device.switching.detached(), for: device)
    }

    /// `npa vnic switch-in/out`: reserve what the switch needs, raise DIC; the guest drives the rest.
    func requestSwitch(_ device: EmulatedDevice, toPassthrough: Bool) -> Result<String, SwitchRefusal> {
        let now = Clock.monotonicNanoseconds()
        if toPassthrough {
            if let refusal = device.switching.mayRequestSwitchIn() { return .failure(SwitchRefusal(refusal)) }
            guard device.isActive else { return .failure(.notActive) }
            if let refusal = admission.admitSwitch(toPassthrough: true, for: device) { return .failure(.admission(refusal)) }
            switch acquireVF() {
            case .failure(let refusal):
                return .failure(refusal)
            case .success(let vf):
                device.pluginName = vf.plugin
                let lease = VNICSwitchMachine.VFLease(nic: vf.nic.name, index: vf.index, plugin: vf.plugin)
                if case .failure(let refusal) = apply(device.switching.vfAcquired(lease, now: now), to: device) {
                    vfsInUse[vf.nic.name]?.remove(vf.index)
                    return .failure(refusal)
                }
                logger.info("vNIC '\(device.name)': switch in requested, DIC raised")
                return .success("switch-in of '\(device.name)' to \(vf.nic.name)/vf\(vf.index) started")
            }
        }
        if case .failure(let refusal) = apply(device.switching.requestSwitchOut(now: now), to: device) { return .failure(refusal) }
        if let (nic, index) = vf(of: device) { nic.guestSwitches(vf: index) }  // and again at its offer: a read between may end it
        logger.info("vNIC '\(device.name)': switch out requested, DIC raised")
        return .success("switch-out of '\(device.name)' started")
    }

    /// A VF reset without the guest's cooperation (VF reclaim, a faulting plugin): FLR now, then
    /// DIC so the guest moves to emulation. The MAC moves back to the vswitch where it does at
    /// any switch-out, at `switchOutBegin`, once the guest has re-armed its emulated device:
    /// until then its emulated rings are quiesced and hold buffers the VF path reuses, so a frame
    /// handed to it now could only be dropped. Frames for the guest meanwhile wait in their
    /// senders' TX rings or the PF queue (`awaitingSwitchOut`), up to the receiver stall limit.
    func resetVF(_ device: EmulatedDevice, reason: String = "VF reset by the host") -> Result<String, SwitchRefusal> {
        let lease = device.switching.lease
        if case .failure(let refusal) = apply(device.switching.resetVF(reason: reason, now: Clock.monotonicNanoseconds()), to: device) {
            return .failure(refusal)
        }
        let name = lease.map { "\($0.nic)/vf\($0.index)" } ?? "the VF"
        return .success("\(name) of '\(device.name)' reset; the guest is moving to emulation")
    }

    /// The guest asks what changed: offer the plugin image, the VF page and its kick eventfd
    /// (`reply` sends the offer with its descriptors before they are released).
    func offerSwitch(_ device: EmulatedDevice, reply: (ControlMessage, [FileDescriptor]) -> Void) {
        for action in device.switching.guestQueried(now: Clock.monotonicNanoseconds()) {
            switch action {
            case .offerSwitchIn(let lease):
                guard let (nic, index) = vf(of: lease), let path = plugins.image(for: nic.model)?.path else {
                    abandonSwitch(device, "the plugin bundle could not be read")
                    return reply(.switchOffer(.init(kind: .none)), [])
                }
                let image: SharedMemory
                do { image = try plugins.memfd(path) } catch {
                    logger.warning("vNIC '\(device.name)': \(error)")
                    abandonSwitch(device, "\(error)")
                    return reply(.switchOffer(.init(kind: .none)), [])
                }
                logger.info("vNIC '\(device.name)': offering \(nic.name)/vf\(index) with plugin bundle \(path)")
                noteSwitchStep(device, now: Clock.monotonicNanoseconds())
                device.pluginBundle = URL(fileURLWithPath: path).lastPathComponent
                let vf = nic.vfs[index]
                reply(
                    .switchOffer(.init(kind: .switchIn, vf: UInt16(index), model: nic.model.name, plugin: lease.plugin)),
                    [image.fd, vf.registers.fd, vf.kick.fd])
            case .offerSwitchOut(let lease):
                noteSwitchOutOffered(device, now: Clock.monotonicNanoseconds())
                if let (nic, index) = vf(of: lease) { nic.guestSwitches(vf: index) }  // it reads no ring until it is out
                reply(.switchOffer(.init(kind: .switchOut, vf: UInt16(lease.index))), [])
            default:
                reply(.switchOffer(.init(kind: .none)), [])
            }
        }
    }

    /// Calls off switch steps the guest has not answered within `switch_timeout_ms` (a stopped
    /// or hung guest must not hold a VF or a pending switch for ever); the switch machine says
    /// what that means in each state.
    func expireSwitchSteps(now: UInt64) {
        for device in devices where device.switching.isSwitching && !device.switching.deadlineExpired {
            let before = device.switching.reason
            perform(device.switching.stepDeadlinePassed(now: now, limitMilliseconds: configuration.switchTimeoutMilliseconds), for: device)
            if let reason = device.switching.reason, reason != before { logger.warning("vNIC '\(device.name)': \(reason)") }
            noteSwitchDeadline(device, reasonBefore: before)
        }
    }

    /// What `npa status` says about a switch under way.
    func switchPendingDescription(_ device: EmulatedDevice, now: UInt64) -> String? {
        guard device.switching.isSwitching else { return nil }
        let kind = device.switching.isSwitchingIn ? "switch-in" : "switch-out"
        return String(format: "%@ for %.0f ms, waiting for the guest", kind, Double(now &- device.switching.startedAt) / 1e6)
    }

    /// A switch-in that cannot go on ends in a consistent emulated state, with the reason kept.
    func abandonSwitch(_ device: EmulatedDevice, _ reason: String) {
        if case .success = apply(device.switching.switchInFailed(reason), to: device) {
            logger.warning("vNIC '\(device.name)': switch abandoned: \(reason)")
        }
    }

    /// The guest could not go on with a switch-in (`switchInFailed`): it stays on emulation.
    func guestFailedSwitchIn(_ device: EmulatedDevice, reason: String) -> Result<Void, SwitchRefusal> {
        let result = apply(device.switching.guestFailedSwitchIn(reason), to: device)
        if case .success = result { logger.warning("vNIC '\(device.name)': switch abandoned: guest: \(reason)") }
        return result
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
    func prepareVF(_ device: EmulatedDevice, tx: [ControlMessage.QueueRegion], rx: [ControlMessage.QueueRegion]) -> Result<
        Void, SwitchRefusal
    > {
        let actions: [VNICSwitchMachine.Action]
        switch device.switching.guestReadyForVF(now: Clock.monotonicNanoseconds()) {
        case .success(let a): actions = a
        case .failure(let refusal): return .failure(SwitchRefusal(refusal))
        }
        guard case .programVF(let lease)? = actions.first, let (nic, index) = vf(of: lease) else {
            abandonSwitch(device, "the VF is gone")
            return .failure(.noSwitchInUnderWay)
        }
        let bufferSize = device.maximumFrameLength
        func config(_ r: ControlMessage.QueueRegion) -> VirtualFunction.QueueConfig {
            .init(ringGPA: r.gpa, ringSize: r.ringSize, completionGPA: r.completionGPA, bufferSize: UInt32(bufferSize))
        }
        nic.grant(vf: index, memory: device.memory)
        do {
            try nic.initializeQueues(vf: index, tx: tx.map(config), rx: rx.map(config), interrupt: device.interrupts[0])
        } catch {
            abandonSwitch(device, "\(error)")
            return .failure(.queueSetupFailed("\(error)"))
        }
        nic.setVLANs(vf: index, device.effectiveVLANs)
        nic.setRxMode(vf: index, device.effectiveRxMode, multicast: device.multicast)
        if let capture = device.capture { nic.setMirror(vf: index, to: capture.mirrorRing) }  // before it carries a frame
        nic.enable(vf: index)
        noteSwitchStep(device, now: Clock.monotonicNanoseconds())
        return .success(())
    }

    /// ACTIVATE_VF: the one point where the MAC moves from the vswitch to the VF. Frames the NIC
    /// already sent up for this MAC are delivered to the emulated rings first (the guest harvests
    /// them before anything from the VF), so per-flow order survives the move.
    func activateVF(_ device: EmulatedDevice) -> Result<Void, SwitchRefusal> {
        apply(device.switching.guestActivatedVF(now: Clock.monotonicNanoseconds()), to: device)
    }

    /// Switch-out step, in this order: quiesce the VF (it sends nothing more up the PF), forget
    /// its MAC in the NIC (frames for it now go up the PF too), give the MAC back to the vswitch,
    /// then deliver everything the PF holds. The VF's last frames thus reach their receivers
    /// before anything the guest re-sends through emulation, and frames for the guest reach its
    /// emulated rings after everything the VF still holds (the guest harvests that first).
    func beginSwitchOut(_ device: EmulatedDevice) -> Result<Void, SwitchRefusal> {
        apply(device.switching.guestBeganSwitchOut(now: Clock.monotonicNanoseconds()), to: device)
    }

    /// The guest drained the VF path: the VF is released. During a switch-in the guest gave it
    /// up: it stays on emulation.
    func finishSwitchOut(_ device: EmulatedDevice) -> Result<Void, SwitchRefusal> {
        let switchingIn = device.switching.isSwitchingIn
        let result = apply(device.switching.guestFinishedSwitchOut(now: Clock.monotonicNanoseconds()), to: device)
        if case .success = result {
            logger.info(
                switchingIn ? "vNIC '\(device.name)': the guest abandoned the switch-in" : "vNIC '\(device.name)' back on emulation")
        }
        return result
    }

    /// Delivers everything the PF holds now (at a switch point, not one burst: frames left behind
    /// would be overtaken by what the guest sends next on its new path, or routed after its MAC
    /// moved). A receiver with no free buffer is waited for — the host thread yields until it
    /// posts one, within that receiver's stall limit — so a switch loses nothing to a slow
    /// receiver; the wait is bounded by the limit and happens only at a switch point. Frames for
    /// the switching guest itself are not waited for: it is busy in the switch handshake. Those
    /// its emulated ring cannot take are parked for it (`SwitchOverflow`) and follow it to its
    /// new path — nothing is lost at a switch to a guest's full ring.
    func drainPF(_ nic: SoftNIC, switching device: EmulatedDevice, parking: SwitchParking) {
        // Frames already parked for it follow it to where it is going now.
        device.switchOverflow?.toVirtualFunction = parking == .thenToVirtualFunction
        while !nic.pfReceive.isEmpty {
            if dataPath.receiveFromPF(nic, switching: device, parking: parking) == 0 {
                for d in devices { d.raiseInterrupts() }  // a sleeping receiver must wake to take its frames
                EngineThread.yieldProcessor()
            }
        }
        // Parked for a VF: on their way now. The NIC holds newer frames for that VF from other
        // VFs and the wire until the parked ones are down (`holdsForPF`, ended here or by the
        // flush that empties the overflow), so none overtakes them.
        if parking == .thenToVirtualFunction && dataPath.anySwitchOverflow { dataPath.flushSwitchOverflows() }
        for d in devices { d.raiseInterrupts() }
    }

    /// In passthrough the guest's control operations go to the VF too (through the PF).
    func syncPassthroughFilters(_ device: EmulatedDevice) {
        // Not while a switch is under way: the switch itself decides where the MAC lives (the
        // guest re-arms emulation with commands before the host hands the MAC back).
        guard device.switching.filtersFollowVF, let (nic, index) = vf(of: device) else { return }
        nic.setMAC(vf: index, device.mac)
        nic.setVLANs(vf: index, device.effectiveVLANs)
        nic.setRxMode(vf: index, device.effectiveRxMode, multicast: device.multicast)
        dataPath.detachFromSwitch(device)
    }
}
