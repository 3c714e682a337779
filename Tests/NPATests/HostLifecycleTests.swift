import Foundation
import NPAAdmin
import Logging
import NPAControlProtocol
import NPAHost
import NPAShell
import NPASystem
import NPATestSupport
import Testing

/// A host's life seen from both sides: guests notice when their host dies (issue 8, defect 6),
/// a host never takes or deletes a socket path that is not its own (defect 7), and no number
/// of connections, idle or over the descriptor limit, takes down the guests already attached
/// (defect 8). Every wait is on a condition with a generous bound; nothing sleeps to synchronise.
@Suite(.serialized) struct HostLifecycleTests {
    // MARK: Helpers

    func attachGuest(_ socketPath: String, _ name: String, mac: String? = nil) throws -> VirtualNIC {
        try GuestSpec(name, mac: mac, queues: 1, ringSize: 256, memoryMiB: 8).attach(to: socketPath)
    }

    /// `npa status` over a fresh admin connection, as the CLI asks it; nil if it is not answered.
    func freshStatus(_ socketPath: String) -> StatusReport? {
        try? AdminClient(controlSocket: socketPath).status()
    }

    /// Runs `npa ARGUMENTS` that should exit by itself (a refused host); kills it if it is still
    /// running after a generous bound, so a host that wrongly starts fails the test, not hangs it.
    func runToExit(_ arguments: [String]) throws -> (status: Int32, stderr: String) {
        let p = try NPAProcess(arguments)
        let exited = eventually(timeoutMilliseconds: 30_000) { !p.process.isRunning }
        if !exited { p.kill() }
        let out = p.finish()
        #expect(exited, "npa \(arguments.joined(separator: " ")) kept running")
        return (out.status, out.stderr)
    }

    func inode(_ path: String) -> UInt64? {
        var st = stat()
        return lstat(path, &st) == 0 ? UInt64(st.st_ino) : nil
    }

    /// A value handed to another thread and read back after joining it.
    final class Box<T>: @unchecked Sendable {
        var value: T
        init(_ value: T) { self.value = value }
    }

    // MARK: Defect 6: guests notice that their host is gone

    @Test func aGuestWaitingToReceiveNoticesItsHostWasKilled() throws {
        let host = try HostProcess()
        defer { host.end() }
        #expect(host.waitUntilListening())
        let nic = try attachGuest(host.socketPath, "rx")
        let received = Box(-1)
        let guest = Box(nic)
        // The guest sleeps on its interrupt for up to a minute; the kill comes before or while
        // it sleeps (either order must end the wait, with the reason).
        let thread = EngineThread.start(name: "guest-rx") {
            received.value = guest.value.receive(maxFrames: 16, timeoutMilliseconds: 60_000) { _ in }
        }
        host.killAndReap()
        EngineThread.join(thread)
        #expect(received.value == 0)
        #expect(nic.hostGone != nil, "the receive ended without noticing the host is gone")
        #expect(nic.hostGone?.socketPath == host.socketPath)
        // Once gone, everything answers at once.
        #expect(nic.receive(maxFrames: 16, timeoutMilliseconds: 60_000) { _ in } == 0)
        #expect(nic.transmit(count: 1) { _, _ in 64 } == 0)
        #expect(nic.flush(timeoutMilliseconds: 60_000) == false)
        #expect(nic.waitForTransmitSpace(timeoutMilliseconds: 60_000) == false)
        #expect(throws: HostGone.self) { try nic.deviceCounters() }
        #expect(throws: HostGone.self) { _ = try nic.waitForPeer(MACAddress("02:00:00:00:00:99")!, timeoutMilliseconds: 60_000) }
        nic.detach()
    }

    /// A sender that never waits (it sends until the ring is full, then reclaims between
    /// bursts, as a paced sender does) learns it too, without a syscall per frame.
    @Test func aSendingGuestNoticesItsHostWasKilled() throws {
        let host = try HostProcess()
        defer { host.end() }
        #expect(host.waitUntilListening())
        let nic = try attachGuest(host.socketPath, "tx", mac: "02:00:00:00:00:01")
        let peer = MACAddress("02:00:00:00:00:02")!
        host.killAndReap()
        let frame = ethernetFrame(to: peer, from: nic.mac)
        let deadline = ContinuousClock.now + .seconds(30)  // a generous bound, not a measurement
        var sent = 0
        while !nic.isHostGone && ContinuousClock.now < deadline {
            sent += nic.transmit(count: 32) { _, buffer in
                buffer.copyBytes(from: frame)
                return frame.count
            }
            nic.reclaimTransmitted()
        }
        #expect(nic.isHostGone, "sent \(sent) frames into a dead host without noticing")
        // Nothing it sent after the death completes; a flush says so at once.
        #expect(nic.flush(timeoutMilliseconds: 60_000) == false)
    }

