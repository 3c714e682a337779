import NPAControlProtocol
@testable import NPAHost
import NPARingFormats
import NPAShell
import NPATestSupport
import Testing

/// Errors as types for the emulated device: each register or command refusal names its rule
/// (`DeviceRefusal`), its wire code is chosen in one place (`ControlRefusal`), and the guest
/// reads the same code and text as before the refusals were typed.
@Suite(.serialized) struct DeviceRefusalTests {
    static let mac = MACAddress("02:00:00:00:ad:01")!
    static let admission = AdmissionRefusal.macInUse(mac)

    @Test(arguments: [
        (DeviceRefusal.noRegister(offset: 0x1F4), ControlMessage.ErrorCode.invalidArgument, "no register at BAR1 offset 0x1f4"),
        (.unsupportedRevision, ControlMessage.ErrorCode.invalidArgument, "only revision 1 is supported"),
        (.unsupportedCommand(0xCAFE_00FF), ControlMessage.ErrorCode.invalidArgument, "unsupported command 0xcafe00ff"),
        (
            .activation(reason: "MTU 9 is not in 68...9000"), ControlMessage.ErrorCode.invalidState,
            "ACTIVATE refused: MTU 9 is not in 68...9000"
        ),
        (.noSwitchUnderWay, ControlMessage.ErrorCode.invalidState, "no switch to passthrough is under way for this vNIC"),
        (.driverSharedNotSet, ControlMessage.ErrorCode.invalidState, "DriverShared is not set"),
        (.multicastTableLength(7), ControlMessage.ErrorCode.invalidState, "multicast table length 7 is not a multiple of 6 up to 1536"),
        (.multicastTableOutsideMemory, ControlMessage.ErrorCode.invalidState, "multicast table lies outside guest memory"),
        (.notMulticast(mac), ControlMessage.ErrorCode.invalidState, "MAC filter entry 02:00:00:00:ad:01 is not a multicast address"),
        (.admission(admission), admission.code, admission.description),
        (
            .admission(.promiscuousNotAllowed(guest: "g")), ControlMessage.ErrorCode.refusedByPolicy,
            AdmissionRefusal.promiscuousNotAllowed(guest: "g").description
        ),
    ])
    func eachDeviceRefusalHasTheCodeAndTextOfItsRule(_ refusal: DeviceRefusal, _ code: UInt32, _ text: String) {
        #expect(refusal.code == code)
        #expect(refusal.description == text)
        #expect(ControlRefusal.device(refusal).reply == .error(code: code, message: text))
    }

    /// The same refusals, as a guest reads them through the control channel.
    @Test func aGuestReadsTheCodeAndTextOfEachRefusedRegisterAccess() throws {
        let host = try TestHost()
        defer { host.stop() }
        let a = try attach(host, "a", mac: "02:00:00:00:ad:0a"), b = try attach(host, "b", mac: "02:00:00:00:ad:0b")
        func refusal(_ body: () throws -> Void) -> HostRefusal? {
            do { try body() } catch let refusal as HostRefusal { return refusal } catch { return nil }
            return nil
        }
        let revision = refusal { _ = try a.writeRegister(.vrrs, 2) }
        #expect(revision?.code == ControlMessage.ErrorCode.invalidArgument && revision?.message == "only revision 1 is supported")
        let command = refusal { _ = try a.writeRegister(.cmd, 0xCAFE_00FF) }
        #expect(command?.code == ControlMessage.ErrorCode.invalidArgument && command?.message == "unsupported command 0xcafe00ff")
        let noSwitch = refusal { _ = try a.writeRegister(.cmd, VMXNET3.Command.stopEmulation.rawValue) }
        #expect(
            noSwitch?.code == ControlMessage.ErrorCode.invalidState
                && noSwitch?.message == "no switch to passthrough is under way for this vNIC")
        let takeover = refusal { try b.setMAC(a.mac) }
        #expect(
            takeover?.code == ControlMessage.ErrorCode.invalidState && takeover?.message == "MAC \(a.mac) is already used by another vNIC")
        // Refusals change nothing: the link still answers.
        #expect(try a.linkIsUp())
        #expect(b.mac == MACAddress("02:00:00:00:ad:0b")!)
    }
}
