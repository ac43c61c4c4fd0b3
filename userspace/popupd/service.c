// SPDX-License-Identifier: GPL-2.0
/*
 * The service registry: loading plugins, checking them, and running their
 * handlers.
 *
 * Every configured service is a shared object <plugin_dir>/<name>.so (or
 * the [service.<name>] path) exporting POPUP_SVC_SYMBOL (service.h). All of
 * them are opened and checked before popupd serves anything, and the first
 * bad one stops the start with a message naming the file and the fault: a
 * plugin that would only fail at its first request is a plugin that fails
 * in production. The registry is built once at start and never changes
 * afterwards (a reload changes limits, not the set of services), so
 * lookups take no lock.
 *
 * Service id 0 is popupd's own directory service ("popupd": list the
 * services, report their statistics), built in and always present, so
 * popupctl can discover names and ids over any transport.
 */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "popupd.h"

/* The first layouts, which older plugins still have (service.h). */
_Static_assert(offsetof(struct popup_svc_def, max_priority) == POPUP_SVC_DEF_SIZE_V1,
	       "struct popup_svc_def: fields may only be appended");
_Static_assert(offsetof(struct popup_svc_method, priority) == POPUP_SVC_METHOD_SIZE_V1,
	       "struct popup_svc_method: fields may only be appended");

static struct svc *svcs[POPUPD_MAX_SERVICES + 1];
static unsigned int nr_svcs;

static const struct popup_svc_pool pool_defaults = {
	.min_threads = 1,
	.max_threads = 8,
	.queue_limit = 256,
	.idle_timeout_ms = 10000,
	.timeout_ms = 5000,
};

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

const char *svc_dispatch_name(enum popup_svc_dispatch d)
{
	switch (d) {
	case POPUP_SVC_DISPATCH_POOL:		return "popup";
	case POPUP_SVC_DISPATCH_POOL_PERCPU:	return "percpu";
	case POPUP_SVC_DISPATCH_INLINE:		return "inline";
	case POPUP_SVC_DISPATCH_FIXED:		return "pool";
	case POPUP_SVC_DISPATCH_PER_CONN:	return "per-connection";
	case POPUP_SVC_DISPATCH_PER_OBJECT:	return "per-object";
	}
	return "?";
}

static int dispatch_by_name(const char *name, enum popup_svc_dispatch *d)
{
	for (int i = POPUP_SVC_DISPATCH_POOL; i <= POPUP_SVC_DISPATCH_PER_OBJECT; i++) {
		if (!strcmp(name, svc_dispatch_name((enum popup_svc_dispatch)i))) {
			*d = (enum popup_svc_dispatch)i;
			return 0;
		}
	}
	return -EINVAL;
}

/* ---- the built-in directory service ---------------------------------- */

static int dir_handle(struct popup_svc_call *call)
{
	int n;

	if (call->method == POPUPD_M_SERVICES)
		n = dir_services_text(call->res, call->res_cap);
	else
		n = dir_stats_text(call->res, call->res_cap);
	if (n < 0)
		return n;
	call->res_len = n;
	return 0;
}

static const struct popup_svc_method dir_methods[] = {
	{ .id = POPUPD_M_SERVICES, .name = "services", .max_arg = 0,
	  .max_res = 60000, .flags = POPUP_SVC_M_IDEMPOTENT, .handler = dir_handle },
	{ .id = POPUPD_M_STATS, .name = "stats", .max_arg = 0,
	  .max_res = 60000, .flags = POPUP_SVC_M_IDEMPOTENT, .handler = dir_handle },
};

static const struct popup_svc_def dir_def = {
	.abi_version = POPUP_SVC_ABI_VERSION,
	.struct_size = sizeof(struct popup_svc_def),
	.name = POPUPD_SVC_NAME,
	.version = POPUPD_SVC_VERSION,
	.id = 0,
	.methods = dir_methods,
	.nr_methods = 2,
	.dispatch = POPUP_SVC_DISPATCH_INLINE,
	.pool = { .min_threads = 1, .max_threads = 2, .queue_limit = 16 },
};

