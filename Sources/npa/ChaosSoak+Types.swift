import Foundation
import NPAAdmin
import NPAControlProtocol
import NPAHost
import NPANICModel
import NPARingFormats
import NPAShell
import NPASystem
import NPAWorkload

/// What a chaos soak is given and what it reports, and the pieces it runs: a traffic stream
/// between two survivors, a victim process it kills and restarts, and a cell (one host, one NIC
/// model, its survivors, victims and hostile guest).
extension ChaosSoak {
    struct Options {
        var seconds: Double
        var seed: UInt64
        var plugins: PluginSource
        var models = NICModelRegistry.names
        var frameBytes = 512
    }

    /// What the run did and found; `violations` empty means every invariant held.
    struct Report: Codable {
        struct Stream: Codable {
            var name: String
            var sent = 0, received = 0, duplicates = 0, outOfOrder = 0
            var dropped: [String: UInt64] = [:]
            enum CodingKeys: String, CodingKey {
                case name, sent, received, duplicates, dropped
                case outOfOrder = "out_of_order"
            }
        }
        var seconds = 0.0
        var seed: UInt64 = 0
        var models: [String] = []
        var actions: [String: Int] = [:]
        var streams: [Stream] = []
        var baseline: [String: Int] = [:]
        var final: [String: Int] = [:]
        var violations: [String] = []
        /// The bundle injected for each NIC model.
        var plugins: [StatusReport.PluginInjection] = []
    }

    /// One direction of a survivor pair: frames from `from` to `to`, verified at `to`.
    struct Stream {
        let name: String
        let from: VirtualNIC
        let to: VirtualNIC
        var sequences: [UInt64] = [0, 0]
        var nextFlow = 0
        var sent = 0
        var verifier = FlowVerifier()
    }

    /// A guest in its own process, killed and restarted by the schedule.
    final class Victim {
        let name: String, mac: String, peer: String, socket: String
        var process: Process?
        init(name: String, mac: String, peer: String, socket: String) {
            self.name = name
            self.mac = mac
            self.peer = peer
            self.socket = socket
        }
    }

    /// One host, its NIC model and its guests.
    final class Cell {
        let model: String
        let host: InProcessHost
        let survivors: [VirtualNIC]
        var streams: [Stream]
        let victims: [Victim]
        var hostile: VirtualNIC?
        var hostileGeneration = 0
        init(model: String, host: InProcessHost, survivors: [VirtualNIC], streams: [Stream], victims: [Victim]) {
            self.model = model
            self.host = host
            self.survivors = survivors
            self.streams = streams
            self.victims = victims
        }
    }
}
