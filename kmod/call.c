// SPDX-License-Identifier: GPL-2.0
/*
 * Calls, handler contexts and the thread pool.
 *
 * CALL creates a context (struct popup_ctx, from popup_ctx_cache) and, in
 * one critical section of svc->lock, either hands it to an idle waiter
 * (HANDED; the waiter's on-stack struct popup_waiter gets ->ctx and a
 * synchronous wake-up) or queues it by priority then arrival (QUEUED);
 * a queued context is passed over by more urgent ones at most
 * POPUP_MAX_OVERTAKE times, so priorities never starve anyone.
 * The waiter returns it to userspace (ACTIVE). REPLY stores the status and
 * length (DONE) and wakes the caller, which reads the result in place.
 *
 * Cancellation (signal or timeout of the caller): a QUEUED or HANDED
 * context is taken back (it never reaches a handler: EINTR/ETIMEDOUT); an
 * ACTIVE one becomes CANCELLED (ECANCELED/ETIME), keeps its slot busy and
 * is discarded by the handler's REPLY, which fails with ECANCELED.
 *
 * Pool: waiters sleep LIFO on svc->idle; a call prefers the one that waits
 * on the caller's CPU. When no thread is idle with calls queued, or fewer
 * than min_idle are idle, and the pool is below max_threads, a spawn
 * request for max(increment, min_idle - idle) threads is posted (one at a
 * time: the next only once that many threads registered with
 * POPUP_WAIT_NEW, or a second passed). It reaches userspace in the
 * @spawn field of the next WAIT result, as KIND_SPAWN to a control waiter,
 * and as EPOLLIN. Pool threads idle beyond max_idle, or idle for
 * idle_timeout while min_idle others are idle too and were all along (no
 * hand-off took the idle count down to min_idle meanwhile: no spawn and
 * retire churn under steady load), get KIND_RETIRE.
 *
 * Runners: the thread that took a context on a CPU, or was handed one
 * there, is that CPU's runner (svc->cpus[].runner) until it goes idle. While
 * it runs (not blocked: a handler that sleeps stops counting), network
 * arrivals on its CPU queue for its next REPLY_WAIT rather than waking a
 * second thread or one on another CPU: one running thread per CPU takes a
 * burst back to back, as a per-CPU event loop would, the way concurrency-
 * managed workqueues avoid waking a second worker. Idle threads take over
 * as soon as the runner blocks.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/cred.h>
#include <linux/err.h>
#include <linux/jiffies.h>
#include <linux/math64.h>
#include <linux/minmax.h>
#include <linux/moduleparam.h>
#include <linux/pid.h>
#include <linux/pid_namespace.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/skbuff.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/net.h>
#include <linux/user_namespace.h>
#include <uapi/linux/sched/types.h>

#include "popup_internal.h"

static struct kmem_cache *popup_ctx_cache;

static bool popup_queue_stranded_locked(struct popup_service *svc);

/* How many idle waiters a call scans for one on its own CPU. */
#define POPUP_AFFINITY_SCAN	32
/* Times a queued context may be passed over by more urgent ones. */
#define POPUP_MAX_OVERTAKE	8

int popup_ctx_cache_init(void)
{
	popup_ctx_cache = KMEM_CACHE(popup_ctx, SLAB_ACCOUNT);
	return popup_ctx_cache ? 0 : -ENOMEM;
}

void popup_ctx_cache_exit(void)
{
	kmem_cache_destroy(popup_ctx_cache);
}

/*
 * Atomic-safe: frees the context, its pid references, a datagram not yet
 * copied and its socket reference (whose release only defers). The one
 * exception, an accepted connection never installed, is released only in
 * process context: the contexts that carry one are last put there (the
 * accept worker, the kernel-reply worker, WAIT with svc->lock dropped).
 */
static void popup_ctx_release(struct kref *kref)
{
	struct popup_ctx *ctx = container_of(kref, struct popup_ctx, refs);

	if (ctx->embedded) {
		struct popup_sock *ps = ctx->psock;

		/* The next arrival may take the context at once: hands off. */
		clear_bit_unlock(ctx->slot, ps->dslots);
		popup_sock_put(ps);
		return;
	}
	put_pid(ctx->tgid);
	put_pid(ctx->tid);
	kfree_skb(ctx->skb);
	if (ctx->conn)
		sock_release(ctx->conn);
	if (ctx->psock)
		popup_sock_put(ctx->psock);
	kmem_cache_free(popup_ctx_cache, ctx);
}

void popup_ctx_put(struct popup_ctx *ctx)
{
	kref_put(&ctx->refs, popup_ctx_release);
}

/* A zeroed context with one reference (the service side). */
struct popup_ctx *popup_ctx_alloc(gfp_t gfp)
{
	struct popup_ctx *ctx;

	ctx = kmem_cache_zalloc(popup_ctx_cache, gfp);
	if (!ctx)
		return NULL;
	kref_init(&ctx->refs);
	INIT_LIST_HEAD(&ctx->node);
	init_waitqueue_head(&ctx->wq);
	return ctx;
}

/*
 * A queued context left the queue: wake a caller waiting for room
 * (POPUP_CALL_BLOCK). The barrier in wq_has_sleeper() pairs with the one
 * in the waiter's prepare_to_wait_event(), so the common case, nobody
 * waiting, costs no lock.
 */
static void popup_space_wake(struct popup_service *svc)
{
	if (wq_has_sleeper(&svc->space_wq))
		wake_up_interruptible(&svc->space_wq);
}

/*
 * The service side is done with @ctx: release its slot and its count in
 * binding->active, set its final @state, wake a synchronous caller and
 * drop the service side's reference.
 */
void popup_ctx_finish_locked(struct popup_service *svc, struct popup_ctx *ctx,
			     int state, struct list_head *puts)
{
	struct popup_binding *b = ctx->binding;

	lockdep_assert_held(&svc->lock);
	if (ctx->state == POPUP_CTX_QUEUED) {
		svc->nqueued--;
		popup_space_wake(svc);
	}
	if (ctx->waiter) {
		ctx->waiter->ctx = NULL;
		ctx->waiter = NULL;
	}
	list_del_init(&ctx->node);
	b->busy &= ~BIT_ULL(ctx->slot);
	b->slot_ctx[ctx->slot] = NULL;
	if (ctx->flags & POPUP_CTX_ONEWAY)
		b->oneway--;
	popup_binding_active_put_locked(b, puts);
	WRITE_ONCE(ctx->state, state);
	if (!(ctx->flags & POPUP_CTX_ONEWAY) && !ctx->psock)
		wake_up_interruptible_sync(&ctx->wq);
	popup_ctx_put(ctx);
}

