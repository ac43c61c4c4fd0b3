#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# popup.ko load/unload cycles (run inside scripts/vm): 100 loads and unloads
# with the device used in between, the module refusing to unload while a
# file is open (.owner = THIS_MODULE), and a kernel that is still untainted
# by warnings (W) or oopses (D) at the end. Slab leaks in the module's own
# caches show up as "still has objects" in dmesg, which scripts/vm checks.
set -u
. "$(dirname "$0")/lib.sh"
top=${POPUP_TOP:-$(cd "$(dirname "$0")/.." && pwd)}
build=${POPUP_BUILD:-$top/build}
ko=$top/kmod/popup.ko
ctl=$build/bin/popupctl

if [ ! -e /proc/modules ]; then
	t_skip "kmod_reload: kernel without module support; run in scripts/vm"
	t_done
	exit
fi
grep -q '^popup ' /proc/modules && rmmod popup

tainted_bad()
{
	local t
	t=$(cat /proc/sys/kernel/tainted)
	[ $((t & (128 | 512))) -ne 0 ]
}

ok=1
for i in $(seq 1 100); do
	if ! insmod "$ko"; then ok=0; echo "# cycle $i: insmod failed"; break; fi
	for _ in $(seq 50); do [ -c /dev/popup ] && break; sleep 0.02; done
	if ! "$ctl" version >/dev/null; then ok=0; echo "# cycle $i: version ioctl failed"; fi
	if ! rmmod popup; then ok=0; echo "# cycle $i: rmmod failed"; break; fi
	if [ -e /dev/popup ]; then sleep 0.1; fi
	if [ -e /dev/popup ] || grep -q '^popup ' /proc/modules; then
		ok=0; echo "# cycle $i: module or device still present after rmmod"
	fi
done
[ $ok = 1 ] && t_pass "load, version ioctl, unload x100" || t_fail "load, version ioctl, unload x100"

insmod "$ko"
for _ in $(seq 50); do [ -c /dev/popup ] && break; sleep 0.02; done
exec 9</dev/popup
if rmmod popup 2>/dev/null; then
	t_fail "rmmod refused while /dev/popup is open"
	insmod "$ko"
else
	t_pass "rmmod refused while /dev/popup is open"
fi
exec 9<&-
t_check "rmmod succeeds once the file is closed" rmmod popup

if tainted_bad; then
	t_fail "kernel not tainted D or W (tainted=$(cat /proc/sys/kernel/tainted))"
else
	t_pass "kernel not tainted D or W"
fi
t_done
