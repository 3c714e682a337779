// SPDX-License-Identifier: GPL-2.0-only
/*
 * npa-dring vendor plugin: drives a VF of the npa-dring NIC model (82599 VF style: one
 * descriptor ring per queue, a tail register, descriptor-done written back by the NIC).
 * See npa_nic_models.h for the "datasheet" and npa_plugin_abi.h for the rules: no OS calls, no
 * globals that outlive the state, only memset/memcpy/memmove may be undefined.
 *
 * Region layout per queue (the PF driver relies on the first part): descriptor ring
 * (ring_size x 16 bytes), then the plugin's buffer-id shadow (ring_size x 4 bytes).
 *
 * Offloads: a checksum request rides in the data descriptor (CMD_IC, css, cso); TSO needs the
 * queue's TSO context set to the frame's MSS and header length, by a context descriptor in the
 * slot before it when the context changes (a TCP stream's stays the same). So a TX frame takes
 * one or two slots, and the ring counts slots, not frames: check_tx_ring skips context slots.
 */
#include "npa_plugin_support.h"

#ifndef NPA_PLUGIN_ENTRY_NAME
#define NPA_PLUGIN_ENTRY_NAME npa_plugin_main
#endif
#define EXPORT __attribute__((visibility("default")))

typedef struct {
    void *ring;            /* npa_dring_tx_desc[] or npa_dring_rx_desc[] */
    uint32_t *buf_ids;     /* RX: buffer id of each posted descriptor */
    uint32_t size, next_to_use, next_to_clean, in_flight;
    uint64_t packets, bytes, errors;
} queue_state;

typedef struct {
    queue_state tx[NPA_PLUGIN_MAX_QUEUES];
    queue_state rx[NPA_PLUGIN_MAX_QUEUES];
    /* Per TX queue: the TSO context last given to the NIC (mss << 16 | hlen; 0 = none yet). */
    uint32_t tso_context[NPA_PLUGIN_MAX_QUEUES];
} dring_private;

static inline dring_private *priv(npa_plugin_state *s) { return (dring_private *)s->private_area; }

static int32_t carve(npa_plugin_state *s, queue_state *q, const npa_queue_region *r) {
    uint32_t n = r->ring_size;
    if (n < 32 || n > 4096 || (n & (n - 1)) != 0 || r->va == 0) return NPA_ERR_INVALID;
    if ((uint64_t)r->size < (uint64_t)n * 20u) return NPA_ERR_NO_SPACE;
    q->ring = r->va;
    q->buf_ids = (uint32_t *)((char *)r->va + n * 16u);
    q->size = n;
    (void)s;
    return NPA_OK;
}

static int32_t reset_queue(queue_state *q) {
    if (!q->ring) return NPA_ERR_INVALID;
    npa_zero(q->ring, q->size * 16u);
    q->next_to_use = q->next_to_clean = q->in_flight = 0;
    return NPA_OK;
}

static int32_t sw_init(npa_plugin_state *s) {
    if (s->num_tx_queues < 1 || s->num_tx_queues > NPA_VF_MAX_QUEUES || s->num_rx_queues < 1 ||
        s->num_rx_queues > NPA_VF_MAX_QUEUES || !s->registers || s->registers_size < NPA_VF_REG_PAGE_SIZE)
        return NPA_ERR_INVALID;
    for (uint32_t i = 0; i < s->num_tx_queues; i++) {
        int32_t rc = carve(s, &priv(s)->tx[i], &s->tx_queues[i]);
        if (rc != NPA_OK) return rc;
        reset_queue(&priv(s)->tx[i]);
    }
    for (uint32_t i = 0; i < s->num_rx_queues; i++) {
        int32_t rc = carve(s, &priv(s)->rx[i], &s->rx_queues[i]);
        if (rc != NPA_OK) return rc;
        reset_queue(&priv(s)->rx[i]);
    }
    return NPA_OK;
}

static int32_t reinit_tx_ring(npa_plugin_state *s, uint32_t q) {
    if (q >= s->num_tx_queues) return NPA_ERR_INVALID;
    priv(s)->tso_context[q] = 0;  /* the NIC forgets it too when the PF initialises the queue */
    return reset_queue(&priv(s)->tx[q]);
}
static int32_t reinit_rx_ring(npa_plugin_state *s, uint32_t q) {
    return q < s->num_rx_queues ? reset_queue(&priv(s)->rx[q]) : NPA_ERR_INVALID;
}

