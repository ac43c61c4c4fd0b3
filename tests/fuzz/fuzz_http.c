// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target: HTTP/1.1 request handling (http.c over
 * libhttp-parser), through popupd's connection code. See fuzz_conn.h.
 */
#include "fuzz_conn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fz_run(data, size, PROTO_HTTP);
}
