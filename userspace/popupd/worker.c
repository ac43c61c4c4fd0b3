// SPDX-License-Identifier: GPL-2.0
/*
 * Per-CPU network workers: the userspace arrival path.
 *
 * Each worker owns one SO_REUSEPORT TCP listener and one SO_REUSEPORT UDP
 * socket on the native port, one SO_REUSEPORT TCP listener on the HTTP
 * port, and runs one epoll loop on a thread pinned to its CPU. The BPF
 * steering program puts each native connection and datagram on the socket
 * of the CPU that received it, so a request is received, handled and
 * answered on one CPU without cross-CPU wake-ups (HTTP uses the kernel's
 * reuseport hash, with SO_INCOMING_CPU as a hint: the steering program
 * serves one port per group).
 *
 * The worker never runs a handler that may block: a parsed request is a
 * job, run inline only for INLINE services, otherwise queued on the
 * service's pool; the pool hands it back through worker_complete() and
 * the worker's eventfd. Connections are reference counted by the jobs in
 * flight, so a connection closed meanwhile stays valid memory until its
 * last job comes back (and the result is dropped).
 *
 * Everything is bounded: connections (whole daemon; past the limit an
 * explicit refusal), buffered input (one request of at most max_request
 * bytes plus a read), output and requests in flight per connection (past
 * them the connection is not read: backpressure, not drops), and time: a
 * silent connection is closed after idle_timeout, a partial request after
 * request_timeout from its first byte (a whole-request deadline: a
 * trickle of bytes does not extend it), and output that makes no progress
 * for write_timeout. accept() hitting the descriptor limit pauses accepting
 * for a moment instead of spinning on a listener that stays readable.
 *
 * Graceful stop (drain): the listeners' queues are accepted, then the
 * listeners closed (pending handshakes migrate to another instance's
 * listeners through the steering program's migrate hook); native
 * connections get a "going away" message (an unsolicited reply, req_id 0,
 * status busy), HTTP responses carry "Connection: close"; requests
 * already received are all answered; connections close when their peer
 * does, or once idle, and at stop_timeout at the latest. A UDP socket the
 * main thread retired first (main.c: out of steering and
 * connected to a dead peer, so nothing new lands in it) is read until it
 * stays idle for UDP_IDLE_MS, so no datagram already queued is lost.
 *
 * Run-time restart (main.c, `popupctl worker restart CPU`): the
 * main thread empties the worker's steering slot (the program then falls
 * back to the other live slots and counts it) and retires its UDP socket;
 * the thread closes its native listener, whose accept queue the migrate
 * program moves to a live worker, answers the datagrams still queued
 * until the socket stays idle, closes it and exits, keeping its
 * connections, its epoll set and its HTTP listener (not steered). The
 * main thread then binds new sockets, puts them in the same slot of
 * steer_socks (keys are slots, not socket order) and starts a new thread
 * on the same state, which serves the kept connections on.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cpus.h"
#include "log.h"
#include "popupd.h"

#define UDP_MAX		65507
#define READ_CHUNK	16384
#define SAMPLE_EVERY	16		/* locality sample period */
#define TICK_MS		100		/* timer resolution */
#define ACCEPT_PAUSE_MS	100		/* after EMFILE and friends */
#define DRAIN_LINGER_MS	1000		/* idle time before a drain closes */
#define UDP_IDLE_MS	100		/* a retired UDP socket is drained when
					 * nothing arrived for this long */

/* epoll data: small values tell the sockets apart from connection
 * pointers, which are at least 8-byte aligned. */
#define EV_TCP_LISTEN	1UL
#define EV_UDP		2UL
#define EV_WAKE		3UL
#define EV_HTTP_LISTEN	4UL

uint16_t sock_port(int fd)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);

	if (fd < 0 || getsockname(fd, (struct sockaddr *)&sa, &len))
		return 0;
	return ntohs(sa.sin_port);
}

static int reuse_bind(int fd, const char *addr, uint16_t port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	int one = 1;

	if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
		return -EINVAL;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)))
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)))
		return -errno;
	return 0;
}

/*
 * A port nobody uses for TCP nor UDP: with SO_REUSEPORT a bind to a port
 * another root process holds the same way would silently join its group
 * and share its traffic, so free ports are probed with plain sockets.
 */
static int pick_free_port(const char *addr, uint16_t *port)
{
	for (int attempt = 0; attempt < 32; attempt++) {
		struct sockaddr_in sa = { .sin_family = AF_INET };
		socklen_t len = sizeof(sa);
		int t = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		int ok = 0;

		if (t >= 0 && u >= 0 && inet_pton(AF_INET, addr, &sa.sin_addr) == 1 &&
		    !bind(t, (struct sockaddr *)&sa, sizeof(sa)) &&
		    !getsockname(t, (struct sockaddr *)&sa, &len) &&
		    !bind(u, (struct sockaddr *)&sa, sizeof(sa)))
			ok = 1;
		if (t >= 0)
			close(t);
		if (u >= 0)
			close(u);
		if (ok) {
			*port = ntohs(sa.sin_port);
			return 0;
		}
	}
	return -EADDRINUSE;
}

