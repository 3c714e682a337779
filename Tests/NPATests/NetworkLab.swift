import Foundation

/// The Linux side of the TAP wire tests: network namespaces, links and the programs run inside
/// them, by the `ip` command. Every namespace it adds is deleted by `removeAll()` (call it in a
/// `defer`), which also takes every interface inside with it; names carry the test's pid and a
/// random tag so parallel runs never meet.
final class NetworkLab {
    /// A short unique tag (hex) for interface names, which the kernel caps at 15 bytes.
    let tag = String(format: "%05x", UInt32.random(in: 0...0xF_FFFF) ^ UInt32(getpid() & 0xF_FFFF))
    private(set) var namespaces: [String] = []

    /// A namespace named for this lab, added now, with its loopback up.
    func addNamespace(_ role: String) throws -> String {
        let ns = "npa-w-\(getpid())-\(tag)-\(role)"
        try ip(["netns", "add", ns])
        namespaces.append(ns)
        try ip(["-n", ns, "link", "set", "lo", "up"])
        return ns
    }

    func removeAll() {
        for ns in namespaces.reversed() { _ = try? ip(["netns", "delete", ns]) }
        namespaces.removeAll()
    }

    /// Runs `ip ARGS`; throws with its standard error if it fails.
    @discardableResult
    func ip(_ arguments: [String]) throws -> String {
        let result = try Self.execute(Self.ipPath, arguments)
        if result.status != 0 { throw LabFailure(description: "ip \(arguments.joined(separator: " ")): \(result.output)") }
        return result.output
    }

    /// Runs `COMMAND` inside `ns` to its end: exit status and combined output.
    func run(in ns: String, _ command: [String]) throws -> (status: Int32, output: String) {
        try Self.execute(Self.ipPath, ["netns", "exec", ns] + command)
    }

    /// Starts `COMMAND` inside `ns`; its standard output and error on one pipe.
    func start(in ns: String, _ command: [String]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.ipPath)
        process.arguments = ["netns", "exec", ns] + command
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        return process
    }

    /// A Python TCP server that takes one connection at `address`:`port`, reads to the end and
    /// answers "<bytes> <sha256>" of what it got: the checking end of the transfers below.
    static func checkingServer(address: String, port: Int, timeoutSeconds: Int) -> String {
        """
        import socket, hashlib
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("\(address)", \(port))); s.listen(1); s.settimeout(\(timeoutSeconds))
        c, _ = s.accept(); c.settimeout(\(timeoutSeconds)); h = hashlib.sha256(); n = 0
        while True:
            b = c.recv(65536)
            if not b: break
            h.update(b); n += len(b)
        c.sendall(f"{n} {h.hexdigest()}".encode()); c.close()
        """
    }

    /// Python lines (at the top level of a script that imports `socket` and `time`) that connect
    /// `s` to `address`:`port`, polling for up to 120 s while the server is not listening yet.
    static func pythonConnect(address: String, port: Int) -> String {
        """
        deadline = time.monotonic() + 120
        while True:
            try:
                s = socket.create_connection(("\(address)", \(port)), timeout=5); break
            except OSError:
                if time.monotonic() > deadline: raise
                time.sleep(0.05)  # the server is not listening yet: poll for it
        """
    }

    /// Python lines that read the connected socket `s` to its end into `reply` (the server's answer).
    static let pythonReadReply = """
        reply = b""
        while True:
            b = s.recv(4096)
            if not b: break
            reply += b
        """

    /// A TCP transfer of `bytes` seeded bytes from `client` to a server at `address` in
    /// `server`, which answers the count and SHA-256 of what it got; true if they match what
    /// was sent. The output of both sides comes back for the failure message.
    func tcpTransfer(from client: String, to server: String, address: String, port: Int, bytes: Int) throws -> (ok: Bool, output: String) {
        let listener = try start(in: server, ["python3", "-c", Self.checkingServer(address: address, port: port, timeoutSeconds: 120)])
        defer { if listener.isRunning { listener.terminate() } }
        let sender = try run(
            in: client,
            [
                "python3", "-c",
                """
                import socket, hashlib, random, time
                data = random.Random(\(port)).randbytes(\(bytes))
                \(Self.pythonConnect(address: address, port: port))
                s.settimeout(120); s.sendall(data); s.shutdown(socket.SHUT_WR)
                \(Self.pythonReadReply)
                expected = f"{len(data)} {hashlib.sha256(data).hexdigest()}"
                print(reply.decode()); print(expected)
                assert reply.decode() == expected
                """,
            ])
        listener.waitUntilExit()
        let serverOutput = String(
            decoding: (listener.standardOutput as! Pipe).fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return (sender.status == 0 && listener.terminationStatus == 0, "client: \(sender.output) server: \(serverOutput)")
    }

    static let ipPath = FileManager.default.fileExists(atPath: "/usr/sbin/ip") ? "/usr/sbin/ip" : "/sbin/ip"

    static func toolIsInstalled(_ tool: String) -> Bool {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        return (path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin"])
            .contains { FileManager.default.isExecutableFile(atPath: "\($0)/\(tool)") }
    }

    private static func execute(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        // Read to the end first: a full pipe would otherwise block the child before it exits.
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}

/// An `ip` command that failed, with its output.
struct LabFailure: Error, CustomStringConvertible { let description: String }
