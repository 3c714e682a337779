import Foundation
import NPAAdmin
import NPAControlProtocol
import NPAHost
import NPAShell
import NPASystem
import NPAWorkload

/// `npa soak --migrate N`: two hosts in this process, A with an `npa-dring` NIC and B with an
/// `npa-cq` NIC, sharing a migration key, each taking migrations on a Unix socket. A guest
/// ("roamer") switched in to a VF of A migrates A→B→A… N times, asked of the source's admin
/// socket as `npa migrate` does; each destination switches it in to a VF of its own NIC (it was
/// in passthrough at the source). Meanwhile a peer streams sequence-numbered frames to it at a
/// fixed rate: the two hosts' networks are not joined (that needs TAPs and root), so the peer
/// is the one on the host where the guest is, and the stream changes peer (one flow, one
/// sequence) the moment the guest's shell has re-attached at the destination. Frames the old
/// peer sent meanwhile reach the source, which holds and forwards them; those the new peer
/// sends are held at the destination until the source's forwarding ends, then follow them.
///
/// Measured at the guest: the longest time without a frame delivered to it around each
/// migration (downtime), loss, duplicates and order. Counted before and after on both hosts:
/// vNICs, control connections, VFs in use, the guests' buffers, the process's descriptors.
/// Runs on the calling thread and drives every guest from it (a guest carries out a move in its
/// data-path calls).
final class MigrationSoak {
    let options: Options
    /// Called after each migration (the demo prints it).
    var onMigration: ((Outcome, MigrationSoak) -> Void)?
    private(set) var report = Report()
    private(set) var sides: [Side] = []
    private var guest: VirtualNIC!
    private var sender: VirtualNIC!
    private var previousSender: VirtualNIC?
    private var sequence: UInt64 = 0
    private var sent = 0
    private var verifier = FlowVerifier()
    private var streamStart: UInt64 = 0
    private var lastFrameAt: UInt64 = 0
    /// The longest gap in the open downtime window (nil: no window open).
    private var windowGap: UInt64?
    private var framesInWindowTail = 0
    private var steadyGap: UInt64 = 0
    static let guestMACText = "02:00:00:00:d0:01"
    static let guestMAC = MACAddress(guestMACText)!

    init(_ options: Options) {
        self.options = options
        report.models = [options.models.0, options.models.1]
        report.rate = options.rate
        report.frameBytes = options.frameBytes
    }

    func run() throws -> Report {
        let start = Clock.monotonicNanoseconds()
        let key = try Self.writeKey()
        defer { unlink(key) }
        defer { teardown() }
        sides.append(try makeSide("A", model: options.models.0, key: key, peerMAC: "02:00:00:00:d0:0a"))
        sides.append(try makeSide("B", model: options.models.1, key: key, peerMAC: "02:00:00:00:d0:0b"))
        // One receive queue: the stream's one sequence comes from two senders in turn (A's peer,
        // then B's), whose frames RSS would spread over queues by their addresses, and no NIC
        // keeps order across its queues. On one queue, order is the migration's to keep.
        guest = try sides[0].host.attach("roamer", mac: Self.guestMACText, memoryMiB: 32) { $0.rxQueues = 1 }
        sender = sides[0].peer
        streamStart = Clock.monotonicNanoseconds()
        lastFrameAt = streamStart
        if options.passthrough { try switchIn(at: sides[0]) }
        stream(forMilliseconds: options.settleMilliseconds)
        // The baseline's buffers are those of a quiet stream: the peer's transmissions all back.
        _ = sender.flush(timeoutMilliseconds: 10_000)
        report.before = try snapshot()
        var outcomes: [Outcome] = []
        for index in 0..<options.migrations {
            let from = side(of: guest), to = from === sides[0] ? sides[1] : sides[0]
            let before = (verifier.outOfOrder, verifier.duplicates, verifier.gaps, report.announcementsReceived)
            let outcome = try migrate(index: index, from: from, to: to)
            outcomes.append(outcome)
            onMigration?(outcome, self)
            stream(forMilliseconds: options.settleMilliseconds)
            attribute(index: index, from: from, to: to, since: before)
        }
        finishStream()
        summarize(outcomes)
        report.after = try settledSnapshot()
        // Where lost frames went: the drop and migration counters of the guest's vNIC on both hosts.
        for s in sides {
            for v in try s.host.admin.status().vnics where v.name == guest.name {
                for (k, n) in v.counters where n > 0 && (k.hasPrefix("drop_") || k.hasPrefix("migration_")) {
                    report.guestCounters["\(s.label) \(k)"] = n
                }
            }
        }
        for key in report.before.keys.sorted() where !key.hasPrefix("A ") && !key.hasPrefix("B ") {
            if report.before[key] != report.after[key] {
                report.leaks.append("\(key): \(report.before[key]!) before, \(report.after[key] ?? -1) after")
            }
        }
        report.seconds = Double(Clock.monotonicNanoseconds() - start) / 1e9
        return report
    }

