/*
 * npa_nic_models.h — the "datasheets" of the two software SR-IOV NIC models: the VF register
 * page and the queue formats a vendor plugin programs. The NIC model (NPANICModel) implements
 * them; each model's plugin (Plugins/<model>/) drives them. The shell knows neither.
 *
 * The two models differ the way real VFs do:
 *  - npa-dring (82599 VF style): one descriptor ring per queue, a tail register the driver
 *    writes, a head the NIC keeps, and "descriptor done" (DD) written back into the descriptor.
 *  - npa-cq (ENA / mlx5 style): a submission queue and a separate completion queue per queue,
 *    entries matched by request id, ownership by a phase bit that flips on every wrap.
 *
 * Queue regions: the shell allocates one per queue; the plugin carves it; the PF driver tells
 * the NIC where the rings are using the layout written here (ring first, then — for npa-cq — the
 * completion queue). Everything after those is the plugin's own.
 */
#ifndef NPA_NIC_MODELS_H
#define NPA_NIC_MODELS_H
#include <stdint.h>

/* ---- VF register page, common part (both models) ---- */
#define NPA_VF_REG_PAGE_SIZE 4096u
#define NPA_VF_REG_ENGINE_SLEEPING 0x000u /* u32, NIC: 1 = asleep, a doorbell write needs a kick; the driver that kicks swaps it to 0 */
#define NPA_VF_REG_INTR_MASK 0x008u       /* u32, 1 = masked; the NIC sets it when it fires (auto-mask) */
#define NPA_VF_REG_STATUS 0x010u          /* u32, NIC: bit 0 enabled, bit 1 error (DMA fault) */
#define NPA_VF_STATUS_ENABLED 0x1u
#define NPA_VF_STATUS_ERROR 0x2u
#define NPA_VF_MAX_QUEUES 8u
/* u32 per RX queue, PF/NIC, read-only for the driver: the receive buffer size the PF driver
 * programmed for queue q (the 82599's SRRCTL.BSIZEPACKET, here in bytes). The NIC never writes
 * more than this into one receive buffer: a longer frame is dropped before any byte of it
 * reaches guest memory, uses no descriptor and is counted (the guest sees drop_vf_frame_too_long);
 * it is not spanned over several buffers. The NIC acts on its own copy; this is a mirror for the
 * driver, rewritten when the PF initialises the queues. Added in ABI version 1 without a bump:
 * an offset no earlier plugin used. */
static inline uint32_t NPA_VF_REG_RX_BUFFER_SIZE(uint32_t q) { return 0x300u + 4u * q; }

/* ---- npa-dring ---- */
/* Functions, not macros, so Swift can call them too. */
static inline uint32_t NPA_DRING_REG_TDT(uint32_t q) { return 0x100u + 8u * q; } /* driver: next descriptor it will fill */
static inline uint32_t NPA_DRING_REG_TDH(uint32_t q) { return 0x104u + 8u * q; } /* NIC: next descriptor it will process */
static inline uint32_t NPA_DRING_REG_RDT(uint32_t q) { return 0x200u + 8u * q; } /* driver: one past the last buffer posted */
static inline uint32_t NPA_DRING_REG_RDH(uint32_t q) { return 0x204u + 8u * q; } /* NIC: next buffer it will fill */

typedef struct npa_dring_tx_desc {
    uint64_t addr;    /* GPA of the frame */
    uint16_t length;
    uint8_t cso;
    uint8_t cmd;      /* NPA_DRING_TXD_CMD_* */
    uint8_t status;   /* NIC writes NPA_DRING_TXD_STATUS_DD when done */
    uint8_t css;
    uint16_t vlan;
} npa_dring_tx_desc;
_Static_assert(sizeof(npa_dring_tx_desc) == 16, "npa_dring_tx_desc");
#define NPA_DRING_TXD_CMD_EOP 0x01u
#define NPA_DRING_TXD_CMD_IC 0x04u  /* insert checksum: sum from byte css to the end, store at cso */
#define NPA_DRING_TXD_CMD_RS 0x08u  /* report status: write DD back */
#define NPA_DRING_TXD_CMD_TSE 0x10u /* segment this TCP super-frame with the queue's TSO context */
#define NPA_DRING_TXD_CMD_DEXT 0x20u /* the slot is a context descriptor (below), not a frame */
#define NPA_DRING_TXD_STATUS_DD 0x01u
#define NPA_DRING_TXD_STATUS_ERR 0x02u /* the NIC refused the frame (counted by the NIC) */

