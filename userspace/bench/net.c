// SPDX-License-Identifier: GPL-2.0
/*
 * popup-bench: load generator for the native protocol.
 *
 *   popup-bench tcp|udp [--connect HOST:PORT] [--cpus LIST|spread]
 *                       [--conns N] [--duration SEC] [--warmup SEC]
 *                       [--size BYTES] [--service ID] [--method ID] [--json]
 *                       [--hist FILE]
 *   popup-bench local ...   (null-call round trips; see local.c)
 *
 * Closed loop: each client thread is pinned to one CPU of the list (so the
 * kernel receives its requests there and the steering program should hand
 * them to that CPU's worker), keeps one request outstanding per connection
 * and checks every reply: request id, status and payload. Latency goes into
 * a log-linear histogram (16 sub-buckets per power of two, ~6 % precision),
 * which is enough for p50..p99.9 without a dependency.
 *
 * Exit status: 0 when every request got a correct reply, 1 otherwise.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
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
#define HIST_SUB	16
#define HIST_BUCKETS	(64 * HIST_SUB)
#define IO_TIMEOUT_MS	2000

struct hist {
	uint64_t b[HIST_BUCKETS];
	uint64_t n;
};

struct opts {
	bool udp, json;
	const char *host, *port;
	cpu_set_t cpus;
	unsigned int conns;	/* per client thread */
	double duration, warmup;
	uint32_t size, service;
	uint16_t method;
	const char *hist;	/* dump the latency histogram here */
};

struct client {
	pthread_t th;
	int cpu;
	const struct opts *o;
	struct hist h;
	uint64_t ok, errors, timeouts;
	int ran_on_cpu;		/* sched_getcpu() seen at the end */
};

static struct sockaddr_storage target;
static socklen_t target_len;
static volatile int phase;	/* 0 warm-up, 1 measuring, 2 stop */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static unsigned int hist_idx(uint64_t v)
{
	unsigned int msb, sub;

	if (v < HIST_SUB)
		return v;
	msb = 63 - __builtin_clzll(v);
	sub = (v >> (msb - 4)) & (HIST_SUB - 1);
	return (msb - 3) * HIST_SUB + sub;
}

static uint64_t hist_val(unsigned int idx)
{
	unsigned int msb = idx / HIST_SUB + 3, sub = idx % HIST_SUB;

	if (idx < HIST_SUB)
		return idx;
	return ((uint64_t)(HIST_SUB + sub) << (msb - 4));
}

static void hist_add(struct hist *h, uint64_t v)
{
	h->b[hist_idx(v)]++;
	h->n++;
}

static uint64_t hist_pct(const struct hist *h, double p)
{
	uint64_t want = (uint64_t)(p / 100.0 * h->n), seen = 0;

	for (unsigned int i = 0; i < HIST_BUCKETS; i++) {
		seen += h->b[i];
		if (seen > want)
			return hist_val(i);
	}
	return 0;
}

/* "upper_bound_us count cumulative_fraction" per non-empty bucket. */
static int hist_dump(const struct hist *h, const char *path)
{
	FILE *f = fopen(path, "w");
	uint64_t seen = 0;

	if (!f) {
		fprintf(stderr, "popup-bench: %s: %s\n", path, strerror(errno));
		return -errno;
	}
	fprintf(f, "# latency_us count cdf\n");
	for (unsigned int i = 0; i < HIST_BUCKETS; i++) {
		if (!h->b[i])
			continue;
		seen += h->b[i];
		fprintf(f, "%.3f %llu %.6f\n", hist_val(i + 1) / 1e3,
			(unsigned long long)h->b[i], (double)seen / h->n);
	}
	return fclose(f) ? -errno : 0;
}

static int io_wait(int fd, short ev)
{
	struct pollfd p = { .fd = fd, .events = ev };
	int n = poll(&p, 1, IO_TIMEOUT_MS);

	return n == 1 ? 0 : (n == 0 ? -ETIMEDOUT : -errno);
}

static int send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= n;
	}
	return 0;
}

static int recv_all(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len) {
		ssize_t n;
		int err = io_wait(fd, POLLIN);

		if (err)
			return err;
		n = recv(fd, p, len, 0);
		if (n == 0)
			return -ECONNRESET;
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -errno;
		}
		p += n;
		len -= n;
	}
	return 0;
}

static int client_socket(const struct opts *o)
{
	int fd = socket(target.ss_family, o->udp ? SOCK_DGRAM : SOCK_STREAM, 0);
	int one = 1;

	if (fd < 0)
		return -errno;
	if (!o->udp)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&target, target_len)) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

