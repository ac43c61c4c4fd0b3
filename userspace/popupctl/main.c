// SPDX-License-Identifier: GPL-2.0
/*
 * popupctl: inspect and drive a running popup system.
 *
 *   popupctl version [--json]   module and API version (/dev/popup)
 *   popupctl stats [--json] [--watch SEC] [--connect HOST:PORT]
 *                               per-CPU requests, share, locality, BPF
 *                               selections, fallbacks and migrations,
 *                               balance max/min; then per service: calls,
 *                               errors, p50/p99, threads idle/busy/max,
 *                               queue, spawns
 *   popupctl worker restart CPU [--stats PATH] [--timeout SEC]
 *                               restart the worker of CPU under the same
 *                               steering slot (SIGUSR1 with the CPU as its
 *                               sigqueue() value), wait for the result
 *   popupctl services [--json] [--connect HOST:PORT]
 *   popupctl call SERVICE.METHOD [ARG|-] [--json] [--connect HOST:PORT]
 *
 * Subcommands are a table; each parses its own options. Usage errors exit
 * 2 with a one-line hint; a missing module, device, daemon or permission
 * is reported in one line saying what to do about it.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "popup/stats.h"
#include "popupctl.h"
#include "steer.h"
#include "uapi/linux/popup.h"

struct cmd {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *help;
};

static void usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "popupctl: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "; see 'popupctl help'\n");
}

/* ---- version ---- */

static int cmd_version(int argc, char **argv)
{
	struct popup_version ver;
	bool json = argc == 2 && !strcmp(argv[1], "--json");
	int fd;

	if (argc > 1 && !json) {
		usage_error("version takes only --json, got '%s'", argv[1]);
		return EXIT_USAGE;
	}
	fd = open("/dev/" POPUP_DEVICE_NAME, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;

		if (e == ENOENT)
			fprintf(stderr, "popupctl: /dev/popup not found: load the module with 'insmod kmod/popup.ko'\n");
		else
			fprintf(stderr, "popupctl: cannot open /dev/popup: %s\n", strerror(e));
		return 1;
	}
	if (ioctl(fd, POPUP_IOC_VERSION, &ver)) {
		fprintf(stderr, "popupctl: POPUP_IOC_VERSION failed: %s\n", strerror(errno));
		close(fd);
		return 1;
	}
	close(fd);
	if (json)
		printf("{\"api_version\":%u,\"userspace_api_version\":%u,\"features\":%u,"
		       "\"nr_cpu_ids\":%u}\n", ver.api_version, POPUP_API_VERSION,
		       ver.features, ver.nr_cpu_ids);
	else
		printf("popup.ko api %u (userspace api %u), features 0x%x, %u CPU ids\n",
		       ver.api_version, POPUP_API_VERSION, ver.features, ver.nr_cpu_ids);
	return ver.api_version == POPUP_API_VERSION ? 0 : 1;
}

/* ---- stats ---- */

struct stats_opts {
	bool json;
	unsigned int watch;
	const char *path;
	const char *pin_dir;
	const char *connect;
};

static const struct popup_stats_file *stats_map(const char *path)
{
	const struct popup_stats_file *sf;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		if (errno == ENOENT)
			fprintf(stderr, "popupctl: %s not found: is popupd running? start it with 'popupd'\n", path);
		else
			fprintf(stderr, "popupctl: cannot open %s: %s\n", path, strerror(errno));
		return NULL;
	}
	sf = mmap(NULL, sizeof(*sf), PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (sf == MAP_FAILED) {
		fprintf(stderr, "popupctl: cannot map %s: %s\n", path, strerror(errno));
		return NULL;
	}
	if (sf->magic != POPUP_STATS_MAGIC || sf->version != POPUP_STATS_VERSION ||
	    sf->nr_workers > POPUP_STATS_MAX_WORKERS) {
		fprintf(stderr, "popupctl: %s is not a popupd statistics file of version %d\n",
			path, POPUP_STATS_VERSION);
		munmap((void *)sf, sizeof(*sf));
		return NULL;
	}
	return sf;
}

