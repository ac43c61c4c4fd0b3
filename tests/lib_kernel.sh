#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# libpopup's functional tests against the module backend (run inside
# scripts/vm): load popup.ko and run lib_call, lib_pool and lib_subcall with
# POPUP_BACKEND=kernel, so both backends pass the same suite. The two
# programs' KTAP is indented and their totals summed into one Totals line.
set -u
top=${POPUP_TOP:-$(cd "$(dirname "$0")/.." && pwd)}
dir=${POPUP_TEST_DIR:-${POPUP_BUILD:-$top/build}/tests}

if [ ! -e /proc/modules ]; then
	echo "# Totals: pass:0 fail:0 xfail:0 xpass:0 skip:1 error:0"
	exit 4
fi
grep -q '^popup ' /proc/modules || insmod "$top/kmod/popup.ko" || exit 1
for _ in $(seq 100); do [ -c /dev/popup ] && break; sleep 0.02; done

pass=0 fail=0 skip=0
for t in lib_call lib_pool lib_subcall; do
	out=$(POPUP_BACKEND=kernel timeout 300 "$dir/$t" 2>&1)
	rc=$?
	sed 's/^/# /' <<<"$out"
	tot=$(grep -E '^# Totals: pass:' <<<"$out" | tail -n1)
	if [ -z "$tot" ]; then
		fail=$((fail + 1))
		continue
	fi
	pass=$((pass + $(sed -E 's/.*Totals: pass:([0-9]+).*/\1/' <<<"$tot")))
	fail=$((fail + $(sed -E 's/.* fail:([0-9]+).*/\1/' <<<"$tot")))
	fail=$((fail + $(sed -E 's/.*error:([0-9]+).*/\1/' <<<"$tot")))
	skip=$((skip + $(sed -E 's/.*skip:([0-9]+).*/\1/' <<<"$tot")))
	if [ $rc -ne 0 ] && [ $rc -ne 4 ] && ! grep -qE ' fail:[1-9]' <<<"$tot"; then
		fail=$((fail + 1))	# crashed after its last case
	fi
done
echo "# Totals: pass:$pass fail:$fail xfail:0 xpass:0 skip:$skip error:0"
[ $fail -eq 0 ]
