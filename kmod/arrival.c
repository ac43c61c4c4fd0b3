// SPDX-License-Identifier: GPL-2.0
/*
 * Network arrival: datagrams on popupd's worker sockets become pop-up
 * handler contexts, without epoll and without a separate receive call.
 * This file holds the attachment machinery shared by every kind of socket
 * (ATTACH, DETACH, the hash, the work item, the pool rules of an arrival,
 * kernel replies, /proc) and the UDP path; TCP listeners and parked
 * connections (KIND_CONN, KIND_STREAM) are in arrival_tcp.c, whose design
 * comment builds on this one.
 *
 * Design
 * ======
 * ATTACH hands the module a UDP socket (normally one SO_REUSEPORT socket
 * per CPU, picked by popupd's BPF steering program), a service of the
 * calling file and the CPU the socket serves. The module
 *   - takes its own reference to the socket's file (sockfd_lookup), so the
 *     socket lives until DETACH whatever userspace does with its fd;
 *   - allocates a receive area: a binding of the service without a client,
 *     nslots slots of slot_size bytes, that the server maps like any
 *     binding (POPUP_CTX_MAP, UNMAP notices); its id is the attach id;
 *   - hooks sk_data_ready under lock_sock and write_lock_bh(
 *     &sk->sk_callback_lock), as sunrpc's svcsock does, saving the old
 *     callback. sk_user_data is left alone: popupd's REUSEPORT_SOCKARRAY
 *     owns it (SK_USER_DATA_BPF), so attachments are found through an
 *     RCU hash keyed by the struct sock instead. A socket whose
 *     sk_user_data belongs to another kernel user (sockmap, a tunnel, a
 *     kernel server) is refused with EBUSY.
 *
 * UDP flow, one datagram:
 *   1. softirq, sk_data_ready (popup_udp_data_ready): take a free slot of
 *      the receive area, with the context that belongs to it
 *      (popup_sock.dctx: an arrival allocates nothing), move the skb off
 *      the socket's queue with skb_recv_udp(MSG_DONTWAIT), as sockmap's
 *      udp_read_skb does from the same callback, verify its checksum and
 *      copy the payload into the slot (the one copy, the same recvmsg
 *      would make), then free the skb. Note the sender (address, port)
 *      and the first 32 bytes (the native wire header, for the kernel's
 *      own replies). Then, under svc->lock, the pool rules of calls
 *      (call.c): hand the context to an idle thread, preferably one
 *      waiting on the socket's CPU (woken once svc->lock is dropped, which
 *      both CPUs' arrivals and replies take), or queue it for the thread
 *      that runs on that CPU already (its next REPLY_WAIT takes it without
 *      a wake-up), or queue it and ask for threads. No free slot, or the
 *      queue at queue_limit with no idle thread: the datagram is answered
 *      BUSY (a context is allocated to carry that reply when no slot's is
 *      free).
 *   2. The handler thread's WAIT returns KIND_DGRAM with the slot, the
 *      length and the sender: the payload is in place.
 *   3. REPLY (or REPLY_WAIT) sends result_len bytes of the slot back to
 *      the sender with kernel_sendmsg on the attached socket, in the
 *      handler's thread (state SEND, lock dropped), then frees the slot.
 *      REPLY_WAIT then waits for the next context: one system call per
 *      request.
 * Anything the callback cannot do waits for the socket's work item
 * (popup_wq), which runs in process context: kernel replies (BUSY,
 * TOOBIG, and BUSY/ERROR for contexts aborted by a withdrawal), and
 * datagrams left on the socket because no BUSY reply could be allocated
 * (drained with GFP_KERNEL). Every datagram taken ends in a handler, a
 * kernel reply or a counter of /proc/popup/arrival; none is dropped
 * silently.
 *
 * Detach (DETACH, WITHDRAW, release of the file): unhook under the same
 * locks, putting sk_data_ready back exactly; synchronize_rcu(), after which
 * no callback runs with the attachment (every path into sk_data_ready for
 * UDP runs in an RCU read-side section, and ours takes its own); stop the
 * drain and flush the work item; wake the socket's old readers if
 * datagrams are left, so userspace can take over; drop the receive area's
 * ownership (UNMAP notice if the server maps it). Contexts in flight keep
 * the attachment (and the socket) alive and still get their replies. The
 * files referencing the module pin it while sockets are attached; module
 * exit drains the work queue before the code goes.
 *
 * Lock order additions (see main.c): proc->lock, then lock_sock(sk), then
 * sk->sk_callback_lock, then popup_sock_lock; svc->lock is never held with
 * any of them and is taken with bottom halves disabled everywhere because
 * the callback takes it in softirq.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/cpumask.h>
#include <linux/err.h>
#include <linux/file.h>
#include <linux/hashtable.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ipv6.h>
#include <linux/net.h>
#include <linux/seq_file.h>
#include <linux/skbuff.h>
#include <linux/slab.h>
#include <linux/udp.h>
#include <net/ip.h>
#include <net/ipv6.h>
#include <net/sock.h>
#include <net/udp.h>
#include <asm/unaligned.h>

#include "popup_internal.h"

DEFINE_PER_CPU(struct popup_arr_stats, popup_arr_stats);

/* Kernel replies, deferred drains and accepts of attached sockets. */
struct workqueue_struct *popup_wq;

