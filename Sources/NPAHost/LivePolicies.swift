import NPAControlProtocol

/// The guest policies a running host applies: the configuration's (`default_policy`, `guests:`)
/// as loaded at start, and on top of them the changes an administrator made since
/// (`npa policy set`), which last until the host stops — the file stays the default at start.
///
/// Every control-path question "what may guest N do?" (attach, a restore, an arrival, a
/// migration's prepare) asks here, so a change is seen by the next one. A running vNIC holds
/// its own copy (`EmulatedDevice.policy`), replaced by `ControlServer+Policy` when it changes.
/// Only the host's thread touches it.
final class LivePolicies {
    private let configuration: HostConfiguration
    /// Policies changed since start, by guest name.
    private(set) var changed: [String: GuestPolicy] = [:]

    init(configuration: HostConfiguration) { self.configuration = configuration }

    func policy(forGuest name: String) -> GuestPolicy { changed[name] ?? configuration.policy(forGuest: name) }

    /// Where guest `name`'s policy comes from: "live", "config" or "default".
    func source(ofGuest name: String) -> String {
        changed[name] != nil ? "live" : configuration.guestPolicies[name] != nil ? "config" : "default"
    }

    /// The guest names the configuration lists or a change named.
    var knownNames: Set<String> { Set(configuration.guestPolicies.keys).union(changed.keys) }

    func set(_ policy: GuestPolicy, forGuest name: String) { changed[name] = policy }
}
