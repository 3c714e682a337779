import Foundation
import NPAAdmin
import NPAControlProtocol
import NPAShell
import NPASystem
import NPATestSupport
import SystemPackage

/// A pcap file as a reader sees it: the header's fields and each record (for the tests' own
/// read-back of what the host wrote, independent of the writer's code).
struct PcapFile {
    struct Record {
        var seconds: UInt32
        var nanoseconds: UInt32
        var originalLength: Int
        var bytes: [UInt8]
    }

    struct Malformed: Error {}

    var magic: UInt32
    var version: String
    var snapLength: UInt32
    var linkType: UInt32
    var records: [Record] = []

    init(_ bytes: [UInt8]) throws {
        func u32(_ at: Int) throws -> UInt32 {
            guard at + 4 <= bytes.count else { throw Malformed() }
            return bytes[at..<at + 4].reversed().reduce(0) { $0 << 8 | UInt32($1) }  // little-endian host
        }
        func u16(_ at: Int) -> UInt16 { UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8 }
        guard bytes.count >= 24 else { throw Malformed() }
        magic = try u32(0)
        version = "\(u16(4)).\(u16(6))"
        snapLength = try u32(16)
        linkType = try u32(20)
        var at = 24
        while at < bytes.count {
            let captured = Int(try u32(at + 8))
            guard at + 16 + captured <= bytes.count else { throw Malformed() }
            records.append(
                Record(
                    seconds: try u32(at), nanoseconds: try u32(at + 4), originalLength: Int(try u32(at + 12)),
                    bytes: Array(bytes[at + 16..<at + 16 + captured])))
            at += 16 + captured
        }
    }
}

extension CaptureTests {
    struct Failed: Error, CustomStringConvertible {
        let description: String
    }

    static func fixture(model: String = "npa-dring", switchIn: (a: Bool, b: Bool)) throws -> PassthroughFixture {
        try PassthroughFixture(
            model: model, a: GuestSpec("a", mac: "02:00:00:00:ca:01"), b: GuestSpec("b", mac: "02:00:00:00:ca:02"), switchIn: switchIn)
    }

    static func temporaryPath() -> String {
        NSTemporaryDirectory() + "npa-capture-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).pcap"
    }

    /// Starts a capture of `vnic` into a new file at `path`, on its own admin connection.
    @discardableResult
    static func capture(_ host: TestHost, _ vnic: String, _ path: String, count: UInt64?) throws -> CaptureSession {
        let output = try FileDescriptor.open(path, .writeOnly, options: [.create, .truncate], permissions: .ownerReadWrite)
        defer { try? output.close() }
        return try CaptureSession(socketPath: host.adminSocketPath, request: CaptureRequest(vnic: vnic, count: count ?? 0), output: output)
    }

    /// A frame whose payload starts with `sequence` (big-endian), EtherType 0x88B5.
    static func frame(from source: MACAddress, to destination: MACAddress, sequence: UInt64) -> [UInt8] {
        ethernetFrame(
            to: destination, from: source,
            payload: withUnsafeBytes(of: sequence.bigEndian, Array.init) + [UInt8](repeating: 0x5A, count: 38))
    }

    static func sequence(of frame: UnsafeRawBufferPointer) -> UInt64 {
        frame[14..<22].reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// Sends frames with `sequences` from `sender` to `receiver` and receives them all there;
    /// returns the sequences received.
    @discardableResult
    static func stream(_ sender: VirtualNIC, _ receiver: VirtualNIC, _ sequences: Range<UInt64>) -> [UInt64] {
        var received: [UInt64] = []
        var next = sequences.lowerBound
        while next < sequences.upperBound {
            let batch = (next..<min(next + 32, sequences.upperBound)).map { frame(from: sender.mac, to: receiver.mac, sequence: $0) }
            let n = sender.send(batch)
            next += UInt64(n)
            receiver.receive(maxFrames: 256, timeoutMilliseconds: 0) { received.append(sequence(of: $0.bytes)) }
            if n == 0 { _ = sender.waitForTransmitSpace(queue: 0, timeoutMilliseconds: 10) }
        }
        receive(receiver, into: &received, until: sequences.count)
        return received
    }

    /// Receives at `nic` until `into` holds `count` sequences (a generous bound, never a wait
    /// that decides an outcome: the counts are asserted afterwards).
    static func receive(_ nic: VirtualNIC, into received: inout [UInt64], until count: Int) {
        let deadline = ContinuousClock.now + .seconds(60)
        while received.count < count && ContinuousClock.now < deadline {
            nic.receive(maxFrames: 256, timeoutMilliseconds: 20) { received.append(sequence(of: $0.bytes)) }
        }
    }

    static func waitUntil(_ what: String, _ done: () throws -> Bool) throws {
        let deadline = Clock.monotonicNanoseconds() + 60_000_000_000
        while try !done() {
            guard Clock.monotonicNanoseconds() < deadline else { throw Failed(description: "never happened: \(what)") }
            EngineThread.sleep(microseconds: 1000)
        }
    }

    /// What a real `tshark -r` reads in the capture: each frame's source MAC and sequence.
    static func readWithTShark(_ path: String) throws -> [(source: String, sequence: UInt64)] {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tshark)
        p.arguments = ["-r", path, "-T", "fields", "-e", "eth.src", "-e", "data.data"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw Failed(description: "tshark -r \(path) exited \(p.terminationStatus)") }
        return try text.split(separator: "\n").map { line in
            let fields = line.split(separator: "\t")
            guard fields.count == 2, let sequence = UInt64(fields[1].prefix(16), radix: 16) else {
                throw Failed(description: "tshark printed '\(line)'")
            }
            return (String(fields[0]), sequence)
        }
    }
}
