/// The host's control protocol, versioned and length-prefixed. A guest and the `npa` tools use it
/// over the host's Unix SOCK_SEQPACKET socket. Every message is one datagram:
///
///     magic "NPA1" (u32) | version (u16) | type (u16) | payload length (u32) | payload
///
/// Pure encode/parse: no I/O. Parsing treats every byte as hostile and never traps.
public enum ControlMessage: Equatable, Sendable {
    /// Guest → host. Descriptors: guest memory memfd, doorbell eventfd, then one eventfd per
    /// interrupt vector.
    case attach(AttachRequest)
    /// Host → guest. Descriptor: the vNIC's register page memfd.
    case attached(AttachReply)
    /// A write to a device register (bar 1: vmxnet3 "VD" registers), the emulation of a VM exit.
    case registerWrite(bar: UInt8, offset: UInt32, value: UInt32)
    case registerRead(bar: UInt8, offset: UInt32)
    /// The answer to a register access: status 0 and the value read, or an error and why.
    case registerResult(status: UInt32, value: UInt32, message: String)
    /// Admin → host: the host's vNIC table as JSON (`npa status`). Every guest's counters and
    /// VFs: refused on a guest's connection (`ErrorCode.notPermitted`).
    case statusRequest
    case statusReply(json: String)
    /// Asks for the caller's own vNIC counters by name.
    case countersRequest
    case countersReply([Counter])
    /// Asks the host to detach the caller's vNIC cleanly.
    case detach
    /// Host → peer: the request was refused or did not parse.
    case error(code: UInt32, message: String)
    /// Guest → host, after a DIC event: what does the host want the data path to be?
    case switchQuery
    /// Host → guest. For `.switchIn` the descriptors are: plugin image (memfd), VF register page
    /// (memfd), VF kick eventfd.
    case switchOffer(SwitchOffer)
    /// Guest → host (switch-in): the plugin is loaded; here are the queue regions (GPA, ring
    /// size) the PF driver initialises the VF from. TX queues first, then RX queues.
    /// `plugin` is the loaded image's own name and version, for `npa status`.
    case switchInReady(txRegions: [QueueRegion], rxRegions: [QueueRegion], plugin: String)
    /// Guest → host (switch-out): emulation is re-armed; move the MAC back and quiesce the VF.
    case switchOutBegin
    /// Guest → host (switch-out): the VF is drained; reset and release it.
    case switchOutDone
    /// Guest → host: the switch-in could not be completed (the plugin did not load, its init
    /// failed...); the guest stays on emulation. The host releases the VF and keeps the reason.
    case switchInFailed(reason: String)
    /// Guest → host, in passthrough: the plugin reports that its device stopped working under it
    /// (e.g. the VF was disabled without a DIC). The host resets the VF and switches the guest
    /// out to emulation, keeping the reason for `npa status`.
    case pluginFault(reason: String)
    /// Admin → host: switch a vNIC by name (`npa vnic switch-in/out`).
    case adminSwitch(vnic: String, toPassthrough: Bool)
    /// Admin → host: reset (FLR) a vNIC's VF now, without the guest's cooperation; the guest is
    /// then switched out to emulation (`npa vnic reset-vf`).
    case adminResetVF(vnic: String)
    /// Host → peer: the request succeeded (with an optional note).
    case ok(String)
    /// Guest → host: is a vNIC with this MAC attached and active? The one fact about other
    /// guests a guest may ask for (a sender waits for its peer before streaming).
    case peerQuery(mac: MACAddress)
    /// Host → guest: the answer to `peerQuery`.
    case peerReply(mac: MACAddress, active: Bool)
    /// Guest → the host its vNIC moves to (a `move` offer named it and the token): re-attach the
    /// vNIC the host restores from the migrated state. Descriptors: guest memory memfd, doorbell
    /// eventfd, one eventfd per interrupt vector, then the register page the guest has mapped
    /// (the new host adopts it). The host answers `attached` without descriptors.
    case resume(ResumeRequest)
    /// Guest → the host it leaves: the vNIC runs on the new host now; tear it down here.
    case moved
    /// Guest → the host it leaves: the move did not happen (the new host refused, or could not be
    /// reached); the guest stays here.
    case moveFailed(reason: String)
    /// Admin → host: migrate the vNIC of guest `vnic` to the host whose migration listener is
    /// `to` (ADDR:PORT or a Unix socket path). Answered `ok(id)` once it has started (then
    /// `npa status` follows it under that id) or `error` if it cannot start.
    case adminMigrate(vnic: String, to: String)
    /// Admin → host: the events the host still holds after sequence `after` (0: all it holds),
    /// oldest first, as many as fit one reply (`npa events`). A sequence the host has not
    /// reached is refused (`invalidArgument`).
    case eventsRequest(after: UInt64)
    case eventsReply(HostEventBatch)
    /// Admin → host: bring the host's Prometheus metrics up to date with the counters it keeps
    /// (`npa host --metrics` asks before each scrape); `.ok` once done. Refused (`invalidState`)
    /// by a host started without metrics.
    case metricsRefresh
    /// Admin → host: change a guest's policy now, in both modes (`npa policy set`). Answered
    /// `ok(what changed and its consequences)` or `error` with nothing changed.
    case policySet(PolicyChange)
    /// Admin → host: the policies it applies now (`npa policy show`), of guest `guest` only
    /// unless it is empty.
    case policyRequest(guest: String)
    case policyReply(json: String)
    /// Admin → host: capture a vNIC's frames into the descriptor sent with it (`npa capture`).
    /// Answered `ok` once the capture runs (then `captureEnded` when it ends) or `error`.
    case captureStart(CaptureRequest)
    /// Admin → host: end this connection's capture; answered `captureEnded`.
    case captureStop
    case captureEnded(CaptureOutcome)

