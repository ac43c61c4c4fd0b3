// SPDX-License-Identifier: GPL-2.0
/*
 * Bindings (imports) and their argument stacks.
 *
 * A binding owns nslots * slot_size bytes of zeroed, memcg-charged pages,
 * allocated at IMPORT. Both the client and the server map the same pages
 * with mmap(offset = binding id << PAGE_SHIFT); the pages are inserted at
 * mmap time (vm_insert_pages), so arguments and results are never copied
 * and the kernel never touches them. Each vma holds a binding reference
 * and counts in client_maps or server_maps; vmas cannot be split
 * (may_split), grown (VM_DONTEXPAND) or inherited (VM_DONTCOPY), so every
 * vma covers one whole binding and the counts stay exact.
 *
 * Lifetime: @active counts the client's ownership plus the contexts in
 * flight. When it drops to zero the binding is dead; if the server still
 * maps it, a KIND_UNMAP notice asks the server to munmap it, else the
 * reference that @active held is dropped. The id stays allocated until the
 * last reference (vmas included) is gone, so a stale server cache entry
 * can never point at a new binding with the same id while it is mapped.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/err.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/overflow.h>
#include <linux/slab.h>
#include <linux/xarray.h>

#include "popup_internal.h"

/* Bindings by id (xa_lock); entries live until the last reference. */
static DEFINE_XARRAY_ALLOC1(popup_binding_xa);
static u32 popup_binding_next;

static void popup_binding_release(struct kref *kref)
{
	struct popup_binding *b = container_of(kref, struct popup_binding,
					       refs);
	u32 i;

	xa_erase(&popup_binding_xa, b->id);
	for (i = 0; b->pages && i < b->npages; i++)
		if (b->pages[i])
			__free_page(b->pages[i]);
	kvfree(b->pages);
	popup_service_put(b->svc);
	kfree_rcu(b, rcu);
}

/* Drop a reference. Might sleep (kvfree): never under a spinlock. */
void popup_binding_put(struct popup_binding *b)
{
	might_sleep();
	kref_put(&b->refs, popup_binding_release);
}

/* Drop the references queued on @puts through notice_node. */
void popup_binding_put_list(struct list_head *puts)
{
	struct popup_binding *b, *tmp;

	list_for_each_entry_safe(b, tmp, puts, notice_node) {
		list_del_init(&b->notice_node);
		popup_binding_put(b);
	}
}

/* Look up binding @id and take a reference; NULL if there is none. */
struct popup_binding *popup_binding_get(u32 id)
{
	struct popup_binding *b;

	rcu_read_lock();
	b = xa_load(&popup_binding_xa, id);
	if (b && !kref_get_unless_zero(&b->refs))
		b = NULL;
	rcu_read_unlock();
	return b;
}

/*
 * Drop one @active count. At zero the binding is dead: its reference moves
 * to an UNMAP notice if the server maps it, else onto @puts for the caller
 * to drop after unlocking.
 */
void popup_binding_active_put_locked(struct popup_binding *b,
				     struct list_head *puts)
{
	struct popup_service *svc = b->svc;

	lockdep_assert_held(&svc->lock);
	if (WARN_ON_ONCE(!b->active) || --b->active)
		return;
	if (b->server_maps && !svc->dead) {
		list_add_tail(&b->notice_node, &svc->notices);
		b->noticed = true;
		popup_notice_wake_locked(svc);
		return;
	}
	list_add_tail(&b->notice_node, puts);
}

/*
 * The client gives the binding up (UNIMPORT or release of its file).
 * Called with client->lock held. In-flight calls keep it alive until they
 * finish.
 */
void popup_binding_drop(struct popup_binding *b)
{
	struct popup_service *svc = b->svc;
	LIST_HEAD(puts);

	spin_lock_bh(&svc->lock);
	if (b->client) {
		b->client = NULL;
		popup_binding_active_put_locked(b, &puts);
	}
	spin_unlock_bh(&svc->lock);
	popup_binding_put_list(&puts);
}

static int popup_binding_alloc_pages(struct popup_binding *b)
{
	u32 i;

	b->pages = kvcalloc(b->npages, sizeof(*b->pages), GFP_KERNEL_ACCOUNT);
	if (!b->pages)
		return -ENOMEM;
	for (i = 0; i < b->npages; i++) {
		b->pages[i] = alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO);
		if (!b->pages[i])
			return -ENOMEM;
	}
	return 0;
}

/*
 * A new binding of @svc with @nslots slots of @slot_size bytes (a multiple
 * of the page size), its pages allocated, one reference and one @active
 * count, not yet published: popup_binding_publish() gives it its id. The
 * binding takes over the caller's reference to @svc, also on failure.
 */
