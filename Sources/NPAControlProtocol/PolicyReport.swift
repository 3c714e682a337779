import Foundation

/// The policies a host applies now (`npa policy show`): per guest name, what it may do and
/// where that comes from. A plain value: the host makes it, the admin protocol carries it as
/// JSON (`json()`, `decode(_:)`), and its JSON form is what `npa policy show --json` prints.
public struct PolicyReport: Equatable, Sendable, Codable {
    public struct Guest: Equatable, Sendable, Codable {
        public var name: String
        /// nil: any unicast MAC. Otherwise the MACs the guest may use, as `02:00:00:00:00:0a`.
        public var macs: [String]?
        public var vlans: [UInt16]
        public var promiscuous: Bool
        public var passthrough: Bool
        /// "default" (`default_policy`), "config" (`guests:` in the file) or "live" (changed by
        /// `npa policy set` since the host started: it lasts until the host stops).
        public var source: String
        /// Whether a vNIC of this name is attached now.
        public var attached: Bool

        public init(
            name: String, macs: [String]?, vlans: [UInt16], promiscuous: Bool, passthrough: Bool, source: String, attached: Bool
        ) {
            self.name = name
            self.macs = macs
            self.vlans = vlans
            self.promiscuous = promiscuous
            self.passthrough = passthrough
            self.source = source
            self.attached = attached
        }
    }

    /// Sorted by name: the guests configured, attached or changed live (or the one asked for).
    public var guests: [Guest]

    public init(guests: [Guest]) { self.guests = guests }

    public func json() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? encoder.encode(self)).flatMap { String(data: $0, encoding: .utf8) } ?? "{}"
    }

    public static func decode(_ json: String) throws -> PolicyReport {
        try JSONDecoder().decode(PolicyReport.self, from: Data(json.utf8))
    }
}
