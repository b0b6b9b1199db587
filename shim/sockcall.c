/* SPDX-License-Identifier: MIT */
/*
 * The interposed socket calls (calls.def, XWAY_CALL): each looks the fd up
 * and either goes straight to libc (not ours: one atomic load, no
 * allocation, no logging, errno untouched) or to the set-up code
 * (setup.c) or the data path (io.c), converting the internal -errno result
 * with xway_ret() on the way out.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "errno.h"
#include "shim.h"
#include "lifecycle.h"

#define XWAY_EXPORT __attribute__((visibility("default")))

extern void __chk_fail(void) __attribute__((noreturn));
XWAY_EXPORT ssize_t __read_chk(int fd, void *buf, size_t len, size_t buflen);
XWAY_EXPORT ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags);
XWAY_EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen,
				   int flags, struct sockaddr *sa, socklen_t *salen);

/* The fd's connection, or NULL for pass-through (also while starting). */
static inline struct xway_conn *xway_lookup_fd(int fd)
{
	if (__builtin_expect(!xway_ready(), 0))
		return NULL;
	return xway_fd_get(fd);
}

/* ---- set-up ---------------------------------------------------------- */

XWAY_EXPORT int socket(int domain, int type, int protocol)
{
	int fd = real.socket(domain, type, protocol);

	xway_fd_fresh_note(fd, domain, type, protocol);
	/* The broker link is opened at the first TCP socket, so it exists
	 * before a sandbox that would forbid connecting to it goes up. */
	if (fd >= 0 && (domain == AF_INET || domain == AF_INET6) &&
	    (type & 0xf) == SOCK_STREAM && xway_ready() && !xway_cfg.disabled &&
	    xway_broker_fd() < 0) {
		int saved = errno;
		xway_broker_prepare();
		errno = saved;
	}
	return fd;
}

/*
 * connect(AF_UNSPEC) dissolved the connection (the kernel reset it): the
 * peer sees a reset on the channel too, after what it had not read yet,
 * and the socket is the kernel's again, free to connect anew (and to be
 * accelerated again).  Without this, the next connect's bytes went into
 * the old channel and were lost.
 */
static void xway_disconnected(struct xway_conn *c)
{
	int st = atomic_load_explicit(&c->state, memory_order_acquire);

	if (st == XWAY_ST_PENDING)
		st = xway_pending_resolve(c, 1);
	if (st == XWAY_ST_ACCEL && c->chan)
		xway_chan_reset(c->chan);
	if (st == XWAY_ST_ACCEL || st == XWAY_ST_FLUSH || st == XWAY_ST_PENDING) {
		c->flush_len = c->flush_off = 0;   /* the kernel drops unsent data too */
		atomic_store_explicit(&c->state, XWAY_ST_FLUSH, memory_order_release);
		xway_fd_drop_conn(c);
	}
}

XWAY_EXPORT int connect(int fd, const struct sockaddr *sa, socklen_t len)
{
	struct xway_conn *c = xway_lookup_fd(fd);
	/* What the set-up may know of a socket made here (fdtable.c); used
	 * once: from now on the kernel's state is the connection's. */
	unsigned fresh = xway_fd_fresh(fd);
	int r;

	if (fresh)
		xway_fd_fresh_forget(fd);

	if (c && sa && len >= sizeof(sa_family_t) && sa->sa_family == AF_UNSPEC) {
		r = real.connect(fd, sa, len);
		if (r == 0) {
			int saved = errno;
			struct sockaddr_storage ss;
			socklen_t sl = sizeof(ss);

			xway_disconnected(c);
			/* The kernel released an automatic port but getsockname
			 * still shows it, and the next connect takes a new one:
			 * an offer made for the old one would never be claimed.
			 * Bind a fresh one now (same address); EINVAL when the
			 * app had bound the port itself, which then stays. */
			if (real.getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
				if (ss.ss_family == AF_INET)
					((struct sockaddr_in *)&ss)->sin_port = 0;
				else if (ss.ss_family == AF_INET6)
					((struct sockaddr_in6 *)&ss)->sin6_port = 0;
				(void)real.bind(fd, (struct sockaddr *)&ss, sl);
			}
			errno = saved;
		}
		xway_conn_put(c);
		return r;
	}
	if (c) {
		/* Second connect on a connection of ours: the real socket
		 * answers (0 after EINPROGRESS completed, EISCONN, EALREADY). */
		xway_conn_put(c);
		return real.connect(fd, sa, len);
	}
	if (!xway_ready() || xway_cfg.disabled)
		return real.connect(fd, sa, len);
	r = xway_setup_connect(fd, sa, len, fresh);
	if (r == 1)
		return real.connect(fd, sa, len);
	return (int)xway_ret(r);
}

