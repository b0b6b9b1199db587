/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the shim's XWAY_* configuration parser (shim/config.c):
 * valid values, every kind of bad value (one clear line, acceleration
 * disabled, no crash), and the port/address include-exclude rules.
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "shim.h"

static const char *const vars[] = {
	"XWAY_DISABLE", "XWAY_LOG_LEVEL", "XWAY_LOG_FILE", "XWAY_PORTS", "XWAY_ADDRS",
	"XWAY_SPIN_US", "XWAY_RING_SIZE", "XWAY_BROKER_SOCK", "XWAY_BROKER_TIMEOUT_MS",
};

static void clean_env(void)
{
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		unsetenv(vars[i]);
}

TestSuite(config, .init = clean_env);

static struct xway_addr addr(const char *ip, int port)
{
	struct xway_addr a;
	struct in_addr a4;

	memset(&a, 0, sizeof(a));
	if (inet_pton(AF_INET, ip, &a4) == 1) {
		a.ip[10] = a.ip[11] = 0xff;
		memcpy(a.ip + 12, &a4, 4);
		a.family = AF_INET;
	} else {
		cr_assert_eq(inet_pton(AF_INET6, ip, a.ip), 1);
		a.family = AF_INET6;
	}
	a.port = htons((uint16_t)port);
	return a;
}

/* Check that an empty environment gives the defaults, enabled. */
Test(config, defaults)
{
	struct xway_config c;
	char err[256] = "";

	cr_assert_eq(xway_config_parse(&c, err, sizeof(err)), 0);
	cr_assert_eq(c.disabled, 0);
	cr_assert_eq(c.ring_order, 20);
	cr_assert_eq(c.broker_timeout_ms, 100);
	cr_assert_str_eq(c.broker_sock, "/run/xway/xwayd.sock");
	cr_assert_eq(err[0], 0);
}

