// SPDX-License-Identifier: GPL-2.0
/*
 * popup.ko ABI edges: every ioctl with wrong sizes (in the command number
 * and in @size), bad pointers (NULL, unmapped, kernel, read-only for the
 * result), non-zero reserved fields and unknown flags, overlong,
 * unterminated, empty or unprintable names, out-of-range and wrapping
 * lengths and counts. Each gets the errno documented in
 * include/uapi/linux/popup.h, and none changes state: after every failure
 * the same name can still be exported, nothing is listed in
 * /proc/popup/services, and no binding is left behind.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "popup_test.h"
#include "uapi/linux/popup.h"

#define KPTR	((void *)0xffffffff81000000ul)

static struct popup_method one_method[] = {
	{ .id = 1, .max_arg = 64, .max_res = 64 },
};

FIXTURE(abi) {
	int fd;
	char name[64];
	void *unmapped;
	void *rdonly;	/* a page holding valid arguments, read-only */
};

FIXTURE_SETUP(abi)
{
	int err = popup_test_load_module();

	self->fd = -1;
	if (err)
		SKIP(return, "popup.ko not loadable here (%s); run in scripts/vm", strerror(-err));
	self->fd = open("/dev/popup", O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, self->fd);
	snprintf(self->name, sizeof(self->name), "kmod_abi.%d", getpid());
	/* Below mmap_min_addr: never mapped. */
	self->unmapped = (void *)0x1000;
	self->rdonly = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, self->rdonly);
}

FIXTURE_TEARDOWN(abi)
{
	if (self->fd >= 0)
		close(self->fd);
}

static void init_export(struct popup_export *e, const char *name)
{
	memset(e, 0, sizeof(*e));
	e->size = sizeof(*e);
	snprintf(e->name, sizeof(e->name), "%s", name);
	e->version = 1;
	e->nmethods = 1;
	e->methods = (uintptr_t)one_method;
}

static void init_import(struct popup_import *i, const char *name)
{
	memset(i, 0, sizeof(*i));
	i->size = sizeof(i);
	i->size = sizeof(*i);
	snprintf(i->name, sizeof(i->name), "%s", name);
	i->version = 1;
	i->nslots = 2;
}

/* Expect ioctl to fail with @err. */
#define EXPECT_ERR(err, fd, cmd, arg) do {			\
	errno = 0;						\
	EXPECT_EQ(-1, ioctl(fd, cmd, arg));			\
	EXPECT_EQ(err, errno);					\
} while (0)

static int listed(const char *name)
{
	char line[512];
	int n = 0;
	FILE *f = fopen("/proc/popup/services", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, name))
			n++;
	fclose(f);
	return n;
}

