// SPDX-License-Identifier: LGPL-2.1 OR BSD-2-Clause
/*
 * Kernel backend: libpopup over popup.ko (/dev/popup, <linux/popup.h>).
 *
 * The module does the dispatching, the queue and the pool decisions; this
 * file only follows its call sequence (see the header's "Call sequence"):
 *   server   one /dev/popup descriptor per exported service. The
 *            popup_server__run() thread is the control thread: it polls
 *            the descriptor and fetches spawn and unmap notices with
 *            WAIT(CONTROL|NONBLOCK); each spawn creates pool threads,
 *            which loop in REPLY_WAIT and exit on RETIRE. Binding mappings
 *            are cached by binding id and dropped on UNMAP notices.
 *   client   one descriptor per client; a binding is an IMPORT plus one
 *            mmap of its argument stacks, and a call is one CALL ioctl.
 * Stopping withdraws the service: that wakes every pool thread (ENOENT),
 * and the module resets its callers (ECONNRESET).
 *
 * One-way slots. The module keeps a one-way call's slot busy until its
 * REPLY, but a client cannot see that moment, and writing the next
 * arguments into a slot whose call is still queued would corrupt it. So
 * the last TOKEN_SIZE bytes of every slot are the library's: the client
 * zeroes the token before a one-way CALL and marks the slot tainted; the
 * server copies the arguments out, stores TOKEN_CONSUMED (release) and
 * REPLYs at once, then runs the handler. The client writes a tainted slot
 * again only after it reads the token (acquire). The server asks the module
 * for TOKEN_SIZE more result bytes than its methods need, so slots have
 * room for the token; users see slot_size without it.
 */
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

/* Both headers on purpose: their shared limits must agree token for token. */
#include <uapi/linux/popup.h>

#include "libpopup_internal.h"

#define DEV_PATH	"/dev/" POPUP_DEVICE_NAME
#define TOKEN_SIZE	8
#define TOKEN_CONSUMED	1

static uint64_t *slot_token(uint8_t *slot_base, uint32_t stride)
{
	return (uint64_t *)(slot_base + stride - TOKEN_SIZE);
}

struct kmap {
	uint32_t binding_id;
	uint8_t *base;
	size_t size;
};

struct kserver {
	int fd;
	int stop_efd;
	uint32_t id;
	uint32_t slot_size;		/* the module's, token included */
	bool withdrawn;
	pthread_mutex_t lock;		/* the map cache and thread counts */
	pthread_cond_t exited;
	struct kmap *maps;		/* mapped bindings (protected by @lock) */
	uint32_t nr_maps, cap_maps;
	struct kmap *stale;		/* replaced mappings, unmapped at the end */
	uint32_t nr_stale, cap_stale;
	uint32_t nr_threads;		/* pool threads alive (@lock) */
};

static struct kserver *KS(const struct popup_server *srv)
{
	return srv->priv;
}

static int dev_open(void)
{
	int fd = open(DEV_PATH, O_RDWR | O_CLOEXEC);

	if (fd < 0)
		return errno == ENOENT || errno == ENXIO ? -ENODEV : -errno;
	return fd;
}

/* ---- server: binding mappings ------------------------------------------ */

