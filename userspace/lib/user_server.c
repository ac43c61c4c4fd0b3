// SPDX-License-Identifier: LGPL-2.1 OR BSD-2-Clause
/*
 * Userspace backend, server side: the part of popup.ko that libpopup has
 * to play itself when the module is not there.
 *
 * Three kinds of thread cooperate, mirroring the kernel backend's roles:
 *   dispatcher  (one, started at export) plays the kernel: it accepts
 *               connections, reads CALL/ONEWAY messages, and hands each
 *               call directly to an idle handler thread or queues it by
 *               priority then arrival; it refuses calls past the queue
 *               limit with -EAGAIN and cancels the calls of clients that
 *               hang up.
 *   runner      (the popup_server__run() caller) creates a thread on each
 *               spawn request, as a server does on the module's spawn
 *               results; it never runs handlers.
 *   handlers    (the pool) wait for a call, run it, send the reply. A
 *               thread idle past the idle timeout retires if the pool
 *               keeps its minimum without it.
 * Spawn requests follow Binder: at most one outstanding per pool, made
 * when a call waits and no thread is idle (or fewer than min_idle are),
 * asking for `increment` threads within max_threads.
 *
 * Locking: one lock, srv->lock, covers the queue, the idle list, the pool
 * counters and the stats. Sockets are used without it: each connection is
 * reference counted (dispatcher + each context of it), so a handler can
 * send on it while the dispatcher drops it; the fd closes with the last
 * reference.
 */
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "libpopup_internal.h"
#include "user_proto.h"

struct list_node {
	struct list_node *prev, *next;
};

#define container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))

static void list_init(struct list_node *h)
{
	h->prev = h->next = h;
}

static bool list_empty(const struct list_node *h)
{
	return h->next == h;
}

static void list_insert(struct list_node *n, struct list_node *prev)
{
	n->prev = prev;
	n->next = prev->next;
	prev->next->prev = n;
	prev->next = n;
}

static void list_del(struct list_node *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	list_init(n);
}

/* One accepted connection (a client slot or one-way channel). */
struct uconn {
	struct list_node node;		/* in userver.conns (dispatcher only) */
	atomic_int refs;
	atomic_bool dead;		/* the client hung up or misbehaved */
	atomic_uint oneway_pending;	/* one-way calls accepted, not yet run */
	bool hello;			/* handshake done (dispatcher only) */
	uint32_t oneway_quota;		/* from the HELLO (dispatcher only) */
	int fd;
	struct ucred cred;
};

/* One call, from arrival to reply. */
struct uctx {
	struct list_node node;		/* in userver.queue (srv->lock) */
	uint64_t seq;			/* arrival order in the queue (srv->lock) */
	struct uconn *conn;		/* a reference */
	const struct method_info *m;
	struct pu_hdr hdr;
	struct popup_request req;
	uint8_t buf[];			/* arguments, then the result area */
};

/* An idle handler thread, on its own stack while it waits. */
struct waiter {
	struct list_node node;		/* in userver.idle (srv->lock) */
	pthread_cond_t cond;
	struct uctx *ctx;		/* handed over by the dispatcher */
};

struct userver {
	struct popup_server *srv;
	int lfd;			/* listening socket */
	int disp_efd;			/* wakes the dispatcher to exit */
	int run_efd;			/* wakes the runner: spawn or stop */
	int epfd;
	uint64_t instance;
	uint32_t buf_cap;		/* ctx buffer: max(max_arg, hello) + max_res */
	pthread_t dispatcher;
	bool withdrawn;			/* name unbound, connections reset */
	atomic_bool stop_req;
	struct list_node conns;		/* dispatcher only */
	/* Protected by srv->lock: */
	struct list_node queue;		/* uctx, priority then arrival */
	struct list_node idle;		/* waiter, most recently idle first */
	bool active;			/* run() is running */
	uint32_t nr_threads;		/* alive or being created */
	uint32_t nr_idle, nr_busy, nr_spawning, nr_queued;
	uint32_t nr_finishing;		/* busy threads past their handler */
	uint32_t spawn_req;		/* threads asked of the runner */
	uint64_t seq;			/* next uctx.seq */
	uint32_t skips;			/* dequeues that passed the oldest over */
	uint64_t spare_since_ns;	/* nr_idle above min_idle since then */
	pthread_cond_t exited;		/* nr_threads dropped to 0 */
};

