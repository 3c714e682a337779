import Logging
import NPAControlProtocol
import NPAMigration
import NPANICModel
import NPASystem

/// The host: one daemon per machine, and the public face of its parts. It listens on a Unix
/// control socket that guests attach to and on an admin socket (status, switch, VF reset), runs
/// device emulation for every vNIC, the vswitch between them and the PF driver of its software
/// NICs. It builds and owns the roles, each its own type:
///
/// - `HostEventLoop`: the one thread everything runs on — epoll, timers, accepting;
/// - `ControlServer`: connections, message dispatch, attach;
/// - `HostDataPath`: the vNIC table and the frames between vNICs and the uplink;
/// - `PFDriver`: VFs, grants, the embedded switch, switching (with `PluginStore`);
/// - `Admission`: every MAC, VLAN, rx-mode and passthrough decision;
/// - `HostStatus`: what `npa status` shows.
///
/// Its socket paths are its own: it refuses a path holding anything but a stale socket, and on
/// exit removes a socket file only if it is still the one it bound. The admin socket is mode
/// 0600, beside the control socket by default (`HostSocketPath.admin(forControl:)`); a guest's
/// control connection may act only on its own vNIC, and each administrative request it sends is
/// refused and counted. Guest connections are capped (`maxConnections`), must attach within
/// `attachTimeoutSeconds`, and running out of descriptors only pauses accepting (counted in
/// `npa status`): the guests already attached keep being served. `stop()` may be called from
/// any thread or a signal handler.
public final class HostDaemon: @unchecked Sendable {
    public let socketPath: String
    /// The admin socket: status, switch and VF-reset requests, never a guest's messages.
    public let adminSocketPath: String
    public let configuration: HostConfiguration
    /// The metrics it keeps up to date for a scrape endpoint, if it was given any.
    public let metrics: HostMetrics?
    let logger: Logger
    let admission: Admission
    let dataPath: HostDataPath
    let pfDriver: PFDriver
    let server: ControlServer
    let loop: HostEventLoop
    /// The last `event_log_size` control events, for `npa events`.
    let events: HostEventLog

    /// `adminSocketPath` defaults to `HostSocketPath.admin(forControl: socketPath)`. Throws
    /// `SocketPathError` if either path is not ours to take (a file, a live host).
    /// `metrics`: the registry to keep up to date for a scrape endpoint (`npa host --metrics`);
    /// nil, none is kept.
    public init(
        socketPath: String, adminSocketPath: String? = nil, configuration: HostConfiguration = HostConfiguration(),
        metrics: HostMetrics? = nil,
        logger: Logger
    ) throws {
        self.socketPath = socketPath
        self.adminSocketPath = adminSocketPath ?? HostSocketPath.admin(forControl: socketPath)
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger
        let epoll = try Epoll()
        // The migration key and listener first: a bad key file is refused before anything is
        // created (no socket file to remove).
        let migrationKey = try configuration.migrationKeyFile.map { path in
            do { return try MigrationKey(contentsOf: path) } catch {
                throw MigrationSetupError(description: "migration_key_file: \(error)")
            }
        }
        var migrationListener: MigrationListener?
        if let address = configuration.migrationListen {
            guard let migrationKey else {
                throw MigrationSetupError(description: "migration_listen needs migration_key_file (every migration is authenticated)")
            }
            do {
                migrationListener = try MigrationListener(listeningOn: StreamSocket.Address(parsing: address), key: migrationKey)
            } catch {
                throw MigrationSetupError(description: "migration_listen \(address): \(error)")
            }
        }
        // (The migration listener, if any, is released with its socket file on any throw below.)
        let listeners = try HostEventLoop.Listeners(control: socketPath, admin: self.adminSocketPath)
        do {
            let nics = try PFDriver.makeNICs(configuration)
            var uplinkWire: TAPWire?
            if case .tap(let name) = configuration.uplink {
                do {
                    uplinkWire = try TAPWire(name: name, maximumFrame: SoftNIC.maximumFrame)
                } catch {
                    throw TAPWireError(description: "uplink: \(error)")
                }
            }
            events = HostEventLog(capacity: configuration.eventLogSize)
            let vswitch = VirtualSwitch()
            admission = Admission(vswitch: vswitch)
            dataPath = HostDataPath(vswitch: vswitch, uplink: configuration.uplink, nics: nics, uplinkWire: uplinkWire)
            pfDriver = PFDriver(
                configuration: configuration, nics: nics, dataPath: dataPath, admission: admission, events: events, logger: logger)
            server = ControlServer(
                configuration: configuration, adminSocketPath: self.adminSocketPath, epoll: epoll, dataPath: dataPath, pfDriver: pfDriver,
                admission: admission, events: events, logger: logger)
            loop = try HostEventLoop(
                epoll: epoll, listeners: listeners, server: server, dataPath: dataPath, pfDriver: pfDriver, configuration: configuration,
                logger: logger)
            pfDriver.metrics = metrics
            server.metrics = metrics
            server.hostActivity = loop.activity
            let migrations = MigrationCoordinator(configuration: configuration, key: migrationKey, listener: migrationListener)
            server.migrations = migrations
            if let migrationListener { try epoll.add(migrationListener.fd, tag: HostEventTag.migrationListener) }
        } catch {
            // A host that never ran leaves no socket file behind.
            listeners.removeSocketFiles()
            throw error
        }
        server.migrations?.host = self
        for nic in nics { nic.start(idlePasses: configuration.idlePassesBeforeSleep) }
        for (port, wire) in loop.wires {
            let origin = wire.createdHere ? "created, link up; removed on exit" : "existing; left in place on exit"
            logger.info("\(port) wire: TAP \(wire.interfaceName) (\(origin))")
        }
        if let limit = try? ResourceLimits.openFiles().soft, UInt64(configuration.maxConnections) * 5 + 64 > limit {
            let text = "max_connections \(configuration.maxConnections) may need more descriptors than this process may open (\(limit)); "
            logger.warning("\(text)the host will pause accepting when it runs out")
        }
    }

