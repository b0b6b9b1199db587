/* SPDX-License-Identifier: MIT */
/*
 * xwayd in Xen mode against a stand-in libxenstore (fake_xenstore.c: a
 * directory tree with inotify watches), since CI has no Xen: the broker
 * publishes its instance, addresses and listeners under /local/xway/<domid>,
 * discovers the other domains (at start and through the watch), shows them
 * in `peers`, and runs both halves of the cross-domain exchange through
 * the store (docs/XEN.md) and on the broker-to-broker links, with a
 * stand-in libxenvchan (fake_xenvchan_link.c: sockets named by the vchan
 * path; the test plays domain 2's broker).  The real xenstore, vchans and
 * shims are exercised by the Xen test bed (workloads 50, 65, 70).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <xway/chan.h>

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
	/* memfds/eventfds stand in for /dev/xen (broker/xenvchan.c). */
	setenv("XWAY_TEST_XEN_FAKEDEV", "1", 1);
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
					   "\"listeners\":2,\"link\":{\"enabled\":true,"),
		  "domain 2 not discovered");
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

/* Wait (up to 5 s) until the store holds rel (with want, if not NULL). */
static char *wait_node(const char *rel, const char *want)
{
	for (int i = 0; i < 500; i++) {
		char *v = get(rel);

		free(tb_query(bfd, XWAY_Q_STATUS, false));   /* let the loop run */
		if (v && (!want || strstr(v, want)))
			return v;
		usleep(10000);
	}
	return NULL;
}

static int xen_offer(const struct xway_addr *dst, int s, const struct xway_addr *src,
		     struct tchan *ch, uint32_t backend, struct xway_result *res)
{
	struct xway_offer o = { .dst = *dst, .src = *src, .cookie = ch->cookie,
				.ring_order = ch->hdr->ring_order[0], .backend = backend };
	int fds[4] = { s, ch->fds[0], ch->fds[1], ch->fds[2] };

	memset(res, 0, sizeof(*res));
	return tb_call_result(bfd, XWAY_MSG_OFFER, &o, sizeof(o), fds, 4, res);
}

Test(xen, offer_to_other_domain_goes_through_xenstore)
{
	/* Check the client broker's half of the cross-domain exchange: an
	 * offer to domain 2's listener is answered "be the vchan server at
	 * PATH"; the Xen offer is then published under our entry; domain 2's
	 * "claimed" outcome sets the header's decision word and the offer node
	 * goes away.  An address without a listener is still declined. */
	struct xway_addr dst, src;
	struct xway_result res;
	struct tchan ch;
	int s = tb_bound("127.0.0.1", &src);
	char want[160], rel[128], *v;

	cr_assert_eq(tb_chan(&ch, tb_random64(), 12), 0);
	tb_addr_v4(&dst, "192.0.2.50", 7000);
	cr_assert_eq(xen_offer(&dst, s, &src, &ch, XWAY_BACKEND_LOCAL, &res), XWAY_MSG_RESULT);
	cr_assert_eq(res.status, XWAY_RESULT_XEN, "status %d: %s", res.status, res.text);
	snprintf(want, sizeof(want), "xen 2 /local/domain/1/data/vchan/2/x%016llx",
		 (unsigned long long)ch.cookie);
	cr_assert_str_eq(res.text, want);
	cr_assert_eq(xen_offer(&dst, s, &src, &ch, XWAY_BACKEND_XEN, &res), XWAY_MSG_RESULT);
	cr_assert_eq(res.status, 1, "status %d: %s", res.status, res.text);
	snprintf(rel, sizeof(rel), "local/xway/1/offers/%llu", (unsigned long long)res.offer_id);
	v = get(rel);
	cr_assert(v, "offer not published at %s", rel);
	snprintf(want, sizeof(want), "v1 %016llx 127.0.0.1:%u 192.0.2.50:7000 "
		 "/local/domain/1/data/vchan/2/x%016llx", (unsigned long long)ch.cookie,
		 ntohs(src.port), (unsigned long long)ch.cookie);
	cr_assert_str_eq(v, want);
	/* The broker made the vchan server end (DESIGN §7): its nodes are
	 * published before the offer, and go with it. */
	snprintf(rel, sizeof(rel), "local/domain/1/data/vchan/2/x%016llx/ring-ref",
		 (unsigned long long)ch.cookie);
	cr_assert(get(rel), "ring-ref not published at %s", rel);
	snprintf(rel, sizeof(rel), "local/domain/1/data/vchan/2/x%016llx/event-channel",
		 (unsigned long long)ch.cookie);
	cr_assert(get(rel), "event-channel not published at %s", rel);
	cr_assert_eq(__atomic_load_n(&ch.hdr->attached, __ATOMIC_ACQUIRE), XWAY_ATTACH_PENDING);
	snprintf(rel, sizeof(rel), "local/xway/2/outcomes/1/%llu", (unsigned long long)res.offer_id);
	put(rel, "claimed");
	for (int i = 0; i < 500 && __atomic_load_n(&ch.hdr->attached, __ATOMIC_ACQUIRE) ==
	     XWAY_ATTACH_PENDING; i++)
		usleep(10000);
	cr_assert_eq(__atomic_load_n(&ch.hdr->attached, __ATOMIC_ACQUIRE), XWAY_ATTACH_CLAIMED);
	snprintf(rel, sizeof(rel), "local/xway/1/offers/%llu", (unsigned long long)res.offer_id);
	for (int i = 0; i < 500 && get(rel); i++)
		usleep(10000);
	cr_assert(!get(rel), "decided offer still published");
	snprintf(rel, sizeof(rel), "local/domain/1/data/vchan/2/x%016llx/ring-ref",
		 (unsigned long long)ch.cookie);
	cr_assert(!get(rel), "decided offer's vchan nodes still published");
	cr_assert(eventually(XWAY_Q_CONNECTIONS, "\"backend\":\"xen\""));
	close(s);
	tb_chan_close(&ch);

	s = tb_bound("127.0.0.1", &src);
	cr_assert_eq(tb_chan(&ch, tb_random64(), 12), 0);
	tb_addr_v4(&dst, "192.0.2.50", 7002);
	cr_assert_eq(xen_offer(&dst, s, &src, &ch, XWAY_BACKEND_LOCAL, &res), XWAY_MSG_RESULT);
	cr_assert_eq(res.status, -ENOENT);
	close(s);
	tb_chan_close(&ch);
}

