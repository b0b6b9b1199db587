/* SPDX-License-Identifier: MIT */
/*
 * The XWAY_* environment: parsed once at start-up, validated completely.  A
 * bad value yields one clear line and leaves acceleration disabled (the
 * application runs on plain TCP); nothing here can crash on any input.
 * Pure apart from getenv/open (XWAY_LOG_FILE), so the unit test drives it
 * through setenv.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shim.h"

/* "64k", "1M", "4096": bytes; k/K = 1024, m/M = 1024^2.  -EINVAL on
 * anything else, including overflow. */
int xway_parse_size(const char *s, uint64_t *out)
{
	uint64_t v = 0, mul = 1;
	const char *p = s;

	if (!s || !*s)
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > (UINT64_MAX - 9) / 10)
			return -EINVAL;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (p == s)
		return -EINVAL;
	if (*p == 'k' || *p == 'K')
		mul = 1024, p++;
	else if (*p == 'm' || *p == 'M')
		mul = 1024 * 1024, p++;
	if (*p)
		return -EINVAL;
	if (v > UINT64_MAX / mul)
		return -EINVAL;
	*out = v * mul;
	return 0;
}

static int xway_parse_uint(const char *s, const char **end, unsigned long max,
			   unsigned long *out)
{
	unsigned long v = 0;
	const char *p = s;

	for (; *p >= '0' && *p <= '9'; p++) {
		v = v * 10 + (unsigned long)(*p - '0');
		if (v > max)
			return -EINVAL;
	}
	if (p == s)
		return -EINVAL;
	*end = p;
	*out = v;
	return 0;
}

/* "5000-6000,!22,80": returns the rule count or -EINVAL. */
int xway_parse_ports(const char *s, struct xway_port_rule *r, int max)
{
	int n = 0;
	const char *p = s;

	if (!s || !*s)
		return 0;
	for (;;) {
		unsigned long lo, hi;
		int ex = 0;

		if (*p == '!')
			ex = 1, p++;
		if (xway_parse_uint(p, &p, 65535, &lo) < 0)
			return -EINVAL;
		hi = lo;
		if (*p == '-' && xway_parse_uint(p + 1, &p, 65535, &hi) < 0)
			return -EINVAL;
		if (hi < lo || n >= max)
			return -EINVAL;
		r[n].lo = (uint16_t)lo;
		r[n].hi = (uint16_t)hi;
		r[n].exclude = (uint8_t)ex;
		n++;
		if (!*p)
			return n;
		if (*p != ',')
			return -EINVAL;
		p++;
	}
}

/* "10.0.0.0/8,!127.0.0.1,::1/128": IPv4 rules are stored v4-mapped. */
int xway_parse_addrs(const char *s, struct xway_addr_rule *r, int max)
{
	int n = 0;
	const char *p = s;

	if (!s || !*s)
		return 0;
	while (*p) {
		char tok[64];
		const char *e = strchr(p, ',');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		char *slash;
		unsigned long pfx;
		int ex = 0, v4;
		struct in_addr a4;

		if (len == 0 || len >= sizeof(tok) || n >= max)
			return -EINVAL;
		memcpy(tok, p, len);
		tok[len] = 0;
		p += len + (e ? 1 : 0);
		if (e && !*p)
			return -EINVAL;            /* trailing comma */
		char *t = tok;
		if (*t == '!')
			ex = 1, t++;
		slash = strchr(t, '/');
		if (slash)
			*slash = 0;
		memset(r[n].ip, 0, 16);
		v4 = inet_pton(AF_INET, t, &a4) == 1;
		if (v4) {
			r[n].ip[10] = r[n].ip[11] = 0xff;
			memcpy(r[n].ip + 12, &a4, 4);
		} else if (inet_pton(AF_INET6, t, r[n].ip) != 1) {
			return -EINVAL;
		}
		pfx = v4 ? 32 : 128;
		if (slash) {
			const char *q;
			if (xway_parse_uint(slash + 1, &q, v4 ? 32 : 128, &pfx) < 0
			    || *q)
				return -EINVAL;
		}
		r[n].prefix = (uint8_t)(v4 ? pfx + 96 : pfx);
		r[n].exclude = (uint8_t)ex;
		n++;
	}
	return n;
}

static int xway_prefix_match(const uint8_t *a, const uint8_t *b, unsigned bits)
{
	unsigned i;

	for (i = 0; i + 8 <= bits; i += 8)
		if (a[i / 8] != b[i / 8])
			return 0;
	if (i < bits) {
		uint8_t m = (uint8_t)(0xff << (8 - (bits - i)));
		if ((a[i / 8] & m) != (b[i / 8] & m))
			return 0;
	}
	return 1;
}

/* A list with include rules admits only what one of them matches; an
 * exclude rule always wins.  An empty list admits everything. */
int xway_config_allows(const struct xway_config *cfg, const struct xway_addr *dst)
{
	uint16_t port = ntohs(dst->port);
	int incl = 0, hit = 0;

	for (int i = 0; i < cfg->n_ports; i++) {
		const struct xway_port_rule *r = &cfg->ports[i];
		int m = port >= r->lo && port <= r->hi;
		if (r->exclude && m)
			return 0;
		if (!r->exclude) {
			incl = 1;
			hit |= m;
		}
	}
	if (incl && !hit)
		return 0;
	incl = hit = 0;
	for (int i = 0; i < cfg->n_addrs; i++) {
		const struct xway_addr_rule *r = &cfg->addrs[i];
		int m = xway_prefix_match(dst->ip, r->ip, r->prefix);
		if (r->exclude && m)
			return 0;
		if (!r->exclude) {
			incl = 1;
			hit |= m;
		}
	}
	return !incl || hit;
}

