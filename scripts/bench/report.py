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

# ---- repeated runs ------------------------------------------------------------
REPS = int(m.get("reps") or 1)


def runs(name):
    """The run names of one system: NAME.r1 .. NAME.rN."""
    return ["%s.r%d" % (name, r) for r in range(1, REPS + 1)]


def failed_runs(name):
    msgs = [f for f in (failed(n) for n in runs(name)) if f]
    return "; ".join(sorted(set(msgs))) or None


def median(v):
    v = sorted(v)
    n = len(v)
    if not n:
        return None
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def aggregate(results):
    """Median of every numeric figure over the runs that produced one, the
    req/s spread, and the name of the run closest to the median (its
    histogram makes the CDF plot)."""
    got = [(n, r) for n, r in results if r is not None]
    if not got:
        return None
    a = {"runs": len(got)}
    for k, v in got[0][1].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            a[k] = median([r[k] for _, r in got if k in r])
    for k in ("errors", "timeouts", "late", "missed"):
        if k in got[0][1]:
            a[k] = sum(r.get(k, 0) for _, r in got)
    rps = [r["rps"] for _, r in got]
    a["rps_min"], a["rps_max"] = min(rps), max(rps)
    a["median_run"] = min(got, key=lambda x: abs(x[1]["rps"] - a["rps"]))[0]
    return a


def spread(a):
    if a is None or a["runs"] < 2:
        return "-"
    return "%s-%s" % (fmt(a["rps_min"], 0), fmt(a["rps_max"], 0))


def nruns(a):
    return "%d/%d" % (a["runs"] if a else 0, REPS)


if REPS > 1:
    w("Sections 1 to 3: each system ran %d times, interleaved with the others "
      "(A B C A B C ...); each figure is the median over the runs, req/s also with "
      "its min-max over the runs; errors, late and missed sends are summed over "
      "the runs." % REPS)
else:
    w("Sections 1 to 3: one run per system (QUICK), so no median and no spread.")
w("")

# ---- 1. HTTP ---------------------------------------------------------------
w("## 1. HTTP/1.1, tiny keep-alive request/response (wrk)")
w("")
w("`wrk -t %s -c %s --latency`, POST of %s bytes to `/echo/echo`; popupd echoes it "
  "through its echo service, the epoll server echoes it, nginx answers `return 200` "
  "with a %s-byte body."
  % (m.get("nbench"), m.get("wrk_conns"), m.get("body"), m.get("body")))
w("")
w("| system | runs | req/s | req/s min-max | p50 us | p99 us | p99.9 us | errors | req/s vs popupd | p99 vs popupd |")
w("|---|---|---|---|---|---|---|---|---|---|")
http = [("popupd (HTTP port, BPF steering)", "http-popupd"),
        ("nginx %s (reuseport, %s workers, return 200)" % (m.get("nginx"), m.get("nbench")),
         "http-nginx"),
        ("popup-epoll-server (shared listener, epoll loop per thread)", "http-epoll")]
hagg = {name: aggregate([(n, wrk(n)) for n in runs(name)]) for _, name in http}
base = hagg["http-popupd"]
cdf_http = []
for label, name in http:
    r = hagg[name]
    f = failed_runs(name)
    if r is None:
        w("| %s | 0/%d | not measured: %s | | | | | | | |" % (label, REPS, f or "no wrk output"))
        continue
    note = " (%s)" % f if f else ""
    w("| %s%s | %s | %s | %s | %s | %s | %s | %d | %s | %s |"
      % (label, note, nruns(r), fmt(r["rps"]), spread(r), fmt(r["p50_us"]), fmt(r["p99_us"]),
         fmt(r["p999_us"]), r["errors"], ratio(r["rps"], base and base["rps"]),
         ratio(r["p99_us"], base and base["p99_us"])))
    cdf_http.append((label.split(" (")[0], path(r["median_run"], ".wrk"), 1, 2))
n = hagg["http-nginx"]
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
w("One client thread pinned per CPU, %s connections (flows) each with one request "
  "outstanding (so %s in flight per CPU), %s-byte echo; latency from popup-bench's "
  "log-linear histogram." % (m.get("conns"), m.get("conns"), m.get("body")))
w("")
w("| system | proto | runs | req/s | req/s min-max | p50 us | p90 us | p99 us | p99.9 us | errors | req/s vs popupd | p99 vs popupd |")
w("|---|---|---|---|---|---|---|---|---|---|---|---|")
native = [("popupd, BPF cpu steering", "popupd-bpf"),
          ("popupd --no-bpf (reuseport hash)", "popupd-hash"),
          ("popup-epoll-server (shared listener)", "epoll")]
