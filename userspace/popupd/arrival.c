// SPDX-License-Identifier: GPL-2.0
/*
 * The kernel arrival path for UDP and native TCP (popupd
 * --arrival=kernel|auto).
 *
 * Instead of a worker's epoll loop reading its UDP socket, popup.ko hooks
 * the socket (POPUP_IOC_ATTACH) and turns each datagram into a pop-up
 * handler context on the CPU that received it. popupd exports one
 * dispatcher service for that; its handler threads loop in REPLY_WAIT:
 * the kernel returns a context whose request already sits in a slot of the
 * socket's receive area (mapped here), the thread runs the service's
 * handler and writes the reply into the same slot, and the next
 * REPLY_WAIT sends it to the peer and waits for the next datagram. One
 * system call per request; no epoll, no recvfrom, no sendto.
 *
 * Native TCP (when the module has POPUP_FEAT_TCP): each worker's listener
 * is attached too. The module accepts connections itself and hands each to
 * a handler thread as a descriptor (KIND_CONN); the thread parks it back
 * with the module (POPUP_IOC_PARK) and closes its descriptor. From then on
 * every request frame on the connection arrives like a datagram
 * (KIND_STREAM: the whole frame in a slot of the listener's receive area)
 * and REPLY_WAIT writes the answer to the connection. The module closes a
 * connection on EOF, reset or a malformed frame; HTTP stays on epoll.
 * Differences from the userspace path: connections count against the
 * module's POPUP_MAX_CONNS per listener, not max_conns, and the idle and
 * slow-request timeouts do not apply (a parked connection costs no thread).
 *
 * The kernel owns the pool rules (idle thread on the arrival CPU first,
 * or the thread running there already, spawn requests when none is idle
 * or able, bounded queue with BUSY replies, retirement); this file starts
 * a home thread per worker CPU, pinned and never retired, and a pool
 * thread per spawn request.
 *
 * Threads and data: the receive-area cache is shared by the handler
 * threads under area_lock; everything else a thread touches is its own or
 * read-only after start.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"
#include "popupd.h"
#include "uapi/linux/popup.h"

#define ARR_NAME	"popupd.udp"
#define ARR_MAX_AREAS	(2 * POPUP_STATS_MAX_WORKERS)
#define ARR_MAX_PAYLOAD	(POPUP_MAX_DGRAM - POPUP_WIRE_HDR_LEN)

struct area {
	uint32_t id;		/* binding id of the receive area */
	void *addr;
	size_t size;
};

static struct {
	int fd;			/* /dev/popup, owns the service */
	uint32_t sid;
	bool active;
	int stopping;		/* atomic */
	int threads;		/* atomic: handler threads alive */
	uint32_t max_payload;	/* largest request payload, UDP or TCP */
	bool tcp;		/* the module has POPUP_FEAT_TCP */
	pthread_mutex_t area_lock;
	struct area areas[ARR_MAX_AREAS];
	unsigned int nareas;
} arr = { .fd = -1, .area_lock = PTHREAD_MUTEX_INITIALIZER };

bool arrival_kernel_active(void)
{
	return arr.active;
}

/*
 * Each handler thread remembers the areas it used, so that a request
 * takes no lock: a thread that blocks on area_lock is no longer its CPU's
 * runner, and the module hands the next arrivals to another thread. The
 * module flags a context POPUP_CTX_MAP when this file has no mapping of
 * its area, which is also when a remembered mapping of the same id went
 * stale: only then (and on a miss) is the shared table consulted.
 */
#define ARR_CACHE	8

struct area_cache {
	uint32_t id[ARR_CACHE];
	unsigned char *addr[ARR_CACHE];
	unsigned int next;
};

static unsigned char *area_get_shared(const struct popup_context *ctx);

static unsigned char *area_get(struct area_cache *c, const struct popup_context *ctx)
{
	unsigned char *addr;
	unsigned int i;

	if (!(ctx->flags & POPUP_CTX_MAP))
		for (i = 0; i < ARR_CACHE; i++)
			if (c->addr[i] && c->id[i] == ctx->binding_id)
				return c->addr[i];
	addr = area_get_shared(ctx);
	if (addr) {
		for (i = 0; i < ARR_CACHE && c->id[i] != ctx->binding_id; i++)
			;
		if (i == ARR_CACHE)
			i = c->next++ % ARR_CACHE;
		c->id[i] = ctx->binding_id;
		c->addr[i] = addr;
	}
	return addr;
}

