/* SPDX-License-Identifier: LGPL-2.1 OR BSD-2-Clause */
/*
 * libpopup: the C API for both sides of a popup service.
 *
 * A server exports a named, versioned interface (a table of methods) and
 * runs its handlers in pop-up threads: the pool starts at its minimum, grows
 * by one spawn request at a time while calls wait and no handler is idle,
 * and shrinks back when threads stay idle past the idle timeout. A client
 * imports the interface by name and version, gets a binding with a fixed
 * number of argument slots (its concurrency), and calls methods through
 * them, synchronously or one-way.
 *
 * Two backends implement the same API and the same errno contract:
 *   kernel  popup.ko (/dev/popup): arguments and results stay in shared
 *           argument stacks, caller credentials are stamped by the kernel.
 *   user    a Unix SOCK_SEQPACKET socket per service in the abstract
 *           namespace ("@popup/svc/<name>.<version>"): arguments are copied
 *           through the socket, credentials come from SO_PEERCRED, and the
 *           pool runs in the library.
 * The backend is chosen when a server or client is created: the opts'
 * backend field, else $POPUP_BACKEND ("kernel" or "user"), else the kernel
 * if /dev/popup exists, else user. A third, client-only backend ("net",
 * popup_client__connect_tcp()) calls another machine's popupd over TCP.
 * Batches (popup_batch__*) keep several calls outstanding on any of them.
 *
 * Conventions (as in libbpf and libxdp): opaque objects, popup_<obj>__<verb>
 * names, int-returning functions return 0 (or a count) on success and a
 * negative errno on failure, pointer-returning ones return NULL and set
 * errno (popup_get_error() turns that into a negative errno). Options
 * structures start with their size, so they can grow; declare them with
 * POPUP_OPTS() and leave fields you do not care about zero.
 *
 * Errno contract, for every backend (differences are marked):
 *   EINVAL        a NULL or empty name, or one with bytes other than
 *                 printable non-space ASCII; bad opts; an unknown flag;
 *                 inconsistent pool settings; a method table with repeated
 *                 ids or sizes over POPUP_MAX_MSG (user backend:
 *                 POPUP_USER_MAX_MSG); a one-way method called
 *                 synchronously or the reverse; a slot index out of range
 *   ENAMETOOLONG  a service name longer than POPUP_NAME_MAX - 1 bytes
 *   EEXIST        popup_server__create: name+version is already exported
 *   ENOENT        popup_client__import: no such name+version
 *   EOPNOTSUPP    a method id the interface does not have
 *   EMSGSIZE      arguments longer than the method's max_arg
 *   ENOBUFS       popup_binding__call: the result did not fit res_cap
 *                 (*res_len gets the full length; the call did run)
 *   EOVERFLOW     the handler set a result longer than the method's max_res
 *   EAGAIN        the service's queue is full, or the binding's one-way
 *                 quota is used up
 *   ETIMEDOUT     the timeout passed before a handler took the call: it
 *                 did not run and never will (user backend: it may have
 *                 run; its result is discarded)
 *   ETIME         kernel backend: the timeout passed while a handler ran
 *                 the call; its result is discarded
 *   EBUSY         popup_binding__call_slot on a slot whose earlier call's
 *                 handler still runs (after ETIME)
 *   ECONNRESET    the service was withdrawn or its server died, before or
 *                 during the call; the binding stays dead
 *   ENODEV        the kernel backend was required but /dev/popup is missing
 *   EBUSY         popup_server__run while it already runs
 *   ENOENT        popup_server__run after a stop (the service is withdrawn)
 *   ECANCELED     kernel backend: a signal arrived while a handler ran the
 *                 call; its result is discarded
 * Signals do not otherwise interrupt calls: the user backend keeps
 * waiting, the kernel backend restarts a call no handler has taken yet.
 *
 * Where the backends differ (the kernel backend has no method table on the
 * client side; the module keeps it):
 *   - calling a one-way method with popup_binding__call() makes it one-way
 *     (returns 0 at once), and __call_oneway() accepts any method; the user
 *     backend refuses both with -EINVAL
 *   - popup_request.priority is the caller's kernel priority (0..139,
 *     lower first; 120 + nice) rather than the binding's import priority,
 *     and deadline_ns is 0
 *   - the one-way quota bounds calls not yet taken by a handler thread
 *     (libpopup hands a one-way call's slot back before running it); in
 *     the user backend it bounds calls not yet finished
 *   - stats.cancelled counts discarded results when the handler thread
 *     learns of them (its next REPLY_WAIT); calls dropped from the queue
 *     are not seen; stats.rejected is the module's error count
 *   - arguments and results reach POPUP_MAX_MSG - 8 bytes (8 bytes of each
 *     slot are libpopup's), POPUP_USER_MAX_MSG in the user backend
 * Handlers return their own status (>= 0 by convention, or a negative
 * errno), which the caller gets verbatim from popup_binding__call(); a
 * handler should not return the transport errors above.
 */
