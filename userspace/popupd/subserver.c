// SPDX-License-Identifier: GPL-2.0
/*
 * The subserver side of the arbiter (arbiter.c explains the model and the
 * work channel's messages).
 *
 * A popupd started with --subserver-of HOST:PORT (or [subserver] front =)
 * keeps serving its own clients as usual and also works for a front
 * popupd: one I/O thread connects to the front's arbiter port, registers
 * every loaded service (name, version, method table with the idempotent
 * flags), sends K asks (--subserver-asks, [subserver] asks; default 4)
 * and reads the work the front hands out; K executor threads run each
 * request through the local service's handler (job_run: the same
 * deadline and accounting as any call) and send the result together with
 * the next ask, so exactly K asks are outstanding whatever happens.
 *
 * At stop, work in progress finishes and is answered; work not started
 * yet is answered "busy" (the client may try again), never dropped.
 *
 * When the connection drops, the I/O thread reconnects (every 500 ms) and
 * registers again; work received on the old connection is discarded (the
 * front has already retried or failed it), and an executor still running
 * old work sends a bare ask on the new connection when it finishes, which
 * keeps the count at K. Writes are blocking and serialised by sub_lock.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "popupd.h"

#define ASKS_MAX	256

struct swork {
	struct swork *next;
	struct job *j;
	uint64_t gen;
};

static struct {
	pthread_mutex_t lock;		/* sub_lock: everything below */
	pthread_cond_t cond;		/* work queued, or stopping */
	char host[256], port[16];
	uint32_t asks;
	int fd;				/* -1 while disconnected */
	uint64_t gen;			/* connection generation */
	struct swork *head, *tail;
	uint32_t busy;			/* executors running a job */
	bool stopping, started;
	pthread_t io;
	pthread_t exec[ASKS_MAX];
	uint32_t nr_exec;
	uint32_t front_id[POPUPD_MAX_SERVICES + 1];	/* per local svc index */
	uint64_t served, connects;
} S = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER, .fd = -1 };

static int send_all_locked(const void *p, size_t n)
{
	const unsigned char *b = p;

	while (S.fd >= 0 && n) {
		ssize_t w = send(S.fd, b, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;	/* SO_SNDTIMEO expiring gives EAGAIN: drop */
		if (w <= 0) {
			shutdown(S.fd, SHUT_RDWR);	/* the reader notices */
			return -EPIPE;
		}
		b += w;
		n -= w;
	}
	return S.fd >= 0 ? 0 : -ENOTCONN;
}

static int send_msg_locked(struct popup_wire_hdr *h, const void *p, uint32_t n)
{
	unsigned char hb[POPUP_WIRE_HDR_LEN];

	h->magic = POPUP_WIRE_MAGIC;
	h->version = POPUP_WIRE_VERSION;
	h->len = n;
	popup_wire_encode(hb, h);
	if (send_all_locked(hb, sizeof(hb)))
		return -EPIPE;
	return n ? send_all_locked(p, n) : 0;
}

static void send_ask_locked(void)
{
	struct popup_wire_hdr h = { .flags = POPUP_WIRE_F_WORK };

	send_msg_locked(&h, NULL, 0);
}

/* ---- executors -------------------------------------------------------------- */

static void send_result_locked(struct job *j)
{
	struct popup_wire_hdr h = j->hdr;
	const void *p = j->res;
	uint32_t n = j->res_len;

	h.flags = POPUP_WIRE_F_WORK | POPUP_WIRE_F_REPLY;
	h.status = status_to_wire(j->status);
	h.reserved = j->status < 0 ? (uint32_t)-j->status : 0;
	if (j->status && !n && j->msg) {
		p = j->msg;
		n = strlen(j->msg);
	}
	send_msg_locked(&h, p, n);
}

static void *exec_thread(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "popupd-subsrv");
	pthread_mutex_lock(&S.lock);
	for (;;) {
		struct swork *w;

		while (!S.head && !S.stopping)
			pthread_cond_wait(&S.cond, &S.lock);
		if (S.stopping)
			break;
		w = S.head;
		S.head = w->next;
		if (!S.head)
			S.tail = NULL;
		S.busy++;
		pthread_mutex_unlock(&S.lock);

		job_run(w->j);

		pthread_mutex_lock(&S.lock);
		S.busy--;
		if (w->gen == S.gen) {
			S.served++;
			send_result_locked(w->j);	/* and the next ask */
		} else {
			send_ask_locked();	/* the new connection's count excluded us */
		}
		job_free(w->j);
		free(w);
	}
	pthread_mutex_unlock(&S.lock);
	return NULL;
}

/* ---- the connection ------------------------------------------------------------ */

