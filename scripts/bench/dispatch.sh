#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Dispatch models side by side: the same workload under each of popupd's
# dispatch models (include/popup/service.h: popup, pool, percpu,
# per-connection, per-object), one Markdown table on stdout and, when OUT
# is set, in $OUT/dispatch.md.
#
# Workloads, both from the "work" service (userspace/services/work.c) and
# driven by popup-bench over TCP (closed loop, replies checked). One
# popup-bench client thread keeps one request outstanding at a time, so
# $PAR popup-bench processes run at once (one client thread per CPU
# each): PAR x CPUs requests in flight. Their latency histograms are
# merged for p50/p99 (popup-bench's log-linear buckets, ~6 %).
#   io   the handler reads 512 bytes through the disk sub-server (a
#        synchronous sub-call; disk adds latency_us=1000, an emulated
#        1 ms device), then echoes the request
#   cpu  the handler burns 200 us of CPU (cpu_us), then echoes
# Every model gets the same bound, threads=$THREADS (percpu: per CPU), and
# the same load.
# Peak threads is the service's max_seen from popupd's statistics
# (handler threads alive at once, warm-up included).
#
# Environment: QUICK=1 (1 s runs), DISPATCH_SECONDS=N (default 5),
# ROUNDS=N (default 1; each row is then the median round by req/s, errors
# summed over the rounds),
# THREADS (default 16), PAR (default 8),
# POPUP_BUILD (build folder), OUT (folder for dispatch.md and raw logs).
# popupd listens on free ports of 127.0.0.1 (--port-file); run it in a
# network namespace of its own if other servers share the machine.
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${POPUP_BUILD:-$top/build}
bin=$build/bin
if [ "${QUICK:-0}" = 1 ]; then secs=${DISPATCH_SECONDS:-1}; warm=0.3
else secs=${DISPATCH_SECONDS:-5}; warm=1; fi
threads=${THREADS:-16}
rounds=${ROUNDS:-1}
par=${PAR:-8}
models="popup pool percpu per-connection per-object"
work=$(mktemp -d)
raw=${OUT:+$OUT/raw}
raw=${raw:-$work}
mkdir -p "$raw"
pid=
mkdir -p "$work/data" && head -c 4096 /dev/urandom >"$work/data/blk"
trap '[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$work" "/sys/fs/bpf/popup-dispatch-$$"' EXIT

for b in popupd popup-bench; do
	[ -x "$bin/$b" ] || { echo "dispatch.sh: $bin/$b missing; run make" >&2; exit 2; }
done
command -v curl >/dev/null || { echo "dispatch.sh: curl missing; run scripts/deps.sh" >&2; exit 2; }

start() # MODEL
{
	rm -f "$work/ports"
	# work's io handler calls disk through popupd's sub-calls, which go
	# through the local export: no --no-local here.
	"$bin/popupd" -s work,disk -p 0 --http-port 0 --bind 127.0.0.1 \
		--port-file "$work/ports" --stats "$work/stats" \
		--pin-dir "/sys/fs/bpf/popup-dispatch-$$" \
		--set "work.dispatch=$1" --set "work.threads=$threads" \
		--set work.min_threads=1 --set work.queue=4096 \
		--set work.io_file=blk --set "disk.root=$work/data" \
		--set disk.latency_us=1000 --set "disk.threads=$((threads * 4))" \
		--set disk.queue=4096 \
		>"$raw/popupd-$1.log" 2>&1 &
	pid=$!
	for _ in $(seq 100); do
		[ -s "$work/ports" ] && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if ! [ -s "$work/ports" ]; then
		echo "dispatch.sh: popupd ($1) did not start: $(tail -n 2 "$raw/popupd-$1.log")" >&2
		return 1
	fi
	np=$(sed 's/.*native=\([0-9]*\).*/\1/' "$work/ports")
	hp=$(sed 's/.*http=\([0-9]*\).*/\1/' "$work/ports")
}

stop()
{
	kill "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	pid=
}

