// SPDX-License-Identifier: GPL-2.0
/*
 * popup.ko calls end to end, through the raw ioctl ABI (no libpopup):
 * export/import/mmap/call/reply with results checked, thousands of calls
 * from several client processes, one-way calls and their quota, timeouts
 * and signals before and after a handler took the call (each reported with
 * its own errno), a server killed mid-call (every caller returns
 * ECONNRESET), a client killed mid-call (the handler's reply fails with
 * ECANCELED and the thread carries on), close() during WAIT (EBADF), pool
 * growth to max_threads under blocking handlers and shrinking back to
 * min_idle after the idle timeout, a full queue (EAGAIN, or ETIMEDOUT with
 * POPUP_CALL_BLOCK), UNMAP notices, mapping rules, and kernel-stamped
 * credentials.
 *
 * The in-test server is a tiny pool: threads loop in WAIT/REPLY_WAIT, map
 * bindings on first sight, spawn threads when asked and exit on RETIRE.
 * Methods: ECHO returns arg * 3 + 1 (u64); SLEEP sleeps arg milliseconds;
 * BLOCK waits until the test opens the gate; COUNT (one-way) adds one to a
 * counter; GET returns it.
 */
#include <errno.h>
#include <fcntl.h>
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
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "popup_test.h"
#include "uapi/linux/popup.h"

enum { M_ECHO = 1, M_SLEEP = 2, M_BLOCK = 3, M_COUNT = 4, M_GET = 5 };

static struct popup_method test_methods[] = {
	{ .id = M_ECHO, .max_arg = 8, .max_res = 8 },
	{ .id = M_SLEEP, .max_arg = 8, .max_res = 8 },
	{ .id = M_BLOCK, .max_arg = 8, .max_res = 8 },
	{ .id = M_COUNT, .flags = POPUP_METHOD_ONEWAY, .max_arg = 8 },
	{ .id = M_GET, .max_arg = 0, .max_res = 8 },
};

static int open_dev(void)
{
	return open("/dev/popup", O_RDWR | O_CLOEXEC);
}

static int do_export(int fd, const char *name, const struct popup_pool *pool,
		     __u32 *sid)
{
	struct popup_export e;

	memset(&e, 0, sizeof(e));
	e.size = sizeof(e);
	snprintf(e.name, sizeof(e.name), "%s", name);
	e.version = 1;
	e.nmethods = sizeof(test_methods) / sizeof(test_methods[0]);
	e.methods = (uintptr_t)test_methods;
	if (pool)
		e.pool = *pool;
	if (ioctl(fd, POPUP_IOC_EXPORT, &e))
		return -errno;
	*sid = e.service_id;
	return 0;
}

struct client {
	int fd;
	struct popup_import imp;
	char *base;
};

static int do_import(struct client *c, const char *name, __u32 nslots)
{
	memset(&c->imp, 0, sizeof(c->imp));
	c->imp.size = sizeof(c->imp);
	snprintf(c->imp.name, sizeof(c->imp.name), "%s", name);
	c->imp.version = 1;
	c->imp.nslots = nslots;
	if (ioctl(c->fd, POPUP_IOC_IMPORT, &c->imp))
		return -errno;
	c->base = mmap(NULL, c->imp.map_size, PROT_READ | PROT_WRITE,
		       MAP_SHARED, c->fd, c->imp.map_offset);
	if (c->base == MAP_FAILED)
		return -errno;
	return 0;
}

static int client_open(struct client *c, const char *name, __u32 nslots)
{
	c->fd = open_dev();
	if (c->fd < 0)
		return -errno;
	return do_import(c, name, nslots);
}

static void client_close(struct client *c)
{
	if (c->base && c->base != MAP_FAILED)
		munmap(c->base, c->imp.map_size);
	c->base = NULL;
	close(c->fd);
}

static __u64 *slot_ptr(struct client *c, __u32 slot)
{
	return (__u64 *)(c->base + (size_t)slot * c->imp.slot_size);
}

/* One call; returns 0 or -errno, result in *res. */
static int do_call(struct client *c, __u32 method, __u32 slot, __u64 arg,
		   __u32 flags, __u32 timeout_ms, __u64 *res, __s32 *status)
{
	struct popup_call call;

	*slot_ptr(c, slot) = arg;
	memset(&call, 0, sizeof(call));
	call.size = sizeof(call);
	call.flags = flags;
	call.binding_id = c->imp.binding_id;
	call.method = method;
	call.slot = slot;
	call.arg_len = method == M_GET ? 0 : 8;
	call.timeout_ms = timeout_ms;
	if (ioctl(c->fd, POPUP_IOC_CALL, &call))
		return -errno;
	if (res)
		*res = call.result_len == 8 ? *slot_ptr(c, slot) : ~0ull;
	if (status)
		*status = call.status;
	return 0;
}

/* ---- the in-test server ---- */

