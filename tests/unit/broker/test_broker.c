/* SPDX-License-Identifier: MIT */
/*
 * Tests against a real xwayd on a temporary socket: protocol robustness
 * (every malformed request gets an ERROR or a disconnect, the broker stays
 * up and keeps no stray descriptors), the generation page, the listener
 * directory (refcounts, wildcards, namespaces), offer/claim/withdraw/expiry
 * and their races, SO_PEERCRED-based isolation, reports and queries.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helper.h"

static struct tbroker B;
static int bfd = -1;

static void start(const char *config)
{
	cr_assert_eq(tb_start(&B, config), 0, "xwayd did not start");
	bfd = tb_connect(B.sock);
	cr_assert_geq(bfd, 0);
}

static void setup(void)
{
	start(NULL);
}

static void teardown(void)
{
	if (bfd >= 0)
		close(bfd);
	bfd = -1;
	cr_expect_eq(tb_stop(&B), 0, "xwayd did not exit cleanly on SIGTERM");
}

/* Descriptors the broker holds right now. */
static int broker_fds(void)
{
	char path[64];
	DIR *d;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)B.pid);
	if (!(d = opendir(path)))
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/* Wait (up to 5 s) until the broker has n clients, so that hang-ups on
 * other links are processed before we look. */
static void wait_clients(int n)
{
	char want[32];

	snprintf(want, sizeof(want), "\"clients\":%d,", n);
	for (int i = 0; i < 500; i++) {
		char *q = tb_query(bfd, XWAY_Q_STATUS, true);
		bool ok = q && strstr(q, want);

		free(q);
		if (ok)
			return;
		usleep(10000);
	}
	cr_assert_fail("broker still has other clients than %d", n);
}

/* The broker is up and answers a well-formed request on a new link. */
static void assert_broker_ok(void)
{
	int fd = tb_connect(B.sock);
	struct xway_hello h = { .shim_version = 1 };
	struct xway_hello_ok ok;
	int rfds[8];
	unsigned n = 0;

	cr_assert(tb_alive(&B), "broker died");
	cr_assert_geq(fd, 0);
	cr_assert_eq(tb_call(fd, XWAY_MSG_HELLO, &h, sizeof(h), NULL, 0, &ok, sizeof(ok),
			     rfds, &n), XWAY_MSG_HELLO_OK);
	for (unsigned i = 0; i < n; i++)
		close(rfds[i]);
	close(fd);
}

static void expect_error(const void *pkt, size_t len, const int *fds, unsigned nfds,
			 int status, const char *text)
{
	char buf[XWAY_MSG_MAX + 1];
	struct xway_msg_hdr h;
	struct xway_result res;
	ssize_t n;

	cr_assert_eq(tb_send_raw(bfd, pkt, len, fds, nfds), 0);
	n = tb_recv(bfd, buf, sizeof(buf), NULL, NULL);
	cr_assert_geq(n, (ssize_t)(sizeof(h) + sizeof(res)), "no ERROR reply (%zd)", n);
	memcpy(&h, buf, sizeof(h));
	memcpy(&res, buf + sizeof(h), sizeof(res));
	cr_assert_eq(h.type, XWAY_MSG_ERROR);
	cr_assert_eq(res.status, status, "status %d, want %d (%s)", res.status, status, res.text);
	cr_assert(strstr(res.text, text), "text '%s' lacks '%s'", res.text, text);
}

static size_t mkpkt(char *buf, uint16_t type, uint32_t seq, const void *body, size_t len)
{
	struct xway_msg_hdr h = { .magic = XWAY_PROTO_MAGIC, .version = XWAY_PROTO_VERSION,
				  .type = type, .len = (uint32_t)(sizeof(h) + len), .seq = seq };

	memcpy(buf, &h, sizeof(h));
	if (len)
		memcpy(buf + sizeof(h), body, len);
	return sizeof(h) + len;
}

TestSuite(wire, .init = setup, .fini = teardown, .timeout = 60);

Test(wire, hello_and_gen_page)
{
	/* Check HELLO_OK (version, mode, instance) and that its one fd is a
	 * read-only generation page that moves when a listener is added. */
	struct xway_hello h = { .shim_version = 1 };
	struct xway_hello_ok ok;
	struct xway_addr a;
	struct xway_gen_page *g;
	int rfds[8], lfd;
	unsigned n = 0;
	uint64_t g0;

	cr_assert_eq(tb_call(bfd, XWAY_MSG_HELLO, &h, sizeof(h), NULL, 0, &ok, sizeof(ok),
			     rfds, &n), XWAY_MSG_HELLO_OK);
	cr_assert_eq(n, 1);
	cr_assert_eq(ok.mode, 1);
	cr_assert_neq(ok.instance, 0);
	cr_assert_eq(mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, rfds[0], 0), MAP_FAILED,
		     "generation page must not be writable by clients");
	g = mmap(NULL, 4096, PROT_READ, MAP_SHARED, rfds[0], 0);
	cr_assert_neq(g, MAP_FAILED);
	g0 = __atomic_load_n(&g->listener_gen, __ATOMIC_ACQUIRE);
	lfd = tb_listener("127.0.0.1", &a);
	cr_assert_eq(tb_listen_add(bfd, lfd, &a), 0);
	cr_assert_gt(__atomic_load_n(&g->listener_gen, __ATOMIC_ACQUIRE), g0);
	munmap(g, 4096);
	close(rfds[0]);
	close(lfd);
}

Test(wire, bad_magic_version_length)
{
	/* Check that bad magic, version and length each get an ERROR, and
	 * the same link keeps working afterwards. */
	char buf[256];
	struct xway_hello h = { 0 };
	struct xway_msg_hdr *hd = (void *)buf;
	size_t n = mkpkt(buf, XWAY_MSG_HELLO, 5, &h, sizeof(h));

	hd->magic = 0xdeadbeef;
	expect_error(buf, n, NULL, 0, -EPROTO, "magic");
	hd->magic = XWAY_PROTO_MAGIC;
	hd->version = 7;
	expect_error(buf, n, NULL, 0, -EPROTO, "version");
	hd->version = XWAY_PROTO_VERSION;
	hd->len = 1000;
	expect_error(buf, n, NULL, 0, -EPROTO, "length");
	expect_error(buf, 5, NULL, 0, -EPROTO, "shorter");
	assert_broker_ok();
}

Test(wire, unknown_type_and_truncated_body)
{
	/* Check unknown types, reply-only types, truncated and long bodies. */
	char buf[512], body[256] = { 0 };

	expect_error(buf, mkpkt(buf, 200, 1, body, 8), NULL, 0, -EOPNOTSUPP, "unknown");
	expect_error(buf, mkpkt(buf, XWAY_MSG_CLAIMED, 1, body, 32), NULL, 0, -EOPNOTSUPP, "unknown");
	expect_error(buf, mkpkt(buf, XWAY_MSG_WITHDRAW, 1, body, 4), NULL, 0, -EBADMSG, "truncated");
	expect_error(buf, mkpkt(buf, XWAY_MSG_QUERY, 1, body, 100), NULL, 0, -EBADMSG, "longer");
	assert_broker_ok();
}

Test(wire, oversized_packet)
{
	/* Check that a packet over XWAY_MSG_MAX gets -EMSGSIZE. */
	size_t len = XWAY_MSG_MAX + 512;
	char *buf = calloc(1, len);
	struct xway_hello h = { 0 };

	mkpkt(buf, XWAY_MSG_HELLO, 3, &h, sizeof(h));
	expect_error(buf, len, NULL, 0, -EMSGSIZE, "larger");
	free(buf);
	assert_broker_ok();
}

