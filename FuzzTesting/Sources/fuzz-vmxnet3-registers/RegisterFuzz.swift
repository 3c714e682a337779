import FuzzSupport
import NPAControlProtocol
@testable import NPAHost
import NPARingFormats

// The vmxnet3 register and command path: a guest writes any BAR1 register with any value in any
// order, rewrites the DriverShared fields the commands read (rx mode, multicast table, VLAN
// table, geometry, ECR), reads registers back and sends other control messages, every one through
// the control socket and the host's real message handling. Checked after every step: each request
// gets exactly one answer; a refused write changes nothing; the evil vNIC never holds another
// vNIC's MAC, a VLAN or rx mode its policy forbids, or a non-multicast filter entry; and after
// the input the well-behaved pair still gets frames through.

nonisolated(unsafe) var host: EmulatedHost! = nil

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    if host == nil { host = try! EmulatedHost() }
    var input = FuzzInput(UnsafeRawBufferPointer(start: data, count: size))
    run(&input, host)
    return 0
}

struct Snapshot: Equatable {
    var mac: MACAddress
    var rxMode: VMXNET3.RxMode
    var vlans: Set<UInt16>
    var multicast: Set<MACAddress>
    init(_ d: EmulatedDevice) {
        mac = d.mac
        rxMode = d.rxMode
        vlans = d.vlans
        multicast = d.multicast
    }
}

func check(_ d: EmulatedDevice, _ host: EmulatedHost) {
    invariant(d.mac != host.good1.mac && d.mac != host.good2.mac, "evil took another vNIC's MAC \(d.mac)")
    invariant(!d.rxMode.contains(.promiscuous), "evil is promiscuous against its policy")
    invariant(d.vlans.isSubset(of: EmulatedHost.evilPolicy.allowedVLANs), "evil joined VLANs \(d.vlans.sorted()) against its policy")
    invariant(d.multicast.allSatisfy(\.isMulticast), "evil's multicast filter holds a non-multicast address")
}

