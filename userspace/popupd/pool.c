// SPDX-License-Identifier: GPL-2.0
/*
 * Jobs and handler pools: where handlers that may block run.
 *
 * A pool is a bounded queue in front of a set of handler threads. It runs
 * one of the dispatch models of service.h:
 *  - popup (POOL, and POOL_PERCPU per CPU): pop-up threads: a job is
 *    queued, and when no thread is idle to take it and the pool is below
 *    max_threads, one more thread is created for it; threads idle past
 *    the idle timeout retire down to min_threads;
 *  - pool (FIXED): the same with min_threads = max_threads, all started
 *    with the pool, so it neither grows nor shrinks;
 *  - per-connection and per-object (PER_CONN, PER_OBJECT): max_threads
 *    lanes, each a queue of its own served by at most one thread (started
 *    on demand, retiring when idle), so the jobs of one lane run one at a
 *    time. The caller picks the lane (worker.c: the connection's bound
 *    lane, or the object key's hash); pool_bind()/pool_unbind() hand
 *    lanes to connections.
 * Past queue_limit (for lanes: per lane) a submission fails with -EBUSY
 * and the caller answers "busy" right away: overload is an explicit
 * reply, never a silent drop and never unbounded memory.
 *
 * Priorities: each queue is a FIFO per priority level
 * (POPUP_SVC_PRIO_MIN..MAX) and a dequeue takes the head of the highest
 * non-empty level, so higher priorities go first and equal ones in
 * arrival order. Aging, so that lower ones never starve: the oldest job
 * in the queue (the smallest sequence number among the level heads) is
 * passed over at most AGE_SKIPS times in a row; the next dequeue takes
 * it. A job therefore waits at most AGE_SKIPS + 1 dequeues for each job
 * queued before it, whatever keeps arriving above it; with one priority
 * in use the queue is plain FIFO.
 *
 * Deadlines are enforced on both sides of a handler: a job whose deadline
 * passed while it was queued is answered "timeout" without running (its
 * caller has likely given up; running it would only add load), and a
 * handler that overruns has its result replaced by "timeout".
 *
 * Threads are joinable and live in a fixed table of slots (a lane's
 * thread in the lane's slot), so destroying a pool joins every thread it
 * ever started; a retired thread's slot is joined and reused by the next
 * spawn.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpus.h"
#include "log.h"
#include "popupd.h"

#define POOL_SLOTS 1024
#define NPRIO (POPUP_SVC_PRIO_MAX - POPUP_SVC_PRIO_MIN + 1)
#define AGE_SKIPS 8

_Static_assert(NPRIO <= 64, "priority levels must fit the bitmap");

enum slot_state { SLOT_FREE, SLOT_LIVE, SLOT_EXITED };

/* One queue and the threads that serve it; all under the pool's lock. */
struct lane {
	struct job *bh[NPRIO], *bt[NPRIO];	/* FIFO per priority level */
	uint64_t bits;			/* non-empty levels */
	uint32_t queued, skips;		/* skips: oldest passed over */
	uint32_t threads, idle;
	bool bound;			/* PER_CONN: a connection holds it */
	pthread_cond_t cond;		/* jobs queued, or stopping */
};

struct pool {
	struct svc *svc;
	int cpu;			/* pin threads here; -1: anywhere */
	bool laned;			/* PER_CONN/PER_OBJECT */
	bool keep_bound;		/* PER_CONN: bound lanes keep their thread */
	pthread_mutex_t lock;		/* protects everything below */
	struct lane *lanes;		/* 1, or nr_lanes when laned */
	uint32_t nr_lanes;
	struct popup_svc_pool cfg;
	uint32_t queued, threads, idle, busy, max_seen;
	uint64_t spawned, retired, seq;
	bool stopping;
	pthread_t tids[POOL_SLOTS];
	unsigned char state[POOL_SLOTS];
};

