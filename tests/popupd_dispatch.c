// SPDX-License-Identifier: GPL-2.0
/*
 * popupd's dispatch models (service.h: popup, pool, percpu,
 * per-connection, per-object) and request priorities, natively with the
 * userspace backend, through the "work" service (userspace/services/work.c).
 *
 *   per_object_exact     concurrent unlocked increments of one key from
 *                        several connections give the exact total: the
 *                        key's calls never overlap
 *   per_connection       a connection's requests all run on one thread,
 *                        one thread per connection; past max_threads a
 *                        new connection is refused with busy, and is
 *                        served once another connection closes; UDP
 *                        callers are served (per peer address)
 *   thread_bound         a flood of blocking calls under each model: the
 *                        service never runs more threads than its bound,
 *                        and every call gets a reply; pool keeps its
 *                        fixed threads, popup shrinks back when idle
 *   slow_isolation       under each model, a service whose one thread is
 *                        stuck in slow handlers with a deep queue does not
 *                        delay calls to another service
 *   priority_order       under each model, with one thread saturated:
 *                        high-priority requests queued after low ones run
 *                        first, per-method priority counts, a request's
 *                        priority is capped by the service's maximum, and
 *                        a low request is not starved by a stream of high
 *                        ones (aging)
 *   local_calls          local callers (libpopup: its userspace backend
 *                        natively, popup.ko in the VM): per-object routes
 *                        them onto the object threads too (unlocked
 *                        increments from 4 clients stay exact), and the
 *                        caller's priority (import priority, or -nice
 *                        under the module) reaches the handler, capped by
 *                        the service
 *   local_priority       libpopup's queue for local callers: higher
 *                        priorities first, a low call passed over at most
 *                        8 times (the user backend's aging)
 *   bad_config           an unknown dispatch model or max_priority stops
 *                        the start
 */
#include <pthread.h>
#include <sys/syscall.h>

#include "popup/popup.h"

#include "kselftest_harness.h"
#include "popupd_util.h"

#define SVC_WORK	5
#define SVC_SLEEP	4
#define M_INCR		1
#define M_GET		2
#define M_WAIT		3
#define M_TID		5
#define M_URGENT	6

/* Tests that start several daemons or go through every model can take
 * longer than the harness's default 30 s on a loaded machine: a fixture
 * for the timeout only. */
FIXTURE(all_models) {
	int unused;
};
FIXTURE_SETUP(all_models) { self->unused = 0; }
FIXTURE_TEARDOWN(all_models) {}

static const char *const MODELS[] = { "popup", "pool", "percpu", "per-connection",
				       "per-object" };
#define NR_MODELS (sizeof(MODELS) / sizeof(MODELS[0]))

/* Start popupd serving work (and sleep, echo) with "work.KEY=VALUE"s;
 * @local: with the local exports. */
static int start_work_l(struct pd *p, const char *const *sets, bool local)
{
	const char *args[40];
	int n = 0;

	if (local)
		args[n++] = "--local";
	args[n++] = "-s";
	args[n++] = "echo,sleep,work";
	for (; sets && *sets && n < 36; sets++) {
		args[n++] = "--set";
		args[n++] = *sets;
	}
	args[n] = NULL;
	return pd_start_v(p, 0, 0, 0, args);
}

static int start_work(struct pd *p, const char *const *sets)
{
	return start_work_l(p, sets, false);
}

static int send_prio(int fd, uint32_t svc, uint16_t method, uint64_t id, int prio,
		     const char *arg)
{
	struct popup_wire_hdr h = { .magic = POPUP_WIRE_MAGIC, .version = POPUP_WIRE_VERSION,
				    .flags = POPUP_WIRE_F_PRIO, .method = method,
				    .service = svc, .req_id = id, .len = strlen(arg),
				    .reserved = (uint8_t)(int8_t)prio };
	unsigned char b[POPUP_WIRE_HDR_LEN];

	popup_wire_encode(b, &h);
	if (send(fd, b, sizeof(b), MSG_NOSIGNAL) != sizeof(b))
		return -errno;
	if (h.len && send(fd, arg, h.len, MSG_NOSIGNAL) != (ssize_t)h.len)
		return -errno;
	return 0;
}

