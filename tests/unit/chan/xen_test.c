// SPDX-License-Identifier: MIT
/*
 * The Xen backend on a host without Xen: availability says why not, and
 * set-up fails with -ENOSYS instead of crashing.  (The real Xen transfer
 * runs in the Xen test bed with tools/bench/xway-vchan-test.)
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "xway/chan.h"

static char last_line[256];

static void sink(const char *line)
{
	strncpy(last_line, line, sizeof(last_line) - 1);
}

/* Check that without /dev/xen the backend is unavailable with a reason,
 * and server/client init give -ENOSYS plus a log line. */
Test(xen, unavailable_clear_failure)
{
	struct xway_chan *c = NULL;
	const char *why = NULL;

	if (access("/dev/xen/evtchn", F_OK) == 0)
		cr_skip_test("this host has /dev/xen/evtchn: run the Xen test bed");
	xway_chan_set_logger(sink);
	cr_assert_eq(xway_chan_xen_available(&why), 0);
	cr_assert_not_null(why);
	cr_assert(strstr(why, "/dev/xen"), "why: %s", why);
	cr_assert_eq(xway_chan_xen_server(1, "/local/domain/0/data/x", NULL, &c),
		     -ENOSYS);
	cr_assert_null(c);
	cr_assert(strstr(last_line, "xen backend unavailable"), "log: %s", last_line);
	cr_assert_eq(xway_chan_xen_client(0, "/local/domain/1/data/x", NULL, &c),
		     -ENOSYS);
	xway_chan_set_logger(NULL);
}

/* Check that bad arguments are refused before anything else. */
Test(xen, bad_args)
{
	struct xway_chan *c;

	cr_assert_eq(xway_chan_xen_server(1, "", NULL, &c), -EINVAL);
	cr_assert_eq(xway_chan_xen_client(-1, "/x", NULL, &c), -EINVAL);
	cr_assert_eq(xway_chan_xen_client(1, NULL, NULL, &c), -EINVAL);
}

/* ---- the backend's data path over the stand-in libxenvchan --------------- */

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>

static void use_fake(void)
{
	char dir[] = "/tmp/xway-fake-xen.XXXXXX";
	char p[64];
#ifdef XWAY_FAKE_XENVCHAN_PATH
	const char *lib = XWAY_FAKE_XENVCHAN_PATH;
#else
	const char *lib = "";
#endif

	if (access(lib, R_OK))
		cr_skip_test("stand-in libxenvchan not built (%s)", lib);
	cr_assert_not_null(mkdtemp(dir));
	for (int i = 0; i < 3; i++) {
		static const char *const n[] = { "evtchn", "gntalloc", "gntdev" };
		snprintf(p, sizeof(p), "%s/%s", dir, n[i]);
		FILE *f = fopen(p, "w");
		cr_assert_not_null(f);
		fclose(f);
	}
	setenv("XWAY_TEST_XEN_DEVDIR", dir, 1);
	setenv("XWAY_TEST_XENVCHAN_LIB", lib, 1);
}

/* Check the Xen backend's data path over the stand-in: bytes both ways,
 * peek (emulated with a stash), readable, readiness and waits, the
 * unsupported half-close/reset, and EOF once the peer closed and all was
 * read. */
