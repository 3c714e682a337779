import NPAPluginBundle
import Testing

/// The ELF reader on the in-tree plugin images and on hostile variants of them: it reads what
/// readelf reads from the real ones, and refuses (never traps on) anything else.
struct ELFSharedObjectTests {
    static let images = ["npa-cq", "npa-dring", "npa-cq-swift"]

    @Test(arguments: images)
    func realImagesReadAsSharedObjectsForThisMachineExportingTheEntryPoint(_ name: String) throws {
        let image = try ELFSharedObject(bytes: ELFImagePatch.image(name).bytes)
        #expect(image.fileType == .sharedObject)
        #expect(image.machine == ELFSharedObject.Machine.current)
        let entry = try #require(image.dynamicSymbols.first { $0.name == "npa_plugin_main" })
        #expect(entry.isDefined && entry.binding == .global && entry.kind == .function && entry.size > 0)
        #expect(entry.visibility == .default || entry.visibility == .protected)
        #expect(image.dynamicSymbols.filter(\.isDefined).count == 1)
        #expect(image.neededLibraries.isEmpty)
    }

    @Test func theEmbeddedSwiftImageImportsMemsetAndMemcpyOnly() throws {
        let image = try ELFSharedObject(bytes: ELFImagePatch.image("npa-cq-swift").bytes)
        let imports = image.dynamicSymbols.filter { !$0.isDefined }
        #expect(Set(imports.map(\.name)) == ["memset", "memcpy"])
        #expect(imports.allSatisfy { $0.binding == .global && $0.visibility == .default })
    }

