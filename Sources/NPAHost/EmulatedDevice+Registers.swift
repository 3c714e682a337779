import NPAControlProtocol
import NPARingFormats

/// The device's BAR1 register file, reached through the control channel: the revision
/// registers, the DriverShared address (DSAL, then DSAH), the MAC latch (MACL, then MACH, which
/// applies it through Admission), CMD (`execute(command:)`) and the ECR acknowledgement.
///
/// It may touch the BAR1 latches, DriverShared.ecr in guest memory, and the MAC only through
/// `program(mac:)`. An offset that names no register is refused, never trusted.
extension EmulatedDevice {
    /// A guest's register write; nil when it was done. A refused CMD still sets what CMD reads
    /// back (`lastCommandResult`).
    func writeRegister(offset: UInt32, value: UInt32) -> DeviceRefusal? {
        guard let reg = VMXNET3.Register(rawValue: offset) else { return .noRegister(offset: offset) }
        switch reg {
        case .vrrs, .uvrs:
            // Only revision 1 exists here; the driver must pick bit 0.
            return value == 1 ? nil : .unsupportedRevision
        case .dsal:
            driverSharedLow = value
            if value == 0 { driverSharedPA = 0 }
            return nil
        case .dsah:
            driverSharedPA = UInt64(value) << 32 | UInt64(driverSharedLow)
            return nil
        case .cmd:
            let outcome = execute(command: value)
            lastCommandResult = outcome.result
            return outcome.refusal
        case .macl:
            macLowLatch = value
            return nil
        case .mach:
            // MACL holds bytes 0-3 and MACH bytes 4-5, little endian: byte 0 is the first on the wire.
            let bytes: [UInt8] = [
                UInt8(truncatingIfNeeded: macLowLatch), UInt8(truncatingIfNeeded: macLowLatch >> 8),
                UInt8(truncatingIfNeeded: macLowLatch >> 16), UInt8(truncatingIfNeeded: macLowLatch >> 24),
                UInt8(truncatingIfNeeded: value), UInt8(truncatingIfNeeded: value >> 8),
            ]
            return program(mac: MACAddress(bytes: bytes)).map(DeviceRefusal.admission)
        case .icr:
            return nil
        case .ecr:
            // Write-1-to-clear acknowledgement of events in DriverShared.ecr.
            if driverSharedPA != 0, let ecr = memory.loadU32(gpa: driverSharedPA &+ VMXNET3.DriverShared.ecr) {
                memory.storeU32(gpa: driverSharedPA &+ VMXNET3.DriverShared.ecr, ecr & ~value)
            }
            return nil
        }
    }

    /// A guest's register read: the register's value.
    func readRegister(offset: UInt32) -> Result<UInt32, DeviceRefusal> {
        guard let reg = VMXNET3.Register(rawValue: offset) else { return .failure(.noRegister(offset: offset)) }
        switch reg {
        case .vrrs, .uvrs: return .success(1)
        case .dsal: return .success(UInt32(truncatingIfNeeded: driverSharedPA))
        case .dsah: return .success(UInt32(truncatingIfNeeded: driverSharedPA >> 32))
        case .cmd: return .success(lastCommandResult)
        case .macl:
            let b = mac.bytes
            return .success(UInt32(b[0]) | UInt32(b[1]) << 8 | UInt32(b[2]) << 16 | UInt32(b[3]) << 24)
        case .mach:
            let b = mac.bytes
            return .success(UInt32(b[4]) | UInt32(b[5]) << 8)
        case .icr, .ecr:
            return .success(0)
        }
    }
}
