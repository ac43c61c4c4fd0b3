// SPDX-License-Identifier: GPL-2.0
/*
 * libpopup pool semantics and lifetimes, through the public API.
 *
 * Pool cases run the server in a thread of the test and drive it with
 * handlers that block until released, so every step is ordered by
 * observed state (calls entered, threads, queued), never by sleeping:
 *   growth    calls arriving one by one while handlers block grow the pool
 *             from min_idle to max_threads, one spawn request at a time;
 *             then after the idle timeout it shrinks back to min_idle
 *   queue     with every thread busy, calls queue up to queue_limit and the
 *             next one fails with -EAGAIN at once
 * Lifetime cases kill one side with SIGKILL in the middle of calls:
 *   server    the server process dies while handlers run and calls queue:
 *             every caller returns -ECONNRESET, none hangs, and the name is
 *             gone (-ENOENT)
 *   client    clients die while one's call runs and another's queues: the
 *             queued call is dropped, the running one's result discarded,
 *             and the handler thread serves the next caller
 * Forked clients stay single-threaded: a child of a multithreaded process
 * that creates threads can deadlock under ASan.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <popup/popup.h>

#include "kselftest_harness.h"

enum { M_BLOCK = 1, M_ADD };

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int entered;
	bool release;
	int notify_fd;		/* server process: report entries here */
} g = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, .notify_fd = -1 };

static int h_block(struct popup_request *req)
{
	pthread_mutex_lock(&g.lock);
	g.entered++;
	pthread_cond_broadcast(&g.cond);
	if (g.notify_fd >= 0 && write(g.notify_fd, "E", 1) != 1)
		abort();
	while (!g.release)
		pthread_cond_wait(&g.cond, &g.lock);
	pthread_mutex_unlock(&g.lock);
	return 0;
}

static int h_add(struct popup_request *req)
{
	const uint32_t *a = req->arg;
	uint32_t sum = a[0] + a[1];

	memcpy(req->res, &sum, sizeof(sum));
	req->res_len = sizeof(sum);
	return 0;
}

static const struct popup_method_def methods[] = {
	{ .id = M_BLOCK, .name = "block", .handler = h_block },
	{ .id = M_ADD, .max_arg = 8, .max_res = 4, .name = "add", .handler = h_add },
};

static bool is_kernel(const struct popup_server *srv)
{
	return popup_server__backend(srv) == POPUP_BACKEND_KERNEL;
}

static void release_blocked(void)
{
	pthread_mutex_lock(&g.lock);
	g.release = true;
	pthread_cond_broadcast(&g.cond);
	pthread_mutex_unlock(&g.lock);
}

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

/* Poll the server's stats until @pred holds, up to 10 s. */
#define WAIT_STATS(srv, st, pred) ({					\
	bool __ok = false;						\
	for (int __i = 0; __i < 2000 && !__ok; __i++) {			\
		popup_server__stats(srv, &(st));			\
		__ok = (pred);						\
		if (!__ok)						\
			usleep(5000);					\
	}								\
	__ok;								\
})

static void *run_server(void *arg)
{
	return (void *)(long)popup_server__run(arg);
}

struct caller {
	pthread_t t;
	struct popup_binding *b;
	uint32_t method;
	int ret;
	atomic_bool done;
};

static void *caller_thread(void *arg)
{
	struct caller *c = arg;
	uint32_t ab[2] = { 1, 2 }, sum, len;

	c->ret = popup_binding__call(c->b, c->method, ab, c->method == M_ADD ? 8 : 0,
				     &sum, sizeof(sum), &len, POPUP_TIMEOUT_INFINITE);
	atomic_store(&c->done, true);
	return NULL;
}

static void start_caller(struct caller *c, struct popup_binding *b, uint32_t method)
{
	c->b = b;
	c->method = method;
	atomic_init(&c->done, false);
	if (pthread_create(&c->t, NULL, caller_thread, c))
		abort();
}

static void unique_name(char *buf, size_t size, const char *tag)
{
	static int n;

	snprintf(buf, size, "test.%s.%d.%d", tag, getpid(), n++);
}

FIXTURE(pool) {
	char name[POPUP_NAME_MAX];
	struct popup_server *srv;
	pthread_t runner;
	bool running;
	struct popup_client *cl;
	struct popup_binding *b;
};

FIXTURE_VARIANT(pool) {
	struct popup_pool_attr pool;
};

