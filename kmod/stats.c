// SPDX-License-Identifier: GPL-2.0
/*
 * Per-CPU counters and the /proc/popup directory.
 *
 * Counters live in per-CPU memory so the hot paths never share a cache line;
 * /proc/popup/stats prints one row per possible CPU so that imbalance and
 * locality can be read directly instead of being hidden in a sum.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/cpumask.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>

#include "popup_internal.h"

DEFINE_PER_CPU(struct popup_cpu_stats, popup_cpu_stats);

static const char *const popup_stat_names[POPUP_NR_STATS] = {
	[POPUP_STAT_OPENS] = "opens",
	[POPUP_STAT_IOCTLS] = "ioctls",
	[POPUP_STAT_ERRORS] = "errors",
	[POPUP_STAT_EXPORTS] = "exports",
	[POPUP_STAT_IMPORTS] = "imports",
	[POPUP_STAT_CALLS] = "calls",
	[POPUP_STAT_ONEWAY] = "oneway",
	[POPUP_STAT_HANDOFFS] = "handoffs",
	[POPUP_STAT_QUEUED] = "queued",
	[POPUP_STAT_REPLIES] = "replies",
	[POPUP_STAT_CANCELS] = "cancels",
	[POPUP_STAT_TIMEOUTS] = "timeouts",
	[POPUP_STAT_ABORTS] = "aborts",
	[POPUP_STAT_SPAWNS] = "spawns",
	[POPUP_STAT_RETIRES] = "retires",
	[POPUP_STAT_UNMAPS] = "unmaps",
	[POPUP_STAT_BURST_PROBES] = "burstprobes",
	[POPUP_STAT_BURST_WAITS] = "burstwaits",
};

static struct proc_dir_entry *popup_proc_dir;

static int popup_stats_show(struct seq_file *m, void *v)
{
	int cpu, s;

	seq_puts(m, "cpu");
	for (s = 0; s < POPUP_NR_STATS; s++)
		seq_printf(m, " %s", popup_stat_names[s]);
	seq_putc(m, '\n');

	for_each_possible_cpu(cpu) {
		const struct popup_cpu_stats *st = per_cpu_ptr(&popup_cpu_stats, cpu);

		seq_printf(m, "%d", cpu);
		for (s = 0; s < POPUP_NR_STATS; s++)
			seq_printf(m, " %llu", READ_ONCE(st->count[s]));
		seq_putc(m, '\n');
	}
	return 0;
}

int popup_proc_init(void)
{
	popup_proc_dir = proc_mkdir("popup", NULL);
	if (!popup_proc_dir)
		return -ENOMEM;
	if (!proc_create_single("stats", 0444, popup_proc_dir, popup_stats_show) ||
	    !proc_create_single("services", 0444, popup_proc_dir,
				popup_services_show) ||
	    !proc_create_single("arrival", 0444, popup_proc_dir,
				popup_arrival_show) ||
	    !proc_create_single("sockets", 0444, popup_proc_dir,
				popup_socks_show)) {
		proc_remove(popup_proc_dir);
		popup_proc_dir = NULL;
		return -ENOMEM;
	}
	return 0;
}

void popup_proc_exit(void)
{
	proc_remove(popup_proc_dir);
	popup_proc_dir = NULL;
}