static int open_sock(int type, const char *addr, uint16_t port, int *out)
{
	int fd = socket(AF_INET, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int err;

	if (fd < 0)
		return -errno;
	err = reuse_bind(fd, addr, port);
	if (!err && type == SOCK_STREAM && listen(fd, 1024))
		err = -errno;
	if (err) {
		close(fd);
		return err;
	}
	*out = fd;
	return 0;
}

/*
 * Create the worker's sockets. A port of 0 picks a free port for TCP and
 * then binds UDP to the same number; the caller opens worker 0 first and
 * hands the bound ports to the others, so they join the same groups.
 */
int worker_open(struct worker *w, const struct popupd_config *cfg,
		uint16_t port, uint16_t http_port)
{
	int err = 0;

	w->tcp_fd = w->udp_fd = w->http_fd = w->spare_fd = -1;
	pthread_mutex_init(&w->done_lock, NULL);
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->epfd < 0 || w->wake_fd < 0) {
		err = -errno;
		pr_err("worker %d: cannot create epoll/eventfd: %s", w->cpu, strerror(-err));
		return err;
	}
	if (!port)
		err = pick_free_port(cfg->bind_addr, &port);
	if (!err)
		err = open_sock(SOCK_STREAM, cfg->bind_addr, port, &w->tcp_fd);
	if (!err)
		err = open_sock(SOCK_DGRAM, cfg->bind_addr, sock_port(w->tcp_fd), &w->udp_fd);
	if (err) {
		pr_err("worker %d: cannot bind the native port %s:%u: %s", w->cpu,
		       cfg->bind_addr, port, strerror(-err));
		return err;
	}
	if (cfg->http_port >= 0) {
		if (!http_port)
			err = pick_free_port(cfg->bind_addr, &http_port);
		if (!err)
			err = open_sock(SOCK_STREAM, cfg->bind_addr, http_port, &w->http_fd);
		if (err) {
			pr_err("worker %d: cannot bind the HTTP port %s:%u: %s", w->cpu,
			       cfg->bind_addr, http_port, strerror(-err));
			return err;
		}
		/* No SO_INCOMING_CPU hint here: kernels that honour it in a
		 * reuseport group (6.1+) give every connection whose SYN
		 * was handled on CPU n to worker n, so a client whose
		 * threads happened to connect from one CPU (wrk, any
		 * unpinned client) lands whole on one worker while the
		 * others idle. The kernel's 4-tuple hash spreads them. */
	}
	w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	return 0;
}

static int ep_ctl(struct worker *w, int op, int fd, uint32_t events, void *ptr)
{
	struct epoll_event ev = { .events = events, .data.ptr = ptr };

	return epoll_ctl(w->epfd, op, fd, &ev) ? -errno : 0;
}

/* Count whether the kernel received this TCP connection's last segment on
 * our CPU. Sampled, because it costs a system call. */
static void sample_locality(struct worker *w, int fd)
{
	int cpu;
	socklen_t len = sizeof(cpu);

	if (++w->sample_tick % SAMPLE_EVERY)
		return;
	if (getsockopt(fd, SOL_SOCKET, SO_INCOMING_CPU, &cpu, &len) || cpu < 0)
		return;
	ctr_add(&w->st->samples, 1);
	if (cpu == w->cpu)
		ctr_add(&w->st->local, 1);
}

/* ---- connections ------------------------------------------------------- */

static int buf_reserve(unsigned char **buf, uint32_t *cap, uint64_t need)
{
	unsigned char *nb;
	uint64_t ncap = *cap ? *cap : 4096;

	if (need <= *cap)
		return 0;
	if (need > UINT32_MAX / 2)
		return -E2BIG;
	while (ncap < need)
		ncap *= 2;
	nb = realloc(*buf, ncap);
	if (!nb)
		return -ENOMEM;
	*buf = nb;
	*cap = ncap;
	return 0;
}