XWAY_EXPORT int bind(int fd, const struct sockaddr *sa, socklen_t len)
{
	xway_fd_fresh_forget(fd);
	return real.bind(fd, sa, len);
}

XWAY_EXPORT int listen(int fd, int backlog)
{
	xway_fd_fresh_forget(fd);
	if (!xway_ready() || xway_cfg.disabled)
		return real.listen(fd, backlog);
	return (int)xway_ret(xway_setup_listen(fd, backlog));
}

XWAY_EXPORT int accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags)
{
	struct xway_conn *lc = xway_lookup_fd(fd);
	int nfd;

	if (!lc) {
		/* A listener made where we did not see listen(): systemd,
		 * an exec, SCM_RIGHTS.  Adopted (and registered) before the
		 * real accept, so that the broker knows it from now on; a
		 * number found not to be one costs one bit test next time.
		 * A connection already queued is claimed if its client
		 * offered (the listener was registered elsewhere), else it
		 * stays plain TCP. */
		if (__builtin_expect(!xway_ready() || xway_cfg.disabled ||
				     xway_fd_nolisten(fd), 1) ||
		    !(lc = xway_listener_adopt(fd))) {
			nfd = real.accept4(fd, sa, len, flags);
			xway_fd_fresh_forget(nfd);   /* a record left by a raw close */
			return nfd;
		}
	}
	if (atomic_load_explicit(&lc->state, memory_order_acquire) == XWAY_ST_LISTENER &&
	    xway_listener_stale(lc)) {
		/* Not registered by this process over the current broker
		 * link: a forked worker (the registrant may have exited, as
		 * apache's start process does), a broker restart, or a broker
		 * that was down at listen().  Before blocking, so the broker
		 * knows the listener when connections come. */
		int saved = errno;
		xway_listener_register(lc);
		errno = saved;
	}
	/* The peer's address: the set-up needs it, and accept gives it for
	 * nothing (into our buffer when the application asks for none). */
	struct sockaddr_storage pss;
	socklen_t plen = sizeof(pss), want = len ? *len : 0;
	int own = !sa || !len;

	nfd = own ? real.accept4(fd, (struct sockaddr *)&pss, &plen, flags)
		  : real.accept4(fd, sa, len, flags);
	xway_fd_fresh_forget(nfd);      /* a record left by a raw close */
	if (atomic_load_explicit(&lc->state, memory_order_acquire) == XWAY_ST_LISTENER &&
	    !atomic_load_explicit(&lc->registered, memory_order_acquire)) {
		/* The broker came back while we were blocked: register for
		 * the next connections (rate-limited by the link's back-off);
		 * this one was set up by a client that found no listener. */
		int saved = errno;
		xway_listener_register(lc);
		errno = saved;
		if (nfd >= 0) {
			xway_conn_put(lc);
			return nfd;
		}
	}
	if (nfd >= 0 && atomic_load_explicit(&lc->state, memory_order_acquire)
			== XWAY_ST_LISTENER &&
	    atomic_load_explicit(&lc->registered, memory_order_acquire)) {
		int saved = errno;
		/* The application's buffer holds it whole unless it was short. */
		const struct sockaddr *peer = own ? (struct sockaddr *)&pss
					    : *len <= want ? sa : NULL;
		xway_setup_accepted(lc, nfd, flags, peer, own ? plen : *len);
		errno = saved;
	}
	xway_conn_put(lc);
	return nfd;
}

XWAY_EXPORT int accept(int fd, struct sockaddr *sa, socklen_t *len)
{
	return accept4(fd, sa, len, 0);
}

XWAY_EXPORT int close(int fd)
{
	if (__builtin_expect(!xway_ready(), 0))
		return real.close(fd);
	/* lifecycle.c: the shim's own fds (broker link, channel fds) are
	 * not the app's: EBADF as if not open, and they stay. */
	if (__builtin_expect(xway_lc_close_guard(fd), 0))
		return (int)xway_ret(-EBADF);
	if (__builtin_expect(fd >= 0 && fd == xway_broker_fd(), 0))
		xway_broker_forget();
	/* epoll.c: an epoll fd's accelerated records go with it. */
	xway_ep_fd_closing(fd, -1);
	/* The number's next file may be a listener. */
	xway_fd_new_file(fd);
	if (!xway_fd_is_ours(fd))
		return real.close(fd);
	int r = xway_close_app_fd(fd);
	if (r == 1)
		return real.close(fd);
	return (int)xway_ret(r);
}