Test(xen, data_path_over_stand_in, .timeout = 60)
{
	char path[64], buf[256];
	struct xway_chan *c = NULL;
	const char *why;
	pid_t pid;

	use_fake();
	cr_assert_eq(xway_chan_xen_available(&why), 1, "why: %s", why);
	snprintf(path, sizeof(path), "/local/domain/1/data/vchan/2/t%d", getpid());
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct xway_chan *s;
		ssize_t n;
		int r;

		alarm(30);
		if (xway_chan_xen_server(2, path, NULL, &s))
			_exit(10);
		if (xway_chan_side(s) != 1 || xway_chan_backend(s) != XWAY_BACKEND_XEN)
			_exit(11);
		r = xway_chan_wait(s, XWAY_EV_IN, -1, 10000);
		if (!(r & XWAY_EV_IN))
			_exit(12);
		while (xway_chan_readable(s) < 10)
			xway_chan_wait(s, XWAY_EV_IN, -1, 1000);
		/* Peek twice, then read: the same bytes each time. */
		if (xway_chan_recv(s, buf, 4, XWAY_RECV_PEEK) != 4 || memcmp(buf, "hell", 4))
			_exit(13);
		if (xway_chan_recv(s, buf, 5, XWAY_RECV_PEEK) != 5 || memcmp(buf, "hello", 5))
			_exit(14);
		n = xway_chan_recv(s, buf, 10, 0);
		if (n != 10 || memcmp(buf, "hello xen!", 10))
			_exit(15);
		if (xway_chan_shutdown_wr(s) != -EOPNOTSUPP || xway_chan_reset(s) != -EOPNOTSUPP)
			_exit(16);
		if (xway_chan_send(s, "reply", 5) != 5)
			_exit(17);
		xway_chan_close(s);
		_exit(0);
	}
	cr_assert_eq(xway_chan_xen_client(1, path, NULL, &c), 0);
	cr_assert_eq(xway_chan_side(c), 0);
	cr_assert(xway_chan_poll(c) & XWAY_EV_OUT);
	cr_assert_eq(xway_chan_recv(c, buf, sizeof(buf), 0), -EAGAIN);
	cr_assert_eq(xway_chan_send(c, "hello ", 6), 6);
	struct iovec v[2] = { { "xe", 2 }, { "n!", 2 } };
	cr_assert_eq(xway_chan_sendv(c, v, 2), 4);
	cr_assert(xway_chan_wait(c, XWAY_EV_IN, -1, 20000) & XWAY_EV_IN);
	while (xway_chan_readable(c) < 5)
		xway_chan_wait(c, XWAY_EV_IN, -1, 1000);
	cr_assert_eq(xway_chan_recv(c, buf, sizeof(buf), 0), 5);
	cr_assert_arr_eq(buf, "reply", 5);
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "server exit %d", WEXITSTATUS(st));
	/* The server closed: EOF (0) after the data, and writes fail. */
	cr_assert(xway_chan_wait(c, XWAY_EV_RDHUP, -1, 5000) & XWAY_EV_RDHUP);
	cr_assert_eq(xway_chan_recv(c, buf, sizeof(buf), 0), 0);
	cr_assert_eq(xway_chan_send(c, "x", 1), -EPIPE);
	struct xway_chan_stats stt;
	xway_chan_get_stats(c, &stt);
	cr_assert_eq(stt.tx_bytes, 10);
	cr_assert_eq(stt.rx_bytes, 5);
	xway_chan_close(c);
}

/* ---- ends built from the broker's descriptors (privilege model) ---------- */

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>

#include "xway/proto.h"
#include "xway/ring.h"

/* Check that a geometry the broker should never send (orders out of
 * libxenvchan's range, a page count that does not match the orders, an
 * unaligned offset, port 0) is refused with -EINVAL before anything is
 * mapped, and that both descriptors are closed (they were handed over). */
Test(xen, fd_ends_refuse_bad_geometry)
{
	static const struct xway_xen_vchan bad[] = {
		{ .map_pages = 3, .port = 5, .left_order = 9, .right_order = 12 },
		{ .map_pages = 3, .port = 5, .left_order = 12, .right_order = 21 },
		{ .map_pages = 1, .port = 5, .left_order = 10, .right_order = 10 },
		{ .map_pages = 4, .port = 5, .left_order = 12, .right_order = 12 },
		{ .map_offset = 100, .map_pages = 3, .port = 5, .left_order = 12, .right_order = 12 },
		{ .map_pages = 3, .port = 0, .left_order = 12, .right_order = 12 },
	};
	struct xway_chan *c = NULL;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int fds[2] = { memfd_create("g", MFD_CLOEXEC), eventfd(0, EFD_CLOEXEC) };
		int keep[2] = { fds[0], fds[1] };

		cr_assert(fds[0] >= 0 && fds[1] >= 0);
		cr_assert_eq(xway_chan_xen_server_fds(fds, &bad[i], NULL, &c), -EINVAL, "case %zu", i);
		cr_assert_null(c);
		for (int k = 0; k < 2; k++)
			cr_assert(fcntl(keep[k], F_GETFD) < 0 && errno == EBADF,
				  "case %zu: descriptor %d left open", i, k);
	}
	cr_assert_eq(xway_chan_xen_client_fds(NULL, &bad[0], NULL, &c), -EINVAL);
}

#include <dlfcn.h>
#include <sys/socket.h>
#include <xen/io/libxenvchan.h>

/* Two ends built from descriptors the way the brokers hand them over, the
 * "grant" pages a memfd both map and the event channel a socketpair under
 * the stand-in libxenevtchn; the data path is the real libxenvchan's.  The
 * shared page is initialised as broker/xenvchan.c (and libxenvchan's
 * init_gnt_srv) leave it. */
