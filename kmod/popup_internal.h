/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Structures and helpers shared between the files of popup.ko.
 *
 * Locking overview: see the comment at the top of main.c, which lists every
 * lock of the module in acquisition order.
 */
#ifndef _POPUP_INTERNAL_H
#define _POPUP_INTERNAL_H

#include <linux/percpu.h>
#include <linux/types.h>

/*
 * enum popup_stat - per-CPU event counters shown in /proc/popup/stats.
 * Counters are per-CPU and lockless (this_cpu_inc); readers sum or print
 * them per CPU and accept a slightly stale view.
 */
enum popup_stat {
	POPUP_STAT_OPENS,
	POPUP_STAT_IOCTLS,
	POPUP_STAT_ERRORS,
	POPUP_NR_STATS,
};

struct popup_cpu_stats {
	u64 count[POPUP_NR_STATS];
};

DECLARE_PER_CPU(struct popup_cpu_stats, popup_cpu_stats);

static inline void popup_stat_inc(enum popup_stat s)
{
	this_cpu_inc(popup_cpu_stats.count[s]);
}

int popup_proc_init(void);
void popup_proc_exit(void);

#endif /* _POPUP_INTERNAL_H */
