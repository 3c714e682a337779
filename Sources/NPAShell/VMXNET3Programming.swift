import CNPAPluginABI
import NPAControlProtocol
import NPARingFormats

/// The shell's vmxnet3 driver half: programs the host's emulated device as the Linux vmxnet3
/// driver does. It fills DriverShared and the queue descriptor table, issues the register and
/// command sequences (activation, reset, re-activation, quiesce, ACTIVATE_VF), acknowledges
/// DIC, and writes the filter tables behind the control operations (rx mode, VLANs, multicast).
///
/// It may touch DriverShared, the queue table and the multicast table in guest memory (at the
/// layout's GPAs), and the control channel for register accesses. Never the rings or buffers:
/// those are the plugins'.
struct VMXNET3Programming {
    let memory: GuestMemory
    let channel: ControlChannel
    private static let driverShared = GuestMemoryLayout.driverSharedGPA
    private static let queueTable = GuestMemoryLayout.queueTableGPA
    private static let multicastTable = GuestMemoryLayout.multicastTableGPA

    /// Fills DriverShared and the queue descriptor table as the vmxnet3 driver does. The
    /// emulation plugin carves each region as descriptor ring, then completion ring; that is
    /// what the device is told here.
    func fillDriverShared(mtu: Int, tx: [npa_queue_region], rx: [npa_queue_region]) {
        let gm = memory
        let ds = Self.driverShared
        gm.pointer(gpa: ds, length: 4096)!.initializeMemory(as: UInt8.self, repeating: 0, count: 4096)
        gm.storeU32(gpa: ds + VMXNET3.DriverShared.magic, VMXNET3.driverSharedMagic)
        gm.storeU32(gpa: ds + VMXNET3.DriverShared.driverVersion, 1)
        gm.storeU64(gpa: ds + VMXNET3.DriverShared.queueDescPA, Self.queueTable)
        gm.storeU32(gpa: ds + VMXNET3.DriverShared.queueDescLength, UInt32((tx.count + rx.count) * 256))
        gm.storeU32(gpa: ds + VMXNET3.DriverShared.mtu, UInt32(mtu))
        let counts = UInt32(tx.count) << 16 | UInt32(rx.count) << 24 | 1  // maxNumRxSG = 1
        gm.storeU32(gpa: ds + VMXNET3.DriverShared.maxRxSG, counts)
        gm.storeU32(gpa: ds + VMXNET3.DriverShared.intrAutoMask, 1 | 1 << 8)  // autoMask, numIntrs = 1
        gm.storeU32(gpa: ds + VMXNET3.DriverShared.rxMode, VMXNET3.RxMode([.unicast, .broadcast, .multicast]).rawValue)
        gm.pointer(gpa: Self.queueTable, length: 4096)!.initializeMemory(as: UInt8.self, repeating: 0, count: 4096)
        for (q, r) in tx.enumerated() {
            let d = Self.queueTable + UInt64(q) * 256
            gm.storeU64(gpa: d + VMXNET3.TxQueueDesc.txRingBasePA, r.gpa)
            gm.storeU64(gpa: d + VMXNET3.TxQueueDesc.compRingBasePA, r.gpa + UInt64(r.ring_size) * 16)
            gm.storeU32(gpa: d + VMXNET3.TxQueueDesc.txRingSize, r.ring_size)
            gm.storeU32(gpa: d + VMXNET3.TxQueueDesc.compRingSize, r.ring_size)
        }
        for (q, r) in rx.enumerated() {
            let d = Self.queueTable + UInt64(tx.count + q) * 256
            gm.storeU64(gpa: d + VMXNET3.RxQueueDesc.rxRingBasePA0, r.gpa)
            gm.storeU64(gpa: d + VMXNET3.RxQueueDesc.compRingBasePA, r.gpa + UInt64(r.ring_size) * 16)
            gm.storeU32(gpa: d + VMXNET3.RxQueueDesc.rxRingSize0, r.ring_size)
            gm.storeU32(gpa: d + VMXNET3.RxQueueDesc.compRingSize, r.ring_size)
        }
    }

    /// The activation sequence after DriverShared is filled and RX buffers are posted: VRRS,
    /// UVRS, DSAL, DSAH, ACTIVATE_DEV, UPDATE_RX_MODE. Each is one control round trip (the
    /// user-space VM exit). The device validates everything at ACTIVATE and says why not.
    func activate() throws {
        let ds = Self.driverShared
        try channel.writeRegister(VMXNET3.Register.vrrs.rawValue, 1)
        try channel.writeRegister(VMXNET3.Register.uvrs.rawValue, 1)
        try channel.writeRegister(VMXNET3.Register.dsal.rawValue, UInt32(truncatingIfNeeded: ds))
        try channel.writeRegister(VMXNET3.Register.dsah.rawValue, UInt32(truncatingIfNeeded: ds >> 32))
        do {
            let result = try channel.command(VMXNET3.Command.activateDevice.rawValue)
            guard result == 0 else { throw VirtualNIC.AttachError.activationFailed("ACTIVATE returned \(result)") }
        } catch let refusal as HostRefusal {
            throw VirtualNIC.AttachError.activationFailed(refusal.message)
        }
        _ = try channel.command(VMXNET3.Command.updateRxMode.rawValue)
    }

