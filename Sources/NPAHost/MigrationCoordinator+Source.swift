import NPAControlProtocol
import NPAMigration
import NPASystem

/// The source's side of the coordinator: its channel to the destination and the actions of
/// `MigrationSourceMachine` (prepare, switch out, stop and hold, offer the move, forward, release
/// or roll back). Host thread only.
extension MigrationCoordinator {

    func serviceChannel(_ m: Outgoing) {
        guard let connection = m.connection else { return }
        let now = Clock.monotonicNanoseconds()
        let messages = Self.exchange(on: connection)
        if !m.connected && connection.isEstablished {
            m.connected = true
            step(m, .connected, now)
        }
        for message in messages {
            guard outgoing[m.id] != nil else { return }
            switch message {
            case .prepared(let token, let socket): step(m, .prepared(.init(token: token, controlSocket: socket)), now)
            case .refused(let reason): step(m, .refused(reason), now)
            case .stateAccepted: step(m, .stateAccepted, now)
            case .guestArrived: step(m, .guestArrived, now)
            case .announced:
                m.lastFrameOrAnnouncement = now
                if m.wireFence == nil { m.wireFence = WireDrainFence(dataPath: host.dataPath) }
                step(m, .announced, now)
            case .abort(let reason): step(m, .refused(reason), now)
            default: step(m, .refused("unexpected message \(message)"), now)
            }
        }
        if outgoing[m.id] != nil, connection.isClosed {
            step(m, .channelLost(Self.closeReason(connection)), now)
        }
    }

    func step(_ m: Outgoing, _ event: MigrationSourceMachine.Event, _ now: UInt64) {
        do {
            let before = m.machine.phase
            let actions = try m.machine.handle(event, now: now)
            notePhase(m, since: before, now: now)
            perform(actions, for: m)
        } catch {
            logger.debug("migration \(m.id): \(error)")
        }
    }

    func perform(_ actions: [MigrationSourceMachine.Action], for m: Outgoing) {
        for action in actions {
            switch action {
            case .sendPrepare:
                guard let device = host.dataPath.device(named: m.name) else {
                    step(m, .guestGone, Clock.monotonicNanoseconds())
                    return
                }
                send(.prepare(prepareRequest(device)), on: m)
            case .switchOut:
                switchOut(m)
            case .stopHoldAndSendState:
                stopHoldAndSendState(m)
            case .offerMove(let ticket):
                do {
                    try host.offerMove(named: m.name, controlSocket: ticket.controlSocket, token: MoveToken(bytes: ticket.token))
                } catch {
                    step(m, .guestMoveFailed("\(error)"), Clock.monotonicNanoseconds())
                }
            case .forwardHeldFrames:
                forwardHeldFrames(m)
            case .sendForwardingDone:
                send(.forwardingDone, on: m)
            case .releaseVNIC:
                if let device = m.device {
                    let left = host.dataPath.heldFrameCount(for: device)
                    m.framesLost &+= UInt64(left)
                    host.dataPath.stopHolding(for: device, then: .discard)
                    host.releaseDeparted(named: m.name)
                }
            case .resumeDevice:
                resumeDevice(m)
            case .switchBackIn:
                switchBackIn(m)
            case .sendAbort(let reason):
                send(.abort(reason: reason), on: m)
            case .closeChannel:
                close(m)
            }
        }
    }

    func prepareRequest(_ d: EmulatedDevice) -> MigrationRequest {
        MigrationRequest(
            guestName: d.name, mac: d.mac, multicast: d.multicast.sorted(), vlans: d.vlans.sorted(), rxMode: d.rxMode.rawValue,
            mtu: UInt32(d.mtu), transmitQueues: UInt8(d.txQueues.count), receiveQueues: UInt8(d.rxQueues.count),
            wasPassthrough: d.switching.isPassthrough, sourceHost: host.socketPath)
    }

    func switchOut(_ m: Outgoing) {
        guard let device = host.dataPath.device(named: m.name) else { return step(m, .guestGone, Clock.monotonicNanoseconds()) }
        switch host.pfDriver.requestSwitch(device, toPassthrough: false) {
        case .success: waitingForSwitchOut.insert(m.id)
        case .failure(let refusal): step(m, .switchOutFailed("\(refusal)"), Clock.monotonicNanoseconds())
        }
    }

    func stopHoldAndSendState(_ m: Outgoing) {
        let now = Clock.monotonicNanoseconds()
        // Frames parked at its last switch point go to its ring first (a device is saved only
        // without them); `service` comes back here once they have.
        if let device = host.dataPath.device(named: m.name), device.switchOverflow != nil {
            waitingToStop.insert(m.id)
            return
        }
        let bytes: [UInt8]
        do {
            bytes = try host.beginDeparture(named: m.name, retainingAfterMove: true)
        } catch {
            return step(m, .refused("the vNIC cannot leave: \(error)"), now)
        }
        m.device = host.dataPath.device(named: m.name)
        m.stoppedAt = now
        if let device = m.device { host.dataPath.holdFrames(for: device) }
        send(.deviceState(bytes), on: m)
    }

    func forwardHeldFrames(_ m: Outgoing) {
        guard let device = m.device, let connection = m.connection, !connection.isClosed else { return }
        while true {
            let frames = host.dataPath.takeHeldFrames(for: device, max: Self.framesPerMessage)
            if frames.isEmpty { return }
            m.framesForwarded &+= UInt64(frames.count)
            m.lastFrameOrAnnouncement = Clock.monotonicNanoseconds()
            for message in MigrationMessage.framesMessages(frames) { send(message, on: m) }
        }
    }

    func resumeDevice(_ m: Outgoing) {
        if let device = m.device {
            host.dataPath.stopHolding(for: device, then: .deliverToDevice)
        }
        do { try host.abortDeparture(named: m.name) } catch {
            logger.debug("migration \(m.id): abort of the departure: \(error)")
        }
    }

    func switchBackIn(_ m: Outgoing) {
        guard let device = host.dataPath.device(named: m.name) else { return }
        if case .failure(let refusal) = host.pfDriver.requestSwitch(device, toPassthrough: true) {
            logger.warning("migration \(m.id): vNIC '\(m.name)' stays emulated after the failed migration: \(refusal)")
        }
    }

    func send(_ message: MigrationMessage, on m: Outgoing) {
        guard let connection = m.connection, !connection.isClosed else { return }
        do { try connection.send(message) } catch {
            logger.debug("migration \(m.id): send failed: \(error)")
        }
    }

    func close(_ m: Outgoing) {
        if let connection = m.connection {
            if connection.wantsWrite { try? connection.flush() }
            host.loop.epoll.remove(connection.fd)
            connection.close()
        }
        m.connection = nil
        guard m.machine.isFinished else { return }
        outgoing[m.id] = nil
        waitingForSwitchOut.remove(m.id)
        waitingToStop.remove(m.id)
        remember(status(of: m, now: Clock.monotonicNanoseconds()))
        switch m.machine.state {
        case .failed(let why): logger.warning("migration \(m.id) of '\(m.name)' failed: \(why)")
        default: logger.info("migration \(m.id): '\(m.name)' now runs at \(m.destination)")
        }
    }
}
