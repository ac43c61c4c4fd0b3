/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Loader for the SO_REUSEPORT steering program (bpf/steer.bpf.c), shared
 * by popupd, popupctl and the tests. popupd opens it once, maps its CPUs
 * to worker slots and hands over each worker socket; popupctl only reads
 * (or retunes) the maps pinned under the pin dir, without a skeleton.
 *
 * Every int-returning function returns 0 or a negative errno, and logs
 * (through log.h) what the errno means for the caller when it is not
 * obvious, e.g. -EINVAL for a TCP socket that is not listening yet.
 *
 * Ordering, per socket: set SO_REUSEPORT, bind, listen (TCP), then
 * popup_steer__add_socket(). The kernel refuses a socket in a sockarray
 * before it is hashed (bound for UDP, listening for TCP).
 */
#ifndef POPUP_COMMON_STEER_H
#define POPUP_COMMON_STEER_H

#include <stdbool.h>

#include "popup/steer.h"

#define POPUP_STEER_PIN_DIR	"/sys/fs/bpf/popup"

struct popup_steer;

struct popup_steer_opts {
	/*
	 * Where to pin programs and maps (bpffs; /sys/fs/bpf is mounted if
	 * needed). NULL or "" pins nothing. Pins left by a dead run are
	 * replaced; a live one holding the dir makes open fail with -EBUSY.
	 */
	const char *pin_dir;
	enum popup_steer_policy policy;
	/*
	 * Attach steer_migrate (BPF_SK_REUSEPORT_SELECT_OR_MIGRATE), so a
	 * closing TCP listener's pending connections move to a live worker
	 * instead of being reset.
	 */
	bool migrate;
};

/* Per-slot, per-CPU counters as read from steer_stats. */
struct popup_steer_stats_table {
	unsigned int nr_cpus;		/* possible CPUs: columns */
	struct popup_steer_stats *rows;	/* [POPUP_STEER_STATS_SLOTS][nr_cpus] */
};

/* NULL @opts: pin at POPUP_STEER_PIN_DIR, cpu policy, migrate. */
int popup_steer__open(struct popup_steer **out, const struct popup_steer_opts *opts);
/* NULL-safe. Unpins; sockets keep the program until their group dissolves. */
void popup_steer__destroy(struct popup_steer *st);

int popup_steer__set_policy(struct popup_steer *st, enum popup_steer_policy policy);
/* @slot POPUP_STEER_SLOT_NONE: @cpu has no worker and uses the fallback. */
int popup_steer__set_cpu_slot(struct popup_steer *st, unsigned int cpu, unsigned int slot);
/*
 * Put @fd in @slot of its group (tcp4/udp4/tcp6/udp6, from SO_PROTOCOL and
 * SO_DOMAIN) and attach the program to its reuseport group. A socket
 * already in @slot is replaced, as on a worker restart.
 */
int popup_steer__add_socket(struct popup_steer *st, int fd, unsigned int slot);
/* Take @fd (still open) out of steering; -ENOENT if it was never added. */
int popup_steer__remove_socket(struct popup_steer *st, int fd);
/* Same by position, for a worker whose socket is already closed. */
int popup_steer__remove_slot(struct popup_steer *st, enum popup_steer_group group,
			     unsigned int slot);
/* UDP requests for @service go to one of @slots; @n == 0 forgets @service. */
int popup_steer__set_service(struct popup_steer *st, __u32 service,
			     const unsigned int *slots, unsigned int n);

/* Fill @t (free with popup_steer_stats_table__free()). */
int popup_steer__read_stats(const struct popup_steer *st, struct popup_steer_stats_table *t);
/* Same from the pins of a running popupd, e.g. POPUP_STEER_PIN_DIR. */
int popup_steer__read_stats_pinned(const char *pin_dir, struct popup_steer_stats_table *t);
/* Change the policy of a running popupd through its pinned config map. */
int popup_steer__set_policy_pinned(const char *pin_dir, enum popup_steer_policy policy);
void popup_steer_stats_table__free(struct popup_steer_stats_table *t);

static inline const struct popup_steer_stats *
popup_steer_stats_at(const struct popup_steer_stats_table *t, unsigned int slot,
		     unsigned int cpu)
{
	return &t->rows[(unsigned long)slot * t->nr_cpus + cpu];
}

/* Sum of @slot's row over all CPUs. */
void popup_steer_stats_sum(const struct popup_steer_stats_table *t, unsigned int slot,
			   struct popup_steer_stats *sum);

const char *popup_steer_policy_name(enum popup_steer_policy policy);
/* "cpu", "hash" or "service"; -EINVAL otherwise. */
int popup_steer_parse_policy(const char *s, enum popup_steer_policy *out);
const char *popup_steer_group_name(enum popup_steer_group group);

#endif /* POPUP_COMMON_STEER_H */
