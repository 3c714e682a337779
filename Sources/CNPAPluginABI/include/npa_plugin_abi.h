/*
 * npa_plugin_abi.h — the NPA Shell API: the one C ABI between the guest's shell and a data-path
 * plugin (the built-in vmxnet3 emulation plugin or a vendor plugin for one VF model).
 *
 * Shaped after the only NPA ABI that shipped (the bnx2x plugin in VMware's ESXi 5.0 GPL drop):
 * one entry point fills an operations table; the shell owns every buffer and every queue region;
 * TX completions are reported as in-order counts, so the shell can reclaim everything on
 * switch-out without knowing the hardware's format. Improved on it with batched TX.
 *
 * Rules for plugins: no OS calls, no allocation, no globals that outlive the state the shell
 * hands in. The only undefined symbols a plugin image may have are memset, memcpy and memmove.
 * All memory a plugin touches is: its private area, its queue regions, RX/TX buffers the shell
 * names by GPA (a buffer's guest virtual address is not given: the device, not the plugin,
 * reads and writes frame bytes), and the device register page.
 *
 * Byte layouts here cross a trust boundary (plugin images are built separately), so every
 * struct has explicit padding and _Static_asserts pin its size.
 */
#ifndef NPA_PLUGIN_ABI_H
#define NPA_PLUGIN_ABI_H

#include <stdint.h>

#define NPA_PLUGIN_ABI_VERSION 1u
#define NPA_PLUGIN_MAX_QUEUES 8u
#define NPA_PLUGIN_DEVICE_INFO_WORDS 32u

/* Return codes. */
#define NPA_OK 0
#define NPA_ERR_BUSY 1          /* alloc_rx_buffer: no free buffer now */
#define NPA_ERR_INVALID (-1)    /* bad argument or state */
#define NPA_ERR_NO_SPACE (-2)   /* a queue region is too small for the rings the plugin wants */
#define NPA_ERR_FAULT (-3)      /* the device reported an error; the shell should switch out */

/* Flags for add_tx_frames. */
#define NPA_TX_FLAG_LAST_HINT 0x1u   /* no more frames follow now: ring the doorbell */

/* Flags in npa_rx_frame.flags. */
#define NPA_RX_FLAG_VLAN 0x1u        /* vlan_tci holds a stripped tag (the VF models strip none) */
#define NPA_RX_FLAG_RSS 0x2u         /* rss_hash is valid */
#define NPA_RX_FLAG_ERROR 0x4u       /* the device flagged the frame bad; the shell drops it */
#define NPA_RX_FLAG_CSUM_VALID 0x8u  /* the device checked (or made) the IP and TCP/UDP checksums */

/* Log levels for shell->log. */
#define NPA_LOG_ERROR 0
#define NPA_LOG_WARNING 1
#define NPA_LOG_INFO 2
#define NPA_LOG_DEBUG 3

/** A DMA region the shell allocated in guest memory for one queue; the plugin carves its rings
 *  (descriptor ring, completion ring, bookkeeping) out of it. The descriptor (or submission)
 *  ring starts the region; where a completion ring is, only the plugin knows, so it says. */
typedef struct npa_queue_region {
    void *va;            /* guest virtual address of the region */
    uint64_t gpa;        /* guest physical address: what descriptors and the device see */
    uint32_t size;       /* bytes */
    uint32_t ring_size;  /* descriptors the shell asks for (power of two) */
    uint32_t interrupt_vector;
    /* Set by the plugin in sw_init: the byte offset in this region of the queue's completion
     * ring (ring_size entries of 16 bytes), 0 if the model has none. The shell sends it to the
     * host, whose PF driver points the VF at it. The shell passes 0. Was `reserved` (always 0)
     * in ABI version 1: no bump, a plugin without a completion ring need not set it. */
    uint32_t completion_offset;
} npa_queue_region;
_Static_assert(sizeof(npa_queue_region) == 32, "npa_queue_region layout");

/** One frame to send: a single shell-owned buffer. With NPA_TX_FLAG_TSO it is a TCP
 *  super-frame (one header, up to a buffer of payload) the device cuts into segments. */
