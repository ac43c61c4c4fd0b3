// SPDX-License-Identifier: GPL-2.0
/*
 * popup.ko kernel-side arrival: UDP datagrams on attached sockets become
 * KIND_DGRAM handler contexts, answered by REPLY from the receive area.
 *
 * The in-test server exports a service and attaches one UDP socket per CPU
 * (each bound to its own loopback port: without steering, a client pinned
 * to CPU k sends to socket k's port, and loopback delivers the datagram in
 * CPU k's softirq). Its handler threads loop in WAIT/REPLY_WAIT, map the
 * receive areas on first sight and answer in the native wire format
 * (include/popup/wire.h). Methods: ECHO answers x * 3 + 1 with the
 * context's CPU, the CPU the handler ran on and the sender it saw; SLEEP
 * sleeps x ms first; BLOCK waits for the test's gate; SPIN runs on the
 * CPU x ms first; SPIN_SLEEP runs 100 ms, then sleeps x ms.
 *
 * Cases: results and handling CPU per CPU (IPv4 and IPv6), counters in
 * /proc/popup/arrival and /proc/popup/sockets; bursts that force spawns
 * and queueing; a datagram queued for the thread running on its CPU
 * rather than waking another, and handed to the idle one once that
 * runner blocks; overload answered BUSY by the kernel, oversized datagrams
 * TOOBIG; a sender gone before the reply; the server killed with requests
 * in flight (queued ones answered BUSY, running ones ERROR, the socket's
 * own callback back so a plain recvfrom works, the module unloads);
 * DETACH under load with userspace taking over the socket and no request
 * lost; rmmod refused while a socket is attached; every ATTACH/DETACH
 * error; burst wake-ups probed on a ping-pong CPU with the handler's
 * policy untouched where it runs (and where the user chose one), and off
 * with the batch_wakeups parameter.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "arrival_test.h"
#include "popup_test.h"
#include "popup/wire.h"
#include "uapi/linux/popup.h"

#define MAX_CPUS	16
#define M_ECHO		1
#define M_SLEEP		2
#define M_BLOCK		3
#define M_SPIN		4	/* run on the CPU for x ms, then answer */
#define M_SPIN_SLEEP	5	/* run 100 ms, then sleep x ms */

static struct popup_method methods[] = {
	{ .id = 1, .max_arg = 64, .max_res = 64 },
};

/* Answer payload of every method. */
struct echo_res {
	uint64_t val;		/* x * 3 + 1 */
	uint32_t ctx_cpu;	/* popup_context.cpu */
	uint32_t run_cpu;	/* sched_getcpu() of the handler */
	uint16_t peer_port;	/* host order */
	uint16_t peer_family;
	uint32_t arg_len;
	uint8_t peer_addr[16];
};

static int ncpus(void)
{
	return ncpus_max(MAX_CPUS);
}

/* ---- the in-test server ---- */

struct asrv {
	int fd;
	__u32 sid;
	int nsock;
	int sock[MAX_CPUS];
	__u32 attach_id[MAX_CPUS];
	struct sockaddr_storage addr[MAX_CPUS];
	socklen_t addrlen[MAX_CPUS];
	struct areas areas;
	atomic_int threads;
	atomic_int spawned;
	atomic_int handled;
	atomic_int busy;
	atomic_int peak;
	atomic_int gate;
	atomic_int stop;
	int policy;		/* handlers set it, and expect to see it */
	atomic_int wrong_policy;
};

struct hthread {
	struct asrv *s;
	int cpu;		/* pin to it; -1: no pinning */
};

/* Keep the CPU busy (stay runnable, never block) for @ms. */
static void spin_ms(int ms)
{
	struct timespec t0, t;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	do
		clock_gettime(CLOCK_MONOTONIC, &t);
	while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < ms);
}

static uint64_t get64(const unsigned char *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return v;
}

/*
 * Build the answer to request @req (@len bytes) in @out; returns its
 * length, 0 for no answer. @ctx may be NULL (userspace takeover).
 */
static size_t answer(struct asrv *s, const unsigned char *req, size_t len,
		     const struct popup_context *ctx, unsigned char *out,
		     uint32_t marker)
{
	struct popup_wire_hdr h;
	struct echo_res res;
	uint64_t x = 0;

	if (len < POPUP_WIRE_HDR_LEN)
		return 0;
	popup_wire_decode(req, &h);
	if (popup_wire_check(&h, 64) || h.len != len - POPUP_WIRE_HDR_LEN)
		return 0;
	if (h.len >= 8)
		x = get64(req + POPUP_WIRE_HDR_LEN);
	if (h.method == M_SLEEP)
		msleep((int)x);
	else if (h.method == M_SPIN)
		spin_ms((int)x);
	else if (h.method == M_SPIN_SLEEP)
		spin_ms(100), msleep((int)x);
	else if (h.method == M_BLOCK)
		while (!atomic_load(&s->gate) && !atomic_load(&s->stop))
			msleep(1);
	memset(&res, 0, sizeof(res));
	res.val = x * 3 + 1;
	res.run_cpu = sched_getcpu();
	res.arg_len = len;
	if (ctx) {
		res.ctx_cpu = ctx->cpu;
		res.peer_port = ntohs(ctx->peer_port);
		res.peer_family = ctx->peer_family;
		memcpy(res.peer_addr, ctx->peer_addr, 16);
	} else {
		res.ctx_cpu = marker;
	}
	return reply_encode(out, &h, &res, sizeof(res));
}

static void *handler_thread(void *arg);

static void spawn(struct asrv *s, int n, int cpu)
{
	struct hthread *h;

	while (n-- > 0) {
		h = malloc(sizeof(*h));
		if (!h)
			break;
		h->s = s;
		h->cpu = cpu;
		atomic_fetch_add(&s->threads, 1);
		if (start_detached(handler_thread, h)) {
			atomic_fetch_sub(&s->threads, 1);
			free(h);
			break;
		}
		atomic_fetch_add(&s->spawned, 1);
	}
}

