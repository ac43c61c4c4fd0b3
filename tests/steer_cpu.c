// SPDX-License-Identifier: GPL-2.0
/*
 * Test popup's SO_REUSEPORT steering program (bpf/steer.bpf.c) through its
 * loader (userspace/common/steer.c), in the shape of the kernel's
 * selftests/net/reuseport_bpf_cpu.c: build a reuseport group with one
 * socket per CPU this process may run on (slot = index in that CPU list, so
 * sparse sets like 0-2,5 are covered), steer with the "cpu" policy, then
 * move the sender onto each CPU in turn. Over loopback a datagram or SYN
 * is processed on the sending CPU, so it must arrive on that CPU's socket.
 * Done for CPU orders forward, reverse, even and odd, over TCP and UDP,
 * IPv4 and IPv6, checking the per-CPU, per-slot counters as well.
 *
 * Further cases: an emptied slot falls back to a live socket and is
 * counted; the "hash" policy spreads flows and keeps one flow on one
 * socket; the "service" policy steers UDP by the wire header's service
 * id; pinning, stale pins and loader error reporting; and TCP listener
 * migration with and without the migrate program (net.ipv4.tcp_migrate_req
 * is 0 in the case's own netns).
 *
 * Robustness: more CPUs than steer_cpu_slot entries, bad map updates
 * (refused with their errno, changing nothing), a foreign socket put in
 * the sockarray behind the loader's back (counted in errors), no steered
 * socket left (counted, the kernel's hash picks), retiring a worker's
 * socket, detaching the program at run time and by popup_steer__destroy(),
 * and re-attaching by re-adding.
 * The same under continuous load is in steer_churn.c.
 *
 * Each case runs in its own network namespace (see steer_test.h), on
 * loopback with ephemeral ports, and every wait is bounded.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "kselftest_harness.h"

#include "popup/wire.h"
#include "steer.h"
#include "steer_test.h"

/* One slot is kept free for the extra socket some cases add. */
#define NR_MAX		(POPUP_STEER_MAX_SLOTS - 1)
#define WAIT_MS		STEER_WAIT_MS
#define NR_MIGRATE	25

enum order { FORWARD, REVERSE, EVEN, ODD };

/*
 * Send @buf from @cpu as a new flow: a datagram, or a connection that
 * writes @buf. With @sport, the flow's source port is *@sport (0: any, and
 * *@sport returns it), so a later flow can repeat the 4-tuple. Returns the
 * sending socket (to be closed by the caller, so a TCP connection stays up
 * until accepted) or -errno.
 */
static int send_flow(int cpu, int family, int type, unsigned short port,
		     const void *buf, size_t len, unsigned short *sport)
{
	struct timeval tv = { .tv_sec = WAIT_MS / 1000 };
	struct sockaddr_storage ss;
	socklen_t alen;
	int one = 1, fd, err;

	err = pin_to(cpu);
	if (err)
		return err;
	fd = socket(family, type | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (sport) {
		alen = loopback(&ss, family, *sport);
		if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
		    bind(fd, (struct sockaddr *)&ss, alen) ||
		    getsockname(fd, (struct sockaddr *)&ss, &alen))
			goto fail;
		*sport = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	}
	alen = loopback(&ss, family, port);
	/* bounds connect() and send() */
	if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) ||
	    connect(fd, (struct sockaddr *)&ss, alen) ||
	    send(fd, buf, len, 0) != (ssize_t)len)
		goto fail;
	return fd;
fail:
	err = -errno;
	close(fd);
	return err;
}

static int send_from(int cpu, int family, int type, unsigned short port,
		     const void *buf, size_t len)
{
	return send_flow(cpu, family, type, port, buf, len, NULL);
}

/* Index (epoll data) of the receive socket that became readable, or -1. */
static int wait_one(int epfd)
{
	struct epoll_event ev;

	if (epoll_wait(epfd, &ev, 1, WAIT_MS) != 1)
		return -1;
	return ev.data.u32;
}

/*
 * Take the @len bytes sent to listener/receiver @fd. Returns the datagram's
 * real length (MSG_TRUNC) or what a TCP child delivered within WAIT_MS.
 */
static ssize_t take(int fd, int type, void *buf, size_t len)
{
	struct timeval tv = { .tv_sec = WAIT_MS / 1000 };
	ssize_t n;
	int c;

	if (type == SOCK_DGRAM)
		return recv(fd, buf, len, MSG_DONTWAIT | MSG_TRUNC);
	c = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (c < 0)
		return -1;
	fcntl(c, F_SETFL, 0);
	setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	n = recv(c, buf, len, MSG_WAITALL);
	close(c);
	return n;
}

static void wire_request(unsigned char *buf, __u32 service)
{
	struct popup_wire_hdr h = {
		.magic = POPUP_WIRE_MAGIC,
		.version = POPUP_WIRE_VERSION,
		.service = service,
		.req_id = 42,
	};

	popup_wire_encode(buf, &h);
}

/* ---- steering over a per-CPU group -------------------------------------- */

FIXTURE(steer) {
	struct popup_steer *st;
	int cpus[NR_MAX];
	int ncpus;
	int fds[NR_MAX + 1];
	int nfds;
	int epfd;
	unsigned short port;
};

FIXTURE_VARIANT(steer) {
	int family;
	int type;
};

