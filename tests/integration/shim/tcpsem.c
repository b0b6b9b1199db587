/* SPDX-License-Identifier: MIT */
/*
 * xway-tcpsem: the two ends of one TCP connection per test case, as
 * separate processes, asserting Linux TCP's exact results and errno.  The
 * same program passes on plain kernel TCP and under libxway.so (the cases
 * test TCP semantics, not the shim); with XWAY_TEST_EXPECT=accel each
 * bulk case also checks that the kernel TCP socket carried ~no payload
 * (TCP_INFO tcpi_bytes_acked/received on the real socket, which is the
 * app's fd), and with XWAY_TEST_EXPECT=tcp that it carried all of it.
 *
 *   xway-tcpsem server CASE 4|6         prints "PORT PID", serves once
 *   xway-tcpsem client CASE 4|6 PORT SERVERPID
 *   xway-tcpsem list                    the case names
 *
 * Across hosts (two network namespaces, two Xen domains): the server
 * listens on XWAY_TEST_BIND (default loopback), the client connects to
 * XWAY_TEST_HOST (default loopback).  With XWAY_TEST_REMOTE=1 the client
 * cannot signal the server process itself (SERVERPID is on another host):
 * where a case signals it, the client prints "SIGNAL NAME" on stdout and
 * the driver on the server's host delivers it (kill -NAME).  Unset,
 * nothing changes.
 *
 * Exit 0 = pass; a failed check prints "FAIL case: what" and exits 1.
 * Run by run.sh; never needs root.  Bounded: every process arms alarm().
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <linux/sockios.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

static const char *tcase = "?";
static int family = AF_INET;
static int remote;              /* XWAY_TEST_REMOTE: the driver signals */
/* XWAY_TEST_XEN_GAPS=1 (the Xen test bed's workload 60): skip the checks
 * of behaviour the Xen backend does not emulate yet (docs/XEN.md). */
static int xen_gaps;

#define CHECK(cond, ...) do { if (!(cond)) { \
	fprintf(stderr, "FAIL %s (%s:%d): ", tcase, __FILE__, __LINE__); \
	fprintf(stderr, __VA_ARGS__); fprintf(stderr, " [errno %d %s]\n", \
	errno, strerror(errno)); exit(1); } } while (0)
#define CHECK_ERR(expr, want) do { errno = 0; long r_ = (long)(expr); \
	CHECK(r_ == -1 && errno == (want), "%s: got %ld errno %s, want -1 %s", \
	      #expr, r_, strerror(errno), strerror(want)); } while (0)

static volatile sig_atomic_t sigpipes, sigalrms;
static void on_pipe(int s) { (void)s; sigpipes++; }
static void on_alrm(int s) { (void)s; sigalrms++; }

static uint64_t rng_state;
static uint32_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)rng_state;
}

static void write_all(int fd, const void *b, size_t n)
{
	const char *p = b;
	while (n) {
		ssize_t w = write(fd, p, n);
		CHECK(w > 0, "write_all %zd", w);
		p += w;
		n -= (size_t)w;
	}
}

static void read_exact(int fd, void *b, size_t n)
{
	char *p = b;
	while (n) {
		ssize_t r = read(fd, p, n);
		CHECK(r > 0, "read_exact: %zd with %zu left", r, n);
		p += r;
		n -= (size_t)r;
	}
}

static void sync_recv(int fd, char want)
{
	char c = 0;
	CHECK(recv(fd, &c, 1, MSG_WAITALL) == 1 && c == want, "sync '%c' got '%c'", want, c);
}

static void sync_send(int fd, char c)
{
	CHECK(send(fd, &c, 1, MSG_NOSIGNAL) == 1, "sync send '%c'", c);
}

/* Signal the server process: directly, or (XWAY_TEST_REMOTE) through the
 * driver, which reads our stdout.  0 or -1 as kill(). */
static int signal_server(pid_t sp, int sig, const char *name)
{
	if (!remote)
		return kill(sp, sig);
	return printf("SIGNAL %s\n", name) > 0 && fflush(stdout) == 0 ? 0 : -1;
}

/* Kernel TCP payload counters of the socket vs the payload moved. */
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
	struct sockaddr_storage ss;
	socklen_t sl;
	int fd = socket(family, SOCK_STREAM, 0), one = 1;

	CHECK(fd >= 0, "socket");
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		struct sockaddr_in *s = (void *)&ss;
		s->sin_family = AF_INET;
		s->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sl = sizeof(*s);
	} else {
		struct sockaddr_in6 *s = (void *)&ss;
		s->sin6_family = AF_INET6;
		s->sin6_addr = in6addr_loopback;
		sl = sizeof(*s);
	}
	const char *bind_ip = getenv("XWAY_TEST_BIND");
	if (bind_ip && *bind_ip) {
		if (family == AF_INET)
			inet_pton(AF_INET, bind_ip, &((struct sockaddr_in *)&ss)->sin_addr);
		else
			inet_pton(AF_INET6, bind_ip, &((struct sockaddr_in6 *)&ss)->sin6_addr);
	}
	CHECK(bind(fd, (void *)&ss, sl) == 0, "bind");
	CHECK(listen(fd, 16) == 0, "listen");
	sl = sizeof(ss);
	CHECK(getsockname(fd, (void *)&ss, &sl) == 0, "getsockname");
	*port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
					: ((struct sockaddr_in6 *)&ss)->sin6_port);
	return fd;
}

static socklen_t dial_addr(const char *host, int port, struct sockaddr_storage *to)
{
	struct sockaddr_storage ss;
	socklen_t sl;

	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		struct sockaddr_in *s = (void *)&ss;
		s->sin_family = AF_INET;
		s->sin_port = htons((uint16_t)port);
		CHECK(inet_pton(AF_INET, host, &s->sin_addr) == 1, "addr %s", host);
		sl = sizeof(*s);
	} else {
		struct sockaddr_in6 *s = (void *)&ss;
		s->sin6_family = AF_INET6;
		s->sin6_port = htons((uint16_t)port);
		CHECK(inet_pton(AF_INET6, host, &s->sin6_addr) == 1, "addr %s", host);
		sl = sizeof(*s);
	}
	*to = ss;
	return sl;
}

static int dial(const char *host, int port, int nonblock)
{
	struct sockaddr_storage ss;
	socklen_t sl = dial_addr(host, port, &ss);
	int fd = socket(family, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0);

	CHECK(fd >= 0, "socket");
	int r = connect(fd, (void *)&ss, sl);
	if (nonblock) {
		CHECK(r == -1 && errno == EINPROGRESS, "nonblocking connect: EINPROGRESS");
		struct pollfd p = { .fd = fd, .events = POLLOUT };
		CHECK(poll(&p, 1, 10000) == 1 && (p.revents & POLLOUT), "POLLOUT after connect");
		int err = -1;
		socklen_t el = sizeof(err);
		CHECK(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0, "SO_ERROR 0");
		CHECK(connect(fd, (void *)&ss, sl) == 0 || errno == EISCONN, "connect after POLLOUT");
		CHECK_ERR(connect(fd, (void *)&ss, sl), EISCONN);
		CHECK(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) == 0, "blocking");
	} else {
		CHECK(r == 0, "connect to %s:%d", host, port);
	}
	return fd;
}

static uint64_t fnv(uint64_t h, const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 1099511628211ull;
	return h;
}

/* ---- bulk: 64 MiB (XWAY_TEST_MB) each way at once, random sizes ------- */

struct bulk { int fd; uint64_t seed, bytes, sum; };

static void *bulk_writer(void *arg)
{
	struct bulk *b = arg;
	uint64_t st = b->seed, left = b->bytes, h = 1469598103934665603ull;
	static _Thread_local unsigned char buf[256 * 1024];

	while (left) {
		st ^= st << 13; st ^= st >> 7; st ^= st << 17;
		size_t n = 1 + (size_t)(st % sizeof(buf));
		if (n > left)
			n = (size_t)left;
		for (size_t i = 0; i < n; i++)
			buf[i] = (unsigned char)((st >> (i & 31)) + i);
		h = fnv(h, buf, n);
		write_all(b->fd, buf, n);
		left -= n;
	}
	b->sum = h;
	return NULL;
}

static uint64_t bulk_read(int fd, uint64_t bytes, uint64_t seed)
{
	static unsigned char buf[256 * 1024];
	uint64_t h = 1469598103934665603ull, got = 0, st = seed;

	while (got < bytes) {
		st ^= st << 13; st ^= st >> 7; st ^= st << 17;
		size_t n = 1 + (size_t)(st % sizeof(buf));
		if (n > bytes - got)
			n = (size_t)(bytes - got);
		ssize_t r = read(fd, buf, n);
		CHECK(r > 0, "bulk read at %llu of %llu", (unsigned long long)got,
		      (unsigned long long)bytes);
		h = fnv(h, buf, (size_t)r);
		got += (uint64_t)r;
	}
	return h;
}

static uint64_t bulk_bytes(void)
{
	const char *m = getenv("XWAY_TEST_MB");
	return (uint64_t)(m ? atoi(m) : 64) << 20;
}

static void bulk_side(int fd, int is_client)
{
	uint64_t seed = getenv("XWAY_TEST_SEED") ? strtoull(getenv("XWAY_TEST_SEED"), 0, 0)
						 : 0x1234567ull;
	struct bulk w = { .fd = fd, .seed = seed + (uint64_t)is_client, .bytes = bulk_bytes() };
	pthread_t t;

	CHECK(pthread_create(&t, NULL, bulk_writer, &w) == 0, "thread");
	uint64_t h = bulk_read(fd, w.bytes, seed + 7);
	pthread_join(t, NULL);
	/* Exchange checksums: each side checks what it received. */
	uint64_t peer;
	write_all(fd, &w.sum, sizeof(w.sum));
	read_exact(fd, &peer, sizeof(peer));
	CHECK(peer == h, "checksum mismatch (seed %llu)", (unsigned long long)seed);
	check_path(fd, 2 * w.bytes);
}

/* ---- cases ------------------------------------------------------------ */

/* Check that data flows both ways and the payload took the expected path. */
static void echo_server(int fd)
{
	static char buf[1 << 20];
	read_exact(fd, buf, sizeof(buf));
	write_all(fd, buf, sizeof(buf));
	sync_recv(fd, 'q');
	check_path(fd, 2 * sizeof(buf));
}
static void echo_client(int fd, pid_t sp)
{
	static char a[1 << 20], b[1 << 20];
	(void)sp;
	for (size_t i = 0; i < sizeof(a); i++)
		a[i] = (char)rnd();
	write_all(fd, a, sizeof(a));
	read_exact(fd, b, sizeof(b));
	CHECK(!memcmp(a, b, sizeof(a)), "echo data differs");
	check_path(fd, 2 * sizeof(a));
	sync_send(fd, 'q');
}

static void bulk_server(int fd) { bulk_side(fd, 0); }
static void bulk_client(int fd, pid_t sp) { (void)sp; bulk_side(fd, 1); }

/* Check: peer close -> queued data, then 0; first write succeeds, later
 * EPIPE with SIGPIPE (none with MSG_NOSIGNAL). */