TEST_F(abi, export)
{
	struct popup_method m[2];
	struct popup_export e;
	char big[sizeof(e) + 16];

	EXPECT_ERR(EFAULT, self->fd, POPUP_IOC_EXPORT, NULL);
	EXPECT_ERR(EFAULT, self->fd, POPUP_IOC_EXPORT, KPTR);
	EXPECT_ERR(EFAULT, self->fd, POPUP_IOC_EXPORT, self->unmapped);
	/* Size in the command number. */
	init_export(&e, self->name);
	EXPECT_ERR(ENOTTY, self->fd, _IOWR(POPUP_IOC_MAGIC, 0x01, __u64[10]), &e);
	/* @size */
	e.size = 0;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_EXPORT, &e);
	e.size = sizeof(e) - 8;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_EXPORT, &e);
	e.size = 1u << 20;
	EXPECT_ERR(E2BIG, self->fd, POPUP_IOC_EXPORT, &e);
	e.size = 0xffffffff;
	EXPECT_ERR(E2BIG, self->fd, POPUP_IOC_EXPORT, &e);
	memset(big, 0, sizeof(big));
	init_export(&e, self->name);
	e.size = sizeof(big);
	memcpy(big, &e, sizeof(e));
	big[sizeof(e) + 3] = 1;
	EXPECT_ERR(E2BIG, self->fd, POPUP_IOC_EXPORT, big);
	/* Flags, reserved. */
	init_export(&e, self->name);
	e.flags = 1;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_EXPORT, &e);
	init_export(&e, self->name);
	e.reserved[1] = 1;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_EXPORT, &e);
	/* Names: unterminated, empty, with a space, control char. */
	init_export(&e, self->name);
	memset(e.name, 'a', sizeof(e.name));
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_EXPORT, &e);
	e.name[0] = 0;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_EXPORT, &e);
	init_export(&e, "a b");
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_EXPORT, &e);
	init_export(&e, "a\nb");
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_EXPORT, &e);
	/* Methods. */
	init_export(&e, self->name);
	e.nmethods = 0;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_EXPORT, &e);
	e.nmethods = POPUP_MAX_METHODS + 1;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_EXPORT, &e);
	e.nmethods = 0xffffffff;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_EXPORT, &e);
	e.nmethods = 1;
	e.methods = 0;
	EXPECT_ERR(EFAULT, self->fd, POPUP_IOC_EXPORT, &e);
	e.methods = (uintptr_t)KPTR;
	EXPECT_ERR(EFAULT, self->fd, POPUP_IOC_EXPORT, &e);
	e.methods = (uintptr_t)self->unmapped;
	EXPECT_ERR(EFAULT, self->fd, POPUP_IOC_EXPORT, &e);
	e.methods = (uintptr_t)m;
	e.nmethods = 2;
	memset(m, 0, sizeof(m));
	m[0].id = 1;
	m[1].id = 1;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_EXPORT, &e);	/* duplicate */
	m[1].id = 2;
	m[1].flags = 2;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_EXPORT, &e);
	m[1].flags = 0;
	m[1].reserved = 1;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_EXPORT, &e);
	m[1].reserved = 0;
	m[1].max_arg = POPUP_MAX_MSG + 1;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_EXPORT, &e);
	m[1].max_arg = 0;
	m[1].max_res = 0xffffffff;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_EXPORT, &e);
	m[1].max_res = 0;
	/* Pools. */
	struct popup_pool bad[] = {
		{ .max_threads = 0, .max_idle = 1, .increment = 1 },
		{ .max_threads = POPUP_MAX_THREADS + 1, .max_idle = 1, .increment = 1 },
		{ .max_threads = 4, .max_idle = 0, .increment = 1 },
		{ .max_threads = 4, .min_idle = 3, .max_idle = 2, .increment = 1 },
		{ .max_threads = 4, .max_idle = 5, .increment = 1 },
		{ .max_threads = 4, .max_idle = 1, .increment = 0 },
		{ .max_threads = 4, .max_idle = 1, .increment = 5 },
		{ .max_threads = 4, .max_idle = 1, .increment = 1, .queue_limit = POPUP_MAX_QUEUE + 1 },
		{ .max_threads = 4, .max_idle = 1, .increment = 1, .reserved = 1 },
	};
	for (unsigned int i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		e.pool = bad[i];
		EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_EXPORT, &e);
	}
	memset(&e.pool, 0, sizeof(e.pool));

	/* Result not writable: EFAULT, and the export is undone. */
	init_export(self->rdonly, self->name);
	mprotect(self->rdonly, 4096, PROT_READ);
	EXPECT_ERR(EFAULT, self->fd, POPUP_IOC_EXPORT, self->rdonly);

	/* No state changed: nothing listed, the name is free. */
	EXPECT_EQ(0, listed(self->name));
	EXPECT_EQ(0, ioctl(self->fd, POPUP_IOC_EXPORT, &e));
	EXPECT_EQ(1, listed(self->name));
	EXPECT_ERR(EEXIST, self->fd, POPUP_IOC_EXPORT, &e);
	e.version = 2;
	EXPECT_EQ(0, ioctl(self->fd, POPUP_IOC_EXPORT, &e));
	/* A larger @size with a zero tail is accepted. */
	init_export(&e, self->name);
	e.version = 3;
	e.size = sizeof(big);
	memset(big, 0, sizeof(big));
	memcpy(big, &e, sizeof(e));
	EXPECT_EQ(0, ioctl(self->fd, POPUP_IOC_EXPORT, big));
	EXPECT_EQ(3, listed(self->name));
	/* A 63-byte name fits. */
	memset(e.name, 'z', 63);
	e.name[63] = 0;
	e.size = sizeof(e);
	EXPECT_EQ(0, ioctl(self->fd, POPUP_IOC_EXPORT, &e));
}