/* ---- plugin environment ---------------------------------------------- */

static const char *env_get(const struct popup_svc_env *env, const char *key)
{
	return config_svc_get(&pd.cfg, env->name, key);
}

static void env_log(const struct popup_svc_env *env, int level, const char *fmt, ...)
{
	char msg[900];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (level < LOG_LVL_ERR)
		level = LOG_LVL_ERR;
	if (level > LOG_LVL_DEBUG)
		level = LOG_LVL_DEBUG;
	if (level == 5)
		level = LOG_LVL_INFO;
	log_msg(level, "%s: %s", env->name, msg);
}

/* ---- checks ------------------------------------------------------------ */

static bool valid_name(const char *s)
{
	size_t n;

	if (!s)
		return false;
	n = strlen(s);
	return n && n < POPUP_SVC_NAME_MAX &&
	       strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == n;
}

/* A reason string for the first fault of @def, or NULL when it is fine. */
static const char *check_def(const struct popup_svc_def *def, char *why, size_t len)
{
	if (def->abi_version != POPUP_SVC_ABI_VERSION) {
		snprintf(why, len, "built for service ABI %u, popupd speaks %u; rebuild it "
			 "against this include/popup/service.h", def->abi_version,
			 POPUP_SVC_ABI_VERSION);
		return why;
	}
	if (def->struct_size < POPUP_SVC_DEF_SIZE_V1 || def->struct_size > sizeof(*def)) {
		snprintf(why, len, "struct_size %u is not %d..%zu (built against another "
			 "include/popup/service.h?)", def->struct_size, POPUP_SVC_DEF_SIZE_V1,
			 sizeof(*def));
		return why;
	}
	if (!valid_name(def->name))
		return "its name is empty, too long or not [A-Za-z0-9_-]";
	if (!def->methods || def->nr_methods == 0 || def->nr_methods > POPUP_SVC_MAX_METHODS) {
		snprintf(why, len, "it has %u methods (1..%d allowed)", def->nr_methods,
			 POPUP_SVC_MAX_METHODS);
		return why;
	}
	if (def->dispatch > POPUP_SVC_DISPATCH_PER_OBJECT)
		return "unknown dispatch model";
	if (def->max_priority < POPUP_SVC_PRIO_MIN || def->max_priority > POPUP_SVC_PRIO_MAX)
		return "max_priority out of POPUP_SVC_PRIO_MIN..POPUP_SVC_PRIO_MAX";
	for (uint32_t i = 0; i < def->nr_methods; i++) {
		const struct popup_svc_method *m = &def->methods[i];

		if (m->id == 0 || m->id > 65535 || !m->handler || !valid_name(m->name) ||
		    m->max_arg > POPUP_SVC_MAX_MSG || m->max_res > POPUP_SVC_MAX_MSG ||
		    m->priority < POPUP_SVC_PRIO_MIN || m->priority > POPUP_SVC_PRIO_MAX) {
			snprintf(why, len, "method %u (%s): id must be 1..65535, the name "
				 "[A-Za-z0-9_-], a handler set, sizes <= %u, priority -20..20", i,
				 m->name && valid_name(m->name) ? m->name : "?",
				 POPUP_SVC_MAX_MSG);
			return why;
		}
		for (uint32_t j = 0; j < i; j++) {
			if (def->methods[j].id == m->id || !strcmp(def->methods[j].name, m->name)) {
				snprintf(why, len, "methods %u and %u share an id or a name", j, i);
				return why;
			}
		}
	}
	return NULL;
}

static void default_plugin_dir(char *buf, size_t len)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	char *slash;

	/* <prefix>/{bin,sbin}/popupd -> <prefix>/lib/popup/services; the
	 * build tree has the same shape (build/bin, build/lib). */
	if (n > 0) {
		exe[n] = 0;
		slash = strrchr(exe, '/');
		if (slash) {
			*slash = 0;
			if (snprintf(buf, len, "%s/../lib/popup/services", exe) < (int)len)
				return;
		}
	}
	snprintf(buf, len, "/usr/local/lib/popup/services");
}