static int fd_pair_setup(int gnt[2], int ev[2], struct xway_xen_vchan *v)
{
	static const char *lib =
#ifdef XWAY_FAKE_XENEVTCHN_PATH
		XWAY_FAKE_XENEVTCHN_PATH;
#else
		"";
#endif
	struct vchan_interface *ring;
	int m;

	if (!dlopen(lib, RTLD_NOW | RTLD_GLOBAL))
		cr_skip_test("stand-in libxenevtchn not built (%s)", lib);
	if (!dlopen("libxenvchan.so.4.17", RTLD_NOW | RTLD_GLOBAL))
		cr_skip_test("libxenvchan.so.4.17 absent: install libxen-dev");
	m = memfd_create("gnt", MFD_CLOEXEC);
	cr_assert(m >= 0);
	cr_assert_eq(ftruncate(m, 3 * 4096), 0);
	ring = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
	cr_assert(ring != MAP_FAILED);
	ring->left_order = ring->right_order = 12;
	ring->cli_live = 2;
	ring->srv_live = 1;
	ring->cli_notify = VCHAN_NOTIFY_WRITE;
	munmap(ring, 4096);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, ev), 0);
	gnt[0] = m;
	gnt[1] = dup(m);
	*v = (struct xway_xen_vchan){ .map_offset = 0, .map_pages = 3, .port = 7,
				      .peer_domid = 2, .left_order = 12, .right_order = 12 };
	return 0;
}

/* Move len bytes of a pattern from a to b in bounded nonblocking rounds. */
static void pump(struct xway_chan *a, struct xway_chan *b, size_t len, uint8_t seed)
{
	static uint8_t out[65536], in[65536];
	size_t sent = 0, got = 0;

	for (size_t i = 0; i < len; i++)
		out[i] = (uint8_t)(i * 7 + seed);
	for (int round = 0; round < 100000 && got < len; round++) {
		if (sent < len) {
			ssize_t n = xway_chan_send(a, out + sent, len - sent);

			cr_assert(n > 0 || n == -EAGAIN, "send: %zd", n);
			if (n > 0)
				sent += (size_t)n;
		}
		ssize_t n = xway_chan_recv(b, in + got, len - got, 0);

		cr_assert(n > 0 || n == -EAGAIN, "recv: %zd", n);
		if (n > 0)
			got += (size_t)n;
	}
	cr_assert_eq(got, len);
	cr_assert_eq(memcmp(in, out, len), 0, "bytes differ");
}

/* Check that a vchan server end and client end built from descriptors
 * (what the shim does with the brokers' replies) talk through the real
 * libxenvchan: bytes written while the client was absent can be taken
 * back; the client's arrival shows as attached; 40 KiB each way through
 * 4 KiB rings arrive intact and in order; the client's close is the
 * server's EOF. */
Test(xen, fd_ends_talk_through_libxenvchan, .timeout = 60)
{
	int gnt[2], ev[2];
	struct xway_xen_vchan v;
	struct xway_chan *s = NULL, *c = NULL;
	char buf[64];

	fd_pair_setup(gnt, ev, &v);
	cr_assert_eq(xway_chan_xen_server_fds((int[2]){ gnt[0], ev[0] }, &v, NULL, &s), 0);
	cr_assert_eq(xway_chan_backend(s), XWAY_BACKEND_XEN);
	cr_assert_eq(xway_chan_xen_peer_attached(s), 0);
	/* Pending: written, then taken back for TCP (a withdrawn offer). */
	cr_assert_eq(xway_chan_send(s, "pending", 7), 7);
	cr_assert_eq(xway_chan_xen_take_unsent(s, buf, sizeof(buf)), 7);
	cr_assert_eq(memcmp(buf, "pending", 7), 0);
	cr_assert_eq(xway_chan_xen_take_unsent(s, buf, sizeof(buf)), 0);
	cr_assert_eq(xway_chan_xen_client_fds((int[2]){ gnt[1], ev[1] }, &v, NULL, &c), 0);
	cr_assert_eq(xway_chan_xen_peer_attached(s), 1);
	cr_assert_eq(xway_chan_xen_take_unsent(s, buf, sizeof(buf)), -EBUSY);
	pump(s, c, 40000, 1);
	pump(c, s, 40000, 2);
	cr_assert_eq(xway_chan_send(c, "tail", 4), 4);
	xway_chan_close(c);
	cr_assert_eq(xway_chan_recv(s, buf, sizeof(buf), 0), 4);
	cr_assert_eq(memcmp(buf, "tail", 4), 0);
	cr_assert_eq(xway_chan_recv(s, buf, sizeof(buf), 0), 0, "no EOF after the client closed");
	cr_assert(xway_chan_poll(s) & XWAY_EV_HUP);
	xway_chan_close(s);
}