XWAY_EXPORT int shutdown(int fd, int how)
{
	struct xway_conn *c = xway_lookup_fd(fd);
	long r;

	if (!c)
		return real.shutdown(fd, how);
	r = xway_io_shutdown(c, how);
	xway_conn_put(c);
	return (int)xway_ret(r);
}

/* ---- data path ------------------------------------------------------- */

/* A NULL buffer is EFAULT for the kernel; the channel would take it as
 * "discard".  (Other bad pointers fault in the copy, as documented.) */
static ssize_t xway_recv1(struct xway_conn *c, void *buf, size_t len, int flags)
{
	struct iovec iov = { buf, len };
	ssize_t r = (!buf && len && !(flags & MSG_TRUNC)) ? -EFAULT
							  : xway_io_recv(c, &iov, 1, flags);

	xway_conn_put(c);
	return xway_ret(r);
}

static ssize_t xway_send1(struct xway_conn *c, const void *buf, size_t len, int flags)
{
	struct iovec iov = { (void *)buf, len };
	ssize_t r = (!buf && len) ? -EFAULT : xway_io_send(c, &iov, 1, flags);

	xway_conn_put(c);
	return xway_ret(r);
}

XWAY_EXPORT ssize_t read(int fd, void *buf, size_t len)
{
	struct xway_conn *c = xway_lookup_fd(fd);

	if (__builtin_expect(!c, 1))
		return real.read(fd, buf, len);
	if (len == 0) {                 /* read(fd, buf, 0) returns 0 at once */
		xway_conn_put(c);
		return 0;
	}
	return xway_recv1(c, buf, len, 0);
}

XWAY_EXPORT ssize_t __read_chk(int fd, void *buf, size_t len, size_t buflen)
{
	if (len > buflen)
		__chk_fail();
	return read(fd, buf, len);
}

XWAY_EXPORT ssize_t write(int fd, const void *buf, size_t len)
{
	struct xway_conn *c = xway_lookup_fd(fd);

	if (__builtin_expect(!c, 1))
		return real.write(fd, buf, len);
	return xway_send1(c, buf, len, 0);
}

static int xway_bad_iov(const struct iovec *iov, int iovcnt)
{
	if (iovcnt < 0 || iovcnt > 1024)
		return 1;
	size_t sum = 0;
	for (int i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len > (size_t)SSIZE_MAX - sum)
			return 1;
		sum += iov[i].iov_len;
	}
	return 0;
}

XWAY_EXPORT ssize_t readv(int fd, const struct iovec *iov, int iovcnt)
{
	struct xway_conn *c = xway_lookup_fd(fd);
	ssize_t r;

	if (__builtin_expect(!c, 1))
		return real.readv(fd, iov, iovcnt);
	if (xway_bad_iov(iov, iovcnt))
		r = -EINVAL;
	else
		r = iovcnt == 0 ? 0 : xway_io_recv(c, iov, iovcnt, 0);
	xway_conn_put(c);
	return xway_ret(r);
}

XWAY_EXPORT ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
	struct xway_conn *c = xway_lookup_fd(fd);
	ssize_t r;

	if (__builtin_expect(!c, 1))
		return real.writev(fd, iov, iovcnt);
	r = xway_bad_iov(iov, iovcnt) ? -EINVAL : xway_io_send(c, iov, iovcnt, 0);
	xway_conn_put(c);
	return xway_ret(r);
}

XWAY_EXPORT ssize_t recv(int fd, void *buf, size_t len, int flags)
{
	struct xway_conn *c = xway_lookup_fd(fd);

	if (__builtin_expect(!c, 1))
		return real.recv(fd, buf, len, flags);
	return xway_recv1(c, buf, len, flags);
}

XWAY_EXPORT ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags)
{
	if (len > buflen)
		__chk_fail();
	return recv(fd, buf, len, flags);
}

XWAY_EXPORT ssize_t recvfrom(int fd, void *buf, size_t len, int flags,
			     struct sockaddr *sa, socklen_t *salen)
{
	struct xway_conn *c = xway_lookup_fd(fd);

	if (__builtin_expect(!c, 1))
		return real.recvfrom(fd, buf, len, flags, sa, salen);
	/* TCP: the address length becomes 0, the buffer is left alone. */
	if (salen)
		*salen = 0;
	return xway_recv1(c, buf, len, flags);
}

XWAY_EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen,
				   int flags, struct sockaddr *sa, socklen_t *salen)
{
	if (len > buflen)
		__chk_fail();
	return recvfrom(fd, buf, len, flags, sa, salen);
}

