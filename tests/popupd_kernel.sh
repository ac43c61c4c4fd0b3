#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# popupd's native-protocol, arbiter and sub-call suites with popup.ko loaded
# (run inside scripts/vm): popupd then takes UDP requests and native TCP
# connections through the module's arrival path (--arrival=auto picks it:
# the module accepts, popupd parks each connection back, requests arrive as
# pop-up contexts) and exports its services through libpopup's module
# backend, so the same checks as on the host cover kernel-side arrival for
# both protocols, `popupctl call` and `popupctl services` through
# /dev/popup. (The HTTP suite does not touch the module and its timing
# checks are not meaningful under TCG emulation; it runs on the host.)
set -u
here=$(cd "$(dirname "$0")" && pwd)
top=${POPUP_TOP:-$(cd "$here/.." && pwd)}

if [ ! -e /proc/modules ]; then
	echo "ok 1 popupd with the module backend # SKIP kernel without module support"
	exit 4
fi
grep -q '^popup ' /proc/modules || insmod "$top/kmod/popup.ko" || exit 1
for _ in $(seq 100); do [ -c /dev/popup ] && break; sleep 0.02; done

rc=0
for t in popupd_native.sh popupd_arbiter.sh popupd_subcall.sh; do
	echo "# --- $t (module backend)"
	bash "$here/$t" || rc=1
done
# The dispatch models with local callers on popup.ko. Network requests take
# the epoll path here: under kernel arrival a `popup`-model service runs in
# the module's pop-up threads, whose queue does not apply the wire priority
# or the service's own pool (see README, "Dispatch models").
echo "# --- popupd_dispatch (local calls on the module backend, --arrival=user)"
POPUPD_TEST_ARRIVAL=user "${POPUP_TEST_DIR:-$top/build/tests}/popupd_dispatch" || rc=1
# A service whose dispatch model the kernel path cannot keep: --arrival=auto
# stays on epoll and says why, --arrival=kernel refuses to start.
pd=${POPUP_BIN:-$top/build/bin}/popupd
t=$(mktemp -d)
n=0
for mode in auto kernel; do
	timeout 20 "$pd" -s sleep --set sleep.dispatch=per-connection -p 0 --no-http \
		--no-local --arrival "$mode" --pin-dir "/sys/fs/bpf/popup-kt-$$" \
		--stats "$t/stats" >"$t/$mode.log" 2>&1 &
	p=$!
	sleep 3
	kill -TERM $p 2>/dev/null
	wait $p
	echo "exit=$?" >>"$t/$mode.log"
done
n=$((n + 1))
if grep -q "service sleep runs dispatch per-connection" "$t/auto.log" &&
   grep -q "exit=0" "$t/auto.log"; then
	echo "ok $n --arrival=auto keeps a per-connection service on the epoll path"
else
	echo "not ok $n --arrival=auto keeps a per-connection service on the epoll path"; sed 's/^/# /' "$t/auto.log"; rc=1
fi
n=$((n + 1))
if grep -q "cannot keep service sleep's dispatch per-connection" "$t/kernel.log" &&
   ! grep -q "exit=0" "$t/kernel.log"; then
	echo "ok $n --arrival=kernel refuses a per-connection service"
else
	echo "not ok $n --arrival=kernel refuses a per-connection service"; sed 's/^/# /' "$t/kernel.log"; rc=1
fi
rm -rf "$t" "/sys/fs/bpf/popup-kt-$$"
exit $rc
