// SPDX-License-Identifier: GPL-2.0
/*
 * TCP arrival: connections on popupd's listeners are accepted in the
 * kernel and handed to handler threads as descriptors; requests on the
 * connections popupd parks with the module become handler contexts with
 * the request frame in a slot, so thread-per-request works for TCP
 * without epoll.
 *
 * Design
 * ======
 * Listener (ATTACH of a listening TCP socket, POPUP_SOCK_LISTEN): the
 * module hooks its sk_data_ready, as sunrpc's svcsock hooks its listeners
 * (svc_tcp_listen_data_ready). The callback (softirq) only queues the
 * socket's work item: accept needs process context. The work item calls
 * kernel_accept(O_NONBLOCK) until the accept queue is empty (a batch at a
 * time), resets each child's sk_data_ready (children are cloned from the
 * listener with our callback, svc_tcp_accept does the same), and makes
 * each connection a context that goes through the arrival pool rules of
 * arrival.c (a slot of the listener's receive area, an idle thread on the
 * listener's CPU, else queued, spawn requests). The WAIT that returns it,
 * in the handler's own thread and process, installs the socket as a new
 * descriptor (sock_alloc_file, fd_install, O_CLOEXEC) and finishes the
 * context at once: KIND_CONN needs no reply. A connection that finds the
 * pool overloaded is closed at once and counted as refused: no request
 * header exists yet to answer BUSY to.
 *
 * Parked connection (PARK, POPUP_SOCK_CONN): the module takes a reference
 * to the connection's file and hooks sk_data_ready and sk_state_change
 * (the latter for resets, which wake no reader). It shares the listener's
 * service, CPU and receive area (one @active count of it) and is linked on
 * the listener's @conns list, so detaching the listener (DETACH, WITHDRAW,
 * release of the file) detaches its connections too.
 *
 * A pipelining client gets concurrent service: up to POPUP_CONN_INFLIGHT
 * stream contexts of one connection exist at a time (@ninflight), but at
 * most one of them has not read its frame yet (@reading): the stream has
 * a single reader and frames are taken in order. An event, or bytes left
 * after a frame, sets @more; popup_stream_next_locked() starts a context
 * when @more is set, nobody reads and the limit allows, and is called
 * again by a context that has read its frame and by one that finishes.
 * Flow of one request:
 *   1. softirq, sk_data_ready: allocate a context (GFP_ATOMIC; on failure
 *      the work item does it) and apply the pool rules (arg_len unknown
 *      yet): an idle thread, else queued, spawn requests.
 *   2. WAIT, in the handler's thread (state FILL, svc->lock dropped):
 *      peek the 32-byte native header (include/popup/wire.h), check its
 *      magic and length (framing only, like popupd's own reader), and
 *      read the whole frame into the slot only once tcp_inq() shows all
 *      of it; an incomplete frame finishes the context silently (the
 *      next data_ready brings a new one) unless the peer has ended. Once
 *      its frame is read the reader role passes on: if bytes are left (a
 *      pipelined frame, which no event will announce) or the peer has
 *      ended, the next context is made at once, in this thread, before
 *      the handler runs its own request. A reset or an oversized frame (a
 *      TOOBIG reply first) closes the connection: it is taken off its
 *      listener's list and @close_work detaches it (a grace period is
 *      waited for there, not in the handler). Bytes without the magic
 *      close it too, and reach the handler as a POPUP_CTX_BADFRAME
 *      context so that it can count them. The peer's orderly end (EOF,
 *      or a frame cut short by it) sets @eof instead: no context starts
 *      any more and the last one in flight closes the connection after
 *      its reply, so a client that pipelines requests and then shuts its
 *      side down gets every reply.
 *   3. REPLY writes result_len bytes of the slot to the connection
 *      (kernel_sendmsg, waiting for send-buffer room; a short write, e.g.
 *      on a signal, closes the connection) and lets the next context
 *      start if the limit held it back. Replies go out in the order they
 *      are made (the wire protocol matches them by req_id).
 * Overload (no slot, or the queue full with no idle thread): the context
 * goes to the connection's kernel-reply list; the work item consumes the
 * frame once whole and answers BUSY with its header.
 *
 * Replies of several threads must not interleave on the stream, and
 * tcp_sendmsg() releases the socket lock while it waits for memory, so
 * lock_sock() does not make a reply atomic: each whole reply is written
 * under the connection's @send_lock (a mutex). Kernel replies (BUSY,
 * TOOBIG, ERROR) are queued as headers on @kpend (at most
 * POPUP_CONN_KPEND, past which the connection is closed) and written by
 * whoever holds the lock: the work item only try-locks and writes without
 * waiting for room (it must not wait behind a handler blocked on a peer
 * that does not read: a detach flushes the work item), a handler thread
 * writes them after its own reply, and every holder looks at @kpend again
 * after unlocking, so none is left behind. Contexts in flight on a
 * connection that is closed (reset, bad frame, detach) hold a reference
 * to it: their replies fail (txerr) and release it when they end.
 *
 * Detach of either kind: arrival.c's popup_socks_detach_list() unhooks
 * (restoring every callback that is still ours), waits a grace period,
 * flushes the work item, then popup_tcp_detached(): a listener's children
 * still in its accept queue get the listener's own callback back, and
 * readers are woken if bytes or connections are left for userspace.
 *
 * Locking: as arrival.c. A connection's callbacks run with the socket's
 * spinlock held (bh_lock_sock) or with the socket owned, and take
 * svc->lock inside; nothing takes a socket lock with svc->lock held.
 * @conns, @nconns, @closing, @ninflight, @reading, @more, @eof, @kpend and
 * @accept are under svc->lock; @send_lock is taken with no other lock held
 * (lock_sock and svc->lock nest in it); a connection is detached by
 * whoever takes it off its listener's list (setting @closing) under
 * svc->lock: a closing connection's @close_work, DETACH with
 * POPUP_DETACH_CONN, or the listener's detach.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/file.h>
#include <linux/fs.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/net.h>
#include <linux/skbuff.h>
#include <linux/slab.h>
#include <net/inet_connection_sock.h>
#include <net/request_sock.h>
#include <net/sock.h>
#include <net/tcp.h>
#include <asm/unaligned.h>

#include "popup_internal.h"

#define POPUP_ACCEPT_BATCH	64	/* connections per run of the worker */

