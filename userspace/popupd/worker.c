// SPDX-License-Identifier: GPL-2.0
/*
 * Per-CPU workers: the userspace arrival path.
 *
 * Each worker owns one SO_REUSEPORT TCP listener and one SO_REUSEPORT UDP
 * socket on the service port and runs one epoll loop on a thread pinned to
 * its CPU. The BPF steering program puts each new connection and each
 * datagram on the socket of the CPU that received it, so a request is
 * received, handled and answered on one CPU without cross-CPU wake-ups.
 *
 * Every length is checked before it is trusted: a header that is not a
 * valid request gets an error reply when the stream can still be framed,
 * and the connection is closed when it cannot (bad magic). Output is
 * bounded per connection: past the bound the worker stops reading that
 * connection until the peer drains its replies (backpressure, not drops).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cpus.h"
#include "log.h"
#include "popup/wire.h"
#include "popupd.h"

#define OUT_LIMIT	(256 * 1024)	/* buffered output per connection */
#define UDP_MAX		65507
#define SAMPLE_EVERY	16		/* locality sample period */

/* epoll data: the low bits tell listener, datagram socket and stop fd
 * apart from connection pointers, which are at least 8-byte aligned. */
#define EV_TCP_LISTEN	1UL
#define EV_UDP		2UL
#define EV_STOP		3UL

struct conn {
	struct conn *prev, *next;	/* the worker's connection list */
	int fd;
	bool reading;		/* EPOLLIN armed (false under backpressure) */
	uint32_t in_len, in_cap;
	unsigned char *in;
	uint32_t out_off, out_len, out_cap;
	unsigned char *out;
};

static void stat_add(uint64_t *ctr, uint64_t n)
{
	__atomic_fetch_add(ctr, n, __ATOMIC_RELAXED);
}

static int set_reuse_bind(int fd, const struct popupd_config *cfg)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(cfg->port) };
	int one = 1;

	if (inet_pton(AF_INET, cfg->bind_addr, &sa.sin_addr) != 1)
		return -EINVAL;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)))
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)))
		return -errno;
	return 0;
}

/* Create the worker's sockets. They join the port's reuseport groups in
 * worker order; the BPF sockarray is filled by slot, not by that order. */
int worker_open(struct worker *w, const struct popupd_config *cfg)
{
	int err;

	w->cfg = cfg;
	w->tcp_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	w->udp_fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	w->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->tcp_fd < 0 || w->udp_fd < 0 || w->epfd < 0 || w->stop_fd < 0) {
		err = -errno;
		pr_err("worker %d: cannot create sockets: %s", w->cpu, strerror(-err));
		return err;
	}
	err = set_reuse_bind(w->tcp_fd, cfg);
	if (!err && listen(w->tcp_fd, 1024))
		err = -errno;
	if (!err)
		err = set_reuse_bind(w->udp_fd, cfg);
	if (err) {
		pr_err("worker %d: cannot bind %s:%u: %s", w->cpu, cfg->bind_addr,
		       cfg->port, strerror(-err));
		return err;
	}
	return 0;
}

static int ep_add(int epfd, int fd, uint32_t events, void *ptr)
{
	struct epoll_event ev = { .events = events, .data.ptr = ptr };

	return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) ? -errno : 0;
}

static int ep_mod(int epfd, int fd, uint32_t events, void *ptr)
{
	struct epoll_event ev = { .events = events, .data.ptr = ptr };

	return epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) ? -errno : 0;
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
	stat_add(&w->st->samples, 1);
	if (cpu == w->cpu)
		stat_add(&w->st->local, 1);
}

/*
 * Run one request through its service. Writes a full reply (header and
 * payload) into @out, which has room for a header plus @cap payload bytes;
 * returns the reply length, or 0 when no reply is due (one-way).
 */
static uint32_t dispatch(struct worker *w, const struct popup_wire_hdr *req,
			 const unsigned char *payload, unsigned char *out, uint32_t cap)
{
	struct popup_wire_hdr rep = *req;
	const struct popupd_service *svc;
	uint32_t out_len = 0;
	int err;

	rep.flags = POPUP_WIRE_F_REPLY;
	rep.status = popup_wire_check(req, w->cfg->max_payload);
	if (rep.status == POPUP_WIRE_S_OK) {
		svc = popupd_service_find(req->service);
		if (!svc) {
			rep.status = POPUP_WIRE_S_NOSVC;
		} else {
			err = svc->handle(req->method, payload, req->len,
					  out + POPUP_WIRE_HDR_LEN, cap, &out_len);
			if (err == -ENOSYS)
				rep.status = POPUP_WIRE_S_NOMETHOD;
			else if (err)
				rep.status = POPUP_WIRE_S_ERROR;
		}
	}
	if (rep.status != POPUP_WIRE_S_OK) {
		out_len = 0;
		stat_add(&w->st->errors, 1);
	}
	stat_add(&w->st->requests, 1);
	if ((req->flags & POPUP_WIRE_F_ONEWAY) && rep.status == POPUP_WIRE_S_OK)
		return 0;
	rep.len = out_len;
	rep.reserved = 0;
	popup_wire_encode(out, &rep);
	return POPUP_WIRE_HDR_LEN + out_len;
}

