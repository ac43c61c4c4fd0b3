// SPDX-License-Identifier: GPL-2.0
/*
 * Loader for the SO_REUSEPORT steering program: opens and loads the
 * skeleton, pins it, keeps the slot maps in step with the worker sockets
 * popupd hands over, and reads the counters back (from the skeleton or,
 * for popupctl, from the pins alone). The map layout and the program's
 * logic are described in include/popup/steer.h and bpf/steer.bpf.c.
 *
 * The library mirrors in memory which socket (by cookie, and the fd it was
 * handed as) sits in each slot of each group, so that the live-slot lists
 * it writes for the BPF fallback never depend on reading a sockarray back,
 * and so that destroy can detach the program from the groups of sockets
 * the caller still holds. The cookie is what identifies a socket: an fd
 * number is only used again after checking that it still names the socket
 * with that cookie, since the caller may have closed it and the number
 * been reused.
 *
 * Not thread-safe: popupd calls it from its main thread only.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>
#include <netinet/in.h>
#include <linux/magic.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "log.h"
#include "steer.h"
#include "steer.skel.h"

#define BPFFS_ROOT	"/sys/fs/bpf"

struct steer_group_state {
	__u64 cookie[POPUP_STEER_MAX_SLOTS];	/* 0: slot empty */
	int fd[POPUP_STEER_MAX_SLOTS];		/* as handed to add_socket */
	unsigned int nr;			/* non-empty slots */
	/* Local address of the reuseport group, valid while @nr > 0. */
	struct sockaddr_storage addr;
	socklen_t addrlen;
};

struct popup_steer {
	struct steer_bpf *skel;
	struct bpf_program *prog;	/* the one attached to groups */
	char pin_dir[PATH_MAX];		/* "" when not pinned */
	int lock_fd;			/* flock()ed pin dir, or -1 */
	unsigned int nr_cpu_slots;	/* entries of steer_cpu_slot */
	struct steer_group_state groups[POPUP_STEER_GROUPS];
};

static const char *const policy_names[POPUP_STEER_POLICIES] = {
	[POPUP_STEER_P_CPU] = "cpu",
	[POPUP_STEER_P_HASH] = "hash",
	[POPUP_STEER_P_SERVICE] = "service",
};

static const char *const group_names[POPUP_STEER_GROUPS] = {
	[POPUP_STEER_G_TCP4] = "tcp4",
	[POPUP_STEER_G_UDP4] = "udp4",
	[POPUP_STEER_G_TCP6] = "tcp6",
	[POPUP_STEER_G_UDP6] = "udp6",
};

/* Names pinned under the pin dir: every map and program of the object. */
static const char *const pin_names[] = {
	"steer_config", "steer_cpu_slot", "steer_socks", "steer_live",
	"steer_services", "steer_stats", "steer_select", "steer_migrate",
};

const char *popup_steer_policy_name(enum popup_steer_policy policy)
{
	return (unsigned int)policy < POPUP_STEER_POLICIES ? policy_names[policy] : "?";
}

