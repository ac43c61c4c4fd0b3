// SPDX-License-Identifier: GPL-2.0
/*
 * popup-epoll-server: the classic multi-threaded epoll server, as the
 * baseline popupd is measured against (scripts/bench.sh).
 *
 *   popup-epoll-server [--port P] [--http-port H] [--cpus LIST]
 *                      [--stats-out FILE] [--exclusive]
 *
 * One listening TCP socket for the native protocol, one for HTTP and one
 * UDP socket, all shared by every thread (no SO_REUSEPORT); one thread per
 * CPU of the list, pinned, each with its own epoll instance watching the
 * shared sockets level-triggered (so every thread wakes for each arrival:
 * the thundering herd; --exclusive adds EPOLLEXCLUSIVE) plus the
 * connections it accepted. Requests are served inline:
 *   native  echo: the request comes back with the reply flag, status 0
 *   HTTP    any request gets "200 OK" with the request body echoed (what
 *           popupd's POST /echo/echo answers); only Content-Length bodies
 *   UDP     native protocol, one message per datagram
 * On SIGTERM or SIGINT it writes per-thread counters as JSON (the shape of
 * `popupctl stats --json`: cpus[].requests, share, locality; balance) to
 * --stats-out, and exits. Locality counts requests served on the CPU their
 * client ran on: popup-bench puts its pinned CPU in the top 16 bits of the
 * request id, and on loopback that is the CPU that receives the packet.
 * HTTP requests carry no CPU, so they count for share but not locality.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cpus.h"
#include "popup/wire.h"

#define BUF_SZ		(128 * 1024)
#define MAX_MSG		65536

enum kind { K_NATIVE_LISTEN, K_HTTP_LISTEN, K_UDP, K_NATIVE, K_HTTP };

struct conn {
	enum kind kind;
	int fd;
	size_t len;
	unsigned char *buf;
};

struct worker {
	pthread_t th;
	int cpu;
	uint64_t requests, local, with_cpu;
	char pad[64];
};

static struct conn lsn_native = { .kind = K_NATIVE_LISTEN, .fd = -1 },
		   lsn_http = { .kind = K_HTTP_LISTEN, .fd = -1 },
		   udp_sock = { .kind = K_UDP, .fd = -1 };
static volatile sig_atomic_t stopping;
static bool exclusive;

static int listen_on(int type, int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) ||
	    (type == SOCK_STREAM && listen(fd, 4096))) {
		fprintf(stderr, "popup-epoll-server: port %d: %s\n", port, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static int send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				struct pollfd pf = { .fd = fd, .events = POLLOUT };

				if (poll(&pf, 1, 1000) <= 0)
					return -1;
				continue;
			}
			return -1;
		}
		p += n;
		len -= n;
	}
	return 0;
}

static void count(struct worker *w, uint64_t req_id, bool has_cpu)
{
	w->requests++;
	if (has_cpu) {
		w->with_cpu++;
		if ((int)(req_id >> 48) == w->cpu)
			w->local++;
	}
}

/* Turn a native request in place into its echo reply; false if malformed. */
static bool native_reply(unsigned char *m, struct popup_wire_hdr *h)
{
	if (popup_wire_check(h, MAX_MSG) != POPUP_WIRE_S_OK)
		return false;
	h->flags = POPUP_WIRE_F_REPLY;
	h->status = POPUP_WIRE_S_OK;
	popup_wire_encode(m, h);
	return true;
}

/* Serve every complete native message in the buffer; -1: close. */
static int serve_native(struct worker *w, struct conn *c)
{
	size_t off = 0;

	while (c->len - off >= POPUP_WIRE_HDR_LEN) {
		struct popup_wire_hdr h;
		size_t total;

		popup_wire_decode(c->buf + off, &h);
		if (h.len > MAX_MSG)
			return -1;
		total = POPUP_WIRE_HDR_LEN + h.len;
		if (c->len - off < total)
			break;
		if (!native_reply(c->buf + off, &h) || send_all(c->fd, c->buf + off, total))
			return -1;
		count(w, h.req_id, true);
		off += total;
	}
	memmove(c->buf, c->buf + off, c->len - off);
	c->len -= off;
	return 0;
}

