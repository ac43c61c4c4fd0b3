// SPDX-License-Identifier: GPL-2.0
/*
 * popupd restarts one worker at run time, under load, without losing a
 * request (issue 4): `popupctl worker restart CPU` asks the daemon
 * (SIGUSR1 with the CPU as its sigqueue() value) to empty the worker's
 * steering slot, close its listener (the migrate program moves the accept
 * queue to a survivor), drain and close its retired UDP socket, bind new
 * sockets and put them back under the same slot.
 *
 * One client thread pinned to each worker CPU runs a closed loop of echo
 * requests over the native protocol: TCP with a new connection per
 * request (each a fresh SYN for the program to steer), UDP on one
 * connected socket. The phases:
 *
 *   A  steady: the program steers every CPU's arrivals to its own slot
 *   R  the restart of the first CPU's worker, while the clients go on
 *   C  restored: that CPU's arrivals go to its slot again, served by the
 *      restarted worker; no fallback any more
 *
 * Throughout: no refused connection, no reset, no request without its
 * reply (UDP: none lost, a reply waits up to REPLY_WAIT_MS), no error
 * status; the program counted fallbacks for the first CPU while its slot
 * was empty; popupd reports the restart done (stats file) and exits 0.
 *
 * udp_graceful_stop: SIGTERM under UDP load. popupd retires every UDP
 * socket first (out of steering, connected to a dead peer: a datagram sent
 * after that finds no socket and its client gets ECONNREFUSED from the
 * ICMP error), answers what is queued until idle, then exits: every
 * datagram gets a reply or a refusal, none is lost.
 *
 * Each case runs in its own network namespace, on loopback; the daemon's
 * BPF pins go to a per-test directory (tests/popupd_util.h).
 */
#include <glob.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>

#include "kselftest_harness.h"
#include "popupd_util.h"
#include "popup/stats.h"
#include "steer_test.h"

#define MAX_CPUS	16
#define PHASE_MS	800
#define REPLY_WAIT_MS	5000

enum { PH_A, PH_R, PH_C, PH_MAX };

struct rclient {
	struct rtest *t;
	int cpu;
	pthread_t thr;
	bool running;
	atomic_ulong done[PH_MAX];
	atomic_ulong refused, failed;
	int last_err;
	int pin_err;
};

struct rtest {
	int type;
	int port;
	atomic_int phase;
	atomic_bool stop;
	bool stop_on_refuse;
	struct rclient cl[MAX_CPUS];
	int ncl;
};

static void req_encode(unsigned char *b, uint64_t id, const char *payload, uint32_t len)
{
	struct popup_wire_hdr h = { .magic = POPUP_WIRE_MAGIC, .version = POPUP_WIRE_VERSION,
				    .method = 1, .service = 1, .req_id = id, .len = len };

	popup_wire_encode(b, &h);
	memcpy(b + POPUP_WIRE_HDR_LEN, payload, len);
}

static void fail(struct rclient *c, int err)
{
	c->last_err = err;
	if (err == -ECONNREFUSED)
		atomic_fetch_add(&c->refused, 1);
	else
		atomic_fetch_add(&c->failed, 1);
}

/* One echo request on a new TCP connection: 0 or -errno. */
static int tcp_echo(struct rtest *t, uint64_t id)
{
	struct popup_wire_hdr h;
	char payload[24], buf[64];
	int fd = tcp_connect(t->port), err;

	if (fd < 0)
		return fd;
	snprintf(payload, sizeof(payload), "r%016llx", (unsigned long long)id);
	err = send_req(fd, 1, 1, id, payload, strlen(payload));
	if (!err)
		err = recv_rep(fd, &h, buf, sizeof(buf), REPLY_WAIT_MS);
	if (!err && (h.req_id != id || h.status != POPUP_WIRE_S_OK ||
		     h.len != strlen(payload) || memcmp(buf, payload, h.len)))
		err = -EBADMSG;
	close(fd);
	return err;
}

/* One echo datagram on @fd (connected): 0 or -errno; a late reply to an
 * earlier request would be a loss already counted, so it fails too. */
