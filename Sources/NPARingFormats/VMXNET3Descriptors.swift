/// Decoded vmxnet3 descriptors (16 bytes each, little endian, bit positions per dword as in
/// Linux `vmxnet3_defs.h`). Encoding and decoding are pure functions on the four dwords so the
/// device and the driver side share one definition and tests can check every bit.
public enum VMXNET3Descriptor {
    // MARK: TxDesc
    // dw0-1 addr; dw2: len 0-13 (0 = 16384), gen 14, dtype 16, msscof 18-31;
    // dw3: hlen 0-9, om 10-11, eop 12, cq 13, ti 15, tci 16-31.
    // Computed and @inlinable so the data paths in other modules get constants, not accessors.
    @inlinable public static var txGenBit: UInt32 { 1 << 14 }
    @inlinable public static var txEOPBit: UInt32 { 1 << 12 }
    @inlinable public static var txCQBit: UInt32 { 1 << 13 }
    @inlinable public static var txVLANInsertBit: UInt32 { 1 << 15 }

    /// TxDesc `om`, the offload mode of a packet (read from its SOP descriptor).
    public enum OffloadMode: UInt32, Sendable {
        case none = 0, encapsulated = 1, checksum = 2, segmentation = 3
    }

    /// dword 2 bits 18-31 (`msscof`: the MSS for TSO, the checksum's offset for csum) and
    /// dword 3 bits 0-9 (`hlen`) and 10-11 (`om`), as the driver writes them into a SOP
    /// descriptor. Values wider than their fields are cut to them: the device checks them.
    @inlinable
    public static func txOffloadBits(mode: OffloadMode, headerLength: UInt32, mssOrChecksumOffset: UInt32) -> (
        dword2: UInt32, dword3: UInt32
    ) {
        ((mssOrChecksumOffset & 0x3FFF) << 18, (headerLength & 0x3FF) | (mode.rawValue << 10))
    }

    /// The generation bit of a TX descriptor's dword 2: read (with acquire) and checked before
    /// the rest of the descriptor, which the guest wrote before it.
    @inlinable
    public static func txGeneration(dword2: UInt32) -> UInt32 { (dword2 >> 14) & 1 }

    public struct Tx: Equatable, Sendable {
        public var address: UInt64
        public var length: UInt32
        public var generation: UInt32
        public var endOfPacket: Bool
        public var completionRequested: Bool
        public var vlanInsert: Bool
        public var vlanTCI: UInt16
        /// `om`, `hlen` and `msscof`: meaningful in a packet's SOP descriptor only.
        public var offloadMode: UInt32
        public var headerLength: UInt32
        public var mssOrChecksumOffset: UInt32

        public init(
            address: UInt64, length: UInt32, generation: UInt32, endOfPacket: Bool,
            completionRequested: Bool = true, vlanInsert: Bool = false, vlanTCI: UInt16 = 0,
            offloadMode: OffloadMode = .none, headerLength: UInt32 = 0, mssOrChecksumOffset: UInt32 = 0
        ) {
            self.address = address
            self.length = length
            self.generation = generation
            self.endOfPacket = endOfPacket
            self.completionRequested = completionRequested
            self.vlanInsert = vlanInsert
            self.vlanTCI = vlanTCI
            self.offloadMode = offloadMode.rawValue
            self.headerLength = headerLength & 0x3FF
            self.mssOrChecksumOffset = mssOrChecksumOffset & 0x3FFF
        }

        /// Decodes a descriptor read once into locals. Inlinable: the host's TX path decodes
        /// every descriptor with it (as the benchmark measures), and must not pay a call for it.
        @inlinable
        public init(dword2: UInt32, dword3: UInt32, address: UInt64) {
            self.address = address
            let len = dword2 & 0x3FFF
            self.length = len == 0 ? 16384 : len
            self.generation = VMXNET3Descriptor.txGeneration(dword2: dword2)
            self.endOfPacket = dword3 & txEOPBit != 0
            self.completionRequested = dword3 & txCQBit != 0
            self.vlanInsert = dword3 & txVLANInsertBit != 0
            self.vlanTCI = UInt16(dword3 >> 16)
            self.offloadMode = (dword3 >> 10) & 3
            self.headerLength = dword3 & 0x3FF
            self.mssOrChecksumOffset = dword2 >> 18
        }

        public var dword2: UInt32 { (length & 0x3FFF) | (generation << 14) | (mssOrChecksumOffset << 18) }
        public var dword3: UInt32 {
            (endOfPacket ? txEOPBit : 0) | (completionRequested ? txCQBit : 0)
                | (vlanInsert ? txVLANInsertBit : 0) | (UInt32(vlanTCI) << 16) | headerLength | (offloadMode << 10)
        }
    }

