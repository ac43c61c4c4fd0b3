// SPDX-License-Identifier: GPL-2.0
/*
 * popupd: the popup service daemon.
 *
 * Life cycle, in the libbpf skeleton style: build the configuration
 * (defaults, file, flags), load and check every service plugin and run
 * their init, open one SO_REUSEPORT TCP, UDP and HTTP socket per CPU of the
 * CPU set, load the BPF steering program and enter every native socket
 * into its sockarray under the slot of its CPU, start the handler pools,
 * one pinned worker thread per CPU and the local exports, then wait for
 * signals on the main thread:
 *
 *   SIGHUP          reload: limits, log level and pool settings change in
 *                   place; ports, CPUs and the set of services need a
 *                   restart (logged)
 *   SIGTERM/SIGINT  graceful stop: workers drain (see worker.c) within
 *                   stop_timeout; a second signal stops at once
 *   SIGUSR1         restart one worker (restart_worker()); sent with
 *                   sigqueue() carrying the worker's CPU number, as
 *                   `popupctl worker restart CPU` does; taken only from
 *                   root or popupd's own user (the kernel lets no one else
 *                   signal us anyway), ignored without a value (kill)
 *
 * A second popupd on the same ports joins the reuseport groups and, by
 * attaching its own steering program, takes the new connections; the old
 * one is then stopped and drains. Each instance pins under its own
 * directory (the default one gets a -<pid> suffix when a live instance
 * holds it).
 *
 * Every exit goes through one cleanup path, in dependency order: local
 * exports, workers, pools (late completions land in the workers' lists),
 * sockets, BPF pins, the statistics file, the plugins.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cpus.h"
#include "log.h"
#include "popupd.h"
#include "steer.h"

struct popupd pd;
/* Only the main thread changes steering: setup, restarts, stop. */
static struct popup_steer *steer;

