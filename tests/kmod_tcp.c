// SPDX-License-Identifier: GPL-2.0
/*
 * popup.ko kernel-side TCP arrival: connections on attached listeners are
 * accepted in the kernel and handed to handler threads as descriptors
 * (KIND_CONN); the threads PARK them back with the module and close their
 * descriptor; each native request on a parked connection becomes a
 * KIND_STREAM context with the frame in the listener's receive area,
 * answered by REPLY_WAIT, so the handlers never call accept, epoll or read.
 *
 * The in-test server attaches one loopback listener per CPU (a client
 * pinned to CPU k connects to listener k, whose contexts report CPU k) and
 * answers in the native wire format: ECHO gives x * 3 + 1 with the
 * context's CPU, the handler's CPU and the peer it saw; SLEEP sleeps x ms
 * first; BLOCK waits for the test's gate; MEET waits until the test's
 * number of MEET requests run at once (or answers 0 after 5 s).
 *
 * Cases: results and handling CPU per CPU and the counters of
 * /proc/popup/arrival; bursts that force spawns and queueing; overload
 * answered BUSY on parked connections and refused connections, TOOBIG and
 * malformed frames; peers resetting mid-request; the server killed with
 * requests in flight (connections closed, the listener's callback back so
 * a plain accept works, the module unloads); DETACH under load and the
 * hand-back of one connection with POPUP_DETACH_CONN; rmmod refused while
 * a listener is attached; ATTACH/PARK/DETACH errors; requests pipelined
 * on one connection served at once (up to POPUP_CONN_INFLIGHT), replies
 * matched by req_id, all of them sent before an orderly end closes.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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
#define M_MEET		4
#define SLOT		4096

static struct popup_method methods[] = {
	{ .id = 1, .max_arg = 64, .max_res = 64 },
};

struct echo_res {
	uint64_t val;
	uint32_t ctx_cpu;
	uint32_t run_cpu;
	uint16_t peer_port;
	uint16_t peer_family;
	uint32_t kind;
};

static int ncpus(void)
{
	return ncpus_max(MAX_CPUS);
}

/* ---- the in-test server ---- */

struct tsrv {
	int fd;
	__u32 sid;
	int nl;
	int lsock[MAX_CPUS];
	__u32 attach_id[MAX_CPUS];
	uint16_t port[MAX_CPUS];
	struct areas areas;
	int keep_fd;		/* keep KIND_CONN descriptors, for hand-back */
	int kept[64];
	__u32 kept_id[64];
	atomic_int nclaim;	/* kept[] entries claimed */
	atomic_int nkept;	/* kept[] entries written */
	atomic_int threads;
	atomic_int spawned;
	atomic_int conns;
	atomic_int taken[MAX_CPUS];	/* connections parked, per listener */
	atomic_int handled;
	atomic_int badframes;
	atomic_int gate;
	atomic_int stop;
	atomic_int meet;	/* MEET requests arrived */
	int meet_n;		/* ... that make them go on */
	atomic_int running;	/* handlers running a request now */
	atomic_int max_running;
};

struct hthread {
	struct tsrv *s;
	int cpu;
};

/* MEET: true once s->meet_n of them run at once, false after 5 s. */
static bool meet(struct tsrv *s)
{
	int i;

	atomic_fetch_add(&s->meet, 1);
	for (i = 0; i < 5000 && !atomic_load(&s->stop); i++) {
		if (atomic_load(&s->meet) >= s->meet_n)
			return true;
		msleep(1);
	}
	return false;
}

/* The answer to frame @req (@len bytes) in @out; its length, 0 for none. */
static size_t answer(struct tsrv *s, const unsigned char *req, size_t len,
		     const struct popup_context *ctx, unsigned char *out)
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
		memcpy(&x, req + POPUP_WIRE_HDR_LEN, 8);
	if (h.method == M_SLEEP)
		msleep((int)x);
	else if (h.method == M_BLOCK)
		while (!atomic_load(&s->gate) && !atomic_load(&s->stop))
			msleep(1);
	memset(&res, 0, sizeof(res));
	res.val = x * 3 + 1;
	if (h.method == M_MEET && !meet(s))
		res.val = 0;
	res.run_cpu = sched_getcpu();
	res.ctx_cpu = ctx ? ctx->cpu : 0xfeed;
	if (ctx) {
		res.peer_port = ntohs(ctx->peer_port);
		res.peer_family = ctx->peer_family;
	}
	return reply_encode(out, &h, &res, sizeof(res));
}

static void *handler_thread(void *arg);

static void spawn(struct tsrv *s, int n, int cpu)
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

static int do_park(int fd, int sock, __u32 attach_id, __u32 *conn_id)
{
	struct popup_park pk;

	memset(&pk, 0, sizeof(pk));
	pk.size = sizeof(pk);
	pk.fd = sock;
	pk.attach_id = attach_id;
	if (ioctl(fd, POPUP_IOC_PARK, &pk))
		return -errno;
	if (conn_id)
		*conn_id = pk.conn_id;
	return 0;
}

/* A new connection: park it; keep a descriptor only for hand-back. */
static void take_conn(struct tsrv *s, const struct popup_context *ctx)
{
	__u32 id = 0;
	int k;

	atomic_fetch_add(&s->conns, 1);
	if (do_park(s->fd, ctx->conn_fd, ctx->binding_id, &id)) {
		close(ctx->conn_fd);
		return;
	}
	for (k = 0; k < s->nl; k++)
		if (s->attach_id[k] == ctx->binding_id)
			atomic_fetch_add(&s->taken[k], 1);
	if (s->keep_fd) {
		k = atomic_fetch_add(&s->nclaim, 1);
		if (k < 64) {
			s->kept[k] = ctx->conn_fd;
			s->kept_id[k] = id;
			atomic_fetch_add(&s->nkept, 1);
			return;
		}
	}
	close(ctx->conn_fd);
}

