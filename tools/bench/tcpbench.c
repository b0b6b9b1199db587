// SPDX-License-Identifier: MIT
/*
 * xway-tcpbench: a plain TCP benchmark that uses ordinary sockets only
 * (socket/bind/listen/accept/connect/read/write/shutdown), so the same
 * binary measures kernel TCP when run plainly and the shim when run with
 * LD_PRELOAD=libxway.so.  Tests: streaming throughput with 64 B and 64 KiB
 * writes, 64-byte ping-pong round trips (p50/p99), and the connection rate
 * of short request/response connections (connect, 64 B each way, close:
 * HTTP/1.0 without keep-alive, where the shim's set-up is the cost).  One
 * connection per test (the rate: one per request); the client tells the
 * server which test with a 16-byte header.
 *
 *   xway-tcpbench [options]             fork a server and a client (loopback)
 *   xway-tcpbench server [-p PORT]      serve until killed
 *   xway-tcpbench client -H ADDR -p PORT
 *
 * Output: human-readable lines, plus "RESULT <name> <value>" lines for
 * scripts (tools/bench/run-bench.sh).
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "benchlib.h"

enum { T_STREAM = 1, T_PINGPONG = 2, T_CHURN = 3, T_QUIT = 4 };

struct hello {          /* client -> server, host order (same machine) */
	uint32_t test;
	uint32_t msg;
	uint64_t arg;       /* stream: unused; ping-pong: rounds */
};

struct report {         /* server -> client after a stream */
	uint64_t bytes;
	uint64_t ns;
};

/* -N: leave Nagle on (the default of most applications); otherwise
 * TCP_NODELAY, as request/response benchmarks set it. */
static int nagle;

static int nodelay(int fd)
{
	int one = 1;

	if (nagle)
		return 0;
	return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Returns 1 when the client said it is done (T_QUIT). */
static int serve_one(int fd)
{
	static char buf[256 * 1024];
	struct hello h;

	nodelay(fd);
	if (!bl_read_all(fd, &h, sizeof(h)))
		return 0;
	if (h.test == T_QUIT)
		return 1;
	if (h.test == T_CHURN && h.msg <= sizeof(buf)) {
		if (bl_read_all(fd, buf, h.msg))
			bl_write_all(fd, buf, h.msg);
	} else if (h.test == T_STREAM) {
		struct report r = { 0, 0 };
		uint64_t t0 = 0;

		for (;;) {
			ssize_t n = read(fd, buf, sizeof(buf));

			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				bl_die("server read: %s", strerror(errno));
			if (n == 0)
				break;
			if (!t0)
				t0 = bl_now_ns();
			r.bytes += n;
		}
		r.ns = bl_now_ns() - t0;
		bl_write_all(fd, &r, sizeof(r));
	} else if (h.test == T_PINGPONG && h.msg <= sizeof(buf)) {
		while (bl_read_all(fd, buf, h.msg))
			bl_write_all(fd, buf, h.msg);
	} else {
		bl_die("server: bad request %u/%u", h.test, h.msg);
	}
	return 0;
}

/* Serve until killed, or (until_quit) until a client sends T_QUIT. */
static void serve(int lfd, int until_quit)
{
	for (;;) {
		int fd = accept(lfd, NULL, NULL), quit;

		if (fd < 0) {
			if (errno == EINTR)
				continue;
			bl_die("accept: %s", strerror(errno));
		}
		quit = serve_one(fd);
		close(fd);
		if (quit && until_quit)
			return;
	}
}

static int dial(const struct sockaddr_in *sa)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		bl_die("socket: %s", strerror(errno));
	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) != 0)
		bl_die("connect: %s", strerror(errno));
	nodelay(fd);
	return fd;
}

