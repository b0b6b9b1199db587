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
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "xwayd.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

/*
 * Descriptors clients passed us are closed off the main loop: if ours is
 * the socket's last reference and its owner set SO_LINGER, close() blocks
 * for the linger time, and a client must not be able to stall the broker
 * so.  One closer thread, fed under a mutex: a push costs a futex wake only
 * when the thread sleeps (GThreadPool cost about twelve system calls a
 * descriptor, the set-up rate's largest broker share after the checks).
 * The descriptor is closed promptly: our reference would otherwise delay
 * the FIN of a connection its application already closed.  Once woken, the
 * thread gathers what comes in the next millisecond before it closes again
 * (and goes back to sleep only when nothing came): at a high set-up rate a
 * wake-up per descriptor, two each connection, cost more than the closes.
 */
#define CLOSER_GATHER_US 1000

static struct {
	GMutex lock;
	GCond more;
	GThread *thread;
	GArray *queue;          /* int */
	bool sleeping, stop;
} closer;

static gpointer closer_main(gpointer unused)
{
	GArray *batch = g_array_new(FALSE, FALSE, sizeof(int));

	(void)unused;
	g_mutex_lock(&closer.lock);
	for (;;) {
		while (!closer.queue->len && !closer.stop) {
			closer.sleeping = true;
			g_cond_wait(&closer.more, &closer.lock);
			closer.sleeping = false;
		}
		if (!closer.queue->len)
			break;                 /* stop, and nothing left */
		/* Take the whole queue; close without the lock. */
		GArray *t = closer.queue;

		closer.queue = batch;
		batch = t;
		g_mutex_unlock(&closer.lock);
		for (guint i = 0; i < batch->len; i++)
			close(g_array_index(batch, int, i));
		g_array_set_size(batch, 0);
		/* Gather: not "sleeping", so pushes meanwhile wake nobody.  A
		 * plain sleep: a timed wait reads the clock twice (system
		 * calls where the clock has no vDSO path, as in a Xen PV
		 * domain) and was never cut short anyway (a stop waits 1 ms). */
		g_usleep(CLOSER_GATHER_US);
		g_mutex_lock(&closer.lock);
	}
	g_mutex_unlock(&closer.lock);
	g_array_free(batch, TRUE);
	return NULL;
}

void xwayd_close_async(int fd)
{
	bool wake;

	if (fd < 0)
		return;
	if (!closer.thread) {
		closer.queue = g_array_new(FALSE, FALSE, sizeof(int));
		closer.thread = g_thread_try_new("xwayd-closer", closer_main, NULL, NULL);
		if (!closer.thread) {
			g_array_free(closer.queue, TRUE);
			closer.queue = NULL;
			close(fd);
			return;
		}
	}
	g_mutex_lock(&closer.lock);
	g_array_append_val(closer.queue, fd);
	wake = closer.sleeping;
	g_mutex_unlock(&closer.lock);
	if (wake)
		g_cond_signal(&closer.more);
}

void xwayd_close_async_shutdown(void)
{
	/* Wait for the queue: a linger-blocked close delays only the exit. */
	if (!closer.thread)
		return;
	g_mutex_lock(&closer.lock);
	closer.stop = true;
	g_mutex_unlock(&closer.lock);
	g_cond_signal(&closer.more);
	g_thread_join(closer.thread);
	closer.thread = NULL;
	g_array_free(closer.queue, TRUE);
	closer.queue = NULL;
	closer.stop = false;
}

/*
 * An OFFER's or CLAIM's socket: a TCP stream (SO_TYPE and SO_PROTOCOL),
 * and with listening, whether it listens.  getsockopt first: on anything
 * but a socket it fails with ENOTSOCK without calling into the file's
 * filesystem (fstat on a hostile FUSE file could block us).  No SO_DOMAIN:
 * a stream whose protocol is IPPROTO_TCP is an AF_INET or AF_INET6 one,
 * and the names taken next (xwayd_sock_addr) refuse any other family
 * anyway.  A CLAIM passes NULL: its socket must have a peer, which no
 * listening socket has.  0 or -errno.
 */
int xwayd_sock_check_stream(int fd, bool *listening)
{
	int type, proto, v;
	socklen_t l = sizeof(type);

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) < 0)
		return -errno;
	l = sizeof(proto);
	if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &l) < 0)
		return -errno;
	if (type != SOCK_STREAM || proto != IPPROTO_TCP)
		return -EPROTOTYPE;
	if (!listening)
		return 0;
	l = sizeof(v);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &l) < 0)
		return -errno;
	*listening = v != 0;
	return 0;
}

/* The same with the family (LISTEN_ADD needs it for IPV6_V6ONLY): the
 * family, or -errno. */
int xwayd_sock_check_tcp(int fd, bool *listening)
{
	int dom, e;
	socklen_t l = sizeof(dom);

	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &l) < 0)
		return -errno;
	if ((e = xwayd_sock_check_stream(fd, listening)))
		return e;
	return dom == AF_INET || dom == AF_INET6 ? dom : -EPROTOTYPE;
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

/*
 * Is fd an eventfd?  Its /proc/self/fd link says so exactly, but that path
 * walk was 2.6 % of the machine in the local short-connection churn (two
 * per offer).  An eventfd is an anonymous-inode file, and those share one
 * inode (the kernel's anon_inode_getfile): a statx that finds the inode of
 * an eventfd of our own answers at once.  AT_STATX_DONT_SYNC: a FUSE file
 * then answers from its attribute cache, never from its daemon (which the
 * client may run: this call must not block, as the others here).  The
 * shortcut also admits the other kinds that share the inode (epoll, timerfd,
 * signalfd, ...): the broker only polls and writes efd0 (neither blocks on
 * those) and a client that sends one only breaks its own connection.  A
 * kernel that gives eventfds inodes of their own takes the link path.
 */
static int anon_ref_ok = -1;          /* -1 not yet looked up, 0 none */
static uint64_t anon_ref_ino;
static uint32_t anon_ref_major, anon_ref_minor;

static int anon_statx(int fd, struct statx *sx)
{
	return statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_INO, sx) == 0 &&
	       (sx->stx_mask & STATX_INO) ? 0 : -1;
}

static void anon_ref_lookup(void)
{
	struct statx sx;
	int e = eventfd(0, EFD_CLOEXEC);

	anon_ref_ok = 0;
	if (e < 0)
		return;
	if (anon_statx(e, &sx) == 0) {
		anon_ref_ino = sx.stx_ino;
		anon_ref_major = sx.stx_dev_major;
		anon_ref_minor = sx.stx_dev_minor;
		anon_ref_ok = 1;
	}
	close(e);
}

int xwayd_fd_is_eventfd(int fd)
{
	char path[64], link[64];
	struct statx sx;
	ssize_t n;

	if (anon_ref_ok < 0)
		anon_ref_lookup();
	if (anon_ref_ok && anon_statx(fd, &sx) == 0 && sx.stx_ino == anon_ref_ino &&
	    sx.stx_dev_major == anon_ref_major && sx.stx_dev_minor == anon_ref_minor)
		return 0;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return -errno;
	link[n] = 0;
	return strcmp(link, "anon_inode:[eventfd]") == 0 ? 0 : -EINVAL;
}
