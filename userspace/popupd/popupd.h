/* SPDX-License-Identifier: GPL-2.0 */
/*
 * popupd internals shared by its files.
 *
 * Threads and who owns what:
 *  - the main thread parses the configuration, loads the services, opens
 *    the workers, then waits for signals (SIGHUP reload, SIGTERM/SIGINT
 *    graceful stop);
 *  - one network worker per CPU (popupd-wN, worker.c) owns its listeners,
 *    its connections and everything in them: only it reads or writes a
 *    struct conn, so connections need no locks;
 *  - handler pools (pool.c, popupd-<svc>) run blocking handlers (per the
 *    service's dispatch model: a shared queue, or per-connection and
 *    per-object lanes with a thread each); a
 *    finished job goes back to the worker that received it through the
 *    worker's completion list (the only cross-thread hand-off, under
 *    worker->done_lock) and an eventfd wake-up;
 *  - libpopup runs each service's local export (local.c) in its own
 *    threads; those share only the service's handlers and counters.
 * Counters are bumped with relaxed atomics; limits that SIGHUP may change
 * are read with LIM() so a reload never tears a value.
 */
#ifndef POPUPD_H
#define POPUPD_H

#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <http_parser.h>

#include "popup/service.h"
#include "popup/stats.h"
#include "popup/wire.h"

#define EXIT_USAGE	2

/* The built-in directory service, always id 0, exported locally too. */
#define POPUPD_SVC_NAME		"popupd"
#define POPUPD_SVC_VERSION	1
#define POPUPD_M_SERVICES	1
#define POPUPD_M_STATS		2
#define POPUPD_MAX_SERVICES	64

/* ---- configuration (config.c) ----------------------------------------- */

/* Limits SIGHUP may change; read them with LIM(). */
struct popupd_limits {
	uint32_t max_conns;		/* TCP connections, whole daemon */
	uint32_t max_request;		/* request payload bytes, any protocol */
	uint32_t max_header;		/* HTTP request line + headers */
	uint32_t max_output;		/* buffered reply bytes per connection */
	uint32_t max_inflight;		/* requests in progress per connection */
	uint32_t idle_timeout_ms;	/* silent connection closed after */
	uint32_t request_timeout_ms;	/* whole-request deadline (slow senders) */
	uint32_t write_timeout_ms;	/* no output progress for this long */
	uint32_t stop_timeout_ms;	/* graceful stop deadline */
};

#define LIM(field) __atomic_load_n(&pd.lim.field, __ATOMIC_RELAXED)

/* One "key = value" of a [service.<name>] section. */
struct popupd_kv {
	struct popupd_kv *next;
	char *key, *value;
};

struct popupd_svc_conf {
	struct popupd_svc_conf *next;
	char *name;
	struct popupd_kv *kv;
};

struct popupd_config {
	char *config_path;
	int port;			/* native TCP+UDP; 0 = any free port */
	int http_port;			/* 0 = any free port, -1 = no HTTP */
	char *bind_addr;
	cpu_set_t cpus;
	bool cpus_set;
	char *pin_dir;
	bool pin_dir_set;		/* given explicitly: never rename it */
	bool use_bpf;
	bool local;			/* export services through libpopup */
	int arrival;			/* ARRIVAL_AUTO, _KERNEL or _USER */
	char *stats_path;
	char *port_file;		/* write the bound ports here */
	char *plugin_dir;
	char **services;		/* names, in load order */
	unsigned int nr_services;
	int log_level;
	struct popupd_limits lim;
	struct popupd_svc_conf *svc_conf;
	/* arbiter.c, subserver.c */
	struct popupd_svc_conf *arb_conf;	/* [arbiter.<name>] sections */
	int arbiter_port;		/* subservers connect here; 0 = any */
	char *arbiter_bind;		/* its address; NULL: bind_addr */
	char *subserver_of;		/* HOST:PORT of a front popupd */
	uint32_t subserver_asks;	/* asks kept outstanding (0: default) */
};

