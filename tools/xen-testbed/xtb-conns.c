// SPDX-License-Identifier: MIT
/*
 * xtb-conns: the Xen test bed's many-connections probe (workloads 7x).  The
 * server accepts connections and answers every 32-byte request with a
 * reply derived from it; the client either holds N connections open at
 * once ("hold": connect and exchange one request each, optionally wait for
 * a go file while the test inspects the brokers, then a second exchange on
 * every connection and close them all) or opens them one after the other
 * ("churn": connect, exchange, close; with --pause-ms the domains idle
 * between connections, so the times are one set-up's latency rather than
 * a share of a saturated CPU).  Every request carries its
 * connection index, round and a keyed check word, the server verifies it
 * and the client verifies the exact reply, so a byte lost, duplicated,
 * reordered or delivered to the wrong connection is reported.  Plain
 * sockets, no xway code: run it under LD_PRELOAD=libxway.so to measure
 * xway, without it for kernel TCP.  Results are key=value lines.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MSG 32
#define MAGIC_REQ 0x43425458u    /* "XTBC" */
#define MAGIC_REP 0x52425458u    /* "XTBR" */

struct opts {
	int server;
	const char *addr, *port;
	unsigned long conns;
	int churn;
	unsigned pause_ms;       /* churn: idle time before each connection */
	int stream;              /* hold: exchange rounds until the go file */
	const char *ready, *go;
	const char *stop;        /* server: end once this file exists and all closed */
	unsigned timeout;
	uint64_t seed;
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

/* Request of connection idx, round r: magic|round, idx, check, check'. */
static void make_req(uint64_t seed, uint64_t idx, uint32_t r, uint64_t w[4])
{
	w[0] = MAGIC_REQ | (uint64_t)r << 32;
	w[1] = idx;
	w[2] = splitmix64(seed ^ idx << 20 ^ r);
	w[3] = splitmix64(w[2]);
}

/* The server's answer to a valid request. */
static void make_rep(const uint64_t q[4], uint64_t w[4])
{
	w[0] = MAGIC_REP | (q[0] & 0xffffffff00000000ull);
	w[1] = q[1];
	w[2] = splitmix64(q[2] + 1);
	w[3] = ~q[3];
}

static int req_valid(uint64_t seed, const uint64_t q[4])
{
	uint64_t w[4];

	if ((uint32_t)q[0] != MAGIC_REQ)
		return 0;
	make_req(seed, q[1], (uint32_t)(q[0] >> 32), w);
	return !memcmp(w, q, MSG);
}

static void snapshot(const char *tag);

static int full_io(int fd, void *buf, size_t len, int wr)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = wr ? send(fd, (char *)buf + done, len - done, MSG_NOSIGNAL)
			       : recv(fd, (char *)buf + done, len - done, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ECONNRESET;      /* EOF before a whole message */
		done += (size_t)n;
	}
	return 0;
}

static int resolve(const struct opts *o, struct addrinfo **ai)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = o->server ? AI_PASSIVE : 0 };
	int e = getaddrinfo(o->addr, o->port, &hints, ai);

	if (e) {
		fprintf(stderr, "xtb-conns: %s:%s: %s\n", o->addr, o->port, gai_strerror(e));
		return -EINVAL;
	}
	return 0;
}

/* The server: a poll loop over the listener and every connection; ends
 * when conns connections were accepted and have closed. */
