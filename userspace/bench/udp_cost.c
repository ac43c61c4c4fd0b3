// SPDX-License-Identifier: GPL-2.0
/*
 * popup-udp-cost: what one UDP request costs the CPU on each server path,
 * with scheduling taken out of the picture.
 *
 *   popup-udp-cost [--requests N] [--size BYTES] [--cpu CPU] [--json]
 *
 * One thread, pinned, plays client and server in turn over loopback, so
 * every request runs start to end without a context switch or a wake-up:
 *
 *   sockets  client sendto, server recvfrom, server sendto, client
 *            recvfrom (popupd's epoll path does the server half per
 *            request, plus an epoll_wait whenever it ran dry);
 *   popup.ko client sendto (the module's arrival callback runs inside it
 *            and queues a context), one REPLY_WAIT with POPUP_WAIT_NONBLOCK
 *            (sends the previous reply, takes the new context with the
 *            datagram already in its slot), client recvfrom.
 *
 * Each phase is timed with CLOCK_MONOTONIC around its system call, so the
 * columns say where the time goes: the difference between the two server
 * columns is the module's bookkeeping against the recvfrom it replaces.
 * The paths take turns, BLOCK requests at a time, both set up from start
 * to end, so that a drift of the machine (a TCG guest's speed wanders by
 * tens of percent within a minute) weighs on both alike.
 * The real servers add wake-ups and context switches on top; vm-arrival.sh
 * measures those separately.
 *
 * Exit status: 0, 1 on a failure (with errno context), 2 on usage errors.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cpus.h"
#include "uapi/linux/popup.h"

#define SLOT_SIZE	2048
#define BLOCK		100	/* requests per turn of each path */

