/// What the plugin policy needs to know about an ELF image, read from its bytes: the file type,
/// the machine, and the dynamic symbol table (its imports and exports). The reader of a plugin
/// binary for the host (before a bundle enters its store) and the shell (before it maps an image).
///
/// Reads 64-bit little-endian ELF only (every machine NPA runs on) and refuses anything else with
/// an `ELFError`. Pure: it only reads the bytes it is given, no system calls, no nm/readelf. The
/// bytes are hostile: every offset, size, count and index is checked, with overflow-safe
/// arithmetic, before it is used; the symbol count and name lengths are capped, so a small file
/// cannot make it allocate much.
///
/// The symbols come from the `SHT_DYNSYM` section; because the dynamic loader (glibc's `dlopen`,
/// which the shell uses) never reads section headers but `PT_DYNAMIC`, an image whose dynamic
/// segment names another symbol or string table than the sections do is refused as malformed, so
/// the symbols checked are the ones the loader links.
public struct ELFSharedObject: Equatable, Sendable {
    /// More dynamic symbols than any plugin needs (today's have 2 to 4); bounds the work and memory
    /// one image can cost.
    public static let maximumSymbols = 4096
    /// Longer than any C name or Embedded Swift mangled name a plugin exports or imports.
    public static let maximumNameBytes = 1024
    /// `PT_DYNAMIC` entries read at most (a real image has a few dozen).
    static let maximumDynamicEntries = 1024

    /// `e_type`.
    public struct FileType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: UInt16
        public init(rawValue: UInt16) { self.rawValue = rawValue }
        public static let relocatable = FileType(rawValue: 1)
        public static let executable = FileType(rawValue: 2)
        public static let sharedObject = FileType(rawValue: 3)
        public static let core = FileType(rawValue: 4)

