// SPDX-License-Identifier: GPL-2.0
/*
 * popup-bench local: null-call round trips on one machine.
 *
 *   popup-bench local --mode popup|unix|pipe|futex [--backend kernel|user]
 *                     [--cpus C,S] [--iters N] [--warmup N] [--size B]
 *                     [--json] [--hist FILE]
 *
 * A client thread pinned to CPU C makes N synchronous calls, one at a time,
 * to a server thread pinned to CPU S (C == S: same-CPU hand-off; C != S:
 * cross-CPU, which pays the wake-up IPI). Every round trip carries @size
 * argument bytes and is timed on its own; percentiles are exact (sorted
 * samples). The modes:
 *   popup  libpopup: a service exported in this process (its pool threads
 *          inherit CPU S from the popup_server__run() thread) and imported
 *          with one slot; the backend is --backend, else $POPUP_BACKEND
 *   unix   a SOCK_STREAM socketpair: write the request, read the reply
 *   pipe   two pipes, same
 *   futex  a shared word and FUTEX_WAIT/FUTEX_WAKE, no spinning: the
 *          cheapest kernel-mediated thread hand-off
 *
 *   popup-bench elastic [--backend kernel|user] [--burst N] [--hold-ms M]
 *                       [--idle-timeout-ms T] [--steady SEC] [--json]
 *
 * Pop-up elasticity: N client threads issue one blocking call each (the
 * handler sleeps M ms) at once; reports the time until N handlers run
 * them, the time until the pool is back at its minimum after the idle
 * timeout, and threads spawned per second while one client calls in a
 * loop for SEC seconds (steady state: should be zero).
 */
#include <errno.h>
#include <getopt.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "cpus.h"
#include "popup/popup.h"

enum mode { M_POPUP, M_UNIX, M_PIPE, M_FUTEX };

struct lopts {
	enum mode mode;
	enum popup_backend backend;
	int ccpu, scpu;
	unsigned long iters, warmup;
	uint32_t size;
	bool json;
	const char *hist;
	/* elastic */
	unsigned int burst, hold_ms, idle_ms;
	double steady;
};

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static bool hypervisor(void)
{
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[4096];
	bool hv = false;

	if (!f)
		return false;
	while (!hv && fgets(line, sizeof(line), f))
		hv = !strncmp(line, "flags", 5) && strstr(line, " hypervisor");
	fclose(f);
	return hv;
}

/* ---- the server side of each mode ---------------------------------------- */

static int fds_req[2], fds_rep[2];	/* unix: [0] client end; pipe: r/w */
static _Atomic uint32_t fword;		/* futex: 0 idle, 1 request, 2 stop */
static volatile bool stop;

static long futex(_Atomic uint32_t *w, int op, uint32_t val)
{
	return syscall(SYS_futex, w, op, val, NULL, NULL, 0);
}

static int read_full(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len) {
		ssize_t n = read(fd, p, len);

		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= n;
	}
	return 0;
}

struct srv_arg {
	const struct lopts *o;
	struct popup_server *srv;
	int err;
};

static void *server_main(void *arg)
{
	struct srv_arg *sa = arg;
	const struct lopts *o = sa->o;
	char *buf = calloc(1, o->size + 1);

	cpus_pin_self(o->scpu);
	switch (o->mode) {
	case M_POPUP:
		sa->err = popup_server__run(sa->srv);
		break;
	case M_UNIX:
		while (!read_full(fds_req[1], buf, o->size ? o->size : 1))
			if (write(fds_req[1], buf, o->size ? o->size : 1) < 0)
				break;
		break;
	case M_PIPE:
		while (!read_full(fds_req[0], buf, o->size ? o->size : 1))
			if (write(fds_rep[1], buf, o->size ? o->size : 1) < 0)
				break;
		break;
	case M_FUTEX:
		for (;;) {
			uint32_t v = atomic_load(&fword);

			if (v == 2)
				break;
			if (v == 0) {
				futex(&fword, FUTEX_WAIT_PRIVATE, 0);
				continue;
			}
			atomic_store(&fword, 0);
			futex(&fword, FUTEX_WAKE_PRIVATE, 1);
		}
		break;
	}
	free(buf);
	return NULL;
}

static int null_handler(struct popup_request *req)
{
	req->res_len = 0;
	return 0;
}