static void handle(struct asrv *s, struct popup_wait *w)
{
	const struct popup_context *ctx = &w->ctx;
	char *base = area_map(&s->areas, ctx);
	unsigned char *slot, req[POPUP_WIRE_HDR_LEN + 64];
	size_t len = ctx->arg_len, n = 0;
	int b = atomic_fetch_add(&s->busy, 1) + 1;
	int p = atomic_load(&s->peak);

	while (b > p && !atomic_compare_exchange_weak(&s->peak, &p, b))
		;
	if (sched_getscheduler(0) != s->policy)
		atomic_fetch_add(&s->wrong_policy, 1);
	memset(&w->reply, 0, sizeof(w->reply));
	w->reply.ctx_id = ctx->ctx_id;
	if (base && len <= sizeof(req)) {
		slot = (unsigned char *)base + ctx->slot_offset;
		memcpy(req, slot, len);
		n = answer(s, req, len, ctx, slot, 0);
	}
	w->reply.result_len = n;
	atomic_fetch_add(&s->handled, 1);
	atomic_fetch_sub(&s->busy, 1);
}

static void spawn_any(void *srv, int n)
{
	spawn(srv, n, -1);
}

static bool handle_kind(void *srv, struct popup_wait *w)
{
	if (w->kind != POPUP_WAIT_KIND_DGRAM)
		return false;
	handle(srv, w);
	return true;
}

static void *handler_thread(void *arg)
{
	struct hthread *h = arg;
	struct asrv *s = h->s;
	struct pool_loop l = { s->fd, s->sid, &s->areas, s, spawn_any, handle_kind };

	const struct sched_param sp = { 0 };

	if (h->cpu >= 0)
		pin_self(h->cpu);
	free(h);
	if (s->policy != SCHED_OTHER && sched_setscheduler(0, s->policy, &sp))
		atomic_fetch_add(&s->wrong_policy, 1);
	pool_thread_loop(&l);
	atomic_fetch_sub(&s->threads, 1);
	return NULL;
}

static int udp_socket(int family)
{
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6,
				   .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	struct sockaddr_in a4 = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int s = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (s < 0)
		return -1;
	if (family == AF_INET6 ?
	    bind(s, (struct sockaddr *)&a6, sizeof(a6)) :
	    bind(s, (struct sockaddr *)&a4, sizeof(a4))) {
		close(s);
		return -1;
	}
	return s;
}

static int do_export(int fd, const char *name, const struct popup_pool *pool,
		     __u32 *sid)
{
	struct popup_export e;

	memset(&e, 0, sizeof(e));
	e.size = sizeof(e);
	snprintf(e.name, sizeof(e.name), "%s", name);
	e.version = 1;
	e.nmethods = 1;
	e.methods = (uintptr_t)methods;
	if (pool)
		e.pool = *pool;
	if (ioctl(fd, POPUP_IOC_EXPORT, &e))
		return -errno;
	*sid = e.service_id;
	return 0;
}

/* Create (if @own) and attach @n sockets, socket i serving CPU i % ncpus. */
static int server_attach(struct asrv *s, int n, int family, __u32 nslots,
			 __u32 slot_size, int own)
{
	int i, ret;

	for (i = 0; i < n; i++) {
		if (own) {
			s->sock[i] = udp_socket(family);
			if (s->sock[i] < 0)
				return -errno;
		}
		s->addrlen[i] = sizeof(s->addr[i]);
		if (getsockname(s->sock[i], (struct sockaddr *)&s->addr[i],
				&s->addrlen[i]))
			return -errno;
		ret = do_attach(s->fd, s->sid, s->sock[i], i % ncpus(), nslots,
				slot_size, NULL);
		if (ret)
			return ret;
	}
	s->nsock = n;
	return 0;
}

static int server_open(struct asrv *s, const char *name,
		       const struct popup_pool *pool)
{
	memset(s, 0, sizeof(*s));
	s->fd = open("/dev/popup", O_RDWR | O_CLOEXEC);
	if (s->fd < 0)
		return -errno;
	areas_init(&s->areas, s->fd);
	return do_export(s->fd, name, pool, &s->sid);
}

/* Attach ids come back in /proc/popup/sockets order-free; read them. */
static int sockets_of(__u32 sid, __u32 *ids, int max)
{
	FILE *f = fopen("/proc/popup/sockets", "r");
	char line[256];
	unsigned int id, svc;
	int n = 0;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%u %u", &id, &svc) == 2 && svc == sid &&
		    n < max)
			ids[n++] = id;
	fclose(f);
	return n;
}

static void server_stop(struct asrv *s)
{
	int i;

	if (s->fd < 0)
		return;
	atomic_store(&s->stop, 1);
	close(s->fd);		/* release: detach, withdraw, wake everyone */
	for (i = 0; i < 5000 && atomic_load(&s->threads); i++)
		msleep(1);
	areas_unmap_all(&s->areas);
	for (i = 0; i < s->nsock; i++)
		close(s->sock[i]);
	s->fd = -1;
}

/* ---- clients ---- */

static int client_socket(int family, int timeout_ms)
{
	struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
	int s = udp_socket(family);

	if (s >= 0)
		setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return s;
}

static int send_req(int c, const struct sockaddr_storage *to, socklen_t tolen,
		    __u32 sid, uint16_t method, uint64_t req_id, uint64_t x)
{
	unsigned char buf[POPUP_WIRE_HDR_LEN + 8];
	struct popup_wire_hdr h;

	memset(&h, 0, sizeof(h));
	h.magic = POPUP_WIRE_MAGIC;
	h.version = POPUP_WIRE_VERSION;
	h.method = method;
	h.service = sid;
	h.req_id = req_id;
	h.len = 8;
	popup_wire_encode(buf, &h);
	memcpy(buf + POPUP_WIRE_HDR_LEN, &x, 8);
	return sendto(c, buf, sizeof(buf), 0, (const struct sockaddr *)to,
		      tolen) == sizeof(buf) ? 0 : -errno;
}