int popup_steer_parse_policy(const char *s, enum popup_steer_policy *out)
{
	for (unsigned int i = 0; i < POPUP_STEER_POLICIES; i++) {
		if (!strcmp(s, policy_names[i])) {
			*out = i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *popup_steer_group_name(enum popup_steer_group group)
{
	return (unsigned int)group < POPUP_STEER_GROUPS ? group_names[group] : "?";
}

/* Log "steer: <what>: -EXXX (text)[: why]" and hand @err back. */
static int steer_fail(int err, const char *why, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int steer_fail(int err, const char *why, const char *fmt, ...)
{
	const char *name = strerrorname_np(-err);
	char what[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	pr_err("steer: %s: -%s (%s)%s%s", what, name ? name : "?", strerror(-err),
	       why ? ": " : "", why ? why : "");
	return err;
}

/* ---- pinning ---------------------------------------------------------- */

static bool is_bpffs(const char *path)
{
	struct statfs sfs;

	return !statfs(path, &sfs) && sfs.f_type == BPF_FS_MAGIC;
}

/* systemd mounts bpffs, but a container or a bare test VM may not have. */
static int ensure_bpffs(const char *dir)
{
	if (strncmp(dir, BPFFS_ROOT "/", sizeof(BPFFS_ROOT)) || is_bpffs(BPFFS_ROOT))
		return 0;
	if (mount("bpf", BPFFS_ROOT, "bpf", 0, "mode=0700"))
		return steer_fail(-errno, "cannot mount bpffs to pin on", "mount %s",
				  BPFFS_ROOT);
	return 0;
}

static int mkdir_p(const char *dir)
{
	char buf[PATH_MAX];
	size_t len = strlen(dir);

	if (len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, dir, len + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0700) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, 0700) && errno != EEXIST)
		return -errno;
	return 0;
}

static int pin_path(char *buf, size_t size, const char *dir, const char *name)
{
	int n = snprintf(buf, size, "%s/%s", dir, name);

	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

static void unpin_all(const char *dir)
{
	char path[PATH_MAX];

	for (size_t i = 0; i < sizeof(pin_names) / sizeof(pin_names[0]); i++) {
		if (!pin_path(path, sizeof(path), dir, pin_names[i]))
			unlink(path);
	}
}

/*
 * The flock on the pin dir tells a stale dir (its owner died, the lock
 * went with it) from one a running popupd still serves: only the former
 * may be cleared and re-pinned.
 */
static int lock_pin_dir(struct popup_steer *st, const char *dir)
{
	int err;

	err = ensure_bpffs(dir);
	if (err)
		return err;
	err = mkdir_p(dir);
	if (err)
		return steer_fail(err, NULL, "mkdir %s", dir);
	if (!is_bpffs(dir))
		return steer_fail(-EINVAL, "pin dir must be on bpffs", "pin dir %s", dir);
	st->lock_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (st->lock_fd < 0)
		return steer_fail(-errno, NULL, "open %s", dir);
	if (flock(st->lock_fd, LOCK_EX | LOCK_NB)) {
		err = errno == EWOULDBLOCK ? -EBUSY : -errno;
		return steer_fail(err, "another live process owns these pins", "lock %s", dir);
	}
	return 0;
}

static int pin_all(struct popup_steer *st, const char *dir)
{
	struct bpf_program *prog;
	struct bpf_map *map;
	char path[PATH_MAX];
	int err;

	err = lock_pin_dir(st, dir);
	if (err)
		return err;
	unpin_all(dir);
	snprintf(st->pin_dir, sizeof(st->pin_dir), "%s", dir);

	bpf_object__for_each_map(map, st->skel->obj) {
		/* .bss/.rodata and friends have no use outside the object */
		if (bpf_map__is_internal(map))
			continue;
		err = pin_path(path, sizeof(path), dir, bpf_map__name(map));
		if (!err)
			err = bpf_map__pin(map, path);
		if (err)
			return steer_fail(err, NULL, "pin map %s", path);
	}
	bpf_object__for_each_program(prog, st->skel->obj) {
		err = pin_path(path, sizeof(path), dir, bpf_program__name(prog));
		if (!err)
			err = bpf_program__pin(prog, path);
		if (err)
			return steer_fail(err, NULL, "pin program %s", path);
	}
	return 0;
}

/* ---- map updates ------------------------------------------------------ */

static int write_config(int fd, enum popup_steer_policy policy)
{
	struct popup_steer_config cfg = {
		.magic = POPUP_STEER_MAGIC,
		.version = POPUP_STEER_VERSION,
		.policy = policy,
	};
	__u32 zero = 0;

	if ((unsigned int)policy >= POPUP_STEER_POLICIES)
		return steer_fail(-EINVAL, "policy is cpu, hash or service",
				  "policy %d", policy);
	if (bpf_map_update_elem(fd, &zero, &cfg, BPF_ANY))
		return steer_fail(-errno, NULL, "update steer_config");
	return 0;
}

/* An array map starts zeroed, which would send every CPU to slot 0. */
static int clear_cpu_slots(struct popup_steer *st)
{
	int fd = bpf_map__fd(st->skel->maps.steer_cpu_slot);
	__u32 none = POPUP_STEER_SLOT_NONE;

	for (__u32 cpu = 0; cpu < st->nr_cpu_slots; cpu++) {
		if (bpf_map_update_elem(fd, &cpu, &none, BPF_ANY))
			return steer_fail(-errno, NULL, "update steer_cpu_slot");
	}
	return 0;
}

static void slot_set_add(struct popup_steer_slot_set *set, unsigned int slot)
{
	set->bits[slot / 64] |= 1ULL << (slot % 64);
}

/*
 * Rewritten whole, but a slot joining or leaving changes one bit, which
 * is what makes the update safe for a program reading the set meanwhile
 * (see struct popup_steer_slot_set).
 */
static int write_live(struct popup_steer *st, enum popup_steer_group group)
{
	const struct steer_group_state *g = &st->groups[group];
	struct popup_steer_slot_set set = { 0 };
	__u32 key = group;

	for (__u32 slot = 0; slot < POPUP_STEER_MAX_SLOTS; slot++) {
		if (g->cookie[slot])
			slot_set_add(&set, slot);
	}
	if (bpf_map_update_elem(bpf_map__fd(st->skel->maps.steer_live), &key, &set, BPF_ANY))
		return steer_fail(-errno, NULL, "update steer_live[%s]", group_names[group]);
	return 0;
}

int popup_steer__set_policy(struct popup_steer *st, enum popup_steer_policy policy)
{
	return write_config(bpf_map__fd(st->skel->maps.steer_config), policy);
}

int popup_steer__set_cpu_slot(struct popup_steer *st, unsigned int cpu, unsigned int slot)
{
	__u32 key = cpu, val = slot;

	if (cpu >= st->nr_cpu_slots)
		return steer_fail(-ERANGE, "CPU id beyond the steer_cpu_slot map (opts.max_cpus); that CPU's traffic takes the fallback",
				  "set_cpu_slot cpu %u of %u", cpu, st->nr_cpu_slots);
	if (slot >= POPUP_STEER_MAX_SLOTS && slot != POPUP_STEER_SLOT_NONE)
		return steer_fail(-ERANGE, "slot above POPUP_STEER_MAX_SLOTS",
				  "set_cpu_slot slot %u", slot);
	if (bpf_map_update_elem(bpf_map__fd(st->skel->maps.steer_cpu_slot), &key, &val, BPF_ANY))
		return steer_fail(-errno, NULL, "update steer_cpu_slot[%u]", cpu);
	return 0;
}

int popup_steer__set_service(struct popup_steer *st, __u32 service,
			     const unsigned int *slots, unsigned int n)
{
	int fd = bpf_map__fd(st->skel->maps.steer_services);
	struct popup_steer_slot_set set = { 0 };

	if (!n) {
		if (bpf_map_delete_elem(fd, &service) && errno != ENOENT)
			return steer_fail(-errno, NULL, "delete steer_services[%u]", service);
		return 0;
	}
	if (n > POPUP_STEER_MAX_SLOTS)
		return steer_fail(-E2BIG, "more slots than POPUP_STEER_MAX_SLOTS",
				  "set_service %u", service);
	for (unsigned int i = 0; i < n; i++) {
		if (slots[i] >= POPUP_STEER_MAX_SLOTS)
			return steer_fail(-ERANGE, NULL, "set_service %u slot %u",
					  service, slots[i]);
		slot_set_add(&set, slots[i]);
	}
	if (bpf_map_update_elem(fd, &service, &set, BPF_ANY)) {
		int err = -errno;

		return steer_fail(err, err == -E2BIG ?
				  "at most POPUP_STEER_MAX_SERVICES services" : NULL,
				  "update steer_services[%u]", service);
	}
	return 0;
}

/* ---- sockets ---------------------------------------------------------- */

static int sockopt_int(int fd, int level, int name, int *val)
{
	socklen_t len = sizeof(*val);

	return getsockopt(fd, level, name, val, &len) ? -errno : 0;
}

static int socket_group(int fd, enum popup_steer_group *group)
{
	int domain, proto, err;

	err = sockopt_int(fd, SOL_SOCKET, SO_DOMAIN, &domain);
	if (!err)
		err = sockopt_int(fd, SOL_SOCKET, SO_PROTOCOL, &proto);
	if (err)
		return steer_fail(err, err == -ENOTSOCK ? "not a socket" : NULL,
				  "getsockopt fd %d", fd);
	if (domain != AF_INET && domain != AF_INET6)
		return steer_fail(-EAFNOSUPPORT, "only AF_INET and AF_INET6 are steered",
				  "fd %d", fd);
	if (proto == IPPROTO_TCP)
		*group = domain == AF_INET ? POPUP_STEER_G_TCP4 : POPUP_STEER_G_TCP6;
	else if (proto == IPPROTO_UDP)
		*group = domain == AF_INET ? POPUP_STEER_G_UDP4 : POPUP_STEER_G_UDP6;
	else
		return steer_fail(-EPROTONOSUPPORT, "only TCP and UDP are steered",
				  "fd %d", fd);
	return 0;
}

static int socket_cookie(int fd, __u64 *cookie)
{
	socklen_t len = sizeof(*cookie);

	if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, cookie, &len))
		return steer_fail(-errno, NULL, "getsockopt SO_COOKIE fd %d", fd);
	return 0;
}

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	const struct sockaddr_in6 *a6 = (const void *)a, *b6 = (const void *)b;
	const struct sockaddr_in *a4 = (const void *)a, *b4 = (const void *)b;

	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET)
		return a4->sin_port == b4->sin_port &&
		       a4->sin_addr.s_addr == b4->sin_addr.s_addr;
	return a6->sin6_port == b6->sin6_port &&
	       !memcmp(&a6->sin6_addr, &b6->sin6_addr, sizeof(a6->sin6_addr));
}

