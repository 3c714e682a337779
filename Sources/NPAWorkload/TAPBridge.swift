import NPARingFormats
import NPAShell
import NPASystem

/// Joins a guest's vNIC to a TAP device, so that the kernel's TCP/IP stack behind the TAP is the
/// guest's OS: frames the kernel sends on the interface go out through the vNIC, frames the vNIC
/// receives are written to the interface. Owns nothing but its scratch buffers; touches only the
/// vNIC's data path and the TAP's descriptor, from the one thread that calls `run`.
///
/// With offloads (a TAP opened with the virtio-net header, `offloads: true`), the kernel hands
/// over TCP super-frames of up to one vNIC buffer and frames whose checksum it left to the
/// device; each becomes a `transmitOffloaded` request (`VirtioNetHeader` translates and checks
/// it), and frames the device vouches for go to the kernel marked DATA_VALID, so it does not
/// sum them again. Without: whole frames, at most MTU + 18 bytes each way. One read(2) or
/// write(2) per frame on the TAP side, batched per wake-up on the vNIC side.
///
/// On the receiving side, with offloads, the bridge coalesces as a guest driver's GRO does
/// (`TCPCoalescing`): consecutive segments of one TCP flow within a receive batch become one
/// super-frame of up to 64 KiB, written with a virtio-net GSO header, so the kernel's TCP
/// receive path runs once per super-frame instead of once per 1448 bytes. Nothing is held
/// across a wake-up: every batch ends with what is pending written, so no latency is added.
///
/// Why super-frames are bounded by the vNIC's buffer (gso_max_size) rather than the buffer
/// raised to 64 KiB: every shell buffer has the one size, so 64 KiB buffers would make the
/// pool (RX and TX, 2 x 1024 each by default) 256 MiB of guest memory; vmxnet3's 14-bit
/// descriptor length caps a buffer at 16 KiB anyway, and a 16 KiB super-frame (11 segments at
/// MSS 1448) already takes the per-frame costs (a TAP read, a descriptor) off all but one in
/// eleven segments: the receiving side writes MTU-sized frames one by one either way.
public final class TAPBridge {
    /// What the bridge moved and dropped. Drops are counted, never fatal.
    public struct Counters: Sendable, Equatable {
        /// Frames read from the TAP and handed to the vNIC.
        public var framesToVNIC: UInt64 = 0
        /// Frames the vNIC received and the TAP took.
        public var framesToTAP: UInt64 = 0
        /// Frames from the kernel longer than the vNIC's MTU allows (the TAP's MTU was raised
        /// past the vNIC's) or shorter than an Ethernet header.
        public var malformedFromTAP: UInt64 = 0
        /// Frames from the kernel dropped because the vNIC's TX ring stayed full for 2 s (its host
        /// gone or its device failed; a merely slow device is waited for).
        public var transmitRingFull: UInt64 = 0
        /// Frames from the vNIC dropped because the kernel's queue was full.
        public var tapQueueFull: UInt64 = 0
        /// Frames from the kernel whose virtio-net header asked for something bogus (a GSO type
        /// other than TCP, gso_size 0 or past the MTU, a TCP header or checksum outside the
        /// frame, a super-frame the segmentation codec refuses): dropped, never passed on.
        public var badVirtioHeader: UInt64 = 0
        /// Of `framesToVNIC`: TCP super-frames handed over for the device to segment, and frames
        /// whose checksum the device completes.
        public var superFramesToVNIC: UInt64 = 0
        public var checksumOffloadsToVNIC: UInt64 = 0
        /// Of `framesToTAP`: frames written with DATA_VALID (the device vouched for them).
        public var checksumValidToTAP: UInt64 = 0
        /// Coalesced super-frames written to the kernel (each one write with a GSO header), and
        /// the segments they carried (counted in `framesToTAP` too).
        public var superFramesToTAP: UInt64 = 0
        public var segmentsCoalesced: UInt64 = 0
        /// Turns of the run loop, each one wake-up of the bridge's thread: for work, or (about
        /// ten a second when idle) to look at `shouldStop`.
        public var wakeUps: UInt64 = 0
        public init() {}
    }