/* A pending Xen offer from a fresh bound socket (*s, *src) to domain 2's
 * 192.0.2.50:port with the local decision channel *ch: answered status 1,
 * published, waiting for the peer's outcome. */
static void pending_xen_offer(uint16_t port, int *s, struct xway_addr *src,
			      struct xway_addr *dst, struct tchan *ch,
			      struct xway_result *res)
{
	*s = tb_bound("127.0.0.1", src);
	cr_assert_eq(tb_chan(ch, tb_random64(), 12), 0);
	tb_addr_v4(dst, "192.0.2.50", port);
	cr_assert_eq(xen_offer(dst, *s, src, ch, XWAY_BACKEND_XEN, res), XWAY_MSG_RESULT);
	cr_assert_eq(res->status, 1, "status %d: %s", res->status, res->text);
}

/* A REPORT of kind from the client end of ch (src -> dst), counters
 * unknown: the caller fills in the rest. */
static void client_report(struct xway_report *rep, uint32_t kind, const struct tchan *ch,
			  const struct xway_addr *src, const struct xway_addr *dst)
{
	memset(rep, 0, sizeof(*rep));
	rep->kind = kind;
	rep->side = 0;
	rep->cookie = ch->cookie;
	rep->local = *src;
	rep->peer = *dst;
	rep->chan_tx_bytes = rep->chan_rx_bytes = -1;
	rep->tcp_bytes_sent = rep->tcp_bytes_received = -1;
}

/* Send rep while the offer res answered is pending here, check it did not
 * decide the record, then give this broker the peer's outcome "claimed". */
static void report_then_claimed(const struct xway_report *rep, const struct xway_result *res)
{
	char rel[128];

	cr_assert_eq(tb_send(bfd, XWAY_MSG_REPORT, 99, rep, sizeof(*rep), NULL, 0), 0);
	cr_assert(eventually(XWAY_Q_CONNECTIONS, "\"state\":\"pending\""),
		  "the report decided a pending record");
	snprintf(rel, sizeof(rel), "local/xway/2/outcomes/1/%llu", (unsigned long long)res->offer_id);
	put(rel, "claimed");
}

Test(xen, left_channel_report_before_the_outcome)
{
	/* Check that a client's "left the channel" report that arrives while
	 * its Xen offer is still pending here (the shim takes the peer's
	 * mapping of the vchan as "claimed" before this broker applies the
	 * outcome) is not lost: once "claimed" comes, the record says
	 * tcp/left-channel instead of staying xen. */
	struct xway_addr dst, src;
	struct xway_result res;
	struct xway_report rep;
	struct tchan ch;
	int s;

	pending_xen_offer(7000, &s, &src, &dst, &ch, &res);
	client_report(&rep, XWAY_REP_FALLBACK, &ch, &src, &dst);
	rep.reason = XWAY_R_LEFT;
	snprintf(rep.text, sizeof(rep.text), "the peer left the Xen channel");
	report_then_claimed(&rep, &res);
	cr_assert(eventually(XWAY_Q_CONNECTIONS, "\"reason\":\"left-channel\""),
		  "the record does not say left-channel after the outcome");
	{
		char *q = tb_query(bfd, XWAY_Q_CONNECTIONS, true);

		cr_assert(q && !strstr(q, "\"backend\":\"xen\""), "the record still says xen: %s", q);
		free(q);
	}
	close(s);
	tb_chan_close(&ch);
}

Test(xen, close_report_before_the_outcome)
{
	/* Check that a client's close report (its final counters) that
	 * arrives while its Xen offer is still pending here is not dropped:
	 * once "claimed" comes, the record is closed with those counters
	 * (it used to stay accelerated with no bytes until the client's
	 * broker link closed: test bed 60, case "again", 24 connections in a
	 * row). */
	struct xway_addr dst, src;
	struct xway_result res;
	struct xway_report rep;
	struct tchan ch;
	int s;

	pending_xen_offer(7000, &s, &src, &dst, &ch, &res);
	client_report(&rep, XWAY_REP_CLOSED, &ch, &src, &dst);
	rep.chan_tx_bytes = 4321;
	rep.chan_rx_bytes = 1234;
	rep.tcp_bytes_sent = 1;
	rep.tcp_bytes_received = 0;
	report_then_claimed(&rep, &res);
	cr_assert(eventually(XWAY_Q_CONNECTIONS, "\"state\":\"closed\",\"backend\":\"xen\""),
		  "the record is not closed after the outcome");
	cr_assert(eventually(XWAY_Q_CONNECTIONS, "\"bytes_c2s\":4321,\"bytes_s2c\":1234"),
		  "the record lost the close report's counters");
	close(s);
	tb_chan_close(&ch);
}

Test(xen, withdraw_is_asked_not_decided)
{
	/* Check a WITHDRAW of a pending Xen offer is forwarded (status 1, a
	 * withdraw node) and only the peer's "withdrawn" outcome decides. */
	struct xway_addr dst, src;
	struct xway_result res;
	struct xway_withdraw w;
	struct tchan ch;
	char rel[128];
	int s;

	pending_xen_offer(7001, &s, &src, &dst, &ch, &res);
	w.offer_id = res.offer_id;
	cr_assert_eq(tb_call_result(bfd, XWAY_MSG_WITHDRAW, &w, sizeof(w), NULL, 0, &res),
		     XWAY_MSG_RESULT);
	cr_assert_eq(res.status, 1, "status %d: %s", res.status, res.text);
	snprintf(rel, sizeof(rel), "local/xway/1/withdraw/%llu", (unsigned long long)w.offer_id);
	cr_assert(get(rel), "withdraw request not published");
	cr_assert_eq(__atomic_load_n(&ch.hdr->attached, __ATOMIC_ACQUIRE), XWAY_ATTACH_PENDING);
	snprintf(rel, sizeof(rel), "local/xway/2/outcomes/1/%llu", (unsigned long long)w.offer_id);
	put(rel, "withdrawn");
	for (int i = 0; i < 500 && __atomic_load_n(&ch.hdr->attached, __ATOMIC_ACQUIRE) ==
	     XWAY_ATTACH_PENDING; i++)
		usleep(10000);
	cr_assert_eq(__atomic_load_n(&ch.hdr->attached, __ATOMIC_ACQUIRE), XWAY_ATTACH_WITHDRAWN);
	close(s);
	tb_chan_close(&ch);
}

