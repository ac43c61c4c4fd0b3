/* SPDX-License-Identifier: LGPL-2.1 OR BSD-2-Clause */
/*
 * Wire protocol of libpopup's userspace backend.
 *
 * A service listens on an abstract-namespace SOCK_SEQPACKET Unix socket
 * named "@popup/svc/<name>.<version>" (version in decimal). The abstract
 * namespace gives the kernel backend's export semantics for free: binding
 * an address that is in use fails (-EEXIST), and the name vanishes with
 * the last reference to the socket, so a dead server leaves nothing
 * behind. It is per network namespace and has no file permissions: any
 * process in the namespace may call; handlers see the caller's
 * credentials (SO_PEERCRED) and decide.
 *
 * Every message is one datagram: struct pu_hdr, then @len payload bytes.
 * Integers are host-endian (both ends are on the same machine).
 *
 *   client                         server
 *   HELLO {pu_hello}        ->
 *                           <-     WELCOME {pu_welcome, pu_method[n]}
 *   CALL  {args}            ->                     (one at a time)
 *                           <-     REPLY {result}  status = handler's
 *                                  or, flag PU_F_ERR, -errno
 *   ONEWAY {args}           ->                     (one at a time)
 *                           <-     ACK             status 0: queued, or
 *                                  PU_F_ERR, -errno: refused
 *
 * A binding opens one connection per slot, lazily, each starting with the
 * HELLO/WELCOME handshake; the slot's calls are strictly request/reply on
 * it. One-way calls use one more connection per binding; the server counts
 * that connection's accepted but unfinished one-way calls against the
 * binding's quota, and runs them even if the client hangs up. Cancelling a call is closing
 * its connection: the server drops a queued call, and discards the result
 * of a running one. The server's instance id, sent in every WELCOME, lets
 * a client tell a restarted server from the one it imported, whose death
 * must surface as -ECONNRESET, never as a silent switch.
 */
#ifndef __LIBPOPUP_USER_PROTO_H
#define __LIBPOPUP_USER_PROTO_H

#include <stdint.h>

#define PU_MAGIC	0x31505550u	/* "PUP1" */
#define PU_PROTO	1
#define PU_ADDR_FMT	"popup/svc/%s.%u"

enum pu_type {
	PU_HELLO = 1,
	PU_WELCOME,
	PU_CALL,
	PU_REPLY,
	PU_ONEWAY,
	PU_ACK,
};

/* REPLY/ACK/WELCOME: @status is a library -errno, not a handler status. */
#define PU_F_ERR	(1u << 0)

struct pu_hdr {
	uint32_t magic;		/* PU_MAGIC */
	uint16_t type;		/* enum pu_type */
	uint16_t flags;		/* PU_F_* */
	uint32_t method;	/* CALL, ONEWAY */
	int32_t status;		/* REPLY, ACK, WELCOME */
	uint32_t len;		/* payload bytes after the header */
	int32_t priority;	/* CALL, ONEWAY */
	int32_t cpu;		/* CALL, ONEWAY: the caller's CPU */
	uint32_t timeout_ms;	/* CALL: 0 = none */
	uint64_t seq;		/* CALL: echoed by REPLY */
};

struct pu_hello {
	uint32_t proto;		/* PU_PROTO */
	uint32_t version;	/* service version wanted */
	uint32_t oneway_quota;	/* the binding's, for its one-way channel */
	uint32_t reserved;	/* zero */
	char name[64];		/* service name wanted, NUL-terminated */
};

struct pu_method {
	uint32_t id;
	uint32_t flags;
	uint32_t max_arg;
	uint32_t max_res;
};

struct pu_welcome {
	uint64_t instance;	/* random per export */
	uint32_t proto;
	uint32_t nr_methods;	/* pu_method entries that follow */
};

#endif /* __LIBPOPUP_USER_PROTO_H */
