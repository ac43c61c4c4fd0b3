// SPDX-License-Identifier: GPL-2.0
/*
 * Steering under load (issue 4): workers come and go, or the program is
 * detached, while clients on every CPU keep sending requests, and not one
 * request may be refused, reset or lost.
 *
 * Each case builds a popupd-like group on loopback in its own network
 * namespace: one reuseport socket per CPU in the slot of that CPU (at
 * least two, so there is always a survivor), each served by an echo
 * worker thread, and one client thread pinned to each CPU doing
 * request/reply in a closed loop: for TCP a new connection per request
 * (every request is a fresh SYN to steer), for UDP a datagram on one
 * connected socket. A reply names the worker instance that served it, so
 * the clients' tallies show where each CPU's requests went in each phase:
 *
 *   A  steady: every CPU's requests reach that CPU's worker
 *   B  disturbed: worker 0 restarting (restart_worker) or the program
 *      detached (detach_under_load); every request is still answered
 *   C  restored: every CPU's requests reach its worker again, CPU 0's the
 *      new socket entered under the old slot
 *
 * A worker restart is the loss-free one userspace/common/steer.h
 * describes: TCP closes the listener, and the connections in its accept
 * queue move to a survivor through the migrate program; UDP retires the
 * socket first (out of steering, and connected to a dead peer so that no
 * kernel lookup picks it), answers what is already queued until the
 * socket stays idle, then closes it, since the kernel cannot move
 * datagrams. (Without the connect, about one run in 60 lost a datagram of
 * another CPU: udp_lib_unhash() leaves the reuseport group before the
 * hash table, and a lookup in between may pick the closing socket.) A request counts in a phase if its client
 * saw that phase both before sending it and after the reply; one that
 * overlapped a change counts with the transition, and transitions are
 * judged for loss only, not for placement. (The main thread enters a
 * transition before it disturbs anything and leaves it only once the new
 * state is in place, so a request seen in one phase throughout ran
 * entirely in it.)
 *
 * Phases end when every client has done PHASE_MIN requests in them and
 * PHASE_MIN_MS have passed; every wait is bounded (CHURN_WAIT_S per
 * socket operation, PHASE_MAX_MS per phase).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "kselftest_harness.h"

#include "steer.h"
#include "steer_test.h"

#define MAX_WORKERS	64
#define MAX_INST	(MAX_WORKERS + 1)	/* + the restarted worker 0 */
#define PHASE_MIN	50
#define PHASE_MIN_MS	150
#define PHASE_MAX_MS	30000
#define POLL_MS		20
#define DRAIN_IDLE_MS	100
#define REQ_LEN		16
#define REPLY_LEN	(REQ_LEN + 4)
#define REQ_MAGIC	0x4348524eu	/* "CHRN" */
/*
 * Per socket operation. Generous: on a busy host or an emulated guest a
 * round trip can stall for a second or more, and only a reply that never
 * comes is a loss.
 */
#define CHURN_WAIT_S	10

enum phase { PH_A, PH_T1, PH_B, PH_T2, PH_C, PH_DONE, PH_MAX };

static const char *const phase_names[PH_MAX] = { "A", "A->B", "B", "B->C", "C", "done" };

enum worker_mode { W_RUN, W_DRAIN, W_STOP };

struct churn;

/* One worker socket and the thread answering on it. */
struct instance {
	struct churn *c;
	int id;			/* index in churn.inst, sent back in replies */
	unsigned int slot;
	int fd;
	pthread_t thr;
	bool running;
	atomic_int mode;
	atomic_ulong served;
	atomic_ulong failed;	/* requests the worker could not answer */
};

/* One client thread pinned to one CPU. */
struct client {
	struct churn *c;
	int idx;		/* index in cpus[] */
	pthread_t thr;
	bool running;
	atomic_ulong done[PH_MAX];
	/* read by the main thread only after the join */
	unsigned long by_inst[PH_MAX][MAX_INST];
	unsigned long refused, reset, timeout, bad, other;
	atomic_ulong failures;	/* the sum of those, for a live look */
	int pin_err;
	int last_errno;
};