static int sleep_handler(struct popup_request *req)
{
	uint32_t ms = 0;

	memcpy(&ms, req->arg, req->arg_len < 4 ? req->arg_len : 4);
	usleep(ms * 1000);
	req->res_len = 0;
	return 0;
}

/* One round trip from the client; 0 on success. */
static int call_once(const struct lopts *o, struct popup_binding *b, char *buf)
{
	size_t n = o->size ? o->size : 1;

	switch (o->mode) {
	case M_POPUP: {
		int r = popup_binding__call(b, 1, buf, o->size, buf, o->size + 8, NULL,
					    POPUP_TIMEOUT_INFINITE);
		return r < 0 ? r : 0;
	}
	case M_UNIX:
		if (write(fds_req[0], buf, n) != (ssize_t)n)
			return -errno;
		return read_full(fds_req[0], buf, n);
	case M_PIPE:
		if (write(fds_req[1], buf, n) != (ssize_t)n)
			return -errno;
		return read_full(fds_rep[0], buf, n);
	case M_FUTEX:
		atomic_store(&fword, 1);
		futex(&fword, FUTEX_WAKE_PRIVATE, 1);
		while (atomic_load(&fword) == 1)
			futex(&fword, FUTEX_WAIT_PRIVATE, 1);
		return 0;
	}
	return -EINVAL;
}

static const char *mode_name[] = { "popup", "unix", "pipe", "futex" };

static int parse_common(int argc, char **argv, struct lopts *o)
{
	static const struct option lo[] = {
		{ "mode", required_argument, NULL, 'm' },
		{ "backend", required_argument, NULL, 'b' },
		{ "cpus", required_argument, NULL, 'C' },
		{ "iters", required_argument, NULL, 'n' },
		{ "warmup", required_argument, NULL, 'w' },
		{ "size", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "hist", required_argument, NULL, 'H' },
		{ "burst", required_argument, NULL, 'B' },
		{ "hold-ms", required_argument, NULL, 'h' },
		{ "idle-timeout-ms", required_argument, NULL, 'i' },
		{ "steady", required_argument, NULL, 'S' },
		{}
	};
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "m:b:C:n:w:s:jH:", lo, NULL)) != -1) {
		switch (c) {
		case 'm':
			for (o->mode = 0; o->mode < 4; o->mode++)
				if (!strcmp(optarg, mode_name[o->mode]))
					break;
			if (o->mode == 4)
				goto bad;
			break;
		case 'b':
			if (!strcmp(optarg, "kernel"))
				o->backend = POPUP_BACKEND_KERNEL;
			else if (!strcmp(optarg, "user"))
				o->backend = POPUP_BACKEND_USER;
			else
				goto bad;
			break;
		case 'C':
			if (sscanf(optarg, "%d,%d", &o->ccpu, &o->scpu) != 2)
				goto bad;
			break;
		case 'n':
			o->iters = strtoul(optarg, NULL, 0);
			if (!o->iters)
				goto bad;
			break;
		case 'w':
			o->warmup = strtoul(optarg, NULL, 0);
			break;
		case 's':
			o->size = strtoul(optarg, NULL, 0);
			if (o->size > 4096)
				goto bad;
			break;
		case 'j':
			o->json = true;
			break;
		case 'H':
			o->hist = optarg;
			break;
		case 'B':
			o->burst = strtoul(optarg, NULL, 0);
			if (!o->burst || o->burst > 256)
				goto bad;
			break;
		case 'h':
			o->hold_ms = strtoul(optarg, NULL, 0);
			break;
		case 'i':
			o->idle_ms = strtoul(optarg, NULL, 0);
			break;
		case 'S':
			o->steady = atof(optarg);
			break;
		default:
			return -EINVAL;
		}
	}
	return 0;
bad:
	fprintf(stderr, "popup-bench: invalid value '%s'\n", optarg);
	return -EINVAL;
}

static struct popup_server *make_server(const struct lopts *o, const char *name,
					popup_handler_fn fn,
					const struct popup_pool_attr *pool)
{
	const struct popup_method_def m[] = {
		{ .id = 1, .max_arg = 4096, .max_res = 4096, .name = "null", .handler = fn },
	};
	POPUP_OPTS(popup_server_opts, so, .backend = o->backend, .pool = pool);

	return popup_server__create(name, 1, m, 1, &so);
}

