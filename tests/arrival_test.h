/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the kernel-arrival tests (kmod_arrival for UDP, kmod_tcp for TCP)
 * share around their in-test servers: ATTACH and DETACH wrappers, the
 * native reply header, detached handler threads and their WAIT loop, and
 * the readers of /proc/popup/services, /proc/popup/arrival and
 * /proc/popup/stats the assertions poll.
 */
#ifndef ARRIVAL_TEST_H
#define ARRIVAL_TEST_H

#include <arpa/inet.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "popup_test.h"
#include "popup/wire.h"

/* ATTACH @sock to service @sid; the kernel's answer in @out if set. */
static inline int do_attach(int fd, __u32 sid, int sock, __u32 cpu, __u32 nslots,
			    __u32 slot_size, struct popup_attach *out)
{
	struct popup_attach at;

	memset(&at, 0, sizeof(at));
	at.size = sizeof(at);
	at.fd = sock;
	at.service_id = sid;
	at.cpu = cpu;
	at.nslots = nslots;
	at.slot_size = slot_size;
	if (ioctl(fd, POPUP_IOC_ATTACH, &at))
		return -errno;
	if (out)
		*out = at;
	return 0;
}

static inline int do_detach(int fd, __u32 id, __u32 flags)
{
	struct popup_target t = { .id = id, .flags = flags };

	return ioctl(fd, POPUP_IOC_DETACH, &t) ? -errno : 0;
}

/* The reply to request header @h carrying @len bytes of @res, into @out. */
static inline size_t reply_encode(unsigned char *out, const struct popup_wire_hdr *h,
				  const void *res, uint32_t len)
{
	struct popup_wire_hdr r;

	memset(&r, 0, sizeof(r));
	r.magic = POPUP_WIRE_MAGIC;
	r.version = POPUP_WIRE_VERSION;
	r.flags = POPUP_WIRE_F_REPLY;
	r.method = h->method;
	r.service = h->service;
	r.req_id = h->req_id;
	r.len = len;
	popup_wire_encode(out, &r);
	memcpy(out + POPUP_WIRE_HDR_LEN, res, len);
	return POPUP_WIRE_HDR_LEN + len;
}

/* Start @fn(@arg) on a detached thread: 0, or -1 (nothing started). */
static inline int start_detached(void *(*fn)(void *), void *arg)
{
	pthread_attr_t attr;
	pthread_t th;
	int ret;

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	ret = pthread_create(&th, &attr, fn, arg) ? -1 : 0;
	pthread_attr_destroy(&attr);
	return ret;
}

/*
 * An in-test server's pool thread: WAIT / REPLY_WAIT until retired or
 * the service goes. @spawn starts threads the module asks for; @handle
 * takes every other result and returns true when it left a reply in
 * w->reply (the next call is then REPLY_WAIT).
 */
struct pool_loop {
	int fd;
	__u32 sid;
	struct areas *areas;
	void *srv;
	void (*spawn)(void *srv, int n);
	bool (*handle)(void *srv, struct popup_wait *w);
};

static inline void pool_thread_loop(const struct pool_loop *l)
{
	unsigned long cmd = POPUP_IOC_WAIT;
	struct popup_wait w;

	memset(&w, 0, sizeof(w));
	w.size = sizeof(w);
	w.service_id = l->sid;
	w.flags = POPUP_WAIT_NEW;
	for (;;) {
		if (ioctl(l->fd, cmd, &w)) {
			if (errno != EINTR)
				break;
			cmd = POPUP_IOC_WAIT;
			memset(&w.reply, 0, sizeof(w.reply));
			continue;
		}
		w.flags = POPUP_WAIT_POOL;
		if (w.spawn)
			l->spawn(l->srv, (int)w.spawn);
		cmd = POPUP_IOC_WAIT;
		memset(&w.reply, 0, sizeof(w.reply));
		if (w.kind == POPUP_WAIT_KIND_RETIRE)
			break;
		if (w.kind == POPUP_WAIT_KIND_UNMAP)
			area_unmap(l->areas, w.ctx.binding_id);
		else if (l->handle(l->srv, &w))
			cmd = POPUP_IOC_REPLY_WAIT;
	}
}

/* Wait up to 10 s for service @sid to have @n idle threads. */
static inline int wait_idle(__u32 sid, unsigned int n)
{
	unsigned int id, idle;
	char line[256];
	int i;

	for (i = 0; i < 2000; i++) {
		FILE *f = fopen("/proc/popup/services", "r");

		if (!f)
			return -1;
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "%u %*s %*u %*d %*u %u", &id, &idle) == 2 &&
			    id == sid && idle >= n) {
				fclose(f);
				return 0;
			}
		fclose(f);
		msleep(5);
	}
	return -1;
}

/* Column @col of per-CPU table @path summed over the CPUs; -1 if absent. */
static inline long long proc_col_sum(const char *path, const char *col)
{
	FILE *f = fopen(path, "r");
	char line[2048], *tok, *save;
	long long sum = 0;
	int idx = -1, i;

	if (!f)
		return -1;
	if (!fgets(line, sizeof(line), f)) {
		fclose(f);
		return -1;
	}
	for (i = 0, tok = strtok_r(line, " \n", &save); tok;
	     tok = strtok_r(NULL, " \n", &save), i++)
		if (!strcmp(tok, col))
			idx = i;
	while (idx > 0 && fgets(line, sizeof(line), f))
		for (i = 0, tok = strtok_r(line, " \n", &save); tok;
		     tok = strtok_r(NULL, " \n", &save), i++)
			if (i == idx)
				sum += atoll(tok);
	fclose(f);
	return idx > 0 ? sum : -1;
}

/* Column @col of /proc/popup/arrival summed over the CPUs; -1 if absent. */
static inline long long arrival_sum(const char *col)
{
	return proc_col_sum("/proc/popup/arrival", col);
}

/* Column @col of /proc/popup/stats summed over the CPUs; -1 if absent. */
static inline long long stats_sum(const char *col)
{
	return proc_col_sum("/proc/popup/stats", col);
}

static inline uint16_t port_of(const struct sockaddr_storage *a)
{
	return ntohs(a->ss_family == AF_INET6 ?
		     ((const struct sockaddr_in6 *)a)->sin6_port :
		     ((const struct sockaddr_in *)a)->sin_port);
}

static inline uint16_t local_port(int c)
{
	struct sockaddr_storage a;
	socklen_t l = sizeof(a);

	getsockname(c, (struct sockaddr *)&a, &l);
	return port_of(&a);
}

#endif
