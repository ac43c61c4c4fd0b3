// SPDX-License-Identifier: GPL-2.0
/*
 * popupctl services | call | the per-service part of stats.
 *
 * Everything here goes through popupd's directory service ("popupd", id
 * 0: method 1 lists services and methods, method 2 reports statistics),
 * reached either locally through libpopup (popup.ko, or libpopup's Unix
 * socket backend) or over the network with the native protocol
 * (--connect HOST:PORT). The directory turns "kv.get" into a service id,
 * version and method id, so the same command line works on both paths.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "popup/popup.h"
#include "popup/wire.h"
#include "popupctl.h"

#define DIR_SVC		"popupd"
#define DIR_VERSION	1
#define DIR_ID		0
#define DIR_M_SERVICES	1
#define DIR_M_STATS	2
#define DIR_MAX		65536
#define IO_TIMEOUT_MS	5000

/* ---- transports ---------------------------------------------------------- */

struct reply {
	int status;		/* native POPUP_WIRE_S_*, or local: handler's */
	bool local;
	unsigned char *data;
	uint32_t len;
};

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000ull + ts.tv_nsec / 1000000;
}

static int net_connect(const char *hostport)
{
	char host[256];
	const char *colon = strrchr(hostport, ':');
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *ai, *a;
	int fd = -1, err;

	if (!colon || colon == hostport || (size_t)(colon - hostport) >= sizeof(host) || !colon[1]) {
		fprintf(stderr, "popupctl: --connect wants HOST:PORT, got '%s'\n", hostport);
		return -EINVAL;
	}
	snprintf(host, sizeof(host), "%.*s", (int)(colon - hostport), hostport);
	err = getaddrinfo(host, colon + 1, &hints, &ai);
	if (err) {
		fprintf(stderr, "popupctl: cannot resolve %s: %s\n", hostport, gai_strerror(err));
		return -ENOENT;
	}
	for (a = ai; a; a = a->ai_next) {
		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		if (!connect(fd, a->ai_addr, a->ai_addrlen))
			break;
		err = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	if (fd < 0) {
		fprintf(stderr, "popupctl: cannot connect to %s: %s (is popupd listening there?)\n",
			hostport, strerror(err));
		return -ECONNREFUSED;
	}
	return fd;
}

static int io_all(int fd, void *buf, size_t len, bool wr, uint64_t deadline)
{
	size_t done = 0;

	while (done < len) {
		struct pollfd p = { .fd = fd, .events = wr ? POLLOUT : POLLIN };
		int64_t left = (int64_t)(deadline - mono_ms());
		ssize_t n;

		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			return -ETIMEDOUT;
		n = wr ? send(fd, (char *)buf + done, len - done, MSG_NOSIGNAL) :
			 recv(fd, (char *)buf + done, len - done, 0);
		if (n == 0)
			return -ECONNRESET;
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -errno;
		}
		done += n;
	}
	return 0;
}

/* One request, one reply, over a fresh connection. */
static int net_call(const char *hostport, uint32_t svc, uint16_t method, const void *arg,
		    uint32_t len, struct reply *r)
{
	uint64_t deadline = mono_ms() + IO_TIMEOUT_MS;
	struct popup_wire_hdr h = {
		.magic = POPUP_WIRE_MAGIC, .version = POPUP_WIRE_VERSION,
		.method = method, .service = svc, .req_id = 1, .len = len,
	};
	unsigned char hb[POPUP_WIRE_HDR_LEN];
	int fd = net_connect(hostport), err;

	if (fd < 0)
		return fd;
	popup_wire_encode(hb, &h);
	err = io_all(fd, hb, sizeof(hb), true, deadline);
	if (!err && len)
		err = io_all(fd, (void *)arg, len, true, deadline);
	while (!err) {
		err = io_all(fd, hb, sizeof(hb), false, deadline);
		if (err)
			break;
		popup_wire_decode(hb, &h);
		if (h.magic != POPUP_WIRE_MAGIC || h.len > (64u << 20)) {
			err = -EPROTO;
			break;
		}
		free(r->data);
		r->data = malloc(h.len + 1);
		if (!r->data) {
			err = -ENOMEM;
			break;
		}
		err = io_all(fd, r->data, h.len, false, deadline);
		r->len = h.len;
		r->data[h.len] = 0;
		if (h.req_id == 1)
			break;
		/* req_id 0: a notice (refusal, going away); busy means our
		 * request will not be answered here. */
		if (h.status == POPUP_WIRE_S_BUSY && h.req_id == 0 && !err) {
			err = -EAGAIN;
			break;
		}
	}
	close(fd);
	if (err) {
		fprintf(stderr, "popupctl: %s: %s\n", hostport,
			err == -EAGAIN ? "popupd refused the connection (busy or stopping)" :
			err == -ETIMEDOUT ? "no reply in time" : strerror(-err));
		return err;
	}
	r->status = h.status;
	return 0;
}