/* Receive one reply: 0 with @h (and @res if it has a payload), or -errno. */
static int recv_reply(int c, struct popup_wire_hdr *h, struct echo_res *res)
{
	unsigned char buf[256];
	ssize_t n = recv(c, buf, sizeof(buf), 0);

	if (n < 0)
		return -errno;
	if (n < POPUP_WIRE_HDR_LEN)
		return -EBADMSG;
	popup_wire_decode(buf, h);
	if (h->magic != POPUP_WIRE_MAGIC || !(h->flags & POPUP_WIRE_F_REPLY) ||
	    h->len != n - POPUP_WIRE_HDR_LEN)
		return -EBADMSG;
	if (res) {
		memset(res, 0, sizeof(*res));
		if (h->len == sizeof(*res))
			memcpy(res, buf + POPUP_WIRE_HDR_LEN, sizeof(*res));
	}
	return 0;
}

/* Per-CPU client: @n ECHO calls to socket @i of @s, pinned to @cpu. */
struct cjob {
	struct asrv *s;
	int i;
	int cpu;
	int n;
	int family;
	int ok;
	int wrong_cpu;
	int wrong_run;
	int bad;
};

static void *cjob_run(void *arg)
{
	struct cjob *j = arg;
	struct popup_wire_hdr h;
	struct echo_res res;
	int c, k;

	pin_self(j->cpu);
	c = client_socket(j->family, 3000);
	if (c < 0)
		return NULL;
	for (k = 0; k < j->n; k++) {
		uint64_t id = ((uint64_t)j->cpu << 32) | k;

		if (send_req(c, &j->s->addr[j->i], j->s->addrlen[j->i],
			     j->s->sid, M_ECHO, id, k) ||
		    recv_reply(c, &h, &res)) {
			j->bad++;
			continue;
		}
		if (h.req_id != id || h.status != 0 || res.val != k * 3ull + 1 ||
		    res.peer_port != local_port(c) ||
		    res.peer_family != j->family) {
			j->bad++;
			continue;
		}
		if (res.ctx_cpu != (uint32_t)j->cpu)
			j->wrong_cpu++;
		if (res.run_cpu != (uint32_t)j->cpu)
			j->wrong_run++;
		j->ok++;
	}
	close(c);
	return NULL;
}

static void name_for(char *buf, size_t n, const char *what)
{
	snprintf(buf, n, "kmod_arrival.%s.%d", what, getpid());
}

/* popup.ko's batch_wakeups parameter (kmod/call.c) to @v. */
static int set_batch_wakeups(const char *v)
{
	int fd = open("/sys/module/popup/parameters/batch_wakeups", O_WRONLY);
	int ret = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, v, strlen(v)) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

FIXTURE(arr) {
	char name[64];
	struct asrv srv;
};

FIXTURE_SETUP(arr)
{
	int err = popup_test_load_module();

	self->srv.fd = -1;
	if (err)
		SKIP(return, "popup.ko not loadable here (%s); run in scripts/vm",
		     strerror(-err));
	name_for(self->name, sizeof(self->name), "svc");
}

FIXTURE_TEARDOWN(arr)
{
	server_stop(&self->srv);
	set_batch_wakeups("1");		/* the default, whatever a case did */
}

/*
 * One handler thread pinned to each CPU, and no more (max_threads is set
 * to the CPU count): each CPU's datagrams must go to its own thread, also
 * when the client's next request arrives before the thread is back in
 * WAIT (it is queued for it, not given to another CPU's idle thread).
 */
static struct popup_pool pinned_pool = {
	.min_idle = 0, .max_idle = MAX_CPUS, .increment = 1,
	.max_threads = MAX_CPUS, .queue_limit = 64,
};

static void run_per_cpu(struct __test_metadata *_metadata,
			struct asrv *s, int family)
{
	int n = ncpus(), i, total_ok = 0;
	struct cjob jobs[MAX_CPUS];
	pthread_t th[MAX_CPUS];

	for (i = 0; i < n; i++) {
		memset(&jobs[i], 0, sizeof(jobs[i]));
		jobs[i].s = s;
		jobs[i].i = i;
		jobs[i].cpu = i;
		jobs[i].n = 20;
		jobs[i].family = family;
		ASSERT_EQ(0, pthread_create(&th[i], NULL, cjob_run, &jobs[i]));
	}
	for (i = 0; i < n; i++) {
		pthread_join(th[i], NULL);
		EXPECT_EQ(0, jobs[i].bad);
		EXPECT_EQ(0, jobs[i].wrong_cpu);
		EXPECT_EQ(0, jobs[i].wrong_run) {
			TH_LOG("cpu %d: %d of %d handled on another CPU", i,
			       jobs[i].wrong_run, jobs[i].ok);
		}
		total_ok += jobs[i].ok;
	}
	EXPECT_EQ(n * 20, total_ok);
}

TEST_F(arr, udp_per_cpu_results_and_counters)
{
	long long arr0 = arrival_sum("arrivals"), loc0 = arrival_sum("local");
	long long rep0 = arrival_sum("replies");
	struct asrv *s = &self->srv;
	int n = ncpus(), i;
	__u32 ids[MAX_CPUS];

	ASSERT_LE(0, arr0);
	pinned_pool.max_threads = n;
	pinned_pool.max_idle = n;
	ASSERT_EQ(0, server_open(s, self->name, &pinned_pool));
	ASSERT_EQ(0, server_attach(s, n, AF_INET, 0, 0, 1));
	ASSERT_EQ(n, sockets_of(s->sid, ids, MAX_CPUS));
	for (i = 0; i < n; i++)
		spawn(s, 1, i);
	ASSERT_EQ(0, wait_idle(s->sid, n));
	run_per_cpu(_metadata, s, AF_INET);

	EXPECT_LE(arr0 + n * 20, arrival_sum("arrivals"));
	EXPECT_LE(loc0 + n * 20, arrival_sum("local"));
	EXPECT_LE(rep0 + n * 20, arrival_sum("replies"));
	EXPECT_EQ(n * 20, atomic_load(&s->handled));
}

