#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The demo as a test (run inside scripts/vm): scripts/demo-run.sh must
# succeed, and its output must show every worker served requests, the BPF
# counters, popupd's threads and the balance summary.
set -u
. "$(dirname "$0")/lib.sh"
top=${POPUP_TOP:-$(cd "$(dirname "$0")/.." && pwd)}
out=$(mktemp)
if [ ! -e /proc/modules ]; then
	t_skip "demo: kernel without module support; run in scripts/vm"
	t_done
	exit
fi
POPUP_DEMO_SECONDS=1 "$top/scripts/demo-run.sh" >"$out" 2>&1
rc=$?
sed 's/^/# /' "$out"
[ $rc -eq 0 ] && t_pass "demo runs end to end" || t_fail "demo runs end to end (exit $rc)"
t_check "demo shows bpftool per-CPU values" grep -q '"values"\|value' "$out"
t_check "demo shows popupd threads with ps -L" grep -q 'popupd-w0' "$out"
t_check "demo prints the balance ratio" grep -q 'balance max/min' "$out"
t_check "bench saw no errors" bash -c "! grep -E 'errors [1-9]|timeouts [1-9]' '$out'"
rm -f "$out"
t_done
