/* SPDX-License-Identifier: MIT */
/*
 * xway-adopt: listeners that reach a shimmed server without its listen()
 * (systemd socket activation, inheritance through exec, SCM_RIGHTS) must
 * be adopted by the shim and their connections accelerated.  Roles:
 *   launch KIND SERVER...  run WITHOUT the shim (as systemd would be):
 *                          makes a listener on 127.0.0.1 and starts SERVER
 *                          (argv) with it: KIND systemd (fd 3, LISTEN_FDS=1,
 *                          LISTEN_PID=child), inherit (fd 3, no variables),
 *                          exec-self (run WITH the shim: listens itself,
 *                          then execs SERVER in the same process),
 *                          scm / scm-raw (fd 3 is an AF_UNIX socket; the
 *                          listener follows by SCM_RIGHTS).  The child gets
 *                          LD_PRELOAD=$ADOPT_PRELOAD.  Exit: the server's.
 *   serve KIND             the shimmed server: finds the listener, prints
 *                          "PORT" once it is registered, accepts one
 *                          connection and echoes ADOPT_BYTES bytes.
 *   client PORT            the shimmed client: sends ADOPT_BYTES random
 *                          bytes (seed printed), checks the echo.
 *   errno                  accept on descriptors that are not listeners
 *                          keeps the kernel's errno, twice each (the second
 *                          answer comes from the shim's memory).
 * ADOPT_FAMILY=6: on ::1 instead of 127.0.0.1.  ADOPT_CONNS=2: the server
 * serves two connections in turn, the first one per ADOPT_FIRST_EXPECT.
 * XWAY_TEST_EXPECT=accel|tcp: TCP_INFO of the real socket must show ~0 /
 * all of the payload.  Every wait is bounded; exit 0 pass, 1 fail.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <linux/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHECK(cond, ...) do { if (!(cond)) { \
	fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
	fprintf(stderr, __VA_ARGS__); \
	fprintf(stderr, " (errno %s)\n", strerror(errno)); exit(1); } } while (0)

static size_t payload_bytes(void)
{
	const char *e = getenv("ADOPT_BYTES");
	long v = e ? strtol(e, NULL, 10) : 0;

	return v > 0 && v <= (64L << 20) ? (size_t)v : (size_t)1 << 20;
}

/* The payload took the channel (accel) or the kernel (tcp). */
static void check_path_as(int fd, const char *who, size_t payload, const char *e)
{
	struct tcp_info ti;
	socklen_t l = sizeof(ti);

	memset(&ti, 0, sizeof(ti));
	CHECK(getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) == 0, "TCP_INFO");
	unsigned long long k = ti.tcpi_bytes_acked + ti.tcpi_bytes_received;
	fprintf(stderr, "%s: kernel TCP bytes_acked %llu bytes_received %llu, payload %zu\n",
		who, (unsigned long long)ti.tcpi_bytes_acked,
		(unsigned long long)ti.tcpi_bytes_received, payload);
	if (e && !strcmp(e, "accel"))
		CHECK(k < 4096, "%s: accelerated expected, kernel TCP carried %llu of %zu",
		      who, k, 2 * payload);
	else if (e && !strcmp(e, "tcp"))
		CHECK(k >= 2 * payload, "%s: plain TCP expected, kernel carried %llu of %zu",
		      who, k, 2 * payload);
}