    /// The side the guest is on now.
    func side(of nic: VirtualNIC) -> Side { sides.first { $0.host.socket == nic.hostSocket } ?? sides[0] }

    // MARK: Setup

    private func makeSide(_ label: String, model: String, key: String, peerMAC: String) throws -> Side {
        var config = HostConfiguration()
        config.nics = [.init(name: "nic0", model: model, vfs: 4)]
        config.uplink = .nic("nic0")
        options.plugins.configure(&config)
        config.migrationKeyFile = key
        config.migrationListen =
            NSTemporaryDirectory() + "npa-msoak-\(getpid())-\(UInt32.random(in: 0...UInt32.max))-\(label).migrate"
        // The stream's receiver is driven by this thread, which the scheduler may set aside on a
        // busy machine: let its senders wait as the demo's host does, rather than drop.
        config.receiverStallMilliseconds = 5_000
        if let timeout = options.migrationTimeoutMilliseconds { config.migrationTimeoutMilliseconds = timeout }
        if let quiet = options.forwardingQuietMilliseconds { config.migrationForwardingQuietMilliseconds = quiet }
        let host = try InProcessHost(label: "msoak-\(label)", configuration: config)
        guard let address = host.daemon.migrationAddress else {
            host.stop()
            throw CommandFailure("host \(label) has no migration listener")
        }
        let peer = try host.attach("peer-\(label.lowercased())", mac: peerMAC, memoryMiB: 16)
        return Side(label: label, model: model, host: host, address: address, peer: peer)
    }

    private func switchIn(at side: Side) throws {
        _ = try side.host.admin.switchVNIC(name: guest.name, toPassthrough: true)
        let deadline = Clock.monotonicNanoseconds() + 10_000_000_000
        while guest.mode != "passthrough" && Clock.monotonicNanoseconds() < deadline { step() }
        guard guest.mode == "passthrough" else { throw CommandFailure("the guest did not switch in to a VF of host \(side.label)") }
    }

    // MARK: The stream

    /// Sends what the rate says is due from the current peer, takes what reached the guest and
    /// times the gap since the frame before.
    private func step() {
        let now = Clock.monotonicNanoseconds()
        let due = Int(Double(now - streamStart) * options.rate / 1e9)
        var moved = 0
        if due > sent {
            let destination = Self.guestMAC, source = sender.mac, first = sequence, size = options.frameBytes
            let n = sender.transmit(queue: 0, count: min(due - sent, 64)) { i, buffer in
                TrafficFrame.write(
                    into: buffer, destination: destination, source: source, flow: 0, sequence: first + UInt64(i), length: size)
            }
            sequence += UInt64(n)
            sent += n
            moved += n
        }
        if let previous = previousSender {
            _ = previous.reclaimTransmitted()
            if previous.buffersOutstanding == previous.postedReceiveBuffers { previousSender = nil }
        }
        var got = 0
        let all = guest.receive(maxFrames: 256, timeoutMilliseconds: 0) { frame in
            if TrafficFrame.parse(frame.bytes) != nil {
                verifier.record(frame.bytes)
                got += 1
            } else {
                noteOther(frame.bytes)
            }
        }
        if got > 0 {
            let at = Clock.monotonicNanoseconds()
            let gap = at - lastFrameAt
            if let open = windowGap {
                windowGap = max(open, gap)
                framesInWindowTail += got
            } else {
                steadyGap = max(steadyGap, gap)
            }
            lastFrameAt = at
        }
        moved += all
        // Nothing due and nothing arrived: let the hosts' threads have the cores for a moment.
        if moved == 0 { EngineThread.sleep(microseconds: 100) }
    }

    /// A frame that is not the stream's: a self-announcement (RARP, EtherType 0x8035, tagged or
    /// not) of the guest's own MAC that came back to it is counted apart; anything else is
    /// invalid, and the first few are kept (as hex) for the report.
    private func noteOther(_ frame: UnsafeRawBufferPointer) {
        let tagged = frame.count >= 18 && frame[12] == 0x81 && frame[13] == 0x00
        let type = frame.count >= 14 ? (tagged ? (frame[16], frame[17]) : (frame[12], frame[13])) : (0, 0)
        if type == (0x80, 0x35) {
            report.announcementsReceived += 1
            return
        }
        report.invalid += 1
        if report.invalidSamples.count < 4 {
            report.invalidSamples.append(frame.prefix(64).map { String(format: "%02x", $0) }.joined())
        }
    }