typedef struct npa_tx_frame {
    uint64_t gpa;
    uint32_t buf_id;
    uint32_t length;
    /* Tag to insert when flags has NPA_TX_FLAG_VLAN_INSERT. The shell of ABI v1 never sets that
     * flag and always passes 0: a guest's tagged frame carries its 802.1Q tag in the frame, where
     * the host's VLAN policy (the VF's VLAN filter) checks it. The VF models neither insert nor
     * strip tags. A VF plugin ignores this field; only the emulation plugin maps it (vmxnet3 TI). */
    uint16_t vlan_tci;
    uint16_t flags;
    /* Offload parameters, vmxnet3's TxDesc hlen/msscof pair (was `uint32_t reserved`, always 0,
     * in ABI v1 before offloads: no bump, a frame without an offload flag ignores both):
     *  - NPA_TX_FLAG_CSUM: offload_header_length = where the checksummed area starts (the L4
     *    header); offload_mss_or_csum = the byte offset in the frame where the 16-bit checksum
     *    goes. The field holds the pseudo-header sum as Linux's CHECKSUM_PARTIAL leaves it.
     *  - NPA_TX_FLAG_TSO: offload_header_length = Ethernet + IP + TCP header bytes;
     *    offload_mss_or_csum = the MSS (TCP payload bytes per segment). Every segment leaves
     *    with its IP length, IP id, TCP sequence number, flags and checksums rewritten. */
    uint16_t offload_header_length;
    uint16_t offload_mss_or_csum;
} npa_tx_frame;
_Static_assert(sizeof(npa_tx_frame) == 24, "npa_tx_frame layout");

#define NPA_TX_FLAG_VLAN_INSERT 0x1u  /* never set by the v1 shell (see vlan_tci) */
#define NPA_TX_FLAG_CSUM 0x2u        /* complete the L4 checksum (see offload_* above) */
#define NPA_TX_FLAG_TSO 0x4u         /* segment this TCP super-frame (see offload_* above) */

/* Bits of npa_plugin_ops.tx_offloads: what a plugin's device does for add_tx_frames. The shell
 * sets NPA_TX_FLAG_CSUM / NPA_TX_FLAG_TSO only when the loaded plugin declared them, and does
 * the work in software otherwise (so switching between plugins never loses an offload). */
#define NPA_PLUGIN_OFFLOAD_TX_CSUM 0x1u
#define NPA_PLUGIN_OFFLOAD_TSO 0x2u
/* The longest TSO super-frame a plugin must take (its buffer is one shell buffer). */
#define NPA_TSO_MAX_FRAME 65535u

/** One received frame, indicated to the shell from inside check_rx_ring. */
typedef struct npa_rx_frame {
    uint32_t buf_id;
    uint32_t length;
    uint32_t rss_hash;
    uint16_t vlan_tci;
    uint16_t flags;
} npa_rx_frame;
_Static_assert(sizeof(npa_rx_frame) == 16, "npa_rx_frame layout");

/** Per-queue counters a plugin reports. */
typedef struct npa_queue_stats {
    uint64_t packets;
    uint64_t bytes;
    uint64_t errors;
    uint64_t reserved;
} npa_queue_stats;
_Static_assert(sizeof(npa_queue_stats) == 32, "npa_queue_stats layout");

/** Services the shell provides. `shell` is the opaque first argument of each. */
typedef struct npa_shell_services {
    void *shell;
    /** Takes a free RX buffer for `queue`: writes its id and GPA; NPA_OK or NPA_ERR_BUSY (none). */
    int32_t (*alloc_rx_buffer)(void *shell, uint32_t queue, uint32_t *buf_id, uint64_t *gpa);
    /** Hands a received frame to the shell; only legal inside check_rx_ring. */
    void (*indicate_recv)(void *shell, uint32_t queue, const npa_rx_frame *frame);
    /** Reports `count` more frames of `queue` sent, in the order they were added. */
    void (*complete_send)(void *shell, uint32_t queue, uint32_t count);
    /** Wakes the device engine after a doorbell write, when the device page says it sleeps. */
    void (*kick)(void *shell, uint32_t queue);
    void (*log)(void *shell, int32_t level, const char *message);
    uint64_t (*time_ns)(void *shell);
    /** The device stopped working under the plugin (e.g. its VF was disabled without a switch
     *  event). The shell asks the host to reset the VF and moves the guest back to emulation;
     *  `reason` (copied, may be freed after the call) shows in the host's status. Appended in
     *  ABI v1: a plugin built before it never calls it. */
    void (*report_fault)(void *shell, const char *reason);
} npa_shell_services;

