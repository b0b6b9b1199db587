/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of broker/proto.c, the pure functions: the message parser
 * (valid, malformed, truncated, oversized, wrong descriptor counts), the
 * reason-name table, address helpers, the rule language and its
 * precedence, and JSON escaping.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "../../../broker/proto.h"

static size_t mk(uint8_t *buf, uint16_t type, const void *body, size_t len)
{
	struct xway_msg_hdr h = { .magic = XWAY_PROTO_MAGIC, .version = XWAY_PROTO_VERSION,
				  .type = type, .len = (uint32_t)(sizeof(h) + len), .seq = 9 };

	memcpy(buf, &h, sizeof(h));
	memcpy(buf + sizeof(h), body, len);
	return sizeof(h) + len;
}

static void v4(struct xway_addr *a, const char *ip, uint16_t port)
{
	memset(a, 0, sizeof(*a));
	a->ip[10] = a->ip[11] = 0xff;
	inet_pton(AF_INET, ip, a->ip + 12);
	a->port = htons(port);
	a->family = AF_INET;
}

static struct xway_offer good_offer(void)
{
	struct xway_offer o = { .cookie = 42, .ring_order = 20, .backend = 1 };

	v4(&o.dst, "127.0.0.1", 5000);
	v4(&o.src, "0.0.0.0", 40000);
	return o;
}

Test(parse, valid_messages)
{
	/* Check that each well-formed request parses with its body and seq. */
	uint8_t buf[1024];
	struct xway_req r;
	const char *why = NULL;
	struct xway_hello hello = { .shim_version = 1 };
	struct xway_offer o = good_offer();
	struct xway_query q = { .what = XWAY_Q_CONNECTIONS, .json = 1 };
	struct xway_withdraw w = { .offer_id = 7 };
	struct xway_listen l;

	v4(&l.addr, "0.0.0.0", 80);
	cr_assert_eq(xway_msg_parse(buf, mk(buf, XWAY_MSG_HELLO, &hello, sizeof(hello)), 0, &r, &why), 0);
	cr_assert_eq(r.hdr.seq, 9);
	cr_assert_eq(xway_msg_parse(buf, mk(buf, XWAY_MSG_OFFER, &o, sizeof(o)), 4, &r, &why), 0);
	cr_assert_eq(r.u.offer.cookie, 42);
	cr_assert_eq(xway_msg_parse(buf, mk(buf, XWAY_MSG_QUERY, &q, sizeof(q)), 0, &r, &why), 0);
	cr_assert_eq(xway_msg_parse(buf, mk(buf, XWAY_MSG_WITHDRAW, &w, sizeof(w)), 0, &r, &why), 0);
	cr_assert_eq(r.u.withdraw.offer_id, 7);
	cr_assert_eq(xway_msg_parse(buf, mk(buf, XWAY_MSG_LISTEN_ADD, &l, sizeof(l)), 1, &r, &why), 0);
	cr_assert_eq(xway_msg_parse(buf, mk(buf, XWAY_MSG_LISTEN_DEL, &l, sizeof(l)), 0, &r, &why), 0);
	cr_assert_eq(xway_msg_parse(buf, mk(buf, XWAY_MSG_LISTEN_DEL, &l, sizeof(l)), 1, &r, &why), 0);
}

Test(parse, malformed_header)
{
	/* Check that bad magic, version, length and short packets are
	 * refused with -EPROTO and a reason, and oversized with -EMSGSIZE. */
	uint8_t buf[1024];
	struct xway_hello hello = { 0 };
	struct xway_msg_hdr *h = (void *)buf;
	struct xway_req r;
	const char *why = NULL;
	size_t n = mk(buf, XWAY_MSG_HELLO, &hello, sizeof(hello));

	h->magic ^= 1;
	cr_assert_eq(xway_msg_parse(buf, n, 0, &r, &why), -EPROTO);
	cr_assert(strstr(why, "magic"));
	h->magic ^= 1;
	h->version = 2;
	cr_assert_eq(xway_msg_parse(buf, n, 0, &r, &why), -EPROTO);
	h->version = XWAY_PROTO_VERSION;
	h->len = (uint32_t)n + 1;
	cr_assert_eq(xway_msg_parse(buf, n, 0, &r, &why), -EPROTO);
	h->len = (uint32_t)n;
	cr_assert_eq(xway_msg_parse(buf, 3, 0, &r, &why), -EPROTO);
	cr_assert_eq(xway_msg_parse(buf, XWAY_MSG_MAX + 1, 0, &r, &why), -EMSGSIZE);
	cr_assert_eq(xway_msg_parse(buf, n, 0, &r, &why), 0);
}

