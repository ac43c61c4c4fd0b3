// SPDX-License-Identifier: GPL-2.0
/*
 * libpopup calls, end to end through the public API: a server exports a
 * small interface and runs it in a thread of the test process, and
 * clients (threads of the test, or forked processes) import and call it.
 *
 * Each case checks results byte for byte and errors by errno: echo and
 * add with their results, caller credentials as the server sees them,
 * zero-copy slot calls, one-way calls and their quota, timeouts, many
 * calls from several processes, and every input the API must refuse
 * (overlong or empty names, unknown services and methods, oversized
 * arguments and results, one-way/two-way mix-ups, bad slots and options).
 *
 * The backend is libpopup's choice: natively the userspace one; in the VM
 * with popup.ko loaded, run it with POPUP_BACKEND=kernel. Where the
 * backends legitimately differ (see popup.h), each case checks what the
 * backend in use documents.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <popup/popup.h>

#include "kselftest_harness.h"

enum {
	M_ECHO = 1,
	M_ADD,
	M_CREDS,
	M_BLOCK,	/* waits until the test releases it */
	M_COUNT,	/* one-way: adds its argument to a counter */
	M_OVERFLOW,	/* claims a result longer than max_res */
	M_SLEEP,	/* one-way: blocks like M_BLOCK */
};

#define ECHO_MAX	4096

struct creds_res {
	int32_t pid;
	uint32_t uid, gid;
	int32_t cpu, priority;
	uint32_t flags;
	uint64_t deadline_ns;
};

/* Handler-side state: the server runs in this process. */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int entered;
	bool release;
	atomic_ullong count;
} g = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER };

static int h_echo(struct popup_request *req)
{
	memcpy(req->res, req->arg, req->arg_len);
	req->res_len = req->arg_len;
	return (int)req->arg_len;
}

static int h_add(struct popup_request *req)
{
	const uint32_t *a = req->arg;
	uint32_t sum;

	if (req->arg_len != 2 * sizeof(uint32_t))
		return -EINVAL;
	sum = a[0] + a[1];
	memcpy(req->res, &sum, sizeof(sum));
	req->res_len = sizeof(sum);
	return 0;
}

static int h_creds(struct popup_request *req)
{
	struct creds_res r = {
		.pid = req->caller_pid, .uid = req->caller_uid,
		.gid = req->caller_gid, .cpu = req->cpu,
		.priority = req->priority, .flags = req->flags,
		.deadline_ns = req->deadline_ns,
	};

	memcpy(req->res, &r, sizeof(r));
	req->res_len = sizeof(r);
	return 7;
}

static int h_block(struct popup_request *req)
{
	pthread_mutex_lock(&g.lock);
	g.entered++;
	pthread_cond_broadcast(&g.cond);
	while (!g.release)
		pthread_cond_wait(&g.cond, &g.lock);
	pthread_mutex_unlock(&g.lock);
	return 0;
}

static int h_count(struct popup_request *req)
{
	uint32_t v;

	memcpy(&v, req->arg, sizeof(v));
	atomic_fetch_add(&g.count, v);
	return 0;
}

static int h_overflow(struct popup_request *req)
{
	req->res_len = req->res_cap + 1;
	return 0;
}

static const struct popup_method_def methods[] = {
	{ .id = M_ECHO, .max_arg = ECHO_MAX, .max_res = ECHO_MAX, .name = "echo", .handler = h_echo },
	{ .id = M_ADD, .max_arg = 8, .max_res = 4, .name = "add", .handler = h_add },
	{ .id = M_CREDS, .max_arg = 0, .max_res = sizeof(struct creds_res), .name = "creds", .handler = h_creds },
	{ .id = M_BLOCK, .max_arg = 0, .max_res = 0, .name = "block", .handler = h_block },
	{ .id = M_COUNT, .flags = POPUP_METHOD_ONEWAY, .max_arg = 4, .name = "count", .handler = h_count },
	{ .id = M_OVERFLOW, .max_arg = 0, .max_res = 16, .name = "overflow", .handler = h_overflow },
	{ .id = M_SLEEP, .flags = POPUP_METHOD_ONEWAY, .max_arg = 0, .name = "sleep", .handler = h_block },
};