/* A connected pair: the server end *s and the client end *c. */
static void fd_ends_connected(struct xway_chan **s, struct xway_chan **c)
{
	int gnt[2], ev[2];
	struct xway_xen_vchan v;

	fd_pair_setup(gnt, ev, &v);
	cr_assert_eq(xway_chan_xen_server_fds((int[2]){ gnt[0], ev[0] }, &v, NULL, s), 0);
	cr_assert_eq(xway_chan_xen_client_fds((int[2]){ gnt[1], ev[1] }, &v, NULL, c), 0);
}

/* Check the Xen leave for TCP (fork, exec of a Xen connection): the
 * leaver's calls return -ECANCELED at once; the peer sees REVERT, takes
 * back exactly what the leaver never read, reads what the leaver wrote
 * before leaving, and only then gets -ECANCELED (TCP from now on); its
 * sends stop too.  A stash of peeked bytes refuses the leave (they would
 * be lost). */
Test(xen, fd_ends_leave_for_tcp, .timeout = 60)
{
	struct xway_chan *s = NULL, *c = NULL;
	char buf[64];

	fd_ends_connected(&s, &c);
	cr_assert_eq(xway_chan_reverted(s), 0);
	cr_assert_eq(xway_chan_reverted(c), 0);
	/* c (the leaver) wrote "from-c"; s wrote "unread-by-c", never read. */
	cr_assert_eq(xway_chan_send(c, "from-c", 6), 6);
	cr_assert_eq(xway_chan_send(s, "unread-by-c", 11), 11);
	/* A peek fills c's stash: leaving now would lose those bytes. */
	cr_assert_eq(xway_chan_recv(c, buf, 3, XWAY_RECV_PEEK), 3);
	cr_assert_eq(xway_chan_revert(c), -EBUSY);
	cr_assert_eq(xway_chan_reverted(s), 0, "a refused leave set a flag");
	cr_assert_eq(xway_chan_recv(c, buf, 3, 0), 3);      /* the peeked bytes */
	cr_assert_eq(memcmp(buf, "unr", 3), 0);
	cr_assert_eq(xway_chan_revert(c), 0);
	cr_assert(xway_chan_reverted(c) & XWAY_REVERT_LEFT);
	cr_assert_eq(xway_chan_send(c, "x", 1), -ECANCELED);
	cr_assert_eq(xway_chan_recv(c, buf, sizeof(buf), 0), -ECANCELED);
	cr_assert(xway_chan_poll(c) & XWAY_EV_REVERT);
	/* The staying side. */
	cr_assert(xway_chan_poll(s) & XWAY_EV_REVERT);
	cr_assert_eq(xway_chan_reverted(s), XWAY_REVERT_PEER_STOPPED | XWAY_REVERT_PEER_FINAL);
	cr_assert_eq(xway_chan_send(s, "late", 4), -ECANCELED, "a send after the leave");
	cr_assert_eq(xway_chan_take_back(s, buf, sizeof(buf)), 8);
	cr_assert_eq(memcmp(buf, "ead-by-c", 8), 0, "took back the wrong bytes");
	cr_assert_eq(xway_chan_take_back(s, buf, sizeof(buf)), 0);
	cr_assert_eq(xway_chan_recv(s, buf, sizeof(buf), 0), 6);
	cr_assert_eq(memcmp(buf, "from-c", 6), 0);
	cr_assert_eq(xway_chan_recv(s, buf, sizeof(buf), 0), -ECANCELED,
		     "drained and final: TCP now");
	/* The leaver's close (its live byte 0) is no EOF for the staying
	 * side: the flags come first. */
	xway_chan_close(c);
	cr_assert_eq(xway_chan_recv(s, buf, sizeof(buf), 0), -ECANCELED);
	xway_chan_close(s);
}

/* Check that a fork child never touches a client end's mapping (in a PV
 * domain gntdev's mapping is not copied: the child crashed at its first
 * use) and that its close does not end the channel for the parent. */
