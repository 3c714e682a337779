/// What a migration did with one vNIC's frames on this host, and its self-announcements: shown
/// with the vNIC's counters in `npa status` (and only once the vNIC has migrated or is
/// migrating). Kept by `HostDataPath` per guest name; written only by the host's thread.
struct MigrationFrameCounters: Equatable {
    /// Source side: frames held for the stopped device, frames taken to forward to the
    /// destination, frames given back to the device (the migration failed) and frames discarded
    /// when holding ended (the migration was done; the orchestration took none of them).
    var held: UInt64 = 0
    var forwardedOut: UInt64 = 0
    var released: UInt64 = 0
    var discarded: UInt64 = 0
    /// Destination side: forwarded frames accepted for the guest, and refused (not Ethernet:
    /// shorter than a header).
    var forwardedIn: UInt64 = 0
    var forwardedRefused: UInt64 = 0
    /// Either side: frames that found the hold (or the forwarded queue) full.
    var overflowDrops: UInt64 = 0
    /// Self-announcement rounds done and RARP frames built (one per VLAN per round; each went
    /// out of every wire).
    var announceRounds: UInt64 = 0
    var announceFrames: UInt64 = 0

    /// These counters with a hold's (frames it kept, frames that found it full).
    func adding(_ hold: MigrationHeldFrames) -> MigrationFrameCounters {
        var sum = self
        sum.held &+= hold.kept
        sum.overflowDrops &+= hold.overflowDrops
        return sum
    }

    func named() -> [(String, UInt64)] {
        [
            ("migration_held", held), ("migration_forwarded_out", forwardedOut), ("migration_released", released),
            ("migration_discarded", discarded), ("migration_forwarded_in", forwardedIn),
            ("migration_forwarded_refused", forwardedRefused), ("drop_migration_overflow", overflowDrops),
            ("announce_rounds", announceRounds), ("announce_frames", announceFrames),
        ]
    }
}
