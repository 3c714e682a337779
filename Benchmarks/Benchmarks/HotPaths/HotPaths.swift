import Benchmark
import Foundation
import Logging
import NPAControlProtocol
import NPAHost
import NPANICModel
import NPAPluginBundle
import NPARingFormats
import NPAShell
import NPASystem
import NPAWorkload

/// Each benchmark handles one burst of 32 frames per iteration. The thresholds are counts that
/// machine noise cannot move: the hot pieces in isolation allocate nothing, retain nothing and
/// make no system call per burst; the end-to-end bursts (several threads, process-wide
/// counters) allocate nothing and report their retains and read/write system calls (eventfd
/// kicks and interrupts) per burst.
let benchmarks: @Sendable () -> Void = {
    let isolated = Benchmark.Configuration(
        metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .retainCount, .releaseCount, .readSyscalls, .writeSyscalls, .throughput],
        scalingFactor: .kilo,
        thresholds: [
            .mallocCountTotal: .init(absolute: [.p90: 0]),
            .retainCount: .init(absolute: [.p90: 0]),
            .releaseCount: .init(absolute: [.p90: 0]),
            .readSyscalls: .init(absolute: [.p90: 0]),
            .writeSyscalls: .init(absolute: [.p90: 0]),
        ])
    let zeroAllocations = Benchmark.Configuration(
        metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .readSyscalls, .writeSyscalls, .throughput],
        scalingFactor: .kilo,
        thresholds: [.mallocCountTotal: .init(absolute: [.p90: 0])])

    Benchmark("vswitch lookup: MACTable, 32 frames", configuration: isolated) { benchmark in
        var table = MACTable()
        for port in 0..<64 { table.insert(MACTable.key(mac: 0x0200_0000_0000 | UInt64(port), vlan: UInt16(port % 4)), port: port) }
        var found = 0
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            for i in 0..<32 { found &+= table.port(mac: 0x0200_0000_0000 | UInt64(i * 2), vlan: UInt16(i * 2 % 4)) ?? 0 }
        }
        blackHole(found)
    }

    Benchmark("vmxnet3 TX descriptor validation, 32 descriptors", configuration: isolated) { benchmark in
        // What the host does per TX descriptor: read it once, decode, bounds-check the buffer.
        let size = 1 << 20
        let raw = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 4096)
        defer { raw.deallocate() }
        let memory = GuestMemory(base: raw, size: size)
        for i in 0..<32 {
            let d = VMXNET3Descriptor.Tx(address: UInt64(65536 + i * 2048), length: 1514, generation: 1, endOfPacket: true)
            raw.storeBytes(of: d.address.littleEndian, toByteOffset: i * 16, as: UInt64.self)
            raw.storeBytes(of: d.dword2.littleEndian, toByteOffset: i * 16 + 8, as: UInt32.self)
            raw.storeBytes(of: d.dword3.littleEndian, toByteOffset: i * 16 + 12, as: UInt32.self)
        }
        var bytes = 0
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            for i in 0..<32 {
                let d = VMXNET3Descriptor.Tx(
                    dword2: UInt32(littleEndian: raw.load(fromByteOffset: i * 16 + 8, as: UInt32.self)),
                    dword3: UInt32(littleEndian: raw.load(fromByteOffset: i * 16 + 12, as: UInt32.self)),
                    address: UInt64(littleEndian: raw.load(fromByteOffset: i * 16, as: UInt64.self)))
                if d.generation == 1, d.endOfPacket, memory.pointer(gpa: d.address, length: UInt64(d.length)) != nil {
                    bytes &+= Int(d.length)
                }
            }
        }
        blackHole(bytes)
    }

    for frameBytes in [64, 1514, 9014] {
        Benchmark("copy guest to guest, 32 x \(frameBytes) B (the one copy of passthrough)", configuration: isolated) { benchmark in
            let slot = 9216
            let from = UnsafeMutableRawPointer.allocate(byteCount: 32 * slot, alignment: 4096)
            let to = UnsafeMutableRawPointer.allocate(byteCount: 32 * slot, alignment: 4096)
            defer { from.deallocate(); to.deallocate() }
            from.initializeMemory(as: UInt8.self, repeating: 0xA5, count: 32 * slot)
            to.initializeMemory(as: UInt8.self, repeating: 0, count: 32 * slot)
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                for i in 0..<32 { memcpy(to + i * slot, from + i * slot, frameBytes) }
            }
            blackHole(to.load(as: UInt8.self))
        }
    }

    Benchmark("FrameQueue push+pop, 32 x 64 B (PF queue)", configuration: isolated) { benchmark in
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

    Benchmark("Ethernet flow hash (RSS), 32 frames", configuration: isolated) { benchmark in
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
            var trust = PluginTrustStore()
            if passthrough {
                // The signed bundles `npa demo` (or bench, soak) puts in the main package's
                // .build/plugins, with the test key they are signed with.
                let plugins = FileManager.default.currentDirectoryPath + "/../.build/plugins"
                guard FileManager.default.fileExists(atPath: plugins + "/\(NICModel.dring.pluginImages[0]).npabundle") else {
                    print("skipped: run `npa demo` (or npa bench) from the repository first, to build the signed bundles")
                    return
                }
                trust = (try? PluginTrustStore(files: [plugins + "/test-signing.pub"])) ?? PluginTrustStore()
                config.pluginTrust = [plugins + "/test-signing.pub"]
                config.nics = [.init(name: "nic0", model: NICModel.dring.name, vfs: 2)]
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
            ca.pluginTrust = trust
            cb.pluginTrust = trust
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
                        TrafficFrame.write(
                            into: buffer, destination: dst, source: src, flow: 0, sequence: sequence &+ UInt64(i), length: 64)
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

    tapWireBenchmarks(zeroAllocations)

    guestToGuest("Emulated path: 32 x 64 B guest to guest through the host", passthrough: false)
    guestToGuest("Passthrough path: 32 x 64 B guest to guest through the NIC model", passthrough: true)
    nicOffloadBenchmarks(zeroAllocations)
}
