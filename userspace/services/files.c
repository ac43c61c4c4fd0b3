// SPDX-License-Identifier: LGPL-2.1 OR BSD-2-Clause
/*
 * files: serves files under one directory ([service.files] root, required).
 *
 *   read  PATH   -> the file's bytes (regular files up to 1 MiB), read
 *                   here, directly
 *   list  [PATH] -> the directory's entries, one per line ("" = the root)
 *   get   PATH   -> the file's bytes, read in blocks through the disk
 *                   sub-server service (disk.c) with several block reads
 *                   outstanding
 *
 * get is the sub-call example: the handler asks disk for the size, then
 * keeps up to [service.files] outstanding (default 8; 1 = one block at a
 * time) reads of [service.files] block bytes (default 16384) in flight
 * through popupd's batch hooks (service.h), assembling the blocks in the
 * result buffer as they come back in any order. The callee is the
 * service named by [service.files] disk (default "disk"): a service of
 * the same popupd, or another popupd's ([service.disk] remote =
 * host:port). Any failed block read fails the whole request, with the
 * block's offset and the disk's reason as the error text; nothing partial
 * is returned. disk confines paths to its own root the same way.
 *
 * PATH is relative to the root. Nothing outside the root is reachable:
 * absolute paths, ".." components and embedded NULs are refused up front
 * (-EACCES, HTTP 403), and the open itself is confined by openat2() with
 * RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS, so a symlink inside the tree
 * that points out of it fails too. Kernels without openat2 (before 5.6)
 * get a component-by-component walk with O_NOFOLLOW, which refuses every
 * symlink. Only regular files are read: a FIFO or a device would block a
 * handler thread or read forever.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "popup/service.h"
#include "svc_util.h"

#define FILE_MAX	(1U << 20)

struct files {
	int root;		/* O_PATH directory descriptor */
	uint32_t outstanding;	/* get: block reads in flight, 1..64 */
	uint32_t block;		/* get: bytes per block read */
	char disk[32];		/* get: the block service's name */
};

#define DISK_M_READ	1
#define DISK_M_SIZE	2
#define NO_OFF		UINT64_MAX	/* get_fail: no block */

static int walk_nofollow(int root, const char *path, int flags)
{
	char buf[PATH_MAX], *save = NULL, *tok, *next;
	int dir = dup(root), fd;

	if (dir < 0)
		return -errno;
	snprintf(buf, sizeof(buf), "%s", path);
	tok = strtok_r(buf, "/", &save);
	while (tok) {
		next = strtok_r(NULL, "/", &save);
		fd = openat(dir, tok, (next ? O_PATH | O_DIRECTORY : flags) | O_NOFOLLOW | O_CLOEXEC);
		close(dir);
		if (fd < 0)
			return errno == ELOOP ? -EACCES : -errno;
		dir = fd;
		tok = next;
	}
	if (!path[0]) {		/* the root itself */
		fd = openat(dir, ".", flags | O_CLOEXEC);
		close(dir);
		return fd < 0 ? -errno : fd;
	}
	return dir;
}

/* Open @path (checked) beneath the root; returns an fd or -errno. */
static int open_beneath(const struct files *f, const char *path, int flags)
{
	struct open_how how = {
		.flags = flags | O_CLOEXEC,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
	};
	long fd;

	fd = syscall(SYS_openat2, f->root, path[0] ? path : ".", &how, sizeof(how));
	if (fd >= 0)
		return fd;
	if (errno == ENOSYS)
		return walk_nofollow(f->root, path, flags);
	return errno == EXDEV || errno == ELOOP ? -EACCES : -errno;
}

/* Copy the request into a C string and refuse escapes. */
static int get_path(const struct popup_svc_call *call, char *buf, size_t len,
		    const char **why)
{
	if (call->req_len >= len) {
		*why = "path too long";
		return -EINVAL;
	}
	if (memchr(call->req, 0, call->req_len)) {
		*why = "NUL in path";
		return -EINVAL;
	}
	memcpy(buf, call->req, call->req_len);
	buf[call->req_len] = 0;
	if (buf[0] == '/') {
		*why = "absolute paths are refused";
		return -EACCES;
	}
	if (svc_path_has_dotdot(buf)) {
		*why = "'..' is refused";
		return -EACCES;
	}
	return 0;
}

