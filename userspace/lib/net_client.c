// SPDX-License-Identifier: LGPL-2.1 OR BSD-2-Clause
/*
 * The net backend: a client of another popupd over TCP, with the native
 * protocol (include/popup/wire.h).
 *
 * popup_client__connect_tcp() opens one connection and reads the remote
 * directory (service 0, method "services": one "svc" line per service and
 * one "m" line per method, the text popupctl parses too), so that import
 * finds a service's id and method limits by name and version without
 * another round trip. Every call, synchronous or batched, is a record
 * on the connection's pending list with a fresh req_id; requests are
 * written under the connection lock and a reader thread matches replies
 * to records by req_id, in whatever order popupd sends them. The reader
 * completes a record under the connection lock, so taking a record off
 * the list (a timeout, a batch freed) and delivering its reply never
 * race. When the connection ends, every pending record fails with
 * -ECONNRESET and so does every later call.
 */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include "libpopup_internal.h"
#include "popup/wire.h"

#define DIR_MAX		(1U << 20)	/* directory text we accept */
#define REPLY_MAX	(POPUP_MAX_MSG + 4096)

struct net_conn {
	int fd;
	pthread_mutex_t lock;		/* the fields below, and sends */
	struct popup_txn *pending;
	uint64_t next_id;
	bool dead;
	bool reader_started;
	pthread_t reader;
	char *dir;			/* directory text, NUL-terminated */
};

struct nbinding {
	uint32_t service;		/* remote service id */
};

static struct net_conn *NC(const struct popup_client *c)
{
	return c->priv;
}

static int wire_errno(uint32_t status)
{
	switch (status) {
	case POPUP_WIRE_S_OK:		return 0;
	case POPUP_WIRE_S_BADREQ:	return -EINVAL;
	case POPUP_WIRE_S_NOSVC:	return -ENOENT;
	case POPUP_WIRE_S_NOMETHOD:	return -EOPNOTSUPP;
	case POPUP_WIRE_S_TOOBIG:	return -EMSGSIZE;
	case POPUP_WIRE_S_BUSY:		return -EAGAIN;
	case POPUP_WIRE_S_TIMEOUT:	return -ETIMEDOUT;
	case POPUP_WIRE_S_ERROR:	return -EREMOTEIO;
	default:			return -EPROTO;
	}
}

static int io_full(int fd, void *buf, size_t len, bool wr)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = wr ? send(fd, (char *)buf + done, len - done, MSG_NOSIGNAL) :
				 recv(fd, (char *)buf + done, len - done, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EPIPE || errno == EAGAIN ? -ECONNRESET : -errno;
		if (n == 0)
			return -ECONNRESET;
		done += n;
	}
	return 0;
}

/* Header + payload in one go; the caller holds the lock (or is alone). */
static int send_msg(int fd, const struct popup_wire_hdr *h, const void *payload)
{
	unsigned char hb[POPUP_WIRE_HDR_LEN];
	struct iovec iov[2] = {
		{ .iov_base = hb, .iov_len = sizeof(hb) },
		{ .iov_base = (void *)payload, .iov_len = h->len },
	};
	size_t total = sizeof(hb) + h->len, done = 0;

	popup_wire_encode(hb, h);
	while (done < total) {
		struct msghdr msg = { .msg_iov = iov, .msg_iovlen = h->len ? 2 : 1 };
		ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EPIPE || errno == EAGAIN ? -ECONNRESET : -errno;
		done += n;
		for (int i = 0; i < 2 && n; i++) {
			size_t k = min_t(size_t, (size_t)n, iov[i].iov_len);

			iov[i].iov_base = (char *)iov[i].iov_base + k;
			iov[i].iov_len -= k;
			n -= k;
		}
		if (!iov[0].iov_len) {
			iov[0] = iov[1];
			iov[1].iov_len = 0;
		}
	}
	return 0;
}