static int read_full(int fd, char *buf, size_t len)
{
	size_t got = 0;

	for (int spins = 0; got < len && spins < 10000000; spins++) {
		ssize_t n = read(fd, buf + got, len - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	return got == len ? 0 : -1;
}

static int write_full(int fd, const char *buf, size_t len)
{
	size_t put = 0;

	for (int spins = 0; put < len && spins < 10000000; spins++) {
		ssize_t n = write(fd, buf + put, len - put);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		put += (size_t)n;
	}
	return put == len ? 0 : -1;
}

/* Loopback of the family ADOPT_FAMILY names (4, the default, or 6). */
static socklen_t loopback(struct sockaddr_storage *ss, int port)
{
	const char *f = getenv("ADOPT_FAMILY");

	memset(ss, 0, sizeof(*ss));
	if (f && !strcmp(f, "6")) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_addr = in6addr_loopback;
		s6->sin6_port = htons((uint16_t)port);
		return sizeof(*s6);
	}
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	s4->sin_family = AF_INET;
	s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s4->sin_port = htons((uint16_t)port);
	return sizeof(*s4);
}

static void check_path(int fd, const char *who, size_t payload)
{
	check_path_as(fd, who, payload, getenv("XWAY_TEST_EXPECT"));
}

/* ---- launch (no shim) -------------------------------------------------- */

static int do_launch(const char *kind, char **argv)
{
	struct sockaddr_storage sa;
	socklen_t sal = loopback(&sa, 0);
	int lfd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0), sp[2] = { -1, -1 };
	int defer = 5, one = 1, status;
	socklen_t dl = sizeof(defer);
	char dbuf[32];
	pid_t pid;

	int self = !strcmp(kind, "exec-self");

	/* exec-self: the shimmed launcher listens itself (registered) and
	 * execs the server in the same process: the registration dies with
	 * the old image's broker link, the new image must adopt. */
	CHECK(self || !getenv("LD_PRELOAD") || !*getenv("LD_PRELOAD"),
	      "the launcher must run without the shim");
	CHECK(lfd >= 0, "socket");
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	CHECK(bind(lfd, (struct sockaddr *)&sa, sal) == 0, "bind");
	CHECK(listen(lfd, 16) == 0, "listen");
	/* As a systemd socket unit with DeferAcceptSec= would: the adopted
	 * listener must keep it from the kernel and report it back. */
	CHECK(setsockopt(lfd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer, sizeof(defer)) == 0,
	      "TCP_DEFER_ACCEPT");
	CHECK(getsockopt(lfd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer, &dl) == 0,
	      "TCP_DEFER_ACCEPT read back");
	snprintf(dbuf, sizeof(dbuf), "%d", defer);
	if (!strncmp(kind, "scm", 3))
		CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0, "socketpair");
	pid = self ? 0 : fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		char pbuf[32];
		const char *pre = getenv("ADOPT_PRELOAD");

		/* At 3 without FD_CLOEXEC (dup2 onto itself keeps it). */
		if (dup2(sp[1] >= 0 ? sp[1] : lfd, 3) < 0 || fcntl(3, F_SETFD, 0) < 0)
			_exit(126);
		if (!strcmp(kind, "systemd")) {
			snprintf(pbuf, sizeof(pbuf), "%d", (int)getpid());
			setenv("LISTEN_FDS", "1", 1);
			setenv("LISTEN_PID", pbuf, 1);
		}
		setenv("ADOPT_DEFER", dbuf, 1);
		if (pre && *pre && !self)
			setenv("LD_PRELOAD", pre, 1);
		execv(argv[0], argv);
		_exit(127);
	}
	if (sp[0] >= 0) {
		char b = 'L';
		struct iovec iov = { &b, 1 };
		union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
				    .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
		struct cmsghdr *cm = CMSG_FIRSTHDR(&m);

		memset(&u, 0, sizeof(u));
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &lfd, sizeof(int));
		CHECK(sendmsg(sp[0], &m, 0) == 1, "sendmsg SCM_RIGHTS");
		close(sp[1]);
	}
	/* The launcher keeps its copy, as systemd does; it never accepts. */
	CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	fprintf(stderr, "server killed by signal %d\n", WTERMSIG(status));
	return 1;
}

/* ---- serve (shimmed) --------------------------------------------------- */

static int recv_listener(int us, int raw)
{
	char b;
	struct iovec iov = { &b, 1 };
	union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
			    .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
	struct pollfd pf = { .fd = us, .events = POLLIN };
	long n;
	int fd;

	CHECK(poll(&pf, 1, 30000) == 1, "no listener came by SCM_RIGHTS");
	/* raw: a receive the shim does not see (a library making the system
	 * call itself): only accept can adopt then. */
	/* All six arguments: a syscall() wrapper reads six (the shim's is
	 * C varargs, and ASan flags reading the ones never passed). */
	n = raw ? syscall(SYS_recvmsg, us, &m, 0, 0, 0, 0) : recvmsg(us, &m, 0);
	CHECK(n == 1, "recvmsg");
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	CHECK(cm && cm->cmsg_type == SCM_RIGHTS, "no SCM_RIGHTS");
	memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	return fd;
}

