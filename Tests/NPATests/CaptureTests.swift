import Foundation
import NPAAdmin
import NPAControlProtocol
import NPANICModel
import NPAShell
import NPASystem
import NPATestSupport
import SystemPackage
import Testing

@testable import NPAHost

/// `npa capture` (issue 13): the pcap records the host writes, read back; a real `tshark -r`
/// counting exactly the frames a vNIC sent and received in emulated mode, in passthrough (the
/// NIC's port mirror) and across switches; a full capture ring dropping copies, not frames;
/// bad requests answered clearly.
@Suite(.serialized) struct CaptureTests {
    static let tshark = "/usr/bin/tshark"
    static var hasTShark: Bool { FileManager.default.isExecutableFile(atPath: tshark) }

    @Test func pcapRecordsReadBackAsWritten() throws {
        let frames: [[UInt8]] = [Array(0..<60), Array(repeating: 0xEE, count: 1514), [1, 2, 3]]
        var file = PcapFormat.fileHeader(snapLength: 9216)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 8)
        defer { buffer.deallocate() }
        for (i, f) in frames.enumerated() {
            let n = f.withUnsafeBytes {
                PcapFormat.writeRecord(
                    to: buffer, frame: $0, originalLength: f.count + i, nanoseconds: 1_700_000_000_123_456_789 + UInt64(i))
            }
            file += Array(UnsafeRawBufferPointer(start: buffer, count: n))
        }
        let read = try PcapFile(file)
        #expect(read.magic == 0xa1b2_3c4d && read.version == "2.4" && read.snapLength == 9216 && read.linkType == 1)
        #expect(read.records.map(\.bytes) == frames)
        #expect(read.records.map(\.originalLength) == frames.enumerated().map { $0.element.count + $0.offset })
        #expect(read.records.map(\.seconds) == [1_700_000_000, 1_700_000_000, 1_700_000_000])
        #expect(read.records.map(\.nanoseconds) == [123_456_789, 123_456_790, 123_456_791])
    }

    @Test func theCaptureMessagesRoundTripAndABadDirectionIsRefused() throws {
        let messages: [ControlMessage] = [
            .captureStart(CaptureRequest(vnic: "alpha", direction: .received, count: 7)), .captureStop,
            .captureEnded(CaptureOutcome(frames: 12, dropped: 3, failure: "disk full")),
        ]
        for m in messages { #expect(try ControlMessage.parse(m.encode()) == m) }
        var bytes = ControlMessage.captureStart(CaptureRequest(vnic: "a", direction: .both)).encode()
        bytes[ControlMessage.headerSize + 2 + 1] = 9  // the direction byte, after the name's length and byte
        #expect(throws: (any Error).self) { try ControlMessage.parse(bytes) }
        #expect(!ControlMessage.captureEnded(CaptureOutcome(frames: 0, dropped: 0)).isAdministrative)
        #expect(ControlMessage.captureStart(CaptureRequest(vnic: "a")).isAdministrative && ControlMessage.captureStop.isAdministrative)
    }

    @Test func aFullCaptureRingDropsAndCountsTheCopyAndKeepsTheOldest() {
        let ring = CaptureRing(capacity: 4)
        var frame = [UInt8](repeating: 0, count: 64)
        for i in 0..<6 {
            frame[0] = UInt8(i)
            frame.withUnsafeBytes {
                _ = ring.push($0.baseAddress!, length: 64, direction: i % 2 == 0 ? .received : .transmitted, timestamp: UInt64(i))
            }
        }
        #expect(ring.drops == 2)
        #expect(ring.oldestTimestamp == 0)
        var seen: [(UInt8, CaptureRing.Direction, UInt64)] = []
        ring.pop(max: 16) { seen.append(($0.bytes[0], $0.direction, $0.timestamp)) }
        #expect(seen.map(\.0) == [0, 1, 2, 3] && seen.map(\.2) == [0, 1, 2, 3])
        #expect(seen.map(\.1) == [.received, .transmitted, .received, .transmitted])
        #expect(ring.isEmpty && ring.oldestTimestamp == nil)
    }

    @Test(.enabled(if: hasTShark, "tshark is not installed (scripts/install-deps.sh installs it)"))
    func theCLICapturesExactlyTheFramesAnEmulatedGuestSent() throws {
        let fixture = try Self.fixture(switchIn: (false, false))
        defer { fixture.stop() }
        let path = Self.temporaryPath()
        defer { unlink(path) }
        let total = 300
        let cli = try NPAProcess([
            "capture", "a", "--host", fixture.host.socketPath, "-w", path, "--count", "\(total)", "--direction", "tx",
        ])
        #expect(cli.line(containing: "capturing vNIC 'a'", onStandardError: true) != nil)
        Self.stream(fixture.a, fixture.b, 0..<UInt64(total))
        let (status, _, stderr) = cli.finish()
        #expect(status == 0, "\(stderr)")
        #expect(stderr.contains("\(total) frames written to \(path), 0 capture copies dropped"), "\(stderr)")
        let read = try Self.readWithTShark(path)
        #expect(read.count == total)
        #expect(read.allSatisfy { $0.source == fixture.a.mac.description })
        #expect(read.map(\.sequence) == Array(0..<UInt64(total)))
    }

    @Test(.enabled(if: hasTShark, "tshark is not installed (scripts/install-deps.sh installs it)"), arguments: NICModelRegistry.names)
    func thePortMirrorCapturesExactlyWhatAPassthroughGuestSentAndReceived(_ model: String) throws {
        let fixture = try Self.fixture(model: model, switchIn: (true, true))
        defer { fixture.stop() }
        let (host, a, b) = (fixture.host, fixture.a, fixture.b)
        #expect(a.mode == "passthrough" && b.mode == "passthrough", "\(a.lastSwitchError ?? "") \(b.lastSwitchError ?? "")")
        let path = Self.temporaryPath()
        defer { unlink(path) }
        let session = try Self.capture(host, "a", path, count: 400)
        let vf = try #require(try host.vfIndex(of: "a"))
        #expect(host.daemon.pfDriver.nics[0].isMirrored(vf: vf))
        Self.stream(a, b, 0..<200)
        Self.stream(b, a, 1000..<1200)
        let outcome = try #require(try session.waitForEnd(timeoutMilliseconds: 60_000))
        #expect(outcome == CaptureOutcome(frames: 400, dropped: 0))
        let read = try Self.readWithTShark(path)
        #expect(read.filter { $0.source == a.mac.description }.map(\.sequence) == Array(0..<200))
        #expect(read.filter { $0.source == b.mac.description }.map(\.sequence) == Array(1000..<1200))
        #expect(read.count == 400)
        // The mirror is off once the capture ended: the VF's frames are no longer copied.
        #expect(!host.daemon.pfDriver.nics[0].isMirrored(vf: vf))
    }

    @Test(.enabled(if: hasTShark, "tshark is not installed (scripts/install-deps.sh installs it)"))
    func aCaptureRunsOnAcrossSwitchesWithNoFrameTwiceAndNoneMissing() throws {
        let fixture = try Self.fixture(switchIn: (false, false))
        defer { fixture.stop() }
        let (host, a, b) = (fixture.host, fixture.a, fixture.b)
        let path = Self.temporaryPath()
        defer { unlink(path) }
        let session = try Self.capture(host, "a", path, count: nil)
        var sentByA: [UInt64] = [], sentByB: [UInt64] = []
        var receivedAtA: [UInt64] = [], receivedAtB: [UInt64] = []
        var nextA: UInt64 = 0, nextB: UInt64 = 10_000
        func send(_ from: VirtualNIC, _ to: VirtualNIC, count: Int, waiting: Bool) {
            let first = from === a ? nextA : nextB
            let n = from.send((first..<first + UInt64(count)).map { Self.frame(from: from.mac, to: to.mac, sequence: $0) })
            if from === a {
                sentByA += first..<first + UInt64(n); nextA += UInt64(n)
            } else {
                sentByB += first..<first + UInt64(n); nextB += UInt64(n)
            }
            guard waiting else { return }
            Self.receive(a, into: &receivedAtA, until: sentByB.count)
            Self.receive(b, into: &receivedAtB, until: sentByA.count)
        }
        // Emulated, then passthrough, then emulated again; each switch with frames in flight
        // both ways while the guest carries it out.
        for phase in 0..<3 {
            for _ in 0..<10 {
                send(a, b, count: 10, waiting: true)
                send(b, a, count: 10, waiting: true)
            }
            guard phase < 2 else { break }
            try host.admin.switchVNIC(name: "a", toPassthrough: phase == 0)
            send(a, b, count: 20, waiting: false)
            send(b, a, count: 20, waiting: false)
            try Self.waitUntil("a switched") {
                _ = a.reclaimTransmitted()
                a.receive(maxFrames: 64, timeoutMilliseconds: 0) { receivedAtA.append(Self.sequence(of: $0.bytes)) }
                return a.mode == (phase == 0 ? "passthrough" : "emulated")
            }
            Self.receive(a, into: &receivedAtA, until: sentByB.count)
            Self.receive(b, into: &receivedAtB, until: sentByA.count)
        }
        let outcome = try session.stop()
        #expect(outcome.dropped == 0 && outcome.failure == "")
        let read = try Self.readWithTShark(path)
        #expect(UInt64(read.count) == outcome.frames)
        let sent = read.filter { $0.source == a.mac.description }.map(\.sequence)
        let received = read.filter { $0.source == b.mac.description }.map(\.sequence)
        #expect(sent.count == sentByA.count && Set(sent) == Set(sentByA), "each frame a sent, once")
        #expect(received.count == receivedAtA.count && Set(received) == Set(receivedAtA), "each frame a received, once")
        #expect(receivedAtA.count == sentByB.count && receivedAtB.count == sentByA.count, "frames lost at a switch")
        let events = try host.admin.allEvents(after: 0).events.filter { $0.kind == .capture }
        #expect(events.map(\.detail).first?.hasPrefix("capture started (both, until stopped, emulated)") == true)
        #expect(events.last?.detail == "capture ended: \(outcome.frames) frames written, 0 copies dropped")
    }

    @Test func badRequestsGetClearErrors() throws {
        let fixture = try Self.fixture(switchIn: (false, false))
        defer { fixture.stop() }
        let host = fixture.host
        let path = Self.temporaryPath()
        defer { unlink(path) }
        #expect(throws: AdminClient.Failure.refused(code: 5, message: "no vNIC named 'ghost' on this host (it has: 'a', 'b')")) {
            try Self.capture(host, "ghost", path, count: nil)
        }
        let first = try Self.capture(host, "a", path, count: nil)
        #expect(
            throws: AdminClient.Failure.refused(
                code: 4, message: "a capture of vNIC 'a' is already running (one capture per vNIC at a time: stop it first)")
        ) { try Self.capture(host, "a", path, count: nil) }
        _ = try first.stop()
        let readOnly = try FileDescriptor.open(path, .readOnly)
        defer { try? readOnly.close() }
        #expect(throws: AdminClient.Failure.refused(code: 5, message: "the capture's output descriptor is not writable: opened read-only"))
        {
            try CaptureSession(socketPath: host.adminSocketPath, request: CaptureRequest(vnic: "a"), output: readOnly)
        }
        // The CLI's own checks, before it asks the host.
        for (arguments, message) in [
            (["--count", "0"], "--count must be at least 1"), (["--direction", "sideways"], "--direction must be rx, tx or both"),
        ] {
            let p = try NPAProcess(["capture", "a", "--host", host.socketPath, "-w", path] + arguments)
            let (status, _, stderr) = p.finish()
            #expect(status != 0 && stderr.contains(message), "\(stderr)")
        }
        let p = try NPAProcess(["capture", "a", "--host", host.socketPath, "-w", "/nonexistent-dir/x.pcap"])
        let (status, _, stderr) = p.finish()
        #expect(status != 0 && stderr.contains("cannot open /nonexistent-dir/x.pcap for writing"), "\(stderr)")
        // A refused capture (a mistyped guest) leaves an earlier file of that name as it was, and
        // no file of its own beside it.
        let earlier = Array("an earlier capture".utf8)
        FileManager.default.createFile(atPath: path, contents: Data(earlier))
        let typo = try NPAProcess(["capture", "aa", "--host", host.socketPath, "-w", path])
        let refused = typo.finish()
        #expect(refused.status != 0 && refused.stderr.contains("no vNIC named 'aa'"), "\(refused.stderr)")
        #expect(FileManager.default.contents(atPath: path) == Data(earlier))
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        let name = URL(fileURLWithPath: path).lastPathComponent
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasPrefix("." + name) }.isEmpty)
        // The vNIC is free again: a new capture starts.
        _ = try Self.capture(host, "a", path, count: nil).stop()
        #expect(try host.status(of: "a")?.counters["capture_dropped"] == 0)
    }

    @Test func anInterruptedCLIFlushesAndSaysWhatItWrote() throws {
        let fixture = try Self.fixture(switchIn: (false, false))
        defer { fixture.stop() }
        let path = Self.temporaryPath()
        defer { unlink(path) }
        let cli = try NPAProcess(["capture", "b", "--host", fixture.host.socketPath, "-w", path])
        #expect(cli.line(containing: "capturing vNIC 'b'", onStandardError: true) != nil)
        Self.stream(fixture.a, fixture.b, 0..<50)
        kill(cli.process.processIdentifier, SIGINT)
        let (status, _, stderr) = cli.finish()
        #expect(status == 0, "\(stderr)")
        #expect(stderr.contains("50 frames written to \(path), 0 capture copies dropped"), "\(stderr)")
        let file = try PcapFile(Array(try Data(contentsOf: URL(fileURLWithPath: path))))
        #expect(file.records.count == 50)
    }

    @Test func aWriterThatFallsBehindDropsCopiesNeverFrames() throws {
        let fixture = try Self.fixture(switchIn: (false, false))
        defer { fixture.stop() }
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        let readEnd = FileDescriptor(rawValue: ends[0])
        let writeEnd = FileDescriptor(rawValue: ends[1])
        let request = CaptureRequest(vnic: "a", direction: .transmitted)
        let session = try CaptureSession(socketPath: fixture.host.adminSocketPath, request: request, output: writeEnd)
        try writeEnd.close()
        // Nobody reads the pipe yet: the writer blocks once it is full, with at most one batch
        // in hand (< 14,000 small records) and a ring of 4,096 behind it; the rest must drop.
        let total = 40_000
        let received = Self.stream(fixture.a, fixture.b, 0..<UInt64(total))
        #expect(received.count == total, "every frame reached b: none waited for the capture")
        let dropped = try #require(try fixture.host.status(of: "a")?.counters["capture_dropped"])
        #expect(dropped > 0)
        // Now read the pipe to its end, so the writer can finish.
        let reader = PipeReader(readEnd)
        let outcome = try session.stop()
        let bytes = reader.finish()
        #expect(outcome.frames + outcome.dropped == UInt64(total))
        #expect(outcome.dropped >= dropped)
        #expect(try PcapFile(bytes).records.count == Int(outcome.frames))
        #expect(try fixture.host.status(of: "a")?.counters["capture_dropped"] == outcome.dropped)
    }
}

