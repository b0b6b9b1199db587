/* SPDX-License-Identifier: MIT */
/*
 * A stand-in libxenvchan for the broker's Xen-mode test (never installed),
 * enough for the broker-to-broker links (broker/xenlink.c) on a host
 * without Xen: an AF_UNIX stream socket whose abstract name is
 * "xway-fake-link:" + the xenstore path.  Unlike the channel test's stand-in
 * (tests/unit/chan/fake_xenvchan.c) server_init does not wait for the
 * client: it listens, and the first call after a client connected accepts
 * it, as a vchan server sees its client's live flag change.  fd_for_select
 * is an epoll set of whichever socket matters (stable across the accept),
 * level-triggered; recv and send are all or nothing, non-blocking;
 * is_open is 2 while no client came, 0 once the peer closed.  The test
 * process plays the other domain's broker with plain sockets.
 */
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <libxenvchan.h>

struct fake {
	struct libxenvchan v;     /* first: callers use the public fields */
	int ep, lfd, cfd;
};

static socklen_t addr_of(const char *path, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	snprintf(sa->sun_path + 1, sizeof(sa->sun_path) - 1, "xway-fake-link:%s", path);
	return offsetof(struct sockaddr_un, sun_path) + 1 + strlen(sa->sun_path + 1);
}

static struct fake *fk(struct libxenvchan *c)
{
	return (struct fake *)c;
}

static struct fake *fake_new(int server)
{
	struct fake *f = calloc(1, sizeof(*f));

	if (!f)
		return NULL;
	f->lfd = f->cfd = -1;
	f->v.is_server = server;
	f->v.blocking = 1;
	f->ep = epoll_create1(EPOLL_CLOEXEC);
	if (f->ep < 0) {
		free(f);
		return NULL;
	}
	return f;
}

static void watch(struct fake *f, int fd)
{
	struct epoll_event e = { .events = EPOLLIN, .data.fd = fd };

	epoll_ctl(f->ep, EPOLL_CTL_ADD, fd, &e);
}

/* The server's client arrived: from now on its socket is the channel. */
static void settle(struct fake *f)
{
	int c;

	if (f->cfd >= 0 || f->lfd < 0)
		return;
	c = accept4(f->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (c < 0)
		return;
	epoll_ctl(f->ep, EPOLL_CTL_DEL, f->lfd, NULL);
	close(f->lfd);
	f->lfd = -1;
	f->cfd = c;
	watch(f, c);
}

struct libxenvchan *libxenvchan_server_init(struct xentoollog_logger *logger,
					    int domain, const char *xs_path,
					    size_t read_min, size_t write_min)
{
	struct sockaddr_un sa;
	socklen_t len = addr_of(xs_path, &sa);
	struct fake *f = fake_new(1);

	(void)logger; (void)domain; (void)read_min; (void)write_min;
	if (!f)
		return NULL;
	f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (f->lfd < 0 || bind(f->lfd, (struct sockaddr *)&sa, len) || listen(f->lfd, 1)) {
		libxenvchan_close(&f->v);
		return NULL;
	}
	watch(f, f->lfd);
	return &f->v;
}

struct libxenvchan *libxenvchan_client_init(struct xentoollog_logger *logger,
					    int domain, const char *xs_path)
{
	struct sockaddr_un sa;
	socklen_t len = addr_of(xs_path, &sa);
	struct fake *f = fake_new(0);

	(void)logger; (void)domain;
	if (!f)
		return NULL;
	f->cfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (f->cfd < 0 || connect(f->cfd, (struct sockaddr *)&sa, len)) {
		int e = errno;

		libxenvchan_close(&f->v);
		errno = e;
		return NULL;
	}
	(void)ioctl(f->cfd, FIONBIO, &(int){ 1 });
	watch(f, f->cfd);
	return &f->v;
}

int libxenvchan_is_open(struct libxenvchan *c)
{
	struct fake *f = fk(c);
	struct pollfd p;

	settle(f);
	if (f->cfd < 0)
		return f->lfd >= 0 ? 2 : 0;
	p = (struct pollfd){ .fd = f->cfd, .events = POLLRDHUP };
	if (poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)))
		return 0;
	return 1;
}

int libxenvchan_data_ready(struct libxenvchan *c)
{
	struct fake *f = fk(c);
	int n = 0;

	settle(f);
	if (f->cfd < 0 || ioctl(f->cfd, FIONREAD, &n) != 0)
		return 0;
	return n;
}

int libxenvchan_buffer_space(struct libxenvchan *c)
{
	return libxenvchan_is_open(c) == 1 ? 65536 : 0;
}

int libxenvchan_recv(struct libxenvchan *c, void *data, size_t size)
{
	struct fake *f = fk(c);
	size_t got = 0;

	if ((size_t)libxenvchan_data_ready(c) < size)
		return libxenvchan_is_open(c) ? 0 : -1;
	while (got < size) {
		ssize_t n = read(f->cfd, (char *)data + got, size - got);

		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	return (int)size;
}

int libxenvchan_read(struct libxenvchan *c, void *data, size_t size)
{
	struct fake *f = fk(c);
	ssize_t n;

	settle(f);
	if (f->cfd < 0)
		return 0;
	n = recv(f->cfd, data, size, MSG_DONTWAIT);
	if (n > 0)
		return (int)n;
	return n < 0 && errno == EAGAIN ? 0 : -1;
}

int libxenvchan_send(struct libxenvchan *c, const void *data, size_t size)
{
	struct fake *f = fk(c);
	ssize_t n;

	if (libxenvchan_is_open(c) != 1)
		return f->cfd < 0 && f->lfd >= 0 ? 0 : -1;
	n = send(f->cfd, data, size, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (n == (ssize_t)size)
		return (int)size;
	return n < 0 && errno == EAGAIN ? 0 : -1;
}

int libxenvchan_write(struct libxenvchan *c, const void *data, size_t size)
{
	return libxenvchan_send(c, data, size);
}

int libxenvchan_wait(struct libxenvchan *c)
{
	settle(fk(c));           /* readiness is level-triggered */
	return 0;
}

int libxenvchan_fd_for_select(struct libxenvchan *c)
{
	return fk(c)->ep;
}

void libxenvchan_close(struct libxenvchan *c)
{
	struct fake *f;

	if (!c)
		return;
	f = fk(c);
	if (f->lfd >= 0)
		close(f->lfd);
	if (f->cfd >= 0)
		close(f->cfd);
	if (f->ep >= 0)
		close(f->ep);
	free(f);
}