static int kmap_push(struct kmap **arr, uint32_t *nr, uint32_t *cap, struct kmap m)
{
	if (*nr == *cap) {
		uint32_t ncap = *cap ? *cap * 2 : 8;
		struct kmap *n = realloc(*arr, ncap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		*arr = n;
		*cap = ncap;
	}
	(*arr)[(*nr)++] = m;
	return 0;
}

static struct kmap *kmap_find_locked(struct kserver *ks, uint32_t id)
{
	for (uint32_t i = 0; i < ks->nr_maps; i++)
		if (ks->maps[i].binding_id == id)
			return &ks->maps[i];
	return NULL;
}

/*
 * The server's mapping of the binding a call came through. A CTX_MAP call
 * means our cached mapping (if any) is stale; another thread may still be
 * reading it, so it is retired to the stale list, not unmapped.
 */
static uint8_t *kmap_get(struct kserver *ks, const struct popup_context *c)
{
	struct kmap *m, nm;
	uint8_t *base = NULL;

	pthread_mutex_lock(&ks->lock);
	m = kmap_find_locked(ks, c->binding_id);
	if (m && !(c->flags & POPUP_CTX_MAP) && m->size == c->map_size) {
		base = m->base;
		goto out;
	}
	base = mmap(NULL, c->map_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		    ks->fd, c->map_offset);
	if (base == MAP_FAILED) {
		pr_warn("mmap of binding %u: %s\n", c->binding_id, strerror(errno));
		base = NULL;
		goto out;
	}
	nm = (struct kmap){ .binding_id = c->binding_id, .base = base, .size = c->map_size };
	if (m) {
		if (kmap_push(&ks->stale, &ks->nr_stale, &ks->cap_stale, *m))
			munmap(m->base, m->size);
		*m = nm;
	} else if (kmap_push(&ks->maps, &ks->nr_maps, &ks->cap_maps, nm)) {
		munmap(base, c->map_size);
		base = NULL;
	}
out:
	pthread_mutex_unlock(&ks->lock);
	return base;
}

/* UNMAP notice: the binding is gone, so no handler still uses it. */
static void kmap_drop(struct kserver *ks, uint32_t id)
{
	struct kmap *m;

	pthread_mutex_lock(&ks->lock);
	m = kmap_find_locked(ks, id);
	if (m) {
		munmap(m->base, m->size);
		*m = ks->maps[--ks->nr_maps];
	}
	pthread_mutex_unlock(&ks->lock);
}

/* ---- server: pool threads ---------------------------------------------- */

static void k_spawn(struct popup_server *srv, uint32_t n);

/*
 * A one-way call's slot stays busy in the module until REPLY, and the
 * client cannot see when that happens. Copy the arguments out and REPLY
 * first, so the slot is free as soon as a handler thread has the call.
 */
static uint8_t *k_oneway_detach(struct popup_server *srv, const struct popup_context *c,
				uint8_t *slot, uint32_t res_cap)
{
	struct popup_reply r = { .ctx_id = c->ctx_id };
	/* A two-way method called one-way still gets a result area. */
	uint8_t *copy = malloc((size_t)c->arg_len + res_cap + 1);

	if (!copy)
		return NULL;
	memcpy(copy, slot, c->arg_len);
	__atomic_store_n(slot_token(slot, KS(srv)->slot_size), TOKEN_CONSUMED,
			 __ATOMIC_RELEASE);
	if (ioctl(KS(srv)->fd, POPUP_IOC_REPLY, &r) < 0 && errno != ECANCELED)
		pr_debug("early reply: %s\n", strerror(errno));
	return copy;
}

/*
 * Run one call. Returns true with @w->reply filled for the REPLY_WAIT that
 * follows, or false if the reply went out already (one-way).
 */
static bool k_handle(struct popup_server *srv, struct popup_wait *w)
{
	const struct popup_context *c = &w->ctx;
	bool oneway = c->flags & POPUP_CTX_ONEWAY;
	const struct method_info *m;
	struct popup_request req;
	uint8_t *base, *slot = NULL, *copy = NULL;
	int status;

	m = libpopup_method_find(srv->methods, srv->nr_methods, c->method);
	base = kmap_get(KS(srv), c);
	if (base)
		slot = base + c->slot_offset;
	if (slot && oneway) {
		copy = k_oneway_detach(srv, c, slot, m ? m->max_res : 0);
		slot = NULL;
	}
	req = (struct popup_request){
		.server = srv, .user_data = srv->user_data, .method = c->method,
		.flags = oneway ? POPUP_REQ_ONEWAY : 0,
		.arg = oneway ? copy : slot, .arg_len = c->arg_len,
		.res = oneway ? (copy ? copy + c->arg_len : NULL) : slot,
		.res_cap = m && (slot || copy) ? m->max_res : 0,
		.priority = c->priority, .caller_pid = c->pid,
		.caller_uid = c->uid, .caller_gid = c->gid, .cpu = c->cpu,
	};
	if (!m || !req.arg) {
		status = m ? -ENOMEM : -EOPNOTSUPP;
	} else {
		status = m->handler(&req);
		if (req.res_len > req.res_cap) {
			pr_warn("%s.%u: method %u returned %u bytes, max_res is %u\n",
				srv->name, srv->version, c->method, req.res_len,
				c->max_res);
			status = -EOVERFLOW;
			req.res_len = 0;
		}
	}
	pthread_mutex_lock(&srv->lock);
	srv->stats.calls++;
	pthread_mutex_unlock(&srv->lock);
	if (oneway && copy) {
		free(copy);
		return false;
	}
	w->reply = (struct popup_reply){
		.ctx_id = c->ctx_id, .status = status, .result_len = req.res_len,
	};
	return true;
}

static void *k_pool_thread(void *arg)
{
	struct popup_server *srv = arg;
	struct kserver *ks = KS(srv);
	struct popup_wait w = {
		.size = sizeof(w), .flags = POPUP_WAIT_NEW, .service_id = ks->id,
	};
	unsigned long cmd = POPUP_IOC_WAIT;
	bool retired = false;

	for (;;) {
		if (ioctl(ks->fd, cmd, &w) < 0) {
			/* After REPLY_WAIT's reply went out, only wait again. */
			if (errno == EINTR || errno == EAGAIN) {
				cmd = POPUP_IOC_WAIT;
				memset(&w.reply, 0, sizeof(w.reply));
				continue;
			}
			break;	/* ENOENT: withdrawn; EBADF: closed */
		}
		w.flags = POPUP_WAIT_POOL;
		cmd = POPUP_IOC_WAIT;
		if (w.reply_result == -ECANCELED) {
			pthread_mutex_lock(&srv->lock);
			srv->stats.cancelled++;
			pthread_mutex_unlock(&srv->lock);
		}
		memset(&w.reply, 0, sizeof(w.reply));
		if (w.spawn)
			k_spawn(srv, w.spawn);
		if (w.kind == POPUP_WAIT_KIND_RETIRE) {
			retired = true;
			break;
		}
		if (w.kind == POPUP_WAIT_KIND_UNMAP)
			kmap_drop(ks, w.ctx.binding_id);
		if (w.kind == POPUP_WAIT_KIND_CALL && k_handle(srv, &w))
			cmd = POPUP_IOC_REPLY_WAIT;
	}
	/* Counted before leaving @nr_threads: see k_stats() for the order. */
	pthread_mutex_lock(&srv->lock);
	srv->stats.retired += retired;
	pthread_mutex_unlock(&srv->lock);
	pthread_mutex_lock(&ks->lock);
	ks->nr_threads--;
	if (!ks->nr_threads)
		pthread_cond_broadcast(&ks->exited);
	pthread_mutex_unlock(&ks->lock);
	return NULL;
}

static void k_spawn(struct popup_server *srv, uint32_t n)
{
	struct kserver *ks = KS(srv);
	pthread_attr_t attr;
	pthread_t t;

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	for (uint32_t i = 0; i < n; i++) {
		int err;

		pthread_mutex_lock(&ks->lock);
		ks->nr_threads++;
		pthread_mutex_unlock(&ks->lock);
		err = pthread_create(&t, &attr, k_pool_thread, srv);
		pthread_mutex_lock(&ks->lock);
		if (err)
			ks->nr_threads--;
		pthread_mutex_unlock(&ks->lock);
		pthread_mutex_lock(&srv->lock);
		if (!err) {
			srv->stats.spawned++;
			srv->stats.max_threads_seen = max_t(uint32_t,
				srv->stats.max_threads_seen, ks->nr_threads);
		}
		pthread_mutex_unlock(&srv->lock);
		if (err)
			pr_warn("%s.%u: cannot create a pool thread: %s\n",
				srv->name, srv->version, strerror(err));
	}
	pthread_attr_destroy(&attr);
}

/* ---- server: popup_ops ------------------------------------------------- */

static void pool_to_kernel(const struct popup_pool_attr *a, struct popup_pool *p)
{
	*p = (struct popup_pool){
		.min_idle = a->min_idle, .max_idle = a->max_idle,
		.increment = a->increment, .max_threads = a->max_threads,
		.queue_limit = a->queue_limit, .idle_timeout_ms = a->idle_timeout_ms,
	};
}

static int k_export_ioctl(struct popup_server *srv, struct kserver *ks)
{
	struct popup_export exp = { .size = sizeof(exp), .version = srv->version };
	uint32_t largest = max_t(uint32_t, srv->max_arg, srv->max_res);
	struct popup_method *km;
	int err = 0;

	km = calloc(srv->nr_methods, sizeof(*km));
	if (!km)
		return -ENOMEM;
	for (uint32_t i = 0; i < srv->nr_methods; i++)
		km[i] = (struct popup_method){
			.id = srv->methods[i].id, .flags = srv->methods[i].flags,
			.max_arg = srv->methods[i].max_arg,
			.max_res = srv->methods[i].max_res,
		};
	/* Room for the one-way token: slots hold largest + TOKEN_SIZE. */
	km[0].max_res = largest + TOKEN_SIZE;
	strcpy(exp.name, srv->name);
	exp.nmethods = srv->nr_methods;
	exp.methods = (uintptr_t)km;
	pool_to_kernel(&srv->pool, &exp.pool);
	if (ioctl(ks->fd, POPUP_IOC_EXPORT, &exp) < 0) {
		err = -errno;
	} else {
		ks->id = exp.service_id;
		ks->slot_size = exp.slot_size;
	}
	free(km);
	return err;
}

static void kserver_free(struct kserver *ks)
{
	for (uint32_t i = 0; i < ks->nr_maps; i++)
		munmap(ks->maps[i].base, ks->maps[i].size);
	for (uint32_t i = 0; i < ks->nr_stale; i++)
		munmap(ks->stale[i].base, ks->stale[i].size);
	free(ks->maps);
	free(ks->stale);
	if (ks->fd >= 0)
		close(ks->fd);
	if (ks->stop_efd >= 0)
		close(ks->stop_efd);
	pthread_cond_destroy(&ks->exited);
	pthread_mutex_destroy(&ks->lock);
	free(ks);
}

static int k_export(struct popup_server *srv)
{
	struct kserver *ks = calloc(1, sizeof(*ks));
	int err;

	if (!ks)
		return -ENOMEM;
	pthread_mutex_init(&ks->lock, NULL);
	pthread_cond_init(&ks->exited, NULL);
	ks->stop_efd = eventfd(0, EFD_CLOEXEC);
	ks->fd = dev_open();
	err = ks->fd < 0 ? ks->fd : ks->stop_efd < 0 ? -errno : 0;
	if (!err)
		err = k_export_ioctl(srv, ks);
	if (err) {
		kserver_free(ks);
		return err;
	}
	srv->priv = ks;
	return 0;
}

static void k_withdraw_ioctl(struct kserver *ks)
{
	struct popup_target t = { .id = ks->id };

	if (!ks->withdrawn && ioctl(ks->fd, POPUP_IOC_WITHDRAW, &t) < 0)
		pr_debug("withdraw %u: %s\n", ks->id, strerror(errno));
	ks->withdrawn = true;
}

/* Fetch the pending spawn and unmap notices without blocking. */
static int k_control(struct popup_server *srv)
{
	struct kserver *ks = KS(srv);
	struct popup_wait w;

	for (;;) {
		w = (struct popup_wait){
			.size = sizeof(w), .service_id = ks->id,
			.flags = POPUP_WAIT_CONTROL | POPUP_WAIT_NONBLOCK,
		};
		if (ioctl(ks->fd, POPUP_IOC_WAIT, &w) < 0)
			return errno == EAGAIN || errno == EINTR ? 0 : -errno;
		if (w.spawn)
			k_spawn(srv, w.spawn);
		if (w.kind == POPUP_WAIT_KIND_UNMAP)
			kmap_drop(ks, w.ctx.binding_id);
	}
}

static int k_run(struct popup_server *srv)
{
	struct kserver *ks = KS(srv);
	struct pollfd pfd[2] = {
		{ .fd = ks->fd, .events = POLLIN },
		{ .fd = ks->stop_efd, .events = POLLIN },
	};
	int err = 0;

	if (ks->withdrawn)
		return -ENOENT;
	while (!err) {
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			err = -errno;
			break;
		}
		if (pfd[1].revents)
			break;
		if (pfd[0].revents & POLLIN)
			err = k_control(srv);
	}
	/* Withdrawing wakes every pool thread with ENOENT. */
	k_withdraw_ioctl(ks);
	pthread_mutex_lock(&ks->lock);
	while (ks->nr_threads)
		pthread_cond_wait(&ks->exited, &ks->lock);
	pthread_mutex_unlock(&ks->lock);
	return err == -ENOENT ? 0 : err;
}