/* One request/reply exchange; 0 when the reply is correct. */
static int exchange(int fd, const struct opts *o, uint64_t id, unsigned char *req,
		    unsigned char *rep)
{
	struct popup_wire_hdr h = {
		.magic = POPUP_WIRE_MAGIC, .version = POPUP_WIRE_VERSION,
		.method = o->method, .service = o->service, .req_id = id, .len = o->size,
	};
	size_t total = POPUP_WIRE_HDR_LEN + o->size;
	int err;

	popup_wire_encode(req, &h);
	memcpy(req + POPUP_WIRE_HDR_LEN, &id, o->size < 8 ? o->size : 8);
	if (o->udp) {
		ssize_t n;

		if (send(fd, req, total, 0) != (ssize_t)total)
			return -errno;
		err = io_wait(fd, POLLIN);
		if (err)
			return err;
		n = recv(fd, rep, total, 0);
		if (n != (ssize_t)total)
			return n < 0 ? -errno : -EPROTO;
	} else {
		err = send_all(fd, req, total);
		if (!err)
			err = recv_all(fd, rep, POPUP_WIRE_HDR_LEN);
		if (err)
			return err;
		popup_wire_decode(rep, &h);
		if (h.len != o->size)
			return -EPROTO;
		err = recv_all(fd, rep + POPUP_WIRE_HDR_LEN, h.len);
		if (err)
			return err;
	}
	popup_wire_decode(rep, &h);
	if (h.magic != POPUP_WIRE_MAGIC || !(h.flags & POPUP_WIRE_F_REPLY) ||
	    h.req_id != id || h.status != POPUP_WIRE_S_OK || h.len != o->size ||
	    memcmp(rep + POPUP_WIRE_HDR_LEN, req + POPUP_WIRE_HDR_LEN, o->size))
		return -EPROTO;
	return 0;
}

