import Foundation
import Logging
import NPAControlProtocol
@testable import NPAHost
import NPARingFormats
import NPAShell
import NPASystem
import NPATestSupport
import NPAWorkload
import Testing

/// A vNIC's device emulation can be stopped, saved, encoded, decoded and restored into a new
/// device in the middle of a traffic run, and the stream carries on as if nothing happened:
/// nothing lost, duplicated or reordered, counters continuing from the old device's.
@Suite(.serialized) struct DeviceStateTests {
    func attach(_ host: SteppedTestHost, _ name: String, queues: Int) throws -> VirtualNIC {
        try GuestSpec(name, queues: queues, ringSize: 256, memoryMiB: 8).attach(to: host.socketPath)
    }

    /// Checkpoints guest `name`'s device on the host's thread; returns the counters of the old
    /// device at the swap and of the new one right after it.
    func checkpoint(_ host: SteppedTestHost, _ name: String) throws -> (before: DeviceCounters, after: DeviceCounters) {
        try host.onHostThread { daemon in
            let old = try #require(daemon.device(named: name))
            let before = old.counters
            let restored = try daemon.checkpointAndRestore(old)
            #expect(restored !== old && daemon.device(named: name) === restored)
            #expect(restored.port == old.port && restored.mac == old.mac && restored.isActive)
            return (before, restored.counters)
        }
    }

