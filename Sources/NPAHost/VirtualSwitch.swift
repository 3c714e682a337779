import NPAControlProtocol
import NPARingFormats

/// The host's software L2 switch. It joins emulated vNICs and the uplink, decides where each
/// frame goes by destination MAC and VLAN, and applies each port's receive filter. It never
/// touches guest memory: the caller hands it fields read from a host-private copy of the frame
/// and gets back destination ports, then does the copies itself.
///
/// Port state is kept in flat arrays so that routing a frame reads plain integers (no struct
/// copies, so no reference counting per frame). Single-threaded: only the engine thread calls it.
final class VirtualSwitch {
    private(set) var portInUse: [Bool] = []
    private(set) var portMAC: [UInt64] = []
    private var portRxMode: [UInt32] = []
    private var portIsUplink: [Bool] = []
    /// 64 words (4096 bits) of VLAN membership per port.
    private var portVLANs: [UInt64] = []
    private var portMulticast: [Set<MACAddress>] = []
    private var macTable = MACTable()
    private var promiscuousPorts = 0
    /// The MAC each vNIC's port belongs to, whatever its mode (in passthrough the port holds no
    /// MAC, its VF does): no two vNICs own one MAC.
    private var ownedMAC: [UInt64] = []
    private(set) var uplinkPort: Int?

    enum Verdict {
        /// This many destinations were written.
        case forward(Int)
        case unknownDestination
        case filtered
    }

    var portCount: Int { portInUse.count }

    func addPort(mac: MACAddress) -> Int {
        let index: Int
        if let free = portInUse.firstIndex(of: false) {
            index = free
        } else {
            index = portInUse.count
            portInUse.append(false)
            portMAC.append(0)
            portRxMode.append(0)
            portIsUplink.append(false)
            portVLANs += [UInt64](repeating: 0, count: 64)
            portMulticast.append([])
            ownedMAC.append(0)
        }
        portInUse[index] = true
        portMAC[index] = mac.value
        ownedMAC[index] = mac.value
        portRxMode[index] = VMXNET3.RxMode([.unicast, .broadcast]).rawValue
        portIsUplink[index] = false
        for w in 0..<64 { portVLANs[index * 64 + w] = 0 }
        portVLANs[index * 64] = 1  // VLAN 0
        portMulticast[index] = []
        learn(index)
        return index
    }

    func addUplink() -> Int {
        let index = addPort(mac: .zero)
        forget(index)
        portIsUplink[index] = true
        portRxMode[index] = VMXNET3.RxMode.promiscuous.rawValue
        for w in 0..<64 { portVLANs[index * 64 + w] = ~0 }
        uplinkPort = index
        return index
    }

    func removePort(_ index: Int) {
        forget(index)
        if portRxMode[index] & VMXNET3.RxMode.promiscuous.rawValue != 0 && !portIsUplink[index] { promiscuousPorts -= 1 }
        portInUse[index] = false
        portRxMode[index] = 0
        ownedMAC[index] = 0
    }

    /// The port of the vNIC that owns `mac`, if any.
    func owner(of mac: MACAddress) -> Int? {
        ownedMAC.indices.first { portInUse[$0] && !portIsUplink[$0] && ownedMAC[$0] == mac.value }
    }

    /// Records that the vNIC on `index` now owns `mac` (its port's MAC follows with `setMAC`).
    func setOwnedMAC(_ index: Int, _ mac: MACAddress) { ownedMAC[index] = mac.value }

    func setMAC(_ index: Int, _ mac: MACAddress) {
        forget(index)
        portMAC[index] = mac.value
        learn(index)
    }

    func setRxMode(_ index: Int, _ mode: VMXNET3.RxMode) {
        let was = portRxMode[index] & VMXNET3.RxMode.promiscuous.rawValue != 0
        let now = mode.contains(.promiscuous)
        promiscuousPorts += (now ? 1 : 0) - (was ? 1 : 0)
        portRxMode[index] = mode.rawValue
    }

    func setMulticast(_ index: Int, _ list: Set<MACAddress>) { portMulticast[index] = list }