TEST_F(arr, udp6_per_cpu)
{
	struct asrv *s = &self->srv;
	int n = ncpus(), i;

	pinned_pool.max_threads = n;
	pinned_pool.max_idle = n;
	ASSERT_EQ(0, server_open(s, self->name, &pinned_pool));
	ASSERT_EQ(0, server_attach(s, n, AF_INET6, 4, 4096, 1));
	for (i = 0; i < n; i++)
		spawn(s, 1, i);
	ASSERT_EQ(0, wait_idle(s->sid, n));
	run_per_cpu(_metadata, s, AF_INET6);
}

/* Burst from every CPU at once: the pool grows and datagrams queue. */
struct bjob {
	struct asrv *s;
	int i;
	int n;
	int ok;
	int busy;
	int bad;
};

static void *bjob_run(void *arg)
{
	struct bjob *j = arg;
	struct popup_wire_hdr h;
	struct echo_res res;
	int c, k;

	pin_self(j->i % ncpus());
	c = client_socket(AF_INET, 10000);
	if (c < 0)
		return NULL;
	for (k = 0; k < j->n; k++)
		if (send_req(c, &j->s->addr[j->i], j->s->addrlen[j->i],
			     j->s->sid, M_SLEEP, k, 20))
			j->bad++;
	for (k = 0; k < j->n; k++) {
		if (recv_reply(c, &h, &res)) {
			j->bad++;
			break;
		}
		if (h.status == POPUP_WIRE_S_BUSY)
			j->busy++;
		else if (h.status == 0 && res.val == 61)
			j->ok++;
		else
			j->bad++;
	}
	close(c);
	return NULL;
}

TEST_F_TIMEOUT(arr, udp_burst_spawns_and_queues, 120)
{
	const struct popup_pool pool = {
		.min_idle = 0, .max_idle = 8, .increment = 2,
		.max_threads = 8, .queue_limit = 256,
	};
	long long q0 = arrival_sum("queued"), sp0 = arrival_sum("spawns");
	struct asrv *s = &self->srv;
	int n = ncpus(), i, ok = 0;
	struct bjob jobs[MAX_CPUS];
	pthread_t th[MAX_CPUS];

	ASSERT_EQ(0, server_open(s, self->name, &pool));
	ASSERT_EQ(0, server_attach(s, n, AF_INET, 64, 4096, 1));
	spawn(s, 1, -1);
	for (i = 0; i < n; i++) {
		memset(&jobs[i], 0, sizeof(jobs[i]));
		jobs[i].s = s;
		jobs[i].i = i;
		jobs[i].n = 32;
		ASSERT_EQ(0, pthread_create(&th[i], NULL, bjob_run, &jobs[i]));
	}
	for (i = 0; i < n; i++) {
		pthread_join(th[i], NULL);
		EXPECT_EQ(0, jobs[i].bad);
		EXPECT_EQ(0, jobs[i].busy);
		ok += jobs[i].ok;
	}
	EXPECT_EQ(n * 32, ok);
	EXPECT_LT(q0, arrival_sum("queued"));
	EXPECT_LT(sp0, arrival_sum("spawns"));
	EXPECT_LT(1, atomic_load(&s->peak));
	EXPECT_GE(8, atomic_load(&s->peak));
	TH_LOG("peak %d busy handlers, %d threads started",
	       atomic_load(&s->peak), atomic_load(&s->spawned));
}

/*
 * Two threads wait on CPU 0. The first datagram goes to one of them, which
 * then runs its handler on the CPU (M_SPIN): the second datagram, sent
 * while it runs, queues for it, the CPU's runner, instead of waking the
 * other thread, and comes back after the first, from the same thread's
 * next REPLY_WAIT.
 */
TEST_F_TIMEOUT(arr, udp_runner_takes_the_next, 60)
{
	const struct popup_pool pool = {
		.min_idle = 0, .max_idle = 2, .increment = 1,
		.max_threads = 2, .queue_limit = 8,
	};
	struct asrv *s = &self->srv;
	long long h0, q0;
	struct popup_wire_hdr h;
	struct echo_res res;
	int c;

	ASSERT_EQ(0, server_open(s, self->name, &pool));
	ASSERT_EQ(0, server_attach(s, 1, AF_INET, 8, 4096, 1));
	spawn(s, 2, 0);
	ASSERT_EQ(0, wait_idle(s->sid, 2));
	ASSERT_EQ(0, pin_self(0));
	c = client_socket(AF_INET, 10000);
	ASSERT_LE(0, c);
	h0 = arrival_sum("handoffs");
	q0 = arrival_sum("queued");
	ASSERT_EQ(0, send_req(c, &s->addr[0], s->addrlen[0], s->sid, M_SPIN,
			      1, 300));
	ASSERT_EQ(0, send_req(c, &s->addr[0], s->addrlen[0], s->sid, M_ECHO,
			      2, 2));
	ASSERT_EQ(0, recv_reply(c, &h, &res));
	EXPECT_EQ(1, h.req_id);		/* the second waited for the first */
	EXPECT_EQ(901, res.val);
	ASSERT_EQ(0, recv_reply(c, &h, &res));
	EXPECT_EQ(2, h.req_id);
	EXPECT_EQ(7, res.val);
	EXPECT_EQ(1, atomic_load(&s->peak));	/* never two at once */
	EXPECT_EQ(h0 + 1, arrival_sum("handoffs"));
	EXPECT_EQ(q0 + 1, arrival_sum("queued"));
	close(c);
}

