/* SPDX-License-Identifier: MIT */
/*
 * xway-lc: readiness and process-lifecycle cases for libxway.so.  Each case
 * asserts what kernel TCP does (TCP-SEMANTICS.md), so the same binary is
 * run without the shim, with the shim and no broker, and with the shim and
 * a private xwayd (then XWAY_TEST_EXPECT=accel also checks, through
 * TCP_INFO on the real socket, that the payload did not travel on kernel
 * TCP).  Usage: xway-lc CASE (exit 0 pass, 1 fail, 77 skip); xway-lc list.
 * Every wait is bounded; helper processes are children of the case and
 * are reaped by pid.  Random payloads print their seed.
 */

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <linux/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <signal.h>
#include <spawn.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static const char *tcase = "?";

#define CHECK(cond, ...) do { if (!(cond)) { \
	fprintf(stderr, "FAIL %s (%s:%d): ", tcase, __FILE__, __LINE__); \
	fprintf(stderr, __VA_ARGS__); \
	fprintf(stderr, " [errno %d %s]\n", errno, strerror(errno)); \
	_exit(1); } } while (0)

/* ---- helpers ----------------------------------------------------------- */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void check_path(int fd, uint64_t payload)
{
	const char *e = getenv("XWAY_TEST_EXPECT");
	struct tcp_info ti;
	socklen_t l = sizeof(ti);

	if (!e || !*e || payload == 0)
		return;
	memset(&ti, 0, sizeof(ti));
	CHECK(getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) == 0, "TCP_INFO");
	uint64_t k = ti.tcpi_bytes_acked + ti.tcpi_bytes_received;
	if (!strcmp(e, "accel"))
		CHECK(k < 4096 && k < payload / 8, "accelerated: kernel TCP carried %llu "
		      "of %llu payload bytes", (unsigned long long)k,
		      (unsigned long long)payload);
	else if (!strcmp(e, "tcp"))
		CHECK(k >= payload, "plain TCP: kernel carried only %llu of %llu",
		      (unsigned long long)k, (unsigned long long)payload);
}

static int listener(int *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

	CHECK(fd >= 0, "socket");
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "bind");
	CHECK(listen(fd, 1024) == 0, "listen");
	CHECK(getsockname(fd, (struct sockaddr *)&sa, &sl) == 0, "getsockname");
	*port = ntohs(sa.sin_port);
	return fd;
}

static int connect_to(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	CHECK(fd >= 0, "socket");
	CHECK(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect");
	return fd;
}

/* A connected pair in this process: *c the client, *s the accepted end. */
static void mkpair(int *c, int *s)
{
	int port, l = listener(&port);

	*c = connect_to(port);
	*s = accept(l, NULL, NULL);
	CHECK(*s >= 0, "accept");
	close(l);
}

static void write_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;

	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		CHECK(w > 0, "write");
		p += w;
		n -= (size_t)w;
	}
}

static void read_all(int fd, void *buf, size_t n)
{
	char *p = buf;

	while (n > 0) {
		ssize_t r = read(fd, p, n);
		if (r < 0 && errno == EINTR)
			continue;
		CHECK(r > 0, "read (got %zd, %zu left)", r, n);
		p += r;
		n -= (size_t)r;
	}
}

static void fill(unsigned char *b, size_t n, unsigned seed)
{
	uint32_t x = seed * 2654435761u + 1;

	for (size_t i = 0; i < n; i++) {
		x ^= x << 13; x ^= x >> 17; x ^= x << 5;
		b[i] = (unsigned char)x;
	}
}

/* Read n bytes and compare them with fill(seed); returns the buffer (the
 * caller frees it). */
static unsigned char *read_expect(int fd, size_t n, unsigned seed, const char *what)
{
	unsigned char *b = malloc(n), *want = malloc(n);

	CHECK(b && want, "malloc");
	read_all(fd, b, n);
	fill(want, n, seed);
	CHECK(memcmp(b, want, n) == 0, "%s", what);
	free(want);
	return b;
}

static void expect_eof(int fd)
{
	char c;
	ssize_t r;

	do
		r = read(fd, &c, 1);
	while (r < 0 && errno == EINTR);
	CHECK(r == 0, "EOF expected, got %zd", r);
}

static int reap(pid_t pid)
{
	int st = 0;

	for (int i = 0; i < 600; i++) {           /* 60 s at most */
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		CHECK(r == 0, "waitpid");
		usleep(100000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	return 255;
}

/* Raise the soft fd limit to n, or to the hard limit if lower; returns
 * what it is now. */
static rlim_t raise_nofile(rlim_t n)
{
	struct rlimit rl;

	CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0, "getrlimit");
	if (setrlimit(RLIMIT_NOFILE, &(struct rlimit){ n, n > rl.rlim_max ? n : rl.rlim_max }) != 0) {
		rl.rlim_cur = rl.rlim_max < n ? rl.rlim_max : n;
		CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0, "setrlimit NOFILE %lu",
		      (unsigned long)rl.rlim_cur);
	}
	CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0, "getrlimit");
	return rl.rlim_cur;
}

/* Send len pattern bytes (seed) and read the same back, checking. */
static void exchange(int fd, size_t len, unsigned seed, int sender_first)
{
	unsigned char *a = malloc(len), *b = malloc(len);

	CHECK(a && b, "malloc");
	fill(a, len, seed);
	if (sender_first) {
		write_all(fd, a, len);
		read_all(fd, b, len);
	} else {
		read_all(fd, b, len);
		write_all(fd, b, len);
	}
	if (sender_first)
		CHECK(memcmp(a, b, len) == 0, "payload mismatch (seed %u)", seed);
	free(a);
	free(b);
}

/* Move 256 KiB from `from` to `to` in 16 KiB steps (no helper process
 * needed) and check the path the bytes took. */
static void bulk(int from, int to)
{
	static unsigned char a[16384], b[16384];

	for (int i = 0; i < 16; i++) {
		fill(a, sizeof(a), 100 + (unsigned)i);
		write_all(from, a, sizeof(a));
		read_all(to, b, sizeof(b));
		CHECK(memcmp(a, b, sizeof(a)) == 0, "bulk data");
	}
	check_path(to, 16 * sizeof(a));
}

/* ---- poll -------------------------------------------------------------- */

static short pollone(int fd, short ev, int tmo)
{
	struct pollfd p = { .fd = fd, .events = ev };
	int r = poll(&p, 1, tmo);

	CHECK(r >= 0, "poll");
	return r ? p.revents : 0;
}

/* Check that poll reports levels, EOF, half-close and reset as kernel TCP. */
static int case_poll(void)
{
	int c, s, pfd[2];
	char buf[16];

	mkpair(&c, &s);
	CHECK(pollone(c, POLLIN | POLLOUT, 0) == POLLOUT, "fresh: only POLLOUT");
	write_all(s, "hello", 5);
	CHECK(pollone(c, POLLIN, 10000) == POLLIN, "POLLIN after data");
	CHECK(pollone(c, POLLIN | POLLRDNORM, 0) == (POLLIN | POLLRDNORM), "RDNORM alias");
	read_all(c, buf, 5);
	int64_t t0 = now_ms();
	CHECK(pollone(c, POLLIN, 150) == 0, "timeout with nothing");
	CHECK(now_ms() - t0 >= 149, "poll returned before its timeout");

	/* Mixed set: a pipe becomes readable, the socket stays quiet. */
	CHECK(pipe(pfd) == 0, "pipe");
	write_all(pfd[1], "x", 1);
	struct pollfd m[2] = { { c, POLLIN, 0 }, { pfd[0], POLLIN, 0 } };
	CHECK(poll(m, 2, 10000) == 1 && m[1].revents == POLLIN && m[0].revents == 0,
	      "mixed set: pipe only");
	struct pollfd neg[2] = { { -1, POLLIN, 77 }, { c, POLLOUT, 0 } };
	CHECK(poll(neg, 2, 1000) == 1 && neg[0].revents == 0 && neg[1].revents == POLLOUT,
	      "negative fd ignored");

	/* Wake-up from another process while we sleep. */
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		close(c);
		usleep(100000);
		write_all(s, "late", 4);
		_exit(0);
	}
	CHECK(pollone(c, POLLIN, 20000) == POLLIN, "woken by a write from a child");
	read_all(c, buf, 4);
	CHECK(memcmp(buf, "late", 4) == 0, "data");
	CHECK(reap(pid) == 0, "child");
	bulk(s, c);

	/* Peer half-close: POLLIN|POLLOUT|POLLRDHUP, no POLLHUP. */
	shutdown(s, SHUT_WR);
	CHECK(pollone(c, POLLRDHUP, 10000) == POLLRDHUP, "RDHUP after peer SHUT_WR");
	short all = POLLIN | POLLOUT | POLLRDHUP;
	CHECK(pollone(c, all, 0) == all, "peer close: IN|OUT|RDHUP, got %#x",
	      pollone(c, all, 0));
	/* Our SHUT_WR too: POLLHUP, and still POLLOUT. */
	shutdown(c, SHUT_WR);
	short m2 = pollone(c, all, 0);
	CHECK((m2 & POLLHUP) && (m2 & POLLOUT) && (m2 & POLLIN), "both shut: %#x", m2);
	close(c);
	close(s);

	/* Reset: POLLERR|POLLHUP|POLLIN. */
	mkpair(&c, &s);
	write_all(c, "unread", 6);
	CHECK(pollone(s, POLLIN, 10000) == POLLIN, "data at server");
	close(s);                     /* unread data: RST */
	short m3 = pollone(c, POLLIN, 10000);
	CHECK((m3 & POLLIN) && (m3 & POLLERR) && (m3 & POLLHUP), "reset: %#x", m3);
	CHECK(read(c, buf, 1) < 0 && errno == ECONNRESET, "ECONNRESET");
	close(c);
	close(pfd[0]);
	close(pfd[1]);
	return 0;
}

/* ---- select ------------------------------------------------------------ */

/* Check select bits, the time written back, and fds above 1023 in a set
 * larger than fd_set (the glibc way). */
static int case_select(void)
{
	int c, s;
	char buf[8];
	fd_set r, w;
	struct timeval tv;

	mkpair(&c, &s);
	FD_ZERO(&r); FD_ZERO(&w);
	FD_SET(c, &r); FD_SET(c, &w);
	tv.tv_sec = 0; tv.tv_usec = 0;
	CHECK(select(c + 1, &r, &w, NULL, &tv) == 1 && !FD_ISSET(c, &r) && FD_ISSET(c, &w),
	      "fresh: writable only");

	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		usleep(100000);
		write_all(s, "abc", 3);
		_exit(0);
	}
	FD_ZERO(&r);
	FD_SET(c, &r);
	tv.tv_sec = 20; tv.tv_usec = 0;
	CHECK(select(c + 1, &r, NULL, NULL, &tv) == 1 && FD_ISSET(c, &r), "readable");
	CHECK(tv.tv_sec < 20 && (tv.tv_sec > 0 || tv.tv_usec > 0),
	      "remaining time written back: %ld.%06ld", (long)tv.tv_sec, (long)tv.tv_usec);
	CHECK(reap(pid) == 0, "child");
	read_all(c, buf, 3);

	/* Timeout: 0 and the time left is 0. */
	FD_ZERO(&r);
	FD_SET(c, &r);
	tv.tv_sec = 0; tv.tv_usec = 100000;
	CHECK(select(c + 1, &r, NULL, NULL, &tv) == 0 && tv.tv_sec == 0 && tv.tv_usec == 0,
	      "timeout");

	/* fd 1500 in a 2048-bit set. */
	CHECK(raise_nofile(4096) >= 2048, "RLIMIT_NOFILE below 2048");
	CHECK(dup2(c, 1500) == 1500, "dup2 1500");
	__fd_mask big[2048 / (8 * sizeof(__fd_mask))];
	memset(big, 0, sizeof(big));
	big[1500 / (8 * sizeof(__fd_mask))] |= (__fd_mask)1 << (1500 % (8 * sizeof(__fd_mask)));
	write_all(s, "z", 1);
	tv.tv_sec = 20; tv.tv_usec = 0;
	CHECK(select(1501, (fd_set *)big, NULL, NULL, &tv) == 1, "select fd 1500");
	CHECK(big[1500 / (8 * sizeof(__fd_mask))] ==
	      (__fd_mask)1 << (1500 % (8 * sizeof(__fd_mask))), "bit 1500");
	read_all(1500, buf, 1);
	bulk(s, c);
	close(1500);

	/* pselect with a mask, EOF is readable. */
	close(s);
	FD_ZERO(&r);
	FD_SET(c, &r);
	struct timespec ts = { 20, 0 };
	sigset_t none;
	sigemptyset(&none);
	CHECK(pselect(c + 1, &r, NULL, NULL, &ts, &none) == 1 && FD_ISSET(c, &r), "EOF readable");
	expect_eof(c);
	close(c);
	return 0;
}

/* ---- epoll ------------------------------------------------------------- */

static int ewait(int ep, struct epoll_event *ev, int max, int tmo)
{
	int n;

	do
		n = epoll_wait(ep, ev, max, tmo);
	while (n < 0 && errno == EINTR);
	CHECK(n >= 0, "epoll_wait");
	return n;
}

/* Check LT, ET (a wake per new arrival, even with old data unread),
 * ONESHOT, RDHUP, and that a registration follows the open file. */
