// SPDX-License-Identifier: GPL-2.0
/*
 * Local callers: every service (popupd's own directory service included)
 * is exported through libpopup's server API, so processes on the machine
 * call it by name and version through popup.ko when it is loaded, or
 * libpopup's Unix-socket backend otherwise, with kernel- or
 * SO_PEERCRED-stamped credentials. libpopup runs these calls in its own
 * pop-up pool (sized from the service's pool settings); popupd only
 * adapts its struct popup_request to the plugin's struct popup_svc_call.
 *
 * Priorities: the module stamps a call with the caller's kernel priority
 * (120 + nice), the user backend with the importer's priority (higher
 * first). Both map onto the service scale (service.h): -nice, or the
 * import priority as it is; nice 0 or import priority 0 asks for nothing
 * (the method's priority applies). The ordering itself happens in the
 * backend's queue (popup.ko, or libpopup's user_server.c); popupd only
 * caps the value the handler sees.
 *
 * PER_OBJECT services: a local call must run on its object's thread like
 * a network call, so the handler thread libpopup gave it queues it there
 * and waits (pool_call_sync()).
 *
 * One thread per service runs popup_server__run(). When the name is
 * already exported (another popupd still running, during a restart) the
 * thread retries every half second, so the new instance takes the local
 * exports over once the old one withdraws them; network service does not
 * wait for that.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "popup/popup.h"
#include "popupd.h"

static pthread_mutex_t local_lock = PTHREAD_MUTEX_INITIALIZER;
static bool local_stopping;	/* protected by local_lock */

/* The caller's priority on the service scale; see the top of the file. */
static int32_t local_prio(struct svc *s, const struct popup_svc_method *m,
			  const struct popup_request *req)
{
	static int kernel = -1;
	int asked = req->priority;

	if (__atomic_load_n(&kernel, __ATOMIC_RELAXED) < 0)
		__atomic_store_n(&kernel, popup_backend_resolve(POPUP_BACKEND_AUTO) ==
				 POPUP_BACKEND_KERNEL, __ATOMIC_RELAXED);
	if (__atomic_load_n(&kernel, __ATOMIC_RELAXED))
		asked = 120 - req->priority;	/* -nice */
	return svc_call_prio(s, m, asked != 0, asked);
}

static int local_handler(struct popup_request *req)
{
	struct svc *s = req->user_data;
	const struct popup_svc_method *m = svc_method_by_id(s, req->method);
	uint64_t arrival = now_ns();
	struct popup_svc_call call = {
		.method = req->method,
		.origin = POPUP_SVC_ORIGIN_LOCAL,
		.req = req->arg,
		.req_len = req->arg_len,
		.res = req->res,
		.res_cap = req->res_cap,
		.cpu = req->cpu,
		.priority = req->priority,
		.flags = (req->flags & POPUP_REQ_ONEWAY) ? POPUP_SVC_CALL_ONEWAY : 0,
		.deadline_ns = req->deadline_ns ? req->deadline_ns :
			       arrival + (uint64_t)s->pool.timeout_ms * 1000000,
		.pid = req->caller_pid,
		.uid = req->caller_uid,
		.gid = req->caller_gid,
	};
	void *copy = NULL;
	int ret;

	if (!m)
		return -EOPNOTSUPP;	/* libpopup checked; be safe */
	call.priority = local_prio(s, m, req);
	/* Under the kernel backend arguments and result share the slot;
	 * the plugin ABI promises they do not alias. */
	if (req->arg_len && (const char *)req->res < (const char *)req->arg + req->arg_len &&
	    (const char *)req->arg < (const char *)req->res + req->res_cap) {
		copy = malloc(req->arg_len);
		if (!copy)
			return -ENOMEM;
		memcpy(copy, req->arg, req->arg_len);
		call.req = copy;
	}
	if (s->dispatch == POPUP_SVC_DISPATCH_PER_OBJECT && s->nr_pools) {
		ret = pool_call_sync(s, m, &call, arrival);
		req->res_len = call.res_len;
		free(copy);
		return ret;
	}
	ret = svc_invoke(s, m, &call);
	req->res_len = call.res_len;
	svc_account(s, ret, arrival, true);
	free(copy);
	return ret;
}

static uint32_t clamp(uint32_t v, uint32_t max)
{
	return v < max ? v : max;
}

static struct popup_server *export_one(struct svc *s)
{
	struct popup_method_def defs[POPUP_SVC_MAX_METHODS];
	uint32_t max = POPUP_USER_MAX_MSG;
	struct popup_pool_attr pool;
	struct popup_server *srv;

