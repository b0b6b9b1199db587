/* SPDX-License-Identifier: MIT */
/*
 * poll, ppoll, select, pselect (and the fortify variants) over sets that
 * contain accelerated fds.  A set without an fd of ours goes straight to
 * libc.  Otherwise the level of each fd of ours comes from the ring
 * (xway_io_poll_mask: what kernel TCP would report), and when nothing is
 * ready the call sleeps in ONE real ppoll() on: the app's other fds as
 * given, each connection's channel notification fd (armed first with
 * xway_chan_arm: the peer writes it only when we asked, notify-if-waiting),
 * and each connection's real TCP socket (its FIN/RST is how a dead peer
 * shows).  After a wake-up the levels are recomputed and a wake that made
 * nothing ready (spurious, or a TCP event that changes no bit) loops with
 * the remaining time.  Nothing spins: an idle set sleeps in the kernel.
 * EINTR is returned as the kernel does (also under SA_RESTART); select
 * writes the remaining time back.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "errno.h"
#include "lifecycle.h"

/* glibc declares poll/ppoll's array __write_only__ (for fortify): GCC then
 * takes our reads of the app's events as reads of uninitialised memory. */
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

XWAY_EXPORT int poll(struct pollfd *fds, nfds_t n, int tmo);
XWAY_EXPORT int __poll_chk(struct pollfd *fds, nfds_t n, int tmo, size_t fdslen);
XWAY_EXPORT int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *tmo,
		      const sigset_t *mask);
XWAY_EXPORT int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *tmo,
			    const sigset_t *mask, size_t fdslen);
XWAY_EXPORT int select(int n, fd_set *r, fd_set *w, fd_set *e, struct timeval *tmo);
XWAY_EXPORT int pselect(int n, fd_set *r, fd_set *w, fd_set *e,
			const struct timespec *tmo, const sigset_t *mask);
extern void __chk_fail(void) __attribute__((noreturn));

#define XWAY_POLL_STACK 32
/* Wake-ups that made nothing ready before we give up looping and let the
 * caller see 0 early (never reached in practice: each one needs a real
 * event; bounds the loop as the project rules ask). */
#define XWAY_POLL_MAX_SPURIOUS 1000000

int64_t xway_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t xway_deadline_ns(const struct timespec *rel)
{
	if (!rel)
		return -1;
	if (rel->tv_sec > INT64_MAX / 1000000000 / 2)
		return -1;                      /* effectively forever */
	return xway_now_ns() + (int64_t)rel->tv_sec * 1000000000 + rel->tv_nsec;
}

const struct timespec *xway_left_ts(int64_t deadline, struct timespec *buf)
{
	int64_t left;

	if (deadline < 0)
		return NULL;
	left = deadline - xway_now_ns();
	if (left < 0)
		left = 0;
	buf->tv_sec = left / 1000000000;
	buf->tv_nsec = left % 1000000000;
	return buf;
}

int xway_poll_on_chan(struct xway_conn *c)
{
	int st = atomic_load_explicit(&c->state, memory_order_acquire);

	return (st == XWAY_ST_ACCEL || st == XWAY_ST_PENDING) && c->chan;
}

short xway_poll_level(struct xway_conn *c, short events)
{
	short m;

	/* A withdrawn offer owes ring-0 bytes to TCP: an app that only polls
	 * (waiting for the reply to them) must see them go out. */
	if (atomic_load_explicit(&c->state, memory_order_acquire) == XWAY_ST_FLUSH)
		xway_flush_owed(c, 1);
	m = xway_io_poll_mask(c, (short)(POLLIN | POLLOUT | POLLRDHUP | POLLPRI));

	if (m & POLLIN)
		m |= POLLRDNORM;
	if (m & POLLOUT)
		m |= POLLWRNORM;
	return m & (short)(events | POLLERR | POLLHUP);
}

/* The channel events a poll for `events` needs to be woken for. */
static unsigned xway_chan_events(short events)
{
	unsigned ev = 0;

	if (events & (POLLIN | POLLRDNORM | POLLRDBAND | POLLPRI | POLLRDHUP))
		ev |= XWAY_EV_IN | XWAY_EV_RDHUP | XWAY_EV_RST;
	if (events & (POLLOUT | POLLWRNORM | POLLWRBAND))
		ev |= XWAY_EV_OUT | XWAY_EV_HUP;
	return ev | XWAY_EV_ERR;
}

