import Foundation
import NPASystem
import NPATestSupport
import Testing

/// `npa bench --tcp` end to end, in a child `npa`: a one-second round of each mode completes,
/// both modes and the veth reference carry the stream, and the bench removes the namespaces it made. Asserts no rate.
@Suite(.serialized) struct TCPBenchTests {
    static var iperf3IsInstalled: Bool {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        return (path.split(separator: ":").map(String.init) + ["/usr/bin", "/usr/local/bin"])
            .contains { FileManager.default.isExecutableFile(atPath: "\($0)/iperf3") }
    }

    @Test(
        .enabled(
            if: TAPDevice.isAvailable && iperf3IsInstalled,
            Comment(rawValue: "needs root, /dev/net/tun and iperf3 (scripts/install-deps.sh installs it)")))
    func aShortRunCarriesTheStreamInBothModesAndLeavesNoNamespace() throws {
        let bench = try NPAProcess(["bench", "--tcp", "--seconds", "1", "--repeat", "1", "--json"])
        defer { if bench.process.isRunning { bench.kill() } }
        let out = bench.finish()
        #expect(out.status == 0, "\(out.stderr)")
        let report = try #require(
            try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any], "\(out.stdout)\n\(out.stderr)")
        let modes = try #require(report["modes"] as? [[String: Any]])
        #expect(Set(modes.compactMap { $0["mode"] as? String }) == ["emulated", "passthrough", "veth"])
        for mode in modes { #expect(((mode["mbps"] as? NSNumber)?.doubleValue ?? 0) > 0, "\(mode)") }
        let runs = try #require(report["runs"] as? [[String: Any]])
        #expect(runs.count == 5, "one full-rate run per path, one paced run per mode")
        #expect(report["ratios"] != nil && report["equal_load"] != nil)

        let listing = try ChildOutput.run([
            FileManager.default.fileExists(atPath: "/usr/sbin/ip") ? "/usr/sbin/ip" : "/sbin/ip", "netns", "list",
        ])
        #expect(!listing.contains("npa-bench-\(bench.process.processIdentifier)-"), "\(listing)")
    }
}

/// Runs a program (an absolute path) to its end and returns its standard output.
private enum ChildOutput {
    static func run(_ command: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }
}