        public var description: String {
            switch self {
            case .relocatable: "ET_REL (relocatable object)"
            case .executable: "ET_EXEC (executable)"
            case .sharedObject: "ET_DYN (shared object)"
            case .core: "ET_CORE (core dump)"
            default: "e_type \(rawValue)"
            }
        }
    }

    /// `e_machine`, named for the machines NPA runs on.
    public struct Machine: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: UInt16
        public init(rawValue: UInt16) { self.rawValue = rawValue }
        public static let x86_64 = Machine(rawValue: 62)
        public static let aarch64 = Machine(rawValue: 183)

        /// The machine this process was compiled for, if NPA knows its ELF number.
        public static var current: Machine? {
            #if arch(x86_64)
                .x86_64
            #elseif arch(arm64)
                .aarch64
            #else
                nil
            #endif
        }

        public var description: String {
            switch self {
            case .x86_64: "x86_64"
            case .aarch64: "aarch64"
            default: "e_machine \(rawValue)"
            }
        }
    }

    public let fileType: FileType
    public let machine: Machine
    /// Every dynamic symbol but the null entry 0, in table order.
    public let dynamicSymbols: [ELFDynamicSymbol]
    /// The libraries the loader would load with the image (`DT_NEEDED`), in order.
    public let neededLibraries: [String]

    /// Reads an image; throws why it is not one this type can read.
    public init(bytes: [UInt8]) throws(ELFError) {
        let result = bytes.withUnsafeBytes { raw in Result { () throws(ELFError) in try ELFSharedObject(bytes: raw) } }
        self = try result.get()
    }

    /// Reads an image from memory it does not keep.
    public init(bytes: UnsafeRawBufferPointer) throws(ELFError) {
        let file = ELFBytes(bytes)
        let header = try Self.header(file)
        fileType = FileType(rawValue: header.type)
        machine = Machine(rawValue: header.machine)
        let tables = try Self.dynamicTables(file, header)
        let needed = try Self.checkDynamicSegment(file, header, tables)
        dynamicSymbols = try Self.symbols(file, tables)
        var libraries: [String] = []
        for (index, offset) in needed.enumerated() {
            libraries.append(try file.name(at: offset, in: tables.strings, of: "DT_NEEDED entry \(index)"))
        }
        neededLibraries = libraries
    }

    struct Header {
        var type: UInt16, machine: UInt16
        var programHeaders: UInt64, programHeaderSize: UInt16, programHeaderCount: UInt16
        var sectionHeaders: UInt64, sectionHeaderSize: UInt16, sectionHeaderCount: UInt16
    }

    /// The file's range of the dynamic symbol table and its string table, and their addresses.
    struct DynamicTables {
        var symbols: Range<Int>, symbolsAddress: UInt64
        var strings: Range<Int>, stringsAddress: UInt64
    }

    static func header(_ file: ELFBytes) throws(ELFError) -> Header {
        // The magic first, on as many bytes as there are, so that short non-ELF input is "not ELF".
        let magic: [UInt8] = [0x7F, 0x45, 0x4C, 0x46]
        for i in 0..<min(4, file.count) where file.u8(i) != magic[i] { throw .notELF }
        guard let elfClass = file.u8(4), let data = file.u8(5), let version = file.u8(6) else {
            throw .truncated("the ELF identification")
        }
        // Class and byte order before the length: a 32-bit header is shorter than a 64-bit one.
        guard elfClass == 2 else { throw .not64Bit(elfClass: elfClass) }
        guard data == 1 else { throw .notLittleEndian(dataEncoding: data) }
        guard version == 1 else { throw .unsupportedVersion(version) }
        guard file.count >= 64, let type = file.u16(16), let machine = file.u16(18), let phoff = file.u64(32),
            let shoff = file.u64(40), let phentsize = file.u16(54), let phnum = file.u16(56), let shentsize = file.u16(58),
            let shnum = file.u16(60)
        else { throw .truncated("the ELF header") }
        return Header(
            type: type, machine: machine, programHeaders: phoff, programHeaderSize: phentsize, programHeaderCount: phnum,
            sectionHeaders: shoff, sectionHeaderSize: shentsize, sectionHeaderCount: shnum)
    }

    static func dynamicTables(_ file: ELFBytes, _ header: Header) throws(ELFError) -> DynamicTables {
        // e_shnum 0 is "no section headers" (or the extended numbering no plugin needs).
        guard header.sectionHeaderCount > 0 else { throw .noDynamicSymbolTable }
        guard header.sectionHeaderSize == 64 else { throw .malformed("section header size \(header.sectionHeaderSize), not 64") }
        let count = Int(header.sectionHeaderCount)
        guard let table = file.range(offset: header.sectionHeaders, count: UInt64(count), size: 64) else {
            throw .truncated("the section header table")
        }
        func section(_ index: Int) -> Int { table.lowerBound + index * 64 }
        var dynsym: Int?
        for index in 0..<count where file.u32(section(index) + 4) == 11 {  // SHT_DYNSYM
            guard dynsym == nil else { throw .malformed("two dynamic symbol tables") }
            dynsym = index
        }
        guard let dynsym else { throw .noDynamicSymbolTable }
        let s = section(dynsym)
        // The table lies inside the section header table, which is inside the file: these reads succeed.
        let (symAddress, symOffset, symSize) = (file.u64(s + 16)!, file.u64(s + 24)!, file.u64(s + 32)!)
        let (link, entsize) = (Int(file.u32(s + 40)!), file.u64(s + 56)!)
        guard entsize == 24 else { throw .malformed(".dynsym entry size \(entsize), not 24") }
        guard symSize % 24 == 0 else { throw .malformed(".dynsym size \(symSize) is not a whole number of entries") }
        guard symSize / 24 <= UInt64(maximumSymbols) + 1 else { throw .tooManySymbols(count: symSize / 24, limit: maximumSymbols) }
        guard let symbols = file.range(offset: symOffset, count: symSize / 24, size: 24) else { throw .truncated(".dynsym") }
        guard link > 0, link < count else { throw .malformed(".dynsym links to section \(link), not a string table") }
        let t = section(link)
        guard file.u32(t + 4) == 3 else { throw .malformed(".dynsym links to section \(link), not a string table") }  // SHT_STRTAB
        let (strAddress, strOffset, strSize) = (file.u64(t + 16)!, file.u64(t + 24)!, file.u64(t + 32)!)
        guard let strings = file.range(offset: strOffset, count: 1, size: strSize) else { throw .truncated(".dynstr") }
        return DynamicTables(symbols: symbols, symbolsAddress: symAddress, strings: strings, stringsAddress: strAddress)
    }

    /// The loader finds symbols through `PT_DYNAMIC`'s `DT_SYMTAB`/`DT_STRTAB`: they must be the
    /// tables the sections describe (an image without `PT_DYNAMIC` links nothing, so has nothing
    /// to disagree with). Returns the `DT_NEEDED` entries' offsets in `.dynstr`.
    static func checkDynamicSegment(_ file: ELFBytes, _ header: Header, _ tables: DynamicTables) throws(ELFError) -> [UInt64] {
        guard header.programHeaderCount > 0 else { return [] }
        guard header.programHeaderSize == 56 else { throw .malformed("program header size \(header.programHeaderSize), not 56") }
        let count = Int(header.programHeaderCount)
        guard let table = file.range(offset: header.programHeaders, count: UInt64(count), size: 56) else {
            throw .truncated("the program header table")
        }
        var dynamic: Range<Int>?
        for index in 0..<count {
            let p = table.lowerBound + index * 56
            guard file.u32(p) == 2 else { continue }  // PT_DYNAMIC
            guard dynamic == nil else { throw .malformed("two PT_DYNAMIC segments") }
            let (offset, size) = (file.u64(p + 8)!, file.u64(p + 32)!)
            guard let range = file.range(offset: offset, count: 1, size: size) else { throw .truncated("the dynamic segment") }
            dynamic = range
        }
        guard let dynamic else { return [] }
        // The loader keeps the last of repeated tags; so does this.
        var entries: [UInt64: UInt64] = [:]
        var needed: [UInt64] = []
        for index in 0..<min(dynamic.count / 16, maximumDynamicEntries) {
            let e = dynamic.lowerBound + index * 16
            let (tag, value) = (file.u64(e)!, file.u64(e + 8)!)
            if tag == 0 { break }  // DT_NULL
            entries[tag] = value
            if tag == 1 { needed.append(value) }  // DT_NEEDED
        }
        guard entries[6] == tables.symbolsAddress, entries[5] == tables.stringsAddress else {  // DT_SYMTAB, DT_STRTAB
            throw .malformed("the dynamic segment's symbol or string table is not the .dynsym/.dynstr section")
        }
        // And the bytes read here must be the ones the loader maps at those addresses.
        for (range, address, name) in [
            (tables.symbols, tables.symbolsAddress, ".dynsym"), (tables.strings, tables.stringsAddress, ".dynstr"),
        ]
        where fileRange(file, programHeaders: table, address: address, size: UInt64(range.count)) != range {
            throw .malformed("\(name)'s file bytes are not what a PT_LOAD segment maps at its address")
        }
        try checkRelocationSymbols(file, programHeaders: table, dynamic: entries, symbolCount: UInt64(tables.symbols.count / 24))
        return needed
    }

    static func symbols(_ file: ELFBytes, _ tables: DynamicTables) throws(ELFError) -> [ELFDynamicSymbol] {
        let count = tables.symbols.count / 24
        var symbols: [ELFDynamicSymbol] = []
        symbols.reserveCapacity(max(0, count - 1))
        // Entry 0 is the null symbol every table starts with.
        for index in 1..<max(1, count) {
            let e = tables.symbols.lowerBound + index * 24
            let (nameOffset, info, other) = (file.u32(e)!, file.u8(e + 4)!, file.u8(e + 5)!)
            let (shndx, value, size) = (file.u16(e + 6)!, file.u64(e + 8)!, file.u64(e + 16)!)
            let name = try file.name(at: UInt64(nameOffset), in: tables.strings, of: "dynamic symbol \(index)")
            symbols.append(
                ELFDynamicSymbol(
                    name: name, binding: .init(info >> 4), kind: .init(info & 0xF),
                    visibility: ELFDynamicSymbol.Visibility(rawValue: other & 3)!, sectionIndex: shndx, value: value, size: size))
        }
        return symbols
    }
}