FIXTURE_VARIANT_ADD(steer, tcp4) { .family = AF_INET, .type = SOCK_STREAM };
FIXTURE_VARIANT_ADD(steer, udp4) { .family = AF_INET, .type = SOCK_DGRAM };
FIXTURE_VARIANT_ADD(steer, tcp6) { .family = AF_INET6, .type = SOCK_STREAM };
FIXTURE_VARIANT_ADD(steer, udp6) { .family = AF_INET6, .type = SOCK_DGRAM };

/* Append a receive socket in the next slot, reachable from no CPU. */
static int add_socket(FIXTURE_DATA(steer) *self, const FIXTURE_VARIANT(steer) *variant)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u32 = self->nfds };
	int fd, err;

	fd = rcv_socket(variant->family, variant->type, &self->port);
	if (fd < 0)
		return fd;
	self->fds[self->nfds] = fd;
	err = popup_steer__add_socket(self->st, fd, self->nfds);
	if (err)
		return err;
	if (epoll_ctl(self->epfd, EPOLL_CTL_ADD, fd, &ev))
		return -errno;
	return self->nfds++;
}

FIXTURE_SETUP(steer)
{
	struct popup_steer_opts opts = { .policy = POPUP_STEER_P_CPU };
	int fd;

	for (int i = 0; i <= NR_MAX; i++)
		self->fds[i] = -1;
	self->epfd = -1;
	if (geteuid())
		SKIP(return, "needs root for BPF and a netns");
	ASSERT_EQ(0, enter_netns());
	fd = variant->family == AF_INET6 ? wait_ipv6_loopback() : 0;
	if (fd)
		SKIP(return, "no IPv6 loopback: %s", strerror(-fd));

	self->ncpus = usable_cpus(self->cpus, NR_MAX);
	ASSERT_GT(self->ncpus, 0);
	ASSERT_EQ(0, popup_steer__open(&self->st, &opts));
	self->epfd = epoll_create1(EPOLL_CLOEXEC);
	ASSERT_LE(0, self->epfd);
	for (int i = 0; i < self->ncpus; i++) {
		ASSERT_EQ(i, add_socket(self, variant));
		ASSERT_EQ(0, popup_steer__set_cpu_slot(self->st, self->cpus[i], i));
	}
}

FIXTURE_TEARDOWN(steer)
{
	for (int i = 0; i <= NR_MAX; i++) {
		if (self->fds[i] >= 0)
			close(self->fds[i]);
	}
	if (self->epfd >= 0)
		close(self->epfd);
	popup_steer__destroy(self->st);
}

/* Send from cpus[i] and expect socket @want (-1: any socket but @avoid). */
static void send_expect(struct __test_metadata *_metadata, FIXTURE_DATA(steer) *self,
			const FIXTURE_VARIANT(steer) *variant, int cpu,
			const void *msg, size_t len, int want, int avoid)
{
	char buf[64];
	int c, got;

	c = send_from(cpu, variant->family, variant->type, self->port, msg, len);
	ASSERT_LE(0, c) TH_LOG("send from CPU %d: %s", cpu, strerror(-c));
	got = wait_one(self->epfd);
	ASSERT_LE(0, got) TH_LOG("nothing received from CPU %d", cpu);
	if (want >= 0) {
		EXPECT_EQ(want, got) TH_LOG("sent from CPU %d", cpu);
	} else {
		EXPECT_NE(avoid, got) TH_LOG("sent from CPU %d", cpu);
	}
	ASSERT_GE(sizeof(buf), len);
	EXPECT_EQ((ssize_t)len, take(self->fds[got], variant->type, buf, len));
	close(c);
}

static void run_order(struct __test_metadata *_metadata, FIXTURE_DATA(steer) *self,
		      const FIXTURE_VARIANT(steer) *variant, enum order order)
{
	struct popup_steer_stats_table before, after;
	int sent[NR_MAX] = { 0 };
	int nsent = 0;

	ASSERT_EQ(0, popup_steer__read_stats(self->st, &before));
	for (int k = 0; k < self->ncpus; k++) {
		int i = order == REVERSE ? self->ncpus - 1 - k : k;
		int cpu = self->cpus[i];

		if ((order == EVEN && cpu % 2) || (order == ODD && !(cpu % 2)))
			continue;
		send_expect(_metadata, self, variant, cpu, "ping", 4, i, -1);
		sent[i]++;
		nsent++;
	}
	ASSERT_EQ(0, popup_steer__read_stats(self->st, &after));
	if (!nsent)
		SKIP(goto out, "no %s CPU available", order == EVEN ? "even" : "odd");
	/* Exactly one selection per send, in the sending CPU's cell of its slot. */
	for (int i = 0; i < self->ncpus; i++)
		EXPECT_EQ(sent[i], D(&before, &after, i, self->cpus[i], selections));
	EXPECT_EQ(nsent, D(&before, &after, -1, -1, selections));
	EXPECT_EQ(0, D(&before, &after, -1, -1, fallbacks));
	EXPECT_EQ(0, D(&before, &after, -1, -1, errors));
out:
	popup_steer_stats_table__free(&before);
	popup_steer_stats_table__free(&after);
}

TEST_F(steer, cpu_forward)
{
	if (_metadata->skip)
		return;
	run_order(_metadata, self, variant, FORWARD);
}

TEST_F(steer, cpu_reverse)
{
	if (_metadata->skip)
		return;
	run_order(_metadata, self, variant, REVERSE);
}

TEST_F(steer, cpu_even)
{
	if (_metadata->skip)
		return;
	run_order(_metadata, self, variant, EVEN);
}

TEST_F(steer, cpu_odd)
{
	if (_metadata->skip)
		return;
	run_order(_metadata, self, variant, ODD);
}

