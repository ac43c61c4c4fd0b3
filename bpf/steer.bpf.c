// SPDX-License-Identifier: GPL-2.0
/*
 * popup SO_REUSEPORT steering: choose which worker socket of a reuseport
 * group receives a UDP datagram or a TCP SYN.
 *
 * popupd runs one worker per CPU it was given (a set like 0-2,5, possibly
 * fewer workers than CPUs) and each worker owns one SO_REUSEPORT socket per
 * group (tcp4, udp4, tcp6, udp6). Workers are numbered by slot; the loader
 * (userspace/common/steer.c) fills the maps described in
 * include/popup/steer.h and attaches one of the two programs below to every
 * group with SO_ATTACH_REUSEPORT_EBPF.
 *
 * Policies (steer_config, switchable at run time):
 *   cpu      default. The CPU running the program is the CPU the packet
 *            was received on (the loopback sender's CPU, or the RX queue's
 *            IRQ CPU), so steer_cpu_slot[cpu] names the worker that keeps
 *            the request CPU-local.
 *   hash     md->hash (the 4-tuple hash) over the group's live slots, for
 *            when locality matters less than spreading.
 *   service  UDP only: bytes 8..11 of the popup wire header (service id)
 *            pick a slot set from steer_services, md->hash picks a slot in
 *            it. TCP payload is not visible at SYN time, so TCP and
 *            datagrams without a known service get the cpu policy.
 *
 * Fallback. A CPU may have no worker (or lie beyond steer_cpu_slot, which
 * the loader sizes at load time), or its worker may be restarting (its
 * slot in steer_socks is empty: the kernel removes a socket from a
 * sockarray when it closes). Then the program hashes md->hash over the
 * group's live slots, probing up to POPUP_STEER_MAX_PROBES of them because
 * the live set, kept by userspace, may lag behind a close. If nothing can
 * be selected the program still returns SK_PASS without a selection, and
 * the kernel picks a socket by its own hash: valid traffic is never
 * dropped (SK_DROP would also make TCP answer a SYN with a RST).
 *
 * Migration (steer_migrate, attached as BPF_SK_REUSEPORT_SELECT_OR_MIGRATE).
 * When a TCP listener closes, the kernel offers each child still in its
 * accept queue (and each request socket) to the program with
 * md->migrating_sk set and md->sk the closing listener. By then
 * reuseport_stop_listen_sock() has already detached the closing listener
 * from steer_socks, so selecting its slot fails with -ENOENT and the probe
 * moves on: the closing listener is excluded without a cookie map. The CPU
 * doing the close says nothing about where the connection belongs, so a
 * migration always uses the live-slot hash. Without this attach type the
 * kernel migrates only if net.ipv4.tcp_migrate_req=1 (by its own hash),
 * and otherwise resets those connections. For a new SYN the migrate
 * program behaves exactly like steer_select.
 *
 * Counters go to steer_stats, per CPU and per slot; the extra row
 * POPUP_STEER_STATS_NONE counts packets for which nothing was selectable.
 * A slot's errors count selections the kernel refused for another reason
 * than an empty slot: a socket of another port or protocol put in the
 * sockarray behind the loader's back (the loader refuses such sockets).
 *
 * The slot sets are read while userspace may be rewriting them; why that
 * is harmless is explained at struct popup_steer_slot_set.
 *
 * Detaching (SO_DETACH_REUSEPORT_BPF, popup_steer__detach()) hands the
 * group back to the kernel's hash at once; nothing here depends on being
 * attached.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "popup/steer.h"
#include "popup/wire.h"

/* From <sys/socket.h> and <errno.h>, which are not usable under -target bpf. */
#define AF_INET		2
#define AF_INET6	10
#define ENOENT		2

/* Bytes of the wire header the service policy needs: magic .. service. */
#define STEER_WIRE_PEEK	(POPUP_WIRE_OFF_SERVICE + 4)
#define STEER_WIRE_OFF_VERSION 4

