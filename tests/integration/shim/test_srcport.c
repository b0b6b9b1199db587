/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the client's source-port choice (shim/srcport.c): the
 * parser of ip_local_port_range / ip_local_reserved_ports (what the kernel
 * writes, and everything else refused), and xway_bind_ephemeral on real
 * sockets: bound, inside this namespace's range, never a reserved port,
 * random (not the kernel's bind(0), whose ordered choices made a churn
 * slow down), and bind(0) kept for a socket with SO_REUSEADDR.
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "shim.h"

/* srcport.c calls the real functions through the shim's table. */
static ssize_t t_read(int fd, void *b, size_t n) { return read(fd, b, n); }
static int t_close(int fd) { return close(fd); }
static int t_bind(int fd, const struct sockaddr *sa, socklen_t l) { return bind(fd, sa, l); }
static int t_getsockopt(int fd, int lv, int n, void *v, socklen_t *l)
{
	return getsockopt(fd, lv, n, v, l);
}
struct xway_real real = { .read = t_read, .close = t_close, .bind = t_bind,
			  .getsockopt = t_getsockopt };

Test(srcport, parses_what_the_kernel_writes)
{
	struct xway_srcport_cfg c;

	cr_assert_eq(xway_srcport_parse("32768\t60999\n", "\n", &c), 0);
	cr_assert_eq(c.lo, 32768);
	cr_assert_eq(c.hi, 60999);
	cr_assert_eq(c.nres, 0);
	cr_assert_eq(xway_srcport_parse("1024 65535\n", "8080,9000-9010\n", &c), 0);
	cr_assert_eq(c.nres, 2);
	cr_assert(c.res[0].lo == 8080 && c.res[0].hi == 8080);
	cr_assert(c.res[1].lo == 9000 && c.res[1].hi == 9010);
	cr_assert_eq(xway_srcport_parse("40000 40000", "", &c), 0);
}

Test(srcport, refuses_anything_else)
{
	static const char *const bad[][2] = {
		{ "", "" }, { "abc", "" }, { "0 10", "" }, { "10 5", "" },
		{ "1 70000", "" }, { "-1 10", "" }, { "100 200", "1-" },
		{ "100 200", "5-3" }, { "100 200", "a" }, { "100 200", "1,,2" },
		{ "100 200", "1;2" },
	};
	struct xway_srcport_cfg c;
	char many[512] = "";

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(xway_srcport_parse(bad[i][0], bad[i][1], &c), -1, "case %zu", i);
	for (int i = 0; i <= XWAY_SRCPORT_RESERVED_MAX; i++)
		snprintf(many + strlen(many), sizeof(many) - strlen(many), "%s%d", i ? "," : "",
			 2000 + i);
	cr_assert_eq(xway_srcport_parse("100 200", many, &c), -1, "too many reserved ranges");
}

static void read_range(struct xway_srcport_cfg *c)
{
	char r[64] = "", res[512] = "";
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");

	cr_assert(f);
	cr_assert(fgets(r, sizeof(r), f));
	fclose(f);
	if ((f = fopen("/proc/sys/net/ipv4/ip_local_reserved_ports", "r"))) {
		if (!fgets(res, sizeof(res), f))
			res[0] = 0;
		fclose(f);
	}
	cr_assert_eq(xway_srcport_parse(r, res, c), 0, "range '%s' reserved '%s'", r, res);
}

static uint16_t bound_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t l = sizeof(ss);

	cr_assert_eq(getsockname(fd, (struct sockaddr *)&ss, &l), 0);
	return ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
					     : ((struct sockaddr_in6 *)&ss)->sin6_port);
}

Test(srcport, binds_random_ports_of_the_range)
{
	struct xway_srcport_cfg c;
	int fds[16];
	uint16_t lo = 65535, hi = 0;
	unsigned odd = 0;

	read_range(&c);
	for (int i = 0; i < 16; i++) {
		uint16_t p;

		fds[i] = socket(i % 2 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
		cr_assert_geq(fds[i], 0);
		uint16_t said = 0;

		/* Half told the socket's options are known (a fresh socket:
		 * no getsockopt), half not. */
		cr_assert_eq(xway_bind_ephemeral(fds[i], i % 2 ? AF_INET6 : AF_INET,
						 0x1234567ull * (uint64_t)(i + 1), i & 2, &said), 0);
		p = bound_port(fds[i]);
		cr_assert_eq(said, p, "bound port %u, said %u", p, said);
		cr_assert(p >= c.lo && p <= c.hi, "port %u outside %u-%u", p, c.lo, c.hi);
		for (unsigned k = 0; k < c.nres; k++)
			cr_assert(p < c.res[k].lo || p > c.res[k].hi, "reserved port %u", p);
		odd += p & 1;
		lo = p < lo ? p : lo;
		hi = p > hi ? p : hi;
	}
	/* The kernel's bind(0) takes ports of one parity while there are
	 * (leaving the other to connect()): its 16 ports would all be odd or
	 * all even.  Random ones are both (all of one parity: 2 in 65536). */
	cr_assert(odd > 0 && odd < 16, "%u of 16 ports odd: not random ports", odd);
	if (c.hi - c.lo > 2000)
		cr_assert_gt(hi - lo, 64, "16 ports within %u-%u", lo, hi);
	for (int i = 0; i < 16; i++)
		close(fds[i]);
}

Test(srcport, reuseaddr_sockets_keep_the_kernels_choice)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

	cr_assert_geq(fd, 0);
	cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)), 0);
	uint16_t said = 1;

	cr_assert_eq(xway_bind_ephemeral(fd, AF_INET, 42, 0, &said), 0);
	cr_assert_neq(bound_port(fd), 0);
	cr_assert_eq(said, 0, "the kernel's choice is not known without getsockname");
	close(fd);
}