Test(parse, unknown_and_reply_types)
{
	/* Check that unknown types and broker-to-client types are refused. */
	uint8_t buf[1024];
	struct xway_result res = { 0 };
	struct xway_req r;
	const char *why = NULL;

	cr_assert_eq(xway_msg_parse(buf, mk(buf, 99, &res, 8), 0, &r, &why), -EOPNOTSUPP);
	cr_assert_eq(xway_msg_parse(buf, mk(buf, 0, &res, 8), 0, &r, &why), -EOPNOTSUPP);
	cr_assert_eq(xway_msg_parse(buf, mk(buf, XWAY_MSG_RESULT, &res, sizeof(res)), 0, &r, &why),
		     -EOPNOTSUPP);
	cr_assert_eq(xway_msg_parse(buf, mk(buf, XWAY_MSG_HELLO_OK, &res, 16), 0, &r, &why),
		     -EOPNOTSUPP);
	cr_assert_eq(r.hdr.seq, 9, "seq is kept for the error reply");
}

Test(parse, truncated_and_long_bodies)
{
	/* Check that a body one byte short or long is -EBADMSG. */
	uint8_t buf[1024], big[sizeof(struct xway_offer) + 8] = { 0 };
	struct xway_offer o = good_offer();
	struct xway_req r;
	const char *why = NULL;

	memcpy(big, &o, sizeof(o));
	cr_assert_eq(xway_msg_parse(buf, mk(buf, XWAY_MSG_OFFER, big, sizeof(o) - 1), 4, &r, &why),
		     -EBADMSG);
	cr_assert(strstr(why, "truncated"));
	cr_assert_eq(xway_msg_parse(buf, mk(buf, XWAY_MSG_OFFER, big, sizeof(o) + 1), 4, &r, &why),
		     -EBADMSG);
	cr_assert_eq(xway_msg_parse(buf, mk(buf, XWAY_MSG_HELLO, &o, 0), 0, &r, &why), -EBADMSG);
}

Test(parse, wrong_fd_counts)
{
	/* Check that every type insists on its descriptor count. */
	uint8_t buf[1024];
	struct xway_offer o = good_offer();
	struct xway_claim c;
	struct xway_hello hello = { 0 };
	struct xway_req r;
	const char *why = NULL;
	size_t n = mk(buf, XWAY_MSG_OFFER, &o, sizeof(o));

	for (unsigned k = 0; k < 8; k++)
		cr_assert_eq(xway_msg_parse(buf, n, k, &r, &why), k == 4 ? 0 : -EBADF);
	v4(&c.local, "127.0.0.1", 1);
	v4(&c.peer, "127.0.0.1", 2);
	n = mk(buf, XWAY_MSG_CLAIM, &c, sizeof(c));
	cr_assert_eq(xway_msg_parse(buf, n, 0, &r, &why), -EBADF);
	cr_assert_eq(xway_msg_parse(buf, n, 3, &r, &why), -EBADF);
	cr_assert_eq(xway_msg_parse(buf, n, 1, &r, &why), 0);
	/* The second: a Xen server end's state memfd (proto.h). */
	cr_assert_eq(xway_msg_parse(buf, n, 2, &r, &why), 0);
	n = mk(buf, XWAY_MSG_REMAP, &c, sizeof(c));
	cr_assert_eq(xway_msg_parse(buf, n, 0, &r, &why), -EBADF);
	cr_assert_eq(xway_msg_parse(buf, n, 2, &r, &why), -EBADF);
	cr_assert_eq(xway_msg_parse(buf, n, 1, &r, &why), 0);
	{
		struct xway_xen_port p = { .port = 7 };

		n = mk(buf, XWAY_MSG_XEN_MUTE, &p, sizeof(p));
		cr_assert_eq(xway_msg_parse(buf, n, 0, &r, &why), -EBADF);
		cr_assert_eq(xway_msg_parse(buf, n, 1, &r, &why), 0);
		n = mk(buf, XWAY_MSG_XEN_NOTIFY, &p, sizeof(p));
		cr_assert_eq(xway_msg_parse(buf, n, 1, &r, &why), -EBADF);
		cr_assert_eq(xway_msg_parse(buf, n, 0, &r, &why), 0);
		p.port = 0;
		n = mk(buf, XWAY_MSG_XEN_NOTIFY, &p, sizeof(p));
		cr_assert_eq(xway_msg_parse(buf, n, 0, &r, &why), -EBADMSG, "port 0");
	}
	n = mk(buf, XWAY_MSG_HELLO, &hello, sizeof(hello));
	cr_assert_eq(xway_msg_parse(buf, n, 1, &r, &why), -EBADF);
}

