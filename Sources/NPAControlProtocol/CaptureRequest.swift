/// Which of a vNIC's frames a capture keeps, seen from the guest (`npa capture --direction`).
public enum CaptureDirection: UInt8, Sendable, CaseIterable {
    case received = 0
    case transmitted = 1
    case both = 2

    /// The command line's names: rx, tx, both.
    public init?(argument: String) {
        switch argument {
        case "rx": self = .received
        case "tx": self = .transmitted
        case "both": self = .both
        default: return nil
        }
    }

    public var argument: String {
        switch self {
        case .received: "rx"
        case .transmitted: "tx"
        case .both: "both"
        }
    }
}

/// `captureStart`: capture the vNIC `vnic`'s frames going `direction` into the descriptor sent
/// with the message (SCM_RIGHTS), as a pcap file, until `count` frames (0: until stopped).
public struct CaptureRequest: Sendable, Equatable {
    public var vnic: String
    public var direction: CaptureDirection
    public var count: UInt64

    public init(vnic: String, direction: CaptureDirection = .both, count: UInt64 = 0) {
        self.vnic = vnic
        self.direction = direction
        self.count = count
    }
}

/// `captureEnded`: what a capture wrote, and the copies it dropped because its writer fell
/// behind; `failure` is empty unless writing the output failed.
public struct CaptureOutcome: Sendable, Equatable {
    public var frames: UInt64
    public var dropped: UInt64
    public var failure: String

    public init(frames: UInt64, dropped: UInt64, failure: String = "") {
        self.frames = frames
        self.dropped = dropped
        self.failure = failure
    }
}