FIXTURE_VARIANT_ADD(pool, grow) {
	.pool = { .min_idle = 1, .max_idle = 4, .increment = 1, .max_threads = 4,
		  .queue_limit = 2, .idle_timeout_ms = 300 },
};

FIXTURE_VARIANT_ADD(pool, grow_by_two) {
	.pool = { .min_idle = 2, .max_idle = 6, .increment = 2, .max_threads = 6,
		  .queue_limit = 2, .idle_timeout_ms = 300 },
};

FIXTURE_SETUP(pool)
{
	POPUP_OPTS(popup_server_opts, sopts, .pool = &variant->pool);
	POPUP_OPTS(popup_import_opts, iopts, .slots = 16);
	struct popup_server_stats st;

	unique_name(self->name, sizeof(self->name), "pool");
	self->srv = popup_server__create(self->name, 1, methods, ARRAY_SIZE(methods), &sopts);
	ASSERT_NE(NULL, self->srv) TH_LOG("create: %s", strerror(errno));
	ASSERT_EQ(0, pthread_create(&self->runner, NULL, run_server, self->srv));
	self->running = true;
	/* The runner is in popup_server__run() once the pool has a thread. */
	ASSERT_TRUE(WAIT_STATS(self->srv, st, st.idle == variant->pool.min_idle));
	self->cl = popup_client__open(NULL);
	ASSERT_NE(NULL, self->cl);
	self->b = popup_client__import(self->cl, self->name, 1, &iopts);
	ASSERT_NE(NULL, self->b) TH_LOG("import: %s", strerror(errno));
}

FIXTURE_TEARDOWN(pool)
{
	release_blocked();
	popup_binding__destroy(self->b);
	popup_client__close(self->cl);
	if (self->running) {
		popup_server__stop(self->srv);
		pthread_join(self->runner, NULL);
	}
	popup_server__destroy(self->srv);
}

/*
 * Calls arrive one at a time, each once the previous one runs, so the
 * pool must grow to max_threads; then queue_limit more wait; one more
 * fails with -EAGAIN. Released, everything completes, and after the idle
 * timeout the pool is back at min_idle.
 */
TEST_F_TIMEOUT(pool, grow_queue_shrink, 60)
{
	const struct popup_pool_attr *p = &variant->pool;
	int nrun = p->max_threads, nq = p->queue_limit;
	struct popup_server_stats st;
	struct caller c[16];
	uint32_t ab[2] = { 2, 3 }, sum, len;

	ASSERT_TRUE(WAIT_STATS(self->srv, st, st.idle == p->min_idle))
		TH_LOG("idle %u, want %u", st.idle, p->min_idle);
	EXPECT_EQ(p->min_idle, st.threads);
	for (int i = 0; i < nrun; i++) {
		start_caller(&c[i], self->b, M_BLOCK);
		ASSERT_EQ(i + 1, wait_entered(i + 1));
	}
	ASSERT_TRUE(WAIT_STATS(self->srv, st, st.busy == (uint32_t)nrun));
	EXPECT_EQ(nrun, st.threads);
	EXPECT_EQ(0, st.idle);
	for (int i = nrun; i < nrun + nq; i++) {
		start_caller(&c[i], self->b, M_BLOCK);
		ASSERT_TRUE(WAIT_STATS(self->srv, st, st.queued == (uint32_t)(i - nrun + 1)));
	}
	/* Every thread busy, the queue full: refused at once. */
	ASSERT_EQ(-EAGAIN, popup_binding__call(self->b, M_ADD, ab, 8, &sum, 4, &len, 0));
	ASSERT_EQ(0, popup_server__stats(self->srv, &st));
	EXPECT_EQ(nrun, st.threads);
	EXPECT_EQ(nrun, st.max_threads_seen);
	EXPECT_EQ(nq, st.queued);
	/* The module counts refusals only on the caller's side. */
	if (!is_kernel(self->srv))
		EXPECT_GE(st.rejected, 1);
	EXPECT_EQ(nrun, wait_entered(nrun));

	release_blocked();
	for (int i = 0; i < nrun + nq; i++) {
		pthread_join(c[i].t, NULL);
		EXPECT_EQ(0, c[i].ret) TH_LOG("caller %d: %d", i, c[i].ret);
	}
	EXPECT_EQ(nrun + nq, wait_entered(nrun + nq));
	ASSERT_EQ(0, popup_binding__call(self->b, M_ADD, ab, 8, &sum, 4, &len, 0));
	ASSERT_EQ(5, sum);
	/* Idle threads above min_idle retire after the idle timeout. */
	ASSERT_TRUE(WAIT_STATS(self->srv, st, st.threads == p->min_idle))
		TH_LOG("threads %u, want %u", st.threads, p->min_idle);
	EXPECT_EQ(p->min_idle, st.idle);
	EXPECT_GE(st.retired, nrun - p->min_idle);
	EXPECT_LE(st.max_threads_seen, p->max_threads);
}