static struct userver *US(const struct popup_server *srv)
{
	return srv->priv;
}

/* ---- connections and contexts ------------------------------------------ */

static void conn_put(struct uconn *c)
{
	if (atomic_fetch_sub(&c->refs, 1) == 1) {
		close(c->fd);
		free(c);
	}
}

static void ctx_free(struct uctx *ctx)
{
	conn_put(ctx->conn);
	free(ctx);
}

/* Send one message without blocking: a client that does not read loses it. */
static int conn_send(struct uconn *c, const struct pu_hdr *h, const void *p,
		     uint32_t len)
{
	struct iovec iov[2] = {
		{ .iov_base = (void *)h, .iov_len = sizeof(*h) },
		{ .iov_base = (void *)p, .iov_len = len },
	};
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = len ? 2 : 1 };

	if (atomic_load(&c->dead))
		return -EPIPE;
	if (sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		return -errno;
	return 0;
}

static int conn_send_status(struct uconn *c, uint16_t type, uint64_t seq,
			    int status, uint16_t flags)
{
	struct pu_hdr h = {
		.magic = PU_MAGIC, .type = type, .flags = flags,
		.status = status, .seq = seq,
	};

	return conn_send(c, &h, NULL, 0);
}

/* Refuse a call with a library errno (the reply type depends on its kind). */
static void ctx_refuse(struct popup_server *srv, struct uctx *ctx, int err)
{
	uint16_t type = ctx->hdr.type == PU_ONEWAY ? PU_ACK : PU_REPLY;

	/* Count first: the caller may read the stats as soon as it hears. */
	pthread_mutex_lock(&srv->lock);
	srv->stats.rejected++;
	pthread_mutex_unlock(&srv->lock);
	conn_send_status(ctx->conn, type, ctx->hdr.seq, err, PU_F_ERR);
	ctx_free(ctx);
}

/* ---- the pool ---------------------------------------------------------- */

/*
 * Decide on a spawn request: one at a time, only while run() is active,
 * when calls wait with no idle thread or the idle count is below the
 * minimum. Returns how many threads were requested; the caller wakes the
 * runner once it drops the lock.
 */
static uint32_t pool_want_spawn_locked(struct popup_server *srv)
{
	struct userver *us = US(srv);
	const struct popup_pool_attr *p = &srv->pool;
	uint32_t n;

	if (!us->active || us->nr_spawning || us->nr_threads >= p->max_threads)
		return 0;
	/* A thread past its handler (sending the reply) takes a queued call
	 * or goes idle within microseconds: count it as available, as the
	 * module counts its replying threads, or a caller in a loop would
	 * make the pool spawn a thread the idle timeout then retires. */
	if (us->nr_idle + us->nr_finishing >= us->nr_queued + p->min_idle)
		return 0;
	n = min_t(uint32_t, p->increment, p->max_threads - us->nr_threads);
	us->nr_threads += n;
	us->nr_spawning += n;
	us->spawn_req += n;
	return n;
}

static void runner_wake(struct userver *us)
{
	uint64_t one = 1;

	/* eventfd writes only fail on overflow, which another wake covers. */
	if (write(us->run_efd, &one, sizeof(one)) < 0)
		return;
}

/* Give @ctx to the most recently idle thread, else queue it. */
static void pool_enqueue_locked(struct popup_server *srv, struct uctx *ctx)
{
	struct userver *us = US(srv);
	struct list_node *pos;

	if (!list_empty(&us->idle)) {
		struct waiter *w = container_of(us->idle.next, struct waiter, node);

		list_del(&w->node);
		if (us->nr_idle-- <= srv->pool.min_idle + 1)
			us->spare_since_ns = libpopup_now_ns();
		w->ctx = ctx;
		pthread_cond_signal(&w->cond);
		return;
	}
	/* Behind every call of higher or equal priority. */
	ctx->seq = us->seq++;
	for (pos = us->queue.prev; pos != &us->queue; pos = pos->prev) {
		struct uctx *q = container_of(pos, struct uctx, node);

		if (q->req.priority >= ctx->req.priority)
			break;
	}
	list_insert(&ctx->node, pos);
	us->nr_queued++;
}