static void handle(struct tsrv *s, struct popup_wait *w)
{
	const struct popup_context *ctx = &w->ctx;
	char *base = area_map(&s->areas, ctx);
	unsigned char *slot, req[POPUP_WIRE_HDR_LEN + 64];
	size_t len = ctx->arg_len, n = 0;

	memset(&w->reply, 0, sizeof(w->reply));
	w->reply.ctx_id = ctx->ctx_id;
	if (ctx->flags & POPUP_CTX_BADFRAME) {
		atomic_fetch_add(&s->badframes, 1);
		return;
	}
	if (base && len <= sizeof(req)) {
		int now = atomic_fetch_add(&s->running, 1) + 1;
		int max = atomic_load(&s->max_running);

		while (now > max &&
		       !atomic_compare_exchange_weak(&s->max_running, &max, now))
			;
		slot = (unsigned char *)base + ctx->slot_offset;
		memcpy(req, slot, len);
		n = answer(s, req, len, ctx, slot);
		atomic_fetch_sub(&s->running, 1);
	}
	w->reply.result_len = n;
	atomic_fetch_add(&s->handled, 1);
}

static void spawn_any(void *srv, int n)
{
	spawn(srv, n, -1);
}

static bool handle_kind(void *srv, struct popup_wait *w)
{
	if (w->kind == POPUP_WAIT_KIND_CONN)
		take_conn(srv, &w->ctx);
	if (w->kind != POPUP_WAIT_KIND_STREAM)
		return false;
	handle(srv, w);
	return true;
}

static void *handler_thread(void *arg)
{
	struct hthread *h = arg;
	struct tsrv *s = h->s;
	struct pool_loop l = { s->fd, s->sid, &s->areas, s, spawn_any, handle_kind };

	if (h->cpu >= 0)
		pin_self(h->cpu);
	free(h);
	pool_thread_loop(&l);
	atomic_fetch_sub(&s->threads, 1);
	return NULL;
}

static int tcp_listener(int family, uint16_t *port)
{
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6,
				   .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	struct sockaddr_in a4 = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr_storage a;
	socklen_t l = sizeof(a);
	int s = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (s < 0)
		return -1;
	if ((family == AF_INET6 ?
	     bind(s, (struct sockaddr *)&a6, sizeof(a6)) :
	     bind(s, (struct sockaddr *)&a4, sizeof(a4))) ||
	    listen(s, 128) ||
	    getsockname(s, (struct sockaddr *)&a, &l)) {
		close(s);
		return -1;
	}
	*port = ntohs(((struct sockaddr_in *)&a)->sin_port);
	return s;
}

static int server_open(struct tsrv *s, const char *name,
		       const struct popup_pool *pool)
{
	struct popup_export e;

	memset(s, 0, sizeof(*s));
	s->fd = open("/dev/popup", O_RDWR | O_CLOEXEC);
	if (s->fd < 0)
		return -errno;
	areas_init(&s->areas, s->fd);
	memset(&e, 0, sizeof(e));
	e.size = sizeof(e);
	snprintf(e.name, sizeof(e.name), "%s", name);
	e.version = 1;
	e.nmethods = 1;
	e.methods = (uintptr_t)methods;
	if (pool)
		e.pool = *pool;
	if (ioctl(s->fd, POPUP_IOC_EXPORT, &e))
		return -errno;
	s->sid = e.service_id;
	return 0;
}

/* @n listeners, listener i serving CPU i % ncpus. */
static int server_listen(struct tsrv *s, int n, int family, __u32 nslots)
{
	struct popup_attach at = { 0 };
	int i, ret;

	for (i = 0; i < n; i++) {
		s->lsock[i] = tcp_listener(family, &s->port[i]);
		if (s->lsock[i] < 0)
			return -errno;
		s->nl = i + 1;
		ret = do_attach(s->fd, s->sid, s->lsock[i], i % ncpus(),
				nslots, SLOT, &at);
		if (ret)
			return ret;
		s->attach_id[i] = at.attach_id;
	}
	return 0;
}

static void server_stop(struct tsrv *s)
{
	int i, n;

	if (s->fd < 0)
		return;
	atomic_store(&s->stop, 1);
	close(s->fd);
	for (i = 0; i < 5000 && atomic_load(&s->threads); i++)
		msleep(1);
	areas_unmap_all(&s->areas);
	for (i = 0; i < s->nl; i++)
		close(s->lsock[i]);
	n = atomic_load(&s->nkept);
	for (i = 0; i < n && i < 64; i++)
		close(s->kept[i]);
	s->fd = -1;
}

/* Parked connections of service @sid in /proc/popup/sockets. */
static int conns_of(__u32 sid)
{
	FILE *f = fopen("/proc/popup/sockets", "r");
	unsigned int id, svc;
	char line[256], proto[16];
	int n = 0;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%u %u %15s", &id, &svc, proto) == 3 &&
		    svc == sid && !strcmp(proto, "conn"))
			n++;
	fclose(f);
	return n;
}

/* Wait up to 3 s for column @col to reach @want. */
static long long arrival_wait(const char *col, long long want)
{
	long long v = arrival_sum(col);
	int i;

	for (i = 0; i < 300 && v < want; i++) {
		msleep(10);
		v = arrival_sum(col);
	}
	return v;
}

/* ---- clients ---- */

static int client_connect(int family, uint16_t port, int timeout_ms);

/*
 * Connect to listener 0 and wait until the server took the connection
 * (its @conns-th) and its thread is idle again: with one thread and no
 * queue, a request sent earlier would be answered BUSY.
 */
