import Benchmark
import Foundation
import NPANICModel
import NPASystem

/// The TAP wire's cost per burst of 32 frames (needs root and /dev/net/tun; skipped otherwise):
/// what a NIC's physical port on a TAP device pays to move frames to and from the kernel, next
/// to the bare system calls. A TAP takes one frame per read or write, so each wire entry is
/// paired with a baseline doing only those calls: the difference is what the port adds (the
/// embedded switch, the outbound queue's copy, the batch bookkeeping, the PF queue).
///
/// - TX: the PF's burst through the embedded switch into the wire's outbound queue, and the
///   engine's flush to the TAP. Baseline: 32 bare writes of the same frame.
/// - RX: the kernel must send, so an AF_PACKET socket on the TAP sends 32 frames (its cost is in
///   both entries), then the engine's service reads them in one batch, switches them to the PF
///   queue, which is drained. Baseline: the same sends, then bare reads until EAGAIN.
func tapWireBenchmarks(_ configuration: Benchmark.Configuration) {
    guard TAPDevice.isAvailable else {
        print("TAP wire benchmarks skipped: they need root and /dev/net/tun")
        return
    }
    var configuration = configuration
    configuration.maxDuration = .seconds(3)
    for frameBytes in [64, 1514] {
        Benchmark("TAP wire TX: 32 x \(frameBytes) B, PF -> embedded switch -> TAP", configuration: configuration) { benchmark in
            let lab = try TAPWireLab(frameBytes: frameBytes)
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                lab.nic.transmitFromPF(count: 32) { _ in (UnsafeRawPointer(lab.frame), frameBytes) }
                lab.nic.serviceWire()
            }
            benchmark.stopMeasurement()
            precondition(lab.wire.counters.framesOut > 0 && lab.wire.counters.goneDrops == 0)
        }
        Benchmark("TAP wire TX baseline: 32 x \(frameBytes) B, bare writes to the TAP", configuration: configuration) { benchmark in
            let lab = try TAPWireLab(frameBytes: frameBytes)
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                for _ in 0..<32 { _ = lab.wire.device.transfer(from: lab.frame, length: frameBytes) }
            }
            benchmark.stopMeasurement()
        }
        Benchmark("TAP wire RX: kernel sends 32 x \(frameBytes) B, TAP -> embedded switch -> PF queue", configuration: configuration) {
            benchmark in
            let lab = try TAPWireLab(frameBytes: frameBytes)
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                lab.kernelSends(32)
                lab.drain()
            }
            benchmark.stopMeasurement()
            precondition(lab.wire.counters.framesIn > 0)
        }
        Benchmark("TAP wire RX baseline: kernel sends 32 x \(frameBytes) B, bare reads", configuration: configuration) { benchmark in
            let lab = try TAPWireLab(frameBytes: frameBytes)
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: 9216, alignment: 64)
            defer { buffer.deallocate() }
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                lab.kernelSends(32)
                while case .done = lab.wire.device.transfer(into: buffer, capacity: 9216) {}
            }
            benchmark.stopMeasurement()
        }
    }
}

/// A NIC (PF listening, no VF enabled) whose wire is a TAP this process created (link up, IPv6
/// off so the kernel adds no frames of its own), and a packet socket that makes the kernel
/// send on it.
private final class TAPWireLab {
    let nic: SoftNIC
    let wire: TAPWire
    let frame: UnsafeMutableRawPointer
    let frameBytes: Int
    private let packetSocket: Int32

    init(frameBytes: Int) throws {
        self.frameBytes = frameBytes
        let name = "npb\(getpid() % 100_000)\(UInt16.random(in: 0...0xFFF))"
        wire = try TAPWire(name: name, maximumFrame: SoftNIC.maximumFrame)
        try? "1".write(toFile: "/proc/sys/net/ipv6/conf/\(name)/disable_ipv6", atomically: false, encoding: .utf8)
        nic = try SoftNIC(name: "bench", model: .dring, vfCount: 1)
        nic.attachWire(wire)
        nic.setPFEnabled(true)
        frame = .allocate(byteCount: frameBytes, alignment: 64)
        frame.initializeMemory(as: UInt8.self, repeating: 0, count: frameBytes)
        // To 02:00:00:00:99:99 (on no VF) from 02:00:00:00:99:98, IPv4 ethertype.
        let header: [UInt8] = [2, 0, 0, 0, 0x99, 0x99, 2, 0, 0, 0, 0x99, 0x98, 0x08, 0x00]
        frame.copyMemory(from: header, byteCount: header.count)
        packetSocket = socket(AF_PACKET, Int32(SOCK_RAW.rawValue), 0)
        precondition(packetSocket >= 0, "socket(AF_PACKET)")
        // struct sockaddr_ll (netpacket/packet.h, not in Glibc's module): family, protocol,
        // ifindex, then hatype, pkttype, halen and addr[8], all zero for a send-only socket.
        var address = [UInt8](repeating: 0, count: 20)
        withUnsafeBytes(of: UInt16(AF_PACKET)) { address.replaceSubrange(0..<2, with: $0) }
        withUnsafeBytes(of: Int32(if_nametoindex(name))) { address.replaceSubrange(4..<8, with: $0) }
        let bound = address.withUnsafeBytes {
            bind(packetSocket, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), UInt32($0.count))
        }
        precondition(bound == 0, "bind(AF_PACKET, \(name))")
    }

    deinit {
        close(packetSocket)
        frame.deallocate()
    }

    /// The kernel transmits `count` frames on the TAP (they wait in its queue for our reads).
    func kernelSends(_ count: Int) {
        for _ in 0..<count { _ = send(packetSocket, frame, frameBytes, 0) }
    }

    /// Services the wire until it has read everything queued, and empties the PF queue.
    func drain() {
        wire.markReadable()
        while nic.serviceWire() > 0 {}
        nic.pfReceive.pop(max: 4096) { _, _ in }
    }
}