    @Test func aFlushNoticesItsHostWasKilled() throws {
        let host = try HostProcess()
        defer { host.end() }
        #expect(host.waitUntilListening())
        let nic = try attachGuest(host.socketPath, "tx", mac: "02:00:00:00:00:01")
        host.killAndReap()
        let frame = ethernetFrame(to: MACAddress("02:00:00:00:00:02")!, from: nic.mac)
        #expect(nic.send([frame, frame, frame]) == 3)  // the ring has room: nothing to notice yet
        #expect(nic.flush(timeoutMilliseconds: 60_000) == false)
        #expect(nic.isHostGone)
    }

    @Test func aControlOperationNoticesItsHostWasKilled() throws {
        let host = try HostProcess()
        defer { host.end() }
        #expect(host.waitUntilListening())
        let nic = try attachGuest(host.socketPath, "ctl")
        host.killAndReap()
        do {
            try nic.setVLANs([0])
            Issue.record("a control operation to a dead host succeeded")
        } catch let gone as HostGone {
            #expect(gone.socketPath == host.socketPath)
            #expect(!gone.description.contains("\n"))
        } catch {
            Issue.record("expected HostGone, got \(error)")
        }
        #expect(nic.isHostGone)
        #expect(throws: HostGone.self) { _ = try nic.waitForPeer(MACAddress("02:00:00:00:00:99")!, timeoutMilliseconds: 0) }
    }

    @Test func aGuestNoticesItsInProcessHostStopped() throws {
        let host = try TestHost()
        defer { host.stop() }
        let nic = try attachGuest(host.socketPath, "a")
        #expect(nic.checkHost() == nil)
        host.stop()
        #expect(nic.receive(maxFrames: 16, timeoutMilliseconds: 60_000) { _ in } == 0)
        #expect(nic.isHostGone)
        #expect(throws: HostGone.self) { try nic.setRxMode([.unicast]) }
    }

    /// What a `--hold` guest waits on: the host's death or its own descriptor, whichever first.
    @Test func waitForHostGoneEndsOnTheHostsDeathOrTheDescriptor() throws {
        let host = try TestHost()
        defer { host.stop() }
        let nic = try attachGuest(host.socketPath, "hold")
        let pipe = Pipe()
        pipe.fileHandleForWriting.write(Data([1]))
        #expect(nic.waitForHostGone(timeoutMilliseconds: 60_000, orReadable: pipe.fileHandleForReading.fileDescriptor) == nil)
        #expect(!nic.isHostGone)
        host.stop()
        #expect(nic.waitForHostGone(timeoutMilliseconds: 60_000) != nil)
    }

    // MARK: Defect 7: the socket path