Test(xen, peer_offers_are_decided_here)
{
	/* Check the server broker's half: domain 2's offer to our listener is
	 * withdrawn when nobody claims it within the claim timeout; a bad
	 * offer text and one naming a foreign vchan path are refused at once;
	 * once domain 2 removes its offer, our outcome goes too. */
	struct xway_addr a;
	int l = tb_listener("0.0.0.0", &a);
	char rel[128], val[256], *v;

	cr_assert_eq(tb_listen_add(bfd, l, &a), 0);
	snprintf(val, sizeof(val), "v1 00000000000000ab 192.0.2.50:40000 127.0.0.1:%u "
		 "/local/domain/2/data/vchan/1/x00000000000000ab", ntohs(a.port));
	put("local/xway/2/offers/7", val);
	put("local/xway/2/offers/8", "v1 zz");
	snprintf(val, sizeof(val), "v1 00000000000000ac 192.0.2.50:40001 192.0.2.1:%u "
		 "/local/domain/3/data/vchan/1/x00000000000000ac", ntohs(a.port));
	put("local/xway/2/offers/9", val);
	cr_assert(wait_node("local/xway/1/outcomes/2/8", "withdrawn"), "bad offer not refused");
	cr_assert(wait_node("local/xway/1/outcomes/2/9", "withdrawn"), "foreign path not refused");
	v = wait_node("local/xway/1/outcomes/2/7", NULL);
	cr_assert(v && !strcmp(v, "withdrawn"), "unclaimed offer: outcome '%s'", v ? v : "none");
	unlink(strcat(strcpy(rel, store), "/local/xway/2/offers/7"));
	put("local/xway/2/poke", "1");     /* a watch event */
	for (int i = 0; i < 500 && get("local/xway/1/outcomes/2/7"); i++) {
		free(tb_query(bfd, XWAY_Q_STATUS, false));
		usleep(10000);
	}
	cr_assert(!get("local/xway/1/outcomes/2/7"), "outcome of a removed offer kept");
	close(l);
}

Test(xen, vanished_domain_withdraws)
{
	/* Check a domain whose entry goes away (dom0's xway-xen-setup remove
	 * after the domain was destroyed) takes its pending offers along: the
	 * client is told WITHDRAWN by its own broker, nobody else is left to
	 * decide. */
	struct xway_addr dst, src;
	struct xway_result res;
	struct tchan ch;
	int s = tb_bound("127.0.0.1", &src);
	char cmd[160];

	cr_assert_eq(tb_chan(&ch, tb_random64(), 12), 0);
	tb_addr_v4(&dst, "192.0.2.50", 7000);
	cr_assert_eq(xen_offer(&dst, s, &src, &ch, XWAY_BACKEND_XEN, &res), XWAY_MSG_RESULT);
	cr_assert_eq(res.status, 1, "status %d: %s", res.status, res.text);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s/local/xway/2'", store);
	cr_assert_eq(system(cmd), 0);
	for (int i = 0; i < 500 && __atomic_load_n(&ch.hdr->attached, __ATOMIC_ACQUIRE) ==
	     XWAY_ATTACH_PENDING; i++) {
		free(tb_query(bfd, XWAY_Q_STATUS, false));
		usleep(10000);
	}
	cr_assert_eq(__atomic_load_n(&ch.hdr->attached, __ATOMIC_ACQUIRE), XWAY_ATTACH_WITHDRAWN);
	cr_assert(eventually(XWAY_Q_CONNECTIONS, "Xen domain 2 vanished"));
	close(s);
	tb_chan_close(&ch);
}

/* Wait (5 s) for the stats counter name to read want. */
static bool stat_is(const char *name, unsigned long long want)
{
	char pat[64];

	snprintf(pat, sizeof(pat), "\"%s\":%llu,", name, want);
	return eventually(XWAY_Q_STATS, pat);
}

Test(xen, offers_take_vchan_ends_made_ahead)
{
	/* Check the client broker's pool of vchan server ends (DESIGN §7.3):
	 * the first offer to domain 2 is served at once and the pool is
	 * filled after it (2 ends by default); the next offers take pooled
	 * ends, which work as fresh ones (their grants are mappable); the pool
	 * is refilled, and closed when domain 2 leaves. */
	struct xway_addr dst, src;
	struct xway_result res;
	struct tchan ch[3];
	int s[3];
	char cmd[160];

	pending_xen_offer(7000, &s[0], &src, &dst, &ch[0], &res);
	cr_assert(stat_is("xen_serves_pooled", 0));
	cr_assert(stat_is("xen_pool_ready", 2), "the pool was not filled after an offer");
	for (int i = 1; i < 3; i++) {
		struct xway_offer o;
		struct xway_result_xen rx;
		int fds[4], rf[8];
		unsigned nrf = 0;
		uint8_t *m;

		s[i] = tb_bound("127.0.0.1", &src);
		cr_assert_eq(tb_chan(&ch[i], tb_random64(), 12), 0);
		o = (struct xway_offer){ .dst = dst, .src = src, .cookie = ch[i].cookie,
					 .ring_order = ch[i].hdr->ring_order[0],
					 .backend = XWAY_BACKEND_XEN };
		fds[0] = s[i];
		fds[1] = ch[i].fds[0];
		fds[2] = ch[i].fds[1];
		fds[3] = ch[i].fds[2];
		memset(&rx, 0, sizeof(rx));
		cr_assert_eq(tb_call(bfd, XWAY_MSG_OFFER, &o, sizeof(o), fds, 4, &rx, sizeof(rx),
				     rf, &nrf), XWAY_MSG_RESULT);
		cr_assert_eq(rx.base.status, 1, "status %d: %s", rx.base.status, rx.base.text);
		cr_assert_eq(nrf, 2, "a pooled end came without its descriptors");
		cr_assert(rx.v.map_pages >= 3);
		m = mmap(NULL, (size_t)rx.v.map_pages * 4096, PROT_READ | PROT_WRITE, MAP_SHARED,
			 rf[0], (off_t)rx.v.map_offset);
		cr_assert(m != MAP_FAILED, "a pooled end's grants cannot be mapped");
		munmap(m, (size_t)rx.v.map_pages * 4096);
		for (unsigned j = 0; j < nrf; j++)
			close(rf[j]);
		cr_assert(stat_is("xen_serves_pooled", (unsigned long long)i),
			  "offer %d did not take a pooled end", i);
	}
	cr_assert(stat_is("xen_pool_ready", 2), "the pool was not refilled");
	snprintf(cmd, sizeof(cmd), "rm -rf '%s/local/xway/2'", store);
	cr_assert_eq(system(cmd), 0);
	cr_assert(stat_is("xen_pool_ready", 0), "the pool outlived its peer domain");
	for (int i = 0; i < 3; i++) {
		close(s[i]);
		tb_chan_close(&ch[i]);
	}
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

/* ---- the client side of a vanished domain, in a private network namespace
 * holding the peer's address (root only: unshare + SOCK_DESTROY) ---------- */

static bool vanish_started;
static pid_t vanish_child = -1;

static void vanish_fini(void)
{
	if (vanish_child > 0) {
		kill(vanish_child, SIGKILL);
		waitpid(vanish_child, NULL, 0);
	}
	if (vanish_started)
		teardown();
}

static int tcp_at(const char *ip, uint16_t port, bool listening)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	inet_pton(AF_INET, ip, &a.sin_addr);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	cr_assert_eq(bind(fd, (void *)&a, sizeof(a)), 0, "bind %s:%u: %s", ip, port, strerror(errno));
	if (listening)
		cr_assert_eq(listen(fd, 16), 0);
	return fd;
}

