/* SPDX-License-Identifier: LGPL-2.1 OR BSD-2-Clause */
/*
 * The popupd service plugin ABI.
 *
 * A service is a shared object that defines one symbol,
 * POPUP_SVC_SYMBOL ("popup_service"), a const struct popup_svc_def: its
 * name and version, its method table, how its handlers may be run
 * (dispatch model) and its handler pool settings. popupd dlopen()s the
 * services named in its configuration, checks every definition before it
 * serves anything (a missing symbol, another ABI version, a duplicate name
 * or id, a malformed method table stop the start with one clear message),
 * then serves each service to network callers (native protocol over TCP
 * and UDP, HTTP POST /<service>/<method>) and to local callers through
 * libpopup.
 *
 * A plugin needs only this header and libc: it links nothing of popup.
 *
 * Handlers get a struct popup_svc_call: the method, the request bytes, a
 * result buffer of the method's max_res bytes, the caller (peer address for
 * network callers, kernel- or SO_PEERCRED-stamped credentials for local
 * ones), the CPU the request arrived on, its priority and its deadline.
 * A handler returns 0, or a negative errno that popupd maps onto the
 * protocol (see POPUP_SVC errno mapping below); on error the bytes it put
 * in the result buffer are sent as an error message.
 *
 * Unless the service says POPUP_SVC_DISPATCH_INLINE, handlers may block:
 * they run in the service's bounded handler pool, never on a network
 * worker's event loop. Handlers of one service run concurrently; the
 * service protects its own state.
 *
 * Compatibility: popupd refuses a definition whose abi_version is not
 * POPUP_SVC_ABI_VERSION or whose struct_size is smaller than the first
 * layout (POPUP_SVC_DEF_SIZE_V1, up to @fini) or bigger than its own.
 * Fields are only ever appended; a shorter def reads as zero past its
 * end (and its method table has the first method layout), so plugins
 * built against an older header keep working.
 */
#ifndef POPUP_SERVICE_H
#define POPUP_SERVICE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define POPUP_SVC_ABI_VERSION	1
#define POPUP_SVC_SYMBOL	"popup_service"

#define POPUP_SVC_NAME_MAX	32	/* name bytes including the NUL */
#define POPUP_SVC_MAX_METHODS	64
#define POPUP_SVC_MAX_MSG	(1U << 20)	/* max_arg and max_res */
/* struct_size of a def, and size of a method, of the first layout. */
#define POPUP_SVC_DEF_SIZE_V1	80
#define POPUP_SVC_METHOD_SIZE_V1	40

/* Where a call came from. */
enum popup_svc_origin {
	POPUP_SVC_ORIGIN_TCP = 1,	/* native protocol over TCP */
	POPUP_SVC_ORIGIN_UDP,		/* native protocol over UDP */
	POPUP_SVC_ORIGIN_HTTP,		/* HTTP/1.1 POST /<service>/<method> */
	POPUP_SVC_ORIGIN_LOCAL,		/* libpopup (popup.ko or Unix socket) */
};

