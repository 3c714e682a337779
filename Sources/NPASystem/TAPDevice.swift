import CNPAShim
import Glibc
import SystemPackage

/// A TAP interface's file descriptor: whole Ethernet frames (no packet-information prefix; a
/// 12-byte virtio-net header before each one when opened with `virtioNetHeader`, the way to
/// checksum and segmentation offloads) between this process and the kernel's network stack. Non-blocking: reads
/// and writes never wait; `waitReadable` is where a caller sleeps. Owns the descriptor; the
/// interface the kernel created for it goes away when the last descriptor on it closes.
public final class TAPDevice: @unchecked Sendable {
    public let fd: FileDescriptor
    /// The interface's name as the kernel gave it (as asked, or e.g. "tap0" when none was asked).
    public let interfaceName: String
    /// Whether every frame read and written is preceded by a `VirtioNetHeader` (IFF_VNET_HDR).
    public let virtioNetHeader: Bool

    /// Opens (creating if needed) the TAP interface `name` (at most 15 bytes; empty: the kernel
    /// picks a name), with the virtio-net header if asked. Needs CAP_NET_ADMIN and /dev/net/tun.
    public init(name: String = "", virtioNetHeader: Bool = false) throws {
        var given = [CChar](repeating: 0, count: 16)
        let raw = try shimCall("open(/dev/net/tun)+TUNSETIFF(\(name))") {
            given.withUnsafeMutableBufferPointer {
                virtioNetHeader ? cnpa_tap_open_with_vnet_header(name, $0.baseAddress!) : cnpa_tap_open(name, $0.baseAddress!)
            }
        }
        fd = FileDescriptor(rawValue: raw)
        interfaceName = given.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        self.virtioNetHeader = virtioNetHeader
    }

    /// TUNSETOFFLOAD: whether the kernel may hand over frames that still need their checksum
    /// (NEEDS_CSUM) and TCP GSO super-frames (IPv4, IPv6, ECN). Needs the virtio-net header.
    public func setOffloads(_ enabled: Bool) throws {
        precondition(virtioNetHeader, "offloads need a TAP opened with the virtio-net header")
        _ = try shimCall("TUNSETOFFLOAD(\(interfaceName))") { cnpa_tap_set_offloads(fd.rawValue, enabled ? 1 : 0) }
    }

    /// Bounds the GSO super-frames the kernel builds for this interface: at most `maxSize` bytes
    /// and `maxSegments` segments (gso_max_size / gso_max_segs, set over rtnetlink).
    public func setGSOLimits(maxSize: Int, maxSegments: Int) throws {
        _ = try shimCall("RTM_NEWLINK gso_max_size/segs(\(interfaceName))") {
            cnpa_netif_set_gso_limits(interfaceName, UInt32(maxSize), UInt32(maxSegments))
        }
    }

    /// Writes one frame after its virtio-net header (`header`, 12 bytes) in one writev(2). False
    /// when the kernel's queue is full; throws when the interface is unusable.
    public func writeFrame(header: UnsafeRawBufferPointer, _ frame: UnsafeRawBufferPointer) throws -> Bool {
        var parts = (
            iovec(iov_base: UnsafeMutableRawPointer(mutating: header.baseAddress), iov_len: header.count),
            iovec(iov_base: UnsafeMutableRawPointer(mutating: frame.baseAddress), iov_len: frame.count)
        )
        while true {
            let n = withUnsafePointer(to: &parts) { $0.withMemoryRebound(to: iovec.self, capacity: 2) { Glibc.writev(fd.rawValue, $0, 2) } }
            if n >= 0 { return true }
            let err = Errno(rawValue: Glibc.errno)
            if err == .interrupted { continue }
            if err == .wouldBlock || err == .noBufferSpace { return false }
            precondition(err != .badFileDescriptor && err != .badAddress, "writev(TAP): \(err) is a bug")
            throw SystemCallError("write(TAP \(interfaceName))", err)
        }
    }

    /// True if this process can open TAP devices at all: /dev/net/tun exists and we are root.
    public static var isAvailable: Bool { geteuid() == 0 && access("/dev/net/tun", R_OK | W_OK) == 0 }

    /// Reads one frame into `buffer`; returns its length, or nil when the kernel has none ready.
    /// A frame longer than `buffer` is truncated by the kernel (the caller sizes for the MTU and
    /// drops what is longer, so truncation shows up as a frame of exactly the buffer's size).
    public func readFrame(into buffer: UnsafeMutableRawBufferPointer) throws -> Int? {
        // EAGAIN ends every batch: answered without building an error (no allocation).
        while true {
            let n = Glibc.read(fd.rawValue, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            let err = Errno(rawValue: Glibc.errno)
            if err == .interrupted { continue }
            if err == .wouldBlock { return nil }
            precondition(err != .badFileDescriptor && err != .badAddress, "read(TAP): \(err) is a bug")
            throw SystemCallError("read(TAP \(interfaceName))", err)
        }
    }

    /// Writes one frame. False when the kernel's queue is full (the frame is dropped, as a NIC
    /// drops what a full host cannot take); throws when the interface is unusable (e.g. deleted).
    public func writeFrame(_ frame: UnsafeRawBufferPointer) throws -> Bool {
        while true {
            if Glibc.write(fd.rawValue, frame.baseAddress, frame.count) >= 0 { return true }
            let err = Errno(rawValue: Glibc.errno)
            if err == .interrupted { continue }
            if err == .wouldBlock || err == .noBufferSpace { return false }
            precondition(err != .badFileDescriptor && err != .badAddress, "write(TAP): \(err) is a bug")
            throw SystemCallError("write(TAP \(interfaceName))", err)
        }
    }

    /// Gives the interface the Ethernet address `mac` (6 bytes): the guest's vNIC MAC, so the
    /// kernel answers ARP with the address the host's switch delivers to.
    public func setHardwareAddress(_ mac: [UInt8]) throws {
        precondition(mac.count == 6, "an Ethernet address is 6 bytes")
        _ = try shimCall("SIOCSIFHWADDR(\(interfaceName))") { cnpa_netif_set_mac(interfaceName, mac) }
    }

    /// Sets the interface's MTU (the vNIC's, so the kernel sends nothing the vNIC cannot take).
    public func setMTU(_ mtu: Int) throws {
        _ = try shimCall("SIOCSIFMTU(\(interfaceName))") { cnpa_netif_set_mtu(interfaceName, Int32(mtu)) }
    }

    /// Sets how many frames the kernel queues for this TAP's reader before it drops them (the
    /// interface's txqueuelen; a TAP has no flow control towards the kernel's stack, so a queue
    /// shorter than what TCP keeps in flight loses frames whenever the reader falls behind).
    public func setTransmitQueueLength(_ length: Int) throws {
        _ = try shimCall("SIOCSIFTXQLEN(\(interfaceName))") { cnpa_netif_set_txqueuelen(interfaceName, Int32(length)) }
    }

    /// Sleeps until a frame is ready to read or `timeoutMilliseconds` passes (-1: forever).
    /// True if one is ready (or the device reports an error, which the next read throws).
    public func waitReadable(timeoutMilliseconds: Int32) -> Bool {
        var pfd = pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0)
        return Glibc.poll(&pfd, 1, timeoutMilliseconds) > 0
    }

    deinit { try? fd.close() }
}
