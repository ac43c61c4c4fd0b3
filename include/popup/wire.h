/* SPDX-License-Identifier: LGPL-2.1 OR BSD-2-Clause */
/*
 * The native popup wire protocol, spoken over TCP and UDP on popupd's
 * worker sockets and by popup-bench and popupctl.
 *
 * Every message, request or reply, starts with this fixed 32-byte header,
 * all fields big-endian, followed by @len payload bytes:
 *
 *   off size field
 *     0    4 magic      0x50555031 ("PUP1")
 *     4    1 version    POPUP_WIRE_VERSION
 *     5    1 flags      POPUP_WIRE_F_*
 *     6    2 method     method id within the service
 *     8    4 service    service id (popupd assigns them; see popupctl services)
 *    12    4 status     replies: 0 or a POPUP_WIRE_S_* code; requests: 0
 *    16    8 req_id     chosen by the client, echoed in the reply, so a TCP
 *                       connection may pipeline and get replies out of order
 *    24    4 len        payload bytes that follow the header
 *    28    4 reserved   zero (requests with non-zero reserved are refused),
 *                       but with POPUP_WIRE_F_PRIO its low byte is the
 *                       request's priority, a signed byte (higher runs
 *                       first; popupd clamps it to -20..20 and caps it at
 *                       what the service allows); the other 24 bits zero
 *
 * UDP carries exactly one message per datagram; on TCP messages follow one
 * another on the stream. The BPF steering program reads @service at offset
 * 8 of a UDP payload for its "service" policy.
 */
#ifndef POPUP_WIRE_H
#define POPUP_WIRE_H

#include <stdint.h>

#define POPUP_WIRE_MAGIC	0x50555031u
#define POPUP_WIRE_VERSION	1
#define POPUP_WIRE_HDR_LEN	32
#define POPUP_WIRE_OFF_SERVICE	8

/* flags */
#define POPUP_WIRE_F_REPLY	0x01	/* message is a reply */
#define POPUP_WIRE_F_ONEWAY	0x02	/* request wants no reply */
#define POPUP_WIRE_F_PRIO	0x04	/* reserved & 0xff: priority (int8) */
#define POPUP_WIRE_F_WORK	0x08	/* arbiter <-> subserver work channel */
#define POPUP_WIRE_F_REGISTER	0x10	/* work channel: a service registration */

/* reply status codes */
#define POPUP_WIRE_S_OK		0
#define POPUP_WIRE_S_BADREQ	1	/* malformed header or length */
#define POPUP_WIRE_S_NOSVC	2	/* unknown service */
#define POPUP_WIRE_S_NOMETHOD	3	/* unknown method */
#define POPUP_WIRE_S_TOOBIG	4	/* payload over the method's limit */
#define POPUP_WIRE_S_BUSY	5	/* overloaded: retry later */
#define POPUP_WIRE_S_TIMEOUT	6	/* deadline passed */
#define POPUP_WIRE_S_ERROR	7	/* the handler failed */

/* Host-order view of a header; popup_wire_{encode,decode} convert. */
struct popup_wire_hdr {
	uint32_t magic;
	uint8_t version;
	uint8_t flags;
	uint16_t method;
	uint32_t service;
	uint32_t status;
	uint64_t req_id;
	uint32_t len;
	uint32_t reserved;
};

/* The priority a request header asks for, if it asks (F_PRIO). */
static inline int popup_wire_prio(const struct popup_wire_hdr *h, int *prio)
{
	if (!(h->flags & POPUP_WIRE_F_PRIO))
		return 0;
	*prio = (int8_t)(h->reserved & 0xff);
	return 1;
}

static inline void popup_wire_put32(unsigned char *p, uint32_t v)
{
	p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

static inline uint32_t popup_wire_get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static inline void popup_wire_encode(unsigned char *p, const struct popup_wire_hdr *h)
{
	popup_wire_put32(p, h->magic);
	p[4] = h->version;
	p[5] = h->flags;
	p[6] = h->method >> 8;
	p[7] = h->method & 0xff;
	popup_wire_put32(p + 8, h->service);
	popup_wire_put32(p + 12, h->status);
	popup_wire_put32(p + 16, (uint32_t)(h->req_id >> 32));
	popup_wire_put32(p + 20, (uint32_t)h->req_id);
	popup_wire_put32(p + 24, h->len);
	popup_wire_put32(p + 28, h->reserved);
}

/* Decode without validating; see popup_wire_check(). */
static inline void popup_wire_decode(const unsigned char *p, struct popup_wire_hdr *h)
{
	h->magic = popup_wire_get32(p);
	h->version = p[4];
	h->flags = p[5];
	h->method = (uint16_t)(p[6] << 8 | p[7]);
	h->service = popup_wire_get32(p + 8);
	h->status = popup_wire_get32(p + 12);
	h->req_id = (uint64_t)popup_wire_get32(p + 16) << 32 | popup_wire_get32(p + 20);
	h->len = popup_wire_get32(p + 24);
	h->reserved = popup_wire_get32(p + 28);
}

/* 0 if @h is a well-formed request header whose payload fits @max_len. */
static inline int popup_wire_check(const struct popup_wire_hdr *h, uint32_t max_len)
{
	uint32_t rmask = (h->flags & POPUP_WIRE_F_PRIO) ? 0xffffff00u : 0xffffffffu;

	if (h->magic != POPUP_WIRE_MAGIC || h->version != POPUP_WIRE_VERSION ||
	    (h->reserved & rmask) || (h->flags & POPUP_WIRE_F_REPLY))
		return POPUP_WIRE_S_BADREQ;
	if (h->len > max_len)
		return POPUP_WIRE_S_TOOBIG;
	return POPUP_WIRE_S_OK;
}

#endif /* POPUP_WIRE_H */
