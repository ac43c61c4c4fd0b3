// SPDX-License-Identifier: LGPL-2.1 OR BSD-2-Clause
/*
 * work: handlers that show what a dispatch model does, for popupd's
 * dispatch tests and popup-bench's dispatch comparison
 * (scripts/bench/dispatch.sh).
 *
 *   incr  KEY   adds 1 to KEY's counter and returns the new value; a plain
 *               read, a pause, a write, without any lock: exact only when
 *               calls for one key never overlap (dispatch = per-object)
 *   get   KEY   KEY's counter
 *   wait  MS    blocks MS milliseconds (an I/O wait: a sub-server call
 *               would block the same way), then reports
 *   spin  US    burns US microseconds of CPU, then reports
 *   urgent MS   as wait, at method priority 10
 *   io    ANY   blocks io_ms milliseconds ([service.work] io_ms, default
 *               1; the wait for a sub-server's answer), then echoes ANY;
 *               with io_file = PATH it reads the first io_bytes (512) of
 *               PATH through the disk service instead (a real sub-call,
 *               which waits disk's latency_us), then echoes ANY
 *   cpu   ANY   burns cpu_us microseconds of CPU ([service.work] cpu_us,
 *               default 200), then echoes ANY
 * (io and cpu echo so that popup-bench, which checks echoed payloads,
 * can drive them: scripts/bench/dispatch.sh.)
 * wait, spin and urgent report "seq=N tid=T prio=P": N counts finished
 * calls of the service (the order they finished in), T is the handler
 * thread's id, P the priority the call ran at. tid reports T alone.
 *
 * Counters live in a fixed table of hash slots (keys that share a slot
 * share a counter): the service allocates nothing per call. Its default
 * dispatch is per-object; popupd.conf may choose any other model, which
 * makes incr racy on purpose. max_priority is 10.
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

#include "popup/service.h"

#define SLOTS	4096
#define MS_MAX	60000
#define US_MAX	10000000

static volatile uint64_t counters[SLOTS];
static uint64_t finished;	/* atomic */

static uint32_t slot_of(const struct popup_svc_call *call)
{
	const unsigned char *p = call->req;
	uint32_t h = 2166136261u;

	for (uint32_t i = 0; i < call->req_len; i++)
		h = (h ^ p[i]) * 16777619u;
	return h % SLOTS;
}

static int reply(struct popup_svc_call *call, const char *fmt, unsigned long long a,
		 unsigned long long b, long long c)
{
	int n = snprintf(call->res, call->res_cap, fmt, a, b, c);

	if (n < 0 || (uint32_t)n >= call->res_cap)
		return -EOVERFLOW;
	call->res_len = (uint32_t)n;
	return 0;
}

static int w_incr(struct popup_svc_call *call)
{
	uint32_t s = slot_of(call);
	uint64_t v;

	if (!call->req_len)
		return -EINVAL;
	v = counters[s];
	/* Widen the window between read and write: two calls for one key
	 * on two threads now lose an update almost every time. */
	sched_yield();
	counters[s] = v + 1;
	return reply(call, "%llu", (unsigned long long)(v + 1), 0, 0);
}

static int w_get(struct popup_svc_call *call)
{
	if (!call->req_len)
		return -EINVAL;
	return reply(call, "%llu", (unsigned long long)counters[slot_of(call)], 0, 0);
}

static int get_num(const struct popup_svc_call *call, unsigned long max, unsigned long *v)
{
	char buf[16], *end;

	if (call->req_len >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, call->req, call->req_len);
	buf[call->req_len] = 0;
	if (!buf[0]) {
		*v = 0;
		return 0;
	}
	*v = strtoul(buf, &end, 10);
	return *end || buf[0] == '-' || *v > max ? -EINVAL : 0;
}

static int report(struct popup_svc_call *call)
{
	uint64_t seq = __atomic_add_fetch(&finished, 1, __ATOMIC_RELAXED);

	return reply(call, "seq=%llu tid=%llu prio=%lld", (unsigned long long)seq,
		     (unsigned long long)syscall(SYS_gettid), call->priority);
}

static int w_wait(struct popup_svc_call *call)
{
	unsigned long ms;
	struct timespec ts;

	if (get_num(call, MS_MAX, &ms))
		return -EINVAL;
	ts.tv_sec = (time_t)(ms / 1000);
	ts.tv_nsec = (long)(ms % 1000) * 1000000;
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
	return report(call);
}

static uint64_t cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int w_spin(struct popup_svc_call *call)
{
	unsigned long us;
	uint64_t end;

	if (get_num(call, US_MAX, &us))
		return -EINVAL;
	end = cpu_ns() + us * 1000ull;
	while (cpu_ns() < end)
		;
	return report(call);
}

