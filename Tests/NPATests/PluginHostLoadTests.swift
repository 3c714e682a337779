import CNPAPluginABI
import NPAShell
import NPASystem
import Testing

@testable import NPAShell

/// What the shell refuses when it loads a plugin through its entry point, before the plugin
/// touches anything: a table for another ABI, an incomplete one, a private area too large.
@Suite struct PluginHostLoadTests {
    /// A complete table whose every operation does nothing.
    static func fill(_ ops: UnsafeMutablePointer<npa_plugin_ops>) {
        ops.pointee.abi_version = NPA_PLUGIN_ABI_VERSION
        ops.pointee.private_size = 64
        ops.pointee.sw_init = { _ in NPA_OK }
        ops.pointee.enable_interrupt = { _, _ in NPA_OK }
        ops.pointee.disable_interrupt = { _, _ in NPA_OK }
        ops.pointee.add_tx_frames = { _, _, _, _, _ in 0 }
        ops.pointee.check_tx_ring = { _, _ in 0 }
        ops.pointee.check_rx_ring = { _, _, _ in 0 }
        ops.pointee.refill_rx_ring = { _, _ in 0 }
    }

    static func entry(_ name: String) -> npa_plugin_entry_fn {
        switch name {
        case "ABI version":
            { ops in
                PluginHostLoadTests.fill(ops!); ops!.pointee.abi_version = 2; return NPA_OK
            }
        case "incomplete":
            { ops in
                PluginHostLoadTests.fill(ops!); ops!.pointee.check_rx_ring = nil; return NPA_OK
            }
        case "private area":
            { ops in
                PluginHostLoadTests.fill(ops!); ops!.pointee.private_size = 2 << 20; return NPA_OK
            }
        default:
            { ops in
                PluginHostLoadTests.fill(ops!); return NPA_OK
            }
        }
    }

    @Test(arguments: [
        ("works", ""), ("ABI version", "ABI version 2"), ("incomplete", "incomplete"), ("private area", "private area of 2097152 bytes"),
    ])
    func loadRefusesWhatItCannotHost(name: String, expected: String) throws {
        let entry = Self.entry(name)
        let memory = try SharedMemory(name: "load-guest", size: 1 << 20)
        let registers = try SharedMemory(name: "load-regs", size: Int(NPA_VF_REG_PAGE_SIZE))
        let region = npa_queue_region(
            va: memory.base, gpa: 0, size: 0x10000, ring_size: 256, interrupt_vector: 0, completion_offset: 0)
        let pool = BufferPool(baseVA: memory.base + 0x10000, baseGPA: 0x10000, bufferSize: 2048, count: 64)
        do {
            _ = try PluginHost(
                entry: entry, txRegions: [region], rxRegions: [region], registers: registers.base, registersSize: registers.size,
                pool: pool, ringSize: 256, doorbell: try EventNotifier())
            #expect(expected.isEmpty, "loaded a plugin the shell should refuse (\(name))")
        } catch let error as PluginHost.LoadError {
            #expect(!expected.isEmpty && error.description.contains(expected), "\(error.description)")
        }
    }
}
