import FuzzSupport
import NPAHost
import NPANICModel

// The host configuration parser (YAML, Yams underneath) on any bytes. Checked: it returns a
// configuration or throws its LoadError, saying where (never another error, never traps), and what
// it returns is one the host can start with. (Errors echo the offending key verbatim, so a key
// with a line break gives a multi-line message: not checked here, noted in issue 8, item 11.)
// What: every value in its documented range, NIC names
// unique, the uplink an existing NIC.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let config: HostConfiguration
    do {
        config = try HostConfiguration.parse(yaml: text, file: "fuzz.yaml")
    } catch let error as HostConfiguration.LoadError {
        invariant(error.description.hasPrefix("fuzz.yaml"), "a configuration error does not say where: \(error.description)")
        return 0
    } catch {
        invariant(false, "parse threw something other than LoadError: \(error)")
        return 0
    }
    invariant((1...8).contains(config.maxQueuesPerVNIC), "max_queues \(config.maxQueuesPerVNIC)")
    invariant(config.idlePassesBeforeSleep >= 1, "idle_passes \(config.idlePassesBeforeSleep)")
    invariant(!config.pluginDirectory.isEmpty, "empty plugin_dir")
    invariant(Set(config.nics.map(\.name)).count == config.nics.count, "duplicate NIC names")
    for n in config.nics {
        invariant(!n.name.isEmpty && NICModelRegistry.names.contains(n.model) && (1...64).contains(n.vfs), "bad NIC \(n)")
    }
    if case .nic(let name) = config.uplink {
        invariant(config.nics.contains { $0.name == name }, "uplink \(name) is not a NIC")
    }
    for p in [config.defaultPolicy] + Array(config.guestPolicies.values) {
        invariant(p.allowedVLANs.allSatisfy { $0 < 4095 }, "a policy allows VLAN >= 4095: \(p.allowedVLANs.sorted())")
    }
    return 0
}