/* How UDP requests reach handlers: popup.ko contexts or the epoll loop. */
enum { ARRIVAL_AUTO, ARRIVAL_KERNEL, ARRIVAL_USER };

void config_defaults(struct popupd_config *cfg);
void config_free(struct popupd_config *cfg);
/* Returns 0, -EINVAL after printing a one-line message, or -ENOENT. */
int config_load_file(struct popupd_config *cfg, const char *path);
/* CLI; *check is set by --check-config, *cfg_path by --config. */
int config_parse_args(struct popupd_config *cfg, int argc, char **argv,
		      bool *check, const char **cfg_path);
const char *config_svc_get(const struct popupd_config *cfg, const char *svc,
			   const char *key);
int parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out);

/* ---- services (service.c) --------------------------------------------- */

#define LAT_BUCKETS 40		/* log2 microseconds */

struct svc_stats {
	uint64_t calls;		/* handlers run or refused, network + local */
	uint64_t errors;	/* non-zero status */
	uint64_t busy;		/* refused: queue full */
	uint64_t timeouts;	/* past the deadline */
	uint64_t local_calls;
	uint64_t lat[LAT_BUCKETS];
};

struct pool;
struct popup_server;
struct arbiter;

struct svc {
	const struct popup_svc_def *def;
	void *dl;			/* dlopen handle; NULL if built in */
	char path[512];
	uint32_t id;
	struct popup_svc_pool pool;	/* resolved: plugin, then config */
	enum popup_svc_dispatch dispatch; /* resolved likewise */
	int32_t max_priority;		/* resolved likewise */
	/* The plugin's def and methods in this header's layout (service.c
	 * reads older layouts into them); def points at @defc. */
	struct popup_svc_def defc;
	struct popup_svc_method *mtab;
	void *state;
	bool inited;
	struct popup_svc_env env;
	struct pool **pools;		/* 1, or one per worker (PERCPU) */
	unsigned int nr_pools;
	struct svc_stats st;
	/* local export (local.c) */
	struct popup_server *srv;
	pthread_t local_thread;
	bool local_started;
	int local_err;			/* last export error, for the log */
	struct arbiter *arb;		/* handled by subservers (arbiter.c) */
};

/* Load the configured services (and the built-in one); 0 or -errno after
 * logging which plugin is bad and why. */
int services_load(const struct popupd_config *cfg);
int services_init(void);		/* run every init() */
void services_fini(void);		/* fini() and dlclose */
struct svc *svc_by_id(uint32_t id);
struct svc *svc_by_name(const char *name, size_t len);
const struct popup_svc_method *svc_method_by_id(const struct svc *s, uint32_t id);
const struct popup_svc_method *svc_method_by_name(const struct svc *s,
						  const char *name, size_t len);
unsigned int services_count(void);
/* Register a service defined by popupd itself (an arbiter's). */
int svc_add(const struct popup_svc_def *def, void *state, struct svc **out);
struct svc *svc_at(unsigned int i);
/* Run a handler: fills @call->res_len, returns its status; counts it. */
int svc_invoke(struct svc *s, const struct popup_svc_method *m,
	       struct popup_svc_call *call);
void svc_account(struct svc *s, int status, uint64_t arrival_ns, bool local);
const char *svc_dispatch_name(enum popup_svc_dispatch d);
int svc_resolve_pool(const struct svc *s, const struct popupd_config *cfg,
		     struct popup_svc_pool *r, enum popup_svc_dispatch *dispatch);
/* The priority a call runs at: @asked (if @has) capped by what @s and @m
 * allow, else the method's. */
int32_t svc_call_prio(const struct svc *s, const struct popup_svc_method *m,
		      bool has, int asked);
uint64_t svc_mix64(uint64_t x);
/* PER_OBJECT: the object key of a call, mixed (lane = key % lanes), or a
 * negative errno. */
int svc_object_key(const struct svc *s, const struct popup_svc_call *call, uint64_t *key);

/* subcall.c: the sub-call hooks of struct popup_svc_env */
void subcall_env_init(struct popup_svc_env *env);
void subcall_fini(void);

/* ---- jobs and handler pools (pool.c) ---------------------------------- */

