#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Sub-call benchmark: popupd's files "get" reading a file's blocks through
# the disk sub-server, one block at a time (files.outstanding = 1) versus 8
# reads outstanding, with disk's EMULATED latency (a 1 ms sleep per read:
# disk.latency_us, not real device I/O) standing in for blocking I/O. Also
# the single-block case: a handler doing 1 ms of blocking I/O through the
# sub-server (plus the 1 ms size call that precedes it).
#
# A closed-loop Python client on the native TCP port (CONNS connections,
# one request outstanding each) measures requests per second and latency
# percentiles from every request's own round trip; every reply's status
# and length are checked, and a run with errors is reported as such.
#
# Usage: scripts/bench/subcall.sh      (as root: runs in its own netns)
#   BUILD=build  DURATION=5 (s per row)  BLOCKS=16  BLOCK=4096
#   LATENCY_US=1000  OUT=dir (also writes $OUT/subcall.md)
# Prints a Markdown table.
set -u
if [ -z "${POPUP_BENCH_NS:-}" ] && [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
	export POPUP_BENCH_NS=1
	exec unshare -n bash -c 'ip link set lo up && exec "$0" "$@"' "$0" "$@"
fi
top=$(cd "$(dirname "$0")/../.." && pwd)
bin=${BUILD:-$top/build}/bin
dur=${DURATION:-5}
blocks=${BLOCKS:-16}
bs=${BLOCK:-4096}
lat=${LATENCY_US:-1000}
tmp=$(mktemp -d)
pid=

cleanup()
{
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	wait 2>/dev/null
	rm -rf "$tmp" "/sys/fs/bpf/popup-bench-subcall-$$"
}
trap cleanup EXIT

[ -x "$bin/popupd" ] || { echo "subcall.sh: $bin/popupd missing; run make" >&2; exit 2; }
mkdir -p "$tmp/root"
head -c $((blocks * bs)) /dev/urandom >"$tmp/root/multi"
head -c "$bs" /dev/urandom >"$tmp/root/one"

# start OUTSTANDING: popupd with files + disk; sets pid and port.
start()
{
	rm -f "$tmp/ports"
	"$bin/popupd" -p 0 --http-port 0 --port-file "$tmp/ports" \
		--pin-dir "/sys/fs/bpf/popup-bench-subcall-$$" -s files,disk \
		--set files.root="$tmp/root" --set disk.root="$tmp/root" \
		--set files.block="$bs" --set files.outstanding="$1" \
		--set disk.latency_us="$lat" >>"$tmp/popupd.log" 2>&1 &
	pid=$!
	for _ in $(seq 50); do
		[ -s "$tmp/ports" ] && break
		sleep 0.1
	done
	port=$(sed -E 's/.*native=([0-9]+).*/\1/' "$tmp/ports" 2>/dev/null)
	[ -n "$port" ] || { echo "subcall.sh: popupd did not start:" >&2; cat "$tmp/popupd.log" >&2; exit 1; }
}

stop()
{
	kill -TERM "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	pid=
}

# load PATH SIZE CONNS: "req/s p50_us p99_us errors" for files get PATH.
load()
{
	python3 - "$port" "$1" "$2" "$3" "$dur" <<'EOF'
import socket, struct, sys, threading, time
port, path, size, conns, dur = int(sys.argv[1]), sys.argv[2].encode(), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
FILES_ID, GET = 3, 3
lat, errors, lock = [], [0], threading.Lock()
def recvn(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError
        b += c
    return b
def client(stop_at, warm_until):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rid, mine, bad = 0, [], 0
    while True:
        t0 = time.monotonic()
        if t0 >= stop_at:
            break
        rid += 1
        s.sendall(struct.pack(">IBBHIIQII", 0x50555031, 1, 0, GET, FILES_ID, 0, rid, len(path), 0) + path)
        h = recvn(s, 32)
        st, r, n = struct.unpack(">I", h[12:16])[0], struct.unpack(">Q", h[16:24])[0], struct.unpack(">I", h[24:28])[0]
        recvn(s, n)
        t1 = time.monotonic()
        if st != 0 or r != rid or n != size:
            bad += 1
        elif t0 >= warm_until:
            mine.append(t1 - t0)
    with lock:
        lat.extend(mine)
        errors[0] += bad
start = time.monotonic()
warm = start + min(1.0, dur / 5)
ths = [threading.Thread(target=client, args=(warm + dur, warm)) for _ in range(conns)]
for t in ths: t.start()
for t in ths: t.join()
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1e6 if lat else 0
print("%.0f %.0f %.0f %d" % (len(lat) / dur, q(0.50), q(0.99), errors[0]))
EOF
}

rows=()
row()	# LABEL OUTSTANDING PATH SIZE CONNS
{
	local r
	start "$2"
	r=($(load "$3" "$4" "$5"))
	stop
	rows+=("| $1 | $2 | $5 | ${r[0]} | ${r[1]} | ${r[2]} | ${r[3]} |")
}

row "get, $blocks x $((bs / 1024)) KiB blocks" 1 multi $((blocks * bs)) 1
row "get, $blocks x $((bs / 1024)) KiB blocks" 8 multi $((blocks * bs)) 1
row "get, $blocks x $((bs / 1024)) KiB blocks" 1 multi $((blocks * bs)) 8
row "get, $blocks x $((bs / 1024)) KiB blocks" 8 multi $((blocks * bs)) 8
row "get, 1 block (1 ms I/O via disk)" 1 one "$bs" 8

backend=$(grep -o 'sub-calls to disk: [^)]*)' "$tmp/popupd.log" | tail -n1)
{
	echo "### Sub-calls: files get through the disk sub-server"
	echo
	echo "Emulated disk latency ${lat} us per read (a sleep), ${dur} s per row after warm-up,"
	echo "closed-loop native TCP client; $(nproc) CPUs, kernel $(uname -r); ${backend:-sub-call path unknown}."
	echo "Each get also makes one size call (one more latency) before its block reads."
	echo
	echo "| workload | outstanding | conns | req/s | p50 us | p99 us | errors |"
	echo "|---|---:|---:|---:|---:|---:|---:|"
	printf '%s\n' "${rows[@]}"
} >"$tmp/subcall.md"
cat "$tmp/subcall.md"
if [ -n "${OUT:-}" ]; then
	mkdir -p "$OUT"
	cp "$tmp/subcall.md" "$OUT/subcall.md"
fi
