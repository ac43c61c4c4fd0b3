/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Structures and helpers shared between the files of popup.ko.
 *
 * Locking overview: see the comment at the top of main.c, which lists every
 * lock of the module in acquisition order.
 */
#ifndef _POPUP_INTERNAL_H
#define _POPUP_INTERNAL_H

#include <linux/hrtimer.h>
#include <linux/kref.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/rcupdate.h>
#include <linux/socket.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/uidgid.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include <uapi/linux/popup.h>

/*
 * enum popup_stat - per-CPU event counters shown in /proc/popup/stats.
 * Counters are per-CPU and lockless (this_cpu_inc); readers sum or print
 * them per CPU and accept a slightly stale view.
 */
enum popup_stat {
	POPUP_STAT_OPENS,
	POPUP_STAT_IOCTLS,
	POPUP_STAT_ERRORS,
	POPUP_STAT_EXPORTS,
	POPUP_STAT_IMPORTS,
	POPUP_STAT_CALLS,
	POPUP_STAT_ONEWAY,
	POPUP_STAT_HANDOFFS,
	POPUP_STAT_QUEUED,
	POPUP_STAT_REPLIES,
	POPUP_STAT_CANCELS,
	POPUP_STAT_TIMEOUTS,
	POPUP_STAT_ABORTS,
	POPUP_STAT_SPAWNS,
	POPUP_STAT_RETIRES,
	POPUP_STAT_UNMAPS,
	POPUP_STAT_BURST_PROBES,
	POPUP_STAT_BURST_WAITS,
	POPUP_NR_STATS,
};

struct popup_cpu_stats {
	u64 count[POPUP_NR_STATS];
};

DECLARE_PER_CPU(struct popup_cpu_stats, popup_cpu_stats);

static inline void popup_stat_inc(enum popup_stat s)
{
	this_cpu_inc(popup_cpu_stats.count[s]);
}

/*
 * enum popup_arr_stat - per-CPU counters of the network arrival path,
 * shown in /proc/popup/arrival. Each is counted on the CPU where the event
 * happens: the arrival CPU (softirq) unless noted. Every datagram taken
 * from an attached socket ends in exactly one of: a handler (local or
 * remote), a kernel reply (busy, toobig, aborted), or a counted loss
 * (csum, unanswerable, nomem).
 */
enum popup_arr_stat {
	POPUP_ARR_ARRIVALS,	/* datagrams taken from attached sockets */
	POPUP_ARR_HANDOFFS,	/* handed straight to an idle thread */
	POPUP_ARR_QUEUED,	/* queued for a thread */
	POPUP_ARR_SPAWNS,	/* spawn requests posted by an arrival */
	POPUP_ARR_LOCAL,	/* WAIT returned it on its arrival CPU */
	POPUP_ARR_REMOTE,	/* ... on another CPU (counted there) */
	POPUP_ARR_REPLIES,	/* handler replies sent (handler's CPU) */
	POPUP_ARR_NOREPLY,	/* handler answered with no datagram */
	POPUP_ARR_BUSY,		/* overloaded: answered BUSY */
	POPUP_ARR_TOOBIG,	/* over slot_size: answered TOOBIG */
	POPUP_ARR_ABORTED,	/* service gone: answered BUSY or ERROR */
	POPUP_ARR_CSUM,		/* bad checksum: dropped, as UDP does */
	POPUP_ARR_UNANSWERABLE,	/* a kernel reply was due, no valid header */
	POPUP_ARR_NOMEM,	/* no memory for a context: deferred to a worker */
	POPUP_ARR_LOST,		/* no memory even there, or kreply list full */
	POPUP_ARR_TXERR,	/* a reply could not be sent */
	POPUP_ARR_SPURIOUS,	/* callback found no datagram */
	POPUP_ARR_ACCEPTS,	/* TCP connections accepted (worker's CPU) */
	POPUP_ARR_REFUSED,	/* accepted while overloaded: closed at once */
	POPUP_ARR_CLOSED,	/* parked connections ended: EOF, reset */
	POPUP_ARR_BADFRAME,	/* parked connection closed: malformed frame */
	POPUP_ARR_RESCUED,	/* the watch found work stranded behind a
				 * runner that blocked (the service's CPU)
				 */
	POPUP_NR_ARR_STATS,
};

