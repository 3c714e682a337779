import Foundation
import NPAControlProtocol
@testable import NPAHost
import NPAShell
import NPASystem
import NPATestSupport
import NPAWorkload
import Testing

/// Moves that do not happen: a destination that refuses the guest, a token that is wrong, used
/// or expired, a guest that presents the right token with the wrong descriptors, a guest that
/// goes away while it leaves. The guest stays where it was, working, and neither host keeps
/// anything for the move.
@Suite(.serialized) struct MoveRefusalTests {
    /// A wrong token, a used one and an expired one are refused by the destination and counted;
    /// the guest stays on the source and keeps working there.
    @Test func aBadUsedOrExpiredTokenIsRefusedAndTheGuestStaysWorking() throws {
        let hosts = try TwoHosts()
        defer { hosts.stop() }
        let (a, b, orchestration) = (hosts.a, hosts.b, hosts.orchestration)
        let first = try MoveBetweenHostsTests.attach(a, "first"), stayer = try MoveBetweenHostsTests.attach(a, "stayer"),
            peer = try MoveBetweenHostsTests.attach(a, "peer")
        let used = try orchestration.move("first", driving: first)
        #expect(first.hostSocket == b.socketPath)
        var verifier = FlowVerifier()
        var sequence: UInt64 = 0

        let cases: [(String, (MoveToken) throws -> MoveToken)] = [
            ("wrong", { _ in MoveToken.random() }),
            ("used", { _ in used }),
        ]
        for (label, presented) in cases {
            let expected = try orchestration.prepare("stayer")
            try orchestration.offer("stayer", token: try presented(expected))
            stayer.reclaimTransmitted()
            #expect(stayer.hostSocket == a.socketPath, "\(label)")
            #expect(stayer.lastMoveError?.contains("not one this host expects") == true, "\(label): \(stayer.lastMoveError ?? "none")")
            #expect(try orchestration.events(a).last == .moveFailed(name: "stayer", reason: stayer.lastMoveError ?? ""), "\(label)")
            #expect(try b.onHostThread { $0.cancelArrival(token: expected) })
            sequence += UInt64(MoveBetweenHostsTests.stream(300, flow: 0, from: stayer, to: peer, first: sequence, into: &verifier))
        }
        // Expired: the destination's deadline passed before the guest came.
        let token = MoveToken.random()
        try orchestration.prepare("stayer", token: token, timeoutNanoseconds: 0)
        try orchestration.offer("stayer", token: token)
        stayer.reclaimTransmitted()
        #expect(stayer.hostSocket == a.socketPath)
        #expect(stayer.lastMoveError?.contains("expired") == true, "\(stayer.lastMoveError ?? "none")")
        #expect(try orchestration.events(b).last == .arrivalFailed(name: "stayer", reason: stayer.lastMoveError ?? ""))
        sequence += UInt64(MoveBetweenHostsTests.stream(300, flow: 0, from: stayer, to: peer, first: sequence, into: &verifier))
        let back = MoveBetweenHostsTests.stream(300, flow: 1, from: peer, to: stayer, into: &verifier)

        #expect(sequence == 900 && back == 300 && verifier.unique == 1200 && MoveBetweenHostsTests.isClean(verifier))
        #expect(stayer.moveDurations.isEmpty && stayer.mode == "emulated")
        let refused = try b.onHostThread { $0.refusedMoveTokens }
        #expect(refused.unknown == 2 && refused.expired == 1)
        // Nothing is held for the guest any more: its name and MAC are free on the destination.
        #expect(try b.onHostThread { $0.pendingArrivalCount == 0 && $0.admission.reservedMACs.isEmpty })
        #expect(try a.onHostThread { $0.departingVNICs.isEmpty })
    }

