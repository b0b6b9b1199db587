/* SPDX-License-Identifier: MIT */
/*
 * The broker's pure functions: the message parser every packet goes through
 * before anything else looks at it, the reason-name table (1:1 with enum
 * xway_reason; the JSON of `xwayctl connections` uses these names), address
 * formatting, the allow/deny rule language and JSON string escaping.  No
 * glib, no system calls, no global state: tests/fuzz/fuzz_proto.c includes
 * this file into a libFuzzer harness.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <xway/ring.h>

#include "proto.h"

const char *xway_reason_name(uint32_t reason)
{
	return xway_reason_str(reason);
}

static const uint8_t v4mapped_prefix[12] = { 0,0,0,0, 0,0,0,0, 0,0,0xff,0xff };

bool xway_addr_is_v4(const struct xway_addr *a)
{
	return memcmp(a->ip, v4mapped_prefix, 12) == 0;
}

bool xway_ip_equal(const uint8_t a[16], const uint8_t b[16])
{
	return memcmp(a, b, 16) == 0;
}

bool xway_addr_is_wildcard(const struct xway_addr *a)
{
	static const uint8_t zero[16];

	if (xway_addr_is_v4(a))
		return memcmp(a->ip + 12, zero, 4) == 0;
	return memcmp(a->ip, zero, 16) == 0;
}

bool xway_addr_is_loopback(const struct xway_addr *a)
{
	static const uint8_t v6lo[16] = { [15] = 1 };

	if (xway_addr_is_v4(a))
		return a->ip[12] == 127;
	return memcmp(a->ip, v6lo, 16) == 0;
}

char *xway_addr_format(const struct xway_addr *a, char *buf, size_t size)
{
	char ip[INET6_ADDRSTRLEN] = "?";

	if (xway_addr_is_v4(a)) {
		inet_ntop(AF_INET, a->ip + 12, ip, sizeof(ip));
		snprintf(buf, size, "%s:%u", ip, ntohs(a->port));
	} else {
		inet_ntop(AF_INET6, a->ip, ip, sizeof(ip));
		snprintf(buf, size, "[%s]:%u", ip, ntohs(a->port));
	}
	return buf;
}

int xway_addr_parse(const char *s, struct xway_addr *out)
{
	char ip[INET6_ADDRSTRLEN + 1];
	const char *port = NULL, *end;
	size_t n;

	memset(out, 0, sizeof(*out));
	if (*s == '[') {
		end = strchr(s, ']');
		if (!end || (end[1] && end[1] != ':'))
			return -EINVAL;
		n = (size_t)(end - s - 1);
		s++;
		port = end[1] ? end + 2 : NULL;
	} else {
		end = strrchr(s, ':');
		if (end && strchr(s, ':') == end) {      /* exactly one ':': v4:port */
			n = (size_t)(end - s);
			port = end + 1;
		} else {
			n = strlen(s);
		}
	}
	if (n == 0 || n >= sizeof(ip))
		return -EINVAL;
	memcpy(ip, s, n);
	ip[n] = 0;
	if (inet_pton(AF_INET, ip, out->ip + 12) == 1) {
		memcpy(out->ip, v4mapped_prefix, 12);
		out->family = AF_INET;
	} else if (inet_pton(AF_INET6, ip, out->ip) == 1) {
		out->family = AF_INET6;
	} else {
		return -EINVAL;
	}
	if (port) {
		char *e;
		unsigned long p;

		if (*port < '0' || *port > '9')
			return -EINVAL;
		errno = 0;
		p = strtoul(port, &e, 10);
		if (errno || *e || p > 65535)
			return -EINVAL;
		out->port = htons((uint16_t)p);
	}
	return 0;
}

/* ---- the parser ------------------------------------------------------ */

/* An endpoint must say which family the app used, and an AF_INET endpoint
 * must be stored v4-mapped (the broker compares the 16 bytes). */
static int check_addr(const struct xway_addr *a, const char **why)
{
	if (a->family != AF_INET && a->family != AF_INET6) {
		*why = "address family is neither AF_INET nor AF_INET6";
		return -EBADMSG;
	}
	if (a->family == AF_INET && !xway_addr_is_v4(a)) {
		*why = "AF_INET address not stored v4-mapped";
		return -EBADMSG;
	}
	return 0;
}