/*
 * A worker dies: its socket closes, the kernel empties its slot, but the
 * live list still names it until popupd calls remove_slot. Both before
 * and after that, its CPU's traffic must reach another live socket.
 */
TEST_F(steer, fallback_empty_slot)
{
	struct popup_steer_stats_table s0, s1, s2;
	enum popup_steer_group g = group_of(variant->family, variant->type);
	int cpu = self->cpus[0];

	if (_metadata->skip)
		return;
	ASSERT_LE(0, add_socket(self, variant));
	close(self->fds[0]);
	self->fds[0] = -1;

	ASSERT_EQ(0, popup_steer__read_stats(self->st, &s0));
	send_expect(_metadata, self, variant, cpu, "ping", 4, -1, 0);
	ASSERT_EQ(0, popup_steer__read_stats(self->st, &s1));
	EXPECT_EQ(1, D(&s0, &s1, -1, cpu, fallbacks));
	EXPECT_EQ(1, D(&s0, &s1, -1, -1, selections));
	EXPECT_EQ(0, D(&s0, &s1, POPUP_STEER_STATS_NONE, -1, errors));

	EXPECT_EQ(0, popup_steer__remove_slot(self->st, g, 0));
	EXPECT_EQ(-ENOENT, popup_steer__remove_slot(self->st, g, 0));
	send_expect(_metadata, self, variant, cpu, "ping", 4, -1, 0);
	ASSERT_EQ(0, popup_steer__read_stats(self->st, &s2));
	EXPECT_EQ(1, D(&s1, &s2, -1, cpu, fallbacks));
	popup_steer_stats_table__free(&s0);
	popup_steer_stats_table__free(&s1);
	popup_steer_stats_table__free(&s2);
}

/* A CPU with no worker at all takes the same fallback. */
TEST_F(steer, fallback_cpu_without_slot)
{
	struct popup_steer_stats_table s0, s1;
	int cpu = self->cpus[0];

	if (_metadata->skip)
		return;
	ASSERT_EQ(0, popup_steer__set_cpu_slot(self->st, cpu, POPUP_STEER_SLOT_NONE));
	ASSERT_EQ(0, popup_steer__read_stats(self->st, &s0));
	send_expect(_metadata, self, variant, cpu, "ping", 4, -1, -1);
	ASSERT_EQ(0, popup_steer__read_stats(self->st, &s1));
	EXPECT_EQ(1, D(&s0, &s1, -1, cpu, fallbacks));
	popup_steer_stats_table__free(&s0);
	popup_steer_stats_table__free(&s1);
}

/* Policy "hash": 64 flows from one CPU must not all land on one socket. */
TEST_F(steer, hash_spreads)
{
	struct popup_steer_stats_table s0, s1;
	int hits[NR_MAX + 1] = { 0 };
	int used = 0;

	if (_metadata->skip)
		return;
	ASSERT_LE(0, add_socket(self, variant));
	ASSERT_EQ(0, popup_steer__set_policy(self->st, POPUP_STEER_P_HASH));
	ASSERT_EQ(0, popup_steer__read_stats(self->st, &s0));
	for (int k = 0; k < 64; k++) {
		char buf[8];
		int c, got;

		c = send_from(self->cpus[0], variant->family, variant->type, self->port, "hash", 4);
		ASSERT_LE(0, c);
		got = wait_one(self->epfd);
		ASSERT_LE(0, got);
		EXPECT_EQ(4, take(self->fds[got], variant->type, buf, 4));
		close(c);
		hits[got]++;
	}
	ASSERT_EQ(0, popup_steer__read_stats(self->st, &s1));
	for (int i = 0; i < self->nfds; i++)
		used += hits[i] > 0;
	EXPECT_LE(2, used);
	EXPECT_EQ(64, D(&s0, &s1, -1, -1, selections));
	EXPECT_EQ(0, D(&s0, &s1, -1, -1, fallbacks));
	popup_steer_stats_table__free(&s0);
	popup_steer_stats_table__free(&s1);
}

/*
 * Policy "hash" is stable: one 4-tuple keeps one socket, whichever CPU it
 * comes from (for TCP: reconnecting from the same source port).
 */
TEST_F(steer, hash_stable_flow)
{
	unsigned short sport = 0;
	int first = -1;

	if (_metadata->skip)
		return;
	ASSERT_LE(0, add_socket(self, variant));
	ASSERT_EQ(0, popup_steer__set_policy(self->st, POPUP_STEER_P_HASH));
	for (int k = 0; k < 16; k++) {
		int cpu = self->cpus[k % self->ncpus];
		char buf[8];
		int c, got;

		c = send_flow(cpu, variant->family, variant->type, self->port, "x", 1, &sport);
		ASSERT_LE(0, c) TH_LOG("flow %d from port %u: %s", k, sport, strerror(-c));
		got = wait_one(self->epfd);
		ASSERT_LE(0, got);
		if (first < 0)
			first = got;
		EXPECT_EQ(first, got) TH_LOG("flow %d from CPU %d", k, cpu);
		EXPECT_EQ(1, take(self->fds[got], variant->type, buf, 1));
		close_abort(c);
	}
}

/*
 * Policy "service": UDP requests for service 7 go to the extra socket no
 * CPU maps to; unknown services, non-wire datagrams and TCP keep the cpu
 * policy.
 */