    // MARK: TxCompDesc
    // dw0 txdIdx 0-11; dw3 type 24-30 (0 = TXCOMP), gen 31.
    @inlinable
    public static func txCompletion(eopIndex: UInt32, generation: UInt32) -> (dword0: UInt32, dword3: UInt32) {
        (eopIndex & 0xFFF, generation << 31)
    }
    @inlinable
    public static func txCompletionIndex(dword0: UInt32) -> UInt32 { dword0 & 0xFFF }
    @inlinable
    public static func generation(dword3: UInt32) -> UInt32 { dword3 >> 31 }

    // MARK: RxDesc
    // dw0-1 addr; dw2: len 0-13, btype 14, dtype 15, gen 31.
    @inlinable
    public static func rxDescriptorDword2(length: UInt32, generation: UInt32) -> UInt32 {
        (length & 0x3FFF) | (generation << 31)
    }
    @inlinable
    public static func rxDescriptorLength(dword2: UInt32) -> UInt32 { dword2 & 0x3FFF }
    @inlinable
    public static func rxDescriptorGeneration(dword2: UInt32) -> UInt32 { dword2 >> 31 }

    // MARK: RxCompDesc
    // dw0: rxdIdx 0-11, eop 14, sop 15, rqID 16-25, rssType 26-29; dw1 rssHash;
    // dw2: len 0-13, err 14, ts 15, tci 16-31; dw3: csum 0-15, tuc 16, udp 17, tcp 18, ipc 19,
    // v6 20, v4 21, frg 22, fcs 23, type 24-30 (3 = RXCOMP), gen 31.
    public struct RxCompletion: Equatable, Sendable {
        /// dword 3's checksum bits (16-23): what the device checked, as Linux's
        /// `vmxnet3_rx_csum` reads them: IPv4 is good with `v4 | ipc | tuc`, IPv6 with `v6 | tuc`.
        public struct ChecksumBits: OptionSet, Equatable, Sendable {
            public let rawValue: UInt32
            @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue & 0xFF }
            public static let transportValid = ChecksumBits(rawValue: 1 << 0)  // tuc
            public static let udp = ChecksumBits(rawValue: 1 << 1)
            public static let tcp = ChecksumBits(rawValue: 1 << 2)
            public static let ipv4ChecksumValid = ChecksumBits(rawValue: 1 << 3)  // ipc
            public static let ipv6 = ChecksumBits(rawValue: 1 << 4)
            public static let ipv4 = ChecksumBits(rawValue: 1 << 5)

            /// Whether these bits say the device vouches for the IP and TCP/UDP checksums.
            @inlinable public var vouchesForChecksums: Bool {
                rawValue & Self.transportValid.rawValue != 0
                    && (rawValue & Self.ipv6.rawValue != 0
                        || rawValue & (Self.ipv4.rawValue | Self.ipv4ChecksumValid.rawValue)
                            == Self.ipv4.rawValue | Self.ipv4ChecksumValid.rawValue)
            }
        }

        public var descriptorIndex: UInt32
        public var ringID: UInt32
        public var rssType: UInt32
        public var rssHash: UInt32
        public var length: UInt32
        public var error: Bool
        public var vlanStripped: Bool
        public var vlanTCI: UInt16
        public var checksum: ChecksumBits
        public var generation: UInt32

        public init(
            descriptorIndex: UInt32, ringID: UInt32, rssType: UInt32 = 0, rssHash: UInt32 = 0,
            length: UInt32, error: Bool = false, vlanStripped: Bool = false, vlanTCI: UInt16 = 0,
            checksum: ChecksumBits = [], generation: UInt32
        ) {
            self.descriptorIndex = descriptorIndex
            self.ringID = ringID
            self.rssType = rssType
            self.rssHash = rssHash
            self.length = length
            self.error = error
            self.vlanStripped = vlanStripped
            self.vlanTCI = vlanTCI
            self.checksum = checksum
            self.generation = generation
        }

        @inlinable
        public init(dwords d: (UInt32, UInt32, UInt32, UInt32)) {
            descriptorIndex = d.0 & 0xFFF
            ringID = (d.0 >> 16) & 0x3FF
            rssType = (d.0 >> 26) & 0xF
            rssHash = d.1
            length = d.2 & 0x3FFF
            error = d.2 & (1 << 14) != 0
            vlanStripped = d.2 & (1 << 15) != 0
            vlanTCI = UInt16(d.2 >> 16)
            checksum = ChecksumBits(rawValue: d.3 >> 16)
            generation = d.3 >> 31
        }

        /// Single-buffer frames: SOP and EOP are both set.
        @inlinable
        public var dwords: (UInt32, UInt32, UInt32, UInt32) {
            let d0 =
                (descriptorIndex & 0xFFF) | (1 << 14) | (1 << 15) | ((ringID & 0x3FF) << 16)
                | ((rssType & 0xF) << 26)
            let d2 =
                (length & 0x3FFF) | (error ? 1 << 14 : 0) | (vlanStripped ? 1 << 15 : 0)
                | (UInt32(vlanTCI) << 16)
            let d3 = (checksum.rawValue << 16) | (UInt32(3) << 24) | (generation << 31)
            return (d0, rssHash, d2, d3)
        }
    }
}