static int xway_bad(char *err, size_t errlen, const char *var, const char *val,
		    const char *expected)
{
	if (err && errlen)
		snprintf(err, errlen, "xway: bad %s='%.60s': expected %s; "
			 "acceleration disabled\n", var, val, expected);
	return -EINVAL;
}

int xway_config_parse(struct xway_config *cfg, char *err, size_t errlen)
{
	const char *v;
	uint64_t u;
	unsigned long ul;
	const char *end;
	int n;

	memset(cfg, 0, sizeof(*cfg));
	cfg->disabled = 1;                 /* until everything is valid */
	cfg->log_level = XWAY_LOG_WARN;
	cfg->log_fd = -1;
	cfg->ring_order = 20;
	cfg->broker_timeout_ms = 100;
	snprintf(cfg->broker_sock, sizeof(cfg->broker_sock), "%s",
		 XWAY_BROKER_SOCK_DEFAULT);

	if ((v = getenv("XWAY_LOG_LEVEL")) && *v) {
		static const char *const names[] = { "error", "warn", "info", "debug" };
		int lvl = -1;
		for (int i = 0; i < 4; i++)
			if (!strcmp(v, names[i]))
				lvl = i;
		if (lvl < 0)
			return xway_bad(err, errlen, "XWAY_LOG_LEVEL", v,
					"error, warn, info or debug");
		cfg->log_level = lvl;
	}
	if ((v = getenv("XWAY_LOG_FILE")) && *v) {
		int fd = open(v, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
		/* A file this process cannot write (a CGI child that switched
		 * to nobody inherits root's log path) costs the log, never the
		 * acceleration: an image that inherited connections by exec
		 * and then ran without the shim would use the kernel socket
		 * while the peer uses the ring.  One warning line, stderr. */
		if (fd < 0 && err && errlen)
			snprintf(err, errlen, "xway: cannot open XWAY_LOG_FILE='%.60s' "
				 "(%s): logging to stderr\n", v, strerror(errno));
		cfg->log_fd = fd;      /* real.c moves it to a high number */
	}
	if ((v = getenv("XWAY_DISABLE")) && *v) {
		if (!strcmp(v, "1"))
			return 0;          /* disabled on purpose: no message */
		if (strcmp(v, "0"))
			return xway_bad(err, errlen, "XWAY_DISABLE", v, "0 or 1");
	}
	if ((v = getenv("XWAY_RING_SIZE")) && *v) {
		if (xway_parse_size(v, &u) < 0 || u < (1u << XWAY_RING_ORDER_MIN) ||
		    u > (1u << XWAY_RING_ORDER_MAX) || (u & (u - 1)))
			return xway_bad(err, errlen, "XWAY_RING_SIZE", v,
					"a power of two from 4k to 64M (k/M suffixes)");
		cfg->ring_order = (uint32_t)__builtin_ctzll(u);
	}
	if ((v = getenv("XWAY_SPIN_US")) && *v) {
		if (xway_parse_uint(v, &end, 1000000, &ul) < 0 || *end)
			return xway_bad(err, errlen, "XWAY_SPIN_US", v,
					"microseconds 0..1000000");
		/* 0 means "never spin" to the user; the channel's 0 is "default". */
		cfg->spin_ns = ul ? (uint32_t)(ul * 1000) : UINT32_MAX;
	}
	if ((v = getenv("XWAY_BROKER_TIMEOUT_MS")) && *v) {
		if (xway_parse_uint(v, &end, 60000, &ul) < 0 || *end || ul == 0)
			return xway_bad(err, errlen, "XWAY_BROKER_TIMEOUT_MS", v,
					"milliseconds 1..60000");
		cfg->broker_timeout_ms = (int)ul;
	}
	if ((v = getenv("XWAY_BROKER_SOCK")) && *v) {
		if (strlen(v) >= sizeof(cfg->broker_sock))
			return xway_bad(err, errlen, "XWAY_BROKER_SOCK", v,
					"a socket path shorter than 108 bytes");
		snprintf(cfg->broker_sock, sizeof(cfg->broker_sock), "%s", v);
	}
	if ((v = getenv("XWAY_PORTS")) && *v) {
		n = xway_parse_ports(v, cfg->ports, XWAY_MAX_RULES);
		if (n < 0)
			return xway_bad(err, errlen, "XWAY_PORTS", v,
					"a list like 5000-6000,!22 (at most 32 rules)");
		cfg->n_ports = n;
	}
	if ((v = getenv("XWAY_ADDRS")) && *v) {
		n = xway_parse_addrs(v, cfg->addrs, XWAY_MAX_RULES);
		if (n < 0)
			return xway_bad(err, errlen, "XWAY_ADDRS", v,
					"a list of CIDRs like 10.0.0.0/8,!10.0.0.1,::1/128");
		cfg->n_addrs = n;
	}
	cfg->disabled = 0;
	return 0;
}