/* One call on @fd: 0 and the reply text in @out, or -errno. */
static int call_text(int fd, uint32_t svc, uint16_t method, const char *arg,
		     char *out, size_t cap, uint32_t *status)
{
	struct popup_wire_hdr h;
	int err = send_req(fd, svc, method, 7, arg, strlen(arg));

	if (!err)
		err = recv_rep(fd, &h, out, cap - 1, 10000);
	if (err)
		return err;
	out[h.len < cap ? h.len : cap - 1] = 0;
	*status = h.status;
	return 0;
}

static long field(const char *text, const char *key)
{
	const char *k = strstr(text, key);

	return k ? strtol(k + strlen(key), NULL, 10) : -1;
}

/* Wait until the work service runs @n handlers at once (up to 10 s). */
static bool wait_busy(const struct pd *p, long n)
{
	for (int i = 0; i < 1000; i++) {
		if (pd_stat(p, "svc name=work", "busy_threads") >= n)
			return true;
		usleep(10000);
	}
	return false;
}

/* ---- per-object ------------------------------------------------------ */

struct incr_arg {
	int port, n;
	const char *key;
	int bad;
};

/* @n increments of @key, pipelined 16 at a time on one connection. */
static void *incr_thread(void *arg)
{
	struct incr_arg *a = arg;
	int fd = tcp_connect(a->port);

	if (fd < 0) {
		a->bad = a->n;
		return NULL;
	}
	for (int done = 0; done < a->n;) {
		int batch = a->n - done < 16 ? a->n - done : 16;

		for (int i = 0; i < batch; i++)
			if (send_req(fd, SVC_WORK, M_INCR, done + i + 1, a->key, strlen(a->key)))
				a->bad++;
		for (int i = 0; i < batch; i++) {
			struct popup_wire_hdr h;
			char buf[64];

			if (recv_rep(fd, &h, buf, sizeof(buf), 10000) || h.status)
				a->bad++;
		}
		done += batch;
	}
	close(fd);
	return NULL;
}

/* Total of 4 threads x @per increments of "k1", plus "k2" alongside. */
static long incr_total(struct __test_metadata *_metadata, struct pd *p, int per)
{
	struct incr_arg a[6];
	pthread_t t[6];
	char buf[64];
	uint32_t st;
	int fd, bad = 0;

	for (int i = 0; i < 6; i++) {
		a[i] = (struct incr_arg){ .port = p->np, .n = per, .key = i < 4 ? "k1" : "k2" };
		pthread_create(&t[i], NULL, incr_thread, &a[i]);
	}
	for (int i = 0; i < 6; i++) {
		pthread_join(t[i], NULL);
		bad += a[i].bad;
	}
	EXPECT_EQ(0, bad);
	fd = tcp_connect(p->np);
	if (fd < 0 || call_text(fd, SVC_WORK, M_GET, "k1", buf, sizeof(buf), &st) || st)
		buf[0] = 0;
	if (fd >= 0)
		close(fd);
	return buf[0] ? strtol(buf, NULL, 10) : -1;
}

TEST_F_TIMEOUT(all_models, per_object_exact, 150)
{
	static const char *const obj[] = { "work.dispatch=per-object", "work.threads=4", NULL };
	static const char *const pop[] = { "work.dispatch=popup", "work.threads=4", NULL };
	struct pd p = { 0 };
	long total;

	ASSERT_EQ(0, start_work(&p, obj));
	EXPECT_EQ(4 * 300, incr_total(_metadata, &p, 300));
	EXPECT_LE(pd_stat(&p, "svc name=work", "max_seen"), 4);
	EXPECT_EQ(0, pd_stop(&p, 20000));
	EXPECT_TRUE(pd_log_clean(&p));
	pd_kill(&p);

	/* The same handler under a shared pool loses updates: what the
	 * per-object model prevents (informational: a race need not hit). */
	memset(&p, 0, sizeof(p));
	ASSERT_EQ(0, start_work(&p, pop));
	total = incr_total(_metadata, &p, 300);
	TH_LOG("popup model: %ld of %d increments survived", total, 4 * 300);
	EXPECT_LE(total, 4 * 300);
	EXPECT_EQ(0, pd_stop(&p, 20000));
	pd_kill(&p);
}

