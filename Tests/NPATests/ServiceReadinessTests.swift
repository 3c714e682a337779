import Foundation
import NPAAdmin
import NPATestSupport
import Testing

/// `npa host` under a service manager (contrib/npa-host.service, Type=notify): it sends READY=1
/// to `$NOTIFY_SOCKET` once it serves, STOPPING=1 when told to stop, and exits cleanly.
@Suite struct ServiceReadinessTests {
    @Test func theHostSaysReadyOnceItServesAndStoppingWhenItStops() throws {
        let notifyPath = NSTemporaryDirectory() + "npa-notify-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        try #require(fd >= 0)
        defer {
            close(fd)
            unlink(notifyPath)
        }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(notifyPath.utf8)) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        try #require(bound == 0)
        // A generous bound on each wait, so a missing message fails the test instead of hanging it.
        var timeout = timeval(tv_sec: 120, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        func nextMessage() -> String? {
            var buffer = [UInt8](repeating: 0, count: 512)
            let n = recv(fd, &buffer, buffer.count, 0)
            return n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self) : nil
        }

        let socketPath = TestHost.freshSocketPath()
        let host = try NPAProcess(["host", "--socket", socketPath], environment: ["NOTIFY_SOCKET": notifyPath])
        let ready = try #require(nextMessage())
        #expect(ready == "READY=1\nSTATUS=serving guests on \(socketPath)")
        // Ready means serving: the admin socket answers at once.
        #expect(try AdminClient(controlSocket: socketPath).status().vnics.isEmpty)

        kill(host.process.processIdentifier, SIGTERM)
        #expect(nextMessage() == "STOPPING=1")
        let (status, _, stderr) = host.finish()
        #expect(status == 0, "\(stderr)")
        #expect(!FileManager.default.fileExists(atPath: socketPath))
    }
}
