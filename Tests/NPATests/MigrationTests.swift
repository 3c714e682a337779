import Foundation
import NPAControlProtocol
import NPAHost
import NPAShell
import NPATestSupport
import NPAWorkload
import Testing

/// Live migration, orchestrated by the hosts themselves: the admin asks the source (`npa
/// migrate`'s request), the two hosts talk over their authenticated channel, the guest follows
/// its vNIC. Each test checks where the guest ends up, that it works there, and what both hosts'
/// status says.
@Suite(.serialized) struct MigrationTests {
    /// Sends `count` numbered frames from `sender` to `receiver` and checks each arrives once, in
    /// order (other frames the receiver gets, such as a migrated guest's self-announcements, are
    /// not the stream's), and that the sender's buffers all came back.
    static func exchange(_ sender: VirtualNIC, to receiver: VirtualNIC, count: Int, tag: UInt8) -> Bool {
        var sent = 0
        var received: [[UInt8]] = []
        let deadline = ContinuousClock.now + .seconds(30)
        while received.count < count && ContinuousClock.now < deadline {
            if sent < count {
                let frames = (sent..<min(count, sent + 16)).map {
                    ethernetFrame(
                        to: receiver.mac, from: sender.mac,
                        payload: [tag, UInt8($0 >> 8), UInt8($0 & 0xFF)] + Array(repeating: 0, count: 43))
                }
                sent += sender.send(frames)
            }
            _ = sender.reclaimTransmitted()
            received += receiver.receive(maxFrames: 64, timeoutMilliseconds: 10).filter {
                $0.count >= 17 && Array($0[6..<12]) == sender.mac.bytes && $0[12] == 0x88 && $0[13] == 0xB5
            }
        }
        _ = sender.flush(timeoutMilliseconds: 10_000)
        let numbers = received.map { Int($0[15]) << 8 | Int($0[16]) }
        return received.count == count && numbers == Array(0..<count) && received.allSatisfy { $0[14] == tag }
    }

    @Test func aGuestMigratesToAnotherHostKeepsItsMACAndTalksThere() throws {
        let pair = try MigrationPair(configure: { _, c in c.defaultPolicy.allowedVLANs = [0, 7] })
        defer { pair.stop() }
        let mover = try attach(pair.a, "mover", mac: "02:00:00:00:77:01", queues: 1)
        let neighbour = try attach(pair.a, "neighbour", mac: "02:00:00:00:77:03", queues: 1)
        let peer = try attach(pair.b, "peer", mac: "02:00:00:00:77:02", queues: 1)
        try mover.setVLANs([0, 7])
        #expect(Self.exchange(mover, to: neighbour, count: 50, tag: 1))

        let record = try #require(try pair.migrate(mover, from: pair.a, to: pair.b))
        #expect(record.phase == "completed", "\(record.error ?? "")")
        #expect(record.committed && record.direction == "outgoing")
        #expect(record.phases.map(\.name) == ["connecting", "preparing", "transferring", "awaiting-guest", "forwarding"])
        #expect(record.deviceDowntimeMilliseconds != nil)
        #expect(mover.hostSocket == pair.b.socketPath, "\(mover.lastMoveError ?? "") \(mover.switchLog)")
        #expect(mover.mac == MACAddress("02:00:00:00:77:01"))

        // It works at B, both ways, and A has let it go.
        #expect(Self.exchange(mover, to: peer, count: 100, tag: 2))
        #expect(Self.exchange(peer, to: mover, count: 100, tag: 3))
        let atA = try pair.a.admin.status()
        let atB = try pair.b.admin.status()
        #expect(!atA.vnics.contains { $0.name == "mover" })
        #expect(atB.vnics.first { $0.name == "mover" }?.mac == "02:00:00:00:77:01")
        let incoming = try #require(try pair.incoming("mover", at: pair.b))
        #expect(incoming.phase == "completed" && incoming.committed, "\(incoming.error ?? "")")
        #expect(try mover.dropCounts().isEmpty)
    }

    @Test func aGuestMigratesThereAndBackTwentyTimesAndLeaksNothing() throws {
        let pair = try MigrationPair()
        defer { pair.stop() }
        let mover = try attach(pair.a, "wanderer", mac: "02:00:00:00:77:11", queues: 1)
        let peerA = try attach(pair.a, "peer-a", mac: "02:00:00:00:77:12", queues: 1)
        let peerB = try attach(pair.b, "peer-b", mac: "02:00:00:00:77:13", queues: 1)
        let buffersBefore = mover.buffersOutstanding
        for round in 0..<20 {
            let (from, to, peer) = round % 2 == 0 ? (pair.a, pair.b, peerB) : (pair.b, pair.a, peerA)
            let record = try #require(try pair.migrate(mover, from: from, to: to))
            #expect(record.phase == "completed", "round \(round): \(record.error ?? "")")
            #expect(mover.hostSocket == to.socketPath, "round \(round)")
            #expect(Self.exchange(mover, to: peer, count: 8, tag: UInt8(round)), "round \(round)")
        }
        #expect(mover.hostSocket == pair.a.socketPath)
        #expect(mover.buffersOutstanding == buffersBefore)
        // Each host keeps its own guests and the mover once, nothing left of the other trips.
        #expect(try pair.a.admin.status().vnics.map(\.name).sorted() == ["peer-a", "wanderer"])
        #expect(try pair.b.admin.status().vnics.map(\.name) == ["peer-b"])
        #expect(try pair.a.admin.status().host?.connections == 2)
        #expect(try pair.b.admin.status().host?.connections == 1)
    }

