import NPAControlProtocol
import NPANICModel
import Yams

/// What one guest may do: the host's policy, checked on every control operation.
public struct GuestPolicy: Equatable, Sendable {
    /// nil: any unicast MAC. Otherwise the only MACs this guest may use (the first is its default).
    public var allowedMACs: [MACAddress]?
    /// VLAN IDs the guest may join and send on. VLAN 0 (untagged) is always allowed.
    public var allowedVLANs: Set<UInt16>
    public var allowPromiscuous: Bool
    /// May the guest be switched to a VF?
    public var allowPassthrough: Bool

    public init(
        allowedMACs: [MACAddress]? = nil, allowedVLANs: Set<UInt16> = [0], allowPromiscuous: Bool = false, allowPassthrough: Bool = true
    ) {
        self.allowedMACs = allowedMACs
        self.allowedVLANs = allowedVLANs.union([0])
        self.allowPromiscuous = allowPromiscuous
        self.allowPassthrough = allowPassthrough
    }

    public func allows(mac: MACAddress) -> Bool {
        guard mac.isUnicast, mac != .zero else { return false }
        return allowedMACs?.contains(mac) ?? true
    }
}

/// The host daemon's configuration: limits, the uplink and per-guest policy.
/// Loaded from a YAML file (`npa host --config FILE`); every error names the file and line.
public struct HostConfiguration: Equatable, Sendable {
    public enum UplinkKind: Equatable, Sendable {
        case none
        case counting
        /// The PF of the named NIC: frames for MACs not on this host's vswitch go into the NIC.
        case nic(String)
        /// A TAP device of this name (`uplink: { tap: NAME }`): the kernel is the wire.
        case tap(String)
    }

    /// A software SR-IOV NIC on this host.
    public struct NICConfiguration: Equatable, Sendable {
        public var name: String
        /// A name in `NICModelRegistry` (checked when the file is loaded).
        public var model: String
        public var vfs: Int
        /// The TAP device the NIC's physical port is plugged into (`wire: { tap: NAME }`); nil:
        /// the wire only counts what leaves by it.
        public var wireTAP: String?

        public init(name: String, model: String, vfs: Int, wireTAP: String? = nil) {
            self.name = name
            self.model = model
            self.vfs = vfs
            self.wireTAP = wireTAP
        }
    }

    public var maxQueuesPerVNIC: Int = 4
    public var uplink: UplinkKind = .none
    public var nics: [NICConfiguration] = []
    /// Switch a guest to a VF as soon as its vNIC is activated, when policy allows and a VF of a
    /// model with a plugin image is free.
    public var autoPassthrough = false
    /// The plugin store: where the vendors' signed plugin bundles (`*.npabundle`) are.
    public var pluginDirectory = ".build/plugins"
    /// The public key files (`K.pub`) whose signatures the store accepts on bundles
    /// (`plugin_trust`); none: every bundle is refused and no guest switches to a VF.
    public var pluginTrust: [String] = []
    public var defaultPolicy = GuestPolicy()
    public var guestPolicies: [String: GuestPolicy] = [:]
    /// Polling passes without work before the device engine sleeps and asks for kicks.
    public var idlePassesBeforeSleep: Int = 256
    /// How long a sender's frames wait in its TX ring for a receiver with no free buffer before
    /// frames to that receiver are dropped (as `no_buffers`); 0 drops at once.
    public var receiverStallMilliseconds: Int = 500
    /// How long each step of a switch waits for the guest before the host calls it off (a
    /// switch-in is abandoned and its VF released; an admin's switch-out is cancelled and the
    /// guest keeps its VF).
    public var switchTimeoutMilliseconds: Int = 5000
    /// Guest connections open at once (attached guests, guests attaching; the admin socket's
    /// connections are capped apart); one more is told why and closed. Each attached guest holds about five descriptors, so the
    /// default fits well within the usual hard limit the host raises its descriptor limit to.
    public var maxConnections: Int = 256
    /// Seconds a guest connection may stay open without attaching a vNIC before the host closes
    /// it (only an idle or stuck client is cut; admin connections are exempt).
    public var attachTimeoutSeconds: Double = 5
    /// The file holding the key both hosts of a migration share (`migration_key_file`): every
    /// message between them is authenticated with it. nil: this host neither sends nor takes
    /// guests (a migration to or from it is refused).
    public var migrationKeyFile: String?
    /// Where this host listens for migrations from other hosts (`migration_listen`, or
    /// `npa host --listen`): `ADDR:PORT` (TCP) or a Unix socket path. nil: it takes none.
    public var migrationListen: String?
    /// How long each phase of a migration may take before it is called off and the guest
    /// resumes where it was (`migration_timeout_ms`).
    public var migrationTimeoutMilliseconds: Int = 5000
    /// After the destination announced the guest, the source forwards frames still reaching
    /// it until its own wires have drained (`WireDrainFence`) and none came for this long
    /// (`migration_forwarding_quiet_ms`), at most 200 ms. The destination holds the guest's
    /// direct frames meanwhile: it is the guest's downtime, traded against frames that spend
    /// longer than this on the network between the hosts (those are lost after it).
    public var migrationForwardingQuietMilliseconds: Int = 10
    /// How many events the host keeps in memory for `npa events` (`event_log_size`).
    public var eventLogSize: Int = 1024

