/* SPDX-License-Identifier: LGPL-2.1 OR BSD-2-Clause */
/*
 * libpopup internals shared by the front end (libpopup.c) and the backends
 * (user_*.c: Unix sockets and an in-library pool; kernel.c: popup.ko).
 *
 * The front end validates arguments, owns the public objects and their
 * common fields, and dispatches to a backend through struct popup_ops. A
 * backend hangs its own state off the objects' @priv pointers. Nothing in
 * here is exported: the library is built with -fvisibility=hidden and only
 * POPUP_API functions are visible.
 */
#ifndef __LIBPOPUP_INTERNAL_H
#define __LIBPOPUP_INTERNAL_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <popup/popup.h>

#define __printf(a, b)	__attribute__((format(printf, a, b)))

__printf(2, 3) void libpopup_print(enum popup_print_level level, const char *fmt, ...);

#define __pr(level, fmt, ...) libpopup_print(level, "libpopup: " fmt, ##__VA_ARGS__)
#define pr_warn(fmt, ...)	__pr(POPUP_WARN, fmt, ##__VA_ARGS__)
#define pr_info(fmt, ...)	__pr(POPUP_INFO, fmt, ##__VA_ARGS__)
#define pr_debug(fmt, ...)	__pr(POPUP_DEBUG, fmt, ##__VA_ARGS__)

#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))
#define min_t(t, a, b)	((t)(a) < (t)(b) ? (t)(a) : (t)(b))
#define max_t(t, a, b)	((t)(a) > (t)(b) ? (t)(a) : (t)(b))


/* An interface's method, as both sides keep it. */
struct method_info {
	uint32_t id;
	uint32_t flags;
	uint32_t max_arg;
	uint32_t max_res;
	popup_handler_fn handler;	/* server side only */
	char *name;			/* server side only; may be NULL */
};

struct popup_server {
	const struct popup_ops *ops;
	enum popup_backend backend;
	char name[POPUP_NAME_MAX];
	uint32_t version;
	struct method_info *methods;
	uint32_t nr_methods;
	uint32_t max_arg;		/* largest max_arg of any method */
	uint32_t max_res;		/* largest max_res of any method */
	void *user_data;
	bool running;			/* (protected by @lock) */
	pthread_mutex_t lock;
	struct popup_pool_attr pool;	/* (protected by @lock) */
	struct popup_server_stats stats; /* (protected by @lock) */
	void *priv;			/* backend state */
};

struct popup_client {
	const struct popup_ops *ops;
	enum popup_backend backend;
	int fd;				/* /dev/popup, or -1 */
	void *priv;			/* net backend: struct net_conn */
};

struct popup_binding {
	struct popup_client *client;
	const struct popup_ops *ops;
	char name[POPUP_NAME_MAX];
	uint32_t version;
	uint32_t nr_slots;
	uint32_t slot_size;		/* usable bytes per slot */
	uint32_t slot_stride;		/* distance between slots (>= size) */
	uint8_t *slots;			/* nr_slots * stride, set by backend */
	int timeout_ms;			/* default, < 0 = infinite */
	int32_t priority;
	uint32_t oneway_quota;
	struct method_info *methods;	/* as the service announced them */
	uint32_t nr_methods;
	pthread_mutex_t lock;
	pthread_cond_t slot_freed;
	uint64_t free_slots;		/* bitmap (protected by @lock) */
	uint64_t tainted_slots;		/* may still be busy in the backend
					 * with a one-way call (@lock) */
	void *priv;			/* backend state */
};

/*
 * struct popup_ops - what a backend implements. Every function returns 0
 * or -errno unless noted; the front end has validated arguments and holds
 * no lock across these calls.
 */
struct popup_ops {
	const char *name;
	uint32_t max_msg;		/* largest max_arg/max_res it carries */
	int (*server_export)(struct popup_server *srv);
	int (*server_run)(struct popup_server *srv);
	int (*server_stop)(struct popup_server *srv);	/* async-signal-safe */
	void (*server_withdraw)(struct popup_server *srv);
	int (*server_set_pool)(struct popup_server *srv); /* srv->pool updated */
	int (*server_stats)(const struct popup_server *srv,
			    struct popup_server_stats *stats);
	int (*client_open)(struct popup_client *client);
	void (*client_close)(struct popup_client *client);
	/* Fills slot_size, slot_stride, methods, nr_methods and slots. */
	int (*import)(struct popup_binding *b);
	/* May a tainted slot (see tainted_slots) be written again? */
	bool (*slot_ready)(struct popup_binding *b, unsigned int slot);
	void (*unimport)(struct popup_binding *b);
	/*
	 * Arguments are in slot @slot; the result lands there too, its
	 * length in *@res_len (0 on transport errors). @deadline is an
	 * absolute CLOCK_MONOTONIC time in ns, 0 = none. Returns the
	 * handler's status or -errno.
	 */
	int (*call)(struct popup_binding *b, unsigned int slot,
		    const struct method_info *m, uint32_t arg_len,
		    uint32_t *res_len, uint64_t deadline);
	int (*call_oneway)(struct popup_binding *b, const struct method_info *m,
			   const void *arg, uint32_t arg_len);
	/* How popup_batch runs this backend's calls (batch.c). */
	enum { ASYNC_THREADS, ASYNC_POLL, ASYNC_NET } async;
};