struct popup_binding *popup_binding_alloc(struct popup_service *svc,
					  u32 nslots, u32 slot_size)
{
	struct popup_binding *b;
	size_t map_size;

	if (check_mul_overflow((size_t)nslots, (size_t)slot_size, &map_size) ||
	    map_size > POPUP_MAX_MAPPED) {
		popup_service_put(svc);
		return ERR_PTR(-ENOSPC);
	}
	b = kzalloc(sizeof(*b), GFP_KERNEL_ACCOUNT);
	if (!b) {
		popup_service_put(svc);
		return ERR_PTR(-ENOMEM);
	}
	kref_init(&b->refs);
	b->svc = svc;			/* the reference moves to b */
	b->nslots = nslots;
	b->slot_size = slot_size;
	b->map_size = map_size;
	b->npages = map_size >> PAGE_SHIFT;
	b->active = 1;
	INIT_LIST_HEAD(&b->proc_node);
	INIT_LIST_HEAD(&b->notice_node);
	if (popup_binding_alloc_pages(b)) {
		/* b->id is 0: xa_erase of index 0 is a no-op for ALLOC1. */
		popup_binding_put(b);
		return ERR_PTR(-ENOMEM);
	}
	return b;
}

/* Give @b its id: from now on it can be found and mapped. */
int popup_binding_publish(struct popup_binding *b)
{
	int ret;

	ret = xa_alloc_cyclic(&popup_binding_xa, &b->id, b,
			      XA_LIMIT(1, INT_MAX), &popup_binding_next,
			      GFP_KERNEL);
	return ret < 0 ? ret : 0;
}

int popup_ioctl_import(struct popup_proc *proc, struct popup_import *imp)
{
	struct popup_service *svc;
	struct popup_binding *b;
	size_t map_size;
	int ret;

	if (imp->flags || imp->reserved0 || imp->reserved[0] ||
	    imp->reserved[1])
		return -EINVAL;
	ret = popup_name_check(imp->name);
	if (ret)
		return ret;
	if (imp->nslots < 1 || imp->nslots > POPUP_MAX_SLOTS ||
	    imp->oneway_quota > imp->nslots)
		return -EINVAL;

	svc = popup_service_find(imp->name, imp->version);
	if (!svc)
		return -ENOENT;
	b = popup_binding_alloc(svc, imp->nslots, svc->slot_size);
	if (IS_ERR(b))
		return PTR_ERR(b);
	map_size = b->map_size;
	b->oneway_quota = imp->oneway_quota ?: (imp->nslots + 1) / 2;
	b->client = proc;

	mutex_lock(&proc->lock);
	if (proc->dead) {
		ret = -EBADF;
		goto err_unlock;
	}
	if (proc->nbindings >= POPUP_MAX_BINDINGS ||
	    proc->mapped + map_size > POPUP_MAX_MAPPED) {
		ret = -ENOSPC;
		goto err_unlock;
	}
	if (READ_ONCE(svc->dead)) {
		ret = -ENOENT;
		goto err_unlock;
	}
	ret = popup_binding_publish(b);
	if (ret)
		goto err_unlock;
	list_add_tail(&b->proc_node, &proc->bindings);
	proc->nbindings++;
	proc->mapped += map_size;
	mutex_unlock(&proc->lock);

	imp->binding_id = b->id;
	imp->slot_size = svc->slot_size;
	imp->map_offset = (u64)b->id << PAGE_SHIFT;
	imp->map_size = map_size;
	popup_stat_inc(POPUP_STAT_IMPORTS);
	return 0;

err_unlock:
	mutex_unlock(&proc->lock);
	/* b->id is 0 here: xa_erase of index 0 is a no-op for ALLOC1. */
	popup_binding_put(b);
	return ret;
}

/* Remove @b from @proc's list and drop it. Called with proc->lock. */
static void popup_binding_unlist_locked(struct popup_proc *proc,
					struct popup_binding *b)
{
	lockdep_assert_held(&proc->lock);
	list_del_init(&b->proc_node);
	proc->nbindings--;
	proc->mapped -= b->map_size;
	popup_binding_drop(b);
}

int popup_ioctl_unimport(struct popup_proc *proc, const struct popup_target *t)
{
	struct popup_binding *b;
	int ret = -ENOENT;

	if (t->flags || t->reserved)
		return -EINVAL;
	b = popup_binding_get(t->id);
	if (!b)
		return -ENOENT;
	mutex_lock(&proc->lock);
	/* b->client == proc is stable under proc->lock. */
	if (READ_ONCE(b->client) == proc && !list_empty(&b->proc_node)) {
		popup_binding_unlist_locked(proc, b);
		ret = 0;
	}
	mutex_unlock(&proc->lock);
	popup_binding_put(b);
	return ret;
}

/* Release of @proc's file: drop every binding it imported. */
void popup_bindings_release(struct popup_proc *proc)
{
	struct popup_binding *b, *tmp;

	mutex_lock(&proc->lock);
	list_for_each_entry_safe(b, tmp, &proc->bindings, proc_node)
		popup_binding_unlist_locked(proc, b);
	mutex_unlock(&proc->lock);
}

/*
 * vm_ops: one table per role so that open and close know which count to
 * change without per-vma state. A file that imported its own service maps
 * in both roles.
 */