    public init() {}

    public func policy(forGuest name: String) -> GuestPolicy { guestPolicies[name] ?? defaultPolicy }

    /// What in a valid configuration will surprise its user, one line each (`npa host` prints
    /// them at start): a plugin directory that does not exist, NICs whose VFs' guests no
    /// emulated guest can reach.
    public func warnings(fileExists: (String) -> Bool) -> [String] {
        var found: [String] = []
        if !nics.isEmpty && !fileExists(pluginDirectory) {
            found.append(
                "plugin_dir '\(pluginDirectory)' does not exist: no guest can switch to a VF (build the images with scripts/build-plugins.sh, or set plugin_dir)"
            )
        }
        let uplinkNIC: String? = if case .nic(let name) = uplink { name } else { nil }
        let uplinkText = if case .tap(let name) = uplink { "{ tap: \(name) }" } else { uplinkNIC ?? "\(uplink)" }
        for nic in nics where nic.name != uplinkNIC {
            found.append(
                "NIC '\(nic.name)' is not the uplink (uplink: \(uplinkText)): guests on its VFs cannot reach emulated guests, whose frames to them are dropped as unknown_destination (set uplink: \(nic.name))"
            )
        }
        return found
    }

    public static let example = """
        # npa host configuration (YAML). Every key is optional.

        # Queues a vNIC may use per direction (1-8).
        max_queues: 4

        # What the vswitch's uplink port is plugged into:
        #   none     - no uplink; unknown unicast is dropped and counted
        #   counting - a test wire that counts the frames leaving the host
        #   <nic>    - the PF of one of the NICs below (its VFs' guests are then reachable)
        #   { tap: IF } - the TAP interface IF (created, link up, if missing; removed on exit
        #              only if created): the Linux kernel is the wire
        uplink: nic0

        # Software SR-IOV NICs: model npa-dring (descriptor rings, 82599 VF style) or
        # npa-cq (submission/completion queues, ENA style), and how many VFs (1-64).
        # A NIC's physical port can be a TAP interface: add wire: { tap: npa-up0 }.
        nics:
          - { name: nic0, model: npa-dring, vfs: 8 }

        # Switch guests to a VF as soon as they activate (policy and free VFs permitting).
        auto_passthrough: false

        # The plugin store: the vendors' signed plugin bundles (*.npabundle), and the public
        # keys (npa plugin keygen) whose signatures it accepts; a bundle not signed by one of
        # them, or failing any other check, is refused (npa plugin list --host says why).
        # npa demo builds and signs the in-tree plugins there with a test key.
        plugin_dir: .build/plugins
        plugin_trust: [.build/plugins/test-signing.pub]

        # Polling passes without work before device emulation sleeps and asks guests to kick.
        idle_passes: 256

        # Milliseconds a sender's frames wait (in its TX ring: backpressure) for a receiver
        # whose buffers are all full before frames to it are dropped as no_buffers; 0 = at once.
        # A guest in a switch handshake reads no ring until its step is done: it is waited
        # for up to switch_timeout_ms instead, when that is longer.
        receiver_stall_ms: 500

        # Milliseconds each step of a switch waits for the guest (a stopped or hung guest):
        # then a switch-in is abandoned (VF released), a switch-out called off (the guest keeps
        # its VF), and npa status says why.
        switch_timeout_ms: 5000

        # Guest connections open at once (attached and attaching; the admin socket has its own); one
        # more is told why and closed. An attached guest holds about five descriptors.
        max_connections: 256

        # Seconds a connection may stay open without attaching a vNIC before it is closed.
        attach_timeout: 5

        # Live migration: the key both hosts share (at least 32 bytes; the file must not be
        # readable by group or others), where this host takes guests from others (ADDR:PORT or
        # a Unix socket path; npa host --listen says the same), and how long each phase may
        # take before the guest resumes where it was.
        # migration_key_file: /etc/npa/migration.key
        # migration_listen: 127.0.0.1:7470
        migration_timeout_ms: 5000
        # After the destination announces the guest, the source forwards frames still reaching
        # it until its own wires are drained and none came for this long (at most 200 ms): the
        # guest's downtime, traded against frames slower than that on the network between them.
        migration_forwarding_quiet_ms: 10

        # Events the host keeps in memory for npa events (attach, detach, switch phases,
        # refusals, faults, VF resets, migrations); older ones are let go.
        event_log_size: 1024

        # Policy for guests not listed under `guests`.
        default_policy:
          macs: any            # "any" (any unicast MAC) or a list of MACs
          vlans: [0]           # VLANs the guest may join; 0 (untagged) is always allowed
          promiscuous: false   # may the guest put its vNIC in promiscuous mode?
          passthrough: true    # may the guest be switched to a VF (npa vnic switch-in)?

        # Policy per guest name (the --name a guest attaches with).
        guests:
          alpha:
            macs: ["02:00:00:00:00:0a"]
            vlans: [0, 10]
            promiscuous: true
        """