/*
 * The descriptors an SCM_RIGHTS message just gave the application: their
 * numbers name new files (forget "not a listener"), and a listening TCP
 * socket among them (a master handing its listener to workers) is adopted
 * now rather than at the first accept, so an event loop that polls it
 * before accepting gets its first connection accelerated.  One getsockopt
 * per received descriptor.  Keeps errno.
 */
static void xway_scm_adopt_listeners(struct msghdr *msg)
{
	int saved = errno;

	for (struct cmsghdr *cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR(msg, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS ||
		    cm->cmsg_len < CMSG_LEN(0))
			continue;
		size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < n && i < 253; i++) {
			int nfd;
			memcpy(&nfd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			xway_fd_new_file(nfd);
			if (xway_fd_is_ours(nfd))
				continue;       /* a connection scm.c re-attached */
			struct xway_conn *lc = xway_listener_adopt(nfd);
			if (lc)
				xway_conn_put(lc);   /* the slot holds it */
		}
	}
	errno = saved;
}

XWAY_EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
	struct xway_conn *c = xway_lookup_fd(fd);
	ssize_t r;

	if (__builtin_expect(!c, 1)) {
		/* scm.c: fds received by SCM_RIGHTS may be accelerated. */
		if (msg && msg->msg_control && msg->msg_controllen && xway_ready() &&
		    !xway_cfg.disabled) {
			r = xway_scm_recvmsg(fd, msg, flags);
			if (r >= 0)
				xway_scm_adopt_listeners(msg);
			return xway_ret(r);
		}
		return real.recvmsg(fd, msg, flags);
	}
	if (msg && msg->msg_iovlen > 1024) {
		r = -EMSGSIZE;       /* the kernel's msghdr check, before EINVAL's */
	} else if (!msg || xway_bad_iov(msg->msg_iov, (int)msg->msg_iovlen)) {
		r = -EINVAL;
	} else {
		r = xway_io_recv(c, msg->msg_iov, (int)msg->msg_iovlen, flags);
		if (r >= 0) {
			msg->msg_namelen = 0;
			msg->msg_controllen = 0;
			msg->msg_flags = 0;
		}
	}
	xway_conn_put(c);
	return xway_ret(r);
}

XWAY_EXPORT int recvmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags,
			 struct timespec *tmo)
{
	struct xway_conn *c = xway_lookup_fd(fd);
	unsigned int i;
	ssize_t r = 0;

	if (__builtin_expect(!c, 1))
		return real.recvmmsg(fd, vec, vlen, flags, tmo);
	/* The timeout is checked between messages by the kernel; on a
	 * stream, messages after the first are taken only if already there. */
	for (i = 0; i < vlen; i++) {
		struct msghdr *m = &vec[i].msg_hdr;
		int f = flags & ~MSG_WAITFORONE;
		if (i > 0)
			f |= MSG_DONTWAIT;
		r = xway_io_recv(c, m->msg_iov, (int)m->msg_iovlen, f);
		if (r < 0)
			break;
		m->msg_namelen = 0;
		m->msg_controllen = 0;
		m->msg_flags = 0;
		vec[i].msg_len = (unsigned int)r;
		if (r == 0) {
			i++;
			break;
		}
	}
	xway_conn_put(c);
	if (i == 0)
		return (int)xway_ret(r);
	return (int)i;
}

XWAY_EXPORT ssize_t send(int fd, const void *buf, size_t len, int flags)
{
	struct xway_conn *c = xway_lookup_fd(fd);

	if (__builtin_expect(!c, 1))
		return real.send(fd, buf, len, flags);
	return xway_send1(c, buf, len, flags);
}

XWAY_EXPORT ssize_t sendto(int fd, const void *buf, size_t len, int flags,
			   const struct sockaddr *sa, socklen_t salen)
{
	struct xway_conn *c = xway_lookup_fd(fd);

	if (__builtin_expect(!c, 1)) {
		if (sa && (flags & MSG_FASTOPEN))
			xway_fd_fresh_forget(fd);      /* connects (TCP Fast Open) */
		return real.sendto(fd, buf, len, flags, sa, salen);
	}
	/* A connected TCP socket ignores the address. */
	return xway_send1(c, buf, len, flags);
}

