#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The main job, end to end, on a kernel that can load modules (the host,
# or the guest that scripts/demo.sh boots): insert popup.ko, start popupd
# (one pinned worker and one SO_REUSEPORT TCP+UDP socket per CPU, steered
# by the BPF program), drive echo load from clients pinned to each CPU,
# show the per-CPU counters three ways (bpftool, ps, popupctl), then stop
# everything cleanly. Exits non-zero if any step fails.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${POPUP_BUILD:-$top/build}
bin=$build/bin
port=${POPUP_DEMO_PORT:-7070}
secs=${POPUP_DEMO_SECONDS:-2}
pin=/sys/fs/bpf/popup
pid=
loaded=

step() { printf '\n==> %s\n' "$*"; }

# stop_popupd: SIGTERM, then wait at most 20 s for a clean exit.
stop_popupd()
{
	kill -TERM "$pid" 2>/dev/null || return 0
	for _ in $(seq 200); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid"
		wait "$pid" 2>/dev/null
		pid=
		return 1
	fi
	wait "$pid"
}
die() { echo "demo: $*" >&2; exit 1; }

cleanup()
{
	[ -z "$pid" ] || stop_popupd || true
	if [ -n "$loaded" ] && grep -q '^popup ' /proc/modules; then
		rmmod popup || true
	fi
}
trap cleanup EXIT

step "insmod kmod/popup.ko"
[ -e /proc/modules ] || die "this kernel cannot load modules; run 'make demo', which uses the VM"
if ! grep -q '^popup ' /proc/modules; then
	insmod "$top/kmod/popup.ko"
	loaded=1
fi
for _ in $(seq 100); do [ -c /dev/popup ] && break; sleep 0.02; done
"$bin/popupctl" version

step "start popupd on port $port"
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
"$bin/popupd" --port "$port" &
pid=$!
for _ in $(seq 200); do
	[ -e /run/popup/popupd.stats ] && [ -e $pin/steer_stats ] && break
	kill -0 "$pid" 2>/dev/null || die "popupd exited during start-up"
	sleep 0.05
done
[ -e $pin/steer_stats ] || die "popupd did not pin its maps under $pin"
bpftool prog show pinned $pin/steer_select

step "echo load: one client per CPU, pinned, TCP then UDP, ${secs}s each"
"$bin/popup-bench" tcp --connect 127.0.0.1:$port --cpus all --duration "$secs"
"$bin/popup-bench" udp --connect 127.0.0.1:$port --cpus all --duration "$secs"

step "bpftool map dump pinned $pin/steer_stats (live worker slots)"
ncpu=$(grep -c '^processor' /proc/cpuinfo)
for slot in $(seq 0 $((ncpu - 1))); do
	bpftool map lookup pinned $pin/steer_stats key $slot 0 0 0
done

step "ps -L -o pid,tid,psr,pcpu,comm -p $pid"
ps -L -o pid,tid,psr,pcpu,comm -p "$pid"
# Each worker thread popupd-wN must be running on CPU N.
bad=$(ps -L -o psr=,comm= -p "$pid" | awk '$2 ~ /^popupd-w/ { sub("popupd-w", "", $2); if ($1 != $2) print }')
[ -z "$bad" ] || die "worker threads not on their CPUs: $bad"

step "popupctl stats"
"$bin/popupctl" stats
json=$("$bin/popupctl" stats --json) || die "popupctl stats --json failed (status $?)"
idle=$(grep -o '"requests":0,' <<<"$json" | wc -l || true)
[ "$idle" -eq 0 ] || die "$idle worker(s) served no request"

step "stop popupd (SIGTERM) and unload"
rc=0
stop_popupd || rc=$?
pid=
[ $rc -eq 0 ] || die "popupd did not stop cleanly within 20 s of SIGTERM (status $rc)"
[ ! -e $pin/steer_stats ] || die "popupd left its pins behind"
if [ -n "$loaded" ]; then
	rmmod popup
	loaded=
fi
echo "demo: OK"
