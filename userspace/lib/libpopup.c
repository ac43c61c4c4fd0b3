// SPDX-License-Identifier: LGPL-2.1 OR BSD-2-Clause
/*
 * libpopup front end: the public API entry points.
 *
 * Everything a caller can get wrong is checked here, once, so that both
 * backends see the same validated requests and return the same errno for
 * the same mistake. This file also owns the library-wide pieces (logging,
 * errno strings, backend choice), the pool defaults, and the binding's
 * slot allocator, which is the same for both backends: a bitmap of free
 * slots under the binding lock, with a condition variable for callers that
 * wait for one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "libpopup_internal.h"

/* ---- logging and errors ------------------------------------------------ */

static int default_print(enum popup_print_level level, const char *fmt,
			 va_list args)
{
	static int debug = -1;

	if (debug < 0)
		debug = getenv("POPUP_DEBUG") != NULL;
	if (level == POPUP_DEBUG && !debug)
		return 0;
	return vfprintf(stderr, fmt, args);
}

static popup_print_fn_t print_fn = default_print;

popup_print_fn_t popup_set_print(popup_print_fn_t fn)
{
	popup_print_fn_t old = print_fn;

	print_fn = fn;
	return old;
}

void libpopup_print(enum popup_print_level level, const char *fmt, ...)
{
	popup_print_fn_t fn = print_fn;
	int saved = errno;	/* callers log with errno still needed */
	va_list args;

	if (!fn)
		return;
	va_start(args, fmt);
	fn(level, fmt, args);
	va_end(args);
	errno = saved;
}

/* Errors whose generic strerror() text would mislead a caller. */
static const char *popup_errstr(int err)
{
	switch (err) {
	case ECONNRESET:	return "service withdrawn or its server died";
	case EOPNOTSUPP:	return "no such method in the interface";
	case EMSGSIZE:		return "arguments larger than the method allows";
	case ENOBUFS:		return "result larger than the caller's buffer";
	case EOVERFLOW:		return "handler result larger than the method allows";
	case EAGAIN:		return "service queue or one-way quota full";
	case ENOENT:		return "no such service name and version";
	case EEXIST:		return "service name and version already exported";
	case ENODEV:		return "popup.ko not loaded (/dev/popup missing)";
	default:		return NULL;
	}
}

int popup_strerror(int err, char *buf, size_t size)
{
	const char *s;
	int n;

	if (!buf || !size)
		return -EINVAL;
	err = err < 0 ? -err : err;
	s = popup_errstr(err);
	if (s)
		n = snprintf(buf, size, "%s", s);
	else
		n = snprintf(buf, size, "%s", strerror(err));
	return n >= (int)size ? -ERANGE : 0;
}

long popup_get_error(const void *ptr)
{
	return ptr ? 0 : -errno;
}

/* Return NULL with errno set: the pointer-returning functions' exit. */
static void *err_ptr(int err)
{
	errno = err < 0 ? -err : err;
	return NULL;
}

/* ---- small helpers shared with the backends ---------------------------- */

uint64_t libpopup_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

uint64_t libpopup_deadline_from_ms(int timeout_ms)
{
	if (timeout_ms < 0)
		return 0;
	return libpopup_now_ns() + (uint64_t)timeout_ms * 1000000ull;
}

int libpopup_ms_left(uint64_t deadline)
{
	uint64_t now;

	if (!deadline)
		return -1;
	now = libpopup_now_ns();
	if (now >= deadline)
		return 0;
	/* Round up so poll() never returns just before the deadline. */
	return (int)min_t(uint64_t, (deadline - now + 999999) / 1000000, INT32_MAX);
}

void libpopup_timespec_from_ns(struct timespec *ts, uint64_t ns)
{
	ts->tv_sec = ns / 1000000000ull;
	ts->tv_nsec = ns % 1000000000ull;
}

