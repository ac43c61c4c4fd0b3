// SPDX-License-Identifier: GPL-2.0
/*
 * Jobs and handler pools: where handlers that may block run.
 *
 * A pool is a bounded queue in front of a set of pop-up threads: a job is
 * queued, and when no thread is idle to take it and the pool is below
 * max_threads, one more thread is created for it; threads idle past the
 * idle timeout retire down to min_threads. Past queue_limit a submission
 * fails with -EBUSY and the caller answers "busy" right away: overload is
 * an explicit reply, never a silent drop and never unbounded memory.
 *
 * Deadlines are enforced on both sides of a handler: a job whose deadline
 * passed while it was queued is answered "timeout" without running (its
 * caller has likely given up; running it would only add load), and a
 * handler that overruns has its result replaced by "timeout".
 *
 * Threads are joinable and live in a fixed table of slots, so destroying a
 * pool joins every thread it ever started; a retired thread's slot is
 * joined and reused by the next spawn.
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

enum slot_state { SLOT_FREE, SLOT_LIVE, SLOT_EXITED };

struct pool {
	struct svc *svc;
	int cpu;			/* pin threads here; -1: anywhere */
	pthread_mutex_t lock;		/* protects everything below */
	pthread_cond_t cond;		/* jobs queued, or stopping */
	struct job *head, *tail;
	struct popup_svc_pool cfg;
	uint32_t queued, threads, idle, busy, max_seen;
	uint64_t spawned, retired;
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
		.deadline_ns = j->deadline_ns,
		.flags = (j->hdr.flags & POPUP_WIRE_F_ONEWAY) ? POPUP_SVC_CALL_ONEWAY : 0,
		.pid = -1,
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
	svc_account(j->svc, j->status, j->arrival_ns, false);
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

static void *pool_thread(void *arg)
{
	struct thread_arg ta = *(struct thread_arg *)arg;
	struct pool *p = ta.p;
	char name[16];

	free(arg);
	snprintf(name, sizeof(name), "popupd-%s", p->svc->def->name);
	pthread_setname_np(pthread_self(), name);
	if (p->cpu >= 0)
		cpus_pin_self(p->cpu);

	pthread_mutex_lock(&p->lock);
	for (;;) {
		struct job *j;

		while (!p->head && !p->stopping) {
			struct timespec ts;
			int rc;

			deadline_in(&ts, p->cfg.idle_timeout_ms);
			p->idle++;
			rc = pthread_cond_timedwait(&p->cond, &p->lock, &ts);
			p->idle--;
			if (rc == ETIMEDOUT && !p->head && p->threads > p->cfg.min_threads) {
				p->retired++;
				goto exit;
			}
		}
		if (!p->head)
			break;	/* stopping and nothing left */
		j = p->head;
		p->head = j->next;
		if (!p->head)
			p->tail = NULL;
		p->queued--;
		p->busy++;
		pthread_mutex_unlock(&p->lock);

		j->next = NULL;
		job_run(j);
		worker_complete(j);

		pthread_mutex_lock(&p->lock);
		p->busy--;
	}
exit:
	p->threads--;
	p->state[ta.slot] = SLOT_EXITED;
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

/* Start one more thread; called with the lock held. */
static int spawn_locked(struct pool *p)
{
	struct thread_arg *ta;
	unsigned int slot = POOL_SLOTS;
	int err;

	for (unsigned int i = 0; i < POOL_SLOTS; i++) {
		if (p->state[i] == SLOT_EXITED) {
			pthread_join(p->tids[i], NULL);
			p->state[i] = SLOT_FREE;
		}
		if (p->state[i] == SLOT_FREE && slot == POOL_SLOTS)
			slot = i;
		if (slot != POOL_SLOTS && p->state[i] == SLOT_FREE)
			break;
	}
	if (slot == POOL_SLOTS)
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
	p->spawned++;
	if (p->threads > p->max_seen)
		p->max_seen = p->threads;
	return 0;
}

struct pool *pool_create(struct svc *s, int cpu)
{
	struct pool *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->svc = s;
	p->cpu = cpu;
	p->cfg = s->pool;
	pthread_mutex_init(&p->lock, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&p->cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	pthread_mutex_lock(&p->lock);
	for (uint32_t i = 0; i < p->cfg.min_threads; i++)
		if (spawn_locked(p))
			break;
	pthread_mutex_unlock(&p->lock);
	return p;
}

int pool_submit(struct pool *p, struct job *j)
{
	int err = 0;

	pthread_mutex_lock(&p->lock);
	if (p->stopping) {
		err = -ESHUTDOWN;
		goto out;
	}
	if (p->queued >= p->cfg.queue_limit) {
		err = -EBUSY;
		goto out;
	}
	/* Pop-up: a job that no idle thread will take gets a new thread. */
	if (p->idle <= p->queued && p->threads < p->cfg.max_threads)
		spawn_locked(p);
	if (!p->threads) {
		err = -EBUSY;	/* none runs and none can start: refuse */
		goto out;
	}
	j->next = NULL;
	if (p->tail)
		p->tail->next = j;
	else
		p->head = j;
	p->tail = j;
	p->queued++;
	if (p->idle)
		pthread_cond_signal(&p->cond);
out:
	pthread_mutex_unlock(&p->lock);
	return err;
}

void pool_set_limits(struct pool *p, const struct popup_svc_pool *cfg)
{
	pthread_mutex_lock(&p->lock);
	p->cfg = *cfg;
	pthread_cond_broadcast(&p->cond);	/* re-evaluate idle timeouts */
	pthread_mutex_unlock(&p->lock);
}

void pool_get_stats(struct pool *p, struct pool_stats *ps)
{
	pthread_mutex_lock(&p->lock);
	ps->threads = p->threads;
	ps->idle = p->idle;
	ps->busy = p->busy;
	ps->queued = p->queued;
	ps->max_threads = p->cfg.max_threads;
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
	pthread_cond_broadcast(&p->cond);
	memcpy(started, p->state, sizeof(started));
	pthread_mutex_unlock(&p->lock);
	/* Threads finish the queue first (the loop only ends on an empty
	 * queue), so every accepted job gets its completion. */
	for (unsigned int i = 0; i < POOL_SLOTS; i++)
		if (started[i] != SLOT_FREE)
			pthread_join(p->tids[i], NULL);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p);
}