struct churn {
	int family, type;
	unsigned short port;
	int cpus[MAX_WORKERS];
	int ncpus;
	unsigned int nworkers;
	atomic_int phase;
	atomic_bool stop;
	struct instance inst[MAX_INST];
	int ninst;
	struct client cl[MAX_WORKERS];
};

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_timeouts(int fd)
{
	struct timeval tv = { .tv_sec = CHURN_WAIT_S };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static bool readable(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, ms) == 1;
}

/* ---- workers ------------------------------------------------------------- */

static void reply_to(unsigned char *reply, const unsigned char *req, int id)
{
	__u32 v = id;

	memcpy(reply, req, REQ_LEN);
	memcpy(reply + REQ_LEN, &v, sizeof(v));
}

static void serve_tcp(struct instance *in)
{
	unsigned char req[REQ_LEN], reply[REPLY_LEN];
	int c;

	c = accept4(in->fd, NULL, NULL, SOCK_CLOEXEC);
	if (c < 0)
		return;
	set_timeouts(c);
	if (recv(c, req, sizeof(req), MSG_WAITALL) == REQ_LEN) {
		reply_to(reply, req, in->id);
		if (send(c, reply, sizeof(reply), MSG_NOSIGNAL) == REPLY_LEN)
			atomic_fetch_add(&in->served, 1);
		else
			atomic_fetch_add(&in->failed, 1);
	} else {
		atomic_fetch_add(&in->failed, 1);
	}
	close(c);
}

/* False when nothing was waiting. */
static bool serve_udp(struct instance *in)
{
	unsigned char req[64], reply[REPLY_LEN];
	struct sockaddr_storage from;
	socklen_t len = sizeof(from);
	ssize_t n;

	n = recvfrom(in->fd, req, sizeof(req), MSG_DONTWAIT, (struct sockaddr *)&from, &len);
	if (n < 0)
		return false;
	if (n != REQ_LEN) {
		atomic_fetch_add(&in->failed, 1);
		return true;
	}
	reply_to(reply, req, in->id);
	if (sendto(in->fd, reply, sizeof(reply), 0, (struct sockaddr *)&from, len) == REPLY_LEN)
		atomic_fetch_add(&in->served, 1);
	else
		atomic_fetch_add(&in->failed, 1);
	return true;
}

/*
 * Answer until told to stop. W_DRAIN (UDP, socket already out of
 * steering): go on until the socket has been idle for DRAIN_IDLE_MS.
 */
static void *worker_main(void *arg)
{
	struct instance *in = arg;
	long idle_since = now_ms();

	for (;;) {
		int mode = atomic_load(&in->mode);

		if (mode == W_STOP)
			break;
		if (readable(in->fd, POLL_MS)) {
			if (in->c->type == SOCK_STREAM)
				serve_tcp(in);
			else
				serve_udp(in);
			idle_since = now_ms();
			continue;
		}
		if (mode == W_DRAIN && now_ms() - idle_since >= DRAIN_IDLE_MS)
			break;
	}
	return NULL;
}

/* A new socket on the group's port and its thread; instance id or -errno. */
static int start_instance(struct churn *c, unsigned int slot)
{
	unsigned short port = c->port;
	struct instance *in;
	int fd, err;

	if (c->ninst >= MAX_INST)
		return -ENOSPC;
	fd = rcv_socket(c->family, c->type, &port);
	if (fd < 0)
		return fd;
	/* only the first socket picks the port; clients read it meanwhile */
	if (!c->port)
		c->port = port;
	in = &c->inst[c->ninst];
	in->c = c;
	in->id = c->ninst;
	in->slot = slot;
	in->fd = fd;
	atomic_store(&in->mode, W_RUN);
	err = pthread_create(&in->thr, NULL, worker_main, in);
	if (err) {
		close(fd);
		in->fd = -1;
		return -err;
	}
	in->running = true;
	return c->ninst++;
}

static void stop_instance(struct instance *in, int mode)
{
	if (in->running) {
		atomic_store(&in->mode, mode);
		pthread_join(in->thr, NULL);
		in->running = false;
	}
	if (in->fd >= 0)
		close(in->fd);
	in->fd = -1;
}

