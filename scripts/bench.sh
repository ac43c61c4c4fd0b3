#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# `make bench`: measure popup side by side with what a user would pick
# instead, in one run on one machine, and write build/bench/out/summary.md
# (tables, ratios to popupd) plus PNG plots made with gnuplot.
#
#   1. HTTP, tiny keep-alive POST driven by wrk: popupd's HTTP port vs nginx
#      (reuseport, one worker per CPU, `return 200`) vs popup-epoll-server
#      (one shared listener, one epoll loop per thread)
#   2. native protocol, TCP and UDP, driven by popup-bench: popupd vs
#      popup-epoll-server; UDP also vs popup-udp-floor (recvmmsg/sendmmsg);
#      closed loop, then open loop at a fixed rate below saturation (a
#      quarter of the slower system's closed-loop rate in this run, or
#      $BENCH_RATE)
#   3. balance and locality: per-CPU share, max/min, locality for popupd's
#      BPF cpu steering, popupd --no-bpf (kernel reuseport hash) and the
#      shared listener, clients pinned one per CPU; the full run adds one
#      $BENCH_BAL_SECONDS (30) s uniform run of each
#   4. local null calls: libpopup (user backend) vs Unix socket vs pipe vs
#      futex here; the same plus popup.ko (kernel backend) in the QEMU guest
#      (scripts/vm), same-CPU and cross-CPU
#   5. pop-up elasticity: burst of blocking calls, back to the minimum after
#      the idle timeout, spawns per second in steady state
#
# Every server gets the same CPUs ($BENCH_CPUS, default: all online); the
# load generators run on the same machine (there is no second one), on the
# same CPUs. Absolute figures are noisy here; read the ratios. The full
# run repeats every comparison of sections 1 and 2 $BENCH_REPEAT (3)
# times, the systems interleaved (A B C A B C ...), and reports the median
# with the min-max spread; QUICK=1 runs each once.
#
# Other reports: scripts called from here may write Markdown sections to
# $OUT/arrival.md, $OUT/dispatch.md and $OUT/subcall.md; report.py
# includes those that exist, in that order. They are removed at the start
# so that a report never carries an earlier run's section.
#
# Environment: QUICK=1 (short runs), BENCH_CPUS=LIST, BENCH_SECONDS=N,
# BENCH_REPEAT=N, BENCH_RATE=REQ_PER_S, BENCH_BAL_SECONDS=N,
# BENCH_NO_VM=1 (skip the guest), POPUP_BUILD (build folder).
# Ports: 7300-7399 on 127.0.0.1.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${POPUP_BUILD:-$top/build}
bin=$build/bin
out=$build/bench/out
raw=$out/raw
helpers=$top/scripts/bench
t_begin=$(date +%s)

quick=${QUICK:-0}
if [ "$quick" = 1 ]; then
	secs=${BENCH_SECONDS:-2}; warm=0.5; iters=20000; vm_iters=300; arr_secs=2
	elastic="--burst 8 --hold-ms 200 --idle-timeout-ms 300 --steady 1"
	reps=${BENCH_REPEAT:-1}; bal_secs=0
else
	secs=${BENCH_SECONDS:-10}; warm=2; iters=200000; vm_iters=2000; arr_secs=5
	elastic="--burst 32 --hold-ms 500 --idle-timeout-ms 1000 --steady 5"
	reps=${BENCH_REPEAT:-3}; bal_secs=${BENCH_BAL_SECONDS:-30}