static uint64_t ld(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

struct row {
	unsigned int cpu;
	bool live;
	uint64_t requests, tcp, udp, conns, errors, samples, local;
	struct popup_steer_stats bpf;
	uint64_t bpf_local;	/* selections made on the worker's own CPU */
	bool have_bpf;
};

static void stats_collect(const struct popup_stats_file *sf, const char *pin_dir,
			  struct row *rows, unsigned int n)
{
	struct popup_steer_stats_table t = { 0 };
	bool have_bpf = popup_steer__read_stats_pinned(pin_dir, &t) == 0;

	for (unsigned int i = 0; i < n; i++) {
		const struct popup_worker_stats *w = &sf->w[i];
		struct row *r = &rows[i];

		memset(r, 0, sizeof(*r));
		r->cpu = w->cpu;
		r->live = __atomic_load_n(&w->live, __ATOMIC_RELAXED);
		r->requests = ld(&w->requests);
		r->tcp = ld(&w->tcp_requests);
		r->udp = ld(&w->udp_requests);
		r->conns = ld(&w->conns);
		r->errors = ld(&w->errors);
		r->samples = ld(&w->samples);
		r->local = ld(&w->local);
		r->have_bpf = have_bpf && i < POPUP_STEER_MAX_SLOTS;
		if (r->have_bpf) {
			popup_steer_stats_sum(&t, i, &r->bpf);
			if (r->cpu < t.nr_cpus)
				r->bpf_local = popup_steer_stats_at(&t, i, r->cpu)->selections;
		}
	}
	if (have_bpf)
		popup_steer_stats_table__free(&t);
}

/*
 * Locality: the share of arrivals handled on the CPU that received them.
 * Two sources are combined: for UDP datagrams and TCP connections, the
 * BPF program's per-CPU selection counters (the column of the worker's
 * CPU is the local part); for requests on established TCP connections,
 * popupd's SO_INCOMING_CPU samples. Returns -1 when there is no data.
 */
static double locality(const struct row *r)
{
	uint64_t n = r->samples, local = r->local;

	if (r->have_bpf) {
		n += r->bpf.selections;
		local += r->bpf_local;
	}
	return n ? (double)local / n : -1.0;
}

static double balance_ratio(const struct row *rows, unsigned int n)
{
	uint64_t mx = 0, mn = UINT64_MAX;

	for (unsigned int i = 0; i < n; i++) {
		if (!rows[i].live)
			continue;
		if (rows[i].requests > mx)
			mx = rows[i].requests;
		if (rows[i].requests < mn)
			mn = rows[i].requests;
	}
	if (mx == 0)
		return 1.0;
	return mn ? (double)mx / mn : -1.0;	/* -1: some worker got nothing */
}

static void stats_print_table(const struct popup_stats_file *sf, const struct row *rows,
			      unsigned int n)
{
	uint64_t total = 0;
	double ratio;

	for (unsigned int i = 0; i < n; i++)
		total += rows[i].requests;
	printf("popupd pid %u, port %u, arrival %s, %u workers\n", sf->pid, sf->port,
	       sf->arrival ? "kernel" : "user", n);
	printf("%4s %5s %12s %7s %9s %10s %10s %9s %10s %8s %8s\n", "cpu", "live",
	       "requests", "share", "locality", "tcp", "udp", "conns", "bpf-sel", "fallback",
	       "migrated");
	for (unsigned int i = 0; i < n; i++) {
		const struct row *r = &rows[i];
		double share = total ? 100.0 * r->requests / total : 0.0;
		char loc[16] = "-", sel[24] = "-", fb[24] = "-", mig[24] = "-";

		if (locality(r) >= 0)
			snprintf(loc, sizeof(loc), "%.1f%%", 100.0 * locality(r));
		if (r->have_bpf) {
			snprintf(sel, sizeof(sel), "%llu", (unsigned long long)r->bpf.selections);
			snprintf(fb, sizeof(fb), "%llu", (unsigned long long)r->bpf.fallbacks);
			snprintf(mig, sizeof(mig), "%llu", (unsigned long long)r->bpf.migrations);
		}
		printf("%4u %5s %12llu %6.1f%% %9s %10llu %10llu %9llu %10s %8s %8s\n", r->cpu,
		       r->live ? "yes" : "no", (unsigned long long)r->requests, share, loc,
		       (unsigned long long)r->tcp, (unsigned long long)r->udp,
		       (unsigned long long)r->conns, sel, fb, mig);
	}
	ratio = balance_ratio(rows, n);
	if (ratio < 0)
		printf("total %llu requests; balance max/min: inf (a live worker served none)\n",
		       (unsigned long long)total);
	else
		printf("total %llu requests; balance max/min: %.3f\n",
		       (unsigned long long)total, ratio);
}

static void stats_print_json(const struct popup_stats_file *sf, const struct row *rows,
			     unsigned int n)
{
	uint64_t total = 0;
	double ratio = balance_ratio(rows, n);

	for (unsigned int i = 0; i < n; i++)
		total += rows[i].requests;
	printf("{\"pid\":%u,\"port\":%u,\"arrival\":\"%s\",\"total\":%llu,\"balance\":",
	       sf->pid, sf->port, sf->arrival ? "kernel" : "user", (unsigned long long)total);
	if (ratio < 0)
		printf("null");
	else
		printf("%.4f", ratio);
	printf(",\"cpus\":[");
	for (unsigned int i = 0; i < n; i++) {
		const struct row *r = &rows[i];

		printf("%s{\"cpu\":%u,\"live\":%s,\"requests\":%llu,\"share\":%.4f,"
		       "\"tcp\":%llu,\"udp\":%llu,\"conns\":%llu,\"errors\":%llu,"
		       "\"locality\":",
		       i ? "," : "", r->cpu, r->live ? "true" : "false",
		       (unsigned long long)r->requests,
		       total ? (double)r->requests / total : 0.0,
		       (unsigned long long)r->tcp, (unsigned long long)r->udp,
		       (unsigned long long)r->conns, (unsigned long long)r->errors);
		if (locality(r) < 0)
			printf("null");
		else
			printf("%.4f", locality(r));
		if (r->have_bpf)
			printf(",\"bpf\":{\"selections\":%llu,\"fallbacks\":%llu,"
			       "\"migrations\":%llu,\"errors\":%llu}",
			       (unsigned long long)r->bpf.selections,
			       (unsigned long long)r->bpf.fallbacks,
			       (unsigned long long)r->bpf.migrations,
			       (unsigned long long)r->bpf.errors);
		printf("}");
	}
	printf("]");
}

static int stats_parse(int argc, char **argv, struct stats_opts *o)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "watch", required_argument, NULL, 'w' },
		{ "stats", required_argument, NULL, 's' },
		{ "pin-dir", required_argument, NULL, 'P' },
		{ "connect", required_argument, NULL, 'c' },
		{}
	};
	char *end;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "jw:", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			o->json = true;
			break;
		case 'w':
			o->watch = strtoul(optarg, &end, 10);
			if (*end || !o->watch || o->watch > 3600) {
				usage_error("--watch wants seconds between 1 and 3600, got '%s'", optarg);
				return -EINVAL;
			}
			break;
		case 's':
			o->path = optarg;
			break;
		case 'P':
			o->pin_dir = optarg;
			break;
		case 'c':
			o->connect = optarg;
			break;
		default:
			usage_error("%s", "unknown option to stats");
			return -EINVAL;
		}
	}
	if (optind != argc) {
		usage_error("stats takes no argument, got '%s'", argv[optind]);
		return -EINVAL;
	}
	return 0;
}

