// SPDX-License-Identifier: MIT
/*
 * Unit tests of the local backend in one process: set-up and validation of
 * the memfd (hostile headers), the EOF/RST/CLOSED states, readiness bits,
 * hostile indices and flags in the shared page, waits (timeout, EINTR,
 * wake-up), withdrawn-offer hand-back, and high descriptor numbers.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pair.h"
#include "xway/ring.h"

static struct xway_chan *a, *b;

static void fini(void)
{
	xway_chan_close(a);
	xway_chan_close(b);
	a = b = NULL;
}

static void init(void)
{
	make_pair(12, UINT32_MAX, &a, &b);
}

TestSuite(local, .init = init, .fini = fini);

/* Map the creator's memfd read-write, as a hostile peer would. */
static struct xway_chan_shm *peer_view(struct xway_chan *c)
{
	int fds[3];
	struct stat st;
	void *m;

	cr_assert_eq(xway_chan_fds(c, fds, 3), 3);
	cr_assert_eq(fstat(fds[0], &st), 0);
	m = mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
	cr_assert_neq(m, MAP_FAILED);
	return m;
}

/* Check that bytes go both ways, in order. */
Test(local, both_directions)
{
	char buf[16];

	cr_assert_eq(xway_chan_send(a, "ping", 4), 4);
	cr_assert_eq(xway_chan_send(b, "pong!", 5), 5);
	cr_assert_eq(xway_chan_readable(b), 4);
	cr_assert_eq(xway_chan_unsent(a), 4);
	cr_assert_eq(xway_chan_recv(b, buf, sizeof(buf), 0), 4);
	cr_assert_arr_eq(buf, "ping", 4);
	cr_assert_eq(xway_chan_unsent(a), 0);
	cr_assert_eq(xway_chan_recv(a, buf, sizeof(buf), 0), 5);
	cr_assert_arr_eq(buf, "pong!", 5);
	cr_assert_eq(xway_chan_recv(a, buf, sizeof(buf), 0), -EAGAIN);
	cr_assert_eq(xway_chan_side(a), 0);
	cr_assert_eq(xway_chan_side(b), 1);
	cr_assert_eq(xway_chan_backend(a), XWAY_BACKEND_LOCAL);
	cr_assert_eq(xway_chan_capacity(a), 4096);
}

/* Check partial writes on a full ring, -EAGAIN, and OUT readiness. */
Test(local, full_ring)
{
	static char big[5000];

	cr_assert_eq(xway_chan_send(a, big, sizeof(big)), 4096);
	cr_assert_eq(xway_chan_send(a, big, 1), -EAGAIN);
	cr_assert_eq(xway_chan_poll(a) & XWAY_EV_OUT, 0);
	cr_assert_eq(xway_chan_recv(b, NULL, 100, 0), 100);   /* discard */
	/* Writable only once a third is free, as kernel TCP; a write still
	 * takes what fits. */
	cr_assert_eq(xway_chan_poll(a) & XWAY_EV_OUT, 0);
	cr_assert_eq(xway_chan_recv(b, NULL, 1265, 0), 1265);
	cr_assert_eq(xway_chan_poll(a) & XWAY_EV_OUT, 0);     /* 1365 free: 3 x 1365 < 4096 */
	cr_assert_eq(xway_chan_recv(b, NULL, 1, 0), 1);
	cr_assert(xway_chan_poll(a) & XWAY_EV_OUT);           /* 1366 free */
	cr_assert_eq(xway_chan_send(a, big, sizeof(big)), 1366);
}

/* Check that peek leaves the data, and readiness reflects it. */
Test(local, peek)
{
	char buf[8];

	cr_assert_eq(xway_chan_poll(b) & XWAY_EV_IN, 0);
	cr_assert_eq(xway_chan_send(a, "abc", 3), 3);
	cr_assert(xway_chan_poll(b) & XWAY_EV_IN);
	cr_assert_eq(xway_chan_recv(b, buf, 2, XWAY_RECV_PEEK), 2);
	cr_assert_eq(xway_chan_recv(b, buf, 8, 0), 3);
	cr_assert_arr_eq(buf, "abc", 3);
}

