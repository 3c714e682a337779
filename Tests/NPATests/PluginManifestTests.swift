import NPAPluginBundle
import Testing

/// Decoding manifest JSON as hostile input: schema version first, every field present, bounded.
struct PluginManifestTests {
    func refusal(_ json: String) -> PluginManifest.Refusal? {
        do {
            _ = try PluginManifest.decode(Array(json.utf8))
            return nil
        } catch {
            return error
        }
    }

    /// The fixture manifest's JSON with `edit` applied to its text.
    func json(_ edit: (String) -> String = { $0 }) -> String {
        edit(String(decoding: PluginBundleFixtures.manifest().canonicalBytes(), as: UTF8.self))
    }

    @Test func fixtureManifestDecodes() throws {
        #expect(try PluginManifest.decode(Array(json().utf8)) == PluginBundleFixtures.manifest())
    }

    @Test func unknownSchemaVersionIsRefusedBeforeOtherFields() {
        #expect(refusal(#"{"schemaVersion":7}"#) == .unknownSchema(7))
        #expect(refusal(json { $0.replacingOccurrences(of: #""schemaVersion":1"#, with: #""schemaVersion":0"#) }) == .unknownSchema(0))
        #expect(PluginManifest.Refusal.unknownSchema(7).description == "unknown manifest schema version 7 (this build reads 1)")
    }

    @Test(arguments: ["abiVersion", "binarySHA256", "licence", "models", "name", "vendor", "version", "schemaVersion"])
    func missingFieldIsRefusedNamingIt(_ field: String) throws {
        var object = json()
        let start = try #require(object.range(of: "\"\(field)\":"))
        // Rename the key: the field is then missing, the JSON still valid.
        object.replaceSubrange(start, with: "\"x\(field)\":")
        #expect(refusal(object) == .invalid("missing field '\(field)'"))
    }

    @Test func emptyModelsAreRefused() {
        let manifest = PluginBundleFixtures.manifest(models: [])
        #expect(
            refusal(String(decoding: manifest.canonicalBytes(), as: UTF8.self))
                == .invalid("'models' is empty: a plugin drives at least one NIC model"))
    }

    @Test func overLongStringsAndOversizeManifestsAreRefused() {
        var manifest = PluginBundleFixtures.manifest()
        manifest.name = String(repeating: "n", count: PluginManifest.maxStringLength + 1)
        #expect(refusal(String(decoding: manifest.canonicalBytes(), as: UTF8.self)) == .invalid("field 'name' is 257 bytes, over 256"))
        let huge = [UInt8](repeating: UInt8(ascii: " "), count: PluginManifest.maxEncodedSize + 1)
        #expect(throws: PluginManifest.Refusal.self) { try PluginManifest.decode(huge) }
    }

    @Test func controlCharactersAndBadModelNamesAreRefused() {
        var manifest = PluginBundleFixtures.manifest()
        manifest.vendor = "Evil\nplugin bundle ok.npab accepted"
        #expect(
            refusal(String(decoding: manifest.canonicalBytes(), as: UTF8.self)) == .invalid("field 'vendor' contains control characters"))
        let badModel = PluginBundleFixtures.manifest(models: [.init(model: "npa dring", vfDeviceIDs: [])])
        #expect(refusal(String(decoding: badModel.canonicalBytes(), as: UTF8.self)) != nil)
    }

    @Test func wrongTypesOutOfRangeValuesAndBadDigestsAreRefused() {
        #expect(refusal(json { $0.replacingOccurrences(of: #""abiVersion":1"#, with: #""abiVersion":-1"#) }) != nil)
        #expect(refusal(json { $0.replacingOccurrences(of: "[31504,31505]", with: "[65536]") }) != nil)
        #expect(
            refusal(json { $0.replacingOccurrences(of: String(repeating: "0", count: 64), with: "00") })
                == .invalid("'binarySHA256' is not 64 hex digits"))
        #expect(refusal("") == .invalid("not a JSON object with a numeric schemaVersion"))
        #expect(refusal("[1]") == .invalid("not a JSON object with a numeric schemaVersion"))
        #expect(refusal(String(repeating: "[", count: 10_000)) != nil)
    }
}
