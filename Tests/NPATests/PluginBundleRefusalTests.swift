import NPAPluginBundle
import Testing

/// Each reason the verifier refuses a bundle for, one line naming the bundle.
struct PluginBundleRefusalTests {
    let key = PluginSigningKey.generate()
    var verifier: PluginBundleVerifier { PluginBundleFixtures.verifier(trusting: [key]) }

    func reason(_ bytes: [UInt8]) -> PluginBundleRefusal.Reason? { PluginBundleFixtures.refusal(bytes, by: verifier)?.reason }

    @Test func tamperedBinaryByteIsCaughtByItsDigest() throws {
        let bundle = PluginBundleFixtures.bundle(key: key)
        var bytes = bundle.encode()
        let layout = try bytes.withUnsafeBytes { try PluginBundle.layout(of: $0) }
        bytes[layout.binaryOffset + 3] ^= 0x01
        guard case .tamperedBinary = reason(bytes) else { Issue.record("got \(String(describing: reason(bytes)))"); return }
        let line = try #require(PluginBundleFixtures.refusal(bytes, by: verifier)).description
        #expect(line.hasPrefix("plugin bundle test.npab refused: binary SHA-256"))
    }

    @Test func tamperedManifestByteBreaksTheSignature() throws {
        var bytes = PluginBundleFixtures.bundle(key: key).encode()
        let layout = try bytes.withUnsafeBytes { try PluginBundle.layout(of: $0) }
        // Inside the vendor's name: still valid JSON, still the same digest.
        let vendor = try #require(bytes[layout.manifest].firstRange(of: Array("Example".utf8)))
        bytes[vendor.lowerBound] = UInt8(ascii: "e")
        #expect(reason(bytes) == .badSignature(key.keyID))
    }

    @Test func signatureByAnUntrustedKeyIsRefusedNamingTheKey() throws {
        let stranger = PluginSigningKey.generate()
        let bytes = PluginBundleFixtures.bundle(key: stranger).encode()
        #expect(reason(bytes) == .untrustedSigner(stranger.keyID))
        let line = try #require(PluginBundleFixtures.refusal(bytes, by: verifier)).description
        #expect(line.contains(stranger.keyID.description) && line.contains("not trusted"))
    }

    @Test func signatureBlockClaimingATrustedKeyButSignedByAnotherIsRefused() {
        var bundle = PluginBundleFixtures.bundle(key: PluginSigningKey.generate())
        bundle.signature?.keyID = key.keyID
        #expect(reason(bundle.encode()) == .badSignature(key.keyID))
    }

    @Test func unsignedBundleIsRefused() {
        #expect(reason(PluginBundleFixtures.bundle(key: nil).encode()) == .unsigned)
    }

    @Test(arguments: ["MIT", "Proprietary"])
    func nonGPLLicenceIsRefusedWithTheLicenceRulesReason(_ licence: String) throws {
        let bytes = PluginBundleFixtures.bundle(PluginBundleFixtures.manifest(licence: licence), key: key).encode()
        guard case .licence(let why) = reason(bytes) else { Issue.record("got \(String(describing: reason(bytes)))"); return }
        #expect(why.description.contains("'\(licence)'"))
    }

    @Test func abiMismatchIsRefused() {
        let bytes = PluginBundleFixtures.bundle(PluginBundleFixtures.manifest(abi: 2), key: key).encode()
        #expect(reason(bytes) == .abiMismatch(bundle: 2, expected: 1))
    }

    @Test func unknownNICModelIsRefused() {
        let models: [PluginManifest.Model] = [.init(model: "npa-dring", vfDeviceIDs: [1]), .init(model: "e1000", vfDeviceIDs: [2])]
        let bytes = PluginBundleFixtures.bundle(PluginBundleFixtures.manifest(models: models), key: key).encode()
        #expect(reason(bytes) == .unknownModel("e1000"))
    }

    @Test func unknownSchemaVersionIsRefusedEvenWhenSigned() throws {
        let bytes = PluginBundleFixtures.bundle(PluginBundleFixtures.manifest(schemaVersion: 2), key: key).encode()
        #expect(reason(bytes) == .unknownSchema(2))
        let line = try #require(PluginBundleFixtures.refusal(bytes, by: verifier)).description
        #expect(line == "plugin bundle test.npab refused: unknown manifest schema version 2 (this build reads 1)")
    }

    @Test func signedManifestThatIsNotJSONIsRefusedAsInvalid() {
        var bundle = PluginBundle(manifestBytes: Array("not json".utf8), binary: [1, 2, 3])
        key.sign(&bundle)
        guard case .invalidManifest = reason(bundle.encode()) else {
            Issue.record("got \(String(describing: reason(bundle.encode())))"); return
        }
    }

    @Test func truncationAtEveryLengthIsRefusedAsMalformed() {
        let bytes = PluginBundleFixtures.bundle(key: key).encode()
        for length in 0..<bytes.count {
            let prefix = Array(bytes.prefix(length))
            guard case .malformed(let error) = reason(prefix) else {
                Issue.record("a bundle cut to \(length) of \(bytes.count) bytes was not refused as malformed")
                continue
            }
            guard case .truncated = error else {
                Issue.record("cut to \(length): \(error), not truncated")
                continue
            }
        }
    }

    @Test func wrongMagicIsRefused() {
        var bytes = PluginBundleFixtures.bundle(key: key).encode()
        bytes[7] = UInt8(ascii: "2")
        #expect(reason(bytes) == .malformed(.wrongMagic))
        #expect(reason(Array("\u{7f}ELF".utf8)) == .malformed(.wrongMagic))
    }

    @Test func oversizeBundleIsRefusedBeforeItIsRead() throws {
        let bytes = PluginBundleFixtures.bundle(binary: [UInt8](repeating: 0x90, count: 4096), key: key).encode()
        let small = PluginBundleFixtures.verifier(trusting: [key], maxSize: 4096)
        let refusal = try #require(PluginBundleFixtures.refusal(bytes, by: small))
        #expect(refusal.reason == .malformed(.tooLarge(size: bytes.count, limit: 4096)))
        #expect(refusal.description.contains("over the 4096-byte limit"))
    }

    @Test func trailingBytesAndABadSignatureBlockLengthAreRefused() {
        let bytes = PluginBundleFixtures.bundle(key: key).encode()
        #expect(reason(bytes + [0]) == .malformed(.trailingBytes(1)))
        var shortBlock = bytes.dropLast(4 + 72) + [71, 0, 0, 0]
        shortBlock += [UInt8](repeating: 0, count: 71)
        #expect(reason(Array(shortBlock)) == .malformed(.signatureBlockLength(71)))
    }

    @Test func hugeSectionLengthDoesNotAllocateOrTrap() {
        var bytes = Array("NPABNDL1".utf8) + [0xFF, 0xFF, 0xFF, 0xFF]
        #expect(reason(bytes) == .malformed(.truncated(section: "manifest")))
        bytes = Array("NPABNDL1".utf8) + [2, 0, 0, 0, 0x7B, 0x7D, 0xFF, 0xFF, 0xFF, 0xFF]
        #expect(reason(bytes) == .malformed(.truncated(section: "binary")))
    }
}