Test(wire, wrong_fd_counts_leak_nothing)
{
	/* Check that wrong descriptor counts get -EBADF (or a clear error for
	 * too many to receive) and that the broker keeps none of them. */
	char buf[512];
	struct xway_hello h = { 0 };
	struct xway_listen l = { 0 };
	struct xway_offer o = { 0 };
	int fds[8], base;

	for (int i = 0; i < 8; i++)
		fds[i] = dup(1);
	tb_addr_v4(&l.addr, "127.0.0.1", 1);
	assert_broker_ok();
	wait_clients(1);
	base = broker_fds();
	expect_error(buf, mkpkt(buf, XWAY_MSG_HELLO, 1, &h, sizeof(h)), fds, 1, -EBADF, "descriptors");
	expect_error(buf, mkpkt(buf, XWAY_MSG_LISTEN_ADD, 1, &l, sizeof(l)), NULL, 0, -EBADF,
		     "descriptors");
	expect_error(buf, mkpkt(buf, XWAY_MSG_LISTEN_ADD, 1, &l, sizeof(l)), fds, 3, -EBADF,
		     "descriptors");
	tb_addr_v4(&o.dst, "127.0.0.1", 1);
	tb_addr_v4(&o.src, "127.0.0.1", 2);
	o.cookie = 1;
	o.ring_order = 12;
	o.backend = 1;
	expect_error(buf, mkpkt(buf, XWAY_MSG_OFFER, 1, &o, sizeof(o)), fds, 2, -EBADF, "descriptors");
	expect_error(buf, mkpkt(buf, XWAY_MSG_OFFER, 1, &o, sizeof(o)), fds, 8, -EBADF, "descriptors");
	wait_clients(1);
	/* The broker closes them on a helper thread: allow it 5 s. */
	for (int i = 0; i < 500 && broker_fds() != base; i++)
		usleep(10000);
	cr_assert_eq(broker_fds(), base, "broker kept descriptors of refused messages (%d -> %d)",
		     base, broker_fds());
	for (int i = 0; i < 8; i++)
		close(fds[i]);
	assert_broker_ok();
}

Test(wire, flood_of_garbage_disconnects)
{
	/* Check that a client sending garbage without end is disconnected
	 * after a bounded number of errors while others are served. */
	char junk[64];
	int sent = 0, e = 0;

	memset(junk, 0x5a, sizeof(junk));
	for (int i = 0; i < 20000 && !e; i++) {
		if (send(bfd, junk, sizeof(junk), MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
			if (errno == EAGAIN) {
				struct pollfd p = { .fd = bfd, .events = POLLOUT };

				poll(&p, 1, 100);
				continue;
			}
			e = errno;
		}
		sent++;
	}
	/* Drain replies until EOF: the broker must have hung up on us. */
	for (int i = 0; i < 100000; i++) {
		char buf[512];
		ssize_t n = tb_recv(bfd, buf, sizeof(buf), NULL, NULL);

		if (n <= 0) {
			cr_assert(n == 0 || n == -ECONNRESET, "expected EOF, got %zd", n);
			break;
		}
	}
	cr_assert_gt(sent, 64);
	assert_broker_ok();
}

Test(wire, client_not_reading_replies_is_dropped)
{
	/* Check that a client that asks and never reads is dropped once its
	 * output queue is full, and the broker stays responsive. */
	struct xway_query q = { .what = XWAY_Q_STATUS, .json = 1 };
	int sndbuf = 1 << 20, dropped = 0;

	setsockopt(bfd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	for (int i = 0; i < 50000 && !dropped; i++) {
		int r = tb_send(bfd, XWAY_MSG_QUERY, 1, &q, sizeof(q), NULL, 0);

		if (r == -EPIPE || r == -ECONNRESET)
			dropped = 1;
		else if (r == -EAGAIN)
			break;
	}
	/* Whether or not our sends failed yet, the link must end. */
	for (int i = 0; i < 200000; i++) {
		char buf[XWAY_MSG_MAX];
		ssize_t n = tb_recv(bfd, buf, sizeof(buf), NULL, NULL);

		if (n <= 0) {
			cr_assert(n == 0 || n == -ECONNRESET, "expected EOF, got %zd", n);
			break;
		}
	}
	assert_broker_ok();
}

/* ---- listener directory --------------------------------------------------- */

TestSuite(dir, .init = setup, .fini = teardown, .timeout = 60);

static int count(const char *hay, const char *needle)
{
	int n = 0;

	for (const char *p = hay; p && (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

static int listeners_of(int fd, const struct xway_addr *a)
{
	char want[96], addr[64];
	char *q = tb_query(fd, XWAY_Q_LISTENERS, true);
	int n;

	cr_assert(q);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", ntohs(a->port));
	snprintf(want, sizeof(want), "\"addr\":\"%s\"", addr);
	n = count(q, want);
	free(q);
	return n;
}

Test(dir, listen_add_validates_socket)
{
	/* Check that LISTEN_ADD refuses what is not a listening TCP socket
	 * bound where the message says. */
	struct xway_addr a, b;
	int p[2], lfd = tb_listener("127.0.0.1", &a), ufd = tb_bound("127.0.0.1", &b);

	cr_assert_eq(pipe(p), 0);
	cr_assert_eq(tb_listen_add(bfd, p[0], &a), -ENOTSOCK);
	cr_assert_eq(tb_listen_add(bfd, ufd, &b), -EINVAL, "not listening");
	b.port = htons(ntohs(a.port) ^ 1);
	cr_assert_eq(tb_listen_add(bfd, lfd, &b), -EINVAL, "address mismatch");
	cr_assert_eq(tb_listen_add(bfd, lfd, &a), 0);
	close(p[0]);
	close(p[1]);
	close(lfd);
	close(ufd);
}

Test(dir, refcount_per_client)
{
	/* Check that a listener lives while any client holds a reference:
	 * two from one client, one from another, removed by LISTEN_DEL and
	 * by disconnect. */
	struct xway_addr a;
	struct xway_listen body;
	struct xway_result res;
	int lfd = tb_listener("127.0.0.1", &a), b2 = tb_connect(B.sock);

	body.addr = a;
	cr_assert_eq(tb_listen_add(bfd, lfd, &a), 0);
	cr_assert_eq(tb_listen_add(bfd, lfd, &a), 0);
	cr_assert_eq(tb_listen_add(b2, lfd, &a), 0);
	cr_assert_eq(listeners_of(bfd, &a), 1);
	close(b2);
	wait_clients(1);
	cr_assert_eq(listeners_of(bfd, &a), 1, "first client still holds it");
	cr_assert_eq(tb_call_result(bfd, XWAY_MSG_LISTEN_DEL, &body, sizeof(body), NULL, 0, &res),
		     XWAY_MSG_RESULT);
	cr_assert_eq(res.status, 0);
	cr_assert_eq(listeners_of(bfd, &a), 1, "one reference left");
	cr_assert_eq(tb_call_result(bfd, XWAY_MSG_LISTEN_DEL, &body, sizeof(body), &lfd, 1, &res),
		     XWAY_MSG_RESULT);
	cr_assert_eq(res.status, 0);
	cr_assert_eq(listeners_of(bfd, &a), 0);
	cr_assert_eq(tb_call_result(bfd, XWAY_MSG_LISTEN_DEL, &body, sizeof(body), NULL, 0, &res),
		     XWAY_MSG_RESULT);
	cr_assert_eq(res.status, -ENOENT);
	b2 = tb_connect(B.sock);
	cr_assert_eq(tb_listen_add(b2, lfd, &a), 0);
	close(b2);
	wait_clients(1);
	cr_assert_eq(listeners_of(bfd, &a), 0, "removed on disconnect");
	close(lfd);
}

static int offer_status(const struct xway_addr *dst, uint32_t *reason)
{
	struct xway_addr src;
	struct tchan ch;
	int s = tb_bound("127.0.0.1", &src), r;

	cr_assert_eq(tb_chan(&ch, tb_random64(), 12), 0);
	r = tb_offer(bfd, dst, s, &src, &ch, NULL, reason);
	close(s);
	tb_chan_close(&ch);
	return r;
}

Test(dir, wildcard_and_exact_matching)
{
	/* Check co-residency lookups: exact, 0.0.0.0, [::] (dual stack),
	 * wrong port, other loopback address, non-local address. */
	struct xway_addr w4, w6, ex, d;
	uint32_t reason = 0;
	int l4 = tb_listener("0.0.0.0", &w4), l6 = tb_listener("::", &w6);
	int lx = tb_listener("127.0.0.1", &ex);

	cr_assert_eq(tb_listen_add(bfd, l4, &w4), 0);
	cr_assert_eq(tb_listen_add(bfd, l6, &w6), 0);
	cr_assert_eq(tb_listen_add(bfd, lx, &ex), 0);

	tb_addr_v4(&d, "127.0.0.1", ntohs(w4.port));
	cr_assert_eq(offer_status(&d, &reason), 1, "0.0.0.0 listener, 127.0.0.1 dst");
	tb_addr_v4(&d, "127.0.0.5", ntohs(w4.port));
	cr_assert_eq(offer_status(&d, &reason), 1, "0.0.0.0 listener owns all of 127/8");
	tb_addr_v4(&d, "127.0.0.1", ntohs(w6.port));
	cr_assert_eq(offer_status(&d, &reason), 1, "[::] listener accepts v4 too");
	tb_addr_v4(&d, "127.0.0.1", ntohs(ex.port));
	cr_assert_eq(offer_status(&d, &reason), 1, "exact");
	tb_addr_v4(&d, "127.0.0.2", ntohs(ex.port));
	cr_assert_eq(offer_status(&d, &reason), -ENOENT, "exact listener, other ip");
	cr_assert_eq(reason, XWAY_R_NO_LISTENER);
	tb_addr_v4(&d, "127.0.0.1", ntohs(ex.port) ^ 0x100);
	cr_assert_eq(offer_status(&d, &reason), -ENOENT);
	cr_assert_eq(reason, XWAY_R_NO_LISTENER);
	tb_addr_v4(&d, "192.0.2.77", ntohs(w4.port));
	cr_assert_eq(offer_status(&d, &reason), -ENOENT, "TEST-NET address is not local");
	cr_assert_eq(reason, XWAY_R_NOT_CORESIDENT);
	close(l4);
	close(l6);
	close(lx);
}

Test(dir, loopback_does_not_cross_netns)
{
	/* Check that a listener on 127.0.0.1 in another network namespace is
	 * not offered to a client here, while a client inside that namespace
	 * does find it. */
	int ctl[2], st;
	pid_t pid;
	struct xway_addr a;
	uint32_t reason = 0;
	char ok;

	if (geteuid() != 0)
		cr_skip_test("needs root to create a network namespace");
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, ctl), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int b, l, s, rc = 0;
		struct xway_addr src;
		struct tchan ch;

		close(ctl[0]);
		if (unshare(CLONE_NEWNET) < 0 ||
		    system("ip link set lo up") != 0)
			_exit(77);
		b = tb_connect(B.sock);
		l = tb_listener("127.0.0.1", &a);
		if (b < 0 || l < 0 || tb_listen_add(b, l, &a) != 0)
			_exit(2);
		/* Inside the namespace the listener is found. */
		s = tb_bound("127.0.0.1", &src);
		if (tb_chan(&ch, tb_random64(), 12) || tb_offer(b, &a, s, &src, &ch, NULL, NULL) != 1)
			rc = 3;
		if (write(ctl[1], &a, sizeof(a)) != sizeof(a))
			_exit(4);
		/* Hold the listener until the parent is done. */
		if (read(ctl[1], &ok, 1) != 1)
			rc = 5;
		_exit(rc);
	}
	close(ctl[1]);
	if (read(ctl[0], &a, sizeof(a)) != sizeof(a)) {
		waitpid(pid, &st, 0);
		if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
			cr_skip_test("cannot create a network namespace here");
		cr_assert_fail("namespace child failed (status 0x%x)", st);
	}
	cr_assert_eq(offer_status(&a, &reason), -ENOENT, "loopback crossed namespaces");
	cr_assert_eq(reason, XWAY_R_NO_LISTENER);
	ok = 1;
	cr_assert_eq(write(ctl[0], &ok, 1), 1);
	waitpid(pid, &st, 0);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status 0x%x", st);
	close(ctl[0]);
}

static int sh(const char *fmt, int arg)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), fmt, arg);
	return system(cmd);
}

