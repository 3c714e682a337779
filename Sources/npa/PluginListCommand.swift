import ArgumentParser
import NPAAdmin
import NPAControlProtocol

/// `npa plugin list --host PATH [--json]`: a running host's plugin store, from its admin
/// socket: per bundle file its name, version, models, signer and verdict (accepted, or refused
/// with the reason), and which bundle each NIC model gets.
struct PluginList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "Show a host's plugin store: each bundle's verdict and which one each NIC model gets.")

    @Option(help: "The host's control socket (the admin socket is derived from it).")
    var host: String = HostSocketPath.defaultControl

    @Option(help: "The host's admin socket (default: the control socket's path + \".admin\").")
    var adminSocket: String?

    @Flag(help: "Print the store as JSON.")
    var json = false

    func run() throws {
        let admin = AdminClient(socketPath: adminSocket ?? HostSocketPath.admin(forControl: host))
        let report: StatusReport
        do { report = try admin.status() } catch { throw CommandFailure("\(error)") }
        guard let store = report.plugins else { throw CommandFailure("the host at \(host) does not report a plugin store") }
        if json {
            print(store.json())
        } else {
            print(store.lines.joined(separator: "\n"))
        }
    }
}
