// SPDX-License-Identifier: GPL-2.0
/*
 * The arbiter: services whose handlers live in other popupd instances.
 *
 * QNX's server/subserver model across machines. The front popupd is the
 * one clients know; it declares a service with [arbiter.<name>] (an id, a
 * version and a method table, no plugin). Its requests, from any
 * transport, become jobs parked in the arbiter's bounded queue (past the
 * bound: an explicit "busy" reply). Subservers, popupds started with
 * --subserver-of HOST:PORT (subserver.c), connect to the arbiter port,
 * register the services they can serve, then ask for work; the arbiter
 * hands each queued request to a subserver that asked, one request per
 * outstanding ask, so work is reply-driven: a subserver gets only what it
 * asked for, and a subserver with K handler threads keeps K asks
 * outstanding. A result comes back together with the next ask (QNX's
 * reply-then-receive) and completes the client's job.
 *
 *   client --native/HTTP/local--> front popupd [arbiter.sleep] queue
 *          <-- WORK (ask) / request --> subserver popupd A (sleep.so)
 *          <-- WORK (ask) / request --> subserver popupd B (sleep.so)
 *
 * The work channel is the native wire protocol (wire.h) with the
 * POPUP_WIRE_F_WORK flag on every message, on its own port:
 *   REGISTER  sub->front  F_WORK|F_REGISTER, req_id = the sub's cookie,
 *                         payload "name version\n" then one line per
 *                         method "id flags name\n"
 *             front->sub  F_WORK|F_REGISTER|F_REPLY, status, service = the
 *                         front's id for it, req_id echoed
 *   ASK       sub->front  F_WORK; with F_REPLY it also carries the result
 *                         of the work whose token is req_id: status (wire
 *                         status), reserved (the handler's errno, positive,
 *                         or 0), payload (the result). Every F_WORK
 *                         message that is not a registration is one ask.
 *   WORK      front->sub  F_WORK, req_id = token, service, method, status =
 *                         milliseconds left to the deadline (0: none),
 *                         payload = the request.
 *
 * The work channel has no authentication: whoever reaches the arbiter
 * port can register and receive requests, so bind it (arbiter_bind) to
 * the subservers' network only.
 *
 * Failure: when a subserver's connection drops (killed, reset, protocol
 * error) with requests assigned, each of them is queued again, at the
 * head, if it may be retried (the arbiter's retry = idempotent, the
 * default, retries a method marked idempotent by the method table that
 * subserver registered (POPUP_SVC_M_IDEMPOTENT) or by the arbiter's own
 * table (NAME:ID:idempotent); always; never) and has been tried fewer than
 * 1 + retries times, else it is answered with an error ("subserver died").
 * Deadlines hold everywhere: a request still queued is answered "timeout"
 * at its deadline, one held by a subserver that does not answer 200 ms
 * after it (a result racing the deadline still gets through; a later one
 * is dropped). There is no health check: a hung subserver that keeps its
 * connection keeps getting what it asked for, and each of those requests
 * times out. With no subserver at all requests wait for one up to their
 * deadline. Nothing is ever dropped silently.
 *
 * Threads: one arbiter thread owns the listener and does all socket I/O
 * with the subservers (epoll). A network worker's arbiter_submit() hands
 * the job to a subserver that asked (appending it to that subserver's
 * output buffer) when nothing is queued, else queues it, and wakes the
 * thread to send. One mutex, arb_lock, protects the queues, the subserver
 * list and the counters; completions go back to the receiving worker with
 * worker_complete() (lock order: arb_lock, then a worker's done_lock), or
 * to a local caller waiting in arb_local_handler().
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "popupd.h"

#define ARB_MAX		16
#define SUB_MAX		256
#define SUB_ASKS_MAX	4096		/* outstanding asks per subserver */
#define SUB_REG_MAX	8192		/* registration payload */
#define ARB_TICK_MS	10		/* deadline resolution */
#define SUB_OUT_MAX	(32u << 20)	/* unsent bytes: a subserver not reading */
#define INFLIGHT_GRACE_NS 200000000ull	/* a result racing its deadline */

enum { RETRY_IDEMPOTENT, RETRY_ALWAYS, RETRY_NEVER };

struct lwait {				/* a local (libpopup) caller */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
};

struct areq {				/* one request at the arbiter */
	struct areq *next;		/* queue, or the subserver's in-flight list */
	struct job *j;
	struct lwait *lw;
	struct arbiter *a;
	uint64_t token;
	uint32_t tries;			/* times handed to a subserver */
	uint32_t midx;			/* method index in the arbiter's table */
};

struct arbiter {
	struct popup_svc_def def;
	struct popup_svc_method methods[POPUP_SVC_MAX_METHODS];
	char mnames[POPUP_SVC_MAX_METHODS][POPUP_SVC_NAME_MAX];
	char name[POPUP_SVC_NAME_MAX];
	struct svc *svc;
	unsigned int idx;
	int retry;
	uint32_t retries, queue_limit;
	struct areq *head, *tail;
	uint32_t queued, subs;
	uint64_t dispatched, retried, failed, expired, busy, done;
};