static int local_call(const char *name, uint32_t version, uint32_t method,
		      const void *arg, uint32_t len, uint32_t res_cap, struct reply *r)
{
	struct popup_client *cl;
	struct popup_binding *b;
	long err;
	int ret;

	popup_set_print(NULL);	/* our own one-line messages instead */
	cl = popup_client__open(NULL);
	err = popup_get_error(cl);
	if (err) {
		fprintf(stderr, "popupctl: cannot open a libpopup client: %s\n", strerror(-err));
		return (int)err;
	}
	b = popup_client__import(cl, name, version, NULL);
	err = popup_get_error(b);
	if (err) {
		if (err == -ENOENT && !strcmp(name, DIR_SVC))
			fprintf(stderr, "popupctl: popupd is not running here (no local '%s' "
				"service): start it with 'popupd', or use --connect HOST:PORT\n", name);
		else if (err == -ENOENT)
			fprintf(stderr, "popupctl: service %s version %u is not exported locally\n",
				name, version);
		else if (err == -EACCES || err == -EPERM)
			fprintf(stderr, "popupctl: no permission to call %s: run as the "
				"daemon's user or root\n", name);
		else
			fprintf(stderr, "popupctl: cannot import %s: %s\n", name, strerror(-err));
		popup_client__close(cl);
		return (int)err;
	}
	r->data = malloc(res_cap + 1);
	if (!r->data) {
		ret = -ENOMEM;
		goto out;
	}
	ret = popup_binding__call(b, method, arg, len, r->data, res_cap, &r->len,
				  IO_TIMEOUT_MS);
	if (ret == -EOPNOTSUPP || ret == -EMSGSIZE || ret == -ETIMEDOUT || ret == -ECONNRESET ||
	    ret == -EAGAIN || ret == -ENOBUFS || ret == -EINVAL) {
		char msg[128];

		popup_strerror(ret, msg, sizeof(msg));
		fprintf(stderr, "popupctl: %s: %s\n", name, msg);
		goto out;
	}
	if (r->len > res_cap)
		r->len = res_cap;
	r->data[r->len] = 0;
	r->local = true;
	r->status = ret;	/* the handler's own status */
	ret = 0;
out:
	popup_binding__destroy(b);
	popup_client__close(cl);
	return ret;
}

/* ---- the directory ---------------------------------------------------- */

struct dir_method {
	uint32_t id, max_arg, max_res;
	char name[64];
};

struct dir_svc {
	char name[64], dispatch[16];
	uint32_t id, version, min_threads, threads, queue, timeout_ms;
	struct dir_method m[64];
	unsigned int nm;
};

/* Value of "key=" in a line of key=value words, copied to @out. */
static bool kv_get(const char *line, const char *key, char *out, size_t len)
{
	size_t kl = strlen(key);
	const char *p = line;

	while ((p = strstr(p, key))) {
		if ((p == line || p[-1] == ' ') && p[kl] == '=') {
			size_t n = strcspn(p + kl + 1, " \n");

			snprintf(out, len, "%.*s", (int)n, p + kl + 1);
			return true;
		}
		p += kl;
	}
	return false;
}

static uint32_t kv_u32(const char *line, const char *key)
{
	char v[32];

	return kv_get(line, key, v, sizeof(v)) ? (uint32_t)strtoul(v, NULL, 10) : 0;
}

