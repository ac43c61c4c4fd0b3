/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * popup: kernel-assisted request dispatch.
 *
 * This header is the whole ABI between popup.ko (/dev/popup) and userspace.
 * Every structure uses explicit-width types, carries explicit padding so the
 * layout is identical on i386 and x86-64, and ends in reserved fields that
 * callers must zero. Structures that may grow start with a @size field set
 * by the caller to sizeof() of the structure it was compiled against; the
 * kernel accepts a smaller size (older userspace, missing fields read as
 * zero) and a larger one only if the extra bytes are zero.
 *
 * NOTE: errno contract, for every ioctl on /dev/popup:
 *   ENOTTY   unknown command
 *   EFAULT   an argument pointer is not readable or writable
 *   EINVAL   a reserved field or an unknown flag bit is non-zero, a size is
 *            out of range, or a string is not NUL-terminated
 *   E2BIG    @size is larger than the kernel's structure and the excess is
 *            not zero
 *   EINTR    a signal arrived while blocked; nothing was changed and the
 *            call may be retried
 */
#ifndef _UAPI_LINUX_POPUP_H
#define _UAPI_LINUX_POPUP_H

#include <linux/types.h>
#include <linux/ioctl.h>

/* Incremented on any incompatible change to this header. */
#define POPUP_API_VERSION	1

/* Device node created by the module. */
#define POPUP_DEVICE_NAME	"popup"

/* All popup ioctls use this letter (unassigned in ioctl-number.rst). */
#define POPUP_IOC_MAGIC		0xB7

/**
 * struct popup_version - POPUP_IOC_VERSION result
 * @api_version:  POPUP_API_VERSION the module was built with
 * @features:     POPUP_FEAT_* bits the module supports
 * @nr_cpu_ids:   number of possible CPU ids, to size per-CPU reads
 * @reserved0:    zero
 * @reserved:     zero
 */
struct popup_version {
	__u32 api_version;
	__u32 features;
	__u32 nr_cpu_ids;
	__u32 reserved0;
	__u64 reserved[2];
};

/* Per-CPU counters are readable through /proc/popup/stats. */
#define POPUP_FEAT_STATS	(1U << 0)

#define POPUP_IOC_VERSION	_IOR(POPUP_IOC_MAGIC, 0x00, struct popup_version)

#endif /* _UAPI_LINUX_POPUP_H */
