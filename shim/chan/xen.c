// SPDX-License-Identifier: MIT
/*
 * The Xen backend: the channel API over libxenvchan between two domains.
 * libxenvchan is loaded with dlopen ("libxenvchan.so.4.17", then the
 * unversioned name) so that libxway.so loads and runs on hosts without Xen
 * or its libraries; without them, or without /dev/xen/{evtchn,gntalloc,
 * gntdev}, set-up fails with -ENOSYS and a line saying why.
 *
 * libxenvchan's ring carries bytes only: it has no EOF, reset or "reader
 * gone" flags of ours.  For this backend the shim signals FIN and RST on the
 * dual-channel TCP socket (shutdown(SHUT_WR), abortive close); the receiver
 * drains the vchan before reporting them, which is safe because the bytes
 * were published in shared memory before the system call that sent the FIN.
 * So xway_chan_shutdown_wr/close_rd/reset return -EOPNOTSUPP here, and
 * readiness comes from libxenvchan (data_ready / buffer_space / is_open).
 * MSG_PEEK is emulated with a private stash of bytes already read out of
 * the vchan.  An end follows a fork (xway_chan_xen_fork_*, below): the
 * child maps the grants again where the parent's mapping was not copied;
 * exec and SCM_RIGHTS still leave the channel for TCP (xw_xen_revert).
 *
 * Two ways to make an end: xway_chan_xen_server/client call libxenvchan's
 * own init (root: /dev/xen and xenstore; the tools and unit tests use it),
 * and xway_chan_xen_server_fds/client_fds (what the shim uses: privilege
 * model, docs/DESIGN.md §7) build struct libxenvchan by hand from the
 * descriptors the broker made, exactly as libxenvchan 4.17's init.c lays
 * it out, and do libxenvchan_close's work by hand at close (that struct has
 * no gntshr/gnttab handle then).  The data path is libxenvchan's either way.
 *
 * A connecting client is the libxenvchan server (it allocates, so it may
 * write while its offer is pending); while pending, the endpoint also owns
 * the local "decision" channel of the offer (only its header's `attached`
 * word and efd[0] are used) and sleeps on an epoll set of the event
 * channel and that eventfd, so a poll()er wakes on the broker's decision.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <stddef.h>
#include <sys/epoll.h>
#include <stdarg.h>
#include <stdio.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sys/mman.h>

#include <libxenvchan.h>
#include <xentoollog.h>
#include <xway/proto.h>

#include "chan_int.h"
#include "sys.h"

#define XW_XEN_STASH_MAX (64u * 1024u)

/*
 * Ring size per direction.  Each libxenvchan channel shares its two rings'
 * pages plus one control page from the connecting domain: at the shim's
 * default 1 MiB that is 513 grant pages, and the domU's gntalloc driver
 * allows 1024 by default (xwayd raises it).  The domU's grant table was
 * the next wall in the test bed: ~5600 pages, ~170 channels of 64 KiB
 * rings (docs/XEN.md §5).  So Xen rings are capped at 32 KiB (17 pages,
 * ~330 channels there); when the grants run out anyway, the server end is
 * retried once with 4 KiB rings (3 pages) before the connection falls
 * back to TCP.
 */
#define XW_XEN_ORDER_CAP 15u
#define XW_XEN_ORDER_LOW 12u

/*
 * libxenevtchn's logger for the descriptor-based ends: without one, every
 * xenevtchn_fdopen makes a stdio logger of its own (a malloc and an
 * isatty(2), a system call per channel end, which in a PV domain traps
 * through the hypervisor) and frees it at close.  Its rare messages come to
 * our log instead (warnings and worse, as the stdio one printed them).
 */
static void xw_toollog_vmessage(struct xentoollog_logger *lg, xentoollog_level level,
				int errnoval, const char *context, const char *fmt,
				va_list al)
{
	char buf[256];

	(void)lg;
	if (level < XTL_WARN)
		return;
	vsnprintf(buf, sizeof(buf), fmt, al);
	xw_log("libxenevtchn%s%s: %s%s%s", context ? " " : "", context ? context : "", buf,
	       errnoval >= 0 ? ": " : "", errnoval >= 0 ? strerror(errnoval) : "");
}

static void xw_toollog_progress(struct xentoollog_logger *lg, const char *context,
				const char *doing, int percent, unsigned long done,
				unsigned long total)
{
	(void)lg; (void)context; (void)doing; (void)percent; (void)done; (void)total;
}

static void xw_toollog_destroy(struct xentoollog_logger *lg)
{
	(void)lg;                  /* static: nothing to free */
}

static struct xentoollog_logger xw_toollog = {
	.vmessage = xw_toollog_vmessage,
	.progress = xw_toollog_progress,
	.destroy = xw_toollog_destroy,
};

struct xw_vchan_lib {
	void *dl;
	struct libxenvchan *(*server_init)(struct xentoollog_logger *, int,
					   const char *, size_t, size_t);
	struct libxenvchan *(*client_init)(struct xentoollog_logger *, int,
					   const char *);
	int  (*read)(struct libxenvchan *, void *, size_t);
	int  (*write)(struct libxenvchan *, const void *, size_t);
	int  (*wait)(struct libxenvchan *);
	int  (*fd_for_select)(struct libxenvchan *);
	int  (*is_open)(struct libxenvchan *);
	int  (*data_ready)(struct libxenvchan *);
	int  (*buffer_space)(struct libxenvchan *);
	void (*close)(struct libxenvchan *);
};

struct xw_xen {
	struct libxenvchan *v;
	/* libxenvchan_wait() does a blocking read of the event channel: two
	 * threads woken by one event must not both read it.  Held only around
	 * a 0-timeout readiness check and that read. */
	pthread_mutex_t ack_lock;
	uint8_t *stash;                 /* peeked bytes, already out of the vchan */
	size_t   stash_len, stash_off;
	int      evfd;                  /* the event channel's fd */
	int      epfd;                  /* -1, or epoll of evfd + decision efd0 */
	struct xway_chan *decision;     /* pending offer's local header, or NULL */
	int      decision_drained;      /* efd0 left the epoll set (ack_lock) */
	/* One event channel wakes both directions: a thread that consumes
	 * a notification (xen_ack) may take the one another thread (or,
	 * after a followed fork, another process) was about to sleep for.
	 * The counts of consumed notifications and of sleepers live in the
	 * shared endpoint state (ep->xen_acks, xen_sleepers; see xen_wait). */
	void    *map;                   /* fd-based end: our mapping, else NULL */
	size_t   map_len;
	/* The process that mapped the rings.  A fork child of the client
	 * end has no mapping (gntdev's is VM_DONTCOPY in a PV domain), and
	 * a child of either end must not end the channel for its parent:
	 * elsewhere, nothing touches the shared page (see xw_xen_revert). */
	pid_t    map_pid;
	/* A fork being followed (xway_chan_xen_fork_prepare): set in the
	 * parent before the fork, consumed by the child and the parent after
	 * it.  fork_gfd: a gntdev descriptor with one fresh map of the same
	 * grants (the broker's REMAP), for the child of a client end. */
	int      forking;
	int      fork_gfd;
	uint64_t fork_off;
	/* A server end built from descriptors keeps its gntalloc descriptor
	 * (the grants live while it is open or mapped), so that another
	 * process can map the same grants (SCM_RIGHTS, xway_chan_xen_
	 * share_fds); geo is the geometry they are mapped with. */
	int      gnt_fd;
	struct xway_xen_vchan geo;
	/* Set just before close by a holder that is not the last: the
	 * channel goes on in another process, so no "gone" to the peer. */
	int      quiet;
	/* Sandboxed (xway_chan_xen_mute): this process may not notify the
	 * event channel (an ioctl); mute_fn asks someone who may, and the
	 * data path copies with vc_muted_read/write instead of libxenvchan's
	 * (which notify by themselves). */
	void   (*mute_fn)(void *arg);
	void    *mute_arg;
};

/* libxenevtchn, for the fd-based ends (loaded on first use). */
static struct {
	void *dl;
	xenevtchn_handle *(*fdopen)(struct xentoollog_logger *, int, unsigned);
	int (*notify)(xenevtchn_handle *, evtchn_port_t);
	int (*close)(xenevtchn_handle *);
} evl;
static pthread_once_t evl_once = PTHREAD_ONCE_INIT;

static void evl_load(void)
{
	const char *names[] = { "libxenevtchn.so.1", "libxenevtchn.so" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]) && !evl.dl; i++)
		evl.dl = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
	if (!evl.dl)
		return;
	*(void **)&evl.fdopen = dlsym(evl.dl, "xenevtchn_fdopen");
	*(void **)&evl.notify = dlsym(evl.dl, "xenevtchn_notify");
	*(void **)&evl.close = dlsym(evl.dl, "xenevtchn_close");
	if (!evl.fdopen || !evl.notify || !evl.close) {
		dlclose(evl.dl);
		evl.dl = NULL;
	}
}

