/* SPDX-License-Identifier: MIT */
/*
 * xwayd internals shared by the daemon, its tests and the fuzz harness: the
 * pure message parser, address helpers, the reason-name table and the
 * allow/deny rule language.  Nothing declared here needs glib or does a
 * system call, so tests/fuzz/fuzz_proto.c can include proto.c directly.
 */
#ifndef XWAY_BROKER_PROTO_H
#define XWAY_BROKER_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <xway/proto.h>

/* At most this many descriptors ride on one packet (OFFER carries 4). */
#define XWAY_BROKER_MAX_FDS 4

/* A parsed request: the header plus a copy of the body, validated. */
struct xway_req {
	struct xway_msg_hdr hdr;
	unsigned nfds;
	union {
		struct xway_hello hello;
		struct xway_listen listen;
		struct xway_offer offer;
		struct xway_claim claim;
		struct xway_withdraw withdraw;
		struct xway_xen_port xen_port;
		struct xway_report report;
		struct xway_query query;
	} u;
};

/*
 * Parse one received packet of len bytes that came with nfds descriptors.
 * Returns 0 and fills *req, or -errno with *why set to a static sentence
 * for the ERROR reply: -EPROTO bad magic/version/length, -EBADMSG bad body
 * size or field, -EOPNOTSUPP unknown type, -EBADF wrong descriptor count,
 * -EMSGSIZE oversized.  When the header itself was readable, req->hdr is
 * filled even on failure (so the reply can carry the seq).  Pure.
 */
int xway_msg_parse(const void *buf, size_t len, unsigned nfds,
		   struct xway_req *req, const char **why);

/* "no-listener" etc.; "" for XWAY_R_NONE; "unknown" past the table. */
const char *xway_reason_name(uint32_t reason);

/* Address helpers on struct xway_addr (ip always 16 bytes, v4 mapped). */
bool xway_addr_is_v4(const struct xway_addr *a);
bool xway_addr_is_wildcard(const struct xway_addr *a);
bool xway_addr_is_loopback(const struct xway_addr *a);
bool xway_ip_equal(const uint8_t a[16], const uint8_t b[16]);
/* Parse "1.2.3.4:5000", "[::1]:5000", "1.2.3.4" or "::1" (port 0) into a
 * v4-mapped/IPv6 xway_addr; -EINVAL on anything else.  Pure. */
int xway_addr_parse(const char *s, struct xway_addr *out);
/* "127.0.0.1:5000" or "[::1]:5000"; returns buf. */
char *xway_addr_format(const struct xway_addr *a, char *buf, size_t size);

/*
 * Rules ([rules] allow= / deny= in xwayd.conf).  A rule is one or more
 * space-separated terms that must all match: port=N or port=N-M (the
 * destination port), addr=IP or addr=IP/PREFIX (the destination address;
 * IPv4 is compared v4-mapped), uid=N or uid=N-M (the connecting client's
 * uid).  Precedence: a matching deny rule excludes; otherwise, if any allow
 * rule exists, one of them must match; otherwise the connection is allowed.
 */
struct xway_rule {
	uint32_t port_lo, port_hi;   /* host order; 0..65535 when absent */
	uint8_t  net[16];
	uint32_t prefix;             /* 0..128 over the v4-mapped form */
	uint32_t uid_lo, uid_hi;
};

/* Parse one rule; -EINVAL with *why (static or in errbuf) on bad input. */
int xway_rule_parse(const char *text, struct xway_rule *r,
		    char *errbuf, size_t errlen);
bool xway_rule_match(const struct xway_rule *r, const struct xway_addr *dst,
		     uint32_t uid);
/* true when the connection is excluded by the allow/deny lists. */
bool xway_rules_exclude(const struct xway_rule *allow, size_t nallow,
			const struct xway_rule *deny, size_t ndeny,
			const struct xway_addr *dst, uint32_t uid);

/* Append s to out (at most size bytes incl. NUL) as a JSON string body:
 * quotes, backslashes, control and non-ASCII bytes escaped.  Returns the
 * length the full escape needs (like snprintf). */
size_t xway_json_escape(const char *s, char *out, size_t size);

/*
 * Records of the broker-to-broker link (Xen mode, broker/xenlink.c): fixed
 * XWAY_LINK_REC-byte slots holding one line of text, NUL-padded.  The link
 * a client's broker A serves to a server's broker B carries A's offers and
 * withdraw requests and B's outcomes for them:
 *   "offer ID RING_REF PORT COOKIE SRC DST"   (A -> B; COOKIE 16 hex)
 *   "withdraw ID"                              (A -> B)
 *   "outcome ID claimed" | "outcome ID withdrawn"   (B -> A)
 * The other domain writes them: parsed strictly (decimal without sign or
 * leading zero, one space between fields, nothing after), never trusted.
 */
#define XWAY_LINK_REC 256

enum xway_link_kind { XWAY_LINK_OFFER = 1, XWAY_LINK_WITHDRAW, XWAY_LINK_OUTCOME };

struct xway_link_msg {
	enum xway_link_kind kind;
	uint64_t id;                 /* the offer id in A's broker, >= 1 */
	uint32_t ring_ref, port;     /* offer: the vchan's shared page and port */
	uint64_t cookie;             /* offer */
	struct xway_addr src, dst;   /* offer */
	bool claimed;                /* outcome */
};

/* 0, or -EINVAL with *why (static).  len is the slot's size. Pure. */
int xway_link_parse(const void *rec, size_t len, struct xway_link_msg *m,
		    const char **why);
/* One slot (XWAY_LINK_REC bytes, NUL-padded) from m; -EINVAL if m is not
 * one xway_link_parse would accept. Pure. */
int xway_link_format(const struct xway_link_msg *m, char rec[XWAY_LINK_REC]);

#endif /* XWAY_BROKER_PROTO_H */
