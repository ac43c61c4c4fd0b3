// SPDX-License-Identifier: GPL-2.0
/*
 * popup-bench versus: two servers of the native protocol compared under
 * the same load at the same moments, so that the drift of a noisy machine
 * (a TCG guest swings 10 % and more between one-second runs) cancels.
 *
 *   popup-bench versus udp|tcp --a HOST:PORT --b HOST:PORT [--cpus LIST]
 *                      [--conns N] [--burst R] [--duration SEC]
 *                      [--warmup SEC] [--size BYTES] [--json]
 *
 * Each client thread is pinned to one CPU of the list and opens there
 * (so that the steering program gives a TCP connection to that CPU's
 * worker) --conns connections to each server. The threads run bursts, all on the same
 * server at a time (a barrier separates bursts) and alternating A, B, A,
 * B...: in a burst, every connection of the thread makes --burst closed-
 * loop exchanges with the burst's server, one request outstanding per
 * connection, each reply checked (request id, status, payload). A burst's
 * wall time runs from one barrier to the next. --conns 1 makes strict
 * ping-pong (one request in flight per CPU); more connections let the
 * server find several requests waiting.
 *
 * Reported per server: requests and req/s over the bursts' total time,
 * p50/p99 latency; and the median, over consecutive (A, B) burst pairs, of
 * A's req/s over B's, with its quartiles: a ratio above 1 means A served
 * the same load faster.
 *
 * Exit status: 0 when every request got a correct reply, 1 otherwise,
 * 2 on usage errors.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "cpus.h"
#include "popup/wire.h"

#define EXIT_USAGE	2
#define IO_TIMEOUT_MS	2000
#define MAX_BURSTS	(1u << 20)

struct target {
	struct sockaddr_storage addr;
	socklen_t len;
};

struct vopts {
	bool udp, json;
	struct target t[2];
	cpu_set_t cpus;
	unsigned int conns, burst, size;
	double duration, warmup;
};

/* Latencies of one server, in microseconds (a sorted copy for p50/p99). */
struct lat {
	uint32_t *v;
	size_t n, cap;
};

struct vclient {
	pthread_t th;
	int cpu;
	const struct vopts *o;
	int *fd[2];		/* --conns connections to each server */
	struct lat lat[2];
	uint64_t ok[2], errors, timeouts;
	bool broken;		/* its connections could not be opened */
};

static pthread_barrier_t barrier;
static volatile int phase;	/* 0 warm-up, 1 measuring, 2 stop */
static bool stop_now;		/* decided by the barrier's serial thread */
static uint64_t *burst_ns;	/* wall time of each measured burst */
static unsigned char *burst_side;	/* its server: 0 a, 1 b */
static unsigned int nbursts;	/* measured bursts recorded */

static void lat_add(struct lat *l, uint64_t ns)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 4096;
		uint32_t *v = realloc(l->v, cap * sizeof(*v));

		if (!v)
			return;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = (uint32_t)(ns / 1000 > UINT32_MAX ? UINT32_MAX : ns / 1000);
}

