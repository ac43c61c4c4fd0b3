// SPDX-License-Identifier: GPL-2.0
/*
 * popup-bench: load generator for the native protocol.
 *
 *   popup-bench tcp|udp [--connect HOST:PORT] [--cpus LIST|spread]
 *                       [--conns N] [--duration SEC] [--warmup SEC]
 *                       [--size BYTES] [--service ID] [--method ID] [--json]
 *                       [--hist FILE] [--rate REQ_PER_S]
 *   popup-bench local ...   (null-call round trips; see local.c)
 *   popup-bench versus ...  (two servers, alternating bursts; versus.c)
 *
 * Closed loop (default): each client thread is pinned to one CPU of the
 * list (so the kernel receives its requests there and the steering program
 * should hand them to that CPU's worker), keeps one request outstanding per
 * connection and checks every reply: request id, status and payload.
 * Latency goes into a log-linear histogram (16 sub-buckets per power of
 * two, ~6 % precision), which is enough for p50..p99.9 without a
 * dependency.
 *
 * Open loop (--rate R): R requests per second in total, split evenly over
 * the client threads (staggered) and round-robin over their connections,
 * sent on a fixed schedule whether or not earlier replies came back; a
 * connection carries as many requests as are outstanding (pipelined; UDP
 * datagrams). Latency runs from each request's intended send time, not
 * from when it was sent, so a stalled server or client is not hidden
 * (no coordinated omission). A send more than LATE_NS behind its time is
 * counted late; a send whose time came in the measured window but that
 * was never made (the client fell that far behind) is counted missed;
 * a reply not back IO_TIMEOUT_MS after the window is a timeout.
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
	double rate;		/* open loop: requests/s in total; 0: closed */
};

struct client {
	pthread_t th;
	int cpu;
	const struct opts *o;
	struct hist h;
	uint64_t ok, errors, timeouts;
	int ran_on_cpu;		/* sched_getcpu() seen at the end */
	/* open loop */
	double rate;		/* this thread's share, requests/s */
	uint64_t first_due;	/* its first intended send time */
	uint64_t sent, late, missed;
};

static struct sockaddr_storage target;
static socklen_t target_len;
static volatile int phase;	/* 0 warm-up, 1 measuring, 2 stop */
/* Open loop: the measured window, by intended send time (0: not yet). */
static uint64_t meas_start, meas_end;

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

int bench_connect(const struct sockaddr_storage *ss, socklen_t len, bool udp)
{
	int fd = socket(ss->ss_family, udp ? SOCK_DGRAM : SOCK_STREAM, 0);
	int one = 1;

	if (fd < 0)
		return -errno;
	if (!udp)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (const struct sockaddr *)ss, len)) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

static int client_socket(const struct opts *o)
{
	return bench_connect(&target, target_len, o->udp);
}

void bench_request(unsigned char *req, uint16_t method, uint32_t service,
		   uint64_t id, uint32_t size)
{
	struct popup_wire_hdr h = {
		.magic = POPUP_WIRE_MAGIC, .version = POPUP_WIRE_VERSION,
		.method = method, .service = service, .req_id = id, .len = size,
	};

	popup_wire_encode(req, &h);
	memcpy(req + POPUP_WIRE_HDR_LEN, &id, size < 8 ? size : 8);
}

/* ---- connections with requests outstanding ------------------------------ */

#define LATE_NS		1000000ull	/* a send this far behind is late */
#define OPEN_QUEUE	4096		/* outstanding requests per connection */

struct pending {
	uint64_t id;		/* 0 once answered */
	uint64_t due;		/* intended send time */
};

struct oconn {
	int fd;
	struct pending q[OPEN_QUEUE];	/* ring, in send order */
	unsigned int head, n;
	unsigned char *in;		/* TCP: bytes not parsed yet */
	size_t in_len;
};

static bool measured(uint64_t due)
{
	uint64_t s = __atomic_load_n(&meas_start, __ATOMIC_ACQUIRE);
	uint64_t e = __atomic_load_n(&meas_end, __ATOMIC_ACQUIRE);

	return s && due >= s && (!e || due < e);
}

