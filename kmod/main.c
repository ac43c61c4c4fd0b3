// SPDX-License-Identifier: GPL-2.0
/*
 * popup.ko: the /dev/popup misc device.
 *
 * Design (for users of the ABI; include/uapi/linux/popup.h has the details
 * and the call sequence)
 * ======
 * LRPC over shared argument stacks, with pop-up handler contexts:
 *   - A server EXPORTs an interface (name, version, methods with their
 *     largest argument and result, thread-pool settings) and gets a service
 *     id. Its threads loop in WAIT / REPLY_WAIT: one system call per
 *     request.
 *   - A client IMPORTs name+version and gets a binding: nslots A-stack slots
 *     of slot_size bytes (the service's largest message, page-aligned),
 *     allocated by the kernel. The client mmaps them; the server maps the
 *     same pages when a context first tells it to (POPUP_CTX_MAP). Neither
 *     arguments nor results are copied, and the kernel never reads them.
 *   - CALL(binding, method, slot, arg_len) creates a context with the
 *     caller's credentials, priority and CPU, and hands it straight to an
 *     idle handler thread (the one that last waited on the caller's CPU if
 *     any) with a synchronous wake-up, or queues it by priority. REPLY wakes
 *     the caller, who reads the result in its slot.
 *   - The pool grows by spawn requests to userspace (Binder's
 *     BR_SPAWN_LOOPER, QNX's increment/lo_water) and shrinks by RETIRE
 *     orders (QNX hi_water and an idle timeout).
 *   - Files own what they create: closing the server withdraws its services
 *     (callers get ECONNRESET), closing the client drops its bindings.
 *     A file is released when its last descriptor and last mapping are gone.
 *   - Network arrival (arrival.c): the server ATTACHes its per-CPU UDP
 *     worker sockets to a service; each datagram becomes a KIND_DGRAM
 *     context created from the socket's sk_data_ready (softirq), with the
 *     payload copied there into a slot of the socket's receive area (a
 *     binding the server maps), and handed to an idle thread on that CPU
 *     or queued for the one running there; REPLY sends the answer from
 *     the slot. Overload is answered BUSY by the kernel.
 *   - Burst wake-ups (call.c): while the threads waking on a CPU take
 *     twice as many contexts per wake-up that way, they sleep as
 *     SCHED_BATCH (switched back on waking), so a hand-off does not
 *     preempt a client that has more requests to send; the batch_wakeups
 *     parameter turns it off. /proc/popup/services lists those CPUs.
 *   - TCP arrival (arrival_tcp.c): an ATTACHed TCP listener's connections
 *     are accepted by a work item and handed to a handler thread as a new
 *     descriptor (KIND_CONN); a connection the server PARKs back becomes a
 *     KIND_STREAM context per request frame, read into a slot of the
 *     listener's receive area by the WAIT that returns it and answered by
 *     REPLY on the connection.
 *
 * This file owns the device life cycle (module init and exit, open, flush,
 * release, poll) and the ioctl dispatcher. Each ioctl case follows the same
 * three steps: copy the argument in, call a popup_ioctl_<name>() helper
 * that does the work, copy the result out. service.c holds the registry,
 * binding.c the imports and mmap, call.c contexts and pools, arrival.c
 * attached sockets.
 *
 * Objects and references
 * ======================
 *   popup_proc     one per open file; owned by file->private_data
 *   popup_service  registry (until withdrawn), each binding, each ioctl
 *                  in progress; freed with RCU (looked up locklessly by id)
 *   popup_binding  @active (client ownership + contexts in flight) holds one
 *                  reference; each vma, a queued UNMAP notice and each ioctl
 *                  in progress hold one; freed with RCU
 *   popup_ctx      the service side (until reply, abort or take-back) and a
 *                  synchronous caller, or a kernel-reply list; allocated
 *                  from popup_ctx_cache
 *   popup_waiter   on the kernel stack of a thread in WAIT
 *   popup_sock     the attachment (owner->socks, or for a parked TCP
 *                  connection its listener's @conns, until detach), each
 *                  context, its queued work items, and each of its parked
 *                  connections (@parent); holds the socket's file, the
 *                  service and (until detach) the receive area's @active
 *                  count; found by sk through an RCU hash; freed with RCU
 *
 * Locking overview
 * ================
 * Locks, in the order they must be taken:
 *   1. popup_lock (mutex): the service registry (names, ids)
 *   2. proc->lock (mutex): a file's service, binding and socket lists and
 *      limits
 *   3. lock_sock(sk), then sk->sk_callback_lock (rwlock, write with bh
 *      off): attaching and detaching a socket's callback (under 2 at
 *      attach, without it at detach)
 *   4. popup_sock_lock (spinlock): writers of the attached-socket hash
 *      (readers use RCU: the softirq callback)
 *   5. mm->mmap_lock (taken by the core around mmap and vm_ops; the module
 *      never takes it itself and never holds 1 or 2 under it)
 *   6. svc->lock (spinlock, always with bottom halves disabled, as the
 *      arrival callback takes it in softirq): all dynamic state of one
 *      service, of its bindings (slots, counts, maps), of its contexts and
 *      of its attached sockets (kernel-reply lists); never two at once,
 *      never with 3 or 4
 *   7. xa_lock of the id arrays, wait-queue locks, the socket's queue
 *      locks (inside the helpers)
 * The TCP callbacks run under the socket's own spinlock (bh_lock_sock) and
 * take svc->lock inside it; lock_sock() (sleeping reads and writes, the
 * accept queue's rskq_lock, a child's sk_callback_lock) is never taken with
 * svc->lock held. A parked connection's send_lock (mutex) is held around
 * the write of one whole reply, so that replies of several handler threads
 * never interleave (tcp_sendmsg drops the socket lock while waiting for
 * room); it is taken with no other lock held, lock_sock and svc->lock
 * nest inside it, and the work item only try-locks it.
 * Sleeping work on sockets (sendmsg, reading a TCP frame into a slot) is
 * done with svc->lock dropped, the context parked in FILL or SEND, where
 * withdrawal leaves it to the thread that parked it. A UDP socket's slot
 * contexts are claimed with atomic bit operations (popup_sock.dslots)
 * before svc->lock is taken, and given back by the context's release.
 * Functions that require a lock on entry carry a _locked suffix and
 * lockdep_assert_held() it. Binding references are never dropped under a
 * spinlock (the last put frees pages with kvfree): _locked helpers move
 * them to a local list that the caller drops after unlocking. Datagram
 * contexts and attached sockets may be put anywhere (their release only
 * frees, gives a slot back and defers fput); a callback that may still
 * run after a detach is waited for with synchronize_rcu(), work items
 * with flush_work() and, at module exit, destroy_workqueue().
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/fdtable.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/pid.h>
#include <linux/poll.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include <uapi/linux/popup.h>

#include "popup_internal.h"

/* Lock 1 of the overview: the service registry. */
DEFINE_MUTEX(popup_lock);