static int k_stop(struct popup_server *srv)
{
	uint64_t one = 1;

	return write(KS(srv)->stop_efd, &one, sizeof(one)) < 0 ? -errno : 0;
}

static void k_withdraw(struct popup_server *srv)
{
	struct kserver *ks = KS(srv);

	if (!ks)
		return;
	k_withdraw_ioctl(ks);
	kserver_free(ks);
	srv->priv = NULL;
}

static int k_set_pool(struct popup_server *srv)
{
	struct popup_set_pool sp = { .service_id = KS(srv)->id };

	pool_to_kernel(&srv->pool, &sp.pool);
	return ioctl(KS(srv)->fd, POPUP_IOC_SET_POOL, &sp) < 0 ? -errno : 0;
}

/* The module's view of one service, from /proc/popup/services. */
static int k_proc_stats(uint32_t id, struct popup_server_stats *st)
{
	unsigned int sid, idle, busy, max, queued, ver, nm;
	unsigned long long calls, errors;
	char line[256], name[POPUP_NAME_MAX];
	int pid, err = -ENOENT;
	FILE *f;

	f = fopen("/proc/popup/services", "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%u %63s %u %d %u %u %u %u %u %llu %llu", &sid, name,
			   &ver, &pid, &nm, &idle, &busy, &max, &queued, &calls,
			   &errors) != 11 || sid != id)
			continue;
		st->idle = idle;
		st->busy = busy;
		st->queued = queued;
		st->rejected = errors;
		err = 0;
		break;
	}
	fclose(f);
	return err;
}