/*
 * What the kernel would refuse later, refused now with a reason: the
 * sockarray takes only hashed SO_REUSEPORT sockets, and a slot range can
 * hold one reuseport group only.
 */
static int check_socket(struct popup_steer *st, int fd, enum popup_steer_group group,
			struct sockaddr_storage *addr, socklen_t *addrlen)
{
	const struct steer_group_state *g = &st->groups[group];
	int reuse = 0, listening = 0, err;

	err = sockopt_int(fd, SOL_SOCKET, SO_REUSEPORT, &reuse);
	if (err || !reuse)
		return steer_fail(err ? err : -EINVAL, "set SO_REUSEPORT before bind()",
				  "fd %d", fd);
	*addrlen = sizeof(*addr);
	if (getsockname(fd, (struct sockaddr *)addr, addrlen))
		return steer_fail(-errno, NULL, "getsockname fd %d", fd);
	/* sin_port and sin6_port share their offset */
	if (((struct sockaddr_in *)addr)->sin_port == 0)
		return steer_fail(-EINVAL, "socket must be bound before it joins the sockarray",
				  "fd %d", fd);
	if (group == POPUP_STEER_G_TCP4 || group == POPUP_STEER_G_TCP6) {
		err = sockopt_int(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening);
		if (err || !listening)
			return steer_fail(err ? err : -EINVAL,
					  "TCP socket must be listening before it joins the sockarray",
					  "fd %d", fd);
	}
	if (g->nr && !same_addr(addr, &g->addr))
		return steer_fail(-EBADFD, "bound to another address than the group's sockets; one reuseport group per protocol and family",
				  "fd %d (%s)", fd, group_names[group]);
	return 0;
}