static int cmd_stats(int argc, char **argv)
{
	struct stats_opts o = { .path = POPUP_STATS_PATH, .pin_dir = "/sys/fs/bpf/popup" };
	const struct popup_stats_file *sf;
	struct row *rows;
	unsigned int n;

	if (stats_parse(argc, argv, &o))
		return EXIT_USAGE;
	if (o.connect) {
		/* Remote: only what the daemon reports; the per-CPU file and
		 * the BPF maps are local to popupd's machine. */
		if (o.json)
			printf("{");
		if (stats_services(o.connect, o.json, false))
			return 1;
		if (o.json)
			printf("}\n");
		return 0;
	}
	sf = stats_map(o.path);
	if (!sf)
		return 1;
	n = sf->nr_workers;
	rows = calloc(n ? n : 1, sizeof(*rows));
	if (!rows) {
		munmap((void *)sf, sizeof(*sf));
		return 1;
	}
	for (;;) {
		stats_collect(sf, o.pin_dir, rows, n);
		if (o.watch && !o.json)
			printf("\033[H\033[2J");
		if (o.json) {
			stats_print_json(sf, rows, n);
			printf(",");
			if (stats_services(NULL, true, true))
				printf("\"services\":null");
			printf("}\n");
		} else {
			stats_print_table(sf, rows, n);
			stats_services(NULL, false, true);
		}
		fflush(stdout);
		if (!o.watch)
			break;
		sleep(o.watch);
	}
	free(rows);
	munmap((void *)sf, sizeof(*sf));
	return 0;
}

/* ---- worker restart ---- */

struct restart_opts {
	const char *path;
	unsigned int timeout_s;
	int cpu;
};

