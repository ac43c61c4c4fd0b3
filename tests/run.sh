#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Run test programs and print one TAP stream for them all.
#
# C tests are kselftest_harness.h programs: their KTAP output is indented
# under our own "ok N name" line, and their "# Totals:" line is parsed so
# the final count is of individual test cases, not of programs. Shell
# tests (*.sh) report their own cases through tests/lib.sh ("ok"/"not ok"
# lines) and are counted the same way.
#
# --vm: module tests; a skipped case is counted as a failure there, since
# the VM exists precisely so that those tests can run.
set -u

vm=0
dir=.
while [ $# -gt 0 ]; do
	case "$1" in
	--vm) vm=1; shift ;;
	--dir) dir="$2"; shift 2 ;;
	*) break ;;
	esac
done

here=$(cd "$(dirname "$0")" && pwd)
dir=$(cd "$dir" && pwd)
export POPUP_TEST_DIR=$dir	# shell tests run the C programs from here
export POPUP_TOP=$(cd "$here/.." && pwd)
export POPUP_BUILD=${POPUP_BUILD:-$POPUP_TOP/build}
pass=0 fail=0 skip=0 n=0 flaky=0
echo "TAP version 13"
echo "1..$#"
for t in "$@"; do
	n=$((n + 1))
	case "$t" in
	*.sh) cmd=(bash "$here/$t") ;;
	*) cmd=("$dir/$t") ;;
	esac
	out=$(mktemp)
	timeout --kill-after=10 "${POPUP_TEST_TIMEOUT:-600}" "${cmd[@]}" >"$out" 2>&1
	rc=$?
	retried=
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 4 ] && [ -z "${POPUP_NO_RETRY:-}" ]; then
		# These machines are small and noisy (2 CPUs, a TCG guest): a
		# program that fails gets one more run, and both are shown. A
		# pass on the retry is reported as flaky, never silently.
		sed 's/^/# first attempt: /' "$out"
		timeout --kill-after=10 "${POPUP_TEST_TIMEOUT:-600}" "${cmd[@]}" >"$out" 2>&1
		rc=$?
		retried=1
	fi
	sed 's/^/# /' "$out"
	# kselftest harness: "# Totals: pass:5 fail:0 xfail:0 xpass:0 skip:0 error:0"
	tot=$(grep -E '^# Totals: pass:' "$out" | tail -n1)
	if [ -n "$tot" ]; then
		p=$(sed -E 's/.*Totals: pass:([0-9]+).*/\1/' <<<"$tot")
		f=$(sed -E 's/.* fail:([0-9]+).*/\1/' <<<"$tot")
		s=$(sed -E 's/.*skip:([0-9]+).*/\1/' <<<"$tot")
		e=$(sed -E 's/.*error:([0-9]+).*/\1/' <<<"$tot")
		f=$((f + e))
	else
		p=$(grep -cE '^ok [0-9]+' "$out")
		f=$(grep -cE '^not ok [0-9]+' "$out")
		s=$(grep -cE '^ok [0-9]+ .*# SKIP' "$out")
		p=$((p - s))
	fi
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 4 ] && [ "$f" -eq 0 ]; then
		f=1	# crashed, timed out or failed outside any case
	fi
	if [ "$vm" = 1 ] && [ "$s" -gt 0 ]; then
		f=$((f + s)); s=0
	fi
	if [ $((p + f + s)) -eq 0 ]; then
		f=1	# a test that ran no case did not pass
	fi
	pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
	if [ "$f" -gt 0 ]; then
		echo "not ok $n $t (exit $rc)"
	elif [ -n "$retried" ]; then
		echo "ok $n $t # flaky: failed once, passed on retry"
		flaky=$((flaky + 1))
	else
		echo "ok $n $t"
	fi
	rm -f "$out"
done
# Machine-readable tally for scripts/check.sh, which prints the final line.
echo "# tally: pass=$pass fail=$fail skip=$skip flaky=$flaky"
[ "$fail" -eq 0 ]