/* Check EOF: queued data first, then 0 for ever; the writer gets EPIPE. */
Test(local, eof)
{
	char buf[8];

	cr_assert_eq(xway_chan_send(a, "tail", 4), 4);
	cr_assert_eq(xway_chan_shutdown_wr(a), 0);
	cr_assert_eq(xway_chan_send(a, "x", 1), -EPIPE);
	cr_assert(xway_chan_poll(b) & XWAY_EV_RDHUP);
	cr_assert_eq(xway_chan_recv(b, buf, sizeof(buf), 0), 4);
	cr_assert_eq(xway_chan_recv(b, buf, sizeof(buf), 0), 0);
	cr_assert_eq(xway_chan_recv(b, buf, sizeof(buf), 0), 0);
	/* The other direction still works (half-close). */
	cr_assert_eq(xway_chan_send(b, "ok", 2), 2);
	cr_assert_eq(xway_chan_recv(a, buf, sizeof(buf), 0), 2);
}

/* Check RST: queued data first, then -ECONNRESET once, then 0; the
 * reset side's peer also cannot write any more. */
Test(local, reset)
{
	char buf[8];

	cr_assert_eq(xway_chan_send(a, "data", 4), 4);
	cr_assert_eq(xway_chan_reset(a), 0);
	cr_assert(xway_chan_poll(b) & XWAY_EV_RST);
	cr_assert_eq(xway_chan_recv(b, buf, sizeof(buf), 0), 4);
	cr_assert_eq(xway_chan_recv(b, buf, sizeof(buf), 0), -ECONNRESET);
	cr_assert_eq(xway_chan_recv(b, buf, sizeof(buf), 0), 0);
	cr_assert_eq(xway_chan_send(b, "x", 1), -ECONNRESET);
	cr_assert_eq(xway_chan_send(a, "x", 1), -ECONNRESET);
}

/* Check CLOSED: after the reader closed its side, writes get -EPIPE and
 * the writer sees HUP. */
Test(local, reader_closed)
{
	cr_assert_eq(xway_chan_send(a, "x", 1), 1);
	cr_assert_eq(xway_chan_close_rd(b), 0);
	cr_assert(xway_chan_poll(a) & XWAY_EV_HUP);
	cr_assert_eq(xway_chan_send(a, "x", 1), -EPIPE);
}

/* Check that a peer writing prod far ahead fails the channel with -EPROTO
 * (and ERR readiness), never a crash or an overrun. */
Test(local, hostile_prod)
{
	struct xway_chan_shm *h = peer_view(a);
	char buf[64];

	h->ring[0].prod = 0x7fffffff;
	cr_assert_eq(xway_chan_recv(b, buf, sizeof(buf), 0), -EPROTO);
	cr_assert(xway_chan_poll(b) & XWAY_EV_ERR);
	cr_assert_eq(xway_chan_send(b, "x", 1), -EPROTO);
	cr_assert_eq(xway_chan_wait(b, XWAY_EV_IN, -1, 1000) & XWAY_EV_ERR,
		     XWAY_EV_ERR);
}

/* Check that a consumer index beyond the producer's fails the writer as
 * soon as it needs the peer's index (when the room it last saw runs out),
 * and that nothing was written past the ring meanwhile. */
Test(local, hostile_cons)
{
	struct xway_chan_shm *h = peer_view(a);
	static char big[4096];

	cr_assert_eq(xway_chan_send(a, "abc", 3), 3);
	h->ring[0].cons = 100;
	cr_assert_eq(xway_chan_send(a, big, sizeof(big)), -EPROTO);
	cr_assert_eq(xway_chan_send(a, "x", 1), -EPROTO);
	cr_assert(xway_chan_poll(a) & XWAY_EV_ERR);
}