struct job *job_new(uint32_t req_len, uint32_t res_cap)
{
	struct job *j;

	/* One allocation: the job, then the request, then the result.
	 * Only the job itself is cleared: the request is copied in and the
	 * handler writes the result, and clearing the buffers (max_res
	 * bytes, 64 KiB and more) cost more than the rest of a small
	 * request and flushed the CPU's first-level cache every time. */
	j = malloc(sizeof(*j) + (size_t)req_len + res_cap + 1);
	if (!j)
		return NULL;
	memset(j, 0, sizeof(*j));
	j->req = (unsigned char *)(j + 1);
	j->req_len = req_len;
	j->req_cap = req_len;
	j->res = j->req + req_len;
	j->res_cap = res_cap;
	j->res[res_cap] = 0;
	return j;
}

void job_free(struct job *j)
{
	free(j);
}

void job_run(struct job *j)
{
	struct popup_svc_call call = {
		.method = j->m->id,
		.origin = j->origin,
		.req = j->req,
		.req_len = j->req_len,
		.res = j->res,
		.res_cap = j->res_cap,
		.cpu = j->w ? j->w->cpu : -1,
		.priority = j->prio,
		.deadline_ns = j->deadline_ns,
		.flags = (j->hdr.flags & POPUP_WIRE_F_ONEWAY) ? POPUP_SVC_CALL_ONEWAY : 0,
		.pid = j->waiter ? j->caller_pid : -1,
		.uid = j->caller_uid,
		.gid = j->caller_gid,
	};

	if (j->deadline_ns && now_ns() >= j->deadline_ns) {
		j->status = -ETIMEDOUT;
		j->res_len = 0;
		j->msg = "deadline passed before a handler was free";
		goto out;
	}
	memcpy(&call.peer, &j->peer, sizeof(j->peer));
	call.peer_len = j->peer_len;
	j->status = svc_invoke(j->svc, j->m, &call);
	j->res_len = call.res_len;
	if (j->deadline_ns && now_ns() > j->deadline_ns) {
		j->status = -ETIMEDOUT;
		j->res_len = 0;
		j->msg = "handler finished past the deadline";
	}
out:
	svc_account(j->svc, j->status, j->arrival_ns, j->origin == POPUP_SVC_ORIGIN_LOCAL);
}

/* ---- priority queues ---------------------------------------------------- */

static unsigned int prio_level(int32_t prio)
{
	if (prio < POPUP_SVC_PRIO_MIN)
		prio = POPUP_SVC_PRIO_MIN;
	if (prio > POPUP_SVC_PRIO_MAX)
		prio = POPUP_SVC_PRIO_MAX;
	return (unsigned int)(prio - POPUP_SVC_PRIO_MIN);
}

static void lane_push(struct pool *p, struct lane *l, struct job *j)
{
	unsigned int b = prio_level(j->prio);

	j->next = NULL;
	j->qseq = p->seq++;
	if (l->bt[b])
		l->bt[b]->next = j;
	else
		l->bh[b] = j;
	l->bt[b] = j;
	l->bits |= 1ull << b;
	l->queued++;
	p->queued++;
}

/* The level to dequeue from: the highest, unless aging says the oldest. */
static unsigned int lane_pick(struct lane *l)
{
	unsigned int hi = 63 - __builtin_clzll(l->bits), old = hi;
	uint64_t rest = l->bits & ~(1ull << hi);

	if (!rest) {
		l->skips = 0;	/* one level: its head is the oldest */
		return hi;
	}
	while (rest) {
		unsigned int b = __builtin_ctzll(rest);

		rest &= rest - 1;
		if (l->bh[b]->qseq < l->bh[old]->qseq)
			old = b;
	}
	if (old == hi || l->skips >= AGE_SKIPS) {
		l->skips = 0;
		return old;
	}
	l->skips++;
	return hi;
}

static struct job *lane_pop(struct pool *p, struct lane *l)
{
	unsigned int b;
	struct job *j;