struct sub {
	struct sub *next;
	int fd;
	char peer[64];
	unsigned char *in, *out;
	uint32_t in_len, in_cap, out_off, out_len, out_cap;
	uint32_t asks;
	bool want_out;			/* EPOLLOUT armed */
	uint64_t has[ARB_MAX], idem[ARB_MAX];	/* method index bits */
	bool reg[ARB_MAX];
	struct areq *inflight;
	uint64_t next_token, served;
};

static struct {
	pthread_mutex_t lock;		/* arb_lock: everything below */
	struct arbiter *arbs[ARB_MAX];
	unsigned int nr;
	struct sub *subs;
	unsigned int nr_subs;
	unsigned int rr;		/* round-robin cursor over subservers */
	int lfd, epfd, wake_fd;
	pthread_t thread;
	bool started, stopping;
	uint16_t port;
} A = { .lock = PTHREAD_MUTEX_INITIALIZER, .lfd = -1, .epfd = -1, .wake_fd = -1 };

/* ---- configuration ------------------------------------------------------ */

static bool name_ok(const char *s, size_t n)
{
	return n && n < POPUP_SVC_NAME_MAX &&
	       strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") >= n;
}

/* "sleep:1:idempotent, spin:2" into @a's method table. */
static int parse_methods(struct arbiter *a, const char *list, uint32_t max_arg, uint32_t max_res)
{
	char *copy = strdup(list), *tok, *save = NULL;
	int err = 0;

	if (!copy)
		return -ENOMEM;
	for (tok = strtok_r(copy, " ,\t", &save); tok && !err; tok = strtok_r(NULL, " ,\t", &save)) {
		char *c1 = strchr(tok, ':'), *c2;
		struct popup_svc_method *m = &a->methods[a->def.nr_methods];
		uint32_t id;

		c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (c2)
			*c2++ = 0;
		if (!c1 || !name_ok(tok, c1 - tok) || parse_u32(c1 + 1, 1, 65535, &id) ||
		    (c2 && strcmp(c2, "idempotent")) || a->def.nr_methods >= POPUP_SVC_MAX_METHODS) {
			err = -EINVAL;
			break;
		}
		*c1 = 0;
		for (uint32_t i = 0; i < a->def.nr_methods; i++)
			if (a->methods[i].id == id || !strcmp(a->mnames[i], tok))
				err = -EINVAL;
		snprintf(a->mnames[a->def.nr_methods], POPUP_SVC_NAME_MAX, "%s", tok);
		*m = (struct popup_svc_method){ .id = id, .name = a->mnames[a->def.nr_methods],
			.max_arg = max_arg, .max_res = max_res,
			.flags = c2 ? POPUP_SVC_M_IDEMPOTENT : 0 };
		a->def.nr_methods++;
	}
	free(copy);
	return err ? err : (a->def.nr_methods ? 0 : -EINVAL);
}

static int arb_local_handler(struct popup_svc_call *call);

static int conf_u32(const struct popupd_svc_conf *sc, const char *key, uint32_t min,
		    uint32_t max, uint32_t *v)
{
	for (const struct popupd_kv *kv = sc->kv; kv; kv = kv->next) {
		if (strcmp(kv->key, key))
			continue;
		if (!parse_u32(kv->value, min, max, v))
			return 0;
		pr_err("[arbiter.%s]: invalid %s '%s' (%u..%u)", sc->name, key, kv->value, min, max);
		return -EINVAL;
	}
	return 0;
}

static const char *conf_str(const struct popupd_svc_conf *sc, const char *key)
{
	for (const struct popupd_kv *kv = sc->kv; kv; kv = kv->next)
		if (!strcmp(kv->key, key))
			return kv->value;
	return NULL;
}