static int files_read(struct popup_svc_call *call)
{
	const char *why = NULL;
	char path[PATH_MAX];
	struct stat stb;
	uint32_t n = 0;
	int fd, err;

	err = get_path(call, path, sizeof(path), &why);
	if (!err && !path[0]) {
		why = "no path";
		err = -EINVAL;
	}
	if (err) {
		svc_say(call, why);
		return err;
	}
	fd = open_beneath(call->state, path, O_RDONLY | O_NONBLOCK);
	if (fd < 0) {
		svc_say(call, fd == -EACCES ? "path escapes the root" : strerror(-fd));
		return fd;
	}
	if (fstat(fd, &stb) || !S_ISREG(stb.st_mode)) {
		close(fd);
		svc_say(call, "not a regular file");
		return -EINVAL;
	}
	if ((uint64_t)stb.st_size > call->res_cap) {
		close(fd);
		svc_say(call, "file larger than the result limit");
		return -EFBIG;
	}
	while (n < call->res_cap) {
		ssize_t r = read(fd, (char *)call->res + n, call->res_cap - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			err = -errno;
			break;
		}
		if (r == 0)
			break;
		n += r;
	}
	close(fd);
	call->res_len = err ? 0 : n;
	return err;
}

static int files_list(struct popup_svc_call *call)
{
	const char *why = NULL;
	char path[PATH_MAX];
	struct dirent *de;
	uint32_t n = 0;
	DIR *d;
	int fd, err;

	err = get_path(call, path, sizeof(path), &why);
	if (err) {
		svc_say(call, why);
		return err;
	}
	fd = open_beneath(call->state, path, O_RDONLY | O_DIRECTORY);
	if (fd < 0) {
		svc_say(call, fd == -EACCES ? "path escapes the root" : strerror(-fd));
		return fd;
	}
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -ENOMEM;
	}
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);

		if (de->d_name[0] == '.' && (len == 1 || (len == 2 && de->d_name[1] == '.')))
			continue;
		if (n + len + 1 > call->res_cap)
			break;
		memcpy((char *)call->res + n, de->d_name, len);
		n += len;
		((char *)call->res)[n++] = '\n';
	}
	closedir(d);
	call->res_len = n;
	return 0;
}

static int get_fail(struct popup_svc_call *call, int err, const char *what,
		    uint64_t off, const char *why, uint32_t why_len)
{
	int n = off == NO_OFF ? snprintf(call->res, call->res_cap, "%s failed: ", what) :
		snprintf(call->res, call->res_cap, "%s at offset %llu failed: ", what,
			 (unsigned long long)off);

	if (n < 0 || (uint32_t)n >= call->res_cap) {
		call->res_len = 0;
		return err;
	}
	if (!why_len) {
		why = strerror(-err);
		why_len = strlen(why);
	}
	if (why_len > call->res_cap - n)
		why_len = call->res_cap - n;
	memmove((char *)call->res + n, why, why_len);
	call->res_len = n + why_len;
	/* The disk's transport errors stay; its handler's become -EIO. */
	return err == -EREMOTEIO ? -EIO : err;
}

/* The file's size from disk's "size" method. */
static int get_size(struct popup_svc_call *call, const struct files *f, const char *path,
		    uint64_t *size)
{
	const struct popup_svc_env *env = call->env;
	char buf[64], *end;
	uint32_t n = 0;
	int err;

	err = env->call(env, f->disk, DISK_M_SIZE, path, strlen(path), buf, sizeof(buf) - 1,
			&n, call->deadline_ns);
	if (err) {
		char why[64];

		if (n > sizeof(why) - 1)
			n = sizeof(why) - 1;
		memcpy(why, buf, n);
		return get_fail(call, err, "disk size", NO_OFF, why, n);
	}
	buf[n] = 0;
	*size = strtoull(buf, &end, 10);
	if (!n || *end)
		return get_fail(call, -EPROTO, "disk size", NO_OFF, "bad size reply", 14);
	return 0;
}

/* Start the read of block @i; its token is @i (tokens count adds). */
static int get_add(struct popup_svc_call *call, const struct files *f,
		   struct popup_svc_batch *b, const char *path, uint64_t size, uint32_t i)
{
	const struct popup_svc_env *env = call->env;
	uint64_t off = (uint64_t)i * f->block;
	uint32_t len = size - off < f->block ? (uint32_t)(size - off) : f->block;
	char arg[PATH_MAX + 48];
	int n;

	n = snprintf(arg, sizeof(arg), "%llu %u %s", (unsigned long long)off, len, path);
	if (n < 0 || n >= (int)sizeof(arg))
		return -ENAMETOOLONG;
	return env->batch_add(b, f->disk, DISK_M_READ, arg, n, (char *)call->res + off, len);
}

/* Check block @tok's result: all of it, or the request fails. */
static int get_check(struct popup_svc_call *call, const struct files *f,
		     struct popup_svc_batch *b, uint64_t size, int tok)
{
	uint64_t off = (uint64_t)tok * f->block;
	uint32_t want = size - off < f->block ? (uint32_t)(size - off) : f->block;
	uint32_t len = 0;
	int st = call->env->batch_result(b, tok, &len);