bool libpopup_opts_valid(const void *opts, size_t known_sz, const char *type_name)
{
	size_t sz = *(const size_t *)opts;
	const char *p = opts;

	if (sz < sizeof(size_t)) {
		pr_warn("%s: size %zu is too small\n", type_name, sz);
		return false;
	}
	/* A newer caller may pass a bigger struct if the rest is zero. */
	for (size_t i = known_sz; i < sz; i++) {
		if (p[i]) {
			pr_warn("%s has non-zero fields this libpopup does not know\n",
				type_name);
			return false;
		}
	}
	return true;
}

const struct method_info *libpopup_method_find(const struct method_info *methods,
					       uint32_t nr, uint32_t id)
{
	for (uint32_t i = 0; i < nr; i++)
		if (methods[i].id == id)
			return &methods[i];
	return NULL;
}

/* The module's rules (kmod/service.c), so both backends agree. */
int libpopup_pool_resolve(const struct popup_pool_attr *in, struct popup_pool_attr *out)
{
	static const struct popup_pool_attr defaults = {
		.min_idle = 1, .max_idle = 4, .increment = 1, .max_threads = 16,
		.queue_limit = 256, .idle_timeout_ms = 10000,
	};
	static const struct popup_pool_attr zero;
	const struct popup_pool_attr *p = in;

	if (!p || !memcmp(p, &zero, sizeof(zero)))
		p = &defaults;
	if (p->max_threads < 1 || p->max_threads > POPUP_MAX_THREADS ||
	    p->max_idle < 1 || p->max_idle < p->min_idle ||
	    p->max_idle > p->max_threads || p->increment < 1 ||
	    p->increment > p->max_threads || p->queue_limit > POPUP_MAX_QUEUE) {
		pr_warn("pool: need min_idle <= max_idle <= max_threads <= %u, 1 <= increment <= max_threads, queue_limit <= %u\n",
			POPUP_MAX_THREADS, POPUP_MAX_QUEUE);
		return -EINVAL;
	}
	*out = *p;
	return 0;
}

/* ---- backends ---------------------------------------------------------- */

const char *popup_backend_name(enum popup_backend backend)
{
	switch (backend) {
	case POPUP_BACKEND_AUTO:	return "auto";
	case POPUP_BACKEND_KERNEL:	return "kernel";
	case POPUP_BACKEND_USER:	return "user";
	case POPUP_BACKEND_NET:		return "net";
	}
	return "unknown";
}

int popup_backend_resolve(enum popup_backend want)
{
	const char *env;

	if (want == POPUP_BACKEND_KERNEL || want == POPUP_BACKEND_USER)
		return want;
	if (want != POPUP_BACKEND_AUTO)
		return -EINVAL;
	env = getenv("POPUP_BACKEND");
	if (env && *env) {
		if (!strcmp(env, "kernel"))
			return POPUP_BACKEND_KERNEL;
		if (!strcmp(env, "user"))
			return POPUP_BACKEND_USER;
		pr_warn("POPUP_BACKEND=%s: expected \"kernel\" or \"user\"\n", env);
		return -EINVAL;
	}
	return access("/dev/" "popup", F_OK) ? POPUP_BACKEND_USER : POPUP_BACKEND_KERNEL;
}

static const struct popup_ops *backend_ops(int backend)
{
	return backend == POPUP_BACKEND_KERNEL ? &libpopup_kernel_ops : &libpopup_user_ops;
}

/* ---- server ------------------------------------------------------------ */

/* As the module checks names: printable, non-space ASCII. */
static int check_name(const char *name)
{
	size_t len;

	if (!name)
		return -EINVAL;
	len = strnlen(name, POPUP_NAME_MAX);
	if (!len)
		return -EINVAL;
	if (len >= POPUP_NAME_MAX)
		return -ENAMETOOLONG;
	for (size_t i = 0; i < len; i++)
		if (name[i] <= ' ' || name[i] > '~')
			return -EINVAL;
	return 0;
}

static int check_method(const struct popup_method_def *m, uint32_t max_msg)
{
	if (m->flags & ~POPUP_METHOD_ONEWAY || !m->handler)
		return -EINVAL;
	if (m->max_arg > max_msg || m->max_res > max_msg)
		return -EINVAL;
	if ((m->flags & POPUP_METHOD_ONEWAY) && m->max_res)
		return -EINVAL;
	return 0;
}

