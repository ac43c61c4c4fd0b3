/* SPDX-License-Identifier: GPL-2.0 */
/*
 * popup-bench: entry points of the sub-benchmarks (net.c dispatches), and
 * the client pieces net.c shares with versus.c.
 */
#ifndef POPUP_BENCH_H
#define POPUP_BENCH_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

int local_main(int argc, char **argv);	/* local.c: popup-bench local ... */
int elastic_main(int argc, char **argv);	/* local.c: popup-bench elastic ... */
int versus_main(int argc, char **argv);	/* versus.c: popup-bench versus ... */

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* net.c: sleep @s seconds, through signals. */
void sleep_s(double s);
/* net.c: @host, @port for UDP or TCP into @ss; 0, or -EINVAL with a message. */
int bench_resolve(const char *host, const char *port, bool udp,
		  struct sockaddr_storage *ss, socklen_t *len);
/* net.c: a socket connected to @ss (TCP: with TCP_NODELAY); fd or -errno. */
int bench_connect(const struct sockaddr_storage *ss, socklen_t len, bool udp);
/* net.c: a request frame of @size payload bytes, the id in the first 8. */
void bench_request(unsigned char *req, uint16_t method, uint32_t service,
		   uint64_t id, uint32_t size);

#endif /* POPUP_BENCH_H */