static int arbiter_conf(struct arbiter *a, const struct popupd_svc_conf *sc)
{
	static const char *const keys[] = { "id", "version", "methods", "max_arg", "max_res",
		"queue", "timeout_ms", "retry", "retries", NULL };
	uint32_t max_arg = 65536, max_res = 65536, timeout_ms = 5000, id = 0, version = 1;
	const char *retry = conf_str(sc, "retry"), *methods = conf_str(sc, "methods");
	int err = 0;

	for (const struct popupd_kv *kv = sc->kv; kv; kv = kv->next) {
		unsigned int k = 0;

		while (keys[k] && strcmp(keys[k], kv->key))
			k++;
		if (!keys[k]) {
			pr_err("[arbiter.%s]: unknown key '%s'", sc->name, kv->key);
			return -EINVAL;
		}
	}
	a->queue_limit = 256;
	a->retries = 2;
	err |= conf_u32(sc, "id", 1, UINT32_MAX - 1, &id);
	err |= conf_u32(sc, "version", 0, UINT32_MAX, &version);
	err |= conf_u32(sc, "max_arg", 0, POPUP_SVC_MAX_MSG, &max_arg);
	err |= conf_u32(sc, "max_res", 0, POPUP_SVC_MAX_MSG, &max_res);
	err |= conf_u32(sc, "queue", 1, 65536, &a->queue_limit);
	err |= conf_u32(sc, "timeout_ms", 1, 86400000, &timeout_ms);
	err |= conf_u32(sc, "retries", 0, 16, &a->retries);
	if (err)
		return -EINVAL;
	if (!retry || !strcmp(retry, "idempotent"))
		a->retry = RETRY_IDEMPOTENT;
	else if (!strcmp(retry, "always"))
		a->retry = RETRY_ALWAYS;
	else if (!strcmp(retry, "never"))
		a->retry = RETRY_NEVER;
	else {
		pr_err("[arbiter.%s]: retry '%s' is not idempotent, always or never", sc->name, retry);
		return -EINVAL;
	}
	if (!methods || parse_methods(a, methods, max_arg, max_res)) {
		pr_err("[arbiter.%s]: methods wants NAME:ID[:idempotent],... (ids 1..65535, "
		       "names [A-Za-z0-9_-], each once), got '%s'", sc->name, methods ? methods : "");
		return -EINVAL;
	}
	a->def = (struct popup_svc_def){
		.abi_version = POPUP_SVC_ABI_VERSION, .struct_size = sizeof(a->def),
		.name = a->name, .version = version, .id = id, .methods = a->methods,
		.nr_methods = a->def.nr_methods, .dispatch = POPUP_SVC_DISPATCH_POOL,
		.pool = { .min_threads = 1, .max_threads = 1, .queue_limit = a->queue_limit,
			  .timeout_ms = timeout_ms },
	};
	for (uint32_t i = 0; i < a->def.nr_methods; i++)
		a->methods[i].handler = arb_local_handler;
	return 0;
}

int arbiter_load(const struct popupd_config *cfg)
{
	const struct popupd_svc_conf *sc, *done = NULL;

	/* The list is newest first: walk it from the end, in file order. */
	while (done != cfg->arb_conf) {
		struct arbiter *a;
		int err;

		for (sc = cfg->arb_conf; sc->next != done; sc = sc->next)
			;
		done = sc;

		if (!name_ok(sc->name, strlen(sc->name))) {
			pr_err("[arbiter.%s]: the name must be [A-Za-z0-9_-], 1..%d bytes", sc->name,
			       POPUP_SVC_NAME_MAX - 1);
			return -EINVAL;
		}
		if (A.nr >= ARB_MAX) {
			pr_err("too many arbiter services (at most %d)", ARB_MAX);
			return -E2BIG;
		}
		/* Its pool keys would half apply (timeout_ms): refuse. */
		for (const struct popupd_svc_conf *o = cfg->svc_conf; o; o = o->next) {
			if (!strcmp(o->name, sc->name)) {
				pr_err("[service.%s] and [arbiter.%s] both configure %s; an arbiter "
				       "service takes its keys from [arbiter.%s] only", sc->name,
				       sc->name, sc->name, sc->name);
				return -EINVAL;
			}
		}
		a = calloc(1, sizeof(*a));
		if (!a)
			return -ENOMEM;
		snprintf(a->name, sizeof(a->name), "%s", sc->name);
		a->idx = A.nr;
		A.arbs[A.nr++] = a;
		err = arbiter_conf(a, sc);
		if (!err)
			err = svc_add(&a->def, a, &a->svc);
		if (err)
			return err;
		a->svc->arb = a;
	}
	return 0;
}

/* ---- completing requests ------------------------------------------------- */

static int wire_to_errno(uint32_t st)
{
	switch (st) {
	case POPUP_WIRE_S_OK:		return 0;
	case POPUP_WIRE_S_BADREQ:	return -EINVAL;
	case POPUP_WIRE_S_TOOBIG:	return -E2BIG;
	case POPUP_WIRE_S_BUSY:		return -EBUSY;
	case POPUP_WIRE_S_TIMEOUT:	return -ETIMEDOUT;
	default:			return -EIO;
	}
}

/* Hand @r's job back to whoever waits for it; frees @r. Lock held. */
static void areq_done_locked(struct areq *r, int status, const char *msg)
{
	struct job *j = r->j;

	if (status) {
		j->status = status;
		j->res_len = 0;
		j->msg = msg;
	}
	r->a->done++;
	if (r->lw) {
		pthread_mutex_lock(&r->lw->lock);
		r->lw->done = true;
		pthread_cond_signal(&r->lw->cond);
		pthread_mutex_unlock(&r->lw->lock);
	} else {
		svc_account(j->svc, j->status, j->arrival_ns, false);
		worker_complete(j);
	}
	free(r);
}