int conn_reserve_out(struct conn *c, uint64_t extra)
{
	/* Reclaim the sent prefix before growing. */
	if (c->out_off && c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	return buf_reserve(&c->out, &c->out_cap, (uint64_t)c->out_len + extra);
}

void conn_append(struct conn *c, const void *p, uint32_t n)
{
	if (conn_reserve_out(c, n))
		return;	/* out of memory: the reply is lost, the
			 * write timeout or the peer ends the connection */
	memcpy(c->out + c->out_len, p, n);
	c->out_len += n;
}

bool conn_over_limits(const struct conn *c)
{
	return c->out_len - c->out_off >= LIM(max_output) ||
	       c->inflight >= LIM(max_inflight);
}

void conn_put(struct conn *c)
{
	if (--c->refs)
		return;
	free(c->lanes);
	free(c->in);
	free(c->out);
	free(c);
}

static void conn_close(struct conn *c)
{
	struct worker *w = c->w;

	if (c->fd < 0)
		return;
	close(c->fd);	/* also leaves the epoll set */
	c->fd = -1;
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	w->nconns--;
	__atomic_fetch_sub(&pd.conns, 1, __ATOMIC_RELAXED);
	/* PER_CONN: the connection's threads go back to the free set (jobs
	 * of it still queued there run first and are then dropped). */
	for (uint32_t i = 0; i < c->nr_lanes; i++)
		pool_unbind(c->lanes[i].svc->pools[0], c->lanes[i].lane);
	c->nr_lanes = 0;
	if (c->proto == PROTO_HTTP) {
		http_abandon_queue(c);
		if (c->hcur) {
			job_free(c->hcur);	/* being parsed: never dispatched */
			c->hcur = NULL;
			c->refs--;
		}
	}
	conn_put(c);	/* the list's reference */
}

static void conn_new(struct worker *w, int fd, enum conn_proto proto,
		     const struct sockaddr_storage *peer, socklen_t plen)
{
	struct conn *c = calloc(1, sizeof(*c));
	int one = 1;

	if (!c) {
		close(fd);
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->w = w;
	c->fd = fd;
	c->proto = proto;
	c->refs = 1;
	c->reading = true;
	c->ev = EPOLLIN | EPOLLRDHUP;
	c->last_active_ns = now_ns();
	memcpy(&c->peer, peer, plen);
	c->peer_len = plen;
	if (proto == PROTO_HTTP)
		http_conn_init(c);
	if (ep_ctl(w, EPOLL_CTL_ADD, fd, EPOLLIN | EPOLLRDHUP, c)) {
		close(fd);
		free(c);
		return;
	}
	c->next = w->conns;
	if (c->next)
		c->next->prev = c;
	w->conns = c;
	w->nconns++;
	__atomic_fetch_add(&pd.conns, 1, __ATOMIC_RELAXED);
	ctr_add(&w->st->conns, 1);
	if (w->draining)
		c->goaway = true;
}

static int conn_flush(struct conn *c)
{
	bool progress = false;

	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
				 MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0) {
			if (errno != EAGAIN)
				return -errno;
			break;
		}
		c->out_off += n;
		progress = true;
	}
	if (c->out_off == c->out_len) {
		c->out_off = c->out_len = 0;
		c->write_stall_ns = 0;
	} else if (progress || !c->write_stall_ns) {
		c->write_stall_ns = worker_now(c->w);
	}
	if (progress)
		c->last_active_ns = worker_now(c->w);
	return 0;
}

static bool conn_done(const struct conn *c)
{
	return !c->inflight && c->out_off == c->out_len;
}

/* Re-arm epoll for what the connection can do now. */
static int conn_arm(struct conn *c)
{
	uint32_t ev = 0;

	/* Not reading means not watching for the peer's FIN either:
	 * a level-triggered RDHUP we do not act on would spin. */
	c->reading = !c->paused && !c->closing;
	if (c->reading)
		ev |= EPOLLIN | EPOLLRDHUP;
	/* EPOLLOUT also when a parser is held back with nothing left to
	 * send (rounds ran out above): the next wake-up resumes it. */
	if (c->out_len > c->out_off || (c->paused && !conn_over_limits(c)))
		ev |= EPOLLOUT;
	/* Usually nothing changed (read, answer, all sent): the set is
	 * level-triggered, so there is nothing to re-arm. */
	if (ev == c->ev)
		return 0;
	if (ep_ctl(c->w, EPOLL_CTL_MOD, c->fd, ev, c))
		return -1;
	c->ev = ev;
	return 0;
}

static int conn_parse(struct conn *c)
{
	return c->proto == PROTO_HTTP ? http_input(c) : native_input(c);
}

/* After output or completions: flush, resume a parser that limits held
 * back once they no longer do, close when finished, re-arm. */
static void conn_kick(struct conn *c)
{
	if (c->fd < 0)
		return;
	/* Flushing first matters: the kernel may take all the output that
	 * paused the parser, and nothing else would resume it. */
	for (int round = 0; round < 8; round++) {
		if (conn_flush(c))
			goto close;
		if (!c->paused || conn_over_limits(c))
			break;
		c->paused = false;
		if (conn_parse(c) < 0) {
			c->closing = true;
			break;
		}
	}
	if (c->closing && conn_done(c))
		goto close;
	if (conn_arm(c))
		goto close;
	return;
close:
	conn_close(c);
}

static void conn_readable(struct conn *c)
{
	for (int budget = 16; budget > 0 && !c->paused && !c->closing; budget--) {
		size_t room;
		ssize_t n;

		if (buf_reserve(&c->in, &c->in_cap, (uint64_t)c->in_len + READ_CHUNK) < 0)
			goto close;
		room = c->in_cap - c->in_len;
		n = recv(c->fd, c->in + c->in_len, room, MSG_DONTWAIT);
		if (n == 0) {
			/* The peer finished sending: answer what it sent,
			 * then close. */
			c->closing = true;
			break;
		}
		if (n < 0) {
			if (errno == EAGAIN)
				break;
			goto close;
		}
		c->in_len += n;
		c->last_active_ns = worker_now(c->w);
		if (conn_parse(c) < 0) {
			ctr_add(&pd.ctr.proto_errors, 1);
			ctr_add(&c->w->st->errors, 1);
			c->closing = true;
			c->in_len = 0;
			conn_flush(c);
			goto close;
		}
		if (c->out_len - c->out_off >= LIM(max_output))
			break;
		/* A short read took all there was: another recv() would
		 * only say EAGAIN. The set is level-triggered, so bytes
		 * (or a FIN) arriving meanwhile wake us again. */
		if ((size_t)n < room)
			break;
	}
	conn_kick(c);
	return;
close:
	conn_close(c);
}