TEST_F(steer, service_policy)
{
	unsigned char req[POPUP_WIRE_HDR_LEN];
	unsigned int slots[2];
	int extra;

	if (_metadata->skip)
		return;
	extra = add_socket(self, variant);
	ASSERT_LE(0, extra);
	slots[0] = extra;
	ASSERT_EQ(0, popup_steer__set_service(self->st, 7, slots, 1));
	ASSERT_EQ(0, popup_steer__set_policy(self->st, POPUP_STEER_P_SERVICE));

	for (int i = 0; i < self->ncpus; i++) {
		int cpu = self->cpus[i];

		wire_request(req, 7);
		send_expect(_metadata, self, variant, cpu, req, sizeof(req),
			    variant->type == SOCK_DGRAM ? extra : i, -1);
		wire_request(req, 8);
		send_expect(_metadata, self, variant, cpu, req, sizeof(req), i, -1);
		send_expect(_metadata, self, variant, cpu, "not popup wire protocol", 23, i, -1);
	}
	if (variant->type != SOCK_DGRAM)
		return;

	/* two slots: either one, never a CPU-only socket other than slot 0 */
	slots[0] = 0;
	slots[1] = extra;
	ASSERT_EQ(0, popup_steer__set_service(self->st, 9, slots, 2));
	for (int i = 0; i < self->ncpus; i++) {
		char buf[64];
		int c, got;

		wire_request(req, 9);
		c = send_from(self->cpus[i], variant->family, variant->type, self->port,
			      req, sizeof(req));
		ASSERT_LE(0, c);
		got = wait_one(self->epfd);
		EXPECT_TRUE(got == 0 || got == extra) TH_LOG("got socket %d", got);
		if (got >= 0)
			EXPECT_EQ(sizeof(req), take(self->fds[got], variant->type, buf, sizeof(req)));
		close(c);
	}

	/* forgetting the service hands it back to the cpu policy */
	ASSERT_EQ(0, popup_steer__set_service(self->st, 7, NULL, 0));
	wire_request(req, 7);
	send_expect(_metadata, self, variant, self->cpus[0], req, sizeof(req), 0, -1);
}

/* The loader refuses, with the documented errno, what the kernel would. */
TEST_F(steer, add_socket_errors)
{
	unsigned short port = 0;
	int fd;

	if (_metadata->skip)
		return;
	/* not SO_REUSEPORT */
	fd = socket(variant->family, variant->type, 0);
	ASSERT_LE(0, fd);
	EXPECT_EQ(-EINVAL, popup_steer__add_socket(self->st, fd, 0));
	close(fd);
	/* a different port than the group's */
	fd = rcv_socket(variant->family, variant->type, &port);
	ASSERT_LE(0, fd);
	EXPECT_EQ(-EBADFD, popup_steer__add_socket(self->st, fd, 0));
	EXPECT_EQ(-ENOENT, popup_steer__remove_socket(self->st, fd));
	close(fd);
	EXPECT_EQ(-ERANGE, popup_steer__add_socket(self->st, self->fds[0],
						   POPUP_STEER_MAX_SLOTS));
	/* re-adding the same socket to its slot is a no-op */
	EXPECT_EQ(0, popup_steer__add_socket(self->st, self->fds[0], 0));
	if (variant->type == SOCK_STREAM) {
		struct sockaddr_storage ss;
		socklen_t len = loopback(&ss, variant->family, self->port);
		int one = 1;

		/* bound to the group's port but not listening yet */
		fd = socket(variant->family, variant->type, 0);
		ASSERT_LE(0, fd);
		ASSERT_EQ(0, setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)));
		ASSERT_EQ(0, bind(fd, (struct sockaddr *)&ss, len));
		EXPECT_EQ(-EINVAL, popup_steer__add_socket(self->st, fd, 1));
		close(fd);
	}
	EXPECT_EQ(0, popup_steer__remove_socket(self->st, self->fds[0]));
	EXPECT_EQ(-ENOENT, popup_steer__remove_socket(self->st, self->fds[0]));
}

/* ---- pinning ------------------------------------------------------------ */

static void pin_dir_name(char *buf, size_t size)
{
	snprintf(buf, size, "/sys/fs/bpf/popup-test-%d", getpid());
}

static int pinned_policy(const char *dir)
{
	struct popup_steer_config cfg;
	char path[256];
	__u32 zero = 0;
	int fd, err;

	snprintf(path, sizeof(path), "%s/steer_config", dir);
	fd = bpf_obj_get(path);
	if (fd < 0)
		return -errno;
	err = bpf_map_lookup_elem(fd, &zero, &cfg) ? -errno : (int)cfg.policy;
	close(fd);
	return err;
}

