#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# popupd's HTTP/1.1 port, end to end with real clients (curl, socat, wrk):
# every status code the contract names, keep-alive and pipelining, the
# example services (echo, kv, files with its path confinement, sleep),
# then a clean SIGTERM with no sanitizer report.
set -u
. "$(dirname "$0")/popupd_lib.sh"

mkdir -p "$T/root/sub" "$T/outside"
echo "hello file" >"$T/root/a.txt"
echo "secret" >"$T/outside/secret"
ln -s ../outside/secret "$T/root/escape"
ln -s a.txt "$T/root/inside"

if ! pd_start --no-local -s echo,kv,files,sleep --set files.root="$T/root" \
	--set sleep.threads=1 --set sleep.queue=2 --set sleep.timeout_ms=400; then
	t_fail "popupd starts"
	t_done
	exit
fi
url="http://127.0.0.1:$HP"

# post PATH BODY -> "CODE BODY"
post()
{
	curl -s -m 5 -o "$T/body" -w '%{http_code}' -X POST --data-binary "$2" "$url$1"
	printf ' %s' "$(cat "$T/body")"
}

t_check "echo answers 200 with the body" [ "$(post /echo/echo 'hi there')" = "200 hi there" ]
t_check "X-Popup-Status 0 on success" bash -c "curl -s -i -X POST -d x '$url/echo/echo' | grep -q '^X-Popup-Status: 0'"
t_check "empty body is a valid request" [ "$(post /echo/echo '')" = "200 " ]
t_check "kv put" [ "$(post /kv/put 'color=blue')" = "200 " ]
t_check "kv get" [ "$(post /kv/get 'color')" = "200 blue" ]
t_check "kv get of a missing key is 404" [ "$(post /kv/get 'nope' | cut -d' ' -f1)" = 404 ]
t_check "kv put without '=' is 400" [ "$(post /kv/put 'junk' | cut -d' ' -f1)" = 400 ]
t_check "unknown service is 404" [ "$(post /nosuch/echo x | cut -d' ' -f1)" = 404 ]
t_check "unknown method is 404" [ "$(post /echo/nosuch x | cut -d' ' -f1)" = 404 ]
t_check "no method in the path is 404" [ "$(post /echo x | cut -d' ' -f1)" = 404 ]
t_check "GET is 405" [ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$url/echo/echo")" = 405 ]
head -c 70000 /dev/zero >"$T/big"
t_check "body over max_arg is 413" [ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' -X POST --data-binary @"$T/big" "$url/echo/echo")" = 413 ]
head -c 3000 /dev/urandom | base64 -w0 >"$T/mid"
start=$(date +%s%N)
t_check "curl's Expect: 100-continue body echoes" bash -c "curl -s -m 5 -X POST --data-binary @'$T/mid' '$url/echo/echo' | cmp -s - '$T/mid'"
t_check "100-continue answered without curl's 1 s wait" [ $(( ($(date +%s%N) - start) / 1000000 )) -lt 900 ]

# Malformed requests: 400 and the connection closed.
printf 'POST /echo/echo HTTP/1.1\r\nContent-Length: zz\r\n\r\n' |
	timeout 5 socat -t 2 - "TCP:127.0.0.1:$HP" >"$T/bad" 2>/dev/null
t_check "malformed Content-Length is 400" grep -q '^HTTP/1.1 400' "$T/bad"
printf 'BLAH\x01\x02 / HTTP/9\r\n\r\n' | timeout 5 socat -t 2 - "TCP:127.0.0.1:$HP" >"$T/bad" 2>/dev/null
t_check "garbage is 400" grep -q '^HTTP/1.1 400' "$T/bad"

# Keep-alive: curl reuses the connection for a second URL.
curl -sv -m 5 -X POST -d a "$url/echo/echo" -X POST -d b "$url/echo/echo" >/dev/null 2>"$T/v"
t_check "keep-alive: curl re-uses the connection" grep -q 'Re-using existing connection' "$T/v"

# Pipelining: three requests in one write, answered in order; the
# middle one (a slow sleep) must not let the third overtake it.
printf 'POST /sleep/sleep HTTP/1.1\r\nContent-Length: 3\r\n\r\n200POST /echo/echo HTTP/1.1\r\nContent-Length: 3\r\n\r\ntwoPOST /echo/echo HTTP/1.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nthree' |
	timeout 12 socat -t 8 - "TCP:127.0.0.1:$HP" >"$T/pipe" 2>/dev/null
t_check "pipelining: three responses" [ "$(grep -o 'HTTP/1.1 200' "$T/pipe" | wc -l)" = 3 ]
t_check "pipelining: in request order" bash -c "tr -d '\r\n' <'$T/pipe' | grep -q 'done in 200 msHTTP.*twoHTTP.*three\$'"

# files: confinement to the root.
t_check "files read" [ "$(post /files/read a.txt)" = "200 hello file" ]
t_check "files follows a symlink inside the root" [ "$(post /files/read inside)" = "200 hello file" ]
t_check "files refuses '..' (403)" [ "$(post /files/read ../outside/secret | cut -d' ' -f1)" = 403 ]
t_check "files refuses absolute paths (403)" [ "$(post /files/read /etc/passwd | cut -d' ' -f1)" = 403 ]
t_check "files refuses a symlink out of the root (403)" [ "$(post /files/read escape | cut -d' ' -f1)" = 403 ]
t_check "files list" bash -c "curl -s -X POST --data-binary '' '$url/files/list' | grep -qx a.txt"

# Deadline: sleep's timeout is 400 ms.
t_check "past the deadline is 504" [ "$(post /sleep/sleep 1500 | cut -d' ' -f1)" = 504 ]
# Overload: 1 thread + 2 queued; 8 concurrent 300 ms sleeps.
for i in $(seq 8); do
	curl -s -m 5 -o /dev/null -w '%{http_code}\n' -X POST -d 300 "$url/sleep/sleep" >"$T/busy.$i" &
done
wait $(jobs -p | grep -v "^$PD_PID\$") 2>/dev/null
t_check "overload answers 503, never drops" [ "$(cat "$T"/busy.* | grep -c 503)" -ge 1 ]
t_check "overload: every request answered 200/503/504" [ "$(cat "$T"/busy.* | grep -cE '^(200|503|504)$')" = 8 ]
t_check "busy replies counted" [ "$(pd_stat busy)" -ge 1 ]

# wrk: a short keep-alive load, no errors.
printf 'wrk.method = "POST"\nwrk.body = "hello wrk"\n' >"$T/post.lua"
wrk -t2 -c16 -d1s -s "$T/post.lua" "$url/echo/echo" >"$T/wrk" 2>&1
sed 's/^/# /' "$T/wrk"
t_check "wrk ran requests" grep -qE '[0-9]+ requests in' "$T/wrk"
t_check "wrk: no non-2xx and no socket errors" bash -c "! grep -qE 'Non-2xx|Socket errors' '$T/wrk'"

pd_stop
t_check "SIGTERM: clean exit" [ $? = 0 ]
t_check "no sanitizer report" pd_log_clean
t_done