static size_t content_length(const char *hdr, size_t hlen)
{
	const char *p = hdr, *end = hdr + hlen;

	while (p < end) {
		const char *eol = memmem(p, end - p, "\r\n", 2);

		if (!eol)
			break;
		if (eol - p > 15 && !strncasecmp(p, "Content-Length:", 15))
			return strtoul(p + 15, NULL, 10);
		p = eol + 2;
	}
	return 0;
}

static int serve_http(struct worker *w, struct conn *c)
{
	size_t off = 0;
	char head[160];

	for (;;) {
		unsigned char *s = c->buf + off;
		unsigned char *eoh = memmem(s, c->len - off, "\r\n\r\n", 4);
		size_t hlen, blen;
		int n;

		if (!eoh)
			break;
		hlen = eoh + 4 - s;
		blen = content_length((const char *)s, hlen);
		if (blen > MAX_MSG)
			return -1;
		if (c->len - off < hlen + blen)
			break;
		n = snprintf(head, sizeof(head),
			     "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
			     "Content-Length: %zu\r\n\r\n", blen);
		/* header and body in one write: copy the body behind the header */
		if (blen <= sizeof(head) - n - 1) {
			memcpy(head + n, s + hlen, blen);
			if (send_all(c->fd, head, n + blen))
				return -1;
		} else if (send_all(c->fd, head, n) || send_all(c->fd, s + hlen, blen)) {
			return -1;
		}
		count(w, 0, false);
		off += hlen + blen;
	}
	if (off == 0 && c->len == BUF_SZ)
		return -1;	/* headers too long */
	memmove(c->buf, c->buf + off, c->len - off);
	c->len -= off;
	return 0;
}

static void do_accept(int ep, struct conn *l)
{
	for (;;) {
		int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC), one = 1;
		struct epoll_event ev = { .events = EPOLLIN };
		struct conn *c;

		if (fd < 0)
			return;		/* EAGAIN: another thread took it */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c = calloc(1, sizeof(*c));
		c->buf = malloc(BUF_SZ);
		c->fd = fd;
		c->kind = l->kind == K_NATIVE_LISTEN ? K_NATIVE : K_HTTP;
		ev.data.ptr = c;
		epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
	}
}