    /// The destination refuses a guest whose MAC a vNIC there owns; the orchestration calls the
    /// departure off and the guest carries on on the source, never offered a move.
    @Test func aDestinationThatRefusesLeavesTheGuestOnTheSourceWorking() throws {
        let hosts = try TwoHosts()
        defer { hosts.stop() }
        let (a, b, orchestration) = (hosts.a, hosts.b, hosts.orchestration)
        let mac = "02:aa:bb:cc:dd:02"
        let guest = try MoveBetweenHostsTests.attach(a, "guest", mac: mac), peer = try MoveBetweenHostsTests.attach(a, "peer")
        let owner = try MoveBetweenHostsTests.attach(b, "owner", mac: mac)
        let bytes = try a.onHostThread { try $0.beginDeparture(named: "guest") }
        #expect(throws: ArrivalRefusal.admission("MAC \(mac) is already used by another vNIC")) {
            try b.onHostThread { try $0.expectArrival(stateBytes: bytes, token: .random()) }
        }
        try a.onHostThread { try $0.abortDeparture(named: "guest") }
        expectStreamsBothWays(500, between: guest, and: peer)
        #expect(guest.hostSocket == a.socketPath && guest.moveDurations.isEmpty && guest.lastMoveError == nil)
        #expect(try orchestration.events(a).isEmpty && orchestration.events(b).isEmpty)
        #expect(try owner.linkIsUp())
        // A guest that was not offered a move cannot say it moved.
        #expect(throws: DepartureRefusal.notLeaving("guest")) {
            try a.onHostThread { try $0.offerMove(named: "guest", controlSocket: b.socketPath, token: .random()) }
        }
    }

    /// While the vNIC is leaving, the source refuses a configuration change (it would not travel
    /// with the saved state); after the departure is called off the change goes through.
    @Test func aLeavingVNICsConfigurationCannotChange() throws {
        let a = try MoveBetweenHostsTests.host()
        defer { a.stop() }
        let guest = try MoveBetweenHostsTests.attach(a, "guest")
        _ = try a.onHostThread { try $0.beginDeparture(named: "guest") }
        #expect(throws: HostRefusal.self) { try guest.setVLANs([0, 10]) }
        try a.onHostThread { try $0.abortDeparture(named: "guest") }
        try guest.setVLANs([0, 10])
        #expect(try a.onHostThread { $0.device(named: "guest")?.vlans } == [0, 10])
    }

    /// A destination the guest cannot reach (no socket at the path): the guest tells the source
    /// the move failed and stays there, working; the orchestration calls the arrival off.
    @Test func anUnreachableDestinationLeavesTheGuestOnTheSourceWorking() throws {
        let hosts = try TwoHosts()
        defer { hosts.stop() }
        let (a, b, orchestration) = (hosts.a, hosts.b, hosts.orchestration)
        let guest = try MoveBetweenHostsTests.attach(a, "guest"), peer = try MoveBetweenHostsTests.attach(a, "peer")
        let token = try orchestration.prepare("guest")
        let nowhere = TestHost.freshSocketPath()
        try a.onHostThread { try $0.offerMove(named: "guest", controlSocket: nowhere, token: token) }
        guest.reclaimTransmitted()
        #expect(guest.hostSocket == a.socketPath && guest.moveDurations.isEmpty)
        let error = try #require(guest.lastMoveError)
        #expect(try orchestration.events(a) == [.moveFailed(name: "guest", reason: error)])
        #expect(try b.onHostThread { $0.cancelArrival(token: token) })
        expectStreamsBothWays(200, between: guest, and: peer)
        #expect(try a.onHostThread { $0.departingVNICs.isEmpty })
    }

    /// Once the guest took the offer it may be resuming on the destination: the source refuses
    /// to call the departure off (its device must not run in two places) until the guest
    /// answers. Here the "destination" takes the guest's resume and hangs up without answering:
    /// the guest then says the move failed and stays on the source, working.
    @Test func aDepartureIsNotCalledOffWhileTheGuestIsResumingElsewhere() throws {
        let hosts = try TwoHosts()
        defer { hosts.stop() }
        let (a, b, orchestration) = (hosts.a, hosts.b, hosts.orchestration)
        let guest = try MoveBetweenHostsTests.attach(a, "guest"), peer = try MoveBetweenHostsTests.attach(a, "peer")
        let path = TestHost.freshSocketPath()
        let impostor = try SeqPacketSocket.listen(path: path)
        defer { unlink(path) }
        let token = try orchestration.prepare("guest")
        try a.onHostThread { try $0.offerMove(named: "guest", controlSocket: path, token: token) }
        let outcome = ResumeWitness()
        let thread = EngineThread.start(name: "impostor") {
            // Blocking accept: the guest is connecting from inside its data-path call.
            guard let connection = try? impostor.accept(), let (bytes, fds) = try? connection.receive() else { return }
            for fd in fds { try? fd.close() }
            outcome.resume = try? ControlMessage.parse(bytes)
            do {
                try a.onHostThread { try $0.abortDeparture(named: "guest") }
                outcome.abortRefusal = "none: the departure was called off"
            } catch {
                outcome.abortRefusal = "\(error)"
            }
        }  // the connection closes here, unanswered
        guest.reclaimTransmitted()
        EngineThread.join(thread)
        #expect(outcome.resume == .resume(.init(token: token, name: "guest", interruptVectors: 1)))
        #expect(outcome.abortRefusal == DepartureRefusal.guestMoving("guest").description)
        #expect(guest.hostSocket == a.socketPath && guest.lastMoveError != nil)
        #expect(try orchestration.events(a) == [.moveFailed(name: "guest", reason: guest.lastMoveError ?? "")])
        expectStreamsBothWays(200, between: guest, and: peer)
        #expect(try b.onHostThread { $0.cancelArrival(token: token) })
    }

    /// Whoever presents the token first spends it, even with descriptors that do not fit: the
    /// destination refuses that resume and reports the arrival failed, and the guest's own
    /// resume then finds the token gone and stays on the source.
    @Test func aResumeWithTheWrongDescriptorsSpendsTheTokenAndChangesNothing() throws {
        let hosts = try TwoHosts()
        defer { hosts.stop() }
        let (a, b, orchestration) = (hosts.a, hosts.b, hosts.orchestration)
        let guest = try MoveBetweenHostsTests.attach(a, "guest"), peer = try MoveBetweenHostsTests.attach(a, "peer")
        let token = try orchestration.prepare("guest")
        let intruder = try SeqPacketSocket.connect(path: b.socketPath)
        try intruder.send(ControlMessage.resume(.init(token: token, name: "guest", interruptVectors: 1)).encode())
        #expect(intruder.waitReadable(timeoutMilliseconds: 10_000))
        let reply = try #require(try intruder.receive())
        #expect(try ControlMessage.parse(reply.bytes) == ControlRefusal.resumeDescriptorCount(expected: 4, vectors: 1, got: 0).reply)
        #expect(
            try orchestration.events(b) == [
                .arrivalFailed(name: "guest", reason: "resume needs 4 descriptors (memory, doorbell, 1 interrupts, register page), got 0")
            ])
        try orchestration.offer("guest", token: token)
        guest.reclaimTransmitted()
        #expect(guest.hostSocket == a.socketPath && guest.lastMoveError?.contains("not one this host expects") == true)
        var verifier = FlowVerifier()
        #expect(MoveBetweenHostsTests.stream(200, flow: 0, from: guest, to: peer, into: &verifier) == 200)
        #expect(verifier.unique == 200 && MoveBetweenHostsTests.isClean(verifier))
        #expect(try b.onHostThread { $0.pendingArrivalCount == 0 && $0.admission.reservedMACs.isEmpty && $0.dataPath.devices.isEmpty })
    }

    /// A guest that detaches while its vNIC is leaving ends the departure: the source reports
    /// the move failed and keeps nothing; the orchestration cancels the arrival.
    @Test func aGuestThatGoesAwayWhileLeavingEndsTheDeparture() throws {
        let hosts = try TwoHosts()
        defer { hosts.stop() }
        let (a, b, orchestration) = (hosts.a, hosts.b, hosts.orchestration)
        let guest = try MoveBetweenHostsTests.attach(a, "guest")
        let token = try orchestration.prepare("guest")
        guest.detach()
        let events = try eventually { try orchestration.events(a) }
        #expect(events.count == 1 && events.first?.name == "guest")
        if case .moveFailed(_, let reason) = events.first { #expect(reason.contains("connection closed")) }
        #expect(try a.onHostThread { $0.departingVNICs.isEmpty && $0.dataPath.devices.isEmpty })
        #expect(try b.onHostThread { $0.cancelArrival(token: token) && $0.admission.reservedMACs.isEmpty })
        #expect(try b.onHostThread { !$0.cancelArrival(token: token) }, "a cancelled arrival is gone")
    }

    /// Hosts A and B with the test's orchestration of moves from A to B; `stop()` them in a `defer`.
    struct TwoHosts {
        let a: SteppedTestHost
        let b: SteppedTestHost
        let orchestration: MoveOrchestration

        init() throws {
            let a = try MoveBetweenHostsTests.host()
            let b: SteppedTestHost
            do { b = try MoveBetweenHostsTests.host() } catch {
                a.stop()
                throw error
            }
            (self.a, self.b) = (a, b)
            do { orchestration = try MoveOrchestration(a, b) } catch {
                a.stop()
                b.stop()
                throw error
            }
        }

        func stop() {
            a.stop()
            b.stop()
        }
    }

    /// Streams `count` frames from `guest` to `peer`, then `count` back, and expects every one to
    /// arrive once, in order.
    func expectStreamsBothWays(
        _ count: Int, between guest: VirtualNIC, and peer: VirtualNIC, sourceLocation: SourceLocation = #_sourceLocation
    ) {
        var verifier = FlowVerifier()
        #expect(
            MoveBetweenHostsTests.stream(count, flow: 0, from: guest, to: peer, into: &verifier) == count, sourceLocation: sourceLocation)
        #expect(
            MoveBetweenHostsTests.stream(count, flow: 1, from: peer, to: guest, into: &verifier) == count, sourceLocation: sourceLocation)
        #expect(verifier.unique == 2 * count && MoveBetweenHostsTests.isClean(verifier), sourceLocation: sourceLocation)
    }

    /// Polls `body` until it returns something non-empty (the host serves the guest's hang-up on
    /// its own thread), within a generous bound.
    func eventually<T: Collection>(_ body: () throws -> T) throws -> T {
        let deadline = ContinuousClock.now + .seconds(30)
        var result = try body()
        while result.isEmpty && ContinuousClock.now < deadline {
            usleep(1000)
            result = try body()
        }
        return result
    }
}

/// What the impostor destination saw, handed from its thread to the test's.
final class ResumeWitness: @unchecked Sendable {
    private let lock = NSLock()
    private var _resume: ControlMessage?
    private var _abortRefusal: String?
    var resume: ControlMessage? {
        get { lock.withLock { _resume } }
        set { lock.withLock { _resume = newValue } }
    }
    var abortRefusal: String? {
        get { lock.withLock { _abortRefusal } }
        set { lock.withLock { _abortRefusal = newValue } }
    }
}