/* Wake a thread to collect a notice (spawn request or UNMAP). */
void popup_notice_wake_locked(struct popup_service *svc)
{
	struct popup_waiter *w;

	lockdep_assert_held(&svc->lock);
	w = list_first_entry_or_null(&svc->control, struct popup_waiter, node);
	if (!w)
		w = list_first_entry_or_null(&svc->idle, struct popup_waiter,
					     node);
	if (w) {
		w->kicked = true;
		wake_up_interruptible(&w->wq);
	}
	if (svc->owner)
		wake_up_interruptible(&svc->owner->poll_wq);
}

/* Post a spawn request if the pool needs threads and none is pending. */
void popup_pool_update_locked(struct popup_service *svc)
{
	const struct popup_pool *p = &svc->pool;
	u32 want, idle;

	lockdep_assert_held(&svc->lock);
	if (svc->dead || svc->spawn_req)
		return;
	if (svc->spawn_exp) {
		if (time_before(jiffies, svc->spawn_time + HZ))
			return;
		svc->spawn_exp = 0;	/* unanswered for a second */
	}
	if (svc->nthreads >= p->max_threads)
		return;
	/*
	 * A thread between its reply and its wait is idle in a moment; what
	 * is queued for a running runner needs no other thread.
	 */
	idle = svc->nidle + svc->nreplying;
	if (idle >= p->min_idle &&
	    (idle || !svc->nqueued || !popup_queue_stranded_locked(svc)))
		return;
	want = p->increment;
	if (idle < p->min_idle)
		want = max(want, p->min_idle - idle);
	want = min(want, p->max_threads - svc->nthreads);
	svc->spawn_req = want;
	svc->spawn_exp = want;
	svc->spawn_time = jiffies;
	popup_stat_inc(POPUP_STAT_SPAWNS);
	popup_notice_wake_locked(svc);
}

/* Withdrawal: fail every context, wake every waiter, drop the notices. */
void popup_service_abort_locked(struct popup_service *svc,
				struct list_head *puts)
{
	struct popup_ctx *ctx, *ctmp;
	struct popup_binding *b, *btmp;
	struct popup_waiter *w;

	lockdep_assert_held(&svc->lock);
	WRITE_ONCE(svc->dead, true);
	WRITE_ONCE(svc->owner, NULL);
	/* A datagram nobody saw is answered BUSY, one being handled ERROR. */
	list_for_each_entry_safe(ctx, ctmp, &svc->queue, node) {
		svc->errors++;
		popup_stat_inc(POPUP_STAT_ABORTS);
		if (ctx->psock)
			popup_dgram_abort_locked(svc, ctx, POPUP_WIRE_BUSY, puts);
		else
			popup_ctx_finish_locked(svc, ctx, POPUP_CTX_ABORTED, puts);
	}
	list_for_each_entry_safe(ctx, ctmp, &svc->running, node) {
		if (ctx->state != POPUP_CTX_CANCELLED) {
			svc->errors++;
			popup_stat_inc(POPUP_STAT_ABORTS);
		}
		if (ctx->psock)
			popup_dgram_abort_locked(svc, ctx,
						 ctx->state == POPUP_CTX_ACTIVE ?
						 POPUP_WIRE_ERROR :
						 POPUP_WIRE_BUSY, puts);
		else
			popup_ctx_finish_locked(svc, ctx, POPUP_CTX_ABORTED,
						puts);
	}
	list_for_each_entry(w, &svc->idle, node) {
		w->kicked = true;
		wake_up_interruptible(&w->wq);
	}
	list_for_each_entry(w, &svc->control, node) {
		w->kicked = true;
		wake_up_interruptible(&w->wq);
	}
	list_for_each_entry_safe(b, btmp, &svc->notices, notice_node) {
		b->noticed = false;
		list_move_tail(&b->notice_node, puts);
	}
	svc->spawn_req = 0;
	svc->spawn_exp = 0;
	wake_up_interruptible_all(&svc->space_wq);
}

/* An idle waiter for a call from @cpu: same CPU if seen soon, else LIFO. */
struct popup_waiter *popup_pick_waiter_locked(struct popup_service *svc,
					      int cpu)
{
	struct popup_waiter *w;
	int n = 0;

	list_for_each_entry(w, &svc->idle, node) {
		if (w->cpu == cpu)
			return w;
		if (++n >= POPUP_AFFINITY_SCAN)
			break;
	}
	return list_first_entry_or_null(&svc->idle, struct popup_waiter, node);
}

/*
 * Insert by priority (lower first), after every equal one (FIFO), but
 * never ahead of a context that was already passed over
 * POPUP_MAX_OVERTAKE times: a stream of urgent calls delays a less urgent
 * one by a bounded number of calls instead of starving it.
 */
static void popup_queue_insert_locked(struct popup_service *svc,
				      struct popup_ctx *ctx)
{
	struct popup_ctx *pos;
	struct list_head *at = &svc->queue;

	list_for_each_entry_reverse(pos, &svc->queue, node) {
		if (pos->prio <= ctx->prio ||
		    pos->overtaken >= POPUP_MAX_OVERTAKE) {
			at = &pos->node;
			break;
		}
	}
	list_add(&ctx->node, at);
	pos = ctx;
	list_for_each_entry_continue(pos, &svc->queue, node)
		pos->overtaken++;
}

/* Can @call on @b be accepted now, queue room aside? */
static int popup_call_check_locked(struct popup_proc *proc,
				   struct popup_binding *b,
				   const struct popup_call *call, bool oneway)
{
	struct popup_service *svc = b->svc;

	lockdep_assert_held(&svc->lock);
	if (b->client != proc)
		return -ENOENT;
	if (svc->dead)
		return -ECONNRESET;
	if (!b->client_maps)
		return -ENXIO;
	if (b->busy & BIT_ULL(call->slot))
		return -EBUSY;
	if (oneway && b->oneway >= b->oneway_quota)
		return -EAGAIN;
	return 0;
}

