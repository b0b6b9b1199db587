/* SPDX-License-Identifier: MIT */
/*
 * xway-hz: the cases of the HAZARDS audit (docs/HAZARDS.md) that no other
 * test covered: what real applications do to a socket preload library,
 * each asserted as kernel TCP behaves, so the same binary passes without
 * the shim, under the shim with no broker, and accelerated (then
 * XWAY_TEST_EXPECT=accel also checks with TCP_INFO on the real socket
 * that the payload did not travel on kernel TCP).
 * Usage: xway-hz CASE (exit 0 pass, 1 fail, 77 skip); xway-hz list.
 * Every process arms alarm(); every loop is bounded.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <termios.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *tcase = "?";

#define CHECK(cond, ...) do { if (!(cond)) { \
	fprintf(stderr, "FAIL %s (%s:%d): ", tcase, __FILE__, __LINE__); \
	fprintf(stderr, __VA_ARGS__); \
	fprintf(stderr, " [errno %d %s]\n", errno, strerror(errno)); \
	_exit(1); } } while (0)

/* ---- helpers (as in tests/integration/lifecycle/lc.c) ----------------- */

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
}

static void mkpair(int *c, int *s)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	int l = socket(AF_INET, SOCK_STREAM, 0);

	CHECK(l >= 0, "socket");
	CHECK(bind(l, (struct sockaddr *)&sa, sizeof(sa)) == 0, "bind");
	CHECK(listen(l, 16) == 0, "listen");
	CHECK(getsockname(l, (struct sockaddr *)&sa, &sl) == 0, "getsockname");
	*c = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(*c >= 0, "socket");
	CHECK(connect(*c, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect");
	*s = accept(l, NULL, NULL);
	CHECK(*s >= 0, "accept");
	close(l);
}

static void fill(unsigned char *b, size_t n, unsigned seed)
{
	uint32_t x = seed * 2654435761u + 1;

	for (size_t i = 0; i < n; i++) {
		x ^= x << 13; x ^= x >> 17; x ^= x << 5;
		b[i] = (unsigned char)x;
	}
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

/* Bulk: one thread writes n bytes on wfd while this one reads them on
 * rfd and compares. */
struct bulk { int fd; const unsigned char *buf; size_t n; };

static void *bulk_writer(void *arg)
{
	struct bulk *b = arg;

	write_all(b->fd, b->buf, b->n);
	return NULL;
}

static void transfer(int wfd, int rfd, size_t n, unsigned seed)
{
	unsigned char *a = malloc(n), *r = malloc(n);
	pthread_t th;
	struct bulk b = { wfd, a, n };

	CHECK(a && r, "malloc");
	fill(a, n, seed);
	CHECK(pthread_create(&th, NULL, bulk_writer, &b) == 0, "pthread_create");
	read_all(rfd, r, n);
	pthread_join(th, NULL);
	CHECK(!memcmp(a, r, n), "%zu bytes differ after transfer", n);
	free(a);
	free(r);
}

static int geti(int fd, int level, int opt)
{
	int v = -1;
	socklen_t l = sizeof(v);

	CHECK(getsockopt(fd, level, opt, &v, &l) == 0, "getsockopt %d/%d", level, opt);
	return v;
}

static void seti(int fd, int level, int opt, int v)
{
	CHECK(setsockopt(fd, level, opt, &v, sizeof(v)) == 0, "setsockopt %d/%d=%d", level, opt, v);
}

/* ---- cases ------------------------------------------------------------- */

/* iperf3, sshd, apache2, mariadb: the options real apps set and read on a
 * connected (here: accelerated) socket give kernel answers. */
static int case_tcpopts(void)
{
	int c, s;
	struct tcp_info ti;
	socklen_t l = sizeof(ti);
	char cc[32] = "", opts[40];
	struct timeval tv = { 3, 500000 }, tv2;

	mkpair(&c, &s);
	transfer(c, s, 1 << 20, 1);
	transfer(s, c, 1 << 20, 2);

	memset(&ti, 0, sizeof(ti));
	CHECK(getsockopt(c, IPPROTO_TCP, TCP_INFO, &ti, &l) == 0, "TCP_INFO");
	CHECK(ti.tcpi_state == 1 /* TCP_ESTABLISHED */, "TCP_INFO state %u", ti.tcpi_state);
	CHECK(ti.tcpi_snd_mss > 0 && ti.tcpi_rcv_mss > 0, "TCP_INFO mss %u/%u",
	      ti.tcpi_snd_mss, ti.tcpi_rcv_mss);
	l = sizeof(cc);
	CHECK(getsockopt(c, IPPROTO_TCP, TCP_CONGESTION, cc, &l) == 0 && cc[0], "TCP_CONGESTION");
	/* reno is always built in: a set must read back. */
	CHECK(setsockopt(c, IPPROTO_TCP, TCP_CONGESTION, "reno", 4) == 0, "set TCP_CONGESTION reno");
	l = sizeof(cc);
	memset(cc, 0, sizeof(cc));
	CHECK(getsockopt(c, IPPROTO_TCP, TCP_CONGESTION, cc, &l) == 0 && !strcmp(cc, "reno"),
	      "TCP_CONGESTION reads back '%s'", cc);
	int mss = geti(c, IPPROTO_TCP, TCP_MAXSEG);
	CHECK(mss > 0 && mss <= 65535, "TCP_MAXSEG %d", mss);

	seti(c, IPPROTO_TCP, TCP_NODELAY, 1);
	CHECK(geti(c, IPPROTO_TCP, TCP_NODELAY) == 1, "TCP_NODELAY reads back");
	seti(c, SOL_SOCKET, SO_KEEPALIVE, 1);
	CHECK(geti(c, SOL_SOCKET, SO_KEEPALIVE) == 1, "SO_KEEPALIVE reads back");
	seti(c, IPPROTO_IP, IP_TOS, IPTOS_LOWDELAY);
	CHECK(geti(c, IPPROTO_IP, IP_TOS) == IPTOS_LOWDELAY, "IP_TOS reads back");
	seti(c, IPPROTO_IP, IP_FREEBIND, 1);
	CHECK(geti(c, IPPROTO_IP, IP_FREEBIND) == 1, "IP_FREEBIND reads back");
	/* sshd asks for IP options and the bound device: none here. */
	l = sizeof(opts);
	CHECK(getsockopt(s, IPPROTO_IP, IP_OPTIONS, opts, &l) == 0 && l == 0,
	      "IP_OPTIONS: len %u", l);
	l = sizeof(opts);
	CHECK(getsockopt(s, SOL_SOCKET, SO_BINDTODEVICE, opts, &l) == 0 && l == 0,
	      "SO_BINDTODEVICE: len %u", l);
	CHECK(setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0, "SO_RCVTIMEO");
	l = sizeof(tv2);
	CHECK(getsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv2, &l) == 0 && tv2.tv_sec == 3,
	      "SO_RCVTIMEO reads back %ld", (long)tv2.tv_sec);
	CHECK(geti(c, SOL_SOCKET, SO_TYPE) == SOCK_STREAM, "SO_TYPE");
	CHECK(geti(c, SOL_SOCKET, SO_ERROR) == 0, "SO_ERROR");

	/* TCP_CORK on, data, off: everything arrives (apache2, proftpd). */
	seti(c, IPPROTO_TCP, TCP_CORK, 1);
	CHECK(geti(c, IPPROTO_TCP, TCP_CORK) == 1, "TCP_CORK reads back");
	write_all(c, "corked", 6);
	seti(c, IPPROTO_TCP, TCP_CORK, 0);
	char b[6];
	read_all(s, b, 6);
	CHECK(!memcmp(b, "corked", 6), "corked data");

	/* SO_REUSEPORT on a listener (apache2): two listeners share a port. */
	int l1 = socket(AF_INET, SOCK_STREAM, 0), l2 = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	seti(l1, SOL_SOCKET, SO_REUSEPORT, 1);
	seti(l2, SOL_SOCKET, SO_REUSEPORT, 1);
	CHECK(geti(l1, SOL_SOCKET, SO_REUSEPORT) == 1, "SO_REUSEPORT reads back");
	CHECK(bind(l1, (struct sockaddr *)&sa, sizeof(sa)) == 0, "bind l1");
	CHECK(getsockname(l1, (struct sockaddr *)&sa, &sl) == 0, "getsockname");
	CHECK(bind(l2, (struct sockaddr *)&sa, sizeof(sa)) == 0, "bind l2 on the same port");
	close(l1);
	close(l2);

	check_path(c, 2 << 20);
	check_path(s, 2 << 20);
	close(c);
	close(s);
	return 0;
}

/* sockperf: 60000-byte messages, written and read whole by the app but
 * delivered by partial reads and writes (non-blocking sender, small
 * reads); byte order and count must be exact. */
#define MSG 60000
#define NMSG 300

static void *msg_sender(void *arg)
{
	int fd = *(int *)arg;
	unsigned char *m = malloc(MSG);
	long partial = 0;

	CHECK(m, "malloc");
	CHECK(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0, "O_NONBLOCK");
	for (int i = 0; i < NMSG; i++) {
		fill(m, MSG, 100 + (unsigned)i);
		size_t off = 0;
		for (int spins = 0; off < MSG; spins++) {
			CHECK(spins < 2000000, "message %d stuck at %zu", i, off);
			ssize_t w = send(fd, m + off, MSG - off, MSG_NOSIGNAL);
			if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
				struct timespec ts = { 0, 200000 };
				nanosleep(&ts, NULL);
				continue;
			}
			CHECK(w > 0, "send");
			if ((size_t)w < MSG - off)
				partial++;
			off += (size_t)w;
		}
	}
	free(m);
	fprintf(stderr, "%s: %ld partial sends\n", tcase, partial);
	return NULL;
}

