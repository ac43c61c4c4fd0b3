// SPDX-License-Identifier: GPL-2.0
/*
 * popupd: the popup service daemon.
 *
 * Life cycle, in the libbpf skeleton style: parse the configuration, open
 * one SO_REUSEPORT TCP and UDP socket per CPU of the CPU set, load the BPF
 * steering program and enter every socket into its sockarray under the
 * slot of its CPU, start one pinned worker thread per CPU, then wait for a
 * signal on the main thread. Every exit goes through one cleanup path that
 * stops the workers, removes the BPF pins and the statistics file.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpus.h"
#include "log.h"
#include "popupd.h"
#include "steer.h"

#define EXIT_USAGE 2

static void usage(FILE *f)
{
	fprintf(f,
"usage: popupd [options]\n"
"  -p, --port PORT        native protocol port, TCP and UDP (default 7070)\n"
"  -b, --bind ADDR        IPv4 address to bind (default 0.0.0.0)\n"
"  -c, --cpus LIST        CPUs to run workers on, e.g. 0-2,5 (default: online)\n"
"      --no-bpf           do not attach the steering program (kernel hash)\n"
"      --pin-dir DIR      bpffs directory for pins (default /sys/fs/bpf/popup)\n"
"      --stats PATH       statistics file (default " POPUP_STATS_PATH ")\n"
"      --max-payload N    largest request payload in bytes (default 65536)\n"
"      --max-conns N      connections per worker (default 4096)\n"
"  -l, --log-level LVL    error, warn, info or debug (default info)\n"
"  -h, --help\n");
}

static int parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_args(int argc, char **argv, struct popupd_config *cfg)
{
	static const struct option opts[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "bind", required_argument, NULL, 'b' },
		{ "cpus", required_argument, NULL, 'c' },
		{ "no-bpf", no_argument, NULL, 'N' },
		{ "pin-dir", required_argument, NULL, 'P' },
		{ "stats", required_argument, NULL, 'S' },
		{ "max-payload", required_argument, NULL, 'M' },
		{ "max-conns", required_argument, NULL, 'C' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	enum log_level lvl;
	uint32_t v;
	int c;

	while ((c = getopt_long(argc, argv, "p:b:c:l:h", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			if (parse_u32(optarg, 1, 65535, &v))
				goto bad;
			cfg->port = v;
			break;
		case 'b':
			cfg->bind_addr = optarg;
			break;
		case 'c':
			if (cpus_parse(optarg, &cfg->cpus))
				goto bad;
			break;
		case 'N':
			cfg->use_bpf = false;
			break;
		case 'P':
			cfg->pin_dir = optarg;
			break;
		case 'S':
			cfg->stats_path = optarg;
			break;
		case 'M':
			if (parse_u32(optarg, 0, 16 << 20, &cfg->max_payload))
				goto bad;
			break;
		case 'C':
			if (parse_u32(optarg, 1, 1 << 20, &cfg->max_conns))
				goto bad;
			break;
		case 'l':
			if (log_parse_level(optarg, &lvl))
				goto bad;
			log_set_level(lvl);
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "popupd: unexpected argument '%s'; see popupd --help\n",
			argv[optind]);
		return -EINVAL;
	}
	return 0;
bad:
	fprintf(stderr, "popupd: invalid value '%s'; see popupd --help\n", optarg);
	return -EINVAL;
}

/* Restrict the configured set to CPUs that are online. */
static int resolve_cpus(cpu_set_t *cpus)
{
	cpu_set_t online;
	int err = cpus_online(&online);

	if (err)
		return err;
	if (CPU_COUNT(cpus) == 0) {
		*cpus = online;
		return 0;
	}
	CPU_AND(cpus, cpus, &online);
	return CPU_COUNT(cpus) ? 0 : -ENODEV;
}

static int steer_setup(struct popup_steer **stp, const struct popupd_config *cfg,
		       struct worker *w, unsigned int n)
{
	struct popup_steer_opts opts = {
		.pin_dir = cfg->pin_dir,
		.policy = POPUP_STEER_P_CPU,
		.migrate = true,
	};
	int err;