static int case_epoll(void)
{
	int c, s, ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev, out[8];
	char buf[64];

	CHECK(ep >= 0, "epoll_create1");
	mkpair(&c, &s);

	/* LT */
	ev.events = EPOLLIN;
	ev.data.u64 = 0x1111;
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) == 0, "ADD");
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) < 0 && errno == EEXIST, "EEXIST");
	CHECK(ewait(ep, out, 8, 0) == 0, "LT: nothing yet");
	write_all(s, "0123456789", 10);
	CHECK(ewait(ep, out, 8, 10000) == 1 && out[0].data.u64 == 0x1111 &&
	      out[0].events == EPOLLIN, "LT: data");
	CHECK(ewait(ep, out, 8, 0) == 1, "LT: still level-ready");
	read_all(c, buf, 10);
	CHECK(ewait(ep, out, 8, 0) == 0, "LT: drained");

	/* ET */
	ev.events = EPOLLIN | EPOLLET;
	ev.data.u64 = 0x2222;
	CHECK(epoll_ctl(ep, EPOLL_CTL_MOD, c, &ev) == 0, "MOD ET");
	write_all(s, "a", 1);
	CHECK(ewait(ep, out, 8, 10000) == 1 && out[0].data.u64 == 0x2222, "ET: first");
	CHECK(ewait(ep, out, 8, 0) == 0, "ET: no second event without arrival");
	write_all(s, "b", 1);           /* old data still unread */
	CHECK(ewait(ep, out, 8, 10000) == 1, "ET: new arrival wakes again");
	CHECK(ewait(ep, out, 8, 0) == 0, "ET: once");
	read_all(c, buf, 2);
	CHECK(buf[0] == 'a' && buf[1] == 'b', "ET data");

	/* ONESHOT */
	ev.events = EPOLLIN | EPOLLONESHOT;
	ev.data.u64 = 0x3333;
	CHECK(epoll_ctl(ep, EPOLL_CTL_MOD, c, &ev) == 0, "MOD ONESHOT");
	write_all(s, "c", 1);
	CHECK(ewait(ep, out, 8, 10000) == 1 && out[0].data.u64 == 0x3333, "oneshot fires");
	write_all(s, "d", 1);
	CHECK(ewait(ep, out, 8, 100) == 0, "oneshot disabled");
	CHECK(epoll_ctl(ep, EPOLL_CTL_MOD, c, &ev) == 0, "re-arm");
	CHECK(ewait(ep, out, 8, 10000) == 1, "oneshot re-armed");
	read_all(c, buf, 2);

	/* Nested: ep inside an outer epoll; and a timerfd + pipe beside. */
	int outer = epoll_create1(0), tfd = timerfd_create(CLOCK_MONOTONIC, 0), pfd[2];
	CHECK(outer >= 0 && tfd >= 0 && pipe(pfd) == 0, "outer/timerfd/pipe");
	ev.events = EPOLLIN;
	ev.data.u64 = 0x4444;
	CHECK(epoll_ctl(ep, EPOLL_CTL_MOD, c, &ev) == 0, "MOD LT");
	ev.data.u64 = 0x5555;
	CHECK(epoll_ctl(outer, EPOLL_CTL_ADD, ep, &ev) == 0, "nest");
	ev.data.u64 = 0x6666;
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev) == 0, "timerfd");
	ev.data.u64 = 0x7777;
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, pfd[0], &ev) == 0, "pipe");
	CHECK(ewait(outer, out, 8, 0) == 0, "outer quiet");
	struct itimerspec its = { { 0, 0 }, { 0, 50000000 } };
	timerfd_settime(tfd, 0, &its, NULL);
	CHECK(ewait(ep, out, 8, 10000) == 1 && out[0].data.u64 == 0x6666, "timerfd event");
	uint64_t ticks;
	CHECK(read(tfd, &ticks, 8) == 8, "timerfd read");
	write_all(s, "e", 1);
	CHECK(ewait(outer, out, 8, 10000) == 1 && out[0].data.u64 == 0x5555, "outer wakes");
	CHECK(ewait(outer, out, 8, 0) == 1, "outer LT while inner level-ready");
	CHECK(ewait(ep, out, 8, 0) == 1 && out[0].data.u64 == 0x4444, "inner reports");
	read_all(c, buf, 1);
	CHECK(ewait(ep, out, 8, 0) == 0, "inner drained");
	write_all(pfd[1], "p", 1);
	CHECK(ewait(ep, out, 8, 10000) == 1 && out[0].data.u64 == 0x7777, "pipe event");
	read_all(pfd[0], buf, 1);

	/* The registration belongs to the open file: survives close(c)
	 * while a dup exists. */
	int d = dup(c);
	CHECK(d >= 0, "dup");
	close(c);
	write_all(s, "f", 1);
	CHECK(ewait(ep, out, 8, 10000) == 1 && out[0].data.u64 == 0x4444,
	      "registration survives close of the original fd");
	read_all(d, buf, 1);

	/* Peer SHUT_WR: EPOLLIN|EPOLLRDHUP, not EPOLLHUP. */
	ev.events = EPOLLIN | EPOLLRDHUP;
	ev.data.u64 = 0x8888;
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, d, &ev) == 0, "ADD dup");
	shutdown(s, SHUT_WR);
	int got = 0;
	for (int i = 0; i < 100 && !got; i++) {
		int n = ewait(ep, out, 8, 10000);
		for (int k = 0; k < n; k++)
			if (out[k].data.u64 == 0x8888) {
				CHECK(out[k].events == (EPOLLIN | EPOLLRDHUP),
				      "peer close: %#x", out[k].events);
				got = 1;
			}
	}
	CHECK(got, "RDHUP event");
	CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, d, NULL) == 0, "DEL");
	CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, d, NULL) < 0 && errno == ENOENT, "ENOENT");
	bulk(d, s);
	close(d);
	close(s);
	close(ep);
	close(outer);
	close(tfd);
	close(pfd[0]);
	close(pfd[1]);
	return 0;
}

/* Check that a nonblocking connect reports EPOLLOUT (epoll, ET) and
 * POLLOUT (poll) once connected, then carries data, as kernel TCP. */
static int case_nbconnect(void)
{
	for (int use_epoll = 0; use_epoll < 2; use_epoll++) {
		int port, l = listener(&port), c, s, ep = epoll_create1(0);
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
					  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		struct epoll_event ev = { .events = EPOLLOUT | EPOLLIN | EPOLLET }, out[4];

		c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		CHECK(c >= 0 && ep >= 0, "socket/epoll");
		int r = connect(c, (struct sockaddr *)&sa, sizeof(sa));
		CHECK(r == 0 || errno == EINPROGRESS, "nonblocking connect");
		ev.data.u64 = 42;
		if (use_epoll)
			CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) == 0, "ADD");
		s = accept(l, NULL, NULL);
		CHECK(s >= 0, "accept");
		if (use_epoll) {
			CHECK(ewait(ep, out, 4, 20000) == 1 && out[0].data.u64 == 42 &&
			      (out[0].events & EPOLLOUT) && !(out[0].events & EPOLLIN),
			      "EPOLLOUT once connected");
		} else {
			CHECK(pollone(c, POLLOUT | POLLIN, 20000) == POLLOUT, "POLLOUT once connected");
		}
		int err = -1;
		socklen_t el = sizeof(err);
		CHECK(getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0, "SO_ERROR 0");
		/* Nonblocking data both ways, readiness-driven. */
		static unsigned char a[65536], b[65536];
		fill(a, sizeof(a), 21);
		size_t off = 0;
		for (int i = 0; off < sizeof(a) && i < 100000; i++) {
			ssize_t w = write(c, a + off, sizeof(a) - off);
			if (w > 0) {
				off += (size_t)w;
				continue;
			}
			CHECK(errno == EAGAIN, "nonblocking write");
			CHECK(pollone(c, POLLOUT, 20000) & POLLOUT, "POLLOUT again");
		}
		read_all(s, b, sizeof(b));
		CHECK(memcmp(a, b, sizeof(a)) == 0, "data");
		write_all(s, "r", 1);
		if (use_epoll) {
			CHECK(ewait(ep, out, 4, 20000) >= 1 && (out[0].events & EPOLLIN), "EPOLLIN");
		} else {
			CHECK(pollone(c, POLLIN, 20000) == POLLIN, "POLLIN");
		}
		CHECK(read(c, b, 1) == 1 && b[0] == 'r', "reply");
		check_path(c, sizeof(a));
		close(c);
		close(s);
		close(l);
		close(ep);
	}
	return 0;
}

static int race_ep, race_fd;

static void *race_adder(void *arg)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 0xabcdef };

	(void)arg;
	usleep(100000);                 /* the waiter is asleep by now */
	CHECK(epoll_ctl(race_ep, EPOLL_CTL_ADD, race_fd, &ev) == 0, "ADD from a thread");
	return NULL;
}

/* Check that a thread already asleep in epoll_wait on an instance that
 * holds no connection yet gets the app's own data when another thread adds
 * a connection with data waiting (apache's event MPM does this). */
static int case_epoll_race(void)
{
	int c, s;
	pthread_t t;
	struct epoll_event out[4];

	mkpair(&c, &s);
	race_ep = epoll_create1(0);
	race_fd = c;
	CHECK(race_ep >= 0, "epoll_create1");
	write_all(s, "x", 1);
	CHECK(pthread_create(&t, NULL, race_adder, NULL) == 0, "thread");
	int n = ewait(race_ep, out, 4, 20000);
	pthread_join(t, NULL);
	CHECK(n == 1 && out[0].data.u64 == 0xabcdef && (out[0].events & EPOLLIN),
	      "event of the added fd: n=%d data=%#llx", n,
	      n > 0 ? (unsigned long long)out[0].data.u64 : 0ULL);
	char b;
	read_all(c, &b, 1);
	bulk(s, c);
	close(c);
	close(s);
	close(race_ep);
	return 0;
}

/* ---- EINTR ------------------------------------------------------------- */

static void on_alarm(int sig)
{
	(void)sig;
}

static int eintr_one(int what, int c, int ep)
{
	struct itimerval it = { { 0, 0 }, { 0, 100000 } };
	struct pollfd p = { .fd = c, .events = POLLIN };
	struct epoll_event out[2];
	struct timespec ts = { 30, 0 };
	fd_set r;
	int rc = 0;

	setitimer(ITIMER_REAL, &it, NULL);
	errno = 0;
	switch (what) {
	case 0: rc = poll(&p, 1, 30000); break;
	case 1: rc = ppoll(&p, 1, &ts, NULL); break;
	case 2: FD_ZERO(&r); FD_SET(c, &r); rc = select(c + 1, &r, NULL, NULL, NULL); break;
	case 3: rc = epoll_wait(ep, out, 2, 30000); break;
	}
	return rc == -1 && errno == EINTR;
}

/* Check that poll, ppoll, select and epoll_wait fail with EINTR even
 * under SA_RESTART. */
static int case_eintr_all(void)
{
	struct sigaction sa;
	int c, s, ep = epoll_create1(0);
	struct epoll_event ev = { .events = EPOLLIN };
	static const char *names[] = { "poll", "ppoll", "select", "epoll_wait" };

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGALRM, &sa, NULL);
	mkpair(&c, &s);
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) == 0, "ADD");
	for (int w = 0; w < 4; w++)
		CHECK(eintr_one(w, c, ep), "%s: EINTR under SA_RESTART", names[w]);
	close(c);
	close(s);
	close(ep);
	return 0;
}

/* ---- fork, vfork, clone ------------------------------------------------ */

/* Check that a forked child can use the connection after the parent closed
 * its copy, and that the parent closing does not end it. */
static int case_fork(void)
{
	int c, s;

	mkpair(&c, &s);
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		close(c);
		exchange(s, 1 << 20, 7, 0);     /* echo 1 MiB back */
		expect_eof(s);
		close(s);
		_exit(0);
	}
	close(s);                       /* the parent's copy goes at once */
	exchange(c, 1 << 20, 7, 1);
	check_path(c, 2 << 20);
	shutdown(c, SHUT_WR);
	CHECK(reap(pid) == 0, "child");
	close(c);
	return 0;
}

#define REC 64
struct rec { uint32_t who, seq; unsigned char pad[REC - 12]; uint32_t sum; };

static void send_recs(int fd, uint32_t who, int n)
{
	struct rec r;

	for (int i = 0; i < n; i++) {
		memset(&r, 0, sizeof(r));
		r.who = who;
		r.seq = (uint32_t)i;
		fill(r.pad, sizeof(r.pad), who * 100000 + (unsigned)i);
		r.sum = who * 31 + (uint32_t)i * 7 + r.pad[0];
		CHECK(write(fd, &r, sizeof(r)) == sizeof(r), "record write");
	}
}

/* Check that two processes writing the same connection at once never
 * corrupt it: every 64-byte record arrives whole and in order per writer. */
static int case_fork_both(void)
{
	int c, s, n = 20000;
	uint32_t next[2] = { 0, 0 };

	mkpair(&c, &s);
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		close(s);
		send_recs(c, 1, n);
		_exit(0);
	}
	pid_t pid2 = fork();
	CHECK(pid2 >= 0, "fork");
	if (pid2 == 0) {
		close(s);
		send_recs(c, 0, n);
		_exit(0);
	}
	close(c);
	for (int i = 0; i < 2 * n; i++) {
		struct rec r;
		unsigned char pad[sizeof(r.pad)];
		read_all(s, &r, sizeof(r));
		CHECK(r.who < 2 && r.seq == next[r.who], "record %d: who %u seq %u", i,
		      r.who, r.seq);
		fill(pad, sizeof(pad), r.who * 100000 + r.seq);
		CHECK(memcmp(pad, r.pad, sizeof(pad)) == 0 &&
		      r.sum == r.who * 31 + r.seq * 7 + pad[0], "record %d corrupt", i);
		next[r.who]++;
	}
	expect_eof(s);
	check_path(s, (uint64_t)2 * n * REC);
	CHECK(reap(pid) == 0 && reap(pid2) == 0, "writers");
	close(s);
	return 0;
}

/* Check that vfork (+_exit) and posix_spawn leave the parent's
 * connection working. */
