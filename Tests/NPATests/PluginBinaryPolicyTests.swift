import NPAPluginBundle
import Testing

/// The plugin binary rule (ET_DYN for this machine, imports on the allow-list, only the entry point
/// exported, under the size limit) on the in-tree images and on one variant per refusal.
struct PluginBinaryPolicyTests {
    @Test(arguments: ELFSharedObjectTests.images)
    func realImagesPass(_ name: String) throws {
        try PluginBinaryPolicy().check(ELFImagePatch.image(name).bytes)
    }

    @Test(arguments: [("memset", "malloc"), ("memcpy", "write")])
    func aForbiddenImportIsRefusedByName(_ allowed: String, _ forbidden: String) throws {
        var image = try ELFImagePatch.image("npa-cq-swift")
        image.rename(allowed, to: forbidden)
        #expect(refusal(image.bytes) == .forbiddenImport(forbidden))
        #expect(refusal(image.bytes)?.description.contains("'\(forbidden)'") == true)
    }

    @Test func theAllowListIsAParameter() throws {
        var image = try ELFImagePatch.image("npa-cq-swift")
        image.rename("memset", to: "malloc")
        try PluginBinaryPolicy(allowedImports: ["malloc", "memcpy"]).check(image.bytes)
        #expect(throws: PluginBinaryPolicy.Refusal.forbiddenImport("memcpy")) {
            try PluginBinaryPolicy(allowedImports: ["malloc"]).check(image.bytes)
        }
    }

    @Test func aNeededLibraryIsRefusedByName() throws {
        var image = try ELFImagePatch.image("npa-cq-swift")
        let dynamic = try #require(image.sectionHeader(type: 6))  // SHT_DYNAMIC
        let (offset, size) = (image.u64(dynamic + 24), image.u64(dynamic + 32))
        // DT_RELACOUNT, a hint the loader may ignore, becomes DT_NEEDED naming the string "memset".
        let hint = try #require(stride(from: offset, to: offset + size, by: 16).first { image.u64($0) == 0x6fff_fff9 })
        image.set64(hint, 1)
        image.set64(hint + 8, image.u32(try #require(image.symbol(named: "memset"))))
        #expect(try ELFSharedObject(bytes: image.bytes).neededLibraries == ["memset"])
        #expect(refusal(image.bytes) == .needsLibrary("memset"))
        #expect(refusal(image.bytes)?.description.contains("'memset'") == true)
    }

    @Test func aSecondExportedFunctionIsRefusedByName() throws {
        var image = try ELFImagePatch.image("npa-cq-swift")
        image.defineAsExport("memcpy")
        #expect(refusal(image.bytes) == .unexpectedExport("memcpy"))
        #expect(refusal(image.bytes)?.description.contains("exports 'memcpy'") == true)
    }

    @Test func aWeakExportCountsAsAnExport() throws {
        var image = try ELFImagePatch.image("npa-cq-swift")
        image.defineAsExport("memcpy")
        image.bytes[image.symbol(named: "memcpy")! + 4] = 0x21  // STB_WEAK << 4 | STT_OBJECT
        #expect(refusal(image.bytes) == .unexpectedExport("memcpy"))
    }

    @Test func aHiddenDefinitionIsNotAnExport() throws {
        var image = try ELFImagePatch.image("npa-cq-swift")
        image.defineAsExport("memcpy")
        image.bytes[image.symbol(named: "memcpy")! + 5] = 2  // STV_HIDDEN
        try PluginBinaryPolicy().check(image.bytes)
    }

    @Test func anEntryPointUnderAnotherNameIsRefused() throws {
        var image = try ELFImagePatch.image("npa-cq")
        image.rename("npa_plugin_main", to: "npa_plugin_mai")
        #expect(refusal(image.bytes) == .unexpectedExport("npa_plugin_mai"))
    }

    @Test func anImageExportingNothingIsRefused() throws {
        var image = try ELFImagePatch.image("npa-cq")
        image.bytes[image.symbol(named: "npa_plugin_main")! + 5] = 2  // STV_HIDDEN
        #expect(refusal(image.bytes) == .noEntryPoint)
    }

    @Test func anELFForAnotherMachineIsRefusedNamingIt() throws {
        var image = try ELFImagePatch.image("npa-cq")
        image.set16(18, 40)  // EM_ARM
        let expected = try #require(ELFSharedObject.Machine.current)
        #expect(refusal(image.bytes) == .wrongMachine(ELFSharedObject.Machine(rawValue: 40), expected: expected))
        #expect(refusal(image.bytes)?.description.contains("e_machine 40") == true)
        let other: ELFSharedObject.Machine = expected == .x86_64 ? .aarch64 : .x86_64
        #expect(throws: PluginBinaryPolicy.Refusal.wrongMachine(expected, expected: other)) {
            try PluginBinaryPolicy(machine: other).check(ELFImagePatch.image("npa-cq").bytes)
        }
    }

    @Test func anExecutableIsNotASharedObject() throws {
        var image = try ELFImagePatch.image("npa-cq")
        image.set16(16, 2)  // ET_EXEC
        #expect(refusal(image.bytes) == .notSharedObject(.executable))
        #expect(refusal(image.bytes)?.description.contains("ET_EXEC") == true)
    }

    @Test func aBinaryOverTheSizeLimitIsRefusedBeforeItIsRead() throws {
        let bytes = try ELFImagePatch.image("npa-cq").bytes
        #expect(throws: PluginBinaryPolicy.Refusal.tooLarge(bytes: bytes.count, limit: 1000)) {
            try PluginBinaryPolicy(maximumBytes: 1000).check(bytes)
        }
        // Padding after the section headers leaves a readable image, but over the default 4 MiB.
        let padded = bytes + [UInt8](repeating: 0, count: PluginBinaryPolicy.defaultMaximumBytes)
        #expect(refusal(padded) == .tooLarge(bytes: padded.count, limit: PluginBinaryPolicy.defaultMaximumBytes))
        try PluginBinaryPolicy(maximumBytes: bytes.count).check(bytes)
    }

    @Test func unreadableBinariesAreRefusedWithTheReadersReason() throws {
        let bytes = try ELFImagePatch.image("npa-cq").bytes
        #expect(refusal(Array(bytes.prefix(100))) == .notELF(.truncated("the section header table")))
        #expect(refusal(Array("not a plugin".utf8)) == .notELF(.notELF))
        var bigEndian = bytes
        bigEndian[5] = 2
        #expect(refusal(bigEndian) == .notELF(.notLittleEndian(dataEncoding: 2)))
        #expect(refusal(bigEndian)?.description.contains("big-endian") == true)
    }

    func refusal(_ bytes: [UInt8]) -> PluginBinaryPolicy.Refusal? {
        do {
            try PluginBinaryPolicy().check(bytes)
            return nil
        } catch {
            return error
        }
    }
}