int local_main(int argc, char **argv)
{
	struct lopts o = { .backend = POPUP_BACKEND_AUTO, .ccpu = 0, .scpu = 1,
			   .iters = 100000, .warmup = 2000, .size = 8 };
	struct srv_arg sa = { .o = &o };
	struct popup_client *cli = NULL;
	struct popup_binding *b = NULL;
	const char *backend = "-";
	uint64_t *lat, t_start, t_total, sum = 0;
	char name[64], *buf;
	pthread_t th;
	int err = 0;

	if (parse_common(argc, argv, &o))
		return 2;
	lat = calloc(o.iters, sizeof(*lat));
	buf = calloc(1, o.size + 16);
	if (!lat || !buf)
		return 1;
	switch (o.mode) {
	case M_POPUP: {
		POPUP_OPTS(popup_client_opts, co, .backend = o.backend);
		POPUP_OPTS(popup_import_opts, io, .slots = 1);

		snprintf(name, sizeof(name), "bench.null.%d", (int)getpid());
		sa.srv = make_server(&o, name, null_handler, NULL);
		if (!sa.srv) {
			err = popup_get_error(sa.srv);
			fprintf(stderr, "popup-bench local: server: %s\n", strerror(errno));
			return 1;
		}
		backend = popup_backend_name(popup_server__backend(sa.srv));
		break;
	}
	case M_UNIX:
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds_req))
			return perror("socketpair"), 1;
		break;
	case M_PIPE:
		if (pipe(fds_req) || pipe(fds_rep))
			return perror("pipe"), 1;
		break;
	case M_FUTEX:
		break;
	}
	if (pthread_create(&th, NULL, server_main, &sa))
		return 1;
	cpus_pin_self(o.ccpu);
	if (o.mode == M_POPUP) {
		POPUP_OPTS(popup_client_opts, co, .backend = o.backend);
		POPUP_OPTS(popup_import_opts, io, .slots = 1);

		cli = popup_client__open(&co);
		b = cli ? popup_client__import(cli, name, 1, &io) : NULL;
		if (!b) {
			fprintf(stderr, "popup-bench local: import: %s\n", strerror(errno));
			return 1;
		}
	}
	for (unsigned long i = 0; i < o.warmup && !err; i++)
		err = call_once(&o, b, buf);
	t_start = now_ns();
	for (unsigned long i = 0; i < o.iters && !err; i++) {
		uint64_t t0 = now_ns();

		err = call_once(&o, b, buf);
		lat[i] = now_ns() - t0;
		sum += lat[i];
	}
	t_total = now_ns() - t_start;
	if (err)
		fprintf(stderr, "popup-bench local: call: %s\n", strerror(err < 0 ? -err : EIO));

	/* stop the server */
	switch (o.mode) {
	case M_POPUP:
		popup_binding__destroy(b);
		popup_client__close(cli);
		popup_server__stop(sa.srv);
		break;
	case M_UNIX:
		shutdown(fds_req[0], SHUT_RDWR);
		break;
	case M_PIPE:
		close(fds_req[1]);
		break;
	case M_FUTEX:
		atomic_store(&fword, 2);
		futex(&fword, FUTEX_WAKE_PRIVATE, 1);
		break;
	}
	pthread_join(th, NULL);
	if (o.mode == M_POPUP)
		popup_server__destroy(sa.srv);

	qsort(lat, o.iters, sizeof(*lat), cmp_u64);