_Static_assert(POPUP_STEER_MAX_SLOTS % 64 == 0,
	       "slot sets are bitmaps of whole 64-bit words");

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct popup_steer_config);
} steer_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, POPUP_STEER_MAX_CPUS);	/* the loader resizes it */
	__type(key, __u32);	/* CPU id */
	__type(value, __u32);	/* slot, or POPUP_STEER_SLOT_NONE */
} steer_cpu_slot SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_REUSEPORT_SOCKARRAY);
	__uint(max_entries, POPUP_STEER_GROUPS * POPUP_STEER_MAX_SLOTS);
	__type(key, __u32);	/* group * POPUP_STEER_MAX_SLOTS + slot */
	__type(value, __u64);	/* fd on update, socket cookie on lookup */
} steer_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, POPUP_STEER_GROUPS);
	__type(key, __u32);	/* enum popup_steer_group */
	__type(value, struct popup_steer_slot_set);
} steer_live SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, POPUP_STEER_MAX_SERVICES);
	__type(key, __u32);	/* wire service id, host order */
	__type(value, struct popup_steer_slot_set);
} steer_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, POPUP_STEER_STATS_SLOTS);
	__type(key, __u32);	/* slot; POPUP_STEER_STATS_NONE = no slot */
	__type(value, struct popup_steer_stats);
} steer_stats SEC(".maps");

enum steer_event {
	EV_SELECTION,
	EV_FALLBACK,
	EV_MIGRATION,
	EV_ERROR,
};

/*
 * Per-CPU rows: the program runs with migration disabled, so plain
 * increments cannot race with another CPU.
 */
static __always_inline void count(__u32 slot, enum steer_event ev)
{
	__u32 key = slot < POPUP_STEER_MAX_SLOTS ? slot : POPUP_STEER_STATS_NONE;
	struct popup_steer_stats *s = bpf_map_lookup_elem(&steer_stats, &key);

	if (!s)
		return;
	switch (ev) {
	case EV_SELECTION:
		s->selections++;
		break;
	case EV_FALLBACK:
		s->selections++;
		s->fallbacks++;
		break;
	case EV_MIGRATION:
		s->migrations++;
		break;
	case EV_ERROR:
		s->errors++;
		break;
	}
}

/* The group is the socket's, not the packet's: see include/popup/steer.h. */
static __always_inline int steer_group(struct sk_reuseport_md *md)
{
	struct bpf_sock *sk = md->sk;
	int v6;

	if (!sk)
		return -1;
	if (sk->family == AF_INET)
		v6 = 0;
	else if (sk->family == AF_INET6)
		v6 = 1;
	else
		return -1;

	if (md->ip_protocol == IPPROTO_TCP)
		return v6 ? POPUP_STEER_G_TCP6 : POPUP_STEER_G_TCP4;
	if (md->ip_protocol == IPPROTO_UDP)
		return v6 ? POPUP_STEER_G_UDP6 : POPUP_STEER_G_UDP4;
	return -1;
}

static __always_inline __u32 steer_policy(void)
{
	__u32 zero = 0;
	struct popup_steer_config *cfg = bpf_map_lookup_elem(&steer_config, &zero);

	if (!cfg || cfg->magic != POPUP_STEER_MAGIC ||
	    cfg->version != POPUP_STEER_VERSION ||
	    cfg->policy >= POPUP_STEER_POLICIES)
		return POPUP_STEER_P_CPU;
	return cfg->policy;
}

/*
 * 0 when @slot's socket of @group is now the selection. -ENOENT (empty
 * slot, or a socket closing) is the expected way for a slot to fail and is
 * not an error; anything else means the loader put a socket of another
 * group or port there.
 */