/* Check that valid values are taken. */
Test(config, valid_values)
{
	struct xway_config c;
	char err[256] = "";

	setenv("XWAY_RING_SIZE", "64k", 1);
	setenv("XWAY_SPIN_US", "20", 1);
	setenv("XWAY_BROKER_TIMEOUT_MS", "250", 1);
	setenv("XWAY_BROKER_SOCK", "/tmp/b.sock", 1);
	setenv("XWAY_LOG_LEVEL", "debug", 1);
	cr_assert_eq(xway_config_parse(&c, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.ring_order, 16);
	cr_assert_eq(c.spin_ns, 20000);
	cr_assert_eq(c.broker_timeout_ms, 250);
	cr_assert_str_eq(c.broker_sock, "/tmp/b.sock");
	cr_assert_eq(c.log_level, XWAY_LOG_DEBUG);
	setenv("XWAY_RING_SIZE", "64M", 1);
	cr_assert_eq(xway_config_parse(&c, err, sizeof(err)), 0);
	cr_assert_eq(c.ring_order, 26);
}

/* Check that each bad value disables acceleration with one clear line. */
Test(config, bad_values)
{
	static const char *const bad[][2] = {
		{ "XWAY_RING_SIZE", "12x" }, { "XWAY_RING_SIZE", "3000" },
		{ "XWAY_RING_SIZE", "2k" }, { "XWAY_RING_SIZE", "128M" },
		{ "XWAY_RING_SIZE", "99999999999999999999999" }, { "XWAY_RING_SIZE", "k" },
		{ "XWAY_SPIN_US", "-1" }, { "XWAY_SPIN_US", "5s" },
		{ "XWAY_BROKER_TIMEOUT_MS", "0" }, { "XWAY_LOG_LEVEL", "loud" },
		{ "XWAY_DISABLE", "yes" }, { "XWAY_PORTS", "5000-" },
		{ "XWAY_PORTS", "70000" }, { "XWAY_PORTS", "6000-5000" },
		{ "XWAY_PORTS", "1,,2" }, { "XWAY_ADDRS", "10.0.0.0/33" },
		{ "XWAY_ADDRS", "nonsense" }, { "XWAY_ADDRS", "10.0.0.1," },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct xway_config c;
		char err[256] = "";

		clean_env();
		setenv(bad[i][0], bad[i][1], 1);
		cr_assert_eq(xway_config_parse(&c, err, sizeof(err)), -EINVAL,
			     "%s=%s accepted", bad[i][0], bad[i][1]);
		cr_assert_eq(c.disabled, 1);
		cr_assert(strstr(err, "xway: bad ") == err, "message: %s", err);
		cr_assert(strstr(err, bad[i][0]), "names the variable: %s", err);
		cr_assert(strstr(err, "acceleration disabled"), "%s", err);
		cr_assert_eq(strchr(err, '\n'), err + strlen(err) - 1, "one line: %s", err);
	}
}

/* Check that a log file that cannot be opened costs the log only: one
 * warning line, acceleration stays (an exec'ed image that inherited
 * connections must keep serving them; a CGI child that switched to nobody
 * cannot write root's log). */
Test(config, log_file_unwritable)
{
	struct xway_config c;
	char err[256] = "";

	clean_env();
	setenv("XWAY_LOG_FILE", "/nonexistent/dir/log", 1);
	cr_assert_eq(xway_config_parse(&c, err, sizeof(err)), 0);
	cr_assert_eq(c.disabled, 0);
	cr_assert_lt(c.log_fd, 0);
	cr_assert(strstr(err, "XWAY_LOG_FILE") && strstr(err, "logging to stderr"),
		  "message: %s", err);
	cr_assert_eq(strchr(err, '\n'), err + strlen(err) - 1, "one line: %s", err);
}

/* Check that XWAY_DISABLE=1 disables quietly. */
Test(config, disable)
{
	struct xway_config c;
	char err[256] = "";

	setenv("XWAY_DISABLE", "1", 1);
	cr_assert_eq(xway_config_parse(&c, err, sizeof(err)), 0);
	cr_assert_eq(c.disabled, 1);
	cr_assert_eq(err[0], 0);
}

/* Check include/exclude rules for ports and addresses. */
Test(config, rules)
{
	struct xway_config c;
	char err[256] = "";

	setenv("XWAY_PORTS", "5000-6000,!5555,80", 1);
	setenv("XWAY_ADDRS", "127.0.0.0/8,!127.0.0.2,::1", 1);
	cr_assert_eq(xway_config_parse(&c, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.n_ports, 3);
	cr_assert_eq(c.n_addrs, 3);
	struct xway_addr a;
	a = addr("127.0.0.1", 5000); cr_assert(xway_config_allows(&c, &a));
	a = addr("127.0.0.1", 80);   cr_assert(xway_config_allows(&c, &a));
	a = addr("127.0.0.1", 5555); cr_assert(!xway_config_allows(&c, &a));
	a = addr("127.0.0.1", 6001); cr_assert(!xway_config_allows(&c, &a));
	a = addr("127.0.0.2", 5000); cr_assert(!xway_config_allows(&c, &a));
	a = addr("10.0.0.1", 5000);  cr_assert(!xway_config_allows(&c, &a));
	a = addr("::1", 5001);       cr_assert(xway_config_allows(&c, &a));
	a = addr("::2", 5001);       cr_assert(!xway_config_allows(&c, &a));

	clean_env();
	setenv("XWAY_PORTS", "!22", 1);
	cr_assert_eq(xway_config_parse(&c, err, sizeof(err)), 0);
	a = addr("10.1.2.3", 22);   cr_assert(!xway_config_allows(&c, &a));
	a = addr("10.1.2.3", 2222); cr_assert(xway_config_allows(&c, &a));
}

/* Check the size parser's edges. */
Test(config, sizes)
{
	uint64_t v;

	cr_assert_eq(xway_parse_size("4096", &v), 0); cr_assert_eq(v, 4096);
	cr_assert_eq(xway_parse_size("1K", &v), 0);   cr_assert_eq(v, 1024);
	cr_assert_eq(xway_parse_size("", &v), -EINVAL);
	cr_assert_eq(xway_parse_size("1G", &v), -EINVAL);
	cr_assert_eq(xway_parse_size("18446744073709551615k", &v), -EINVAL);
}
