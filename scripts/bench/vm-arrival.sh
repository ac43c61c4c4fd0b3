#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Runs inside the QEMU guest (scripts/vm, TCG emulation): compares, on the
# same CPUs and under the same closed-loop load (popup-bench, CONNS
# requests in flight per client thread, one thread per CPU), popupd with
# --arrival=kernel (requests become popup.ko pop-up contexts), popupd with
# --arrival=user (its epoll workers) and popup-udp-floor (recvmmsg and
# sendmmsg, no dispatch): requests per second, p50 and p99 latency, and
# system calls per request. UDP for all three; native TCP for popupd's two
# paths.
#
# Each path runs ROUNDS times untraced for throughput and latency (the
# paths interleaved; the run with the median req/s is reported, with every
# round's figure), and once more in the first round under
# `strace -c -f -p` (which slows it down a lot) to count the server's
# system calls; those divided by the requests served in that run give
# system calls per request.
#
# The untraced run also reads /proc/stat around it: the guest's CPU time
# (user, system, softirq; clients included) and context switches per
# request, which is where the paths differ beyond their system calls.
# Then the same-moment comparison: both popupd paths up at once on two
# ports and popup-bench versus alternating bursts between them (a barrier
# between bursts), with one request in flight per client thread (ping-pong)
# and with eight. Every connection makes 64 exchanges per burst, so a burst
# at eight in flight is 512 requests per thread and mostly steady state:
# shorter bursts (8 exchanges) start from idle each time and flattered the
# kernel path, whose disadvantage under sustained load only shows once the
# client and the handler settle into their scheduling pattern. Reported:
# the median of the burst pairs' kernel/epoll req/s ratio
# and its quartiles. A drift of the host that runs the emulator, which
# swings single runs by 10 % and more, cancels within a pair.
# At eight in flight once more with popup.ko's burst wake-ups off (its
# batch_wakeups parameter), to show what they bring.
# Last, popup-udp-cost splits one UDP request's CPU cost into its phases
# with no scheduling at all (one thread plays client and server).
#
# Output on stdout, picked up by scripts/bench.sh like vm-local.sh's:
#   @@BENCH json vm-arrival-PATH-PROTO {...}   one row
#   @@BENCH json vm-arrival-versus-PROTO-CONNS[-nobatch] {...} popup-bench versus
#   @@BENCH json vm-arrival-cost {...}         popup-udp-cost --json
# and the same rows as text lines starting with "arrival:" for the log.
#
# Usage: vm-arrival.sh BINDIR SECS CONNS [CPUS] [ROUNDS]
set -u
bin=$1 secs=$2 conns=$3 cpus=${4:-0,1} rounds=${5:-1}
top=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
port=7411 hport=7412 port2=7421 hport2=7422
srv_pid=

note() { echo "arrival: $*"; }

wait_port()	# PORT PROTO
{
	local flag=-t
	[ "$2" = udp ] && flag=-u
	for _ in $(seq 200); do
		ss -H -l -n $flag "sport = :$1" 2>/dev/null | grep -q . && return 0
		sleep 0.05
	done
	return 1
}

start()		# PATH [PORT HPORT]: start the server of PATH in the background
{
	local p=${2:-$port} hp=${3:-$hport}

	case $1 in
	kernel|user)
		mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf 2>/dev/null
		"$bin/popupd" --port "$p" --http-port "$hp" --cpus "$cpus" \
			--pin-dir "/sys/fs/bpf/popup-arrival-$$-$p" --arrival="$1" \
			--log-level info >"$tmp/$1.log" 2>&1 &
		;;
	floor)
		"$bin/popup-udp-floor" --port "$p" --cpus "$cpus" >"$tmp/$1.log" 2>&1 &
		;;
	esac
	srv_pid=$!
	wait_port "$p" udp
}

stop()		# [PID]: stop the server (default: the last one started)
{
	local pid=${1:-$srv_pid}

	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null
	for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	[ "$pid" = "$srv_pid" ] && srv_pid=
}

bench()		# PROTO DURATION WARMUP [PORT]: one popup-bench run, its JSON on stdout
{
	"$bin/popup-bench" "$1" --connect "127.0.0.1:${4:-$port}" --cpus "$cpus" \
		--conns "$conns" --duration "$2" --warmup "$3" --json 2>>"$tmp/bench.err"
}

# "seconds cpu_ticks ctxt" of the whole guest now (ticks: user + nice +
# system + softirq)
stat_now()
{
	awk -v now="$(date +%s.%N)" '$1 == "cpu" { t = $2 + $3 + $4 + $8 }
		$1 == "ctxt" { c = $2 } END { print now, t, c }' /proc/stat
}

