import ArgumentParser
import Foundation
import Logging
import NPAControlProtocol
import NPAHost
import NPAMetricsEndpoint
import NPASystem

struct Host: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a host daemon in the foreground (SIGINT/SIGTERM stop it and remove the socket).",
        discussion: """
            The socket path must be free or hold a stale socket (one nobody listens on, left by a host that \
            died): a live host or any other file there is refused and left alone. On exit the host removes \
            the socket only if it is still the one it created. The same holds for the admin socket, which \
            `npa status` and `npa vnic` use and guests may not: mode 0600, by default the control socket's \
            path with ".admin" appended. Under a service manager ($NOTIFY_SOCKET set, systemd's Type=notify: \
            contrib/npa-host.service) the host says READY=1 once it serves and STOPPING=1 when it stops.
            """)

    @Option(help: "Path of the control socket guests attach to.")
    var socket: String = HostSocketPath.defaultControl

    @Option(help: "Path of the admin socket (status, switch, VF reset; mode 0600). Default: the control socket's path + \".admin\".")
    var adminSocket: String?

    @Option(help: "YAML configuration file (see --example-config).")
    var config: String?

    @Option(
        help:
            "Take guests migrating from other hosts here: ADDR:PORT (TCP; port 0 picks one, logged) or a Unix socket path. Needs migration_key_file in the configuration; overrides migration_listen."
    )
    var listen: String?

    @Option(
        help:
            "Serve Prometheus metrics at http://ADDR:PORT/metrics (127.0.0.1:9464, [::1]:9464, or :9464 for every interface; port 0 picks one, logged)."
    )
    var metrics: String?

    /// `--plugin-store` replaces `plugin_dir`; each `--plugin-trust` key is added to `plugin_trust`.
    @OptionGroup(title: "Plugin store")
    var pluginStore: PluginStoreOptions

    @Flag(help: "Print a commented example configuration and exit.")
    var exampleConfig = false

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    /// For tests: set the soft descriptor limit to this instead of raising it to the hard limit,
    /// so running out of descriptors takes dozens of connections, not thousands.
    @Option(help: .hidden)
    var fdLimit: UInt64?

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level '\(logLevel)' is not one of trace, debug, info, notice, warning, error, critical")
        }
        if let metrics {
            do { _ = try MetricsListenAddress(parsing: metrics) } catch { throw ValidationError("--metrics: \(error)") }
        }
    }

    func run() throws {
        if exampleConfig {
            print(HostConfiguration.example)
            return
        }
        var configuration = try loadConfiguration(config)
        if let listen { configuration.migrationListen = listen }
        if let directory = pluginStore.pluginStore { configuration.pluginDirectory = directory }
        configuration.pluginTrust += try pluginStore.trustFiles()
        for warning in configuration.warnings(fileExists: { FileManager.default.fileExists(atPath: $0) }) {
            standardError("npa host: warning: \(warning)")
        }
        var logger = Logger(label: "npa.host")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        // Each guest holds several descriptors; the usual soft limit (1024) is far below what a
        // host may open (the hard limit), so take it all.
        do {
            if let fdLimit {
                try ResourceLimits.setOpenFiles(soft: fdLimit)
            } else {
                try ResourceLimits.raiseOpenFilesToHardLimit()
            }
        } catch {
            logger.warning("could not change the descriptor limit: \(error)")
        }
        if let (soft, hard) = try? ResourceLimits.openFiles() { logger.info("descriptor limit \(soft) (hard \(hard))") }
        // Refusals of the socket path (a file there, a live host) are one line, exit status 2.
        // The endpoint first: an address it cannot bind is refused before the host creates any socket file.
        let hostMetrics = metrics.map { _ in HostMetrics() }
        var endpoint: MetricsHTTPServer?
        if let metrics, let hostMetrics {
            do {
                let address = try MetricsListenAddress(parsing: metrics)
                endpoint = try HostMetricsEndpoint.start(
                    on: address, metrics: hostMetrics, adminSocketPath: adminSocket ?? HostSocketPath.admin(forControl: socket))
            } catch {
                throw CommandFailure("--metrics \(metrics): \(error)")
            }
        }
        let daemon: HostDaemon
        do {
            daemon = try HostDaemon(
                socketPath: socket, adminSocketPath: adminSocket, configuration: configuration, metrics: hostMetrics, logger: logger)
        } catch {
            endpoint?.stop()
            throw CommandFailure("\(error)")
        }
        if let endpoint { logger.info("metrics at http://\(endpoint.address)/metrics") }
        defer { endpoint?.stop() }
        TerminationSignals.deliver(to: daemon.stopDescriptor)
        // Both sockets listen (and the metrics endpoint, if any): a service manager waiting on
        // readiness (systemd's Type=notify; contrib/npa-host.service) may start what needs the host.
        ServiceManager.notify("READY=1\nSTATUS=serving guests on \(socket)")
        defer { ServiceManager.notify("STOPPING=1") }
        try daemon.run()
    }
}

/// Loads a host configuration file; errors name the file and line.
func loadConfiguration(_ path: String?) throws -> HostConfiguration {
    guard let path else { return HostConfiguration() }
    guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
        throw CommandFailure("\(path): cannot read the configuration file")
    }
    do {
        return try HostConfiguration.parse(yaml: text, file: path)
    } catch let error as HostConfiguration.LoadError {
        throw CommandFailure(error.description)
    }
}
