import NPAControlProtocol
import NPAShell
import NPATestSupport
import Testing

@Suite struct SmokeTests {
    @Test func twoGuestsExchangeOneFrame() throws {
        let host = try TestHost()
        defer { host.stop() }
        let a = try VirtualNIC.attach(hostSocket: host.socketPath, configuration: .init(name: "a"))
        let b = try VirtualNIC.attach(hostSocket: host.socketPath, configuration: .init(name: "b"))
        var frame = b.mac.bytes + a.mac.bytes + [0x88, 0xB5]
        frame += [UInt8](repeating: 7, count: 50)
        #expect(a.send([frame]) == 1)
        let got = b.receive(maxFrames: 10, timeoutMilliseconds: 10_000)
        #expect(got == [frame])
    }
}