static int connect_taken(struct tsrv *s, int conns)
{
	int c = client_connect(AF_INET, s->port[0], 5000), i;

	for (i = 0; c >= 0 && i < 500 && atomic_load(&s->conns) < conns; i++)
		msleep(10);
	if (c >= 0 && wait_idle(s->sid, 1)) {
		close(c);
		return -1;
	}
	return c;
}

static int client_connect(int family, uint16_t port, int timeout_ms)
{
	struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6,
				   .sin6_addr = IN6ADDR_LOOPBACK_INIT,
				   .sin6_port = htons(port) };
	struct sockaddr_in a4 = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				  .sin_port = htons(port) };
	int c = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	if (c < 0)
		return -1;
	setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (family == AF_INET6 ?
	    connect(c, (struct sockaddr *)&a6, sizeof(a6)) :
	    connect(c, (struct sockaddr *)&a4, sizeof(a4))) {
		close(c);
		return -1;
	}
	return c;
}

static int send_frame(int c, uint16_t method, uint64_t req_id, uint64_t x,
		      uint32_t len)
{
	unsigned char buf[POPUP_WIRE_HDR_LEN + 8];
	struct popup_wire_hdr h;

	memset(&h, 0, sizeof(h));
	h.magic = POPUP_WIRE_MAGIC;
	h.version = POPUP_WIRE_VERSION;
	h.method = method;
	h.req_id = req_id;
	h.len = len;
	popup_wire_encode(buf, &h);
	memcpy(buf + POPUP_WIRE_HDR_LEN, &x, 8);
	return send(c, buf, sizeof(buf), MSG_NOSIGNAL) == sizeof(buf) ?
	       0 : -errno;
}

static int send_req(int c, uint16_t method, uint64_t req_id, uint64_t x)
{
	return send_frame(c, method, req_id, x, 8);
}

/* One reply frame: 0 with @h (and @res), -errno, or -EPIPE on EOF. */
static int recv_reply(int c, struct popup_wire_hdr *h, struct echo_res *res)
{
	unsigned char buf[POPUP_WIRE_HDR_LEN + sizeof(*res)];
	ssize_t n = recv(c, buf, POPUP_WIRE_HDR_LEN, MSG_WAITALL);

	if (n == 0)
		return -EPIPE;
	if (n < 0)
		return -errno;
	if (n < POPUP_WIRE_HDR_LEN)
		return -EBADMSG;
	popup_wire_decode(buf, h);
	if (h->magic != POPUP_WIRE_MAGIC || !(h->flags & POPUP_WIRE_F_REPLY) ||
	    (h->len && h->len != sizeof(*res)))
		return -EBADMSG;
	if (h->len) {
		n = recv(c, buf + POPUP_WIRE_HDR_LEN, h->len, MSG_WAITALL);
		if (n != h->len)
			return n < 0 ? -errno : -EBADMSG;
	}
	if (res) {
		memset(res, 0, sizeof(*res));
		if (h->len)
			memcpy(res, buf + POPUP_WIRE_HDR_LEN, sizeof(*res));
	}
	return 0;
}

/* ECHO 5, id 11, in two segments 100 ms apart. */
static int send_split(int c, __u32 sid)
{
	unsigned char buf[POPUP_WIRE_HDR_LEN + 8];
	struct popup_wire_hdr h;
	uint64_t x = 5;

	memset(&h, 0, sizeof(h));
	h.magic = POPUP_WIRE_MAGIC;
	h.version = POPUP_WIRE_VERSION;
	h.method = M_ECHO;
	h.req_id = 11;
	h.len = 8;
	popup_wire_encode(buf, &h);
	memcpy(buf + POPUP_WIRE_HDR_LEN, &x, 8);
	if (send(c, buf, 10, 0) != 10)
		return -1;
	msleep(100);
	if (wait_idle(sid, 1))
		return -1;
	return send(c, buf + 10, 30, 0) == 30 ? 0 : -1;
}

/* The connection ends within @ms: EOF or a reset, nothing else. */
static int closes_within(int c)
{
	char b;
	ssize_t n = recv(c, &b, 1, 0);

	return n == 0 || (n < 0 && (errno == ECONNRESET || errno == EPIPE));
}

static void reset_close(int c)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(c);
}

struct cjob {
	struct tsrv *s;
	int i;
	int cpu;
	int n;
	uint16_t method;
	uint64_t x;
	int ok;
	int busy;
	int wrong_cpu;
	int wrong_run;
	int bad;
	int wait_taken;
};

static void *cjob_run(void *arg)
{
	struct cjob *j = arg;
	struct popup_wire_hdr h;
	struct echo_res res;
	int c, k;

	pin_self(j->cpu);
	c = client_connect(AF_INET, j->s->port[j->i], 10000);
	if (c < 0) {
		j->bad = j->n;
		return NULL;
	}
	/*
	 * A request that comes while the thread of this CPU is still parking
	 * the connection goes to an idle thread elsewhere (idle threads are
	 * preferred to queueing): start once it is parked.
	 */
	for (k = 0; k < 500 && j->wait_taken &&
	     atomic_load(&j->s->taken[j->i]) < j->wait_taken; k++)
		msleep(10);
	if (j->wait_taken)
		msleep(50);
	for (k = 0; k < j->n; k++) {
		uint64_t id = ((uint64_t)j->cpu << 32) | k;
		uint64_t x = j->method == M_ECHO ? (uint64_t)k : j->x;

		if (send_req(c, j->method, id, x) || recv_reply(c, &h, &res)) {
			j->bad++;
			break;
		}
		if (h.status == POPUP_WIRE_S_BUSY) {
			j->busy++;
			continue;
		}
		if (h.req_id != id || h.status != 0 || res.val != x * 3 + 1 ||
		    res.peer_port != local_port(c) ||
		    res.peer_family != AF_INET) {
			j->bad++;
			continue;
		}
		if (res.ctx_cpu != (uint32_t)j->cpu % ncpus())
			j->wrong_cpu++;
		if (res.run_cpu != (uint32_t)j->cpu % ncpus())
			j->wrong_run++;
		j->ok++;
	}
	close(c);
	return NULL;
}