/* Offloads, the 82599 way (its legacy descriptor's CSO/CSS/IC for a checksum, a context
 * descriptor for TSO):
 *  - Checksum: a data descriptor with CMD_IC; css = where the summed area starts (the L4
 *    header), cso = the absolute offset of the 16-bit checksum field, which holds the
 *    pseudo-header seed (CHECKSUM_PARTIAL). Both fit a byte: Ethernet + VLAN + IPv4 with options
 *    + the TCP checksum's own offset end at byte 96.
 *  - TSO: a context descriptor (CMD_DEXT) sets the queue's TSO context (MSS and the Ethernet +
 *    IP + TCP header length); a following data descriptor with CMD_TSE is a super-frame of up to
 *    NPA_TSO_MAX_FRAME bytes (`length` is 16 bits) that the NIC cuts into segments of hlen + mss
 *    bytes, every IP/TCP checksum made by the NIC. The context stays in force for the queue until
 *    the next context descriptor or a queue init (it starts as mss 0: refused), so one frame
 *    takes two slots only when its context changes. A context descriptor gets DD like any slot.
 * A request the NIC cannot honour (headers not Ethernet + IP + TCP, hlen not those headers,
 * mss 0, a segment over the NIC's largest frame, offsets outside the frame) is refused: ERR,
 * counted as the VF's bad offload, nothing sent. */
typedef struct npa_dring_tx_context_desc {
    uint16_t mss;     /* TCP payload bytes per segment */
    uint16_t hlen;    /* Ethernet + IP + TCP header bytes */
    uint32_t reserved0;
    uint16_t reserved1;
    uint8_t reserved2;
    uint8_t cmd;      /* NPA_DRING_TXD_CMD_DEXT (| RS); where a data descriptor has its cmd */
    uint8_t status;   /* NIC writes NPA_DRING_TXD_STATUS_DD (| ERR) */
    uint8_t reserved3;
    uint16_t reserved4;
} npa_dring_tx_context_desc;
_Static_assert(sizeof(npa_dring_tx_context_desc) == 16, "npa_dring_tx_context_desc");

/* An RX descriptor is posted in read format (addr: a buffer of at least the queue's
 * NPA_VF_REG_RX_BUFFER_SIZE bytes) and written back in place. One frame per descriptor: the
 * NIC writes back DD | EOP, never a frame spanning descriptors. */
typedef struct npa_dring_rx_desc {
    uint64_t addr;
    uint16_t length;  /* write-back: frame length */
    uint16_t csum;    /* write-back: 0 (reserved) */
    uint8_t status;   /* write-back: NPA_DRING_RXD_STATUS_* */
    uint8_t errors;
    uint16_t vlan;
} npa_dring_rx_desc;
_Static_assert(sizeof(npa_dring_rx_desc) == 16, "npa_dring_rx_desc");
#define NPA_DRING_RXD_STATUS_DD 0x01u
#define NPA_DRING_RXD_STATUS_EOP 0x02u
/* The NIC vouches for the frame's TCP/UDP checksum (L4CS) and IPv4 header checksum (IPCS):
 * it made them (a segment it cut, a checksum it inserted). Frames it only forwarded have
 * neither bit: it does not verify what it did not make. */
#define NPA_DRING_RXD_STATUS_L4CS 0x20u
#define NPA_DRING_RXD_STATUS_IPCS 0x40u