struct worker;
struct conn;

/* One request in progress, from parse to reply. */
struct job {
	struct job *next;		/* pool queue, completion list */
	struct job *hnext;		/* HTTP: the connection's reply order */
	struct svc *svc;
	const struct popup_svc_method *m;
	struct worker *w;		/* receiving worker: gets the result */
	struct conn *conn;		/* TCP; NULL for UDP */
	enum popup_svc_origin origin;
	struct popup_wire_hdr hdr;	/* native: the request header */
	struct sockaddr_storage peer;
	socklen_t peer_len;
	uint64_t arrival_ns, deadline_ns;
	int status;			/* 0 or -errno, from the handler or popupd */
	uint32_t pstatus;		/* popupd's own POPUP_WIRE_S_* verdict */
	int http_code;			/* HTTP: set when popupd answers itself */
	bool http_close;		/* HTTP: last response on the connection */
	bool http_head;			/* HTTP HEAD: no body */
	bool done;
	const char *msg;		/* popupd's own error text */
	unsigned char *res;
	uint32_t res_len, res_cap;
	uint32_t req_len;
	uint32_t req_cap;		/* bytes allocated for the request */
	unsigned char *req;		/* points into the same allocation */
	int32_t prio;			/* POPUP_SVC_PRIO_MIN..MAX */
	uint32_t lane;			/* PER_CONN/PER_OBJECT: the thread's lane */
	uint64_t qseq;			/* queue order, for aging */
	struct job_wait *waiter;	/* pool_call_sync()'s caller waits */
	int32_t caller_pid;		/* local: the caller's credentials */
	uint32_t caller_uid, caller_gid;
};

struct job *job_new(uint32_t req_len, uint32_t res_cap);
void job_free(struct job *j);
/* Run @j's handler now, on this thread, and set its status. */
void job_run(struct job *j);

/* Queue @j on its service's pool; -EBUSY past the queue limit,
 * -ESHUTDOWN when stopping. The pool hands it to worker_complete(). */
int pool_submit(struct pool *p, struct job *j);
struct pool *pool_create(struct svc *s, int cpu);
/* Let queued jobs run, then join every thread. */
void pool_destroy(struct pool *p);
void pool_set_limits(struct pool *p, const struct popup_svc_pool *cfg);
struct pool_stats {
	uint32_t threads, idle, busy, queued, max_threads, max_seen;
	uint64_t spawned, retired;
};
void pool_get_stats(struct pool *p, struct pool_stats *ps);
/* Lanes (PER_CONN, PER_OBJECT): a job runs on the thread of lane
 * j->lane % pool_lanes(). PER_CONN: pool_bind() reserves a free lane for
 * a connection (-EBUSY: all taken), pool_unbind() gives it back. */
uint32_t pool_lanes(const struct pool *p);
int pool_bind(struct pool *p);
void pool_unbind(struct pool *p, uint32_t lane);
/* PER_OBJECT for callers without a worker (local, kernel UDP arrival):
 * run @call on its object's lane, wait, and copy the result into it.
 * Returns the handler's status, or -EBUSY / the key extractor's error. */
int pool_call_sync(struct svc *s, const struct popup_svc_method *m,
		   struct popup_svc_call *call, uint64_t arrival_ns);

/* ---- network workers (worker.c, native.c, http.c) --------------------- */

enum conn_proto { PROTO_NATIVE, PROTO_HTTP };