    /// A configuration error with its location, printed as one line.
    public struct LoadError: Error, CustomStringConvertible, Sendable {
        public let description: String
        init(_ file: String, _ line: Int?, _ message: String) {
            description = line.map { "\(file):\($0): \(message)" } ?? "\(file): \(message)"
        }
    }

    public static func parse(yaml text: String, file: String = "<config>") throws -> HostConfiguration {
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            throw LoadError(file, nil, "not valid YAML: \(String(describing: error).split(separator: "\n").first ?? "")")
        }
        var config = HostConfiguration()
        var uplinkLine: Int?
        guard let root else { return config }
        guard let top = root.mapping else { throw LoadError(file, root.mark?.line, "the top level must be a mapping of keys") }
        for (keyNode, value) in top {
            let key = keyNode.string ?? ""
            let line = keyNode.mark?.line
            switch key {
            case "max_queues":
                guard let n = value.int, (1...8).contains(n) else {
                    throw LoadError(file, line, "max_queues must be an integer from 1 to 8")
                }
                config.maxQueuesPerVNIC = n
            case "uplink":
                uplinkLine = line
                if value.mapping != nil {
                    config.uplink = .tap(try parseTAPWire(value, file: file, line: line, path: "uplink"))
                    continue
                }
                guard let s = value.string, !s.isEmpty else {
                    throw LoadError(file, line, "uplink must be none, counting, a NIC name or { tap: IF }")
                }
                config.uplink = s == "none" ? .none : s == "counting" ? .counting : .nic(s)
            case "nics":
                guard let list = value.sequence else { throw LoadError(file, line, "nics must be a list of {name, model, vfs}") }
                for item in list {
                    let l = item.mark?.line ?? line
                    guard let map = item.mapping, let name = map["name"]?.string, !name.isEmpty,
                        let model = map["model"]?.string, let vfs = map["vfs"]?.int
                    else { throw LoadError(file, l, "each NIC needs name, model and vfs") }
                    do { _ = try NICModelRegistry.model(named: model) } catch { throw LoadError(file, l, error.description) }
                    guard (1...64).contains(vfs) else { throw LoadError(file, l, "a NIC has 1 to 64 VFs") }
                    guard !config.nics.contains(where: { $0.name == name }) else {
                        throw LoadError(file, l, "NIC '\(name)' is defined twice")
                    }
                    let wire = try map["wire"].map { try parseTAPWire($0, file: file, line: l, path: "NIC '\(name)' wire") }
                    config.nics.append(NICConfiguration(name: name, model: model, vfs: vfs, wireTAP: wire))
                }
            case "auto_passthrough":
                guard let b = value.bool else { throw LoadError(file, line, "auto_passthrough must be true or false") }
                config.autoPassthrough = b
            case "plugin_dir":
                guard let d = value.string, !d.isEmpty else { throw LoadError(file, line, "plugin_dir must be a directory path") }
                config.pluginDirectory = d
            case "plugin_trust":
                guard let list = value.sequence, let files = Optional(list.compactMap(\.string)), files.count == list.count,
                    !files.contains(where: \.isEmpty)
                else { throw LoadError(file, line, "plugin_trust must be a list of public key files ([K.pub, ...])") }
                config.pluginTrust = files
            case "idle_passes":
                guard let n = value.int, n >= 1 else { throw LoadError(file, line, "idle_passes must be a positive integer") }
                config.idlePassesBeforeSleep = n
            case "receiver_stall_ms":
                guard let n = value.int, (0...60_000).contains(n) else {
                    throw LoadError(file, line, "receiver_stall_ms must be 0...60000")
                }
                config.receiverStallMilliseconds = n
            case "switch_timeout_ms":
                guard let n = value.int, (1...600_000).contains(n) else {
                    throw LoadError(file, line, "switch_timeout_ms must be 1...600000")
                }
                config.switchTimeoutMilliseconds = n
            case "max_connections":
                guard let n = value.int, (1...65536).contains(n) else {
                    throw LoadError(file, line, "max_connections must be an integer from 1 to 65536")
                }
                config.maxConnections = n
            case "attach_timeout":
                guard let seconds = value.float, seconds > 0, seconds <= 3600 else {
                    throw LoadError(file, line, "attach_timeout must be a number of seconds above 0 and at most 3600")
                }
                config.attachTimeoutSeconds = seconds
            case "migration_key_file":
                guard let path = value.string, !path.isEmpty else { throw LoadError(file, line, "migration_key_file must be a file path") }
                config.migrationKeyFile = path
            case "migration_listen":
                guard let address = value.string, !address.isEmpty else {
                    throw LoadError(file, line, "migration_listen must be ADDR:PORT or a Unix socket path")
                }
                config.migrationListen = address
            case "migration_timeout_ms":
                guard let n = value.int, (1...600_000).contains(n) else {
                    throw LoadError(file, line, "migration_timeout_ms must be 1...600000")
                }
                config.migrationTimeoutMilliseconds = n
            case "migration_forwarding_quiet_ms":
                guard let n = value.int, (1...200).contains(n) else {
                    throw LoadError(file, line, "migration_forwarding_quiet_ms must be 1...200")
                }
                config.migrationForwardingQuietMilliseconds = n
            case "event_log_size":
                guard let n = value.int, (1...1_000_000).contains(n) else {
                    throw LoadError(file, line, "event_log_size must be an integer from 1 to 1000000")
                }
                config.eventLogSize = n
            case "default_policy":
                config.defaultPolicy = try parsePolicy(value, file: file, path: "default_policy")
            case "guests":
                guard let guests = value.mapping else { throw LoadError(file, line, "guests must be a mapping of guest name to policy") }
                for (nameNode, policyNode) in guests {
                    guard let name = nameNode.string, !name.isEmpty else {
                        throw LoadError(file, nameNode.mark?.line, "guest name must be a string")
                    }
                    config.guestPolicies[name] = try parsePolicy(policyNode, file: file, path: "guests.\(name)")
                }
            default:
                throw LoadError(
                    file, line,
                    "unknown key '\(key)' (known: max_queues, uplink, nics, auto_passthrough, plugin_dir, plugin_trust, idle_passes, receiver_stall_ms, switch_timeout_ms, max_connections, attach_timeout, migration_key_file, migration_listen, migration_timeout_ms, migration_forwarding_quiet_ms, event_log_size, default_policy, guests)"
                )
            }
        }
        if case .nic(let name) = config.uplink, !config.nics.contains(where: { $0.name == name }) {
            throw LoadError(file, uplinkLine, "uplink must be none, counting or a NIC name; no NIC is named '\(name)'")
        }
        try checkTAPWiresAreDistinct(config, file: file)
        return config
    }

    private static func parsePolicy(_ node: Node, file: String, path: String) throws -> GuestPolicy {
        guard let map = node.mapping else { throw LoadError(file, node.mark?.line, "\(path) must be a mapping") }
        var policy = GuestPolicy()
        for (keyNode, value) in map {
            let key = keyNode.string ?? ""
            let line = keyNode.mark?.line ?? value.mark?.line
            switch key {
            case "macs":
                if value.string == "any" {
                    policy.allowedMACs = nil
                } else if let list = value.sequence {
                    policy.allowedMACs = try list.map { item in
                        guard let s = item.string, let mac = MACAddress(s), mac.isUnicast, mac != .zero else {
                            throw LoadError(
                                file, item.mark?.line ?? line,
                                "\(path).macs: '\(item.string ?? "?")' is not a unicast MAC like 02:00:00:00:00:01")
                        }
                        return mac
                    }
                } else {
                    throw LoadError(file, line, "\(path).macs must be \"any\" or a list of MACs")
                }
            case "vlans":
                guard let list = value.sequence else { throw LoadError(file, line, "\(path).vlans must be a list of VLAN IDs") }
                var vlans: Set<UInt16> = [0]
                for item in list {
                    guard let v = item.int, (0...4094).contains(v) else {
                        throw LoadError(
                            file, item.mark?.line ?? line, "\(path).vlans: '\(item.string ?? "?")' is not a VLAN ID from 0 to 4094")
                    }
                    vlans.insert(UInt16(v))
                }
                policy.allowedVLANs = vlans
            case "promiscuous":
                guard let b = value.bool else { throw LoadError(file, line, "\(path).promiscuous must be true or false") }
                policy.allowPromiscuous = b
            case "passthrough":
                guard let b = value.bool else { throw LoadError(file, line, "\(path).passthrough must be true or false") }
                policy.allowPassthrough = b
            default:
                throw LoadError(file, line, "unknown key '\(key)' in \(path) (known: macs, vlans, promiscuous, passthrough)")
            }
        }
        return policy
    }
}
