import NPAControlProtocol

/// Live policy on the admin socket (`npa policy set`, `npa policy show`): a guest's policy
/// changes on the running host, in both modes at once, and lasts until the host stops (the
/// configuration file stays the default at start).
///
/// A change is checked whole first — the guest known, every VLAN ID and MAC well formed, and
/// the running state not against it (no switch under way, the MAC in use still allowed) — and
/// only then applied, all of it: the policy table (`LivePolicies`), the vNIC's own copy and its
/// vswitch port (`EmulatedDevice.adopt(policy:)`), its VF in passthrough (the PF driver), and a
/// switch-out when passthrough is revoked. A refused change changes nothing anywhere.
extension ControlServer {
    func handlePolicy(_ message: ControlMessage, from c: Connection) {
        switch message {
        case .policySet(let change):
            switch changePolicy(change) {
            case .success(let note): reply(c, .ok(note))
            case .failure(let refusal): reply(c, ControlRefusal.policy(refusal).reply, about: change.guest)
            }
        case .policyRequest(let guest):
            switch policyReport(guest: guest) {
            case .success(let report): reply(c, .policyReply(json: report.json()))
            case .failure(let refusal): reply(c, ControlRefusal.policy(refusal).reply, about: guest)
            }
        default:
            reply(c, ControlRefusal.unexpectedMessage.reply)
        }
    }

    /// Guests a policy may be set or shown for: configured, attached, or changed before.
    var policyGuestNames: [String] { policies.knownNames.union(dataPath.devices.map(\.name)).sorted() }

    /// Validates `change` against the request's own rules and the running state, then applies
    /// it. Returns what changed and what followed, as recorded in the event log.
    func changePolicy(_ change: PolicyChange) -> Result<String, PolicyRefusal> {
        let name = change.guest
        let device = dataPath.device(named: name)
        guard device != nil || policies.knownNames.contains(name) else {
            return .failure(.unknownGuest(name, known: policyGuestNames))
        }
        guard !change.isEmpty else { return .failure(.noChange(guest: name)) }
        let old = policies.policy(forGuest: name)
        var new = old
        if let vlans = change.vlans {
            if let bad = vlans.first(where: { $0 > 4094 }) { return .failure(.vlanOutOfRange(bad)) }
            new.allowedVLANs = Set(vlans).union([0])
        }
        switch change.macs {
        case nil: break
        case .any?: new.allowedMACs = nil
        case .only(let list)?:
            if let bad = list.first(where: { !$0.isUnicast || $0 == .zero }) { return .failure(.macNotUnicast(bad)) }
            guard !list.isEmpty else { return .failure(.noMACs(guest: name)) }
            var seen = Set<MACAddress>()
            new.allowedMACs = list.filter { seen.insert($0).inserted }
        }
        if let allow = change.allowPromiscuous { new.allowPromiscuous = allow }
        if let allow = change.allowPassthrough { new.allowPassthrough = allow }
        if let d = device {
            if departures[name] != nil { return .failure(.moving(guest: name)) }
            // A switch decides where the MAC and the filters live until it ends.
            if d.switching.isSwitching || d.awaitingSwitchOut { return .failure(.switchUnderWay(guest: name)) }
            if !new.allows(mac: d.mac) { return .failure(.macInUse(d.mac, guest: name)) }
        }

        // Checked: from here on nothing fails, and everything is applied.
        policies.set(new, forGuest: name)
        var consequences: [String] = []
        if let d = device {
            let membershipBefore = d.effectiveVLANs
            let promiscuousBefore = d.effectiveRxMode.contains(.promiscuous)
            d.adopt(policy: new)
            pfDriver.syncPassthroughFilters(d)  // in passthrough, the VF's filters follow at once
            let stopped = membershipBefore.subtracting(d.effectiveVLANs).sorted()
            let resumed = d.effectiveVLANs.subtracting(membershipBefore).sorted()
            if !stopped.isEmpty { consequences.append("VLAN \(Self.list(stopped)) frames stop now") }
            if !resumed.isEmpty { consequences.append("VLAN \(Self.list(resumed)) frames flow again") }
            if promiscuousBefore && !d.effectiveRxMode.contains(.promiscuous) { consequences.append("promiscuous mode turned off") }
            if !promiscuousBefore && d.effectiveRxMode.contains(.promiscuous) { consequences.append("promiscuous mode back on") }
            if !new.allowPassthrough && d.mode == .passthrough {
                switch pfDriver.requestSwitch(d, toPassthrough: false) {
                case .success: consequences.append("switched out to emulation")
                case .failure(let refusal): consequences.append("switch-out refused: \(refusal)")
                }
            } else if new.allowPassthrough && !old.allowPassthrough && configuration.autoPassthrough && d.mode == .emulated,
                case .success = pfDriver.requestSwitch(d, toPassthrough: true)
            {
                consequences.append("switching in (auto_passthrough)")
            }
        } else {
            consequences.append("not attached: applies when it attaches")
        }
        let detail = Self.summary(from: old, to: new) + (consequences.isEmpty ? "" : "; " + consequences.joined(separator: "; "))
        events.record(.policy, vnic: name, detail)
        logger.info("policy of guest '\(name)' changed: \(detail)")
        return .success("guest '\(name)': \(detail). Lasts until the host stops (the config file stays the default at start).")
    }

    /// The policies in force for guest `guest`, or for every guest known when it is empty.
    func policyReport(guest: String) -> Result<PolicyReport, PolicyRefusal> {
        let names = policyGuestNames
        if !guest.isEmpty && !names.contains(guest) { return .failure(.unknownGuest(guest, known: names)) }
        let attached = Set(dataPath.devices.map(\.name))
        return .success(
            PolicyReport(
                guests: (guest.isEmpty ? names : [guest]).map { name in
                    let p = policies.policy(forGuest: name)
                    return PolicyReport.Guest(
                        name: name, macs: p.allowedMACs?.map(\.description), vlans: p.allowedVLANs.sorted(),
                        promiscuous: p.allowPromiscuous,
                        passthrough: p.allowPassthrough, source: policies.source(ofGuest: name), attached: attached.contains(name))
                }))
    }

    private static func list(_ vlans: [UInt16]) -> String { vlans.map(String.init).joined(separator: ",") }

    /// "vlans 0,10 -> 0; passthrough yes -> no": the fields that changed (or "unchanged").
    private static func summary(from old: GuestPolicy, to new: GuestPolicy) -> String {
        func yesNo(_ b: Bool) -> String { b ? "yes" : "no" }
        func macs(_ m: [MACAddress]?) -> String { m.map { $0.map(\.description).joined(separator: ",") } ?? "any" }
        var parts: [String] = []
        if old.allowedVLANs != new.allowedVLANs {
            parts.append("vlans \(list(old.allowedVLANs.sorted())) -> \(list(new.allowedVLANs.sorted()))")
        }
        if old.allowedMACs != new.allowedMACs { parts.append("macs \(macs(old.allowedMACs)) -> \(macs(new.allowedMACs))") }
        if old.allowPromiscuous != new.allowPromiscuous {
            parts.append("promiscuous \(yesNo(old.allowPromiscuous)) -> \(yesNo(new.allowPromiscuous))")
        }
        if old.allowPassthrough != new.allowPassthrough {
            parts.append("passthrough \(yesNo(old.allowPassthrough)) -> \(yesNo(new.allowPassthrough))")
        }
        return parts.isEmpty ? "policy unchanged" : parts.joined(separator: "; ")
    }
}
