import CNPAPluginABI
import Foundation
import NPAPluginBundle
import NPATestSupport
import Testing

/// One bundle for each refusal issue #12 lists, made from the real in-tree npa-cq-swift plugin
/// (which imports memset and memcpy, so its imports can be renamed) and its manifest: each is
/// good but for its one fault, and signed by the test signing key unless the fault is the
/// signature. The host's store and the shell must both refuse each with one line naming the
/// bundle and `expectedReason`.
enum BadBundle: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case tamperedBinary, tamperedManifest, untrustedSigner, unsigned, licenceMIT, licenceProprietary, abiMismatch
    case importsWrite, importsMalloc, secondExport, truncatedBundle, notABundle, binaryNotELF, binaryTruncatedELF
    case otherMachine, overSizeLimit, unknownSchema, unknownModel

    /// The NIC model the bundle's manifest is for (the host under test has a NIC of it).
    static let model = "npa-cq"

    var testDescription: String { rawValue }

    /// Whether the shell refuses it too. A model this build does not have is the host's
    /// refusal only: the shell knows no model list and requires only that the bundle name its
    /// VF's model (`InjectedBundleRefusalTests.theShellRequiresTheOfferedModelOnly`).
    var refusedByTheShell: Bool { self != .unknownModel }

    /// The bundle's file name (and the name the shell is told).
    var file: String { "bad-\(rawValue).npabundle" }

    /// A fragment of the reason the refusal line must give.
    var expectedReason: String {
        switch self {
        case .tamperedBinary: "(binary altered)"
        case .tamperedManifest: "does not verify (manifest or digest altered)"
        case .untrustedSigner: "which is not trusted"
        case .unsigned: "unsigned (no signature block)"
        case .licenceMIT: "licence 'MIT'"
        case .licenceProprietary: "licence 'Proprietary'"
        case .abiMismatch: "built for plugin ABI \(NPA_PLUGIN_ABI_VERSION + 1)"
        case .importsWrite: "imports 'write', which is not on the allow-list"
        case .importsMalloc: "imports 'malloc', which is not on the allow-list"
        case .secondExport: "exports 'memcpy'; a plugin exports only npa_plugin_main"
        case .truncatedBundle: "malformed: bundle truncated in its binary"
        case .notABundle: "malformed: not a plugin bundle (no NPABNDL1 magic)"
        case .binaryNotELF: "not a readable ELF shared object: not an ELF file"
        case .binaryTruncatedELF: "not a readable ELF shared object: truncated ELF"
        case .otherMachine: "the plugin binary is for e_machine 40"
        case .overSizeLimit: "over the \(PluginBundle.defaultMaxSize)-byte limit"
        case .unknownSchema: "unknown manifest schema version 2"
        case .unknownModel: "names NIC model 'e1000'"
        }
    }

    /// The bundle file's bytes.
    func bytes() throws -> [UInt8] {
        let image = try ELFImagePatch.image("npa-cq-swift")
        let manifest = try PluginImages.manifest(of: "cq-swift")
        let key = PluginImages.signingKey
        func signed(_ manifest: PluginManifest = manifest, _ binary: [UInt8] = image.bytes) -> [UInt8] {
            PluginImages.bundle(manifest, binary: binary, key: key)
        }
        func patched(_ change: (inout ELFImagePatch) -> Void) -> [UInt8] {
            var copy = image
            change(&copy)
            return signed(manifest, copy.bytes)
        }
        func with(_ change: (inout PluginManifest) -> Void) -> [UInt8] {
            var copy = manifest
            change(&copy)
            return signed(copy)
        }
        switch self {
        case .tamperedBinary, .tamperedManifest:
            var bytes = signed()
            let layout = try bytes.withUnsafeBytes { try PluginBundle.layout(of: $0) }
            if self == .tamperedBinary {
                bytes[layout.binary.lowerBound + layout.binary.count / 2] ^= 0x01
            } else {
                // Inside the vendor's name: still valid JSON, still the same digest.
                let vendor = try #require(bytes[layout.manifest].firstRange(of: Array(manifest.vendor.utf8)))
                bytes[vendor.lowerBound] ^= 0x20
            }
            return bytes
        case .untrustedSigner: return PluginImages.bundle(manifest, binary: image.bytes, key: .generate())
        case .unsigned: return PluginImages.bundle(manifest, binary: image.bytes, key: nil)
        case .licenceMIT: return with { $0.licence = "MIT" }
        case .licenceProprietary: return with { $0.licence = "Proprietary" }
        case .abiMismatch: return with { $0.abiVersion += 1 }
        case .importsWrite: return patched { $0.rename("memcpy", to: "write") }
        case .importsMalloc: return patched { $0.rename("memset", to: "malloc") }
        case .secondExport: return patched { $0.defineAsExport("memcpy") }
        case .truncatedBundle:
            let whole = signed()
            return Array(whole.prefix(whole.count / 2))
        case .notABundle: return image.bytes
        case .binaryNotELF: return signed(manifest, Array("#!/bin/sh\nexec rm -rf /\n".utf8))
        case .binaryTruncatedELF: return signed(manifest, Array(image.bytes.prefix(100)))
        case .otherMachine: return patched { $0.set16(18, 40) }  // EM_ARM
        case .overSizeLimit:
            // Padding after the section headers keeps the ELF readable: only the size is wrong.
            return signed(manifest, image.bytes + [UInt8](repeating: 0, count: PluginBundle.defaultMaxSize))
        case .unknownSchema: return with { $0.schemaVersion = 2 }
        case .unknownModel: return with { $0.models.append(.init(model: "e1000", vfDeviceIDs: [])) }
        }
    }

    /// Writes the bundle as `file` into `directory`.
    func write(into directory: URL) throws {
        try Data(bytes()).write(to: directory.appendingPathComponent(file))
    }
}