static bool is_kernel(const struct popup_client *cl)
{
	return popup_client__backend(cl) == POPUP_BACKEND_KERNEL;
}

static void release_blocked(void)
{
	pthread_mutex_lock(&g.lock);
	g.release = true;
	pthread_cond_broadcast(&g.cond);
	pthread_mutex_unlock(&g.lock);
}

/* Wait until @n handlers entered M_BLOCK, up to 10 s; returns the count. */
static int wait_entered(int n)
{
	struct timespec ts;
	int got;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 10;
	pthread_mutex_lock(&g.lock);
	while (g.entered < n &&
	       pthread_cond_timedwait(&g.cond, &g.lock, &ts) != ETIMEDOUT)
		;
	got = g.entered;
	pthread_mutex_unlock(&g.lock);
	return got;
}

static void *run_server(void *arg)
{
	return (void *)(long)popup_server__run(arg);
}

static void unique_name(char *buf, size_t size, const char *tag)
{
	static int n;

	snprintf(buf, size, "test.%s.%d.%d", tag, getpid(), n++);
}

FIXTURE(call) {
	char name[POPUP_NAME_MAX];
	struct popup_server *srv;
	pthread_t runner;
	struct popup_client *cl;
	struct popup_binding *b;
};

FIXTURE_SETUP(call)
{
	struct popup_pool_attr pool = {
		.min_idle = 1, .max_idle = 4, .increment = 1, .max_threads = 4,
		.queue_limit = 32, .idle_timeout_ms = 10000,
	};
	POPUP_OPTS(popup_server_opts, sopts, .pool = &pool);
	POPUP_OPTS(popup_import_opts, iopts, .slots = 4, .priority = 3);
	struct popup_server_stats st = { 0 };

	unique_name(self->name, sizeof(self->name), "call");
	self->srv = popup_server__create(self->name, 1, methods, ARRAY_SIZE(methods), &sopts);
	ASSERT_NE(NULL, self->srv) TH_LOG("create: %s", strerror(errno));
	ASSERT_EQ(0, pthread_create(&self->runner, NULL, run_server, self->srv));
	/* The runner is in popup_server__run() once the pool has a thread. */
	for (int i = 0; i < 2000 && !st.idle; i++) {
		ASSERT_EQ(0, popup_server__stats(self->srv, &st));
		usleep(5000);
	}
	ASSERT_EQ(1, st.idle);
	self->cl = popup_client__open(NULL);
	ASSERT_NE(NULL, self->cl);
	self->b = popup_client__import(self->cl, self->name, 1, &iopts);
	ASSERT_NE(NULL, self->b) TH_LOG("import: %s", strerror(errno));
	TH_LOG("backend %s", popup_backend_name(popup_server__backend(self->srv)));
}

FIXTURE_TEARDOWN(call)
{
	void *ret;

	release_blocked();
	popup_binding__destroy(self->b);
	popup_client__close(self->cl);
	if (self->srv) {
		popup_server__stop(self->srv);
		pthread_join(self->runner, &ret);
		EXPECT_EQ(0, (long)ret);
		popup_server__destroy(self->srv);
	}
}

TEST_F(call, echo_and_add)
{
	uint8_t arg[ECHO_MAX], res[ECHO_MAX];
	uint32_t ab[2] = { 40, 2 }, sum = 0, len;

	for (int i = 0; i < ECHO_MAX; i++)
		arg[i] = i * 7 + 3;
	for (uint32_t n = 0; n <= ECHO_MAX; n += ECHO_MAX / 8) {
		memset(res, 0, sizeof(res));
		ASSERT_EQ((int)n, popup_binding__call(self->b, M_ECHO, arg, n, res,
						      sizeof(res), &len, 0));
		ASSERT_EQ(n, len);
		ASSERT_EQ(0, memcmp(arg, res, n));
	}
	ASSERT_EQ(0, popup_binding__call(self->b, M_ADD, ab, sizeof(ab), &sum,
					 sizeof(sum), &len, 1000));
	ASSERT_EQ(4, len);
	ASSERT_EQ(42, sum);
	/* The handler's own error status comes back verbatim. */
	ASSERT_EQ(-EINVAL, popup_binding__call(self->b, M_ADD, ab, 4, &sum,
					       sizeof(sum), &len, 0));
}