/* Attached sockets by struct sock: writers under popup_sock_lock, RCU. */
static DEFINE_SPINLOCK(popup_sock_lock);
static DEFINE_HASHTABLE(popup_sock_hash, 7);

#define POPUP_DGRAM_SLOTS	16	/* default nslots */
#define POPUP_KREPLY_MAX	1024	/* kernel replies pending per socket */
#define POPUP_DRAIN_BATCH	256	/* datagrams per run of the worker */

static void popup_udp_data_ready(struct sock *sk);

static void popup_sock_release(struct kref *kref)
{
	struct popup_sock *ps = container_of(kref, struct popup_sock, refs);

	sockfd_put(ps->sock);		/* fput: defers, safe in any context */
	kfree(ps->dctx);
	popup_service_put(ps->svc);
	if (ps->parent)
		popup_sock_put(ps->parent);
	kfree_rcu(ps, rcu);
}

/* Atomic-safe. */
void popup_sock_put(struct popup_sock *ps)
{
	kref_put(&ps->refs, popup_sock_release);
}

/* Queue the socket's work item; it holds a reference while queued. */
void popup_sock_kick(struct popup_sock *ps)
{
	kref_get(&ps->refs);
	if (!queue_work(popup_wq, &ps->work))
		popup_sock_put(ps);	/* queued already; not the last */
}

struct popup_sock *popup_sock_lookup_rcu(struct sock *sk)
{
	struct popup_sock *ps;

	hash_for_each_possible_rcu(popup_sock_hash, ps, hash_node,
				   (unsigned long)sk)
		if (ps->sk == sk)
			return ps;
	return NULL;
}

/*
 * Answer @ctx in the kernel with wire status @kstatus, from the worker.
 * The context holds no slot. Takes over the caller's context reference.
 */
void popup_kreply_queue_locked(struct popup_sock *ps, struct popup_ctx *ctx,
			       u32 kstatus)
{
	lockdep_assert_held(&ps->svc->lock);
	/* TCP contexts are bounded by the slots and must not be put here. */
	if (ps->kind == POPUP_SOCK_UDP && ps->nkreplies >= POPUP_KREPLY_MAX) {
		popup_arr_inc(POPUP_ARR_LOST);
		popup_ctx_put(ctx);
		return;
	}
	ctx->kstatus = kstatus;
	ctx->state = POPUP_CTX_KREPLY;
	list_add_tail(&ctx->node, &ps->kreplies);
	ps->nkreplies++;
	popup_sock_kick(ps);
}

/*
 * The service went away (or is going) with datagram @ctx in flight: free
 * its slot and have it answered @kstatus (BUSY if no handler saw it, ERROR
 * if one was running it).
 */
void popup_dgram_abort_locked(struct popup_service *svc,
			      struct popup_ctx *ctx, u32 kstatus,
			      struct list_head *puts)
{
	lockdep_assert_held(&svc->lock);
	kref_get(&ctx->refs);		/* for the kernel-reply list */
	popup_ctx_finish_locked(svc, ctx, POPUP_CTX_ABORTED, puts);
	popup_arr_inc(POPUP_ARR_ABORTED);
	popup_kreply_queue_locked(ctx->psock, ctx, kstatus);
}

/* Note the sender of @skb in @ctx, as udp(v6)_recvmsg reports it. */
static void popup_udp_peer(struct popup_sock *ps, struct sk_buff *skb,
			   struct popup_ctx *ctx)
{
#if IS_ENABLED(CONFIG_IPV6)
	if (ps->family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ctx->peer;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = udp_hdr(skb)->source;
		sin6->sin6_flowinfo = 0;
		if (skb->protocol == htons(ETH_P_IP)) {
			ipv6_addr_set_v4mapped(ip_hdr(skb)->saddr,
					       &sin6->sin6_addr);
			sin6->sin6_scope_id = 0;
		} else {
			sin6->sin6_addr = ipv6_hdr(skb)->saddr;
			sin6->sin6_scope_id =
				ipv6_iface_scope_id(&sin6->sin6_addr,
						    inet6_iif(skb));
		}
		ctx->peer_len = sizeof(*sin6);
		return;
	}
#endif
	{
		struct sockaddr_in *sin = (struct sockaddr_in *)&ctx->peer;

		sin->sin_family = AF_INET;
		sin->sin_port = udp_hdr(skb)->source;
		sin->sin_addr.s_addr = ip_hdr(skb)->saddr;
		ctx->peer_len = sizeof(*sin);
	}
}

/*
 * The pool rules for a new context @ctx of @ps (psock, binding, method,
 * cpu and arg_len set): hand it to an idle thread, preferably one on its
 * CPU, or queue it, and return 0; or return the wire status the kernel
 * answers with, leaving @ctx to the caller. A thread handed @ctx comes
 * back in *@wake (else NULL), for the caller to wake with
 * popup_wake_task() after dropping svc->lock.
 */
u32 popup_arrive_locked(struct popup_sock *ps, struct popup_ctx *ctx,
			struct task_struct **wake)
{
	struct popup_service *svc = ps->svc;
	struct popup_binding *b = ps->area;
	struct popup_waiter *w = NULL;
	u32 kstatus = 0, spawn;
	unsigned int slot = 0;