static bool addr_unset(const struct xway_addr *a)
{
	static const struct xway_addr zero;

	return !memcmp(a, &zero, sizeof(zero));
}

struct msg_shape {
	uint32_t body;          /* exact body size */
	uint8_t  fds_min, fds_max;
};

static const struct msg_shape shapes[] = {
	[XWAY_MSG_HELLO]      = { sizeof(struct xway_hello), 0, 0 },
	[XWAY_MSG_LISTEN_ADD] = { sizeof(struct xway_listen), 1, 1 },
	[XWAY_MSG_LISTEN_DEL] = { sizeof(struct xway_listen), 0, 1 },
	[XWAY_MSG_OFFER]      = { sizeof(struct xway_offer), 4, 4 },
	[XWAY_MSG_CLAIM]      = { sizeof(struct xway_claim), 1, 2 },
	[XWAY_MSG_WITHDRAW]   = { sizeof(struct xway_withdraw), 0, 0 },
	[XWAY_MSG_REPORT]     = { sizeof(struct xway_report), 0, 0 },
	[XWAY_MSG_REMAP]      = { sizeof(struct xway_claim), 1, 1 },
	[XWAY_MSG_XEN_MUTE]   = { sizeof(struct xway_xen_port), 1, 1 },
	[XWAY_MSG_XEN_NOTIFY] = { sizeof(struct xway_xen_port), 0, 0 },
	[XWAY_MSG_QUERY]      = { sizeof(struct xway_query), 0, 0 },
};

int xway_msg_parse(const void *buf, size_t len, unsigned nfds,
		   struct xway_req *req, const char **why)
{
	const struct msg_shape *s;
	const uint8_t *body;
	size_t blen;
	int r;

	memset(req, 0, sizeof(*req));
	req->nfds = nfds;
	if (len > XWAY_MSG_MAX) {
		*why = "packet larger than XWAY_MSG_MAX";
		return -EMSGSIZE;
	}
	if (len < sizeof(struct xway_msg_hdr)) {
		*why = "packet shorter than the message header";
		return -EPROTO;
	}
	memcpy(&req->hdr, buf, sizeof(req->hdr));
	if (req->hdr.magic != XWAY_PROTO_MAGIC) {
		*why = "bad magic (not an xway protocol message)";
		return -EPROTO;
	}
	if (req->hdr.version != XWAY_PROTO_VERSION) {
		*why = "unsupported protocol version";
		return -EPROTO;
	}
	if (req->hdr.len != len) {
		*why = "header length does not match the packet length";
		return -EPROTO;
	}
	if (req->hdr.type >= sizeof(shapes) / sizeof(shapes[0]) ||
	    shapes[req->hdr.type].body == 0) {
		*why = "unknown message type";
		return -EOPNOTSUPP;
	}
	s = &shapes[req->hdr.type];
	body = (const uint8_t *)buf + sizeof(struct xway_msg_hdr);
	blen = len - sizeof(struct xway_msg_hdr);
	if (blen != s->body) {
		*why = blen < s->body ? "message body truncated"
				      : "message body longer than its type";
		return -EBADMSG;
	}
	if (nfds < s->fds_min || nfds > s->fds_max) {
		*why = "wrong number of descriptors for this message type";
		return -EBADF;
	}
	memcpy(&req->u, body, blen);

