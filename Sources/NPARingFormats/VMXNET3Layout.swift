/// The vmxnet3 device ABI as the Linux driver's `vmxnet3_defs.h` defines it: register offsets,
/// command codes, shared-area offsets and constants. Both the host's device emulation and the
/// guest's emulation plugin use these and nothing else, so the format is a real one.
///
/// Offsets are byte offsets with natural alignment, checked against a C mirror of the Linux
/// structs (Tests/CVMXNET3Mirror, checked by RingFormatTests).
public enum VMXNET3 {
    public static let driverSharedMagic: UInt32 = 0xBABE_FEE1
    public static let initialGeneration: UInt32 = 1
    public static let descriptorSize: UInt64 = 16
    public static let queueDescriptorSize: UInt64 = 256
    public static let maximumTxRingSize: UInt32 = 4096
    public static let maximumRxRingSize: UInt32 = 4096
    public static let minimumRingSize: UInt32 = 32
    public static let maximumBufferLength: UInt32 = 16383
    /// A TX packet may span at most this many descriptors (non-TSO).
    public static let maximumDescriptorsPerPacket = 16
    /// Device-ID value GET_DID reads in passthrough (`VMXNET3_DID_PASSTHRU`).
    public static let passthroughDeviceID: UInt32 = 0xFFFF
    public static let emulatedDeviceID: UInt32 = 0x07B0
    /// `GET_LINK`: bit 0 up, speed in Mbps in the high half.
    public static let linkUp10G: UInt32 = (10000 << 16) | 1

    /// BAR1 ("VD") registers: reached through the control channel, one round trip each (the
    /// equivalent of a VM exit).
    public enum Register: UInt32, Sendable {
        case vrrs = 0x00, uvrs = 0x08, dsal = 0x10, dsah = 0x18, cmd = 0x20
        case macl = 0x28, mach = 0x30, icr = 0x38, ecr = 0x40
    }

    /// Commands written to CMD; the result is read back from CMD.
    public enum Command: UInt32, Sendable, CaseIterable {
        case activateDevice = 0xCAFE_0000
        case quiesceDevice = 0xCAFE_0001
        case resetDevice = 0xCAFE_0002
        case updateRxMode = 0xCAFE_0003
        case updateMACFilters = 0xCAFE_0004
        case updateVLANFilters = 0xCAFE_0005
        case stopEmulation = 0xCAFE_000A
        case loadPlugin = 0xCAFE_000B
        case activateVF = 0xCAFE_000C
        case getQueueStatus = 0xF00D_0000
        case getStats = 0xF00D_0001
        case getLink = 0xF00D_0002
        case getPermanentMACLow = 0xF00D_0003
        case getPermanentMACHigh = 0xF00D_0004
        case getDeviceIDLow = 0xF00D_0005
        case getDeviceIDHigh = 0xF00D_0006
        case getConfiguredInterrupts = 0xF00D_0008
    }

    /// `DriverShared.ecr` event bits.
    public enum Event {
        public static let rxQueueError: UInt32 = 1
        public static let txQueueError: UInt32 = 2
        public static let link: UInt32 = 4
        /// Device implementation change: the NPA switch signal.
        public static let deviceImplementationChange: UInt32 = 8
    }