/*
 * SO_DETACH_REUSEPORT_BPF: clears the program of @fd's whole group. The
 * value is ignored, but sk_setsockopt() wants an int's worth of it.
 */
static int detach_fd(int fd)
{
	int zero = 0;

	return setsockopt(fd, SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, &zero, sizeof(zero)) ? -errno : 0;
}

/* SO_ATTACH_REUSEPORT_EBPF: sets the program of @fd's whole group. */
static int attach_prog(struct popup_steer *st, int fd)
{
	int prog_fd = bpf_program__fd(st->prog);

	if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &prog_fd, sizeof(prog_fd)))
		return steer_fail(-errno, NULL, "SO_ATTACH_REUSEPORT_EBPF fd %d", fd);
	return 0;
}

static int update_sock(struct popup_steer *st, enum popup_steer_group group,
		       unsigned int slot, int fd)
{
	__u32 key = group * POPUP_STEER_MAX_SLOTS + slot;
	__u64 val = fd;
	int err;

	if (!bpf_map_update_elem(bpf_map__fd(st->skel->maps.steer_socks), &key, &val, BPF_ANY))
		return 0;
	err = -errno;
	/* -EBUSY is reported by the caller, which knows whether it is one */
	if (err != -EBUSY)
		steer_fail(err, err == -EINVAL ?
			   "socket not hashed (TCP: not listening; UDP: not bound) or not SO_REUSEPORT" :
			   NULL,
			   "steer_socks[%s slot %u] = fd %d", group_names[group], slot, fd);
	return err;
}