/*
 * As above, but the runner blocks once its handler has run a while
 * (M_SPIN_SLEEP: 100 ms on the CPU, then a 3 s sleep): the datagram
 * queued for it must not wait those 3 s. The watch finds it stranded and
 * the idle thread answers it.
 */
TEST_F_TIMEOUT(arr, udp_blocked_runner_rescued, 60)
{
	const struct popup_pool pool = {
		.min_idle = 0, .max_idle = 2, .increment = 1,
		.max_threads = 2, .queue_limit = 8,
	};
	struct asrv *s = &self->srv;
	struct popup_wire_hdr h;
	struct echo_res res;
	struct timespec t0, t1;
	long long r0, ms;
	int c;

	ASSERT_EQ(0, server_open(s, self->name, &pool));
	ASSERT_EQ(0, server_attach(s, 1, AF_INET, 8, 4096, 1));
	spawn(s, 2, 0);
	ASSERT_EQ(0, wait_idle(s->sid, 2));
	ASSERT_EQ(0, pin_self(0));
	c = client_socket(AF_INET, 10000);
	ASSERT_LE(0, c);
	r0 = arrival_sum("rescued");
	clock_gettime(CLOCK_MONOTONIC, &t0);
	ASSERT_EQ(0, send_req(c, &s->addr[0], s->addrlen[0], s->sid,
			      M_SPIN_SLEEP, 1, 3000));
	ASSERT_EQ(0, send_req(c, &s->addr[0], s->addrlen[0], s->sid, M_ECHO,
			      2, 2));
	ASSERT_EQ(0, recv_reply(c, &h, &res));
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	EXPECT_EQ(2, h.req_id);
	EXPECT_EQ(7, res.val);
	EXPECT_GT(2000, ms) {
		TH_LOG("the queued datagram waited %lld ms for the blocked runner", ms);
	}
	EXPECT_LT(r0, arrival_sum("rescued"));
	ASSERT_EQ(0, recv_reply(c, &h, &res));
	EXPECT_EQ(1, h.req_id);
	close(c);
}

/* One blocked thread, two queue places, four slots: the rest is BUSY. */
TEST_F(arr, udp_overload_busy_and_toobig)
{
	const struct popup_pool pool = {
		.min_idle = 0, .max_idle = 1, .increment = 1,
		.max_threads = 1, .queue_limit = 2,
	};
	long long busy0 = arrival_sum("busy"), tb0 = arrival_sum("toobig");
	long long un0 = arrival_sum("unanswerable");
	struct asrv *s = &self->srv;
	unsigned char big[5000];
	struct popup_wire_hdr h;
	struct echo_res res;
	int c, k, ok = 0, busy = 0, seen[10] = { 0 };

	ASSERT_EQ(0, server_open(s, self->name, &pool));
	ASSERT_EQ(0, server_attach(s, 1, AF_INET, 4, 4096, 1));
	spawn(s, 1, -1);
	c = client_socket(AF_INET, 5000);
	ASSERT_LE(0, c);

	ASSERT_EQ(0, send_req(c, &s->addr[0], s->addrlen[0], s->sid, M_BLOCK,
			      100, 0));
	for (k = 0; k < 500 && !atomic_load(&s->busy); k++)
		msleep(2);
	ASSERT_EQ(1, atomic_load(&s->busy));
	for (k = 0; k < 9; k++)
		ASSERT_EQ(0, send_req(c, &s->addr[0], s->addrlen[0], s->sid,
				      M_ECHO, k, k));
	/* 1 running + 2 queued; the other 7 come back BUSY at once. */
	for (k = 0; k < 7; k++) {
		ASSERT_EQ(0, recv_reply(c, &h, &res));
		EXPECT_EQ(POPUP_WIRE_S_BUSY, h.status);
		EXPECT_EQ(0, h.len);
		EXPECT_EQ(M_ECHO, h.method);
		EXPECT_EQ(s->sid, h.service);
		ASSERT_GT(9, h.req_id);
		seen[h.req_id]++;
		busy++;
	}
	atomic_store(&s->gate, 1);
	for (k = 0; k < 3; k++) {
		ASSERT_EQ(0, recv_reply(c, &h, &res));
		EXPECT_EQ(0, h.status);
		if (h.req_id == 100)
			continue;
		ASSERT_GT(9, h.req_id);
		EXPECT_EQ(h.req_id * 3 + 1, res.val);
		seen[h.req_id]++;
		ok++;
	}
	EXPECT_EQ(2, ok);
	EXPECT_EQ(7, busy);
	for (k = 0; k < 9; k++)
		EXPECT_EQ(1, seen[k]);
	EXPECT_LE(busy0 + 7, arrival_sum("busy"));

	/* Over slot_size: TOOBIG, echoing the request's header. */
	h.magic = POPUP_WIRE_MAGIC;
	h.version = POPUP_WIRE_VERSION;
	h.flags = 0;
	h.method = M_ECHO;
	h.service = s->sid;
	h.status = 0;
	h.req_id = 4242;
	h.len = sizeof(big) - POPUP_WIRE_HDR_LEN;
	h.reserved = 0;
	memset(big, 0, sizeof(big));
	popup_wire_encode(big, &h);
	ASSERT_EQ((ssize_t)sizeof(big),
		  sendto(c, big, sizeof(big), 0,
			 (struct sockaddr *)&s->addr[0], s->addrlen[0]));
	ASSERT_EQ(0, recv_reply(c, &h, &res));
	EXPECT_EQ(POPUP_WIRE_S_TOOBIG, h.status);
	EXPECT_EQ(4242, h.req_id);
	EXPECT_LE(tb0 + 1, arrival_sum("toobig"));

	/* Too big and no header to answer: counted, not answered. */
	memset(big, 0, sizeof(big));
	ASSERT_EQ((ssize_t)sizeof(big),
		  sendto(c, big, sizeof(big), 0,
			 (struct sockaddr *)&s->addr[0], s->addrlen[0]));
	for (k = 0; k < 500 && arrival_sum("unanswerable") == un0; k++)
		msleep(2);
	EXPECT_EQ(un0 + 1, arrival_sum("unanswerable"));
	close(c);
}

