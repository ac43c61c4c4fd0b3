// SPDX-License-Identifier: GPL-2.0
/*
 * popup-udp-floor: the cheapest UDP server that still answers the native
 * protocol, as the floor popupd's UDP path is measured against.
 *
 *   popup-udp-floor [--port P] [--cpus LIST] [--stats-out FILE]
 *
 * One SO_REUSEPORT UDP socket and one pinned thread per CPU of the list;
 * each thread blocks in recvmmsg() for up to 64 datagrams, flips the reply
 * flag in each header (no validation beyond the length, no dispatch) and
 * sends them all back with one sendmmsg(). Counters as popup-epoll-server
 * (same JSON on SIGTERM/SIGINT).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cpus.h"
#include "popup/wire.h"

#define BATCH	64
#define MSG_CAP	2048

struct worker {
	pthread_t th;
	int cpu, fd;
	uint64_t requests, local;
	char pad[64];
};

static volatile sig_atomic_t stopping;

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	static __thread unsigned char bufs[BATCH][MSG_CAP];
	struct sockaddr_storage from[BATCH];
	struct iovec iov[BATCH];
	struct mmsghdr m[BATCH];

	cpus_pin_self(w->cpu);
	for (;;) {
		int n;

		for (int i = 0; i < BATCH; i++) {
			iov[i] = (struct iovec){ bufs[i], MSG_CAP };
			m[i].msg_hdr = (struct msghdr){ .msg_name = &from[i],
							.msg_namelen = sizeof(from[i]),
							.msg_iov = &iov[i], .msg_iovlen = 1 };
		}
		n = recvmmsg(w->fd, m, BATCH, MSG_WAITFORONE, NULL);
		if (n < 0) {
			if (stopping)
				break;
			continue;
		}
		for (int i = 0; i < n; i++) {
			unsigned char *p = bufs[i];

			iov[i].iov_len = m[i].msg_len;
			if (m[i].msg_len >= POPUP_WIRE_HDR_LEN) {
				p[5] = POPUP_WIRE_F_REPLY;
				memset(p + 12, 0, 4);	/* status OK */
				if ((int)(popup_wire_get32(p + 16) >> 16) == w->cpu)
					w->local++;
			}
		}
		w->requests += n;
		sendmmsg(w->fd, m, n, 0);
		if (stopping)
			break;
	}
	return NULL;
}

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "cpus", required_argument, NULL, 'c' },
		{ "stats-out", required_argument, NULL, 'o' },
		{}
	};
	const char *stats_out = NULL;
	int port = 7372, c, nw = 0;
	struct worker *ws;
	cpu_set_t cpus;
	uint64_t total = 0, mx = 0, mn = UINT64_MAX;
	struct sigaction sa = { .sa_handler = on_signal };	/* no SA_RESTART */

	cpus_online(&cpus);
	while ((c = getopt_long(argc, argv, "p:c:o:", lo, NULL)) != -1) {
		switch (c) {
		case 'p': port = atoi(optarg); break;
		case 'c':
			if (cpus_parse(optarg, &cpus))
				return 2;
			break;
		case 'o': stats_out = optarg; break;
		default:
			fprintf(stderr, "usage: popup-udp-floor [--port P] [--cpus LIST] "
				"[--stats-out FILE]\n");
			return 2;
		}
	}
	ws = calloc(CPU_SETSIZE, sizeof(*ws));
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
					 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		struct timeval tv = { .tv_usec = 200000 };
		int one = 1;

		if (!CPU_ISSET(cpu, &cpus))
			continue;
		ws[nw].cpu = cpu;
		ws[nw].fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		setsockopt(ws[nw].fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
		setsockopt(ws[nw].fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		if (bind(ws[nw].fd, (struct sockaddr *)&a, sizeof(a))) {
			fprintf(stderr, "popup-udp-floor: port %d: %s\n", port, strerror(errno));
			return 1;
		}
		nw++;
	}
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigset_t ss, old;

	/* workers block the signals, so they reach pause() below */
	sigemptyset(&ss);
	sigaddset(&ss, SIGTERM);
	sigaddset(&ss, SIGINT);
	pthread_sigmask(SIG_BLOCK, &ss, &old);
	for (int i = 0; i < nw; i++)
		pthread_create(&ws[i].th, NULL, worker_main, &ws[i]);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	while (!stopping)
		pause();
	for (int i = 0; i < nw; i++) {
		pthread_join(ws[i].th, NULL);
		total += ws[i].requests;
		if (ws[i].requests > mx)
			mx = ws[i].requests;
		if (ws[i].requests < mn)
			mn = ws[i].requests;
	}
	if (stats_out) {
		FILE *f = fopen(stats_out, "w");

		if (!f)
			return 1;
		fprintf(f, "{\"total\":%llu,\"balance\":", (unsigned long long)total);
		if (mn)
			fprintf(f, "%.4f", (double)mx / mn);
		else
			fprintf(f, "null");
		fprintf(f, ",\"cpus\":[");
		for (int i = 0; i < nw; i++)
			fprintf(f, "%s{\"cpu\":%d,\"requests\":%llu,\"share\":%.4f,\"locality\":%.4f}",
				i ? "," : "", ws[i].cpu, (unsigned long long)ws[i].requests,
				total ? (double)ws[i].requests / total : 0.0,
				ws[i].requests ? (double)ws[i].local / ws[i].requests : 0.0);
		fprintf(f, "]}\n");
		fclose(f);
	}
	return 0;
}
