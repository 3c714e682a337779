import ArgumentParser
import NPAAdmin
import NPAControlProtocol

/// `--host` and `--admin-socket`, for every command that asks a running host's admin socket
/// (status, vnic, migrate, plugin list): the admin socket is the one beside the control socket
/// unless given.
struct AdminSocketOptions: ParsableArguments {
    @Option(help: "The host's control socket (the admin socket is derived from it).")
    var host: String = HostSocketPath.defaultControl

    @Option(help: "The host's admin socket (default: the control socket's path + \".admin\").")
    var adminSocket: String?

    var client: AdminClient { AdminClient(socketPath: adminSocket ?? HostSocketPath.admin(forControl: host)) }
}