static void tcp_connect(int fd, const char *ip, uint16_t port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };

	inet_pton(AF_INET, ip, &a.sin_addr);
	cr_assert_eq(connect(fd, (void *)&a, sizeof(a)), 0, "connect %s:%u: %s", ip, port,
		     strerror(errno));
}

Test(xenvanish, client_socket_is_aborted, .fini = vanish_fini, .timeout = 60)
{
	/* Check that when the server's domain vanishes, the client's broker
	 * aborts the client's TCP socket of a claimed Xen connection (its port
	 * unknown to the broker: found by a socket dump and the client's pid),
	 * so the application does not wait forever for a FIN that will never
	 * come; and that the same address's connection held by another process
	 * and a connection elsewhere are left alone. */
	struct xway_addr dst, src;
	struct xway_result res;
	struct tchan ch;
	int lst, lo_l, s, a, other, pfd[2], qfd[2];
	char rel[128], cmd[160], b;
	pid_t child;
	ssize_t n;

	if (geteuid() != 0 || unshare(CLONE_NEWNET) != 0)
		cr_skip_test("needs root for a private network namespace");
	cr_assert_eq(system("ip link set lo up && ip addr add 192.0.2.50/32 dev lo"), 0);
	setup();
	vanish_started = true;
	lst = tcp_at("192.0.2.50", 7000, true);
	lo_l = tcp_at("127.0.0.1", 0, true);

	/* Another process's connection to the same address: not ours. */
	cr_assert_eq(pipe(pfd), 0);     /* child -> us */
	cr_assert_eq(pipe(qfd), 0);     /* us -> child */
	child = fork();
	cr_assert_geq(child, 0);
	vanish_child = child;
	if (child == 0) {
		int c = socket(AF_INET, SOCK_STREAM, 0);

		alarm(30);
		struct sockaddr_in t = { .sin_family = AF_INET, .sin_port = htons(7000) };

		inet_pton(AF_INET, "192.0.2.50", &t.sin_addr);
		if (connect(c, (void *)&t, sizeof(t)) != 0)
			_exit(2);
		if (write(pfd[1], "c", 1) != 1)
			_exit(3);
		/* Wait for the parent's verdict time, then check we are alive. */
		if (read(qfd[0], &b, 1) != 1)
			_exit(4);
		n = recv(c, &b, 1, MSG_DONTWAIT);
		_exit(n < 0 && errno == EAGAIN ? 0 : 5);
	}
	cr_assert_eq(read(pfd[0], &b, 1), 1);
	other = accept(lst, NULL, NULL);
	cr_assert_geq(other, 0);

	/* Our claimed Xen connection to domain 2's listener. */
	s = tcp_at("192.0.2.50", 0, false);
	tb_sock_name(s, false, &src);
	cr_assert_eq(tb_chan(&ch, tb_random64(), 12), 0);
	tb_addr_v4(&dst, "192.0.2.50", 7000);
	cr_assert_eq(xen_offer(&dst, s, &src, &ch, XWAY_BACKEND_XEN, &res), XWAY_MSG_RESULT);
	cr_assert_eq(res.status, 1, "status %d: %s", res.status, res.text);
	snprintf(rel, sizeof(rel), "local/xway/2/outcomes/1/%llu", (unsigned long long)res.offer_id);
	put(rel, "claimed");
	for (int i = 0; i < 500 && __atomic_load_n(&ch.hdr->attached, __ATOMIC_ACQUIRE) ==
	     XWAY_ATTACH_PENDING; i++)
		usleep(10000);
	cr_assert_eq(__atomic_load_n(&ch.hdr->attached, __ATOMIC_ACQUIRE), XWAY_ATTACH_CLAIMED);
	tcp_connect(s, "192.0.2.50", 7000);
	a = accept(lst, NULL, NULL);
	cr_assert_geq(a, 0);
	/* And one elsewhere. */
	int far = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in la;
	socklen_t ll = sizeof(la);
	cr_assert_eq(getsockname(lo_l, (void *)&la, &ll), 0);
	tcp_connect(far, "127.0.0.1", ntohs(la.sin_port));

	snprintf(cmd, sizeof(cmd), "rm -rf '%s/local/xway/2'", store);
	cr_assert_eq(system(cmd), 0);
	n = 1;
	for (int i = 0; i < 500; i++) {
		free(tb_query(bfd, XWAY_Q_STATUS, false));
		n = recv(s, &b, 1, MSG_DONTWAIT);
		if (!(n < 0 && errno == EAGAIN))
			break;
		usleep(10000);
	}
	cr_assert(n < 0 && errno == ECONNABORTED, "client socket after the vanish: %zd (%s)", n,
		  n < 0 ? strerror(errno) : "data/EOF");
	cr_assert(eventually(XWAY_Q_CONNECTIONS, "Xen domain 2 vanished"));
	n = recv(far, &b, 1, MSG_DONTWAIT);
	cr_assert(n < 0 && errno == EAGAIN, "an unrelated connection was touched");
	cr_assert_eq(write(qfd[1], "v", 1), 1);
	int st;
	cr_assert_eq(waitpid(child, &st, 0), child);
	vanish_child = -1;
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
		  "another process's connection to that address was touched (%d)", st);
	close(s);
	close(a);
	close(other);
	close(far);
	close(lo_l);
	close(lst);
	tb_chan_close(&ch);
}

