// SPDX-License-Identifier: MIT
/*
 * xway-vchan-test: exercises the channel layer's Xen backend (libxenvchan)
 * between two domains, for the Xen test bed.  One domain runs the server
 * (it creates the vchan under a xenstore path it may write), the other the
 * client; the client announces the sizes, streams a checksummed byte
 * pattern, then runs 64-byte ping-pongs; the server verifies every byte.
 * Both print one "RESULT ..." line and exit 0 on success, 1 on a data
 * error, 2 on a usage or set-up error, 77 when Xen is absent (skip).
 */
#include <getopt.h>
#include <signal.h>

#include "xway/chan.h"
#include "benchlib.h"

struct plan {
	uint64_t bytes;
	uint64_t rounds;
};

static uint8_t pattern(uint64_t i)
{
	uint64_t x = i * 0x9E3779B97F4A7C15ull;

	return (uint8_t)(x >> 56) ^ (uint8_t)i;
}

static int timeout_ms = 60000;

static void xsend(struct xway_chan *c, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = xway_chan_send(c, p, len);

		if (n == -EAGAIN) {
			int m = xway_chan_wait(c, XWAY_EV_OUT, -1, timeout_ms);
			if (m == 0)
				bl_die("timed out waiting to send");
			if (m < 0 && m != -EINTR)
				bl_die("wait: %s", strerror(-m));
			continue;
		}
		if (n < 0)
			bl_die("send: %s", strerror((int)-n));
		p += n;
		len -= n;
	}
}

static void xrecv(struct xway_chan *c, void *buf, size_t len)
{
	char *p = buf;

	while (len) {
		ssize_t n = xway_chan_recv(c, p, len, 0);

		if (n == -EAGAIN) {
			int m = xway_chan_wait(c, XWAY_EV_IN, -1, timeout_ms);
			if (m == 0)
				bl_die("timed out waiting for data");
			if (m < 0 && m != -EINTR)
				bl_die("wait: %s", strerror(-m));
			continue;
		}
		if (n == 0)
			bl_die("peer closed the vchan early");
		if (n < 0)
			bl_die("recv: %s", strerror((int)-n));
		p += n;
		len -= n;
	}
}

static void usage(FILE *f)
{
	fprintf(f,
"usage: xway-vchan-test server|client -d PEER_DOMID -x XS_PATH\n"
"                       [-b BYTES] [-n ROUNDS] [-o RING_ORDER] [-T TIMEOUT_S]\n"
"\n"
"Runs a checksummed transfer and a ping-pong over the xway channel layer's\n"
"Xen backend (libxenvchan, loaded with dlopen) between two domains.\n"
"\n"
"  server   create the vchan at XS_PATH for PEER_DOMID (the client's domid);\n"
"           XS_PATH must be writable by this domain and readable by the\n"
"           peer, e.g. /local/domain/<srv>/data/vchan/<cli>/xway made by\n"
"           dom0 with: xenstore-chmod -r PATH n<srv> r<cli>\n"
"  client   connect to the vchan the server made at XS_PATH; PEER_DOMID is\n"
"           the server's domid\n"
"  -b       bytes the client streams to the server (default 256 MiB; the\n"
"           server verifies each byte against the pattern)\n"
"  -n       64-byte ping-pong round trips after the transfer (default 20000)\n"
"  -o       log2 ring size asked by the server (default 20: 1 MiB; 12-26)\n"
"  -T       give up when no progress for this many seconds (default 60)\n"
"\n"
"Start the server first.  Each side prints one line:\n"
"  RESULT role=server bytes=N MBps=X checksum=ok rounds=R p50_us=.. p99_us=..\n"
"Exit: 0 ok, 1 data error, 2 usage/set-up error, 77 no Xen here (skip).\n");
}