jget()		# JSON KEY
{
	python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get(sys.argv[2], 0))' "$1" "$2" \
		2>/dev/null || echo 0
}

# One measured run of PATH PROTO in round ROUND: an untraced closed-loop
# run (its JSON plus the guest's CPU and switch rates, into
# $tmp/NAME.runs), and in round 1 the traced run for system calls.
measure()	# PATH PROTO ROUND
{
	local path=$1 proto=$2 round=$3 name="vm-arrival-$1-$2" run traced calls st s0 s1 rates
	if ! start "$path"; then
		echo "server did not start: $(tail -n 2 "$tmp/$path.log" | tr -d '"\n' | head -c 150)" >"$tmp/$name.fail"
		stop
		return
	fi
	if [ "$round" = 1 ]; then
		[ "$path" = kernel ] && ! grep -q "arrive through popup.ko" "$tmp/$path.log" &&
			note "$name: popupd did not take the kernel path: $(tail -n 2 "$tmp/$path.log" | tr '\n' ' ')"
		[ "$path$proto" = kerneltcp ] && ! grep -q "accepted by popup.ko" "$tmp/$path.log" &&
			note "$name: popupd left TCP in userspace"
	fi
	s0=$(stat_now)
	run=$(bench "$proto" "$secs" 1)
	s1=$(stat_now)
	if [ -z "$run" ]; then
		echo "popup-bench: $(tail -n 1 "$tmp/bench.err" | tr -d '"\n' | head -c 150)" >"$tmp/$name.fail"
		stop
		return
	fi
	# Rates over the whole run, warm-up included: CPU busy per second
	# and switches per second, over requests per second.
	rates=$(python3 -c '
import sys
w0, t0, c0, w1, t1, c1, rps, hz = map(float, sys.argv[1:9])
d = w1 - w0
print("{\"cpu_us_per_request\":%.1f,\"ctxsw_per_request\":%.2f}" % ((t1 - t0) / hz / d * 1e6 / rps, (c1 - c0) / d / rps) if rps > 0 and d > 0 else "{}")' \
		$s0 $s1 "$(jget "$run" rps)" "$(getconf CLK_TCK)" 2>/dev/null || echo "{}")
	echo "[$run, $rates]" >>"$tmp/$name.runs"
	if [ "$round" = 1 ]; then
		strace -c -f -q -o "$tmp/$name.strace" -p "$srv_pid" 2>/dev/null &
		st=$!
		sleep 1
		traced=$(bench "$proto" "$secs" 0)
		kill -INT $st 2>/dev/null
		wait $st 2>/dev/null
		calls=$(awk '$NF == "total" { print $4 }' "$tmp/$name.strace" 2>/dev/null)
		[ -s "$tmp/$name.strace" ] && sed "s/^/arrival:   $name strace: /" "$tmp/$name.strace"
		echo "${calls:-0} $(jget "$traced" requests)" >"$tmp/$name.sys"
	fi
	stop
}

# The row of PATH PROTO over its rounds: the run with the median req/s.
row()		# PATH PROTO
{
	local name="vm-arrival-$1-$2" js
	if [ ! -s "$tmp/$name.runs" ]; then
		echo "@@BENCH json $name {\"failed\":\"$(cat "$tmp/$name.fail" 2>/dev/null || echo 'no run')\"}"
		return
	fi
	js=$(python3 - "$1" "$2" "$tmp/$name.runs" "$tmp/$name.sys" <<'PY'
import json, sys
path, proto, runs_f, sys_f = sys.argv[1:5]
runs = [json.loads(l) for l in open(runs_f) if l.strip()]
runs.sort(key=lambda r: r[0].get("rps", 0))
run, rates = runs[len(runs) // 2]
rps = [r[0].get("rps", 0) for r in runs]
row = {"path": path, "proto": proto, "emulation": "TCG", "rounds": len(runs),
       "rps": run.get("rps", 0), "rps_runs": rps,
       "rps_spread": (max(rps) - min(rps)) / run["rps"] if run.get("rps") else None,
       "p50_us": run.get("p50_us", 0), "p99_us": run.get("p99_us", 0),
       "errors": sum(r[0].get("errors", 0) for r in runs),
       "timeouts": sum(r[0].get("timeouts", 0) for r in runs)}
row.update(rates)
try:
    calls, reqs = map(float, open(sys_f).read().split())
    row.update(syscalls=int(calls), traced_requests=int(reqs),
               syscalls_per_request=round(calls / reqs, 2) if calls and reqs else None)
except (OSError, ValueError):
    row.update(syscalls_per_request=None)
print(json.dumps(row, separators=(",", ":")))
PY
)
	echo "@@BENCH json $name $js"
	note "$(python3 -c '
import json, sys
r = json.loads(sys.argv[1])
f = lambda k, p: (p % r[k]) if isinstance(r.get(k), (int, float)) else "n/a"
print("%-7s %-4s %9s req/s (runs %s)  p50 %7s us  p99 %7s us  %5s syscalls/req  %6s cpu us/req  %5s ctxsw/req  (TCG emulation)" % (
    r["path"], r["proto"], f("rps", "%.0f"), "/".join("%.0f" % x for x in r["rps_runs"]),
    f("p50_us", "%.0f"), f("p99_us", "%.0f"), f("syscalls_per_request", "%.2f"),
    f("cpu_us_per_request", "%.1f"), f("ctxsw_per_request", "%.2f")))' "$js")"
}

# Both paths up at once; popup-bench versus, the kernel path as a: the
# JSON row of PROTO with CONNS requests in flight per client thread. With
# "off", popup.ko's burst wake-ups (kmod/call.c) are turned off for the
# run, to show what they bring; the row is then PROTO-CONNS-nobatch.
versus()	# PROTO CONNS [off]
{
	local proto=$1 c=$2 pk pu burst=64 js key=$1-$2 par=/sys/module/popup/parameters/batch_wakeups
	if [ "${3:-}" = off ]; then
		key=$key-nobatch
		echo 0 >"$par" || {
			echo "@@BENCH json vm-arrival-versus-$key {\"failed\":\"cannot set batch_wakeups\"}"
			return
		}
	fi
	if ! start kernel $port $hport; then
		stop
		echo 1 >"$par" 2>/dev/null
		echo "@@BENCH json vm-arrival-versus-$key {\"failed\":\"kernel path did not start\"}"
		return
	fi
	pk=$srv_pid
	if ! start user $port2 $hport2; then
		stop
		stop "$pk"
		echo 1 >"$par" 2>/dev/null
		echo "@@BENCH json vm-arrival-versus-$key {\"failed\":\"user path did not start\"}"
		return
	fi
	pu=$srv_pid
	js=$("$bin/popup-bench" versus "$proto" --a "127.0.0.1:$port" --b "127.0.0.1:$port2" \
		--cpus "$cpus" --conns "$c" --burst "$burst" --duration "$vsecs" --warmup 1 \
		--json 2>>"$tmp/bench.err")
	stop "$pu"
	stop "$pk"
	echo 1 >"$par" 2>/dev/null
	[ "${js#\{}" != "$js" ] ||
		js="{\"failed\":\"popup-bench versus: $(tail -n 1 "$tmp/bench.err" | tr -d '"\n' | head -c 150)\"}"
	echo "@@BENCH json vm-arrival-versus-$key $js"
	note "versus $proto, $c in flight per CPU${3:+, burst wake-ups $3} (a: kernel, b: epoll): $js"
}

if ! grep -q '^popup ' /proc/modules; then
	insmod "$top/kmod/popup.ko" || note "insmod failed"
fi
command -v strace >/dev/null || note "strace not found: no system call counts"
note "guest: $(nproc) CPUs under QEMU TCG emulation; clients and servers on CPUs $cpus; $conns conns per client thread, ${secs}s per run, $rounds rounds (paths interleaved, median reported)"
# Rounds interleave the paths, so a drift of the host (other load on the
# machine that runs the emulator) hits every path alike.
for r in $(seq "$rounds"); do
	for p in kernel user floor; do
		measure $p udp "$r"
	done
	for p in kernel user; do
		measure $p tcp "$r"
	done
done
for p in kernel user floor; do
	row $p udp
done
for p in kernel user; do
	row $p tcp
done
vsecs=$((secs * 4 * rounds))
for proto in udp tcp; do
	versus "$proto" 1
	versus "$proto" 8
	versus "$proto" 8 off
done
# One request's CPU cost by phase, without scheduling.
cost=$("$bin/popup-udp-cost" --json --cpu "${cpus%%,*}" 2>&1)
if [ "${cost#\{}" != "$cost" ]; then
	echo "@@BENCH json vm-arrival-cost $cost"
	"$bin/popup-udp-cost" --cpu "${cpus%%,*}" 2>&1 | sed 's/^/arrival: cost: /'
else
	echo "@@BENCH json vm-arrival-cost {\"failed\":\"$(echo "$cost" | tr -d '"\n' | head -c 150)\"}"
fi
# Where the kernel path's arrivals went (handed, queued, spawned, busy...).
sed 's/^/arrival: \/proc\/popup\/arrival: /' /proc/popup/arrival
rm -rf "$tmp"
exit 0
