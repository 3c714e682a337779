import FuzzSupport
import NPAControlProtocol

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let message = try? ControlMessage.parse(bytes) else { return 0 }
    let again = try? ControlMessage.parse(message.encode())
    invariant(again == message, "parse(encode(m)) != m for \(message)")
    return 0
}