/* ---- per-connection --------------------------------------------------- */

/* @n pipelined "tid" calls on @fd; the one thread id they all report,
 * 0 if they differ, -1 on an error reply (status in *@status). */
static long conn_tid(int fd, int n, uint32_t *status)
{
	long tid = -1;

	*status = 0;
	for (int i = 0; i < n; i++)
		if (send_req(fd, SVC_WORK, M_TID, i + 1, "x", 1))
			return -1;
	for (int i = 0; i < n; i++) {
		struct popup_wire_hdr h;
		char buf[64];
		long t;

		if (recv_rep(fd, &h, buf, sizeof(buf) - 1, 5000))
			return -1;
		if (h.status) {
			*status = h.status;
			tid = -1;
			continue;
		}
		buf[h.len] = 0;
		t = strtol(buf, NULL, 10);
		if (i == 0 || tid == -1)
			tid = t;
		else if (t != tid)
			return 0;
	}
	return tid;
}

static int udp_call(int port, const char *arg, uint32_t *status)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct popup_wire_hdr h = { .magic = POPUP_WIRE_MAGIC, .version = POPUP_WIRE_VERSION,
				    .method = M_TID, .service = SVC_WORK, .req_id = 9,
				    .len = strlen(arg) };
	unsigned char b[256];
	struct pollfd pf;
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	ssize_t n;

	if (fd < 0)
		return -errno;
	popup_wire_encode(b, &h);
	memcpy(b + POPUP_WIRE_HDR_LEN, arg, h.len);
	sendto(fd, b, POPUP_WIRE_HDR_LEN + h.len, 0, (struct sockaddr *)&sa, sizeof(sa));
	pf = (struct pollfd){ .fd = fd, .events = POLLIN };
	n = poll(&pf, 1, 3000) == 1 ? recv(fd, b, sizeof(b), 0) : -1;
	close(fd);
	if (n < POPUP_WIRE_HDR_LEN)
		return -ETIMEDOUT;
	popup_wire_decode(b, &h);
	*status = h.status;
	return 0;
}

TEST_F_TIMEOUT(all_models, per_connection, 150)
{
	static const char *const sets[] = { "work.dispatch=per-connection", "work.threads=3",
					    NULL };
	static const char hreq[] = "POST /work/tid HTTP/1.1\r\nContent-Length: 1\r\n\r\nx";
	struct pd p = { 0 };
	long tids[3], t;
	int fds[3], extra, hfd;
	uint32_t st;
	char buf[4096];

	ASSERT_EQ(0, start_work(&p, sets));
	for (int i = 0; i < 3; i++) {
		fds[i] = tcp_connect(p.np);
		ASSERT_GE(fds[i], 0);
		tids[i] = conn_tid(fds[i], 20, &st);
		EXPECT_GT(tids[i], 0);		/* one thread for all 20 */
		for (int k = 0; k < i; k++)
			EXPECT_NE(tids[k], tids[i]);	/* its own thread */
	}
	for (int i = 0; i < 3; i++)
		EXPECT_EQ(tids[i], conn_tid(fds[i], 10, &st));	/* still the same */
	/* A fourth connection is past the bound: refused, explicitly. */
	extra = tcp_connect(p.np);
	ASSERT_GE(extra, 0);
	EXPECT_EQ(-1, conn_tid(extra, 3, &st));
	EXPECT_EQ(POPUP_WIRE_S_BUSY, st);
	EXPECT_LE(pd_stat(&p, "svc name=work", "max_seen"), 3);
	/* Connectionless callers are served (a thread per peer address). */
	EXPECT_EQ(0, udp_call(p.np, "u", &st));
	EXPECT_EQ(POPUP_WIRE_S_OK, st);
	/* One closes: its thread goes to the waiting connection. */
	close(fds[0]);
	usleep(200000);
	t = conn_tid(extra, 10, &st);
	EXPECT_GT(t, 0);
	EXPECT_EQ(POPUP_WIRE_S_OK, st);
	close(extra);
	close(fds[1]);
	usleep(200000);
	/* HTTP keep-alive connections own a thread the same way. */
	hfd = tcp_connect(p.hp);
	ASSERT_GE(hfd, 0);
	t = -1;
	for (int i = 0; i < 5; i++) {
		ssize_t n;
		char *body;

		ASSERT_EQ((ssize_t)sizeof(hreq) - 1, send(hfd, hreq, sizeof(hreq) - 1, 0));
		n = recv(hfd, buf, sizeof(buf) - 1, 0);
		ASSERT_GT(n, 0);
		buf[n] = 0;
		ASSERT_EQ(0, strncmp(buf, "HTTP/1.1 200", 12));
		body = strstr(buf, "\r\n\r\n");
		ASSERT_NE(NULL, body);
		if (t == -1)
			t = strtol(body + 4, NULL, 10);
		EXPECT_EQ(t, strtol(body + 4, NULL, 10));
	}
	close(hfd);
	close(fds[2]);
	EXPECT_LE(pd_stat(&p, "svc name=work", "max_seen"), 3);
	EXPECT_EQ(0, pd_stop(&p, 20000));
	EXPECT_TRUE(pd_log_clean(&p));
	pd_kill(&p);
}