Test(xen, fd_ends_fork_child_leaves_channel_alone, .timeout = 60)
{
	struct xway_chan *s = NULL, *c = NULL;
	char buf[16];
	int st = -1;
	pid_t pid;

	fd_ends_connected(&s, &c);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		/* The client end's mapping is the parent's: no data call. */
		int ok = xway_chan_send(c, "x", 1) == -EPROTO &&
			 xway_chan_recv(c, buf, 1, 0) == -EPROTO &&
			 (xway_chan_poll(c) & XWAY_EV_ERR) &&
			 xway_chan_revert(c) < 0;
		xway_chan_close(c);
		_exit(ok ? 0 : 1);
	}
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child's calls (status %d)", st);
	cr_assert_eq(xway_chan_send(c, "still", 5), 5, "the child's close ended the channel");
	cr_assert_eq(xway_chan_recv(s, buf, sizeof(buf), 0), 5);
	cr_assert_eq(xway_chan_send(s, "both", 4), 4);
	cr_assert_eq(xway_chan_recv(c, buf, sizeof(buf), 0), 4);
	xway_chan_close(c);
	xway_chan_close(s);
}

/* Check that both ends follow a fork (docs/DESIGN.md §7.2): the client end
 * (gntdev in a Xen domain) maps the re-mapped grants in the child (here a
 * second descriptor of the same memfd; the parent's mapping was copied,
 * so the child's lands elsewhere and struct libxenvchan's pointers move),
 * the server end's copied mapping is used as is; parent and child then
 * both move bytes in order on one channel; the child's close (not the
 * last holder) does not end it for the parent; an end with peeked bytes
 * in its private stash does not follow; a geometry that is not the
 * channel's is refused. */
/* Read from c, waiting up to ~5 s for something to arrive (the other
 * end runs in another process). */
static ssize_t recv_wait(struct xway_chan *c, void *buf, size_t len)
{
	ssize_t n = -EAGAIN;

	for (int i = 0; i < 5000 && n == -EAGAIN; i++) {
		n = xway_chan_recv(c, buf, len, 0);
		if (n == -EAGAIN)
			usleep(1000);
	}
	return n;
}

Test(xen, fd_ends_follow_fork, .timeout = 60)
{
	int gnt[2], ev[2], re;
	struct xway_xen_vchan v, bad;
	struct xway_chan *s = NULL, *c = NULL;
	char buf[64];
	int st = -1;
	pid_t pid;

	fd_pair_setup(gnt, ev, &v);
	re = dup(gnt[0]);
	cr_assert(re >= 0);
	cr_assert_eq(xway_chan_xen_server_fds((int[2]){ gnt[0], ev[0] }, &v, NULL, &s), 0);
	cr_assert_eq(xway_chan_xen_client_fds((int[2]){ gnt[1], ev[1] }, &v, NULL, &c), 0);
	cr_assert_eq(xway_chan_xen_fork_need(s), 0, "the server end's mapping is copied");
	cr_assert_eq(xway_chan_xen_fork_need(c), 1, "the client end needs a re-map");
	bad = v;
	bad.left_order = 13;
	bad.map_pages = 4;
	cr_assert_eq(xway_chan_xen_fork_prepare(c, dup(re), &bad), -EPROTO);
	cr_assert_eq(xway_chan_xen_fork_prepare(c, -1, NULL), -EINVAL);
	/* Peeked bytes: the stash is this process's alone. */
	cr_assert_eq(xway_chan_send(s, "peek", 4), 4);
	cr_assert_eq(xway_chan_recv(c, buf, 2, XWAY_RECV_PEEK), 2);
	cr_assert_eq(xway_chan_xen_fork_need(c), -EBUSY);
	cr_assert_eq(xway_chan_recv(c, buf, 4, 0), 4);
	cr_assert_eq(memcmp(buf, "peek", 4), 0);

	cr_assert_eq(xway_chan_xen_fork_prepare(c, re, &v), 0);
	cr_assert_eq(xway_chan_xen_fork_prepare(s, -1, NULL), 0);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		xway_chan_xen_fork_child(c);
		xway_chan_xen_fork_child(s);
		/* The child holds the client end: it sends, then reads what
		 * the parent's server end sent it. */
		int ok = xway_chan_send(c, "from-child", 10) == 10;
		ssize_t n = -EAGAIN;

		if (ok)
			n = recv_wait(c, buf, sizeof(buf));
		ok = ok && n == 8 && !memcmp(buf, "to-child", 8);
		xway_chan_xen_others_hold(c);
		xway_chan_close(c);
		_exit(ok ? 0 : 1);
	}
	xway_chan_xen_fork_parent(c);
	xway_chan_xen_fork_parent(s);
	ssize_t n = recv_wait(s, buf, sizeof(buf));
	cr_assert_eq(n, 10, "the child's bytes: %zd", n);
	cr_assert_eq(memcmp(buf, "from-child", 10), 0);
	cr_assert_eq(xway_chan_send(s, "to-child", 8), 8);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child's side (status %d)", st);
	cr_assert_eq(xway_chan_poll(s) & XWAY_EV_HUP, 0, "the child's close ended the channel");
	/* The parent's own client end goes on after the child's bytes. */
	cr_assert_eq(xway_chan_send(c, "parent", 6), 6);
	cr_assert_eq(xway_chan_recv(s, buf, sizeof(buf), 0), 6);
	cr_assert_eq(memcmp(buf, "parent", 6), 0);
	cr_assert_eq(xway_chan_send(s, "back", 4), 4);
	cr_assert_eq(xway_chan_recv(c, buf, sizeof(buf), 0), 4);
	cr_assert_eq(memcmp(buf, "back", 4), 0);
	/* The last holder's close is the end. */
	xway_chan_close(c);
	cr_assert_eq(xway_chan_recv(s, buf, sizeof(buf), 0), 0, "no EOF after the last close");
	xway_chan_close(s);
}

