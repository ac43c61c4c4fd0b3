#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# popupd's native protocol end to end with socat over TCP and UDP
# (boundary lengths, bad headers, unknown methods, HTTP sent to the binary
# port), popupctl over both paths (libpopup locally, --connect over the
# network), and the start-up checks: configuration files, bad plugins
# (missing symbol, wrong ABI version, duplicate name), --check-config and
# a SIGHUP reload.
set -u
. "$(dirname "$0")/popupd_lib.sh"

# frame SERVICE METHOD REQ_ID LEN [PAYLOAD [VERSION [RESERVED]]]: one
# request header (include/popup/wire.h) and payload on stdout. LEN is
# taken as given, so it can lie; -1 is written as UINT32_MAX.
frame()
{
	python3 -c '
import struct, sys
a = sys.argv[1:]
svc, m, rid, n = int(a[0]), int(a[1]), int(a[2]), int(a[3]) & 0xffffffff
ver = int(a[5]) if len(a) > 5 else 1
res = int(a[6]) if len(a) > 6 else 0
# One write: socat sends each read of its stdin as its own datagram.
sys.stdout.buffer.write(struct.pack(">IBBHIIQII", 0x50555031, ver, 0, m, svc, 0, rid, n, res) +
                        (a[4].encode() if len(a) > 4 else b""))' "$@"
}
# Replies as "status:req_id:len:payload" lines, from a hex dump.
replies()
{
	od -An -v -tx1 | tr -s ' \n' ' ' | python3 -c '
import sys
b = bytes.fromhex(sys.stdin.read())
while len(b) >= 32:
    st = int.from_bytes(b[12:16], "big"); rid = int.from_bytes(b[16:24], "big")
    n = int.from_bytes(b[24:28], "big")
    print("%d:%d:%d:%s" % (st, rid, n, b[32:32 + n].decode("latin1")))
    b = b[32 + n:]'
}
tcp() { timeout 12 socat -t "${1:-1}" - "TCP:127.0.0.1:$NP" 2>/dev/null; }

if ! pd_start -s echo,kv --max-payload 100000; then
	t_fail "popupd starts"
	t_done
	exit
fi

# ---- TCP ----
t_check "echo over TCP" [ "$(frame 1 1 7 5 hello | tcp | replies)" = "0:7:5:hello" ]
t_check "length 0" [ "$(frame 1 1 8 0 | tcp | replies)" = "0:8:0:" ]
out=$( { frame 1 99 1 2 xx; frame 9 1 2 0; frame 1 1 3 2 ok; } | tcp | replies)
t_check "unknown method: status 3, connection goes on" [ "$(sed -n 1p <<<"$out" | cut -d: -f1,2)" = "3:1" ]
t_check "unknown service: status 2" [ "$(sed -n 2p <<<"$out" | cut -d: -f1,2)" = "2:2" ]
t_check "next request on the same connection served" [ "$(sed -n 3p <<<"$out")" = "0:3:2:ok" ]
out=$( { frame 1 1 1 0 "" 9; frame 1 1 2 0 "" 1 5; frame 1 1 3 1 z; } | tcp | replies)
t_check "bad version and non-zero reserved: status 1, stays framed" \
	[ "$(cut -d: -f1,2 <<<"$out" | tr '\n' ' ')" = "1:1 1:2 0:3 " ]
out=$( { frame 1 1 4 65537 "$(head -c 65537 /dev/zero | tr '\0' a)"; frame 1 1 5 1 z; } | tcp | replies)
t_check "over the method's max_arg (within max_request): status 4, stays framed" \
	[ "$(cut -d: -f1,2 <<<"$out" | tr '\n' ' ')" = "4:4 0:5 " ]
for len in 4294967295 2147483648 1048577; do
	start=$(date +%s%N)
	# socat would wait 8 s for a server that does not close.
	out=$( { frame 1 1 5 $len; printf 'xxxx'; } | tcp 8 | replies)
	t_check "length $len: status 4 (too big)" [ "$(cut -d: -f1,2 <<<"$out")" = "4:5" ]
	t_check "length $len: connection closed by popupd" [ $(( ($(date +%s%N) - start) / 1000000 )) -lt 6000 ]
