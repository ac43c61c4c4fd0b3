/* SPDX-License-Identifier: GPL-2.0 */
/* popup-bench: entry points of the sub-benchmarks (net.c dispatches). */
#ifndef POPUP_BENCH_H
#define POPUP_BENCH_H

int local_main(int argc, char **argv);	/* local.c: popup-bench local ... */
int elastic_main(int argc, char **argv);	/* local.c: popup-bench elastic ... */
int versus_main(int argc, char **argv);	/* versus.c: popup-bench versus ... */

#endif /* POPUP_BENCH_H */
