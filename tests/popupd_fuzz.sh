#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Build popupd's libFuzzer targets (tests/fuzz/) with clang, ASan and
# UBSan, and run each briefly over its checked-in corpus: the native
# protocol and HTTP request handling, through popupd's real connection
# code. New inputs go to a scratch directory, never into the tree. A crash,
# a sanitizer report or a leak fails the case; so does a target that
# cannot be built.
set -u
. "$(dirname "$0")/popupd_lib.sh"

build=${POPUP_BUILD:-$top/build}
runs=${POPUP_FUZZ_RUNS:-20000}
if ! command -v clang >/dev/null; then
	t_fail "clang is installed (scripts/deps.sh)"
	t_done
	exit
fi
srcs=""
for f in config service pool worker native http local stats arbiter subcall; do
	srcs="$srcs $top/userspace/popupd/$f.c"
done
srcs="$srcs $top/userspace/common/log.c $top/userspace/common/cpus.c"
for target in native http; do
	bin="$T/fuzz_$target"
	if ! clang -O1 -g -std=gnu11 -D_GNU_SOURCE -pthread -Wall -Wno-unused-parameter \
		-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
		-I"$top/include" -I"$top/userspace/common" -I"$top/userspace/popupd" \
		-I"$build/bpf" $srcs "$top/tests/fuzz/fuzz_$target.c" "$build/lib/libpopup.a" \
		-lhttp_parser -linih -ldl -o "$bin" >"$T/cc.$target" 2>&1; then
		sed 's/^/# /' "$T/cc.$target"
		t_fail "fuzz_$target builds"
		continue
	fi
	t_pass "fuzz_$target builds"
	mkdir -p "$T/new.$target"
	POPUP_PLUGIN_DIR="$build/lib/popup/services" \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=halt_on_error=1 \
		timeout 300 "$bin" -runs="$runs" -max_len=8192 -timeout=10 \
		-artifact_prefix="$T/" \
		"$T/new.$target" "$top/tests/fuzz/corpus/$target" >"$T/run.$target" 2>&1
	rc=$?
	tail -n 3 "$T/run.$target" | sed 's/^/# /'
	if [ $rc -eq 0 ] && grep -q "^Done $runs runs" "$T/run.$target"; then
		t_pass "fuzz_$target: $runs runs, no crash, leak or UB"
	else
		grep -E 'ERROR|SUMMARY|runtime error' "$T/run.$target" | head -n 20 | sed 's/^/# /'
		t_fail "fuzz_$target: $runs runs, no crash, leak or UB (exit $rc)"
	fi
done
t_done