#ifndef __POPUP_POPUP_H
#define __POPUP_POPUP_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef POPUP_API
#define POPUP_API __attribute__((visibility("default")))
#endif

/*
 * Limits. These repeat the values of <linux/popup.h> (the module's ABI)
 * token for token, so a file including both compiles, and a file where
 * they drift apart does not.
 */
#define POPUP_NAME_MAX		64		/* name bytes including the NUL */
#define POPUP_MAX_METHODS	256		/* methods per service */
#define POPUP_MAX_MSG		(1U << 20)	/* max_arg and max_res */
#define POPUP_MAX_SLOTS		64		/* slots per binding */
#define POPUP_MAX_THREADS	1024		/* pool max_threads */
#define POPUP_MAX_QUEUE		4096		/* pool queue_limit */
/* The userspace backend carries at most this per argument or result. */
#define POPUP_USER_MAX_MSG	(64U << 10)

/* Timeouts, in milliseconds. */
#define POPUP_TIMEOUT_DEFAULT	0	/* the binding's default */
#define POPUP_TIMEOUT_INFINITE	(-1)

/*
 * POPUP_OPTS(type, name, .field = value, ...) declares an options structure
 * with its size set and every other field zero.
 */
#define POPUP_OPTS(TYPE, NAME, ...)					\
	struct TYPE NAME = ({						\
		memset(&NAME, 0, sizeof(struct TYPE));			\
		(struct TYPE){ .sz = sizeof(struct TYPE), __VA_ARGS__ };\
	})

/* ---- library-wide ------------------------------------------------------ */

enum popup_print_level {
	POPUP_WARN,
	POPUP_INFO,
	POPUP_DEBUG,
};

typedef int (*popup_print_fn_t)(enum popup_print_level level,
				const char *fmt, va_list args);

/*
 * Replace the log callback (NULL silences the library); returns the old
 * one. The default prints warnings and info to stderr, and debug too when
 * $POPUP_DEBUG is set.
 */
POPUP_API popup_print_fn_t popup_set_print(popup_print_fn_t fn);

/* Describe a (negative or positive) errno in the library's terms. */
POPUP_API int popup_strerror(int err, char *buf, size_t size);

/* 0 if @ptr is a valid object, else -errno of the call that returned it. */
POPUP_API long popup_get_error(const void *ptr);

enum popup_backend {
	POPUP_BACKEND_AUTO = 0,
	POPUP_BACKEND_KERNEL,
	POPUP_BACKEND_USER,
	POPUP_BACKEND_NET,	/* popup_client__connect_tcp() only */
};

/* The backend AUTO resolves to now, or -errno ($POPUP_BACKEND invalid). */
POPUP_API int popup_backend_resolve(enum popup_backend want);
POPUP_API const char *popup_backend_name(enum popup_backend backend);

/* ---- server side ------------------------------------------------------- */

