#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The arbiter and its subservers (userspace/popupd/arbiter.c, subserver.c)
# across network namespaces: a front popupd in one namespace, subserver
# popupds (echo and sleep) in their own, a client in another, each joined
# to the front by a veth pair with 10.x addresses (nothing else is
# reachable). Checks: results are correct and spread over the subservers;
# a subserver SIGKILLed while it holds sleep requests has them failed
# explicitly (not idempotent) or retried on another one (idempotent), and
# every client request gets a reply; a subserver started later gets work;
# an arbiter service no subserver serves answers "timeout" at the
# deadline; past the arbiter's queue bound requests are answered "busy".
set -u
. "$(dirname "$0")/popupd_lib.sh"

if [ "$(id -u)" != 0 ] || ! ip netns list >/dev/null 2>&1; then
	t_skip "arbiter tests need root and ip netns"
	t_done
	exit 0
fi

ns=pa$$
FR=${ns}f CL=${ns}c
declare -A SUB_PID
FR_PID=

cleanup()
{
	local p
	for p in "${SUB_PID[@]}" $FR_PID; do
		kill -KILL "$p" 2>/dev/null
	done
	wait 2>/dev/null
	for n in $FR $CL ${ns}s1 ${ns}s2 ${ns}s3; do
		ip netns del "$n" 2>/dev/null
	done
	# ARB_KEEP=DIR keeps the daemons' logs for a look after the run.
	[ -n "${ARB_KEEP:-}" ] && mkdir -p "$ARB_KEEP" && cp "$T"/*.log "$ARB_KEEP"/
	pd_cleanup
}
trap cleanup EXIT

# link NS N: a veth pair front <-> NS, 10.77.N.1 (front) and 10.77.N.2.
link()
{
	ip netns add "$1" || return 1
	ip netns exec "$1" ip link set lo up
	ip link add "${ns}a$2" type veth peer name "${ns}b$2" || return 1
	ip link set "${ns}a$2" netns "$FR"
	ip link set "${ns}b$2" netns "$1"
	ip -n "$FR" addr add "10.77.$2.1/24" dev "${ns}a$2"
	ip -n "$1" addr add "10.77.$2.2/24" dev "${ns}b$2"
	ip -n "$FR" link set "${ns}a$2" up
	ip -n "$1" link set "${ns}b$2" up
}

setup()
{
	ip netns add "$FR" && ip netns exec "$FR" ip link set lo up &&
	link "$CL" 9 && link "${ns}s1" 1 && link "${ns}s2" 2 && link "${ns}s3" 3
}

# popupd in namespace $1 (name $2 for its files), more args after.
pd_in()
{
	local n=$1 tag=$2
	shift 2
	ip netns exec "$n" "$popupd" -c 0 --no-bpf --stats "$T/$tag.stats" \
		--port-file "$T/$tag.ports" "$@" >>"$T/$tag.log" 2>&1 &
}

start_front()
{
	rm -f "$T/front.ports"
	pd_in "$FR" front -f "$T/front.conf"
	FR_PID=$!
	for _ in $(seq 50); do
		[ -s "$T/front.ports" ] && return 0
		sleep 0.1
	done
	echo "# front did not start:"; sed 's/^/#   /' "$T/front.log"
	return 1
}

# start_sub N: a subserver in namespace sN, asking K=2 at a time.
start_sub()
{
	pd_in "${ns}s$1" "s$1" -s echo,sleep --subserver-of "10.77.$1.1:7071" \
		--subserver-asks 2 --no-local
	SUB_PID[$1]=$!
}

front_stats() { ip netns exec "$CL" curl -s -m 5 -X POST --data-binary '' http://10.77.9.1:7080/popupd/stats; }
# arb_stat SVC KEY
arb_stat() { front_stats | grep "^arbiter name=$1 " | sed -E "s/.* $2=([0-9]+).*/\1/"; }
# sub_calls N SVC: calls the subserver's own directory counted for SVC
sub_calls()
{
	ip netns exec "${ns}s$1" curl -s -m 5 -X POST --data-binary '' http://127.0.0.1:7080/popupd/stats |
		grep "^svc name=$2 " | sed -E 's/.* calls=([0-9]+).*/\1/'
}
# wait_subs SVC N: until the front counts N subservers for SVC (10 s)
wait_subs()
{
	for _ in $(seq 100); do
		[ "$(arb_stat "$1" subservers)" = "$2" ] && return 0
		sleep 0.1
	done
	return 1
}
# call OUT SVC.METHOD ARG: a client call from the client namespace; the
# JSON reply (or popupctl's error) into OUT.
call() { ip netns exec "$CL" "$popupctl" call --json --connect 10.77.9.1:7070 "$2" "$3" >"$1" 2>&1; }
# t_if NAME 'COND': pass if the shell condition COND holds (evaluated now).
t_if() { if eval "$2"; then t_pass "$1"; else t_fail "$1"; fi; }
# burst N METHOD ARG [SERVICE [KILL_PID]]: N requests (default: the sleep
# service, id 4) sent at once on one TCP connection from the client
# namespace; replies as "req_id:status:text". With KILL_PID: once the
# front's stats show all N handed to subservers, SIGKILL that process
# (from here, not the shell: on a slow guest a polling loop of curl
# processes can take longer than the requests).
burst()
{
	ip netns exec "$CL" python3 - "$@" <<'PY'
import os, re, signal, socket, struct, sys, time
n, method, arg = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode()
svc = int(sys.argv[4]) if len(sys.argv) > 4 else 4
victim = int(sys.argv[5]) if len(sys.argv) > 5 else 0

def dispatched():
    h = socket.create_connection(("10.77.9.1", 7080))
    h.sendall(b"POST /popupd/stats HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
              b"Connection: close\r\n\r\n")
    body = b""
    while True:
        d = h.recv(65536)
        if not d:
            break
        body += d
    m = re.search(rb"arbiter name=sleep .*? dispatched=(\d+)", body)
    return int(m.group(1)) if m else 0

base = dispatched() if victim else 0
s = socket.create_connection(("10.77.9.1", 7070))
s.settimeout(30)
s.sendall(b"".join(struct.pack(">IBBHIIQII", 0x50555031, 1, 0, method, svc, 0, i, len(arg), 0)
                   + arg for i in range(1, n + 1)))
if victim:
    t = time.time()
    while dispatched() < base + n and time.time() - t < 10:
        time.sleep(0.01)
    os.kill(victim, signal.SIGKILL)
buf = b""
for _ in range(n):
    while len(buf) < 32 or len(buf) < 32 + int.from_bytes(buf[24:28], "big"):
        d = s.recv(4096)
        if not d:
            raise SystemExit("connection closed")
        buf += d
    k = 32 + int.from_bytes(buf[24:28], "big")
    print("%d:%d:%s" % (int.from_bytes(buf[16:24], "big"), int.from_bytes(buf[12:16], "big"),
                        buf[32:k].decode("latin1")))
    buf = buf[k:]
PY
}
status_of() { sed -nE 's/.*"status":([0-9]+).*/\1/p' "$1"; }

# ---- configuration checks (no network) --------------------------------------
# conf_err SECTION-BODY: --check-config's message for [arbiter.sleep] BODY
conf_err()
{
	printf '[arbiter.sleep]\n%b\n' "$1" >"$T/bad.conf"
	"$popupd" --check-config -f "$T/bad.conf" -s echo 2>&1
}
t_if "arbiter: methods required" \
	'conf_err "id = 4" | grep -q "methods wants NAME:ID"'
t_if "arbiter: a bad method list is refused" \
	'conf_err "methods = sleep:1, sleep:2" | grep -q "methods wants NAME:ID"'
t_if "arbiter: an unknown key is refused" \
	'conf_err "methods = sleep:1\nthreds = 4" | grep -q "unknown key .threds."'
t_if "arbiter: bad retry is refused" \
	'conf_err "methods = sleep:1\nretry = maybe" | grep -q "retry .maybe. is not"'
t_if "arbiter: a name clash with a plugin is refused" \
	'printf "[arbiter.echo]\nmethods = echo:1\n" >"$T/clash.conf";
	 "$popupd" --check-config -f "$T/clash.conf" -s echo 2>&1 | grep -q "both define it"'
t_if "arbiter: [service.X] and [arbiter.X] together are refused" \
	'conf_err "methods = sleep:1\n[service.sleep]\ntimeout_ms = 9" | grep -q "both configure sleep"'
t_if "arbiter: a good section passes --check-config" \
	'conf_err "id = 4\nmethods = sleep:1:idempotent, spin:2\nretry = always" |
	 grep -q "configuration OK.* sleep(id 4, arbiter)"'
t_if "--subserver-of wants HOST:PORT" \
	'"$popupd" --check-config --subserver-of nohost 2>&1 | grep -q "invalid value .nohost."'

if ! setup; then
	t_fail "network namespaces and veth pairs set up"
	t_done
	exit
fi

# ---- phase 1: sleep is not idempotent -------------------------------------
cat >"$T/front.conf" <<EOF
[popupd]
port = 7070
http_port = 7080
[arbiter.echo]
id = 1
methods = echo:1
timeout_ms = 2000
[arbiter.sleep]
id = 4
methods = sleep:1, spin:2
max_arg = 15
timeout_ms = 6000
[arbiter.kv]
id = 9
methods = get:1
timeout_ms = 700
EOF
if ! start_front; then
	t_fail "front popupd starts"
	t_done
	exit
fi
t_check "front port file names the arbiter port" grep -q 'arbiter=7071' "$T/front.ports"
start_sub 1
start_sub 2
t_check "two subservers register with the front" wait_subs sleep 2

ok=0
for i in $(seq 12); do
	call "$T/e$i" echo.echo "hello-$i"
	if grep -q "\"status\":0,.*\"result\":\"hello-$i\"" "$T/e$i"; then
		ok=$((ok + 1))
	else
		sed 's/^/# /' "$T/e$i"
	fi
done
t_check "12 echo calls through the arbiter: all correct ($ok)" [ "$ok" = 12 ]
c1=$(sub_calls 1 echo) c2=$(sub_calls 2 echo)
t_if "echo spread over both subservers ($c1 + $c2)" \
	'[ "${c1:-0}" -gt 0 ] && [ "${c2:-0}" -gt 0 ] && [ $((c1 + c2)) = 12 ]'

out=$(ip netns exec "$CL" curl -s -m 5 -X POST --data-binary 'via-http' http://10.77.9.1:7080/echo/echo)
t_check "echo over HTTP through the arbiter" [ "$out" = via-http ]
out=$(ip netns exec "$CL" python3 - <<'PY'
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(struct.pack(">IBBHIIQII", 0x50555031, 1, 0, 1, 1, 0, 42, 8, 0) + b"via-udp!",
         ("10.77.9.1", 7070))
d = s.recv(2048)
print(int.from_bytes(d[12:16], "big"), int.from_bytes(d[16:24], "big"), d[32:].decode())
PY
)
t_check "echo over UDP through the arbiter ($out)" [ "$out" = "0 42 via-udp!" ]
# Local callers (libpopup: popup.ko when loaded, else its socket backend,
# scoped to the front's namespace) reach the arbiter too.
out=$(ip netns exec "$FR" "$popupctl" call --json echo.echo via-local 2>&1)
t_if "echo from a local caller through the arbiter" 'grep -q "\"result\":\"via-local\"" <<<"$out"'
if [ -c /dev/popup ]; then
	t_if "with popup.ko: UDP arrives through the module on the front" \
		'grep -q "arrival: UDP requests arrive through popup.ko" "$T/front.log"'
fi
code=$(ip netns exec "$CL" curl -s -o /dev/null -w '%{http_code}' -m 5 -X POST \
	--data-binary x http://10.77.9.1:7080/kv/get)
t_check "no subserver for kv over HTTP: 504 ($code)" [ "$code" = 504 ]

start=$(date +%s%N)
call "$T/kv" kv.get x
ms=$(( ($(date +%s%N) - start) / 1000000 ))
t_if "no subserver for kv: timeout reply (status 6) after ~700 ms ($ms ms)" \
	'[ "$(status_of "$T/kv")" = 6 ] && [ "$ms" -ge 600 ] && [ "$ms" -lt 5000 ]'

out=$(ip netns exec "$CL" "$popupctl" services --connect 10.77.9.1:7070 2>&1)
t_if "popupctl services lists the arbiter services" \
	'grep -qE "^sleep +4 +1 +arbiter .* sleep\(1 15/65536\) spin\(2 15/65536\)" <<<"$out"'
out=$(ip netns exec "$CL" "$popupctl" stats --connect 10.77.9.1:7070 2>&1)
sed -n '/^arbiter/,$s/^/# /p' <<<"$out"
t_if "popupctl stats shows the arbiters" \
	'grep -q "^arbiter .*dispatched" <<<"$out" && grep -qE "^kv +0 +0 +0 +0 +0 +0 +0 +2 +0" <<<"$out"'
t_if "popupctl stats --json is JSON with the arbiters" \
	'ip netns exec "$CL" "$popupctl" stats --json --connect 10.77.9.1:7070 | python3 -c "
import json, sys
d = json.load(sys.stdin)
assert {a[\"name\"] for a in d[\"arbiters\"]} == {\"echo\", \"sleep\", \"kv\"}"'

# Four 2 s sleeps, sent at once on one connection: two land on each
# subserver (2 asks each, round robin); then subserver 1 is killed.
# (The group keeps bash's "Killed" notice for the subserver off the TAP
# output; it may land in the .err file, where it is filtered.)
{ burst 4 1 2000 4 "${SUB_PID[1]}" >"$T/s" 2>"$T/s.err"; wait "${SUB_PID[1]}"; } 2>/dev/null
grep -v ' Killed ' "$T/s.err" | sed 's/^/# /'
unset 'SUB_PID[1]'
t_check "four sleeps handed to subservers" [ "$(arb_stat sleep dispatched)" -ge 4 ]
nok=$(grep -c '^[0-9]*:0:' "$T/s") nfail=$(grep -c '^[0-9]*:7:subserver died' "$T/s")
nother=$(( $(wc -l <"$T/s") - nok - nfail ))
[ "$nother" = 0 ] || sed 's/^/# /' "$T/s"
t_if "subserver killed mid-request, not idempotent: every call answered ($nok ok, $nfail 'subserver died')" \
	'[ "$nother" = 0 ] && [ "$nfail" = 2 ] && [ "$nok" = 2 ]'
t_if "front counts them failed, none retried" \
	'[ "$(arb_stat sleep failed)" = "$nfail" ] && [ "$(arb_stat sleep retried)" = 0 ]'
t_check "the front sees one subserver left" wait_subs sleep 1

start_sub 3
t_check "a subserver started later registers" wait_subs sleep 2
ok=0
for i in $(seq 8); do
	call "$T/l$i" echo.echo "late-$i"
	if grep -q "\"result\":\"late-$i\"" "$T/l$i"; then
		ok=$((ok + 1))
	else
		sed 's/^/# /' "$T/l$i"
	fi
done
c3=$(sub_calls 3 echo)
t_if "the late subserver gets work (${c3:-0} of 8 echo calls, all $ok correct)" \
	'[ "${c3:-0}" -gt 0 ] && [ "$ok" = 8 ]'

# ---- phase 2: sleep idempotent, small queue ---------------------------------
kill -TERM "$FR_PID"
wait "$FR_PID"
rc=$?
FR_PID=
t_check "front stops cleanly (exit $rc)" [ "$rc" = 0 ]
sed -i -e 's/^methods = sleep:1, spin:2/methods = sleep:1:idempotent, spin:2/' \
	-e 's/^max_arg = 15/max_arg = 15\nqueue = 3/' -e 's/^timeout_ms = 6000/timeout_ms = 10000/' \
	"$T/front.conf"
if ! start_front; then
	t_fail "front popupd restarts"
	t_done
	exit
fi
t_check "subservers reconnect to the restarted front" wait_subs sleep 2

# Four 2 s sleeps again, 2 per subserver; subserver 2 is killed: its two
# run again on subserver 3 once it asks (about 4 s, within the 10 s
# deadline).
# (The group keeps bash's "Killed" notice for the subserver off the TAP
# output; it may land in the .err file, where it is filtered.)
{ burst 4 1 2000 4 "${SUB_PID[2]}" >"$T/r" 2>"$T/r.err"; wait "${SUB_PID[2]}"; } 2>/dev/null
grep -v ' Killed ' "$T/r.err" | sed 's/^/# /'
unset 'SUB_PID[2]'
nok=$(grep -c '^[0-9]*:0:' "$T/r")
[ "$nok" = 4 ] || sed 's/^/# /' "$T/r"
retried=$(arb_stat sleep retried)
t_if "subserver killed mid-request, idempotent: all 4 succeed, $retried retried elsewhere" \
	'[ "$nok" = 4 ] && [ "${retried:-0}" = 2 ]'

# One subserver with 2 asks and a queue of 3: of 8 sleeps sent at once on
# one connection, 5 are taken (2 held, 3 queued) and 3 are answered "busy"
# at once.
burst 8 1 1000 >"$T/burst"
nok=$(grep -c '^[0-9]*:0:' "$T/burst") nbusy=$(grep -c '^[0-9]*:5:' "$T/burst")
nother=$(( $(wc -l <"$T/burst") - nok - nbusy ))
[ "$nother" = 0 ] || sed 's/^/# /' "$T/burst"
t_if "past the arbiter's queue bound: busy replies ($nok ok, $nbusy busy, $nother other)" \
	'[ "$nother" = 0 ] && [ "$nbusy" = 3 ] && [ "$nok" = 5 ]'
t_check "front counts the busy replies" [ "$(arb_stat sleep busy)" = "$nbusy" ]

# Under load: closed-loop echo clients (popup-bench checks every reply:
# id, status, payload) while one of three subservers is killed.
start_sub 1
start_sub 2
wait_subs echo 3
ip netns exec "$CL" "$POPUP_BIN/popup-bench" tcp --connect 10.77.9.1:7070 --cpus 0 \
	--conns 8 --duration 3 --warmup 0 --size 32 --service 1 --method 1 >"$T/bench" 2>&1 &
bench=$!
sleep 1
kill -KILL "${SUB_PID[3]}"
{ wait "${SUB_PID[3]}"; } 2>/dev/null
unset 'SUB_PID[3]'
wait "$bench"
rc=$?
grep -E 'requests|errors|req/s' "$T/bench" | head -3 | sed 's/^/# /'
t_if "echo under load with a subserver killed: every reply correct, none failed" \
	'[ "$rc" = 0 ] && [ "$(arb_stat echo failed)" = 0 ]'

# A subserver that hangs (SIGSTOP) with a request: the client gets
# "timeout" at the deadline (echo: 2 s), the other request is served.
kill -STOP "${SUB_PID[1]}"
expired=$(arb_stat echo expired)
start=$(date +%s%N)
burst 2 1 hung 1 >"$T/hung"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
kill -CONT "${SUB_PID[1]}"
t_if "a hung subserver's request: timeout at the deadline, the other served ($ms ms)" \
	'[ "$(cut -d: -f2 "$T/hung" | sort | tr "\n" " ")" = "0 6 " ] &&
	 [ "$(arb_stat echo expired)" = $((expired + 1)) ] && [ "$ms" -ge 2000 ]'

kill -TERM "$FR_PID" "${SUB_PID[1]}" "${SUB_PID[2]}"
wait "$FR_PID"
rc=$?
wait "${SUB_PID[1]}"
rc1=$?
wait "${SUB_PID[2]}"
rc2=$?
FR_PID=
SUB_PID=()
t_if "front and subservers stop cleanly ($rc, $rc1, $rc2)" \
	'[ "$rc" = 0 ] && [ "$rc1" = 0 ] && [ "$rc2" = 0 ]'
t_if "no sanitizer reports" \
	'! grep -qE "ERROR: AddressSanitizer|runtime error:|LeakSanitizer" "$T"/*.log'
t_done
