import ArgumentParser
import Foundation
import NPAAdmin
import NPAControlProtocol
import NPASystem
import SystemPackage

/// `npa capture`: writes a pcap of one vNIC's frames, in whichever mode it runs (emulated:
/// device emulation copies them; passthrough: the NIC's port mirror does) and across switches.
/// This process opens the output and hands its descriptor to the host over the admin socket;
/// the host's writer thread writes the file. Ends after `--count` frames or on SIGINT/SIGTERM,
/// then says on standard error how many frames were written and how many copies were dropped.
struct Capture: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Capture a vNIC's frames into a pcap file (emulated or passthrough, across switches).",
        discussion: """
            Writes a classic pcap (LINKTYPE_ETHERNET, nanosecond timestamps) that tcpdump -r and \
            tshark -r read; -w - writes it to standard output (pipe it into tcpdump -r -). Stops \
            after --count frames or on Ctrl-C. When the host's writer falls behind, capture copies \
            are dropped (never the vNIC's frames) and counted: the summary and the vNIC's \
            capture_dropped counter in npa status say how many.
            """)

    @Argument(help: "The vNIC (guest name) to capture.")
    var name: String

    @OptionGroup var socket: AdminSocketOptions

    @Option(name: .customShort("w"), help: "The pcap file to write ('-': standard output).")
    var write: String

    @Option(help: "Stop after this many frames (default: until interrupted).")
    var count: UInt64?

    @Option(help: "Which frames: rx (the guest received), tx (it sent) or both.")
    var direction: String = "both"

    func validate() throws {
        guard CaptureDirection(argument: direction) != nil else {
            throw ValidationError("--direction must be rx, tx or both, not '\(direction)'")
        }
        if count == 0 { throw ValidationError("--count must be at least 1 (leave it out to capture until interrupted)") }
    }

    func run() throws {
        // A file is written under a temporary name beside it and takes its name only once the
        // host accepted the capture: a refused capture (a mistyped guest, no host) leaves an
        // earlier file of that name as it was.
        let output: FileDescriptor
        let pending = write == "-" ? nil : Self.pendingPath(for: write)
        if let pending {
            do {
                output = try FileDescriptor.open(
                    pending, .writeOnly, options: [.create, .truncate], permissions: [.ownerReadWrite, .groupRead, .otherRead])
            } catch {
                throw CommandFailure("cannot open \(write) for writing: \(error)")
            }
        } else {
            output = .standardOutput
        }
        defer { if pending != nil { try? output.close() } }
        // Ctrl-C ends the capture cleanly: the host flushes what it holds and says what it wrote.
        let interrupted = try EventNotifier()
        TerminationSignals.deliver(to: interrupted.fd.rawValue)
        let request = CaptureRequest(vnic: name, direction: CaptureDirection(argument: direction)!, count: count ?? 0)
        let session: CaptureSession
        do {
            session = try CaptureSession(
                socketPath: socket.adminSocket ?? HostSocketPath.admin(forControl: socket.host), request: request, output: output)
        } catch {
            if let pending { unlink(pending) }
            throw CommandFailure("\(error)")
        }
        if let pending, rename(pending, write) != 0 {
            let reason = String(cString: strerror(errno))
            _ = try? session.stop()
            unlink(pending)
            throw CommandFailure("cannot write \(write): \(reason)")
        }
        standardError("npa: \(session.note)")
        let destination = write == "-" ? "standard output" : write
        let outcome: CaptureOutcome
        do {
            switch interrupted.wait(timeoutMilliseconds: -1, orHangUpOf: nil, orReadable: session.descriptor) {
            case .signalled: outcome = try session.stop()
            default: outcome = try session.waitForEnd(timeoutMilliseconds: 0) ?? session.stop()
            }
        } catch let failure as AdminClient.Failure where failure == .noAnswer {
            throw CommandFailure("the host stopped (or stopped answering) during the capture: what it wrote is in \(destination)")
        } catch { throw CommandFailure("\(error)") }
        standardError("npa: \(outcome.frames) frames written to \(destination), \(outcome.dropped) capture copies dropped")
        if !outcome.failure.isEmpty { throw CommandFailure(outcome.failure) }
    }

    /// A name beside `path`, hidden and unique to this process, for the file until it is accepted.
    static func pendingPath(for path: String) -> String {
        let url = URL(fileURLWithPath: path)
        let directory = url.deletingLastPathComponent().path
        return directory + "/." + url.lastPathComponent + ".npa-capture-\(getpid())"
    }
}