static int dir_fetch(const char *connect, uint32_t method, struct reply *r)
{
	memset(r, 0, sizeof(*r));
	if (connect)
		return net_call(connect, DIR_ID, method, NULL, 0, r);
	return local_call(DIR_SVC, DIR_VERSION, method, NULL, 0, DIR_MAX, r);
}

static int dir_parse(const char *text, struct dir_svc **out, unsigned int *n)
{
	struct dir_svc *v = NULL;
	unsigned int nv = 0;
	const char *line = text;

	while (line && *line) {
		const char *eol = strchr(line, '\n');
		char buf[1024];

		snprintf(buf, sizeof(buf), "%.*s", eol ? (int)(eol - line) : (int)strlen(line), line);
		if (!strncmp(buf, "svc ", 4)) {
			struct dir_svc *nvv = realloc(v, (nv + 1) * sizeof(*v));

			if (!nvv) {
				free(v);
				return -ENOMEM;
			}
			v = nvv;
			memset(&v[nv], 0, sizeof(v[nv]));
			kv_get(buf, "name", v[nv].name, sizeof(v[nv].name));
			kv_get(buf, "dispatch", v[nv].dispatch, sizeof(v[nv].dispatch));
			v[nv].id = kv_u32(buf, "id");
			v[nv].version = kv_u32(buf, "version");
			v[nv].min_threads = kv_u32(buf, "min_threads");
			v[nv].threads = kv_u32(buf, "threads");
			v[nv].queue = kv_u32(buf, "queue");
			v[nv].timeout_ms = kv_u32(buf, "timeout_ms");
			nv++;
		} else if (!strncmp(buf, "m ", 2) && nv && v[nv - 1].nm < 64) {
			struct dir_method *m = &v[nv - 1].m[v[nv - 1].nm++];

			m->id = kv_u32(buf, "id");
			m->max_arg = kv_u32(buf, "max_arg");
			m->max_res = kv_u32(buf, "max_res");
			kv_get(buf, "name", m->name, sizeof(m->name));
		}
		line = eol ? eol + 1 : NULL;
	}
	*out = v;
	*n = nv;
	return 0;
}

/* ---- JSON helpers -------------------------------------------------------- */

static void json_str(const unsigned char *s, size_t n)
{
	putchar('"');
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = s[i];

		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch == '\n')
			printf("\\n");
		else if (ch < 0x20 || ch >= 0x7f)
			printf("\\u%04x", ch);
		else
			putchar(ch);
	}
	putchar('"');
}

/* "type k=v k=v" -> {"k":v,...}, numbers bare, the rest as strings. */
static void json_line(const char *line)
{
	const char *p = strchr(line, ' ');
	bool first = true;

	putchar('{');
	while (p && *p) {
		const char *k, *eq, *end;

		while (*p == ' ')
			p++;
		k = p;
		end = p + strcspn(p, " \n");
		eq = memchr(k, '=', end - k);
		if (eq) {
			const char *v = eq + 1;
			bool num = v < end && strspn(v, "0123456789") == (size_t)(end - v);

			printf("%s", first ? "" : ",");
			json_str((const unsigned char *)k, eq - k);
			putchar(':');
			if (num)
				printf("%.*s", (int)(end - v), v);
			else
				json_str((const unsigned char *)v, end - v);
			first = false;
		}
		p = *end == '\n' ? NULL : end;
	}
	putchar('}');
}

/* ---- options ------------------------------------------------------------- */

struct net_opts {
	const char *connect;
	bool json;
};

static int parse_net_opts(int argc, char **argv, struct net_opts *o, const char *cmd)
{
	static const struct option opts[] = {
		{ "connect", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{}
	};
	int c;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "c:j", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			o->connect = optarg;
			break;
		case 'j':
			o->json = true;
			break;
		default:
			fprintf(stderr, "popupctl: %s: unknown option '%s'; see 'popupctl help'\n",
				cmd, argv[optind - 1]);
			return -EINVAL;
		}
	}
	return 0;
}

/* ---- services ------------------------------------------------------------ */

