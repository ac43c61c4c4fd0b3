/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers shared by the module tests: make sure popup.ko is loaded (the
 * tests run in scripts/vm, where nothing loads it for them) and open the
 * device. Outside a VM without the module, tests SKIP; under --vm the
 * runner counts a skip as a failure. Also what the in-test servers share:
 * sleeping, CPU pinning, and the table of receive areas a server maps on
 * first sight of a binding or attachment (popup_context.map_offset).
 */
#ifndef POPUP_TEST_H
#define POPUP_TEST_H

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "uapi/linux/popup.h"

/* 0 when /dev/popup exists (loading the module if needed), else -errno. */
static inline int popup_test_load_module(void)
{
	const char *top = getenv("POPUP_TOP");
	char cmd[4096];

	if (access("/dev/popup", F_OK) == 0)
		return 0;
	if (access("/proc/modules", F_OK) != 0)
		return -ENOSYS;	/* kernel without module support */
	snprintf(cmd, sizeof(cmd), "insmod %s/kmod/popup.ko", top ? top : ".");
	if (system(cmd) != 0)
		return -EIO;
	/* devtmpfs creates the node asynchronously with respect to insmod. */
	for (int i = 0; i < 100 && access("/dev/popup", F_OK); i++)
		usleep(10000);
	return access("/dev/popup", F_OK) ? -ENOENT : 0;
}

static inline void msleep(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* Online CPUs, at most @max. */
static inline int ncpus_max(int max)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n < 1 ? 1 : n > max ? max : (int)n;
}

static inline int pin_self(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

#define POPUP_TEST_AREAS 64

/* The areas (bindings, receive areas) an in-test server has mapped. */
struct areas {
	pthread_mutex_t lock;
	int fd;				/* the server's /dev/popup */
	int n;
	struct {
		__u32 id;
		char *addr;
		__u64 size;
	} a[POPUP_TEST_AREAS];
};

static inline void areas_init(struct areas *t, int fd)
{
	pthread_mutex_init(&t->lock, NULL);
	t->fd = fd;
	t->n = 0;
}

/* The mapping of @ctx's area, mapped now if this is its first context. */
static inline char *area_map(struct areas *t, const struct popup_context *ctx)
{
	char *addr = NULL;
	int i;

	pthread_mutex_lock(&t->lock);
	for (i = 0; i < t->n; i++)
		if (t->a[i].id == ctx->binding_id)
			addr = t->a[i].addr;
	if (!addr && t->n < POPUP_TEST_AREAS) {
		addr = mmap(NULL, ctx->map_size, PROT_READ | PROT_WRITE,
			    MAP_SHARED, t->fd, ctx->map_offset);
		if (addr == MAP_FAILED) {
			addr = NULL;
		} else {
			t->a[t->n].id = ctx->binding_id;
			t->a[t->n].addr = addr;
			t->a[t->n].size = ctx->map_size;
			t->n++;
		}
	}
	pthread_mutex_unlock(&t->lock);
	return addr;
}

/* An UNMAP notice for area @id. */
static inline void area_unmap(struct areas *t, __u32 id)
{
	int i;

	pthread_mutex_lock(&t->lock);
	for (i = 0; i < t->n; i++) {
		if (t->a[i].id != id)
			continue;
		munmap(t->a[i].addr, t->a[i].size);
		t->a[i] = t->a[--t->n];
		break;
	}
	pthread_mutex_unlock(&t->lock);
}

static inline void areas_unmap_all(struct areas *t)
{
	while (t->n) {
		t->n--;
		munmap(t->a[t->n].addr, t->a[t->n].size);
	}
}

#endif /* POPUP_TEST_H */