/*
 * struct popup_pool_attr - handler thread pool settings (after QNX thread
 * pools; the same rules as the module's struct popup_pool)
 * @min_idle:        keep at least this many threads idle: a spawn request
 *                   is made when fewer are; idle-timeout retirement never
 *                   goes below it (0: pure pop-up)
 * @max_idle:        a thread that would be idle beyond this count retires
 *                   at once; >= 1 and >= @min_idle
 * @increment:       threads asked for by one spawn request, >= 1
 * @max_threads:     the pool never grows beyond this, 1..POPUP_MAX_THREADS,
 *                   >= @max_idle and >= @increment
 * @queue_limit:     calls that may wait for a thread, 0..POPUP_MAX_QUEUE;
 *                   past it calls fail with -EAGAIN
 * @idle_timeout_ms: a thread idle this long, while more than @min_idle
 *                   are idle, retires; 0 = never
 * An all-zero structure (or a NULL pointer) selects the defaults: min_idle
 * 1, max_idle 4, increment 1, max_threads 16, queue_limit 256,
 * idle_timeout_ms 10000. Any other value is taken literally.
 */
struct popup_pool_attr {
	uint32_t min_idle;
	uint32_t max_idle;
	uint32_t increment;
	uint32_t max_threads;
	uint32_t queue_limit;
	uint32_t idle_timeout_ms;
};

struct popup_server;

/*
 * struct popup_request - one call, as a handler sees it
 * Valid only until the handler returns. @arg and @res may alias (both are
 * the binding's slot under the kernel backend): read what you need from
 * @arg before writing @res.
 */
struct popup_request {
	struct popup_server *server;
	void *user_data;		/* popup_server_opts.user_data */
	uint32_t method;		/* method id */
	uint32_t flags;			/* POPUP_REQ_* */
	const void *arg;		/* arguments, @arg_len bytes */
	uint32_t arg_len;
	uint32_t res_cap;		/* the method's max_res */
	void *res;			/* result area, @res_cap bytes */
	uint32_t res_len;		/* set by the handler; starts at 0 */
	int32_t priority;		/* the caller's; queued calls run in
					 * priority order (kernel: 0..139,
					 * lower first; user: higher first) */
	int32_t caller_pid;		/* kernel- or SO_PEERCRED-stamped */
	uint32_t caller_uid;
	uint32_t caller_gid;
	int32_t cpu;			/* CPU the call was made on (the user
					 * backend: as reported by the caller) */
	uint64_t deadline_ns;		/* CLOCK_MONOTONIC, 0 = none */
};

#define POPUP_REQ_ONEWAY	(1U << 0)	/* nobody waits for the result */

typedef int (*popup_handler_fn)(struct popup_request *req);

/* Call with __call_oneway(). Same value as the module's flag. */
#define POPUP_METHOD_ONEWAY	(1U << 0)

/*
 * struct popup_method_def - one entry of an exported interface
 * @id:      unique within the interface, chosen freely
 * @flags:   POPUP_METHOD_*
 * @max_arg: largest argument the method accepts, <= POPUP_MAX_MSG
 * @max_res: largest result it returns (0 for one-way methods)
 * @name:    for logs and popupctl; may be NULL
 * @handler: runs in a pool thread
 */
struct popup_method_def {
	uint32_t id;
	uint32_t flags;
	uint32_t max_arg;
	uint32_t max_res;
	const char *name;
	popup_handler_fn handler;
};

struct popup_server_opts {
	size_t sz;			/* sizeof(struct popup_server_opts) */
	enum popup_backend backend;
	const struct popup_pool_attr *pool; /* NULL: the defaults */
	void *user_data;		/* handed to every handler */
	size_t :0;
};
#define popup_server_opts__last_field user_data

/*
 * Export @methods as @name version @version. The name is taken when this
 * returns; calls queue until popup_server__run() starts the pool.
 */