    @Test(arguments: images)
    func everyTruncationIsRefusedAsTruncated(_ name: String) throws {
        let bytes = try ELFImagePatch.image(name).bytes
        // The section header table ends the file: every proper prefix cuts something the reader needs.
        for length in 0..<bytes.count {
            #expect(throws: ELFError.self) { try ELFSharedObject(bytes: Array(bytes[..<length])) }
        }
        for length in [4, 6, 7, 63, 64, bytes.count - 1] {
            guard case .truncated = try #require(throwing(Array(bytes[..<length]))) else {
                Issue.record(
                    "a \(length)-byte prefix is not refused as truncated: \(String(describing: throwing(Array(bytes[..<length]))))")
                continue
            }
        }
    }

    @Test(arguments: [[UInt8](), Array("hello, world".utf8), Array("#!/bin/sh\necho plugin\n".utf8), [0x7F, 0x45, 0x4C, 0x47, 2, 1, 1]])
    func nonELFBytesAreRefusedAsNotELF(_ bytes: [UInt8]) {
        // An empty file has no magic either; it is refused, as truncated or not ELF.
        let error = throwing(bytes)
        #expect(error == .notELF || (bytes.isEmpty && error == .truncated("the ELF identification")))
    }

    @Test func aThirtyTwoBitHeaderIsRefusedBeforeItsLengthIsChecked() throws {
        var image = try ELFImagePatch.image("npa-cq")
        image.bytes[4] = 1  // ELFCLASS32
        #expect(throwing(image.bytes) == .not64Bit(elfClass: 1))
        #expect(throwing(Array(image.bytes[..<52])) == .not64Bit(elfClass: 1))
        #expect(throwing(image.bytes)?.description.contains("32-bit") == true)
    }

    @Test func aBigEndianHeaderIsRefused() throws {
        var image = try ELFImagePatch.image("npa-cq")
        image.bytes[5] = 2  // ELFDATA2MSB
        #expect(throwing(image.bytes) == .notLittleEndian(dataEncoding: 2))
        #expect(throwing(image.bytes)?.description.contains("big-endian") == true)
    }

    @Test func anUnknownIdentVersionIsRefused() throws {
        var image = try ELFImagePatch.image("npa-cq")
        image.bytes[6] = 0
        #expect(throwing(image.bytes) == .unsupportedVersion(0))
    }

    @Test func anImageWithoutSectionHeadersHasNoDynamicSymbolTableToCheck() throws {
        var image = try ELFImagePatch.image("npa-cq")
        image.set16(60, 0)  // e_shnum
        #expect(throwing(image.bytes) == .noDynamicSymbolTable)
    }

    @Test func sectionHeaderOffsetsThatOverflowAreRefusedAsTruncated() throws {
        var image = try ELFImagePatch.image("npa-cq")
        image.set64(40, -64)  // e_shoff = 2^64 - 64: offset + size overflows
        #expect(throwing(image.bytes) == .truncated("the section header table"))
    }

    @Test func aSymbolTableWithTooManyEntriesIsRefusedBeforeItIsRead() throws {
        var image = try ELFImagePatch.image("npa-cq")
        let dynsym = try #require(image.sectionHeader(type: 11))
        image.set64(dynsym + 32, 24 * 1_000_000)
        #expect(throwing(image.bytes) == .tooManySymbols(count: 1_000_000, limit: ELFSharedObject.maximumSymbols))
    }

    @Test func aNameOutsideTheStringTableIsRefused() throws {
        var image = try ELFImagePatch.image("npa-cq")
        let entry = try #require(image.symbol(named: "npa_plugin_main"))
        image.bytes.replaceSubrange(entry..<(entry + 4), with: [0xFF, 0xFF, 0xFF, 0x7F])
        #expect(throwing(image.bytes) == .malformed("dynamic symbol 1's name lies outside .dynstr"))
    }

    @Test func anUnterminatedNameIsRefused() throws {
        var image = try ELFImagePatch.image("npa-cq")
        let dynsym = try #require(image.sectionHeader(type: 11))
        let dynstr = image.u64(40) + image.u32(dynsym + 40) * 64
        // Cut .dynstr just before the entry point's terminating NUL.
        let entry = try #require(image.symbol(named: "npa_plugin_main"))
        image.set64(dynstr + 32, image.u32(entry) + "npa_plugin_main".utf8.count)
        guard case .malformed(let why) = throwing(image.bytes) else { Issue.record("not refused"); return }
        #expect(why.contains("not terminated"))
    }

    /// The loader links through PT_DYNAMIC, not the sections: a DT_SYMTAB elsewhere is refused.
    @Test func aDynamicSegmentNamingAnotherSymbolTableIsRefused() throws {
        var image = try ELFImagePatch.image("npa-cq")
        let dynamic = try #require(image.sectionHeader(type: 6))  // SHT_DYNAMIC
        let (offset, size) = (image.u64(dynamic + 24), image.u64(dynamic + 32))
        let symtab = try #require(stride(from: offset, to: offset + size, by: 16).first { image.u64($0) == 6 })
        image.set64(symtab + 8, image.u64(symtab + 8) + 24)
        guard case .malformed(let why) = throwing(image.bytes) else { Issue.record("not refused"); return }
        #expect(why.contains("dynamic segment"))
    }

    /// A .dynsym section whose file offset is not where its address is loaded from: the loader
    /// would read other bytes than those checked.
    @Test func aSymbolTableTheLoaderWouldReadFromElsewhereIsRefused() throws {
        var image = try ELFImagePatch.image("npa-cq")
        let dynsym = try #require(image.sectionHeader(type: 11))
        image.set64(dynsym + 24, image.u64(dynsym + 24) + 8)  // sh_offset, not sh_addr
        guard case .malformed(let why) = throwing(image.bytes) else { Issue.record("not refused"); return }
        #expect(why.contains("PT_LOAD"))
    }

    /// A PLT relocation naming a symbol index past .dynsym would make the loader import whatever
    /// bytes lie there: refused.
    @Test func aRelocationNamingASymbolPastTheTableIsRefused() throws {
        var image = try ELFImagePatch.image("npa-cq-swift")
        let dynamic = try #require(image.sectionHeader(type: 6))  // SHT_DYNAMIC
        let (offset, size) = (image.u64(dynamic + 24), image.u64(dynamic + 32))
        let jmprel = try #require(stride(from: offset, to: offset + size, by: 16).first { image.u64($0) == 23 })
        // In these images the first PT_LOAD maps file offset 0 at address 0: the address is the offset.
        let relocation = image.u64(jmprel + 8)
        #expect(image.u32(relocation + 12) != 0)  // the memset or memcpy slot
        image.bytes[relocation + 12] = 4
        #expect(throwing(image.bytes) == .malformed("a DT_JMPREL relocation names symbol 4, past the 4 of .dynsym"))
    }

    /// A deterministic stand-in for the fuzzer in `swift test`: thousands of corrupted copies of a
    /// real image, each read without a trap (most are refused, a few still read).
    @Test func corruptedImagesNeverTrap() throws {
        let original = try ELFImagePatch.image("npa-cq-swift").bytes
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int(truncatingIfNeeded: state >> 33)
        }
        for _ in 0..<3000 {
            var bytes = original
            for _ in 0...(next() % 8) { bytes[next() % bytes.count] = UInt8(truncatingIfNeeded: next()) }
            _ = try? ELFSharedObject(bytes: bytes)
            _ = try? PluginBinaryPolicy().check(bytes)
        }
    }

    func throwing(_ bytes: [UInt8]) -> ELFError? {
        do {
            _ = try ELFSharedObject(bytes: bytes)
            return nil
        } catch {
            return error
        }
    }
}