struct conn {
	struct conn *prev, *next;	/* the worker's connection list */
	struct worker *w;
	int fd;				/* -1 once closed (jobs may still refer) */
	enum conn_proto proto;
	unsigned int refs;		/* 1 for the list + 1 per job in flight */
	bool reading;			/* EPOLLIN armed */
	uint32_t ev;			/* events armed in epoll now */
	bool closing;			/* close once output drains */
	bool goaway;			/* drain: told the peer to go away */
	bool paused;			/* parsing held back by limits */
	bool http_closed;		/* HTTP: "Connection: close" was sent */
	uint32_t in_len, in_cap;
	unsigned char *in;
	uint32_t out_off, out_len, out_cap;
	unsigned char *out;
	uint32_t inflight;		/* jobs not yet answered */
	uint64_t last_active_ns;	/* last byte in or out */
	uint64_t req_start_ns;		/* first byte of a partial request */
	uint64_t write_stall_ns;	/* output pending since (no progress) */
	struct sockaddr_storage peer;
	socklen_t peer_len;
	/* HTTP */
	http_parser hp;
	struct job *hq_head, *hq_tail;	/* responses in request order */
	struct job *hcur;		/* request being parsed */
	uint32_t hdr_bytes;
	char url[256];
	uint32_t url_len;
	char hfield[24];		/* current header name (prefix) */
	uint32_t hfield_len;
	int hstate;			/* 0 none, 1 in a name, 2 in a value */
	int herr;			/* HTTP status to answer a parse error */
	bool url_long, hdr_expect, hdr_is_expect;
	bool hdr_is_prio, hprio_bad;	/* X-Popup-Priority */
	char hprio[8];
	uint32_t hprio_len;
	uint32_t body_limit;
	/* PER_CONN services this connection holds a lane of */
	struct conn_lane {
		struct svc *svc;
		uint32_t lane;
	} *lanes;
	uint32_t nr_lanes;
};

struct popupd_counters {
	uint64_t conns_refused;		/* past max_conns */
	uint64_t idle_closed;
	uint64_t slow_closed;		/* whole-request deadline */
	uint64_t write_closed;		/* output made no progress */
	uint64_t proto_errors;		/* unframeable input: closed */
	uint64_t accept_emfile;		/* accept hit the fd limit */
	uint64_t busy;			/* busy replies (queue or per-conn) */
	uint64_t http_requests;
	uint64_t udp_dropped;		/* datagrams without a header */
};

struct worker {
	int cpu;			/* pinned CPU; also the BPF slot's CPU */
	unsigned int idx;		/* slot and pool index */
	int tcp_fd, udp_fd, http_fd;	/* SO_REUSEPORT sockets */
	int epfd;
	int wake_fd;			/* eventfd: completions, stop */
	int spare_fd;			/* kept for refusing at EMFILE */
	pthread_t thread;
	bool started;
	struct popup_worker_stats *st;
	struct conn *conns;		/* owned by the thread */
	unsigned int nconns;
	unsigned int sample_tick;
	uint64_t accept_resume_ns;	/* accepting paused (EMFILE) until */
	bool accept_paused;
	bool draining;
	uint64_t drain_deadline_ns;
	uint64_t drain_started_ns;
	pthread_mutex_t done_lock;	/* protects done_head */
	struct job *done_head;
	unsigned int udp_inflight;	/* UDP jobs not answered yet */
	int stop_req;			/* atomic: 1 drain, 2 stop now */
	bool udp_kernel;		/* popup.ko receives on udp_fd */
	uint64_t http_requests;		/* this worker's share of the counter */
	uint64_t now;			/* clock read when the current batch of
					 * events arrived (worker_now()) */
	/* Run-time restart and UDP drain (worker_retire(), main.c) */
	int restart_req;		/* atomic: retire the native sockets and
					 * exit, keeping the connections */
	bool retiring;
	bool udp_retired;		/* out of steering: drain until idle */
	uint64_t retire_deadline_ns;
	uint64_t udp_last_ns;		/* last datagram read */
	/* Workers sit side by side in one array and each writes its own
	 * fields on every request: keep the next one's off our last line. */
	char pad[64];
};

int worker_open(struct worker *w, const struct popupd_config *cfg,
		uint16_t port, uint16_t http_port);
int worker_start(struct worker *w);
/* Ask for a graceful drain (1) or an immediate stop (2). */
void worker_request_stop(struct worker *w, int how);
void worker_join(struct worker *w);
void worker_close(struct worker *w);
/* Run-time restart (main thread, see worker.c): stop the thread once its
 * native sockets are drained and closed, then new sockets and thread. */
