// SPDX-License-Identifier: GPL-2.0
/*
 * The native protocol (include/popup/wire.h) on TCP and UDP.
 *
 * Every length is checked before it is trusted. A header whose payload
 * length is over max_request gets a "too big" reply and the connection is
 * closed: skipping the payload would mean trusting the length just
 * refused. Any other bad request (wrong version, non-zero reserved, a
 * reply flag, an unknown service or method, a payload over the method's
 * max_arg) is answered and its payload skipped, so the connection stays
 * framed and the next request is served. Bad magic means the stream is
 * not ours (HTTP sent to the binary port, a TLS hello): it is closed.
 *
 * Replies on one TCP connection go out as they complete, not in request
 * order; the client matches them by req_id.
 *
 * A request may ask for a priority (POPUP_WIRE_F_PRIO, the low byte of
 * the reserved word): it is capped by what the service allows
 * (svc_call_prio()); without it the method's priority applies.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "popupd.h"

int status_to_wire(int status)
{
	switch (status) {
	case 0:			return POPUP_WIRE_S_OK;
	case -EINVAL:
	case -EBADMSG:		return POPUP_WIRE_S_BADREQ;
	case -E2BIG:
	case -EMSGSIZE:		return POPUP_WIRE_S_TOOBIG;
	case -EAGAIN:
	case -EBUSY:		return POPUP_WIRE_S_BUSY;
	case -ETIMEDOUT:	return POPUP_WIRE_S_TIMEOUT;
	default:		return POPUP_WIRE_S_ERROR;
	}
}

/* The reply for @j into @out; returns its length, 0 if no reply is due
 * (one-way) or it does not fit. */
uint32_t native_encode(const struct job *j, unsigned char *out, uint32_t cap)
{
	struct popup_wire_hdr rep = j->hdr;
	const void *payload = j->res;
	uint32_t len = j->res_len;

	rep.magic = POPUP_WIRE_MAGIC;
	rep.version = POPUP_WIRE_VERSION;
	rep.flags = POPUP_WIRE_F_REPLY;
	rep.status = j->pstatus ? j->pstatus : (uint32_t)status_to_wire(j->status);
	rep.reserved = 0;
	if ((j->hdr.flags & POPUP_WIRE_F_ONEWAY) && rep.status == POPUP_WIRE_S_OK)
		return 0;
	if (rep.status != POPUP_WIRE_S_OK && !len && j->msg) {
		payload = j->msg;	/* popupd's own reason, as text */
		len = strlen(j->msg);
	}
	if (len > cap - POPUP_WIRE_HDR_LEN) {
		rep.status = POPUP_WIRE_S_TOOBIG;	/* UDP: does not fit */
		len = 0;
	}
	rep.len = len;
	popup_wire_encode(out, &rep);
	if (len)
		memcpy(out + POPUP_WIRE_HDR_LEN, payload, len);
	return POPUP_WIRE_HDR_LEN + len;
}

void native_reply(struct conn *c, struct job *j)
{
	uint32_t need = POPUP_WIRE_HDR_LEN + j->res_len + (j->msg ? strlen(j->msg) : 0);

	if (conn_reserve_out(c, need))
		return;
	c->out_len += native_encode(j, c->out + c->out_len, need);
}

/*
 * Build the job for one framed request. @body is hdr->len bytes. Errors
 * are jobs too (with pstatus set), so every reply goes one way.
 */
static struct job *native_job(const struct popup_wire_hdr *hdr, const unsigned char *body,
			      enum popup_svc_origin origin)
{
	const struct popup_svc_method *m = NULL;
	uint32_t verdict = popup_wire_check(hdr, LIM(max_request));
	struct svc *s = NULL;
	struct job *j;

