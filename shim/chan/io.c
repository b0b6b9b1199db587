// SPDX-License-Identifier: MIT
/*
 * The channel's data path: the public calls dispatch through the backend's
 * ops table, and the local backend's send/recv/poll/wait live here.  No
 * system call on the fast path except an eventfd write when the peer is
 * asleep; the wait uses only atomics, ppoll and read/write on the existing
 * eventfds (seccomp-safe).
 *
 * Notification is libxenvchan's notify-if-waiting: a sleeper stores 1 in its
 * waiting word, fences, re-checks the ring and only then sleeps in ppoll on
 * its eventfd; a publisher stores its index, fences, and if the waiting word
 * is set clears it (exchange) and writes the sleeper's eventfd.  The fences
 * make it a Dekker pair: at least one side sees the other, so no wake-up is
 * lost, and none is sent when nobody waits.
 *
 * Several sleepers: threads or fork()ed processes of our tree may wait on
 * one endpoint at once and they share one eventfd, so one sleeper can drain
 * a wake-up that another (between its re-check and ppoll) needed; the
 * peer's exchange also consumed that other's waiting word.  So whoever
 * drains the eventfd re-arms the waiting words on behalf of the sleepers
 * still registered (sleep_in/sleep_out), re-checks, and if something they
 * want is ready writes our own eventfd to pass the wake-up on.
 *
 * Adaptive spin: before sleeping, a waiter polls the ring for up to
 * spin_budget_ns, but only when the peer can run beside us: two or more
 * usable CPUs, the peer's last CPU (its `spinning` hint) is not ours, and
 * the peer is awake or we just woke it.  The budget halves after a spin
 * that found nothing and grows back after one that did.
 */
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <time.h>

#include "barrier.h"
#include "chan_int.h"
#include "sys.h"

#define EV_IN_CLASS  (XWAY_EV_IN | XWAY_EV_RDHUP | XWAY_EV_RST)
#define EV_OUT_CLASS (XWAY_EV_OUT | XWAY_EV_HUP)

/* ---- dispatch ------------------------------------------------------------ */

ssize_t xway_chan_send(struct xway_chan *c, const void *buf, size_t len)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };

	return c->ops->sendv(c, &iov, 1);
}

ssize_t xway_chan_sendv(struct xway_chan *c, const struct iovec *iov, int iovcnt)
{
	if (iovcnt < 0 || (iovcnt && !iov))
		return -EINVAL;
	return c->ops->sendv(c, iov, iovcnt);
}

ssize_t xway_chan_recv(struct xway_chan *c, void *buf, size_t len, unsigned flags)
{
	struct iovec iov = { .iov_base = buf, .iov_len = len };

	return c->ops->recvv(c, &iov, 1, flags);
}

ssize_t xway_chan_recvv(struct xway_chan *c, const struct iovec *iov, int iovcnt,
			unsigned flags)
{
	if (iovcnt < 0 || (iovcnt && !iov))
		return -EINVAL;
	return c->ops->recvv(c, iov, iovcnt, flags);
}

size_t xway_chan_readable(struct xway_chan *c) { return c->ops->readable(c); }
size_t xway_chan_unsent(struct xway_chan *c)   { return c->ops->unsent(c); }
unsigned xway_chan_poll(struct xway_chan *c)   { return c->ops->poll(c); }
int xway_chan_shutdown_wr(struct xway_chan *c) { return c->ops->shutdown_wr(c); }
int xway_chan_close_rd(struct xway_chan *c)    { return c->ops->close_rd(c); }
int xway_chan_reset(struct xway_chan *c)       { return c->ops->reset(c); }
unsigned xway_chan_arm(struct xway_chan *c, unsigned events)
{
	return c->ops->arm(c, events);
}
void xway_chan_ack(struct xway_chan *c)        { c->ops->ack(c); }

void xway_chan_sleeper(struct xway_chan *c, unsigned events, int delta)
{
	/* seq_cst read-modify-write: the registration is ordered before the
	 * caller's arm and re-check of the ring (xway_chan_arm), against
	 * pass_on's load of the counts after a drain ("Several sleepers").
	 * Added by the lifecycle engineer for poll()ers of one endpoint. */
	if (events & EV_IN_CLASS)
		atomic_fetch_add(&c->ep->sleep_in, delta);
	if (events & EV_OUT_CLASS)
		atomic_fetch_add(&c->ep->sleep_out, delta);
}

