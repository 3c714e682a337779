/// The frames held for one vNIC while it migrates, oldest first. On the source host (A) they
/// are every frame the vswitch or the PF path would have delivered to the stopped device; the
/// orchestration takes them to forward to the destination, or gives them back to the device if
/// the migration fails. On the destination (B) they are the frames that reached the restored
/// device directly while frames forwarded from A are still due: they wait until forwarding ends.
///
/// Bounded: at most `maximumFrames` frames and `maximumBytes` of slots. A frame that does not
/// fit is dropped and counted (`drop_migration_overflow`); it is never delivered early and never
/// makes a sender wait — a held receiver holds nobody back. The storage is a `SwitchOverflow`
/// (an ordered ring of frame copies), allocated once when holding begins, never per frame.
///
/// Owned by `HostDataPath` (which keeps the device alive while it holds its frames); touched only
/// by the host's thread.
final class MigrationHeldFrames {
    static let maximumFrames = 4096
    static let maximumBytes = 8 << 20
    /// The vNIC whose frames these are (another, restored from it, may take its place).
    unowned var device: EmulatedDevice
    /// The frames, oldest first; slots as long as the device's largest receivable frame.
    let frames: SwitchOverflow
    /// Frames kept since holding began, and frames that found the hold full.
    private(set) var kept: UInt64 = 0
    private(set) var overflowDrops: UInt64 = 0

    /// A hold for `device`'s frames (at most its largest receivable frame each).
    init(for device: EmulatedDevice) {
        self.device = device
        let length = device.maximumFrameLength
        frames = SwitchOverflow(maximumFrameLength: length, capacity: Self.capacity(maximumFrameLength: length))
    }

    /// Frames a hold keeps for a device whose largest frame is `maximumFrameLength` bytes: 4096
    /// at MTU 1500, fewer for jumbo frames (8 MiB of slots).
    static func capacity(maximumFrameLength: Int) -> Int { min(maximumFrames, max(1, maximumBytes / maximumFrameLength)) }

    var count: Int { frames.count }

    /// Keeps a copy of `frame` after the others. A frame longer than the device could ever
    /// take is dropped as `deliver` would drop it (`rx_frame_too_long`); one that finds the hold
    /// full is dropped and counted.
    func keep(_ frame: UnsafeRawPointer, length: Int) {
        if length > frames.maximumFrameLength {
            device.drop(.rxFrameTooLong)
        } else if frames.append(frame, length: length) {
            kept &+= 1
        } else {
            overflowDrops &+= 1
        }
    }

    /// Removes and returns up to `max` of the oldest frames, as byte arrays (the migration's slow
    /// path: they leave for another host).
    func take(max: Int) -> [[UInt8]] {
        let n = Swift.min(Swift.max(0, max), frames.count)
        var out: [[UInt8]] = []
        out.reserveCapacity(n)
        for k in 0..<n {
            let (p, length) = frames.frame(k)
            out.append([UInt8](UnsafeRawBufferPointer(start: p, count: length)))
        }
        frames.removeFirst(n)
        return out
    }
}
