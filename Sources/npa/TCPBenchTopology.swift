import Foundation
import NPAHost
import NPAShell
import NPASystem
import NPAWorkload

/// The machine `npa bench --tcp` measures: an in-process host with one software NIC (`nic0`,
/// two VFs) and two kernel-stack guests, "tx" and "rx", each a vNIC bridged by a `TAPBridge`
/// thread to a TAP interface in a network namespace of its own (10.91.0.1 and 10.91.0.2). Owns
/// the host, the guests and their bridge threads; the namespaces are registered with the
/// `TCPBenchCleanup` before they exist. Switching moves both guests between emulation and VFs
/// through the host's admin socket, as `npa vnic switch-in` would. Beside them, two more
/// namespaces joined by a plain veth pair (10.92.0.1 and 10.92.0.2): the kernel's own reference.
final class TCPBenchTopology {
    /// Where one end of a stream runs: a namespace and the address its interface has there.
    struct Endpoint {
        var namespace: String
        var address: String
    }

    /// One guest: its vNIC, the bridge thread that is its "driver + NIC queue" and its namespace.
    final class Guest: @unchecked Sendable {
        let name: String
        let namespace: String
        let address: String
        let bridge: TAPBridge
        /// The bridge thread's name, to find its /proc/self/task entry.
        let threadName: String
        private(set) var thread: pthread_t?
        private(set) var threadID: Int?
        /// Why the bridge thread ended early, if it did; set by that thread, read by the bench's
        /// (under a lock: it is touched once, never on the data path).
        var error: (any Error)? { errorLock.withLock { failure } }
        private var failure: (any Error)?
        private let errorLock = NSLock()
        private let stopWord = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
        var endpoint: Endpoint { Endpoint(namespace: namespace, address: address) }

        init(name: String, namespace: String, address: String, bridge: TAPBridge, threadName: String) {
            self.name = name
            self.namespace = namespace
            self.address = address
            self.bridge = bridge
            self.threadName = threadName
            stopWord.initialize(to: 0)
        }

        deinit { stopWord.deallocate() }

        /// Starts the bridge thread. The stop word is read with one load per turn of the
        /// bridge's loop: no lock, no syscall.
        func start() {
            let word = UnsafeRawPointer(stopWord)
            thread = EngineThread.start(name: threadName) { [self] in
                do { _ = try bridge.run(shouldStop: { SharedWord.loadAcquire(word) != 0 }) } catch {
                    errorLock.withLock { failure = error }
                }
            }
            // The thread names itself once running; its /proc entry is found by that name.
            let deadline = Date().addingTimeInterval(5)
            while threadID == nil && Date() < deadline {
                threadID = ProcCPUTimes.threadID(named: threadName)
                if threadID == nil { usleep(1_000) }
            }
        }

        func stop() {
            SharedWord.storeRelease(stopWord, 1)
            if let thread { EngineThread.join(thread) }
            thread = nil
        }

        /// The kernel's drop counters of this guest's TAP interface, read inside its namespace
        /// (/proc/thread-self/net/dev): frames the kernel could not queue for the bridge to read
        /// (the interface's TX drops) and frames the bridge wrote that the kernel dropped (RX).
        func kernelDrops() -> (toBridge: UInt64, fromBridge: UInt64) {
            let table = try? NetworkNamespace.run(in: NetworkNamespace.path(ofNamed: namespace)) {
                try String(contentsOfFile: "/proc/thread-self/net/dev", encoding: .utf8)
            }
            return TCPBenchTopology.drops(of: bridge.tap.interfaceName, inNetDev: table ?? "")
        }

        /// The bridge thread's user and system time so far, from /proc/self/task/TID/stat.
        var cpu: ProcCPUTimes.ThreadTimes { threadID.map(ProcCPUTimes.thread) ?? ProcCPUTimes.ThreadTimes() }
    }

    let host: InProcessHost
    let sender: Guest
    let receiver: Guest
    /// The veth pair's two ends.
    let reference: (sender: Endpoint, receiver: Endpoint)
    private let cleanup: TCPBenchCleanup

    init(model: String, plugins: PluginSource, offloads: Bool, cleanup: TCPBenchCleanup) throws {
        self.cleanup = cleanup
        var config = HostConfiguration()
        config.nics = [.init(name: "nic0", model: model, vfs: 2)]
        config.uplink = .nic("nic0")
        plugins.configure(&config)
        host = try InProcessHost(label: "bench-tcp", configuration: config)
        let tag = String(format: "%06x", UInt32.random(in: 0...0xFF_FFFF))
        let prefix = "npa-bench-\(getpid())-\(tag)"
        reference = (Endpoint(namespace: "\(prefix)-va", address: "10.92.0.1"), Endpoint(namespace: "\(prefix)-vb", address: "10.92.0.2"))
        do {
            try Self.vethPair(reference, names: ("npbv\(tag)0", "npbv\(tag)1"), cleanup)
            sender = try Self.guest(
                host, cleanup, offloads: offloads, name: "bench-tcp-tx", mac: "02:00:00:00:e1:01", namespace: "\(prefix)-tx",
                tap: "npbt\(tag)0", address: "10.91.0.1", threadName: "npa-tcp-tx")
            receiver = try Self.guest(
                host, cleanup, offloads: offloads, name: "bench-tcp-rx", mac: "02:00:00:00:e1:02", namespace: "\(prefix)-rx",
                tap: "npbt\(tag)1", address: "10.91.0.2", threadName: "npa-tcp-rx")
        } catch {
            host.stop()
            throw error
        }
        sender.start()
        receiver.start()
    }

