// SPDX-License-Identifier: GPL-2.0
/*
 * libpopup batches: several calls outstanding at once through the public
 * API (popup_batch__*), against a server in a thread of the test or in a
 * forked process that the test kills.
 *
 * Cases: results of many concurrent calls checked one by one and their
 * overlap measured (8 calls of 100 ms take far less than 800 ms);
 * wait_any reports in completion order; the per-batch bound and the
 * process-wide per-service semaphore give -EAGAIN or wait as popup.h
 * says; handler errors come back per call; a call past the batch timeout
 * fails alone; a server killed with calls in flight fails every one of
 * them with -ECONNRESET, promptly, and later adds fail too; bad arguments.
 *
 * Over the network (popup_client__connect_tcp): a popupd started by the
 * test serves sleep and echo; 8 calls of 200 ms pipelined on the one TCP
 * connection overlap, replies out of order are matched to their calls,
 * errors map from the wire status, and killing that popupd with calls in
 * flight fails them all with -ECONNRESET.
 *
 * The backend is libpopup's choice: natively the userspace one (truly
 * asynchronous sends on per-slot connections); in the VM lib_kernel.sh
 * runs it with POPUP_BACKEND=kernel (calls on libpopup's caller threads).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <popup/popup.h>

#include "kselftest_harness.h"
#include "popupd_util.h"

enum { M_DELAY = 1 };

/* M_DELAY: sleep @ms, then return @status with @tag as the result. */
struct delay_arg {
	uint32_t ms;
	uint32_t tag;
	int32_t status;
};

static int h_delay(struct popup_request *req)
{
	struct delay_arg a;

	if (req->arg_len != sizeof(a))
		return -EINVAL;
	memcpy(&a, req->arg, sizeof(a));
	usleep(a.ms * 1000);
	memcpy(req->res, &a.tag, sizeof(a.tag));
	req->res_len = sizeof(a.tag);
	return a.status;
}

static const struct popup_method_def methods[] = {
	{ .id = M_DELAY, .max_arg = sizeof(struct delay_arg), .max_res = 4,
	  .name = "delay", .handler = h_delay },
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000ull + ts.tv_nsec / 1000000;
}

static void unique_name(char *buf, size_t size, const char *tag)
{
	static int n;

	snprintf(buf, size, "test.%s.%d.%d", tag, getpid(), n++);
}

static void *run_server(void *arg)
{
	return (void *)(long)popup_server__run(arg);
}

static struct popup_server *make_server(const char *name)
{
	struct popup_pool_attr pool = {
		.min_idle = 4, .max_idle = 16, .increment = 4, .max_threads = 16,
		.queue_limit = 64, .idle_timeout_ms = 10000,
	};
	POPUP_OPTS(popup_server_opts, sopts, .pool = &pool);

	return popup_server__create(name, 1, methods, 1, &sopts);
}

static int add_delay(struct popup_batch *batch, struct popup_binding *b, uint32_t ms,
		     uint32_t tag, int32_t status, uint32_t *res, int *tok)
{
	struct delay_arg a = { .ms = ms, .tag = tag, .status = status };

	return popup_batch__add(batch, b, M_DELAY, &a, sizeof(a), res, sizeof(*res), tok);
}

FIXTURE(batch) {
	char name[POPUP_NAME_MAX];
	struct popup_server *srv;
	pthread_t runner;
	struct popup_client *cl;
	struct popup_binding *b;
};

