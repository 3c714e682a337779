import Foundation
import NPAMigration
import NPASystem

/// A fake destination host for failure tests: a `MigrationListener` with the right key, on a
/// Unix socket path of its own, served by one thread that answers one migration as a real
/// destination would up to a chosen point and then fails the way the test asks. It touches
/// nothing of the source host; the source sees only what a destination would send.
///
/// The script is played once, for the first connection. `release()` lets a script waiting on
/// the test (`.closeWhenReleased`, `.silentUntilReleased`) go on; `finish()` releases it and
/// joins the thread, which closes the connection and the listener.
package final class ScriptedDestination: @unchecked Sendable {
    /// How far it answers as a destination would, and what it does then.
    package enum Script: Sendable {
        /// Takes `prepare` and closes the connection without answering (B killed, the cut).
        case closeAfterPrepare
        /// Accepts `prepare`, takes the device state and closes without answering.
        case closeAfterDeviceState
        /// Accepts `prepare` and the device state, then closes when the test releases it
        /// (the test waits until the source is awaiting the guest).
        case closeWhenReleased
        /// Accepts `prepare`, then refuses the device state with `reason`.
        case refuseDeviceState(reason: String)
        /// Accepts `prepare`, takes the device state, then says nothing until released.
        case silentUntilReleased
    }

    package let address: String
    /// What the fake heard, in order (its thread writes; read after `finish()`).
    package private(set) var heard: [String] = []
    private let listener: MigrationListener
    private let script: Script
    private let released = DispatchSemaphore(value: 0)
    private var thread: Thread?
    private let done = DispatchSemaphore(value: 0)

    /// `keyFile`: the key the source has (the handshake must succeed: this is a host with the key).
    package init(keyFile: String, script: Script) throws {
        address = TestHost.freshSocketPath() + ".fake-migrate"
        listener = try MigrationListener(listeningOn: .unix(path: address), key: MigrationKey(contentsOf: keyFile))
        self.script = script
        let thread = Thread { [self] in
            play()
            done.signal()
        }
        self.thread = thread
        thread.start()
    }

    package func release() { released.signal() }

    /// Releases the script and waits for its thread to end (bounded: the script's own waits are).
    package func finish() {
        guard thread != nil else { return }
        released.signal()
        done.wait()
        thread = nil
        listener.removeSocketFileIfOurs()
    }

    deinit { finish() }

    /// A 32-byte key in hex, in a file only its owner may read (the caller removes it).
    package static func writeKeyFile() -> String { MigrationPair.writeKey() }

    private func play() {
        let patience: Int32 = 60_000
        guard let connection = try? listener.accept(timeoutMilliseconds: patience) else {
            heard.append("no connection")
            return
        }
        defer { connection.close() }
        do {
            try connection.waitForHandshake()
            guard case .prepare(let request) = try connection.receive(timeoutMilliseconds: patience) else {
                heard.append("not a prepare")
                return
            }
            heard.append("prepare \(request.guestName)")
            if case .closeAfterPrepare = script { return }
            // A control socket that does not exist: a guest told to go there fails and stays.
            let token = (0..<16).map { _ in UInt8.random(in: 0...255) }
            try connection.send(.prepared(token: token, controlSocket: address + ".nobody"), timeoutMilliseconds: patience)
            guard case .deviceState(let bytes) = try connection.receive(timeoutMilliseconds: patience) else {
                heard.append("not a device state")
                return
            }
            heard.append("device state \(bytes.count) bytes")
            switch script {
            case .closeAfterPrepare, .closeAfterDeviceState:
                return
            case .refuseDeviceState(let reason):
                try connection.send(.refused(reason: reason), timeoutMilliseconds: patience)
                heard.append(Self.drain(connection))
            case .closeWhenReleased:
                try connection.send(.stateAccepted, timeoutMilliseconds: patience)
                released.wait()
            case .silentUntilReleased:
                released.wait()
                heard.append(Self.drain(connection))
            }
        } catch {
            heard.append("channel: \(error)")
        }
    }

    /// What the source says after the script's last word, until it closes (its abort, if any).
    private static func drain(_ connection: MigrationConnection) -> String {
        var said: [String] = []
        while let message = try? connection.receive(timeoutMilliseconds: 60_000) { said.append("\(message)") }
        return "then: \(said.joined(separator: ", "))"
    }
}
