# SPDX-License-Identifier: GPL-2.0
# Shared build settings, included by the top Makefile and by each part's
# Makefile (bpf/, userspace/, tests/). Everything generated goes under $(O).

TOPDIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
TOPDIR := $(abspath $(TOPDIR))
O ?= $(TOPDIR)/build
override O := $(abspath $(O))

# SANITIZE=1 builds userspace with ASan and UBSan into $(O)/san.
ifeq ($(SANITIZE),1)
UO := $(O)/san
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
else
UO := $(O)
SAN_FLAGS :=
endif

CC ?= cc
CLANG ?= clang
BPFTOOL ?= bpftool
ARCH := $(shell uname -m | sed 's/x86_64/x86/;s/aarch64/arm64/')

CFLAGS ?= -O2 -g
CFLAGS += -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
	  -D_GNU_SOURCE -pthread $(SAN_FLAGS) \
	  -I$(TOPDIR)/include -I$(O)/bpf -I$(TOPDIR)/userspace/common
LDFLAGS += -pthread $(SAN_FLAGS)

ifeq ($(V),1)
Q :=
msg :=
else
Q := @
msg = @printf '  %-8s %s\n' "$(1)" "$(patsubst $(O)/%,%,$(2))";
endif