int popup_steer__add_socket(struct popup_steer *st, int fd, unsigned int slot)
{
	struct sockaddr_storage addr;
	struct steer_group_state *g;
	enum popup_steer_group group;
	socklen_t addrlen;
	bool readd;
	__u64 cookie;
	int err;

	if (slot >= POPUP_STEER_MAX_SLOTS)
		return steer_fail(-ERANGE, "slot above POPUP_STEER_MAX_SLOTS",
				  "add_socket fd %d slot %u", fd, slot);
	err = socket_group(fd, &group);
	if (!err)
		err = check_socket(st, fd, group, &addr, &addrlen);
	if (!err)
		err = socket_cookie(fd, &cookie);
	if (err)
		return err;
	g = &st->groups[group];
	readd = g->cookie[slot] == cookie;

	/*
	 * Attach on every add, re-adds included: if all of a group's sockets
	 * closed, the kernel dissolved the group and its program with it,
	 * and someone may have detached the program at run time
	 * (SO_DETACH_REUSEPORT_BPF, popup_steer__detach()). Re-attaching
	 * the same program is harmless, so a re-add is how steering is
	 * restored.
	 */
	err = attach_prog(st, fd);
	if (err)
		return err;
	err = update_sock(st, group, slot, fd);
	/*
	 * A re-add usually finds the socket still in its slot; if it was
	 * replaced behind our back, the update has just put it back.
	 */
	if (err == -EBUSY && readd)
		err = 0;
	if (err) {
		/* Leave no program on a group we do not steer yet. */
		if (!g->nr)
			detach_fd(fd);
		if (err == -EBUSY)
			steer_fail(err, "socket already sits in a sockarray slot; remove it first",
				   "steer_socks[%s slot %u] = fd %d", group_names[group], slot, fd);
		return err;
	}
	if (!readd) {
		if (!g->cookie[slot])
			g->nr++;
		g->cookie[slot] = cookie;
	}
	g->fd[slot] = fd;
	g->addr = addr;
	g->addrlen = addrlen;
	return write_live(st, group);
}