/* The sender is gone before the reply: the send fails or not, no harm. */
TEST_F(arr, udp_sender_gone_mid_request)
{
	struct asrv *s = &self->srv;
	struct popup_wire_hdr h;
	struct echo_res res;
	int c, k;

	ASSERT_EQ(0, server_open(s, self->name, NULL));
	ASSERT_EQ(0, server_attach(s, 1, AF_INET, 8, 4096, 1));
	spawn(s, 2, -1);
	for (k = 0; k < 4; k++) {
		c = client_socket(AF_INET, 3000);
		ASSERT_LE(0, c);
		ASSERT_EQ(0, send_req(c, &s->addr[0], s->addrlen[0], s->sid,
				      M_SLEEP, k, 50));
		close(c);
	}
	msleep(400);
	c = client_socket(AF_INET, 3000);
	ASSERT_EQ(0, send_req(c, &s->addr[0], s->addrlen[0], s->sid, M_ECHO,
			      7, 7));
	ASSERT_EQ(0, recv_reply(c, &h, &res));
	EXPECT_EQ(22, res.val);
	close(c);
	EXPECT_EQ(5, atomic_load(&s->handled));
}

/*
 * The server process dies with requests in flight: the one running is
 * answered ERROR, the queued ones BUSY; the socket, which the parent holds
 * too, gets its own callback back; the module unloads.
 */
TEST_F_TIMEOUT(arr, udp_server_killed_in_flight, 60)
{
	const struct popup_pool pool = {
		.min_idle = 0, .max_idle = 1, .increment = 1,
		.max_threads = 1, .queue_limit = 8,
	};
	struct sockaddr_storage addr;
	socklen_t alen = sizeof(addr);
	int sock, c, k, st, pfd[2], busy = 0, err = 0;
	struct popup_wire_hdr h;
	struct echo_res res;
	struct pollfd pf;
	char buf[64], ok;
	pid_t pid;

	sock = udp_socket(AF_INET);
	ASSERT_LE(0, sock);
	ASSERT_EQ(0, getsockname(sock, (struct sockaddr *)&addr, &alen));
	ASSERT_EQ(0, pipe(pfd));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		struct asrv *s = &self->srv;

		close(pfd[0]);
		if (server_open(s, self->name, &pool))
			_exit(1);
		s->sock[0] = sock;
		if (server_attach(s, 1, AF_INET, 8, 4096, 0))
			_exit(2);
		spawn(s, 1, -1);
		ok = 1;
		if (write(pfd[1], &ok, 1) != 1)
			_exit(3);
		for (;;)
			pause();
	}
	close(pfd[1]);
	ASSERT_EQ(1, read(pfd[0], &ok, 1));
	close(pfd[0]);

	c = client_socket(AF_INET, 5000);
	ASSERT_LE(0, c);
	ASSERT_EQ(0, send_req(c, &addr, alen, 0, M_SLEEP, 0, 3000));
	msleep(300);
	for (k = 1; k < 5; k++)
		ASSERT_EQ(0, send_req(c, &addr, alen, 0, M_ECHO, k, k));
	msleep(200);
	kill(pid, SIGKILL);
	ASSERT_EQ(pid, waitpid(pid, &st, 0));

	for (k = 0; k < 5; k++) {
		ASSERT_EQ(0, recv_reply(c, &h, &res));
		if (h.req_id == 0) {
			EXPECT_EQ(POPUP_WIRE_S_ERROR, h.status);
		} else {
			EXPECT_EQ(POPUP_WIRE_S_BUSY, h.status);
		}
		if (h.status == POPUP_WIRE_S_BUSY)
			busy++;
		if (h.status == POPUP_WIRE_S_ERROR)
			err++;
	}
	EXPECT_EQ(4, busy);
	EXPECT_EQ(1, err);

	/* Ours again: poll wakes and recvfrom gets the datagram. */
	ASSERT_EQ(0, send_req(c, &addr, alen, 0, M_ECHO, 99, 0));
	pf.fd = sock;
	pf.events = POLLIN;
	ASSERT_EQ(1, poll(&pf, 1, 3000));
	ASSERT_EQ(POPUP_WIRE_HDR_LEN + 8, recv(sock, buf, sizeof(buf), 0));
	popup_wire_decode((unsigned char *)buf, &h);
	EXPECT_EQ(99, h.req_id);
	close(c);
	close(sock);

	/* Nothing pins the module any more. */
	EXPECT_EQ(0, system("rmmod popup"));
	EXPECT_EQ(0, popup_test_load_module());
}

/* DETACH while a client keeps calling: userspace takes over, none lost. */
struct ljob {
	struct asrv *s;
	atomic_int stop;
	int sent;
	int kernel;
	int user;
	int lost;
};

static void *ljob_run(void *arg)
{
	struct ljob *j = arg;
	struct popup_wire_hdr h;
	struct echo_res res;
	int c = client_socket(AF_INET, 2000);
	uint64_t id = 1;

	if (c < 0)
		return NULL;
	while (!atomic_load(&j->stop)) {
		if (send_req(c, &j->s->addr[0], j->s->addrlen[0], j->s->sid,
			     M_ECHO, id, id))
			break;
		j->sent++;
		if (recv_reply(c, &h, &res) || h.req_id != id ||
		    res.val != id * 3 + 1)
			j->lost++;
		else if (res.ctx_cpu == 0xfeed)
			j->user++;
		else
			j->kernel++;
		id++;
	}
	close(c);
	return NULL;
}

