// SPDX-License-Identifier: LGPL-2.1 OR BSD-2-Clause
/*
 * Userspace backend, client side: bindings over per-slot connections.
 *
 * Each slot of a binding gets its own connection to the service the first
 * time it is used, so a call is a plain send and receive on a socket only
 * the slot's owner touches: no demultiplexing and no lock on the call
 * path. A timed-out call closes its slot's connection, which is how the
 * server learns to cancel it; the next call on the slot reconnects and
 * checks that the service instance is still the one imported, so a server
 * restart surfaces as -ECONNRESET instead of silently reaching a new
 * server. One-way calls share one more connection per binding, under a
 * lock, and wait only for the dispatcher's acceptance.
 */
#include <poll.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "libpopup_internal.h"
#include "user_proto.h"

struct ubinding {
	uint64_t instance;		/* of the service we imported */
	atomic_bool dead;		/* the service is gone for good */
	atomic_uint_fast64_t seq;
	int slot_fd[POPUP_MAX_SLOTS];	/* owned by the slot's holder */
	pthread_mutex_t ow_lock;	/* serialises one-way calls */
	int ow_fd;
};

struct welcome_msg {
	struct pu_hdr h;
	struct pu_welcome w;
	struct pu_method m[POPUP_MAX_METHODS];
};

static struct ubinding *UB(const struct popup_binding *b)
{
	return b->priv;
}

int libpopup_user_client_open(struct popup_client *client)
{
	return 0;
}

void libpopup_user_client_close(struct popup_client *client)
{
}

/* Wait until @fd has @events or @deadline passes; -ETIMEDOUT then. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
	struct pollfd pfd = { .fd = fd, .events = events };
	int n;

	/* Signals do not cancel calls here: see the errno notes in popup.h. */
	do {
		n = poll(&pfd, 1, libpopup_ms_left(deadline));
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return n ? 0 : -ETIMEDOUT;
}

static int sock_connect(const char *name, uint32_t version)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	socklen_t len;
	int fd, n;

	n = snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, PU_ADDR_FMT,
		     name, version);
	len = offsetof(struct sockaddr_un, sun_path) + 1 + n;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, len) < 0) {
		/* Nobody bound that name: no such service. */
		int err = errno == ECONNREFUSED ? -ENOENT : -errno;

		close(fd);
		return err;
	}
	return fd;
}

/* The HELLO/WELCOME exchange; fills @msg, returns 0 or -errno. */
static int handshake(int fd, const char *name, uint32_t version, uint32_t quota,
		     struct welcome_msg *msg, uint64_t deadline)
{
	struct {
		struct pu_hdr h;
		struct pu_hello hello;
	} req = {
		.h = { .magic = PU_MAGIC, .type = PU_HELLO,
		       .len = sizeof(struct pu_hello) },
		.hello = { .proto = PU_PROTO, .version = version,
			   .oneway_quota = quota },
	};
	ssize_t n;
	int err;

	strncpy(req.hello.name, name, sizeof(req.hello.name) - 1);
	if (send(fd, &req, sizeof(req), MSG_NOSIGNAL) < 0)
		return errno == EPIPE ? -ECONNRESET : -errno;
	err = wait_fd(fd, POLLIN, deadline);
	if (err)
		return err;
	n = recv(fd, msg, sizeof(*msg), 0);
	if (n <= 0)
		return n ? -errno : -ECONNRESET;
	if (n < (ssize_t)sizeof(msg->h) || msg->h.magic != PU_MAGIC ||
	    msg->h.type != PU_WELCOME)
		return -EPROTO;
	if (msg->h.flags & PU_F_ERR)
		return msg->h.status < 0 ? msg->h.status : -EPROTO;
	if (n < (ssize_t)(sizeof(msg->h) + sizeof(msg->w)) ||
	    msg->w.nr_methods > POPUP_MAX_METHODS ||
	    n != (ssize_t)(sizeof(msg->h) + sizeof(msg->w) +
			   msg->w.nr_methods * sizeof(msg->m[0])))
		return -EPROTO;
	return 0;
}

/*
 * A new connection to the imported service instance. Any failure here
 * means the instance is gone (withdrawn, dead, or replaced).
 */
static int reconnect(struct popup_binding *b, uint64_t deadline)
{
	struct ubinding *ub = UB(b);
	struct welcome_msg *msg;
	int fd, err;

	msg = malloc(sizeof(*msg));
	if (!msg)
		return -ENOMEM;
	fd = sock_connect(b->name, b->version);
	err = fd < 0 ? fd : handshake(fd, b->name, b->version, b->oneway_quota,
				      msg, deadline);
	if (!err && msg->w.instance != ub->instance)
		err = -ECONNRESET;
	free(msg);
	if (!err)
		return fd;
	if (fd >= 0)
		close(fd);
	if (err != -ETIMEDOUT && err != -ENOMEM && err != -EMFILE && err != -ENFILE) {
		atomic_store(&ub->dead, true);
		err = -ECONNRESET;
	}
	return err;
}