static int open_send(struct oconn *oc, const struct opts *o, uint64_t id, uint64_t due,
		     unsigned char *req)
{
	size_t total = POPUP_WIRE_HDR_LEN + o->size;
	struct pending *p;
	int err;

	bench_request(req, o->method, o->service, id, o->size);
	if (o->udp)
		err = send(oc->fd, req, total, 0) == (ssize_t)total ? 0 : -errno;
	else
		err = send_all(oc->fd, req, total);
	if (err)
		return err;
	p = &oc->q[(oc->head + oc->n++) % OPEN_QUEUE];
	p->id = id;
	p->due = due;
	return 0;
}

/* Drop answered requests from the ring's head. */
static void open_pop(struct oconn *oc)
{
	while (oc->n && !oc->q[oc->head].id) {
		oc->head = (oc->head + 1) % OPEN_QUEUE;
		oc->n--;
	}
}

/* A reply (header + payload at @m) came back on @oc. */
static void open_reply(struct client *c, struct oconn *oc, const unsigned char *m, uint64_t now)
{
	const struct opts *o = c->o;
	struct popup_wire_hdr h;
	uint64_t pay = 0;

	popup_wire_decode(m, &h);
	for (unsigned int i = 0; i < oc->n; i++) {
		struct pending *p = &oc->q[(oc->head + i) % OPEN_QUEUE];

		if (p->id != h.req_id)
			continue;
		memcpy(&pay, m + POPUP_WIRE_HDR_LEN, o->size < 8 ? o->size : 8);
		if (measured(p->due)) {
			if (h.status == POPUP_WIRE_S_OK && h.len == o->size &&
			    (h.flags & POPUP_WIRE_F_REPLY) &&
			    (o->size < 8 ? true : pay == p->id)) {
				c->ok++;
				hist_add(&c->h, now - p->due);
			} else {
				c->errors++;
			}
		}
		p->id = 0;
		open_pop(oc);
		return;
	}
	/* A reply to nothing outstanding: over TCP a bug; over UDP usually
	 * the late reply to a request already counted as a timeout. */
	if (!o->udp)
		c->errors++;
}

/* Read what arrived on @oc; -1 when the connection broke. */
static int open_read(struct client *c, struct oconn *oc)
{
	const struct opts *o = c->o;
	size_t cap = 2 * (POPUP_WIRE_HDR_LEN + (size_t)o->size) + 65536;
	uint64_t now;
	ssize_t n;

	if (o->udp) {
		for (;;) {
			n = recv(oc->fd, oc->in, cap, MSG_DONTWAIT);
			if (n < 0)
				return errno == EAGAIN || errno == ECONNREFUSED ? 0 : -1;
			if ((size_t)n >= POPUP_WIRE_HDR_LEN + o->size)
				open_reply(c, oc, oc->in, now_ns());
			else
				c->errors++;
			/* Nothing outstanding: a stray datagram waits for the
			 * next poll, and the common case saves an EAGAIN. */
			if (!oc->n)
				return 0;
		}
	}
	n = recv(oc->fd, oc->in + oc->in_len, cap - oc->in_len, MSG_DONTWAIT);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
		return -1;
	if (n < 0)
		return 0;
	now = now_ns();
	oc->in_len += n;
	size_t off = 0;

	while (oc->in_len - off >= POPUP_WIRE_HDR_LEN) {
		struct popup_wire_hdr h;

		popup_wire_decode(oc->in + off, &h);
		if (h.magic != POPUP_WIRE_MAGIC || h.len > cap / 2)
			return -1;
		if (oc->in_len - off < POPUP_WIRE_HDR_LEN + h.len)
			break;
		open_reply(c, oc, oc->in + off, now);
		off += POPUP_WIRE_HDR_LEN + h.len;
	}
	memmove(oc->in, oc->in + off, oc->in_len - off);
	oc->in_len -= off;
	return 0;
}

/* Requests older than IO_TIMEOUT_MS (UDP losses), or all of them at the
 * end (@all), are timeouts. */
static void open_expire(struct client *c, struct oconn *oc, uint64_t now, bool all)
{
	for (unsigned int i = 0; i < oc->n; i++) {
		struct pending *p = &oc->q[(oc->head + i) % OPEN_QUEUE];

		if (!p->id)
			continue;
		if (!all && now - p->due < IO_TIMEOUT_MS * 1000000ull)
			break;
		if (measured(p->due))
			c->timeouts++;
		p->id = 0;
	}
	open_pop(oc);
}