TEST_F(call, caller_credentials)
{
	struct creds_res r;
	uint32_t len;

	ASSERT_EQ(7, popup_binding__call(self->b, M_CREDS, NULL, 0, &r, sizeof(r),
					 &len, 5000));
	ASSERT_EQ(sizeof(r), len);
	EXPECT_EQ(getpid(), r.pid);
	EXPECT_EQ(getuid(), r.uid);
	EXPECT_EQ(getgid(), r.gid);
	EXPECT_EQ(0, r.flags);
	EXPECT_GE(r.cpu, 0);
	if (is_kernel(self->cl)) {
		/* The module stamps the kernel priority and no deadline. */
		EXPECT_EQ(120 + getpriority(PRIO_PROCESS, 0), r.priority);
		EXPECT_EQ(0, r.deadline_ns);
		return;
	}
	EXPECT_EQ(3, r.priority);
	EXPECT_NE(0, r.deadline_ns);
	/* No timeout, no deadline. */
	ASSERT_EQ(7, popup_binding__call(self->b, M_CREDS, NULL, 0, &r, sizeof(r),
					 &len, POPUP_TIMEOUT_INFINITE));
	EXPECT_EQ(0, r.deadline_ns);
}

TEST_F(call, zero_copy_slots)
{
	uint32_t size, len;
	int slots[4];
	uint8_t *p;

	ASSERT_EQ(4, popup_binding__slots(self->b));
	ASSERT_GE(popup_binding__slot_size(self->b), ECHO_MAX);
	for (int i = 0; i < 4; i++) {
		slots[i] = popup_binding__slot_acquire(self->b, 0);
		ASSERT_GE(slots[i], 0);
	}
	/* All four are taken: a fifth waits and times out. */
	ASSERT_EQ(-ETIMEDOUT, popup_binding__slot_acquire(self->b, 50));
	for (int i = 0; i < 4; i++) {
		p = popup_binding__slot(self->b, slots[i], &size);
		ASSERT_NE(NULL, p);
		ASSERT_EQ(popup_binding__slot_size(self->b), size);
		memset(p, 'a' + i, 100);
		ASSERT_EQ(100, popup_binding__call_slot(self->b, slots[i], M_ECHO,
							100, &len, 0));
		ASSERT_EQ(100, len);
		for (int j = 0; j < 100; j++)
			ASSERT_EQ('a' + i, p[j]);
	}
	ASSERT_EQ(-EINVAL, popup_binding__call_slot(self->b, 4, M_ECHO, 1, &len, 0));
	ASSERT_EQ(NULL, popup_binding__slot(self->b, 4, &size));
	ASSERT_EQ(-EINVAL, popup_get_error(NULL));
	for (int i = 0; i < 4; i++)
		popup_binding__slot_release(self->b, slots[i]);
	ASSERT_GE(popup_binding__slot_acquire(self->b, 0), 0);
}

TEST_F(call, oneway)
{
	unsigned long long want = 0;
	struct popup_server_stats st;
	int i, ret;

	for (i = 1; i <= 1000; i++) {
		uint32_t v = i;

		/* Past the quota, wait for the server to catch up. */
		while ((ret = popup_binding__call_oneway(self->b, M_COUNT, &v, 4)) == -EAGAIN)
			usleep(1000);
		ASSERT_EQ(0, ret);
		want += v;
	}
	for (i = 0; i < 10000 && atomic_load(&g.count) != want; i++)
		usleep(1000);
	ASSERT_EQ(want, atomic_load(&g.count));
	ASSERT_EQ(0, popup_server__stats(self->srv, &st));
	EXPECT_GE(st.calls, 1000);
}

