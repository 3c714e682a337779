import FuzzSupport
import NPAMigration

// The migration channel's decoders, which a host runs on bytes from the network before anything
// is authenticated (the hello, the record framing) and on authenticated bytes from another host
// (the messages). The first input byte picks a mode:
//
// - even: "stream" — the rest is fed to a responder (fixed key and nonce, as make-seeds.py's real
//   records use) in chunks of (byte >> 1) + 1 bytes, as a peer's bytes arrive. Never a trap; it
//   never holds more than one record's bytes; a refusal is final; every record that verifies
//   carries a message that, if it decodes, re-encodes to the same bytes.
// - odd: "sealed" — the rest is a list of (u8 type, u16 length, payload) that a real initiator
//   seals: the responder must open exactly those records, in order, and every payload goes
//   through the message decoder (so arbitrary payloads reach it past the tag). Then one bit of
//   the sealed stream, chosen by the input, is flipped: the responder must refuse, delivering
//   only records before the flip, unaltered.
let key = try! MigrationKey(bytes: Array(repeating: 0x4B, count: 32))
let initiatorNonce = [UInt8](repeating: 0x01, count: 16)
let responderNonce = [UInt8](repeating: 0x02, count: 16)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let mode = bytes.first else { return 0 }
    let body = Array(bytes.dropFirst())
    if mode & 1 == 0 {
        stream(body, chunk: Int(mode >> 1) + 1)
    } else {
        sealed(body)
    }
    return 0
}

/// A decoded message re-encodes to exactly the bytes it came from (the format is canonical).
func checkMessage(type: UInt8, payload: ArraySlice<UInt8>) {
    guard let message = try? MigrationMessage(type: type, payload: payload) else { return }
    let again = try? message.encoded()
    invariant(again != nil, "a decoded message does not encode: \(message)")
    invariant(again!.type == type && again!.payload[...] == payload, "encode(decode(b)) != b for \(message)")
}

func stream(_ body: [UInt8], chunk: Int) {
    var responder = AuthenticatedRecords(role: .responder, key: key, nonce: responderNonce)
    var offset = 0
    while offset < body.count {
        let end = min(body.count, offset + chunk)
        responder.append(Array(body[offset..<end]))
        offset = end
        do {
            while let record = try responder.nextRecord() {
                invariant(record.payload.count <= AuthenticatedRecords.maximumPayloadBytes, "a record over the maximum")
                checkMessage(type: record.type, payload: record.payload[...])
            }
        } catch {
            invariant(responder.refusal == error && !responder.isEstablished, "a refusal that is not final")
            invariant((try? responder.nextRecord()) == nil, "a record after a refusal")
            return
        }
        invariant(responder.bufferedBytes < AuthenticatedRecords.maximumRecordBytes, "more than one record's bytes buffered")
    }
    _ = responder.endOfStream()
}

func sealed(_ body: [UInt8]) {
    var initiator = AuthenticatedRecords(role: .initiator, key: key, nonce: initiatorNonce)
    var responder = AuthenticatedRecords(role: .responder, key: key, nonce: responderNonce)
    initiator.append(responder.hello())
    responder.append(initiator.hello())
    _ = try? initiator.nextRecord()
    _ = try? responder.nextRecord()
    invariant(initiator.isEstablished && responder.isEstablished, "the handshake failed")
    let fresh = responder

    var input = body[...]
    var sent: [(type: UInt8, payload: [UInt8])] = []
    var stream: [UInt8] = []
    var flipAt = 0
    while let type = input.popFirst() {
        let length = min(input.count, Int(input.popFirst() ?? 0) | Int(input.popFirst() ?? 0) << 8)
        let payload = Array(input.prefix(length))
        input = input.dropFirst(length)
        sent.append((type, payload))
        stream += initiator.seal(type: type, payload: payload)
        flipAt = flipAt &* 31 &+ Int(type) &+ length
        checkMessage(type: type, payload: payload[...])
    }
    guard !stream.isEmpty else { return }

    responder.append(stream)
    var opened: [AuthenticatedRecords.Record] = []
    do {
        while let record = try responder.nextRecord() { opened.append(record) }
    } catch {
        invariant(false, "a sealed record was refused: \(error)")
    }
    invariant(opened.count == sent.count, "\(opened.count) records opened, \(sent.count) sealed")
    for (i, record) in opened.enumerated() {
        invariant(record.sequence == UInt64(i) && record.type == sent[i].type && record.payload == sent[i].payload, "record \(i) changed")
    }

    // One bit flipped anywhere: refused, and nothing altered is delivered.
    let bit = (flipAt & Int.max) % (stream.count * 8)
    var flipped = stream
    flipped[bit / 8] ^= 1 << (bit % 8)
    var victim = fresh
    victim.append(flipped)
    var delivered: [AuthenticatedRecords.Record] = []
    var refusal: MigrationRefusal?
    do {
        while let record = try victim.nextRecord() { delivered.append(record) }
        refusal = victim.endOfStream()
    } catch {
        refusal = error
    }
    invariant(refusal != nil, "a flipped bit (\(bit)) was not refused")
    invariant(delivered.count < sent.count, "every record delivered despite a flipped bit")
    for (i, record) in delivered.enumerated() {
        invariant(record.type == sent[i].type && record.payload == sent[i].payload, "an altered record was delivered")
    }
}