static bool step(int fd, char want)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char c = 0;

	return poll(&p, 1, 10000) == 1 && read(fd, &c, 1) == 1 && c == want;
}

static void say(int fd, char c)
{
	if (write(fd, &c, 1) != 1)
		_exit(99);
}

/* Namespace A: a wildcard listener on 10.77.0.1; accepts and claims. */
static int netns_server(int ab)
{
	struct xway_addr la, lo;
	struct xway_claim cl;
	struct xway_claimed out;
	int b, l, a, rfds[8];
	unsigned n = 0;
	uint16_t port;

	if (unshare(CLONE_NEWNET) < 0 || sh("ip link set lo up%.0d", 0))
		return 77;
	say(ab, 'a');
	if (!step(ab, 'b'))
		return 20;
	if (sh("ip addr add 10.77.0.1/24 dev va%.0d && ip link set va up", 0))
		return 21;
	b = tb_connect(B.sock);
	l = tb_listener("0.0.0.0", &la);
	if (b < 0 || l < 0 || tb_listen_add(b, l, &la))
		return 22;
	port = la.port;
	say(ab, 'c');
	if (write(ab, &port, sizeof(port)) != sizeof(port) || !step(ab, 'd'))
		return 23;
	{
		struct pollfd p = { .fd = l, .events = POLLIN };

		if (poll(&p, 1, 10000) != 1 || (a = accept(l, NULL, NULL)) < 0)
			return 24;
	}
	tb_sock_name(a, false, &cl.local);
	tb_sock_name(a, true, &cl.peer);
	tb_addr_v4(&lo, "10.77.0.1", ntohs(port));
	if (memcmp(cl.local.ip, lo.ip, 16))
		return 25;
	if (tb_call(b, XWAY_MSG_CLAIM, &cl, sizeof(cl), &a, 1, &out, sizeof(out), rfds, &n) !=
	    XWAY_MSG_CLAIMED || n != 3)
		return 26;
	say(ab, 'e');
	return step(ab, 'f') ? 0 : 27;
}

/* Namespace B: creates the veth into A, offers across, connects. */
static int netns_client(int ab, pid_t a_pid)
{
	struct xway_addr src, dst;
	struct tchan ch, ch2;
	struct sockaddr_in sa = { .sin_family = AF_INET };
	uint32_t reason = 0;
	uint16_t port;
	int b, s;

	if (!step(ab, 'a'))
		return 30;
	if (unshare(CLONE_NEWNET) < 0 || sh("ip link set lo up%.0d", 0))
		return 77;
	if (sh("ip link add vb type veth peer name va netns %d", (int)a_pid) ||
	    sh("ip addr add 10.77.0.2/24 dev vb%.0d && ip link set vb up", 0))
		return 77;
	say(ab, 'b');
	if (!step(ab, 'c') || read(ab, &port, sizeof(port)) != sizeof(port))
		return 31;
	b = tb_connect(B.sock);
	if (b < 0)
		return 32;
	/* Loopback never reaches another namespace. */
	tb_addr_v4(&dst, "127.0.0.1", ntohs(port));
	s = tb_bound("127.0.0.1", &src);
	if (tb_chan(&ch2, tb_random64(), 12) ||
	    tb_offer(b, &dst, s, &src, &ch2, NULL, &reason) != -ENOENT ||
	    reason != XWAY_R_NO_LISTENER)
		return 33;
	close(s);
	/* A's address is co-resident through A's wildcard listener. */
	tb_addr_v4(&dst, "10.77.0.1", ntohs(port));
	s = tb_bound("10.77.0.2", &src);
	if (s < 0 || tb_chan(&ch, tb_random64(), 12) ||
	    tb_offer(b, &dst, s, &src, &ch, NULL, &reason) != 1)
		return 34;
	say(ab, 'd');
	inet_pton(AF_INET, "10.77.0.1", &sa.sin_addr);
	sa.sin_port = port;
	if (connect(s, (void *)&sa, sizeof(sa)) < 0)
		return 35;
	if (!step(ab, 'e'))
		return 36;
	if (__atomic_load_n(&ch.hdr->attached, __ATOMIC_ACQUIRE) != XWAY_ATTACH_CLAIMED)
		return 37;
	say(ab, 'f');
	return 0;
}

Test(dir, other_netns_address_is_coresident, .timeout = 60)
{
	/* Check that a client in one network namespace offering to an
	 * address of another namespace of this host (veth between two
	 * namespaces this test creates) finds that namespace's wildcard
	 * listener, and the claim from there succeeds; loopback does not
	 * cross. */
	int ab[2], sa_st, sb_st;
	pid_t a, b;

	if (geteuid() != 0)
		cr_skip_test("needs root to create network namespaces");
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, ab), 0);
	a = fork();
	cr_assert_geq(a, 0);
	if (a == 0) {
		close(ab[1]);
		_exit(netns_server(ab[0]));
	}
	b = fork();
	cr_assert_geq(b, 0);
	if (b == 0) {
		close(ab[0]);
		_exit(netns_client(ab[1], a));
	}
	close(ab[0]);
	close(ab[1]);
	waitpid(b, &sb_st, 0);
	waitpid(a, &sa_st, 0);
	if ((WIFEXITED(sb_st) && WEXITSTATUS(sb_st) == 77) ||
	    (WIFEXITED(sa_st) && WEXITSTATUS(sa_st) == 77))
		cr_skip_test("cannot create namespaces or a veth pair here");
	cr_assert(WIFEXITED(sb_st) && WEXITSTATUS(sb_st) == 0, "client namespace failed at %d",
		  WIFEXITED(sb_st) ? WEXITSTATUS(sb_st) : -1);
	cr_assert(WIFEXITED(sa_st) && WEXITSTATUS(sa_st) == 0, "server namespace failed at %d",
		  WIFEXITED(sa_st) ? WEXITSTATUS(sa_st) : -1);
}