    deinit {
        for nic in nics { nic.stop() }
    }

    /// Where this host takes migrations (`migration_listen`, `npa host --listen`), with the port
    /// the kernel chose for port 0; nil if it takes none.
    public var migrationAddress: String? { server.migrations?.listener.map { "\($0.address)" } }

    /// The host's software SR-IOV NICs (engines on their own threads, accounted as hardware).
    package var nics: [SoftNIC] { pfDriver.nics }

    /// Times the host thread went to sleep in epoll for want of work.
    public var sleeps: UInt64 { loop.sleeps }

    /// Asks `run()` to return. Async-signal-safe (one eventfd write).
    public func stop() { loop.stop() }

    /// The eventfd that stops the host when signalled (`TerminationSignals.deliver(to:)` aims SIGINT
    /// and SIGTERM at it).
    public var stopDescriptor: Int32 { loop.stopDescriptor }

    /// Serves until `stop()`. Removes the socket files on return, each if it is still the one
    /// this host bound (another host may have replaced a path it thought stale).
    public func run() throws {
        EngineThread.setCurrentName("npa-host")
        logger.info("host listening on \(socketPath), admin socket \(adminSocketPath)")
        if let migrationAddress { logger.info("taking migrations on \(migrationAddress)") }
        try loop.run()
    }

    /// The vNIC table, as `npa status` shows it.
    public func status() -> StatusReport { HostStatus.report(dataPath: dataPath, pfDriver: pfDriver, server: server) }
}

// MARK: Stepping in-process (FuzzTesting drives the host on its own thread: no engine thread)

extension HostDaemon {
    /// Handles the control events that are ready now (connections, attach, register writes)
    /// without sleeping. Returns false if the host was asked to stop.
    func serveReadyEvents() throws -> Bool { try loop.serveReadyEvents() }

    /// One data-path pass, as `run()` makes it. Returns the TX chains consumed.
    func runDataPathPass() -> Int { dataPath.isIdle ? 0 : dataPath.pass() }

    /// The vNIC of the guest named `name`.
    func device(named name: String) -> EmulatedDevice? { dataPath.device(named: name) }
}