/* The slot's connection, opened (again) if it has none; -errno. */
static int slot_conn(struct popup_binding *b, uint32_t slot, uint64_t deadline)
{
	struct ubinding *ub = UB(b);
	int fd;

	if (atomic_load(&ub->dead))
		return -ECONNRESET;
	if (ub->slot_fd[slot] < 0) {
		fd = reconnect(b, deadline);
		if (fd < 0)
			return fd;
		ub->slot_fd[slot] = fd;
	}
	return ub->slot_fd[slot];
}

static int import_methods(struct popup_binding *b, const struct welcome_msg *msg)
{
	uint32_t size = 0;

	b->nr_methods = msg->w.nr_methods;
	b->methods = calloc(b->nr_methods ?: 1, sizeof(*b->methods));
	if (!b->methods)
		return -ENOMEM;
	for (uint32_t i = 0; i < b->nr_methods; i++) {
		const struct pu_method *pm = &msg->m[i];

		if (pm->max_arg > POPUP_USER_MAX_MSG || pm->max_res > POPUP_USER_MAX_MSG)
			return -EPROTO;
		b->methods[i] = (struct method_info){
			.id = pm->id, .flags = pm->flags,
			.max_arg = pm->max_arg, .max_res = pm->max_res,
		};
		size = max_t(uint32_t, size, max_t(uint32_t, pm->max_arg, pm->max_res));
	}
	/* Cache-line sized slots, so slots never share a line. */
	b->slot_size = (max_t(uint32_t, size, 1) + 63) & ~63u;
	b->slot_stride = b->slot_size;
	b->slots = aligned_alloc(64, (size_t)b->nr_slots * b->slot_size);
	if (!b->slots)
		return -ENOMEM;
	memset(b->slots, 0, (size_t)b->nr_slots * b->slot_size);
	return 0;
}

static void ubinding_free(struct popup_binding *b)
{
	struct ubinding *ub = UB(b);

	for (uint32_t i = 0; i < POPUP_MAX_SLOTS; i++)
		if (ub->slot_fd[i] >= 0)
			close(ub->slot_fd[i]);
	if (ub->ow_fd >= 0)
		close(ub->ow_fd);
	pthread_mutex_destroy(&ub->ow_lock);
	free(b->slots);
	b->slots = NULL;
	free(ub);
	b->priv = NULL;
}

int libpopup_user_import(struct popup_binding *b)
{
	struct welcome_msg *msg;
	struct ubinding *ub;
	int fd, err;

	ub = calloc(1, sizeof(*ub));
	msg = malloc(sizeof(*msg));
	if (!ub || !msg) {
		free(ub);
		free(msg);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < POPUP_MAX_SLOTS; i++)
		ub->slot_fd[i] = -1;
	ub->ow_fd = -1;
	pthread_mutex_init(&ub->ow_lock, NULL);
	b->priv = ub;
	fd = sock_connect(b->name, b->version);
	err = fd < 0 ? fd : handshake(fd, b->name, b->version, b->oneway_quota,
				      msg, libpopup_deadline_from_ms(b->timeout_ms));
	if (!err) {
		ub->instance = msg->w.instance;
		ub->slot_fd[0] = fd;	/* keep the handshake for slot 0 */
		err = import_methods(b, msg);
	} else if (fd >= 0) {
		close(fd);
	}
	free(msg);
	if (err == -ECONNRESET)	/* withdrawn between connect and hello */
		err = -ENOENT;
	if (err)
		ubinding_free(b);
	return err;
}

void libpopup_user_unimport(struct popup_binding *b)
{
	if (b->priv)
		ubinding_free(b);
}

/* The slot's connection is unusable: close it; -ECONNRESET marks death. */
static int slot_fail(struct popup_binding *b, unsigned int slot, int err)
{
	struct ubinding *ub = UB(b);

	close(ub->slot_fd[slot]);
	ub->slot_fd[slot] = -1;
	if (err == -ECONNRESET || err == -EPIPE) {
		atomic_store(&ub->dead, true);
		err = -ECONNRESET;
	}
	return err;
}

static int send_call(struct popup_binding *b, int fd, uint16_t type,
		     const struct method_info *m, const void *arg,
		     uint32_t arg_len, uint64_t deadline, uint64_t *seq)
{
	int left = libpopup_ms_left(deadline);
	struct pu_hdr h = {
		.magic = PU_MAGIC, .type = type, .method = m->id, .len = arg_len,
		.priority = b->priority, .cpu = sched_getcpu(),
		.timeout_ms = left < 0 ? 0 : left ?: 1,
		.seq = atomic_fetch_add(&UB(b)->seq, 1) + 1,
	};
	struct iovec iov[2] = {
		{ .iov_base = &h, .iov_len = sizeof(h) },
		{ .iov_base = (void *)arg, .iov_len = arg_len },
	};
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = arg_len ? 2 : 1 };

	*seq = h.seq;
	/* One message in flight per connection: the send cannot block long. */
	if (sendmsg(fd, &msg, MSG_NOSIGNAL) < 0)
		return errno == EPIPE ? -ECONNRESET : -errno;
	return 0;
}