extension CaptureTests {
    @Test func aStopWhileTheWriterIsStuckOnAPipeNeverHoldsUpTheHost() throws {
        let fixture = try Self.fixture(switchIn: (false, false))
        defer { fixture.stop() }
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        let request = CaptureRequest(vnic: "a", direction: .transmitted)
        let session = try CaptureSession(
            socketPath: fixture.host.adminSocketPath, request: request, output: FileDescriptor(rawValue: ends[1]))
        try FileDescriptor(rawValue: ends[1]).close()
        // 1.5 MB of records for a 64 KiB pipe nobody reads: the writer is blocked in write().
        Self.stream(fixture.a, fixture.b, 0..<20_000)
        // The stop is taken, but the writer cannot drain: no answer yet (and none can come
        // before the pipe is read, whatever the wait)...
        #expect(throws: AdminClient.Failure.noAnswer) { try session.stop(timeoutMilliseconds: 200) }
        // ... while the host serves on: its admin socket and the vNICs' frames.
        #expect(try fixture.host.status(of: "a") != nil)
        #expect(Self.stream(fixture.a, fixture.b, 20_000..<20_100).count == 100)
        let reader = PipeReader(FileDescriptor(rawValue: ends[0]))
        let outcome = try #require(try session.waitForEnd(timeoutMilliseconds: 60_000))
        #expect(outcome.frames + outcome.dropped == 20_000, "the frames after the stop are not in the capture")
        #expect(try PcapFile(reader.finish()).records.count == Int(outcome.frames))
    }
}

/// Reads a pipe to its end on a thread of its own.
final class PipeReader: @unchecked Sendable {
    private var bytes: [UInt8] = []
    private var thread: pthread_t?

    init(_ fd: FileDescriptor) {
        thread = EngineThread.start(name: "pipe-reader") { [self] in
            var chunk = [UInt8](repeating: 0, count: 65536)
            while let n = try? chunk.withUnsafeMutableBytes({ try fd.read(into: $0) }), n > 0 { bytes += chunk[0..<n] }
            try? fd.close()
        }
    }

    func finish() -> [UInt8] {
        if let thread { EngineThread.join(thread) }
        thread = nil
        return bytes
    }
}