static int case_msg60k(void)
{
	int c, s;
	pthread_t th;
	unsigned char *want = malloc(MSG), *got = malloc(MSG);
	long partial = 0;

	CHECK(want && got, "malloc");
	mkpair(&c, &s);
	/* A small kernel buffer makes partial writes likely on plain TCP too. */
	seti(c, SOL_SOCKET, SO_SNDBUF, 16384);
	CHECK(pthread_create(&th, NULL, msg_sender, &c) == 0, "pthread_create");
	for (int i = 0; i < NMSG; i++) {
		size_t off = 0;
		fill(want, MSG, 100 + (unsigned)i);
		while (off < MSG) {
			ssize_t r = recvfrom(s, got + off, MSG - off, 0, NULL, NULL);
			if (r < 0 && errno == EINTR)
				continue;
			CHECK(r > 0, "recvfrom message %d at %zu", i, off);
			if ((size_t)r < MSG - off)
				partial++;
			off += (size_t)r;
		}
		CHECK(!memcmp(want, got, MSG), "message %d differs", i);
	}
	pthread_join(th, NULL);
	fprintf(stderr, "%s: %d messages of %d bytes exact, %ld partial reads\n",
		tcase, NMSG, MSG, partial);
	check_path(s, (uint64_t)NMSG * MSG);
	free(want);
	free(got);
	close(c);
	close(s);
	return 0;
}