static void wake(void)
{
	uint64_t one = 1;

	if (A.wake_fd >= 0 && write(A.wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		pr_warn("arbiter: cannot wake: %s", strerror(errno));
}

static struct sub *pick(const struct arbiter *a, uint32_t k);
static void hand_out(struct sub *s, struct areq *r);

/* A subserver that asked takes @j at once (FIFO: only when nothing
 * waits); otherwise it waits in the queue, if there is room. */
static int submit(struct arbiter *a, struct job *j, struct lwait *lw)
{
	struct sub *s;
	struct areq *r;
	uint32_t midx = 0;
	int err = 0;

	while (midx < a->def.nr_methods && &a->methods[midx] != j->m)
		midx++;
	if (midx == a->def.nr_methods)
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->j = j;
	r->lw = lw;
	r->a = a;
	r->midx = midx;
	pthread_mutex_lock(&A.lock);
	if (A.stopping || !A.started) {
		err = -ESHUTDOWN;
	} else if (!a->head && (s = pick(a, midx))) {
		hand_out(s, r);		/* the arbiter thread sends it */
	} else if (a->queued >= a->queue_limit) {
		a->busy++;
		err = -EBUSY;
	} else {
		if (a->tail)
			a->tail->next = r;
		else
			a->head = r;
		a->tail = r;
		a->queued++;
	}
	pthread_mutex_unlock(&A.lock);
	if (err)
		free(r);
	else
		wake();
	return err;
}

int arbiter_submit(struct arbiter *a, struct job *j)
{
	return submit(a, j, NULL);
}

/* Callers that run handlers on their own threads (libpopup exports,
 * popup.ko UDP arrival contexts) block here; the deadline bounds the
 * wait, as the arbiter thread answers every request by then. */
static int arb_local_handler(struct popup_svc_call *call)
{
	struct arbiter *a = call->state;
	const struct popup_svc_method *m = svc_method_by_id(a->svc, call->method);
	struct lwait lw = { .done = false };
	struct job *j;
	int err;

	if (!m)
		return -EINVAL;
	j = job_new(call->req_len, m->max_res);
	if (!j)
		return -ENOMEM;
	memcpy(j->req, call->req, call->req_len);
	j->svc = a->svc;
	j->m = m;
	j->origin = call->origin;	/* libpopup, or popup.ko UDP arrival */
	j->arrival_ns = now_ns();
	j->deadline_ns = j->arrival_ns +
		(uint64_t)__atomic_load_n(&a->svc->pool.timeout_ms, __ATOMIC_RELAXED) * 1000000;
	pthread_mutex_init(&lw.lock, NULL);
	pthread_cond_init(&lw.cond, NULL);
	err = submit(a, j, &lw);
	if (!err) {
		pthread_mutex_lock(&lw.lock);
		while (!lw.done)
			pthread_cond_wait(&lw.cond, &lw.lock);
		pthread_mutex_unlock(&lw.lock);
		err = j->status;
		if (j->res_len > call->res_cap) {
			err = -EMSGSIZE;	/* the caller's buffer is smaller */
		} else if (err && !j->res_len && j->msg) {
			/* popupd's own reason ("subserver died ...") is the
			 * error message, as on the epoll path */
			call->res_len = (uint32_t)strnlen(j->msg, call->res_cap);
			memcpy(call->res, j->msg, call->res_len);
		} else {
			call->res_len = j->res_len;
			memcpy(call->res, j->res, j->res_len);
		}
	} else if (err == -ESHUTDOWN) {
		err = -EBUSY;
	}
	pthread_cond_destroy(&lw.cond);
	pthread_mutex_destroy(&lw.lock);
	job_free(j);
	return err;
}

/* ---- subserver connections (arbiter thread, lock held) -------------------- */

static void sub_send(struct sub *s, const struct popup_wire_hdr *h, const void *p, uint32_t n)
{
	uint32_t need = POPUP_WIRE_HDR_LEN + n;

	if (s->fd < 0)
		return;
	if (s->out_len - s->out_off + need > SUB_OUT_MAX) {
		shutdown(s->fd, SHUT_RDWR);	/* handled as a dead subserver */
		return;
	}
	if (s->out_off && s->out_len + need > s->out_cap) {
		memmove(s->out, s->out + s->out_off, s->out_len - s->out_off);
		s->out_len -= s->out_off;
		s->out_off = 0;
	}
	if (s->out_len + need > s->out_cap) {
		uint32_t cap = s->out_cap ? s->out_cap : 4096;
		unsigned char *o;

		while (cap < s->out_len + need)
			cap *= 2;
		o = realloc(s->out, cap);
		if (!o) {
			shutdown(s->fd, SHUT_RDWR);	/* handled as a dead subserver */
			return;
		}
		s->out = o;
		s->out_cap = cap;
	}
	popup_wire_encode(s->out + s->out_len, h);
	if (n)
		memcpy(s->out + s->out_len + POPUP_WIRE_HDR_LEN, p, n);
	s->out_len += need;
}

/* Requeue or fail what @s held, then forget it. */
static void sub_dead(struct sub *s, const char *why)
{
	struct areq *r, *next;
	struct sub **pp;

	pr_warn("arbiter: subserver %s gone (%s)%s", s->peer, why,
		s->inflight ? "; its requests are retried or failed" : "");
	for (r = s->inflight; r; r = next) {
		struct arbiter *a = r->a;
		bool idem = a->retry == RETRY_ALWAYS ||
			    (a->retry == RETRY_IDEMPOTENT && ((s->idem[a->idx] >> r->midx & 1) ||
			     (a->methods[r->midx].flags & POPUP_SVC_M_IDEMPOTENT)));

		next = r->next;
		if (idem && r->tries <= a->retries) {
			a->retried++;
			r->next = a->head;
			a->head = r;
			if (!a->tail)
				a->tail = r;
			a->queued++;
			continue;
		}
		a->failed++;
		areq_done_locked(r, -EPIPE, idem ? "subserver died; retries exhausted" :
				 "subserver died mid-request; not retried (method not idempotent)");
	}
	for (unsigned int i = 0; i < A.nr; i++)
		if (s->reg[i])
			A.arbs[i]->subs--;
	for (pp = &A.subs; *pp; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	}
	A.nr_subs--;
	if (s->fd >= 0)
		close(s->fd);	/* also leaves the epoll set */
	free(s->in);
	free(s->out);
	free(s);
}

static void sub_register(struct sub *s, const struct popup_wire_hdr *h, const char *p)
{
	struct popup_wire_hdr rep = *h;
	char name[POPUP_SVC_NAME_MAX] = "", line[128];
	const char *nl, *why = NULL;
	struct arbiter *a = NULL;
	unsigned int version = 0;
	uint64_t has = 0, idem = 0;

	rep.flags = POPUP_WIRE_F_WORK | POPUP_WIRE_F_REGISTER | POPUP_WIRE_F_REPLY;
	rep.len = 0;
	rep.status = POPUP_WIRE_S_OK;
	nl = memchr(p, '\n', h->len);
	if (!nl || nl - p >= (long)sizeof(line) || sscanf(p, "%31s %u", name, &version) != 2) {
		rep.status = POPUP_WIRE_S_BADREQ;
		why = "malformed registration";
	}
	for (unsigned int i = 0; !why && i < A.nr; i++)
		if (!strcmp(A.arbs[i]->name, name))
			a = A.arbs[i];
	if (!why && !a) {
		rep.status = POPUP_WIRE_S_NOSVC;
		why = "no [arbiter] for this service here";
	} else if (!why && a->def.version != version) {
		rep.status = POPUP_WIRE_S_BADREQ;
		why = "another version";
	}
	while (!why && nl && (size_t)(nl + 1 - p) < h->len) {
		const char *start = nl + 1;
		unsigned int id, flags;
		char mname[POPUP_SVC_NAME_MAX];

		nl = memchr(start, '\n', h->len - (start - p));
		if (!nl || nl - start >= (long)sizeof(line))
			break;
		memcpy(line, start, nl - start);
		line[nl - start] = 0;
		if (sscanf(line, "%u %u %31s", &id, &flags, mname) != 3)
			continue;
		for (uint32_t k = 0; k < a->def.nr_methods; k++) {
			if (a->methods[k].id != id || strcmp(a->mnames[k], mname))
				continue;
			has |= 1ull << k;
			if (flags & POPUP_SVC_M_IDEMPOTENT)
				idem |= 1ull << k;
		}
	}
	if (!why && !has) {
		rep.status = POPUP_WIRE_S_NOMETHOD;
		why = "none of its methods matches the arbiter's table (id and name)";
	}
	if (why) {
		pr_warn("arbiter: subserver %s: registration of '%s' refused: %s", s->peer, name, why);
	} else {
		rep.service = a->svc->id;
		if (!s->reg[a->idx])
			a->subs++;
		s->reg[a->idx] = true;
		s->has[a->idx] = has;
		s->idem[a->idx] = idem;
		pr_info("arbiter: subserver %s serves %s (%d of %u methods)", s->peer, name,
			__builtin_popcountll(has), a->def.nr_methods);
	}
	sub_send(s, &rep, why, why ? strlen(why) : 0);
}

static void sub_result(struct sub *s, const struct popup_wire_hdr *h, const unsigned char *p)
{
	struct areq *r, **pp;
	struct job *j;
	int status;

	for (pp = &s->inflight; *pp && (*pp)->token != h->req_id; pp = &(*pp)->next)
		;
	r = *pp;
	if (!r)
		return;	/* expired meanwhile: the client has its timeout */
	*pp = r->next;
	s->served++;
	j = r->j;
	status = wire_to_errno(h->status);
	if (status && h->reserved && h->reserved < 4096)
		status = -(int)h->reserved;
	if (h->len > j->res_cap) {
		areq_done_locked(r, -EMSGSIZE, "subserver result over the method's max_res");
		return;
	}
	memcpy(j->res, p, h->len);
	j->res_len = h->len;
	j->status = status;
	j->msg = NULL;
	areq_done_locked(r, 0, NULL);
}

/* Parse what @s sent; false when it must be dropped. */
static bool sub_parse(struct sub *s)
{
	uint32_t off = 0;
	bool ok = true;

	while (s->in_len - off >= POPUP_WIRE_HDR_LEN) {
		struct popup_wire_hdr h;

		popup_wire_decode(s->in + off, &h);
		if (h.magic != POPUP_WIRE_MAGIC || h.version != POPUP_WIRE_VERSION ||
		    !(h.flags & POPUP_WIRE_F_WORK) || h.len > POPUP_SVC_MAX_MSG ||
		    ((h.flags & POPUP_WIRE_F_REGISTER) && h.len > SUB_REG_MAX)) {
			ok = false;
			break;
		}
		if (s->in_len - off - POPUP_WIRE_HDR_LEN < h.len)
			break;
		if (h.flags & POPUP_WIRE_F_REGISTER) {
			char reg[SUB_REG_MAX + 1];

			memcpy(reg, s->in + off + POPUP_WIRE_HDR_LEN, h.len);
			reg[h.len] = 0;
			sub_register(s, &h, reg);
		} else {
			if (h.flags & POPUP_WIRE_F_REPLY)
				sub_result(s, &h, s->in + off + POPUP_WIRE_HDR_LEN);
			if (++s->asks > SUB_ASKS_MAX) {
				ok = false;
				break;
			}
		}
		off += POPUP_WIRE_HDR_LEN + h.len;
	}
	if (off) {
		memmove(s->in, s->in + off, s->in_len - off);
		s->in_len -= off;
	}
	return ok;
}

static bool sub_read(struct sub *s)
{
	for (;;) {
		ssize_t n;

		if (s->in_cap - s->in_len < 16384) {
			uint32_t cap = s->in_cap ? s->in_cap * 2 : 32768;
			unsigned char *in;

			if (cap > 2 * (POPUP_SVC_MAX_MSG + POPUP_WIRE_HDR_LEN) + 32768)
				return false;
			in = realloc(s->in, cap);
			if (!in)
				return false;
			s->in = in;
			s->in_cap = cap;
		}
		n = recv(s->fd, s->in + s->in_len, s->in_cap - s->in_len, MSG_DONTWAIT);
		if (n == 0)
			return false;
		if (n < 0)
			return errno == EAGAIN || errno == EINTR;
		s->in_len += n;
		if (!sub_parse(s))
			return false;
	}
}

static bool sub_flush(struct sub *s)
{
	while (s->out_off < s->out_len) {
		ssize_t n = send(s->fd, s->out + s->out_off, s->out_len - s->out_off,
				 MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN)
			return false;
		if (n < 0)
			break;
		s->out_off += n;
	}
	if (s->out_off == s->out_len)
		s->out_off = s->out_len = 0;
	if ((s->out_len != 0) != s->want_out) {
		struct epoll_event ev = { .events = EPOLLIN | (s->out_len ? EPOLLOUT : 0),
					  .data.ptr = s };

		s->want_out = s->out_len != 0;
		epoll_ctl(A.epfd, EPOLL_CTL_MOD, s->fd, &ev);
	}
	return true;
}

static void accept_subs(void)
{
	for (;;) {
		struct sockaddr_in sa;
		socklen_t sl = sizeof(sa);
		int fd = accept4(A.lfd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct epoll_event ev = { .events = EPOLLIN };
		struct sub *s;
		int one = 1;
		char ip[INET_ADDRSTRLEN] = "?";

		if (fd < 0)
			return;
		if (A.nr_subs >= SUB_MAX || !(s = calloc(1, sizeof(*s)))) {
			pr_warn("arbiter: refusing a subserver: %u connected (at most %d)",
				A.nr_subs, SUB_MAX);
			close(fd);
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		s->fd = fd;
		inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof(ip));
		snprintf(s->peer, sizeof(s->peer), "%s:%u", ip, ntohs(sa.sin_port));
		ev.data.ptr = s;
		if (epoll_ctl(A.epfd, EPOLL_CTL_ADD, fd, &ev)) {
			close(fd);
			free(s);
			continue;
		}
		s->next = A.subs;
		A.subs = s;
		A.nr_subs++;
	}
}

/* ---- dispatching ------------------------------------------------------------ */

/* The next subserver (round robin) with an ask that serves method @k of @a. */
static struct sub *pick(const struct arbiter *a, uint32_t k)
{
	unsigned int i = 0, first_i = 0, start = A.rr % (A.nr_subs ? A.nr_subs : 1);
	struct sub *s, *first = NULL;

	for (s = A.subs; s; s = s->next, i++) {
		if (!s->asks || !s->reg[a->idx] || !(s->has[a->idx] >> k & 1) || s->fd < 0)
			continue;
		if (i >= start) {
			A.rr = i + 1;
			return s;
		}
		if (!first) {
			first = s;
			first_i = i;
		}
	}
	if (first)
		A.rr = first_i + 1;	/* wrapped around */
	return first;
}

static void hand_out(struct sub *s, struct areq *r)
{
	struct job *j = r->j;
	struct popup_wire_hdr h = {
		.magic = POPUP_WIRE_MAGIC, .version = POPUP_WIRE_VERSION,
		.flags = POPUP_WIRE_F_WORK, .method = j->m->id, .service = r->a->svc->id,
		.req_id = ++s->next_token, .len = j->req_len,
	};
	uint64_t now = now_ns();

	if (j->deadline_ns)
		h.status = j->deadline_ns > now ? (j->deadline_ns - now) / 1000000 + 1 : 1;
	r->token = h.req_id;
	r->tries++;
	s->asks--;
	r->next = s->inflight;
	s->inflight = r;
	r->a->dispatched++;
	sub_send(s, &h, j->req, j->req_len);
}

/* Take the request at *@pp (after @prev, NULL at the head) off @a's queue. */
static void queue_unlink_locked(struct arbiter *a, struct areq **pp, struct areq *prev)
{
	struct areq *r = *pp;

	*pp = r->next;
	if (a->tail == r)
		a->tail = prev;
	a->queued--;
}

static void dispatch_locked(void)
{
	for (unsigned int i = 0; i < A.nr; i++) {
		struct arbiter *a = A.arbs[i];
		struct areq **pp = &a->head, *prev = NULL;

		while (*pp) {
			struct areq *r = *pp;
			struct sub *s = pick(a, r->midx);

			if (!s) {
				prev = r;
				pp = &r->next;
				continue;
			}
			queue_unlink_locked(a, pp, prev);
			hand_out(s, r);
		}
	}
}

static void expire_locked(uint64_t now)
{
	for (unsigned int i = 0; i < A.nr; i++) {
		struct arbiter *a = A.arbs[i];
		struct areq **pp = &a->head, *prev = NULL;

		while (*pp) {
			struct areq *r = *pp;

			if (!r->j->deadline_ns || now < r->j->deadline_ns) {
				prev = r;
				pp = &r->next;
				continue;
			}
			queue_unlink_locked(a, pp, prev);
			a->expired++;
			areq_done_locked(r, -ETIMEDOUT, A.nr_subs ?
					 "deadline passed while queued at the arbiter" :
					 "deadline passed: no subserver connected");
		}
	}
	for (struct sub *s = A.subs; s; s = s->next) {
		struct areq **pp = &s->inflight;

		while (*pp) {
			struct areq *r = *pp;

			if (!r->j->deadline_ns || now < r->j->deadline_ns + INFLIGHT_GRACE_NS) {
				pp = &r->next;
				continue;
			}
			*pp = r->next;
			r->a->expired++;
			areq_done_locked(r, -ETIMEDOUT, "deadline passed while a subserver ran it");
		}
	}
}

/* Requests waiting anywhere? Then deadlines need the clock. */
static bool pending_locked(void)
{
	for (unsigned int i = 0; i < A.nr; i++)
		if (A.arbs[i]->queued)
			return true;
	for (struct sub *s = A.subs; s; s = s->next)
		if (s->inflight)
			return true;
	return false;
}

static void *arbiter_thread(void *arg)
{
	int wait_ms = 1000;

	(void)arg;
	pthread_setname_np(pthread_self(), "popupd-arbiter");
	for (;;) {
		struct epoll_event ev[64];
		int n = epoll_wait(A.epfd, ev, 64, wait_ms);
		uint64_t v;

		pthread_mutex_lock(&A.lock);
		if (A.stopping) {
			pthread_mutex_unlock(&A.lock);
			break;
		}
		for (int i = 0; i < n; i++) {
			struct sub *s = ev[i].data.ptr;

			if (!s) {
				accept_subs();
			} else if (s == (struct sub *)&A.wake_fd) {
				if (read(A.wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
					pr_warn("arbiter: eventfd: %s", strerror(errno));
			} else if (ev[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
				if (!sub_read(s))
					sub_dead(s, "connection closed or protocol error");
			}
		}
		expire_locked(now_ns());
		dispatch_locked();
		for (struct sub *s = A.subs, *next; s; s = next) {
			next = s->next;
			if (!sub_flush(s))
				sub_dead(s, "write failed");
		}
		/* Deadlines are checked every ARB_TICK_MS while requests wait;
		 * new ones and subserver traffic wake the thread anyway. */
		wait_ms = pending_locked() ? ARB_TICK_MS : 1000;
		pthread_mutex_unlock(&A.lock);
	}
	return NULL;
}

/* ---- life cycle and statistics ----------------------------------------------- */

int arbiter_start(const struct popupd_config *cfg)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(cfg->arbiter_port) };
	const char *addr = cfg->arbiter_bind ? cfg->arbiter_bind : cfg->bind_addr;
	struct epoll_event ev = { .events = EPOLLIN };
	int one = 1, err;

	if (!A.nr)
		return 0;
	if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
		pr_err("arbiter: bind address '%s' is not IPv4", addr);
		return -EINVAL;
	}
	A.lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	A.epfd = epoll_create1(EPOLL_CLOEXEC);
	A.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (A.lfd < 0 || A.epfd < 0 || A.wake_fd < 0)
		return -errno;
	setsockopt(A.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(A.lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(A.lfd, 128)) {
		err = -errno;
		pr_err("arbiter: cannot listen on %s:%d: %s%s", addr, cfg->arbiter_port,
		       strerror(-err), err == -EADDRINUSE ? " (set arbiter_port)" : "");
		return err;
	}
	A.port = sock_port(A.lfd);
	ev.data.ptr = NULL;
	epoll_ctl(A.epfd, EPOLL_CTL_ADD, A.lfd, &ev);
	ev.data.ptr = &A.wake_fd;
	epoll_ctl(A.epfd, EPOLL_CTL_ADD, A.wake_fd, &ev);
	pthread_mutex_lock(&A.lock);
	A.started = true;
	pthread_mutex_unlock(&A.lock);
	err = pthread_create(&A.thread, NULL, arbiter_thread, NULL);
	if (err) {
		A.started = false;
		return -err;
	}
	pr_info("arbiter: %u service(s); subservers connect to port %u", A.nr, A.port);
	return 0;
}

uint16_t arbiter_port(void)
{
	return A.port;
}

/* After the workers stopped: answer what is left ("busy": try again
 * elsewhere), drop the subservers. */
void arbiter_stop(void)
{
	bool started;

	pthread_mutex_lock(&A.lock);
	started = A.started;
	A.stopping = true;
	pthread_mutex_unlock(&A.lock);
	if (started) {
		wake();
		pthread_join(A.thread, NULL);
	}
	pthread_mutex_lock(&A.lock);
	while (A.subs) {
		struct sub *s = A.subs;

		for (struct areq *r = s->inflight, *next; r; r = next) {
			next = r->next;
			areq_done_locked(r, -EBUSY, "arbiter stopping");
		}
		s->inflight = NULL;
		sub_dead(s, "arbiter stopping");
	}
	for (unsigned int i = 0; i < A.nr; i++) {
		struct arbiter *a = A.arbs[i];

		while (a->head) {
			struct areq *r = a->head;

			a->head = r->next;
			areq_done_locked(r, -EBUSY, "arbiter stopping");
		}
		a->tail = NULL;
		a->queued = 0;
	}
	A.started = false;
	pthread_mutex_unlock(&A.lock);
	if (A.lfd >= 0)
		close(A.lfd);
	if (A.epfd >= 0)
		close(A.epfd);
	if (A.wake_fd >= 0)
		close(A.wake_fd);
	A.lfd = A.epfd = A.wake_fd = -1;
}

void arbiter_free(void)
{
	for (unsigned int i = 0; i < A.nr; i++)
		free(A.arbs[i]);
	A.nr = 0;
}

int arbiter_stats_text(char *buf, size_t cap)
{
	size_t len = 0;

	pthread_mutex_lock(&A.lock);
	for (unsigned int i = 0; i < A.nr; i++) {
		struct arbiter *a = A.arbs[i];
		uint32_t asks = 0, held = 0;
		int n;

		for (struct sub *s = A.subs; s; s = s->next) {
			if (!s->reg[a->idx])
				continue;
			asks += s->asks;
			for (struct areq *r = s->inflight; r; r = r->next)
				held += r->a == a;
		}
		n = snprintf(buf + len, cap - len, "arbiter name=%s id=%u subservers=%u asks=%u "
			     "queued=%u held=%u dispatched=%llu retried=%llu failed=%llu "
			     "expired=%llu busy=%llu done=%llu\n", a->name, a->svc->id, a->subs,
			     asks, a->queued, held, (unsigned long long)a->dispatched,
			     (unsigned long long)a->retried, (unsigned long long)a->failed,
			     (unsigned long long)a->expired, (unsigned long long)a->busy,
			     (unsigned long long)a->done);
		if (n < 0 || (size_t)n >= cap - len) {
			pthread_mutex_unlock(&A.lock);
			return -E2BIG;
		}
		len += n;
	}
	pthread_mutex_unlock(&A.lock);
	return (int)len;
}
