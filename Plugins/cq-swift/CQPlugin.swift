// SPDX-License-Identifier: GPL-2.0-only
// npa-cq vendor plugin in Embedded Swift: drives a VF of the npa-cq NIC model (submission and
// completion queues, request ids, ownership by a phase bit). The same contract as the C plugins
// (see npa_plugin_abi.h, npa_nic_models.h): no OS calls, no allocation, no globals; state lives
// in the private area and the queue regions the shell hands in.
//
// Built by scripts/build-plugins.sh with
//   swiftc -enable-experimental-feature Embedded -wmo -parse-as-library -O -c
// and linked with `clang -shared -nostdlib`, exporting only npa_plugin_main.
//
// Region layout per queue: submission queue (ring_size x 16 bytes), completion queue (ring_size
// x 16 bytes; its offset is reported in completion_offset), then the buffer-id shadow.

import CNPAPluginABI

/// Cursors of one queue, kept in the private area.
struct QueueState {
    var sq: UnsafeMutableRawPointer?
    var cq: UnsafeMutableRawPointer?
    var bufferIDs: UnsafeMutablePointer<UInt32>?
    var size: UInt32 = 0
    var sqTail: UInt32 = 0
    var sqPhase: UInt8 = 1
    var cqPhase: UInt8 = 1
    var cqHead: UInt32 = 0
    var inFlight: UInt32 = 0
    var packets: UInt64 = 0
    var bytes: UInt64 = 0
    var errors: UInt64 = 0
}

let maxQueues = Int(NPA_PLUGIN_MAX_QUEUES)

@inline(__always)
func queue(_ s: UnsafeMutablePointer<npa_plugin_state>, _ q: UInt32, rx: Bool) -> UnsafeMutablePointer<QueueState> {
    s.pointee.private_area.assumingMemoryBound(to: QueueState.self) + Int(q) + (rx ? maxQueues : 0)
}

@inline(__always)
func region(_ s: UnsafeMutablePointer<npa_plugin_state>, _ q: Int, rx: Bool) -> npa_queue_region {
    withUnsafePointer(to: rx ? s.pointee.rx_queues : s.pointee.tx_queues) {
        $0.withMemoryRebound(to: npa_queue_region.self, capacity: maxQueues) { $0[q] }
    }
}

/// Tells the shell where queue `q`'s completion ring is in its region (npa_queue_region).
func reportCompletionOffset(_ s: UnsafeMutablePointer<npa_plugin_state>, _ q: Int, rx: Bool, _ offset: UInt32) {
    func set(_ regions: UnsafeMutableRawPointer) {
        regions.assumingMemoryBound(to: npa_queue_region.self)[q].completion_offset = offset
    }
    if rx {
        withUnsafeMutablePointer(to: &s.pointee.rx_queues) { set(UnsafeMutableRawPointer($0)) }
    } else {
        withUnsafeMutablePointer(to: &s.pointee.tx_queues) { set(UnsafeMutableRawPointer($0)) }
    }
}

func resetQueue(_ q: UnsafeMutablePointer<QueueState>) -> Int32 {
    guard let sq = q.pointee.sq else { return NPA_ERR_INVALID }
    let bytes = Int(q.pointee.size) * 32
    for i in 0..<bytes { sq.storeBytes(of: UInt8(0), toByteOffset: i, as: UInt8.self) }
    q.pointee.sqTail = 0
    q.pointee.cqHead = 0
    q.pointee.inFlight = 0
    q.pointee.sqPhase = 1
    q.pointee.cqPhase = 1
    return NPA_OK
}

func softwareInit(_ s: UnsafeMutablePointer<npa_plugin_state>) -> Int32 {
    let nt = s.pointee.num_tx_queues, nr = s.pointee.num_rx_queues
    guard nt >= 1, nt <= NPA_VF_MAX_QUEUES, nr >= 1, nr <= NPA_VF_MAX_QUEUES, s.pointee.registers != nil,
        s.pointee.registers_size >= UInt64(NPA_VF_REG_PAGE_SIZE)
    else { return NPA_ERR_INVALID }
    for rx in [false, true] {
        for i in 0..<Int(rx ? nr : nt) {
            let r = region(s, i, rx: rx)
            let n = r.ring_size
            guard n >= 32, n <= 4096, n & (n - 1) == 0, let va = r.va else { return NPA_ERR_INVALID }
            guard UInt64(r.size) >= UInt64(n) * 36 else { return NPA_ERR_NO_SPACE }
            let q = queue(s, UInt32(i), rx: rx)
            q.pointee = QueueState()
            q.pointee.sq = va
            q.pointee.cq = va + Int(n) * 16
            q.pointee.bufferIDs = (va + Int(n) * 32).assumingMemoryBound(to: UInt32.self)
            q.pointee.size = n
            reportCompletionOffset(s, i, rx: rx, n * 16)
            _ = resetQueue(q)
        }
    }
    return NPA_OK
}