/*
 * How popupd runs a service's handlers (popupd.conf: dispatch = NAME).
 * POOL ("popup"): pop-up handler contexts: a bounded pool of handler
 *              threads shared by all CPUs, created on demand when no
 *              thread is idle, up to max_threads, retiring after
 *              idle_timeout_ms down to min_threads, with a bounded queue
 *              in front: past queue_limit a call is refused as busy. The
 *              default, and value 0 for plugins built before the other
 *              models existed; POPUP_SVC_DISPATCH_POPUP is its new name.
 * POOL_PERCPU ("percpu"): one such pool per network worker CPU, its
 *              threads pinned there, so a request is received, handled
 *              and answered on one CPU. The limits apply per CPU.
 * INLINE ("inline"): on the network worker thread that received the
 *              request. Only for handlers that never block and finish in
 *              microseconds (echo); one slow handler stalls a whole CPU.
 * FIXED ("pool"): a fixed worker pool: max_threads threads started with
 *              the service, never grown, never retired (min_threads is
 *              taken as max_threads); the same queue and busy rule.
 * PER_CONN ("per-connection"): each TCP connection (native or HTTP) that
 *              calls the service gets one handler thread of its own, with
 *              its own queue, for as long as it lives: its requests run
 *              one at a time, in arrival order within a priority, always
 *              on that thread. At most max_threads connections hold a
 *              thread; past that a new connection's requests are refused
 *              at once with busy (they never wait for another connection
 *              to close). When the connection closes its thread goes back
 *              to the free set and retires after idle_timeout_ms. UDP
 *              callers have no connection: each peer address is hashed to
 *              one of the max_threads threads (its requests run serially,
 *              possibly on a thread a connection also owns).
 * PER_OBJECT ("per-object"): requests are routed by an object key
 *              (@object_key of the def, or by default the request bytes
 *              up to the first NUL, space, '=' or newline) to one of
 *              max_threads object threads, each with its own bounded
 *              queue (queue_limit each): the same key always runs on the
 *              same thread, one call at a time, so the state of one
 *              object needs no lock. Local callers are routed the same
 *              way. Object threads start on demand and retire when idle.
 *              For PER_CONN and PER_OBJECT max_threads is read at start:
 *              a reload changes the queue and time limits, not the number
 *              of threads.
 * Local callers (libpopup) run in libpopup's own pop-up pool for every
 * model but PER_OBJECT, sized from the same settings.
 */
enum popup_svc_dispatch {
	POPUP_SVC_DISPATCH_POOL = 0,
	POPUP_SVC_DISPATCH_POOL_PERCPU,
	POPUP_SVC_DISPATCH_INLINE,
	POPUP_SVC_DISPATCH_FIXED,
	POPUP_SVC_DISPATCH_PER_CONN,
	POPUP_SVC_DISPATCH_PER_OBJECT,
};

#define POPUP_SVC_DISPATCH_POPUP	POPUP_SVC_DISPATCH_POOL

/*
 * Priorities: higher runs first, on one scale for every origin,
 * POPUP_SVC_PRIO_MIN..POPUP_SVC_PRIO_MAX, 0 the default. A call's priority
 * is the one its request asks for (native header POPUP_WIRE_F_PRIO, HTTP
 * X-Popup-Priority, a local caller's nice value: -nice, so nice -5 is 5
 * and nice 10 is -10), else its method's @priority, and never above the
 * larger of the method's @priority and the service's @max_priority:
 * callers may lower their priority freely but raise it only as far as
 * the service allows. Queues serve higher priorities first without
 * starving lower ones (popupd: the oldest queued call is passed over at
 * most 8 times in a row).
 */
#define POPUP_SVC_PRIO_MIN	(-20)
#define POPUP_SVC_PRIO_MAX	20

/*
 * struct popup_svc_pool - handler pool settings (popupd's configuration
 * may override each one per service; 0 selects popupd's default)
 * @min_threads:     threads kept even when idle (default 1)
 * @max_threads:     threads at most, 1..1024 (default 8)
 * @queue_limit:     calls waiting for a thread, 1..65536 (default 256);
 *                   past it a call gets a busy reply, it is never dropped
 * @idle_timeout_ms: a thread above @min_threads idle this long retires
 *                   (default 10000)
 * @timeout_ms:      deadline of a call from its arrival (default 5000):
 *                   a call still queued at its deadline is answered
 *                   "timeout" without running; a handler that finishes
 *                   past it has its result replaced by "timeout"
 */
struct popup_svc_pool {
	uint32_t min_threads;
	uint32_t max_threads;
	uint32_t queue_limit;
	uint32_t idle_timeout_ms;
	uint32_t timeout_ms;
};

/*
 * struct popup_svc_call - one call, as a handler sees it
 * Valid until the handler returns; @req and @res never alias.
 */