static struct xw_vchan_lib lib;
static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static const char *lib_why;

static void lib_load(void)
{
	/* Test hook (never set in production): a stand-in library, see
	 * tests/unit/chan/fake_xenvchan.c. */
	const char *test_lib = secure_getenv("XWAY_TEST_XENVCHAN_LIB");
	const char *names[] = { "libxenvchan.so.4.17", "libxenvchan.so" };

	if (test_lib && *test_lib)
		names[0] = names[1] = test_lib;
	struct { const char *sym; void **slot; } syms[] = {
		{ "libxenvchan_server_init", (void **)&lib.server_init },
		{ "libxenvchan_client_init", (void **)&lib.client_init },
		{ "libxenvchan_read", (void **)&lib.read },
		{ "libxenvchan_write", (void **)&lib.write },
		{ "libxenvchan_wait", (void **)&lib.wait },
		{ "libxenvchan_fd_for_select", (void **)&lib.fd_for_select },
		{ "libxenvchan_is_open", (void **)&lib.is_open },
		{ "libxenvchan_data_ready", (void **)&lib.data_ready },
		{ "libxenvchan_buffer_space", (void **)&lib.buffer_space },
		{ "libxenvchan_close", (void **)&lib.close },
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]) && !lib.dl; i++)
		lib.dl = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
	if (!lib.dl) {
		lib_why = "libxenvchan.so.4.17 not found (install libxenmisc4.17)";
		return;
	}
	for (size_t i = 0; i < sizeof(syms) / sizeof(syms[0]); i++) {
		*syms[i].slot = dlsym(lib.dl, syms[i].sym);
		if (!*syms[i].slot) {
			lib_why = "libxenvchan lacks a needed symbol";
			dlclose(lib.dl);
			lib.dl = NULL;
			return;
		}
	}
}

int xway_chan_xen_available(const char **why)
{
	static const char *const devs[] = { "evtchn", "gntalloc", "gntdev" };
	/* Test hook (never set in production): where the device nodes are. */
	const char *dir = secure_getenv("XWAY_TEST_XEN_DEVDIR");
	const char *w = NULL;
	char path[256];

	if (!dir || !*dir)
		dir = "/dev/xen";
	for (size_t i = 0; i < sizeof(devs) / sizeof(devs[0]) && !w; i++)
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, devs[i]) >= sizeof(path) ||
		    access(path, R_OK | W_OK) != 0)
			w = errno == ENOENT
				? "/dev/xen/evtchn, gntalloc or gntdev absent: not a Xen domain (or xen-evtchn/xen-gntdev/xen-gntalloc not loaded)"
				: "no access to /dev/xen/evtchn, gntalloc or gntdev";
	if (!w) {
		pthread_once(&lib_once, lib_load);
		w = lib_why;
	}
	if (why)
		*why = w ? w : "available";
	return w == NULL;
}

/* ---- leaving for TCP: the flags ------------------------------------------
 *
 * libxenvchan's shared page has no spare word, but each notify byte (the
 * one side sets VCHAN_NOTIFY_* bits in it to ask for a notification, the
 * other clears them one by one with an atomic AND) has six unused bits.
 * A leaver (xw_xen_revert) sets two in the byte its peer reads, as a local
 * ring's REVERT flags: STOPPED after its last consume (its cons index is
 * final: the peer takes back the rest and re-sends it on TCP), FINAL after
 * its last produce (once the peer read the ring empty, TCP carries the
 * rest).  Both ends run this shim; a peer's flags are hints that only
 * move this connection to TCP, which that peer controls anyway.
 */
#define XW_XEN_F_STOPPED 0x40u
#define XW_XEN_F_FINAL   0x80u

/* Whether this process may touch the shared page: not after we left (a
 * fork child made after the leave may lack the mapping), and in another
 * process than the one that mapped it only at the server end (gntalloc's
 * mapping is copied at fork, gntdev's is not). */
static int xen_mapped_here(struct xway_chan *c)
{
	return atomic_load_explicit(&c->ep->failed, memory_order_relaxed) != 2 &&
	       (c->xen->map_pid == xw_pid() || c->xen->v->is_server);
}

/* Before a data call: 0, -ECANCELED once we left (TCP from now on), or
 * -EPROTO in a child that got no mapping (no fork hook of ours ran). */
static int xen_usable(struct xway_chan *c)
{
	if (atomic_load_explicit(&c->ep->failed, memory_order_relaxed) == 2)
		return -ECANCELED;
	return xen_mapped_here(c) ? 0 : -EPROTO;
}

/* The peer's flags, from the byte it sets bits in for us.  Acquire: pairs
 * with the leaver's release OR; what follows (the ring indices) is at
 * least as new as the flag says. */
static unsigned xen_peer_flags(struct xway_chan *c)
{
	struct libxenvchan *v = c->xen->v;

	if (!v->ring)
		return 0;      /* tests' stand-in library: no shared page */
	uint8_t *b = v->is_server ? &v->ring->srv_notify : &v->ring->cli_notify;

	return __atomic_load_n(b, __ATOMIC_ACQUIRE) & (XW_XEN_F_STOPPED | XW_XEN_F_FINAL);
}

/* ---- notifications, and the copies of a sandboxed (muted) end ------------ */

static void xen_notify(struct xway_chan *c)
{
	struct xw_xen *x = c->xen;

	if (x->mute_fn)
		x->mute_fn(x->mute_arg);
	else
		evl.notify(x->v->event, x->v->event_port);
}

/* As libxenvchan's request_notify: ask the peer to tell us (the byte it
 * reads its requests from).  Sequentially consistent, as its __sync op. */
static void vc_request_notify(struct libxenvchan *v, uint8_t bit)
{
	uint8_t *n = v->is_server ? &v->ring->cli_notify : &v->ring->srv_notify;

	__atomic_or_fetch(n, bit, __ATOMIC_SEQ_CST);
}

/* As libxenvchan's send_notify, through xen_notify.  The full fence orders
 * the caller's index store before the look at the peer's request; the
 * AND leaves our leave flags (XW_XEN_F_*) in the byte alone. */
static void vc_send_notify(struct xway_chan *c, uint8_t bit)
{
	struct libxenvchan *v = c->xen->v;
	uint8_t *n = v->is_server ? &v->ring->srv_notify : &v->ring->cli_notify;

	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (__atomic_fetch_and(n, (uint8_t)~bit, __ATOMIC_SEQ_CST) & bit)
		xen_notify(c);
}

/* libxenvchan_write (non-blocking) without its own notify.  The peer's
 * cons is untrusted: more than a ring's worth "free" is none. */
static int vc_muted_write(struct xway_chan *c, const void *data, size_t size)
{
	struct libxenvchan *v = c->xen->v;
	uint32_t sz = 1u << v->write.order, prod, cons, space, off, first;

	if (!lib.is_open(v))
		return -1;
	prod = __atomic_load_n(&v->write.shr->prod, __ATOMIC_RELAXED);
	/* Acquire: the peer's reads of the bytes it consumed are done. */
	cons = __atomic_load_n(&v->write.shr->cons, __ATOMIC_ACQUIRE);
	space = sz - (prod - cons);
	if (space > sz)
		space = 0;
	if (space < size) {
		vc_request_notify(v, VCHAN_NOTIFY_READ);
		cons = __atomic_load_n(&v->write.shr->cons, __ATOMIC_ACQUIRE);
		space = sz - (prod - cons);
		if (space > sz)
			space = 0;
	}
	if (size > space)
		size = space;
	if (!size)
		return 0;
	off = prod & (sz - 1);
	first = sz - off < size ? sz - off : (uint32_t)size;
	memcpy((uint8_t *)v->write.buffer + off, data, first);
	memcpy(v->write.buffer, (const uint8_t *)data + first, size - first);
	/* Release: the bytes before the index that publishes them. */
	__atomic_store_n(&v->write.shr->prod, prod + (uint32_t)size, __ATOMIC_RELEASE);
	vc_send_notify(c, VCHAN_NOTIFY_WRITE);
	return (int)size;
}

/* libxenvchan_read (non-blocking) without its own notify; -1 when the
 * peer is gone and nothing is left, as it. */