static bool popup_queue_room(struct popup_service *svc, struct popup_binding *b)
{
	return READ_ONCE(svc->dead) || !READ_ONCE(b->client) ||
	       READ_ONCE(svc->nidle) ||
	       READ_ONCE(svc->nqueued) < READ_ONCE(svc->pool.queue_limit);
}

static bool popup_ctx_settled(struct popup_ctx *ctx)
{
	int state = READ_ONCE(ctx->state);

	return state == POPUP_CTX_DONE || state == POPUP_CTX_ABORTED;
}

static struct popup_ctx *popup_ctx_new(struct popup_binding *b,
				       const struct popup_method_k *m,
				       const struct popup_call *call,
				       bool oneway)
{
	struct popup_ctx *ctx;

	ctx = popup_ctx_alloc(GFP_KERNEL);	/* the service side */
	if (!ctx)
		return NULL;
	if (!oneway)
		kref_get(&ctx->refs);		/* the caller */
	ctx->binding = b;
	ctx->method = m;
	ctx->slot = call->slot;
	ctx->arg_len = call->arg_len;
	ctx->flags = oneway ? POPUP_CTX_ONEWAY : 0;
	ctx->prio = current->prio;
	ctx->cpu = raw_smp_processor_id();
	ctx->tgid = get_pid(task_tgid(current));
	ctx->tid = get_pid(task_pid(current));
	ctx->uid = current_euid();
	ctx->gid = current_egid();
	return ctx;
}

/*
 * Is a thread of @svc running on @cpu, having taken a context there
 * and not gone idle since? It takes what arrives on @cpu at its next
 * REPLY_WAIT, without a wake-up, the way a concurrency-managed workqueue
 * keeps one running worker per CPU. A runner that blocked (in its
 * handler, say) is not busy: work then goes to other threads.
 */
bool popup_runner_busy_locked(struct popup_service *svc, int cpu)
{
	struct task_struct *r = svc->cpus[cpu].runner;

	lockdep_assert_held(&svc->lock);
	return r && task_is_running(r) && task_cpu(r) == cpu;
}

/* Thread @task took a context on @cpu, or is woken there with one. */
static void popup_runner_set_locked(struct popup_service *svc, int cpu,
				    struct task_struct *task)
{
	struct task_struct *old = svc->cpus[cpu].runner;

	lockdep_assert_held(&svc->lock);
	if (old == task)
		return;
	svc->cpus[cpu].runner = get_task_struct(task);
	if (old)
		put_task_struct(old);
}

/* The calling thread took a context: it runs on this CPU now. */
static void popup_runner_self_locked(struct popup_service *svc)
{
	popup_runner_set_locked(svc, raw_smp_processor_id(), current);
}

/* The calling thread goes idle (or leaves) on @cpu: it runs no more. */
static void popup_runner_clear_locked(struct popup_service *svc, int cpu)
{
	lockdep_assert_held(&svc->lock);
	if (svc->cpus[cpu].runner != current)
		return;
	svc->cpus[cpu].runner = NULL;
	put_task_struct(current);	/* we run: never the last reference */
}

/*
 * The calling thread, waiting as @wt, stops running: it may be the runner
 * of the CPU it waits on and, if migrated meanwhile, of the one it is on.
 */
static void popup_runner_leave_locked(struct popup_service *svc,
				      const struct popup_waiter *wt)
{
	popup_runner_clear_locked(svc, wt->cpu);
	popup_runner_clear_locked(svc, raw_smp_processor_id());
}

/*
 * Burst wake-ups. A handler thread is lean: it sleeps after nearly every
 * request, so CFS places it behind the thread that queued the next one,
 * and its wake-up preempts that thread at once (check_preempt_wakeup).
 * A client that keeps several requests in flight on the CPU then pays two
 * context switches per request, where an epoll worker, which stays
 * runnable, drains a batch per wake-up. A SCHED_BATCH task's wake-up
 * preempts no one: a thread that sleeps as one runs when the CPU's current
 * task blocks or its slice ends, and finds the burst queued for it (it is
 * the runner from its hand-off on).
 *
 * That delays the answer a client waits for alone (ping-pong), and gains
 * nothing where the runner takes bursts already (TCP, whose arrivals mostly
 * queue behind it), so each CPU of a service measures: a normal phase of
 * POPUP_BURST_PROBE sleeps gives the contexts taken per sleep there, then
 * its threads sleep as SCHED_BATCH while each window of POPUP_BURST_WINDOW
 * sleeps takes at least twice that (and over 1.5 per sleep). After
 * POPUP_BURST_RUN sleeps a burst phase that paid gives way to a short normal
 * phase (POPUP_BURST_RECHECK sleeps), to measure again.
 *
 * The policy is changed around the sleep only, and only from SCHED_NORMAL:
 * handlers run, and userspace sees, the policy the thread had. The
 * batch_wakeups parameter turns it off (to measure without it).
 */
#define POPUP_BURST_PROBE	256
#define POPUP_BURST_RECHECK	32
#define POPUP_BURST_WINDOW	8
#define POPUP_BURST_RUN		512

static bool batch_wakeups = true;
module_param(batch_wakeups, bool, 0644);
MODULE_PARM_DESC(batch_wakeups,
		 "Let handler threads sleep as SCHED_BATCH on a CPU whose requests come in bursts (default: on)");

/* A thread waiting as @wt took a context. */
static void popup_took_locked(struct popup_service *svc,
			      const struct popup_waiter *wt)
{
	popup_runner_self_locked(svc);
	svc->cpus[wt->cpu].burst.sum++;
}

static void popup_burst_phase(struct popup_burst *bu, bool on)
{
	bu->on = on;
	bu->sleeps = 0;
	bu->sum = 0;
}

