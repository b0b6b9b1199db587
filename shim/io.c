/* SPDX-License-Identifier: MIT */
/*
 * The data path of connections on the channel, with Linux TCP's semantics
 * (../shared/TCP-SEMANTICS.md): blocking sends are all-or-nothing unless a
 * signal interrupts after a partial copy; MSG_PEEK, MSG_WAITALL,
 * MSG_DONTWAIT, MSG_TRUNC, MSG_NOSIGNAL; SO_RCVTIMEO/SO_SNDTIMEO; EINTR vs
 * restart; EOF and reset after the queued data; SIGPIPE/EPIPE.  Liveness
 * comes from the dual-channel TCP socket: a peer process that dies makes
 * its kernel send FIN or RST, which a reader with an empty ring sees
 * (blocking waits poll the socket with the eventfd; a non-blocking read
 * that finds the ring empty peeks at it).
 *
 * Fast path: one channel call, no lock of ours, no system call unless the
 * ring is empty/full and we must look at the TCP socket or sleep.  A
 * PENDING client (broker has not decided) takes c->lock around channel
 * calls so that a concurrent withdraw sees a stable ring 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/sockios.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "errno.h"
#include "lifecycle.h"
#include "shim.h"

#define XWAY_PENDING_SLICE_MS 50
#define XWAY_IOV_MAX 1024

static long xway_ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Remaining wait in ms for a deadline (-1: forever). */
static int xway_left(long deadline)
{
	if (deadline < 0)
		return -1;
	long l = deadline - xway_ms_now();
	return l <= 0 ? 0 : l > INT_MAX ? INT_MAX : (int)l;
}

/* After the channel wait returned -EINTR: would the kernel have restarted
 * the call?  (signal.c knows which handler ran.) */
static int xway_restart_ok(int timeo_ms)
{
	return xway_sig_restarts(timeo_ms);
}

static size_t xway_iov_len(const struct iovec *iov, int iovcnt)
{
	size_t n = 0;

	for (int i = 0; i < iovcnt; i++)
		n += iov[i].iov_len;
	return n;
}

/* iov without its first `skip` bytes, in out[] (at most XWAY_IOV_MAX). */
static int xway_iov_skip(const struct iovec *iov, int iovcnt, size_t skip,
			 struct iovec *out)
{
	int n = 0;

	for (int i = 0; i < iovcnt && n < XWAY_IOV_MAX; i++) {
		if (skip >= iov[i].iov_len) {
			skip -= iov[i].iov_len;
			continue;
		}
		out[n].iov_base = (char *)iov[i].iov_base + skip;
		out[n].iov_len = iov[i].iov_len - skip;
		skip = 0;
		n++;
	}
	return n;
}

/* EPIPE the way the kernel gives it: with SIGPIPE to this thread unless
 * MSG_NOSIGNAL. */
/*
 * The peer's TCP socket closed (FIN) with no flag of ours on the channel:
 * its process died without running the shim (SIGKILL, a crash).  Kernel
 * TCP sends RST instead of FIN when the dying socket had unread data, and
 * here the unread data is what we produced and it never consumed.  (A
 * clean close leaves EOF/CLOSED or RST on the rings, a half-close EOF.)
 */
static int xway_died_unread(struct xway_conn *c)
{
	return c->chan &&
	       !(xway_chan_poll(c->chan) & (XWAY_EV_HUP | XWAY_EV_RDHUP | XWAY_EV_RST)) &&
	       xway_chan_unsent(c->chan) > 0;
}

/*
 * The channel says the peer reset the connection; its RST on TCP is sent
 * by the peer's close right after it flagged the ring, so it can still be
 * on its way.  The kernel reports ECONNRESET only once the socket is
 * closed (getpeername then gives ENOTCONN, getsockopt TCP_INFO shows
 * CLOSE): wait for that, bounded (200 ms; a peer that died between the two
 * leaves only the ring's word).  Keeps errno.
 */
static void xway_await_tcp_reset(struct xway_conn *c)
{
	struct pollfd pf = { .fd = c->fd, .events = POLLIN | POLLRDHUP };
	int saved = errno;

	for (int i = 0; i < 20; i++) {
		struct timespec nap = { 0, 10000000 };

		pf.revents = 0;
		if (real.poll(&pf, 1, 10) <= 0)
			continue;
		if (pf.revents & (POLLERR | POLLHUP))
			break;
		nanosleep(&nap, NULL);     /* readable (a FIN first): not yet */
	}
	errno = saved;
}

static ssize_t xway_epipe(int flags)
{
	if (!(flags & MSG_NOSIGNAL))
		raise(SIGPIPE);
	return -EPIPE;
}

/* What the TCP socket says while the ring has nothing: 0 EOF, -ECONNRESET
 * (or another pending error, reported once by the kernel), -EAGAIN
 * nothing.  Payload on the TCP socket of an accelerated connection cannot
 * happen (neither end writes it); it is treated as "nothing". */
static long xway_tcp_peek(struct xway_conn *c)
{
	char b;
	long r = XWAY_SYS(real.recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT));

	if (r > 0) {
		/* Only a holder of the peer's socket that does not run the
		 * shim writes there (it got the socket by SCM_RIGHTS): the
		 * bytes wait on TCP until the peer's shim reverts the
		 * connection (xway_io_revert); never silent. */
		if (!atomic_exchange_explicit(&c->tcp_payload, 1, memory_order_relaxed))
			XWARN("fd %d: TCP payload arrived on an accelerated connection "
			      "(the peer's socket is held by a process without "
			      "libxway.so); it is read only once the peer's shim "
			      "reverts the connection to TCP, which a sender killed "
			      "before settling its SCM_RIGHTS hand-over never does",
			      c->fd);
		return -EAGAIN;
	}
	if (r == 0)
		atomic_store_explicit(&c->tcp_eof, 1, memory_order_relaxed);
	/* A Xen peer's domain vanished: its broker aborted our socket
	 * (SOCK_DESTROY gives ECONNABORTED).  The peer is gone as if it had
	 * reset the connection, and that is what applications handle. */
	if (r == -ECONNABORTED && c->chan && xway_chan_backend(c->chan) == XWAY_BACKEND_XEN)
		r = -ECONNRESET;
	return r;
}

