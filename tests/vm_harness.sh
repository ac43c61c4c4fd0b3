#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Test of scripts/vm itself, run natively on the host: every module test
# trusts the harness to report the guest's exit status, to show output,
# to give the guest the CPUs and filesystems asked for, to keep the host
# untouched and to never hang. Boots are kept few (each costs seconds
# under TCG): one boot answers several questions where it can.
set -u
# shellcheck disable=SC2015 # t_pass never fails

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
# shellcheck source=tests/lib.sh
. "$here/lib.sh"
vm=$top/scripts/vm
cd "$top" || exit 1

# Exit status comes back unchanged, not just as "non-zero".
"$vm" -- sh -c 'exit 3' >/dev/null 2>&1
rc=$?
[ "$rc" -eq 3 ] && t_pass "exit status 3 propagates" || t_fail "exit status 3 propagates (got $rc)"

"$vm" -- false >/dev/null 2>&1
rc=$?
[ "$rc" -ne 0 ] && t_pass "false fails" || t_fail "false fails (got $rc)"

# One boot for the environment checks: each prints a tagged line, parsed
# below, so a failure names the exact property that broke.
marker=vm-harness-$$-$RANDOM
host_probe=/tmp/$marker.host-must-not-see
out=$("$vm" --smp 3 --timeout 120 -- sh -c "
	echo 'MARK $marker'
	echo \"NPROC \$(nproc)\"
	echo \"BPFFS \$(stat -f -c %T /sys/fs/bpf)\"
	echo x >$host_probe && echo \"TMPW ok\"
	echo \"INVM \${POPUP_IN_VM:-}\"
	echo \"PASS \${POPUP_HARNESS_PROBE:-}\"
	echo \"CWD \$(pwd)\"
	grep -q slub_debug /proc/cmdline && echo 'DEBUG on'
" 2>&1 </dev/null)
rc=$?
val() { sed -n "s/^$1 //p" <<<"$out" | head -n1; }
[ "$rc" -eq 0 ] && t_pass "environment boot succeeds" || { t_fail "environment boot succeeds (got $rc)"; sed 's/^/# /' <<<"$out"; }
[ "$(val MARK)" = "$marker" ] && t_pass "command output is shown" || t_fail "command output is shown"
[ "$(val NPROC)" = 3 ] && t_pass "nproc matches --smp 3" || t_fail "nproc matches --smp 3 (got '$(val NPROC)')"
[ "$(val BPFFS)" = bpf_fs ] && t_pass "/sys/fs/bpf is bpffs" || t_fail "/sys/fs/bpf is bpffs (got '$(val BPFFS)')"
if [ "$(val TMPW)" = ok ] && [ ! -e "$host_probe" ]; then
	t_pass "/tmp is writable and private to the guest"
else
	t_fail "/tmp is writable and private to the guest"
	rm -f "$host_probe"
fi
[ "$(val INVM)" = 1 ] && t_pass "POPUP_IN_VM=1 is set" || t_fail "POPUP_IN_VM=1 is set"
[ "$(val DEBUG)" = on ] && t_pass "tests boot with the allocator debug checks" || t_fail "tests boot with the allocator debug checks"
[ "$(val CWD)" = "$top" ] && t_pass "command runs in the caller's directory" || t_fail "command runs in the caller's directory (got '$(val CWD)')"

# Streaming: a line printed before a 12 s sleep must reach us about 12 s
# before the guest finishes; a harness that buffers until power-off would
# deliver everything at once. The same boot checks POPUP_* pass-through
# and that --no-debug (benchmarks) boots without the debug checks.
exec {fd}< <(POPUP_HARNESS_PROBE=passed "$vm" --no-debug --timeout 120 -- \
	sh -c 'echo "EARLY $POPUP_HARNESS_PROBE $(grep -c slub_debug /proc/cmdline)"; sleep 12; echo LATE' 2>&1 </dev/null)
first= seen=
while IFS= read -r line <&"$fd"; do
	case "$line" in
	EARLY*) first=$line; break ;;
	*) seen="${seen:+$seen | }${line:0:100}" ;;	# for a failure's message
	esac
done
t_early=$(date +%s)
cat <&"$fd" >/dev/null
t_end=$(date +%s)
exec {fd}<&-
lag=$((t_end - t_early))
seen=${seen:$(( ${#seen} > 300 ? ${#seen} - 300 : 0 ))}
[ -n "$first" ] && [ "$lag" -ge 8 ] && t_pass "output is streamed live (first line ${lag}s before the end)" ||
	t_fail "output is streamed live (first line '${first}' ${lag}s before the end; before it: '$seen')"
[ "${first% *}" = "EARLY passed" ] && t_pass "POPUP_* variables are passed to the guest" ||
	t_fail "POPUP_* variables are passed to the guest (got '$first')"
[ "${first##* }" = 0 ] && t_pass "--no-debug boots without slub_debug" ||
	t_fail "--no-debug boots without slub_debug (got '$first')"

# A hung guest is killed at --timeout and reported, within the bound.
t0=$(date +%s)
"$vm" --timeout 20 -- sleep 1000 >/dev/null 2>&1
rc=$?
el=$(( $(date +%s) - t0 ))
[ "$rc" -eq 124 ] && t_pass "hung guest reported as timeout (124)" || t_fail "hung guest reported as timeout (got $rc)"
[ "$el" -le 30 ] && t_pass "hung guest killed within bound (${el}s <= 30s)" || t_fail "hung guest killed within bound (${el}s)"

t_done
