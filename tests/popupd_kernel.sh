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
exit $rc
