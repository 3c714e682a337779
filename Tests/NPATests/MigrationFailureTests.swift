import Foundation
import NPAControlProtocol
import NPAHost
import NPAShell
import NPATestSupport
import Testing

/// A migration whose destination fails part way: a scripted fake destination (it has the key and
/// answers as a host would up to a chosen point, then closes, refuses or goes silent), and a real
/// second host killed while it waits for the guest. In every case the guest stays on A (its
/// device resumes there), works both ways with a neighbour on A, A's status says the migration
/// failed and why, and A keeps nothing of it: the guest's buffers all back, the same vNICs and
/// connections, no migration still under way.
@Suite(.serialized) struct MigrationFailureTests {
    /// A host with the key (and a short phase limit when `timeoutMilliseconds` is given), the
    /// guest that will try to leave and a neighbour on the same host.
    struct Source {
        let keyFile = ScriptedDestination.writeKeyFile()
        let host: TestHost
        let mover: VirtualNIC
        let neighbour: VirtualNIC

        /// `passthrough`: A has a `npa-dring` NIC and the mover starts switched in to a VF.
        init(timeoutMilliseconds: Int? = nil, passthrough: Bool = false, label: String = #function) throws {
            var configuration = passthrough ? try HostConfiguration.withNIC(model: "npa-dring", vfs: 4) : HostConfiguration()
            configuration.migrationKeyFile = keyFile
            if let timeoutMilliseconds { configuration.migrationTimeoutMilliseconds = timeoutMilliseconds }
            host = try TestHost(configuration: configuration, label: label)
            mover = try attach(host, "mover", mac: "02:00:00:00:7a:01", queues: 1)
            neighbour = try attach(host, "neighbour", mac: "02:00:00:00:7a:02", queues: 1)
            if passthrough {
                try host.admin.switchVNIC(name: "mover", toPassthrough: true)
                let mover = self.mover
                _ = eventually(timeoutMilliseconds: 60_000) {
                    _ = mover.reclaimTransmitted()
                    return mover.mode == "passthrough"
                }
            }
        }

        func stop() {
            host.stop()
            unlink(keyFile)
        }

        /// Starts the migration of the mover to `destination` and waits (the mover not driven
        /// unless `drive`) until its record says `phase`; returns the migration's id.
        func migrate(to destination: String, until phases: Set<String>, drive: Bool = true) throws -> (UInt64, StatusReport.Migration?) {
            let id = try host.admin.migrate(name: "mover", to: destination)
            var record: StatusReport.Migration?
            let reached = try eventually(timeoutMilliseconds: 60_000) {
                if drive { _ = mover.reclaimTransmitted() }
                record = try host.admin.migration(id: id)
                return record.map { phases.contains($0.phase) } ?? false
            }
            return (id, reached ? record : nil)
        }