/*
 * The Xen channel ended (libxenvchan: the peer's end went away and every
 * byte of it was read).  That is neither EOF nor a reset: both ride on the
 * TCP socket (shim/chan/xen.c), sent as the peer closed it, and may arrive
 * after the channel showed the end (shared memory is faster than the
 * bridge).  TCP's verdict: 0 EOF, -ECONNRESET (or another error the kernel
 * reports once), -EAGAIN nothing yet (nonblocking, or the timeout), -EINTR;
 * or 1: the channel has bytes again (read them first).  The wait is in
 * slices that re-check the channel: only TCP wakes it otherwise.
 * An rst case read EOF instead of the peer's reset before this.
 */
static long xway_xen_end(struct xway_conn *c, int nb, long deadline)
{
	for (;;) {
		long t = atomic_load_explicit(&c->tcp_eof, memory_order_relaxed)
			 ? 0 : xway_tcp_peek(c);
		struct pollfd pf = { .fd = c->fd, .events = POLLIN | POLLRDHUP };
		int left;

		if (t != -EAGAIN)
			return t;
		/* TCP payload of a holder without the shim: no verdict
		 * comes while it writes; end as the channel says. */
		if (atomic_load_explicit(&c->tcp_payload, memory_order_relaxed))
			return 0;
		if (xway_chan_readable(c->chan) > 0)
			return 1;
		left = nb ? 0 : xway_left(deadline);
		if (left == 0)
			return -EAGAIN;
		xway_last_sig = 0;
		if (XWAY_SYS(real.poll(&pf, 1, left < 0 || left > 100 ? 100 : left)) == -EINTR &&
		    !xway_restart_ok(c->rcvtimeo_ms))
			return -EINTR;
	}
}

static ssize_t xway_chan_in(struct xway_conn *c, const struct iovec *iov,
			    int iovcnt, size_t want, int flags)
{
	unsigned f = (flags & MSG_PEEK) ? XWAY_RECV_PEEK : 0;

	if (flags & MSG_TRUNC)
		return xway_chan_recv(c->chan, NULL, want, f);
	return xway_chan_recvv(c->chan, iov, iovcnt, f);
}

/* Reset the TCP connection (connect(AF_UNSPEC) sends the RST) after a
 * revert that cannot carry every byte: a loud failure, never a silent
 * loss. */
static void xway_revert_fail(struct xway_conn *c, const char *why, ssize_t n)
{
	struct sockaddr sa = { .sa_family = AF_UNSPEC };

	XLOG(XWAY_LOG_ERROR, "fd %d: the connection left the channel for TCP but "
	     "cannot continue (%s; %zd byte(s) of ours unconsumed): connection "
	     "reset", c->fd, why, n);
	real.connect(c->fd, &sa, sizeof(sa));
	atomic_store_explicit(&c->rst_state, 1, memory_order_relaxed);
}

int xway_io_revert(struct xway_conn *c)
{
	char *buf = NULL;
	ssize_t n = 0;
	unsigned f;
	int st, push = 0, was = -1;

	/* A client that never looked at the broker's decision (no call since
	 * connect): the leaver's revert implies "claimed"; take it first. */
	if (atomic_load_explicit(&c->state, memory_order_acquire) == XWAY_ST_PENDING &&
	    xway_pending_resolve(c, 0) == XWAY_ST_PENDING &&
	    xway_pending_resolve(c, 1) == XWAY_ST_PENDING) {
		XLOG(XWAY_LOG_ERROR, "fd %d: reverted to TCP while still pending: "
		     "connection reset", c->fd);
		return -ECONNRESET;
	}
	pthread_mutex_lock(&c->lock);
	st = atomic_load_explicit(&c->state, memory_order_acquire);
	if (st != XWAY_ST_ACCEL || !c->chan)
		goto out;
	was = c->reverted;
	f = xway_chan_reverted(c->chan);
	if (!c->reverted && (f & XWAY_REVERT_PEER_STOPPED) && !(f & XWAY_REVERT_PEER_FINAL)) {
		/* The leaver sets its second flag right after the first (a
		 * few instructions under its own lock): wait for it, bounded;
		 * a leaver killed in between leaves its ring undecided. */
		for (int i = 0; i < 2000 && !(f & XWAY_REVERT_PEER_FINAL); i++) {
			struct timespec nap = { 0, 1000000 };
			nanosleep(&nap, NULL);
			f = xway_chan_reverted(c->chan);
		}
		if (!(f & XWAY_REVERT_PEER_FINAL)) {
			c->reverted = 2;
			xway_revert_fail(c, "the leaving peer stopped half-way", 0);
			atomic_store_explicit(&c->state, XWAY_ST_FLUSH, memory_order_release);
			st = XWAY_ST_FLUSH;
			goto out;
		}
	}
	if (!c->reverted && (f & XWAY_REVERT_PEER_STOPPED)) {
		size_t cap = xway_chan_capacity(c->chan);

		c->reverted = 1;
		if (f & XWAY_REVERT_LEFT)
			XWARN("fd %d: both ends left the channel at once (each passed "
			      "its socket to a process without the shim): bytes of a "
			      "holder that already closed cannot be recovered", c->fd);
		buf = malloc(cap ? cap : 1);
		n = buf ? xway_chan_take_back(c->chan, buf, cap) : -ENOMEM;
		if (n < 0) {
			xway_revert_fail(c, strerror((int)-n), n);
			n = 0;
		} else if (n > 0 && atomic_load_explicit(&c->wr_shut, memory_order_relaxed)) {
			/* Our FIN already went out on TCP after the ring's
			 * EOF: these bytes can no longer precede it. */
			xway_revert_fail(c, "FIN already sent", n);
			n = 0;
		} else if (n > 0) {
			c->flush_buf = buf;
			c->flush_len = (size_t)n;
			c->flush_off = 0;
			buf = NULL;
			push = 1;
		}
		XINFO("fd %d: the peer left the channel (its socket was passed to a "
		      "process without the shim); continuing on plain TCP, %zd "
		      "byte(s) of ours re-sent on TCP first", c->fd, n);
	} else if (!c->reverted && (f & XWAY_REVERT_LEFT)) {
		c->reverted = 2;     /* the peer carries on; nothing is ours */
		XINFO("fd %d: left the channel (socket passed to a process without "
		      "the shim); continuing on plain TCP", c->fd);
	}
	/* Nothing left for us in the ring, and it is final: the channel is
	 * done here; owed bytes go first, then plain TCP. */
	if (c->reverted == 2 ||
	    (c->reverted == 1 && xway_chan_readable(c->chan) == 0)) {
		atomic_store_explicit(&c->state, XWAY_ST_FLUSH, memory_order_release);
		st = XWAY_ST_FLUSH;
	}
out:
	pthread_mutex_unlock(&c->lock);
	free(buf);
	/* A Xen connection has a broker at each end, and each record says it
	 * went back to TCP (reason left-channel), never silently.  (Local
	 * reverts keep their record: one broker, and the shims' logs.) */
	if (was == 0 && c->reverted && c->chan && !xway_lc_sandboxed &&
	    xway_chan_backend(c->chan) == XWAY_BACKEND_XEN)
		xway_report_fallback(c, c->side, XWAY_R_LEFT, c->reverted == 2 ?
				     "this end left the Xen channel for TCP (fork, exec, "
				     "urgent data or a socket passed on)" :
				     "the peer left the Xen channel; continuing on TCP");
	/* A reverted connection stays in the fd table as FLUSH (a thin
	 * pass-through to the socket) instead of being dropped: the epoll
	 * emulation tells "went back to TCP" (turn the registration into a
	 * direct one) from "closed" by the slots a dropped one no longer has. */
	if (push || st == XWAY_ST_FLUSH)
		xway_flush_owed(c, 1);
	return st;
}