POPUP_API struct popup_server *
popup_server__create(const char *name, uint32_t version,
		     const struct popup_method_def *methods, size_t nr_methods,
		     const struct popup_server_opts *opts);

/*
 * Serve calls in pop-up threads until popup_server__stop(). The calling
 * thread creates a thread on each spawn request and runs no handler
 * itself; pool threads exit when told to retire. Returns 0 after a stop,
 * or -errno. Runs once: a stopped service is withdrawn.
 */
POPUP_API int popup_server__run(struct popup_server *srv);

/*
 * End the service: __run() withdraws it (queued and later callers get
 * -ECONNRESET, imports -ENOENT), waits for running handlers, and returns.
 * Async-signal-safe.
 */
POPUP_API int popup_server__stop(struct popup_server *srv);

/* Withdraw the service if it is still exported, and free it. Call it
 * after __run() returned, never while it runs. */
POPUP_API void popup_server__destroy(struct popup_server *srv);

/* Change pool settings while running; same validation as at create. */
POPUP_API int popup_server__set_pool(struct popup_server *srv,
				     const struct popup_pool_attr *pool);
POPUP_API int popup_server__get_pool(const struct popup_server *srv,
				     struct popup_pool_attr *pool);

/*
 * struct popup_server_stats - a snapshot of one service
 * Thread counts are the library's own; the queue and call counters come
 * from the backend (the kernel's view under the kernel backend).
 */
struct popup_server_stats {
	uint32_t threads;	/* handler threads alive */
	uint32_t idle;		/* of which waiting for a call */
	uint32_t busy;		/* of which running a handler */
	uint32_t queued;	/* calls waiting for a thread */
	uint32_t spawned;	/* threads created, ever */
	uint32_t retired;	/* threads retired, ever */
	uint32_t max_threads_seen;
	uint32_t reserved;
	uint64_t calls;		/* handlers run (incl. one-way) */
	uint64_t rejected;	/* calls refused: queue full, bad method... */
	uint64_t cancelled;	/* calls whose caller left or timed out */
};

POPUP_API int popup_server__stats(const struct popup_server *srv,
				  struct popup_server_stats *stats);
POPUP_API const char *popup_server__name(const struct popup_server *srv);
POPUP_API uint32_t popup_server__version(const struct popup_server *srv);
POPUP_API enum popup_backend popup_server__backend(const struct popup_server *srv);

/* ---- client side ------------------------------------------------------- */

struct popup_client;
struct popup_binding;

struct popup_client_opts {
	size_t sz;			/* sizeof(struct popup_client_opts) */
	enum popup_backend backend;
	size_t :0;
};
#define popup_client_opts__last_field backend

POPUP_API struct popup_client *
popup_client__open(const struct popup_client_opts *opts);

/* Bindings must be destroyed first. */
POPUP_API void popup_client__close(struct popup_client *client);
POPUP_API enum popup_backend popup_client__backend(const struct popup_client *client);

struct popup_import_opts {
	size_t sz;			/* sizeof(struct popup_import_opts) */
	uint32_t slots;			/* concurrency, 1..POPUP_MAX_SLOTS (0: 1) */
	int timeout_ms;			/* default call timeout (0: infinite) */
	int32_t priority;		/* of this binding's calls (user
					 * backend; the kernel uses the
					 * caller's scheduling priority) */
	uint32_t oneway_quota;		/* one-way calls queued or running,
					 * 1..slots (0: (slots + 1) / 2) */
	size_t :0;
};
#define popup_import_opts__last_field oneway_quota

POPUP_API struct popup_binding *
popup_client__import(struct popup_client *client, const char *name,
		     uint32_t version, const struct popup_import_opts *opts);

POPUP_API void popup_binding__destroy(struct popup_binding *b);
POPUP_API uint32_t popup_binding__slots(const struct popup_binding *b);
POPUP_API uint32_t popup_binding__slot_size(const struct popup_binding *b);

