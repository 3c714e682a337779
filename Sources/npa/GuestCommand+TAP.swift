import ArgumentParser
import NPAControlProtocol
import NPAShell
import NPASystem
import NPAWorkload

/// `--offloads on|off`.
enum OffloadSetting: String, ExpressibleByArgument, Sendable {
    case on, off
}

/// `npa guest ... tap`: the guest's OS is the kernel's TCP/IP stack behind a TAP interface.
extension Guest {
    /// Whether the TAP carries offloads (the default).
    var tapOffloads: Bool { offloads != .off }

    /// With offloads a TCP super-frame fills one vNIC buffer, so a tap guest's buffers are as
    /// large as its memory allows for every ring to be full (at most 16320 bytes: vmxnet3's
    /// 14-bit buffer length, a multiple of 64), and never smaller than the MTU needs.
    static func superFrameBufferSize(_ c: VirtualNIC.Configuration) -> Int {
        let buffers = (c.txQueues + c.rxQueues) * c.ringSize
        let fitting = ((c.memoryBytes - (1 << 20)) / buffers) & ~63
        return max(c.bufferSize, min(16320, fitting))
    }

    /// Options only the frame workloads take, refused for tap where they would be ignored.
    var workloadOptionsGiven: [String] {
        var given = senderOptionsGiven
        if count != 10000 { given.append("--count") }
        if window != nil { given.append("--window") }
        if untilEof { given.append("--until-eof") }
        if hold { given.append("--hold") }
        if json { given.append("--json") }
        return given
    }

    /// Bridges the attached vNIC to the TAP interface `ifname` (in the namespace `netns`, if given) until SIGINT or SIGTERM (exit 0)
    /// or the host goes away, or the interface is deleted (exit 2, one line on standard error).
    func runTAP(_ nic: VirtualNIC) throws {
        let tap: TAPDevice
        let bridge: TAPBridge
        do {
            // Inside --netns the interface is created (and given its MAC and MTU) there; the
            // descriptor stays bound to it when this thread returns to its own namespace.
            func open() throws -> (TAPDevice, TAPBridge) {
                let tap = try TAPDevice(name: ifname ?? "", virtioNetHeader: tapOffloads)
                return (tap, try TAPBridge(nic: nic, tap: tap, offloads: tapOffloads))
            }
            if let netns {
                (tap, bridge) = try NetworkNamespace.run(in: NetworkNamespace.path(ofNamed: netns), open)
            } else {
                (tap, bridge) = try open()
            }
        } catch {
            throw CommandFailure("guest \(name): TAP interface \(ifname ?? "(any)")\(netns.map { " in namespace \($0)" } ?? ""): \(error)")
        }
        let termination = try TerminationCheck()
        standardError(
            "attached as \(nic.mac); bridged to TAP \(tap.interfaceName) (MTU \(nic.configuration.mtu), offloads "
                + (bridge.offloadsEnabled ? "on: super-frames up to \(nic.configuration.bufferSize) bytes)" : "off)"))
        // An idle turn lasts `TAPBridge.stopCheckMilliseconds`, so an idle bridge looks on every turn.
        let ending: TAPBridge.Ending
        do {
            ending = try bridge.run(shouldStop: { termination.requested })
        } catch {
            throw CommandFailure("guest \(name): TAP \(tap.interfaceName): \(error)")
        }
        let c = bridge.counters
        print(
            "tap \(tap.interfaceName): \(c.framesToVNIC) frames to the vNIC, \(c.framesToTAP) to the kernel; dropped: "
                + "\(c.malformedFromTAP) malformed from the kernel, \(c.badVirtioHeader) with a bogus virtio-net header, "
                + "\(c.transmitRingFull) on a full TX ring, \(c.tapQueueFull) on a full TAP queue; offloaded: \(c.superFramesToVNIC) super-frames, "
                + "\(c.checksumOffloadsToVNIC) checksums to the vNIC, \(c.checksumValidToTAP) checksum-valid to the kernel; "
                + "coalesced: \(c.segmentsCoalesced) segments into \(c.superFramesToTAP) super-frames to the kernel"
        )
        if case .hostGone(let why) = ending { throw CommandFailure("guest \(name): \(why)") }
    }
}