static int vc_muted_read(struct xway_chan *c, void *data, size_t size)
{
	struct libxenvchan *v = c->xen->v;
	uint32_t sz = 1u << v->read.order, prod, cons, ready, off, first;

	cons = __atomic_load_n(&v->read.shr->cons, __ATOMIC_RELAXED);
	/* Acquire: the bytes the peer published before its index. */
	prod = __atomic_load_n(&v->read.shr->prod, __ATOMIC_ACQUIRE);
	ready = prod - cons;
	if (ready > sz)
		ready = 0;
	if (ready < size) {
		vc_request_notify(v, VCHAN_NOTIFY_WRITE);
		prod = __atomic_load_n(&v->read.shr->prod, __ATOMIC_ACQUIRE);
		ready = prod - cons;
		if (ready > sz)
			ready = 0;
	}
	if (!ready)
		return lib.is_open(v) ? 0 : -1;
	if (size > ready)
		size = ready;
	off = cons & (sz - 1);
	first = sz - off < size ? sz - off : (uint32_t)size;
	memcpy(data, (const uint8_t *)v->read.buffer + off, first);
	memcpy((uint8_t *)data + first, v->read.buffer, size - first);
	/* Release: our copy out is done before the space is the peer's. */
	__atomic_store_n(&v->read.shr->cons, cons + (uint32_t)size, __ATOMIC_RELEASE);
	vc_send_notify(c, VCHAN_NOTIFY_READ);
	return (int)size;
}

static int xen_write(struct xway_chan *c, const void *p, size_t n)
{
	return c->xen->mute_fn ? vc_muted_write(c, p, n) : lib.write(c->xen->v, p, n);
}

static int xen_read(struct xway_chan *c, void *p, size_t n)
{
	return c->xen->mute_fn ? vc_muted_read(c, p, n) : lib.read(c->xen->v, p, n);
}

/* ---- data path ----------------------------------------------------------- */

static ssize_t xen_sendv(struct xway_chan *c, const struct iovec *iov, int iovcnt)
{
	struct libxenvchan *v = c->xen->v;
	ssize_t done = 0;
	int r;

	if ((r = xen_usable(c)))
		return r;
	if ((r = xw_lock(&c->ep->tx_lock)))
		return r;
	/* We left while we waited for the lock, or the peer did (take back,
	 * then TCP). */
	if (atomic_load_explicit(&c->ep->failed, memory_order_relaxed) == 2 ||
	    (xen_peer_flags(c) & XW_XEN_F_STOPPED)) {
		xw_unlock(&c->ep->tx_lock);
		return -ECANCELED;
	}
	if (!lib.is_open(v)) {
		xw_unlock(&c->ep->tx_lock);
		return -EPIPE;
	}
	for (int i = 0; i < iovcnt; i++) {
		const uint8_t *p = iov[i].iov_base;
		size_t left = iov[i].iov_len;

		while (left) {
			size_t k = left > INT32_MAX ? INT32_MAX : left;
			int n = xen_write(c, p, k);

			if (n < 0) {
				/* libxenvchan_write says -1 when closed. */
				if (!done)
					done = lib.is_open(v) ? -EIO : -EPIPE;
				goto out;
			}
			if (n == 0)
				goto out;
			done += n; p += n; left -= n;
		}
	}
out:
	xw_unlock(&c->ep->tx_lock);
	if (done > 0)
		atomic_fetch_add(&c->ep->st_tx, done);
	else if (done == 0) {
		for (int i = 0; i < iovcnt; i++)
			if (iov[i].iov_len)
				return -EAGAIN;
	}
	return done;
}

/* Make the stash hold at least `want` bytes if the vchan has them. */
static int stash_fill(struct xway_chan *c, size_t want)
{
	struct xw_xen *x = c->xen;
	int n;

	if (want > XW_XEN_STASH_MAX)
		want = XW_XEN_STASH_MAX;
	if (x->stash_off) {
		memmove(x->stash, x->stash + x->stash_off, x->stash_len - x->stash_off);
		x->stash_len -= x->stash_off;
		x->stash_off = 0;
	}
	if (x->stash_len >= want)
		return 0;
	n = xen_read(c, x->stash + x->stash_len, want - x->stash_len);
	if (n < 0)
		return lib.is_open(x->v) ? -EIO : 0;   /* closed: peek sees EOF */
	x->stash_len += n;
	return 0;
}

static ssize_t xen_recvv_once(struct xway_chan *c, const struct iovec *iov, int iovcnt,
			      unsigned flags, unsigned *pf)
{
	struct xw_xen *x = c->xen;
	ssize_t done = 0;
	size_t want = 0;
	int r;

	for (int i = 0; i < iovcnt; i++)
		want += iov[i].iov_len;
	if (!want)
		return 0;
	if ((r = xw_lock(&c->ep->rx_lock)))
		return r;
	if (atomic_load_explicit(&c->ep->failed, memory_order_relaxed) == 2) {
		xw_unlock(&c->ep->rx_lock);
		return -ECANCELED;     /* we left while we waited for the lock */
	}
	/* Before the ring: a leaver publishes all its bytes before FINAL. */
	*pf = xen_peer_flags(c);
	if (flags & XWAY_RECV_PEEK) {
		r = stash_fill(c, want);
		if (r) {
			done = r;
			goto out;
		}
	}
	size_t off = x->stash_off;      /* peek walks the stash, never eats */

	for (int i = 0; i < iovcnt; i++) {
		uint8_t *p = iov[i].iov_base;
		size_t left = iov[i].iov_len;

		while (left) {
			size_t have = x->stash_len - off;
			int n;

			if (have) {
				size_t k = have < left ? have : left;

				if (p)
					memcpy(p, x->stash + off, k);
				off += k;
				if (!(flags & XWAY_RECV_PEEK))
					x->stash_off = off;
				n = k;
			} else if (flags & XWAY_RECV_PEEK) {
				goto out;
			} else {
				uint8_t tmp[4096];
				size_t k = left > INT32_MAX ? INT32_MAX : left;

				if (!p && k > sizeof(tmp))
					k = sizeof(tmp);
				n = xen_read(c, p ? (void *)p : tmp, k);
				if (n < 0) {
					/* -1 when closed and drained: EOF below. */
					if (!done && lib.is_open(x->v))
						done = -EIO;
					goto out;
				}
				if (n == 0)
					goto out;
			}
			done += n; left -= n;
			if (p)
				p += n;
		}
	}
out:
	if (x->stash_off == x->stash_len)
		x->stash_off = x->stash_len = 0;
	xw_unlock(&c->ep->rx_lock);
	if (done > 0 && !(flags & XWAY_RECV_PEEK))
		atomic_fetch_add(&c->ep->st_rx, done);
	if (done == 0 && (*pf & XW_XEN_F_FINAL))
		return -ECANCELED;     /* the leaver's bytes are all read: TCP now */
	if (done == 0)
		return lib.is_open(x->v) ? -EAGAIN : 0;   /* peer gone: EOF */
	return done;
}

static ssize_t xen_recvv(struct xway_chan *c, const struct iovec *iov, int iovcnt,
			 unsigned flags)
{
	unsigned pf = 0;
	ssize_t n;

	if ((n = xen_usable(c)))
		return n;
	n = xen_recvv_once(c, iov, iovcnt, flags, &pf);
	/* "Closed" may be a leaver that set FINAL after our look at the
	 * flags and then unmapped (exec, exit: the kernel clears its live
	 * byte): read once more under the new flags, or its last bytes
	 * would pass for EOF. */
	if (n == 0 && !(pf & XW_XEN_F_FINAL) && (xen_peer_flags(c) & XW_XEN_F_FINAL))
		n = xen_recvv_once(c, iov, iovcnt, flags, &pf);
	return n;
}

static size_t xen_readable(struct xway_chan *c)
{
	if (!xen_mapped_here(c))
		return 0;
	int n = lib.data_ready(c->xen->v);

	return (n > 0 ? (size_t)n : 0) + c->xen->stash_len - c->xen->stash_off;
}

/*
 * Free space in our write ring, read from the indices without asking the
 * peer to notify us when it consumes (libxenvchan_buffer_space asks every
 * time).  One event channel carries both directions: with that request
 * standing, each of the peer's reads woke us, and an edge-triggered
 * EPOLLIN registration reported an "arrival" that was only the peer
 * reading (tcpsem `et` across domains: "ET: quiet again").  Only a waiter
 * for EV_OUT whose ring is short of space asks (xen_poll_req).  The
 * peer's cons is untrusted: more than a ring's worth used is none free.
 */
static int xen_space(struct libxenvchan *v)
{
	if (!v->ring)
		return lib.buffer_space(v);   /* tests' stand-in library */
	uint32_t sz = 1u << v->write.order;
	uint32_t prod = __atomic_load_n(&v->write.shr->prod, __ATOMIC_RELAXED);
	/* Acquire: the peer's reads of what it consumed are done. */
	uint32_t used = prod - __atomic_load_n(&v->write.shr->cons, __ATOMIC_ACQUIRE);

	return used > sz ? 0 : (int)(sz - used);
}

static size_t xen_unsent(struct xway_chan *c)
{
	if (!xen_mapped_here(c))
		return 0;
	int n = xen_space(c->xen->v);

	return n >= 0 && (size_t)n < c->tx.size ? c->tx.size - n : 0;
}

static unsigned xen_poll_req(struct xway_chan *c, unsigned want);

static unsigned xen_poll(struct xway_chan *c)
{
	return xen_poll_req(c, 0);
}