XWAY_EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
	struct xway_conn *c = xway_lookup_fd(fd);
	ssize_t r;

	if (__builtin_expect(!c, 1)) {
		if (msg && msg->msg_name && (flags & MSG_FASTOPEN))
			xway_fd_fresh_forget(fd);      /* connects (TCP Fast Open) */
		/* scm.c: hand accelerated fds sent by SCM_RIGHTS over. */
		if (msg && msg->msg_control && msg->msg_controllen && xway_ready() &&
		    !xway_cfg.disabled)
			return xway_ret(xway_scm_sendmsg(fd, msg, flags));
		return real.sendmsg(fd, msg, flags);
	}
	if (msg && msg->msg_iovlen > 1024)
		r = -EMSGSIZE;       /* the kernel's msghdr check, before EINVAL's */
	else if (!msg || xway_bad_iov(msg->msg_iov, (int)msg->msg_iovlen))
		r = -EINVAL;
	else
		r = xway_io_send(c, msg->msg_iov, (int)msg->msg_iovlen, flags);
	xway_conn_put(c);
	return xway_ret(r);
}

XWAY_EXPORT int sendmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags)
{
	struct xway_conn *c = xway_lookup_fd(fd);
	unsigned int i;
	ssize_t r = 0;

	if (__builtin_expect(!c, 1)) {
		if (flags & MSG_FASTOPEN)
			xway_fd_fresh_forget(fd);      /* connects (TCP Fast Open) */
		return real.sendmmsg(fd, vec, vlen, flags);
	}
	for (i = 0; i < vlen && i < 1024; i++) {
		struct msghdr *m = &vec[i].msg_hdr;
		r = xway_io_send(c, m->msg_iov, (int)m->msg_iovlen, flags);
		if (r < 0)
			break;
		vec[i].msg_len = (unsigned int)r;
	}
	xway_conn_put(c);
	if (i == 0 && vlen > 0)
		return (int)xway_ret(r);
	return (int)i;
}

/*
 * sendfile() FROM an accelerated socket (the kernel splices a socket into
 * any file): the bytes are on the channel, not in the socket the kernel
 * would read (it waited forever for them).  Like read() then write(), but
 * consuming from the connection exactly what out_fd took (peek, write,
 * consume): a short write leaves the rest readable.  Sockets have no
 * offset (ESPIPE).  Not atomic against another thread reading the same
 * socket between the peek and the consume (as splice below).
 */
static ssize_t xway_sendfile_from(int out_fd, int in_fd, int has_offset, size_t count)
{
	struct xway_conn *c = xway_lookup_fd(in_fd);
	char buf[32768];
	struct iovec iov = { buf, count < sizeof(buf) ? count : sizeof(buf) };
	ssize_t n, w;

	if (!c)
		return -EAGAIN - 100000;        /* closed meanwhile: the kernel's */
	if (atomic_load_explicit(&c->state, memory_order_acquire) == XWAY_ST_LISTENER) {
		n = -EAGAIN - 100000;           /* the kernel's EINVAL */
		goto out;
	}
	if (has_offset) {
		n = -ESPIPE;
		goto out;
	}
	n = iov.iov_len ? xway_io_recv(c, &iov, 1, MSG_PEEK) : 0;
	if (n <= 0)
		goto out;
	/* write(): the shim's own, out_fd may be accelerated too. */
	w = write(out_fd, buf, (size_t)n);
	if (w <= 0) {
		n = w < 0 ? -errno : -EAGAIN;
		goto out;
	}
	iov.iov_len = (size_t)w;
	n = xway_io_recv(c, &iov, 1, 0);
	if (n >= 0)
		n = w;
out:
	xway_conn_put(c);
	return n;
}

XWAY_EXPORT ssize_t sendfile(int out_fd, int in_fd, off_t *offset, size_t count)
{
	struct xway_conn *c = xway_lookup_fd(out_fd);
	ssize_t r;

	if (__builtin_expect(!c, 1) && !(xway_ready() && xway_fd_is_ours(in_fd)))
		return real.sendfile(out_fd, in_fd, offset, count);
	if (xway_fd_is_ours(in_fd)) {
		if (c)
			xway_conn_put(c);
		r = xway_sendfile_from(out_fd, in_fd, offset != NULL, count);
		if (r == -EAGAIN - 100000)
			return real.sendfile(out_fd, in_fd, offset, count);
		return xway_ret(r);
	}
	r = xway_io_sendfile(c, in_fd, offset, count);
	xway_conn_put(c);
	return xway_ret(r);
}

XWAY_EXPORT ssize_t sendfile64(int out_fd, int in_fd, off64_t *offset, size_t count)
{
	struct xway_conn *c = xway_lookup_fd(out_fd);
	ssize_t r;

	if (__builtin_expect(!c, 1) && !(xway_ready() && xway_fd_is_ours(in_fd)))
		return real.sendfile64(out_fd, in_fd, offset, count);
	if (xway_fd_is_ours(in_fd)) {
		if (c)
			xway_conn_put(c);
		r = xway_sendfile_from(out_fd, in_fd, offset != NULL, count);
		if (r == -EAGAIN - 100000)
			return real.sendfile64(out_fd, in_fd, offset, count);
		return xway_ret(r);
	}
	off_t o = offset ? (off_t)*offset : 0;
	r = xway_io_sendfile(c, in_fd, offset ? &o : NULL, count);
	if (offset)
		*offset = o;
	xway_conn_put(c);
	return xway_ret(r);
}

