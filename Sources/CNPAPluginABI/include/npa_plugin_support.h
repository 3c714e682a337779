/*
 * npa_plugin_support.h — helpers every VF plugin needs, as static inline functions (no library
 * calls, so images stay freestanding): register access with the right ordering, the interrupt
 * mask handshake, and "publish a doorbell, kick the engine only if it sleeps".
 */
#ifndef NPA_PLUGIN_SUPPORT_H
#define NPA_PLUGIN_SUPPORT_H
#include "npa_plugin_abi.h"
#include "npa_nic_models.h"
#include "npa_plugin_atomics.h"

static inline uint32_t npa_reg_read(npa_plugin_state *s, uint32_t offset) {
    return npa_load_acquire_u32((char *)s->registers + offset);
}

static inline void npa_reg_write(npa_plugin_state *s, uint32_t offset, uint32_t value) {
    npa_store_release_u32((char *)s->registers + offset, value);
}

/* Zeroes ring memory without calling memset (volatile: not turned back into a call). */
static inline void npa_zero(void *p, uint32_t n) {
    volatile uint8_t *b = (volatile uint8_t *)p;
    for (uint32_t i = 0; i < n; i++) b[i] = 0;
}

/* The VF models have one interrupt vector: unmask (0) or mask (1) it. An unmask is followed by
 * a full fence because the shell re-checks the rings right after. */
static inline int32_t npa_set_interrupt_mask(npa_plugin_state *s, uint32_t vector, uint32_t masked) {
    if (vector != 0) return NPA_ERR_INVALID;
    npa_reg_write(s, NPA_VF_REG_INTR_MASK, masked);
    npa_fence_seq_cst();
    return NPA_OK;
}

/* Whether the VF is enabled. A plugin calls it where it polls its rings and carries on either
 * way (the shell drains the rings of a VF the host quiesced for a switch); if the VF went down
 * without a switch event, the shell learns it through report_fault (it keeps the first report
 * and ignores the rest, so calling this on every poll is fine). */
static inline int npa_vf_check_enabled(npa_plugin_state *s) {
    if (npa_reg_read(s, NPA_VF_REG_STATUS) & NPA_VF_STATUS_ENABLED) return 1;
    if (s->shell->report_fault) s->shell->report_fault(s->shell->shell, "VF disabled under the plugin");
    return 0;
}

/* Publishes a doorbell value (descriptors first: release), then asks the shell to wake the
 * engine only if the VF page says it sleeps; pairs with the engine's "announce, fence, re-check".
 * The flag is taken with an exchange, so one sleep earns one kick: the batches written while the
 * engine is still waking up do not each pay a system call. The plain read first keeps the common
 * case (engine awake) free of a locked instruction. */
static inline void npa_ring_doorbell(npa_plugin_state *s, uint32_t queue, uint32_t offset, uint32_t value) {
    npa_reg_write(s, offset, value);
    npa_fence_seq_cst();
    if (npa_reg_read(s, NPA_VF_REG_ENGINE_SLEEPING) &&
        npa_exchange_u32((char *)s->registers + NPA_VF_REG_ENGINE_SLEEPING, 0))
        s->shell->kick(s->shell->shell, queue);
}

#endif