	lockdep_assert_held(&svc->lock);
	*wake = NULL;
	ps->arrivals++;
	if (svc->dead || ps->detached || ps->closing) {
		kstatus = POPUP_WIRE_BUSY;
		popup_arr_inc(POPUP_ARR_ABORTED);
	} else if (ctx->arg_len > b->slot_size) {
		kstatus = POPUP_WIRE_TOOBIG;
		popup_arr_inc(POPUP_ARR_TOOBIG);
	} else {
		if (ctx->embedded)
			slot = ctx->slot;
		else
			slot = ~b->busy ? __ffs64(~b->busy) : POPUP_MAX_SLOTS;
		w = popup_pick_waiter_locked(svc, ctx->cpu);
		if (w && svc->nqueued < svc->pool.queue_limit &&
		    (popup_runner_busy_locked(svc, ctx->cpu) ||
		     (w->cpu != ctx->cpu &&
		      popup_replying_on_locked(svc, ctx->cpu))))
			w = NULL;	/* queue it for the local thread */
		if (slot >= b->nslots ||
		    (!w && svc->nqueued >= svc->pool.queue_limit)) {
			popup_pool_update_locked(svc);
			kstatus = POPUP_WIRE_BUSY;
			popup_arr_inc(POPUP_ARR_BUSY);
		}
	}
	if (!kstatus) {
		ctx->slot = slot;
		spawn = svc->spawn_req;
		popup_call_start_locked(svc, ctx, w, wake);
		popup_arr_inc(w ? POPUP_ARR_HANDOFFS : POPUP_ARR_QUEUED);
		if (!w)		/* in case the thread it waits for blocks */
			popup_watch_arm_locked(svc);
		if (!spawn && svc->spawn_req)
			popup_arr_inc(POPUP_ARR_SPAWNS);
	}
	return kstatus;
}

/*
 * Copy @len bytes of @skb, from @skb_off, to byte @off of @ctx's slot, a
 * page at a time: the slot's pages are not contiguous in the kernel.
 */
int popup_slot_copy_skb(struct popup_ctx *ctx, u32 off,
			const struct sk_buff *skb, u32 skb_off, u32 len)
{
	struct popup_binding *b = ctx->binding;
	u64 pos = (u64)ctx->slot * b->slot_size + off;
	u32 done, n;
	int err;

	for (done = 0; done < len; done += n) {
		u64 at = pos + done;
		u32 poff = offset_in_page(at);

		n = min_t(u32, len - done, PAGE_SIZE - poff);
		err = skb_copy_bits(skb, skb_off + done,
				    page_address(b->pages[at >> PAGE_SHIFT]) +
				    poff, n);
		if (err)
			return err;
	}
	return 0;
}

/*
 * Copy datagram @skb into the slot of its context @ctx: the one copy, the
 * one recvmsg would make into the reader's buffer.
 */
static int popup_dgram_copy(struct popup_ctx *ctx, struct sk_buff *skb)
{
	int err = popup_slot_copy_skb(ctx, 0, skb, 0, skb->len);

	WARN_ON_ONCE(err);
	return err;
}

/*
 * Datagram @skb, just taken from @ps's socket, becomes context @ctx: its
 * payload copied into @ctx's slot, then handed to a thread, queued, or
 * answered by the kernel. A context with no slot (every slot in use)
 * only carries a BUSY reply. Any context; takes over @ctx and @skb.
 */
static void popup_udp_arrive(struct popup_sock *ps, struct popup_ctx *ctx,
			     struct sk_buff *skb)
{
	struct popup_service *svc = ps->svc;
	struct task_struct *wake = NULL;
	u32 kstatus = POPUP_WIRE_BUSY;

	popup_arr_inc(POPUP_ARR_ARRIVALS);
	ctx->arg_len = skb->len;
	ctx->prio = DEFAULT_PRIO;
	ctx->cpu = ps->cpu >= 0 ? ps->cpu : raw_smp_processor_id();
	ctx->hdr_len = min_t(u32, skb->len, sizeof(ctx->hdr));
	if (skb_copy_bits(skb, 0, ctx->hdr, ctx->hdr_len))
		ctx->hdr_len = 0;
	popup_udp_peer(ps, skb, ctx);
	if (!udp_skb_csum_unnecessary(skb) &&
	    __udp_lib_checksum_complete(skb)) {
		/* Dropped as UDP drops it: nothing trustworthy to answer. */
		atomic_inc(&ps->sk->sk_drops);
		popup_arr_inc(POPUP_ARR_CSUM);
		kfree_skb(skb);
		popup_ctx_put(ctx);
		return;
	}
	if (ctx->embedded && skb->len <= ps->area->slot_size &&
	    popup_dgram_copy(ctx, skb)) {
		kfree_skb(skb);
		popup_ctx_put(ctx);
		return;
	}
	consume_skb(skb);

	spin_lock_bh(&svc->lock);
	if (ctx->embedded) {
		kstatus = popup_arrive_locked(ps, ctx, &wake);
	} else if (svc->dead || ps->detached) {
		ps->arrivals++;
		popup_arr_inc(POPUP_ARR_ABORTED);
	} else {
		ps->arrivals++;
		popup_pool_update_locked(svc);
		popup_arr_inc(POPUP_ARR_BUSY);
	}
	if (kstatus)
		popup_kreply_queue_locked(ps, ctx, kstatus);
	spin_unlock_bh(&svc->lock);
	if (wake)
		popup_wake_task(wake);
}

/*
 * A free slot context of @ps, taken (its bit set, a socket reference for
 * it), or NULL if every slot is in use. Lockless: arrivals on several
 * CPUs may race for a bit; the context's release gives it back.
 */