/* The userspace path: answer from the socket itself. */
static void *takeover_run(void *arg)
{
	struct ljob *j = arg;
	int sock = j->s->sock[0];
	unsigned char in[256], out[256];
	struct sockaddr_storage from;
	struct pollfd pf = { .fd = sock, .events = POLLIN };

	while (!atomic_load(&j->stop) || poll(&pf, 1, 0) > 0) {
		socklen_t fl = sizeof(from);
		ssize_t n;
		size_t r;

		if (poll(&pf, 1, 50) <= 0)
			continue;
		n = recvfrom(sock, in, sizeof(in), MSG_DONTWAIT,
			     (struct sockaddr *)&from, &fl);
		if (n <= 0)
			continue;
		r = answer(j->s, in, n, NULL, out, 0xfeed);
		if (r)
			sendto(sock, out, r, 0, (struct sockaddr *)&from, fl);
	}
	return NULL;
}

TEST_F_TIMEOUT(arr, udp_detach_under_load, 60)
{
	struct asrv *s = &self->srv;
	struct ljob j;
	pthread_t th, tk;
	__u32 ids[MAX_CPUS];

	memset(&j, 0, sizeof(j));
	j.s = s;
	ASSERT_EQ(0, server_open(s, self->name, NULL));
	ASSERT_EQ(0, server_attach(s, 1, AF_INET, 16, 4096, 1));
	ASSERT_EQ(1, sockets_of(s->sid, ids, MAX_CPUS));
	spawn(s, 2, -1);
	ASSERT_EQ(0, pthread_create(&th, NULL, ljob_run, &j));
	msleep(500);
	ASSERT_EQ(0, do_detach(s->fd, ids[0], 0));
	ASSERT_EQ(0, pthread_create(&tk, NULL, takeover_run, &j));
	EXPECT_EQ(-ENOENT, do_detach(s->fd, ids[0], 0));
	EXPECT_EQ(0, sockets_of(s->sid, ids, MAX_CPUS));
	msleep(500);
	atomic_store(&j.stop, 1);
	pthread_join(th, NULL);
	pthread_join(tk, NULL);
	TH_LOG("%d requests: %d by the kernel path, %d by userspace, %d lost",
	       j.sent, j.kernel, j.user, j.lost);
	EXPECT_EQ(0, j.lost);
	EXPECT_LT(0, j.kernel);
	EXPECT_LT(0, j.user);
	EXPECT_EQ(j.sent, j.kernel + j.user);
}

/*
 * Burst wake-ups (kmod/call.c), with popup.ko's batch_wakeups set to
 * @param: @n ping-pong requests from CPU 0 to one handler pinned there,
 * whose policy is @policy. Every request is one
 * sleep of the handler, so more than POPUP_BURST_PROBE (256) of them make
 * the CPU try burst mode at least once. The handler checks its policy on
 * every request: SCHED_BATCH is for the sleep only. The deltas of the
 * burstprobes and burstwaits counters come back in @probes and @waits.
 */
static void burst_run(struct __test_metadata *_metadata, struct asrv *s,
		      const char *name, const char *param, int policy, int n,
		      long long *probes, long long *waits)
{
	const struct popup_pool pool = {
		.min_idle = 0, .max_idle = 1, .increment = 1,
		.max_threads = 1, .queue_limit = 8,
	};
	long long p0 = stats_sum("burstprobes"), w0 = stats_sum("burstwaits");
	struct popup_wire_hdr h;
	struct echo_res res;
	int c, k, bad = 0;

	ASSERT_EQ(0, set_batch_wakeups(param));
	ASSERT_LE(0, p0);
	ASSERT_LE(0, w0);
	ASSERT_EQ(0, server_open(s, name, &pool));
	s->policy = policy;
	ASSERT_EQ(0, server_attach(s, 1, AF_INET, 8, 4096, 1));
	spawn(s, 1, 0);
	ASSERT_EQ(0, wait_idle(s->sid, 1));
	ASSERT_EQ(0, pin_self(0));
	c = client_socket(AF_INET, 10000);
	ASSERT_LE(0, c);
	for (k = 0; k < n; k++)
		if (send_req(c, &s->addr[0], s->addrlen[0], s->sid, M_ECHO,
			     k, k) || recv_reply(c, &h, &res) ||
		    h.req_id != (uint64_t)k || res.val != k * 3ull + 1)
			bad++;
	close(c);
	EXPECT_EQ(0, bad);
	EXPECT_EQ(n, atomic_load(&s->handled));
	EXPECT_EQ(0, atomic_load(&s->wrong_policy));
	*probes = stats_sum("burstprobes") - p0;
	*waits = stats_sum("burstwaits") - w0;
}

TEST_F_TIMEOUT(arr, udp_burst_probe_keeps_policy, 120)
{
	long long probes, waits;

	burst_run(_metadata, &self->srv, self->name, "1", SCHED_OTHER, 600,
		  &probes, &waits);
	EXPECT_LE(1, probes);
	EXPECT_LE(1, waits);	/* slept as SCHED_BATCH, ran as SCHED_OTHER */
}

TEST_F_TIMEOUT(arr, udp_burst_leaves_user_policy, 120)
{
	long long probes, waits;

	burst_run(_metadata, &self->srv, self->name, "1", SCHED_BATCH, 600,
		  &probes, &waits);
	EXPECT_LE(1, probes);
	EXPECT_EQ(0, waits);	/* not ours to switch, or to switch back */
}

TEST_F_TIMEOUT(arr, udp_burst_param_off, 120)
{
	long long probes, waits;

	burst_run(_metadata, &self->srv, self->name, "0", SCHED_OTHER, 600,
		  &probes, &waits);
	EXPECT_EQ(0, set_batch_wakeups("1"));
	EXPECT_EQ(0, probes);
	EXPECT_EQ(0, waits);
}

TEST_F(arr, rmmod_refused_while_attached)
{
	struct asrv *s = &self->srv;

	ASSERT_EQ(0, server_open(s, self->name, NULL));
	ASSERT_EQ(0, server_attach(s, 1, AF_INET, 0, 0, 1));
	EXPECT_NE(0, system("rmmod popup 2>/dev/null"));
	EXPECT_EQ(0, access("/dev/popup", F_OK));
	server_stop(s);
	EXPECT_EQ(0, system("rmmod popup"));
	EXPECT_EQ(0, popup_test_load_module());
}