Test(parse, fallback_report_without_addresses)
{
	/* Check that a FALLBACK report whose addresses are both unset (a
	 * set-up that failed before the shim knew its 4-tuple) is accepted,
	 * while a CLOSED report, or one address half set, is still refused:
	 * refused, each was a protocol error and the 65th dropped the
	 * process's broker link. */
	uint8_t buf[1024];
	struct xway_req r;
	const char *why = NULL;
	struct xway_report rep;

	memset(&rep, 0, sizeof(rep));
	rep.kind = XWAY_REP_FALLBACK;
	rep.reason = XWAY_R_SETUP_CHAN;
	cr_assert_eq(xway_msg_parse(buf, mk(buf, XWAY_MSG_REPORT, &rep, sizeof(rep)), 0, &r, &why), 0);
	rep.kind = XWAY_REP_CLOSED;
	cr_assert_eq(xway_msg_parse(buf, mk(buf, XWAY_MSG_REPORT, &rep, sizeof(rep)), 0, &r, &why), -EBADMSG);
	rep.kind = XWAY_REP_FALLBACK;
	v4(&rep.local, "127.0.0.1", 1);
	cr_assert_eq(xway_msg_parse(buf, mk(buf, XWAY_MSG_REPORT, &rep, sizeof(rep)), 0, &r, &why), -EBADMSG);
}

