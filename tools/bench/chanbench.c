// SPDX-License-Identifier: MIT
/*
 * xway-chanbench: the local channel against an AF_UNIX socketpair measured
 * in the same run: streaming throughput with 64 B, 1 KiB and 64 KiB writes,
 * and 64-byte ping-pong round trips (p50/p99), with the two processes on
 * different cores and both pinned to one core.  Prints ratios; the figures
 * and targets are in docs/BENCHMARKS.md.
 */
#include <getopt.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "xway/chan.h"
#include "benchlib.h"

struct opts {
	double secs;          /* per stream measurement */
	long rounds;          /* ping-pong round trips */
	uint32_t spin_ns;     /* 0: channel default */
	int only_cross, only_same;
};

/* A transport: either the channel (one endpoint per process) or one end
 * of a socketpair. */
struct tr {
	struct xway_chan *c;
	int fd;
};

static void tr_send_all(struct tr *t, const void *buf, size_t len)
{
	const char *p = buf;

	if (!t->c) {
		bl_write_all(t->fd, buf, len);
		return;
	}
	while (len) {
		ssize_t n = xway_chan_send(t->c, p, len);

		if (n == -EAGAIN) {
			int m = xway_chan_wait(t->c, XWAY_EV_OUT, -1, -1);
			if (m < 0 && m != -EINTR)
				bl_die("wait: %s", strerror(-m));
			continue;
		}
		if (n < 0)
			bl_die("chan send: %s", strerror((int)-n));
		p += n;
		len -= n;
	}
}

/* Returns bytes read (> 0), or 0 at EOF. */
static size_t tr_recv(struct tr *t, void *buf, size_t len)
{
	for (;;) {
		ssize_t n;

		if (!t->c) {
			n = read(t->fd, buf, len);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				bl_die("read: %s", strerror(errno));
			return n;
		}
		n = xway_chan_recv(t->c, buf, len, 0);
		if (n == -EAGAIN) {
			int m = xway_chan_wait(t->c, XWAY_EV_IN, -1, -1);
			if (m < 0 && m != -EINTR)
				bl_die("wait: %s", strerror(-m));
			continue;
		}
		if (n < 0)
			bl_die("chan recv: %s", strerror((int)-n));
		return n;
	}
}

static void tr_recv_all(struct tr *t, void *buf, size_t len)
{
	char *p = buf;

	while (len) {
		size_t n = tr_recv(t, p, len);

		if (!n)
			bl_die("EOF inside a message");
		p += n;
		len -= n;
	}
}

static void tr_eof(struct tr *t)
{
	if (t->c)
		xway_chan_shutdown_wr(t->c);
	else
		shutdown(t->fd, SHUT_WR);
}

/* Make a connected pair: a[0] for the parent, a[1] for the child. */
static void make_pair(int chan, const struct opts *o, struct tr a[2])
{
	memset(a, 0, sizeof(struct tr) * 2);
	if (chan) {
		struct xway_chan_params p = { .ring_order = 20, .spin_ns = o->spin_ns };
		int fds[3], d[3], r;

		r = xway_chan_local_create(&p, 42, &a[0].c, fds);
		if (r)
			bl_die("xway_chan_local_create: %s", strerror(-r));
		for (int i = 0; i < 3; i++)
			d[i] = dup(fds[i]);
		r = xway_chan_local_attach(d, 1, 42, &p, &a[1].c);
		if (r)
			bl_die("xway_chan_local_attach: %s", strerror(-r));
	} else {
		int sv[2];

		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
			bl_die("socketpair: %s", strerror(errno));
		a[0].fd = sv[0];
		a[1].fd = sv[1];
	}
}

static void close_tr(struct tr *t)
{
	if (t->c)
		xway_chan_close(t->c);
	else
		close(t->fd);
}

