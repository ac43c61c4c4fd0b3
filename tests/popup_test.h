/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers shared by the module tests: make sure popup.ko is loaded (the
 * tests run in scripts/vm, where nothing loads it for them) and open the
 * device. Outside a VM without the module, tests SKIP; under --vm the
 * runner counts a skip as a failure.
 */
#ifndef POPUP_TEST_H
#define POPUP_TEST_H

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

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

#endif /* POPUP_TEST_H */