    /// The messages only the admin socket accepts; a guest's connection refuses them.
    public var isAdministrative: Bool {
        switch self {
        case .statusRequest, .adminSwitch, .adminResetVF, .adminMigrate, .eventsRequest, .captureStart, .captureStop, .policySet,
            .policyRequest, .metricsRefresh:
            true
        default: false
        }
    }

    public static let magic: UInt32 = 0x3141_504E  // "NPA1" little endian
    public static let version: UInt16 = 2
    public static let headerSize = 12
    public static let maximumPayload = 60 * 1024

    /// Error codes carried by `.error` and `.registerResult`.
    public enum ErrorCode {
        public static let malformed: UInt32 = 1
        public static let unsupportedVersion: UInt32 = 2
        public static let refusedByPolicy: UInt32 = 3
        public static let invalidState: UInt32 = 4
        public static let invalidArgument: UInt32 = 5
        public static let resourceExhausted: UInt32 = 6
        public static let notAttached: UInt32 = 7
        /// An administrative request on a guest's connection (or a guest's on the admin socket).
        public static let notPermitted: UInt32 = 8

        /// Every code this build sends.
        public static let all: [UInt32] = [
            malformed, unsupportedVersion, refusedByPolicy, invalidState, invalidArgument, resourceExhausted, notAttached, notPermitted,
        ]

        /// The code's name in snake case, as metrics label it (`code_N` for one this build lacks).
        public static func name(of code: UInt32) -> String {
            switch code {
            case malformed: "malformed"
            case unsupportedVersion: "unsupported_version"
            case refusedByPolicy: "refused_by_policy"
            case invalidState: "invalid_state"
            case invalidArgument: "invalid_argument"
            case resourceExhausted: "resource_exhausted"
            case notAttached: "not_attached"
            case notPermitted: "not_permitted"
            default: "code_\(code)"
            }
        }
    }

    private enum Tag: UInt16 {
        case attach = 1, attached, registerWrite, registerRead, registerResult
        case statusRequest, statusReply, countersRequest, countersReply, detach
        case error = 15
        case switchQuery = 16, switchOffer, switchInReady, switchOutBegin, switchOutDone, adminSwitch, ok, adminResetVF, switchInFailed,
            pluginFault
        case peerQuery, peerReply
        case resume, moved, moveFailed
        case adminMigrate
        case eventsRequest, eventsReply
        // 34...39: capture; 40...45: live policy; 46...: metrics.
        case captureStart = 34, captureStop, captureEnded
        case policySet = 40, policyRequest, policyReply
        case metricsRefresh = 46
    }