struct map_ent {
	__u32 id;
	char *addr;
	__u64 size;
};

struct server {
	int fd;
	__u32 sid;
	pthread_mutex_t lock;
	struct map_ent maps[256];
	int nmaps;
	atomic_int threads;	/* running pool threads */
	atomic_int peak;
	atomic_int spawned;
	atomic_int retired;
	atomic_int unmaps;
	atomic_int busy;
	atomic_int gate;	/* BLOCK handlers wait for it */
	atomic_long count;	/* COUNT calls */
	atomic_long handled;
	atomic_int cancelled;	/* replies that got ECANCELED */
	atomic_int stop;
	pid_t last_pid;
	uid_t last_uid;
	int control;		/* run a control thread */
	pthread_t control_th;
};

static char *server_map(struct server *s, const struct popup_context *ctx)
{
	char *addr = NULL;
	int i;

	pthread_mutex_lock(&s->lock);
	for (i = 0; i < s->nmaps; i++)
		if (s->maps[i].id == ctx->binding_id)
			addr = s->maps[i].addr;
	if (!addr && s->nmaps < 256) {
		addr = mmap(NULL, ctx->map_size, PROT_READ | PROT_WRITE,
			    MAP_SHARED, s->fd, ctx->map_offset);
		if (addr == MAP_FAILED) {
			addr = NULL;
		} else {
			s->maps[s->nmaps].id = ctx->binding_id;
			s->maps[s->nmaps].addr = addr;
			s->maps[s->nmaps].size = ctx->map_size;
			s->nmaps++;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return addr;
}

static void server_unmap(struct server *s, __u32 id)
{
	int i;

	pthread_mutex_lock(&s->lock);
	for (i = 0; i < s->nmaps; i++) {
		if (s->maps[i].id != id)
			continue;
		munmap(s->maps[i].addr, s->maps[i].size);
		s->maps[i] = s->maps[--s->nmaps];
		break;
	}
	pthread_mutex_unlock(&s->lock);
}

static void *server_thread(void *arg);

static void server_spawn(struct server *s, unsigned int n)
{
	pthread_attr_t attr;
	pthread_t th;

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	while (n--) {
		atomic_fetch_add(&s->threads, 1);
		if (pthread_create(&th, &attr, server_thread, s)) {
			atomic_fetch_sub(&s->threads, 1);
			break;
		}
		atomic_fetch_add(&s->spawned, 1);
	}
	pthread_attr_destroy(&attr);
}

static void handle(struct server *s, struct popup_wait *w)
{
	const struct popup_context *ctx = &w->ctx;
	char *base = server_map(s, ctx);
	__u64 *slot = base ? (__u64 *)(base + ctx->slot_offset) : NULL;
	__u64 arg = slot && ctx->arg_len == 8 ? *slot : 0;
	int b = atomic_fetch_add(&s->busy, 1) + 1;
	int p = atomic_load(&s->peak);

	while (b > p && !atomic_compare_exchange_weak(&s->peak, &p, b))
		;
	s->last_pid = ctx->pid;
	s->last_uid = ctx->uid;
	memset(&w->reply, 0, sizeof(w->reply));
	w->reply.ctx_id = ctx->ctx_id;
	switch (ctx->method) {
	case M_ECHO:
		*slot = arg * 3 + 1;
		w->reply.result_len = 8;
		break;
	case M_SLEEP:
		msleep((int)arg);
		*slot = arg;
		w->reply.result_len = 8;
		break;
	case M_BLOCK:
		while (!atomic_load(&s->gate) && !atomic_load(&s->stop))
			msleep(1);
		*slot = arg;
		w->reply.result_len = 8;
		break;
	case M_COUNT:
		atomic_fetch_add(&s->count, 1);
		break;
	case M_GET:
		*slot = atomic_load(&s->count);
		w->reply.result_len = 8;
		break;
	default:
		w->reply.status = -1;
	}
	atomic_fetch_add(&s->handled, 1);
	atomic_fetch_sub(&s->busy, 1);
}

static void *server_thread(void *arg)
{
	struct server *s = arg;
	struct popup_wait w;
	unsigned long cmd = POPUP_IOC_WAIT;

	memset(&w, 0, sizeof(w));
	w.size = sizeof(w);
	w.service_id = s->sid;
	w.flags = POPUP_WAIT_NEW;
	for (;;) {
		if (ioctl(s->fd, cmd, &w)) {
			if (cmd == POPUP_IOC_REPLY_WAIT &&
			    w.reply_result == -ECANCELED)
				atomic_fetch_add(&s->cancelled, 1);
			if (errno != EINTR)
				break;
			cmd = POPUP_IOC_WAIT;
			memset(&w.reply, 0, sizeof(w.reply));
			continue;
		}
		if (cmd == POPUP_IOC_REPLY_WAIT && w.reply_result == -ECANCELED)
			atomic_fetch_add(&s->cancelled, 1);
		w.flags = POPUP_WAIT_POOL;
		if (w.spawn)
			server_spawn(s, w.spawn);
		cmd = POPUP_IOC_WAIT;
		memset(&w.reply, 0, sizeof(w.reply));
		if (w.kind == POPUP_WAIT_KIND_RETIRE) {
			atomic_fetch_add(&s->retired, 1);
			break;
		}
		if (w.kind == POPUP_WAIT_KIND_UNMAP) {
			atomic_fetch_add(&s->unmaps, 1);
			server_unmap(s, w.ctx.binding_id);
		} else if (w.kind == POPUP_WAIT_KIND_CALL) {
			handle(s, &w);
			cmd = POPUP_IOC_REPLY_WAIT;
		}
	}
	atomic_fetch_sub(&s->threads, 1);
	return NULL;
}

static void *control_thread(void *arg)
{
	struct server *s = arg;
	struct popup_wait w;

	for (;;) {
		memset(&w, 0, sizeof(w));
		w.size = sizeof(w);
		w.service_id = s->sid;
		w.flags = POPUP_WAIT_CONTROL;
		if (ioctl(s->fd, POPUP_IOC_WAIT, &w)) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (w.spawn)
			server_spawn(s, w.spawn);
		if (w.kind == POPUP_WAIT_KIND_UNMAP) {
			atomic_fetch_add(&s->unmaps, 1);
			server_unmap(s, w.ctx.binding_id);
		}
	}
	return NULL;
}

/* Start a server; @nthreads initial pool threads. */
static int server_start(struct server *s, const char *name,
			const struct popup_pool *pool, int nthreads,
			int control)
{
	int ret;

	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
	s->fd = open_dev();
	if (s->fd < 0)
		return -errno;
	ret = do_export(s->fd, name, pool, &s->sid);
	if (ret)
		return ret;
	s->control = control;
	if (control && pthread_create(&s->control_th, NULL, control_thread, s))
		return -EAGAIN;
	server_spawn(s, nthreads);
	return 0;
}

/* Withdraw: every thread returns ENOENT and exits. */
static void server_stop(struct server *s)
{
	struct popup_target t = { .id = s->sid };
	int i;

	atomic_store(&s->stop, 1);
	ioctl(s->fd, POPUP_IOC_WITHDRAW, &t);
	for (i = 0; i < 5000 && atomic_load(&s->threads); i++)
		msleep(1);
	if (s->control)
		pthread_join(s->control_th, NULL);
	for (i = 0; i < s->nmaps; i++)
		munmap(s->maps[i].addr, s->maps[i].size);
	close(s->fd);
}

/* WAIT by hand for the next call, skipping spawn requests. */
static int wait_call(int fd, __u32 sid, struct popup_wait *w)
{
	do {
		memset(w, 0, sizeof(*w));
		w->size = sizeof(*w);
		w->service_id = sid;
		if (ioctl(fd, POPUP_IOC_WAIT, w))
			return -errno;
	} while (w->kind == POPUP_WAIT_KIND_SPAWN);
	return 0;
}

static const struct popup_pool no_spawn = {
	.min_idle = 0, .max_idle = 1, .increment = 1, .max_threads = 1,
	.queue_limit = 16,
};

static int wait_until(atomic_int *v, int want, int ms)
{
	while (atomic_load(v) != want && ms-- > 0)
		msleep(1);
	return atomic_load(v);
}

static void name_for(char *buf, size_t n, const char *what)
{
	snprintf(buf, n, "kmod_call.%s.%d", what, getpid());
}

FIXTURE(call) {
	char name[64];
	struct server srv;
	struct client cl;
};

FIXTURE_SETUP(call)
{
	int err = popup_test_load_module();

	memset(&self->cl, 0, sizeof(self->cl));
	self->cl.fd = -1;
	self->srv.fd = -1;
	if (err)
		SKIP(return, "popup.ko not loadable here (%s); run in scripts/vm", strerror(-err));
	name_for(self->name, sizeof(self->name), "svc");
}

FIXTURE_TEARDOWN(call)
{
	if (self->cl.fd >= 0)
		client_close(&self->cl);
	if (self->srv.fd >= 0)
		server_stop(&self->srv);
}

TEST_F(call, echo_and_proc)
{
	char line[512];
	int found = 0;
	__u64 res;
	__s32 st;
	FILE *f;

	ASSERT_EQ(0, server_start(&self->srv, self->name, NULL, 1, 0));
	ASSERT_EQ(0, client_open(&self->cl, self->name, 4));
	EXPECT_EQ(4096 * 4, self->cl.imp.map_size);
	for (__u64 i = 0; i < 100; i++) {
		ASSERT_EQ(0, do_call(&self->cl, M_ECHO, i % 4, i, 0, 0, &res, &st));
		ASSERT_EQ(i * 3 + 1, res);
		ASSERT_EQ(0, st);
	}
	/* Credentials are the kernel's. */
	EXPECT_EQ(getpid(), self->srv.last_pid);
	EXPECT_EQ(geteuid(), self->srv.last_uid);

	f = fopen("/proc/popup/services", "r");
	ASSERT_NE(NULL, f);
	while (fgets(line, sizeof(line), f))
		if (strstr(line, self->name))
			found = 1;
	fclose(f);
	EXPECT_EQ(1, found);

	/* Unknown method, bad slot, oversize argument. */
	struct popup_call call = {
		.size = sizeof(call), .binding_id = self->cl.imp.binding_id,
		.method = 99, .arg_len = 0,
	};
	EXPECT_EQ(-1, ioctl(self->cl.fd, POPUP_IOC_CALL, &call));
	EXPECT_EQ(EOPNOTSUPP, errno);
	call.method = M_ECHO;
	call.slot = 4;
	EXPECT_EQ(-1, ioctl(self->cl.fd, POPUP_IOC_CALL, &call));
	EXPECT_EQ(EINVAL, errno);
	call.slot = 0;
	call.arg_len = 9;
	EXPECT_EQ(-1, ioctl(self->cl.fd, POPUP_IOC_CALL, &call));
	EXPECT_EQ(EINVAL, errno);
}

#define NPROC	4
#define NCALLS	2500

/* Several client processes, each with several threads, results checked. */
struct cthread {
	struct client *c;
	int slot;
	int errors;
};

static void *client_thread(void *arg)
{
	struct cthread *t = arg;
	__u64 res;
	__s32 st;

	for (__u64 i = 0; i < NCALLS; i++) {
		__u64 x = ((__u64)getpid() << 20) ^ (i * 7919 + t->slot);

		if (do_call(t->c, M_ECHO, t->slot, x, 0, 0, &res, &st) ||
		    res != x * 3 + 1 || st)
			t->errors++;
	}
	return NULL;
}

TEST_F(call, many_clients)
{
	struct popup_pool pool = {
		.min_idle = 2, .max_idle = 8, .increment = 2,
		.max_threads = 8, .queue_limit = 64, .idle_timeout_ms = 5000,
	};
	pid_t pids[NPROC];
	int i, status, failed = 0;

	ASSERT_EQ(0, server_start(&self->srv, self->name, &pool, 2, 1));
	for (i = 0; i < NPROC; i++) {
		pids[i] = fork();
		ASSERT_LE(0, pids[i]);
		if (!pids[i]) {
			struct client c;
			struct cthread t[2];
			pthread_t th[2];
			int err = 0;

			if (client_open(&c, self->name, 2))
				_exit(2);
			for (int j = 0; j < 2; j++) {
				t[j] = (struct cthread){ .c = &c, .slot = j };
				pthread_create(&th[j], NULL, client_thread, &t[j]);
			}
			for (int j = 0; j < 2; j++) {
				pthread_join(th[j], NULL);
				err += t[j].errors;
			}
			client_close(&c);
			_exit(err ? 1 : 0);
		}
	}
	for (i = 0; i < NPROC; i++) {
		ASSERT_EQ(pids[i], waitpid(pids[i], &status, 0));
		if (!WIFEXITED(status) || WEXITSTATUS(status))
			failed++;
	}
	EXPECT_EQ(0, failed);
	EXPECT_EQ(NPROC * 2 * NCALLS, atomic_load(&self->srv.handled));
	EXPECT_LE(atomic_load(&self->srv.peak), 8);
	/* Each client's binding was mapped by the server and then dropped. */
	EXPECT_EQ(NPROC, wait_until(&self->srv.unmaps, NPROC, 2000));
}

TEST_F(call, oneway)
{
	int sent = 0, tries = 0;
	__u64 res;
	__s32 st;

	ASSERT_EQ(0, server_start(&self->srv, self->name, NULL, 2, 0));
	ASSERT_EQ(0, client_open(&self->cl, self->name, 8));
	while (sent < 1000 && tries++ < 1000000) {
		int r = do_call(&self->cl, M_COUNT, sent % 7, 0, 0, 0, NULL, NULL);

		if (!r)
			sent++;
		else
			ASSERT_TRUE(r == -EAGAIN || r == -EBUSY);
	}
	ASSERT_EQ(1000, sent);
	for (int i = 0; i < 2000 && atomic_load(&self->srv.count) < 1000; i++)
		msleep(1);
	ASSERT_EQ(0, do_call(&self->cl, M_GET, 7, 0, 0, 0, &res, &st));
	EXPECT_EQ(1000, res);
	/* A two-way method called one-way returns at once too. */
	EXPECT_EQ(0, do_call(&self->cl, M_SLEEP, 0, 200, POPUP_CALL_ONEWAY, 0, NULL, NULL));
}

TEST_F(call, oneway_quota_and_queue_full)
{
	struct popup_pool pool = {
		.min_idle = 0, .max_idle = 1, .increment = 1,
		.max_threads = 1, .queue_limit = 3, .idle_timeout_ms = 0,
	};
	struct client c2;

	/* No server thread: everything queues. */
	ASSERT_EQ(0, server_start(&self->srv, self->name, &pool, 0, 0));
	ASSERT_EQ(0, client_open(&self->cl, self->name, 4));
	/* quota (4 + 1) / 2 = 2 */
	EXPECT_EQ(0, do_call(&self->cl, M_COUNT, 0, 0, 0, 0, NULL, NULL));
	EXPECT_EQ(0, do_call(&self->cl, M_COUNT, 1, 0, 0, 0, NULL, NULL));
	EXPECT_EQ(-EAGAIN, do_call(&self->cl, M_COUNT, 2, 0, 0, 0, NULL, NULL));
	EXPECT_EQ(-EBUSY, do_call(&self->cl, M_ECHO, 0, 0, 0, 0, NULL, NULL));

	ASSERT_EQ(0, client_open(&c2, self->name, 4));
	EXPECT_EQ(0, do_call(&c2, M_COUNT, 0, 0, 0, 0, NULL, NULL));
	/* queue_limit 3 reached */
	EXPECT_EQ(-EAGAIN, do_call(&c2, M_COUNT, 1, 0, 0, 0, NULL, NULL));
	EXPECT_EQ(-EAGAIN, do_call(&c2, M_ECHO, 2, 1, 0, 100, NULL, NULL));
	EXPECT_EQ(-ETIMEDOUT, do_call(&c2, M_ECHO, 2, 1, POPUP_CALL_BLOCK, 100, NULL, NULL));

	/* A thread drains the queue. */
	server_spawn(&self->srv, 1);
	for (int i = 0; i < 2000 && atomic_load(&self->srv.count) < 3; i++)
		msleep(1);
	EXPECT_EQ(3, atomic_load(&self->srv.count));
	__u64 res = 0;

	EXPECT_EQ(0, do_call(&c2, M_ECHO, 2, 5, POPUP_CALL_BLOCK, 1000, &res, NULL));
	EXPECT_EQ(16, res);
	client_close(&c2);
}

TEST_F(call, timeout_before_and_after_start)
{
	struct popup_reply r;
	struct popup_wait w;
	__u64 t0;

	ASSERT_EQ(0, server_start(&self->srv, self->name, &no_spawn, 0, 0));
	ASSERT_EQ(0, client_open(&self->cl, self->name, 2));
	/* Nobody waits: not started. The slot is free again right away. */
	EXPECT_EQ(-ETIMEDOUT, do_call(&self->cl, M_ECHO, 0, 1, 0, 50, NULL, NULL));
	EXPECT_EQ(-ETIMEDOUT, do_call(&self->cl, M_ECHO, 0, 1, 0, 50, NULL, NULL));

	/* Take a call by hand, then let the caller time out: ETIME. */
	pid_t pid = fork();

	ASSERT_LE(0, pid);
	if (!pid) {
		struct client c;
		int r1, r2;

		/* Fork does not inherit the mapping: import anew. */
		if (client_open(&c, self->name, 1))
			_exit(2);
		r1 = do_call(&c, M_ECHO, 0, 1, 0, 200, NULL, NULL);
		/* The slot stays busy until the handler replies. */
		r2 = do_call(&c, M_ECHO, 0, 1, 0, 50, NULL, NULL);

		_exit(r1 == -ETIME && r2 == -EBUSY ? 0 : 1);
	}
	ASSERT_EQ(0, wait_call(self->srv.fd, self->srv.sid, &w));
	ASSERT_EQ(POPUP_WAIT_KIND_CALL, w.kind);
	EXPECT_EQ(pid, w.ctx.pid);
	int status;

	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_EQ(0, WEXITSTATUS(status));
	(void)t0;
	memset(&r, 0, sizeof(r));
	r.ctx_id = w.ctx.ctx_id;
	EXPECT_EQ(-1, ioctl(self->srv.fd, POPUP_IOC_REPLY, &r));
	EXPECT_EQ(ECANCELED, errno);
	/* A second reply finds nothing. */
	EXPECT_EQ(-1, ioctl(self->srv.fd, POPUP_IOC_REPLY, &r));
	EXPECT_EQ(ENOENT, errno);
	/* The slot is free again. */
	EXPECT_EQ(-ETIMEDOUT, do_call(&self->cl, M_ECHO, 0, 1, 0, 20, NULL, NULL));
}

static void on_alarm(int sig)
{
}

TEST_F(call, signals)
{
	struct sigaction sa = { .sa_handler = on_alarm };
	struct popup_wait w;
	pid_t pid;
	int status;

	sigaction(SIGALRM, &sa, NULL);	/* no SA_RESTART */
	ASSERT_EQ(0, server_start(&self->srv, self->name, &no_spawn, 0, 0));
	ASSERT_EQ(0, client_open(&self->cl, self->name, 2));

	/* Queued, never started: EINTR. */
	ualarm(50000, 0);
	EXPECT_EQ(-EINTR, do_call(&self->cl, M_ECHO, 0, 1, 0, 0, NULL, NULL));

	/* Started, then signalled: ECANCELED; the handler hears of it. */
	pid = fork();
	ASSERT_LE(0, pid);
	if (!pid) {
		struct client c;

		if (client_open(&c, self->name, 1))
			_exit(2);
		sigaction(SIGALRM, &sa, NULL);
		ualarm(100000, 0);
		_exit(do_call(&c, M_ECHO, 0, 1, 0, 0, NULL, NULL) == -ECANCELED ? 0 : 1);
	}
	ASSERT_EQ(0, wait_call(self->srv.fd, self->srv.sid, &w));
	ASSERT_EQ(POPUP_WAIT_KIND_CALL, w.kind);
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_EQ(0, WEXITSTATUS(status));
	/* REPLY_WAIT: the reply is discarded, then the wait goes on. */
	w.reply.ctx_id = w.ctx.ctx_id;
	w.flags = POPUP_WAIT_NONBLOCK;
	EXPECT_EQ(-1, ioctl(self->srv.fd, POPUP_IOC_REPLY_WAIT, &w));
	EXPECT_EQ(EAGAIN, errno);
	EXPECT_EQ(-ECANCELED, w.reply_result);
}

TEST_F(call, server_killed_mid_call)
{
	int pfd[2], i, status;
	pid_t spid, cpids[4];
	char c;

	ASSERT_EQ(0, pipe(pfd));
	spid = fork();
	ASSERT_LE(0, spid);
	if (!spid) {
		struct popup_pool pool = {
			.min_idle = 0, .max_idle = 1, .increment = 1,
			.max_threads = 1, .queue_limit = 16,
		};
		struct server s;

		if (server_start(&s, self->name, &pool, 1, 0))
			_exit(1);
		write(pfd[1], "x", 1);
		pause();
		_exit(0);
	}
	ASSERT_EQ(1, read(pfd[0], &c, 1));
	/* Four callers: one runs (BLOCK never opens), three queue. */
	for (i = 0; i < 4; i++) {
		cpids[i] = fork();
		ASSERT_LE(0, cpids[i]);
		if (!cpids[i]) {
			struct client cl;

			if (client_open(&cl, self->name, 1))
				_exit(2);
			_exit(do_call(&cl, M_BLOCK, 0, 1, 0, 0, NULL, NULL) == -ECONNRESET ? 0 : 1);
		}
	}
	msleep(300);
	kill(spid, SIGKILL);
	waitpid(spid, &status, 0);
	for (i = 0; i < 4; i++) {
		ASSERT_EQ(cpids[i], waitpid(cpids[i], &status, 0));
		EXPECT_TRUE(WIFEXITED(status));
		EXPECT_EQ(0, WEXITSTATUS(status));
	}
	/* Withdrawn: imports fail. */
	struct client cl;

	cl.fd = open_dev();
	EXPECT_EQ(-ENOENT, do_import(&cl, self->name, 1));
	close(cl.fd);
}

TEST_F(call, client_killed_mid_call)
{
	__u64 res;
	pid_t pid;
	int status;

	ASSERT_EQ(0, server_start(&self->srv, self->name, NULL, 1, 0));
	pid = fork();
	ASSERT_LE(0, pid);
	if (!pid) {
		struct client cl;

		if (client_open(&cl, self->name, 1))
			_exit(2);
		do_call(&cl, M_BLOCK, 0, 1, 0, 0, NULL, NULL);
		_exit(3);
	}
	while (atomic_load(&self->srv.busy) == 0)
		msleep(1);
	kill(pid, SIGKILL);
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_TRUE(WIFSIGNALED(status));
	atomic_store(&self->srv.gate, 1);
	EXPECT_EQ(1, wait_until(&self->srv.cancelled, 1, 2000));
	/* The thread carries on. */
	ASSERT_EQ(0, client_open(&self->cl, self->name, 1));
	ASSERT_EQ(0, do_call(&self->cl, M_ECHO, 0, 2, 0, 1000, &res, NULL));
	EXPECT_EQ(7, res);
}

struct waiter_arg {
	int fd;
	__u32 sid;
	int ret, err;
};

static void *blocking_wait(void *p)
{
	struct waiter_arg *a = p;
	struct popup_wait w;

	memset(&w, 0, sizeof(w));
	w.size = sizeof(w);
	w.service_id = a->sid;
	a->ret = ioctl(a->fd, POPUP_IOC_WAIT, &w);
	a->err = errno;
	return NULL;
}

TEST_F(call, close_during_wait)
{
	struct waiter_arg a = { 0 };
	pthread_t th;

	a.fd = open_dev();
	ASSERT_LE(0, a.fd);
	ASSERT_EQ(0, do_export(a.fd, self->name, &no_spawn, &a.sid));
	ASSERT_EQ(0, pthread_create(&th, NULL, blocking_wait, &a));
	msleep(100);
	close(a.fd);
	ASSERT_EQ(0, pthread_join(th, NULL));
	EXPECT_EQ(-1, a.ret);
	EXPECT_EQ(EBADF, a.err);
	/* The last reference is gone: the service is withdrawn. */
	struct client cl;

	cl.fd = open_dev();
	EXPECT_EQ(-ENOENT, do_import(&cl, self->name, 1));
	close(cl.fd);
}

struct blocker {
	struct client *c;
	int slot;
	int ret;
};

static void *block_call(void *p)
{
	struct blocker *b = p;

	b->ret = do_call(b->c, M_BLOCK, b->slot, 0, POPUP_CALL_BLOCK, 10000, NULL, NULL);
	return NULL;
}

TEST_F(call, pool_grows_and_shrinks)
{
	struct popup_pool pool = {
		.min_idle = 1, .max_idle = 6, .increment = 1,
		.max_threads = 6, .queue_limit = 16, .idle_timeout_ms = 200,
	};
	struct blocker b[10];
	pthread_t th[10];
	int i;

	ASSERT_EQ(0, server_start(&self->srv, self->name, &pool, 1, 1));
	ASSERT_EQ(0, client_open(&self->cl, self->name, 10));
	for (i = 0; i < 10; i++) {
		b[i] = (struct blocker){ .c = &self->cl, .slot = i };
		pthread_create(&th[i], NULL, block_call, &b[i]);
	}
	/* Every handler blocks: the pool grows to max_threads, no further. */
	EXPECT_EQ(6, wait_until(&self->srv.busy, 6, 5000));
	msleep(300);
	EXPECT_EQ(6, atomic_load(&self->srv.threads));
	EXPECT_EQ(6, atomic_load(&self->srv.peak));
	atomic_store(&self->srv.gate, 1);
	for (i = 0; i < 10; i++) {
		pthread_join(th[i], NULL);
		EXPECT_EQ(0, b[i].ret);
	}
	/* Idle timeout: back to min_idle. */
	EXPECT_EQ(1, wait_until(&self->srv.threads, 1, 5000));
	EXPECT_LE(5, atomic_load(&self->srv.retired));
}

TEST_F(call, mapping_rules)
{
	struct popup_import *imp = &self->cl.imp;
	struct client other;
	void *p;
	pid_t pid;
	int status;

	ASSERT_EQ(0, server_start(&self->srv, self->name, NULL, 1, 0));
	ASSERT_EQ(0, client_open(&self->cl, self->name, 2));

	/* Wrong size, private, executable, someone else's binding. */
	p = mmap(NULL, imp->map_size / 2, PROT_READ, MAP_SHARED, self->cl.fd, imp->map_offset);
	EXPECT_EQ(MAP_FAILED, p);
	EXPECT_EQ(EINVAL, errno);
	p = mmap(NULL, imp->map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, self->cl.fd, imp->map_offset);
	EXPECT_EQ(MAP_FAILED, p);
	EXPECT_EQ(EINVAL, errno);
	p = mmap(NULL, imp->map_size, PROT_READ | PROT_EXEC, MAP_SHARED, self->cl.fd, imp->map_offset);
	EXPECT_EQ(MAP_FAILED, p);
	EXPECT_EQ(EPERM, errno);
	other.fd = open_dev();
	p = mmap(NULL, imp->map_size, PROT_READ, MAP_SHARED, other.fd, imp->map_offset);
	EXPECT_EQ(MAP_FAILED, p);
	EXPECT_EQ(ENXIO, errno);
	close(other.fd);

	/* Partial munmap and mprotect are refused; no growth by mremap. */
	EXPECT_EQ(-1, munmap(self->cl.base, 4096));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, mprotect(self->cl.base, 4096, PROT_READ));
	EXPECT_EQ(EINVAL, errno);
	p = mremap(self->cl.base, imp->map_size, imp->map_size * 2, 0);
	EXPECT_EQ(MAP_FAILED, p);

	/* A moved mapping still works. */
	p = mmap(NULL, imp->map_size * 2, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, p);
	p = mremap(self->cl.base, imp->map_size, imp->map_size, MREMAP_MAYMOVE | MREMAP_FIXED, p);
	ASSERT_NE(MAP_FAILED, p);
	self->cl.base = p;
	__u64 res;

	EXPECT_EQ(0, do_call(&self->cl, M_ECHO, 1, 4, 0, 1000, &res, NULL));
	EXPECT_EQ(13, res);

	/* The child of a fork has no mapping. */
	pid = fork();
	ASSERT_LE(0, pid);
	if (!pid) {
		signal(SIGSEGV, SIG_DFL);
		*(volatile char *)self->cl.base = 1;
		_exit(0);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_TRUE(WIFSIGNALED(status));
	EXPECT_EQ(SIGSEGV, WTERMSIG(status));

	/* Unmapped: calls fail with ENXIO; the server is told to unmap. */
	EXPECT_EQ(0, munmap(self->cl.base, imp->map_size));
	struct popup_call call = {
		.size = sizeof(call), .binding_id = imp->binding_id,
		.method = M_ECHO, .arg_len = 8,
	};
	EXPECT_EQ(-1, ioctl(self->cl.fd, POPUP_IOC_CALL, &call));
	EXPECT_EQ(ENXIO, errno);
	self->cl.base = NULL;
	struct popup_target t = { .id = imp->binding_id };

	EXPECT_EQ(0, ioctl(self->cl.fd, POPUP_IOC_UNIMPORT, &t));
	EXPECT_EQ(-1, ioctl(self->cl.fd, POPUP_IOC_UNIMPORT, &t));
	EXPECT_EQ(ENOENT, errno);
	EXPECT_EQ(1, wait_until(&self->srv.unmaps, 1, 2000));
	EXPECT_EQ(-1, ioctl(self->cl.fd, POPUP_IOC_CALL, &call));
	EXPECT_EQ(ENOENT, errno);
}

/*
 * Queue a one-way M_COUNT call on service @name from a child process that
 * first raises its nice value by @nice_inc; 0 once the call is queued.
 */
static int queue_oneway_at(const char *name, int nice_inc)
{
	pid_t pid = fork();
	int st;

	if (pid < 0)
		return -1;
	if (!pid) {
		struct client c;

		if (client_open(&c, name, 1))
			_exit(2);
		if (nice_inc)
			setpriority(PRIO_PROCESS, 0,
				    getpriority(PRIO_PROCESS, 0) + nice_inc);
		_exit(do_call(&c, M_COUNT, 0, 0, 0, 0, NULL, NULL) ? 1 : 0);
	}
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st) ? -1 : 0;
}

TEST_F(call, priority_order)
{
	struct popup_pool pool = {
		.min_idle = 0, .max_idle = 1, .increment = 1,
		.max_threads = 1, .queue_limit = 16,
	};
	struct popup_wait w;
	int prios[3], i;

	ASSERT_EQ(0, server_start(&self->srv, self->name, &pool, 0, 0));
	ASSERT_EQ(0, client_open(&self->cl, self->name, 6));
	/* Queue one-way calls at nice +5, +0 (our own) and +10, in that order. */
	int nices[3] = { 5, 0, 10 };

	for (i = 0; i < 3; i++)
		ASSERT_EQ(0, queue_oneway_at(self->name, nices[i]));
	for (i = 0; i < 3; i++) {
		ASSERT_EQ(0, wait_call(self->srv.fd, self->srv.sid, &w));
		ASSERT_EQ(POPUP_WAIT_KIND_CALL, w.kind);
		prios[i] = w.ctx.priority;
		struct popup_reply r = { .ctx_id = w.ctx.ctx_id };

		EXPECT_EQ(0, ioctl(self->srv.fd, POPUP_IOC_REPLY, &r));
	}
	EXPECT_EQ(getpriority(PRIO_PROCESS, 0) + 120, prios[0]);
	EXPECT_LT(prios[0], prios[1]);
	EXPECT_LT(prios[1], prios[2]);
}

/*
 * A less urgent call is passed over at most 8 times (POPUP_MAX_OVERTAKE):
 * queue one at nice 10, then 12 at our own nice; it is served 9th.
 */
TEST_F(call, priority_no_starvation)
{
	struct popup_pool pool = {
		.min_idle = 0, .max_idle = 1, .increment = 1,
		.max_threads = 1, .queue_limit = 16,
	};
	struct popup_wait w;
	int low = getpriority(PRIO_PROCESS, 0) + 10 + 120;
	int i, seen = -1;

	ASSERT_EQ(0, server_start(&self->srv, self->name, &pool, 0, 0));
	for (i = 0; i < 13; i++)
		ASSERT_EQ(0, queue_oneway_at(self->name, i ? 0 : 10));
	for (i = 0; i < 13; i++) {
		ASSERT_EQ(0, wait_call(self->srv.fd, self->srv.sid, &w));
		ASSERT_EQ(POPUP_WAIT_KIND_CALL, w.kind);
		if (w.ctx.priority == low)
			seen = i;
		struct popup_reply r = { .ctx_id = w.ctx.ctx_id };

		EXPECT_EQ(0, ioctl(self->srv.fd, POPUP_IOC_REPLY, &r));
	}
	EXPECT_EQ(8, seen);
}

TEST_HARNESS_MAIN