/* ---- thread bound under a flood --------------------------------------- */

/* @conns connections x @per pipelined "wait MS" calls with distinct
 * arguments; counts OK and busy replies; every call must get one. */
static void flood(struct __test_metadata *_metadata, int port, int conns, int per,
		  int *ok, int *busy)
{
	int fds[32];

	*ok = *busy = 0;
	for (int c = 0; c < conns; c++) {
		fds[c] = tcp_connect(port);
		ASSERT_GE(fds[c], 0);
		for (int i = 0; i < per; i++) {
			char arg[16];

			/* "20" with a distinct key prefix for per-object:
			 * leading zeros keep the value, change the key. */
			snprintf(arg, sizeof(arg), "%0*d", 2 + (c * per + i) % 12, 20);
			ASSERT_EQ(0, send_req(fds[c], SVC_WORK, M_WAIT, i + 1, arg, strlen(arg)));
		}
	}
	for (int c = 0; c < conns; c++) {
		for (int i = 0; i < per; i++) {
			struct popup_wire_hdr h;
			char buf[128];

			ASSERT_EQ(0, recv_rep(fds[c], &h, buf, sizeof(buf), 15000));
			if (h.status == POPUP_WIRE_S_OK)
				(*ok)++;
			else if (h.status == POPUP_WIRE_S_BUSY)
				(*busy)++;
		}
		close(fds[c]);
	}
}

static long thread_count(pid_t pid, const char *comm)
{
	char cmd[160], out[32];
	FILE *f;

	snprintf(cmd, sizeof(cmd), "grep -lx '%s' /proc/%d/task/*/comm 2>/dev/null | wc -l", comm, pid);
	f = popen(cmd, "r");
	if (!f)
		return -1;
	if (!fgets(out, sizeof(out), f))
		out[0] = 0;
	pclose(f);
	return strtol(out, NULL, 10);
}

