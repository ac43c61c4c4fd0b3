// SPDX-License-Identifier: GPL-2.0
/*
 * Exported services: the registry (name+version -> service), EXPORT,
 * WITHDRAW, SET_POOL, and /proc/popup/services.
 *
 * A service is found by id through popup_service_xa (RCU lookup plus
 * kref_get_unless_zero, for WAIT/REPLY/SET_POOL) and by name through the
 * popup_services list (popup_lock, for EXPORT and IMPORT).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/err.h>
#include <linux/mm.h>
#include <linux/pid.h>
#include <linux/sched.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/sort.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/xarray.h>

#include <linux/sched/task.h>

#include "popup_internal.h"

/* Registered services, by name (protected by popup_lock). */
static LIST_HEAD(popup_services);
/* Registered services, by id (xa_lock; added and erased under popup_lock) */
static DEFINE_XARRAY_ALLOC1(popup_service_xa);
static u32 popup_service_next;

static const struct popup_pool popup_pool_defaults = {
	.min_idle = 1,
	.max_idle = 4,
	.increment = 1,
	.max_threads = 16,
	.queue_limit = 256,
	.idle_timeout_ms = 10000,
};

/* Validate @p in place; an all-zero pool becomes the defaults. */
static int popup_pool_check(struct popup_pool *p)
{
	static const struct popup_pool zero;

	if (!memcmp(p, &zero, sizeof(zero))) {
		*p = popup_pool_defaults;
		return 0;
	}
	if (p->reserved)
		return -EINVAL;
	if (p->max_threads < 1 || p->max_threads > POPUP_MAX_THREADS)
		return -EINVAL;
	if (p->max_idle < 1 || p->max_idle < p->min_idle ||
	    p->max_idle > p->max_threads)
		return -EINVAL;
	if (p->increment < 1 || p->increment > p->max_threads)
		return -EINVAL;
	if (p->queue_limit > POPUP_MAX_QUEUE)
		return -EINVAL;
	return 0;
}

/*
 * A name is 1..POPUP_NAME_MAX-1 printable, non-space ASCII bytes followed
 * by a NUL within the array (so /proc/popup/services stays parseable).
 */
int popup_name_check(const char *name)
{
	const char *nul = memchr(name, '\0', POPUP_NAME_MAX);
	const char *c;

	if (!nul || nul == name)
		return -EINVAL;
	for (c = name; c < nul; c++)
		if (*c <= ' ' || *c > '~')
			return -EINVAL;
	return 0;
}

static void popup_service_release(struct kref *kref)
{
	struct popup_service *svc = container_of(kref, struct popup_service,
						 refs);

	unsigned int cpu;

	for (cpu = 0; svc->cpus && cpu < nr_cpu_ids; cpu++)
		if (svc->cpus[cpu].runner)
			put_task_struct(svc->cpus[cpu].runner);
	kfree(svc->cpus);
	kfree(svc->methods);
	kfree_rcu(svc, rcu);
}

/* May be called in atomic context: the release only frees memory. */
void popup_service_put(struct popup_service *svc)
{
	kref_put(&svc->refs, popup_service_release);
}

/*
 * Look up service @id owned by @proc and take a reference.
 * Returns ERR_PTR(-ENOENT) if there is none or it is withdrawn,
 * ERR_PTR(-EPERM) if another file owns it.
 */
struct popup_service *popup_service_get_owned(struct popup_proc *proc, u32 id)
{
	struct popup_service *svc;

	rcu_read_lock();
	svc = xa_load(&popup_service_xa, id);
	if (svc && !kref_get_unless_zero(&svc->refs))
		svc = NULL;
	rcu_read_unlock();
	if (!svc)
		return ERR_PTR(-ENOENT);
	if (READ_ONCE(svc->dead)) {
		popup_service_put(svc);
		return ERR_PTR(-ENOENT);
	}
	if (READ_ONCE(svc->owner) != proc) {
		popup_service_put(svc);
		return ERR_PTR(-EPERM);
	}
	return svc;
}