fi
ncpu=$(nproc)
cpus=${BENCH_CPUS:-0-$((ncpu - 1))}
nbench=$(python3 -c "
import sys
n=0
for r in '$cpus'.split(','):
    a,_,b=r.partition('-'); n+=int(b or a)-int(a)+1
print(n)")
conns=8			# popup-bench connections (flows) per pinned client
wrk_conns=$((nbench * 16))
body=64

P_POPUPD=7310 P_POPUPD_HTTP=7311 P_EPOLL=7320 P_EPOLL_HTTP=7321
P_FLOOR=7330 P_NGINX=7340

rm -rf "$raw"
rm -f "$out"/*.json "$out"/*.png "$out"/*.gp "$out"/*.dat "$out"/summary.md \
	"$out"/arrival.md "$out"/dispatch.md "$out"/subcall.md
mkdir -p "$raw" "$out"
pids=()
cleanup()
{
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
	pids=()
	rm -rf "/sys/fs/bpf/popup-bench-$$" 2>/dev/null
}
trap cleanup EXIT

log() { echo "bench: $*" >&2; }

# wait_port PORT [udp]: until something listens there (5 s)
wait_port()
{
	local flag=-ltn
	[ "${2:-}" = udp ] && flag=-lun
	for _ in $(seq 100); do
		ss -H $flag "sport = :$1" 2>/dev/null | grep -q . && return 0
		sleep 0.05
	done
	return 1
}

# fail NAME REASON: mark a row as not measured (the report says so)
fail() { echo "$2" >"$raw/$1.fail"; log "$1: $2"; }

# stop_server: TERM the last started server and wait for it
stop_server()
{
	local p=${pids[-1]}
	kill -TERM "$p" 2>/dev/null
	wait "$p" 2>/dev/null
	unset 'pids[-1]'
}

# ---- servers ---------------------------------------------------------------

start_popupd()	# NAME [popupd args]
{
	local name=$1
	shift
	mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf 2>/dev/null
	rm -f "$raw/$name.stats" "$raw/$name.port"
	"$bin/popupd" --port $P_POPUPD --http-port $P_POPUPD_HTTP --cpus "$cpus" \
		--stats "$raw/$name.stats" --pin-dir "/sys/fs/bpf/popup-bench-$$" \
		--port-file "$raw/$name.port" --log-level warn "$@" >"$raw/$name.log" 2>&1 &
	pids+=($!)
	# The port file comes once every worker runs under the steering
	# program; the ports listen earlier, and a client connecting in
	# between would keep a connection the kernel's hash placed.
	for _ in $(seq 200); do [ -e "$raw/$name.port" ] && break; sleep 0.05; done
	if [ ! -e "$raw/$name.port" ] || ! wait_port $P_POPUPD || ! wait_port $P_POPUPD_HTTP; then
		fail "$name" "popupd did not start: $(tail -n 3 "$raw/$name.log" | tr '\n' ' ')"
		stop_server
		return 1
	fi
}

start_epoll()	# NAME
{
	"$bin/popup-epoll-server" --port $P_EPOLL --http-port $P_EPOLL_HTTP --cpus "$cpus" \
		--stats-out "$raw/$1.stats.json" >"$raw/$1.log" 2>&1 &
	pids+=($!)
	wait_port $P_EPOLL || { fail "$1" "popup-epoll-server did not start: $(tail -n 3 "$raw/$1.log")"; stop_server; return 1; }
}

start_floor()	# NAME
{
	"$bin/popup-udp-floor" --port $P_FLOOR --cpus "$cpus" \
		--stats-out "$raw/$1.stats.json" >"$raw/$1.log" 2>&1 &
	pids+=($!)
	wait_port $P_FLOOR udp || { fail "$1" "popup-udp-floor did not start: $(tail -n 3 "$raw/$1.log")"; stop_server; return 1; }
}

start_nginx()	# NAME
{
	local prefix=$raw/nginx aff="" c
	command -v nginx >/dev/null || { fail "$1" "nginx is not installed (scripts/deps.sh)"; return 1; }
	mkdir -p "$prefix"
	# worker_cpu_affinity: one bitmask per worker, one worker per bench CPU
	for c in $(python3 -c "
r=[]
for p in '$cpus'.split(','):
    a,_,b=p.partition('-'); r+=range(int(a),int(b or a)+1)
print(' '.join(map(str,r)))"); do
		aff+=" $(python3 -c "print(bin(1<<$c)[2:])")"
	done
	sed -e "s|@WORKERS@|$nbench|" -e "s|@AFFINITY@|${aff# }|" -e "s|@PREFIX@|$prefix|g" \
	    -e "s|@PORT@|$P_NGINX|" -e "s|@BODY@|$(printf 'x%.0s' $(seq $body))|" \
	    "$helpers/nginx.conf.in" >"$prefix/nginx.conf"
	nginx -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/error.log" >"$raw/$1.log" 2>&1 &
	pids+=($!)
	wait_port $P_NGINX || { fail "$1" "nginx did not start: $(tail -n 3 "$prefix/error.log" "$raw/$1.log" | tr '\n' ' ')"; stop_server; return 1; }
}

# ---- load ------------------------------------------------------------------

# wrk_run NAME URL: HTTP load, results in NAME.wrk (percentiles + summary)
wrk_run()
{
	WRK_OUT=$raw/$1.wrk WRK_BODY=$body wrk -t "$nbench" -c "$wrk_conns" -d "${secs}s" \
		--latency -s "$helpers/wrk-post.lua" "$2" >"$raw/$1.wrk.txt" 2>&1 ||
		fail "$1" "wrk failed: $(tail -n 2 "$raw/$1.wrk.txt" | tr '\n' ' ')"
	# a run that got only errors is no measurement
	if grep -q 'Non-2xx' "$raw/$1.wrk.txt"; then
		fail "$1" "$(grep 'Non-2xx' "$raw/$1.wrk.txt" | sed 's/^ *//')"
	fi
}