int xway_chan_wait(struct xway_chan *c, unsigned events, int extra_fd,
		   int timeout_ms)
{
	return c->ops->wait(c, events, extra_fd, timeout_ms);
}

/* ---- local: helpers ------------------------------------------------------ */

static void fail(struct xway_chan *c)
{
	atomic_store(&c->ep->failed, 1);
}

static void stat_add(_Atomic uint64_t *s, uint64_t n)
{
	/* Only written under the matching lock: no locked RMW needed. */
	atomic_store_explicit(s, atomic_load_explicit(s, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

/* After publishing: wake the peer if it sleeps on `waiting`. */
static void notify_if_waiting(struct xway_chan *c, uint32_t *waiting)
{
	static const uint64_t one = 1;

	/* Our index (or flag) store before the load of the waiting word. */
	xw_fence_seq();
	if (!xw_load_relaxed(waiting))
		return;
	if (!xw_xchg_seq(waiting, 0))
		return;             /* another of our senders took it */
	/* EAGAIN (counter full: a peer that never reads) is harmless. */
	(void)xw_sys_write(c->peer_efd, &one, sizeof(one));
	atomic_fetch_add_explicit(&c->ep->st_wakeups, 1, memory_order_relaxed);
	atomic_store_explicit(&c->ep->just_notified, 1, memory_order_relaxed);
}

/* Total of iov[], saturated at UINT32_MAX (rings are smaller). */
static uint32_t iov_len(const struct iovec *iov, int iovcnt)
{
	size_t t = 0;

	for (int i = 0; i < iovcnt; i++) {
		t += iov[i].iov_len;
		if (t >= UINT32_MAX || iov[i].iov_len >= UINT32_MAX)
			return UINT32_MAX;
	}
	return (uint32_t)t;
}

static int flags_bad(uint32_t f, uint32_t known)
{
	return (f & ~known) != 0;
}

/* ---- local: data path ---------------------------------------------------- */

ssize_t xw_local_sendv(struct xway_chan *c, const struct iovec *iov, int iovcnt)
{
	ssize_t n;
	uint32_t pf, cf;
	int r, f;

	if ((f = atomic_load_explicit(&c->ep->failed, memory_order_relaxed)))
		return f == 2 ? -ECANCELED : -EPROTO;
	if ((r = xw_lock(&c->ep->tx_lock)))
		return r;
	/* Peer's flags are hints: validated, then only steer the answer. */
	pf = xw_load_acquire(&c->rx.ctl->prod_flags);
	cf = xw_load_acquire(&c->tx.ctl->cons_flags);
	if (flags_bad(pf, XWAY_RING_F_EOF | XWAY_RING_F_RST | XWAY_RING_F_REVERT) ||
	    flags_bad(cf, XWAY_RING_F_CLOSED | XWAY_RING_F_REVERT)) {
		fail(c);
		n = -EPROTO;
	} else if ((cf & XWAY_RING_F_REVERT) ||
		   atomic_load_explicit(&c->ep->failed, memory_order_relaxed) == 2) {
		/* The peer left (take back, then TCP), or we did while we
		 * waited for the lock (xway_chan_revert sets it under it). */
		n = -ECANCELED;
	} else if (atomic_load_explicit(&c->ep->reset_done, memory_order_relaxed) ||
		   (pf & XWAY_RING_F_RST)) {
		n = -ECONNRESET;
	} else if (atomic_load_explicit(&c->ep->wr_shut, memory_order_relaxed) ||
		   (cf & XWAY_RING_F_CLOSED)) {
		n = -EPIPE;
	} else {
		/* Free space from the peer index seen last time (validated
		 * then; stale only means smaller); re-read the shared one,
		 * on the consumer's hot line, only when that is too little. */
		uint32_t space = c->tx.size - (c->ep->tx_prod - c->ep->tx_cons_seen);

		if (space < iov_len(iov, iovcnt)) {
			int64_t sp = xw_ring_space(&c->tx, c->ep->tx_prod);

			if (sp < 0) {
				n = sp;
				fail(c);
				goto out;
			}
			space = (uint32_t)sp;
			c->ep->tx_cons_seen = c->ep->tx_prod - (c->tx.size - space);
		}
		n = xw_ring_writev_in(&c->tx, &c->ep->tx_prod, iov, iovcnt, space);
		if (n > 0) {
			stat_add(&c->ep->st_tx, n);
			xw_store_relaxed64(&c->tx.ctl->tx_bytes,
					   atomic_load_explicit(&c->ep->st_tx,
								memory_order_relaxed));
		}
	}
out:
	xw_unlock(&c->ep->tx_lock);
	if (n > 0)
		notify_if_waiting(c, &c->tx.ctl->cons_waiting);
	return n;
}

ssize_t xw_local_recvv(struct xway_chan *c, const struct iovec *iov, int iovcnt,
		       unsigned flags)
{
	int peek = !!(flags & XWAY_RECV_PEEK);
	ssize_t n;
	uint32_t pf;
	int r, f;

	if ((f = atomic_load_explicit(&c->ep->failed, memory_order_relaxed)))
		return f == 2 ? -ECANCELED : -EPROTO;
	if ((r = xw_lock(&c->ep->rx_lock)))
		return r;
	/* Acquire, and before the index: the producer publishes all its data
	 * before it sets EOF/RST/REVERT, so "flag seen, then ring empty" means
	 * the stream really ended (or continues on TCP). */
	pf = xw_load_acquire(&c->rx.ctl->prod_flags);
	if (flags_bad(pf, XWAY_RING_F_EOF | XWAY_RING_F_RST | XWAY_RING_F_REVERT)) {
		fail(c);
		n = -EPROTO;
	} else if (atomic_load_explicit(&c->ep->failed, memory_order_relaxed) == 2) {
		n = -ECANCELED;     /* we left while we waited for the lock */
	} else {
		/* As in send: the shared prod is read only when the count
		 * seen last time cannot satisfy the request. */
		uint32_t avail = c->ep->rx_prod_seen - c->ep->rx_cons;

		if (avail < iov_len(iov, iovcnt)) {
			int64_t av = xw_ring_avail(&c->rx, c->ep->rx_cons);

			if (av < 0) {
				n = av;
				fail(c);
				goto out;
			}
			avail = (uint32_t)av;
			c->ep->rx_prod_seen = c->ep->rx_cons + avail;
		}
		n = xw_ring_readv_in(&c->rx, &c->ep->rx_cons, iov, iovcnt, peek, avail);
		if (n > 0 && !peek) {
			stat_add(&c->ep->st_rx, n);
			xw_store_relaxed64(&c->rx.ctl->rx_bytes,
					   atomic_load_explicit(&c->ep->st_rx,
								memory_order_relaxed));
		}
	}
out:
	xw_unlock(&c->ep->rx_lock);
	if (n > 0 && !peek)
		notify_if_waiting(c, &c->rx.ctl->prod_waiting);
	if (n == -EAGAIN) {
		/* Empty after the flag was seen (the shared prod was re-read
		 * after it): the leaver's bytes are all read; TCP now. */
		if (pf & XWAY_RING_F_REVERT)
			return -ECANCELED;
		if (pf & XWAY_RING_F_RST)
			return atomic_exchange(&c->ep->rst_reported, 1) ? 0 : -ECONNRESET;
		if (pf & XWAY_RING_F_EOF)
			return 0;
	}
	return n;
}

/* Lock-free readers below may see our private index and the peer's one
 * from different moments; they clamp instead of failing (the locked
 * operations validate strictly). */
size_t xw_local_readable(struct xway_chan *c)
{
	uint32_t cons = xw_load_relaxed(&c->ep->rx_cons);
	int64_t a = xw_ring_avail(&c->rx, cons);

	return a < 0 ? 0 : (size_t)a;
}

size_t xw_local_unsent(struct xway_chan *c)
{
	uint32_t prod = xw_load_relaxed(&c->ep->tx_prod);
	int64_t s = xw_ring_space(&c->tx, prod);

	return s < 0 ? 0 : c->tx.size - (size_t)s;
}

unsigned xw_local_poll(struct xway_chan *c)
{
	unsigned m = 0;
	uint32_t pf, cf;
	int64_t a, s;

	int f = atomic_load_explicit(&c->ep->failed, memory_order_relaxed);

	if (f)
		return f == 2 ? XWAY_EV_REVERT | XWAY_EV_IN | XWAY_EV_OUT
			      : XWAY_EV_ERR | XWAY_EV_IN | XWAY_EV_OUT;
	/* Flags before the index, as in recv. */
	pf = xw_load_acquire(&c->rx.ctl->prod_flags);
	a = xw_ring_avail(&c->rx, xw_load_relaxed(&c->ep->rx_cons));
	if (a != 0)                 /* data, or a value only recv can judge */
		m |= XWAY_EV_IN;
	if (pf & XWAY_RING_F_EOF)
		m |= XWAY_EV_IN | XWAY_EV_RDHUP;
	if (pf & XWAY_RING_F_RST)
		m |= XWAY_EV_IN | XWAY_EV_RST | XWAY_EV_OUT;
	cf = xw_load_acquire(&c->tx.ctl->cons_flags);
	s = xw_ring_space(&c->tx, xw_load_relaxed(&c->ep->tx_prod));
	/* Writable as kernel TCP says it (sk_stream_is_writeable): once a
	 * third of the buffer is free, not at the first free byte.  An
	 * application that selects for writing and then writes a whole
	 * record blocking (openssl s_server/s_client: 16 KiB) relies on it:
	 * with both ends doing that and each ring nearly full, "writable" at
	 * 100 free bytes put both into a blocking write and neither read.
	 * A negative s (a corrupt peer index) stays "writable": the data
	 * call reports it. */
	if (s < 0 || 3 * s >= (int64_t)c->tx.size ||
	    atomic_load_explicit(&c->ep->wr_shut, memory_order_relaxed))
		m |= XWAY_EV_OUT;
	if (cf & XWAY_RING_F_CLOSED)
		m |= XWAY_EV_OUT | XWAY_EV_HUP;
	if ((pf | cf) & XWAY_RING_F_REVERT)
		m |= XWAY_EV_REVERT | XWAY_EV_OUT;   /* sends go to TCP */
	if (flags_bad(pf, XWAY_RING_F_EOF | XWAY_RING_F_RST | XWAY_RING_F_REVERT) ||
	    flags_bad(cf, XWAY_RING_F_CLOSED | XWAY_RING_F_REVERT))
		m |= XWAY_EV_IN | XWAY_EV_OUT;   /* let the data call fail it */
	/* Relaxed: only "decided yet?"; xway_chan_attached() reads it with
	 * acquire before anything acts on the decision. */
	if (c->side == 0 && xw_load_relaxed(&c->shm->attached) != XWAY_ATTACH_PENDING)
		m |= XWAY_EV_ATTACH;
	return m;
}

int xw_local_shutdown_wr(struct xway_chan *c)
{
	int r;

	if ((r = xw_lock(&c->ep->tx_lock)))
		return r;
	atomic_store(&c->ep->wr_shut, 1);
	/* Release: every byte published before EOF. */
	xw_or_release(&c->tx.ctl->prod_flags, XWAY_RING_F_EOF);
	xw_unlock(&c->ep->tx_lock);
	notify_if_waiting(c, &c->tx.ctl->cons_waiting);
	return 0;
}

int xw_local_close_rd(struct xway_chan *c)
{
	/* Release: our last copy-out before the producer learns we left. */
	xw_or_release(&c->rx.ctl->cons_flags, XWAY_RING_F_CLOSED);
	notify_if_waiting(c, &c->rx.ctl->prod_waiting);
	return 0;
}

int xw_local_reset(struct xway_chan *c)
{
	atomic_store(&c->ep->reset_done, 1);
	atomic_store(&c->ep->wr_shut, 1);
	/* Release: published data before RST (the peer reads it first). */
	xw_or_release(&c->tx.ctl->prod_flags, XWAY_RING_F_RST);
	xw_or_release(&c->rx.ctl->cons_flags, XWAY_RING_F_CLOSED);
	notify_if_waiting(c, &c->tx.ctl->cons_waiting);
	notify_if_waiting(c, &c->rx.ctl->prod_waiting);
	return 0;
}

/* ---- local: waiting ------------------------------------------------------ */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

static void set_hint(struct xway_chan *c, int awake)
{
	int cpu = sched_getcpu();   /* rseq/vDSO: no system call */
	uint32_t v = (uint32_t)(cpu + 1) & XW_HINT_CPU;

	xw_store_relaxed(c->my_hint, awake ? (v | XW_HINT_AWAKE) : v);
}

static void arm_words(struct xway_chan *c, int in, int out)
{
	if (in)
		xw_store_seq(&c->rx.ctl->cons_waiting, 1);
	if (out)
		xw_store_seq(&c->tx.ctl->prod_waiting, 1);
	/* Our waiting-word stores before the re-check loads of the ring. */
	xw_fence_seq();
}

/* We drained the eventfd: re-arm for the other sleepers of our tree and
 * pass the wake-up on if what they wait for is ready. */
static void pass_on(struct xway_chan *c)
{
	static const uint64_t one = 1;
	int in = atomic_load(&c->ep->sleep_in) > 0;
	int out = atomic_load(&c->ep->sleep_out) > 0;
	unsigned m;

	if (!in && !out)
		return;
	arm_words(c, in, out);
	m = xw_local_poll(c);
	if ((in && (m & EV_IN_CLASS)) || (out && (m & EV_OUT_CLASS)) ||
	    (m & (XWAY_EV_ERR | XWAY_EV_REVERT)))
		(void)xw_sys_write(c->pollfd, &one, sizeof(one));
}

static void drain(struct xway_chan *c)
{
	uint64_t v;

	(void)xw_sys_read(c->pollfd, &v, sizeof(v));
}

/* Spin for readiness if the peer can run beside us; returns the mask. */
static unsigned spin(struct xway_chan *c, unsigned want)
{
	uint32_t hint, peer_cpu;
	int notified, budget, cpu;
	uint64_t t0, deadline;
	unsigned m = 0;

	if (!c->spin_ns)
		return 0;
	cpu = sched_getcpu();
	/* Tell the peer where we run now: it must not spin on our CPU. */
	xw_store_relaxed(c->my_hint, XW_HINT_AWAKE |
			 ((uint32_t)(cpu + 1) & XW_HINT_CPU));
	hint = xw_load_relaxed(c->peer_hint);
	peer_cpu = hint & XW_HINT_CPU;
	notified = atomic_exchange_explicit(&c->ep->just_notified, 0,
					    memory_order_relaxed);
	/* Same CPU: spinning would only keep the peer from running. */
	if (peer_cpu && cpu >= 0 && peer_cpu == (uint32_t)cpu + 1)
		return 0;
	if (!(hint & XW_HINT_AWAKE) && !notified)
		return 0;
	budget = atomic_load_explicit(&c->ep->spin_budget_ns, memory_order_relaxed);
	if (budget <= 0)
		budget = 1;
	t0 = now_ns();
	deadline = t0 + (uint64_t)budget;
	for (unsigned i = 1; ; i++) {
		m = xw_local_poll(c);
		if (m & want)
			break;
		xw_cpu_relax();
		if ((i & 63) == 0) {
			hint = xw_load_relaxed(c->peer_hint);
			if ((hint & XW_HINT_CPU) == (uint32_t)cpu + 1 ||
			    now_ns() > deadline) {
				m = 0;
				break;
			}
		}
	}
	if (m & want)
		budget = budget * 2 > (int)c->spin_ns ? (int)c->spin_ns : budget * 2;
	else
		budget = budget / 2 > (int)(c->spin_ns / 16) ? budget / 2
			: (int)(c->spin_ns / 16);
	atomic_store_explicit(&c->ep->spin_budget_ns, budget, memory_order_relaxed);
	return m & want ? m : 0;
}

int xw_local_wait(struct xway_chan *c, unsigned events, int extra_fd,
		  int timeout_ms)
{
	unsigned want = events | XWAY_EV_ERR | XWAY_EV_REVERT;
	int in = !!(events & EV_IN_CLASS), out = !!(events & EV_OUT_CLASS);
	uint64_t deadline = 0;
	unsigned m;

	m = xw_local_poll(c);
	if (m & want)
		return m;
	if (timeout_ms == 0)
		return 0;
	if (timeout_ms > 0)
		deadline = now_ns() + (uint64_t)timeout_ms * 1000000u;
	m = spin(c, want);
	if (m)
		return m;

	for (;;) {
		struct pollfd pfd[2] = {
			{ .fd = c->pollfd, .events = POLLIN },
			{ .fd = extra_fd, .events = POLLIN | POLLRDHUP },
		};
		struct timespec ts, *tsp = NULL;
		long r;

		if (in)
			atomic_fetch_add(&c->ep->sleep_in, 1);
		if (out)
			atomic_fetch_add(&c->ep->sleep_out, 1);
		arm_words(c, in, out);
		m = xw_local_poll(c);
		if (!(m & want) && deadline) {
			uint64_t t = now_ns();

			if (t >= deadline) {
				r = 0;
				goto unregister;
			}
			ts.tv_sec = (deadline - t) / 1000000000u;
			ts.tv_nsec = (deadline - t) % 1000000000u;
			tsp = &ts;
		}
		if (m & want) {
			r = 1;
			goto unregister;
		}
		set_hint(c, 0);
		r = xw_sys_ppoll(pfd, extra_fd >= 0 ? 2 : 1, tsp);
		if (r == -EINVAL && extra_fd >= 0)
			/* RLIMIT_NOFILE below 2 (sshd's sandbox sets 1): the
			 * kernel refuses two fds; wait on ours alone.
			 * (Added by the lifecycle engineer.) */
			r = xw_sys_ppoll(pfd, 1, tsp);
		if (r == -EINVAL) {
			/* RLIMIT_NOFILE 0 (vsftpd's unprivileged session): no
			 * poll at all.  Nap 2 ms and look again: latency, not
			 * correctness; nanosleep passes sandboxes. */
			struct timespec nap = { 0, 2000000 };
			if (tsp && (tsp->tv_sec == 0 && tsp->tv_nsec < nap.tv_nsec))
				nap = *tsp;
			pfd[0].revents = pfd[1].revents = 0;
			r = xw_raw_syscall(SYS_nanosleep, (long)&nap, 0, 0, 0, 0);
			if (r > 0)
				r = 0;
		}
		set_hint(c, 1);
		atomic_fetch_add_explicit(&c->ep->st_sleeps, 1, memory_order_relaxed);
unregister:
		if (in)
			atomic_fetch_sub(&c->ep->sleep_in, 1);
		if (out)
			atomic_fetch_sub(&c->ep->sleep_out, 1);
		if (r < 0)
			return (int)r;          /* -EINTR on a signal */
		if (r > 0 && (pfd[0].revents & POLLIN)) {
			drain(c);
			pass_on(c);
		}
		m = xw_local_poll(c);
		if (extra_fd >= 0 && pfd[1].revents)
			m |= XWAY_EV_EXTRA;
		if (m & (want | XWAY_EV_EXTRA))
			return m;
		if (deadline && now_ns() >= deadline)
			return 0;
	}
}

unsigned xw_local_arm(struct xway_chan *c, unsigned events)
{
	arm_words(c, !!(events & EV_IN_CLASS), !!(events & EV_OUT_CLASS));
	return xw_local_poll(c) & (events | XWAY_EV_ERR | XWAY_EV_REVERT);
}

void xw_local_ack(struct xway_chan *c)
{
	drain(c);
	pass_on(c);
}

/* ---- local: hand-back of unsent bytes (withdrawn offers, reverts) -------- */

/* Under tx_lock: nobody else consumes ring `side` any more (the server
 * never attached, or the leaver stopped for good): we act as its consumer. */
static ssize_t take_locked(struct xway_chan *c, void *buf, size_t len)
{
	uint32_t cons, used;
	ssize_t n;

	cons = xw_load_acquire(&c->tx.ctl->cons);
	used = c->ep->tx_prod - cons;
	if (used > c->tx.size) {
		fail(c);
		return -EPROTO;
	}
	n = used < len ? used : len;
	xw_ring_copy_out(&c->tx, cons, buf, n);
	/* Release: our copy-out before the space is reused. */
	xw_store_release(&c->tx.ctl->cons, cons + (uint32_t)n);
	c->ep->tx_cons_seen = cons + (uint32_t)n;
	return n;
}

ssize_t xway_chan_take_unsent(struct xway_chan *c, void *buf, size_t len)
{
	ssize_t n;
	int r;

	if (c->backend != XWAY_BACKEND_LOCAL)
		return -EOPNOTSUPP;
	if (xway_chan_attached(c) != XWAY_ATTACH_WITHDRAWN)
		return -EBUSY;
	if ((r = xw_lock(&c->ep->tx_lock)))
		return r;
	n = take_locked(c, buf, len);
	xw_unlock(&c->ep->tx_lock);
	return n;
}

ssize_t xway_chan_take_back(struct xway_chan *c, void *buf, size_t len)
{
	ssize_t n;
	int r;

	if (c->backend == XWAY_BACKEND_XEN)
		return xw_xen_take_back(c, buf, len);
	if (c->backend != XWAY_BACKEND_LOCAL)
		return -EOPNOTSUPP;
	if ((r = xw_lock(&c->ep->tx_lock)))
		return r;
	/* Acquire: pairs with the leaver's release OR, made after its last
	 * consume of this ring (its cons is final when we read it). */
	if (!(xw_load_acquire(&c->tx.ctl->cons_flags) & XWAY_RING_F_REVERT))
		n = -EBUSY;
	else
		n = take_locked(c, buf, len);
	xw_unlock(&c->ep->tx_lock);
	return n;
}

int xway_chan_revert(struct xway_chan *c)
{
	int r;

	if (c->backend == XWAY_BACKEND_XEN)
		return xw_xen_revert(c);
	if (c->backend != XWAY_BACKEND_LOCAL)
		return -EOPNOTSUPP;
	/* One direction at a time (the lock order forbids holding both);
	 * consuming first.  The peer trusts "our production is final" (the
	 * prod flag) only after it has seen the cons flag, which this order
	 * makes visible first.  failed = 2 under each lock: a data call of our
	 * tree that takes the lock after us re-reads it there (-ECANCELED). */
	if ((r = xw_lock(&c->ep->rx_lock)))
		return r;
	atomic_store(&c->ep->failed, 2);
	/* Release: our last copy-out before the peer takes the rest back. */
	xw_or_release(&c->rx.ctl->cons_flags, XWAY_RING_F_REVERT);
	xw_unlock(&c->ep->rx_lock);
	if ((r = xw_lock(&c->ep->tx_lock)))
		return r;
	/* Release: every byte we published (and the cons flag) before
	 * "final". */
	xw_or_release(&c->tx.ctl->prod_flags, XWAY_RING_F_REVERT);
	xw_unlock(&c->ep->tx_lock);
	/* Wake the peer whether it sleeps for data or for room; an idle peer
	 * sees the flags at its next call (a spurious wake-up is harmless). */
	notify_if_waiting(c, &c->tx.ctl->cons_waiting);
	notify_if_waiting(c, &c->rx.ctl->prod_waiting);
	{
		static const uint64_t one = 1;
		(void)xw_sys_write(c->peer_efd, &one, sizeof(one));
	}
	return 0;
}

unsigned xway_chan_reverted(struct xway_chan *c)
{
	unsigned m = 0;

	if (c->backend == XWAY_BACKEND_XEN)
		return xw_xen_reverted(c);
	if (c->backend != XWAY_BACKEND_LOCAL)
		return 0;
	if (atomic_load_explicit(&c->ep->failed, memory_order_relaxed) == 2)
		m |= XWAY_REVERT_LEFT;
	/* Acquire, each: pairs with the leaver's release ORs; what follows
	 * (take back, the readable count) sees its final indices. */
	if (xw_load_acquire(&c->tx.ctl->cons_flags) & XWAY_RING_F_REVERT)
		m |= XWAY_REVERT_PEER_STOPPED;
	if (xw_load_acquire(&c->rx.ctl->prod_flags) & XWAY_RING_F_REVERT)
		m |= XWAY_REVERT_PEER_FINAL;
	return m;
}
