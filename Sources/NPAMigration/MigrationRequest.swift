import NPAControlProtocol

/// What the source host asks of the destination in `prepare`: enough about the guest for B to
/// decide before anything stops at A — is the name free, the MAC free, may this guest use these
/// MACs, VLANs and rx mode, has B room for its queues. A plain value; `MigrationMessage` encodes
/// it. B checks it against its own policy as it would a guest's attach: it comes from another host.
public struct MigrationRequest: Equatable, Sendable {
    public var guestName: String
    public var mac: MACAddress
    public var multicast: [MACAddress]
    public var vlans: [UInt16]
    /// vmxnet3 rx mode bits (`VMXNET3.RxMode.rawValue`).
    public var rxMode: UInt32
    public var mtu: UInt32
    public var transmitQueues: UInt8
    public var receiveQueues: UInt8
    /// Whether the guest was on a VF at A (B switches it in if its own policy and VFs allow).
    public var wasPassthrough: Bool
    /// The source host's name, for B's status and logs.
    public var sourceHost: String

    public init(
        guestName: String, mac: MACAddress, multicast: [MACAddress], vlans: [UInt16], rxMode: UInt32, mtu: UInt32,
        transmitQueues: UInt8, receiveQueues: UInt8, wasPassthrough: Bool, sourceHost: String
    ) {
        self.guestName = guestName
        self.mac = mac
        self.multicast = multicast
        self.vlans = vlans
        self.rxMode = rxMode
        self.mtu = mtu
        self.transmitQueues = transmitQueues
        self.receiveQueues = receiveQueues
        self.wasPassthrough = wasPassthrough
        self.sourceHost = sourceHost
    }
}
