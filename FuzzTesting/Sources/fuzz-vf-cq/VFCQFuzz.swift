import FuzzSupport
import NPANICModel

// The npa-cq VF data path against a hostile plugin/guest: see FuzzSupport/VFHarness.swift.

nonisolated(unsafe) var harness: VFFuzz! = nil

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    if harness == nil { harness = try! VFFuzz(model: .cq) }
    var input = FuzzInput(UnsafeRawBufferPointer(start: data, count: size))
    harness.run(&input)
    return 0
}
