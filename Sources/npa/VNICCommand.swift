import ArgumentParser
import NPAControlProtocol
import NPASystem

/// `npa vnic switch-in|switch-out NAME`: asks the host to move a vNIC between emulation and a VF.
/// The host raises DIC; the guest's shell carries the switch out on its next data-path call.
struct VNIC: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vnic", abstract: "Switch a vNIC between emulation and passthrough.")

    enum Action: String, ExpressibleByArgument, CaseIterable {
        case switchIn = "switch-in"
        case switchOut = "switch-out"
        case resetVF = "reset-vf"
    }

    @Argument(help: "switch-in, switch-out, or reset-vf (FLR the VF now; the guest falls back to emulation).")
    var action: Action

    @Argument(help: "The vNIC's (guest's) name.")
    var name: String

    @Option(help: "The host's control socket.")
    var host: String = "/tmp/npa.sock"

    func run() throws {
        let socket: SeqPacketSocket
        do {
            socket = try SeqPacketSocket.connect(path: host)
        } catch {
            throw CommandFailure("cannot reach the host at \(host): \(error)")
        }
        let request: ControlMessage = action == .resetVF ? .adminResetVF(vnic: name) : .adminSwitch(vnic: name, toPassthrough: action == .switchIn)
        try socket.send(request.encode())
        guard socket.waitReadable(timeoutMilliseconds: 5000), let (bytes, _) = try socket.receive() else {
            throw CommandFailure("the host did not answer")
        }
        switch try ControlMessage.parse(bytes) {
        case .ok(let note): print(note)
        case .error(_, let message): throw CommandFailure(message)
        default: throw CommandFailure("unexpected reply from the host")
        }
    }
}