FIXTURE(tcp) {
	char name[64];
	struct tsrv srv;
};

FIXTURE_SETUP(tcp)
{
	int err = popup_test_load_module();

	self->srv.fd = -1;
	if (err)
		SKIP(return, "popup.ko not loadable here (%s); run in scripts/vm",
		     strerror(-err));
	snprintf(self->name, sizeof(self->name), "kmod_tcp.%d", getpid());
}

FIXTURE_TEARDOWN(tcp)
{
	server_stop(&self->srv);
}

static struct popup_pool pinned_pool = {
	.min_idle = 0, .max_idle = MAX_CPUS, .increment = 1,
	.max_threads = MAX_CPUS, .queue_limit = 64,
};

TEST_F(tcp, per_cpu_results_and_counters)
{
	long long acc0 = arrival_sum("accepts"), loc0 = arrival_sum("local");
	long long rep0 = arrival_sum("replies");
	struct tsrv *s = &self->srv;
	int n = ncpus(), i, total = 0;
	struct cjob jobs[MAX_CPUS];
	pthread_t th[MAX_CPUS];

	ASSERT_LE(0, acc0);
	pinned_pool.max_threads = n;
	pinned_pool.max_idle = n;
	ASSERT_EQ(0, server_open(s, self->name, &pinned_pool));
	ASSERT_EQ(0, server_listen(s, n, AF_INET, 8));
	for (i = 0; i < n; i++)
		spawn(s, 1, i);
	ASSERT_EQ(0, wait_idle(s->sid, n));
	for (i = 0; i < n; i++) {
		memset(&jobs[i], 0, sizeof(jobs[i]));
		jobs[i] = (struct cjob){ .s = s, .i = i, .cpu = i, .n = 20,
					 .method = M_ECHO, .wait_taken = 1 };
		ASSERT_EQ(0, pthread_create(&th[i], NULL, cjob_run, &jobs[i]));
	}
	for (i = 0; i < n; i++) {
		pthread_join(th[i], NULL);
		EXPECT_EQ(0, jobs[i].bad);
		EXPECT_EQ(0, jobs[i].busy);
		EXPECT_EQ(0, jobs[i].wrong_cpu);
		EXPECT_EQ(0, jobs[i].wrong_run) {
			TH_LOG("cpu %d: %d of %d handled on another CPU", i,
			       jobs[i].wrong_run, jobs[i].ok);
		}
		total += jobs[i].ok;
	}
	EXPECT_EQ(n * 20, total);
	EXPECT_EQ(n, atomic_load(&s->conns));
	EXPECT_LE(acc0 + n, arrival_sum("accepts"));
	EXPECT_LE(loc0 + n * 21, arrival_sum("local"));
	EXPECT_LE(rep0 + n * 20, arrival_sum("replies"));
	/* The clients closed: the module closes its side and counts it. */
	for (i = 0; i < 300 && conns_of(s->sid); i++)
		msleep(10);
	EXPECT_EQ(0, conns_of(s->sid));
}

TEST_F_TIMEOUT(tcp, burst_spawns_and_queues, 120)
{
	const struct popup_pool pool = {
		.min_idle = 0, .max_idle = 2, .increment = 2,
		.max_threads = 6, .queue_limit = 64, .idle_timeout_ms = 500,
	};
	long long sp0 = arrival_sum("spawns"), q0 = arrival_sum("queued");
	struct tsrv *s = &self->srv;
	struct cjob jobs[12];
	pthread_t th[12];
	int i, ok = 0;

	ASSERT_EQ(0, server_open(s, self->name, &pool));
	ASSERT_EQ(0, server_listen(s, 1, AF_INET, 32));
	spawn(s, 1, -1);
	ASSERT_EQ(0, wait_idle(s->sid, 1));
	for (i = 0; i < 12; i++) {
		jobs[i] = (struct cjob){ .s = s, .i = 0, .cpu = i % ncpus(),
					 .n = 3, .method = M_SLEEP, .x = 50 };
		ASSERT_EQ(0, pthread_create(&th[i], NULL, cjob_run, &jobs[i]));
	}
	for (i = 0; i < 12; i++) {
		pthread_join(th[i], NULL);
		EXPECT_EQ(0, jobs[i].bad);
		EXPECT_EQ(0, jobs[i].busy);
		ok += jobs[i].ok;
	}
	EXPECT_EQ(36, ok);
	EXPECT_LT(1, atomic_load(&s->spawned));
	EXPECT_LT(sp0, arrival_sum("spawns"));
	EXPECT_LT(q0, arrival_sum("queued"));
}