static int do_serve(const char *kind)
{
	size_t len = payload_bytes();
	char *buf = malloc(len);
	const char *ed = getenv("ADOPT_DEFER");
	struct sockaddr_storage sa;
	socklen_t sl = sizeof(sa);
	int lfd = 3, nfd, v = 0, acc = 0, before = -1;
	socklen_t vl = sizeof(v);

	CHECK(buf, "malloc");
	if (!strcmp(kind, "systemd")) {
		const char *lf = getenv("LISTEN_FDS"), *lp = getenv("LISTEN_PID");
		CHECK(lf && lp && atoi(lf) == 1 && atoi(lp) == (int)getpid(),
		      "LISTEN_FDS/LISTEN_PID not for us");
	} else if (!strcmp(kind, "scm")) {
		/* A number remembered as "not a listener" (UDP) is closed and
		 * reused by the received listener: it must be adopted. */
		int u = socket(AF_INET, SOCK_DGRAM, 0);
		CHECK(u >= 0, "socket udp");
		errno = 0;
		CHECK(accept(u, NULL, NULL) < 0 && errno == EOPNOTSUPP, "accept on udp");
		CHECK(close(u) == 0, "close udp");
		before = u;
		lfd = recv_listener(3, 0);
		CHECK(lfd == before, "listener at %d, expected the freed %d", lfd, before);
	} else if (!strcmp(kind, "scm-raw")) {
		lfd = recv_listener(3, 1);
	} else {
		CHECK(!strcmp(kind, "inherit") || !strcmp(kind, "exec-self"),
		      "unknown kind %s", kind);
	}
	CHECK(getsockopt(lfd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &vl) == 0 && acc == 1,
	      "fd %d is not listening", lfd);
	if (!strcmp(kind, "scm-raw")) {
		/* Event-loop start: accept until EAGAIN (registers it now). */
		int fl = fcntl(lfd, F_GETFL);
		CHECK(fcntl(lfd, F_SETFL, fl | O_NONBLOCK) == 0, "O_NONBLOCK");
		errno = 0;
		CHECK(accept4(lfd, NULL, NULL, SOCK_CLOEXEC) < 0 && errno == EAGAIN,
		      "nonblocking accept on an idle listener");
		CHECK(fcntl(lfd, F_SETFL, fl) == 0, "blocking again");
	}
	/* TCP_DEFER_ACCEPT as the kernel had it when the launcher set it. */
	vl = sizeof(v);
	CHECK(getsockopt(lfd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &v, &vl) == 0,
	      "TCP_DEFER_ACCEPT");
	if (ed && *ed)
		CHECK(v == atoi(ed), "TCP_DEFER_ACCEPT %d, the launcher set %s", v, ed);
	CHECK(getsockname(lfd, (struct sockaddr *)&sa, &sl) == 0, "getsockname");
	printf("%d\n", ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
						     : ((struct sockaddr_in *)&sa)->sin_port));
	fflush(stdout);
	/* ADOPT_CONNS=2: two connections in turn, the first checked against
	 * ADOPT_FIRST_EXPECT (a broker that came after start-up). */
	const char *nc = getenv("ADOPT_CONNS");
	int conns = nc && atoi(nc) == 2 ? 2 : 1;
	for (int i = 0; i < conns; i++) {
		struct pollfd pf = { .fd = lfd, .events = POLLIN };
		char b;

		CHECK(poll(&pf, 1, 60000) == 1, "no connection within 60 s");
		nfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		CHECK(nfd >= 0, "accept4");
		CHECK(read_full(nfd, buf, len) == 0, "read %zu", len);
		CHECK(write_full(nfd, buf, len) == 0, "write %zu", len);
		CHECK(shutdown(nfd, SHUT_WR) == 0, "shutdown");
		CHECK(read(nfd, &b, 1) == 0, "EOF after the echo");
		check_path_as(nfd, "server", len, i + 1 < conns ? getenv("ADOPT_FIRST_EXPECT")
							       : getenv("XWAY_TEST_EXPECT"));
		close(nfd);
	}
	free(buf);
	return 0;
}

/* ---- client (shimmed) -------------------------------------------------- */

static int do_client(int port)
{
	size_t len = payload_bytes();
	char *out = malloc(len), *in = malloc(len);
	struct sockaddr_storage sa;
	socklen_t sal = loopback(&sa, port);
	unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
	int fd = socket(sa.ss_family, SOCK_STREAM, 0);
	char b;

	CHECK(out && in && fd >= 0, "set-up");
	fprintf(stderr, "client: seed %u\n", seed);
	srand(seed);
	for (size_t i = 0; i < len; i++)
		out[i] = (char)rand();
	CHECK(connect(fd, (struct sockaddr *)&sa, sal) == 0, "connect");
	CHECK(write_full(fd, out, len) == 0, "write");
	CHECK(read_full(fd, in, len) == 0, "read echo");
	CHECK(memcmp(in, out, len) == 0, "echo differs");
	CHECK(read(fd, &b, 1) == 0, "EOF after the echo");
	check_path(fd, "client", len);
	close(fd);
	free(out);
	free(in);
	return 0;
}