static int read_reply(int fd, struct popup_wire_hdr *h, unsigned char **buf, size_t *cap)
{
	unsigned char hb[POPUP_WIRE_HDR_LEN];
	int err = io_full(fd, hb, sizeof(hb), false);

	if (err)
		return err;
	popup_wire_decode(hb, h);
	if (h->magic != POPUP_WIRE_MAGIC || h->version != POPUP_WIRE_VERSION ||
	    !(h->flags & POPUP_WIRE_F_REPLY) || h->len > REPLY_MAX)
		return -EPROTO;
	if (h->len + 1 > *cap) {
		unsigned char *n = realloc(*buf, h->len + 1);

		if (!n)
			return -ENOMEM;
		*buf = n;
		*cap = h->len + 1;
	}
	return io_full(fd, *buf, h->len, false);
}

/* ---- the reader ---------------------------------------------------------- */

static void deliver_locked(struct net_conn *nc, const struct popup_wire_hdr *h,
			   const unsigned char *p)
{
	struct popup_txn **pp, *t;
	int status;

	for (pp = &nc->pending; (t = *pp); pp = &t->next)
		if (t->seq == h->req_id)
			break;
	if (!t)
		return;		/* timed out or cancelled: discard */
	*pp = t->next;
	status = wire_errno(h->status);
	if (t->res_cap)
		memcpy(t->res, p, min_t(uint32_t, h->len, t->res_cap));
	/* An error's text is cut to fit: the error is what matters. */
	t->res_len = status ? min_t(uint32_t, h->len, t->res_cap) : h->len;
	if (!status && h->len > t->res_cap)
		status = -ENOBUFS;
	libpopup_txn_complete(t, status);
}

static void fail_all_locked(struct net_conn *nc)
{
	struct popup_txn *t;

	nc->dead = true;
	while ((t = nc->pending)) {
		nc->pending = t->next;
		t->res_len = 0;
		libpopup_txn_complete(t, -ECONNRESET);
	}
}

static void *reader_thread(void *arg)
{
	struct net_conn *nc = arg;
	struct popup_wire_hdr h;
	unsigned char *buf = NULL;
	size_t cap = 0;
	int err;

	for (;;) {
		err = read_reply(nc->fd, &h, &buf, &cap);
		if (err) {
			if (err != -ECONNRESET)
				pr_debug("net: connection ends: %s\n", strerror(-err));
			break;
		}
		pthread_mutex_lock(&nc->lock);
		deliver_locked(nc, &h, buf);
		pthread_mutex_unlock(&nc->lock);
	}
	pthread_mutex_lock(&nc->lock);
	fail_all_locked(nc);
	pthread_mutex_unlock(&nc->lock);
	free(buf);
	return NULL;
}

int libpopup_net_submit(struct popup_txn *t, const void *arg)
{
	struct net_conn *nc = NC(t->b->client);
	const struct nbinding *nb = t->b->priv;
	struct popup_wire_hdr h = {
		.magic = POPUP_WIRE_MAGIC, .version = POPUP_WIRE_VERSION,
		.method = (uint16_t)t->m->id, .service = nb->service,
		.len = t->arg_len,
	};
	int err;

	pthread_mutex_lock(&nc->lock);
	if (nc->dead) {
		pthread_mutex_unlock(&nc->lock);
		return -ECONNRESET;
	}
	t->seq = h.req_id = ++nc->next_id;
	t->next = nc->pending;
	nc->pending = t;
	err = send_msg(nc->fd, &h, arg);
	if (err) {
		nc->pending = t->next;	/* still first: we held the lock */
		shutdown(nc->fd, SHUT_RDWR);	/* the reader fails the rest */
	}
	pthread_mutex_unlock(&nc->lock);
	return err;
}

bool libpopup_net_cancel(struct popup_txn *t)
{
	struct net_conn *nc = NC(t->b->client);
	struct popup_txn **pp;
	bool found = false;

	pthread_mutex_lock(&nc->lock);
	for (pp = &nc->pending; *pp; pp = &(*pp)->next) {
		if (*pp == t) {
			*pp = t->next;
			found = true;
			break;
		}
	}
	pthread_mutex_unlock(&nc->lock);
	return found;
}

/* ---- connect and directory ------------------------------------------------ */