    /// Why `run` returned.
    public enum Ending: Equatable, Sendable {
        case stopped
        case hostGone(String)
    }

    public let nic: VirtualNIC
    public let tap: TAPDevice
    public private(set) var counters = Counters()
    /// The longest frame the vNIC takes: MTU plus an Ethernet header and one VLAN tag.
    public let maxFrameBytes: Int
    /// Whether the kernel hands over super-frames and unfinished checksums (the TAP has the
    /// virtio-net header and `offloads` was asked for).
    public let offloadsEnabled: Bool
    /// Bytes before each frame on the TAP: the virtio-net header's, or none.
    private let headerBytes: Int
    /// The longest frame read from the kernel: a super-frame fills at most one vNIC buffer.
    private let maxReadBytes: Int
    /// The two headers a frame to the kernel may carry: nothing to say, and DATA_VALID.
    private let plainHeader: UnsafeMutableRawPointer
    private let validHeader: UnsafeMutableRawPointer
    /// The GSO header of the super-frame being written.
    private let superFrameHeader: UnsafeMutableRawPointer
    /// Merges received segments (offloads only); works in `coalescingBuffer`.
    private var coalescer: TCPCoalescing
    private let coalescingBuffer: UnsafeMutableRawBufferPointer
    /// The largest super-frame written to the kernel (bytes, headers included): 64 KiB, as
    /// Linux's GRO, within what an IP length can say.
    public static let coalescingBytes = 64 * 1024
    private var offloads = [TransmitOffload](repeating: .none, count: TAPBridge.batch)

    private static let batch = 32
    /// How long frames already read wait for TX ring space before they are dropped: longer than
    /// the host holds a sender for a full receiver (`receiver_stall_ms`, 500 by default).
    static let transmitStallMilliseconds = 2000
    /// The TAP's txqueuelen (see `init`).
    public static let kernelQueueFrames = 4096
    /// `batch` slots of `slotBytes`: one byte more than a frame may be, so an oversize frame
    /// shows as a read that filled its slot rather than being silently truncated to fit.
    private let slotBytes: Int
    private let scratch: UnsafeMutableRawBufferPointer
    private var lengths = [Int](repeating: 0, count: TAPBridge.batch)

    /// Gives the TAP the vNIC's MAC (the host's switch delivers only to that address) and MTU
    /// (so the kernel sends nothing the vNIC cannot take), while the TAP is still in this
    /// process's network namespace. With `offloads` and a TAP opened with the virtio-net
    /// header, turns the TAP's offloads on and bounds its super-frames to one vNIC buffer
    /// (gso_max_size) and to the segments a device cuts (gso_max_segs); a TAP without the
    /// header moves finished frames whatever `offloads` says (`offloadsEnabled` tells).
    public init(nic: VirtualNIC, tap: TAPDevice, offloads: Bool = true) throws {
        try tap.setHardwareAddress(nic.mac.bytes)
        try tap.setMTU(nic.configuration.mtu)
        // The kernel drops (counts as TX dropped on the interface) what does not fit this queue
        // while the bridge is busy; TCP keeps up to tcp_limit_output_bytes (1 MiB) per socket in
        // it, about 700 full-size frames, more than a TAP's default 500 (1000 on older kernels).
        try tap.setTransmitQueueLength(Self.kernelQueueFrames)
        offloadsEnabled = offloads && tap.virtioNetHeader
        if tap.virtioNetHeader { try tap.setOffloads(offloadsEnabled) }
        if offloadsEnabled {
            try tap.setGSOLimits(maxSize: nic.configuration.bufferSize, maxSegments: TCPSegmentation.maximumSegments)
        }
        self.nic = nic
        self.tap = tap
        maxFrameBytes = nic.configuration.mtu + 18
        headerBytes = tap.virtioNetHeader ? VirtioNetHeader.size : 0
        maxReadBytes = offloadsEnabled ? max(maxFrameBytes, nic.configuration.bufferSize) : maxFrameBytes
        slotBytes = headerBytes + maxReadBytes + 1
        scratch = .allocate(byteCount: slotBytes * Self.batch, alignment: 64)
        plainHeader = .allocate(byteCount: VirtioNetHeader.size, alignment: 8)
        validHeader = .allocate(byteCount: VirtioNetHeader.size, alignment: 8)
        superFrameHeader = .allocate(byteCount: VirtioNetHeader.size, alignment: 8)
        coalescingBuffer = .allocate(byteCount: offloadsEnabled ? Self.coalescingBytes : 0, alignment: 64)
        coalescer = TCPCoalescing(buffer: coalescingBuffer)
        VirtioNetHeader.write(dataValid: false, into: plainHeader)
        VirtioNetHeader.write(dataValid: true, into: validHeader)
    }