/* A burst window ended: does sleeping as SCHED_BATCH pay? */
static bool popup_burst_pays(const struct popup_burst *bu)
{
	u64 need = max_t(u64, 2 * (u64)bu->navg, 24);	/* in 16ths */

	return bu->sum * 16 >= need * POPUP_BURST_WINDOW;
}

/* A thread goes to sleep on @cpu: as SCHED_BATCH? */
static bool popup_burst_sleep_locked(struct popup_service *svc, int cpu)
{
	struct popup_burst *bu = &svc->cpus[cpu].burst;

	lockdep_assert_held(&svc->lock);
	bu->sleeps++;
	if (!READ_ONCE(batch_wakeups)) {
		popup_burst_phase(bu, false);	/* a fresh probe once back on */
		return false;
	}
	if (!bu->on) {
		if (bu->sleeps < (bu->won ? POPUP_BURST_RECHECK :
					    POPUP_BURST_PROBE))
			return false;
		bu->navg = min_t(u64, div_u64(bu->sum * 16, bu->sleeps),
				 U32_MAX);
		popup_burst_phase(bu, true);
		popup_stat_inc(POPUP_STAT_BURST_PROBES);
		return true;
	}
	if (bu->sleeps % POPUP_BURST_WINDOW)
		return true;
	bu->won = popup_burst_pays(bu);
	if (!bu->won || bu->sleeps >= POPUP_BURST_RUN)
		popup_burst_phase(bu, false);
	else
		bu->sum = 0;
	return bu->on;
}

/*
 * Switch the calling thread from policy @from to @to, keeping its nice
 * value and reset-on-fork flag; false if its policy was not @from (the
 * user set another, which we leave alone) or the switch failed.
 */
static bool popup_burst_policy(int from, int to)
{
	struct sched_attr attr = {
		.size = sizeof(attr),
		.sched_policy = to,
		.sched_nice = task_nice(current),
	};

	if (current->policy != from)
		return false;
	if (current->sched_reset_on_fork)
		attr.sched_flags = SCHED_FLAG_RESET_ON_FORK;
	return !sched_setattr_nocheck(current, &attr);
}

/*
 * Will a thread of @svc take what arrives on @cpu without a kick: its
 * runner runs, or a thread is on its way back from a reply there?
 */
static bool popup_cpu_served_locked(struct popup_service *svc, int cpu)
{
	return popup_runner_busy_locked(svc, cpu) ||
	       popup_replying_on_locked(svc, cpu);
}

/*
 * Give @ctx to waiter @w, or queue it; account the slot. A caller that
 * passes @wake (the arrival callbacks, in softirq) gets @w's thread there,
 * with a reference, to wake with popup_wake_task() once svc->lock is
 * dropped: the wake-up is the longest part of a hand-off, and the other
 * CPUs' arrivals and replies wait for this lock. Calls wake the waiter
 * here, with the synchronous hint, as the caller is about to sleep.
 */
void popup_call_start_locked(struct popup_service *svc, struct popup_ctx *ctx,
			     struct popup_waiter *w, struct task_struct **wake)
{
	struct popup_binding *b = ctx->binding;

	lockdep_assert_held(&svc->lock);
	b->busy |= BIT_ULL(ctx->slot);
	b->slot_ctx[ctx->slot] = ctx;
	b->gen++;
	ctx->id = ((u64)b->id << 32) | ((u64)(b->gen & 0x3ffffff) << 6) |
		  ctx->slot;
	b->active++;
	if (ctx->flags & POPUP_CTX_ONEWAY)
		b->oneway++;
	svc->calls++;

	if (w) {
		list_del_init(&w->node);
		if (svc->nidle-- <= svc->pool.min_idle + 1)
			svc->spare_since = jiffies;
		w->ctx = ctx;
		w->kicked = true;
		ctx->waiter = w;
		popup_runner_set_locked(svc, w->cpu, w->task);
		ctx->state = POPUP_CTX_HANDED;
		list_add_tail(&ctx->node, &svc->running);
		popup_stat_inc(POPUP_STAT_HANDOFFS);
		if (wake)
			*wake = get_task_struct(w->task);
		else if (ctx->flags & POPUP_CTX_ONEWAY)
			wake_up_interruptible(&w->wq);
		else
			wake_up_interruptible_sync(&w->wq);
	} else {
		ctx->state = POPUP_CTX_QUEUED;
		popup_queue_insert_locked(svc, ctx);
		svc->nqueued++;
		popup_stat_inc(POPUP_STAT_QUEUED);
	}
	popup_pool_update_locked(svc);
}

/*
 * Wake @task, the thread of a waiter handed a context under svc->lock,
 * and drop the reference popup_call_start_locked() took. A signal or its
 * timeout may have woken the thread first (it still takes the context, as
 * it relocks before leaving): this wake-up is then a spurious one wherever
 * it sleeps next, which every sleeper tolerates (as with wake_q).
 */
void popup_wake_task(struct task_struct *task)
{
	wake_up_process(task);
	put_task_struct(task);
}

