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
        public var lastSwitchMilliseconds: Double?
        public var lastSwitchError: String?
        /// A switch under way: "switch-in" or "switch-out", how long, and what it waits for.
        public var switchPending: String?

        public init(name: String, mac: String, mode: String, link: String, state: String, txQueues: Int, rxQueues: Int, counters: [String: UInt64]) {
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

    public var vnics: [VNIC]
    public var uplink: Uplink?

    public init(vnics: [VNIC], uplink: Uplink?) {
        self.vnics = vnics
        self.uplink = uplink
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