done
t_check "length -1 is UINT32_MAX on the wire: status 4" [ "$( { frame 1 1 6 -1; } | tcp 3 | replies | cut -d: -f1)" = 4 ]
t_check "truncated header: no reply" [ -z "$(printf 'PUP1\x01\x00' | tcp | replies)" ]
# The server must close on its own: the client keeps its side open.
python3 - "$NP" >"$T/http2bin" <<'PY'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n")
s.settimeout(5)
t = time.time(); got = b""
try:
    while True:
        d = s.recv(4096)
        if not d:
            break
        got += d
except socket.timeout:
    pass
print(len(got), int((time.time() - t) * 1000))
PY
t_check "HTTP to the binary port: closed, no reply" [ "$(cut -d' ' -f1 "$T/http2bin")" = 0 ]
t_check "HTTP to the binary port: closed at once" [ "$(cut -d' ' -f2 "$T/http2bin")" -lt 2000 ]
t_check "protocol errors counted" [ "$(pd_stat proto_errors)" -ge 1 ]

# ---- UDP ----
udp() { timeout 5 socat -t 1 - "UDP:127.0.0.1:$NP" 2>/dev/null; }
t_check "echo over UDP" [ "$(frame 1 1 11 3 abc | udp | replies)" = "0:11:3:abc" ]
t_check "UDP length mismatch: status 1" [ "$(frame 1 1 12 9 abc | udp | replies | cut -d: -f1,2)" = "1:12" ]
t_check "UDP datagram shorter than a header: no reply" [ -z "$(printf 'PUP1' | udp | replies)" ]
t_check "short datagrams counted" [ "$(pd_stat udp_dropped)" -ge 1 ]

# ---- popupctl ----
t_check "popupctl services (local, libpopup)" bash -c "'$popupctl' services | grep -qE '^echo +1 '"
t_check "popupctl services --json --connect" bash -c "'$popupctl' services --json --connect 127.0.0.1:$NP | python3 -m json.tool >/dev/null"
t_check "popupctl call, local" [ "$("$popupctl" call echo.echo 'hi local')" = "hi local" ]
t_check "popupctl call --connect" [ "$("$popupctl" call echo.echo 'hi net' --connect 127.0.0.1:$NP)" = "hi net" ]
t_check "popupctl call kv.put then kv.get" bash -c "'$popupctl' call kv.put k=v && [ \"\$('$popupctl' call kv.get k --connect 127.0.0.1:$NP)\" = v ]"
"$popupctl" call kv.get missing >/dev/null 2>"$T/err"
t_check "popupctl call: handler error exits 1 with a message" [ $? = 1 ] && grep -q 'no such key' "$T/err"
t_check "popupctl call --json" bash -c "'$popupctl' call echo.echo j --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d[\"result\"]==\"j\" and d[\"status\"]==0'"
t_check "popupctl stats shows per-service rows" bash -c "'$popupctl' stats --stats '$T/stats' --pin-dir '$pin_dir' | grep -qE '^echo +[0-9]+'"
t_check "popupctl stats --json is JSON with services" bash -c "'$popupctl' stats --json --stats '$T/stats' --pin-dir '$pin_dir' | python3 -c 'import json,sys; d=json.load(sys.stdin); assert any(s[\"name\"]==\"echo\" for s in d[\"services\"])'"
for bad in "call" "call noperiod" "bogus" "services extra" "stats --watch 0"; do
	"$popupctl" $bad >/dev/null 2>&1
	t_check "popupctl $bad: usage error exits 2" [ $? = 2 ]
done
# popup-udp-cost (the arrival benchmark's cost split): the socket path is
# measured everywhere; the popup.ko path wherever /dev/popup exists.
"$POPUP_BIN/popup-udp-cost" --size 0 >/dev/null 2>&1
t_check "popup-udp-cost --size 0: usage error exits 2" [ $? = 2 ]
"$POPUP_BIN/popup-udp-cost" --requests 500 --json >"$T/cost" 2>&1
t_check "popup-udp-cost measures both paths it can" python3 -c '
import json, os, sys
d = json.load(open(sys.argv[1]))
assert d["sockets"]["total_us"] > 0 and d["sockets"]["server_recv_us"] > 0, d
k = d["popup.ko"]
assert (k.get("total_us", 0) > 0) == os.path.exists("/dev/popup"), d
' "$T/cost"
"$popupctl" call echo.echo x --connect 127.0.0.1:1 >/dev/null 2>"$T/err"
t_check "popupctl --connect to nothing: exit 1, one line" [ $? = 1 ] && [ "$(wc -l <"$T/err")" = 1 ]

