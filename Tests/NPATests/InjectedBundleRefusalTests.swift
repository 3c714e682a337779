import NPAPluginBundle
import NPASystem
import NPATestSupport
import SystemPackage
import Testing

@testable import NPAShell

/// The shell's own check of a bundle the host injected (`InjectedBundle`), before anything of it
/// is mapped: given a memfd holding each bad bundle, it refuses with one line naming the bundle
/// and the reason, and hands back no image to map; given the same bundle unaltered, it hands back
/// exactly the binary.
struct InjectedBundleRefusalTests {
    /// What the host injects: the bundle's bytes in a memfd of exactly their size.
    static func memfd(holding bytes: [UInt8]) throws -> FileDescriptor {
        let memory = try SharedMemory(name: "test-bundle", size: max(bytes.count, 1))
        bytes.withUnsafeBytes { memory.base.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        return try memory.fd.duplicate()
    }

    /// Every byte of `fd`.
    static func contents(of fd: FileDescriptor) throws -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = try chunk.withUnsafeMutableBytes { try fd.read(fromAbsoluteOffset: Int64(bytes.count), into: $0) }
            if n == 0 { return bytes }
            bytes += chunk[..<n]
        }
    }

    @Test(arguments: BadBundle.allCases.filter(\.refusedByTheShell))
    func theShellRefusesEachBadBundleBeforeMappingIt(_ bad: BadBundle) throws {
        let fd = try Self.memfd(holding: bad.bytes())
        var line = ""
        do {
            let image = try InjectedBundle.verifiedBinary(adopting: fd, name: bad.file, model: BadBundle.model, trust: PluginImages.trust)
            try? image.close()
            Issue.record("\(bad.file) was accepted: the shell would have mapped it")
        } catch {
            line = "\(error)"
        }
        #expect(line.hasPrefix("plugin bundle \(bad.file) refused: "), "\(line)")
        #expect(line.contains(bad.expectedReason), "\(line)")
        #expect(!line.contains("\n"), "\(line)")
    }

    /// The shell checks the model its VF is, not a list of models: a bundle naming that model
    /// and others (even one this build lacks) is mapped; one not naming it is refused.
    @Test func theShellRequiresTheOfferedModelOnly() throws {
        let image = try ELFImagePatch.image("npa-cq-swift").bytes
        var manifest = try PluginImages.manifest(of: "cq-swift")
        manifest.models.append(.init(model: "e1000", vfDeviceIDs: []))
        let bundle = PluginImages.bundle(manifest, binary: image, key: PluginImages.signingKey)
        let binary = try InjectedBundle.verifiedBinary(
            adopting: Self.memfd(holding: bundle), name: "family.npabundle", model: BadBundle.model, trust: PluginImages.trust)
        try? binary.close()
        do {
            let refused = try InjectedBundle.verifiedBinary(
                adopting: Self.memfd(holding: bundle), name: "family.npabundle", model: "npa-dring", trust: PluginImages.trust)
            try? refused.close()
            Issue.record("a bundle not naming npa-dring was mapped on an npa-dring VF")
        } catch {
            #expect(
                "\(error)"
                    == "plugin bundle family.npabundle refused: does not name NIC model 'npa-dring', the model of the VF it was offered for"
            )
        }
    }

    /// The control for the test above: the bundle every bad one was made from passes, so each
    /// refusal there is its one fault's.
    @Test func theUnalteredBundleYieldsExactlyItsBinary() throws {
        let image = try ELFImagePatch.image("npa-cq-swift").bytes
        let bundle = PluginImages.bundle(try PluginImages.manifest(of: "cq-swift"), binary: image, key: PluginImages.signingKey)
        let binary = try InjectedBundle.verifiedBinary(
            adopting: Self.memfd(holding: bundle), name: "npa-cq-swift.npabundle", model: BadBundle.model, trust: PluginImages.trust)
        defer { try? binary.close() }
        #expect(try Self.contents(of: binary) == image)
    }
}