/* Check that unknown flag bits are treated as corruption. */
Test(local, hostile_flags)
{
	struct xway_chan_shm *h = peer_view(a);
	char buf[4];

	h->ring[0].prod_flags = 0xdead0000;
	cr_assert_eq(xway_chan_recv(b, buf, sizeof(buf), 0), -EPROTO);
	h = peer_view(b);
	h->ring[0].cons_flags = 0x40;
	cr_assert_eq(xway_chan_send(a, "x", 1), -EPROTO);
}

/* Check that the peer overwriting our own shared index does not move our
 * trusted one: our next write still lands where it should. */
Test(local, own_index_private)
{
	struct xway_chan_shm *h = peer_view(b);
	char buf[8];

	cr_assert_eq(xway_chan_send(a, "ab", 2), 2);
	h->ring[0].prod = 1;          /* peer rewinds our index */
	cr_assert_eq(xway_chan_send(a, "cd", 2), 2);
	cr_assert_eq(xway_chan_recv(b, buf, sizeof(buf), 0), 4);
	cr_assert_arr_eq(buf, "abcd", 4);
}

/* Check that the wait times out with 0 and returns readiness at once. */
Test(local, wait_timeout_and_ready)
{
	cr_assert_eq(xway_chan_wait(b, XWAY_EV_IN, -1, 20), 0);
	cr_assert_eq(xway_chan_wait(b, XWAY_EV_IN, -1, 0), 0);
	cr_assert(xway_chan_wait(a, XWAY_EV_OUT, -1, -1) & XWAY_EV_OUT);
	cr_assert_eq(xway_chan_send(a, "x", 1), 1);
	cr_assert(xway_chan_wait(b, XWAY_EV_IN, -1, -1) & XWAY_EV_IN);
}

/* Check that the extra fd wakes the wait with XWAY_EV_EXTRA. */
Test(local, wait_extra_fd)
{
	int p[2];

	cr_assert_eq(pipe(p), 0);
	cr_assert_eq(write(p[1], "x", 1), 1);
	cr_assert(xway_chan_wait(b, XWAY_EV_IN, p[0], 5000) & XWAY_EV_EXTRA);
	close(p[0]);
	close(p[1]);
}

static void on_alarm(int sig)
{
	(void)sig;
}

/* Check that a signal interrupts a blocking wait with -EINTR, even with
 * SA_RESTART (the shim decides about restarting). */
Test(local, wait_eintr)
{
	struct sigaction sa = { .sa_handler = on_alarm, .sa_flags = SA_RESTART };

	sigaction(SIGALRM, &sa, NULL);
	alarm(1);
	cr_assert_eq(xway_chan_wait(b, XWAY_EV_IN, -1, 20000), -EINTR);
}

/* Check arm/pollfd/ack: after arming, a send makes the pollfd readable. */
Test(local, arm_and_pollfd)
{
	struct pollfd p = { .fd = xway_chan_pollfd(b), .events = POLLIN };

	cr_assert_eq(xway_chan_arm(b, XWAY_EV_IN), 0);
	cr_assert_eq(poll(&p, 1, 0), 0);
	cr_assert_eq(xway_chan_send(a, "x", 1), 1);
	cr_assert_eq(poll(&p, 1, 1000), 1);
	xway_chan_ack(b);
	cr_assert_eq(poll(&p, 1, 0), 0);
	/* Not armed: a send sends no wake-up. */
	cr_assert_eq(xway_chan_send(a, "y", 1), 1);
	cr_assert_eq(poll(&p, 1, 0), 0);
	struct xway_chan_stats st;
	xway_chan_get_stats(a, &st);
	cr_assert_eq(st.wakeups_sent, 1);
	cr_assert_eq(st.tx_bytes, 2);
}