/* Free room in a pipe, or -errno if fd is not one (splice's EINVAL). */
static long xway_pipe_room(int fd)
{
	struct stat st;
	int sz, used = 0;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISFIFO(st.st_mode))
		return -EINVAL;
	sz = fcntl(fd, F_GETPIPE_SZ);
	if (sz < 0 || ioctl(fd, FIONREAD, &used) < 0)
		return -errno;
	return sz > used ? sz - used : 0;
}

/*
 * splice() with an accelerated socket on one end and a pipe on the other:
 * the kernel cannot splice the channel, so the bytes go through a buffer,
 * without ever taking from one end more than the other accepted.  Socket
 * to pipe: peek, write to the pipe what it takes, consume exactly that.
 * Pipe to socket: read from the pipe no more than the channel has room for
 * when the socket is nonblocking (a blocking send takes all).  Not atomic
 * against another thread reading the same socket between peek and consume.
 */
static ssize_t xway_splice(struct xway_conn *c, int from_sock, int other,
			   size_t len, unsigned int flags)
{
	char buf[32768];
	size_t want = len < sizeof(buf) ? len : sizeof(buf);
	long room = xway_pipe_room(other);
	ssize_t n, w;

	if (room < 0)
		return room;
	if (want == 0)
		return 0;
	if (from_sock) {
		struct iovec iov = { buf, want };

		if (room == 0 && (flags & SPLICE_F_NONBLOCK))
			return -EAGAIN;
		n = xway_io_recv(c, &iov, 1, MSG_PEEK);
		if (n <= 0)
			return n;
		if (room > 0 && n > room)
			n = room;       /* a write within the room cannot block */
		w = XWAY_SYS(real.write(other, buf, (size_t)n));
		if (w <= 0)
			return w < 0 ? w : -EAGAIN;
		iov.iov_len = (size_t)w;
		n = xway_io_recv(c, &iov, 1, 0);
		return n < 0 ? n : w;
	}
	if (atomic_load_explicit(&c->nonblock, memory_order_relaxed) && c->chan) {
		size_t cap = xway_chan_capacity(c->chan), used = xway_chan_unsent(c->chan);

		if (used >= cap)
			return -EAGAIN;
		if (want > cap - used)
			want = cap - used;
	}
	n = XWAY_SYS(real.read(other, buf, want));
	if (n <= 0)
		return n;
	struct iovec iov = { buf, (size_t)n };
	w = xway_io_send(c, &iov, 1, MSG_NOSIGNAL);
	/* Bytes read from the pipe and not sent cannot go back: only an
	 * error (peer gone, reset) or a signal gets here, where the
	 * connection is finished for those bytes anyway. */
	return w;
}

XWAY_EXPORT ssize_t splice(int fd_in, off64_t *off_in, int fd_out, off64_t *off_out,
			   size_t len, unsigned int flags)
{
	struct xway_conn *ci, *co;
	ssize_t r;

	if (!xway_ready())
		return real.splice(fd_in, off_in, fd_out, off_out, len, flags);
	ci = xway_fd_get(fd_in);
	co = xway_fd_get(fd_out);
	if (__builtin_expect(!ci && !co, 1))
		return real.splice(fd_in, off_in, fd_out, off_out, len, flags);
	if (ci && co)
		r = -EINVAL;            /* neither end is a pipe */
	else if ((ci && off_in) || (co && off_out))
		r = -ESPIPE;            /* sockets have no offset */
	else if (ci)
		r = xway_splice(ci, 1, fd_out, len, flags);
	else
		r = xway_splice(co, 0, fd_in, len, flags);
	if (ci)
		xway_conn_put(ci);
	if (co)
		xway_conn_put(co);
	return xway_ret(r);
}

/* ---- options, flags ---------------------------------------------------- */