/* ---- UDP ---- */

static void udp_drain(struct worker *w)
{
	static __thread unsigned char in[UDP_MAX], out[UDP_MAX];
	struct sockaddr_storage peer;
	struct popup_wire_hdr req;
	socklen_t plen;
	ssize_t n;
	uint32_t rlen, cap;

	for (int budget = 64; budget > 0; budget--) {
		plen = sizeof(peer);
		n = recvfrom(w->udp_fd, in, sizeof(in), 0, (struct sockaddr *)&peer, &plen);
		if (n < 0)
			return;	/* EAGAIN, or an ICMP error: nothing to answer */
		/* UDP locality comes from the BPF program's per-CPU
		 * selection counters: SO_INCOMING_CPU is not kept per
		 * datagram on an unconnected UDP socket. */
		stat_add(&w->st->udp_requests, 1);
		if (n < POPUP_WIRE_HDR_LEN) {
			stat_add(&w->st->errors, 1);
			continue;	/* no header to address a reply with */
		}
		popup_wire_decode(in, &req);
		if (req.len != (uint32_t)n - POPUP_WIRE_HDR_LEN) {
			req.len = 0;	/* lengths disagree: refuse, do not trust */
			req.reserved = 1;
		}
		cap = UDP_MAX - POPUP_WIRE_HDR_LEN;
		rlen = dispatch(w, &req, in + POPUP_WIRE_HDR_LEN, out, cap);
		if (rlen)
			sendto(w->udp_fd, out, rlen, MSG_DONTWAIT,
			       (struct sockaddr *)&peer, plen);
	}
}

/* ---- TCP ---- */

static void conn_link(struct worker *w, struct conn *c)
{
	c->prev = NULL;
	c->next = w->conns;
	if (c->next)
		c->next->prev = c;
	w->conns = c;
	w->nconns++;
}

static void conn_free(struct worker *w, struct conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	close(c->fd);	/* also removes it from the epoll set */
	free(c->in);
	free(c->out);
	free(c);
	w->nconns--;
}

static int buf_reserve(unsigned char **buf, uint32_t *cap, uint64_t need)
{
	unsigned char *nb;
	uint64_t ncap = *cap ? *cap : 4096;

	if (need <= *cap)
		return 0;
	while (ncap < need)
		ncap *= 2;
	nb = realloc(*buf, ncap);
	if (!nb)
		return -ENOMEM;
	*buf = nb;
	*cap = ncap;
	return 0;
}

static int conn_flush(struct worker *w, struct conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
				 MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0)
			return errno == EAGAIN ? 0 : -errno;
		c->out_off += n;
	}
	c->out_off = c->out_len = 0;
	return 0;
}

/* Re-arm epoll for what the connection can do now. */
static int conn_arm(struct worker *w, struct conn *c)
{
	bool pending = c->out_len > c->out_off;
	uint32_t ev = EPOLLRDHUP;

	c->reading = c->out_len - c->out_off < OUT_LIMIT;
	if (c->reading)
		ev |= EPOLLIN;
	if (pending)
		ev |= EPOLLOUT;
	return ep_mod(w->epfd, c->fd, ev, c);
}

/* Handle every complete request in the input buffer. Returns -EPROTO when
 * the stream cannot be framed any more and must be closed. */
static int conn_process(struct worker *w, struct conn *c)
{
	uint32_t off = 0;
	int ret = 0;

	while (c->in_len - off >= POPUP_WIRE_HDR_LEN) {
		struct popup_wire_hdr req;
		uint32_t cap, rlen;

		popup_wire_decode(c->in + off, &req);
		if (req.magic != POPUP_WIRE_MAGIC) {
			stat_add(&w->st->errors, 1);
			ret = -EPROTO;
			break;
		}
		if (req.len > w->cfg->max_payload) {
			/* Answer, then close: skipping the body would mean
			 * trusting a length we just refused. */
			req.len = w->cfg->max_payload + 1;
			cap = 0;
			if (buf_reserve(&c->out, &c->out_cap, c->out_len + POPUP_WIRE_HDR_LEN))
				return -ENOMEM;
			c->out_len += dispatch(w, &req, NULL, c->out + c->out_len, 0);
			ret = -EPROTO;
			break;
		}
		if (c->in_len - off - POPUP_WIRE_HDR_LEN < req.len)
			break;	/* body incomplete */
		cap = w->cfg->max_payload;
		if (buf_reserve(&c->out, &c->out_cap,
				(uint64_t)c->out_len + POPUP_WIRE_HDR_LEN + cap))
			return -ENOMEM;
		sample_locality(w, c->fd);
		stat_add(&w->st->tcp_requests, 1);
		rlen = dispatch(w, &req, c->in + off + POPUP_WIRE_HDR_LEN,
				c->out + c->out_len, cap);
		c->out_len += rlen;
		off += POPUP_WIRE_HDR_LEN + req.len;
		if (c->out_len - c->out_off >= OUT_LIMIT)
			break;	/* backpressure: stop until the peer reads */
	}
	memmove(c->in, c->in + off, c->in_len - off);
	c->in_len -= off;
	return ret;
}

