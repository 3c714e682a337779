import NPASystem
import SystemPackage

/// One end of a migration channel: a stream socket carrying `AuthenticatedRecords` that hold
/// `MigrationMessage`s. Usable from a single-threaded epoll loop — register `fd` for reading,
/// call `receive()` when it is readable and `flush()` when it is writable while `wantsWrite`,
/// check `handshakeDeadline` with `closeIfHandshakeOverdue(now:)` — and from blocking code
/// (`connect(to:key:timeoutMilliseconds:)`, `receive(timeoutMilliseconds:)`,
/// `send(_:timeoutMilliseconds:)`). No threads inside; every call returns without waiting except
/// the blocking helpers. Owns its socket; touches nothing else. A refusal closes the connection
/// and is counted in the `MigrationChannelCounters` it was given.
public final class MigrationConnection {
    public enum State: Equatable, Sendable {
        /// Waiting for the peer's hello (this end's is sent or queued).
        case handshaking
        case established
        case closed(MigrationChannelError)
    }

    public private(set) var state: State = .handshaking
    /// The socket's descriptor, for epoll. Closing the connection closes it.
    public let fd: FileDescriptor
    /// Monotonic time (`Clock.monotonicNanoseconds`) by which the peer's hello must have arrived.
    public let handshakeDeadline: UInt64
    public var role: AuthenticatedRecords.Role { records.role }

    private var socket: StreamSocket?
    private var records: AuthenticatedRecords
    private let counters: MigrationChannelCounters
    private var output: [UInt8] = []
    private var outputStart = 0
    private var inbox: [MigrationMessage] = []
    private var scratch = [UInt8](repeating: 0, count: 64 * 1024)
    /// Reads per `receive()`, so one busy peer cannot hold the caller's loop (epoll is
    /// level-triggered: what is left is reported again).
    private static let readsPerReceive = 16

    public static let defaultHandshakeTimeoutMilliseconds: Int32 = 5000

    /// Wraps a connected socket and queues this end's hello. The listener and `connect` make
    /// connections; tests may make one over a socket pair.
    init(
        socket: StreamSocket, role: AuthenticatedRecords.Role, key: MigrationKey, counters: MigrationChannelCounters,
        handshakeTimeoutMilliseconds: Int32
    ) {
        self.socket = socket
        self.fd = socket.fd
        self.records = AuthenticatedRecords(role: role, key: key)
        self.counters = counters
        self.handshakeDeadline = Clock.monotonicNanoseconds() + UInt64(max(0, handshakeTimeoutMilliseconds)) * 1_000_000
        output = records.hello()
        try? flush()
    }

    public var isEstablished: Bool { state == .established }
    public var isClosed: Bool {
        if case .closed = state { return true }
        return false
    }
    /// Queued bytes the socket has not taken yet: watch for writability and call `flush()`.
    public var wantsWrite: Bool { !isClosed && outputStart < output.count }
    public var queuedBytes: Int { output.count - outputStart }

    // MARK: Non-blocking

    /// Queues `message` as one record and writes what the socket takes now. Throws if the
    /// connection is closed, not yet established, or the message breaks the format's bounds.
    public func send(_ message: MigrationMessage) throws(MigrationChannelError) {
        if case .closed(let why) = state { throw why }
        guard state == .established else { throw .notEstablished }
        let encoded: (type: UInt8, payload: [UInt8])
        do {
            encoded = try message.encoded()
        } catch {
            throw .unencodable(error)
        }
        output += records.seal(type: encoded.type, payload: encoded.payload)
        try flush()
    }

    /// Writes queued bytes until the socket would block. Throws (and closes) if the connection broke.
    public func flush() throws(MigrationChannelError) {
        if case .closed(let why) = state { throw why }
        guard let socket else { return }
        while outputStart < output.count {
            let written: Int
            do {
                written = try output[outputStart...].withUnsafeBytes { try socket.write($0) }
            } catch {
                close(because: .failed("\(error)"))
                throw .failed("\(error)")
            }
            outputStart += written
            if written == 0 { break }
        }
        // Drop what was sent once it is most of the buffer, so a long transfer to a slow peer
        // does not keep every byte it ever queued.
        if outputStart == output.count {
            output.removeAll(keepingCapacity: true)
            outputStart = 0
        } else if outputStart >= 64 * 1024 && outputStart >= output.count / 2 {
            output.removeFirst(outputStart)
            outputStart = 0
        }
    }