static int xway_tv_ms(const void *val, socklen_t len)
{
	struct timeval tv;

	if (!val || len < sizeof(tv))
		return -1;
	memcpy(&tv, val, sizeof(tv));
	long ms = tv.tv_sec * 1000L + (tv.tv_usec + 999) / 1000;
	return ms < 0 ? -1 : ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

/* The SOL_SOCKET options a connection's set-up reads from its socket
 * (setup.c: the source port's bind, xway_snapshot_opts). */
static int xway_opt_snapshotted(int name)
{
	switch (name) {
	case SO_REUSEADDR: case SO_REUSEPORT: case SO_RCVLOWAT: case SO_LINGER:
	case SO_RCVTIMEO: case SO_SNDTIMEO:
#if defined(SO_RCVTIMEO_NEW) && defined(SO_RCVTIMEO_OLD)
	case (SO_RCVTIMEO == SO_RCVTIMEO_NEW ? SO_RCVTIMEO_OLD : SO_RCVTIMEO_NEW):
	case (SO_SNDTIMEO == SO_SNDTIMEO_NEW ? SO_SNDTIMEO_OLD : SO_SNDTIMEO_NEW):
#endif
		return 1;
	default:
		return 0;
	}
}

XWAY_EXPORT int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	struct xway_conn *c = xway_lookup_fd(fd);
	int r;

	if (__builtin_expect(!c, 1)) {
		if (level == SOL_SOCKET && xway_opt_snapshotted(name))
			xway_fd_fresh_mark(fd, XWAY_FRESH_OPTS_SET);
		return real.setsockopt(fd, level, name, val, len);
	}
	if (level == IPPROTO_TCP && name == TCP_DEFER_ACCEPT &&
	    atomic_load_explicit(&c->state, memory_order_relaxed) == XWAY_ST_LISTENER &&
	    atomic_load_explicit(&c->registered, memory_order_acquire)) {
		/* Kept from the kernel: channel payload never arrives on TCP,
		 * so the kernel would hold every accelerated connection. */
		int v, zero = 0;
		socklen_t l = sizeof(v);
		/* Let the kernel validate and round the value (seconds become
		 * SYN-ACK retransmits and back), remember that, and switch
		 * the kernel's off again. */
		r = real.setsockopt(fd, level, name, val, len);
		if (r == 0 && real.getsockopt(fd, level, name, &v, &l) == 0) {
			c->defer_accept = v;
			real.setsockopt(fd, level, name, &zero, sizeof(zero));
		}
		xway_conn_put(c);
		return r;
	}
	r = real.setsockopt(fd, level, name, val, len);
	if (r == 0 && level == SOL_SOCKET) {
		if (name == SO_RCVTIMEO)
			c->rcvtimeo_ms = xway_tv_ms(val, len);
		else if (name == SO_SNDTIMEO)
			c->sndtimeo_ms = xway_tv_ms(val, len);
		else if (name == SO_RCVLOWAT)
			c->rcvlowat = xway_sock_rcvlowat(fd);  /* as the kernel clamped it */
		else if (name == SO_LINGER && val && len >= sizeof(struct linger)) {
			struct linger lg;
			memcpy(&lg, val, sizeof(lg));
			c->linger_on = lg.l_onoff;
			c->linger_s = lg.l_linger;
		}
	}
	xway_conn_put(c);
	return r;
}

XWAY_EXPORT int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	struct xway_conn *c = xway_lookup_fd(fd);
	int r;

	if (__builtin_expect(!c, 1))
		return real.getsockopt(fd, level, name, val, len);
	if (level == IPPROTO_TCP && name == TCP_DEFER_ACCEPT &&
	    atomic_load_explicit(&c->state, memory_order_relaxed) == XWAY_ST_LISTENER &&
	    atomic_load_explicit(&c->registered, memory_order_acquire) &&
	    val && len && *len >= sizeof(int)) {
		memcpy(val, &c->defer_accept, sizeof(int));
		*len = sizeof(int);
		xway_conn_put(c);
		return 0;
	}
	/* Everything else, TCP_INFO included, from the real socket: it is
	 * the connection's kernel state (idle: sane values for iperf3), and
	 * its byte counters staying ~0 show the payload took the channel. */
	r = real.getsockopt(fd, level, name, val, len);
	xway_conn_put(c);
	return r;
}

static int xway_fcntl(int fd, int cmd, long arg, int (*fn)(int, int, long))
{
	struct xway_conn *c = xway_lookup_fd(fd);
	int r;

	if (__builtin_expect(!c, 1)) {
		if (cmd == F_SETFL)
			xway_fd_fresh_mark(fd, XWAY_FRESH_NB_SET);
		return fn(fd, cmd, arg);
	}
	r = fn(fd, cmd, arg);
	if (r >= 0 && cmd == F_SETFL)
		atomic_store_explicit(&c->nonblock, (arg & O_NONBLOCK) != 0,
				      memory_order_relaxed);
	if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)) {
		int saved = errno;
		xway_fd_set(r, c);
		errno = saved;
	}
	xway_conn_put(c);
	return r;
}