/* A TCP socket bound to ip, connected to a, and the accepted end (*acc). */
static int connect_from(const char *ip, int l, const struct xway_addr *a, int *acc)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert(s >= 0);
	cr_assert_eq(inet_pton(AF_INET, ip, &sin.sin_addr), 1);
	cr_assert_eq(bind(s, (struct sockaddr *)&sin, sizeof(sin)), 0, "bind %s: %s", ip,
		     strerror(errno));
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = a->port;
	cr_assert_eq(connect(s, (struct sockaddr *)&sin, sizeof(sin)), 0);
	*acc = accept(l, NULL, NULL);
	cr_assert(*acc >= 0);
	return s;
}

Test(xen, remap_maps_the_claimed_grants_again)
{
	/* Check REMAP (docs/DESIGN.md §7.2: a fork child of a Xen server maps
	 * the channel again): for the claimed connection's own socket the
	 * broker hands a new grant descriptor that reaches the same pages as
	 * the CLAIM's (the fake grant device: the same memory) with the same
	 * geometry; a socket of a connection without a Xen record is refused
	 * (-ENOENT), and so is a message whose names are not the socket's. */
	struct xway_addr a, src;
	struct xway_claim cl, cl2;
	struct xway_claimed_xenfd xo, xo2;
	struct xway_result res;
	int l = tb_listener("127.0.0.1", &a), n = -1, n2 = -1, s, s2;
	int rf[8], rf2[8];
	unsigned nrf = 0, nrf2 = 0;
	uint64_t cookie = tb_random64() | 1;
	char val[256], rel[160];
	uint8_t *m1, *m2;

	cr_assert_eq(tb_listen_add(bfd, l, &a), 0);
	put("local/xway/2/addrs", "127.0.0.2:0 192.0.2.50:0");
	put("local/xway/2/poke", "1");
	cr_assert(eventually(XWAY_Q_PEERS, "127.0.0.2"), "domain 2's new address not read");
	s = connect_from("127.0.0.2", l, &a, &n);
	cr_assert_eq(tb_sock_name(s, false, &src), 0);
	snprintf(rel, sizeof(rel), "local/domain/2/data/vchan/1/x%016llx", (unsigned long long)cookie);
	snprintf(val, sizeof(val), "%s/ring-ref", rel);
	put(val, "77");
	snprintf(val, sizeof(val), "%s/event-channel", rel);
	put(val, "9");
	snprintf(val, sizeof(val), "v1 %016llx 127.0.0.2:%u 127.0.0.1:%u /%s",
		 (unsigned long long)cookie, ntohs(src.port), ntohs(a.port), rel);
	/* Whole at once (the stand-in store is files: a watch event between
	 * the create and the write showed half an offer). */
	put("local/xway/2/offer-20.tmp", val);
	{
		char from[256], to[256];

		snprintf(from, sizeof(from), "%s/local/xway/2/offer-20.tmp", store);
		snprintf(to, sizeof(to), "%s/local/xway/2/offers", store);
		mkdir(to, 0755);
		snprintf(to, sizeof(to), "%s/local/xway/2/offers/20", store);
		cr_assert_eq(rename(from, to), 0, "%s", strerror(errno));
	}
	snprintf(val, sizeof(val), "%016llx", (unsigned long long)cookie);
	if (!eventually(XWAY_Q_CONNECTIONS, val)) {
		char cmd[400];

		snprintf(cmd, sizeof(cmd), "tail -n 30 '%s' >&2; ls -R '%s/local/xway' >&2", B.log, store);
		cr_expect_eq(system(cmd), 0);
		cr_assert(0, "the offer never reached the broker");
	}

	cr_assert_eq(tb_sock_name(n, false, &cl.local), 0);
	cr_assert_eq(tb_sock_name(n, true, &cl.peer), 0);
	/* The server end's state memfd rides along: the record's counters
	 * come from it. */
	int ep = memfd_create("ep", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	cr_assert(ep >= 0 && ftruncate(ep, XWAY_EP_SIZE) == 0);
	uint8_t *epm = mmap(NULL, XWAY_EP_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, ep, 0);
	cr_assert(epm != MAP_FAILED);
	cr_assert_eq(fcntl(ep, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
	*(uint64_t *)(epm + XWAY_EP_TX_BYTES_OFF) = 1234;
	*(uint64_t *)(epm + XWAY_EP_RX_BYTES_OFF) = 5678;
	memset(&xo, 0, sizeof(xo));
	cr_assert_eq(tb_call(bfd, XWAY_MSG_CLAIM, &cl, sizeof(cl), (int[2]){ n, ep }, 2, &xo,
			     sizeof(xo), rf, &nrf), XWAY_MSG_CLAIMED, "the Xen offer was not claimed");
	close(ep);
	cr_assert(eventually(XWAY_Q_CONNECTIONS, "\"bytes_c2s\":5678,\"bytes_s2c\":1234"),
		  "the record's counters are not the server end's");
	munmap(epm, XWAY_EP_SIZE);
	cr_assert_eq(nrf, 2);
	cr_assert_eq(xo.base.base.backend, XWAY_BACKEND_XEN);
	m1 = mmap(NULL, (size_t)xo.v.map_pages * 4096, PROT_READ | PROT_WRITE, MAP_SHARED,
		  rf[0], (off_t)xo.v.map_offset);
	cr_assert(m1 != MAP_FAILED);
	memcpy(m1 + 4096, "ring bytes", 10);

	/* Another connection, never offered: nothing to re-map. */
	s2 = connect_from("127.0.0.1", l, &a, &n2);
	cr_assert_eq(tb_sock_name(n2, false, &cl2.local), 0);
	cr_assert_eq(tb_sock_name(n2, true, &cl2.peer), 0);
	cr_assert_eq(tb_call_result(bfd, XWAY_MSG_REMAP, &cl2, sizeof(cl2), &n2, 1, &res),
		     XWAY_MSG_RESULT);
	cr_assert_eq(res.status, -ENOENT, "status %d (%s)", res.status, res.text);
	/* The claimed connection's names with another socket. */
	cr_assert_eq(tb_call_result(bfd, XWAY_MSG_REMAP, &cl, sizeof(cl), &n2, 1, &res),
		     XWAY_MSG_RESULT);
	cr_assert_eq(res.status, -EINVAL, "status %d (%s)", res.status, res.text);

	memset(&xo2, 0, sizeof(xo2));
	cr_assert_eq(tb_call(bfd, XWAY_MSG_REMAP, &cl, sizeof(cl), &n, 1, &xo2, sizeof(xo2),
			     rf2, &nrf2), XWAY_MSG_CLAIMED, "REMAP refused");
	cr_assert_eq(nrf2, 1);
	cr_assert_eq(xo2.base.base.cookie, xo.base.base.cookie);
	cr_assert_eq(xo2.v.map_pages, xo.v.map_pages);
	cr_assert_eq(xo2.v.port, xo.v.port);
	cr_assert_eq(xo2.v.left_order, xo.v.left_order);
	cr_assert_eq(xo2.v.right_order, xo.v.right_order);
	m2 = mmap(NULL, (size_t)xo2.v.map_pages * 4096, PROT_READ | PROT_WRITE, MAP_SHARED,
		  rf2[0], (off_t)xo2.v.map_offset);
	cr_assert(m2 != MAP_FAILED);
	cr_assert_eq(memcmp(m2 + 4096, "ring bytes", 10), 0, "REMAP maps other pages");
	munmap(m1, (size_t)xo.v.map_pages * 4096);
	munmap(m2, (size_t)xo2.v.map_pages * 4096);
	for (unsigned i = 0; i < nrf; i++)
		close(rf[i]);
	close(rf2[0]);
	close(s);
	close(s2);
	close(n);
	close(n2);
	close(l);
}

Test(xen, sandboxed_holder_notifications_go_through_the_broker)
{
	/* Check XEN_MUTE / XEN_NOTIFY (a sandboxed holder of a Xen channel
	 * asks its broker for each notification): a registered event
	 * channel (an eventfd under the stand-in devices) is notified once
	 * per XEN_NOTIFY from the link that registered it; a port that link
	 * did not register, and the same port from another link, notify
	 * nothing; a regular file is refused; a port out of range is a
	 * protocol error; the registration goes with the link. */
	struct xway_xen_port p = { .port = 4711 }, q = { .port = 4712 }, bad = { .port = 1u << 17 };
	struct xway_result res;
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), other = tb_connect(B.sock);
	int file = open("/etc/hostname", O_RDONLY | O_CLOEXEC);
	uint64_t v = 0;

	cr_assert(efd >= 0 && other >= 0 && file >= 0);
	cr_assert_eq(tb_call_result(bfd, XWAY_MSG_XEN_MUTE, &p, sizeof(p), &file, 1, &res),
		     XWAY_MSG_RESULT);
	cr_assert_lt(res.status, 0, "a regular file was taken for an event channel");
	cr_assert_eq(tb_call_result(bfd, XWAY_MSG_XEN_MUTE, &bad, sizeof(bad), &efd, 1, &res),
		     XWAY_MSG_ERROR);
	cr_assert_eq(tb_call_result(bfd, XWAY_MSG_XEN_MUTE, &p, sizeof(p), &efd, 1, &res),
		     XWAY_MSG_RESULT);
	cr_assert_eq(res.status, 0, "%s", res.text);
	cr_assert_eq(tb_send(bfd, XWAY_MSG_XEN_NOTIFY, 0, &p, sizeof(p), NULL, 0), 0);
	cr_assert_eq(tb_send(bfd, XWAY_MSG_XEN_NOTIFY, 0, &p, sizeof(p), NULL, 0), 0);
	cr_assert_eq(tb_send(bfd, XWAY_MSG_XEN_NOTIFY, 0, &q, sizeof(q), NULL, 0), 0);
	cr_assert_eq(tb_send(other, XWAY_MSG_XEN_NOTIFY, 0, &p, sizeof(p), NULL, 0), 0);
	free(tb_query(bfd, XWAY_Q_STATUS, false));      /* the broker read them */
	free(tb_query(other, XWAY_Q_STATUS, false));
	cr_assert_eq(read(efd, &v, sizeof(v)), (ssize_t)sizeof(v));
	cr_assert_eq(v, 2, "notified %llu times, not 2", (unsigned long long)v);
	/* The link goes: so does the registration (no more notifications). */
	close(bfd);
	bfd = tb_connect(B.sock);
	cr_assert_geq(bfd, 0);
	cr_assert_eq(tb_send(bfd, XWAY_MSG_XEN_NOTIFY, 0, &p, sizeof(p), NULL, 0), 0);
	free(tb_query(bfd, XWAY_Q_STATUS, false));
	cr_assert_eq(read(efd, &v, sizeof(v)), -1, "notified after the link went");
	cr_assert(tb_alive(&B));
	close(file);
	close(other);
	close(efd);
}

/* ---- the broker-to-broker links (broker/xenlink.c) -------------------- */

#include <poll.h>
#include <stddef.h>
#include <sys/un.h>

#define REC 256     /* XWAY_LINK_REC */

static socklen_t link_addr(const char *path, struct sockaddr_un *sa)
{
	/* The stand-in libxenvchan's rendezvous (fake_xenvchan_link.c). */
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (snprintf(sa->sun_path + 1, sizeof(sa->sun_path) - 1, "xway-fake-link:%s", path) < 0)
		sa->sun_path[1] = 0;
	return offsetof(struct sockaddr_un, sun_path) + 1 + strlen(sa->sun_path + 1);
}

static void rec_send(int fd, const char *text)
{
	char r[REC] = { 0 };

	memcpy(r, text, strlen(text));
	cr_assert_eq(write(fd, r, sizeof(r)), (ssize_t)sizeof(r));
}

/* One record within 5 s (the broker's main loop is kept running), or "". */
static const char *rec_recv(int fd)
{
	static char r[REC + 1];
	size_t got = 0;

	for (int i = 0; i < 500 && got < REC; i++) {
		struct pollfd p = { .fd = fd, .events = POLLIN };

		free(tb_query(bfd, XWAY_Q_STATUS, false));
		if (poll(&p, 1, 10) == 1) {
			ssize_t n = read(fd, r + got, REC - got);

			if (n <= 0)
				break;
			got += (size_t)n;
		}
	}
	r[got == REC ? REC : 0] = 0;
	return r;
}

/* Attach, as domain 2's broker, to the link the broker serves us. */
static int attach_to_served_link(void)
{
	char want[64], path[128], *v;
	struct sockaddr_un sa;
	socklen_t len;
	int fd;

	v = wait_node("local/xway/1/links/2", " 00000000000000aa");
	cr_assert(v, "no link advertised for domain 2");
	cr_assert_eq(strlen(v), 33, "advertisement '%s'", v);
	snprintf(want, sizeof(want), "%.16s", v);
	snprintf(path, sizeof(path), "/local/domain/1/data/vchan/2/link-%s", want);
	len = link_addr(path, &sa);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, len), 0, "connect %s: %s", path,
		     strerror(errno));
	cr_assert(eventually(XWAY_Q_PEERS, "\"out\":\"up\""), "the broker did not see us attach");
	return fd;
}