static void eof_server(int fd)
{
	write_all(fd, "bye", 3);
	sync_recv(fd, 'c');
}
static void eof_client(int fd, pid_t sp)
{
	char b[8];
	(void)sp;
	sync_send(fd, 'c');
	read_exact(fd, b, 3);
	CHECK(!memcmp(b, "bye", 3), "data before EOF");
	CHECK(read(fd, b, sizeof(b)) == 0, "EOF after peer close");
	CHECK(read(fd, b, sizeof(b)) == 0, "EOF again");
	CHECK(send(fd, "x", 1, MSG_NOSIGNAL) == 1, "first write after peer close succeeds");
	int got = 0;
	for (int i = 0; i < 200 && !got; i++) {
		errno = 0;
		ssize_t r = send(fd, "x", 1, MSG_NOSIGNAL);
		if (r < 0) {
			CHECK(errno == EPIPE || errno == ECONNRESET, "later write: EPIPE");
			got = errno;
		} else {
			usleep(10000);
		}
	}
	CHECK(got, "a later write fails");
	CHECK(sigpipes == 0, "no SIGPIPE with MSG_NOSIGNAL");
	CHECK_ERR(write(fd, "x", 1), EPIPE);
	CHECK(sigpipes == 1, "SIGPIPE on write after close (got %d)", (int)sigpipes);
}

/* Check: abortive close (SO_LINGER {1,0}) -> queued data first, then
 * ECONNRESET once, then 0. */
static void rst_server(int fd)
{
	struct linger lg = { 1, 0 };
	write_all(fd, "data", 4);
	sync_recv(fd, 'r');
	CHECK(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) == 0, "SO_LINGER");
	close(fd);
	exit(0);
}
static void rst_client(int fd, pid_t sp)
{
	char b[16];
	(void)sp;
	sync_send(fd, 'r');
	/* The data was queued before the reset. */
	read_exact(fd, b, 4);
	CHECK(!memcmp(b, "data", 4), "queued data");
	CHECK_ERR(read(fd, b, sizeof(b)), ECONNRESET);
	CHECK(read(fd, b, sizeof(b)) == 0, "0 after ECONNRESET");
	/* The read took the reset: writes get EPIPE and SIGPIPE (across Xen
	 * too since session 8). */
	CHECK_ERR(send(fd, "x", 1, 0), EPIPE);
	CHECK(sigpipes == 1, "SIGPIPE on a write after the read took the reset");
}

/* Check: close with unread incoming data resets the connection; the
 * writer sees ECONNRESET on its next read. */
static void unread_server(int fd)
{
	char b[4];
	read_exact(fd, b, 1);          /* "a": more follows, never read */
	usleep(100000);
	close(fd);
	exit(0);
}
static void unread_client(int fd, pid_t sp)
{
	char b[4];
	(void)sp;
	write_all(fd, "abcdef", 6);
	errno = 0;
	ssize_t r = read(fd, b, sizeof(b));
	CHECK(r == -1 && errno == ECONNRESET, "close with unread data resets: got %zd", r);
}

/* Check: SHUT_WR -> peer reads everything then 0 and can still send back;
 * our writes after SHUT_WR get EPIPE + SIGPIPE. */
static void shut_server(int fd)
{
	static char b[100000];
	read_exact(fd, b, sizeof(b));
	CHECK(read(fd, b, 1) == 0, "EOF after SHUT_WR");
	write_all(fd, "reply", 5);
	close(fd);
}
static void shut_client(int fd, pid_t sp)
{
	static char b[100000];
	(void)sp;
	memset(b, 'z', sizeof(b));
	write_all(fd, b, sizeof(b));
	CHECK(shutdown(fd, SHUT_WR) == 0, "shutdown SHUT_WR");
	CHECK_ERR(send(fd, "x", 1, 0), EPIPE);
	CHECK(sigpipes == 1, "SIGPIPE after own SHUT_WR");
	read_exact(fd, b, 5);
	CHECK(!memcmp(b, "reply", 5), "reply after SHUT_WR");
	CHECK(read(fd, b, 1) == 0, "EOF");
}

/* Check: MSG_PEEK, MSG_DONTWAIT, zero-length reads, MSG_TRUNC, MSG_WAITALL,
 * recvfrom/recvmsg address lengths, FIONREAD. */
static void flags_server(int fd)
{
	sync_recv(fd, '1');
	write_all(fd, "hello world", 11);
	sync_recv(fd, '2');
	for (int i = 0; i < 10; i++) {
		char b[100];
		memset(b, 'a' + i, sizeof(b));
		write_all(fd, b, sizeof(b));
		usleep(2000);
	}
	sync_recv(fd, '3');
}
static void flags_client(int fd, pid_t sp)
{
	char b[2000];
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	(void)sp;
	CHECK_ERR(recv(fd, b, sizeof(b), MSG_DONTWAIT), EAGAIN);
	CHECK_ERR(recv(fd, b, 0, MSG_DONTWAIT), EAGAIN);
	CHECK(read(fd, b, 0) == 0, "read of 0 bytes returns 0 at once");
	sync_send(fd, '1');
	CHECK(recv(fd, b, 0, 0) == 0, "recv(0) blocks until data, then 0");
	/* All 11 bytes may take a moment to be there: peek until they are. */
	ssize_t n = 0;
	for (int i = 0; i < 500 && n < 11; i++) {
		n = recv(fd, b, 11, MSG_PEEK);
		if (n < 11)
			usleep(1000);
	}
	CHECK(n == 11 && !memcmp(b, "hello world", 11), "peek");
	int avail = -1;
	CHECK(ioctl(fd, FIONREAD, &avail) == 0 && avail == 11, "FIONREAD %d", avail);
	CHECK(recv(fd, NULL, 6, MSG_TRUNC) == 6, "MSG_TRUNC discards");
	memset(&ss, 0x5a, sizeof(ss));
	CHECK(recvfrom(fd, b, sizeof(b), 0, (void *)&ss, &sl) == 5, "recvfrom");
	CHECK(sl == 0 && ((unsigned char *)&ss)[0] == 0x5a, "recvfrom: addrlen 0, addr untouched");
	CHECK(!memcmp(b, "world", 5), "data after trunc");
	sync_send(fd, '2');
	CHECK(recv(fd, b, 1000, MSG_WAITALL) == 1000, "MSG_WAITALL gets all");
	for (int i = 0; i < 10; i++)
		CHECK(b[i * 100] == 'a' + i && b[i * 100 + 99] == 'a' + i, "waitall order");
	struct iovec iov = { b, 10 };
	struct msghdr m = { .msg_name = &ss, .msg_namelen = sizeof(ss), .msg_iov = &iov,
			    .msg_iovlen = 1 };
	CHECK_ERR(recvmsg(fd, &m, MSG_DONTWAIT), EAGAIN);
	sync_send(fd, '3');
}

/* Check: O_NONBLOCK by fcntl and FIONBIO; SO_RCVTIMEO gives EAGAIN;
 * SO_SNDTIMEO on a full pipe gives a partial count or EAGAIN. */
static volatile sig_atomic_t usr1;
static void on_usr1(int s) { (void)s; usr1 = 1; }

/* SIGUSR1 blocked (taken only where the case unblocks it) and handled by
 * on_usr1; *none is the empty set to unblock it with. */
static void usr1_blocked(sigset_t *none)
{
	struct sigaction sa = { .sa_handler = on_usr1 };
	sigset_t usr;

	sigemptyset(&usr);
	sigaddset(&usr, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	sigemptyset(none);
}

static void nb_server(int fd)
{
	sigset_t none;

	usr1_blocked(&none);
	sync_recv(fd, 'n');
	write_all(fd, "x", 1);
	/* Read nothing more: the client fills the pipe and tells us (SIGUSR1)
	 * when it is done; alarm() bounds the wait. */
	sigemptyset(&none);
	while (!usr1)
		sigsuspend(&none);
	exit(0);
}
static void nb_client(int fd, pid_t sp)
{
	char b[16];
	int fl = fcntl(fd, F_GETFL);
	CHECK(fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0, "F_SETFL");
	CHECK_ERR(read(fd, b, sizeof(b)), EAGAIN);
	CHECK(fcntl(fd, F_SETFL, fl) == 0, "F_SETFL back");
	int on = 1;
	CHECK(ioctl(fd, FIONBIO, &on) == 0, "FIONBIO");
	CHECK_ERR(recv(fd, b, sizeof(b), 0), EAGAIN);
	on = 0;
	CHECK(ioctl(fd, FIONBIO, &on) == 0, "FIONBIO off");
	struct timeval tv = { 0, 200000 };
	CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0, "SO_RCVTIMEO");
	CHECK_ERR(recv(fd, b, sizeof(b), 0), EAGAIN);
	tv.tv_usec = 0;
	CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0, "SO_RCVTIMEO off");
	sync_send(fd, 'n');
	CHECK(read(fd, b, 1) == 1 && b[0] == 'x', "blocking read again");
	/* A non-blocking writer fills the pipe: short count, then EAGAIN. */
	static char big[1 << 16];
	CHECK(fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0, "F_SETFL");
	long total = 0;
	int eagain = 0;
	for (int i = 0; i < 100000 && !eagain; i++) {
		ssize_t w = send(fd, big, sizeof(big), 0);
		if (w < 0) {
			CHECK(errno == EAGAIN, "non-blocking full: EAGAIN");
			eagain = 1;
		} else {
			total += w;
		}
	}
	CHECK(eagain && total > 0, "filled %ld bytes then EAGAIN", total);
	CHECK(fcntl(fd, F_SETFL, fl) == 0, "F_SETFL back");
	tv.tv_usec = 200000;
	CHECK(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) == 0, "SO_SNDTIMEO");
	CHECK_ERR(send(fd, big, sizeof(big), 0), EAGAIN);
	CHECK(signal_server(sp, SIGUSR1, "USR1") == 0, "tell the server we are done");
	exit(0);   /* unread data at both ends: no orderly close to check */
}

/* Check: a blocking recv interrupted by a signal without SA_RESTART gives
 * EINTR; with SA_RESTART it restarts and returns the data. */
static void intr_server(int fd)
{
	sync_recv(fd, 'i');
	sync_recv(fd, 'j');
	usleep(300000);
	write_all(fd, "late", 4);
	sync_recv(fd, 'k');
}
static void intr_client(int fd, pid_t sp)
{
	char b[8];
	struct sigaction sa = { .sa_handler = on_alrm };
	struct itimerval it = { { 0, 0 }, { 0, 100000 } };
	(void)sp;
	sigaction(SIGALRM, &sa, NULL);
	sync_send(fd, 'i');
	setitimer(ITIMER_REAL, &it, NULL);
	CHECK_ERR(recv(fd, b, sizeof(b), 0), EINTR);
	CHECK(sigalrms == 1, "handler ran");
	sa.sa_flags = SA_RESTART;
	sigaction(SIGALRM, &sa, NULL);
	sync_send(fd, 'j');
	setitimer(ITIMER_REAL, &it, NULL);
	CHECK(recv(fd, b, 4, MSG_WAITALL) == 4 && !memcmp(b, "late", 4), "restarted recv");
	sync_send(fd, 'k');
	alarm(60);
}