/*
 * A caller in a loop keeps one thread busy at a time: after the pool has
 * settled, it must not retire threads only to spawn them again (steady
 * state costs no thread creation), though the idle timeout passes many
 * times meanwhile.
 */
TEST_F(pool, steady_no_spawns)
{
	uint32_t ab[2] = { 2, 3 }, sum, len;
	struct popup_server_stats st;
	uint64_t spawned, retired, end;
	struct timespec ts;
	int calls = 0;

	/* Settle: the first calls grow the pool by a spawn request, which
	 * the runner serves asynchronously; give it two idle periods. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	end = ts.tv_sec * 1000ull + ts.tv_nsec / 1000000 +
	      2ull * variant->pool.idle_timeout_ms;
	do {
		ASSERT_EQ(0, popup_binding__call(self->b, M_ADD, ab, 8, &sum, 4, &len, 0));
		clock_gettime(CLOCK_MONOTONIC, &ts);
	} while (ts.tv_sec * 1000ull + ts.tv_nsec / 1000000 < end);
	ASSERT_EQ(0, popup_server__stats(self->srv, &st));
	spawned = st.spawned;
	retired = st.retired;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	end = ts.tv_sec * 1000ull + ts.tv_nsec / 1000000 +
	      4ull * variant->pool.idle_timeout_ms;
	do {
		ASSERT_EQ(0, popup_binding__call(self->b, M_ADD, ab, 8, &sum, 4, &len, 0));
		calls++;
		clock_gettime(CLOCK_MONOTONIC, &ts);
	} while (ts.tv_sec * 1000ull + ts.tv_nsec / 1000000 < end);
	ASSERT_EQ(0, popup_server__stats(self->srv, &st));
	EXPECT_EQ(spawned, st.spawned) TH_LOG("%d calls: %llu spawned, %llu retired",
		calls, (unsigned long long)(st.spawned - spawned),
		(unsigned long long)(st.retired - retired));
	/* Retiring a thread that was truly spare (an increment's overshoot)
	 * is fine; only creating threads again is churn. */
}

/* set_pool applies to a running pool: a higher minimum spawns threads. */
TEST_F(pool, set_pool)
{
	struct popup_pool_attr np = variant->pool, got;
	struct popup_server_stats st;

	ASSERT_TRUE(WAIT_STATS(self->srv, st, st.idle == variant->pool.min_idle));
	np.min_idle = np.max_idle = np.max_threads;
	ASSERT_EQ(0, popup_server__set_pool(self->srv, &np));
	ASSERT_TRUE(WAIT_STATS(self->srv, st, st.idle == np.min_idle))
		TH_LOG("idle %u, want %u", st.idle, np.min_idle);
	ASSERT_EQ(0, popup_server__get_pool(self->srv, &got));
	ASSERT_EQ(0, memcmp(&np, &got, sizeof(np)));
	np.max_idle = 0;
	ASSERT_EQ(-EINVAL, popup_server__set_pool(self->srv, &np));
	ASSERT_EQ(0, popup_server__get_pool(self->srv, &got));
	ASSERT_EQ(np.max_threads, got.max_idle);
}

/* A client process that calls M_BLOCK once, from its only thread. */
static pid_t fork_blocked_client(const char *name)
{
	pid_t pid = fork();

	if (!pid) {
		struct popup_client *cl = popup_client__open(NULL);
		struct popup_binding *b = popup_client__import(cl, name, 1, NULL);

		if (!b)
			_exit(2);
		popup_binding__call(b, M_BLOCK, NULL, 0, NULL, 0, NULL, POPUP_TIMEOUT_INFINITE);
		_exit(3);
	}
	return pid;
}