# pb_run NAME PROTO PORT [popup-bench args]: one client pinned per CPU
pb_run()
{
	local name=$1 proto=$2 port=$3
	shift 3
	"$bin/popup-bench" "$proto" --connect 127.0.0.1:"$port" --cpus "$cpus" --conns $conns \
		--duration "$secs" --warmup "$warm" --size $body --json \
		--hist "$raw/$name.hist" "$@" >"$raw/$name.json" 2>"$raw/$name.err" ||
		echo "popup-bench exit $?: $(head -c 300 "$raw/$name.err" | tr '\n' ' ')" >"$raw/$name.warn"
}

popupd_stats()	# NAME: popupctl's view of the run
{
	"$bin/popupctl" stats --stats "$raw/$1.stats" --pin-dir "/sys/fs/bpf/popup-bench-$$" \
		--json >"$raw/$1.stats.json" 2>>"$raw/$1.err" ||
		rm -f "$raw/$1.stats.json"
}

# Each comparison runs $reps times; run r of system NAME is NAME.rR.
for r in $(seq "$reps"); do
# ---- 1. HTTP ---------------------------------------------------------------
log "HTTP: popupd, nginx, epoll server (${secs}s each; run $r of $reps)"
if start_popupd http-popupd.r$r; then
	wrk_run http-popupd.r$r "http://127.0.0.1:$P_POPUPD_HTTP/echo/echo"
	popupd_stats http-popupd.r$r
	stop_server
fi
if start_nginx http-nginx.r$r; then
	wrk_run http-nginx.r$r "http://127.0.0.1:$P_NGINX/echo/echo"
	stop_server
fi
if start_epoll http-epoll.r$r; then
	wrk_run http-epoll.r$r "http://127.0.0.1:$P_EPOLL_HTTP/echo/echo"
	stop_server
fi

# ---- 2 + 3. native protocol, balance and locality -------------------------
log "native protocol: TCP and UDP, closed loop (${secs}s each; run $r of $reps)"
for proto in tcp udp; do
	if start_popupd "$proto-popupd-bpf.r$r"; then
		pb_run "$proto-popupd-bpf.r$r" $proto $P_POPUPD
		popupd_stats "$proto-popupd-bpf.r$r"
		stop_server
	fi
	if start_popupd "$proto-popupd-hash.r$r" --no-bpf; then
		pb_run "$proto-popupd-hash.r$r" $proto $P_POPUPD
		popupd_stats "$proto-popupd-hash.r$r"
		stop_server
	fi
	if start_epoll "$proto-epoll.r$r"; then
		pb_run "$proto-epoll.r$r" $proto $P_EPOLL
		stop_server
	fi