/* Check: the peer killed by SIGKILL mid-transfer -> EOF or ECONNRESET
 * (bounded by alarm, no timing assertion). */
static void kill_server(int fd)
{
	static char b[65536];
	memset(b, 'k', sizeof(b));
	for (long i = 0; i < 1000000; i++)
		if (write(fd, b, sizeof(b)) < 0)
			break;
}
static void kill_client(int fd, pid_t sp)
{
	static char b[65536];
	long got = 0;
	struct timespec t0, t1;
	read_exact(fd, b, 1 << 16);
	CHECK(signal_server(sp, SIGKILL, "KILL") == 0, "kill server");
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long i = 0; i < 100000000; i++) {
		ssize_t r = read(fd, b, sizeof(b));
		if (r <= 0) {
			CHECK(r == 0 || errno == ECONNRESET, "after SIGKILL: EOF or ECONNRESET");
			/* Generous bound (the requirement is 2 s): a loaded
			 * machine must not make this flaky; remote, the
			 * driver's relay (and emulated hosts) add more. */
			clock_gettime(CLOCK_MONOTONIC, &t1);
			CHECK(t1.tv_sec - t0.tv_sec < (remote ? 60 : 20), "EOF/RST took %ld s",
			      (long)(t1.tv_sec - t0.tv_sec));
			return;
		}
		got += r;
	}
	CHECK(0, "no EOF after kill (%ld bytes)", got);
}

/* Check: SO_LINGER {1,N}: close returns 0 and everything is delivered. */
static void linger_server(int fd)
{
	static char b[200000];
	struct linger lg = { 1, 5 };
	memset(b, 'L', sizeof(b));
	CHECK(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) == 0, "SO_LINGER");
	write_all(fd, b, sizeof(b));
	CHECK(close(fd) == 0, "linger close returns 0");
	exit(0);
}
static void linger_client(int fd, pid_t sp)
{
	static char b[200000];
	(void)sp;
	usleep(200000);
	read_exact(fd, b, sizeof(b));
	CHECK(b[0] == 'L' && b[sizeof(b) - 1] == 'L', "data");
	CHECK(read(fd, b, 1) == 0, "EOF after linger close");
}

/* Check: dup'ed descriptors share the connection; closing one keeps it. */
static void dup_server(int fd)
{
	char b[8];
	int d = dup(fd);
	CHECK(d >= 0, "dup");
	CHECK(close(fd) == 0, "close original");
	read_exact(d, b, 4);
	CHECK(!memcmp(b, "dup!", 4), "data via dup");
	int d2 = fcntl(d, F_DUPFD_CLOEXEC, 100);
	CHECK(d2 >= 100, "F_DUPFD_CLOEXEC");
	CHECK(dup2(d2, d) == d, "dup2 onto itself's twin");
	write_all(d2, "ok", 2);
	close(d);
	sync_recv(d2, 'd');
	close(d2);
}
static void dup_client(int fd, pid_t sp)
{
	char b[4];
	(void)sp;
	write_all(fd, "dup!", 4);
	read_exact(fd, b, 2);
	CHECK(!memcmp(b, "ok", 2), "reply");
	sync_send(fd, 'd');
	CHECK(read(fd, b, 1) == 0, "EOF");
}

/* Check: writev/readv/sendmsg/sendmmsg/recvmmsg move iovecs in order. */
static void vec_server(int fd)
{
	char b[64];
	struct iovec iov[3] = { { b, 3 }, { b + 3, 5 }, { b + 8, 56 } };
	size_t got = 0;
	while (got < 26) {
		ssize_t r = readv(fd, iov, 3);
		CHECK(r > 0, "readv");
		got += (size_t)r;
		iov[0].iov_base = b + got; iov[0].iov_len = 1;
		iov[1].iov_base = b + got + 1; iov[1].iov_len = 1;
		iov[2].iov_base = b + got + 2; iov[2].iov_len = 60 - got;
	}
	CHECK(!memcmp(b, "abcdefghijklmnopqrstuvwxyz", 26), "vector data %.26s", b);
	struct iovec o[2] = { { "12", 2 }, { "345", 3 } };
	struct msghdr m = { .msg_iov = o, .msg_iovlen = 2 };
	CHECK(sendmsg(fd, &m, 0) == 5, "sendmsg");
	struct mmsghdr mm[2];
	memset(mm, 0, sizeof(mm));
	mm[0].msg_hdr.msg_iov = &o[0]; mm[0].msg_hdr.msg_iovlen = 1;
	mm[1].msg_hdr.msg_iov = &o[1]; mm[1].msg_hdr.msg_iovlen = 1;
	CHECK(sendmmsg(fd, mm, 2, 0) == 2, "sendmmsg");
	sync_recv(fd, 'v');
}
static void vec_client(int fd, pid_t sp)
{
	struct iovec iov[3] = { { "abcdefgh", 8 }, { "ijklm", 5 }, { "nopqrstuvwxyz", 13 } };
	char b[16];
	(void)sp;
	CHECK(writev(fd, iov, 3) == 26, "writev");
	read_exact(fd, b, 10);
	CHECK(!memcmp(b, "1234512345", 10), "sendmsg+sendmmsg data");
	sync_send(fd, 'v');
}

/* Check: MSG_OOB to a receiver with SO_OOBINLINE arrives inline, in order;
 * TCP_DEFER_ACCEPT reads back as the kernel rounds it (set on the
 * listener by the server before accept: see main). */
static void oob_server(int fd)
{
	char b[8];
	size_t got = 0;
	int on = 1;
	sync_recv(fd, 'x');       /* the data TCP_DEFER_ACCEPT waited for */
	CHECK(setsockopt(fd, SOL_SOCKET, SO_OOBINLINE, &on, sizeof(on)) == 0, "SO_OOBINLINE");
	sync_send(fd, 'o');
	while (got < 5) {        /* the urgent mark may split the read */
		ssize_t r = read(fd, b + got, 5 - got);
		CHECK(r > 0, "read inline urgent data");
		got += (size_t)r;
	}
	CHECK(!memcmp(b, "ab!cd", 5), "inline order: %.5s", b);
	sync_send(fd, 'p');
}
static void oob_client(int fd, pid_t sp)
{
	(void)sp;
	sync_send(fd, 'x');
	sync_recv(fd, 'o');
	CHECK(send(fd, "ab!", 3, MSG_OOB) == 3, "send MSG_OOB");
	CHECK(send(fd, "cd", 2, 0) == 2, "send after");
	sync_recv(fd, 'p');
}

/* Check: connect to a port nobody listens on: ECONNREFUSED exactly (the
 * server process closed its listener before printing the port). */
static void refused_server(int fd) { (void)fd; }
static void refused_client(int fd, pid_t sp) { (void)fd; (void)sp; }

/* Check: sendfile from a file (with and without an offset) arrives whole;
 * recvmmsg takes what is there; SIOCOUTQ is 0 once the peer read it all. */
static void sendfile_server(int fd)
{
	char path[] = "/tmp/xway-sendfile.XXXXXX";
	static char b[300000];
	int f = mkstemp(path);
	CHECK(f >= 0, "mkstemp");
	unlink(path);
	for (size_t i = 0; i < sizeof(b); i++)
		b[i] = (char)(i * 7);
	write_all(f, b, sizeof(b));
	off_t off = 1000;
	CHECK(sendfile(fd, f, &off, 100000) == 100000 && off == 101000, "sendfile with offset");
	CHECK(lseek(f, 0, SEEK_SET) == 0, "lseek");
	size_t sent = 0;
	while (sent < sizeof(b)) {
		ssize_t n = sendfile(fd, f, NULL, sizeof(b) - sent);
		CHECK(n > 0, "sendfile without offset");
		sent += (size_t)n;
	}
	CHECK(lseek(f, 0, SEEK_CUR) == (off_t)sizeof(b), "file position advanced");
	close(f);
	sync_recv(fd, 's');
	int outq = -1;
	CHECK(ioctl(fd, SIOCOUTQ, &outq) == 0, "SIOCOUTQ");
	for (int i = 0; i < 1000 && outq != 0; i++) {
		usleep(1000);
		ioctl(fd, SIOCOUTQ, &outq);
	}
	CHECK(outq == 0, "SIOCOUTQ 0 after the peer read everything (%d)", outq);
	write_all(fd, "abcdef", 6);
	sync_recv(fd, 't');
}
static void sendfile_client(int fd, pid_t sp)
{
	static char b[300000];
	(void)sp;
	read_exact(fd, b, 100000);
	for (size_t i = 0; i < 100000; i++)
		CHECK(b[i] == (char)((i + 1000) * 7), "sendfile offset data at %zu", i);
	read_exact(fd, b, sizeof(b));
	for (size_t i = 0; i < sizeof(b); i++)
		CHECK(b[i] == (char)(i * 7), "sendfile data at %zu", i);
	sync_send(fd, 's');
	char x[3], y[3];
	struct iovec v[2] = { { x, 3 }, { y, 3 } };
	struct mmsghdr mm[2];
	memset(mm, 0, sizeof(mm));
	mm[0].msg_hdr.msg_iov = &v[0]; mm[0].msg_hdr.msg_iovlen = 1;
	mm[1].msg_hdr.msg_iov = &v[1]; mm[1].msg_hdr.msg_iovlen = 1;
	/* Wait for all 6 bytes, so both messages have data. */
	int avail = 0;
	for (int i = 0; i < 2000 && avail < 6; i++) {
		ioctl(fd, FIONREAD, &avail);
		if (avail < 6)
			usleep(1000);
	}
	CHECK(recvmmsg(fd, mm, 2, 0, NULL) == 2, "recvmmsg");
	CHECK(mm[0].msg_len == 3 && mm[1].msg_len == 3 && !memcmp(x, "abc", 3) &&
	      !memcmp(y, "def", 3), "recvmmsg data");
	sync_send(fd, 't');
}

/* ---- epoll: the event-loop servers' pattern (nginx, apache's event MPM,
 * node): non-blocking writes until EAGAIN, then sleep in epoll_wait for
 * EPOLLOUT (edge-triggered) on one side; EPOLLIN with EPOLLONESHOT,
 * re-armed by EPOLL_CTL_MOD after each drain, on the other.  Every
 * wake-up must come: a wait that times out with the transfer unfinished
 * is a lost notification, which a blocking read or write never shows.
 * XWAY_TEST_MB bytes server to client, checksummed. */
#define EPOLL_WAIT_MS 30000

static void epoll_one(int ep, int fd, uint32_t want, const char *what, uint64_t at)
{
	struct epoll_event e;
	int n;

	do
		n = epoll_wait(ep, &e, 1, EPOLL_WAIT_MS);
	while (n < 0 && errno == EINTR);
	CHECK(n == 1, "%s: no wake-up within %d ms at byte %llu (a lost notification)",
	      what, EPOLL_WAIT_MS, (unsigned long long)at);
	CHECK(e.data.fd == fd && (e.events & (want | EPOLLERR | EPOLLHUP)),
	      "%s: event %#x", what, e.events);
}