/* Reverted but bytes of the leaver still in our ring: sends already go to
 * TCP, after what we took back. */
static ssize_t xway_reverted_send(struct xway_conn *c, const struct iovec *iov,
				  int iovcnt, int flags, int nb)
{
	struct msghdr m = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt };
	int r;

	if (atomic_load_explicit(&c->wr_shut, memory_order_relaxed))
		return xway_epipe(flags);
	r = xway_flush_owed(c, nb);
	if (r < 0)
		return r == -EPIPE ? xway_epipe(flags) : r;
	return XWAY_SYS(real.sendmsg(c->fd, &m, flags));
}

/* PENDING reader: returns 1 when the state changed (caller loops), or a
 * result to return. */
static long xway_pending_read_wait(struct xway_conn *c, int nb, long deadline)
{
	struct pollfd pf = { .fd = c->fd, .events = POLLIN | POLLRDHUP };

	if (xway_pending_resolve(c, 0) != XWAY_ST_PENDING)
		return 1;
	/* poll, not a peek: a failed connect's error must stay for SO_ERROR. */
	if (real.poll(&pf, 1, 0) > 0 && pf.revents) {
		xway_pending_resolve(c, 1);
		return 1;
	}
	if (atomic_load_explicit(&c->rd_shut, memory_order_relaxed))
		return 0;
	if (nb)
		return -EAGAIN;
	int left = xway_left(deadline);
	if (left == 0)
		return -EAGAIN;
	xway_last_sig = 0;
	int w = xway_chan_wait(c->chan, XWAY_EV_IN, c->fd,
			       left < 0 || left > XWAY_PENDING_SLICE_MS
			       ? XWAY_PENDING_SLICE_MS : left);
	if (w == -EINTR)
		return xway_restart_ok(c->rcvtimeo_ms) ? 1 : -EINTR;
	return w < 0 ? w : 1;
}

int xway_sock_rcvlowat(int fd)
{
	int v = 1;
	socklen_t l = sizeof(v);

	if (XWAY_SYS(real.getsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &v, &l)) < 0 || v < 1)
		v = 1;
	return v;
}

