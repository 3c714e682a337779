import Foundation
import Glibc

/// Reads CPU time the kernel keeps in /proc: a thread of this process by name
/// (/proc/self/task/TID/stat, user and system time) and the machine-wide softirq and hardirq
/// time (/proc/stat). Read-only; clock ticks converted to seconds.
enum ProcCPUTimes {
    /// User and system seconds of one thread.
    struct ThreadTimes {
        var user = 0.0
        var system = 0.0
        var total: Double { user + system }
        static func - (a: ThreadTimes, b: ThreadTimes) -> ThreadTimes {
            ThreadTimes(user: a.user - b.user, system: a.system - b.system)
        }
    }

    static let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))

    /// The id of this process's thread named `name` (its comm, at most 15 bytes), or nil.
    static func threadID(named name: String) -> Int? {
        guard let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task") else { return nil }
        return tasks.compactMap(Int.init).first { tid in
            (try? String(contentsOfFile: "/proc/self/task/\(tid)/comm", encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines) == name
        }
    }

    /// The user and system time of thread `tid` of this process so far (zero if it is gone).
    static func thread(_ tid: Int) -> ThreadTimes {
        guard let stat = try? String(contentsOfFile: "/proc/self/task/\(tid)/stat", encoding: .utf8) else { return ThreadTimes() }
        return parseStat(stat) ?? ThreadTimes()
    }

    /// utime and stime (fields 14 and 15) of a /proc/…/stat line; the command name (field 2) is
    /// in parentheses and may hold spaces, so fields are counted after its closing parenthesis.
    static func parseStat(_ line: String) -> ThreadTimes? {
        guard let close = line.lastIndex(of: ")") else { return nil }
        let fields = line[line.index(after: close)...].split(separator: " ")
        // After ")" come field 3 (state) onwards: utime is field 14, the 12th here.
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return ThreadTimes(user: user / ticksPerSecond, system: system / ticksPerSecond)
    }

    /// Seconds all CPUs spent in softirq and hardirq context so far (machine-wide: nothing
    /// here says on whose behalf).
    static func interruptSeconds() -> (softirq: Double, irq: Double) {
        guard let stat = try? String(contentsOfFile: "/proc/stat", encoding: .utf8) else { return (0, 0) }
        return parseInterrupts(stat)
    }

    /// The `cpu` line of /proc/stat: user nice system idle iowait irq softirq …
    static func parseInterrupts(_ stat: String) -> (softirq: Double, irq: Double) {
        guard let line = stat.split(separator: "\n").first(where: { $0.hasPrefix("cpu ") }) else { return (0, 0) }
        let fields = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard fields.count >= 7 else { return (0, 0) }
        return (fields[6] / ticksPerSecond, fields[5] / ticksPerSecond)
    }
}
