/* SPDX-License-Identifier: GPL-2.0 */
/*
 * popupd internals shared by its files: configuration, workers, services
 * and the statistics file.
 */
#ifndef POPUPD_H
#define POPUPD_H

#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "popup/stats.h"

struct popupd_config {
	uint16_t port;		/* native protocol, TCP and UDP */
	cpu_set_t cpus;		/* one worker per CPU in this set */
	const char *bind_addr;	/* IPv4 address to bind */
	const char *pin_dir;	/* bpffs directory for pins */
	const char *stats_path;
	bool use_bpf;
	uint32_t max_payload;	/* largest request payload accepted */
	uint32_t max_conns;	/* per worker */
};

/* A service answers one request: write at most @cap bytes to @out. */
typedef int (*popupd_handler_fn)(uint16_t method, const void *in, uint32_t len,
				 void *out, uint32_t cap, uint32_t *out_len);

struct popupd_service {
	uint32_t id;
	const char *name;
	popupd_handler_fn handle;
};

const struct popupd_service *popupd_service_find(uint32_t id);

struct conn;

struct worker {
	int cpu;		/* pinned CPU; also the BPF worker slot's CPU */
	unsigned int slot;	/* sockarray slot */
	int tcp_fd;		/* SO_REUSEPORT listener */
	int udp_fd;		/* SO_REUSEPORT datagram socket */
	int epfd;
	int stop_fd;		/* eventfd: wakes the loop to stop */
	pthread_t thread;
	bool started;
	const struct popupd_config *cfg;
	struct popup_worker_stats *st;
	struct conn *conns;	/* open connections, owned by the thread */
	unsigned int nconns;
	unsigned int sample_tick;
};

int worker_open(struct worker *w, const struct popupd_config *cfg);
int worker_start(struct worker *w);
void worker_stop(struct worker *w);
void worker_close(struct worker *w);

struct popup_stats_file *stats_create(const char *path, unsigned int nr_workers,
				      uint32_t port);
void stats_destroy(struct popup_stats_file *sf, const char *path);

#endif /* POPUPD_H */