static ssize_t xway_io_recv_on(struct xway_conn *c, const struct iovec *iov, int iovcnt,
			       int flags)
{
	size_t want = xway_iov_len(iov, iovcnt), copied = 0;
	int nb = (flags & MSG_DONTWAIT) ||
		 atomic_load_explicit(&c->nonblock, memory_order_relaxed);
	int waitall = (flags & MSG_WAITALL) && !(flags & MSG_PEEK) && !nb;
	int peekall = (flags & MSG_WAITALL) && (flags & MSG_PEEK) && !nb;
	/* A blocking read returns once it has min(SO_RCVLOWAT, len) bytes
	 * (all of them under MSG_WAITALL); nonblocking ones return what
	 * there is.  A peek is not held back by the mark: peeking again
	 * would copy the same bytes twice. */
	size_t target = waitall ? want : 1;
	long deadline = c->rcvtimeo_ms > 0 ? xway_ms_now() + c->rcvtimeo_ms : -1;
	int extra_seen = nb;
	struct iovec sub[XWAY_IOV_MAX];

	if (!waitall && c->rcvlowat > 1 && !(flags & MSG_PEEK))
		target = (size_t)c->rcvlowat < want ? (size_t)c->rcvlowat : want;
	if (flags & MSG_OOB) {
		/* Urgent data only ever travels on TCP: a sender of it made
		 * the connection leave the channel first (xway_oob_leave). */
		int st = atomic_load_explicit(&c->state, memory_order_acquire);
		struct msghdr m = { .msg_iov = (struct iovec *)iov,
				    .msg_iovlen = (size_t)iovcnt };

		if (st == XWAY_ST_ACCEL && c->chan && !c->reverted &&
		    (xway_chan_poll(c->chan) & XWAY_EV_REVERT))
			xway_io_revert(c);
		st = atomic_load_explicit(&c->state, memory_order_acquire);
		if (st == XWAY_ST_FLUSH || (st == XWAY_ST_ACCEL && c->reverted))
			return XWAY_SYS(real.recvmsg(c->fd, &m, flags));
		return -EINVAL;      /* none (the kernel's answer when none) */
	}
	for (int rounds = 0;; rounds++) {
		int st = atomic_load_explicit(&c->state, memory_order_acquire);
		ssize_t r;

		if (st == XWAY_ST_CLOSED)
			return copied ? (ssize_t)copied : -EBADF;
		if (st == XWAY_ST_FLUSH) {
			struct msghdr m = { .msg_iov = (struct iovec *)iov,
					    .msg_iovlen = (size_t)iovcnt };
			if (copied)
				return (ssize_t)copied;
			/* Bytes we owe to TCP go out before we wait for
			 * an answer to them. */
			for (int i = 0; i < 100000 && xway_flush_pending(c); i++) {
				struct pollfd pf = { .fd = c->fd, .events = POLLIN | POLLOUT };
				long fr = xway_flush_owed(c, 1);
				if (fr < 0 && fr != -EAGAIN)
					break;
				if (!xway_flush_pending(c) || nb)
					break;
				if (real.poll(&pf, 1, -1) > 0 && (pf.revents & ~POLLOUT))
					break;          /* readable: read meanwhile */
			}
			if (!xway_flush_pending(c) && !c->reverted)
				xway_fd_drop_conn(c);     /* plain TCP from now on */
			return XWAY_SYS(real.recvmsg(c->fd, &m, flags));
		}
		if (st == XWAY_ST_PENDING) {
			long p = xway_pending_read_wait(c, nb, deadline);
			if (p != 1)
				return p;
			continue;
		}
		/* ACCEL */
		if (atomic_load_explicit(&c->rst_state, memory_order_relaxed) == 2)
			return (ssize_t)copied;
		if (copied) {
			int n = xway_iov_skip(iov, iovcnt, copied, sub);
			r = xway_chan_in(c, sub, n, want - copied, flags);
		} else {
			r = xway_chan_in(c, iov, iovcnt, want, flags);
		}
		if (r > 0 && peekall && (size_t)r < want &&
		    !(xway_chan_poll(c->chan) & (XWAY_EV_RDHUP | XWAY_EV_RST |
						 XWAY_EV_ERR | XWAY_EV_HUP))) {
			/* MSG_PEEK|MSG_WAITALL: the kernel waits until len
			 * bytes are queued; a timeout or a signal (even under
			 * SA_RESTART: something was copied) returns the part.
			 * The ring wakes on "readable", which it already is:
			 * look again in 1 ms slices. */
			struct timespec nap = { 0, 1000000 };
			int saved = errno, slept;

			if (xway_left(deadline) == 0)
				return r;
			slept = nanosleep(&nap, NULL);
			errno = saved;
			if (slept < 0)
				return r;                 /* EINTR */
			continue;
		}
		if (r > 0) {
			copied += (size_t)r;
			if (copied >= target || copied >= want)
				return (ssize_t)copied;
			continue;
		}
		if (r == 0 && want > 0 && !copied &&
		    xway_chan_backend(c->chan) == XWAY_BACKEND_XEN) {
			long t = xway_xen_end(c, nb, deadline);

			if (t == 1)
				continue;
			if (t <= 0 && t != -ECONNRESET)
				return t;                /* EOF, EAGAIN, EINTR */
			int prev = atomic_exchange_explicit(&c->rst_state, 2,
							    memory_order_relaxed);
			if (prev == 2)
				return 0;
			/* The kernel reports a reset once: the next write gets
			 * EPIPE (tcpsem `rst` across domains: it succeeded). */
			atomic_store_explicit(&c->epipe_state, 1, memory_order_relaxed);
			return t;
		}
		if (r == 0 && want > 0)
			return (ssize_t)copied;                     /* EOF */
		if (r == -ECANCELED) {
			/* Reverted to TCP and the ring is drained: the rest
			 * comes from the socket (MSG_WAITALL keeps waiting). */
			int rs = xway_io_revert(c);
			if (rs < 0)
				return copied ? (ssize_t)copied : rs;
			if (copied && waitall) {
				struct msghdr m = { .msg_iov = sub };
				m.msg_iovlen = (size_t)xway_iov_skip(iov, iovcnt, copied, sub);
				long t = XWAY_SYS(real.recvmsg(c->fd, &m, flags));
				return t > 0 ? (ssize_t)(copied + (size_t)t) : (ssize_t)copied;
			}
			if (copied)
				return (ssize_t)copied;
			if (atomic_load_explicit(&c->state, memory_order_acquire) ==
			    XWAY_ST_ACCEL) {
				/* Our tree still holds it on the channel elsewhere
				 * (another thread between calls): read TCP. */
				struct msghdr m = { .msg_iov = (struct iovec *)iov,
						    .msg_iovlen = (size_t)iovcnt };
				return XWAY_SYS(real.recvmsg(c->fd, &m, flags));
			}
			continue;
		}
		if (r == -ECONNRESET || r == -EPROTO) {
			if (copied)
				return (ssize_t)copied;
			int prev = atomic_exchange_explicit(&c->rst_state, 2,
							    memory_order_relaxed);
			if (prev >= 2)
				return 0;       /* reported (3: to a write) */
			xway_await_tcp_reset(c);
			/* The kernel reports a reset once, to whichever call
			 * comes first: the next write gets EPIPE. */
			atomic_store_explicit(&c->epipe_state, 1, memory_order_relaxed);
			return -ECONNRESET;
		}
		if (r < 0 && r != -EAGAIN)
			return copied ? (ssize_t)copied : r;
		if (r == 0) {
			/* want == 0: recv(fd, buf, 0, 0) returns 0 once data,
			 * EOF or reset is there; blocks (or EAGAIN) before. */
			if (xway_chan_poll(c->chan) & (XWAY_EV_IN | XWAY_EV_RST |
						       XWAY_EV_RDHUP))
				return 0;
		}
		/* The ring is empty.  A dead or closed peer shows on TCP. */
		if (extra_seen || atomic_load_explicit(&c->tcp_eof, memory_order_relaxed)) {
			long t = atomic_load_explicit(&c->tcp_eof, memory_order_relaxed)
				 ? 0 : xway_tcp_peek(c);
			if (t != -EAGAIN) {
				/* FIN/RST went out after the peer's last
				 * publish: look at the ring once more. */
				atomic_thread_fence(memory_order_acquire);
				r = copied ? 0 : xway_chan_in(c, iov, iovcnt, want, flags);
				if (r > 0 && want > 0)
					return (ssize_t)r;
				if (copied)
					return (ssize_t)copied;
				if (t == 0 && r == -EAGAIN && want > 0 &&
				    atomic_load_explicit(&c->rst_state, memory_order_relaxed) == 0 &&
				    xway_died_unread(c))
					t = -ECONNRESET;     /* what the kernel would have sent */
				if (t == 0 ||
				    atomic_load_explicit(&c->rst_state, memory_order_relaxed) >= 2)
					return 0;
				atomic_store_explicit(&c->rst_state, 2, memory_order_relaxed);
				atomic_store_explicit(&c->epipe_state, 1, memory_order_relaxed);
				return t;
			}
		}
		if (atomic_load_explicit(&c->rd_shut, memory_order_relaxed))
			return (ssize_t)copied;
		if (nb)
			return copied ? (ssize_t)copied : -EAGAIN;
		int left = xway_left(deadline);
		if (left == 0)
			return copied ? (ssize_t)copied : -EAGAIN;
		xway_last_sig = 0;
		/* TCP payload of a holder without the shim (xway_tcp_peek)
		 * keeps the socket readable: watch the ring alone, in slices
		 * (a dead peer still shows at the next look). */
		int sliced = atomic_load_explicit(&c->tcp_payload, memory_order_relaxed);
		int w = xway_chan_wait(c->chan, XWAY_EV_IN, sliced ? -1 : c->fd,
				       sliced && (left < 0 || left > XWAY_PENDING_SLICE_MS)
				       ? XWAY_PENDING_SLICE_MS : left);
		if (w == 0 && sliced && xway_left(deadline) != 0) {
			extra_seen = 1;
			continue;
		}
		if (w == 0)
			return copied ? (ssize_t)copied : -EAGAIN;   /* SO_RCVTIMEO */
		if (w == -EINTR) {
			if (copied)
				return (ssize_t)copied;
			if (!xway_restart_ok(c->rcvtimeo_ms))
				return -EINTR;
			continue;
		}
		if (w < 0)
			return copied ? (ssize_t)copied : w;
		extra_seen = (w & XWAY_EV_EXTRA) != 0;
	}
}

