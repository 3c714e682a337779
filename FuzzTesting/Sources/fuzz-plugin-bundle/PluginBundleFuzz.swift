import FuzzSupport
import NPAPluginBundle

// The plugin bundle container, its verifier and the manifest decoder on any bytes, as a host or a
// shell meets a hostile bundle. Checked: each returns or throws its own error type (never traps,
// never allocates beyond the input); a layout it accepts lies inside the input and covers it
// exactly; a decoded bundle re-encodes to the same bytes; the verifier (one fixed trusted key)
// refuses with a one-line reason. The input is tried three ways: as a whole bundle, as manifest
// JSON, and (to get past the signature) as the manifest of a bundle the trusted key signs.

/// Derived from a fixed seed so every run and every crash replay trusts the same key.
let trustedKey = PluginSigningKey(rawRepresentation: [UInt8](repeating: 0x5A, count: 32))!
let verifier = PluginBundleVerifier(
    trust: PluginTrustStore(keys: [trustedKey.publicKey]), expectedABI: 1, knownModels: ["npa-dring", "npa-cq"],
    maxSize: 1 << 20)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))

    if let layout = try? bytes.withUnsafeBytes({ try PluginBundle.layout(of: $0, maxSize: 1 << 20) }) {
        invariant(layout.manifest.lowerBound >= 8 && layout.signature.upperBound == size, "layout \(layout) of \(size) bytes")
        invariant(layout.manifest.upperBound + 4 == layout.binary.lowerBound, "sections not adjacent")
        let bundle = try? PluginBundle.decode(bytes, maxSize: 1 << 20)
        invariant(bundle?.encode() == bytes, "a decoded bundle does not re-encode to its bytes")
    }
    checkVerdict(bytes, size: size)

    if let manifest = try? PluginManifest.decode(bytes) {
        invariant(manifest.schemaVersion == PluginManifest.currentSchemaVersion && !manifest.models.isEmpty, "bad manifest accepted")
        invariant((try? PluginManifest.decode(manifest.canonicalBytes())) == manifest, "canonical bytes do not decode to the same")
    }

    // A signed bundle whose manifest is the input: everything after the signature check.
    var signed = PluginBundle(manifestBytes: Array(bytes.prefix(PluginManifest.maxEncodedSize)), binary: [0x7F, 0x45, 0x4C, 0x46])
    trustedKey.sign(&signed)
    let encoded = signed.encode()
    checkVerdict(encoded, size: encoded.count)
    return 0
}

func checkVerdict(_ bytes: [UInt8], size: Int) {
    do {
        let accepted = try verifier.verify(bytes, name: "fuzz.npab")
        invariant(accepted.binaryRange.upperBound <= size && accepted.signer == trustedKey.keyID, "accepted \(accepted)")
    } catch {
        invariant(!error.description.contains("\n"), "a refusal spans lines: \(error.description)")
    }
}