static struct popup_ctx *popup_dctx_get(struct popup_sock *ps)
{
	unsigned int n = ps->area->nslots, slot;
	struct popup_ctx *ctx;

	do {
		slot = find_first_zero_bit(ps->dslots, n);
		if (slot >= n)
			return NULL;
	} while (test_and_set_bit_lock(slot, ps->dslots));
	kref_get(&ps->refs);
	ctx = &ps->dctx[slot];
	/* What the last datagram of the slot changed; the rest is fixed. */
	kref_init(&ctx->refs);
	INIT_LIST_HEAD(&ctx->node);
	ctx->waiter = NULL;
	ctx->overtaken = 0;
	ctx->status = 0;
	ctx->result_len = 0;
	ctx->kstatus = 0;
	return ctx;
}

/* The slot contexts of a new UDP attachment; the fields that never vary. */
static int popup_dctx_alloc(struct popup_sock *ps)
{
	u32 i, n = ps->area->nslots;

	ps->dctx = kcalloc(n, sizeof(*ps->dctx), GFP_KERNEL_ACCOUNT);
	if (!ps->dctx)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		struct popup_ctx *ctx = &ps->dctx[i];

		init_waitqueue_head(&ctx->wq);
		ctx->binding = ps->area;
		ctx->method = &ps->method;
		ctx->slot = i;
		ctx->psock = ps;
		ctx->embedded = true;
	}
	return 0;
}

enum popup_take { POPUP_TAKE_DONE, POPUP_TAKE_EMPTY, POPUP_TAKE_NOMEM };

/*
 * Take one datagram off @ps's socket into a slot context (or a BUSY
 * reply when every slot is in use, for which a context is allocated with
 * @gfp). EMPTY: no datagram was there. NOMEM: it was left on the socket.
 */
static enum popup_take popup_udp_take(struct popup_sock *ps, gfp_t gfp)
{
	struct popup_ctx *ctx = popup_dctx_get(ps);
	struct sk_buff *skb;
	int err;

	if (!ctx) {
		ctx = popup_ctx_alloc(gfp);
		if (!ctx)
			return POPUP_TAKE_NOMEM;
		kref_get(&ps->refs);
		ctx->psock = ps;
	}
	skb = skb_recv_udp(ps->sk, MSG_DONTWAIT, &err);
	if (!skb) {
		popup_ctx_put(ctx);
		return POPUP_TAKE_EMPTY;
	}
	popup_udp_arrive(ps, ctx, skb);
	return POPUP_TAKE_DONE;
}

/* Not (or no longer) ours: pass the event to whoever has the socket now. */
static void popup_data_ready_fallback(struct sock *sk)
{
	void (*fn)(struct sock *sk);

	read_lock_bh(&sk->sk_callback_lock);
	fn = sk->sk_data_ready;
	read_unlock_bh(&sk->sk_callback_lock);
	if (fn != popup_udp_data_ready)
		fn(sk);
}

/*
 * sk_data_ready of an attached UDP socket: softirq, once per datagram
 * queued (__udp_enqueue_schedule_skb).
 */
static void popup_udp_data_ready(struct sock *sk)
{
	struct popup_sock *ps;

	rcu_read_lock();
	ps = popup_sock_lookup_rcu(sk);
	if (unlikely(!ps)) {
		rcu_read_unlock();
		popup_data_ready_fallback(sk);
		return;
	}
	switch (popup_udp_take(ps, GFP_ATOMIC)) {
	case POPUP_TAKE_NOMEM:
		/* Leave the datagram queued for the worker. */
		popup_arr_inc(POPUP_ARR_NOMEM);
		spin_lock_bh(&ps->svc->lock);
		ps->drain = true;
		spin_unlock_bh(&ps->svc->lock);
		popup_sock_kick(ps);
		break;
	case POPUP_TAKE_EMPTY:
		popup_arr_inc(POPUP_ARR_SPURIOUS);
		break;
	default:
		break;
	}
	rcu_read_unlock();
}

/* Worker: take what the callback left on the socket, with GFP_KERNEL. */
static void popup_udp_drain(struct popup_sock *ps)
{
	struct sk_buff *skb;
	int n, err;

	for (n = 0; n < POPUP_DRAIN_BATCH; n++) {
		if (READ_ONCE(ps->detached))
			return;
		switch (popup_udp_take(ps, GFP_KERNEL)) {
		case POPUP_TAKE_EMPTY:
			return;
		case POPUP_TAKE_NOMEM:
			skb = skb_recv_udp(ps->sk, MSG_DONTWAIT, &err);
			if (!skb)
				return;
			popup_arr_inc(POPUP_ARR_LOST);
			kfree_skb(skb);
			break;
		default:
			break;
		}
		cond_resched();
	}
	/* More may be left: come back after the kernel replies. */
	spin_lock_bh(&ps->svc->lock);
	ps->drain = true;
	spin_unlock_bh(&ps->svc->lock);
	popup_sock_kick(ps);
}

/*
 * The bare native reply header with @ctx->kstatus that answers @ctx's
 * request, into @rep (POPUP_WIRE_HDR_LEN bytes). False (counted) if the
 * request had no well-formed header to answer.
 */
