#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The whole guest part of scripts/bench.sh, in one boot of the QEMU guest:
# vm-local.sh (local calls, elasticity), then vm-arrival.sh (kernel arrival
# vs popupd's epoll path vs the recvmmsg floor, with system call counts).
#
# Usage: vm-all.sh BINDIR ITERS ARRIVAL_SECS ARRIVAL_CONNS ARRIVAL_ROUNDS
#                  ELASTIC_ARGS...
set -u
here=$(cd "$(dirname "$0")" && pwd)
bin=$1 iters=$2 asecs=$3 aconns=$4 arounds=$5
shift 5
"$here/vm-local.sh" "$bin" "$iters" "$@"
"$here/vm-arrival.sh" "$bin" "$asecs" "$aconns" 0,1 "$arounds"
rmmod popup 2>/dev/null
exit 0