	switch (req->hdr.type) {
	case XWAY_MSG_LISTEN_ADD:
	case XWAY_MSG_LISTEN_DEL:
		return check_addr(&req->u.listen.addr, why);
	case XWAY_MSG_OFFER:
		if ((r = check_addr(&req->u.offer.dst, why)) ||
		    (r = check_addr(&req->u.offer.src, why)))
			return r;
		if (xway_addr_is_wildcard(&req->u.offer.dst) ||
		    req->u.offer.dst.port == 0 || req->u.offer.src.port == 0) {
			*why = "offer needs a destination address and both ports";
			return -EBADMSG;
		}
		if (req->u.offer.cookie == 0) {
			*why = "offer cookie is zero";
			return -EBADMSG;
		}
		if (req->u.offer.ring_order < XWAY_RING_ORDER_MIN ||
		    req->u.offer.ring_order > XWAY_RING_ORDER_MAX) {
			*why = "offer ring_order out of range";
			return -EBADMSG;
		}
		if (req->u.offer.backend != 1 && req->u.offer.backend != 2) {
			*why = "offer backend is neither local nor xen";
			return -EBADMSG;
		}
		return 0;
	case XWAY_MSG_XEN_MUTE:
	case XWAY_MSG_XEN_NOTIFY:
		/* Event-channel ports: non-zero, 17 bits (FIFO ABI). */
		if (req->u.xen_port.port == 0 || req->u.xen_port.port >= (1u << 17)) {
			*why = "event-channel port out of range";
			return -EBADMSG;
		}
		return 0;
	case XWAY_MSG_CLAIM:
	case XWAY_MSG_REMAP:
		if ((r = check_addr(&req->u.claim.local, why)) ||
		    (r = check_addr(&req->u.claim.peer, why)))
			return r;
		return 0;
	case XWAY_MSG_REPORT: {
		struct xway_report *p = &req->u.report;

		if (p->kind != XWAY_REP_FALLBACK && p->kind != XWAY_REP_CLOSED) {
			*why = "unknown report kind";
			return -EBADMSG;
		}
		if (p->reason >= XWAY_R__MAX || p->side < 0 || p->side > 1) {
			*why = "report reason or side out of range";
			return -EBADMSG;
		}
		/* A set-up that failed before the shim knew the 4-tuple
		 * (shim/setup.c: bind or channel creation) reports its
		 * fallback with both addresses left zero.  Refusing it made
		 * every such failure a protocol error, and the 65th dropped
		 * the process's broker link (seen at the grant limit with a
		 * few hundred connections in one process). */
		if (p->kind == XWAY_REP_FALLBACK && addr_unset(&p->local) &&
		    addr_unset(&p->peer))
			goto report_text;
		if ((r = check_addr(&p->local, why)) ||
		    (r = check_addr(&p->peer, why)))
			return r;
report_text:
		/* Text is free-form from an untrusted sender: terminate it
		 * rather than reject a report for a missing NUL. */
		p->text[sizeof(p->text) - 1] = 0;
		return 0;
	}
	case XWAY_MSG_QUERY:
		if (req->u.query.what < XWAY_Q_STATUS ||
		    req->u.query.what > XWAY_Q_STATS) {
			*why = "unknown query";
			return -EBADMSG;
		}
		if (req->u.query.json > 1) {
			*why = "query json flag is neither 0 nor 1";
			return -EBADMSG;
		}
		return 0;
	default:
		return 0;
	}
}

/* ---- rules ----------------------------------------------------------- */

/* Parse "N" or "N-M" of unsigned numbers up to max. */
static int parse_range(const char *s, uint32_t max, uint32_t *lo, uint32_t *hi)
{
	char *end;
	unsigned long a, b;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	a = strtoul(s, &end, 10);
	if (errno || a > max)
		return -EINVAL;
	b = a;
	if (*end == '-') {
		s = end + 1;
		if (*s < '0' || *s > '9')
			return -EINVAL;
		b = strtoul(s, &end, 10);
		if (errno || b > max || b < a)
			return -EINVAL;
	}
	if (*end)
		return -EINVAL;
	*lo = a;
	*hi = b;
	return 0;
}

static int parse_net(const char *s, uint8_t net[16], uint32_t *prefix)
{
	char ip[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	uint32_t pl, ph, max;
	bool v4;

	if (n == 0 || n >= sizeof(ip))
		return -EINVAL;
	memcpy(ip, s, n);
	ip[n] = 0;
	memset(net, 0, 16);
	if (inet_pton(AF_INET, ip, net + 12) == 1) {
		memcpy(net, v4mapped_prefix, 12);
		v4 = true;
		max = 32;
	} else if (inet_pton(AF_INET6, ip, net) == 1) {
		v4 = false;
		max = 128;
	} else {
		return -EINVAL;
	}
	pl = max;
	if (slash && (parse_range(slash + 1, max, &pl, &ph) || ph != pl))
		return -EINVAL;
	*prefix = v4 ? 96 + pl : pl;
	return 0;
}

int xway_rule_parse(const char *text, struct xway_rule *r,
		    char *errbuf, size_t errlen)
{
	char term[128];
	const char *p = text;
	int nterms = 0;

	*r = (struct xway_rule){ .port_lo = 0, .port_hi = 65535,
				 .prefix = 0, .uid_lo = 0, .uid_hi = UINT32_MAX };
	for (;;) {
		size_t n;

		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p)
			break;
		n = strcspn(p, " \t");
		if (n >= sizeof(term)) {
			snprintf(errbuf, errlen, "rule term too long in '%s'", text);
			return -EINVAL;
		}
		memcpy(term, p, n);
		term[n] = 0;
		p += n;
		nterms++;
		if (!strncmp(term, "port=", 5)) {
			if (parse_range(term + 5, 65535, &r->port_lo, &r->port_hi))
				goto bad;
		} else if (!strncmp(term, "uid=", 4)) {
			if (parse_range(term + 4, UINT32_MAX - 1, &r->uid_lo, &r->uid_hi))
				goto bad;
		} else if (!strncmp(term, "addr=", 5)) {
			if (parse_net(term + 5, r->net, &r->prefix))
				goto bad;
		} else {
			snprintf(errbuf, errlen,
				 "unknown rule term '%s' (want port=, addr= or uid=)",
				 term);
			return -EINVAL;
		}
	}
	if (nterms == 0) {
		snprintf(errbuf, errlen, "empty rule");
		return -EINVAL;
	}
	return 0;
bad:
	snprintf(errbuf, errlen, "bad value in rule term '%s'", term);
	return -EINVAL;
}