/* splice: file -> pipe -> socket on one side, socket -> pipe -> memory on
 * the other (the zero-copy relay pattern), bytes exact. */
static int case_splice(void)
{
	int c, s, pin[2], pout[2];
	const size_t n = 4 << 20;
	unsigned char *a = malloc(n), *r = malloc(n);
	char path[] = "/tmp/xway-hz-splice.XXXXXX";
	int f = mkstemp(path);
	pid_t pid;

	CHECK(a && r && f >= 0, "setup");
	unlink(path);
	fill(a, n, 7);
	write_all(f, a, n);
	CHECK(lseek(f, 0, SEEK_SET) == 0, "lseek");
	mkpair(&c, &s);
	CHECK(pipe(pin) == 0 && pipe(pout) == 0, "pipe");
	pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		/* sender: file -> pipe -> socket */
		alarm(60);
		close(s);
		size_t left = n;
		while (left > 0) {
			ssize_t k = splice(f, NULL, pin[1], NULL, left > 65536 ? 65536 : left, 0);
			CHECK(k > 0, "splice file->pipe");
			ssize_t m = k;
			while (m > 0) {
				ssize_t w = splice(pin[0], NULL, c, NULL, (size_t)m, 0);
				CHECK(w > 0, "splice pipe->socket");
				m -= w;
			}
			left -= (size_t)k;
		}
		check_path(c, n);
		close(c);
		_exit(0);
	}
	close(c);
	size_t got = 0;
	while (got < n) {
		ssize_t k = splice(s, NULL, pout[1], NULL, 65536, 0);
		CHECK(k > 0, "splice socket->pipe (at %zu)", got);
		read_all(pout[0], r + got, (size_t)k);
		got += (size_t)k;
	}
	char x;
	CHECK(read(s, &x, 1) == 0, "EOF after the spliced data");
	int st = 0;
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0,
	      "sender exited %#x", st);
	CHECK(!memcmp(a, r, n), "spliced bytes differ");
	check_path(s, n);
	close(s);
	close(f);
	free(a);
	free(r);
	return 0;
}

/* samba: a thread switches its own credentials with the raw setresuid
 * system call (not glibc's, which would switch every thread) and
 * unshare(CLONE_FS), then uses an accelerated connection made before and
 * makes a new one. */
static void *cred_thread(void *arg)
{
	int *p = arg, c, s;

	CHECK(syscall(SYS_setresgid, -1, 65534, -1) == 0, "setresgid");
	CHECK(syscall(SYS_setresuid, -1, 65534, -1) == 0, "setresuid");
	CHECK(unshare(CLONE_FS) == 0, "unshare(CLONE_FS)");
	CHECK(geteuid() == 65534, "euid %d", (int)geteuid());
	transfer(p[0], p[1], 1 << 20, 11);
	transfer(p[1], p[0], 1 << 20, 12);
	check_path(p[0], 2 << 20);
	mkpair(&c, &s);
	transfer(c, s, 1 << 20, 13);
	check_path(s, 1 << 20);
	close(c);
	close(s);
	CHECK(syscall(SYS_setresuid, -1, 0, -1) == 0, "setresuid back");
	return NULL;
}

