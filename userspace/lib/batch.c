// SPDX-License-Identifier: LGPL-2.1 OR BSD-2-Clause
/*
 * popup_batch: several calls outstanding at once, one transaction record
 * (struct popup_txn) per call, and waits for any or all of them.
 *
 * Three engines, chosen by the binding's backend (popup_ops.async):
 *   ASYNC_POLL     user backend: the request is sent on the connection of
 *                  a binding slot the record holds; the waiting thread
 *                  polls those connections and reads each answer itself.
 *   ASYNC_THREADS  kernel backend: popup.ko's CALL blocks its thread, so
 *                  the record goes to a process-wide pool of caller
 *                  threads that make the synchronous call.
 *   ASYNC_NET      a remote popupd: the request is written to the TCP
 *                  connection and its reader thread completes the record.
 * Completions from other threads land on the batch's done list under the
 * batch lock and poke its eventfd, so one poll() in the waiter covers all
 * three. The bounds (max_outstanding per batch, a counting semaphore per
 * service and process) are taken in add() and given back when the call
 * completes; add() only waits for them when its batch holds nothing, so
 * no two batches can each hold what the other waits for.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "libpopup_internal.h"

enum { TX_RUNNING = 1, TX_DONE, TX_REPORTED };

struct popup_batch {
	uint32_t max_outstanding;
	int timeout_ms;			/* 0: the binding's default */
	int efd;			/* eventfd: completions by other threads */
	bool internal;			/* libpopup_batch_call_one: no bounds */
	pthread_mutex_t lock;		/* the fields below, and txn state */
	uint32_t outstanding;
	struct popup_txn **tx;		/* by token */
	uint32_t nr_tx, cap_tx;
	struct popup_txn *done_head, *done_tail; /* done, not yet reported */
};

/* ---- per-service counting semaphores ----------------------------------- */

struct svc_sem {
	struct svc_sem *next;
	char name[POPUP_NAME_MAX];
	uint32_t version;
	uint32_t limit, used;		/* (protected by sem_lock) */
};

static pthread_mutex_t sem_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t sem_freed = PTHREAD_COND_INITIALIZER;
static struct svc_sem *sems;

/* The semaphore of @name @version, created on first use (sem_lock held). */
static struct svc_sem *sem_get_locked(const char *name, uint32_t version)
{
	struct svc_sem *s;

	for (s = sems; s; s = s->next)
		if (s->version == version && !strcmp(s->name, name))
			return s;
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->version = version;
	s->limit = POPUP_SERVICE_LIMIT_DEFAULT;
	s->next = sems;
	sems = s;
	return s;
}

int popup_service__set_limit(const char *name, uint32_t version, uint32_t max)
{
	struct svc_sem *s;

	if (!name || !*name || strlen(name) >= POPUP_NAME_MAX || !max || max > 65536)
		return -EINVAL;
	pthread_mutex_lock(&sem_lock);
	s = sem_get_locked(name, version);
	if (s)
		s->limit = max;
	pthread_cond_broadcast(&sem_freed);
	pthread_mutex_unlock(&sem_lock);
	return s ? 0 : -ENOMEM;
}

/* A unit of @b's service: waits until @deadline only if @wait, else
 * -EAGAIN at once. The cond uses CLOCK_REALTIME; waits are short-polled
 * against the monotonic deadline. */
static int sem_take(struct popup_binding *b, bool wait, uint64_t deadline,
		    struct svc_sem **out)
{
	struct svc_sem *s;
	int err = 0;

	pthread_mutex_lock(&sem_lock);
	s = sem_get_locked(b->name, b->version);
	while (s && s->used >= s->limit) {
		struct timespec ts;

		err = -EAGAIN;
		if (!wait)
			break;
		err = -ETIMEDOUT;
		if (deadline && libpopup_now_ns() >= deadline)
			break;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 10000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&sem_freed, &sem_lock, &ts);
		err = 0;
	}
	if (!s)
		err = -ENOMEM;
	if (!err) {
		s->used++;
		*out = s;
	}
	pthread_mutex_unlock(&sem_lock);
	return err;
}

static void sem_give(struct svc_sem *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&sem_lock);
	s->used--;
	pthread_cond_signal(&sem_freed);
	pthread_mutex_unlock(&sem_lock);
}

__attribute__((destructor)) static void sems_free(void)
{
	struct svc_sem *s, *n;

	for (s = sems; s; s = n) {
		n = s->next;
		free(s);
	}
	sems = NULL;
}