/*
 * Highest priority first, without starving the rest: the oldest queued
 * call is passed over at most AGE_SKIPS times in a row, then taken (the
 * same rule as popupd's pools). The queue is sorted by priority, so it
 * holds one priority only when its ends agree: then it is plain FIFO.
 */
#define AGE_SKIPS 8

static struct uctx *pool_dequeue_locked(struct userver *us)
{
	struct uctx *ctx, *last, *old;
	struct list_node *pos;

	if (list_empty(&us->queue))
		return NULL;
	ctx = container_of(us->queue.next, struct uctx, node);
	last = container_of(us->queue.prev, struct uctx, node);
	old = ctx;
	if (ctx->req.priority != last->req.priority) {
		for (pos = us->queue.next; pos != &us->queue; pos = pos->next) {
			struct uctx *q = container_of(pos, struct uctx, node);

			if (q->seq < old->seq)
				old = q;
		}
	}
	if (old == ctx || us->skips >= AGE_SKIPS) {
		us->skips = 0;
		ctx = old;
	} else {
		us->skips++;
	}
	list_del(&ctx->node);
	us->nr_queued--;
	return ctx;
}

/* More threads, or more idle ones, than the settings allow (set_pool). */
static bool pool_excess_locked(const struct popup_server *srv)
{
	const struct userver *us = US(srv);

	return us->nr_threads > srv->pool.max_threads ||
	       us->nr_idle > srv->pool.max_idle;
}

/*
 * Wait idle for a call. Returns it, or NULL when the thread should exit:
 * the pool stopped, it exceeds new settings, or the idle timeout passed
 * and the pool keeps min_idle threads without this one.
 */
static struct uctx *pool_wait_locked(struct popup_server *srv)
{
	struct userver *us = US(srv);
	struct waiter w = { .ctx = NULL };
	pthread_condattr_t ca;
	struct timespec ts;
	struct uctx *ctx;
	int err = 0;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w.cond, &ca);
	pthread_condattr_destroy(&ca);
	list_insert(&w.node, &us->idle);
	us->nr_idle++;
	/* Idle now, and still below the minimum: ask for more. */
	if (pool_want_spawn_locked(srv))
		runner_wake(us);
	for (;;) {
		/* Re-read each round: set_pool() may change the timeout. */
		uint32_t idle_ms = srv->pool.idle_timeout_ms;

		libpopup_timespec_from_ns(&ts, libpopup_now_ns() + idle_ms * 1000000ull);
		while (!w.ctx && us->active && err != ETIMEDOUT &&
		       !pool_excess_locked(srv)) {
			if (idle_ms)
				err = pthread_cond_timedwait(&w.cond, &srv->lock, &ts);
			else
				err = pthread_cond_wait(&w.cond, &srv->lock);
		}
		if (w.ctx || !us->active || pool_excess_locked(srv))
			break;
		/*
		 * Retire only if the pool had a thread to spare during this
		 * whole idle period: a steady caller that keeps one thread
		 * busy at a time briefly takes the idle count down to the
		 * minimum on every call, and retiring the spare then would
		 * only have it spawned again (spawns per second in steady
		 * state must be zero).
		 */
		if (us->nr_idle - 1 >= srv->pool.min_idle &&
		    libpopup_now_ns() - us->spare_since_ns >= idle_ms * 1000000ull) {
			/* Without us the pool may be at its edge: the next
			 * spare, if any, waits a whole period of its own. */
			if (us->nr_idle - 1 <= srv->pool.min_idle + 1)
				us->spare_since_ns = libpopup_now_ns();
			break;
		}
		err = 0;	/* needed: stay, start a new period */
	}
	ctx = w.ctx;
	if (!ctx) {
		list_del(&w.node);
		us->nr_idle--;
	}
	pthread_cond_destroy(&w.cond);
	return ctx;
}