static int case_vfork(void)
{
	int c, s;

	mkpair(&c, &s);
	pid_t pid = vfork();
	if (pid == 0)
		_exit(0);
	CHECK(pid > 0, "vfork");
	CHECK(reap(pid) == 0, "vfork child");
	char *argv[] = { "true", NULL };
	CHECK(posix_spawn(&pid, "/bin/true", NULL, NULL, argv, environ) == 0, "spawn");
	CHECK(reap(pid) == 0, "spawned");
	pid = fork();
	if (pid == 0) {
		close(c);
		exchange(s, 256 << 10, 3, 0);
		_exit(0);
	}
	exchange(c, 256 << 10, 3, 1);
	check_path(c, 512 << 10);
	CHECK(reap(pid) == 0, "echo child");
	close(c);
	close(s);
	return 0;
}

static int pipefd[2];
static int clone_s;

static int clone_child(void)
{
	/* The first call into libc (and the shim) tells the parent. */
	write_all(pipefd[1], "r", 1);
	exchange(clone_s, 256 << 10, 5, 0);
	expect_eof(clone_s);
	return 0;
}

/* Check that a child made by a raw clone() (no atfork handler runs) can
 * use the connection after the parent closed its copy. */
static int case_clone(void)
{
	int c;
	char b;

	mkpair(&c, &clone_s);
	CHECK(pipe(pipefd) == 0, "pipe");
	long pid = syscall(SYS_clone, SIGCHLD, NULL, NULL, NULL, NULL);
	CHECK(pid >= 0, "clone");
	if (pid == 0)
		_exit(clone_child());
	read_all(pipefd[0], &b, 1);
	close(clone_s);
	exchange(c, 256 << 10, 5, 1);
	check_path(c, 512 << 10);
	shutdown(c, SHUT_WR);
	CHECK(reap((pid_t)pid) == 0, "clone child");
	close(c);
	return 0;
}

/* Check that the state of a connection a child still uses is never reused
 * for the parent's next connections: fork() and glibc's clone() (no
 * CLONE_VM) make the shim keep no spare of it (shim/chan/local.c).  Bytes
 * went both ways first, so a state zeroed for reuse under the child would
 * send it back to old ring positions (wrong bytes, a stall). */
static int recycle_c, recycle_s;

static int recycle_child(void *arg)
{
	(void)arg;
	close(recycle_c);
	exchange(recycle_s, 256 << 10, 13, 0);
	expect_eof(recycle_s);
	return 0;
}

static int recycle_how(int how)
{
	static char stack[256 << 10] __attribute__((aligned(16)));
	int c2, s2;
	pid_t pid;

	mkpair(&recycle_c, &recycle_s);
	bulk(recycle_c, recycle_s);
	bulk(recycle_s, recycle_c);
	pid = how == 0 ? fork()
		       : clone(recycle_child, stack + sizeof(stack), SIGCHLD, NULL);
	CHECK(pid >= 0, how == 0 ? "fork" : "clone");
	if (pid == 0)                   /* fork; clone's child runs recycle_child */
		_exit(recycle_child(NULL));
	close(recycle_s);
	/* New connections in the parent: each end takes a spare state if
	 * the parent kept one, and puts it back at its close. */
	for (int i = 0; i < 3; i++) {
		mkpair(&c2, &s2);
		bulk(c2, s2);
		close(c2);
		close(s2);
	}
	mkpair(&c2, &s2);
	exchange(recycle_c, 256 << 10, 13, 1);
	bulk(s2, c2);
	shutdown(recycle_c, SHUT_WR);
	CHECK(reap(pid) == 0, "child");
	close(recycle_c);
	close(c2);
	close(s2);
	return 0;
}

static int case_fork_recycle(void) { return recycle_how(0); }
static int case_clone_recycle(void) { return recycle_how(1); }

/* ---- exec -------------------------------------------------------------- */

#define EXEC_LEN (200 << 10)

/* The new image: the connection is on fd 0 (inetd style) with data in
 * flight; the fd named in argv[2] had CLOEXEC and must be gone. */
static int exec_child(int argc, char **argv)
{
	unsigned char *b = malloc(EXEC_LEN);

	CHECK(argc >= 3 && b, "exec-child args");
	CHECK(getenv("XWAY_EXEC_STATE") == NULL, "state variable visible to the app");
	int gone = atoi(argv[2]);
	CHECK(fcntl(gone, F_GETFD) < 0 && errno == EBADF, "CLOEXEC fd %d survived", gone);
	/* The CLOEXEC connection's channel must not leak in either: at most
	 * one ring memfd and one end-state memfd (fd 0's channel, under the
	 * shim) may be open here. */
	int rings = 0, states = 0, others = 0;
	for (int fd = 0; fd < 65536; fd++) {
		char p[64], l[256];
		snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
		ssize_t n = readlink(p, l, sizeof(l) - 1);
		if (n > 0) {
			l[n] = 0;
			if (!strncmp(l, "/memfd:xway-chan", 16))
				rings++;
			else if (!strncmp(l, "/memfd:xway-ep", 14))
				states++;
			else if (!strncmp(l, "/memfd:", 7))
				others++;
		}
	}
	CHECK(rings <= 1 && states <= 1 && others == 0, "memfds open after exec: %d "
	      "rings, %d end states, %d others (a CLOEXEC channel leaked)",
	      rings, states, others);
	read_all(0, b, EXEC_LEN);
	unsigned char *want = malloc(EXEC_LEN);
	CHECK(want, "malloc");
	fill(want, EXEC_LEN, 11);
	CHECK(memcmp(b, want, EXEC_LEN) == 0, "in-flight data after exec");
	write_all(1, b, EXEC_LEN);
	check_path(0, 2 * EXEC_LEN);
	expect_eof(0);
	free(b);
	free(want);
	return 0;
}

/* Check that an fd without CLOEXEC stays a working connection through
 * exec (moved to fd 0/1 like inetd), with data sent before the exec:
 * how 0 execve, 1 execv (inetd, sshd -R), 2 posix_spawn with dup2 file
 * actions. */
static int exec_how(int how)
{
	int c, s, c2, s2;
	unsigned char *a = malloc(EXEC_LEN), *b = malloc(EXEC_LEN);

	CHECK(a && b, "malloc");
	mkpair(&c, &s);
	mkpair(&c2, &s2);
	fill(a, EXEC_LEN, 11);
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		char arg[16], self[4096];
		ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
		CHECK(n > 0, "readlink");
		self[n] = 0;
		close(c);
		close(c2);
		/* A connection with CLOEXEC: must vanish. */
		CHECK(fcntl(s2, F_SETFD, FD_CLOEXEC) == 0, "cloexec");
		CHECK(dup2(s, 0) == 0 && dup2(s, 1) == 1, "dup2 0/1");
		close(s);
		snprintf(arg, sizeof(arg), "%d", s2);
		char *argv[] = { self, "exec-child", arg, NULL };
		/* Wait until the parent's bytes are in flight. */
		struct pollfd p = { 0, POLLIN, 0 };
		CHECK(poll(&p, 1, 20000) == 1, "data before exec");
		if (how == 0)
			execve(self, argv, environ);
		else if (how == 1)
			execv(self, argv);
		CHECK(how == 2, "exec");
		/* posix_spawn: the child gets the socket on 0/1 by file
		 * actions from a copy at another number. */
		int hi = dup(0);
		CHECK(hi >= 0, "dup");
		posix_spawn_file_actions_t fa;
		posix_spawn_file_actions_init(&fa);
		posix_spawn_file_actions_adddup2(&fa, hi, 0);
		posix_spawn_file_actions_adddup2(&fa, hi, 1);
		posix_spawn_file_actions_addclose(&fa, hi);
		pid_t sp;
		CHECK(posix_spawn(&sp, self, &fa, NULL, argv, environ) == 0, "posix_spawn");
		close(0);
		close(1);
		close(hi);
		_exit(reap(sp));
	}
	close(s);
	close(s2);
	write_all(c, a, EXEC_LEN);
	read_all(c, b, EXEC_LEN);
	CHECK(memcmp(a, b, EXEC_LEN) == 0, "echo through the new image");
	/* The CLOEXEC connection's only other copy is ours: EOF. */
	close(c2);
	shutdown(c, SHUT_WR);
	CHECK(reap(pid) == 0, "exec child");
	close(c);
	free(a);
	free(b);
	return 0;
}

/*
 * A fork child that execs with the connection while its parent keeps it
 * and goes on using it after the child exits (`git push git://`: send-pack
 * runs pack-objects with the socket as its stdout).  The new image reads
 * the server's first block, writes its own, and exits without a close;
 * the parent then reads and writes on.  Kernel TCP: nothing ends before
 * the last descriptor goes, and the stream stays one stream.  Before the
 * exec carried the end's state, the new image re-attached with an end of
 * its own: its exit was taken for the last close (the parent saw
 * ECONNRESET or EOF), and two ends' private indices in one ring would
 * have overwritten each other's bytes.
 */
#define SHX_LEN (64 << 10)

static int exec_shared_child(void)
{
	unsigned char *b = read_expect(0, SHX_LEN, 21,
				       "the server's first block, in the new image");

	fill(b, SHX_LEN, 22);
	write_all(1, b, SHX_LEN);
	_exit(0);     /* no close: the exit ends this holder */
}

static int case_exec_shared(void)
{
	int c, s;
	unsigned char *a = malloc(SHX_LEN), *b = malloc(SHX_LEN);

	CHECK(a && b, "malloc");
	mkpair(&c, &s);
	fill(a, SHX_LEN, 21);
	write_all(s, a, SHX_LEN);
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		char self[4096];
		ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
		CHECK(n > 0, "readlink");
		self[n] = 0;
		CHECK(dup2(c, 0) == 0 && dup2(c, 1) == 1, "dup2 0/1");
		close(c);
		close(s);
		char *argv[] = { self, "exec-shared-child", NULL };
		execv(self, argv);
		CHECK(0, "exec");
	}
	CHECK(reap(pid) == 0, "exec'ed child");
	/* The child's block, then the parent's own traffic both ways. */
	read_all(s, b, SHX_LEN);
	fill(a, SHX_LEN, 22);
	CHECK(memcmp(a, b, SHX_LEN) == 0, "the exec'ed child's block");
	fill(a, SHX_LEN, 23);
	write_all(s, a, SHX_LEN);
	read_all(c, b, SHX_LEN);
	CHECK(memcmp(a, b, SHX_LEN) == 0, "the parent's read after the child exited");
	fill(a, SHX_LEN, 24);
	write_all(c, a, SHX_LEN);
	read_all(s, b, SHX_LEN);
	CHECK(memcmp(a, b, SHX_LEN) == 0, "the parent's write after the child exited");
	check_path(c, 4 * SHX_LEN);
	CHECK(shutdown(c, SHUT_WR) == 0, "shutdown");
	expect_eof(s);
	CHECK(shutdown(s, SHUT_WR) == 0, "shutdown");
	expect_eof(c);
	close(c);
	close(s);
	free(a);
	free(b);
	return 0;
}

/*
 * system() and popen() with the connection inherited by the shell (a
 * server that dup2s the socket to 0/1 and runs system("sha256sum"), socat
 * SYSTEM:...,nofork).  glibc spawns /bin/sh through its internal
 * posix_spawn, which no preload sees: before the shim handled them, the
 * command read the kernel socket (nothing) while the peer's bytes sat in
 * the channel, and what it wrote never reached the peer.
 * how 0: system("cat") echoes (socket on 0 and 1); how 1: popen("cat",
 * "w") with the socket on 1, then the caller writes on after pclose.
 */
static int shell_how(int how)
{
	int c, s;
	unsigned char *a = malloc(EXEC_LEN), *b = malloc(EXEC_LEN);

	CHECK(a && b, "malloc");
	mkpair(&c, &s);
	fill(a, EXEC_LEN, 31);
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		close(c);
		if (how == 0) {
			CHECK(dup2(s, 0) == 0 && dup2(s, 1) == 1, "dup2 0/1");
			close(s);
			int rc = system("exec cat");
			CHECK(rc == 0, "system: %d", rc);
			_exit(0);
		}
		CHECK(dup2(s, 1) == 1, "dup2 1");
		close(s);
		FILE *p = popen("exec cat", "w");
		CHECK(p, "popen");
		CHECK(fwrite(a, 1, EXEC_LEN, p) == EXEC_LEN, "fwrite to the pipe");
		CHECK(pclose(p) == 0, "pclose");
		fill(a, EXEC_LEN, 32);
		write_all(1, a, EXEC_LEN);
		_exit(0);
	}
	close(s);
	if (how == 0) {
		write_all(c, a, EXEC_LEN);
		CHECK(shutdown(c, SHUT_WR) == 0, "shutdown");
		read_all(c, b, EXEC_LEN);
		CHECK(memcmp(a, b, EXEC_LEN) == 0, "echo through system(\"cat\")");
	} else {
		read_all(c, b, EXEC_LEN);
		CHECK(memcmp(a, b, EXEC_LEN) == 0, "popen(\"cat\", \"w\") output");
		fill(a, EXEC_LEN, 32);
		read_all(c, b, EXEC_LEN);
		CHECK(memcmp(a, b, EXEC_LEN) == 0, "the caller's write after pclose");
	}
	expect_eof(c);
	check_path(c, 2 * EXEC_LEN);
	CHECK(reap(pid) == 0, "child");
	close(c);
	free(a);
	free(b);
	return 0;
}

/*
 * POLLOUT as kernel TCP reports it: only once a third of the send buffer
 * is free (sk_stream_is_writeable), not at the first free byte.  Fill the
 * connection, let the peer read 4 KiB: not writable yet; the peer reads
 * everything: writable.  Applications that select() for writing and then
 * write a whole record blocking (openssl s_server/s_client, 16 KiB) hung
 * under the shim when both ends did so at once (session-7 sweep F-B).
 */
