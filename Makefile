# SPDX-License-Identifier: GPL-2.0
#
# popup: top-level build. The first two commands a new machine needs:
#   make demo    install what is missing, build, run the main job
#   make check   install what is missing, build, run every test
#
# The module builds through Kbuild (the top Kbuild only descends into kmod/);
# bpf/, userspace/ and tests/ have their own Makefiles, all writing to $(O).

include config.mk

# The guest kernel: the newest Debian linux-image installed under /boot.
GUEST_KVER ?= $(shell ls /boot/vmlinuz-*-amd64 2>/dev/null | sed 's|/boot/vmlinuz-||' | sort -V | tail -n1)
ifneq ($(wildcard /lib/modules/$(shell uname -r)/build),)
KDIR ?= /lib/modules/$(shell uname -r)/build
else
KDIR ?= /usr/src/linux-headers-$(GUEST_KVER)
endif
export GUEST_KVER KDIR

.PHONY: all kmod bpf userspace tests deps check demo bench clean sanitize \
	checkpatch sparse help install

all: kmod bpf userspace tests

help:
	@echo "make [all]       build popup.ko, BPF programs, userspace, tests"
	@echo "make demo        install deps, build, run the main job (VM if needed)"
	@echo "make check       install deps, build, run every test"
	@echo "make bench       run the benchmarks (QUICK=1 for a short run)"
	@echo "make SANITIZE=1  build userspace with ASan/UBSan into $(O)/san"
	@echo "KDIR=$(KDIR)"

deps:
	$(Q)scripts/deps.sh

kmod:
	$(Q)test -d $(KDIR) || { echo "popup: no kernel headers in KDIR=$(KDIR); run scripts/deps.sh" >&2; exit 1; }
	$(Q)$(MAKE) -C $(KDIR) M=$(TOPDIR) W=1 modules

bpf:
	$(Q)$(MAKE) -C bpf O=$(O)

userspace: bpf
	$(Q)$(MAKE) -C userspace O=$(O)

tests: userspace
	$(Q)$(MAKE) -C tests O=$(O)

sanitize: bpf
	$(Q)$(MAKE) -C userspace O=$(O) SANITIZE=1
	$(Q)$(MAKE) -C tests O=$(O) SANITIZE=1

# checkpatch.pl is not in the headers package: take it (with the data files
# it reads) from Debian's linux-source tarball, like the kselftest headers.
CHECKPATCH := $(O)/checkpatch/scripts/checkpatch.pl
$(CHECKPATCH):
	$(Q)mkdir -p $(O)/checkpatch
	$(Q)tar -xJf /usr/src/linux-source-6.1.tar.xz -C $(O)/checkpatch --strip-components=1 \
		linux-source-6.1/scripts/checkpatch.pl linux-source-6.1/scripts/spelling.txt \
		linux-source-6.1/scripts/const_structs.checkpatch
	$(Q)touch $@

checkpatch: $(CHECKPATCH)
	$(Q)perl $(CHECKPATCH) --no-tree --strict --terse -f \
		$(filter-out %.mod.c,$(wildcard kmod/*.c)) kmod/*.h include/uapi/linux/popup.h

sparse:
	$(Q)$(MAKE) -C $(KDIR) M=$(TOPDIR) C=2 W=1 modules

check: deps
	$(Q)$(MAKE) all
	$(Q)$(MAKE) sanitize
	$(Q)scripts/check.sh

demo: deps
	$(Q)$(MAKE) all
	$(Q)scripts/demo.sh

bench: deps
	$(Q)$(MAKE) all
	$(Q)scripts/bench.sh

# make install [PREFIX=/usr/local] [DESTDIR=]: programs, service plugins,
# libpopup and its headers, man pages, the systemd unit, an example
# configuration (never over an existing one) and the DKMS source tree of
# popup.ko under /usr/src/popup-$(POPUP_VERSION).
PREFIX ?= /usr/local
POPUP_VERSION ?= 0.1
BINDIR ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
MANDIR ?= $(PREFIX)/share/man
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
UNITDIR ?= $(LIBDIR)/systemd/system
DKMSDIR ?= /usr/src/popup-$(POPUP_VERSION)

install: userspace
	$(Q)install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) \
		$(DESTDIR)$(LIBDIR)/popup/services $(DESTDIR)$(LIBDIR)/pkgconfig \
		$(DESTDIR)$(INCLUDEDIR)/popup $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/popup $(DESTDIR)$(DKMSDIR)
	$(Q)install -m 0755 $(O)/bin/popupd $(DESTDIR)$(SBINDIR)/popupd
	$(Q)install -m 0755 $(O)/bin/popupctl $(O)/bin/popup-bench $(DESTDIR)$(BINDIR)/
	$(Q)install -m 0755 $(O)/lib/popup/services/*.so $(DESTDIR)$(LIBDIR)/popup/services/
	$(Q)cp -P $(O)/lib/libpopup.so* $(DESTDIR)$(LIBDIR)/
	$(Q)install -m 0644 $(O)/lib/libpopup.a $(DESTDIR)$(LIBDIR)/
	$(Q)install -m 0644 $(O)/lib/libpopup.pc $(DESTDIR)$(LIBDIR)/pkgconfig/
	$(Q)install -m 0644 include/popup/*.h $(DESTDIR)$(INCLUDEDIR)/popup/
	$(Q)install -m 0644 man/popupd.8 man/popupctl.8 $(DESTDIR)$(MANDIR)/man8/
	$(Q)sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
		dist/popupd.service >$(DESTDIR)$(UNITDIR)/popupd.service
	$(Q)test -e $(DESTDIR)$(SYSCONFDIR)/popup/popupd.conf || \
		sed 's|^;plugin_dir = .*|plugin_dir = $(LIBDIR)/popup/services|' \
		dist/popupd.conf >$(DESTDIR)$(SYSCONFDIR)/popup/popupd.conf
	$(Q)cp -r Kbuild kmod include $(DESTDIR)$(DKMSDIR)/
	$(Q)rm -f $(DESTDIR)$(DKMSDIR)/kmod/*.o $(DESTDIR)$(DKMSDIR)/kmod/*.ko \
		$(DESTDIR)$(DKMSDIR)/kmod/*.mod* $(DESTDIR)$(DKMSDIR)/kmod/.*.cmd \
		$(DESTDIR)$(DKMSDIR)/kmod/modules.order $(DESTDIR)$(DKMSDIR)/kmod/Module.symvers
	$(Q)sed 's|@VERSION@|$(POPUP_VERSION)|' dist/dkms.conf >$(DESTDIR)$(DKMSDIR)/dkms.conf
	@echo "installed under $(DESTDIR)$(PREFIX); DKMS sources in $(DESTDIR)$(DKMSDIR)"

clean:
	$(Q)rm -rf $(O)
	$(Q)test ! -d $(KDIR) || $(MAKE) -C $(KDIR) M=$(TOPDIR) clean