Test(parse, bad_fields)
{
	/* Check field validation: family, v4 mapping, ports, cookie, ring
	 * order, backend, report kind/side/reason, query what/json. */
	uint8_t buf[1024];
	struct xway_req r;
	const char *why = NULL;
	struct xway_offer o;
	struct xway_report rep;
	struct xway_query q;

	o = good_offer(); o.dst.family = AF_UNIX;
	cr_assert_eq(xway_msg_parse(buf, mk(buf, XWAY_MSG_OFFER, &o, sizeof(o)), 4, &r, &why), -EBADMSG);
	o = good_offer(); o.dst.ip[10] = 0;
	cr_assert_eq(xway_msg_parse(buf, mk(buf, XWAY_MSG_OFFER, &o, sizeof(o)), 4, &r, &why), -EBADMSG);
	o = good_offer(); o.src.port = 0;
	cr_assert_eq(xway_msg_parse(buf, mk(buf, XWAY_MSG_OFFER, &o, sizeof(o)), 4, &r, &why), -EBADMSG);
	o = good_offer(); v4(&o.dst, "0.0.0.0", 5000);
	cr_assert_eq(xway_msg_parse(buf, mk(buf, XWAY_MSG_OFFER, &o, sizeof(o)), 4, &r, &why), -EBADMSG);
	o = good_offer(); o.cookie = 0;
	cr_assert_eq(xway_msg_parse(buf, mk(buf, XWAY_MSG_OFFER, &o, sizeof(o)), 4, &r, &why), -EBADMSG);
	o = good_offer(); o.ring_order = 40;
	cr_assert_eq(xway_msg_parse(buf, mk(buf, XWAY_MSG_OFFER, &o, sizeof(o)), 4, &r, &why), -EBADMSG);
	o = good_offer(); o.backend = 7;
	cr_assert_eq(xway_msg_parse(buf, mk(buf, XWAY_MSG_OFFER, &o, sizeof(o)), 4, &r, &why), -EBADMSG);

	memset(&rep, 0, sizeof(rep));
	rep.kind = XWAY_REP_FALLBACK;
	v4(&rep.local, "127.0.0.1", 1);
	v4(&rep.peer, "127.0.0.1", 2);
	memset(rep.text, 'x', sizeof(rep.text));   /* no NUL: terminated, not refused */
	cr_assert_eq(xway_msg_parse(buf, mk(buf, XWAY_MSG_REPORT, &rep, sizeof(rep)), 0, &r, &why), 0);
	cr_assert_eq(r.u.report.text[sizeof(rep.text) - 1], 0);
	rep.kind = 9;
	cr_assert_eq(xway_msg_parse(buf, mk(buf, XWAY_MSG_REPORT, &rep, sizeof(rep)), 0, &r, &why), -EBADMSG);
	rep.kind = XWAY_REP_CLOSED; rep.side = 2;
	cr_assert_eq(xway_msg_parse(buf, mk(buf, XWAY_MSG_REPORT, &rep, sizeof(rep)), 0, &r, &why), -EBADMSG);
	rep.side = 1; rep.reason = XWAY_R__MAX;
	cr_assert_eq(xway_msg_parse(buf, mk(buf, XWAY_MSG_REPORT, &rep, sizeof(rep)), 0, &r, &why), -EBADMSG);

	q = (struct xway_query){ .what = 0 };
	cr_assert_eq(xway_msg_parse(buf, mk(buf, XWAY_MSG_QUERY, &q, sizeof(q)), 0, &r, &why), -EBADMSG);
	q = (struct xway_query){ .what = XWAY_Q_STATS, .json = 2 };
	cr_assert_eq(xway_msg_parse(buf, mk(buf, XWAY_MSG_QUERY, &q, sizeof(q)), 0, &r, &why), -EBADMSG);
}

Test(names, reasons_match_schema)
{
	/* Check the reason table against the strings of the JSON schema. */
	static const char *const want[] = {
		"", "disabled", "excluded", "broker-down", "no-listener",
		"not-coresident", "withdrawn", "peer-tcp", "setup-bind",
		"setup-chan", "setup-proto", "unsupported", "no-offer",
		"left-channel",
	};

	cr_assert_eq(sizeof(want) / sizeof(want[0]), XWAY_R__MAX);
	for (unsigned i = 0; i < XWAY_R__MAX; i++)
		cr_assert_str_eq(xway_reason_name(i), want[i]);
	cr_assert_str_eq(xway_reason_name(1000), "unknown");
}

Test(addr, format_and_classes)
{
	/* Check formatting and the wildcard/loopback classes, v4 and v6. */
	struct xway_addr a;
	char buf[80];

	v4(&a, "127.0.0.1", 5000);
	cr_assert_str_eq(xway_addr_format(&a, buf, sizeof(buf)), "127.0.0.1:5000");
	cr_assert(xway_addr_is_loopback(&a) && !xway_addr_is_wildcard(&a));
	v4(&a, "127.9.9.9", 1);
	cr_assert(xway_addr_is_loopback(&a));
	v4(&a, "0.0.0.0", 1);
	cr_assert(xway_addr_is_wildcard(&a) && xway_addr_is_v4(&a));
	memset(&a, 0, sizeof(a));
	a.ip[15] = 1;
	a.port = htons(5000);
	a.family = AF_INET6;
	cr_assert_str_eq(xway_addr_format(&a, buf, sizeof(buf)), "[::1]:5000");
	cr_assert(xway_addr_is_loopback(&a) && !xway_addr_is_v4(&a));
	a.ip[15] = 0;
	cr_assert(xway_addr_is_wildcard(&a));
}