/* ---- completion --------------------------------------------------------- */

static void complete_locked(struct popup_txn *t, int status)
{
	struct popup_batch *batch = t->batch;
	uint64_t one = 1;

	if (t->state != TX_RUNNING)
		return;
	t->status = status;
	t->state = TX_DONE;
	batch->outstanding--;
	if (batch->done_tail)
		batch->done_tail->done_next = t;
	else
		batch->done_head = t;
	batch->done_tail = t;
	t->done_next = NULL;
	sem_give(t->sem);
	t->sem = NULL;
	free(t->arg_copy);
	t->arg_copy = NULL;
	/* Still under the lock: __free() may not go before this write. */
	if (write(batch->efd, &one, sizeof(one)) < 0)
		pr_debug("batch: eventfd write: %s\n", strerror(errno));
}

void libpopup_txn_complete(struct popup_txn *t, int status)
{
	struct popup_batch *batch = t->batch;

	pthread_mutex_lock(&batch->lock);
	complete_locked(t, status);
	pthread_mutex_unlock(&batch->lock);
}

/* ---- ASYNC_THREADS: the caller-thread pool ------------------------------ */

#define CALLERS_MAX		256
#define CALLER_IDLE_MS		2000

static struct {
	pthread_mutex_t lock;
	pthread_cond_t work;
	struct popup_txn *head, *tail;
	unsigned int threads, idle;
} callers = { .lock = PTHREAD_MUTEX_INITIALIZER, .work = PTHREAD_COND_INITIALIZER };

static void caller_run(struct popup_txn *t)
{
	int left = libpopup_ms_left(t->deadline);
	int ret;

	if (t->deadline && left == 0) {
		libpopup_txn_complete(t, -ETIMEDOUT);
		return;
	}
	ret = popup_binding__call(t->b, t->m->id, t->arg_copy, t->arg_len, t->res,
				  t->res_cap, &t->res_len,
				  left < 0 ? POPUP_TIMEOUT_INFINITE : left);
	libpopup_txn_complete(t, ret);
}

static void *caller_thread(void *arg)
{
	struct popup_txn *t;

	pthread_mutex_lock(&callers.lock);
	for (;;) {
		while (!callers.head) {
			struct timespec ts;
			int err;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += CALLER_IDLE_MS / 1000;
			callers.idle++;
			err = pthread_cond_timedwait(&callers.work, &callers.lock, &ts);
			callers.idle--;
			if (err == ETIMEDOUT && !callers.head) {
				callers.threads--;
				pthread_mutex_unlock(&callers.lock);
				return NULL;
			}
		}
		t = callers.head;
		callers.head = t->next;
		if (!callers.head)
			callers.tail = NULL;
		pthread_mutex_unlock(&callers.lock);
		caller_run(t);
		pthread_mutex_lock(&callers.lock);
	}
}

static int callers_submit(struct popup_txn *t)
{
	pthread_attr_t attr;
	pthread_t tid;
	int err = 0;

	pthread_mutex_lock(&callers.lock);
	t->next = NULL;
	if (callers.tail)
		callers.tail->next = t;
	else
		callers.head = t;
	callers.tail = t;
	if (!callers.idle && callers.threads < CALLERS_MAX) {
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		pthread_attr_setstacksize(&attr, 256 << 10);
		err = pthread_create(&tid, &attr, caller_thread, NULL);
		pthread_attr_destroy(&attr);
		if (!err)
			callers.threads++;
		else if (callers.threads)
			err = 0;	/* the running ones will get to it */
		else
			callers.head = callers.tail = NULL; /* t was alone */
	} else {
		pthread_cond_signal(&callers.work);
	}
	pthread_mutex_unlock(&callers.lock);
	return -err;
}

/* ---- the batch ---------------------------------------------------------- */

struct popup_batch *popup_batch__new(const struct popup_batch_opts *opts)
{
	struct popup_batch *batch;
	uint32_t max;

	if (!OPTS_VALID(opts, popup_batch_opts)) {
		errno = EINVAL;
		return NULL;
	}
	max = OPTS_GET(opts, max_outstanding, 0) ?: 8;
	if (max > POPUP_BATCH_MAX || OPTS_GET(opts, timeout_ms, 0) < 0) {
		errno = EINVAL;
		return NULL;
	}
	batch = calloc(1, sizeof(*batch));
	if (!batch)
		return NULL;
	batch->max_outstanding = max;
	batch->timeout_ms = OPTS_GET(opts, timeout_ms, 0);
	batch->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (batch->efd < 0) {
		free(batch);
		return NULL;
	}
	pthread_mutex_init(&batch->lock, NULL);
	return batch;
}

