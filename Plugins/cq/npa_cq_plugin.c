// SPDX-License-Identifier: GPL-2.0-only
/*
 * npa-cq vendor plugin: drives a VF of the npa-cq NIC model (ENA / mlx5 style: a submission
 * queue and a completion queue per queue, request ids, ownership by a phase bit that flips on
 * every wrap). See npa_nic_models.h and npa_plugin_abi.h for the rules.
 *
 * Region layout per queue: submission queue (ring_size x 16 bytes), completion queue
 * (ring_size x 16 bytes; its offset is reported in completion_offset), then the buffer-id shadow.
 */
#include "npa_plugin_support.h"

#ifndef NPA_PLUGIN_ENTRY_NAME
#define NPA_PLUGIN_ENTRY_NAME npa_plugin_main
#endif
#define EXPORT __attribute__((visibility("default")))

typedef struct {
    npa_cq_sq_entry *sq;
    npa_cq_cq_entry *cq;
    uint32_t *buf_ids;
    uint32_t size;
    uint32_t sq_tail;      /* free running: entries submitted */
    uint8_t sq_phase;
    uint8_t cq_phase;
    uint16_t pad;
    uint32_t cq_head;
    uint32_t in_flight;
    uint64_t packets, bytes, errors;
} queue_state;

typedef struct {
    queue_state tx[NPA_PLUGIN_MAX_QUEUES];
    queue_state rx[NPA_PLUGIN_MAX_QUEUES];
} cq_private;

static inline cq_private *priv(npa_plugin_state *s) { return (cq_private *)s->private_area; }

static int32_t carve(queue_state *q, npa_queue_region *r) {
    uint32_t n = r->ring_size;
    if (n < 32 || n > 4096 || (n & (n - 1)) != 0 || r->va == 0) return NPA_ERR_INVALID;
    if ((uint64_t)r->size < (uint64_t)n * 36u) return NPA_ERR_NO_SPACE;
    q->sq = (npa_cq_sq_entry *)r->va;
    q->cq = (npa_cq_cq_entry *)((char *)r->va + n * 16u);
    q->buf_ids = (uint32_t *)((char *)r->va + n * 32u);
    q->size = n;
    r->completion_offset = n * 16u;
    return NPA_OK;
}

static int32_t reset_queue(queue_state *q) {
    if (!q->sq) return NPA_ERR_INVALID;
    npa_zero(q->sq, q->size * 32u);
    q->sq_tail = q->cq_head = q->in_flight = 0;
    q->sq_phase = q->cq_phase = 1;
    return NPA_OK;
}

static int32_t sw_init(npa_plugin_state *s) {
    if (s->num_tx_queues < 1 || s->num_tx_queues > NPA_VF_MAX_QUEUES || s->num_rx_queues < 1 ||
        s->num_rx_queues > NPA_VF_MAX_QUEUES || !s->registers || s->registers_size < NPA_VF_REG_PAGE_SIZE)
        return NPA_ERR_INVALID;
    for (uint32_t i = 0; i < s->num_tx_queues; i++) {
        int32_t rc = carve(&priv(s)->tx[i], &s->tx_queues[i]);
        if (rc != NPA_OK) return rc;
        reset_queue(&priv(s)->tx[i]);
    }
    for (uint32_t i = 0; i < s->num_rx_queues; i++) {
        int32_t rc = carve(&priv(s)->rx[i], &s->rx_queues[i]);
        if (rc != NPA_OK) return rc;
        reset_queue(&priv(s)->rx[i]);
    }
    return NPA_OK;
}

static int32_t reinit_tx_ring(npa_plugin_state *s, uint32_t q) {
    return q < s->num_tx_queues ? reset_queue(&priv(s)->tx[q]) : NPA_ERR_INVALID;
}
static int32_t reinit_rx_ring(npa_plugin_state *s, uint32_t q) {
    return q < s->num_rx_queues ? reset_queue(&priv(s)->rx[q]) : NPA_ERR_INVALID;
}

static int32_t enable_interrupt(npa_plugin_state *s, uint32_t v) { return npa_set_interrupt_mask(s, v, 0); }
static int32_t disable_interrupt(npa_plugin_state *s, uint32_t v) { return npa_set_interrupt_mask(s, v, 1); }

/* Writes one submission entry; the phase tells the NIC the entry is from this lap. `offload`
 * is NPA_CQ_SQ_CSUM / NPA_CQ_SQ_TSO or 0, with its l4_offset and meta (see npa_nic_models.h). */
static void submit(queue_state *q, uint64_t gpa, uint16_t length, uint8_t offload, uint8_t l4_offset, uint16_t meta) {
    uint32_t slot = q->sq_tail & (q->size - 1);
    npa_cq_sq_entry *e = &q->sq[slot];
    e->addr = gpa;
    e->length = length;
    e->req_id = (uint16_t)slot;
    e->l4_offset = l4_offset;
    e->meta = meta;
    e->flags = q->sq_phase | offload;
    q->sq_tail++;
    if ((q->sq_tail & (q->size - 1)) == 0) q->sq_phase ^= 1;
    q->in_flight++;
}

