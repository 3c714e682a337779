import ArgumentParser
import Foundation
import NPAAdmin
import NPAControlProtocol

/// `npa policy set|show`: changes or shows guests' policies on a running host. A change takes
/// effect at once in both modes and lasts until the host stops; the config file (`default_policy`,
/// `guests:`) stays the default at start.
struct Policy: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Change or show guests' policies on a running host (VLANs, MACs, promiscuous, passthrough).",
        discussion: """
            Asks the host's admin socket (mode 0600: run as the host's user); a guest's control connection may not. \
            A change lasts until the host stops: the config file stays the default at start.
            """,
        subcommands: [SetPolicy.self, ShowPolicy.self])

    /// `npa policy set GUEST [--vlans ...] [--macs ...] [--promiscuous B] [--passthrough B]`.
    struct SetPolicy: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set",
            abstract: "Change a guest's policy now, in both modes; options not given stay as they are.",
            discussion: """
                A VLAN removed stops that VLAN's frames at once, on the emulated path and in the NIC's embedded \
                switch; promiscuous revoked turns it off; passthrough revoked switches the guest out to emulation \
                and refuses switch-ins. A change the running state contradicts (the guest's MAC left out of --macs, \
                a switch under way) is refused whole: nothing changes.
                """)

        @Argument(help: "The guest's name (attached, or named under guests: in the config).")
        var guest: String

        @Option(help: "The VLANs the guest may join, comma-separated (0, untagged, is always allowed): e.g. 0,10.")
        var vlans: String?

        @Option(help: "The MACs the guest may use, comma-separated (the first is its default), or any.")
        var macs: String?

        @Option(help: "May the guest put its vNIC in promiscuous mode? (true or false)")
        var promiscuous: Bool?

        @Option(help: "May the guest be switched to a VF? (true or false)")
        var passthrough: Bool?

        @OptionGroup var socket: AdminSocketOptions

        func change() throws -> PolicyChange {
            var change = PolicyChange(guest: guest, allowPromiscuous: promiscuous, allowPassthrough: passthrough)
            if let vlans {
                change.vlans = try vlans.split(separator: ",", omittingEmptySubsequences: false).map { item in
                    let text = item.trimmingCharacters(in: .whitespaces)
                    guard let vlan = UInt16(text) else { throw ValidationError("--vlans: '\(text)' is not a VLAN ID from 0 to 4094") }
                    return vlan
                }
            }
            if let macs {
                if macs.lowercased() == "any" {
                    change.macs = .any
                } else {
                    change.macs = .only(
                        try macs.split(separator: ",", omittingEmptySubsequences: false).map { item in
                            let text = item.trimmingCharacters(in: .whitespaces)
                            guard let mac = MACAddress(text) else {
                                throw ValidationError("--macs: '\(text)' is not a MAC like 02:00:00:00:00:01 (or give any)")
                            }
                            return mac
                        })
                }
            }
            return change
        }

        func validate() throws {
            // Nothing to change is a usage error, caught before the host is asked (which would refuse it too).
            guard vlans != nil || macs != nil || promiscuous != nil || passthrough != nil else {
                throw ValidationError("no policy change for guest '\(guest)': give --vlans, --macs, --promiscuous or --passthrough")
            }
            _ = try change()
        }

        func run() throws {
            do { print(try socket.client.setPolicy(try change())) } catch { throw CommandFailure("\(error)") }
        }
    }

    /// `npa policy show [GUEST] [--json]`.
    struct ShowPolicy: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "show",
            abstract: "Show the policies a running host applies now: every known guest's, or one guest's.")

        @Argument(help: "Only this guest.")
        var guest: String?

        @Flag(help: "Print {\"guests\": [...]} as JSON.")
        var json = false

        @OptionGroup var socket: AdminSocketOptions

        func run() throws {
            let report: PolicyReport
            do { report = try socket.client.policies(guest: guest) } catch { throw CommandFailure("\(error)") }
            if json {
                print(report.json())
            } else {
                print(PolicyTable.render(report))
                print("(source live: changed by npa policy set; it lasts until the host stops, the config file stays the default at start)")
            }
        }
    }
}

/// Renders a policy report as the fixed-width table `npa policy show` prints: one line per guest.
enum PolicyTable {
    static func render(_ report: PolicyReport) -> String {
        var lines = ["GUEST            SOURCE   ATTACHED  VLANS            PROMISC  PASSTHROUGH  MACS"]
        for g in report.guests {
            func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
            lines.append(
                pad(g.name, 17) + pad(g.source, 9) + pad(g.attached ? "yes" : "no", 10)
                    + pad(g.vlans.map(String.init).joined(separator: ","), 17)
                    + pad(g.promiscuous ? "yes" : "no", 9) + pad(g.passthrough ? "yes" : "no", 13)
                    + (g.macs?.joined(separator: ",") ?? "any"))
        }
        return lines.joined(separator: "\n")
    }
}