static void epoll_server(int fd)
{
	static unsigned char buf[256 * 1024];
	uint64_t total = bulk_bytes(), sent = 0, st = 0x5eedull, h = 1469598103934665603ull;
	size_t have = 0, off = 0;
	int ep = epoll_create1(EPOLL_CLOEXEC), waits = 0;
	struct epoll_event e = { .events = EPOLLOUT | EPOLLET, .data.fd = fd };

	CHECK(ep >= 0 && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0, "setup");
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) == 0, "EPOLL_CTL_ADD");
	while (sent < total) {
		if (off == have) {
			st ^= st << 13; st ^= st >> 7; st ^= st << 17;
			have = 1 + (size_t)(st % sizeof(buf));
			if (have > total - sent)
				have = (size_t)(total - sent);
			for (size_t i = 0; i < have; i++)
				buf[i] = (unsigned char)((st >> (i & 31)) + i);
			h = fnv(h, buf, have);
			off = 0;
		}
		ssize_t w = send(fd, buf + off, have - off, MSG_NOSIGNAL);
		if (w < 0) {
			CHECK(errno == EAGAIN, "non-blocking send");
			/* Edge-triggered: sleep only after EAGAIN, as the
			 * contract says. */
			epoll_one(ep, fd, EPOLLOUT, "EPOLLOUT|EPOLLET", sent);
			waits++;
			continue;
		}
		off += (size_t)w;
		sent += (uint64_t)w;
	}
	/* The checksum back: EPOLLIN, level-triggered this time. */
	e.events = EPOLLIN;
	CHECK(epoll_ctl(ep, EPOLL_CTL_MOD, fd, &e) == 0, "EPOLL_CTL_MOD");
	uint64_t peer = 0;
	size_t got = 0;
	while (got < sizeof(peer)) {
		epoll_one(ep, fd, EPOLLIN, "EPOLLIN (checksum)", sent);
		ssize_t r = recv(fd, (char *)&peer + got, sizeof(peer) - got, 0);
		CHECK(r > 0 || (r < 0 && errno == EAGAIN), "checksum recv %zd", r);
		if (r > 0)
			got += (size_t)r;
	}
	CHECK(peer == h, "checksum mismatch after %d EPOLLOUT waits", waits);
	/* A channel's ring is far smaller than the transfer, and the client
	 * sits on the first bytes for 200 ms: the pipe filled at least once.
	 * (Kernel TCP's autotuned buffers may swallow a small transfer.) */
	const char *ex = getenv("XWAY_TEST_EXPECT");
	CHECK(!ex || strcmp(ex, "accel") || total < (4u << 20) || waits > 0,
	      "never filled the pipe: no EPOLLOUT wait");
	check_path(fd, total);
	close(ep);
}
static void epoll_client(int fd, pid_t sp)
{
	static unsigned char buf[64 * 1024];
	uint64_t total = bulk_bytes(), got = 0, h = 1469598103934665603ull;
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event e = { .events = EPOLLIN | EPOLLONESHOT, .data.fd = fd };
	(void)sp;

	CHECK(ep >= 0 && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0, "setup");
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) == 0, "EPOLL_CTL_ADD");
	/* Sleep between drains (long after the first wake-up) so the
	 * server's ring fills and it waits for EPOLLOUT, as behind a busy
	 * event loop. */
	for (unsigned round = 0; got < total; round++) {
		epoll_one(ep, fd, EPOLLIN, "EPOLLIN|EPOLLONESHOT", got);
		for (;;) {
			ssize_t r = recv(fd, buf, 1 + rnd() % sizeof(buf), 0);
			if (r < 0) {
				CHECK(errno == EAGAIN, "non-blocking recv");
				break;
			}
			CHECK(r > 0, "EOF at %llu of %llu", (unsigned long long)got,
			      (unsigned long long)total);
			h = fnv(h, buf, (size_t)r);
			got += (uint64_t)r;
		}
		if (round == 0)
			usleep(200000);
		else if (round % 64 == 0)
			usleep(2000);
		CHECK(epoll_ctl(ep, EPOLL_CTL_MOD, fd, &e) == 0, "EPOLL_CTL_MOD re-arm");
	}
	CHECK(got == total, "read %llu, more than %llu", (unsigned long long)got,
	      (unsigned long long)total);
	CHECK(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) == 0, "blocking again");
	write_all(fd, &h, sizeof(h));
	check_path(fd, total);
	close(ep);
}

/* ---- session 7: more of TCP-SEMANTICS.md ------------------------------- */

/* Kernel TCP payload counters after a small exchange: accelerated, the
 * kernel carried none of it (the SYN and a FIN each way add one to a
 * counter); on TCP, at least the `received` bytes this side got. */
static void check_small(int fd, uint64_t received)
{
	const char *e = getenv("XWAY_TEST_EXPECT");
	struct tcp_info ti;
	socklen_t l = sizeof(ti);

	if (!e || !*e)
		return;
	memset(&ti, 0, sizeof(ti));
	CHECK(getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) == 0, "TCP_INFO");
	uint64_t k = ti.tcpi_bytes_acked + ti.tcpi_bytes_received;
	if (!strcmp(e, "accel"))
		CHECK(k <= 3, "accelerated: kernel TCP carried %llu bytes (acked %llu, "
		      "received %llu)", (unsigned long long)k,
		      (unsigned long long)ti.tcpi_bytes_acked,
		      (unsigned long long)ti.tcpi_bytes_received);
	else if (!strcmp(e, "tcp"))
		CHECK(ti.tcpi_bytes_received >= received, "plain TCP: kernel received %llu of %llu",
		      (unsigned long long)ti.tcpi_bytes_received, (unsigned long long)received);
}

/* Wait (bounded) until FIONREAD says n bytes are queued. */
static void wait_queued(int fd, int n)
{
	int avail = -1;
	for (int i = 0; i < 10000; i++) {
		CHECK(ioctl(fd, FIONREAD, &avail) == 0, "FIONREAD");
		if (avail >= n)
			return;
		usleep(1000);
	}
	CHECK(0, "only %d of %d bytes arrived", avail, n);
}

static short poll_now(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN | POLLOUT | POLLRDHUP | POLLPRI };
	CHECK(poll(&p, 1, 0) >= 0, "poll");
	return p.revents;
}

/* Poll until one of the bits in `want` shows (bounded: 20 s; other bits
 * may already be set, so each look is a 10 ms poll or a 10 ms nap). */
static short poll_until(int fd, short want)
{
	struct timespec t0, t1;
	short r = 0;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (t1 = t0; t1.tv_sec - t0.tv_sec < 20 && !(r & want);
	     clock_gettime(CLOCK_MONOTONIC, &t1)) {
		struct pollfd p = { .fd = fd, .events = POLLIN | POLLOUT | POLLRDHUP | POLLPRI };
		CHECK(poll(&p, 1, 10) >= 0, "poll");
		r = p.revents;
		if (!(r & want))
			usleep(10000);
	}
	CHECK(r & want, "poll: %#x never showed (last %#x)", want, r);
	return r;
}

static uint32_t epoll_now(int fd)
{
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event e = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.fd = fd };
	CHECK(ep >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) == 0, "epoll set-up");
	memset(&e, 0, sizeof(e));
	CHECK(epoll_wait(ep, &e, 1, 0) == 1, "epoll_wait");
	close(ep);
	return e.events;
}

/* Check: after the peer's reset the first write fails with ECONNRESET and
 * no SIGPIPE, the next with EPIPE and SIGPIPE; then reads give 0, and poll
 * no longer reports POLLERR. */
static void rstwrite_server(int fd)
{
	struct linger lg = { 1, 0 };
	write_all(fd, "data", 4);
	sync_recv(fd, 'r');
	check_small(fd, 1);
	CHECK(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) == 0, "SO_LINGER");
	close(fd);
	exit(0);
}
static void rstwrite_client(int fd, pid_t sp)
{
	char b[16];
	(void)sp;
	read_exact(fd, b, 4);
	check_small(fd, 4);
	sync_send(fd, 'r');
	/* The kernel sets POLLERR, then POLLHUP, then the shutdown bits:
	 * wait for the last, then look again. */
	poll_until(fd, POLLRDHUP);
	short r = poll_now(fd);
	CHECK(r == (POLLIN | POLLOUT | POLLRDHUP | POLLERR | POLLHUP), "poll after reset %#x", r);
	CHECK_ERR(send(fd, "x", 1, 0), ECONNRESET);
	CHECK(sigpipes == 0, "no SIGPIPE on the first write after a reset");
	CHECK_ERR(send(fd, "x", 1, 0), EPIPE);
	CHECK(sigpipes == 1, "SIGPIPE on the second write after a reset (%d)", (int)sigpipes);
	CHECK(read(fd, b, sizeof(b)) == 0, "0 after the write took the reset");
	r = poll_now(fd);
	CHECK(r == (POLLIN | POLLOUT | POLLRDHUP | POLLHUP), "poll after the error was taken %#x", r);
}

/* Check: getpeername gives ENOTCONN as soon as a read reported the
 * peer's reset. */
static void rstpeer_client(int fd, pid_t sp)
{
	char b[16];
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	(void)sp;
	read_exact(fd, b, 4);
	sync_send(fd, 'r');
	CHECK_ERR(read(fd, b, sizeof(b)), ECONNRESET);
	CHECK_ERR(getpeername(fd, (void *)&ss, &sl), ENOTCONN);
}

/* Check the poll/epoll bits of half-closes: own SHUT_WR keeps POLLOUT, the
 * peer's FIN gives POLLIN|POLLRDHUP without POLLHUP, POLLHUP comes when
 * both directions are shut; the peer can still send after our SHUT_WR. */