TEST_F_TIMEOUT(all_models, thread_bound, 150)
{
	for (unsigned int k = 0; k < NR_MODELS; k++) {
		char d[64];
		const char *sets[] = { d, "work.threads=3", "work.queue=1000",
				       "work.min_threads=1", "work.idle_timeout_ms=300", NULL };
		long bound = 3, tasks;
		struct pd p = { 0 };
		int ok, busy;

		snprintf(d, sizeof(d), "work.dispatch=%s", MODELS[k]);
		ASSERT_EQ(0, start_work(&p, sets));
		if (!strcmp(MODELS[k], "percpu"))
			bound = 3 * pd_stat(&p, "daemon", "workers");
		if (!strcmp(MODELS[k], "pool")) {	/* fixed: all there from the start */
			EXPECT_EQ(3, pd_stat(&p, "svc name=work", "threads"));
		}
		flood(_metadata, p.np, 8, 12, &ok, &busy);
		tasks = thread_count(p.pid, "popupd-work");
		TH_LOG("%s: %d ok, %d busy, peak %ld threads (bound %ld), %ld now",
			       MODELS[k], ok, busy, pd_stat(&p, "svc name=work", "max_seen"),
			       bound, tasks);
		EXPECT_EQ(8 * 12, ok + busy);
		EXPECT_LE(pd_stat(&p, "svc name=work", "max_seen"), bound);
		EXPECT_GE(pd_stat(&p, "svc name=work", "max_seen"), 1);
		EXPECT_LE(tasks, bound);
		if (strcmp(MODELS[k], "per-connection")) {
			EXPECT_EQ(8 * 12, ok);	/* queues deep enough: none refused */
		} else {
			EXPECT_GE(ok, 3 * 12);	/* 3 connections held threads */
		}
		usleep(800000);			/* past the idle timeout */
		if (!strcmp(MODELS[k], "pool")) {
			EXPECT_EQ(3, pd_stat(&p, "svc name=work", "threads"));
		}
		if (!strcmp(MODELS[k], "popup")) {
			EXPECT_EQ(1, pd_stat(&p, "svc name=work", "threads"));
		}
		EXPECT_EQ(0, pd_stop(&p, 10000));
		EXPECT_TRUE(pd_log_clean(&p));
		pd_kill(&p);
	}
}

/* ---- isolation -------------------------------------------------------- */

TEST_F_TIMEOUT(all_models, slow_isolation, 150)
{
	for (unsigned int k = 0; k < NR_MODELS; k++) {
		char d[64];
		const char *sets[] = { d, "work.threads=1", "work.queue=100", NULL };
		struct pd p = { 0 };
		struct popup_wire_hdr h;
		uint64_t t0, worst = 0;
		char buf[128];
		int slow, fast;

		snprintf(d, sizeof(d), "work.dispatch=%s", MODELS[k]);
		ASSERT_EQ(0, start_work(&p, sets));
		slow = tcp_connect(p.np);
		fast = tcp_connect(p.np);
		ASSERT_GE(slow, 0);
		ASSERT_GE(fast, 0);
		/* 10 x 300 ms queued behind one thread: 3 s of backlog. */
		for (int i = 0; i < 10; i++)
			ASSERT_EQ(0, send_req(slow, SVC_WORK, M_WAIT, i + 1, "300", 3));
		ASSERT_TRUE(wait_busy(&p, 1));
		for (int i = 0; i < 10; i++) {
			t0 = t_ms();
			ASSERT_EQ(0, send_req(fast, SVC_SLEEP, 1, 100 + i, "0", 1));
			ASSERT_EQ(0, recv_rep(fast, &h, buf, sizeof(buf), 5000));
			EXPECT_EQ(POPUP_WIRE_S_OK, h.status);
			if (t_ms() - t0 > worst)
				worst = t_ms() - t0;
		}
		TH_LOG("%s: other service's worst latency %llu ms behind a 3 s backlog",
			       MODELS[k], (unsigned long long)worst);
		EXPECT_LT(worst, 250);
		close(fast);
		close(slow);
		pd_kill(&p);
	}
}

/* ---- priorities ------------------------------------------------------- */

struct rep {
	long seq, prio;
};

/* Read @n replies on @fd into @r by req_id (@first..@first + n - 1,
 * stored at r[req_id - 1]). */
static int collect(int fd, struct rep *r, int first, int n)
{
	for (int i = 0; i < n; i++) {
		struct popup_wire_hdr h;
		char buf[128];

		if (recv_rep(fd, &h, buf, sizeof(buf) - 1, 15000) || h.status ||
		    h.req_id < (uint64_t)first || h.req_id >= (uint64_t)(first + n))
			return -1;
		buf[h.len] = 0;
		r[h.req_id - 1].seq = field(buf, "seq=");
		r[h.req_id - 1].prio = field(buf, "prio=");
	}
	return 0;
}

/*
 * One connection (per-connection: the connection's thread), one thread:
 * a 300 ms blocker (id 1), then 4 low (-5, ids 2-5), 1 urgent by method
 * (id 6), 4 high asking 50, capped to 10 (ids 7-10); then a second round:
 * blocker (11), 1 low (12), 20 high (13-32).
 */
