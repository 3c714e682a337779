import NPASystem

/// The running clock of this core, which this VM does not tell: /proc/cpuinfo reports the TSC
/// rate (≈2.6 GHz) while the cores run near 4 GHz, and there are no cycle counters to read.
enum ClockCalibration {
    /// How the figure was obtained, printed next to it.
    static let method = "dependent square-and-add chain, 4 cycles a step, best of 5"

    /// Cycles per nanosecond, from a chain of dependent `x = x*x + 1` steps (imul 3 cycles +
    /// add 1 on x86-64; squaring stops the compiler from folding steps, as it would a linear
    /// chain), timed on the monotonic clock. The best of five runs is the least disturbed one.
    static func gigahertz() -> Double {
        var best = 0.0
        for _ in 0..<5 {
            var x = UInt64(Clock.monotonicNanoseconds() & 0xFF) | 3
            let steps = 50_000_000
            let t0 = Clock.monotonicNanoseconds()
            for _ in 0..<steps { x = x &* x &+ 1 }
            let t1 = Clock.monotonicNanoseconds()
            if x == 42 { print("") }  // keeps the chain alive
            best = max(best, Double(steps) * 4 / Double(t1 - t0))
        }
        return best
    }
}
