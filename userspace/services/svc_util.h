/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Small helpers the example service plugins share. Each plugin is built
 * from its one source file into its own .so, so these are static inline
 * and compiled into every plugin that includes them.
 */
#ifndef POPUP_SVC_UTIL_H
#define POPUP_SVC_UTIL_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "popup/service.h"

/* Put @msg (cut to fit) as the call's result: the error text on failure. */
static inline void svc_say(struct popup_svc_call *call, const char *msg)
{
	size_t n = strlen(msg);

	if (n > call->res_cap)
		n = call->res_cap;
	memcpy(call->res, msg, n);
	call->res_len = n;
}

/* Does relative path @path have a ".." component? */
static inline bool svc_path_has_dotdot(const char *path)
{
	const char *p = path;

	while (*p) {
		size_t n = strcspn(p, "/");

		if (n == 2 && p[0] == '.' && p[1] == '.')
			return true;
		p += n;
		p += *p == '/';
	}
	return false;
}

/*
 * Configuration key @key as a number in @min..@max into @out, @def when
 * unset; -EINVAL (logged) when it is not one.
 */
static inline int svc_conf_u32(const struct popup_svc_env *env, const char *key,
			       uint32_t def, uint32_t min, uint32_t max, uint32_t *out)
{
	const char *v = env->get(env, key);
	char *end;
	unsigned long n;

	*out = def;
	if (!v)
		return 0;
	n = strtoul(v, &end, 10);
	if (!*v || *end || v[0] == '-' || n < min || n > max) {
		env->log(env, 3, "invalid %s '%s' (%u..%u)", key, v, min, max);
		return -EINVAL;
	}
	*out = (uint32_t)n;
	return 0;
}

#endif