static int32_t enable_interrupt(npa_plugin_state *s, uint32_t v) { return npa_set_interrupt_mask(s, v, 0); }
static int32_t disable_interrupt(npa_plugin_state *s, uint32_t v) { return npa_set_interrupt_mask(s, v, 1); }

/* Takes the next slot of a TX ring. */
static npa_dring_tx_desc *next_slot(queue_state *q) {
    npa_dring_tx_desc *d = &((npa_dring_tx_desc *)q->ring)[q->next_to_use];
    q->next_to_use = (q->next_to_use + 1) & (q->size - 1);
    q->in_flight++;
    return d;
}

/* Slots frame `f` needs: two when it is TSO with a context the queue does not have yet. */
static uint32_t slots_for(const npa_tx_frame *f, uint32_t context) {
    if (!(f->flags & NPA_TX_FLAG_TSO)) return 1;
    return ((uint32_t)f->offload_mss_or_csum << 16 | f->offload_header_length) == context ? 1 : 2;
}

static uint32_t add_tx_frames(npa_plugin_state *s, uint32_t qi, const npa_tx_frame *frames, uint32_t count, uint32_t flags) {
    if (qi >= s->num_tx_queues) return 0;
    queue_state *q = &priv(s)->tx[qi];
    uint32_t *context = &priv(s)->tso_context[qi];
    uint32_t added = 0;
    while (added < count && q->in_flight + slots_for(&frames[added], *context) <= q->size - 1) {
        const npa_tx_frame *f = &frames[added];
        uint8_t cmd = NPA_DRING_TXD_CMD_EOP | NPA_DRING_TXD_CMD_RS;
        uint8_t css = 0, cso = 0;
        /* What this format cannot say (a length over 16 bits, checksum offsets over a byte) is
         * posted as length 0, which the NIC refuses: the frame is dropped, in order, counted. */
        uint16_t length = f->length > 0xFFFFu ? 0 : (uint16_t)f->length;
        if (f->flags & NPA_TX_FLAG_TSO) {
            uint32_t wanted = (uint32_t)f->offload_mss_or_csum << 16 | f->offload_header_length;
            if (wanted != *context) {
                npa_dring_tx_context_desc *c = (npa_dring_tx_context_desc *)next_slot(q);
                npa_zero(c, sizeof(*c));
                c->mss = f->offload_mss_or_csum;
                c->hlen = f->offload_header_length;
                c->cmd = NPA_DRING_TXD_CMD_DEXT;
                *context = wanted;
            }
            cmd |= NPA_DRING_TXD_CMD_TSE;
        } else if (f->flags & NPA_TX_FLAG_CSUM) {
            if (f->offload_header_length > 0xFFu || f->offload_mss_or_csum > 0xFFu) length = 0;
            css = (uint8_t)f->offload_header_length;
            cso = (uint8_t)f->offload_mss_or_csum;
            cmd |= NPA_DRING_TXD_CMD_IC;
        }
        npa_dring_tx_desc *d = next_slot(q);
        d->addr = f->gpa;
        d->length = length;
        d->cso = cso;
        d->css = css;
        d->vlan = 0;  /* the shell never asks for tag insertion: a guest's tag is in the frame */
        d->status = 0;
        d->cmd = cmd;
        q->bytes += f->length;
        added++;
    }
    q->packets += added;
    if (added > 0 && (flags & NPA_TX_FLAG_LAST_HINT)) {
        npa_ring_doorbell(s, qi, NPA_DRING_REG_TDT(qi), q->next_to_use);
    }
    return added;
}

static uint32_t check_tx_ring(npa_plugin_state *s, uint32_t qi) {
    if (qi >= s->num_tx_queues) return 0;
    queue_state *q = &priv(s)->tx[qi];
    npa_dring_tx_desc *ring = (npa_dring_tx_desc *)q->ring;
    uint32_t done = 0;
    while (q->in_flight > 0) {
        npa_dring_tx_desc *d = &ring[q->next_to_clean];
        uint8_t status = __atomic_load_n(&d->status, __ATOMIC_ACQUIRE);
        if (!(status & NPA_DRING_TXD_STATUS_DD)) break;
        uint8_t is_frame = !(d->cmd & NPA_DRING_TXD_CMD_DEXT);  /* our own write: the NIC writes only status */
        if (status & NPA_DRING_TXD_STATUS_ERR) q->errors++;
        d->status = 0;
        q->next_to_clean = (q->next_to_clean + 1) & (q->size - 1);
        q->in_flight--;
        done += is_frame;
    }
    if (done) s->shell->complete_send(s->shell->shell, qi, done);
    return done;
}

