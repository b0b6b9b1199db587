// SPDX-License-Identifier: MIT
/*
 * xtb-vchan: the Xen test bed's raw transport probe.  One program, two
 * transports (raw libxenvchan between two domains, or kernel TCP for the
 * same-run comparison), two roles (server, client).  It runs a verified
 * one-way transfer (client to server; every 64-bit word is a function of its
 * offset and a seed, so a lost, duplicated or reordered byte is caught and
 * its offset reported, and both ends also compare a whole-stream checksum)
 * followed by a ping-pong of fixed-size messages carrying a sequence number.
 * Results are printed as key=value lines for the test bed to collect.
 * It deliberately uses nothing of xway: it is the baseline that shows the
 * Xen plumbing (grants, event channels, xenstore permissions) works.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libxenvchan.h>

#define CHUNK_MAX (64 * 1024)
#define MSG_MAX   (64 * 1024)

struct opts {
	int server;              /* role */
	int vchan;               /* transport: 1 vchan, 0 tcp */
	int peer_domid;          /* vchan: the other domain */
	const char *path;        /* vchan: xenstore path (server's domain) */
	const char *addr;        /* tcp: address to listen on / connect to */
	const char *port;
	uint64_t bytes;          /* transfer size */
	unsigned long pings;     /* ping-pong round trips */
	size_t msg;              /* ping-pong message size */
	size_t ring;             /* vchan ring bytes per direction */
	int poll;                /* spin instead of sleeping in the kernel */
	unsigned timeout;        /* whole-run watchdog, seconds */
	uint64_t seed;
	uint64_t corrupt_at;     /* self-test: client flips this byte; ~0 = none */
};

/* A transport: send everything, receive up to len (at least 1 byte). */
struct xport {
	int (*send_all)(struct xport *x, const void *buf, size_t len);
	ssize_t (*recv_some)(struct xport *x, void *buf, size_t len);
	struct libxenvchan *vc;
	int fd;
	int poll;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t splitmix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* The byte of the test stream at offset off. */
static inline uint8_t stream_byte(uint64_t seed, uint64_t off)
{
	return (uint8_t)(splitmix64(seed + (off >> 3)) >> ((off & 7) * 8));
}

/*
 * Whole-stream checksum over 64-bit little-endian words: bytes that arrive
 * outside a whole aligned word are gathered in acc first, so the result
 * depends on the content only, never on how it was cut into chunks.
 */
struct csum {
	uint64_t h;
	uint64_t acc;
};

static inline void csum_word(struct csum *c, uint64_t w)
{
	c->h = (c->h ^ w) * 0x100000001b3ull;
	c->h ^= c->h >> 29;
}

static inline void csum_byte(struct csum *c, uint64_t off, uint8_t b)
{
	c->acc |= (uint64_t)b << ((off & 7) * 8);
	if ((off & 7) == 7) {
		csum_word(c, c->acc);
		c->acc = 0;
	}
}

/* Call once after the last byte at offset total - 1. */
static uint64_t csum_final(struct csum *c, uint64_t total)
{
	if (total & 7)
		csum_word(c, c->acc);
	csum_word(c, total);
	return c->h;
}

/*
 * Fill or check buf as the stream bytes [off, off+len).  Whole aligned words
 * go eight bytes at a time, the ends byte by byte.  check: returns the index
 * of the first mismatch, or len.
 */
static size_t stream_apply(uint64_t seed, uint64_t off, uint8_t *buf,
			   size_t len, int check, struct csum *sum)
{
	size_t i = 0;

	while (i < len) {
		uint64_t o = off + i;

		if ((o & 7) == 0 && len - i >= 8) {
			uint64_t w = splitmix64(seed + (o >> 3)), got;

			if (check) {
				memcpy(&got, buf + i, 8);
				if (got != w) {
					while (buf[i] == stream_byte(seed, off + i))
						i++;
					return i;
				}
			} else {
				memcpy(buf + i, &w, 8);
			}
			csum_word(sum, w);
			i += 8;
		} else {
			uint8_t b = stream_byte(seed, o);

			if (check && buf[i] != b)
				return i;
			buf[i] = b;
			csum_byte(sum, o, b);
			i++;
		}
	}
	return len;
}

/* ---- transports -------------------------------------------------------- */

static int vc_send_all(struct xport *x, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		int n = libxenvchan_write(x->vc, p, len);

		if (n < 0)
			return -EPIPE;
		/* Non-blocking mode returns 0 when the ring is full: spin. */
		p += n;
		len -= (size_t)n;
		if (n == 0 && !libxenvchan_is_open(x->vc))
			return -EPIPE;
	}
	return 0;
}