static int connect_to(const struct vopts *o, const struct target *t)
{
	struct timeval tv = { .tv_sec = IO_TIMEOUT_MS / 1000 };
	int fd = bench_connect(&t->addr, t->len, o->udp);

	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* Read one whole reply frame from a TCP connection into @rep. */
static int read_frame(int fd, unsigned char *rep, size_t cap)
{
	struct popup_wire_hdr h;
	ssize_t n = recv(fd, rep, POPUP_WIRE_HDR_LEN, MSG_WAITALL);

	if (n != POPUP_WIRE_HDR_LEN)
		return n == 0 ? -ECONNRESET : -EIO;
	popup_wire_decode(rep, &h);
	if (h.magic != POPUP_WIRE_MAGIC || POPUP_WIRE_HDR_LEN + (size_t)h.len > cap)
		return -EPROTO;
	if (h.len && recv(fd, rep + POPUP_WIRE_HDR_LEN, h.len, MSG_WAITALL) != (ssize_t)h.len)
		return -EIO;
	return 0;
}

static bool reply_ok(const struct vopts *o, const unsigned char *rep, uint64_t id)
{
	struct popup_wire_hdr h;
	uint64_t pay = 0;

	popup_wire_decode(rep, &h);
	memcpy(&pay, rep + POPUP_WIRE_HDR_LEN, o->size < 8 ? o->size : 8);
	return h.magic == POPUP_WIRE_MAGIC && (h.flags & POPUP_WIRE_F_REPLY) &&
	       h.req_id == id && h.status == POPUP_WIRE_S_OK && h.len == o->size &&
	       (o->size < 8 || pay == id);
}

/*
 * One round of a burst: a request on each connection to server @s, then
 * every reply; counted (@count) only in measured bursts. A TCP connection
 * that broke is reopened.
 */
static void round_trip(struct vclient *c, int s, uint64_t *id, unsigned char *req,
		       unsigned char *rep, size_t cap, struct pollfd *pf, uint64_t *sent_at,
		       uint64_t *ids, bool count)
{
	const struct vopts *o = c->o;
	size_t total = POPUP_WIRE_HDR_LEN + o->size;
	unsigned int left = 0;

	for (unsigned int i = 0; i < o->conns; i++) {
		pf[i].fd = c->fd[s][i];
		pf[i].events = POLLIN;
		ids[i] = ++*id;
		bench_request(req, 1, 1, ids[i], o->size);
		sent_at[i] = now_ns();
		if (pf[i].fd < 0 || send(pf[i].fd, req, total, MSG_NOSIGNAL) != (ssize_t)total) {
			pf[i].fd = -1;
			if (count)
				c->errors++;
			continue;
		}
		left++;
	}
	while (left) {
		int n = poll(pf, o->conns, IO_TIMEOUT_MS);

		if (n <= 0) {
			if (count)
				c->timeouts += left;
			return;
		}
		for (unsigned int i = 0; i < o->conns && n; i++) {
			int err;

			if (!pf[i].revents || pf[i].fd < 0)
				continue;
			n--;
			if (o->udp)
				err = recv(pf[i].fd, rep, cap, 0) >= (ssize_t)total ? 0 : -EIO;
			else
				err = read_frame(pf[i].fd, rep, cap);
			if (!err && reply_ok(o, rep, ids[i])) {
				if (count) {
					c->ok[s]++;
					lat_add(&c->lat[s], now_ns() - sent_at[i]);
				}
			} else if (count) {
				c->errors++;
			}
			if (err && !o->udp) {	/* stream state unknown: reopen */
				close(c->fd[s][i]);
				c->fd[s][i] = connect_to(o, &o->t[s]);
			}
			pf[i].fd = -1;
			left--;
		}
	}
}

/*
 * All threads meet between bursts; the barrier's serial thread times the
 * burst that just ended and decides, for everyone, whether the next one
 * is measured (*@count) and whether there is a next one.
 */
static bool burst_boundary(bool *count)
{
	static uint64_t last;
	static unsigned int k;
	static bool counting;

	if (pthread_barrier_wait(&barrier) == PTHREAD_BARRIER_SERIAL_THREAD) {
		uint64_t t = now_ns();

		if (k && counting && nbursts < MAX_BURSTS) {
			burst_side[nbursts] = (k - 1) & 1;
			burst_ns[nbursts++] = t - last;
		}
		last = t;
		counting = phase == 1;
		stop_now = phase == 2;
		k++;
	}
	pthread_barrier_wait(&barrier);
	*count = counting;
	return !stop_now;
}

static bool open_conns(struct vclient *c);

static void *vclient_main(void *arg)
{
	struct vclient *c = arg;
	const struct vopts *o = c->o;
	size_t cap = 2 * (POPUP_WIRE_HDR_LEN + (size_t)o->size) + 4096;
	unsigned char *req = calloc(1, cap), *rep = calloc(1, cap);
	struct pollfd *pf = calloc(o->conns, sizeof(*pf));
	uint64_t *sent_at = calloc(o->conns, sizeof(*sent_at));
	uint64_t *ids = calloc(o->conns, sizeof(*ids));
	uint64_t id = (uint64_t)(c->cpu + 1) << 48;
	bool count;

	/* Pinned first: a TCP connection is steered by the CPU of its SYN. */
	if (c->cpu >= 0)
		cpus_pin_self(c->cpu);
	if (!open_conns(c))
		c->broken = true;
	/* Every thread passes the same boundaries, so k agrees across them. */
	for (unsigned int k = 0; burst_boundary(&count); k++) {
		if (!req || !rep || !pf || !sent_at || !ids || c->broken)
			continue;
		for (unsigned int r = 0; r < o->burst; r++)
			round_trip(c, k & 1, &id, req, rep, cap, pf, sent_at, ids, count);
	}
	free(req);
	free(rep);
	free(pf);
	free(sent_at);
	free(ids);
	return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double pct(const struct lat *l, double p)
{
	return l->n ? l->v[(size_t)(p / 100.0 * (double)(l->n - 1))] : 0;
}

static void report(const struct vopts *o, struct vclient *cl, unsigned int n)
{
	uint64_t ok[2] = { 0 }, errs = 0, tmo = 0, ns[2] = { 0 };
	struct lat all[2] = { { 0 } };
	double *ratio = calloc(nbursts / 2 + 1, sizeof(double)), q[3] = { 0 };
	unsigned int npairs = 0;

	for (unsigned int i = 0; i < n; i++) {
		errs += cl[i].errors;
		tmo += cl[i].timeouts;
		for (int s = 0; s < 2; s++) {
			ok[s] += cl[i].ok[s];
			for (size_t k = 0; k < cl[i].lat[s].n; k++)
				lat_add(&all[s], (uint64_t)cl[i].lat[s].v[k] * 1000);
		}
	}
	for (int s = 0; s < 2; s++)
		qsort(all[s].v, all[s].n, sizeof(uint32_t), cmp_u32);
	for (unsigned int k = 0; k < nbursts; k++) {
		ns[burst_side[k]] += burst_ns[k];
		/* A pair: an a burst and the b burst right after it. */
		if (ratio && !burst_side[k] && k + 1 < nbursts && burst_side[k + 1] &&
		    burst_ns[k])
			ratio[npairs++] = (double)burst_ns[k + 1] / (double)burst_ns[k];
	}
	if (ratio && npairs) {
		qsort(ratio, npairs, sizeof(double), cmp_dbl);
		q[0] = ratio[npairs / 4];
		q[1] = ratio[npairs / 2];
		q[2] = ratio[(3 * npairs) / 4];
	}
	if (o->json) {
		printf("{\"proto\":\"%s\",\"clients\":%u,\"conns\":%u,\"burst\":%u,\"size\":%u,"
		       "\"pairs\":%u,\"errors\":%llu,\"timeouts\":%llu,",
		       o->udp ? "udp" : "tcp", n, o->conns, o->burst, o->size, npairs,
		       (unsigned long long)errs, (unsigned long long)tmo);
		for (int s = 0; s < 2; s++)
			printf("\"%s\":{\"requests\":%llu,\"rps\":%.1f,\"p50_us\":%.0f,"
			       "\"p99_us\":%.0f},", s ? "b" : "a", (unsigned long long)ok[s],
			       ns[s] ? ok[s] / (ns[s] / 1e9) : 0.0, pct(&all[s], 50),
			       pct(&all[s], 99));
		printf("\"ratio_a_over_b\":{\"q1\":%.3f,\"median\":%.3f,\"q3\":%.3f}}\n",
		       q[0], q[1], q[2]);
	} else {
		printf("versus %s: %u client threads x %u conns per server, bursts of %u rounds, "
		       "%u pairs of bursts\n", o->udp ? "udp" : "tcp", n, o->conns, o->burst,
		       npairs);
		for (int s = 0; s < 2; s++)
			printf("  %s: %llu requests, %.0f req/s in its bursts, p50 %.0f us, p99 %.0f us\n",
			       s ? "b" : "a", (unsigned long long)ok[s],
			       ns[s] ? ok[s] / (ns[s] / 1e9) : 0.0, pct(&all[s], 50),
			       pct(&all[s], 99));
		printf("  a/b req/s per burst pair: median %.3f (quartiles %.3f, %.3f)\n",
		       q[1], q[0], q[2]);
		printf("  errors %llu, timeouts %llu\n", (unsigned long long)errs,
		       (unsigned long long)tmo);
	}
	for (int s = 0; s < 2; s++)
		free(all[s].v);
	free(ratio);
}

static int resolve_target(const char *spec, bool udp, struct target *t)
{
	char host[256], *colon;

	snprintf(host, sizeof(host), "%s", spec);
	colon = strrchr(host, ':');
	if (!colon || !colon[1]) {
		fprintf(stderr, "popup-bench versus: '%s' is not HOST:PORT\n", spec);
		return -EINVAL;
	}
	*colon = 0;
	return bench_resolve(host, colon + 1, udp, &t->addr, &t->len);
}

static void vusage(void)
{
	fprintf(stderr, "usage: popup-bench versus udp|tcp --a HOST:PORT --b HOST:PORT "
		"[--cpus LIST] [--conns N] [--burst R] [--duration SEC] [--warmup SEC] "
		"[--size BYTES] [--json]\n");
}

static int vparse(int argc, char **argv, struct vopts *o)
{
	static const struct option lo[] = {
		{ "a", required_argument, NULL, 'a' },
		{ "b", required_argument, NULL, 'b' },
		{ "cpus", required_argument, NULL, 'C' },
		{ "conns", required_argument, NULL, 'n' },
		{ "burst", required_argument, NULL, 'r' },
		{ "duration", required_argument, NULL, 'd' },
		{ "warmup", required_argument, NULL, 'w' },
		{ "size", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{}
	};
	const char *spec[2] = { NULL, NULL };
	char *end;
	int c;

	if (argc < 2 || (strcmp(argv[1], "tcp") && strcmp(argv[1], "udp")))
		return -EINVAL;
	o->udp = !strcmp(argv[1], "udp");
	optind = 2;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		unsigned long v = 0;
		double d = 0;

		errno = 0;
		if (c == 'n' || c == 'r' || c == 's')
			v = strtoul(optarg, &end, 10);
		else if (c == 'd' || c == 'w')
			d = strtod(optarg, &end);
		switch (c) {
		case 'a':
		case 'b':
			spec[c - 'a'] = optarg;
			continue;
		case 'C':
			if (cpus_parse(optarg, &o->cpus))
				goto bad;
			continue;
		case 'j':
			o->json = true;
			continue;
		case '?':
			return -EINVAL;
		}
		if (errno || *end || !*optarg)
			goto bad;
		if ((c == 'n' && (v < 1 || v > 256)) || (c == 'r' && (v < 1 || v > 100000)) ||
		    (c == 's' && v > 60000) || (c == 'd' && !(d > 0)) || (c == 'w' && d < 0))
			goto bad;
		if (c == 'n')
			o->conns = (unsigned int)v;
		else if (c == 'r')
			o->burst = (unsigned int)v;
		else if (c == 's')
			o->size = (unsigned int)v;
		else if (c == 'd')
			o->duration = d;
		else
			o->warmup = d;
	}
	if (optind != argc || !spec[0] || !spec[1]) {
		fprintf(stderr, "popup-bench versus: --a and --b are required\n");
		return -EINVAL;
	}
	for (int s = 0; s < 2; s++)
		if (resolve_target(spec[s], o->udp, &o->t[s]))
			return -EINVAL;
	return 0;
bad:
	fprintf(stderr, "popup-bench versus: invalid value '%s'\n", optarg);
	return -EINVAL;
}

/* Open the thread's connections; false (with a message) if one fails. */
static bool open_conns(struct vclient *c)
{
	for (int s = 0; s < 2; s++) {
		c->fd[s] = calloc(c->o->conns, sizeof(int));
		if (!c->fd[s])
			return false;
		for (unsigned int k = 0; k < c->o->conns; k++)
			c->fd[s][k] = -1;
		for (unsigned int k = 0; k < c->o->conns; k++) {
			c->fd[s][k] = connect_to(c->o, &c->o->t[s]);
			if (c->fd[s][k] < 0) {
				fprintf(stderr, "popup-bench versus: connect to %s: %s\n",
					s ? "b" : "a", strerror(-c->fd[s][k]));
				return false;
			}
		}
	}
	return true;
}

int versus_main(int argc, char **argv)
{
	struct vopts o = { .conns = 1, .burst = 16, .size = 64, .duration = 3, .warmup = 0.5 };
	unsigned int n = 0, ncpu;
	struct vclient *cl;
	uint64_t bad = 0;
	int rc = 0;

	cpus_online(&o.cpus);
	if (vparse(argc, argv, &o)) {
		vusage();
		return EXIT_USAGE;
	}
	ncpu = CPU_COUNT(&o.cpus);
	cl = calloc(ncpu, sizeof(*cl));
	burst_ns = calloc(MAX_BURSTS, sizeof(*burst_ns));
	burst_side = calloc(MAX_BURSTS, 1);
	if (!cl || !burst_ns || !burst_side || pthread_barrier_init(&barrier, NULL, ncpu)) {
		fprintf(stderr, "popup-bench versus: out of memory\n");
		return 1;
	}
	for (int cpu = 0; cpu < CPU_SETSIZE && n < ncpu; cpu++) {
		if (!CPU_ISSET(cpu, &o.cpus))
			continue;
		cl[n].cpu = cpu;
		cl[n].o = &o;
		n++;
	}
	for (unsigned int i = 0; i < n; i++)
		if (pthread_create(&cl[i].th, NULL, vclient_main, &cl[i])) {
			fprintf(stderr, "popup-bench versus: cannot start thread %u\n", i);
			exit(1);	/* the others wait at the barrier for it */
		}
	sleep_s(o.warmup);
	phase = 1;
	sleep_s(o.duration);
	phase = 2;
	for (unsigned int i = 0; i < n; i++) {
		pthread_join(cl[i].th, NULL);
		bad += cl[i].errors + cl[i].timeouts + cl[i].broken;
	}
	report(&o, cl, n);
	rc = bad ? 1 : 0;
	for (unsigned int i = 0; i < n; i++) {
		for (int s = 0; s < 2; s++) {
			for (unsigned int k = 0; cl[i].fd[s] && k < o.conns; k++)
				if (cl[i].fd[s][k] >= 0)
					close(cl[i].fd[s][k]);
			free(cl[i].fd[s]);
			free(cl[i].lat[s].v);
		}
	}
	free(cl);
	free(burst_ns);
	free(burst_side);
	return rc;
}
