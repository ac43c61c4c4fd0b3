// SPDX-License-Identifier: GPL-2.0
/*
 * popup.ko: the /dev/popup misc device.
 *
 * This file owns the device life cycle (module init and exit, open, release)
 * and the ioctl dispatcher. Each ioctl case follows the same three steps:
 * copy the argument in, call a popup_ioctl_<name>() helper that does the
 * work, copy the result out.
 *
 * Locking overview
 * ================
 * Locks, in the order they must be taken:
 *   (none yet: the per-CPU counters are lockless)
 * Functions that require a lock on entry carry a _locked suffix.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/uaccess.h>

#include <uapi/linux/popup.h>

#include "popup_internal.h"

static int popup_open(struct inode *inode, struct file *file)
{
	popup_stat_inc(POPUP_STAT_OPENS);
	return 0;
}

static int popup_release(struct inode *inode, struct file *file)
{
	return 0;
}

static void popup_ioctl_version(struct popup_version *ver)
{
	memset(ver, 0, sizeof(*ver));
	ver->api_version = POPUP_API_VERSION;
	ver->features = POPUP_FEAT_STATS;
	ver->nr_cpu_ids = nr_cpu_ids;
}

static long popup_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	void __user *ubuf = (void __user *)arg;
	long ret;

	popup_stat_inc(POPUP_STAT_IOCTLS);

	switch (cmd) {
	case POPUP_IOC_VERSION: {
		struct popup_version ver;

		popup_ioctl_version(&ver);
		ret = copy_to_user(ubuf, &ver, sizeof(ver)) ? -EFAULT : 0;
		break;
	}
	default:
		ret = -ENOTTY;
		break;
	}

	if (ret < 0 && ret != -ENOTTY)
		popup_stat_inc(POPUP_STAT_ERRORS);
	return ret;
}

static const struct file_operations popup_fops = {
	.owner = THIS_MODULE,
	.open = popup_open,
	.release = popup_release,
	.unlocked_ioctl = popup_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice popup_miscdev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = POPUP_DEVICE_NAME,
	.fops = &popup_fops,
	.mode = 0666,
};

static int __init popup_init(void)
{
	int ret;

	ret = popup_proc_init();
	if (ret)
		goto err_proc_failed;

	ret = misc_register(&popup_miscdev);
	if (ret)
		goto err_misc_failed;

	pr_info("loaded, api %u\n", POPUP_API_VERSION);
	return 0;

err_misc_failed:
	popup_proc_exit();
err_proc_failed:
	return ret;
}

static void __exit popup_exit(void)
{
	misc_deregister(&popup_miscdev);
	popup_proc_exit();
	pr_info("unloaded\n");
}

module_init(popup_init);
module_exit(popup_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("popup: LRPC-style calls and pop-up handler contexts");
MODULE_AUTHOR("popup developers");
