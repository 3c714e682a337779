import FuzzSupport
import NPAPluginBundle

// The plugin binary's ELF reader and the plugin binary policy, which the host runs on a vendor's
// bundle before it trusts anything in it, on any bytes. Checked: never a trap; the reader gives the
// same answer from an array and from borrowed memory; what it reads respects its caps (symbol count,
// name length); and a binary the policy accepts really is an ET_DYN for this machine whose only
// export is npa_plugin_main, needing no library, and whose imports are all on the allow-list.
let policy = PluginBinaryPolicy()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let raw = UnsafeRawBufferPointer(start: data, count: size)
    let bytes = Array(raw)
    let fromArray = Result { () throws(ELFError) in try ELFSharedObject(bytes: bytes) }
    let fromMemory = Result { () throws(ELFError) in try ELFSharedObject(bytes: raw) }
    invariant(fromArray == fromMemory, "the reader answers differently from an array and from memory")
    if case .success(let image) = fromArray {
        invariant(image.dynamicSymbols.count <= ELFSharedObject.maximumSymbols, "\(image.dynamicSymbols.count) symbols")
        for symbol in image.dynamicSymbols {
            invariant(symbol.name.utf8.count <= ELFSharedObject.maximumNameBytes, "a \(symbol.name.utf8.count)-byte name")
        }
    }
    let verdict = Result { () throws(PluginBinaryPolicy.Refusal) in try policy.check(bytes) }
    guard case .success = verdict else { return 0 }
    guard case .success(let image) = fromArray else {
        invariant(false, "the policy accepted bytes the reader refuses")
        return 0
    }
    invariant(size <= policy.maximumBytes, "accepted over the size limit")
    invariant(
        image.fileType == .sharedObject && image.machine == ELFSharedObject.Machine.current, "accepted \(image.fileType), \(image.machine)")
    invariant(image.neededLibraries.isEmpty, "accepted a binary needing \(image.neededLibraries)")
    let imports = image.dynamicSymbols.filter { !$0.isDefined }
    invariant(imports.allSatisfy { policy.allowedImports.contains($0.name) }, "accepted imports \(imports)")
    let exports = image.dynamicSymbols.filter {
        $0.isDefined && $0.binding != .local && ($0.visibility == .default || $0.visibility == .protected)
    }
    .filter { $0.kind != .section && $0.kind != .file }
    invariant(exports.map(\.name) == [PluginBinaryPolicy.entryPoint], "accepted exports \(exports)")
    return 0
}