XWAY_EXPORT int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	long arg;

	/* Every fcntl argument is an int, a long or a pointer: one register
	 * on the ABIs we build for. */
	va_start(ap, cmd);
	arg = va_arg(ap, long);
	va_end(ap);
	return xway_fcntl(fd, cmd, arg, real.fcntl);
}

XWAY_EXPORT int fcntl64(int fd, int cmd, ...)
{
	va_list ap;
	long arg;

	va_start(ap, cmd);
	arg = va_arg(ap, long);
	va_end(ap);
	return xway_fcntl(fd, cmd, arg, real.fcntl64);
}

XWAY_EXPORT int ioctl(int fd, unsigned long req, ...)
{
	struct xway_conn *c;
	va_list ap;
	void *arg;
	int r;

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);
	c = xway_lookup_fd(fd);
	if (__builtin_expect(!c, 1)) {
		if (req == FIONBIO)
			xway_fd_fresh_mark(fd, XWAY_FRESH_NB_SET);
		return real.ioctl(fd, req, arg);
	}
	r = xway_io_ioctl(c, req, arg);
	xway_conn_put(c);
	return (int)xway_ret(r);
}

/* ---- descriptors ------------------------------------------------------- */

XWAY_EXPORT int dup(int fd)
{
	struct xway_conn *c = xway_lookup_fd(fd);
	int nfd;

	if (__builtin_expect(!c, 1))
		return real.dup(fd);
	nfd = real.dup(fd);
	if (nfd >= 0) {
		int saved = errno;
		xway_fd_set(nfd, c);
		errno = saved;
	}
	xway_conn_put(c);
	return nfd;
}

/* dup2/dup3 onto fd2: the kernel closes fd2 first; if it was ours, do our
 * close (teardown before the real socket goes). */
static int xway_dup_onto(int fd, int fd2, int flags, int is3)
{
	struct xway_conn *c, *old = NULL;
	int r;

	if (!xway_ready())
		return is3 ? real.dup3(fd, fd2, flags) : real.dup2(fd, fd2);
	c = xway_fd_get(fd);
	if (!c && !xway_fd_is_ours(fd2))
		return is3 ? real.dup3(fd, fd2, flags) : real.dup2(fd, fd2);
	if (fd == fd2) {
		if (c)
			xway_conn_put(c);
		return is3 ? real.dup3(fd, fd2, flags) : real.dup2(fd, fd2);
	}
	if (fcntl(fd, F_GETFD, 0) < 0) {          /* EBADF: fd2 untouched */
		if (c)
			xway_conn_put(c);
		return -1;
	}
	int saved = errno;
	old = xway_fd_take(fd2);
	if (old && atomic_load_explicit(&old->slots, memory_order_acquire) == 0)
		xway_conn_last_slot(old, fd2);   /* dup2 closes fd2 below */
	else if (old && old->fd == fd2)
		old->fd = xway_fd_other(old, fd2);
	errno = saved;
	r = is3 ? real.dup3(fd, fd2, flags) : real.dup2(fd, fd2);
	saved = errno;
	if (r >= 0 && c) {
		xway_fd_set(fd2, c);
		/* stdio around the shim would send on TCP (stdio.c). */
		if (fd2 <= 2 &&
		    atomic_load_explicit(&c->state, memory_order_acquire) == XWAY_ST_ACCEL)
			xway_stdio_adopt_dup(fd2);
	}
	if (old)
		xway_conn_put(old);
	if (c)
		xway_conn_put(c);
	errno = saved;
	return r;
}

XWAY_EXPORT int dup2(int fd, int fd2)
{
	/* lifecycle.c: never replace the shim's own fds (see README). */
	if (xway_ready() && fd != fd2 && xway_lc_close_guard(fd2))
		return (int)xway_ret(-EBUSY);
	if (xway_ready() && fd != fd2) {
		xway_ep_fd_closing(fd2, fd);    /* an epoll fd replaced */
		xway_fd_new_file(fd2);    /* fd2 names fd's file now */
	}
	return xway_dup_onto(fd, fd2, 0, 0);
}

XWAY_EXPORT int dup3(int fd, int fd2, int flags)
{
	if (xway_ready() && fd != fd2 && xway_lc_close_guard(fd2))
		return (int)xway_ret(-EBUSY);
	if (xway_ready() && fd != fd2 && !(flags & ~O_CLOEXEC)) {
		xway_ep_fd_closing(fd2, fd);    /* an epoll fd replaced */
		xway_fd_new_file(fd2);
	}
	return xway_dup_onto(fd, fd2, flags, 1);
}