bool popup_kreply_build(const struct popup_ctx *ctx, u8 *rep)
{
	const u8 *h = ctx->hdr;

	/* Only a well-formed request gets an answer; never a reply. */
	if (ctx->hdr_len < POPUP_WIRE_HDR_LEN ||
	    get_unaligned_be32(h) != POPUP_WIRE_MAGIC ||
	    h[4] != POPUP_WIRE_VERSION || (h[5] & POPUP_WIRE_F_REPLY)) {
		popup_arr_inc(POPUP_ARR_UNANSWERABLE);
		return false;
	}
	memset(rep, 0, POPUP_WIRE_HDR_LEN);
	put_unaligned_be32(POPUP_WIRE_MAGIC, rep);
	rep[4] = POPUP_WIRE_VERSION;
	rep[5] = POPUP_WIRE_F_REPLY;
	memcpy(rep + 6, h + 6, 6);		/* method, service */
	put_unaligned_be32(ctx->kstatus, rep + 12);
	memcpy(rep + 16, h + 16, 8);		/* req_id */
	return true;
}

/* Send the kernel reply of datagram @ctx to its sender. */
void popup_kreply_send(struct popup_sock *ps, struct popup_ctx *ctx)
{
	u8 rep[POPUP_WIRE_HDR_LEN];
	struct msghdr msg = {
		.msg_name = &ctx->peer,
		.msg_namelen = ctx->peer_len,
		.msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL,
	};
	struct kvec kv = { .iov_base = rep, .iov_len = sizeof(rep) };
	int ret;

	if (!popup_kreply_build(ctx, rep))
		return;
	ret = kernel_sendmsg(ps->sock, &msg, &kv, 1, sizeof(rep));
	if (ret < 0)
		popup_arr_inc(POPUP_ARR_TXERR);
	else
		WRITE_ONCE(ps->kreplied, ps->kreplied + 1);
}

/*
 * A new attachment of @sock (a UDP socket, a listener or a parked
 * connection), holding no reference yet: the caller's socket reference
 * moves to it once this succeeds.
 */
struct popup_sock *popup_sock_new(struct socket *sock, enum popup_sock_kind kind)
{
	struct popup_sock *ps;

	ps = kzalloc(sizeof(*ps), GFP_KERNEL_ACCOUNT);
	if (!ps)
		return NULL;
	kref_init(&ps->refs);
	INIT_HLIST_NODE(&ps->hash_node);
	INIT_LIST_HEAD(&ps->proc_node);
	INIT_LIST_HEAD(&ps->kreplies);
	INIT_LIST_HEAD(&ps->conns);
	INIT_WORK(&ps->work, popup_sock_work);
	ps->kind = kind;
	ps->sock = sock;
	ps->sk = sock->sk;
	ps->family = sock->sk->sk_family;
	return ps;
}

void popup_sock_work(struct work_struct *work)
{
	struct popup_sock *ps = container_of(work, struct popup_sock, work);
	struct popup_service *svc = ps->svc;
	struct popup_ctx *ctx, *tmp;
	LIST_HEAD(list);
	bool drain;

	if (ps->kind != POPUP_SOCK_UDP) {
		popup_tcp_work(ps);
	} else {
		spin_lock_bh(&svc->lock);
		drain = ps->drain && !ps->detached;
		ps->drain = false;
		spin_unlock_bh(&svc->lock);
		if (drain)
			popup_udp_drain(ps);
	}

	spin_lock_bh(&svc->lock);
	list_splice_init(&ps->kreplies, &list);
	ps->nkreplies = 0;
	spin_unlock_bh(&svc->lock);
	list_for_each_entry_safe(ctx, tmp, &list, node) {
		list_del_init(&ctx->node);
		if (ps->kind == POPUP_SOCK_UDP)
			popup_kreply_send(ps, ctx);
		else
			popup_tcp_kreply(ps, ctx);
		popup_ctx_put(ctx);
		cond_resched();
	}
	popup_sock_put(ps);		/* the work's reference */
}

/*
 * WAIT, in the handler's thread, @ctx in FILL: make a TCP arrival
 * available to the handler (read a request frame into its slot, install
 * an accepted connection). An error: no context for the handler.
 */
int popup_arrival_fill(struct popup_ctx *ctx)
{
	/* Datagrams are copied on arrival (slot contexts): TCP only here. */
	if (ctx->psock->kind == POPUP_SOCK_LISTEN)
		return popup_conn_fill(ctx);
	return popup_stream_fill(ctx);
}

/* REPLY finished @ctx (its reply sent or not): a connection may go on. */
void popup_arrival_replied(struct popup_ctx *ctx)
{
	struct popup_sock *ps = ctx->psock;

	if (ps->kind == POPUP_SOCK_CONN)
		popup_stream_done_locked(ctx);
}

/*
 * REPLY, in the handler's thread, @ctx in SEND: send the first @len bytes
 * of its slot to the sender. Returns 0 or the send error (never ENOENT or
 * EINVAL, which mean "not replied" to REPLY_WAIT).
 */