/* ---- clients ------------------------------------------------------------- */

static void make_req(unsigned char *req, int idx, __u32 seq)
{
	__u32 w[4] = { REQ_MAGIC, idx, seq, ~seq };

	memcpy(req, w, REQ_LEN);
}

static void count_errno(struct client *cl, int err)
{
	atomic_fetch_add(&cl->failures, 1);
	cl->last_errno = err;
	if (err == ECONNREFUSED)
		cl->refused++;
	else if (err == ECONNRESET || err == EPIPE)
		cl->reset++;
	else if (err == EAGAIN || err == EINPROGRESS || err == ETIMEDOUT)
		cl->timeout++;
	else
		cl->other++;
}

static void count_bad(struct client *cl)
{
	atomic_fetch_add(&cl->failures, 1);
	cl->bad++;
}

/* Instance id from a reply to @req, or -1. */
static int check_reply(struct client *cl, const unsigned char *req,
		       const unsigned char *reply, ssize_t n)
{
	__u32 id;

	if (n != REPLY_LEN || memcmp(req, reply, REQ_LEN)) {
		count_bad(cl);
		return -1;
	}
	memcpy(&id, reply + REQ_LEN, sizeof(id));
	if (id >= MAX_INST) {
		count_bad(cl);
		return -1;
	}
	return id;
}

/* One request on a new connection: instance id, or -1 (counted). */
static int tcp_request(struct client *cl, const unsigned char *req)
{
	struct churn *c = cl->c;
	unsigned char reply[REPLY_LEN];
	struct sockaddr_storage ss;
	socklen_t len = loopback(&ss, c->family, c->port);
	int fd, id = -1;
	ssize_t n;

	fd = socket(c->family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		count_errno(cl, errno);
		return -1;
	}
	set_timeouts(fd);
	if (connect(fd, (struct sockaddr *)&ss, len) ||
	    send(fd, req, REQ_LEN, MSG_NOSIGNAL) != REQ_LEN) {
		count_errno(cl, errno);
		goto out;
	}
	n = recv(fd, reply, sizeof(reply), MSG_WAITALL);
	if (n < 0)
		count_errno(cl, errno);
	else
		id = check_reply(cl, req, reply, n);
out:
	close_abort(fd);
	return id;
}

/* One datagram on @fd (connected): instance id, or -1 (counted). */
static int udp_request(struct client *cl, int fd, const unsigned char *req)
{
	unsigned char reply[64];
	ssize_t n;

	if (send(fd, req, REQ_LEN, 0) != REQ_LEN) {
		count_errno(cl, errno);
		return -1;
	}
	/* a late reply to an earlier, timed-out request is skipped */
	for (int i = 0; i < 4; i++) {
		n = recv(fd, reply, sizeof(reply), 0);
		if (n < 0) {
			count_errno(cl, errno);
			return -1;
		}
		if (n >= REQ_LEN && !memcmp(req, reply, REQ_LEN))
			return check_reply(cl, req, reply, n);
	}
	count_bad(cl);
	return -1;
}

