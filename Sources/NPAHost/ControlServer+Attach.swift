import NPAControlProtocol
import NPANICModel
import NPARingFormats
import NPASystem
import SystemPackage

/// How a guest's connection gets its vNIC: `attach` makes a new one; `resume` takes the one
/// restored from the state another host sent (the guest presents the one-time token the move
/// offer gave it). Both check every descriptor the guest hands over as the other does.
extension ControlServer {
    func attach(_ c: Connection, _ request: ControlMessage.AttachRequest, _ fds: [FileDescriptor]) {
        func refuse(_ refusal: ControlRefusal) {
            for fd in fds { try? fd.close() }
            logger.warning("attach of '\(request.name)' refused: \(refusal)")
            reply(c, refusal.reply, about: request.name)
        }
        guard c.device == nil else { return refuse(.alreadyAttached) }
        // An arrival whose deadline passed no longer holds its guest's name and MAC.
        releaseExpiredArrivals()
        let vectors = Int(request.interruptVectors)
        guard (1...VMXNET3.RegisterPage.maximumVectors).contains(vectors) else {
            return refuse(.interruptVectors(vectors))
        }
        guard fds.count == 2 + vectors else {
            return refuse(.descriptorCount(expected: 2 + vectors, vectors: vectors, got: fds.count))
        }
        let name = request.name
        guard GuestName.isValid(name) else {
            return refuse(.invalidGuestName)
        }
        // A guest arriving from another host holds its name until it resumes here.
        guard dataPath.device(named: name) == nil, !arrivals.holds(name: name) else {
            return refuse(.guestNameInUse(name))
        }
        let policy = policies.policy(forGuest: name)
        let mac: MACAddress
        switch admission.chooseMAC(requested: request.mac, guest: name, policy: policy, candidate: nextVNICID) {
        case .success(let chosen): mac = chosen
        case .failure(let refusal): return refuse(.admission(refusal))
        }
        let region: SharedMemory
        do {
            region = try SharedMemory(adopting: fds[0], minimumSize: 1 << 20, maximumSize: 1 << 34)
        } catch {
            for fd in fds.dropFirst() { try? fd.close() }
            logger.warning("attach of '\(name)' refused: guest memory: \(error)")
            return reply(c, ControlRefusal.guestMemory("\(error)").reply, about: name)
        }
        let device: EmulatedDevice
        do {
            device = try EmulatedDevice(
                id: nextVNICID, name: name, mac: mac, policy: policy, region: region,
                doorbell: EventNotifier(adopting: fds[1]), interrupts: fds[2...].map { EventNotifier(adopting: $0) },
                maxQueues: configuration.maxQueuesPerVNIC, vswitch: dataPath.vswitch, admission: admission, logger: logger)
            try epoll.add(device.doorbell.fd, tag: HostEventTag.doorbell(device.id))
        } catch {
            return reply(c, ControlRefusal.vnicCreation("\(error)").reply, about: name)
        }
        device.receiverStallLimitNanoseconds = UInt64(configuration.receiverStallMilliseconds) * 1_000_000
        device.switchStallLimitNanoseconds = UInt64(configuration.switchTimeoutMilliseconds) * 1_000_000
        nextVNICID += 1
        c.device = device
        dataPath.add(device)
        logger.info("attached guest '\(name)' as vNIC \(device.id), MAC \(mac), \(region.size >> 20) MiB")
        noteAttached(device, memoryMiB: region.size >> 20, resumed: false)
        reply(
            c,
            .attached(
                .init(
                    vnicID: device.id, mac: mac, maxTxQueues: UInt8(configuration.maxQueuesPerVNIC),
                    maxRxQueues: UInt8(configuration.maxQueuesPerVNIC))), descriptors: [device.registerPage.fd])
    }