static struct popup_txn *txn_alloc(struct popup_batch *batch)
{
	struct popup_txn *t;

	if (batch->nr_tx == batch->cap_tx) {
		uint32_t cap = batch->cap_tx ? batch->cap_tx * 2 : 8;
		struct popup_txn **tx = realloc(batch->tx, cap * sizeof(*tx));

		if (!tx)
			return NULL;
		batch->tx = tx;
		batch->cap_tx = cap;
	}
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->batch = batch;
	t->slot = -1;
	t->fd = -1;
	t->token = batch->nr_tx;
	return t;
}

/* ASYNC_POLL: take a slot, copy the arguments into it and send. */
static int start_poll(struct popup_txn *t, const void *arg, bool wait)
{
	struct popup_binding *b = t->b;
	int slot, fd;

	slot = libpopup_slot_acquire(b, wait ? t->deadline : libpopup_now_ns(), false);
	if (slot < 0)
		return slot == -ETIMEDOUT && !wait ? -EAGAIN : slot;
	if (t->arg_len)
		memcpy(libpopup_slot_ptr(b, slot), arg, t->arg_len);
	fd = libpopup_user_call_start(b, slot, t->m, t->arg_len, t->deadline, &t->seq);
	if (fd < 0) {
		popup_binding__slot_release(b, slot);
		return fd;
	}
	t->slot = slot;
	t->fd = fd;
	return 0;
}

static int start_txn(struct popup_txn *t, const void *arg, bool wait)
{
	switch (t->b->ops->async) {
	case ASYNC_POLL:
		return start_poll(t, arg, wait);
	case ASYNC_NET:
		return libpopup_net_submit(t, arg);
	case ASYNC_THREADS:
	default:
		if (t->arg_len) {
			t->arg_copy = malloc(t->arg_len);
			if (!t->arg_copy)
				return -ENOMEM;
			memcpy(t->arg_copy, arg, t->arg_len);
		}
		return callers_submit(t);
	}
}

static uint64_t txn_deadline(const struct popup_batch *batch, const struct popup_binding *b)
{
	int ms = batch->timeout_ms ?: b->timeout_ms;

	return libpopup_deadline_from_ms(ms > 0 ? ms : -1);
}

static int batch_add(struct popup_batch *batch, struct popup_binding *b,
		     const struct method_info *m, const void *arg, uint32_t arg_len,
		     void *res, uint32_t res_cap, uint64_t deadline, int *token)
{
	struct popup_txn *t;
	bool idle;
	int err;

	pthread_mutex_lock(&batch->lock);
	idle = batch->outstanding == 0;
	if (batch->outstanding >= batch->max_outstanding) {
		pthread_mutex_unlock(&batch->lock);
		return -EAGAIN;
	}
	t = txn_alloc(batch);
	pthread_mutex_unlock(&batch->lock);
	if (!t)
		return -ENOMEM;
	t->b = b;
	t->m = m;
	if (!b->methods) {	/* kernel: no table, @m is the caller's tmp */
		t->tmp = *m;
		t->m = &t->tmp;
	}
	t->arg_len = arg_len;
	t->res = res;
	t->res_cap = res_cap;
	t->deadline = deadline;
	err = batch->internal ? 0 : sem_take(b, idle, deadline, &t->sem);
	if (err)
		goto err_free;
	/* Running before it starts: a fast engine may complete it at once. */
	pthread_mutex_lock(&batch->lock);
	t->state = TX_RUNNING;
	batch->outstanding++;
	batch->tx[batch->nr_tx++] = t;
	pthread_mutex_unlock(&batch->lock);
	err = start_txn(t, arg, idle);
	if (err) {
		pthread_mutex_lock(&batch->lock);
		batch->outstanding--;
		batch->nr_tx--;
		pthread_mutex_unlock(&batch->lock);
		sem_give(t->sem);
		goto err_free;
	}
	*token = t->token;
	return 0;

err_free:
	free(t->arg_copy);
	free(t);
	return err;
}