static int case_pollout_third(void)
{
	int c, s;
	static char buf[1 << 16];
	size_t put = 0, got = 0;

	mkpair(&c, &s);
	CHECK(fcntl(c, F_SETFL, O_NONBLOCK) == 0 && fcntl(s, F_SETFL, O_NONBLOCK) == 0,
	      "nonblocking");
	memset(buf, 'p', sizeof(buf));
	for (int i = 0; i < 100000; i++) {
		ssize_t w = send(c, buf, sizeof(buf), MSG_NOSIGNAL);
		if (w < 0) {
			CHECK(errno == EAGAIN, "send");
			break;
		}
		put += (size_t)w;
	}
	struct pollfd p = { c, POLLOUT, 0 };
	CHECK(poll(&p, 1, 0) == 0, "writable right after EAGAIN (0x%x)", p.revents);
	ssize_t r = recv(s, buf, 4096, 0);
	CHECK(r == 4096, "peer's first read: %zd", r);
	got += (size_t)r;
	CHECK(poll(&p, 1, 200) == 0, "writable after the peer read 4 KiB of %zu (0x%x)",
	      put, p.revents);
	/* The peer reads everything: writable within 10 s. */
	int64_t t0 = now_ms();
	int ok = 0;
	while (!ok && now_ms() - t0 < 10000) {
		while ((r = recv(s, buf, sizeof(buf), 0)) > 0)
			got += (size_t)r;
		CHECK(r < 0 && errno == EAGAIN, "peer read");
		ok = poll(&p, 1, 10) == 1 && (p.revents & POLLOUT);
	}
	CHECK(ok, "not writable after the peer read %zu of %zu bytes", got, put);
	check_path(c, put);
	close(c);
	close(s);
	return 0;
}

/*
 * exec of an image that will not load the shim (LD_PRELOAD removed from
 * its environment: openbsd-inetd launders LD_* for its services, `env -i`,
 * sudo) with the connection on fd 0/1.  The new program can only use the
 * kernel socket: the connection must leave the channel before the exec.
 * Before, the program read nothing (the peer's bytes sat in the ring) and
 * its output was lost (session-7 sweep F-C).
 */
#define NOSHIM_LEN (64 << 10)

/* exec this program as `self arg` with LD_PRELOAD taken out of the
 * environment (an image without the shim); returns only on failure. */
static void exec_self_noshim(const char *arg)
{
	char self[4096], *env[256], *argv[3];
	int n = 0;
	ssize_t l = readlink("/proc/self/exe", self, sizeof(self) - 1);

	CHECK(l > 0, "readlink");
	self[l] = 0;
	for (char **e = environ; *e && n < 255; e++)
		if (strncmp(*e, "LD_PRELOAD=", 11) != 0)
			env[n++] = *e;
	env[n] = NULL;
	argv[0] = self;
	argv[1] = (char *)arg;
	argv[2] = NULL;
	execve(self, argv, env);
	CHECK(0, "exec %s", self);
}

static int exec_noshim_child(void)
{
	alarm(30);                     /* a connection left in the ring hangs */
	CHECK(getenv("LD_PRELOAD") == NULL, "LD_PRELOAD still set");
	unsigned char *b = read_expect(0, NOSHIM_LEN, 41, "data read without the shim");

	write_all(1, b, NOSHIM_LEN);
	free(b);
	return 0;
}

static int case_exec_noshim(void)
{
	int c, s;
	unsigned char *a = malloc(NOSHIM_LEN), *b = malloc(NOSHIM_LEN);
	struct timeval tv = { 30, 0 };

	CHECK(a && b, "malloc");
	mkpair(&c, &s);
	CHECK(setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0, "SO_RCVTIMEO");
	/* On the channel first (accelerated mode checks it). */
	fill(a, 4096, 40);
	write_all(c, a, 4096);
	read_all(s, b, 4096);
	check_path(c, 4096);
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		CHECK(dup2(s, 0) == 0 && dup2(s, 1) == 1, "dup2 0/1");
		close(s);
		close(c);
		exec_self_noshim("exec-noshim-child");
	}
	close(s);
	fill(a, NOSHIM_LEN, 41);
	write_all(c, a, NOSHIM_LEN);
	read_all(c, b, NOSHIM_LEN);
	CHECK(memcmp(a, b, NOSHIM_LEN) == 0, "echo from the image without the shim");
	CHECK(reap(pid) == 0, "the image without the shim");
	expect_eof(c);
	close(c);
	free(a);
	free(b);
	return 0;
}

/*
 * The opposite case: an image without the shim that does NOT get the
 * connection.  glibc's internal dup2 (login_tty, forkpty) puts a pty over
 * the socket's fd 0 behind the shim's table, then the child execs login
 * with a clean environment (inetutils telnetd).  The stale table entry
 * must not count: the connection stays on the channel for its holders.
 */
static int case_exec_noshim_stale(void)
{
	int c, s, p[2];
	unsigned char *a = malloc(NOSHIM_LEN), *b = malloc(NOSHIM_LEN);

	CHECK(a && b, "malloc");
	mkpair(&c, &s);
	CHECK(pipe(p) == 0, "pipe");
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		CHECK(dup2(s, 0) == 0, "dup2");
		/* As glibc's login_tty does: no interposed call sees it. */
		CHECK(syscall(SYS_dup3, p[0], 0, 0) == 0, "raw dup3");
		close(s);
		close(c);
		int devnull = open("/dev/null", O_WRONLY);
		CHECK(devnull >= 0 && dup2(devnull, 1) == 1, "stdout");
		exec_self_noshim("list");                  /* prints, exits 0 */
	}
	close(p[0]);
	close(p[1]);
	CHECK(reap(pid) == 0, "the image without the shim");
	fill(a, NOSHIM_LEN, 42);
	write_all(c, a, NOSHIM_LEN);
	read_all(s, b, NOSHIM_LEN);
	CHECK(memcmp(a, b, NOSHIM_LEN) == 0, "data after the exec");
	check_path(c, NOSHIM_LEN);            /* still on the channel */
	close(c);
	close(s);
	free(a);
	free(b);
	return 0;
}

/*
 * epoll_ctl MOD/DEL of a connection on an epoll instance it was never
 * added to: the kernel says ENOENT.  The shim crashed (SIGSEGV) when the
 * instance held no accelerated record at all: libuv's uv_close deletes
 * such an fd (node cluster's primary died; session-7 sweep F-E).
 */
static int case_epoll_del_unknown(void)
{
	int c, s, ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN };
	char b[4096];

	CHECK(ep >= 0, "epoll_create1");
	mkpair(&c, &s);
	write_all(c, "x", 1);
	read_all(s, b, 1);                  /* settled: on the channel */
	errno = 0;
	CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, s, NULL) == -1 && errno == ENOENT,
	      "DEL of a never-added fd: want ENOENT");
	errno = 0;
	CHECK(epoll_ctl(ep, EPOLL_CTL_MOD, s, &ev) == -1 && errno == ENOENT,
	      "MOD of a never-added fd: want ENOENT");
	errno = 0;
	CHECK(epoll_ctl(c, EPOLL_CTL_DEL, s, NULL) == -1 && errno == EINVAL,
	      "DEL on a non-epoll fd: want EINVAL");
	fill((unsigned char *)b, sizeof(b), 43);
	write_all(s, b, sizeof(b));
	read_all(c, b, sizeof(b));
	check_path(c, sizeof(b) + 1);
	close(ep);
	close(c);
	close(s);
	return 0;
}

static int case_system(void) { return shell_how(0); }
static int case_popen(void) { return shell_how(1); }

static int case_exec(void) { return exec_how(0); }
static int case_execv(void) { return exec_how(1); }
static int case_spawn(void) { return exec_how(2); }

/* ---- descriptors ------------------------------------------------------- */

/* Check that a daemon closing every fd it does not know (close_range,
 * closefrom, a close loop, dup2 onto high numbers is not done) keeps
 * its connection working. */
static int case_closerange(void)
{
	int c, s;

	mkpair(&c, &s);
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		struct rlimit rl;
		CHECK(dup2(s, 3) == 3, "dup2 3");
		close(s);
		close(c);
		CHECK(close_range(4, ~0U, 0) == 0, "close_range");
		closefrom(4);
		getrlimit(RLIMIT_NOFILE, &rl);
		for (long fd = 4; fd < (long)rl.rlim_cur && fd < 65536; fd++)
			close((int)fd);
		exchange(3, 512 << 10, 9, 0);
		check_path(3, 1 << 20);
		_exit(0);
	}
	close(s);
	exchange(c, 512 << 10, 9, 1);
	CHECK(reap(pid) == 0, "child");
	close(c);
	return 0;
}

/* ---- SCM_RIGHTS ---------------------------------------------------------- */

static void send_fd(int u, int fd)
{
	union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int))]; } ctl;
	struct iovec iov = { "F", 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
			    .msg_controllen = sizeof(ctl.b) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);

	memset(&ctl, 0, sizeof(ctl));
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	CHECK(sendmsg(u, &m, 0) == 1, "sendmsg SCM_RIGHTS");
}

/* Exactly one fd, in a control buffer sized for one (as apps do). */
static int recv_fd(int u)
{
	union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int))]; } ctl;
	char c;
	struct iovec iov = { &c, 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
			    .msg_controllen = sizeof(ctl.b) };
	struct cmsghdr *cm;
	int fd;

	CHECK(recvmsg(u, &m, 0) == 1 && c == 'F', "recvmsg");
	CHECK(!(m.msg_flags & MSG_CTRUNC), "MSG_CTRUNC on a one-fd message");
	cm = CMSG_FIRSTHDR(&m);
	CHECK(cm && cm->cmsg_type == SCM_RIGHTS && cm->cmsg_len == CMSG_LEN(sizeof(int)),
	      "one SCM_RIGHTS fd");
	CHECK(CMSG_NXTHDR(&m, cm) == NULL, "nothing after it");
	memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	return fd;
}

/* Check that a connection passed by SCM_RIGHTS keeps working in the
 * receiving process after the sender closed its copy (vsftpd's privileged
 * parent hands data sockets to its session). */
static int case_scm(void)
{
	int c, s, u[2];

	mkpair(&c, &s);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, u) == 0, "socketpair");
	write_all(c, "early", 5);               /* in flight before the pass */
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		char b[5];
		close(u[0]);
		close(c);
		close(s);                       /* only the passed copy remains */
		int fd = recv_fd(u[1]);
		CHECK(fd >= 0, "received fd");
		read_all(fd, b, 5);
		CHECK(memcmp(b, "early", 5) == 0, "data sent before the pass");
		exchange(fd, 512 << 10, 17, 0);
		check_path(fd, 1 << 20);
		expect_eof(fd);
		_exit(0);
	}
	close(u[1]);
	send_fd(u[0], s);
	close(s);
	exchange(c, 512 << 10, 17, 1);
	shutdown(c, SHUT_WR);
	CHECK(reap(pid) == 0, "receiver");
	close(c);
	close(u[0]);
	return 0;
}

/* ---- seccomp ----------------------------------------------------------- */

__attribute__((unused)) static void on_sigsys(int sig, siginfo_t *si, void *uc)
{
	char m[64];
	int n = snprintf(m, sizeof(m), "seccomp: forbidden syscall %d\n", si->si_syscall);

	(void)sig;
	(void)uc;
	if (write(2, m, (size_t)n) < 0)
		_exit(3);
	_exit(3);
}

#define ALLOW(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), \
		  BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)

/* Check that an established connection works under a seccomp filter like
 * sshd's pre-auth sandbox (read/write/poll/futex class; getsockname,
 * socket, connect, eventfd, memfd_create kill the process). */
static int case_seccomp(void)
{
#if defined(__SANITIZE_ADDRESS__) || defined(XWAY_SANITIZED)
	fprintf(stderr, "SKIP seccomp: the sanitizer runtime needs calls the filter kills\n");
	return 77;
#else
	int c, s;

	mkpair(&c, &s);
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		struct sock_filter f[] = {
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
			ALLOW(SYS_read), ALLOW(SYS_write), ALLOW(SYS_readv), ALLOW(SYS_writev),
			ALLOW(SYS_close), ALLOW(SYS_exit), ALLOW(SYS_exit_group),
			ALLOW(SYS_brk), ALLOW(SYS_mmap), ALLOW(SYS_munmap), ALLOW(SYS_mremap),
			ALLOW(SYS_madvise), ALLOW(SYS_futex), ALLOW(SYS_poll), ALLOW(SYS_ppoll),
			ALLOW(SYS_select), ALLOW(SYS_pselect6), ALLOW(SYS_clock_gettime),
			ALLOW(SYS_clock_nanosleep), ALLOW(SYS_nanosleep), ALLOW(SYS_gettimeofday),
			ALLOW(SYS_getpid), ALLOW(SYS_getrandom), ALLOW(SYS_rt_sigprocmask),
			ALLOW(SYS_rt_sigreturn), ALLOW(SYS_shutdown), ALLOW(SYS_sched_yield),
			ALLOW(SYS_restart_syscall), ALLOW(SYS_fstat), ALLOW(SYS_newfstatat),
			ALLOW(SYS_getcpu),
			BPF_STMT(BPF_RET | BPF_K, getenv("LC_SECCOMP_TRAP") ?
				 SECCOMP_RET_TRAP : SECCOMP_RET_KILL_PROCESS),
		};
		if (getenv("LC_SECCOMP_TRAP")) {
			/* Debugging aid: name the forbidden call, then die. */
			struct sigaction sa;
			memset(&sa, 0, sizeof(sa));
			sa.sa_sigaction = on_sigsys;
			sa.sa_flags = SA_SIGINFO;
			sigaction(SIGSYS, &sa, NULL);
		}
		struct sock_fprog prog = { sizeof(f) / sizeof(f[0]), f };
		close(c);
		/* sshd's sandbox also cuts RLIMIT_NOFILE to 1: poll() of one
		 * fd must still work. */
		struct rlimit one = { 1, 1 };
		CHECK(setrlimit(RLIMIT_NOFILE, &one) == 0, "RLIMIT_NOFILE 1");
		CHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, "no_new_privs");
		CHECK(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0, "seccomp");
		CHECK(pollone(s, POLLIN, 20000) == POLLIN, "poll in the sandbox");
		exchange(s, 1 << 20, 13, 0);
		expect_eof(s);
		/* Like sshd's pre-auth child: exit, no explicit close (the
		 * shim's close-time REPORT reads TCP_INFO: see README). */
		_exit(0);
	}
	close(s);
	exchange(c, 1 << 20, 13, 1);
	check_path(c, 2 << 20);
	shutdown(c, SHUT_WR);
	int rc = reap(pid);
	CHECK(rc == 0, "sandboxed child exit %d (%d = killed by the filter)", rc,
	      128 + SIGSYS);
	close(c);
	return 0;
