// SPDX-License-Identifier: GPL-2.0
/*
 * Sub-calls: handlers calling other services (the popup_svc_env hooks of
 * service.h), built on libpopup's bindings and batches so that plugins
 * need not link libpopup.
 *
 * A callee is found by name. "[service.<name>] remote = host:port" sends
 * its calls to another popupd over TCP (libpopup's net backend, one
 * pipelined connection per callee); anything else is imported through
 * libpopup's local path, which reaches this popupd's own export of the
 * service (local.c) or any other process exporting it, through popup.ko
 * when /dev/popup exists and the Unix-socket backend otherwise. Bindings
 * are made on first use and shared by every handler thread (64 slots
 * each); a binding whose callee went away (-ECONNRESET: a restarted
 * server, a dropped connection) is retired and the next call imports or
 * connects again. Targets are reference-counted so a retired binding is
 * destroyed only when no handler still uses it.
 *
 * Only the calling handler waits: it blocks in its own pool thread (the
 * network workers never run blocking handlers), and the callee runs in
 * its own pool. Under the kernel backend libpopup runs each outstanding
 * call of a batch on its own caller thread (popup.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "popup/popup.h"
#include "popupd.h"

#define SUBCALL_SLOTS		POPUP_MAX_SLOTS
#define SUBCALL_TIMEOUT_MS	10000	/* when the handler has no deadline */
#define CONNECT_TIMEOUT_MS	2000

struct target {
	struct target *next;
	char name[POPUP_SVC_NAME_MAX];
	struct popup_client *cl;	/* remote: its own connection */
	struct popup_binding *b;
	unsigned int refs;		/* (sub_lock) */
	bool dead;			/* retired from the list (sub_lock) */
};

struct popup_svc_batch {
	struct popup_batch *pb;
	uint64_t deadline_ns;
	struct target **held;		/* by token */
	uint32_t nr_held, cap_held;
};

static pthread_mutex_t sub_lock = PTHREAD_MUTEX_INITIALIZER;
static struct target *targets;		/* (sub_lock) */
static struct popup_client *local_cl;	/* (sub_lock) */

static void target_destroy(struct target *t)
{
	popup_binding__destroy(t->b);
	if (t->cl)
		popup_client__close(t->cl);
	free(t);
}

/* Import @name; sub_lock held (connects are bounded by their timeout). */
static int target_open_locked(const char *name, struct target **out)
{
	const char *remote = config_svc_get(&pd.cfg, name, "remote");
	const char *rv = config_svc_get(&pd.cfg, name, "remote_version");
	const char *lim = config_svc_get(&pd.cfg, name, "subcall_limit");
	POPUP_OPTS(popup_import_opts, iopts, .slots = SUBCALL_SLOTS,
		   .timeout_ms = SUBCALL_TIMEOUT_MS);
	const struct svc *s = svc_by_name(name, strlen(name));
	uint32_t version = s ? s->def->version : 1, limit = 0;
	struct popup_client *cl;
	struct target *t;
	long err;

	if ((rv && parse_u32(rv, 0, UINT32_MAX, &version)) ||
	    (lim && parse_u32(lim, 1, 65536, &limit)))
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	snprintf(t->name, sizeof(t->name), "%s", name);
	if (remote) {
		t->cl = popup_client__connect_tcp(remote, CONNECT_TIMEOUT_MS);
		if (!t->cl) {
			err = -errno;
			pr_warn("sub-call to %s: cannot reach %s: %s", name, remote,
				strerror((int)-err));
			free(t);
			return (int)err;
		}
		cl = t->cl;
	} else {
		if (!local_cl)
			local_cl = popup_client__open(NULL);
		if (!local_cl) {
			err = -errno;
			free(t);
			return (int)err;
		}
		cl = local_cl;
	}
	t->b = popup_client__import(cl, name, version, &iopts);
	err = popup_get_error(t->b);
	if (!t->b) {
		err = err ?: -ENOENT;
		pr_debug("sub-call to %s: import: %s", name, strerror((int)-err));
		if (t->cl)
			popup_client__close(t->cl);
		free(t);
		return (int)err;
	}
	if (limit)
		popup_service__set_limit(name, version, limit);
	if (remote)
		pr_info("sub-calls to %s: remote popupd at %s", name, remote);
	else
		pr_info("sub-calls to %s: local (%s backend)", name,
			popup_backend_name(popup_client__backend(cl)));
	*out = t;
	return 0;
}

static int target_get(const char *service, struct target **out)
{
	struct target *t;
	int err = 0;

	if (!service || !*service || strlen(service) >= POPUP_SVC_NAME_MAX)
		return -EINVAL;
	pthread_mutex_lock(&sub_lock);
	for (t = targets; t; t = t->next)
		if (!strcmp(t->name, service))
			break;
	if (!t) {
		err = target_open_locked(service, &t);
		if (!err) {
			t->next = targets;
			targets = t;
		}
	}
	if (!err) {
		t->refs++;
		*out = t;
	}
	pthread_mutex_unlock(&sub_lock);
	return err;
}

