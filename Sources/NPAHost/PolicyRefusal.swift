import NPAControlProtocol

/// Why a live policy change (`npa policy set`) was refused. Each case names what it refused;
/// a refused change changed nothing, on any guest or path.
enum PolicyRefusal: Error, Equatable, CustomStringConvertible {
    /// Neither the configuration nor an attached vNIC nor an earlier change names the guest.
    case unknownGuest(String, known: [String])
    case noChange(guest: String)
    case vlanOutOfRange(UInt16)
    case macNotUnicast(MACAddress)
    case noMACs(guest: String)
    /// The guest's vNIC uses a MAC the new list leaves out.
    case macInUse(MACAddress, guest: String)
    /// A switch (or a VF reset's switch-out) is under way: it decides where the MAC and the
    /// filters live until it ends.
    case switchUnderWay(guest: String)
    /// The vNIC's state was saved to leave this host: a change would not travel with it.
    case moving(guest: String)

    var code: UInt32 {
        switch self {
        case .unknownGuest, .noChange, .vlanOutOfRange, .macNotUnicast, .noMACs: ControlMessage.ErrorCode.invalidArgument
        case .macInUse, .switchUnderWay, .moving: ControlMessage.ErrorCode.invalidState
        }
    }

    var description: String {
        switch self {
        case .unknownGuest(let name, let known):
            "no guest named '\(name)' is attached or configured (known: \(known.isEmpty ? "none" : known.joined(separator: ", ")))"
        case .noChange(let guest): "no policy change for guest '\(guest)': give --vlans, --macs, --promiscuous or --passthrough"
        case .vlanOutOfRange(let vlan): "VLAN \(vlan) is not a VLAN ID from 0 to 4094"
        case .macNotUnicast(let mac): "\(mac) is not a unicast MAC like 02:00:00:00:00:01"
        case .noMACs(let guest): "guest '\(guest)' needs at least one MAC (or any)"
        case .macInUse(let mac, let guest):
            "guest '\(guest)' uses MAC \(mac), which the new MAC list leaves out: nothing changed (add it, or change the guest's MAC first)"
        case .switchUnderWay(let guest):
            "guest '\(guest)' has a switch under way: nothing changed; try again when it has ended (npa status)"
        case .moving(let guest): "guest '\(guest)' is moving to another host: nothing changed"
        }
    }
}