    deinit {
        scratch.deallocate()
        plainHeader.deallocate()
        validHeader.deallocate()
        superFrameHeader.deallocate()
        coalescingBuffer.deallocate()
    }

    /// How long an idle bridge sleeps, by default, before it looks at `shouldStop` again: the
    /// only wake-up that is not for work, ten a second.
    public static let stopCheckMilliseconds = 100

    /// Moves frames both ways until `shouldStop` says so (checked at least every
    /// `stopCheckMilliseconds`) or the host goes away. Throws when the TAP becomes unusable
    /// (e.g. its interface was deleted).
    public func run(stopCheckMilliseconds: Int = TAPBridge.stopCheckMilliseconds, shouldStop: () -> Bool) throws -> Ending {
        var tapError: (any Error)?
        while !shouldStop() {
            counters.wakeUps &+= 1
            if let gone = nic.hostGone { return .hostGone("\(gone)") }
            let fromKernel = try forwardFromTAP()
            // vNIC → kernel. When the kernel had nothing, an idle bridge sleeps here on both
            // sources in one poll: the vNIC's interrupt (whichever data path is active: the wait
            // follows switches) and the TAP's descriptor (a frame from the kernel ends it, so
            // the next turn forwards it). The TAP stays readable until read: no wake-up is lost
            // between `forwardFromTAP` finding nothing and the sleep.
            let wait = fromKernel > 0 ? 0 : stopCheckMilliseconds
            nic.receive(maxFrames: 64, timeoutMilliseconds: wait, wakingFor: tap.fd) { frame in
                guard tapError == nil else { return }
                do {
                    if offloadsEnabled {
                        try coalesceToTAP(frame)
                    } else {
                        try passToTAP(frame)
                    }
                } catch { tapError = error }
            }
            // The batch's end: nothing waits for the next wake-up.
            if tapError == nil && coalescer.hasPending {
                do { try writePendingToTAP() } catch { tapError = error }
            }
            if let tapError { throw tapError }
        }
        return .stopped
    }

    /// The longest segment of a super-frame: its IP packet fits the MTU (MTU + 14, + 18 tagged).
    private func maxSegmentFrame(_ frame: UnsafeRawPointer) -> Int {
        maxFrameBytes - (EthernetFrame.u16(frame, at: 12) == EthernetFrame.etherTypeVLAN ? 0 : EthernetFrame.vlanTagLength)
    }

    /// Offers a received frame to the coalescer and writes what it gives up, in order.
    private func coalesceToTAP(_ frame: VirtualNIC.ReceivedFrame) throws {
        while true {
            switch coalescer.offer(frame.bytes, checksumValid: frame.checksumValid) {
            case .held: return
            case .passThrough: return try passToTAP(frame)
            case .flushPendingFirst: try writePendingToTAP()
            }
        }
    }

    /// Writes the pending super-frame (a single held frame as it came, with DATA_VALID: only
    /// checksum-valid frames are held) and counts its segments.
    private func writePendingToTAP() throws {
        let superFrame = coalescer.takePending()
        let segments = UInt64(superFrame.segmentCount)
        let header: UnsafeMutableRawPointer
        if segments == 1 {
            header = validHeader
        } else {
            VirtioNetHeader.write(superFrame: superFrame, into: superFrameHeader)
            header = superFrameHeader
        }
        guard try tap.writeFrame(header: UnsafeRawBufferPointer(start: header, count: headerBytes), superFrame.bytes) else {
            counters.tapQueueFull &+= segments
            return
        }
        counters.framesToTAP &+= segments
        if segments == 1 {
            counters.checksumValidToTAP &+= 1
        } else {
            counters.superFramesToTAP &+= 1
            counters.segmentsCoalesced &+= segments
        }
    }

