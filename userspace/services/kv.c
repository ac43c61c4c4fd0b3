// SPDX-License-Identifier: LGPL-2.1 OR BSD-2-Clause
/*
 * kv: an in-memory key-value store.
 *
 *   get  KEY          -> the value, or -ENOENT (HTTP 404)
 *   put  KEY=VALUE    -> "" ; the first '=' separates, VALUE may be binary
 *   del  KEY          -> "" or -ENOENT
 *   keys              -> the keys, one per line (as many as fit)
 *
 * Keys are 1..255 bytes without '=' or NUL; values up to 60000 bytes. The
 * store holds at most max_keys entries ([service.kv] max_keys, default
 * 65536): a put past it fails with -ENOSPC rather than growing without
 * bound. A chained hash table under one reader-writer lock.
 *
 * Dispatch: per-object, keyed by KEY (kv_object_key), so the calls for
 * one key run one at a time, in order, on the key's thread, while other
 * keys proceed on other threads. The lock stays: keys that share a hash
 * bucket may live on different threads, "keys" reads every bucket, and
 * popupd.conf may choose another dispatch model; on the per-object path
 * it is rarely contended.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "popup/service.h"

#define KEY_MAX		255
#define VAL_MAX		60000
#define NR_BUCKETS	4096

struct entry {
	struct entry *next;
	uint32_t klen, vlen;
	unsigned char data[];	/* key, then value */
};

struct store {
	pthread_rwlock_t lock;	/* protects everything below */
	struct entry *b[NR_BUCKETS];
	uint32_t count, max_keys;
};

static uint32_t hash(const void *p, uint32_t n)
{
	const unsigned char *s = p;
	uint32_t h = 2166136261u;	/* FNV-1a */

	while (n--)
		h = (h ^ *s++) * 16777619u;
	return h % NR_BUCKETS;
}

static struct entry **find(struct store *st, const void *key, uint32_t klen)
{
	struct entry **pp = &st->b[hash(key, klen)];

	for (; *pp; pp = &(*pp)->next)
		if ((*pp)->klen == klen && !memcmp((*pp)->data, key, klen))
			return pp;
	return pp;
}

static int key_ok(const void *key, uint32_t klen)
{
	return klen && klen <= KEY_MAX && !memchr(key, '=', klen) && !memchr(key, 0, klen);
}

static int kv_get(struct popup_svc_call *call)
{
	struct store *st = call->state;
	struct entry *e;
	int ret = 0;

	if (!key_ok(call->req, call->req_len))
		return -EINVAL;
	pthread_rwlock_rdlock(&st->lock);
	e = *find(st, call->req, call->req_len);
	if (!e) {
		ret = -ENOENT;
	} else if (e->vlen > call->res_cap) {
		ret = -EOVERFLOW;
	} else {
		memcpy(call->res, e->data + e->klen, e->vlen);
		call->res_len = e->vlen;
	}
	pthread_rwlock_unlock(&st->lock);
	if (ret == -ENOENT) {
		static const char msg[] = "no such key";

		memcpy(call->res, msg, sizeof(msg) - 1);
		call->res_len = sizeof(msg) - 1;
	}
	return ret;
}

static int kv_put(struct popup_svc_call *call)
{
	struct store *st = call->state;
	const unsigned char *eq = memchr(call->req, '=', call->req_len);
	uint32_t klen, vlen;
	struct entry *e, **pp;
	int ret = 0;

	if (!eq)
		return -EINVAL;
	klen = eq - (const unsigned char *)call->req;
	vlen = call->req_len - klen - 1;
	if (!key_ok(call->req, klen) || vlen > VAL_MAX)
		return -EINVAL;
	e = malloc(sizeof(*e) + klen + vlen);
	if (!e)
		return -ENOMEM;
	e->klen = klen;
	e->vlen = vlen;
	memcpy(e->data, call->req, klen);
	memcpy(e->data + klen, eq + 1, vlen);
	pthread_rwlock_wrlock(&st->lock);
	pp = find(st, call->req, klen);
	if (*pp) {
		e->next = (*pp)->next;
		free(*pp);
		*pp = e;
	} else if (st->count >= st->max_keys) {
		ret = -ENOSPC;
	} else {
		e->next = NULL;
		*pp = e;
		st->count++;
	}
	pthread_rwlock_unlock(&st->lock);
	if (ret)
		free(e);
	return ret;
}

