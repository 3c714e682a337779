import Glibc
import NPAControlProtocol
import SystemPackage

/// The admin socket's captures (`npa capture`): a `captureStart` carries the output descriptor
/// (the client opened the file or pipe; SCM_RIGHTS), the host attaches a `PacketCapture` to the
/// vNIC's device emulation and, through the PF driver, to its VF's port mirror, and its writer
/// thread writes pcap records there. It ends when its writer reaches the frame count (its
/// `done` eventfd wakes this connection), on `captureStop`, or when the client goes away; the
/// first two are answered `captureEnded` with what was written and dropped.
extension ControlServer {
    func startCapture(_ request: CaptureRequest, descriptors: [FileDescriptor], on c: Connection) {
        guard descriptors.count == 1 else {
            for fd in descriptors { try? fd.close() }
            return reply(c, CaptureRefusal.descriptorCount(descriptors.count).reply, about: request.vnic)
        }
        let output = descriptors[0]
        func refuse(_ refusal: CaptureRefusal) {
            try? output.close()
            reply(c, refusal.reply, about: request.vnic)
        }
        guard c.capture == nil else { return refuse(.connectionBusy) }
        guard let device = dataPath.device(named: request.vnic) else {
            return refuse(.noSuchVNIC(request.vnic, known: dataPath.devices.map(\.name)))
        }
        guard device.capture == nil else { return refuse(.alreadyCapturing(request.vnic)) }
        let flags = fcntl(output.rawValue, F_GETFL)
        guard flags >= 0, flags & O_ACCMODE == O_WRONLY || flags & O_ACCMODE == O_RDWR else {
            return refuse(.outputNotWritable(flags < 0 ? String(cString: strerror(errno)) : "opened read-only"))
        }
        let capture: PacketCapture
        do {
            capture = try PacketCapture(vnic: device.name, direction: request.direction, limit: request.count, output: output)
            // Its writer's "done" wakes this connection's handler (`serveCapture`).
            try epoll.add(capture.done.fd, tag: HostEventTag.connection(c.id))
        } catch {
            return reply(c, CaptureRefusal.setupFailed("\(error)").reply, about: request.vnic)  // `capture` closes `output`
        }
        c.capture = capture
        device.setCapture(capture)
        pfDriver.setMirror(of: device, to: capture)
        capture.start()
        let limit = request.count == 0 ? "until stopped" : "\(request.count) frames"
        events.record(.capture, vnic: device.name, "capture started (\(request.direction.argument), \(limit), \(device.mode))")
        reply(c, .ok("capturing vNIC '\(device.name)' (\(request.direction.argument), \(limit)); it is in \(device.mode) mode"))
    }

    /// A capture's connection woke: its writer may have finished (count reached, output
    /// failed, or the rings drained after a stop): the client is told what it wrote.
    func serveCapture(_ c: Connection) {
        if let capture = c.capture, capture.finished { endCapture(on: c, replying: true) }
    }

    /// `captureStop`: the capture is detached now; its writer drains the rings and the client
    /// gets `captureEnded` when it has finished (`serveCapture`), never waiting on the host's thread.
    func stopCapture(on c: Connection) {
        guard let capture = c.capture else { return reply(c, CaptureRefusal.noCaptureRunning.reply) }
        detach(capture)
    }

    /// The connection's capture is over (its writer finished, or the client went away): it is
    /// detached from the data paths if it was not yet, recorded, and answered if `replying`. A
    /// writer still draining (the client went away first) finishes on its own thread.
    func endCapture(on c: Connection, replying: Bool) {
        guard let capture = c.capture else { return }
        c.capture = nil
        epoll.remove(capture.done.fd)
        let dropped = detach(capture)
        let frames = capture.framesWritten
        var failure = capture.failure
        // A vNIC that went away after the capture had its count is no failure of the capture.
        let complete = capture.limit != 0 && frames >= capture.limit
        if capture.wentAway && failure == nil && !complete { failure = "vNIC '\(capture.vnic)' went away (detached) during the capture" }
        let how = capture.finished ? "capture ended" : "capture ended (its client went away)"
        let detail = "\(how): \(frames) frames written, \(dropped) copies dropped" + (failure.map { "; \($0)" } ?? "")
        events.record(.capture, vnic: capture.vnic, detail)
        if replying { reply(c, .captureEnded(CaptureOutcome(frames: frames, dropped: dropped, failure: failure ?? ""))) }
    }

    /// Stops the data paths' copies into the capture (device emulation, then the VF's mirror:
    /// nothing produces into its rings after this) and asks its writer to end. Returns the
    /// copies dropped; the vNIC's `capture_dropped` keeps them.
    @discardableResult
    private func detach(_ capture: PacketCapture) -> UInt64 {
        guard !capture.isDetached else { return capture.droppedAtDetach }
        capture.isDetached = true
        var dropped = capture.emulatedRing.drops &+ capture.mirrorRing.drops
        if let device = dataPath.device(named: capture.vnic), device.capture === capture {
            device.setCapture(nil)
            pfDriver.setMirror(of: device, to: nil)
            dropped = pfDriver.captureDropped(capture, of: device)
            device.counters.captureDropped &+= dropped
        }
        capture.droppedAtDetach = dropped
        capture.requestStop()
        return dropped
    }
}
