/* SPDX-License-Identifier: MIT */
/*
 * Implementation of the broker test helpers (see helper.h).  The broker is
 * a child process started with fork+exec; it is never run under
 * LD_PRELOAD.  All waits are bounded in count and time.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helper.h"

const char *tb_bin(const char *name, char *buf, size_t size)
{
	const char *b = getenv("B");

	snprintf(buf, size, "%s/%s", b && *b ? b : "build", name);
	return buf;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static void dump_log(const struct tbroker *b)
{
	char line[512];
	FILE *f = fopen(b->log, "r");

	if (!f)
		return;
	fprintf(stderr, "---- xwayd log %s\n", b->log);
	while (fgets(line, sizeof(line), f))
		fputs(line, stderr);
	fclose(f);
}

int tb_start(struct tbroker *b, const char *config)
{
	char bin[256], conf[128];
	int fd;

	memset(b, 0, sizeof(*b));
	strcpy(b->dir, "/tmp/xwayd-test.XXXXXX");
	if (!mkdtemp(b->dir))
		return -errno;
	chmod(b->dir, 0755);
	snprintf(b->sock, sizeof(b->sock), "%s/xwayd.sock", b->dir);
	snprintf(b->log, sizeof(b->log), "%s/xwayd.log", b->dir);
	snprintf(conf, sizeof(conf), "%s/xwayd.conf", b->dir);
	{
		FILE *f = fopen(conf, "w");

		if (!f)
			return -errno;
		fputs("[broker]\nlog_level=debug\n", f);
		if (config)
			fputs(config, f);
		fclose(f);
	}
	tb_bin("xwayd", bin, sizeof(bin));
	b->pid = fork();
	if (b->pid < 0)
		return -errno;
	if (b->pid == 0) {
		int lfd = open(b->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);

		if (lfd >= 0) {
			dup2(lfd, 1);
			dup2(lfd, 2);
		}
		unsetenv("LD_PRELOAD");
		unsetenv("NOTIFY_SOCKET");
		execl(bin, "xwayd", "--foreground", "--config", conf,
		      "--socket", b->sock, (char *)NULL);
		_exit(127);
	}
	/* Up to 10 s for the socket to answer. */
	for (int i = 0; i < 1000; i++) {
		fd = tb_connect(b->sock);
		if (fd >= 0) {
			close(fd);
			return 0;
		}
		if (!tb_alive(b))
			break;
		sleep_ms(10);
	}
	dump_log(b);
	tb_stop(b);
	return -ETIMEDOUT;
}

bool tb_alive(struct tbroker *b)
{
	int st;

	if (b->pid <= 0)
		return false;
	if (waitpid(b->pid, &st, WNOHANG) == b->pid) {
		fprintf(stderr, "xwayd exited (status 0x%x)\n", st);
		dump_log(b);
		b->pid = -1;
		return false;
	}
	return true;
}

int tb_stop(struct tbroker *b)
{
	int st = -1;

	if (b->pid > 0) {
		kill(b->pid, SIGTERM);
		/* 10 s, then SIGKILL. */
		for (int i = 0; i < 1000; i++) {
			if (waitpid(b->pid, &st, WNOHANG) == b->pid)
				break;
			sleep_ms(10);
			if (i == 999) {
				kill(b->pid, SIGKILL);
				waitpid(b->pid, &st, 0);
			}
		}
		b->pid = -1;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			dump_log(b);
	}
	unlink(b->sock);
	unlink(b->log);
	{
		char conf[160];

		snprintf(conf, sizeof(conf), "%s/xwayd.conf", b->dir);
		unlink(conf);
	}
	rmdir(b->dir);
	return st;
}

int tb_connect(const char *sock)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	return fd;
}