/* Run one call's handler and answer it; called without the lock. */
static void ctx_run(struct popup_server *srv, struct uctx *ctx)
{
	struct popup_request *req = &ctx->req;
	bool oneway = ctx->hdr.type == PU_ONEWAY;
	struct pu_hdr h = {
		.magic = PU_MAGIC, .type = oneway ? PU_ACK : PU_REPLY,
		.seq = ctx->hdr.seq,
	};
	int sent = 0;

	h.status = ctx->m->handler(req);
	if (oneway) {
		/* Accepted when queued (see handle_call): nothing to send. */
		atomic_fetch_sub(&ctx->conn->oneway_pending, 1);
	} else if (req->res_len > ctx->m->max_res) {
		pr_warn("%s.%u: method %u returned %u bytes, max_res is %u\n",
			srv->name, srv->version, ctx->m->id, req->res_len,
			ctx->m->max_res);
		h.status = -EOVERFLOW;
		h.flags = PU_F_ERR;
	} else {
		h.len = req->res_len;
	}
	pthread_mutex_lock(&srv->lock);
	srv->stats.calls++;
	US(srv)->nr_finishing++;
	pthread_mutex_unlock(&srv->lock);
	if (!oneway)
		sent = conn_send(ctx->conn, &h, req->res, h.len);
	if (sent) {
		pthread_mutex_lock(&srv->lock);
		srv->stats.cancelled++;
		pthread_mutex_unlock(&srv->lock);
	}
	ctx_free(ctx);
}

/* Whether a thread that just finished a call should retire at once. */
static bool pool_should_retire_locked(struct popup_server *srv)
{
	struct userver *us = US(srv);

	return !us->active || us->nr_idle >= srv->pool.max_idle ||
	       us->nr_threads > srv->pool.max_threads;
}

static void *handler_thread(void *arg)
{
	struct popup_server *srv = arg;
	struct userver *us = US(srv);
	struct uctx *ctx;
	uint32_t n;

	pthread_mutex_lock(&srv->lock);
	us->nr_spawning--;
	for (;;) {
		/*
		 * Spawn requests follow the two moments the idle count can be
		 * short: taking a call (below) and going idle (in wait).
		 */
		ctx = us->active ? pool_dequeue_locked(us) : NULL;
		if (!ctx && us->active)
			ctx = pool_wait_locked(srv);
		if (!ctx)
			break;
		us->nr_busy++;
		n = pool_want_spawn_locked(srv);
		pthread_mutex_unlock(&srv->lock);
		if (n)
			runner_wake(us);
		ctx_run(srv, ctx);
		pthread_mutex_lock(&srv->lock);
		us->nr_busy--;
		us->nr_finishing--;
		if (pool_should_retire_locked(srv))
			break;
	}
	/* Calls queued while we counted as finishing: see they get a thread. */
	if (us->nr_queued && pool_want_spawn_locked(srv))
		runner_wake(us);
	us->nr_threads--;
	if (us->active)
		srv->stats.retired++;
	if (!us->nr_threads)
		pthread_cond_broadcast(&us->exited);
	pthread_mutex_unlock(&srv->lock);
	return NULL;
}

static void pool_spawn(struct popup_server *srv, uint32_t n)
{
	struct userver *us = US(srv);
	pthread_attr_t attr;
	pthread_t t;
	int err;

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	for (uint32_t i = 0; i < n; i++) {
		err = pthread_create(&t, &attr, handler_thread, srv);
		pthread_mutex_lock(&srv->lock);
		if (err) {
			us->nr_threads--;
			us->nr_spawning--;
			if (!us->nr_threads)
				pthread_cond_broadcast(&us->exited);
		} else {
			srv->stats.spawned++;
			srv->stats.max_threads_seen = max_t(uint32_t,
				srv->stats.max_threads_seen, us->nr_threads);
		}
		pthread_mutex_unlock(&srv->lock);
		if (err)
			pr_warn("%s.%u: cannot create a handler thread: %s\n",
				srv->name, srv->version, strerror(err));
	}
	pthread_attr_destroy(&attr);
}

/* ---- the dispatcher ---------------------------------------------------- */