int popup_steer__remove_slot(struct popup_steer *st, enum popup_steer_group group,
			     unsigned int slot)
{
	struct steer_group_state *g;
	__u32 key;

	if ((unsigned int)group >= POPUP_STEER_GROUPS || slot >= POPUP_STEER_MAX_SLOTS)
		return steer_fail(-ERANGE, NULL, "remove_slot group %d slot %u", group, slot);
	g = &st->groups[group];
	key = group * POPUP_STEER_MAX_SLOTS + slot;
	/* -ENOENT: the socket closed and the kernel already emptied the slot */
	if (bpf_map_delete_elem(bpf_map__fd(st->skel->maps.steer_socks), &key) &&
	    errno != ENOENT)
		return steer_fail(-errno, NULL, "delete steer_socks[%s slot %u]",
				  group_names[group], slot);
	if (!g->cookie[slot])
		return -ENOENT;
	g->cookie[slot] = 0;
	g->nr--;
	return write_live(st, group);
}

int popup_steer__remove_socket(struct popup_steer *st, int fd)
{
	enum popup_steer_group group;
	__u64 cookie;
	int err;

	err = socket_group(fd, &group);
	if (!err)
		err = socket_cookie(fd, &cookie);
	if (err)
		return err;
	for (unsigned int slot = 0; slot < POPUP_STEER_MAX_SLOTS; slot++) {
		if (st->groups[group].cookie[slot] == cookie)
			return popup_steer__remove_slot(st, group, slot);
	}
	return -ENOENT;
}

/*
 * A UDP socket's own address with port 1, loopback for a wildcard bind: a
 * peer no client can be (ports below 1024 are never ephemeral).
 */
static int dead_peer(int fd, struct sockaddr_storage *ss, socklen_t *len)
{
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
	struct sockaddr_in *a4 = (struct sockaddr_in *)ss;

	*len = sizeof(*ss);
	if (getsockname(fd, (struct sockaddr *)ss, len))
		return -errno;
	if (ss->ss_family == AF_INET) {
		if (a4->sin_addr.s_addr == htonl(INADDR_ANY))
			a4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		a4->sin_port = htons(1);
	} else {
		if (IN6_IS_ADDR_UNSPECIFIED(&a6->sin6_addr))
			a6->sin6_addr = in6addr_loopback;
		a6->sin6_port = htons(1);
	}
	return 0;
}

int popup_steer__retire_socket(struct popup_steer *st, int fd)
{
	struct sockaddr_storage peer;
	enum popup_steer_group group;
	socklen_t len;
	int err;

	err = popup_steer__remove_socket(st, fd);
	if (err)
		return err;
	err = socket_group(fd, &group);
	if (err || group == POPUP_STEER_G_TCP4 || group == POPUP_STEER_G_TCP6)
		return err;
	/*
	 * udp_lib_unhash() takes a closing socket out of its reuseport
	 * group before it takes it out of the hash table: a lookup in
	 * between sees a plain socket that matches as well as the group's
	 * and may hand it a datagram the close then drops. Connected to a
	 * dead peer, the socket matches no client's datagram any more.
	 */
	err = dead_peer(fd, &peer, &len);
	if (!err && connect(fd, (struct sockaddr *)&peer, len))
		err = -errno;
	if (err)
		return steer_fail(err, "it is out of steering, but the kernel may still pick it",
				  "retire fd %d: connect to a dead peer", fd);
	return 0;
}

/* ---- lifetime --------------------------------------------------------- */

/*
 * One entry per possible CPU, and never fewer than POPUP_STEER_MAX_CPUS so
 * that the map's size does not depend on the host; @max_cpus overrides it
 * (tests use a map smaller than the CPU count).
 */
static int size_cpu_slots(struct popup_steer *st, unsigned int max_cpus)
{
	int possible = libbpf_num_possible_cpus();
	int err;

	if (!max_cpus) {
		if (possible < 0)
			return steer_fail(possible, NULL, "count possible CPUs");
		max_cpus = (unsigned int)possible > POPUP_STEER_MAX_CPUS ?
			   (unsigned int)possible : POPUP_STEER_MAX_CPUS;
	}
	err = bpf_map__set_max_entries(st->skel->maps.steer_cpu_slot, max_cpus);
	if (err)
		return steer_fail(err, NULL, "size steer_cpu_slot to %u", max_cpus);
	st->nr_cpu_slots = max_cpus;
	return 0;
}

