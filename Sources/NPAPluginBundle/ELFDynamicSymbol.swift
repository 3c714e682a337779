/// One entry of an ELF image's dynamic symbol table (`.dynsym`), decoded: what the dynamic loader
/// sees when it resolves the image's imports and exports. A plain value; touches nothing.
public struct ELFDynamicSymbol: Equatable, Sendable, CustomStringConvertible {
    /// `STB_*`: who may see the symbol.
    public enum Binding: Equatable, Sendable {
        case local, global, weak
        /// OS- or processor-specific (`STB_LOOS`...`STB_HIPROC`) or undefined values.
        case other(UInt8)

        init(_ raw: UInt8) {
            switch raw {
            case 0: self = .local
            case 1: self = .global
            case 2: self = .weak
            default: self = .other(raw)
            }
        }
    }

    /// `STT_*`: what the symbol names.
    public enum Kind: Equatable, Sendable {
        case noType, object, function, section, file, common, threadLocal
        /// `STT_GNU_IFUNC` and other OS- or processor-specific values.
        case other(UInt8)

        init(_ raw: UInt8) {
            switch raw {
            case 0: self = .noType
            case 1: self = .object
            case 2: self = .function
            case 3: self = .section
            case 4: self = .file
            case 5: self = .common
            case 6: self = .threadLocal
            default: self = .other(raw)
            }
        }
    }

    /// `STV_*` (the low two bits of `st_other`): whether another module can bind to it.
    public enum Visibility: UInt8, Equatable, Sendable {
        case `default` = 0, `internal` = 1, hidden = 2, protected = 3
    }

    public let name: String
    public let binding: Binding
    public let kind: Kind
    public let visibility: Visibility
    /// The section index (`st_shndx`); `SHN_UNDEF` (0) means an import the loader must resolve.
    public let sectionIndex: UInt16
    public let value: UInt64
    public let size: UInt64

    /// Defined in this image (as opposed to an import, `st_shndx == SHN_UNDEF`).
    public var isDefined: Bool { sectionIndex != 0 }

    public var description: String {
        "\(name) (\(binding), \(kind), \(visibility), \(isDefined ? "defined" : "undefined"))"
    }
}