int popup_batch__add(struct popup_batch *batch, struct popup_binding *b,
		     uint32_t method, const void *arg, uint32_t arg_len,
		     void *res, uint32_t res_cap, int *token)
{
	const struct method_info *m;
	struct method_info tmp;
	int err;

	if (!batch || !b || !token || (arg_len && !arg) || (res_cap && !res))
		return -EINVAL;
	err = libpopup_check_call(b, method, arg_len, false, &m, &tmp);
	if (err)
		return err;
	return batch_add(batch, b, m, arg, arg_len, res, res_cap,
			 txn_deadline(batch, b), token);
}

/* ---- waiting -------------------------------------------------------------- */

/* ASYNC_POLL: the answer is readable; read it and complete. */
static void finish_poll(struct popup_txn *t)
{
	struct popup_binding *b = t->b;
	uint32_t rlen = 0;
	int ret;

	ret = libpopup_user_call_finish(b, t->slot, t->seq, &rlen);
	if (rlen && t->res_cap)
		memcpy(t->res, libpopup_slot_ptr(b, t->slot), min_t(uint32_t, rlen, t->res_cap));
	popup_binding__slot_release(b, t->slot);
	t->slot = -1;
	t->fd = -1;
	t->res_len = rlen;
	libpopup_txn_complete(t, rlen > t->res_cap ? -ENOBUFS : ret);
}

/* A running call past its deadline, in an engine that does not time out
 * by itself: cancel it. */
static void expire(struct popup_txn *t)
{
	if (t->b->ops->async == ASYNC_POLL) {
		libpopup_user_call_cancel(t->b, t->slot);
		popup_binding__slot_release(t->b, t->slot);
		t->slot = -1;
		t->fd = -1;
		libpopup_txn_complete(t, -ETIMEDOUT);
	} else if (libpopup_net_cancel(t)) {
		libpopup_txn_complete(t, -ETIMEDOUT);
	}
}

/*
 * Is @t running in an engine that does not time out by itself, past its
 * deadline (any deadline when @now is 0)? Only the batch's thread moves
 * ASYNC_POLL calls; a net call may complete meanwhile, which expire()
 * notices (libpopup_net_cancel() fails).
 */
static bool cancellable(struct popup_batch *batch, const struct popup_txn *t, uint64_t now)
{
	bool yes;

	pthread_mutex_lock(&batch->lock);
	yes = t->state == TX_RUNNING && t->b->ops->async != ASYNC_THREADS &&
	      (!now || (t->deadline && t->deadline <= now));
	pthread_mutex_unlock(&batch->lock);
	return yes;
}

/* Pop a reported-to-be call; -1 if none. */
static int pop_done_locked(struct popup_batch *batch)
{
	struct popup_txn *t = batch->done_head;

	if (!t)
		return -1;
	batch->done_head = t->done_next;
	if (!batch->done_head)
		batch->done_tail = NULL;
	t->state = TX_REPORTED;
	return t->token;
}

/* One poll round until @deadline: reads answers, expires calls. */
static int poll_round(struct popup_batch *batch, uint64_t deadline)
{
	struct pollfd pfd[POPUP_BATCH_MAX + 1];
	struct popup_txn *who[POPUP_BATCH_MAX + 1];
	uint64_t until = deadline, now;
	unsigned int n = 1;
	uint64_t cnt;
	int r;

	pfd[0] = (struct pollfd){ .fd = batch->efd, .events = POLLIN };
	pthread_mutex_lock(&batch->lock);
	for (uint32_t i = 0; i < batch->nr_tx; i++) {
		struct popup_txn *t = batch->tx[i];

		if (t->state != TX_RUNNING || t->b->ops->async == ASYNC_THREADS)
			continue;
		if (t->deadline && (!until || t->deadline < until))
			until = t->deadline;
		if (t->fd >= 0 && n < ARRAY_SIZE(pfd)) {
			pfd[n] = (struct pollfd){ .fd = t->fd, .events = POLLIN };
			who[n++] = t;
		}
	}
	pthread_mutex_unlock(&batch->lock);
	do {
		r = poll(pfd, n, libpopup_ms_left(until));
	} while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	if (pfd[0].revents && read(batch->efd, &cnt, sizeof(cnt)) < 0 && errno != EAGAIN)
		return -errno;
	for (unsigned int i = 1; i < n; i++)
		if (pfd[i].revents)
			finish_poll(who[i]);
	now = libpopup_now_ns();
	for (uint32_t i = 0; i < batch->nr_tx; i++)
		if (cancellable(batch, batch->tx[i], now))
			expire(batch->tx[i]);
	return 0;
}

