import NPAControlProtocol
import NPARingFormats

/// Why the emulated device refused a guest's BAR1 register access or vmxnet3 command. Each case
/// names its rule; `description` is what the guest reads; the wire code is chosen in
/// `ControlRefusal`. (The value CMD reads back after a refusal, e.g. `UInt32.max` for a command
/// the device does not take, is vmxnet3's ABI, not a refusal: see `EmulatedDevice.CommandOutcome`.)
enum DeviceRefusal: Error, Equatable, CustomStringConvertible {
    /// A BAR1 offset that names no register.
    case noRegister(offset: UInt32)
    /// A revision other than 1 selected in VRRS or UVRS.
    case unsupportedRevision
    /// A CMD value that is no vmxnet3 command.
    case unsupportedCommand(UInt32)
    /// ACTIVATE found DriverShared, the queue table or a ring invalid; the reason says which.
    case activation(reason: String)
    /// A switch command (STOP_EMULATION, LOAD_PLUGIN, ACTIVATE_VF) with no switch under way:
    /// the PF driver takes them only then.
    case noSwitchUnderWay
    /// An UPDATE_* command before DSAL/DSAH point at a readable DriverShared.
    case driverSharedNotSet
    case multicastTableLength(Int)
    case multicastTableOutsideMemory
    case notMulticast(MACAddress)
    /// Admission refused the MAC, rx mode or VLANs the guest programmed.
    case admission(AdmissionRefusal)

    var description: String {
        switch self {
        case .noRegister(let offset): "no register at BAR1 offset 0x\(String(offset, radix: 16))"
        case .unsupportedRevision: "only revision 1 is supported"
        case .unsupportedCommand(let raw): "unsupported command 0x\(String(raw, radix: 16))"
        case .activation(let reason): "ACTIVATE refused: \(reason)"
        case .noSwitchUnderWay: "no switch to passthrough is under way for this vNIC"
        case .driverSharedNotSet: "DriverShared is not set"
        case .multicastTableLength(let length): "multicast table length \(length) is not a multiple of 6 up to 1536"
        case .multicastTableOutsideMemory: "multicast table lies outside guest memory"
        case .notMulticast(let mac): "MAC filter entry \(mac) is not a multicast address"
        case .admission(let refusal): refusal.description
        }
    }

    /// Its wire code, as `ControlRefusal` chooses it.
    var code: UInt32 { ControlRefusal.device(self).code }
}