TEST_F(call, oneway_quota)
{
	int accepted = 0, ret = 0;

	/* Handlers block: accepted one-way calls pile up to the quota. */
	for (int i = 0; i < 1000; i++) {
		ret = popup_binding__call_oneway(self->b, M_SLEEP, NULL, 0);
		if (ret)
			break;
		accepted++;
	}
	ASSERT_EQ(-EAGAIN, ret);
	ASSERT_GE(accepted, 1);
	TH_LOG("one-way quota: %d accepted", accepted);
	ASSERT_GE(wait_entered(1), 1);
	release_blocked();
	ASSERT_EQ(accepted, wait_entered(accepted));
	/* Once they ran, the quota is free again. */
	for (int i = 0; i < 1000; i++) {
		ret = popup_binding__call_oneway(self->b, M_SLEEP, NULL, 0);
		if (ret != -EAGAIN)
			break;
		usleep(1000);
	}
	ASSERT_EQ(0, ret);
}

TEST_F(call, timeout)
{
	struct popup_server_stats st;
	uint32_t ab[2] = { 1, 2 }, sum, len;
	struct timespec t0, t1;
	long ms;

	/* A handler has the call: the module says so (ETIME). */
	int want = is_kernel(self->cl) ? -ETIME : -ETIMEDOUT;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	ASSERT_EQ(want, popup_binding__call(self->b, M_BLOCK, NULL, 0, NULL,
					    0, NULL, 200));
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	EXPECT_GE(ms, 190);
	ASSERT_EQ(1, wait_entered(1));
	release_blocked();
	/* The binding is still good, and the slot was given back. */
	for (int i = 0; i < 8; i++)
		ASSERT_EQ(0, popup_binding__call(self->b, M_ADD, ab, 8, &sum, 4, &len, 0));
	ASSERT_EQ(3, sum);
	/*
	 * The late result of the timed-out call was discarded. The kernel
	 * backend learns it when that thread's REPLY_WAIT returns, which
	 * may be later.
	 */
	for (int i = 0; i < 1000; i++) {
		ASSERT_EQ(0, popup_server__stats(self->srv, &st));
		if (st.cancelled)
			break;
		usleep(1000);
	}
	if (is_kernel(self->cl)) {
		EXPECT_LE(st.cancelled, 1);
	} else {
		EXPECT_EQ(1, st.cancelled);
	}
}

/* Run @n calls of echo and add with checked results; return failures. */
static int client_loop(const char *name, int n, int seed)
{
	struct popup_client *cl = popup_client__open(NULL);
	struct popup_binding *b;
	uint8_t arg[256], res[256];
	int fails = 0;

	b = popup_client__import(cl, name, 1, NULL);
	if (!b)
		return n;
	for (int i = 0; i < n; i++) {
		uint32_t ab[2] = { i, seed }, sum = 0, len = 0, alen = (i * 13) % 256;

		for (uint32_t j = 0; j < alen; j++)
			arg[j] = seed + i + j;
		if (popup_binding__call(b, M_ECHO, arg, alen, res, sizeof(res), &len, 10000) != (int)alen ||
		    len != alen || memcmp(arg, res, alen))
			fails++;
		if (popup_binding__call(b, M_ADD, ab, 8, &sum, 4, &len, 10000) ||
		    sum != (uint32_t)(i + seed))
			fails++;
	}
	popup_binding__destroy(b);
	popup_client__close(cl);
	return fails;
}

TEST_F_TIMEOUT(call, many_processes, 120)
{
	enum { NPROC = 4, NCALLS = 2500 };
	struct popup_server_stats st;
	pid_t pids[NPROC];
	int status;

	for (int i = 0; i < NPROC; i++) {
		pids[i] = fork();
		ASSERT_GE(pids[i], 0);
		if (!pids[i])
			_exit(client_loop(self->name, NCALLS, i * 1000) ? 1 : 0);
	}
	for (int i = 0; i < NPROC; i++) {
		ASSERT_EQ(pids[i], waitpid(pids[i], &status, 0));
		EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
			TH_LOG("client %d: status %#x", i, status);
	}
	ASSERT_EQ(0, popup_server__stats(self->srv, &st));
	EXPECT_GE(st.calls, 2 * NPROC * NCALLS);
	EXPECT_LE(st.max_threads_seen, 4);
}