/* Writer whose ring is full and whose wait saw the TCP socket: is the peer
 * gone?  A FIN explained by the peer's own SHUT_WR (EOF in our incoming
 * ring) is not; the peer may still read. */
static int xway_peer_gone(struct xway_conn *c)
{
	if (xway_chan_poll(c->chan) & XWAY_EV_RDHUP)
		return 0;
	return xway_tcp_peek(c) != -EAGAIN;
}

/*
 * send(MSG_OOB) on a connection on the channel: urgent data has no place
 * there, so the connection leaves it for TCP as a process without the
 * shim would make it (xway_chan_revert: what we produced stays in the ring
 * for the peer, who reads it before TCP and re-sends on TCP what it had
 * produced for us), and the send goes to the socket with MSG_OOB.  Local
 * rings and Xen channels alike (a Xen leave refused, with peeked bytes in
 * its stash, keeps the bytes inline on the channel, without SIGURG).
 */
static void xway_oob_leave(struct xway_conn *c)
{
	int st = atomic_load_explicit(&c->state, memory_order_acquire);

	if (st == XWAY_ST_PENDING && xway_pending_resolve(c, 0) == XWAY_ST_PENDING)
		xway_pending_resolve(c, 1);
	st = atomic_load_explicit(&c->state, memory_order_acquire);
	if (st != XWAY_ST_ACCEL || !c->chan || c->reverted)
		return;
	if (xway_chan_revert(c->chan) < 0)
		return;
	XINFO("fd %d: MSG_OOB: urgent data has no place on the channel; the "
	      "connection continues on plain TCP", c->fd);
	xway_io_revert(c);
}

static ssize_t xway_pending_send(struct xway_conn *c, const struct iovec *iov,
				 int iovcnt)
{
	ssize_t r;

	pthread_mutex_lock(&c->lock);
	if (atomic_load_explicit(&c->state, memory_order_acquire) != XWAY_ST_PENDING)
		r = -EAGAIN - 100000;                       /* state moved: retry */
	else
		r = xway_chan_sendv(c->chan, iov, iovcnt);
	pthread_mutex_unlock(&c->lock);
	return r;
}