int tb_send_raw(int fd, const void *buf, size_t len, const int *fds, unsigned nfds)
{
	char cbuf[CMSG_SPACE(sizeof(int) * 16)];
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (nfds) {
		struct cmsghdr *cm;

		memset(cbuf, 0, sizeof(cbuf));
		m.msg_control = cbuf;
		m.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		cm = CMSG_FIRSTHDR(&m);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	return sendmsg(fd, &m, MSG_NOSIGNAL) < 0 ? -errno : 0;
}

int tb_send(int fd, uint16_t type, uint32_t seq, const void *body, size_t len,
	    const int *fds, unsigned nfds)
{
	static __thread char buf[XWAY_MSG_MAX];
	struct xway_msg_hdr h = {
		.magic = XWAY_PROTO_MAGIC, .version = XWAY_PROTO_VERSION,
		.type = type, .len = (uint32_t)(sizeof(h) + len), .seq = seq,
	};

	if (sizeof(h) + len > sizeof(buf))
		return -EMSGSIZE;
	memcpy(buf, &h, sizeof(h));
	memcpy(buf + sizeof(h), body, len);
	return tb_send_raw(fd, buf, sizeof(h) + len, fds, nfds);
}

ssize_t tb_recv(int fd, void *buf, size_t size, int *rfds, unsigned *nrfds)
{
	char cbuf[CMSG_SPACE(sizeof(int) * 8)];
	struct iovec iov = { .iov_base = buf, .iov_len = size };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
			    .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	struct pollfd p = { .fd = fd, .events = POLLIN };
	ssize_t n;
	unsigned k = 0;

	if (nrfds)
		*nrfds = 0;
	if (poll(&p, 1, 5000) != 1)
		return -ETIMEDOUT;
	n = recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
	if (n < 0)
		return -errno;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		for (size_t i = 0; i < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
			int d;

			memcpy(&d, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (rfds && k < 8)
				rfds[k++] = d;
			else
				close(d);
		}
	}
	if (nrfds)
		*nrfds = k;
	return n;
}

static uint32_t seqno;   /* atomic: racing threads share it */

int tb_call(int fd, uint16_t type, const void *body, size_t len,
	    const int *fds, unsigned nfds, void *out, size_t outlen,
	    int *rfds, unsigned *nrfds)
{
	static __thread char buf[XWAY_MSG_MAX + 1];
	struct xway_msg_hdr h;
	uint32_t seq = __atomic_add_fetch(&seqno, 1, __ATOMIC_RELAXED);
	ssize_t n;
	int r = tb_send(fd, type, seq, body, len, fds, nfds);

	if (r)
		return r;
	n = tb_recv(fd, buf, sizeof(buf), rfds, nrfds);
	if (n < 0)
		return (int)n;
	if ((size_t)n < sizeof(h))
		return -EPROTO;
	memcpy(&h, buf, sizeof(h));
	if (h.magic != XWAY_PROTO_MAGIC || h.len != n || h.seq != seq)
		return -EPROTO;
	if (out)
		memcpy(out, buf + sizeof(h),
		       (size_t)n - sizeof(h) < outlen ? (size_t)n - sizeof(h) : outlen);
	return h.type;
}

int tb_call_result(int fd, uint16_t type, const void *body, size_t len,
		   const int *fds, unsigned nfds, struct xway_result *res)
{
	memset(res, 0, sizeof(*res));
	return tb_call(fd, type, body, len, fds, nfds, res, sizeof(*res), NULL, NULL);
}

void tb_addr_v4(struct xway_addr *a, const char *ip, uint16_t port_host)
{
	memset(a, 0, sizeof(*a));
	a->ip[10] = a->ip[11] = 0xff;
	inet_pton(AF_INET, ip, a->ip + 12);
	a->port = htons(port_host);
	a->family = AF_INET;
}

void tb_addr_v6(struct xway_addr *a, const char *ip, uint16_t port_host)
{
	memset(a, 0, sizeof(*a));
	inet_pton(AF_INET6, ip, a->ip);
	a->port = htons(port_host);
	a->family = AF_INET6;
}

int tb_sock_name(int fd, bool peer, struct xway_addr *a)
{
	struct sockaddr_storage ss;
	socklen_t l = sizeof(ss);

	if ((peer ? getpeername(fd, (void *)&ss, &l) : getsockname(fd, (void *)&ss, &l)) < 0)
		return -errno;
	memset(a, 0, sizeof(*a));
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *s = (void *)&ss;

		a->ip[10] = a->ip[11] = 0xff;
		memcpy(a->ip + 12, &s->sin_addr, 4);
		a->port = s->sin_port;
		a->family = AF_INET;
	} else {
		struct sockaddr_in6 *s = (void *)&ss;

		memcpy(a->ip, &s->sin6_addr, 16);
		a->port = s->sin6_port;
		a->family = AF_INET6;
	}
	return 0;
}

static int tcp_socket_at(const char *ip, struct xway_addr *a, bool listen_it)
{
	struct sockaddr_storage ss;
	socklen_t l;
	int fd, one = 1;

	memset(&ss, 0, sizeof(ss));
	if (strchr(ip, ':')) {
		struct sockaddr_in6 *s = (void *)&ss;

		s->sin6_family = AF_INET6;
		inet_pton(AF_INET6, ip, &s->sin6_addr);
		l = sizeof(*s);
	} else {
		struct sockaddr_in *s = (void *)&ss;

		s->sin_family = AF_INET;
		inet_pton(AF_INET, ip, &s->sin_addr);
		l = sizeof(*s);
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (void *)&ss, l) < 0 || (listen_it && listen(fd, 128) < 0)) {
		int e = -errno;

		close(fd);
		return e;
	}
	tb_sock_name(fd, false, a);
	return fd;
}