/* The mapping of the receive area @ctx points into, mapped on first use. */
static unsigned char *area_get_shared(const struct popup_context *ctx)
{
	void *addr = NULL;

	pthread_mutex_lock(&arr.area_lock);
	for (unsigned int i = 0; i < arr.nareas && !addr; i++)
		if (arr.areas[i].id == ctx->binding_id)
			addr = arr.areas[i].addr;
	if (!addr && arr.nareas < ARR_MAX_AREAS) {
		addr = mmap(NULL, ctx->map_size, PROT_READ | PROT_WRITE, MAP_SHARED,
			    arr.fd, ctx->map_offset);
		if (addr == MAP_FAILED) {
			pr_err("arrival: cannot map receive area %u: %s", ctx->binding_id,
			       strerror(errno));
			addr = NULL;
		} else {
			arr.areas[arr.nareas++] = (struct area){ ctx->binding_id, addr,
								  ctx->map_size };
		}
	}
	pthread_mutex_unlock(&arr.area_lock);
	return addr;
}

static void area_drop(uint32_t id)
{
	pthread_mutex_lock(&arr.area_lock);
	for (unsigned int i = 0; i < arr.nareas; i++) {
		if (arr.areas[i].id != id)
			continue;
		munmap(arr.areas[i].addr, arr.areas[i].size);
		arr.areas[i] = arr.areas[--arr.nareas];
		break;
	}
	pthread_mutex_unlock(&arr.area_lock);
}

static struct worker *worker_on_cpu(uint32_t cpu)
{
	for (unsigned int i = 0; i < pd.nr_workers; i++)
		if ((uint32_t)pd.workers[i].cpu == cpu)
			return &pd.workers[i];
	return NULL;
}

/* Validate the request, run its handler; returns popupd's own verdict
 * (POPUP_WIRE_S_*) or 0 when the handler ran (its status in *status). */
static uint32_t run_request(const struct popup_wire_hdr *h, const unsigned char *body,
			    uint32_t dgram_len, const struct popup_context *ctx,
			    unsigned char *res, uint32_t res_cap, uint32_t *res_len,
			    int *status, int origin)
{
	const struct popup_svc_method *m;
	struct svc *s;
	uint32_t v;

	if (h->len != dgram_len - POPUP_WIRE_HDR_LEN)
		return POPUP_WIRE_S_BADREQ;
	v = popup_wire_check(h, LIM(max_request));
	if (v)
		return v;
	s = svc_by_id(h->service);
	if (!s)
		return POPUP_WIRE_S_NOSVC;
	m = svc_method_by_id(s, h->method);
	if (!m)
		return POPUP_WIRE_S_NOMETHOD;
	if (h->len > m->max_arg)
		return POPUP_WIRE_S_TOOBIG;

	struct popup_svc_call call = {
		.method = m->id,
		.origin = origin,
		.req = body,
		.req_len = h->len,
		.res = res,
		.res_cap = res_cap < m->max_res ? res_cap : m->max_res,
		.cpu = (int)ctx->cpu,
		.flags = (h->flags & POPUP_WIRE_F_ONEWAY) ? POPUP_SVC_CALL_ONEWAY : 0,
		.pid = -1,
	};

	if (ctx->peer_family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&call.peer;

		a->sin_family = AF_INET;
		a->sin_port = ctx->peer_port;
		memcpy(&a->sin_addr, ctx->peer_addr, 4);
		call.peer_len = sizeof(*a);
	} else if (ctx->peer_family == AF_INET6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&call.peer;

		a->sin6_family = AF_INET6;
		a->sin6_port = ctx->peer_port;
		memcpy(&a->sin6_addr, ctx->peer_addr, 16);
		call.peer_len = sizeof(*a);
	}
	{
		int asked = 0;
		bool has = popup_wire_prio(h, &asked);

		call.priority = svc_call_prio(s, m, has, asked);
	}
	/* Per-object: the object's thread runs it, as for every origin. */
	if (s->dispatch == POPUP_SVC_DISPATCH_PER_OBJECT && s->nr_pools)
		*status = pool_call_sync(s, m, &call, now_ns());
	else
		*status = svc_invoke(s, m, &call);
	/* On error the result bytes are the handler's message (service.h). */
	*res_len = call.res_len;
	return 0;
}