/* One fd of ours during a call. */
struct xway_pw {
	struct xway_conn *c;
	nfds_t idx;        /* in the app's array */
	short  tcp_ev;     /* what we still watch on the TCP socket */
	int    chan_slot;  /* in the real array, -1: none */
	int    tcp_slot;
	unsigned sleeping; /* channel events we are registered as a sleeper
			      for (xway_chan_sleeper), 0: not registered */
};

/* Leave the endpoint's sleepers (after the real wait returned, before we
 * drain: a drain of ours then passes nothing back to ourselves). */
static void xway_poll_unsleep(struct xway_pw *w, int nw)
{
	for (int k = 0; k < nw; k++) {
		if (w[k].sleeping)
			xway_chan_sleeper(w[k].c->chan, w[k].sleeping, -1);
		w[k].sleeping = 0;
	}
}

/*
 * We drained the notification fd and return with c ready.  An epoll
 * instance of this process watching c (its records register the same
 * eventfd EPOLLET and never drain it) may not have harvested the event
 * yet: the kernel re-checks the eventfd then and drops an event whose fd
 * is no longer readable.  Give the wake-up back (one write).  Only when we
 * return ready: a poll()er that goes back to sleep never writes, so no
 * two waiters can keep waking each other; the next poll() that sleeps
 * after the app consumed the data wakes once, drains, and sleeps.
 */
static void xway_poll_give_back(struct xway_conn *c)
{
	static const uint64_t one = 1;
	int saved = errno;

	/* Relaxed: a hint; a record added meanwhile arms and computes its
	 * level itself at ADD. */
	/* Local rings only: their notification fd is an eventfd.  A Xen
	 * channel's is the event-channel device, where a write means
	 * "unmask these ports" and cannot re-raise an event: there, a
	 * poll() and an epoll instance of one process watching the same
	 * connection at once can still lose the epoll's wake-up (a known
	 * gap, shim/README.md). */
	if (atomic_load_explicit(&c->ep_refs, memory_order_relaxed) > 0 &&
	    xway_poll_on_chan(c) &&
	    xway_chan_backend(c->chan) == XWAY_BACKEND_LOCAL)
		(void)real.write(xway_chan_pollfd(c->chan), &one, sizeof(one));
	errno = saved;
}

static int xway_poll_valid_ts(const struct timespec *ts)
{
	return !ts || (ts->tv_sec >= 0 && ts->tv_nsec >= 0 && ts->tv_nsec < 1000000000);
}

/*
 * The core: fds[] holds at least one fd of ours.  Returns the count of
 * entries with revents, 0 on timeout, or -errno.
 */
