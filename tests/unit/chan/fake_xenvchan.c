// SPDX-License-Identifier: MIT
/*
 * A stand-in libxenvchan for the channel's Xen-backend test on a host
 * without Xen (never installed).  Same API and struct as the real one,
 * carried over an AF_UNIX stream socket whose abstract name is derived
 * from the xenstore path: server_init accepts one client, client_init
 * connects (retrying for a few seconds).  Reads and writes are
 * non-blocking like libxenvchan with blocking = 0, fd_for_select is the
 * socket, is_open turns false when the peer closed.  What it does not model:
 * the event channel's write-side notifications (buffer_space never wakes a
 * select), so the test keeps transfers below the socket buffers.
 */
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <libxenvchan.h>

struct fake {
	struct libxenvchan v;     /* first: callers use the public fields */
	int fd;
};

static socklen_t addr_of(const char *path, int domain, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	snprintf(sa->sun_path + 1, sizeof(sa->sun_path) - 1, "xway-fake-vchan:%d:%s",
		 domain, path);
	return offsetof(struct sockaddr_un, sun_path) + 1 + strlen(sa->sun_path + 1);
}

static int order_of(size_t n)
{
	int o = 12;

	while (((size_t)1 << o) < n && o < 26)
		o++;
	return o;
}

static struct libxenvchan *wrap(int fd, int server, size_t wmin)
{
	struct fake *f = calloc(1, sizeof(*f));

	if (!f) {
		close(fd);
		return NULL;
	}
	f->fd = fd;
	f->v.is_server = server;
	f->v.blocking = 1;
	f->v.write.order = order_of(wmin);
	f->v.read.order = order_of(wmin);
	return &f->v;
}

static int fd_of(struct libxenvchan *c)
{
	return ((struct fake *)c)->fd;
}

/* The server is created by the peer domain's id = the client's; the client
 * names the server's domain.  The stand-in runs both in one OS, so the
 * rendezvous name uses the path only. */
struct libxenvchan *libxenvchan_server_init(struct xentoollog_logger *logger,
					    int domain, const char *xs_path,
					    size_t read_min, size_t write_min)
{
	struct sockaddr_un sa;
	socklen_t len = addr_of(xs_path, 0, &sa);
	int l, fd;

	(void)logger; (void)domain; (void)read_min;
	l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&sa, len) || listen(l, 1)) {
		if (l >= 0)
			close(l);
		return NULL;
	}
	fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	close(l);
	return fd < 0 ? NULL : wrap(fd, 1, write_min);
}

struct libxenvchan *libxenvchan_client_init(struct xentoollog_logger *logger,
					    int domain, const char *xs_path)
{
	struct sockaddr_un sa;
	socklen_t len = addr_of(xs_path, 0, &sa);

	(void)logger; (void)domain;
	for (int i = 0; i < 500; i++) {       /* up to ~5 s for the server */
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (fd < 0)
			return NULL;
		if (connect(fd, (struct sockaddr *)&sa, len) == 0)
			return wrap(fd, 0, 1 << 16);
		close(fd);
		nanosleep(&(struct timespec){ 0, 10000000 }, NULL);
	}
	errno = ECONNREFUSED;
	return NULL;
}

int libxenvchan_is_open(struct libxenvchan *c)
{
	struct pollfd p = { .fd = fd_of(c), .events = POLLRDHUP };

	if (poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP)))
		return 0;
	return 1;
}

int libxenvchan_data_ready(struct libxenvchan *c)
{
	int n = 0;

	if (ioctl(fd_of(c), FIONREAD, &n) != 0)
		return 0;
	return n;
}

int libxenvchan_buffer_space(struct libxenvchan *c)
{
	struct pollfd p = { .fd = fd_of(c), .events = POLLOUT };

	/* Writable: the whole ring is free (the socket below has room). */
	return poll(&p, 1, 0) == 1 && (p.revents & POLLOUT) ? 1 << c->write.order : 0;
}

int libxenvchan_read(struct libxenvchan *c, void *data, size_t size)
{
	ssize_t n = recv(fd_of(c), data, size, c->blocking ? 0 : MSG_DONTWAIT);

	if (n > 0)
		return (int)n;
	if (n < 0 && errno == EAGAIN)
		return 0;
	return -1;               /* closed and drained, as libxenvchan */
}

int libxenvchan_write(struct libxenvchan *c, const void *data, size_t size)
{
	ssize_t n;

	if (!libxenvchan_is_open(c))
		return -1;
	n = send(fd_of(c), data, size, MSG_NOSIGNAL | (c->blocking ? 0 : MSG_DONTWAIT));
	if (n >= 0)
		return (int)n;
	return errno == EAGAIN ? 0 : -1;
}

int libxenvchan_recv(struct libxenvchan *c, void *data, size_t size)
{
	return libxenvchan_read(c, data, size);
}

int libxenvchan_send(struct libxenvchan *c, const void *data, size_t size)
{
	return libxenvchan_write(c, data, size);
}

int libxenvchan_wait(struct libxenvchan *c)
{
	(void)c;                 /* socket readiness is level-triggered */
	return 0;
}

int libxenvchan_fd_for_select(struct libxenvchan *c)
{
	return fd_of(c);
}

void libxenvchan_close(struct libxenvchan *c)
{
	if (!c)
		return;
	close(fd_of(c));
	free(c);
}