Test(xen, link_carries_our_offers_and_their_outcomes)
{
	/* Check the client broker's half on a link: with domain 2 attached
	 * to the link we serve, a Xen offer goes on it (no offer or vchan
	 * nodes in xenstore), domain 2's outcome record decides it, a hostile
	 * record is refused and counted, and the broker stays up. */
	struct xway_addr dst, src;
	struct xway_result res;
	struct tchan ch;
	char want[160], rel[128];
	const char *r;
	int s, lk = attach_to_served_link();

	pending_xen_offer(7000, &s, &src, &dst, &ch, &res);
	r = rec_recv(lk);
	snprintf(want, sizeof(want), "offer %llu ", (unsigned long long)res.offer_id);
	cr_assert(!strncmp(r, want, strlen(want)), "record '%s', want '%s...'", r, want);
	snprintf(want, sizeof(want), " %016llx 127.0.0.1:%u 192.0.2.50:7000",
		 (unsigned long long)ch.cookie, ntohs(src.port));
	cr_assert(strstr(r, want), "record '%s' lacks '%s'", r, want);
	snprintf(rel, sizeof(rel), "local/xway/1/offers/%llu", (unsigned long long)res.offer_id);
	cr_assert(!get(rel), "a link offer was also published in xenstore");
	snprintf(rel, sizeof(rel), "local/domain/1/data/vchan/2/x%016llx/ring-ref",
		 (unsigned long long)ch.cookie);
	cr_assert(!get(rel), "a link offer's vchan nodes were published");
	cr_assert_eq(__atomic_load_n(&ch.hdr->attached, __ATOMIC_ACQUIRE), XWAY_ATTACH_PENDING);

	/* Hostile records first: refused, nothing decided. */
	rec_send(lk, "outcome 1 maybe");
	snprintf(want, sizeof(want), "offer %llu 8 3 00000000000000ab 10.0.0.2:1 10.0.0.1:2",
		 (unsigned long long)res.offer_id);
	rec_send(lk, want);     /* an offer on the wrong link */
	cr_assert(eventually(XWAY_Q_PEERS, "\"refused\":2"), "hostile records not counted");
	cr_assert_eq(__atomic_load_n(&ch.hdr->attached, __ATOMIC_ACQUIRE), XWAY_ATTACH_PENDING);

	snprintf(want, sizeof(want), "outcome %llu claimed", (unsigned long long)res.offer_id);
	rec_send(lk, want);
	for (int i = 0; i < 500 && __atomic_load_n(&ch.hdr->attached, __ATOMIC_ACQUIRE) ==
	     XWAY_ATTACH_PENDING; i++) {
		free(tb_query(bfd, XWAY_Q_STATUS, false));
		usleep(10000);
	}
	cr_assert_eq(__atomic_load_n(&ch.hdr->attached, __ATOMIC_ACQUIRE), XWAY_ATTACH_CLAIMED);
	cr_assert(eventually(XWAY_Q_CONNECTIONS, "\"backend\":\"xen\""));
	close(s);
	tb_chan_close(&ch);

	/* A withdraw request goes on the link too. */
	pending_xen_offer(7000, &s, &src, &dst, &ch, &res);
	r = rec_recv(lk);
	cr_assert(!strncmp(r, "offer ", 6), "record '%s'", r);
	{
		struct xway_withdraw w = { .offer_id = res.offer_id };

		cr_assert_eq(tb_call_result(bfd, XWAY_MSG_WITHDRAW, &w, sizeof(w), NULL, 0, &res),
			     XWAY_MSG_RESULT);
		cr_assert_eq(res.status, 1, "status %d: %s", res.status, res.text);
		r = rec_recv(lk);
		snprintf(want, sizeof(want), "withdraw %llu", (unsigned long long)w.offer_id);
		cr_assert_str_eq(r, want);
		snprintf(rel, sizeof(rel), "local/xway/1/withdraw/%llu",
			 (unsigned long long)w.offer_id);
		cr_assert(!get(rel), "the withdraw request also went through xenstore");
		snprintf(want, sizeof(want), "outcome %llu withdrawn", (unsigned long long)w.offer_id);
		rec_send(lk, want);
	}
	for (int i = 0; i < 500 && __atomic_load_n(&ch.hdr->attached, __ATOMIC_ACQUIRE) ==
	     XWAY_ATTACH_PENDING; i++) {
		free(tb_query(bfd, XWAY_Q_STATUS, false));
		usleep(10000);
	}
	cr_assert_eq(__atomic_load_n(&ch.hdr->attached, __ATOMIC_ACQUIRE), XWAY_ATTACH_WITHDRAWN);
	close(s);
	tb_chan_close(&ch);
	close(lk);
	cr_assert(eventually(XWAY_Q_PEERS, "\"out\":\"down\"") ||
		  eventually(XWAY_Q_PEERS, "\"out\":\"waiting\""),
		  "our link did not notice domain 2 leaving it");
}