static void pollbits_server(int fd)
{
	struct sigaction sa = { .sa_handler = on_usr1 };
	sigset_t none, usr;
	char b[8];

	sigemptyset(&usr);
	sigaddset(&usr, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	CHECK(read(fd, b, sizeof(b)) == 0, "EOF after the peer's SHUT_WR");
	short r = poll_now(fd);
	CHECK(r == (POLLIN | POLLOUT | POLLRDHUP), "poll after the peer's FIN: %#x", r);
	uint32_t e = epoll_now(fd);
	CHECK(e == (EPOLLIN | EPOLLOUT | EPOLLRDHUP), "epoll after the peer's FIN: %#x", e);
	check_small(fd, 0);
	/* The client looks at its own SHUT_WR's bits first. */
	sigemptyset(&none);
	while (!usr1)
		sigsuspend(&none);
	write_all(fd, "after", 5);
	CHECK(shutdown(fd, SHUT_WR) == 0, "SHUT_WR");
	r = poll_now(fd);
	CHECK(r == (POLLIN | POLLOUT | POLLRDHUP | POLLHUP), "poll both shut: %#x", r);
}
static void pollbits_client(int fd, pid_t sp)
{
	char b[8];
	short r = poll_now(fd);
	CHECK(r == POLLOUT, "poll idle: %#x", r);
	CHECK(shutdown(fd, SHUT_WR) == 0, "SHUT_WR");
	r = poll_now(fd);
	CHECK(r == POLLOUT, "poll after own SHUT_WR: %#x", r);
	CHECK(signal_server(sp, SIGUSR1, "USR1") == 0, "tell the server");
	r = poll_until(fd, POLLRDHUP);
	CHECK(r == (POLLIN | POLLOUT | POLLRDHUP | POLLHUP), "poll both shut: %#x", r);
	uint32_t e = epoll_now(fd);
	CHECK(e == (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLHUP), "epoll both shut: %#x", e);
	fd_set rs, ws;
	struct timeval tv = { 0, 0 };
	FD_ZERO(&rs); FD_ZERO(&ws);
	FD_SET(fd, &rs); FD_SET(fd, &ws);
	CHECK(select(fd + 1, &rs, &ws, NULL, &tv) == 2, "select: readable and writable");
	read_exact(fd, b, 5);
	CHECK(!memcmp(b, "after", 5), "data sent after our SHUT_WR");
	CHECK(read(fd, b, sizeof(b)) == 0, "EOF");
	check_small(fd, 5);
}

/* Check: SHUT_RD is local: reads return 0 at once, data that arrives
 * afterwards is still readable, a second shutdown is fine, and after both
 * ends closed shutdown gives ENOTCONN. */
static void shutrd_server(int fd)
{
	char b[8];
	sync_recv(fd, '0');
	sync_send(fd, '0');
	sync_recv(fd, 'a');
	write_all(fd, "late", 4);
	CHECK(read(fd, b, sizeof(b)) == 0, "EOF");
	check_small(fd, 2);
}
static void shutrd_client(int fd, pid_t sp)
{
	char b[8];
	(void)sp;
	/* A round trip first: a client's SHUT_RD before the broker's
	 * decision reached it makes the shim settle for TCP (correct, but
	 * this case is about the channel). */
	sync_send(fd, '0');
	sync_recv(fd, '0');
	CHECK(shutdown(fd, SHUT_RD) == 0, "SHUT_RD");
	CHECK(read(fd, b, sizeof(b)) == 0, "read after SHUT_RD: 0 at once");
	short r = poll_now(fd);
	CHECK(r == (POLLIN | POLLOUT | POLLRDHUP), "poll after SHUT_RD: %#x", r);
	sync_send(fd, 'a');
	wait_queued(fd, 4);
	CHECK(recv(fd, b, sizeof(b), 0) == 4 && !memcmp(b, "late", 4), "data after SHUT_RD");
	CHECK(read(fd, b, sizeof(b)) == 0, "0 again");
	CHECK(shutdown(fd, SHUT_RD) == 0, "second SHUT_RD");
	check_small(fd, 5);
	CHECK(shutdown(fd, SHUT_WR) == 0, "SHUT_WR");
	/* The peer's close: our socket leaves the connection (TIME_WAIT). */
	struct tcp_info ti;
	for (int i = 0; i < 10000; i++) {
		socklen_t l = sizeof(ti);
		CHECK(getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) == 0, "TCP_INFO");
		if (ti.tcpi_state == 7 /* TCP_CLOSE */)
			break;
		usleep(1000);
	}
	CHECK(ti.tcpi_state == 7 /* TCP_CLOSE */, "state %d", ti.tcpi_state);
	CHECK_ERR(shutdown(fd, SHUT_RDWR), ENOTCONN);
	CHECK(read(fd, b, sizeof(b)) == 0, "0 after close");
}

/* Check: a blocking 32 MiB write returns the full count; interrupted by a
 * signal (no SA_RESTART) while the peer does not read, it returns a short
 * count, and exactly those bytes arrive. */
#define BIG (32u << 20)
static unsigned char bigpat(size_t i) { return (unsigned char)(i % 251 + 1); }

static void bigwrite_server(int fd)
{
	static unsigned char b[1 << 16];
	struct sigaction sa = { .sa_handler = on_usr1 };
	sigset_t none, usr;
	size_t at = 0;

	sigemptyset(&usr);
	sigaddset(&usr, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	sync_recv(fd, 'g');
	while (at < BIG) {
		ssize_t r = read(fd, b, sizeof(b) < BIG - at ? sizeof(b) : BIG - at);
		CHECK(r > 0, "read at %zu", at);
		for (ssize_t i = 0; i < r; i++)
			CHECK(b[i] == bigpat(at + (size_t)i), "data at %zu", at + (size_t)i);
		at += (size_t)r;
	}
	check_path(fd, BIG);
	sync_send(fd, 'h');
	sigemptyset(&none);
	while (!usr1)
		sigsuspend(&none);
	/* The interrupted write's bytes, a 0 byte, then their count. */
	at = 0;
	ssize_t r = 0, i = 0;
	for (;;) {
		if (i == r) {
			r = read(fd, b, sizeof(b));
			CHECK(r > 0, "read at %zu", at);
			i = 0;
		}
		if (b[i] == 0)
			break;
		CHECK(b[i] == bigpat(at), "data at %zu", at);
		i++;
		at++;
	}
	/* The count follows the 0 byte. */
	uint64_t n;
	size_t have = (size_t)(r - i - 1);
	CHECK(have <= sizeof(n), "%zu bytes after the 0", have);
	memcpy(&n, b + i + 1, have);
	read_exact(fd, (char *)&n + have, sizeof(n) - have);
	CHECK(n == at, "the write returned %llu, %zu arrived", (unsigned long long)n, at);
	sync_send(fd, 'k');
}
static void bigwrite_client(int fd, pid_t sp)
{
	static unsigned char b[BIG];
	struct sigaction sa = { .sa_handler = on_alrm };
	struct itimerval it = { { 0, 0 }, { 0, 300000 } };

	for (size_t i = 0; i < BIG; i++)
		b[i] = bigpat(i);
	sync_send(fd, 'g');
	CHECK(write(fd, b, BIG) == (ssize_t)BIG, "blocking write: the full count");
	sync_recv(fd, 'h');
	sigaction(SIGALRM, &sa, NULL);
	setitimer(ITIMER_REAL, &it, NULL);
	ssize_t n = write(fd, b, BIG);
	CHECK(sigalrms == 1, "the signal came");
	CHECK(n > 0 && n < (ssize_t)BIG, "interrupted write: short count, got %zd", n);
	alarm(100);
	CHECK(signal_server(sp, SIGUSR1, "USR1") == 0, "tell the server");
	uint64_t n64 = (uint64_t)n;
	write_all(fd, "", 1);
	write_all(fd, &n64, sizeof(n64));
	sync_recv(fd, 'k');
}

/* Check edge-triggered epoll: an event per arrival even with old data
 * unread, none without an arrival, arrivals while nobody waits merged into
 * one; level-triggered reports again; EPOLLEXCLUSIVE wakes and refuses
 * MOD; the registration survives close() of the fd while a dup lives;
 * EPOLLRDHUP on the peer's SHUT_WR. */
static void et_server(int fd)
{
	sync_recv(fd, '1');
	write_all(fd, "a", 1);
	sync_recv(fd, '2');
	write_all(fd, "b", 1);
	sync_recv(fd, '3');
	write_all(fd, "c", 1);
	usleep(1000);
	write_all(fd, "d", 1);
	sync_recv(fd, '4');
	write_all(fd, "e", 1);
	sync_recv(fd, '5');
	check_small(fd, 5);
	CHECK(shutdown(fd, SHUT_WR) == 0, "SHUT_WR");
	char b[4];
	CHECK(read(fd, b, sizeof(b)) == 0, "EOF");
}
static void et_client(int fd, pid_t sp)
{
	struct epoll_event e = { .events = EPOLLIN | EPOLLET | EPOLLRDHUP, .data.u64 = 0x1234 };
	struct epoll_event got[4];
	int ep = epoll_create1(0), ex = epoll_create1(0), lt = epoll_create1(0);
	char b[8];
	(void)sp;

	CHECK(ep >= 0 && ex >= 0 && lt >= 0, "epoll_create1");
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) == 0, "ADD ET");
	e.events = EPOLLIN | EPOLLEXCLUSIVE;
	CHECK(epoll_ctl(ex, EPOLL_CTL_ADD, fd, &e) == 0, "ADD EXCLUSIVE");
	CHECK_ERR(epoll_ctl(ex, EPOLL_CTL_MOD, fd, &e), EINVAL);
	e.events = EPOLLIN;
	CHECK(epoll_ctl(lt, EPOLL_CTL_ADD, fd, &e) == 0, "ADD LT");
	CHECK(epoll_wait(ep, got, 4, 0) == 0, "ET: nothing yet");
	sync_send(fd, '1');
	CHECK(epoll_wait(ep, got, 4, 10000) == 1 && got[0].events == EPOLLIN &&
	      got[0].data.u64 == 0x1234, "ET: the arrival");
	CHECK(epoll_wait(ep, got, 4, 0) == 0, "ET: no new arrival, no event");
	CHECK(epoll_wait(lt, got, 4, 0) == 1 && epoll_wait(lt, got, 4, 0) == 1, "LT: again");
	CHECK(epoll_wait(ex, got, 4, 10000) == 1 && got[0].events == EPOLLIN, "EXCLUSIVE");
	sync_send(fd, '2');
	CHECK(epoll_wait(ep, got, 4, 10000) == 1 && got[0].events == EPOLLIN,
	      "ET: a new arrival with old data unread");
	CHECK(epoll_wait(ep, got, 4, 0) == 0, "ET: quiet again");
	sync_send(fd, '3');
	wait_queued(fd, 4);
	CHECK(epoll_wait(ep, got, 4, 10000) == 1, "ET: two arrivals merged into one event");
	CHECK(epoll_wait(ep, got, 4, 0) == 0, "ET: only one");
	int d = dup(fd);
	CHECK(d >= 0 && close(fd) == 0, "dup, close the original");
	sync_send(d, '4');
	CHECK(epoll_wait(ep, got, 4, 10000) == 1 && got[0].data.u64 == 0x1234,
	      "the registration outlives close() while a dup lives");
	read_exact(d, b, 5);
	CHECK(!memcmp(b, "abcde", 5), "data %.5s", b);
	sync_send(d, '5');
	CHECK(epoll_wait(ep, got, 4, 10000) == 1 &&
	      got[0].events == (EPOLLIN | EPOLLRDHUP), "ET: the peer's FIN: %#x", got[0].events);
	CHECK(read(d, b, sizeof(b)) == 0, "EOF");
	check_small(d, 5);
	close(ep); close(ex); close(lt);
	/* main's close(fd) of the closed number: EBADF, harmless; d
	 * goes at exit. */
}

/* Check: select writes the time left back; poll, select, epoll_wait and a
 * recv with SO_RCVTIMEO return EINTR even under SA_RESTART; a send with
 * SO_SNDTIMEO on a full pipe too. */