bool xway_rule_match(const struct xway_rule *r, const struct xway_addr *dst,
		     uint32_t uid)
{
	uint32_t port = ntohs(dst->port), bits = r->prefix, i;

	if (port < r->port_lo || port > r->port_hi)
		return false;
	if (uid < r->uid_lo || uid > r->uid_hi)
		return false;
	for (i = 0; i < 16 && bits; i++) {
		uint8_t mask = bits >= 8 ? 0xff : (uint8_t)(0xff << (8 - bits));

		if ((dst->ip[i] ^ r->net[i]) & mask)
			return false;
		bits = bits >= 8 ? bits - 8 : 0;
	}
	return true;
}

bool xway_rules_exclude(const struct xway_rule *allow, size_t nallow,
			const struct xway_rule *deny, size_t ndeny,
			const struct xway_addr *dst, uint32_t uid)
{
	size_t i;

	for (i = 0; i < ndeny; i++)
		if (xway_rule_match(&deny[i], dst, uid))
			return true;
	if (nallow == 0)
		return false;
	for (i = 0; i < nallow; i++)
		if (xway_rule_match(&allow[i], dst, uid))
			return false;
	return true;
}

size_t xway_json_escape(const char *s, char *out, size_t size)
{
	size_t n = 0;

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		char tmp[8];
		size_t k;

		if (c == '"' || c == '\\') {
			tmp[0] = '\\'; tmp[1] = (char)c; k = 2;
		} else if (c < 0x20 || c >= 0x7f) {
			/* Bytes >= 0x7f are shown as Latin-1 code points so
			 * any input yields valid JSON. */
			k = (size_t)snprintf(tmp, sizeof(tmp), "\\u%04x", c);
		} else {
			tmp[0] = (char)c; k = 1;
		}
		if (n + k < size)
			memcpy(out + n, tmp, k);
		else if (n < size)
			out[n] = 0;
		n += k;
	}
	if (n < size)
		out[n] = 0;
	else if (size)
		out[size - 1] = 0;
	return n;
}

/* ---- broker-to-broker link records ------------------------------------ */

/* Strict decimal: digits only, no leading zero, value in [1, max]. */
static int link_u64(const char *s, size_t n, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (n == 0 || n > 20 || s[0] == '0')
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		unsigned d = (unsigned)(s[i] - '0');

		if (d > 9 || v > (UINT64_MAX - d) / 10)
			return -EINVAL;
		v = v * 10 + d;
	}
	if (v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

static int link_cookie(const char *s, size_t n, uint64_t *out)
{
	uint64_t v = 0;

	if (n != 16)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		unsigned d;

		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else
			return -EINVAL;
		v = v << 4 | d;
	}
	if (!v)
		return -EINVAL;
	*out = v;
	return 0;
}

static int link_addr(const char *s, size_t n, struct xway_addr *a)
{
	char buf[80];

	if (n == 0 || n >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, s, n);
	buf[n] = 0;
	if (xway_addr_parse(buf, a) || a->port == 0)
		return -EINVAL;
	return 0;
}

#define LINK_FIELDS 8