/* The level; want: what the caller will sleep for (EV_OUT: ask the peer
 * to tell us of its reads when we are short of space). */
static unsigned xen_poll_req(struct xway_chan *c, unsigned want)
{
	unsigned m = 0;

	if (atomic_load_explicit(&c->ep->failed, memory_order_relaxed) == 2)
		return XWAY_EV_REVERT | XWAY_EV_IN | XWAY_EV_OUT;   /* we left */
	if (!xen_mapped_here(c))
		return XWAY_EV_ERR | XWAY_EV_IN | XWAY_EV_OUT;      /* no mapping here */
	if (xen_peer_flags(c))
		m |= XWAY_EV_REVERT | XWAY_EV_OUT;   /* the peer left: sends go to TCP */
	/* data_ready also asks the peer to notify us of its writes. */
	if (xen_readable(c) > 0)
		m |= XWAY_EV_IN;
	/* Writable once a third of the ring is free, as kernel TCP (see
	 * xw_local_poll). */
	int space = xen_space(c->xen->v);
	if ((want & XWAY_EV_OUT) && c->xen->v->ring && 3 * (size_t)space < c->tx.size) {
		/* Then look again: a read between the look and the request
		 * would not notify. */
		vc_request_notify(c->xen->v, VCHAN_NOTIFY_READ);
		space = xen_space(c->xen->v);
	}
	if (space > 0 && 3 * (size_t)space >= c->tx.size)
		m |= XWAY_EV_OUT;
	if (!lib.is_open(c->xen->v))
		m |= XWAY_EV_IN | XWAY_EV_RDHUP | XWAY_EV_OUT | XWAY_EV_HUP;
	if (c->xen->decision &&
	    (xway_chan_attached(c->xen->decision) != XWAY_ATTACH_PENDING ||
	     xway_chan_xen_peer_attached(c)))
		m |= XWAY_EV_ATTACH;
	return m;
}

static int xen_unsupported(struct xway_chan *c)
{
	(void)c;
	return -EOPNOTSUPP;
}

/* Consume a pending event-channel notification, without blocking; once
 * the broker decided, take the decision eventfd out of the epoll set (its
 * one wake-up was seen: the caller re-reads the decision word next). */
static void xen_ack(struct xway_chan *c)
{
	struct xw_xen *x = c->xen;
	struct pollfd p = { .fd = x->evfd, .events = POLLIN };

	pthread_mutex_lock(&x->ack_lock);
	if (xw_sys_ppoll(&p, 1, &(struct timespec){ 0, 0 }) > 0) {
		lib.wait(x->v);
		/* Release: orders the consumed notification before a waiter's
		 * acquire re-read of acks, so it re-checks the rings. */
		atomic_fetch_add_explicit(&c->ep->xen_acks, 1, memory_order_release);
	}
	if (x->decision && x->epfd >= 0 && !x->decision_drained &&
	    xway_chan_attached(x->decision) != XWAY_ATTACH_PENDING) {
		epoll_ctl(x->epfd, EPOLL_CTL_DEL, x->decision->fds[1], NULL);
		x->decision_drained = 1;
		/* Decided for good: only the header's mapping (the decision
		 * word) is read from now on.  Its three descriptors go: a
		 * client holding 1000 Xen connections kept 6000 descriptors
		 * (TCP, event channel, epoll set and these), 3000 now. */
		for (int i = 0; i < 3; i++)
			if (x->decision->fds[i] >= 0) {
				xw_sys_close(x->decision->fds[i]);
				x->decision->fds[i] = -1;
			}
	}
	pthread_mutex_unlock(&x->ack_lock);
}

/*
 * Arm for a watcher that sleeps on the notification fd itself (poll() and
 * epoll mirror it into the application's wait): consume a notification
 * already there first.  Xen's evtchn driver masks the port when it fires
 * and delivers nothing more until it is consumed and unmasked
 * (libxenvchan_wait); an epoll record, registered edge-triggered, never
 * reads the fd, so without this one wake-up was the last: an event loop
 * (apache's event MPM, nginx) waiting for EPOLLOUT stalled mid-transfer.
 * Consuming before the ring check below loses nothing: that check sees
 * whatever the notification was about.
 */
static unsigned xen_arm(struct xway_chan *c, unsigned events)
{
	/* A poll()er sleeps on the fd itself: a pending notification wakes
	 * it at once and it drains then.  Skipping the ack saves a system
	 * call per connection and round: a server polling 1000 connections
	 * made 1000 of them (through the hypervisor, in a PV domain) before
	 * each sleep. */
	if (!(events & XWAY_EV_SELF_DRAIN))
		xen_ack(c);
	events &= ~XWAY_EV_SELF_DRAIN;
	return xen_poll_req(c, events) & (events | XWAY_EV_ERR | XWAY_EV_REVERT);
}

/*
 * A thread between its readiness check and its ppoll() can lose its
 * wake-up to another thread of ours that consumes the notification
 * (xen_ack) meanwhile: the event channel is no longer readable, and the
 * peer sends no second one for the same request.  Seen as a hang of a
 * bulk transfer both ways at once (a writer thread and a reader sleeping
 * on one endpoint).  So a waiter re-checks when an ack happened since its
 * check began, and while another thread also waits, it sleeps in slices
 * of XW_XEN_SHARED_SLICE_NS and re-checks (a lost wake-up costs at most
 * that).  A lone waiter sleeps in slices of XW_XEN_ALONE_SLICE_NS: it
 * cannot tell that a second one arrives later and takes its wake-up
 * while it sleeps (it did sleep for as long as it asked, and the bulk
 * case hung: the server's writer thread slept forever in ppoll while its
 * reader consumed the writer's notification, 1 run in 2 on the test bed);
 * at its next slice it sees the other and shortens its slices.
 */
#define XW_XEN_SHARED_SLICE_NS 10000000LL
#define XW_XEN_ALONE_SLICE_NS  100000000LL

static int xen_wait_one(struct xway_chan *c, unsigned events, int extra_fd,
			int timeout_ms, const sigset_t *sleep_mask)
{
	unsigned want = events | XWAY_EV_ERR | XWAY_EV_REVERT;
	struct timespec t0 = { 0, 0 }, t;
	int t0_set = 0;
	unsigned m;

	for (;;) {
		struct pollfd p[2] = {
			{ .fd = c->pollfd, .events = POLLIN },
			{ .fd = extra_fd, .events = POLLIN | POLLRDHUP },
		};
		struct timespec ts, *tsp = NULL;
		int64_t left = -1;
		long r;
		/* Acquire: pairs with xen_ack's release increment. */
		unsigned a0 = atomic_load_explicit(&c->ep->xen_acks, memory_order_acquire);

		m = xen_poll_req(c, events);   /* re-checks after asking for notification */
		if (m & want)
			return m;
		if (timeout_ms >= 0) {
			/* The clock only when we are about to sleep with a
			 * limit: a system call where a PV guest has no vDSO
			 * clock, and most waits find their event at once. */
			clock_gettime(CLOCK_MONOTONIC, &t);
			if (!t0_set) {
				t0 = t;
				t0_set = 1;
			}
			left = (int64_t)timeout_ms * 1000000 -
			       ((t.tv_sec - t0.tv_sec) * 1000000000LL +
				(t.tv_nsec - t0.tv_nsec));
			if (left <= 0)
				return 0;
		}
		/* Acquire: as above; a notification consumed since a0 may
		 * have been ours. */
		if (atomic_load_explicit(&c->ep->xen_acks, memory_order_acquire) != a0)
			continue;
		/* Others that may consume our notification: threads in here,
		 * and poll()/epoll watchers of the endpoint (xway_chan_sleeper),
		 * which consume it in xen_arm / xen_ack. */
		int64_t slice = XW_XEN_ALONE_SLICE_NS;
		if (atomic_load_explicit(&c->ep->xen_sleepers, memory_order_relaxed) > 1 ||
		    atomic_load_explicit(&c->ep->sleep_in, memory_order_relaxed) > 0 ||
		    atomic_load_explicit(&c->ep->sleep_out, memory_order_relaxed) > 0)
			slice = XW_XEN_SHARED_SLICE_NS;
		if (left < 0 || left > slice)
			left = slice;
		if (left >= 0) {
			ts.tv_sec = left / 1000000000LL;
			ts.tv_nsec = left % 1000000000LL;
			tsp = &ts;
		}
		r = xw_sys_ppoll_mask(p, extra_fd >= 0 ? 2 : 1, tsp, sleep_mask);
		if (r < 0)
			return (int)r;
		atomic_fetch_add(&c->ep->st_sleeps, 1);
		if (r > 0 && (p[0].revents & POLLIN))
			xen_ack(c);
		if (extra_fd >= 0 && p[1].revents)
			return xen_poll(c) | XWAY_EV_EXTRA;
	}
}