struct popup_arr_stats {
	u64 count[POPUP_NR_ARR_STATS];
};

DECLARE_PER_CPU(struct popup_arr_stats, popup_arr_stats);

static inline void popup_arr_inc(enum popup_arr_stat s)
{
	this_cpu_inc(popup_arr_stats.count[s]);
}

/**
 * struct popup_proc - state of one open file of /dev/popup
 * @lock:      protects @services, @bindings, @nservices, @nbindings,
 *             @mapped, @dead
 * @services:  services exported through this file (popup_service.proc_node)
 * @bindings:  bindings imported through this file (popup_binding.proc_node)
 * @nservices: entries in @services
 * @nbindings: entries in @bindings
 * @mapped:    A-stack bytes of @bindings
 * @dead:      release has started; no new services, bindings or sockets
 * @socks:     sockets attached through this file (popup_sock.proc_node)
 * @nsocks:    entries in @socks
 * @poll_wq:   poll() waiters, woken when a service has a pending notice
 *             (invariant after open)
 * @pid:       opener's thread group, for /proc (invariant after open)
 *
 * Owned by file->private_data; freed by release. Services point back at
 * their proc (popup_service.owner) only while not dead, so no reference
 * is counted.
 */
struct popup_proc {
	struct mutex lock;		/* see above */
	struct list_head services;
	struct list_head bindings;
	unsigned int nservices;
	unsigned int nbindings;
	u64 mapped;
	bool dead;
	struct list_head socks;
	unsigned int nsocks;
	wait_queue_head_t poll_wq;
	struct pid *pid;
};

/**
 * struct popup_method_k - kernel copy of a method (invariant after export)
 * @id:      method id
 * @flags:   POPUP_METHOD_* bits
 * @max_arg: largest argument
 * @max_res: largest result
 */
struct popup_method_k {
	u32 id;
	u32 flags;
	u32 max_arg;
	u32 max_res;
};

/**
 * struct popup_waiter - a thread blocked in WAIT; lives on its kernel stack
 * @node:       on popup_service.idle, .control or .replying (protected by
 *              svc->lock)
 * @wq:         the thread sleeps here (invariant)
 * @ctx:        a call handed to this thread (protected by svc->lock)
 * @kicked:     set with @ctx, or to make the thread re-check the service
 *              (protected by svc->lock; read locklessly as a wake condition)
 * @closed:     the process closed its last descriptor (svc->lock)
 * @files:      current->files of the thread, for flush (invariant)
 * @cpu:        CPU the thread waits on, for affinity (invariant)
 * @flags:      POPUP_WAIT_* flags of the request (invariant)
 * @task:       the waiting thread, woken by arrivals once svc->lock is
 *              dropped (invariant)
 */
struct popup_waiter {
	struct list_head node;
	wait_queue_head_t wq;
	struct popup_ctx *ctx;
	bool kicked;
	bool closed;
	void *files;
	int cpu;
	u32 flags;
	struct task_struct *task;
};

/**
 * struct popup_burst - burst wake-ups of one CPU of a service (call.c)
 * @sum:    contexts taken by threads waiting on the CPU in this phase
 *          (burst mode: in this window)
 * @sleeps: sleeps of those threads in this phase
 * @navg:   contexts per sleep in the last normal phase, in 16ths
 * @on:     burst mode: threads sleep there as SCHED_BATCH
 * @won:    the last burst window paid: the next normal phase is short
 */
struct popup_burst {
	u64 sum;
	u32 sleeps;
	u32 navg;
	bool on;
	bool won;
};

/**
 * struct popup_svc_cpu - a service's state on one CPU (svc->lock)
 * @runner: the thread that last took a context there and has not gone
 *          idle since, referenced (call.c)
 * @burst:  how threads waiting there sleep
 */
struct popup_svc_cpu {
	struct task_struct *runner;
	struct popup_burst burst;
};