static int case_credthread(void)
{
	int p[2];
	pthread_t th;

	if (geteuid() != 0) {
		printf("needs root (per-thread setresuid to nobody)\n");
		return 77;
	}
	mkpair(&p[0], &p[1]);
	CHECK(pthread_create(&th, NULL, cred_thread, p) == 0, "pthread_create");
	CHECK(pthread_join(th, NULL) == 0, "join");
	CHECK(geteuid() == 0, "the main thread kept euid 0");
	transfer(p[1], p[0], 1 << 20, 14);
	close(p[0]);
	close(p[1]);
	return 0;
}

/* sshd's pre-auth child: RLIMIT_FSIZE 0, then socket work, while the
 * shim's debug log goes to a file (XWAY_LOG_FILE set by run.sh): a
 * write to that file, or sizing a new channel's memfd, would raise SIGXFSZ
 * and kill the process.  A connection made before the limit stays
 * accelerated; one made after it cannot get a channel (its memory could
 * not be sized) and must work on TCP instead. */
static int case_fsize0(void)
{
	int c, s, c2, s2;

	mkpair(&c, &s);
	CHECK(setrlimit(RLIMIT_FSIZE, &(struct rlimit){ 0, 0 }) == 0, "RLIMIT_FSIZE 0");
	transfer(c, s, 1 << 20, 21);
	transfer(s, c, 1 << 20, 22);
	check_path(c, 2 << 20);
	mkpair(&c2, &s2);
	transfer(c2, s2, 1 << 20, 23);
	transfer(s2, c2, 1 << 20, 24);
	close(c);
	close(s);
	close(c2);
	close(s2);
	return 0;
}

/* The rest of the table's options and calls, on an accelerated pair:
 * telnetd's TCGETS on the socket (ENOTTY), proftpd's F_SETOWN, SO_DEBUG
 * (root only), an edge-triggered EPOLLEXCLUSIVE registration (one wake per
 * arrival), and shutdown(SHUT_RD) (vsftpd, telnetd): reads then give 0 at
 * once while the other direction keeps working. */
static int case_misc(void)
{
	int c, s, ep;
	struct termios tio;
	struct epoll_event ev = { .events = EPOLLIN | EPOLLET | EPOLLEXCLUSIVE }, got[4];
	char b[8];

	mkpair(&c, &s);
	transfer(c, s, 1 << 20, 31);
	errno = 0;
	CHECK(ioctl(s, TCGETS, &tio) == -1 && errno == ENOTTY, "TCGETS on a socket: want ENOTTY");
	CHECK(fcntl(s, F_SETOWN, getpid()) == 0, "F_SETOWN");
	CHECK(fcntl(s, F_GETOWN) == getpid(), "F_GETOWN reads back %d", fcntl(s, F_GETOWN));
	if (geteuid() == 0) {
		seti(s, SOL_SOCKET, SO_DEBUG, 1);
		CHECK(geti(s, SOL_SOCKET, SO_DEBUG) == 1, "SO_DEBUG reads back");
	}

	ep = epoll_create1(EPOLL_CLOEXEC);
	CHECK(ep >= 0, "epoll_create1");
	ev.data.fd = s;
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev) == 0, "EPOLL_CTL_ADD EPOLLEXCLUSIVE|EPOLLET");
	CHECK(epoll_wait(ep, got, 4, 0) == 0, "no event before data");
	write_all(c, "abc", 3);
	int n = epoll_wait(ep, got, 4, 10000);
	CHECK(n == 1 && got[0].data.fd == s && (got[0].events & EPOLLIN), "EPOLLIN (n=%d)", n);
	CHECK(epoll_wait(ep, got, 4, 0) == 0, "edge-triggered: no second event without new data");
	read_all(s, b, 3);
	write_all(c, "d", 1);
	n = epoll_wait(ep, got, 4, 10000);
	CHECK(n == 1 && (got[0].events & EPOLLIN), "EPOLLIN for the new arrival (n=%d)", n);
	read_all(s, b, 1);
	CHECK(!memcmp(b, "d", 1), "data after the edge");
	close(ep);

	CHECK(shutdown(s, SHUT_RD) == 0, "shutdown SHUT_RD");
	CHECK(recv(s, b, sizeof(b), MSG_DONTWAIT) == 0, "read after SHUT_RD gives 0");
	write_all(s, "back", 4);
	read_all(c, b, 4);
	CHECK(!memcmp(b, "back", 4), "the other direction after SHUT_RD");
	check_path(c, 1 << 20);
	close(c);
	close(s);
	return 0;
}