static void eintr_server(int fd)
{
	sigset_t none;

	usr1_blocked(&none);
	sync_recv(fd, 's');
	usleep(50000);
	write_all(fd, "x", 1);
	sync_recv(fd, 'f');
	check_small(fd, 2);
	sync_send(fd, 'g');    /* 'f' is consumed: the client may fill */
	sigemptyset(&none);
	while (!usr1)          /* the client fills the pipe */
		sigsuspend(&none);
	exit(0);
}
static void alarm_soon(void)
{
	struct itimerval it = { { 0, 0 }, { 0, 100000 } };
	setitimer(ITIMER_REAL, &it, NULL);
}
static void eintr_client(int fd, pid_t sp)
{
	struct sigaction sa = { .sa_handler = on_alrm, .sa_flags = SA_RESTART };
	struct timeval tv = { 5, 0 };
	fd_set rs;
	char b[8];

	sigaction(SIGALRM, &sa, NULL);
	sync_send(fd, 's');
	FD_ZERO(&rs);
	FD_SET(fd, &rs);
	CHECK(select(fd + 1, &rs, NULL, NULL, &tv) == 1 && FD_ISSET(fd, &rs), "select");
	CHECK(tv.tv_sec < 5 && (tv.tv_sec > 0 || tv.tv_usec > 0),
	      "select wrote the time left back: %ld.%06ld", (long)tv.tv_sec, (long)tv.tv_usec);
	CHECK(read(fd, b, 1) == 1 && b[0] == 'x', "read");
	tv.tv_sec = 0;
	tv.tv_usec = 20000;
	FD_SET(fd, &rs);
	CHECK(select(fd + 1, &rs, NULL, NULL, &tv) == 0 && tv.tv_sec == 0 && tv.tv_usec == 0,
	      "select timed out, 0 left");
	struct pollfd p = { .fd = fd, .events = POLLIN };
	alarm_soon();
	CHECK_ERR(poll(&p, 1, 20000), EINTR);
	FD_SET(fd, &rs);
	tv.tv_sec = 20;
	alarm_soon();
	CHECK_ERR(select(fd + 1, &rs, NULL, NULL, &tv), EINTR);
	int ep = epoll_create1(0);
	struct epoll_event e = { .events = EPOLLIN, .data.fd = fd };
	CHECK(ep >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) == 0, "epoll");
	alarm_soon();
	CHECK_ERR(epoll_wait(ep, &e, 1, 20000), EINTR);
	close(ep);
	tv.tv_sec = 20;
	tv.tv_usec = 0;
	CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0, "SO_RCVTIMEO");
	alarm_soon();
	CHECK_ERR(recv(fd, b, sizeof(b), 0), EINTR);
	CHECK(sigalrms == 4, "four signals (%d)", (int)sigalrms);
	sync_send(fd, 'f');
	tv.tv_sec = 0;
	CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0, "SO_RCVTIMEO off");
	sync_recv(fd, 'g');
	tv.tv_sec = 20;
	/* Fill the pipe, then a blocking send with SO_SNDTIMEO. */
	static char big[1 << 16];
	int fl = fcntl(fd, F_GETFL);
	CHECK(fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0, "O_NONBLOCK");
	for (int i = 0; i < 100000; i++)
		if (send(fd, big, sizeof(big), 0) < 0) {
			CHECK(errno == EAGAIN, "EAGAIN when full");
			break;
		}
	CHECK(fcntl(fd, F_SETFL, fl) == 0, "blocking");
	CHECK(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) == 0, "SO_SNDTIMEO");
	alarm_soon();
	CHECK_ERR(send(fd, big, sizeof(big), 0), EINTR);
	CHECK(signal_server(sp, SIGUSR1, "USR1") == 0, "tell the server");
	alarm(60);
	exit(0);
}

/* Check: writev/sendmsg with IOV_MAX iovecs, one more is EINVAL/EMSGSIZE;
 * readv/recvmsg with many iovecs; recvmsg leaves no address and no flags;
 * recvmsg MSG_TRUNC discards; sendto's address is ignored. */
#define NIOV 1024
static unsigned char iovpat(size_t i) { return (unsigned char)(i * 13 + 5); }

static void iov_server(int fd)
{
	static unsigned char b[NIOV * 8];
	static struct iovec v[NIOV + 1];
	size_t total = 0, want = 0;
	for (size_t i = 0; i < NIOV; i++)
		want += i % 7 + 1;
	want = 2 * want + 1;
	for (size_t i = 0; i <= NIOV; i++) {
		v[i].iov_base = b + i * 3;
		v[i].iov_len = 3;
	}
	CHECK_ERR(readv(fd, v, NIOV + 1), EINVAL);
	struct msghdr m = { .msg_iov = v, .msg_iovlen = NIOV + 1 };
	CHECK_ERR(recvmsg(fd, &m, 0), EMSGSIZE);
	/* Several readv/recvmsg, each with NIOV 3-byte iovecs. */
	static unsigned char all[NIOV * 16];
	int use_msg = 0;
	while (total < want - 1) {
		struct sockaddr_storage ss;
		memset(&ss, 0x5a, sizeof(ss));
		struct msghdr mm = { .msg_name = &ss, .msg_namelen = sizeof(ss), .msg_iov = v,
				     .msg_iovlen = NIOV, .msg_flags = 0x7fff };
		size_t room = want - 1 - total < NIOV * 3 ? want - 1 - total : NIOV * 3;
		int n = (int)((room + 2) / 3);
		ssize_t r;
		v[n - 1].iov_len = room - (size_t)(n - 1) * 3;
		if (use_msg) {
			mm.msg_iovlen = (size_t)n;
			r = recvmsg(fd, &mm, 0);
			CHECK(r > 0 && mm.msg_namelen == 0 && mm.msg_flags == 0 &&
			      ((unsigned char *)&ss)[0] == 0x5a, "recvmsg %zd namelen %u flags %#x",
			      r, mm.msg_namelen, mm.msg_flags);
		} else {
			r = readv(fd, v, n);
			CHECK(r > 0, "readv");
		}
		v[n - 1].iov_len = 3;
		memcpy(all + total, b, (size_t)r);
		total += (size_t)r;
		use_msg ^= 1;
	}
	for (size_t i = 0; i < total; i++)
		CHECK(all[i] == iovpat(i % ((want - 1) / 2)), "data at %zu", i);
	/* The sendto byte, discarded by recvmsg MSG_TRUNC. */
	wait_queued(fd, 1);
	struct iovec one = { b, 1 };
	struct msghdr mt = { .msg_iov = &one, .msg_iovlen = 1 };
	b[0] = 0;
	CHECK(recvmsg(fd, &mt, MSG_TRUNC) == 1 && b[0] == 0, "recvmsg MSG_TRUNC discards");
	check_small(fd, want);
	sync_send(fd, 'i');
}
static void iov_client(int fd, pid_t sp)
{
	static unsigned char b[NIOV * 8];
	static struct iovec v[NIOV + 1];
	size_t total = 0;
	(void)sp;
	for (size_t i = 0; i < NIOV; i++) {
		v[i].iov_base = b + total;
		v[i].iov_len = i % 7 + 1;
		total += v[i].iov_len;
	}
	for (size_t i = 0; i < total; i++)
		b[i] = iovpat(i);
	v[NIOV].iov_base = b;
	v[NIOV].iov_len = 1;
	CHECK_ERR(writev(fd, v, NIOV + 1), EINVAL);
	struct msghdr m = { .msg_iov = v, .msg_iovlen = NIOV + 1 };
	CHECK_ERR(sendmsg(fd, &m, 0), EMSGSIZE);
	CHECK(writev(fd, v, NIOV) == (ssize_t)total, "writev of %d iovecs", NIOV);
	m.msg_iovlen = NIOV;
	CHECK(sendmsg(fd, &m, 0) == (ssize_t)total, "sendmsg of %d iovecs", NIOV);
	struct sockaddr_in6 other = { .sin6_family = AF_INET6, .sin6_port = htons(9),
				      .sin6_addr = in6addr_loopback };
	CHECK(sendto(fd, "t", 1, 0, (void *)&other, sizeof(other)) == 1,
	      "sendto with an address: ignored");
	sync_recv(fd, 'i');
}

/* Check: TCP_CORK and MSG_MORE read back and the data comes whole, in
 * order, once uncorked. */
static void cork_server(int fd)
{
	char b[16];
	read_exact(fd, b, 9);
	CHECK(!memcmp(b, "corked!!!", 9), "data %.9s", b);
	check_small(fd, 9);
	sync_send(fd, 'c');
}
static void cork_client(int fd, pid_t sp)
{
	int on = 1, v = -1;
	socklen_t l = sizeof(v);
	(void)sp;
	CHECK(setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof(on)) == 0, "TCP_CORK");
	CHECK(getsockopt(fd, IPPROTO_TCP, TCP_CORK, &v, &l) == 0 && v == 1, "TCP_CORK reads 1");
	CHECK(send(fd, "cor", 3, 0) == 3, "send corked");
	CHECK(send(fd, "ked", 3, MSG_MORE) == 3, "send MSG_MORE");
	on = 0;
	CHECK(setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof(on)) == 0, "uncork");
	l = sizeof(v);
	CHECK(getsockopt(fd, IPPROTO_TCP, TCP_CORK, &v, &l) == 0 && v == 0, "TCP_CORK reads 0");
	CHECK(send(fd, "!!", 2, MSG_MORE) == 2, "MSG_MORE");
	CHECK(send(fd, "!", 1, 0) == 1, "then without");
	sync_recv(fd, 'c');
}

/* Check: a connection dup2()ed onto stdin and stdout WITHOUT an exec is
 * used through stdio (fgets, printf, exit's flush of stdout). */
static void stdio_server(int fd)
{
	char line[64];
	CHECK(dup2(fd, 0) == 0 && dup2(fd, 1) == 1, "dup2 onto 0 and 1");
	CHECK(fgets(line, sizeof(line), stdin) && !strcmp(line, "hello\n"), "fgets");
	CHECK(printf("got %s", line) > 0 && fflush(stdout) == 0, "printf");
	CHECK(fgets(line, sizeof(line), stdin) && !strcmp(line, "two\n"), "fgets two");
	CHECK(fputs("bye ", stdout) >= 0 && fwrite(line, 1, 4, stdout) == 4, "fputs/fwrite");
	/* Not flushed: exit() flushes stdout onto the connection. */
	close(fd);
	exit(0);
}
static void stdio_client(int fd, pid_t sp)
{
	char b[32];
	(void)sp;
	write_all(fd, "hello\n", 6);
	read_exact(fd, b, 10);
	CHECK(!memcmp(b, "got hello\n", 10), "printf's line: %.10s", b);
	write_all(fd, "two\n", 4);
	read_exact(fd, b, 8);
	CHECK(!memcmp(b, "bye two\n", 8), "exit's flush: %.8s", b);
	CHECK(read(fd, b, sizeof(b)) == 0, "EOF");
	check_small(fd, 18);
}

/* Check: dup2() of another file onto the connection's only fd closes the
 * connection (the peer reads EOF) and the number then names that file. */