static int run_server(const struct opts *o)
{
	struct addrinfo *ai;
	struct pollfd *p;
	uint8_t (*buf)[MSG];
	size_t *got;
	unsigned long accepted = 0, closed = 0, msgs = 0, bad = 0, live = 0;
	int one = 1, lfd;

	if (resolve(o, &ai))
		return 2;
	lfd = socket(ai->ai_family, SOCK_STREAM, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (lfd < 0 || bind(lfd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(lfd, 4096) < 0) {
		perror("xtb-conns: listen");
		return 2;
	}
	freeaddrinfo(ai);
	p = calloc(o->conns + 1, sizeof(*p));
	buf = calloc(o->conns + 1, MSG);
	got = calloc(o->conns + 1, sizeof(*got));
	if (!p || !buf || !got)
		return 2;
	p[0].fd = lfd;
	p[0].events = POLLIN;
	snapshot("server.before");
	printf("listening=1\n");
	fflush(stdout);
	while (closed < o->conns) {
		struct stat st;
		int n;

		if (o->stop && live == 0 && stat(o->stop, &st) == 0)
			break;
		n = poll(p, live + 1, 1000);

		if (n < 0 && errno != EINTR) {
			perror("xtb-conns: poll");
			return 2;
		}
		if (n <= 0)
			continue;
		if ((p[0].revents & POLLIN) && accepted < o->conns) {
			int fd = accept(lfd, NULL, NULL);

			if (fd >= 0) {
				accepted++;
				live++;
				p[live].fd = fd;
				p[live].events = POLLIN;
				p[live].revents = 0;
				got[live] = 0;
			} else if (errno != EINTR && errno != EAGAIN) {
				perror("xtb-conns: accept");
			}
			if (accepted == o->conns)
				p[0].events = 0;
		}
		for (unsigned long i = 1; i <= live; i++) {
			ssize_t k;

			if (!p[i].revents)
				continue;
			p[i].revents = 0;
			k = recv(p[i].fd, buf[i] + got[i], MSG - got[i], MSG_DONTWAIT);
			if (k < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (k > 0) {
				got[i] += (size_t)k;
				if (got[i] < MSG)
					continue;
				got[i] = 0;
				uint64_t q[4], w[4];

				memcpy(q, buf[i], MSG);
				if (req_valid(o->seed, q)) {
					make_rep(q, w);
					if (full_io(p[i].fd, w, MSG, 1) == 0) {
						msgs++;
						continue;
					}
				}
				bad++;
				fprintf(stderr, "xtb-conns: bad request or reply failed on a connection\n");
			} else if (k < 0 || got[i]) {
				bad++;
				fprintf(stderr, "xtb-conns: connection ended mid-message: %s\n",
					k < 0 ? strerror(errno) : "EOF");
			}
			/* EOF (or error): the client is done with it. */
			close(p[i].fd);
			closed++;
			p[i] = p[live];
			got[i] = got[live];
			memcpy(buf[i], buf[live], MSG);
			live--;
			i--;
		}
	}
	snapshot("server.after");
	printf("server.accepted=%lu\nserver.msgs=%lu\nserver.bad=%lu\n", accepted, msgs, bad);
	return bad ? 1 : 0;
}

static int connect_one(const struct addrinfo *ai)
{
	int fd = socket(ai->ai_family, SOCK_STREAM, 0);

	if (fd < 0)
		return -errno;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	return fd;
}

/* One exchange on fd for connection idx, round r: 0 or -errno / -EBADMSG. */
static int exchange(int fd, uint64_t seed, uint64_t idx, uint32_t r, int send_it, int recv_it)
{
	uint64_t q[4], w[4], got[4];
	int e;

	make_req(seed, idx, r, q);
	if (send_it && (e = full_io(fd, q, MSG, 1)))
		return e;
	if (!recv_it)
		return 0;
	if ((e = full_io(fd, got, MSG, 0)))
		return e;
	make_rep(q, w);
	return memcmp(w, got, MSG) ? -EBADMSG : 0;
}

/* What this process holds: descriptors, mappings of the Xen grant
 * devices, and event channels bound by its name (the evtchn driver names
 * each user binding "evtchn:COMM" in /proc/interrupts). */
static void snapshot(const char *tag)
{
	char line[512], want[64], path[300];
	unsigned long fds = 0, maps = 0, grant_maps = 0, evtchn = 0, spare = 0;
	struct dirent *e;
	DIR *d;
	FILE *f;

	/* readdir, not a child process: a fork under the shim would share
	 * the channels' mappings with a process that never uses them.  The
	 * shim's spare endpoint states (memfds named xway-ep that no end
	 * uses, at most 16: shim/chan/local.c) are counted apart. */
	if ((d = opendir("/proc/self/fd"))) {
		while ((e = readdir(d))) {
			ssize_t n;

			if (e->d_name[0] == '.')
				continue;
			fds++;
			snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
			n = readlink(path, line, sizeof(line) - 1);
			if (n > 0) {
				line[n] = 0;
				if (strncmp(line, "/memfd:xway-ep", 14) == 0)
					spare++;
			}
		}
		closedir(d);
		fds--;          /* the directory's own descriptor */
	}
	if ((f = fopen("/proc/self/maps", "r"))) {
		while (fgets(line, sizeof(line), f)) {
			maps++;
			if (strstr(line, "/dev/xen/gnt"))
				grant_maps++;
		}
		fclose(f);
	}
	snprintf(want, sizeof(want), "evtchn:%.15s", program_invocation_short_name);
	if ((f = fopen("/proc/interrupts", "r"))) {
		while (fgets(line, sizeof(line), f))
			if (strstr(line, want))
				evtchn++;
		fclose(f);
	}
	printf("%s.fds=%lu\n%s.ep_memfds=%lu\n%s.maps=%lu\n%s.grant_maps=%lu\n%s.evtchn=%lu\n",
	       tag, fds - spare, tag, spare, tag, maps, tag, grant_maps, tag, evtchn);
	fflush(stdout);
}

static int wait_file(const char *path, unsigned secs)
{
	struct stat st;

	for (unsigned i = 0; i < secs * 10; i++) {
		if (stat(path, &st) == 0)
			return 0;
		usleep(100000);
	}
	return -ETIMEDOUT;
}

/* --stream: stop after the go file appears (or the watchdog). */
static int stream_done(const struct opts *o)
{
	struct stat st;

	return !o->go || stat(o->go, &st) == 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int run_client(const struct opts *o)
{
	struct addrinfo *ai;
	int *fds = calloc(o->conns, sizeof(int));
	unsigned long ok = 0, bad = 0;
	uint64_t t0, t1, worst = 0;
	/* Where a connection's time goes: connect(), the first exchange,
	 * close() (summed, for the averages). */
	uint64_t in_connect = 0, in_exchange = 0, in_close = 0;
	uint64_t *setup = calloc(o->conns, sizeof(uint64_t));
	int e;

	if (!fds || !setup || resolve(o, &ai))
		return 2;
	snapshot("client.before");
	t0 = now_ns();
	for (unsigned long i = 0; i < o->conns; i++) {
		uint64_t c0, c1, c2, dt;
		int fd;

		if (o->pause_ms)
			usleep(o->pause_ms * 1000u);
		c0 = now_ns();
		fd = connect_one(ai);

		c1 = now_ns();
		in_connect += c1 - c0;

		if (fd < 0) {
			fprintf(stderr, "xtb-conns: connection %lu: connect: %s\n", i, strerror(-fd));
			printf("client.failed_at=%lu\n", i);
			bad++;
			break;
		}
		if ((e = exchange(fd, o->seed, i, 0, 1, 1))) {
			fprintf(stderr, "xtb-conns: connection %lu: first exchange: %s\n", i,
				strerror(-e));
			bad++;
		}
		c2 = now_ns();
		in_exchange += c2 - c1;
		dt = c2 - c0;
		setup[ok] = dt;
		if (dt > worst)
			worst = dt;
		if (o->churn) {
			close(fd);
			in_close += now_ns() - c2;
			fds[i] = -1;
		} else {
			fds[i] = fd;
		}
		ok++;
	}
	t1 = now_ns();
	printf("client.mode=%s\nclient.opened=%lu\nclient.setup_s=%.3f\n"
	       "client.setup_rate=%.1f\nclient.setup_worst_ms=%.1f\n",
	       o->churn ? "churn" : "hold", ok, (t1 - t0) / 1e9,
	       ok ? ok / ((t1 - t0) / 1e9) : 0.0, worst / 1e6);
	if (ok)
		printf("client.avg_connect_ms=%.2f\nclient.avg_exchange_ms=%.2f\n"
		       "client.avg_close_ms=%.2f\n", in_connect / 1e6 / ok,
		       in_exchange / 1e6 / ok, in_close / 1e6 / ok);
	if (ok) {
		/* Median of connect + first exchange. */
		qsort(setup, ok, sizeof(setup[0]), cmp_u64);
		printf("client.p50_setup_ms=%.2f\n", setup[ok / 2] / 1e6);
	}
	free(setup);
	fflush(stdout);
	if (!o->churn) {
		snapshot("client.open");
		if (o->ready) {
			FILE *f = fopen(o->ready, "w");

			if (f)
				fclose(f);
		}
		if (!o->stream && o->go && wait_file(o->go, o->timeout)) {
			fprintf(stderr, "xtb-conns: no go file %s\n", o->go);
			bad++;
		}
		/* Further rounds on every connection while all are open: all
		 * requests first, then all replies (every channel has data in
		 * flight at once).  One round after the go file, or with
		 * --stream rounds until it appears. */
		uint32_t r = 1;

		do {
			for (unsigned long i = 0; i < ok; i++)
				if ((e = exchange(fds[i], o->seed, i, r, 1, 0))) {
					fprintf(stderr, "xtb-conns: connection %lu: send round %u: %s\n",
						i, r, strerror(-e));
					bad++;
				}
			for (unsigned long i = 0; i < ok; i++)
				if ((e = exchange(fds[i], o->seed, i, r, 0, 1))) {
					fprintf(stderr, "xtb-conns: connection %lu: reply round %u: %s\n",
						i, r, strerror(-e));
					bad++;
				}
			r++;
		} while (o->stream && !bad && !stream_done(o));
		printf("client.rounds=%u\nclient.bytes=%llu\n", r - 1,
		       (unsigned long long)(r - 1) * ok * MSG * 2);
		for (unsigned long i = 0; i < ok; i++)
			close(fds[i]);
	}
	snapshot("client.after");
	printf("client.bad=%lu\nclient.total_s=%.3f\n", bad, (now_ns() - t0) / 1e9);
	freeaddrinfo(ai);
	free(fds);
	return bad ? 1 : 0;
}

static void usage(FILE *f)
{
	fputs("usage: xtb-conns server --tcp ADDR PORT --conns N [--stop FILE] [--timeout S] [--seed X]\n"
	      "       xtb-conns client --tcp ADDR PORT --conns N [--churn [--pause-ms MS] | --stream]\n"
	      "                 [--ready FILE] [--go FILE] [--timeout S] [--seed X]\n"
	      "server: accept up to N connections, answer each 32-byte request, end when\n"
	      "N closed (or FILE --stop exists and none is open).  client: open N connections and hold them (a second exchange on\n"
	      "each after FILE --go appears; --stream: exchange rounds on all of them\n"
	      "until it appears), or with --churn one after the other.\n", f);
}

static void on_alarm(int sig)
{
	static const char m[] = "xtb-conns: watchdog expired\n";

	(void)sig;
	if (write(2, m, sizeof(m) - 1) < 0)
		_exit(3);
	_exit(3);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "tcp", required_argument, NULL, 't' },
		{ "conns", required_argument, NULL, 'n' },
		{ "churn", no_argument, NULL, 'c' },
		{ "pause-ms", required_argument, NULL, 'p' },
		{ "stream", no_argument, NULL, 'S' },
		{ "ready", required_argument, NULL, 'r' },
		{ "go", required_argument, NULL, 'g' },
		{ "stop", required_argument, NULL, 'x' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "seed", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { .timeout = 600, .seed = 0x78776179 };
	struct rlimit rl;
	char *end;
	int c;

	if (argc < 2 || (strcmp(argv[1], "server") && strcmp(argv[1], "client"))) {
		usage(stderr);
		return 2;
	}
	o.server = !strcmp(argv[1], "server");
	optind = 2;
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 't':
			if (optind >= argc) {
				usage(stderr);
				return 2;
			}
			o.addr = optarg;
			o.port = argv[optind++];
			break;
		case 'n':
			o.conns = strtoul(optarg, &end, 10);
			if (*end || o.conns == 0 || o.conns > 100000) {
				fprintf(stderr, "xtb-conns: --conns must be 1..100000\n");
				return 2;
			}
			break;
		case 'c': o.churn = 1; break;
		case 'p':
			o.pause_ms = (unsigned)strtoul(optarg, &end, 10);
			if (*end || o.pause_ms > 60000) {
				fprintf(stderr, "xtb-conns: --pause-ms must be 0..60000\n");
				return 2;
			}
			break;
		case 'S': o.stream = 1; break;
		case 'r': o.ready = optarg; break;
		case 'g': o.go = optarg; break;
		case 'x': o.stop = optarg; break;
		case 'T':
			o.timeout = (unsigned)strtoul(optarg, &end, 10);
			if (*end || o.timeout == 0) {
				fprintf(stderr, "xtb-conns: bad --timeout\n");
				return 2;
			}
			break;
		case 's': o.seed = strtoull(optarg, NULL, 0); break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!o.addr || !o.conns || optind != argc) {
		usage(stderr);
		return 2;
	}
	/* Room for every connection (and the shim's descriptors beside). */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	signal(SIGALRM, on_alarm);
	signal(SIGPIPE, SIG_IGN);
	alarm(o.timeout + (o.go ? o.timeout : 0));
	return o.server ? run_server(&o) : run_client(&o);
}
