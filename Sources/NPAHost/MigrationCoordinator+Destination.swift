import NPAControlProtocol
import NPAMigration
import NPASystem

/// The destination's side of the coordinator: its checks of a `prepare`, the arrival, the
/// forwarded frames and the actions of `MigrationDestinationMachine`. Host thread only.
extension MigrationCoordinator {
    func serviceChannel(_ m: Incoming) {
        let connection = m.connection
        let now = Clock.monotonicNanoseconds()
        let messages = Self.exchange(on: connection)
        for message in messages {
            guard incoming[m.id] != nil else { return }
            switch message {
            case .prepare(let request):
                m.request = request
                if let refusal = refusalToPrepare(request) {
                    step(m, .prepareRefused(refusal), now)
                } else {
                    let token = MoveToken.random()
                    m.token = token
                    step(m, .prepareAccepted(token: token.bytes), now)
                }
            case .deviceState(let bytes):
                guard let token = m.token, let request = m.request else {
                    step(m, .abort("device state before prepare"), now)
                    continue
                }
                do {
                    let (name, _) = try host.expectArrival(
                        stateBytes: bytes, token: token, timeoutNanoseconds: limits.phaseMilliseconds * 1_000_000)
                    if name != request.guestName {
                        host.cancelArrival(token: token)
                        step(m, .stateRefused("the device state is guest '\(name)''s, not '\(request.guestName)''s"), now)
                    } else {
                        step(m, .stateAccepted, now)
                    }
                } catch {
                    step(m, .stateRefused("\(error)"), now)
                }
            case .frames(let frames):
                guard let device = m.device else {
                    step(m, .abort("frames before the guest arrived"), now)
                    continue
                }
                m.framesForwarded &+= UInt64(host.dataPath.deliverForwarded(frames, to: device))
                step(m, .forwardedFrames, now)
            case .forwardingDone: step(m, .forwardingDone, now)
            case .abort(let reason): step(m, .abort(reason), now)
            case .refused(let reason): step(m, .abort(reason), now)
            default: step(m, .abort("unexpected message \(message)"), now)
            }
        }
        if incoming[m.id] != nil, connection.isClosed {
            step(m, .channelLost(Self.closeReason(connection)), now)
        }
    }

    /// What this host says to a `prepare` before anything stops at the source: the name and MAC
    /// free here, the MAC, VLANs and queues within this host's policy. The device state is
    /// checked again, whole, when it comes (`expectArrival`).
    func refusalToPrepare(_ r: MigrationRequest) -> String? {
        guard GuestName.isValid(r.guestName) else { return "'\(r.guestName)' is no guest name" }
        if r.sourceHost == host.socketPath { return "the source is this host" }
        if host.dataPath.device(named: r.guestName) != nil { return "a guest named '\(r.guestName)' is already here" }
        if host.dataPath.devices.contains(where: { $0.mac == r.mac }) { return "MAC \(r.mac) is in use here" }
        let policy = host.server.policies.policy(forGuest: r.guestName)
        guard policy.allows(mac: r.mac) else { return "this host's policy does not allow guest '\(r.guestName)' MAC \(r.mac)" }
        if let vlan = r.vlans.first(where: { !policy.allowedVLANs.contains($0) }) {
            return "this host's policy does not allow guest '\(r.guestName)' VLAN \(vlan)"
        }
        let queues = Int(max(r.transmitQueues, r.receiveQueues))
        if queues > host.configuration.maxQueuesPerVNIC {
            return "guest '\(r.guestName)' has \(queues) queues, this host allows \(host.configuration.maxQueuesPerVNIC) (max_queues)"
        }
        return nil
    }

    func step(_ m: Incoming, _ event: MigrationDestinationMachine.Event, _ now: UInt64) {
        do {
            let before = m.machine.phase
            let actions = try m.machine.handle(event, now: now)
            notePhase(m, since: before, now: now)
            perform(actions, for: m)
        } catch {
            logger.debug("migration \(m.id): \(error)")
        }
        heardAnnouncementIfWritten(m, now)
    }

    /// The machine hears of the first announcement round once the wires wrote it.
    func heardAnnouncementIfWritten(_ m: Incoming, _ now: UInt64) {
        guard m.announcementFlush?.poll() == true else { return }
        m.announcementFlush = nil
        step(m, .announced, now)
    }

    func perform(_ actions: [MigrationDestinationMachine.Action], for m: Incoming) {
        for action in actions {
            switch action {
            case .sendPrepared(let token):
                send(.prepared(token: token, controlSocket: host.socketPath), on: m)
            case .sendRefused(let why):
                send(.refused(reason: why), on: m)
            case .sendStateAccepted:
                send(.stateAccepted, on: m)
            case .cancelArrival:
                if let token = m.token { host.cancelArrival(token: token) }
            case .holdDirectFramesAndAnnounce:
                guard let device = m.device else { continue }
                host.dataPath.beginForwarding(for: device)
                host.dataPath.announceSelf(device)
                // The first round was queued with that call (QEMU's schedule starts at once).
                m.announcementFlush = WireFlushFence(dataPath: host.dataPath)
            case .sendGuestArrived:
                send(.guestArrived, on: m)
            case .sendAnnounced:
                send(.announced, on: m)
            case .deliverForwardedFrames:
                break  // delivered as the message came (`serviceChannel`), before newer frames
            case .endForwarding:
                if let device = m.device { host.dataPath.endForwarding(for: device) }
            case .switchInIfAllowed:
                switchInIfAllowed(m)
            case .closeChannel:
                close(m)
            }
        }
    }

    func switchInIfAllowed(_ m: Incoming) {
        guard let device = m.device, m.request?.wasPassthrough == true || host.configuration.autoPassthrough else { return }
        pendingSwitchIns.append((m.id, device))
        switchInPending(now: Clock.monotonicNanoseconds())
    }

    /// Switches in the arrived guests whose parked frames are delivered; drops those that left.
    func switchInPending(now: UInt64) {
        pendingSwitchIns.removeAll { id, device in
            guard host.dataPath.devices.contains(where: { $0 === device }) else { return true }
            guard device.switchOverflow == nil else { return false }
            switchIn(device, migration: id)
            return true
        }
    }

    func switchIn(_ device: EmulatedDevice, migration id: UInt64) {
        if let refusal = host.admission.admitSwitch(toPassthrough: true, for: device) {
            logger.info("migration \(id): '\(device.name)' stays emulated here: \(refusal)")
            return
        }
        if case .failure(let refusal) = host.pfDriver.requestSwitch(device, toPassthrough: true) {
            logger.info("migration \(id): '\(device.name)' stays emulated here: \(refusal)")
        }
    }

    func send(_ message: MigrationMessage, on m: Incoming) {
        guard !m.connection.isClosed else { return }
        do { try m.connection.send(message) } catch {
            logger.debug("migration \(m.id): send failed: \(error)")
        }
    }

    func close(_ m: Incoming) {
        if m.connection.wantsWrite { try? m.connection.flush() }
        host.loop.epoll.remove(m.connection.fd)
        m.connection.close()
        guard m.machine.isFinished else { return }
        incoming[m.id] = nil
        remember(status(of: m, now: Clock.monotonicNanoseconds()))
        let name = m.request?.guestName ?? "?"
        switch m.machine.state {
        case .failed(let why): logger.warning("migration \(m.id) of '\(name)' to this host failed: \(why)")
        default: logger.info("migration \(m.id): '\(name)' arrived and runs here")
        }
    }
}