/*
 * Answer one datagram or stream-request context: the request is
 * @ctx->arg_len bytes at the slot; the reply (header + payload) is written
 * back into the same slot. Returns the reply length, 0 for none (one-way,
 * or nothing to address).
 */
static uint32_t handle_request(struct area_cache *cache, const struct popup_context *ctx,
			       unsigned char *tmp, uint32_t tmp_cap, bool tcp)
{
	unsigned char *base = area_get(cache, ctx), *slot;
	struct popup_wire_hdr h, rep;
	uint32_t verdict, res_len = 0, room;
	struct worker *w = worker_on_cpu(ctx->cpu);
	int status = 0;

	if (!base || ctx->arg_len < POPUP_WIRE_HDR_LEN) {
		ctr_add(&pd.ctr.udp_dropped, 1);
		return 0;
	}
	slot = base + ctx->slot_offset;
	popup_wire_decode(slot, &h);
	if (h.magic != POPUP_WIRE_MAGIC) {
		ctr_add(&pd.ctr.udp_dropped, 1);
		return 0;	/* not ours: answering would make us a reflector */
	}
	room = ctx->max_res > POPUP_WIRE_HDR_LEN ? ctx->max_res - POPUP_WIRE_HDR_LEN : 0;
	if (room > tmp_cap)
		room = tmp_cap;
	verdict = run_request(&h, slot + POPUP_WIRE_HDR_LEN, ctx->arg_len, ctx, tmp, room,
			      &res_len, &status,
			      tcp ? POPUP_SVC_ORIGIN_TCP : POPUP_SVC_ORIGIN_UDP);
	if (w) {
		ctr_add(&w->st->requests, 1);
		if (!tcp)
			ctr_add(&w->st->udp_requests, 1);
		if (verdict || status)
			ctr_add(&w->st->errors, 1);
	}
	rep = h;
	rep.flags = POPUP_WIRE_F_REPLY;
	rep.status = verdict ? verdict : (uint32_t)status_to_wire(status);
	rep.reserved = 0;
	if ((h.flags & POPUP_WIRE_F_ONEWAY) && rep.status == POPUP_WIRE_S_OK)
		return 0;
	rep.len = verdict ? 0 : res_len;	/* an error's text, as on epoll */
	popup_wire_encode(slot, &rep);
	if (rep.len)
		memcpy(slot + POPUP_WIRE_HDR_LEN, tmp, rep.len);
	return POPUP_WIRE_HDR_LEN + rep.len;
}

/* A connection the module accepted: give it back to the module to park. */
static void park_conn(const struct popup_context *ctx)
{
	struct popup_park pk = {
		.size = sizeof(pk),
		.fd = ctx->conn_fd,
		.attach_id = ctx->binding_id,
	};

	if (ioctl(arr.fd, POPUP_IOC_PARK, &pk)) {
		pr_warn("arrival: cannot park a TCP connection: %s", strerror(errno));
		ctr_add(&pd.ctr.conns_refused, 1);
	}
	close(ctx->conn_fd);	/* the module holds its own reference */
}

static void *handler_main(void *arg);

/*
 * Start @n handler threads. @cpu >= 0: one home thread pinned there, so
 * every worker CPU has a handler that stays local, as the epoll path has
 * its worker; it waits without POPUP_WAIT_POOL, so the pool never retires
 * it. The others are pool threads the module asked for, to take over
 * while the home threads are blocked or busy, and to retire when idle.
 */
static void spawn(unsigned int n, int cpu)
{
	pthread_attr_t attr;
	pthread_t th;

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (cpu >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		pthread_attr_setaffinity_np(&attr, sizeof(set), &set);
	}
	while (n-- > 0 && !__atomic_load_n(&arr.stopping, __ATOMIC_RELAXED)) {
		__atomic_fetch_add(&arr.threads, 1, __ATOMIC_RELAXED);
		if (pthread_create(&th, &attr, handler_main,
				   cpu >= 0 ? (void *)1 : NULL)) {
			__atomic_fetch_sub(&arr.threads, 1, __ATOMIC_RELAXED);
			pr_warn("arrival: cannot start a handler thread: %s", strerror(errno));
			break;
		}
	}
	pthread_attr_destroy(&attr);
}