int popup_ioctl_call(struct popup_proc *proc, struct popup_call *call)
{
	const u32 known = POPUP_CALL_ONEWAY | POPUP_CALL_BLOCK;
	const struct popup_method_k *m;
	struct popup_service *svc;
	struct popup_binding *b;
	struct popup_waiter *w;
	struct popup_ctx *ctx;
	LIST_HEAD(puts);
	bool oneway;
	long left;
	int ret;

	if ((call->flags & ~known) || call->reserved0 || call->reserved[0] ||
	    call->reserved[1])
		return -EINVAL;
	b = popup_binding_get(call->binding_id);
	if (!b)
		return -ENOENT;
	svc = b->svc;
	m = popup_method_find(svc, call->method);
	ret = -EOPNOTSUPP;
	if (!m)
		goto out_put;
	ret = -EINVAL;
	if (call->slot >= b->nslots || call->arg_len > m->max_arg)
		goto out_put;
	oneway = (call->flags & POPUP_CALL_ONEWAY) ||
		 (m->flags & POPUP_METHOD_ONEWAY);
	ret = -ENOMEM;
	ctx = popup_ctx_new(b, m, call, oneway);
	if (!ctx)
		goto out_put;

	left = call->timeout_ms ? (long)msecs_to_jiffies(call->timeout_ms) :
	       MAX_SCHEDULE_TIMEOUT;
	spin_lock_bh(&svc->lock);
	for (;;) {
		ret = popup_call_check_locked(proc, b, call, oneway);
		if (ret)
			break;
		w = popup_pick_waiter_locked(svc, ctx->cpu);
		if (w || svc->nqueued < svc->pool.queue_limit)
			break;
		popup_pool_update_locked(svc);
		ret = -EAGAIN;
		if (!(call->flags & POPUP_CALL_BLOCK))
			break;
		spin_unlock_bh(&svc->lock);
		left = wait_event_interruptible_timeout(svc->space_wq,
							popup_queue_room(svc, b),
							left);
		spin_lock_bh(&svc->lock);
		if (left < 0) {
			ret = -EINTR;
			break;
		}
		if (!left) {
			ret = -ETIMEDOUT;
			break;
		}
	}
	if (ret) {
		spin_unlock_bh(&svc->lock);
		popup_ctx_release(&ctx->refs);	/* never published */
		goto out_put;
	}
	popup_call_start_locked(svc, ctx, w, NULL);
	spin_unlock_bh(&svc->lock);
	popup_stat_inc(POPUP_STAT_CALLS);

	call->status = 0;
	call->result_len = 0;
	if (oneway) {
		popup_stat_inc(POPUP_STAT_ONEWAY);
		goto out_put;
	}

	left = wait_event_interruptible_timeout(ctx->wq, popup_ctx_settled(ctx),
						left);
	spin_lock_bh(&svc->lock);
	switch (ctx->state) {
	case POPUP_CTX_DONE:
		call->status = ctx->status;
		call->result_len = ctx->result_len;
		ret = 0;
		break;
	case POPUP_CTX_ABORTED:
		ret = -ECONNRESET;
		break;
	case POPUP_CTX_QUEUED:
	case POPUP_CTX_HANDED:
		/* No handler saw it: take it back. */
		svc->errors++;
		popup_ctx_finish_locked(svc, ctx, POPUP_CTX_ABORTED, &puts);
		ret = left ? -EINTR : -ETIMEDOUT;
		break;
	default:
		/* A handler runs it: abandon it; REPLY discards it. */
		svc->errors++;
		WRITE_ONCE(ctx->state, POPUP_CTX_CANCELLED);
		ret = left ? -ECANCELED : -ETIME;
		break;
	}
	spin_unlock_bh(&svc->lock);
	if (ret == -ETIMEDOUT || ret == -ETIME)
		popup_stat_inc(POPUP_STAT_TIMEOUTS);
	else if (ret)
		popup_stat_inc(POPUP_STAT_CANCELS);
	popup_binding_put_list(&puts);
	popup_ctx_put(ctx);
out_put:
	popup_binding_put(b);
	return ret;
}

/*
 * The binding of the context @r answers, referenced; ERR_PTR(-EINVAL) for
 * flags or reserved bits set, ERR_PTR(-ENOENT) for no such binding.
 */
static struct popup_binding *popup_reply_binding(const struct popup_reply *r)
{
	struct popup_binding *b;

	if (r->flags || r->reserved0)
		return ERR_PTR(-EINVAL);
	b = popup_binding_get(r->ctx_id >> 32);
	return b ?: ERR_PTR(-ENOENT);
}

/*
 * Answer the context @r->ctx_id of binding @b; see struct popup_reply.
 * Called and returns with b->svc->lock held; it is dropped around a
 * datagram's send. @wt: the caller is REPLY_WAIT and waits on @wsvc as
 * @wt right after. Before it sends a datagram reply of @wsvc, or
 * completes a call of @wsvc, it goes on svc->replying, where the WAIT
 * takes it off under the same lock hold that makes it idle: an arrival on
 * its CPU in between (the client's next request, typically) waits for it
 * in the queue rather than going to a thread on another CPU or making the
 * pool spawn one. ENOENT and EINVAL: nothing was done.
 */
static int popup_reply_locked(struct popup_proc *proc, struct popup_binding *b,
			      const struct popup_reply *r,
			      struct popup_waiter *wt,
			      struct popup_service *wsvc,
			      struct list_head *puts)
{
	u32 slot = r->ctx_id & (POPUP_MAX_SLOTS - 1);
	struct popup_service *svc = b->svc;
	struct popup_ctx *ctx = NULL;
	int ret;

	lockdep_assert_held(&svc->lock);
	if (!svc->dead && svc->owner == proc && slot < b->nslots)
		ctx = b->slot_ctx[slot];
	if (!ctx || ctx->id != r->ctx_id ||
	    (ctx->state != POPUP_CTX_ACTIVE &&
	     ctx->state != POPUP_CTX_CANCELLED))
		return -ENOENT;
	if (r->result_len > ctx->method->max_res)
		return -EINVAL;
	if (ctx->state == POPUP_CTX_CANCELLED) {
		popup_ctx_finish_locked(svc, ctx, POPUP_CTX_CANCELLED, puts);
		return -ECANCELED;
	}
	ctx->status = r->status;
	ctx->result_len = r->result_len;
	/*
	 * Idle in a moment: the caller's next call (or the peer's next
	 * datagram), made before we are back in the idle list, waits for us
	 * in the queue instead of asking for a thread the idle timeout
	 * retires.
	 */
	if (wt && svc == wsvc) {
		list_add(&wt->node, &svc->replying);
		svc->nreplying++;
	}
	ret = 0;
	if (ctx->psock) {
		/* Ours until finished: withdrawal leaves a SEND context be. */
		list_del_init(&ctx->node);
		ctx->state = POPUP_CTX_SEND;
		spin_unlock_bh(&svc->lock);
		ret = popup_dgram_send(ctx, r->result_len);
		spin_lock_bh(&svc->lock);
		popup_arrival_replied(ctx);
	}
	popup_ctx_finish_locked(svc, ctx, POPUP_CTX_DONE, puts);
	if (!ret)
		popup_stat_inc(POPUP_STAT_REPLIES);
	return ret;
}