void worker_retire(struct worker *w);
int worker_reopen(struct worker *w);
/* Called by a pool thread when @j is done. */
void worker_complete(struct job *j);
uint16_t sock_port(int fd);

/* For the fuzz targets: a connection served without the worker thread. */
struct conn *worker_adopt(struct worker *w, int fd, enum conn_proto proto);
bool worker_feed(struct conn *c, const void *data, size_t len);
void worker_drop(struct worker *w);

/* Connection primitives shared by the protocol files. */
int conn_reserve_out(struct conn *c, uint64_t extra);
void conn_put(struct conn *c);
void conn_append(struct conn *c, const void *p, uint32_t n);
/* Tie @j to @c (a reference; HTTP: its place in the reply order). */
void job_attach(struct conn *c, struct job *j);
/* Route a parsed request: inline, to a pool, or an immediate error. */
void dispatch_job(struct worker *w, struct job *j);
bool conn_over_limits(const struct conn *c);

/* native.c */
int native_input(struct conn *c);
void native_reply(struct conn *c, struct job *j);
void native_udp(struct worker *w, const unsigned char *buf, size_t n,
		const struct sockaddr_storage *peer, socklen_t plen);
uint32_t native_encode(const struct job *j, unsigned char *out, uint32_t cap);
int status_to_wire(int status);

/* http.c */
void http_conn_init(struct conn *c);
int http_input(struct conn *c);
/* Emit finished responses in request order. */
void http_flush_ready(struct conn *c);
void http_abandon_queue(struct conn *c);
void http_refuse(int fd, int code, const char *msg);
int status_to_http(int status);

/* ---- the daemon (main.c, local.c, stats.c) ---------------------------- */

struct popupd {
	struct popupd_config cfg;
	struct popupd_limits lim;	/* live copy of cfg.lim */
	struct worker *workers;
	unsigned int nr_workers;
	/* Written by every worker: on lines of their own, away from the
	 * limits every request reads. */
	struct popupd_counters ctr __attribute__((aligned(64)));
	uint32_t conns __attribute__((aligned(64)));	/* open TCP connections */
	char pad_conns[60];
	uint16_t port, http_port;	/* bound */
	uint64_t started_ns;
};

extern struct popupd pd;

static inline void ctr_add(uint64_t *c, uint64_t n)
{
	__atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

static inline uint64_t ctr_get(const uint64_t *c)
{
	return __atomic_load_n(c, __ATOMIC_RELAXED);
}

uint64_t now_ns(void);

/* Time stamps for timeouts (activity, request start, write stalls): the
 * time this batch of events arrived, so that a request costs one clock
 * read instead of several. Never later than the truth, so a deadline
 * started from it only comes sooner. */
static inline uint64_t worker_now(const struct worker *w)
{
	return w->now ? w->now : now_ns();
}

/* arbiter.c: services served by subservers; subserver.c: the other side. */
int arbiter_load(const struct popupd_config *cfg);	/* from services_load */
int arbiter_start(const struct popupd_config *cfg);
uint16_t arbiter_port(void);
/* Queue @j for a subserver; -EBUSY past the queue bound, -ESHUTDOWN. */
int arbiter_submit(struct arbiter *a, struct job *j);
void arbiter_stop(void);
void arbiter_free(void);
int arbiter_stats_text(char *buf, size_t cap);
int subserver_start(const struct popupd_config *cfg);
void subserver_stop(void);

/* arrival.c: UDP requests through popup.ko (POPUP_IOC_ATTACH). */
int arrival_kernel_start(void);
void arrival_kernel_stop(void);
bool arrival_kernel_active(void);

int local_start(void);			/* export every service */
void local_stop(void);
struct popup_server_stats;
int local_stats(struct svc *s, struct popup_server_stats *st);

struct popup_stats_file *stats_create(const char *path, unsigned int nr_workers,
				      uint32_t port);
void stats_destroy(struct popup_stats_file *sf, const char *path);
/* Text the directory service returns (popupctl parses it). */
int dir_services_text(char *buf, size_t cap);
int dir_stats_text(char *buf, size_t cap);

#endif /* POPUPD_H */
