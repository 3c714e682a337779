import ArgumentParser
import CNPAPluginABI
import Foundation
import NPANICModel
import NPAPluginBundle

/// `npa plugin …`: a vendor's tools for plugin bundles — build one from sources, make a signing
/// key, sign, verify against trusted keys, and inspect. The checks are the ones the host's store
/// and the shell apply (`PluginBundleVerifier.enforcing`), so `verify` says what a host will say.
struct Plugin: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plugin", abstract: "Build, sign, verify, inspect and test plugin bundles.",
        subcommands: [PluginBuild.self, Keygen.self, Sign.self, Verify.self, Inspect.self, PluginList.self, PluginTest.self])

    /// `npa plugin keygen --out K`: a new Ed25519 signing key in K (mode 0600) and its public key in K.pub.
    struct Keygen: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make an Ed25519 signing key: K (private, mode 0600) and K.pub (to give to hosts and guests).")
        @Option(help: "Where to write the private key (the public key goes to the same path + .pub).")
        var out: String

        func run() throws {
            let key = PluginSigningKey.generate()
            do { try key.writeKeyFiles(at: out) } catch { throw CommandFailure("\(error)") }
            print("key \(key.keyID): \(out) (private), \(out).pub (public)")
        }
    }

    /// `npa plugin sign BUNDLE --key K`: signs (or re-signs) a bundle in place.
    struct Sign: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Sign a bundle (in place) with a private key.")
        @Argument(help: "The bundle file.") var bundle: String
        @Option(help: "The private key file (npa plugin keygen).") var key: String

        func run() throws {
            var decoded = try readBundle(bundle)
            let signer: PluginSigningKey
            do { signer = try PluginSigningKey(contentsOfFile: key) } catch { throw CommandFailure("\(error)") }
            signer.sign(&decoded)
            try write(decoded.encode(), to: bundle)
            print("\(bundle): signed by key \(signer.keyID)")
        }
    }

    /// `npa plugin verify BUNDLE --trust K.pub…`: every check a host applies; exit 1 if refused.
    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a bundle as a host does: signature by a trusted key, digest, licence, ABI, NIC models, binary.",
            discussion: "Exit status 0: accepted; 1: refused (one line says why); 2: a file could not be read.")
        @Argument(help: "The bundle file.") var bundle: String
        @Option(name: .customLong("trust"), help: "A trusted public key file (K.pub); repeat for more.")
        var trust: [String] = []

        func run() throws {
            let bytes = try readFile(bundle)
            let store: PluginTrustStore
            do { store = try PluginTrustStore(files: trust) } catch { throw CommandFailure("\(error)") }
            do {
                let accepted = try Plugin.verifier(trusting: store).verify(bytes, name: bundle)
                let m = accepted.manifest
                print(
                    "\(bundle): accepted — \(m.name) \(m.version) by \(m.vendor), for \(m.models.map(\.model).joined(separator: ", ")), \(m.licence), signed by key \(accepted.signer)"
                )
            } catch {
                standardError("npa: \(error)")
                throw ExitCode(ExitStatus.notVerified)
            }
        }
    }

    /// `npa plugin inspect BUNDLE [--trust K.pub]`: what is inside, and the verdict.
    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a bundle's manifest, size, symbols, signer and verdict (against --trust keys, if given).")
        @Argument(help: "The bundle file.") var bundle: String
        @Option(name: .customLong("trust"), help: "A trusted public key file (K.pub); repeat for more.")
        var trust: [String] = []

        func run() throws {
            let bytes = try readFile(bundle)
            let decoded = try readBundle(bundle)
            print("bundle \(bundle): \(bytes.count) bytes (manifest \(decoded.manifestBytes.count), binary \(decoded.binary.count))")
            if let manifest = try? PluginManifest.decode(decoded.manifestBytes) {
                print("  name \(manifest.name), version \(manifest.version), vendor \(manifest.vendor)")
                for model in manifest.models {
                    print(
                        "  drives \(model.model)\(model.vfDeviceIDs.isEmpty ? "" : " (VF ids \(model.vfDeviceIDs.map { String(format: "0x%04x", $0) }.joined(separator: ", ")))")"
                    )
                }
                print("  ABI \(manifest.abiVersion), licence \(manifest.licence), binary SHA-256 \(manifest.binarySHA256)")
            } else {
                print("  manifest: unreadable")
            }
            if let image = try? ELFSharedObject(bytes: decoded.binary) {
                let exported = image.dynamicSymbols.filter { $0.isDefined && $0.binding != .local }.map(\.name)
                let undefined = image.dynamicSymbols.filter { !$0.isDefined && !$0.name.isEmpty }.map(\.name)
                print(
                    "  ELF \(image.fileType) for \(image.machine); exports: \(exported.joined(separator: ", ")); imports: \(undefined.isEmpty ? "none" : undefined.joined(separator: ", "))"
                )
            } else {
                print("  binary: not a readable ELF file")
            }
            print("  signer: \(decoded.signature.map { "key \($0.keyID)" } ?? "none (unsigned)")")
            let store: PluginTrustStore
            do { store = try PluginTrustStore(files: trust) } catch { throw CommandFailure("\(error)") }
            do {
                _ = try Plugin.verifier(trusting: store).verify(bytes, name: bundle)
                print("  verdict: accepted")
            } catch {
                print("  verdict: refused: \(error.reasonDescription)\(trust.isEmpty ? " (no --trust key given)" : "")")
            }
        }
    }

    /// The checks this build applies: its ABI, its NIC models, this machine's ELF rule.
    static func verifier(trusting store: PluginTrustStore) -> PluginBundleVerifier {
        .enforcing(trust: store, expectedABI: NPA_PLUGIN_ABI_VERSION, knownModels: Set(NICModelRegistry.names))
    }
}

func readFile(_ path: String) throws -> [UInt8] {
    guard let data = FileManager.default.contents(atPath: path) else { throw CommandFailure("\(path): cannot be read") }
    return [UInt8](data)
}

func readBundle(_ path: String) throws -> PluginBundle {
    do { return try PluginBundle.decode(readFile(path)) } catch let error as PluginBundle.FormatError {
        throw CommandFailure("\(path): \(error)")
    }
}

func write(_ bytes: [UInt8], to path: String) throws {
    guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else { throw CommandFailure("\(path): cannot be written") }
}