    public func encode() -> [UInt8] {
        var p = ByteWriter()
        let tag: Tag
        switch self {
        case .attach(let r):
            tag = .attach
            p.string(r.name)
            p.u64(r.mac?.value ?? UInt64.max)
            p.u8(r.interruptVectors)
        case .attached(let r):
            tag = .attached
            p.u32(r.vnicID)
            p.u64(r.mac.value)
            p.u8(r.maxTxQueues)
            p.u8(r.maxRxQueues)
        case .registerWrite(let bar, let offset, let value):
            tag = .registerWrite
            p.u8(bar)
            p.u32(offset)
            p.u32(value)
        case .registerRead(let bar, let offset):
            tag = .registerRead
            p.u8(bar)
            p.u32(offset)
        case .registerResult(let status, let value, let message):
            tag = .registerResult
            p.u32(status)
            p.u32(value)
            p.string(message)
        case .statusRequest: tag = .statusRequest
        case .statusReply(let json):
            tag = .statusReply
            let utf8 = Array(json.utf8.prefix(Self.maximumPayload - 4))
            p.u32(UInt32(utf8.count))
            for b in utf8 { p.u8(b) }
        case .countersRequest: tag = .countersRequest
        case .countersReply(let counters):
            tag = .countersReply
            p.u16(UInt16(min(counters.count, 1024)))
            for c in counters.prefix(1024) {
                p.string(c.name)
                p.u64(c.value)
            }
        case .detach: tag = .detach
        case .error(let code, let message):
            tag = .error
            p.u32(code)
            p.string(message)
        case .switchQuery: tag = .switchQuery
        case .switchOffer(let o):
            tag = .switchOffer
            p.u8(o.kind.rawValue)
            p.u16(o.vf)
            p.string(o.model)
            p.string(o.plugin)
            if o.kind == .move {
                let destination = o.destination ?? MoveDestination(controlSocket: "", token: MoveToken(bytes: []))
                p.string(destination.controlSocket)
                destination.token.encode(into: &p)
            }
        case .switchInReady(let tx, let rx, let plugin):
            tag = .switchInReady
            p.u8(UInt8(min(tx.count, 8)))
            p.u8(UInt8(min(rx.count, 8)))
            for r in tx.prefix(8) + rx.prefix(8) {
                p.u64(r.gpa)
                p.u32(r.ringSize)
                p.u64(r.completionGPA ?? UInt64.max)
            }
            p.string(plugin)
        case .switchOutBegin: tag = .switchOutBegin
        case .switchOutDone: tag = .switchOutDone
        case .adminSwitch(let vnic, let toPassthrough):
            tag = .adminSwitch
            p.string(vnic)
            p.u8(toPassthrough ? 1 : 0)
        case .ok(let note):
            tag = .ok
            p.string(note)
        case .adminResetVF(let vnic):
            tag = .adminResetVF
            p.string(vnic)
        case .switchInFailed(let reason):
            tag = .switchInFailed
            p.string(reason)
        case .pluginFault(let reason):
            tag = .pluginFault
            p.string(reason)
        case .peerQuery(let mac):
            tag = .peerQuery
            p.u64(mac.value)
        case .peerReply(let mac, let active):
            tag = .peerReply
            p.u64(mac.value)
            p.u8(active ? 1 : 0)
        case .resume(let r):
            tag = .resume
            r.token.encode(into: &p)
            p.string(r.name)
            p.u8(r.interruptVectors)
        case .moved: tag = .moved
        case .moveFailed(let reason):
            tag = .moveFailed
            p.string(reason)
        case .adminMigrate(let vnic, let to):
            tag = .adminMigrate
            p.string(vnic)
            p.string(to)
        case .eventsRequest(let after):
            tag = .eventsRequest
            p.u64(after)
        case .eventsReply(let batch):
            tag = .eventsReply
            batch.encode(into: &p)
        case .metricsRefresh: tag = .metricsRefresh
        case .policySet(let change):
            tag = .policySet
            change.encode(into: &p)
        case .policyRequest(let guest):
            tag = .policyRequest
            p.string(guest)
        case .policyReply(let json):
            tag = .policyReply
            let utf8 = Array(json.utf8.prefix(Self.maximumPayload - 4))
            p.u32(UInt32(utf8.count))
            for b in utf8 { p.u8(b) }
        case .captureStart(let r):
            tag = .captureStart
            p.string(r.vnic)
            p.u8(r.direction.rawValue)
            p.u64(r.count)
        case .captureStop: tag = .captureStop
        case .captureEnded(let o):
            tag = .captureEnded
            p.u64(o.frames)
            p.u64(o.dropped)
            p.string(o.failure)
        }
        var out = ByteWriter()
        out.u32(Self.magic)
        out.u16(Self.version)
        out.u16(tag.rawValue)
        out.u32(UInt32(p.bytes.count))
        return out.bytes + p.bytes
    }