FIXTURE_SETUP(batch)
{
	POPUP_OPTS(popup_import_opts, iopts, .slots = 16);
	struct popup_server_stats st = { 0 };

	unique_name(self->name, sizeof(self->name), "batch");
	self->srv = make_server(self->name);
	ASSERT_NE(NULL, self->srv) TH_LOG("create: %s", strerror(errno));
	ASSERT_EQ(0, pthread_create(&self->runner, NULL, run_server, self->srv));
	for (int i = 0; i < 2000 && !st.idle; i++) {
		ASSERT_EQ(0, popup_server__stats(self->srv, &st));
		usleep(5000);
	}
	self->cl = popup_client__open(NULL);
	ASSERT_NE(NULL, self->cl);
	self->b = popup_client__import(self->cl, self->name, 1, &iopts);
	ASSERT_NE(NULL, self->b) TH_LOG("import: %s", strerror(errno));
	TH_LOG("backend %s", popup_backend_name(popup_client__backend(self->cl)));
}

FIXTURE_TEARDOWN(batch)
{
	void *ret;

	popup_binding__destroy(self->b);
	popup_client__close(self->cl);
	popup_server__stop(self->srv);
	pthread_join(self->runner, &ret);
	EXPECT_EQ(0, (long)ret);
	popup_server__destroy(self->srv);
}

TEST_F(batch, several_outstanding)
{
	POPUP_OPTS(popup_batch_opts, opts, .max_outstanding = 8);
	struct popup_batch *batch = popup_batch__new(&opts);
	uint32_t res[8], len;
	int tok[8];
	uint64_t t0;

	ASSERT_NE(NULL, batch);
	/* Warm the server's pool so the timing measures the batch. */
	for (int round = 0; round < 2; round++) {
		memset(res, 0, sizeof(res));
		t0 = now_ms();
		for (int i = 0; i < 8; i++) {
			ASSERT_EQ(0, add_delay(batch, self->b, 100, 1000 + i, i, &res[i], &tok[i]));
			ASSERT_EQ(i, tok[i]);
		}
		EXPECT_EQ(8, popup_batch__outstanding(batch));
		ASSERT_EQ(0, popup_batch__wait_all(batch, 10000));
		TH_LOG("round %d: 8 x 100 ms calls in %llu ms", round,
		       (unsigned long long)(now_ms() - t0));
		if (round == 1)
			EXPECT_LT(now_ms() - t0, 600);
		for (int i = 0; i < 8; i++) {
			ASSERT_EQ(i, popup_batch__result(batch, tok[i], &len));
			ASSERT_EQ(4, len);
			ASSERT_EQ(1000 + i, res[i]);
		}
		ASSERT_EQ(0, popup_batch__outstanding(batch));
		ASSERT_EQ(-ENOENT, popup_batch__wait_any(batch, 0));
		ASSERT_EQ(0, popup_batch__reset(batch));
	}
	popup_batch__free(batch);
}

TEST_F(batch, wait_any_order)
{
	static const uint32_t ms[3] = { 600, 50, 300 };
	POPUP_OPTS(popup_batch_opts, opts, .max_outstanding = 4);
	struct popup_batch *batch = popup_batch__new(&opts);
	uint32_t res[3];
	int tok;

	ASSERT_NE(NULL, batch);
	for (int i = 0; i < 3; i++)
		ASSERT_EQ(0, add_delay(batch, self->b, ms[i], i, 0, &res[i], &tok));
	ASSERT_EQ(-EINPROGRESS, popup_batch__result(batch, 0, NULL));
	ASSERT_EQ(-ETIMEDOUT, popup_batch__wait_any(batch, 0));
	ASSERT_EQ(1, popup_batch__wait_any(batch, 5000));
	ASSERT_EQ(2, popup_batch__wait_any(batch, 5000));
	ASSERT_EQ(0, popup_batch__wait_any(batch, 5000));
	ASSERT_EQ(-ENOENT, popup_batch__wait_any(batch, 5000));
	for (int i = 0; i < 3; i++)
		ASSERT_EQ((uint32_t)i, res[i]);
	popup_batch__free(batch);
}

