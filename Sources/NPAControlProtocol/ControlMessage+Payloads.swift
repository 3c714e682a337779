/// The structured payloads of control messages: what an attach asks and gets, a queue region,
/// a switch offer and where a move goes, a counter. Plain values; `ControlMessage` encodes them.
extension ControlMessage {
    public struct QueueRegion: Equatable, Sendable {
        public var gpa: UInt64
        public var ringSize: UInt32
        /// Where the plugin put the queue's completion ring (npa_queue_region.completion_offset),
        /// nil if its model has none. Sent as a u64, UInt64.max for none.
        public var completionGPA: UInt64?
        public init(gpa: UInt64, ringSize: UInt32, completionGPA: UInt64? = nil) {
            self.gpa = gpa
            self.ringSize = ringSize
            self.completionGPA = completionGPA
        }
    }

    public struct SwitchOffer: Equatable, Sendable {
        /// `move`: the vNIC moves to another host; the guest re-attaches there (`resume`).
        public enum Kind: UInt8, Sendable { case none = 0, switchIn = 1, switchOut = 2, move = 3 }
        public var kind: Kind
        public var vf: UInt16
        public var model: String
        public var plugin: String
        /// `move` only: where the new host's control socket is and the one-time token it expects.
        /// Encoded after the other fields for `move` alone, so the other kinds keep their bytes.
        public var destination: MoveDestination?

        public init(kind: Kind, vf: UInt16 = 0, model: String = "", plugin: String = "", destination: MoveDestination? = nil) {
            self.kind = kind
            self.vf = vf
            self.model = model
            self.plugin = plugin
            self.destination = destination
        }
    }

    /// Where a moving vNIC goes: the new host's control socket path and the token it admits the
    /// guest with.
    public struct MoveDestination: Equatable, Sendable {
        public var controlSocket: String
        public var token: MoveToken
        public init(controlSocket: String, token: MoveToken) {
            self.controlSocket = controlSocket
            self.token = token
        }
    }

    /// A guest re-attaching to the host its vNIC moved to.
    public struct ResumeRequest: Equatable, Sendable {
        public var token: MoveToken
        public var name: String
        public var interruptVectors: UInt8
        public init(token: MoveToken, name: String, interruptVectors: UInt8) {
            self.token = token
            self.name = name
            self.interruptVectors = interruptVectors
        }
    }

    public struct Counter: Equatable, Sendable {
        public let name: String
        public let value: UInt64
        public init(_ name: String, _ value: UInt64) {
            self.name = name
            self.value = value
        }
    }

    public struct AttachRequest: Equatable, Sendable {
        public var name: String
        /// nil asks the host to assign one from policy.
        public var mac: MACAddress?
        public var interruptVectors: UInt8

        public init(name: String, mac: MACAddress?, interruptVectors: UInt8) {
            self.name = name
            self.mac = mac
            self.interruptVectors = interruptVectors
        }
    }

    public struct AttachReply: Equatable, Sendable {
        public var vnicID: UInt32
        public var mac: MACAddress
        public var maxTxQueues: UInt8
        public var maxRxQueues: UInt8

        public init(vnicID: UInt32, mac: MACAddress, maxTxQueues: UInt8, maxRxQueues: UInt8) {
            self.vnicID = vnicID
            self.mac = mac
            self.maxTxQueues = maxTxQueues
            self.maxRxQueues = maxRxQueues
        }
    }
}
