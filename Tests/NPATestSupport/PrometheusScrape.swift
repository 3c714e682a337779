import Foundation

/// A scrape of a metrics endpoint read by a real Prometheus text-format parser: the
/// `prometheus_client` Python package's (Debian's python3-prometheus-client, which
/// scripts/install-deps.sh installs). The parser fetches the URL itself and prints every sample
/// it parsed as JSON; a text it cannot parse fails the scrape.
package struct PrometheusScrape {
    package struct Sample: Decodable, Equatable {
        package var name: String
        package var labels: [String: String]
        package var value: Double
    }

    /// Why a scrape failed: the endpoint's answer, or the parser's complaint.
    package struct Failed: Error, CustomStringConvertible {
        package let description: String
        package init(description: String) { self.description = description }
    }

    package let samples: [Sample]

    /// A python3 that has `prometheus_client`, or nil (the tests that need one skip, saying so).
    package static let python: String? = ["/usr/bin/python3", "/usr/local/bin/python3"].first { path in
        FileManager.default.isExecutableFile(atPath: path) && run(path, ["-c", "import prometheus_client"]).status == 0
    }

    private static let script = """
        import json, sys, urllib.request, urllib.error
        from prometheus_client.parser import text_string_to_metric_families
        try:
            text = urllib.request.urlopen(sys.argv[1], timeout=60).read().decode()
        except urllib.error.HTTPError as e:
            print(f"HTTP {e.code}: {e.read().decode()}", file=sys.stderr); sys.exit(2)
        out = []
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out.append({"name": s.name, "labels": s.labels, "value": s.value})
        print(json.dumps(out))
        """

    /// Scrapes `url` and parses what it served.
    package init(url: String) throws {
        guard let python = Self.python else { throw Failed(description: "no python3 with prometheus_client") }
        let (status, output, errors) = Self.run(python, ["-c", Self.script, url])
        guard status == 0 else { throw Failed(description: "scrape of \(url) failed: \(errors)") }
        samples = try JSONDecoder().decode([Sample].self, from: Data(output.utf8))
    }

    /// The value of the sample `name` whose labels include `labels`; nil if none has them.
    package func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { sample in sample.name == name && labels.allSatisfy { k, v in sample.labels[k] == v } }?.value
    }

    /// Every sample named `name`.
    package func all(_ name: String) -> [Sample] { samples.filter { $0.name == name } }

    private static func run(_ executable: String, _ arguments: [String]) -> (status: Int32, stdout: String, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        do { try process.run() } catch { return (-1, "", "\(error)") }
        // Read to the ends before waiting (a full pipe would block the child); its errors are short.
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self))
    }
}
