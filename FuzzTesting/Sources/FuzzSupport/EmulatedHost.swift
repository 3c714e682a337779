import Foundation
import Logging
import NPAControlProtocol
@testable import NPAHost
import NPARingFormats

/// One in-process host daemon with three attached guests — `evil` (the fuzzer's), `good1` and
/// `good2` (well-behaved) — stepped on the caller's thread: no engine thread, no sleeping.
/// Built once per fuzzing process and reused by every input.
public final class EmulatedHost {
    public let daemon: HostDaemon
    public let socketPath: String
    public private(set) var evil: VMXNET3Guest!
    public private(set) var good1: VMXNET3Guest!
    public private(set) var good2: VMXNET3Guest!
    /// What the host lets the evil guest do: any MAC (as the default policy), VLANs 0 and 10,
    /// no promiscuous mode.
    public static let evilPolicy = GuestPolicy(allowedMACs: nil, allowedVLANs: [0, 10], allowPromiscuous: false)
    public static let evilMAC = MACAddress(value: 0x0200_0000_0E01)
    public static let good1MAC = MACAddress(value: 0x0200_0000_0A01)
    public static let good2MAC = MACAddress(value: 0x0200_0000_0A02)
    private var sequence: UInt8 = 0

    public init() throws {
        socketPath = NSTemporaryDirectory() + "npa-fuzz-\(getpid()).sock"
        var config = HostConfiguration()
        config.uplink = .counting
        config.guestPolicies = ["evil": Self.evilPolicy]
        // Frames for a receiver without buffers are dropped at once, not held in the sender's
        // ring: every input ends with each frame accounted for (sent or dropped by reason).
        config.receiverStallMilliseconds = 0
        var logger = Logger(label: "npa.fuzz")
        logger.logLevel = .critical
        daemon = try HostDaemon(socketPath: socketPath, configuration: config, logger: logger)
        let pump: () -> Void = { [daemon] in
            _ = try? daemon.serveReadyEvents()
            _ = daemon.runDataPathPass()
        }
        evil = try VMXNET3Guest(name: "evil", mac: Self.evilMAC, hostSocket: socketPath, pump: pump)
        good1 = try VMXNET3Guest(name: "good1", mac: Self.good1MAC, hostSocket: socketPath, pump: pump)
        good2 = try VMXNET3Guest(name: "good2", mac: Self.good2MAC, hostSocket: socketPath, pump: pump)
        try good1.activateWellBehaved()
        try good2.activateWellBehaved()
        try evil.writeRegister(VMXNET3.Register.dsal.rawValue, UInt32(VMXNET3Guest.driverShared))
        try evil.writeRegister(VMXNET3.Register.dsah.rawValue, 0)
        evilDevice = daemon.device(named: "evil")
        good1Device = daemon.device(named: "good1")
        good2Device = daemon.device(named: "good2")
        unlink(socketPath)  // connected already; nobody else needs the paths
        unlink(daemon.adminSocketPath)
    }

    public private(set) var evilDevice: EmulatedDevice!
    public private(set) var good1Device: EmulatedDevice!
    public private(set) var good2Device: EmulatedDevice!

    /// Runs data-path passes until one does no work (at most `limit`); returns the work done.
    @discardableResult
    public func runPasses(limit: Int = 512) -> Int {
        var total = 0
        for _ in 0..<limit {
            let n = daemon.runDataPathPass()
            if n == 0 { return total }
            total += n
        }
        return total
    }

    /// The standing proof after each hostile input: good1 gets a frame through to good2 (and
    /// back), byte for byte, exactly once; every frame a good guest receives carries a source MAC
    /// its sender owns (anti-spoofing held); counters moved by exactly that.
    public func checkWellBehavedPairStillServed() {
        runPasses()
        drainGood()
        sequence &+= 1
        let f = ethernetFrame(to: good2.mac, from: good1.mac, payloadBytes: 50, fill: sequence)
        let back = ethernetFrame(to: good1.mac, from: good2.mac, payloadBytes: 60, fill: sequence)
        let tx1 = good1Device.counters.txFrames, rx2 = good2Device.counters.rxFrames
        invariant(good1.send(f) && good2.send(back), "a good guest's TX ring is full")
        runPasses()
        var got2: [[UInt8]] = [], got1: [[UInt8]] = []
        good2.receive { got2.append($0) }
        good1.receive { got1.append($0) }
        for g in got2 where g != f { checkSource(g, at: "good2") }
        for g in got1 where g != back { checkSource(g, at: "good1") }
        invariant(
            got2.filter { $0 == f }.count == 1,
            "good2 did not receive good1's frame exactly once (got \(got2.count) frames); good1 \(describe(good1Device)); good2 \(describe(good2Device)); evil \(describe(evilDevice))"
        )
        invariant(got1.filter { $0 == back }.count == 1, "good1 did not receive good2's frame exactly once (got \(got1.count) frames)")
        invariant(good1Device.counters.txFrames == tx1 + 1, "good1 tx_frames moved by \(good1Device.counters.txFrames - tx1), not 1")
        invariant(good2Device.counters.rxFrames >= rx2 + 1, "good2 rx_frames did not count the frame")
        invariant(good1Device.state == .active && good2Device.state == .active, "a good vNIC left the active state")
        good1.reclaimTx()
        good2.reclaimTx()
    }

    /// Receives (and checks) whatever the evil guest sent the good ones.
    public func drainGood() {
        good1.receive { checkSource($0, at: "good1") }
        good2.receive { checkSource($0, at: "good2") }
        good1.reclaimTx()
        good2.reclaimTx()
    }

    private func describe(_ d: EmulatedDevice) -> String {
        "\(d.mac) \(d.state.name) " + d.counters.named().filter { $0.1 != 0 }.map { "\($0.0)=\($0.1)" }.joined(separator: " ")
    }

    private func checkSource(_ frame: [UInt8], at receiver: String) {
        invariant(frame.count >= 14, "\(receiver) received a \(frame.count)-byte frame")
        let src = MACAddress(bytes: frame[6..<12])
        let owners = [evilDevice.mac, good1.mac, good2.mac]
        invariant(owners.contains(src), "\(receiver) received a frame with spoofed source \(src)")
    }
}