static int xen_wait(struct xway_chan *c, unsigned events, int extra_fd,
		    int timeout_ms)
{
	sigset_t all, old;
	int r;

	/* Signals are blocked except inside ppoll (its mask is the caller's
	 * own), so one that arrives between two slices waits for the next
	 * ppoll and interrupts it: the wait returns -EINTR as a blocking
	 * recv on kernel TCP would.  Without this a signal that landed
	 * between slices ran its handler and the wait slept on (tcpsem
	 * `intr` across domains: a 100 ms itimer against 100 ms slices). */
	sigfillset(&all);
	sigdelset(&all, SIGSEGV);
	sigdelset(&all, SIGBUS);
	sigdelset(&all, SIGFPE);
	sigdelset(&all, SIGILL);
	int masked = xw_sys_sigmask(SIG_BLOCK, &all, &old) == 0;

	/* Relaxed: only decides between slices and one long sleep; a stale
	 * count costs one slice or is caught by the acks re-check. */
	atomic_fetch_add_explicit(&c->ep->xen_sleepers, 1, memory_order_relaxed);
	r = xen_wait_one(c, events, extra_fd, timeout_ms, masked ? &old : NULL);
	atomic_fetch_sub_explicit(&c->ep->xen_sleepers, 1, memory_order_relaxed);
	if (masked)
		xw_sys_sigmask(SIG_SETMASK, &old, NULL);
	return r;
}

/* libxenvchan_close's work for an end built from descriptors: our live
 * flag 0, notify, unmap, close the event channel.  The kernel's unmap
 * notification (set by the broker) would clear the flag too; doing it
 * first tells the peer at once, as libxenvchan does. */
static void xen_close_fds(struct xw_xen *x)
{
	struct libxenvchan *v = x->v;

	if (x->map_pid != xw_pid()) {
		/* A fork child's copy: the channel is the mapper's.  The
		 * server end's mapping was copied (gntalloc): drop our copy;
		 * the client end's was not (gntdev, VM_DONTCOPY): nothing is
		 * there, and something else may be mapped there now. */
		if (v->is_server)
			munmap(x->map, x->map_len);
		evl.close(v->event);
		free(v);
		return;
	}

	if (x->fork_gfd >= 0)
		close(x->fork_gfd);
	if (x->quiet) {
		/* Another process holds the connection and maps the channel
		 * too (a followed fork): only our mapping goes.  The client
		 * end's unmap notification is not armed for that reason
		 * (broker/xenvchan.c); the server end's (gntalloc) fires only
		 * when the last mapping of the grants goes. */
		munmap(x->map, x->map_len);
		evl.close(v->event);
		free(v);
		return;
	}
	/* Release: our last writes to the rings before "gone"; the notify
	 * (a hypercall) comes after. */
	if (v->is_server)
		__atomic_store_n(&v->ring->srv_live, 0, __ATOMIC_RELEASE);
	else
		__atomic_store_n(&v->ring->cli_live, 0, __ATOMIC_RELEASE);
	if (x->mute_fn)
		x->mute_fn(x->mute_arg);
	else
		evl.notify(v->event, v->event_port);
	munmap(x->map, x->map_len);
	evl.close(v->event);           /* closes the evtchn descriptor */
	free(v);
}

static void xen_close(struct xway_chan *c)
{
	if (c->xen->decision)
		xway_chan_close(c->xen->decision);
	if (c->xen->epfd >= 0)
		close(c->xen->epfd);
	if (c->xen->map)
		xen_close_fds(c->xen);
	else if (c->xen->map_pid == xw_pid())
		lib.close(c->xen->v);
	else
		close(c->xen->evfd);   /* a fork child's copy: leave the channel be */
	if (c->xen->gnt_fd >= 0)
		close(c->xen->gnt_fd);     /* after the unmap: the grants go */
	free(c->xen->stash);
	free(c->xen);
	xw_chan_free(c);
}

static const struct xway_chan_ops xen_ops = {
	.sendv = xen_sendv,
	.recvv = xen_recvv,
	.readable = xen_readable,
	.unsent = xen_unsent,
	.poll = xen_poll,
	.shutdown_wr = xen_unsupported,
	.close_rd = xen_unsupported,
	.reset = xen_unsupported,
	.wait = xen_wait,
	.arm = xen_arm,
	.ack = xen_ack,
	.close = xen_close,
};

/*
 * The event channel's descriptor is shared from now on (a followed fork,
 * an exec, an SCM_RIGHTS receiver: one open file): O_NONBLOCK, so that no
 * holder blocks in libxenvchan_wait's read of a notification another one
 * consumed.  Raw fcntl: the descriptor is ours, not the application's.
 */
static void evfd_shared(struct xw_xen *x)
{
	long fl = xw_sys_fcntl(x->evfd, F_GETFL, 0);

	if (fl >= 0 && !(fl & O_NONBLOCK))
		xw_sys_fcntl(x->evfd, F_SETFL, fl | O_NONBLOCK);
}

/* ---- set-up -------------------------------------------------------------- */

/*
 * libxenvchan 4.17's server_init mallocs its struct and sets xs_path only
 * once it reaches xenstore; when the grant or event-channel allocation
 * fails before that, its clean-up (libxenvchan_close -> close_xs_srv)
 * frees the uninitialised xs_path: "free(): invalid pointer", and the
 * application died (test bed, 1000 channels at the grant limit).  Work
 * around: hand malloc a zeroed chunk of that size just before the call;
 * glibc's per-thread cache and fast bins give the last freed chunk of a
 * size class back first, and server_init's malloc is its first.  Not a
 * guarantee (another allocator, ASan's quarantine): the real fix is in
 * libxenvchan (initialise xs_path) or in not calling it near exhaustion.
 */
static void xen_zero_next_ctrl(void)
{
	/* Through volatile pointers: the compiler may drop a calloc/free
	 * pair whose memory is never used. */
	static void *(*volatile zalloc)(size_t, size_t) = calloc;
	static void (*volatile release)(void *) = free;

	release(zalloc(1, sizeof(struct libxenvchan)));
}

static int xen_init(int server, int peer_domid, const char *xs_path,
		    const struct xway_chan_params *p, struct xway_chan **out)
{
	uint32_t order = p && p->ring_order ? p->ring_order : XW_DEFAULT_ORDER;
	const char *why;
	struct xway_chan *c;
	struct xw_xen *x;

	if (!out || !xs_path || !*xs_path || peer_domid < 0)
		return -EINVAL;
	if (order < XWAY_RING_ORDER_MIN || order > XWAY_RING_ORDER_MAX)
		return -EINVAL;
	if (!xway_chan_xen_available(&why)) {
		xw_log("xen backend unavailable: %s", why);
		return -ENOSYS;
	}
	x = calloc(1, sizeof(*x));
	if (!x)
		return -ENOMEM;
	pthread_mutex_init(&x->ack_lock, NULL);
	x->epfd = -1;
	x->fork_gfd = -1;
	x->gnt_fd = -1;
	x->stash = malloc(XW_XEN_STASH_MAX);
	c = xw_chan_alloc(0);
	if (!x->stash || !c) {
		free(x->stash);
		free(x);
		if (c)
			xw_chan_free(c);
		return -ENOMEM;
	}
	if (order > XW_XEN_ORDER_CAP)
		order = XW_XEN_ORDER_CAP;
	errno = 0;
	if (server) {
		xen_zero_next_ctrl();
		x->v = lib.server_init(NULL, peer_domid, xs_path,
				       (size_t)1 << order, (size_t)1 << order);
		/* libxenvchan's clean-up may overwrite the errno of the
		 * grant allocation: retry on any failure. */
		if (!x->v && order > XW_XEN_ORDER_LOW) {
			xw_log("libxenvchan_server_init(domid %d, %u KiB rings): %s; "
			       "retrying with %u KiB rings", peer_domid, (1u << order) >> 10,
			       strerror(errno), (1u << XW_XEN_ORDER_LOW) >> 10);
			errno = 0;
			xen_zero_next_ctrl();
			x->v = lib.server_init(NULL, peer_domid, xs_path,
					       (size_t)1 << XW_XEN_ORDER_LOW,
					       (size_t)1 << XW_XEN_ORDER_LOW);
		}
	} else {
		x->v = lib.client_init(NULL, peer_domid, xs_path);
	}
	if (!x->v) {
		int e = errno ? errno : EIO;

		xw_log("libxenvchan_%s_init(domid %d, %s) failed: %s",
		       server ? "server" : "client", peer_domid, xs_path,
		       strerror(e));
		free(x->stash);
		free(x);
		xw_chan_free(c);
		return -e;
	}
	x->v->blocking = 0;        /* our calls never block */
	x->map_pid = xw_pid();
	c->ops = &xen_ops;
	c->backend = XWAY_BACKEND_XEN;
	c->side = server ? 1 : 0;
	c->xen = x;
	c->pollfd = x->evfd = lib.fd_for_select(x->v);
	c->tx.size = 1u << x->v->write.order;   /* for capacity/unsent */
	c->spin_ns = 0;
	*out = c;
	return 0;
}