/*
 * Threads are the library's count (alive pool threads), read before the
 * counters: a thread counts its retirement before it leaves, so a reader
 * that sees it gone also sees it retired.
 */
static int k_stats(const struct popup_server *srv, struct popup_server_stats *st)
{
	struct popup_server *s = (struct popup_server *)srv;
	struct kserver *ks = KS(srv);
	uint32_t threads;

	pthread_mutex_lock(&ks->lock);
	threads = ks->nr_threads;
	pthread_mutex_unlock(&ks->lock);
	pthread_mutex_lock(&s->lock);
	*st = srv->stats;
	pthread_mutex_unlock(&s->lock);
	st->threads = threads;
	return k_proc_stats(ks->id, st);
}

/* ---- client ------------------------------------------------------------ */

struct kbinding {
	uint32_t id;
	size_t map_size;
};

static int k_client_open(struct popup_client *c)
{
	c->fd = dev_open();
	return c->fd < 0 ? c->fd : 0;
}

static void k_client_close(struct popup_client *c)
{
	if (c->fd >= 0)
		close(c->fd);
}

static void k_unimport_ioctl(struct popup_binding *b, uint32_t id)
{
	struct popup_target t = { .id = id };

	if (ioctl(b->client->fd, POPUP_IOC_UNIMPORT, &t) < 0)
		pr_debug("unimport %u: %s\n", id, strerror(errno));
}