/*
 * Same layout on i386 and x86-64: every __u64 on an 8-byte boundary and
 * every size a multiple of 8, and the version-1 sizes are frozen.
 */
#define POPUP_ASSERT_U64(type, field) \
	static_assert(offsetof(struct type, field) % 8 == 0)
#define POPUP_ASSERT_SIZE(type, sz) \
	static_assert(sizeof(struct type) == (sz) && sizeof(struct type) % 8 == 0)

POPUP_ASSERT_SIZE(popup_version, 32);
POPUP_ASSERT_SIZE(popup_method, 24);
POPUP_ASSERT_U64(popup_method, reserved);
POPUP_ASSERT_SIZE(popup_pool, 32);
POPUP_ASSERT_U64(popup_pool, reserved);
POPUP_ASSERT_SIZE(popup_export, 144);
POPUP_ASSERT_U64(popup_export, methods);
POPUP_ASSERT_U64(popup_export, pool);
POPUP_ASSERT_U64(popup_export, reserved);
POPUP_ASSERT_SIZE(popup_target, 16);
POPUP_ASSERT_SIZE(popup_set_pool, 48);
POPUP_ASSERT_U64(popup_set_pool, pool);
POPUP_ASSERT_SIZE(popup_import, 128);
POPUP_ASSERT_U64(popup_import, map_offset);
POPUP_ASSERT_U64(popup_import, map_size);
POPUP_ASSERT_U64(popup_import, reserved);
POPUP_ASSERT_SIZE(popup_call, 56);
POPUP_ASSERT_U64(popup_call, reserved);
POPUP_ASSERT_SIZE(popup_reply, 24);
POPUP_ASSERT_SIZE(popup_context, 104);
POPUP_ASSERT_U64(popup_context, slot_offset);
POPUP_ASSERT_U64(popup_context, map_offset);
POPUP_ASSERT_U64(popup_context, map_size);
static_assert(offsetof(struct popup_context, peer_family) == 36);
static_assert(offsetof(struct popup_context, peer_addr) == 88);
POPUP_ASSERT_SIZE(popup_wait, 168);
POPUP_ASSERT_U64(popup_wait, reply);
POPUP_ASSERT_U64(popup_wait, ctx);
POPUP_ASSERT_U64(popup_wait, reserved);
static_assert(offsetof(struct popup_export, name) == 8);
static_assert(offsetof(struct popup_import, name) == 8);
static_assert(offsetof(struct popup_wait, reply_result) == 40);
POPUP_ASSERT_SIZE(popup_attach, 64);
POPUP_ASSERT_SIZE(popup_park, 40);
POPUP_ASSERT_U64(popup_park, reserved);
POPUP_ASSERT_U64(popup_attach, map_offset);
POPUP_ASSERT_U64(popup_attach, map_size);
POPUP_ASSERT_U64(popup_attach, reserved);