static void conn_drop(struct popup_server *srv, struct uconn *c)
{
	struct userver *us = US(srv);
	struct list_node *pos, *next, gone;
	uint32_t n = 0;

	list_init(&gone);
	atomic_store(&c->dead, true);
	pthread_mutex_lock(&srv->lock);
	for (pos = us->queue.next; pos != &us->queue; pos = next) {
		struct uctx *ctx = container_of(pos, struct uctx, node);

		next = pos->next;
		/* Accepted one-way calls run even if their caller left. */
		if (ctx->conn != c || ctx->hdr.type == PU_ONEWAY)
			continue;
		list_del(pos);
		list_insert(pos, &gone);
		us->nr_queued--;
		n++;
	}
	srv->stats.cancelled += n;
	pthread_mutex_unlock(&srv->lock);
	while (!list_empty(&gone)) {
		pos = gone.next;
		list_del(pos);
		ctx_free(container_of(pos, struct uctx, node));
	}
	epoll_ctl(us->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	list_del(&c->node);
	conn_put(c);
}

static void conn_accept(struct popup_server *srv)
{
	struct userver *us = US(srv);
	socklen_t len = sizeof(struct ucred);
	struct epoll_event ev = { .events = EPOLLIN };
	struct uconn *c;
	int fd;

	fd = accept4(us->lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return;
	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->fd = fd;
	atomic_init(&c->refs, 1);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c->cred, &len) < 0)
		c->cred = (struct ucred){ .pid = 0, .uid = -1, .gid = -1 };
	ev.data.ptr = c;
	list_insert(&c->node, &us->conns);
	if (epoll_ctl(us->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		pr_warn("%s.%u: epoll_ctl: %s\n", srv->name, srv->version, strerror(errno));
		list_del(&c->node);
		conn_put(c);
	}
}

static int send_welcome(struct popup_server *srv, struct uconn *c)
{
	struct pu_hdr h = { .magic = PU_MAGIC, .type = PU_WELCOME };
	struct pu_welcome w = {
		.instance = US(srv)->instance, .proto = PU_PROTO,
		.nr_methods = srv->nr_methods,
	};
	uint8_t buf[sizeof(w) + POPUP_MAX_METHODS * sizeof(struct pu_method)];
	struct pu_method *pm = (struct pu_method *)(buf + sizeof(w));

	memcpy(buf, &w, sizeof(w));
	for (uint32_t i = 0; i < srv->nr_methods; i++)
		pm[i] = (struct pu_method){
			.id = srv->methods[i].id, .flags = srv->methods[i].flags,
			.max_arg = srv->methods[i].max_arg,
			.max_res = srv->methods[i].max_res,
		};
	h.len = sizeof(w) + srv->nr_methods * sizeof(*pm);
	return conn_send(c, &h, buf, h.len);
}

/* HELLO: check the client asked for this service; 0 or -errno to drop. */
static int handle_hello(struct popup_server *srv, struct uconn *c, struct uctx *ctx)
{
	const struct pu_hello *hello = (const void *)ctx->buf;
	int err = 0;

	if (c->hello || ctx->hdr.len != sizeof(*hello))
		return -EPROTO;
	if (hello->proto != PU_PROTO)
		err = -EPROTO;
	else if (hello->version != srv->version ||
		 strncmp(hello->name, srv->name, sizeof(hello->name)))
		err = -ENOENT;
	if (err) {
		conn_send_status(c, PU_WELCOME, 0, err, PU_F_ERR);
		return err;
	}
	c->hello = true;
	c->oneway_quota = hello->oneway_quota;
	return send_welcome(srv, c);
}

/* Fill the handler's view of a call from the message and the connection. */
static void ctx_prepare(struct popup_server *srv, struct uctx *ctx)
{
	uint64_t now = libpopup_now_ns();
	struct popup_request *req = &ctx->req;

	*req = (struct popup_request){
		.server = srv, .user_data = srv->user_data,
		.method = ctx->hdr.method,
		.flags = ctx->hdr.type == PU_ONEWAY ? POPUP_REQ_ONEWAY : 0,
		.arg = ctx->buf, .arg_len = ctx->hdr.len,
		.res = ctx->buf + US(srv)->buf_cap - srv->max_res,
		.res_cap = ctx->m->max_res,
		.priority = ctx->hdr.priority,
		.caller_pid = ctx->conn->cred.pid,
		.caller_uid = ctx->conn->cred.uid,
		.caller_gid = ctx->conn->cred.gid,
		.cpu = ctx->hdr.cpu,
		.deadline_ns = ctx->hdr.timeout_ms ?
			now + ctx->hdr.timeout_ms * 1000000ull : 0,
	};
}

/* CALL or ONEWAY: check, then hand to the pool or refuse. Owns @ctx. */
static void handle_call(struct popup_server *srv, struct uctx *ctx, bool truncated)
{
	struct userver *us = US(srv);
	bool oneway = ctx->hdr.type == PU_ONEWAY;
	uint32_t n;

	ctx->m = libpopup_method_find(srv->methods, srv->nr_methods, ctx->hdr.method);
	if (!ctx->m) {
		ctx_refuse(srv, ctx, -EOPNOTSUPP);
		return;
	}
	if (!!(ctx->m->flags & POPUP_METHOD_ONEWAY) != oneway) {
		ctx_refuse(srv, ctx, -EINVAL);
		return;
	}
	if (truncated || ctx->hdr.len > ctx->m->max_arg) {
		ctx_refuse(srv, ctx, -EMSGSIZE);
		return;
	}
	ctx_prepare(srv, ctx);
	if (oneway && atomic_load(&ctx->conn->oneway_pending) >= ctx->conn->oneway_quota) {
		ctx_refuse(srv, ctx, -EAGAIN);
		return;
	}
	pthread_mutex_lock(&srv->lock);
	if (list_empty(&us->idle) && us->nr_queued >= srv->pool.queue_limit) {
		pthread_mutex_unlock(&srv->lock);
		ctx_refuse(srv, ctx, -EAGAIN);
		return;
	}
	if (oneway) {
		/* Only the dispatcher adds, so the quota check above holds. */
		atomic_fetch_add(&ctx->conn->oneway_pending, 1);
		conn_send_status(ctx->conn, PU_ACK, ctx->hdr.seq, 0, 0);
	}
	pool_enqueue_locked(srv, ctx);
	n = pool_want_spawn_locked(srv);
	pthread_mutex_unlock(&srv->lock);
	if (n)
		runner_wake(us);
}

static void conn_readable(struct popup_server *srv, struct uconn *c)
{
	struct userver *us = US(srv);
	struct uctx *ctx;
	struct iovec iov[2];
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 2 };
	ssize_t n;

	ctx = malloc(sizeof(*ctx) + us->buf_cap);
	if (!ctx) {
		conn_drop(srv, c);
		return;
	}
	iov[0] = (struct iovec){ .iov_base = &ctx->hdr, .iov_len = sizeof(ctx->hdr) };
	iov[1] = (struct iovec){ .iov_base = ctx->buf, .iov_len = us->buf_cap - srv->max_res };
	n = recvmsg(c->fd, &msg, MSG_DONTWAIT | MSG_TRUNC);
	if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
		free(ctx);
		return;
	}
	atomic_fetch_add(&c->refs, 1);
	ctx->conn = c;
	if (n < (ssize_t)sizeof(ctx->hdr) || ctx->hdr.magic != PU_MAGIC ||
	    n - sizeof(ctx->hdr) != ctx->hdr.len)
		goto drop;	/* hang-up (0), error, or not our protocol */
	switch (ctx->hdr.type) {
	case PU_HELLO:
		if (handle_hello(srv, c, ctx))
			goto drop;
		ctx_free(ctx);
		return;
	case PU_CALL:
	case PU_ONEWAY:
		if (!c->hello)
			goto drop;
		handle_call(srv, ctx, msg.msg_flags & MSG_TRUNC);
		return;
	}