static int resolve_u32(const struct popupd_config *cfg, const char *svc, const char *key,
		       uint32_t min, uint32_t max, uint32_t *val)
{
	const char *s = config_svc_get(cfg, svc, key);

	if (!s)
		return 0;
	if (parse_u32(s, min, max, val)) {
		pr_err("service %s: invalid %s '%s' (%u..%u)", svc, key, s, min, max);
		return -EINVAL;
	}
	return 0;
}

/* Pool settings: popupd's defaults, the plugin's, then [service.<name>]
 * of @cfg; into *@r and *@dispatch. */
int svc_resolve_pool(const struct svc *s, const struct popupd_config *cfg,
		     struct popup_svc_pool *r, enum popup_svc_dispatch *dispatch)
{
	const struct popup_svc_pool *p = &s->def->pool;
	const char *name = s->def->name, *d;
	int err = 0;

	*r = pool_defaults;
	if (p->min_threads)
		r->min_threads = p->min_threads;
	if (p->max_threads)
		r->max_threads = p->max_threads;
	if (p->queue_limit)
		r->queue_limit = p->queue_limit;
	if (p->idle_timeout_ms)
		r->idle_timeout_ms = p->idle_timeout_ms;
	if (p->timeout_ms)
		r->timeout_ms = p->timeout_ms;
	err |= resolve_u32(cfg, name, "min_threads", 0, 1024, &r->min_threads);
	err |= resolve_u32(cfg, name, "threads", 1, 1024, &r->max_threads);
	err |= resolve_u32(cfg, name, "queue", 1, 65536, &r->queue_limit);
	err |= resolve_u32(cfg, name, "idle_timeout_ms", 1, 86400000, &r->idle_timeout_ms);
	err |= resolve_u32(cfg, name, "timeout_ms", 1, 86400000, &r->timeout_ms);
	if (err)
		return -EINVAL;
	if (r->max_threads > 1024)
		r->max_threads = 1024;
	if (r->min_threads > r->max_threads)
		r->min_threads = r->max_threads;
	d = config_svc_get(cfg, name, "dispatch");
	*dispatch = s->def->dispatch;
	if (d && (dispatch_by_name(d, dispatch) ||
		  (*dispatch == POPUP_SVC_DISPATCH_INLINE &&
		   s->def->dispatch != POPUP_SVC_DISPATCH_INLINE))) {
		pr_err("service %s: dispatch '%s' is not pool, popup, percpu, per-connection "
		       "or per-object%s", name, d,
		       s->def->dispatch == POPUP_SVC_DISPATCH_INLINE ? " or inline" :
		       " (inline only for services declared inline)");
		return -EINVAL;
	}
	return 0;
}

static int resolve_prio(const struct svc *s, const struct popupd_config *cfg, int32_t *out)
{
	const char *str = config_svc_get(cfg, s->def->name, "max_priority");
	char *end;
	long n;

	*out = s->def->max_priority;
	if (!str)
		return 0;
	errno = 0;
	n = strtol(str, &end, 10);
	if (errno || end == str || *end || n < POPUP_SVC_PRIO_MIN || n > POPUP_SVC_PRIO_MAX) {
		pr_err("service %s: invalid max_priority '%s' (%d..%d)", s->def->name, str,
		       POPUP_SVC_PRIO_MIN, POPUP_SVC_PRIO_MAX);
		return -EINVAL;
	}
	*out = (int32_t)n;
	return 0;
}

int32_t svc_call_prio(const struct svc *s, const struct popup_svc_method *m,
		      bool has, int asked)
{
	int32_t cap = s->max_priority > m->priority ? s->max_priority : m->priority;

	if (!has)
		return m->priority;
	if (asked > cap)
		asked = cap;
	if (asked < POPUP_SVC_PRIO_MIN)
		asked = POPUP_SVC_PRIO_MIN;
	return asked;
}