/* SO_RCVLOWAT (libevent's bufferevent watermarks, some RPC stacks): POLLIN,
 * select's read set and epoll stay quiet below the mark, a blocking recv
 * waits until min(mark, len) bytes are there; EOF wakes whatever is
 * queued; a nonblocking recv returns what there is (TCP-SEMANTICS.md). */
struct late_write { int fd; const char *buf; size_t n; };

static void *late_writer(void *arg)
{
	struct late_write *w = arg;

	usleep(100000);
	write_all(w->fd, w->buf, w->n);
	return NULL;
}

static int case_rcvlowat(void)
{
	int c, s, ep, n;
	struct pollfd pf;
	struct epoll_event ev = { .events = EPOLLIN }, got[2];
	fd_set rs;
	struct timeval tv;
	char b[64];
	pthread_t th;
	struct late_write lw;

	mkpair(&c, &s);
	transfer(c, s, 1 << 20, 37);
	seti(s, SOL_SOCKET, SO_RCVLOWAT, 10);
	CHECK(geti(s, SOL_SOCKET, SO_RCVLOWAT) == 10, "SO_RCVLOWAT reads back");

	write_all(c, "abcd", 4);
	usleep(20000);
	CHECK(ioctl(s, FIONREAD, &n) == 0 && n == 4, "FIONREAD %d, want 4", n);
	pf = (struct pollfd){ .fd = s, .events = POLLIN };
	n = poll(&pf, 1, 200);
	CHECK(n == 0, "poll: 4 bytes below a mark of 10 (n=%d revents %#x)", n, pf.revents);
	FD_ZERO(&rs);
	FD_SET(s, &rs);
	tv = (struct timeval){ 0, 200000 };
	n = select(s + 1, &rs, NULL, NULL, &tv);
	CHECK(n == 0, "select: 4 bytes below the mark (n=%d)", n);
	ep = epoll_create1(0);
	CHECK(ep >= 0, "epoll_create1");
	ev.data.fd = s;
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev) == 0, "EPOLL_CTL_ADD");
	n = epoll_wait(ep, got, 2, 200);
	CHECK(n == 0, "epoll (level): 4 bytes below the mark (n=%d)", n);

	/* A blocking recv waits for the mark: 4 now + 10 later.  (Not 4 + 6:
	 * the kernel takes the 4, then wakes the reader only when the mark
	 * is queued again, so 6 more would leave it blocked.) */
	lw = (struct late_write){ c, "efghijklmn", 10 };
	CHECK(pthread_create(&th, NULL, late_writer, &lw) == 0, "pthread_create");
	n = (int)recv(s, b, sizeof(b), 0);
	pthread_join(th, NULL);
	CHECK(n == 14 && !memcmp(b, "abcdefghijklmn", 14), "blocking recv returned %d, want 14", n);

	/* At the mark: ready at once, in all three. */
	write_all(c, "0123456789", 10);
	pf.revents = 0;
	CHECK(poll(&pf, 1, 10000) == 1 && (pf.revents & POLLIN), "poll at the mark");
	n = epoll_wait(ep, got, 2, 10000);
	CHECK(n == 1 && (got[0].events & EPOLLIN), "epoll at the mark (n=%d)", n);
	CHECK(recv(s, b, sizeof(b), 0) == 10, "read the 10");

	/* A read shorter than the mark needs only its own length. */
	write_all(c, "xyz", 3);
	CHECK(recv(s, b, 2, 0) == 2 && !memcmp(b, "xy", 2), "recv of 2 below the mark");
	/* Nonblocking: what there is. */
	CHECK(recv(s, b, sizeof(b), MSG_DONTWAIT) == 1 && b[0] == 'z', "MSG_DONTWAIT below the mark");

	/* EOF below the mark: readable, the bytes then 0. */
	write_all(c, "end", 3);
	CHECK(shutdown(c, SHUT_WR) == 0, "shutdown");
	pf.revents = 0;
	CHECK(poll(&pf, 1, 10000) == 1 && (pf.revents & POLLIN), "poll after EOF below the mark");
	CHECK(recv(s, b, sizeof(b), 0) == 3, "the last 3 bytes");
	CHECK(recv(s, b, sizeof(b), 0) == 0, "then EOF");

	/* 0 means 1, as in the kernel. */
	seti(s, SOL_SOCKET, SO_RCVLOWAT, 0);
	CHECK(geti(s, SOL_SOCKET, SO_RCVLOWAT) == 1, "SO_RCVLOWAT 0 reads back as 1");
	check_path(c, 1 << 20);
	close(ep);
	close(c);
	close(s);
	return 0;
}

