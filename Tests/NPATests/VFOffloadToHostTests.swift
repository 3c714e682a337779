import CNPAPluginABI
import NPAControlProtocol
import NPANICModel
import NPARingFormats
import NPATestSupport
import Testing

@testable import NPAShell

/// Offloaded frames from a VF to an emulated guest: the NIC cuts the super-frame (or completes
/// the checksum) before its embedded switch, so what goes up the PF to the host's vswitch, and
/// on to the emulated guest, is finished frames only.
@Suite(.serialized) struct VFOffloadToHostTests {
    @Test(arguments: ["npa-dring", "npa-cq"])
    func offloadedFramesFromAVFReachAnEmulatedGuestFinished(_ model: String) throws {
        let host = try TestHost(configuration: .withNIC(model: model, vfs: 4))
        defer { host.stop() }
        let emulated = try attach(host, "emu", mac: "02:00:00:00:71:02")
        let nic = try #require(host.daemon.nics.first)
        // A VF guest the test drives itself, on a VF no guest of the host holds.
        let vf = try VFGuest(nic: nic, vf: 3, mac: MACAddress("02:00:00:00:71:01")!)
        defer { nic.reset(vf: 3) }
        let destination = MACAddress("02:00:00:00:71:02")!

        let frame = OffloadFrames.tcp(to: destination, from: vf.mac, payload: 30_000)
        #expect(vf.sendOffloaded(frame, flags: NPA_TX_FLAG_TSO, headerLength: OffloadFrames.tcpHeaderLength, mssOrChecksum: 1448))
        let (segments, marked) = receiveFramesWithChecksumMarks(emulated, count: 21)
        #expect(OffloadFrames.segmentationProblem(segments, of: frame, mss: 1448) == nil)
        // The NIC made these checksums; the mark crosses the PF and the vswitch to the guest.
        #expect(marked == segments.count, "\(marked) of \(segments.count) segments marked checksum-valid")
        #expect(vf.dataPath.flush(timeoutMilliseconds: 10_000))

        let partial = OffloadFrames.tcp(to: destination, from: vf.mac, payload: 700)
        #expect(
            vf.sendOffloaded(
                partial, flags: NPA_TX_FLAG_CSUM, headerLength: OffloadFrames.l4Offset, mssOrChecksum: OffloadFrames.tcpChecksumOffset))
        let (completed, completedMarked) = receiveFramesWithChecksumMarks(emulated, count: 1)
        #expect(completed.count == 1 && completed.first?.count == partial.count)
        #expect(completedMarked == 1)
        #expect(completed.first?.withUnsafeBytes { TCPSegmentation.tcpOrUDPChecksumIsValid($0) } == true)
        #expect(vf.dataPath.flush(timeoutMilliseconds: 10_000))

        let c = nic.counters(vf: 3)
        #expect(c.segmentedFrames == 1 && c.segments == 21 && c.checksumsCompleted == 1 && c.txFrames == 22 && c.badOffloads == 0)
    }
}

/// Receives `count` frames (or until the timeout) and counts those the vNIC marked checksum-valid.
private func receiveFramesWithChecksumMarks(
    _ nic: VirtualNIC, count: Int, timeoutMilliseconds: Int = 20_000
) -> (frames: [[UInt8]], checksumValid: Int) {
    var frames: [[UInt8]] = []
    var marked = 0
    let deadline = ContinuousClock.now + .milliseconds(timeoutMilliseconds)
    while frames.count < count && ContinuousClock.now < deadline {
        nic.receive(maxFrames: count - frames.count, timeoutMilliseconds: 200) { frame in
            frames.append(Array(frame.bytes))
            if frame.checksumValid { marked += 1 }
        }
    }
    return (frames, marked)
}