#endif
}

/* Check that poll and select work with RLIMIT_NOFILE cut to 1 after the
 * connection exists (the kernel refuses a poll of more fds than that). */
static int case_rlimit1(void)
{
	int c, s;

	mkpair(&c, &s);
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		struct rlimit one = { 1, 1 };
		close(c);
		CHECK(setrlimit(RLIMIT_NOFILE, &one) == 0, "RLIMIT_NOFILE 1");
		CHECK(pollone(s, POLLIN, 20000) == POLLIN, "poll with NOFILE 1");
		exchange(s, 256 << 10, 19, 0);
		CHECK(pollone(s, POLLIN | POLLRDHUP, 20000) & POLLRDHUP, "EOF seen by poll");
		expect_eof(s);
		_exit(0);
	}
	close(s);
	usleep(50000);
	exchange(c, 256 << 10, 19, 1);
	check_path(c, 512 << 10);
	shutdown(c, SHUT_WR);
	CHECK(reap(pid) == 0, "child");
	close(c);
	return 0;
}

/* Check that blocking reads and writes work with RLIMIT_NOFILE 0 (vsftpd's
 * unprivileged session): no poll of any fd is allowed then. */
static int case_nofile0(void)
{
	int c, s;

	mkpair(&c, &s);
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		struct rlimit zero = { 0, 0 };
		char b[4];
		close(c);
		CHECK(setrlimit(RLIMIT_NOFILE, &zero) == 0, "RLIMIT_NOFILE 0");
		CHECK(recv(s, b, 4, MSG_PEEK) == 4 && memcmp(b, "peek", 4) == 0, "peek waits");
		read_all(s, b, 4);
		exchange(s, 256 << 10, 23, 0);
		expect_eof(s);
		_exit(0);
	}
	close(s);
	usleep(100000);                 /* the child blocks first */
	write_all(c, "peek", 4);
	exchange(c, 256 << 10, 23, 1);
	check_path(c, 512 << 10);
	shutdown(c, SHUT_WR);
	CHECK(reap(pid) == 0, "child");
	close(c);
	return 0;
}

/* ---- threads ----------------------------------------------------------- */

#define DUPLEX_LEN (16 << 20)
static int duplex_fd;

static void *duplex_writer(void *arg)
{
	unsigned char *a = malloc(1 << 16);

	(void)arg;
	for (size_t off = 0; off < DUPLEX_LEN; off += 1 << 16) {
		fill(a, 1 << 16, (unsigned)(off >> 16));
		write_all(duplex_fd, a, 1 << 16);
	}
	shutdown(duplex_fd, SHUT_WR);
	free(a);
	return NULL;
}

/* Check full-duplex use from two threads (a writer and a reader at once)
 * against an echoing peer process. */
static int case_duplex(void)
{
	int c, s;
	pthread_t t;
	unsigned char *a = malloc(1 << 16), *b = malloc(1 << 16);

	mkpair(&c, &s);
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		char buf[65536];
		ssize_t n;
		close(c);
		while ((n = read(s, buf, sizeof(buf))) > 0)
			write_all(s, buf, (size_t)n);
		CHECK(n == 0, "echo read");
		_exit(0);
	}
	close(s);
	duplex_fd = c;
	CHECK(pthread_create(&t, NULL, duplex_writer, NULL) == 0, "thread");
	for (size_t off = 0; off < DUPLEX_LEN; off += 1 << 16) {
		fill(a, 1 << 16, (unsigned)(off >> 16));
		read_all(c, b, 1 << 16);
		CHECK(memcmp(a, b, 1 << 16) == 0, "duplex data at %zu", off);
	}
	pthread_join(t, NULL);
	expect_eof(c);
	check_path(c, 2 * (uint64_t)DUPLEX_LEN);
	CHECK(reap(pid) == 0, "echo");
	close(c);
	free(a);
	free(b);
	return 0;
}

static pthread_mutex_t send_lock = PTHREAD_MUTEX_INITIALIZER;
static int threads_fd;

static void *locked_sender(void *arg)
{
	uint32_t who = (uint32_t)(uintptr_t)arg;
	struct rec r;

	for (int i = 0; i < 5000; i++) {
		memset(&r, 0, sizeof(r));
		r.who = who;
		r.seq = (uint32_t)i;
		fill(r.pad, sizeof(r.pad), who * 100000 + (unsigned)i);
		r.sum = who * 31 + (uint32_t)i * 7 + r.pad[0];
		pthread_mutex_lock(&send_lock);
		write_all(threads_fd, &r, sizeof(r));
		pthread_mutex_unlock(&send_lock);
	}
	return NULL;
}

/* Check that several threads sending with their own lock around each
 * record deliver every record whole and in order per thread. */
static int case_threads(void)
{
	int c, s;
	pthread_t t[4];
	uint32_t next[4] = { 0 };

	mkpair(&c, &s);
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		close(c);
		for (int i = 0; i < 4 * 5000; i++) {
			struct rec r;
			unsigned char pad[sizeof(r.pad)];
			read_all(s, &r, sizeof(r));
			CHECK(r.who < 4 && r.seq == next[r.who], "record %d: who %u seq %u",
			      i, r.who, r.seq);
			fill(pad, sizeof(pad), r.who * 100000 + r.seq);
			CHECK(memcmp(pad, r.pad, sizeof(pad)) == 0, "record %d corrupt", i);
			next[r.who]++;
		}
		expect_eof(s);
		check_path(s, 4 * 5000 * REC);
		_exit(0);
	}
	close(s);
	threads_fd = c;
	for (uintptr_t i = 0; i < 4; i++)
		CHECK(pthread_create(&t[i], NULL, locked_sender, (void *)i) == 0, "thread");
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	shutdown(c, SHUT_WR);
	CHECK(reap(pid) == 0, "reader");
	close(c);
	return 0;
}

#define BLOCKED_BYTES 65536

static _Atomic int blocked_done;
static ssize_t blocked_ret;
static unsigned char blocked_buf[BLOCKED_BYTES];

static void *blocked_reader(void *arg)
{
	blocked_ret = recv((int)(intptr_t)arg, blocked_buf, sizeof(blocked_buf),
			   MSG_WAITALL);
	atomic_store(&blocked_done, 1);
	return NULL;
}

/* close() in one thread while another is blocked in recv on the same
 * socket, as Linux does it: the close does not wake the recv, the fd
 * number is free at once, the peer sees no EOF while the recv holds the
 * socket, the recv then gets what the peer sends after the close (on the
 * channel when accelerated), and the peer sees EOF once the recv returned
 * (the last reference is gone).  The socket is also in an epoll set: its
 * registration must not keep the socket alive after that. */
static int close_blocked(int how)
{
	static unsigned char want[BLOCKED_BYTES];
	struct epoll_event ev = { .events = EPOLLIN };
	struct pollfd p;
	int c, s, ep;
	pthread_t t;

	mkpair(&c, &s);
	ep = epoll_create1(0);
	CHECK(ep >= 0, "epoll_create1");
	ev.data.fd = c;
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) == 0, "epoll ADD");
	CHECK(pthread_create(&t, NULL, blocked_reader, (void *)(intptr_t)c) == 0, "thread");
	usleep(100000);
	pid_t kid = -1;
	int hold[2] = { -1, -1 };
	if (how == 0 || how == 2) {
		CHECK(close(c) == 0, "close");
		if (how == 2) {
			/* A child forked now does not hold the closed socket:
			 * it must not delay the peer's EOF below. */
			CHECK(pipe(hold) == 0, "pipe");
			kid = fork();
			CHECK(kid >= 0, "fork");
			if (kid == 0) {
				char b;
				close(hold[1]);
				alarm(60);
				while (read(hold[0], &b, 1) < 0 && errno == EINTR)
					;
				_exit(0);
			}
			close(hold[0]);
		}
		CHECK(fcntl(c, F_GETFD) == -1 && errno == EBADF,
		      "fd number still open after close");
	} else {
		/* dup2 over it closes it the same way. */
		int n = open("/dev/null", O_RDONLY | O_CLOEXEC);
		CHECK(n >= 0 && dup2(n, c) == c, "dup2 over the socket");
		close(n);
	}
	/* Negative checks: a wrong wake-up or EOF is a real failure, a
	 * slow machine can only make them pass. */
	p = (struct pollfd){ .fd = s, .events = POLLIN | POLLRDHUP };
	CHECK(poll(&p, 1, 300) == 0, "peer saw an event (revents %#x) while a recv "
	      "still holds the socket", p.revents);
	CHECK(!atomic_load(&blocked_done), "close() woke the blocked recv (ret %zd)",
	      blocked_ret);
	fill(want, sizeof(want), 7);
	write_all(s, want, sizeof(want));
	for (int i = 0; i < 600 && !atomic_load(&blocked_done); i++)
		usleep(50000);
	CHECK(atomic_load(&blocked_done), "recv stays blocked after data");
	pthread_join(t, NULL);
	CHECK(blocked_ret == BLOCKED_BYTES && !memcmp(blocked_buf, want, sizeof(want)),
	      "recv after close: %zd bytes or wrong data", blocked_ret);
	/* The recv was the last reference: the peer now sees EOF. */
	p = (struct pollfd){ .fd = s, .events = POLLIN };
	CHECK(poll(&p, 1, 30000) == 1, "peer sees no EOF after the last reference");
	expect_eof(s);
	check_path(s, BLOCKED_BYTES);
	close(s);
	close(ep);
	if (how == 1)
		close(c);
	if (kid > 0) {
		close(hold[1]);
		CHECK(reap(kid) == 0, "child");
	}
	return 0;
}

static int case_close_blocked(void) { return close_blocked(0); }
static int case_dup2_blocked(void) { return close_blocked(1); }
static int case_close_blocked_fork(void) { return close_blocked(2); }

#define BLOCKED_SEND (8 << 20)

static ssize_t blocked_sent;
static _Atomic int blocked_send_done;

static void *blocked_sender(void *arg)
{
	unsigned char *b = malloc(BLOCKED_SEND);

	if (!b)
		return NULL;
	fill(b, BLOCKED_SEND, 11);
	/* One blocking send larger than any ring and socket buffer: it
	 * blocks until the peer reads. */
	blocked_sent = send((int)(intptr_t)arg, b, BLOCKED_SEND, 0);
	atomic_store(&blocked_send_done, 1);
	free(b);
	return NULL;
}

/* The same with a send blocked on a full buffer: the close neither wakes
 * nor fails it, the peer reads every byte in order, then sees EOF. */
static int case_close_blocked_send(void)
{
	unsigned char *want = malloc(BLOCKED_SEND), *got = malloc(BLOCKED_SEND);
	struct pollfd p;
	int c, s;
	pthread_t t;

	CHECK(want && got, "malloc");
	fill(want, BLOCKED_SEND, 11);
	mkpair(&c, &s);
	CHECK(pthread_create(&t, NULL, blocked_sender, (void *)(intptr_t)c) == 0, "thread");
	usleep(200000);
	CHECK(close(c) == 0, "close");
	CHECK(fcntl(c, F_GETFD) == -1 && errno == EBADF, "fd number still open after close");
	usleep(200000);
	CHECK(!atomic_load(&blocked_send_done), "close() ended the blocked send (%zd)",
	      blocked_sent);
	read_all(s, got, BLOCKED_SEND);
	CHECK(!memcmp(got, want, BLOCKED_SEND), "bytes differ");
	pthread_join(t, NULL);
	CHECK(blocked_sent == BLOCKED_SEND, "send after close returned %zd", blocked_sent);
	p = (struct pollfd){ .fd = s, .events = POLLIN };
	CHECK(poll(&p, 1, 30000) == 1, "peer sees no EOF after the last reference");
	expect_eof(s);
	check_path(s, BLOCKED_SEND);
	close(s);
	free(want);
	free(got);
	return 0;
}

/* ---- 1000 connections -------------------------------------------------- */

#define NCONN 1000
#define CONN_BYTES 8192

/* Server: epoll (LT or ET) echo until every connection ended; the idle
 * variant first measures its own CPU over 3 s with all connections idle. */
static void echo_fd(int ep, int fd, int *open_conns)
{
	char buf[65536];

	for (;;) {        /* until EAGAIN: required by ET, fine for LT */
		ssize_t r = read(fd, buf, sizeof(buf));
		if (r > 0) {
			size_t off = 0;
			while (off < (size_t)r) {
				ssize_t w = write(fd, buf + off, (size_t)r - off);
				if (w < 0 && errno == EAGAIN) {
					struct pollfd p = { fd, POLLOUT, 0 };
					CHECK(poll(&p, 1, 30000) == 1, "echo POLLOUT");
					continue;
				}
				CHECK(w > 0, "echo write");
				off += (size_t)w;
			}
			continue;
		}
		if (r == 0) {
			CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL) == 0, "DEL");
			close(fd);
			(*open_conns)--;
		} else {
			CHECK(errno == EAGAIN, "echo read");
		}
		return;
	}
}

/* Server: one epoll (LT or ET) for the listener and every connection,
 * echo until all NCONN ended.  The idle variant first measures its own
 * CPU over 3 s with every connection accepted and idle. */
