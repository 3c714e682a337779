import NPARingFormats
import NPASystem
import SystemPackage

/// A physical port whose other end is a TAP device: the Linux kernel is the wire (a bridge,
/// another namespace, any real tool). It owns the TAP's descriptor, a batch of receive buffers
/// and the queue of frames bound for the kernel, all allocated once, and the port's counters.
///
/// Two sides, each on one thread at a time: whoever switches frames onto the wire pushes them
/// into `outbound` (the NIC's engine or the host's PF driver under the NIC's lock, or the host's
/// data path); the thread that services the port (`flush`, `fill`, `consume`) writes them out
/// and reads what the kernel sends. A TAP takes one frame per read or write: a batch is the
/// frames one wake-up moves, not one system call. Runt and oversize frames from the kernel are
/// counted and dropped here. When the interface goes away under us (an admin's `ip link
/// delete`) the port goes down for good: `failure` says why, and every frame after is dropped
/// and counted. The interface itself is removed when this port is released only if the host
/// created it (a non-persistent TAP lives as long as its descriptor); one that existed before
/// (`ip tuntap add mode tap`: persistent) is left in place.
public final class TAPWire: @unchecked Sendable {
    /// The port's counters: written by the thread that services it (single writer, no atomics),
    /// read by the host's status as they are.
    public struct Counters: Equatable, Sendable {
        public var framesIn: UInt64 = 0
        public var bytesIn: UInt64 = 0
        public var framesOut: UInt64 = 0
        public var bytesOut: UInt64 = 0
        /// From the kernel: shorter than an Ethernet header, or longer than `maximumFrame`.
        public var runtDrops: UInt64 = 0
        public var oversizeDrops: UInt64 = 0
        /// To the kernel: the interface was down (EIO), its queue was full, or it was gone.
        public var linkDownDrops: UInt64 = 0
        public var kernelBusyDrops: UInt64 = 0
        public var goneDrops: UInt64 = 0
        /// Times the wire was read (wake-ups that moved frames in); framesIn / readBatches is
        /// the mean batch.
        public var readBatches: UInt64 = 0

        public func named(outboundQueueDrops: UInt64) -> [(String, UInt64)] {
            [
                ("frames_in", framesIn), ("bytes_in", bytesIn), ("frames_out", framesOut), ("bytes_out", bytesOut),
                ("drop_runt", runtDrops), ("drop_oversize", oversizeDrops), ("drop_link_down", linkDownDrops),
                ("drop_kernel_busy", kernelBusyDrops), ("drop_gone", goneDrops), ("drop_queue_full", outboundQueueDrops),
                ("read_batches", readBatches),
            ]
        }
    }

    /// Frames one `fill` reads at most.
    public static let batchSize = 32
    /// Each receive buffer: above `maximumFrame`, so a frame the kernel truncates to the buffer
    /// is still seen as oversize.
    static let slotSize = FrameQueue.slotSize

    public let device: TAPDevice
    /// True if the interface did not exist before this port opened it.
    public let createdHere: Bool
    /// The longest frame accepted from the kernel.
    public let maximumFrame: Int
    /// Frames bound for the kernel (single producer at a time, single consumer).
    public let outbound = FrameQueue(capacity: 1024)
    public private(set) var counters = Counters()
    /// Set once, when the interface became unusable (deleted): the port is down from then on.
    public private(set) var failure: Errno?
    /// The kernel's side of the link is down (an admin's `ip link set IF down`, or a move to
    /// another namespace): the last write was refused with EIO. Cleared by the next write the
    /// kernel takes (reads say nothing about it).
    public private(set) var kernelLinkDown = false
    private let slots: UnsafeMutableRawPointer
    private let lengths: UnsafeMutablePointer<Int>
    /// Frames read and not yet taken: `next..<held`.
    private var next = 0
    private var held = 0
    /// Whether the kernel may have more to read: the last read filled the batch, or epoll said
    /// so. While it is false `fill` reads only every `idleReadInterval` calls, so a polling
    /// service does not pay a read system call per pass for an idle wire.
    private var mayHaveMore = true
    private var callsSinceRead = 0
    static let idleReadInterval = 8
    /// The last read found the kernel's queue empty; `drains` counts it once the switch has taken
    /// every frame read before.
    private var readHitEmpty = false
    /// `drains`, published for other threads (written only by the servicing thread).
    private let drainWord: UnsafeMutableRawPointer

    public var interfaceName: String { device.interfaceName }
    public var isDown: Bool { failure != nil }
    /// Frames read but not yet taken by the switch (it stopped early: backpressure).
    public var pendingCount: Int { held - next }

    /// How many times the servicing thread read the kernel's queue empty with every frame it had
    /// read before taken by the switch. Any thread may read it: once it has grown by two since a
    /// moment, every frame that was in the kernel's queue at that moment has been through the
    /// switch (a live migration's source waits for that before it stops forwarding).
    public var drains: UInt64 {
        let n = SharedWord.loadRelaxedU64(drainWord)
        // Pairs with the fence before the store: what the switch did before it is visible.
        MemoryFence.sequentiallyConsistent()
        return n
    }

    /// The txqueuelen of a TAP the host creates (one that existed keeps the admin's).
    public static let kernelQueueFrames = 4096

