import FuzzSupport
@testable import NPAHost

// The device-state decoder, which migration will run on bytes from another host: any input
// must be refused with a typed error naming a field, or decode to a state that passes
// validation and re-encodes to exactly the input bytes (the format is canonical). Never a trap.
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
    invariant(state.encoded() == bytes, "decode then encode changed the bytes of \(state)")
    return 0
}
