// SPDX-License-Identifier: GPL-2.0
/*
 * popup.ko concurrency stress: for a bounded time (POPUP_STRESS_SECS,
 * default 10), several worker processes do random things to a small set of
 * shared service names: export and withdraw, start server threads, import,
 * map, unmap, call (two-way, one-way, with and without timeouts, with
 * signals landing mid-call), unimport, close descriptors while threads wait
 * on them, and fork children that are killed mid-call. The parent SIGKILLs
 * random workers and starts new ones.
 *
 * Pass: every successful call returned the right result, every failure was
 * one of the documented errnos, nothing hung (each worker answers within
 * the time limit), and at the end, with every worker gone, no service of
 * ours is left in /proc/popup/services. The VM fails the run on any kernel
 * warning, so this is also the module's fuzz of its own lifetime rules.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "popup_test.h"
#include "uapi/linux/popup.h"

#define NWORKERS	4
#define NNAMES		3

static struct popup_method methods[] = {
	{ .id = 1, .max_arg = 8, .max_res = 8 },			/* echo */
	{ .id = 2, .max_arg = 8, .max_res = 8 },			/* sleep */
	{ .id = 3, .flags = POPUP_METHOD_ONEWAY, .max_arg = 8 },	/* drop */
};

static char prefix[32];

static void name_of(char *buf, int k)
{
	snprintf(buf, POPUP_NAME_MAX, "%s.%d", prefix, k);
}

static unsigned int rnd(unsigned int *seed, unsigned int n)
{
	return rand_r(seed) % n;
}

static void on_alarm(int sig)
{
}

/* Errnos a call may legitimately return under this chaos. */
static int call_errno_ok(int e)
{
	switch (e) {
	case ENOENT: case ECONNRESET: case EAGAIN: case EBUSY:
	case ETIMEDOUT: case ETIME: case EINTR: case ECANCELED: case ENXIO:
		return 1;
	}
	return 0;
}

/* A wrong outcome, said on stderr (the worker's exit status only counts). */
static int bad_at(const char *what, int e)
{
	fprintf(stderr, "# worker %d: %s: %s\n", (int)getpid(), what,
		e ? strerror(e) : "wrong result");
	return 1;
}

/* ---- server side ---- */

struct srv {
	int fd;
	__u32 sid;
	pthread_mutex_t lock;
	struct { __u32 id; char *addr; __u64 size; } maps[64];
	int nmaps;
	atomic_int threads;
	atomic_int bad;
};

