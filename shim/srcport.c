/* SPDX-License-Identifier: MIT */
/*
 * The source port of a client connection, chosen before its SYN.  The
 * offer names the connection's 4-tuple before the SYN leaves (DESIGN
 * §2.2), so the shim binds a socket the application left unbound itself.
 *
 * bind() to port 0 is not connect()'s automatic bind: the kernel then scans
 * the ephemeral range in order from a random start (one parity first) and
 * takes the first port with no socket at all on it, TIME_WAIT remnants
 * included, where connect() may give one port to several 4-tuples.  Under a
 * churn of short connections the ports bind(0) hands out are consecutive,
 * their TIME_WAIT remnants (60 s) form long runs, and every later bind(0)
 * walks them: three 2-second churns in a row on loopback in a fresh network
 * namespace ran at 4563, 2795 and 478 connections/s under the shim (kernel
 * TCP ~15000 each), the last with the kernel's bind conflict checks at the
 * top of the profile.  So the shim picks the port itself: a few uniformly
 * random ports of ip_local_port_range, bound explicitly (the kernel then
 * checks that one port), skipping ip_local_reserved_ports as the kernel's
 * own choice does.  Random choices leave no runs to walk.
 *
 * A port bound by bind() is never shared by another socket's connect():
 * while any socket or TIME_WAIT remnant holds it, the kernel's automatic
 * bind skips it (its bind bucket says "bound by bind()"), where it could
 * otherwise reuse it for another destination, or reuse a loopback remnant
 * (tcp_tw_reuse=2).  Measured: once a churn under the shim had left
 * remnants on every port of a namespace, plain connect() failed there with
 * EADDRNOTAVAIL, for every process.  So the shim binds ports only while
 * at most about three quarters of the range is taken: it keeps the share of
 * tried ports it found taken (an average over the last ~32), and above
 * three quarters its connections stay on TCP (reason setup-bind; one in 16
 * still tries a port, which keeps the estimate current), as they do when
 * all 16 random ports tried for one connection are taken; never bind(0)
 * there, which would take one of the last free ports.  A client making
 * more short connections than three quarters of the range holds per
 * TIME_WAIT period (21174 ports, 60 s: ~350 a second sustained) has its
 * further connections on TCP until remnants end, and connect() keeps a
 * quarter of the range to share.
 *
 * bind(0) remains where the range cannot be read (no /proc in a chroot, a
 * seccomp filter: the answer is kept, the files are read once per process
 * image), or when the socket has SO_REUSEADDR or SO_REUSEPORT set: an
 * explicit port may then be shared with another such socket, which bind(0)
 * never does, and a connect() to that socket's destination would fail where
 * the kernel's choice works.  When bind(0) finds no port (it scans the
 * whole range to say so: milliseconds), connections go to TCP without
 * trying for a second.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "errno.h"
#include "shim.h"

/* Ports tried per connection: all taken has odds 0.45^16 = 3e-6 at the
 * occupancy a test suite's 10000 connections a minute leave. */
#define SRCPORT_TRIES   16
/* Busy estimate: the share of tried ports found taken, in 1/1024, an
 * average over the last ~32 tries; above SRCPORT_BUSY_MAX (three
 * quarters) the shim binds no port (one connection in SRCPORT_SAMPLE still
 * tries one, which keeps the estimate current). */
#define SRCPORT_BUSY_MAX 768
#define SRCPORT_SAMPLE   16
#define SRCPORT_FULL_NS 1000000000      /* 1 s */

/* 0 not read yet, 1 usable (xw_cfg valid), -1 unusable, 2 being stored. */
static int xw_state;
static struct xway_srcport_cfg xw_cfg;

/* The whole (small) file, NUL-terminated; -errno.  Raw libc calls: read
 * and close are interposed. */
static int read_small(const char *path, char *buf, size_t len)
{
	int fd = openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = real.read(fd, buf, len - 1);
	real.close(fd);
	if (n < 0)
		return -EIO;
	buf[n] = 0;
	return 0;
}

static int parse_u16(const char **p, uint16_t *out)
{
	char *end;
	unsigned long v;

	if (**p < '0' || **p > '9')
		return -1;
	v = strtoul(*p, &end, 10);
	if (v > 65535)
		return -1;
	*out = (uint16_t)v;
	*p = end;
	return 0;
}

/* "LO\tHI\n" and "A,B-C,...\n" (empty: none).  0 or -1. */
int xway_srcport_parse(const char *range, const char *reserved, struct xway_srcport_cfg *c)
{
	const char *p = range;

	memset(c, 0, sizeof(*c));
	if (parse_u16(&p, &c->lo))
		return -1;
	while (*p == ' ' || *p == '\t')
		p++;
	if (parse_u16(&p, &c->hi) || c->lo == 0 || c->hi < c->lo)
		return -1;
	for (p = reserved; *p && *p != '\n';) {
		struct xway_srcport_range r;

		if (c->nres == XWAY_SRCPORT_RESERVED_MAX || parse_u16(&p, &r.lo))
			return -1;
		r.hi = r.lo;
		if (*p == '-') {
			p++;
			if (parse_u16(&p, &r.hi) || r.hi < r.lo)
				return -1;
		}
		c->res[c->nres++] = r;
		if (*p == ',')
			p++;
		else if (*p && *p != '\n')
			return -1;
	}
	return 0;
}

