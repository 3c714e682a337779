import ArgumentParser
import Glibc
import NPAControlProtocol
import NPAPluginBundle
import NPAShell
import NPASystem
import NPAWorkload

/// `npa guest --host PATH --name NAME [--mac MAC] send|recv|echo|duplex|tap ...`
struct Guest: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Attach a guest to a host and run a traffic workload, then print a summary.",
        discussion: """
            Workloads:
              send    --to MAC --count N [--size B] [--rate FPS] [--flows K] [--wait-peer]
              recv    --count N [--timeout S]    verifies every frame of every flow:
                                                 length, flow, sequence: once, in order
              echo    [--count N] [--timeout S]  sends every frame back to its source
              duplex  --to MAC --count N ...     sends N to the peer, receives N from it
              tap     [--ifname IF] [--netns NS] bridges the vNIC to a TAP interface (root): the
                                                 kernel's TCP/IP stack is the guest's OS, until
                                                 SIGINT or SIGTERM; then prints what it moved
                                                 (--mtu M: the vNIC's and the interface's MTU)

            Standard output is the summary only (one JSON object with --json); progress such as \
            "attached as MAC" goes to standard error.

            Exit status: 0 everything asked for was sent, or received and verified (nothing lost, \
            duplicated, reordered, invalid or dropped); 1 it was not (the summary says what); \
            2 the run could not go on (the host refused the attach, the host went away — noticed \
            within milliseconds, the summary so far is still printed — the peer never attached); \
            64 a usage error. SIGINT or SIGTERM ends any workload cleanly: the summary so far, the vNIC \
            detached, and the status as above (an echo or tap, which run until stopped: 0). tap: 2 the TAP \
            could not be opened or went away, or the host went away.
            """)

    enum Workload: String, ExpressibleByArgument, CaseIterable {
        case send, recv, echo, duplex, tap
    }

    @Argument(help: "The workload: send, recv, echo, duplex or tap.")
    var workload: Workload

    @Option(help: "The host's control socket.")
    var host: String = "/tmp/npa.sock"

    @Option(help: "Guest name (host policy is per name).")
    var name: String

    @Option(help: "MAC address to ask for (default: the host assigns one).")
    var mac: String?

    @Option(help: "Guest memory in MiB.")
    var memory: Int = 64

    @Option(help: "TX and RX queues.")
    var queues: Int = 2

    @Option(help: "tap: the TAP interface to open or create (default: the kernel names one).")
    var ifname: String?

    @Option(help: "tap: create the interface inside this named network namespace (as made by `ip netns add`).")
    var netns: String?

    @Option(help: "tap: checksum and TCP segmentation offloads through the TAP's virtio-net header: on or off (default: on).")
    var offloads: OffloadSetting?

    @Option(help: "Destination MAC (send, duplex).")
    var to: String?

    @Option(help: "Frames to send or receive (echo: 0 = until the timeout).")
    var count: Int = 10000

    @Option(help: "send, duplex: frame size in bytes (64...9018).")
    var size: Int = 1514

    @Option(
        help:
            "The vNIC's MTU, 68...9000 (default: 9000 for workloads that receive, so any frame a sender sends fits; for send, what --size needs; for tap, 1500)."
    )
    var mtu: Int?

    @Option(help: "send, duplex: offered rate in frames per second (default: as fast as possible).")
    var rate: Double?

    @Option(
        help: "send, duplex: flows (each with its own sequence numbers and UDP source port); a receiver verifies whatever flows arrive.")
    var flows: Int = 1

    @Option(help: "send: the first flow id (several senders to one receiver use disjoint flows).")
    var flowBase: Int = 0

    @Option(help: "Give up after this many seconds.")
    var timeout: Double = 30

    @Option(
        help:
            "send/recv: a windowed stream, like TCP: the sender keeps at most this many frames in flight and the receiver acknowledges every quarter window (give both the same value; keep it under the receiver's ring)."
    )
    var window: Int?

    @Option(
        name: .customLong("plugin-trust"),
        help:
            "A public key file (K.pub), or a directory of them, whose signatures this guest accepts on an injected plugin bundle (repeatable; none: the guest refuses every plugin and stays emulated)."
    )
    var pluginTrust: [String] = []

    @Flag(help: "send: wait until the destination is attached before sending.")
    var waitPeer = false

    @Flag(help: "Print the summary as one JSON object.")
    var json = false

    @Flag(help: "recv: also stop (after taking what is already in the ring) when standard input reaches end of file.")
    var untilEof = false

    @Flag(help: "After the workload, stay attached until standard input closes (lets a caller read the host's counters first).")
    var hold = false

    /// Options that only a sender uses, and so are refused where they would be ignored.
    var senderOptionsGiven: [String] {
        var given: [String] = []
        if to != nil { given.append("--to") }
        if rate != nil { given.append("--rate") }
        if flows != 1 { given.append("--flows") }
        if flowBase != 0 { given.append("--flow-base") }
        if size != 1514 { given.append("--size") }
        if waitPeer { given.append("--wait-peer") }
        return given
    }

    var traffic: TrafficWorkload {
        var workload = TrafficWorkload(
            count: count, frameBytes: size, rate: rate, flows: flows, flowBase: flowBase, timeoutSeconds: timeout)
        workload.window = window
        return workload
    }

    func validate() throws {
        if let mac, MACAddress(mac).map({ $0.isUnicast && $0 != .zero }) != true {
            throw ValidationError("--mac '\(mac)' is not a unicast MAC like 02:00:00:00:00:01")
        }
        guard GuestName.isValid(name) else { throw ValidationError("--name '\(name.prefix(80))': \(GuestName.rule)") }
        guard (1...16384).contains(memory) else { throw ValidationError("--memory must be 1...16384 MiB") }
        if let mtu, !(68...9000).contains(mtu) { throw ValidationError("--mtu must be 68...9000") }
        if let mtu, workload == .send || workload == .duplex, size > mtu + 18 {
            throw ValidationError("--size \(size) does not fit --mtu \(mtu) (at most MTU + 18 bytes)")
        }
        guard (1...8).contains(queues) else { throw ValidationError("--queues must be 1...8") }
        do { try traffic.validate() } catch { throw ValidationError("\(error)") }
        if ifname != nil && workload != .tap { throw ValidationError("--ifname is for tap") }
        if netns != nil && workload != .tap { throw ValidationError("--netns is for tap") }
        if offloads != nil && workload != .tap { throw ValidationError("--offloads is for tap") }
        if let netns, netns.isEmpty || netns.contains("/") || netns.hasPrefix(".") {
            throw ValidationError("--netns '\(netns.prefix(80))' is not a namespace name (as `ip netns list` shows it)")
        }
        if let ifname, ifname.utf8.count > 15 || ifname.contains("/") || ifname.contains(" ") {
            throw ValidationError("--ifname '\(ifname.prefix(80))' is not an interface name (at most 15 bytes, no '/' or space)")
        }
        switch workload {
        case .tap:
            if let option = workloadOptionsGiven.first { throw ValidationError("\(option) is not for tap: the kernel is the workload") }
        case .send, .duplex:
            guard let to else { throw ValidationError("\(workload.rawValue) needs --to MAC") }
            guard MACAddress(to)?.isUnicast == true else { throw ValidationError("--to '\(to)' is not a unicast MAC") }
        case .recv, .echo:
            if let option = senderOptionsGiven.first {
                throw ValidationError("\(option) is for send and duplex; \(workload.rawValue) takes every frame that arrives")
            }
            if window != nil && workload == .echo { throw ValidationError("--window is for send and recv") }
        }
        if untilEof && workload != .recv { throw ValidationError("--until-eof is for recv") }
    }

    func run() throws {
        var c = VirtualNIC.Configuration(name: name, mac: mac.flatMap(MACAddress.init))
        c.memoryBytes = memory << 20
        c.txQueues = queues
        c.rxQueues = queues
        c.mtu = mtu ?? (workload == .send ? max(1500, size - 18) : workload == .tap ? 1500 : 9000)
        c.bufferSize = c.mtu + 18 <= 2048 ? 2048 : 9216
        if workload == .tap && tapOffloads { c.bufferSize = Self.superFrameBufferSize(c) }
        do { c.pluginTrust = try PluginTrustStore(files: PluginStoreOptions.trustFiles(pluginTrust)) } catch let failure as CommandFailure {
            throw failure
        } catch { throw CommandFailure("\(error)") }
        let nic: VirtualNIC
        do {
            nic = try VirtualNIC.attach(hostSocket: host, configuration: c)
        } catch {
            throw CommandFailure("attach to \(host) failed: \(error)")
        }
        defer { nic.detach() }
        let peer = to.flatMap(MACAddress.init)
        if let peer, waitPeer {
            let attached: Bool
            do { attached = try nic.waitForPeer(peer, timeoutMilliseconds: Int(timeout * 1000)) } catch {
                throw CommandFailure("waiting for peer \(peer): \(error)")
            }
            guard attached else { throw CommandFailure("peer \(peer) did not attach within \(timeout) s") }
        }
        if workload == .tap { return try runTAP(nic) }
        // Ctrl-C or SIGTERM ends the workload between batches: the summary so far is printed and
        // the vNIC detaches cleanly (the host records "guest detached"). Caught from before the
        // line saying it is attached, which scripts wait for.
        let termination = try TerminationCheck()
        // Progress goes to standard error: standard output is the summary alone.
        standardError("attached as \(nic.mac)")
        let summary: TrafficSummary
        switch workload {
        case .send: summary = traffic.send(nic, to: peer!, shouldStop: { termination.requested })
        case .recv: summary = traffic.receive(nic, shouldStop: { termination.requested || (untilEof && standardInputClosed()) })
        case .echo: summary = traffic.echo(nic, shouldStop: { termination.requested })
        case .duplex: summary = traffic.duplex(nic, peer: peer!, shouldStop: { termination.requested })
        case .tap: return
        }
        if termination.requested { standardError("npa guest \(name): stopped by a signal") }
        print(json ? summary.json() : summary.text())
        if !json && !nic.switchLog.isEmpty {
            print("switch transitions (guest side):")
            for line in nic.switchLog { print("  " + line) }
        }
        if let gone = nic.hostGone { throw CommandFailure("guest \(name): \(gone)") }
        if hold && !termination.requested {
            fflush(nil)
            // Until standard input closes, or the host goes away (which ends the hold at once).
            while true {
                if let gone = nic.waitForHostGone(timeoutMilliseconds: -1, orReadable: 0) { throw CommandFailure("guest \(name): \(gone)") }
                if StandardStreams.readStandardInputByte() == nil { break }
            }
        }
        let failures = summary.failures
        if !failures.isEmpty {
            standardError("npa guest \(name): not verified: " + failures.joined(separator: ", "))
            throw ExitCode(ExitStatus.notVerified)
        }
    }
}

/// True once standard input has reached end of file (checked without blocking).
func standardInputClosed() -> Bool { StandardStreams.standardInputClosed() }