static void conn_readable(struct worker *w, struct conn *c)
{
	int err;

	for (;;) {
		ssize_t n;

		if (buf_reserve(&c->in, &c->in_cap,
				(uint64_t)c->in_len + 4096) < 0)
			goto close;
		n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
		if (n == 0)
			goto close;
		if (n < 0) {
			if (errno == EAGAIN)
				break;
			goto close;
		}
		c->in_len += n;
		err = conn_process(w, c);
		if (err) {
			conn_flush(w, c);
			goto close;
		}
		if (c->out_len - c->out_off >= OUT_LIMIT)
			break;
	}
	if (conn_flush(w, c) || conn_arm(w, c))
		goto close;
	return;
close:
	conn_free(w, c);
}

static void conn_writable(struct worker *w, struct conn *c)
{
	if (conn_flush(w, c))
		goto close;
	/* Output drained below the bound: resume requests held back. */
	if (!c->reading && conn_process(w, c))
		goto close;
	if (conn_flush(w, c) || conn_arm(w, c))
		goto close;
	return;
close:
	conn_free(w, c);
}

static void tcp_accept(struct worker *w)
{
	for (int budget = 64; budget > 0; budget--) {
		int one = 1, fd;
		struct conn *c;

		fd = accept4(w->tcp_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			/* EMFILE/ENFILE: leave the connection queued; the
			 * listener stays readable, so back off instead of
			 * spinning on it. */
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM)
				usleep(1000);
			return;
		}
		if (w->nconns >= w->cfg->max_conns) {
			stat_add(&w->st->errors, 1);
			close(fd);	/* explicit refusal: the peer sees a close */
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		c->reading = true;
		if (ep_add(w->epfd, fd, EPOLLIN | EPOLLRDHUP, c)) {
			close(fd);
			free(c);
			continue;
		}
		conn_link(w, c);
		stat_add(&w->st->conns, 1);
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct epoll_event evs[64];
	char name[16];
	int err;

	snprintf(name, sizeof(name), "popupd-w%d", w->cpu);
	pthread_setname_np(pthread_self(), name);
	err = cpus_pin_self(w->cpu);
	if (err)
		pr_warn("worker %d: cannot pin to CPU %d: %s", w->cpu, w->cpu, strerror(-err));
	__atomic_store_n(&w->st->live, 1, __ATOMIC_RELAXED);

	for (;;) {
		int n = epoll_wait(w->epfd, evs, 64, -1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			pr_err("worker %d: epoll_wait: %s", w->cpu, strerror(errno));
			break;
		}
		for (int i = 0; i < n; i++) {
			uintptr_t tag = (uintptr_t)evs[i].data.ptr;

			if (tag == EV_STOP)
				goto out;
			if (tag == EV_TCP_LISTEN)
				tcp_accept(w);
			else if (tag == EV_UDP)
				udp_drain(w);
			else if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP))
				conn_readable(w, evs[i].data.ptr);
			else if (evs[i].events & EPOLLOUT)
				conn_writable(w, evs[i].data.ptr);
		}
	}
out:
	while (w->conns)
		conn_free(w, w->conns);
	__atomic_store_n(&w->st->live, 0, __ATOMIC_RELAXED);
	return NULL;
}

int worker_start(struct worker *w)
{
	int err;

	w->st->cpu = w->cpu;
	err = ep_add(w->epfd, w->tcp_fd, EPOLLIN, (void *)EV_TCP_LISTEN);
	if (!err)
		err = ep_add(w->epfd, w->udp_fd, EPOLLIN, (void *)EV_UDP);
	if (!err)
		err = ep_add(w->epfd, w->stop_fd, EPOLLIN, (void *)EV_STOP);
	if (err) {
		pr_err("worker %d: epoll_ctl: %s", w->cpu, strerror(-err));
		return err;
	}
	err = -pthread_create(&w->thread, NULL, worker_main, w);
	if (err) {
		pr_err("worker %d: cannot start thread: %s", w->cpu, strerror(-err));
		return err;
	}
	w->started = true;
	return 0;
}

void worker_stop(struct worker *w)
{
	uint64_t one = 1;

	if (!w->started)
		return;
	if (write(w->stop_fd, &one, sizeof(one)) != sizeof(one))
		pr_warn("worker %d: cannot signal stop: %s", w->cpu, strerror(errno));
	pthread_join(w->thread, NULL);
	w->started = false;
}

void worker_close(struct worker *w)
{
	int *fds[] = { &w->tcp_fd, &w->udp_fd, &w->epfd, &w->stop_fd };

	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
		if (*fds[i] >= 0)
			close(*fds[i]);
		*fds[i] = -1;
	}
}