static int udp_echo(int fd, uint64_t id)
{
	unsigned char b[POPUP_WIRE_HDR_LEN + 32], r[POPUP_WIRE_HDR_LEN + 64];
	struct popup_wire_hdr h;
	char payload[24];
	struct pollfd pf = { .fd = fd, .events = POLLIN };
	ssize_t n;

	snprintf(payload, sizeof(payload), "u%016llx", (unsigned long long)id);
	req_encode(b, id, payload, strlen(payload));
	if (send(fd, b, POPUP_WIRE_HDR_LEN + strlen(payload), 0) < 0)
		return -errno;
	if (poll(&pf, 1, REPLY_WAIT_MS) != 1)
		return -ETIMEDOUT;
	n = recv(fd, r, sizeof(r), 0);
	if (n < 0)
		return -errno;
	if (n < POPUP_WIRE_HDR_LEN)
		return -EBADMSG;
	popup_wire_decode(r, &h);
	if (h.req_id != id || h.status != POPUP_WIRE_S_OK || h.len != strlen(payload) ||
	    memcmp(r + POPUP_WIRE_HDR_LEN, payload, h.len))
		return -EBADMSG;
	return 0;
}

static int udp_socket(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		close(fd);
		return -errno;
	}
	return fd;
}

static void *client_main(void *arg)
{
	struct rclient *c = arg;
	struct rtest *t = c->t;
	uint64_t id = (uint64_t)c->cpu << 40;
	int ufd = -1;

	c->pin_err = pin_to(c->cpu);
	if (c->pin_err)
		return NULL;
	if (t->type == SOCK_DGRAM) {
		ufd = udp_socket(t->port);
		if (ufd < 0) {
			fail(c, ufd);
			return NULL;
		}
	}
	while (!atomic_load(&t->stop)) {
		int ph = atomic_load(&t->phase);
		int err = t->type == SOCK_STREAM ? tcp_echo(t, ++id) : udp_echo(ufd, ++id);

		if (err)
			fail(c, err);
		else
			atomic_fetch_add(&c->done[ph], 1);
		if (err == -ECONNREFUSED && t->stop_on_refuse)
			break;		/* the daemon is gone */
	}
	if (ufd >= 0)
		close(ufd);
	return NULL;
}