/* Drop a reference; a call that saw the callee gone retires the target. */
static void target_put(struct target *t, int status)
{
	bool destroy;

	pthread_mutex_lock(&sub_lock);
	if (status == -ECONNRESET && !t->dead) {
		for (struct target **pp = &targets; *pp; pp = &(*pp)->next) {
			if (*pp == t) {
				*pp = t->next;
				break;
			}
		}
		t->dead = true;
	}
	destroy = --t->refs == 0 && t->dead;
	pthread_mutex_unlock(&sub_lock);
	if (destroy)
		target_destroy(t);
}

static int ms_until(uint64_t deadline_ns)
{
	uint64_t now = now_ns();

	if (!deadline_ns)
		return SUBCALL_TIMEOUT_MS;
	if (deadline_ns <= now)
		return 1;	/* let it fail with a timeout, not hang */
	return (int)((deadline_ns - now + 999999) / 1000000);
}

static int sub_call(const struct popup_svc_env *env, const char *service, uint32_t method,
		    const void *req, uint32_t req_len, void *res, uint32_t res_cap,
		    uint32_t *res_len, uint64_t deadline_ns)
{
	struct target *t;
	int ret;

	if (res_len)
		*res_len = 0;
	ret = target_get(service, &t);
	if (ret)
		return ret;
	ret = popup_binding__call(t->b, method, req, req_len, res, res_cap, res_len,
				  ms_until(deadline_ns));
	target_put(t, ret);
	return ret;
}

static struct popup_svc_batch *sub_batch_new(const struct popup_svc_env *env,
					     uint32_t max_outstanding, uint64_t deadline_ns)
{
	POPUP_OPTS(popup_batch_opts, opts, .max_outstanding = max_outstanding,
		   .timeout_ms = ms_until(deadline_ns));
	struct popup_svc_batch *b;

	b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	b->pb = popup_batch__new(&opts);
	if (!b->pb) {
		free(b);
		return NULL;
	}
	b->deadline_ns = deadline_ns ?: now_ns() + SUBCALL_TIMEOUT_MS * 1000000ull;
	return b;
}

static int sub_batch_add(struct popup_svc_batch *b, const char *service, uint32_t method,
			 const void *req, uint32_t req_len, void *res, uint32_t res_cap)
{
	struct target *t;
	int tok, err;

	if (!b)
		return -EINVAL;
	if (b->nr_held == b->cap_held) {
		uint32_t cap = b->cap_held ? 2 * b->cap_held : 16;
		struct target **h = realloc(b->held, cap * sizeof(*h));

		if (!h)
			return -ENOMEM;
		b->held = h;
		b->cap_held = cap;
	}
	err = target_get(service, &t);
	if (err)
		return err;
	err = popup_batch__add(b->pb, t->b, method, req, req_len, res, res_cap, &tok);
	if (err) {
		target_put(t, err);
		return err;
	}
	/* Tokens count up from 0 with every successful add. */
	b->held[b->nr_held++] = t;
	return tok;
}

static int sub_batch_wait_any(struct popup_svc_batch *b)
{
	return b ? popup_batch__wait_any(b->pb, ms_until(b->deadline_ns)) : -EINVAL;
}

static int sub_batch_wait_all(struct popup_svc_batch *b)
{
	return b ? popup_batch__wait_all(b->pb, ms_until(b->deadline_ns)) : -EINVAL;
}

static int sub_batch_result(struct popup_svc_batch *b, int token, uint32_t *res_len)
{
	return b ? popup_batch__result(b->pb, token, res_len) : -EINVAL;
}

static void sub_batch_free(struct popup_svc_batch *b)
{
	int *st;

	if (!b)
		return;
	/* Statuses first: a callee that went away retires its target. */
	st = calloc(b->nr_held ?: 1, sizeof(*st));
	for (uint32_t i = 0; st && i < b->nr_held; i++)
		st[i] = popup_batch__result(b->pb, (int)i, NULL);
	popup_batch__free(b->pb);	/* cancels what still runs */
	for (uint32_t i = 0; i < b->nr_held; i++)
		target_put(b->held[i], st ? st[i] : 0);
	free(st);
	free(b->held);
	free(b);
}

void subcall_env_init(struct popup_svc_env *env)
{
	env->call = sub_call;
	env->batch_new = sub_batch_new;
	env->batch_add = sub_batch_add;
	env->batch_wait_any = sub_batch_wait_any;
	env->batch_wait_all = sub_batch_wait_all;
	env->batch_result = sub_batch_result;
	env->batch_free = sub_batch_free;
}

/* After the last handler ran (services stopped): drop every binding. */
void subcall_fini(void)
{
	struct target *t, *n;

	pthread_mutex_lock(&sub_lock);
	for (t = targets; t; t = n) {
		n = t->next;
		target_destroy(t);
	}
	targets = NULL;
	popup_client__close(local_cl);
	local_cl = NULL;
	pthread_mutex_unlock(&sub_lock);
}
