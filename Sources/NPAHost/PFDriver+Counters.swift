import NPANICModel

/// What the VFs counted for the guests that held them: by name, as status, the guest's
/// `countersRequest` and the metrics report them.
extension PFDriver {
    /// The guest-visible counters of a VF, by name (drops as `drop_vf_<reason>`).
    static func vfCounters(_ v: VirtualFunction.Counters) -> [String: UInt64] {
        [
            "vf_tx_frames": v.txFrames, "vf_rx_frames": v.rxFrames, "vf_tx_bytes": v.txBytes, "vf_rx_bytes": v.rxBytes,
            "drop_vf_no_buffers": v.noBufferDrops,
            "drop_vf_spoofed_source": v.spoofedDrops, "drop_vf_vlan_refused": v.vlanDrops, "drop_vf_dma_fault": v.dmaFaults,
            "drop_vf_bad_descriptor": v.badDescriptors, "drop_vf_frame_too_long": v.frameTooLong, "vf_interrupts": v.interrupts,
            "drop_vf_bad_offload": v.badOffloads, "vf_tso_segments": v.segments,
        ]
    }

    /// Counters of the VF now held plus those held before, so nothing the guest's NIC counted
    /// disappears when it moves back to emulation.
    func vfCounterTotals(_ device: EmulatedDevice) -> [String: UInt64] {
        var totals = device.earlierVFCounters
        if let (nic, index) = vf(of: device) {
            for (k, v) in Self.vfCounters(nic.counters(vf: index)) { totals[k, default: 0] += v }
        }
        return totals
    }
}