TEST_F_TIMEOUT(tcp, overload_busy_refused_toobig_badframe, 60)
{
	const struct popup_pool pool = {
		.min_idle = 0, .max_idle = 1, .increment = 1,
		.max_threads = 1, .queue_limit = 0,
	};
	long long busy0 = arrival_sum("busy"), ref0 = arrival_sum("refused");
	long long big0 = arrival_sum("toobig"), bad0 = arrival_sum("badframe");
	struct tsrv *s = &self->srv;
	struct popup_wire_hdr h;
	struct echo_res res;
	int a, b, d, e, f;

	ASSERT_EQ(0, server_open(s, self->name, &pool));
	ASSERT_EQ(0, server_listen(s, 1, AF_INET, 4));
	spawn(s, 1, -1);
	ASSERT_EQ(0, wait_idle(s->sid, 1));
	/*
	 * One thread and no queue: each step waits for the thread to be
	 * idle again (a reply reaches the client before its REPLY_WAIT
	 * makes the thread idle).
	 */
	a = connect_taken(s, 1);
	ASSERT_LE(0, a);
	ASSERT_EQ(0, send_req(a, M_ECHO, 1, 1));
	ASSERT_EQ(0, recv_reply(a, &h, &res));
	ASSERT_EQ(0, wait_idle(s->sid, 1));
	b = connect_taken(s, 2);
	ASSERT_LE(0, b);
	ASSERT_EQ(0, send_req(b, M_ECHO, 1, 1));
	ASSERT_EQ(0, recv_reply(b, &h, &res));
	ASSERT_EQ(4, res.val);
	ASSERT_EQ(0, wait_idle(s->sid, 1));

	/* The only thread blocks on a's request: b's is answered BUSY. */
	ASSERT_EQ(0, send_req(a, M_BLOCK, 2, 0));
	msleep(200);
	ASSERT_EQ(0, send_req(b, M_ECHO, 7, 7));
	ASSERT_EQ(0, recv_reply(b, &h, &res));
	EXPECT_EQ(POPUP_WIRE_S_BUSY, h.status);
	EXPECT_EQ(7, h.req_id);
	EXPECT_EQ(0, h.len);
	/* A new connection now is refused: closed at once. */
	d = client_connect(AF_INET, s->port[0], 5000);
	ASSERT_LE(0, d);
	EXPECT_TRUE(closes_within(d));
	close(d);
	EXPECT_LE(busy0 + 2, arrival_sum("busy"));
	EXPECT_LE(ref0 + 1, arrival_wait("refused", ref0 + 1));

	/* Open the gate: a gets its answer, b's connection still works. */
	atomic_store(&s->gate, 1);
	ASSERT_EQ(0, recv_reply(a, &h, &res));
	EXPECT_EQ(0, h.status);
	EXPECT_EQ(1, res.val);
	ASSERT_EQ(0, wait_idle(s->sid, 1));
	ASSERT_EQ(0, send_req(b, M_ECHO, 8, 8));
	ASSERT_EQ(0, recv_reply(b, &h, &res));
	EXPECT_EQ(0, h.status);
	EXPECT_EQ(25, res.val);

	/* Over the slot: TOOBIG, then closed. Garbage: closed, no reply. */
	ASSERT_EQ(0, send_frame(b, M_ECHO, 9, 0, SLOT));
	ASSERT_EQ(0, recv_reply(b, &h, NULL));
	EXPECT_EQ(POPUP_WIRE_S_TOOBIG, h.status);
	EXPECT_EQ(9, h.req_id);
	EXPECT_TRUE(closes_within(b));
	EXPECT_LE(big0 + 1, arrival_sum("toobig"));
	ASSERT_EQ(0, wait_idle(s->sid, 1));
	e = connect_taken(s, 3);
	ASSERT_LE(0, e);
	ASSERT_EQ(0, send_req(e, M_ECHO, 1, 1));
	ASSERT_EQ(0, recv_reply(e, &h, &res));
	ASSERT_EQ(0, wait_idle(s->sid, 1));
	ASSERT_EQ(40, send(e, "this is not a popup frame, not at all.", 40,
			   MSG_NOSIGNAL));
	EXPECT_TRUE(closes_within(e));
	EXPECT_LE(bad0 + 1, arrival_sum("badframe"));
	/* The handler learns of it through a context of its own, which may
	 * still be on its way when the connection is already closed. */
	for (int i = 0; i < 5000 && atomic_load(&s->badframes) < 1; i++)
		msleep(1);
	EXPECT_EQ(1, atomic_load(&s->badframes));
	ASSERT_EQ(0, wait_idle(s->sid, 1));
	/* A frame split across segments is taken once whole. */
	f = connect_taken(s, 4);
	ASSERT_LE(0, f);
	ASSERT_EQ(0, send_split(f, s->sid));
	ASSERT_EQ(0, recv_reply(f, &h, &res));
	EXPECT_EQ(11, h.req_id);
	EXPECT_EQ(16, res.val);
	close(a);
	close(b);
	close(e);
	close(f);
}

TEST_F_TIMEOUT(tcp, peer_reset_mid_request, 60)
{
	long long cl0 = arrival_sum("closed");
	struct tsrv *s = &self->srv;
	struct popup_wire_hdr h;
	struct echo_res res;
	int a, b, c, i;

	ASSERT_EQ(0, server_open(s, self->name, NULL));
	ASSERT_EQ(0, server_listen(s, 1, AF_INET, 8));
	spawn(s, 2, -1);
	ASSERT_EQ(0, wait_idle(s->sid, 1));
	/* Reset while its request runs: the reply has nowhere to go. */
	a = client_connect(AF_INET, s->port[0], 5000);
	ASSERT_LE(0, a);
	ASSERT_EQ(0, send_req(a, M_SLEEP, 1, 300));
	msleep(100);
	reset_close(a);
	/* Reset with half a frame sent. */
	b = client_connect(AF_INET, s->port[0], 5000);
	ASSERT_LE(0, b);
	ASSERT_EQ(0, send_req(b, M_ECHO, 1, 1));
	ASSERT_EQ(0, recv_reply(b, &h, &res));
	ASSERT_EQ(12, send(b, "PUP1\1\0\0\1\0\0\0\0", 12, MSG_NOSIGNAL));
	msleep(50);
	reset_close(b);
	EXPECT_LE(cl0 + 2, arrival_wait("closed", cl0 + 2));
	for (i = 0; i < 300 && conns_of(s->sid); i++)
		msleep(10);
	EXPECT_EQ(0, conns_of(s->sid));
	/* The service goes on. */
	c = client_connect(AF_INET, s->port[0], 5000);
	ASSERT_LE(0, c);
	ASSERT_EQ(0, send_req(c, M_ECHO, 3, 3));
	ASSERT_EQ(0, recv_reply(c, &h, &res));
	EXPECT_EQ(10, res.val);
	close(c);
}