/* Check that a client end crosses an exec (docs/DESIGN.md §7.2): the new
 * image (here a fork child that builds a new end, as the shim's re-attach
 * does) gets a REMAP'd grant descriptor, the event channel and the state
 * memfd, and talks on the same channel with the same shared state (the
 * embedder's word); a server end, a state descriptor that is no state
 * memfd, and a geometry that is not the channel's are refused. */
Test(xen, fd_ends_carried_over_exec, .timeout = 60)
{
	int gnt[2], ev[2], re, efd = -1, epfd = -1, st = -1;
	struct xway_xen_vchan v, bad;
	struct xway_chan *s = NULL, *c = NULL, *n = NULL;
	char buf[64];
	pid_t pid;

	fd_pair_setup(gnt, ev, &v);
	re = dup(gnt[0]);
	cr_assert(re >= 0);
	cr_assert_eq(xway_chan_xen_server_fds((int[2]){ gnt[0], ev[0] }, &v, NULL, &s), 0);
	cr_assert_eq(xway_chan_xen_client_fds((int[2]){ gnt[1], ev[1] }, &v, NULL, &c), 0);
	cr_assert_eq(xway_chan_xen_exec_fds(s, &efd, &epfd), -EOPNOTSUPP,
		     "a server end's grants cannot be mapped again");
	cr_assert_eq(xway_chan_xen_exec_fds(c, &efd, &epfd), 0);
	cr_assert(efd >= 0 && epfd >= 0);
	*(int *)xway_chan_user_word(c) = 7;
	/* Refused: not a state memfd; not this channel's geometry. */
	int bogus = eventfd(0, EFD_CLOEXEC);
	cr_assert_eq(xway_chan_xen_reattach((int[3]){ dup(re), dup(efd), bogus }, &v, &n), -EINVAL);
	cr_assert_null(n);
	close(bogus);
	bad = v;
	bad.map_pages = 7;
	cr_assert_eq(xway_chan_xen_reattach((int[3]){ dup(re), dup(efd), dup(epfd) }, &bad, &n),
		     -EINVAL);
	cr_assert_eq(xway_chan_send(s, "before", 6), 6);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		int ok = xway_chan_xen_reattach((int[3]){ re, dup(efd), dup(epfd) }, &v, &n) == 0;
		ssize_t r = -EAGAIN;

		ok = ok && *(int *)xway_chan_user_word(n) == 7;
		ok = ok && xway_chan_recv(n, buf, sizeof(buf), 0) == 6 && !memcmp(buf, "before", 6);
		ok = ok && xway_chan_send(n, "new-image", 9) == 9;
		if (ok)
			r = recv_wait(n, buf, sizeof(buf));
		ok = ok && r == 5 && !memcmp(buf, "reply", 5);
		_exit(ok ? 0 : 1);
	}
	close(re);
	ssize_t r = recv_wait(s, buf, sizeof(buf));
	cr_assert_eq(r, 9, "the new image's bytes: %zd", r);
	cr_assert_eq(memcmp(buf, "new-image", 9), 0);
	cr_assert_eq(xway_chan_send(s, "reply", 5), 5);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the new image's side (status %d)", st);
	xway_chan_close(c);
	xway_chan_close(s);
}

/* Check that a server end (the connecting process's: gntalloc grants)
 * can be shared with another process, as an SCM_RIGHTS receiver does
 * (docs/DESIGN.md §7.2): the end kept its grant descriptor, share_fds
 * gives it with the event channel, the state memfd and the geometry; a
 * process that re-attaches them talks on the same channel with the same
 * shared state (the embedder's word), and its quiet close leaves the
 * channel to the sender.  A client end has nothing to share that way (its
 * grants are re-mapped by the broker), and a client end's state is
 * refused as a server end's. */
