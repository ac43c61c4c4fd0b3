#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Run every test suite and print one closing line "N passed, N failed".
#
#   1. native tests on the host kernel (BPF steering, libpopup's userspace
#      backend, the VM harness itself), built normally;
#   2. the same native tests built with ASan/UBSan (make SANITIZE=1);
#   3. module tests inside the QEMU guest (scripts/vm) on Debian's kernel,
#      plus the native suite again there, on the 6.1 kernel.
#
# Each suite prints TAP through tests/run.sh, which ends with a
# "# tally: pass=P fail=F skip=S" line that is summed here. A suite that
# dies before its tally (a guest panic, a timeout) counts as one failure.
set -u
cd "$(dirname "$0")/.."
top=$(pwd)
O=${O:-$top/build}
export POPUP_BUILD=$O

pass=0 fail=0 skip=0 flaky=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

suite()
{
	local name=$1
	shift
	echo "### $name"
	"$@" 2>&1 | tee "$log"
	local tally
	tally=$(grep -E '^# tally: ' "$log" | tail -n1)
	if [ -z "$tally" ]; then
		echo "not ok - $name: no tally (the suite crashed or timed out)"
		fail=$((fail + 1))
		return
	fi
	pass=$((pass + $(sed -E 's/.*pass=([0-9]+).*/\1/' <<<"$tally")))
	fail=$((fail + $(sed -E 's/.*fail=([0-9]+).*/\1/' <<<"$tally")))
	skip=$((skip + $(sed -E 's/.*skip=([0-9]+).*/\1/' <<<"$tally")))
	flaky=$((flaky + $(sed -E 's/.*flaky=([0-9]+).*/\1/' <<<"$tally")))
}

native=$(make -s -C tests print-native)
vmtests=$(make -s -C tests print-vm)

suite "native" tests/run.sh --dir "$O/tests" $native
suite "native, ASan/UBSan" env POPUP_BIN="$O/san/bin" \
	tests/run.sh --dir "$O/san/tests" $(make -s -C tests print-san)
suite "vm: module tests" scripts/vm --smp "${POPUP_VM_SMP:-4}" --timeout 1500 -- \
	tests/run.sh --vm --dir "$O/tests" $vmtests
suite "vm: native tests on the guest kernel" scripts/vm --timeout 900 -- \
	tests/run.sh --dir "$O/tests" $(make -s -C tests print-native-vm)

[ "$flaky" -eq 0 ] || echo "note: $flaky test program(s) failed once and passed on retry (see '# flaky' above)"
if [ "$skip" -gt 0 ]; then
	echo "$pass passed, $fail failed, $skip skipped"
else
	echo "$pass passed, $fail failed"
fi
[ "$fail" -eq 0 ]