/* Ids of parked connections; unique per listener is what DETACH needs. */
static atomic_t popup_conn_ids = ATOMIC_INIT(0);

/*
 * The callback every TCP listener had before we hooked it (the core's
 * sock_def_readable unless another user changed it), for a child that
 * inherited ours and was accepted by someone other than our worker.
 */
static void (*popup_tcp_def_ready)(struct sock *sk) __read_mostly;

static void popup_tcp_listen_ready(struct sock *sk);
static void popup_tcp_conn_ready(struct sock *sk);
static void popup_tcp_conn_state(struct sock *sk);

/* ATTACH: is @sock a TCP listener? */
int popup_tcp_attach_check(struct socket *sock)
{
	struct sock *sk = sock->sk;

	if (sk->sk_protocol != IPPROTO_TCP ||
	    (sk->sk_family != AF_INET && sk->sk_family != AF_INET6))
		return -EPROTONOSUPPORT;
	if (READ_ONCE(sk->sk_state) != TCP_LISTEN)
		return -EINVAL;
	return 0;
}

/* Under lock_sock and sk_callback_lock (write), @ps in the hash. */
void popup_tcp_hook_locked(struct popup_sock *ps)
{
	struct sock *sk = ps->sk;

	if (ps->kind == POPUP_SOCK_LISTEN) {
		if (!READ_ONCE(popup_tcp_def_ready))
			WRITE_ONCE(popup_tcp_def_ready, ps->saved_data_ready);
		WRITE_ONCE(sk->sk_data_ready, popup_tcp_listen_ready);
		return;
	}
	ps->saved_state_change = sk->sk_state_change;
	WRITE_ONCE(sk->sk_data_ready, popup_tcp_conn_ready);
	WRITE_ONCE(sk->sk_state_change, popup_tcp_conn_state);
}

/* Under lock_sock and sk_callback_lock (write): put back what is ours. */
void popup_tcp_unhook_locked(struct popup_sock *ps)
{
	struct sock *sk = ps->sk;

	if (ps->kind == POPUP_SOCK_LISTEN) {
		if (sk->sk_data_ready == popup_tcp_listen_ready)
			WRITE_ONCE(sk->sk_data_ready, ps->saved_data_ready);
		return;
	}
	if (sk->sk_data_ready == popup_tcp_conn_ready)
		WRITE_ONCE(sk->sk_data_ready, ps->saved_data_ready);
	if (sk->sk_state_change == popup_tcp_conn_state)
		WRITE_ONCE(sk->sk_state_change, ps->saved_state_change);
}

/* A child cloned with the listener's callback: give it the core's. */
static void popup_tcp_child_reset(struct sock *child,
				  void (*ready)(struct sock *sk))
{
	write_lock_bh(&child->sk_callback_lock);
	if (child->sk_data_ready == popup_tcp_listen_ready)
		WRITE_ONCE(child->sk_data_ready, ready);
	write_unlock_bh(&child->sk_callback_lock);
}

/* Not (or no longer) ours: pass the event on to whoever has it now. */
static void popup_tcp_fallback(struct sock *sk, bool state)
{
	void (*fn)(struct sock *sk);
	void (*def)(struct sock *sk);

	read_lock_bh(&sk->sk_callback_lock);
	fn = state ? sk->sk_state_change : sk->sk_data_ready;
	read_unlock_bh(&sk->sk_callback_lock);
	if (fn == popup_tcp_conn_ready || fn == popup_tcp_conn_state)
		return;		/* being unhooked: the detach wakes readers */
	if (fn == popup_tcp_listen_ready) {
		/* An inherited callback on a child nobody of ours tracks. */
		def = READ_ONCE(popup_tcp_def_ready);
		if (!def)
			return;
		popup_tcp_child_reset(sk, def);
		fn = def;
	}
	fn(sk);
}

/* The peer of connection @sk, as getpeername reports it, without locks. */
static void popup_tcp_peer(struct sock *sk, struct popup_ctx *ctx)
{
	const struct inet_sock *inet = inet_sk(sk);

#if IS_ENABLED(CONFIG_IPV6)
	if (sk->sk_family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ctx->peer;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = inet->inet_dport;
		sin6->sin6_flowinfo = 0;
		sin6->sin6_addr = sk->sk_v6_daddr;
		sin6->sin6_scope_id = 0;
		ctx->peer_len = sizeof(*sin6);
		return;
	}
#endif
	{
		struct sockaddr_in *sin = (struct sockaddr_in *)&ctx->peer;

		sin->sin_family = AF_INET;
		sin->sin_port = inet->inet_dport;
		sin->sin_addr.s_addr = inet->inet_daddr;
		ctx->peer_len = sizeof(*sin);
	}
}