int xway_chan_xen_server(int peer_domid, const char *xs_path,
			 const struct xway_chan_params *p,
			 struct xway_chan **out)
{
	return xen_init(1, peer_domid, xs_path, p, out);
}

int xway_chan_xen_client(int peer_domid, const char *xs_path,
			 const struct xway_chan_params *p,
			 struct xway_chan **out)
{
	return xen_init(0, peer_domid, xs_path, p, out);
}

static uint32_t vc_ring_pages(uint32_t order)
{
	return order >= 12 ? 1u << (order - 12) : 0;
}

/* The broker's geometry, checked again (the shim trusts its broker only
 * so far): libxenvchan's order limits and a page count that matches. */
static int vc_geometry_ok(const struct xway_xen_vchan *g)
{
	uint32_t lo = g->left_order, ro = g->right_order;

	if (lo < 10 || lo > 20 || ro < 10 || ro > 20 || (lo == ro && lo < 12))
		return 0;
	if (g->map_pages != 1 + vc_ring_pages(lo) + vc_ring_pages(ro))
		return 0;
	return (g->map_offset & 4095) == 0 && g->port != 0;
}

/* Where a ring of this order lives: in the shared page (orders 10/11, at
 * 1024/2048 as init.c puts them) or at page `first` of our mapping. */
static void *vc_ring_buffer(uint8_t *base, uint32_t order, uint32_t first)
{
	if (order == 10)
		return base + 1024;
	if (order == 11)
		return base + 2048;
	return base + (size_t)first * 4096;
}

_Static_assert(offsetof(struct xw_ep, st_tx) == XWAY_EP_TX_BYTES_OFF, "proto.h");
_Static_assert(offsetof(struct xw_ep, st_rx) == XWAY_EP_RX_BYTES_OFF, "proto.h");

/* ep_fd >= 0: the end's state carried over an exec (the client end's
 * grants mapped again through REMAP), its locks and flags live; or, with
 * ep_fresh, an empty state memfd of ours to set up (its broker maps it). */
static int xen_init_fds2(int server, const int fds[2], const struct xway_xen_vchan *g,
			 const struct xway_chan_params *p, int ep_fd, int ep_fresh,
			 struct xway_chan **out);

static int xen_init_fds(int server, const int fds[2], const struct xway_xen_vchan *g,
			const struct xway_chan_params *p, int ep_fd, struct xway_chan **out)
{
	return xen_init_fds2(server, fds, g, p, ep_fd, 0, out);
}

static int xen_init_fds2(int server, const int fds[2], const struct xway_xen_vchan *g,
			 const struct xway_chan_params *p, int ep_fd, int ep_fresh,
			 struct xway_chan **out)
{
	struct libxenvchan *v = NULL;
	struct xway_chan *c = NULL;
	struct xw_xen *x = NULL;
	uint32_t nl;
	uint8_t *base = MAP_FAILED;
	size_t len;
	int gfd = fds ? fds[0] : -1, efd = fds ? fds[1] : -1, e;

	(void)p;
	if (out)
		*out = NULL;
	if (!out || !g || gfd < 0 || efd < 0 || !vc_geometry_ok(g)) {
		e = -EINVAL;
		goto fail;
	}
	pthread_once(&lib_once, lib_load);
	pthread_once(&evl_once, evl_load);
	if (!lib.dl || !evl.dl) {
		xw_log("xen backend unavailable: %s", lib_why ? lib_why
		       : "libxenevtchn.so.1 lacks xenevtchn_fdopen (Xen 4.13 or later needed)");
		e = -ENOSYS;
		goto fail;
	}
	len = (size_t)g->map_pages * 4096;
	base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, gfd, (off_t)g->map_offset);
	if (base == MAP_FAILED) {
		e = -errno;
		xw_log("mapping the vchan pages failed: %s", strerror(-e));
		goto fail;
	}
	/* A client end's mapping keeps the grants and its gntdev descriptor
	 * is not needed any more (another process gets a fresh one from the
	 * broker: REMAP).  A server end keeps its gntalloc descriptor: it is
	 * the only way to map the same grants in another process (an
	 * SCM_RIGHTS receiver), at one descriptor per connection. */
	if (!server) {
		close(gfd);
		gfd = -1;
	} else if ((gfd = xw_fd_to_high(gfd)) >= 0) {
		long fl = xw_sys_fcntl(gfd, F_GETFD, 0);

		if (fl >= 0 && !(fl & FD_CLOEXEC))
			xw_sys_fcntl(gfd, F_SETFD, fl | FD_CLOEXEC);
	}
	x = calloc(1, sizeof(*x));
	v = calloc(1, sizeof(*v));
	/* The end's state in a memfd, so that another process (an exec'd
	 * image, an SCM_RIGHTS receiver) can share it (fork shares it
	 * either way). */
	c = ep_fd < 0 ? xw_chan_alloc(1)
	    : ep_fresh ? xw_chan_alloc_on(ep_fd) : xw_chan_alloc_carried(ep_fd);
	if (x)
		x->stash = malloc(XW_XEN_STASH_MAX);
	if (!x || !v || !c || !x->stash) {
		e = ep_fd >= 0 && !c ? -EINVAL : -ENOMEM;
		goto fail;
	}
	if (ep_fd >= 0 && !ep_fresh &&
	    (c->ep->magic != XW_EP_MAGIC || c->ep->side != (server ? 1u : 0u))) {
		e = -EPERM;            /* not the state of this kind of end */
		goto fail;
	}
	v->event = evl.fdopen(&xw_toollog, efd, 0);
	if (!v->event) {
		e = errno ? -errno : -EIO;
		goto fail;
	}
	efd = -1;                  /* the handle owns it */
	/* struct libxenvchan as init.c fills it; the orders are the broker's
	 * private copies, never re-read from the shared page. */
	nl = vc_ring_pages(g->left_order);
	v->ring = (struct vchan_interface *)base;
	v->event_port = g->port;
	v->is_server = server ? -1 : 0;    /* a 1-bit signed field */
	v->server_persist = 0;
	v->blocking = 0;           /* our calls never block */
	/* The left ring is the server's read side, the right its write
	 * side; the client sees them the other way round. */
	struct libxenvchan_ring *left = server ? &v->read : &v->write;
	struct libxenvchan_ring *right = server ? &v->write : &v->read;

	left->order = g->left_order;
	right->order = g->right_order;
	left->shr = &v->ring->left;
	right->shr = &v->ring->right;
	left->buffer = vc_ring_buffer(base, g->left_order, 1);
	right->buffer = vc_ring_buffer(base, g->right_order, 1 + nl);
	if (!server && (ep_fd < 0 || ep_fresh)) {
		/* libxenvchan_client_init: connected, ask to be told of the
		 * server's writes, wake it.  Release: both stores before the
		 * notify (a hypercall, itself a full barrier). */
		__atomic_store_n(&v->ring->srv_notify, VCHAN_NOTIFY_WRITE, __ATOMIC_RELEASE);
		__atomic_store_n(&v->ring->cli_live, 1, __ATOMIC_RELEASE);
		evl.notify(v->event, v->event_port);
	}
	pthread_mutex_init(&x->ack_lock, NULL);
	x->epfd = -1;
	x->fork_gfd = -1;
	x->gnt_fd = gfd;           /* -1 at a client end */
	gfd = -1;
	x->geo = *g;
	x->v = v;
	x->map = base;
	x->map_len = len;
	x->map_pid = xw_pid();
	c->ops = &xen_ops;
	c->backend = XWAY_BACKEND_XEN;
	c->side = server ? 1 : 0;
	c->xen = x;
	c->pollfd = x->evfd = lib.fd_for_select(v);
	c->tx.size = 1u << v->write.order;
	c->spin_ns = 0;
	if (ep_fd < 0 || ep_fresh) {
		c->ep->side = (uint32_t)c->side;
		/* Release: the fields above before the magic an exec'd image
		 * checks (it maps the memfd after our exec). */
		__atomic_store_n(&c->ep->magic, XW_EP_MAGIC, __ATOMIC_RELEASE);
	}
	*out = c;
	return 0;
fail:
	if (v && v->event)
		evl.close(v->event);
	free(v);
	if (x)
		free(x->stash);
	free(x);
	if (c) {
		if (ep_fd >= 0)
			c->ep_fd = -1;     /* the caller's, as the other fds */
		xw_chan_free(c);
	}
	if (base != MAP_FAILED)
		munmap(base, (size_t)g->map_pages * 4096);
	if (gfd >= 0)
		close(gfd);
	if (efd >= 0)
		close(efd);
	return e;
}

