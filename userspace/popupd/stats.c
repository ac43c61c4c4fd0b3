// SPDX-License-Identifier: GPL-2.0
/*
 * The statistics file (layout in include/popup/stats.h): created fresh at
 * start so a reader never sees a previous run's rows, removed at a clean
 * stop.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "popupd.h"

/* Inode of the file we created, to tell it from a later instance's. */
static ino_t stats_ino;

static int mkdir_parent(const char *path)
{
	char dir[256];
	char *slash;

	if (strlen(path) >= sizeof(dir))
		return -ENAMETOOLONG;
	strcpy(dir, path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = 0;
	if (mkdir(dir, 0755) && errno != EEXIST)
		return -errno;
	return 0;
}

struct popup_stats_file *stats_create(const char *path, unsigned int nr_workers,
				      uint32_t port)
{
	struct popup_stats_file *sf;
	char tmp[300];
	int fd, err;

	err = mkdir_parent(path);
	if (err) {
		pr_err("cannot create the directory of %s: %s", path, strerror(-err));
		return NULL;
	}
	/* Build under a temporary name and rename, so readers never see a
	 * half-initialised file. */
	snprintf(tmp, sizeof(tmp), "%s.%d", path, (int)getpid());
	fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		pr_err("cannot create %s: %s", tmp, strerror(errno));
		return NULL;
	}
	if (ftruncate(fd, sizeof(*sf))) {
		pr_err("cannot size %s: %s", tmp, strerror(errno));
		goto err_close;
	}
	sf = mmap(NULL, sizeof(*sf), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (sf == MAP_FAILED) {
		pr_err("cannot map %s: %s", tmp, strerror(errno));
		goto err_close;
	}
	sf->version = POPUP_STATS_VERSION;
	sf->nr_workers = nr_workers;
	sf->pid = getpid();
	sf->started = time(NULL);
	sf->port = port;
	__atomic_store_n(&sf->magic, POPUP_STATS_MAGIC, __ATOMIC_RELEASE);
	if (rename(tmp, path)) {
		pr_err("cannot rename %s to %s: %s", tmp, path, strerror(errno));
		munmap(sf, sizeof(*sf));
		goto err_close;
	}
	struct stat stb;

	if (!fstat(fd, &stb))
		stats_ino = stb.st_ino;
	close(fd);
	return sf;

err_close:
	close(fd);
	unlink(tmp);
	return NULL;
}

void stats_destroy(struct popup_stats_file *sf, const char *path)
{
	if (!sf)
		return;
	/* Only remove the file if it is still ours (a second instance may
	 * have replaced it). */
	struct stat stb;

	if (!stat(path, &stb) && stb.st_ino == stats_ino)
		unlink(path);
	munmap(sf, sizeof(*sf));
}