/* Read and parse the files; publish the result (unusable: -1). */
static const struct xway_srcport_cfg *load_cfg(void)
{
	static _Thread_local struct xway_srcport_cfg mine;
	char range[64], reserved[512];
	int expect = 0;

	if (read_small("/proc/sys/net/ipv4/ip_local_port_range", range, sizeof(range)) ||
	    read_small("/proc/sys/net/ipv4/ip_local_reserved_ports", reserved,
		       sizeof(reserved)) ||
	    xway_srcport_parse(range, reserved, &mine)) {
		__atomic_store_n(&xw_state, -1, __ATOMIC_RELEASE);
		return NULL;
	}
	/* One thread stores it (release: the fields before the state);
	 * another one reading meanwhile uses its own copy. */
	if (__atomic_compare_exchange_n(&xw_state, &expect, 2, false, __ATOMIC_ACQUIRE,
					__ATOMIC_RELAXED)) {
		xw_cfg = mine;
		__atomic_store_n(&xw_state, 1, __ATOMIC_RELEASE);
	}
	return &mine;
}

/* The kernel's range for this process, read once; NULL if unusable.  The
 * application's errno is kept (the reads run inside its connect()). */
static const struct xway_srcport_cfg *srcport_cfg(void)
{
	int st = __atomic_load_n(&xw_state, __ATOMIC_ACQUIRE), saved;
	const struct xway_srcport_cfg *c;

	if (st == 1)
		return &xw_cfg;
	if (st == -1)
		return NULL;
	saved = errno;
	c = load_cfg();
	errno = saved;
	return c;
}

static int reserved(const struct xway_srcport_cfg *c, uint16_t port)
{
	for (unsigned i = 0; i < c->nres; i++)
		if (port >= c->res[i].lo && port <= c->res[i].hi)
			return 1;
	return 0;
}

static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static int sock_flag(int fd, int name)
{
	int v = 0;
	socklen_t l = sizeof(v);

	return XWAY_SYS(real.getsockopt(fd, SOL_SOCKET, name, &v, &l)) < 0 || v != 0;
}

socklen_t xway_wildcard_sockaddr(int family, uint16_t port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *s4 = (void *)ss;

		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		return sizeof(*s4);
	}
	struct sockaddr_in6 *s6 = (void *)ss;

	s6->sin6_family = AF_INET6;
	s6->sin6_port = htons(port);
	return sizeof(*s6);
}

static int bind_port(int fd, int family, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t sl = xway_wildcard_sockaddr(family, port, &ss);

	return (int)XWAY_SYS(real.bind(fd, (struct sockaddr *)&ss, sl));
}

/* CLOCK_MONOTONIC_COARSE ns until which the range is taken as full: the
 * kernel's bind(0) found no port.  It scans the whole range to say so
 * (milliseconds with tens of thousands of remnants), so for a while each
 * connection goes to TCP at once instead (setup-bind); 0: not full.
 * Relaxed: a stale value costs one scan or one connection on TCP. */
static int64_t xw_full_until;
static unsigned xw_busy, xw_skipped;      /* relaxed: an estimate */

static void busy_note(int taken)
{
	unsigned b = __atomic_load_n(&xw_busy, __ATOMIC_RELAXED);

	b = b - b / 32 + (taken ? 1024 / 32 : 0);
	__atomic_store_n(&xw_busy, b, __ATOMIC_RELAXED);
}

static int64_t coarse_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int xway_bind_ephemeral(int fd, int family, uint64_t seed, int reuse_off, uint16_t *port)
{
	const struct xway_srcport_cfg *c = srcport_cfg();
	int64_t full = __atomic_load_n(&xw_full_until, __ATOMIC_RELAXED);
	int r = -EADDRINUSE;

	if (port)
		*port = 0;
	if (full) {
		if (coarse_ns() < full)
			return -EADDRINUSE;
		__atomic_store_n(&xw_full_until, 0, __ATOMIC_RELAXED);
	}

	if (c && (reuse_off || (!sock_flag(fd, SO_REUSEADDR) && !sock_flag(fd, SO_REUSEPORT)))) {
		uint32_t span = (uint32_t)c->hi - c->lo + 1;
		unsigned tried = 0, tries = SRCPORT_TRIES;

		if (__atomic_load_n(&xw_busy, __ATOMIC_RELAXED) > SRCPORT_BUSY_MAX) {
			/* Most of the range is taken: leave the rest to
			 * connect() (see above), but sample it now and then. */
			if (__atomic_add_fetch(&xw_skipped, 1, __ATOMIC_RELAXED) % SRCPORT_SAMPLE)
				return -EADDRINUSE;
			tries = 1;
		}
		for (unsigned i = 0; i < tries; i++) {
			uint16_t p = (uint16_t)(c->lo + mix64(seed + i) % span);

			if (reserved(c, p))
				continue;
			tried++;
			r = bind_port(fd, family, p);
			if (r == 0 || r == -EADDRINUSE)
				busy_note(r != 0);
			if (r == 0 && port)
				*port = p;
			if (r == 0 || r == -EINVAL)     /* EINVAL: bound meanwhile */
				return r;
			if (r != -EADDRINUSE)
				break;          /* the kernel's own choice below */
		}
		/* Every port tried holds a socket or a remnant: most of the
		 * range does.  Not bind(0): it would take one of the last
		 * ports connect() can still share (see above); this
		 * connection stays on TCP. */
		if (r == -EADDRINUSE && (tried || tries == 1))
			return r;
	}
	r = bind_port(fd, family, 0);
	if (r == -EADDRINUSE)
		__atomic_store_n(&xw_full_until, coarse_ns() + SRCPORT_FULL_NS,
				 __ATOMIC_RELAXED);
	return r;
}