/* Common fields of a context of @ps; takes a reference to @ps. */
static void popup_tcp_ctx_init(struct popup_sock *ps, struct popup_ctx *ctx)
{
	kref_get(&ps->refs);
	ctx->psock = ps;
	ctx->binding = ps->area;
	ctx->method = &ps->method;
	ctx->prio = DEFAULT_PRIO;
	ctx->cpu = ps->cpu >= 0 ? ps->cpu : raw_smp_processor_id();
}

/* ---- listeners ---- */

/* sk_data_ready of an attached listener: a child is in its accept queue. */
static void popup_tcp_listen_ready(struct sock *sk)
{
	struct popup_sock *ps;
	bool kick = false;

	rcu_read_lock();
	ps = popup_sock_lookup_rcu(sk);
	if (ps && ps->kind == POPUP_SOCK_LISTEN) {
		spin_lock_bh(&ps->svc->lock);
		if (!ps->detached) {
			ps->accept = true;
			kick = true;
		}
		spin_unlock_bh(&ps->svc->lock);
		if (kick)
			popup_sock_kick(ps);
		rcu_read_unlock();
		return;
	}
	rcu_read_unlock();
	popup_tcp_fallback(sk, false);
}

/* Worker: accept what is queued; each connection becomes a context. */
static void popup_tcp_accept(struct popup_sock *ps)
{
	struct popup_service *svc = ps->svc;
	struct popup_ctx *ctx;
	struct task_struct *wake;
	struct socket *nsock;
	u32 kstatus;
	int n;

	for (n = 0; n < POPUP_ACCEPT_BATCH; n++) {
		if (READ_ONCE(ps->detached))
			return;
		if (kernel_accept(ps->sock, &nsock, O_NONBLOCK))
			return;		/* EAGAIN: the queue is empty */
		popup_tcp_child_reset(nsock->sk, ps->saved_data_ready);
		popup_arr_inc(POPUP_ARR_ACCEPTS);
		popup_arr_inc(POPUP_ARR_ARRIVALS);
		ctx = popup_ctx_alloc(GFP_KERNEL);
		if (!ctx) {
			popup_arr_inc(POPUP_ARR_LOST);
			sock_release(nsock);
			continue;
		}
		ctx->conn = nsock;
		popup_tcp_peer(nsock->sk, ctx);
		popup_tcp_ctx_init(ps, ctx);
		spin_lock_bh(&svc->lock);
		kstatus = popup_arrive_locked(ps, ctx, &wake);
		spin_unlock_bh(&svc->lock);
		if (wake)
			popup_wake_task(wake);
		if (kstatus) {
			popup_arr_inc(POPUP_ARR_REFUSED);
			popup_ctx_put(ctx);	/* closes the connection */
		}
		cond_resched();
	}
	/* More may be queued: come back after the others' work. */
	spin_lock_bh(&svc->lock);
	ps->accept = true;
	spin_unlock_bh(&svc->lock);
	popup_sock_kick(ps);
}

/*
 * WAIT, in the handler's own thread, a listener's context in FILL: install
 * the connection as a descriptor of this process.
 */
int popup_conn_fill(struct popup_ctx *ctx)
{
	struct socket *sock = ctx->conn;
	struct file *file;
	int fd;

	ctx->conn = NULL;
	fd = get_unused_fd_flags(O_CLOEXEC);
	if (fd < 0) {
		popup_arr_inc(POPUP_ARR_REFUSED);
		sock_release(sock);
		return fd;
	}
	file = sock_alloc_file(sock, 0, NULL);	/* releases sock on error */
	if (IS_ERR(file)) {
		put_unused_fd(fd);
		popup_arr_inc(POPUP_ARR_REFUSED);
		return PTR_ERR(file);
	}
	fd_install(fd, file);
	ctx->conn_fd = fd;
	return 0;
}

/* ---- parked connections ---- */

static bool popup_conn_close_locked(struct popup_sock *ps);

/*
 * Under svc->lock: may a new stream context of @ps start (something came,
 * no other reads, room under the limit)? If so the caller has taken the
 * reader role and is to call popup_stream_new().
 */
static bool popup_stream_next_locked(struct popup_sock *ps)
{
	lockdep_assert_held(&ps->svc->lock);
	if (!ps->more || ps->reading || ps->eof || ps->detached ||
	    ps->closing || ps->ninflight >= POPUP_CONN_INFLIGHT)
		return false;
	ps->more = false;
	ps->reading = true;
	ps->ninflight++;
	return true;
}

/*
 * Under svc->lock: a stream context of @ps is gone (@reader: it had not
 * read a frame, or it never came to be). The last one after the peer's
 * end closes the connection. True if the caller is to start the next
 * context.
 */
static bool popup_stream_release_locked(struct popup_sock *ps, bool reader)
{
	lockdep_assert_held(&ps->svc->lock);
	ps->ninflight--;
	if (reader)
		ps->reading = false;
	if (ps->eof && !ps->ninflight && popup_conn_close_locked(ps))
		popup_arr_inc(POPUP_ARR_CLOSED);
	return popup_stream_next_locked(ps);
}