int cmd_services(int argc, char **argv)
{
	struct net_opts o = { 0 };
	struct dir_svc *v = NULL;
	struct reply r;
	unsigned int n = 0;

	if (parse_net_opts(argc, argv, &o, "services"))
		return EXIT_USAGE;
	if (optind != argc) {
		fprintf(stderr, "popupctl: services takes no argument, got '%s'; see 'popupctl help'\n",
			argv[optind]);
		return EXIT_USAGE;
	}
	if (dir_fetch(o.connect, DIR_M_SERVICES, &r))
		return 1;
	if (r.status || dir_parse((const char *)r.data, &v, &n)) {
		fprintf(stderr, "popupctl: the directory service failed (status %d)\n", r.status);
		free(r.data);
		return 1;
	}
	if (o.json) {
		printf("[");
		for (unsigned int i = 0; i < n; i++) {
			printf("%s{\"name\":", i ? "," : "");
			json_str((unsigned char *)v[i].name, strlen(v[i].name));
			printf(",\"id\":%u,\"version\":%u,\"dispatch\":\"%s\",\"min_threads\":%u,"
			       "\"threads\":%u,\"queue\":%u,\"timeout_ms\":%u,\"methods\":[",
			       v[i].id, v[i].version, v[i].dispatch, v[i].min_threads,
			       v[i].threads, v[i].queue, v[i].timeout_ms);
			for (unsigned int k = 0; k < v[i].nm; k++) {
				printf("%s{\"id\":%u,\"name\":", k ? "," : "", v[i].m[k].id);
				json_str((unsigned char *)v[i].m[k].name, strlen(v[i].m[k].name));
				printf(",\"max_arg\":%u,\"max_res\":%u}", v[i].m[k].max_arg,
				       v[i].m[k].max_res);
			}
			printf("]}");
		}
		printf("]\n");
	} else {
		printf("%-12s %5s %7s %-14s %7s %6s %9s  %s\n", "service", "id", "version",
		       "dispatch", "threads", "queue", "timeout", "methods (id max_arg/max_res)");
		for (unsigned int i = 0; i < n; i++) {
			char thr[24];

			snprintf(thr, sizeof(thr), "%u-%u", v[i].min_threads, v[i].threads);
			printf("%-12s %5u %7u %-14s %7s %6u %7ums ", v[i].name, v[i].id,
			       v[i].version, v[i].dispatch, thr, v[i].queue, v[i].timeout_ms);
			for (unsigned int k = 0; k < v[i].nm; k++)
				printf(" %s(%u %u/%u)", v[i].m[k].name, v[i].m[k].id,
				       v[i].m[k].max_arg, v[i].m[k].max_res);
			printf("\n");
		}
	}
	free(v);
	free(r.data);
	return 0;
}

/* ---- call ----------------------------------------------------------------- */

static const char *wire_status_name(int s)
{
	static const char *const names[] = {
		"ok", "bad request", "no such service", "no such method", "too big",
		"busy", "timeout", "handler error",
	};

	return s >= 0 && s < (int)(sizeof(names) / sizeof(names[0])) ? names[s] : "unknown";
}

static int read_arg(const char *a, unsigned char **buf, uint32_t *len, uint32_t max)
{
	size_t cap = (size_t)max + 1, n = 0;

	if (strcmp(a, "-")) {
		*len = strlen(a);
		*buf = (unsigned char *)strdup(a);
		return *buf ? 0 : -ENOMEM;
	}
	*buf = malloc(cap ? cap : 1);
	if (!*buf)
		return -ENOMEM;
	for (;;) {
		size_t r = fread(*buf + n, 1, cap - n, stdin);

		n += r;
		if (!r || n == cap)
			break;
	}
	*len = n;
	return 0;
}

