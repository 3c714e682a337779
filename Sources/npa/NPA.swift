import ArgumentParser

/// `npa`: the command line. Each subcommand is a user of the public APIs (host daemon, guest
/// API, workloads); none has a private path into them.
@main
struct NPA: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "npa",
        abstract: "NPA-Swift: VMware's Network Plugin Architecture in user space.",
        subcommands: [Demo.self, Host.self, Guest.self, Status.self, VNIC.self, Soak.self, Bench.self])
}
