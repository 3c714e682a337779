import ArgumentParser
import Glibc
import NPAControlProtocol
import NPAShell
import NPAWorkload

/// `npa guest --host PATH --name NAME [--mac MAC] send|recv|echo|duplex ...`
struct Guest: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Attach a guest to a host and run a traffic workload, then print a summary.",
        discussion: """
            Workloads:
              send    --to MAC --count N --size BYTES [--rate FRAMES_PER_S] [--flows K] [--wait-peer]
              recv    --count N [--timeout S]        verifies length, flow and sequence of every frame
              echo    [--count N] [--timeout S]      sends every frame back to its source
              duplex  --to MAC --count N ...         sends N to the peer while receiving N from it
            """)

    enum Workload: String, ExpressibleByArgument, CaseIterable {
        case send, recv, echo, duplex
    }

    @Argument(help: "The workload: send, recv, echo or duplex.")
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

    @Option(help: "Destination MAC (send, duplex).")
    var to: String?

    @Option(help: "Frames to send or receive (echo: 0 = until the timeout).")
    var count: Int = 10000

    @Option(help: "Frame size in bytes (64...9018).")
    var size: Int = 1514

    @Option(help: "Offered rate in frames per second (default: as fast as possible).")
    var rate: Double?

    @Option(help: "Flows (each with its own sequence numbers and UDP source port).")
    var flows: Int = 1

    @Option(help: "send: the first flow id (several senders to one receiver use disjoint flows).")
    var flowBase: Int = 0

    @Option(help: "Give up after this many seconds.")
    var timeout: Double = 30

    @Option(help: "send/recv: a windowed stream, like TCP: the sender keeps at most this many frames in flight and the receiver acknowledges every quarter window (give both the same value; keep it under the receiver's ring).")
    var window: Int?

    @Flag(help: "send: wait until the destination is attached before sending.")
    var waitPeer = false

    @Flag(help: "Print the summary as one JSON object.")
    var json = false

    @Flag(help: "recv: also stop (after taking what is already in the ring) when standard input reaches end of file.")
    var untilEof = false

    @Flag(help: "After the workload, stay attached until standard input closes (lets a caller read the host's counters first).")
    var hold = false

    var traffic: TrafficWorkload {
        var workload = TrafficWorkload(count: count, frameBytes: size, rate: rate, flows: flows, flowBase: flowBase, timeoutSeconds: timeout)
        workload.window = window
        return workload
    }

    func validate() throws {
        if let mac, MACAddress(mac).map({ $0.isUnicast && $0 != .zero }) != true {
            throw ValidationError("--mac '\(mac)' is not a unicast MAC like 02:00:00:00:00:01")
        }
        guard (1...16384).contains(memory) else { throw ValidationError("--memory must be 1...16384 MiB") }
        guard (1...8).contains(queues) else { throw ValidationError("--queues must be 1...8") }
        do { try traffic.validate() } catch { throw ValidationError("\(error)") }
        switch workload {
        case .send, .duplex:
            guard let to else { throw ValidationError("\(workload.rawValue) needs --to MAC") }
            guard MACAddress(to)?.isUnicast == true else { throw ValidationError("--to '\(to)' is not a unicast MAC") }
        case .recv, .echo:
            break
        }
    }

    func run() throws {
        var c = VirtualNIC.Configuration(name: name, mac: mac.flatMap(MACAddress.init))
        c.memoryBytes = memory << 20
        c.txQueues = queues
        c.rxQueues = queues
        if size > 2030 {
            c.bufferSize = 9216
            c.mtu = 9000
        }
        let nic: VirtualNIC
        do {
            nic = try VirtualNIC.attach(hostSocket: host, configuration: c)
        } catch {
            throw ValidationError("attach to \(host) failed: \(error)")
        }
        defer { nic.detach() }
        let peer = to.flatMap(MACAddress.init)
        if let peer, waitPeer {
            guard try nic.waitForPeer(peer, timeoutMilliseconds: Int(timeout * 1000)) else {
                throw ValidationError("peer \(peer) did not attach within \(timeout) s")
            }
        }
        if workload == .recv || workload == .echo {
            print(json ? "{\"attached\":\"\(nic.mac)\"}" : "attached as \(nic.mac)")
            fflush(nil)  // whoever waits for this line is usually reading a pipe
        }
        let summary: TrafficSummary
        switch workload {
        case .send: summary = traffic.send(nic, to: peer!)
        case .recv: summary = traffic.receive(nic, shouldStop: { untilEof && standardInputClosed() })
        case .echo: summary = traffic.echo(nic)
        case .duplex: summary = traffic.duplex(nic, peer: peer!)
        }
        print(json ? summary.json() : summary.text())
        if !json && !nic.switchLog.isEmpty {
            print("switch transitions (guest side):")
            for line in nic.switchLog { print("  " + line) }
        }
        if hold {
            fflush(nil)
            while readLine() != nil {}
        }
    }
}

/// True once standard input has reached end of file (checked without blocking).
func standardInputClosed() -> Bool {
    var pfd = pollfd(fd: 0, events: Int16(POLLIN), revents: 0)
    guard poll(&pfd, 1, 0) > 0 else { return false }
    var byte: UInt8 = 0
    return read(0, &byte, 1) == 0
}