static ssize_t xway_io_send_on(struct xway_conn *c, const struct iovec *iov, int iovcnt,
			       int flags)
{
	size_t total = xway_iov_len(iov, iovcnt), sent = 0;
	int nb = (flags & MSG_DONTWAIT) ||
		 atomic_load_explicit(&c->nonblock, memory_order_relaxed);
	long deadline = c->sndtimeo_ms > 0 ? xway_ms_now() + c->sndtimeo_ms : -1;
	struct iovec sub[XWAY_IOV_MAX];

	/* MSG_OOB: the channel has no urgent pointer; the connection leaves it
	 * for TCP (xway_oob_leave) and the kernel does the rest: the urgent
	 * byte out of the stream, SIGURG, POLLPRI, SIOCATMARK.  `flags` is
	 * without it below, `oob` puts it back on the real socket's calls. */
	int oob = flags & MSG_OOB;

	flags &= ~MSG_OOB;
	if (oob)
		xway_oob_leave(c);
	for (int rounds = 0;; rounds++) {
		int st = atomic_load_explicit(&c->state, memory_order_acquire);
		const struct iovec *v = iov;
		int vn = iovcnt;
		ssize_t r;

		if (st == XWAY_ST_CLOSED)
			return sent ? (ssize_t)sent : -EBADF;
		if (st == XWAY_ST_FLUSH) {
			if (sent)
				return (ssize_t)sent;
			if (atomic_load_explicit(&c->wr_shut, memory_order_relaxed))
				return xway_epipe(flags);
			r = xway_flush_owed(c, nb);
			if (r < 0)
				return r == -EPIPE ? xway_epipe(flags) : r;
			struct msghdr m = { .msg_iov = (struct iovec *)iov,
					    .msg_iovlen = (size_t)iovcnt };
			r = XWAY_SYS(real.sendmsg(c->fd, &m, flags | oob));
			if (c->flush_len == 0 && !c->reverted)
				xway_fd_drop_conn(c);     /* plain TCP from now on */
			return r;
		}
		if (atomic_load_explicit(&c->wr_shut, memory_order_relaxed))
			return sent ? (ssize_t)sent : xway_epipe(flags);
		int rst = atomic_load_explicit(&c->rst_state, memory_order_relaxed);
		int xen = st == XWAY_ST_ACCEL && xway_chan_backend(c->chan) == XWAY_BACKEND_XEN;

		if (st == XWAY_ST_ACCEL &&
		    ((xen && rst >= 2) || (rst == 2 && xway_died_unread(c))))
			/* recv reported the reset the dead peer's kernel sent
			 * (xway_died_unread), or a read or write reported a
			 * Xen peer's RST, which leaves on TCP before its end
			 * of the vchan is closed (the ring may still take a
			 * write: tcpsem `rst`'s last check and `rstwrite`'s
			 * second, seen in the test bed): writes fail as after
			 * a real one. */
			return sent ? (ssize_t)sent : xway_epipe(flags);
		if (sent) {
			vn = xway_iov_skip(iov, iovcnt, sent, sub);
			v = sub;
		}
		/* poll showed the TCP socket's error (a Xen peer's RST)
		 * while its vchan end may still be open: the first write
		 * takes the socket's pending error, as kernel TCP's (tcpsem
		 * `rstwrite` across domains). */
		long terr = xen && !sent &&
			    atomic_load_explicit(&c->tcp_err_seen, memory_order_relaxed) &&
			    atomic_load_explicit(&c->epipe_state, memory_order_relaxed) == 0
			    ? xway_tcp_peek(c) : -EAGAIN;

		if (terr < 0 && terr != -EAGAIN && terr != -ECONNRESET)
			return terr;
		if (terr == -ECONNRESET) {
			r = -ECONNRESET;
		} else if (st == XWAY_ST_PENDING) {
			r = xway_pending_send(c, v, vn);
			if (r == -EAGAIN - 100000)
				continue;
		} else {
			r = xway_chan_sendv(c->chan, v, vn);
		}
		if (r > 0 || (r == 0 && total == 0)) {
			sent += (size_t)r;
			if (sent >= total)
				return (ssize_t)sent;
			continue;
		}
		if (r == -ECANCELED) {
			/* Reverted to TCP: what we took back goes first. */
			int rs = xway_io_revert(c);
			if (rs < 0)
				return sent ? (ssize_t)sent : rs;
			if (rs != XWAY_ST_ACCEL)
				continue;                     /* FLUSH path */
			if (sent) {
				ssize_t t = xway_reverted_send(c, v, vn, flags | oob, nb);
				return t > 0 ? (ssize_t)(sent + (size_t)t) : (ssize_t)sent;
			}
			return xway_reverted_send(c, iov, iovcnt, flags | oob, nb);
		}
		/* A Xen peer's end is gone: an abortive close (SO_LINGER
		 * {1,0}, unread data) sent its RST on the TCP socket, and a
		 * write after a reset fails with ECONNRESET first, as kernel
		 * TCP's (tcpsem `rstwrite` across domains: it succeeded). */
		if (r == -EPIPE && !sent && xway_chan_backend(c->chan) == XWAY_BACKEND_XEN &&
		    atomic_load_explicit(&c->epipe_state, memory_order_relaxed) == 0 &&
		    xway_tcp_peek(c) == -ECONNRESET)
			r = -ECONNRESET;
		if (r == -EPIPE) {
			/* The peer closed its reading side (our own SHUT_WR
			 * was checked above).  Kernel TCP: the first write
			 * after that still succeeds (the peer answers it with
			 * RST); later ones fail with EPIPE. */
			if (sent)
				return (ssize_t)sent;
			if (atomic_exchange_explicit(&c->epipe_state, 1,
						     memory_order_relaxed) == 0)
				return (ssize_t)total;
			return xway_epipe(flags);
		}
		if (r == -ECONNRESET || r == -EPROTO) {
			if (sent)
				return (ssize_t)sent;
			/* First write after a reset: ECONNRESET, no signal.
			 * Reported once: reads then drain the ring and give 0
			 * (rst_state 3), not ECONNRESET again. */
			if (atomic_exchange_explicit(&c->epipe_state, 1,
						     memory_order_relaxed) == 0) {
				int zero = 0;
				atomic_compare_exchange_strong_explicit(&c->rst_state, &zero, 3,
									memory_order_relaxed,
									memory_order_relaxed);
				xway_await_tcp_reset(c);
				return -ECONNRESET;
			}
			return xway_epipe(flags);
		}
		if (r < 0 && r != -EAGAIN)
			return sent ? (ssize_t)sent : r;
		/* The ring is full. */
		if (st == XWAY_ST_PENDING && xway_pending_resolve(c, 0) != XWAY_ST_PENDING)
			continue;
		if (nb) {
			if (!sent && st == XWAY_ST_ACCEL && xway_peer_gone(c))
				return xway_epipe(flags);
			return sent ? (ssize_t)sent : -EAGAIN;
		}
		int left = xway_left(deadline);
		if (left == 0)
			return sent ? (ssize_t)sent : -EAGAIN;
		if (st == XWAY_ST_PENDING && (left < 0 || left > XWAY_PENDING_SLICE_MS))
			left = XWAY_PENDING_SLICE_MS;
		int tcp_fd = (xway_chan_poll(c->chan) & XWAY_EV_RDHUP) ? -1 : c->fd;
		xway_last_sig = 0;
		int w = xway_chan_wait(c->chan, XWAY_EV_OUT, tcp_fd, left);
		if (w == 0 && st == XWAY_ST_ACCEL)
			return sent ? (ssize_t)sent : -EAGAIN;      /* SO_SNDTIMEO */
		if (w == -EINTR) {
			if (sent)
				return (ssize_t)sent;
			if (!xway_restart_ok(c->sndtimeo_ms))
				return -EINTR;
			continue;
		}
		if (w < 0)
			return sent ? (ssize_t)sent : w;
		if ((w & XWAY_EV_EXTRA) && !(w & XWAY_EV_OUT)) {
			if (st == XWAY_ST_PENDING) {
				xway_pending_resolve(c, 1);
			} else if (xway_peer_gone(c)) {
				return sent ? (ssize_t)sent : xway_epipe(flags);
			}
		}
	}
}

