import Foundation
import NPASystem
import SystemPackage

/// The freestanding plugin images, built once per test process with the project's script
/// (scripts/build-plugins.sh), and the host's way of handing one to a shell (a memfd). Touches
/// only the file system and its own temporary directory.
package enum PluginImages {
    private static let built = Result { try buildNow() }

    /// The directory holding `<image>.so` for every plugin image; built on first use.
    package static func directory() throws -> URL { try built.get() }

    private static func buildNow() throws -> URL {
        // This file is Tests/NPATestSupport/PluginImages.swift: three levels below the root.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let out = FileManager.default.temporaryDirectory.appendingPathComponent(
            "npa-plugins-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        let build = Process()
        build.executableURL = URL(fileURLWithPath: "/bin/bash")
        build.arguments = [root.appendingPathComponent("scripts/build-plugins.sh").path, out.path]
        build.standardOutput = FileHandle.nullDevice
        try build.run()
        build.waitUntilExit()
        guard build.terminationStatus == 0 else { throw CocoaError(.executableLoad) }
        return out
    }

    /// What the host does to inject an image: put its bytes in a memfd.
    package static func memfd(holding path: String) throws -> FileDescriptor {
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let memory = try SharedMemory(name: "plugin-image", size: bytes.count)
        bytes.withUnsafeBytes { memory.base.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        return try memory.fd.duplicate()
    }

    /// The built image named `name` (e.g. "npa-cq-swift"), in a memfd.
    package static func memfd(named name: String) throws -> FileDescriptor {
        try memfd(holding: directory().appendingPathComponent("\(name).so").path)
    }
}