/* ---- jobs -------------------------------------------------------------- */

void job_attach(struct conn *c, struct job *j)
{
	j->conn = c;
	c->refs++;
	if (c->proto != PROTO_HTTP)
		return;
	if (c->hq_tail)
		c->hq_tail->hnext = j;
	else
		c->hq_head = j;
	c->hq_tail = j;
}

/* Hand a finished job's result to its connection (worker thread only). */
static void job_deliver(struct worker *w, struct job *j)
{
	struct conn *c = j->conn;

	ctr_add(&w->st->requests, 1);
	if (j->status || j->pstatus)
		ctr_add(&w->st->errors, 1);
	if (!c) {
		unsigned char *buf;
		uint32_t n;

		w->udp_inflight--;
		buf = malloc(POPUP_WIRE_HDR_LEN + j->res_len + 256);
		if (buf && (n = native_encode(j, buf, POPUP_WIRE_HDR_LEN + j->res_len + 256)))
			sendto(w->udp_fd, buf, n, MSG_DONTWAIT,
			       (struct sockaddr *)&j->peer, j->peer_len);
		free(buf);
		job_free(j);
		return;
	}
	c->inflight--;
	if (c->proto == PROTO_HTTP) {
		j->done = true;
		if (c->fd >= 0 && !c->http_closed) {
			http_flush_ready(c);
			return;
		}
	} else if (c->fd >= 0) {
		native_reply(c, j);
	}
	job_free(j);
	conn_put(c);
}

/* PER_CONN: the lane @c holds for @s, bound on its first request. */
static int conn_lane(struct conn *c, struct svc *s, uint32_t *lane)
{
	struct conn_lane *nl;
	int k;

	for (uint32_t i = 0; i < c->nr_lanes; i++) {
		if (c->lanes[i].svc == s) {
			*lane = c->lanes[i].lane;
			return 0;
		}
	}
	nl = realloc(c->lanes, (c->nr_lanes + 1) * sizeof(*nl));
	if (!nl)
		return -ENOMEM;
	c->lanes = nl;
	k = pool_bind(s->pools[0]);
	if (k < 0)
		return k;
	nl[c->nr_lanes].svc = s;
	nl[c->nr_lanes].lane = (uint32_t)k;
	c->nr_lanes++;
	*lane = (uint32_t)k;
	return 0;
}

/* UDP callers of a PER_CONN service: a lane per peer address. */
static uint32_t peer_lane(const struct job *j)
{
	const unsigned char *p = (const unsigned char *)&j->peer;
	uint64_t h = 14695981039346656037ull;

	for (socklen_t i = 0; i < j->peer_len; i++)
		h = (h ^ p[i]) * 1099511628211ull;
	return (uint32_t)svc_mix64(h);
}

/* The pool (and lane) that runs @j: 0, or a -errno to answer it with. */
static int route_job(struct worker *w, struct job *j, struct pool **pp)
{
	struct svc *s = j->svc;
	uint64_t key;
	int err;

	switch (s->dispatch) {
	case POPUP_SVC_DISPATCH_POOL_PERCPU:
		*pp = s->pools[w->idx];
		return 0;
	case POPUP_SVC_DISPATCH_PER_CONN:
		*pp = s->pools[0];
		if (!j->conn) {
			j->lane = peer_lane(j);
			return 0;
		}
		err = conn_lane(j->conn, s, &j->lane);
		if (err)
			j->msg = "per-connection thread limit reached";
		return err;
	case POPUP_SVC_DISPATCH_PER_OBJECT: {
		struct popup_svc_call call = {
			.method = j->m->id, .origin = j->origin, .req = j->req,
			.req_len = j->req_len, .cpu = w->cpu, .priority = j->prio,
			.pid = -1, .state = s->state,
		};

		*pp = s->pools[0];
		err = svc_object_key(s, &call, &key);
		if (err)
			j->msg = "no object key";
		j->lane = (uint32_t)(key % pool_lanes(*pp));
		return err;
	}
	default:
		*pp = s->pools[0];
		return 0;
	}
}