/* ---- offers, claims, withdrawals ------------------------------------------ */

struct pair {
	int lfd, cfd, afd;          /* listener, client socket, accepted */
	struct xway_addr la, src;
	struct tchan ch;
	uint64_t offer_id;
};

/* A registered listener on 127.0.0.1 (once per test). */
static void pair_listen(struct pair *p)
{
	p->lfd = tb_listener("127.0.0.1", &p->la);
	cr_assert_geq(p->lfd, 0);
	cr_assert_eq(tb_listen_add(bfd, p->lfd, &p->la), 0);
}

/* OFFER from link ofd, then really connect and accept. */
static int pair_offer_connect(struct pair *p, int ofd)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	int r;

	p->cfd = tb_bound("127.0.0.1", &p->src);
	cr_assert_geq(p->cfd, 0);
	cr_assert_eq(tb_chan(&p->ch, tb_random64(), 12), 0);
	r = tb_offer(ofd, &p->la, p->cfd, &p->src, &p->ch, &p->offer_id, NULL);
	if (r != 1)
		return r;
	memcpy(&sa.sin_addr, p->la.ip + 12, 4);
	sa.sin_port = p->la.port;
	cr_assert_eq(connect(p->cfd, (void *)&sa, sizeof(sa)), 0);
	p->afd = accept(p->lfd, NULL, NULL);
	cr_assert_geq(p->afd, 0);
	return r;
}

static void pair_close(struct pair *p)
{
	close(p->cfd);
	close(p->afd);
	tb_chan_close(&p->ch);
}

/* CLAIM from link fd for p's accepted socket; returns the reply type and
 * fills res or cl; received descriptors closed unless rfds given. */
static int claim(int fd, struct pair *p, struct xway_result *res,
		 struct xway_claimed *cl, int *rfds, unsigned *nrfds)
{
	struct xway_claim c;
	union { struct xway_result r; struct xway_claimed c; } u;
	int got[8], t;
	unsigned n = 0;

	tb_sock_name(p->afd, false, &c.local);
	tb_sock_name(p->afd, true, &c.peer);
	memset(&u, 0, sizeof(u));
	t = tb_call(fd, XWAY_MSG_CLAIM, &c, sizeof(c), &p->afd, 1, &u, sizeof(u), got, &n);
	if (res)
		*res = u.r;
	if (cl)
		*cl = u.c;
	for (unsigned i = 0; i < n; i++) {
		if (rfds && i < 3)
			rfds[i] = got[i];
		else
			close(got[i]);
	}
	if (nrfds)
		*nrfds = n;
	return t;
}

static int withdraw(int fd, uint64_t id)
{
	struct xway_withdraw w = { .offer_id = id };
	struct xway_result res;

	cr_assert_eq(tb_call_result(fd, XWAY_MSG_WITHDRAW, &w, sizeof(w), NULL, 0, &res),
		     XWAY_MSG_RESULT);
	return res.status;
}

static uint64_t efd_read(int efd, int timeout_ms)
{
	struct pollfd p = { .fd = efd, .events = POLLIN };
	uint64_t v = 0;

	if (poll(&p, 1, timeout_ms) == 1 && read(efd, &v, sizeof(v)) != sizeof(v))
		v = 0;
	return v;
}

TestSuite(offer, .init = setup, .fini = teardown, .timeout = 120);

Test(offer, claim_decides_claimed)
{
	/* Check the accelerated path: CLAIMED with the offer's memfd and
	 * eventfds, attached == CLAIMED, efd0 woken, a later WITHDRAW gets
	 * -EALREADY and the connection shows as accelerated with bytes. */
	struct pair p;
	struct xway_claimed cl;
	struct xway_chan_shm *h;
	int rfds[3], sfd = tb_connect(B.sock);
	unsigned n = 0;
	char *q;

	pair_listen(&p);
	cr_assert_eq(pair_offer_connect(&p, bfd), 1);
	cr_assert_eq(p.ch.hdr->attached, XWAY_ATTACH_PENDING);
	cr_assert_eq(claim(sfd, &p, NULL, &cl, rfds, &n), XWAY_MSG_CLAIMED);
	cr_assert_eq(n, 3);
	cr_assert_eq(cl.cookie, p.ch.cookie);
	cr_assert_eq(cl.offer_id, p.offer_id);
	cr_assert_eq(cl.peer_pid, getpid());
	cr_assert_eq(__atomic_load_n(&p.ch.hdr->attached, __ATOMIC_ACQUIRE), XWAY_ATTACH_CLAIMED);
	cr_assert_eq(efd_read(p.ch.fds[1], 5000), 1, "client not woken on efd0");
	h = mmap(NULL, 4096, PROT_READ, MAP_SHARED, rfds[0], 0);
	cr_assert_neq(h, MAP_FAILED);
	cr_assert_eq(h->cookie, p.ch.cookie, "claimer got another memfd");
	munmap(h, 4096);
	for (int i = 0; i < 3; i++)
		close(rfds[i]);
	cr_assert_eq(withdraw(bfd, p.offer_id), -EALREADY);
	cr_assert_eq(p.ch.hdr->attached, XWAY_ATTACH_CLAIMED);
	/* Counters as a channel would keep them. */
	p.ch.hdr->ring[0].tx_bytes = 12345;
	p.ch.hdr->ring[1].tx_bytes = 678;
	q = tb_query(bfd, XWAY_Q_CONNECTIONS, true);
	cr_assert(q);
	cr_assert(strstr(q, "\"state\":\"accelerated\",\"backend\":\"local\""), "%s", q);
	cr_assert(strstr(q, "\"bytes_c2s\":12345,\"bytes_s2c\":678"), "%s", q);
	free(q);
	pair_close(&p);
	close(p.lfd);
	close(sfd);
}

Test(offer, claim_without_offer)
{
	/* Check that a claim for a connection nobody offered is refused with
	 * NO_OFFER and recorded as a no-offer fallback. */
	struct pair p;
	struct xway_result res;
	struct sockaddr_in sa = { .sin_family = AF_INET };
	char *q;

	pair_listen(&p);
	p.cfd = socket(AF_INET, SOCK_STREAM, 0);
	memcpy(&sa.sin_addr, p.la.ip + 12, 4);
	sa.sin_port = p.la.port;
	cr_assert_eq(connect(p.cfd, (void *)&sa, sizeof(sa)), 0);
	p.afd = accept(p.lfd, NULL, NULL);
	cr_assert_eq(claim(bfd, &p, &res, NULL, NULL, NULL), XWAY_MSG_RESULT);
	cr_assert_eq(res.status, -ENOENT);
	cr_assert_eq(res.reason, XWAY_R_NO_OFFER);
	q = tb_query(bfd, XWAY_Q_CONNECTIONS, true);
	cr_assert(strstr(q, "\"state\":\"fallback\",\"backend\":\"tcp\",\"reason\":\"no-offer\""),
		  "%s", q);
	free(q);
	close(p.cfd);
	close(p.afd);
	close(p.lfd);
}

/* Requests xwayd handles per link and wake-up (XWAYD_MSGS_PER_WAKEUP in
 * broker/xwayd.h; the test queues more than that). */
#define BROKER_MSGS_PER_WAKEUP 64

/* An OFFER with XWAY_HDR_F_CONNECTING (the shim's early offer) for p's
 * bound client socket, sent on ofd with seq; the reply is not read. */
static void send_connecting_offer(int ofd, struct pair *p, uint32_t seq)
{
	struct xway_offer o = { .dst = p->la, .src = p->src, .cookie = p->ch.cookie,
				.ring_order = p->ch.hdr->ring_order[0], .backend = 1 };
	struct xway_msg_hdr h = {
		.magic = XWAY_PROTO_MAGIC, .version = XWAY_PROTO_VERSION,
		.type = XWAY_MSG_OFFER, .len = (uint32_t)(sizeof(h) + sizeof(o)), .seq = seq,
		.flags = XWAY_HDR_F_CONNECTING,
	};
	char buf[sizeof(h) + sizeof(o)];
	int fds[4] = { p->cfd, p->ch.fds[0], p->ch.fds[1], p->ch.fds[2] };

	memcpy(buf, &h, sizeof(h));
	memcpy(buf + sizeof(h), &o, sizeof(o));
	cr_assert_eq(tb_send_raw(ofd, buf, sizeof(buf), fds, 4), 0);
}

