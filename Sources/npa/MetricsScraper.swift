import Glibc
import NPASystem

/// A Prometheus server's part in `npa bench --observe metrics`: a thread that scrapes
/// `http://127.0.0.1:PORT/metrics` once per `intervalMilliseconds` (HTTP/1.0, one connection per
/// scrape, read to its end) until stopped, and counts what it got. Touches only its socket.
final class MetricsScraper: @unchecked Sendable {
    private let port: Int
    private let intervalMilliseconds: Int32
    private let stopNotifier: EventNotifier
    private var thread: pthread_t?
    /// Scrapes answered 200 with a body, and those that were not. Read after `stop()`.
    private(set) var scrapes = 0
    private(set) var failures = 0

    init(port: Int, intervalMilliseconds: Int32 = 1000) throws {
        self.port = port
        self.intervalMilliseconds = intervalMilliseconds
        stopNotifier = try EventNotifier()
    }

    /// Scrapes at once, then every interval.
    func start() {
        thread = EngineThread.start(name: "scraper") { [self] in
            repeat {
                if scrapeOnce() { scrapes += 1 } else { failures += 1 }
            } while !stopNotifier.wait(timeoutMilliseconds: intervalMilliseconds)
        }
    }

    func stop() {
        stopNotifier.signal()
        if let thread { EngineThread.join(thread) }
        thread = nil
    }

    private func scrapeOnce() -> Bool {
        guard let socket = try? StreamSocket.connect(.tcp(host: "127.0.0.1", port: UInt16(port)), timeoutMilliseconds: 5000) else {
            return false
        }
        let request = Array("GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
        var written = 0
        while written < request.count {
            guard socket.wait(writable: true, timeoutMilliseconds: 5000),
                let n = try? request[written...].withUnsafeBytes({ try socket.write($0) })
            else { return false }
            written += n
        }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while socket.wait(timeoutMilliseconds: 5000) {
            switch try? buffer.withUnsafeMutableBytes({ try socket.read(into: $0) }) {
            case .bytes(let n): response += buffer[0..<n]
            case .wouldBlock: continue
            case .endOfStream: return response.starts(with: Array("HTTP/1.0 200".utf8)) || response.starts(with: Array("HTTP/1.1 200".utf8))
            case nil: return false
            }
        }
        return false
    }
}