/* An epoll registration, then a blocking recv on the same socket that
 * sleeps until data comes (it drains the connection's wake-up), then new
 * data: epoll_wait must report it at once (it slept through it: the
 * recv's drain spent the ring's one notification). */
static int case_epdrain(void)
{
	int c, s, ep, n;
	struct epoll_event ev = { .events = EPOLLIN }, got[2];
	char b[64];
	pthread_t th;
	struct late_write lw = { 0, "efghijklmn", 10 };

	mkpair(&c, &s);
	transfer(c, s, 1 << 20, 41);
	ep = epoll_create1(0);
	CHECK(ep >= 0, "epoll_create1");
	ev.data.fd = s;
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev) == 0, "EPOLL_CTL_ADD");
	CHECK(epoll_wait(ep, got, 2, 100) == 0, "nothing yet");
	lw.fd = c;
	CHECK(pthread_create(&th, NULL, late_writer, &lw) == 0, "pthread_create");
	n = (int)recv(s, b, sizeof(b), 0);
	pthread_join(th, NULL);
	CHECK(n == 10, "blocking recv: %d", n);
	CHECK(epoll_wait(ep, got, 2, 0) == 0, "nothing left after the recv");
	write_all(c, "0123456789", 10);
	n = epoll_wait(ep, got, 2, 10000);
	CHECK(n == 1 && (got[0].events & EPOLLIN), "epoll_wait after the recv's drain: n=%d", n);
	CHECK(recv(s, b, sizeof(b), 0) == 10, "the 10 bytes");
	check_path(c, 1 << 20);
	close(ep);
	close(c);
	close(s);
	return 0;
}

/* connect(AF_UNSPEC) dissolves a connection and the same socket connects
 * again (TCP-SEMANTICS.md): the old peer gets a reset after what it had
 * queued, the new connection carries the next bytes (they once went into
 * the old channel and were lost), and is accelerated like any other. */
