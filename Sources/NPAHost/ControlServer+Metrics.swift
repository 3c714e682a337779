import NPAControlProtocol

/// The admin socket's `metricsRefresh`: the host's metrics brought up to date with its counters
/// before a scrape renders them (`npa host --metrics`). Host thread, once per scrape.
extension ControlServer {
    func refreshMetrics(for c: Connection) {
        guard let metrics else { return reply(c, ControlRefusal.metricsNotServed.reply) }
        metrics.apply(HostMetricsSample.take(dataPath: dataPath, pfDriver: pfDriver, server: self, activity: hostActivity))
        reply(c, .ok("metrics refreshed"))
    }
}