#define PCT(p) (lat[(size_t)((p) / 100.0 * (o.iters - 1))] / 1e3)
	if (o.hist) {
		FILE *f = fopen(o.hist, "w");

		if (f) {
			unsigned long step = o.iters / 1000 ? o.iters / 1000 : 1;

			fprintf(f, "# latency_us count cdf\n");
			for (unsigned long i = 0; i < o.iters; i += step)
				fprintf(f, "%.3f %lu %.6f\n", lat[i] / 1e3, step,
					(double)(i + 1) / o.iters);
			fprintf(f, "%.3f 1 1.0\n", lat[o.iters - 1] / 1e3);
			fclose(f);
		}
	}
	if (o.json)
		printf("{\"mode\":\"%s\",\"backend\":\"%s\",\"client_cpu\":%d,\"server_cpu\":%d,"
		       "\"size\":%u,\"iters\":%lu,\"errors\":%d,\"hypervisor\":%s,"
		       "\"calls_per_s\":%.1f,\"mean_us\":%.3f,\"p50_us\":%.3f,\"p90_us\":%.3f,"
		       "\"p99_us\":%.3f,\"p999_us\":%.3f,\"min_us\":%.3f}\n",
		       mode_name[o.mode], backend, o.ccpu, o.scpu, o.size, o.iters, err ? 1 : 0,
		       hypervisor() ? "true" : "false", o.iters * 1e9 / t_total,
		       sum / 1e3 / o.iters, PCT(50), PCT(90), PCT(99), PCT(99.9), lat[0] / 1e3);
	else
		printf("local %s%s%s: cpus %d,%d, %lu calls of %u bytes: p50 %.2f us, p90 %.2f, "
		       "p99 %.2f, p99.9 %.2f, mean %.2f, %.0f calls/s\n",
		       mode_name[o.mode], o.mode == M_POPUP ? "/" : "",
		       o.mode == M_POPUP ? backend : "", o.ccpu, o.scpu, o.iters, o.size,
		       PCT(50), PCT(90), PCT(99), PCT(99.9), sum / 1e3 / o.iters,
		       o.iters * 1e9 / t_total);
	free(lat);
	free(buf);
	return err ? 1 : 0;
}

/* ---- pop-up elasticity ---------------------------------------------------- */

struct burst_arg {
	struct popup_binding *b;
	uint32_t hold_ms;
	pthread_barrier_t *bar;
	int err;
};

static void *burst_main(void *arg)
{
	struct burst_arg *ba = arg;

	pthread_barrier_wait(ba->bar);
	ba->err = popup_binding__call(ba->b, 1, &ba->hold_ms, sizeof(ba->hold_ms), NULL, 0,
				      NULL, 30000);
	return NULL;
}

static void *run_main(void *arg)
{
	struct srv_arg *sa = arg;

	sa->err = popup_server__run(sa->srv);
	return NULL;
}