static int case_unspec(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr un = { .sa_family = AF_UNSPEC };
	socklen_t sl = sizeof(sa);
	int l, c, s, s2, n;
	char b[16];

	l = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(l >= 0, "socket");
	CHECK(bind(l, (struct sockaddr *)&sa, sizeof(sa)) == 0, "bind");
	CHECK(listen(l, 16) == 0, "listen");
	CHECK(getsockname(l, (struct sockaddr *)&sa, &sl) == 0, "getsockname");
	c = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(c >= 0, "socket");
	CHECK(connect(c, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect");
	s = accept(l, NULL, NULL);
	CHECK(s >= 0, "accept");
	transfer(c, s, 1 << 16, 43);
	CHECK(connect(c, &un, sizeof(un)) == 0, "connect(AF_UNSPEC)");
	CHECK(connect(c, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect again");
	s2 = accept(l, NULL, NULL);
	CHECK(s2 >= 0, "accept the second connection");
	write_all(c, "hello", 5);
	read_all(s2, b, 5);
	CHECK(!memcmp(b, "hello", 5), "the new connection's bytes");
	errno = 0;
	n = (int)recv(s, b, sizeof(b), 0);
	CHECK(n < 0 && errno == ECONNRESET, "the old peer: reset (%d)", n);
	transfer(c, s2, 1 << 20, 47);
	transfer(s2, c, 1 << 20, 53);
	check_path(c, 2 << 20);
	close(s);
	close(s2);
	close(c);
	close(l);
	return 0;
}

/* Hundreds of connections under the usual soft RLIMIT_NOFILE of 1024
 * (run.sh starts this case with `ulimit -Sn 1024`): each accelerated one
 * costs the shim three descriptors, which must not come out of the
 * application's numbers (it got EMFILE at ~127 pairs in one process);
 * and the limit the application reads is the one it was given. */
static int case_nofile(void)
{
	struct rlimit rl;
	int l, n, pairs, *fds;
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	const char *e = getenv("XWAY_TEST_EXPECT");
	int accel = e && !strcmp(e, "accel");

	CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0, "getrlimit");
	if (rl.rlim_cur > 1280 || rl.rlim_cur < 256) {
		printf("skip: needs a soft RLIMIT_NOFILE in 256..1280 (have %ld)\n",
		       (long)rl.rlim_cur);
		return 77;
	}
	if (accel && rl.rlim_max < rl.rlim_cur + 1024) {
		printf("skip: the hard RLIMIT_NOFILE (%ld) leaves the shim no room above "
		       "the soft one (%ld)\n", (long)rl.rlim_max, (long)rl.rlim_cur);
		return 77;
	}
	CHECK(sysconf(_SC_OPEN_MAX) == (long)rl.rlim_cur, "sysconf(_SC_OPEN_MAX) %ld, "
	      "getrlimit %ld", sysconf(_SC_OPEN_MAX), (long)rl.rlim_cur);
	CHECK(getdtablesize() == (int)rl.rlim_cur, "getdtablesize %d", getdtablesize());
	pairs = ((int)rl.rlim_cur - 64) / 2;
	if (pairs > 450)
		pairs = 450;
	fds = calloc((size_t)pairs * 2, sizeof(int));
	CHECK(fds, "calloc");
	l = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(l >= 0, "socket");
	CHECK(bind(l, (struct sockaddr *)&sa, sizeof(sa)) == 0, "bind");
	CHECK(listen(l, 1024) == 0, "listen");
	CHECK(getsockname(l, (struct sockaddr *)&sa, &sl) == 0, "getsockname");
	for (int i = 0; i < pairs; i++) {
		char b[256];
		int c = socket(AF_INET, SOCK_STREAM, 0);
		CHECK(c >= 0, "socket %d of %d", i, pairs);
		CHECK(connect(c, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect %d", i);
		int s = accept(l, NULL, NULL);
		CHECK(s >= 0, "accept %d of %d", i, pairs);
		CHECK(c < (int)rl.rlim_cur && s < (int)rl.rlim_cur, "fds %d %d within the limit", c, s);
		fill((unsigned char *)b, sizeof(b), (unsigned)i);
		write_all(c, b, sizeof(b));
		char r[256];
		read_all(s, r, sizeof(r));
		CHECK(!memcmp(b, r, sizeof(b)), "pair %d data", i);
		fds[2 * i] = c;
		fds[2 * i + 1] = s;
	}
	/* The last ones too took the channel (not a fallback for want of
	 * descriptors). */
	transfer(fds[2 * pairs - 2], fds[2 * pairs - 1], 1 << 20, 59);
	check_path(fds[2 * pairs - 2], 1 << 20);
	n = pairs;
	for (int i = 0; i < 2 * pairs; i++)
		close(fds[i]);
	free(fds);
	close(l);
	printf("%d connections under RLIMIT_NOFILE %ld\n", n, (long)rl.rlim_cur);
	return 0;
}

/* Urgent data (TCP-SEMANTICS.md; telnet, FTP's ABOR, rlogin): only the
 * last byte of a MSG_OOB send is urgent, taken out of the stream (or left
 * in place under SO_OOBINLINE), read by recv(MSG_OOB), shown by POLLPRI
 * and SIOCATMARK, and SIGURG goes to the F_SETOWN owner.  Bytes either
 * side had in flight before it arrive intact and in order: the connection
 * leaves the channel for TCP (xway_oob_leave), which must lose nothing. */
static volatile sig_atomic_t urg_seen;
static void on_urg(int sig) { (void)sig; urg_seen++; }

static void urgent_round(int inline_mode, unsigned seed)
{
	int c, s, n, am = -1, on = 1;
	unsigned char *a = malloc(100000), *r = malloc(300000);
	struct pollfd pf;
	char o;

	CHECK(a && r, "malloc");
	mkpair(&c, &s);
	transfer(c, s, 1 << 16, seed);          /* on the channel, when accelerated */
	if (inline_mode)
		CHECK(setsockopt(s, SOL_SOCKET, SO_OOBINLINE, &on, sizeof(on)) == 0, "SO_OOBINLINE");
	CHECK(fcntl(s, F_SETOWN, getpid()) == 0, "F_SETOWN");
	urg_seen = 0;
	/* In flight both ways when the urgent byte goes. */
	fill(a, 100000, seed + 1);
	write_all(c, a, 50000);
	write_all(s, a + 50000, 40000);         /* not read by c yet */
	CHECK(send(c, "XYZ", 3, MSG_OOB) == 3, "send MSG_OOB");
	write_all(c, a + 50000, 50000);
	pf = (struct pollfd){ .fd = s, .events = POLLIN | POLLPRI };
	CHECK(poll(&pf, 1, 10000) == 1 && (pf.revents & POLLPRI), "POLLPRI (revents %#x)", pf.revents);
	for (int i = 0; i < 200 && !urg_seen; i++)
		usleep(5000);
	CHECK(urg_seen >= 1, "SIGURG to the F_SETOWN owner");
	if (!inline_mode) {
		CHECK(ioctl(s, SIOCATMARK, &am) == 0 && am == 0, "not at the mark yet (%d)", am);
		CHECK(recv(s, &o, 1, MSG_OOB) == 1 && o == 'Z', "the urgent byte");
		errno = 0;
		CHECK(recv(s, &o, 1, MSG_OOB) < 0 && errno == EINVAL, "read once: then EINVAL");
		read_all(s, r, 100002);         /* XY and the 100000 around them */
		CHECK(!memcmp(r, a, 50000) && !memcmp(r + 50000, "XY", 2) &&
		      !memcmp(r + 50002, a + 50000, 50000), "the stream without the urgent byte");
	} else {
		read_all(s, r, 100003);
		CHECK(!memcmp(r, a, 50000) && !memcmp(r + 50000, "XYZ", 3) &&
		      !memcmp(r + 50003, a + 50000, 50000), "the stream with the urgent byte in place");
	}
	n = 0;
	CHECK(ioctl(s, FIONREAD, &n) == 0 && n == 0, "nothing more (%d)", n);
	read_all(c, r, 40000);
	CHECK(!memcmp(r, a + 50000, 40000), "the other direction, in flight at the time");
	transfer(c, s, 1 << 20, seed + 2);
	transfer(s, c, 1 << 20, seed + 3);
	close(c);
	close(s);
	free(a);
	free(r);
}

static int case_urgent(void)
{
	struct sigaction sa = { .sa_handler = on_urg };

	sigemptyset(&sa.sa_mask);
	CHECK(sigaction(SIGURG, &sa, NULL) == 0, "sigaction");
	urgent_round(0, 61);
	urgent_round(1, 67);
	return 0;
}

/* A peer killed with SIGKILL (no shim code runs): with data of ours it had
 * not read, its kernel resets the connection (RST, not FIN), so we read
 * what it sent, then ECONNRESET, and a write then fails with EPIPE; with
 * nothing unread, its data, then EOF (TCP-SEMANTICS.md). */
static void killed_peer(int unread)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	int l, s, p[2];
	char b[64];
	ssize_t r;
	pid_t k;

	l = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(l >= 0 && bind(l, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(l, 4) == 0 &&
	      getsockname(l, (struct sockaddr *)&sa, &sl) == 0, "listener");
	CHECK(pipe(p) == 0, "pipe");
	k = fork();
	CHECK(k >= 0, "fork");
	if (k == 0) {
		int c = socket(AF_INET, SOCK_STREAM, 0);
		alarm(60);
		if (c < 0 || connect(c, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			_exit(2);
		write_all(c, "hi", 2);
		if (!unread) {
			read_all(c, b, 16);
		}
		write_all(p[1], "r", 1);
		pause();
		_exit(0);
	}
	s = accept(l, NULL, NULL);
	CHECK(s >= 0, "accept");
	write_all(s, "unread-by-child!", 16);
	read_all(p[0], b, 1);              /* the child wrote (and maybe read) */
	usleep(50000);
	CHECK(kill(k, SIGKILL) == 0 && waitpid(k, NULL, 0) == k, "kill");
	read_all(s, b, 2);
	CHECK(!memcmp(b, "hi", 2), "what the child sent");
	errno = 0;
	r = recv(s, b, sizeof(b), 0);
	if (unread) {
		CHECK(r < 0 && errno == ECONNRESET, "after the killed peer's reset: %zd", r);
		errno = 0;
		r = send(s, "x", 1, 0);
		CHECK(r < 0 && errno == EPIPE, "write after the reset: %zd", r);
	} else {
		CHECK(r == 0, "EOF from a killed peer that had read everything: %zd", r);
	}
	close(s);
	close(l);
	close(p[0]);
	close(p[1]);
}

static int case_killunread(void)
{
	killed_peer(1);
	killed_peer(0);
	return 0;
}

static const struct { const char *name; int (*fn)(void); } cases[] = {
	{ "tcpopts", case_tcpopts },
	{ "msg60k", case_msg60k },
	{ "splice", case_splice },
	{ "credthread", case_credthread },
	{ "fsize0", case_fsize0 },
	{ "misc", case_misc },
	{ "rcvlowat", case_rcvlowat },
	{ "epdrain", case_epdrain },
	{ "unspec", case_unspec },
	{ "nofile", case_nofile },
	{ "urgent", case_urgent },
	{ "killunread", case_killunread },
};

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "list")) {
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
			printf("%s\n", cases[i].name);
		return 0;
	}
	if (argc != 2) {
		fprintf(stderr, "usage: %s CASE | list\n", argv[0]);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	alarm(120);             /* bound every case: a hang fails */
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (!strcmp(cases[i].name, argv[1])) {
			tcase = cases[i].name;
			return cases[i].fn();
		}
	fprintf(stderr, "unknown case '%s' (xway-hz list)\n", argv[1]);
	return 2;
}