TEST(pin_dir)
{
	struct popup_steer_opts opts = { .policy = POPUP_STEER_P_CPU, .migrate = true };
	struct popup_steer_stats_table t;
	struct popup_steer *st, *st2;
	char dir[128], path[192];
	int status;
	pid_t pid;

	if (geteuid())
		SKIP(return, "needs root for BPF and a netns");
	/* no sockets here, but every case gets its own netns all the same */
	ASSERT_EQ(0, enter_netns());
	pin_dir_name(dir, sizeof(dir));
	opts.pin_dir = dir;
	ASSERT_EQ(0, popup_steer__open(&st, &opts));
	snprintf(path, sizeof(path), "%s/steer_stats", dir);
	EXPECT_EQ(0, access(path, F_OK));
	snprintf(path, sizeof(path), "%s/steer_migrate", dir);
	EXPECT_EQ(0, access(path, F_OK));

	/* a live owner keeps its pins */
	EXPECT_EQ(-EBUSY, popup_steer__open(&st2, &opts));
	EXPECT_TRUE(st2 == NULL);

	/* popupctl's view: the pins alone */
	ASSERT_EQ(0, popup_steer__read_stats_pinned(dir, &t));
	EXPECT_LT(0, t.nr_cpus);
	popup_steer_stats_table__free(&t);
	EXPECT_EQ(0, popup_steer__set_policy_pinned(dir, POPUP_STEER_P_HASH));
	EXPECT_EQ(POPUP_STEER_P_HASH, pinned_policy(dir));

	popup_steer__destroy(st);
	EXPECT_EQ(-1, access(dir, F_OK));
	EXPECT_EQ(-ENOENT, popup_steer__read_stats_pinned(dir, &t));

	/* a run killed without cleanup leaves stale pins; the next replaces them */
	pid = fork();
	ASSERT_LE(0, pid);
	if (!pid) {
		if (!popup_steer__open(&st, &opts))
			raise(SIGKILL);
		_exit(1);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_TRUE(WIFSIGNALED(status));
	ASSERT_EQ(0, access(path, F_OK));
	ASSERT_EQ(0, popup_steer__open(&st, &opts));
	EXPECT_EQ(POPUP_STEER_P_CPU, pinned_policy(dir));
	popup_steer__destroy(st);
	EXPECT_EQ(-1, access(dir, F_OK));
}

/* ---- robustness --------------------------------------------------------- */

/*
 * Replace the fixture's loader with one opened with @opts and enter the
 * same sockets under the same slots again; CPUs beyond the new
 * steer_cpu_slot are left without a slot.
 */
static int reopen(FIXTURE_DATA(steer) *self, const struct popup_steer_opts *opts)
{
	int err;

	popup_steer__destroy(self->st);
	self->st = NULL;
	err = popup_steer__open(&self->st, opts);
	for (int i = 0; !err && i < self->nfds; i++)
		err = popup_steer__add_socket(self->st, self->fds[i], i);
	for (int i = 0; !err && i < self->ncpus; i++) {
		if (!opts->max_cpus || (unsigned int)self->cpus[i] < opts->max_cpus)
			err = popup_steer__set_cpu_slot(self->st, self->cpus[i], i);
	}
	return err;
}

/* Send from every CPU; each must reach some socket of the group. */
static int send_everywhere(struct __test_metadata *_metadata, FIXTURE_DATA(steer) *self,
			   const FIXTURE_VARIANT(steer) *variant, int rounds)
{
	for (int r = 0; r < rounds; r++) {
		for (int i = 0; i < self->ncpus; i++)
			send_expect(_metadata, self, variant, self->cpus[i], "any", 3, -1, -1);
	}
	return rounds * self->ncpus;
}

/*
 * A host with more CPUs than steer_cpu_slot entries (simulated with a map
 * smaller than this host's CPU ids): the loader refuses to map the CPUs
 * beyond it, and their traffic takes the counted fallback, not a drop.
 */
TEST_F(steer, cpus_beyond_map)
{
	struct popup_steer_opts opts = { .policy = POPUP_STEER_P_CPU };
	struct popup_steer_stats_table s0, s1;
	int hi = self->cpus[self->ncpus - 1];

	if (_metadata->skip)
		return;
	if (hi == 0)
		SKIP(return, "needs a usable CPU above 0");
	opts.max_cpus = hi;
	ASSERT_EQ(0, reopen(self, &opts));
	EXPECT_EQ(-ERANGE, popup_steer__set_cpu_slot(self->st, hi, 0));
	EXPECT_EQ(-ERANGE, popup_steer__set_cpu_slot(self->st, POPUP_STEER_MAX_CPUS, 0));

	ASSERT_EQ(0, popup_steer__read_stats(self->st, &s0));
	send_expect(_metadata, self, variant, hi, "far", 3, -1, -1);
	for (int i = 0; i < self->ncpus - 1; i++)
		send_expect(_metadata, self, variant, self->cpus[i], "near", 4, i, -1);
	ASSERT_EQ(0, popup_steer__read_stats(self->st, &s1));
	EXPECT_EQ(1, D(&s0, &s1, -1, hi, fallbacks));
	EXPECT_EQ(1, D(&s0, &s1, -1, -1, fallbacks));
	EXPECT_EQ(self->ncpus, D(&s0, &s1, -1, -1, selections));
	EXPECT_EQ(0, D(&s0, &s1, -1, -1, errors));
	popup_steer_stats_table__free(&s0);
	popup_steer_stats_table__free(&s1);
}

/*
 * Bad updates are refused with an errno that says what is wrong, and
 * leave the maps as they were: every CPU still reaches its own socket.
 */
TEST_F(steer, bad_updates_change_nothing)
{
	enum popup_steer_group g = group_of(variant->family, variant->type);
	static unsigned int many[POPUP_STEER_MAX_SLOTS + 1];
	unsigned int bad_slot = POPUP_STEER_MAX_SLOTS;
	int pfd[2], fd;

	if (_metadata->skip)
		return;
	/* a closed fd */
	fd = dup(self->fds[0]);
	ASSERT_LE(0, fd);
	close(fd);
	EXPECT_EQ(-EBADF, popup_steer__add_socket(self->st, fd, 0));
	/* not a socket */
	ASSERT_EQ(0, pipe2(pfd, O_CLOEXEC));
	EXPECT_EQ(-ENOTSOCK, popup_steer__add_socket(self->st, pfd[0], 0));
	EXPECT_EQ(-ENOTSOCK, popup_steer__remove_socket(self->st, pfd[0]));
	close(pfd[0]);
	close(pfd[1]);
	/* neither IPv4 nor IPv6 (the kernel would say -ENOTSUPP, 524) */
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ASSERT_LE(0, fd);
	EXPECT_EQ(-EAFNOSUPPORT, popup_steer__add_socket(self->st, fd, 0));
	close(fd);
	/* already in slot 0: the kernel refuses it in a second slot */
	EXPECT_EQ(-EBUSY, popup_steer__add_socket(self->st, self->fds[0], self->nfds));
	EXPECT_EQ(-ENOENT, popup_steer__remove_slot(self->st, g, self->nfds));
	/* values out of range */
	EXPECT_EQ(-ERANGE, popup_steer__set_cpu_slot(self->st, self->cpus[0], POPUP_STEER_MAX_SLOTS));
	EXPECT_EQ(-ERANGE, popup_steer__set_cpu_slot(self->st, 1u << 24, 0));
	EXPECT_EQ(-EINVAL, popup_steer__set_policy(self->st, POPUP_STEER_POLICIES));
	EXPECT_EQ(-ERANGE, popup_steer__set_service(self->st, 7, &bad_slot, 1));
	EXPECT_EQ(-E2BIG, popup_steer__set_service(self->st, 7, many, POPUP_STEER_MAX_SLOTS + 1));
	EXPECT_EQ(-ERANGE, popup_steer__remove_slot(self->st, POPUP_STEER_GROUPS, 0));
	EXPECT_EQ(-ERANGE, popup_steer__remove_slot(self->st, g, POPUP_STEER_MAX_SLOTS));

	run_order(_metadata, self, variant, FORWARD);
}

/*
 * A socket of another port put in a slot behind the loader's back (e.g.
 * with bpftool on the pinned map): the kernel refuses to select it, the
 * program counts an error on that slot and falls back; re-adding the
 * right socket repairs the slot.
 */
TEST_F(steer, foreign_socket_counted)
{
	struct popup_steer_opts opts = { .policy = POPUP_STEER_P_CPU };
	enum popup_steer_group g = group_of(variant->family, variant->type);
	struct popup_steer_stats_table s0, s1, s2;
	unsigned short other = 0;
	char dir[128], path[192];
	int mfd, fd, cpu = self->cpus[0];
	__u32 key = g * POPUP_STEER_MAX_SLOTS;
	__u64 val;

	if (_metadata->skip)
		return;
	pin_dir_name(dir, sizeof(dir));
	opts.pin_dir = dir;
	ASSERT_EQ(0, reopen(self, &opts));
	/* somewhere to fall back to even on a 1-CPU machine */
	ASSERT_LE(0, add_socket(self, variant));
	snprintf(path, sizeof(path), "%s/steer_socks", dir);
	mfd = bpf_obj_get(path);
	ASSERT_LE(0, mfd);
	fd = rcv_socket(variant->family, variant->type, &other);
	ASSERT_LE(0, fd);
	val = fd;
	ASSERT_EQ(0, bpf_map_update_elem(mfd, &key, &val, BPF_ANY));

	ASSERT_EQ(0, popup_steer__read_stats(self->st, &s0));
	send_expect(_metadata, self, variant, cpu, "ping", 4, -1, 0);
	ASSERT_EQ(0, popup_steer__read_stats(self->st, &s1));
	EXPECT_LE(1, D(&s0, &s1, 0, cpu, errors));
	EXPECT_EQ(1, D(&s0, &s1, -1, cpu, fallbacks));
	EXPECT_EQ(0, D(&s0, &s1, POPUP_STEER_STATS_NONE, -1, errors));

	EXPECT_EQ(0, popup_steer__add_socket(self->st, self->fds[0], 0));
	send_expect(_metadata, self, variant, cpu, "ping", 4, 0, -1);
	ASSERT_EQ(0, popup_steer__read_stats(self->st, &s2));
	EXPECT_EQ(0, D(&s1, &s2, -1, -1, errors));
	EXPECT_EQ(0, D(&s1, &s2, -1, -1, fallbacks));
	close(fd);
	close(mfd);
	popup_steer_stats_table__free(&s0);
	popup_steer_stats_table__free(&s1);
	popup_steer_stats_table__free(&s2);
}

/*
 * Every socket taken out of steering while still open: nothing is
 * selectable, so the kernel's hash picks, and the NONE row counts it.
 */
TEST_F(steer, no_steered_socket)
{
	struct popup_steer_stats_table s0, s1;
	int n;

	if (_metadata->skip)
		return;
	for (int i = 0; i < self->nfds; i++)
		ASSERT_EQ(0, popup_steer__remove_socket(self->st, self->fds[i]));
	ASSERT_EQ(0, popup_steer__read_stats(self->st, &s0));
	n = send_everywhere(_metadata, self, variant, 2);
	ASSERT_EQ(0, popup_steer__read_stats(self->st, &s1));
	EXPECT_EQ(n, D(&s0, &s1, POPUP_STEER_STATS_NONE, -1, errors));
	EXPECT_EQ(0, D(&s0, &s1, -1, -1, selections));
	popup_steer_stats_table__free(&s0);
	popup_steer_stats_table__free(&s1);
}

/* sk_setsockopt() wants an int's worth of (ignored) value. */
static int detach_sock(int fd)
{
	int zero = 0;

	return setsockopt(fd, SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, &zero, sizeof(zero));
}

/*
 * Retiring a worker's socket: what it already holds stays readable, and
 * nothing new reaches it, from any CPU (UDP: not even through the
 * kernel's lookup, since it is connected to a dead peer).
 */
TEST_F(steer, retire_socket)
{
	struct popup_steer_stats_table s0, s1;
	char buf[8];
	int c, cpu = self->cpus[0];

	if (_metadata->skip)
		return;
	ASSERT_LE(0, add_socket(self, variant));
	c = send_from(cpu, variant->family, variant->type, self->port, "old", 3);
	ASSERT_LE(0, c);
	ASSERT_EQ(0, wait_one(self->epfd));

	ASSERT_EQ(0, popup_steer__retire_socket(self->st, self->fds[0]));
	EXPECT_EQ(-ENOENT, popup_steer__retire_socket(self->st, self->fds[0]));
	EXPECT_EQ(3, take(self->fds[0], variant->type, buf, 3));
	close(c);

	ASSERT_EQ(0, popup_steer__read_stats(self->st, &s0));
	for (int r = 0; r < 4; r++) {
		send_expect(_metadata, self, variant, cpu, "new", 3, -1, 0);
		for (int i = 1; i < self->ncpus; i++)
			send_expect(_metadata, self, variant, self->cpus[i], "new", 3, i, -1);
	}
	ASSERT_EQ(0, popup_steer__read_stats(self->st, &s1));
	EXPECT_EQ(4, D(&s0, &s1, -1, cpu, fallbacks));
	EXPECT_EQ(0, D(&s0, &s1, -1, -1, errors));
	popup_steer_stats_table__free(&s0);
	popup_steer_stats_table__free(&s1);
	if (variant->type == SOCK_STREAM)
		return;

	/* the kernel's own hash, without the program, passes it over too */
	ASSERT_EQ(0, detach_sock(self->fds[1]));
	for (int r = 0; r < 16; r++) {
		for (int i = 0; i < self->ncpus; i++)
			send_expect(_metadata, self, variant, self->cpus[i], "new", 3, -1, 0);
	}
}

/* Has the program (or any) been detached from @fd's group? */
static bool detached(int fd)
{
	return detach_sock(fd) && errno == ENOENT;
}

/*
 * Detaching at run time, by hand or with popup_steer__detach(): traffic
 * goes on by the kernel's hash and the program counts nothing; re-adding
 * a socket re-attaches it and CPU steering is exact again.
 */
TEST_F(steer, detach_at_run_time)
{
	struct popup_steer_stats_table s0, s1;

	if (_metadata->skip)
		return;
	ASSERT_EQ(0, popup_steer__read_stats(self->st, &s0));
	ASSERT_EQ(0, detach_sock(self->fds[0]));
	EXPECT_TRUE(detached(self->fds[self->nfds - 1]));
	send_everywhere(_metadata, self, variant, 4);
	ASSERT_EQ(0, popup_steer__read_stats(self->st, &s1));
	EXPECT_EQ(0, D(&s0, &s1, -1, -1, selections));
	popup_steer_stats_table__free(&s0);
	popup_steer_stats_table__free(&s1);

	EXPECT_EQ(0, popup_steer__add_socket(self->st, self->fds[0], 0));
	run_order(_metadata, self, variant, FORWARD);

	/* the loader's own detach, twice: the second finds nothing to do */
	EXPECT_EQ(0, popup_steer__detach(self->st));
	EXPECT_EQ(0, popup_steer__detach(self->st));
	ASSERT_EQ(0, popup_steer__read_stats(self->st, &s0));
	send_everywhere(_metadata, self, variant, 4);
	ASSERT_EQ(0, popup_steer__read_stats(self->st, &s1));
	EXPECT_EQ(0, D(&s0, &s1, -1, -1, selections));
	popup_steer_stats_table__free(&s0);
	popup_steer_stats_table__free(&s1);

	EXPECT_EQ(0, popup_steer__add_socket(self->st, self->fds[self->nfds - 1],
					     self->nfds - 1));
	run_order(_metadata, self, variant, REVERSE);
}

/*
 * destroy detaches the program from the groups of sockets still held, so
 * they are not left steered by maps nobody updates; a socket the caller
 * closed is not touched, even when its fd number now names another
 * socket (here one with a classic BPF reuseport program of its own).
 */
TEST_F(steer, destroy_detaches)
{
	struct sock_filter code[] = { BPF_STMT(BPF_RET | BPF_K, 0) };
	struct sock_fprog fprog = { .len = 1, .filter = code };
	unsigned short other = 0;
	int reused = self->fds[0], fd;

	if (_metadata->skip)
		return;
	/* keep a group alive through a socket we hold on 1-CPU machines */
	ASSERT_LE(0, add_socket(self, variant));
	/* socket 0 closes, and its fd number now names a stranger */
	fd = rcv_socket(variant->family, variant->type, &other);
	ASSERT_LE(0, fd);
	ASSERT_EQ(reused, dup2(fd, reused));
	close(fd);
	ASSERT_EQ(0, setsockopt(reused, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF,
				&fprog, sizeof(fprog)));

	popup_steer__destroy(self->st);
	self->st = NULL;
	for (int i = 1; i < self->nfds; i++) {
		EXPECT_TRUE(detached(self->fds[i])) TH_LOG("socket %d", i);
	}
	/* the stranger's program survived */
	EXPECT_EQ(0, detach_sock(reused));
	for (int i = 1; i < self->ncpus; i++)
		send_expect(_metadata, self, variant, self->cpus[i], "any", 3, -1, 0);
}

/* ---- TCP listener migration -------------------------------------------- */

FIXTURE(migrate) {
	struct popup_steer *st;
	int lfd[2];
	int cfd[NR_MIGRATE];
	unsigned short port;
};

FIXTURE_VARIANT(migrate) {
	int family;
	bool prog;	/* attach steer_migrate */
};

FIXTURE_VARIANT_ADD(migrate, tcp4) { .family = AF_INET, .prog = true };
FIXTURE_VARIANT_ADD(migrate, tcp6) { .family = AF_INET6, .prog = true };
FIXTURE_VARIANT_ADD(migrate, tcp4_no_prog) { .family = AF_INET, .prog = false };
FIXTURE_VARIANT_ADD(migrate, tcp6_no_prog) { .family = AF_INET6, .prog = false };

FIXTURE_SETUP(migrate)
{
	struct popup_steer_opts opts = { .policy = POPUP_STEER_P_CPU, .migrate = variant->prog };
	int cpus[NR_MAX], n;

	self->lfd[0] = self->lfd[1] = -1;
	for (int i = 0; i < NR_MIGRATE; i++)
		self->cfd[i] = -1;
	if (geteuid())
		SKIP(return, "needs root for BPF and a netns");
	/* the case's own netns: tcp_migrate_req starts at 0, the host's is untouched */
	ASSERT_EQ(0, enter_netns());
	ASSERT_EQ(0, write_sysctl("/proc/sys/net/ipv4/tcp_migrate_req", "0"));
	n = variant->family == AF_INET6 ? wait_ipv6_loopback() : 0;
	if (n)
		SKIP(return, "no IPv6 loopback: %s", strerror(-n));

	ASSERT_EQ(0, popup_steer__open(&self->st, &opts));
	for (int i = 0; i < 2; i++) {
		self->lfd[i] = rcv_socket(variant->family, SOCK_STREAM, &self->port);
		ASSERT_LE(0, self->lfd[i]);
		ASSERT_EQ(0, popup_steer__add_socket(self->st, self->lfd[i], i));
	}
	/* every CPU to slot 0, so all clients queue on the listener we close */
	n = usable_cpus(cpus, NR_MAX);
	for (int i = 0; i < n; i++)
		ASSERT_EQ(0, popup_steer__set_cpu_slot(self->st, cpus[i], 0));
}

FIXTURE_TEARDOWN(migrate)
{
	for (int i = 0; i < 2; i++) {
		if (self->lfd[i] >= 0)
			close(self->lfd[i]);
	}
	for (int i = 0; i < NR_MIGRATE; i++) {
		if (self->cfd[i] >= 0)
			close(self->cfd[i]);
	}
	popup_steer__destroy(self->st);
}

static bool readable(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, ms) == 1;
}

