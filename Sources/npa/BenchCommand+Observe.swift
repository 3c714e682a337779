import Foundation

/// `npa bench --observe`: the cost of operating a host, measured. For each frame size and mode,
/// `repeats` rounds of a plain full-rate run followed at once by one run per observer (a
/// metrics scrape every second...), each a fresh host; the median of each, and each observed
/// run's throughput and efficiency relative to the plain one.
extension Bench {
    var parsedObservers: [BenchObserver]? {
        guard let observe else { return [] }
        let names = observe.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        let observers = names.compactMap(BenchObserver.init(rawValue:))
        return observers.count == names.count && !observers.isEmpty ? observers : nil
    }

    func measureObserved(_ setup: BenchSetup, frameBytes: Int, modes: [Mode], observers: [BenchObserver], into report: inout BenchReport)
        throws
    {
        for mode in modes {
            var runs: [BenchObserver?: [BenchRun]] = [:]
            for _ in 0..<repeats {
                for observer in [nil] + observers.map(Optional.some) {
                    let run = try setup.measure(
                        frameBytes: frameBytes, passthrough: mode == .passthrough, rate: nil, seconds: duration, observer: observer)
                    runs[observer, default: []].append(run)
                }
            }
            func median(_ observer: BenchObserver?) -> BenchRun {
                let sorted = runs[observer]!.sorted { $0.mpps < $1.mpps }
                return sorted[sorted.count / 2]
            }
            let plain = median(nil)
            report.add(observed: plain, against: plain, ghz: report.machine.ghz)
            for observer in observers { report.add(observed: median(observer), against: plain, ghz: report.machine.ghz) }
        }
    }
}