static int wait_pid(pid_t pid)
{
	int st;

	if (waitpid(pid, &st, 0) != pid)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Stream: the child writes msg-sized chunks for o->secs, the parent reads
 * with 256 KiB reads.  Returns MB/s (10^6 bytes) seen by the reader. */
static double stream(int chan, size_t msg, int cpu_w, int cpu_r,
		     const struct opts *o)
{
	static char buf[256 * 1024];
	struct tr t[2];
	uint64_t bytes = 0, t0 = 0, t1;
	pid_t pid;

	make_pair(chan, o, t);
	pid = fork();
	if (pid < 0)
		bl_die("fork: %s", strerror(errno));
	if (pid == 0) {
		uint64_t end;

		close_tr(&t[0]);
		bl_pin(cpu_w);
		memset(buf, 'x', msg);
		end = bl_now_ns() + (uint64_t)(o->secs * 1e9);
		for (long i = 0; ; i++) {
			tr_send_all(&t[1], buf, msg);
			if ((i & 63) == 0 && bl_now_ns() > end)
				break;
		}
		tr_eof(&t[1]);
		_exit(0);
	}
	close_tr(&t[1]);
	bl_pin(cpu_r);
	for (;;) {
		size_t n = tr_recv(&t[0], buf, sizeof(buf));

		if (!n)
			break;
		if (!t0)
			t0 = bl_now_ns();
		bytes += n;
	}
	t1 = bl_now_ns();
	if (wait_pid(pid) != 0)
		bl_die("stream writer failed");
	close_tr(&t[0]);
	bl_pin(-1);
	return t1 > t0 ? (double)bytes * 1e3 / (double)(t1 - t0) : 0;
}

/* Ping-pong of 64-byte messages; fills p50/p99 in microseconds. */
static void pingpong(int chan, int cpu_a, int cpu_b, const struct opts *o,
		     double *p50, double *p99)
{
	const long warm = o->rounds / 10 + 100;
	uint64_t *rtt = malloc(sizeof(*rtt) * o->rounds);
	char msg[64] = { 0 };
	struct tr t[2];
	pid_t pid;

	if (!rtt)
		bl_die("out of memory");
	make_pair(chan, o, t);
	pid = fork();
	if (pid < 0)
		bl_die("fork: %s", strerror(errno));
	if (pid == 0) {
		close_tr(&t[0]);
		bl_pin(cpu_b);
		for (long i = 0; i < warm + o->rounds; i++) {
			tr_recv_all(&t[1], msg, sizeof(msg));
			tr_send_all(&t[1], msg, sizeof(msg));
		}
		_exit(0);
	}
	close_tr(&t[1]);
	bl_pin(cpu_a);
	for (long i = 0; i < warm + o->rounds; i++) {
		uint64_t t0 = bl_now_ns();

		memcpy(msg, &i, sizeof(i));
		tr_send_all(&t[0], msg, sizeof(msg));
		tr_recv_all(&t[0], msg, sizeof(msg));
		if (memcmp(msg, &i, sizeof(i)))
			bl_die("ping-pong: wrong reply");
		if (i >= warm)
			rtt[i - warm] = bl_now_ns() - t0;
	}
	if (wait_pid(pid) != 0)
		bl_die("ping-pong peer failed");
	close_tr(&t[0]);
	bl_pin(-1);
	*p50 = bl_percentile(rtt, o->rounds, 50) / 1e3;
	*p99 = bl_percentile(rtt, o->rounds, 99) / 1e3;
	free(rtt);
}

static void usage(FILE *f)
{
	fprintf(f,
"usage: xway-chanbench [-t SECONDS] [-n ROUNDS] [-s SPIN_NS] [--cross|--same]\n"
"  Streams 64 B, 1 KiB and 64 KiB writes for SECONDS (default 1) each and\n"
"  runs ROUNDS (default 20000) 64-byte ping-pongs, over the local channel\n"
"  and over an AF_UNIX socketpair in the same run; with the two processes on\n"
"  two different CPUs (--cross) and both pinned to one CPU (--same); default\n"
"  both.  -s sets the channel's spin (ns; 4294967295 = never spin).\n"
"  Prints MB/s (10^6 bytes/s), round-trip p50/p99 in us, and ratios.\n");
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "cross", no_argument, NULL, 'c' },
		{ "same", no_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { .secs = 1.0, .rounds = 20000 };
	static const size_t sizes[] = { 64, 1024, 65536 };
	int c0, c1, ch;

	while ((ch = getopt_long(argc, argv, "t:n:s:h", lo, NULL)) != -1) {
		char *end;

		switch (ch) {
		case 't':
			o.secs = strtod(optarg, &end);
			if (*end || o.secs <= 0 || o.secs > 600)
				bl_die("xway-chanbench: bad -t '%s'", optarg);
			break;
		case 'n':
			o.rounds = strtol(optarg, &end, 10);
			if (*end || o.rounds < 10 || o.rounds > 100000000)
				bl_die("xway-chanbench: bad -n '%s'", optarg);
			break;
		case 's':
			o.spin_ns = strtoul(optarg, &end, 10);
			if (*end)
				bl_die("xway-chanbench: bad -s '%s'", optarg);
			break;
		case 'c': o.only_cross = 1; break;
		case 'S': o.only_same = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	bl_two_cpus(&c0, &c1);
	printf("xway-chanbench: local channel vs AF_UNIX socketpair (same run), %d usable CPUs\n",
	       bl_ncpus());
	for (int same = 0; same < 2; same++) {
		int a = c0, b = same ? c0 : c1;
		const char *pl = same ? "same-core" : "cross-core";
		double p50c, p99c, p50s, p99s;

		if ((same && o.only_cross) || (!same && o.only_same))
			continue;
		if (!same && c0 == c1) {
			printf("%-10s  skipped: only one usable CPU\n", pl);
			continue;
		}
		printf("\n%-10s  (cpu %d -> cpu %d)  %14s %14s %9s\n", pl, a, b,
		       "channel", "socketpair", "ratio");
		for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
			double vc = stream(1, sizes[i], a, b, &o);
			double vs = stream(0, sizes[i], a, b, &o);

			printf("  stream %5zu B writes      %9.0f MB/s %9.0f MB/s %8.1fx\n",
			       sizes[i], vc, vs, vs > 0 ? vc / vs : 0);
			fflush(stdout);
		}
		pingpong(1, a, b, &o, &p50c, &p99c);
		pingpong(0, a, b, &o, &p50s, &p99s);
		printf("  ping-pong 64 B p50        %9.2f us   %9.2f us   %8.2fx\n",
		       p50c, p50s, p50c / p50s);
		printf("  ping-pong 64 B p99        %9.2f us   %9.2f us   %8.2fx\n",
		       p99c, p99s, p99c / p99s);
		if (!same) {
			struct opts ns = o;

			ns.spin_ns = UINT32_MAX;
			pingpong(1, a, b, &ns, &p50c, &p99c);
			printf("  ping-pong 64 B, no spin   %9.2f us p50, %.2f us p99\n",
			       p50c, p99c);
		}
		fflush(stdout);
	}
	return 0;
}
