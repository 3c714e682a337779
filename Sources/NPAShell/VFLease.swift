import CNPAPluginABI
import NPAPluginBundle
import NPASystem
import SystemPackage

/// A switch-in offer as the host sent it: the plugin bundle (a memfd), the VF's register page
/// (a memfd) and the VF's kick eventfd, with the plugin's name and the VF's NIC model as the
/// host named them. Owns the three descriptors until `VFLease.load` takes them.
struct SwitchInOffer {
    let image: FileDescriptor
    let registers: FileDescriptor
    let kick: FileDescriptor
    var plugin = ""
    var model = ""

    /// The offer's descriptors in the host's order; anything else is closed and refused.
    init(_ descriptors: [FileDescriptor], plugin: String, model: String) throws {
        (self.plugin, self.model) = (plugin, model)
        guard descriptors.count == 3 else {
            for fd in descriptors { try? fd.close() }
            throw HostRefusal(code: 0, message: "switch-in offer without its three descriptors")
        }
        (image, registers, kick) = (descriptors[0], descriptors[1], descriptors[2])
    }

    /// Closes what has not been taken (an offer the shell refuses).
    func close() {
        for fd in [image, registers, kick] { try? fd.close() }
    }
}

/// What keeps the guest on a VF: the injected plugin image, the VF's register page and kick
/// eventfd, and the data path over the plugin. Releasing the lease (dropping it) unloads the
/// plugin and unmaps the page, so it is released only once its path is drained.
///
/// It touches only what it owns; loading maps the image and the page and runs the plugin's
/// software init over the VF's queue regions and the vNIC's buffer pool.
final class VFLease {
    let image: PluginImage
    let registers: SharedMemory
    let kick: EventNotifier
    let path: ShellDataPath

    private init(image: PluginImage, registers: SharedMemory, kick: EventNotifier, path: ShellDataPath) {
        self.image = image
        self.registers = registers
        self.kick = kick
        self.path = path
    }

    /// "name version" of the plugin, as the host shows it.
    var pluginDescription: String { "\(image.name) \(image.version)" }

    /// Checks the offered bundle against `trust` (`InjectedBundle`), loads its binary and builds
    /// the VF's data path over `tx`/`rx` regions and `pool`. Takes the offer's descriptors (all of
    /// them are closed on failure). `loaded` hears of the image as soon as it loads, before the
    /// plugin's init runs.
    static func load(
        _ offer: SwitchInOffer, trust: PluginTrustStore, tx: [npa_queue_region], rx: [npa_queue_region], pool: BufferPool,
        ringSize: Int, interrupt: EventNotifier, spinPolls: Int, link: HostLink, loaded: (PluginImage) -> Void
    ) throws -> VFLease {
        let image: PluginImage
        do {
            let binary = try InjectedBundle.verifiedBinary(
                adopting: offer.image, name: "\(offer.plugin).npabundle", model: offer.model, trust: trust)
            image = try PluginImage(adopting: binary)
        } catch {
            try? offer.registers.close()
            try? offer.kick.close()
            throw error
        }
        loaded(image)
        let registers: SharedMemory
        do {
            registers = try SharedMemory(adopting: offer.registers, minimumSize: 4096)
        } catch {
            try? offer.kick.close()
            throw error
        }
        let kick = EventNotifier(adopting: offer.kick)
        let plugin = try PluginHost(
            entry: image.entry, txRegions: tx, rxRegions: rx, registers: registers.base,
            registersSize: registers.size, pool: pool, ringSize: ringSize, doorbell: kick)
        let path = ShellDataPath(plugin: plugin, interrupt: interrupt, ringSize: ringSize, spinPolls: spinPolls)
        path.link = link
        return VFLease(image: image, registers: registers, kick: kick, path: path)
    }
}
