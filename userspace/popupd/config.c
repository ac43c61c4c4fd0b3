// SPDX-License-Identifier: GPL-2.0
/*
 * popupd's configuration: defaults, then the file (INI, parsed by libinih),
 * then command-line flags, which always win. The same three steps run again
 * on SIGHUP, so a reload sees exactly what a restart would.
 *
 * File layout (dist/popupd.conf documents every key):
 *   [popupd]            ports, bind address, CPUs, services, pins, log level
 *   [limits]            connection, size and time limits
 *   [service.<name>]    pool overrides (threads, queue, timeout_ms, id,
 *                       dispatch, path) and the service's own keys
 *   [arbiter.<name>]    a service served by subservers (arbiter.c checks
 *                       the keys)
 *   [subserver]         front = HOST:PORT, asks = N (subserver.c)
 * An unknown section or key is an error: a typo must not silently keep a
 * default. Errors name the file and line.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ini.h>

#include "cpus.h"
#include "log.h"
#include "popupd.h"

void config_defaults(struct popupd_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->port = 7070;
	cfg->http_port = 7080;
	cfg->bind_addr = strdup("0.0.0.0");
	cfg->pin_dir = strdup("/sys/fs/bpf/popup");
	cfg->stats_path = strdup(POPUP_STATS_PATH);
	cfg->use_bpf = true;
	cfg->local = true;
	cfg->log_level = LOG_LVL_INFO;
	cfg->arbiter_port = 7071;
	CPU_ZERO(&cfg->cpus);
	cfg->lim = (struct popupd_limits){
		.max_conns = 16384,
		.max_request = 65536,
		.max_header = 8192,
		.max_output = 256 * 1024,
		.max_inflight = 64,
		.idle_timeout_ms = 60000,
		.request_timeout_ms = 10000,
		.write_timeout_ms = 10000,
		.stop_timeout_ms = 10000,
	};
}

static void free_services(struct popupd_config *cfg)
{
	for (unsigned int i = 0; i < cfg->nr_services; i++)
		free(cfg->services[i]);
	free(cfg->services);
	cfg->services = NULL;
	cfg->nr_services = 0;
}

static void free_svc_conf(struct popupd_svc_conf *sc)
{
	struct popupd_svc_conf *nsc;
	struct popupd_kv *kv, *nkv;

	for (; sc; sc = nsc) {
		nsc = sc->next;
		for (kv = sc->kv; kv; kv = nkv) {
			nkv = kv->next;
			free(kv->key);
			free(kv->value);
			free(kv);
		}
		free(sc->name);
		free(sc);
	}
}

void config_free(struct popupd_config *cfg)
{
	free_svc_conf(cfg->arb_conf);
	free(cfg->subserver_of);
	free(cfg->arbiter_bind);
	free(cfg->config_path);
	free(cfg->bind_addr);
	free(cfg->pin_dir);
	free(cfg->stats_path);
	free(cfg->port_file);
	free(cfg->plugin_dir);
	free_services(cfg);
	free_svc_conf(cfg->svc_conf);
	memset(cfg, 0, sizeof(*cfg));
}

int parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
	unsigned long long v;
	char *end;

	if (!*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "yes", "true", "on", "1" };
	static const char *const no[] = { "no", "false", "off", "0" };

	for (size_t i = 0; i < 4; i++) {
		if (!strcasecmp(s, yes[i])) {
			*out = true;
			return 0;
		}
		if (!strcasecmp(s, no[i])) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

static int parse_arrival(const char *s, int *out)
{
	static const char *const names[] = {
		[ARRIVAL_AUTO] = "auto", [ARRIVAL_KERNEL] = "kernel", [ARRIVAL_USER] = "user",
	};

	for (int i = 0; i < 3; i++) {
		if (!strcmp(s, names[i])) {
			*out = i;
			return 0;
		}
	}
	return -EINVAL;
}

static int parse_port(const char *s, int *out)
{
	uint32_t v;

	if (parse_u32(s, 0, 65535, &v))
		return -EINVAL;
	*out = v;
	return 0;
}

static int set_str(char **dst, const char *s)
{
	char *d = strdup(s);

	if (!d)
		return -ENOMEM;
	free(*dst);
	*dst = d;
	return 0;
}

/* "echo kv,files" -> names; a name must be a valid service name. */
static int parse_services(struct popupd_config *cfg, const char *list)
{
	char *copy = strdup(list), *tok, *save = NULL;
	int err = 0;

	if (!copy)
		return -ENOMEM;
	free_services(cfg);
	for (tok = strtok_r(copy, " ,\t", &save); tok; tok = strtok_r(NULL, " ,\t", &save)) {
		char **nv;

		if (strlen(tok) >= POPUP_SVC_NAME_MAX || strspn(tok,
		    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != strlen(tok)) {
			err = -EINVAL;
			break;
		}
		nv = realloc(cfg->services, (cfg->nr_services + 1) * sizeof(*nv));
		if (!nv || !(tok = strdup(tok))) {
			err = -ENOMEM;
			break;
		}
		cfg->services = nv;
		cfg->services[cfg->nr_services++] = tok;
	}
	free(copy);
	return err;
}

/* Limits, by name, for [limits] and the matching --flags. */
static const struct {
	const char *name;
	size_t off;
	uint32_t min, max;
} limit_keys[] = {
#define L(n, lo, hi) { #n, offsetof(struct popupd_limits, n), lo, hi }
	L(max_conns, 1, 1 << 20),
	L(max_request, 0, POPUP_SVC_MAX_MSG),
	L(max_header, 256, 1 << 20),
	L(max_output, 4096, 64 << 20),
	L(max_inflight, 1, 4096),
	L(idle_timeout_ms, 1, 86400000),
	L(request_timeout_ms, 1, 86400000),
	L(write_timeout_ms, 1, 86400000),
	L(stop_timeout_ms, 1, 3600000),
#undef L
};

static int set_limit(struct popupd_limits *lim, const char *name, const char *val)
{
	for (size_t i = 0; i < sizeof(limit_keys) / sizeof(limit_keys[0]); i++) {
		if (strcmp(name, limit_keys[i].name))
			continue;
		return parse_u32(val, limit_keys[i].min, limit_keys[i].max,
				 (uint32_t *)((char *)lim + limit_keys[i].off));
	}
	return -ENOENT;
}

static struct popupd_svc_conf *svc_conf_get(struct popupd_svc_conf **head, const char *name)
{
	struct popupd_svc_conf *sc;

	for (sc = *head; sc; sc = sc->next)
		if (!strcmp(sc->name, name))
			return sc;
	sc = calloc(1, sizeof(*sc));
	if (!sc || !(sc->name = strdup(name))) {
		free(sc);
		return NULL;
	}
	sc->next = *head;
	*head = sc;
	return sc;
}

static int conf_list_set(struct popupd_svc_conf **head, const char *svc, const char *key,
			 const char *value)
{
	struct popupd_svc_conf *sc = svc_conf_get(head, svc);
	struct popupd_kv *kv;

	if (!sc)
		return -ENOMEM;
	for (kv = sc->kv; kv; kv = kv->next)
		if (!strcmp(kv->key, key))
			return set_str(&kv->value, value);
	kv = calloc(1, sizeof(*kv));
	if (!kv)
		return -ENOMEM;
	kv->key = strdup(key);
	kv->value = strdup(value);
	if (!kv->key || !kv->value) {
		free(kv->key);
		free(kv->value);
		free(kv);
		return -ENOMEM;
	}
	kv->next = sc->kv;
	sc->kv = kv;
	return 0;
}

static int svc_conf_set(struct popupd_config *cfg, const char *svc, const char *key,
			const char *value)
{
	return conf_list_set(&cfg->svc_conf, svc, key, value);
}

/* [subserver] keys */
static int set_subserver_key(struct popupd_config *cfg, const char *k, const char *v)
{
	if (!strcmp(k, "front"))
		return strchr(v, ':') ? set_str(&cfg->subserver_of, v) : -EINVAL;
	if (!strcmp(k, "asks"))
		return parse_u32(v, 1, 256, &cfg->subserver_asks);
	return -ENOENT;
}

const char *config_svc_get(const struct popupd_config *cfg, const char *svc,
			   const char *key)
{
	for (const struct popupd_svc_conf *sc = cfg->svc_conf; sc; sc = sc->next) {
		if (strcmp(sc->name, svc))
			continue;
		for (const struct popupd_kv *kv = sc->kv; kv; kv = kv->next)
			if (!strcmp(kv->key, key))
				return kv->value;
	}
	return NULL;
}

/* [popupd] keys; returns -ENOENT for an unknown key. */
static int set_main_key(struct popupd_config *cfg, const char *k, const char *v)
{
	enum log_level lvl;
	uint32_t u;

	if (!strcmp(k, "port"))
		return parse_port(v, &cfg->port);
	if (!strcmp(k, "http_port")) {
		if (!strcasecmp(v, "off") || !strcasecmp(v, "none")) {
			cfg->http_port = -1;
			return 0;
		}
		return parse_port(v, &cfg->http_port);
	}
	if (!strcmp(k, "bind"))
		return set_str(&cfg->bind_addr, v);
	if (!strcmp(k, "cpus")) {
		cfg->cpus_set = true;
		return cpus_parse(v, &cfg->cpus) ? -EINVAL : 0;
	}
	if (!strcmp(k, "bpf"))
		return parse_bool(v, &cfg->use_bpf);
	if (!strcmp(k, "pin_dir")) {
		cfg->pin_dir_set = true;
		return set_str(&cfg->pin_dir, v);
	}
	if (!strcmp(k, "local"))
		return parse_bool(v, &cfg->local);
	if (!strcmp(k, "arrival"))
		return parse_arrival(v, &cfg->arrival);
	if (!strcmp(k, "stats"))
		return set_str(&cfg->stats_path, v);
	if (!strcmp(k, "arbiter_port"))
		return parse_port(v, &cfg->arbiter_port);
	if (!strcmp(k, "arbiter_bind"))
		return set_str(&cfg->arbiter_bind, v);
	if (!strcmp(k, "port_file"))
		return set_str(&cfg->port_file, v);
	if (!strcmp(k, "plugin_dir"))
		return set_str(&cfg->plugin_dir, v);
	if (!strcmp(k, "services"))
		return parse_services(cfg, v);
	if (!strcmp(k, "log_level")) {
		if (log_parse_level(v, &lvl))
			return -EINVAL;
		cfg->log_level = lvl;
		return 0;
	}
	if (!strcmp(k, "max_payload"))	/* older name of max_request */
		return parse_u32(v, 0, POPUP_SVC_MAX_MSG, &u) ? -EINVAL :
		       (cfg->lim.max_request = u, 0);
	return -ENOENT;
}

struct ini_ctx {
	struct popupd_config *cfg;
	char err[200];
};

static int ini_cb(void *user, const char *section, const char *name, const char *value)
{
	struct ini_ctx *ctx = user;
	int err;

	if (!*section || !strcmp(section, "popupd"))
		err = set_main_key(ctx->cfg, name, value);
	else if (!strcmp(section, "limits"))
		err = set_limit(&ctx->cfg->lim, name, value);
	else if (!strncmp(section, "service.", 8) && section[8])
		err = svc_conf_set(ctx->cfg, section + 8, name, value);
	else if (!strncmp(section, "arbiter.", 8) && section[8])
		err = conf_list_set(&ctx->cfg->arb_conf, section + 8, name, value);
	else if (!strcmp(section, "subserver"))
		err = set_subserver_key(ctx->cfg, name, value);
	else
		err = -ESRCH;
	if (!err)
		return 1;
	if (ctx->err[0])
		return 0;	/* keep the first error */
	if (err == -ESRCH)
		snprintf(ctx->err, sizeof(ctx->err), "unknown section [%s]", section);
	else if (err == -ENOENT)
		snprintf(ctx->err, sizeof(ctx->err), "unknown key '%s' in [%s]", name,
			 *section ? section : "popupd");
	else
		snprintf(ctx->err, sizeof(ctx->err), "invalid value '%s' for '%s'", value, name);
	return 0;
}

int config_load_file(struct popupd_config *cfg, const char *path)
{
	struct ini_ctx ctx = { .cfg = cfg };
	int line = ini_parse(path, ini_cb, &ctx);

	if (line == -1) {
		fprintf(stderr, "popupd: cannot open the configuration %s: %s\n", path,
			strerror(errno));
		return -ENOENT;
	}
	if (line) {
		fprintf(stderr, "popupd: %s:%d: %s\n", path, line,
			ctx.err[0] ? ctx.err : "syntax error");
		return -EINVAL;
	}
	return set_str(&cfg->config_path, path);
}

static void usage(FILE *f)
{
	fprintf(f,
"usage: popupd [options]\n"
"  -f, --config FILE        configuration file (INI; flags override it)\n"
"      --check-config       validate configuration and services, then exit\n"
"  -p, --port PORT          native protocol port, TCP and UDP (7070; 0: any)\n"
"      --http-port PORT     HTTP port (7080; 0: any)\n"
"      --no-http            do not serve HTTP\n"
"      --port-file FILE     write 'native=P http=P' there once bound\n"
"  -b, --bind ADDR          IPv4 address to bind (0.0.0.0)\n"
"  -c, --cpus LIST          worker CPUs, e.g. 0-2,5 (default: online)\n"
"  -s, --services LIST      services to load, e.g. echo,kv (default: echo)\n"
"      --plugin-dir DIR     where <service>.so live\n"
"      --set SVC.KEY=VALUE  a [service.SVC] key, e.g. files.root=/srv\n"
"      --no-bpf             do not attach the steering program (kernel hash)\n"
"      --pin-dir DIR        bpffs directory for pins (/sys/fs/bpf/popup)\n"
"      --no-local           do not export services through libpopup\n"
"      --arbiter-port PORT  where subservers connect ([arbiter.*] only; 7071)\n"
"      --subserver-of HOST:PORT  also serve this front popupd's arbiter\n"
"      --subserver-asks N   requests asked for at once as a subserver (4)\n"
"      --arrival MODE       UDP arrival: kernel (popup.ko contexts), user\n"
"                           (epoll), auto: kernel when the module offers it\n"
"      --stats PATH         statistics file (" POPUP_STATS_PATH ")\n"
"      --max-payload N      largest request payload in bytes (65536)\n"
"      --LIMIT N            any [limits] key, e.g. --max-conns 100,\n"
"                           --idle-timeout-ms 5000 (see popupd(8))\n"
"  -l, --log-level LVL      error, warn, info or debug (info)\n"
"  -h, --help\n");
}

/* --set files.root=/srv */
static int parse_set(struct popupd_config *cfg, const char *arg)
{
	const char *dot = strchr(arg, '.'), *eq = strchr(arg, '=');
	char svc[POPUP_SVC_NAME_MAX], key[64];

	if (!dot || !eq || eq < dot || dot == arg || eq == dot + 1 ||
	    (size_t)(dot - arg) >= sizeof(svc) || (size_t)(eq - dot - 1) >= sizeof(key))
		return -EINVAL;
	snprintf(svc, sizeof(svc), "%.*s", (int)(dot - arg), arg);
	snprintf(key, sizeof(key), "%.*s", (int)(eq - dot - 1), dot + 1);
	return svc_conf_set(cfg, svc, key, eq + 1);
}

/* The long name of option @c, for messages (getopt sets @idx only for
 * long options). */
static const char *opt_name(const struct option *opts, int c, int idx)
{
	if (idx >= 0)
		return opts[idx].name;
	for (; opts->name; opts++)
		if (opts->val == c)
			return opts->name;
	return "?";
}

enum {
	OPT_HTTP_PORT = 256, OPT_NO_HTTP, OPT_PORT_FILE, OPT_PLUGIN_DIR, OPT_SET,
	OPT_NO_BPF, OPT_PIN_DIR, OPT_NO_LOCAL, OPT_STATS, OPT_MAX_PAYLOAD,
	OPT_CHECK, OPT_LIMIT, OPT_ARRIVAL, OPT_ARB_PORT, OPT_SUB_OF, OPT_SUB_ASKS,
};

/*
 * Apply the command line on top of @cfg. --config is handled by the caller
 * before the file is read (flags override the file, so it goes first);
 * here it is only skipped.
 */
int config_parse_args(struct popupd_config *cfg, int argc, char **argv,
		      bool *check, const char **cfg_path)
{
	static struct option opts[32 + sizeof(limit_keys) / sizeof(limit_keys[0])] = {
		{ "config", required_argument, NULL, 'f' },
		{ "check-config", no_argument, NULL, OPT_CHECK },
		{ "port", required_argument, NULL, 'p' },
		{ "http-port", required_argument, NULL, OPT_HTTP_PORT },
		{ "no-http", no_argument, NULL, OPT_NO_HTTP },
		{ "port-file", required_argument, NULL, OPT_PORT_FILE },
		{ "bind", required_argument, NULL, 'b' },
		{ "cpus", required_argument, NULL, 'c' },
		{ "services", required_argument, NULL, 's' },
		{ "plugin-dir", required_argument, NULL, OPT_PLUGIN_DIR },
		{ "set", required_argument, NULL, OPT_SET },
		{ "no-bpf", no_argument, NULL, OPT_NO_BPF },
		{ "pin-dir", required_argument, NULL, OPT_PIN_DIR },
		{ "no-local", no_argument, NULL, OPT_NO_LOCAL },
		{ "arrival", required_argument, NULL, OPT_ARRIVAL },
		{ "arbiter-port", required_argument, NULL, OPT_ARB_PORT },
		{ "subserver-of", required_argument, NULL, OPT_SUB_OF },
		{ "subserver-asks", required_argument, NULL, OPT_SUB_ASKS },
		{ "stats", required_argument, NULL, OPT_STATS },
		{ "max-payload", required_argument, NULL, OPT_MAX_PAYLOAD },
		{ "log-level", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
	};
	static char limit_names[sizeof(limit_keys) / sizeof(limit_keys[0])][32];
	static bool opts_done;
	enum log_level lvl;
	int c, idx, err;

	/* --max-conns, --idle-timeout-ms, ...: generated from limit_keys. */
	if (!opts_done) {
		size_t n = 0;

		while (opts[n].name)
			n++;
		for (size_t i = 0; i < sizeof(limit_keys) / sizeof(limit_keys[0]); i++) {
			snprintf(limit_names[i], sizeof(limit_names[i]), "%s", limit_keys[i].name);
			for (char *p = limit_names[i]; *p; p++)
				if (*p == '_')
					*p = '-';
			opts[n++] = (struct option){ limit_names[i], required_argument, NULL,
						     OPT_LIMIT };
		}
		opts_done = true;
	}
	optind = 1;
	opterr = 1;
	for (;;) {
		idx = -1;
		c = getopt_long(argc, argv, "f:p:b:c:s:l:h", opts, &idx);
		if (c == -1)
			break;
		err = 0;
		switch (c) {
		case 'f':
			if (cfg_path)
				*cfg_path = optarg;
			break;
		case OPT_CHECK:
			if (check)
				*check = true;
			break;
		case 'p':
			err = parse_port(optarg, &cfg->port);
			break;
		case OPT_HTTP_PORT:
			err = parse_port(optarg, &cfg->http_port);
			break;
		case OPT_NO_HTTP:
			cfg->http_port = -1;
			break;
		case OPT_PORT_FILE:
			err = set_str(&cfg->port_file, optarg);
			break;
		case 'b':
			err = set_str(&cfg->bind_addr, optarg);
			break;
		case 'c':
			cfg->cpus_set = true;
			err = cpus_parse(optarg, &cfg->cpus) ? -EINVAL : 0;
			break;
		case 's':
			err = parse_services(cfg, optarg);
			break;
		case OPT_PLUGIN_DIR:
			err = set_str(&cfg->plugin_dir, optarg);
			break;
		case OPT_SET:
			err = parse_set(cfg, optarg);
			break;
		case OPT_NO_BPF:
			cfg->use_bpf = false;
			break;
		case OPT_PIN_DIR:
			cfg->pin_dir_set = true;
			err = set_str(&cfg->pin_dir, optarg);
			break;
		case OPT_NO_LOCAL:
			cfg->local = false;
			break;
		case OPT_ARRIVAL:
			err = parse_arrival(optarg, &cfg->arrival);
			break;
		case OPT_STATS:
			err = set_str(&cfg->stats_path, optarg);
			break;
		case OPT_ARB_PORT:
			err = parse_port(optarg, &cfg->arbiter_port);
			break;
		case OPT_SUB_OF:
		case OPT_SUB_ASKS:
			err = set_subserver_key(cfg, c == OPT_SUB_OF ? "front" : "asks", optarg);
			break;
		case OPT_MAX_PAYLOAD:
			err = parse_u32(optarg, 0, POPUP_SVC_MAX_MSG, &cfg->lim.max_request);
			break;
		case OPT_LIMIT: {
			char key[32];

			snprintf(key, sizeof(key), "%s", opts[idx].name);
			for (char *p = key; *p; p++)
				if (*p == '-')
					*p = '_';
			err = set_limit(&cfg->lim, key, optarg);
			break;
		}
		case 'l':
			if (log_parse_level(optarg, &lvl))
				err = -EINVAL;
			else
				cfg->log_level = lvl;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			fprintf(stderr, "popupd: see 'popupd --help' for the options\n");
			return -EINVAL;
		}
		if (err) {
			fprintf(stderr, "popupd: invalid value '%s' for --%s; see popupd --help\n",
				optarg, opt_name(opts, c, idx));
			return -EINVAL;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "popupd: unexpected argument '%s'; see popupd --help\n",
			argv[optind]);
		return -EINVAL;
	}
	return 0;
}