TEST_F(batch, bounds)
{
	POPUP_OPTS(popup_batch_opts, two, .max_outstanding = 2);
	POPUP_OPTS(popup_batch_opts, eight, .max_outstanding = 8, .timeout_ms = 300);
	POPUP_OPTS(popup_batch_opts, slow, .max_outstanding = 8, .timeout_ms = 1500);
	struct popup_batch *a = popup_batch__new(&two), *c, *d;
	uint32_t res[8];
	int tok;
	uint64_t t0;

	ASSERT_NE(NULL, a);
	/* Per batch: the third add is refused, not queued. */
	ASSERT_EQ(0, add_delay(a, self->b, 100, 0, 0, &res[0], &tok));
	ASSERT_EQ(0, add_delay(a, self->b, 100, 1, 0, &res[1], &tok));
	ASSERT_EQ(-EAGAIN, add_delay(a, self->b, 100, 2, 0, &res[2], &tok));
	ASSERT_LE(0, popup_batch__wait_any(a, 5000));
	ASSERT_EQ(0, add_delay(a, self->b, 10, 2, 0, &res[2], &tok));
	ASSERT_EQ(2, tok);
	ASSERT_EQ(0, popup_batch__wait_all(a, 5000));
	popup_batch__free(a);

	/* Per service, across batches: 3 running at most. */
	ASSERT_EQ(0, popup_service__set_limit(self->name, 1, 3));
	c = popup_batch__new(&slow);
	d = popup_batch__new(&eight);
	ASSERT_NE(NULL, c);
	ASSERT_NE(NULL, d);
	for (int i = 0; i < 3; i++)
		ASSERT_EQ(0, add_delay(c, self->b, 3000, i, 0, &res[i], &tok));
	/* c holds calls: refused at once. */
	ASSERT_EQ(-EAGAIN, add_delay(c, self->b, 10, 3, 0, &res[3], &tok));
	/* d holds nothing: it waits, up to its timeout. */
	t0 = now_ms();
	ASSERT_EQ(-ETIMEDOUT, add_delay(d, self->b, 10, 4, 0, &res[4], &tok));
	EXPECT_GE(now_ms() - t0, 250);
	/* A unit more: d's next call runs (with time to spare in a TCG guest). */
	ASSERT_EQ(0, popup_service__set_limit(self->name, 1, 4));
	popup_batch__free(d);
	d = popup_batch__new(&two);
	ASSERT_NE(NULL, d);
	ASSERT_EQ(0, add_delay(d, self->b, 10, 4, 0, &res[4], &tok));
	ASSERT_EQ(0, popup_batch__wait_all(d, 5000));
	ASSERT_EQ(0, popup_batch__result(d, 0, NULL));
	/* c's 3 s calls pass its 1.5 s timeout: each fails alone. */
	ASSERT_EQ(0, popup_batch__wait_all(c, 5000));
	for (int i = 0; i < 3; i++) {
		int st = popup_batch__result(c, i, NULL);

		EXPECT_TRUE(st == -ETIMEDOUT || st == -ETIME) TH_LOG("call %d: %d", i, st);
	}
	popup_batch__free(c);
	popup_batch__free(d);
	ASSERT_EQ(0, popup_service__set_limit(self->name, 1, POPUP_SERVICE_LIMIT_DEFAULT));
}

TEST_F(batch, handler_errors)
{
	POPUP_OPTS(popup_batch_opts, opts, .max_outstanding = 8);
	struct popup_batch *batch = popup_batch__new(&opts);
	uint32_t res[6];
	int tok;

	ASSERT_NE(NULL, batch);
	for (int i = 0; i < 6; i++)
		ASSERT_EQ(0, add_delay(batch, self->b, 5 * i, i, i % 2 ? -EIO : 0, &res[i], &tok));
	ASSERT_EQ(0, popup_batch__wait_all(batch, 5000));
	for (int i = 0; i < 6; i++)
		EXPECT_EQ(i % 2 ? -EIO : 0, popup_batch__result(batch, i, NULL));
	popup_batch__free(batch);
}