uint64_t svc_mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	return x ^ (x >> 33);
}

/* The plugin's extractor, or FNV-1a over the request up to its first
 * NUL, space, '=' or newline; mixed, so that any key spreads over the
 * lanes. A positive return from a plugin counts as -EINVAL. */
int svc_object_key(const struct svc *s, const struct popup_svc_call *call, uint64_t *key)
{
	const unsigned char *p = call->req;
	uint64_t h = 14695981039346656037ull;

	if (s->def->object_key) {
		int err = s->def->object_key(call, key);

		*key = svc_mix64(*key);
		return err > 0 ? -EINVAL : err;
	}
	for (uint32_t i = 0; i < call->req_len; i++) {
		if (!p[i] || p[i] == ' ' || p[i] == '=' || p[i] == '\n')
			break;
		h = (h ^ p[i]) * 1099511628211ull;
	}
	*key = svc_mix64(h);
	return 0;
}

static int register_svc(struct svc *s)
{
	for (unsigned int i = 0; i < nr_svcs; i++) {
		if (!strcmp(svcs[i]->def->name, s->def->name)) {
			pr_err("service %s: %s and %s both define it; load it once",
			       s->def->name, svcs[i]->path, s->path);
			return -EEXIST;
		}
	}
	if (nr_svcs >= POPUPD_MAX_SERVICES) {
		pr_err("too many services (at most %d)", POPUPD_MAX_SERVICES);
		return -E2BIG;
	}
	svcs[nr_svcs++] = s;
	return 0;
}

/*
 * Read the plugin's def and method table into this header's layout:
 * a def of the first layout reads as zero past its end and has methods
 * of the first layout (service.h), so older plugins keep working.
 */
static int normalize_def(struct svc *s, const struct popup_svc_def *def)
{
	size_t dsz = def->struct_size < sizeof(s->defc) ? def->struct_size : sizeof(s->defc);
	size_t msz = def->struct_size < sizeof(s->defc) ? POPUP_SVC_METHOD_SIZE_V1 :
		     sizeof(struct popup_svc_method);

	if (def->abi_version != POPUP_SVC_ABI_VERSION || def->struct_size < POPUP_SVC_DEF_SIZE_V1 ||
	    def->struct_size > sizeof(s->defc)) {
		s->defc = (struct popup_svc_def){ .abi_version = def->abi_version,
						   .struct_size = def->struct_size };
		return 0;	/* check_def() names the fault */
	}
	memcpy(&s->defc, def, dsz);
	if (!def->methods || !def->nr_methods || def->nr_methods > POPUP_SVC_MAX_METHODS)
		return 0;	/* likewise */
	s->mtab = calloc(def->nr_methods, sizeof(*s->mtab));
	if (!s->mtab)
		return -ENOMEM;
	for (uint32_t i = 0; i < def->nr_methods; i++)
		memcpy(&s->mtab[i], (const char *)def->methods + i * msz, msz);
	s->defc.methods = s->mtab;
	return 0;
}

