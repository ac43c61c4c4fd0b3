/* SPDX-License-Identifier: GPL-2.0 */
/*
 * libFuzzer driver shared by the protocol targets: popupd's real
 * connection code (worker.c, native.c, http.c, service.c...) serving one
 * end of a socketpair, without the worker thread.
 *
 * Each input is cut into several deliveries (the first byte picks the
 * chunk size), as in h2o's fuzz driver, so partial headers and requests
 * split across reads are exercised, not only whole buffers. Only inline
 * services are loaded (echo and the built-in directory), so every request
 * is answered synchronously; the replies are read and thrown away. A
 * sanitizer report or a leak is the failure.
 */
#ifndef POPUP_FUZZ_CONN_H
#define POPUP_FUZZ_CONN_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "popupd.h"

struct popupd pd;

static struct worker fz_worker;
static struct popup_worker_stats fz_stats;

static void fz_setup(void)
{
	static char *names[] = { "echo" };

	log_init("fuzz", LOG_LVL_ERR);
	config_defaults(&pd.cfg);
	pd.cfg.services = names;	/* never freed: lives for the process */
	pd.cfg.nr_services = 1;
	pd.cfg.plugin_dir = getenv("POPUP_PLUGIN_DIR");
	pd.cfg.lim.max_request = 4096;	/* small, to reach the limits */
	pd.cfg.lim.max_header = 1024;
	pd.lim = pd.cfg.lim;
	if (services_load(&pd.cfg) || services_init())
		abort();
	fz_worker.epfd = epoll_create1(EPOLL_CLOEXEC);
	fz_worker.tcp_fd = fz_worker.udp_fd = fz_worker.http_fd = -1;
	fz_worker.wake_fd = fz_worker.spare_fd = -1;
	fz_worker.st = &fz_stats;
	pthread_mutex_init(&fz_worker.done_lock, NULL);
}

static void fz_drain(int fd)
{
	char buf[65536];

	while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
}

static int fz_run(const uint8_t *data, size_t size, enum conn_proto proto)
{
	static int ready;
	int sv[2];
	struct conn *c;
	size_t chunk, off;

	if (!ready) {
		fz_setup();
		ready = 1;
	}
	if (!size)
		return 0;
	chunk = (data[0] % 64) + 1;
	data++;
	size--;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv))
		abort();
	c = worker_adopt(&fz_worker, sv[0], proto);
	if (!c)
		abort();
	for (off = 0; off < size; off += chunk) {
		size_t n = size - off < chunk ? size - off : chunk;

		if (!worker_feed(c, data + off, n))
			break;
		fz_drain(sv[1]);
	}
	worker_drop(&fz_worker);
	fz_drain(sv[1]);
	close(sv[1]);
	return 0;
}

#endif /* POPUP_FUZZ_CONN_H */