static int popup_open(struct inode *inode, struct file *file)
{
	struct popup_proc *proc;

	proc = kzalloc(sizeof(*proc), GFP_KERNEL_ACCOUNT);
	if (!proc)
		return -ENOMEM;
	mutex_init(&proc->lock);
	INIT_LIST_HEAD(&proc->services);
	INIT_LIST_HEAD(&proc->bindings);
	INIT_LIST_HEAD(&proc->socks);
	init_waitqueue_head(&proc->poll_wq);
	proc->pid = get_pid(task_tgid(current));
	file->private_data = proc;
	popup_stat_inc(POPUP_STAT_OPENS);
	return 0;
}

static int popup_match_file(const void *p, struct file *file, unsigned int fd)
{
	return p == file;
}

/*
 * close(): when a process drops its last descriptor of the file, its
 * threads blocked in WAIT return EBADF. Other processes sharing the file
 * (fork, SCM_RIGHTS) are not affected; the file lives on until release.
 */
static int popup_flush(struct file *file, fl_owner_t id)
{
	struct popup_proc *proc = file->private_data;

	if (!id || id != current->files)
		return 0;
	if (iterate_fd(current->files, 0, popup_match_file, file))
		return 0;
	popup_services_flush(proc, id);
	return 0;
}

static int popup_release(struct inode *inode, struct file *file)
{
	struct popup_proc *proc = file->private_data;
	struct popup_service *svc;

	mutex_lock(&proc->lock);
	proc->dead = true;
	mutex_unlock(&proc->lock);

	/* No new datagram contexts; then withdrawal answers the queued ones. */
	popup_socks_detach(proc, NULL);
	for (;;) {
		mutex_lock(&proc->lock);
		svc = list_first_entry_or_null(&proc->services,
					       struct popup_service, proc_node);
		if (svc)
			kref_get(&svc->refs);
		mutex_unlock(&proc->lock);
		if (!svc)
			break;
		popup_service_withdraw(svc);
		popup_service_put(svc);
	}
	popup_bindings_release(proc);

	put_pid(proc->pid);
	kfree(proc);
	return 0;
}

static __poll_t popup_poll(struct file *file, poll_table *wait)
{
	struct popup_proc *proc = file->private_data;

	poll_wait(file, &proc->poll_wq, wait);
	return popup_services_pending(proc) ? EPOLLIN | EPOLLRDNORM : 0;
}

static void popup_ioctl_version(struct popup_version *ver)
{
	memset(ver, 0, sizeof(*ver));
	ver->api_version = POPUP_API_VERSION;
	ver->features = POPUP_FEAT_STATS | POPUP_FEAT_RPC | POPUP_FEAT_ARRIVAL |
			POPUP_FEAT_TCP;
	ver->nr_cpu_ids = nr_cpu_ids;
}

/*
 * Copy in a structure that starts with a __u32 size: the ioctl number
 * promises @ksize bytes; @size may announce more, which must be zero.
 */
static int popup_copy_in(void *karg, size_t ksize, void __user *uarg)
{
	u32 usize;
	int ret;

	if (copy_from_user(karg, uarg, ksize))
		return -EFAULT;
	usize = *(u32 *)karg;
	if (usize < ksize)
		return -EINVAL;
	if (usize > PAGE_SIZE)
		return -E2BIG;
	if (usize > ksize) {
		ret = check_zeroed_user(uarg + ksize, usize - ksize);
		if (ret < 0)
			return ret;
		if (!ret)
			return -E2BIG;
	}
	return 0;
}

/*
 * WAIT and REPLY_WAIT run once per request, so their argument moves as
 * 64-bit words rather than through copy_{from,to}_user(), whose string
 * instructions ("rep movsb" on ERMS CPUs) QEMU's TCG, the project's test
 * guest, emulates a byte at a time: 176 iterations per copy, three copies
 * per call. The words cost the same natively. Only the parts each
 * direction needs move: in, the header, the reply and the reserved
 * words; out, @kind and everything from @reply_result on.
 */
