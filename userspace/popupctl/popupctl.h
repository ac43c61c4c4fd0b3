/* SPDX-License-Identifier: GPL-2.0 */
/* popupctl's subcommands, shared between its files. */
#ifndef POPUPCTL_H
#define POPUPCTL_H

#include <stdbool.h>

#define EXIT_USAGE 2

int cmd_services(int argc, char **argv);
int cmd_call(int argc, char **argv);
int stats_services(const char *connect, bool json, bool quiet);

#endif /* POPUPCTL_H */