    func setVLANs(_ index: Int, _ vlans: Set<UInt16>) {
        forget(index)
        for w in 0..<64 { portVLANs[index * 64 + w] = 0 }
        for v in vlans { portVLANs[index * 64 + Int(v >> 6)] |= 1 << UInt64(v & 63) }
        learn(index)
    }

    @inline(__always)
    func isMember(_ index: Int, vlan: UInt16) -> Bool {
        portVLANs[index &* 64 &+ Int(vlan >> 6)] & (1 << UInt64(vlan & 63)) != 0
    }

    /// Static learning: a vNIC's MAC lives on its port in every VLAN it is a member of.
    private func learn(_ index: Int) {
        guard portInUse[index], !portIsUplink[index], portMAC[index] != 0 else { return }
        forEachVLAN(of: index) { macTable.insert(MACTable.key(mac: portMAC[index], vlan: $0), port: index) }
    }

    /// Calls `body` with each VLAN the port is a member of: a walk over the set bits of its 64
    /// bitmap words, not over all 4096 IDs (a MAC or filter change was 4096 probes per port).
    private func forEachVLAN(of index: Int, _ body: (UInt16) -> Void) {
        for w in 0..<64 {
            var bits = portVLANs[index * 64 + w]
            while bits != 0 {
                body(UInt16(w * 64 + bits.trailingZeroBitCount))
                bits &= bits &- 1
            }
        }
    }

    private func forget(_ index: Int) {
        guard portInUse[index], !portIsUplink[index] else { return }
        forEachVLAN(of: index) { v in
            let k = MACTable.key(mac: portMAC[index], vlan: v)
            if macTable[k] == index { macTable.remove(k) }
        }
    }

    /// Whether a port's filter accepts a frame for `dst` (vmxnet3/QEMU order: promiscuous, then
    /// unicast must match, then broadcast, then all-multi or the multicast list).
    @inline(__always)
    private func accepts(_ index: Int, destination dst: UInt64) -> Bool {
        let mode = portRxMode[index]
        if mode & VMXNET3.RxMode.promiscuous.rawValue != 0 { return true }
        if dst == MACAddress.broadcast.value { return mode & VMXNET3.RxMode.broadcast.rawValue != 0 }
        if (dst >> 40) & 1 == 1 {
            return mode & VMXNET3.RxMode.allMulticast.rawValue != 0
                || (mode & VMXNET3.RxMode.multicast.rawValue != 0 && portMulticast[index].contains(MACAddress(value: dst)))
        }
        return mode & VMXNET3.RxMode.unicast.rawValue != 0 && dst == portMAC[index]
    }

    /// Decides where a frame from `ingress` goes. Writes destination ports into `destinations`
    /// (capacity at least `portCount`). Never returns the ingress port (no hairpin), so a frame
    /// cannot go back out where it came in.
    func route(destination dst: UInt64, vlan: UInt16, ingress: Int, into destinations: UnsafeMutablePointer<Int32>) -> Verdict {
        if (dst >> 40) & 1 == 1 {
            var n = 0
            for i in 0..<portInUse.count where i != ingress && portInUse[i] {
                guard isMember(i, vlan: vlan), accepts(i, destination: dst) else { continue }
                destinations[n] = Int32(i)
                n += 1
            }
            return n > 0 ? .forward(n) : .filtered
        }
        var n = 0
        if let target = macTable.port(mac: dst, vlan: vlan) {
            if target != ingress {
                guard accepts(target, destination: dst) else { return .filtered }
                destinations[0] = Int32(target)
                n = 1
            }
        } else if let uplink = uplinkPort, uplink != ingress {
            destinations[0] = Int32(uplink)
            n = 1
        }
        if promiscuousPorts > 0 {
            // Promiscuous vNICs in the VLAN also get a copy of unicast frames for others.
            for i in 0..<portInUse.count where i != ingress && portInUse[i] && !portIsUplink[i] {
                guard portRxMode[i] & VMXNET3.RxMode.promiscuous.rawValue != 0, isMember(i, vlan: vlan),
                    n == 0 || destinations[0] != Int32(i)
                else { continue }
                destinations[n] = Int32(i)
                n += 1
            }
        }
        if n == 0 { return .unknownDestination }  // counted by the sender's device as a drop
        return .forward(n)
    }
}
