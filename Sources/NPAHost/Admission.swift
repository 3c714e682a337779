import NPAControlProtocol
import NPARingFormats

/// The host's one admission point. Every decision about what a guest may make of its vNIC — the
/// MAC it attaches with, a MAC it writes (MACL/MACH), the VLANs it joins, its rx mode, a move to
/// passthrough — is asked here, and checked against the guest's policy AND the state of the
/// whole host: a MAC belongs to one vNIC at a time, whichever mode each vNIC is in (the vswitch
/// records every vNIC's MAC, also while its port holds none because a VF carries it).
///
/// It reads the vswitch's MAC ownership and nothing else, and changes nothing: the caller
/// applies what was admitted, so a refusal leaves every state as it was. Only the host's thread
/// calls it.
final class Admission {
    private let vswitch: VirtualSwitch
    /// MACs held for vNICs expected to arrive from another host (`PendingArrivals`), by guest:
    /// owned as surely as a running vNIC's until the arrival resumes, fails or is cancelled.
    private(set) var reservedMACs: [MACAddress: String] = [:]

    init(vswitch: VirtualSwitch) { self.vswitch = vswitch }

    /// Holds `mac` for the arriving guest `guest`; the caller admitted it first (`admitRestored`).
    func reserve(_ mac: MACAddress, for guest: String) { reservedMACs[mac] = guest }

    /// Lets go of a reservation (the arrival resumes — its device then owns the MAC — or ends).
    func releaseReservation(of mac: MACAddress) { reservedMACs[mac] = nil }

    /// The MAC a guest attaches with: the one it asked for, or the first free one its policy
    /// lists, or (policy: any) a locally administered one derived from `candidate` upwards.
    func chooseMAC(requested: MACAddress?, guest: String, policy: GuestPolicy, candidate: UInt32) -> Result<MACAddress, AdmissionRefusal> {
        if let requested {
            if let refusal = admit(mac: requested, guest: guest, policy: policy, port: nil) { return .failure(refusal) }
            return .success(requested)
        }
        if let allowed = policy.allowedMACs {
            guard let free = allowed.first(where: { isFree($0, except: nil) }) else { return .failure(.noFreeAllowedMAC(guest: guest)) }
            return .success(free)
        }
        var id = candidate
        while !isFree(Self.generatedMAC(id), except: nil) { id &+= 1 }
        return .success(Self.generatedMAC(id))
    }

    /// The MACs a host hands out when policy leaves the choice to it: 02:4E:50 (locally
    /// administered, "NP") followed by a vNIC number.
    static func generatedMAC(_ id: UInt32) -> MACAddress { MACAddress(value: 0x024E_5000_0000 | UInt64(id)) }

    /// May `device` take `mac` (MACL/MACH)? Its policy must allow it and no other vNIC may own it.
    func admitMAC(_ mac: MACAddress, for device: EmulatedDevice) -> AdmissionRefusal? {
        admit(mac: mac, guest: device.name, policy: device.policy, port: device.port)
    }

    /// May `device` join exactly `vlans` (VLAN 0 included)?
    func admitVLANs(_ vlans: Set<UInt16>, for device: EmulatedDevice) -> AdmissionRefusal? {
        let refused = vlans.subtracting(device.policy.allowedVLANs)
        return refused.isEmpty ? nil : .vlansNotAllowed(refused.sorted(), guest: device.name)
    }

    /// May `device` use rx mode `mode`? Promiscuous needs the policy's permission.
    func admitRxMode(_ mode: VMXNET3.RxMode, for device: EmulatedDevice) -> AdmissionRefusal? {
        mode.contains(.promiscuous) && !device.policy.allowPromiscuous ? .promiscuousNotAllowed(guest: device.name) : nil
    }

    /// May `device` be moved to passthrough (a switch-in, asked by an admin or by
    /// `auto_passthrough`)? A move back to emulation is always admitted: it takes nothing.
    func admitSwitch(toPassthrough: Bool, for device: EmulatedDevice) -> AdmissionRefusal? {
        toPassthrough && !device.policy.allowPassthrough ? .passthroughNotAllowed(guest: device.name) : nil
    }

    /// May a restored device (a checkpoint here, a migration from another host) keep the MAC,
    /// VLANs and rx mode `state` carries, under this host's `policy`? `port` is its own port if
    /// it keeps one.
    func admitRestored(_ state: DeviceState, policy: GuestPolicy, port: Int?) -> AdmissionRefusal? {
        if let refusal = admit(mac: state.identity.mac, guest: state.name, policy: policy, port: port) { return refusal }
        let refused = Set(state.filters.vlans).subtracting(policy.allowedVLANs)
        if !refused.isEmpty { return .vlansNotAllowed(refused.sorted(), guest: state.name) }
        if state.filters.rxMode.contains(.promiscuous) && !policy.allowPromiscuous { return .promiscuousNotAllowed(guest: state.name) }
        return nil
    }

    private func admit(mac: MACAddress, guest: String, policy: GuestPolicy, port: Int?) -> AdmissionRefusal? {
        guard policy.allows(mac: mac) else { return .macNotAllowed(mac, guest: guest) }
        guard isFree(mac, except: port) else { return .macInUse(mac) }
        return nil
    }

    /// No vNIC but the one on `port` owns `mac`, in either mode, and no arrival holds it.
    private func isFree(_ mac: MACAddress, except port: Int?) -> Bool {
        if reservedMACs[mac] != nil { return false }
        guard let owner = vswitch.owner(of: mac) else { return true }
        return owner == port
    }
}

/// Why admission refused a request. Each case says which rule and names what it refused; its
/// wire code is chosen in `ControlRefusal` (one place for every refusal the host sends).
enum AdmissionRefusal: Error, Equatable, CustomStringConvertible {
    /// The guest's policy does not list this MAC (or it is not a unicast MAC).
    case macNotAllowed(MACAddress, guest: String)
    /// Another vNIC on this host owns the MAC.
    case macInUse(MACAddress)
    /// Every MAC the guest's policy lists is owned by other vNICs.
    case noFreeAllowedMAC(guest: String)
    case vlansNotAllowed([UInt16], guest: String)
    case promiscuousNotAllowed(guest: String)
    case passthroughNotAllowed(guest: String)

    var description: String {
        switch self {
        case .macNotAllowed(let mac, let guest): "MAC \(mac) is not allowed for guest '\(guest)' by host policy"
        case .macInUse(let mac): "MAC \(mac) is already used by another vNIC"
        case .noFreeAllowedMAC(let guest): "every MAC policy allows guest '\(guest)' is in use"
        case .vlansNotAllowed(let vlans, let guest):
            "VLAN \(vlans.map(String.init).joined(separator: ", ")) not allowed for guest '\(guest)' by host policy"
        case .promiscuousNotAllowed(let guest): "promiscuous mode is not allowed for guest '\(guest)' by host policy"
        case .passthroughNotAllowed(let guest): "passthrough is not allowed for guest '\(guest)' by host policy"
        }
    }
}