TEST_F(call, bad_calls)
{
	uint8_t buf[ECHO_MAX + 1];
	uint32_t len = 123, sum;
	char msg[128];

	memset(buf, 0, sizeof(buf));
	ASSERT_EQ(-EOPNOTSUPP, popup_binding__call(self->b, 999, buf, 1, buf, 1, &len, 0));
	ASSERT_EQ(-EMSGSIZE, popup_binding__call(self->b, M_ECHO, buf, ECHO_MAX + 1,
						 buf, sizeof(buf), &len, 0));
	ASSERT_EQ(-EOPNOTSUPP, popup_binding__call_oneway(self->b, 999, buf, 4));
	if (is_kernel(self->cl)) {
		/* The module owns the method table: it makes a call to a
		 * one-way method one-way and lets any method be called
		 * one-way.
		 */
		ASSERT_EQ(0, popup_binding__call(self->b, M_COUNT, buf, 4, NULL, 0, NULL, 0));
		ASSERT_EQ(0, popup_binding__call_oneway(self->b, M_ECHO, buf, 4));
	} else {
		ASSERT_EQ(-EINVAL, popup_binding__call(self->b, M_COUNT, buf, 4, NULL, 0, NULL, 0));
		ASSERT_EQ(-EINVAL, popup_binding__call_oneway(self->b, M_ECHO, buf, 4));
	}
	ASSERT_EQ(-EMSGSIZE, popup_binding__call_oneway(self->b, M_COUNT, buf, 5));
	ASSERT_EQ(-EINVAL, popup_binding__call(self->b, M_ECHO, NULL, 4, buf, 4, &len, 0));
	ASSERT_EQ(-EINVAL, popup_binding__call(NULL, M_ECHO, buf, 4, buf, 4, &len, 0));
	/* The result did not fit: the call ran, the length tells how much. */
	ASSERT_EQ(-ENOBUFS, popup_binding__call(self->b, M_ECHO, buf, 100, buf, 10, &len, 0));
	ASSERT_EQ(100, len);
	ASSERT_EQ(-EOVERFLOW, popup_binding__call(self->b, M_OVERFLOW, NULL, 0, buf,
						  sizeof(buf), &len, 0));
	ASSERT_EQ(0, len);
	/* None of this broke the binding. */
	ASSERT_EQ(0, popup_binding__call(self->b, M_ADD, buf, 8, &sum, 4, &len, 0));
	ASSERT_EQ(0, popup_strerror(-ECONNRESET, msg, sizeof(msg)));
	ASSERT_NE(NULL, strstr(msg, "withdrawn"));
}

