import Foundation
import NPAShell
import NPASystem
import NPAWorkload

/// Guests whose OS is the Linux kernel's TCP/IP stack: each given vNIC is bridged by a
/// `TAPBridge`, on its own thread, to a TAP interface in a network namespace made for it, with
/// the address `10.<subnet>.0.<i+1>/24` and the link up. The setup of the TAP guest tests.
///
/// Owns the namespaces (unique names: pid and a random tag) and the bridge threads; it does not
/// own the vNICs' host. While the bridges run, each vNIC belongs to its bridge's thread: a test
/// switches a guest through the host's admin socket and lets the bridge carry the switch out.
/// `tearDown` (also run by `deinit`, and by `init` when it fails half way) stops and joins the
/// threads, then deletes the namespaces, whatever state the test left them in.
package final class KernelStackGuests {
    /// Where a guest's TAP interface is created.
    package enum TAPPlacement: Sendable {
        /// Made inside its namespace, as `npa guest tap --netns` does.
        case madeInNamespace
        /// Made in the test's namespace, then moved: what a user does with `ip link set IF netns NS`.
        case movedIntoNamespace
    }

    package let namespaces: [String]
    /// The TAP interface of each guest, inside its namespace.
    package let interfaces: [String]
    /// Each guest's IPv4 address (without the prefix length).
    package let addresses: [String]
    package private(set) var bridges: [BridgeThread] = []
    private let stop = StopFlag()
    private let stopCheckMilliseconds: Int
    private var createdNamespaces: [String] = []

    /// - Parameters:
    ///   - nics: the guests, attached and in the mode the test wants them to start in.
    ///   - subnet: the second octet of the guests' /24, so that concurrent suites differ.
    ///   - placements: per guest; all `.madeInNamespace` when nil.
    ///   - stopCheckMilliseconds: how long an idle bridge sleeps between looks at its stop flag.
    ///     Beyond the default, `stopBridges` returns only once each bridge had a frame or an
    ///     interrupt after `requestStop` (a test sends one: see `requestStop`).
    package init(
        nics: [VirtualNIC], subnet: UInt8, placements: [TAPPlacement]? = nil, stopCheckMilliseconds: Int = TAPBridge.stopCheckMilliseconds
    ) throws {
        self.stopCheckMilliseconds = stopCheckMilliseconds
        let tag = String(UInt32.random(in: 0...0xFF_FFFF), radix: 16)
        namespaces = nics.indices.map { "npa-k-\(getpid())-\(tag)-\($0)" }
        // IFNAMSIZ allows 15 characters: "npk" + 6 hex digits + the index.
        interfaces = nics.indices.map { "npk\(tag)\($0)" }
        addresses = nics.indices.map { "10.\(subnet).0.\($0 + 1)" }
        do {
            for (i, nic) in nics.enumerated() {
                try addGuest(i, nic: nic, placement: placements?[i] ?? .madeInNamespace)
            }
        } catch {
            tearDown()
            throw error
        }
    }

    private func addGuest(_ i: Int, nic: VirtualNIC, placement: TAPPlacement) throws {
        let ns = namespaces[i]
        try ip(["netns", "add", ns])
        createdNamespaces.append(ns)
        let bridge: TAPBridge
        switch placement {
        case .movedIntoNamespace:
            bridge = try TAPBridge(nic: nic, tap: TAPDevice(name: interfaces[i]))
            try ip(["link", "set", interfaces[i], "netns", ns])
        case .madeInNamespace:
            bridge = try NetworkNamespace.run(in: NetworkNamespace.path(ofNamed: ns)) {
                try TAPBridge(nic: nic, tap: TAPDevice(name: interfaces[i]))
            }
        }
        try ip(["-n", ns, "addr", "add", "\(addresses[i])/24", "dev", interfaces[i]])
        try ip(["-n", ns, "link", "set", interfaces[i], "up"])
        bridges.append(BridgeThread(bridge: bridge, stop: stop, stopCheckMilliseconds: stopCheckMilliseconds))
    }

    /// Asks the bridges to stop; each does at its next wake-up (at the latest after its stop
    /// check period).
    package func requestStop() { stop.set() }

    /// Stops the bridge threads and waits for them; their counters and errors may be read after.
    package func stopBridges() {
        stop.set()
        for bridge in bridges { bridge.join() }
    }

    /// Stops the bridges, then deletes every namespace this fixture made (and with it the TAPs
    /// inside). Safe to call more than once.
    package func tearDown() {
        stopBridges()
        for ns in createdNamespaces { _ = try? ip(["netns", "delete", ns]) }
        createdNamespaces.removeAll()
    }

    deinit { tearDown() }
}