/*
 * Call @method with @arg_len bytes of @arg, wait up to @timeout_ms
 * (POPUP_TIMEOUT_*) for the result, copy it to @res (up to @res_cap bytes,
 * its length to *@res_len if not NULL). Takes a free slot, waiting for one
 * within the same timeout. Returns the handler's status or -errno.
 */
POPUP_API int popup_binding__call(struct popup_binding *b, uint32_t method,
				  const void *arg, uint32_t arg_len,
				  void *res, uint32_t res_cap,
				  uint32_t *res_len, int timeout_ms);

/*
 * Queue a call to a one-way method and return at once: 0 once the service
 * accepted it, -EAGAIN when the binding's one-way quota or the service's
 * queue is full. The handler's status is not reported.
 */
POPUP_API int popup_binding__call_oneway(struct popup_binding *b,
					 uint32_t method,
					 const void *arg, uint32_t arg_len);

/*
 * Zero-copy calls. A slot is one argument stack entry: write the arguments
 * at popup_binding__slot(), call, read the result from the same place.
 * __slot_acquire() returns a free slot index (waiting up to @timeout_ms) or
 * -errno; the thread owns it until __slot_release().
 */
POPUP_API int popup_binding__slot_acquire(struct popup_binding *b, int timeout_ms);
POPUP_API void popup_binding__slot_release(struct popup_binding *b, unsigned int slot);
POPUP_API void *popup_binding__slot(struct popup_binding *b, unsigned int slot,
				    uint32_t *size);
POPUP_API int popup_binding__call_slot(struct popup_binding *b, unsigned int slot,
				       uint32_t method, uint32_t arg_len,
				       uint32_t *res_len, int timeout_ms);

/* ---- another popupd over TCP ------------------------------------------ */

/*
 * Connect to a popupd's native TCP port ("host:port", IPv4 or IPv6 as
 * "[addr]:port") and read its directory (service id 0, method "services").
 * The client imports that popupd's services by name and version like a
 * local one; bindings call with the native protocol (include/popup/wire.h)
 * on the one connection, pipelined by req_id, answers matched out of
 * order by a reader thread. @timeout_ms bounds the connect and the
 * directory read (<= 0: 5 s). Errors as for local bindings, plus:
 *   ECONNREFUSED/EHOSTUNREACH/...  the connect failed (errno of connect)
 *   EPROTO        the peer does not speak the native protocol
 *   ECONNRESET    the connection ended: every call in flight and every
 *                 later one fails with it (connect again)
 *   EREMOTEIO     the remote handler failed (its error text, if any, is
 *                 the result: *res_len says how long)
 *   ENOENT/EOPNOTSUPP/EMSGSIZE/EAGAIN/ETIMEDOUT  the remote popupd's
 *                 "no service"/"no method"/"too big"/"busy"/"timeout"
 * Slots of a net binding only bound concurrent popup_binding__call()s;
 * the connection carries up to the remote's max_inflight calls.
 */
POPUP_API struct popup_client *popup_client__connect_tcp(const char *hostport,
							 int timeout_ms);

/* ---- batches: several calls outstanding -------------------------------- */

