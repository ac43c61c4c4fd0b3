/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Types and constants shared by the SO_REUSEPORT steering program
 * (bpf/steer.bpf.c) and its loader (userspace/common/steer.c). Both sides
 * are built from the same tree, but popupctl may read the pinned maps of a
 * popupd built earlier, so the config map starts with a magic and a
 * version and new fields are only ever appended.
 *
 * Only <linux/types.h> is used so that the BPF side can include it.
 *
 * Slots. A slot is a worker index (0..POPUP_STEER_MAX_SLOTS-1); worker N
 * owns one socket per reuseport group it serves, all in slot N. A kernel
 * reuseport group is per local address, protocol and family, so the one
 * sockarray is split into POPUP_STEER_GROUPS ranges, one per group:
 *
 *	steer_socks key = group * POPUP_STEER_MAX_SLOTS + slot
 *
 * with group = POPUP_STEER_G_{TCP4,UDP4,TCP6,UDP6}, derived in BPF from
 * md->ip_protocol and md->sk->family. The socket's family is used rather
 * than md->eth_protocol because the latter is 0 during a TCP migration
 * (the kernel runs the program on an empty skb) and a dual-stack IPv6
 * socket receives IPv4 frames while still being in an AF_INET6 group.
 * One consequence: popupd steers at most one port per group.
 *
 * Maps (all pinned under the pin dir, /sys/fs/bpf/popup by default):
 *
 *	steer_config	ARRAY[1]			struct popup_steer_config
 *	steer_cpu_slot	ARRAY[max(possible CPUs,	__u32 slot, or
 *		      POPUP_STEER_MAX_CPUS)]		POPUP_STEER_SLOT_NONE
 *	steer_socks	REUSEPORT_SOCKARRAY[GROUPS * MAX_SLOTS]
 *							__u64 fd in, cookie out
 *	steer_live	ARRAY[POPUP_STEER_GROUPS]	struct popup_steer_slot_set
 *	steer_services	HASH service id -> struct popup_steer_slot_set
 *	steer_stats	PERCPU_ARRAY[POPUP_STEER_STATS_SLOTS]
 *							struct popup_steer_stats
 */
#ifndef POPUP_STEER_H
#define POPUP_STEER_H

#include <linux/types.h>

#define POPUP_STEER_MAGIC	0x50535452u	/* "PSTR" */
#define POPUP_STEER_VERSION	1

#define POPUP_STEER_MAX_SLOTS	128
/* Least size of steer_cpu_slot; the loader sizes it at load time. */
#define POPUP_STEER_MAX_CPUS	1024
#define POPUP_STEER_MAX_SERVICES 256
/*
 * How many live slots a fallback tries after the hashed one fails. Bounds
 * the verifier's work; beyond it the kernel's own hash picks (SK_PASS with
 * no selection), so traffic is never dropped.
 */
#define POPUP_STEER_MAX_PROBES	8

#define POPUP_STEER_SLOT_NONE	0xffffffffu

enum popup_steer_group {
	POPUP_STEER_G_TCP4,
	POPUP_STEER_G_UDP4,
	POPUP_STEER_G_TCP6,
	POPUP_STEER_G_UDP6,
	POPUP_STEER_GROUPS,
};

enum popup_steer_policy {
	/* The worker whose slot steer_cpu_slot names for the receiving CPU. */
	POPUP_STEER_P_CPU,
	/* md->hash over the live slots: spreads flows, ignores the CPU. */
	POPUP_STEER_P_HASH,
	/*
	 * UDP: the service id of the popup wire header (include/popup/wire.h)
	 * picks a slot set in steer_services, md->hash a slot within it.
	 * TCP, and UDP without a known service, use the cpu policy.
	 */
	POPUP_STEER_P_SERVICE,
	POPUP_STEER_POLICIES,
};

/*
 * The program ignores a config whose magic or version it does not know
 * and then applies the cpu policy, so a half-written or foreign map never
 * stops traffic.
 */
struct popup_steer_config {
	__u32 magic;		/* POPUP_STEER_MAGIC */
	__u32 version;		/* POPUP_STEER_VERSION */
	__u32 policy;		/* enum popup_steer_policy */
	__u32 reserved;		/* zero */
};

/*
 * A set of slots, used for the live slots of a group and for the slots
 * serving a service: bit s % 64 of bits[s / 64] is slot s. The program
 * picks the (hash scaled to the set's size)-th member, so the choice is
 * stable while the set does not change and even across its members.
 *
 * A bitmap rather than a list because the program reads a value while
 * the loader may be rewriting it: neither an array map update (a plain
 * copy into the value the program reads in place) nor a hash map update
 * (whose freed element the next update may reuse under a reader) is
 * atomic for the program, and a list read half old, half new can name
 * only emptied slots (new count, old entries: seen in tests/steer_churn.c
 * as a packet with nothing selectable). A live set changes one slot, so
 * one bit, so one byte at a time: whatever bytes a racing program reads
 * from old and new, it sees the old set or the new one. A service set may
 * change several bits at once; a racing packet then sees a mix, whose
 * members all belong to the old or the new set (or none, and the packet
 * takes the cpu policy): never a slot outside both. Either way
 * bpf_sk_select_reuseport() accepts only a socket still in the sockarray
 * and in the packet's group, so nothing is dropped or misdelivered; no
 * double buffer (which would need an RCU grace period between updates to
 * be safe) is needed.
 */
#define POPUP_STEER_SET_WORDS	(POPUP_STEER_MAX_SLOTS / 64)

struct popup_steer_slot_set {
	__u64 bits[POPUP_STEER_SET_WORDS];
};

/*
 * Per-CPU, per-slot counters. The extra last row,
 * POPUP_STEER_STATS_NONE, counts events that have no slot.
 */
struct popup_steer_stats {
	__u64 selections;	/* packets/SYNs steered to this slot */
	__u64 fallbacks;	/* of those, placed by the live-slot fallback
				 * because the preferred slot was empty */
	__u64 migrations;	/* TCP children migrated to this slot */
	__u64 errors;		/* bpf_sk_select_reuseport() failed for a
				 * reason other than an empty slot; in the NONE
				 * row: nothing selectable, kernel picked */
};

#define POPUP_STEER_STATS_NONE	POPUP_STEER_MAX_SLOTS
#define POPUP_STEER_STATS_SLOTS	(POPUP_STEER_MAX_SLOTS + 1)

#endif /* POPUP_STEER_H */