/* Accumulated nanoseconds of the four phases of one path. */
struct phases {
	const char *name;
	bool kernel;
	double ns[4];
};

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "popup-udp-cost: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* A UDP socket bound to an ephemeral loopback port; its address in @a. */
static int udp_socket(struct sockaddr_in *a)
{
	socklen_t len = sizeof(*a);
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		die("socket");
	*a = (struct sockaddr_in){ .sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (bind(fd, (struct sockaddr *)a, sizeof(*a)) ||
	    getsockname(fd, (struct sockaddr *)a, &len))
		die("bind");
	return fd;
}

/* The sockets path: a server socket and a client socket. */
struct sock_path {
	struct sockaddr_in sa;
	int srv, cli;
};

static void sockets_open(struct sock_path *sp)
{
	struct sockaddr_in ca;

	sp->srv = udp_socket(&sp->sa);
	sp->cli = udp_socket(&ca);
}

static void sockets_run(struct sock_path *sp, unsigned int n, const char *req, size_t size,
			struct phases *p)
{
	char buf[SLOT_SIZE];

	for (unsigned int i = 0; i < n; i++) {
		struct sockaddr_storage from;
		socklen_t fl = sizeof(from);
		uint64_t t0, t1, t2, t3, t4;
		ssize_t r;

		t0 = now_ns();
		if (sendto(sp->cli, req, size, 0, (struct sockaddr *)&sp->sa, sizeof(sp->sa)) < 0)
			die("sockets: client sendto");
		t1 = now_ns();
		r = recvfrom(sp->srv, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
		if (r < 0)
			die("sockets: server recvfrom");
		t2 = now_ns();
		if (sendto(sp->srv, buf, (size_t)r, 0, (struct sockaddr *)&from, fl) < 0)
			die("sockets: server sendto");
		t3 = now_ns();
		if (recvfrom(sp->cli, buf, sizeof(buf), MSG_DONTWAIT, NULL, NULL) < 0)
			die("sockets: client recvfrom");
		t4 = now_ns();
		p->ns[0] += (double)(t1 - t0);
		p->ns[1] += (double)(t2 - t1);
		p->ns[2] += (double)(t3 - t2);
		p->ns[3] += (double)(t4 - t3);
	}
}

static void sockets_close(struct sock_path *sp)
{
	close(sp->srv);
	close(sp->cli);
}

/*
 * The popup.ko path: a one-method service with a fresh UDP socket
 * attached, its receive area mapped, a client socket, and the WAIT
 * argument, which carries the reply of the last request into the next
 * call (REPLY_WAIT sends it and takes the next datagram).
 */
struct kern_path {
	int pfd, cli;
	struct sockaddr_in ka;
	void *area;
	size_t area_len;
	struct popup_wait w;
	unsigned long cmd;	/* WAIT first, then REPLY_WAIT */
};

static int kernel_open(struct kern_path *kp, int cpu)
{
	struct popup_method m = { .id = 1, .max_arg = SLOT_SIZE, .max_res = SLOT_SIZE };
	struct popup_export ex = {
		.size = sizeof(ex), .version = 1, .nmethods = 1,
		.methods = (uintptr_t)&m,
		.pool = { .max_idle = 1, .increment = 1, .max_threads = 1, .queue_limit = 4 },
	};
	struct popup_attach at = { .size = sizeof(at), .nslots = 4, .slot_size = SLOT_SIZE };
	struct sockaddr_in ca;
	int fd;

	kp->pfd = open("/dev/" POPUP_DEVICE_NAME, O_RDWR | O_CLOEXEC);
	if (kp->pfd < 0)
		return -errno;
	snprintf(ex.name, sizeof(ex.name), "popup-udp-cost.%d", (int)getpid());
	if (ioctl(kp->pfd, POPUP_IOC_EXPORT, &ex))
		die("popup.ko: EXPORT");
	fd = udp_socket(&kp->ka);
	at.fd = fd;
	at.service_id = ex.service_id;
	at.cpu = (uint32_t)cpu;
	if (ioctl(kp->pfd, POPUP_IOC_ATTACH, &at))
		die("popup.ko: ATTACH");
	close(fd);		/* the module holds the socket */
	kp->area = mmap(NULL, at.map_size, PROT_READ | PROT_WRITE, MAP_SHARED, kp->pfd,
			(off_t)at.map_offset);
	if (kp->area == MAP_FAILED)
		die("popup.ko: mmap of the receive area");
	kp->area_len = at.map_size;
	kp->cli = udp_socket(&ca);
	memset(&kp->w, 0, sizeof(kp->w));
	kp->w.size = sizeof(kp->w);
	kp->w.service_id = ex.service_id;
	kp->w.flags = POPUP_WAIT_NONBLOCK;
	kp->cmd = POPUP_IOC_WAIT;
	return 0;
}

/* One REPLY_WAIT: sends the pending reply, takes a datagram if @want. */
static void kernel_step(struct kern_path *kp, bool want)
{
	if (ioctl(kp->pfd, kp->cmd, &kp->w) && !(!want && errno == EAGAIN))
		die("popup.ko: REPLY_WAIT");
	if (want && kp->w.kind != POPUP_WAIT_KIND_DGRAM) {
		fprintf(stderr, "popup-udp-cost: popup.ko: WAIT returned kind %u, not a datagram\n",
			kp->w.kind);
		exit(1);
	}
	if (kp->cmd == POPUP_IOC_REPLY_WAIT && kp->w.reply_result) {
		errno = -kp->w.reply_result;
		die("popup.ko: reply");
	}
}

static void kernel_run(struct kern_path *kp, unsigned int n, const char *req, size_t size,
		       struct phases *p)
{
	char buf[SLOT_SIZE];

	for (unsigned int i = 0; i < n; i++) {
		bool pending = kp->cmd == POPUP_IOC_REPLY_WAIT;
		uint64_t t0, t1, t2, t3;

		t0 = now_ns();
		if (sendto(kp->cli, req, size, 0, (struct sockaddr *)&kp->ka, sizeof(kp->ka)) < 0)
			die("popup.ko: client sendto");
		t1 = now_ns();
		/* Sends the previous reply (if any), then takes this request. */
		kernel_step(kp, true);
		t2 = now_ns();
		if (pending && recvfrom(kp->cli, buf, sizeof(buf), MSG_DONTWAIT, NULL, NULL) < 0)
			die("popup.ko: client recvfrom");
		t3 = now_ns();
		memset(&kp->w.reply, 0, sizeof(kp->w.reply));
		kp->w.reply.ctx_id = kp->w.ctx.ctx_id;
		kp->w.reply.result_len = kp->w.ctx.arg_len;	/* echo in place */
		kp->cmd = POPUP_IOC_REPLY_WAIT;
		p->ns[0] += (double)(t1 - t0);
		p->ns[2] += (double)(t2 - t1);
		p->ns[3] += (double)(t3 - t2);
	}
}

static void kernel_close(struct kern_path *kp)
{
	char buf[SLOT_SIZE];

	if (kp->cmd == POPUP_IOC_REPLY_WAIT) {	/* the last reply */
		kernel_step(kp, false);
		recvfrom(kp->cli, buf, sizeof(buf), MSG_DONTWAIT, NULL, NULL);
	}
	close(kp->cli);
	munmap(kp->area, kp->area_len);
	close(kp->pfd);		/* detaches and withdraws */
}

static void print_row(const struct phases *p, unsigned int n, bool json, bool last)
{
	double tot = p->ns[0] + p->ns[1] + p->ns[2] + p->ns[3];

	if (json)
		printf("\"%s\":{\"client_send_us\":%.2f,\"server_recv_us\":%.2f,"
		       "\"server_reply_us\":%.2f,\"client_recv_us\":%.2f,\"total_us\":%.2f}%s",
		       p->name, p->ns[0] / n / 1e3, p->ns[1] / n / 1e3, p->ns[2] / n / 1e3,
		       p->ns[3] / n / 1e3, tot / n / 1e3, last ? "" : ",");
	else if (p->kernel)	/* the server half is one REPLY_WAIT */
		printf("%-9s %11.2f %11s %12.2f %11.2f %6.2f\n", p->name, p->ns[0] / n / 1e3,
		       "-", p->ns[2] / n / 1e3, p->ns[3] / n / 1e3, tot / n / 1e3);
	else
		printf("%-9s %11.2f %11.2f %12.2f %11.2f %6.2f\n", p->name, p->ns[0] / n / 1e3,
		       p->ns[1] / n / 1e3, p->ns[2] / n / 1e3, p->ns[3] / n / 1e3, tot / n / 1e3);
}

static void usage(void)
{
	fprintf(stderr, "usage: popup-udp-cost [--requests N] [--size BYTES] [--cpu CPU] [--json]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "requests", required_argument, NULL, 'n' },
		{ "size", required_argument, NULL, 's' },
		{ "cpu", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct phases sock = { .name = "sockets" }, kern = { .name = "popup.ko", .kernel = true };
	struct sock_path sp;
	struct kern_path kp;
	unsigned int n = 20000;
	size_t size = 96;
	char req[SLOT_SIZE];
	bool json = false;
	int cpu = 0, opt, err;
	char *end;

	while ((opt = getopt_long(argc, argv, "n:s:c:jh", opts, NULL)) != -1) {
		unsigned long v;

		switch (opt) {
		case 'n':
		case 's':
		case 'c':
			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno || *end || !*optarg || v > 100000000 ||
			    (opt == 's' && (v < 1 || v > SLOT_SIZE)) || (opt == 'n' && !v)) {
				fprintf(stderr, "popup-udp-cost: bad --%s value '%s'\n",
					opt == 'n' ? "requests" : opt == 's' ? "size" : "cpu", optarg);
				usage();
			}
			if (opt == 'n')
				n = (unsigned int)v;
			else if (opt == 's')
				size = v;
			else
				cpu = (int)v;
			break;
		case 'j':
			json = true;
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	if (cpus_pin_self(cpu))
		die("pinning to --cpu");
	memset(req, 'r', sizeof(req));
	sockets_open(&sp);
	err = kernel_open(&kp, cpu);
	/* A first round of each warms caches, routes and allocator slabs. */
	sockets_run(&sp, n / 10 + 1, req, size, &sock);
	if (!err)
		kernel_run(&kp, n / 10 + 1, req, size, &kern);
	memset(sock.ns, 0, sizeof(sock.ns));
	memset(kern.ns, 0, sizeof(kern.ns));
	/* Then the paths take turns, so a drift of the machine hits both. */
	for (unsigned int done = 0; done < n; done += BLOCK) {
		unsigned int k = n - done < BLOCK ? n - done : BLOCK;

		sockets_run(&sp, k, req, size, &sock);
		if (!err)
			kernel_run(&kp, k, req, size, &kern);
	}
	sockets_close(&sp);
	if (!err)
		kernel_close(&kp);
	if (json)
		printf("{\"requests\":%u,\"size\":%zu,\"cpu\":%d,", n, size, cpu);
	else
		printf("us/request client-send server-recv server-reply client-recv  total\n");
	print_row(&sock, n, json, false);
	if (!err)
		print_row(&kern, n, json, true);
	else
		printf(json ? "\"popup.ko\":{\"failed\":\"/dev/%s: %s\"}"
			    : "popup.ko  not measured: /dev/%s: %s\n",
		       POPUP_DEVICE_NAME, strerror(-err));
	if (json)
		printf("}\n");
	return 0;
}