    /// Reads what has arrived and returns the complete, verified messages, in order (a partial
    /// record stays buffered). Messages that arrived before the peer closed or before a refused
    /// record are returned; then `state` is `.closed` and the next call throws why.
    /// Also tries to write what is queued (one attempt), so a loop that watches only for
    /// readability still gets this end's hello out once an outgoing connection is made.
    public func receive() throws(MigrationChannelError) -> [MigrationMessage] {
        if inbox.isEmpty, case .closed(let why) = state { throw why }
        if wantsWrite { try? flush() }
        readAvailable()
        defer { inbox = [] }
        if inbox.isEmpty, case .closed(let why) = state { throw why }
        return inbox
    }

    /// Closes the connection, counting a handshake timeout, if the peer's hello has not arrived
    /// by `handshakeDeadline`. Returns whether it closed it.
    @discardableResult
    public func closeIfHandshakeOverdue(now: UInt64 = Clock.monotonicNanoseconds()) -> Bool {
        guard state == .handshaking, now >= handshakeDeadline else { return false }
        refuse(MigrationRefusal(.handshakeTimeout, "no hello from the peer before the deadline"))
        return true
    }

    /// Closes the socket; the connection stays `.closed`.
    public func close() { close(because: .closedLocally) }

    /// Starts a connection to the migration listener at `address` as the initiator, without
    /// waiting (for the host's loop): the hello is queued and goes out on `flush()` once the
    /// connection is made (the socket turns writable); a connection that fails closes on the next
    /// `flush()` or `receive()` with `.failed`. Throws only for what fails at once.
    public static func open(
        to address: StreamSocket.Address, key: MigrationKey, counters: MigrationChannelCounters = MigrationChannelCounters(),
        handshakeTimeoutMilliseconds: Int32 = defaultHandshakeTimeoutMilliseconds
    ) throws(MigrationChannelError) -> MigrationConnection {
        let socket: StreamSocket
        do {
            socket = try StreamSocket.startConnect(address)
        } catch {
            throw .failed("\(error)")
        }
        return MigrationConnection(
            socket: socket, role: .initiator, key: key, counters: counters, handshakeTimeoutMilliseconds: handshakeTimeoutMilliseconds)
    }

    // MARK: Blocking helpers (CLI, tests)

    /// Connects to a migration listener at `address` as the initiator and completes the
    /// handshake, all within `timeoutMilliseconds`.
    public static func connect(
        to address: StreamSocket.Address, key: MigrationKey, timeoutMilliseconds: Int32,
        counters: MigrationChannelCounters = MigrationChannelCounters()
    ) throws(MigrationChannelError) -> MigrationConnection {
        let start = Clock.monotonicNanoseconds()
        let socket: StreamSocket
        do {
            socket = try StreamSocket.connect(address, timeoutMilliseconds: timeoutMilliseconds)
        } catch {
            throw .failed("\(error)")
        }
        // The handshake gets what is left of the time.
        let spent = Int64(clamping: (Clock.monotonicNanoseconds() - start) / 1_000_000)
        let connection = MigrationConnection(
            socket: socket, role: .initiator, key: key, counters: counters,
            handshakeTimeoutMilliseconds: Int32(clamping: max(0, Int64(timeoutMilliseconds) - spent)))
        try connection.waitForHandshake()
        return connection
    }

    /// Waits until the peer's hello has arrived (or the handshake deadline passes: then the
    /// connection is closed and the timeout counted).
    public func waitForHandshake() throws(MigrationChannelError) {
        while state == .handshaking {
            let now = Clock.monotonicNanoseconds()
            if closeIfHandshakeOverdue(now: now) { break }
            try waitForSocket(until: handshakeDeadline, now: now)
            try flush()
            readAvailable()
        }
        if case .closed(let why) = state { throw why }
    }