    /// NPA's point, orchestrated: a guest on host A's npa-dring VF migrates; A switches it out
    /// first, B (npa-cq) switches it in to its own VF with its own plugin, and traffic goes on.
    @Test func aGuestInPassthroughMigratesToAnotherNICModelAndIsSwitchedInThere() throws {
        let plugins = try PluginImages.directory().path
        let models = ["npa-dring", "npa-cq"]
        let pair = try MigrationPair(configure: { i, c in
            let nic = try HostConfiguration.withNIC(model: models[i], vfs: 2, pluginDirectory: plugins)
            c.nics = nic.nics
            c.uplink = nic.uplink
            c.pluginDirectory = nic.pluginDirectory
        })
        defer { pair.stop() }
        let mover = try attach(pair.a, "traveller", mac: "02:00:00:00:77:51", queues: 1)
        let peer = try attach(pair.b, "peer", mac: "02:00:00:00:77:52", queues: 1)
        #expect(try pair.a.switchIn(mover), "\(mover.lastSwitchError ?? "") \(mover.switchLog)")
        let pluginAtA = mover.pluginName

        let record = try #require(try pair.migrate(mover, from: pair.a, to: pair.b))
        #expect(record.phase == "completed", "\(record.error ?? "")")
        #expect(record.phases.map(\.name) == ["connecting", "preparing", "switching-out", "transferring", "awaiting-guest", "forwarding"])
        #expect(mover.hostSocket == pair.b.socketPath)
        // B switches it in once forwarding is over; the guest carries it out on its next calls.
        let switchedIn = eventually {
            _ = mover.reclaimTransmitted()
            return mover.mode == "passthrough"
        }
        #expect(switchedIn, "\(mover.lastSwitchError ?? "") \(mover.switchLog)")
        #expect(mover.pluginName != pluginAtA, "B's NIC model has its own plugin (\(mover.pluginName))")
        #expect(Self.exchange(mover, to: peer, count: 200, tag: 8))
        #expect(Self.exchange(peer, to: mover, count: 200, tag: 9))
        // A keeps nothing of it: no vNIC, no VF.
        let atA = try pair.a.admin.status()
        #expect(atA.vnics.isEmpty)
    }

    @Test func aDestinationThatRefusesLeavesTheGuestWorkingWhereItWas() throws {
        let pair = try MigrationPair()
        defer { pair.stop() }
        let mover = try attach(pair.a, "stayer", mac: "02:00:00:00:77:21", queues: 1)
        let neighbour = try attach(pair.a, "neighbour", mac: "02:00:00:00:77:22", queues: 1)
        // B already has a guest with the mover's MAC.
        let squatter = try attach(pair.b, "squatter", mac: "02:00:00:00:77:21", queues: 1)
        _ = squatter
        let record = try #require(try pair.migrate(mover, from: pair.a, to: pair.b))
        #expect(record.phase == "failed" && !record.committed)
        #expect(record.error?.contains("02:00:00:00:77:21") == true, "\(record.error ?? "")")
        #expect(mover.hostSocket == pair.a.socketPath)
        #expect(Self.exchange(mover, to: neighbour, count: 50, tag: 4))
        #expect(Self.exchange(neighbour, to: mover, count: 50, tag: 5))
    }

    @Test func aHostWithoutTheKeyIsRefusedAndTheGuestStays() throws {
        let pair = try MigrationPair(otherKeyForB: true)
        defer { pair.stop() }
        let mover = try attach(pair.a, "keyless", mac: "02:00:00:00:77:31", queues: 1)
        let neighbour = try attach(pair.a, "neighbour", mac: "02:00:00:00:77:32", queues: 1)
        let record = try #require(try pair.migrate(mover, from: pair.a, to: pair.b))
        #expect(record.phase == "failed" && !record.committed)
        #expect(mover.hostSocket == pair.a.socketPath)
        #expect(Self.exchange(mover, to: neighbour, count: 50, tag: 6))
        #expect(try pair.b.admin.status().vnics.isEmpty)
        // Both saw a hello that does not verify, and counted it.
        let counted = eventually {
            let atA = (try? pair.a.admin.status().migrationChannel?.recordsRefused["badHello"]) ?? 0
            let atB = (try? pair.b.admin.status().migrationChannel?.recordsRefused["badHello"]) ?? 0
            return atA >= 1 && atB >= 1
        }
        #expect(counted)
    }

    @Test func migrationsThatCannotStartAreRefusedWithAReason() throws {
        let pair = try MigrationPair()
        defer { pair.stop() }
        let guest = try attach(pair.a, "here", mac: "02:00:00:00:77:41", queues: 1)
        func refusal(_ name: String, _ to: String) -> String? {
            do {
                _ = try pair.a.admin.migrate(name: name, to: to)
                return nil
            } catch {
                return "\(error)"
            }
        }
        #expect(refusal("here", pair.address(of: pair.a))?.contains("own migration listener") == true)
        #expect(refusal("nobody", pair.address(of: pair.b))?.contains("no vNIC named 'nobody'") == true)
        #expect(refusal("here", "not an address")?.contains("not a migration address") == true)
        #expect(refusal("here", "/nonexistent/npa-migrate.sock")?.contains("unreachable") == true)
        #expect(guest.hostSocket == pair.a.socketPath)
        // One under way (the guest, not driven, has not taken the offer yet): a second is refused.
        let first = try pair.a.admin.migrate(name: "here", to: pair.address(of: pair.b))
        #expect(refusal("here", pair.address(of: pair.b))?.contains("already migrating") == true)
        let moved = eventually {
            _ = guest.reclaimTransmitted()
            return (try? pair.a.admin.migration(id: first))?.isFinished == true
        }
        #expect(moved && guest.hostSocket == pair.b.socketPath, "\(guest.lastMoveError ?? "")")
    }
}