    /// A guest whose vNIC moved here re-attaches: it presents the token the source host's move
    /// offer gave it with its memory, doorbell, interrupt eventfds and register page, and the
    /// device is restored from the state `expectArrival` validated and the guest's handles.
    /// The token is spent whatever happens next; a failure after it is an `arrivalFailed`.
    func resume(_ c: Connection, _ request: ControlMessage.ResumeRequest, _ fds: [FileDescriptor]) {
        func refuse(_ refusal: ControlRefusal, arrival: String? = nil) {
            for fd in fds { try? fd.close() }
            logger.warning("resume of '\(request.name)' refused: \(refusal)")
            if let arrival { report(.arrivalFailed(name: arrival, reason: refusal.description)) }
            reply(c, refusal.reply, about: request.name)
        }
        guard c.device == nil else { return refuse(.alreadyAttached) }
        var state: DeviceState
        switch arrivals.take(request.token, now: Clock.monotonicNanoseconds()) {
        case .arrival(let s): state = s
        case .expired(let s):
            admission.releaseReservation(of: s.identity.mac)
            return refuse(.moveToken(.expired(name: s.name)), arrival: s.name)
        case .unknown: return refuse(.moveToken(.unknown))
        }
        releaseExpiredArrivals()
        admission.releaseReservation(of: state.identity.mac)
        let name = state.name
        guard request.name == name else { return refuse(.moveTokenForAnotherGuest(request.name), arrival: name) }
        let vectors = Int(state.interrupts.vectorCount)
        guard Int(request.interruptVectors) == vectors else {
            return refuse(.interruptVectors(Int(request.interruptVectors)), arrival: name)
        }
        // Memory, doorbell, one eventfd per vector, the register page.
        guard fds.count == 3 + vectors else {
            return refuse(.resumeDescriptorCount(expected: 3 + vectors, vectors: vectors, got: fds.count), arrival: name)
        }
        let region: SharedMemory, page: SharedMemory
        do {
            region = try SharedMemory(adopting: fds[0], minimumSize: 1 << 20, maximumSize: 1 << 34)
        } catch {
            for fd in fds.dropFirst() { try? fd.close() }
            return refuse(.guestMemory("\(error)"), arrival: name)
        }
        do {
            page = try SharedMemory(
                adopting: fds[2 + vectors], minimumSize: VMXNET3.RegisterPage.size, maximumSize: VMXNET3.RegisterPage.size)
        } catch {
            for fd in fds[1..<(2 + vectors)] { try? fd.close() }
            return refuse(.registerPage("\(error)"), arrival: name)
        }
        // The id is this host's: the source's may be taken here (it tags the doorbell in epoll).
        state.identity.id = nextVNICID
        let policy = policies.policy(forGuest: name)
        let handles = EmulatedDevice.Handles(
            region: region, doorbell: EventNotifier(adopting: fds[1]),
            interrupts: fds[2..<(2 + vectors)].map { EventNotifier(adopting: $0) },
            registerPage: page, port: nil)
        let device: EmulatedDevice
        do {
            device = try EmulatedDevice(
                restoring: state, handles: handles, policy: policy, maxQueues: configuration.maxQueuesPerVNIC, vswitch: dataPath.vswitch,
                admission: admission, logger: logger)
        } catch {
            logger.warning("resume of '\(name)' refused: \(error)")
            report(.arrivalFailed(name: name, reason: "\(error)"))
            return reply(c, ControlRefusal.vnicCreation("\(error)").reply)
        }
        do {
            try epoll.add(device.doorbell.fd, tag: HostEventTag.doorbell(device.id))
        } catch {
            device.detach()  // its vswitch port goes with it
            report(.arrivalFailed(name: name, reason: "\(error)"))
            return reply(c, ControlRefusal.vnicCreation("\(error)").reply)
        }
        device.receiverStallLimitNanoseconds = UInt64(configuration.receiverStallMilliseconds) * 1_000_000
        device.switchStallLimitNanoseconds = UInt64(configuration.switchTimeoutMilliseconds) * 1_000_000
        // The page says what the source's engine last did. This host's engine is awake while it
        // serves a message (the loop clears every device's flag on waking), and announces its
        // next sleep to every device, this one included: as for a new page at attach, it polls.
        device.setSleeping(false)
        nextVNICID += 1
        c.device = device
        dataPath.add(device)
        logger.info("guest '\(name)' resumed here as vNIC \(device.id), MAC \(device.mac), \(region.size >> 20) MiB")
        noteAttached(device, memoryMiB: region.size >> 20, resumed: true)
        reply(
            c,
            .attached(
                .init(
                    vnicID: device.id, mac: device.mac, maxTxQueues: UInt8(configuration.maxQueuesPerVNIC),
                    maxRxQueues: UInt8(configuration.maxQueuesPerVNIC))))
        report(.arrived(name: name))
    }

    /// Arrivals whose deadline passed give their guest's name and MAC back.
    func releaseExpiredArrivals() {
        for state in arrivals.removeExpired(now: Clock.monotonicNanoseconds()) {
            admission.releaseReservation(of: state.identity.mac)
            logger.info("the arrival of guest '\(state.name)' expired")
            report(.arrivalFailed(name: state.name, reason: "the guest did not resume before the deadline"))
        }
    }

    /// Tells the orchestration (if it listens) what became of a move.
    func report(_ event: MoveEvent) {
        migrations?.moveEvent(event)
        moveEventHandler?(event)
    }
}
