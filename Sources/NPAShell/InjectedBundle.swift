import CNPAPluginABI
import NPAPluginBundle
import NPASystem
import SystemPackage

/// The shell's check of a bundle the host injected, before anything of it is mapped: the bytes
/// are copied out of the host's memfd into the guest's own memory (the host can no longer change
/// them), verified against the guest's trusted keys (`PluginBundleVerifier.enforcing`: signature,
/// digest, licence, ABI, the ELF rule; and it must name the NIC model the host says the VF is —
/// other models it names are the host's business: the shell has no model list of its own), and
/// only the binary is written to a fresh private
/// memfd for `PluginImage` to map. Touches the descriptor it is given and the memfd it makes.
enum InjectedBundle {
    /// Takes `fd` (always closed) and returns a new memfd holding only the verified binary; throws
    /// the refusal (one line naming `name` and the reason) otherwise.
    static func verifiedBinary(adopting fd: FileDescriptor, name: String, model: String, trust: PluginTrustStore) throws -> FileDescriptor {
        let verifier = PluginBundleVerifier.enforcing(
            trust: trust, expectedABI: NPA_PLUGIN_ABI_VERSION, knownModels: nil, requiredModel: model)
        let bytes: [UInt8]
        do {
            defer { try? fd.close() }
            bytes = try read(fd, limit: verifier.maxSize)
        }
        let accepted = try verifier.verify(bytes, name: name)
        let binary = bytes[accepted.binaryRange]
        let memory = try SharedMemory(name: "npa-plugin-image", size: max(binary.count, 1))
        binary.withUnsafeBytes { memory.base.copyMemory(from: $0.baseAddress!, byteCount: binary.count) }
        return try memory.fd.duplicate()
    }

    /// Every byte of `fd` from its start, at most `limit` + 1 (one over is enough for the
    /// verifier to refuse the size).
    private static func read(_ fd: FileDescriptor, limit: Int) throws -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while bytes.count <= limit {
            let n = try chunk.withUnsafeMutableBytes { try fd.read(fromAbsoluteOffset: Int64(bytes.count), into: $0) }
            if n == 0 { break }
            bytes += chunk[..<n]
        }
        return bytes
    }
}