int popup_ioctl_reply(struct popup_proc *proc, const struct popup_reply *r)
{
	struct popup_binding *b;
	LIST_HEAD(puts);
	int ret;

	b = popup_reply_binding(r);
	if (IS_ERR(b))
		return PTR_ERR(b);
	spin_lock_bh(&b->svc->lock);
	ret = popup_reply_locked(proc, b, r, NULL, NULL, &puts);
	spin_unlock_bh(&b->svc->lock);
	popup_binding_put_list(&puts);
	popup_binding_put(b);
	return ret;
}

/* Describe @ctx for the handler, in the handler's namespaces. */
static void popup_ctx_fill_locked(struct popup_service *svc,
				  struct popup_ctx *ctx,
				  struct popup_context *c)
{
	struct popup_binding *b = ctx->binding;
	struct user_namespace *uns;
	struct pid_namespace *pns;

	lockdep_assert_held(&svc->lock);
	c->ctx_id = ctx->id;
	c->service_id = svc->id;
	c->method = ctx->method->id;
	c->binding_id = b->id;
	c->slot = ctx->slot;
	c->arg_len = ctx->arg_len;
	c->flags = ctx->flags | (b->server_maps ? 0 : POPUP_CTX_MAP);
	c->max_res = ctx->method->max_res;
	c->slot_offset = (u64)ctx->slot * b->slot_size;
	c->map_offset = (u64)b->id << PAGE_SHIFT;
	c->map_size = b->map_size;
	c->priority = ctx->prio;
	c->cpu = ctx->cpu;
	if (ctx->psock) {		/* a network peer, not a process */
		popup_dgram_fill_context(ctx, c);
		return;
	}
	pns = task_active_pid_ns(current);
	uns = current_user_ns();
	c->pid = pid_nr_ns(ctx->tgid, pns);
	c->tid = pid_nr_ns(ctx->tid, pns);
	c->uid = from_kuid_munged(uns, ctx->uid);
	c->gid = from_kgid_munged(uns, ctx->gid);
}

/* The POPUP_WAIT_KIND_* that delivers @ctx. */
static u32 popup_ctx_kind(const struct popup_ctx *ctx)
{
	if (!ctx->psock)
		return POPUP_WAIT_KIND_CALL;
	switch (ctx->psock->kind) {
	case POPUP_SOCK_LISTEN:
		return POPUP_WAIT_KIND_CONN;
	case POPUP_SOCK_CONN:
		return POPUP_WAIT_KIND_STREAM;
	default:
		return POPUP_WAIT_KIND_DGRAM;
	}
}

/*
 * @ctx, QUEUED or HANDED, goes to the calling handler thread. A datagram is
 * first copied into its slot, with svc->lock dropped: returns false if it
 * did not survive that (bad checksum, service withdrawn meanwhile), and
 * the caller looks for work again.
 */
static bool popup_ctx_deliver_locked(struct popup_service *svc,
				     struct popup_ctx *ctx,
				     struct popup_wait *w,
				     struct list_head *puts)
{
	int err;

	lockdep_assert_held(&svc->lock);
	if (ctx->state == POPUP_CTX_QUEUED) {
		svc->nqueued--;
		popup_space_wake(svc);
		list_move_tail(&ctx->node, &svc->running);
	}
	if (ctx->waiter) {
		ctx->waiter->ctx = NULL;
		ctx->waiter = NULL;
	}
	/* A datagram is in its slot already; a TCP arrival is not. */
	if (ctx->psock && !ctx->embedded) {
		list_del_init(&ctx->node);
		ctx->state = POPUP_CTX_FILL;
		spin_unlock_bh(&svc->lock);
		err = popup_arrival_fill(ctx);
		spin_lock_bh(&svc->lock);
		if (svc->dead) {
			popup_dgram_abort_locked(svc, ctx, POPUP_WIRE_BUSY, puts);
			return false;
		}
		if (err) {
			popup_arrival_replied(ctx);
			popup_ctx_finish_locked(svc, ctx, POPUP_CTX_ABORTED, puts);
			return false;
		}
		list_add_tail(&ctx->node, &svc->running);
	}
	ctx->state = POPUP_CTX_ACTIVE;
	w->kind = popup_ctx_kind(ctx);
	popup_ctx_fill_locked(svc, ctx, &w->ctx);
	/* A connection handed over as a descriptor needs no reply. */
	if (w->kind == POPUP_WAIT_KIND_CONN)
		popup_ctx_finish_locked(svc, ctx, POPUP_CTX_DONE, puts);
	return true;
}

/* Is a thread of @svc sending a datagram reply on @cpu, to wait next? */
bool popup_replying_on_locked(struct popup_service *svc, int cpu)
{
	struct popup_waiter *w;

	lockdep_assert_held(&svc->lock);
	list_for_each_entry(w, &svc->replying, node)
		if (w->cpu == cpu)
			return true;
	return false;
}

/*
 * Is something queued that no thread will take without a kick: a call, or
 * an arrival whose CPU has no running runner and no thread on its way
 * back from a reply? (The first POPUP_AFFINITY_SCAN entries are looked at.)
 */
static bool popup_queue_stranded_locked(struct popup_service *svc)
{
	struct popup_ctx *ctx;
	int n = 0;

	lockdep_assert_held(&svc->lock);
	list_for_each_entry(ctx, &svc->queue, node) {
		if (!ctx->psock || ++n > POPUP_AFFINITY_SCAN)
			return true;
		if (!popup_cpu_served_locked(svc, ctx->cpu))
			return true;
	}
	return false;
}

/*
 * The queued context a thread waiting on @cpu takes, NULL for none. Calls
 * go strictly by priority, then arrival. Among datagrams of the head's
 * priority (the first POPUP_AFFINITY_SCAN), one that arrived on @cpu comes
 * first; one whose CPU has a thread in svc->replying is left to it (it
 * was queued for it, see popup_udp_arrive()). NULL only when every
 * candidate is left to such a thread: the caller goes idle, and is kicked
 * (popup_queue_kick_locked) if that thread leaves work behind.
 */
