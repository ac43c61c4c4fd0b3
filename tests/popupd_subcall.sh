#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Handlers that call sub-servers, end to end: popupd with files and disk,
# where files' "get" reads a file's blocks through disk with several
# reads outstanding (service.h sub-call hooks, libpopup batches).
#   - results are byte-exact (multi-block, partial last block, empty file)
#     and errors map through (missing file 404, escapes 403);
#   - outstanding=8 beats outstanding=1 with 4 ms of emulated latency per
#     block (10 ms under popup.ko in the TCG guest, see below): 16 blocks
#     take >1.5x longer one at a time;
#   - only the calling handler waits: on a single worker CPU an echo is
#     answered while a get waits for slow (100 ms) block reads;
#   - a failing disk (fail = 1) fails get with the block's offset and the
#     disk's reason, promptly;
#   - disk on another popupd over TCP ([service.disk] remote = host:port):
#     the same bytes; killing that popupd fails get with an error, no
#     hang; restarting it lets the next get reconnect;
#   - a clean SIGTERM without sanitizer reports.
# Runs in its own network namespace when it can, so the services' local
# exports (abstract Unix sockets) never meet another test's popupd.
set -u
if [ -z "${POPUP_SUBCALL_NS:-}" ] && [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
	export POPUP_SUBCALL_NS=1
	exec unshare -n bash -c 'ip link set lo up && exec "$0" "$@"' "$0" "$@"
fi
. "$(dirname "$0")/popupd_lib.sh"

BS=4096
mkdir -p "$T/root"
head -c $((16 * BS)) /dev/urandom >"$T/root/big.bin"
head -c $((3 * BS + 123)) /dev/urandom >"$T/root/odd.bin"
: >"$T/root/empty"
echo "secret" >"$T/outside"

# get PORT PATH -> "CODE" with the body in $T/got
get()
{
	curl -s -m 10 -o "$T/got" -w '%{http_code}' -X POST --data-binary "$2" \
		"http://127.0.0.1:$1/files/get"
}

# timed PORT N PATH: seconds for N sequential gets on one keep-alive
# connection (curl's start-up would dwarf the difference).
timed()
{
	python3 - "$@" <<'EOF'
import http.client, sys, time
port, n, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
t0 = time.monotonic()
for _ in range(n):
    c.request("POST", "/files/get", body=path)
    r = c.getresponse()
    r.read()
    if r.status != 200:
        sys.exit("status %d" % r.status)
print("%.4f" % (time.monotonic() - t0))
EOF
}

# The emulated read takes long enough that the overlap of waits, not CPU
# time, decides the ratio: 4 ms natively (with 1 ms, x1.8..x6 was seen
# on a host with a load average of 10 on 2 CPUs: the 8-outstanding case
# turns CPU-bound), 10 ms under popup.ko in the TCG guest, where each
# outstanding call runs on a libpopup caller thread and emulation costs
# milliseconds per call (x1.17..x2.3 with 1 ms there, x5.9 with 10 ms).
# scripts/bench/subcall.sh measures the 1 ms case.
LAT=4000 N=16
if [ -c /dev/popup ] && [ "${POPUP_BACKEND:-}" != user ]; then
	LAT=10000 N=10
fi
common=(-s files,disk --set files.root="$T/root" --set disk.root="$T/root"
	--set files.block=$BS --set disk.latency_us=$LAT)

# ---- files + disk in one popupd, 8 outstanding ----
if ! pd_start "${common[@]}" --set files.outstanding=8; then
	t_fail "popupd starts with files and disk"
	t_done
	exit
fi
t_check "get of a 16-block file: 200" [ "$(get "$HP" big.bin)" = 200 ]
echo "# $(grep -o 'sub-calls to disk: .*' "$T/popupd.log" | head -n1)"
t_check "  bytes identical" cmp -s "$T/got" "$T/root/big.bin"
t_check "get of 3 blocks + 123 bytes: identical" \
	bash -c "[ \"\$(curl -s -m 10 -o '$T/got2' -w '%{http_code}' -X POST --data-binary odd.bin http://127.0.0.1:$HP/files/get)\" = 200 ] && cmp -s '$T/got2' '$T/root/odd.bin'"
t_check "get of an empty file: 200, empty" bash -c "[ \"\$(curl -s -m 10 -o '$T/got3' -w '%{http_code}' -X POST --data-binary empty http://127.0.0.1:$HP/files/get)\" = 200 ] && [ ! -s '$T/got3' ]"
t_check "get of a missing file: 404 from disk" [ "$(get "$HP" nothere)" = 404 ]
t_check "get refuses '..' (403)" [ "$(get "$HP" ../outside)" = 403 ]
t_check "read (direct) still works" \
	bash -c "curl -s -m 5 -X POST --data-binary big.bin http://127.0.0.1:$HP/files/read | cmp -s - '$T/root/big.bin'"
timed "$HP" 5 big.bin >/dev/null	# warm the pools
t8=$(timed "$HP" $N big.bin)
t_check "$N gets with 8 outstanding" [ -n "$t8" ]
calls=$(pd_stat calls disk)
t_check "disk served the blocks (calls=$calls)" [ "${calls:-0}" -ge $(((N + 6) * 17)) ]
pd_stop
t_check "clean stop (8 outstanding)" [ $? = 0 ]
t_check "no sanitizer report" pd_log_clean

# ---- one at a time ----
if pd_start "${common[@]}" --set files.outstanding=1; then
	t_check "get with 1 outstanding: identical" \
		bash -c "[ \"\$(curl -s -m 10 -o '$T/got' -X POST -w '%{http_code}' --data-binary big.bin http://127.0.0.1:$HP/files/get)\" = 200 ] && cmp -s '$T/got' '$T/root/big.bin'"
	timed "$HP" 5 big.bin >/dev/null
	t1=$(timed "$HP" $N big.bin)
	ratio=$(python3 -c "print('%.2f' % ($t1 / $t8))" 2>/dev/null)
	echo "# $N gets of 16 x 4 KiB blocks, ${LAT} us emulated latency: 1 outstanding ${t1}s, 8 outstanding ${t8}s (x${ratio})"
	t_check "8 outstanding >1.5x faster than 1 (x$ratio)" \
		python3 -c "import sys; sys.exit(0 if $t1 > 1.5 * $t8 else 1)"
	pd_stop
else
	t_fail "popupd starts with outstanding=1"
fi

# ---- only the calling handler waits ----
# One worker CPU, 100 ms per disk read: a get takes >= 300 ms (size, then
# two rounds of 8 reads), during which the same worker answers an echo.
if pd_start -c 0 -s echo,files,disk --set files.root="$T/root" --set disk.root="$T/root" \
	--set files.block=$BS --set disk.latency_us=100000; then
	curl -s -m 10 -o "$T/slow" -X POST --data-binary big.bin "http://127.0.0.1:$HP/files/get" &
	cpid=$!
	sleep 0.15
	echo_out=$(curl -s -m 5 -X POST --data-binary ping "http://127.0.0.1:$HP/echo/echo")
	kill -0 "$cpid" 2>/dev/null
	running=$?
	t_check "echo answered while a get waits on its sub-calls" [ "$echo_out" = ping ] && [ $running = 0 ]
	wait "$cpid"
	t_check "  and the slow get completes, identical" cmp -s "$T/slow" "$T/root/big.bin"
	pd_stop
else
	t_fail "popupd starts on one CPU"
fi

# ---- a failing disk ----
if pd_start "${common[@]}" --set disk.fail=1; then
	start=$(date +%s%N)
	code=$(get "$HP" big.bin)
	ms=$(( ($(date +%s%N) - start) / 1000000 ))
	t_check "failing disk: get fails with 500 ($code, ${ms} ms)" [ "$code" = 500 ] && [ "$ms" -lt 3000 ]
	t_check "  the error names the block and the reason" \
		grep -q "disk read at offset [0-9]* failed: emulated disk failure" "$T/got"
	t_check "  the next request is served too" [ "$(get "$HP" nothere)" = 404 ]
	pd_stop
	t_check "clean stop (failing disk)" [ $? = 0 ]
else
	t_fail "popupd starts with a failing disk"
fi

# ---- disk on another popupd, over TCP ----
# remote_start: the disk-only popupd; sets RPID, RNP.
remote_start()
{
	rm -f "$T/rports"
	"$popupd" -p "${1:-0}" --http-port 0 --port-file "$T/rports" --no-local \
		--pin-dir "$pin_dir-r" -s disk --set disk.root="$T/root" \
		--set disk.latency_us=1000 >>"$T/remote.log" 2>&1 &
	RPID=$!
	for _ in $(seq 50); do
		[ -s "$T/rports" ] && break
		sleep 0.1
	done
	RNP=$(sed -E 's/.*native=([0-9]+).*/\1/' "$T/rports" 2>/dev/null)
	[ -n "$RNP" ]
}
if remote_start && pd_start -s files --set files.root="$T/root" --set files.block=$BS \
	--set disk.remote="127.0.0.1:$RNP"; then
	t_check "remote disk: get identical" \
		bash -c "[ \"\$(curl -s -m 10 -o '$T/got' -X POST -w '%{http_code}' --data-binary big.bin http://127.0.0.1:$HP/files/get)\" = 200 ] && cmp -s '$T/got' '$T/root/big.bin'"
	t_check "remote disk: a missing file is an error" [ "$(get "$HP" nothere)" != 200 ]
	kill -KILL "$RPID"
	wait "$RPID" 2>/dev/null
	start=$(date +%s%N)
	code=$(get "$HP" big.bin)
	ms=$(( ($(date +%s%N) - start) / 1000000 ))
	t_check "remote popupd killed: get fails ($code) in ${ms} ms" [ "$code" != 200 ] && [ "$ms" -lt 5000 ]
	code=$(get "$HP" big.bin)
	t_check "  and keeps failing cleanly ($code)" [ "$code" != 200 ]
	if remote_start "$RNP"; then
		t_check "remote restarted: the next get reconnects" \
			bash -c "for i in 1 2 3; do c=\$(curl -s -m 10 -o '$T/got' -X POST -w '%{http_code}' --data-binary big.bin http://127.0.0.1:$HP/files/get); [ \"\$c\" = 200 ] && cmp -s '$T/got' '$T/root/big.bin' && exit 0; sleep 0.2; done; exit 1"
		kill -TERM "$RPID"
		wait "$RPID" 2>/dev/null
	else
		t_fail "remote popupd restarts on its port"
	fi
	pd_stop
	t_check "clean stop (remote disk)" [ $? = 0 ]
	t_check "no sanitizer report" pd_log_clean
	t_check "no sanitizer report (remote)" \
		bash -c "! grep -qE 'ERROR: AddressSanitizer|runtime error:|LeakSanitizer' '$T/remote.log'"
else
	t_fail "popupd pair starts (files + remote disk)"
	sed 's/^/#   /' "$T/remote.log" "$T/popupd.log" 2>/dev/null | tail -20
	[ -n "${RPID:-}" ] && kill -KILL "$RPID" 2>/dev/null
fi
t_done
