/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers for popupd's C tests: start a popupd on free ports (or given
 * ones) and find them, stop it, talk the native protocol and HTTP, read
 * the daemon's counters through its directory service.
 *
 * The popupd binary is $POPUP_BIN/popupd, else ../bin/popupd next to this
 * test binary, so build/san/tests runs build/san/bin/popupd.
 */
#ifndef POPUPD_UTIL_H
#define POPUPD_UTIL_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "popup/wire.h"

struct pd {
	pid_t pid;
	int np, hp;		/* native and HTTP ports */
	char dir[64];		/* ports, stats, log */
	char pin[96];
};

static inline uint64_t t_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000ull + ts.tv_nsec / 1000000;
}

static inline void pd_bin(char *out, size_t len)
{
	const char *env = getenv("POPUP_BIN");
	char exe[PATH_MAX];
	ssize_t n;

	if (env) {
		snprintf(out, len, "%s/popupd", env);
		return;
	}
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	exe[n > 0 ? n : 0] = 0;
	*strrchr(exe, '/') = 0;
	if (snprintf(out, len, "%s/../bin/popupd", exe) >= (int)len)
		out[0] = 0;
}

/*
 * Start popupd with the arguments (NULL-terminated) after the defaults;
 * @np/@hp 0 pick free ports. Returns 0 once the port file is there.
 * A leading "--local" argument (not a popupd flag) keeps the local
 * exports on (the default here is --no-local).
 * @rlimit_nofile, if not 0, caps the daemon's descriptors.
 */
static inline int pd_start_v(struct pd *p, int np, int hp, rlim_t rlimit_nofile,
			     const char *const *args)
{
	static int seq;
	char bin[PATH_MAX], ports[128], stats[128], log[128], nps[16], hps[16];
	const char *argv[64];
	int n = 0;

	if (!p->dir[0]) {
		snprintf(p->dir, sizeof(p->dir), "/tmp/popupd-ct.XXXXXX");
		if (!mkdtemp(p->dir))
			return -errno;
	}
	snprintf(p->pin, sizeof(p->pin), "/sys/fs/bpf/popup-ct-%d-%d", getpid(), ++seq);
	snprintf(ports, sizeof(ports), "%s/ports.%d", p->dir, seq);
	snprintf(stats, sizeof(stats), "%s/stats.%d", p->dir, seq);
	snprintf(log, sizeof(log), "%s/log", p->dir);
	snprintf(nps, sizeof(nps), "%d", np);
	snprintf(hps, sizeof(hps), "%d", hp);
	pd_bin(bin, sizeof(bin));
	argv[n++] = bin;
	argv[n++] = "-p"; argv[n++] = nps;
	argv[n++] = "--http-port"; argv[n++] = hps;
	argv[n++] = "--port-file"; argv[n++] = ports;
	argv[n++] = "--stats"; argv[n++] = stats;
	argv[n++] = "--pin-dir"; argv[n++] = p->pin;
	if (args && *args && !strcmp(*args, "--local"))
		args++;
	else
		argv[n++] = "--no-local";
	/* POPUPD_TEST_ARRIVAL=user|kernel|auto picks the network arrival
	 * path of every popupd a test starts (popupd_kernel.sh uses it). */
	char arrival[32];
	const char *ar = getenv("POPUPD_TEST_ARRIVAL");

	if (ar && *ar) {
		snprintf(arrival, sizeof(arrival), "--arrival=%s", ar);
		argv[n++] = arrival;
	}
	while (args && *args && n < 62)
		argv[n++] = *args++;
	argv[n] = NULL;
	p->pid = fork();
	if (p->pid < 0)
		return -errno;
	if (p->pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);

		/* A test killed by its timeout must not leave a daemon. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		if (rlimit_nofile) {
			struct rlimit rl = { rlimit_nofile, rlimit_nofile };

			setrlimit(RLIMIT_NOFILE, &rl);
		}
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	/* BPF verification and sanitizer start-up are slow on a busy host. */
	for (int i = 0; i < 300; i++) {
		FILE *f = fopen(ports, "r");

		if (f) {
			int ok = fscanf(f, "native=%d http=%d", &p->np, &p->hp) == 2;

			fclose(f);
			if (ok)
				return 0;
		}
		if (waitpid(p->pid, NULL, WNOHANG) == p->pid) {
			p->pid = 0;
			return -ECHILD;
		}
		usleep(50000);
	}
	return -ETIMEDOUT;
}

/* SIGTERM, wait up to @ms; returns the exit status, or -1 if killed. */
static inline int pd_stop(struct pd *p, int ms)
{
	uint64_t end = t_ms() + ms;
	int st;

	if (p->pid <= 0)
		return 0;
	kill(p->pid, SIGTERM);
	while (t_ms() < end) {
		if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
			p->pid = 0;
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		}
		usleep(20000);
	}
	kill(p->pid, SIGKILL);
	waitpid(p->pid, NULL, 0);
	p->pid = 0;
	return -1;
}