struct popup_svc_call {
	uint32_t method;		/* method id */
	enum popup_svc_origin origin;
	const void *req;		/* request bytes (arguments) */
	uint32_t req_len;
	uint32_t res_cap;		/* the method's max_res */
	void *res;			/* result buffer, @res_cap bytes */
	uint32_t res_len;		/* set by the handler; starts at 0 */
	int32_t cpu;			/* CPU the request arrived on */
	int32_t priority;		/* higher runs first; see POPUP_SVC_PRIO_MIN */
	uint32_t flags;			/* POPUP_SVC_CALL_* */
	uint64_t deadline_ns;		/* CLOCK_MONOTONIC; 0 = none */
	/* Caller. Network: @peer/@peer_len; local: @pid/@uid/@gid. */
	struct sockaddr_storage peer;
	socklen_t peer_len;
	int32_t pid;
	uint32_t uid;
	uint32_t gid;
	void *state;			/* what the service's init returned */
	/* Appended: the service's environment, for sub-calls (below). */
	const struct popup_svc_env *env;
};

#define POPUP_SVC_CALL_ONEWAY	(1U << 0)	/* nobody reads the result */

/*
 * Errno mapping, native status / HTTP status:
 *   0                 ok (0) / 200
 *   -EINVAL, -EBADMSG bad request (1) / 400
 *   -E2BIG, -EMSGSIZE too big (4) / 413
 *   -EAGAIN, -EBUSY   busy (5) / 503
 *   -ETIMEDOUT        timeout (6) / 504
 *   -ENOENT           handler error (7) / 404 (a missing item, e.g. a key)
 *   -EACCES, -EPERM   handler error (7) / 403
 *   anything else     handler error (7) / 500
 */
typedef int (*popup_svc_handler_fn)(struct popup_svc_call *call);

/*
 * struct popup_svc_method - one entry of the method table
 * @id:      1..65535 (the native header carries 16 bits), unique
 * @name:    [A-Za-z0-9_-], unique; HTTP uses it in the URL
 * @max_arg: largest request accepted, <= POPUP_SVC_MAX_MSG; larger ones
 *           are refused (413) before the handler sees them
 * @max_res: result buffer size, <= POPUP_SVC_MAX_MSG
 * @flags:   POPUP_SVC_M_*
 * @priority: the method's priority (POPUP_SVC_PRIO_MIN..MAX; 0 default)
 *           for requests that ask for none, and how high its requests
 *           may ask at least
 *
 * The method layout follows the def's: a def whose struct_size ends
 * before @max_priority (built against the first version of this header)
 * has methods that end before @priority. This struct only ever grows
 * together with struct popup_svc_def.
 */
struct popup_svc_method {
	uint32_t id;
	const char *name;
	uint32_t max_arg;
	uint32_t max_res;
	uint32_t flags;
	popup_svc_handler_fn handler;
	int32_t priority;
};

#define POPUP_SVC_M_IDEMPOTENT	(1U << 0)	/* safe to retry */

struct popup_svc_batch;		/* popupd's: sub-calls in flight */

/*
 * struct popup_svc_env - what popupd offers a service at init
 * @get: a value of the service's configuration section
 *       ([service.<name>] in popupd.conf), or NULL; valid during init
 *       only (a reload replaces the configuration): copy what you keep
 * @log: log through popupd (level 3 error, 4 warning, 6 info, 7 debug)
 *
 * Sub-calls: a handler may call other services (by name, method id) and
 * wait, blocking only its own pool thread. The env stays valid until
 * fini; handlers reach it as call->env. A service of the same popupd is
 * called through its local export (popup.ko when /dev/popup exists, else
 * libpopup's Unix-socket backend); one configured as
 * "[service.<name>] remote = host:port" (optionally "remote_version",
 * default 1) is called on another popupd over TCP with the native
 * protocol, pipelined. "[service.<name>] subcall_limit" bounds the calls
 * to it in flight from this popupd (default 64). Calls end at
 * @deadline_ns (CLOCK_MONOTONIC; 0: popupd's default of 10 s).
 * Errors are libpopup's (popup.h): the callee handler's -errno verbatim
 * for local callees, -EREMOTEIO (its error text as the result) for remote
 * ones, -ENOENT no such service, -ECONNRESET it went away, -ETIMEDOUT,
 * -EAGAIN a bound was reached (see @batch_add).
 * Pool room: each handler waiting on sub-calls holds one thread of its
 * own service's pool; the callee runs in its own pool, so size the
 * callee's threads for the calls in flight, and never sub-call your own
 * service from a full pool.
 * @call:       one call, synchronously; returns the callee's status,
 *              result in @res (*@res_len bytes)
 * @batch_new:  room for up to @max_outstanding calls (1..256) in flight,
 *              all ending by @deadline_ns; NULL on failure (errno)
 * @batch_add:  start a call; returns its token (0, 1, ... in add order)
 *              or -errno. -EAGAIN: the batch or the callee's
 *              subcall_limit is full; wait for one and add again
 * @batch_wait_any: a finished call's token (each reported once), or
 *              -ENOENT when none is left, -ETIMEDOUT at the deadline
 * @batch_wait_all: 0 once all finished, or -ETIMEDOUT
 * @batch_result: a finished call's status and result length
 * @batch_free: cancels calls still in flight; always call it
 */