int elastic_main(int argc, char **argv)
{
	struct lopts o = { .backend = POPUP_BACKEND_AUTO, .burst = 16, .hold_ms = 200,
			   .idle_ms = 500, .steady = 2 };
	struct popup_pool_attr pool;
	struct popup_server_stats st0, st;
	struct srv_arg sa = { .o = &o };
	struct popup_client *cli;
	struct popup_binding **bs;
	struct burst_arg *ba;
	pthread_t run_th, *th;
	pthread_barrier_t bar;
	uint64_t t0, t_serve = 0, t_done, t_min = 0;
	uint32_t peak_busy = 0, zero = 0;
	unsigned long steady_calls = 0;
	char name[64];
	int err = 0;

	if (parse_common(argc, argv, &o))
		return 2;
	pool = (struct popup_pool_attr){
		.min_idle = 1, .max_idle = o.burst, .increment = 1,
		.max_threads = o.burst + 1, .queue_limit = 256,
		.idle_timeout_ms = o.idle_ms,
	};
	snprintf(name, sizeof(name), "bench.elastic.%d", (int)getpid());
	sa.srv = make_server(&o, name, sleep_handler, &pool);
	if (!sa.srv) {
		fprintf(stderr, "popup-bench elastic: server: %s\n", strerror(errno));
		return 1;
	}
	if (pthread_create(&run_th, NULL, run_main, &sa))
		return 1;
	{
		POPUP_OPTS(popup_client_opts, co, .backend = o.backend);
		POPUP_OPTS(popup_import_opts, io, .slots = 1);

		cli = popup_client__open(&co);
		if (!cli)
			return fprintf(stderr, "popup-bench elastic: client: %s\n",
				       strerror(errno)), 1;
		bs = calloc(o.burst, sizeof(*bs));
		ba = calloc(o.burst, sizeof(*ba));
		th = calloc(o.burst, sizeof(*th));
		for (unsigned int i = 0; i < o.burst; i++) {
			bs[i] = popup_client__import(cli, name, 1, &io);
			if (!bs[i])
				return fprintf(stderr, "popup-bench elastic: import: %s\n",
					       strerror(errno)), 1;
		}
	}
	/* let the pool settle at its minimum */
	usleep(100000);
	popup_server__stats(sa.srv, &st0);
	pthread_barrier_init(&bar, NULL, o.burst + 1);
	for (unsigned int i = 0; i < o.burst; i++) {
		ba[i] = (struct burst_arg){ .b = bs[i], .hold_ms = o.hold_ms, .bar = &bar };
		pthread_create(&th[i], NULL, burst_main, &ba[i]);
	}
	pthread_barrier_wait(&bar);
	t0 = now_ns();
	/* time until every call of the burst runs in its own handler thread */
	while (now_ns() - t0 < (uint64_t)o.hold_ms * 1000000ull * 2) {
		popup_server__stats(sa.srv, &st);
		if (st.busy > peak_busy)
			peak_busy = st.busy;
		if (st.busy >= o.burst) {
			t_serve = now_ns() - t0;
			break;
		}
		usleep(50);
	}
	for (unsigned int i = 0; i < o.burst; i++) {
		pthread_join(th[i], NULL);
		if (ba[i].err < 0)
			err = ba[i].err;
	}
	t_done = now_ns();
	popup_server__stats(sa.srv, &st);
	uint32_t threads_after_burst = st.threads;
	/* time until the pool is back at its minimum */
	while (now_ns() - t_done < (uint64_t)o.idle_ms * 1000000ull * 4 + 2000000000ull) {
		popup_server__stats(sa.srv, &st);
		if (st.threads <= pool.min_idle) {
			t_min = now_ns() - t_done;
			break;
		}
		usleep(1000);
	}
	uint32_t threads_min = st.threads;
	/* steady state: one caller in a loop, count spawns (after 0.2 s) */
	t0 = now_ns();
	while (now_ns() - t0 < 200000000ull &&
	       popup_binding__call(bs[0], 1, &zero, sizeof(zero), NULL, 0, NULL, 5000) >= 0)
		;
	popup_server__stats(sa.srv, &st0);
	t0 = now_ns();
	while (now_ns() - t0 < (uint64_t)(o.steady * 1e9)) {
		int r = popup_binding__call(bs[0], 1, &zero, sizeof(zero), NULL, 0, NULL, 5000);

		if (r < 0) {
			err = r;
			break;
		}
		steady_calls++;
	}
	double steady_s = (now_ns() - t0) / 1e9;

	popup_server__stats(sa.srv, &st);
	for (unsigned int i = 0; i < o.burst; i++)
		popup_binding__destroy(bs[i]);
	popup_client__close(cli);
	popup_server__stop(sa.srv);
	pthread_join(run_th, NULL);
	const char *backend = popup_backend_name(popup_server__backend(sa.srv));

	popup_server__destroy(sa.srv);
	if (o.json)
		printf("{\"backend\":\"%s\",\"burst\":%u,\"hold_ms\":%u,\"idle_timeout_ms\":%u,"
		       "\"peak_busy\":%u,\"burst_served_ms\":%s%.3f,\"threads_after_burst\":%u,"
		       "\"back_to_min_ms\":%.1f,\"threads_at_min\":%u,\"min_idle\":%u,"
		       "\"steady_calls\":%lu,\"steady_spawns\":%u,\"spawns_per_s\":%.3f,"
		       "\"errors\":%d}\n",
		       backend, o.burst, o.hold_ms, o.idle_ms, peak_busy, "",
		       t_serve ? t_serve / 1e6 : -1.0, threads_after_burst,
		       t_min ? t_min / 1e6 : -1.0, threads_min, pool.min_idle, steady_calls,
		       st.spawned - st0.spawned, (st.spawned - st0.spawned) / steady_s, err ? 1 : 0);
	else
		printf("elastic %s: burst of %u x %u ms: %s %.2f ms (peak busy %u); back to "
		       "min (%u threads) %.0f ms after the burst (idle timeout %u ms); steady: "
		       "%lu calls, %u spawns (%.2f/s)\n",
		       backend, o.burst, o.hold_ms, t_serve ? "all served after" : "NOT all served, waited",
		       t_serve ? t_serve / 1e6 : o.hold_ms * 2.0, peak_busy, threads_min,
		       t_min / 1e6, o.idle_ms, steady_calls, st.spawned - st0.spawned,
		       (st.spawned - st0.spawned) / steady_s);
	return err ? 1 : 0;
}
