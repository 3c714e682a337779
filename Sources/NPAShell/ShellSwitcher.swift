import CNPAPluginABI
import NPAControlProtocol
import NPAPluginBundle
import NPARingFormats
import NPASystem
import SystemPackage

/// Drives the shell's switch state machine (`ShellSwitchStateMachine`): notices DIC and plugin
/// faults, performs each action the machine returns — control round trips, loading the injected
/// plugin, draining one data path and handing what it held to the other — and reports each
/// outcome as the next event. Keeps the switch record and the data path the guest's calls reach.
///
/// It may touch the control channel (the switch messages), the emulated device through
/// `VMXNET3Programming`, the emulation path and a VF lease's path (drain, adopt, refill), and
/// through them the buffer pool. Single-threaded: the guest thread driving the vNIC calls it
/// between data-path calls, and a switch runs to its end inside one call.
final class ShellSwitcher {
    typealias Machine = ShellSwitchStateMachine<SwitchInOffer, VFLease, ShellDataPath.DrainedState>

    private var machine = Machine()
    /// The data path the machine's state selects, set when a switch flips it, so that a data-path
    /// call reads one reference instead of looking at the state.
    private(set) var activePath: ShellDataPath
    let emulationPath: ShellDataPath
    private(set) var record = ShellSwitchRecord()
    private let device: VMXNET3Programming
    private let channel: ControlChannel
    private let interrupt: EventNotifier
    private let vfRegions: (tx: [npa_queue_region], rx: [npa_queue_region])
    private let ringSize: Int
    private let spinPolls: Int
    /// What the guest hands a host to attach, handed again when the vNIC moves.
    private let attachment: GuestAttachment
    /// The keys whose bundles the guest maps (`VirtualNIC.Configuration.pluginTrust`).
    private let pluginTrust: PluginTrustStore

    init(
        emulationPath: ShellDataPath, device: VMXNET3Programming, channel: ControlChannel, interrupt: EventNotifier,
        vfRegions: (tx: [npa_queue_region], rx: [npa_queue_region]), ringSize: Int, spinPolls: Int, attachment: GuestAttachment,
        pluginTrust: PluginTrustStore
    ) {
        self.attachment = attachment
        self.pluginTrust = pluginTrust
        self.emulationPath = emulationPath
        activePath = emulationPath
        self.device = device
        self.channel = channel
        self.interrupt = interrupt
        self.vfRegions = vfRegions
        self.ringSize = ringSize
        self.spinPolls = spinPolls
        installInterruptHook(emulationPath)
    }

    /// "emulated" while the built-in plugin drives the data path, "passthrough" on a VF.
    var mode: String { machine.dataPathLease == nil ? "emulated" : "passthrough" }

    /// If the host raised DIC, asks it what changed and carries the switch out. Returns true if
    /// a switch request was handled (whether or not it succeeded).
    @discardableResult
    func serviceIfRequested() -> Bool {
        // A dead host asks for nothing; its last DIC cannot be carried out.
        if channel.link.gone != nil {
            if machine.stateName != .hostGone { run(step { try $0.hostGone() }) }
            return false
        }
        // A plugin that reported its device dead: ask the host (once) to reset the VF; it answers
        // with DIC, handled below. A switch the host already started comes first.
        if !device.deviceImplementationChangePending, let fault = activePath.plugin.deviceFault, machine.mayReportPluginFault {
            run(step { try $0.pluginFaulted(reason: fault) })
        }
        guard device.deviceImplementationChangePending else { return false }
        run(step { try $0.deviceImplementationChange() })
        return true
    }

    /// Feeds one event. A refusal means the host's answer did not fit the state: the step under
    /// way fails with it. A state where nothing can fail refusing that too would be our bug.
    /// (The events throw only `ShellSwitchRefusal`; the closure's type cannot say so before
    /// Swift infers typed throws for closures.)
    private func step(_ event: (inout Machine) throws -> Machine.Action) -> Machine.Action {
        do {
            return try event(&machine)
        } catch let refusal as ShellSwitchRefusal {
            do {
                return try machine.stepFailed(reason: refusal.description)
            } catch {
                preconditionFailure("the shell's switch state machine: \(error)")
            }
        } catch {
            preconditionFailure("the shell's switch state machine threw \(error)")
        }
    }

    private func stepFailed(_ error: Error) -> Machine.Action {
        step { try $0.stepFailed(reason: "\(error)") }
    }