#define POPUP_WAIT_IN_WORDS	(offsetof(struct popup_wait, reply_result) / 8)
#define POPUP_WAIT_OUT_FIRST	(offsetof(struct popup_wait, reply_result) / 8)
#define POPUP_WAIT_OUT_LAST	(offsetof(struct popup_wait, reserved) / 8)
#define POPUP_WAIT_RSV_FIRST	(offsetof(struct popup_wait, reserved) / 8)
#define POPUP_WAIT_WORDS	(sizeof(struct popup_wait) / 8)

static int popup_wait_copy_in(struct popup_wait *w, void __user *ubuf)
{
	u64 __user *uw = ubuf;
	u64 *kw = (u64 *)w;
	unsigned int i;
	u32 usize;

	BUILD_BUG_ON(sizeof(*w) % 8 || offsetof(struct popup_wait, kind) != 12);
	if (!user_read_access_begin(uw, sizeof(*w)))
		return -EFAULT;
	for (i = 0; i < POPUP_WAIT_IN_WORDS; i++)
		unsafe_get_user(kw[i], &uw[i], efault);
	usize = w->size;
	if (usize != sizeof(*w)) {	/* a newer or older caller */
		user_read_access_end();
		return popup_copy_in(w, sizeof(*w), ubuf);
	}
	for (i = POPUP_WAIT_RSV_FIRST; i < POPUP_WAIT_WORDS; i++)
		unsafe_get_user(kw[i], &uw[i], efault);
	user_read_access_end();
	/* Outputs start out zero: none of the kernel's stack goes out. */
	for (i = POPUP_WAIT_OUT_FIRST; i < POPUP_WAIT_OUT_LAST; i++)
		kw[i] = 0;
	return 0;
efault:
	user_read_access_end();
	return -EFAULT;
}

/*
 * Store the results of @w. @probe: store back what was read instead, to
 * fail before a context is taken if the result could not be stored (the
 * first and last words are on the only two pages the argument may span).
 */
static int popup_wait_copy_out(void __user *ubuf, const struct popup_wait *w,
			       bool probe)
{
	u64 __user *uw = ubuf;
	const u64 *kw = (const u64 *)w;
	unsigned int i;

	if (!user_write_access_begin(uw, sizeof(*w)))
		return -EFAULT;
	if (probe) {
		unsafe_put_user(kw[0], &uw[0], efault);
		unsafe_put_user(kw[POPUP_WAIT_WORDS - 1],
				&uw[POPUP_WAIT_WORDS - 1], efault);
	} else {
		unsafe_put_user(w->kind, &((struct popup_wait __user *)ubuf)->kind,
				efault);
		for (i = POPUP_WAIT_OUT_FIRST; i < POPUP_WAIT_OUT_LAST; i++)
			unsafe_put_user(kw[i], &uw[i], efault);
	}
	user_write_access_end();
	return 0;
efault:
	user_write_access_end();
	return -EFAULT;
}