int cmd_call(int argc, char **argv)
{
	const struct dir_method *m = NULL;
	const struct dir_svc *s = NULL;
	struct net_opts o = { 0 };
	struct dir_svc *v = NULL;
	unsigned char *arg = NULL;
	struct reply dr, r = { 0 };
	const char *dot;
	unsigned int n = 0;
	uint32_t alen = 0;
	int ret = 1, err;

	if (parse_net_opts(argc, argv, &o, "call"))
		return EXIT_USAGE;
	if (argc - optind < 1 || argc - optind > 2 ||
	    !(dot = strchr(argv[optind], '.')) || dot == argv[optind] || !dot[1]) {
		fprintf(stderr, "popupctl: call wants SERVICE.METHOD [ARG|-], e.g. 'popupctl call "
			"echo.echo hello'; see 'popupctl help'\n");
		return EXIT_USAGE;
	}
	if (dir_fetch(o.connect, DIR_M_SERVICES, &dr))
		return 1;
	if (dr.status || dir_parse((const char *)dr.data, &v, &n)) {
		fprintf(stderr, "popupctl: the directory service failed (status %d)\n", dr.status);
		goto out;
	}
	for (unsigned int i = 0; i < n && !s; i++)
		if (strlen(v[i].name) == (size_t)(dot - argv[optind]) &&
		    !memcmp(v[i].name, argv[optind], dot - argv[optind]))
			s = &v[i];
	for (unsigned int k = 0; s && k < s->nm && !m; k++)
		if (!strcmp(s->m[k].name, dot + 1))
			m = &s->m[k];
	if (!s || !m) {
		fprintf(stderr, "popupctl: %s: no such %s; 'popupctl services' lists them\n",
			argv[optind], s ? "method" : "service");
		goto out;
	}
	err = read_arg(argc - optind == 2 ? argv[optind + 1] : "", &arg, &alen, m->max_arg);
	if (err)
		goto out;
	if (alen > m->max_arg) {
		fprintf(stderr, "popupctl: %s takes at most %u bytes, got %u\n", argv[optind],
			m->max_arg, alen);
		goto out;
	}
	if (o.connect)
		err = net_call(o.connect, s->id, m->id, arg, alen, &r);
	else
		err = local_call(s->name, s->version, m->id, arg, alen, m->max_res, &r);
	if (err)
		goto out;
	ret = r.status ? 1 : 0;
	if (o.json) {
		printf("{\"service\":\"%s\",\"method\":\"%s\",\"via\":\"%s\",\"status\":%d,"
		       "\"status_name\":", s->name, m->name, o.connect ? "network" : "local",
		       r.status);
		if (r.local)
			json_str((const unsigned char *)(r.status ? strerror(-r.status) : "ok"),
				 strlen(r.status ? strerror(-r.status) : "ok"));
		else
			json_str((const unsigned char *)wire_status_name(r.status),
				 strlen(wire_status_name(r.status)));
		printf(",\"result\":");
		json_str(r.data, r.len);
		printf("}\n");
	} else if (r.status) {
		fprintf(stderr, "popupctl: %s: %s%s%.*s\n", argv[optind],
			r.local ? strerror(r.status < 0 ? -r.status : r.status) :
			wire_status_name(r.status), r.len ? ": " : "", (int)r.len, r.data);
	} else {
		fwrite(r.data, 1, r.len, stdout);
		if (isatty(STDOUT_FILENO) && r.len && r.data[r.len - 1] != '\n')
			putchar('\n');
	}
out:
	free(arg);
	free(r.data);
	free(dr.data);
	free(v);
	return ret;
}

/* ---- the per-service part of stats ------------------------------------ */

/* The "arbiter" lines (services served by subservers), after the rest. */
static void stats_arbiters(const char *text, bool json)
{
	bool first = true;

	for (const char *line = text; line && *line;) {
		const char *eol = strchr(line, '\n');
		char buf[1024], name[64] = "?";

		snprintf(buf, sizeof(buf), "%.*s", eol ? (int)(eol - line) : (int)strlen(line), line);
		line = eol ? eol + 1 : NULL;
		if (strncmp(buf, "arbiter ", 8))
			continue;
		if (json) {
			printf("%s", first ? ",\"arbiters\":[" : ",");
			json_line(buf);
		} else {
			if (first)
				printf("\n%-10s %6s %6s %6s %6s %10s %8s %8s %8s %7s\n", "arbiter",
				       "subsrv", "asks", "queued", "held", "dispatched", "retried",
				       "failed", "expired", "busy");
			kv_get(buf, "name", name, sizeof(name));
			printf("%-10s %6u %6u %6u %6u %10u %8u %8u %8u %7u\n", name,
			       kv_u32(buf, "subservers"), kv_u32(buf, "asks"), kv_u32(buf, "queued"),
			       kv_u32(buf, "held"), kv_u32(buf, "dispatched"), kv_u32(buf, "retried"),
			       kv_u32(buf, "failed"), kv_u32(buf, "expired"), kv_u32(buf, "busy"));
		}
		first = false;
	}
	if (json && !first)
		printf("]");
}