Test(rules, parse_errors)
{
	/* Check that bad rules are refused with a message naming the term. */
	struct xway_rule r;
	char err[160];

	cr_assert_eq(xway_rule_parse("port=5000-6000", &r, err, sizeof(err)), 0);
	cr_assert_eq(xway_rule_parse("port=6000-5000", &r, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "port=6000-5000"));
	cr_assert_eq(xway_rule_parse("port=70000", &r, err, sizeof(err)), -EINVAL);
	cr_assert_eq(xway_rule_parse("port=", &r, err, sizeof(err)), -EINVAL);
	cr_assert_eq(xway_rule_parse("addr=10.0.0.0/33", &r, err, sizeof(err)), -EINVAL);
	cr_assert_eq(xway_rule_parse("addr=nonsense", &r, err, sizeof(err)), -EINVAL);
	cr_assert_eq(xway_rule_parse("host=foo", &r, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "unknown rule term"));
	cr_assert_eq(xway_rule_parse("   ", &r, err, sizeof(err)), -EINVAL);
	cr_assert_eq(xway_rule_parse("uid=-1", &r, err, sizeof(err)), -EINVAL);
	cr_assert_eq(xway_rule_parse("addr=fd00::/8 port=1 uid=33", &r, err, sizeof(err)), 0);
}

Test(rules, matching_and_precedence)
{
	/* Check term matching, AND within a rule, and deny-before-allow. */
	struct xway_rule allow[2], deny[1];
	struct xway_addr a;
	char err[160];

	cr_assert_eq(xway_rule_parse("port=5000-6000", &allow[0], err, sizeof(err)), 0);
	cr_assert_eq(xway_rule_parse("addr=10.0.0.0/8", &allow[1], err, sizeof(err)), 0);
	cr_assert_eq(xway_rule_parse("uid=33 port=5500", &deny[0], err, sizeof(err)), 0);
	v4(&a, "127.0.0.1", 5500);
	cr_assert(!xway_rules_exclude(allow, 2, deny, 1, &a, 0));
	cr_assert(xway_rules_exclude(allow, 2, deny, 1, &a, 33), "deny wins");
	v4(&a, "127.0.0.1", 80);
	cr_assert(xway_rules_exclude(allow, 2, deny, 1, &a, 0), "allow list set, none matches");
	v4(&a, "10.1.2.3", 80);
	cr_assert(!xway_rules_exclude(allow, 2, deny, 1, &a, 0));
	v4(&a, "11.1.2.3", 80);
	cr_assert(xway_rules_exclude(allow, 2, deny, 1, &a, 0));
	cr_assert(!xway_rules_exclude(allow, 0, deny, 0, &a, 0), "no rules: allowed");
	cr_assert_eq(xway_rule_parse("addr=::ffff:10.0.0.0/104", &allow[0], err, sizeof(err)), 0);
	v4(&a, "10.9.9.9", 1);
	cr_assert(xway_rule_match(&allow[0], &a, 0), "v4-mapped prefix matches v4");
}

Test(json, escape)
{
	/* Check escaping of quotes, backslashes, control and high bytes, and
	 * truncation that still yields a terminated string. */
	char out[64];

	cr_assert_eq(xway_json_escape("a\"b\\c\n\x01\xff", out, sizeof(out)), 25);
	cr_assert_str_eq(out, "a\\\"b\\\\c\\u000a\\u0001\\u00ff");
	cr_assert_eq(xway_json_escape("abcdef", out, 4), 6);
	cr_assert_eq(strlen(out), 3);
}