    @Test func aRegularFileAtTheSocketPathIsRefusedAndLeftIntact() throws {
        let path = TestHost.freshSocketPath()
        try "precious\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { unlink(path) }
        #expect(throws: SocketPathError.notASocket(path: path)) {
            _ = try HostDaemon(socketPath: path, logger: Logger(label: "test"))
        }
        #expect((try? String(contentsOfFile: path, encoding: .utf8)) == "precious\n")
        // The CLI says it in one line and exits non-zero.
        let out = try runToExit(["host", "--socket", path, "--log-level", "error"])
        #expect(out.status != 0)
        #expect(out.stderr.split(separator: "\n").count == 1, "\(out.stderr)")
        #expect(out.stderr.contains("\(path) exists and is not a socket"))
        #expect((try? String(contentsOfFile: path, encoding: .utf8)) == "precious\n")
    }

    @Test func aSecondHostOnALiveHostsPathIsRefusedAndTheFirstStaysReachable() throws {
        let first = try TestHost()
        defer { first.stop() }
        let before = inode(first.socketPath)
        #expect(throws: SocketPathError.self) {
            _ = try HostDaemon(socketPath: first.socketPath, logger: Logger(label: "test"))
        }
        let out = try runToExit(["host", "--socket", first.socketPath, "--log-level", "error"])
        #expect(out.status != 0)
        #expect(out.stderr.contains("a host is already listening on it"), "\(out.stderr)")
        #expect(inode(first.socketPath) == before)
        let nic = try attachGuest(first.socketPath, "still-here")
        #expect(try first.admin.status().vnics.map(\.name) == ["still-here"])
    }

    @Test func aStaleSocketIsReplaced() throws {
        let path = TestHost.freshSocketPath()
        defer { unlink(path) }
        do {
            // A host that died without cleaning up: the file stays, nobody listens.
            let dead = try SeqPacketSocket.listen(path: path)
            _ = dead
        }
        #expect(try SeqPacketSocket.probe(path: path) == .stale)
        let host = try TestHost(socketPath: path)
        defer { host.stop() }
        let nic = try attachGuest(path, "after-stale")
        #expect(try host.admin.status().vnics.count == 1)
    }

    @Test func anExitingHostLeavesAnotherHostsSocketAlone() throws {
        let path = TestHost.freshSocketPath()
        defer { unlink(path) }
        let old = try TestHost(socketPath: path)
        defer { old.stop() }
        // Someone removed the old host's files and a new host took the paths.
        let adminPath = old.adminSocketPath
        unlink(path)
        unlink(adminPath)
        let new = try TestHost(socketPath: path)
        defer { new.stop() }
        let newInode = inode(path), newAdminInode = inode(adminPath)
        old.stop()
        #expect(inode(path) == newInode, "the old host deleted the new host's socket")
        #expect(inode(adminPath) == newAdminInode, "the old host deleted the new host's admin socket")
        let nic = try attachGuest(path, "on-new")
        #expect(try new.admin.status().vnics.map(\.name) == ["on-new"])
        new.stop()
        #expect(inode(path) == nil, "a host removes its own socket on exit")
        #expect(inode(adminPath) == nil, "a host removes its own admin socket on exit")
    }

    // MARK: Defect 8: connections and descriptors

    @Test func connectionsBeyondTheCapAreRefusedAndAttachedGuestsKeepWorking() throws {
        var config = HostConfiguration()
        config.maxConnections = 3
        let host = try TestHost(configuration: config)
        defer { host.stop() }
        let a = try attachGuest(host.socketPath, "a", mac: "02:00:00:00:00:0a")
        let b = try attachGuest(host.socketPath, "b", mac: "02:00:00:00:00:0b")
        var idle: SeqPacketSocket? = try SeqPacketSocket.connect(path: host.socketPath)  // the third
        do {
            _ = try attachGuest(host.socketPath, "c")
            Issue.record("a fourth connection was served with max_connections 3")
        } catch let refusal as HostRefusal {
            #expect(refusal.message.contains("max_connections 3"), "\(refusal)")
        }
        #expect(try host.admin.status().host?.connectionsRefused == 1)
        let f = ethernetFrame(to: b.mac, from: a.mac)
        #expect(a.send([f]) == 1)
        #expect(receiveFrames(b, count: 1) == [f])
        // A slot frees when a connection closes.
        _ = idle
        idle = nil
        #expect(eventually { (try? attachGuest(host.socketPath, "c")) != nil })
    }

    @Test func aConnectionThatDoesNotAttachIsClosedAtItsDeadline() throws {
        var config = HostConfiguration()
        config.attachTimeoutSeconds = 0.2
        let host = try TestHost(configuration: config)
        defer { host.stop() }
        let a = try attachGuest(host.socketPath, "a")
        let idle = try SeqPacketSocket.connect(path: host.socketPath)
        #expect(idle.waitForHangUp(timeoutMilliseconds: 30_000), "the idle connection was never closed")
        guard idle.waitReadable(timeoutMilliseconds: 0) else {
            Issue.record("closed without saying why")
            return
        }
        let said = try idle.receive().flatMap { try ControlMessage.parse($0.bytes) }
        if case .error(_, let text)? = said {
            #expect(text.contains("attach_timeout"))
        } else {
            Issue.record("closed without saying why: \(String(describing: said))")
        }
        // The guest that attached in time (and was accepted before the idle one, so its
        // deadline passed first) is still there.
        let status = try host.admin.status()
        #expect(status.vnics.map(\.name) == ["a"])
        #expect(status.host?.attachTimeouts == 1)
    }

    /// A host limited to 48 descriptors, flooded with idle connections: accept fails with
    /// EMFILE; the host counts it, pauses accepting, keeps forwarding between the guests already
    /// attached, and serves new connections again once descriptors free up.
    @Test func runningOutOfDescriptorsPausesAcceptingAndKeepsServingAttachedGuests() throws {
        let host = try HostProcess(config: "max_connections: 10000\nattach_timeout: 3600\n", extraArguments: ["--fd-limit", "48"])
        defer { host.end() }
        #expect(host.waitUntilListening())
        let a = try attachGuest(host.socketPath, "a", mac: "02:00:00:00:00:0a")
        let b = try attachGuest(host.socketPath, "b", mac: "02:00:00:00:00:0b")
        var idle: [SeqPacketSocket] = []
        defer { idle.removeAll() }
        func exhausted() -> Bool { (try? host.admin.status().host?.acceptFDExhausted) ?? 0 > 0 }
        // Open connections until the host says it ran out (or the backlog is full: then it has
        // certainly run out, and says so once it next tries to accept).
        while !exhausted() && idle.count < 500 {
            guard let s = try? SeqPacketSocket.connect(path: host.socketPath, nonBlocking: true) else { break }
            idle.append(s)
        }
        #expect(eventually { exhausted() }, "no EMFILE counted after \(idle.count) connections")
        #expect(host.process.process.isRunning)
        let f = ethernetFrame(to: b.mac, from: a.mac)
        #expect(a.send([f]) == 1)
        #expect(receiveFrames(b, count: 1) == [f])
        #expect(try b.deviceCounters()["rx_frames"] == 1)
        // Descriptors come back when the idle clients leave; new connections are served again.
        idle.removeAll()
        #expect(eventually { freshStatus(host.socketPath) != nil })
        #expect(freshStatus(host.socketPath)?.host?.acceptFDExhausted ?? 0 > 0)
        #expect(try host.admin.status().vnics.count == 2)
    }
}