# ---- SIGHUP reload ----
conf="$T/popupd.conf"
printf '[popupd]\nservices = echo\n[limits]\nmax_conns = 100\n' >"$conf"
pd_stop
t_check "SIGTERM: clean exit" [ $? = 0 ]
pd_start --config "$conf" || t_fail "popupd starts with a configuration file"
t_check "config file: max_conns applied" [ "$(pd_stat max_conns)" = 100 ]
printf '[popupd]\nservices = echo\n[limits]\nmax_conns = 200\n' >"$conf"
kill -HUP "$PD_PID"; sleep 0.3
t_check "SIGHUP: max_conns reloaded" [ "$(pd_stat max_conns)" = 200 ]
printf '[popupd]\nservices = echo\n[limits]\nmax_conns = lots\n' >"$conf"
kill -HUP "$PD_PID"; sleep 0.3
t_check "SIGHUP with a bad file: logged, old values kept" bash -c "grep -q 'reload failed' '$T/popupd.log' && [ \"\$(curl -s -X POST --data-binary '' http://127.0.0.1:$HP/popupd/stats | grep -o 'max_conns=[0-9]*')\" = max_conns=200 ]"
pd_stop
t_check "SIGTERM after reloads: clean exit" [ $? = 0 ]

# ---- configuration and plugin checks ----
printf '[popupd]\nservices = echo kv\nport = 7999\n[service.kv]\nthreads = 2\n' >"$conf"
t_check "--check-config accepts a good file" "$popupd" --check-config --config "$conf"
printf '[popupd]\nportt = 1\n' >"$conf"
"$popupd" --check-config --config "$conf" 2>"$T/err"
t_check "--check-config: unknown key exits 2, names the line" [ $? = 2 ] && grep -q "popupd.conf:2: unknown key 'portt'" "$T/err"
"$popupd" --check-config --max-conns 0 2>/dev/null
t_check "--check-config: bad flag value exits 2" [ $? = 2 ]
mkdir -p "$T/plugins"
cat >"$T/nosym.c" <<'C'
int not_a_service = 1;
C
cat >"$T/oldabi.c" <<C
#include "popup/service.h"
static int h(struct popup_svc_call *c) { return 0; }
static const struct popup_svc_method m[] = { { .id = 1, .name = "x", .handler = h } };
POPUP_SVC_DEFINE = { .abi_version = 99, .struct_size = sizeof(struct popup_svc_def),
	.name = "oldabi", .version = 1, .methods = m, .nr_methods = 1 };
C
cc -shared -fPIC -I"$top/include" -o "$T/plugins/nosym.so" "$T/nosym.c" &&
cc -shared -fPIC -I"$top/include" -o "$T/plugins/oldabi.so" "$T/oldabi.c"
t_check "test plugins built" [ -f "$T/plugins/oldabi.so" ]
"$popupd" --check-config --plugin-dir "$T/plugins" -s nosym 2>"$T/err"
t_check "plugin without the symbol: exit 1, named" [ $? = 1 ] && grep -q "has no symbol 'popup_service'" "$T/err"
"$popupd" --check-config --plugin-dir "$T/plugins" -s oldabi 2>"$T/err"
t_check "plugin with another ABI version: exit 1, named" [ $? = 1 ] && grep -q 'built for service ABI 99' "$T/err"
"$popupd" --check-config -s echo,echo 2>"$T/err"
t_check "duplicate service: exit 1, named" [ $? = 1 ] && grep -q 'load it once' "$T/err"
"$popupd" --check-config -s nosuchservice 2>"$T/err"
t_check "missing plugin: exit 1, named" [ $? = 1 ] && grep -q 'cannot load' "$T/err"
"$popupd" --check-config -s files 2>"$T/err"
t_check "files without a root: init refuses at start" [ $? = 1 ] && grep -q 'root' "$T/err"
t_check "no sanitizer report" pd_log_clean
t_done