    /// Parses one datagram. Throws `ProtocolError` saying what is wrong; never traps.
    public static func parse(_ bytes: [UInt8]) throws -> ControlMessage {
        var h = ByteReader(bytes[...])
        guard bytes.count >= headerSize else {
            throw ProtocolError("message of \(bytes.count) bytes is shorter than the \(headerSize)-byte header")
        }
        guard try h.u32() == magic else { throw ProtocolError("bad magic") }
        let version = try h.u16()
        guard version == Self.version else {
            throw ProtocolError("unsupported protocol version \(version) (this host speaks \(Self.version))")
        }
        let rawTag = try h.u16()
        let length = try h.u32()
        guard Int(length) == bytes.count - headerSize else {
            throw ProtocolError("length field says \(length) payload bytes, datagram has \(bytes.count - headerSize)")
        }
        guard let tag = Tag(rawValue: rawTag) else { throw ProtocolError("unknown message type \(rawTag)") }
        var r = ByteReader(bytes[headerSize...])
        let message: ControlMessage
        switch tag {
        case .attach:
            let name = try r.string()
            let mac = try r.u64()
            let vectors = try r.u8()
            message = .attach(.init(name: name, mac: mac == UInt64.max ? nil : MACAddress(value: mac), interruptVectors: vectors))
        case .attached:
            message = .attached(
                .init(vnicID: try r.u32(), mac: MACAddress(value: try r.u64()), maxTxQueues: try r.u8(), maxRxQueues: try r.u8()))
        case .registerWrite:
            message = .registerWrite(bar: try r.u8(), offset: try r.u32(), value: try r.u32())
        case .registerRead:
            message = .registerRead(bar: try r.u8(), offset: try r.u32())
        case .registerResult:
            message = .registerResult(status: try r.u32(), value: try r.u32(), message: try r.string())
        case .statusRequest: message = .statusRequest
        case .statusReply:
            let n = Int(try r.u32())
            guard let s = String(validating: try r.raw(n), as: UTF8.self) else { throw ProtocolError("status is not UTF-8") }
            message = .statusReply(json: s)
        case .countersRequest: message = .countersRequest
        case .countersReply:
            let n = Int(try r.u16())
            var counters: [Counter] = []
            for _ in 0..<n { counters.append(Counter(try r.string(), try r.u64())) }
            message = .countersReply(counters)
        case .detach: message = .detach
        case .error:
            message = .error(code: try r.u32(), message: try r.string())
        case .switchQuery: message = .switchQuery
        case .switchOffer:
            guard let kind = SwitchOffer.Kind(rawValue: try r.u8()) else { throw ProtocolError("unknown switch kind") }
            var offer = SwitchOffer(kind: kind, vf: try r.u16(), model: try r.string(), plugin: try r.string())
            if kind == .move {
                offer.destination = MoveDestination(controlSocket: try r.string(), token: try MoveToken(from: &r))
            }
            message = .switchOffer(offer)
        case .switchInReady:
            let nt = Int(try r.u8()), nr = Int(try r.u8())
            guard nt <= 8, nr <= 8 else { throw ProtocolError("at most 8 queues per direction") }
            var regions: [QueueRegion] = []
            for _ in 0..<(nt + nr) {
                let gpa = try r.u64(), ringSize = try r.u32(), completion = try r.u64()
                regions.append(QueueRegion(gpa: gpa, ringSize: ringSize, completionGPA: completion == UInt64.max ? nil : completion))
            }
            message = .switchInReady(txRegions: Array(regions[0..<nt]), rxRegions: Array(regions[nt...]), plugin: try r.string())
        case .switchOutBegin: message = .switchOutBegin
        case .switchOutDone: message = .switchOutDone
        case .adminSwitch:
            message = .adminSwitch(vnic: try r.string(), toPassthrough: try r.u8() != 0)
        case .ok:
            message = .ok(try r.string())
        case .adminResetVF:
            message = .adminResetVF(vnic: try r.string())
        case .switchInFailed:
            message = .switchInFailed(reason: try r.string())
        case .pluginFault:
            message = .pluginFault(reason: try r.string())
        case .peerQuery:
            message = .peerQuery(mac: MACAddress(value: try r.u64()))
        case .peerReply:
            message = .peerReply(mac: MACAddress(value: try r.u64()), active: try r.u8() != 0)
        case .resume:
            message = .resume(.init(token: try MoveToken(from: &r), name: try r.string(), interruptVectors: try r.u8()))
        case .moved: message = .moved
        case .moveFailed:
            message = .moveFailed(reason: try r.string())
        case .adminMigrate:
            message = .adminMigrate(vnic: try r.string(), to: try r.string())
        case .eventsRequest: message = .eventsRequest(after: try r.u64())
        case .eventsReply: message = .eventsReply(try HostEventBatch(from: &r))
        case .metricsRefresh: message = .metricsRefresh
        case .policySet: message = .policySet(try PolicyChange(from: &r))
        case .policyRequest: message = .policyRequest(guest: try r.string())
        case .policyReply:
            let n = Int(try r.u32())
            guard let s = String(validating: try r.raw(n), as: UTF8.self) else { throw ProtocolError("policy report is not UTF-8") }
            message = .policyReply(json: s)
        case .captureStart:
            let vnic = try r.string()
            guard let direction = CaptureDirection(rawValue: try r.u8()) else { throw ProtocolError("unknown capture direction") }
            message = .captureStart(.init(vnic: vnic, direction: direction, count: try r.u64()))
        case .captureStop: message = .captureStop
        case .captureEnded: message = .captureEnded(.init(frames: try r.u64(), dropped: try r.u64(), failure: try r.string()))
        }
        try r.expectEnd()
        return message
    }
}
