#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Install every Debian package popup needs to build, test and benchmark.
# Idempotent: packages already present are not touched, and apt-get only
# runs when something is missing, so a second run costs one dpkg query.
set -eu

PKGS="make gcc clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev pkg-config
linux-headers-amd64 linux-image-amd64 linux-source-6.1 xz-utils
qemu-system-x86 busybox-static iproute2 cpio kmod
libhttp-parser-dev libinih-dev
socat curl wrk nginx-light gnuplot-nox strace procps util-linux sparse
libclang-rt-14-dev python3"

missing=""
for p in $PKGS; do
	st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[ "$st" = "installed" ] || missing="$missing $p"
done

if [ -z "$missing" ]; then
	echo "deps: all packages present"
	exit 0
fi

if [ "$(id -u)" != 0 ]; then
	echo "deps: missing packages:$missing; run 'sudo scripts/deps.sh'" >&2
	exit 1
fi

echo "deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