static int copy_methods(struct popup_server *srv, const struct popup_method_def *methods,
			size_t nr)
{
	if (!methods || !nr || nr > POPUP_MAX_METHODS)
		return -EINVAL;
	srv->methods = calloc(nr, sizeof(*srv->methods));
	if (!srv->methods)
		return -ENOMEM;
	for (size_t i = 0; i < nr; i++) {
		struct method_info *mi = &srv->methods[i];
		int err = check_method(&methods[i], srv->ops->max_msg);

		if (err || libpopup_method_find(srv->methods, i, methods[i].id)) {
			pr_warn("%s: method %zu (id %u) is invalid or duplicate\n",
				srv->name, i, methods[i].id);
			return -EINVAL;
		}
		*mi = (struct method_info){
			.id = methods[i].id, .flags = methods[i].flags,
			.max_arg = methods[i].max_arg, .max_res = methods[i].max_res,
			.handler = methods[i].handler,
		};
		if (methods[i].name && !(mi->name = strdup(methods[i].name)))
			return -ENOMEM;
		srv->max_arg = max_t(uint32_t, srv->max_arg, mi->max_arg);
		srv->max_res = max_t(uint32_t, srv->max_res, mi->max_res);
		srv->nr_methods = i + 1;
	}
	return 0;
}

static void free_methods(struct method_info *methods, uint32_t nr)
{
	for (uint32_t i = 0; methods && i < nr; i++)
		free(methods[i].name);
	free(methods);
}

static void server_free(struct popup_server *srv)
{
	free_methods(srv->methods, srv->nr_methods);
	pthread_mutex_destroy(&srv->lock);
	free(srv);
}

struct popup_server *
popup_server__create(const char *name, uint32_t version,
		     const struct popup_method_def *methods, size_t nr_methods,
		     const struct popup_server_opts *opts)
{
	struct popup_server *srv;
	int err, backend;

	err = check_name(name);
	if (err)
		return err_ptr(err);
	if (!OPTS_VALID(opts, popup_server_opts))
		return err_ptr(-EINVAL);
	backend = popup_backend_resolve(OPTS_GET(opts, backend, POPUP_BACKEND_AUTO));
	if (backend < 0)
		return err_ptr(backend);

	srv = calloc(1, sizeof(*srv));
	if (!srv)
		return err_ptr(-ENOMEM);
	pthread_mutex_init(&srv->lock, NULL);
	strcpy(srv->name, name);
	srv->version = version;
	srv->backend = backend;
	srv->ops = backend_ops(backend);
	srv->user_data = OPTS_GET(opts, user_data, NULL);
	err = copy_methods(srv, methods, nr_methods);
	if (!err)
		err = libpopup_pool_resolve(OPTS_GET(opts, pool, NULL), &srv->pool);
	if (!err)
		err = srv->ops->server_export(srv);
	if (err) {
		server_free(srv);
		return err_ptr(err);
	}
	pr_debug("%s.%u exported (%s backend)\n", name, version, srv->ops->name);
	return srv;
}

int popup_server__run(struct popup_server *srv)
{
	int err;

	if (!srv)
		return -EINVAL;
	pthread_mutex_lock(&srv->lock);
	err = srv->running ? -EBUSY : 0;
	srv->running = true;
	pthread_mutex_unlock(&srv->lock);
	if (err)
		return err;
	err = srv->ops->server_run(srv);
	pthread_mutex_lock(&srv->lock);
	srv->running = false;
	pthread_mutex_unlock(&srv->lock);
	return err;
}

int popup_server__stop(struct popup_server *srv)
{
	return srv ? srv->ops->server_stop(srv) : -EINVAL;
}

void popup_server__destroy(struct popup_server *srv)
{
	if (!srv)
		return;
	srv->ops->server_withdraw(srv);
	server_free(srv);
}