static void *client_main(void *arg)
{
	struct client *c = arg;
	const struct opts *o = c->o;
	size_t cap = POPUP_WIRE_HDR_LEN + o->size;
	unsigned char *req = calloc(1, cap), *rep = calloc(1, cap);
	int *fds = calloc(o->conns, sizeof(int));
	uint64_t id = (uint64_t)c->cpu << 48;

	if (c->cpu >= 0)
		cpus_pin_self(c->cpu);
	if (!req || !rep || !fds)
		goto out;
	for (unsigned int i = 0; i < o->conns; i++) {
		fds[i] = client_socket(o);
		if (fds[i] < 0) {
			fprintf(stderr, "popup-bench: connect: %s\n", strerror(-fds[i]));
			c->errors++;
		}
	}
	while (phase < 2) {
		for (unsigned int i = 0; i < o->conns && phase < 2; i++) {
			uint64_t t0 = now_ns();
			int err, ph = phase;	/* counted if it started while measuring */

			if (fds[i] < 0)
				continue;
			err = exchange(fds[i], o, ++id, req, rep);
			if (ph != 1 || (!err && phase != 1))
				continue;
			if (!err) {
				c->ok++;
				hist_add(&c->h, now_ns() - t0);
			} else if (err == -ETIMEDOUT) {
				c->timeouts++;
			} else {
				c->errors++;
			}
			if (err && !o->udp) {	/* stream state unknown: reconnect */
				close(fds[i]);
				fds[i] = client_socket(o);
			}
		}
	}
	c->ran_on_cpu = sched_getcpu();
out:
	for (unsigned int i = 0; fds && i < o->conns; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	free(fds);
	free(req);
	free(rep);
	return NULL;
}

static int resolve(const struct opts *o)
{
	struct addrinfo hints = { .ai_socktype = o->udp ? SOCK_DGRAM : SOCK_STREAM };
	struct addrinfo *ai;
	int err = getaddrinfo(o->host, o->port, &hints, &ai);

	if (err) {
		fprintf(stderr, "popup-bench: cannot resolve %s:%s: %s\n", o->host, o->port,
			gai_strerror(err));
		return -EINVAL;
	}
	memcpy(&target, ai->ai_addr, ai->ai_addrlen);
	target_len = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

static void sleep_s(double s)
{
	struct timespec ts = { .tv_sec = (time_t)s, .tv_nsec = (long)((s - (time_t)s) * 1e9) };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static void report(const struct opts *o, struct client *cl, unsigned int n)
{
	struct hist all = { 0 };
	uint64_t ok = 0, errs = 0, tmo = 0;

	for (unsigned int i = 0; i < n; i++) {
		for (unsigned int b = 0; b < HIST_BUCKETS; b++)
			all.b[b] += cl[i].h.b[b];
		all.n += cl[i].h.n;
		ok += cl[i].ok;
		errs += cl[i].errors;
		tmo += cl[i].timeouts;
	}
	if (o->hist)
		hist_dump(&all, o->hist);
	if (o->json) {
		printf("{\"proto\":\"%s\",\"clients\":%u,\"conns\":%u,\"size\":%u,"
		       "\"duration\":%.3f,\"requests\":%llu,\"errors\":%llu,\"timeouts\":%llu,"
		       "\"rps\":%.1f,\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_us\":%.2f,"
		       "\"p999_us\":%.2f,\"per_cpu\":[",
		       o->udp ? "udp" : "tcp", n, o->conns, o->size, o->duration,
		       (unsigned long long)ok, (unsigned long long)errs,
		       (unsigned long long)tmo, ok / o->duration,
		       hist_pct(&all, 50) / 1e3, hist_pct(&all, 90) / 1e3,
		       hist_pct(&all, 99) / 1e3, hist_pct(&all, 99.9) / 1e3);
		for (unsigned int i = 0; i < n; i++)
			printf("%s{\"cpu\":%d,\"requests\":%llu}", i ? "," : "", cl[i].cpu,
			       (unsigned long long)cl[i].ok);
		printf("]}\n");
		return;
	}
	printf("%s: %u client threads x %u conns, %u-byte payload, %.1f s\n",
	       o->udp ? "udp" : "tcp", n, o->conns, o->size, o->duration);
	printf("  requests %llu, errors %llu, timeouts %llu, %.0f req/s\n",
	       (unsigned long long)ok, (unsigned long long)errs, (unsigned long long)tmo,
	       ok / o->duration);
	printf("  latency us: p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f\n",
	       hist_pct(&all, 50) / 1e3, hist_pct(&all, 90) / 1e3, hist_pct(&all, 99) / 1e3,
	       hist_pct(&all, 99.9) / 1e3);
	for (unsigned int i = 0; i < n; i++)
		printf("  client cpu %d: %llu requests\n", cl[i].cpu,
		       (unsigned long long)cl[i].ok);
}

static int parse(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "connect", required_argument, NULL, 'c' },
		{ "cpus", required_argument, NULL, 'C' },
		{ "conns", required_argument, NULL, 'n' },
		{ "duration", required_argument, NULL, 'd' },
		{ "warmup", required_argument, NULL, 'w' },
		{ "size", required_argument, NULL, 's' },
		{ "service", required_argument, NULL, 'S' },
		{ "method", required_argument, NULL, 'm' },
		{ "json", no_argument, NULL, 'j' },
		{ "hist", required_argument, NULL, 'H' },
		{}
	};
	static char hostbuf[256];
	char *colon;
	int c;

	if (argc < 2 || (strcmp(argv[1], "tcp") && strcmp(argv[1], "udp"))) {
		fprintf(stderr, "popup-bench: first argument must be tcp, udp, local or elastic; see the header of userspace/bench/net.c\n");
		return -EINVAL;
	}
	o->udp = !strcmp(argv[1], "udp");
	optind = 2;
	while ((c = getopt_long(argc, argv, "c:C:n:d:w:s:j", lo, NULL)) != -1) {
		switch (c) {
		case 'c':
			snprintf(hostbuf, sizeof(hostbuf), "%s", optarg);
			colon = strrchr(hostbuf, ':');
			if (!colon)
				goto bad;
			*colon = 0;
			o->host = hostbuf;
			o->port = colon + 1;
			break;
		case 'C':
			if (!strcmp(optarg, "spread"))
				CPU_ZERO(&o->cpus);
			else if (strcmp(optarg, "all") && cpus_parse(optarg, &o->cpus))
				goto bad;
			break;
		case 'n':
			o->conns = atoi(optarg);
			if (o->conns < 1 || o->conns > 1024)
				goto bad;
			break;
		case 'd':
			o->duration = atof(optarg);
			if (o->duration <= 0)
				goto bad;
			break;
		case 'w':
			o->warmup = atof(optarg);
			if (o->warmup < 0)
				goto bad;
			break;
		case 's':
			o->size = atoi(optarg);
			if (o->size > 60000)
				goto bad;
			break;
		case 'S':
			o->service = strtoul(optarg, NULL, 0);
			break;
		case 'm':
			o->method = strtoul(optarg, NULL, 0);
			break;
		case 'j':
			o->json = true;
			break;
		case 'H':
			o->hist = optarg;
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

int main(int argc, char **argv)
{
	struct opts o = {
		.host = "127.0.0.1", .port = "7070", .conns = 1, .duration = 3,
		.warmup = 0.5, .size = 64, .service = 1, .method = 1,
	};
	struct client *cl;
	unsigned int n = 0, ncpu;
	uint64_t errs = 0;

	if (argc > 1 && !strcmp(argv[1], "local"))
		return local_main(argc - 1, argv + 1);
	if (argc > 1 && !strcmp(argv[1], "elastic"))
		return elastic_main(argc - 1, argv + 1);
	cpus_online(&o.cpus);
	if (parse(argc, argv, &o) || resolve(&o))
		return EXIT_USAGE;
	ncpu = CPU_COUNT(&o.cpus) ? CPU_COUNT(&o.cpus) : (unsigned int)sysconf(_SC_NPROCESSORS_ONLN);
	cl = calloc(ncpu, sizeof(*cl));
	if (!cl)
		return 1;
	for (int cpu = 0; cpu < CPU_SETSIZE && n < ncpu; cpu++) {
		if (CPU_COUNT(&o.cpus) && !CPU_ISSET(cpu, &o.cpus))
			continue;
		cl[n].cpu = CPU_COUNT(&o.cpus) ? cpu : -1;
		cl[n].o = &o;
		if (pthread_create(&cl[n].th, NULL, client_main, &cl[n]))
			break;
		n++;
	}
	sleep_s(o.warmup);
	phase = 1;
	sleep_s(o.duration);
	phase = 2;
	for (unsigned int i = 0; i < n; i++) {
		pthread_join(cl[i].th, NULL);
		errs += cl[i].errors + cl[i].timeouts;
	}
	report(&o, cl, n);
	free(cl);
	return errs ? 1 : 0;
}