    /// Performs actions until the machine asks for none.
    private func run(_ first: Machine.Action) {
        var startedAt = Clock.monotonicNanoseconds()
        var action = first
        while let next = perform(action, startedAt: &startedAt) { action = next }
    }

    private func perform(_ action: Machine.Action, startedAt: inout UInt64) -> Machine.Action? {
        switch action {
        case .acknowledgeAndQuery:
            _ = try? device.acknowledgeDeviceImplementationChange()
            record.note("DIC: device implementation change")
            startedAt = Clock.monotonicNanoseconds()
            return query()
        case .stay, .none:
            return nil
        case .loadPlugin(let offer):
            do {
                let lease = try VFLease.load(
                    offer, trust: pluginTrust, tx: vfRegions.tx, rx: vfRegions.rx, pool: emulationPath.plugin.pool, ringSize: ringSize,
                    interrupt: interrupt, spinPolls: spinPolls, link: channel.link
                ) { image in record.note("plugin \(image.name) \(image.version) loaded from the injected image") }
                lease.path.maximumFrameLength = emulationPath.maximumFrameLength
                lease.path.offloadMask = emulationPath.offloadMask
                return step { try $0.pluginLoaded(lease) }
            } catch {
                return stepFailed(error)
            }
        case .prepareVF(let lease):
            // The regions as the plugin carved them (its completion rings where it put them).
            let plugin = lease.path.plugin
            do {
                try channel.requestAcknowledged(
                    .switchInReady(
                        txRegions: plugin.reportedRegions(rx: false), rxRegions: plugin.reportedRegions(rx: true),
                        plugin: lease.pluginDescription))
            } catch {
                return stepFailed(error)
            }
            record.note("VF queues initialised by the PF driver from our regions")
            return step { try $0.vfPrepared() }
        case .activateVF(let lease):
            lease.path.refillAll()
            _ = emulationPath.flush(timeoutMilliseconds: 5000)
            do {
                try device.activateVF()
            } catch {
                return stepFailed(error)
            }
            return step { try $0.vfActivated() }
        case .drainEmulation:
            // From the host's reply on, nothing more arrives on the emulated rings. Quiesce the
            // emulated device too: its rings still hold descriptors for buffers we are about to
            // reuse, and if the host ever hands the MAC back before we re-arm (a VF reset), frames
            // must be refused and counted, not written into those buffers. Then harvest.
            record.note("ACTIVATE_VF done: the MAC is on the VF")
            _ = try? device.quiesce()
            let harvested = emulationPath.quiesceAndDrain()
            record.note(
                "emulated rings harvested: \(harvested.received.count) frames to deliver, \(harvested.unsent.reduce(0) { $0 + $1.count }) to re-send"
            )
            return step { try $0.emulationDrained(harvested) }
        case .completeSwitchIn(let lease, let drained):
            _ = lease.path.adopt(drained)
            installInterruptHook(lease.path)
            activePath = lease.path
            record.completed(switchIn: true, milliseconds: Double(Clock.monotonicNanoseconds() - startedAt) / 1e6, mode: mode)
            return nil
        case .abandonSwitchIn(let reason, let cleanup):
            switch cleanup {
            case .nothing: break
            case .reclaimPostedRxBuffers(let lease): _ = lease.path.plugin.reclaimPostedRxBuffers()
            case .drainVF(let lease): _ = lease.path.quiesceAndDrain()
            }
            _ = try? channel.requestAcknowledged(.switchInFailed(reason: reason))
            record.failed(reason, mode: mode)
            return nil
        case .rearmEmulation:
            do {
                try device.reset()
                let ops = emulationPath.plugin.ops, state = emulationPath.plugin.state
                for q in 0..<emulationPath.txQueueCount { _ = ops.reinit_tx_ring!(state, UInt32(q)) }
                for q in 0..<emulationPath.rxQueueCount { _ = ops.reinit_rx_ring!(state, UInt32(q)) }
                emulationPath.refillAll()
                try device.reactivate()
            } catch {
                return stepFailed(error)
            }
            record.note("emulation re-armed (RESET, fresh rings, ACTIVATE)")
            return step { try $0.emulationRearmed() }
        case .beginSwitchOut:
            do {
                try channel.requestAcknowledged(.switchOutBegin)
            } catch {
                return stepFailed(error)
            }
            record.note("VF quiesced, MAC back on the vswitch")
            return step { try $0.switchOutBegun() }
        case .drainVF(let lease):
            let drained = lease.path.quiesceAndDrain()
            record.note(
                "VF drained: \(drained.received.count) frames to deliver, \(drained.unsent.reduce(0) { $0 + $1.count }) to re-send, \(drained.reclaimedRxBuffers) buffers back"
            )
            return step { try $0.vfDrained(drained) }
        case .finishSwitchOut(let drained, _):
            // The lease goes with this action: the VF path is drained, nothing uses it any more.
            _ = emulationPath.adopt(drained)
            activePath = emulationPath
            do {
                try channel.requestAcknowledged(.switchOutDone)
            } catch {
                return stepFailed(error)
            }
            return step { try $0.switchOutDone() }
        case .completeSwitchOut:
            record.completed(switchIn: false, milliseconds: Double(Clock.monotonicNanoseconds() - startedAt) / 1e6, mode: mode)
            return nil
        case .recordFailure(let reason):
            record.failed(reason, mode: mode)
            return nil
        case .reportPluginFault(let reason):
            record.note("plugin fault: \(reason)")
            _ = try? channel.requestAcknowledged(.pluginFault(reason: reason))
            return nil
        case .moveToHost(let destination):
            // The device on the source is stopped: what the guest posted since stays in its rings
            // (guest memory, which moves with it) for the destination's device.
            let arrival: ControlChannel
            do {
                arrival = try ControlChannel.resuming(
                    at: destination, attachment: attachment, timeoutMilliseconds: channel.timeoutMilliseconds)
            } catch {
                return stepFailed(error)
            }
            // Committed: the vNIC runs on the destination. The source hears it and tears its vNIC
            // down (if it is gone already, there is no one left to tell); its connection closes
            // when the former socket is released, after the data paths watch the new one.
            _ = try? channel.requestAcknowledged(.moved)
            let source = channel.link.socketPath
            _ = channel.adoptConnection(of: arrival)
            record.note("resumed on \(destination.controlSocket) as vNIC \(channel.vnicID), left \(source)")
            return step { try $0.moveCompleted() }
        case .completeMove:
            record.completedMove(milliseconds: Double(Clock.monotonicNanoseconds() - startedAt) / 1e6, host: channel.link.socketPath)
            return nil
        case .abandonMove(let reason):
            _ = try? channel.requestAcknowledged(.moveFailed(reason: reason))
            record.moveFailed(reason)
            return nil
        }
    }

