/*
 * npa_plugin_atomics.h — the memory-ordering primitives a plugin needs for rings it shares with
 * a device, as static inline functions so plugins in C and in Embedded Swift use the same ones
 * (they compile to plain loads, stores and fences; no library call).
 */
#ifndef NPA_PLUGIN_ATOMICS_H
#define NPA_PLUGIN_ATOMICS_H
#include <stdint.h>

static inline uint32_t npa_load_acquire_u32(const void *p) { return __atomic_load_n((const uint32_t *)p, __ATOMIC_ACQUIRE); }
static inline void npa_store_release_u32(void *p, uint32_t v) { __atomic_store_n((uint32_t *)p, v, __ATOMIC_RELEASE); }
static inline void npa_fence_seq_cst(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline uint32_t npa_exchange_u32(void *p, uint32_t v) { return __atomic_exchange_n((uint32_t *)p, v, __ATOMIC_SEQ_CST); }

#endif