/**
 * struct popup_service - an exported interface
 * @refs:         registry, bindings, in-flight ioctls; freed with RCU
 * @rcu:          for kfree_rcu
 * @id:           id in popup_service_xa (invariant)
 * @version:      interface version (invariant)
 * @name:         NUL-terminated name (invariant)
 * @methods:      sorted by id (invariant)
 * @nmethods:     entries in @methods (invariant)
 * @slot_size:    page-aligned slot size (invariant)
 * @owner_pid:    exporter's tgid, for /proc (invariant)
 * @owner:        owning file; valid only while !@dead (svc->lock, or
 *                owner->lock while on its list)
 * @proc_node:    on owner->services (owner->lock)
 * @reg_node:     on popup_services (popup_lock)
 * @lock:         protects every field below, the dynamic state of this
 *                service's bindings and of its contexts
 * @dead:         withdrawn: calls fail ECONNRESET, waits ENOENT
 * @pool:         current pool settings
 * @queue:        QUEUED contexts, by priority then arrival
 * @nqueued:      entries in @queue
 * @running:      HANDED and ACTIVE contexts
 * @idle:         idle pool (and non-pool) waiters, most recent first
 * @nidle:        idle waiters that are pool threads
 * @spare_since:  jiffies since which @nidle stayed above min_idle (a
 *                hand-off that leaves it at min_idle or below resets it)
 * @control:      control waiters
 * @replying:     REPLY_WAIT waiters between their reply (a datagram's or
 *                a call's) and their wait (their @node)
 * @nreplying:    entries in @replying
 * @nthreads:     registered pool threads
 * @spawn_req:    threads asked for and not yet reported by a WAIT
 * @spawn_exp:    threads asked for and not yet registered (NEW)
 * @spawn_time:   jiffies of the last request; a request unanswered for a
 *                second may be repeated
 * @notices:      bindings whose server mapping must go (KIND_UNMAP)
 * @space_wq:     callers waiting for queue room (POPUP_CALL_BLOCK)
 * @calls:        calls accepted
 * @errors:       calls that failed after acceptance (abort, cancel)
 * @cpus:         per-CPU state, nr_cpu_ids entries (svc->lock)
 * @watch:        looks again at arrivals queued for runners (call.c)
 * @watching:     @watch is armed and holds a reference (svc->lock)
 */
struct popup_service {
	struct kref refs;
	struct rcu_head rcu;
	u32 id;
	u32 version;
	char name[POPUP_NAME_MAX];
	struct popup_method_k *methods;
	u32 nmethods;
	u32 slot_size;
	pid_t owner_pid;
	struct popup_proc *owner;
	struct list_head proc_node;
	struct list_head reg_node;

	spinlock_t lock;		/* see above */
	bool dead;
	struct popup_pool pool;
	struct list_head queue;
	u32 nqueued;
	struct list_head running;
	struct list_head idle;
	u32 nidle;
	unsigned long spare_since;
	struct list_head control;
	struct list_head replying;
	u32 nreplying;
	u32 nthreads;
	u32 spawn_req;
	u32 spawn_exp;
	unsigned long spawn_time;
	struct list_head notices;
	wait_queue_head_t space_wq;
	u64 calls;
	u64 errors;
	struct popup_svc_cpu *cpus;
	struct hrtimer watch;
	bool watching;
};

/**
 * struct popup_binding - a client's import of a service, with its A-stacks
 * @refs:         memory references: the global id (while active or
 *                mapped), each vma, a queued notice, in-flight ioctls
 * @rcu:          for kfree_rcu
 * @id:           id in popup_binding_xa, erased at the last put (invariant)
 * @svc:          the service, referenced (invariant)
 * @nslots:       slots (invariant)
 * @slot_size:    bytes per slot: svc->slot_size, or an attachment's
 *                (invariant)
 * @npages:       entries in @pages (invariant)
 * @map_size:     nslots * slot_size (invariant)
 * @pages:        the A-stack pages (invariant)
 * @proc_node:    on client->bindings (client->lock)
 * @client:       importing file; NULL once dropped (svc->lock to read,
 *                client->lock and svc->lock to clear)
 * @active:       client ownership + contexts (svc->lock); the binding is
 *                dead when it reaches 0
 * @busy:         bit per slot carrying a call (svc->lock)
 * @slot_ctx:     context per busy slot (svc->lock)
 * @gen:          generation for context ids (svc->lock)
 * @oneway:       one-way contexts queued or running (svc->lock)
 * @oneway_quota: limit of @oneway (invariant)
 * @client_maps:  vmas mapping this binding for the client (svc->lock)
 * @server_maps:  vmas mapping this binding for the server (svc->lock)
 * @notice_node:  on svc->notices (svc->lock)
 * @noticed:      @notice_node is queued and holds a reference (svc->lock)
 */
