// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target: the native protocol on a TCP connection (native.c),
 * through popupd's connection code. See fuzz_conn.h.
 */
#include "fuzz_conn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fz_run(data, size, PROTO_NATIVE);
}