static int load(struct popup_steer *st, const struct popup_steer_opts *opts)
{
	int err;

	st->skel = steer_bpf__open();
	if (!st->skel)
		return steer_fail(-errno, NULL, "open BPF object");
	err = size_cpu_slots(st, opts->max_cpus);
	if (err)
		return err;
	err = steer_bpf__load(st->skel);
	if (err)
		return steer_fail(err, err == -EPERM ?
				  "loading BPF needs CAP_BPF and CAP_NET_ADMIN (run as root)" :
				  "the verifier log above says why",
				  "load steer.bpf.o");
	st->prog = opts->migrate ? st->skel->progs.steer_migrate : st->skel->progs.steer_select;

	err = write_config(bpf_map__fd(st->skel->maps.steer_config), opts->policy);
	if (!err)
		err = clear_cpu_slots(st);
	for (int group = 0; !err && group < POPUP_STEER_GROUPS; group++)
		err = write_live(st, group);
	return err;
}

int popup_steer__open(struct popup_steer **out, const struct popup_steer_opts *opts)
{
	static const struct popup_steer_opts defaults = {
		.pin_dir = POPUP_STEER_PIN_DIR,
		.policy = POPUP_STEER_P_CPU,
		.migrate = true,
	};
	struct popup_steer *st;
	int err;

	*out = NULL;
	if (!opts)
		opts = &defaults;
	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->lock_fd = -1;

	err = load(st, opts);
	if (!err && opts->pin_dir && opts->pin_dir[0])
		err = pin_all(st, opts->pin_dir);
	if (err) {
		popup_steer__destroy(st);
		return err;
	}
	*out = st;
	return 0;
}

/*
 * True if @fd still names the socket with @cookie: the caller may have
 * closed it since add_socket, and the number been reused for another
 * socket or file.
 */
static bool same_socket(int fd, __u64 cookie)
{
	socklen_t len = sizeof(__u64);
	__u64 now;

	return fd >= 0 && !getsockopt(fd, SOL_SOCKET, SO_COOKIE, &now, &len) && now == cookie;
}

/*
 * The kernel keeps one program per reuseport group, so one socket per
 * group is enough; -ENOENT (no program any more) counts as done.
 */
static int detach_group(struct popup_steer *st, enum popup_steer_group group)
{
	const struct steer_group_state *g = &st->groups[group];
	int err = 0;

	for (unsigned int slot = 0; slot < POPUP_STEER_MAX_SLOTS; slot++) {
		if (!g->cookie[slot] || !same_socket(g->fd[slot], g->cookie[slot]))
			continue;
		err = detach_fd(g->fd[slot]);
		if (!err || err == -ENOENT)
			return 0;
		steer_fail(err, NULL, "SO_DETACH_REUSEPORT_BPF fd %d (%s)",
			   g->fd[slot], group_names[group]);
	}
	return err;
}

/*
 * Take every socket out of steer_socks now: the map itself is freed
 * only after its last reference goes, later, and until then the kernel
 * would refuse those sockets in another loader's sockarray (-EBUSY).
 */
static void clear_socks(struct popup_steer *st)
{
	int fd = bpf_map__fd(st->skel->maps.steer_socks);

	/* not loaded: open failed early */
	if (fd < 0)
		return;
	for (__u32 key = 0; key < POPUP_STEER_GROUPS * POPUP_STEER_MAX_SLOTS; key++)
		bpf_map_delete_elem(fd, &key);
}

int popup_steer__detach(struct popup_steer *st)
{
	int err = 0;

	for (int group = 0; group < POPUP_STEER_GROUPS; group++) {
		int e = detach_group(st, group);

		if (!err)
			err = e;
	}
	return err;
}