/* Wait until @until for replies on every connection; a broken TCP one
 * loses what it had outstanding. */
static void open_poll(struct client *c, struct oconn *oc, struct pollfd *pf, uint64_t until)
{
	unsigned int nc = c->o->conns;
	uint64_t now = now_ns();
	struct timespec ts = { 0 };
	int n;

	if (until > now) {
		ts.tv_sec = (until - now) / 1000000000ull;
		ts.tv_nsec = (until - now) % 1000000000ull;
	}
	for (unsigned int i = 0; i < nc; i++) {
		pf[i].fd = oc[i].fd;
		pf[i].events = POLLIN;
		pf[i].revents = 0;
	}
	n = ppoll(pf, nc, &ts, NULL);
	for (unsigned int i = 0; n > 0 && i < nc; i++) {
		if (!pf[i].revents || oc[i].fd < 0)
			continue;
		if (open_read(c, &oc[i]) < 0) {
			open_expire(c, &oc[i], now_ns(), true);
			close(oc[i].fd);
			oc[i].fd = client_socket(c->o);
			oc[i].in_len = 0;
			c->errors++;
		}
	}
}

static bool open_idle(const struct oconn *oc, unsigned int nc)
{
	for (unsigned int i = 0; i < nc; i++)
		if (oc[i].n)
			return false;
	return true;
}

static void open_expire_all(struct client *c, struct oconn *oc, uint64_t now,
			    bool all)
{
	for (unsigned int i = 0; i < c->o->conns; i++)
		open_expire(c, &oc[i], now, all);
}

/* The run is over: wait up to IO_TIMEOUT_MS for replies, then give up. */
static void open_drain(struct client *c, struct oconn *oc, struct pollfd *pf)
{
	uint64_t end = now_ns() + IO_TIMEOUT_MS * 1000000ull;

	while (!open_idle(oc, c->o->conns) && now_ns() < end)
		open_poll(c, oc, pf, now_ns() + 10000000ull);
	open_expire_all(c, oc, 0, true);
}

static void open_loop(struct client *c, struct oconn *oc, struct pollfd *pf,
		      unsigned char *req)
{
	const struct opts *o = c->o;
	uint64_t interval = (uint64_t)(1e9 / c->rate), next = c->first_due, end;
	uint64_t id = (uint64_t)c->cpu << 48;
	unsigned int k = 0;

	while (phase < 2) {
		uint64_t now = now_ns();

		for (unsigned int tries = 0; next <= now && tries < o->conns; ) {
			struct oconn *x = &oc[k % o->conns];

			k++;
			if (x->fd < 0 || x->n == OPEN_QUEUE) {
				tries++;	/* full or broken: try the next one */
				continue;
			}
			tries = 0;
			if (open_send(x, o, ++id, next, req)) {
				if (measured(next))
					c->errors++;
			} else {
				c->sent++;
				if (now - next > LATE_NS && measured(next))
					c->late++;
			}
			next += interval;
			now = now_ns();
		}
		if (o->udp)
			open_expire_all(c, oc, now, false);
		open_poll(c, oc, pf, next > now ? next : now);
	}
	/* What the schedule wanted in the window but never went out (not
	 * counting the last LATE_NS, which the stop may have cut short). */
	end = __atomic_load_n(&meas_end, __ATOMIC_ACQUIRE) - LATE_NS;
	for (; next < end; next += interval)
		if (measured(next))
			c->missed++;
	open_drain(c, oc, pf);
}

/* Closed loop: a new request on a connection as soon as its reply came. */
static void closed_loop(struct client *c, struct oconn *oc, struct pollfd *pf,
			unsigned char *req)
{
	const struct opts *o = c->o;
	uint64_t id = (uint64_t)c->cpu << 48;

	while (phase < 2) {
		uint64_t now = now_ns();

		for (unsigned int i = 0; i < o->conns; i++) {
			if (oc[i].fd < 0 || oc[i].n)
				continue;
			if (open_send(&oc[i], o, ++id, now, req) && measured(now))
				c->errors++;
		}
		if (o->udp)
			open_expire_all(c, oc, now, false);
		open_poll(c, oc, pf, now + 10000000ull);
	}
	open_drain(c, oc, pf);
}

