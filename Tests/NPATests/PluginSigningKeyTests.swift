import Foundation
import NPAPluginBundle
import Testing

/// Key files and the trust store: what `npa plugin keygen` writes and `--trust` reads.
struct PluginSigningKeyTests {
    /// A fresh directory for one test, removed afterwards.
    func withDirectory(_ body: (String) throws -> Void) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("npa-keys-\(getpid())-\(UInt64.random(in: 0...UInt64.max))")
            .path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try body(dir)
    }

    @Test func keyFilesRoundTripWithAPrivateFileOfMode0600() throws {
        try withDirectory { dir in
            let key = PluginSigningKey.generate()
            try key.writeKeyFiles(at: dir + "/K")
            let mode = try #require(try FileManager.default.attributesOfItem(atPath: dir + "/K")[.posixPermissions] as? Int)
            #expect(mode == 0o600)
            let privateText = try String(contentsOfFile: dir + "/K", encoding: .utf8)
            #expect(privateText.count == 65 && privateText.hasSuffix("\n"))
            let publicText = try String(contentsOfFile: dir + "/K.pub", encoding: .utf8)
            #expect(publicText == key.publicKey.hex + "\n")
            #expect(try PluginSigningKey(contentsOfFile: dir + "/K").keyID == key.keyID)
            #expect(try PluginPublicKey(contentsOfFile: dir + "/K.pub").keyID == key.keyID)
        }
    }

    @Test func rewritingAKeyFileNarrowsItsMode() throws {
        try withDirectory { dir in
            #expect(FileManager.default.createFile(atPath: dir + "/K", contents: Data("old".utf8), attributes: [.posixPermissions: 0o644]))
            try PluginSigningKey.generate().writeKeyFiles(at: dir + "/K")
            #expect(try FileManager.default.attributesOfItem(atPath: dir + "/K")[.posixPermissions] as? Int == 0o600)
        }
    }

    @Test(arguments: [String(repeating: "ab", count: 31), String(repeating: "ab", count: 33), String(repeating: "zz", count: 32), ""])
    func wrongLengthOrNonHexKeysAreRefused(_ text: String) throws {
        try withDirectory { dir in
            #expect(FileManager.default.createFile(atPath: dir + "/K", contents: Data((text + "\n").utf8)))
            #expect(FileManager.default.createFile(atPath: dir + "/K.pub", contents: Data((text + "\n").utf8)))
            #expect(throws: PluginKeyFileError.self) { try PluginSigningKey(contentsOfFile: dir + "/K") }
            #expect(throws: PluginKeyFileError.self) { try PluginPublicKey(contentsOfFile: dir + "/K.pub") }
        }
        #expect(PluginSigningKey(rawRepresentation: [UInt8](repeating: 1, count: 31)) == nil)
    }

    @Test func missingAndOversizeKeyFilesAreRefusedNamingTheFile() throws {
        try withDirectory { dir in
            let missing = dir + "/nope.pub"
            let error = #expect(throws: PluginKeyFileError.self) { try PluginPublicKey(contentsOfFile: missing) }
            #expect(error?.description == "\(missing): cannot be opened")
            #expect(FileManager.default.createFile(atPath: dir + "/big.pub", contents: Data(repeating: 0x61, count: 10_000)))
            #expect(throws: PluginKeyFileError.self) { try PluginPublicKey(contentsOfFile: dir + "/big.pub") }
        }
    }
}

/// The set of keys a host or shell trusts.
struct PluginTrustStoreTests {
    @Test func directoryStoreHoldsEveryPubFileAndIgnoresPrivateKeys() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "npa-trust-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        ).path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = PluginSigningKey.generate()
        let b = PluginSigningKey.generate()
        try a.writeKeyFiles(at: dir + "/a")
        try b.writeKeyFiles(at: dir + "/b")
        let store = try PluginTrustStore(directory: dir)
        #expect(Set(store.keys.keys) == [a.keyID, b.keyID])
        let fromFiles = try PluginTrustStore(files: [dir + "/a.pub"])
        #expect(fromFiles.key(for: a.keyID) != nil && fromFiles.key(for: b.keyID) == nil)
        // A store built from files verifies what the key signed.
        let verifier = PluginBundleVerifier(trust: fromFiles, expectedABI: 1, knownModels: ["npa-dring"])
        #expect(throws: Never.self) { try verifier.verify(PluginBundleFixtures.bundle(key: a).encode(), name: "a.npab") }
        let accepted = try PluginBundleVerifier.verify(
            PluginBundleFixtures.bundle(key: a).encode(), name: "a.npab", trust: fromFiles, expectedABI: 1, knownModels: ["npa-dring"])
        #expect(accepted.signer == a.keyID)
    }

    @Test func emptyStoreTrustsNothing() {
        let verifier = PluginBundleVerifier(trust: PluginTrustStore(), expectedABI: 1, knownModels: ["npa-dring"])
        let key = PluginSigningKey.generate()
        #expect(
            PluginBundleFixtures.refusal(PluginBundleFixtures.bundle(key: key).encode(), by: verifier)?.reason
                == .untrustedSigner(key.keyID))
    }
}
