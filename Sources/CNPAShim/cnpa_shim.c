// Only this file sees _GNU_SOURCE; see the note in include/cnpa_shim.h.
#define _GNU_SOURCE 1
#include "cnpa_shim.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <stdbool.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if_arp.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>

int cnpa_memfd_create(const char *name, unsigned int flags) { return memfd_create(name, flags); }

int cnpa_eventfd_create(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

int cnpa_eventfd_signal(int fd) {
    uint64_t one = 1;
    for (;;) {
        ssize_t n = write(fd, &one, sizeof one);
        if (n == (ssize_t)sizeof one) return 0;
        if (n < 0 && errno == EINTR) continue;
        // EAGAIN means the counter is saturated: the other side has a wake-up pending anyway.
        if (n < 0 && errno == EAGAIN) return 0;
        return n < 0 ? -errno : -EIO;
    }
}

int64_t cnpa_eventfd_drain(int fd) {
    uint64_t value = 0;
    for (;;) {
        ssize_t n = read(fd, &value, sizeof value);
        if (n == (ssize_t)sizeof value) return (int64_t)value;
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return 0;
        return n < 0 ? -errno : -EIO;
    }
}

#define CNPA_MAX_FDS 16

long cnpa_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds) {
    if (nfds < 0 || nfds > CNPA_MAX_FDS) return -EINVAL;
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    union {
        char bytes[CMSG_SPACE(sizeof(int) * CNPA_MAX_FDS)];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (nfds > 0) {
        msg.msg_control = control.bytes;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * (size_t)nfds);
    }
    for (;;) {
        ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
        if (n >= 0) return (long)n;
        if (errno == EINTR) continue;
        return -errno;
    }
}

long cnpa_recv_with_fds(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds_out) {
    *nfds_out = 0;
    if (maxfds < 0 || maxfds > CNPA_MAX_FDS) return -EINVAL;
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    union {
        char bytes[CMSG_SPACE(sizeof(int) * CNPA_MAX_FDS)];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.bytes;
    msg.msg_controllen = sizeof control.bytes;
    ssize_t n;
    for (;;) {
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
        if (n >= 0) break;
        if (errno == EINTR) continue;
        return -errno;
    }
    int count = 0;
    int overflow = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int *data = (int *)CMSG_DATA(c);
        for (size_t i = 0; i < k; i++) {
            if (count < maxfds) fds[count++] = data[i];
            else { close(data[i]); overflow = 1; }
        }
    }
    if (overflow || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
        for (int i = 0; i < count; i++) close(fds[i]);
        return -EMSGSIZE;
    }
    *nfds_out = count;
    return (long)n;
}

int cnpa_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int cnpa_epoll_add(int epfd, int fd, uint64_t tag) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.u64 = tag;
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) == 0 ? 0 : -errno;
}

int cnpa_epoll_remove(int epfd, int fd) {
    return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL) == 0 ? 0 : -errno;
}

int cnpa_epoll_wait(int epfd, uint64_t *tags, int maxevents, int timeout_ms) {
    struct epoll_event events[64];
    if (maxevents > 64) maxevents = 64;
    int n = epoll_wait(epfd, events, maxevents, timeout_ms);
    if (n < 0) return errno == EINTR ? 0 : -errno;
    for (int i = 0; i < n; i++) tags[i] = events[i].data.u64;
    return n;
}

void cnpa_set_thread_name(const char *name) {
    char short_name[16];
    strncpy(short_name, name, sizeof short_name - 1);
    short_name[sizeof short_name - 1] = 0;
    pthread_setname_np(pthread_self(), short_name);
}

uint64_t cnpa_thread_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t cnpa_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int cnpa_pin_to_cpu(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof set, &set) == 0 ? 0 : -errno;
}

int cnpa_pin_thread_to_cpu(pthread_t thread, int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return -pthread_setaffinity_np(thread, sizeof set, &set);
}

/// Zeroes `ifr` and names the interface in it; false if `name` is too long for one.
static bool cnpa_netif_request(const char *name, struct ifreq *ifr) {
    size_t len = strlen(name);
    if (len >= IFNAMSIZ) return false;
    memset(ifr, 0, sizeof *ifr);
    memcpy(ifr->ifr_name, name, len);
    return true;
}

/// Both TAP opens: /dev/net/tun as TAP `name` with `flags`, then (if `vnet_header_bytes`) the
/// virtio-net header's size.
static int cnpa_tap_open_flags(const char *name, char *out_name, short flags, int vnet_header_bytes) {
    struct ifreq ifr;
    if (!cnpa_netif_request(name, &ifr)) return -EINVAL;
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return -errno;
    ifr.ifr_flags = flags;
    if (ioctl(fd, TUNSETIFF, &ifr) < 0 || (vnet_header_bytes && ioctl(fd, TUNSETVNETHDRSZ, &vnet_header_bytes) < 0)) {
        int err = errno;
        close(fd);
        return -err;
    }
    memcpy(out_name, ifr.ifr_name, IFNAMSIZ);
    out_name[IFNAMSIZ - 1] = 0;
    return fd;
}

int cnpa_tap_open(const char *name, char *out_name) { return cnpa_tap_open_flags(name, out_name, IFF_TAP | IFF_NO_PI, 0); }