/*
 * Print popupd's daemon and per-service counters, after the per-CPU table
 * (text) or as members of the stats object (JSON: the caller has printed
 * the opening part). Returns 0, or -errno when popupd could not be asked;
 * @quiet keeps that silent (the per-CPU part already printed).
 */
int stats_services(const char *connect, bool json, bool quiet)
{
	struct reply r;
	const char *line;
	bool first = true;

	if (quiet) {
		int saved = dup(STDERR_FILENO), devnull = open("/dev/null", O_WRONLY);

		if (devnull >= 0) {
			dup2(devnull, STDERR_FILENO);
			close(devnull);
		}
		if (dir_fetch(connect, DIR_M_STATS, &r))
			r.status = -1;
		if (saved >= 0) {
			dup2(saved, STDERR_FILENO);
			close(saved);
		}
	} else if (dir_fetch(connect, DIR_M_STATS, &r)) {
		return -ENOENT;
	}
	if (r.status) {
		free(r.data);
		return -EIO;
	}
	if (!json)
		printf("\n");
	for (line = (const char *)r.data; line && *line;) {
		const char *eol = strchr(line, '\n');
		char buf[2048];

		snprintf(buf, sizeof(buf), "%.*s", eol ? (int)(eol - line) : (int)strlen(line), line);
		if (json && !strncmp(buf, "daemon ", 7)) {
			printf("\"daemon\":");
			json_line(buf);
			printf(",\"services\":[");
		} else if (json && !strncmp(buf, "svc ", 4)) {
			printf("%s", first ? "" : ",");
			json_line(buf);
			first = false;
		} else if (!strncmp(buf, "svc ", 4)) {
			char name[64] = "?", thr[48];

			if (first)
				printf("%-10s %10s %8s %7s %8s %8s %8s %8s %16s %7s %8s %8s\n",
				       "service", "calls", "errors", "busy", "timeout", "p50(us)",
				       "p99(us)", "local", "thr idle/busy/max", "queued", "spawned",
				       "retired");
			first = false;

			kv_get(buf, "name", name, sizeof(name));
			snprintf(thr, sizeof(thr), "%u %u/%u/%u", kv_u32(buf, "threads"),
				 kv_u32(buf, "idle"), kv_u32(buf, "busy_threads"),
				 kv_u32(buf, "max_threads"));
			printf("%-10s %10u %8u %7u %8u %8u %8u %8u %16s %7u %8u %8u\n", name,
			       kv_u32(buf, "calls"), kv_u32(buf, "errors"), kv_u32(buf, "busy"),
			       kv_u32(buf, "timeouts"), kv_u32(buf, "p50_us"), kv_u32(buf, "p99_us"),
			       kv_u32(buf, "local_calls"), thr, kv_u32(buf, "queued"),
			       kv_u32(buf, "spawned"), kv_u32(buf, "retired"));
		} else if (!strncmp(buf, "daemon ", 7)) {
			printf("connections %u (max %u), refused %u, idle closed %u, slow closed %u, "
			       "write closed %u, protocol errors %u, busy replies %u, fd limit hits %u\n",
			       kv_u32(buf, "conns"), kv_u32(buf, "max_conns"), kv_u32(buf, "refused"),
			       kv_u32(buf, "idle_closed"), kv_u32(buf, "slow_closed"),
			       kv_u32(buf, "write_closed"), kv_u32(buf, "proto_errors"),
			       kv_u32(buf, "busy"), kv_u32(buf, "accept_emfile"));
		}
		line = eol ? eol + 1 : NULL;
	}
	if (json)
		printf("]");
	stats_arbiters((const char *)r.data, json);
	free(r.data);
	return 0;
}