/* The next packet on fd: its type, seq and (up to len bytes of) body. */
static int recv_reply(int fd, uint32_t *seq, void *body, size_t len)
{
	char buf[1024];
	struct xway_msg_hdr h;
	int rfds[8];
	unsigned n = 0;
	ssize_t k = tb_recv(fd, buf, sizeof(buf), rfds, &n);

	for (unsigned i = 0; i < n; i++)
		close(rfds[i]);
	if (k < (ssize_t)sizeof(h))
		return -1;
	memcpy(&h, buf, sizeof(h));
	*seq = h.seq;
	memset(body, 0, len);
	memcpy(body, buf + sizeof(h),
	       (size_t)k - sizeof(h) < len ? (size_t)k - sizeof(h) : len);
	return h.type;
}

/* As the shim: a first offer on link ofd to p's listener, answered
 * "pending" (a local listener there), is what lets a client connect early
 * (the broker marks the link); then withdrawn. */
static void mark_connecting(int ofd, const struct pair *p)
{
	struct pair first = *p;

	cr_assert_eq(pair_offer_connect(&first, ofd), 1);
	cr_assert_eq(withdraw(ofd, first.offer_id), 0);
	pair_close(&first);
}

Test(offer, connecting_offer_found_by_an_earlier_claim)
{
	/* Check the early offer: the client connects before the broker has
	 * read its OFFER (the broker is stopped meanwhile), and the server's
	 * CLAIM, on a link the broker reads first, finds no offer at first;
	 * it must read the queue of the client (marked when its first offer
	 * there was answered "pending") and claim the offer
	 * (claims_read_first counts it), the client's answer is "pending",
	 * and the header says CLAIMED. */
	struct pair p;
	struct xway_claim c;
	union { struct xway_result r; struct xway_claimed c; } u;
	struct sockaddr_in sa = { .sin_family = AF_INET };
	struct xway_result res;
	uint32_t seq = 0;
	int sfd, ofd;
	char *q;

	pair_listen(&p);
	sfd = tb_connect(B.sock);           /* older link: its source is read first */
	wait_clients(2);
	ofd = tb_connect(B.sock);
	wait_clients(3);
	mark_connecting(ofd, &p);
	p.cfd = tb_bound("127.0.0.1", &p.src);
	cr_assert_eq(tb_chan(&p.ch, tb_random64(), 12), 0);
	cr_assert_eq(kill(B.pid, SIGSTOP), 0);
	/* Whichever link the broker reads first: more requests than it
	 * handles per wake-up queued before the offer, so the claim comes
	 * before the offer either way. */
	for (uint32_t i = 0; i < BROKER_MSGS_PER_WAKEUP + 8; i++) {
		struct xway_withdraw w = { .offer_id = 0 };

		cr_assert_eq(tb_send(ofd, XWAY_MSG_WITHDRAW, 100 + i, &w, sizeof(w), NULL, 0), 0);
	}
	send_connecting_offer(ofd, &p, 900);
	memcpy(&sa.sin_addr, p.la.ip + 12, 4);
	sa.sin_port = p.la.port;
	cr_assert_eq(connect(p.cfd, (void *)&sa, sizeof(sa)), 0);
	p.afd = accept(p.lfd, NULL, NULL);
	cr_assert_geq(p.afd, 0);
	tb_sock_name(p.afd, false, &c.local);
	tb_sock_name(p.afd, true, &c.peer);
	cr_assert_eq(tb_send(sfd, XWAY_MSG_CLAIM, 901, &c, sizeof(c), &p.afd, 1), 0);
	cr_assert_eq(kill(B.pid, SIGCONT), 0);
	cr_assert_eq(recv_reply(sfd, &seq, &u, sizeof(u)), XWAY_MSG_CLAIMED,
		     "claim: %d %s", u.r.status, u.r.text);
	cr_assert_eq(seq, 901);
	cr_assert_eq(u.c.cookie, p.ch.cookie);
	for (int i = 0; i < BROKER_MSGS_PER_WAKEUP + 8; i++) {
		cr_assert_eq(recv_reply(ofd, &seq, &res, sizeof(res)), XWAY_MSG_RESULT);
		cr_assert_eq(seq, 100 + (uint32_t)i);
	}
	cr_assert_eq(recv_reply(ofd, &seq, &res, sizeof(res)), XWAY_MSG_RESULT);
	cr_assert_eq(seq, 900);
	cr_assert_eq(res.status, 1, "offer: %d %s", res.status, res.text);
	cr_assert_eq(__atomic_load_n(&p.ch.hdr->attached, __ATOMIC_ACQUIRE), XWAY_ATTACH_CLAIMED);
	q = tb_query(bfd, XWAY_Q_STATS, true);
	cr_assert(q && strstr(q, "\"offers_connecting\":1,"), "%s", q);
	cr_assert(strstr(q, "\"claims_read_first\":1,"), "%s", q);
	cr_assert(strstr(q, "\"claim_misses\":0,"), "%s", q);
	free(q);
	pair_close(&p);
	close(p.lfd);
	close(sfd);
	close(ofd);
}

Test(offer, claim_read_while_reading_connecting_links)
{
	/* Check a claim that is itself read from a connecting client's link
	 * while another claim reads those links (a process that connects
	 * and accepts, a proxy): its offer, queued early on a third link,
	 * is found whatever order the links are read in.  Links: R (oldest,
	 * read first) claims a connection nobody offered; P (marked) claims
	 * connection X; Q (marked) offered X early.  R: no offer; P:
	 * CLAIMED; Q: pending; X's header: CLAIMED. */
	struct pair x;
	struct xway_claim c;
	union { struct xway_result r; struct xway_claimed c; } u;
	struct sockaddr_in sa = { .sin_family = AF_INET };
	struct xway_result res;
	uint32_t seq = 0;
	int rfd, pfd, qfd, lone, lone_a;
	struct xway_claim lc;

	pair_listen(&x);
	rfd = tb_connect(B.sock);
	wait_clients(2);
	pfd = tb_connect(B.sock);
	qfd = tb_connect(B.sock);
	wait_clients(4);
	mark_connecting(pfd, &x);
	mark_connecting(qfd, &x);
	/* A connection nobody offered, for R's claim. */
	lone = socket(AF_INET, SOCK_STREAM, 0);
	memcpy(&sa.sin_addr, x.la.ip + 12, 4);
	sa.sin_port = x.la.port;
	cr_assert_eq(connect(lone, (void *)&sa, sizeof(sa)), 0);
	lone_a = accept(x.lfd, NULL, NULL);
	cr_assert_geq(lone_a, 0);
	tb_sock_name(lone_a, false, &lc.local);
	tb_sock_name(lone_a, true, &lc.peer);

	x.cfd = tb_bound("127.0.0.1", &x.src);
	cr_assert_eq(tb_chan(&x.ch, tb_random64(), 12), 0);
	cr_assert_eq(kill(B.pid, SIGSTOP), 0);
	send_connecting_offer(qfd, &x, 910);
	cr_assert_eq(connect(x.cfd, (void *)&sa, sizeof(sa)), 0);
	x.afd = accept(x.lfd, NULL, NULL);
	cr_assert_geq(x.afd, 0);
	tb_sock_name(x.afd, false, &c.local);
	tb_sock_name(x.afd, true, &c.peer);
	cr_assert_eq(tb_send(pfd, XWAY_MSG_CLAIM, 911, &c, sizeof(c), &x.afd, 1), 0);
	cr_assert_eq(tb_send(rfd, XWAY_MSG_CLAIM, 912, &lc, sizeof(lc), &lone_a, 1), 0);
	cr_assert_eq(kill(B.pid, SIGCONT), 0);

	cr_assert_eq(recv_reply(rfd, &seq, &res, sizeof(res)), XWAY_MSG_RESULT);
	cr_assert_eq(seq, 912);
	cr_assert_eq(res.reason, XWAY_R_NO_OFFER, "%d %s", res.status, res.text);
	cr_assert_eq(recv_reply(pfd, &seq, &u, sizeof(u)), XWAY_MSG_CLAIMED,
		     "P's claim: %d %s", u.r.status, u.r.text);
	cr_assert_eq(seq, 911);
	cr_assert_eq(u.c.cookie, x.ch.cookie);
	cr_assert_eq(recv_reply(qfd, &seq, &res, sizeof(res)), XWAY_MSG_RESULT);
	cr_assert_eq(seq, 910);
	cr_assert_eq(res.status, 1, "Q's offer: %d %s", res.status, res.text);
	cr_assert_eq(__atomic_load_n(&x.ch.hdr->attached, __ATOMIC_ACQUIRE), XWAY_ATTACH_CLAIMED);
	close(lone);
	close(lone_a);
	pair_close(&x);
	close(x.lfd);
	close(rfd);
	close(pfd);
	close(qfd);
}