static char *srv_map(struct srv *s, const struct popup_context *c)
{
	char *addr = NULL;

	pthread_mutex_lock(&s->lock);
	for (int i = 0; i < s->nmaps; i++)
		if (s->maps[i].id == c->binding_id)
			addr = s->maps[i].addr;
	if (!addr && s->nmaps < 64) {
		addr = mmap(NULL, c->map_size, PROT_READ | PROT_WRITE, MAP_SHARED,
			    s->fd, c->map_offset);
		if (addr == MAP_FAILED) {
			addr = NULL;
		} else {
			s->maps[s->nmaps].id = c->binding_id;
			s->maps[s->nmaps].addr = addr;
			s->maps[s->nmaps].size = c->map_size;
			s->nmaps++;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return addr;
}

static void srv_unmap(struct srv *s, __u32 id)
{
	pthread_mutex_lock(&s->lock);
	for (int i = 0; i < s->nmaps; i++) {
		if (s->maps[i].id != id)
			continue;
		munmap(s->maps[i].addr, s->maps[i].size);
		s->maps[i] = s->maps[--s->nmaps];
		break;
	}
	pthread_mutex_unlock(&s->lock);
}

static void *srv_thread(void *p)
{
	struct srv *s = p;
	unsigned long cmd = POPUP_IOC_WAIT;
	unsigned int seed = (unsigned int)(uintptr_t)&cmd;
	struct popup_wait w;

	memset(&w, 0, sizeof(w));
	w.size = sizeof(w);
	w.service_id = s->sid;
	w.flags = POPUP_WAIT_NEW;
	for (;;) {
		if (ioctl(s->fd, cmd, &w)) {
			if (errno == EINTR) {
				cmd = POPUP_IOC_WAIT;
				memset(&w.reply, 0, sizeof(w.reply));
				continue;
			}
			if (errno != ENOENT && errno != EBADF && errno != EPERM &&
			    errno != ECANCELED)
				atomic_fetch_add(&s->bad, bad_at("server WAIT", errno));
			break;
		}
		w.flags = POPUP_WAIT_POOL;
		cmd = POPUP_IOC_WAIT;
		memset(&w.reply, 0, sizeof(w.reply));
		if (w.kind == POPUP_WAIT_KIND_RETIRE)
			break;
		if (w.kind == POPUP_WAIT_KIND_UNMAP)
			srv_unmap(s, w.ctx.binding_id);
		if (w.kind != POPUP_WAIT_KIND_CALL)
			continue;
		char *base = srv_map(s, &w.ctx);
		__u64 *slot = base ? (__u64 *)(base + w.ctx.slot_offset) : NULL;

		w.reply.ctx_id = w.ctx.ctx_id;
		if (slot && w.ctx.method == 1) {
			*slot = *slot * 3 + 1;
			w.reply.result_len = 8;
		} else if (w.ctx.method == 2) {
			usleep(rnd(&seed, 3000));
		}
		cmd = POPUP_IOC_REPLY_WAIT;
	}
	atomic_fetch_sub(&s->threads, 1);
	return NULL;
}

static int srv_start(struct srv *s, int k, unsigned int *seed)
{
	struct popup_export e;
	pthread_t th;
	int n = 1 + rnd(seed, 3);

	memset(&e, 0, sizeof(e));
	e.size = sizeof(e);
	name_of(e.name, k);
	e.version = 1;
	e.nmethods = 3;
	e.methods = (uintptr_t)methods;
	e.pool = (struct popup_pool){
		.min_idle = rnd(seed, 2), .max_idle = 2, .increment = 1,
		.max_threads = 4, .queue_limit = rnd(seed, 8),
		.idle_timeout_ms = 50,
	};
	s->fd = open("/dev/popup", O_RDWR | O_CLOEXEC);
	if (s->fd < 0)
		return -1;
	if (ioctl(s->fd, POPUP_IOC_EXPORT, &e)) {
		close(s->fd);
		s->fd = -1;
		return errno == EEXIST ? 0 : -1;
	}
	s->sid = e.service_id;
	while (n--) {
		atomic_fetch_add(&s->threads, 1);
		if (pthread_create(&th, NULL, srv_thread, s))
			atomic_fetch_sub(&s->threads, 1);
		else
			pthread_detach(th);
	}
	return 0;
}

/* Withdraw or just close: threads leave with ENOENT or EBADF. */
static void srv_stop(struct srv *s, unsigned int *seed)
{
	struct popup_target t = { .id = s->sid };

	if (s->fd < 0)
		return;
	if (rnd(seed, 2))
		ioctl(s->fd, POPUP_IOC_WITHDRAW, &t);
	close(s->fd);
	for (int i = 0; i < 2000 && atomic_load(&s->threads); i++)
		usleep(1000);
	pthread_mutex_lock(&s->lock);
	for (int i = 0; i < s->nmaps; i++)
		munmap(s->maps[i].addr, s->maps[i].size);
	s->nmaps = 0;
	pthread_mutex_unlock(&s->lock);
	s->fd = -1;
}

/* ---- client side ---- */

struct cli {
	int fd;
	struct popup_import imp;
	char *base;
};

static int cli_open(struct cli *c, int k)
{
	memset(&c->imp, 0, sizeof(c->imp));
	c->imp.size = sizeof(c->imp);
	name_of(c->imp.name, k);
	c->imp.version = 1;
	c->imp.nslots = 4;
	c->base = NULL;
	c->fd = open("/dev/popup", O_RDWR | O_CLOEXEC);
	if (c->fd < 0)
		return -1;
	if (ioctl(c->fd, POPUP_IOC_IMPORT, &c->imp)) {
		close(c->fd);
		c->fd = -1;
		return errno == ENOENT ? 0 : -1;
	}
	c->base = mmap(NULL, c->imp.map_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		       c->fd, c->imp.map_offset);
	if (c->base == MAP_FAILED)
		c->base = NULL;
	return 0;
}

static void cli_close(struct cli *c, unsigned int *seed)
{
	struct popup_target t = { .id = c->imp.binding_id };

	if (c->fd < 0)
		return;
	if (rnd(seed, 2))
		ioctl(c->fd, POPUP_IOC_UNIMPORT, &t);
	if (c->base)
		munmap(c->base, c->imp.map_size);
	c->base = NULL;
	close(c->fd);
	c->fd = -1;
}

/* One random call; returns 0, or 1 on a wrong result or errno. */
static int cli_call(struct cli *c, unsigned int *seed)
{
	struct popup_call call;
	__u32 slot = rnd(seed, 4);
	__u64 x = rand_r(seed);

	if (!c->base)
		return 0;
	memset(&call, 0, sizeof(call));
	call.size = sizeof(call);
	call.binding_id = c->imp.binding_id;
	call.method = 1 + rnd(seed, 3);
	call.slot = slot;
	call.arg_len = 8;
	call.timeout_ms = rnd(seed, 3) ? 20 + rnd(seed, 50) : 0;
	if (!call.timeout_ms)
		ualarm(100000, 0);	/* no call waits forever */
	if (rnd(seed, 4) == 0)
		call.flags |= POPUP_CALL_BLOCK;
	*(__u64 *)(c->base + slot * c->imp.slot_size) = x;
	int r = ioctl(c->fd, POPUP_IOC_CALL, &call);
	int e = errno;

	ualarm(0, 0);
	if (r)
		return call_errno_ok(e) ? 0 : bad_at("CALL", e);
	if (call.method == 1 &&
	    (call.result_len != 8 ||
	     *(__u64 *)(c->base + slot * c->imp.slot_size) != x * 3 + 1))
		return bad_at("CALL", 0);
	return 0;
}

static int worker(int id, time_t end)
{
	unsigned int seed = getpid() * 2654435761u + id;
	struct srv s = { .fd = -1 };
	struct cli c[2] = { { .fd = -1 }, { .fd = -1 } };
	struct sigaction sa = { .sa_handler = on_alarm };
	int bad = 0;

	sigaction(SIGALRM, &sa, NULL);
	pthread_mutex_init(&s.lock, NULL);
	while (time(NULL) < end && bad == 0) {
		int k = rnd(&seed, NNAMES), which = rnd(&seed, 2);

		switch (rnd(&seed, 10)) {
		case 0:
			if (s.fd < 0 && srv_start(&s, k, &seed))
				bad += bad_at("server start", errno);
			break;
		case 1:
			srv_stop(&s, &seed);
			break;
		case 2:
			if (c[which].fd < 0 && cli_open(&c[which], k))
				bad += bad_at("client open", errno);
			break;
		case 3:
			cli_close(&c[which], &seed);
			break;
		case 4: {
			/* A child calls and is killed at a random moment. */
			pid_t pid = fork();

			if (pid == 0) {
				struct cli cc = { .fd = -1 };

				/*
				 * Hold none of the worker's files, and die
				 * with it if it is killed first: an orphan
				 * would keep its services alive.
				 */
				prctl(PR_SET_PDEATHSIG, SIGKILL);
				if (getppid() == 1)
					_exit(0);
				if (s.fd >= 0)
					close(s.fd);
				for (int j = 0; j < 2; j++)
					if (c[j].fd >= 0)
						close(c[j].fd);

				cli_open(&cc, k);
				for (int i = 0; i < 100; i++)
					cli_call(&cc, &seed);
				_exit(0);
			}
			if (pid > 0) {
				usleep(rnd(&seed, 5000));
				kill(pid, SIGKILL);
				waitpid(pid, NULL, 0);
			}
			break;
		}
		default:
			for (int i = 0; i < 20; i++)
				bad += cli_call(&c[which], &seed);
			break;
		}
		bad += atomic_exchange(&s.bad, 0);
	}
	srv_stop(&s, &seed);
	cli_close(&c[0], &seed);
	cli_close(&c[1], &seed);
	return bad ? 1 : 0;
}

static pid_t start_worker(int id, time_t end)
{
	pid_t pid = fork();

	if (pid == 0)
		_exit(worker(id, end));
	return pid;
}

static int ours_listed(void)
{
	char line[512];
	int n = 0;
	FILE *f = fopen("/proc/popup/services", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, prefix))
			n++;
	fclose(f);
	return n;
}

TEST(stress)
{
	const char *env = getenv("POPUP_STRESS_SECS");
	int secs = env ? atoi(env) : 10;
	unsigned int seed = getpid();
	pid_t pids[NWORKERS];
	time_t end;
	int err = popup_test_load_module(), failed = 0, kills = 0, status;

	if (err)
		SKIP(return, "popup.ko not loadable here (%s); run in scripts/vm", strerror(-err));
	snprintf(prefix, sizeof(prefix), "kmod_stress.%d", getpid());
	end = time(NULL) + secs;
	for (int i = 0; i < NWORKERS; i++)
		pids[i] = start_worker(i, end);
	while (time(NULL) < end) {
		usleep(200000 + rnd(&seed, 300000));
		int i = rnd(&seed, NWORKERS);

		kill(pids[i], SIGKILL);
		waitpid(pids[i], &status, 0);
		kills++;
		pids[i] = start_worker(i, end);
	}
	for (int i = 0; i < NWORKERS; i++) {
		/* A worker stuck past the deadline is a hang. */
		for (int t = 0; t < 100; t++) {
			if (waitpid(pids[i], &status, WNOHANG) == pids[i])
				break;
			usleep(100000);
		}
		if (waitpid(pids[i], &status, WNOHANG) == 0) {
			TH_LOG("worker %d hung", i);
			failed++;
			kill(pids[i], SIGKILL);
			waitpid(pids[i], &status, 0);
			continue;
		}
		if (!WIFEXITED(status) || WEXITSTATUS(status)) {
			TH_LOG("worker %d failed (status 0x%x)", i, status);
			failed++;
		}
	}
	TH_LOG("%d s, %d workers killed and restarted", secs, kills);
	EXPECT_EQ(0, failed);
	/* Dying grandchildren may still be releasing their files. */
	for (int t = 0; t < 200 && ours_listed() > 0; t++)
		usleep(10000);
	EXPECT_EQ(0, ours_listed());
}

TEST_HARNESS_MAIN