/// One interface ioctl on a throwaway datagram socket (any socket serves for SIOCSIF*).
static int cnpa_netif_ioctl(unsigned long request, struct ifreq *ifr) {
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0) return -errno;
    int rc = ioctl(sock, request, ifr) < 0 ? -errno : 0;
    close(sock);
    return rc;
}

int cnpa_netif_set_mac(const char *name, const uint8_t *mac) {
    struct ifreq ifr;
    if (!cnpa_netif_request(name, &ifr)) return -EINVAL;
    ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
    memcpy(ifr.ifr_hwaddr.sa_data, mac, 6);
    return cnpa_netif_ioctl(SIOCSIFHWADDR, &ifr);
}

int cnpa_netif_set_mtu(const char *name, int mtu) {
    struct ifreq ifr;
    if (!cnpa_netif_request(name, &ifr)) return -EINVAL;
    ifr.ifr_mtu = mtu;
    return cnpa_netif_ioctl(SIOCSIFMTU, &ifr);
}

int cnpa_netif_set_up(const char *name) {
    struct ifreq ifr;
    if (!cnpa_netif_request(name, &ifr)) return -EINVAL;
    int rc = cnpa_netif_ioctl(SIOCGIFFLAGS, &ifr);
    if (rc < 0) return rc;
    ifr.ifr_flags |= IFF_UP;
    return cnpa_netif_ioctl(SIOCSIFFLAGS, &ifr);
}

int cnpa_netif_set_txqueuelen(const char *name, int length) {
    struct ifreq ifr;
    if (!cnpa_netif_request(name, &ifr)) return -EINVAL;
    ifr.ifr_qlen = length;
    return cnpa_netif_ioctl(SIOCSIFTXQLEN, &ifr);
}

int cnpa_netns_enter(const char *path) {
    int previous = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (previous < 0) return -errno;
    int target = open(path, O_RDONLY | O_CLOEXEC);
    if (target < 0) {
        int err = errno;
        close(previous);
        return -err;
    }
    int rc = setns(target, CLONE_NEWNET);
    int err = errno;
    close(target);
    if (rc < 0) {
        close(previous);
        return -err;
    }
    return previous;
}

int cnpa_netns_return(int previous) {
    int rc = setns(previous, CLONE_NEWNET) < 0 ? -errno : 0;
    close(previous);
    return rc;
}

/* ---- TAP with the virtio-net header (offloads) ---- */

int cnpa_tap_open_with_vnet_header(const char *name, char *out_name) {
    /* virtio_net_hdr_v1 (12 bytes, num_buffers included): the layout virtio 1.0 fixes. */
    return cnpa_tap_open_flags(name, out_name, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, 12);
}

int cnpa_tap_set_offloads(int fd, int enabled) {
    unsigned long flags = enabled ? (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN) : 0;
    return ioctl(fd, TUNSETOFFLOAD, flags) < 0 ? -errno : 0;
}

int cnpa_netif_set_gso_limits(const char *name, uint32_t max_size, uint32_t max_segs) {
    struct ifreq ifr;
    if (!cnpa_netif_request(name, &ifr)) return -EINVAL;
    int rc = cnpa_netif_ioctl(SIOCGIFINDEX, &ifr);
    if (rc < 0) return rc;
    struct {
        struct nlmsghdr header;
        struct ifinfomsg link;
        char attributes[64];
    } request;
    memset(&request, 0, sizeof request);
    request.header.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
    request.header.nlmsg_type = RTM_NEWLINK;
    request.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    request.header.nlmsg_seq = 1;
    request.link.ifi_family = AF_UNSPEC;
    request.link.ifi_index = ifr.ifr_ifindex;
    uint16_t types[2] = {IFLA_GSO_MAX_SIZE, IFLA_GSO_MAX_SEGS};
    uint32_t values[2] = {max_size, max_segs};
    for (int i = 0; i < 2; i++) {
        struct rtattr *attribute = (struct rtattr *)((char *)&request + NLMSG_ALIGN(request.header.nlmsg_len));
        attribute->rta_type = types[i];
        attribute->rta_len = RTA_LENGTH(sizeof(uint32_t));
        memcpy(RTA_DATA(attribute), &values[i], sizeof(uint32_t));
        request.header.nlmsg_len = NLMSG_ALIGN(request.header.nlmsg_len) + RTA_ALIGN(attribute->rta_len);
    }
    int sock = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (sock < 0) return -errno;
    if (send(sock, &request, request.header.nlmsg_len, 0) < 0) {
        int err = errno;
        close(sock);
        return -err;
    }
    char reply[512];
    ssize_t n = recv(sock, reply, sizeof reply, 0);
    int err = n < 0 ? errno : 0;
    close(sock);
    if (n < 0) return -err;
    struct nlmsghdr *answer = (struct nlmsghdr *)reply;
    if (n < (ssize_t)NLMSG_LENGTH(sizeof(struct nlmsgerr)) || answer->nlmsg_type != NLMSG_ERROR) return -EPROTO;
    return ((struct nlmsgerr *)NLMSG_DATA(answer))->error; /* 0, or -errno */
}