/*
 * What an accelerated connection answered the application, for the debug
 * log: the first error of each direction other than "try again" or "a
 * signal", and the first EOF, with the channel's view at that moment.  An
 * application that ends a session by itself on such an answer (telnetd's
 * cleanup on any write error) leaves no other trace.  One branch on the
 * data path: r < 0 or 0 only.
 */
static ssize_t xway_io_note(struct xway_conn *c, int dir, size_t want, ssize_t r)
{
	if (__builtin_expect(r > 0, 1) || xway_cfg.log_level < XWAY_LOG_DEBUG ||
	    r == -EAGAIN || r == -EINTR || (r == 0 && (dir || !want)))
		return r;
	if (atomic_fetch_or_explicit(&c->noted, 1 << dir, memory_order_relaxed) & (1 << dir))
		return r;
	int st = atomic_load_explicit(&c->state, memory_order_acquire);

	XDBG("fd %d: %s: %s returned to the application (state %d, channel events %#x, "
	     "backend %s)", c->fd, dir ? "send" : "recv", r ? strerror((int)-r) : "EOF",
	     st, c->chan && !c->reverted ? xway_chan_poll(c->chan) : 0,
	     !c->chan ? "none" : c->reverted ? "reverted to TCP"
	     : xway_chan_backend(c->chan) == XWAY_BACKEND_XEN ? "xen" : "local");
	return r;
}

ssize_t xway_io_recv(struct xway_conn *c, const struct iovec *iov, int iovcnt,
		     int flags)
{
	return xway_io_note(c, 0, xway_iov_len(iov, iovcnt),
			    xway_io_recv_on(c, iov, iovcnt, flags));
}

ssize_t xway_io_send(struct xway_conn *c, const struct iovec *iov, int iovcnt,
		     int flags)
{
	return xway_io_note(c, 1, 1, xway_io_send_on(c, iov, iovcnt, flags));
}

ssize_t xway_io_sendfile(struct xway_conn *c, int in_fd, off_t *offset,
			 size_t count)
{
	char buf[32768];
	size_t done = 0;
	off_t pos = offset ? *offset : 0;

	while (done < count) {
		size_t want = count - done < sizeof(buf) ? count - done : sizeof(buf);
		long n = offset ? XWAY_SYS(pread(in_fd, buf, want, pos))
				: XWAY_SYS(real.read(in_fd, buf, want));
		if (n < 0)
			return done ? (ssize_t)done : n;
		if (n == 0)
			break;
		struct iovec iov = { buf, (size_t)n };
		ssize_t s = xway_io_send(c, &iov, 1, 0);
		if (s < 0) {
			if (!offset)
				lseek(in_fd, -n, SEEK_CUR);   /* un-read what was not sent */
			if (done == 0)
				return s;
			break;
		}
		if (s < n && !offset)
			lseek(in_fd, -(n - s), SEEK_CUR);
		done += (size_t)s;
		pos += s;
		if (s < n)
			break;
	}
	if (offset)
		*offset = pos;
	return (ssize_t)done;
}

int xway_io_shutdown(struct xway_conn *c, int how)
{
	int st = atomic_load_explicit(&c->state, memory_order_acquire);

	if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR)
		return -EINVAL;
	if (st == XWAY_ST_PENDING && (how == SHUT_WR || how == SHUT_RDWR)) {
		/* The EOF goes into ring 0: it travels with the bytes wherever
		 * the broker's decision sends them.  The TCP FIN waits for
		 * that decision (wr_shut 3): sent at once if claimed, after the
		 * owed bytes if withdrawn. */
		int pending = 0;
		pthread_mutex_lock(&c->lock);
		if (atomic_load_explicit(&c->state, memory_order_acquire) == XWAY_ST_PENDING) {
			xway_chan_shutdown_wr(c->chan);
			atomic_store_explicit(&c->wr_shut, 3, memory_order_relaxed);
			pending = 1;
		}
		pthread_mutex_unlock(&c->lock);
		if (pending) {
			if (how == SHUT_RDWR)
				atomic_store_explicit(&c->rd_shut, 1, memory_order_relaxed);
			/* The kernel's answer for this socket (ENOTCONN while
			 * not connected) without sending the FIN yet. */
			return how == SHUT_RDWR ? (int)XWAY_SYS(real.shutdown(c->fd, SHUT_RD))
						: 0;
		}
		st = atomic_load_explicit(&c->state, memory_order_acquire);
	}
	if (st == XWAY_ST_FLUSH && (how == SHUT_WR || how == SHUT_RDWR) &&
	    c->flush_len > c->flush_off) {
		/* Owed bytes first; the FIN follows them (xway_flush_owed). */
		atomic_store_explicit(&c->wr_shut, 2, memory_order_relaxed);
		int r = xway_flush_owed(c, 0);
		return r == -EAGAIN ? 0 : r;
	}
	if (st == XWAY_ST_ACCEL && (how == SHUT_WR || how == SHUT_RDWR)) {
		/* Ring EOF before the TCP FIN: the peer drains the ring
		 * after it sees the FIN. */
		xway_chan_shutdown_wr(c->chan);
		atomic_store_explicit(&c->wr_shut, 1, memory_order_relaxed);
	}
	if (how == SHUT_RD || how == SHUT_RDWR)
		atomic_store_explicit(&c->rd_shut, 1, memory_order_relaxed);
	return (int)XWAY_SYS(real.shutdown(c->fd, how));
}