static uint32_t refill_rx_ring(npa_plugin_state *s, uint32_t qi) {
    if (qi >= s->num_rx_queues) return 0;
    queue_state *q = &priv(s)->rx[qi];
    npa_dring_rx_desc *ring = (npa_dring_rx_desc *)q->ring;
    uint32_t posted = 0;
    while (q->in_flight < q->size - 1) {
        uint32_t id;
        uint64_t gpa;
        if (s->shell->alloc_rx_buffer(s->shell->shell, qi, &id, &gpa) != NPA_OK) break;
        npa_dring_rx_desc *d = &ring[q->next_to_use];
        d->addr = gpa;
        d->length = 0;
        d->csum = 0;
        d->errors = 0;
        d->vlan = 0;
        d->status = 0;
        q->buf_ids[q->next_to_use] = id;
        q->next_to_use = (q->next_to_use + 1) & (q->size - 1);
        q->in_flight++;
        posted++;
    }
    if (posted) npa_reg_write(s, NPA_DRING_REG_RDT(qi), q->next_to_use);
    return posted;
}

static uint32_t check_rx_ring(npa_plugin_state *s, uint32_t qi, uint32_t max_frames) {
    if (qi >= s->num_rx_queues) return 0;
    (void)npa_vf_check_enabled(s);  /* reports a VF that went down under us; harvest regardless */
    queue_state *q = &priv(s)->rx[qi];
    npa_dring_rx_desc *ring = (npa_dring_rx_desc *)q->ring;
    uint32_t n = 0;
    while (n < max_frames && q->in_flight > 0) {
        npa_dring_rx_desc *d = &ring[q->next_to_clean];
        uint32_t word = npa_load_acquire_u32((char *)d + 12);
        if (!(word & NPA_DRING_RXD_STATUS_DD)) break;
        uint8_t errors = (uint8_t)(word >> 8);
        npa_rx_frame frame;
        frame.buf_id = q->buf_ids[q->next_to_clean];
        frame.length = d->length;
        frame.rss_hash = 0;
        frame.vlan_tci = 0;
        frame.flags = errors ? NPA_RX_FLAG_ERROR : ((word & NPA_DRING_RXD_STATUS_L4CS) ? NPA_RX_FLAG_CSUM_VALID : 0);
        if (errors) q->errors++; else { q->packets++; q->bytes += d->length; }
        d->status = 0;
        q->next_to_clean = (q->next_to_clean + 1) & (q->size - 1);
        q->in_flight--;
        s->shell->indicate_recv(s->shell->shell, qi, &frame);
        n++;
    }
    return n;
}

static void get_stats(npa_plugin_state *s, uint32_t qi, uint32_t is_rx, npa_queue_stats *out) {
    queue_state *q = is_rx ? &priv(s)->rx[qi & 7] : &priv(s)->tx[qi & 7];
    out->packets = q->packets;
    out->bytes = q->bytes;
    out->errors = q->errors;
    out->reserved = 0;
}

EXPORT int32_t NPA_PLUGIN_ENTRY_NAME(npa_plugin_ops *ops) {
    if (!ops) return NPA_ERR_INVALID;
    ops->abi_version = NPA_PLUGIN_ABI_VERSION;
    ops->private_size = sizeof(dring_private);
    ops->name = "npa-dring";
    ops->version = "1.0";
    ops->sw_init = sw_init;
    ops->reinit_tx_ring = reinit_tx_ring;
    ops->reinit_rx_ring = reinit_rx_ring;
    ops->enable_interrupt = enable_interrupt;
    ops->disable_interrupt = disable_interrupt;
    ops->add_tx_frames = add_tx_frames;
    ops->check_tx_ring = check_tx_ring;
    ops->check_rx_ring = check_rx_ring;
    ops->refill_rx_ring = refill_rx_ring;
    ops->get_stats = get_stats;
    ops->tx_offloads = NPA_PLUGIN_OFFLOAD_TX_CSUM | NPA_PLUGIN_OFFLOAD_TSO;
    return NPA_OK;
}