	if (!l->queued)
		return NULL;
	b = lane_pick(l);
	j = l->bh[b];
	l->bh[b] = j->next;
	if (!l->bh[b]) {
		l->bt[b] = NULL;
		l->bits &= ~(1ull << b);
	}
	l->queued--;
	p->queued--;
	j->next = NULL;
	return j;
}

/* ---- pool threads ------------------------------------------------------ */

struct thread_arg {
	struct pool *p;
	unsigned int slot;
};

static void deadline_in(struct timespec *ts, uint32_t ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}

static bool may_retire_locked(const struct pool *p, const struct lane *l)
{
	if (l->queued)
		return false;
	if (p->laned)
		return !(p->keep_bound && l->bound);
	return p->threads > p->cfg.min_threads;
}

struct job_wait {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
};

static void job_complete(struct job *j)
{
	struct job_wait *jw = j->waiter;

	if (!jw) {
		worker_complete(j);
		return;
	}
	pthread_mutex_lock(&jw->lock);
	jw->done = true;
	pthread_cond_signal(&jw->cond);
	pthread_mutex_unlock(&jw->lock);
}

static void *pool_thread(void *arg)
{
	struct thread_arg ta = *(struct thread_arg *)arg;
	struct pool *p = ta.p;
	struct lane *l = p->laned ? &p->lanes[ta.slot] : &p->lanes[0];
	char name[16];

	free(arg);
	snprintf(name, sizeof(name), "popupd-%s", p->svc->def->name);
	pthread_setname_np(pthread_self(), name);
	if (p->cpu >= 0)
		cpus_pin_self(p->cpu);

	pthread_mutex_lock(&p->lock);
	for (;;) {
		struct job *j;

		while (!l->queued && !p->stopping) {
			struct timespec ts;
			int rc;

			deadline_in(&ts, p->cfg.idle_timeout_ms);
			p->idle++;
			l->idle++;
			rc = pthread_cond_timedwait(&l->cond, &p->lock, &ts);
			p->idle--;
			l->idle--;
			if (rc == ETIMEDOUT && may_retire_locked(p, l)) {
				p->retired++;
				goto exit;
			}
		}
		j = lane_pop(p, l);
		if (!j)
			break;	/* stopping and nothing left */
		p->busy++;
		pthread_mutex_unlock(&p->lock);

		job_run(j);
		job_complete(j);

		pthread_mutex_lock(&p->lock);
		p->busy--;
	}
exit:
	p->threads--;
	l->threads--;
	p->state[ta.slot] = SLOT_EXITED;
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

/* Start one more thread in @slot; called with the lock held. */
static int spawn_slot_locked(struct pool *p, unsigned int slot, struct lane *l)
{
	struct thread_arg *ta;
	int err;

	if (p->state[slot] == SLOT_EXITED) {
		pthread_join(p->tids[slot], NULL);	/* it has let go of the lock */
		p->state[slot] = SLOT_FREE;
	}
	if (p->state[slot] != SLOT_FREE)
		return -EAGAIN;
	ta = malloc(sizeof(*ta));
	if (!ta)
		return -ENOMEM;
	ta->p = p;
	ta->slot = slot;
	err = pthread_create(&p->tids[slot], NULL, pool_thread, ta);
	if (err) {
		free(ta);
		pr_warn("service %s: cannot start a handler thread: %s", p->svc->def->name,
			strerror(err));
		return -err;
	}
	p->state[slot] = SLOT_LIVE;
	p->threads++;
	l->threads++;
	p->spawned++;
	if (p->threads > p->max_seen)
		p->max_seen = p->threads;
	return 0;
}

/* A thread for the shared queue, in the first free slot. */
static int spawn_locked(struct pool *p)
{
	for (unsigned int i = 0; i < POOL_SLOTS; i++)
		if (p->state[i] != SLOT_LIVE)
			return spawn_slot_locked(p, i, &p->lanes[0]);
	return -EAGAIN;
}

static void fix_cfg(struct pool *p, const struct popup_svc_pool *cfg)
{
	p->cfg = *cfg;
	if (p->cfg.max_threads > POOL_SLOTS)
		p->cfg.max_threads = POOL_SLOTS;
	if (p->svc->dispatch == POPUP_SVC_DISPATCH_FIXED)
		p->cfg.min_threads = p->cfg.max_threads;
}

struct pool *pool_create(struct svc *s, int cpu)
{
	struct pool *p = calloc(1, sizeof(*p));
	pthread_condattr_t ca;

	if (!p)
		return NULL;
	p->svc = s;
	p->cpu = cpu;
	fix_cfg(p, &s->pool);
	p->laned = s->dispatch == POPUP_SVC_DISPATCH_PER_CONN ||
		   s->dispatch == POPUP_SVC_DISPATCH_PER_OBJECT;
	p->keep_bound = s->dispatch == POPUP_SVC_DISPATCH_PER_CONN;
	/* Lanes are fixed at start: a reload does not change their number. */
	p->nr_lanes = p->laned ? p->cfg.max_threads : 1;
	p->lanes = calloc(p->nr_lanes, sizeof(*p->lanes));
	if (!p->lanes) {
		free(p);
		return NULL;
	}
	pthread_mutex_init(&p->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	for (uint32_t i = 0; i < p->nr_lanes; i++)
		pthread_cond_init(&p->lanes[i].cond, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_lock(&p->lock);
	for (uint32_t i = 0; !p->laned && i < p->cfg.min_threads; i++)
		if (spawn_locked(p))
			break;
	pthread_mutex_unlock(&p->lock);
	return p;
}

int pool_submit(struct pool *p, struct job *j)
{
	struct lane *l;
	int err = 0;

	pthread_mutex_lock(&p->lock);
	if (p->stopping) {
		err = -ESHUTDOWN;
		goto out;
	}
	if (p->laned) {
		uint32_t k = j->lane % p->nr_lanes;

		l = &p->lanes[k];
		if (l->queued >= p->cfg.queue_limit) {
			err = -EBUSY;
			goto out;
		}
		if (!l->threads)
			spawn_slot_locked(p, k, l);
	} else {
		l = &p->lanes[0];
		if (p->queued >= p->cfg.queue_limit) {
			err = -EBUSY;
			goto out;
		}
		/* Pop-up: a job that no idle thread will take gets a new thread. */
		if (p->idle <= p->queued && p->threads < p->cfg.max_threads)
			spawn_locked(p);
	}
	if (!l->threads) {
		err = -EBUSY;	/* none runs and none can start: refuse */
		goto out;
	}
	lane_push(p, l, j);
	if (l->idle)
		pthread_cond_signal(&l->cond);
out:
	pthread_mutex_unlock(&p->lock);
	return err;
}

uint32_t pool_lanes(const struct pool *p)
{
	return p->nr_lanes;	/* fixed at creation */
}

int pool_bind(struct pool *p)
{
	int best = -EBUSY;

	pthread_mutex_lock(&p->lock);
	for (uint32_t i = 0; i < p->nr_lanes && !p->stopping; i++) {
		struct lane *l = &p->lanes[i];

		if (l->bound)
			continue;
		if (best < 0)
			best = (int)i;
		if (l->idle && !l->queued) {
			best = (int)i;	/* a thread is there already */
			break;
		}
	}
	if (best >= 0)
		p->lanes[best].bound = true;
	pthread_mutex_unlock(&p->lock);
	return best;
}

void pool_unbind(struct pool *p, uint32_t lane)
{
	pthread_mutex_lock(&p->lock);
	if (lane < p->nr_lanes)
		p->lanes[lane].bound = false;
	pthread_mutex_unlock(&p->lock);
}

void pool_set_limits(struct pool *p, const struct popup_svc_pool *cfg)
{
	pthread_mutex_lock(&p->lock);
	fix_cfg(p, cfg);
	for (uint32_t i = 0; i < p->nr_lanes; i++)
		pthread_cond_broadcast(&p->lanes[i].cond);	/* re-evaluate idle timeouts */
	pthread_mutex_unlock(&p->lock);
}

void pool_get_stats(struct pool *p, struct pool_stats *ps)
{
	pthread_mutex_lock(&p->lock);
	ps->threads = p->threads;
	ps->idle = p->idle;
	ps->busy = p->busy;
	ps->queued = p->queued;
	ps->max_threads = p->laned ? p->nr_lanes : p->cfg.max_threads;
	ps->max_seen = p->max_seen;
	ps->spawned = p->spawned;
	ps->retired = p->retired;
	pthread_mutex_unlock(&p->lock);
}

void pool_destroy(struct pool *p)
{
	if (!p)
		return;
	unsigned char started[POOL_SLOTS];

	pthread_mutex_lock(&p->lock);
	p->stopping = true;	/* no spawn from now on */
	for (uint32_t i = 0; i < p->nr_lanes; i++)
		pthread_cond_broadcast(&p->lanes[i].cond);
	memcpy(started, p->state, sizeof(started));
	pthread_mutex_unlock(&p->lock);
	/* Threads finish their queue first (the loop only ends on an empty
	 * queue), so every accepted job gets its completion. */
	for (unsigned int i = 0; i < POOL_SLOTS; i++)
		if (started[i] != SLOT_FREE)
			pthread_join(p->tids[i], NULL);
	for (uint32_t i = 0; i < p->nr_lanes; i++)
		pthread_cond_destroy(&p->lanes[i].cond);
	pthread_mutex_destroy(&p->lock);
	free(p->lanes);
	free(p);
}

int pool_call_sync(struct svc *s, const struct popup_svc_method *m,
		   struct popup_svc_call *call, uint64_t arrival_ns)
{
	struct job_wait jw = { .done = false };
	uint64_t key;
	struct job *j;
	int err;

	err = svc_object_key(s, call, &key);
	if (err)
		return err;
	j = job_new(call->req_len, call->res_cap);
	if (!j)
		return -ENOMEM;
	if (call->req_len)
		memcpy(j->req, call->req, call->req_len);
	j->svc = s;
	j->m = m;
	j->origin = call->origin;
	j->arrival_ns = arrival_ns;
	j->deadline_ns = call->deadline_ns;
	j->prio = call->priority;
	memcpy(&j->peer, &call->peer, sizeof(j->peer));
	j->peer_len = call->peer_len;
	j->caller_pid = call->pid;
	j->caller_uid = call->uid;
	j->caller_gid = call->gid;
	if (call->flags & POPUP_SVC_CALL_ONEWAY)
		j->hdr.flags |= POPUP_WIRE_F_ONEWAY;
	j->lane = (uint32_t)(key % pool_lanes(s->pools[0]));
	j->waiter = &jw;
	pthread_mutex_init(&jw.lock, NULL);
	pthread_cond_init(&jw.cond, NULL);
	err = pool_submit(s->pools[0], j);
	if (!err) {
		pthread_mutex_lock(&jw.lock);
		while (!jw.done)
			pthread_cond_wait(&jw.cond, &jw.lock);
		pthread_mutex_unlock(&jw.lock);
		err = j->status;
		call->res_len = j->res_len;
		if (j->res_len)
			memcpy(call->res, j->res, j->res_len);
	} else {
		err = -EBUSY;
		svc_account(s, err, arrival_ns, call->origin == POPUP_SVC_ORIGIN_LOCAL);
	}
	pthread_cond_destroy(&jw.cond);
	pthread_mutex_destroy(&jw.lock);
	job_free(j);
	return err;
}