static int front_connect(void)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *ai, *a;
	int fd = -1, one = 1;

	if (getaddrinfo(S.host, S.port, &hints, &ai))
		return -ENOENT;
	for (a = ai; a; a = a->ai_next) {
		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		if (!connect(fd, a->ai_addr, a->ai_addrlen))
			break;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	if (fd < 0)
		return -ECONNREFUSED;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* Register every service but the directory and arbiter ones. */
static void register_locked(void)
{
	for (unsigned int i = 1; i < services_count(); i++) {
		struct svc *s = svc_at(i);
		struct popup_wire_hdr h = { .flags = POPUP_WIRE_F_WORK | POPUP_WIRE_F_REGISTER,
					    .req_id = i };
		char buf[8192];
		int n;

		if (s->arb)
			continue;
		n = snprintf(buf, sizeof(buf), "%s %u\n", s->def->name, s->def->version);
		for (uint32_t k = 0; k < s->def->nr_methods && n < (int)sizeof(buf); k++)
			n += snprintf(buf + n, sizeof(buf) - n, "%u %u %s\n", s->def->methods[k].id,
				      s->def->methods[k].flags, s->def->methods[k].name);
		if (n >= (int)sizeof(buf))
			continue;
		S.front_id[i] = UINT32_MAX;
		send_msg_locked(&h, buf, n);
	}
}

static void on_register_reply(const struct popup_wire_hdr *h, const unsigned char *p)
{
	struct svc *s = h->req_id < services_count() ? svc_at(h->req_id) : NULL;

	if (!s)
		return;
	if (h->status) {
		pr_warn("subserver: the front refused %s (status %u): %.*s", s->def->name,
			h->status, (int)h->len, (const char *)p);
		return;
	}
	S.front_id[h->req_id] = h->service;
	pr_info("subserver: serving %s for the front (its id %u)", s->def->name, h->service);
}

static void refuse_queued_locked(void)
{
	while (S.head) {
		struct swork *w = S.head;

		S.head = w->next;
		w->j->status = -EBUSY;
		w->j->msg = "subserver stopping";
		if (w->gen == S.gen)
			send_result_locked(w->j);
		job_free(w->j);
		free(w);
	}
	S.tail = NULL;
}

/* Work from the front: queue it for an executor, or refuse it at once. */
static void on_work(const struct popup_wire_hdr *h, const unsigned char *p)
{
	const struct popup_svc_method *m = NULL;
	struct svc *s = NULL;
	struct swork *w;
	struct job *j;

	for (unsigned int i = 1; i < services_count() && !s; i++)
		if (S.front_id[i] == h->service && !svc_at(i)->arb)
			s = svc_at(i);
	if (s)
		m = svc_method_by_id(s, h->method);
	j = m && h->len <= m->max_arg ? job_new(h->len, m->max_res) : job_new(0, 0);
	w = calloc(1, sizeof(*w));
	if (!j || !w) {
		free(w);
		job_free(j);
		return;		/* the front times it out */
	}
	j->hdr = *h;
	j->origin = POPUP_SVC_ORIGIN_TCP;
	j->arrival_ns = now_ns();
	if (!m || h->len > m->max_arg) {
		j->status = !m ? -ENOENT : -E2BIG;
		j->msg = !m ? "subserver: no such service or method" : "subserver: request too big";
		send_result_locked(j);
		job_free(j);
		free(w);
		return;
	}
	j->svc = s;
	j->m = m;
	memcpy(j->req, p, h->len);
	if (h->status)
		j->deadline_ns = j->arrival_ns + (uint64_t)h->status * 1000000;
	w->j = j;
	w->gen = S.gen;
	if (S.stopping) {
		w->next = S.head;	/* no executor left to run it */
		S.head = w;
		refuse_queued_locked();
		return;
	}
	if (S.tail)
		S.tail->next = w;
	else
		S.head = w;
	S.tail = w;
	pthread_cond_signal(&S.cond);
}

static void drop_queued_locked(void)
{
	while (S.head) {
		struct swork *w = S.head;

		S.head = w->next;
		job_free(w->j);
		free(w);
	}
	S.tail = NULL;
}

/* Read messages until the connection ends. */
static void serve(int fd)
{
	unsigned char *in = malloc(POPUP_SVC_MAX_MSG + 2 * POPUP_WIRE_HDR_LEN);
	uint32_t len = 0, cap = POPUP_SVC_MAX_MSG + 2 * POPUP_WIRE_HDR_LEN;

	while (in && !__atomic_load_n(&S.stopping, __ATOMIC_RELAXED)) {
		ssize_t n = recv(fd, in + len, cap - len, 0);
		uint32_t off = 0;

		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;	/* SO_RCVTIMEO: look at S.stopping */
		if (n <= 0)
			break;
		len += n;
		pthread_mutex_lock(&S.lock);
		while (len - off >= POPUP_WIRE_HDR_LEN) {
			struct popup_wire_hdr h;

			popup_wire_decode(in + off, &h);
			if (h.magic != POPUP_WIRE_MAGIC || !(h.flags & POPUP_WIRE_F_WORK) ||
			    h.len > cap - POPUP_WIRE_HDR_LEN) {
				pr_warn("subserver: the front sent a malformed message; reconnecting");
				len = off = 0;
				pthread_mutex_unlock(&S.lock);
				goto out;
			}
			if (len - off - POPUP_WIRE_HDR_LEN < h.len)
				break;
			if (h.flags & POPUP_WIRE_F_REGISTER)
				on_register_reply(&h, in + off + POPUP_WIRE_HDR_LEN);
			else
				on_work(&h, in + off + POPUP_WIRE_HDR_LEN);
			off += POPUP_WIRE_HDR_LEN + h.len;
		}
		pthread_mutex_unlock(&S.lock);
		memmove(in, in + off, len - off);
		len -= off;
	}
out:
	free(in);
}

static void *io_thread(void *arg)
{
	bool warned = false;

	(void)arg;
	pthread_setname_np(pthread_self(), "popupd-subsrvio");
	while (!__atomic_load_n(&S.stopping, __ATOMIC_RELAXED)) {
		struct timeval tv = { .tv_usec = 200000 }, stv = { .tv_sec = 5 };
		int fd = front_connect();

		if (fd < 0) {
			if (!warned)
				pr_warn("subserver: cannot reach the front %s:%s; retrying", S.host,
					S.port);
			warned = true;
			usleep(500000);
			continue;
		}
		warned = false;
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		/* A front that stops reading must not hold sub_lock forever. */
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &stv, sizeof(stv));
		pthread_mutex_lock(&S.lock);
		S.fd = fd;
		S.gen++;
		S.connects++;
		drop_queued_locked();
		register_locked();
		for (uint32_t i = S.busy; i < S.asks; i++)
			send_ask_locked();
		pthread_mutex_unlock(&S.lock);
		pr_info("subserver: connected to the front %s:%s, %u asks", S.host, S.port, S.asks);

		serve(fd);

		pthread_mutex_lock(&S.lock);
		S.fd = -1;
		S.gen++;	/* results of old work are not sent anywhere */
		drop_queued_locked();
		pthread_mutex_unlock(&S.lock);
		close(fd);
		if (!__atomic_load_n(&S.stopping, __ATOMIC_RELAXED)) {
			pr_warn("subserver: lost the front %s:%s; reconnecting", S.host, S.port);
			usleep(500000);
		}
	}
	return NULL;
}

