import ArgumentParser
import Foundation
import NPAHost
import NPANICModel
import NPAShell
import NPASystem
import NPAWorkload

/// What both modes of one `npa bench` comparison share: the NIC model, queues per guest, the
/// notification policy (interrupts after a short spin, or busy-polling everywhere) and where
/// each role's thread runs. Nothing here differs between emulation and passthrough.
struct BenchSetup {
    var model = NICModel.dring.name
    var queues = 1
    var busyPoll = false
    /// Interrupt mode: empty polling passes before an engine sleeps, and polls before a guest
    /// sleeps on its interrupt (the same in both modes).
    var spin = 256
    /// Descriptors per ring (vmxnet3 allows up to 4096), the same for both modes.
    var ringSize = 4096
    /// Frames in flight before the sender waits for an acknowledgement: a fixed count, 0 for no
    /// window at all, or nil for `windowBytes` worth of frames (like a TCP window, in bytes, so
    /// jumbo frames do not keep tens of megabytes in flight), at most 3/4 of a ring.
    var windowFrames: Int? = nil
    var windowBytes = 4 << 20

    func window(frameBytes: Int) -> Int? {
        if let frames = windowFrames { return frames == 0 ? nil : frames }
        return max(64, min(ringSize * 3 / 4, windowBytes / frameBytes))
    }

    /// How the window is chosen, for the report.
    var windowDescription: String {
        guard let frames = windowFrames else { return "window \(windowBytes >> 20) MiB (at most \(ringSize * 3 / 4) frames)" }
        return frames == 0 ? "no window" : "window \(frames) frames"
    }
    /// CPUs for the sending guest, the receiving guest, the host and the NIC engine, or nil.
    var cpus: [Int]?
    var plugins: PluginSource

    /// The polling passes an engine makes before it sleeps; the guests spin as long.
    var idlePasses: Int { busyPoll ? Int.max : spin }
    var guestSpinPolls: Int { busyPoll ? Int.max : spin }
}

/// One measured run: a sending guest thread, a receiving guest thread, the host engine and the
/// NIC engine, each with its own CPU clock, over one wall-clock window.
struct BenchRun {
    var passthrough: Bool
    var frameBytes: Int
    /// Frames per second offered, or nil for as fast as the rings allow.
    var offeredRate: Double?
    var seconds = 0.0
    var sent = 0
    var received = 0
    var duplicates = 0
    var outOfOrder = 0
    var invalid = 0
    /// Frames the receiving side dropped, by reason (counted by the device or the VF).
    var dropped: UInt64 = 0
    var senderCPU = 0.0, receiverCPU = 0.0, hostCPU = 0.0, hardwareCPU = 0.0
    /// Eventfd signals: doorbell kicks the guests' drivers sent, interrupts the engines raised.
    var doorbellKicks: UInt64 = 0
    var interrupts: UInt64 = 0
    var windowStalls = 0
    /// Cache-line round trip between the guests' and the engines' CPUs just before the run
    /// (nil without pinning): the VM's vCPU placement, which can change between runs.
    var coreRoundTripNS: Double?
    /// What ran beside the traffic (`npa bench --observe`), and how many times it looked.
    var observer: BenchObserver?
    var observations = 0
    /// Capture copies dropped because the capture's writer fell behind (never frames).
    var observerDropped: UInt64 = 0

    var mode: String { passthrough ? "passthrough" : "emulated" }
    var mpps: Double { seconds > 0 ? Double(received) / seconds / 1e6 : 0 }
    var gbps: Double { seconds > 0 ? Double(received * frameBytes) * 8 / seconds / 1e9 : 0 }
    var megabytes: Double { Double(received * frameBytes) / 1e6 }
    var wakeupsPerMB: Double { megabytes > 0 ? Double(doorbellKicks + interrupts) / megabytes : 0 }
    func cores(_ cpuSeconds: Double) -> Double { seconds > 0 ? cpuSeconds / seconds : 0 }
    /// Both guests and the host, the CPU the RFC charges (the NIC engine is hardware).
    var guestAndHostCores: Double { cores(senderCPU + receiverCPU + hostCPU) }
}

