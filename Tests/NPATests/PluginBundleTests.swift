import Crypto
import NPAPluginBundle
import Testing

/// The plugin bundle container and the verifier's acceptance (round trips, layout).
struct PluginBundleTests {
    let key = PluginSigningKey.generate()

    @Test func roundTripKeepsEverySectionAndTheBinaryRange() throws {
        let bundle = PluginBundleFixtures.bundle(key: key)
        let bytes = bundle.encode()
        #expect(Array(bytes.prefix(8)) == Array("NPABNDL1".utf8))
        let decoded = try PluginBundle.decode(bytes)
        #expect(decoded == bundle)
        #expect(decoded.signature?.keyID == key.keyID)
        let layout = try bytes.withUnsafeBytes { try PluginBundle.layout(of: $0) }
        #expect(Array(bytes[layout.binaryOffset..<(layout.binaryOffset + layout.binaryLength)]) == PluginBundleFixtures.binary)
        #expect(layout.signature.count == 72)
    }

    @Test func unsignedBundleRoundTripsWithAnEmptySignatureBlock() throws {
        let bundle = PluginBundleFixtures.bundle(key: nil)
        let bytes = bundle.encode()
        #expect(Array(bytes.suffix(4)) == [0, 0, 0, 0])
        #expect(try PluginBundle.decode(bytes) == bundle)
    }

    @Test func verifierAcceptsASignedGPLBundleAndSaysWhereTheBinaryIs() throws {
        let bytes = PluginBundleFixtures.bundle(key: key).encode()
        let accepted = try PluginBundleFixtures.verifier(trusting: [key]).verify(bytes, name: "dring.npab")
        #expect(accepted.manifest.name == "dring-c")
        #expect(accepted.manifest.models == [.init(model: "npa-dring", vfDeviceIDs: [0x7b10, 0x7b11])])
        #expect(accepted.signer == key.keyID)
        #expect(Array(bytes[accepted.binaryRange]) == PluginBundleFixtures.binary)
        #expect(accepted.manifest.binaryDigest == Array(SHA256.hash(data: PluginBundleFixtures.binary)))
    }

    @Test func keyIDIsTheFirstEightBytesOfTheRawPublicKeysDigest() {
        let digest = Array(SHA256.hash(data: key.publicKey.rawRepresentation))
        #expect(key.keyID.bytes == Array(digest.prefix(8)))
        #expect(key.keyID.description.count == 16)
    }

    @Test func signedMessageIsPrefixManifestAndDigest() {
        let message = PluginBundle.signedMessage(manifestBytes: [1, 2], binaryDigest: [3])
        #expect(message == Array("npa-plugin-bundle-v1".utf8) + [0, 1, 2, 3])
    }

    @Test func canonicalManifestBytesAreStableAndSorted() throws {
        let manifest = PluginBundleFixtures.manifest()
        let bytes = manifest.canonicalBytes()
        #expect(bytes == manifest.canonicalBytes())
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(!text.contains("\n") && !text.contains(": "))
        #expect(text.hasPrefix("{\"abiVersion\":1,\"binarySHA256\":"))
        #expect(try PluginManifest.decode(bytes) == manifest)
    }

    @Test func binaryCheckHookRunsOnTheBinaryAndItsRefusalIsReported() throws {
        struct NotAnELF: Error, CustomStringConvertible { var description: String { "not an ELF shared object" } }
        let bytes = PluginBundleFixtures.bundle(key: key).encode()
        var verifier = PluginBundleFixtures.verifier(trusting: [key])
        verifier.binaryCheck = { binary in
            #expect(Array(binary) == PluginBundleFixtures.binary)
            throw NotAnELF()
        }
        let refusal = try #require(PluginBundleFixtures.refusal(bytes, by: verifier))
        #expect(refusal.reason == .binary("not an ELF shared object"))
        #expect(refusal.description == "plugin bundle test.npab refused: binary refused: not an ELF shared object")
    }
}