/*
 * Read the answer to @seq; result bytes land in @res (@cap bytes). Returns
 * 0 with the delivered status (handler's, or a library -errno the server
 * answered with) in *@status, or a transport -errno.
 */
static int recv_answer(int fd, uint16_t type, uint64_t seq, void *res,
		       uint32_t cap, uint32_t *res_len, int *status,
		       uint64_t deadline)
{
	struct pu_hdr h;
	struct iovec iov[2] = {
		{ .iov_base = &h, .iov_len = sizeof(h) },
		{ .iov_base = res, .iov_len = cap },
	};
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = cap ? 2 : 1 };
	ssize_t n;
	int err;

	err = wait_fd(fd, POLLIN, deadline);
	if (err)
		return err;
	n = recvmsg(fd, &msg, MSG_TRUNC);
	if (n <= 0)
		return n ? -errno : -ECONNRESET;
	if (n < (ssize_t)sizeof(h) || h.magic != PU_MAGIC || h.type != type ||
	    h.seq != seq || n - sizeof(h) != h.len || h.len > cap)
		return -EPROTO;
	*res_len = (h.flags & PU_F_ERR) ? 0 : h.len;
	*status = h.status;
	return 0;
}

int libpopup_user_call(struct popup_binding *b, unsigned int slot,
		       const struct method_info *m, uint32_t arg_len,
		       uint32_t *res_len, uint64_t deadline)
{
	uint8_t *p = libpopup_slot_ptr(b, slot);
	int fd, err, status;
	uint64_t seq;

	fd = slot_conn(b, slot, deadline);
	if (fd < 0)
		return fd;
	err = send_call(b, fd, PU_CALL, m, p, arg_len, deadline, &seq);
	if (!err)
		err = recv_answer(fd, PU_REPLY, seq, p, b->slot_size, res_len,
				  &status, deadline);
	/* Any transport failure, a timeout included, ends the connection. */
	return err ? slot_fail(b, slot, err) : status;
}

int libpopup_user_call_oneway(struct popup_binding *b, const struct method_info *m,
			      const void *arg, uint32_t arg_len)
{
	struct ubinding *ub = UB(b);
	int err = 0, status = 0;
	uint32_t rlen;
	uint64_t seq;

	pthread_mutex_lock(&ub->ow_lock);
	if (atomic_load(&ub->dead))
		err = -ECONNRESET;
	if (!err && ub->ow_fd < 0) {
		err = reconnect(b, libpopup_deadline_from_ms(b->timeout_ms));
		if (err >= 0) {
			ub->ow_fd = err;
			err = 0;
		}
	}
	if (!err)
		err = send_call(b, ub->ow_fd, PU_ONEWAY, m, arg, arg_len, 0, &seq);
	/* The dispatcher answers at once; only its death ends the wait. */
	if (!err)
		err = recv_answer(ub->ow_fd, PU_ACK, seq, NULL, 0, &rlen, &status, 0);
	if (err && ub->ow_fd >= 0) {
		close(ub->ow_fd);
		ub->ow_fd = -1;
		if (err == -ECONNRESET)
			atomic_store(&ub->dead, true);
	}
	pthread_mutex_unlock(&ub->ow_lock);
	return err ?: status;
}

/*
 * Split calls for popup_batch: send on the slot's connection and return
 * the fd to poll, then read the answer once it is readable. The slot and
 * its connection stay owned by the batch in between, so several calls of
 * one binding are in flight at once, one per slot.
 */
int libpopup_user_call_start(struct popup_binding *b, unsigned int slot,
			     const struct method_info *m, uint32_t arg_len,
			     uint64_t deadline, uint64_t *seq)
{
	int fd, err;

	fd = slot_conn(b, slot, deadline);
	if (fd < 0)
		return fd;
	err = send_call(b, fd, PU_CALL, m, libpopup_slot_ptr(b, slot), arg_len,
			deadline, seq);
	return err ? slot_fail(b, slot, err) : fd;
}

int libpopup_user_call_finish(struct popup_binding *b, unsigned int slot,
			      uint64_t seq, uint32_t *res_len)
{
	int err, status;

	err = recv_answer(UB(b)->slot_fd[slot], PU_REPLY, seq, libpopup_slot_ptr(b, slot),
			  b->slot_size, res_len, &status, 0);
	return err ? slot_fail(b, slot, err) : status;
}

/* Give up on the slot's call: closing its connection cancels it. */
void libpopup_user_call_cancel(struct popup_binding *b, unsigned int slot)
{
	if (UB(b)->slot_fd[slot] >= 0)
		slot_fail(b, slot, -ETIMEDOUT);
}
