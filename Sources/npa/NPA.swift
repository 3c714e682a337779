import ArgumentParser
import Glibc

/// `npa`: the command line. Each subcommand is a user of the public APIs (host daemon, guest
/// API, workloads); none has a private path into them.
@main
struct NPA: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "npa",
        abstract: "NPA-Swift: VMware's Network Plugin Architecture in user space.",
        discussion: """
            Exit status, for every command: 0 everything asked for was done and verified; 1 the run \
            finished but did not verify (frames lost, duplicated, reordered, invalid or dropped; an \
            invariant broken); 2 the command could not go on (refused by the host, the host gone or \
            unreachable, a file that cannot be written), with one line on standard error; 64 a \
            usage error.
            """,
        subcommands: [
            Demo.self, Host.self, Guest.self, Status.self, VNIC.self, Events.self, Capture.self, Policy.self, Migrate.self, Soak.self,
            Bench.self,
            Plugin.self,
        ])

    /// ArgumentParser's own `main`, except that a `CommandFailure` is one line on standard error
    /// and exit status 2 (see `ExitStatus`), not "Error: ..." and 1.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let failure as CommandFailure {
            standardError("npa: \(failure)")
            Glibc.exit(ExitStatus.failed)
        } catch {
            exit(withError: error)
        }
    }
}