peak() # the work service's max_seen
{
	curl -s -X POST "http://127.0.0.1:$hp/popupd/stats" |
		sed -n 's/^svc name=work .* max_seen=\([0-9]*\).*/\1/p'
}

run_one() # WORKLOAD MODEL ROUND: one line "wl model rps p50 p99 peak errors"
{
	local wl=$1 m=$2 r=$3 method=7 bpids='' p
	[ "$wl" = cpu ] && method=8
	start "$m" || { echo "$wl $m - - - - start"; return; }
	for i in $(seq "$par"); do
		"$bin/popup-bench" tcp --connect "127.0.0.1:$np" --cpus all --conns 1 \
			--duration "$secs" --warmup "$warm" --service 5 --method $method \
			--size 64 --json --hist "$raw/$wl-$m.$r.$i.hist" \
			>"$raw/$wl-$m.$r.$i.json" 2>"$raw/$wl-$m.$r.$i.err" &
		bpids+=" $!"
	done
	# shellcheck disable=SC2086
	wait $bpids
	p=$(peak)
	stop
	python3 - "$raw/$wl-$m.$r" "$par" "$wl" "$m" "${p:--}" <<'EOF'
import json, sys
base, par, wl, m, peak = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
rps = errs = 0
hist = {}
try:
    for i in range(1, par + 1):
        r = json.load(open(f"{base}.{i}.json"))
        rps += r["rps"]
        errs += r["errors"] + r["timeouts"]
        for line in open(f"{base}.{i}.hist"):
            if not line.startswith("#"):
                us, n, _ = line.split()
                hist[float(us)] = hist.get(float(us), 0) + int(n)
    total = sum(hist.values())
    def pct(q):
        seen = 0
        for us in sorted(hist):
            seen += hist[us]
            if seen >= q * total:
                return us
    print(wl, m, f"{rps:.0f}", pct(0.5), pct(0.99), peak, errs)
except Exception as e:
    print(wl, m, "- - -", peak, "no-result")
EOF
}

# Rounds interleave the models, so a burst of load from elsewhere on the
# machine hits one round of every model rather than every round of one.
: >"$work/rows"
for r in $(seq "$rounds"); do
	for wl in io cpu; do
		for m in $models; do
			run_one "$wl" "$m" "$r" >>"$work/rows"
		done
	done
done
cp "$work/rows" "$raw/rows.txt"
table=$(python3 - "$work/rows" "$models" <<'EOF'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
print("| workload | model | req/s | p50 us | p99 us | peak threads | errors |")
print("|---|---|---|---|---|---|---|")
for wl in ("io", "cpu"):
    for m in sys.argv[2].split():
        runs = [r for r in rows if r[0] == wl and r[1] == m]
        ok = sorted((r for r in runs if r[2] != "-"), key=lambda r: float(r[2]))
        if not ok:
            print(f"| {wl} | {m} | - | - | - | - | {runs[0][6] if runs else 'not run'} |")
            continue
        r = ok[(len(ok) - 1) // 2]    # the median round by req/s
        print(f"| {wl} | {m} | {float(r[2]):,.0f} | {float(r[3]):,.1f} | {float(r[4]):,.1f} "
              f"| {r[5]} | {sum(int(x[6]) for x in ok if x[6].isdigit())} |")
EOF
)

ncpu=$(nproc)
text="### Dispatch models (scripts/bench/dispatch.sh)

$(date -u '+%Y-%m-%d %H:%M UTC'), $ncpu CPUs ($(uname -r)); $par popup-bench processes x one client per CPU ($((par * ncpu)) requests in flight), ${secs} s after ${warm} s warm-up, median of $rounds round(s), 64-byte requests; the work service with threads=$threads (percpu: per CPU), queue 4096. io: a 512-byte read through the disk sub-server (1 ms emulated latency) then echo; cpu: 200 us of CPU then echo. Client and server share the CPUs.

$table"
echo "$text"
[ -n "${OUT:-}" ] && echo "$text" >"$OUT/dispatch.md"
exit 0