TEST_F(abi, import)
{
	struct popup_import imp;
	struct popup_export e;
	int other;

	init_export(&e, self->name);
	ASSERT_EQ(0, ioctl(self->fd, POPUP_IOC_EXPORT, &e));

	EXPECT_ERR(EFAULT, self->fd, POPUP_IOC_IMPORT, NULL);
	EXPECT_ERR(EFAULT, self->fd, POPUP_IOC_IMPORT, KPTR);
	EXPECT_ERR(EFAULT, self->fd, POPUP_IOC_IMPORT, self->unmapped);
	init_import(&imp, self->name);
	EXPECT_ERR(ENOTTY, self->fd, _IOWR(POPUP_IOC_MAGIC, 0x04, __u32), &imp);
	imp.size = 4;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_IMPORT, &imp);
	init_import(&imp, self->name);
	imp.flags = 1;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_IMPORT, &imp);
	init_import(&imp, self->name);
	imp.reserved0 = 1;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_IMPORT, &imp);
	init_import(&imp, self->name);
	imp.reserved[0] = 1;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_IMPORT, &imp);
	init_import(&imp, self->name);
	memset(imp.name, 'q', sizeof(imp.name));
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_IMPORT, &imp);
	init_import(&imp, self->name);
	imp.nslots = 0;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_IMPORT, &imp);
	imp.nslots = POPUP_MAX_SLOTS + 1;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_IMPORT, &imp);
	imp.nslots = 0xffffffff;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_IMPORT, &imp);
	imp.nslots = 2;
	imp.oneway_quota = 3;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_IMPORT, &imp);
	init_import(&imp, self->name);
	imp.version = 7;
	EXPECT_ERR(ENOENT, self->fd, POPUP_IOC_IMPORT, &imp);
	init_import(&imp, "kmod_abi.nosuch");
	EXPECT_ERR(ENOENT, self->fd, POPUP_IOC_IMPORT, &imp);

	/* Result not writable: EFAULT and no binding (id 1 past ours is unused). */
	init_import(self->rdonly, self->name);
	mprotect(self->rdonly, 4096, PROT_READ);
	EXPECT_ERR(EFAULT, self->fd, POPUP_IOC_IMPORT, self->rdonly);

	init_import(&imp, self->name);
	ASSERT_EQ(0, ioctl(self->fd, POPUP_IOC_IMPORT, &imp));
	EXPECT_EQ(4096, imp.slot_size);
	EXPECT_EQ(8192, imp.map_size);
	/* The failed import's binding is gone: its id (ours - 1) maps nothing. */
	EXPECT_EQ(MAP_FAILED, mmap(NULL, 8192, PROT_READ, MAP_SHARED, self->fd,
				   imp.map_offset - 4096));
	EXPECT_EQ(ENXIO, errno);
	EXPECT_EQ(MAP_FAILED, mmap(NULL, 8192, PROT_READ, MAP_SHARED, self->fd,
				   (off_t)0x7fffffff << 12));
	EXPECT_EQ(ENXIO, errno);

	/* Unimport: flags, reserved, unknown, another file's binding. */
	struct popup_target t = { .id = imp.binding_id, .flags = 1 };

	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_UNIMPORT, &t);
	t.flags = 0;
	t.reserved = 1;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_UNIMPORT, &t);
	t.reserved = 0;
	t.id = 0;
	EXPECT_ERR(ENOENT, self->fd, POPUP_IOC_UNIMPORT, &t);
	EXPECT_ERR(EFAULT, self->fd, POPUP_IOC_UNIMPORT, NULL);
	other = open("/dev/popup", O_RDWR);
	t.id = imp.binding_id;
	EXPECT_ERR(ENOENT, other, POPUP_IOC_UNIMPORT, &t);
	close(other);
	EXPECT_EQ(0, ioctl(self->fd, POPUP_IOC_UNIMPORT, &t));
}