/*
 * Start a stream context for connection @ps, the reader role taken by
 * popup_stream_next_locked(). Any context.
 */
static void popup_stream_new(struct popup_sock *ps, gfp_t gfp)
{
	struct popup_service *svc = ps->svc;
	struct task_struct *wake = NULL;
	struct popup_ctx *ctx;
	u32 kstatus;

	ctx = popup_ctx_alloc(gfp);
	spin_lock_bh(&svc->lock);
	if (!ctx) {
		if (gfp == GFP_ATOMIC) {
			popup_arr_inc(POPUP_ARR_NOMEM);
			ps->drain = true;	/* the worker tries again */
			popup_sock_kick(ps);
		} else {
			popup_arr_inc(POPUP_ARR_LOST);
			/* the next event tries */
			popup_stream_release_locked(ps, true);
		}
	} else if (ps->detached || ps->closing) {
		popup_stream_release_locked(ps, true);
	} else {
		popup_arr_inc(POPUP_ARR_ARRIVALS);
		popup_tcp_ctx_init(ps, ctx);
		popup_tcp_peer(ps->sk, ctx);
		kstatus = popup_arrive_locked(ps, ctx, &wake);
		if (kstatus)
			popup_kreply_queue_locked(ps, ctx, kstatus);
		ctx = NULL;
	}
	spin_unlock_bh(&svc->lock);
	if (wake)
		popup_wake_task(wake);
	if (ctx)
		popup_ctx_put(ctx);
}

/* An event on connection @sk: a request, EOF, or a reset. */
static void popup_tcp_conn_event(struct sock *sk, bool state)
{
	struct popup_sock *ps;
	bool go = false;

	rcu_read_lock();
	ps = popup_sock_lookup_rcu(sk);
	if (!ps || ps->kind != POPUP_SOCK_CONN) {
		rcu_read_unlock();
		popup_tcp_fallback(sk, state);
		return;
	}
	if (state)	/* whoever waits on the socket's own queue */
		ps->saved_state_change(sk);
	spin_lock_bh(&ps->svc->lock);
	ps->more = true;
	go = popup_stream_next_locked(ps);
	spin_unlock_bh(&ps->svc->lock);
	if (go)
		popup_stream_new(ps, GFP_ATOMIC);
	rcu_read_unlock();
}

static void popup_tcp_conn_ready(struct sock *sk)
{
	popup_tcp_conn_event(sk, false);
}

/* Resets and FINs make a context; other transitions only wake. */
static void popup_tcp_conn_state(struct sock *sk)
{
	int st = READ_ONCE(sk->sk_state);
	struct popup_sock *ps;

	if (READ_ONCE(sk->sk_err) || st == TCP_CLOSE || st == TCP_CLOSE_WAIT) {
		popup_tcp_conn_event(sk, true);
		return;
	}
	rcu_read_lock();
	ps = popup_sock_lookup_rcu(sk);
	if (ps && ps->kind == POPUP_SOCK_CONN) {
		ps->saved_state_change(sk);
		rcu_read_unlock();
		return;
	}
	rcu_read_unlock();
	popup_tcp_fallback(sk, true);
}

/*
 * Stream context @ctx is finished: the next one may come, now (through
 * the worker) if an event or bytes are waiting.
 */
void popup_stream_done_locked(struct popup_ctx *ctx)
{
	struct popup_sock *ps = ctx->psock;

	if (popup_stream_release_locked(ps, !ctx->taken)) {
		ps->drain = true;
		popup_sock_kick(ps);
	}
}

static int popup_stream_discard(struct popup_sock *ps, u32 len);

/*
 * Detach a connection that ended or broke the protocol. Input still
 * queued is read and dropped first and our direction is shut down, so
 * the peer sees an orderly close (a socket closed with unread input would
 * answer a reset), whoever still holds a descriptor of it.
 */
static void popup_conn_close_work(struct work_struct *work)
{
	struct popup_sock *ps = container_of(work, struct popup_sock,
					     close_work);
	struct sock *sk = ps->sk;
	LIST_HEAD(list);
	int avail;

	lock_sock(sk);
	avail = tcp_inq(sk);
	release_sock(sk);
	if (avail > 0)
		popup_stream_discard(ps, min_t(u32, avail, POPUP_MAX_MSG));
	kernel_sock_shutdown(ps->sock, SHUT_WR);
	list_add_tail(&ps->proc_node, &list);
	popup_socks_detach_list(&list);
	popup_sock_put(ps);		/* the work's reference */
}

/*
 * Under svc->lock: connection @ps is to be detached, by @close_work unless
 * another detaches it already. True if this call took it.
 */
static bool popup_conn_close_locked(struct popup_sock *ps)
{
	lockdep_assert_held(&ps->svc->lock);
	if (ps->closing)
		return false;
	ps->closing = true;
	list_del_init(&ps->proc_node);
	ps->parent->nconns--;
	kref_get(&ps->refs);
	queue_work(popup_wq, &ps->close_work);
	return true;
}

/* The connection broke (@stat says why): detach it now. */
static void popup_conn_close(struct popup_sock *ps, enum popup_arr_stat stat)
{
	bool own;

	spin_lock_bh(&ps->svc->lock);
	own = popup_conn_close_locked(ps);
	spin_unlock_bh(&ps->svc->lock);
	if (own)
		popup_arr_inc(stat);
}