/** Everything the shell hands a plugin. Filled by the shell before sw_init. */
typedef struct npa_plugin_state {
    uint32_t abi_version;
    uint32_t num_tx_queues;
    uint32_t num_rx_queues;
    uint32_t rx_buffer_size;       /* bytes in every RX buffer */
    npa_queue_region tx_queues[NPA_PLUGIN_MAX_QUEUES];
    npa_queue_region rx_queues[NPA_PLUGIN_MAX_QUEUES];
    void *registers;               /* the device's register page, mapped into the guest */
    uint64_t registers_size;
    const npa_shell_services *shell;
    void *private_area;            /* ops.private_size bytes, zeroed, owned by the plugin */
    uint32_t device_info[NPA_PLUGIN_DEVICE_INFO_WORDS]; /* opaque data from the PF driver */
} npa_plugin_state;

/** The operations table a plugin fills in its entry point. */
typedef struct npa_plugin_ops {
    uint32_t abi_version;          /* NPA_PLUGIN_ABI_VERSION the plugin was built against */
    uint32_t private_size;         /* bytes of private area the plugin needs */
    const char *name;
    const char *version;
    /** Software state only; must not touch the device. */
    int32_t (*sw_init)(npa_plugin_state *state);
    /** Zero a ring and reset its cursors; buffers were already reclaimed by the shell. Called
     *  only on the emulation plugin, when the guest returns from a VF and the emulated rings are
     *  re-armed. A VF plugin is loaded afresh for every switch-in (entry point, then sw_init on a
     *  new state) and dropped at switch-out, so the shell never calls these on it: return NPA_OK. */
    int32_t (*reinit_tx_ring)(npa_plugin_state *state, uint32_t queue);
    int32_t (*reinit_rx_ring)(npa_plugin_state *state, uint32_t queue);
    /** Unmask / mask an interrupt vector (not a queue number). */
    int32_t (*enable_interrupt)(npa_plugin_state *state, uint32_t vector);
    int32_t (*disable_interrupt)(npa_plugin_state *state, uint32_t vector);
    /** Adds up to `count` frames; returns how many it took (fewer means the ring is full). */
    uint32_t (*add_tx_frames)(npa_plugin_state *state, uint32_t queue, const npa_tx_frame *frames,
                              uint32_t count, uint32_t flags);
    /** Reaps TX completions, calls complete_send; returns frames completed. */
    uint32_t (*check_tx_ring)(npa_plugin_state *state, uint32_t queue);
    /** Indicates at most `max_frames` received frames; returns how many. */
    uint32_t (*check_rx_ring)(npa_plugin_state *state, uint32_t queue, uint32_t max_frames);
    /** Posts as many RX buffers as the ring and the shell allow; returns how many. Publish the
     *  new tail with a release store (npa_reg_write), not npa_ring_doorbell: the VF models'
     *  engines stay awake while a frame waits for a buffer, so a refill needs no kick. */
    uint32_t (*refill_rx_ring)(npa_plugin_state *state, uint32_t queue);
    /** TX (is_rx = 0) or RX (is_rx = 1) counters of one queue. */
    void (*get_stats)(npa_plugin_state *state, uint32_t queue, uint32_t is_rx, npa_queue_stats *out);
    /** NPA_PLUGIN_OFFLOAD_* bits the plugin's device honours in npa_tx_frame. Appended in ABI
     *  v1: the shell zeroes the table before the entry point, so a plugin built before it
     *  declares none and gets only finished frames. */
    uint32_t tx_offloads;
    uint32_t reserved_ops;
} npa_plugin_ops;

/** The one exported symbol: fills `ops`, returns NPA_OK. */
typedef int32_t (*npa_plugin_entry_fn)(npa_plugin_ops *ops);
#define NPA_PLUGIN_ENTRY_SYMBOL "npa_plugin_main"

#endif