static struct popup_service *popup_service_find_locked(const char *name,
						       u32 version)
{
	struct popup_service *svc;

	lockdep_assert_held(&popup_lock);
	list_for_each_entry(svc, &popup_services, reg_node)
		if (svc->version == version && !strcmp(svc->name, name))
			return svc;
	return NULL;
}

/* Find a live service by name and version and take a reference. */
struct popup_service *popup_service_find(const char *name, u32 version)
{
	struct popup_service *svc;

	mutex_lock(&popup_lock);
	svc = popup_service_find_locked(name, version);
	if (svc)
		kref_get(&svc->refs);
	mutex_unlock(&popup_lock);
	return svc;
}

const struct popup_method_k *popup_method_find(struct popup_service *svc,
					       u32 id)
{
	u32 lo = 0, hi = svc->nmethods;

	while (lo < hi) {
		u32 mid = lo + (hi - lo) / 2;

		if (svc->methods[mid].id == id)
			return &svc->methods[mid];
		if (svc->methods[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static int popup_method_cmp(const void *a, const void *b)
{
	const struct popup_method_k *ma = a, *mb = b;

	if (ma->id == mb->id)
		return 0;
	return ma->id < mb->id ? -1 : 1;
}

/* Copy, validate and sort the method table; compute the slot size. */
static int popup_methods_load(struct popup_service *svc,
			      const struct popup_export *exp)
{
	const struct popup_method __user *um = u64_to_user_ptr(exp->methods);
	struct popup_method_k *mk;
	u32 i, largest = 0;

	if (exp->nmethods < 1 || exp->nmethods > POPUP_MAX_METHODS)
		return -EINVAL;
	mk = kcalloc(exp->nmethods, sizeof(*mk), GFP_KERNEL_ACCOUNT);
	if (!mk)
		return -ENOMEM;
	for (i = 0; i < exp->nmethods; i++) {
		struct popup_method m;

		if (copy_from_user(&m, &um[i], sizeof(m)))
			goto err_fault;
		if ((m.flags & ~POPUP_METHOD_ONEWAY) || m.reserved ||
		    m.max_arg > POPUP_MAX_MSG || m.max_res > POPUP_MAX_MSG)
			goto err_inval;
		mk[i].id = m.id;
		mk[i].flags = m.flags;
		mk[i].max_arg = m.max_arg;
		mk[i].max_res = m.max_res;
		largest = max3(largest, m.max_arg, m.max_res);
	}
	sort(mk, exp->nmethods, sizeof(*mk), popup_method_cmp, NULL);
	for (i = 1; i < exp->nmethods; i++)
		if (mk[i].id == mk[i - 1].id)
			goto err_inval;

	svc->methods = mk;
	svc->nmethods = exp->nmethods;
	svc->slot_size = max_t(u32, PAGE_ALIGN(largest), PAGE_SIZE);
	return 0;

err_fault:
	kfree(mk);
	return -EFAULT;
err_inval:
	kfree(mk);
	return -EINVAL;
}

int popup_ioctl_export(struct popup_proc *proc, struct popup_export *exp)
{
	struct popup_service *svc;
	int ret;

	if (exp->flags || exp->reserved[0] || exp->reserved[1])
		return -EINVAL;
	ret = popup_name_check(exp->name);
	if (ret)
		return ret;
	ret = popup_pool_check(&exp->pool);
	if (ret)
		return ret;

	svc = kzalloc(sizeof(*svc), GFP_KERNEL_ACCOUNT);
	if (!svc)
		return -ENOMEM;
	kref_init(&svc->refs);
	strscpy(svc->name, exp->name, sizeof(svc->name));
	svc->version = exp->version;
	svc->pool = exp->pool;
	svc->owner = proc;
	svc->owner_pid = task_tgid_nr(current);
	spin_lock_init(&svc->lock);
	INIT_LIST_HEAD(&svc->proc_node);
	INIT_LIST_HEAD(&svc->reg_node);
	INIT_LIST_HEAD(&svc->queue);
	INIT_LIST_HEAD(&svc->running);
	INIT_LIST_HEAD(&svc->idle);
	svc->spare_since = jiffies;
	INIT_LIST_HEAD(&svc->control);
	INIT_LIST_HEAD(&svc->replying);
	INIT_LIST_HEAD(&svc->notices);
	init_waitqueue_head(&svc->space_wq);
	popup_watch_init(svc);

	ret = popup_methods_load(svc, exp);
	if (ret)
		goto err_free;
	ret = -ENOMEM;
	svc->cpus = kcalloc(nr_cpu_ids, sizeof(*svc->cpus), GFP_KERNEL_ACCOUNT);
	if (!svc->cpus)
		goto err_free;

	mutex_lock(&popup_lock);
	mutex_lock(&proc->lock);
	if (proc->dead) {
		ret = -EBADF;
		goto err_unlock;
	}
	if (proc->nservices >= POPUP_MAX_SERVICES) {
		ret = -ENOSPC;
		goto err_unlock;
	}
	if (popup_service_find_locked(svc->name, svc->version)) {
		ret = -EEXIST;
		goto err_unlock;
	}
	ret = xa_alloc_cyclic(&popup_service_xa, &svc->id, svc,
			      XA_LIMIT(1, INT_MAX), &popup_service_next,
			      GFP_KERNEL);
	if (ret < 0)
		goto err_unlock;
	list_add_tail(&svc->reg_node, &popup_services);
	list_add_tail(&svc->proc_node, &proc->services);
	proc->nservices++;
	spin_lock_bh(&svc->lock);
	popup_pool_update_locked(svc);
	spin_unlock_bh(&svc->lock);
	mutex_unlock(&proc->lock);
	mutex_unlock(&popup_lock);

	exp->service_id = svc->id;
	exp->slot_size = svc->slot_size;
	popup_stat_inc(POPUP_STAT_EXPORTS);
	return 0;

err_unlock:
	mutex_unlock(&proc->lock);
	mutex_unlock(&popup_lock);
err_free:
	popup_service_put(svc);
	return ret;
}

/*
 * Withdraw @svc: unregister it, abort its contexts, wake its waiters.
 * Idempotent. The caller holds a reference; the registry's is dropped.
 */
void popup_service_withdraw(struct popup_service *svc)
{
	struct popup_proc *owner;
	LIST_HEAD(puts);

	mutex_lock(&popup_lock);
	if (list_empty(&svc->reg_node)) {
		mutex_unlock(&popup_lock);
		return;
	}
	list_del_init(&svc->reg_node);
	xa_erase(&popup_service_xa, svc->id);
	owner = svc->owner;

	mutex_lock(&owner->lock);
	if (!list_empty(&svc->proc_node)) {
		list_del_init(&svc->proc_node);
		owner->nservices--;
	}
	mutex_unlock(&owner->lock);

	spin_lock_bh(&svc->lock);
	popup_service_abort_locked(svc, &puts);
	spin_unlock_bh(&svc->lock);
	mutex_unlock(&popup_lock);
	popup_watch_stop(svc);

	popup_binding_put_list(&puts);
	popup_service_put(svc);
}

int popup_ioctl_withdraw(struct popup_proc *proc, const struct popup_target *t)
{
	struct popup_service *svc;

	if (t->flags || t->reserved)
		return -EINVAL;
	svc = popup_service_get_owned(proc, t->id);
	if (IS_ERR(svc))
		return PTR_ERR(svc);
	/* Before: no new datagrams. After: one attached meanwhile. */
	popup_socks_detach(proc, svc);
	popup_service_withdraw(svc);
	popup_socks_detach(proc, svc);
	popup_service_put(svc);
	return 0;
}

/* Make every idle and control waiter re-check the service. */
static void popup_service_kick_locked(struct popup_service *svc)
{
	struct popup_waiter *w;

	lockdep_assert_held(&svc->lock);
	list_for_each_entry(w, &svc->idle, node) {
		w->kicked = true;
		wake_up_interruptible(&w->wq);
	}
	list_for_each_entry(w, &svc->control, node) {
		w->kicked = true;
		wake_up_interruptible(&w->wq);
	}
}

int popup_ioctl_set_pool(struct popup_proc *proc,
			 const struct popup_set_pool *sp)
{
	struct popup_pool pool = sp->pool;
	struct popup_service *svc;
	int ret;

	if (sp->flags || sp->reserved)
		return -EINVAL;
	ret = popup_pool_check(&pool);
	if (ret)
		return ret;
	svc = popup_service_get_owned(proc, sp->service_id);
	if (IS_ERR(svc))
		return PTR_ERR(svc);

	spin_lock_bh(&svc->lock);
	if (svc->dead) {
		ret = -ENOENT;
	} else {
		svc->pool = pool;
		popup_service_kick_locked(svc);
		popup_pool_update_locked(svc);
		wake_up_interruptible_all(&svc->space_wq);
	}
	spin_unlock_bh(&svc->lock);
	popup_service_put(svc);
	return ret;
}

/*
 * flush: @files closed its last descriptor of @proc's file. Wake that
 * process's threads blocked in WAIT on it with EBADF.
 */
void popup_services_flush(struct popup_proc *proc, void *files)
{
	struct popup_waiter *w, *tmp;
	struct popup_service *svc;

	mutex_lock(&proc->lock);
	list_for_each_entry(svc, &proc->services, proc_node) {
		spin_lock_bh(&svc->lock);
		/* Off the idle list: no call may be handed to them any more. */
		list_for_each_entry_safe(w, tmp, &svc->idle, node) {
			if (w->files != files)
				continue;
			list_del_init(&w->node);
			svc->nidle--;
			w->closed = true;
			w->kicked = true;
			wake_up_interruptible(&w->wq);
		}
		list_for_each_entry_safe(w, tmp, &svc->control, node) {
			if (w->files != files)
				continue;
			list_del_init(&w->node);
			w->closed = true;
			w->kicked = true;
			wake_up_interruptible(&w->wq);
		}
		spin_unlock_bh(&svc->lock);
	}
	mutex_unlock(&proc->lock);
}

/* Poll helper: does any service of @proc have a pending notice? */
bool popup_services_pending(struct popup_proc *proc)
{
	struct popup_service *svc;
	bool pending = false;

	mutex_lock(&proc->lock);
	list_for_each_entry(svc, &proc->services, proc_node) {
		spin_lock_bh(&svc->lock);
		if (svc->spawn_req || !list_empty(&svc->notices))
			pending = true;
		spin_unlock_bh(&svc->lock);
		if (pending)
			break;
	}
	mutex_unlock(&proc->lock);
	return pending;
}

/* /proc/popup/services: one line per registered service. */
int popup_services_show(struct seq_file *m, void *v)
{
	struct popup_service *svc;

	seq_puts(m, "id name version pid methods idle busy max queued calls errors burst\n");
	mutex_lock(&popup_lock);
	list_for_each_entry(svc, &popup_services, reg_node) {
		unsigned int cpu;
		char sep = ' ';
		u32 busy;

		spin_lock_bh(&svc->lock);
		busy = svc->nthreads > svc->nidle ?
		       svc->nthreads - svc->nidle : 0;
		seq_printf(m, "%u %s %u %d %u %u %u %u %u %llu %llu",
			   svc->id, svc->name, svc->version, svc->owner_pid,
			   svc->nmethods, svc->nidle, busy,
			   svc->pool.max_threads, svc->nqueued, svc->calls,
			   svc->errors);
		/* The CPUs in burst mode (call.c), "-" for none. */
		for (cpu = 0; cpu < nr_cpu_ids; cpu++) {
			if (!svc->cpus[cpu].burst.on)
				continue;
			seq_printf(m, "%c%u", sep, cpu);
			sep = ',';
		}
		seq_puts(m, sep == ' ' ? " -\n" : "\n");
		spin_unlock_bh(&svc->lock);
	}
	mutex_unlock(&popup_lock);
	return 0;
}
