// SPDX-License-Identifier: GPL-2.0
/*
 * popupd under abuse: every limit of issue 5's "overload and time limits"
 * is driven past its bound and must end in an explicit reply or a counted
 * close, never a hang, a spin or unbounded memory.
 *
 *   conn_limit       past max_conns: a busy notice, then close; counted;
 *                    service recovers once connections go away
 *   idle_timeout     a silent connection is closed, an active one is not
 *   slow_sender      a header trickled byte by byte is closed at the
 *                    whole-request deadline although bytes keep coming
 *   no_reading       pipelining without reading: the daemon stops reading
 *                    (the client's sends block) and closes at the write
 *                    timeout
 *   busy_reply       a full handler queue answers status 5 for every
 *                    request beyond it, and all requests get a reply
 *   fd_exhaustion    accept() at the descriptor limit: no CPU spin, and
 *                    service resumes when descriptors free up
 */
#include "kselftest_harness.h"
#include "popupd_util.h"

static const char *const BUSY_ARGS[] = {
	"-s", "echo,sleep", "--set", "sleep.threads=1", "--set", "sleep.queue=1", NULL
};

static void echo_ok(struct __test_metadata *_metadata, int fd, uint64_t id)
{
	struct popup_wire_hdr h;
	char buf[16];

	ASSERT_EQ(0, send_req(fd, 1, 1, id, "ping", 4));
	ASSERT_EQ(0, recv_rep(fd, &h, buf, sizeof(buf), 2000));
	ASSERT_EQ(POPUP_WIRE_S_OK, h.status);
	ASSERT_EQ(id, h.req_id);
}

TEST(conn_limit)
{
	static const char *const args[] = { "--max-conns", "4", NULL };
	struct pd p = { 0 };
	struct popup_wire_hdr h;
	int fds[4], extra;
	char buf[64];

	ASSERT_EQ(0, pd_start_v(&p, 0, 0, 0, args));
	for (int i = 0; i < 4; i++) {
		fds[i] = tcp_connect(p.np);
		ASSERT_GE(fds[i], 0);
		echo_ok(_metadata, fds[i], i + 1);
	}
	extra = tcp_connect(p.np);
	ASSERT_GE(extra, 0);
	EXPECT_EQ(0, recv_rep(extra, &h, buf, sizeof(buf), 2000));
	EXPECT_EQ(POPUP_WIRE_S_BUSY, h.status);
	EXPECT_EQ(0, h.req_id);
	EXPECT_TRUE(closed_within(extra, 2000));
	close(extra);
	/* HTTP gets a 503 for the same reason. */
	extra = tcp_connect(p.hp);
	ASSERT_GE(extra, 0);
	EXPECT_EQ(0, read_full(extra, buf, 12, 2000));
	EXPECT_EQ(0, memcmp(buf, "HTTP/1.1 503", 12));
	close(extra);
	close(fds[0]);
	usleep(200000);
	EXPECT_GE(pd_stat(&p, "daemon", "refused"), 2);	/* uses a connection */
	fds[0] = tcp_connect(p.np);
	ASSERT_GE(fds[0], 0);
	echo_ok(_metadata, fds[0], 99);		/* recovered */
	for (int i = 0; i < 4; i++)
		close(fds[i]);
	EXPECT_EQ(0, pd_stop(&p, 5000));
	EXPECT_TRUE(pd_log_clean(&p));
	pd_kill(&p);
}

TEST(idle_timeout)
{
	static const char *const args[] = { "--idle-timeout-ms", "400", NULL };
	struct pd p = { 0 };
	int idle, active;

	ASSERT_EQ(0, pd_start_v(&p, 0, 0, 0, args));
	idle = tcp_connect(p.np);
	active = tcp_connect(p.np);
	ASSERT_GE(idle, 0);
	ASSERT_GE(active, 0);
	echo_ok(_metadata, idle, 1);
	for (int i = 0; i < 8; i++) {		/* 1.2 s of activity */
		usleep(150000);
		echo_ok(_metadata, active, 10 + i);
	}
	EXPECT_TRUE(closed_within(idle, 100));	/* closed by now */
	echo_ok(_metadata, active, 100);	/* the active one never was */
	EXPECT_GE(pd_stat(&p, "daemon", "idle_closed"), 1);
	close(idle);
	close(active);
	EXPECT_EQ(0, pd_stop(&p, 5000));
	pd_kill(&p);
}

static void trickle(struct __test_metadata *_metadata, int port, const char *msg)
{
	uint64_t start = t_ms();
	int fd = tcp_connect(port);
	bool closed = false;

	ASSERT_GE(fd, 0);
	/* One byte every 100 ms: each one would reset a mere idle timer. */
	for (size_t i = 0; msg[i] && t_ms() - start < 3000; i++) {
		if (send(fd, msg + i, 1, MSG_NOSIGNAL) != 1 || closed_within(fd, 100)) {
			closed = true;
			break;
		}
	}
	EXPECT_TRUE(closed || closed_within(fd, 1000));
	/* Deadline 500 ms, 100 ms ticks; the whole message would take
	 * seconds. Slack for sanitizer builds on a busy machine. */
	EXPECT_LT(t_ms() - start, 2500);
	close(fd);
}