/*
 * A batch starts calls on any bindings (local kernel or user backend, or a
 * remote popupd) without waiting, and then waits for any or all of them.
 * Each outstanding call is one transaction record inside the batch; a
 * token (0, 1, 2, ... in add order) names it until popup_batch__reset().
 * A batch belongs to one thread at a time; bindings may be shared.
 *
 * How calls run, per backend:
 *   user    truly asynchronous: the request goes out on the connection of
 *           a binding slot the call holds until its answer is read, so a
 *           binding carries at most its slots' worth of a batch's calls
 *           (import with enough slots);
 *   kernel  popup.ko's CALL is synchronous per thread, so libpopup runs
 *           each outstanding call on a thread of a process-wide pool of
 *           caller threads (grown on demand up to 256, idle ones exit
 *           after 2 s); the waiting handler thread itself stays blocked
 *           only in popup_batch__wait_*();
 *   net     pipelined on the TCP connection by req_id.
 *
 * Bounds: a batch has at most max_outstanding calls running, and the
 * process at most popup_service__set_limit()'s count per service (name +
 * version; default POPUP_SERVICE_LIMIT_DEFAULT), counted across batches: a
 * counting semaphore per service. popup_batch__add() never blocks while
 * its batch has calls running: past a bound (or with no free binding slot
 * under the user backend) it returns -EAGAIN, and the caller reaps one
 * with popup_batch__wait_any() and adds again. With nothing running it
 * waits for a unit (up to the call's timeout; then -ETIMEDOUT), which
 * cannot deadlock because such a batch holds nothing.
 *
 * Buffers: @arg may be reused as soon as add() returns; @res must stay
 * valid until the call is reported done (wait_*, or __free()).
 */
struct popup_batch;

#define POPUP_BATCH_MAX			256	/* max_outstanding at most */
#define POPUP_SERVICE_LIMIT_DEFAULT	64

struct popup_batch_opts {
	size_t sz;			/* sizeof(struct popup_batch_opts) */
	uint32_t max_outstanding;	/* 1..POPUP_BATCH_MAX (0: 8) */
	int timeout_ms;			/* per call, from its add (0: the
					 * binding's default) */
	size_t :0;
};
#define popup_batch_opts__last_field timeout_ms

POPUP_API struct popup_batch *popup_batch__new(const struct popup_batch_opts *opts);

/*
 * Cancel every call still running (user: its connection is closed, which
 * cancels it in the server; net: its reply will be discarded; kernel: the
 * caller thread's call is waited for, up to its timeout) and free.
 */
POPUP_API void popup_batch__free(struct popup_batch *batch);

/*
 * Start @method on @b; its token in *@token. Returns 0 or -errno: the
 * synchronous call's argument errors (EINVAL, EOPNOTSUPP, EMSGSIZE),
 * EAGAIN (a bound, see above), ETIMEDOUT, ECONNRESET, ENOMEM.
 */
POPUP_API int popup_batch__add(struct popup_batch *batch, struct popup_binding *b,
			       uint32_t method, const void *arg, uint32_t arg_len,
			       void *res, uint32_t res_cap, int *token);

/*
 * Wait up to @timeout_ms (POPUP_TIMEOUT_INFINITE, or 0: do not wait) for
 * a call not reported yet to finish; returns its token, each call's once,
 * in completion order. -ETIMEDOUT when none finished in time (calls keep
 * running), -ENOENT when every call was reported already. A call past its
 * own timeout finishes with -ETIMEDOUT.
 */
POPUP_API int popup_batch__wait_any(struct popup_batch *batch, int timeout_ms);

/* Wait until every call finished: 0, or -ETIMEDOUT (calls keep running). */
POPUP_API int popup_batch__wait_all(struct popup_batch *batch, int timeout_ms);

/*
 * A finished call's status, what popup_binding__call() would have
 * returned (the handler's status or -errno), and its result length in
 * *@res_len; -EINPROGRESS while it runs; -EINVAL for an unknown token.
 */
POPUP_API int popup_batch__result(const struct popup_batch *batch, int token,
				  uint32_t *res_len);

/* Calls running now. */
POPUP_API uint32_t popup_batch__outstanding(const struct popup_batch *batch);

/* Forget finished calls (tokens restart at 0); -EBUSY while any runs. */
POPUP_API int popup_batch__reset(struct popup_batch *batch);

/*
 * Process-wide: at most @max (1..65536) batch calls to @name @version
 * running at once, across all batches. Lowering it below the number
 * running makes later adds wait; running calls are not touched.
 */
POPUP_API int popup_service__set_limit(const char *name, uint32_t version,
				       uint32_t max);

#ifdef __cplusplus
}
#endif

#endif /* __POPUP_POPUP_H */
