/* SPDX-License-Identifier: MIT */
/*
 * Inspection of the descriptors clients hand to the broker by SCM_RIGHTS:
 * is it really a TCP socket (listening or not), what are its names, which
 * network namespace does it live in, is an fd an eventfd.  These checks are
 * what makes a client prove that it holds the connection it asks about.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "xwayd.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

bool xwayd_fd_link_is(int fd, const char *prefix)
{
	char path[64], link[128];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return false;
	link[n] = 0;
	return strncmp(link, prefix, strlen(prefix)) == 0;
}

static GThreadPool *closer;

static void close_one(gpointer data, gpointer unused)
{
	(void)unused;
	close(GPOINTER_TO_INT(data) - 1);
}

void xwayd_close_async(int fd)
{
	if (fd < 0)
		return;
	if (!closer)
		closer = g_thread_pool_new(close_one, NULL, 1, FALSE, NULL);
	if (!closer) {
		close(fd);
		return;
	}
	g_thread_pool_push(closer, GINT_TO_POINTER(fd + 1), NULL);
}

void xwayd_close_async_shutdown(void)
{
	/* Wait for the queue: a linger-blocked close delays only the exit. */
	if (closer)
		g_thread_pool_free(closer, FALSE, TRUE);
	closer = NULL;
}

int xwayd_sock_check_tcp(int fd, bool *listening)
{
	struct stat st;
	int v, dom, type, proto;
	socklen_t l = sizeof(v);

	/* Ask /proc first: fstat on a hostile FUSE file could block. */
	if (!xwayd_fd_link_is(fd, "socket:["))
		return -ENOTSOCK;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISSOCK(st.st_mode))
		return -ENOTSOCK;
	l = sizeof(dom);
	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &l) < 0)
		return -errno;
	l = sizeof(type);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) < 0)
		return -errno;
	l = sizeof(proto);
	if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &l) < 0)
		return -errno;
	if ((dom != AF_INET && dom != AF_INET6) || type != SOCK_STREAM ||
	    proto != IPPROTO_TCP)
		return -EPROTOTYPE;
	l = sizeof(v);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &l) < 0)
		return -errno;
	*listening = v != 0;
	return dom;
}

int xwayd_sock_addr(int fd, bool peer, struct xway_addr *out)
{
	struct sockaddr_storage ss;
	socklen_t l = sizeof(ss);
	int r = peer ? getpeername(fd, (struct sockaddr *)&ss, &l)
		     : getsockname(fd, (struct sockaddr *)&ss, &l);

	if (r < 0)
		return -errno;
	memset(out, 0, sizeof(*out));
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *s = (struct sockaddr_in *)&ss;

		out->ip[10] = out->ip[11] = 0xff;
		memcpy(out->ip + 12, &s->sin_addr, 4);
		out->port = s->sin_port;
		out->family = AF_INET;
	} else if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;

		memcpy(out->ip, &s->sin6_addr, 16);
		out->port = s->sin6_port;
		out->family = AF_INET6;
	} else {
		return -EAFNOSUPPORT;
	}
	return 0;
}

int xwayd_sock_netns(int fd, pid_t pid, xwayd_netns *out)
{
	uint64_t cookie;
	socklen_t l = sizeof(cookie);
	char path[64];
	struct stat st;

	if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &l) == 0 &&
	    l == sizeof(cookie)) {
		*out = cookie & ~(1ull << 63);
		return 0;
	}
	/* Older kernels: the sender's current namespace stands in for the
	 * socket's (they differ only if it changed namespaces since). */
	snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)pid);
	if (stat(path, &st) < 0)
		return -errno;
	*out = (uint64_t)st.st_ino | (1ull << 63);
	return 0;
}

int xwayd_fd_is_eventfd(int fd)
{
	char path[64], link[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return -errno;
	link[n] = 0;
	return strcmp(link, "anon_inode:[eventfd]") == 0 ? 0 : -EINVAL;
}
