// SPDX-License-Identifier: GPL-2.0
/*
 * HTTP/1.1 on its own port, parsed by libhttp-parser (Debian's
 * http_parser.h): POST /<service>/<method> with the body as the arguments;
 * the response body is the result.
 *
 *   200 ok                      404 unknown service or method, or the
 *   400 malformed request           handler said -ENOENT
 *   405 not POST                413 body over the method's max_arg
 *   408 request not received    431 headers over max_header
 *       within request_timeout  503 overloaded (queue full, draining)
 *   500 handler error           504 past the deadline
 * Every response carries X-Popup-Status, the native status code.
 *
 * Keep-alive and pipelining: requests on a connection may run
 * concurrently, but HTTP/1.1 answers in request order, so each request
 * takes its place in the connection's reply queue when its headers are
 * parsed and responses leave from the head of the queue as they finish.
 *
 * The parser copies nothing and hands out pieces of the input buffer; the
 * URL and the body are copied out as they arrive (bounded), so the input
 * buffer only ever holds unparsed bytes. The parser is paused after every
 * message, so limits (output, requests in flight) are checked between
 * requests. A parse error is answered 400 with "Connection: close": the
 * stream cannot be trusted past it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "popupd.h"

int status_to_http(int status)
{
	switch (status) {
	case 0:			return 200;
	case -EINVAL:
	case -EBADMSG:		return 400;
	case -E2BIG:
	case -EMSGSIZE:		return 413;
	case -EAGAIN:
	case -EBUSY:		return 503;
	case -ETIMEDOUT:	return 504;
	case -ENOENT:		return 404;
	case -EACCES:
	case -EPERM:		return 403;
	default:		return 500;
	}
}

static int pstatus_to_http(uint32_t ps)
{
	switch (ps) {
	case POPUP_WIRE_S_BADREQ:	return 400;
	case POPUP_WIRE_S_NOSVC:
	case POPUP_WIRE_S_NOMETHOD:	return 404;
	case POPUP_WIRE_S_TOOBIG:	return 413;
	case POPUP_WIRE_S_BUSY:		return 503;
	case POPUP_WIRE_S_TIMEOUT:	return 504;
	default:			return 500;
	}
}

static const char *reason(int code)
{
	switch (code) {
	case 100: return "Continue";
	case 200: return "OK";
	case 400: return "Bad Request";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 413: return "Payload Too Large";
	case 431: return "Request Header Fields Too Large";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default:  return "Internal Server Error";
	}
}

static uint32_t http_to_wire(int code)
{
	switch (code) {
	case 200: return POPUP_WIRE_S_OK;
	case 404: return POPUP_WIRE_S_NOMETHOD;
	case 413: return POPUP_WIRE_S_TOOBIG;
	case 503: return POPUP_WIRE_S_BUSY;
	case 504: return POPUP_WIRE_S_TIMEOUT;
	case 500: case 403: return POPUP_WIRE_S_ERROR;
	default:  return POPUP_WIRE_S_BADREQ;
	}
}

/* Send a whole response on a socket that is being refused, and close it. */
void http_refuse(int fd, int code, const char *msg)
{
	char buf[256];
	int n;

	if (fd < 0)
		return;
	n = snprintf(buf, sizeof(buf),
		     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
		     "X-Popup-Status: %u\r\nConnection: close\r\n\r\n%s\n",
		     code, reason(code), strlen(msg) + 1, http_to_wire(code), msg);
	if (send(fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		pr_debug("HTTP refusal not sent: %s", strerror(errno));
	close(fd);
}

/* Helpers for put_response(); the longest header it builds is well under
 * its 256 bytes (the reasons and content types are fixed strings). */
static char *put_str(char *p, const char *s)
{
	size_t n = strlen(s);

	memcpy(p, s, n);
	return p + n;
}

static char *put_u32(char *p, uint32_t v)
{
	char tmp[10];
	int i = 0;

	do {
		tmp[i++] = '0' + v % 10;
		v /= 10;
	} while (v);
	while (i)
		*p++ = tmp[--i];
	return p;
}

static void put_response(struct conn *c, struct job *j, bool close)
{
	int code = j->http_code ? j->http_code :
		   j->pstatus ? pstatus_to_http(j->pstatus) : status_to_http(j->status);
	uint32_t wire = j->pstatus ? j->pstatus : j->http_code ?
			http_to_wire(j->http_code) : (uint32_t)status_to_wire(j->status);
	const void *body = j->res;
	uint32_t len = j->res_len;
	char head[256], *h = head;
	int n;

	if (code != 200 && !len && j->msg) {
		body = j->msg;
		len = strlen(j->msg);
	}
	/* By hand rather than snprintf(): it is on every request. */
	h = put_str(h, "HTTP/1.1 ");
	h = put_u32(h, code);
	*h++ = ' ';
	h = put_str(h, reason(code));
	h = put_str(h, "\r\nContent-Type: ");
	h = put_str(h, code == 200 ? "application/octet-stream" : "text/plain");
	h = put_str(h, "\r\nContent-Length: ");
	h = put_u32(h, len);
	h = put_str(h, "\r\nX-Popup-Status: ");
	h = put_u32(h, wire);
	h = put_str(h, "\r\nConnection: ");
	h = put_str(h, close ? "close\r\n\r\n" : "keep-alive\r\n\r\n");
	n = h - head;
	if (conn_reserve_out(c, n + len))
		return;
	memcpy(c->out + c->out_len, head, n);
	c->out_len += n;
	if (len && !j->http_head) {
		memcpy(c->out + c->out_len, body, len);
		c->out_len += len;
	}
}

/* Free the answered responses still queued; the others are freed when
 * their job comes back and finds the connection closed. */
void http_abandon_queue(struct conn *c)
{
	struct job *j = c->hq_head, *next;

	c->hq_head = c->hq_tail = NULL;
	for (; j; j = next) {
		next = j->hnext;
		if (j->done) {
			job_free(j);
			c->refs--;
		}
	}
}

void http_flush_ready(struct conn *c)
{
	while (c->hq_head && c->hq_head->done) {
		struct job *j = c->hq_head;
		bool close = j->http_close || c->goaway;

		c->hq_head = j->hnext;
		if (!c->hq_head)
			c->hq_tail = NULL;
		put_response(c, j, close);
		job_free(j);
		c->refs--;	/* never the last: the list holds one */
		if (close) {
			c->http_closed = true;
			c->closing = true;
			/* Later pipelined requests are not answered; the
			 * client retries them on a new connection. */
			http_abandon_queue(c);
			break;
		}
	}
}

/* ---- parser callbacks ---------------------------------------------------- */

static int on_message_begin(http_parser *p)
{
	struct conn *c = p->data;

	c->url_len = 0;
	c->url_long = false;
	c->hdr_bytes = 0;
	c->hfield_len = 0;
	c->hstate = 0;
	c->hdr_expect = c->hdr_is_expect = false;
	c->hdr_is_prio = c->hprio_bad = false;
	c->hprio_len = 0;
	c->herr = 0;
	if (!c->req_start_ns)
		c->req_start_ns = worker_now(c->w);
	return 0;
}

static int count_header(struct conn *c, size_t len)
{
	c->hdr_bytes += len;
	if (c->hdr_bytes > LIM(max_header)) {
		c->herr = 431;
		return 1;
	}
	return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
	struct conn *c = p->data;

	if (count_header(c, len))
		return 1;
	if (c->url_len + len >= sizeof(c->url)) {
		c->url_long = true;	/* no service has such a name: 404 */
		return 0;
	}
	memcpy(c->url + c->url_len, at, len);
	c->url_len += len;
	return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
	struct conn *c = p->data;

	if (count_header(c, len))
		return 1;
	if (c->hstate != 1)
		c->hfield_len = 0;
	c->hstate = 1;
	for (size_t i = 0; i < len && c->hfield_len < sizeof(c->hfield) - 1; i++)
		c->hfield[c->hfield_len++] = at[i];
	c->hfield[c->hfield_len] = 0;
	return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
	struct conn *c = p->data;

	if (count_header(c, len))
		return 1;
	if (c->hstate != 2) {
		c->hdr_is_expect = !strcasecmp(c->hfield, "expect");
		c->hdr_is_prio = !strcasecmp(c->hfield, "x-popup-priority");
		if (c->hdr_is_prio)
			c->hprio_len = 0;	/* the last one counts */
	}
	c->hstate = 2;
	for (size_t i = 0; c->hdr_is_prio && i < len; i++) {
		if (c->hprio_len >= sizeof(c->hprio) - 1)
			c->hprio_bad = true;
		else
			c->hprio[c->hprio_len++] = at[i];
	}
	if (c->hdr_is_expect && len >= 12 && !strncasecmp(at, "100-continue", 12))
		c->hdr_expect = true;
	return 0;
}

/* An error answered by popupd itself, in its place in the reply order. */
static struct job *error_job(struct conn *c, int code, const char *msg)
{
	struct job *j = job_new(0, 0);

	if (!j)
		return NULL;
	j->origin = POPUP_SVC_ORIGIN_HTTP;
	j->arrival_ns = now_ns();
	j->http_code = code;
	j->msg = msg;
	job_attach(c, j);
	return j;
}

/* "/svc/method" -> service and method, or an HTTP error. */
static int resolve(struct conn *c, struct svc **sp, const struct popup_svc_method **mp,
		   const char **msg)
{
	struct http_parser_url u;
	const char *path, *slash;
	size_t plen;

	http_parser_url_init(&u);
	if (c->url_long) {
		*msg = "no such service";
		return 404;
	}
	if (http_parser_parse_url(c->url, c->url_len, 0, &u) || !(u.field_set & (1 << UF_PATH))) {
		*msg = "malformed URL";
		return 400;
	}
	path = c->url + u.field_data[UF_PATH].off;
	plen = u.field_data[UF_PATH].len;
	if (plen < 2 || path[0] != '/') {
		*msg = "use POST /<service>/<method>";
		return 404;
	}
	path++;
	plen--;
	slash = memchr(path, '/', plen);
	*sp = svc_by_name(path, slash ? (size_t)(slash - path) : plen);
	if (!*sp) {
		*msg = "no such service";
		return 404;
	}
	if (!slash) {
		*msg = "no such method";
		return 404;
	}
	*mp = svc_method_by_name(*sp, slash + 1, plen - (slash + 1 - path));
	if (!*mp) {
		*msg = "no such method";
		return 404;
	}
	if (c->hp.method == HTTP_POST)
		return 0;
	*msg = "use POST";
	return 405;
}

/* X-Popup-Priority: a decimal integer; svc_call_prio() caps it. */
static int parse_prio(struct conn *c, int *prio)
{
	char *end;
	long v;

	c->hprio[c->hprio_len] = 0;
	v = strtol(c->hprio, &end, 10);
	while (*end == ' ' || *end == '\t')
		end++;
	if (end == c->hprio || *end || v < -1000 || v > 1000)
		return -EINVAL;
	*prio = (int)v;
	return 0;
}

static int on_headers_complete(http_parser *p)
{
	struct conn *c = p->data;
	const struct popup_svc_method *m = NULL;
	int prio = 0;
	struct svc *s = NULL;
	const char *msg = NULL;
	uint32_t limit;
	struct job *j;
	int code;

	code = resolve(c, &s, &m, &msg);
	if (!code && (c->hprio_bad || (c->hprio_len && parse_prio(c, &prio)))) {
		code = 400;
		msg = "X-Popup-Priority must be an integer";
	}
	limit = m && m->max_arg < LIM(max_request) ? m->max_arg : LIM(max_request);
	if (!code && (p->flags & F_CONTENTLENGTH) && p->content_length > limit) {
		code = 413;
		msg = "body over the method's limit";
	}
	if (code) {
		j = error_job(c, code, msg);
		if (!j)
			return 1;
		j->http_close = !http_should_keep_alive(p);
		if (code == 413 || !(p->flags & F_CONTENTLENGTH) ||
		    p->content_length > LIM(max_request)) {
			/* Do not read a body we refuse: answer and close. */
			j->http_close = true;
			c->closing = true;
			http_parser_pause(p, 1);
		}
		c->hcur = j;
		c->body_limit = 0;
		return 0;
	}
	/* With a Content-Length (at most @limit, checked above) the parser
	 * hands over exactly that many bytes: no need for room for more. */
	j = job_new((p->flags & F_CONTENTLENGTH) ? (uint32_t)p->content_length : limit,
		    m->max_res);
	if (!j)
		return 1;
	j->origin = POPUP_SVC_ORIGIN_HTTP;
	j->arrival_ns = now_ns();
	j->svc = s;
	j->m = m;
	j->prio = svc_call_prio(s, m, c->hprio_len != 0, prio);
	j->req_len = 0;		/* filled by on_body */
	j->http_close = !http_should_keep_alive(p);
	memcpy(&j->peer, &c->peer, c->peer_len);
	j->peer_len = c->peer_len;
	job_attach(c, j);
	c->hcur = j;
	c->body_limit = limit;
	/* curl waits for this before sending a body over 1 KiB. Only
	 * when nothing is queued before it, as responses go in order. */
	if (c->hdr_expect && c->hq_head == j) {
		static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

		conn_append(c, cont, sizeof(cont) - 1);
	}
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
	struct conn *c = p->data;
	struct job *j = c->hcur;

	if (!j || j->http_code)
		return 0;	/* refused request: its body is skipped */
	if (j->req_len + len > c->body_limit || j->req_len + len > j->req_cap) {
		/* Chunked body over the limit: turn it into a 413. */
		j->http_code = 413;
		j->msg = "body over the method's limit";
		j->http_close = true;
		c->closing = true;
		http_parser_pause(p, 1);
		return 0;
	}
	memcpy(j->req + j->req_len, at, len);
	j->req_len += len;
	return 0;
}

static int on_message_complete(http_parser *p)
{
	struct conn *c = p->data;
	struct job *j = c->hcur;

	c->hcur = NULL;
	c->req_start_ns = 0;
	ctr_add(&c->w->http_requests, 1);	/* per worker: no shared line */
	if (j)
		dispatch_job(c->w, j);
	/* One message per execute: limits are checked between requests. */
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings settings = {
	.on_message_begin = on_message_begin,
	.on_url = on_url,
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
};

void http_conn_init(struct conn *c)
{
	http_parser_init(&c->hp, HTTP_REQUEST);
	c->hp.data = c;
}

/* The parser failed: answer 400 (or 431) in order, then close. */
static void parse_failed(struct conn *c)
{
	int code = c->herr ? c->herr : 400;
	struct job *j;

	if (c->hcur) {
		/* Its headers were taken: it becomes the error reply. */
		j = c->hcur;
		c->hcur = NULL;
		j->http_code = code;
		j->svc = NULL;
	} else {
		j = error_job(c, code, NULL);
		if (!j)
			return;
	}
	j->msg = code == 431 ? "request headers too large" :
		 http_errno_description(HTTP_PARSER_ERRNO(&c->hp));
	j->http_close = true;
	c->req_start_ns = 0;
	dispatch_job(c->w, j);
}

int http_input(struct conn *c)
{
	uint32_t off = 0;

	while (off < c->in_len && !c->closing) {
		enum http_errno err;
		size_t n;

		if (conn_over_limits(c)) {
			c->paused = true;
			break;
		}
		n = http_parser_execute(&c->hp, &settings, (const char *)c->in + off,
					c->in_len - off);
		off += n;
		err = HTTP_PARSER_ERRNO(&c->hp);
		if (err == HPE_PAUSED) {
			http_parser_pause(&c->hp, 0);
			if (c->closing && c->hcur) {
				/* A refused body: answer now, read no more. */
				struct job *j = c->hcur;

				c->hcur = NULL;
				c->req_start_ns = 0;
				dispatch_job(c->w, j);
			}
			continue;
		}
		if (err != HPE_OK || c->hp.upgrade) {
			parse_failed(c);
			c->closing = true;
			break;
		}
		if (n == 0)
			break;
	}
	if (c->closing)
		off = c->in_len;	/* nothing more will be parsed */
	if (off) {
		memmove(c->in, c->in + off, c->in_len - off);
		c->in_len -= off;
	}
	if (c->paused)
		c->req_start_ns = 0;
	return 0;
}