/* Check that the endpoint's descriptors sit at high numbers, are
 * close-on-exec, and the application still gets low ones. */
Test(local, high_fds)
{
	int fds[3], lo;

	cr_assert_eq(xway_chan_fds(a, fds, 3), 3);
	for (int i = 0; i < 3; i++) {
		cr_assert_geq(fds[i], 512, "fd %d", fds[i]);
		cr_assert(fcntl(fds[i], F_GETFD) & FD_CLOEXEC);
	}
	lo = open("/dev/null", O_RDONLY);
	cr_assert_lt(lo, 64);
	close(lo);
}

/* Check that bytes written while the offer was pending come back in order
 * once the broker withdrew it, and not before. */
Test(local, take_unsent_after_withdraw)
{
	struct xway_chan_shm *h = peer_view(a);
	char buf[16];

	cr_assert_eq(xway_chan_attached(a), XWAY_ATTACH_PENDING);
	cr_assert_eq(xway_chan_send(a, "hello world", 11), 11);
	cr_assert_eq(xway_chan_take_unsent(a, buf, sizeof(buf)), -EBUSY);
	h->attached = XWAY_ATTACH_WITHDRAWN;
	cr_assert_eq(xway_chan_take_unsent(a, buf, 5), 5);
	cr_assert_arr_eq(buf, "hello", 5);
	cr_assert_eq(xway_chan_take_unsent(a, buf, sizeof(buf)), 6);
	cr_assert_arr_eq(buf, " world", 6);
	cr_assert_eq(xway_chan_take_unsent(a, buf, sizeof(buf)), 0);
	h->attached = 77;
	cr_assert_eq(xway_chan_attached(a), -EPROTO);
}

/* Check that a side-0 wait for XWAY_EV_ATTACH wakes when the broker writes
 * its decision and efd[0], and that side 1 never reports it. */
Test(local, wait_attach_decision)
{
	struct xway_chan_shm *h = peer_view(a);
	int fds[3];
	uint64_t one = 1;

	cr_assert_eq(xway_chan_wait(a, XWAY_EV_ATTACH, -1, 10), 0);
	h->attached = XWAY_ATTACH_CLAIMED;
	cr_assert_eq(xway_chan_fds(a, fds, 3), 3);
	cr_assert_eq(write(fds[1], &one, sizeof(one)), (ssize_t)sizeof(one));
	cr_assert(xway_chan_wait(a, XWAY_EV_ATTACH, -1, 5000) & XWAY_EV_ATTACH);
	cr_assert_eq(xway_chan_attached(a), XWAY_ATTACH_CLAIMED);
	cr_assert_eq(xway_chan_poll(b) & XWAY_EV_ATTACH, 0);
}

/* ---- attach validation (no pair needed) ---------------------------------- */

static int make_memfd(size_t len, int seal)
{
	int fd = memfd_create("t", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, len), 0);
	if (seal)
		cr_assert_eq(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
	return fd;
}

static int try_attach(int memfd)
{
	int fds[3] = { memfd, eventfd(0, EFD_CLOEXEC), eventfd(0, EFD_CLOEXEC) };
	struct xway_chan *c = NULL;
	int r = xway_chan_local_attach(fds, 1, TEST_COOKIE, NULL, &c);

	if (r == 0)
		xway_chan_close(c);
	else
		for (int i = 0; i < 3; i++)
			close(fds[i]);
	return r;
}

static void write_hdr(int fd, uint32_t o0, uint32_t o1, uint64_t cookie)
{
	struct xway_chan_shm h = {
		.magic = XWAY_CHAN_MAGIC, .version = XWAY_CHAN_VERSION,
		.hdr_size = XWAY_CHAN_HDR_SIZE, .ring_order = { o0, o1 },
		.cookie = cookie,
	};

	cr_assert_eq(pwrite(fd, &h, sizeof(h), 0), (ssize_t)sizeof(h));
}