/* Send @n requests of @method as one write: pipelined on connection @c. */
static int send_pipelined(int c, uint16_t method, int n, uint64_t x)
{
	unsigned char buf[32 * (POPUP_WIRE_HDR_LEN + 8)];
	struct popup_wire_hdr h;
	size_t one = POPUP_WIRE_HDR_LEN + 8;
	int k;

	if (n > 32)
		return -EINVAL;
	for (k = 0; k < n; k++) {
		uint64_t v = x ? x : (uint64_t)k;

		memset(&h, 0, sizeof(h));
		h.magic = POPUP_WIRE_MAGIC;
		h.version = POPUP_WIRE_VERSION;
		h.method = method;
		h.req_id = 1000 + k;
		h.len = 8;
		popup_wire_encode(buf + k * one, &h);
		memcpy(buf + k * one + POPUP_WIRE_HDR_LEN, &v, 8);
	}
	return send(c, buf, n * one, MSG_NOSIGNAL) == (ssize_t)(n * one) ?
	       0 : -errno;
}

/*
 * Read @n replies to send_pipelined(): each req_id once, with its own
 * result. Returns the number of good replies.
 */
static int recv_pipelined(int c, int n, uint64_t x)
{
	bool seen[32] = { false };
	struct popup_wire_hdr h;
	struct echo_res res;
	int k, good = 0;

	for (k = 0; k < n; k++) {
		uint64_t i, v;

		if (recv_reply(c, &h, &res))
			break;
		i = h.req_id - 1000;
		v = x ? x : i;
		if (i >= (uint64_t)n || seen[i] || h.status ||
		    res.val != v * 3 + 1)
			continue;
		seen[i] = true;
		good++;
	}
	return good;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/*
 * Requests pipelined on one parked connection run at once: 4 MEET
 * requests each wait until all 4 run (one at a time, the first would give
 * up after 5 s), 4 x 200 ms of sleeps take well under 800 ms, 20 MEET
 * requests run at most POPUP_CONN_INFLIGHT at a time (the rest after),
 * and a peer that ends its side after pipelining still gets every reply
 * before the module closes the connection.
 */
TEST_F_TIMEOUT(tcp, pipelined_requests_concurrent, 60)
{
	const struct popup_pool pool = {
		.min_idle = 0, .max_idle = 24, .increment = 4,
		.max_threads = 24, .queue_limit = 64,
	};
	long long rep0 = arrival_sum("replies"), t0, ms;
	struct tsrv *s = &self->srv;
	char byte;
	int c;

	ASSERT_EQ(0, server_open(s, self->name, &pool));
	ASSERT_EQ(0, server_listen(s, 1, AF_INET, 32));
	spawn(s, 24, -1);
	ASSERT_EQ(0, wait_idle(s->sid, 24));
	c = client_connect(AF_INET, s->port[0], 10000);
	ASSERT_LE(0, c);

	s->meet_n = 4;
	ASSERT_EQ(0, send_pipelined(c, M_MEET, 4, 0));
	EXPECT_EQ(4, recv_pipelined(c, 4, 0));
	EXPECT_LE(4, atomic_load(&s->max_running));

	t0 = now_ms();
	ASSERT_EQ(0, send_pipelined(c, M_SLEEP, 4, 200));
	EXPECT_EQ(4, recv_pipelined(c, 4, 200));
	ms = now_ms() - t0;
	EXPECT_GT(600, ms) {
		TH_LOG("4 x 200 ms pipelined took %lld ms", ms);
	}

	/* Past the limit: 16 meet, the other 4 run once those replied. */
	atomic_store(&s->meet, 0);
	atomic_store(&s->max_running, 0);
	s->meet_n = POPUP_CONN_INFLIGHT;
	ASSERT_EQ(0, send_pipelined(c, M_MEET, 20, 0));
	EXPECT_EQ(20, recv_pipelined(c, 20, 0));
	EXPECT_EQ(POPUP_CONN_INFLIGHT, atomic_load(&s->max_running));

	/* An orderly end after pipelining: every reply, then EOF. */
	ASSERT_EQ(0, send_pipelined(c, M_SLEEP, 4, 100));
	ASSERT_EQ(0, shutdown(c, SHUT_WR));
	EXPECT_EQ(4, recv_pipelined(c, 4, 100));
	EXPECT_EQ(0, recv(c, &byte, 1, 0));
	close(c);
	EXPECT_LE(rep0 + 32, arrival_sum("replies"));
	for (c = 0; c < 300 && conns_of(s->sid); c++)
		msleep(10);
	EXPECT_EQ(0, conns_of(s->sid));
}

/*
 * The server is killed with a request running and other connections
 * parked: every connection closes, the listener (which the parent holds
 * too) gets its callback back so a plain accept and read work, and the
 * module unloads.
 */
TEST_F_TIMEOUT(tcp, server_killed_in_flight, 60)
{
	const struct popup_pool pool = {
		.min_idle = 0, .max_idle = 2, .increment = 1,
		.max_threads = 2, .queue_limit = 8,
	};
	struct popup_wire_hdr h;
	struct echo_res res;
	int ls, c[4], k, st, pfd[2], nc;
	struct pollfd pf;
	uint16_t port;
	char ok, buf[64];
	pid_t pid;

	ls = tcp_listener(AF_INET, &port);
	ASSERT_LE(0, ls);
	ASSERT_EQ(0, pipe(pfd));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		struct tsrv *s = &self->srv;
		struct popup_attach at = { 0 };

		close(pfd[0]);
		if (server_open(s, self->name, &pool))
			_exit(1);
		if (do_attach(s->fd, s->sid, ls, 0, 8, SLOT, &at))
			_exit(2);
		s->attach_id[0] = at.attach_id;
		spawn(s, 2, -1);
		ok = 1;
		if (write(pfd[1], &ok, 1) != 1)
			_exit(3);
		for (;;)
			pause();
	}
	close(pfd[1]);
	ASSERT_EQ(1, read(pfd[0], &ok, 1));
	close(pfd[0]);

	for (k = 0; k < 4; k++) {
		c[k] = client_connect(AF_INET, port, 5000);
		ASSERT_LE(0, c[k]);
		ASSERT_EQ(0, send_req(c[k], M_ECHO, k, k));
		ASSERT_EQ(0, recv_reply(c[k], &h, &res));
	}
	ASSERT_EQ(0, send_req(c[0], M_SLEEP, 9, 3000));
	ASSERT_EQ(0, send_req(c[1], M_SLEEP, 9, 3000));
	msleep(300);
	ASSERT_EQ(0, send_req(c[2], M_ECHO, 9, 9));	/* queued */
	msleep(100);
	kill(pid, SIGKILL);
	ASSERT_EQ(pid, waitpid(pid, &st, 0));
	/*
	 * Running requests are answered ERROR by the kernel, the queued one
	 * BUSY, then every connection ends.
	 */
	for (k = 0; k < 4; k++) {
		int r = recv_reply(c[k], &h, &res);

		if (!r) {
			EXPECT_EQ(k == 2 ? POPUP_WIRE_S_BUSY : POPUP_WIRE_S_ERROR,
				  h.status);
			EXPECT_EQ(9, h.req_id);
			EXPECT_NE(3, k);
			r = recv_reply(c[k], &h, &res);
		}
		EXPECT_EQ(-EPIPE, r == -ECONNRESET ? -EPIPE : r);
		close(c[k]);
	}

	/* The listener is userspace's again. */
	nc = client_connect(AF_INET, port, 5000);
	ASSERT_LE(0, nc);
	pf.fd = ls;
	pf.events = POLLIN;
	ASSERT_EQ(1, poll(&pf, 1, 3000));
	k = accept(ls, NULL, NULL);
	ASSERT_LE(0, k);
	ASSERT_EQ(0, send_req(nc, M_ECHO, 5, 5));
	pf.fd = k;
	ASSERT_EQ(1, poll(&pf, 1, 3000));
	EXPECT_EQ(POPUP_WIRE_HDR_LEN + 8, recv(k, buf, sizeof(buf), 0));
	close(k);
	close(nc);
	close(ls);
	EXPECT_EQ(0, system("rmmod popup"));
	EXPECT_EQ(0, popup_test_load_module());
}