struct popup_binding {
	struct kref refs;
	struct rcu_head rcu;
	u32 id;
	struct popup_service *svc;
	u32 nslots;
	u32 slot_size;
	u32 npages;
	u64 map_size;
	struct page **pages;
	struct list_head proc_node;

	struct popup_proc *client;
	unsigned int active;
	u64 busy;
	struct popup_ctx *slot_ctx[POPUP_MAX_SLOTS];
	u32 gen;
	u32 oneway;
	u32 oneway_quota;
	unsigned int client_maps;
	unsigned int server_maps;
	struct list_head notice_node;
	bool noticed;
};

/* enum popup_ctx_state - where a context is (svc->lock) */
enum popup_ctx_state {
	POPUP_CTX_QUEUED,	/* on svc->queue */
	POPUP_CTX_HANDED,	/* given to a waiter that has not returned yet */
	POPUP_CTX_ACTIVE,	/* returned to a handler in userspace */
	POPUP_CTX_DONE,		/* replied; result valid */
	POPUP_CTX_CANCELLED,	/* caller left while ACTIVE; reply discarded */
	POPUP_CTX_ABORTED,	/* service withdrawn or caller left early */
	POPUP_CTX_FILL,		/* TCP: WAIT reads or installs the arrival */
	POPUP_CTX_SEND,		/* datagram: REPLY sends from its slot */
	POPUP_CTX_KREPLY,	/* datagram: the kernel answers it itself */
};

/**
 * struct popup_ctx - a handler context: one call in flight
 * @refs:     the service side (until reply, cancel or abort) and, for a
 *            synchronous call, the caller
 * @node:     on svc->queue or svc->running (svc->lock)
 * @wq:       the synchronous caller sleeps here (invariant)
 * @state:    enum popup_ctx_state (svc->lock; READ_ONCE as wake condition)
 * @id:       context id (invariant)
 * @binding:  the caller's binding; counts in binding->active until the
 *            context leaves the service side (invariant)
 * @method:   the method called (invariant)
 * @slot:     slot index (invariant)
 * @arg_len:  argument bytes (invariant)
 * @flags:    POPUP_CTX_ONEWAY (invariant)
 * @prio:     caller's priority (invariant)
 * @overtaken: more urgent contexts queued ahead of this one (svc->lock)
 * @cpu:      arrival CPU (invariant)
 * @tgid:     caller's process, referenced (invariant)
 * @tid:      caller's thread, referenced (invariant)
 * @uid:      caller's euid (invariant)
 * @gid:      caller's egid (invariant)
 * @waiter:   the waiter holding a HANDED context (svc->lock)
 * @status:   reply status (svc->lock, valid in DONE)
 * @result_len: reply length (svc->lock, valid in DONE)
 * @psock:    datagram contexts: the attached socket, referenced
 *            (invariant); NULL for calls
 * @skb:      unused (datagrams are copied into their slot on arrival)
 * @peer:     the sender (invariant)
 * @peer_len: bytes of @peer (invariant)
 * @hdr:      the first bytes of the datagram: its native wire header, for
 *            the replies the kernel sends itself (invariant)
 * @hdr_len:  valid bytes in @hdr (invariant)
 * @kstatus:  the wire status of a kernel reply (KREPLY)
 * @conn:     accepted connection of a listener's context until WAIT
 *            installs it as a descriptor (owned like @skb); released in
 *            process context only (kernel replies, WAIT)
 * @conn_fd:  the descriptor WAIT installed (KIND_CONN)
 * @taken:    KIND_STREAM: its frame was read off the connection, which
 *            passed the reader role on (set by the thread reading it,
 *            under svc->lock)
 * @embedded: a UDP datagram's context, one of its socket's
 *            popup_sock.dctx, bound to the slot of the same index: it is
 *            never allocated or freed, its release frees the slot
 *            (invariant)
 *
 * A datagram context outside svc->queue and svc->running, in FILL or SEND,
 * belongs to the thread that put it there: withdrawal does not see it and
 * that thread finishes it once it relocks.
 */
