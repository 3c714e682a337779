import FuzzSupport
@testable import NPAHost

// The device-state decoder, which migration will run on bytes from another host: any input
// must be refused with a typed error naming a field, or decode to a state that passes
// validation, survives a re-encoding, and (in the current format, which is canonical)
// re-encodes to exactly the input bytes. Never a trap.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let state: DeviceState
    do {
        state = try DeviceState(decoding: bytes)
    } catch {
        invariant(!error.description.isEmpty, "a refusal without a reason")
        return 0
    }
    invariant((try? state.validate()) != nil, "a decoded state fails validation")
    // The current format is canonical: its bytes re-encode exactly. An older piece (counters v1,
    // before the bad_offload drop reason) is read and re-encoded as the current version, so
    // then only the state must survive the round trip.
    let encoded = state.encoded()
    invariant((try? DeviceState(decoding: encoded)) == state, "encode then decode changed \(state)")
    invariant(encoded.count != bytes.count || encoded == bytes, "decode then encode changed the bytes of \(state)")
    return 0
}
