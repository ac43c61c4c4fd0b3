#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# `make demo`: run the main job (scripts/demo-run.sh) where popup.ko can be
# loaded. A host with module support and headers for its running kernel
# runs it directly; any other host (the CI and development machines, whose
# kernel has no module support) runs it in the QEMU guest of scripts/vm.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
if [ -e /proc/modules ] && [ -d "/lib/modules/$(uname -r)/build" ]; then
	echo "demo: running on this host ($(uname -r))"
	exec "$top/scripts/demo-run.sh"
fi
echo "demo: this kernel ($(uname -r)) cannot load modules; running in the VM"
exec "$top/scripts/vm" --timeout 300 -- "$top/scripts/demo-run.sh"