Test(xen, peer_link_offers_are_decided_here)
{
	/* Check the server broker's half on a link: the broker attaches to
	 * the link domain 2 advertises for its current instance (not to one
	 * for another instance), attaches to each offer's vchan when the
	 * record comes, decides domain 2's offer records (withdrawn when
	 * unclaimed; claimed with the descriptors attached early, which REMAP
	 * can map again) and answers on the link; when that link closes with
	 * an offer pending, the offer is withdrawn and the outcome goes
	 * through xenstore. */
	struct xway_hello h = { .shim_version = 1 };
	struct xway_hello_ok ok;
	struct sockaddr_un sa;
	struct xway_addr a;
	char path[128], val[128], rec[160];
	const char *r;
	int rfds[8], lfd, cfd = -1, l;
	unsigned n = 0;
	socklen_t len;

	cr_assert_eq(tb_call(bfd, XWAY_MSG_HELLO, &h, sizeof(h), NULL, 0, &ok, sizeof(ok),
			     rfds, &n), XWAY_MSG_HELLO_OK);
	for (unsigned i = 0; i < n; i++)
		close(rfds[i]);
	l = tb_listener("0.0.0.0", &a);
	cr_assert_eq(tb_listen_add(bfd, l, &a), 0);

	snprintf(path, sizeof(path), "/local/domain/2/data/vchan/1/link-00000000000000f1");
	len = link_addr(path, &sa);
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_eq(bind(lfd, (struct sockaddr *)&sa, len), 0);
	cr_assert_eq(listen(lfd, 1), 0);
	/* For an earlier instance of the broker: ignored. */
	put("local/xway/2/links/1", "00000000000000f1 0000000000000001");
	{
		struct pollfd p = { .fd = lfd, .events = POLLIN };

		for (int i = 0; i < 100; i++) {
			free(tb_query(bfd, XWAY_Q_STATUS, false));
			cr_assert_eq(poll(&p, 1, 10), 0, "attached to a link for another instance");
		}
	}
	snprintf(val, sizeof(val), "00000000000000f1 %016llx", (unsigned long long)ok.instance);
	put("local/xway/2/links/1", val);
	for (int i = 0; i < 500 && cfd < 0; i++) {
		struct pollfd p = { .fd = lfd, .events = POLLIN };

		free(tb_query(bfd, XWAY_Q_STATUS, false));
		if (poll(&p, 1, 10) == 1)
			cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	}
	cr_assert_geq(cfd, 0, "the broker did not attach to domain 2's link");
	cr_assert(eventually(XWAY_Q_PEERS, "\"in\":\"up\""));

	snprintf(rec, sizeof(rec), "offer 7 8 3 00000000000000ab 192.0.2.50:40000 127.0.0.1:%u",
		 ntohs(a.port));
	rec_send(cfd, rec);
	cr_assert(eventually(XWAY_Q_CONNECTIONS, "\"state\":\"pending\""), "offer record ignored");
	/* Attached as it came, before any claim (the claim only hands the
	 * descriptors over). */
	cr_assert(eventually(XWAY_Q_STATS, "\"xen_attaches_early\":1"),
		  "the link offer was not attached when it came");
	r = rec_recv(cfd);     /* the claim timeout (2 s) ends it */
	cr_assert_str_eq(r, "outcome 7 withdrawn");
	cr_assert(!get("local/xway/1/outcomes/2/7"), "a link outcome also went through xenstore");

	/* Claimed: the early attach's descriptors go to the claimer, no second
	 * attach, and its grants stay for REMAP. */
	{
		struct xway_claim cl;
		struct xway_claimed_xenfd xo;
		struct xway_addr src;
		int s, acc = -1, rf[8], rf2[8];
		unsigned nrf = 0, nrf2 = 0;
		char *q;

		put("local/xway/2/addrs", "127.0.0.2:0 192.0.2.50:0");
		put("local/xway/2/poke", "1");
		cr_assert(eventually(XWAY_Q_PEERS, "127.0.0.2"), "domain 2's new address not read");
		s = connect_from("127.0.0.2", l, &a, &acc);
		cr_assert_eq(tb_sock_name(s, false, &src), 0);
		snprintf(rec, sizeof(rec), "offer 9 8 3 00000000000000ad 127.0.0.2:%u 127.0.0.1:%u",
			 ntohs(src.port), ntohs(a.port));
		rec_send(cfd, rec);
		cr_assert(eventually(XWAY_Q_STATS, "\"xen_attaches_early\":2"),
			  "the second link offer was not attached when it came");
		cr_assert_eq(tb_sock_name(acc, false, &cl.local), 0);
		cr_assert_eq(tb_sock_name(acc, true, &cl.peer), 0);
		memset(&xo, 0, sizeof(xo));
		cr_assert_eq(tb_call(bfd, XWAY_MSG_CLAIM, &cl, sizeof(cl), &acc, 1, &xo, sizeof(xo),
				     rf, &nrf), XWAY_MSG_CLAIMED, "the link offer was not claimed");
		cr_assert_eq(nrf, 2);
		cr_assert_eq(xo.base.base.cookie, 0xadull);
		cr_assert_eq(xo.v.map_pages, 3);
		cr_assert_str_eq(rec_recv(cfd), "outcome 9 claimed");
		q = tb_query(bfd, XWAY_Q_STATS, true);
		cr_assert(q && strstr(q, "\"xen_attaches\":2,"), "attached again at the claim: %s", q);
		free(q);
		cr_assert_eq(tb_call(bfd, XWAY_MSG_REMAP, &cl, sizeof(cl), &acc, 1, &xo, sizeof(xo),
				     rf2, &nrf2), XWAY_MSG_CLAIMED, "REMAP refused after an early attach");
		cr_assert_eq(nrf2, 1);
		for (unsigned i = 0; i < nrf; i++)
			close(rf[i]);
		close(rf2[0]);
		close(s);
		close(acc);
	}

	/* Pending when the link closes: withdrawn, the outcome through xenstore. */
	snprintf(rec, sizeof(rec), "offer 8 8 3 00000000000000ac 192.0.2.50:40001 127.0.0.1:%u",
		 ntohs(a.port));
	rec_send(cfd, rec);
	cr_assert(eventually(XWAY_Q_CONNECTIONS, "\"state\":\"pending\""), "offer record ignored");
	close(cfd);
	close(lfd);             /* domain 2's broker is gone: nothing to attach to */
	cr_assert(wait_node("local/xway/1/outcomes/2/8", "withdrawn"),
		  "a pending link offer was not withdrawn when the link closed");
	cr_assert(eventually(XWAY_Q_PEERS, "\"in\":\"down\""));
	close(l);
}