static void dup2conn_server(int fd)
{
	char b[4];
	int p[2];
	read_exact(fd, b, 1);
	check_small(fd, 1);
	CHECK(pipe(p) == 0, "pipe");
	CHECK(dup2(p[0], fd) == fd, "dup2 a pipe onto the connection");
	CHECK(write(p[1], "p", 1) == 1 && read(fd, b, 1) == 1 && b[0] == 'p',
	      "the number is the pipe now");
	CHECK(fcntl(fd, F_SETFL, O_NONBLOCK) == 0, "O_NONBLOCK");
	CHECK_ERR(read(fd, b, 1), EAGAIN);
}
static void dup2conn_client(int fd, pid_t sp)
{
	char b[4];
	(void)sp;
	write_all(fd, "x", 1);
	CHECK(read(fd, b, sizeof(b)) == 0, "EOF after the peer's dup2");
	check_small(fd, 0);
}

/* Check: MSG_WAITALL interrupted by a signal after part of the data came
 * returns that part (with and without SA_RESTART); SIOCINQ == FIONREAD;
 * MSG_PEEK|MSG_WAITALL waits for the whole count. */
static void waitall_server(int fd)
{
	sync_recv(fd, '1');
	write_all(fd, "0123456789", 10);
	sync_recv(fd, '2');
	write_all(fd, "abcdefghij", 10);
	sync_recv(fd, '3');
	check_small(fd, 3);
}
static void waitall_client(int fd, pid_t sp)
{
	struct sigaction sa = { .sa_handler = on_alrm };
	char b[128];
	int inq = -1;
	(void)sp;
	sigaction(SIGALRM, &sa, NULL);
	sync_send(fd, '1');
	wait_queued(fd, 10);
	CHECK(ioctl(fd, SIOCINQ, &inq) == 0 && inq == 10, "SIOCINQ %d", inq);
	alarm_soon();
	CHECK(recv(fd, b, 100, MSG_WAITALL) == 10 && !memcmp(b, "0123456789", 10),
	      "interrupted MSG_WAITALL returns the part");
	sa.sa_flags = SA_RESTART;
	sigaction(SIGALRM, &sa, NULL);
	sync_send(fd, '2');
	wait_queued(fd, 10);
	alarm_soon();
	CHECK(recv(fd, b, 100, MSG_WAITALL) == 10 && !memcmp(b, "abcdefghij", 10),
	      "interrupted MSG_WAITALL under SA_RESTART returns the part");
	CHECK(sigalrms == 2, "signals %d", (int)sigalrms);
	check_small(fd, 20);
	sync_send(fd, '3');
}

/* Check: MSG_PEEK|MSG_WAITALL waits until the whole count is queued (and
 * consumes nothing). */
static void peekall_server(int fd)
{
	sync_recv(fd, '1');
	write_all(fd, "ABC", 3);
	usleep(50000);
	write_all(fd, "DEF", 3);
	sync_recv(fd, '2');
	check_small(fd, 2);
}
static void peekall_client(int fd, pid_t sp)
{
	char b[8];
	(void)sp;
	sync_send(fd, '1');
	CHECK(recv(fd, b, 6, MSG_PEEK | MSG_WAITALL) == 6 && !memcmp(b, "ABCDEF", 6),
	      "MSG_PEEK|MSG_WAITALL waits for all");
	CHECK(recv(fd, b, 8, 0) == 6 && !memcmp(b, "ABCDEF", 6), "then read");
	check_small(fd, 6);
	sync_send(fd, '2');
}

/* Check: splice socket -> pipe and pipe -> socket move the bytes; sendfile
 * and splice with an empty socket as the source wait for data like read. */
static void splice_server(int fd)
{
	int p[2];
	size_t got = 0;
	CHECK(pipe(p) == 0, "pipe");
	while (got < 100000) {
		ssize_t n = splice(fd, NULL, p[1], NULL, 100000 - got, 0);
		CHECK(n > 0, "splice socket -> pipe");
		ssize_t m = splice(p[0], NULL, fd, NULL, (size_t)n, 0);
		CHECK(m == n, "splice pipe -> socket %zd of %zd", m, n);
		got += (size_t)n;
	}
	/* sendfile from the socket into the pipe. */
	ssize_t n = sendfile(p[1], fd, NULL, 5);
	CHECK(n == 5, "sendfile from a socket: %zd", n);
	char b[8];
	CHECK(read(p[0], b, 5) == 5 && !memcmp(b, "final", 5), "sendfile data");
	check_small(fd, 100005);
	sync_send(fd, 'e');
}
static void splice_client(int fd, pid_t sp)
{
	static unsigned char a[100000], b[100000];
	(void)sp;
	for (size_t i = 0; i < sizeof(a); i++)
		a[i] = (unsigned char)rnd();
	write_all(fd, a, sizeof(a));
	read_exact(fd, b, sizeof(b));
	CHECK(!memcmp(a, b, sizeof(a)), "spliced data");
	usleep(20000);
	write_all(fd, "final", 5);
	sync_recv(fd, 'e');
}

/* Check: TCP_DEFER_ACCEPT (set on the listener in main): accept returns
 * the connection only once its data arrived, so it is readable at once. */
static void defer_server(int fd)
{
	int avail = -1;
	char c;
	CHECK(ioctl(fd, FIONREAD, &avail) == 0 && avail == 1,
	      "data there when accept returned (FIONREAD %d)", avail);
	CHECK(recv(fd, &c, 1, MSG_DONTWAIT) == 1 && c == 'x', "readable at once");
	check_small(fd, 1);
	sync_send(fd, 'd');
}
static void defer_client(int fd, pid_t sp)
{
	(void)sp;
	usleep(300000);       /* connected: the server's accept must wait */
	sync_send(fd, 'x');
	sync_recv(fd, 'd');
	check_small(fd, 1);
}

/* Check: shutdown() of a listener wakes a thread blocked in accept() with
 * EINVAL (the connection itself is served first). */
static int lshut_lfd;
static void *lshut_accept(void *arg)
{
	(void)arg;
	errno = 0;
	long r = accept(lshut_lfd, NULL, NULL);
	return (void *)(r == -1 && errno == EINVAL ? 1L : 0L);
}
static void lshut_server(int fd)
{
	pthread_t t;
	void *ok = NULL;
	sync_recv(fd, 'l');
	CHECK(pthread_create(&t, NULL, lshut_accept, NULL) == 0, "thread");
	usleep(100000);          /* into accept (or not yet: EINVAL either way) */
	CHECK(shutdown(lshut_lfd, SHUT_RDWR) == 0, "shutdown of the listener");
	pthread_join(t, &ok);
	CHECK(ok == (void *)1L, "accept woken with EINVAL");
	check_small(fd, 1);
	sync_send(fd, 'm');
}
static void lshut_client(int fd, pid_t sp)
{
	(void)sp;
	sync_send(fd, 'l');
	sync_recv(fd, 'm');
	check_small(fd, 1);
}

/* ---- again: many connections from one process to one listener -------- */

/* Under the shim every connection after the first to a listener is set up
 * with an early offer (docs/DESIGN.md §2.2: the client connects while the
 * broker reads its offer).  Alternately the client and the server speak
 * first; every fourth connect is non-blocking; each exchange is checked
 * byte for byte, then the client closes and the server sees EOF. */
#define AGAIN_CONNS 24
static const char *again_host;
static int again_port;

/* The 16-byte message "WHAT I", zero-padded. */
static void again_msg(char *m, const char *what, int i)
{
	char t[48];

	memset(t, 0, sizeof(t));
	snprintf(t, sizeof(t), "%.8s %d", what, i);
	memcpy(m, t, 16);
}

static void again_one_server(int fd, int i)
{
	char want[16], got[16], m[16];

	if (i % 2) {                 /* the server speaks first */
		again_msg(m, "hello", i);
		write_all(fd, m, sizeof(m));
		read_exact(fd, got, sizeof(got));
		again_msg(want, "ack", i);
	} else {
		read_exact(fd, got, sizeof(got));
		again_msg(want, "ping", i);
		again_msg(m, "pong", i);
		write_all(fd, m, sizeof(m));
	}
	CHECK(!memcmp(got, want, sizeof(want)), "connection %d: got \"%.16s\"", i, got);
	CHECK(read(fd, got, 1) == 0, "connection %d: EOF after the client's close", i);
	check_small(fd, sizeof(got));
}

static void again_server(int fd)
{
	again_one_server(fd, 0);
	for (int i = 1; i < AGAIN_CONNS; i++) {
		int c = accept(lshut_lfd, NULL, NULL);

		CHECK(c >= 0, "accept %d", i);
		again_one_server(c, i);
		close(c);
	}
}

static void again_client(int fd, pid_t sp)
{
	(void)sp;
	for (int i = 0; i < AGAIN_CONNS; i++) {
		char want[16], got[16], m[16];

		if (i)
			fd = dial(again_host, again_port, i % 4 == 3);
		if (i % 2) {
			read_exact(fd, got, sizeof(got));
			again_msg(want, "hello", i);
			again_msg(m, "ack", i);
			write_all(fd, m, sizeof(m));
		} else {
			again_msg(m, "ping", i);
			write_all(fd, m, sizeof(m));
			read_exact(fd, got, sizeof(got));
			again_msg(want, "pong", i);
		}
		CHECK(!memcmp(got, want, sizeof(want)), "connection %d: got \"%.16s\"", i, got);
		check_small(fd, sizeof(got));
		if (i < AGAIN_CONNS - 1)
			close(fd);           /* the last one main() closes */
	}
}

/* Check: what a client sets on its socket before connect() holds on the
 * connection, as on kernel TCP (the shim learns such options from the
 * socket, or knows a socket made and left alone: shim/fdtable.c):
 * SO_RCVTIMEO (recv waits, then EAGAIN), O_NONBLOCK by fcntl (connect
 * says EINPROGRESS, recv EAGAIN at once), SO_LINGER {1,0} (close resets:
 * the server reads ECONNRESET), SO_REUSEADDR (still connected and
 * accelerated).  Connections 1-4 after main's. */
#define PREOPTS_CONNS 4

static void preopts_server(int fd)
{
	char b[1];

	for (int i = 1; i <= PREOPTS_CONNS; i++) {
		/* The peer's address asked for whole, cut short, or not at
		 * all: the connection is the same (the shim takes the peer's
		 * name from accept when it can). */
		struct sockaddr_storage ss, ps;
		socklen_t sl = i == 2 ? 4 : sizeof(ss), pl = sizeof(ps);
		int c = i <= 2 ? accept(lshut_lfd, (struct sockaddr *)&ss, &sl)
			       : accept(lshut_lfd, NULL, NULL);

		CHECK(c >= 0, "accept %d", i);
		CHECK(getpeername(c, (struct sockaddr *)&ps, &pl) == 0, "getpeername");
		if (i == 1)
			CHECK(sl == pl && !memcmp(&ss, &ps, pl), "accept's address is the peer's");
		if (i == 2)
			CHECK(sl == pl, "accept with a short buffer: the full length");
		read_exact(c, b, 1);
		CHECK(b[0] == 'p', "connection %d: request", i);
		write_all(c, "P", 1);
		errno = 0;
		check_small(c, 1);
		if (i == 3)
			CHECK(read(c, b, 1) < 0 && errno == ECONNRESET,
			      "connection 3: SO_LINGER {1,0} set before connect: reset (%s)",
			      strerror(errno));
		else
			CHECK(read(c, b, 1) == 0, "connection %d: EOF (%s)", i, strerror(errno));
		close(c);
	}
	CHECK(read(fd, b, 1) == 0, "main connection: EOF");
}