/*
 * Reading a frame of @ps failed with @err: an orderly end of the peer
 * (-ESHUTDOWN) lets the contexts in flight reply first, the last one
 * closes; anything else closes at once.
 */
static void popup_stream_broken(struct popup_sock *ps, int err,
				enum popup_arr_stat why)
{
	if (err != -ESHUTDOWN) {
		popup_conn_close(ps, why);
		return;
	}
	spin_lock_bh(&ps->svc->lock);
	ps->eof = true;		/* the reader's own release sees it */
	spin_unlock_bh(&ps->svc->lock);
}

/* Listener detach: its connections join @list (linked by proc_node). */
void popup_conns_take_locked(struct popup_sock *ps, struct list_head *list)
{
	struct popup_sock *c, *tmp;

	lockdep_assert_held(&ps->svc->lock);
	ps->closing = true;
	list_for_each_entry_safe(c, tmp, &ps->conns, proc_node) {
		c->closing = true;
		list_move_tail(&c->proc_node, list);
	}
	ps->nconns = 0;
}

/* Discard @len bytes at the head of @ps's stream. */
static int popup_stream_discard(struct popup_sock *ps, u32 len)
{
	u8 buf[256];
	struct kvec kv;
	struct msghdr msg = {};
	int ret;

	while (len) {
		kv.iov_base = buf;
		kv.iov_len = min_t(u32, len, sizeof(buf));
		ret = kernel_recvmsg(ps->sock, &msg, &kv, 1, kv.iov_len,
				     MSG_DONTWAIT);
		if (ret <= 0)
			return ret ?: -EIO;
		len -= ret;
	}
	return 0;
}

#define POPUP_KVECS	16	/* pages per kernel_{recv,send}msg */

/*
 * Point @kv (POPUP_KVECS entries) at bytes @off.. of @ctx's slot, up to
 * @len; returns the bytes covered, *@n the entries used.
 */
static u32 popup_slot_kvec(struct popup_ctx *ctx, struct kvec *kv, u32 off,
			   u32 len, unsigned int *n)
{
	struct popup_binding *b = ctx->binding;
	u64 pos = (u64)ctx->slot * b->slot_size;
	u32 start = off;

	for (*n = 0; off < len && *n < POPUP_KVECS; (*n)++) {
		u64 at = pos + off;
		u32 poff = offset_in_page(at);

		kv[*n].iov_base = page_address(b->pages[at >> PAGE_SHIFT]) +
				  poff;
		kv[*n].iov_len = min_t(u32, len - off, PAGE_SIZE - poff);
		off += kv[*n].iov_len;
	}
	return off - start;
}

/*
 * @ctx has read its frame: the next frame, if bytes are left (@more:
 * pipelined, no event will tell) or an event came meanwhile, becomes
 * another context at once, within the connection's limit; so does the
 * peer's end, if it came with the frames (its event may have been taken
 * by a context that found another frame). Process context.
 */
static void popup_stream_passed(struct popup_ctx *ctx, bool more)
{
	struct popup_sock *ps = ctx->psock;
	bool go;

	spin_lock_bh(&ps->svc->lock);
	ctx->taken = true;
	ps->reading = false;
	if (more)
		ps->more = true;
	go = popup_stream_next_locked(ps);
	spin_unlock_bh(&ps->svc->lock);
	if (go)
		popup_stream_new(ps, GFP_KERNEL);
}

/*
 * With @ps->send_lock held: write the kernel reply headers pending on the
 * connection, waiting for room only if @wait (a handler thread; the worker
 * must not block behind a peer that does not read). A short write closes
 * the connection: a peer whose replies fill the send buffer while it has
 * more requests answered by the worker is not served further.
 */
static void popup_conn_kflush_held(struct popup_sock *ps, bool wait)
{
	u8 buf[POPUP_CONN_KPEND][POPUP_WIRE_HDR_LEN];
	struct msghdr msg = {
		.msg_flags = MSG_NOSIGNAL | (wait ? 0 : MSG_DONTWAIT),
	};
	struct kvec kv = { .iov_base = buf };
	u32 n;
	int ret;

	lockdep_assert_held(&ps->send_lock);
	if (!READ_ONCE(ps->nkpend))
		return;		/* the common case: see popup_conn_kflush() */
	spin_lock_bh(&ps->svc->lock);
	n = ps->nkpend;
	memcpy(buf, ps->kpend, n * POPUP_WIRE_HDR_LEN);
	WRITE_ONCE(ps->nkpend, 0);
	spin_unlock_bh(&ps->svc->lock);
	if (!n)
		return;
	kv.iov_len = n * POPUP_WIRE_HDR_LEN;
	ret = kernel_sendmsg(ps->sock, &msg, &kv, 1, kv.iov_len);
	if (ret != kv.iov_len) {
		popup_arr_inc(POPUP_ARR_TXERR);
		popup_conn_close(ps, POPUP_ARR_CLOSED);
		return;
	}
	WRITE_ONCE(ps->kreplied, ps->kreplied + n);
}

/*
 * Write the pending kernel replies of @ps unless a thread holds its send
 * lock: each holder flushes them before it lets go and looks again after,
 * so none is left behind. The barrier orders our look at @nkpend after
 * what came before (adding a header, or unlocking): of a thread that
 * adds one and a holder that lets go, at the same time, one sees the
 * other's store, the header or the free lock.
 */