static void *client_main(void *arg)
{
	struct client *c = arg;
	const struct opts *o = c->o;
	size_t cap = 2 * (POPUP_WIRE_HDR_LEN + (size_t)o->size) + 65536;
	unsigned char *req = calloc(1, POPUP_WIRE_HDR_LEN + o->size);
	struct oconn *oc = calloc(o->conns, sizeof(*oc));
	struct pollfd *pf = calloc(o->conns, sizeof(*pf));
	unsigned int i;

	if (c->cpu >= 0)
		cpus_pin_self(c->cpu);
	if (!req || !oc || !pf)
		goto out;
	for (i = 0; i < o->conns; i++)
		oc[i].fd = -1;
	for (i = 0; i < o->conns; i++) {
		/* Replies pile up while this thread waits for its CPU: a
		 * small receive buffer would drop them, a loss that is the
		 * generator's, not the server's (best effort). */
		int rcvbuf = 4 << 20;

		oc[i].fd = client_socket(o);
		if (o->udp && oc[i].fd >= 0 &&
		    setsockopt(oc[i].fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)))
			setsockopt(oc[i].fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
		oc[i].in = malloc(cap);
		if (oc[i].fd < 0 || !oc[i].in) {
			fprintf(stderr, "popup-bench: connect: %s\n",
				oc[i].fd < 0 ? strerror(-oc[i].fd) : "out of memory");
			c->errors++;
			goto out;
		}
	}
	if (c->rate > 0)
		open_loop(c, oc, pf, req);
	else
		closed_loop(c, oc, pf, req);
	c->ran_on_cpu = sched_getcpu();
out:
	for (i = 0; oc && i < o->conns; i++) {
		if (oc[i].fd >= 0)
			close(oc[i].fd);
		free(oc[i].in);
	}
	free(oc);
	free(pf);
	free(req);
	return NULL;
}

int bench_resolve(const char *host, const char *port, bool udp,
		  struct sockaddr_storage *ss, socklen_t *len)
{
	struct addrinfo hints = { .ai_socktype = udp ? SOCK_DGRAM : SOCK_STREAM };
	struct addrinfo *ai;
	int err = getaddrinfo(host, port, &hints, &ai);

