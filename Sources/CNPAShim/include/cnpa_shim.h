// CNPAShim: the few Linux facilities Swift's Glibc module cannot reach (GNU-only functions,
// function-like macros, variadic calls) plus the memory fences and atomic accessors the rings in
// shared memory rely on. Every function is a thin wrapper: no policy lives here.
//
// Do NOT define _GNU_SOURCE in this header: Swift imports it next to SwiftGlibc and the two would
// disagree about glibc's structs. cnpa_shim.c defines it for itself.
#ifndef CNPA_SHIM_H
#define CNPA_SHIM_H

#include <stdint.h>
#include <pthread.h>
#include <stddef.h>
#include <stdatomic.h>

static const unsigned int CNPA_MFD_CLOEXEC = 0x0001U;
static const unsigned int CNPA_MFD_ALLOW_SEALING = 0x0002U;

/// memfd_create(2). Returns the fd or -1 with errno set.
int cnpa_memfd_create(const char *name, unsigned int flags);

/// An eventfd in non-blocking, close-on-exec mode. Returns the fd or -1 with errno set.
int cnpa_eventfd_create(void);
/// Adds 1 to the eventfd counter (a doorbell or an interrupt). Returns 0 or -errno.
int cnpa_eventfd_signal(int fd);
/// Reads and clears the counter. Returns the count, 0 if it was clear, or -errno.
int64_t cnpa_eventfd_drain(int fd);

/// Sends one datagram with up to 16 file descriptors attached (SCM_RIGHTS).
/// Returns bytes sent or -errno.
long cnpa_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds);
/// Receives one datagram and up to `maxfds` descriptors (close-on-exec). A truncated datagram or
/// control message is an error (-EMSGSIZE) and any descriptors that did arrive are closed.
/// Returns bytes received (0 at end of stream) or -errno; *nfds_out gets the descriptor count.
long cnpa_recv_with_fds(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds_out);

/// epoll wrappers that keep epoll_event (packed on x86_64) out of Swift.
int cnpa_epoll_create(void);
int cnpa_epoll_add(int epfd, int fd, uint64_t tag);
int cnpa_epoll_remove(int epfd, int fd);
/// Waits for events; fills `tags` with the tags of ready descriptors. Returns count or -errno.
int cnpa_epoll_wait(int epfd, uint64_t *tags, int maxevents, int timeout_ms);

/// Names the calling thread (15 characters at most are kept), so per-thread CPU is attributable.
void cnpa_set_thread_name(const char *name);
/// CPU time consumed by the calling thread, in nanoseconds.
uint64_t cnpa_thread_cpu_ns(void);
/// CLOCK_MONOTONIC in nanoseconds.
uint64_t cnpa_monotonic_ns(void);
/// Pins the calling thread to one CPU. Returns 0 or -errno.
int cnpa_pin_to_cpu(int cpu);
/// Pins another thread of this process to one CPU. Returns 0 or -errno.
int cnpa_pin_thread_to_cpu(pthread_t thread, int cpu);

// ---- Fences and atomic accessors for memory shared with another process ----
// Plain loads and stores to shared memory are not enough: the compiler may reorder or merge them.
// These are the only accessors the ring code uses for fields the other side writes concurrently.