TEST_F(abi, call)
{
	struct popup_import imp;
	struct popup_export e;
	struct popup_call c;
	void *base;

	init_export(&e, self->name);
	e.pool = (struct popup_pool){ .max_threads = 1, .max_idle = 1, .increment = 1,
				      .queue_limit = 4 };
	ASSERT_EQ(0, ioctl(self->fd, POPUP_IOC_EXPORT, &e));
	init_import(&imp, self->name);
	ASSERT_EQ(0, ioctl(self->fd, POPUP_IOC_IMPORT, &imp));
	base = mmap(NULL, imp.map_size, PROT_READ | PROT_WRITE, MAP_SHARED, self->fd, imp.map_offset);
	ASSERT_NE(MAP_FAILED, base);

#define INIT_CALL() do {						\
	memset(&c, 0, sizeof(c));					\
	c.size = sizeof(c);						\
	c.binding_id = imp.binding_id;					\
	c.method = 1;							\
	c.timeout_ms = 10;						\
} while (0)
	EXPECT_ERR(EFAULT, self->fd, POPUP_IOC_CALL, NULL);
	EXPECT_ERR(EFAULT, self->fd, POPUP_IOC_CALL, KPTR);
	EXPECT_ERR(EFAULT, self->fd, POPUP_IOC_CALL, self->unmapped);
	INIT_CALL();
	EXPECT_ERR(ENOTTY, self->fd, _IOWR(POPUP_IOC_MAGIC, 0x06, __u64), &c);
	c.size = 8;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_CALL, &c);
	INIT_CALL();
	c.flags = 4;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_CALL, &c);
	INIT_CALL();
	c.reserved0 = 1;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_CALL, &c);
	INIT_CALL();
	c.reserved[1] = 1;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_CALL, &c);
	INIT_CALL();
	c.binding_id = 0;
	EXPECT_ERR(ENOENT, self->fd, POPUP_IOC_CALL, &c);
	c.binding_id = 0xffffffff;
	EXPECT_ERR(ENOENT, self->fd, POPUP_IOC_CALL, &c);
	INIT_CALL();
	c.method = 2;
	EXPECT_ERR(EOPNOTSUPP, self->fd, POPUP_IOC_CALL, &c);
	INIT_CALL();
	c.slot = 2;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_CALL, &c);
	c.slot = 0xffffffff;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_CALL, &c);
	INIT_CALL();
	c.arg_len = 65;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_CALL, &c);
	c.arg_len = 0xffffffff;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_CALL, &c);
	/* Another file cannot use our binding. */
	int other = open("/dev/popup", O_RDWR);

	INIT_CALL();
	EXPECT_ERR(ENOENT, other, POPUP_IOC_CALL, &c);
	close(other);
	/* Valid, nobody serves: times out, and nothing is left queued. */
	INIT_CALL();
	EXPECT_ERR(ETIMEDOUT, self->fd, POPUP_IOC_CALL, &c);
	struct popup_wait w = { .size = sizeof(w), .service_id = e.service_id,
				.flags = POPUP_WAIT_NONBLOCK };

	/* The queued call asked for a thread; that request may come first. */
	if (ioctl(self->fd, POPUP_IOC_WAIT, &w) == 0)
		EXPECT_EQ(POPUP_WAIT_KIND_SPAWN, w.kind);
	EXPECT_ERR(EAGAIN, self->fd, POPUP_IOC_WAIT, &w);
	munmap(base, imp.map_size);
}