drop:
	ctx_free(ctx);
	conn_drop(srv, c);
}

static void *dispatcher_thread(void *arg)
{
	struct popup_server *srv = arg;
	struct userver *us = US(srv);
	struct epoll_event evs[32];
	int n;

	for (;;) {
		n = epoll_wait(us->epfd, evs, ARRAY_SIZE(evs), -1);
		for (int i = 0; i < n; i++) {
			void *p = evs[i].data.ptr;

			if (p == &us->disp_efd)
				return NULL;
			if (p == &us->lfd)
				conn_accept(srv);
			else
				conn_readable(srv, p);
		}
	}
}

/* ---- popup_ops --------------------------------------------------------- */

static int listen_socket(const struct popup_server *srv)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	socklen_t len;
	int fd, n;

	n = snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, PU_ADDR_FMT,
		     srv->name, srv->version);
	len = offsetof(struct sockaddr_un, sun_path) + 1 + n;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, len) < 0 || listen(fd, SOMAXCONN) < 0) {
		int err = errno == EADDRINUSE ? -EEXIST : -errno;

		pr_debug("%s.%u: cannot bind @%s: %s\n", srv->name, srv->version,
			 sa.sun_path + 1, strerror(-err));
		close(fd);
		return err;
	}
	return fd;
}