extern const struct popup_ops libpopup_net_ops;

/* User backend, split calls for ASYNC_POLL (user_client.c). */
int libpopup_user_call_start(struct popup_binding *b, unsigned int slot,
			     const struct method_info *m, uint32_t arg_len,
			     uint64_t deadline, uint64_t *seq);
int libpopup_user_call_finish(struct popup_binding *b, unsigned int slot,
			      uint64_t seq, uint32_t *res_len);
void libpopup_user_call_cancel(struct popup_binding *b, unsigned int slot);

/*
 * struct popup_txn - the transaction record of one outstanding batch call
 * (batch.c). Its owner is the batch; while the call runs, the engine that
 * runs it (a caller thread, the net reader) may complete it, always under
 * the batch lock (and the net connection lock first, for ASYNC_NET).
 */
struct popup_txn {
	struct popup_batch *batch;
	struct popup_binding *b;
	const struct method_info *m;
	struct method_info tmp;		/* @m for backends without a table */
	struct svc_sem *sem;		/* the per-service unit held, or NULL */
	void *arg_copy;			/* ASYNC_THREADS: owned copy */
	uint32_t arg_len;
	void *res;			/* the caller's */
	uint32_t res_cap;
	uint32_t res_len;
	int status;
	int state;			/* TX_* (batch.c) */
	int token;
	int slot;			/* ASYNC_POLL: slot held, else -1 */
	int fd;				/* ASYNC_POLL: connection to poll */
	uint64_t seq;			/* ASYNC_POLL seq, ASYNC_NET req_id */
	uint64_t deadline;		/* absolute, 0 = none */
	struct popup_txn *next;		/* engine queues, net pending list */
	struct popup_txn *done_next;	/* the batch's completed list */
};

/* Complete @t with @status (its res/res_len already set); any thread. */
void libpopup_txn_complete(struct popup_txn *t, int status);
/* Net backend (net_client.c): send @t's request (arguments @arg). */
int libpopup_net_submit(struct popup_txn *t, const void *arg);
/* Take @t out of the connection's pending list: false if its reply is
 * being (or was) delivered. */
bool libpopup_net_cancel(struct popup_txn *t);
/* A synchronous call run through a one-record batch (net backend). */
int libpopup_batch_call_one(struct popup_binding *b, const struct method_info *m,
			    const void *arg, uint32_t arg_len, void *res,
			    uint32_t res_cap, uint32_t *res_len, uint64_t deadline);
int libpopup_check_call(const struct popup_binding *b, uint32_t method, uint32_t arg_len,
			bool oneway, const struct method_info **mp,
			struct method_info *tmp);

extern const struct popup_ops libpopup_user_ops;
extern const struct popup_ops libpopup_kernel_ops;

/* Front-end helpers the backends use. */
const struct method_info *libpopup_method_find(const struct method_info *methods,
				      uint32_t nr, uint32_t id);
/*
 * A free slot of @b, waiting until @deadline: -ETIMEDOUT then. With
 * @no_wait_tainted, fail with -EAGAIN rather than wait for a tainted slot
 * to become ready (one-way calls).
 */
int libpopup_slot_acquire(struct popup_binding *b, uint64_t deadline, bool no_wait_tainted);
uint8_t *libpopup_slot_ptr(const struct popup_binding *b, unsigned int slot);
int libpopup_pool_resolve(const struct popup_pool_attr *in, struct popup_pool_attr *out);

/* Time helpers: absolute CLOCK_MONOTONIC deadlines in ns, 0 = none. */
uint64_t libpopup_now_ns(void);
uint64_t libpopup_deadline_from_ms(int timeout_ms);
/* Milliseconds left until @deadline for poll(): -1 if none, 0 if passed. */
int libpopup_ms_left(uint64_t deadline);
void libpopup_timespec_from_ns(struct timespec *ts, uint64_t ns);

/* Rejects non-zero bytes past the part of an opts struct we know. */
bool libpopup_opts_valid(const void *opts, size_t known_sz, const char *type_name);
#define OPTS_VALID(opts, type)						\
	(!(opts) || libpopup_opts_valid(opts, offsetofend(struct type,		\
				type##__last_field), #type))
#define OPTS_HAS(opts, field)						\
	((opts) && (opts)->sz >= offsetofend(typeof(*(opts)), field))
#define OPTS_GET(opts, field, fallback)					\
	(OPTS_HAS(opts, field) ? (opts)->field : (fallback))
#define offsetofend(type, field)					\
	(offsetof(type, field) + sizeof(((type *)0)->field))

#endif /* __LIBPOPUP_INTERNAL_H */
