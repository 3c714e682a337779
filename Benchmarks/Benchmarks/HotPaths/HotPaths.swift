import Benchmark
import Foundation
import Logging
import NPAControlProtocol
import NPAHost
import NPANICModel
import NPARingFormats
import NPAShell
import NPASystem
import NPAWorkload

/// Each benchmark moves one burst of 32 frames per iteration. The thresholds that matter are
/// malloc counts: the steady state must allocate nothing per burst.
let benchmarks: @Sendable () -> Void = {
    let zeroAllocations = Benchmark.Configuration(
        metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .throughput],
        scalingFactor: .kilo,
        thresholds: [.mallocCountTotal: .init(absolute: [.p90: 0])])

    Benchmark("FrameQueue push+pop, 32 x 64 B (PF queue)", configuration: zeroAllocations) { benchmark in
        let queue = FrameQueue(capacity: 64)
        let frame = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
        defer { frame.deallocate() }
        var bytes = 0
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            for _ in 0..<32 { queue.push(frame, length: 64) }
            queue.pop(max: 32) { _, length in bytes &+= length }
        }
        blackHole(bytes)
    }

    Benchmark("Ethernet flow hash (RSS), 32 frames", configuration: zeroAllocations) { benchmark in
        var frame = [UInt8](repeating: 0, count: 64)
        frame[12] = 0x08; frame[14] = 0x45; frame[23] = 17
        var h: UInt32 = 0
        benchmark.startMeasurement()
        frame.withUnsafeBytes { p in
            for _ in benchmark.scaledIterations {
                for i in 0..<32 { h &+= EthernetFrame.flowHash(p.baseAddress!, length: 64 - (i & 1)) }
            }
        }
        blackHole(h)
    }

    /// One burst of 32 frames from guest a to guest b and back to the application, end to end
    /// (host device emulation, or the NIC model's VFs after an automatic switch-in).
    func guestToGuest(_ name: String, passthrough: Bool) {
        Benchmark(name, configuration: zeroAllocations) { benchmark in
            let socket = NSTemporaryDirectory() + "npa-bench-\(getpid())-\(passthrough).sock"
            var logger = Logger(label: "bench")
            logger.logLevel = .critical
            var config = HostConfiguration()
            if passthrough {
                // The images scripts/build-plugins.sh puts in the main package's .build/plugins.
                let plugins = FileManager.default.currentDirectoryPath + "/../.build/plugins"
                guard FileManager.default.fileExists(atPath: plugins + "/npa-dring.so") else {
                    print("skipped: run ../scripts/build-plugins.sh first")
                    return
                }
                config.nics = [.init(name: "nic0", model: "npa-dring", vfs: 2)]
                config.uplink = .nic("nic0")
                config.autoPassthrough = true
                config.pluginDirectory = plugins
            }
            let daemon = try HostDaemon(socketPath: socket, configuration: config, logger: logger)
            let thread = EngineThread.start(name: "npa-host") { try? daemon.run() }
            defer {
                daemon.stop()
                EngineThread.join(thread)
            }
            var ca = VirtualNIC.Configuration(name: "a", mac: MACAddress("02:00:00:00:00:01"))
            ca.memoryBytes = 16 << 20
            var cb = VirtualNIC.Configuration(name: "b", mac: MACAddress("02:00:00:00:00:02"))
            cb.memoryBytes = 16 << 20
            let a = try VirtualNIC.attach(hostSocket: socket, configuration: ca)
            let b = try VirtualNIC.attach(hostSocket: socket, configuration: cb)
            _ = a.reclaimTransmitted()  // carries out the automatic switch-in, if any
            _ = b.reclaimTransmitted()
            guard a.mode == (passthrough ? "passthrough" : "emulated"), b.mode == a.mode else {
                print("skipped: guests are \(a.mode)/\(b.mode)")
                return
            }
            let dst = b.mac, src = a.mac
            var received = 0
            var sequence: UInt64 = 0
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                var sent = 0
                while sent < 32 {
                    sent += a.transmit(queue: 0, count: 32 - sent) { i, buffer in
                        TrafficFrame.write(into: buffer, destination: dst, source: src, flow: 0, sequence: sequence &+ UInt64(i), length: 64)
                    }
                }
                sequence &+= 32
                var got = 0
                while got < 32 { got += b.receive(maxFrames: 32 - got, timeoutMilliseconds: 1000) { received &+= $0.bytes.count } }
            }
            benchmark.stopMeasurement()
            blackHole(received)
        }
    }

    guestToGuest("Emulated path: 32 x 64 B guest to guest through the host", passthrough: false)
    guestToGuest("Passthrough path: 32 x 64 B guest to guest through the NIC model", passthrough: true)
}
