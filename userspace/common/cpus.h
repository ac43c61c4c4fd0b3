/* SPDX-License-Identifier: GPL-2.0 */
/* CPU list parsing ("0-2,5") and helpers shared by popupd and popup-bench. */
#ifndef POPUP_CPUS_H
#define POPUP_CPUS_H

#include <sched.h>

int cpus_parse(const char *s, cpu_set_t *set);
int cpus_online(cpu_set_t *set);
int cpus_pin_self(int cpu);

#endif /* POPUP_CPUS_H */
