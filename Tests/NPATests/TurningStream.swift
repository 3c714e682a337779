/// A guest's traffic that a wire test keeps going turn by turn (`OneGuestStream`,
/// `TwoWayStream`): neither sender may pause while a guest migrates, so the test waits for a
/// migration by turning its stream.
protocol TurningStream {
    /// One turn: sends what is due by now, receives what has arrived.
    mutating func turn()
}

extension TurningStream {
    /// Turns until `condition` holds (checked every turn), or a generous deadline passes.
    mutating func run(until condition: (Self) -> Bool) -> Bool {
        let deadline = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < deadline {
            turn()
            if condition(self) { return true }
        }
        return false
    }
}