Test(offer, connecting_offer_of_a_socket_connected_elsewhere)
{
	/* Check that an early offer's socket, if connected, must be connected
	 * to the offer's destination: one connected to another listener is
	 * refused (nothing registered), while a plain offer of a connected
	 * socket is refused as before. */
	struct pair p;
	struct xway_addr other;
	struct xway_result res;
	struct sockaddr_in sa = { .sin_family = AF_INET };
	uint32_t seq = 0;
	int olfd, afd;

	pair_listen(&p);
	olfd = tb_listener("127.0.0.1", &other);
	cr_assert_geq(olfd, 0);
	p.cfd = tb_bound("127.0.0.1", &p.src);
	cr_assert_eq(tb_chan(&p.ch, tb_random64(), 12), 0);
	memcpy(&sa.sin_addr, other.ip + 12, 4);
	sa.sin_port = other.port;
	cr_assert_eq(connect(p.cfd, (void *)&sa, sizeof(sa)), 0);
	afd = accept(olfd, NULL, NULL);
	cr_assert_geq(afd, 0);
	send_connecting_offer(bfd, &p, 902);
	cr_assert_eq(recv_reply(bfd, &seq, &res, sizeof(res)), XWAY_MSG_RESULT);
	cr_assert_eq(seq, 902);
	cr_assert_eq(res.status, -EISCONN, "%d %s", res.status, res.text);
	cr_assert(strstr(res.text, "connected elsewhere"), "%s", res.text);
	cr_assert_eq(tb_offer(bfd, &p.la, p.cfd, &p.src, &p.ch, NULL, NULL), -EISCONN);
	close(afd);
	close(olfd);
	close(p.cfd);
	tb_chan_close(&p.ch);
	close(p.lfd);
}

Test(offer, claim_with_wrong_names)
{
	/* Check that a claim whose body differs from its socket is refused. */
	struct pair p;
	struct xway_claim c;
	struct xway_result res;

	pair_listen(&p);
	cr_assert_eq(pair_offer_connect(&p, bfd), 1);
	tb_sock_name(p.afd, false, &c.local);
	tb_sock_name(p.afd, true, &c.peer);
	c.peer.port ^= 0x0101;
	cr_assert_eq(tb_call_result(bfd, XWAY_MSG_CLAIM, &c, sizeof(c), &p.afd, 1, &res),
		     XWAY_MSG_RESULT);
	cr_assert_eq(res.status, -EINVAL);
	cr_assert_eq(p.ch.hdr->attached, XWAY_ATTACH_PENDING);
	cr_assert_eq(tb_call_result(bfd, XWAY_MSG_CLAIM, &c, sizeof(c), &p.lfd, 1, &res),
		     XWAY_MSG_RESULT);
	cr_assert_lt(res.status, 0, "a listening socket is no accepted socket");
	/* Nor are a connected AF_UNIX stream and a connected UDP socket
	 * (the broker's proof asks SO_TYPE and SO_PROTOCOL, and the names'
	 * family). */
	{
		int sp[2], u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(9),
					  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

		cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
		cr_assert_geq(u, 0);
		cr_assert_eq(connect(u, (struct sockaddr *)&to, sizeof(to)), 0);
		tb_sock_name(p.afd, true, &c.peer);
		cr_assert_eq(tb_call_result(bfd, XWAY_MSG_CLAIM, &c, sizeof(c), &sp[0], 1, &res),
			     XWAY_MSG_RESULT);
		cr_assert_lt(res.status, 0, "an AF_UNIX stream is no accepted socket");
		/* The UDP socket's own names: only its type refuses it. */
		struct xway_claim cu;

		tb_sock_name(u, false, &cu.local);
		tb_sock_name(u, true, &cu.peer);
		cr_assert_eq(tb_call_result(bfd, XWAY_MSG_CLAIM, &cu, sizeof(cu), &u, 1, &res),
			     XWAY_MSG_RESULT);
		cr_assert_lt(res.status, 0, "a UDP socket is no accepted socket");
		cr_assert_eq(res.status, -EPROTOTYPE, "UDP: status %d", res.status);
		cr_assert_eq(p.ch.hdr->attached, XWAY_ATTACH_PENDING);
		close(sp[0]);
		close(sp[1]);
		close(u);
	}
	pair_close(&p);
	close(p.lfd);
}

Test(offer, withdraw_decides_withdrawn)
{
	/* Check WITHDRAW of a pending offer: attached == WITHDRAWN, efd0
	 * woken, a later claim gets NO_OFFER; unknown ids are "withdrawn". */
	struct pair p;
	struct xway_result res;

	pair_listen(&p);
	cr_assert_eq(pair_offer_connect(&p, bfd), 1);
	cr_assert_eq(withdraw(bfd, p.offer_id), 0);
	cr_assert_eq(p.ch.hdr->attached, XWAY_ATTACH_WITHDRAWN);
	cr_assert_eq(efd_read(p.ch.fds[1], 5000), 1);
	cr_assert_eq(claim(bfd, &p, &res, NULL, NULL, NULL), XWAY_MSG_RESULT);
	cr_assert_eq(res.reason, XWAY_R_NO_OFFER);
	cr_assert_eq(withdraw(bfd, p.offer_id), 0);
	cr_assert_eq(withdraw(bfd, 0xfffffff), 0);
	pair_close(&p);
	close(p.lfd);
}

Test(offer, disconnect_withdraws)
{
	/* Check that the offering client's disconnect withdraws its offer. */
	struct pair p;
	int ofd = tb_connect(B.sock);

	pair_listen(&p);
	cr_assert_eq(pair_offer_connect(&p, ofd), 1);
	close(ofd);
	cr_assert_eq(efd_read(p.ch.fds[1], 5000), 1, "no wake-up after disconnect");
	cr_assert_eq(p.ch.hdr->attached, XWAY_ATTACH_WITHDRAWN);
	pair_close(&p);
	close(p.lfd);
}

Test(offer, bad_offers_are_refused)
{
	/* Check OFFER validation: connected socket, port mismatch, unsealed
	 * memfd, wrong cookie, a pipe for an eventfd, duplicate cookie. */
	struct pair p;
	struct xway_addr src;
	struct tchan ch;
	uint32_t reason;
	int s, pfd[2];

	pair_listen(&p);
	/* Port mismatch. */
	s = tb_bound("127.0.0.1", &src);
	cr_assert_eq(tb_chan(&ch, tb_random64(), 12), 0);
	src.port ^= 0x0100;
	cr_assert_lt(tb_offer(bfd, &p.la, s, &src, &ch, NULL, &reason), 0);
	cr_assert_eq(reason, XWAY_R_SETUP_CHAN);
	tb_sock_name(s, false, &src);
	/* Wrong cookie in the header. */
	ch.hdr->cookie ^= 1;
	cr_assert_lt(tb_offer(bfd, &p.la, s, &src, &ch, NULL, &reason), 0);
	ch.hdr->cookie ^= 1;
	/* Not an eventfd. */
	cr_assert_eq(pipe(pfd), 0);
	{
		int keep = ch.fds[2];

		ch.fds[2] = pfd[0];
		cr_assert_lt(tb_offer(bfd, &p.la, s, &src, &ch, NULL, &reason), 0);
		ch.fds[2] = keep;
	}
	close(pfd[0]);
	close(pfd[1]);
	/* Nor are a memfd, /dev/null or a socket (the broker's statx shortcut
	 * admits only the anonymous inode eventfds share; these take the
	 * /proc link path and are refused there). */
	{
		int others[3] = { memfd_create("not-an-eventfd", MFD_CLOEXEC),
				  open("/dev/null", O_RDWR | O_CLOEXEC),
				  socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0) };
		int keep = ch.fds[1];

		for (int i = 0; i < 3; i++) {
			cr_assert_geq(others[i], 0);
			ch.fds[1] = others[i];
			cr_assert_lt(tb_offer(bfd, &p.la, s, &src, &ch, NULL, &reason), 0,
				     "descriptor %d taken for an eventfd", i);
			close(others[i]);
		}
		ch.fds[1] = keep;
	}
	/* Good, then the same cookie again. */
	cr_assert_eq(tb_offer(bfd, &p.la, s, &src, &ch, NULL, &reason), 1);
	cr_assert_lt(tb_offer(bfd, &p.la, s, &src, &ch, NULL, &reason), 0);
	close(s);
	tb_chan_close(&ch);
	/* Unsealed memfd. */
	s = tb_bound("127.0.0.1", &src);
	cr_assert_eq(tb_chan(&ch, tb_random64(), 12), 0);
	{
		int fresh = memfd_create("unsealed", MFD_CLOEXEC), keep = ch.fds[0];
		char page[4096 + 8192] = { 0 };

		memcpy(page, ch.hdr, sizeof(struct xway_chan_shm));
		cr_assert_eq(write(fresh, page, sizeof(page)), (ssize_t)sizeof(page));
		ch.fds[0] = fresh;
		cr_assert_lt(tb_offer(bfd, &p.la, s, &src, &ch, NULL, &reason), 0);
		ch.fds[0] = keep;
		close(fresh);
	}
	close(s);
	/* Already connected socket. */
	{
		struct pair q = p;

		cr_assert_eq(pair_offer_connect(&q, bfd), 1);
		cr_assert_lt(tb_offer(bfd, &p.la, q.cfd, &q.src, &ch, NULL, &reason), 0);
		pair_close(&q);
	}
	tb_chan_close(&ch);
	close(p.lfd);
	assert_broker_ok();
}