int xway_chan_xen_server_fds(const int fds[2], const struct xway_xen_vchan *v,
			     const struct xway_chan_params *p, struct xway_chan **out)
{
	return xen_init_fds(1, fds, v, p, -1, out);
}

int xway_chan_xen_client_fds(const int fds[2], const struct xway_xen_vchan *v,
			     const struct xway_chan_params *p, struct xway_chan **out)
{
	return xen_init_fds(0, fds, v, p, -1, out);
}

int xway_chan_xen_client_fds_ep(const int fds[2], const struct xway_xen_vchan *v,
				int ep_fd, struct xway_chan **out)
{
	if (ep_fd < 0)
		return xen_init_fds(0, fds, v, NULL, -1, out);
	return xen_init_fds2(0, fds, v, NULL, ep_fd, 1, out);
}

static int xen_reattach(int server, const int fds[3], const struct xway_xen_vchan *v,
			struct xway_chan **out)
{
	if (out)
		*out = NULL;
	if (!fds || fds[2] < 0)
		return -EBADF;
	return xen_init_fds(server, fds, v, NULL, fds[2], out);
}

int xway_chan_xen_reattach(const int fds[3], const struct xway_xen_vchan *v,
			   struct xway_chan **out)
{
	return xen_reattach(0, fds, v, out);
}

int xway_chan_xen_exec_fds(struct xway_chan *c, int *evtchn_fd, int *ep_fd)
{
	int need = xway_chan_xen_fork_need(c);

	if (need < 0)
		return need;
	if (need != 1 || c->ep_fd < 0)
		return -EOPNOTSUPP;    /* server end (gntalloc), or no state memfd */
	evfd_shared(c->xen);        /* with the new image from now on */
	xway_chan_ep_handed(c);
	*evtchn_fd = c->xen->evfd;
	*ep_fd = c->ep_fd;
	return 0;
}

int xway_chan_xen_share_fds(struct xway_chan *c, int fds[3], struct xway_xen_vchan *g)
{
	int need = xway_chan_xen_fork_need(c);

	if (need < 0)
		return need;
	if (need != 0 || c->xen->gnt_fd < 0 || c->ep_fd < 0)
		return -EOPNOTSUPP;    /* client end, or not built from fds */
	evfd_shared(c->xen);        /* with the receiver from now on */
	xway_chan_ep_handed(c);
	fds[0] = c->xen->gnt_fd;
	fds[1] = c->xen->evfd;
	fds[2] = c->ep_fd;
	*g = c->xen->geo;
	return 0;
}

int xway_chan_xen_decision_fds(const struct xway_chan *c, int fds[3])
{
	struct xw_xen *x;
	int r = 0;

	if (!c || c->backend != XWAY_BACKEND_XEN || !c->xen->decision)
		return -ENOENT;
	x = c->xen;
	/* Copies, under ack_lock: xen_ack closes the originals once the
	 * broker decided (another thread may be in it now). */
	pthread_mutex_lock(&x->ack_lock);
	for (int i = 0; i < 3; i++)
		fds[i] = -1;
	for (int i = 0; i < 3 && r == 0; i++) {
		if (x->decision->fds[i] < 0)
			r = -ENOENT;
		else if ((fds[i] = (int)xw_sys_fcntl(x->decision->fds[i], F_DUPFD_CLOEXEC,
						      xway_chan_high_fd_base())) < 0)
			r = fds[i];
	}
	pthread_mutex_unlock(&x->ack_lock);
	if (r < 0)
		for (int i = 0; i < 3; i++)
			if (fds[i] >= 0) {
				xw_sys_close(fds[i]);
				fds[i] = -1;
			}
	return r;
}

int xway_chan_xen_server_reattach(const int fds[3], const struct xway_xen_vchan *v,
				  struct xway_chan **out)
{
	return xen_reattach(1, fds, v, out);
}

/* Every descriptor of the endpoint: the one the app's waits see (the
 * epoll set while an offer was pending, else the event channel), the event
 * channel behind an epoll set, and the decision channel's. */
int xw_xen_fds(const struct xway_chan *c, int *fds, int max)
{
	const struct xw_xen *x = c->xen;
	int n = 0;

	if (n < max && c->pollfd >= 0)
		fds[n++] = c->pollfd;
	if (n < max && x && x->evfd >= 0 && x->evfd != c->pollfd)
		fds[n++] = x->evfd;
	if (n < max && c->ep_fd >= 0)
		fds[n++] = c->ep_fd;
	if (n < max && x && x->gnt_fd >= 0)
		fds[n++] = x->gnt_fd;
	if (x && x->decision)
		for (int i = 0; i < 3 && n < max; i++)
			if (x->decision->fds[i] >= 0)
				fds[n++] = x->decision->fds[i];
	return n;
}

int xway_chan_xen_set_decision(struct xway_chan *c, struct xway_chan *decision)
{
	struct epoll_event ev = { .events = EPOLLIN };
	struct xw_xen *x;
	int ep;

	if (!c || !decision || c->backend != XWAY_BACKEND_XEN ||
	    decision->backend != XWAY_BACKEND_LOCAL || c->xen->decision)
		return -EINVAL;
	x = c->xen;
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		return -errno;
	ev.data.fd = x->evfd;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, x->evfd, &ev) < 0)
		goto fail;
	ev.data.fd = decision->fds[1];
	if (epoll_ctl(ep, EPOLL_CTL_ADD, decision->fds[1], &ev) < 0)
		goto fail;
	x->epfd = xw_fd_to_high(ep);
	x->decision = decision;
	c->pollfd = x->epfd;
	return 0;
fail:
	{
		int e = -errno;

		close(ep);
		return e;
	}
}

int xway_chan_xen_peer_attached(const struct xway_chan *c)
{
	const struct libxenvchan *v;

	if (!c || c->backend != XWAY_BACKEND_XEN)
		return 0;
	v = c->xen->v;
	/* cli_live: 2 until the client connected, 1 while it is, 0 once it
	 * left.  Relaxed: only a hint that the peer's broker said "claimed"
	 * (it connects after that); the data it wrote is ordered by the
	 * vchan's own indexes. */
	return v->is_server &&
	       __atomic_load_n(&v->ring->cli_live, __ATOMIC_RELAXED) != 2;
}

/* Copy out (oldest first) up to len bytes we produced that nobody
 * consumed, and count them consumed; the other side must be done
 * consuming (never connected, or left: STOPPED). */
static ssize_t xen_take_locked(struct xway_chan *c, void *buf, size_t len)
{
	struct libxenvchan_ring *w = &c->xen->v->write;
	uint32_t prod, cons, size, n, off, first;

	size = 1u << w->order;
	/* Acquire: the bytes before the producer index (our own threads
	 * wrote them) and the consumer's final index. */
	prod = __atomic_load_n(&w->shr->prod, __ATOMIC_ACQUIRE);
	cons = __atomic_load_n(&w->shr->cons, __ATOMIC_ACQUIRE);
	n = prod - cons;
	if (n > size)
		return -EPROTO;
	if (n > len)
		n = (uint32_t)len;
	off = cons & (size - 1);
	first = size - off < n ? size - off : n;
	memcpy(buf, (const uint8_t *)w->buffer + off, first);
	memcpy((uint8_t *)buf + first, w->buffer, n - first);
	/* Release: we are done reading those bytes before they count as
	 * consumed. */
	__atomic_store_n(&w->shr->cons, cons + n, __ATOMIC_RELEASE);
	return n;
}

ssize_t xway_chan_xen_take_unsent(struct xway_chan *c, void *buf, size_t len)
{
	if (!c || c->backend != XWAY_BACKEND_XEN || !c->xen->v->is_server)
		return -EINVAL;
	if (xway_chan_xen_peer_attached(c))
		return -EBUSY;
	return xen_take_locked(c, buf, len);
}

/*
 * Leave the channel for TCP (fork, exec, SCM_RIGHTS to a process without
 * the shim, MSG_OOB): as xway_chan_revert for local rings, with the flags
 * in the peer's notify byte.  Refused (-EBUSY) while bytes we already took
 * out of the vchan wait in the peek stash: the peer would not re-send
 * them, and after the leave nothing here reads them.  In the mapping
 * process only.
 */
