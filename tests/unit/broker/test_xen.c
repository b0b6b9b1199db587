/* SPDX-License-Identifier: MIT */
/*
 * xwayd in Xen mode against a stand-in libxenstore (fake_xenstore.c: a
 * directory tree with inotify watches), since CI has no Xen: the broker
 * publishes its instance, addresses and listeners under /local/xway/<domid>,
 * discovers the other domains (at start and through the watch), shows them
 * in `peers`, and declines offers to another domain's listener as
 * not-coresident (cross-domain channels are not implemented).  The real
 * xenstore path is exercised by the Xen test bed.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helper.h"

static struct tbroker B;
static int bfd = -1;
static char store[64];

static void put(const char *rel, const char *val)
{
	char p[256], cmd[512];
	FILE *f;

	snprintf(p, sizeof(p), "%s/%s", store, rel);
	snprintf(cmd, sizeof(cmd), "mkdir -p \"$(dirname '%s')\"", p);
	cr_assert_eq(system(cmd), 0);
	f = fopen(p, "w");
	cr_assert(f);
	fputs(val, f);
	fclose(f);
}

static char *get(const char *rel)
{
	static char buf[4096];
	char p[256];
	FILE *f;
	size_t n;

	snprintf(p, sizeof(p), "%s/%s", store, rel);
	if (!(f = fopen(p, "r")))
		return NULL;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	fclose(f);
	return buf;
}

static void setup(void)
{
	char lib[256], dir[300];

	strcpy(store, "/tmp/xway-fakexs.XXXXXX");
	cr_assert(mkdtemp(store));
	put("local/domain/self/domid", "1");
	put("local/xway/2/instance", "00000000000000aa");
	put("local/xway/2/addrs", "192.0.2.50:0 [2001:db8::50]:0");
	put("local/xway/2/listeners", "0.0.0.0:7000 [::]:7001 not-an-address");
	setenv("XWAY_FAKE_XENSTORE", store, 1);
	tb_bin("tests/unit/broker/fakexs/libxenstore.so.4", lib, sizeof(lib));
	cr_assert_eq(access(lib, R_OK), 0, "fake libxenstore not built: %s", lib);
	snprintf(dir, sizeof(dir), "%s", lib);
	*strrchr(dir, '/') = 0;
	setenv("LD_LIBRARY_PATH", dir, 1);
	cr_assert_eq(tb_start(&B, "mode=xen\n"), 0, "xwayd did not start in xen mode");
	bfd = tb_connect(B.sock);
	cr_assert_geq(bfd, 0);
}

static void teardown(void)
{
	char cmd[128];

	if (bfd >= 0)
		close(bfd);
	cr_expect_eq(tb_stop(&B), 0);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", store);
	cr_expect_eq(system(cmd), 0);
}

/* Poll (up to 5 s) until fn's query output contains want. */
static bool eventually(uint32_t what, const char *want)
{
	for (int i = 0; i < 500; i++) {
		char *q = tb_query(bfd, what, true);
		bool ok = q && strstr(q, want);

		free(q);
		if (ok)
			return true;
		usleep(10000);
	}
	return false;
}

TestSuite(xen, .init = setup, .fini = teardown, .timeout = 60);

Test(xen, publishes_and_discovers)
{
	/* Check HELLO_OK says xen, our instance is published, domain 2 is
	 * discovered at start with its two valid listeners. */
	struct xway_hello h = { .shim_version = 1 };
	struct xway_hello_ok ok;
	int rfds[8];
	unsigned n = 0;
	char inst[24], *v;

	cr_assert_eq(tb_call(bfd, XWAY_MSG_HELLO, &h, sizeof(h), NULL, 0, &ok, sizeof(ok),
			     rfds, &n), XWAY_MSG_HELLO_OK);
	for (unsigned i = 0; i < n; i++)
		close(rfds[i]);
	cr_assert_eq(ok.mode, 2);
	snprintf(inst, sizeof(inst), "%016llx", (unsigned long long)ok.instance);
	v = get("local/xway/1/instance");
	cr_assert(v && !strcmp(v, inst), "published instance '%s', want %s", v, inst);
	cr_assert(get("local/xway/1/addrs"), "addresses not published");
	cr_assert(eventually(XWAY_Q_PEERS, "{\"domid\":2,\"instance\":\"00000000000000aa\","
					   "\"addrs\":[\"192.0.2.50:0\",\"[2001:db8::50]:0\"],"
					   "\"listeners\":2}"), "domain 2 not discovered");
	cr_assert(eventually(XWAY_Q_STATUS, "\"mode\":\"xen\""));
}

Test(xen, listeners_are_published)
{
	/* Check that a registered wildcard listener appears in our entry and
	 * a loopback one does not. */
	struct xway_addr a, lo;
	int l = tb_listener("0.0.0.0", &a), ll = tb_listener("127.0.0.1", &lo);
	char want[64], *v = NULL;

	cr_assert_eq(tb_listen_add(bfd, l, &a), 0);
	cr_assert_eq(tb_listen_add(bfd, ll, &lo), 0);
	snprintf(want, sizeof(want), "0.0.0.0:%u", ntohs(a.port));
	for (int i = 0; i < 500; i++) {
		free(tb_query(bfd, XWAY_Q_STATUS, false));   /* let the idle run */
		v = get("local/xway/1/listeners");
		if (v && strstr(v, want))
			break;
		usleep(10000);
	}
	cr_assert(v && strstr(v, want), "listeners entry '%s' lacks %s", v, want);
	cr_assert(!strstr(v, "127.0.0.1"), "loopback listener published: %s", v);
	close(l);
	close(ll);
}

Test(xen, offer_to_other_domain_is_declined)
{
	/* Check an offer to domain 2's listener gets NOT_CORESIDENT with a
	 * detail naming the domain, and one to an unknown address too. */
	struct xway_addr dst, src;
	struct tchan ch;
	uint32_t reason = 0;
	int s = tb_bound("127.0.0.1", &src);
	char *q;

	cr_assert_eq(tb_chan(&ch, tb_random64(), 12), 0);
	tb_addr_v4(&dst, "192.0.2.50", 7000);
	cr_assert_eq(tb_offer(bfd, &dst, s, &src, &ch, NULL, &reason), -ENOENT);
	cr_assert_eq(reason, XWAY_R_NOT_CORESIDENT);
	q = tb_query(bfd, XWAY_Q_CONNECTIONS, true);
	cr_assert(q && strstr(q, "Xen domain 2; cross-domain channels are not implemented"), "%s", q);
	free(q);
	tb_addr_v4(&dst, "192.0.2.50", 7002);
	cr_assert_eq(tb_offer(bfd, &dst, s, &src, &ch, NULL, &reason), -ENOENT);
	close(s);
	tb_chan_close(&ch);
}

Test(xen, watch_sees_new_domain)
{
	/* Check that a domain appearing later (its entry moved into place at
	 * once, as a broker's writes would land) is picked up by the watch. */
	char tmp[128], dst[128];

	put("staging/3/instance", "00000000000000cc");
	put("staging/3/addrs", "192.0.2.60:0");
	put("staging/3/listeners", "");
	snprintf(tmp, sizeof(tmp), "%s/staging/3", store);
	snprintf(dst, sizeof(dst), "%s/local/xway/3", store);
	cr_assert_eq(rename(tmp, dst), 0);
	cr_assert(eventually(XWAY_Q_PEERS, "{\"domid\":3,\"instance\":\"00000000000000cc\""),
		  "domain 3 not discovered through the watch");
}