static inline uint32_t cnpa_load_acquire_u32(const void *p) {
    return atomic_load_explicit((const _Atomic uint32_t *)p, memory_order_acquire);
}
static inline void cnpa_store_release_u32(void *p, uint32_t v) {
    atomic_store_explicit((_Atomic uint32_t *)p, v, memory_order_release);
}
static inline uint32_t cnpa_load_relaxed_u32(const void *p) {
    return atomic_load_explicit((const _Atomic uint32_t *)p, memory_order_relaxed);
}
static inline void cnpa_store_relaxed_u32(void *p, uint32_t v) {
    atomic_store_explicit((_Atomic uint32_t *)p, v, memory_order_relaxed);
}
static inline uint64_t cnpa_load_relaxed_u64(const void *p) {
    return atomic_load_explicit((const _Atomic uint64_t *)p, memory_order_relaxed);
}
static inline void cnpa_store_relaxed_u64(void *p, uint64_t v) {
    atomic_store_explicit((_Atomic uint64_t *)p, v, memory_order_relaxed);
}
/// Atomically replaces a word and returns the old value (sequentially consistent).
static inline uint32_t cnpa_exchange_u32(void *p, uint32_t v) {
    return atomic_exchange_explicit((_Atomic uint32_t *)p, v, memory_order_seq_cst);
}
/// Orders earlier writes before later reads: the "store flag, then re-check the ring" half of
/// every sleep/wake handshake (both sides do it, so no wake-up is lost).
static inline void cnpa_fence_seq_cst(void) { atomic_thread_fence(memory_order_seq_cst); }
static inline void cnpa_fence_acquire(void) { atomic_thread_fence(memory_order_acquire); }
static inline void cnpa_fence_release(void) { atomic_thread_fence(memory_order_release); }

/// Starts pulling a cache line toward this core (a hint; never faults). The data paths issue
/// these for a whole batch before touching any of it, so the misses on lines another core wrote
/// overlap instead of queueing one behind the other.
static inline void cnpa_prefetch(const void *p) { __builtin_prefetch(p, 0, 3); }
/// The same for a line about to be written.
static inline void cnpa_prefetch_for_write(const void *p) { __builtin_prefetch(p, 1, 3); }

static inline void cnpa_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/// Opens /dev/net/tun as the TAP interface `name` (IFF_TAP | IFF_NO_PI: whole Ethernet frames,
/// no packet-information prefix), non-blocking and close-on-exec; creates the interface if it
/// does not exist. `name` may be empty (the kernel picks one) and is at most 15 bytes. The name
/// the kernel gave is copied to `out_name` (at least 16 bytes). Returns the fd or -errno.
int cnpa_tap_open(const char *name, char *out_name);

/// Sets the network interface `name`'s Ethernet address (SIOCSIFHWADDR). Returns 0 or -errno.
int cnpa_netif_set_mac(const char *name, const uint8_t *mac);
/// Sets the network interface `name`'s MTU (SIOCSIFMTU). Returns 0 or -errno.
int cnpa_netif_set_mtu(const char *name, int mtu);
/// Brings the network interface `name` up (SIOCGIFFLAGS, then SIOCSIFFLAGS with IFF_UP).
/// Returns 0 or -errno.
int cnpa_netif_set_up(const char *name);
/// Sets the network interface `name`'s transmit queue length (SIOCSIFTXQLEN): for a TAP, how
/// many frames the kernel queues for the reader before it drops. Returns 0 or -errno.
int cnpa_netif_set_txqueuelen(const char *name, int length);

/// Moves the calling thread into the network namespace at `path` (e.g. /var/run/netns/NAME).
/// Returns a descriptor for the namespace it was in (give it to cnpa_netns_return) or -errno.
int cnpa_netns_enter(const char *path);
/// Moves the calling thread back into the namespace `previous` (from cnpa_netns_enter) and
/// closes it. Returns 0 or -errno.
int cnpa_netns_return(int previous);

/// As cnpa_tap_open, with IFF_VNET_HDR: every frame read or written is preceded by a 12-byte
/// virtio_net_hdr_v1 (TUNSETVNETHDRSZ 12), which carries checksum and GSO requests.
int cnpa_tap_open_with_vnet_header(const char *name, char *out_name);
/// TUNSETOFFLOAD: with `enabled`, the kernel may hand over frames needing a checksum and TCP
/// GSO super-frames (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN); without, finished
/// frames only. Needs a TAP opened with the virtio-net header. Returns 0 or -errno.
int cnpa_tap_set_offloads(int fd, int enabled);
/// Sets the interface `name`'s gso_max_size and gso_max_segs (rtnetlink RTM_NEWLINK, what
/// `ip link set dev NAME gso_max_size N gso_max_segs M` does). Returns 0 or -errno.
int cnpa_netif_set_gso_limits(const char *name, uint32_t max_size, uint32_t max_segs);

#endif