/* A client that loops on one connection until it ends. */
struct ljob {
	struct tsrv *s;
	int ok;
	int ended;
	int bad;
};

static void *ljob_run(void *arg)
{
	struct ljob *j = arg;
	struct popup_wire_hdr h;
	struct echo_res res;
	int c = client_connect(AF_INET, j->s->port[0], 5000), r;
	uint64_t id;

	if (c < 0) {
		j->bad++;
		return NULL;
	}
	for (id = 1; id < 100000; id++) {
		if (send_req(c, M_ECHO, id, id)) {
			j->ended++;
			break;
		}
		r = recv_reply(c, &h, &res);
		if (r == -EPIPE || r == -ECONNRESET) {
			j->ended++;
			break;
		}
		if (r || h.req_id != id || res.val != id * 3 + 1)
			j->bad++;
		else
			j->ok++;
	}
	close(c);
	return NULL;
}

TEST_F_TIMEOUT(tcp, detach_under_load_and_handback, 60)
{
	struct tsrv *s = &self->srv;
	struct popup_wire_hdr h;
	struct echo_res res;
	struct ljob j[3];
	pthread_t th[3];
	struct pollfd pf;
	unsigned char buf[64];
	int i, c, a;

	ASSERT_EQ(0, server_open(s, self->name, NULL));
	s->keep_fd = 1;
	ASSERT_EQ(0, server_listen(s, 1, AF_INET, 16));
	spawn(s, 2, -1);
	ASSERT_EQ(0, wait_idle(s->sid, 1));

	/* Hand-back: the server kept the descriptor and reads it itself. */
	c = client_connect(AF_INET, s->port[0], 5000);
	ASSERT_LE(0, c);
	ASSERT_EQ(0, send_req(c, M_ECHO, 1, 1));
	ASSERT_EQ(0, recv_reply(c, &h, &res));
	/* Parked, the request may be answered before the parker records it. */
	for (i = 0; i < 2000 && atomic_load(&s->nkept) < 1; i++)
		msleep(1);
	ASSERT_EQ(1, atomic_load(&s->nkept));
	ASSERT_EQ(0, do_detach(s->fd, s->kept_id[0], POPUP_DETACH_CONN));
	EXPECT_EQ(-ENOENT, do_detach(s->fd, s->kept_id[0], POPUP_DETACH_CONN));
	ASSERT_EQ(0, send_req(c, M_ECHO, 2, 2));
	pf.fd = s->kept[0];
	pf.events = POLLIN;
	ASSERT_EQ(1, poll(&pf, 1, 3000));
	EXPECT_EQ(POPUP_WIRE_HDR_LEN + 8, recv(s->kept[0], buf, sizeof(buf), 0));
	close(c);

	/* Detach the listener while clients call: they end, none hangs. */
	memset(j, 0, sizeof(j));
	for (i = 0; i < 3; i++) {
		j[i].s = s;
		ASSERT_EQ(0, pthread_create(&th[i], NULL, ljob_run, &j[i]));
	}
	msleep(500);
	ASSERT_EQ(0, do_detach(s->fd, s->attach_id[0], 0));
	EXPECT_EQ(-ENOENT, do_detach(s->fd, s->attach_id[0], 0));
	/* Kept descriptors hold their connections open: close them. */
	for (i = 1; i < atomic_load(&s->nkept); i++)
		shutdown(s->kept[i], SHUT_RDWR);
	for (i = 0; i < 3; i++) {
		pthread_join(th[i], NULL);
		EXPECT_EQ(0, j[i].bad);
		EXPECT_LT(0, j[i].ok);
		EXPECT_EQ(1, j[i].ended);
	}
	EXPECT_EQ(0, conns_of(s->sid));
	/* Accept is userspace's again. */
	c = client_connect(AF_INET, s->port[0], 5000);
	ASSERT_LE(0, c);
	pf.fd = s->lsock[0];
	ASSERT_EQ(1, poll(&pf, 1, 3000));
	a = accept(s->lsock[0], NULL, NULL);
	ASSERT_LE(0, a);
	ASSERT_EQ(0, send_req(c, M_ECHO, 3, 3));
	pf.fd = a;
	ASSERT_EQ(1, poll(&pf, 1, 3000));
	EXPECT_EQ(POPUP_WIRE_HDR_LEN + 8, recv(a, buf, sizeof(buf), 0));
	close(a);
	close(c);
}