/* ---- errno ------------------------------------------------------------- */

/* accept and accept4 on fd fail with want, twice each. */
static void expect_errno(int fd, int want, const char *what)
{
	for (int i = 0; i < 2; i++) {
		errno = 0;
		CHECK(accept(fd, NULL, NULL) < 0 && errno == want,
		      "accept on %s: want %s", what, strerror(want));
		errno = 0;
		CHECK(accept4(fd, NULL, NULL, SOCK_NONBLOCK) < 0 && errno == want,
		      "accept4 on %s: want %s", what, strerror(want));
	}
}

static int do_errno(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr_un su = { .sun_family = AF_UNIX };
	socklen_t sl = sizeof(sa);
	int p[2], u, t, l, c, s, ul, uc, ua;

	CHECK(pipe(p) == 0, "pipe");
	expect_errno(p[0], ENOTSOCK, "a pipe");
	u = socket(AF_INET, SOCK_DGRAM, 0);
	CHECK(u >= 0, "udp");
	expect_errno(u, EOPNOTSUPP, "a UDP socket");
	t = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(t >= 0, "tcp");
	expect_errno(t, EINVAL, "an unconnected TCP socket");
	/* A connected pair on loopback. */
	l = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(l >= 0 && bind(l, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	      listen(l, 4) == 0 && getsockname(l, (struct sockaddr *)&sa, &sl) == 0,
	      "listener");
	c = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(c >= 0 && connect(c, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect");
	s = accept(l, NULL, NULL);
	CHECK(s >= 0, "accept");
	expect_errno(c, EINVAL, "a connected TCP socket (client)");
	expect_errno(s, EINVAL, "a connected TCP socket (server)");
	/* Not open at all. */
	expect_errno(4000, EBADF, "a closed number");
	/* A TCP socket remembered as "not a listener" that then listens
	 * (same number, same file): accept works. */
	CHECK(listen(t, 4) == 0, "listen on the remembered socket");
	CHECK(fcntl(t, F_SETFL, O_NONBLOCK) == 0, "nonblock");
	errno = 0;
	CHECK(accept(t, NULL, NULL) < 0 && errno == EAGAIN, "accept on idle listener");
	/* An AF_UNIX listener works through the shim, before and after the
	 * shim remembered it. */
	snprintf(su.sun_path, sizeof(su.sun_path), "/tmp/xway-adopt.%d.sock", (int)getpid());
	unlink(su.sun_path);
	ul = socket(AF_UNIX, SOCK_STREAM, 0);
	CHECK(ul >= 0 && bind(ul, (struct sockaddr *)&su, sizeof(su)) == 0 &&
	      listen(ul, 4) == 0, "unix listener");
	for (int i = 0; i < 3; i++) {
		uc = socket(AF_UNIX, SOCK_STREAM, 0);
		CHECK(uc >= 0 && connect(uc, (struct sockaddr *)&su, sizeof(su)) == 0,
		      "unix connect");
		ua = accept4(ul, NULL, NULL, SOCK_CLOEXEC);
		CHECK(ua >= 0, "unix accept %d", i);
		close(ua);
		close(uc);
	}
	unlink(su.sun_path);
	close(ul);
	close(p[0]);
	close(p[1]);
	close(u);
	close(t);
	close(c);
	close(s);
	close(l);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 4 && !strcmp(argv[1], "launch"))
		return do_launch(argv[2], argv + 3);
	if (argc == 3 && !strcmp(argv[1], "serve"))
		return do_serve(argv[2]);
	if (argc == 3 && !strcmp(argv[1], "client"))
		return do_client(atoi(argv[2]));
	if (argc == 2 && !strcmp(argv[1], "errno"))
		return do_errno();
	fprintf(stderr, "usage: xway-adopt launch systemd|inherit|exec-self|scm|scm-raw SERVER-ARGV...\n"
		"       xway-adopt serve KIND | client PORT | errno\n");
	return 2;
}
