import Foundation
import Logging
import NPAAdmin
import NPAControlProtocol
import NPAHost
import NPAShell
import NPASystem
import NPATestSupport
import SystemPackage
import Testing

/// Administration has its own socket (issue 9): a guest's control connection may act only on
/// its own vNIC. Every administrative request a guest sends is refused, counted, and changes
/// nothing; the admin socket is the host user's alone (mode 0600) and attaches no guest.
@Suite(.serialized) struct AdminSocketTests {
    /// A guest attached by hand on its own control connection, so the test can send it any message.
    final class RawGuest {
        let socket: SeqPacketSocket
        let memory: SharedMemory
        let doorbell: EventNotifier
        let interrupt: EventNotifier

        init(socketPath: String, name: String) throws {
            socket = try SeqPacketSocket.connect(path: socketPath)
            memory = try SharedMemory(name: "npa-test-raw", size: 2 << 20)
            doorbell = try EventNotifier()
            interrupt = try EventNotifier()
            let reply = try request(
                ControlMessage.attach(.init(name: name, mac: nil, interruptVectors: 1)),
                descriptors: [memory.fd, doorbell.fd, interrupt.fd])
            guard case .attached = reply else { throw CommandFailed("attach: \(reply)") }
        }

        func request(_ message: ControlMessage, descriptors: [FileDescriptor] = []) throws -> ControlMessage {
            try socket.send(message.encode(), descriptors: descriptors)
            guard socket.waitReadable(timeoutMilliseconds: 20_000), let received = try socket.receive() else {
                throw CommandFailed("no answer")
            }
            for fd in received.descriptors { try? fd.close() }
            return try ControlMessage.parse(received.bytes)
        }
    }

    struct CommandFailed: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    @Test func everyAdministrativeRequestOnAGuestsConnectionIsRefusedCountedAndChangesNothing() throws {
        let host = try TestHost(configuration: .withNIC(model: "npa-dring", vfs: 2))
        defer { host.stop() }
        let victim = try attach(host, "victim", mac: "02:00:00:00:ad:01")
        try host.switchIn(victim)
        #expect(victim.mode == "passthrough")
        let intruder = try RawGuest(socketPath: host.socketPath, name: "intruder")
        let before = try host.admin.status()
        let requests: [ControlMessage] = [
            .adminSwitch(vnic: "victim", toPassthrough: false), .adminResetVF(vnic: "victim"), .statusRequest,
            .adminSwitch(vnic: "intruder", toPassthrough: true),  // not even its own: switching is the host's call
            .adminMigrate(vnic: "victim", to: "127.0.0.1:1"),
        ]
        for request in requests {
            let reply = try intruder.request(request)
            guard case .error(let code, let text) = reply else {
                Issue.record("\(request) on a guest's connection was answered \(reply)")
                continue
            }
            #expect(code == ControlMessage.ErrorCode.notPermitted, "\(request)")
            #expect(text.contains("admin socket"), "\(text)")
        }
        let after = try host.admin.status()
        #expect(after.host?.adminRefused == UInt64(requests.count))
        let victimNow = try #require(after.vnics.first { $0.name == "victim" })
        let victimBefore = try #require(before.vnics.first { $0.name == "victim" })
        #expect(victimNow.mode == "passthrough")
        #expect(victimNow.vf == victimBefore.vf)
        #expect(victimNow.switchPending == nil)
        #expect(after.vnics.first { $0.name == "intruder" }?.mode == "emulated")
        // The guest still drives its own vNIC, and may ask whether a peer is there.
        #expect(try intruder.request(ControlMessage.peerQuery(mac: victim.mac)) == .peerReply(mac: victim.mac, active: true))
        #expect(
            try intruder.request(ControlMessage.peerQuery(mac: MACAddress("02:00:00:00:ad:99")!))
                == .peerReply(mac: MACAddress("02:00:00:00:ad:99")!, active: false))
        #expect(victim.mode == "passthrough")
        // `npa status` shows the count in its host section.
        let table = try NPAProcess(["status", "--host", host.socketPath]).finish()
        #expect(table.stdout.contains("admin_refused): \(requests.count)"), "\(table.stdout)")
    }

    @Test func theAdminSocketIsTheHostUsersAloneAndBesideTheControlSocket() throws {
        let host = try TestHost()
        defer { host.stop() }
        #expect(host.adminSocketPath == host.socketPath + ".admin")
        #expect(HostSocketPath.admin(forControl: host.socketPath) == host.adminSocketPath)
        var st = stat()
        #expect(lstat(host.adminSocketPath, &st) == 0)
        #expect(st.st_mode & S_IFMT == S_IFSOCK)
        #expect(st.st_mode & 0o777 == 0o600)
        host.stop()
        #expect(lstat(host.adminSocketPath, &st) != 0, "a host removes its admin socket on exit")
    }

    @Test func theAdminSocketRefusesToAttachAGuest() throws {
        let host = try TestHost()
        defer { host.stop() }
        let socket = try SeqPacketSocket.connect(path: host.adminSocketPath)
        let memory = try SharedMemory(name: "npa-test-raw", size: 2 << 20)
        let doorbell = try EventNotifier(), interrupt = try EventNotifier()
        try socket.send(
            ControlMessage.attach(.init(name: "sneaky", mac: nil, interruptVectors: 1)).encode(),
            descriptors: [memory.fd, doorbell.fd, interrupt.fd])
        #expect(socket.waitReadable(timeoutMilliseconds: 20_000))
        let reply = try socket.receive().map { try ControlMessage.parse($0.bytes) }
        guard case .error(let code, _)? = reply else {
            Issue.record("attach on the admin socket was answered \(String(describing: reply))")
            return
        }
        #expect(code == ControlMessage.ErrorCode.notPermitted)
        for message: ControlMessage in [
            .countersRequest, .switchQuery, .registerWrite(bar: 1, offset: 0, value: 1), .peerQuery(mac: .broadcast),
        ] {
            try socket.send(message.encode())
            #expect(socket.waitReadable(timeoutMilliseconds: 20_000))
            let answer = try socket.receive().map { try ControlMessage.parse($0.bytes) }
            guard case .error(let c, _)? = answer else {
                Issue.record("\(message) on the admin socket was answered \(String(describing: answer))")
                continue
            }
            #expect(c == ControlMessage.ErrorCode.notPermitted)
        }
        #expect(try host.admin.status().vnics.isEmpty)
    }

    @Test func npaStatusAndNpaVNICWorkThroughTheAdminSocket() throws {
        let host = try TestHost(configuration: .withNIC(model: "npa-dring", vfs: 2))
        defer { host.stop() }
        let a = try attach(host, "alpha", mac: "02:00:00:00:ad:0a")
        let byDefault = try NPAProcess(["status", "--host", host.socketPath, "--json"]).finish()
        #expect(byDefault.status == 0, "\(byDefault.stderr)")
        #expect(try StatusReport.decode(byDefault.stdout).vnics.map(\.name) == ["alpha"])
        let named = try NPAProcess(["status", "--admin-socket", host.adminSocketPath, "--json"]).finish()
        #expect(try StatusReport.decode(named.stdout).vnics.map(\.name) == ["alpha"])
        let switched = try NPAProcess(["vnic", "switch-in", "alpha", "--host", host.socketPath]).finish()
        #expect(switched.status == 0, "\(switched.stderr)")
        #expect(switched.stdout.contains("switch-in of 'alpha'"), "\(switched.stdout)")
        _ = a.reclaimTransmitted()
        #expect(a.mode == "passthrough")
        let reset = try NPAProcess(["vnic", "reset-vf", "alpha", "--admin-socket", host.adminSocketPath]).finish()
        #expect(reset.status == 0, "\(reset.stderr)")
        #expect(
            eventually {
                _ = a.reclaimTransmitted(); return a.mode == "emulated"
            })
        // A control socket is not an admin socket: the tool says so and exits non-zero.
        let wrong = try NPAProcess(["vnic", "switch-in", "alpha", "--admin-socket", host.socketPath]).finish()
        #expect(wrong.status != 0)
        #expect(wrong.stderr.contains("admin socket"), "\(wrong.stderr)")
        #expect(a.mode == "emulated")
    }
}

