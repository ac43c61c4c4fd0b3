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
 *
 * A failed call changes nothing: the maps, the program attached to the
 * socket's group and the library's own record are as before (the one
 * exception, a socket joining a group we steer already, re-attaches the
 * same program to it).
 *
 * Lifetime of the attachment. The kernel keeps one program per reuseport
 * group, held by the group, not by the loader. A worker restart that loses
 * nothing is (tests/steer_churn.c does it under load):
 *   TCP: close the listener (with opts.migrate its accept queue moves to a
 *        live worker; the kernel empties its slot, and the program falls
 *        back to the other live slots and counts it), then
 *        popup_steer__remove_slot() to keep the live list exact;
 *   UDP: popup_steer__retire_socket(), answer what is queued until the
 *        socket stays idle, close (datagrams queued at close are lost);
 * then a new socket is bound and popup_steer__add_socket() puts it under
 * the same slot. Re-adding a socket that is already in its slot
 * re-attaches the program, which is how steering is restored after
 * SO_DETACH_REUSEPORT_BPF or popup_steer__detach().
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
	/*
	 * Entries of steer_cpu_slot; 0: one per possible CPU and at least
	 * POPUP_STEER_MAX_CPUS. A CPU beyond the map has no slot, and its
	 * traffic takes the live-slot fallback (counted as such).
	 */
	unsigned int max_cpus;
};

/* Per-slot, per-CPU counters as read from steer_stats. */
struct popup_steer_stats_table {
	unsigned int nr_cpus;		/* possible CPUs: columns */
	struct popup_steer_stats *rows;	/* [POPUP_STEER_STATS_SLOTS][nr_cpus] */
};

/* NULL @opts: pin at POPUP_STEER_PIN_DIR, cpu policy, migrate. */
int popup_steer__open(struct popup_steer **out, const struct popup_steer_opts *opts);
/*
 * NULL-safe. Detaches the program (popup_steer__detach()) from the groups
 * of sockets the caller still holds, so they fall back to the kernel's
 * reuseport hash instead of being steered by maps nobody updates any more;
 * empties steer_socks, so those sockets may join another loader's map at
 * once (the map itself is freed later); then unpins. Sockets the caller
 * closed first are not touched, even if their fd numbers were reused
 * (popupd closes its workers' sockets first, so for it the detach is a
 * no-op).
 *
 * Hand-over: if another loader has since attached its own program to the
 * same groups (a second popupd taking over the port), close the sockets
 * before calling this: the kernel cannot tell whose program a group runs,
 * so detaching would remove the newcomer's.
 */
void popup_steer__destroy(struct popup_steer *st);
/*
 * Detach the program from every group that has a socket added through
 * @st and still open, leaving maps and pins alone: the kernel's hash then
 * picks sockets, counters stop. popup_steer__add_socket() of any of those
 * sockets re-attaches it.
 */
int popup_steer__detach(struct popup_steer *st);

int popup_steer__set_policy(struct popup_steer *st, enum popup_steer_policy policy);
/*
 * @slot POPUP_STEER_SLOT_NONE: @cpu has no worker and uses the fallback.
 * -ERANGE for a @cpu beyond the map (opts.max_cpus) or a @slot at or above
 * POPUP_STEER_MAX_SLOTS.
 */
int popup_steer__set_cpu_slot(struct popup_steer *st, unsigned int cpu, unsigned int slot);
/*
 * Put @fd in @slot of its group (tcp4/udp4/tcp6/udp6, from SO_PROTOCOL and
 * SO_DOMAIN) and attach the program to its reuseport group. A socket
 * already in @slot is replaced, as on a worker restart; @fd itself already
 * there is re-attached (see above). Errors: -EBADF (closed fd), -ENOTSOCK,
 * -EAFNOSUPPORT (not IPv4/IPv6), -EPROTONOSUPPORT (not TCP/UDP), -EINVAL
 * (no SO_REUSEPORT, not bound, TCP not listening), -EBADFD (another
 * address than the group's sockets), -EBUSY (in another slot or another
 * loader's map), -ERANGE (@slot).
 */
int popup_steer__add_socket(struct popup_steer *st, int fd, unsigned int slot);
/* Take @fd (still open) out of steering; -ENOENT if it was never added. */
int popup_steer__remove_socket(struct popup_steer *st, int fd);
/*
 * Stop a worker's socket gracefully without losing a request: remove it
 * from steering and, for UDP, connect it to a dead peer (port 1 of its own
 * address, or of loopback for a wildcard bind) so that no socket lookup
 * picks it any more, not even the kernel's racy one at close. The socket
 * keeps what is already queued: the caller reads it until it stays idle
 * for a while, then closes it. Replies must then be sent with sendto().
 * For a TCP listener this is remove_socket(): closing it migrates its
 * accept queue (opts.migrate). Side effect: the kernel marks a UDP group
 * with a connected socket as having connections for good, so its lookups
 * score every member after the program's choice (slower, same result).
 */
int popup_steer__retire_socket(struct popup_steer *st, int fd);
/* Same by position, for a worker whose socket is already closed. */
int popup_steer__remove_slot(struct popup_steer *st, enum popup_steer_group group,
			     unsigned int slot);
/*
 * UDP requests for @service go to one of @slots, evenly (a slot listed
 * twice counts once); @n == 0 forgets @service. -E2BIG for @n above
 * POPUP_STEER_MAX_SLOTS, -ERANGE for a slot at or above it.
 */
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
