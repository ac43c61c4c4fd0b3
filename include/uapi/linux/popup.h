/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * popup: kernel-assisted request dispatch.
 *
 * This header is the whole ABI between popup.ko (/dev/popup) and userspace.
 * Every structure uses explicit-width types, carries explicit padding so the
 * layout is identical on i386 and x86-64 (every __u64 sits at a multiple of
 * 8 and every size is a multiple of 8; the module checks this at build
 * time), and ends in reserved fields that callers must zero. Structures that
 * may grow start with a @size field set by the caller to sizeof() of the
 * structure it was compiled against. The ioctl number encodes the version-1
 * size forever; the kernel reads @size bytes: a larger @size is accepted
 * only if the extra bytes are zero (E2BIG otherwise), a smaller one than
 * version 1 is EINVAL. User pointers travel as __u64.
 *
 * NOTE: errno contract, for every ioctl on /dev/popup:
 *   ENOTTY   unknown command
 *   EFAULT   an argument pointer is not readable or writable
 *   EINVAL   a reserved field or an unknown flag bit is non-zero, a size is
 *            out of range, or a string is not NUL-terminated
 *   E2BIG    @size is larger than the kernel's structure and the excess is
 *            not zero, or @size is larger than a page
 *   EINTR    a signal arrived while blocked; see each ioctl for what was
 *            done before (CALL: nothing; REPLY_WAIT: the reply)
 * A failing ioctl changes no state unless its description says otherwise.
 *
 * Call sequence
 * =============
 * Server:
 *   fd = open("/dev/popup", O_RDWR | O_CLOEXEC);
 *   ioctl(fd, POPUP_IOC_EXPORT, &exp)            -> exp.service_id
 *   start pool threads; each loops:
 *     ioctl(fd, POPUP_IOC_WAIT, &w)   (first time: POPUP_WAIT_NEW)
 *     switch (w.kind):
 *     POPUP_WAIT_CALL:   if (w.ctx.flags & POPUP_CTX_MAP) or the binding is
 *                        not in the server's cache, mmap(NULL,
 *                        w.ctx.map_size, PROT_READ | PROT_WRITE, MAP_SHARED,
 *                        fd, w.ctx.map_offset) and cache it by binding id;
 *                        the arguments are at base + w.ctx.slot_offset,
 *                        w.ctx.arg_len bytes; write the result in place,
 *                        then fill w.reply and ioctl(POPUP_IOC_REPLY_WAIT)
 *     POPUP_WAIT_UNMAP:  munmap the cached mapping of w.ctx.binding_id
 *     POPUP_WAIT_RETIRE: leave the loop and exit the thread
 *     and, whatever the kind, start w.spawn new threads (each passes
 *     POPUP_WAIT_NEW on its first WAIT).
 *   Optionally one thread loops in WAIT with POPUP_WAIT_CONTROL: it receives
 *   only SPAWN and UNMAP, so the pool can grow while every handler blocks.
 *   poll()/epoll on fd reports EPOLLIN while such a notice is pending.
 * Client:
 *   ioctl(fd, POPUP_IOC_IMPORT, &imp)            -> binding id, map_offset
 *   base = mmap(NULL, imp.map_size, PROT_READ | PROT_WRITE, MAP_SHARED,
 *               fd, imp.map_offset);
 *   write the arguments at base + slot * imp.slot_size, then
 *   ioctl(fd, POPUP_IOC_CALL, &call); the result is in the same slot,
 *   call.result_len bytes, and call.status is the handler's status.
 *   A slot carries one call at a time; a client with N threads uses N slots.
 *
 * Network arrival (POPUP_FEAT_ARRIVAL), server side:
 *   for each worker socket (UDP, one per CPU with SO_REUSEPORT):
 *     ioctl(fd, POPUP_IOC_ATTACH, &at)   (at.fd, at.service_id, at.cpu)
 *   the pool threads' loop above also gets
 *     POPUP_WAIT_DGRAM:  a datagram: map the receive area as a binding
 *                        (w.ctx.binding_id is the attach id, same
 *                        POPUP_CTX_MAP rule and UNMAP notices); the
 *                        datagram is at base + w.ctx.slot_offset,
 *                        w.ctx.arg_len bytes, from w.ctx.peer_*; write the
 *                        answer in place and REPLY_WAIT with
 *                        result_len = its length (0: send nothing)
 *   ioctl(fd, POPUP_IOC_DETACH, &target)      (target.id = at.attach_id)
 *   gives the socket back to userspace (datagrams not yet taken stay in
 *   it and wake its readers); closing fd or WITHDRAW detaches as well.
 *
 * TCP arrival (POPUP_FEAT_TCP), server side:
 *   ioctl(fd, POPUP_IOC_ATTACH, &at)   (at.fd: a listening TCP socket)
 *   the kernel accepts every connection (in process context, from a work
 *   item scheduled by the listener's sk_data_ready); the pool threads get
 *     POPUP_WAIT_KIND_CONN:   a new connection: w.ctx.conn_fd is a new
 *                             descriptor (O_CLOEXEC) in the waiting
 *                             thread's process, w.ctx.peer_* its peer; no
 *                             REPLY is expected (the context is finished)
 *   the server may then hand the connection back to the module:
 *     ioctl(fd, POPUP_IOC_PARK, &park)  (park.fd, park.attach_id: the
 *                                        listener's attachment)
 *   and may close its own descriptor. Each native request (include/popup/
 *   wire.h: 32-byte header, then len bytes) that arrives on a parked
 *   connection becomes
 *     POPUP_WAIT_KIND_STREAM: the whole frame, header included, is at
 *                             base + w.ctx.slot_offset of the listener's
 *                             receive area, w.ctx.arg_len bytes;
 *                             w.ctx.conn_id names the connection; REPLY
 *                             (_WAIT) writes result_len bytes of the slot
 *                             to the connection (0: nothing); the
 *                             connection stays parked
 *   Up to POPUP_CONN_INFLIGHT requests per connection are in flight at
 *   once: a client that pipelines gets them handled concurrently (each
 *   holds a slot of the listener's receive area; the pool rules below
 *   apply), frames are taken in order, and each reply is
 *   written whole, in the order the handlers reply (match them by
 *   req_id); past the limit the next frame waits for a reply. After the
 *   peer's orderly end (EOF) the requests in flight are still answered,
 *   then the module closes the connection. The module closes a parked
 *   connection (counted in /proc/popup/arrival as closed, badframe or
 *   toobig) on EOF, a reset, bytes without the native
 *   magic (no reply; a last KIND_STREAM context with POPUP_CTX_BADFRAME
 *   tells the handler), a frame larger than the slot (TOOBIG reply
 *   first), or a reply that cannot be written whole (kernel replies
 *   included: they do not wait for room). Only the magic and
 *   the length frame a request: version, flags and the rest are the
 *   handler's to check. Overload (no slot, or the queue
 *   full with no idle thread) is answered: a request with a BUSY reply
 *   (its frame is consumed, the connection stays); a new connection by
 *   closing it at once (counted as refused), as no request header exists
 *   yet to answer. DETACH with POPUP_DETACH_CONN and the conn_id gives a
 *   connection back: its callbacks are restored and the module drops its
 *   reference (the connection closes unless userspace kept a descriptor).
 *   Userspace must not accept() on an attached listener.
 * For a KIND_DGRAM context, REPLY (and the reply half of REPLY_WAIT) sends
 * the datagram before returning; @status is not used. A send failure
 * (EAGAIN when the socket's send buffer is full, ENETUNREACH, ...) is
 * returned by REPLY, or stored in @reply_result by REPLY_WAIT, which then
 * waits as usual; the context is finished either way.
 *
 * Mappings: a binding mapping must be MAP_SHARED, not PROT_EXEC, exactly
 * map_size bytes at exactly map_offset. It is not inherited across fork()
 * (VM_DONTCOPY), cannot grow with mremap() (it may move), and cannot be
 * unmapped or mprotect()ed in part (EINVAL): unmap all of it or nothing.
 * CALL on a binding that the client has no mapping of fails with ENXIO.
 * Only the importing file and the service's owning file may map a binding.
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

/* Limits. Requests beyond them fail with EINVAL. */
#define POPUP_NAME_MAX		64		/* name bytes including the NUL */
#define POPUP_MAX_METHODS	256		/* methods per service */
#define POPUP_MAX_MSG		(1U << 20)	/* max_arg and max_res */
#define POPUP_MAX_SLOTS		64		/* slots per binding */
#define POPUP_MAX_THREADS	1024		/* pool max_threads */
#define POPUP_MAX_QUEUE		4096		/* pool queue_limit */
#define POPUP_MAX_SERVICES	64		/* services per open file (ENOSPC) */
#define POPUP_MAX_BINDINGS	1024		/* bindings per open file (ENOSPC) */
#define POPUP_MAX_MAPPED	(256U << 20)	/* A-stack bytes per file (ENOSPC) */
#define POPUP_MAX_SOCKETS	256		/* attached sockets per file (ENOSPC) */
#define POPUP_MAX_DGRAM		(64U << 10)	/* slot_size of an attachment */
#define POPUP_MAX_CONNS		1024		/* parked connections per listener */
#define POPUP_CONN_INFLIGHT	16		/* requests in flight per parked conn */

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
/* EXPORT/IMPORT/CALL/WAIT/REPLY and /proc/popup/services are available. */
#define POPUP_FEAT_RPC		(1U << 1)
/* ATTACH/DETACH of UDP sockets, KIND_DGRAM, /proc/popup/{arrival,sockets}. */
#define POPUP_FEAT_ARRIVAL	(1U << 2)
/* ATTACH of TCP listeners, KIND_CONN, PARK, KIND_STREAM. */
#define POPUP_FEAT_TCP		(1U << 3)

/**
 * struct popup_method - one method of an exported interface
 * @id:       method number, unique within the service (EINVAL if repeated)
 * @flags:    POPUP_METHOD_* bits
 * @max_arg:  largest argument in bytes, at most POPUP_MAX_MSG
 * @max_res:  largest result in bytes, at most POPUP_MAX_MSG
 * @reserved: zero
 */
struct popup_method {
	__u32 id;
	__u32 flags;
	__u32 max_arg;
	__u32 max_res;
	__u64 reserved;
};

/* Every call of this method is one-way: CALL returns once it is queued. */
#define POPUP_METHOD_ONEWAY	(1U << 0)

/**
 * struct popup_pool - handler thread pool settings (after QNX thread pools)
 * @min_idle:        keep at least this many threads idle: the kernel asks
 *                   for more (SPAWN) when fewer are idle; idle-timeout
 *                   retirement never goes below it
 * @max_idle:        a thread that would be idle beyond this count is
 *                   retired at once; >= 1 and >= @min_idle
 * @increment:       threads asked for by one spawn request, >= 1
 * @max_threads:     the pool never asks to grow beyond this many threads,
 *                   1..POPUP_MAX_THREADS, >= @max_idle
 * @queue_limit:     calls that may wait for a thread, 0..POPUP_MAX_QUEUE;
 *                   past it CALL fails with EAGAIN (or blocks with
 *                   POPUP_CALL_BLOCK)
 * @idle_timeout_ms: a thread idle this long, while more than @min_idle
 *                   threads are idle, is retired; 0 = never
 * @reserved:        zero
 *
 * An all-zero structure selects the defaults: min_idle 1, max_idle 4,
 * increment 1, max_threads 16, queue_limit 256, idle_timeout_ms 10000.
 */
struct popup_pool {
	__u32 min_idle;
	__u32 max_idle;
	__u32 increment;
	__u32 max_threads;
	__u32 queue_limit;
	__u32 idle_timeout_ms;
	__u64 reserved;
};

/**
 * struct popup_export - POPUP_IOC_EXPORT argument
 * @size:       sizeof(struct popup_export)
 * @flags:      zero
 * @name:       service name, 1..POPUP_NAME_MAX-1 printable ASCII bytes
 *              other than space, then a NUL; bytes after the NUL are
 *              ignored
 * @version:    interface version; name+version is unique (EEXIST)
 * @nmethods:   entries in @methods, 1..POPUP_MAX_METHODS
 * @methods:    user pointer to struct popup_method[@nmethods]
 * @pool:       thread pool settings
 * @service_id: out: service id, for WAIT, SET_POOL, WITHDRAW
 * @slot_size:  out: bytes per A-stack slot of this service's bindings (the
 *              largest max_arg or max_res rounded up to a page)
 * @reserved:   zero
 *
 * The exporting file owns the service: only it can WAIT on, change or
 * withdraw it, and its release withdraws it. Errors: EEXIST, ENOSPC
 * (POPUP_MAX_SERVICES), ENOMEM, and the common ones.
 */
struct popup_export {
	__u32 size;
	__u32 flags;
	char name[POPUP_NAME_MAX];
	__u32 version;
	__u32 nmethods;
	__u64 methods;
	struct popup_pool pool;
	__u32 service_id;
	__u32 slot_size;
	__u64 reserved[2];
};

/**
 * struct popup_target - argument naming one object by id
 * @id:       service id (WITHDRAW, THREAD_EXIT), binding id (UNIMPORT),
 *            attach id or conn id (DETACH)
 * @flags:    zero; DETACH also takes POPUP_DETACH_CONN
 * @reserved: zero
 */
struct popup_target {
	__u32 id;
	__u32 flags;
	__u64 reserved;
};

/**
 * struct popup_set_pool - POPUP_IOC_SET_POOL argument
 * @service_id: a service of this file
 * @flags:      zero
 * @pool:       new settings (all-zero selects the defaults), validated as
 *              at export; idle threads re-check them at once
 * @reserved:   zero
 */
struct popup_set_pool {
	__u32 service_id;
	__u32 flags;
	struct popup_pool pool;
	__u64 reserved;
};

/**
 * struct popup_import - POPUP_IOC_IMPORT argument
 * @size:         sizeof(struct popup_import)
 * @flags:        zero
 * @name:         service name, NUL-terminated as in popup_export
 * @version:      exact interface version wanted
 * @nslots:       A-stack slots (the client's concurrency), 1..POPUP_MAX_SLOTS
 * @oneway_quota: one-way calls this binding may have queued or running,
 *                1..@nslots; 0 selects (@nslots + 1) / 2
 * @binding_id:   out: binding id for CALL and UNIMPORT
 * @slot_size:    out: bytes per slot; slot i starts at i * @slot_size
 * @reserved0:    zero
 * @map_offset:   out: mmap() offset of this binding's A-stacks
 * @map_size:     out: mmap() length, @nslots * @slot_size
 * @reserved:     zero
 *
 * Errors: ENOENT (no such name+version), ENOSPC (POPUP_MAX_BINDINGS or
 * POPUP_MAX_MAPPED for this file), ENOMEM, and the common ones.
 */
struct popup_import {
	__u32 size;
	__u32 flags;
	char name[POPUP_NAME_MAX];
	__u32 version;
	__u32 nslots;
	__u32 oneway_quota;
	__u32 binding_id;
	__u32 slot_size;
	__u32 reserved0;
	__u64 map_offset;
	__u64 map_size;
	__u64 reserved[2];
};

/**
 * struct popup_call - POPUP_IOC_CALL argument
 * @size:       sizeof(struct popup_call)
 * @flags:      POPUP_CALL_* bits
 * @binding_id: a binding imported through this file
 * @method:     method id
 * @slot:       slot holding the arguments, < nslots; busy until the
 *              handler replies (EBUSY meanwhile)
 * @arg_len:    argument bytes at the start of the slot, <= method max_arg
 * @timeout_ms: give up after this long; 0 = wait for the reply forever
 * @status:     out: the handler's reply status (0 for one-way)
 * @result_len: out: result bytes at the start of the slot
 * @reserved0:  zero
 * @reserved:   zero
 *
 * Returns 0 once the reply arrived (or, one-way, once the call is queued
 * or handed to a thread). Errors:
 *   ENOENT       unknown binding, or not imported through this file
 *   EOPNOTSUPP   unknown method
 *   EINVAL       slot out of range, arg_len > max_arg, unknown flags
 *   EBUSY        the slot carries another call
 *   ENXIO        the binding is not mapped by the client
 *   EAGAIN       the pool's queue is full (without POPUP_CALL_BLOCK), or
 *                the binding's one-way quota is used up
 *   ECONNRESET   the service is withdrawn, or its server died during the
 *                call (the handler may have run)
 *   EINTR        a signal arrived before a handler received the call:
 *                the call did not run and never will
 *   ETIMEDOUT    the timeout expired before a handler received the call:
 *                the call did not run and never will
 *   ECANCELED    a signal arrived after a handler received the call: it
 *                ran or is running; its result is discarded and its
 *                REPLY fails with ECANCELED; the slot stays busy until then
 *   ETIME        as ECANCELED, but the timeout expired
 */
struct popup_call {
	__u32 size;
	__u32 flags;
	__u32 binding_id;
	__u32 method;
	__u32 slot;
	__u32 arg_len;
	__u32 timeout_ms;
	__s32 status;
	__u32 result_len;
	__u32 reserved0;
	__u64 reserved[2];
};

/* Do not wait for the reply (implied by a POPUP_METHOD_ONEWAY method). */
#define POPUP_CALL_ONEWAY	(1U << 0)
/* When the queue is full, wait for room (within @timeout_ms) not EAGAIN. */
#define POPUP_CALL_BLOCK	(1U << 1)

/**
 * struct popup_reply - a handler's answer (POPUP_IOC_REPLY, and the first
 * half of POPUP_IOC_REPLY_WAIT)
 * @ctx_id:     context being answered (from popup_context.ctx_id)
 * @status:     returned to the caller as popup_call.status
 * @result_len: result bytes written at the start of the slot, <= max_res
 * @flags:      zero
 * @reserved0:  zero
 *
 * REPLY errors: ENOENT (no such running context of this file; includes a
 * second reply), EINVAL (result_len > max_res), ECANCELED (the caller gave
 * up or died: the reply is discarded, the slot is released, the thread
 * carries on). Any thread of the owning file may reply. For a datagram
 * (KIND_DGRAM) the reply is sent to its sender: see "Network arrival"
 * above for the send errors.
 */
struct popup_reply {
	__u64 ctx_id;
	__s32 status;
	__u32 result_len;
	__u32 flags;
	__u32 reserved0;
};

/**
 * struct popup_context - a call handed to a handler thread
 * @ctx_id:      context id for REPLY
 * @service_id:  service called
 * @method:      method id (KIND_CALL), 0 (KIND_DGRAM)
 * @conn_fd:     KIND_CONN: the new connection's descriptor
 * @conn_id:     KIND_STREAM: the parked connection (popup_park.conn_id)
 * @binding_id:  caller's binding
 * @slot:        slot index in the binding
 * @arg_len:     argument bytes at @slot_offset in the binding mapping
 * @flags:       POPUP_CTX_* bits
 * @max_res:     the method's max_res
 * @slot_offset: byte offset of the slot from the start of the binding
 *               mapping (slot * slot_size)
 * @map_offset:  mmap() offset of the binding (for the server's mapping)
 * @map_size:    mmap() length of the binding
 * @pid:         caller's process id in the server's pid namespace, 0 if
 *               not visible there; stamped by the kernel
 * @tid:         caller's thread id, same rules
 * @uid:         caller's effective uid in the server's user namespace
 * @gid:         caller's effective gid in the server's user namespace
 * @priority:    caller's kernel priority at CALL (0..139, lower is more
 *               urgent; nice n is 120 + n); queued calls are served
 *               lowest first, then by arrival, except that a queued
 *               call is passed over by more urgent ones at most 8 times
 * @cpu:         CPU the call was issued on (KIND_DGRAM: the CPU it
 *               arrived on, or the attached socket's CPU, see popup_attach)
 * @peer_family: KIND_DGRAM: AF_INET or AF_INET6, the sender's address
 *               family; otherwise zero
 * @peer_port:   KIND_DGRAM: the sender's UDP port, network byte order
 * @peer_addr:   KIND_DGRAM: the sender's address, network byte order: 4
 *               bytes for AF_INET, 16 for AF_INET6 (an IPv4 sender of an
 *               AF_INET6 socket appears v4-mapped); the rest is zero
 *
 * KIND_DGRAM contexts (a datagram on an attached socket, see
 * POPUP_IOC_ATTACH) use the same fields as a call: @binding_id is the
 * attachment, the datagram is @arg_len bytes at @slot_offset of its receive
 * area (map it as a binding: @map_offset, @map_size, POPUP_CTX_MAP), @max_res
 * is the slot size, @method is 0, @pid, @tid are 0 and @uid, @gid are
 * (__u32)-1 (nobody vouches for a network peer), @priority is 120.
 * KIND_CONN and KIND_STREAM contexts follow the same rules, with @conn_fd
 * or @conn_id in place of @method and the TCP peer in @peer_*; KIND_CONN
 * has @arg_len 0 and needs no REPLY.
 */
struct popup_context {
	__u64 ctx_id;
	__u32 service_id;
	union {
		__u32 method;
		__s32 conn_fd;
		__u32 conn_id;
	};
	__u32 binding_id;
	__u32 slot;
	__u32 arg_len;
	__u32 flags;
	__u32 max_res;
	__u16 peer_family;
	__be16 peer_port;
	__u64 slot_offset;
	__u64 map_offset;
	__u64 map_size;
	__s32 pid;
	__s32 tid;
	__u32 uid;
	__u32 gid;
	__s32 priority;
	__u32 cpu;
	__u8 peer_addr[16];
};

/* One-way: the caller is not waiting; the result is ignored. */
#define POPUP_CTX_ONEWAY	(1U << 0)
/*
 * This file has no mapping of the binding: mmap it before use (again, if
 * a cached mapping of the same id exists, it is stale).
 */
#define POPUP_CTX_MAP		(1U << 1)
/*
 * KIND_STREAM: the connection sent bytes that are not a native frame (no
 * magic); the module closed it. @arg_len is 0; reply with result_len 0.
 */
#define POPUP_CTX_BADFRAME	(1U << 2)

/**
 * struct popup_wait - POPUP_IOC_WAIT and POPUP_IOC_REPLY_WAIT argument
 * @size:         sizeof(struct popup_wait)
 * @flags:        in: POPUP_WAIT_* bits
 * @service_id:   in: a service of this file
 * @kind:         out: POPUP_WAIT_KIND_*
 * @reply:        in, REPLY_WAIT only (all zero for WAIT): the reply sent
 *                before waiting
 * @reply_result: out, REPLY_WAIT: 0, or -ECANCELED if the caller had given
 *                up (the reply was discarded); the wait happens either way
 * @spawn:        out: start this many new pool threads; may accompany any
 *                kind
 * @ctx:          out: the call (KIND_CALL) or datagram (KIND_DGRAM); for
 *                KIND_UNMAP only
 *                @binding_id, @map_offset and @map_size are set
 * @reserved:     zero
 *
 * A pool thread becomes one with its first WAIT carrying POPUP_WAIT_NEW
 * (counted toward max_threads; answers a spawn request) and stops with
 * KIND_RETIRE or POPUP_IOC_THREAD_EXIT. max_threads is a hard cap: a NEW
 * thread beyond it gets KIND_RETIRE at once, without being counted. A pool
 * thread that leaves its loop for any other reason (an error) must call
 * THREAD_EXIT. Idle threads wait in LIFO order; a call goes to the idle
 * thread that last waited on the caller's CPU, else to the most recently
 * idle one.
 * Errors: ENOENT (unknown or withdrawn service; also wakes blocked
 * waiters), EPERM (service of another file), EAGAIN (POPUP_WAIT_NONBLOCK
 * and nothing pending), EBADF (another thread of this process closed its
 * last descriptor of the file while this one waited), EINTR. For
 * REPLY_WAIT, a reply that fails ENOENT/EINVAL returns that error without
 * waiting; after a successful reply any later error still leaves
 * @reply_result valid and the structure is copied out.
 */
struct popup_wait {
	__u32 size;
	__u32 flags;
	__u32 service_id;
	__u32 kind;
	struct popup_reply reply;
	__s32 reply_result;
	__u32 spawn;
	struct popup_context ctx;
	__u64 reserved[2];
};

/* First WAIT of a new pool thread. */
#define POPUP_WAIT_NEW		(1U << 0)
/* A counted pool thread: may be told to retire. Implied by NEW. */
#define POPUP_WAIT_POOL		(1U << 1)
/* Control thread: gets only KIND_SPAWN and KIND_UNMAP; never retires. */
#define POPUP_WAIT_CONTROL	(1U << 2)
/* Return EAGAIN instead of blocking. */
#define POPUP_WAIT_NONBLOCK	(1U << 3)

#define POPUP_WAIT_KIND_CALL	1	/* @ctx is a call to handle */
#define POPUP_WAIT_KIND_SPAWN	2	/* only @spawn is meaningful */
#define POPUP_WAIT_KIND_RETIRE	3	/* leave the pool: exit the thread */
#define POPUP_WAIT_KIND_UNMAP	4	/* munmap binding @ctx.binding_id */
#define POPUP_WAIT_KIND_DGRAM	5	/* @ctx is a datagram to answer */
#define POPUP_WAIT_KIND_CONN	6	/* @ctx is a new TCP connection */
#define POPUP_WAIT_KIND_STREAM	7	/* @ctx is a request on a parked one */

/* popup_attach.cpu: hand each datagram to a thread on the CPU it came in on. */
#define POPUP_CPU_ANY		0xffffffffU

/**
 * struct popup_attach - POPUP_IOC_ATTACH argument
 * @size:       sizeof(struct popup_attach)
 * @flags:      zero
 * @fd:         a UDP socket (AF_INET or AF_INET6, not UDP-Lite, without
 *              UDP_GRO), normally bound with SO_REUSEPORT, one per CPU;
 *              or a listening TCP socket (POPUP_FEAT_TCP): see "TCP
 *              arrival" above; its receive area's slots then carry
 *              accepted connections not yet taken by a thread and the
 *              requests of its parked connections
 * @service_id: a service of this file; its pool handles the datagrams
 * @cpu:        the CPU this socket serves: its contexts report it in
 *              popup_context.cpu and go preferably to a handler thread
 *              waiting on it; POPUP_CPU_ANY: the CPU each datagram arrived
 *              on
 * @nslots:     datagrams this socket may have in flight (queued or being
 *              handled), 1..POPUP_MAX_SLOTS; 0 selects 16. A datagram that
 *              finds no free slot, or the service's queue full with no idle
 *              thread, is answered BUSY by the kernel
 * @slot_size:  largest datagram, rounded up to a page, at most
 *              POPUP_MAX_DGRAM; 0 selects POPUP_MAX_DGRAM. Larger
 *              datagrams are answered TOOBIG by the kernel. A TCP
 *              listener's largest request frame (header included), at
 *              most POPUP_MAX_MSG
 * @attach_id:  out: the attachment, for DETACH; also the @binding_id of
 *              its contexts
 * @map_offset: out: mmap() offset of the receive area (@nslots slots of
 *              @slot_size bytes), as for a binding
 * @map_size:   out: mmap() length of the receive area
 * @reserved:   zero
 *
 * The module takes its own reference to the socket (closing @fd does not
 * close it) and hooks its arrival callback; DETACH, WITHDRAW of the
 * service or release of this file restore the socket exactly as it was.
 * Datagrams that arrive while attached become KIND_DGRAM contexts: the
 * payload is copied into a slot of the receive area as it arrives, and
 * REPLY sends
 * @result_len bytes of that slot back to the sender from the attached
 * socket (nothing when @result_len is 0). The wire protocol is
 * userspace's, except for the replies the kernel sends itself, in the
 * native format of include/popup/wire.h (32-byte header, flags REPLY,
 * the request's method, service and req_id, len 0): status BUSY (5) when
 * overloaded or when the service goes away before a thread took the
 * datagram, ERROR (7) when it goes away while a handler ran it, TOOBIG (4)
 * for a datagram over @slot_size. A request without a valid native header
 * gets no kernel reply (counted as unanswerable in /proc/popup/arrival).
 * Errors: ENOTSOCK (@fd is not a socket), EBADF, EPROTONOSUPPORT (not a
 * UDP socket or a TCP listener), EINVAL (a TCP socket that is not
 * listening), EOPNOTSUPP (UDP_GRO enabled), EBUSY (the socket is
 * attached already, or another kernel user owns its callbacks), EINVAL
 * (@cpu is not a possible CPU, sizes out of range), ENOSPC
 * (POPUP_MAX_SOCKETS, or POPUP_MAX_MAPPED with the A-stacks), ENOENT,
 * EPERM (service), ENOMEM.
 */
struct popup_attach {
	__u32 size;
	__u32 flags;
	__s32 fd;
	__u32 service_id;
	__u32 cpu;
	__u32 nslots;
	__u32 slot_size;
	__u32 attach_id;
	__u64 map_offset;
	__u64 map_size;
	__u64 reserved[2];
};

/**
 * struct popup_park - POPUP_IOC_PARK argument
 * @size:      sizeof(struct popup_park)
 * @flags:     zero
 * @fd:        a connected TCP socket (normally a KIND_CONN descriptor)
 * @attach_id: a TCP listener attached through this file: its service,
 *             CPU and receive area serve the connection
 * @conn_id:   out: the connection, reported in popup_context.conn_id and
 *             for DETACH with POPUP_DETACH_CONN
 * @reserved0: zero
 * @reserved:  zero
 *
 * The module takes its own reference to the socket and hooks its
 * sk_data_ready and sk_state_change until the connection ends, DETACH,
 * or the listener is detached (WITHDRAW, DETACH, release of the file),
 * restoring both exactly. Errors: ENOTSOCK, EBADF, EPROTONOSUPPORT (not
 * TCP), ENOTCONN (not connected), ENOENT (no such TCP listener
 * attachment), EBUSY (attached already, or another kernel user owns the
 * callbacks), ENOSPC (POPUP_MAX_CONNS), ENOMEM, and the common ones.
 */
struct popup_park {
	__u32 size;
	__u32 flags;
	__s32 fd;
	__u32 attach_id;
	__u32 conn_id;
	__u32 reserved0;
	__u64 reserved[2];
};

/* popup_target.flags for DETACH: @id is a parked connection's conn_id. */
#define POPUP_DETACH_CONN	(1U << 0)

#define POPUP_IOC_VERSION	_IOR(POPUP_IOC_MAGIC, 0x00, struct popup_version)
#define POPUP_IOC_EXPORT	_IOWR(POPUP_IOC_MAGIC, 0x01, struct popup_export)
#define POPUP_IOC_WITHDRAW	_IOW(POPUP_IOC_MAGIC, 0x02, struct popup_target)
#define POPUP_IOC_SET_POOL	_IOW(POPUP_IOC_MAGIC, 0x03, struct popup_set_pool)
#define POPUP_IOC_IMPORT	_IOWR(POPUP_IOC_MAGIC, 0x04, struct popup_import)
#define POPUP_IOC_UNIMPORT	_IOW(POPUP_IOC_MAGIC, 0x05, struct popup_target)
#define POPUP_IOC_CALL		_IOWR(POPUP_IOC_MAGIC, 0x06, struct popup_call)
#define POPUP_IOC_WAIT		_IOWR(POPUP_IOC_MAGIC, 0x07, struct popup_wait)
#define POPUP_IOC_REPLY		_IOW(POPUP_IOC_MAGIC, 0x08, struct popup_reply)
#define POPUP_IOC_REPLY_WAIT	_IOWR(POPUP_IOC_MAGIC, 0x09, struct popup_wait)
#define POPUP_IOC_THREAD_EXIT	_IOW(POPUP_IOC_MAGIC, 0x0a, struct popup_target)
#define POPUP_IOC_ATTACH	_IOWR(POPUP_IOC_MAGIC, 0x0b, struct popup_attach)
#define POPUP_IOC_DETACH	_IOW(POPUP_IOC_MAGIC, 0x0c, struct popup_target)
#define POPUP_IOC_PARK		_IOWR(POPUP_IOC_MAGIC, 0x0d, struct popup_park)

#endif /* _UAPI_LINUX_POPUP_H */
