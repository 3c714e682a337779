import Glibc
import NPAControlProtocol
import NPANICModel
import NPASystem
import SystemPackage

/// One running capture of a vNIC (`npa capture`): the rings the data paths copy its frames
/// into, and the writer thread that drains them into the client's descriptor as a pcap file.
///
/// Two rings, one producer each: `emulatedRing` is filled by the host's thread (device
/// emulation: `HostDataPath+Capture.swift`), `mirrorRing` by the NIC engine (the VF's port
/// mirror, set by the PF driver while the vNIC is on a VF). The writer merges them in timestamp
/// order. The capture belongs to the vNIC, not to a mode: both rings stay attached across
/// switches, and each frame passes exactly one of the two data paths. A full ring drops the copy
/// (counted), never the frame. The host's thread owns everything but the writer's side of the
/// rings, the output descriptor, and the words the writer publishes (`framesWritten`, `finished`).
final class PacketCapture: @unchecked Sendable {
    let vnic: String
    let direction: CaptureDirection
    /// Frames after which the capture ends (0: until stopped).
    let limit: UInt64
    let emulatedRing: CaptureRing
    let mirrorRing: CaptureRing
    /// Signalled by the writer when it finished (`limit` reached, the output failed, or it
    /// drained the rings after a stop); the host's event loop then answers the client.
    let done: EventNotifier
    /// `emulatedRing` unretained, per direction, for device emulation's per-frame check; nil
    /// for a direction this capture does not want.
    let receivedRing: Unmanaged<CaptureRing>?
    let transmittedRing: Unmanaged<CaptureRing>?
    private let output: FileDescriptor
    /// Words shared with the writer: stop request (host → writer), finished flag and frames
    /// written (writer → host).
    private let shared: UnsafeMutableRawPointer
    /// Why the output failed (written by the writer before it sets `finished`; read after).
    private var writeFailure: String?
    /// Host thread only: the vNIC went away while the capture ran; the data paths no longer
    /// copy into the rings (`ControlServer.detach`), and the copies they dropped until then.
    var wentAway = false
    var isDetached = false
    var droppedAtDetach: UInt64 = 0

    static let ringCapacity: UInt32 = 4096

    init(vnic: String, direction: CaptureDirection, limit: UInt64, output: FileDescriptor) throws {
        self.vnic = vnic
        self.direction = direction
        self.limit = limit
        self.output = output
        emulatedRing = CaptureRing(capacity: Self.ringCapacity)
        mirrorRing = CaptureRing(capacity: Self.ringCapacity)
        done = try EventNotifier()
        let ring = Unmanaged.passUnretained(emulatedRing)
        receivedRing = direction != .transmitted ? ring : nil
        transmittedRing = direction != .received ? ring : nil
        shared = .allocate(byteCount: 192, alignment: 64)
        shared.initializeMemory(as: UInt8.self, repeating: 0, count: 192)
    }

    // Runs once the writer thread, which holds the capture, has returned.
    deinit {
        try? output.close()
        shared.deallocate()
    }

    /// Starts the writer thread: the pcap file header, then records as they come. Nobody joins
    /// it: a writer blocked on a reader that does not read (a pipe) must never hold up the
    /// host's thread; it holds the capture until it returns.
    func start() {
        let thread = EngineThread.start(name: "npa-capture") { [self] in runWriter() }
        pthread_detach(thread)
    }

    /// Frames written to the output so far.
    var framesWritten: UInt64 { SharedWord.loadRelaxedU64(shared + 128) }
    /// Whether the writer has finished: it writes nothing more (`framesWritten` is final).
    var finished: Bool { SharedWord.loadAcquire(shared + 64) != 0 }
    /// Why the output failed, once `finished`; nil if it did not.
    var failure: String? { finished ? writeFailure : nil }

    /// Asks the writer to end: the data paths must no longer produce into the rings (the
    /// caller detached the capture and cleared the VF's mirror first); the writer drains what
    /// they hold (up to the limit), finishes and signals `done`. Returns at once.
    func requestStop() { SharedWord.storeRelease(shared, 1) }

    // MARK: The writer thread

    private func runWriter() {
        // A reader that went away (a pipe into `tcpdump -r -` closed) must fail this write with
        // EPIPE, not kill the host: SIGPIPE from a write is sent to the writing thread.
        var pipeSignal = sigset_t()
        sigemptyset(&pipeSignal)
        sigaddset(&pipeSignal, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &pipeSignal, nil)
        let bufferSize = 1 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: bufferSize, alignment: 64)
        defer { buffer.deallocate() }
        var written: UInt64 = 0
        // Timestamps are monotonic; the file's are wall-clock: one offset, taken now.
        let epochOffset = Self.realtimeNanoseconds() &- Clock.monotonicNanoseconds()
        do {
            try output.writeAll(PcapFormat.fileHeader(snapLength: CaptureRing.snapLength))
            while true {
                let stopping = SharedWord.loadAcquire(shared) != 0
                var used = 0
                var taken = 0
                while used + PcapFormat.recordHeaderLength + CaptureRing.snapLength <= bufferSize && (limit == 0 || written < limit),
                    let ring = nextRing()
                {
                    taken += 1
                    ring.pop(max: 1) { record in
                        guard wants(record.direction) else { return }
                        used += PcapFormat.writeRecord(
                            to: buffer + used, frame: record.bytes, originalLength: record.originalLength,
                            nanoseconds: record.timestamp &+ epochOffset)
                        written += 1
                    }
                }
                if used > 0 {
                    try output.writeAll(UnsafeRawBufferPointer(start: buffer, count: used))
                    SharedWord.storeRelaxedU64(shared + 128, written)
                }
                if limit != 0 && written >= limit { break }
                if taken == 0 {
                    if stopping { break }
                    // Nothing to write: the writer polls (the data paths never signal it, so a
                    // capture costs them no system call); 1 ms bounds the latency.
                    EngineThread.sleep(microseconds: 1000)
                }
            }
        } catch {
            writeFailure = "writing the capture failed: \(error)"
        }
        SharedWord.storeRelease(shared + 64, 1)
        done.signal()
        // Finished before the host detached the capture (count reached, output failed): the
        // data paths copy on until it does. Keep the rings empty meanwhile, so that frames after
        // the end are not counted as dropped copies.
        while SharedWord.loadAcquire(shared) == 0 {
            emulatedRing.pop(max: Int.max) { _ in }
            mirrorRing.pop(max: Int.max) { _ in }
            EngineThread.sleep(microseconds: 1000)
        }
    }

    /// The ring whose oldest copy is the older (their producers' clocks are the same monotonic
    /// clock), or nil when both are empty.
    private func nextRing() -> CaptureRing? {
        switch (emulatedRing.oldestTimestamp, mirrorRing.oldestTimestamp) {
        case (nil, nil): nil
        case (.some, nil): emulatedRing
        case (nil, .some): mirrorRing
        case (.some(let e), .some(let m)): e <= m ? emulatedRing : mirrorRing
        }
    }

    private func wants(_ d: CaptureRing.Direction) -> Bool {
        switch direction {
        case .both: true
        case .received: d == .received
        case .transmitted: d == .transmitted
        }
    }

    private static func realtimeNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }
}