	if (err) {
		fprintf(stderr, "popup-bench: cannot resolve %s:%s: %s\n", host, port,
			gai_strerror(err));
		return -EINVAL;
	}
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	*len = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

void sleep_s(double s)
{
	struct timespec ts = { .tv_sec = (time_t)s, .tv_nsec = (long)((s - (time_t)s) * 1e9) };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static void report(const struct opts *o, struct client *cl, unsigned int n)
{
	struct hist all = { 0 };
	uint64_t ok = 0, errs = 0, tmo = 0, sent = 0, late = 0, missed = 0;

	for (unsigned int i = 0; i < n; i++) {
		for (unsigned int b = 0; b < HIST_BUCKETS; b++)
			all.b[b] += cl[i].h.b[b];
		all.n += cl[i].h.n;
		ok += cl[i].ok;
		errs += cl[i].errors;
		tmo += cl[i].timeouts;
		sent += cl[i].sent;
		late += cl[i].late;
		missed += cl[i].missed;
	}
	if (o->hist)
		hist_dump(&all, o->hist);
	if (o->json) {
		printf("{\"proto\":\"%s\",\"mode\":\"%s\",\"clients\":%u,\"conns\":%u,"
		       "\"size\":%u,\"duration\":%.3f,\"requests\":%llu,\"errors\":%llu,"
		       "\"timeouts\":%llu,\"rps\":%.1f,\"p50_us\":%.2f,\"p90_us\":%.2f,"
		       "\"p99_us\":%.2f,\"p999_us\":%.2f,",
		       o->udp ? "udp" : "tcp", o->rate > 0 ? "open" : "closed", n, o->conns,
		       o->size, o->duration,
		       (unsigned long long)ok, (unsigned long long)errs,
		       (unsigned long long)tmo, ok / o->duration,
		       hist_pct(&all, 50) / 1e3, hist_pct(&all, 90) / 1e3,
		       hist_pct(&all, 99) / 1e3, hist_pct(&all, 99.9) / 1e3);
		if (o->rate > 0)
			printf("\"target_rps\":%.1f,\"sent\":%llu,\"late\":%llu,\"missed\":%llu,",
			       o->rate, (unsigned long long)sent, (unsigned long long)late,
			       (unsigned long long)missed);
		printf("\"per_cpu\":[");
		for (unsigned int i = 0; i < n; i++)
			printf("%s{\"cpu\":%d,\"requests\":%llu}", i ? "," : "", cl[i].cpu,
			       (unsigned long long)cl[i].ok);
		printf("]}\n");
		return;
	}
	printf("%s: %u client threads x %u conns, %u-byte payload, %.1f s, %s\n",
	       o->udp ? "udp" : "tcp", n, o->conns, o->size, o->duration,
	       o->rate > 0 ? "open loop" : "closed loop");
	printf("  requests %llu, errors %llu, timeouts %llu, %.0f req/s\n",
	       (unsigned long long)ok, (unsigned long long)errs, (unsigned long long)tmo,
	       ok / o->duration);
	if (o->rate > 0)
		printf("  target %.0f req/s; sends late (> %llu us behind) %llu, missed %llu\n",
		       o->rate, LATE_NS / 1000, (unsigned long long)late,
		       (unsigned long long)missed);
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
		{ "rate", required_argument, NULL, 'r' },
		{}
	};
	static char hostbuf[256];
	char *colon;
	int c;

	if (argc < 2 || (strcmp(argv[1], "tcp") && strcmp(argv[1], "udp"))) {
		fprintf(stderr, "popup-bench: first argument must be tcp, udp, local, elastic or versus; see the header of userspace/bench/net.c\n");
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
		case 'r':
			o->rate = atof(optarg);
			if (!(o->rate > 0 && o->rate <= 1e8))
				goto bad;
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
	uint64_t errs = 0, t0;

	if (argc > 1 && !strcmp(argv[1], "local"))
		return local_main(argc - 1, argv + 1);
	if (argc > 1 && !strcmp(argv[1], "elastic"))
		return elastic_main(argc - 1, argv + 1);
	if (argc > 1 && !strcmp(argv[1], "versus"))
		return versus_main(argc - 1, argv + 1);
	cpus_online(&o.cpus);
	if (parse(argc, argv, &o) ||
	    bench_resolve(o.host, o.port, o.udp, &target, &target_len))
		return EXIT_USAGE;
	ncpu = CPU_COUNT(&o.cpus) ? CPU_COUNT(&o.cpus) : (unsigned int)sysconf(_SC_NPROCESSORS_ONLN);
	cl = calloc(ncpu, sizeof(*cl));
	if (!cl)
		return 1;
	/* open loop: the threads' schedules start together, staggered */
	t0 = now_ns() + 20000000ull;
	for (int cpu = 0; cpu < CPU_SETSIZE && n < ncpu; cpu++) {
		if (CPU_COUNT(&o.cpus) && !CPU_ISSET(cpu, &o.cpus))
			continue;
		cl[n].cpu = CPU_COUNT(&o.cpus) ? cpu : -1;
		cl[n].o = &o;
		if (o.rate > 0) {
			cl[n].rate = o.rate / ncpu;
			cl[n].first_due = t0 + (uint64_t)(n * 1e9 / o.rate);
		}
		if (pthread_create(&cl[n].th, NULL, client_main,
				   &cl[n]))
			break;
		n++;
	}
	sleep_s(o.warmup);
	__atomic_store_n(&meas_start, now_ns(), __ATOMIC_RELEASE);
	phase = 1;
	sleep_s(o.duration);
	__atomic_store_n(&meas_end, now_ns(), __ATOMIC_RELEASE);
	phase = 2;
	for (unsigned int i = 0; i < n; i++) {
		pthread_join(cl[i].th, NULL);
		errs += cl[i].errors + cl[i].timeouts;
	}
	report(&o, cl, n);
	free(cl);
	return errs ? 1 : 0;
}