    @Test func aStreamCarriesOnAcrossCheckpointsOfTheReceiverAndTheSenderLosingNothing() throws {
        let host = try SteppedTestHost()
        defer { host.stop() }
        let a = try attach(host, "a", queues: 2), b = try attach(host, "b", queues: 2)
        let total = 8000, flows = 2
        var sent = [Int](repeating: 0, count: flows)
        var verifier = FlowVerifier()
        var checkpoints = 0
        let (dst, src) = (b.mac, a.mac)
        // b receives only when a's rings are full, so checkpoints find frames held back in a's TX
        // rings (b had no buffer), frames in flight and completions not yet seen by either guest.
        // A generous bound, never a synchronisation: a device restored at the wrong ring position
        // stalls the stream, and the test must then fail, not hang.
        let deadline = ContinuousClock.now + .seconds(60)
        while sent.reduce(0, +) < total && ContinuousClock.now < deadline {
            var progress = 0
            for flow in 0..<flows where sent[flow] < total / flows {
                let first = UInt64(sent[flow])
                let n = a.transmit(queue: flow, count: min(32, total / flows - sent[flow])) { i, buffer in
                    TrafficFrame.write(
                        into: buffer, destination: dst, source: src, flow: UInt32(flow), sequence: first + UInt64(i), length: 128)
                }
                sent[flow] += n
                progress += n
            }
            if progress == 0 {
                _ = a.waitForTransmitSpace(queue: 0, timeoutMilliseconds: 5)
                b.receive(maxFrames: 64, timeoutMilliseconds: 0) { verifier.record($0.bytes) }
            }
            if sent.reduce(0, +) >= (checkpoints + 1) * 600 {
                let (before, after) = try checkpoint(host, checkpoints % 2 == 0 ? "b" : "a")
                #expect(after == before, "the restored device's counters continue from the old one's")
                checkpoints += 1
            }
        }
        #expect(sent.reduce(0, +) == total, "the stream stalled after \(checkpoints) checkpoints")
        let drops = try receiveUntilAccounted(b, &verifier, total: total)
        #expect(checkpoints >= 12)
        #expect(
            verifier.unique == total && verifier.duplicates == 0 && verifier.outOfOrder == 0 && verifier.invalid == 0 && verifier.gaps == 0)
        #expect(drops.isEmpty, "\(drops)")
        #expect(try a.deviceCounters()["tx_frames"] == UInt64(total))
        #expect(try b.deviceCounters()["rx_frames"] == UInt64(total))
        #expect(try b.deviceCounters()["sender_holds"] ?? 0 > 0, "b never held a back: no checkpoint found frames waiting")
        #expect(a.flush(timeoutMilliseconds: 10_000), "every frame a sent was completed")
    }

    @Test func aStateThatDoesNotFitTheGuestIsRefusedAndChangesNothing() throws {
        let host = try SteppedTestHost()
        defer { host.stop() }
        let a = try attach(host, "a", queues: 1), b = try attach(host, "b", queues: 1)
        let refusals: [DeviceStateError] = try host.onHostThread { daemon in
            let device = try #require(daemon.device(named: "b"))
            device.stop()
            let saved = device.save()
            device.resume()
            var outside = saved
            outside.queues.receive[0].ringBase = UInt64(device.region.size)
            var taken = saved
            taken.identity.mac = a.mac
            var vectors = saved
            vectors.interrupts.vectorCount += 1
            var out: [DeviceStateError] = []
            for state in [outside, taken, vectors] {
                do {
                    _ = try EmulatedDevice(
                        restoring: state, handles: device.handles, policy: device.policy, maxQueues: 4, vswitch: daemon.dataPath.vswitch,
                        admission: daemon.admission,
                        logger: daemon.logger)
                } catch let error as DeviceStateError {
                    out.append(error)
                }
            }
            return out
        }
        #expect(refusals.count == 3)
        if refusals.count == 3 {
            #expect(refusals[0] == .doesNotFit(field: "queues.receive[0].ringBase", reason: "the ring lies outside guest memory"))
            #expect(refusals[1] == .refusedByPolicy("MAC \(a.mac) is already used by another vNIC"))
            guard case .doesNotFit(field: "interrupts.vectorCount", _) = refusals[2] else {
                Issue.record("\(refusals[2])")
                return
            }
        }
        // b is still b, on its port, and a's MAC is still a's.
        let f = ethernetFrame(to: b.mac, from: a.mac)
        #expect(a.send([f]) == 1)
        #expect(receiveFrames(b, count: 1) == [f])
        #expect(try b.deviceCounters()["rx_frames"] == 1)
    }

    /// Migration's restore: no register page and no port handed over. The device gets a new
    /// port that carries its MAC and filters and a new register page with its interrupt masks,
    /// and saving it again gives back exactly the state it was restored from.
    @Test func aStateRestoredOntoANewPortAndRegisterPageSavesBackTheSame() throws {
        let vswitch = VirtualSwitch()
        let state = DeviceStateCodecTests.sample()
        let policy = GuestPolicy(allowedVLANs: Set(state.filters.vlans))
        var logger = Logger(label: "npa.test.device-state")
        logger.logLevel = .critical
        let handles = EmulatedDevice.Handles(
            region: try SharedMemory(name: "npa-test-device-state", size: 1 << 20), doorbell: try EventNotifier(),
            interrupts: try (0..<Int(state.interrupts.vectorCount)).map { _ in try EventNotifier() }, registerPage: nil, port: nil)
        let device = try EmulatedDevice(
            restoring: state, handles: handles, policy: policy, maxQueues: 4, vswitch: vswitch, admission: Admission(vswitch: vswitch),
            logger: logger)
        #expect(vswitch.owner(of: state.identity.mac) == device.port)
        #expect(vswitch.portMAC[device.port] == state.identity.mac.value)
        for vlan in state.filters.vlans { #expect(vswitch.isMember(device.port, vlan: vlan)) }
        #expect(!vswitch.isMember(device.port, vlan: 11))
        for v in 0..<VMXNET3.RegisterPage.maximumVectors {
            let masked = v >= Int(state.interrupts.vectorCount) || state.interrupts.masked & (1 << UInt32(v)) != 0
            #expect(device.registerWord(VMXNET3.RegisterPage.interruptMask(v)).pointee == (masked ? 1 : 0), "IMR \(v)")
        }
        #expect(device.state == .failed(state.lifecycle.failureReason))
        device.stop()
        #expect(device.save() == state)
        device.resume()
        #expect(device.state == .failed(state.lifecycle.failureReason))
    }
}