	if (popup_backend_resolve(POPUP_BACKEND_AUTO) == POPUP_BACKEND_KERNEL)
		max = POPUP_MAX_MSG;
	for (uint32_t i = 0; i < s->def->nr_methods; i++) {
		const struct popup_svc_method *m = &s->def->methods[i];

		/* Larger messages stay network-only for this backend. */
		defs[i] = (struct popup_method_def){
			.id = m->id, .name = m->name, .handler = local_handler,
			.max_arg = clamp(m->max_arg, max), .max_res = clamp(m->max_res, max),
		};
	}
	/* libpopup wants min_idle <= max_idle <= max_threads. */
	pool = (struct popup_pool_attr){
		.max_threads = clamp(s->pool.max_threads, POPUP_MAX_THREADS),
		.increment = 1,
		.queue_limit = clamp(s->pool.queue_limit, POPUP_MAX_QUEUE),
		.idle_timeout_ms = s->pool.idle_timeout_ms,
	};
	/* A service that keeps min_threads (disk: for sub-calls in
	 * flight) keeps as many idle here too, instead of re-spawning. */
	pool.max_idle = clamp(pool.max_threads, s->pool.min_threads > 4 ? s->pool.min_threads : 4);
	pool.min_idle = clamp(s->pool.min_threads, 1);
	POPUP_OPTS(popup_server_opts, opts, .pool = &pool, .user_data = s);
	srv = popup_server__create(s->def->name, s->def->version, defs, s->def->nr_methods,
				   &opts);
	return srv;
}

static bool stopping(void)
{
	bool v;

	pthread_mutex_lock(&local_lock);
	v = local_stopping;
	pthread_mutex_unlock(&local_lock);
	return v;
}

static void *local_thread(void *arg)
{
	struct svc *s = arg;
	bool told = false;

	pthread_setname_np(pthread_self(), "popupd-local");
	while (!stopping()) {
		struct popup_server *srv = export_one(s);
		long err = popup_get_error(srv);

		if (err) {
			if (err != -EEXIST || !told)
				pr_warn("service %s: no local export yet: %s%s", s->def->name,
					strerror((int)-err), err == -EEXIST ?
					" (another popupd has it; retrying)" : "");
			told = true;
			if (err != -EEXIST) {
				s->local_err = (int)err;
				return NULL;
			}
			usleep(500000);
			continue;
		}
		pthread_mutex_lock(&local_lock);
		if (local_stopping) {
			pthread_mutex_unlock(&local_lock);
			popup_server__destroy(srv);
			break;
		}
		s->srv = srv;
		pthread_mutex_unlock(&local_lock);
		pr_info("service %s exported locally (%s backend)", s->def->name,
			popup_backend_name(popup_server__backend(srv)));
		err = popup_server__run(srv);
		if (err)
			pr_warn("service %s: local server stopped: %s", s->def->name,
				strerror((int)-err));
		break;
	}
	return NULL;
}

static int libpopup_log(enum popup_print_level level, const char *fmt, va_list ap)
{
	char msg[900];
	size_t n;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	if (n && msg[n - 1] == '\n')
		msg[n - 1] = 0;
	log_msg(level == POPUP_WARN ? LOG_LVL_WARN : level == POPUP_INFO ? LOG_LVL_INFO :
		LOG_LVL_DEBUG, "libpopup: %s", msg);
	return 0;
}

int local_stats(struct svc *s, struct popup_server_stats *st)
{
	int err = -ENOENT;

	pthread_mutex_lock(&local_lock);
	if (s->srv)
		err = popup_server__stats(s->srv, st);
	pthread_mutex_unlock(&local_lock);
	return err;
}

int local_start(void)
{
	popup_set_print(libpopup_log);
	for (unsigned int i = 0; i < services_count(); i++) {
		struct svc *s = svc_at(i);
		int err = pthread_create(&s->local_thread, NULL, local_thread, s);

		if (err) {
			pr_err("service %s: cannot start the local export: %s", s->def->name,
			       strerror(err));
			return -err;
		}
		s->local_started = true;
	}
	return 0;
}

void local_stop(void)
{
	pthread_mutex_lock(&local_lock);
	local_stopping = true;
	for (unsigned int i = 0; i < services_count(); i++)
		if (svc_at(i)->srv)
			popup_server__stop(svc_at(i)->srv);
	pthread_mutex_unlock(&local_lock);
	for (unsigned int i = 0; i < services_count(); i++) {
		struct svc *s = svc_at(i);
		struct popup_server *srv;

		if (!s->local_started)
			continue;
		pthread_join(s->local_thread, NULL);
		s->local_started = false;
		pthread_mutex_lock(&local_lock);
		srv = s->srv;
		s->srv = NULL;
		pthread_mutex_unlock(&local_lock);
		popup_server__destroy(srv);
	}
}
