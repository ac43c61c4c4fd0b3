#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Runs inside the QEMU guest (scripts/vm, TCG emulation): compares, on the
# same CPUs and under the same closed-loop load (popup-bench), popupd with
# --arrival=kernel (requests become popup.ko pop-up contexts), popupd with
# --arrival=user (its epoll workers) and popup-udp-floor (recvmmsg and
# sendmmsg, no dispatch): requests per second, p50 and p99 latency, and
# system calls per request. UDP for all three; native TCP for popupd's two
# paths.
#
# Each path runs twice: once untraced for throughput and latency, once
# under `strace -c -f -p` (which slows it down a lot) to count the server's
# system calls; those divided by the requests served in that run give
# system calls per request.
#
# The untraced run also reads /proc/stat around it: the guest's CPU time
# (user, system, softirq; clients included) and context switches per
# request, which is where the paths differ beyond their system calls.
# Last, popup-udp-cost splits one UDP request's CPU cost into its phases
# with no scheduling at all (one thread plays client and server).
#
# Output on stdout, picked up by scripts/bench.sh like vm-local.sh's:
#   @@BENCH json vm-arrival-PATH-PROTO {...}   one row
#   @@BENCH json vm-arrival-cost {...}         popup-udp-cost --json
# and the same rows as text lines starting with "arrival:" for the log.
#
# Usage: vm-arrival.sh BINDIR SECS CONNS [CPUS]
set -u
bin=$1 secs=$2 conns=$3 cpus=${4:-0,1}
top=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
port=7411 hport=7412
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

start()		# PATH: start the server of PATH in the background
{
	case $1 in
	kernel|user)
		mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf 2>/dev/null
		"$bin/popupd" --port $port --http-port $hport --cpus "$cpus" \
			--pin-dir "/sys/fs/bpf/popup-arrival-$$" --arrival="$1" \
			--log-level info >"$tmp/$1.log" 2>&1 &
		;;
	floor)
		"$bin/popup-udp-floor" --port $port --cpus "$cpus" >"$tmp/$1.log" 2>&1 &
		;;
	esac
	srv_pid=$!
	wait_port $port udp
}

stop()
{
	[ -n "$srv_pid" ] || return 0
	kill -TERM "$srv_pid" 2>/dev/null
	for _ in $(seq 100); do kill -0 "$srv_pid" 2>/dev/null || break; sleep 0.05; done
	kill -KILL "$srv_pid" 2>/dev/null
	wait "$srv_pid" 2>/dev/null
	srv_pid=
}

bench()		# PROTO DURATION WARMUP: one popup-bench run, its JSON on stdout
{
	"$bin/popup-bench" "$1" --connect 127.0.0.1:$port --cpus "$cpus" \
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

row()		# PATH PROTO
{
	local path=$1 proto=$2 name="vm-arrival-$1-$2" run traced calls reqs spr st s0 s1 cpu_us cs
	if ! start "$path"; then
		echo "@@BENCH json $name {\"failed\":\"server did not start: $(tail -n 2 "$tmp/$path.log" | tr -d '"\n' | head -c 150)\"}"
		stop
		return
	fi
	[ "$path" = kernel ] && ! grep -q "arrive through popup.ko" "$tmp/$path.log" &&
		note "$name: popupd did not take the kernel path: $(tail -n 2 "$tmp/$path.log" | tr '\n' ' ')"
	[ "$path$proto" = kerneltcp ] && ! grep -q "accepted by popup.ko" "$tmp/$path.log" &&
		note "$name: popupd left TCP in userspace"
	s0=$(stat_now)
	run=$(bench "$proto" "$secs" 1)
	s1=$(stat_now)
	strace -c -f -q -o "$tmp/$name.strace" -p "$srv_pid" 2>/dev/null &
	st=$!
	sleep 1
	traced=$(bench "$proto" "$secs" 0)
	kill -INT $st 2>/dev/null
	wait $st 2>/dev/null
	stop
	calls=$(awk '$NF == "total" { print $4 }' "$tmp/$name.strace" 2>/dev/null)
	[ -s "$tmp/$name.strace" ] && sed "s/^/arrival:   $name strace: /" "$tmp/$name.strace"
	# Rates over the whole run, warm-up included: CPU busy per second
	# and switches per second, over requests per second.
	read -r cpu_us cs <<<"$(python3 -c '
import sys
w0, t0, c0, w1, t1, c1, rps, hz = map(float, sys.argv[1:9])
d = w1 - w0
print("%.1f %.2f" % ((t1 - t0) / hz / d * 1e6 / rps, (c1 - c0) / d / rps) if rps > 0 and d > 0 else "null null")' \
		$s0 $s1 "$(jget "$run" rps)" "$(getconf CLK_TCK)" 2>/dev/null || echo "null null")"
	reqs=$(jget "$traced" requests)
	spr=$(python3 -c "import sys; c,r=sys.argv[1:3]; print('%.2f' % (float(c)/float(r)) if c and float(r) > 0 else 'null')" "${calls:-}" "${reqs:-0}")
	if [ -z "$run" ]; then
		echo "@@BENCH json $name {\"failed\":\"popup-bench: $(tail -n 1 "$tmp/bench.err" | tr -d '"\n' | head -c 150)\"}"
		return
	fi
	echo "@@BENCH json $name {\"path\":\"$path\",\"proto\":\"$proto\",\"emulation\":\"TCG\",\"rps\":$(jget "$run" rps),\"p50_us\":$(jget "$run" p50_us),\"p99_us\":$(jget "$run" p99_us),\"errors\":$(jget "$run" errors),\"timeouts\":$(jget "$run" timeouts),\"syscalls\":${calls:-null},\"traced_requests\":${reqs:-0},\"syscalls_per_request\":$spr,\"cpu_us_per_request\":${cpu_us:-null},\"ctxsw_per_request\":${cs:-null}}"
	note "$(printf '%-7s %-4s %10s req/s  p50 %8s us  p99 %8s us  %6s syscalls/req  %6s cpu us/req  %5s ctxsw/req  (TCG emulation)' \
		"$path" "$proto" "$(jget "$run" rps)" "$(jget "$run" p50_us)" "$(jget "$run" p99_us)" "$spr" "$cpu_us" "$cs")"
}

if ! grep -q '^popup ' /proc/modules; then
	insmod "$top/kmod/popup.ko" || note "insmod failed"
fi
command -v strace >/dev/null || note "strace not found: no system call counts"
note "guest: $(nproc) CPUs under QEMU TCG emulation; clients and servers on CPUs $cpus; $conns conns per client thread, ${secs}s per run"
for p in kernel user floor; do
	row $p udp
done
for p in kernel user; do
	row $p tcp
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