struct popup_ctx {
	struct kref refs;
	struct list_head node;
	wait_queue_head_t wq;
	int state;
	u64 id;
	struct popup_binding *binding;
	const struct popup_method_k *method;
	u32 slot;
	u32 arg_len;
	u32 flags;
	int prio;
	u32 overtaken;
	int cpu;
	struct pid *tgid;
	struct pid *tid;
	kuid_t uid;
	kgid_t gid;
	struct popup_waiter *waiter;
	s32 status;
	u32 result_len;
	struct popup_sock *psock;
	struct sk_buff *skb;
	struct sockaddr_storage peer;
	int peer_len;
	u8 hdr[32];
	u32 hdr_len;
	u32 kstatus;
	struct socket *conn;
	int conn_fd;
	bool taken;
	bool embedded;
};

/*
 * The native wire protocol (include/popup/wire.h, a userspace header), for
 * the replies the kernel sends itself on attached sockets.
 */
#define POPUP_WIRE_MAGIC	0x50555031U
#define POPUP_WIRE_VERSION	1
#define POPUP_WIRE_HDR_LEN	32
#define POPUP_WIRE_F_REPLY	0x01
#define POPUP_WIRE_TOOBIG	4
#define POPUP_WIRE_BUSY		5
#define POPUP_WIRE_ERROR	7

/* Kernel reply headers a parked connection may have waiting. */
#define POPUP_CONN_KPEND	POPUP_CONN_INFLIGHT

/**
 * struct popup_sock - a socket attached to a service (POPUP_IOC_ATTACH)
 * @refs:        the attachment (until detach), each datagram context, a
 *               queued @work; freed with RCU (found locklessly by sk)
 * @rcu:         for kfree_rcu
 * @hash_node:   in popup_sock_hash (popup_sock_lock; RCU readers)
 * @proc_node:   on owner->socks (owner->lock); empty once detached
 * @sock:        the socket; its file is referenced until release
 *               (invariant)
 * @sk:          @sock->sk (invariant)
 * @saved_data_ready: the callback replaced at attach, put back at detach
 *               (invariant)
 * @svc:         the service, referenced (invariant)
 * @area:        the receive area, a binding without a client; its
 *               @active count is the attachment's until detach (invariant)
 * @method:      pseudo-method for the contexts: id 0, max_arg and max_res
 *               the slot size (invariant)
 * @id:          @area->id: the attach id (invariant)
 * @cpu:         the CPU served, or -1 for the arrival CPU (invariant)
 * @family:      AF_INET or AF_INET6 (invariant)
 * @port:        local port, host order, for /proc (invariant)
 * @work:        sends @kreplies and drains deferred datagrams
 * @detached:    hooks removed: the worker drains no more (svc->lock)
 * @drain:       the callback left a datagram on the socket (svc->lock)
 * @kreplies:    contexts in KREPLY waiting for @work (svc->lock)
 * @nkreplies:   entries in @kreplies (svc->lock)
 * @arrivals:    datagrams taken (svc->lock)
 * @kreplied:    replies sent by the kernel (svc->lock)
 * @kind:        enum popup_sock_kind (invariant)
 * @saved_state_change: CONN: the sk_state_change replaced at park
 *               (invariant)
 * @parent:      CONN: the listener, referenced (invariant)
 * @conns:       LISTEN: parked connections, by their @proc_node
 *               (svc->lock); a detach takes them all, a closing
 *               connection takes itself off
 * @nconns:      LISTEN: entries in @conns (svc->lock)
 * @closing:     LISTEN: being detached, parks refused; CONN: off its
 *               listener's list, @close_work detaches it (svc->lock)
 * @accept:      LISTEN: the callback saw a connection (svc->lock)
 * @ninflight:   CONN: stream contexts that exist, at most
 *               POPUP_CONN_INFLIGHT (svc->lock)
 * @reading:     CONN: one of them has not read its frame yet: the only
 *               reader of the stream (svc->lock)
 * @more:        CONN: an event or bytes left after a frame, not yet
 *               given a context (svc->lock)
 * @eof:         CONN: the peer ended; the last context closes (svc->lock)
 * @close_work:  CONN: detaches a connection that ended
 * @send_lock:   CONN: held around writing one whole reply, so that the
 *               replies of several threads never interleave
 * @kpend:       CONN: kernel reply headers waiting for @send_lock
 *               (svc->lock)
 * @nkpend:      CONN: entries in @kpend (svc->lock)
 * @dctx:        UDP: a context per slot of @area, so that an arrival
 *               allocates nothing (invariant pointer)
 * @dslots:      UDP: bit per @dctx in use, from the arrival that takes it
 *               to the context's release (atomic bit operations)
 *
 * A CONN's @proc_node links it on its listener's @conns instead of a
 * file's list, and it shares the listener's @area (holding one @active
 * count of it), @svc and @cpu.
 */
