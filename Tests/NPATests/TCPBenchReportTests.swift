@testable import npa
import Foundation
import Testing

/// What `npa bench --tcp` reads and reports, on made-up input: iperf3's JSON, /proc lines, sizes,
/// and the arithmetic of Mbit/s per GHz, the ratios and the equal load (no timing).
@Suite struct TCPBenchReportTests {
    @Test func iperf3JSONGivesTheReceiversTotalsAndTheSendersRetransmits() throws {
        let json = """
            {"start": {"connected": []}, "intervals": [],
             "end": {"sum_sent": {"start": 0, "end": 10.0, "seconds": 10.0, "bytes": 1250000000, "bits_per_second": 1.0e9, "retransmits": 7},
                     "sum_received": {"start": 0, "end": 10.01, "seconds": 10.01, "bytes": 1249000000, "bits_per_second": 998201798.2},
                     "cpu_utilization_percent": {"host_total": 12.5}}}
            """
        let stream = try IPerf3Stream.parse(json)
        #expect(stream == IPerf3Stream(bytes: 1_249_000_000, seconds: 10.01, bitsPerSecond: 998_201_798.2, retransmits: 7))
        #expect(throws: CommandFailure.self) { try IPerf3Stream.parse("{\"start\": {}, \"error\": \"unable to connect to server\"}") }
        #expect(throws: CommandFailure.self) { try IPerf3Stream.parse("iperf3: error - unable to connect") }
    }

    @Test func procStatFieldsAreCountedAfterTheCommandName() throws {
        let ticks = ProcCPUTimes.ticksPerSecond
        // A command name with a space and a parenthesis: fields are counted after the last ")".
        let line = "4242 (npa tcp) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 \(Int(ticks) * 3) \(Int(ticks) / 2) 0 0 20 0 1 0 5 0 0"
        let times = try #require(ProcCPUTimes.parseStat(line))
        #expect(abs(times.user - 3) < 1e-9 && abs(times.system - 0.5) < 1e-9)
        let stat = "cpu  100 0 50 1000 0 \(Int(ticks)) \(Int(ticks) * 2) 0 0 0\ncpu0 50 0 25 500 0 0 0 0 0 0\n"
        let interrupts = ProcCPUTimes.parseInterrupts(stat)
        #expect(abs(interrupts.irq - 1) < 1e-9 && abs(interrupts.softirq - 2) < 1e-9)
    }

    @Test func theTAPsKernelDropsComeFromItsNetDevLine() {
        let table = """
            Inter-|   Receive                                                |  Transmit
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
                lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
            npbt00abcd1: 1000      10    0    3    0     0          0         0     2000      20    0    7    0     0       0          0
            """
        let drops = TCPBenchTopology.drops(of: "npbt00abcd1", inNetDev: table)
        #expect(drops.toBridge == 7 && drops.fromBridge == 3)
        #expect(TCPBenchTopology.drops(of: "npbt00abcd0", inNetDev: table) == (0, 0))
    }

    @Test func sizesTakeKAndMSuffixes() {
        #expect(TCPBenchOptions.bytes("16K") == 16384)
        #expect(TCPBenchOptions.bytes("64k") == 65536)
        #expect(TCPBenchOptions.bytes("1M") == 1 << 20)
        #expect(TCPBenchOptions.bytes("1500") == 1500)
        #expect(TCPBenchOptions.bytes("16KB") == nil)
    }

    func run(_ passthrough: Bool, mbps: Double, bridge: Double, iperf3: Double, host: Double, offered: Double? = nil) -> TCPBenchRun {
        var r = TCPBenchRun(path: passthrough ? .passthrough : .emulated, round: 1, offeredMbps: offered)
        r.seconds = 10
        r.stream = IPerf3Stream(bytes: mbps * 1e6 / 8 * 10, seconds: 10, bitsPerSecond: mbps * 1e6, retransmits: 0)
        r.senderBridge = .init(user: bridge * 10 / 2, system: bridge * 10 / 2)
        r.receiverBridge = .init(user: bridge * 10, system: 0)
        r.client = .init(user: iperf3 * 10 / 4, system: iperf3 * 10 * 3 / 4)
        r.server = .init(user: 0, system: iperf3 * 10)
        r.hostCPU = host * 10
        r.hardwareCPU = passthrough ? 5 : 0
        return r
    }

    @Test func ratiosAreMbitPerGHzOfEachSidesGuestPlusHost() throws {
        var report = TCPBenchReport(
            machine: .init(
                date: "d", cpus: 2, ghz: 2, ghzMethod: "m", model: "npa-dring", writeBytes: 16384, socketBufferBytes: 65536,
                secondsPerRun: 10, rounds: 1, offloads: "off"))
        // Emulated: 1000 Mbit/s, sender guest 0.5 + 0.25, host 0.25 → TX 1000 / (1.0 × 2) = 500.
        report.add(run(false, mbps: 1000, bridge: 0.5, iperf3: 0.25, host: 0.25), phase: "full")
        // Passthrough: 2000 Mbit/s, guest 0.5 + 0.25, no host → TX 2000 / (0.75 × 2) ≈ 1333.
        report.add(run(true, mbps: 2000, bridge: 0.5, iperf3: 0.25, host: 0), phase: "full")
        report.summarize()
        let emulated = try #require(report.runs.first { $0.mode == "emulated" })
        #expect(abs(emulated.txMbpsPerGHz - 500) < 1e-9)
        #expect(abs(emulated.cpuCores.senderIperf3User - 0.0625) < 1e-9)
        let ratios = try #require(report.ratios)
        #expect(abs(ratios.tx - (2000 / 1.5) / 500) < 1e-9)
        #expect(abs(ratios.rx - ratios.tx) < 1e-9)
        #expect(ratios.rfcTX == 1.43 && ratios.rfcRX == 1.70)

        let rate = TCPBenchReport.equalLoadMbps(1000, 2000)
        #expect(rate == 800)
        report.add(run(false, mbps: rate, bridge: 0.4, iperf3: 0.2, host: 0.2, offered: rate), phase: "equal_load")
        report.add(run(true, mbps: rate, bridge: 0.4, iperf3: 0.2, host: 0, offered: rate), phase: "equal_load")
        report.summarize()
        let equal = try #require(report.equalLoad)
        // Emulated 0.6 + 0.6 + 0.2 = 1.4 cores, passthrough 1.2.
        #expect(abs(equal.emulatedCores - 1.4) < 1e-9 && abs(equal.passthroughCores - 1.2) < 1e-9)
        #expect(abs(equal.emulatedOverPassthrough - 1.4 / 1.2) < 1e-9)
        #expect(abs(equal.emulatedTXCores - 0.8) < 1e-9 && abs(equal.passthroughRXCores - 0.6) < 1e-9)

        let json = try report.json()
        for key in ["\"ratios\"", "\"rfc_tx\"", "\"equal_load\"", "\"tx_mbps_per_ghz\"", "\"sender_iperf3_system\"", "\"attribution\""] {
            #expect(json.contains(key), "\(key)")
        }
        let text = report.text()
        #expect(text.contains("1.43") && text.contains("1.70") && text.contains("not attributed"))
    }

    @Test func theEqualLoadIsEightyPercentOfTheSlowerModeToTwoDigits() {
        #expect(TCPBenchReport.equalLoadMbps(3456, 5000) == 2700)
        #expect(TCPBenchReport.equalLoadMbps(0, 10) == 1)
        #expect(TCPBenchReport.median([3, 1, 2]) == 2 && TCPBenchReport.median([4, 1, 2, 3]) == 2.5)
    }
}
