import Foundation
import NPAControlProtocol

/// A raw-socket program (python3, AF_PACKET) in a LAN machine's namespace: it sends numbered
/// frames (the `TrafficFrame` layout, flow 2, 128 bytes) to `peer` at a fixed rate and checks the
/// peer's numbered frames (flow 1): distinct, duplicates, out of order. It reports its counts in
/// a progress file (`progress()`); `stopSending()` ends its sending, `finish()` its receiving, and
/// returns its final line. Owns the process and its files.
final class RawLANEndpoint {
    let mac: MACAddress
    private let process: Process
    private let base = NSTemporaryDirectory() + "npa-lan-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    private var report: String?

    init(lab: NetworkLab, namespace: String, peer: MACAddress, framesPerSecond: Int) throws {
        let links = try lab.run(in: namespace, ["ip", "-o", "link", "show"]).output
        guard let line = links.split(separator: "\n").first(where: { $0.contains("veth") || $0.contains("@") }),
            let range = line.range(of: "link/ether "),
            let mac = MACAddress(String(line[range.upperBound...].prefix(17)))
        else { throw LabFailure(description: "no veth in \(namespace): \(links)") }
        let ifname = String(line.split(separator: ":")[1].split(separator: "@")[0]).trimmingCharacters(in: .whitespaces)
        self.mac = mac
        process = try lab.start(
            in: namespace,
            [
                "python3", "-c", Self.script, ifname, mac.description, peer.description, "\(framesPerSecond)", base,
            ])
    }

    /// (frames sent, distinct frames received, whether sending has stopped).
    func progress() -> (sent: Int, received: Int, stopped: Bool) {
        let text = (try? String(contentsOfFile: base + ".progress", encoding: .utf8)) ?? ""
        let fields = text.split(separator: " ").compactMap { Int($0) }
        guard fields.count == 3 else { return (0, 0, false) }
        return (fields[0], fields[1], fields[2] == 1)
    }

    func stopSending() { _ = FileManager.default.createFile(atPath: base + ".stop", contents: nil) }

    /// Ends the program and returns its report: "sent N received U duplicates D out_of_order O".
    func finish() -> String {
        if let report { return report }
        stopSending()
        _ = FileManager.default.createFile(atPath: base + ".done", contents: nil)
        let data = (process.standardOutput as! Pipe).fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        report = text
        return text
    }

    func end() {
        _ = FileManager.default.createFile(atPath: base + ".done", contents: nil)
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        for suffix in [".progress", ".progress.tmp", ".stop", ".done"] { unlink(base + suffix) }
    }

    private static let script = """
        import socket, struct, time, os, sys, select
        ifname, me, peer, rate, base = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
        mac = lambda m: bytes(int(x, 16) for x in m.split(":"))
        me, peer = mac(me), mac(peer)
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
        s.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE: a slow turn of this loop must not drop
        s.bind((ifname, 0)); s.setblocking(False)
        MAGIC = 0x4E504157
        def frame(seq):
            ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 114, seq & 0xFFFF, 0, 64, 17, 0, bytes([10, 0, me[4], me[5]]), bytes([10, 0, peer[4], peer[5]])))
            total = sum(struct.unpack("!10H", ip)); total = (total & 0xFFFF) + (total >> 16); total = (total & 0xFFFF) + (total >> 16)
            struct.pack_into("!H", ip, 10, ~total & 0xFFFF)
            header = peer + me + b"\\x08\\x00" + bytes(ip) + struct.pack("!HHHH", 10002, 9, 94, 0)
            payload = struct.pack("<IIQI", MAGIC, 2, seq, 128)
            return header + payload + bytes(128 - len(header) - len(payload))
        sent, seen, dups, ooo, highest = 0, set(), 0, 0, -1
        start = time.monotonic(); stopped = False; last = 0
        deadline = start + 600
        while not os.path.exists(base + ".done") and time.monotonic() < deadline:
            if not stopped and os.path.exists(base + ".stop"): stopped = True
            if not stopped:
                due = int((time.monotonic() - start) * rate)
                while sent < due:
                    try:
                        s.send(frame(sent)); sent += 1
                    except BlockingIOError:
                        break
            select.select([s], [], [], 0.001)
            while True:
                try:
                    b = s.recv(2048)
                except BlockingIOError:
                    break
                if len(b) != 128 or b[6:12] != peer or struct.unpack_from("<I", b, 42)[0] != MAGIC: continue
                flow, seq = struct.unpack_from("<IQ", b, 46)
                if flow != 1: continue
                if seq in seen: dups += 1; continue
                if seq < highest: ooo += 1
                highest = max(highest, seq); seen.add(seq)
            now = time.monotonic()
            if now - last > 0.01:
                last = now
                with open(base + ".progress.tmp", "w") as f: f.write(f"{sent} {len(seen)} {1 if stopped else 0}")
                os.replace(base + ".progress.tmp", base + ".progress")
        packets, drops = struct.unpack("II", s.getsockopt(263, 6, 8))  # SOL_PACKET, PACKET_STATISTICS (since the last read)
        print(f"sent {sent} received {len(seen)} duplicates {dups} out_of_order {ooo} socket_drops {drops}")
        """
}