TestSuite(attach);

/* Check that a well-formed memfd attaches (the control case). */
Test(attach, good)
{
	int fd = make_memfd(4096 + 2 * 4096, 1);

	write_hdr(fd, 12, 12, TEST_COOKIE);
	cr_assert_eq(try_attach(fd), 0);
}

/* Check that ring orders out of range are refused with -EINVAL. */
Test(attach, order_out_of_range)
{
	int fd = make_memfd(4096 + 2 * 4096, 1);

	write_hdr(fd, 11, 12, TEST_COOKIE);
	cr_assert_eq(try_attach(fd), -EINVAL);
	fd = make_memfd(4096 + 2 * 4096, 1);
	write_hdr(fd, 12, 40, TEST_COOKIE);
	cr_assert_eq(try_attach(fd), -EINVAL);
}

/* Check that a memfd smaller than its header claims is refused. */
Test(attach, memfd_too_small)
{
	int fd = make_memfd(4096 + 4096 + 100, 1);

	write_hdr(fd, 12, 12, TEST_COOKIE);
	cr_assert_eq(try_attach(fd), -EINVAL);
	fd = make_memfd(100, 1);
	cr_assert_eq(try_attach(fd), -EINVAL);
}

/* Check that a bad magic, version or header size is refused. */
Test(attach, bad_magic_version)
{
	int fd = make_memfd(3 * 4096, 1);
	uint32_t v = 99;

	write_hdr(fd, 12, 12, TEST_COOKIE);
	cr_assert_eq(pwrite(fd, &v, 4, 4), 4);
	cr_assert_eq(try_attach(fd), -EINVAL);
	fd = make_memfd(3 * 4096, 1);
	write_hdr(fd, 12, 12, TEST_COOKIE);
	cr_assert_eq(pwrite(fd, &v, 4, 0), 4);
	cr_assert_eq(try_attach(fd), -EINVAL);
}

/* Check that the wrong cookie is refused with -EPERM. */
Test(attach, wrong_cookie)
{
	int fd = make_memfd(3 * 4096, 1);

	write_hdr(fd, 12, 12, TEST_COOKIE + 1);
	cr_assert_eq(try_attach(fd), -EPERM);
}

/* Check that an unsealed memfd (could be shrunk under us: SIGBUS) and a
 * non-memfd are refused. */
Test(attach, unsealed_or_not_a_file)
{
	int fd = make_memfd(3 * 4096, 0);
	int p[2];

	write_hdr(fd, 12, 12, TEST_COOKIE);
	cr_assert_eq(try_attach(fd), -EINVAL);
	cr_assert_eq(pipe(p), 0);
	cr_assert_eq(try_attach(p[0]), -EINVAL);
	close(p[1]);
}

/* Check that a pipe or another descriptor in place of an eventfd is
 * refused (reads and writes on it could block). */
Test(attach, not_an_eventfd)
{
	int fd = make_memfd(3 * 4096, 1);
	int p[2];
	struct xway_chan *c = NULL;

	write_hdr(fd, 12, 12, TEST_COOKIE);
	cr_assert_eq(pipe(p), 0);
	int fds[3] = { fd, p[0], eventfd(0, EFD_CLOEXEC) };
	cr_assert_eq(xway_chan_local_attach(fds, 1, TEST_COOKIE, NULL, &c), -EINVAL);
	fds[1] = fds[2];
	fds[2] = fd;                       /* the memfd: a regular file */
	cr_assert_eq(xway_chan_local_attach(fds, 1, TEST_COOKIE, NULL, &c), -EINVAL);
	/* A blocking eventfd is accepted and made non-blocking. */
	fds[2] = eventfd(0, EFD_CLOEXEC);
	cr_assert_eq(xway_chan_local_attach(fds, 1, TEST_COOKIE, NULL, &c), 0);
	int own[3];
	cr_assert_eq(xway_chan_fds(c, own, 3), 3);
	cr_assert(fcntl(own[2], F_GETFL) & O_NONBLOCK);
	xway_chan_close(c);
	close(p[0]);
	close(p[1]);
}