static int xway_poll_do(struct pollfd *fds, nfds_t n, int64_t deadline,
			const sigset_t *mask)
{
	struct pollfd pstack[XWAY_POLL_STACK * 2];
	struct xway_pw wstack[XWAY_POLL_STACK];
	unsigned char mstack[XWAY_POLL_STACK];
	struct pollfd *p = pstack;
	struct xway_pw *w = wstack;
	unsigned char *mine = mstack;
	int nw = 0, ret = 0, compact = 0;

	if (n > (nfds_t)INT_MAX / 2)
		return -EINVAL;
	if (n > XWAY_POLL_STACK) {
		p = malloc(sizeof(*p) * n * 2);
		w = malloc(sizeof(*w) * n);
		mine = malloc(n);
		if (!p || !w || !mine) {
			ret = -ENOMEM;
			goto out_free;
		}
	}
	for (nfds_t i = 0; i < n; i++) {
		struct xway_conn *c = fds[i].fd >= 0 ? xway_fd_get(fds[i].fd) : NULL;
		mine[i] = c != NULL;
		if (!c)
			continue;
		w[nw].c = c;
		w[nw].idx = i;
		w[nw].tcp_ev = POLLIN | POLLRDHUP;
		w[nw].sleeping = 0;
		if (atomic_load_explicit(&c->state, memory_order_acquire) == XWAY_ST_PENDING &&
		    (fds[i].events & (POLLOUT | POLLWRNORM)))
			w[nw].tcp_ev |= POLLOUT;        /* connect completion */
		nw++;
	}

	for (long iter = 0; ; iter++) {
		int ready = 0, total, sleep_ok;
		struct timespec tsbuf;
		const struct timespec *tsp;

		/* Levels of ours first: no arming if something is ready. */
		for (int k = 0; k < nw; k++) {
			struct pollfd *f = &fds[w[k].idx];
			f->revents = xway_poll_level(w[k].c, f->events);
			if (f->revents)
				ready++;
		}
		sleep_ok = !ready && deadline != 0 &&
			   (deadline < 0 || xway_now_ns() < deadline);
		if (sleep_ok) {
			/* Ask the peer to notify, then look again: what it
			 * published before seeing our request is in the ring
			 * now (the arm's fence orders request before re-check).
			 * First register as a sleeper of the endpoint: the
			 * notification fd is shared by every thread and process
			 * of our tree, and one that drains it (its own poll or
			 * recv woke) passes the wake-up on to the registered
			 * sleepers whose events are ready; without this a
			 * second poller of the same fd could sleep through the
			 * arrival that the first one drained. */
			for (int k = 0; k < nw; k++) {
				struct pollfd *f = &fds[w[k].idx];
				if (!xway_poll_on_chan(w[k].c))
					continue;
				w[k].sleeping = xway_chan_events(f->events);
				xway_chan_sleeper(w[k].c->chan, w[k].sleeping, 1);
				if (xway_chan_arm(w[k].c->chan, xway_chan_events(f->events) |
						  XWAY_EV_SELF_DRAIN)) {
					f->revents = xway_poll_level(w[k].c, f->events);
					if (f->revents)
						ready++;
				}
			}
			sleep_ok = !ready;
		}

		/* The real set: the app's other fds in place, ours as -1
		 * (ignored by the kernel), then what stands for ours. */
		total = (int)n;
		for (nfds_t i = 0; i < n; i++) {
			p[i].fd = fds[i].fd;
			p[i].events = fds[i].events;
			p[i].revents = 0;
		}
		for (int k = 0; k < nw; k++) {
			struct xway_conn *c = w[k].c;
			nfds_t idx = w[k].idx;
			/* The app's slot of an fd of ours holds the real TCP
			 * socket (the same number) or the channel's fd. */
			p[idx].fd = -1;
			p[idx].events = 0;
			w[k].chan_slot = w[k].tcp_slot = -1;
			if (!sleep_ok)
				continue;
			if (!xway_poll_on_chan(c)) {
				/* Listener or FLUSH: the real socket is the truth. */
				w[k].tcp_slot = (int)idx;
				p[idx].fd = c->fd;
				p[idx].events = fds[idx].events;
			} else if (compact) {
				w[k].chan_slot = (int)idx;
				p[idx].fd = xway_chan_pollfd(c->chan);
				p[idx].events = POLLIN;
			} else {
				w[k].chan_slot = total;
				p[total].fd = xway_chan_pollfd(c->chan);
				p[total].events = POLLIN;
				p[total++].revents = 0;
				if (w[k].tcp_ev) {
					w[k].tcp_slot = (int)idx;
					p[idx].fd = c->fd;
					p[idx].events = w[k].tcp_ev;
				}
			}
		}
		tsp = sleep_ok ? xway_left_ts(deadline, &tsbuf) : &(struct timespec){ 0, 0 };
		/* A look without sleeping is skipped when every slot is -1
		 * (all ours; a ppoll that does not fail or sleep delivers no
		 * signal its mask unblocks either). */
		int call = sleep_ok;

		for (int i = 0; !call && i < total; i++)
			call = p[i].fd >= 0;
		long r = call ? XWAY_SYS(real.ppoll(p, (nfds_t)total, tsp, mask)) : 0;
		xway_poll_unsleep(w, nw);
		if (r == -EINVAL && !compact && (nfds_t)total > n) {
			/* More fds than RLIMIT_NOFILE allows (sshd's sandbox
			 * sets it to 1): wait on the channel fds alone, in the
			 * app's slots (a dead peer's FIN is then seen when the
			 * level is computed, not while asleep). */
			compact = 1;
			continue;
		}
		if (r < 0 && !(r == -EINTR && ready)) {
			ret = (int)r;
			goto out_put;
		}
		if (r < 0)
			r = 0;
		for (nfds_t i = 0; i < n; i++) {
			if (fds[i].fd < 0)
				fds[i].revents = 0;       /* as the kernel does */
			if (p[i].fd < 0 || mine[i])
				continue;         /* negative, or ours */
			fds[i].revents = p[i].revents;
			if (p[i].revents)
				ready++;
		}
		if (!sleep_ok || (r == 0 && deadline >= 0 &&
				  xway_now_ns() >= deadline && !ready)) {
			/* Non-blocking round (ours were counted above), or
			 * the time is up with nothing ready. */
			ret = ready;
			goto out_put;
		}
		/* We slept: drain what woke us, recompute ours. */
		for (int k = 0; k < nw; k++) {
			struct pollfd *f = &fds[w[k].idx];
			int drained = 0;
			if (w[k].chan_slot >= 0 && p[w[k].chan_slot].revents) {
				xway_chan_ack(w[k].c->chan);
				drained = 1;
			}
			f->revents = xway_poll_level(w[k].c, f->events);
			if (f->revents) {
				ready++;
				if (drained)
					xway_poll_give_back(w[k].c);
			} else if (w[k].tcp_slot >= 0 && xway_poll_on_chan(w[k].c) &&
				   p[w[k].tcp_slot].revents) {
				/* TCP events stay level: after one look that
				 * changed nothing, stop watching those bits. */
				w[k].tcp_ev &= (short)~p[w[k].tcp_slot].revents;
			}
		}
		if (ready) {
			ret = ready;
			goto out_put;
		}
		if (deadline >= 0 && xway_now_ns() >= deadline) {
			/* One last look, as the kernel does at expiry. */
			deadline = 0;
		}
		if (iter > XWAY_POLL_MAX_SPURIOUS) {
			ret = 0;
			goto out_put;
		}
	}
out_put:
	xway_poll_unsleep(w, nw);      /* no-op unless we left before the wait */
	for (int k = 0; k < nw; k++)
		xway_conn_put(w[k].c);
out_free:
	if (p != pstack)
		free(p);
	if (w != wstack)
		free(w);
	if (mine != mstack)
		free(mine);
	return ret;
}

