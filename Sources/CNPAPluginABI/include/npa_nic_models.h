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
#define NPA_DRING_TXD_CMD_RS 0x08u  /* report status: write DD back */
#define NPA_DRING_TXD_STATUS_DD 0x01u
#define NPA_DRING_TXD_STATUS_ERR 0x02u /* the NIC refused the frame (counted by the NIC) */

/* An RX descriptor is posted in read format (addr: a buffer of at least the queue's
 * NPA_VF_REG_RX_BUFFER_SIZE bytes) and written back in place. One frame per descriptor: the
 * NIC writes back DD | EOP, never a frame spanning descriptors. */
typedef struct npa_dring_rx_desc {
    uint64_t addr;
    uint16_t length;  /* write-back: frame length */
    uint16_t csum;
    uint8_t status;   /* write-back: NPA_DRING_RXD_STATUS_* */
    uint8_t errors;
    uint16_t vlan;
} npa_dring_rx_desc;
_Static_assert(sizeof(npa_dring_rx_desc) == 16, "npa_dring_rx_desc");
#define NPA_DRING_RXD_STATUS_DD 0x01u
#define NPA_DRING_RXD_STATUS_EOP 0x02u

/* ---- npa-cq ---- */
/* u32 free-running counts of entries submitted, written by the driver */
static inline uint32_t NPA_CQ_REG_TX_SQ_TAIL(uint32_t q) { return 0x100u + 8u * q; }
static inline uint32_t NPA_CQ_REG_RX_SQ_TAIL(uint32_t q) { return 0x200u + 8u * q; }

typedef struct npa_cq_sq_entry {
    uint64_t addr;
    uint16_t length;  /* TX: frame length. RX: buffer size; the NIC writes at most the smaller of
                         this and NPA_VF_REG_RX_BUFFER_SIZE(q) (longer frames: dropped, counted) */
    uint16_t req_id;  /* echoed in the completion */
    uint8_t flags;    /* NPA_CQ_FLAG_PHASE must equal the queue's current phase */
    uint8_t reserved[3];
} npa_cq_sq_entry;
_Static_assert(sizeof(npa_cq_sq_entry) == 16, "npa_cq_sq_entry");

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
#define NPA_CQ_STATUS_ERROR 0x01u

#endif