static struct popup_ctx *popup_queue_pick_locked(struct popup_service *svc,
						 int cpu)
{
	struct popup_ctx *head, *ctx, *first = NULL;
	int n = 0;

	lockdep_assert_held(&svc->lock);
	head = list_first_entry(&svc->queue, struct popup_ctx, node);
	if (!head->psock)
		return head;
	list_for_each_entry(ctx, &svc->queue, node) {
		if (++n > POPUP_AFFINITY_SCAN)
			break;
		if (!ctx->psock || ctx->prio != head->prio)
			return first ?: ctx;
		if (ctx->cpu == cpu)
			return ctx;
		if (!first && !popup_cpu_served_locked(svc, ctx->cpu))
			first = ctx;
	}
	return first;
}

/* Work is queued that the caller leaves: have an idle thread look at it. */
static void popup_queue_kick_locked(struct popup_service *svc)
{
	struct popup_waiter *w;

	lockdep_assert_held(&svc->lock);
	if (!popup_queue_stranded_locked(svc))
		return;
	w = list_first_entry_or_null(&svc->idle, struct popup_waiter, node);
	if (w && !w->kicked) {
		w->kicked = true;
		wake_up_interruptible(&w->wq);
	}
}

/*
 * The watch (svc->watch, soft hrtimer, POPUP_WATCH_NS): arrivals queued
 * for a CPU's runner count on it to take them, but a handler may block
 * after they queued, with no new arrival to notice. While anything is
 * queued for a runner the watch looks again every POPUP_WATCH_NS, and
 * what it finds stranded goes to an idle thread, or to a new one. It
 * holds a service reference while armed; withdrawal cancels it.
 */
#define POPUP_WATCH_NS	(1 * NSEC_PER_MSEC)

void popup_watch_arm_locked(struct popup_service *svc)
{
	lockdep_assert_held(&svc->lock);
	if (svc->watching || svc->dead)
		return;
	svc->watching = true;
	kref_get(&svc->refs);
	hrtimer_start(&svc->watch, ns_to_ktime(POPUP_WATCH_NS),
		      HRTIMER_MODE_REL_SOFT);
}

/* Soft hrtimer: softirq context, bottom halves off already. */
static enum hrtimer_restart popup_watch_fire(struct hrtimer *t)
{
	struct popup_service *svc = container_of(t, struct popup_service,
						 watch);
	bool again = false;

	spin_lock(&svc->lock);
	if (!svc->dead && !list_empty(&svc->queue)) {
		if (popup_queue_stranded_locked(svc)) {
			popup_arr_inc(POPUP_ARR_RESCUED);
			popup_queue_kick_locked(svc);
			popup_pool_update_locked(svc);
		}
		again = true;
	}
	svc->watching = again;
	spin_unlock(&svc->lock);
	if (again) {
		hrtimer_forward_now(t, ns_to_ktime(POPUP_WATCH_NS));
		return HRTIMER_RESTART;	/* keeps the reference */
	}
	popup_service_put(svc);
	return HRTIMER_NORESTART;
}

void popup_watch_init(struct popup_service *svc)
{
	hrtimer_init(&svc->watch, CLOCK_MONOTONIC, HRTIMER_MODE_REL_SOFT);
	svc->watch.function = popup_watch_fire;
}

/* Withdrawal, svc->dead set: no watch runs or starts after this. */
void popup_watch_stop(struct popup_service *svc)
{
	if (hrtimer_cancel(&svc->watch))
		popup_service_put(svc);
}

/*
 * May a pool thread whose idle timeout passed retire? Only if the pool had
 * a thread to spare (more than min_idle idle) for a whole idle period: a
 * steady caller briefly takes the idle count down to the minimum on every
 * call, and retiring the spare then would only have it spawned again.
 */
static bool popup_pool_spare_locked(struct popup_service *svc)
{
	lockdep_assert_held(&svc->lock);
	return svc->nidle >= svc->pool.min_idle &&
	       time_after_eq(jiffies, svc->spare_since +
			     msecs_to_jiffies(svc->pool.idle_timeout_ms));
}

static long popup_idle_timeout(struct popup_service *svc, bool pool)
{
	if (!pool || !svc->pool.idle_timeout_ms)
		return MAX_SCHEDULE_TIMEOUT;
	return msecs_to_jiffies(svc->pool.idle_timeout_ms);
}