    private func stream(forMilliseconds milliseconds: Int) {
        let until = Clock.monotonicNanoseconds() + UInt64(milliseconds) * 1_000_000
        while Clock.monotonicNanoseconds() < until { step() }
    }

    /// The stream's peer is the one on the guest's host: the guest re-attached elsewhere, so
    /// the other peer takes the stream over (same flow, next sequence number).
    private func followGuest() {
        let peer = side(of: guest).peer
        guard peer !== sender else { return }
        previousSender = sender
        sender = peer
    }

    private func finishStream() {
        for s in sides { _ = s.peer.flush(timeoutMilliseconds: 10_000) }
        let deadline = Clock.monotonicNanoseconds() + 20_000_000_000
        while verifier.unique < sent && Clock.monotonicNanoseconds() < deadline {
            let n = guest.receive(maxFrames: 256, timeoutMilliseconds: 10) { frame in
                if TrafficFrame.parse(frame.bytes) != nil { verifier.record(frame.bytes) } else { noteOther(frame.bytes) }
            }
            if n == 0 { continue }
        }
        report.sent = sent
        report.received = verifier.unique
        report.lost = sent - verifier.unique
        report.duplicates = verifier.duplicates
        report.outOfOrder = verifier.outOfOrder
        report.invalid += verifier.invalid
        report.steadyMaxGapMilliseconds = Double(steadyGap) / 1e6
    }

    // MARK: One migration

    private func migrate(index: Int, from: Side, to: Side) throws -> Outcome {
        windowGap = 0
        framesInWindowTail = 0
        defer { windowGap = nil }
        let id: UInt64
        do { id = try from.host.admin.migrate(name: guest.name, to: to.address) } catch {
            report.failures.append("migration \(index + 1) \(from.label)→\(to.label) refused: \(error)")
            return Outcome(
                index: index, from: from.label, to: to.label, record: nil, downtimeMilliseconds: 0, guestAt: side(of: guest).label,
                guestMode: guest.mode)
        }
        var record: StatusReport.Migration?
        var lastPoll: UInt64 = 0
        var settledSince: UInt64?
        var finishedAt: UInt64 = 0
        let deadline = Clock.monotonicNanoseconds() + 60_000_000_000
        while Clock.monotonicNanoseconds() < deadline {
            step()
            followGuest()
            let now = Clock.monotonicNanoseconds()
            if record == nil, now - lastPoll > 5_000_000 {
                lastPoll = now
                // Polled every 5 ms: each request is a round trip to the source's host thread.
                if let m = try from.host.admin.migration(id: id), m.isFinished {
                    record = m
                    finishedAt = now
                }
            }
            guard let finished = record else { continue }
            if finished.phase != "completed" { break }
            // The window closes once the guest, at the destination and switched in there (or
            // after 5 s without that), has received a frame.
            if guest.hostSocket == to.host.socket, settledSince == nil,
                guest.mode == "passthrough" || !options.passthrough || now - finishedAt > 5_000_000_000
            {
                settledSince = now
                framesInWindowTail = 0
            }
            if settledSince != nil && framesInWindowTail > 0 { break }
        }
        let outcome = Outcome(
            index: index, from: from.label, to: to.label, record: record, downtimeMilliseconds: Double(windowGap ?? 0) / 1e6,
            guestAt: side(of: guest).label, guestMode: guest.mode)
        if !outcome.completed {
            report.failures.append(
                "migration \(index + 1) \(from.label)→\(to.label): \(record?.error ?? record?.phase ?? "did not finish within 60 s")")
        } else if options.passthrough && outcome.guestMode != "passthrough" {
            report.failures.append(
                "migration \(index + 1) \(from.label)→\(to.label): the guest was not switched in to a VF of \(to.label) within 5 s")
        }
        return outcome
    }

