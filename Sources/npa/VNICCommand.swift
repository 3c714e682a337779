import ArgumentParser
import NPAAdmin
import NPAControlProtocol

/// `npa vnic switch-in|switch-out NAME`: asks the host to move a vNIC between emulation and a VF.
/// The host raises DIC; the guest's shell carries the switch out on its next data-path call.
struct VNIC: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vnic", abstract: "Switch a vNIC between emulation and passthrough.",
        discussion: "Asks the host's admin socket (mode 0600: run as the host's user); a guest's control connection may not.")

    enum Action: String, ExpressibleByArgument, CaseIterable {
        case switchIn = "switch-in"
        case switchOut = "switch-out"
        case resetVF = "reset-vf"
    }

    @Argument(help: "switch-in, switch-out, or reset-vf (FLR the VF now; the guest falls back to emulation).")
    var action: Action

    @Argument(help: "The vNIC's (guest's) name.")
    var name: String

    @OptionGroup var socket: AdminSocketOptions

    func run() throws {
        let admin = socket.client
        do {
            switch action {
            case .resetVF: print(try admin.resetVF(name: name))
            case .switchIn, .switchOut: print(try admin.switchVNIC(name: name, toPassthrough: action == .switchIn))
            }
        } catch {
            throw CommandFailure("\(error)")
        }
    }
}
