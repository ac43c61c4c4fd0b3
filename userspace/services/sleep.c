// SPDX-License-Identifier: LGPL-2.1 OR BSD-2-Clause
/*
 * sleep: handlers that take time, for pool, overload and deadline tests.
 *
 *   sleep MS   blocks MS milliseconds (decimal; empty = 0) in the handler
 *   spin  MS   burns MS milliseconds of CPU
 *
 * Both stop at the call's deadline and then return -ETIMEDOUT, as a
 * well-behaved blocking handler should: a caller that has given up does
 * not need the work finished. The pool is small on purpose (4 threads, 16
 * queued) so tests reach "busy" with a handful of requests; popupd.conf
 * can change it.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "popup/service.h"

#define MS_MAX 600000

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static int get_ms(const struct popup_svc_call *call, uint32_t *ms)
{
	char buf[16];
	char *end;
	unsigned long v;

	if (call->req_len >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, call->req, call->req_len);
	buf[call->req_len] = 0;
	if (!buf[0]) {
		*ms = 0;
		return 0;
	}
	v = strtoul(buf, &end, 10);
	if (*end || buf[0] == '-' || v > MS_MAX)
		return -EINVAL;
	*ms = v;
	return 0;
}

/* When to stop: after @ms, or at the deadline if that comes first. */
static uint64_t until(const struct popup_svc_call *call, uint32_t ms, bool *cut)
{
	uint64_t end = mono_ns() + (uint64_t)ms * 1000000;

	*cut = call->deadline_ns && call->deadline_ns < end;
	return *cut ? call->deadline_ns : end;
}

static int done(struct popup_svc_call *call, uint32_t ms, bool cut)
{
	call->res_len = snprintf(call->res, call->res_cap, "%s %u ms",
				 cut ? "deadline after less than" : "done in", ms);
	if (call->res_len > call->res_cap)
		call->res_len = call->res_cap;
	return cut ? -ETIMEDOUT : 0;
}

static int do_sleep(struct popup_svc_call *call)
{
	struct timespec ts;
	uint64_t end;
	uint32_t ms;
	bool cut;

	if (get_ms(call, &ms))
		return -EINVAL;
	end = until(call, ms, &cut);
	ts.tv_sec = end / 1000000000ull;
	ts.tv_nsec = end % 1000000000ull;
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
	return done(call, ms, cut);
}

static int do_spin(struct popup_svc_call *call)
{
	volatile uint64_t sink = 0;
	uint64_t end;
	uint32_t ms;
	bool cut;

	if (get_ms(call, &ms))
		return -EINVAL;
	end = until(call, ms, &cut);
	while (mono_ns() < end)
		for (int i = 0; i < 1000; i++)
			sink += i;
	return done(call, ms, cut);
}

static const struct popup_svc_method methods[] = {
	{ .id = 1, .name = "sleep", .max_arg = 15, .max_res = 64, .handler = do_sleep },
	{ .id = 2, .name = "spin", .max_arg = 15, .max_res = 64, .handler = do_spin },
};

POPUP_SVC_DEFINE = {
	.abi_version = POPUP_SVC_ABI_VERSION,
	.struct_size = sizeof(struct popup_svc_def),
	.name = "sleep",
	.version = 1,
	.id = 4,
	.methods = methods,
	.nr_methods = sizeof(methods) / sizeof(methods[0]),
	.dispatch = POPUP_SVC_DISPATCH_POOL,
	.pool = { .min_threads = 1, .max_threads = 4, .queue_limit = 16,
		  .timeout_ms = 10000 },
};