int tb_listener(const char *ip, struct xway_addr *a)
{
	return tcp_socket_at(ip, a, true);
}

int tb_bound(const char *ip, struct xway_addr *a)
{
	return tcp_socket_at(ip, a, false);
}

uint64_t tb_random64(void)
{
	uint64_t v = 0;

	while (v == 0)
		if (getrandom(&v, sizeof(v), 0) != sizeof(v))
			v = (uint64_t)time(NULL) * 2654435761u;
	return v;
}

int tb_chan(struct tchan *c, uint64_t cookie, uint32_t order)
{
	size_t size = XWAY_CHAN_HDR_SIZE + 2 * ((size_t)1 << order);

	memset(c, 0, sizeof(*c));
	c->cookie = cookie;
	c->fds[0] = memfd_create("xway-test-chan", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (c->fds[0] < 0 || ftruncate(c->fds[0], (off_t)size) < 0)
		return -errno;
	if (fcntl(c->fds[0], F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0)
		return -errno;
	c->hdr = mmap(NULL, XWAY_CHAN_HDR_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
		      c->fds[0], 0);
	if (c->hdr == MAP_FAILED)
		return -errno;
	c->hdr->magic = XWAY_CHAN_MAGIC;
	c->hdr->version = XWAY_CHAN_VERSION;
	c->hdr->hdr_size = XWAY_CHAN_HDR_SIZE;
	c->hdr->ring_order[0] = c->hdr->ring_order[1] = order;
	c->hdr->cookie = cookie;
	c->fds[1] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	c->fds[2] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	return c->fds[1] < 0 || c->fds[2] < 0 ? -EMFILE : 0;
}

void tb_chan_close(struct tchan *c)
{
	for (int i = 0; i < 3; i++)
		if (c->fds[i] > 0)
			close(c->fds[i]);
	if (c->hdr && c->hdr != MAP_FAILED)
		munmap(c->hdr, XWAY_CHAN_HDR_SIZE);
	memset(c, 0, sizeof(*c));
}

int tb_listen_add(int bfd, int lfd, const struct xway_addr *a)
{
	struct xway_listen body = { .addr = *a };
	struct xway_result res;
	int t = tb_call_result(bfd, XWAY_MSG_LISTEN_ADD, &body, sizeof(body), &lfd, 1, &res);

	return t == XWAY_MSG_RESULT ? res.status : t < 0 ? t : -EPROTO;
}

int tb_offer(int bfd, const struct xway_addr *dst, int sock,
	     const struct xway_addr *src, struct tchan *ch,
	     uint64_t *offer_id, uint32_t *reason)
{
	struct xway_offer o = { .dst = *dst, .src = *src, .cookie = ch->cookie,
				.ring_order = ch->hdr->ring_order[0],
				.backend = 1 };
	int fds[4] = { sock, ch->fds[0], ch->fds[1], ch->fds[2] };
	struct xway_result res;
	int t = tb_call_result(bfd, XWAY_MSG_OFFER, &o, sizeof(o), fds, 4, &res);

	if (t != XWAY_MSG_RESULT)
		return t < 0 ? t : -EPROTO;
	if (offer_id)
		*offer_id = res.offer_id;
	if (reason)
		*reason = res.reason;
	return res.status;
}

char *tb_query(int bfd, uint32_t what, bool json)
{
	static __thread char buf[XWAY_MSG_MAX + 1];
	struct xway_query q = { .what = what, .json = json };
	struct xway_msg_hdr h;
	size_t total = 0;
	char *out = NULL;

	if (tb_send(bfd, XWAY_MSG_QUERY, 77, &q, sizeof(q), NULL, 0))
		return NULL;
	for (int i = 0; i < 10000; i++) {
		ssize_t n = tb_recv(bfd, buf, sizeof(buf), NULL, NULL);
		char *nout;

		if (n < (ssize_t)sizeof(h))
			break;
		memcpy(&h, buf, sizeof(h));
		if (h.type != XWAY_MSG_TEXT || h.seq != 77)
			break;
		nout = realloc(out, total + (size_t)n + 1);
		if (!nout)
			break;
		out = nout;
		memcpy(out + total, buf + sizeof(h), (size_t)n - sizeof(h));
		total += (size_t)n - sizeof(h);
		out[total] = 0;
		if (!(h.flags & XWAY_HDR_F_MORE))
			return out;
	}
	free(out);
	return NULL;
}