static __always_inline long select_slot(struct sk_reuseport_md *md, __u32 group,
					__u32 slot)
{
	__u32 key;
	long err;

	if (slot >= POPUP_STEER_MAX_SLOTS)
		return -ENOENT;
	key = group * POPUP_STEER_MAX_SLOTS + slot;
	err = bpf_sk_select_reuseport(md, &steer_socks, &key, 0);
	if (err && err != -ENOENT)
		count(slot, EV_ERROR);
	return err;
}

/* Bits set in @x (SWAR: BPF has no popcount instruction). */
static __always_inline __u32 popcount64(__u64 x)
{
	x = x - ((x >> 1) & 0x5555555555555555ULL);
	x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
	x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
	return (x * 0x0101010101010101ULL) >> 56;
}

/*
 * Position of the @k-th (from 0) set bit of @x, k < popcount64(x): a
 * binary search on the popcount of the low half. Branch-free on purpose:
 * with an if per step the verifier would walk 64 paths per call, each
 * with its own constant position, and a program that probes several
 * slots would near its 1M-instruction limit (seen: 970k, 1.3 s to load).
 * @go is 1 when the k-th bit lies above the low half (k >= c); c <= 64
 * and k < 64, so c + 63 - k neither wraps nor reaches 128.
 */
static __always_inline __u32 nth_bit64(__u64 x, __u32 k)
{
	__u32 pos = 0, c, go;

#define STEER_HALVE(w)							\
	do {								\
		c = popcount64(x & ((1ULL << (w)) - 1));		\
		go = 1 - ((c + 63 - k) >> 6);				\
		k -= c * go;						\
		x >>= (w) * go;						\
		pos += (w) * go;					\
	} while (0)
	STEER_HALVE(32);
	STEER_HALVE(16);
	STEER_HALVE(8);
	STEER_HALVE(4);
	STEER_HALVE(2);
	STEER_HALVE(1);
#undef STEER_HALVE
	return pos;
}

/* The @k-th member of the set in words @w (k < its size), as a slot. */
static __always_inline __u32 nth_slot(const __u64 *w, __u32 k)
{
	for (__u32 i = 0; i < POPUP_STEER_SET_WORDS; i++) {
		__u32 c = popcount64(w[i]);

		if (k < c)
			return i * 64 + nth_bit64(w[i], k);
		k -= c;
	}
	return POPUP_STEER_SLOT_NONE;
}

/*
 * Map @hash onto @set's members and probe forward from there: stable for
 * a given hash while the set does not change, and skipping slots that
 * emptied since userspace last wrote the set.
 */
static __always_inline __u32 select_from_set(struct sk_reuseport_md *md, __u32 group,
					     const struct popup_steer_slot_set *set,
					     __u32 hash)
{
	__u64 w[POPUP_STEER_SET_WORDS];
	__u32 n = 0, start, i;

	/* each word read once: userspace may rewrite the set under us */
	for (i = 0; i < POPUP_STEER_SET_WORDS; i++) {
		w[i] = *(volatile const __u64 *)&set->bits[i];
		n += popcount64(w[i]);
	}
	if (!n)
		return POPUP_STEER_SLOT_NONE;
	/* reciprocal_scale(), as the kernel's own reuseport hash does */
	start = (__u32)(((__u64)hash * n) >> 32);
	for (i = 0; i < POPUP_STEER_MAX_PROBES && i < n; i++) {
		__u32 k = start + i;
		__u32 slot;

		if (k >= n)
			k -= n;
		slot = nth_slot(w, k);
		if (!select_slot(md, group, slot))
			return slot;
	}
	return POPUP_STEER_SLOT_NONE;
}

static __always_inline __u32 select_live(struct sk_reuseport_md *md, __u32 group)
{
	struct popup_steer_slot_set *live = bpf_map_lookup_elem(&steer_live, &group);

	if (!live)
		return POPUP_STEER_SLOT_NONE;
	return select_from_set(md, group, live, md->hash);
}

/*
 * The service id of a popup wire request in a UDP payload, or -1 when the
 * datagram is too short or not popup wire protocol. md->data starts at the
 * UDP header, and only the helper may read past the linear part.
 */