/* The daemon's statistics file (its name has a sequence number). */
static const struct popup_stats_file *map_stats(const char *dir, char *path, size_t len)
{
	char pat[128];
	glob_t g;
	const struct popup_stats_file *sf = NULL;
	int fd;

	snprintf(pat, sizeof(pat), "%s/stats.*", dir);
	if (glob(pat, 0, NULL, &g) || g.gl_pathc != 1) {
		globfree(&g);
		return NULL;
	}
	snprintf(path, len, "%s", g.gl_pathv[0]);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	globfree(&g);
	if (fd < 0)
		return NULL;
	sf = mmap(NULL, sizeof(*sf), PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	return sf == MAP_FAILED ? NULL : sf;
}

/* `popupctl worker restart CPU`, next to popupd; its exit status. */
static int popupctl_restart(const struct pd *p, const char *stats, int cpu)
{
	char bin[PATH_MAX], cmd[PATH_MAX + 512], *slash;
	int st;

	pd_bin(bin, sizeof(bin));
	slash = strrchr(bin, '/');
	if (!slash)
		return -1;
	snprintf(cmd, sizeof(cmd), "%.*s/popupctl worker restart %d --stats %s >>%s/log 2>&1",
		 (int)(slash - bin), bin, cpu, stats, p->dir);
	st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

FIXTURE(restart) {
	struct pd p;
	struct rtest t;
	int cpus[MAX_CPUS];
	int ncpus;
	const struct popup_stats_file *sf;
	char stats[160];
};

FIXTURE_VARIANT(restart) {
	int type;
};

FIXTURE_VARIANT_ADD(restart, tcp) { .type = SOCK_STREAM };
FIXTURE_VARIANT_ADD(restart, udp) { .type = SOCK_DGRAM };

FIXTURE_SETUP(restart)
{
	char cpulist[256] = "";
	/* a restart needs the userspace UDP path (popup.ko reads the socket
	 * otherwise, and would have to be re-attached) */
	const char *args[] = { "--cpus", cpulist, "--no-http", "--arrival", "user",
			       "--log-level", "info", NULL };
	size_t n = 0;

	if (geteuid())
		SKIP(return, "needs root for BPF and a netns");
	ASSERT_EQ(0, enter_netns());
	self->ncpus = usable_cpus(self->cpus, MAX_CPUS);
	if (self->ncpus < 2)
		SKIP(return, "needs two CPUs: a survivor for the restarting worker");
	for (int i = 0; i < self->ncpus; i++)
		n += snprintf(cpulist + n, sizeof(cpulist) - n, "%s%d", i ? "," : "",
			      self->cpus[i]);
	ASSERT_EQ(0, pd_start_v(&self->p, 0, 0, 0, args));
	self->sf = map_stats(self->p.dir, self->stats, sizeof(self->stats));
	ASSERT_NE(NULL, self->sf);
	ASSERT_EQ((uint32_t)self->ncpus, self->sf->nr_workers);
	self->t.type = variant->type;
	self->t.port = self->p.np;
}

FIXTURE_TEARDOWN(restart)
{
	atomic_store(&self->t.stop, true);
	for (int i = 0; i < self->t.ncl; i++)
		if (self->t.cl[i].running)
			pthread_join(self->t.cl[i].thr, NULL);
	if (self->sf)
		munmap((void *)self->sf, sizeof(*self->sf));
	pd_kill(&self->p);
}

static int worker_row(const struct popup_stats_file *sf, int cpu)
{
	for (unsigned int i = 0; i < sf->nr_workers; i++)
		if ((int)sf->w[i].cpu == cpu)
			return i;
	return -1;
}

static uint64_t ld(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/* Run phase @ph for PHASE_MS and until every client did 20 requests. */
static bool run_phase(struct rtest *t, int ph)
{
	uint64_t start = t_ms();

	atomic_store(&t->phase, ph);
	while (t_ms() - start < 30000) {
		bool enough = t_ms() - start >= PHASE_MS;

		for (int i = 0; enough && i < t->ncl; i++)
			enough = atomic_load(&t->cl[i].done[ph]) >= 20;
		if (enough)
			return true;
		usleep(10000);
	}
	return false;
}

TEST_F_TIMEOUT(restart, under_load, 120)
{
	struct popup_steer_stats_table s[4] = { 0 };
	struct rtest *t = &self->t;
	int cpu0 = self->cpus[0], row0;
	uint64_t req0[2], restarts, t_restart;

	if (_metadata->skip)
		return;
	row0 = worker_row(self->sf, cpu0);
	ASSERT_LE(0, row0);
	for (int i = 0; i < self->ncpus; i++) {
		struct rclient *c = &t->cl[i];

		c->t = t;
		c->cpu = self->cpus[i];
		ASSERT_EQ(0, pthread_create(&c->thr, NULL, client_main, c));
		c->running = true;
		t->ncl = i + 1;
	}
	ASSERT_TRUE(run_phase(t, PH_A));
	ASSERT_EQ(0, popup_steer__read_stats_pinned(self->p.pin, &s[0]));

	restarts = ld(&self->sf->w[row0].restarts);
	atomic_store(&t->phase, PH_R);
	t_restart = t_ms();
	ASSERT_EQ(0, popupctl_restart(&self->p, self->stats, cpu0));
	t_restart = t_ms() - t_restart;
	ASSERT_EQ(restarts + 1, ld(&self->sf->w[row0].restarts));
	EXPECT_EQ(0, (int64_t)ld((const uint64_t *)&self->sf->w[row0].restart_err));
	ASSERT_EQ(0, popup_steer__read_stats_pinned(self->p.pin, &s[1]));

	req0[0] = ld(&self->sf->w[row0].requests);
	ASSERT_TRUE(run_phase(t, PH_C));
	ASSERT_EQ(0, popup_steer__read_stats_pinned(self->p.pin, &s[2]));
	req0[1] = ld(&self->sf->w[row0].requests);
	atomic_store(&t->stop, true);
	for (int i = 0; i < t->ncl; i++) {
		pthread_join(t->cl[i].thr, NULL);
		t->cl[i].running = false;
	}

	for (int i = 0; i < t->ncl; i++) {
		struct rclient *c = &t->cl[i];

		EXPECT_EQ(0, c->pin_err);
		EXPECT_EQ(0, atomic_load(&c->refused)) TH_LOG("CPU %d", c->cpu);
		EXPECT_EQ(0, atomic_load(&c->failed))
			TH_LOG("CPU %d: last error %s", c->cpu, strerror(-c->last_err));
		EXPECT_LE(20, atomic_load(&c->done[PH_C]));
	}
	EXPECT_EQ(1, __atomic_load_n(&self->sf->w[row0].live, __ATOMIC_RELAXED));
	/* the slot was empty: the first CPU's arrivals went by the fallback */
	EXPECT_LT(0, D(&s[0], &s[1], -1, cpu0, fallbacks));
	/* and now they are steered to its slot again, none by the fallback */
	EXPECT_EQ(0, D(&s[1], &s[2], -1, -1, fallbacks));
	EXPECT_LT(0, D(&s[1], &s[2], row0, cpu0, selections));
	EXPECT_EQ(D(&s[1], &s[2], -1, cpu0, selections), D(&s[1], &s[2], row0, cpu0, selections));
	EXPECT_EQ(0, D(&s[0], &s[2], -1, -1, errors));
	/* served by the restarted worker */
	EXPECT_LT(req0[0], req0[1]);
	TH_LOG("%s: CPU %d: A %lu, restart (%llu ms) %lu, C %lu requests; %llu fallbacks, %llu migrated",
	       t->type == SOCK_STREAM ? "tcp" : "udp", cpu0,
	       atomic_load(&t->cl[0].done[PH_A]), (unsigned long long)t_restart,
	       atomic_load(&t->cl[0].done[PH_R]),
	       atomic_load(&t->cl[0].done[PH_C]),
	       (unsigned long long)D(&s[0], &s[1], -1, cpu0, fallbacks),
	       (unsigned long long)D(&s[0], &s[1], -1, -1, migrations));
	EXPECT_EQ(0, pd_stop(&self->p, 20000));
	EXPECT_TRUE(pd_log_clean(&self->p));
	for (int i = 0; i < 3; i++)
		popup_steer_stats_table__free(&s[i]);
}

TEST(udp_graceful_stop)
{
	const char *args[] = { "--no-http", "--arrival", "user", NULL };
	struct rtest t = { .type = SOCK_DGRAM, .stop_on_refuse = true };
	struct pd p = { 0 };
	int cpus[MAX_CPUS], n, st;
	uint64_t t0;

	if (geteuid())
		SKIP(return, "needs root for BPF and a netns");
	ASSERT_EQ(0, enter_netns());
	n = usable_cpus(cpus, MAX_CPUS);
	ASSERT_LT(0, n);
	ASSERT_EQ(0, pd_start_v(&p, 0, 0, 0, args));
	t.port = p.np;
	for (int i = 0; i < n; i++) {
		t.cl[i].t = &t;
		t.cl[i].cpu = cpus[i];
		ASSERT_EQ(0, pthread_create(&t.cl[i].thr, NULL, client_main, &t.cl[i]));
		t.ncl = i + 1;
	}
	ASSERT_TRUE(run_phase(&t, PH_A));
	st = pd_stop(&p, 20000);
	/* every client ends on its refusal well within the reply wait */
	t0 = t_ms();
	for (int i = 0; i < t.ncl; i++)
		pthread_join(t.cl[i].thr, NULL);
	EXPECT_EQ(0, st);
	EXPECT_GT(REPLY_WAIT_MS, t_ms() - t0);
	for (int i = 0; i < t.ncl; i++) {
		EXPECT_EQ(0, atomic_load(&t.cl[i].failed))
			TH_LOG("CPU %d: last error %s", t.cl[i].cpu, strerror(-t.cl[i].last_err));
		EXPECT_EQ(1, atomic_load(&t.cl[i].refused)) TH_LOG("CPU %d", t.cl[i].cpu);
	}
	TH_LOG("%lu datagrams answered before the stop",
	       atomic_load(&t.cl[0].done[PH_A]));
	EXPECT_TRUE(pd_log_clean(&p));
	pd_kill(&p);
}

TEST_HARNESS_MAIN