enum popup_sock_kind {
	POPUP_SOCK_UDP,		/* datagrams: KIND_DGRAM */
	POPUP_SOCK_LISTEN,	/* TCP listener: accepts, KIND_CONN */
	POPUP_SOCK_CONN,	/* parked TCP connection: KIND_STREAM */
};

struct popup_sock {
	struct kref refs;
	struct rcu_head rcu;
	struct hlist_node hash_node;
	struct list_head proc_node;
	struct socket *sock;
	struct sock *sk;
	void (*saved_data_ready)(struct sock *sk);
	struct popup_service *svc;
	struct popup_binding *area;
	struct popup_method_k method;
	u32 id;
	int cpu;
	int family;
	u16 port;
	struct work_struct work;

	bool detached;
	bool drain;
	struct list_head kreplies;
	u32 nkreplies;
	u64 arrivals;
	u64 kreplied;

	enum popup_sock_kind kind;
	void (*saved_state_change)(struct sock *sk);
	struct popup_sock *parent;
	struct list_head conns;
	u32 nconns;
	bool closing;
	bool accept;
	u32 ninflight;
	bool reading;
	bool more;
	bool eof;
	struct work_struct close_work;
	struct mutex send_lock;	/* one whole reply at a time */
	u8 kpend[POPUP_CONN_KPEND][POPUP_WIRE_HDR_LEN];
	u32 nkpend;
	struct popup_ctx *dctx;
	DECLARE_BITMAP(dslots, POPUP_MAX_SLOTS);
};

/* main.c */
extern struct mutex popup_lock;

/* stats.c */
int popup_proc_init(void);
void popup_proc_exit(void);

/* service.c */
int popup_name_check(const char *name);
bool popup_services_pending(struct popup_proc *proc);
int popup_ioctl_export(struct popup_proc *proc, struct popup_export *exp);
int popup_ioctl_withdraw(struct popup_proc *proc, const struct popup_target *t);
int popup_ioctl_set_pool(struct popup_proc *proc,
			 const struct popup_set_pool *sp);
struct popup_service *popup_service_get_owned(struct popup_proc *proc, u32 id);
struct popup_service *popup_service_find(const char *name, u32 version);
void popup_service_put(struct popup_service *svc);
void popup_service_withdraw(struct popup_service *svc);
const struct popup_method_k *popup_method_find(struct popup_service *svc,
					       u32 id);
int popup_services_show(struct seq_file *m, void *v);
void popup_services_flush(struct popup_proc *proc, void *files);

/* binding.c */
struct popup_binding *popup_binding_alloc(struct popup_service *svc,
					  u32 nslots, u32 slot_size);
int popup_binding_publish(struct popup_binding *b);
int popup_ioctl_import(struct popup_proc *proc, struct popup_import *imp);
int popup_ioctl_unimport(struct popup_proc *proc, const struct popup_target *t);
struct popup_binding *popup_binding_get(u32 id);
void popup_binding_put(struct popup_binding *b);
void popup_binding_drop(struct popup_binding *b);
void popup_binding_active_put_locked(struct popup_binding *b,
				     struct list_head *puts);
void popup_binding_put_list(struct list_head *puts);
int popup_mmap(struct file *file, struct vm_area_struct *vma);
void popup_bindings_release(struct popup_proc *proc);

/* call.c */
int popup_ctx_cache_init(void);
void popup_ctx_cache_exit(void);
int popup_ioctl_call(struct popup_proc *proc, struct popup_call *call);
int popup_ioctl_wait(struct popup_proc *proc, struct popup_wait *w,
		     bool reply);