static int wait_any(struct popup_batch *batch, uint64_t deadline)
{
	bool polled = false;
	int tok, err;

	for (;;) {
		pthread_mutex_lock(&batch->lock);
		tok = pop_done_locked(batch);
		if (tok < 0 && !batch->outstanding)
			tok = -ENOENT;
		pthread_mutex_unlock(&batch->lock);
		if (tok != -1)
			return tok;
		/* Look at the connections once even when not waiting. */
		if (polled && deadline && libpopup_now_ns() >= deadline)
			return -ETIMEDOUT;
		polled = true;
		err = poll_round(batch, deadline);
		if (err)
			return err;
	}
}

static uint64_t wait_deadline(int timeout_ms)
{
	if (timeout_ms == 0)
		return libpopup_now_ns();	/* do not wait */
	return libpopup_deadline_from_ms(timeout_ms < 0 ? -1 : timeout_ms);
}

int popup_batch__wait_any(struct popup_batch *batch, int timeout_ms)
{
	if (!batch)
		return -EINVAL;
	return wait_any(batch, wait_deadline(timeout_ms));
}

int popup_batch__wait_all(struct popup_batch *batch, int timeout_ms)
{
	uint64_t deadline;
	int tok;

	if (!batch)
		return -EINVAL;
	deadline = wait_deadline(timeout_ms);
	do {
		tok = wait_any(batch, deadline);
	} while (tok >= 0);
	return tok == -ENOENT ? 0 : tok;
}

int popup_batch__result(const struct popup_batch *batch, int token, uint32_t *res_len)
{
	struct popup_batch *mb = (struct popup_batch *)batch;
	struct popup_txn *t;
	int ret;

	if (!batch || token < 0)
		return -EINVAL;
	pthread_mutex_lock(&mb->lock);
	if ((uint32_t)token >= batch->nr_tx) {
		ret = -EINVAL;
	} else {
		t = batch->tx[token];
		ret = t->state == TX_RUNNING ? -EINPROGRESS : t->status;
		if (res_len)
			*res_len = t->state == TX_RUNNING ? 0 : t->res_len;
	}
	pthread_mutex_unlock(&mb->lock);
	return ret;
}

uint32_t popup_batch__outstanding(const struct popup_batch *batch)
{
	struct popup_batch *mb = (struct popup_batch *)batch;
	uint32_t n;

	if (!batch)
		return 0;
	pthread_mutex_lock(&mb->lock);
	n = batch->outstanding;
	pthread_mutex_unlock(&mb->lock);
	return n;
}

static void forget_locked(struct popup_batch *batch)
{
	for (uint32_t i = 0; i < batch->nr_tx; i++)
		free(batch->tx[i]);
	batch->nr_tx = 0;
	batch->done_head = batch->done_tail = NULL;
}

int popup_batch__reset(struct popup_batch *batch)
{
	int err = 0;

	if (!batch)
		return -EINVAL;
	pthread_mutex_lock(&batch->lock);
	if (batch->outstanding)
		err = -EBUSY;
	else
		forget_locked(batch);
	pthread_mutex_unlock(&batch->lock);
	return err;
}

void popup_batch__free(struct popup_batch *batch)
{
	if (!batch)
		return;
	/* Cancel what can be cancelled now; caller threads finish by their
	 * call's own deadline, and we wait for them. */
	for (uint32_t i = 0; i < batch->nr_tx; i++)
		if (cancellable(batch, batch->tx[i], 0))
			expire(batch->tx[i]);
	while (popup_batch__outstanding(batch))
		poll_round(batch, 0);
	forget_locked(batch);
	close(batch->efd);
	pthread_mutex_destroy(&batch->lock);
	free(batch->tx);
	free(batch);
}

/* ---- synchronous calls over an async engine (net backend) --------------- */

int libpopup_batch_call_one(struct popup_binding *b, const struct method_info *m,
			    const void *arg, uint32_t arg_len, void *res,
			    uint32_t res_cap, uint32_t *res_len, uint64_t deadline)
{
	POPUP_OPTS(popup_batch_opts, opts, .max_outstanding = 1);
	struct popup_batch *batch = popup_batch__new(&opts);
	int tok, ret;

	if (!batch)
		return -errno;
	batch->internal = true;
	ret = batch_add(batch, b, m, arg, arg_len, res, res_cap, deadline, &tok);
	if (!ret)
		ret = wait_any(batch, 0);
	if (ret >= 0)
		ret = popup_batch__result(batch, tok, res_len);
	popup_batch__free(batch);
	return ret;
}
