import Foundation

/// The host's answer to `npa status`: one entry per vNIC. Encoded as JSON on the control channel
/// and printed as-is by `npa status --json`.
public struct StatusReport: Codable, Equatable, Sendable {
    public struct VNIC: Codable, Equatable, Sendable {
        public var name: String
        public var mac: String
        public var mode: String
        public var link: String
        public var state: String
        public var txQueues: Int
        public var rxQueues: Int
        public var counters: [String: UInt64]
        /// Passthrough details: "nic0/vf3", the plugin, the last switch's duration.
        public var vf: String?
        public var plugin: String?
        /// In passthrough, the file of the plugin bundle the host injected at this switch-in.
        public var pluginBundle: String?
        public var lastSwitchMilliseconds: Double?
        public var lastSwitchError: String?
        /// A switch under way: "switch-in" or "switch-out", how long, and what it waits for.
        public var switchPending: String?

        public init(
            name: String, mac: String, mode: String, link: String, state: String, txQueues: Int, rxQueues: Int, counters: [String: UInt64]
        ) {
            self.name = name
            self.mac = mac
            self.mode = mode
            self.link = link
            self.state = state
            self.txQueues = txQueues
            self.rxQueues = rxQueues
            self.counters = counters
        }

        enum CodingKeys: String, CodingKey {
            case name, mac, mode, link, state, counters, vf, plugin
            case lastSwitchMilliseconds = "last_switch_ms"
            case lastSwitchError = "last_switch_error"
            case pluginBundle = "plugin_bundle"
            case switchPending = "switch_pending"
            case txQueues = "tx_queues"
            case rxQueues = "rx_queues"
        }
    }

    public struct Uplink: Codable, Equatable, Sendable {
        public var kind: String
        public var framesOut: UInt64
        public var bytesOut: UInt64
        /// Frames the NIC had for the host but its PF queue was full (PF uplink only).
        public var framesInDropped: UInt64?

        public init(kind: String, framesOut: UInt64, bytesOut: UInt64, framesInDropped: UInt64? = nil) {
            self.kind = kind
            self.framesOut = framesOut
            self.bytesOut = bytesOut
            self.framesInDropped = framesInDropped
        }

        enum CodingKeys: String, CodingKey {
            case kind
            case framesInDropped = "frames_in_dropped"
            case framesOut = "frames_out"
            case bytesOut = "bytes_out"
        }
    }

    /// The host's own connection accounting: how close it is to its limits, and what it shed.
    public struct Host: Codable, Equatable, Sendable {
        /// Control connections open now, and the cap (`max_connections`).
        public var connections: Int
        public var maxConnections: Int
        /// Connections closed at once because `max_connections` were open.
        public var connectionsRefused: UInt64
        /// Connections closed because they did not attach within `attach_timeout`.
        public var attachTimeouts: UInt64
        /// accept() failures for want of descriptors (EMFILE, ENFILE): the host backed off
        /// and kept serving; the connection waited in the backlog.
        public var acceptFDExhausted: UInt64
        /// The host's soft limit on open descriptors.
        public var fdLimit: UInt64
        /// Administrative requests (status, switch, VF reset) refused on a guest's connection:
        /// only the admin socket takes them.
        public var adminRefused: UInt64

        public init(
            connections: Int, maxConnections: Int, connectionsRefused: UInt64, attachTimeouts: UInt64, acceptFDExhausted: UInt64,
            fdLimit: UInt64,
            adminRefused: UInt64 = 0
        ) {
            self.connections = connections
            self.maxConnections = maxConnections
            self.connectionsRefused = connectionsRefused
            self.attachTimeouts = attachTimeouts
            self.acceptFDExhausted = acceptFDExhausted
            self.fdLimit = fdLimit
            self.adminRefused = adminRefused
        }

        enum CodingKeys: String, CodingKey {
            case connections
            case maxConnections = "max_connections"
            case connectionsRefused = "connections_refused"
            case attachTimeouts = "attach_timeouts"
            case acceptFDExhausted = "accept_fd_exhausted"
            case fdLimit = "fd_limit"
            case adminRefused = "admin_refused"
        }
    }

    /// A port whose wire is a TAP device: a NIC's physical port or the vswitch's uplink.
    public struct Wire: Codable, Equatable, Sendable {
        /// "NIC nic0" or "uplink".
        public var port: String
        public var interface: String
        /// "up"; or "down": the interface was deleted under the host (for good), or the kernel
        /// refused the last frame because the interface is down (until it takes one again).
        public var link: String
        /// Whether the host created the interface (and removes it on exit).
        public var created: Bool
        public var error: String?
        public var counters: [String: UInt64]

        public init(port: String, interface: String, link: String, created: Bool, error: String? = nil, counters: [String: UInt64]) {
            self.port = port
            self.interface = interface
            self.link = link
            self.created = created
            self.error = error
            self.counters = counters
        }
    }

    public var vnics: [VNIC]
    public var uplink: Uplink?
    /// nil from a host that does not report it.
    public var host: Host?
    /// The TAP wires; nil when the host has none.
    public var wires: [Wire]?
    /// Migrations to and from this host: those under way and the last finished ones; nil when
    /// there were none.
    public var migrations: [Migration]?
    /// What the migration channel refused (a host with a `migration_key_file` only).
    public var migrationChannel: MigrationChannel?
    /// The plugin store: each bundle's verdict and which one each NIC model gets; nil from a host
    /// that does not report it.
    public var plugins: PluginStore?

    public init(
        vnics: [VNIC], uplink: Uplink?, host: Host? = nil, wires: [Wire]? = nil, migrations: [Migration]? = nil,
        migrationChannel: MigrationChannel? = nil, plugins: PluginStore? = nil
    ) {
        self.plugins = plugins
        self.migrationChannel = migrationChannel
        self.vnics = vnics
        self.uplink = uplink
        self.host = host
        self.wires = wires
        self.migrations = migrations
    }

    public func json(pretty: Bool = false) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys] : [.sortedKeys]
        return String(decoding: (try? encoder.encode(self)) ?? Data(), as: UTF8.self)
    }

    public static func decode(_ json: String) throws -> StatusReport {
        try JSONDecoder().decode(StatusReport.self, from: Data(json.utf8))
    }
}