static double run_stream(const struct sockaddr_in *sa, uint32_t msg, double secs)
{
	static char buf[64 * 1024];
	struct hello h = { T_STREAM, msg, 0 };
	struct report r;
	uint64_t end;
	int fd = dial(sa);

	memset(buf, 'x', sizeof(buf));
	bl_write_all(fd, &h, sizeof(h));
	end = bl_now_ns() + (uint64_t)(secs * 1e9);
	for (long i = 0; ; i++) {
		bl_write_all(fd, buf, msg);
		if ((i & 63) == 0 && bl_now_ns() > end)
			break;
	}
	shutdown(fd, SHUT_WR);
	if (!bl_read_all(fd, &r, sizeof(r)))
		bl_die("stream: no report from the server");
	close(fd);
	return r.ns ? (double)r.bytes * 1e3 / (double)r.ns : 0;
}

static void run_pingpong(const struct sockaddr_in *sa, long rounds,
			 double *p50, double *p99)
{
	const long warm = rounds / 10 + 100;
	struct hello h = { T_PINGPONG, 64, 0 };
	uint64_t *rtt = malloc(sizeof(*rtt) * rounds);
	char msg[64] = { 0 };
	int fd = dial(sa);

	if (!rtt)
		bl_die("out of memory");
	bl_write_all(fd, &h, sizeof(h));
	for (long i = 0; i < warm + rounds; i++) {
		uint64_t t0 = bl_now_ns();

		memcpy(msg, &i, sizeof(i));
		bl_write_all(fd, msg, sizeof(msg));
		if (!bl_read_all(fd, msg, sizeof(msg)) || memcmp(msg, &i, sizeof(i)))
			bl_die("ping-pong: wrong or missing reply");
		if (i >= warm)
			rtt[i - warm] = bl_now_ns() - t0;
	}
	close(fd);
	*p50 = bl_percentile(rtt, rounds, 50) / 1e3;
	*p99 = bl_percentile(rtt, rounds, 99) / 1e3;
	free(rtt);
}

/* Connections per second, each: connect, 64 B request, 64 B reply, close
 * (the client closes first, as HTTP/1.0 clients read to EOF then close). */
static double run_churn(const struct sockaddr_in *sa, double secs)
{
	struct { struct hello h; char req[64]; } m = { { T_CHURN, 64, 0 }, { 0 } };
	char rep[64];
	uint64_t t0 = bl_now_ns(), end = t0 + (uint64_t)(secs * 1e9), t;
	long n = 0;

	do {
		int fd = dial(sa);

		memcpy(m.req, &n, sizeof(n));
		bl_write_all(fd, &m, sizeof(m));
		if (!bl_read_all(fd, rep, sizeof(rep)) || memcmp(rep, m.req, sizeof(rep)))
			bl_die("churn: wrong or missing reply");
		close(fd);
		n++;
	} while ((t = bl_now_ns()) < end);
	return (double)n * 1e9 / (double)(t - t0);
}

static void client(const struct sockaddr_in *sa, double secs, long rounds)
{
	static const uint32_t sizes[] = { 64, 65536 };
	double p50, p99;

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		double v = run_stream(sa, sizes[i], secs);

		printf("  stream %5u B writes   %9.0f MB/s\n", sizes[i], v);
		printf("RESULT stream_%u %.1f\n", sizes[i], v);
		fflush(stdout);
	}
	run_pingpong(sa, rounds, &p50, &p99);
	printf("  ping-pong 64 B         p50 %.2f us, p99 %.2f us\n", p50, p99);
	printf("RESULT pingpong_p50_us %.2f\nRESULT pingpong_p99_us %.2f\n", p50, p99);
	fflush(stdout);
	double cr = run_churn(sa, secs);
	printf("  connections (64 B each way, close) %9.0f /s\n", cr);
	printf("RESULT churn_conn_s %.1f\n", cr);
	fflush(stdout);
}

static int listener(uint16_t port, struct sockaddr_in *sa)
{
	socklen_t len = sizeof(*sa);
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		bl_die("socket: %s", strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons(port);
	sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)sa, sizeof(*sa)) != 0)
		bl_die("bind 127.0.0.1:%u: %s", port, strerror(errno));
	if (listen(fd, 16) != 0)
		bl_die("listen: %s", strerror(errno));
	if (getsockname(fd, (struct sockaddr *)sa, &len) != 0)
		bl_die("getsockname: %s", strerror(errno));
	return fd;
}