int popup_server__set_pool(struct popup_server *srv, const struct popup_pool_attr *pool)
{
	struct popup_pool_attr p, old;
	int err;

	if (!srv || !pool)
		return -EINVAL;
	err = libpopup_pool_resolve(pool, &p);
	if (err)
		return err;
	pthread_mutex_lock(&srv->lock);
	old = srv->pool;
	srv->pool = p;
	pthread_mutex_unlock(&srv->lock);
	err = srv->ops->server_set_pool(srv);
	if (err) {
		pthread_mutex_lock(&srv->lock);
		srv->pool = old;
		pthread_mutex_unlock(&srv->lock);
	}
	return err;
}

int popup_server__get_pool(const struct popup_server *srv, struct popup_pool_attr *pool)
{
	struct popup_server *s = (struct popup_server *)srv;

	if (!srv || !pool)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	*pool = srv->pool;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int popup_server__stats(const struct popup_server *srv, struct popup_server_stats *stats)
{
	if (!srv || !stats)
		return -EINVAL;
	return srv->ops->server_stats(srv, stats);
}

const char *popup_server__name(const struct popup_server *srv)
{
	return srv ? srv->name : NULL;
}

uint32_t popup_server__version(const struct popup_server *srv)
{
	return srv ? srv->version : 0;
}

enum popup_backend popup_server__backend(const struct popup_server *srv)
{
	return srv ? srv->backend : POPUP_BACKEND_AUTO;
}

/* ---- client and bindings ----------------------------------------------- */

struct popup_client *popup_client__open(const struct popup_client_opts *opts)
{
	struct popup_client *c;
	int backend, err;

	if (!OPTS_VALID(opts, popup_client_opts))
		return err_ptr(-EINVAL);
	backend = popup_backend_resolve(OPTS_GET(opts, backend, POPUP_BACKEND_AUTO));
	if (backend < 0)
		return err_ptr(backend);
	c = calloc(1, sizeof(*c));
	if (!c)
		return err_ptr(-ENOMEM);
	c->fd = -1;
	c->backend = backend;
	c->ops = backend_ops(backend);
	err = c->ops->client_open(c);
	if (err) {
		free(c);
		return err_ptr(err);
	}
	return c;
}

void popup_client__close(struct popup_client *client)
{
	if (!client)
		return;
	client->ops->client_close(client);
	free(client);
}

enum popup_backend popup_client__backend(const struct popup_client *client)
{
	return client ? client->backend : POPUP_BACKEND_AUTO;
}

static void binding_free(struct popup_binding *b)
{
	free_methods(b->methods, b->nr_methods);
	pthread_cond_destroy(&b->slot_freed);
	pthread_mutex_destroy(&b->lock);
	free(b);
}

static int binding_init(struct popup_binding *b, const struct popup_import_opts *opts)
{
	pthread_condattr_t ca;
	int timeout;

	b->nr_slots = OPTS_GET(opts, slots, 0) ?: 1;
	if (b->nr_slots > POPUP_MAX_SLOTS)
		return -EINVAL;
	timeout = OPTS_GET(opts, timeout_ms, 0);
	b->timeout_ms = timeout > 0 ? timeout : -1;
	b->priority = OPTS_GET(opts, priority, 0);
	b->oneway_quota = OPTS_GET(opts, oneway_quota, 0) ?: (b->nr_slots + 1) / 2;
	if (b->oneway_quota > b->nr_slots)
		return -EINVAL;
	b->free_slots = b->nr_slots == 64 ? ~0ull : (1ull << b->nr_slots) - 1;
	pthread_mutex_init(&b->lock, NULL);
	/* Slot waits use absolute CLOCK_MONOTONIC deadlines. */
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&b->slot_freed, &ca);
	pthread_condattr_destroy(&ca);
	return 0;
}