int xway_link_parse(const void *rec, size_t len, struct xway_link_msg *m,
		    const char **why)
{
	const char *s = rec, *end, *f[LINK_FIELDS];
	size_t fl[LINK_FIELDS], nf = 0;
	uint64_t v;

	memset(m, 0, sizeof(*m));
	if (len != XWAY_LINK_REC || !(end = memchr(s, 0, len))) {
		*why = "record is not one NUL-terminated slot";
		return -EINVAL;
	}
	/* Fields separated by exactly one space. */
	for (const char *p = s; ; ) {
		const char *q = p;

		while (q < end && *q != ' ')
			q++;
		if (q == p || nf == LINK_FIELDS) {
			*why = "empty field, or too many fields";
			return -EINVAL;
		}
		f[nf] = p;
		fl[nf++] = (size_t)(q - p);
		if (q == end)
			break;
		p = q + 1;
	}
	if (nf < 2 || link_u64(f[1], fl[1], UINT64_MAX, &m->id)) {
		*why = "missing or bad offer id";
		return -EINVAL;
	}
#define IS(i, lit) (fl[i] == sizeof(lit) - 1 && !memcmp(f[i], lit, sizeof(lit) - 1))
	if (IS(0, "offer")) {
		m->kind = XWAY_LINK_OFFER;
		if (nf != 7) {
			*why = "offer: not 7 fields";
			return -EINVAL;
		}
		if (link_u64(f[2], fl[2], UINT32_MAX, &v)) {
			*why = "offer: bad ring-ref";
			return -EINVAL;
		}
		m->ring_ref = (uint32_t)v;
		if (link_u64(f[3], fl[3], 1u << 17, &v)) {     /* FIFO ABI: 17-bit ports */
			*why = "offer: bad event-channel port";
			return -EINVAL;
		}
		m->port = (uint32_t)v;
		if (link_cookie(f[4], fl[4], &m->cookie)) {
			*why = "offer: bad cookie";
			return -EINVAL;
		}
		if (link_addr(f[5], fl[5], &m->src) || link_addr(f[6], fl[6], &m->dst) ||
		    xway_addr_is_wildcard(&m->dst)) {
			*why = "offer: bad address";
			return -EINVAL;
		}
		return 0;
	}
	if (IS(0, "withdraw")) {
		m->kind = XWAY_LINK_WITHDRAW;
		if (nf != 2) {
			*why = "withdraw: not 2 fields";
			return -EINVAL;
		}
		return 0;
	}
	if (IS(0, "outcome")) {
		m->kind = XWAY_LINK_OUTCOME;
		if (nf != 3 || !(IS(2, "claimed") || IS(2, "withdrawn"))) {
			*why = "outcome: not 'outcome ID claimed|withdrawn'";
			return -EINVAL;
		}
		m->claimed = IS(2, "claimed");
		return 0;
	}
#undef IS
	*why = "unknown record kind";
	return -EINVAL;
}

int xway_link_format(const struct xway_link_msg *m, char rec[XWAY_LINK_REC])
{
	char a[80], b[80];
	int n;

	memset(rec, 0, XWAY_LINK_REC);
	switch (m->kind) {
	case XWAY_LINK_OFFER:
		n = snprintf(rec, XWAY_LINK_REC, "offer %llu %u %u %016llx %s %s",
			     (unsigned long long)m->id, m->ring_ref, m->port,
			     (unsigned long long)m->cookie,
			     xway_addr_format(&m->src, a, sizeof(a)),
			     xway_addr_format(&m->dst, b, sizeof(b)));
		break;
	case XWAY_LINK_WITHDRAW:
		n = snprintf(rec, XWAY_LINK_REC, "withdraw %llu", (unsigned long long)m->id);
		break;
	case XWAY_LINK_OUTCOME:
		n = snprintf(rec, XWAY_LINK_REC, "outcome %llu %s", (unsigned long long)m->id,
			     m->claimed ? "claimed" : "withdrawn");
		break;
	default:
		return -EINVAL;
	}
	if (n < 0 || n >= XWAY_LINK_REC) {
		memset(rec, 0, XWAY_LINK_REC);
		return -EINVAL;
	}
	/* What we send must be what the peer accepts. */
	{
		struct xway_link_msg back;
		const char *why;

		if (xway_link_parse(rec, XWAY_LINK_REC, &back, &why))
			return -EINVAL;
	}
	return 0;
}