static void popup_conn_kflush(struct popup_sock *ps, bool wait)
{
	for (;;) {
		smp_mb();	/* a header added, or the lock let go: see above */
		if (!READ_ONCE(ps->nkpend) || !mutex_trylock(&ps->send_lock))
			return;
		popup_conn_kflush_held(ps, wait);
		mutex_unlock(&ps->send_lock);
	}
}

/*
 * Answer @ctx (a BUSY, TOOBIG or ERROR header) on connection @ps, between
 * whole replies of the handler threads (@wait: from a handler thread, see
 * popup_conn_kflush_held()). Past POPUP_CONN_KPEND waiting headers (a
 * peer that sends but does not read) the connection is closed.
 */
static void popup_conn_kreply(struct popup_sock *ps, struct popup_ctx *ctx,
			      bool wait)
{
	u8 rep[POPUP_WIRE_HDR_LEN];
	bool full;

	if (!popup_kreply_build(ctx, rep))
		return;
	spin_lock_bh(&ps->svc->lock);
	full = ps->nkpend >= POPUP_CONN_KPEND;
	if (!full) {
		memcpy(ps->kpend[ps->nkpend], rep, sizeof(rep));
		WRITE_ONCE(ps->nkpend, ps->nkpend + 1);
	}
	spin_unlock_bh(&ps->svc->lock);
	if (full) {
		popup_arr_inc(POPUP_ARR_TXERR);
		popup_conn_close(ps, POPUP_ARR_CLOSED);
		return;
	}
	popup_conn_kflush(ps, wait);
}

/*
 * Copy the first @len unread bytes of connection @sk into @buf without
 * consuming them. The socket is locked, so its receive queue holds the
 * stream in order from copied_seq on; false if fewer bytes are there.
 */
static bool popup_tcp_peek(struct sock *sk, u8 *buf, u32 len)
{
	struct sk_buff *skb;
	u32 off, got = 0;

	skb = tcp_recv_skb(sk, tcp_sk(sk)->copied_seq, &off);
	while (skb && got < len) {
		if (off < skb->len) {
			u32 n = min(len - got, skb->len - off);

			if (skb_copy_bits(skb, off, buf + got, n))
				return false;
			got += n;
		}
		skb = skb_peek_next(skb, &sk->sk_receive_queue);
		off = 0;
	}
	return got == len;
}

/* tcp_read_sock() actor: the frame's bytes into the slot, or dropped. */
struct popup_stream_rd {
	struct popup_ctx *ctx;	/* NULL: discard */
	u32 off;		/* frame bytes taken so far */
};

static int popup_stream_actor(read_descriptor_t *desc, struct sk_buff *skb,
			      unsigned int offset, size_t len)
{
	struct popup_stream_rd *rd = desc->arg.data;
	u32 n = min_t(size_t, len, desc->count);

	if (!n)
		return 0;
	if (rd->ctx && popup_slot_copy_skb(rd->ctx, rd->off, skb, offset, n))
		return -EFAULT;
	rd->off += n;
	desc->count -= n;
	return n;
}

/*
 * Take the frame at the head of @ctx's connection, into its slot if @keep,
 * else discarded; its header goes to @ctx->hdr. Process context, one hold
 * of the socket lock: look, peek at the header, read the whole frame with
 * tcp_read_sock() (straight from the skbs, as strparser reads), look
 * again for what follows. Returns 0, 1 if the frame is not whole yet, or
 * a negative error after which the connection must be closed (the
 * counter to use in @why): -ESHUTDOWN for the peer's orderly end (a frame
 * cut short by it included).
 */
static int popup_stream_take(struct popup_ctx *ctx, bool keep,
			     enum popup_arr_stat *why)
{
	struct popup_stream_rd rd = { .ctx = keep ? ctx : NULL };
	read_descriptor_t desc = { .arg.data = &rd };
	struct popup_sock *ps = ctx->psock;
	struct sock *sk = ps->sk;
	int ret, inq, end = 1;
	bool more = false;
	u8 *h = ctx->hdr;
	u64 total;

	*why = POPUP_ARR_CLOSED;
	lock_sock(sk);
	/* @end: what a frame not whole yet means. */
	if (sk->sk_err)
		end = -ECONNRESET;
	else if (sk->sk_shutdown & RCV_SHUTDOWN)
		end = -ESHUTDOWN;
	inq = tcp_inq(sk);
	ret = end;
	if (inq < POPUP_WIRE_HDR_LEN ||
	    !popup_tcp_peek(sk, h, POPUP_WIRE_HDR_LEN))
		goto out;	/* truncated for good if ended */
	/*
	 * Framing needs only the magic and the length; the rest is the
	 * handler's to judge, as on popupd's userspace path.
	 */
	ctx->hdr_len = POPUP_WIRE_HDR_LEN;
	if (get_unaligned_be32(h) != POPUP_WIRE_MAGIC) {
		ctx->hdr_len = 0;		/* nothing to answer */
		*why = POPUP_ARR_BADFRAME;
		ret = -EPROTO;
		goto out;
	}
	total = POPUP_WIRE_HDR_LEN + (u64)get_unaligned_be32(h + 24);
	if (total > ctx->binding->slot_size) {
		*why = POPUP_ARR_TOOBIG;
		ret = -EMSGSIZE;
		goto out;
	}
	if (inq < total)
		goto out;
	desc.count = total;
	ret = tcp_read_sock(sk, &desc, popup_stream_actor);
	if (ret != total) {
		ret = ret < 0 ? ret : -EIO;
		goto out;
	}
	ctx->arg_len = total;
	ret = 0;
	more = tcp_inq(sk) > 0 || (sk->sk_shutdown & RCV_SHUTDOWN) ||
	       sk->sk_err;
out:
	release_sock(sk);
	if (ret == -EMSGSIZE) {		/* answered before it closes */
		ctx->kstatus = POPUP_WIRE_TOOBIG;
		popup_conn_kreply(ps, ctx, keep);	/* keep: in a handler */
	}
	if (!ret)
		popup_stream_passed(ctx, more);
	return ret;
}