extension BenchSetup {
    /// Runs one measurement: a fresh in-process host with one NIC, two guests attached (switched
    /// in automatically for passthrough), `seconds` of traffic from one to the other.
    /// With `observer`, it runs beside the traffic from before the first frame to after the last.
    func measure(frameBytes size: Int, passthrough: Bool, rate: Double?, seconds: Double, observer: BenchObserver? = nil) throws -> BenchRun
    {
        var config = HostConfiguration()
        config.nics = [.init(name: "nic0", model: model, vfs: 2)]
        config.uplink = .nic("nic0")
        config.autoPassthrough = passthrough
        plugins.configure(&config)
        config.idlePassesBeforeSleep = idlePasses
        config.maxQueuesPerVNIC = max(config.maxQueuesPerVNIC, queues)
        let host = try InProcessHost(label: "bench", configuration: config, metrics: observer == .metrics ? HostMetrics() : nil)
        defer { host.stop() }
        let guest: (String, String) throws -> VirtualNIC = { name, mac in
            // Room for every ring's buffers plus the TX pool, at the frame's buffer size.
            let buffersMiB = (2 * queues * ringSize + ringSize) * (size > 2030 ? 9216 : 2048) >> 20
            return try host.attach(name, mac: mac, memoryMiB: max(96, buffersMiB + 32), frameBytes: size) { c in
                c.ringSize = ringSize
                c.txQueues = queues
                c.rxQueues = queues
                c.spinPolls = guestSpinPolls
            }
        }
        let tx = try guest("bench-tx", "02:00:00:00:e0:01")
        let rx = try guest("bench-rx", "02:00:00:00:e0:02")
        _ = tx.reclaimTransmitted()  // carries out the automatic switch-in in passthrough mode
        _ = rx.reclaimTransmitted()
        guard tx.mode == (passthrough ? "passthrough" : "emulated"), rx.mode == tx.mode else {
            throw CommandFailure(
                "guests did not reach \(passthrough ? "passthrough" : "emulation"): \(tx.lastSwitchError ?? rx.lastSwitchError ?? "?")")
        }
        // Enough sequence numbers for the fastest path; the receiver's bitmap is one bit each.
        let count = rate.map { Int($0 * seconds) } ?? Int(seconds * (size <= 128 ? 40e6 : size <= 2048 ? 10e6 : 3e6))
        var workload = TrafficWorkload(count: count, frameBytes: size, rate: rate, flows: 2 * queues, timeoutSeconds: seconds * 3 + 10)
        workload.window = window(frameBytes: size)
        let nicThread = host.daemon.nics.first?.engineThread
        let engines = [host.thread] + (nicThread.map { [$0] } ?? [])
        if let cpus {
            for (thread, cpu) in zip(engines, cpus.dropFirst(2)) { try EngineThread.pin(thread, toCPU: cpu) }
        }
        let roundTrip = guestToEngineRoundTrip(rounds: 20_000)
        let observing = try observer.map { try BenchObserver.Running($0, host: host, receiver: rx.name) }
        let control = BenchControl(deadline: Clock.monotonicNanoseconds() + UInt64(seconds * 1e9), paced: rate != nil)
        defer { control.release() }
        let txBox = Unmanaged.passRetained(tx), rxBox = Unmanaged.passRetained(rx)
        defer { txBox.release(); rxBox.release() }
        let interruptsBefore = try Self.interruptsRaised(for: [tx, rx])
        let results = BenchResults()
        let hostStart = EngineThread.cpuNanoseconds(of: host.thread)
        let hardwareStart = nicThread.map { EngineThread.cpuNanoseconds(of: $0) } ?? 0
        let wallStart = Clock.monotonicNanoseconds()
        let receiver = EngineThread.start(name: "guest-rx") {
            results.receive = workload.receive(rxBox.takeUnretainedValue()) { control.senderFinished }
        }
        let sender = EngineThread.start(name: "guest-tx") {
            results.send = workload.send(txBox.takeUnretainedValue(), to: rxBox.takeUnretainedValue().mac) { control.timeIsUp }
            control.senderFinished = true
        }
        if let cpus {
            for (thread, cpu) in zip([sender, receiver], cpus) { try EngineThread.pin(thread, toCPU: cpu) }
        }
        EngineThread.join(sender)
        EngineThread.join(receiver)
        var run = BenchRun(passthrough: passthrough, frameBytes: size, offeredRate: rate)
        run.seconds = Double(Clock.monotonicNanoseconds() - wallStart) / 1e9
        run.observer = observer
        if let (observations, dropped) = try observing?.stop() {
            run.observations = observations
            run.observerDropped = dropped
        }
        run.hostCPU = Double(EngineThread.cpuNanoseconds(of: host.thread) - hostStart) / 1e9
        run.hardwareCPU = Double((nicThread.map { EngineThread.cpuNanoseconds(of: $0) } ?? 0) - hardwareStart) / 1e9
        run.senderCPU = results.send.cpuSeconds
        run.receiverCPU = results.receive.cpuSeconds
        run.sent = results.send.sent
        run.received = results.receive.received
        run.duplicates = results.receive.duplicates
        run.outOfOrder = results.receive.outOfOrder
        run.invalid = results.receive.invalid
        run.dropped = results.receive.dropped.values.reduce(0, +)
        run.windowStalls = results.send.windowStalls
        run.coreRoundTripNS = roundTrip
        run.doorbellKicks = tx.doorbellKicks + rx.doorbellKicks
        run.interrupts = try Self.interruptsRaised(for: [tx, rx]) - interruptsBefore
        return run
    }
}

extension BenchSetup {
    /// The cache-line round trip between the sending guest's CPU and the host's, or nil when
    /// the threads are not pinned apart.
    func guestToEngineRoundTrip(rounds: Int = 200_000) -> Double? {
        guard let cpus, cpus[0] != cpus[2] else { return nil }
        return CoreToCoreLatency.roundTripNanoseconds(between: cpus[2], and: cpus[0], rounds: rounds)
    }

    /// Interrupts the engines signalled to these guests so far (device emulation and VF alike).
    static func interruptsRaised(for nics: [VirtualNIC]) throws -> UInt64 {
        try nics.reduce(UInt64(0)) { total, nic in
            let c = try nic.deviceCounters()
            return total + (c["interrupts"] ?? 0) + (c["vf_interrupts"] ?? 0)
        }
    }
}

/// The flags the bench's sender and receiver threads share: when to stop sending, and that
/// the sender has finished (so the receiver drains and stops).
private final class BenchControl: @unchecked Sendable {
    private let finished = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
    let deadline: UInt64
    let paced: Bool

    init(deadline: UInt64, paced: Bool) {
        self.deadline = deadline
        self.paced = paced
        finished.initialize(to: 0)
    }

    /// A full-rate run sends until the deadline; a paced one sends its count.
    var timeIsUp: Bool { !paced && Clock.monotonicNanoseconds() >= deadline }

    var senderFinished: Bool {
        get { SharedWord.loadAcquire(finished) != 0 }
        set { SharedWord.storeRelease(finished, newValue ? 1 : 0) }
    }

    func release() { finished.deallocate() }
}

/// What the two guest threads report back; each writes its own field and is joined before reading.
private final class BenchResults: @unchecked Sendable {
    var send = TrafficSummary(role: "send")
    var receive = TrafficSummary(role: "recv")
}