static int kv_del(struct popup_svc_call *call)
{
	struct store *st = call->state;
	struct entry **pp, *e = NULL;

	if (!key_ok(call->req, call->req_len))
		return -EINVAL;
	pthread_rwlock_wrlock(&st->lock);
	pp = find(st, call->req, call->req_len);
	if (*pp) {
		e = *pp;
		*pp = e->next;
		st->count--;
	}
	pthread_rwlock_unlock(&st->lock);
	free(e);
	return e ? 0 : -ENOENT;
}

static int kv_keys(struct popup_svc_call *call)
{
	struct store *st = call->state;
	unsigned char *out = call->res;
	uint32_t n = 0;

	pthread_rwlock_rdlock(&st->lock);
	for (uint32_t i = 0; i < NR_BUCKETS; i++) {
		for (struct entry *e = st->b[i]; e; e = e->next) {
			if (n + e->klen + 1 > call->res_cap)
				goto full;
			memcpy(out + n, e->data, e->klen);
			n += e->klen;
			out[n++] = '\n';
		}
	}
full:
	pthread_rwlock_unlock(&st->lock);
	call->res_len = n;
	return 0;
}

static int kv_init(const struct popup_svc_env *env, void **state)
{
	const char *mk = env->get(env, "max_keys");
	struct store *st = calloc(1, sizeof(*st));
	char *end;

	if (!st)
		return -ENOMEM;
	st->max_keys = 65536;
	if (mk) {
		unsigned long v = strtoul(mk, &end, 10);

		if (*end || !v || v > 100000000) {
			env->log(env, 3, "max_keys '%s' is not 1..100000000", mk);
			free(st);
			return -EINVAL;
		}
		st->max_keys = v;
	}
	pthread_rwlock_init(&st->lock, NULL);
	*state = st;
	return 0;
}

static void kv_fini(void *state)
{
	struct store *st = state;

	for (uint32_t i = 0; i < NR_BUCKETS; i++) {
		struct entry *e = st->b[i], *next;

		for (; e; e = next) {
			next = e->next;
			free(e);
		}
	}
	pthread_rwlock_destroy(&st->lock);
	free(st);
}

/* The object a call addresses: KEY, the bytes before the first '='. */
static int kv_object_key(const struct popup_svc_call *call, uint64_t *key)
{
	const unsigned char *p = call->req;
	uint64_t h = 14695981039346656037ull;	/* FNV-1a, 64 bits */

	for (uint32_t i = 0; i < call->req_len && p[i] != '='; i++)
		h = (h ^ p[i]) * 1099511628211ull;
	*key = h;
	return 0;
}

static const struct popup_svc_method methods[] = {
	{ .id = 1, .name = "get", .max_arg = KEY_MAX, .max_res = VAL_MAX,
	  .flags = POPUP_SVC_M_IDEMPOTENT, .handler = kv_get },
	{ .id = 2, .name = "put", .max_arg = KEY_MAX + 1 + VAL_MAX, .max_res = 0,
	  .flags = POPUP_SVC_M_IDEMPOTENT, .handler = kv_put },
	{ .id = 3, .name = "del", .max_arg = KEY_MAX, .max_res = 0, .handler = kv_del },
	{ .id = 4, .name = "keys", .max_arg = 0, .max_res = 65536,
	  .flags = POPUP_SVC_M_IDEMPOTENT, .handler = kv_keys },
};

POPUP_SVC_DEFINE = {
	.abi_version = POPUP_SVC_ABI_VERSION,
	.struct_size = sizeof(struct popup_svc_def),
	.name = "kv",
	.version = 1,
	.id = 2,
	.methods = methods,
	.nr_methods = sizeof(methods) / sizeof(methods[0]),
	.dispatch = POPUP_SVC_DISPATCH_PER_OBJECT,
	.pool = { .min_threads = 1, .max_threads = 4, .queue_limit = 1024 },
	.init = kv_init,
	.fini = kv_fini,
	.object_key = kv_object_key,
};