static int restart_parse(int argc, char **argv, struct restart_opts *o)
{
	static const struct option opts[] = {
		{ "stats", required_argument, NULL, 's' },
		{ "timeout", required_argument, NULL, 't' },
		{}
	};
	char *end;
	long v;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			o->path = optarg;
			break;
		case 't':
			v = strtol(optarg, &end, 10);
			if (*end || v < 1 || v > 3600) {
				usage_error("--timeout wants seconds between 1 and 3600, got '%s'",
					    optarg);
				return -EINVAL;
			}
			o->timeout_s = v;
			break;
		default:
			usage_error("%s", "unknown option to worker restart");
			return -EINVAL;
		}
	}
	if (optind + 2 != argc || strcmp(argv[optind], "restart")) {
		usage_error("%s", "usage: worker restart CPU");
		return -EINVAL;
	}
	v = strtol(argv[optind + 1], &end, 10);
	if (*end || !*argv[optind + 1] || v < 0 || v > 65535) {
		usage_error("worker restart wants a CPU number, got '%s'", argv[optind + 1]);
		return -EINVAL;
	}
	o->cpu = v;
	return 0;
}

static int restart_row(const struct popup_stats_file *sf, int cpu)
{
	for (unsigned int i = 0; i < sf->nr_workers; i++)
		if ((int)sf->w[i].cpu == cpu)
			return i;
	return -1;
}

/* Wait for popupd to bump the row's restart count past @before. */
static int restart_wait(const struct popup_worker_stats *w, uint64_t before,
			unsigned int timeout_s)
{
	struct timespec t0, t;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		if (__atomic_load_n(&w->restarts, __ATOMIC_ACQUIRE) != before)
			return (int)__atomic_load_n(&w->restart_err, __ATOMIC_RELAXED);
		clock_gettime(CLOCK_MONOTONIC, &t);
		if (t.tv_sec - t0.tv_sec >= (time_t)timeout_s)
			return -ETIMEDOUT;
		usleep(20000);
	}
}

static int cmd_worker(int argc, char **argv)
{
	struct restart_opts o = { .path = POPUP_STATS_PATH, .timeout_s = 60 };
	const struct popup_stats_file *sf;
	union sigval val;
	uint64_t before;
	int row, err;

	if (restart_parse(argc, argv, &o))
		return EXIT_USAGE;
	sf = stats_map(o.path);
	if (!sf)
		return 1;
	row = restart_row(sf, o.cpu);
	if (row < 0) {
		fprintf(stderr, "popupctl: popupd (pid %u) has no worker on CPU %d; see 'popupctl stats'\n",
			sf->pid, o.cpu);
		munmap((void *)sf, sizeof(*sf));
		return EXIT_USAGE;
	}
	before = __atomic_load_n(&sf->w[row].restarts, __ATOMIC_ACQUIRE);
	val.sival_int = o.cpu;
	if (sigqueue((pid_t)sf->pid, SIGUSR1, val)) {
		err = errno;
		fprintf(stderr, "popupctl: cannot signal popupd (pid %u): %s%s\n", sf->pid,
			strerror(err), err == EPERM ? " (run as root or as popupd's user)" :
			err == ESRCH ? " (popupd is gone; stale statistics file?)" : "");
		munmap((void *)sf, sizeof(*sf));
		return 1;
	}
	err = restart_wait(&sf->w[row], before, o.timeout_s);
	munmap((void *)sf, sizeof(*sf));
	if (err == -ETIMEDOUT) {
		fprintf(stderr, "popupctl: no answer from popupd within %u s; see its log\n",
			o.timeout_s);
		return 1;
	}
	if (err) {
		fprintf(stderr, "popupctl: restarting the worker of CPU %d failed: %s%s\n", o.cpu,
			strerror(-err), err == -EOPNOTSUPP ?
			" (needs BPF steering and the userspace UDP arrival path)" : "");
		return 1;
	}
	printf("worker on CPU %d restarted\n", o.cpu);
	return 0;
}

static int cmd_help(int argc, char **argv);

static const struct cmd cmds[] = {
	{ "version", cmd_version, "show the module's API version [--json]" },
	{ "stats", cmd_stats, "per-CPU and per-service statistics [--json] [--watch SEC] "
			      "[--connect HOST:PORT]" },
	{ "services", cmd_services, "list popupd's services and methods [--json] "
				    "[--connect HOST:PORT]" },
	{ "call", cmd_call, "call SERVICE.METHOD [ARG|-] (local, or --connect HOST:PORT) "
			    "[--json]" },
	{ "worker", cmd_worker, "worker restart CPU: restart one worker in its steering "
				"slot [--stats PATH] [--timeout SEC]" },
	{ "help", cmd_help, "this list" },
};

static int cmd_help(int argc, char **argv)
{
	printf("usage: popupctl COMMAND [options]\n");
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		printf("  %-10s %s\n", cmds[i].name, cmds[i].help);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage_error("%s", "missing command");
		return EXIT_USAGE;
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(argv[1], cmds[i].name))
			return cmds[i].run(argc - 1, argv + 1);
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
		return cmd_help(0, NULL);
	usage_error("unknown command '%s'", argv[1]);
	return EXIT_USAGE;
}