/* Reads the next completion if the NIC has written it (its phase matches ours). */
static npa_cq_cq_entry *next_completion(queue_state *q) {
    npa_cq_cq_entry *c = &q->cq[q->cq_head];
    uint32_t word = npa_load_acquire_u32((char *)c + 4);
    if ((word & NPA_CQ_FLAG_PHASE) != q->cq_phase) return 0;
    q->cq_head++;
    if (q->cq_head == q->size) {
        q->cq_head = 0;
        q->cq_phase ^= 1;
    }
    return c;
}

static uint32_t add_tx_frames(npa_plugin_state *s, uint32_t qi, const npa_tx_frame *frames, uint32_t count, uint32_t flags) {
    if (qi >= s->num_tx_queues) return 0;
    queue_state *q = &priv(s)->tx[qi];
    uint32_t added = 0;
    while (added < count && q->in_flight < q->size - 1) {
        const npa_tx_frame *f = &frames[added];
        uint8_t offload = 0;
        if (f->flags & NPA_TX_FLAG_TSO) offload = NPA_CQ_SQ_TSO;
        else if (f->flags & NPA_TX_FLAG_CSUM) offload = NPA_CQ_SQ_CSUM;
        /* What this format cannot say (a length over 16 bits, a header over a byte) is posted
         * as length 0, which the NIC refuses: the frame is dropped, in order, and counted. */
        uint16_t length = f->length > 0xFFFFu || (offload && f->offload_header_length > 0xFFu) ? 0 : (uint16_t)f->length;
        submit(q, f->gpa, length, offload, (uint8_t)f->offload_header_length, offload ? f->offload_mss_or_csum : 0);
        q->bytes += f->length;
        added++;
    }
    q->packets += added;
    if (added > 0 && (flags & NPA_TX_FLAG_LAST_HINT)) {
        npa_ring_doorbell(s, qi, NPA_CQ_REG_TX_SQ_TAIL(qi), q->sq_tail);
    }
    return added;
}

static uint32_t check_tx_ring(npa_plugin_state *s, uint32_t qi) {
    if (qi >= s->num_tx_queues) return 0;
    queue_state *q = &priv(s)->tx[qi];
    uint32_t done = 0;
    npa_cq_cq_entry *c;
    /* The NIC completes a queue's requests in submission order, so a count is exact. */
    while (q->in_flight > 0 && (c = next_completion(q)) != 0) {
        if (c->status & NPA_CQ_STATUS_ERROR) q->errors++;
        q->in_flight--;
        done++;
    }
    if (done) s->shell->complete_send(s->shell->shell, qi, done);
    return done;
}

static uint32_t refill_rx_ring(npa_plugin_state *s, uint32_t qi) {
    if (qi >= s->num_rx_queues) return 0;
    queue_state *q = &priv(s)->rx[qi];
    uint32_t posted = 0;
    while (q->in_flight < q->size - 1) {
        uint32_t id;
        uint64_t gpa;
        if (s->shell->alloc_rx_buffer(s->shell->shell, qi, &id, &gpa) != NPA_OK) break;
        q->buf_ids[q->sq_tail & (q->size - 1)] = id;
        uint32_t len = s->rx_buffer_size > 65535u ? 65535u : s->rx_buffer_size;
        submit(q, gpa, (uint16_t)len, 0, 0, 0);
        posted++;
    }
    if (posted) npa_reg_write(s, NPA_CQ_REG_RX_SQ_TAIL(qi), q->sq_tail);
    return posted;
}

static uint32_t check_rx_ring(npa_plugin_state *s, uint32_t qi, uint32_t max_frames) {
    if (qi >= s->num_rx_queues) return 0;
    (void)npa_vf_check_enabled(s);  /* reports a VF that went down under us; harvest regardless */
    queue_state *q = &priv(s)->rx[qi];
    uint32_t n = 0;
    npa_cq_cq_entry *c;
    while (n < max_frames && q->in_flight > 0 && (c = next_completion(q)) != 0) {
        npa_rx_frame frame;
        frame.buf_id = q->buf_ids[c->req_id & (q->size - 1)];
        frame.length = c->length;
        frame.rss_hash = c->hash;
        frame.vlan_tci = 0;
        frame.flags = NPA_RX_FLAG_RSS | ((c->status & NPA_CQ_STATUS_ERROR) ? NPA_RX_FLAG_ERROR : 0) |
                      ((c->flags & NPA_CQ_FLAG_CSUM_OK) ? NPA_RX_FLAG_CSUM_VALID : 0);
        if (c->status & NPA_CQ_STATUS_ERROR) q->errors++; else { q->packets++; q->bytes += c->length; }
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
    ops->private_size = sizeof(cq_private);
    ops->name = "npa-cq";
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
