import Foundation
import NPANICModel
import NPASystem

/// Where the host finds the vendor plugin image for a NIC model, and how it hands one to a guest:
/// as a memfd holding the image's bytes (nothing is installed inside the guest). Today the images
/// are taken from `plugin_dir` as they are; signature, licence and ABI checks will land here.
/// It reads that directory and nothing else.
struct PluginStore {
    let directory: String

    /// The image the host injects for a NIC model: the first of its plugins found in the directory.
    func image(for model: NICModel) -> (name: String, path: String)? {
        for name in model.pluginImages {
            let path = directory + "/" + name + ".so"
            if FileManager.default.fileExists(atPath: path) { return (name, path) }
        }
        return nil
    }

    /// Injection: the image's bytes in a fresh memfd.
    func memfd(_ path: String) throws -> SharedMemory {
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let memory = try SharedMemory(name: "npa-plugin-image", size: max(bytes.count, 1))
        bytes.withUnsafeBytes { memory.base.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        return memory
    }
}