static const struct vm_operations_struct popup_vm_client_ops;
static const struct vm_operations_struct popup_vm_server_ops;
static const struct vm_operations_struct popup_vm_both_ops;

static bool popup_vma_client(struct vm_area_struct *vma)
{
	return vma->vm_ops != &popup_vm_server_ops;
}

static bool popup_vma_server(struct vm_area_struct *vma)
{
	return vma->vm_ops != &popup_vm_client_ops;
}

/* mremap() move: the copy counts like the original. */
static void popup_vm_open(struct vm_area_struct *vma)
{
	struct popup_binding *b = vma->vm_private_data;

	kref_get(&b->refs);
	spin_lock_bh(&b->svc->lock);
	if (popup_vma_client(vma))
		b->client_maps++;
	if (popup_vma_server(vma))
		b->server_maps++;
	spin_unlock_bh(&b->svc->lock);
}

static void popup_vm_close(struct vm_area_struct *vma)
{
	struct popup_binding *b = vma->vm_private_data;
	bool unnotice = false;

	spin_lock_bh(&b->svc->lock);
	if (popup_vma_client(vma))
		b->client_maps--;
	if (popup_vma_server(vma)) {
		b->server_maps--;
		/* The server unmapped it before being told to. */
		if (!b->server_maps && b->noticed) {
			list_del_init(&b->notice_node);
			b->noticed = false;
			unnotice = true;
		}
	}
	spin_unlock_bh(&b->svc->lock);
	if (unnotice)
		popup_binding_put(b);
	popup_binding_put(b);
}

/* Partial munmap()/mprotect()/mremap() shrink: refused, see the header. */
static int popup_vm_may_split(struct vm_area_struct *vma, unsigned long addr)
{
	return -EINVAL;
}

/*
 * Every page is inserted at mmap; a fault is an access after MADV_DONTNEED
 * or similar: no kernel page is handed out again.
 */
static vm_fault_t popup_vm_fault(struct vm_fault *vmf)
{
	return VM_FAULT_SIGBUS;
}

#define POPUP_VM_OPS(_name)				\
static const struct vm_operations_struct _name = {	\
	.open = popup_vm_open,				\
	.close = popup_vm_close,			\
	.may_split = popup_vm_may_split,		\
	.fault = popup_vm_fault,			\
}

POPUP_VM_OPS(popup_vm_client_ops);
POPUP_VM_OPS(popup_vm_server_ops);
POPUP_VM_OPS(popup_vm_both_ops);

/* Which roles may @proc map @b in? Bit 0 client, bit 1 server. */
static unsigned int popup_binding_roles_locked(struct popup_binding *b,
					       struct popup_proc *proc)
{
	unsigned int roles = 0;

	lockdep_assert_held(&b->svc->lock);
	if (!b->active)
		return 0;
	if (b->client == proc)
		roles |= 1;
	if (!b->svc->dead && b->svc->owner == proc)
		roles |= 2;
	return roles;
}

int popup_mmap(struct file *file, struct vm_area_struct *vma)
{
	static const struct vm_operations_struct *const ops[] = {
		NULL, &popup_vm_client_ops, &popup_vm_server_ops,
		&popup_vm_both_ops,
	};
	struct popup_proc *proc = file->private_data;
	struct popup_binding *b;
	unsigned long num;
	unsigned int roles;
	int ret;

	if (vma->vm_pgoff > U32_MAX)
		return -ENXIO;
	b = popup_binding_get(vma->vm_pgoff);
	if (!b)
		return -ENXIO;
	ret = -EINVAL;
	if (vma->vm_end - vma->vm_start != b->map_size)
		goto err_put;
	if (!(vma->vm_flags & VM_SHARED))
		goto err_put;
	ret = -EPERM;
	if (vma->vm_flags & VM_EXEC)
		goto err_put;

	spin_lock_bh(&b->svc->lock);
	roles = popup_binding_roles_locked(b, proc);
	spin_unlock_bh(&b->svc->lock);
	ret = -ENXIO;
	if (!roles)
		goto err_put;

	vma->vm_flags |= VM_DONTCOPY | VM_DONTEXPAND | VM_DONTDUMP |
			 VM_MIXEDMAP;
	vma->vm_flags &= ~VM_MAYEXEC;
	num = b->npages;
	ret = vm_insert_pages(vma, vma->vm_start, b->pages, &num);
	if (ret)
		goto err_put;	/* mmap_region() zaps what was inserted */

	spin_lock_bh(&b->svc->lock);
	roles &= popup_binding_roles_locked(b, proc);
	if (roles & 1)
		b->client_maps++;
	if (roles & 2)
		b->server_maps++;
	spin_unlock_bh(&b->svc->lock);
	ret = -ENXIO;
	if (!roles)
		goto err_put;

	vma->vm_private_data = b;	/* the reference moves to the vma */
	vma->vm_ops = ops[roles];
	return 0;

err_put:
	popup_binding_put(b);
	return ret;
}