static ssize_t vc_recv_some(struct xport *x, void *buf, size_t len)
{
	for (;;) {
		int n = libxenvchan_read(x->vc, buf, len);

		if (n < 0)
			return -EPIPE;
		if (n > 0)
			return n;
		if (!libxenvchan_is_open(x->vc))
			return 0;
	}
}

static int tcp_send_all(struct xport *x, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = send(x->fd, p, len,
				 MSG_NOSIGNAL | (x->poll ? MSG_DONTWAIT : 0));

		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static ssize_t tcp_recv_some(struct xport *x, void *buf, size_t len)
{
	for (;;) {
		ssize_t n = recv(x->fd, buf, len, x->poll ? MSG_DONTWAIT : 0);

		if (n >= 0)
			return n;
		if (errno != EINTR && errno != EAGAIN)
			return -errno;
	}
}

static int recv_all(struct xport *x, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = x->recv_some(x, p, len);

		if (n < 0)
			return (int)n;
		if (n == 0)
			return -ECONNRESET;   /* peer went away mid-message */
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int open_vchan(const struct opts *o, struct xport *x)
{
	uint64_t deadline = now_ns() + (uint64_t)o->timeout * 1000000000u;

	if (o->server) {
		x->vc = libxenvchan_server_init(NULL, o->peer_domid, o->path,
						o->ring, o->ring);
		if (!x->vc)
			return errno ? -errno : -EIO;
	} else {
		/*
		 * The server may not have published its ring yet: retry until
		 * the watchdog's deadline rather than forever.
		 */
		while (!(x->vc = libxenvchan_client_init(NULL, o->peer_domid,
							   o->path))) {
			if (now_ns() > deadline)
				return -ETIMEDOUT;
			usleep(100 * 1000);
		}
	}
	/*
	 * A server whose client has not connected yet reads as "open" (2), so
	 * its first read simply waits for the client's header.
	 */
	x->vc->blocking = !o->poll;
	x->send_all = vc_send_all;
	x->recv_some = vc_recv_some;
	return 0;
}

static int open_tcp(const struct opts *o, struct xport *x)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *ai;
	uint64_t deadline = now_ns() + (uint64_t)o->timeout * 1000000000u;
	int fd, one = 1, rc;

	if (o->server)
		hints.ai_flags = AI_PASSIVE;
	rc = getaddrinfo(o->addr, o->port, &hints, &ai);
	if (rc) {
		fprintf(stderr, "xtb-vchan: %s:%s: %s\n", o->addr ? o->addr : "*",
			o->port, gai_strerror(rc));
		return -EINVAL;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto out_free;
	if (o->server) {
		int lfd = fd;

		setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(lfd, ai->ai_addr, ai->ai_addrlen) || listen(lfd, 1))
			goto out_close;
		fd = accept(lfd, NULL, NULL);
		close(lfd);
		if (fd < 0)
			goto out_free;
	} else {
		while (connect(fd, ai->ai_addr, ai->ai_addrlen)) {
			if ((errno != ECONNREFUSED && errno != EINTR) ||
			    now_ns() > deadline)
				goto out_close;
			close(fd);
			usleep(100 * 1000);
			fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
			if (fd < 0)
				goto out_free;
		}
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	freeaddrinfo(ai);
	x->fd = fd;
	x->send_all = tcp_send_all;
	x->recv_some = tcp_recv_some;
	return 0;

out_close:
	rc = -errno;
	close(fd);
	freeaddrinfo(ai);
	return rc;
out_free:
	rc = -errno;
	freeaddrinfo(ai);
	return rc;
}

/* ---- the tests ----------------------------------------------------------- */

/*
 * Client sends o->bytes of the stream, then its checksum; the server checks
 * every byte as it arrives, then answers with its own checksum and a verdict
 * byte (1 = every byte matched).  Both print what they saw.
 */
static int run_transfer(const struct opts *o, struct xport *x)
{
	static uint8_t buf[CHUNK_MAX];
	uint64_t off = 0, sum, rng = o->seed, t0, dt;
	uint64_t peer_sum;
	struct csum cs = { .h = 0xcbf29ce484222325ull };
	uint8_t verdict = 1;
	int rc;

	t0 = now_ns();
	if (!o->server) {
		while (off < o->bytes) {
			/* Random chunk sizes exercise every wrap position. */
			size_t n = 1 + (size_t)((rng = splitmix64(rng)) % CHUNK_MAX);

			if (n > o->bytes - off)
				n = (size_t)(o->bytes - off);
			stream_apply(o->seed, off, buf, n, 0, &cs);
			if (o->corrupt_at - off < n)
				buf[o->corrupt_at - off] ^= 0x01;
			rc = x->send_all(x, buf, n);
			if (rc)
				return rc;
			off += n;
		}
		sum = csum_final(&cs, off);
		rc = x->send_all(x, &sum, sizeof(sum));
		if (!rc)
			rc = recv_all(x, &peer_sum, sizeof(peer_sum));
		if (!rc)
			rc = recv_all(x, &verdict, 1);
		if (rc)
			return rc;
	} else {
		while (off < o->bytes) {
			size_t want = o->bytes - off < CHUNK_MAX ?
				      (size_t)(o->bytes - off) : CHUNK_MAX;
			ssize_t n = x->recv_some(x, buf, want);
			size_t good;

			if (n <= 0)
				return n ? (int)n : -ECONNRESET;
			good = stream_apply(o->seed, off, buf, (size_t)n, 1, &cs);
			if (good != (size_t)n) {
				fprintf(stderr, "xtb-vchan: stream differs at byte %" PRIu64 "\n",
					off + good);
				printf("xfer_first_bad_offset=%" PRIu64 "\n", off + good);
				verdict = 0;
				break;
			}
			off += (uint64_t)n;
		}
		sum = csum_final(&cs, off);
		if (verdict) {
			rc = recv_all(x, &peer_sum, sizeof(peer_sum));
			if (rc)
				return rc;
			if (peer_sum != sum)
				verdict = 0;
		} else {
			peer_sum = 0;
		}
		rc = x->send_all(x, &sum, sizeof(sum));
		if (!rc)
			rc = x->send_all(x, &verdict, 1);
		if (rc)
			return rc;
	}
	dt = now_ns() - t0;
	printf("xfer_bytes=%" PRIu64 "\n", off);
	printf("xfer_seconds=%.3f\n", dt / 1e9);
	printf("xfer_MBps=%.1f\n", dt ? off / (dt / 1e9) / 1e6 : 0.0);
	printf("xfer_checksum=%016" PRIx64 "\n", sum);
	printf("xfer_checksum_peer=%016" PRIx64 "\n", peer_sum);
	printf("xfer_ok=%d\n", verdict && peer_sum == sum);
	return verdict && peer_sum == sum ? 0 : -EBADMSG;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * The client sends a message stamped with its sequence number, the server
 * checks the number and echoes the message; the client checks the echo and
 * records the round trip.
 */
static int run_pingpong(const struct opts *o, struct xport *x)
{
	static uint8_t msg[MSG_MAX];
	uint64_t *rtt = NULL, total = 0;
	unsigned long i;
	int rc = 0;

	if (!o->server && !(rtt = calloc(o->pings, sizeof(*rtt))))
		return -ENOMEM;
	memset(msg, 0x5a, o->msg);
	for (i = 0; i < o->pings; i++) {
		uint64_t seq = i, got, t0 = now_ns();

		if (!o->server) {
			memcpy(msg, &seq, sizeof(seq));
			rc = x->send_all(x, msg, o->msg);
			if (!rc)
				rc = recv_all(x, msg, o->msg);
		} else {
			rc = recv_all(x, msg, o->msg);
		}
		if (rc)
			break;
		memcpy(&got, msg, sizeof(got));
		if (got != seq) {
			fprintf(stderr, "xtb-vchan: ping %lu carried %" PRIu64 "\n", i, got);
			rc = -EBADMSG;
			break;
		}
		if (o->server) {
			rc = x->send_all(x, msg, o->msg);
			if (rc)
				break;
		} else {
			rtt[i] = now_ns() - t0;
			total += rtt[i];
		}
	}
	printf("pp_count=%lu\n", i);
	printf("pp_msg_bytes=%zu\n", o->msg);
	if (!o->server && i > 0) {
		qsort(rtt, i, sizeof(*rtt), cmp_u64);
		printf("pp_p50_us=%.1f\n", rtt[i / 2] / 1e3);
		printf("pp_p99_us=%.1f\n", rtt[(i * 99) / 100] / 1e3);
		printf("pp_mean_us=%.1f\n", total / 1e3 / i);
	}
	printf("pp_ok=%d\n", rc == 0 && i == o->pings);
	free(rtt);
	return rc;
}

/* ---- main -------------------------------------------------------------- */

static void on_alarm(int sig)
{
	static const char m[] = "xtb-vchan: watchdog expired, giving up\n";

	(void)sig;
	if (write(2, m, sizeof(m) - 1) < 0) {
		/* nothing more to do: we are exiting anyway */
	}
	_exit(3);
}

static void usage(FILE *f)
{
	fprintf(f,
"usage: xtb-vchan server|client --vchan DOMID PATH [options]\n"
"       xtb-vchan server|client --tcp ADDR PORT [options]\n"
"  --vchan DOMID PATH  raw libxenvchan; DOMID is the other domain, PATH the\n"
"                      xenstore directory under the server's domain\n"
"  --tcp ADDR PORT     kernel TCP (server: address to listen on)\n"
"  --bytes N[KMG]      transfer size, client to server (default 256M)\n"
"  --pings N           ping-pong round trips (default 2000)\n"
"  --msg N             ping-pong message bytes (default 64)\n"
"  --ring N[KMG]       vchan ring bytes per direction (default 64K)\n"
"  --poll              spin instead of sleeping (lower latency, burns CPU)\n"
"  --seed N            stream seed (default: from the clock, printed)\n"
"  --timeout S         give up after S seconds (default 600)\n"
"  --corrupt-at N      client flips stream byte N after checksumming it\n"
"                      (self-test of the verification: the server must fail)\n"
"Prints key=value results; exits 0 only if every byte and echo matched.\n");
}

static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	}
	if (*end)
		return -EINVAL;
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "vchan", required_argument, NULL, 'v' },
		{ "tcp", required_argument, NULL, 't' },
		{ "bytes", required_argument, NULL, 'b' },
		{ "pings", required_argument, NULL, 'p' },
		{ "msg", required_argument, NULL, 'm' },
		{ "ring", required_argument, NULL, 'r' },
		{ "poll", no_argument, NULL, 'P' },
		{ "seed", required_argument, NULL, 's' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "corrupt-at", required_argument, NULL, 'C' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { .bytes = 256u << 20, .pings = 2000, .msg = 64,
			  .ring = 64 * 1024, .timeout = 600, .vchan = -1,
			  .seed = now_ns(), .corrupt_at = UINT64_MAX };
	struct xport x = { .fd = -1 };
	uint64_t v, hdr[4];
	int c, rc;

	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'v':
		case 't':
			/* Both take two words: the option's and the next one. */
			if (optind >= argc) {
				fprintf(stderr, "xtb-vchan: --%s needs two arguments\n",
					c == 'v' ? "vchan" : "tcp");
				return 2;
			}
			o.vchan = c == 'v';
			if (o.vchan) {
				char *end;

				o.peer_domid = (int)strtol(optarg, &end, 10);
				if (*end || end == optarg || o.peer_domid < 0) {
					fprintf(stderr, "xtb-vchan: bad domid '%s'\n", optarg);
					return 2;
				}
				o.path = argv[optind++];
			} else {
				o.addr = optarg;
				o.port = argv[optind++];
			}
			break;
		case 'b':
		case 'r':
		case 'p':
		case 'm':
		case 's':
		case 'T':
		case 'C':
			if (parse_size(optarg, &v)) {
				fprintf(stderr, "xtb-vchan: bad number '%s'\n", optarg);
				return 2;
			}
			if (c == 'b') o.bytes = v;
			if (c == 'r') o.ring = (size_t)v;
			if (c == 'p') o.pings = (unsigned long)v;
			if (c == 'm') o.msg = (size_t)v;
			if (c == 's') o.seed = v;
			if (c == 'T') o.timeout = (unsigned)v;
			if (c == 'C') o.corrupt_at = v;
			break;
		case 'P':
			o.poll = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1 || o.vchan < 0) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[optind], "server")) {
		o.server = 1;
	} else if (strcmp(argv[optind], "client")) {
		usage(stderr);
		return 2;
	}
	if (o.msg < sizeof(uint64_t) || o.msg > MSG_MAX || !o.timeout ||
	    o.ring < 1024 || o.ring > (64u << 20)) {
		fprintf(stderr, "xtb-vchan: --msg must be 8..%d, --ring 1K..64M, --timeout > 0\n",
			MSG_MAX);
		return 2;
	}
	signal(SIGALRM, on_alarm);
	alarm(o.timeout);
	x.poll = o.poll;

	rc = o.vchan ? open_vchan(&o, &x) : open_tcp(&o, &x);
	if (rc) {
		fprintf(stderr, "xtb-vchan: %s %s: %s\n", o.vchan ? "vchan" : "tcp",
			o.server ? "server" : "client", strerror(-rc));
		return 1;
	}
	/*
	 * The client's parameters rule: it sends them first, so the server's
	 * command line needs only the transport.
	 */
	if (o.server) {
		rc = recv_all(&x, hdr, sizeof(hdr));
		o.seed = hdr[0];
		o.bytes = hdr[1];
		o.pings = (unsigned long)hdr[2];
		o.msg = (size_t)hdr[3];
		if (!rc && (o.msg < sizeof(uint64_t) || o.msg > MSG_MAX))
			rc = -EPROTO;
	} else {
		hdr[0] = o.seed;
		hdr[1] = o.bytes;
		hdr[2] = o.pings;
		hdr[3] = o.msg;
		rc = x.send_all(&x, hdr, sizeof(hdr));
	}
	printf("transport=%s\nrole=%s\nmode=%s\nseed=%" PRIu64 "\n",
	       o.vchan ? "vchan" : "tcp", o.server ? "server" : "client",
	       o.poll ? "poll" : "block", o.seed);
	if (!rc)
		rc = run_transfer(&o, &x);
	if (!rc)
		rc = run_pingpong(&o, &x);
	fflush(stdout);
	if (x.vc)
		libxenvchan_close(x.vc);
	if (x.fd >= 0)
		close(x.fd);
	if (rc) {
		fprintf(stderr, "xtb-vchan: %s failed: %s\n",
			o.server ? "server" : "client", strerror(-rc));
		return 1;
	}
	return 0;
}