struct popup_binding *
popup_client__import(struct popup_client *client, const char *name,
		     uint32_t version, const struct popup_import_opts *opts)
{
	struct popup_binding *b;
	int err;

	if (!client)
		return err_ptr(-EINVAL);
	err = check_name(name);
	if (err)
		return err_ptr(err);
	if (!OPTS_VALID(opts, popup_import_opts))
		return err_ptr(-EINVAL);
	b = calloc(1, sizeof(*b));
	if (!b)
		return err_ptr(-ENOMEM);
	err = binding_init(b, opts);
	if (err) {
		free(b);
		return err_ptr(err);
	}
	b->client = client;
	b->ops = client->ops;
	strcpy(b->name, name);
	b->version = version;
	err = b->ops->import(b);
	if (err) {
		binding_free(b);
		return err_ptr(err);
	}
	return b;
}

void popup_binding__destroy(struct popup_binding *b)
{
	if (!b)
		return;
	b->ops->unimport(b);
	binding_free(b);
}

uint32_t popup_binding__slots(const struct popup_binding *b)
{
	return b ? b->nr_slots : 0;
}

uint32_t popup_binding__slot_size(const struct popup_binding *b)
{
	return b ? b->slot_size : 0;
}

/* The absolute deadline a call with @timeout_ms gets on @b. */
static uint64_t call_deadline(const struct popup_binding *b, int timeout_ms)
{
	if (timeout_ms == POPUP_TIMEOUT_DEFAULT)
		timeout_ms = b->timeout_ms;
	return libpopup_deadline_from_ms(timeout_ms);
}

uint8_t *libpopup_slot_ptr(const struct popup_binding *b, unsigned int slot)
{
	return b->slots + (size_t)slot * b->slot_stride;
}

/* A free tainted slot the backend says is ready again, or -1. */
static int ready_tainted_locked(struct popup_binding *b)
{
	uint64_t cand = b->free_slots & b->tainted_slots;

	while (cand && b->ops->slot_ready) {
		int slot = __builtin_ctzll(cand);

		cand &= cand - 1;
		if (b->ops->slot_ready(b, slot)) {
			b->tainted_slots &= ~(1ull << slot);
			return slot;
		}
	}
	return -1;
}

/* How long to sleep before looking at tainted slots again: 1 ms. */
static void tainted_wait_locked(struct popup_binding *b, uint64_t deadline)
{
	uint64_t until = libpopup_now_ns() + 1000000;
	struct timespec ts;

	if (deadline && deadline < until)
		until = deadline;
	libpopup_timespec_from_ns(&ts, until);
	pthread_cond_timedwait(&b->slot_freed, &b->lock, &ts);
}

int libpopup_slot_acquire(struct popup_binding *b, uint64_t deadline, bool no_wait_tainted)
{
	struct timespec ts;
	int slot = -1;

	libpopup_timespec_from_ns(&ts, deadline);
	pthread_mutex_lock(&b->lock);
	for (;;) {
		/* Prefer slots no one-way call may still hold. */
		uint64_t clean = b->free_slots & ~b->tainted_slots;

		if (clean) {
			slot = __builtin_ctzll(clean);
			break;
		}
		if (b->free_slots) {
			slot = ready_tainted_locked(b);
			if (slot >= 0)
				break;
			slot = -EAGAIN;
			if (no_wait_tainted)
				break;
		}
		slot = -ETIMEDOUT;
		if (deadline && libpopup_now_ns() >= deadline)
			break;
		if (b->free_slots)
			tainted_wait_locked(b, deadline);
		else if (deadline)
			pthread_cond_timedwait(&b->slot_freed, &b->lock, &ts);
		else
			pthread_cond_wait(&b->slot_freed, &b->lock);
	}
	if (slot >= 0)
		b->free_slots &= ~(1ull << slot);
	pthread_mutex_unlock(&b->lock);
	return slot;
}

int popup_binding__slot_acquire(struct popup_binding *b, int timeout_ms)
{
	if (!b)
		return -EINVAL;
	return libpopup_slot_acquire(b, call_deadline(b, timeout_ms), false);
}

void popup_binding__slot_release(struct popup_binding *b, unsigned int slot)
{
	if (!b || slot >= b->nr_slots)
		return;
	pthread_mutex_lock(&b->lock);
	b->free_slots |= 1ull << slot;
	pthread_cond_signal(&b->slot_freed);
	pthread_mutex_unlock(&b->lock);
}

