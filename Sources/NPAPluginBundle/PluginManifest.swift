import Foundation

/// What a plugin bundle says about its binary: who made it, which NIC models and VF device ids it
/// drives, the plugin ABI it was built against, its licence, and the binary's SHA-256. It travels
/// as JSON inside the bundle and is what the signature covers (with the binary's digest), so it
/// is decoded as hostile input: size-capped, every string capped, schema version checked first.
/// Pure: no I/O.
public struct PluginManifest: Codable, Equatable, Sendable {
    /// The only schema this build reads; a bundle from a newer tool is refused, not guessed at.
    public static let currentSchemaVersion = 1
    /// The largest manifest accepted (bytes of JSON): a manifest is a few hundred bytes.
    public static let maxEncodedSize = 64 * 1024
    /// The longest string field accepted (UTF-8 bytes).
    public static let maxStringLength = 256
    public static let maxModels = 32
    public static let maxVFDeviceIDsPerModel = 64

    /// A NIC model the plugin drives (`npa-dring`, `npa-cq`) and the VF PCI device ids it binds.
    public struct Model: Codable, Equatable, Sendable {
        public var model: String
        public var vfDeviceIDs: [UInt16]
        public init(model: String, vfDeviceIDs: [UInt16]) {
            self.model = model
            self.vfDeviceIDs = vfDeviceIDs
        }
    }

    public var schemaVersion: Int
    public var name: String
    public var version: String
    public var vendor: String
    public var models: [Model]
    public var abiVersion: UInt32
    /// An SPDX licence expression, checked by `PluginLicence`.
    public var licence: String
    /// The binary's SHA-256, 64 hex digits.
    public var binarySHA256: String

    public init(
        schemaVersion: Int = PluginManifest.currentSchemaVersion, name: String, version: String, vendor: String,
        models: [Model], abiVersion: UInt32, licence: String, binarySHA256: String
    ) {
        self.schemaVersion = schemaVersion
        self.name = name
        self.version = version
        self.vendor = vendor
        self.models = models
        self.abiVersion = abiVersion
        self.licence = licence
        self.binarySHA256 = binarySHA256
    }

    /// Why manifest bytes were refused, in one line.
    public enum Refusal: Error, Equatable, Sendable, CustomStringConvertible {
        /// A `schemaVersion` this build does not read (refused before any other field is trusted).
        case unknownSchema(Int)
        /// Anything else: not JSON, a missing or mistyped field, a value out of its bounds.
        case invalid(String)

        public var description: String {
            switch self {
            case .unknownSchema(let v): "unknown manifest schema version \(v) (this build reads \(PluginManifest.currentSchemaVersion))"
            case .invalid(let why): "invalid manifest: \(why)"
            }
        }
    }

    /// Decodes and validates manifest JSON.
    public static func decode(_ bytes: [UInt8]) throws(Refusal) -> PluginManifest {
        guard bytes.count <= maxEncodedSize else { throw .invalid("\(bytes.count) bytes, over the \(maxEncodedSize)-byte limit") }
        let data = Data(bytes)
        // The schema version alone first: a newer schema may rename any other field, and its
        // refusal must say "unknown schema", not "missing field".
        let probe: SchemaProbe
        do {
            probe = try JSONDecoder().decode(SchemaProbe.self, from: data)
        } catch {
            throw .invalid("not a JSON object with a numeric schemaVersion")
        }
        guard let version = probe.schemaVersion else { throw .invalid("missing field 'schemaVersion'") }
        guard version == currentSchemaVersion else { throw .unknownSchema(version) }
        let manifest: PluginManifest
        do {
            manifest = try JSONDecoder().decode(PluginManifest.self, from: data)
        } catch let error as DecodingError {
            throw .invalid(describe(error))
        } catch {
            throw .invalid("not valid JSON")
        }
        try manifest.validate()
        return manifest
    }

    /// The bytes a bundle carries and the signature covers: sorted keys, no whitespace, so the
    /// same manifest always encodes to the same bytes whichever tool wrote it.
    public func canonicalBytes() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Encoding plain strings and integers cannot fail; a failure would be our bug.
        guard let data = try? encoder.encode(self) else { preconditionFailure("manifest encoding failed") }
        return Array(data)
    }

    /// The bounds a decoded manifest must meet (`Codable` only checks types).
    func validate() throws(Refusal) {
        for (field, value) in [("name", name), ("version", version), ("vendor", vendor), ("licence", licence)] {
            guard !value.isEmpty else { throw .invalid("field '\(field)' is empty") }
            guard value.utf8.count <= Self.maxStringLength else {
                throw .invalid("field '\(field)' is \(value.utf8.count) bytes, over \(Self.maxStringLength)")
            }
            // Fields are echoed in one-line refusals and listings: no line breaks or escapes.
            guard
                !value.unicodeScalars.contains(where: {
                    [.control, .lineSeparator, .paragraphSeparator].contains($0.properties.generalCategory)
                })
            else {
                throw .invalid("field '\(field)' contains control characters")
            }
        }
        guard !models.isEmpty else { throw .invalid("'models' is empty: a plugin drives at least one NIC model") }
        guard models.count <= Self.maxModels else { throw .invalid("\(models.count) models, over \(Self.maxModels)") }
        for m in models {
            guard !m.model.isEmpty, m.model.utf8.count <= Self.maxStringLength, m.model.utf8.allSatisfy(isModelNameByte) else {
                throw .invalid("a model name is empty, over \(Self.maxStringLength) bytes, or not of [A-Za-z0-9._-]")
            }
            guard m.vfDeviceIDs.count <= Self.maxVFDeviceIDsPerModel else {
                throw .invalid("model '\(m.model)' lists \(m.vfDeviceIDs.count) VF device ids, over \(Self.maxVFDeviceIDsPerModel)")
            }
        }
        guard BundleHex.decode(binarySHA256[...], count: 32) != nil else {
            throw .invalid("'binarySHA256' is not 64 hex digits")
        }
    }

    /// The digest as bytes (validated by `decode`; nil for a manifest built by hand with a bad one).
    public var binaryDigest: [UInt8]? { BundleHex.decode(binarySHA256[...], count: 32) }

    /// NIC model names are identifiers (`npa-dring`); anything else cannot name a model.
    private func isModelNameByte(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        case UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"): true
        default: false
        }
    }

    private struct SchemaProbe: Decodable {
        var schemaVersion: Int?
    }

    /// One line naming the field, never echoing hostile values (they may hold line breaks).
    private static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context, _ key: CodingKey? = nil) -> String {
            let keys = context.codingPath + (key.map { [$0] } ?? [])
            let joined = keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
            return joined.isEmpty ? "the top level" : "'\(joined)'"
        }
        switch error {
        case .keyNotFound(let key, let context): return "missing field \(path(context, key))"
        case .typeMismatch(_, let context): return "field \(path(context)) has the wrong type or is out of range"
        case .valueNotFound(_, let context): return "field \(path(context)) is null"
        case .dataCorrupted(let context): return "malformed JSON or value at \(path(context))"
        @unknown default: return "undecodable"
        }
    }
}