/* The daemon's log into the test's output, each line marked. */
static inline void pd_dump_log(const struct pd *p)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "sed 's/^/# popupd: /' %s/log", p->dir);
	if (system(cmd))
		return;
}

static inline void pd_kill(struct pd *p)
{
	char cmd[256];

	if (p->pid > 0) {
		kill(p->pid, SIGKILL);
		waitpid(p->pid, NULL, 0);
		p->pid = 0;
		snprintf(cmd, sizeof(cmd), "rm -rf %s", p->pin);	/* a killed one's pins */
		if (system(cmd))
			return;
	}
	if (p->dir[0]) {
		if (getenv("POPUPD_TEST_LOG"))
			pd_dump_log(p);
		snprintf(cmd, sizeof(cmd), "rm -rf %s", p->dir);
		if (system(cmd))
			return;
	}
}

/* Sanitizer reports in the daemon's log. */
static inline bool pd_log_clean(const struct pd *p)
{
	char cmd[200];

	snprintf(cmd, sizeof(cmd), "! grep -qE 'AddressSanitizer|runtime error:|LeakSanitizer' %s/log",
		 p->dir);
	return system(cmd) == 0;
}

static inline int tcp_connect(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	if (fd < 0)
		return -errno;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

/* Read exactly @len bytes within @ms; 0, -ETIMEDOUT, -ECONNRESET (EOF). */
static inline int read_full(int fd, void *buf, size_t len, int ms)
{
	uint64_t end = t_ms() + ms;
	size_t got = 0;

	while (got < len) {
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		int64_t left = (int64_t)(end - t_ms());
		ssize_t n;

		if (left <= 0 || poll(&pf, 1, (int)left) <= 0)
			return -ETIMEDOUT;
		n = recv(fd, (char *)buf + got, len - got, 0);
		if (n == 0)
			return -ECONNRESET;
		if (n < 0)
			return errno == EINTR ? 0 : -errno;
		got += n;
	}
	return 0;
}

/* Wait for the peer to close; true if it did within @ms. */
static inline bool closed_within(int fd, int ms)
{
	uint64_t end = t_ms() + ms;
	char buf[4096];

	while (t_ms() < end) {
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&pf, 1, (int)(end - t_ms())) <= 0)
			return false;
		n = recv(fd, buf, sizeof(buf), 0);
		if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
			return true;
	}
	return false;
}

static inline int send_req(int fd, uint32_t svc, uint16_t method, uint64_t id,
			   const void *p, uint32_t len)
{
	struct popup_wire_hdr h = { .magic = POPUP_WIRE_MAGIC, .version = POPUP_WIRE_VERSION,
				    .method = method, .service = svc, .req_id = id, .len = len };
	unsigned char b[POPUP_WIRE_HDR_LEN];

	popup_wire_encode(b, &h);
	if (send(fd, b, sizeof(b), MSG_NOSIGNAL) != sizeof(b))
		return -errno;
	if (len && send(fd, p, len, MSG_NOSIGNAL) != (ssize_t)len)
		return -errno;
	return 0;
}

/* Read one reply; its payload (up to @cap) into @buf. */
static inline int recv_rep(int fd, struct popup_wire_hdr *h, void *buf, size_t cap, int ms)
{
	unsigned char b[POPUP_WIRE_HDR_LEN];
	char sink[256];
	int err = read_full(fd, b, sizeof(b), ms);

	if (err)
		return err;
	popup_wire_decode(b, h);
	if (h->magic != POPUP_WIRE_MAGIC)
		return -EPROTO;
	if (h->len <= cap)
		return read_full(fd, buf, h->len, ms);
	for (uint32_t left = h->len; left;) {
		uint32_t n = left < sizeof(sink) ? left : sizeof(sink);

		err = read_full(fd, sink, n, ms);
		if (err)
			return err;
		left -= n;
	}
	return 0;
}

/* A counter from popupd's directory service (POST /popupd/stats), or -1. */
static inline long pd_stat(const struct pd *p, const char *line_prefix, const char *key)
{
	static const char req[] = "POST /popupd/stats HTTP/1.1\r\nContent-Length: 0\r\n"
				  "Connection: close\r\n\r\n";
	char buf[65536], pat[64], *line, *k;
	size_t got = 0;
	int fd = tcp_connect(p->hp);
	ssize_t n;

	if (fd < 0)
		return -1;
	if (send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) < 0) {
		close(fd);
		return -1;
	}
	while (got < sizeof(buf) - 1 && (n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0)) > 0)
		got += n;
	close(fd);
	buf[got] = 0;
	line = strstr(buf, line_prefix);
	if (!line)
		return -1;
	snprintf(pat, sizeof(pat), " %s=", key);
	k = strstr(line, pat);
	if (!k || (strchr(line, '\n') && k > strchr(line, '\n')))
		return -1;
	return strtol(k + strlen(pat), NULL, 10);
}

#endif /* POPUPD_UTIL_H */