int popup_ioctl_reply(struct popup_proc *proc, const struct popup_reply *r);
int popup_ioctl_thread_exit(struct popup_proc *proc,
			    const struct popup_target *t);
void popup_service_abort_locked(struct popup_service *svc,
				struct list_head *puts);
void popup_pool_update_locked(struct popup_service *svc);
void popup_notice_wake_locked(struct popup_service *svc);
struct popup_ctx *popup_ctx_alloc(gfp_t gfp);
void popup_ctx_put(struct popup_ctx *ctx);
struct popup_waiter *popup_pick_waiter_locked(struct popup_service *svc,
					      int cpu);
void popup_call_start_locked(struct popup_service *svc, struct popup_ctx *ctx,
			     struct popup_waiter *w, struct task_struct **wake);
void popup_wake_task(struct task_struct *task);
void popup_ctx_finish_locked(struct popup_service *svc, struct popup_ctx *ctx,
			     int state, struct list_head *puts);
bool popup_replying_on_locked(struct popup_service *svc, int cpu);
bool popup_runner_busy_locked(struct popup_service *svc, int cpu);
void popup_watch_arm_locked(struct popup_service *svc);
void popup_watch_init(struct popup_service *svc);
void popup_watch_stop(struct popup_service *svc);

/* arrival.c */
int popup_arrival_init(void);
void popup_arrival_exit(void);
int popup_ioctl_attach(struct popup_proc *proc, struct popup_attach *at);
int popup_ioctl_detach(struct popup_proc *proc, const struct popup_target *t);
void popup_socks_detach(struct popup_proc *proc, struct popup_service *svc);
void popup_dgram_abort_locked(struct popup_service *svc,
			      struct popup_ctx *ctx, u32 kstatus,
			      struct list_head *puts);
int popup_dgram_send(struct popup_ctx *ctx, u32 len);
int popup_slot_copy_skb(struct popup_ctx *ctx, u32 off,
			const struct sk_buff *skb, u32 skb_off, u32 len);
void popup_dgram_fill_context(struct popup_ctx *ctx, struct popup_context *c);
void popup_sock_put(struct popup_sock *ps);
int popup_arrival_show(struct seq_file *m, void *v);
void popup_sock_kick(struct popup_sock *ps);
struct popup_sock *popup_sock_new(struct socket *sock, enum popup_sock_kind kind);
void popup_sock_work(struct work_struct *work);
int popup_sock_hook(struct popup_sock *ps);
struct popup_sock *popup_sock_lookup_rcu(struct sock *sk);
u32 popup_arrive_locked(struct popup_sock *ps, struct popup_ctx *ctx,
			struct task_struct **wake);
void popup_kreply_queue_locked(struct popup_sock *ps, struct popup_ctx *ctx,
			       u32 kstatus);
bool popup_kreply_build(const struct popup_ctx *ctx, u8 *rep);
void popup_kreply_send(struct popup_sock *ps, struct popup_ctx *ctx);
void popup_socks_detach_list(struct list_head *list);
int popup_arrival_fill(struct popup_ctx *ctx);
void popup_arrival_replied(struct popup_ctx *ctx);

/* arrival_tcp.c */
extern struct workqueue_struct *popup_wq;
int popup_tcp_attach_check(struct socket *sock);
void popup_tcp_hook_locked(struct popup_sock *ps);
void popup_tcp_unhook_locked(struct popup_sock *ps);
bool popup_tcp_hooked_locked(struct popup_sock *ps);
void popup_tcp_detached(struct popup_sock *ps);
void popup_tcp_work(struct popup_sock *ps);
void popup_tcp_kreply(struct popup_sock *ps, struct popup_ctx *ctx);
int popup_conn_fill(struct popup_ctx *ctx);
int popup_stream_fill(struct popup_ctx *ctx);
int popup_stream_send(struct popup_ctx *ctx, u32 len);
void popup_stream_done_locked(struct popup_ctx *ctx);
void popup_conns_take_locked(struct popup_sock *ps, struct list_head *list);
int popup_ioctl_park(struct popup_proc *proc, struct popup_park *pk);
int popup_conn_detach(struct popup_proc *proc, u32 conn_id);
int popup_socks_show(struct seq_file *m, void *v);

#endif /* _POPUP_INTERNAL_H */
