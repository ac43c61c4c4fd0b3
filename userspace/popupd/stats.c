// SPDX-License-Identifier: GPL-2.0
/*
 * Statistics. The per-CPU file (layout in include/popup/stats.h): created
 * fresh at start so a reader never sees a previous run's rows, removed at
 * a clean stop. The per-service and daemon-wide figures are text returned
 * by the directory service (popupd.stats), so popupctl gets them locally
 * or over the network alike.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "popup/popup.h"
#include "popupd.h"

/* Inode of the file we created, to tell it from a later instance's. */
static ino_t stats_ino;

static int mkdir_parent(const char *path)
{
	char dir[256];
	char *slash;

	if (strlen(path) >= sizeof(dir))
		return -ENAMETOOLONG;
	strcpy(dir, path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = 0;
	if (mkdir(dir, 0755) && errno != EEXIST)
		return -errno;
	return 0;
}

struct popup_stats_file *stats_create(const char *path, unsigned int nr_workers,
				      uint32_t port)
{
	struct popup_stats_file *sf;
	char tmp[300];
	int fd, err;

	err = mkdir_parent(path);
	if (err) {
		pr_err("cannot create the directory of %s: %s", path, strerror(-err));
		return NULL;
	}
	/* Build under a temporary name and rename, so readers never see a
	 * half-initialised file. */
	snprintf(tmp, sizeof(tmp), "%s.%d", path, (int)getpid());
	fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		pr_err("cannot create %s: %s", tmp, strerror(errno));
		return NULL;
	}
	if (ftruncate(fd, sizeof(*sf))) {
		pr_err("cannot size %s: %s", tmp, strerror(errno));
		goto err_close;
	}
	sf = mmap(NULL, sizeof(*sf), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (sf == MAP_FAILED) {
		pr_err("cannot map %s: %s", tmp, strerror(errno));
		goto err_close;
	}
	sf->version = POPUP_STATS_VERSION;
	sf->nr_workers = nr_workers;
	sf->pid = getpid();
	sf->started = time(NULL);
	sf->port = port;
	__atomic_store_n(&sf->magic, POPUP_STATS_MAGIC, __ATOMIC_RELEASE);
	if (rename(tmp, path)) {
		pr_err("cannot rename %s to %s: %s", tmp, path, strerror(errno));
		munmap(sf, sizeof(*sf));
		goto err_close;
	}
	struct stat stb;

	if (!fstat(fd, &stb))
		stats_ino = stb.st_ino;
	close(fd);
	return sf;

err_close:
	close(fd);
	unlink(tmp);
	return NULL;
}

void stats_destroy(struct popup_stats_file *sf, const char *path)
{
	if (!sf)
		return;
	/* Only remove the file if it is still ours (a second instance may
	 * have replaced it). */
	struct stat stb;

	if (!stat(path, &stb) && stb.st_ino == stats_ino)
		unlink(path);
	munmap(sf, sizeof(*sf));
}

/* ---- the directory service's text ------------------------------------- */

/*
 * Both texts are lines of "key=value" words after a record type, which
 * popupctl parses and a human can read:
 *   svc name=echo id=1 version=1 dispatch=inline ...
 *   m svc=echo id=1 name=echo max_arg=65536 max_res=65536 flags=0
 *   daemon pid=... conns=... refused=... idle_closed=... ...
 */
struct textbuf {
	char *p;
	size_t cap, len;
	bool full;
};

static void tb_printf(struct textbuf *tb, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void tb_printf(struct textbuf *tb, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (tb->full)
		return;
	va_start(ap, fmt);
	n = vsnprintf(tb->p + tb->len, tb->cap - tb->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= tb->cap - tb->len)
		tb->full = true;
	else
		tb->len += n;
}

int dir_services_text(char *buf, size_t cap)
{
	struct textbuf tb = { .p = buf, .cap = cap };

	for (unsigned int i = 0; i < services_count(); i++) {
		const struct svc *s = svc_at(i);

		tb_printf(&tb, "svc name=%s id=%u version=%u dispatch=%s min_threads=%u "
			  "threads=%u queue=%u timeout_ms=%u methods=%u\n",
			  s->def->name, s->id, s->def->version,
			  s->arb ? "arbiter" : svc_dispatch_name(s->dispatch),
			  s->pool.min_threads, s->pool.max_threads, s->pool.queue_limit,
			  s->pool.timeout_ms, s->def->nr_methods);
		for (uint32_t k = 0; k < s->def->nr_methods; k++) {
			const struct popup_svc_method *m = &s->def->methods[k];

			tb_printf(&tb, "m svc=%s id=%u name=%s max_arg=%u max_res=%u flags=%u\n",
				  s->def->name, m->id, m->name, m->max_arg, m->max_res, m->flags);
		}
	}
	return tb.full ? -E2BIG : (int)tb.len;
}

/* Upper bound, in microseconds, of the bucket holding quantile @q. */
static uint64_t percentile(const uint64_t *lat, double q)
{
	uint64_t total = 0, seen = 0, want;

	for (int b = 0; b < LAT_BUCKETS; b++)
		total += ctr_get(&lat[b]);
	if (!total)
		return 0;
	want = (uint64_t)(q * total);
	if (want >= total)
		want = total - 1;
	for (int b = 0; b < LAT_BUCKETS; b++) {
		seen += ctr_get(&lat[b]);
		if (seen > want)
			return 1ull << b;
	}
	return 1ull << (LAT_BUCKETS - 1);
}

int dir_stats_text(char *buf, size_t cap)
{
	struct textbuf tb = { .p = buf, .cap = cap };
	const struct popupd_counters *c = &pd.ctr;
	uint64_t http_requests = ctr_get(&c->http_requests);

	for (unsigned int i = 0; pd.workers && i < pd.nr_workers; i++)
		http_requests += ctr_get(&pd.workers[i].http_requests);

	tb_printf(&tb, "daemon pid=%d uptime_s=%llu port=%u http_port=%u workers=%u "
		  "conns=%u max_conns=%u refused=%llu idle_closed=%llu slow_closed=%llu "
		  "write_closed=%llu proto_errors=%llu accept_emfile=%llu busy=%llu "
		  "http_requests=%llu udp_dropped=%llu\n",
		  (int)getpid(), (unsigned long long)((now_ns() - pd.started_ns) / 1000000000ull),
		  pd.port, pd.http_port, pd.nr_workers,
		  __atomic_load_n(&pd.conns, __ATOMIC_RELAXED), LIM(max_conns),
		  (unsigned long long)ctr_get(&c->conns_refused),
		  (unsigned long long)ctr_get(&c->idle_closed),
		  (unsigned long long)ctr_get(&c->slow_closed),
		  (unsigned long long)ctr_get(&c->write_closed),
		  (unsigned long long)ctr_get(&c->proto_errors),
		  (unsigned long long)ctr_get(&c->accept_emfile),
		  (unsigned long long)ctr_get(&c->busy),
		  (unsigned long long)http_requests,
		  (unsigned long long)ctr_get(&c->udp_dropped));
	for (unsigned int i = 0; i < services_count(); i++) {
		struct svc *s = svc_at(i);
		struct pool_stats sum = { 0 };
		struct popup_server_stats ls = { 0 };

		for (unsigned int k = 0; k < s->nr_pools; k++) {
			struct pool_stats ps;

			pool_get_stats(s->pools[k], &ps);
			sum.threads += ps.threads;
			sum.idle += ps.idle;
			sum.busy += ps.busy;
			sum.queued += ps.queued;
			sum.max_threads += ps.max_threads;
			sum.max_seen += ps.max_seen;
			sum.spawned += ps.spawned;
			sum.retired += ps.retired;
		}
		local_stats(s, &ls);
		tb_printf(&tb, "svc name=%s id=%u calls=%llu errors=%llu busy=%llu timeouts=%llu "
			  "local_calls=%llu p50_us=%llu p99_us=%llu threads=%u idle=%u "
			  "busy_threads=%u max_threads=%u max_seen=%u queued=%u spawned=%llu "
			  "retired=%llu local_threads=%u local_idle=%u local_busy=%u "
			  "local_queued=%u local_spawned=%u local_retired=%u\n",
			  s->def->name, s->id,
			  (unsigned long long)ctr_get(&s->st.calls),
			  (unsigned long long)ctr_get(&s->st.errors),
			  (unsigned long long)ctr_get(&s->st.busy),
			  (unsigned long long)ctr_get(&s->st.timeouts),
			  (unsigned long long)ctr_get(&s->st.local_calls),
			  (unsigned long long)percentile(s->st.lat, 0.50),
			  (unsigned long long)percentile(s->st.lat, 0.99),
			  sum.threads, sum.idle, sum.busy, sum.max_threads, sum.max_seen,
			  sum.queued, (unsigned long long)sum.spawned,
			  (unsigned long long)sum.retired, ls.threads, ls.idle, ls.busy,
			  ls.queued, ls.spawned, ls.retired);
	}
	if (!tb.full) {
		int n = arbiter_stats_text(buf + tb.len, cap - tb.len);

		if (n < 0)
			tb.full = true;
		else
			tb.len += n;
	}
	return tb.full ? -E2BIG : (int)tb.len;
}
