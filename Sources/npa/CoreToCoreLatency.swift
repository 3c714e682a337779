import NPASystem

/// How long a cache line takes to go from one CPU to another and back: every descriptor and
/// frame the data paths hand between a guest and an engine pays this. On a VM it depends on
/// where the hypervisor puts the vCPUs (SMT siblings share a cache; other core complexes do
/// not) and can change from one minute to the next, so `npa bench` measures and prints it.
enum CoreToCoreLatency {
    /// Median of five measurements of `rounds` ping-pongs on one cache line between `a` and `b`.
    static func roundTripNanoseconds(between a: Int, and b: Int, rounds: Int = 200_000) -> Double {
        var samples: [Double] = []
        for _ in 0..<5 { samples.append(measure(a, b, rounds: rounds)) }
        return samples.sorted()[2]
    }

    /// Whether runs met the same vCPU placement: their round trips lie within a factor of 1.5
    /// (the two placements of this VM differ by a factor of five), or were not measured.
    static func samePlacement(_ roundTrips: [Double?]) -> Bool {
        let known = roundTrips.compactMap { $0 }
        guard let low = known.min(), let high = known.max(), low > 0 else { return true }
        return high / low <= 1.5
    }

    /// Two threads take turns incrementing one word: the pinger sees even values, the ponger odd.
    private static func measure(_ a: Int, _ b: Int, rounds: Int) -> Double {
        let words = Shared(UnsafeMutablePointer<UInt64>.allocate(capacity: 8))  // one cache line
        defer { words.pointer.deallocate() }
        words.pointer.initialize(repeating: 0, count: 8)
        let turn = UnsafeMutableRawPointer(words.pointer).assumingMemoryBound(to: UInt32.self)
        let flag = Shared(turn)
        let ponger = EngineThread.start(name: "npa-pong") { bounce(flag.pointer, from: 1, rounds: rounds) }
        let pinger = EngineThread.start(name: "npa-ping") {
            let start = Clock.monotonicNanoseconds()
            bounce(flag.pointer, from: 0, rounds: rounds)
            words.pointer[7] = Clock.monotonicNanoseconds() - start
        }
        try? EngineThread.pin(ponger, toCPU: b)
        try? EngineThread.pin(pinger, toCPU: a)
        EngineThread.join(pinger)
        EngineThread.join(ponger)
        return Double(words.pointer[7]) / Double(rounds)
    }

    private static func bounce(_ flag: UnsafeMutablePointer<UInt32>, from first: UInt32, rounds: Int) {
        for i in stride(from: first, to: UInt32(2 * rounds), by: 2) {
            while SharedWord.loadAcquire(flag) != i { CPU.relax() }
            SharedWord.storeRelease(flag, i + 1)
        }
    }
}

/// A pointer handed to threads that are joined before the memory goes away.
private struct Shared<T>: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<T>
    init(_ pointer: UnsafeMutablePointer<T>) { self.pointer = pointer }
}
