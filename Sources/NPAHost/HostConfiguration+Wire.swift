import Yams

/// The TAP wire keys of the host configuration: a NIC's `wire: { tap: IF }` and the vswitch's
/// `uplink: { tap: IF }`. Parsing only: opening the devices is `HostWires`' job.
extension HostConfiguration {
    /// The interface name in `{ tap: IF }`, checked as the kernel checks it (1 to 15 bytes, no
    /// '/', ':' or white space, not "." or "..").
    static func parseTAPWire(_ node: Node, file: String, line: Int?, path: String) throws -> String {
        let at = node.mark?.line ?? line
        guard let map = node.mapping, map.count == 1, let nameNode = map["tap"] else {
            throw LoadError(file, at, "\(path) must be { tap: IF } (a TAP interface name)")
        }
        guard let name = nameNode.string, isValidInterfaceName(name) else {
            throw LoadError(
                file, nameNode.mark?.line ?? at,
                "\(path): '\(nameNode.string ?? "?")' is not an interface name (1 to 15 bytes, no '/', ':' or spaces)")
        }
        return name
    }

    static func isValidInterfaceName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (1...15).contains(bytes.count), name != ".", name != ".." else { return false }
        return !bytes.contains { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: ":") || $0 <= 0x20 || $0 == 0x7F }
    }

    /// No TAP interface is the wire of two ports (its frames would go to one of them at random).
    static func checkTAPWiresAreDistinct(_ config: HostConfiguration, file: String) throws {
        var seen: Set<String> = []
        var taps = config.nics.compactMap(\.wireTAP)
        if case .tap(let name) = config.uplink { taps.append(name) }
        for tap in taps where !seen.insert(tap).inserted {
            throw LoadError(file, nil, "TAP interface '\(tap)' is the wire of two ports (each NIC and the uplink need their own)")
        }
    }

    /// Every TAP wire this configuration names, with the port it serves (for messages).
    public var tapWires: [(port: String, tap: String)] {
        var wires = nics.compactMap { n in n.wireTAP.map { ("NIC \(n.name)", $0) } }
        if case .tap(let name) = uplink { wires.append(("uplink", name)) }
        return wires
    }
}