	err = popup_steer__open(stp, &opts);
	if (err) {
		pr_err("cannot load the steering program: %s", strerror(-err));
		return err;
	}
	for (unsigned int i = 0; i < n; i++) {
		err = popup_steer__set_cpu_slot(*stp, w[i].cpu, w[i].slot);
		if (!err)
			err = popup_steer__add_socket(*stp, w[i].tcp_fd, w[i].slot);
		if (!err)
			err = popup_steer__add_socket(*stp, w[i].udp_fd, w[i].slot);
		if (err) {
			pr_err("cannot attach worker %d to the steering program: %s",
			       w[i].cpu, strerror(-err));
			return err;
		}
	}
	pr_info("steering program attached, pinned under %s", cfg->pin_dir);
	return 0;
}

/* Block the stop signals in every thread; the main thread waits for them. */
static void block_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, set, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static void wait_for_stop(const sigset_t *set)
{
	for (;;) {
		int sig = sigwaitinfo(set, NULL);

		if (sig == SIGHUP) {
			pr_info("SIGHUP: nothing to reload in this version");
			continue;
		}
		if (sig > 0) {
			pr_info("received %s, stopping", strsignal(sig));
			return;
		}
	}
}

int main(int argc, char **argv)
{
	struct popupd_config cfg = {
		.port = 7070,
		.bind_addr = "0.0.0.0",
		.pin_dir = "/sys/fs/bpf/popup",
		.stats_path = POPUP_STATS_PATH,
		.use_bpf = true,
		.max_payload = 65536,
		.max_conns = 4096,
	};
	struct popup_stats_file *sf = NULL;
	struct popup_steer *steer = NULL;
	struct worker *workers = NULL;
	unsigned int nw = 0;
	sigset_t sigs;
	int err;

	log_init("popupd", LOG_LVL_INFO);
	CPU_ZERO(&cfg.cpus);
	if (parse_args(argc, argv, &cfg))
		return EXIT_USAGE;
	err = resolve_cpus(&cfg.cpus);
	if (err) {
		pr_err("no usable CPU in the CPU set: %s", strerror(-err));
		return EXIT_USAGE;
	}
	block_signals(&sigs);

	workers = calloc(CPU_COUNT(&cfg.cpus), sizeof(*workers));
	sf = stats_create(cfg.stats_path, CPU_COUNT(&cfg.cpus), cfg.port);
	if (!workers || !sf) {
		err = -ENOMEM;
		goto cleanup;
	}
	for (int i = 0; i < CPU_COUNT(&cfg.cpus); i++)
		workers[i].tcp_fd = workers[i].udp_fd = workers[i].epfd =
			workers[i].stop_fd = -1;
	for (int cpu = 0; cpu < CPU_SETSIZE && nw < POPUP_STATS_MAX_WORKERS; cpu++) {
		struct worker *w;

		if (!CPU_ISSET(cpu, &cfg.cpus))
			continue;
		w = &workers[nw];
		w->cpu = cpu;
		w->slot = nw;
		w->st = &sf->w[nw];
		nw++;
		err = worker_open(w, &cfg);
		if (err)
			goto cleanup;
	}
	if (cfg.use_bpf) {
		err = steer_setup(&steer, &cfg, workers, nw);
		if (err)
			goto cleanup;
	}
	for (unsigned int i = 0; i < nw; i++) {
		err = worker_start(&workers[i]);
		if (err)
			goto cleanup;
	}
	pr_info("serving echo on %s:%u (tcp, udp) with %u workers", cfg.bind_addr,
		cfg.port, nw);

	wait_for_stop(&sigs);
	err = 0;

cleanup:
	for (unsigned int i = 0; i < nw; i++)
		worker_stop(&workers[i]);
	popup_steer__destroy(steer);
	for (unsigned int i = 0; i < nw; i++)
		worker_close(&workers[i]);
	stats_destroy(sf, cfg.stats_path);
	free(workers);
	if (err)
		pr_err("exiting after an error");
	return err ? 1 : 0;
}
