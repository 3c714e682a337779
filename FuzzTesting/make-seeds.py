#!/usr/bin/env python3
"""Writes the small seed corpora in FuzzTesting/corpus/ (committed; rerun after a format change).
Each file is one input in the byte format its target's harness decodes (see the target's source)."""
import os, struct

here = os.path.dirname(os.path.abspath(__file__))

def put(target, name, data):
    d = os.path.join(here, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(bytes(data))

# control-message: magic "NPA1", version 1, type, payload length, payload.
def msg(tag, payload=b"", version=1):
    return struct.pack("<IHHI", 0x3141504E, version, tag, len(payload)) + payload
def s(text):
    b = text.encode()
    return struct.pack("<H", len(b)) + b
put("control-message", "attach", msg(1, s("web1") + struct.pack("<QB", 0x020000000001, 1)))
put("control-message", "register-write", msg(3, struct.pack("<BII", 1, 0x20, 0xCAFE0000)))
put("control-message", "register-read", msg(4, struct.pack("<BI", 1, 0x28)))
put("control-message", "register-result", msg(5, struct.pack("<II", 4, 1) + s("ACTIVATE refused")))
for tag, name in [(6, "status-request"), (8, "counters-request"), (10, "detach"), (16, "switch-query"), (19, "switch-out-begin")]:
    put("control-message", name, msg(tag))
# Moves between hosts (protocol version 2): the move offer, resume (16-byte token), moved, moveFailed.
token = bytes([16]) + bytes(range(16))
put("control-message", "switch-offer-move", msg(17, struct.pack("<BH", 3, 0) + s("") + s("") + s("/run/npa/b.sock") + token, version=2))
put("control-message", "resume", msg(28, token + s("web1") + struct.pack("<B", 1), version=2))
put("control-message", "moved", msg(29, version=2))
put("control-message", "move-failed", msg(30, s("the destination refused the token"), version=2))
put("control-message", "switch-in-ready", msg(18, struct.pack("<B", 1) + struct.pack("<QI", 0x4000, 256) + struct.pack("<B", 1) + struct.pack("<QI", 0x8000, 256) + s("npa-dring")))

# host-config: the README's example and small variants.
put("host-config", "example.yaml", b"""max_queues: 4
uplink: nic0
nics:
  - { name: nic0, model: npa-dring, vfs: 8 }
auto_passthrough: true
plugin_dir: .build/plugins
idle_passes: 256
default_policy: { macs: any, vlans: [0], promiscuous: false, passthrough: true }
guests:
  alpha: { macs: ["02:00:00:00:00:0a"], vlans: [0, 10], promiscuous: true }
""")
put("host-config", "counting.yaml", b"uplink: counting\nmax_queues: 8\n")
put("host-config", "cq.yaml", b"nics:\n  - name: a\n    model: npa-cq\n    vfs: 64\nuplink: a\n")

# vmxnet3-descriptors: geometry (g, s1, s2), then ops (see DescriptorFuzz.swift).
def burst(n, per_chain, length, header):
    out = [2, n, per_chain - 1]
    for i in range(n):
        out.append(length)
        if i % per_chain == 0:
            out.append(header)
    return out
post_rx = [4, 40, 0]          # 40 RX buffers of 2048 bytes, queue 0
good_to_evil = [6, 3, 0, 1]   # good1 sends 4 frames to the evil guest
put("vmxnet3-descriptors", "send-to-good2", [0x00, 0x01, 0x01] + burst(8, 1, 50, 0x00) + [5])
put("vmxnet3-descriptors", "chains-and-rx", [0x03, 0x02, 0x02] + post_rx + burst(20, 3, 100, 0x00) + good_to_evil + [5] + burst(10, 2, 30, 0x08))
put("vmxnet3-descriptors", "spoof-and-vlan", [0x00, 0x00, 0x00] + burst(6, 1, 60, 0x10) + burst(6, 1, 60, 0x20) + burst(6, 1, 60, 0x03) + [5])
put("vmxnet3-descriptors", "bad-descriptor", [0x00, 0x00, 0x00, 0, 0, 0, 3, 100, 0, 0x40, 0x05, 5])
put("vmxnet3-descriptors", "raw-geometry", [0x30, 0x00, 0x00, 2, 0x38, 0x00] + list(struct.pack("<Q", 0x1000)) + [0x40, 0x00] + list(struct.pack("<Q", 100)) + [5])
put("vmxnet3-descriptors", "jumbo-mtu", [0x04, 0x03, 0x00] + burst(20, 4, 255, 0x00) + [9, 2, 5])

# vmxnet3-registers: ops (see RegisterFuzz.swift).
put("vmxnet3-registers", "activate", [0, 4, 0x00, 6])                      # CMD <- ACTIVATE, then a pass
put("vmxnet3-registers", "set-mac", [7, 6, 7, 1])                          # MACL/MACH of two addresses
put("vmxnet3-registers", "filters", [4, 0, 0x1F, 0, 0, 0, 0, 4, 1, 2, 1, 1, 3, 4, 4, 2, 0, 0x00, 0x04, 0, 0, 0, 4, 0, 8 * 3])  # rx mode, multicast, VLAN, UPDATE_*
put("vmxnet3-registers", "messages", [5, 0, 5, 1, 5, 2, 5, 10, 3, 5, 0x28])

# vf-dring / vf-cq: geometry (g, one size byte per queue), then ops (see VFHarness.swift).
def vf_burst(n, length, header):
    out = [2, n]
    for i in range(n):
        out += [length, header]
    return out
for t in ["vf-dring", "vf-cq"]:
    put(t, "send-to-good2", [0x00, 0x01, 0x01] + vf_burst(8, 10, 0x00) + [5])
    put(t, "rx-from-good", [0x03, 0x00, 0x00, 0x01, 0x01] + [4, 40, 0] + [6, 3, 0, 1, 5] + vf_burst(10, 100, 0x08) + [5])
    put(t, "bad-doorbell", [0x00, 0x00, 0x00, 9, 0, 1, 0xFF, 0xFF, 0x00, 0x00, 5, 7, 0x40, 0, 5, 0, 0, 0, 5])
    put(t, "raw-geometry", [0x81, 0x40] + list(struct.pack("<Q", 0xFFFFF000)) + [0x00, 5])

# device-state: encoded DeviceStates (see DeviceState+Codec.swift): magic, format 1, 7 pieces.
def device_state(name, mac, phase=1, queues=((0x20000, 0x40000),), vlans=(0,), multicast=(), reason=b"", earlier=()):
    def piece(pid, payload):
        # counters (7) is at version 2: 14 drop reasons (bad_offload appended).
        return struct.pack("<HHI", pid, 2 if pid == 7 else 1, len(payload)) + payload
    def m(v):
        return v.to_bytes(6, "big")
    identity = struct.pack("<I", 3) + s(name) + m(mac) + m(mac) + struct.pack("<I", 1500)
    filters = struct.pack("<IH", 0x07, len(multicast)) + b"".join(m(x) for x in multicast) + struct.pack("<H", len(vlans)) + b"".join(struct.pack("<H", v) for v in vlans)
    interrupts = struct.pack("<BBII", 2, 1, 0b01, 0b10)
    def q(base, vector, desc):
        return struct.pack("<QIIBQIIBBQ", base, 256, 17, 1, base + 0x1000, 256, 200, 0, vector, desc)
    qs = struct.pack("<BB", len(queues), len(queues))
    qs += b"".join(q(tx, 0, 0x10000 + 256 * i) for i, (tx, rx) in enumerate(queues))
    qs += b"".join(q(rx, 1, 0x10000 + 256 * (len(queues) + i)) for i, (tx, rx) in enumerate(queues))
    if phase == 0:
        qs = struct.pack("<BB", 0, 0)
    lifecycle = struct.pack("<B", phase) + s(reason.decode()) + struct.pack("<II", 3, 0b101)
    latches = struct.pack("<IQII", 0x8000, 0x8000, 0x0202, 0)
    counters = struct.pack("<9Q", 100, 6400, 90, 5760, 1, 2, 3, 4, 5) + struct.pack("<B", 14) + struct.pack("<14Q", *range(14))
    counters += struct.pack("<B", len(earlier)) + b"".join(s(k) + struct.pack("<Q", v) for k, v in sorted(earlier))
    pieces = [identity, filters, interrupts, qs, lifecycle, latches, counters]
    return b"NPDS" + struct.pack("<HH", 1, len(pieces)) + b"".join(piece(i + 1, p) for i, p in enumerate(pieces))
put("device-state", "active", device_state("a", 0x020000000001))
put("device-state", "reset", device_state("guest-b", 0x024E50000002, phase=0))
put("device-state", "failed-two-queues", device_state("c.1", 0x020000000003, phase=3, queues=((0x20000, 0x40000), (0x60000, 0x80000)), reason=b"256 descriptor faults"))
put("device-state", "filters", device_state("d", 0x020000000004, vlans=(0, 10, 4094), multicast=(0x01005E000001, 0x333300000001), earlier=(("vf_rx_frames", 9), ("drop_vf_no_buffers", 1))))

# tcp-segmentation: header length (u16 LE), MSS (u16 LE), then a TCP super-frame.
def tcp_frame(ipv6, vlan, payload):
    f = bytes([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]) + (bytes([0x81, 0, 0, 7]) if vlan else b"")
    if ipv6:
        f += bytes([0x86, 0xDD, 0x60, 0, 0, 0, 0, 0, 6, 64]) + bytes(range(16)) + bytes(range(100, 116))
    else:
        f += bytes([8, 0, 0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2])
    f += bytes([0x13, 0x89, 0xC3, 0x50, 0x10, 0, 0, 0, 0, 0, 0, 9, 0x50, 0x19, 0xFF, 0xFF, 0, 0, 0, 0])
    return len(f), f + bytes((i * 7 + 3) & 0xFF for i in range(payload))
for name, ipv6, vlan, payload, mss in [("v4", False, False, 4000, 1460), ("v4-vlan", False, True, 3000, 1000), ("v6", True, False, 5000, 1440), ("v4-small", False, False, 10, 1460)]:
    hlen, frame = tcp_frame(ipv6, vlan, payload)
    put("tcp-segmentation", name, struct.pack("<HH", hlen, mss) + frame)

# tcp-coalescing: options (bit 0 IPv6, bit 1 VLAN, bit 2 small buffer), MSS (u16 LE), buffer size
# (u16 LE), then one-byte operations (see the harness): 0 = the stream's next full segment.
put("tcp-coalescing", "v4-stream", bytes([0]) + struct.pack("<HH", 1448, 0) + bytes(60) + bytes([0x08]))
put("tcp-coalescing", "v6-vlan-stream", bytes([3]) + struct.pack("<HH", 1428, 0) + bytes(30) + bytes([0x10, 0x20, 0x03]) + bytes(10))
put("tcp-coalescing", "gaps-flags-flows", bytes([0]) + struct.pack("<HH", 536, 0) + bytes(5) + bytes([0x40, 0, 0x80, 0, 0x04, 0, 3, 0, 0, 0x28, 0x10, 0x00]) + bytes(4))
put("tcp-coalescing", "small-buffer", bytes([4]) + struct.pack("<HH", 1000, 6000) + bytes(20))
put("tcp-coalescing", "raw-between", bytes([0]) + struct.pack("<HH", 1448, 0) + bytes(3) + bytes([2, 42]) + bytes([0xFF] * 6) + bytes([2, 0, 0, 0, 0, 1, 8, 6]) + bytes(28) + bytes(3) + bytes([0x20, 47, 0x02]) + bytes(2))
# migration-records: real records (see MigrationRecordsFuzz.swift and AuthenticatedRecords.swift):
# the harness's fixed key (32 x 0x4B) and nonces (initiator 16 x 0x01, responder 16 x 0x02).
import hashlib, hmac
mig_key, nonce_i, nonce_r = b"\x4b" * 32, b"\x01" * 16, b"\x02" * 16
def mig_hello(role=1, nonce=nonce_i):
    body = b"NPAM" + struct.pack("<HB", 1, role) + nonce
    return body + hmac.new(mig_key, body, hashlib.sha256).digest()
def mig_record(seq, mtype, payload):
    tag = hmac.new(mig_key, bytes([1]) + nonce_i + nonce_r + struct.pack("<Q", seq) + bytes([mtype]) + payload, hashlib.sha256).digest()
    return struct.pack("<IQB", 8 + 1 + len(payload) + 32, seq, mtype) + payload + tag
mig_prepare = (s("web-1") + bytes([2, 0, 0, 0, 0, 0x0A]) + struct.pack("<H", 1) + bytes([1, 0, 0x5E, 0, 0, 1])
               + struct.pack("<HHH", 2, 0, 10) + struct.pack("<IIBBB", 0x1F, 1500, 2, 2, 1) + s("host-a"))
mig_messages = [
    (1, mig_prepare),
    (2, bytes(range(16)) + s("/tmp/npa-b.sock")),
    (3, s("name in use")),
    (4, struct.pack("<I", 8) + b"NPDS\x01\x00\x07\x00"),
    (5, b""), (6, b""),
    (7, struct.pack("<H", 2) + struct.pack("<H", 14) + bytes(14) + struct.pack("<H", 3) + b"abc"),
    (8, b""), (9, b""), (10, s("timed out")), (11, b""),
]
conversation = mig_hello() + b"".join(mig_record(i, t, p) for i, (t, p) in enumerate(mig_messages))
put("migration-records", "stream-whole", b"\x00" + conversation)            # stream mode, 1-byte chunks
put("migration-records", "stream-chunks", b"\x7e" + conversation)           # stream mode, 64-byte chunks
put("migration-records", "stream-oversize", b"\x10" + mig_hello() + struct.pack("<I", 0xFFFFFFFF))
put("migration-records", "stream-wrong-role", b"\x00" + mig_hello(role=2, nonce=nonce_r))
put("migration-records", "sealed-all", b"\x01" + b"".join(bytes([t]) + struct.pack("<H", len(p)) + p for t, p in mig_messages))
put("migration-records", "sealed-prepare", b"\x01" + bytes([1]) + struct.pack("<H", len(mig_prepare)) + mig_prepare)

# plugin-bundle: "NPABNDL1", then u32 LE lengths each followed by its section: manifest JSON
# (canonical: sorted keys, no spaces), binary, signature block (empty = unsigned). The harness
# also signs each input as a manifest with its fixed key, so the manifest seed reaches every check.
import hashlib, json
plugin_binary = b"\x7fELF not really a plugin"
plugin_manifest = json.dumps({
    "abiVersion": 1, "binarySHA256": hashlib.sha256(plugin_binary).hexdigest(), "licence": "GPL-2.0-only",
    "models": [{"model": "npa-dring", "vfDeviceIDs": [31504]}], "name": "dring-c", "schemaVersion": 1,
    "vendor": "Example", "version": "1.0.0"}, separators=(",", ":"), sort_keys=True).encode()
def bundle(*sections):
    return b"NPABNDL1" + b"".join(struct.pack("<I", len(x)) + x for x in sections)
put("plugin-bundle", "manifest.json", plugin_manifest)
put("plugin-bundle", "unsigned.npab", bundle(plugin_manifest, plugin_binary, b""))