/// Bounds-checked little-endian reads over borrowed bytes: every read returns nil rather than
/// reach outside them.
struct ELFBytes {
    let bytes: UnsafeRawBufferPointer
    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }
    var count: Int { bytes.count }

    func u8(_ offset: Int) -> UInt8? { offset >= 0 && offset < bytes.count ? bytes[offset] : nil }
    func u16(_ offset: Int) -> UInt16? { load(offset, UInt16.self).map(UInt16.init(littleEndian:)) }
    func u32(_ offset: Int) -> UInt32? { load(offset, UInt32.self).map(UInt32.init(littleEndian:)) }
    func u64(_ offset: Int) -> UInt64? { load(offset, UInt64.self).map(UInt64.init(littleEndian:)) }

    private func load<T: FixedWidthInteger>(_ offset: Int, _: T.Type) -> T? {
        guard offset >= 0, offset <= bytes.count - MemoryLayout<T>.size else { return nil }
        return bytes.loadUnaligned(fromByteOffset: offset, as: T.self)
    }

    /// `count` entries of `size` bytes from `offset`, if all of it lies in the file.
    func range(offset: UInt64, count: UInt64, size: UInt64) -> Range<Int>? {
        let (length, overflow) = count.multipliedReportingOverflow(by: size)
        guard !overflow, offset <= UInt64(bytes.count), length <= UInt64(bytes.count) - offset else { return nil }
        return Int(offset)..<Int(offset + length)
    }

    /// The NUL-terminated UTF-8 name at `offset` in the string table `strings`; `owner` says whose
    /// name it is in errors.
    func name(at offset: UInt64, in strings: Range<Int>, of owner: String) throws(ELFError) -> String {
        guard offset < UInt64(strings.count) else { throw .malformed("\(owner)'s name lies outside .dynstr") }
        let start = strings.lowerBound + Int(offset)
        // Look one byte past the limit: a NUL there still means the name is too long.
        let end = min(strings.upperBound, start + ELFSharedObject.maximumNameBytes + 1)
        guard let nul = bytes[start..<end].firstIndex(of: 0) else {
            if end < strings.upperBound { throw .nameTooLong(owner, limit: ELFSharedObject.maximumNameBytes) }
            throw .malformed("\(owner)'s name is not terminated inside .dynstr")
        }
        guard nul - start <= ELFSharedObject.maximumNameBytes else {
            throw .nameTooLong(owner, limit: ELFSharedObject.maximumNameBytes)
        }
        guard let name = String(validating: bytes[start..<nul], as: UTF8.self) else {
            throw .malformed("\(owner)'s name is not UTF-8")
        }
        return name
    }
}
