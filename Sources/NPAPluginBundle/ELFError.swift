/// Why bytes are not an ELF image `ELFSharedObject` can read: one case per reason, each with a
/// one-line description. The bytes come from a vendor's bundle (hostile until proven otherwise),
/// so every way they can be wrong ends here, never in a trap.
public enum ELFError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The first bytes are not `\x7fELF`.
    case notELF
    /// `EI_CLASS` is not `ELFCLASS64` (1 is 32-bit).
    case not64Bit(elfClass: UInt8)
    /// `EI_DATA` is not `ELFDATA2LSB` (2 is big-endian).
    case notLittleEndian(dataEncoding: UInt8)
    /// `EI_VERSION` is not `EV_CURRENT`.
    case unsupportedVersion(UInt8)
    /// A structure (named) reaches past the end of the file.
    case truncated(String)
    /// A field is inconsistent (an entry size, an index, a link, an unterminated name).
    case malformed(String)
    /// No `SHT_DYNSYM` section (or no section headers at all).
    case noDynamicSymbolTable
    /// More dynamic symbols than `ELFSharedObject.maximumSymbols`.
    case tooManySymbols(count: UInt64, limit: Int)
    /// A name (of the dynamic symbol or `DT_NEEDED` entry named) longer than
    /// `ELFSharedObject.maximumNameBytes`.
    case nameTooLong(String, limit: Int)

    public var description: String {
        switch self {
        case .notELF: "not an ELF file (no \\x7fELF magic)"
        case .not64Bit(let c): "not a 64-bit ELF (EI_CLASS \(c)\(c == 1 ? ", 32-bit" : ""))"
        case .notLittleEndian(let d): "not a little-endian ELF (EI_DATA \(d)\(d == 2 ? ", big-endian" : ""))"
        case .unsupportedVersion(let v): "unsupported ELF version \(v)"
        case .truncated(let what): "truncated ELF: \(what) reaches past the end of the file"
        case .malformed(let what): "malformed ELF: \(what)"
        case .noDynamicSymbolTable: "no dynamic symbol table (.dynsym): not a shared object a loader can link"
        case .tooManySymbols(let count, let limit): "\(count) dynamic symbols, over the limit of \(limit)"
        case .nameTooLong(let owner, let limit): "\(owner)'s name is over \(limit) bytes"
        }
    }
}