static void usage(FILE *f)
{
	fprintf(f,
"usage: xway-tcpbench [-t SECONDS] [-n ROUNDS] [-c SERVER_CPU,CLIENT_CPU] [-p PORT] [-N]\n"
"       xway-tcpbench server [-p PORT] [-c CPU]\n"
"       xway-tcpbench client -H IPV4 -p PORT [-t SECONDS] [-n ROUNDS] [-c CPU]\n"
"  Plain TCP (ordinary sockets only): streams 64 B and 64 KiB writes for\n"
"  SECONDS (default 1) each, then ROUNDS (default 20000) 64-byte ping-pongs,\n"
"  then SECONDS of short connections (connect, 64 B each way, close).\n"
"  Without a mode it forks a loopback server and runs the client against it.\n"
"  Run it under LD_PRELOAD=libxway.so to measure the shim.\n"
"  -N leaves Nagle on (default: TCP_NODELAY on every socket).\n");
}

int main(int argc, char **argv)
{
	const char *mode = "both", *host = "127.0.0.1";
	double secs = 1.0;
	long rounds = 20000;
	int port = 0, cpu_s = -1, cpu_c = -1, ch;
	struct sockaddr_in sa;

	if (argc > 1 && argv[1][0] != '-') {
		mode = argv[1];
		argv++;
		argc--;
		if (strcmp(mode, "server") && strcmp(mode, "client")) {
			usage(stderr);
			return 2;
		}
	}
	while ((ch = getopt(argc, argv, "t:n:c:p:H:Nh")) != -1) {
		char *end;

		switch (ch) {
		case 't':
			secs = strtod(optarg, &end);
			if (*end || secs <= 0 || secs > 600)
				bl_die("xway-tcpbench: bad -t '%s'", optarg);
			break;
		case 'n':
			rounds = strtol(optarg, &end, 10);
			if (*end || rounds < 10 || rounds > 100000000)
				bl_die("xway-tcpbench: bad -n '%s'", optarg);
			break;
		case 'p':
			port = strtol(optarg, &end, 10);
			if (*end || port < 0 || port > 65535)
				bl_die("xway-tcpbench: bad -p '%s'", optarg);
			break;
		case 'c':
			if (sscanf(optarg, "%d,%d", &cpu_s, &cpu_c) < 1 || cpu_s < 0)
				bl_die("xway-tcpbench: bad -c '%s'", optarg);
			if (cpu_c < 0)
				cpu_c = cpu_s;
			break;
		case 'H':
			host = optarg;
			break;
		case 'N':
			nagle = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	signal(SIGPIPE, SIG_IGN);
	if (!strcmp(mode, "server")) {
		int lfd = listener(port, &sa);

		bl_pin(cpu_s);
		printf("xway-tcpbench: serving on 127.0.0.1:%u\n", ntohs(sa.sin_port));
		fflush(stdout);
		serve(lfd, 0);
		return 0;
	}
	if (!strcmp(mode, "client")) {
		memset(&sa, 0, sizeof(sa));
		sa.sin_family = AF_INET;
		sa.sin_port = htons(port);
		if (!port || inet_pton(AF_INET, host, &sa.sin_addr) != 1)
			bl_die("xway-tcpbench client: need -H IPV4 and -p PORT");
		bl_pin(cpu_s);
		client(&sa, secs, rounds);
		return 0;
	}
	int lfd = listener(port, &sa);
	pid_t pid = fork();

	if (pid < 0)
		bl_die("fork: %s", strerror(errno));
	if (pid == 0) {
		bl_pin(cpu_s);
		serve(lfd, 1);
		_exit(0);
	}
	close(lfd);
	bl_pin(cpu_c);
	client(&sa, secs, rounds);
	{
		struct hello q = { T_QUIT, 0, 0 };
		int fd = dial(&sa);

		bl_write_all(fd, &q, sizeof(q));
		close(fd);
	}
	int st;
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st))
		bl_die("xway-tcpbench: server failed");
	return 0;
}
