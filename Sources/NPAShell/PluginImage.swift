import CNPAPluginABI
import Glibc
import NPASystem
import SystemPackage

/// A vendor plugin image the host injected: a memfd holding a freestanding ELF shared object.
/// Loading maps it straight from the descriptor (nothing is installed in the guest), finds the
/// one entry point, and checks the ABI version before the shell calls anything else.
///
/// A loaded image stays mapped while any `PluginHost` built from its entry is alive.
package final class PluginImage {
    package let entry: npa_plugin_entry_fn
    package let name: String
    package let version: String
    private let handle: UnsafeMutableRawPointer
    private let fd: FileDescriptor

    package struct LoadError: Error, CustomStringConvertible {
        package let description: String
    }

    /// Loads the image in `fd` (taking ownership of the descriptor).
    package init(adopting fd: FileDescriptor) throws {
        self.fd = fd
        // dlopen of /proc/self/fd/N maps the memfd itself; $ORIGIN would be /proc/self/fd, so a
        // plugin must not depend on sibling libraries (ours depend on nothing).
        guard let handle = dlopen("/proc/self/fd/\(fd.rawValue)", RTLD_NOW | RTLD_LOCAL) else {
            let reason = dlerror().map { String(cString: $0) } ?? "unknown error"
            try? fd.close()
            throw LoadError(description: "plugin image does not load: \(reason)")
        }
        guard let symbol = dlsym(handle, NPA_PLUGIN_ENTRY_SYMBOL) else {
            dlclose(handle)
            try? fd.close()
            throw LoadError(description: "plugin image has no \(NPA_PLUGIN_ENTRY_SYMBOL) entry point")
        }
        let entry = unsafeBitCast(symbol, to: npa_plugin_entry_fn.self)
        var ops = npa_plugin_ops()
        guard entry(&ops) == NPA_OK, ops.abi_version == NPA_PLUGIN_ABI_VERSION else {
            dlclose(handle)
            try? fd.close()
            throw LoadError(description: "plugin ABI version \(ops.abi_version) does not match the shell's \(NPA_PLUGIN_ABI_VERSION)")
        }
        self.handle = handle
        self.entry = entry
        name = ops.name.map { String(cString: $0) } ?? "?"
        version = ops.version.map { String(cString: $0) } ?? "?"
    }

    deinit {
        dlclose(handle)
        try? fd.close()
    }
}
