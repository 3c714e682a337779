import ArgumentParser
import NPAAdmin
import NPAControlProtocol

/// `npa plugin list --host PATH [--json]`: a running host's plugin store, from its admin
/// socket: per bundle file its name, version, models, signer and verdict (accepted, or refused
/// with the reason), and which bundle each NIC model gets.
struct PluginList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "Show a host's plugin store: each bundle's verdict and which one each NIC model gets.")

    @OptionGroup var socket: AdminSocketOptions

    @Flag(help: "Print the store as JSON.")
    var json = false

    func run() throws {
        let admin = socket.client
        let report: StatusReport
        do { report = try admin.status() } catch { throw CommandFailure("\(error)") }
        guard let store = report.plugins else { throw CommandFailure("the host at \(socket.host) does not report a plugin store") }
        if json {
            print(store.json())
        } else {
            print(store.lines.joined(separator: "\n"))
        }
    }
}
