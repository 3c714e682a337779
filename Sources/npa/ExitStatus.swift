import ArgumentParser
import Glibc
import NPASystem

/// The exit statuses every `npa` command uses (documented in the README and in `--help`).
enum ExitStatus {
    /// Everything asked for was done and verified.
    static let success: Int32 = 0
    /// The run completed but what it checked did not hold: frames lost, duplicated, reordered,
    /// invalid or dropped (the summary says which).
    static let notVerified: Int32 = 1
    /// The command could not go on: refused by the host, the host gone, a peer never seen, a
    /// file that cannot be written. One line on standard error says why.
    static let failed: Int32 = 2
    // 64 (EX_USAGE) is ArgumentParser's, for usage errors only.
}

/// A failure that is not a usage error: printed as one line on standard error, exit status 2.
/// (ArgumentParser prints a `ValidationError` with the usage text and exits 64; a refusal by
/// the host is not a usage error.)
struct CommandFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Writes one line to standard error.
func standardError(_ line: String) {
    fflush(nil)  // what went to standard output first stays first when both reach one terminal
    StandardStreams.writeToStandardError(Array((line + "\n").utf8))
}