/* Claim and withdraw racing from two threads on two broker links. */
struct racer {
	pthread_barrier_t *bar;
	int fd;
	struct pair *p;
	int type, status;
};

static void *race_claim(void *arg)
{
	struct racer *r = arg;
	struct xway_result res;

	pthread_barrier_wait(r->bar);
	r->type = claim(r->fd, r->p, &res, NULL, NULL, NULL);
	r->status = res.status;
	return NULL;
}

static void *race_withdraw(void *arg)
{
	struct racer *r = arg;
	struct xway_withdraw w = { .offer_id = r->p->offer_id };
	struct xway_result res;

	pthread_barrier_wait(r->bar);
	r->type = tb_call_result(r->fd, XWAY_MSG_WITHDRAW, &w, sizeof(w), NULL, 0, &res);
	r->status = res.status;
	return NULL;
}

Test(offer, claim_withdraw_race, .timeout = 600)
{
	/* Check, many times, that a claim racing a withdraw yields exactly
	 * one decision and that all three parties agree on it. */
	int iters = getenv("XWAY_RACE_ITERS") ? atoi(getenv("XWAY_RACE_ITERS")) : 1500;
	int cfd = tb_connect(B.sock), wfd = tb_connect(B.sock), claimed = 0, withdrawn = 0;
	pthread_barrier_t bar;
	struct pair p;

	pair_listen(&p);
	pthread_barrier_init(&bar, NULL, 2);
	for (int i = 0; i < iters; i++) {
		struct racer rc = { .bar = &bar, .fd = cfd, .p = &p };
		struct racer rw = { .bar = &bar, .fd = wfd, .p = &p };
		pthread_t tc, tw;
		uint32_t a;

		cr_assert_eq(pair_offer_connect(&p, bfd), 1);
		pthread_create(&tc, NULL, race_claim, &rc);
		pthread_create(&tw, NULL, race_withdraw, &rw);
		pthread_join(tc, NULL);
		pthread_join(tw, NULL);
		a = __atomic_load_n(&p.ch.hdr->attached, __ATOMIC_ACQUIRE);
		cr_assert_eq(rw.type, XWAY_MSG_RESULT);
		if (rc.type == XWAY_MSG_CLAIMED) {
			cr_assert_eq(rw.status, -EALREADY, "iteration %d: claimed but withdraw %d",
				     i, rw.status);
			cr_assert_eq(a, XWAY_ATTACH_CLAIMED, "iteration %d", i);
			claimed++;
		} else {
			cr_assert_eq(rc.type, XWAY_MSG_RESULT);
			cr_assert_eq(rc.status, -ENOENT, "iteration %d", i);
			cr_assert_eq(rw.status, 0, "iteration %d", i);
			cr_assert_eq(a, XWAY_ATTACH_WITHDRAWN, "iteration %d", i);
			withdrawn++;
		}
		cr_assert_eq(efd_read(p.ch.fds[1], 5000), 1, "iteration %d: no wake-up", i);
		pair_close(&p);
	}
	cr_log_info("claim/withdraw race: %d claimed, %d withdrawn of %d", claimed, withdrawn,
		    iters);
	pthread_barrier_destroy(&bar);
	close(cfd);
	close(wfd);
	close(p.lfd);
}

/* ---- expiry (own broker with a short claim timeout) ----------------------- */

static void setup_short_timeout(void)
{
	start("claim_timeout_ms=150\n");
}

TestSuite(expiry, .init = setup_short_timeout, .fini = teardown, .timeout = 120);

Test(expiry, unclaimed_offer_is_withdrawn)
{
	/* Check that an offer nobody claims is withdrawn (attached, efd0,
	 * record with the timeout in its detail) and a late claim misses. */
	struct pair p;
	struct xway_result res;
	char *q;

	pair_listen(&p);
	cr_assert_eq(pair_offer_connect(&p, bfd), 1);
	cr_assert_eq(efd_read(p.ch.fds[1], 10000), 1, "offer never expired");
	cr_assert_eq(p.ch.hdr->attached, XWAY_ATTACH_WITHDRAWN);
	cr_assert_eq(claim(bfd, &p, &res, NULL, NULL, NULL), XWAY_MSG_RESULT);
	cr_assert_eq(res.reason, XWAY_R_NO_OFFER);
	cr_assert_eq(withdraw(bfd, p.offer_id), 0);
	q = tb_query(bfd, XWAY_Q_CONNECTIONS, true);
	cr_assert(strstr(q, "\"reason\":\"withdrawn\",\"detail\":\"not claimed within 150 ms\""),
		  "%s", q);
	free(q);
	pair_close(&p);
	close(p.lfd);
}

Test(expiry, claim_versus_expiry_race, .timeout = 600)
{
	/* Check that claims landing around the claim timeout still get one
	 * decision agreed by all: claim first -> CLAIMED, else NO_OFFER and
	 * WITHDRAWN. */
	int iters = 60, claimed = 0, expired = 0;
	struct pair p;

	pair_listen(&p);
	for (int i = 0; i < iters; i++) {
		struct xway_result res;
		int t;
		uint32_t a;

		cr_assert_eq(pair_offer_connect(&p, bfd), 1);
		usleep(100000 + (i % 12) * 9000);   /* spread around 150 ms */
		t = claim(bfd, &p, &res, NULL, NULL, NULL);
		a = __atomic_load_n(&p.ch.hdr->attached, __ATOMIC_ACQUIRE);
		if (t == XWAY_MSG_CLAIMED) {
			cr_assert_eq(a, XWAY_ATTACH_CLAIMED);
			cr_assert_eq(withdraw(bfd, p.offer_id), -EALREADY);
			claimed++;
		} else {
			cr_assert_eq(res.reason, XWAY_R_NO_OFFER);
			cr_assert_eq(a, XWAY_ATTACH_WITHDRAWN);
			expired++;
		}
		cr_assert_eq(efd_read(p.ch.fds[1], 5000), 1);
		pair_close(&p);
	}
	cr_log_info("claim/expiry: %d claimed, %d expired", claimed, expired);
	close(p.lfd);
}

/* ---- SO_PEERCRED ------------------------------------------------------------ */

TestSuite(creds, .init = setup, .fini = teardown, .timeout = 60);

