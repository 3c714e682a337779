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
def msg(tag, payload=b""):
    return struct.pack("<IHHI", 0x3141504E, 1, tag, len(payload)) + payload
def s(text):
    b = text.encode()
    return struct.pack("<H", len(b)) + b
put("control-message", "attach", msg(1, s("web1") + struct.pack("<QB", 0x020000000001, 1)))
put("control-message", "register-write", msg(3, struct.pack("<BII", 1, 0x20, 0xCAFE0000)))
put("control-message", "register-read", msg(4, struct.pack("<BI", 1, 0x28)))
put("control-message", "register-result", msg(5, struct.pack("<II", 4, 1) + s("ACTIVATE refused")))
for tag, name in [(6, "status-request"), (8, "counters-request"), (10, "detach"), (16, "switch-query"), (19, "switch-out-begin")]:
    put("control-message", name, msg(tag))
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