int xway_io_ioctl(struct xway_conn *c, unsigned long req, void *arg)
{
	int st = atomic_load_explicit(&c->state, memory_order_acquire);

	if (req == FIONBIO) {
		long r = XWAY_SYS(real.ioctl(c->fd, req, arg));
		if (r == 0 && arg)
			atomic_store_explicit(&c->nonblock, *(int *)arg != 0,
					      memory_order_relaxed);
		return (int)r;
	}
	/* A client that has not looked at the broker's decision since its
	 * connect: bytes the server sent since its claim are in the ring,
	 * not on the socket (the kernel's FIONREAD said 0). */
	if (st == XWAY_ST_PENDING && (req == FIONREAD || req == SIOCOUTQ))
		st = xway_pending_resolve(c, 0);
	if (st == XWAY_ST_PENDING && req == SIOCOUTQ && arg) {
		size_t n = xway_chan_unsent(c->chan);     /* our bytes wait in ring 0 */
		*(int *)arg = n > INT_MAX ? INT_MAX : (int)n;
		return 0;
	}
	if (st == XWAY_ST_ACCEL && (req == FIONREAD || req == SIOCOUTQ) && arg &&
	    !(xway_chan_poll(c->chan) & XWAY_EV_REVERT)) {
		size_t n = req == FIONREAD ? xway_chan_readable(c->chan)
					   : xway_chan_unsent(c->chan);
		*(int *)arg = n > INT_MAX ? INT_MAX : (int)n;
		return 0;
	}
	return (int)XWAY_SYS(real.ioctl(c->fd, req, arg));
}

short xway_io_poll_mask(struct xway_conn *c, short events)
{
	int st = atomic_load_explicit(&c->state, memory_order_acquire);
	struct pollfd pf = { .fd = c->fd, .events = events | POLLRDHUP };
	short m = 0;

	if (st == XWAY_ST_PENDING) {
		if (real.poll(&pf, 1, 0) > 0 && (pf.revents & (POLLIN | POLLRDHUP |
							       POLLERR | POLLHUP)))
			st = xway_pending_resolve(c, 1);
		else
			st = xway_pending_resolve(c, 0);
		if (st == XWAY_ST_PENDING) {
			unsigned e = xway_chan_poll(c->chan);
			m = (short)(pf.revents & (POLLERR | POLLHUP));
			/* Writable once TCP is connected and the ring has room. */
			if ((pf.revents & POLLOUT) && (e & XWAY_EV_OUT))
				m |= POLLOUT;
			return m & (short)(events | POLLERR | POLLHUP);
		}
	}
	if (st != XWAY_ST_ACCEL) {
		pf.events = events;
		real.poll(&pf, 1, 0);
		return pf.revents;
	}
	unsigned e = xway_chan_poll(c->chan);
	if (e & XWAY_EV_REVERT) {
		/* Reverted: the leaver's bytes still in the ring are readable;
		 * everything else is the socket's. */
		pf.events = events;
		int rs = xway_io_revert(c);
		if (rs < 0)
			return POLLERR | POLLHUP;
		if (rs == XWAY_ST_ACCEL) {
			real.poll(&pf, 1, 0);
			return (short)((pf.revents | POLLIN) & (events | POLLERR | POLLHUP));
		}
		real.poll(&pf, 1, 0);
		return pf.revents;
	}
	/* A Xen channel that ended and is drained is not readable: the FIN
	 * or reset behind it shows on the TCP socket below (xway_xen_end). */
	if ((e & XWAY_EV_HUP) && xway_chan_backend(c->chan) == XWAY_BACKEND_XEN &&
	    xway_chan_readable(c->chan) == 0)
		e &= ~(XWAY_EV_IN | XWAY_EV_RDHUP);
	if (e & (XWAY_EV_IN | XWAY_EV_RST))
		m |= POLLIN;
	/* SO_RCVLOWAT: data below the mark is not "readable" (EOF, reset
	 * and errors still are). */
	if (c->rcvlowat > 1 && (m & POLLIN) &&
	    !(e & (XWAY_EV_RST | XWAY_EV_RDHUP | XWAY_EV_ERR)) &&
	    xway_chan_readable(c->chan) < (size_t)c->rcvlowat)
		m &= (short)~POLLIN;
	if ((e & XWAY_EV_OUT) || atomic_load_explicit(&c->wr_shut, memory_order_relaxed))
		m |= POLLOUT;
	if (e & XWAY_EV_RDHUP)
		m |= POLLRDHUP | POLLIN;
	if (e & (XWAY_EV_RST | XWAY_EV_ERR))
		m |= POLLHUP | POLLRDHUP | POLLIN | POLLOUT;
	/* POLLERR while the reset is not yet reported (the kernel's pending
	 * sk_err): a read or write that returned ECONNRESET took it. */
	if ((e & XWAY_EV_ERR) ||
	    ((e & XWAY_EV_RST) && atomic_load_explicit(&c->rst_state, memory_order_relaxed) < 2))
		m |= POLLERR;
	if (!(m & POLLIN)) {
		/* Ring quiet: a dead peer shows on the TCP socket. */
		pf.events = POLLIN | POLLRDHUP;
		if (real.poll(&pf, 1, 0) > 0) {
			if (pf.revents & (POLLIN | POLLRDHUP))
				m |= POLLIN | POLLRDHUP;
			if (pf.revents & POLLERR)
				m |= POLLERR;
			if (pf.revents & POLLHUP)
				m |= POLLHUP;
			/* Remembered for the next write (xway_io_send): a
			 * Xen peer's reset can show here first. */
			if ((pf.revents & (POLLERR | POLLHUP)) &&
			    xway_chan_backend(c->chan) == XWAY_BACKEND_XEN)
				atomic_store_explicit(&c->tcp_err_seen, 1, memory_order_relaxed);
		}
	}
	if ((m & POLLRDHUP) && atomic_load_explicit(&c->wr_shut, memory_order_relaxed))
		m |= POLLHUP;
	return m & (short)(events | POLLERR | POLLHUP);
}