cdf_native = []
nagg = {}
for proto in ("tcp", "udp"):
    rows = native + ([("popup-udp-floor (recvmmsg/sendmmsg echo)", "floor")] if proto == "udp" else [])
    for _, key in rows:
        name = "%s-%s" % (proto, key)
        nagg[name] = aggregate([(n, load(n)) for n in runs(name)])
    b = nagg["%s-popupd-bpf" % proto]
    for label, key in rows:
        name = "%s-%s" % (proto, key)
        r = nagg[name]
        f = failed_runs(name)
        if r is None:
            w("| %s | %s | 0/%d | not measured: %s | | | | | | | | |"
              % (label, proto.upper(), REPS, f or "no output"))
            continue
        warns = [open(path(n, ".warn")).read().strip()[:120] for n in runs(name)
                 if os.path.exists(path(n, ".warn"))]
        warn = " (%s)" % "; ".join(sorted(set(warns))) if warns else ""
        w("| %s%s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %s | %s |"
          % (label, warn, proto.upper(), nruns(r), fmt(r["rps"]), spread(r), fmt(r["p50_us"]),
             fmt(r["p90_us"]), fmt(r["p99_us"]), fmt(r["p999_us"]), r["errors"] + r["timeouts"],
             ratio(r["rps"], b and b["rps"]), ratio(r["p99_us"], b and b["p99_us"])))
        cdf_native.append(("%s %s" % (label.split(",")[0].split(" (")[0], proto.upper())
                           + (" hash" if key == "popupd-hash" else ""),
                           path(r["median_run"], ".hist"), 1, 3))
w("")
w("![native latency CDF](native-cdf.png)")
w("")

# ---- 2b. open loop ------------------------------------------------------------
w("## 3. Native protocol, open loop at a fixed rate (popup-bench --rate)")
w("")
w("The same clients send on a fixed schedule (the rate split evenly over the pinned "
  "client threads, round-robin over their connections, pipelined), whether or not "
  "replies came back; latency runs from each request's intended send time, so a "
  "stall is not hidden (no coordinated omission). The rate is a quarter of the slower "
  "system's median closed-loop rate above, so both run below saturation. Late: sent "
  "more than 1 ms behind schedule; missed: due in the window, never sent.")
w("")
w("| system | proto | runs | target req/s | achieved req/s | p50 us | p90 us | p99 us | p99.9 us | errors + timeouts | late | missed | p99 vs popupd | p99.9 vs popupd |")
w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
cdf_open = []
for proto in ("tcp", "udp"):
    if failed("%s-open" % proto):
        w("| all | %s | 0/%d | not measured: %s | | | | | | | | | | |"
          % (proto.upper(), REPS, failed("%s-open" % proto)))
        continue
    oagg = {k: aggregate([(n, load(n)) for n in runs("%s-open-%s" % (proto, k))])
            for k in ("popupd", "epoll")}
    b = oagg["popupd"]
    for label, key in (("popupd, BPF cpu steering", "popupd"),
                       ("popup-epoll-server (shared listener)", "epoll")):
        r = oagg[key]
        name = "%s-open-%s" % (proto, key)
        if r is None:
            w("| %s | %s | 0/%d | not measured: %s | | | | | | | | | | |"
              % (label, proto.upper(), REPS, failed_runs(name) or "no output"))
            continue
        w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %d | %d | %s | %s |"
          % (label, proto.upper(), nruns(r), fmt(float(r.get("target_rps", 0)), 0),
             fmt(r["rps"]), fmt(r["p50_us"]), fmt(r["p90_us"]), fmt(r["p99_us"]),
             fmt(r["p999_us"]), r["errors"] + r["timeouts"], r.get("late", 0),
             r.get("missed", 0), ratio(r["p99_us"], b and b["p99_us"]),
             ratio(r["p999_us"], b and b["p999_us"])))
        cdf_open.append(("%s %s" % (label.split(",")[0].split(" (")[0], proto.upper()),
                         path(r["median_run"], ".hist"), 1, 3))
w("")
w("![open-loop latency CDF](open-cdf.png)")
w("")

# ---- 3. balance and locality ------------------------------------------------