/* Accept everything migrated to @lfd; check each request arrives intact. */
static int accept_migrated(struct __test_metadata *_metadata, int lfd)
{
	bool seen[NR_MIGRATE] = { false };
	int n = 0;

	for (int k = 0; k < NR_MIGRATE && readable(lfd, WAIT_MS); k++) {
		char buf[16] = "";
		int id;

		ASSERT_EQ(16, take(lfd, SOCK_STREAM, buf, sizeof(buf)));
		ASSERT_EQ(1, sscanf(buf, "req-%d", &id));
		ASSERT_TRUE(id >= 0 && id < NR_MIGRATE);
		EXPECT_FALSE(seen[id]);
		seen[id] = true;
		n++;
	}
	return n;
}

TEST_F(migrate, close_listener)
{
	struct popup_steer_stats_table s0, s1;
	char req[16];
	int cpu = sched_getcpu();

	if (_metadata->skip)
		return;
	for (int i = 0; i < NR_MIGRATE; i++) {
		snprintf(req, sizeof(req), "req-%011d", i);
		self->cfd[i] = send_from(cpu, variant->family, SOCK_STREAM, self->port,
					 req, sizeof(req));
		ASSERT_LE(0, self->cfd[i]) TH_LOG("client %d: %s", i, strerror(-self->cfd[i]));
	}
	/* all queued on listener 0, none on listener 1 */
	ASSERT_TRUE(readable(self->lfd[0], 0));
	ASSERT_FALSE(readable(self->lfd[1], 0));

	ASSERT_EQ(0, popup_steer__read_stats(self->st, &s0));
	close(self->lfd[0]);
	self->lfd[0] = -1;
	ASSERT_EQ(0, popup_steer__read_stats(self->st, &s1));

	if (variant->prog) {
		EXPECT_EQ(NR_MIGRATE, accept_migrated(_metadata, self->lfd[1]));
		EXPECT_EQ(NR_MIGRATE, D(&s0, &s1, 1, -1, migrations));
		EXPECT_EQ(0, D(&s0, &s1, 0, -1, migrations));
	} else {
		struct timeval tv = { .tv_sec = WAIT_MS / 1000 };

		EXPECT_FALSE(readable(self->lfd[1], 200));
		EXPECT_EQ(0, D(&s0, &s1, -1, -1, migrations));
		/* the closed listener's children were reset */
		for (int i = 0; i < NR_MIGRATE; i++) {
			setsockopt(self->cfd[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
			EXPECT_EQ(-1, recv(self->cfd[i], req, sizeof(req), 0));
			EXPECT_EQ(ECONNRESET, errno);
		}
	}
	popup_steer_stats_table__free(&s0);
	popup_steer_stats_table__free(&s1);
}

TEST_HARNESS_MAIN
