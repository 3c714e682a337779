import ArgumentParser
import Foundation
import NPAAdmin
import NPAControlProtocol
import NPASystem

/// `npa events`: prints what happened on a host — attaches, detaches, switch phases with their
/// times, refusals with their reasons, plugin faults, VF resets, guests' faults and error
/// states, migrations — from the last `event_log_size` events it keeps, and with `--follow`
/// goes on printing new ones as they come. A reader that falls more than that far behind is
/// told how many it missed.
struct Events: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a host's event log (attach, detach, switch phases, refusals, faults, VF resets, migrations).",
        discussion: """
            Asks the host's admin socket (mode 0600: run as the host's user). The host keeps the last \
            event_log_size events (default 1024); when some were let go before they were read, a line \
            says how many ("... N events lost"; with --json: {"lost": N, "capacity": M}). Times are UTC.
            """)

    @OptionGroup var socket: AdminSocketOptions

    @Flag(help: "Keep polling the host and print new events as they come, until interrupted.")
    var follow = false

    @Flag(help: "Print one JSON object per event, one per line.")
    var json = false

    @Option(help: "Print only the events after this sequence number (0: every event the host holds).")
    var after: UInt64 = 0

    @Option(help: "With --follow: milliseconds between polls of the host.")
    var intervalMs: Int = 200

    func validate() throws {
        guard (1...60_000).contains(intervalMs) else { throw ValidationError("--interval-ms must be 1...60000") }
    }

    func run() throws {
        let admin = socket.client
        var cursor = after
        while true {
            let page: HostEventBatch
            do { page = try admin.events(after: cursor) } catch { throw CommandFailure("\(error)") }
            let lost = page.lost(after: cursor)
            if lost > 0 {
                print(
                    json
                        ? "{\"capacity\":\(page.capacity),\"lost\":\(lost)}"
                        : "… \(lost) events lost (the host keeps the last \(page.capacity))")
            }
            for event in page.events { print(json ? event.json() : event.line) }
            fflush(nil)  // a reader on a pipe sees each event as it comes
            cursor = page.cursor(after: cursor)
            if cursor < page.latest && !page.events.isEmpty { continue }  // more pages held now
            guard follow else { return }
            // The CLI's pacing between polls: the host keeps the events meanwhile.
            EngineThread.sleep(microseconds: UInt32(intervalMs) * 1000)
        }
    }
}