static void prio_round(struct __test_metadata *_metadata, const struct pd *p,
		       const char *model)
{
	struct rep r[32];
	int fd = tcp_connect(p->np);
	long max_low = 0, min_high = 1L << 40, max_high = 0;

	ASSERT_GE(fd, 0);
	ASSERT_EQ(0, send_prio(fd, SVC_WORK, M_WAIT, 1, 0, "300"));
	ASSERT_TRUE(wait_busy(p, 1));	/* the blocker runs; the rest queue */
	for (int i = 2; i <= 5; i++)
		ASSERT_EQ(0, send_prio(fd, SVC_WORK, M_WAIT, i, -5, "1"));
	ASSERT_EQ(0, send_req(fd, SVC_WORK, M_URGENT, 6, "1", 1));
	for (int i = 7; i <= 10; i++)
		ASSERT_EQ(0, send_prio(fd, SVC_WORK, M_WAIT, i, 50, "1"));
	ASSERT_EQ(0, collect(fd, r, 1, 10));
	for (int i = 1; i < 10; i++) {
		bool low = i <= 4;

		EXPECT_EQ(low ? -5 : 10, r[i].prio);	/* capped at max_priority */
		if (low && r[i].seq > max_low)
			max_low = r[i].seq;
		if (!low && r[i].seq < min_high)
			min_high = r[i].seq;
	}
	TH_LOG("%s: blocker seq %ld, high from seq %ld, last low seq %ld", model,
		       r[0].seq, min_high, max_low);
	EXPECT_LT(r[0].seq, min_high);
	EXPECT_LT(min_high, max_low);
	for (int i = 5; i < 10; i++)
		for (int l = 1; l <= 4; l++)
			EXPECT_LT(r[i].seq, r[l].seq);	/* every high before every low */

	/* Aging: one low among 20 highs runs before the last high. */
	ASSERT_EQ(0, send_prio(fd, SVC_WORK, M_WAIT, 11, 0, "300"));
	ASSERT_TRUE(wait_busy(p, 1));
	ASSERT_EQ(0, send_prio(fd, SVC_WORK, M_WAIT, 12, -20, "1"));
	for (int i = 13; i <= 32; i++)
		ASSERT_EQ(0, send_prio(fd, SVC_WORK, M_WAIT, i, 10, "1"));
	ASSERT_EQ(0, collect(fd, r, 11, 22));
	for (int i = 12; i < 32; i++)
		if (r[i].seq > max_high)
			max_high = r[i].seq;
	TH_LOG("%s: starved-low seq %ld, last high seq %ld", model, r[11].seq,
		       max_high);
	EXPECT_LT(r[11].seq, max_high);
	/* Passed over exactly 8 times (pool.c's AGE_SKIPS), then run. */
	EXPECT_EQ(r[10].seq + 9, r[11].seq);
	close(fd);
}

TEST_F_TIMEOUT(all_models, priority_order, 150)
{
	/* percpu: one thread per CPU, requests of one connection land on
	 * one worker, hence one pool. */
	for (unsigned int k = 0; k < NR_MODELS; k++) {
		char d[64];
		const char *sets[] = { d, "work.threads=1", "work.queue=100", NULL };
		struct pd p = { 0 };

		snprintf(d, sizeof(d), "work.dispatch=%s", MODELS[k]);
		ASSERT_EQ(0, start_work(&p, sets));
		prio_round(_metadata, &p, MODELS[k]);
		EXPECT_EQ(0, pd_stop(&p, 20000));
		EXPECT_TRUE(pd_log_clean(&p));
		pd_kill(&p);
	}
}

/* ---- local callers ---------------------------------------------------- */

static struct popup_binding *import_work(struct popup_client *cl, int prio)
{
	POPUP_OPTS(popup_import_opts, o, .slots = 1, .priority = prio);
	struct popup_binding *b = NULL;

	/* The export comes up shortly after the ports (its own thread). */
	for (int i = 0; i < 200; i++) {
		b = popup_client__import(cl, "work", 1, &o);
		if (!popup_get_error(b))
			return b;
		usleep(25000);
	}
	return NULL;
}

struct local_arg {
	int n, bad;
};