static int k_import(struct popup_binding *b)
{
	struct popup_import imp = {
		.size = sizeof(imp), .version = b->version, .nslots = b->nr_slots,
		.oneway_quota = b->oneway_quota,
	};
	struct kbinding *kb;
	void *base;

	strcpy(imp.name, b->name);
	if (ioctl(b->client->fd, POPUP_IOC_IMPORT, &imp) < 0)
		return -errno;
	base = mmap(NULL, imp.map_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		    b->client->fd, imp.map_offset);
	kb = calloc(1, sizeof(*kb));
	if (base == MAP_FAILED || !kb) {
		int err = base == MAP_FAILED ? -errno : -ENOMEM;

		if (base != MAP_FAILED)
			munmap(base, imp.map_size);
		free(kb);
		k_unimport_ioctl(b, imp.binding_id);
		return err;
	}
	kb->id = imp.binding_id;
	kb->map_size = imp.map_size;
	b->slots = base;
	b->slot_stride = imp.slot_size;
	b->slot_size = imp.slot_size - TOKEN_SIZE;
	b->priv = kb;
	/* The module keeps the method table: it checks methods at CALL. */
	b->methods = NULL;
	b->nr_methods = 0;
	return 0;
}

static void k_unimport(struct popup_binding *b)
{
	struct kbinding *kb = b->priv;

	munmap(b->slots, kb->map_size);
	k_unimport_ioctl(b, kb->id);
	free(kb);
	b->priv = NULL;
}