Test(xen, server_end_shared_with_another_process, .timeout = 60)
{
	int gnt[2], ev[2], sf[3], cf[3], st = -1;
	struct xway_xen_vchan v, g;
	struct xway_chan *s = NULL, *c = NULL, *n = NULL;
	char buf[64];
	pid_t pid;

	fd_pair_setup(gnt, ev, &v);
	cr_assert_eq(xway_chan_xen_server_fds((int[2]){ gnt[0], ev[0] }, &v, NULL, &s), 0);
	cr_assert_eq(xway_chan_xen_client_fds((int[2]){ gnt[1], ev[1] }, &v, NULL, &c), 0);
	cr_assert_eq(xway_chan_xen_share_fds(c, cf, &g), -EOPNOTSUPP,
		     "a client end's grants are re-mapped by its broker instead");
	cr_assert_eq(xway_chan_xen_decision_fds(s, cf), -ENOENT, "no offer pending");
	cr_assert_eq(xway_chan_xen_share_fds(s, sf, &g), 0);
	cr_assert_eq(memcmp(&g, &v, sizeof(v)), 0, "the geometry it was mapped with");
	for (int k = 0; k < 3; k++)
		cr_assert(fcntl(sf[k], F_GETFD) == FD_CLOEXEC, "shared fd %d not CLOEXEC", k);
	*(int *)xway_chan_user_word(s) = 7;
	/* Refused: the client end's state is not a server end's. */
	int cex = -1, cep = -1;
	cr_assert_eq(xway_chan_xen_exec_fds(c, &cex, &cep), 0);
	cep = dup(cep);
	cr_assert_eq(xway_chan_xen_server_reattach((int[3]){ dup(sf[0]), dup(sf[1]), cep },
						   &g, &n), -EPERM);
	cr_assert_null(n);
	close(cep);
	cr_assert_eq(xway_chan_send(c, "before", 6), 6);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		/* The receiver: the descriptors as SCM_RIGHTS gives them. */
		int ok = xway_chan_xen_server_reattach((int[3]){ dup(sf[0]), dup(sf[1]), dup(sf[2]) },
						       &g, &n) == 0;
		ssize_t r = -EAGAIN;

		ok = ok && *(int *)xway_chan_user_word(n) == 7;
		ok = ok && xway_chan_recv(n, buf, sizeof(buf), 0) == 6 && !memcmp(buf, "before", 6);
		ok = ok && xway_chan_send(n, "receiver", 8) == 8;
		if (ok)
			r = recv_wait(n, buf, sizeof(buf));
		ok = ok && r == 5 && !memcmp(buf, "reply", 5);
		xway_chan_xen_others_hold(n);
		xway_chan_close(n);
		_exit(ok ? 0 : 1);
	}
	ssize_t r = recv_wait(c, buf, sizeof(buf));
	cr_assert_eq(r, 8, "the receiver's bytes: %zd", r);
	cr_assert_eq(memcmp(buf, "receiver", 8), 0);
	cr_assert_eq(xway_chan_send(c, "reply", 5), 5);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the receiver's side (status %d)", st);
	cr_assert_eq(xway_chan_poll(c) & XWAY_EV_HUP, 0, "the receiver's quiet close ended the channel");
	/* The sender's end goes on. */
	cr_assert_eq(xway_chan_send(s, "sender", 6), 6);
	cr_assert_eq(xway_chan_recv(c, buf, sizeof(buf), 0), 6);
	cr_assert_eq(memcmp(buf, "sender", 6), 0);
	xway_chan_close(s);
	cr_assert_eq(xway_chan_recv(c, buf, sizeof(buf), 0), 0, "no EOF after the last close");
	xway_chan_close(c);
}

/* Check that looking at an end's level does not ask the peer to notify us
 * of its reads (one event channel carries both directions: with a standing
 * request, each read of the peer woke an edge-triggered EPOLLIN watcher as
 * if data had arrived: tcpsem `et` across domains), and that a waiter for
 * EV_OUT whose ring is short of space does ask. */