static void *local_incr(void *arg)
{
	struct local_arg *a = arg;
	struct popup_client *cl = popup_client__open(NULL);
	struct popup_binding *b = popup_get_error(cl) ? NULL : import_work(cl, 0);

	for (int i = 0; i < a->n; i++) {
		char res[32];

		if (!b || popup_binding__call(b, M_INCR, "lk", 2, res, sizeof(res), NULL,
					      5000) != 0)
			a->bad++;
	}
	if (b)
		popup_binding__destroy(b);
	if (!popup_get_error(cl))
		popup_client__close(cl);
	return NULL;
}

/*
 * The "prio=" a local call of @method asking for @prio ran at: the user
 * backend sends the import priority; under popup.ko the caller's nice
 * value counts (priority = -nice), so the calling thread takes nice
 * -@prio (clamped to -20..19) for the call.
 */
static long local_prio(struct popup_client *cl, int prio, uint32_t method)
{
	bool kernel = popup_client__backend(cl) == POPUP_BACKEND_KERNEL;
	struct popup_binding *b = import_work(cl, prio);
	int nice = -prio < -20 ? -20 : -prio > 19 ? 19 : -prio;
	pid_t tid = (pid_t)syscall(SYS_gettid);
	char res[128] = "";
	uint32_t len = 0;
	long v = -99;

	if (!b)
		return -99;
	if (kernel && setpriority(PRIO_PROCESS, tid, nice))
		v = -98;
	else if (popup_binding__call(b, method, "0", 1, res, sizeof(res) - 1, &len, 5000) == 0) {
		res[len] = 0;
		v = field(res, "prio=");
	}
	if (kernel)
		setpriority(PRIO_PROCESS, tid, 0);
	popup_binding__destroy(b);
	return v;
}