void dispatch_job(struct worker *w, struct job *j)
{
	struct svc *s = j->svc;
	struct pool *p;
	int err;

	j->w = w;
	if (j->conn)
		j->conn->inflight++;
	else
		w->udp_inflight++;
	if (j->pstatus || j->http_code || !s) {
		job_deliver(w, j);	/* popupd answers itself */
		return;
	}
	if (j->conn && j->conn->proto == PROTO_NATIVE)
		sample_locality(w, j->conn->fd);
	if (j->origin == POPUP_SVC_ORIGIN_UDP)
		ctr_add(&w->st->udp_requests, 1);
	else
		ctr_add(&w->st->tcp_requests, 1);
	j->deadline_ns = j->arrival_ns +
		(uint64_t)__atomic_load_n(&s->pool.timeout_ms, __ATOMIC_RELAXED) * 1000000;
	if (s->dispatch == POPUP_SVC_DISPATCH_INLINE) {
		job_run(j);
		job_deliver(w, j);
		return;
	}
	if (s->arb) {
		err = arbiter_submit(s->arb, j);	/* a subserver runs it */
		if (err)
			j->msg = err == -EBUSY ? "service queue full" : "service stopping";
	} else {
		err = route_job(w, j, &p);
		if (!err) {
			err = pool_submit(p, j);
			if (err)
				j->msg = err == -EBUSY ? "service queue full" : "service stopping";
		}
	}
	if (err) {
		if (err == -EBUSY || err == -ESHUTDOWN || err == -ENOMEM)
			err = -EBUSY;
		j->status = err;
		if (err == -EBUSY)
			ctr_add(&pd.ctr.busy, 1);
		svc_account(s, err, j->arrival_ns, false);
		job_deliver(w, j);
	}
}

void worker_complete(struct job *j)
{
	struct worker *w = j->w;
	uint64_t one = 1;
	bool first;

	pthread_mutex_lock(&w->done_lock);
	first = !w->done_head;
	j->next = w->done_head;
	w->done_head = j;
	pthread_mutex_unlock(&w->done_lock);
	if (first && write(w->wake_fd, &one, sizeof(one)) < 0)
		pr_warn("worker %d: cannot wake: %s", w->cpu, strerror(errno));
}

static struct job *take_done(struct worker *w)
{
	struct job *list, *rev = NULL;

	pthread_mutex_lock(&w->done_lock);
	list = w->done_head;
	w->done_head = NULL;
	pthread_mutex_unlock(&w->done_lock);
	while (list) {		/* oldest first */
		struct job *next = list->next;

		list->next = rev;
		rev = list;
		list = next;
	}
	return rev;
}