static void do_udp(struct worker *w)
{
	unsigned char buf[MAX_MSG + POPUP_WIRE_HDR_LEN];

	for (;;) {
		struct sockaddr_storage from;
		socklen_t fl = sizeof(from);
		struct popup_wire_hdr h;
		ssize_t n = recvfrom(udp_sock.fd, buf, sizeof(buf), 0,
				     (struct sockaddr *)&from, &fl);

		if (n < 0)
			return;
		if (n < POPUP_WIRE_HDR_LEN)
			continue;
		popup_wire_decode(buf, &h);
		if (h.len != n - POPUP_WIRE_HDR_LEN || !native_reply(buf, &h))
			continue;
		sendto(udp_sock.fd, buf, n, 0, (struct sockaddr *)&from, fl);
		count(w, h.req_id, true);
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct epoll_event evs[64];
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct conn *shared[] = { &lsn_native, &lsn_http, &udp_sock };

	cpus_pin_self(w->cpu);
	for (unsigned int i = 0; i < 3; i++) {
		struct epoll_event ev = { .events = EPOLLIN | (exclusive ? EPOLLEXCLUSIVE : 0),
					  .data.ptr = shared[i] };

		if (shared[i]->fd >= 0)
			epoll_ctl(ep, EPOLL_CTL_ADD, shared[i]->fd, &ev);
	}
	while (!stopping) {
		int n = epoll_wait(ep, evs, 64, 100);

		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			ssize_t r;

			switch (c->kind) {
			case K_NATIVE_LISTEN:
			case K_HTTP_LISTEN:
				do_accept(ep, c);
				continue;
			case K_UDP:
				do_udp(w);
				continue;
			default:
				break;
			}
			r = recv(c->fd, c->buf + c->len, BUF_SZ - c->len, 0);
			if (r < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (r > 0) {
				c->len += r;
				if (!(c->kind == K_NATIVE ? serve_native(w, c) : serve_http(w, c)))
					continue;
			}
			close(c->fd);	/* also leaves the epoll set */
			free(c->buf);
			free(c);
		}
	}
	return NULL;
}

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "http-port", required_argument, NULL, 'H' },
		{ "cpus", required_argument, NULL, 'c' },
		{ "stats-out", required_argument, NULL, 'o' },
		{ "exclusive", no_argument, NULL, 'x' },
		{}
	};
	int port = 7370, hport = 7371, c, nw = 0;
	const char *stats_out = NULL;
	struct worker *ws;
	cpu_set_t cpus;
	uint64_t total = 0, mx = 0, mn = UINT64_MAX;

	cpus_online(&cpus);
	while ((c = getopt_long(argc, argv, "p:H:c:o:x", lo, NULL)) != -1) {
		switch (c) {
		case 'p': port = atoi(optarg); break;
		case 'H': hport = atoi(optarg); break;
		case 'c':
			if (cpus_parse(optarg, &cpus)) {
				fprintf(stderr, "popup-epoll-server: bad CPU list %s\n", optarg);
				return 2;
			}
			break;
		case 'o': stats_out = optarg; break;
		case 'x': exclusive = true; break;
		default:
			fprintf(stderr, "usage: popup-epoll-server [--port P] [--http-port H] "
				"[--cpus LIST] [--stats-out FILE] [--exclusive]\n");
			return 2;
		}
	}
	lsn_native.fd = listen_on(SOCK_STREAM, port);
	udp_sock.fd = listen_on(SOCK_DGRAM, port);
	lsn_http.fd = listen_on(SOCK_STREAM, hport);
	if (lsn_native.fd < 0 || udp_sock.fd < 0 || lsn_http.fd < 0)
		return 1;
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	signal(SIGPIPE, SIG_IGN);
	ws = calloc(CPU_SETSIZE, sizeof(*ws));
	sigset_t ss, old;

	/* workers block the signals, so they reach pause() below */
	sigemptyset(&ss);
	sigaddset(&ss, SIGTERM);
	sigaddset(&ss, SIGINT);
	pthread_sigmask(SIG_BLOCK, &ss, &old);
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
		if (!CPU_ISSET(cpu, &cpus))
			continue;
		ws[nw].cpu = cpu;
		pthread_create(&ws[nw].th, NULL, worker_main, &ws[nw]);
		nw++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	while (!stopping)
		pause();
	for (int i = 0; i < nw; i++) {
		pthread_join(ws[i].th, NULL);
		total += ws[i].requests;
		if (ws[i].requests > mx)
			mx = ws[i].requests;
		if (ws[i].requests < mn)
			mn = ws[i].requests;
	}
	if (stats_out) {
		FILE *f = fopen(stats_out, "w");

		if (!f)
			return 1;
		fprintf(f, "{\"total\":%llu,\"balance\":", (unsigned long long)total);
		if (mn)
			fprintf(f, "%.4f", (double)mx / mn);
		else
			fprintf(f, "null");
		fprintf(f, ",\"cpus\":[");
		for (int i = 0; i < nw; i++) {
			fprintf(f, "%s{\"cpu\":%d,\"requests\":%llu,\"share\":%.4f,\"locality\":",
				i ? "," : "", ws[i].cpu, (unsigned long long)ws[i].requests,
				total ? (double)ws[i].requests / total : 0.0);
			if (ws[i].with_cpu)
				fprintf(f, "%.4f}", (double)ws[i].local / ws[i].with_cpu);
			else
				fprintf(f, "null}");
		}
		fprintf(f, "]}\n");
		fclose(f);
	}
	return 0;
}