	if (verdict == POPUP_WIRE_S_OK) {
		s = svc_by_id(hdr->service);
		if (!s)
			verdict = POPUP_WIRE_S_NOSVC;
		else if (!(m = svc_method_by_id(s, hdr->method)))
			verdict = POPUP_WIRE_S_NOMETHOD;
		else if (hdr->len > m->max_arg)
			verdict = POPUP_WIRE_S_TOOBIG;
	}
	j = verdict ? job_new(0, 0) : job_new(hdr->len, m->max_res);
	if (!j)
		return NULL;
	j->hdr = *hdr;
	j->origin = origin;
	j->arrival_ns = now_ns();
	if (verdict) {
		static const char *const why[] = {
			[POPUP_WIRE_S_BADREQ] = "malformed request header",
			[POPUP_WIRE_S_NOSVC] = "no such service",
			[POPUP_WIRE_S_NOMETHOD] = "no such method",
			[POPUP_WIRE_S_TOOBIG] = "payload over the method's limit",
		};

		j->pstatus = verdict;
		j->msg = verdict < sizeof(why) / sizeof(why[0]) ? why[verdict] : NULL;
		j->hdr.flags &= ~POPUP_WIRE_F_ONEWAY;	/* errors are always answered */
		if (s)
			svc_account(s, -EINVAL, j->arrival_ns, false);
		return j;
	}
	j->svc = s;
	j->m = m;
	{
		int asked = 0;
		bool has = popup_wire_prio(hdr, &asked);

		j->prio = svc_call_prio(s, m, has, asked);
	}
	if (hdr->len)
		memcpy(j->req, body, hdr->len);
	return j;
}

int native_input(struct conn *c)
{
	uint32_t off = 0;
	int ret = 0;

	while (c->in_len - off >= POPUP_WIRE_HDR_LEN) {
		struct popup_wire_hdr hdr;
		struct job *j;

		if (c->closing)
			break;
		if (conn_over_limits(c)) {
			c->paused = true;	/* resumed by conn_kick() */
			break;
		}
		popup_wire_decode(c->in + off, &hdr);
		if (hdr.magic != POPUP_WIRE_MAGIC) {
			ret = -EPROTO;
			break;
		}
		if (hdr.len > LIM(max_request)) {
			/* Answer, then close. */
			struct popup_wire_hdr h = hdr;

			h.len = 0;
			j = native_job(&h, NULL, POPUP_SVC_ORIGIN_TCP);
			if (j) {
				j->pstatus = POPUP_WIRE_S_TOOBIG;
				j->msg = "payload over max_request";
				job_attach(c, j);
				dispatch_job(c->w, j);
			}
			c->closing = true;
			off = c->in_len;
			break;
		}
		if (c->in_len - off - POPUP_WIRE_HDR_LEN < hdr.len)
			break;	/* body incomplete */
		j = native_job(&hdr, c->in + off + POPUP_WIRE_HDR_LEN, POPUP_SVC_ORIGIN_TCP);
		off += POPUP_WIRE_HDR_LEN + hdr.len;
		if (!j) {
			ret = -ENOMEM;
			break;
		}
		memcpy(&j->peer, &c->peer, c->peer_len);
		j->peer_len = c->peer_len;
		job_attach(c, j);
		dispatch_job(c->w, j);
		if (c->fd < 0)
			break;
	}
	if (off) {
		memmove(c->in, c->in + off, c->in_len - off);
		c->in_len -= off;
	}
	/* The whole-request deadline runs from a partial request's first
	 * byte; bytes held back by backpressure are not the peer's fault. */
	if (!c->in_len || c->paused)
		c->req_start_ns = 0;
	else if (!c->req_start_ns)
		c->req_start_ns = now_ns();
	return ret;
}

void native_udp(struct worker *w, const unsigned char *buf, size_t n,
		const struct sockaddr_storage *peer, socklen_t plen)
{
	struct popup_wire_hdr hdr;
	struct job *j;

	if (n < POPUP_WIRE_HDR_LEN) {
		ctr_add(&pd.ctr.udp_dropped, 1);
		return;	/* no header to address a reply with */
	}
	popup_wire_decode(buf, &hdr);
	if (hdr.magic != POPUP_WIRE_MAGIC) {
		ctr_add(&pd.ctr.udp_dropped, 1);
		return;	/* not ours: answering would make us a reflector */
	}
	if (hdr.len != n - POPUP_WIRE_HDR_LEN) {
		/* Lengths disagree: refuse, do not trust either. */
		hdr.len = 0;
		j = native_job(&hdr, NULL, POPUP_SVC_ORIGIN_UDP);
		if (j) {
			j->pstatus = POPUP_WIRE_S_BADREQ;
			j->msg = "length does not match the datagram";
		}
	} else {
		j = native_job(&hdr, buf + POPUP_WIRE_HDR_LEN, POPUP_SVC_ORIGIN_UDP);
	}
	if (!j)
		return;
	memcpy(&j->peer, peer, plen);
	j->peer_len = plen;
	dispatch_job(w, j);
}