def balance_table(title, names_of, goal):
    """One row per system and protocol from popupctl-style statistics."""
    out_rows = []
    w("| system | proto | per-CPU share %% | max/min | min locality | total requests%s |"
      % (" | goals (max/min <= 1.10, locality >= 99 %)" if goal else ""))
    w("|---|---|---|---|---|---|%s" % ("---|" if goal else ""))
    for proto in ("tcp", "udp"):
        rows = native + ([("popup-udp-floor (reuseport hash)", "floor")]
                         if proto == "udp" and not goal else [])
        for label, key in rows:
            stats = [(n, load(n + ".stats")) for n in names_of("%s-%s" % (proto, key))]
            stats = [(n, s) for n, s in stats if s is not None]
            if not stats:
                name = names_of("%s-%s" % (proto, key))[0]
                w("| %s | %s | not measured: %s | | | |%s"
                  % (label, proto.upper(), failed(name) or failed_runs(name.rsplit(".r", 1)[0])
                     or "no statistics", " |" if goal else ""))
                continue
            bals = [s.get("balance") for _, s in stats]
            bal = None if None in bals else median(bals)
            locs = [c["locality"] for _, s in stats for c in s["cpus"]
                    if c.get("live", True) and c.get("locality") is not None]
            # the shares shown: the run whose balance is the median one
            mid = stats[0][1] if bal is None else min(stats, key=lambda x: abs(x[1]["balance"] - bal))[1]
            cpus = [c for c in mid["cpus"] if c.get("live", True)]
            shares = [100 * c["share"] for c in cpus]
            bal_txt = "inf" if bal is None else "%.3f" % bal
            if len(stats) > 1 and None not in bals:
                bal_txt += " (%.3f-%.3f)" % (min(bals), max(bals))
            cells = [label, proto.upper(), " / ".join("%.1f" % x for x in shares), bal_txt,
                     "%.1f %%" % (100 * min(locs)) if locs else "-",
                     fmt(float(mid.get("total", 0)), 0)]
            if goal:
                met = [("balance " + ("met" if bal is not None and bal <= 1.10 else "not met"))]
                if locs:
                    met.append("locality " + ("met" if min(locs) >= 0.99 else "not met"))
                cells.append(", ".join(met))
            w("| " + " | ".join(cells) + " |")
            out_rows.append(("%s_%s" % (label.split(" (")[0].replace(",", "").replace(" ", "_"),
                                        proto.upper()), shares))
    return out_rows


w("## 4. Balance and locality (same runs as section 2)")
w("")
w("Per-CPU share of the requests served, max/min over the workers (median over the "
  "runs, with their min-max), and locality (the lowest over workers and runs): "
  "for popupd, `popupctl stats` (BPF selection counters and SO_INCOMING_CPU samples: "
  "served on the CPU that received it); for the epoll server and the UDP floor, "
  "requests served on the CPU of the pinned client that sent them, which on "
  "loopback is the receiving CPU. Goals: max/min at most 1.10, locality at least 99 %.")
w("")
share_rows = balance_table("same runs", runs, False)
w("")
w("![per-CPU share](share.png)")
w("")
if m.get("bal_secs"):
    w("### Over a %s s uniform run" % m.get("bal_secs"))
    w("")
    w("One run of %s s per system, clients pinned one per CPU, %s connections each, "
      "closed loop: the issue's balance and locality goals are judged here."
      % (m.get("bal_secs"), m.get("conns")))
    w("")
    balance_table("uniform", lambda n: ["bal-" + n], True)
    w("")

# ---- 4. local calls ---------------------------------------------------------
w("## 5. Local null calls (popup-bench local)")
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
w("## 6. Pop-up elasticity (popup-bench elastic)")
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

# ---- sections other scripts wrote into the output folder ----------------------
extra = [("arrival.md", "Kernel vs user arrival (from the VM)"),
         ("dispatch.md", "Dispatch models"),
         ("subcall.md", "Sub-calls")]
sec = 7
for fname, title in extra:
    p = os.path.join(out, fname)
    if not os.path.exists(p):
        continue
    with open(p, errors="replace") as f:
        body = f.read().strip("\n")
    # their headings become sub-headings of this section (not in code blocks)
    fenced, lines_in = False, []
    for l in body.split("\n"):
        if l.startswith("```"):
            fenced = not fenced
        lines_in.append("##" + l if l.startswith("#") and not fenced else l)
    body = "\n".join(lines_in)
    w("## %d. %s (%s)" % (sec, title, fname))
    w("")
    w(body)
    w("")
    sec += 1
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
cdf_plot("open-cdf", "native protocol, open loop: latency CDF from intended send time", cdf_open)
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