done
if start_floor udp-floor.r$r; then
	pb_run udp-floor.r$r udp $P_FLOOR
	stop_server
fi
done

# ---- 2b. open loop at a fixed rate ------------------------------------------
# A quarter of the slower of popupd and the epoll server (median closed-loop
# rate), so both run below saturation and the latencies compare service, not
# queues: an open-loop client costs more per request than a closed-loop one
# (a poll per send slot), and at half the rate the generator itself fell
# behind here (seconds of lateness, for every system alike).
open_rate()	# PROTO
{
	[ -n "${BENCH_RATE:-}" ] && { echo "$BENCH_RATE"; return; }
	python3 - "$raw" "$1" <<'PY'
import glob, json, os, statistics, sys
raw, proto = sys.argv[1], sys.argv[2]
med = []
for sysname in ("popupd-bpf", "epoll"):
    v = []
    for p in glob.glob(os.path.join(raw, "%s-%s.r*.json" % (proto, sysname))):
        try:
            v.append(json.loads(open(p).read().strip().splitlines()[-1])["rps"])
        except (ValueError, KeyError, IndexError):
            pass
    if v:
        med.append(statistics.median(v))
print(int(min(med) / 4) if med and min(med) > 0 else 0)
PY
}
for proto in tcp udp; do
	rate=$(open_rate $proto)
	if [ "${rate:-0}" -le 0 ]; then
		fail "$proto-open" "no closed-loop rate measured to derive the open-loop rate from"
		continue
	fi
	echo "$rate" >"$raw/$proto-open.rate"
	for r in $(seq "$reps"); do
		log "native protocol: $proto open loop at $rate req/s (${secs}s each; run $r of $reps)"
		if start_popupd "$proto-open-popupd.r$r"; then
			pb_run "$proto-open-popupd.r$r" $proto $P_POPUPD --rate "$rate"
			stop_server
		fi
		if start_epoll "$proto-open-epoll.r$r"; then
			pb_run "$proto-open-epoll.r$r" $proto $P_EPOLL --rate "$rate"
			stop_server
		fi
	done
done

# ---- 3b. balance and locality over a long uniform run (full run only) -------
if [ "$bal_secs" -gt 0 ]; then
	for proto in tcp udp; do
		log "balance: $proto, ${bal_secs}s uniform load per system"
		if start_popupd "bal-$proto-popupd-bpf"; then
			pb_run "bal-$proto-popupd-bpf" $proto $P_POPUPD --duration "$bal_secs"
			popupd_stats "bal-$proto-popupd-bpf"
			stop_server
		fi
		if start_popupd "bal-$proto-popupd-hash" --no-bpf; then
			pb_run "bal-$proto-popupd-hash" $proto $P_POPUPD --duration "$bal_secs"
			popupd_stats "bal-$proto-popupd-hash"
			stop_server
		fi
		if start_epoll "bal-$proto-epoll"; then
			pb_run "bal-$proto-epoll" $proto $P_EPOLL --duration "$bal_secs"
			stop_server
		fi
	done
fi