    private static func guest(
        _ host: InProcessHost, _ cleanup: TCPBenchCleanup, offloads: Bool, name: String, mac: String, namespace: String,
        tap tapName: String, address: String, threadName: String
    ) throws -> Guest {
        // With offloads, buffers as large as `npa guest tap` makes them: one holds a super-frame.
        let nic = try host.attach(name, mac: mac, memoryMiB: 64) { c in
            if offloads { c.bufferSize = npa.Guest.superFrameBufferSize(c) }
        }
        cleanup.register(namespace: namespace)
        try ChildProgram.run([cleanup.ip, "netns", "add", namespace])
        // Made inside the namespace, as `npa guest tap --netns` does; the descriptor stays bound to it.
        let bridge = try NetworkNamespace.run(in: NetworkNamespace.path(ofNamed: namespace)) {
            try TAPBridge(nic: nic, tap: TAPDevice(name: tapName, virtioNetHeader: offloads), offloads: offloads)
        }
        try ChildProgram.run([cleanup.ip, "-n", namespace, "addr", "add", "\(address)/24", "dev", tapName])
        try ChildProgram.run([cleanup.ip, "-n", namespace, "link", "set", tapName, "up"])
        try ChildProgram.run([cleanup.ip, "-n", namespace, "link", "set", "lo", "up"])
        return Guest(name: name, namespace: namespace, address: address, bridge: bridge, threadName: threadName)
    }

    private static func vethPair(_ ends: (sender: Endpoint, receiver: Endpoint), names: (String, String), _ cleanup: TCPBenchCleanup)
        throws
    {
        for end in [ends.sender, ends.receiver] {
            cleanup.register(namespace: end.namespace)
            try ChildProgram.run([cleanup.ip, "netns", "add", end.namespace])
        }
        try ChildProgram.run([
            cleanup.ip, "link", "add", names.0, "netns", ends.sender.namespace, "type", "veth", "peer", "name", names.1, "netns",
            ends.receiver.namespace,
        ])
        for (end, name) in [(ends.sender, names.0), (ends.receiver, names.1)] {
            try ChildProgram.run([cleanup.ip, "-n", end.namespace, "addr", "add", "\(end.address)/24", "dev", name])
            try ChildProgram.run([cleanup.ip, "-n", end.namespace, "link", "set", name, "up"])
            try ChildProgram.run([cleanup.ip, "-n", end.namespace, "link", "set", "lo", "up"])
        }
    }

    /// TX and RX drops (fields 12 and 4 after the name) of `interface` in a /proc/net/dev table.
    static func drops(of interface: String, inNetDev table: String) -> (toBridge: UInt64, fromBridge: UInt64) {
        for line in table.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, parts[0].trimmingCharacters(in: .whitespaces) == interface else { continue }
            let fields = parts[1].split(separator: " ").compactMap { UInt64($0) }
            guard fields.count >= 12 else { break }
            return (fields[11], fields[3])
        }
        return (0, 0)
    }

    /// Puts both guests in one mode (emulation, or a VF each) and waits until the host reports
    /// it; the bridge threads' next data-path calls carry the switch out.
    func switchBoth(toPassthrough: Bool) throws {
        let wanted = toPassthrough ? "passthrough" : "emulated"
        for guest in [sender, receiver] where try mode(of: guest) != wanted {
            do { try host.admin.switchVNIC(name: guest.name, toPassthrough: toPassthrough) } catch {
                throw CommandFailure("switching \(guest.name) to \(wanted): \(error)")
            }
        }
        let deadline = Date().addingTimeInterval(30)
        for guest in [sender, receiver] {
            while try mode(of: guest) != wanted {
                if let error = guest.error { throw CommandFailure("bridge of \(guest.name): \(error)") }
                guard Date() < deadline else {
                    throw CommandFailure("\(guest.name) is still \(try mode(of: guest) ?? "unknown") 30 s after asking for \(wanted)")
                }
                usleep(10_000)
            }
        }
    }

    private func mode(of guest: Guest) throws -> String? {
        do { return try host.admin.status().vnics.first { $0.name == guest.name }?.mode } catch {
            throw CommandFailure("host status: \(error)")
        }
    }

    private var stopped = false

    /// Stops the bridges and the host (once; later calls do nothing). The namespaces are the
    /// cleanup's to remove. The bridges' counters are final after this.
    func stop() {
        guard !stopped else { return }
        stopped = true
        stopBridges()
        host.stop()
    }

    /// Stops both bridge threads (again: a no-op); the vNICs are then this thread's to ask.
    func stopBridges() {
        sender.stop()
        receiver.stop()
    }
}
