import NPAControlProtocol

extension AdminClient {
    /// Asks the host to bring its Prometheus metrics up to date with its counters (a host
    /// started with metrics only; others refuse it).
    public func refreshMetrics() throws(Failure) {
        let reply = try request(.metricsRefresh)
        guard case .ok = reply else { throw .unexpectedReply("\(reply)") }
    }
}
