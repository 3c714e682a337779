import NPAShell
import NPATestSupport
import Testing

/// Frames between two guests of one host, both ways, counted: each round sends frames from `a`
/// to `b` and from `b` to `a` (each frame's payload names its round and index), expects each side
/// to receive exactly those, in order, and the host's counters of `a` (`tx_frames`, `rx_frames`)
/// to have grown by exactly every frame exchanged since the first round.
struct CountedExchange {
    let host: TestHost
    let a: VirtualNIC
    let b: VirtualNIC
    private var round: UInt8 = 0
    private var baseline: (tx: UInt64, rx: UInt64)?
    /// Frames exchanged each way so far.
    private(set) var total = 0

    init(host: TestHost, a: VirtualNIC, b: VirtualNIC) {
        self.host = host
        self.a = a
        self.b = b
    }

    /// The next round's frames, `count` each way; taking them starts the count if it has not.
    mutating func nextRound(_ count: Int) throws -> (ab: [[UInt8]], ba: [[UInt8]]) {
        if baseline == nil {
            let counters = try host.status(of: a.name)?.counters ?? [:]
            baseline = (counters["tx_frames"] ?? 0, counters["rx_frames"] ?? 0)
        }
        round &+= 1
        let (ab, ba) = (a.mac, b.mac)
        func payload(_ i: Int) -> [UInt8] { [round, UInt8(truncatingIfNeeded: i)] + [UInt8](repeating: 0xAB, count: 58) }
        return (
            (0..<count).map { ethernetFrame(to: ba, from: ab, payload: payload($0)) },
            (0..<count).map { ethernetFrame(to: ab, from: ba, payload: payload($0)) }
        )
    }

    /// A round: sends `count` frames each way, then expects them delivered and counted.
    mutating func exchange(_ count: Int, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let round = try nextRound(count)
        #expect(a.send(round.ab) == count, sourceLocation: sourceLocation)
        #expect(b.send(round.ba) == count, sourceLocation: sourceLocation)
        try expectDelivered(round, sourceLocation: sourceLocation)
    }

    /// Expects a round already sent to arrive whole, in order, and the host to have counted it.
    mutating func expectDelivered(_ round: (ab: [[UInt8]], ba: [[UInt8]]), sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(receiveFrames(b, count: round.ab.count) == round.ab, sourceLocation: sourceLocation)
        #expect(receiveFrames(a, count: round.ba.count) == round.ba, sourceLocation: sourceLocation)
        precondition(round.ab.count == round.ba.count, "a round is as many frames each way")
        total += round.ab.count
        let counters = try host.status(of: a.name)?.counters ?? [:]
        let (tx, rx) = ((counters["tx_frames"] ?? 0) &- baseline!.tx, (counters["rx_frames"] ?? 0) &- baseline!.rx)
        #expect(
            tx == UInt64(total) && rx == UInt64(total), "a's counters: \(tx) sent, \(rx) received of \(total)",
            sourceLocation: sourceLocation)
    }
}