int popup_dgram_send(struct popup_ctx *ctx, u32 len)
{
	struct kvec kv[POPUP_MAX_DGRAM / PAGE_SIZE];
	struct popup_binding *b = ctx->binding;
	u64 pos = (u64)ctx->slot * b->slot_size;
	struct msghdr msg = {
		.msg_name = &ctx->peer,
		.msg_namelen = ctx->peer_len,
		.msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL,
	};
	u32 off, n = 0;
	int ret;

	if (!len) {
		popup_arr_inc(POPUP_ARR_NOREPLY);
		return 0;
	}
	if (ctx->psock->kind == POPUP_SOCK_CONN)
		return popup_stream_send(ctx, len);
	for (off = 0; off < len && n < ARRAY_SIZE(kv); n++) {
		u64 at = pos + off;
		u32 poff = offset_in_page(at);

		kv[n].iov_base = page_address(b->pages[at >> PAGE_SHIFT]) +
				 poff;
		kv[n].iov_len = min_t(u32, len - off, PAGE_SIZE - poff);
		off += kv[n].iov_len;
	}
	ret = kernel_sendmsg(ctx->psock->sock, &msg, kv, n, len);
	if (ret < 0) {
		popup_arr_inc(POPUP_ARR_TXERR);
		return ret == -ENOENT || ret == -EINVAL ? -EIO : ret;
	}
	popup_arr_inc(POPUP_ARR_REPLIES);
	return 0;
}

/* The datagram-specific fields of @c, after the common ones (call.c). */
void popup_dgram_fill_context(struct popup_ctx *ctx, struct popup_context *c)
{
	const struct sockaddr_in6 *sin6 = (const void *)&ctx->peer;
	const struct sockaddr_in *sin = (const void *)&ctx->peer;

	c->method = 0;
	if (ctx->psock->kind == POPUP_SOCK_LISTEN)
		c->conn_fd = ctx->conn_fd;
	else if (ctx->psock->kind == POPUP_SOCK_CONN)
		c->conn_id = ctx->psock->id;
	c->pid = 0;
	c->tid = 0;
	c->uid = (u32)-1;
	c->gid = (u32)-1;
	c->peer_family = sin->sin_family;
	c->peer_port = sin->sin_port;
	if (sin->sin_family == AF_INET6)
		memcpy(c->peer_addr, &sin6->sin6_addr, 16);
	else
		memcpy(c->peer_addr, &sin->sin_addr, 4);
	popup_arr_inc(raw_smp_processor_id() == ctx->cpu ? POPUP_ARR_LOCAL :
		      POPUP_ARR_REMOTE);
}

/* Install our callback on @ps->sk; -EBUSY if the socket is taken. */
int popup_sock_hook(struct popup_sock *ps)
{
	struct sock *sk = ps->sk;
	struct popup_sock *other;
	uintptr_t ud;
	int ret = 0;

	lock_sock(sk);
	write_lock_bh(&sk->sk_callback_lock);
	ud = (uintptr_t)sk->sk_user_data;
	if (ud && !(ud & SK_USER_DATA_BPF)) {
		ret = -EBUSY;		/* another kernel user owns it */
		goto out;
	}
	spin_lock(&popup_sock_lock);
	hash_for_each_possible(popup_sock_hash, other, hash_node,
			       (unsigned long)sk)
		if (other->sk == sk)
			ret = -EBUSY;
	if (!ret)
		hash_add_rcu(popup_sock_hash, &ps->hash_node,
			     (unsigned long)sk);
	spin_unlock(&popup_sock_lock);
	if (ret)
		goto out;
	ps->saved_data_ready = sk->sk_data_ready;
	if (ps->kind == POPUP_SOCK_UDP)
		WRITE_ONCE(sk->sk_data_ready, popup_udp_data_ready);
	else
		popup_tcp_hook_locked(ps);
	ps->port = ntohs(inet_sk(sk)->inet_sport);
out:
	write_unlock_bh(&sk->sk_callback_lock);
	release_sock(sk);
	return ret;
}

/* Put the socket's callback back; no new callback finds @ps after this. */
static void popup_sock_unhook(struct popup_sock *ps)
{
	struct sock *sk = ps->sk;

	lock_sock(sk);
	write_lock_bh(&sk->sk_callback_lock);
	if (ps->kind != POPUP_SOCK_UDP)
		popup_tcp_unhook_locked(ps);
	else if (sk->sk_data_ready == popup_udp_data_ready)
		WRITE_ONCE(sk->sk_data_ready, ps->saved_data_ready);
	spin_lock(&popup_sock_lock);
	hash_del_rcu(&ps->hash_node);
	spin_unlock(&popup_sock_lock);
	write_unlock_bh(&sk->sk_callback_lock);
	release_sock(sk);
}

/*
 * Detach the sockets on @list (linked by proc_node, already off their
 * file's list): one grace period for all of them.
 */
void popup_socks_detach_list(struct list_head *list)
{
	struct popup_sock *ps, *tmp;

	if (list_empty(list))
		return;
	/* A listener's parked connections go with it (appended: seen too). */
	list_for_each_entry(ps, list, proc_node) {
		if (ps->kind != POPUP_SOCK_LISTEN)
			continue;
		spin_lock_bh(&ps->svc->lock);
		popup_conns_take_locked(ps, list);
		spin_unlock_bh(&ps->svc->lock);
	}
	list_for_each_entry(ps, list, proc_node)
		popup_sock_unhook(ps);
	synchronize_rcu();		/* callbacks in flight are done */

	list_for_each_entry_safe(ps, tmp, list, proc_node) {
		struct popup_service *svc = ps->svc;
		struct sock *sk = ps->sk;
		LIST_HEAD(puts);

		spin_lock_bh(&svc->lock);
		ps->detached = true;
		spin_unlock_bh(&svc->lock);
		flush_work(&ps->work);	/* drains stop, replies go out */

		/* Leftovers are userspace's again: tell its readers. */
		if (ps->kind != POPUP_SOCK_UDP)
			popup_tcp_detached(ps);
		else if (!skb_queue_empty_lockless(&sk->sk_receive_queue) ||
			 !skb_queue_empty_lockless(&udp_sk(sk)->reader_queue))
			ps->saved_data_ready(sk);

		spin_lock_bh(&svc->lock);
		popup_binding_active_put_locked(ps->area, &puts);
		spin_unlock_bh(&svc->lock);
		popup_binding_put_list(&puts);

		list_del_init(&ps->proc_node);
		popup_sock_put(ps);	/* the attachment's reference */
	}
}