static int epoll_add(int epfd, int fd, void *tag)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = tag };

	return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

static void userver_free(struct userver *us)
{
	if (us->lfd >= 0)
		close(us->lfd);
	if (us->disp_efd >= 0)
		close(us->disp_efd);
	if (us->run_efd >= 0)
		close(us->run_efd);
	if (us->epfd >= 0)
		close(us->epfd);
	pthread_cond_destroy(&us->exited);
	free(us);
}

static int userver_open(struct popup_server *srv, struct userver *us)
{
	int err;

	us->lfd = listen_socket(srv);
	if (us->lfd < 0)
		return us->lfd;
	us->disp_efd = eventfd(0, EFD_CLOEXEC);
	us->run_efd = eventfd(0, EFD_CLOEXEC);
	us->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (us->disp_efd < 0 || us->run_efd < 0 || us->epfd < 0)
		return -errno;
	err = epoll_add(us->epfd, us->lfd, &us->lfd);
	if (!err)
		err = epoll_add(us->epfd, us->disp_efd, &us->disp_efd);
	if (err)
		return err;
	if (getrandom(&us->instance, sizeof(us->instance), 0) != sizeof(us->instance))
		us->instance = libpopup_now_ns() ^ ((uint64_t)getpid() << 32);
	err = pthread_create(&us->dispatcher, NULL, dispatcher_thread, srv);
	return -err;
}

static int user_server_export(struct popup_server *srv)
{
	struct userver *us;
	int err;

	us = calloc(1, sizeof(*us));
	if (!us)
		return -ENOMEM;
	us->srv = srv;
	us->lfd = us->disp_efd = us->run_efd = us->epfd = -1;
	us->buf_cap = max_t(uint32_t, srv->max_arg, sizeof(struct pu_hello)) + srv->max_res;
	list_init(&us->conns);
	list_init(&us->queue);
	list_init(&us->idle);
	pthread_cond_init(&us->exited, NULL);
	atomic_init(&us->stop_req, false);
	srv->priv = us;
	err = userver_open(srv, us);
	if (err) {
		userver_free(us);
		srv->priv = NULL;
	}
	return err;
}

/* Let every thread finish its current call and exit; wait for them. */
static void pool_stop(struct popup_server *srv)
{
	struct userver *us = US(srv);
	struct list_node *pos;

	pthread_mutex_lock(&srv->lock);
	us->active = false;
	for (pos = us->idle.next; pos != &us->idle; pos = pos->next)
		pthread_cond_signal(&container_of(pos, struct waiter, node)->cond);
	/* Requests the runner will not serve any more count no thread. */
	us->nr_threads -= us->spawn_req;
	us->nr_spawning -= us->spawn_req;
	us->spawn_req = 0;
	while (us->nr_threads)
		pthread_cond_wait(&us->exited, &srv->lock);
	pthread_mutex_unlock(&srv->lock);
}

/*
 * Withdraw the service, as the module does: unbind the name (imports get
 * -ENOENT), drop queued calls and reset every connection (callers get
 * -ECONNRESET). The pool must be stopped. Idempotent.
 */
