import Foundation
import NPATestSupport

/// A copy of a real, built plugin image that tests alter in place to make the hostile variants the
/// ELF reader and the plugin binary policy must refuse (a forbidden import, a second export,
/// another machine...). It reads the image's own, trusted layout with plain indexing: it is test
/// code on images the build just made, not a reader of hostile input.
struct ELFImagePatch {
    var bytes: [UInt8]

    /// The in-tree plugin image `name` (e.g. "npa-cq-swift"), built on first use.
    static func image(_ name: String) throws -> ELFImagePatch {
        let path = try PluginImages.directory().appendingPathComponent("\(name).so")
        return ELFImagePatch(bytes: [UInt8](try Data(contentsOf: path)))
    }

    func u16(_ at: Int) -> Int { Int(bytes[at]) | Int(bytes[at + 1]) << 8 }
    func u32(_ at: Int) -> Int { u16(at) | u16(at + 2) << 16 }
    func u64(_ at: Int) -> Int { u32(at) | u32(at + 4) << 32 }

    mutating func set16(_ at: Int, _ value: Int) {
        bytes[at] = UInt8(value & 0xFF)
        bytes[at + 1] = UInt8(value >> 8 & 0xFF)
    }

    mutating func set64(_ at: Int, _ value: Int) {
        for i in 0..<8 { bytes[at + i] = UInt8(value >> (8 * i) & 0xFF) }
    }

    /// The file offset of the first section header of type `type` (11 is SHT_DYNSYM).
    func sectionHeader(type: Int) -> Int? {
        let (shoff, shnum) = (u64(40), u16(60))
        return (0..<shnum).map { shoff + $0 * 64 }.first { u32($0 + 4) == type }
    }

    /// The file offsets of `.dynsym`'s entries (the null entry 0 included) and of `.dynstr`.
    var dynamicTables: (symbols: [Int], strings: Int) {
        let dynsym = sectionHeader(type: 11)!
        let dynstr = u64(40) + u32(dynsym + 40) * 64
        let symbols = (0..<(u64(dynsym + 32) / 24)).map { u64(dynsym + 24) + $0 * 24 }
        return (symbols, u64(dynstr + 24))
    }

    /// The file offset of the `.dynsym` entry named `name`.
    func symbol(named name: String) -> Int? {
        let (symbols, strings) = dynamicTables
        return symbols.first { entry in
            let start = strings + u32(entry)
            let end = bytes[start...].firstIndex(of: 0)!
            return Array(bytes[start..<end]) == Array(name.utf8)
        }
    }

    /// Renames the dynamic symbol `old` in place; `new` must not be longer.
    mutating func rename(_ old: String, to new: String) {
        let at = dynamicTables.strings + u32(symbol(named: old)!)
        precondition(new.utf8.count <= old.utf8.count)
        bytes.replaceSubrange(at..<(at + new.utf8.count + 1), with: Array(new.utf8) + [0])
    }

    /// Makes the import `name` a definition exported next to the entry point (a global function
    /// in the entry point's section), as a second exported function would be.
    mutating func defineAsExport(_ name: String) {
        let entry = symbol(named: "npa_plugin_main")!
        let target = symbol(named: name)!
        bytes[target + 4] = 0x12  // STB_GLOBAL << 4 | STT_FUNC
        bytes[target + 5] = 0  // STV_DEFAULT
        set16(target + 6, u16(entry + 6))
    }
}