    /// Writes one frame as it came and counts it.
    private func passToTAP(_ frame: VirtualNIC.ReceivedFrame) throws {
        if try writeToTAP(frame) {
            counters.framesToTAP &+= 1
        } else {
            counters.tapQueueFull &+= 1
        }
    }

    /// Writes one frame the vNIC received to the kernel, after a virtio-net header if the TAP
    /// has one (DATA_VALID when the device vouched for its checksums). False: the queue was full.
    private func writeToTAP(_ frame: VirtualNIC.ReceivedFrame) throws -> Bool {
        guard headerBytes > 0 else { return try tap.writeFrame(frame.bytes) }
        let valid = offloadsEnabled && frame.checksumValid
        if valid { counters.checksumValidToTAP &+= 1 }
        return try tap.writeFrame(header: UnsafeRawBufferPointer(start: valid ? validHeader : plainHeader, count: headerBytes), frame.bytes)
    }

    /// Reads what the kernel has ready (up to a batch) and sends it; returns frames read.
    private func forwardFromTAP() throws -> Int {
        var n = 0
        var read = 0
        while n < Self.batch {
            let slot = UnsafeMutableRawBufferPointer(rebasing: scratch[n * slotBytes..<(n + 1) * slotBytes])
            guard let bytes = try tap.readFrame(into: slot) else { break }
            read += 1
            let length = bytes - headerBytes
            guard length >= 14, length <= maxReadBytes else {
                counters.malformedFromTAP &+= 1
                continue
            }
            var offload = TransmitOffload.none
            if offloadsEnabled {
                let header = VirtioNetHeader(slot.baseAddress!)
                guard
                    let request = header.transmitOffload(
                        frame: slot.baseAddress! + headerBytes, length: length,
                        maxSegmentFrame: maxSegmentFrame(slot.baseAddress! + headerBytes))
                else {
                    counters.badVirtioHeader &+= 1
                    continue
                }
                offload = request
            }
            // Only a super-frame may be longer than the MTU allows.
            if length > maxFrameBytes {
                guard case .segmentation = offload else {
                    counters.malformedFromTAP &+= 1
                    continue
                }
            }
            lengths[n] = length
            offloads[n] = offload
            n += 1
        }
        var sent = 0
        var waitedMilliseconds = 0
        while sent < n {
            let base = sent
            let k = nic.transmitOffloaded(count: n - sent) { i, buffer in
                let length = lengths[base + i]
                buffer.copyMemory(
                    from: UnsafeRawBufferPointer(start: scratch.baseAddress! + (base + i) * slotBytes + headerBytes, count: length))
                switch offloads[base + i] {
                case .none: break
                case .checksum: counters.checksumOffloadsToVNIC &+= 1
                case .segmentation: counters.superFramesToVNIC &+= 1
                }
                return (length, offloads[base + i])
            }
            sent += k
            if k == 0 {
                // A full ring: the device (or the host's backpressure on a full receiver) is
                // behind. Wait for it rather than drop: meanwhile the bridge reads nothing more,
                // so the kernel queues on the TAP (`kernelQueueFrames`) and TCP paces itself.
                // Only a device that takes nothing for `transmitStallMilliseconds` (the host gone,
                // or its device failed) has the rest dropped and counted.
                if nic.hostGone != nil || waitedMilliseconds >= Self.transmitStallMilliseconds { break }
                _ = nic.waitForTransmitSpace(timeoutMilliseconds: 50)
                waitedMilliseconds += 50
            }
        }
        counters.framesToVNIC &+= UInt64(sent)
        counters.transmitRingFull &+= UInt64(n - sent)
        return read
    }
}