TEST_F(abi, wait_reply_pool)
{
	struct popup_export e;
	struct popup_wait w;
	struct popup_reply r;
	struct popup_set_pool sp;
	struct popup_target t;
	int other;

	init_export(&e, self->name);
	e.pool = (struct popup_pool){ .max_threads = 2, .max_idle = 1, .increment = 1 };
	ASSERT_EQ(0, ioctl(self->fd, POPUP_IOC_EXPORT, &e));

#define INIT_WAIT() do {						\
	memset(&w, 0, sizeof(w));					\
	w.size = sizeof(w);						\
	w.service_id = e.service_id;					\
	w.flags = POPUP_WAIT_NONBLOCK;					\
} while (0)
	EXPECT_ERR(EFAULT, self->fd, POPUP_IOC_WAIT, NULL);
	EXPECT_ERR(EFAULT, self->fd, POPUP_IOC_WAIT, KPTR);
	EXPECT_ERR(EFAULT, self->fd, POPUP_IOC_REPLY_WAIT, self->unmapped);
	INIT_WAIT();
	EXPECT_ERR(ENOTTY, self->fd, _IOWR(POPUP_IOC_MAGIC, 0x07, __u32), &w);
	w.size = 16;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_WAIT, &w);
	INIT_WAIT();
	w.flags |= 1u << 7;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_WAIT, &w);
	INIT_WAIT();
	w.flags |= POPUP_WAIT_CONTROL | POPUP_WAIT_POOL;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_WAIT, &w);
	INIT_WAIT();
	w.reserved[0] = 1;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_WAIT, &w);
	INIT_WAIT();
	w.reply.ctx_id = 5;	/* reply fields are for REPLY_WAIT only */
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_WAIT, &w);
	INIT_WAIT();
	w.service_id = 0;
	EXPECT_ERR(ENOENT, self->fd, POPUP_IOC_WAIT, &w);
	INIT_WAIT();
	EXPECT_ERR(EAGAIN, self->fd, POPUP_IOC_WAIT, &w);
	other = open("/dev/popup", O_RDWR);
	EXPECT_ERR(EPERM, other, POPUP_IOC_WAIT, &w);
	/* REPLY_WAIT with a bogus context: ENOENT, no wait. */
	INIT_WAIT();
	w.flags = 0;
	w.reply.ctx_id = 0x123456789ull;
	EXPECT_ERR(ENOENT, self->fd, POPUP_IOC_REPLY_WAIT, &w);
	w.reply.ctx_id = 0;
	w.reply.flags = 1;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_REPLY_WAIT, &w);
	/* Read-only result: EFAULT before waiting. */
	memcpy(self->rdonly, &w, sizeof(w));
	((struct popup_wait *)self->rdonly)->reply.flags = 0;
	mprotect(self->rdonly, 4096, PROT_READ);
	EXPECT_ERR(EFAULT, self->fd, POPUP_IOC_WAIT, self->rdonly);

	/* REPLY */
	memset(&r, 0, sizeof(r));
	EXPECT_ERR(EFAULT, self->fd, POPUP_IOC_REPLY, NULL);
	EXPECT_ERR(ENOENT, self->fd, POPUP_IOC_REPLY, &r);
	r.ctx_id = ~0ull;
	EXPECT_ERR(ENOENT, self->fd, POPUP_IOC_REPLY, &r);
	r.reserved0 = 1;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_REPLY, &r);

	/* SET_POOL */
	memset(&sp, 0, sizeof(sp));
	sp.service_id = e.service_id;
	EXPECT_EQ(0, ioctl(self->fd, POPUP_IOC_SET_POOL, &sp));	/* defaults */
	EXPECT_ERR(EFAULT, self->fd, POPUP_IOC_SET_POOL, NULL);
	sp.flags = 1;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_SET_POOL, &sp);
	sp.flags = 0;
	sp.reserved = 1;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_SET_POOL, &sp);
	sp.reserved = 0;
	sp.pool.max_threads = 5;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_SET_POOL, &sp);
	sp.pool = (struct popup_pool){ .max_threads = 3, .max_idle = 1, .increment = 1 };
	EXPECT_ERR(EPERM, other, POPUP_IOC_SET_POOL, &sp);
	sp.service_id = 0;
	EXPECT_ERR(ENOENT, self->fd, POPUP_IOC_SET_POOL, &sp);

	/* THREAD_EXIT with no registered thread, WITHDRAW edges. */
	memset(&t, 0, sizeof(t));
	t.id = e.service_id;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_THREAD_EXIT, &t);
	EXPECT_ERR(EPERM, other, POPUP_IOC_WITHDRAW, &t);
	t.flags = 1;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_WITHDRAW, &t);
	t.flags = 0;
	t.reserved = 1;
	EXPECT_ERR(EINVAL, self->fd, POPUP_IOC_WITHDRAW, &t);
	t.reserved = 0;
	EXPECT_EQ(1, listed(self->name));
	EXPECT_EQ(0, ioctl(self->fd, POPUP_IOC_WITHDRAW, &t));
	EXPECT_EQ(0, listed(self->name));
	EXPECT_ERR(ENOENT, self->fd, POPUP_IOC_WITHDRAW, &t);
	INIT_WAIT();
	EXPECT_ERR(ENOENT, self->fd, POPUP_IOC_WAIT, &w);
	close(other);
}

TEST_F(abi, unknown_numbers)
{
	char buf[256] = { 0 };

	for (unsigned int nr = 0x0b; nr < 0x100; nr++) {
		EXPECT_ERR(ENOTTY, self->fd, _IOWR(POPUP_IOC_MAGIC, nr, buf), buf);
		EXPECT_ERR(ENOTTY, self->fd, _IO(POPUP_IOC_MAGIC, nr), 0);
	}
	/* Known numbers with the wrong direction. */
	EXPECT_ERR(ENOTTY, self->fd, _IOR(POPUP_IOC_MAGIC, 0x06, struct popup_call), buf);
	EXPECT_ERR(ENOTTY, self->fd, _IO(POPUP_IOC_MAGIC, 0x07), 0);
}

TEST_HARNESS_MAIN