static void userver_shutdown(struct popup_server *srv)
{
	struct userver *us = US(srv);
	uint64_t one = 1;
	struct uctx *ctx;

	if (us->withdrawn)
		return;
	us->withdrawn = true;
	if (write(us->disp_efd, &one, sizeof(one)) == sizeof(one))
		pthread_join(us->dispatcher, NULL);
	close(us->lfd);
	us->lfd = -1;
	while ((ctx = pool_dequeue_locked(us)))
		ctx_free(ctx);
	while (!list_empty(&us->conns)) {
		struct uconn *c = container_of(us->conns.next, struct uconn, node);

		list_del(&c->node);
		atomic_store(&c->dead, true);
		shutdown(c->fd, SHUT_RDWR);	/* callers see -ECONNRESET now */
		conn_put(c);
	}
}

static int user_server_run(struct popup_server *srv)
{
	struct userver *us = US(srv);
	uint64_t v;
	uint32_t n;

	if (us->withdrawn)
		return -ENOENT;
	pthread_mutex_lock(&srv->lock);
	us->active = true;
	n = pool_want_spawn_locked(srv);
	pthread_mutex_unlock(&srv->lock);
	if (n)
		runner_wake(us);
	while (!atomic_load(&us->stop_req)) {
		if (read(us->run_efd, &v, sizeof(v)) < 0 && errno != EINTR)
			break;
		pthread_mutex_lock(&srv->lock);
		n = us->spawn_req;
		us->spawn_req = 0;
		pthread_mutex_unlock(&srv->lock);
		/* Counted as threads already: create them even when stopping. */
		if (n)
			pool_spawn(srv, n);
	}
	pool_stop(srv);
	userver_shutdown(srv);
	return 0;
}

static int user_server_stop(struct popup_server *srv)
{
	struct userver *us = US(srv);

	atomic_store(&us->stop_req, true);
	runner_wake(us);
	return 0;
}

static void user_server_withdraw(struct popup_server *srv)
{
	struct userver *us = US(srv);

	if (!us)
		return;
	pool_stop(srv);
	userver_shutdown(srv);
	userver_free(us);
	srv->priv = NULL;
}

static int user_server_set_pool(struct popup_server *srv)
{
	struct userver *us = US(srv);
	struct list_node *pos;
	uint32_t n;

	pthread_mutex_lock(&srv->lock);
	/* Idle threads re-check the minimum and their timeout. */
	for (pos = us->idle.next; pos != &us->idle; pos = pos->next)
		pthread_cond_signal(&container_of(pos, struct waiter, node)->cond);
	n = pool_want_spawn_locked(srv);
	pthread_mutex_unlock(&srv->lock);
	if (n)
		runner_wake(us);
	return 0;
}

static int user_server_stats(const struct popup_server *srv,
			     struct popup_server_stats *st)
{
	struct popup_server *s = (struct popup_server *)srv;
	struct userver *us = US(srv);

	pthread_mutex_lock(&s->lock);
	*st = srv->stats;
	st->threads = us->nr_threads - us->nr_spawning;
	st->idle = us->nr_idle;
	st->busy = us->nr_busy;
	st->queued = us->nr_queued;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* Client side, in user_client.c. */
int libpopup_user_client_open(struct popup_client *client);
void libpopup_user_client_close(struct popup_client *client);
int libpopup_user_import(struct popup_binding *b);
void libpopup_user_unimport(struct popup_binding *b);
int libpopup_user_call(struct popup_binding *b, unsigned int slot,
		       const struct method_info *m, uint32_t arg_len,
		       uint32_t *res_len, uint64_t deadline);
int libpopup_user_call_oneway(struct popup_binding *b, const struct method_info *m,
			      const void *arg, uint32_t arg_len);

const struct popup_ops libpopup_user_ops = {
	.name = "user",
	.max_msg = POPUP_USER_MAX_MSG,
	.server_export = user_server_export,
	.server_run = user_server_run,
	.server_stop = user_server_stop,
	.server_withdraw = user_server_withdraw,
	.server_set_pool = user_server_set_pool,
	.server_stats = user_server_stats,
	.client_open = libpopup_user_client_open,
	.client_close = libpopup_user_client_close,
	.import = libpopup_user_import,
	.unimport = libpopup_user_unimport,
	.call = libpopup_user_call,
	.call_oneway = libpopup_user_call_oneway,
	.async = ASYNC_POLL,
};
