// SPDX-License-Identifier: LGPL-2.1 OR BSD-2-Clause
/*
 * disk: block reads of files under one directory, with an emulated device
 * latency; the sub-server the files service reads blocks through.
 *
 *   read  "OFFSET LENGTH PATH"  -> up to LENGTH bytes of PATH from OFFSET
 *                                  (fewer at the end of the file)
 *   size  "PATH"                -> the file's size, in decimal
 *
 * Configuration ([service.disk]):
 *   root       = DIR   the tree it serves (required)
 *   latency_us = N     added to every read and size, default 1000: an
 *                      EMULATED device latency (a sleep, not real I/O;
 *                      the data comes from the page cache), so that the
 *                      gain of overlapping reads is visible on any disk.
 *                      0 turns it off.
 *   fail       = 1     every read (not size) fails with -EIO, for tests
 *                      of callers' error paths
 *
 * PATH is confined to the root as in files: no absolute paths, no "..",
 * no NULs, and openat2(RESOLVE_BENEATH) refuses symlinks out of the tree
 * (no O_NOFOLLOW fallback here: without openat2 every open is refused).
 * Reads block their handler thread for the latency, so the pool is wide
 * (32 threads, 8 kept) to serve many reads at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "popup/service.h"
#include "svc_util.h"

#define BLOCK_MAX	(64U << 10)	/* fits libpopup's user backend */

struct disk {
	int root;			/* O_PATH directory descriptor */
	uint32_t latency_us;
	int fail;
};

static int open_beneath(const struct disk *d, const char *path)
{
	struct open_how how = {
		.flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
	};
	long fd;

	if (!path[0] || path[0] == '/' || svc_path_has_dotdot(path))
		return -EACCES;
	fd = syscall(SYS_openat2, d->root, path, &how, sizeof(how));
	if (fd < 0)
		return errno == EXDEV || errno == ELOOP || errno == ENOSYS ? -EACCES : -errno;
	return (int)fd;
}

/* The emulated device time, slept before the real read. */
static void device_wait(const struct disk *d)
{
	struct timespec ts = {
		.tv_sec = d->latency_us / 1000000,
		.tv_nsec = (long)(d->latency_us % 1000000) * 1000,
	};

	while (d->latency_us && nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static int say(struct popup_svc_call *call, int err, const char *msg)
{
	svc_say(call, msg);
	return err;
}

/* "OFFSET LENGTH PATH" into its parts; @path gets the NUL-terminated rest. */
static int parse_read(const struct popup_svc_call *call, uint64_t *off, uint32_t *len,
		      char *path, size_t cap)
{
	char buf[PATH_MAX + 48], *end;
	unsigned long long o;
	unsigned long l;

	if (call->req_len >= sizeof(buf) || memchr(call->req, 0, call->req_len))
		return -EINVAL;
	memcpy(buf, call->req, call->req_len);
	buf[call->req_len] = 0;
	if (buf[0] < '0' || buf[0] > '9')
		return -EINVAL;
	o = strtoull(buf, &end, 10);
	if (*end != ' ' || end[1] < '0' || end[1] > '9')
		return -EINVAL;
	l = strtoul(end + 1, &end, 10);
	if (*end != ' ' || l > BLOCK_MAX || o > INT64_MAX)
		return -EINVAL;
	if (snprintf(path, cap, "%s", end + 1) >= (int)cap)
		return -EINVAL;
	*off = o;
	*len = (uint32_t)l;
	return 0;
}

static int disk_read(struct popup_svc_call *call)
{
	const struct disk *d = call->state;
	char path[PATH_MAX];
	uint64_t off;
	uint32_t len, n = 0;
	int fd;

	if (parse_read(call, &off, &len, path, sizeof(path)))
		return say(call, -EINVAL, "expected 'OFFSET LENGTH PATH'");
	if (len > call->res_cap)
		return say(call, -E2BIG, "length over the block limit");
	device_wait(d);
	if (d->fail)
		return say(call, -EIO, "emulated disk failure (fail = 1)");
	fd = open_beneath(d, path);
	if (fd < 0)
		return say(call, fd, fd == -EACCES ? "path escapes the root" : strerror(-fd));
	while (n < len) {
		ssize_t r = pread(fd, (char *)call->res + n, len - n, (off_t)(off + n));

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int err = -errno;

			close(fd);
			return say(call, err, strerror(-err));
		}
		if (r == 0)
			break;
		n += r;
	}
	close(fd);
	call->res_len = n;
	return 0;
}

static int disk_size(struct popup_svc_call *call)
{
	const struct disk *d = call->state;
	char path[PATH_MAX];
	struct stat st;
	int fd, n;

	if (call->req_len >= sizeof(path) || memchr(call->req, 0, call->req_len))
		return say(call, -EINVAL, "bad path");
	memcpy(path, call->req, call->req_len);
	path[call->req_len] = 0;
	device_wait(d);
	fd = open_beneath(d, path);
	if (fd < 0)
		return say(call, fd, fd == -EACCES ? "path escapes the root" : strerror(-fd));
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		close(fd);
		return say(call, -EINVAL, "not a regular file");
	}
	close(fd);
	n = snprintf(call->res, call->res_cap, "%" PRIu64, (uint64_t)st.st_size);
	call->res_len = n < (int)call->res_cap ? (uint32_t)n : call->res_cap;
	return 0;
}

static int disk_init(const struct popup_svc_env *env, void **state)
{
	const char *root = env->get(env, "root");
	uint32_t fail;
	struct disk *d;

	if (!root) {
		env->log(env, 3, "set [service.disk] root = DIR (or --set disk.root=DIR)");
		return -EINVAL;
	}
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	if (svc_conf_u32(env, "latency_us", 1000, 0, 10000000, &d->latency_us) ||
	    svc_conf_u32(env, "fail", 0, 0, 1, &fail)) {
		free(d);
		return -EINVAL;
	}
	d->fail = (int)fail;
	d->root = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (d->root < 0) {
		int err = -errno;

		env->log(env, 3, "cannot open root %s: %s", root, strerror(-err));
		free(d);
		return err;
	}
	env->log(env, 6, "emulated latency %u us per read%s", d->latency_us,
		 d->fail ? "; every read fails (fail = 1)" : "");
	*state = d;
	return 0;
}

static void disk_fini(void *state)
{
	struct disk *d = state;

	close(d->root);
	free(d);
}

static const struct popup_svc_method methods[] = {
	{ .id = 1, .name = "read", .max_arg = PATH_MAX + 47, .max_res = BLOCK_MAX,
	  .flags = POPUP_SVC_M_IDEMPOTENT, .handler = disk_read },
	{ .id = 2, .name = "size", .max_arg = PATH_MAX - 1, .max_res = 32,
	  .flags = POPUP_SVC_M_IDEMPOTENT, .handler = disk_size },
};

POPUP_SVC_DEFINE = {
	.abi_version = POPUP_SVC_ABI_VERSION,
	.struct_size = sizeof(struct popup_svc_def),
	.name = "disk",
	.version = 1,
	.id = 6,
	.methods = methods,
	.nr_methods = sizeof(methods) / sizeof(methods[0]),
	.dispatch = POPUP_SVC_DISPATCH_POOL,
	.pool = { .min_threads = 8, .max_threads = 32, .queue_limit = 512 },
	.init = disk_init,
	.fini = disk_fini,
};