static int load_one(const char *name, const char *dir)
{
	const char *path_conf = config_svc_get(&pd.cfg, name, "path");
	const struct popup_svc_def *def;
	char why[256];
	const char *bad;
	struct svc *s;
	int err;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	if ((path_conf ? snprintf(s->path, sizeof(s->path), "%s", path_conf) :
	     snprintf(s->path, sizeof(s->path), "%s/%s.so", dir, name)) >= (int)sizeof(s->path)) {
		pr_err("service %s: plugin path too long", name);
		err = -ENAMETOOLONG;
		goto err_free;
	}
	s->dl = dlopen(s->path, RTLD_NOW | RTLD_LOCAL);
	if (!s->dl) {
		pr_err("service %s: cannot load %s: %s", name, s->path, dlerror());
		err = -ENOENT;
		goto err_free;
	}
	def = dlsym(s->dl, POPUP_SVC_SYMBOL);
	if (!def) {
		pr_err("service %s: %s has no symbol '%s'; is it a popup service "
		       "(POPUP_SVC_DEFINE)?", name, s->path, POPUP_SVC_SYMBOL);
		err = -ENOENT;
		goto err_close;
	}
	err = normalize_def(s, def);
	if (err)
		goto err_close;
	def = &s->defc;
	bad = check_def(def, why, sizeof(why));
	if (bad) {
		pr_err("service %s: %s: %s", name, s->path, bad);
		err = -EINVAL;
		goto err_close;
	}
	if (strcmp(def->name, name)) {
		pr_err("service %s: %s defines service '%s', not '%s'", name, s->path,
		       def->name, name);
		err = -EINVAL;
		goto err_close;
	}
	s->def = def;
	err = register_svc(s);
	if (err)
		goto err_close;
	return 0;

err_close:
	dlclose(s->dl);
err_free:
	free(s->mtab);
	free(s);
	return err;
}

/* Ids: the configured one, else the plugin's wish, else the first free. */
static int assign_ids(void)
{
	for (unsigned int i = 1; i < nr_svcs; i++) {
		struct svc *s = svcs[i];

		s->id = s->def->id;
		if (resolve_u32(&pd.cfg, s->def->name, "id", 1, UINT32_MAX - 1, &s->id))
			return -EINVAL;
	}
	for (unsigned int i = 0; i < nr_svcs; i++) {
		for (unsigned int j = 0; j < i; j++) {
			if (svcs[i]->id && svcs[i]->id == svcs[j]->id) {
				pr_err("services %s and %s both want id %u; set [service.%s] id",
				       svcs[j]->def->name, svcs[i]->def->name, svcs[i]->id,
				       svcs[i]->def->name);
				return -EEXIST;
			}
		}
	}
	for (unsigned int i = 1; i < nr_svcs; i++) {
		uint32_t id = 1;

		if (svcs[i]->id)
			continue;
		while (svc_by_id(id))
			id++;
		svcs[i]->id = id;
	}
	return 0;
}

int services_load(const struct popupd_config *cfg)
{
	static const char *const def_list[] = { "echo" };
	const char *const *names = (const char *const *)cfg->services;
	unsigned int n = cfg->nr_services;
	char dir[PATH_MAX];
	struct svc *d;
	int err;

	if (!n && !cfg->arb_conf) {	/* a pure front needs no plugin */
		names = def_list;
		n = 1;
	}
	if (cfg->plugin_dir)
		snprintf(dir, sizeof(dir), "%s", cfg->plugin_dir);
	else
		default_plugin_dir(dir, sizeof(dir));

	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->def = &dir_def;
	snprintf(d->path, sizeof(d->path), "(built in)");
	err = register_svc(d);
	if (err) {
		free(d);
		return err;
	}
	for (unsigned int i = 0; i < n; i++) {
		err = load_one(names[i], dir);
		if (err)
			return err;
	}
	err = arbiter_load(cfg);
	if (err)
		return err;
	for (const struct popupd_svc_conf *sc = cfg->svc_conf; sc; sc = sc->next)
		if (!svc_by_name(sc->name, strlen(sc->name)) &&
		    !config_svc_get(cfg, sc->name, "remote"))
			pr_warn("[service.%s] configures a service that is not loaded", sc->name);
	err = assign_ids();
	for (unsigned int i = 0; !err && i < nr_svcs; i++) {
		err = svc_resolve_pool(svcs[i], cfg, &svcs[i]->pool, &svcs[i]->dispatch);
		if (!err)
			err = resolve_prio(svcs[i], cfg, &svcs[i]->max_priority);
	}
	return err;
}

