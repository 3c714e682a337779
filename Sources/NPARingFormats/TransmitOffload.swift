/// What a sender asks of the device for one frame, as a value: vmxnet3's TxDesc offload mode
/// with its hlen/msscof pair, and the same request a vendor plugin passes in its own format.
/// Carries no trust: whoever acts on it validates it against the frame (`TCPSegmentation`).
public enum TransmitOffload: Equatable, Sendable {
    /// A finished frame.
    case none
    /// Complete one 16-bit checksum: sum the bytes from `start` to the end of the frame (the
    /// field at the absolute offset `field` holds the pseudo-header seed) and store the
    /// complement there — Linux's CHECKSUM_PARTIAL.
    case checksum(start: Int, field: Int)
    /// Cut a TCP super-frame into segments of `mss` payload bytes, each with a copy of the
    /// first `headerLength` bytes (Ethernet + IP + TCP), fixed up.
    case segmentation(headerLength: Int, mss: Int)
}