int main(int argc, char **argv)
{
	struct plan pl = { 256ull << 20, 20000 };
	struct xway_chan_params prm = { .ring_order = 20 };
	const char *path = NULL, *why;
	int domid = -1, server, ch, r;
	struct xway_chan *c;

	if (argc < 2 || (strcmp(argv[1], "server") && strcmp(argv[1], "client"))) {
		if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
			usage(stdout);
			return 0;
		}
		usage(stderr);
		return 2;
	}
	server = !strcmp(argv[1], "server");
	argv++;
	argc--;
	while ((ch = getopt(argc, argv, "d:x:b:n:o:T:h")) != -1) {
		char *end;

		switch (ch) {
		case 'd': domid = strtol(optarg, &end, 10); if (*end) domid = -1; break;
		case 'x': path = optarg; break;
		case 'b': pl.bytes = strtoull(optarg, &end, 0);
			if (*end) bl_die("bad -b '%s'", optarg);
			break;
		case 'n': pl.rounds = strtoull(optarg, &end, 0);
			if (*end) bl_die("bad -n '%s'", optarg);
			break;
		case 'o': prm.ring_order = strtoul(optarg, &end, 0);
			if (*end) bl_die("bad -o '%s'", optarg);
			break;
		case 'T': timeout_ms = (int)strtol(optarg, &end, 0) * 1000;
			if (*end || timeout_ms <= 0) bl_die("bad -T '%s'", optarg);
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (domid < 0 || !path) {
		usage(stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	if (!xway_chan_xen_available(&why)) {
		fprintf(stderr, "xway-vchan-test: skipped: %s\n", why);
		return 77;
	}
	r = server ? xway_chan_xen_server(domid, path, &prm, &c)
		   : xway_chan_xen_client(domid, path, &prm, &c);
	if (r) {
		fprintf(stderr, "xway-vchan-test: %s init (domid %d, %s): %s\n",
			server ? "server" : "client", domid, path, strerror(-r));
		return 2;
	}

	static uint8_t buf[256 * 1024];
	uint64_t t0, t1, bad = 0;

	if (server) {
		xrecv(c, &pl, sizeof(pl));
		if (pl.rounds > 100000000)
			bl_die("implausible plan from the client");
	} else {
		xsend(c, &pl, sizeof(pl));
	}
	t0 = bl_now_ns();
	for (uint64_t pos = 0; pos < pl.bytes; ) {
		size_t n = pl.bytes - pos < sizeof(buf) ? pl.bytes - pos : sizeof(buf);

		if (server) {
			xrecv(c, buf, n);
			for (size_t i = 0; i < n; i++)
				bad += buf[i] != pattern(pos + i);
		} else {
			for (size_t i = 0; i < n; i++)
				buf[i] = pattern(pos + i);
			xsend(c, buf, n);
		}
		pos += n;
	}
	/* The server acknowledges the transfer with its count of bad bytes. */
	if (server)
		xsend(c, &bad, sizeof(bad));
	else
		xrecv(c, &bad, sizeof(bad));
	t1 = bl_now_ns();

	uint64_t *rtt = calloc(pl.rounds ? pl.rounds : 1, sizeof(*rtt));
	char msg[64];

	if (!rtt)
		bl_die("out of memory");
	for (uint64_t i = 0; i < pl.rounds; i++) {
		uint64_t s = bl_now_ns();

		if (server) {
			xrecv(c, msg, sizeof(msg));
			xsend(c, msg, sizeof(msg));
		} else {
			memcpy(msg, &i, sizeof(i));
			xsend(c, msg, sizeof(msg));
			xrecv(c, msg, sizeof(msg));
			if (memcmp(msg, &i, sizeof(i)))
				bad++;
		}
		rtt[i] = bl_now_ns() - s;
	}
	double p50 = pl.rounds ? bl_percentile(rtt, pl.rounds, 50) / 1e3 : 0;
	double p99 = pl.rounds ? bl_percentile(rtt, pl.rounds, 99) / 1e3 : 0;

	printf("RESULT role=%s bytes=%llu MBps=%.1f checksum=%s rounds=%llu p50_us=%.1f p99_us=%.1f\n",
	       server ? "server" : "client", (unsigned long long)pl.bytes,
	       t1 > t0 ? (double)pl.bytes * 1e3 / (double)(t1 - t0) : 0,
	       bad ? "BAD" : "ok", (unsigned long long)pl.rounds, p50, p99);
	fflush(stdout);
	/* Give the peer time to read our last reply before the vchan goes. */
	xway_chan_wait(c, XWAY_EV_RDHUP, -1, 2000);
	xway_chan_close(c);
	free(rtt);
	return bad ? 1 : 0;
}