struct popup_svc_env {
	const char *name;
	const char *(*get)(const struct popup_svc_env *env, const char *key);
	void (*log)(const struct popup_svc_env *env, int level, const char *fmt, ...)
		__attribute__((format(printf, 3, 4)));
	void *priv;			/* popupd's; do not touch */
	/* Appended: sub-calls. An older popupd's env ends before these:
	 * a plugin that uses them needs a popupd that has them. */
	int (*call)(const struct popup_svc_env *env, const char *service, uint32_t method,
		    const void *req, uint32_t req_len, void *res, uint32_t res_cap,
		    uint32_t *res_len, uint64_t deadline_ns);
	struct popup_svc_batch *(*batch_new)(const struct popup_svc_env *env,
					      uint32_t max_outstanding, uint64_t deadline_ns);
	int (*batch_add)(struct popup_svc_batch *batch, const char *service, uint32_t method,
			 const void *req, uint32_t req_len, void *res, uint32_t res_cap);
	int (*batch_wait_any)(struct popup_svc_batch *batch);
	int (*batch_wait_all)(struct popup_svc_batch *batch);
	int (*batch_result)(struct popup_svc_batch *batch, int token, uint32_t *res_len);
	void (*batch_free)(struct popup_svc_batch *batch);
};

/*
 * struct popup_svc_def - the service, as exported by POPUP_SVC_SYMBOL
 * @abi_version: POPUP_SVC_ABI_VERSION
 * @struct_size: sizeof(struct popup_svc_def)
 * @name:        [A-Za-z0-9_-], 1..POPUP_SVC_NAME_MAX-1 bytes
 * @version:     interface version (libpopup imports name + version)
 * @id:          preferred native service id (0: popupd assigns one);
 *               popupd.conf may override it
 * @methods:     @nr_methods entries, 1..POPUP_SVC_MAX_METHODS
 * @pool:        defaults for the handler pool
 * @dispatch:    enum popup_svc_dispatch
 * @init:        optional; runs once before any call, may fail with a
 *               negative errno (the start fails); *@state is handed to
 *               every call
 * @fini:        optional; runs after the last call
 * @max_priority: how high a request may ask (see POPUP_SVC_PRIO_MIN);
 *               popupd.conf max_priority overrides it
 * @object_key:  optional, PER_OBJECT: the object a call addresses, into
 *               *@key; a negative errno refuses the call with that error
 *               without running it. Runs on popupd's network or local
 *               threads, so it must be quick and must not block. NULL:
 *               the default key (see PER_OBJECT).
 */
struct popup_svc_def {
	uint32_t abi_version;
	uint32_t struct_size;
	const char *name;
	uint32_t version;
	uint32_t id;
	const struct popup_svc_method *methods;
	uint32_t nr_methods;
	enum popup_svc_dispatch dispatch;
	struct popup_svc_pool pool;
	int (*init)(const struct popup_svc_env *env, void **state);
	void (*fini)(void *state);
	/* appended after ABI version 1's first layout */
	int32_t max_priority;
	int (*object_key)(const struct popup_svc_call *call, uint64_t *key);
};

/* Define the service: POPUP_SVC_DEFINE = { .abi_version = ..., ... }; */
#define POPUP_SVC_DEFINE					\
	__attribute__((visibility("default")))			\
	const struct popup_svc_def popup_service

#ifdef __cplusplus
}
#endif

#endif /* POPUP_SERVICE_H */