static void epoll_server(int l, int et, int idle, int ready_fd)
{
	int ep = epoll_create1(0), open_conns = 0, accepted = 0, measured = !idle;
	struct epoll_event ev, out[256];

	CHECK(ep >= 0, "epoll_create1");
	CHECK(fcntl(l, F_SETFL, O_NONBLOCK) == 0, "nonblocking listener");
	ev.events = EPOLLIN | (et ? EPOLLET : 0);
	ev.data.fd = l;
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev) == 0, "ADD listener");
	for (long rounds = 0; (accepted < NCONN || open_conns > 0) && rounds < 10000000;
	     rounds++) {
		if (!measured && accepted == NCONN) {
			struct rusage r0, r1;
			write_all(ready_fd, "i", 1);
			getrusage(RUSAGE_SELF, &r0);
			int64_t t0 = now_ms();
			while (now_ms() - t0 < 3000) {
				int n = ewait(ep, out, 256, 1000);
				CHECK(n == 0, "idle server got %d events", n);
			}
			getrusage(RUSAGE_SELF, &r1);
			long us = (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) * 1000000L +
				  (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) +
				  (r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) * 1000000L +
				  (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec);
			fprintf(stderr, "idle: %d connections, %ld us CPU in 3 s\n", NCONN, us);
			CHECK(us < 30000, "idle server used %ld us of CPU in 3 s (>= 1%%)", us);
			write_all(ready_fd, "d", 1);
			measured = 1;
		}
		int n = ewait(ep, out, 256, 30000);
		CHECK(n > 0, "server wait (%d accepted, %d open)", accepted, open_conns);
		for (int i = 0; i < n; i++) {
			if (out[i].data.fd != l) {
				echo_fd(ep, out[i].data.fd, &open_conns);
				continue;
			}
			for (;;) {
				int fd = accept4(l, NULL, NULL, SOCK_NONBLOCK);
				if (fd < 0) {
					CHECK(errno == EAGAIN, "accept4");
					break;
				}
				ev.events = EPOLLIN | (et ? EPOLLET : 0);
				ev.data.fd = fd;
				CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0, "ADD conn");
				accepted++;
				open_conns++;
			}
		}
	}
	close(ep);
}

static int conn_many(int et, int idle)
{
	int port, l, sync[2];
	char b;

	/* 1000 app fds, plus 3 channel fds each at high numbers. */
	if (raise_nofile(65536) < 8192) {
		fprintf(stderr, "SKIP: RLIMIT_NOFILE hard limit below 8192\n");
		return 77;
	}
	l = listener(&port);
	CHECK(pipe(sync) == 0, "pipe");
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		close(sync[0]);
		epoll_server(l, et, idle, sync[1]);
		_exit(0);
	}
	close(l);
	close(sync[1]);
	static int fds[NCONN];
	unsigned char *a = malloc(CONN_BYTES), *bb = malloc(CONN_BYTES);
	for (int i = 0; i < NCONN; i++)
		fds[i] = connect_to(port);
	if (idle) {
		read_all(sync[0], &b, 1);       /* server measuring */
		read_all(sync[0], &b, 1);       /* done */
	}
	unsigned seed = (unsigned)time(NULL);
	fprintf(stderr, "seed %u\n", seed);
	/* Each connection: send, then read the echo back. */
	for (int i = 0; i < NCONN; i++) {
		fill(a, CONN_BYTES, seed + (unsigned)i);
		write_all(fds[i], a, CONN_BYTES);
	}
	for (int i = 0; i < NCONN; i++) {
		fill(a, CONN_BYTES, seed + (unsigned)i);
		read_all(fds[i], bb, CONN_BYTES);
		CHECK(memcmp(a, bb, CONN_BYTES) == 0, "conn %d echo (seed %u)", i, seed);
	}
	check_path(fds[0], 2 * CONN_BYTES);
	check_path(fds[NCONN - 1], 2 * CONN_BYTES);
	for (int i = 0; i < NCONN; i++)
		close(fds[i]);
	CHECK(reap(pid) == 0, "server");
	free(a);
	free(bb);
	return 0;
}

static int case_epoll1000_lt(void) { return conn_many(0, 0); }
static int case_epoll1000_et(void) { return conn_many(1, 0); }
static int case_idle1000(void) { return conn_many(0, 1); }

/* ---- table ------------------------------------------------------------- */

/* ---- two pollers of one socket ------------------------------------------ */

#define TWO_ROUNDS 1000
#define TWO_TMO_MS 20000

static pthread_barrier_t two_bar;
static int two_fd, two_ep[2], two_epoll;
static int two_ret[2];
static short two_rev[2];

static void *two_poller(void *arg)
{
	int me = (int)(intptr_t)arg;

	for (int i = 0; i < TWO_ROUNDS; i++) {
		pthread_barrier_wait(&two_bar);
		if (two_epoll > me) {      /* 2: both epoll, 1: thread 0 only */
			struct epoll_event ev = { 0 };
			two_ret[me] = epoll_wait(two_ep[me], &ev, 1, TWO_TMO_MS);
			two_rev[me] = (short)ev.events;
		} else {
			struct pollfd p = { .fd = two_fd, .events = POLLIN };
			two_ret[me] = poll(&p, 1, TWO_TMO_MS);
			two_rev[me] = p.revents;
		}
		pthread_barrier_wait(&two_bar);
	}
	return NULL;
}

/* Two threads wait for input on the same socket (poll, epoll_wait on an
 * epoll fd each, or one of each), the peer sends one byte: on Linux BOTH wake, whatever the
 * order of arrival and sleep.  Bounded: TWO_ROUNDS rounds, each poll
 * bounded by TWO_TMO_MS; a poller that returns 0 while the byte sits
 * unread lost its wake-up (a real failure: a loaded machine only makes
 * the arrival come later, never lets a poll time out with data there). */
static int two_pollers(int use_epoll)
{
	pthread_t t[2];
	int c, s;

	mkpair(&c, &s);
	two_fd = c;
	two_epoll = use_epoll;
	for (int k = 0; k < use_epoll; k++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.fd = c };
		two_ep[k] = epoll_create1(0);
		CHECK(two_ep[k] >= 0, "epoll_create1");
		CHECK(epoll_ctl(two_ep[k], EPOLL_CTL_ADD, c, &ev) == 0, "epoll ADD");
	}
	CHECK(pthread_barrier_init(&two_bar, NULL, 3) == 0, "barrier");
	for (int k = 0; k < 2; k++)
		CHECK(pthread_create(&t[k], NULL, two_poller, (void *)(intptr_t)k) == 0,
		      "thread");
	for (int i = 0; i < TWO_ROUNDS; i++) {
		char b = (char)i, got;
		pthread_barrier_wait(&two_bar);
		/* Vary the arrival against the pollers' going to sleep. */
		if (i % 4 == 1)
			sched_yield();
		else if (i % 4 == 2)
			usleep(50);
		else if (i % 4 == 3)
			usleep(500);
		write_all(s, &b, 1);
		pthread_barrier_wait(&two_bar);
		for (int k = 0; k < 2; k++)
			CHECK(two_ret[k] == 1 && (two_rev[k] & POLLIN),
			      "round %d: poller %d returned %d (revents %#x) with a byte "
			      "sent: lost wake-up", i, k, two_ret[k], (unsigned)two_rev[k]);
		read_all(c, &got, 1);
		CHECK(got == b, "round %d: byte %d, want %d", i, got, b);
	}
	for (int k = 0; k < 2; k++)
		pthread_join(t[k], NULL);
	pthread_barrier_destroy(&two_bar);
	check_path(c, TWO_ROUNDS);
	for (int k = 0; k < use_epoll; k++)
		close(two_ep[k]);
	close(c);
	close(s);
	return 0;
}

static int case_poll_two(void)  { return two_pollers(0); }
static int case_epoll_two(void) { return two_pollers(2); }
static int case_poll_epoll(void) { return two_pollers(1); }

/* ---- closing an epoll fd ------------------------------------------------ */

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	CHECK(d != NULL, "opendir /proc/self/fd");
	while (readdir(d) && n < 1 << 20)
		n++;
	closedir(d);
	return n;
}

/* Closing an epoll fd (close, dup2 over it, close_range) that holds a
 * connection leaves nothing open behind: once the connection is closed
 * too, the process has exactly the descriptors it had before (kernel: the
 * epoll file and the socket go; shim: also the channel's fds and the
 * epoll emulation's helpers, which a record left behind would keep). */
static int case_epoll_close(void)
{
	int c, s, n0;

	/* Warm-up: whatever stays open for good (the shim's broker link)
	 * is open before we count. */
	mkpair(&c, &s);
	close(c);
	close(s);
	n0 = count_fds();
	for (int how = 0; how < 3; how++) {
		int ep[2];

		mkpair(&c, &s);
		for (int k = 0; k < 2; k++) {
			struct epoll_event ev = { .events = EPOLLIN | (k ? EPOLLET : 0),
						  .data.fd = c };
			ep[k] = epoll_create1(0);
			CHECK(ep[k] >= 0, "epoll_create1");
			CHECK(epoll_ctl(ep[k], EPOLL_CTL_ADD, c, &ev) == 0, "epoll ADD");
		}
		write_all(s, "x", 1);
		for (int k = 0; k < 2; k++) {
			struct epoll_event ev;
			CHECK(epoll_wait(ep[k], &ev, 1, 20000) == 1 && ev.data.fd == c,
			      "epoll %d: no event for the byte", k);
		}
		for (int k = 0; k < 2; k++) {
			if (how == 0) {
				CHECK(close(ep[k]) == 0, "close epoll fd");
			} else if (how == 1) {
				int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
				CHECK(devnull >= 0, "open /dev/null");
				CHECK(dup2(devnull, ep[k]) == ep[k], "dup2 over epoll fd");
				close(devnull);
				close(ep[k]);
			} else {
				CHECK(close_range((unsigned)ep[k], (unsigned)ep[k], 0) == 0,
				      "close_range");
			}
		}
		{
			char b;
			read_all(c, &b, 1);
			CHECK(b == 'x', "byte");
		}
		check_path(c, 0);
		close(c);
		close(s);
		CHECK(count_fds() == n0, "way %d: %d descriptors open after closing the "
		      "epoll fds and the connection, %d before", how, count_fds(), n0);
	}
	return 0;
}

/* ---- SCM_RIGHTS to a process without the shim ----------------------------- */

#define NOSHIM_WARN "was not taken by a process running libxway.so"
#define REVERT_LOG  "reverts to plain TCP"

/* The receiver, exec'ed without LD_PRELOAD: takes the first fd of the
 * message (a shimmed sender may have added its own) and reads what the
 * peer sent after the pass (accelerated, the connection reverted to TCP
 * for it). */
static int scm_plain_recv(int u)
{
	union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int) * 16)]; } ctl;
	char c, b[5];
	struct iovec iov = { &c, 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
			    .msg_controllen = sizeof(ctl.b) };
	struct cmsghdr *cm;
	int fd;

	CHECK(recvmsg(u, &m, 0) == 1 && c == 'F', "recvmsg");
	cm = CMSG_FIRSTHDR(&m);
	CHECK(cm && cm->cmsg_type == SCM_RIGHTS, "SCM_RIGHTS");
	memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	read_all(fd, b, 5);
	CHECK(memcmp(b, "hello", 5) == 0, "bytes sent after the pass");
	return 0;
}

/* Start `xway-lc ROLE ARGS...` without LD_PRELOAD (the rest of the
 * environment kept). */
static pid_t spawn_noshim(char *const argv[], int keep1, int keep2)
{
	pid_t pid = fork();

	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		char *env[256];
		int ne = 0;
		for (int fd = 3; fd < 64; fd++)
			if (fd != keep1 && fd != keep2)
				close(fd);
		for (char **ev = environ; *ev && ne < 255; ev++)
			if (strncmp(*ev, "LD_PRELOAD=", 11))
				env[ne++] = *ev;
		env[ne] = NULL;
		execve("/proc/self/exe", argv, env);
		_exit(126);
	}
	return pid;
}

/* Our stderr into a memfd (the shim logs there); returns it, *saved the
 * original.  Restore with log_end before any CHECK can fail. */
static int log_begin(int *saved)
{
	int log = (int)syscall(SYS_memfd_create, "lc-log", 0);

	CHECK(log >= 0, "memfd_create");
	*saved = dup(2);
	CHECK(*saved >= 0 && dup2(log, 2) == 2, "stderr to the log");
	return log;
}

static void log_end(int log, int saved, char *buf, size_t len)
{
	ssize_t n;

	dup2(saved, 2);
	close(saved);
	n = pread(log, buf, len - 1, 0);
	CHECK(n >= 0, "read the log");
	buf[n] = 0;
	close(log);
}

/* A connection passed by SCM_RIGHTS to a process WITHOUT the shim: the
 * receiver reads what the peer sends after the pass.  Accelerated, the
 * sender's shim must also say that nobody with the shim took it and that
 * the connection reverted to TCP (on our stderr). */
static int case_scm_noshim(void)
{
	const char *e = getenv("XWAY_TEST_EXPECT");
	int accel = e && !strcmp(e, "accel");
	int c, s, u[2], log, saved;
	char buf[8192], us[16];

	mkpair(&c, &s);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, u) == 0, "socketpair");
	snprintf(us, sizeof(us), "%d", u[1]);
	char *argv[] = { "xway-lc", "scm-plain-recv", us, NULL };
	pid_t pid = spawn_noshim(argv, u[1], -1);
	close(u[1]);
	log = log_begin(&saved);
	send_fd(u[0], s);
	close(s);
	write_all(c, "hello", 5);
	int rc = reap(pid);
	log_end(log, saved, buf, sizeof(buf));
	CHECK(rc == 0, "receiver without the shim");
	if (accel)
		CHECK(strstr(buf, NOSHIM_WARN) && strstr(buf, REVERT_LOG), "the sender "
		      "did not log the hand-over nobody took and its revert; stderr: %s",
		      buf);
	else
		CHECK(strstr(buf, NOSHIM_WARN) == NULL, "warning without a hand-over: %s",
		      buf);
	close(c);
	close(u[0]);
	return 0;
}