static long popup_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct popup_proc *proc = file->private_data;
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
	case POPUP_IOC_EXPORT: {
		struct popup_export exp;
		struct popup_target t = {};

		ret = popup_copy_in(&exp, sizeof(exp), ubuf);
		if (ret)
			break;
		ret = popup_ioctl_export(proc, &exp);
		if (ret)
			break;
		if (copy_to_user(ubuf, &exp, sizeof(exp))) {
			t.id = exp.service_id;
			popup_ioctl_withdraw(proc, &t);
			ret = -EFAULT;
		}
		break;
	}
	case POPUP_IOC_WITHDRAW:
	case POPUP_IOC_UNIMPORT:
	case POPUP_IOC_THREAD_EXIT:
	case POPUP_IOC_DETACH: {
		struct popup_target t;

		if (copy_from_user(&t, ubuf, sizeof(t))) {
			ret = -EFAULT;
			break;
		}
		if (cmd == POPUP_IOC_WITHDRAW)
			ret = popup_ioctl_withdraw(proc, &t);
		else if (cmd == POPUP_IOC_UNIMPORT)
			ret = popup_ioctl_unimport(proc, &t);
		else if (cmd == POPUP_IOC_DETACH)
			ret = popup_ioctl_detach(proc, &t);
		else
			ret = popup_ioctl_thread_exit(proc, &t);
		break;
	}
	case POPUP_IOC_SET_POOL: {
		struct popup_set_pool sp;

		if (copy_from_user(&sp, ubuf, sizeof(sp))) {
			ret = -EFAULT;
			break;
		}
		ret = popup_ioctl_set_pool(proc, &sp);
		break;
	}
	case POPUP_IOC_IMPORT: {
		struct popup_import imp;
		struct popup_target t = {};

		ret = popup_copy_in(&imp, sizeof(imp), ubuf);
		if (ret)
			break;
		ret = popup_ioctl_import(proc, &imp);
		if (ret)
			break;
		if (copy_to_user(ubuf, &imp, sizeof(imp))) {
			t.id = imp.binding_id;
			popup_ioctl_unimport(proc, &t);
			ret = -EFAULT;
		}
		break;
	}
	case POPUP_IOC_ATTACH: {
		struct popup_attach at;
		struct popup_target t = {};

		ret = popup_copy_in(&at, sizeof(at), ubuf);
		if (ret)
			break;
		ret = popup_ioctl_attach(proc, &at);
		if (ret)
			break;
		if (copy_to_user(ubuf, &at, sizeof(at))) {
			t.id = at.attach_id;
			popup_ioctl_detach(proc, &t);
			ret = -EFAULT;
		}
		break;
	}
	case POPUP_IOC_PARK: {
		struct popup_park pk;
		struct popup_target t = { .flags = POPUP_DETACH_CONN };

		ret = popup_copy_in(&pk, sizeof(pk), ubuf);
		if (ret)
			break;
		ret = popup_ioctl_park(proc, &pk);
		if (ret)
			break;
		if (copy_to_user(ubuf, &pk, sizeof(pk))) {
			t.id = pk.conn_id;
			popup_ioctl_detach(proc, &t);
			ret = -EFAULT;
		}
		break;
	}
	case POPUP_IOC_CALL: {
		struct popup_call call;

		ret = popup_copy_in(&call, sizeof(call), ubuf);
		if (ret)
			break;
		ret = popup_ioctl_call(proc, &call);
		/* On EFAULT here the call completed; its status is lost. */
		if (!ret && copy_to_user(ubuf, &call, sizeof(call)))
			ret = -EFAULT;
		break;
	}
	case POPUP_IOC_REPLY: {
		struct popup_reply r;

		if (copy_from_user(&r, ubuf, sizeof(r))) {
			ret = -EFAULT;
			break;
		}
		ret = popup_ioctl_reply(proc, &r);
		break;
	}
	case POPUP_IOC_WAIT:
	case POPUP_IOC_REPLY_WAIT: {
		struct popup_wait w;

		ret = popup_wait_copy_in(&w, ubuf);
		if (ret)
			break;
		/* Fail before taking a context if the result cannot be stored. */
		ret = popup_wait_copy_out(ubuf, &w, true);
		if (ret)
			break;
		ret = popup_ioctl_wait(proc, &w, cmd == POPUP_IOC_REPLY_WAIT);
		/* REPLY_WAIT reports @reply_result even when the wait fails. */
		if (ret && cmd != POPUP_IOC_REPLY_WAIT)
			break;
		if (popup_wait_copy_out(ubuf, &w, false) && !ret) {
			/* Lost result: answer the call ourselves. */
			if (w.kind == POPUP_WAIT_KIND_CALL ||
			    w.kind == POPUP_WAIT_KIND_DGRAM ||
			    w.kind == POPUP_WAIT_KIND_STREAM) {
				struct popup_reply r = {
					.ctx_id = w.ctx.ctx_id,
					.status = -EFAULT,
				};

				popup_ioctl_reply(proc, &r);
			}
			ret = -EFAULT;
		}
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
	.flush = popup_flush,
	.release = popup_release,
	.poll = popup_poll,
	.mmap = popup_mmap,
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

	ret = popup_ctx_cache_init();
	if (ret)
		goto err_cache_failed;

	ret = popup_arrival_init();
	if (ret)
		goto err_arrival_failed;

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
	popup_arrival_exit();
err_arrival_failed:
	popup_ctx_cache_exit();
err_cache_failed:
	return ret;
}

static void __exit popup_exit(void)
{
	misc_deregister(&popup_miscdev);
	popup_proc_exit();
	popup_arrival_exit();	/* kernel replies of detached sockets */
	rcu_barrier();		/* kfree_rcu of services, bindings, sockets */
	popup_ctx_cache_exit();
	pr_info("unloaded\n");
}

module_init(popup_init);
module_exit(popup_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("popup: LRPC-style calls and pop-up handler contexts");
MODULE_AUTHOR("popup developers");