# ---- 4 + 5. local calls and elasticity, here -------------------------------
log "local null calls here ($iters calls each)"
first=${cpus%%[-,]*}
second=$(python3 -c "
r=[]
for p in '$cpus'.split(','):
    a,_,b=p.partition('-'); r+=range(int(a),int(b or a)+1)
print(r[1] if len(r)>1 else r[0])")
for tag in same cross; do
	pin=$first,$first
	[ $tag = cross ] && pin=$first,$second
	for m in popup-user unix pipe futex; do
		args=(--mode ${m%-user})
		[ $m = popup-user ] && args+=(--backend user)
		"$bin/popup-bench" local "${args[@]}" --cpus $pin --iters $iters --json \
			--hist "$raw/host-$m-$tag.cdf" >"$raw/host-$m-$tag.json" 2>"$raw/host-$m-$tag.err" ||
			fail "host-$m-$tag" "popup-bench local failed: $(head -c 200 "$raw/host-$m-$tag.err")"
	done
done
log "pop-up elasticity here (user backend)"
"$bin/popup-bench" elastic --backend user $elastic --json >"$raw/host-elastic-user.json" \
	2>"$raw/host-elastic-user.err" || fail host-elastic-user "$(head -c 200 "$raw/host-elastic-user.err")"
if [ -e /dev/popup ]; then
	"$bin/popup-bench" elastic --backend kernel $elastic --json >"$raw/host-elastic-kernel.json" \
		2>"$raw/host-elastic-kernel.err" || fail host-elastic-kernel "$(head -c 200 "$raw/host-elastic-kernel.err")"
fi

# ---- 4 + 5 in the guest: popup.ko ------------------------------------------
if [ "${BENCH_NO_VM:-0}" = 1 ]; then
	echo "skipped (BENCH_NO_VM=1)" >"$raw/vm.fail"
elif [ ! -e "$top/kmod/popup.ko" ]; then
	echo "kmod/popup.ko is not built" >"$raw/vm.fail"
else
	log "local calls and elasticity in the QEMU guest ($vm_iters calls each; slow under TCG)"
	(cd "$top" && POPUP_BUILD=$build scripts/vm --smp 2 --no-debug --timeout 900 -- \
		scripts/bench/vm-all.sh "$bin" "$vm_iters" "$arr_secs" 1 3 $elastic) >"$raw/vm.log" 2>&1
	rc=$?
	python3 - "$raw" <<'PY'
import os, sys, re
raw = sys.argv[1]
hists = {}
with open(os.path.join(raw, "vm.log"), errors="replace") as f:
    for line in f:
        line = line.rstrip("\r\n")
        i = line.find("@@BENCH ")
        if i < 0:
            continue
        kind, _, rest = line[i + 8:].partition(" ")
        if kind == "json":
            name, _, js = rest.partition(" ")
            open(os.path.join(raw, name + ".json"), "w").write(js + "\n")
        elif kind == "hist":
            name, _, h = rest.partition(" ")
            hists.setdefault(name, []).append(h)
        elif kind == "note":
            open(os.path.join(raw, "vm.notes"), "a").write(rest + "\n")
for name, lines in hists.items():
    open(os.path.join(raw, name + ".cdf"), "w").write("\n".join(lines) + "\n")
PY
	[ -e "$raw/vm.notes" ] || echo "the guest reported nothing (scripts/vm exit $rc; see raw/vm.log)" >"$raw/vm.fail"
	grep -q 'accel\|kvm' "$raw/vm.log" 2>/dev/null || true
fi

# ---- report ----------------------------------------------------------------
virt=$(systemd-detect-virt 2>/dev/null || true)
[ -n "$virt" ] || virt=$(grep -q ' hypervisor' /proc/cpuinfo && echo "yes (hypervisor flag in cpuinfo)" || echo none)
vm_accel=$(sed -n 's/.*accel[= ]\([a-z]*\).*/\1/p' "$raw/vm.log" 2>/dev/null | head -n1)
cat >"$raw/machine.json" <<EOF
{"date":"$(date -u '+%Y-%m-%d %H:%M UTC')",
 "cpu":"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')",
 "ncpu":$ncpu, "cpus":"$cpus", "nbench":$nbench,
 "kernel":"$(uname -r)", "virt":"$virt",
 "mitigations":"$(cat /sys/devices/system/cpu/vulnerabilities/meltdown 2>/dev/null)",
 "quick":$quick, "secs":$secs, "reps":$reps, "bal_secs":$bal_secs, "warmup":$warm, "iters":$iters, "vm_iters":$vm_iters,
 "conns":$conns, "wrk_conns":$wrk_conns, "body":$body,
 "wrk":"$(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}')", "nginx":"$(nginx -v 2>&1 | cut -d/ -f2)",
 "elastic":"$elastic", "elapsed":$(( $(date +%s) - t_begin ))}
EOF
# Kernel-side arrival (scripts/bench/vm-arrival.sh, in the guest): its table
# goes to $out/arrival.md, which report.py includes.
python3 - "$raw" "$out/arrival.md" <<'PY'
import json, os, sys
raw, md = sys.argv[1:3]
rows = []
def num(r, k, f):
    v = r.get(k)
    return f % v if isinstance(v, (int, float)) else "n/a"
for path, proto, label in (("kernel", "udp", "popupd --arrival=kernel (popup.ko contexts)"),
                           ("user", "udp", "popupd --arrival=user (epoll workers)"),
                           ("floor", "udp", "popup-udp-floor (recvmmsg/sendmmsg)"),
                           ("kernel", "tcp", "popupd --arrival=kernel (popup.ko contexts)"),
                           ("user", "tcp", "popupd --arrival=user (epoll workers)")):
    f = os.path.join(raw, "vm-arrival-%s-%s.json" % (path, proto))
    if not os.path.exists(f):
        continue
    r = json.load(open(f))
    if "failed" in r:
        rows.append("| %s | %s | not measured: %s | | | | | | |" % (proto, label, r["failed"][:80]))
        continue
    runs = "/".join("%.0f" % x for x in r.get("rps_runs", []))
    rows.append("| %s | %s | %.0f | %s | %.1f | %.1f | %s | %s | %s |" % (proto, label, r["rps"], runs or "n/a",
                r["p50_us"], r["p99_us"], num(r, "syscalls_per_request", "%.2f"),
                num(r, "cpu_us_per_request", "%.1f"), num(r, "ctxsw_per_request", "%.2f")))
versus = []
for proto in ("udp", "tcp"):
    for c, suffix, label in ((1, "", "1"), (8, "", "8"), (8, "-nobatch", "8, burst wake-ups off")):
        f = os.path.join(raw, "vm-arrival-versus-%s-%d%s.json" % (proto, c, suffix))
        if not os.path.exists(f):
            continue
        r = json.load(open(f))
        if "failed" in r or not r.get("pairs"):
            versus.append("| %s | %s | not measured: %s | | | |" % (proto, label, r.get("failed", "no pair")[:80]))
            continue
        q = r["ratio_a_over_b"]
        versus.append("| %s | %s | %d | **%.3fx** (%.3f-%.3f) | %.0f / %.0f | %.0f / %.0f |" % (
            proto, label, r["pairs"], q["median"], q["q1"], q["q3"], r["a"]["rps"], r["b"]["rps"],
            r["a"]["p50_us"], r["b"]["p50_us"]))
cost = []
f = os.path.join(raw, "vm-arrival-cost.json")
if os.path.exists(f):
    c = json.load(open(f))
    for key, label, recv in (("sockets", "sockets: sendto, recvfrom, sendto, recvfrom", True),
                             ("popup.ko", "popup.ko: sendto, REPLY_WAIT, recvfrom", False)):
        r = c.get(key) or {"failed": c.get("failed", "not run")}
        if "failed" in r:
            cost.append("| %s | not measured: %s | | | | |" % (label, r["failed"][:80]))
            continue
        cost.append("| %s | %.2f | %s | %.2f | %.2f | %.2f |" % (label, r["client_send_us"],
                    "%.2f" % r["server_recv_us"] if recv else "(in the next column)",
                    r["server_reply_us"], r["client_recv_us"], r["total_us"]))
if rows:
    with open(md, "w") as f:
        f.write("Same guest, same CPUs, same closed-loop popup-bench load for every row: "
                "one client thread per CPU with one request in flight (ping-pong). "
                "The guest runs under QEMU TCG emulation, booted as Debian ships its "
                "kernel (`scripts/vm --no-debug`: no allocator debugging): absolute "
                "figures are far below native ones. System calls per request: the "
                "server's calls counted with `strace -c -f -p` over a second (traced, "
                "slower) run, divided by the requests served in it. CPU and context "
                "switches per request: the whole guest's (clients included) over the "
                "untraced run, from /proc/stat. Each path ran three times, the paths "
                "interleaved; the row is the run with the median req/s, and every "
                "run's req/s is listed. Under `strace` a handler stopped at each system "
                "call looks blocked to popup.ko, which then starts pool threads: their "
                "clone3, mmap and exit calls are in the kernel path's count.\n\n"
                "| proto | server | req/s | runs | p50 us | p99 us | syscalls/request | CPU us/request | switches/request |\n"
                "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
        if versus:
            f.write("\nSame moments: both popupd paths up at once on two ports, "
                    "`popup-bench versus` alternating bursts of requests between "
                    "them (all client threads on the same path at a time, a barrier "
                    "between bursts), with one request in flight per client thread "
                    "(ping-pong) or eight (one per connection), 64 exchanges per "
                    "connection per burst (at eight in flight, 512 requests per "
                    "thread: mostly steady state). A pair is a kernel "
                    "burst and the epoll burst after it; the ratio is their req/s, "
                    "kernel over epoll (above 1: the kernel path is faster), so a "
                    "drift of the host that runs the emulator cancels within the "
                    "pair. Median over the pairs, with the quartiles. The \"burst "
                    "wake-ups off\" rows ran with popup.ko's batch_wakeups "
                    "parameter at 0: handler threads always sleep as they are, "
                    "and each hand-off preempts the client (README, Performance).\n\n"
                    "| proto | in flight per CPU | pairs | kernel/epoll | req/s kernel / epoll | p50 us kernel / epoll |\n"
                    "|---|---|---|---|---|---|\n" + "\n".join(versus) + "\n")
        if cost:
            f.write("\nOne UDP request's CPU cost by phase, with no scheduling: "
                    "`popup-udp-cost`, one pinned thread playing client and server "
                    "over loopback (each phase timed around its system call, in us). "
                    "The server columns compare popup.ko's bookkeeping with the "
                    "recvfrom it replaces.\n\n"
                    "| path | client send | server receive | server reply | client receive | total |\n"
                    "|---|---|---|---|---|---|\n" + "\n".join(cost) + "\n")
PY
# Dispatch models and sub-calls (host, userspace backend): their own scripts.
log "dispatch models (scripts/bench/dispatch.sh)"
OUT=$raw/dispatch QUICK=$quick POPUP_BUILD=$build "$helpers/dispatch.sh" >"$raw/dispatch.log" 2>&1 &&
	cp "$raw/dispatch/dispatch.md" "$out/dispatch.md" || fail dispatch "scripts/bench/dispatch.sh failed (raw/dispatch.log)"
log "sub-calls through the disk sub-server (scripts/bench/subcall.sh)"
OUT=$raw/subcall QUICK=$quick POPUP_BUILD=$build "$helpers/subcall.sh" >"$raw/subcall.log" 2>&1 &&
	cp "$raw/subcall/subcall.md" "$out/subcall.md" || fail subcall "scripts/bench/subcall.sh failed (raw/subcall.log)"
python3 "$helpers/report.py" "$raw" "$out" || { log "report generation failed"; exit 1; }
if command -v gnuplot >/dev/null; then
	for g in "$out"/*.gp; do
		[ -e "$g" ] && (cd "$out" && gnuplot "$g" 2>>"$raw/gnuplot.err")
	done
fi
cat "$out/summary.md"
echo
log "report written to $out/summary.md (raw results in $raw) in $(( $(date +%s) - t_begin )) s"