func run(_ input: inout FuzzInput, _ host: EmulatedHost) {
    let evil = host.evil!, memory = evil.memory, device = host.evilDevice!
    let cmd = VMXNET3.Register.cmd.rawValue
    // Baseline: a reset device with its own MAC, default filters and a valid shared area.
    evil.writeSharedArea(ringSize: 32)
    evil.zeroRing(VMXNET3Guest.txRing(0), 32)
    evil.zeroRing(VMXNET3Guest.rxRing(0), 32)
    _ = device.writeRegister(offset: VMXNET3.Register.dsal.rawValue, value: UInt32(VMXNET3Guest.driverShared))
    _ = device.writeRegister(offset: VMXNET3.Register.dsah.rawValue, value: 0)
    _ = device.writeRegister(offset: cmd, value: VMXNET3.Command.resetDevice.rawValue)
    let b = EmulatedHost.evilMAC.bytes
    _ = device.writeRegister(
        offset: VMXNET3.Register.macl.rawValue, value: UInt32(b[0]) | UInt32(b[1]) << 8 | UInt32(b[2]) << 16 | UInt32(b[3]) << 24)
    _ = device.writeRegister(offset: VMXNET3.Register.mach.rawValue, value: UInt32(b[4]) | UInt32(b[5]) << 8)
    for c in [VMXNET3.Command.updateRxMode, .updateMACFilters, .updateVLANFilters] {
        _ = device.writeRegister(offset: cmd, value: c.rawValue)
    }
    invariant(device.mac == EmulatedHost.evilMAC, "evil's MAC could not be restored")

    let macs: [MACAddress] = [
        host.good2.mac, host.good1.mac, EmulatedHost.evilMAC, .broadcast, MACAddress(value: 0x0100_5E00_0001), .zero,
        MACAddress(value: 0x0200_0000_0E02),
    ]
    func macWords(_ m: MACAddress) -> (UInt32, UInt32) {
        let x = m.bytes
        return (UInt32(x[0]) | UInt32(x[1]) << 8 | UInt32(x[2]) << 16 | UInt32(x[3]) << 24, UInt32(x[4]) | UInt32(x[5]) << 8)
    }
    let registers: [UInt32] = [0x00, 0x08, 0x10, 0x18, 0x20, 0x20, 0x20, 0x28, 0x30, 0x30, 0x38, 0x40]
    let commands = VMXNET3.Command.allCases.map(\.rawValue)

    var steps = 0
    while !input.isAtEnd && steps < 48 {
        steps += 1
        let op = input.u8()
        switch op % 8 {
        case 0, 1, 2:  // a register write through the control socket
            let r = input.u8()
            let offset = r < 0xF0 ? registers[Int(r) % registers.count] : input.u32()
            let v = input.u8()
            let value: UInt32
            switch v % 6 {
            case 0: value = commands[Int(v >> 3) % commands.count]
            case 1: value = macWords(macs[Int(v >> 3) % macs.count]).0
            case 2: value = macWords(macs[Int(v >> 3) % macs.count]).1
            case 3: value = [0x1000, 0, 1, UInt32(memory.size) - 8, 0xFFFF_FFFF][Int(v >> 3) % 5]
            default: value = input.u32()
            }
            let before = Snapshot(device)
            let result = try! evil.writeRegister(offset, value)
            if result.status != 0 {
                invariant(Snapshot(device) == before, "a refused write (\(result.message)) changed the vNIC")
                invariant(!result.message.isEmpty, "a refusal without a reason")
            }
        case 3:  // a register read
            _ = try! evil.readRegister(input.u8() < 0xF0 ? registers[Int(input.u8()) % registers.count] : input.u32())
        case 4:  // DriverShared fields the commands read
            let ds = VMXNET3Guest.driverShared
            switch input.u8() % 6 {
            case 0: memory.storeU32(gpa: ds + VMXNET3.DriverShared.rxMode, input.u32())
            case 1:
                let n = Int(input.u8() % 8)
                memory.storeU32(gpa: ds + VMXNET3.DriverShared.multicastTableLength, input.bool() ? UInt32(n * 6) : input.u32())
                memory.storeU64(gpa: ds + VMXNET3.DriverShared.multicastTablePA, input.bool() ? VMXNET3Guest.multicastTable : input.u64())
                for i in 0..<n {
                    let m = macs[Int(input.u8()) % macs.count].bytes
                    memory.pointer(gpa: VMXNET3Guest.multicastTable + UInt64(i * 6), length: 6)!.copyMemory(from: m, byteCount: 6)
                }
            case 2: memory.storeU32(gpa: ds + VMXNET3.DriverShared.vlanTable + UInt64(input.u8() % 128) * 4, input.u32())
            case 3: memory.storeU32(gpa: ds + VMXNET3.DriverShared.ecr, input.u32())
            case 4: memory.storeU64(gpa: ds + (UInt64(input.u16() % 720) & ~7), input.u64())
            default: memory.storeU64(gpa: VMXNET3Guest.queueTable + (UInt64(input.u16() % 512) & ~7), input.u64())
            }
        case 5:  // other control messages a guest may send
            let messages: [ControlMessage] = [
                .statusRequest, .countersRequest, .switchQuery, .switchOutBegin, .switchOutDone,
                .registerWrite(bar: input.u8(), offset: input.u32(), value: input.u32()), .registerRead(bar: 0, offset: 0x20),
                .switchInReady(txRegions: [.init(gpa: input.u64(), ringSize: input.u32())], rxRegions: [], plugin: "x"),
                .switchInFailed(reason: "fuzz"), .pluginFault(reason: "fuzz"), .adminSwitch(vnic: "good2", toPassthrough: true),
                .adminResetVF(vnic: "good1"), .ok("?"), .detach,
            ]
            let m = messages[Int(input.u8()) % messages.count]
            if m == .detach { break }  // the one message that ends the connection: not this target's subject
            _ = try! evil.request(m)
        case 6:
            _ = host.runPasses(limit: 8)
        default:
            let (lo, hi) = macWords(macs[Int(input.u8()) % macs.count])
            _ = try! evil.writeRegister(VMXNET3.Register.macl.rawValue, lo)
            _ = try! evil.writeRegister(VMXNET3.Register.mach.rawValue, hi)
        }
        check(device, host)
    }
    host.checkWellBehavedPairStillServed()
}