void popup_steer__destroy(struct popup_steer *st)
{
	if (!st)
		return;
	if (st->skel) {
		popup_steer__detach(st);
		clear_socks(st);
	}
	if (st->pin_dir[0]) {
		unpin_all(st->pin_dir);
		/* fails harmlessly if someone else put files there */
		rmdir(st->pin_dir);
	}
	if (st->lock_fd >= 0)
		close(st->lock_fd);
	steer_bpf__destroy(st->skel);
	free(st);
}

/* ---- counters --------------------------------------------------------- */

void popup_steer_stats_table__free(struct popup_steer_stats_table *t)
{
	if (!t)
		return;
	free(t->rows);
	t->rows = NULL;
	t->nr_cpus = 0;
}

void popup_steer_stats_sum(const struct popup_steer_stats_table *t, unsigned int slot,
			   struct popup_steer_stats *sum)
{
	memset(sum, 0, sizeof(*sum));
	for (unsigned int cpu = 0; cpu < t->nr_cpus; cpu++) {
		const struct popup_steer_stats *s = popup_steer_stats_at(t, slot, cpu);

		sum->selections += s->selections;
		sum->fallbacks += s->fallbacks;
		sum->migrations += s->migrations;
		sum->errors += s->errors;
	}
}

/* A pin may come from another build: refuse a layout we would misread. */
static int check_stats_map(int fd)
{
	struct bpf_map_info info = { 0 };
	__u32 len = sizeof(info);

	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		return steer_fail(-errno, NULL, "get steer_stats info");
	if (info.type != BPF_MAP_TYPE_PERCPU_ARRAY ||
	    info.value_size != sizeof(struct popup_steer_stats) ||
	    info.max_entries != POPUP_STEER_STATS_SLOTS)
		return steer_fail(-EPROTO, "pinned map has another layout (another popup version?)",
				  "steer_stats");
	return 0;
}

static int read_stats_fd(int fd, struct popup_steer_stats_table *t)
{
	int nr = libbpf_num_possible_cpus();

	t->rows = NULL;
	t->nr_cpus = 0;
	if (nr < 0)
		return steer_fail(nr, NULL, "count possible CPUs");
	t->rows = calloc((size_t)POPUP_STEER_STATS_SLOTS * nr, sizeof(*t->rows));
	if (!t->rows)
		return -ENOMEM;
	t->nr_cpus = nr;
	/* value_size is a multiple of 8, so per-CPU values are packed */
	for (__u32 slot = 0; slot < POPUP_STEER_STATS_SLOTS; slot++) {
		if (bpf_map_lookup_elem(fd, &slot, &t->rows[(size_t)slot * nr])) {
			int err = -errno;

			popup_steer_stats_table__free(t);
			return steer_fail(err, NULL, "lookup steer_stats[%u]", slot);
		}
	}
	return 0;
}

int popup_steer__read_stats(const struct popup_steer *st, struct popup_steer_stats_table *t)
{
	return read_stats_fd(bpf_map__fd(st->skel->maps.steer_stats), t);
}

static int open_pinned(const char *pin_dir, const char *name)
{
	char path[PATH_MAX];
	int fd;

	if (pin_path(path, sizeof(path), pin_dir ? pin_dir : POPUP_STEER_PIN_DIR, name))
		return -ENAMETOOLONG;
	fd = bpf_obj_get(path);
	if (fd < 0)
		return steer_fail(-errno, errno == ENOENT ? "is popupd running with steering?" : NULL,
				  "open %s", path);
	return fd;
}

int popup_steer__read_stats_pinned(const char *pin_dir, struct popup_steer_stats_table *t)
{
	int fd, err;

	fd = open_pinned(pin_dir, "steer_stats");
	if (fd < 0)
		return fd;
	err = check_stats_map(fd);
	if (!err)
		err = read_stats_fd(fd, t);
	close(fd);
	return err;
}

int popup_steer__set_policy_pinned(const char *pin_dir, enum popup_steer_policy policy)
{
	int fd, err;

	fd = open_pinned(pin_dir, "steer_config");
	if (fd < 0)
		return fd;
	err = write_config(fd, policy);
	close(fd);
	return err;
}
