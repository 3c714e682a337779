import NPAControlProtocol
import NPAHost
import NPANICModel
import NPAShell
import NPATestSupport
import Testing

/// The PF as the vswitch's uplink: emulated guests and guests on VFs reach each other through
/// the host's vswitch, the PF's queues and the NIC's embedded switch.
@Suite(.serialized) struct PFUplinkTests {
    @Test(arguments: NICModelRegistry.names)
    func emulatedAndVFGuestsReachEachOtherThroughThePF(_ model: String) throws {
        let host = try TestHost(configuration: .withNIC(model: model, vfs: 4))
        defer { host.stop() }
        let nic = try #require(host.daemon.nics.first)
        let emulated = try attach(host, "emu", mac: "02:00:00:00:80:01")
        // The PF driver's part for the VF guest is done by the test until the host does it.
        let onVF = try VFGuest(nic: nic, vf: 2, mac: MACAddress("02:00:00:00:80:02")!)

        let down = (0..<50).map { ethernetFrame(to: onVF.mac, from: emulated.mac, payload: [UInt8($0)] + Array(repeating: 1, count: 60)) }
        #expect(emulated.send(down) == 50)
        #expect(onVF.receive(count: 50) == down)

        let up = (0..<50).map { ethernetFrame(to: emulated.mac, from: onVF.mac, payload: [UInt8($0)] + Array(repeating: 2, count: 60)) }
        var sent = 0
        while sent < up.count { sent += onVF.send(Array(up[sent...])) }
        #expect(receiveFrames(emulated, count: 50) == up)

        // A broadcast from the VF guest floods the vswitch too; one from the emulated guest reaches the VF.
        let fromVF = ethernetFrame(to: .broadcast, from: onVF.mac)
        #expect(onVF.send([fromVF]) == 1)
        #expect(receiveFrames(emulated, count: 1) == [fromVF])
        let fromEmulated = ethernetFrame(to: .broadcast, from: emulated.mac)
        #expect(emulated.send([fromEmulated]) == 1)
        #expect(onVF.receive(count: 1) == [fromEmulated])

        // Passthrough frames crossed no device-emulation TX: only the emulated guest's own count.
        #expect(try emulated.deviceCounters()["tx_frames"] == 51)
        #expect(try emulated.deviceCounters()["rx_frames"] == 51)
        #expect(nic.counters(vf: 2).rxFrames == 51)
        #expect(nic.pfReceive.drops == 0)
    }
}