/* Detach @proc's sockets attached to @svc, or all of them if NULL. */
void popup_socks_detach(struct popup_proc *proc, struct popup_service *svc)
{
	struct popup_sock *ps, *tmp;
	LIST_HEAD(list);

	mutex_lock(&proc->lock);
	list_for_each_entry_safe(ps, tmp, &proc->socks, proc_node) {
		if (svc && ps->svc != svc)
			continue;
		list_move_tail(&ps->proc_node, &list);
		proc->nsocks--;
		proc->mapped -= ps->area->map_size;
	}
	mutex_unlock(&proc->lock);
	popup_socks_detach_list(&list);
}

int popup_ioctl_detach(struct popup_proc *proc, const struct popup_target *t)
{
	struct popup_sock *ps;
	LIST_HEAD(list);

	if ((t->flags & ~POPUP_DETACH_CONN) || t->reserved)
		return -EINVAL;
	if (t->flags & POPUP_DETACH_CONN)
		return popup_conn_detach(proc, t->id);
	mutex_lock(&proc->lock);
	list_for_each_entry(ps, &proc->socks, proc_node) {
		if (ps->id != t->id)
			continue;
		list_move_tail(&ps->proc_node, &list);
		proc->nsocks--;
		proc->mapped -= ps->area->map_size;
		break;
	}
	mutex_unlock(&proc->lock);
	if (list_empty(&list))
		return -ENOENT;
	popup_socks_detach_list(&list);
	return 0;
}

/* Check the socket of @at and take a reference to it. */
static struct socket *popup_attach_sock(const struct popup_attach *at)
{
	struct socket *sock;
	struct sock *sk;
	int err;

	sock = sockfd_lookup(at->fd, &err);
	if (!sock)
		return ERR_PTR(err);
	sk = sock->sk;
	if (sk && sk->sk_type == SOCK_STREAM) {
		err = popup_tcp_attach_check(sock);
		if (err)
			goto err_put;
		return sock;
	}
	err = -EPROTONOSUPPORT;
	if (!sk || sk->sk_type != SOCK_DGRAM ||
	    sk->sk_protocol != IPPROTO_UDP ||
	    (sk->sk_family != AF_INET && sk->sk_family != AF_INET6))
		goto err_put;
	err = -EOPNOTSUPP;
	if (udp_test_bit(GRO_ENABLED, sk))
		goto err_put;
	return sock;

err_put:
	sockfd_put(sock);
	return ERR_PTR(err);
}

int popup_ioctl_attach(struct popup_proc *proc, struct popup_attach *at)
{
	struct popup_service *svc;
	struct popup_binding *b;
	struct popup_sock *ps;
	struct socket *sock;
	u32 nslots = at->nslots ?: POPUP_DGRAM_SLOTS;
	u32 slot_size = at->slot_size ?: POPUP_MAX_DGRAM;
	LIST_HEAD(puts);
	int ret;

	if (at->flags || at->reserved[0] || at->reserved[1])
		return -EINVAL;
	if (at->cpu != POPUP_CPU_ANY &&
	    (at->cpu >= nr_cpu_ids || !cpu_possible(at->cpu)))
		return -EINVAL;
	if (nslots > POPUP_MAX_SLOTS || slot_size > POPUP_MAX_MSG)
		return -EINVAL;
	slot_size = PAGE_ALIGN(slot_size);

	svc = popup_service_get_owned(proc, at->service_id);
	if (IS_ERR(svc))
		return PTR_ERR(svc);
	sock = popup_attach_sock(at);
	if (!IS_ERR(sock) && sock->sk->sk_type != SOCK_STREAM &&
	    slot_size > POPUP_MAX_DGRAM) {
		sockfd_put(sock);
		sock = ERR_PTR(-EINVAL);
	}
	if (IS_ERR(sock)) {
		popup_service_put(svc);
		return PTR_ERR(sock);
	}
	ps = popup_sock_new(sock, sock->sk->sk_type == SOCK_STREAM ?
			    POPUP_SOCK_LISTEN : POPUP_SOCK_UDP);
	if (!ps) {
		sockfd_put(sock);
		popup_service_put(svc);
		return -ENOMEM;
	}
	ps->svc = svc;			/* our references move to ps */
	ps->cpu = at->cpu == POPUP_CPU_ANY ? -1 : (int)at->cpu;
	ps->method.max_arg = slot_size;
	ps->method.max_res = slot_size;

	kref_get(&svc->refs);		/* taken over by the area */
	b = popup_binding_alloc(svc, nslots, slot_size);
	if (IS_ERR(b)) {
		popup_sock_put(ps);
		return PTR_ERR(b);
	}

	mutex_lock(&proc->lock);
	ret = -EBADF;
	if (proc->dead)
		goto err_unlock;
	ret = -ENOSPC;
	if (proc->nsocks >= POPUP_MAX_SOCKETS ||
	    proc->mapped + b->map_size > POPUP_MAX_MAPPED)
		goto err_unlock;
	ret = -ENOENT;
	if (READ_ONCE(svc->dead))
		goto err_unlock;
	ret = popup_binding_publish(b);
	if (ret)
		goto err_unlock;
	ps->area = b;
	ps->id = b->id;
	if (ps->kind == POPUP_SOCK_UDP) {
		ret = popup_dctx_alloc(ps);
		if (ret)
			goto err_unlock;
	}
	ret = popup_sock_hook(ps);
	if (ret)
		goto err_unlock;
	list_add_tail(&ps->proc_node, &proc->socks);
	proc->nsocks++;
	proc->mapped += b->map_size;
	mutex_unlock(&proc->lock);

	at->attach_id = ps->id;
	at->slot_size = slot_size;
	at->nslots = nslots;
	at->map_offset = (u64)ps->id << PAGE_SHIFT;
	at->map_size = b->map_size;

	/* Datagrams or connections queued before the hook: the worker. */
	spin_lock_bh(&svc->lock);
	ps->drain = true;
	ps->accept = true;
	spin_unlock_bh(&svc->lock);
	popup_sock_kick(ps);
	return 0;

err_unlock:
	mutex_unlock(&proc->lock);
	/* The area may be mapped already: drop it as a dead binding. */
	spin_lock_bh(&svc->lock);
	popup_binding_active_put_locked(b, &puts);
	spin_unlock_bh(&svc->lock);
	popup_binding_put_list(&puts);
	popup_sock_put(ps);
	return ret;
}