    /// Opens the TAP interface `name`, creating it (with a 4096-frame queue, its link up) if it
    /// does not exist in this namespace, or attaching to the existing one.
    public init(name: String, maximumFrame: Int) throws {
        let existed = TAPDevice.interfaceExists(name)
        do {
            device = try TAPDevice(name: name)
            if !existed {
                // Deep enough for what the kernel's TCP keeps in flight: a TAP drops past it.
                try device.setTransmitQueueLength(Self.kernelQueueFrames)
                try device.setLinkUp()
            }
        } catch let error as SystemCallError where existed && (error.errno == .invalidArgument || error.errno == .resourceBusy) {
            throw TAPWireError(
                description:
                    "TAP '\(name)': an interface of that name exists but is not a TAP device this host can open (\(error.errno)): another kind of interface, or a TAP another process holds"
            )
        } catch {
            throw TAPWireError(description: "TAP '\(name)': \(error) (a TAP wire needs root or CAP_NET_ADMIN, and /dev/net/tun)")
        }
        createdHere = !existed
        self.maximumFrame = min(maximumFrame, Self.slotSize - 1)
        slots = .allocate(byteCount: Self.batchSize * Self.slotSize, alignment: 64)
        lengths = .allocate(capacity: Self.batchSize)
        lengths.initialize(repeating: 0, count: Self.batchSize)
        drainWord = .allocate(byteCount: 8, alignment: 8)
        drainWord.storeBytes(of: 0, as: UInt64.self)
    }

    deinit {
        slots.deallocate()
        lengths.deallocate()
        drainWord.deallocate()
    }

    /// Counts a drain if the last read found the queue empty and nothing read is left.
    private func noteDrainIfEmpty() {
        guard readHitEmpty, next == held else { return }
        readHitEmpty = false
        MemoryFence.sequentiallyConsistent()
        SharedWord.storeRelaxedU64(drainWord, SharedWord.loadRelaxedU64(drainWord) &+ 1)
    }

    /// Epoll said the descriptor is readable.
    public func markReadable() { mayHaveMore = true }

    /// Writes every queued outbound frame to the kernel; returns the frames handled. A frame
    /// the kernel does not take (link down, queue full, interface gone) is counted and dropped:
    /// a wire does not hold frames back.
    @discardableResult
    public func flush() -> Int {
        outbound.pop(max: Int(outbound.capacity)) { frame, length in send(frame, length: length) }
    }

    /// Writes one frame to the kernel now (the host's data path sends straight from its arena,
    /// without the copy into `outbound`); counted, and dropped if the kernel does not take it.
    public func send(_ frame: UnsafeRawPointer, length: Int) {
        guard failure == nil else {
            counters.goneDrops &+= 1
            return
        }
        switch device.transfer(from: frame, length: length) {
        case .done:
            counters.framesOut &+= 1
            counters.bytesOut &+= UInt64(length)
            kernelLinkDown = false
        case .wouldBlock: counters.kernelBusyDrops &+= 1
        case .linkDown:
            counters.linkDownDrops &+= 1
            kernelLinkDown = true
        case .failed(let errno):
            failure = errno
            counters.goneDrops &+= 1
        }
    }

    /// Reads up to `batchSize` frames when the last batch was taken and a read is due; returns
    /// how many are pending after it. Malformed frames are dropped here.
    @discardableResult
    public func fill() -> Int {
        guard next == held, failure == nil else { return held - next }
        next = 0
        held = 0
        callsSinceRead += 1
        guard mayHaveMore || callsSinceRead >= Self.idleReadInterval else { return 0 }
        callsSinceRead = 0
        mayHaveMore = false
        while held < Self.batchSize {
            // SAFETY: held < batchSize: the slot lies inside `slots`; the kernel writes at most
            // slotSize bytes (a longer frame is truncated, then dropped as oversize).
            switch device.transfer(into: slots + held * Self.slotSize, capacity: Self.slotSize) {
            case .done(let length):
                if length < EthernetFrame.headerLength {
                    counters.runtDrops &+= 1
                } else if length > maximumFrame {
                    counters.oversizeDrops &+= 1
                } else {
                    lengths[held] = length
                    held += 1
                    counters.framesIn &+= 1
                    counters.bytesIn &+= UInt64(length)
                }
            case .wouldBlock, .linkDown:
                if held > 0 { counters.readBatches &+= 1 }
                readHitEmpty = true
                noteDrainIfEmpty()
                return held
            case .failed(let errno):
                failure = errno
                return held
            }
        }
        counters.readBatches &+= 1
        mayHaveMore = true
        return held
    }

    /// The `index`-th pending frame (0 is the oldest not yet taken; `index < pendingCount`).
    public func pending(_ index: Int) -> (UnsafeRawPointer, Int) {
        precondition(index >= 0 && next + index < held, "pending frame \(index) of \(held - next)")
        // SAFETY: next + index < held <= batchSize, so the slot lies inside `slots`, and its
        // length was checked against maximumFrame < slotSize when it was read.
        return (UnsafeRawPointer(slots + (next + index) * Self.slotSize), lengths[next + index])
    }

    /// The switch took the oldest `count` pending frames.
    public func consume(_ count: Int) {
        next = min(held, next + count)
        noteDrainIfEmpty()
    }

    /// True when nothing waits on either side (the servicing thread may sleep).
    public var isIdle: Bool { next == held && outbound.isEmpty }

    public func named() -> [(String, UInt64)] { counters.named(outboundQueueDrops: outbound.drops) }
}

/// A TAP wire could not be opened; the message names the interface and what to check.
public struct TAPWireError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(description: String) { self.description = description }
}