func setMask(_ s: UnsafeMutablePointer<npa_plugin_state>, _ vector: UInt32, _ masked: UInt32) -> Int32 {
    npa_set_interrupt_mask(s, vector, masked)  // unmask is fenced: the shell re-checks the rings next
}

/// Writes one submission entry; its phase tells the NIC the entry is from this lap. `offload`
/// is NPA_CQ_SQ_CSUM / NPA_CQ_SQ_TSO or 0, with its l4_offset and meta (npa_nic_models.h).
@inline(__always)
func submit(
    _ q: UnsafeMutablePointer<QueueState>, _ gpa: UInt64, _ length: UInt16, offload: UInt8 = 0, l4Offset: UInt8 = 0, meta: UInt16 = 0
) {
    let slot = q.pointee.sqTail & (q.pointee.size - 1)
    let e = q.pointee.sq! + Int(slot) * 16
    e.storeBytes(of: gpa, as: UInt64.self)
    e.storeBytes(of: length, toByteOffset: 8, as: UInt16.self)
    e.storeBytes(of: UInt16(truncatingIfNeeded: slot), toByteOffset: 10, as: UInt16.self)
    e.storeBytes(of: q.pointee.sqPhase | offload, toByteOffset: 12, as: UInt8.self)
    e.storeBytes(of: l4Offset, toByteOffset: 13, as: UInt8.self)
    e.storeBytes(of: meta, toByteOffset: 14, as: UInt16.self)
    q.pointee.sqTail &+= 1
    if q.pointee.sqTail & (q.pointee.size - 1) == 0 { q.pointee.sqPhase ^= 1 }
    q.pointee.inFlight += 1
}

/// The next completion, if the NIC has written it (its phase matches ours).
@inline(__always)
func nextCompletion(_ q: UnsafeMutablePointer<QueueState>) -> UnsafeMutableRawPointer? {
    let c = q.pointee.cq! + Int(q.pointee.cqHead) * 16
    let word = npa_load_acquire_u32(c + 4)
    guard UInt8(truncatingIfNeeded: word) & UInt8(NPA_CQ_FLAG_PHASE) == q.pointee.cqPhase else { return nil }
    q.pointee.cqHead += 1
    if q.pointee.cqHead == q.pointee.size {
        q.pointee.cqHead = 0
        q.pointee.cqPhase ^= 1
    }
    return c
}

func addTx(
    _ s: UnsafeMutablePointer<npa_plugin_state>, _ qi: UInt32, _ frames: UnsafePointer<npa_tx_frame>, _ count: UInt32, _ flags: UInt32
) -> UInt32 {
    guard qi < s.pointee.num_tx_queues else { return 0 }
    let q = queue(s, qi, rx: false)
    var added: UInt32 = 0
    while added < count && q.pointee.inFlight < q.pointee.size - 1 {
        let f = frames[Int(added)]
        var offload: UInt8 = 0
        if UInt32(f.flags) & NPA_TX_FLAG_TSO != 0 {
            offload = UInt8(NPA_CQ_SQ_TSO)
        } else if UInt32(f.flags) & NPA_TX_FLAG_CSUM != 0 {
            offload = UInt8(NPA_CQ_SQ_CSUM)
        }
        // What this format cannot say (a length over 16 bits, a header over a byte) is posted as
        // length 0, which the NIC refuses: the frame is dropped, in order, and counted.
        let unsayable = f.length > 0xFFFF || (offload != 0 && f.offload_header_length > 0xFF)
        submit(
            q, f.gpa, unsayable ? 0 : UInt16(truncatingIfNeeded: f.length), offload: offload,
            l4Offset: UInt8(truncatingIfNeeded: f.offload_header_length), meta: offload != 0 ? f.offload_mss_or_csum : 0)
        q.pointee.bytes &+= UInt64(f.length)
        added += 1
    }
    q.pointee.packets &+= UInt64(added)
    if added > 0 && flags & NPA_TX_FLAG_LAST_HINT != 0 {
        npa_ring_doorbell(s, qi, NPA_CQ_REG_TX_SQ_TAIL(qi), q.pointee.sqTail)
    }
    return added
}

func checkTx(_ s: UnsafeMutablePointer<npa_plugin_state>, _ qi: UInt32) -> UInt32 {
    guard qi < s.pointee.num_tx_queues else { return 0 }
    let q = queue(s, qi, rx: false)
    var done: UInt32 = 0
    // The NIC completes a queue's requests in submission order, so a count is exact.
    while q.pointee.inFlight > 0, let c = nextCompletion(q) {
        if c.load(fromByteOffset: 5, as: UInt8.self) & UInt8(NPA_CQ_STATUS_ERROR) != 0 { q.pointee.errors &+= 1 }
        q.pointee.inFlight -= 1
        done += 1
    }
    if done > 0 { s.pointee.shell.pointee.complete_send(s.pointee.shell.pointee.shell, qi, done) }
    return done
}

