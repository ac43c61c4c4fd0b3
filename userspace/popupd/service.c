// SPDX-License-Identifier: GPL-2.0
/*
 * Built-in services. "echo" (service 1, method 1) answers with the request
 * payload; it is what the walking skeleton's demo and tests drive.
 */
#include <errno.h>
#include <string.h>

#include "popupd.h"

#define ECHO_METHOD_ECHO 1

static int echo_handle(uint16_t method, const void *in, uint32_t len,
		       void *out, uint32_t cap, uint32_t *out_len)
{
	if (method != ECHO_METHOD_ECHO)
		return -ENOSYS;
	if (len > cap)
		return -E2BIG;
	memcpy(out, in, len);
	*out_len = len;
	return 0;
}

static const struct popupd_service services[] = {
	{ .id = 1, .name = "echo", .handle = echo_handle },
};

const struct popupd_service *popupd_service_find(uint32_t id)
{
	for (size_t i = 0; i < sizeof(services) / sizeof(services[0]); i++)
		if (services[i].id == id)
			return &services[i];
	return NULL;
}