TEST(slow_sender)
{
	static const char *const args[] = {
		"--request-timeout-ms", "500", "--idle-timeout-ms", "10000", NULL
	};
	struct pd p = { 0 };

	ASSERT_EQ(0, pd_start_v(&p, 0, 0, 0, args));
	/* A 32-byte header at 10 bytes a second: never complete in time. */
	trickle(_metadata, p.np, "PUP1PUP1PUP1PUP1PUP1PUP1PUP1PUP1");
	trickle(_metadata, p.hp, "POST /echo/echo HTTP/1.1\r\nHost: slowloris\r\nX-A: aaaaaaaaaaaaaaaaa\r\n");
	EXPECT_GE(pd_stat(&p, "daemon", "slow_closed"), 2);
	EXPECT_EQ(0, pd_stop(&p, 5000));
	EXPECT_TRUE(pd_log_clean(&p));
	pd_kill(&p);
}

TEST(no_reading)
{
	static const char *const args[] = {
		"--max-output", "65536", "--write-timeout-ms", "600", NULL
	};
	static char payload[4096];
	struct pd p = { 0 };
	size_t sent = 0;
	int fd, small = 4096;
	uint64_t id = 0, start;

	ASSERT_EQ(0, pd_start_v(&p, 0, 0, 0, args));
	fd = tcp_connect(p.np);
	ASSERT_GE(fd, 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	fcntl(fd, F_SETFL, O_NONBLOCK);
	start = t_ms();
	/* Stack requests and never read: sends must start to block. A
	 * partial send keeps its remainder, so the stream stays framed. */
	unsigned char b[POPUP_WIRE_HDR_LEN + sizeof(payload)];
	size_t off = sizeof(b);

	while (sent < (64u << 20) && t_ms() - start < 3000) {
		ssize_t n;

		if (off == sizeof(b)) {
			struct popup_wire_hdr h = { .magic = POPUP_WIRE_MAGIC, .version = 1,
						    .service = 1, .method = 1, .req_id = ++id,
						    .len = sizeof(payload) };

			popup_wire_encode(b, &h);
			memcpy(b + POPUP_WIRE_HDR_LEN, payload, sizeof(payload));
			off = 0;
		}
		n = send(fd, b + off, sizeof(b) - off, MSG_NOSIGNAL);
		if (n < 0 && errno == EAGAIN) {
			struct pollfd pf = { .fd = fd, .events = POLLOUT };

			if (poll(&pf, 1, 300) == 0)
				break;	/* blocked: the daemon stopped reading */
			continue;
		}
		if (n < 0) {
			TH_LOG("send: %s", strerror(errno));
			break;
		}
		off += n;
		sent += n;
	}
	EXPECT_LT(sent, 64u << 20);
	TH_LOG("sent %zu bytes before the daemon stopped reading", sent);
	usleep(2500000);	/* write timeout 600 ms, with slack */
	EXPECT_GE(pd_stat(&p, "daemon", "write_closed"), 1);
	EXPECT_EQ(0, pd_stat(&p, "daemon", "proto_errors"));
	close(fd);
	EXPECT_EQ(0, pd_stop(&p, 5000));
	EXPECT_TRUE(pd_log_clean(&p));
	pd_kill(&p);
}

TEST(busy_reply)
{
	struct pd p = { 0 };
	struct popup_wire_hdr h;
	int fd, busy = 0, ok = 0;
	char buf[128];

	ASSERT_EQ(0, pd_start_v(&p, 0, 0, 0, BUSY_ARGS));
	fd = tcp_connect(p.np);
	ASSERT_GE(fd, 0);
	/* 1 thread + 1 queued: of 6 pipelined 300 ms sleeps, at least 4
	 * must be refused at once, and every one answered. */
	for (int i = 1; i <= 6; i++)
		ASSERT_EQ(0, send_req(fd, 4, 1, i, "300", 3));
	for (int i = 0; i < 6; i++) {
		ASSERT_EQ(0, recv_rep(fd, &h, buf, sizeof(buf), 3000));
		busy += h.status == POPUP_WIRE_S_BUSY;
		ok += h.status == POPUP_WIRE_S_OK;
	}
	EXPECT_GE(busy, 4);
	EXPECT_EQ(6, busy + ok);
	close(fd);
	EXPECT_EQ(0, pd_stop(&p, 5000));
	pd_kill(&p);
}

static double cpu_seconds(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long ut, st;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (!f || !fgets(buf, sizeof(buf), f)) {
		if (f)
			fclose(f);
		return -1;
	}
	fclose(f);
	p = strrchr(buf, ')');
	/* fields after ") ": state ... utime is the 12th, stime the 13th */
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
			 &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / sysconf(_SC_CLK_TCK);
}

TEST(fd_exhaustion)
{
	static const char *const args[] = { "--no-bpf", NULL };
	struct pd p = { 0 };
	int fds[200], n = 0, fd;
	double before, after;

	ASSERT_EQ(0, pd_start_v(&p, 0, 0, 48, args));
	for (n = 0; n < 200; n++) {
		fds[n] = tcp_connect(p.np);
		if (fds[n] < 0)
			break;
	}
	usleep(300000);
	before = cpu_seconds(p.pid);
	usleep(1000000);
	after = cpu_seconds(p.pid);
	TH_LOG("%d connections held; popupd used %.2f s CPU in 1 s", n, after - before);
	EXPECT_LT(after - before, 0.3);		/* no spin on EMFILE */
	for (int i = 0; i < n; i++)
		close(fds[i]);
	usleep(500000);
	EXPECT_GE(pd_stat(&p, "daemon", "accept_emfile"), 1);
	fd = tcp_connect(p.np);
	ASSERT_GE(fd, 0);
	echo_ok(_metadata, fd, 7);		/* service resumed */
	close(fd);
	EXPECT_EQ(0, pd_stop(&p, 5000));
	EXPECT_TRUE(pd_log_clean(&p));
	pd_kill(&p);
}

TEST_HARNESS_MAIN