static void preopts_client(int fd, pid_t sp)
{
	(void)fd;
	(void)sp;
	for (int i = 1; i <= PREOPTS_CONNS; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = dial_addr(again_host, again_port, &ss);
		struct timeval tv = { 0, 200000 };
		struct linger lg = { 1, 0 };
		struct timespec t0, t1;
		int s = socket(family, SOCK_STREAM, 0), one = 1, r;
		char b[1];

		CHECK(s >= 0, "socket");
		if (i == 1)
			CHECK(setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0,
			      "SO_RCVTIMEO");
		if (i == 2)
			CHECK(fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK) == 0, "O_NONBLOCK");
		if (i == 3)
			CHECK(setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) == 0, "SO_LINGER");
		if (i == 4)
			CHECK(setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0,
			      "SO_REUSEADDR");
		r = connect(s, (void *)&ss, sl);
		if (i == 2) {
			struct pollfd p = { .fd = s, .events = POLLOUT };

			CHECK(r == -1 && errno == EINPROGRESS, "O_NONBLOCK before connect: EINPROGRESS");
			CHECK(poll(&p, 1, 10000) == 1 && (p.revents & POLLOUT), "POLLOUT after connect");
			CHECK_ERR(recv(s, b, 1, 0), EAGAIN);
			CHECK(fcntl(s, F_SETFL, fcntl(s, F_GETFL) & ~O_NONBLOCK) == 0, "blocking");
		} else {
			CHECK(r == 0, "connection %d: connect", i);
		}
		write_all(s, "p", 1);
		read_exact(s, b, 1);
		CHECK(b[0] == 'P', "connection %d: answer", i);
		if (i == 1) {
			clock_gettime(CLOCK_MONOTONIC, &t0);
			CHECK_ERR(recv(s, b, 1, 0), EAGAIN);
			clock_gettime(CLOCK_MONOTONIC, &t1);
			CHECK((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 >= 150,
			      "SO_RCVTIMEO set before connect: recv waited");
		}
		check_small(s, 1);
		close(s);
	}
}

/* gap: a known difference of the shim from kernel TCP (shim/README.md):
 * left out of `list` (so out of the scripts' runs) unless XWAY_TEST_GAPS
 * is set; runnable by name. */
struct tcase { const char *name; void (*srv)(int); void (*cli)(int, pid_t); int gap; };
static const struct tcase cases[] = {
	{ "echo", echo_server, echo_client, 0 },
	{ "bulk", bulk_server, bulk_client, 0 },
	{ "eof", eof_server, eof_client, 0 },
	{ "rst", rst_server, rst_client, 0 },
	{ "unread", unread_server, unread_client, 0 },
	{ "shut", shut_server, shut_client, 0 },
	{ "flags", flags_server, flags_client, 0 },
	{ "nonblock", nb_server, nb_client, 0 },
	{ "intr", intr_server, intr_client, 0 },
	{ "kill", kill_server, kill_client, 0 },
	{ "linger", linger_server, linger_client, 0 },
	{ "dup", dup_server, dup_client, 0 },
	{ "vec", vec_server, vec_client, 0 },
	{ "oob", oob_server, oob_client, 0 },
	{ "refused", refused_server, refused_client, 0 },
	{ "sendfile", sendfile_server, sendfile_client, 0 },
	{ "epoll", epoll_server, epoll_client, 0 },
	{ "rstwrite", rstwrite_server, rstwrite_client, 0 },
	{ "rstpeer", rstwrite_server, rstpeer_client, 0 },
	{ "pollbits", pollbits_server, pollbits_client, 0 },
	{ "shutrd", shutrd_server, shutrd_client, 0 },
	{ "bigwrite", bigwrite_server, bigwrite_client, 0 },
	{ "et", et_server, et_client, 0 },
	{ "eintr", eintr_server, eintr_client, 0 },
	{ "iov", iov_server, iov_client, 0 },
	{ "cork", cork_server, cork_client, 0 },
	{ "stdio", stdio_server, stdio_client, 0 },
	{ "dup2conn", dup2conn_server, dup2conn_client, 0 },
	{ "waitall", waitall_server, waitall_client, 0 },
	{ "peekall", peekall_server, peekall_client, 0 },
	{ "splice", splice_server, splice_client, 0 },
	{ "defer", defer_server, defer_client, 1 },
	{ "lshut", lshut_server, lshut_client, 0 },
	{ "again", again_server, again_client, 0 },
	{ "preopts", preopts_server, preopts_client, 0 },
};

int main(int argc, char **argv)
{
	const struct tcase *tc = NULL;
	struct sigaction sa = { .sa_handler = on_pipe };

	if (argc == 2 && !strcmp(argv[1], "list")) {
		const char *gaps = getenv("XWAY_TEST_GAPS");
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
			if (!cases[i].gap || (gaps && *gaps))
				printf("%s\n", cases[i].name);
		return 0;
	}
	if (argc < 4) {
		fprintf(stderr, "usage: %s server CASE 4|6 | client CASE 4|6 PORT SERVERPID | list\n",
			argv[0]);
		return 2;
	}
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (!strcmp(cases[i].name, argv[2]))
			tc = &cases[i];
	if (!tc) {
		fprintf(stderr, "unknown case %s\n", argv[2]);
		return 2;
	}
	tcase = tc->name;
	family = argv[3][0] == '6' ? AF_INET6 : AF_INET;
	remote = getenv("XWAY_TEST_REMOTE") && *getenv("XWAY_TEST_REMOTE");
	xen_gaps = getenv("XWAY_TEST_XEN_GAPS") && *getenv("XWAY_TEST_XEN_GAPS");
	sigaction(SIGPIPE, &sa, NULL);
	rng_state = 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
	alarm(120);          /* bound every case; a hang fails */
	if (!strcmp(argv[1], "server")) {
		/* Cases that wait for the client's SIGUSR1 (sigsuspend with
		 * it unblocked) must not lose one sent before they start. */
		struct sigaction su = { .sa_handler = on_usr1 };
		sigset_t usr;
		sigemptyset(&usr);
		sigaddset(&usr, SIGUSR1);
		sigprocmask(SIG_BLOCK, &usr, NULL);
		sigaction(SIGUSR1, &su, NULL);
		int port, lfd = listener(&port);
		if (!strcmp(tc->name, "oob") || !strcmp(tc->name, "defer")) {
			/* TCP_DEFER_ACCEPT on a listener: as the kernel rounds it. */
			int v = 5, got = -1;
			socklen_t l = sizeof(got);
			CHECK(setsockopt(lfd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &v, sizeof(v)) == 0,
			      "TCP_DEFER_ACCEPT");
			CHECK(getsockopt(lfd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &got, &l) == 0 &&
			      got >= 5, "TCP_DEFER_ACCEPT reads back %d", got);
		}
		if (!strcmp(tc->name, "refused")) {
			/* A port outside the kernel's ephemeral range, so that
			 * no other process's bind(0)/connect() takes it after
			 * we close it: try a few in 20000-29999. */
			const char *bind_ip = getenv("XWAY_TEST_BIND");
			close(lfd);
			for (int i = 0; i < 200; i++) {
				int p2 = 20000 + (int)(rnd() % 10000), one = 1;
				int t = socket(family, SOCK_STREAM, 0);
				struct sockaddr_storage ss;
				socklen_t sl;
				memset(&ss, 0, sizeof(ss));
				if (family == AF_INET) {
					struct sockaddr_in *s4 = (void *)&ss;
					s4->sin_family = AF_INET;
					s4->sin_port = htons((uint16_t)p2);
					s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
					sl = sizeof(*s4);
				} else {
					struct sockaddr_in6 *s6 = (void *)&ss;
					s6->sin6_family = AF_INET6;
					s6->sin6_port = htons((uint16_t)p2);
					s6->sin6_addr = in6addr_loopback;
					sl = sizeof(*s6);
				}
				/* Across hosts: free on the address the
				 * client will try. */
				if (bind_ip && *bind_ip)
					inet_pton(family, bind_ip, family == AF_INET
						  ? (void *)&((struct sockaddr_in *)&ss)->sin_addr
						  : (void *)&((struct sockaddr_in6 *)&ss)->sin6_addr);
				setsockopt(t, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
				int ok = bind(t, (void *)&ss, sl) == 0;
				close(t);
				if (ok) {
					port = p2;
					break;
				}
			}
			printf("%d %d\n", port, (int)getpid());
			return 0;
		}
		if (getenv("XWAY_TEST_DAEMONIZE")) {
			/* Like a daemon's start process: listen, fork, exit;
			 * the child serves (and reports the port and its pid). */
			pid_t ch = fork();
			CHECK(ch >= 0, "fork");
			if (ch > 0)
				_exit(0);
		}
		printf("%d %d\n", port, (int)getpid());
		fflush(stdout);
		int fd = accept(lfd, NULL, NULL);
		CHECK(fd >= 0, "accept");
		lshut_lfd = lfd;
		if (strcmp(tc->name, "lshut") && strcmp(tc->name, "again") &&
		    strcmp(tc->name, "preopts"))
			close(lfd);
		tc->srv(fd);
		close(fd);
		return 0;
	}
	if (!strcmp(argv[1], "client") && argc >= 6) {
		const char *host = getenv("XWAY_TEST_HOST");
		if (!host || !*host)
			host = family == AF_INET ? "127.0.0.1" : "::1";
		if (!strcmp(tc->name, "refused")) {
			struct sockaddr_storage ss;
			memset(&ss, 0, sizeof(ss));
			socklen_t sl;
			int fd = socket(family, SOCK_STREAM, 0);
			if (family == AF_INET) {
				struct sockaddr_in *s4 = (void *)&ss;
				s4->sin_family = AF_INET;
				s4->sin_port = htons((uint16_t)atoi(argv[4]));
				inet_pton(AF_INET, host, &s4->sin_addr);
				sl = sizeof(*s4);
			} else {
				struct sockaddr_in6 *s6 = (void *)&ss;
				s6->sin6_family = AF_INET6;
				s6->sin6_port = htons((uint16_t)atoi(argv[4]));
				inet_pton(AF_INET6, host, &s6->sin6_addr);
				sl = sizeof(*s6);
			}
			CHECK_ERR(connect(fd, (void *)&ss, sl), ECONNREFUSED);
			errno = 0;
			int r = connect(fd, (void *)&ss, sl);
			CHECK(r == -1 && (errno == ECONNREFUSED || errno == ECONNABORTED),
			      "second connect: ECONNREFUSED or ECONNABORTED");
			close(fd);
			return 0;
		}
		again_host = host;
		again_port = atoi(argv[4]);
		int fd = dial(host, atoi(argv[4]), !strcmp(tc->name, "echo"));
		tc->cli(fd, (pid_t)atoi(argv[5]));
		close(fd);
		return 0;
	}
	fprintf(stderr, "bad arguments\n");
	return 2;
}