static void drain_completions(struct worker *w)
{
	uint64_t v;
	struct job *j, *next;

	if (read(w->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		pr_warn("worker %d: eventfd read: %s", w->cpu, strerror(errno));
	for (j = take_done(w); j; j = next) {
		struct conn *c = j->conn;

		next = j->next;
		if (c)
			c->refs++;	/* keep it across the delivery */
		job_deliver(w, j);
		if (c) {
			conn_kick(c);
			conn_put(c);
		}
	}
}

/* ---- UDP --------------------------------------------------------------- */

static void udp_drain(struct worker *w)
{
	static __thread unsigned char in[UDP_MAX];
	struct sockaddr_storage peer;
	socklen_t plen;
	ssize_t n;

	for (int budget = 64; budget > 0; budget--) {
		plen = sizeof(peer);
		n = recvfrom(w->udp_fd, in, sizeof(in), 0, (struct sockaddr *)&peer, &plen);
		if (n < 0)
			return;	/* EAGAIN, or an ICMP error: nothing to answer */
		w->udp_last_ns = worker_now(w);
		native_udp(w, in, n, &peer, plen);
	}
}

/* ---- accepting ---------------------------------------------------------- */

static void refuse(int fd, enum conn_proto proto, const char *why)
{
	if (proto == PROTO_HTTP) {
		http_refuse(fd, 503, why);
	} else {
		struct popup_wire_hdr h = {
			.magic = POPUP_WIRE_MAGIC, .version = POPUP_WIRE_VERSION,
			.flags = POPUP_WIRE_F_REPLY, .status = POPUP_WIRE_S_BUSY,
		};
		unsigned char b[POPUP_WIRE_HDR_LEN];

		popup_wire_encode(b, &h);
		if (send(fd, b, sizeof(b), MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
			pr_debug("refusal not sent: %s", strerror(errno));
	}
	close(fd);
}

static void accept_pause(struct worker *w)
{
	if (w->accept_paused)
		return;
	w->accept_paused = true;
	w->accept_resume_ns = now_ns() + ACCEPT_PAUSE_MS * 1000000ull;
	if (w->tcp_fd >= 0)
		ep_ctl(w, EPOLL_CTL_MOD, w->tcp_fd, 0, (void *)EV_TCP_LISTEN);
	if (w->http_fd >= 0)
		ep_ctl(w, EPOLL_CTL_MOD, w->http_fd, 0, (void *)EV_HTTP_LISTEN);
}

static void accept_resume(struct worker *w)
{
	w->accept_paused = false;
	if (w->tcp_fd >= 0)
		ep_ctl(w, EPOLL_CTL_MOD, w->tcp_fd, EPOLLIN, (void *)EV_TCP_LISTEN);
	if (w->http_fd >= 0)
		ep_ctl(w, EPOLL_CTL_MOD, w->http_fd, EPOLLIN, (void *)EV_HTTP_LISTEN);
}

/*
 * Out of descriptors: free the spare one to accept the oldest waiting
 * connection and tell it why it is closed, then stop watching the
 * listeners for a moment (they stay readable, so watching them would
 * spin); the timer resumes accepting.
 */
static void accept_emfile(struct worker *w, int lfd, enum conn_proto proto)
{
	ctr_add(&pd.ctr.accept_emfile, 1);
	if (w->spare_fd >= 0) {
		int fd;

		close(w->spare_fd);
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0) {
			ctr_add(&pd.ctr.conns_refused, 1);
			refuse(fd, proto, "out of file descriptors");
		}
		w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	}
	accept_pause(w);
}

static void tcp_accept(struct worker *w, int lfd, enum conn_proto proto)
{
	for (int budget = 64; budget > 0; budget--) {
		struct sockaddr_storage peer;
		socklen_t plen = sizeof(peer);
		int fd;

		fd = accept4(lfd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
				continue;
			if (errno == EMFILE || errno == ENFILE)
				accept_emfile(w, lfd, proto);
			else if (errno == ENOBUFS || errno == ENOMEM)
				accept_pause(w);
			return;
		}
		if (__atomic_load_n(&pd.conns, __ATOMIC_RELAXED) >= LIM(max_conns)) {
			ctr_add(&pd.ctr.conns_refused, 1);
			refuse(fd, proto, "too many connections");
			continue;
		}
		conn_new(w, fd, proto, &peer, plen);
	}
}

/* ---- timers and drain --------------------------------------------------- */

static void sweep(struct worker *w, uint64_t now)
{
	uint64_t idle = LIM(idle_timeout_ms) * 1000000ull;
	uint64_t reqt = LIM(request_timeout_ms) * 1000000ull;
	uint64_t wrt = LIM(write_timeout_ms) * 1000000ull;
	struct conn *c, *next;

	for (c = w->conns; c; c = next) {
		bool quiet = conn_done(c) && !c->req_start_ns && !c->in_len;

		next = c->next;
		if (c->write_stall_ns && now - c->write_stall_ns > wrt) {
			ctr_add(&pd.ctr.write_closed, 1);
			conn_close(c);
		} else if (c->req_start_ns && !c->paused && now - c->req_start_ns > reqt) {
			ctr_add(&pd.ctr.slow_closed, 1);
			if (c->proto == PROTO_HTTP && conn_done(c))
				http_refuse(dup(c->fd), 408, "request not received in time");
			conn_close(c);
		} else if (quiet && now - c->last_active_ns > idle) {
			ctr_add(&pd.ctr.idle_closed, 1);
			conn_close(c);
		} else if (w->draining && quiet) {
			uint64_t since = c->last_active_ns > w->drain_started_ns ?
					 c->last_active_ns : w->drain_started_ns;

			if (now - since > DRAIN_LINGER_MS * 1000000ull)
				conn_close(c);
		}
	}
	if (w->accept_paused && now >= w->accept_resume_ns)
		accept_resume(w);
}

static void close_listener(struct worker *w, int *fd)
{
	if (*fd < 0)
		return;
	epoll_ctl(w->epfd, EPOLL_CTL_DEL, *fd, NULL);
	close(*fd);
	*fd = -1;
}

static void drain_begin(struct worker *w)
{
	static const struct popup_wire_hdr goaway = {
		.magic = POPUP_WIRE_MAGIC, .version = POPUP_WIRE_VERSION,
		.flags = POPUP_WIRE_F_REPLY, .status = POPUP_WIRE_S_BUSY,
	};
	unsigned char b[POPUP_WIRE_HDR_LEN];
	uint64_t now = now_ns();

	w->now = now;
	w->draining = true;
	w->drain_started_ns = now;
	w->drain_deadline_ns = now + LIM(stop_timeout_ms) * 1000000ull;
	if (w->udp_last_ns < now)
		w->udp_last_ns = now;	/* a retired socket's idle time starts */
	/* Serve what already waits in the accept queues, then close the
	 * listeners: connections still in the handshake migrate. */
	if (w->accept_paused)
		accept_resume(w);
	if (w->tcp_fd >= 0)
		tcp_accept(w, w->tcp_fd, PROTO_NATIVE);
	if (w->http_fd >= 0)
		tcp_accept(w, w->http_fd, PROTO_HTTP);
	close_listener(w, &w->tcp_fd);
	close_listener(w, &w->http_fd);
	popup_wire_encode(b, &goaway);
	for (struct conn *c = w->conns, *next; c; c = next) {
		next = c->next;
		c->goaway = true;
		if (c->proto == PROTO_NATIVE)
			conn_append(c, b, sizeof(b));
		conn_kick(c);
	}
}

/* Nothing queued on the UDP socket for UDP_IDLE_MS, nothing in flight. */
static bool udp_drained(const struct worker *w, uint64_t now)
{
	if (w->udp_kernel || w->udp_fd < 0)
		return true;
	return !w->udp_inflight && now - w->udp_last_ns >= UDP_IDLE_MS * 1000000ull;
}

static bool drain_finished(struct worker *w, uint64_t now)
{
	if (now >= w->drain_deadline_ns) {
		if (w->nconns || w->udp_inflight)
			pr_warn("worker %d: stop deadline: closing %u connections", w->cpu,
				w->nconns);
		return true;
	}
	return !w->nconns && !w->udp_inflight && (!w->udp_retired || udp_drained(w, now));
}

/* ---- run-time restart --------------------------------------------------- */

/* The slot is already empty (worker_retire()): closing the listener
 * migrates its accept queue to a live worker. */
static void retire_begin(struct worker *w)
{
	uint64_t now = now_ns();

	w->retiring = true;
	w->retire_deadline_ns = now + LIM(stop_timeout_ms) * 1000000ull;
	if (w->udp_last_ns < now)
		w->udp_last_ns = now;
	close_listener(w, &w->tcp_fd);
}

static bool retire_finished(struct worker *w, uint64_t now)
{
	if (udp_drained(w, now))
		return true;
	if (now < w->retire_deadline_ns)
		return false;
	pr_warn("worker %d: restart: UDP socket still busy after %u ms; closing it", w->cpu,
		LIM(stop_timeout_ms));
	return true;
}

/* ---- the loop ------------------------------------------------------------ */

static void handle_event(struct worker *w, struct epoll_event *ev)
{
	uintptr_t tag = (uintptr_t)ev->data.ptr;
	struct conn *c;

	switch (tag) {
	case EV_TCP_LISTEN:
		if (w->tcp_fd >= 0)
			tcp_accept(w, w->tcp_fd, PROTO_NATIVE);
		return;
	case EV_HTTP_LISTEN:
		if (w->http_fd >= 0)
			tcp_accept(w, w->http_fd, PROTO_HTTP);
		return;
	case EV_UDP:
		udp_drain(w);
		return;
	case EV_WAKE:
		drain_completions(w);
		return;
	}
	c = ev->data.ptr;
	if (c->fd < 0)
		return;	/* closed earlier in this batch */
	if ((ev->events & (EPOLLHUP | EPOLLERR)) && !c->reading)
		conn_close(c);	/* the peer is gone: nothing can be sent */
	else if (ev->events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		conn_readable(c);
	else if (ev->events & EPOLLOUT)
		conn_kick(c);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct epoll_event evs[64];
	uint64_t last_sweep = now_ns();
	char name[16];
	int err;

	snprintf(name, sizeof(name), "popupd-w%d", w->cpu);
	pthread_setname_np(pthread_self(), name);
	err = cpus_pin_self(w->cpu);
	if (err)
		pr_warn("worker %d: cannot pin to CPU %d: %s", w->cpu, w->cpu, strerror(-err));
	__atomic_store_n(&w->st->live, 1, __ATOMIC_RELAXED);

	for (;;) {
		int stop = __atomic_load_n(&w->stop_req, __ATOMIC_ACQUIRE);
		uint64_t now;
		int n, timeout;

		if (stop == 2)
			break;
		if (stop == 1 && !w->draining)
			drain_begin(w);
		if (__atomic_load_n(&w->restart_req, __ATOMIC_ACQUIRE) && !w->retiring &&
		    !w->draining)
			retire_begin(w);
		/* Timers only matter with connections, a paused accept, a
		 * drain or a restart; otherwise sleep until something arrives. */
		timeout = (w->nconns || w->accept_paused || w->draining || w->retiring) ?
			  TICK_MS : -1;
		n = epoll_wait(w->epfd, evs, 64, timeout);
		if (n < 0 && errno != EINTR) {
			pr_err("worker %d: epoll_wait: %s", w->cpu, strerror(errno));
			break;
		}
		w->now = now_ns();
		for (int i = 0; i < n; i++)
			handle_event(w, &evs[i]);
		now = now_ns();
		if (now - last_sweep >= TICK_MS * 1000000ull) {
			sweep(w, now);
			last_sweep = now;
		}
		if (w->draining && drain_finished(w, now))
			break;
		if (w->retiring && !w->draining && retire_finished(w, now)) {
			/* The next thread serves the connections on. */
			close_listener(w, &w->udp_fd);
			__atomic_store_n(&w->st->live, 0, __ATOMIC_RELAXED);
			return NULL;
		}
	}
	while (w->conns)
		conn_close(w->conns);
	__atomic_store_n(&w->st->live, 0, __ATOMIC_RELAXED);
	return NULL;
}

static int worker_spawn(struct worker *w)
{
	int err = -pthread_create(&w->thread, NULL, worker_main, w);

	if (err) {
		pr_err("worker %d: cannot start thread: %s", w->cpu, strerror(-err));
		return err;
	}
	w->started = true;
	return 0;
}

int worker_start(struct worker *w)
{
	int err;

	w->st->cpu = w->cpu;
	err = ep_ctl(w, EPOLL_CTL_ADD, w->tcp_fd, EPOLLIN, (void *)EV_TCP_LISTEN);
	/* With kernel arrival (arrival.c) popup.ko reads the UDP socket. */
	if (!err && !w->udp_kernel)
		err = ep_ctl(w, EPOLL_CTL_ADD, w->udp_fd, EPOLLIN, (void *)EV_UDP);
	if (!err)
		err = ep_ctl(w, EPOLL_CTL_ADD, w->wake_fd, EPOLLIN, (void *)EV_WAKE);
	if (!err && w->http_fd >= 0)
		err = ep_ctl(w, EPOLL_CTL_ADD, w->http_fd, EPOLLIN, (void *)EV_HTTP_LISTEN);
	if (err) {
		pr_err("worker %d: epoll_ctl: %s", w->cpu, strerror(-err));
		return err;
	}
	return worker_spawn(w);
}

/*
 * Restart, part 1 (main thread, the steering slot already emptied and the
 * UDP socket retired): the thread closes its listener, drains the UDP
 * socket until idle, closes it and exits, keeping its connections.
 */
void worker_retire(struct worker *w)
{
	uint64_t one = 1;

	if (!w->started)
		return;
	__atomic_store_n(&w->restart_req, 1, __ATOMIC_RELEASE);
	if (write(w->wake_fd, &one, sizeof(one)) < 0)
		pr_warn("worker %d: cannot signal restart: %s", w->cpu, strerror(errno));
	pthread_join(w->thread, NULL);
	w->started = false;
	w->retiring = false;
	__atomic_store_n(&w->restart_req, 0, __ATOMIC_RELAXED);
	if (w->tcp_fd >= 0)	/* the thread ended some other way */
		close_listener(w, &w->tcp_fd);
	if (w->udp_fd >= 0)
		close_listener(w, &w->udp_fd);
}

/*
 * Restart, part 2: new native sockets on the same ports and a new thread
 * on the same state (connections, epoll set, HTTP listener). A thread runs
 * again even if the sockets cannot be bound (it serves the connections it
 * has); the caller then puts the sockets in the worker's steering slot.
 */
int worker_reopen(struct worker *w)
{
	int err;

	err = open_sock(SOCK_STREAM, pd.cfg.bind_addr, pd.port, &w->tcp_fd);
	if (!err)
		err = open_sock(SOCK_DGRAM, pd.cfg.bind_addr, pd.port, &w->udp_fd);
	if (!err)
		err = ep_ctl(w, EPOLL_CTL_ADD, w->tcp_fd,
			     w->accept_paused ? 0 : EPOLLIN, (void *)EV_TCP_LISTEN);
	if (!err)
		err = ep_ctl(w, EPOLL_CTL_ADD, w->udp_fd, EPOLLIN, (void *)EV_UDP);
	if (err) {
		pr_err("worker %d: restart: cannot bind the native port %u again: %s", w->cpu,
		       pd.port, strerror(-err));
		if (w->tcp_fd >= 0)
			close_listener(w, &w->tcp_fd);
		if (w->udp_fd >= 0)
			close_listener(w, &w->udp_fd);
	}
	if (worker_spawn(w) && !err)
		err = -EAGAIN;
	return err;
}

void worker_request_stop(struct worker *w, int how)
{
	uint64_t one = 1;
	int cur = __atomic_load_n(&w->stop_req, __ATOMIC_RELAXED);

	if (how > cur)
		__atomic_store_n(&w->stop_req, how, __ATOMIC_RELEASE);
	if (w->wake_fd >= 0 && write(w->wake_fd, &one, sizeof(one)) < 0)
		pr_warn("worker %d: cannot signal stop: %s", w->cpu, strerror(errno));
}

void worker_join(struct worker *w)
{
	if (!w->started)
		return;
	pthread_join(w->thread, NULL);
	w->started = false;
}

/* After the thread and the pools are gone: drop late completions. */
void worker_close(struct worker *w)
{
	int *fds[] = { &w->tcp_fd, &w->udp_fd, &w->http_fd, &w->epfd, &w->wake_fd,
		       &w->spare_fd };
	struct job *j, *next;

	for (j = take_done(w); j; j = next) {
		next = j->next;
		if (j->conn)
			conn_put(j->conn);
		job_free(j);
	}
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
		if (*fds[i] >= 0)
			close(*fds[i]);
		*fds[i] = -1;
	}
	pthread_mutex_destroy(&w->done_lock);
}

/* ---- entry points for the fuzz targets (tests/fuzz/) -------------------- */

/* Serve @fd as a connection of @w without its thread running; the caller
 * feeds the input and reads the peer end. */
struct conn *worker_adopt(struct worker *w, int fd, enum conn_proto proto)
{
	struct sockaddr_storage peer = { .ss_family = AF_UNIX };

	conn_new(w, fd, proto, &peer, sizeof(sa_family_t));
	return w->conns && w->conns->fd == fd ? w->conns : NULL;
}

/* As if @len bytes had been received; false once the connection closed. */
bool worker_feed(struct conn *c, const void *data, size_t len)
{
	bool alive;

	if (c->fd < 0 || c->closing)
		return false;
	c->refs++;	/* a close below must not free it under us */
	if (buf_reserve(&c->in, &c->in_cap, (uint64_t)c->in_len + len) < 0) {
		conn_close(c);
	} else {
		memcpy(c->in + c->in_len, data, len);
		c->in_len += len;
		if (conn_parse(c) < 0)
			conn_close(c);
		else
			conn_kick(c);
	}
	alive = c->fd >= 0;
	conn_put(c);
	return alive;
}

void worker_drop(struct worker *w)
{
	while (w->conns)
		conn_close(w->conns);
}