/*
 * One CALL. A signal before a handler took the call (EINTR) restarts it;
 * a slot still busy with a cancelled or one-way call (EBUSY) is retried
 * every millisecond until the deadline.
 */
static int k_call_ioctl(struct popup_binding *b, unsigned int slot, uint32_t method,
			uint32_t arg_len, uint32_t flags, uint32_t *res_len,
			uint64_t deadline)
{
	struct kbinding *kb = b->priv;
	struct popup_call call;
	int left;

	for (;;) {
		left = libpopup_ms_left(deadline);
		if (!left)
			return -ETIMEDOUT;
		call = (struct popup_call){
			.size = sizeof(call), .flags = flags, .binding_id = kb->id,
			.method = method, .slot = slot, .arg_len = arg_len,
			.timeout_ms = left < 0 ? 0 : left,
		};
		if (!ioctl(b->client->fd, POPUP_IOC_CALL, &call))
			break;
		if (errno == EBUSY)
			usleep(1000);
		else if (errno == EINVAL)
			return -EMSGSIZE;	/* slot and flags are ours: it is arg_len */
		else if (errno != EINTR)
			return -errno;
	}

	*res_len = call.result_len;
	return call.status;
}

static bool k_slot_ready(struct popup_binding *b, unsigned int slot)
{
	uint64_t *token = slot_token(libpopup_slot_ptr(b, slot), b->slot_stride);

	return __atomic_load_n(token, __ATOMIC_ACQUIRE) == TOKEN_CONSUMED;
}

static int k_call(struct popup_binding *b, unsigned int slot, const struct method_info *m,
		  uint32_t arg_len, uint32_t *res_len, uint64_t deadline)
{
	return k_call_ioctl(b, slot, m->id, arg_len, 0, res_len, deadline);
}

static int k_call_oneway(struct popup_binding *b, const struct method_info *m,
			 const void *arg, uint32_t arg_len)
{
	uint64_t deadline = libpopup_deadline_from_ms(b->timeout_ms);
	uint32_t rlen;
	int slot, ret;

	uint64_t *token;
	uint8_t *p;

	/* Every free slot still carrying a one-way call: the quota is used. */
	slot = libpopup_slot_acquire(b, deadline, true);
	if (slot < 0)
		return slot;
	p = libpopup_slot_ptr(b, slot);
	token = slot_token(p, b->slot_stride);
	if (arg_len)
		memcpy(p, arg, arg_len);
	*token = 0;
	ret = k_call_ioctl(b, slot, m->id, arg_len, POPUP_CALL_ONEWAY, &rlen, deadline);
	pthread_mutex_lock(&b->lock);
	if (!ret)
		b->tainted_slots |= 1ull << slot;
	else
		*token = TOKEN_CONSUMED;	/* nothing was queued */
	pthread_mutex_unlock(&b->lock);
	popup_binding__slot_release(b, slot);
	return ret;
}

const struct popup_ops libpopup_kernel_ops = {
	.name = "kernel",
	.max_msg = POPUP_MAX_MSG - TOKEN_SIZE,
	.server_export = k_export,
	.server_run = k_run,
	.server_stop = k_stop,
	.server_withdraw = k_withdraw,
	.server_set_pool = k_set_pool,
	.server_stats = k_stats,
	.client_open = k_client_open,
	.client_close = k_client_close,
	.import = k_import,
	.unimport = k_unimport,
	.slot_ready = k_slot_ready,
	.call = k_call,
	.call_oneway = k_call_oneway,
	.async = ASYNC_THREADS,
};