/* Check that indices already inconsistent at attach are refused. */
Test(attach, inconsistent_indices)
{
	int fd = make_memfd(3 * 4096, 1);
	struct xway_chan_shm *h;

	write_hdr(fd, 12, 12, TEST_COOKIE);
	h = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert_neq(h, MAP_FAILED);
	h->ring[0].prod = 5000;     /* ring 0 (our rx) claims > 4096 bytes */
	cr_assert_eq(try_attach(fd), -EPROTO);
	munmap(h, 4096);
}

/* Check bad parameters: ring order out of range at create, bad side. */
Test(attach, bad_params)
{
	struct xway_chan_params p = { .ring_order = 27 };
	struct xway_chan *c;
	int fds[3] = { -1, -1, -1 };

	cr_assert_eq(xway_chan_local_create(&p, 1, &c, fds), -EINVAL);
	p.ring_order = 11;
	cr_assert_eq(xway_chan_local_create(&p, 1, &c, fds), -EINVAL);
	cr_assert_eq(xway_chan_local_attach(fds, 1, 1, NULL, &c), -EBADF);
	cr_assert_eq(xway_chan_local_attach(fds, 2, 1, NULL, &c), -EINVAL);
}

/* Check that a wait works under RLIMIT_NOFILE 0, as sandboxing daemons set
 * it (vsftpd's pre-login process; sshd's preauth child sets 1): ppoll
 * refuses more descriptors than the limit (EINVAL), so the wait is made
 * with pselect6; it sleeps until the peer's bytes arrive and times out as
 * asked, and the extra descriptor (the dual TCP socket) still wakes it. */
Test(local, wait_under_nofile_zero, .timeout = 30)
{
	int st = -1, sp[2];
	pid_t pid;

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		struct rlimit zero = { 0, 0 };
		char buf[8];
		int ok = setrlimit(RLIMIT_NOFILE, &zero) == 0;
		int w1 = xway_chan_wait(b, XWAY_EV_IN, -1, 100);     /* times out */
		int w2 = xway_chan_wait(b, XWAY_EV_IN, -1, 10000);   /* the bytes */
		int w3 = xway_chan_recv(b, buf, sizeof(buf), 0) == 4 ? 0 : -1;
		int w4 = xway_chan_wait(b, XWAY_EV_IN, sp[1], 10000); /* the extra fd */

		_exit(ok && w1 == 0 && (w2 & XWAY_EV_IN) && w3 == 0 &&
		      (w4 & XWAY_EV_EXTRA) ? 0 : 1);
	}
	usleep(300000);
	cr_assert_eq(xway_chan_send(a, "late", 4), 4);
	usleep(300000);
	cr_assert_eq(write(sp[0], "x", 1), 1);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "a wait under RLIMIT_NOFILE 0 failed");
	close(sp[0]);
	close(sp[1]);
}

/* ---- spare endpoint states (local.c) ------------------------------------ */

/* The inode of an end's state memfd (its fourth descriptor), and the end's
 * shared word set to v. */
static ino_t ep_ino(struct xway_chan *c, uint64_t v)
{
	int fds[4];
	struct stat st;

	cr_assert_eq(xway_chan_fds(c, fds, 4), 4, "a local end has a state memfd");
	cr_assert_eq(fstat(fds[3], &st), 0);
	if (v)
		memcpy(xway_chan_user_word(c), &v, sizeof(v));
	return st.st_ino;
}

static uint64_t user_word(struct xway_chan *c)
{
	uint64_t v;

	memcpy(&v, xway_chan_user_word(c), sizeof(v));
	return v;
}

TestSuite(spare);

/* Check that the states of two closed ends serve the next two, zeroed, and
 * that their descriptors are listed as the channel layer's own meanwhile. */
