#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Turn scripts/bench.sh's raw results into summary.md and gnuplot scripts.

Usage: report.py RAW_DIR OUT_DIR

Every figure comes from a file in RAW_DIR written by this run; a system
whose server did not start or whose run failed has a NAME.fail file and its
row says so instead of disappearing. The gnuplot scripts (OUT_DIR/*.gp) are
run by bench.sh and make the PNGs the summary links to.
"""
import json
import os
import sys

raw, out = sys.argv[1], sys.argv[2]


def path(name, ext):
    return os.path.join(raw, name + ext)


def load(name, ext=".json"):
    try:
        with open(path(name, ext)) as f:
            text = f.read().strip()
        try:
            return json.loads(text)
        except ValueError:
            return json.loads(text.splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None


def failed(name):
    try:
        with open(path(name, ".fail")) as f:
            return f.read().strip() or "failed"
    except OSError:
        return None


def wrk(name):
    """The JSON summary line the wrk script wrote, or None."""
    try:
        with open(path(name, ".wrk")) as f:
            first = f.readline()
        return json.loads(first.lstrip("# "))
    except (OSError, ValueError):
        return None


def fmt(v, nd=1):
    if v is None:
        return "-"
    if isinstance(v, float) and v >= 1000:
        return "{:,.0f}".format(v)
    return "{:.{}f}".format(v, nd)


def ratio(a, b, nd=2):
    if a is None or b is None or b == 0:
        return "-"
    r = a / b
    return "{:.{}f}x".format(r, nd if r >= 0.1 else 3 if r >= 0.001 else 5)


m = load("machine") or {}
lines = []
w = lines.append
w("# popup benchmark report")
w("")
w("- date: %s; %s run (%s s per network row after %s s warm-up; %s local calls "
  "per row here, %s in the guest); the whole run took %s s"
  % (m.get("date"), "QUICK" if m.get("quick") else "full", m.get("secs"), m.get("warmup"),
     m.get("iters"), m.get("vm_iters"), m.get("elapsed")))
w("- machine: %s, %s online CPUs; kernel %s; virtualisation: %s; meltdown: %s"
  % (m.get("cpu"), m.get("ncpu"), m.get("kernel"), m.get("virt"), m.get("mitigations")))
w("- every server ran on CPUs %s (%s workers); the load generators ran on the same "
  "CPUs of the same machine (no second machine): client cost is in every figure, "
  "so compare ratios, not absolute numbers" % (m.get("cpus"), m.get("nbench")))
w("- tools: %s, nginx %s, popup-bench (this tree)" % (m.get("wrk"), m.get("nginx")))
w("")

# ---- 1. HTTP ---------------------------------------------------------------
w("## 1. HTTP/1.1, tiny keep-alive request/response (wrk)")
w("")
w("`wrk -t %s -c %s --latency`, POST of %s bytes to `/echo/echo`; popupd echoes it "
  "through its echo service, the epoll server echoes it, nginx answers `return 200` "
  "with a %s-byte body."
  % (m.get("nbench"), m.get("wrk_conns"), m.get("body"), m.get("body")))
w("")
w("| system | req/s | p50 us | p99 us | p99.9 us | errors | req/s vs popupd | p99 vs popupd |")
w("|---|---|---|---|---|---|---|---|")
http = [("popupd (HTTP port, BPF steering)", "http-popupd"),
        ("nginx %s (reuseport, %s workers, return 200)" % (m.get("nginx"), m.get("nbench")),
         "http-nginx"),
        ("popup-epoll-server (shared listener, epoll loop per thread)", "http-epoll")]
base = wrk("http-popupd")
cdf_http = []
for label, name in http:
    r = wrk(name)
    f = failed(name)
    if r is None:
        w("| %s | not measured: %s | | | | | | |" % (label, f or "no wrk output"))
        continue
    note = " (%s)" % f if f else ""
    w("| %s%s | %s | %s | %s | %s | %d | %s | %s |"
      % (label, note, fmt(r["rps"]), fmt(r["p50_us"]), fmt(r["p99_us"]), fmt(r["p999_us"]),
         r["errors"], ratio(r["rps"], base and base["rps"]),
         ratio(r["p99_us"], base and base["p99_us"])))
    cdf_http.append((label.split(" (")[0], path(name, ".wrk"), 1, 2))
n = wrk("http-nginx")
if base and n:
    w("")
    w("Goal: popupd at least 1.2x nginx's req/s on the same cores: measured %s (%s)."
      % (ratio(base["rps"], n["rps"]), "met" if base["rps"] >= 1.2 * n["rps"] else "not met"))
w("")
w("![HTTP latency CDF](http-cdf.png)")
w("")

# ---- 2. native protocol ----------------------------------------------------
w("## 2. Native protocol over loopback (popup-bench, closed loop)")
w("")
w("One client thread pinned per CPU, %s connections (flows) each, one request "
  "outstanding, %s-byte echo; latency from popup-bench's log-linear histogram."
  % (m.get("conns"), m.get("body")))
w("")
w("| system | proto | req/s | p50 us | p90 us | p99 us | p99.9 us | errors | req/s vs popupd | p99 vs popupd |")
w("|---|---|---|---|---|---|---|---|---|---|")
native = [("popupd, BPF cpu steering", "popupd-bpf"),
          ("popupd --no-bpf (reuseport hash)", "popupd-hash"),
          ("popup-epoll-server (shared listener)", "epoll")]
cdf_native = []
for proto in ("tcp", "udp"):
    rows = native + ([("popup-udp-floor (recvmmsg/sendmmsg echo)", "floor")] if proto == "udp" else [])
    b = load("%s-popupd-bpf" % proto)
    for label, key in rows:
        name = "%s-%s" % (proto, key)
        r = load(name)
        f = failed(name)
        if r is None:
            w("| %s | %s | not measured: %s | | | | | | | |" % (label, proto, f or "no output"))
            continue
        warn = ""
        if os.path.exists(path(name, ".warn")):
            warn = " (%s)" % open(path(name, ".warn")).read().strip()[:120]
        w("| %s%s | %s | %s | %s | %s | %s | %s | %d | %s | %s |"
          % (label, warn, proto.upper(), fmt(r["rps"]), fmt(r["p50_us"]), fmt(r["p90_us"]),
             fmt(r["p99_us"]), fmt(r["p999_us"]), r["errors"] + r["timeouts"],
             ratio(r["rps"], b and b["rps"]), ratio(r["p99_us"], b and b["p99_us"])))
        cdf_native.append(("%s %s" % (label.split(",")[0].split(" (")[0], proto.upper())
                           + (" hash" if key == "popupd-hash" else ""),
                           path(name, ".hist"), 1, 3))
w("")
w("![native latency CDF](native-cdf.png)")
w("")

# ---- 3. balance and locality ------------------------------------------------
w("## 3. Balance and locality (same runs as section 2)")
w("")
w("Per-CPU share of the requests served, max/min over the workers, and locality: "
  "for popupd, `popupctl stats` (BPF selection counters and SO_INCOMING_CPU samples: "
  "served on the CPU that received it); for the epoll server and the UDP floor, "
  "requests served on the CPU of the pinned client that sent them, which on "
  "loopback is the receiving CPU. Goals: max/min at most 1.10, locality at least 99 %.")
w("")
w("| system | proto | per-CPU share % | max/min | min locality | total requests |")
w("|---|---|---|---|---|---|")
share_rows = []
for proto in ("tcp", "udp"):
    rows = native + ([("popup-udp-floor (reuseport hash)", "floor")] if proto == "udp" else [])
    for label, key in rows:
        name = "%s-%s" % (proto, key)
        s = load(name + ".stats")
        if s is None:
            w("| %s | %s | not measured: %s | | | |" % (label, proto.upper(),
                                                       failed(name) or "no statistics"))
            continue
        cpus = [c for c in s["cpus"] if c.get("live", True)]
        shares = [100 * c["share"] for c in cpus]
        loc = [c["locality"] for c in cpus if c.get("locality") is not None]
        bal = s.get("balance")
        w("| %s | %s | %s | %s | %s | %s |"
          % (label, proto.upper(), " / ".join("%.1f" % x for x in shares),
             "inf" if bal is None else "%.3f" % bal,
             "%.1f %%" % (100 * min(loc)) if loc else "-", fmt(float(s.get("total", 0)), 0)))
        share_rows.append(("%s_%s" % (label.split(" (")[0].replace(",", "").replace(" ", "_"),
                                      proto.upper()), shares))
w("")
w("![per-CPU share](share.png)")
w("")

# ---- 4. local calls ---------------------------------------------------------
w("## 4. Local null calls (popup-bench local)")
w("")
w("A pinned client thread makes synchronous null calls (8-byte argument) to a "
  "server thread; same-CPU: both on one CPU, cross-CPU: two CPUs. Exact "
  "percentiles over every call. \"vs Unix socket\" is the Unix-socket p50 "
  "divided by this p50 in the same environment and pinning (higher is better; "
  "goal for popup.ko: at least 3x).")
w("")
w("| environment | mechanism | same-CPU p50 us | same-CPU p99 us | calls/s | vs Unix socket | cross-CPU p50 us | cross-CPU p99 us | vs Unix socket |")
w("|---|---|---|---|---|---|---|---|---|")
vm_note = "VM, TCG emulation" if "TCG" in (open(path("vm", ".notes")).read()
                                             if os.path.exists(path("vm", ".notes")) else "") \
    else "VM (scripts/vm)"
envs = [("this machine", "host", [("libpopup, user backend", "popup-user"),
                                   ("Unix socket ping-pong", "unix"), ("pipe ping-pong", "pipe"),
                                   ("futex hand-off", "futex")]),
        (vm_note, "vm", [("popup.ko (libpopup kernel backend)", "popup-kernel"),
                         ("libpopup, user backend", "popup-user"),
                         ("Unix socket ping-pong", "unix"), ("pipe ping-pong", "pipe"),
                         ("futex hand-off", "futex")])]
cdf_local = []
for env, pre, mechs in envs:
    if pre == "vm" and failed("vm"):
        w("| %s | not measured: %s | | | | | | | |" % (env, failed("vm")))
        continue
    u = {t: load("%s-unix-%s" % (pre, t)) for t in ("same", "cross")}
    for label, key in mechs:
        cells = []
        for t in ("same", "cross"):
            name = "%s-%s-%s" % (pre, key, t)
            r = load(name)
            if r is None or "failed" in r:
                msg = (r or {}).get("failed") or failed(name) or "no output"
                cells.append(["not measured: %s" % msg[:80], "", ""] + ([""] if t == "same" else []))
                continue
            sp = ratio(u[t] and u[t]["p50_us"], r["p50_us"])
            if t == "same":
                cells.append([fmt(r["p50_us"], 2), fmt(r["p99_us"], 2), fmt(r["calls_per_s"]), sp])
                if os.path.exists(path(name, ".cdf")):
                    cdf_local.append(("%s: %s" % ("VM" if pre == "vm" else "host", label.split(" (")[0]),
                                      path(name, ".cdf"), 1, 3))
            else:
                cells.append([fmt(r["p50_us"], 2), fmt(r["p99_us"], 2), sp])
        w("| %s | %s | %s |" % (env, label, " | ".join(c for cs in cells for c in cs)))
if os.path.exists(path("vm", ".notes")):
    w("")
    w("Guest: %s." % "; ".join(open(path("vm", ".notes")).read().split("\n")[:-1]))
w("")
w("![local call latency CDF, same CPU](local-cdf.png)")
w("")

# ---- 5. elasticity ----------------------------------------------------------
w("## 5. Pop-up elasticity (popup-bench elastic)")
w("")
w("A burst of N clients each makes one blocking call (the handler sleeps), pool "
  "min_idle 1, max_threads N+1; time until N handlers run at once; time after "
  "the burst until the pool is back at its minimum; then one client calls in a "
  "loop and threads spawned per second are counted (goal: 0). Settings: `%s`."
  % m.get("elastic"))
w("")
w("| environment | backend | burst N | all N served after ms | peak busy | threads after burst | back to min after ms (idle timeout ms) | steady calls | spawns/s steady |")
w("|---|---|---|---|---|---|---|---|---|")
for env, name in (("this machine", "host-elastic-user"), ("this machine", "host-elastic-kernel"),
                  (vm_note, "vm-elastic-kernel"), (vm_note, "vm-elastic-user")):
    r = load(name)
    if r is None and not failed(name) and not (name.startswith("vm") and failed("vm")):
        continue   # host kernel backend: no /dev/popup here
    if r is None or "failed" in r:
        msg = (r or {}).get("failed") or failed(name) or failed("vm")
        w("| %s | %s | not measured: %s | | | | | | |" % (env, name.split("-")[-1], msg))
        continue
    w("| %s | %s | %d | %s | %d | %d | %s (%d) | %d | %.2f |"
      % (env, r["backend"], r["burst"],
         fmt(r["burst_served_ms"], 2) if r["burst_served_ms"] >= 0 else "never",
         r["peak_busy"], r["threads_after_burst"],
         fmt(r["back_to_min_ms"], 0) if r["back_to_min_ms"] >= 0 else "never",
         r["idle_timeout_ms"], r["steady_calls"], r["spawns_per_s"]))
w("")
w("Raw results: `build/bench/out/raw/`. Reproduce: `make bench` (or `make bench QUICK=1`).")

with open(os.path.join(out, "summary.md"), "w") as f:
    f.write("\n".join(lines) + "\n")

# ---- plots ------------------------------------------------------------------


def cdf_plot(name, title, series, xlabel="latency (us, log scale)"):
    series = [s for s in series if os.path.exists(s[1]) and os.path.getsize(s[1])]
    gp = os.path.join(out, name + ".gp")
    if not series:
        if os.path.exists(gp):
            os.remove(gp)
        return
    with open(gp, "w") as f:
        f.write('set terminal png size 900,560 noenhanced\n')
        f.write('set output "%s.png"\nset title "%s"\nset logscale x\n' % (name, title))
        f.write('set xlabel "%s"\nset ylabel "fraction of requests"\n' % xlabel)
        f.write('set key right bottom\nset grid\nset yrange [0:1.02]\n')
        f.write("plot " + ", \\\n     ".join(
            '"%s" using %d:%d with lines lw 2 title "%s"' % (p, x, y, t)
            for t, p, x, y in series) + "\n")


cdf_plot("http-cdf", "HTTP keep-alive latency CDF (wrk)", cdf_http)
cdf_plot("native-cdf", "native protocol latency CDF (popup-bench)", cdf_native)
cdf_plot("local-cdf", "local null call latency CDF, same CPU", cdf_local)
if share_rows:
    ncol = max(len(s) for _, s in share_rows)
    dat = os.path.join(out, "share.dat")
    with open(dat, "w") as f:
        f.write("system " + " ".join("cpu%d" % i for i in range(ncol)) + "\n")
        for label, s in share_rows:
            f.write(label + " " + " ".join("%.2f" % x for x in s + [0] * (ncol - len(s))) + "\n")
    with open(os.path.join(out, "share.gp"), "w") as f:
        f.write('set terminal png size 1000,620 noenhanced\nset output "share.png"\n')
        f.write('set title "per-CPU share of requests served (even = %.1f %%)"\n' % (100.0 / ncol))
        f.write('set style data histograms\nset style histogram clustered gap 1\n')
        f.write('set style fill solid 0.8 border -1\nset ylabel "share %"\nset yrange [0:*]\n')
        f.write('set xtics rotate by -30 scale 0\nset grid ytics\nset key top right\n')
        f.write('set bmargin 11\n')
        f.write("plot " + ", ".join('"share.dat" using %d:xtic(1) title columnheader(%d)'
                                    % (i + 2, i + 2) for i in range(ncol)) + "\n")