Test(xen, read_notifications_only_for_writers, .timeout = 60)
{
	int gnt[2], ev[2], view;
	struct xway_xen_vchan v;
	struct xway_chan *s = NULL, *c = NULL;
	struct vchan_interface *ring;
	static char big[8192];

	fd_pair_setup(gnt, ev, &v);
	view = dup(gnt[0]);
	cr_assert(view >= 0);
	ring = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, view, 0);
	cr_assert(ring != MAP_FAILED);
	cr_assert_eq(xway_chan_xen_server_fds((int[2]){ gnt[0], ev[0] }, &v, NULL, &s), 0);
	cr_assert_eq(xway_chan_xen_client_fds((int[2]){ gnt[1], ev[1] }, &v, NULL, &c), 0);
	/* c is the vchan client: its requests go into srv_notify. */
	__atomic_and_fetch(&ring->srv_notify, (uint8_t)~VCHAN_NOTIFY_READ, __ATOMIC_SEQ_CST);
	cr_assert(xway_chan_poll(c) & XWAY_EV_OUT);
	(void)xway_chan_arm(c, XWAY_EV_IN | XWAY_EV_OUT);
	cr_assert_eq(ring->srv_notify & VCHAN_NOTIFY_READ, 0,
		     "a look at the level asked for read notifications");
	/* Fill c's ring: now a writer's wait asks. */
	cr_assert_eq(xway_chan_send(c, big, sizeof(big)), 4096);
	__atomic_and_fetch(&ring->srv_notify, (uint8_t)~VCHAN_NOTIFY_READ, __ATOMIC_SEQ_CST);
	cr_assert_eq(xway_chan_poll(c) & XWAY_EV_OUT, 0);
	cr_assert_eq(ring->srv_notify & VCHAN_NOTIFY_READ, 0);
	cr_assert_eq(xway_chan_arm(c, XWAY_EV_OUT) & XWAY_EV_OUT, 0);
	cr_assert_neq(ring->srv_notify & VCHAN_NOTIFY_READ, 0,
		      "a writer short of space did not ask to hear of reads");
	munmap(ring, 4096);
	close(view);
	xway_chan_close(c);
	xway_chan_close(s);
}

/* Check the descriptors of a pending Xen client (the vchan server end plus
 * the offer's local decision channel): all five are the endpoint's own
 * (close_range and close() must spare them, which used to know only the
 * epoll set), and once the broker's decision is in, the decision
 * channel's three go (a client with 1000 Xen connections held 6000
 * descriptors); the decision word stays readable and the close is clean. */
Test(xen, decision_descriptors, .timeout = 60)
{
	int gnt[2], ev[2], cfds[3], fds[XWAY_CHAN_MAX_FDS], old[3], n;
	struct xway_xen_vchan v;
	struct xway_chan *s = NULL, *d = NULL;
	struct xway_chan_params p = { .ring_order = 12 };
	struct xway_chan_shm *h;
	struct stat st;

	fd_pair_setup(gnt, ev, &v);
	cr_assert_eq(xway_chan_xen_server_fds((int[2]){ gnt[0], ev[0] }, &v, NULL, &s), 0);
	cr_assert_eq(xway_chan_local_create(&p, 0x1234, &d, cfds), 0);
	cr_assert_eq(fstat(cfds[0], &st), 0);
	h = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, cfds[0], 0);
	cr_assert_neq(h, MAP_FAILED);
	cr_assert_eq(xway_chan_fds(d, old, 3), 3);
	cr_assert_eq(xway_chan_xen_set_decision(s, d), 0);
	/* The event channel, the epoll set, the state memfd, the gntalloc
	 * descriptor (kept for SCM_RIGHTS and exec) and the decision's. */
	n = xway_chan_fds(s, fds, XWAY_CHAN_MAX_FDS);
	cr_assert_eq(n, 7, "a pending Xen end lists %d descriptors", n);
	for (int i = 0; i < 3; i++) {
		int found = 0;

		for (int j = 0; j < n; j++)
			found |= fds[j] == old[i];
		cr_assert(found, "decision fd %d not listed as the endpoint's", old[i]);
	}
	for (int j = 0; j < n; j++)
		cr_assert_geq(fcntl(fds[j], F_GETFD), 0, "fd %d", fds[j]);
	/* Still pending: an ack keeps them. */
	xway_chan_ack(s);
	cr_assert_eq(xway_chan_fds(s, fds, XWAY_CHAN_MAX_FDS), 7);
	h->attached = XWAY_ATTACH_CLAIMED;
	xway_chan_ack(s);
	n = xway_chan_fds(s, fds, XWAY_CHAN_MAX_FDS);
	cr_assert_eq(n, 4, "after the decision: %d descriptors", n);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(fcntl(old[i], F_GETFD), -1, "decision fd %d still open", old[i]);
	cr_assert_eq(xway_chan_attached(d), XWAY_ATTACH_CLAIMED);
	munmap(h, (size_t)st.st_size);
	for (int i = 0; i < 3; i++)
		close(cfds[i]);
	xway_chan_close(s);     /* closes d too */
	close(gnt[1]);
	close(ev[1]);
}