    /// `switchQuery`, and the host's offer as the next event.
    private func query() -> Machine.Action {
        let reply: ControlMessage, fds: [FileDescriptor]
        do {
            (reply, fds) = try channel.request(.switchQuery)
        } catch {
            return stepFailed(error)
        }
        guard case .switchOffer(let offer) = reply else {
            for fd in fds { try? fd.close() }
            return step { try $0.noChangeOffered() }
        }
        switch offer.kind {
        case .none:
            for fd in fds { try? fd.close() }
            record.note("host offers no change")
            return step { try $0.noChangeOffered() }
        case .switchIn:
            record.note("host offers switch-in to VF \(offer.vf) (\(offer.model), plugin \(offer.plugin))")
            let switchIn: SwitchInOffer
            do {
                switchIn = try SwitchInOffer(fds, plugin: offer.plugin, model: offer.model)
            } catch {
                return stepFailed(error)
            }
            do {
                return try machine.switchInOffered(switchIn)
            } catch {
                switchIn.close()
                return stepFailed(error)
            }
        case .switchOut:
            for fd in fds { try? fd.close() }
            record.note("host asks for switch-out")
            return step { try $0.switchOutOffered() }
        case .move:
            for fd in fds { try? fd.close() }
            guard let destination = offer.destination else {
                return stepFailed(HostRefusal(code: 0, message: "a move offer without a destination"))
            }
            record.note("host offers a move to \(destination.controlSocket)")
            return step { try $0.moveOffered(destination) }
        }
    }

    /// Whether the active VF plugin reported a fault the host has not heard of yet.
    private var hasUnreportedFault: Bool { activePath.plugin.deviceFault != nil && machine.mayReportPluginFault }

    /// A wait on the interrupt line returns early for DIC or an unreported plugin fault.
    private func installInterruptHook(_ path: ShellDataPath) {
        let ecr = device.eventRegister
        path.interruptHook = { [unowned self] in
            SharedWord.loadAcquire(ecr) & VMXNET3.Event.deviceImplementationChange != 0 || self.hasUnreportedFault
        }
    }
}
