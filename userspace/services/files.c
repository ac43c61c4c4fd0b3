// SPDX-License-Identifier: LGPL-2.1 OR BSD-2-Clause
/*
 * files: serves files under one directory ([service.files] root, required).
 *
 *   read  PATH   -> the file's bytes (regular files up to 1 MiB)
 *   list  [PATH] -> the directory's entries, one per line ("" = the root)
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

#define FILE_MAX	(1U << 20)

struct files {
	int root;		/* O_PATH directory descriptor */
};

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
	const char *p = buf;

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
	while (*p) {
		size_t n = strcspn(p, "/");

		if (n == 2 && p[0] == '.' && p[1] == '.') {
			*why = "'..' is refused";
			return -EACCES;
		}
		p += n;
		p += *p == '/';
	}
	return 0;
}

static void say(struct popup_svc_call *call, const char *msg)
{
	size_t n = strlen(msg);

	if (n > call->res_cap)
		n = call->res_cap;
	memcpy(call->res, msg, n);
	call->res_len = n;
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
		say(call, why);
		return err;
	}
	fd = open_beneath(call->state, path, O_RDONLY | O_NONBLOCK);
	if (fd < 0) {
		say(call, fd == -EACCES ? "path escapes the root" : strerror(-fd));
		return fd;
	}
	if (fstat(fd, &stb) || !S_ISREG(stb.st_mode)) {
		close(fd);
		say(call, "not a regular file");
		return -EINVAL;
	}
	if ((uint64_t)stb.st_size > call->res_cap) {
		close(fd);
		say(call, "file larger than the result limit");
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
		say(call, why);
		return err;
	}
	fd = open_beneath(call->state, path, O_RDONLY | O_DIRECTORY);
	if (fd < 0) {
		say(call, fd == -EACCES ? "path escapes the root" : strerror(-fd));
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