Test(creds, other_uid_sees_and_withdraws_nothing)
{
	/* Check that a non-root client (uid nobody) does not see root's
	 * listeners or connections and cannot withdraw root's offer, while
	 * it sees its own report. */
	struct pair p;
	struct xway_addr d;
	uint32_t reason;
	pid_t pid;
	int st;

	if (geteuid() != 0)
		cr_skip_test("needs root to switch to another uid");
	pair_listen(&p);
	tb_addr_v4(&d, "127.0.0.1", ntohs(p.la.port) ^ 0x100);
	cr_assert_eq(offer_status(&d, &reason), -ENOENT);   /* a root fallback record */
	cr_assert_eq(pair_offer_connect(&p, bfd), 1);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct xway_withdraw w = { .offer_id = p.offer_id };
		struct xway_report rep;
		struct xway_result res;
		char *q;
		int fd;

		if (setgid(65534) || setuid(65534))
			_exit(10);
		fd = tb_connect(B.sock);
		if (fd < 0)
			_exit(11);
		q = tb_query(fd, XWAY_Q_CONNECTIONS, true);
		if (!q || strcmp(q, "{\"connections\":[]}\n"))
			_exit(12);
		free(q);
		q = tb_query(fd, XWAY_Q_LISTENERS, true);
		if (!q || strcmp(q, "{\"listeners\":[]}\n"))
			_exit(13);
		free(q);
		if (tb_call_result(fd, XWAY_MSG_WITHDRAW, &w, sizeof(w), NULL, 0, &res) !=
		    XWAY_MSG_RESULT || res.status != -EPERM)
			_exit(14);
		memset(&rep, 0, sizeof(rep));
		rep.kind = XWAY_REP_FALLBACK;
		rep.reason = XWAY_R_DISABLED;
		tb_addr_v4(&rep.local, "127.0.0.1", 1111);
		tb_addr_v4(&rep.peer, "127.0.0.1", 2222);
		strcpy(rep.text, "nobody's own");
		if (tb_send(fd, XWAY_MSG_REPORT, 1, &rep, sizeof(rep), NULL, 0))
			_exit(15);
		q = tb_query(fd, XWAY_Q_CONNECTIONS, true);
		if (!q || !strstr(q, "nobody's own") || !strstr(q, "\"uid\":65534") ||
		    strstr(q, "\"uid\":0"))
			_exit(16);
		free(q);
		_exit(0);
	}
	waitpid(pid, &st, 0);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "uid-nobody child failed at step %d",
		  WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	cr_assert_eq(p.ch.hdr->attached, XWAY_ATTACH_PENDING, "nobody withdrew root's offer");
	cr_assert_eq(withdraw(bfd, p.offer_id), 0);
	pair_close(&p);
	close(p.lfd);
}

/* ---- reports and queries ---------------------------------------------------- */

TestSuite(report, .init = setup, .fini = teardown, .timeout = 60);

Test(report, closed_from_both_sides)
{
	/* Check that REPORT CLOSED from both ends closes the record with
	 * their channel and kernel TCP counters. */
	struct pair p;
	struct xway_report rep;
	int sfd = tb_connect(B.sock);
	char *q;

	pair_listen(&p);
	cr_assert_eq(pair_offer_connect(&p, bfd), 1);
	cr_assert_eq(claim(sfd, &p, NULL, NULL, NULL, NULL), XWAY_MSG_CLAIMED);
	memset(&rep, 0, sizeof(rep));
	rep.kind = XWAY_REP_CLOSED;
	rep.cookie = p.ch.cookie;
	tb_sock_name(p.cfd, false, &rep.local);
	tb_sock_name(p.cfd, true, &rep.peer);
	rep.side = 0;
	rep.chan_tx_bytes = 1000000;
	rep.chan_rx_bytes = 2000;
	rep.tcp_bytes_sent = 0;
	rep.tcp_bytes_received = 0;
	cr_assert_eq(tb_send(bfd, XWAY_MSG_REPORT, 1, &rep, sizeof(rep), NULL, 0), 0);
	q = tb_query(bfd, XWAY_Q_CONNECTIONS, true);
	cr_assert(strstr(q, "\"state\":\"accelerated\""), "one side closed: still live: %s", q);
	free(q);
	rep.side = 1;
	rep.chan_tx_bytes = 2000;
	rep.chan_rx_bytes = 1000000;
	rep.tcp_bytes_sent = 1;
	cr_assert_eq(tb_send(sfd, XWAY_MSG_REPORT, 1, &rep, sizeof(rep), NULL, 0), 0);
	free(tb_query(sfd, XWAY_Q_STATUS, false));   /* the report is processed */
	q = tb_query(bfd, XWAY_Q_CONNECTIONS, true);
	cr_assert(strstr(q, "\"state\":\"closed\""), "%s", q);
	cr_assert(strstr(q, "\"bytes_c2s\":1000000,\"bytes_s2c\":2000"), "%s", q);
	cr_assert(strstr(q, "\"tcp_bytes_sent\":0,\"tcp_bytes_received\":0}"), "%s", q);
	cr_assert(strstr(q, "\"tcp_bytes_sent\":1,\"tcp_bytes_received\":0}"), "%s", q);
	cr_assert(!strstr(q, "\"ended\":null"), "%s", q);
	free(q);
	pair_close(&p);
	close(p.lfd);
	close(sfd);
}

Test(report, many_records_span_packets_and_are_capped)
{
	/* Check that a long connections reply comes as several TEXT packets
	 * (reassembled intact) and that only the last 4096 records stay. */
	struct xway_report rep;
	char *q;
	int n;

	memset(&rep, 0, sizeof(rep));
	rep.kind = XWAY_REP_FALLBACK;
	rep.reason = XWAY_R_PEER_TCP;
	tb_addr_v4(&rep.peer, "127.0.0.1", 80);
	memset(rep.text, 'd', 100);
	for (int i = 0; i < 4200; i++) {
		rep.cookie = (uint64_t)i + 1;
		tb_addr_v4(&rep.local, "127.0.0.1", (uint16_t)(10000 + i));
		cr_assert_eq(tb_send(bfd, XWAY_MSG_REPORT, 1, &rep, sizeof(rep), NULL, 0), 0);
		if (i % 500 == 0)
			free(tb_query(bfd, XWAY_Q_STATUS, false));   /* pace the sender */
	}
	q = tb_query(bfd, XWAY_Q_CONNECTIONS, true);
	cr_assert(q);
	cr_assert_gt(strlen(q), (size_t)XWAY_MSG_MAX, "reply fits one packet: test is void");
	n = count(q, "\"reason\":\"peer-tcp\"");
	cr_assert_eq(n, 4096, "%d records", n);
	cr_assert(!strstr(q, "\"id\":\"0000000000000001\""), "oldest record kept");
	cr_assert(strstr(q, "\"id\":\"0000000000001068\""), "newest record missing");
	cr_assert_eq(strncmp(q, "{\"connections\":[", 16), 0);
	cr_assert_str_eq(q + strlen(q) - 3, "]}\n");
	free(q);
}

Test(report, text_queries)
{
	/* Check every query in both forms answers with its own content. */
	static const struct { uint32_t what; const char *json, *text; } qs[] = {
		{ XWAY_Q_STATUS, "\"mode\":\"local\"", "running" },
		{ XWAY_Q_PEERS, "\"peers\":[", "COMM" },
		{ XWAY_Q_LISTENERS, "\"listeners\":[", "ADDRESS" },
		{ XWAY_Q_CONNECTIONS, "\"connections\":[", "STATE" },
		{ XWAY_Q_STATS, "\"fallback_reasons\":{", "offers" },
	};

	for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
		char *j = tb_query(bfd, qs[i].what, true), *t = tb_query(bfd, qs[i].what, false);

		cr_assert(j && strstr(j, qs[i].json), "query %u json: %s", qs[i].what, j);
		cr_assert(t && strstr(t, qs[i].text), "query %u text: %s", qs[i].what, t);
		free(j);
		free(t);
	}
}

Test(report, fallback_after_claim)
{
	/* Check that a claimed connection one endpoint could not use
	 * (REPORT FALLBACK with its cookie) is shown as fallen back with
	 * that reason, not as accelerated. */
	struct pair p;
	struct xway_report rep;
	int sfd = tb_connect(B.sock);
	char *q;

	pair_listen(&p);
	cr_assert_eq(pair_offer_connect(&p, bfd), 1);
	cr_assert_eq(claim(sfd, &p, NULL, NULL, NULL, NULL), XWAY_MSG_CLAIMED);
	memset(&rep, 0, sizeof(rep));
	rep.kind = XWAY_REP_FALLBACK;
	rep.reason = XWAY_R_SETUP_CHAN;
	rep.side = 1;
	rep.cookie = p.ch.cookie;
	tb_sock_name(p.afd, false, &rep.local);
	tb_sock_name(p.afd, true, &rep.peer);
	strcpy(rep.text, "attach failed: EINVAL");
	cr_assert_eq(tb_send(sfd, XWAY_MSG_REPORT, 1, &rep, sizeof(rep), NULL, 0), 0);
	free(tb_query(sfd, XWAY_Q_STATUS, false));
	q = tb_query(bfd, XWAY_Q_CONNECTIONS, true);
	cr_assert(strstr(q, "\"state\":\"fallback\",\"backend\":\"tcp\",\"reason\":\"setup-chan\","
			 "\"detail\":\"server side after claim: attach failed: EINVAL\""), "%s", q);
	cr_assert(!strstr(q, "accelerated"), "%s", q);
	free(q);
	pair_close(&p);
	close(p.lfd);
	close(sfd);
}