/*
 * WAIT, in the handler's thread, a connection's context in FILL: read the
 * request frame into the slot. An error: no context for the handler
 * (-EAGAIN: the frame is not whole yet). Bytes that are no frame at all
 * still reach the handler, flagged POPUP_CTX_BADFRAME with no bytes, so
 * that it can count the protocol error; the connection is closed.
 */
int popup_stream_fill(struct popup_ctx *ctx)
{
	enum popup_arr_stat why;
	int ret;

	ret = popup_stream_take(ctx, true, &why);
	if (ret > 0)
		return -EAGAIN;
	if (ret < 0)
		popup_stream_broken(ctx->psock, ret, why);
	if (ret == -EPROTO) {
		ctx->flags |= POPUP_CTX_BADFRAME;
		ctx->arg_len = 0;
		return 0;
	}
	return ret;
}

/*
 * REPLY of a stream context: write @len bytes of its slot, all of them,
 * under the connection's send lock (tcp_sendmsg drops the socket lock
 * while it waits for room, so that alone would let replies interleave).
 */
int popup_stream_send(struct popup_ctx *ctx, u32 len)
{
	struct popup_sock *ps = ctx->psock;
	struct kvec kv[POPUP_KVECS];
	struct msghdr msg = {};
	unsigned int n;
	u32 off = 0, got;
	int ret;

	ret = mutex_lock_interruptible(&ps->send_lock);
	if (ret)
		goto fail;
	for (; off < len; off += got) {
		got = popup_slot_kvec(ctx, kv, off, len, &n);
		msg.msg_flags = MSG_NOSIGNAL | (off + got < len ? MSG_MORE : 0);
		ret = kernel_sendmsg(ps->sock, &msg, kv, n, got);
		if (ret != got)
			break;
	}
	popup_conn_kflush_held(ps, true);
	mutex_unlock(&ps->send_lock);
	popup_conn_kflush(ps, true);	/* what came while we held it */
	if (off == len) {
		popup_arr_inc(POPUP_ARR_REPLIES);
		return 0;
	}
fail:
	popup_arr_inc(POPUP_ARR_TXERR);
	popup_conn_close(ps, POPUP_ARR_CLOSED);
	if (ret >= 0 || ret == -ENOENT || ret == -EINVAL)
		return -EIO;
	return ret;
}

/*
 * Worker, a kernel reply due for @ctx of a TCP socket: close an accepted
 * connection nobody took; on a parked one, consume the request frame if
 * not read yet, and answer it between the handlers' replies.
 */
void popup_tcp_kreply(struct popup_sock *ps, struct popup_ctx *ctx)
{
	enum popup_arr_stat why;
	bool send = true;
	int ret;

	if (ps->kind == POPUP_SOCK_LISTEN) {
		if (ctx->conn) {	/* not installed yet: close it */
			popup_arr_inc(POPUP_ARR_REFUSED);
			sock_release(ctx->conn);
			ctx->conn = NULL;
		}
		return;
	}
	if (!ctx->taken) {
		if (READ_ONCE(ps->detached) || READ_ONCE(ps->closing)) {
			send = false;	/* the stream is no longer ours */
		} else {
			ret = popup_stream_take(ctx, false, &why);
			if (ret < 0)
				popup_stream_broken(ps, ret, why);
			send = !ret;
		}
	}
	if (send)
		popup_conn_kreply(ps, ctx, false);
	spin_lock_bh(&ps->svc->lock);
	popup_stream_done_locked(ctx);
	spin_unlock_bh(&ps->svc->lock);
}

/* Worker part for TCP sockets: accepts, and deferred stream contexts. */
void popup_tcp_work(struct popup_sock *ps)
{
	struct popup_service *svc = ps->svc;
	bool accept, drain;

	spin_lock_bh(&svc->lock);
	accept = ps->accept && !ps->detached;
	ps->accept = false;
	drain = ps->drain && !ps->detached;
	ps->drain = false;
	spin_unlock_bh(&svc->lock);
	if (ps->kind == POPUP_SOCK_LISTEN && accept)
		popup_tcp_accept(ps);
	if (ps->kind == POPUP_SOCK_CONN && drain)
		popup_stream_new(ps, GFP_KERNEL);
}

/*
 * Detach, after the grace period and the work: give userspace back what
 * is left. Children still in a listener's accept queue were cloned with
 * our callback: they get the listener's own.
 */
void popup_tcp_detached(struct popup_sock *ps)
{
	struct sock *sk = ps->sk;

	if (ps->kind == POPUP_SOCK_LISTEN) {
		struct request_sock_queue *q = &inet_csk(sk)->icsk_accept_queue;
		struct request_sock *req;

		spin_lock_bh(&q->rskq_lock);
		for (req = q->rskq_accept_head; req; req = req->dl_next)
			if (req->sk)
				popup_tcp_child_reset(req->sk,
						      ps->saved_data_ready);
		spin_unlock_bh(&q->rskq_lock);
		if (!reqsk_queue_empty(q))
			ps->saved_data_ready(sk);
		return;
	}
	if (!skb_queue_empty_lockless(&sk->sk_receive_queue))
		ps->saved_data_ready(sk);
}