	if (st) {
		char why[128];

		/* The error text landed in the block's place; keep it. */
		if (len > sizeof(why))
			len = sizeof(why);
		memcpy(why, (char *)call->res + off, len);
		return get_fail(call, st, "disk read", off, why, len);
	}
	if (len != want)
		return get_fail(call, -EIO, "disk read", off, "short read (file changed?)", 26);
	return 0;
}

static int get_blocks(struct popup_svc_call *call, const struct files *f,
		      struct popup_svc_batch *b, const char *path, uint64_t size)
{
	uint32_t nr = (uint32_t)((size + f->block - 1) / f->block), next = 0, inflight = 0;
	int err = 0, tok;

	while (!err && (next < nr || inflight)) {
		while (next < nr && inflight < f->outstanding) {
			err = get_add(call, f, b, path, size, next);
			if (err == -EAGAIN && inflight) {
				err = 0;	/* a bound: reap one first */
				break;
			}
			if (err < 0)
				return get_fail(call, err, "disk read", (uint64_t)next * f->block,
						NULL, 0);
			err = 0;
			next++;
			inflight++;
		}
		tok = call->env->batch_wait_any(b);
		if (tok < 0)
			return get_fail(call, tok, "disk read", (uint64_t)next * f->block, NULL, 0);
		inflight--;
		err = get_check(call, f, b, size, tok);
	}
	return err;
}

static int files_get(struct popup_svc_call *call)
{
	const struct files *f = call->state;
	const struct popup_svc_env *env = call->env;
	struct popup_svc_batch *b;
	const char *why = NULL;
	char path[PATH_MAX];
	uint64_t size = 0;
	int err;

	err = get_path(call, path, sizeof(path), &why);
	if (!err && !path[0]) {
		why = "no path";
		err = -EINVAL;
	}
	if (err) {
		svc_say(call, why);
		return err;
	}
	if (!env || !env->batch_new) {
		svc_say(call, "this popupd offers no sub-calls");
		return -EOPNOTSUPP;
	}
	err = get_size(call, f, path, &size);
	if (err)
		return err;
	if (size > call->res_cap) {
		svc_say(call, "file larger than the result limit");
		return -EFBIG;
	}
	b = env->batch_new(env, f->outstanding, call->deadline_ns);
	if (!b)
		return get_fail(call, -ENOMEM, "disk read", NO_OFF, NULL, 0);
	err = get_blocks(call, f, b, path, size);
	env->batch_free(b);
	if (!err)
		call->res_len = (uint32_t)size;
	return err;
}

static int files_init(const struct popup_svc_env *env, void **state)
{
	const char *root = env->get(env, "root");
	struct files *f;

	if (!root) {
		env->log(env, 3, "set [service.files] root = DIR (or --set files.root=DIR)");
		return -EINVAL;
	}
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	snprintf(f->disk, sizeof(f->disk), "%s", env->get(env, "disk") ?: "disk");
	if (svc_conf_u32(env, "outstanding", 8, 1, 64, &f->outstanding) ||
	    svc_conf_u32(env, "block", 16384, 512, 65536, &f->block)) {
		free(f);
		return -EINVAL;
	}
	f->root = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (f->root < 0) {
		int err = -errno;

		env->log(env, 3, "cannot open root %s: %s", root, strerror(-err));
		free(f);
		return err;
	}
	*state = f;
	return 0;
}

static void files_fini(void *state)
{
	struct files *f = state;

	close(f->root);
	free(f);
}

static const struct popup_svc_method methods[] = {
	{ .id = 1, .name = "read", .max_arg = PATH_MAX - 1, .max_res = FILE_MAX,
	  .flags = POPUP_SVC_M_IDEMPOTENT, .handler = files_read },
	{ .id = 2, .name = "list", .max_arg = PATH_MAX - 1, .max_res = 65536,
	  .flags = POPUP_SVC_M_IDEMPOTENT, .handler = files_list },
	{ .id = 3, .name = "get", .max_arg = PATH_MAX - 1, .max_res = FILE_MAX,
	  .flags = POPUP_SVC_M_IDEMPOTENT, .handler = files_get },
};

POPUP_SVC_DEFINE = {
	.abi_version = POPUP_SVC_ABI_VERSION,
	.struct_size = sizeof(struct popup_svc_def),
	.name = "files",
	.version = 1,
	.id = 3,
	.methods = methods,
	.nr_methods = sizeof(methods) / sizeof(methods[0]),
	.dispatch = POPUP_SVC_DISPATCH_POOL,
	.pool = { .min_threads = 1, .max_threads = 8, .queue_limit = 256 },
	.init = files_init,
	.fini = files_fini,
};