Test(addr, parse)
{
	/* Check the address parser used for xenstore entries: v4 with and
	 * without port, bracketed v6, bare v6, and rejects. */
	struct xway_addr a;
	char buf[80];

	cr_assert_eq(xway_addr_parse("10.1.2.3:5000", &a), 0);
	cr_assert_str_eq(xway_addr_format(&a, buf, sizeof(buf)), "10.1.2.3:5000");
	cr_assert_eq(a.family, AF_INET);
	cr_assert_eq(xway_addr_parse("10.1.2.3", &a), 0);
	cr_assert_eq(a.port, 0);
	cr_assert_eq(xway_addr_parse("[fd00::1]:80", &a), 0);
	cr_assert_str_eq(xway_addr_format(&a, buf, sizeof(buf)), "[fd00::1]:80");
	cr_assert_eq(xway_addr_parse("fd00::1", &a), 0);
	cr_assert_eq(a.family, AF_INET6);
	cr_assert_eq(xway_addr_parse("[::]:7001", &a), 0);
	cr_assert(xway_addr_is_wildcard(&a));
	cr_assert_eq(xway_addr_parse("10.1.2.3:70000", &a), -EINVAL);
	cr_assert_eq(xway_addr_parse("10.1.2.3:", &a), -EINVAL);
	cr_assert_eq(xway_addr_parse("[fd00::1", &a), -EINVAL);
	cr_assert_eq(xway_addr_parse("[fd00::1]x", &a), -EINVAL);
	cr_assert_eq(xway_addr_parse("host:80", &a), -EINVAL);
	cr_assert_eq(xway_addr_parse("", &a), -EINVAL);
}

/* A link slot holding text (NUL-padded to XWAY_LINK_REC). */
static int link_text(const char *text, struct xway_link_msg *m, const char **why)
{
	char rec[XWAY_LINK_REC];

	memset(rec, 0, sizeof(rec));
	memcpy(rec, text, strlen(text) < sizeof(rec) ? strlen(text) : sizeof(rec));
	return xway_link_parse(rec, sizeof(rec), m, why);
}

Test(link, records_round_trip)
{
	struct xway_link_msg m = { .kind = XWAY_LINK_OFFER, .id = 1700000000000001ull,
				   .ring_ref = 8, .port = 131072,
				   .cookie = 0x00ab00cd00ef0012ull }, back;
	char rec[XWAY_LINK_REC];
	const char *why = NULL;

	cr_assert_eq(xway_addr_parse("10.0.0.2:40000", &m.src), 0);
	cr_assert_eq(xway_addr_parse("[fd00::1]:5201", &m.dst), 0);
	cr_assert_eq(xway_link_format(&m, rec), 0);
	cr_assert_str_eq(rec, "offer 1700000000000001 8 131072 00ab00cd00ef0012 "
			 "10.0.0.2:40000 [fd00::1]:5201");
	cr_assert_eq(xway_link_parse(rec, sizeof(rec), &back, &why), 0, "%s", why);
	cr_assert_eq(back.kind, XWAY_LINK_OFFER);
	cr_assert_eq(back.id, m.id);
	cr_assert_eq(back.ring_ref, 8);
	cr_assert_eq(back.port, 131072);
	cr_assert_eq(back.cookie, m.cookie);
	cr_assert_eq(memcmp(&back.src, &m.src, sizeof(m.src)), 0);
	cr_assert_eq(memcmp(&back.dst, &m.dst, sizeof(m.dst)), 0);

	m = (struct xway_link_msg){ .kind = XWAY_LINK_OUTCOME, .id = 7, .claimed = true };
	cr_assert_eq(xway_link_format(&m, rec), 0);
	cr_assert_str_eq(rec, "outcome 7 claimed");
	cr_assert_eq(xway_link_parse(rec, sizeof(rec), &back, &why), 0);
	cr_assert(back.claimed);
	m.claimed = false;
	cr_assert_eq(xway_link_format(&m, rec), 0);
	cr_assert_str_eq(rec, "outcome 7 withdrawn");
	cr_assert_eq(xway_link_parse(rec, sizeof(rec), &back, &why), 0);
	cr_assert_not(back.claimed);
	m = (struct xway_link_msg){ .kind = XWAY_LINK_WITHDRAW, .id = 9 };
	cr_assert_eq(xway_link_format(&m, rec), 0);
	cr_assert_str_eq(rec, "withdraw 9");

	/* What the peer would refuse is never sent. */
	m = (struct xway_link_msg){ .kind = XWAY_LINK_WITHDRAW, .id = 0 };
	cr_assert_eq(xway_link_format(&m, rec), -EINVAL);
	m = (struct xway_link_msg){ .kind = XWAY_LINK_OFFER, .id = 1, .ring_ref = 1,
				    .port = 1, .cookie = 1 };
	cr_assert_eq(xway_link_format(&m, rec), -EINVAL, "zero addresses");
	m.kind = 0;
	cr_assert_eq(xway_link_format(&m, rec), -EINVAL);
}