/* Check the socket of @pk and take a reference to it. */
static struct socket *popup_park_sock(const struct popup_park *pk)
{
	struct socket *sock;
	struct sock *sk;
	int err, st;

	sock = sockfd_lookup(pk->fd, &err);
	if (!sock)
		return ERR_PTR(err);
	sk = sock->sk;
	err = -EPROTONOSUPPORT;
	if (!sk || sk->sk_type != SOCK_STREAM ||
	    sk->sk_protocol != IPPROTO_TCP ||
	    (sk->sk_family != AF_INET && sk->sk_family != AF_INET6))
		goto err_put;
	err = -ENOTCONN;
	st = READ_ONCE(sk->sk_state);
	if (st != TCP_ESTABLISHED && st != TCP_CLOSE_WAIT)
		goto err_put;
	return sock;

err_put:
	sockfd_put(sock);
	return ERR_PTR(err);
}

/* Link new connection @ps to listener @l of @proc (proc->lock held). */
static int popup_conn_link(struct popup_proc *proc, struct popup_sock *ps,
			   u32 attach_id)
{
	struct popup_service *svc;
	struct popup_sock *l;
	int ret = -ENOENT;

	lockdep_assert_held(&proc->lock);
	list_for_each_entry(l, &proc->socks, proc_node)
		if (l->id == attach_id && l->kind == POPUP_SOCK_LISTEN)
			goto found;
	return -ENOENT;
found:
	svc = l->svc;
	spin_lock_bh(&svc->lock);
	if (l->closing || l->detached || svc->dead)
		goto out;
	ret = -ENOSPC;
	if (l->nconns >= POPUP_MAX_CONNS)
		goto out;
	kref_get(&l->refs);
	ps->parent = l;
	kref_get(&svc->refs);
	ps->svc = svc;
	ps->area = l->area;
	l->area->active++;		/* dropped by the detach */
	ps->cpu = l->cpu;
	ps->method = l->method;
	list_add_tail(&ps->proc_node, &l->conns);
	l->nconns++;
	ret = 0;
out:
	spin_unlock_bh(&svc->lock);
	return ret;
}

int popup_ioctl_park(struct popup_proc *proc, struct popup_park *pk)
{
	struct popup_service *svc;
	struct popup_sock *ps;
	struct socket *sock;
	LIST_HEAD(puts);
	int ret;

	if (pk->flags || pk->reserved0 || pk->reserved[0] || pk->reserved[1])
		return -EINVAL;
	sock = popup_park_sock(pk);
	if (IS_ERR(sock))
		return PTR_ERR(sock);
	ps = popup_sock_new(sock, POPUP_SOCK_CONN);
	if (!ps) {
		sockfd_put(sock);
		return -ENOMEM;
	}
	INIT_WORK(&ps->close_work, popup_conn_close_work);
	mutex_init(&ps->send_lock);
	do {
		ps->id = (u32)atomic_inc_return(&popup_conn_ids);
	} while (!ps->id);

	mutex_lock(&proc->lock);
	ret = proc->dead ? -EBADF : popup_conn_link(proc, ps, pk->attach_id);
	if (ret) {
		mutex_unlock(&proc->lock);
		sockfd_put(sock);
		kfree(ps);
		return ret;
	}
	svc = ps->svc;
	ret = popup_sock_hook(ps);
	if (ret) {
		spin_lock_bh(&svc->lock);
		list_del_init(&ps->proc_node);
		ps->parent->nconns--;
		popup_binding_active_put_locked(ps->area, &puts);
		spin_unlock_bh(&svc->lock);
		mutex_unlock(&proc->lock);
		popup_binding_put_list(&puts);
		popup_sock_put(ps);
		return ret;
	}
	mutex_unlock(&proc->lock);
	pk->conn_id = ps->id;

	/* A request may have come before the hook: look now. */
	spin_lock_bh(&svc->lock);
	ps->more = true;
	if (popup_stream_next_locked(ps)) {
		ps->drain = true;
		popup_sock_kick(ps);
	}
	spin_unlock_bh(&svc->lock);
	return 0;
}

/* DETACH with POPUP_DETACH_CONN: give connection @conn_id back. */
int popup_conn_detach(struct popup_proc *proc, u32 conn_id)
{
	struct popup_sock *l, *c;
	LIST_HEAD(list);

	mutex_lock(&proc->lock);
	list_for_each_entry(l, &proc->socks, proc_node) {
		if (l->kind != POPUP_SOCK_LISTEN)
			continue;
		spin_lock_bh(&l->svc->lock);
		list_for_each_entry(c, &l->conns, proc_node) {
			if (c->id != conn_id || c->closing)
				continue;
			c->closing = true;
			list_move_tail(&c->proc_node, &list);
			l->nconns--;
			break;
		}
		spin_unlock_bh(&l->svc->lock);
		if (!list_empty(&list))
			break;
	}
	mutex_unlock(&proc->lock);
	if (list_empty(&list))
		return -ENOENT;
	popup_socks_detach_list(&list);
	return 0;
}