static int tcp_connect(const char *hostport, int timeout_ms)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
	char host[256], *port;
	struct timeval tv = { .tv_sec = timeout_ms / 1000,
			      .tv_usec = (timeout_ms % 1000) * 1000 };
	int fd = -1, err, one = 1;

	if (snprintf(host, sizeof(host), "%s", hostport) >= (int)sizeof(host))
		return -ENAMETOOLONG;
	port = strrchr(host, ':');
	if (!port || port == host || !port[1])
		return -EINVAL;
	*port++ = 0;
	if (host[0] == '[' && port[-2] == ']') {
		port[-2] = 0;
		memmove(host, host + 1, strlen(host));
	}
	err = getaddrinfo(host, port, &hints, &res);
	if (err)
		return err == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
	err = -EHOSTUNREACH;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0) {
			err = -errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		if (!connect(fd, ai->ai_addr, ai->ai_addrlen))
			break;
		err = errno == EINPROGRESS || errno == EAGAIN ? -ETIMEDOUT : -errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return err;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* Service 0, method 1: the directory text, before the reader runs. */
static int fetch_dir(struct net_conn *nc)
{
	struct popup_wire_hdr h = {
		.magic = POPUP_WIRE_MAGIC, .version = POPUP_WIRE_VERSION,
		.method = 1, .service = 0, .req_id = ++nc->next_id,
	};
	unsigned char *buf = NULL;
	size_t cap = 0;
	int err;

	err = send_msg(nc->fd, &h, NULL);
	if (!err)
		err = read_reply(nc->fd, &h, &buf, &cap);
	if (err == -EAGAIN || err == -EWOULDBLOCK)
		err = -ETIMEDOUT;
	if (!err && (h.req_id != nc->next_id || h.status || h.len > DIR_MAX))
		err = -EPROTO;
	if (err) {
		free(buf);
		return err;
	}
	buf[h.len] = 0;
	nc->dir = (char *)buf;
	return 0;
}

static void conn_free(struct net_conn *nc)
{
	if (nc->reader_started) {
		shutdown(nc->fd, SHUT_RDWR);
		pthread_join(nc->reader, NULL);
	}
	if (nc->fd >= 0)
		close(nc->fd);
	pthread_mutex_destroy(&nc->lock);
	free(nc->dir);
	free(nc);
}

struct popup_client *popup_client__connect_tcp(const char *hostport, int timeout_ms)
{
	struct timeval tv = { 0 };
	struct popup_client *c;
	struct net_conn *nc;
	int err;

	if (!hostport) {
		errno = EINVAL;
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	nc = calloc(1, sizeof(*nc));
	if (!c || !nc) {
		free(c);
		free(nc);
		errno = ENOMEM;
		return NULL;
	}
	pthread_mutex_init(&nc->lock, NULL);
	nc->fd = tcp_connect(hostport, timeout_ms > 0 ? timeout_ms : 5000);
	err = nc->fd < 0 ? nc->fd : fetch_dir(nc);
	if (!err) {
		/* Replies may take as long as handlers do: no receive timeout. */
		setsockopt(nc->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		err = -pthread_create(&nc->reader, NULL, reader_thread, nc);
		nc->reader_started = !err;
	}
	if (err) {
		conn_free(nc);
		free(c);
		errno = -err;
		return NULL;
	}
	c->fd = -1;
	c->backend = POPUP_BACKEND_NET;
	c->ops = &libpopup_net_ops;
	c->priv = nc;
	return c;
}

static void net_client_close(struct popup_client *c)
{
	conn_free(NC(c));
	c->priv = NULL;
}

/* The value of " key=" in @line (up to its end), or NULL. */
static const char *field(const char *line, const char *end, const char *key)
{
	size_t kl = strlen(key);

	for (const char *p = line; p + kl < end; p++)
		if ((p == line || p[-1] == ' ') && !strncmp(p, key, kl) && p[kl] == '=')
			return p + kl + 1;
	return NULL;
}

static bool field_is(const char *line, const char *end, const char *key, const char *val)
{
	const char *v = field(line, end, key);
	size_t n = strlen(val);

	return v && v + n <= end && !strncmp(v, val, n) && (v[n] == ' ' || v + n == end);
}

static uint32_t field_u32(const char *line, const char *end, const char *key)
{
	const char *v = field(line, end, key);

	return v ? (uint32_t)strtoul(v, NULL, 10) : 0;
}

static int add_method(struct popup_binding *b, const char *l, const char *e)
{
	struct method_info *m;

	if (b->nr_methods >= POPUP_MAX_METHODS)
		return -EPROTO;
	m = realloc(b->methods, (b->nr_methods + 1) * sizeof(*m));
	if (!m)
		return -ENOMEM;
	b->methods = m;
	m[b->nr_methods++] = (struct method_info){
		.id = field_u32(l, e, "id"),
		.max_arg = min_t(uint32_t, field_u32(l, e, "max_arg"), POPUP_MAX_MSG),
		.max_res = min_t(uint32_t, field_u32(l, e, "max_res"), POPUP_MAX_MSG),
	};
	return 0;
}

static int net_import(struct popup_binding *b)
{
	const char *dir = NC(b->client)->dir, *l, *e;
	char ver[16];
	struct nbinding *nb;
	bool found = false;
	uint32_t size = 1;
	int err = 0;

	snprintf(ver, sizeof(ver), "%u", b->version);
	nb = calloc(1, sizeof(*nb));
	if (!nb)
		return -ENOMEM;
	for (l = dir; *l && !err; l = *e ? e + 1 : e) {
		e = strchrnul(l, '\n');
		if (!strncmp(l, "svc ", 4) && field_is(l, e, "name", b->name) &&
		    field_is(l, e, "version", ver)) {
			nb->service = field_u32(l, e, "id");
			found = true;
		} else if (!strncmp(l, "m ", 2) && field_is(l, e, "svc", b->name) && found) {
			err = add_method(b, l, e);
		}
	}
	if (!found || err) {
		free(nb);
		return err ?: -ENOENT;
	}
	for (uint32_t i = 0; i < b->nr_methods; i++)
		size = max_t(uint32_t, size, max_t(uint32_t, b->methods[i].max_arg,
						   b->methods[i].max_res));
	b->slot_size = b->slot_stride = size;
	/* calloc: large, lazily zeroed pages; only slots used are touched. */
	b->slots = calloc(b->nr_slots, size);
	if (!b->slots) {
		free(nb);
		return -ENOMEM;
	}
	b->priv = nb;
	return 0;
}

static void net_unimport(struct popup_binding *b)
{
	free(b->slots);
	b->slots = NULL;
	free(b->priv);
	b->priv = NULL;
}

static int net_call(struct popup_binding *b, unsigned int slot, const struct method_info *m,
		    uint32_t arg_len, uint32_t *res_len, uint64_t deadline)
{
	uint8_t *p = libpopup_slot_ptr(b, slot);

	return libpopup_batch_call_one(b, m, p, arg_len, p, b->slot_size, res_len, deadline);
}

static int net_call_oneway(struct popup_binding *b, const struct method_info *m,
			   const void *arg, uint32_t arg_len)
{
	struct net_conn *nc = NC(b->client);
	const struct nbinding *nb = b->priv;
	struct popup_wire_hdr h = {
		.magic = POPUP_WIRE_MAGIC, .version = POPUP_WIRE_VERSION,
		.flags = POPUP_WIRE_F_ONEWAY, .method = (uint16_t)m->id,
		.service = nb->service, .len = arg_len,
	};
	int err = -ECONNRESET;

	pthread_mutex_lock(&nc->lock);
	if (!nc->dead) {
		h.req_id = ++nc->next_id;
		err = send_msg(nc->fd, &h, arg);
	}
	pthread_mutex_unlock(&nc->lock);
	return err;
}

static int net_no_server(struct popup_server *srv)
{
	return -EOPNOTSUPP;
}

static int net_client_open(struct popup_client *c)
{
	return -EINVAL;		/* only popup_client__connect_tcp() */
}

const struct popup_ops libpopup_net_ops = {
	.name = "net",
	.max_msg = POPUP_MAX_MSG,
	.server_export = net_no_server,
	.client_open = net_client_open,
	.client_close = net_client_close,
	.import = net_import,
	.unimport = net_unimport,
	.call = net_call,
	.call_oneway = net_call_oneway,
	.async = ASYNC_NET,
};