int services_init(void)
{
	for (unsigned int i = 0; i < nr_svcs; i++) {
		struct svc *s = svcs[i];
		int err;

		s->env.name = s->def->name;
		s->env.get = env_get;
		s->env.log = env_log;
		s->env.priv = s;
		subcall_env_init(&s->env);
		if (!s->def->init) {
			s->inited = true;
			continue;
		}
		err = s->def->init(&s->env, &s->state);
		if (err) {
			pr_err("service %s: init failed: %s", s->def->name,
			       strerror(err < 0 ? -err : err));
			return err < 0 ? err : -EINVAL;
		}
		s->inited = true;
	}
	return 0;
}

void services_fini(void)
{
	subcall_fini();		/* no handler runs any more */
	for (unsigned int i = nr_svcs; i-- > 0;) {
		struct svc *s = svcs[i];

		if (s->inited && s->def->fini)
			s->def->fini(s->state);
		if (s->dl)
			dlclose(s->dl);
		free(s->pools);
		free(s->mtab);
		free(s);
	}
	nr_svcs = 0;
}

struct svc *svc_by_id(uint32_t id)
{
	for (unsigned int i = 0; i < nr_svcs; i++)
		if (svcs[i]->id == id && (i == 0 || id != 0))
			return svcs[i];
	return NULL;
}

struct svc *svc_by_name(const char *name, size_t len)
{
	for (unsigned int i = 0; i < nr_svcs; i++)
		if (strlen(svcs[i]->def->name) == len && !memcmp(svcs[i]->def->name, name, len))
			return svcs[i];
	return NULL;
}

const struct popup_svc_method *svc_method_by_id(const struct svc *s, uint32_t id)
{
	for (uint32_t i = 0; i < s->def->nr_methods; i++)
		if (s->def->methods[i].id == id)
			return &s->def->methods[i];
	return NULL;
}

const struct popup_svc_method *svc_method_by_name(const struct svc *s,
						  const char *name, size_t len)
{
	for (uint32_t i = 0; i < s->def->nr_methods; i++) {
		const char *mn = s->def->methods[i].name;

		if (strlen(mn) == len && !memcmp(mn, name, len))
			return &s->def->methods[i];
	}
	return NULL;
}

int svc_add(const struct popup_svc_def *def, void *state, struct svc **out)
{
	struct svc *s = calloc(1, sizeof(*s));
	int err;

	if (!s)
		return -ENOMEM;
	s->def = def;
	s->state = state;
	snprintf(s->path, sizeof(s->path), "(arbiter)");
	err = register_svc(s);
	if (err) {
		free(s);
		return err;
	}
	*out = s;
	return 0;
}

unsigned int services_count(void)
{
	return nr_svcs;
}

struct svc *svc_at(unsigned int i)
{
	return i < nr_svcs ? svcs[i] : NULL;
}

int svc_invoke(struct svc *s, const struct popup_svc_method *m,
	       struct popup_svc_call *call)
{
	int ret;

	call->state = s->state;
	call->env = &s->env;
	call->res_len = 0;
	ret = m->handler(call);
	if (ret > 0)
		ret = 0;	/* the ABI says 0 or -errno; be lenient */
	if (call->res_len > call->res_cap) {
		pr_warn("service %s: method %s returned %u bytes, over its max_res %u",
			s->def->name, m->name, call->res_len, call->res_cap);
		call->res_len = 0;
		ret = -EOVERFLOW;
	}
	return ret;
}

void svc_account(struct svc *s, int status, uint64_t arrival_ns, bool local)
{
	uint64_t us = (now_ns() - arrival_ns) / 1000;
	unsigned int b = 0;

	ctr_add(&s->st.calls, 1);
	if (local)
		ctr_add(&s->st.local_calls, 1);
	if (status)
		ctr_add(&s->st.errors, 1);
	if (status == -EBUSY || status == -EAGAIN)
		ctr_add(&s->st.busy, 1);
	if (status == -ETIMEDOUT)
		ctr_add(&s->st.timeouts, 1);
	while (us && b < LAT_BUCKETS - 1) {
		us >>= 1;
		b++;
	}
	ctr_add(&s->st.lat[b], 1);
}
