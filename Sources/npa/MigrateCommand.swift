import ArgumentParser
import Foundation
import NPAAdmin
import NPAControlProtocol
import NPASystem

/// `npa migrate NAME --host A_SOCKET --to B_ADDRESS`: asks host A to live-migrate the vNIC of
/// guest NAME to host B (B's migration listener: ADDR:PORT or a Unix socket path), then follows
/// it in A's status until it completes or fails. The guest process keeps running throughout.
struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Live-migrate a guest's vNIC to another host.",
        discussion: """
            Both hosts need the same migration_key_file; the destination listens with \
            npa host --listen ADDR:PORT (or migration_listen). Asks the source host's admin socket \
            (mode 0600: run as the host's user). Exit status 0: the guest runs at the destination; \
            1: the migration failed and the guest runs where it was (the reason is printed); \
            2: it could not be asked for.
            """)

    @Argument(help: "The guest's (vNIC's) name.")
    var name: String

    @OptionGroup var socket: AdminSocketOptions

    @Option(help: "The destination host's migration listener: ADDR:PORT or a Unix socket path.")
    var to: String

    @Option(help: "Seconds to wait for the migration to end before giving up on following it.")
    var timeout: Double = 60

    @Flag(help: "Print the migration (phases with their times, downtime, frames forwarded) as JSON.")
    var json = false

    func run() throws {
        let admin = socket.client
        let migration: StatusReport.Migration
        do {
            let id = try admin.migrate(name: name, to: to)
            let deadline = Clock.monotonicNanoseconds() + UInt64(max(timeout, 0) * 1e9)
            while true {
                if let m = try admin.migration(id: id), m.isFinished {
                    migration = m
                    break
                }
                guard Clock.monotonicNanoseconds() < deadline else {
                    throw CommandFailure("migration \(id) of '\(name)' did not end within \(timeout) s (npa status follows it)")
                }
                // The host answers status between passes; a person waits for phases of
                // milliseconds, so asking every 10 ms costs it nothing.
                EngineThread.sleep(microseconds: 10_000)
            }
        } catch let error as CommandFailure {
            throw error
        } catch {
            throw CommandFailure("\(error)")
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: (try? encoder.encode(migration)) ?? Data(), as: UTF8.self))
        } else {
            print(MigrationText.render(migration))
        }
        if migration.phase != "completed" { throw ExitCode(ExitStatus.notVerified) }
    }
}

/// A migration as lines a person reads.
enum MigrationText {
    static func render(_ m: StatusReport.Migration) -> String {
        var lines: [String] = []
        let verdict =
            m.phase == "completed"
            ? "'\(m.vnic)' now runs at \(m.peer)"
            : "'\(m.vnic)' \(m.committed ? "runs at \(m.peer), but" : "stays where it was:") \(m.error ?? m.phase)"
        lines.append("migration \(m.id): \(verdict)")
        // Padded by hand: Foundation on Linux ignores the width of a `%@` conversion.
        func row(_ name: String, _ ms: Double) -> String {
            "  " + name.padding(toLength: 16, withPad: " ", startingAt: 0) + String(format: " %9.2f ms", ms)
        }
        for p in m.phases { lines.append(row(p.name, p.milliseconds)) }
        lines.append(row("total", m.totalMilliseconds))
        if let d = m.deviceDowntimeMilliseconds { lines.append(String(format: "  device downtime  %9.2f ms", d)) }
        lines.append("  frames forwarded from the source: \(m.framesForwarded), lost: \(m.framesLost)")
        return lines.joined(separator: "\n")
    }
}
