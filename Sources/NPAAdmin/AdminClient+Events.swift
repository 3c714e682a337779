import NPAControlProtocol

extension AdminClient {
    /// One page of the host's event log: the events it still holds after `sequence` (0: from
    /// the oldest it holds), oldest first, and where its log stands (`HostEventBatch`). A
    /// sequence the host has not reached yet is refused.
    public func events(after sequence: UInt64) throws(Failure) -> HostEventBatch {
        let reply = try request(.eventsRequest(after: sequence))
        guard case .eventsReply(let batch) = reply else { throw .unexpectedReply("\(reply)") }
        return batch
    }

    /// Every event the host holds after `sequence`, page by page until its newest, with how
    /// many it had let go before the first page (`lost`).
    public func allEvents(after sequence: UInt64) throws(Failure) -> (events: [HostEvent], lost: UInt64, capacity: UInt32) {
        var cursor = sequence
        var collected: [HostEvent] = []
        var lost: UInt64 = 0
        var capacity: UInt32 = 0
        while true {
            let page = try events(after: cursor)
            lost += page.lost(after: cursor)
            capacity = page.capacity
            collected += page.events
            cursor = page.cursor(after: cursor)
            if cursor >= page.latest || page.events.isEmpty { return (collected, lost, capacity) }
        }
    }
}
