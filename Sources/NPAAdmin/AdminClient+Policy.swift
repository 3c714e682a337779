import NPAControlProtocol

extension AdminClient {
    /// Changes guest `change.guest`'s policy on the running host, in both modes at once; the
    /// fields left nil stay. Returns the host's note (what changed and what followed). A refusal
    /// (unknown guest, malformed VLAN or MAC, the MAC in use left out, a switch under way)
    /// changed nothing.
    @discardableResult
    public func setPolicy(_ change: PolicyChange) throws(Failure) -> String {
        let reply = try request(.policySet(change))
        guard case .ok(let note) = reply else { throw .unexpectedReply("\(reply)") }
        return note
    }

    /// The policies the host applies now: guest `guest`'s, or every known guest's (nil).
    public func policies(guest: String? = nil) throws(Failure) -> PolicyReport {
        let reply = try request(.policyRequest(guest: guest ?? ""))
        guard case .policyReply(let json) = reply else { throw .unexpectedReply("\(reply)") }
        do { return try PolicyReport.decode(json) } catch { throw .unexpectedReply("policy report that does not decode: \(error)") }
    }
}