static int udp_client_socket(struct churn *c)
{
	struct sockaddr_storage ss;
	socklen_t len = loopback(&ss, c->family, c->port);
	int fd = socket(c->family, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	set_timeouts(fd);
	if (connect(fd, (struct sockaddr *)&ss, len)) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

static void *client_main(void *arg)
{
	struct client *cl = arg;
	struct churn *c = cl->c;
	unsigned char req[REQ_LEN];
	int ufd = -1;
	__u32 seq = 0;

	cl->pin_err = pin_to(c->cpus[cl->idx]);
	if (cl->pin_err)
		return NULL;
	if (c->type == SOCK_DGRAM) {
		ufd = udp_client_socket(c);
		if (ufd < 0) {
			count_errno(cl, -ufd);
			return NULL;
		}
	}
	while (!atomic_load(&c->stop)) {
		int ph = atomic_load(&c->phase), id;

		make_req(req, cl->idx, seq++);
		id = c->type == SOCK_STREAM ? tcp_request(cl, req) : udp_request(cl, ufd, req);
		if (id < 0)
			continue;
		/* overlapped a change: judged with the transition, for loss only */
		if (atomic_load(&c->phase) != ph && (ph == PH_A || ph == PH_B))
			ph++;
		cl->by_inst[ph][id]++;
		atomic_fetch_add(&cl->done[ph], 1);
	}
	if (ufd >= 0)
		close(ufd);
	return NULL;
}

/* ---- fixture ------------------------------------------------------------- */

FIXTURE(churn) {
	struct popup_steer *st;
	struct churn c;
	int nclients;
};

FIXTURE_VARIANT(churn) {
	int family;
	int type;
};

FIXTURE_VARIANT_ADD(churn, tcp4) { .family = AF_INET, .type = SOCK_STREAM };
FIXTURE_VARIANT_ADD(churn, udp4) { .family = AF_INET, .type = SOCK_DGRAM };
FIXTURE_VARIANT_ADD(churn, tcp6) { .family = AF_INET6, .type = SOCK_STREAM };
FIXTURE_VARIANT_ADD(churn, udp6) { .family = AF_INET6, .type = SOCK_DGRAM };

FIXTURE_SETUP(churn)
{
	/* the migrate program, as popupd runs it: TCP restarts lose nothing */
	struct popup_steer_opts opts = { .policy = POPUP_STEER_P_CPU, .migrate = true };
	struct churn *c = &self->c;
	int err;

	for (int i = 0; i < MAX_INST; i++)
		c->inst[i].fd = -1;
	if (geteuid())
		SKIP(return, "needs root for BPF and a netns");
	/* also makes net.ipv4.tcp_migrate_req 0: TCP migration is ours */
	ASSERT_EQ(0, enter_netns());
	err = variant->family == AF_INET6 ? wait_ipv6_loopback() : 0;
	if (err)
		SKIP(return, "no IPv6 loopback: %s", strerror(-err));

	c->family = variant->family;
	c->type = variant->type;
	c->ncpus = usable_cpus(c->cpus, MAX_WORKERS);
	ASSERT_LT(0, c->ncpus);
	c->nworkers = c->ncpus < 2 ? 2 : c->ncpus;
	ASSERT_EQ(0, popup_steer__open(&self->st, &opts));
	for (unsigned int i = 0; i < c->nworkers; i++) {
		ASSERT_EQ((int)i, start_instance(c, i));
		ASSERT_EQ(0, popup_steer__add_socket(self->st, c->inst[i].fd, i));
	}
	for (int i = 0; i < c->ncpus; i++)
		ASSERT_EQ(0, popup_steer__set_cpu_slot(self->st, c->cpus[i], i));
}

static void stop_clients(FIXTURE_DATA(churn) *self)
{
	atomic_store(&self->c.stop, true);
	for (int i = 0; i < self->nclients; i++) {
		if (self->c.cl[i].running)
			pthread_join(self->c.cl[i].thr, NULL);
		self->c.cl[i].running = false;
	}
}

FIXTURE_TEARDOWN(churn)
{
	stop_clients(self);
	for (int i = 0; i < MAX_INST; i++)
		stop_instance(&self->c.inst[i], W_STOP);
	popup_steer__destroy(self->st);
}

static int start_clients(FIXTURE_DATA(churn) *self)
{
	struct churn *c = &self->c;

	for (int i = 0; i < c->ncpus; i++) {
		struct client *cl = &c->cl[i];
		int err;

		cl->c = c;
		cl->idx = i;
		err = pthread_create(&cl->thr, NULL, client_main, cl);
		if (err)
			return -err;
		cl->running = true;
		self->nclients = i + 1;
	}
	return 0;
}

/*
 * Enter @ph, let every client do PHASE_MIN requests in it; false on
 * timeout, with what each client did logged.
 */
static bool run_phase(struct __test_metadata *_metadata, FIXTURE_DATA(churn) *self,
		      enum phase ph)
{
	long start = now_ms();

	atomic_store(&self->c.phase, ph);
	while (now_ms() - start < PHASE_MAX_MS) {
		bool enough = now_ms() - start >= PHASE_MIN_MS;

		for (int i = 0; enough && i < self->nclients; i++)
			enough = atomic_load(&self->c.cl[i].done[ph]) >= PHASE_MIN;
		if (enough)
			return true;
		usleep(5000);
	}
	for (int i = 0; i < self->nclients; i++)
		TH_LOG("phase %s timed out: CPU %d did %lu requests, %lu failed",
		       phase_names[ph], self->c.cpus[i], atomic_load(&self->c.cl[i].done[ph]),
		       atomic_load(&self->c.cl[i].failures));
	return false;
}

/* In @ph, client @i's requests all went to instance @want. */
static void expect_only(struct __test_metadata *_metadata, const struct client *cl,
			enum phase ph, int want)
{
	for (int k = 0; k < MAX_INST; k++) {
		if (k == want || !cl->by_inst[ph][k])
			continue;
		EXPECT_EQ(0, cl->by_inst[ph][k])
			TH_LOG("phase %s: CPU %d's requests went to instance %d, not %d",
			       phase_names[ph], cl->c->cpus[cl->idx], k, want);
	}
	EXPECT_LE(PHASE_MIN, cl->by_inst[ph][want])
		TH_LOG("phase %s: CPU %d, instance %d", phase_names[ph], cl->c->cpus[cl->idx], want);
}

/* Nothing refused, reset, timed out or garbled, on either side. */
static void expect_no_loss(struct __test_metadata *_metadata, FIXTURE_DATA(churn) *self)
{
	for (int i = 0; i < self->nclients; i++) {
		const struct client *cl = &self->c.cl[i];

		EXPECT_EQ(0, cl->pin_err);
		EXPECT_EQ(0, cl->refused + cl->reset + cl->timeout + cl->bad + cl->other)
			TH_LOG("CPU %d: refused %lu reset %lu timeout %lu bad %lu other %lu (last: %s)",
			       self->c.cpus[i], cl->refused, cl->reset, cl->timeout, cl->bad,
			       cl->other, strerror(cl->last_errno));
	}
	for (int k = 0; k < self->c.ninst; k++) {
		EXPECT_EQ(0, atomic_load(&self->c.inst[k].failed)) TH_LOG("instance %d", k);
	}
}

static void snapshot(struct __test_metadata *_metadata, FIXTURE_DATA(churn) *self,
		     struct popup_steer_stats_table *t)
{
	ASSERT_EQ(0, popup_steer__read_stats(self->st, t));
}

static void free_snaps(struct popup_steer_stats_table *s, int n)
{
	for (int i = 0; i < n; i++)
		popup_steer_stats_table__free(&s[i]);
}

/*
 * Worker 0 (CPU 0's) stops and a new socket takes its slot, all under
 * load: no request lost, CPU 0's traffic counted as fallbacks meanwhile,
 * and back on CPU 0's slot, now the new socket, afterwards.
 */
TEST_F_TIMEOUT(churn, restart_worker, 180)
{
	enum popup_steer_group g = group_of(variant->family, variant->type);
	struct popup_steer_stats_table s[5] = { 0 };
	struct churn *c = &self->c;
	int cpu0 = c->cpus[0], fresh;
	__u64 migrated;

	if (_metadata->skip)
		return;
	ASSERT_EQ(0, start_clients(self));
	ASSERT_TRUE(run_phase(_metadata, self, PH_A));

	snapshot(_metadata, self, &s[0]);
	atomic_store(&c->phase, PH_T1);
	if (c->type == SOCK_DGRAM) {
		ASSERT_EQ(0, popup_steer__retire_socket(self->st, c->inst[0].fd));
		stop_instance(&c->inst[0], W_DRAIN);
	} else {
		stop_instance(&c->inst[0], W_STOP);
		/* the kernel emptied the slot at close; the live list follows */
		ASSERT_EQ(0, popup_steer__remove_slot(self->st, g, 0));
	}
	snapshot(_metadata, self, &s[1]);
	ASSERT_TRUE(run_phase(_metadata, self, PH_B));
	snapshot(_metadata, self, &s[2]);

	atomic_store(&c->phase, PH_T2);
	fresh = start_instance(c, 0);
	ASSERT_LE(0, fresh);
	ASSERT_EQ(0, popup_steer__add_socket(self->st, c->inst[fresh].fd, 0));
	snapshot(_metadata, self, &s[3]);
	ASSERT_TRUE(run_phase(_metadata, self, PH_C));
	snapshot(_metadata, self, &s[4]);
	stop_clients(self);

	expect_no_loss(_metadata, self);
	for (int i = 0; i < self->nclients; i++) {
		const struct client *cl = &c->cl[i];

		expect_only(_metadata, cl, PH_A, i);
		if (i) {
			expect_only(_metadata, cl, PH_B, i);
			expect_only(_metadata, cl, PH_C, i);
			continue;
		}
		/* CPU 0 while its slot is empty: a survivor, never the old or new 0 */
		EXPECT_EQ(0, cl->by_inst[PH_B][0]);
		EXPECT_EQ(0, cl->by_inst[PH_B][fresh]);
		EXPECT_LE(PHASE_MIN, atomic_load(&cl->done[PH_B]));
		expect_only(_metadata, cl, PH_C, fresh);
	}
	EXPECT_LT(0, D(&s[1], &s[2], -1, cpu0, fallbacks));
	EXPECT_EQ(0, D(&s[3], &s[4], -1, -1, fallbacks));
	EXPECT_EQ(0, D(&s[0], &s[4], -1, -1, errors));
	migrated = D(&s[0], &s[1], -1, -1, migrations);
	TH_LOG("%s: A %lu, B %lu (fallbacks on CPU %d: %llu), C %lu requests from CPU %d; %llu migrated",
	       c->type == SOCK_STREAM ? "tcp" : "udp",
	       atomic_load(&c->cl[0].done[PH_A]), atomic_load(&c->cl[0].done[PH_B]), cpu0,
	       (unsigned long long)D(&s[1], &s[2], -1, cpu0, fallbacks),
	       atomic_load(&c->cl[0].done[PH_C]), cpu0, (unsigned long long)migrated);
	free_snaps(s, 5);
}

/*
 * The program detached at run time, under load: the kernel's hash takes
 * over without a request lost and the program counts nothing; re-adding a
 * socket re-attaches it and CPU steering is exact again.
 */
TEST_F_TIMEOUT(churn, detach_under_load, 180)
{
	struct popup_steer_stats_table s[4] = { 0 };
	struct churn *c = &self->c;

	if (_metadata->skip)
		return;
	ASSERT_EQ(0, start_clients(self));
	ASSERT_TRUE(run_phase(_metadata, self, PH_A));

	atomic_store(&c->phase, PH_T1);
	ASSERT_EQ(0, popup_steer__detach(self->st));
	snapshot(_metadata, self, &s[0]);
	ASSERT_TRUE(run_phase(_metadata, self, PH_B));
	snapshot(_metadata, self, &s[1]);

	atomic_store(&c->phase, PH_T2);
	ASSERT_EQ(0, popup_steer__add_socket(self->st, c->inst[0].fd, 0));
	snapshot(_metadata, self, &s[2]);
	ASSERT_TRUE(run_phase(_metadata, self, PH_C));
	snapshot(_metadata, self, &s[3]);
	stop_clients(self);

	expect_no_loss(_metadata, self);
	for (int i = 0; i < self->nclients; i++) {
		expect_only(_metadata, &c->cl[i], PH_A, i);
		EXPECT_LE(PHASE_MIN, atomic_load(&c->cl[i].done[PH_B]));
		expect_only(_metadata, &c->cl[i], PH_C, i);
	}
	EXPECT_EQ(0, D(&s[0], &s[1], -1, -1, selections));
	EXPECT_LT(0, D(&s[2], &s[3], -1, -1, selections));
	EXPECT_EQ(0, D(&s[2], &s[3], -1, -1, fallbacks));
	EXPECT_EQ(0, D(&s[0], &s[3], -1, -1, errors));
	free_snaps(s, 4);
}

TEST_HARNESS_MAIN