static __always_inline __s64 wire_service(struct sk_reuseport_md *md)
{
	__u8 hdr[STEER_WIRE_PEEK];
	__u32 magic, service;

	if (md->len < sizeof(struct udphdr) + STEER_WIRE_PEEK)
		return -1;
	if (bpf_skb_load_bytes(md, sizeof(struct udphdr), hdr, sizeof(hdr)))
		return -1;
	__builtin_memcpy(&magic, hdr, sizeof(magic));
	__builtin_memcpy(&service, hdr + POPUP_WIRE_OFF_SERVICE, sizeof(service));
	if (bpf_ntohl(magic) != POPUP_WIRE_MAGIC ||
	    hdr[STEER_WIRE_OFF_VERSION] != POPUP_WIRE_VERSION)
		return -1;
	return bpf_ntohl(service);
}

/* Slot for a UDP request under the service policy, or SLOT_NONE. */
static __always_inline __u32 select_service(struct sk_reuseport_md *md, __u32 group)
{
	struct popup_steer_slot_set *set;
	__s64 svc;
	__u32 key;

	if (md->ip_protocol != IPPROTO_UDP)
		return POPUP_STEER_SLOT_NONE;
	svc = wire_service(md);
	if (svc < 0)
		return POPUP_STEER_SLOT_NONE;
	key = (__u32)svc;
	set = bpf_map_lookup_elem(&steer_services, &key);
	if (!set)
		return POPUP_STEER_SLOT_NONE;
	return select_from_set(md, group, set, md->hash);
}

static __always_inline __u32 select_cpu(struct sk_reuseport_md *md, __u32 group)
{
	__u32 cpu = bpf_get_smp_processor_id();
	__u32 *slot = bpf_map_lookup_elem(&steer_cpu_slot, &cpu);

	if (!slot || *slot == POPUP_STEER_SLOT_NONE)
		return POPUP_STEER_SLOT_NONE;
	return select_slot(md, group, *slot) ? POPUP_STEER_SLOT_NONE : *slot;
}

/* A new SYN or datagram: the policy's choice, else the live-slot fallback. */
static __always_inline int steer_new(struct sk_reuseport_md *md, __u32 group)
{
	__u32 policy = steer_policy();
	__u32 slot = POPUP_STEER_SLOT_NONE;

	if (policy == POPUP_STEER_P_HASH) {
		slot = select_live(md, group);
		count(slot, slot == POPUP_STEER_SLOT_NONE ? EV_ERROR : EV_SELECTION);
		return SK_PASS;
	}
	if (policy == POPUP_STEER_P_SERVICE)
		slot = select_service(md, group);
	if (slot == POPUP_STEER_SLOT_NONE)
		slot = select_cpu(md, group);
	if (slot != POPUP_STEER_SLOT_NONE) {
		count(slot, EV_SELECTION);
		return SK_PASS;
	}
	slot = select_live(md, group);
	count(slot, slot == POPUP_STEER_SLOT_NONE ? EV_ERROR : EV_FALLBACK);
	return SK_PASS;
}

SEC("sk_reuseport")
int steer_select(struct sk_reuseport_md *md)
{
	int group = steer_group(md);

	if (group < 0) {
		count(POPUP_STEER_SLOT_NONE, EV_ERROR);
		return SK_PASS;
	}
	return steer_new(md, group);
}

SEC("sk_reuseport/migrate")
int steer_migrate(struct sk_reuseport_md *md)
{
	int group = steer_group(md);
	__u32 slot;

	if (group < 0) {
		count(POPUP_STEER_SLOT_NONE, EV_ERROR);
		return SK_PASS;
	}
	if (!md->migrating_sk)
		return steer_new(md, group);

	slot = select_live(md, group);
	count(slot, slot == POPUP_STEER_SLOT_NONE ? EV_ERROR : EV_MIGRATION);
	return SK_PASS;
}