int xw_xen_revert(struct xway_chan *c)
{
	struct libxenvchan *v = c->xen->v;
	uint8_t *b;
	int r;

	if (!v->ring)
		return -EOPNOTSUPP;    /* tests' stand-in library */
	b = v->is_server ? &v->ring->cli_notify : &v->ring->srv_notify;
	if (atomic_load_explicit(&c->ep->failed, memory_order_relaxed))
		return -EINVAL;
	if (c->xen->map_pid != xw_pid())
		return -EPERM;
	/* One direction at a time (the lock order forbids holding both),
	 * consuming first: the peer trusts FINAL only after STOPPED. */
	if ((r = xw_lock(&c->ep->rx_lock)))
		return r;
	if (c->xen->stash_len != c->xen->stash_off) {
		xw_unlock(&c->ep->rx_lock);
		return -EBUSY;
	}
	atomic_store(&c->ep->failed, 2);
	/* Release: our last consume (cons index) before the peer takes the
	 * rest back. */
	__atomic_fetch_or(b, XW_XEN_F_STOPPED, __ATOMIC_RELEASE);
	xw_unlock(&c->ep->rx_lock);
	if ((r = xw_lock(&c->ep->tx_lock)))
		return r;
	/* Release: every byte we published (and STOPPED) before FINAL. */
	__atomic_fetch_or(b, XW_XEN_F_FINAL, __ATOMIC_RELEASE);
	xw_unlock(&c->ep->tx_lock);
	/* Wake the peer whatever it sleeps for (a hypercall, after the ORs). */
	pthread_once(&evl_once, evl_load);
	if (c->xen->mute_fn)
		c->xen->mute_fn(c->xen->mute_arg);
	else if (evl.dl)
		evl.notify(v->event, v->event_port);
	return 0;
}

/* The staying side: what the leaver did not consume, back for TCP. */
ssize_t xw_xen_take_back(struct xway_chan *c, void *buf, size_t len)
{
	ssize_t n;
	int r;

	if (!xen_mapped_here(c))
		return -EBUSY;
	if ((r = xw_lock(&c->ep->tx_lock)))
		return r;
	n = (xen_peer_flags(c) & XW_XEN_F_STOPPED) ? xen_take_locked(c, buf, len) : -EBUSY;
	xw_unlock(&c->ep->tx_lock);
	return n;
}

unsigned xw_xen_reverted(struct xway_chan *c)
{
	unsigned m = 0, f;

	if (atomic_load_explicit(&c->ep->failed, memory_order_relaxed) == 2)
		m |= XWAY_REVERT_LEFT;
	if (!xen_mapped_here(c))
		return m;
	f = xen_peer_flags(c);
	if (f & XW_XEN_F_STOPPED)
		m |= XWAY_REVERT_PEER_STOPPED;
	if (f & XW_XEN_F_FINAL)
		m |= XWAY_REVERT_PEER_FINAL;
	return m;
}

/* ---- following a fork (docs/DESIGN.md §7.2) ------------------------------
 *
 * A fork child shares the channel with its parent, as a local ring's
 * does: the ring indices are in the vchan's shared page, the locks and
 * flags in the MAP_SHARED struct xway_chan and its endpoint page, the
 * event-channel descriptor is inherited (one open file: a notification
 * wakes every process polling it; O_NONBLOCK so that the one that finds
 * it consumed by another does not block in libxenvchan_wait's read).
 * What the child lacks is the mapping at the client end: gntdev's is not
 * copied in a PV domain (VM_DONTCOPY).  The shim asks its broker for a
 * fresh map of the same grants before the fork (REMAP, proven by the
 * socket as a CLAIM is) and the child maps it, at the parent's address
 * when it can (no pointer changes), else anywhere with struct
 * libxenvchan's pointers moved.  The server end's mapping (gntalloc) is
 * copied by fork.  The peek stash is process-private: an end with peeked
 * bytes does not follow (-EBUSY: the caller leaves instead).
 */

int xway_chan_xen_fork_need(struct xway_chan *c)
{
	struct xw_xen *x;

	if (!c || c->backend != XWAY_BACKEND_XEN)
		return -EINVAL;
	x = c->xen;
	if (!x->map || !x->v->ring || x->map_pid != xw_pid())
		return -EOPNOTSUPP;    /* libxenvchan's own end, or not ours */
	if (atomic_load_explicit(&c->ep->failed, memory_order_relaxed))
		return -EOPNOTSUPP;
	if (x->stash_len != x->stash_off)
		return -EBUSY;
	return x->v->is_server ? 0 : 1;
}

int xway_chan_xen_fork_prepare(struct xway_chan *c, int gfd, const struct xway_xen_vchan *g)
{
	struct xw_xen *x;
	int need = xway_chan_xen_fork_need(c);

	if (need < 0 || (need && (gfd < 0 || !g))) {
		if (gfd >= 0)
			close(gfd);
		return need < 0 ? need : -EINVAL;
	}
	x = c->xen;
	if (need) {
		/* The broker's geometry of the same channel: it must match
		 * what we mapped (the orders never change). */
		if (!vc_geometry_ok(g) || (size_t)g->map_pages * 4096 != x->map_len ||
		    (g->left_order != (x->v->is_server ? x->v->read.order : x->v->write.order)) ||
		    (g->right_order != (x->v->is_server ? x->v->write.order : x->v->read.order))) {
			close(gfd);
			return -EPROTO;
		}
		if (x->fork_gfd >= 0)
			close(x->fork_gfd);
		x->fork_gfd = gfd;
		x->fork_off = g->map_offset;
	}
	evfd_shared(x);             /* with the child from now on */
	x->forking = 1;
	return 0;
}

/* Move struct libxenvchan's pointers into our mapping to a new base. */
static void xen_rebase(struct xw_xen *x, uint8_t *base)
{
	struct libxenvchan *v = x->v;
	ptrdiff_t d = base - (uint8_t *)x->map;

	v->ring = (struct vchan_interface *)((uint8_t *)v->ring + d);
	v->read.shr = (struct ring_shared *)((uint8_t *)v->read.shr + d);
	v->write.shr = (struct ring_shared *)((uint8_t *)v->write.shr + d);
	v->read.buffer = (uint8_t *)v->read.buffer + d;
	v->write.buffer = (uint8_t *)v->write.buffer + d;
	x->map = base;
}

void xway_chan_xen_fork_child(struct xway_chan *c)
{
	struct xw_xen *x;

	if (!c || c->backend != XWAY_BACKEND_XEN || !c->xen->forking)
		return;
	x = c->xen;
	x->forking = 0;
	if (x->fork_gfd >= 0) {
		/* Where the parent's mapping was: in a PV domain nothing is
		 * there in the child.  MAP_FIXED_NOREPLACE never replaces a
		 * mapping; a kernel without it (< 4.17) takes the address as
		 * a hint, and any other address is handled by the rebase. */
		uint8_t *m = mmap(x->map, x->map_len, PROT_READ | PROT_WRITE,
				  MAP_SHARED | MAP_FIXED_NOREPLACE, x->fork_gfd,
				  (off_t)x->fork_off);

		if (m == MAP_FAILED)
			m = mmap(NULL, x->map_len, PROT_READ | PROT_WRITE, MAP_SHARED,
				 x->fork_gfd, (off_t)x->fork_off);
		close(x->fork_gfd);
		x->fork_gfd = -1;
		if (m == MAP_FAILED) {
			/* The child cannot reach the channel: its data calls
			 * fail (-EPROTO), the parent's are unaffected. */
			xw_log("fork: mapping the vchan again failed: %s", strerror(errno));
			return;
		}
		if (m != (uint8_t *)x->map)
			xen_rebase(x, m);
	}
	x->map_pid = xw_pid();
}

void xway_chan_xen_fork_parent(struct xway_chan *c)
{
	if (!c || c->backend != XWAY_BACKEND_XEN)
		return;
	c->xen->forking = 0;
	if (c->xen->fork_gfd >= 0) {
		/* Our copy; the child's keeps the map until it mapped it (a
		 * failed fork: the map goes with this last descriptor). */
		close(c->xen->fork_gfd);
		c->xen->fork_gfd = -1;
	}
}

void xway_chan_xen_others_hold(struct xway_chan *c)
{
	if (c && c->backend == XWAY_BACKEND_XEN)
		c->xen->quiet = 1;
}

int xway_chan_xen_event(struct xway_chan *c, int *fd, uint32_t *port)
{
	if (!c || c->backend != XWAY_BACKEND_XEN || !c->xen->map || !c->xen->v->ring)
		return -EOPNOTSUPP;
	*fd = c->xen->evfd;
	*port = c->xen->v->event_port;
	return 0;
}

void xway_chan_xen_mute(struct xway_chan *c, void (*fn)(void *arg), void *arg)
{
	if (!c || c->backend != XWAY_BACKEND_XEN)
		return;
	c->xen->mute_arg = arg;
	c->xen->mute_fn = fn;
}

int xway_chan_xen_progress(struct xway_chan *c, uint32_t *rx_prod, uint32_t *tx_cons)
{
	struct libxenvchan *v;

	if (!c || c->backend != XWAY_BACKEND_XEN || !xen_mapped_here(c))
		return -EINVAL;
	v = c->xen->v;
	if (!v->ring)
		return -EOPNOTSUPP;    /* tests' stand-in library */
	/* Relaxed: compared for change only; the level is computed apart. */
	*rx_prod = __atomic_load_n(&v->read.shr->prod, __ATOMIC_RELAXED);
	*tx_cons = __atomic_load_n(&v->write.shr->cons, __ATOMIC_RELAXED);
	return 0;
}