/* The same, but the bytes were written BEFORE the pass and the writer
 * never calls into the connection again before its close: the sender's
 * revert leaves them in a ring nobody will read, and only the writer can
 * re-send them on TCP.  Its close must do it (the kernel delivers a send
 * buffer after close); before, the receiver got EOF and 0 of 5 bytes. */
static int case_scm_idle_peer(void)
{
	int c, s, u[2];
	char us[16];

	mkpair(&c, &s);
	write_all(c, "hello", 5);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, u) == 0, "socketpair");
	snprintf(us, sizeof(us), "%d", u[1]);
	char *argv[] = { "xway-lc", "scm-plain-recv", us, NULL };
	pid_t pid = spawn_noshim(argv, u[1], -1);
	close(u[1]);
	send_fd(u[0], s);
	close(s);               /* settles the hand-over: the revert */
	close(c);               /* no call on c in between */
	CHECK(reap(pid) == 0, "receiver without the shim: the bytes written "
	      "before the pass never arrived");
	close(u[0]);
	return 0;
}

/* ---- SCM_RIGHTS to a process without the shim: the full conversation ---- */

#define RV_P1    (1536u * 1024u)   /* client -> server before the pass: more
				      than the default ring, so the client is
				      blocked in send when the pass happens */
#define RV_SEEN  1000u             /* ... of which the server reads this */
#define RV_Q1    (48u * 1024u)     /* server -> client before the pass, unread */
#define RV_ROUNDS 200
#define RV_STREAM (1024u * 1024u)

static uint32_t sum32(const unsigned char *b, size_t n)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 16777619u;
	return h;
}

static uint64_t tcp_bytes(int fd, int received)
{
	struct tcp_info ti;
	socklen_t l = sizeof(ti);

	memset(&ti, 0, sizeof(ti));
	CHECK(getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) == 0, "TCP_INFO");
	return received ? ti.tcpi_bytes_received : ti.tcpi_bytes_acked;
}

/* The helper without the shim: gets the server's socket, reads the rest of
 * P1, runs RV_ROUNDS request/response rounds, then a checksummed stream
 * each way; asserts the kernel carried all of it. */
static int scm_revert_helper(int u, unsigned seed)
{
	unsigned char *p1 = malloc(RV_P1), *st = malloc(RV_STREAM), *got = malloc(RV_P1);
	union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int) * 16)]; } ctl;
	char q[16], a[16], c;
	struct iovec iov = { &c, 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
			    .msg_controllen = sizeof(ctl.b) };
	struct cmsghdr *cm;
	int fd;

	/* The first fd (a shimmed sender appends its own, which a process
	 * without the shim just keeps). */
	CHECK(recvmsg(u, &m, 0) == 1 && c == 'F', "recvmsg");
	cm = CMSG_FIRSTHDR(&m);
	CHECK(cm && cm->cmsg_type == SCM_RIGHTS, "SCM_RIGHTS");
	memcpy(&fd, CMSG_DATA(cm), sizeof(int));

	CHECK(p1 && st && got, "malloc");
	fill(p1, RV_P1, seed);
	read_all(fd, got, RV_P1 - RV_SEEN);
	CHECK(memcmp(got, p1 + RV_SEEN, RV_P1 - RV_SEEN) == 0,
	      "P1 after the pass differs (seed %u)", seed);
	for (int i = 0; i < RV_ROUNDS; i++) {
		snprintf(q, sizeof(q), "ping %010d", i);
		write_all(fd, q, 16);
		read_all(fd, a, 16);
		snprintf(q, sizeof(q), "pong %010d", i);
		CHECK(memcmp(a, q, 16) == 0, "round %d: got %.16s", i, a);
	}
	fill(st, RV_STREAM, seed + 1);
	write_all(fd, st, RV_STREAM);
	uint32_t want = 0;
	read_all(fd, &want, 4);
	CHECK(want == sum32(st, RV_STREAM), "peer's checksum of our stream");
	fill(st, RV_STREAM, seed + 2);
	read_all(fd, got, RV_STREAM);
	CHECK(memcmp(got, st, RV_STREAM) == 0, "peer's stream (seed %u)", seed + 2);
	/* All of it went through the kernel: the connection is plain TCP. */
	uint64_t rx = tcp_bytes(fd, 1), tx = tcp_bytes(fd, 0);
	CHECK(rx >= RV_P1 - RV_SEEN + 16u * RV_ROUNDS + 4 + RV_STREAM &&
	      tx >= 16u * RV_ROUNDS + RV_STREAM, "kernel TCP carried only %llu in, "
	      "%llu out", (unsigned long long)rx, (unsigned long long)tx);
	close(fd);
	free(p1);
	free(st);
	free(got);
	return 0;
}

/* The peer of the leaver (shimmed, a fork child of the case): P1 (blocks:
 * more than the ring), then reads Q1, answers the rounds (poll() or an
 * epoll registered while accelerated, before each read), checks
 * and returns the helper's stream, sends its own, and sees EOF. */
static int scm_revert_peer(int fd, unsigned seed)
{
	unsigned char *b = malloc(RV_P1), *got = malloc(RV_STREAM);
	char q[16], a[16];
	/* Registered while accelerated: must keep working after the revert. */
	int ep = epoll_create1(0);
	struct epoll_event ev = { .events = EPOLLIN, .data.u32 = 7 };

	CHECK(b && got, "malloc");
	CHECK(ep >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0, "epoll");
	fill(b, RV_P1, seed);
	write_all(fd, b, RV_P1);
	fill(b, RV_Q1, seed + 3);
	read_all(fd, got, RV_Q1);
	CHECK(memcmp(got, b, RV_Q1) == 0, "Q1 (written by the server before the "
	      "pass) differs (seed %u)", seed + 3);
	for (int i = 0; i < RV_ROUNDS; i++) {
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		if (i % 2)
			CHECK(epoll_wait(ep, &ev, 1, 60000) == 1 && ev.data.u32 == 7 &&
			      (ev.events & EPOLLIN), "epoll_wait round %d", i);
		else
			CHECK(poll(&pf, 1, 60000) == 1 && (pf.revents & POLLIN),
			      "poll round %d", i);
		read_all(fd, q, 16);
		snprintf(a, sizeof(a), "ping %010d", i);
		CHECK(memcmp(a, q, 16) == 0, "round %d: got %.16s", i, q);
		snprintf(a, sizeof(a), "pong %010d", i);
		write_all(fd, a, 16);
	}
	read_all(fd, got, RV_STREAM);
	uint32_t sum = sum32(got, RV_STREAM);
	write_all(fd, &sum, 4);
	fill(got, RV_STREAM, seed + 2);
	write_all(fd, got, RV_STREAM);
	expect_eof(fd);
	CHECK(tcp_bytes(fd, 1) >= RV_STREAM, "peer: kernel TCP carried only %llu in",
	      (unsigned long long)tcp_bytes(fd, 1));
	close(ep);
	close(fd);
	free(b);
	free(got);
	return 0;
}

/* One end (server, or client when leaver_is_client) of an accelerated
 * connection reads part of what the other sends, writes Q1 unread, then
 * passes its socket by SCM_RIGHTS to a helper WITHOUT the shim and closes
 * its copy.  The other end is a shimmed child.  Bytes in flight both ways
 * at that moment (the peer blocked sending P1, Q1 unread) must reach their
 * readers exactly once, in order, and the conversation (request/response,
 * then a checksummed stream each way) then runs on kernel TCP.
 * Accelerated: before the pass the kernel carried no payload, and the
 * leaver's shim logged the revert. */
static int scm_revert(int leaver_is_client)
{
	const char *e = getenv("XWAY_TEST_EXPECT");
	int accel = e && !strcmp(e, "accel");
	unsigned seed = (unsigned)time(NULL);
	int port, l = listener(&port), u[2], log, saved, s;
	unsigned char *b = malloc(RV_P1);
	char buf[16384], us[16], sd[16];

	fprintf(stderr, "seed %u\n", seed);
	CHECK(b != NULL, "malloc");
	snprintf(sd, sizeof(sd), "%u", seed);
	pid_t cpid = fork();
	CHECK(cpid >= 0, "fork");
	if (cpid == 0) {
		int fd = leaver_is_client ? accept(l, NULL, NULL) : connect_to(port);
		CHECK(fd >= 0, "peer's socket");
		close(l);
		_exit(scm_revert_peer(fd, seed));
	}
	s = leaver_is_client ? connect_to(port) : accept(l, NULL, NULL);
	CHECK(s >= 0, "leaver's socket");
	close(l);
	read_all(s, b, RV_SEEN);
	fill(b + RV_SEEN, RV_SEEN, seed);
	CHECK(memcmp(b, b + RV_SEEN, RV_SEEN) == 0, "P1 head (seed %u)", seed);
	fill(b, RV_Q1, seed + 3);
	write_all(s, b, RV_Q1);
	if (accel)
		check_path(s, RV_SEEN + RV_Q1);       /* on the channel so far */
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, u) == 0, "socketpair");
	snprintf(us, sizeof(us), "%d", u[1]);
	char *argv[] = { "xway-lc", "scm-revert-helper", us, sd, NULL };
	pid_t hpid = spawn_noshim(argv, u[1], -1);
	close(u[1]);
	log = log_begin(&saved);
	send_fd(u[0], s);
	close(s);
	int hrc = reap(hpid), crc = reap(cpid);
	log_end(log, saved, buf, sizeof(buf));
	CHECK(hrc == 0 && crc == 0, "helper exit %d, peer exit %d; our stderr: %s",
	      hrc, crc, buf);
	if (accel)
		CHECK(strstr(buf, REVERT_LOG), "the revert was not logged: %s", buf);
	close(u[0]);
	free(b);
	return 0;
}

static int case_scm_revert(void)
{
	return scm_revert(0);
}

static int case_scm_revert_client(void)
{
	return scm_revert(1);
}

/* Helper without the shim for scm-killed-sender: takes the socket, says
 * "hello" on it, exits (its close is the socket's last: FIN). */
static int scm_hello_helper(int u)
{
	union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int) * 16)]; } ctl;
	char c;
	struct iovec iov = { &c, 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
			    .msg_controllen = sizeof(ctl.b) };
	struct cmsghdr *cm;
	int fd;

	CHECK(recvmsg(u, &m, 0) == 1 && c == 'F', "recvmsg");
	cm = CMSG_FIRSTHDR(&m);
	CHECK(cm && cm->cmsg_type == SCM_RIGHTS, "SCM_RIGHTS");
	memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	write_all(fd, "hello", 5);
	return 0;
}

/* The known gap, detected: a server passes its accelerated socket to a
 * process without the shim and is killed (SIGKILL) before it can settle
 * the hand-over, so nobody reverts the connection.  The client must not
 * hang or read garbage: plain TCP it reads "hello"; accelerated it either
 * reads it or (the gap) its shim logged that TCP payload arrived on an
 * accelerated connection, and its recv with SO_RCVTIMEO still returns. */
static int case_scm_killed_sender(void)
{
	const char *e = getenv("XWAY_TEST_EXPECT");
	int accel = e && !strcmp(e, "accel");
	int port, l = listener(&port), u[2], c, log, saved, got = 0;
	char buf[8192], b[5], us[16];
	struct timeval tv = { 0, 200000 };

	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, u) == 0, "socketpair");
	pid_t spid = fork();
	CHECK(spid >= 0, "fork");
	if (spid == 0) {
		int s = accept(l, NULL, NULL);
		CHECK(s >= 0, "accept");
		close(u[1]);
		send_fd(u[0], s);
		raise(SIGKILL);
		_exit(1);
	}
	close(l);
	c = connect_to(port);
	snprintf(us, sizeof(us), "%d", u[1]);
	char *argv[] = { "xway-lc", "scm-hello-helper", us, NULL };
	pid_t hpid = spawn_noshim(argv, u[1], -1);
	close(u[1]);
	close(u[0]);
	CHECK(setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0, "SO_RCVTIMEO");
	log = log_begin(&saved);
	/* Bounded: 50 x 200 ms. */
	for (int i = 0; i < 50 && got < 5; i++) {
		ssize_t r = recv(c, b + got, (size_t)(5 - got), 0);
		if (r > 0)
			got += (int)r;
		else if (r == 0 || (errno != EAGAIN && errno != EINTR))
			break;
	}
	log_end(log, saved, buf, sizeof(buf));
	fprintf(stderr, "client got %d byte(s); its shim said: %s\n", got, buf);
	int hrc = reap(hpid), src = reap(spid);
	CHECK(hrc == 0 && src == 128 + SIGKILL, "helper exit %d, server %d", hrc, src);
	if (!accel || got == 5)
		CHECK(got == 5 && memcmp(b, "hello", 5) == 0, "got %d bytes; log: %s", got, buf);
	else
		CHECK(strstr(buf, "TCP payload arrived on an accelerated connection"),
		      "the stuck connection was not logged (got %d bytes): %s", got, buf);
	close(c);
	return 0;
}