TEST_F(call, bad_exports_and_imports)
{
	char longname[POPUP_NAME_MAX + 1], okname[POPUP_NAME_MAX];
	struct popup_method_def bad[2] = { methods[0], methods[0] };
	struct popup_pool_attr pool = { .min_idle = 5, .max_idle = 5, .increment = 1, .max_threads = 2 };
	POPUP_OPTS(popup_server_opts, popts, .pool = &pool);
	POPUP_OPTS(popup_import_opts, iopts, .slots = POPUP_MAX_SLOTS + 1);
	struct popup_server *s;
	struct {
		struct popup_import_opts o;
		uint64_t future;
	} big = { .o = { .sz = sizeof(big) }, .future = 1 };

	memset(longname, 'x', POPUP_NAME_MAX);
	longname[POPUP_NAME_MAX] = 0;
	memcpy(okname, longname, POPUP_NAME_MAX - 1);
	okname[POPUP_NAME_MAX - 1] = 0;
	okname[0] = 'a' + getpid() % 26;

#define EXPECT_ERRNO(err, expr) do {					\
		errno = 0;						\
		EXPECT_EQ(NULL, (expr));				\
		EXPECT_EQ(err, errno);					\
	} while (0)
	EXPECT_ERRNO(ENAMETOOLONG, popup_server__create(longname, 1, methods, 1, NULL));
	EXPECT_ERRNO(EINVAL, popup_server__create("", 1, methods, 1, NULL));
	EXPECT_ERRNO(EINVAL, popup_server__create(NULL, 1, methods, 1, NULL));
	EXPECT_ERRNO(EINVAL, popup_server__create("has space", 1, methods, 1, NULL));
	EXPECT_ERRNO(EINVAL, popup_server__create("ctl\x01", 1, methods, 1, NULL));
	EXPECT_ERRNO(EINVAL, popup_server__create("x", 1, NULL, 1, NULL));
	EXPECT_ERRNO(EINVAL, popup_server__create("x", 1, methods, 0, NULL));
	EXPECT_ERRNO(EINVAL, popup_server__create("x", 1, bad, 2, NULL));
	bad[0].max_arg = POPUP_MAX_MSG + 1;
	EXPECT_ERRNO(EINVAL, popup_server__create("x", 1, bad, 1, NULL));
	bad[0] = methods[4];
	bad[0].max_res = 4;	/* one-way with a result */
	EXPECT_ERRNO(EINVAL, popup_server__create("x", 1, bad, 1, NULL));
	bad[0] = methods[0];
	bad[0].handler = NULL;
	EXPECT_ERRNO(EINVAL, popup_server__create("x", 1, bad, 1, NULL));
	EXPECT_ERRNO(EINVAL, popup_server__create("x", 1, methods, 1, &popts));
	EXPECT_ERRNO(EEXIST, popup_server__create(self->name, 1, methods, 1, NULL));
	/* Same name, other version: a different service. */
	s = popup_server__create(self->name, 2, methods, 1, NULL);
	EXPECT_NE(NULL, s);
	popup_server__destroy(s);
	s = popup_server__create(okname, 1, methods, 1, NULL);
	EXPECT_NE(NULL, s) TH_LOG("63-byte name: %s", strerror(errno));
	popup_server__destroy(s);

	EXPECT_ERRNO(ENOENT, popup_client__import(self->cl, "test.nobody", 1, NULL));
	EXPECT_ERRNO(ENOENT, popup_client__import(self->cl, self->name, 2, NULL));
	EXPECT_ERRNO(ENAMETOOLONG, popup_client__import(self->cl, longname, 1, NULL));
	EXPECT_ERRNO(EINVAL, popup_client__import(self->cl, "", 1, NULL));
	EXPECT_ERRNO(EINVAL, popup_client__import(self->cl, "a b", 1, NULL));
	EXPECT_ERRNO(EINVAL, popup_client__import(self->cl, self->name, 1, &iopts));
	EXPECT_ERRNO(EINVAL, popup_client__import(self->cl, self->name, 1, &big.o));
	big.future = 0;	/* a newer caller's zeroed extension is fine */
	popup_binding__destroy(popup_client__import(self->cl, self->name, 1, &big.o));
	EXPECT_EQ(-EBUSY, popup_server__run(self->srv));
}

TEST_F(call, withdraw_resets_callers)
{
	uint32_t ab[2] = { 1, 1 }, sum, len;
	void *ret;

	ASSERT_EQ(0, popup_binding__call(self->b, M_ADD, ab, 8, &sum, 4, &len, 0));
	popup_server__stop(self->srv);
	pthread_join(self->runner, &ret);
	EXPECT_EQ(0, (long)ret);
	/* Stopped means withdrawn: it does not run again. */
	EXPECT_EQ(-ENOENT, popup_server__run(self->srv));
	popup_server__destroy(self->srv);
	self->srv = NULL;
	ASSERT_EQ(-ECONNRESET, popup_binding__call(self->b, M_ADD, ab, 8, &sum, 4, &len, 0));
	/* Dead for good, on every slot. */
	for (int i = 0; i < 8; i++)
		ASSERT_EQ(-ECONNRESET, popup_binding__call(self->b, M_ADD, ab, 8, &sum, 4, &len, 0));
	ASSERT_EQ(-ECONNRESET, popup_binding__call_oneway(self->b, M_COUNT, ab, 4));
	errno = 0;
	ASSERT_EQ(NULL, popup_client__import(self->cl, self->name, 1, NULL));
	ASSERT_EQ(ENOENT, errno);
}

TEST_HARNESS_MAIN
