// SPDX-License-Identifier: LGPL-2.1 OR BSD-2-Clause
/*
 * echo: answers every request with its own bytes. Service id 1, method 1,
 * as the walking skeleton's demo and popup-bench expect. It never blocks,
 * so it runs inline on the network worker that received the request: the
 * cheapest path popupd has, and the one the benchmarks measure.
 */
#include <errno.h>
#include <string.h>

#include "popup/service.h"

static int echo(struct popup_svc_call *call)
{
	if (call->req_len > call->res_cap)
		return -E2BIG;
	memcpy(call->res, call->req, call->req_len);
	call->res_len = call->req_len;
	return 0;
}

static const struct popup_svc_method methods[] = {
	{ .id = 1, .name = "echo", .max_arg = 65536, .max_res = 65536,
	  .flags = POPUP_SVC_M_IDEMPOTENT, .handler = echo },
};

POPUP_SVC_DEFINE = {
	.abi_version = POPUP_SVC_ABI_VERSION,
	.struct_size = sizeof(struct popup_svc_def),
	.name = "echo",
	.version = 1,
	.id = 1,
	.methods = methods,
	.nr_methods = sizeof(methods) / sizeof(methods[0]),
	.dispatch = POPUP_SVC_DISPATCH_INLINE,
};