Test(link, hostile_records_are_refused)
{
	/* Records written by another domain's broker: anything but the exact
	 * grammar is refused with a reason, nothing is read past the slot. */
	static const char *const bad[] = {
		"",
		"offer",
		"offer 1 8 3 00ab00cd00ef0012 10.0.0.2:1 10.0.0.1:2 extra",
		"offer 1 8 3 00ab00cd00ef0012 10.0.0.2:1",
		"offer 01 8 3 00ab00cd00ef0012 10.0.0.2:1 10.0.0.1:2",
		"offer 1 0 3 00ab00cd00ef0012 10.0.0.2:1 10.0.0.1:2",
		"offer 1 4294967296 3 00ab00cd00ef0012 10.0.0.2:1 10.0.0.1:2",
		"offer 1 8 131073 00ab00cd00ef0012 10.0.0.2:1 10.0.0.1:2",
		"offer 1 8 -3 00ab00cd00ef0012 10.0.0.2:1 10.0.0.1:2",
		"offer 1 8 3 00AB00CD00EF0012 10.0.0.2:1 10.0.0.1:2",
		"offer 1 8 3 0000000000000000 10.0.0.2:1 10.0.0.1:2",
		"offer 1 8 3 00ab00cd00ef001 10.0.0.2:1 10.0.0.1:2",
		"offer 1 8 3 00ab00cd00ef0012 10.0.0.2:0 10.0.0.1:2",
		"offer 1 8 3 00ab00cd00ef0012 10.0.0.2:1 0.0.0.0:2",
		"offer 1 8 3 00ab00cd00ef0012 10.0.0.2:1 host:2",
		"offer  1 8 3 00ab00cd00ef0012 10.0.0.2:1 10.0.0.1:2",
		"offer 1 8 3 00ab00cd00ef0012 10.0.0.2:1 10.0.0.1:2 ",
		"withdraw",
		"withdraw 18446744073709551616",
		"withdraw 1 2",
		"withdraw x",
		"outcome 1",
		"outcome 1 maybe",
		"outcome 1 claimed now",
		"OUTCOME 1 claimed",
		"hello 1",
	};
	struct xway_link_msg m;
	const char *why;
	char rec[XWAY_LINK_REC];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why = NULL;
		cr_assert_eq(link_text(bad[i], &m, &why), -EINVAL, "accepted: '%s'", bad[i]);
		cr_assert_not_null(why, "no reason for '%s'", bad[i]);
	}
	/* No NUL in the slot, or a slot of the wrong size. */
	memset(rec, 'a', sizeof(rec));
	cr_assert_eq(xway_link_parse(rec, sizeof(rec), &m, &why), -EINVAL);
	memset(rec, 0, sizeof(rec));
	strcpy(rec, "withdraw 3");
	cr_assert_eq(xway_link_parse(rec, sizeof(rec) - 1, &m, &why), -EINVAL);
	cr_assert_eq(xway_link_parse(rec, sizeof(rec), &m, &why), 0);
	cr_assert_eq(m.kind, XWAY_LINK_WITHDRAW);
	cr_assert_eq(m.id, 3);
	/* The largest id. */
	cr_assert_eq(link_text("withdraw 18446744073709551615", &m, &why), 0);
	cr_assert_eq(m.id, UINT64_MAX);
}