    /// `RxFilterConf.rxMode` bits.
    public struct RxMode: OptionSet, Sendable, Hashable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let unicast = RxMode(rawValue: 0x01)
        public static let multicast = RxMode(rawValue: 0x02)
        public static let broadcast = RxMode(rawValue: 0x04)
        public static let allMulticast = RxMode(rawValue: 0x08)
        public static let promiscuous = RxMode(rawValue: 0x10)
    }

    /// Queue error codes written to `QueueStatus.error`.
    public enum QueueError {
        public static let noEOP: UInt32 = 0x8000_0000
        public static let modeSwitchFailed: UInt32 = 0x8000_0006
        public static let invalidTxDescriptor: UInt32 = 0x8000_0007
    }

    /// Byte offsets inside `Vmxnet3_DriverShared`.
    public enum DriverShared {
        public static let magic: UInt64 = 0
        public static let driverVersion: UInt64 = 8
        public static let queueDescPA: UInt64 = 40
        public static let queueDescLength: UInt64 = 52
        public static let mtu: UInt64 = 56
        public static let maxRxSG: UInt64 = 60
        public static let numTxQueues: UInt64 = 62
        public static let numRxQueues: UInt64 = 63
        public static let intrAutoMask: UInt64 = 80
        public static let numInterrupts: UInt64 = 81
        public static let eventInterruptIndex: UInt64 = 82
        public static let intrCtrl: UInt64 = 108
        public static let rxMode: UInt64 = 120
        public static let multicastTableLength: UInt64 = 124
        public static let multicastTablePA: UInt64 = 128
        public static let vlanTable: UInt64 = 136
        public static let vlanTableBytes: UInt64 = 512
        public static let rssConfDesc: UInt64 = 648
        public static let pluginConfDesc: UInt64 = 680
        public static let ecr: UInt64 = 696
        public static let size: UInt64 = 720
    }

    /// Byte offsets inside `Vmxnet3_TxQueueDesc` (256 bytes).
    public enum TxQueueDesc {
        public static let txNumDeferred: UInt64 = 0
        public static let txThreshold: UInt64 = 4
        public static let txRingBasePA: UInt64 = 16
        public static let dataRingBasePA: UInt64 = 24
        public static let compRingBasePA: UInt64 = 32
        public static let txRingSize: UInt64 = 56
        public static let dataRingSize: UInt64 = 60
        public static let compRingSize: UInt64 = 64
        public static let intrIdx: UInt64 = 72
        public static let stopped: UInt64 = 80
        public static let error: UInt64 = 84
        /// UPT1_TxStats: TSOPkts, TSOBytes, ucastPkts, ucastBytes, mcastPkts, mcastBytes,
        /// bcastPkts, bcastBytes, pktsTxError, pktsTxDiscard (u64 each).
        public static let stats: UInt64 = 88
    }

    /// Byte offsets inside `Vmxnet3_RxQueueDesc` (256 bytes).
    public enum RxQueueDesc {
        public static let updateRxProd: UInt64 = 0
        public static let rxRingBasePA0: UInt64 = 16
        public static let rxRingBasePA1: UInt64 = 24
        public static let compRingBasePA: UInt64 = 32
        public static let rxRingSize0: UInt64 = 56
        public static let rxRingSize1: UInt64 = 60
        public static let compRingSize: UInt64 = 64
        public static let intrIdx: UInt64 = 72
        public static let stopped: UInt64 = 80
        public static let error: UInt64 = 84
        /// UPT1_RxStats: LROPkts, LROBytes, ucastPkts, ucastBytes, mcastPkts, mcastBytes,
        /// bcastPkts, bcastBytes, pktsRxOutOfBuf, pktsRxError (u64 each).
        public static let stats: UInt64 = 88
    }

    /// The pass-through register page ("BAR0") shared between guest and device: doorbells and
    /// interrupt masks in vmxnet3's places, plus one word where the device says it sleeps.
    public enum RegisterPage {
        public static let size = 4096
        /// IMR[vector]: 1 = masked. With auto-mask the device sets it when it fires the vector.
        public static func interruptMask(_ vector: Int) -> Int { 8 * vector }
        /// TXPROD[queue]: the driver's next-to-fill index, written after adding descriptors.
        public static func txProducer(_ queue: Int) -> Int { 0x600 + 8 * queue }
        public static func rxProducer(_ queue: Int) -> Int { 0x800 + 8 * queue }
        /// 1 while the device engine is asleep: a doorbell write must then be followed by a kick
        /// (eventfd). 0 while it polls, so the kick is skipped.
        public static let deviceSleeping = 0xF00
        public static let maximumVectors = 25
    }
}
