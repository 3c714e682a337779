import NPAShell
import NPASystem

/// Joins a guest's vNIC to a TAP device, so that the kernel's TCP/IP stack behind the TAP is the
/// guest's OS: frames the kernel sends on the interface go out through the vNIC, frames the vNIC
/// receives are written to the interface. Owns nothing but its scratch buffers; touches only the
/// vNIC's data path and the TAP's descriptor, from the one thread that calls `run`.
///
/// Without offloads yet: whole frames, at most MTU + 18 bytes each way; one read(2) or write(2)
/// per frame on the TAP side (TAP has no batch call without the virtio-net header), batched
/// per wake-up on the vNIC side.
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
        /// Frames from the kernel dropped because the vNIC's TX ring stayed full.
        public var transmitRingFull: UInt64 = 0
        /// Frames from the vNIC dropped because the kernel's queue was full.
        public var tapQueueFull: UInt64 = 0
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

    private static let batch = 32
    /// The TAP's txqueuelen (see `init`).
    public static let kernelQueueFrames = 4096
    /// `batch` slots of `slotBytes`: one byte more than a frame may be, so an oversize frame
    /// shows as a read that filled its slot rather than being silently truncated to fit.
    private let slotBytes: Int
    private let scratch: UnsafeMutableRawBufferPointer
    private var lengths = [Int](repeating: 0, count: TAPBridge.batch)

    /// Gives the TAP the vNIC's MAC (the host's switch delivers only to that address) and MTU
    /// (so the kernel sends nothing the vNIC cannot take), while the TAP is still in this
    /// process's network namespace.
    public init(nic: VirtualNIC, tap: TAPDevice) throws {
        try tap.setHardwareAddress(nic.mac.bytes)
        try tap.setMTU(nic.configuration.mtu)
        // The kernel drops (counts as TX dropped on the interface) what does not fit this queue
        // while the bridge is busy; TCP keeps up to tcp_limit_output_bytes (1 MiB) per socket in
        // it, about 700 full-size frames, more than a TAP's default 500 (1000 on older kernels).
        try tap.setTransmitQueueLength(Self.kernelQueueFrames)
        self.nic = nic
        self.tap = tap
        maxFrameBytes = nic.configuration.mtu + 18
        slotBytes = maxFrameBytes + 1
        scratch = .allocate(byteCount: slotBytes * Self.batch, alignment: 64)
    }

    deinit { scratch.deallocate() }

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
                    if try tap.writeFrame(frame.bytes) {
                        counters.framesToTAP &+= 1
                    } else {
                        counters.tapQueueFull &+= 1
                    }
                } catch { tapError = error }
            }
            if let tapError { throw tapError }
        }
        return .stopped
    }

    /// Reads what the kernel has ready (up to a batch) and sends it; returns frames read.
    private func forwardFromTAP() throws -> Int {
        var n = 0
        var read = 0
        while n < Self.batch {
            let slot = UnsafeMutableRawBufferPointer(rebasing: scratch[n * slotBytes..<(n + 1) * slotBytes])
            guard let length = try tap.readFrame(into: slot) else { break }
            read += 1
            guard length >= 14, length <= maxFrameBytes else {
                counters.malformedFromTAP &+= 1
                continue
            }
            lengths[n] = length
            n += 1
        }
        var sent = 0
        var retried = false
        while sent < n {
            let base = sent
            let k = nic.transmit(count: n - sent) { i, buffer in
                let length = lengths[base + i]
                buffer.copyMemory(from: UnsafeRawBufferPointer(start: scratch.baseAddress! + (base + i) * slotBytes, count: length))
                return length
            }
            sent += k
            if k == 0 {
                // A full ring: wait once for the device, then drop the rest as a NIC would
                // (the kernel's TCP retransmits).
                if retried || !nic.waitForTransmitSpace(timeoutMilliseconds: 10) { break }
                retried = true
            }
        }
        counters.framesToVNIC &+= UInt64(sent)
        counters.transmitRingFull &+= UInt64(n - sent)
        return read
    }
}
