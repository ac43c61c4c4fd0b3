/* SPDX-License-Identifier: LGPL-2.1 OR BSD-2-Clause */
/*
 * Layout of popupd's statistics file (/run/popup/popupd.stats by default).
 *
 * popupd maps the file shared and bumps counters with relaxed atomics on
 * its hot paths; popupctl maps it read-only. A file rather than a control
 * socket means reading stats never costs the daemon a wake-up, and a
 * crashed daemon's last figures stay readable. Workers own their rows, so
 * no two threads write the same cache line.
 */
#ifndef POPUP_STATS_H
#define POPUP_STATS_H

#include <stdint.h>

#define POPUP_STATS_MAGIC	0x50535431u	/* "PST1" */
#define POPUP_STATS_VERSION	1
#define POPUP_STATS_MAX_WORKERS	256
#define POPUP_STATS_PATH	"/run/popup/popupd.stats"

/* One row per worker thread; each worker is pinned to @cpu. */
struct popup_worker_stats {
	uint32_t cpu;		/* CPU the worker is pinned to */
	uint32_t live;		/* 1 while the worker runs */
	uint64_t requests;	/* requests answered (TCP and UDP) */
	uint64_t tcp_requests;
	uint64_t udp_requests;
	uint64_t conns;		/* TCP connections accepted */
	uint64_t errors;	/* error replies and protocol errors */
	uint64_t samples;	/* locality samples taken */
	uint64_t local;		/* samples where the kernel received the
				 * request on this worker's CPU */
	uint64_t restarts;	/* run-time restarts done or failed: bumped
				 * after restart_err is written */
	int64_t restart_err;	/* 0 or -errno of the last restart */
	uint64_t reserved[6];
} __attribute__((aligned(64)));

struct popup_stats_file {
	uint32_t magic;
	uint32_t version;
	uint32_t nr_workers;
	uint32_t pid;		/* popupd's pid */
	uint64_t started;	/* CLOCK_REALTIME seconds */
	uint32_t port;		/* native protocol port */
	uint32_t arrival;	/* 0 userspace epoll path, 1 kernel path */
	uint64_t reserved[4];
	struct popup_worker_stats w[POPUP_STATS_MAX_WORKERS];
};

#endif /* POPUP_STATS_H */
