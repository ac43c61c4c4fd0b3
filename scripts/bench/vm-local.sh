#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Runs inside the QEMU guest (scripts/vm): loads popup.ko and runs the
# local-call and elasticity benchmarks for the kernel backend and the same
# baselines, so every figure of this set comes from the same (emulated)
# machine. The guest cannot write to the host, so results go to stdout as
#   @@BENCH json NAME {...}      one popup-bench --json line
#   @@BENCH hist NAME LINE       one line of a latency CDF file
# and scripts/bench.sh picks them out of the console log.
#
# Usage: vm-local.sh BINDIR ITERS ELASTIC_ARGS...
set -u
bin=$1 iters=$2
shift 2
top=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)

emit()	# NAME CMD...: run one benchmark, emit its JSON and CDF
{
	local name=$1 line
	shift
	if line=$("$@" --json --hist "$tmp/$name.cdf" 2>"$tmp/$name.err"); then
		echo "@@BENCH json $name $line"
	else
		echo "@@BENCH json $name {\"failed\":\"$(tr -d '"\n' <"$tmp/$name.err" | head -c 200)\"}"
	fi
	[ -s "$tmp/$name.cdf" ] && sed "s/^/@@BENCH hist $name /" "$tmp/$name.cdf"
	return 0
}

if insmod "$top/kmod/popup.ko"; then
	echo "@@BENCH note module loaded"
else
	echo "@@BENCH note insmod failed"
fi
echo "@@BENCH note cpu $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) CPUs, kernel $(uname -r)"
for pin in 0,0 0,1; do
	tag=same; [ "$pin" = 0,1 ] && tag=cross
	emit "vm-popup-kernel-$tag" "$bin/popup-bench" local --mode popup --backend kernel --cpus $pin --iters "$iters" --warmup 200
	emit "vm-popup-user-$tag" "$bin/popup-bench" local --mode popup --backend user --cpus $pin --iters "$iters" --warmup 200
	for m in unix pipe futex; do
		emit "vm-$m-$tag" "$bin/popup-bench" local --mode $m --cpus $pin --iters "$iters" --warmup 200
	done
done
for be in kernel user; do
	if line=$("$bin/popup-bench" elastic --backend $be "$@" --json 2>"$tmp/el.err"); then
		echo "@@BENCH json vm-elastic-$be $line"
	else
		echo "@@BENCH json vm-elastic-$be {\"failed\":\"$(tr -d '"\n' <"$tmp/el.err" | head -c 200)\"}"
	fi
done
rmmod popup 2>/dev/null
exit 0