/* ---- npa-cq ----
 * Per queue: a submission queue (SQ) and a completion queue (CQ) of ring_size 16-byte entries
 * each. The NIC consumes each SQ in order and writes one CQ entry per SQ entry, in the same
 * order (TX: when the frame is sent or refused; RX: when a frame is written into the buffer), so
 * a driver that keeps at most ring_size - 1 entries in flight never has an SQ slot rewritten
 * before its completion was read, nor a CQ entry overwritten before it read it; there is no head
 * register. Ownership is by phase: entry k (counted from 0 since the PF initialised the queue)
 * carries NPA_CQ_FLAG_PHASE = 1 on even laps (k / ring_size even) and 0 on odd laps, in the SQ
 * (the driver writes it, last) and in the CQ (the NIC writes it, last). Completions carry no
 * VLAN (the models strip no tags: `vlan` is 0) and `hash` is the NIC's flow hash of the frame
 * (the one RSS chose the queue by; informational, NPA_RX_FLAG_RSS). */
/* u32 free-running counts of entries submitted, written by the driver: the count, not a ring
 * index (unlike npa-dring's TDT/RDT), so 0, 1, ... 2^32-1, 0 ... */
static inline uint32_t NPA_CQ_REG_TX_SQ_TAIL(uint32_t q) { return 0x100u + 8u * q; }
static inline uint32_t NPA_CQ_REG_RX_SQ_TAIL(uint32_t q) { return 0x200u + 8u * q; }

typedef struct npa_cq_sq_entry {
    uint64_t addr;
    uint16_t length;  /* TX: frame length. RX: buffer size; the NIC writes at most the smaller of
                         this and NPA_VF_REG_RX_BUFFER_SIZE(q) (longer frames: dropped, counted) */
    uint16_t req_id;  /* echoed in the completion */
    uint8_t flags;    /* NPA_CQ_FLAG_PHASE must equal the queue's current phase; TX: | NPA_CQ_SQ_* */
    uint8_t l4_offset;  /* TX: NPA_CQ_SQ_CSUM: where the L4 header starts; NPA_CQ_SQ_TSO: L2-L4 header bytes */
    uint16_t meta;    /* TX: NPA_CQ_SQ_TSO: the MSS; NPA_CQ_SQ_CSUM: the checksum field's offset */
} npa_cq_sq_entry;
_Static_assert(sizeof(npa_cq_sq_entry) == 16, "npa_cq_sq_entry");
/* Offloads, inline in the TX submission entry (the ENA way: no context, every request whole;
 * `l4_offset` and `meta` were `reserved`, zero, before offloads):
 *  - NPA_CQ_SQ_CSUM: sum from l4_offset to the end of the frame (the field holds the
 *    pseudo-header seed) and store the complement at meta.
 *  - NPA_CQ_SQ_TSO: the frame (up to NPA_TSO_MAX_FRAME bytes: `length` is 16 bits) is a TCP
 *    super-frame; l4_offset is its whole header length (Ethernet + IP + TCP), meta the MSS. The
 *    NIC cuts it into segments of l4_offset + meta bytes and makes every IP/TCP checksum.
 * A request the NIC cannot honour is refused: status NPA_CQ_STATUS_ERROR, counted as the VF's
 * bad offload, nothing sent. Both flags at once are refused too. */
#define NPA_CQ_SQ_CSUM 0x02u
#define NPA_CQ_SQ_TSO 0x04u

typedef struct npa_cq_cq_entry {
    uint16_t req_id;
    uint16_t length;
    uint8_t flags;    /* NPA_CQ_FLAG_PHASE: written last; flips every wrap of the CQ */
    uint8_t status;   /* 0 ok, NPA_CQ_STATUS_ERROR */
    uint16_t vlan;
    uint32_t hash;
    uint32_t reserved;
} npa_cq_cq_entry;
_Static_assert(sizeof(npa_cq_cq_entry) == 16, "npa_cq_cq_entry");
#define NPA_CQ_FLAG_PHASE 0x01u
/* RX completions: the NIC vouches for the frame's IP and TCP/UDP checksums (it made them: a
 * segment it cut, a checksum it completed). Never set on frames it only forwarded. */
#define NPA_CQ_FLAG_CSUM_OK 0x02u
#define NPA_CQ_STATUS_ERROR 0x01u

#endif