static int xway_poll_any_ours(const struct pollfd *fds, nfds_t n)
{
	if (!xway_ready())
		return 0;
	for (nfds_t i = 0; i < n; i++)
		if (fds[i].fd >= 0 && xway_fd_is_ours(fds[i].fd))
			return 1;
	return 0;
}

XWAY_EXPORT int poll(struct pollfd *fds, nfds_t n, int tmo)
{
	struct timespec ts;

	if (__builtin_expect(!xway_poll_any_ours(fds, n), 1))
		return real.poll(fds, n, tmo);
	ts.tv_sec = tmo / 1000;
	ts.tv_nsec = (long)(tmo % 1000) * 1000000;
	return (int)xway_ret(xway_poll_do(fds, n, tmo < 0 ? -1 : xway_deadline_ns(&ts),
					  NULL));
}

XWAY_EXPORT int __poll_chk(struct pollfd *fds, nfds_t n, int tmo, size_t fdslen)
{
	if (fdslen / sizeof(*fds) < n)
		__chk_fail();
	return poll(fds, n, tmo);
}

XWAY_EXPORT int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *tmo,
		      const sigset_t *mask)
{
	if (__builtin_expect(!xway_poll_any_ours(fds, n), 1))
		return real.ppoll(fds, n, tmo, mask);
	if (!xway_poll_valid_ts(tmo))
		return (int)xway_ret(-EINVAL);
	return (int)xway_ret(xway_poll_do(fds, n, xway_deadline_ns(tmo), mask));
}

XWAY_EXPORT int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *tmo,
			    const sigset_t *mask, size_t fdslen)
{
	if (fdslen / sizeof(*fds) < n)
		__chk_fail();
	return ppoll(fds, n, tmo, mask);
}

/* ---- select ---------------------------------------------------------- */

/*
 * fd_sets are bit arrays of n bits; an application may pass larger arrays
 * than fd_set (the glibc way for fds >= 1024), so never use FD_ISSET (its
 * fortified form aborts above 1023).
 */
#define XWAY_NFDBITS (8 * (int)sizeof(__fd_mask))
/* Bit operations in unsigned long: __fd_mask is signed, and 1 << 63 in it
 * is undefined. */
static inline int xway_bit(const fd_set *s, int fd)
{
	return s && ((unsigned long)((const __fd_mask *)s)[fd / XWAY_NFDBITS] &
		     (1UL << (fd % XWAY_NFDBITS))) != 0;
}

static inline void xway_setbit(fd_set *s, int fd)
{
	((__fd_mask *)s)[fd / XWAY_NFDBITS] |= (__fd_mask)(1UL << (fd % XWAY_NFDBITS));
}

static int xway_select_any_ours(int n, fd_set *r, fd_set *w, fd_set *e)
{
	if (!xway_ready() || n <= 0)
		return 0;
	for (int i = 0; i < n; i += XWAY_NFDBITS) {
		unsigned long m = 0;
		if (r) m |= (unsigned long)((__fd_mask *)r)[i / XWAY_NFDBITS];
		if (w) m |= (unsigned long)((__fd_mask *)w)[i / XWAY_NFDBITS];
		if (e) m |= (unsigned long)((__fd_mask *)e)[i / XWAY_NFDBITS];
		for (int b = 0; m && b < XWAY_NFDBITS && i + b < n; b++)
			if ((m & (1UL << b)) && xway_fd_is_ours(i + b))
				return 1;
	}
	return 0;
}