func refillRx(_ s: UnsafeMutablePointer<npa_plugin_state>, _ qi: UInt32) -> UInt32 {
    guard qi < s.pointee.num_rx_queues else { return 0 }
    _ = npa_vf_check_enabled(s)  // reports a VF that went down under us; harvest regardless
    let q = queue(s, qi, rx: true)
    let shell = s.pointee.shell.pointee
    let length = UInt16(truncatingIfNeeded: min(s.pointee.rx_buffer_size, 65535))
    var posted: UInt32 = 0
    while q.pointee.inFlight < q.pointee.size - 1 {
        var id: UInt32 = 0
        var gpa: UInt64 = 0
        guard shell.alloc_rx_buffer(shell.shell, qi, &id, &gpa) == NPA_OK else { break }
        q.pointee.bufferIDs![Int(q.pointee.sqTail & (q.pointee.size - 1))] = id
        submit(q, gpa, length)
        posted += 1
    }
    if posted > 0 { npa_reg_write(s, NPA_CQ_REG_RX_SQ_TAIL(qi), q.pointee.sqTail) }
    return posted
}

func checkRx(_ s: UnsafeMutablePointer<npa_plugin_state>, _ qi: UInt32, _ maxFrames: UInt32) -> UInt32 {
    guard qi < s.pointee.num_rx_queues else { return 0 }
    _ = npa_vf_check_enabled(s)  // reports a VF that went down under us; harvest regardless
    let q = queue(s, qi, rx: true)
    let shell = s.pointee.shell.pointee
    var n: UInt32 = 0
    while n < maxFrames && q.pointee.inFlight > 0, let c = nextCompletion(q) {
        let requestID = Int(c.load(as: UInt16.self)) & Int(q.pointee.size - 1)
        let length = c.load(fromByteOffset: 2, as: UInt16.self)
        let failed = c.load(fromByteOffset: 5, as: UInt8.self) & UInt8(NPA_CQ_STATUS_ERROR) != 0
        let checksumOK = c.load(fromByteOffset: 4, as: UInt8.self) & UInt8(NPA_CQ_FLAG_CSUM_OK) != 0
        var frame = npa_rx_frame(
            buf_id: q.pointee.bufferIDs![requestID], length: UInt32(length), rss_hash: c.load(fromByteOffset: 8, as: UInt32.self),
            vlan_tci: 0,
            flags: UInt16(NPA_RX_FLAG_RSS) | (failed ? UInt16(NPA_RX_FLAG_ERROR) : 0) | (checksumOK ? UInt16(NPA_RX_FLAG_CSUM_VALID) : 0))
        if failed {
            q.pointee.errors &+= 1
        } else {
            q.pointee.packets &+= 1
            q.pointee.bytes &+= UInt64(length)
        }
        q.pointee.inFlight -= 1
        shell.indicate_recv(shell.shell, qi, &frame)
        n += 1
    }
    return n
}

@c(npa_plugin_main)
public func npaPluginMain(_ ops: UnsafeMutablePointer<npa_plugin_ops>?) -> Int32 {
    guard let ops else { return NPA_ERR_INVALID }
    ops.pointee.abi_version = NPA_PLUGIN_ABI_VERSION
    ops.pointee.private_size = UInt32(MemoryLayout<QueueState>.stride * 2 * maxQueues)
    ops.pointee.name = pluginName
    ops.pointee.version = pluginVersion
    ops.pointee.sw_init = { s in softwareInit(s!) }
    ops.pointee.reinit_tx_ring = { s, q in q < s!.pointee.num_tx_queues ? resetQueue(queue(s!, q, rx: false)) : NPA_ERR_INVALID }
    ops.pointee.reinit_rx_ring = { s, q in q < s!.pointee.num_rx_queues ? resetQueue(queue(s!, q, rx: true)) : NPA_ERR_INVALID }
    ops.pointee.enable_interrupt = { s, v in setMask(s!, v, 0) }
    ops.pointee.disable_interrupt = { s, v in setMask(s!, v, 1) }
    ops.pointee.add_tx_frames = { s, q, f, n, flags in addTx(s!, q, f!, n, flags) }
    ops.pointee.check_tx_ring = { s, q in checkTx(s!, q) }
    ops.pointee.check_rx_ring = { s, q, m in checkRx(s!, q, m) }
    ops.pointee.refill_rx_ring = { s, q in refillRx(s!, q) }
    ops.pointee.tx_offloads = NPA_PLUGIN_OFFLOAD_TX_CSUM | NPA_PLUGIN_OFFLOAD_TSO
    ops.pointee.get_stats = { s, q, isRx, out in
        let st = queue(s!, q & 7, rx: isRx != 0).pointee
        out!.pointee = npa_queue_stats(packets: st.packets, bytes: st.bytes, errors: st.errors, reserved: 0)
    }
    return NPA_OK
}

// NUL-terminated names in the image's read-only data.
let pluginName: UnsafePointer<CChar> = UnsafeRawPointer(("npa-cq-swift" as StaticString).utf8Start).assumingMemoryBound(to: CChar.self)
let pluginVersion: UnsafePointer<CChar> = UnsafeRawPointer(("1.0" as StaticString).utf8Start).assumingMemoryBound(to: CChar.self)