TEST_F(tcp, rmmod_refused_while_attached)
{
	struct tsrv *s = &self->srv;

	ASSERT_EQ(0, server_open(s, self->name, NULL));
	ASSERT_EQ(0, server_listen(s, 1, AF_INET, 4));
	EXPECT_NE(0, system("rmmod popup 2>/dev/null"));
	server_stop(s);
	EXPECT_EQ(0, system("rmmod popup"));
	EXPECT_EQ(0, popup_test_load_module());
}

TEST_F(tcp, attach_park_errors)
{
	struct tsrv *s = &self->srv;
	struct popup_park pk;
	struct popup_wire_hdr h;
	struct echo_res res;
	int t, u, c;
	uint16_t port;

	ASSERT_EQ(0, server_open(s, self->name, NULL));
	ASSERT_EQ(0, server_listen(s, 1, AF_INET6, 4));
	/* A TCP socket that does not listen. */
	t = socket(AF_INET, SOCK_STREAM, 0);
	ASSERT_LE(0, t);
	EXPECT_EQ(-EINVAL, do_attach(s->fd, s->sid, t, 0, 4, SLOT, NULL));
	/* PARK: not connected, not TCP, unknown listener, bad fields. */
	EXPECT_EQ(-ENOTCONN, do_park(s->fd, t, s->attach_id[0], NULL));
	EXPECT_EQ(-ENOTCONN, do_park(s->fd, s->lsock[0], s->attach_id[0],
				     NULL));
	u = socket(AF_INET, SOCK_DGRAM, 0);
	ASSERT_LE(0, u);
	EXPECT_EQ(-EPROTONOSUPPORT, do_park(s->fd, u, s->attach_id[0], NULL));
	EXPECT_EQ(-EBADF, do_park(s->fd, 9999, s->attach_id[0], NULL));
	/* An accepted connection of our own to park. */
	spawn(s, 1, -1);
	ASSERT_EQ(0, wait_idle(s->sid, 1));
	close(t);
	t = tcp_listener(AF_INET, &port);
	ASSERT_LE(0, t);
	c = client_connect(AF_INET, port, 3000);
	ASSERT_LE(0, c);
	u = accept(t, NULL, NULL);
	ASSERT_LE(0, u);
	EXPECT_EQ(-ENOENT, do_park(s->fd, u, s->attach_id[0] + 1000, NULL));
	memset(&pk, 0, sizeof(pk));
	pk.size = sizeof(pk);
	pk.fd = u;
	pk.attach_id = s->attach_id[0];
	pk.flags = 1;
	EXPECT_EQ(-1, ioctl(s->fd, POPUP_IOC_PARK, &pk));
	EXPECT_EQ(EINVAL, errno);
	pk.flags = 0;
	pk.reserved[1] = 1;
	EXPECT_EQ(-1, ioctl(s->fd, POPUP_IOC_PARK, &pk));
	EXPECT_EQ(EINVAL, errno);
	/* Parked once, then EBUSY; it serves requests; DETACH errors. */
	ASSERT_EQ(0, do_park(s->fd, u, s->attach_id[0], NULL));
	EXPECT_EQ(-EBUSY, do_park(s->fd, u, s->attach_id[0], NULL));
	close(u);
	ASSERT_EQ(0, send_req(c, M_ECHO, 4, 4));
	ASSERT_EQ(0, recv_reply(c, &h, &res));
	EXPECT_EQ(13, res.val);
	EXPECT_EQ(-ENOENT, do_detach(s->fd, 0xfffffff0u, POPUP_DETACH_CONN));
	EXPECT_EQ(-EINVAL, do_detach(s->fd, s->attach_id[0], 2));
	close(c);
	close(t);
}

TEST_HARNESS_MAIN