        /// Waits (generously, the mover not driven) until migration `id` finishes, and expects it
        /// failed, uncommitted, because the destination gave up before the guest arrived.
        func expectGaveUpBeforeTheGuestArrived(_ id: UInt64, sourceLocation: SourceLocation = #_sourceLocation) throws {
            var record: StatusReport.Migration?
            let finished = try eventually(timeoutMilliseconds: 60_000) {
                record = try host.admin.migration(id: id)
                return record?.isFinished == true
            }
            #expect(finished, "\(String(describing: record))", sourceLocation: sourceLocation)
            #expect(
                record?.phase == "failed" && record?.committed == false, "\(String(describing: record))", sourceLocation: sourceLocation)
            #expect(
                record?.error?.contains("the destination gave up before the guest arrived") == true, "\(record?.error ?? "")",
                sourceLocation: sourceLocation)
        }

        /// The guest is still here and works both ways; A holds nothing of the migration.
        func expectGuestStayedAndNothingLeaked(_ buffersBefore: Int, _ context: String) throws {
            #expect(mover.hostSocket == host.socketPath, "\(context): \(mover.lastMoveError ?? "") \(mover.switchLog)")
            #expect(MigrationTests.exchange(mover, to: neighbour, count: 100, tag: 1), "\(context): mover → neighbour")
            #expect(MigrationTests.exchange(neighbour, to: mover, count: 100, tag: 2), "\(context): neighbour → mover")
            #expect(mover.buffersOutstanding == buffersBefore, "\(context)")
            let status = try host.admin.status()
            #expect(status.vnics.map(\.name).sorted() == ["mover", "neighbour"], "\(context)")
            #expect(status.vnics.first { $0.name == "mover" }?.state == "active", "\(context): \(status.vnics)")
            #expect(status.host?.connections == 2, "\(context)")
            #expect(status.migrations?.allSatisfy(\.isFinished) ?? true, "\(context): \(status.migrations ?? [])")
            #expect(try mover.dropCounts().isEmpty, "\(context)")
        }
    }

    /// Plays `script` at a fake destination and checks the migration fails with `reason` in its
    /// error and leaves the guest working at A.
    func expectFailure(
        _ script: ScriptedDestination.Script, reason: String, timeoutMilliseconds: Int? = nil, passthrough: Bool = false
    ) throws {
        let a = try Source(timeoutMilliseconds: timeoutMilliseconds, passthrough: passthrough)
        #expect(a.mover.mode == (passthrough ? "passthrough" : "emulated"), "\(a.mover.switchLog)")
        defer { a.stop() }
        let fake = try ScriptedDestination(keyFile: a.keyFile, script: script)
        defer { fake.finish() }
        #expect(MigrationTests.exchange(a.mover, to: a.neighbour, count: 20, tag: 9))
        let buffersBefore = a.mover.buffersOutstanding
        let (_, record) = try a.migrate(to: fake.address, until: ["failed", "completed"])
        let failed = try #require(record, "\(script): the migration never finished")
        #expect(failed.phase == "failed" && !failed.committed, "\(script): \(failed)")
        #expect(failed.error?.contains(reason) == true, "\(script): \(failed.error ?? "no reason")")
        fake.finish()
        if passthrough {
            // Switched back in where it was (the guest carries the switch out as it is driven).
            let back = eventually(timeoutMilliseconds: 60_000) {
                _ = a.mover.reclaimTransmitted()
                return a.mover.mode == "passthrough" && (try? a.host.status(of: "mover"))?.mode == "passthrough"
            }
            #expect(back, "\(script): not switched back in: \(a.mover.switchLog)")
        }
        try a.expectGuestStayedAndNothingLeaked(buffersBefore, "\(script)")
    }

    @Test func aConnectionCutAfterPrepareLeavesTheGuestWorkingAtTheSource() throws {
        try expectFailure(.closeAfterPrepare, reason: "the destination is unreachable")
    }

    @Test func aConnectionCutAfterTheDeviceStateArrivedResumesTheGuestAtTheSource() throws {
        try expectFailure(.closeAfterDeviceState, reason: "the channel closed during the transfer")
    }

    @Test func aRefusedDeviceStateResumesTheGuestAtTheSource() throws {
        try expectFailure(.refuseDeviceState(reason: "scripted: the state is not wanted"), reason: "scripted: the state is not wanted")
    }

    @Test func aRefusedDeviceStateSwitchesAGuestThatWasInPassthroughBackIn() throws {
        try expectFailure(.refuseDeviceState(reason: "scripted: no VF for you"), reason: "scripted: no VF for you", passthrough: true)
    }

    @Test func aConnectionCutAfterTheDeviceStateSwitchesAGuestThatWasInPassthroughBackIn() throws {
        try expectFailure(.closeAfterDeviceState, reason: "the channel closed during the transfer", passthrough: true)
    }

    @Test func aSilentDestinationTimesOutAndTheGuestResumesAtTheSource() throws {
        // Silence comes after the device state; on a loaded machine an earlier phase may be the
        // one that runs out of its (short) time, which is the same failure: it times out.
        try expectFailure(.silentUntilReleased, reason: "timed out", timeoutMilliseconds: 1000)
    }

    /// The cut comes while A has told the guest where to go and waits for it; the guest is not
    /// driven meanwhile, so it cannot have moved. Once it is, it finds A's offer withdrawn (or
    /// fails to reach the destination) and stays.
    @Test func aConnectionCutWhileTheSourceAwaitsTheGuestLeavesItAtTheSource() throws {
        let a = try Source()
        defer { a.stop() }
        let fake = try ScriptedDestination(keyFile: a.keyFile, script: .closeWhenReleased)
        defer { fake.finish() }
        let buffersBefore = a.mover.buffersOutstanding
        let (id, waiting) = try a.migrate(to: fake.address, until: ["awaiting-guest", "failed"], drive: false)
        #expect(waiting?.phase == "awaiting-guest", "\(String(describing: waiting))")
        fake.release()
        try a.expectGaveUpBeforeTheGuestArrived(id)
        fake.finish()
        try a.expectGuestStayedAndNothingLeaked(buffersBefore, "cut while awaiting the guest")
    }

    /// A real destination (`npa host` in its own process) killed once its status shows the
    /// incoming migration waiting for the guest; the guest, not driven meanwhile, cannot have
    /// moved there.
    @Test func aDestinationHostKilledWhileAwaitingTheGuestLeavesItAtTheSource() throws {
        let a = try Source()
        defer { a.stop() }
        let listen = TestHost.freshSocketPath() + ".migrate"
        let b = try HostProcess(config: "migration_key_file: \(a.keyFile)\nmigration_listen: \(listen)\n")
        defer {
            b.end()
            unlink(listen)
        }
        #expect(b.waitUntilListening(), "host B did not start")
        #expect(eventually { FileManager.default.fileExists(atPath: listen) }, "host B does not listen for migrations")
        let buffersBefore = a.mover.buffersOutstanding
        let id = try a.host.admin.migrate(name: "mover", to: listen)
        let awaiting = try eventually(timeoutMilliseconds: 60_000) {
            try b.admin.status().migrations?.contains { $0.vnic == "mover" && $0.phase == "awaiting-guest" } == true
        }
        let atB = try b.admin.status().migrations ?? []
        #expect(awaiting, "B never waited for the guest: \(atB)")
        b.killAndReap()
        try a.expectGaveUpBeforeTheGuestArrived(id)
        try a.expectGuestStayedAndNothingLeaked(buffersBefore, "B killed")
    }
}