static void *handler_main(void *arg)
{
	uint32_t tmp_cap = arr.max_payload, pool = arg ? 0 : POPUP_WAIT_POOL;
	unsigned char *tmp = malloc(tmp_cap);
	unsigned long cmd = POPUP_IOC_WAIT;
	struct area_cache cache = { .next = 0 };
	struct popup_wait wt;

	pthread_setname_np(pthread_self(), "popupd-kernel");
	memset(&wt, 0, sizeof(wt));
	wt.size = sizeof(wt);
	wt.service_id = arr.sid;
	wt.flags = pool ? POPUP_WAIT_NEW : 0;
	while (tmp) {
		if (ioctl(arr.fd, cmd, &wt)) {
			if (errno != EINTR)
				break;	/* ENOENT: withdrawn, we are stopping */
			cmd = POPUP_IOC_WAIT;
			memset(&wt.reply, 0, sizeof(wt.reply));
			continue;
		}
		wt.flags = pool;
		if (wt.spawn)
			spawn(wt.spawn, -1);
		cmd = POPUP_IOC_WAIT;
		memset(&wt.reply, 0, sizeof(wt.reply));
		if (wt.kind == POPUP_WAIT_KIND_RETIRE)
			break;
		if (wt.kind == POPUP_WAIT_KIND_UNMAP) {
			area_drop(wt.ctx.binding_id);
		} else if (wt.kind == POPUP_WAIT_KIND_STREAM &&
			   (wt.ctx.flags & POPUP_CTX_BADFRAME)) {
			/* Not our protocol: the module closed it. */
			ctr_add(&pd.ctr.proto_errors, 1);
			wt.reply.ctx_id = wt.ctx.ctx_id;
			cmd = POPUP_IOC_REPLY_WAIT;
		} else if (wt.kind == POPUP_WAIT_KIND_DGRAM ||
			   wt.kind == POPUP_WAIT_KIND_STREAM) {
			wt.reply.ctx_id = wt.ctx.ctx_id;
			wt.reply.result_len = handle_request(&cache, &wt.ctx, tmp, tmp_cap,
							     wt.kind == POPUP_WAIT_KIND_STREAM);
			cmd = POPUP_IOC_REPLY_WAIT;
		} else if (wt.kind == POPUP_WAIT_KIND_CONN) {
			park_conn(&wt.ctx);
		}
	}
	if (!tmp && pool) {
		struct popup_target t = { .id = arr.sid };

		ioctl(arr.fd, POPUP_IOC_THREAD_EXIT, &t);
	}
	free(tmp);
	__atomic_fetch_sub(&arr.threads, 1, __ATOMIC_RELAXED);
	return NULL;
}

static int export_dispatcher(void)
{
	struct popup_method m = {
		.id = 1, .max_arg = POPUP_MAX_DGRAM, .max_res = POPUP_MAX_DGRAM,
	};
	struct popup_export ex = {
		.size = sizeof(ex),
		.version = 1,
		.nmethods = 1,
		.methods = (uintptr_t)&m,
		.pool = {
			.min_idle = pd.nr_workers,
			.max_idle = 2 * pd.nr_workers,
			.increment = 1,
			.max_threads = 8 * pd.nr_workers,
			.queue_limit = 1024,
			.idle_timeout_ms = 10000,
		},
	};

	snprintf(ex.name, sizeof(ex.name), "%s.%d", ARR_NAME, (int)getpid());
	if (ioctl(arr.fd, POPUP_IOC_EXPORT, &ex))
		return -errno;
	arr.sid = ex.service_id;
	return 0;
}

static int attach_workers(void)
{
	uint32_t payload = LIM(max_request);

	if (payload > ARR_MAX_PAYLOAD)
		payload = ARR_MAX_PAYLOAD;
	for (unsigned int i = 0; i < pd.nr_workers; i++) {
		struct worker *w = &pd.workers[i];
		struct popup_attach at = {
			.size = sizeof(at),
			.fd = w->udp_fd,
			.service_id = arr.sid,
			.cpu = (uint32_t)w->cpu,
			.nslots = 64,
			.slot_size = POPUP_WIRE_HDR_LEN + payload,
		};

		if (ioctl(arr.fd, POPUP_IOC_ATTACH, &at)) {
			int err = -errno;

			pr_err("arrival: cannot attach the UDP socket of CPU %d: %s",
			       w->cpu, strerror(-err));
			return err;
		}
		w->udp_kernel = true;
	}
	return 0;
}