int popup_ioctl_wait(struct popup_proc *proc, struct popup_wait *w,
		     bool reply)
{
	const u32 known = POPUP_WAIT_NEW | POPUP_WAIT_POOL |
			  POPUP_WAIT_CONTROL | POPUP_WAIT_NONBLOCK;
	const struct popup_reply *r = &w->reply;
	struct popup_binding *rb = NULL;
	struct popup_service *svc;
	struct popup_waiter wt;
	bool control, pool, timed_out = false;
	LIST_HEAD(puts);
	int ret;

	if ((w->flags & ~known) || w->reserved[0] || w->reserved[1])
		return -EINVAL;
	control = w->flags & POPUP_WAIT_CONTROL;
	pool = w->flags & (POPUP_WAIT_NEW | POPUP_WAIT_POOL);
	if (control && pool)
		return -EINVAL;
	if (!reply && (r->ctx_id || r->status || r->result_len || r->flags ||
		       r->reserved0))
		return -EINVAL;
	svc = popup_service_get_owned(proc, w->service_id);
	if (IS_ERR(svc))
		return PTR_ERR(svc);

	memset(&wt, 0, sizeof(wt));
	INIT_LIST_HEAD(&wt.node);
	init_waitqueue_head(&wt.wq);
	wt.files = current->files;
	wt.cpu = raw_smp_processor_id();
	wt.flags = w->flags;
	wt.task = current;

	w->reply_result = 0;
	w->kind = 0;
	w->spawn = 0;
	memset(&w->ctx, 0, sizeof(w->ctx));
	if (reply) {
		/* ENOENT and EINVAL: nothing done. Else the reply is gone. */
		rb = popup_reply_binding(r);
		if (IS_ERR(rb)) {
			ret = PTR_ERR(rb);
			goto out_put;
		}
		spin_lock_bh(&rb->svc->lock);
		ret = popup_reply_locked(proc, rb, r, control ? NULL : &wt, svc,
					 &puts);
		if (ret == -ENOENT || ret == -EINVAL || rb->svc != svc) {
			/* Refused, or another service's: go on unlocked. */
			spin_unlock_bh(&rb->svc->lock);
			popup_binding_put_list(&puts);
			popup_binding_put(rb);
			rb = NULL;
			if (ret == -ENOENT || ret == -EINVAL)
				goto out_put;
			spin_lock_bh(&svc->lock);
		}
		w->reply_result = ret;
	} else {
		spin_lock_bh(&svc->lock);
	}
	/* Held since the reply if it was ours: no window to go idle in. */
	if (!list_empty(&wt.node)) {	/* off svc->replying: popup_reply() */
		list_del_init(&wt.node);
		svc->nreplying--;
	}
	if (svc->dead) {
		ret = -ENOENT;
		goto out_unlock;
	}
	if (w->flags & POPUP_WAIT_NEW) {
		if (svc->spawn_exp)
			svc->spawn_exp--;
		/* max_threads is a hard cap, whoever started the thread. */
		if (svc->nthreads >= svc->pool.max_threads) {
			w->kind = POPUP_WAIT_KIND_RETIRE;
			popup_stat_inc(POPUP_STAT_RETIRES);
			ret = 0;
			goto out_unlock;
		}
		svc->nthreads++;
	}
	for (;;) {
		bool notices = control || list_empty(&svc->control);
		long left, tmo;
		bool batch;

		ret = 0;
		if (wt.ctx) {
			if (popup_ctx_deliver_locked(svc, wt.ctx, w, &puts)) {
				popup_took_locked(svc, &wt);
				break;
			}
			continue;
		}
		ret = -ENOENT;
		if (svc->dead)
			break;
		ret = -EBADF;
		if (wt.closed)
			break;
		ret = 0;
		if (notices && !list_empty(&svc->notices)) {
			struct popup_binding *b;

			b = list_first_entry(&svc->notices,
					     struct popup_binding, notice_node);
			b->noticed = false;
			list_move_tail(&b->notice_node, &puts);
			w->kind = POPUP_WAIT_KIND_UNMAP;
			w->ctx.binding_id = b->id;
			w->ctx.map_offset = (u64)b->id << PAGE_SHIFT;
			w->ctx.map_size = b->map_size;
			popup_stat_inc(POPUP_STAT_UNMAPS);
			break;
		}
		if (!control && !list_empty(&svc->queue)) {
			struct popup_ctx *next;
			bool got;

			next = popup_queue_pick_locked(svc, wt.cpu);
			if (next) {
				got = popup_ctx_deliver_locked(svc, next, w,
							       &puts);
				if (got)
					popup_took_locked(svc, &wt);
				popup_pool_update_locked(svc);
				popup_queue_kick_locked(svc);
				if (got)
					break;
				continue;
			}
		}
		if (notices && svc->spawn_req) {
			w->kind = POPUP_WAIT_KIND_SPAWN;
			break;
		}
		if (pool && (svc->nidle >= svc->pool.max_idle ||
			     (timed_out && popup_pool_spare_locked(svc)))) {
			/*
			 * Without us the pool may be at its edge: the next
			 * spare, if any, waits a whole period of its own.
			 */
			if (svc->nidle <= svc->pool.min_idle + 1)
				svc->spare_since = jiffies;
			w->kind = POPUP_WAIT_KIND_RETIRE;
			if (svc->nthreads)
				svc->nthreads--;
			popup_stat_inc(POPUP_STAT_RETIRES);
			popup_pool_update_locked(svc);
			break;
		}
		ret = -EAGAIN;
		if (w->flags & POPUP_WAIT_NONBLOCK)
			break;

		tmo = popup_idle_timeout(svc, pool);
		wt.kicked = false;
		popup_runner_leave_locked(svc, &wt);
		batch = false;
		if (control) {
			list_add(&wt.node, &svc->control);
		} else {
			list_add(&wt.node, &svc->idle);
			svc->nidle++;
			batch = popup_burst_sleep_locked(svc, wt.cpu);
		}
		spin_unlock_bh(&svc->lock);
		batch = batch && popup_burst_policy(SCHED_NORMAL, SCHED_BATCH);
		left = wait_event_interruptible_timeout(wt.wq,
							READ_ONCE(wt.kicked),
							tmo);
		if (batch) {
			popup_burst_policy(SCHED_BATCH, SCHED_NORMAL);
			popup_stat_inc(POPUP_STAT_BURST_WAITS);
		}
		spin_lock_bh(&svc->lock);
		if (!list_empty(&wt.node)) {
			list_del_init(&wt.node);
			if (!control)
				svc->nidle--;
		}
		timed_out = !left;
		if (wt.ctx)
			continue;
		ret = -EINTR;
		if (left < 0)
			break;
	}
	if (!ret && w->kind != POPUP_WAIT_KIND_RETIRE &&
	    (control || list_empty(&svc->control))) {
		w->spawn = svc->spawn_req;
		svc->spawn_req = 0;
	}
	/* Leaving without work: what was queued for us goes to another. */
	if (w->kind != POPUP_WAIT_KIND_CALL &&
	    w->kind != POPUP_WAIT_KIND_DGRAM &&
	    w->kind != POPUP_WAIT_KIND_CONN &&
	    w->kind != POPUP_WAIT_KIND_STREAM) {
		popup_runner_leave_locked(svc, &wt);
		popup_queue_kick_locked(svc);
	}
out_unlock:
	spin_unlock_bh(&svc->lock);
	popup_binding_put_list(&puts);
	if (rb)
		popup_binding_put(rb);
out_put:
	popup_service_put(svc);
	return ret;
}

int popup_ioctl_thread_exit(struct popup_proc *proc,
			    const struct popup_target *t)
{
	struct popup_service *svc;
	int ret = 0;

	if (t->flags || t->reserved)
		return -EINVAL;
	svc = popup_service_get_owned(proc, t->id);
	if (IS_ERR(svc))
		return PTR_ERR(svc);
	spin_lock_bh(&svc->lock);
	if (svc->dead) {
		ret = -ENOENT;
	} else if (!svc->nthreads) {
		ret = -EINVAL;
	} else {
		svc->nthreads--;
		popup_pool_update_locked(svc);
	}
	spin_unlock_bh(&svc->lock);
	popup_service_put(svc);
	return ret;
}