void *popup_binding__slot(struct popup_binding *b, unsigned int slot, uint32_t *size)
{
	if (!b || slot >= b->nr_slots)
		return err_ptr(-EINVAL);
	if (size)
		*size = b->slot_size;
	return libpopup_slot_ptr(b, slot);
}

/*
 * The method checks both call flavours share; -errno or 0. Without a
 * method table (the kernel backend: the module keeps it and checks each
 * CALL) only the slot size is checked here, and *@mp describes @method
 * by id alone in @tmp.
 */
int libpopup_check_call(const struct popup_binding *b, uint32_t method, uint32_t arg_len,
			bool oneway, const struct method_info **mp,
			struct method_info *tmp)
{
	const struct method_info *m;

	if (!b->methods) {
		*tmp = (struct method_info){ .id = method, .max_arg = b->slot_size };
		*mp = tmp;
		return arg_len > b->slot_size ? -EMSGSIZE : 0;
	}
	m = libpopup_method_find(b->methods, b->nr_methods, method);
	if (!m)
		return -EOPNOTSUPP;
	if (!!(m->flags & POPUP_METHOD_ONEWAY) != oneway)
		return -EINVAL;
	if (arg_len > m->max_arg)
		return -EMSGSIZE;
	*mp = m;
	return 0;
}

static int call_slot(struct popup_binding *b, unsigned int slot, uint32_t method,
		     uint32_t arg_len, uint32_t *res_len, uint64_t deadline)
{
	const struct method_info *m;
	struct method_info tmp;
	uint32_t rlen = 0;
	int ret;

	ret = libpopup_check_call(b, method, arg_len, false, &m, &tmp);
	if (ret)
		return ret;
	ret = b->ops->call(b, slot, m, arg_len, &rlen, deadline);
	if (res_len)
		*res_len = rlen;
	return ret;
}

int popup_binding__call_slot(struct popup_binding *b, unsigned int slot,
			     uint32_t method, uint32_t arg_len,
			     uint32_t *res_len, int timeout_ms)
{
	if (!b || slot >= b->nr_slots)
		return -EINVAL;
	return call_slot(b, slot, method, arg_len, res_len,
			 call_deadline(b, timeout_ms));
}

int popup_binding__call(struct popup_binding *b, uint32_t method,
			const void *arg, uint32_t arg_len,
			void *res, uint32_t res_cap, uint32_t *res_len, int timeout_ms)
{
	const struct method_info *m;
	struct method_info tmp;
	uint64_t deadline;
	uint32_t rlen = 0;
	int slot, ret;
	uint8_t *p;

	if (!b || (arg_len && !arg) || (res_cap && !res))
		return -EINVAL;
	/* Fail bad calls before waiting for a slot. */
	ret = libpopup_check_call(b, method, arg_len, false, &m, &tmp);
	if (ret)
		return ret;
	deadline = call_deadline(b, timeout_ms);
	slot = libpopup_slot_acquire(b, deadline, false);
	if (slot < 0)
		return slot;
	p = libpopup_slot_ptr(b, slot);
	if (arg_len)
		memcpy(p, arg, arg_len);
	ret = call_slot(b, slot, method, arg_len, &rlen, deadline);
	if (rlen && res_cap)
		memcpy(res, p, min_t(uint32_t, rlen, res_cap));
	popup_binding__slot_release(b, slot);
	if (res_len)
		*res_len = rlen;
	return rlen > res_cap ? -ENOBUFS : ret;
}

int popup_binding__call_oneway(struct popup_binding *b, uint32_t method,
			       const void *arg, uint32_t arg_len)
{
	const struct method_info *m;
	struct method_info tmp;
	int ret;

	if (!b || (arg_len && !arg))
		return -EINVAL;
	ret = libpopup_check_call(b, method, arg_len, true, &m, &tmp);
	if (ret)
		return ret;
	return b->ops->call_oneway(b, m, arg, arg_len);
}