#define XWAY_POLLIN_SET  (POLLRDNORM | POLLRDBAND | POLLIN | POLLHUP | POLLERR)
#define XWAY_POLLOUT_SET (POLLWRBAND | POLLWRNORM | POLLOUT | POLLERR)
#define XWAY_POLLEX_SET  (POLLPRI)

static int xway_select_do(int n, fd_set *r, fd_set *w, fd_set *e,
			  int64_t deadline, const sigset_t *mask)
{
	struct pollfd *fds;
	int cnt = 0, ret;

	fds = malloc(sizeof(*fds) * (size_t)n);
	if (!fds)
		return -ENOMEM;
	for (int fd = 0; fd < n; fd++) {
		short ev = 0;
		if (xway_bit(r, fd)) ev |= XWAY_POLLIN_SET;
		if (xway_bit(w, fd)) ev |= XWAY_POLLOUT_SET;
		if (xway_bit(e, fd)) ev |= XWAY_POLLEX_SET;
		if (!ev)
			continue;
		fds[cnt].fd = fd;
		fds[cnt].events = ev;
		fds[cnt++].revents = 0;
	}
	ret = xway_poll_do(fds, (nfds_t)cnt, deadline, mask);
	if (ret < 0)
		goto out;
	for (int i = 0; i < cnt; i++)
		if (fds[i].revents & POLLNVAL) {
			ret = -EBADF;
			goto out;
		}
	/* Clear the app's sets only now: on error they are left as given. */
	for (int i = 0; i < n; i += XWAY_NFDBITS) {
		if (r) ((__fd_mask *)r)[i / XWAY_NFDBITS] = 0;
		if (w) ((__fd_mask *)w)[i / XWAY_NFDBITS] = 0;
		if (e) ((__fd_mask *)e)[i / XWAY_NFDBITS] = 0;
	}
	ret = 0;
	for (int i = 0; i < cnt; i++) {
		short re = fds[i].revents, ev = fds[i].events;
		if ((ev & POLLIN) && (re & XWAY_POLLIN_SET)) {
			xway_setbit(r, fds[i].fd);
			ret++;
		}
		if ((ev & POLLOUT) && (re & XWAY_POLLOUT_SET)) {
			xway_setbit(w, fds[i].fd);
			ret++;
		}
		if ((ev & POLLPRI) && (re & XWAY_POLLEX_SET)) {
			xway_setbit(e, fds[i].fd);
			ret++;
		}
	}
out:
	free(fds);
	return ret;
}

XWAY_EXPORT int select(int n, fd_set *r, fd_set *w, fd_set *e, struct timeval *tmo)
{
	struct timespec ts;
	int64_t deadline = -1;
	long ret;

	if (__builtin_expect(!xway_select_any_ours(n, r, w, e), 1))
		return real.select(n, r, w, e, tmo);
	if (tmo) {
		if (tmo->tv_sec < 0 || tmo->tv_usec < 0 || tmo->tv_usec >= 1000000)
			return (int)xway_ret(-EINVAL);
		ts.tv_sec = tmo->tv_sec;
		ts.tv_nsec = tmo->tv_usec * 1000;
		deadline = xway_deadline_ns(&ts);
	}
	ret = xway_select_do(n, r, w, e, deadline, NULL);
	if (tmo && deadline >= 0) {
		/* Linux writes the time left back, also on EINTR. */
		int64_t left = deadline - xway_now_ns();
		if (left < 0)
			left = 0;
		tmo->tv_sec = left / 1000000000;
		tmo->tv_usec = (left % 1000000000) / 1000;
	}
	return (int)xway_ret(ret);
}

XWAY_EXPORT int pselect(int n, fd_set *r, fd_set *w, fd_set *e,
			const struct timespec *tmo, const sigset_t *mask)
{
	if (__builtin_expect(!xway_select_any_ours(n, r, w, e), 1))
		return real.pselect(n, r, w, e, tmo, mask);
	if (!xway_poll_valid_ts(tmo))
		return (int)xway_ret(-EINVAL);
	return (int)xway_ret(xway_select_do(n, r, w, e, xway_deadline_ns(tmo), mask));
}
