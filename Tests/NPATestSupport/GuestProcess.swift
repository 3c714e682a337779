import NPAHost

/// Why a child `npa guest` did not come up.
package struct GuestProcessNotAttached: Error, CustomStringConvertible {
    package let name: String
    package let stderr: String
    package var description: String { "guest \(name) exited before it attached: \(stderr)" }
}

extension NPAProcess {
    /// Starts `npa guest <workload> --host <socket> --name <name> [--mac <mac>] <arguments>`
    /// trusting the test signing key, without waiting for it.
    package static func guest(
        _ workload: String, host: TestHost, name: String, mac: String? = nil, _ arguments: [String] = []
    ) throws -> NPAProcess {
        let macArguments = mac.map { ["--mac", $0] } ?? []
        return try NPAProcess(
            ["guest", workload, "--host", host.socketPath, "--name", name, "--plugin-trust", PluginImages.publicKeyPath()] + macArguments
                + arguments)
    }

    /// Starts `npa guest <workload> --host <socket> --name <name> [--mac <mac>] <arguments>` and
    /// waits until it says it is attached (a line on its standard error, not a time); throws,
    /// with what it printed, if it exits first.
    package static func attachedGuest(
        _ workload: String, host: TestHost, name: String, mac: String? = nil, _ arguments: [String] = []
    ) throws -> NPAProcess {
        let guest = try Self.guest(workload, host: host, name: name, mac: mac, arguments)
        guard guest.waitUntilAttached() else { throw GuestProcessNotAttached(name: name, stderr: guest.finish().stderr) }
        return guest
    }
}