static const struct { const char *name; int (*fn)(void); } cases[] = {
	{ "poll", case_poll },
	{ "select", case_select },
	{ "epoll", case_epoll },
	{ "nbconnect", case_nbconnect },
	{ "epoll-race", case_epoll_race },
	{ "eintr", case_eintr_all },
	{ "fork", case_fork },
	{ "fork-both", case_fork_both },
	{ "vfork", case_vfork },
	{ "clone", case_clone },
	{ "fork-recycle", case_fork_recycle },
	{ "clone-recycle", case_clone_recycle },
	{ "exec", case_exec },
	{ "execv", case_execv },
	{ "spawn", case_spawn },
	{ "exec-shared", case_exec_shared },
	{ "system", case_system },
	{ "pollout-third", case_pollout_third },
	{ "exec-noshim", case_exec_noshim },
	{ "exec-noshim-stale", case_exec_noshim_stale },
	{ "epoll-del-unknown", case_epoll_del_unknown },
	{ "popen", case_popen },
	{ "closerange", case_closerange },
	{ "scm", case_scm },
	{ "seccomp", case_seccomp },
	{ "rlimit1", case_rlimit1 },
	{ "nofile0", case_nofile0 },
	{ "duplex", case_duplex },
	{ "threads", case_threads },
	{ "close-blocked", case_close_blocked },
	{ "close-blocked-send", case_close_blocked_send },
	{ "dup2-blocked", case_dup2_blocked },
	{ "close-blocked-fork", case_close_blocked_fork },
	{ "epoll1000-lt", case_epoll1000_lt },
	{ "epoll1000-et", case_epoll1000_et },
	{ "idle1000", case_idle1000 },
	{ "poll-two", case_poll_two },
	{ "epoll-two", case_epoll_two },
	{ "poll-epoll", case_poll_epoll },
	{ "epoll-close", case_epoll_close },
	{ "scm-noshim", case_scm_noshim },
	{ "scm-idle-peer", case_scm_idle_peer },
	{ "scm-revert", case_scm_revert },
	{ "scm-revert-client", case_scm_revert_client },
	{ "scm-killed-sender", case_scm_killed_sender },
};

/* ---- across hosts (the Xen test bed's 61 workload) --------------------
 * One end of a connection in each domain: `xway-lc remote-server` (on the
 * server's host) listens on XWAY_TEST_BIND, prints "PORT PID" and echoes
 * one connection until EOF (XWAY_TEST_SERVE=fork: the accepting process
 * forks, closes its copy, and the child echoes, as forking servers do;
 * XWAY_TEST_SERVE=exec: the child then execs itself with the connection
 * as fd 0 and 1 and echoes there, as inetd's services and sshd do;
 * XWAY_TEST_SERVE=scm: a process forked before the accept receives the
 * connection by SCM_RIGHTS and echoes, the acceptor closes its copy, as
 * vsftpd's privileged process hands data connections to the session);
 * `xway-lc remote-CASE PORT` (on the other host) connects to
 * XWAY_TEST_HOST:PORT and runs CASE over the echo: the payload is 64 KiB
 * blocks, each read back and compared.  These never appear in `list`
 * (they need the peer); `remote-list` names them. */

static int remote_dial(int port)
{
	const char *host = getenv("XWAY_TEST_HOST");
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	CHECK(host && inet_pton(AF_INET, host, &sa.sin_addr) == 1,
	      "XWAY_TEST_HOST must be the peer's IPv4 address");
	CHECK(fd >= 0, "socket");
	CHECK(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect %s:%d", host, port);
	return fd;
}

/* n 64 KiB blocks out and back, block i filled from seed + i. */
static void remote_echo(int fd, unsigned seed, int n)
{
	static unsigned char out[65536], in[65536];

	for (int i = 0; i < n; i++) {
		fill(out, sizeof(out), seed + (unsigned)i);
		write_all(fd, out, sizeof(out));
		read_all(fd, in, sizeof(in));
		CHECK(!memcmp(in, out, sizeof(in)), "echo block %d of seed %u differs", i, seed);
	}
}

/* Our half-close, then the echo server's EOF: nothing left in flight. */
static void remote_finish(int fd, uint64_t payload)
{
	check_path(fd, payload);
	CHECK(shutdown(fd, SHUT_WR) == 0, "shutdown");
	expect_eof(fd);
	CHECK(close(fd) == 0, "close");
}

static int remote_server(void)
{
	const char *bind_ip = getenv("XWAY_TEST_BIND"), *serve = getenv("XWAY_TEST_SERVE");
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	static char b[65536];
	int l = socket(AF_INET, SOCK_STREAM, 0), one = 1, fd;
	uint64_t total = 0;
	ssize_t r;
	pid_t child = 0;

	CHECK(l >= 0, "socket");
	CHECK(bind_ip && inet_pton(AF_INET, bind_ip, &sa.sin_addr) == 1,
	      "XWAY_TEST_BIND must be an IPv4 address");
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	CHECK(bind(l, (struct sockaddr *)&sa, sizeof(sa)) == 0, "bind");
	CHECK(listen(l, 16) == 0, "listen");
	CHECK(getsockname(l, (struct sockaddr *)&sa, &sl) == 0, "getsockname");
	printf("%d %d\n", ntohs(sa.sin_port), (int)getpid());
	fflush(stdout);
	if (serve && !strcmp(serve, "scm")) {
		/* vsftpd's privileged process: a process that exists before
		 * the connection (no fork follows it) gets it by SCM_RIGHTS
		 * from the acceptor, which closes its copy. */
		int u[2];

		CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, u) == 0, "socketpair");
		child = fork();
		CHECK(child >= 0, "fork");
		if (child == 0) {
			close(l);
			close(u[0]);
			fd = recv_fd(u[1]);
			close(u[1]);
		} else {
			close(u[1]);
			fd = accept(l, NULL, NULL);
			CHECK(fd >= 0, "accept");
			close(l);
			send_fd(u[0], fd);
			close(fd);          /* the receiver alone holds it now */
			close(u[0]);
			int rc = reap(child);
			CHECK(rc == 0, "the receiving process ended with %d", rc);
			return 0;
		}
		serve = "scm-receiver";
	} else {
		fd = accept(l, NULL, NULL);
		CHECK(fd >= 0, "accept");
		close(l);
	}
	if (serve && (!strcmp(serve, "fork") || !strcmp(serve, "exec"))) {
		child = fork();
		CHECK(child >= 0, "fork");
		if (child > 0) {
			close(fd);          /* the child alone holds it now */
			int rc = reap(child);
			CHECK(rc == 0, "the serving child ended with %d", rc);
			return 0;
		}
		if (!strcmp(serve, "exec")) {
			/* inetd's and sshd's way: the connection as the new
			 * image's standard input and output. */
			CHECK(dup2(fd, 0) == 0 && dup2(fd, 1) == 1, "dup2");
			if (fd > 1)
				close(fd);
			execl("/proc/self/exe", "xway-lc", "remote-serve-stdio", (char *)NULL);
			CHECK(0, "exec of remote-serve-stdio");
		}
	}
	while ((r = read(fd, b, sizeof(b))) != 0) {
		if (r < 0 && errno == EINTR)
			continue;
		CHECK(r > 0, "echo read after %llu bytes", (unsigned long long)total);
		write_all(fd, b, (size_t)r);
		total += (uint64_t)r;
	}
	check_path(fd, 2 * total);
	CHECK(close(fd) == 0, "close");
	fprintf(stderr, "remote-server: echoed %llu bytes%s\n", (unsigned long long)total,
		child == 0 && serve ? !strcmp(serve, "scm-receiver")
		? " (received by SCM_RIGHTS)" : " (forked child)" : "");
	return 0;
}

/* The exec'ed half of XWAY_TEST_SERVE=exec: echo stdin to stdout (one
 * connection) until EOF. */
static int remote_serve_stdio(void)
{
	static char b[65536];
	uint64_t total = 0;
	ssize_t r;

	while ((r = read(0, b, sizeof(b))) != 0) {
		if (r < 0 && errno == EINTR)
			continue;
		CHECK(r > 0, "echo read after %llu bytes", (unsigned long long)total);
		write_all(1, b, (size_t)r);
		total += (uint64_t)r;
	}
	check_path(0, 2 * total);
	fprintf(stderr, "remote-server: echoed %llu bytes (exec'ed image)\n",
		(unsigned long long)total);
	return 0;
}

/* The plain echo (a forking server's child serves it with
 * XWAY_TEST_SERVE=fork). */
static int remote_case_echo(int port)
{
	int fd = remote_dial(port);

	remote_echo(fd, 1, 16);
	remote_finish(fd, 2 * 16 * 65536);
	return 0;
}

/* Parent and child take turns on the inherited connection. */
static int remote_case_fork(int port)
{
	int fd = remote_dial(port);

	remote_echo(fd, 10, 4);
	pid_t ch = fork();
	CHECK(ch >= 0, "fork");
	if (ch == 0) {
		remote_echo(fd, 20, 4);
		_exit(0);
	}
	int rc = reap(ch);
	CHECK(rc == 0, "the child's echo ended with %d", rc);
	remote_echo(fd, 30, 4);
	remote_finish(fd, 2 * 12 * 65536);
	return 0;
}

/* The parent hands the connection to its child and closes its copy. */
static int remote_case_fork_handoff(int port)
{
	int fd = remote_dial(port);

	remote_echo(fd, 40, 4);
	pid_t ch = fork();
	CHECK(ch >= 0, "fork");
	if (ch == 0) {
		remote_echo(fd, 50, 4);
		remote_finish(fd, 2 * 8 * 65536);
		_exit(0);
	}
	CHECK(close(fd) == 0, "parent close");
	int rc = reap(ch);
	CHECK(rc == 0, "the child's echo ended with %d", rc);
	return 0;
}

/* The connection survives an exec of this program (fd without
 * FD_CLOEXEC): the new image goes on with it. */
static int remote_case_exec(int port)
{
	int fd = remote_dial(port);
	char fds[16], self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	CHECK(n > 0, "readlink /proc/self/exe");
	self[n] = 0;
	remote_echo(fd, 60, 4);
	snprintf(fds, sizeof(fds), "%d", fd);
	execl(self, self, "remote-exec-child", fds, (char *)NULL);
	CHECK(0, "exec %s", self);
	return 1;
}

static int remote_exec_child(int fd)
{
	remote_echo(fd, 70, 4);
	remote_finish(fd, 2 * 8 * 65536);
	return 0;
}

/* dup/dup2/F_DUPFD_CLOEXEC twins share the connection; the original
 * closed first. */
static int remote_case_dup(int port)
{
	int fd = remote_dial(port);
	int d = dup(fd);

	CHECK(d >= 0, "dup");
	remote_echo(fd, 80, 2);
	CHECK(close(fd) == 0, "close the original");
	remote_echo(d, 81, 2);
	int d2 = fcntl(d, F_DUPFD_CLOEXEC, 100);
	CHECK(d2 >= 100, "F_DUPFD_CLOEXEC");
	CHECK(dup2(d2, d) == d, "dup2 onto the twin");
	remote_echo(d2, 82, 2);
	CHECK(close(d2) == 0, "close one twin");
	remote_finish(d, 2 * 6 * 65536);
	return 0;
}

static const struct { const char *name; int (*fn)(int port); } remote_cases[] = {
	{ "remote-echo", remote_case_echo },
	{ "remote-fork", remote_case_fork },
	{ "remote-fork-handoff", remote_case_fork_handoff },
	{ "remote-exec", remote_case_exec },
	{ "remote-dup", remote_case_dup },
};

static int remote_main(int argc, char **argv)
{
	/* Bounded: a hang fails (XWAY_TEST_ALARM seconds, default 300). */
	alarm(getenv("XWAY_TEST_ALARM") ? (unsigned)atoi(getenv("XWAY_TEST_ALARM")) : 300);
	if (!strcmp(argv[1], "remote-list")) {
		for (size_t i = 0; i < sizeof(remote_cases) / sizeof(remote_cases[0]); i++)
			printf("%s\n", remote_cases[i].name);
		return 0;
	}
	if (!strcmp(argv[1], "remote-server")) {
		tcase = "remote-server";
		return remote_server();
	}
	if (!strcmp(argv[1], "remote-serve-stdio")) {
		tcase = "remote-serve-stdio";
		return remote_serve_stdio();
	}
	if (argc == 3 && !strcmp(argv[1], "remote-exec-child")) {
		tcase = "remote-exec-child";
		return remote_exec_child(atoi(argv[2]));
	}
	for (size_t i = 0; i < sizeof(remote_cases) / sizeof(remote_cases[0]); i++)
		if (argc == 3 && !strcmp(argv[1], remote_cases[i].name)) {
			tcase = remote_cases[i].name;
			return remote_cases[i].fn(atoi(argv[2]));
		}
	fprintf(stderr, "xway-lc: usage: remote-server | remote-list | remote-CASE PORT\n");
	return 2;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc >= 2 && !strncmp(argv[1], "remote-", 7))
		return remote_main(argc, argv);
	if (argc == 3 && !strcmp(argv[1], "scm-plain-recv")) {
		tcase = "scm-plain-recv";
		return scm_plain_recv(atoi(argv[2]));
	}
	if (argc == 3 && !strcmp(argv[1], "scm-hello-helper")) {
		tcase = "scm-hello-helper";
		return scm_hello_helper(atoi(argv[2]));
	}
	if (argc == 4 && !strcmp(argv[1], "scm-revert-helper")) {
		tcase = "scm-revert-helper";
		return scm_revert_helper(atoi(argv[2]), (unsigned)strtoul(argv[3], NULL, 10));
	}
	if (argc == 2 && !strcmp(argv[1], "exec-noshim-child")) {
		tcase = "exec-noshim-child";
		return exec_noshim_child();
	}
	if (argc == 2 && !strcmp(argv[1], "exec-shared-child")) {
		tcase = "exec-shared-child";
		return exec_shared_child();
	}
	if (argc >= 2 && !strcmp(argv[1], "exec-child")) {
		tcase = "exec-child";
		return exec_child(argc, argv);
	}
	if (argc < 2 || !strcmp(argv[1], "list")) {
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
			printf("%s\n", cases[i].name);
		return argc < 2 ? 2 : 0;
	}
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (!strcmp(argv[1], cases[i].name)) {
			tcase = cases[i].name;
			return cases[i].fn();
		}
	fprintf(stderr, "xway-lc: unknown case '%s' (try: list)\n", argv[1]);
	return 2;
}