    /// Tells which migration broke the stream (frames missing behind newer ones, out of order,
    /// duplicated) or brought the guest its own self-announcement: the counts are the whole
    /// stream's, so each migration's share is its difference. Breakage is a failure, with the
    /// guest vNIC's drop counters where it is now; an announcement is a note.
    private func attribute(index: Int, from: Side, to: Side, since before: (Int, Int, Int, Int)) {
        let now = (verifier.outOfOrder, verifier.duplicates, verifier.gaps, report.announcementsReceived)
        let label = "migration \(index + 1) \(from.label)→\(to.label)"
        if now.0 != before.0 || now.1 != before.1 || now.2 != before.2 {
            let drops = ((try? side(of: guest).host.admin.status().vnics.first { $0.name == guest.name }?.counters) ?? [:])
                .filter { $0.value > 0 && ($0.key.hasPrefix("drop_") || $0.key.hasPrefix("migration_")) }
                .sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            report.failures.append(
                "\(label): \(now.2 - before.2) frames missing, \(now.0 - before.0) out of order, \(now.1 - before.1) duplicates (guest \(guest.mode) at \(side(of: guest).label); its vNIC there: \(drops.isEmpty ? "no drops" : drops))"
            )
        }
        if now.3 != before.3 {
            report.notes.append("\(label): the guest received \(now.3 - before.3) of its own self-announcements (RARP)")
        }
    }

    private func summarize(_ outcomes: [Outcome]) {
        let done = outcomes.filter(\.completed)
        report.migrations = outcomes.count
        report.completed = done.count
        report.failed = outcomes.count - done.count
        report.switchedIn = done.filter { $0.guestMode == "passthrough" && $0.guestAt == $0.to }.count
        report.downtimeMilliseconds = Soak.Percentiles(done.map(\.downtimeMilliseconds))
        report.deviceDowntimeMilliseconds = Soak.Percentiles(done.compactMap { $0.record?.deviceDowntimeMilliseconds })
        var phases: [String: [Double]] = [:]
        for o in done { for p in o.record?.phases ?? [] { phases[p.name, default: []].append(p.milliseconds) } }
        report.phaseMedianMilliseconds = phases.mapValues { Soak.Percentiles($0).p50 }
        report.framesForwarded = outcomes.reduce(0) { $0 + ($1.record?.framesForwarded ?? 0) }
        report.framesLostByHosts = outcomes.reduce(0) { $0 + ($1.record?.framesLost ?? 0) }
    }

    // MARK: Leaks

    /// Per host (vNICs, control connections, VFs in use) and their sums, the guests' buffers out
    /// of their pools beyond what is posted for receive, and the process's open descriptors.
    private func snapshot() throws -> [String: Int] {
        var counts: [String: Int] = [:]
        for s in sides {
            let status = try s.host.admin.status()
            let values = [
                "vnics": status.vnics.count, "connections": status.host?.connections ?? -1,
                "vfs_in_use": status.vnics.filter { $0.vf != nil }.count,
                "migrations_under_way": (status.migrations ?? []).filter { !$0.isFinished }.count,
            ]
            for (k, v) in values {
                counts["\(s.label) \(k)"] = v
                counts[k, default: 0] += v
            }
        }
        counts["buffers_outstanding"] = ([guest] + sides.map(\.peer)).reduce(0) { $0 + $1.buffersOutstanding - $1.postedReceiveBuffers }
        counts["open_descriptors"] = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
        return counts
    }

    /// The snapshot once it matches the one before (the source lets a departed vNIC go after
    /// its forwarding, connections close on the hosts' threads), or after 10 s.
    private func settledSnapshot() throws -> [String: Int] {
        let deadline = Clock.monotonicNanoseconds() + 10_000_000_000
        var now = try snapshot()
        func same(_ s: [String: Int]) -> Bool {
            report.before.keys.allSatisfy { $0.hasPrefix("A ") || $0.hasPrefix("B ") || s[$0] == report.before[$0] }
        }
        while !same(now) && Clock.monotonicNanoseconds() < deadline {
            EngineThread.sleep(microseconds: 10_000)
            _ = guest.receive(maxFrames: 256, timeoutMilliseconds: 0) { _ in }
            now = try snapshot()
        }
        return now
    }

    private func teardown() {
        guest?.detach()
        for s in sides {
            s.peer.detach()
            s.host.stop()
        }
    }

    /// A 32-byte key as 64 hex characters, in a file only its owner may read (both hosts' `migration_key_file`).
    private static func writeKey() throws -> String {
        let path = NSTemporaryDirectory() + "npa-msoak-key-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        var generator = SystemRandomNumberGenerator()
        let hex = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
        guard FileManager.default.createFile(atPath: path, contents: Data(hex.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw CommandFailure("cannot write a migration key file at \(path)")
        }
        return path
    }
}