/* defaults, then the file named by --config, then the flags */
static int config_build(struct popupd_config *cfg, int argc, char **argv, bool *check)
{
	const char *path = NULL;
	int err;

	config_defaults(cfg);
	/* First pass only finds --config; flags are applied after the file. */
	err = config_parse_args(cfg, argc, argv, check, &path);
	if (err)
		return err;
	if (path) {
		config_free(cfg);
		config_defaults(cfg);
		err = config_load_file(cfg, path);
		if (!err)
			err = config_parse_args(cfg, argc, argv, NULL, NULL);
	}
	return err;
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

static int steer_open(struct popup_steer **stp, const char *dir)
{
	struct popup_steer_opts opts = {
		.pin_dir = dir,
		.policy = POPUP_STEER_P_CPU,
		.migrate = true,
	};

	return popup_steer__open(stp, &opts);
}

/*
 * Choose how UDP requests arrive: through popup.ko handler contexts when
 * the module offers it (auto) or when asked (kernel), else the workers'
 * epoll loops. Shown in the statistics file, so popupctl stats tells.
 */
/*
 * The kernel path runs handlers in popup.ko's pop-up threads (the `popup`
 * model), or hands them to the object's thread (per-object); a service
 * that wants its own fixed, per-CPU or per-connection threads would lose
 * them there, so such a service keeps the whole daemon on the epoll path.
 */
static const struct svc *arrival_misfit(void)
{
	for (unsigned int i = 0; i < services_count(); i++) {
		const struct svc *s = svc_at(i);

		switch (s->dispatch) {
		case POPUP_SVC_DISPATCH_POOL:
		case POPUP_SVC_DISPATCH_INLINE:
		case POPUP_SVC_DISPATCH_PER_OBJECT:
			break;
		default:
			return s;
		}
	}
	return NULL;
}

static int start_arrival(struct popup_stats_file *sf)
{
	const struct svc *misfit;
	int err;

	if (pd.cfg.arrival == ARRIVAL_USER)
		return 0;
	misfit = arrival_misfit();
	if (misfit && pd.cfg.arrival == ARRIVAL_AUTO) {
		pr_info("arrival: service %s runs dispatch %s, which the kernel path cannot keep; requests on the epoll path",
			misfit->def->name, svc_dispatch_name(misfit->dispatch));
		return 0;
	}
	if (misfit) {
		pr_err("arrival: --arrival=kernel cannot keep service %s's dispatch %s (use popup, inline or per-object, or --arrival=user)",
		       misfit->def->name, svc_dispatch_name(misfit->dispatch));
		return -EINVAL;
	}
	err = arrival_kernel_start();
	if (err == -EOPNOTSUPP && pd.cfg.arrival == ARRIVAL_AUTO) {
		pr_info("arrival: popup.ko with socket attach not available; UDP on the epoll path");
		return 0;
	}
	if (err == -EOPNOTSUPP)
		pr_err("arrival: --arrival=kernel needs popup.ko loaded (insmod kmod/popup.ko)");
	if (err)
		return err;
	sf->arrival = 1;
	return 0;
}

static int steer_setup(struct popup_steer **stp, struct worker *w, unsigned int n)
{
	char dir[300];
	int err;

	snprintf(dir, sizeof(dir), "%s", pd.cfg.pin_dir);
	err = steer_open(stp, dir);
	if (err == -EBUSY && !pd.cfg.pin_dir_set) {
		/* Another popupd (a restart in progress) holds the default
		 * pins: use our own directory, it goes away with us. */
		snprintf(dir, sizeof(dir), "%s-%d", pd.cfg.pin_dir, (int)getpid());
		pr_info("%s is held by a running popupd; pinning under %s", pd.cfg.pin_dir, dir);
		err = steer_open(stp, dir);
	}
	if (err) {
		pr_err("cannot load the steering program: %s%s", strerror(-err),
		       err == -EPERM ? " (needs root or CAP_BPF; or run with --no-bpf)" :
		       err == -EBUSY ? " (pin dir in use by another popupd; use --pin-dir)" : "");
		return err;
	}
	for (unsigned int i = 0; i < n; i++) {
		err = popup_steer__set_cpu_slot(*stp, w[i].cpu, w[i].idx);
		if (!err)
			err = popup_steer__add_socket(*stp, w[i].tcp_fd, w[i].idx);
		if (!err)
			err = popup_steer__add_socket(*stp, w[i].udp_fd, w[i].idx);
		if (err) {
			pr_err("cannot attach worker %d to the steering program: %s",
			       w[i].cpu, strerror(-err));
			return err;
		}
	}
	pr_info("steering program attached, pinned under %s", dir);
	return 0;
}

static void init_worker(struct worker *w, int cpu, unsigned int idx,
			struct popup_stats_file *sf)
{
	w->cpu = cpu;
	w->idx = idx;
	w->st = &sf->w[idx];
	w->tcp_fd = w->udp_fd = w->http_fd = w->epfd = w->wake_fd = w->spare_fd = -1;
}

/* Open every worker. With port 0, worker 0 picks the ports and the others
 * join them; a UDP clash on the picked number is retried. */
static int open_workers(struct popup_stats_file *sf)
{
	int cpu = -1;
	int err = 0;

	for (int attempt = 0; attempt < 16; attempt++) {
		for (cpu = 0; !CPU_ISSET(cpu, &pd.cfg.cpus); cpu++)
			;
		init_worker(&pd.workers[0], cpu, 0, sf);
		err = worker_open(&pd.workers[0], &pd.cfg, pd.cfg.port,
				  pd.cfg.http_port > 0 ? pd.cfg.http_port : 0);
		if (!err || err != -EADDRINUSE || pd.cfg.port)
			break;
		worker_close(&pd.workers[0]);
	}
	pd.nr_workers = 1;
	if (err)
		return err;
	pd.port = sock_port(pd.workers[0].tcp_fd);
	pd.http_port = sock_port(pd.workers[0].http_fd);
	for (cpu++; cpu < CPU_SETSIZE && pd.nr_workers < POPUP_STATS_MAX_WORKERS; cpu++) {
		struct worker *w = &pd.workers[pd.nr_workers];

		if (!CPU_ISSET(cpu, &pd.cfg.cpus))
			continue;
		init_worker(w, cpu, pd.nr_workers, sf);
		pd.nr_workers++;
		err = worker_open(w, &pd.cfg, pd.port, pd.http_port);
		if (err)
			return err;
	}
	return 0;
}

static int start_pools(void)
{
	for (unsigned int i = 0; i < services_count(); i++) {
		struct svc *s = svc_at(i);

		if (s->dispatch == POPUP_SVC_DISPATCH_INLINE || s->arb)
			continue;
		s->nr_pools = s->dispatch == POPUP_SVC_DISPATCH_POOL_PERCPU ? pd.nr_workers : 1;
		s->pools = calloc(s->nr_pools, sizeof(*s->pools));
		if (!s->pools)
			return -ENOMEM;
		for (unsigned int k = 0; k < s->nr_pools; k++) {
			s->pools[k] = pool_create(s, s->nr_pools > 1 ? pd.workers[k].cpu : -1);
			if (!s->pools[k])
				return -ENOMEM;
		}
	}
	return 0;
}

static void stop_pools(void)
{
	for (unsigned int i = 0; i < services_count(); i++) {
		struct svc *s = svc_at(i);

		for (unsigned int k = 0; k < s->nr_pools; k++)
			pool_destroy(s->pools[k]);
		s->nr_pools = 0;
	}
}

static int write_port_file(const char *path)
{
	char tmp[600];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (!f)
		return -errno;
	fprintf(f, "native=%u http=%u pid=%d", pd.port, pd.http_port, (int)getpid());
	if (arbiter_port())
		fprintf(f, " arbiter=%u", arbiter_port());
	fprintf(f, "\n");
	if (fclose(f) || rename(tmp, path))
		return -errno;
	return 0;
}

/* ---- signals ------------------------------------------------------------ */

static void block_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, set, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static void warn_fixed(const struct popupd_config *n)
{
	const struct popupd_config *o = &pd.cfg;
	bool svcs_same = n->nr_services == o->nr_services;

	for (unsigned int i = 0; svcs_same && i < n->nr_services; i++)
		svcs_same = !strcmp(n->services[i], o->services[i]);
	if (n->port != o->port || n->http_port != o->http_port ||
	    strcmp(n->bind_addr, o->bind_addr) || !CPU_EQUAL(&n->cpus, &o->cpus) ||
	    !svcs_same || n->use_bpf != o->use_bpf || n->local != o->local)
		pr_warn("reload: ports, bind address, CPUs, services, bpf and local "
			"take effect at the next restart");
}

static void reload(int argc, char **argv)
{
	struct popupd_config n;
	int err;

	err = config_build(&n, argc, argv, NULL);
	if (!err && n.cpus_set)
		err = resolve_cpus(&n.cpus);
	else if (!err)
		n.cpus = pd.cfg.cpus;
	for (unsigned int i = 0; !err && i < services_count(); i++) {
		struct popup_svc_pool p;
		enum popup_svc_dispatch d;

		err = svc_resolve_pool(svc_at(i), &n, &p, &d);
	}
	if (err) {
		pr_err("reload failed; the running configuration stays");
		config_free(&n);
		return;
	}
	warn_fixed(&n);
	log_set_level(n.log_level);
	/* Field by field, each an atomic store: workers read them with LIM(). */
	for (size_t off = 0; off < sizeof(pd.lim); off += sizeof(uint32_t))
		__atomic_store_n((uint32_t *)((char *)&pd.lim + off),
				 *(uint32_t *)((char *)&n.lim + off), __ATOMIC_RELAXED);
	for (unsigned int i = 0; i < services_count(); i++) {
		struct svc *s = svc_at(i);
		struct popup_svc_pool p;
		enum popup_svc_dispatch d;

		svc_resolve_pool(s, &n, &p, &d);
		if (d != s->dispatch)
			pr_warn("reload: service %s: a new dispatch model needs a restart",
				s->def->name);
		__atomic_store_n(&s->pool.timeout_ms, p.timeout_ms, __ATOMIC_RELAXED);
		for (unsigned int k = 0; k < s->nr_pools; k++)
			pool_set_limits(s->pools[k], &p);
	}
	config_free(&n);
	pr_info("configuration reloaded");
}

static bool workers_live(void)
{
	for (unsigned int i = 0; i < pd.nr_workers; i++)
		if (pd.workers[i].started && __atomic_load_n(&pd.workers[i].st->live, __ATOMIC_RELAXED))
			return true;
	return false;
}

/* Before a stop: no new datagram may land in a socket about to close;
 * the drain answers what is queued (worker.c). */
static void retire_udp(struct worker *w)
{
	if (!steer || w->udp_kernel || w->udp_fd < 0)
		return;
	/* Logged by the loader; the drain then ends on connections alone. */
	if (!popup_steer__retire_socket(steer, w->udp_fd))
		w->udp_retired = true;
}

/*
 * Restart one worker under the same steering slot: empty the slot (the
 * program counts fallbacks to the other live slots meanwhile), retire the
 * UDP socket, let the thread drain and close its sockets, then new sockets
 * under the same slot. Needs the steering program: without its migrate
 * hook, closing the listener would reset the connections in its accept
 * queue. The outcome goes to the stats file for popupctl.
 */
static int restart_worker(struct worker *w)
{
	int err;

	if (!w->started)
		return -ESRCH;
	if (!steer || w->udp_kernel)
		return -EOPNOTSUPP;
	err = popup_steer__remove_socket(steer, w->tcp_fd);
	if (!err)
		err = popup_steer__retire_socket(steer, w->udp_fd);
	if (err)
		pr_warn("worker %d: restart: retiring its sockets: %s (restarting anyway)",
			w->cpu, strerror(-err));
	worker_retire(w);
	err = worker_reopen(w);
	if (!err)
		err = popup_steer__add_socket(steer, w->tcp_fd, w->idx);
	if (!err)
		err = popup_steer__add_socket(steer, w->udp_fd, w->idx);
	if (err)
		pr_err("worker %d: restart: %s", w->cpu, strerror(-err));
	else
		pr_info("worker %d: restarted in slot %u", w->cpu, w->idx);
	return err;
}

/* SIGUSR1 from sigqueue(): restart the worker of the CPU it carries. */
static void restart_request(const siginfo_t *si)
{
	int cpu = si->si_value.sival_int, err;
	struct worker *w = NULL;

	if (si->si_code != SI_QUEUE) {
		pr_warn("SIGUSR1 without a CPU (use 'popupctl worker restart CPU'); ignored");
		return;
	}
	if (si->si_uid != 0 && si->si_uid != geteuid()) {
		pr_warn("worker restart asked by uid %u (pid %d): not root; ignored",
			(unsigned int)si->si_uid, (int)si->si_pid);
		return;
	}
	for (unsigned int i = 0; i < pd.nr_workers; i++)
		if (pd.workers[i].cpu == cpu)
			w = &pd.workers[i];
	if (!w) {
		pr_warn("worker restart: no worker on CPU %d", cpu);
		return;
	}
	pr_info("restarting worker %d (asked by pid %d)", cpu, (int)si->si_pid);
	err = restart_worker(w);
	/* popupctl waits for the count to move, then reads the result */
	__atomic_store_n(&w->st->restart_err, (int64_t)err, __ATOMIC_RELAXED);
	__atomic_fetch_add(&w->st->restarts, 1, __ATOMIC_RELEASE);
}

/* Wait for SIGTERM/SIGINT, serving SIGHUP and SIGUSR1; then drain. */
static void run(const sigset_t *set, int argc, char **argv)
{
	struct timespec tick = { .tv_nsec = 100 * 1000000 };
	siginfo_t si;
	int sig;

	for (;;) {
		sig = sigwaitinfo(set, &si);
		if (sig == SIGHUP) {
			reload(argc, argv);
			continue;
		}
		if (sig == SIGUSR1) {
			restart_request(&si);
			continue;
		}
		if (sig > 0)
			break;
	}
	pr_info("received %s: draining (at most %u ms; signal again to stop now)",
		strsignal(sig), LIM(stop_timeout_ms));
	/* UDP first: no datagram may land in a socket about to close. */
	for (unsigned int i = 0; i < pd.nr_workers; i++)
		retire_udp(&pd.workers[i]);
	for (unsigned int i = 0; i < pd.nr_workers; i++)
		worker_request_stop(&pd.workers[i], 1);
	while (workers_live()) {
		sig = sigtimedwait(set, NULL, &tick);
		if (sig == SIGTERM || sig == SIGINT) {
			pr_warn("second %s: stopping now", strsignal(sig));
			for (unsigned int i = 0; i < pd.nr_workers; i++)
				worker_request_stop(&pd.workers[i], 2);
		}
	}
}

/* The last resort for a handler that never returns: the stop must end. */
static void *stop_watchdog(void *arg)
{
	unsigned int ms = *(unsigned int *)arg;

	usleep((useconds_t)ms * 1000);
	pr_err("stop did not finish within %u ms (a handler does not return?); exiting", ms);
	_exit(1);
	return NULL;
}

static void check_report(void)
{
	char line[900];
	size_t n = 0;

	for (unsigned int i = 0; i < services_count() && n < sizeof(line); i++)
		n += snprintf(line + n, sizeof(line) - n, " %s(id %u, %s)", svc_at(i)->def->name,
			      svc_at(i)->id, svc_at(i)->arb ? "arbiter" :
			      svc_dispatch_name(svc_at(i)->dispatch));
	printf("popupd: configuration OK; services:%s\n", line);
}

int main(int argc, char **argv)
{
	struct popup_stats_file *sf = NULL;
	bool check = false;
	char stats_path[512];
	unsigned int wd_ms;
	pthread_t wd;
	sigset_t sigs;
	int err;

	log_init("popupd", LOG_LVL_INFO);
	err = config_build(&pd.cfg, argc, argv, &check);
	if (err)
		return err == -ENOENT ? 1 : EXIT_USAGE;
	log_set_level(pd.cfg.log_level);
	pd.lim = pd.cfg.lim;
	pd.started_ns = now_ns();
	err = resolve_cpus(&pd.cfg.cpus);
	if (err) {
		pr_err("no online CPU in the configured CPU set");
		return EXIT_USAGE;
	}
	err = services_load(&pd.cfg);
	if (!err)
		err = services_init();
	if (err || check) {
		if (!err)
			check_report();
		services_fini();
		arbiter_free();
		config_free(&pd.cfg);
		return err ? 1 : 0;
	}
	block_signals(&sigs);

	snprintf(stats_path, sizeof(stats_path), "%s", pd.cfg.stats_path);
	pd.workers = calloc(CPU_COUNT(&pd.cfg.cpus), sizeof(*pd.workers));
	sf = stats_create(stats_path, CPU_COUNT(&pd.cfg.cpus), 0);
	if (!pd.workers || !sf) {
		err = -ENOMEM;
		goto cleanup;
	}
	err = open_workers(sf);
	if (err)
		goto cleanup;
	sf->port = pd.port;
	if (pd.cfg.use_bpf) {
		err = steer_setup(&steer, pd.workers, pd.nr_workers);
		if (err)
			goto cleanup;
	}
	err = start_arrival(sf);
	if (!err)
		err = start_pools();
	if (!err)
		err = arbiter_start(&pd.cfg);
	for (unsigned int i = 0; !err && i < pd.nr_workers; i++)
		err = worker_start(&pd.workers[i]);
	if (err)
		goto cleanup;
	if (pd.cfg.port_file) {
		err = write_port_file(pd.cfg.port_file);
		if (err) {
			pr_err("cannot write %s: %s", pd.cfg.port_file, strerror(-err));
			goto cleanup;
		}
	}
	if (pd.cfg.local) {
		err = local_start();
		if (err)
			goto cleanup;
	}
	err = subserver_start(&pd.cfg);
	if (err)
		goto cleanup;
	if (pd.http_port)
		pr_info("serving %u services on %s: native %u (tcp, udp), http %u; %u workers",
			services_count(), pd.cfg.bind_addr, pd.port, pd.http_port, pd.nr_workers);
	else
		pr_info("serving %u services on %s: native %u (tcp, udp); %u workers",
			services_count(), pd.cfg.bind_addr, pd.port, pd.nr_workers);

	run(&sigs, argc, argv);
	err = 0;

cleanup:
	wd_ms = LIM(stop_timeout_ms) + 10000;
	if (!pthread_create(&wd, NULL, stop_watchdog, &wd_ms))
		pthread_detach(wd);
	arrival_kernel_stop();
	subserver_stop();
	if (pd.cfg.local)
		local_stop();
	for (unsigned int i = 0; i < pd.nr_workers; i++)
		worker_request_stop(&pd.workers[i], 2);
	for (unsigned int i = 0; i < pd.nr_workers; i++)
		worker_join(&pd.workers[i]);
	arbiter_stop();
	stop_pools();
	for (unsigned int i = 0; i < pd.nr_workers; i++)
		worker_close(&pd.workers[i]);
	popup_steer__destroy(steer);
	stats_destroy(sf, stats_path);
	if (pd.cfg.port_file && !err)
		unlink(pd.cfg.port_file);
	services_fini();
	arbiter_free();
	free(pd.workers);
	config_free(&pd.cfg);
	if (err)
		pr_err("exiting after an error");
	else
		pr_info("stopped");
	return err ? 1 : 0;
}