    /// The next message, waiting up to `timeoutMilliseconds` for it.
    public func receive(timeoutMilliseconds: Int32) throws(MigrationChannelError) -> MigrationMessage {
        let deadline = Clock.monotonicNanoseconds() + UInt64(max(0, timeoutMilliseconds)) * 1_000_000
        while inbox.isEmpty {
            if case .closed(let why) = state { throw why }
            let now = Clock.monotonicNanoseconds()
            if closeIfHandshakeOverdue(now: now) { continue }
            guard now < deadline else { throw .timedOut("no message within \(timeoutMilliseconds) ms") }
            try waitForSocket(until: state == .handshaking ? min(deadline, handshakeDeadline) : deadline, now: now)
            if wantsWrite { try flush() }
            readAvailable()
        }
        return inbox.removeFirst()
    }

    /// Sends `message` and waits until the socket has taken all of it.
    public func send(_ message: MigrationMessage, timeoutMilliseconds: Int32) throws(MigrationChannelError) {
        try send(message)
        let deadline = Clock.monotonicNanoseconds() + UInt64(max(0, timeoutMilliseconds)) * 1_000_000
        while wantsWrite {
            let now = Clock.monotonicNanoseconds()
            guard now < deadline, let socket else { throw .timedOut("\(queuedBytes) bytes not sent within \(timeoutMilliseconds) ms") }
            _ = socket.wait(writable: true, timeoutMilliseconds: Int32(clamping: (deadline - now) / 1_000_000 + 1))
            try flush()
        }
    }

    // MARK: Internals

    /// Sleeps until the socket is readable (or writable while output is queued), up to `until`.
    private func waitForSocket(until: UInt64, now: UInt64) throws(MigrationChannelError) {
        guard let socket else { return }
        let milliseconds = until > now ? Int32(clamping: (until - now) / 1_000_000 + 1) : 0
        _ = socket.wait(writable: wantsWrite, timeoutMilliseconds: milliseconds)
    }

    private func readAvailable() {
        guard let socket, !isClosed else { return }
        for _ in 0..<Self.readsPerReceive {
            let result: StreamSocket.ReadResult
            do {
                result = try scratch.withUnsafeMutableBytes { try socket.read(into: $0) }
            } catch {
                drainRecords()
                close(because: .failed("\(error)"))
                return
            }
            switch result {
            case .wouldBlock:
                return
            case .endOfStream:
                drainRecords()
                guard !isClosed else { return }
                if let refusal = records.endOfStream() {
                    counters.count(refusal)
                    close(because: .refused(refusal))
                } else {
                    close(because: .peerClosed)
                }
                return
            case .bytes(let n):
                scratch.withUnsafeBytes { records.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                drainRecords()
                if isClosed { return }
            }
        }
    }

    /// Moves every complete verified record into the inbox as a message.
    private func drainRecords() {
        guard !isClosed else { return }
        while true {
            let record: AuthenticatedRecords.Record?
            do {
                record = try records.nextRecord()
            } catch {
                refuse(error)
                return
            }
            if state == .handshaking && records.isEstablished { state = .established }
            guard let record else { return }
            do {
                inbox.append(try MigrationMessage(type: record.type, payload: record.payload[...]))
            } catch {
                refuse(MigrationRefusal(.malformed, "record \(record.sequence): \(error)"))
                return
            }
        }
    }

    private func refuse(_ refusal: MigrationRefusal) {
        guard !isClosed else { return }
        records.refuse(refusal)
        counters.count(refusal)
        close(because: .refused(refusal))
    }

    private func close(because why: MigrationChannelError) {
        guard !isClosed else { return }
        state = .closed(why)
        socket = nil  // closes the descriptor (and so removes it from any epoll set)
        output = []
        outputStart = 0
    }
}