struct cost {
	unsigned long io_ms, cpu_us, io_bytes;
	char io_req[320];		/* disk read request, "" for none */
};

static int echo(struct popup_svc_call *call)
{
	if (call->req_len > call->res_cap)
		return -E2BIG;
	memcpy(call->res, call->req, call->req_len);
	call->res_len = call->req_len;
	return 0;
}

static int w_io(struct popup_svc_call *call)
{
	const struct cost *c = call->state;
	struct timespec ts = { .tv_sec = (time_t)(c->io_ms / 1000),
			       .tv_nsec = (long)(c->io_ms % 1000) * 1000000 };
	char block[4096];
	uint32_t len;
	int err;

	if (c->io_req[0]) {
		/* Only this handler waits; its thread is the model's. */
		err = call->env->call(call->env, "disk", 1, c->io_req,
				      (uint32_t)strlen(c->io_req), block,
				      sizeof(block), &len, call->deadline_ns);
		if (err)
			return err;
		return echo(call);
	}
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
	return echo(call);
}

static int w_cpu(struct popup_svc_call *call)
{
	const struct cost *c = call->state;
	uint64_t end = cpu_ns() + c->cpu_us * 1000ull;

	while (cpu_ns() < end)
		;
	return echo(call);
}

static int get_cost(const struct popup_svc_env *env, const char *key, unsigned long max,
		    unsigned long *v)
{
	const char *s = env->get(env, key);
	char *end;

	if (!s)
		return 0;
	*v = strtoul(s, &end, 10);
	if (*end || !s[0] || s[0] == '-' || *v > max) {
		env->log(env, 3, "%s '%s' is not 0..%lu", key, s, max);
		return -EINVAL;
	}
	return 0;
}

static int w_init(const struct popup_svc_env *env, void **state)
{
	struct cost *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->io_ms = 1;
	c->cpu_us = 200;
	c->io_bytes = 512;
	if (get_cost(env, "io_ms", MS_MAX, &c->io_ms) ||
	    get_cost(env, "cpu_us", US_MAX, &c->cpu_us) ||
	    get_cost(env, "io_bytes", 4096, &c->io_bytes)) {
		free(c);
		return -EINVAL;
	}
	if (env->get(env, "io_file")) {
		const char *f = env->get(env, "io_file");

		if (!env->call || strlen(f) > 255) {
			env->log(env, 3, "io_file needs popupd's sub-calls and a path under 256 bytes");
			free(c);
			return -EINVAL;
		}
		snprintf(c->io_req, sizeof(c->io_req), "0 %lu %s", c->io_bytes, f);
	}
	*state = c;
	return 0;
}

static void w_fini(void *state)
{
	free(state);
}

static int w_tid(struct popup_svc_call *call)
{
	return reply(call, "%llu", (unsigned long long)syscall(SYS_gettid), 0, 0);
}

static const struct popup_svc_method methods[] = {
	{ .id = 1, .name = "incr", .max_arg = 255, .max_res = 32, .handler = w_incr },
	{ .id = 2, .name = "get", .max_arg = 255, .max_res = 32,
	  .flags = POPUP_SVC_M_IDEMPOTENT, .handler = w_get },
	{ .id = 3, .name = "wait", .max_arg = 15, .max_res = 96, .handler = w_wait },
	{ .id = 4, .name = "spin", .max_arg = 15, .max_res = 96, .handler = w_spin },
	{ .id = 5, .name = "tid", .max_arg = 255, .max_res = 32,
	  .flags = POPUP_SVC_M_IDEMPOTENT, .handler = w_tid },
	{ .id = 6, .name = "urgent", .max_arg = 15, .max_res = 96, .handler = w_wait,
	  .priority = 10 },
	{ .id = 7, .name = "io", .max_arg = 4096, .max_res = 4096, .handler = w_io },
	{ .id = 8, .name = "cpu", .max_arg = 4096, .max_res = 4096, .handler = w_cpu },
};

POPUP_SVC_DEFINE = {
	.abi_version = POPUP_SVC_ABI_VERSION,
	.struct_size = sizeof(struct popup_svc_def),
	.name = "work",
	.version = 1,
	.id = 5,
	.methods = methods,
	.nr_methods = sizeof(methods) / sizeof(methods[0]),
	.dispatch = POPUP_SVC_DISPATCH_PER_OBJECT,
	.pool = { .min_threads = 1, .max_threads = 4, .queue_limit = 256,
		  .timeout_ms = 20000 },
	.max_priority = 10,
	.init = w_init,
	.fini = w_fini,
};