TEST_F(batch, bad_arguments)
{
	POPUP_OPTS(popup_batch_opts, big, .max_outstanding = POPUP_BATCH_MAX + 1);
	POPUP_OPTS(popup_batch_opts, opts);
	struct popup_batch *batch;
	struct delay_arg a = { 0 };
	uint32_t res, len;
	int tok;

	ASSERT_EQ(NULL, popup_batch__new(&big));
	ASSERT_EQ(EINVAL, errno);
	batch = popup_batch__new(&opts);
	ASSERT_NE(NULL, batch);
	ASSERT_EQ(-EINVAL, popup_batch__add(batch, NULL, M_DELAY, &a, sizeof(a), &res, 4, &tok));
	ASSERT_EQ(-EINVAL, popup_batch__add(batch, self->b, M_DELAY, NULL, sizeof(a), &res, 4, &tok));
	ASSERT_EQ(-EMSGSIZE, popup_batch__add(batch, self->b, M_DELAY, &a, 4096, &res, 4, &tok));
	if (popup_client__backend(self->cl) == POPUP_BACKEND_USER)
		ASSERT_EQ(-EOPNOTSUPP, popup_batch__add(batch, self->b, 99, &a, sizeof(a), &res, 4, &tok));
	ASSERT_EQ(-EINVAL, popup_batch__result(batch, 0, &len));
	ASSERT_EQ(-EINVAL, popup_batch__result(batch, -1, &len));
	ASSERT_EQ(-EINVAL, popup_service__set_limit(self->name, 1, 0));
	ASSERT_EQ(-EINVAL, popup_service__set_limit(NULL, 1, 4));
	/* A result that does not fit: -ENOBUFS, full length reported. */
	ASSERT_EQ(0, popup_batch__add(batch, self->b, M_DELAY, &a, sizeof(a), &res, 2, &tok));
	ASSERT_EQ(0, popup_batch__wait_all(batch, 5000));
	ASSERT_EQ(-ENOBUFS, popup_batch__result(batch, tok, &len));
	ASSERT_EQ(4, len);
	popup_batch__free(batch);
}

/* Freeing a batch with calls in flight cancels them and returns. */
TEST_F(batch, free_while_running)
{
	POPUP_OPTS(popup_batch_opts, opts, .max_outstanding = 8, .timeout_ms = 2000);
	struct popup_batch *batch = popup_batch__new(&opts);
	uint32_t res[4];
	int tok;

	ASSERT_NE(NULL, batch);
	for (int i = 0; i < 4; i++)
		ASSERT_EQ(0, add_delay(batch, self->b, 200, i, 0, &res[i], &tok));
	popup_batch__free(batch);
}

/* A sub-server in another process, killed while calls are in flight. */
TEST(server_dies)
{
	POPUP_OPTS(popup_batch_opts, opts, .max_outstanding = 8);
	POPUP_OPTS(popup_import_opts, iopts, .slots = 8);
	char name[POPUP_NAME_MAX];
	struct popup_client *cl;
	struct popup_binding *b = NULL;
	struct popup_batch *batch;
	uint32_t res[8];
	uint64_t t0;
	int tok, status;
	pid_t pid;

	unique_name(name, sizeof(name), "dies");
	pid = fork();
	ASSERT_LE(0, pid);
	if (!pid) {
		struct popup_server *srv = make_server(name);

		_exit(srv ? -popup_server__run(srv) : 1);
	}
	cl = popup_client__open(NULL);
	ASSERT_NE(NULL, cl);
	for (int i = 0; i < 500 && !b; i++) {
		b = popup_client__import(cl, name, 1, &iopts);
		if (!b)
			usleep(10000);
	}
	ASSERT_NE(NULL, b) TH_LOG("import: %s", strerror(errno));
	batch = popup_batch__new(&opts);
	ASSERT_NE(NULL, batch);
	ASSERT_EQ(0, add_delay(batch, b, 0, 7, 0, &res[0], &tok));
	ASSERT_EQ(0, tok);
	ASSERT_EQ(0, popup_batch__wait_any(batch, 5000));
	ASSERT_EQ(0, popup_batch__result(batch, 0, NULL));
	for (int i = 1; i < 8; i++)
		ASSERT_EQ(0, add_delay(batch, b, 5000, i, 0, &res[i], &tok));
	usleep(100000);
	kill(pid, SIGKILL);
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	t0 = now_ms();
	ASSERT_EQ(0, popup_batch__wait_all(batch, 3000));
	EXPECT_LT(now_ms() - t0, 2000);
	for (int i = 1; i < 8; i++)
		EXPECT_EQ(-ECONNRESET, popup_batch__result(batch, i, NULL));
	/* The binding is dead: later calls fail at once, in add or in wait. */
	status = add_delay(batch, b, 0, 9, 0, &res[0], &tok);
	if (!status) {
		ASSERT_EQ(0, popup_batch__wait_all(batch, 3000));
		status = popup_batch__result(batch, tok, NULL);
	}
	EXPECT_EQ(-ECONNRESET, status);
	popup_batch__free(batch);
	popup_binding__destroy(b);
	popup_client__close(cl);
}

