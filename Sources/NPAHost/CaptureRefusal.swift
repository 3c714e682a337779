import NPAControlProtocol

/// Why the host refused to start or stop a capture (`npa capture`), as the admin client reads it.
enum CaptureRefusal: Error, CustomStringConvertible, Equatable {
    case noSuchVNIC(String, known: [String])
    case alreadyCapturing(String)
    case connectionBusy
    case noCaptureRunning
    case descriptorCount(Int)
    case outputNotWritable(String)
    case setupFailed(String)

    var code: UInt32 {
        switch self {
        case .noSuchVNIC, .descriptorCount, .outputNotWritable: ControlMessage.ErrorCode.invalidArgument
        case .alreadyCapturing, .connectionBusy, .noCaptureRunning: ControlMessage.ErrorCode.invalidState
        case .setupFailed: ControlMessage.ErrorCode.resourceExhausted
        }
    }

    var description: String {
        switch self {
        case .noSuchVNIC(let name, let known):
            "no vNIC named '\(name)' on this host"
                + (known.isEmpty ? " (it has none)" : " (it has: \(known.map { "'\($0)'" }.joined(separator: ", ")))")
        case .alreadyCapturing(let name):
            "a capture of vNIC '\(name)' is already running (one capture per vNIC at a time: stop it first)"
        case .connectionBusy: "this connection already runs a capture"
        case .noCaptureRunning: "no capture runs on this connection"
        case .descriptorCount(let n): "a capture request carries exactly one descriptor, the output (got \(n))"
        case .outputNotWritable(let detail): "the capture's output descriptor is not writable: \(detail)"
        case .setupFailed(let detail): "the capture could not start: \(detail)"
        }
    }

    var reply: ControlMessage { .error(code: code, message: description) }
}