extension AdminSocketTests {
    @Test func aFileAtTheAdminSocketPathIsRefusedAndTheHostLeavesNothingBehind() throws {
        let path = TestHost.freshSocketPath()
        let adminPath = HostSocketPath.admin(forControl: path)
        try "precious\n".write(toFile: adminPath, atomically: true, encoding: .utf8)
        defer { unlink(adminPath) }
        #expect(throws: SocketPathError.notASocket(path: adminPath)) {
            _ = try HostDaemon(socketPath: path, logger: .init(label: "test"))
        }
        #expect((try? String(contentsOfFile: adminPath, encoding: .utf8)) == "precious\n")
        var st = stat()
        #expect(lstat(path, &st) != 0, "the control socket of a host that never ran was left behind")
    }
}

extension AdminSocketTests {
    /// An admin connection is the host user's: no attach deadline cuts it (a guest connection
    /// accepted after it is closed at its deadline; the admin one still answers).
    @Test func anAdminConnectionHasNoAttachDeadline() throws {
        var config = HostConfiguration()
        config.attachTimeoutSeconds = 0.2
        let host = try TestHost(configuration: config)
        defer { host.stop() }
        let admin = try SeqPacketSocket.connect(path: host.adminSocketPath)
        let idle = try SeqPacketSocket.connect(path: host.socketPath)
        #expect(idle.waitForHangUp(timeoutMilliseconds: 30_000), "the idle guest connection was never closed")
        #expect(!admin.peerHasHungUp())
        try admin.send(ControlMessage.statusRequest.encode())
        #expect(admin.waitReadable(timeoutMilliseconds: 20_000))
        let reply = try admin.receive().map { try ControlMessage.parse($0.bytes) }
        guard case .statusReply(let json)? = reply else {
            Issue.record("the admin connection was answered \(String(describing: reply))")
            return
        }
        #expect(try StatusReport.decode(json).host?.attachTimeouts == 1)
    }
}