/* sleep's "sleep" method over the network: @ms as decimal text. */
static int add_sleep(struct popup_batch *batch, struct popup_binding *b, unsigned int ms,
		     char *res, uint32_t cap, int *tok)
{
	char arg[16];
	int n = snprintf(arg, sizeof(arg), "%u", ms);

	return popup_batch__add(batch, b, 1, arg, n, res, cap, tok);
}

/* Another popupd, called through the net backend. */
TEST(net_remote_popupd)
{
	const char *const args[] = { "-s", "echo,sleep", "--set", "sleep.threads=16",
				     "--set", "sleep.queue=64", NULL };
	POPUP_OPTS(popup_batch_opts, opts, .max_outstanding = 8, .timeout_ms = 5000);
	POPUP_OPTS(popup_import_opts, iopts, .slots = 4);
	static const unsigned int order_ms[3] = { 500, 50, 250 };
	struct popup_binding *sl, *echo;
	struct popup_batch *batch;
	struct popup_client *cl;
	char res[8][64], addr[64], bin[PATH_MAX];
	struct pd pd = { 0 };
	uint32_t len;
	uint64_t t0;
	int tok, err;

	pd_bin(bin, sizeof(bin));
	if (access(bin, X_OK))
		SKIP(return, "no popupd binary at %s", bin);
	ASSERT_EQ(0, pd_start_v(&pd, 0, 0, 0, args));
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", pd.np);

	/* Bad addresses: clear errors. */
	ASSERT_EQ(NULL, popup_client__connect_tcp("no-port", 1000));
	ASSERT_EQ(EINVAL, errno);
	ASSERT_EQ(NULL, popup_client__connect_tcp(NULL, 1000));

	cl = popup_client__connect_tcp(addr, 2000);
	ASSERT_NE(NULL, cl) TH_LOG("connect %s: %s", addr, strerror(errno));
	ASSERT_EQ(POPUP_BACKEND_NET, popup_client__backend(cl));
	ASSERT_EQ(NULL, popup_client__import(cl, "nosuch", 1, NULL));
	ASSERT_EQ(ENOENT, errno);
	ASSERT_EQ(NULL, popup_client__import(cl, "echo", 2, NULL));
	echo = popup_client__import(cl, "echo", 1, &iopts);
	ASSERT_NE(NULL, echo);
	sl = popup_client__import(cl, "sleep", 1, &iopts);
	ASSERT_NE(NULL, sl);

	/* Synchronous calls, and the remote errors as errnos. */
	ASSERT_EQ(0, popup_binding__call(echo, 1, "hello", 5, res[0], sizeof(res[0]), &len, 2000));
	ASSERT_EQ(5, len);
	ASSERT_EQ(0, memcmp(res[0], "hello", 5));
	ASSERT_EQ(-EINVAL, popup_binding__call(sl, 1, "x", 1, res[0], sizeof(res[0]), &len, 2000));
	ASSERT_EQ(-EOPNOTSUPP, popup_binding__call(sl, 99, "1", 1, res[0], sizeof(res[0]), &len, 2000));

	/* Eight 200 ms calls pipelined on one connection overlap. */
	batch = popup_batch__new(&opts);
	ASSERT_NE(NULL, batch);
	t0 = now_ms();
	for (int i = 0; i < 8; i++)
		ASSERT_EQ(0, add_sleep(batch, sl, 200, res[i], sizeof(res[i]), &tok));
	ASSERT_EQ(0, popup_batch__wait_all(batch, 5000));
	TH_LOG("8 x 200 ms remote calls in %llu ms", (unsigned long long)(now_ms() - t0));
	EXPECT_LT(now_ms() - t0, 1200);
	for (int i = 0; i < 8; i++) {
		ASSERT_EQ(0, popup_batch__result(batch, i, &len));
		ASSERT_EQ(0, strncmp(res[i], "done in 200 ms", len));
	}
	ASSERT_EQ(0, popup_batch__reset(batch));

	/* Replies come back out of order and find their calls. */
	for (int i = 0; i < 3; i++)
		ASSERT_EQ(0, add_sleep(batch, sl, order_ms[i], res[i], sizeof(res[i]), &tok));
	ASSERT_EQ(1, popup_batch__wait_any(batch, 5000));
	ASSERT_EQ(2, popup_batch__wait_any(batch, 5000));
	ASSERT_EQ(0, popup_batch__wait_any(batch, 5000));
	ASSERT_EQ(0, popup_batch__result(batch, 0, &len));
	ASSERT_EQ(0, strncmp(res[0], "done in 500 ms", len));
	ASSERT_EQ(0, popup_batch__reset(batch));

	/* The remote popupd dies with calls in flight. */
	for (int i = 0; i < 4; i++)
		ASSERT_EQ(0, add_sleep(batch, sl, 3000, res[i], sizeof(res[i]), &tok));
	usleep(100000);
	kill(pd.pid, SIGKILL);
	t0 = now_ms();
	ASSERT_EQ(0, popup_batch__wait_all(batch, 4000));
	EXPECT_LT(now_ms() - t0, 1500);
	/* Over the epoll path the connection resets; under kernel arrival
	 * popup.ko answers each request in flight with an error reply
	 * (-EREMOTEIO) when the server dies, then closes the connection. */
	for (int i = 0; i < 4; i++) {
		int r = popup_batch__result(batch, i, NULL);

		EXPECT_TRUE(r == -ECONNRESET || r == -EREMOTEIO) TH_LOG("call %d: %d", i, r);
	}
	/*
	 * popup.ko's error replies can come back before its close of the
	 * connection does: a call sent in that window is accepted, then
	 * fails when the close arrives. It must not succeed or hang.
	 */
	err = add_sleep(batch, sl, 1, res[0], sizeof(res[0]), &tok);
	if (!err) {
		ASSERT_EQ(0, popup_batch__wait_all(batch, 4000));
		err = popup_batch__result(batch, tok, NULL);
		EXPECT_TRUE(err == -ECONNRESET || err == -EREMOTEIO) TH_LOG("late call: %d", err);
	} else {
		EXPECT_EQ(-ECONNRESET, err);
	}
	EXPECT_EQ(-ECONNRESET, popup_binding__call(echo, 1, "x", 1, res[0], sizeof(res[0]), &len, 1000));
	popup_batch__free(batch);
	popup_binding__destroy(sl);
	popup_binding__destroy(echo);
	popup_client__close(cl);
	pd_kill(&pd);
}

TEST_HARNESS_MAIN