TEST_F_TIMEOUT(all_models, local_calls, 150)
{
	static const char *const sets[] = { "work.dispatch=per-object", "work.threads=4",
					    NULL };
	struct local_arg a[4];
	struct pd p = { 0 };
	struct popup_client *cl;
	struct popup_binding *b;
	pthread_t t[4];
	char res[32];
	uint32_t len = 0;

	ASSERT_EQ(0, start_work_l(&p, sets, true));
	for (int i = 0; i < 4; i++) {
		a[i] = (struct local_arg){ .n = 150 };
		pthread_create(&t[i], NULL, local_incr, &a[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		EXPECT_EQ(0, a[i].bad);
	}
	cl = popup_client__open(NULL);
	ASSERT_EQ(0, popup_get_error(cl));
	b = import_work(cl, 0);
	ASSERT_NE(NULL, b);
	ASSERT_EQ(0, popup_binding__call(b, M_GET, "lk", 2, res, sizeof(res) - 1, &len, 5000));
	res[len] = 0;
	EXPECT_EQ(4 * 150, strtol(res, NULL, 10));
	popup_binding__destroy(b);
	EXPECT_EQ(5, local_prio(cl, 5, M_WAIT));	/* asked, allowed */
	EXPECT_EQ(10, local_prio(cl, 50, M_WAIT));	/* capped at max_priority */
	/* Clamped to the scale; nice stops at 19. */
	EXPECT_EQ(popup_client__backend(cl) == POPUP_BACKEND_KERNEL ? -19 : -20,
		  local_prio(cl, -30, M_WAIT));
	EXPECT_EQ(0, local_prio(cl, 0, M_WAIT));	/* none asked: the method's */
	EXPECT_EQ(10, local_prio(cl, 0, M_URGENT));
	EXPECT_GE(pd_stat(&p, "svc name=work", "local_calls"), 4 * 150);
	popup_client__close(cl);
	EXPECT_EQ(0, pd_stop(&p, 20000));
	EXPECT_TRUE(pd_log_clean(&p));
	pd_kill(&p);
}

struct lp_arg {
	pthread_t t;
	int prio;
	const char *arg;
	long seq;
};

/* One local "wait" call at priority @prio (import priority, or nice). */
static void *lp_thread(void *arg)
{
	struct lp_arg *a = arg;
	struct popup_client *cl = popup_client__open(NULL);
	bool kernel = !popup_get_error(cl) &&
		      popup_client__backend(cl) == POPUP_BACKEND_KERNEL;
	struct popup_binding *b = popup_get_error(cl) ? NULL : import_work(cl, a->prio);
	char res[128];
	uint32_t len = 0;

	a->seq = -1;
	if (kernel)
		setpriority(PRIO_PROCESS, (pid_t)syscall(SYS_gettid), -a->prio);
	if (b && popup_binding__call(b, M_WAIT, a->arg, strlen(a->arg), res, sizeof(res) - 1,
				     &len, 20000) == 0) {
		res[len] = 0;
		a->seq = field(res, "seq=");
	}
	if (b)
		popup_binding__destroy(b);
	if (!popup_get_error(cl))
		popup_client__close(cl);
	return NULL;
}

static bool wait_stat(const struct pd *p, const char *key, long n)
{
	for (int i = 0; i < 1000; i++) {
		if (pd_stat(p, "svc name=work", key) >= n)
			return true;
		usleep(10000);
	}
	return false;
}

/*
 * Local callers' queue (libpopup's, one handler thread): a blocker, then
 * one low call queued before 12 high ones. Highs go first; the low one
 * is passed over 8 times (user_server.c's AGE_SKIPS), then runs.
 */
TEST_F_TIMEOUT(all_models, local_priority, 150)
{
	static const char *const sets[] = { "work.dispatch=popup", "work.threads=1",
					    "work.min_threads=1", NULL };
	struct lp_arg blk = { .prio = 0, .arg = "3000" }, low = { .prio = -5, .arg = "1" };
	struct lp_arg high[12];
	struct popup_client *cl;
	bool kernel;
	struct pd p = { 0 };

	ASSERT_EQ(0, start_work_l(&p, sets, true));
	cl = popup_client__open(NULL);
	ASSERT_EQ(0, popup_get_error(cl));
	kernel = popup_client__backend(cl) == POPUP_BACKEND_KERNEL;
	popup_client__close(cl);
	pthread_create(&blk.t, NULL, lp_thread, &blk);
	ASSERT_TRUE(wait_stat(&p, "local_busy", 1));
	pthread_create(&low.t, NULL, lp_thread, &low);
	if (!kernel)
		ASSERT_TRUE(wait_stat(&p, "local_queued", 1));
	usleep(20000);
	for (int i = 0; i < 12; i++) {
		high[i] = (struct lp_arg){ .prio = 5, .arg = "1" };
		pthread_create(&high[i].t, NULL, lp_thread, &high[i]);
		if (!kernel)
			ASSERT_TRUE(wait_stat(&p, "local_queued", 2 + i));
		usleep(20000);
	}
	pthread_join(blk.t, NULL);
	pthread_join(low.t, NULL);
	for (int i = 0; i < 12; i++) {
		pthread_join(high[i].t, NULL);
		EXPECT_GT(high[i].seq, blk.seq);
	}
	TH_LOG("%s backend: blocker seq %ld, low seq %ld, first high seq %ld",
	       kernel ? "kernel" : "user", blk.seq, low.seq, high[0].seq);
	EXPECT_EQ(1, blk.seq);
	EXPECT_LT(high[0].seq, low.seq);		/* priority first */
	if (!kernel)
		EXPECT_EQ(10, low.seq);		/* 8 passes, then the low one */
	EXPECT_EQ(0, pd_stop(&p, 20000));
	EXPECT_TRUE(pd_log_clean(&p));
	pd_kill(&p);
}

TEST(bad_config)
{
	static const char *const bad1[] = { "work.dispatch=threads", NULL };
	static const char *const bad2[] = { "work.max_priority=99", NULL };
	static const char *const bad3[] = { "sleep.dispatch=inline", NULL };
	struct pd p = { 0 };

	EXPECT_EQ(-ECHILD, start_work(&p, bad1));
	pd_kill(&p);
	memset(&p, 0, sizeof(p));
	EXPECT_EQ(-ECHILD, start_work(&p, bad2));
	pd_kill(&p);
	memset(&p, 0, sizeof(p));
	EXPECT_EQ(-ECHILD, start_work(&p, bad3));
	pd_kill(&p);
}

TEST_HARNESS_MAIN