int subserver_start(const struct popupd_config *cfg)
{
	const char *colon;
	int err;

	if (!cfg->subserver_of)
		return 0;
	colon = strrchr(cfg->subserver_of, ':');
	if (!colon || colon == cfg->subserver_of || !colon[1] ||
	    (size_t)(colon - cfg->subserver_of) >= sizeof(S.host) || strlen(colon + 1) >= sizeof(S.port)) {
		pr_err("subserver: front '%s' is not HOST:PORT", cfg->subserver_of);
		return -EINVAL;
	}
	snprintf(S.host, sizeof(S.host), "%.*s", (int)(colon - cfg->subserver_of),
		 cfg->subserver_of);
	snprintf(S.port, sizeof(S.port), "%s", colon + 1);
	S.asks = cfg->subserver_asks ? cfg->subserver_asks : 4;
	for (unsigned int i = 0; i < POPUPD_MAX_SERVICES + 1; i++)
		S.front_id[i] = UINT32_MAX;	/* not registered (yet) */
	if (S.asks > ASKS_MAX)
		S.asks = ASKS_MAX;
	for (S.nr_exec = 0; S.nr_exec < S.asks; S.nr_exec++) {
		err = pthread_create(&S.exec[S.nr_exec], NULL, exec_thread, NULL);
		if (err)
			goto fail;
	}
	err = pthread_create(&S.io, NULL, io_thread, NULL);
	if (err)
		goto fail;
	S.started = true;
	return 0;
fail:
	pr_err("subserver: cannot start a thread: %s", strerror(err));
	subserver_stop();
	return -err;
}

/* Work in progress finishes and its results go out; work not started is
 * answered "busy" (try again elsewhere); then the connection closes. */
void subserver_stop(void)
{
	pthread_mutex_lock(&S.lock);
	__atomic_store_n(&S.stopping, true, __ATOMIC_RELAXED);
	pthread_cond_broadcast(&S.cond);
	pthread_mutex_unlock(&S.lock);
	for (uint32_t i = 0; i < S.nr_exec; i++)
		pthread_join(S.exec[i], NULL);
	S.nr_exec = 0;
	pthread_mutex_lock(&S.lock);
	refuse_queued_locked();
	if (S.fd >= 0)
		shutdown(S.fd, SHUT_RDWR);
	pthread_mutex_unlock(&S.lock);
	if (S.started)
		pthread_join(S.io, NULL);
	pthread_mutex_lock(&S.lock);
	drop_queued_locked();
	pthread_mutex_unlock(&S.lock);
	if (S.started)
		pr_info("subserver: served %llu requests for the front over %llu connection(s)",
			(unsigned long long)S.served, (unsigned long long)S.connects);
	S.started = false;
}