Test(spare, reused_zeroed)
{
	struct xway_chan *x, *y;
	int own[32], n;

	make_pair(12, 0, &x, &y);
	ino_t ix = ep_ino(x, 0x1111), iy = ep_ino(y, 0x2222);
	int before = xway_chan_spare_fds(own, 32);
	xway_chan_close(x);
	xway_chan_close(y);
	n = xway_chan_spare_fds(own, 32);
	cr_assert_eq(n, before + 2, "both states kept (%d, was %d)", n, before);
	for (int i = 0; i < n; i++)
		cr_assert_geq(fcntl(own[i], F_GETFD), 0, "spare fd %d is open", own[i]);
	make_pair(12, 0, &x, &y);
	ino_t jx = ep_ino(x, 0), jy = ep_ino(y, 0);
	cr_assert((jx == ix && jy == iy) || (jx == iy && jy == ix),
		  "the new ends reuse the kept states");
	cr_assert_eq(user_word(x), 0, "reused state zeroed");
	cr_assert_eq(user_word(y), 0, "reused state zeroed");
	cr_assert_eq(xway_chan_spare_fds(own, 32), before);
	/* And the reused ends work. */
	char buf[4];
	cr_assert_eq(xway_chan_send(x, "spar", 4), 4);
	cr_assert_eq(xway_chan_recv(y, buf, 4, 0), 4);
	cr_assert_eq(memcmp(buf, "spar", 4), 0);
	xway_chan_close(x);
	xway_chan_close(y);
}

/* Check that a state made before a fork-like event, or handed to another
 * process, is never kept: another process may still map it. */
Test(spare, not_after_sharing_or_hand_over)
{
	struct xway_chan *x, *y;
	int own[32], before = xway_chan_spare_fds(own, 32), fds[4];

	make_pair(12, 0, &x, &y);
	cr_assert_eq(xway_chan_fds(x, fds, 4), 4);
	int xfd = fds[3];
	xway_chan_sharing();
	xway_chan_close(x);
	xway_chan_close(y);
	cr_assert_eq(xway_chan_spare_fds(own, 32), before, "nothing kept after a fork");
	cr_assert_eq(fcntl(xfd, F_GETFD), -1, "its memfd closed");

	make_pair(12, 0, &x, &y);
	ino_t iy = ep_ino(y, 0);
	xway_chan_ep_handed(x);
	xway_chan_close(x);
	xway_chan_close(y);
	cr_assert_eq(xway_chan_spare_fds(own, 32), before + 1, "only the unhanded one kept");
	make_pair(12, 0, &x, &y);
	cr_assert(ep_ino(x, 0) == iy || ep_ino(y, 0) == iy);
	xway_chan_close(x);
	xway_chan_close(y);
}

/* Check that a fork child never uses the spares it inherited (the same
 * pages as its parent's): it closes them and makes its own. */
Test(spare, child_makes_its_own, .timeout = 30)
{
	struct xway_chan *x, *y;
	int st = -1;
	pid_t pid;

	make_pair(12, 0, &x, &y);
	ino_t ix = ep_ino(x, 0), iy = ep_ino(y, 0);
	xway_chan_close(x);
	xway_chan_close(y);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		struct xway_chan *u, *v;
		int own[32];

		make_pair(12, 0, &u, &v);
		ino_t iu = ep_ino(u, 0), iv = ep_ino(v, 0);
		int n = xway_chan_spare_fds(own, 32);
		_exit(iu != ix && iu != iy && iv != ix && iv != iy && n == 0 ? 0 : 1);
	}
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
		  "the child reused its parent's spare states");
	make_pair(12, 0, &x, &y);
	cr_assert(ep_ino(x, 0) == iy || ep_ino(x, 0) == ix, "the parent still reuses them");
	xway_chan_close(x);
	xway_chan_close(y);
}