    /// RESET_DEV: the device forgets its rings (the first step of re-arming emulation).
    func reset() throws {
        _ = try channel.command(VMXNET3.Command.resetDevice.rawValue)
    }

    /// ACTIVATE_DEV and UPDATE_RX_MODE again, on fresh rings, after `reset`.
    func reactivate() throws {
        let result = try channel.command(VMXNET3.Command.activateDevice.rawValue)
        guard result == 0 else { throw HostRefusal(code: 0, message: "emulation did not re-activate (\(result))") }
        _ = try channel.command(VMXNET3.Command.updateRxMode.rawValue)
    }

    /// QUIESCE_DEV: the emulated device takes nothing more from its rings and writes nothing more
    /// into them.
    func quiesce() throws {
        _ = try channel.command(VMXNET3.Command.quiesceDevice.rawValue)
    }

    /// ACTIVATE_VF: the switch-in's commit point (the host moves the MAC to the VF).
    func activateVF() throws {
        _ = try channel.command(VMXNET3.Command.activateVF.rawValue)
    }

    // MARK: DIC

    /// Where ECR lives in this process: the interrupt hook loads it with acquire semantics.
    var eventRegister: UnsafeMutableRawPointer { memory.base + Int(Self.driverShared + VMXNET3.DriverShared.ecr) }

    /// Whether the host raised DIC ("device implementation change") in ECR.
    var deviceImplementationChangePending: Bool {
        let ecr = memory.loadU32(gpa: Self.driverShared + VMXNET3.DriverShared.ecr) ?? 0
        return ecr & VMXNET3.Event.deviceImplementationChange != 0
    }

    /// Acknowledges DIC (ECR is write-1-to-clear).
    func acknowledgeDeviceImplementationChange() throws {
        try channel.writeRegister(VMXNET3.Register.ecr.rawValue, VMXNET3.Event.deviceImplementationChange)
    }

    // MARK: Control operations

    /// MACL, then MACH (which applies it).
    func setMAC(_ mac: MACAddress) throws {
        let b = mac.bytes
        try channel.writeRegister(
            VMXNET3.Register.macl.rawValue, UInt32(b[0]) | UInt32(b[1]) << 8 | UInt32(b[2]) << 16 | UInt32(b[3]) << 24)
        try channel.writeRegister(VMXNET3.Register.mach.rawValue, UInt32(b[4]) | UInt32(b[5]) << 8)
    }

    /// UPDATE_RX_MODE with `mode` in DriverShared; a refusal puts the previous mode back.
    func setRxMode(_ mode: VMXNET3.RxMode) throws {
        let field = Self.driverShared + VMXNET3.DriverShared.rxMode
        let previous = memory.loadU32(gpa: field) ?? 0
        memory.storeU32(gpa: field, mode.rawValue)
        do {
            _ = try channel.command(VMXNET3.Command.updateRxMode.rawValue)
        } catch {
            memory.storeU32(gpa: field, previous)
            throw error
        }
    }

    /// UPDATE_VLAN_FILTERS with exactly `vlans` (and VLAN 0, untagged) in DriverShared's table.
    func setVLANs(_ vlans: Set<UInt16>) throws {
        let table = memory.pointer(gpa: Self.driverShared + VMXNET3.DriverShared.vlanTable, length: 512)!
        table.initializeMemory(as: UInt8.self, repeating: 0, count: 512)
        for v in vlans.union([0]) where v < 4096 {
            let word = table.advanced(by: Int(v / 32) * 4).assumingMemoryBound(to: UInt32.self)
            word.pointee |= (UInt32(1) << UInt32(v % 32)).littleEndian
        }
        _ = try channel.command(VMXNET3.Command.updateVLANFilters.rawValue)
    }

    /// UPDATE_MAC_FILTERS with `macs` in the multicast table.
    func setMulticastFilter(_ macs: [MACAddress]) throws {
        precondition(macs.count <= 256)
        let table = memory.pointer(gpa: Self.multicastTable, length: UInt64(macs.count * 6))!
        for (i, m) in macs.enumerated() { EthernetFrame.storeMAC(m.value, table, at: i * 6) }
        memory.storeU32(gpa: Self.driverShared + VMXNET3.DriverShared.multicastTableLength, UInt32(macs.count * 6))
        memory.storeU64(gpa: Self.driverShared + VMXNET3.DriverShared.multicastTablePA, Self.multicastTable)
        _ = try channel.command(VMXNET3.Command.updateMACFilters.rawValue)
    }

    /// GET_LINK.
    func linkIsUp() throws -> Bool {
        try channel.command(VMXNET3.Command.getLink.rawValue) & 1 == 1
    }
}