/* /proc/popup/arrival: per-CPU counters of the arrival path. */
static const char *const popup_arr_names[POPUP_NR_ARR_STATS] = {
	[POPUP_ARR_ARRIVALS] = "arrivals",
	[POPUP_ARR_HANDOFFS] = "handoffs",
	[POPUP_ARR_QUEUED] = "queued",
	[POPUP_ARR_SPAWNS] = "spawns",
	[POPUP_ARR_LOCAL] = "local",
	[POPUP_ARR_REMOTE] = "remote",
	[POPUP_ARR_REPLIES] = "replies",
	[POPUP_ARR_NOREPLY] = "noreply",
	[POPUP_ARR_BUSY] = "busy",
	[POPUP_ARR_TOOBIG] = "toobig",
	[POPUP_ARR_ABORTED] = "aborted",
	[POPUP_ARR_CSUM] = "csum",
	[POPUP_ARR_UNANSWERABLE] = "unanswerable",
	[POPUP_ARR_NOMEM] = "nomem",
	[POPUP_ARR_LOST] = "lost",
	[POPUP_ARR_TXERR] = "txerr",
	[POPUP_ARR_SPURIOUS] = "spurious",
	[POPUP_ARR_ACCEPTS] = "accepts",
	[POPUP_ARR_REFUSED] = "refused",
	[POPUP_ARR_CLOSED] = "closed",
	[POPUP_ARR_BADFRAME] = "badframe",
	[POPUP_ARR_RESCUED] = "rescued",
};

int popup_arrival_show(struct seq_file *m, void *v)
{
	int cpu, s;

	seq_puts(m, "cpu");
	for (s = 0; s < POPUP_NR_ARR_STATS; s++)
		seq_printf(m, " %s", popup_arr_names[s]);
	seq_putc(m, '\n');
	for_each_possible_cpu(cpu) {
		const struct popup_arr_stats *st =
			per_cpu_ptr(&popup_arr_stats, cpu);

		seq_printf(m, "%d", cpu);
		for (s = 0; s < POPUP_NR_ARR_STATS; s++)
			seq_printf(m, " %llu", READ_ONCE(st->count[s]));
		seq_putc(m, '\n');
	}
	return 0;
}

/* /proc/popup/sockets: one line per attached socket. */
int popup_socks_show(struct seq_file *m, void *v)
{
	struct popup_sock *ps;
	int bkt;

	seq_puts(m, "id service proto family port cpu nslots slot_size inflight arrivals kreplies\n");
	rcu_read_lock();
	hash_for_each_rcu(popup_sock_hash, bkt, ps, hash_node)
		seq_printf(m, "%u %u %s %s %u %d %u %u %u %llu %llu\n",
			   ps->id, ps->svc->id,
			   ps->kind == POPUP_SOCK_UDP ? "udp" :
			   ps->kind == POPUP_SOCK_LISTEN ? "tcp" : "conn",
			   ps->family == AF_INET6 ? "inet6" : "inet",
			   ps->port, ps->cpu, ps->area->nslots,
			   ps->area->slot_size,
			   (unsigned int)hweight64(READ_ONCE(ps->area->busy)),
			   READ_ONCE(ps->arrivals), READ_ONCE(ps->kreplied));
	rcu_read_unlock();
	return 0;
}

int popup_arrival_init(void)
{
	popup_wq = alloc_workqueue("popup_arrival", 0, 0);
	return popup_wq ? 0 : -ENOMEM;
}

/* No file is open: only work items of detached sockets may be left. */
void popup_arrival_exit(void)
{
	destroy_workqueue(popup_wq);
}