TEST_F(arr, attach_detach_errors)
{
	struct asrv *s = &self->srv;
	static struct popup_attach good;
	struct popup_attach at;
	struct popup_target t;
	int u, u2, tcp, us, nul, fd2;
	__u32 sid2;
	char name2[80];

	ASSERT_EQ(0, server_open(s, self->name, NULL));
	u = udp_socket(AF_INET);
	u2 = udp_socket(AF_INET);
	tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	us = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
	ASSERT_LE(0, u);
	ASSERT_LE(0, tcp);

	EXPECT_EQ(-EBADF, do_attach(s->fd, s->sid, 9999, 0, 0, 0, NULL));
	EXPECT_EQ(-ENOTSOCK, do_attach(s->fd, s->sid, nul, 0, 0, 0, NULL));
	/* TCP only as a listener (kmod_tcp); other stream sockets never. */
	EXPECT_EQ(-EINVAL, do_attach(s->fd, s->sid, tcp, 0, 0, 0, NULL));
	EXPECT_EQ(-EPROTONOSUPPORT,
		  do_attach(s->fd, s->sid, us, 0, 0, 0, NULL));
	EXPECT_EQ(-ENOENT, do_attach(s->fd, 0x7ffffff0, u, 0, 0, 0, NULL));
	EXPECT_EQ(-EINVAL, do_attach(s->fd, s->sid, u, 4096, 0, 0, NULL));
	EXPECT_EQ(-EINVAL, do_attach(s->fd, s->sid, u, 0, 65, 0, NULL));
	EXPECT_EQ(-EINVAL, do_attach(s->fd, s->sid, u, 0, 0, 65537, NULL));

	memset(&at, 0, sizeof(at));
	at.size = sizeof(at);
	at.fd = u;
	at.service_id = s->sid;
	at.reserved[1] = 1;
	EXPECT_EQ(-1, ioctl(s->fd, POPUP_IOC_ATTACH, &at));
	EXPECT_EQ(EINVAL, errno);
	at.reserved[1] = 0;
	at.flags = 1;
	EXPECT_EQ(-1, ioctl(s->fd, POPUP_IOC_ATTACH, &at));
	EXPECT_EQ(EINVAL, errno);
	at.flags = 0;
	at.size = 8;
	EXPECT_EQ(-1, ioctl(s->fd, POPUP_IOC_ATTACH, &at));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, ioctl(s->fd, POPUP_IOC_ATTACH, NULL));
	EXPECT_EQ(EFAULT, errno);

	/* A service of another file: EPERM. */
	fd2 = open("/dev/popup", O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, fd2);
	snprintf(name2, sizeof(name2), "%s.2", self->name);
	ASSERT_EQ(0, do_export(fd2, name2, NULL, &sid2));
	EXPECT_EQ(-EPERM, do_attach(s->fd, sid2, u, 0, 0, 0, NULL));

	/* Attach, then the same socket again anywhere: EBUSY. */
	ASSERT_EQ(0, do_attach(s->fd, s->sid, u, POPUP_CPU_ANY, 2, 1, &good));
	EXPECT_EQ(4096, good.slot_size);
	EXPECT_EQ(2, good.nslots);
	EXPECT_EQ(8192, good.map_size);
	EXPECT_EQ((__u64)good.attach_id << 12, good.map_offset);
	EXPECT_EQ(-EBUSY, do_attach(s->fd, s->sid, u, 0, 0, 0, NULL));
	EXPECT_EQ(-EBUSY, do_attach(fd2, sid2, u, 0, 0, 0, NULL));
	/* Not ours to detach, nor a binding to unimport or call. */
	EXPECT_EQ(-ENOENT, do_detach(fd2, good.attach_id, 0));
	t = (struct popup_target){ .id = good.attach_id };
	EXPECT_EQ(-1, ioctl(s->fd, POPUP_IOC_UNIMPORT, &t));
	EXPECT_EQ(ENOENT, errno);
	t.reserved = 1;
	EXPECT_EQ(-1, ioctl(s->fd, POPUP_IOC_DETACH, &t));
	EXPECT_EQ(EINVAL, errno);
	/* The server maps the area; another file cannot. */
	EXPECT_EQ(MAP_FAILED, mmap(NULL, good.map_size, PROT_READ | PROT_WRITE,
				   MAP_SHARED, fd2, good.map_offset));

	/* The other attach survives the first's detach. */
	ASSERT_EQ(0, do_attach(s->fd, s->sid, u2, 0, 0, 0, NULL));
	EXPECT_EQ(0, do_detach(s->fd, good.attach_id, 0));
	EXPECT_EQ(-ENOENT, do_detach(s->fd, good.attach_id, 0));
	/* Detached: attachable again, by the other file too. */
	EXPECT_EQ(0, do_attach(fd2, sid2, u, 0, 0, 0, NULL));
	close(fd2);

	/* Withdrawing the service detaches its sockets. */
	t = (struct popup_target){ .id = s->sid };
	EXPECT_EQ(0, ioctl(s->fd, POPUP_IOC_WITHDRAW, &t));
	EXPECT_EQ(0, sockets_of(s->sid, &sid2, 1));
	EXPECT_EQ(-ENOENT, do_attach(s->fd, s->sid, u2, 0, 0, 0, NULL));

	/* Unknown ioctls are still ENOTTY. */
	EXPECT_EQ(-1, ioctl(s->fd, _IO(POPUP_IOC_MAGIC, 0x3f)));
	EXPECT_EQ(ENOTTY, errno);
	close(u);
	close(u2);
	close(tcp);
	close(us);
	close(nul);
}

TEST_HARNESS_MAIN
