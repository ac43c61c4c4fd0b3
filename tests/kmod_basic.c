// SPDX-License-Identifier: GPL-2.0
/*
 * popup.ko basics: the device answers the version ioctl with the API this
 * header describes, refuses unknown commands with ENOTTY (never EINVAL, so
 * callers can tell "not supported" from "bad argument"), reports EFAULT for
 * bad pointers, and exposes one row of per-CPU counters per possible CPU
 * in /proc/popup/stats, where the open counter moves when we open it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "popup_test.h"
#include "uapi/linux/popup.h"

FIXTURE(dev) {
	int fd;
};

FIXTURE_SETUP(dev)
{
	int err = popup_test_load_module();

	self->fd = -1;
	if (err)
		SKIP(return, "popup.ko not loadable here (%s); run in scripts/vm", strerror(-err));
	self->fd = open("/dev/popup", O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, self->fd) TH_LOG("open /dev/popup: %s", strerror(errno));
}

FIXTURE_TEARDOWN(dev)
{
	if (self->fd >= 0)
		close(self->fd);
}

TEST_F(dev, version)
{
	struct popup_version ver;

	memset(&ver, 0xa5, sizeof(ver));
	ASSERT_EQ(0, ioctl(self->fd, POPUP_IOC_VERSION, &ver));
	EXPECT_EQ(POPUP_API_VERSION, ver.api_version);
	EXPECT_NE(0, ver.features & POPUP_FEAT_STATS);
	EXPECT_EQ(sysconf(_SC_NPROCESSORS_CONF) <= ver.nr_cpu_ids, 1);
	EXPECT_EQ(0, ver.reserved0);
	EXPECT_EQ(0, ver.reserved[0]);
	EXPECT_EQ(0, ver.reserved[1]);
}

TEST_F(dev, version_bad_pointer)
{
	EXPECT_EQ(-1, ioctl(self->fd, POPUP_IOC_VERSION, NULL));
	EXPECT_EQ(EFAULT, errno);
	EXPECT_EQ(-1, ioctl(self->fd, POPUP_IOC_VERSION, (void *)0xffffffffff600000ul));
	EXPECT_EQ(EFAULT, errno);
}

TEST_F(dev, unknown_ioctl)
{
	char buf[64] = { 0 };

	/* Right letter, unused number; wrong letter; version with a wrong size. */
	EXPECT_EQ(-1, ioctl(self->fd, _IOR(POPUP_IOC_MAGIC, 0xfe, buf), buf));
	EXPECT_EQ(ENOTTY, errno);
	EXPECT_EQ(-1, ioctl(self->fd, _IOR('x', 0x00, buf), buf));
	EXPECT_EQ(ENOTTY, errno);
	EXPECT_EQ(-1, ioctl(self->fd, _IOR(POPUP_IOC_MAGIC, 0x00, __u32), buf));
	EXPECT_EQ(ENOTTY, errno);
}

static int count_opens(void)
{
	char line[512];
	long total = 0, v;
	FILE *f = fopen("/proc/popup/stats", "r");

	if (!f)
		return -1;
	if (!fgets(line, sizeof(line), f) || strncmp(line, "cpu opens", 9)) {
		fclose(f);
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		int cpu;

		if (sscanf(line, "%d %ld", &cpu, &v) == 2)
			total += v;
	}
	fclose(f);
	return total;
}

TEST_F(dev, proc_stats)
{
	char line[512];
	int rows = 0, before, after, fd;
	FILE *f = fopen("/proc/popup/stats", "r");

	ASSERT_NE(NULL, f);
	while (fgets(line, sizeof(line), f))
		rows++;
	fclose(f);
	/* header + one row per possible CPU */
	EXPECT_EQ(sysconf(_SC_NPROCESSORS_CONF) + 1, rows);

	before = count_opens();
	ASSERT_LE(0, before);
	fd = open("/dev/popup", O_RDONLY);
	ASSERT_LE(0, fd);
	close(fd);
	after = count_opens();
	EXPECT_EQ(before + 1, after);
}

TEST_HARNESS_MAIN