/* Client processes die, one with its call running, one with it queued. */
TEST_F(pool, client_killed)
{
	struct popup_pool_attr one = {
		.min_idle = 1, .max_idle = 1, .increment = 1, .max_threads = 1,
		.queue_limit = 4, .idle_timeout_ms = 0,
	};
	struct popup_server_stats st;
	uint32_t ab[2] = { 4, 5 }, sum, len;
	pid_t running, queued;

	ASSERT_EQ(0, popup_server__set_pool(self->srv, &one));
	ASSERT_TRUE(WAIT_STATS(self->srv, st, st.threads == 1));
	running = fork_blocked_client(self->name);
	ASSERT_GE(running, 0);
	ASSERT_EQ(1, wait_entered(1));
	queued = fork_blocked_client(self->name);
	ASSERT_GE(queued, 0);
	ASSERT_TRUE(WAIT_STATS(self->srv, st, st.queued == 1));
	kill(queued, SIGKILL);
	kill(running, SIGKILL);
	ASSERT_EQ(queued, waitpid(queued, NULL, 0));
	ASSERT_EQ(running, waitpid(running, NULL, 0));
	/*
	 * The queued call goes with its caller, without running (the kernel
	 * backend's server never hears of it; the user one counts it).
	 */
	ASSERT_TRUE(WAIT_STATS(self->srv, st, st.queued == 0));
	release_blocked();
	/* The running call's result is discarded; the thread serves us next. */
	ASSERT_EQ(0, popup_binding__call(self->b, M_ADD, ab, 8, &sum, 4, &len, 5000));
	ASSERT_EQ(9, sum);
	ASSERT_TRUE(WAIT_STATS(self->srv, st, st.cancelled == (is_kernel(self->srv) ? 1 : 2)))
		TH_LOG("cancelled %llu", (unsigned long long)st.cancelled);
	EXPECT_EQ(1, wait_entered(1));
	EXPECT_EQ(1, st.threads);
}

/*
 * The server process dies with calls running and queued. No fixture: the
 * server is forked before this process has any thread.
 */
TEST(server_killed)
{
	enum { NCALLS = 6, NRUN = 4 };
	struct popup_pool_attr pp = {
		.min_idle = 1, .max_idle = NRUN, .increment = 1, .max_threads = NRUN,
		.queue_limit = 16, .idle_timeout_ms = 0,
	};
	POPUP_OPTS(popup_server_opts, so, .pool = &pp);
	POPUP_OPTS(popup_import_opts, io, .slots = NCALLS);
	char name[POPUP_NAME_MAX], ch;
	struct caller c[NCALLS];
	struct popup_client *cl;
	struct popup_binding *b;
	int pfd[2];
	pid_t pid;

	unique_name(name, sizeof(name), "victim");
	ASSERT_EQ(0, pipe(pfd));
	pid = fork();
	ASSERT_GE(pid, 0);
	if (!pid) {
		struct popup_server *s = popup_server__create(name, 1, methods, 2, &so);

		close(pfd[0]);
		g.notify_fd = pfd[1];
		if (!s || write(pfd[1], "R", 1) != 1)
			_exit(2);
		popup_server__run(s);
		_exit(3);
	}
	close(pfd[1]);
	ASSERT_EQ(1, read(pfd[0], &ch, 1));
	ASSERT_EQ('R', ch);
	cl = popup_client__open(NULL);
	ASSERT_NE(NULL, cl);
	b = popup_client__import(cl, name, 1, &io);
	ASSERT_NE(NULL, b);
	for (int i = 0; i < NCALLS; i++)
		start_caller(&c[i], b, M_BLOCK);
	for (int i = 0; i < NRUN; i++) {
		ASSERT_EQ(1, read(pfd[0], &ch, 1));
		ASSERT_EQ('E', ch);
	}
	kill(pid, SIGKILL);
	ASSERT_EQ(pid, waitpid(pid, NULL, 0));
	/* Every caller, running or queued, gets the error; none hangs. */
	for (int i = 0; i < NCALLS; i++) {
		pthread_join(c[i].t, NULL);
		EXPECT_EQ(-ECONNRESET, c[i].ret) TH_LOG("caller %d: %d", i, c[i].ret);
	}
	EXPECT_EQ(-ECONNRESET, popup_binding__call(b, M_BLOCK, NULL, 0, NULL, 0, NULL, 0));
	popup_binding__destroy(b);
	errno = 0;
	EXPECT_EQ(NULL, popup_client__import(cl, name, 1, NULL));
	EXPECT_EQ(ENOENT, errno);
	popup_client__close(cl);
	close(pfd[0]);
}

TEST_HARNESS_MAIN