/*
 * Attach each worker's native TCP listener. A failure leaves that
 * listener on the userspace path (its epoll loop still watches it).
 */
static void attach_listeners(void)
{
	unsigned int n = 0;

	for (unsigned int i = 0; i < pd.nr_workers; i++) {
		struct worker *w = &pd.workers[i];
		struct popup_attach at = {
			.size = sizeof(at),
			.fd = w->tcp_fd,
			.service_id = arr.sid,
			.cpu = (uint32_t)w->cpu,
			.nslots = 64,
			.slot_size = POPUP_WIRE_HDR_LEN + LIM(max_request),
		};

		if (w->tcp_fd < 0)
			continue;
		if (ioctl(arr.fd, POPUP_IOC_ATTACH, &at)) {
			pr_warn("arrival: TCP of CPU %d stays in userspace: attach: %s",
				w->cpu, strerror(errno));
			continue;
		}
		n++;
	}
	if (n)
		pr_info("arrival: native TCP connections of %u workers are accepted by popup.ko",
			n);
}

/*
 * Hand every worker's UDP socket to popup.ko. Must run before
 * worker_start(), which then leaves those sockets out of its epoll set.
 * Returns -EOPNOTSUPP when the module (or its arrival feature) is absent.
 */
int arrival_kernel_start(void)
{
	struct popup_version ver;
	int err;

	arr.fd = open("/dev/" POPUP_DEVICE_NAME, O_RDWR | O_CLOEXEC);
	if (arr.fd < 0)
		return -EOPNOTSUPP;
	if (ioctl(arr.fd, POPUP_IOC_VERSION, &ver) || !(ver.features & POPUP_FEAT_ARRIVAL)) {
		err = -EOPNOTSUPP;
		goto err_close;
	}
	err = export_dispatcher();
	if (err) {
		pr_err("arrival: cannot export the dispatcher service: %s", strerror(-err));
		goto err_close;
	}
	err = attach_workers();
	if (err)
		goto err_close;	/* closing the file detaches and withdraws */
	arr.tcp = ver.features & POPUP_FEAT_TCP;
	arr.max_payload = ARR_MAX_PAYLOAD;
	if (arr.tcp) {
		if (LIM(max_request) > arr.max_payload)
			arr.max_payload = LIM(max_request);
		attach_listeners();
	}
	arr.active = true;
	for (unsigned int i = 0; i < pd.nr_workers; i++)
		spawn(1, pd.workers[i].cpu);
	pr_info("arrival: UDP requests arrive through popup.ko (service %u)", arr.sid);
	return 0;

err_close:
	for (unsigned int i = 0; i < pd.nr_workers; i++)
		pd.workers[i].udp_kernel = false;
	close(arr.fd);
	arr.fd = -1;
	return err;
}

/* Detach the sockets, let handlers finish, withdraw, wait for threads. */
void arrival_kernel_stop(void)
{
	struct popup_target t = { .id = arr.sid };

	if (!arr.active)
		return;
	__atomic_store_n(&arr.stopping, 1, __ATOMIC_RELAXED);
	/* Withdrawing detaches the sockets (datagrams still queued get a
	 * BUSY reply) and wakes every waiting thread with ENOENT. */
	if (ioctl(arr.fd, POPUP_IOC_WITHDRAW, &t))
		pr_warn("arrival: withdraw: %s", strerror(errno));
	for (int i = 0; i < 5000 && __atomic_load_n(&arr.threads, __ATOMIC_RELAXED); i++)
		usleep(1000);
	if (__atomic_load_n(&arr.threads, __ATOMIC_RELAXED))
		pr_warn("arrival: %d handler threads still busy at exit",
			__atomic_load_n(&arr.threads, __ATOMIC_RELAXED));
	pthread_mutex_lock(&arr.area_lock);
	while (arr.nareas) {
		arr.nareas--;
		munmap(arr.areas[arr.nareas].addr, arr.areas[arr.nareas].size);
	}
	pthread_mutex_unlock(&arr.area_lock);
	close(arr.fd);
	arr.fd = -1;
	arr.active = false;
}
