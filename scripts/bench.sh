#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# `make bench`: measure popupd side by side with its alternatives in one run
# and write a Markdown report to build/bench/out/summary.md.
#
# What this version compares (network, native protocol, echo, loopback):
#   popupd with BPF CPU steering   vs   popupd --no-bpf (the kernel's own
#   SO_REUSEPORT hash), TCP and UDP, clients pinned one per CPU, reporting
#   throughput, latency percentiles, per-CPU share, locality and balance.
# Machine, kernel and whether it runs under emulation head the report: on
# these machines absolute figures are noisy, ratios measured in the same
# run are what to read. QUICK=1 shortens every run.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${POPUP_BUILD:-$top/build}
bin=$build/bin
out=$build/bench/out
mkdir -p "$out"
secs=${POPUP_BENCH_SECONDS:-10}
[ "${QUICK:-0}" = 1 ] && secs=3
port=${POPUP_BENCH_PORT:-7171}
report=$out/summary.md
pid=

cleanup() { [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" || true; }
trap cleanup EXIT

virt=$(systemd-detect-virt 2>/dev/null || true)
[ -n "$virt" ] || virt=$(grep -q hypervisor /proc/cpuinfo && echo "a hypervisor (cpuinfo flag)" || echo none)

start_popupd()
{
	mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
	"$bin/popupd" --port "$port" --stats "$out/popupd.stats" --log-level warn "$@" &
	pid=$!
	for _ in $(seq 100); do [ -e "$out/popupd.stats" ] && break; sleep 0.05; done
}

stop_popupd()
{
	kill -TERM "$pid"; wait "$pid" || true; pid=
}

# run NAME PROTO [popupd args]: one measurement, appended as a table row.
run()
{
	local name=$1 proto=$2
	shift 2
	start_popupd "$@"
	"$bin/popup-bench" "$proto" --connect 127.0.0.1:$port --cpus all \
		--duration "$secs" --json >"$out/$name-$proto.json"
	"$bin/popupctl" stats --stats "$out/popupd.stats" --json >"$out/$name-$proto.stats.json"
	stop_popupd
	python3 - "$name" "$proto" "$out/$name-$proto.json" "$out/$name-$proto.stats.json" >>"$report" <<'PY'
import json, sys
name, proto, b, s = sys.argv[1:5]
b = json.load(open(b)); s = json.load(open(s))
loc = [c["locality"] for c in s["cpus"] if c.get("locality") is not None]
shares = " / ".join("%.1f" % (100 * c["share"]) for c in s["cpus"])
bal = "inf" if s["balance"] is None else "%.3f" % s["balance"]
print("| %s | %s | %.0f | %.1f | %.1f | %.1f | %s | %s | %s | %d |" % (
    name, proto, b["rps"], b["p50_us"], b["p99_us"], b["p999_us"], shares,
    "%.1f %%" % (100 * min(loc)) if loc else "-", bal, b["errors"] + b["timeouts"]))
PY
}

{
	echo "# popup benchmark report"
	echo
	echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) online CPUs"
	echo "- kernel: $(uname -r)"
	echo "- virtualisation: $virt"
	echo "- run length: ${secs}s per row, one closed-loop client pinned per CPU, 64-byte echo"
	echo
	echo "## Native protocol over loopback: BPF CPU steering vs the kernel's reuseport hash"
	echo
	echo "| system | proto | req/s | p50 us | p99 us | p99.9 us | per-CPU share % | min locality | balance max/min | errors |"
	echo "|---|---|---|---|---|---|---|---|---|---|"
} >"$report"

run popupd-bpf tcp
run popupd-bpf udp
run popupd-hash tcp --no-bpf
run popupd-hash udp --no-bpf

cat "$report"
echo
echo "bench: report written to $report"
