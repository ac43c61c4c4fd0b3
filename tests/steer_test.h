/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers shared by the steering tests (steer_cpu.c, steer_churn.c): a
 * private network namespace per test case, loopback reuseport sockets,
 * CPU pinning, and deltas of the per-CPU, per-slot counters the loader
 * reads back. Everything is static inline so each test program takes what
 * it uses without unused-function warnings.
 *
 * Each case runs in a network namespace of its own (the harness forks a
 * child per case and the fixture setup unshares there), so its ports and
 * sysctls cannot collide with servers running on the host meanwhile.
 */
#ifndef POPUP_TESTS_STEER_TEST_H
#define POPUP_TESTS_STEER_TEST_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "steer.h"

/* Every socket wait in the steering tests is bounded by this. */
#define STEER_WAIT_MS	2000

static inline int usable_cpus(int *cpus, int max)
{
	cpu_set_t set;
	int n = 0;

	if (sched_getaffinity(0, sizeof(set), &set))
		return -errno;
	for (int cpu = 0; cpu < CPU_SETSIZE && n < max; cpu++) {
		if (CPU_ISSET(cpu, &set))
			cpus[n++] = cpu;
	}
	return n;
}

/* Pins the calling thread only (sched_setaffinity(0) is per thread). */
static inline int pin_to(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof(set), &set) ? -errno : 0;
}

static inline socklen_t loopback(struct sockaddr_storage *ss, int family, unsigned short port)
{
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
	struct sockaddr_in *a4 = (struct sockaddr_in *)ss;

	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons(port);
		a4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		return sizeof(*a4);
	}
	a6->sin6_family = AF_INET6;
	a6->sin6_port = htons(port);
	a6->sin6_addr = in6addr_loopback;
	return sizeof(*a6);
}

/*
 * A reuseport receive socket on loopback:*port, listening if TCP. With
 * *port == 0 the kernel picks the port and *port returns it.
 */
static inline int rcv_socket(int family, int type, unsigned short *port)
{
	struct sockaddr_storage ss;
	socklen_t len = loopback(&ss, family, *port);
	int one = 1, fd, err;

	fd = socket(family, type | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) ||
	    bind(fd, (struct sockaddr *)&ss, len) ||
	    (type == SOCK_STREAM && listen(fd, 128)) ||
	    getsockname(fd, (struct sockaddr *)&ss, &len))
		goto fail;
	*port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	return fd;
fail:
	err = -errno;
	close(fd);
	return err;
}

/* Close a TCP flow with a RST, so its 4-tuple leaves no TIME_WAIT behind. */
static inline void close_abort(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

static inline int loopback_up(void)
{
	struct ifreq ifr = { .ifr_name = "lo" };
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int err = 0;

	if (fd < 0)
		return -errno;
	if (ioctl(fd, SIOCGIFFLAGS, &ifr))
		err = -errno;
	ifr.ifr_flags |= IFF_UP;
	if (!err && ioctl(fd, SIOCSIFFLAGS, &ifr))
		err = -errno;
	close(fd);
	return err;
}

static inline int write_sysctl(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, val, strlen(val));
	close(fd);
	return n == (ssize_t)strlen(val) ? 0 : -EIO;
}

/*
 * ::1 needs no DAD, but addrconf adds it from a work item once lo is up:
 * wait (bounded) until a socket can bind it. -EAFNOSUPPORT: no IPv6.
 */
static inline int wait_ipv6_loopback(void)
{
	int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	close(fd);
	for (int i = 0; i < 100; i++) {
		unsigned short p = 0;

		fd = rcv_socket(AF_INET6, SOCK_DGRAM, &p);
		if (fd >= 0) {
			close(fd);
			return 0;
		}
		if (fd != -EADDRNOTAVAIL)
			return fd;
		usleep(20000);
	}
	return -EADDRNOTAVAIL;
}

/*
 * Move the calling process (the harness's per-case child) into a new
 * network namespace with only lo, up. 0 or -errno; the IPv6 result is
 * left to the caller through wait_ipv6_loopback().
 */
static inline int enter_netns(void)
{
	if (unshare(CLONE_NEWNET))
		return -errno;
	return loopback_up();
}

static inline enum popup_steer_group group_of(int family, int type)
{
	if (family == AF_INET)
		return type == SOCK_STREAM ? POPUP_STEER_G_TCP4 : POPUP_STEER_G_UDP4;
	return type == SOCK_STREAM ? POPUP_STEER_G_TCP6 : POPUP_STEER_G_UDP6;
}

/*
 * Counter deltas between two snapshots, summed over one slot (or all,
 * slot < 0) and one CPU (or all, cpu < 0).
 */
static inline __u64 stats_delta(const struct popup_steer_stats_table *a,
				const struct popup_steer_stats_table *b,
				int slot, int cpu, size_t field)
{
	__u64 sum = 0;

	for (int s = 0; s < POPUP_STEER_STATS_SLOTS; s++) {
		if (slot >= 0 && s != slot)
			continue;
		for (unsigned int c = 0; c < a->nr_cpus; c++) {
			if (cpu >= 0 && (int)c != cpu)
				continue;
			sum += *(const __u64 *)((const char *)popup_steer_stats_at(b, s, c) + field) -
			       *(const __u64 *)((const char *)popup_steer_stats_at(a, s, c) + field);
		}
	}
	return sum;
}

#define D(a, b, slot, cpu, f) \
	stats_delta(a, b, slot, cpu, offsetof(struct popup_steer_stats, f))

#endif /* POPUP_TESTS_STEER_TEST_H */
