extension ELFSharedObject {
    /// Every relocation the loader applies names a symbol by index into `DT_SYMTAB`, and the loader
    /// does not bound that index by anything: a relocation naming an index past the end of `.dynsym`
    /// would make it read an entry out of whatever bytes follow (`.dynstr`, say) and import a name
    /// the symbol table never lists. So each relocation table the dynamic segment names
    /// (`DT_RELA`, `DT_REL`, `DT_JMPREL`) must lie in the file, and each of its entries must name a
    /// symbol of `.dynsym` (or none, index 0).
    static func checkRelocationSymbols(
        _ file: ELFBytes, programHeaders: Range<Int>, dynamic: [UInt64: UInt64], symbolCount: UInt64
    ) throws(ELFError) {
        // (address tag, size tag, entry size, name): Elf64_Rela is 24 bytes, Elf64_Rel 16.
        var tables: [(address: UInt64, size: UInt64?, entrySize: UInt64, name: String)] = []
        if let address = dynamic[7] { tables.append((address, dynamic[8], 24, "DT_RELA")) }
        if let address = dynamic[17] { tables.append((address, dynamic[18], 16, "DT_REL")) }
        if let address = dynamic[23] {  // DT_JMPREL, whose format DT_PLTREL says (DT_REL 17 or DT_RELA 7)
            tables.append((address, dynamic[2], dynamic[20] == 17 ? 16 : 24, "DT_JMPREL"))
        }
        for table in tables {
            guard let size = table.size else { throw .malformed("\(table.name) without its size") }
            guard let range = fileRange(file, programHeaders: programHeaders, address: table.address, size: size) else {
                throw .truncated("the \(table.name) relocation table")
            }
            for e in stride(from: range.lowerBound, to: range.upperBound - Int(table.entrySize) + 1, by: Int(table.entrySize)) {
                let symbol = file.u64(e + 8)! >> 32  // ELF64_R_SYM(r_info)
                guard symbol < symbolCount else {
                    throw .malformed("a \(table.name) relocation names symbol \(symbol), past the \(symbolCount) of .dynsym")
                }
            }
        }
    }

    /// Where the bytes at a virtual address lie in the file: inside one PT_LOAD segment's file part.
    static func fileRange(_ file: ELFBytes, programHeaders: Range<Int>, address: UInt64, size: UInt64) -> Range<Int>? {
        for p in stride(from: programHeaders.lowerBound, to: programHeaders.upperBound, by: 56) where file.u32(p) == 1 {  // PT_LOAD
            let (offset, start, fileSize) = (file.u64(p + 8)!, file.u64(p + 16)!, file.u64(p + 32)!)
            guard address >= start, address - start <= fileSize, size <= fileSize - (address - start) else { continue }
            let (fileOffset, overflow) = offset.addingReportingOverflow(address - start)
            guard !overflow, let range = file.range(offset: fileOffset, count: 1, size: size) else { return nil }
            return range
        }
        return nil
    }
}
