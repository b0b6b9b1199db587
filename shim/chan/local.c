// SPDX-License-Identifier: MIT
/*
 * Set-up of the local backend: the sealed memfd holding the header and both
 * rings, the two eventfds, attaching to a peer's memfd (validated against
 * its real size, its seals and the cookie), and the endpoint object in
 * MAP_SHARED anonymous memory (shared with our own children after fork,
 * never with the peer).  Also the pieces both backends share: the robust
 * locks, the high-fd placement, the usable-CPU count and the log sink.
 *
 * High descriptors: the endpoint's fds are moved with F_DUPFD_CLOEXEC to
 * the lowest free number >= base, where base = 1024 when RLIMIT_NOFILE's
 * soft limit is above 1280 (above select()'s FD_SETSIZE, so select-based
 * applications keep all of 0..1023, and the kernel fd table stays small
 * even when the limit is 1M), else max(limit - 256, limit / 2).  If that
 * fails (everything above base used) the fd stays where it was: correct,
 * only less discreet.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "barrier.h"
#include "chan_int.h"
#include "sys.h"

static void (*log_sink)(const char *line);

void xway_chan_set_logger(void (*fn)(const char *line))
{
	log_sink = fn;
}

static pid_t (*pid_source)(void);

void xway_chan_set_pid_source(pid_t (*fn)(void))
{
	pid_source = fn;
}

pid_t xw_pid(void)
{
	pid_t (*fn)(void) = pid_source;

	return fn ? fn() : getpid();
}

void xw_log(const char *fmt, ...)
{
	char line[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (log_sink) {
		log_sink(line);
		return;
	}
	if ((size_t)n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	/* stderr by default; the shim installs its own sink (which knows
	 * about RLIMIT_FSIZE sandboxes). */
	if (xw_sys_write(2, "xway: ", 6) == 6)
		(void)xw_sys_write(2, line, n);
}

/*
 * The base, computed from the real soft limit (a raw call: the shim shows
 * applications a smaller one through getrlimit, shim/rlimit.c) and kept:
 * a system call less per descriptor placed.  The shim forgets it whenever
 * the application sets its own limit (xway_chan_nofile_changed); a limit
 * changed behind our back (a raw prlimit, another process's) shows as
 * F_DUPFD failing with EINVAL, and the base is computed again then.
 */
static _Atomic int high_base = -1;

static int high_fd_base(void)
{
	struct rlimit rl;
	rlim_t lim = 1024;
	int b = atomic_load_explicit(&high_base, memory_order_relaxed);

	if (b >= 0)
		return b;
	if (xw_raw_syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, 0, (long)&rl, 0) == 0)
		lim = rl.rlim_cur;
	if (lim > 1280)
		b = 1024;
	else if (lim < 16)
		b = 0;
	else
		b = (int)(lim - 256 > lim / 2 ? lim - 256 : lim / 2);
	atomic_store_explicit(&high_base, b, memory_order_relaxed);
	return b;
}

void xway_chan_nofile_changed(void)
{
	atomic_store_explicit(&high_base, -1, memory_order_relaxed);
}

/* xw_fd_to_high with the base computed once by a caller placing several
 * descriptors. */
static int fd_to_high_at(int fd, int base)
{
	int nfd;

	if (fd < 0 || fd >= base)
		return fd;
	nfd = xw_sys_fcntl(fd, F_DUPFD_CLOEXEC, base);
	if (nfd == -EINVAL) {
		/* base is at or above the limit now: it was lowered behind
		 * our back.  The fd stays where it is this time. */
		xway_chan_nofile_changed();
		return fd;
	}
	if (nfd < 0)
		return fd;
	xw_sys_close(fd);
	return nfd;
}

int xw_fd_to_high(int fd)
{
	return fd_to_high_at(fd, high_fd_base());
}

int xway_chan_high_fd_base(void)
{
	return high_fd_base();
}

int xway_chan_fd_to_high(int fd)
{
	return xw_fd_to_high(fd);
}

/*
 * CPUs the peer could run on beside us: the online count.  Our own
 * affinity is not the question (a process pinned to one CPU may well talk
 * to a peer on another, where spinning is exactly right); two processes on
 * the same CPU are caught by the per-wait hint check in io.c.
 */
int xw_usable_cpus(void)
{
	/* Read once per process image: sysconf reads /sys each time (three
	 * system calls per channel); CPU hot-plug only changes whether
	 * spinning pays, never correctness. */
	static _Atomic int cached;
	int n = atomic_load_explicit(&cached, memory_order_relaxed);

	if (n <= 0) {
		long v = sysconf(_SC_NPROCESSORS_ONLN);

		n = v > 0 ? (int)v : 1;
		atomic_store_explicit(&cached, n, memory_order_relaxed);
	}
	return n;
}

uint32_t xw_spin_param(const struct xway_chan_params *p)
{
	if (!p || p->spin_ns == 0)
		return XW_DEFAULT_SPIN_NS;
	if (p->spin_ns == UINT32_MAX)
		return 0;
	return p->spin_ns;
}

/* Size of an endpoint's shared state: whole pages (a memfd's unit). */
static size_t ep_size(void)
{
	return (sizeof(struct xw_ep) + 4095) & ~(size_t)4095;
}

/*
 * A memfd for an endpoint's state, sealed at its size (a mapping of it can
 * never SIGBUS) and placed above the application's numbers; -errno if not
 * possible, and the caller then uses anonymous memory: the end works the
 * same, only an exec cannot carry it (xway_chan_local_reattach).
 */
static int ep_memfd(size_t len, int base, int fsize_checked)
{
	struct rlimit rl;
	int fd;

	/* After a seccomp filter, memfd_create may kill us; ftruncate beyond
	 * RLIMIT_FSIZE raises SIGXFSZ (sshd's pre-auth child sets 0), unless
	 * the caller checked it for a larger file just now. */
	if (xw_excl_sandboxed())
		return -EPERM;
	if (!fsize_checked && getrlimit(RLIMIT_FSIZE, &rl) == 0 &&
	    rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < len)
		return -EFBIG;
	fd = memfd_create("xway-ep", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)len) != 0 ||
	    xw_sys_fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
		xw_sys_close(fd);
		return -EINVAL;
	}
	fd = fd_to_high_at(fd, base);
	if (fd < base) {
		/* No room above the application's range: not worth one of
		 * its low numbers. */
		xw_sys_close(fd);
		return -EMFILE;
	}
	return fd;
}

/*
 * Spare endpoint states.  Making an end's state memfd costs six system
 * calls (memfd_create, ftruncate, the seals, moving it above the
 * application's numbers, its close, mmap) and dropping it two (munmap,
 * close): 16 a local connection, an eighth of everything its two ends and
 * the broker do.  A state this process made and that never reached
 * another process is kept, mapped, for the next end instead (at most
 * XW_SPARE_MAX).  Never reached another: no fork-like event since it was
 * made (the shim reports fork and the fork-like clones it sees, through
 * glibc's clone() and syscall(), with xway_chan_sharing(): the epoch
 * moves), never handed over by exec or SCM_RIGHTS (xway_chan_ep_handed;
 * the Xen hand-over functions mark it themselves), and freed by the
 * process that made it.  A state handed to the broker (a Xen server
 * end's) is not made here.  A spare is zeroed before reuse, as a new
 * memfd is.  Caveat: a child made by _Fork or by a clone system call the
 * shim does not see (inline, not through glibc) while an end is open is
 * invisible to its parent: if the parent closes that end before the
 * child's first call into the shim, the child's use of the connection
 * (already torn down by the parent, as the shim's README says) would land
 * in the state of the parent's next connection.
 *
 * Guarded by a try-flag, not a lock: ends are made inside connect() and
 * accept(), which a signal handler may call while the thread it
 * interrupted is in here; the loser makes or drops a memfd as before.  A
 * fork child's copies (another pid) are closed at its first use.
 */
#define XW_SPARE_MAX 16
static struct { int fd; void *map; } xw_spare[XW_SPARE_MAX];
static int xw_nspare;
static pid_t xw_spare_pid;
static atomic_flag xw_spare_busy = ATOMIC_FLAG_INIT;
static _Atomic unsigned xw_share_epoch;

void xway_chan_sharing(void)
{
	atomic_fetch_add_explicit(&xw_share_epoch, 1, memory_order_relaxed);
}

void xway_chan_ep_handed(struct xway_chan *c)
{
	if (c)
		c->ep_own = 0;
}

/* Under the flag: a fork child's inherited spares are its copies of the
 * parent's (same pages): closed here, never used. */
static void spare_forget_inherited(void)
{
	pid_t me = xw_pid();

	if (xw_spare_pid == me)
		return;
	for (int i = 0; i < xw_nspare; i++) {
		munmap(xw_spare[i].map, ep_size());
		xw_sys_close(xw_spare[i].fd);
	}
	xw_nspare = 0;
	xw_spare_pid = me;
}

/* A spare state (its fd; *map its zeroed mapping), or -1. */
static int spare_take(void **map)
{
	int fd = -1;

	if (atomic_flag_test_and_set_explicit(&xw_spare_busy, memory_order_acquire))
		return -1;
	spare_forget_inherited();
	if (xw_nspare > 0) {
		xw_nspare--;
		fd = xw_spare[xw_nspare].fd;
		*map = xw_spare[xw_nspare].map;
	}
	/* Release: the slot's fields read before another thread reuses it. */
	atomic_flag_clear_explicit(&xw_spare_busy, memory_order_release);
	if (fd >= 0)
		memset(*map, 0, ep_size());
	return fd;
}

/* Keep c's state as a spare; 0 if kept (then nothing is left to free). */
static int spare_put(struct xway_chan *c)
{
	int kept = 0;

	if (!c->ep_own || c->ep_fd < 0 || c->ep_pid != xw_pid() ||
	    c->ep_epoch != atomic_load_explicit(&xw_share_epoch, memory_order_relaxed))
		return -1;
	if (atomic_flag_test_and_set_explicit(&xw_spare_busy, memory_order_acquire))
		return -1;
	spare_forget_inherited();
	if (xw_nspare < XW_SPARE_MAX) {
		xw_spare[xw_nspare].fd = c->ep_fd;
		xw_spare[xw_nspare].map = c->ep;
		xw_nspare++;
		kept = 1;
	}
	/* Release: the slot's fields written before another thread takes it. */
	atomic_flag_clear_explicit(&xw_spare_busy, memory_order_release);
	return kept ? 0 : -1;
}

int xway_chan_spare_fds(int *fds, int max)
{
	int n = 0, got = 0;

	/* Under the flag: a slot read while another thread takes it and its
	 * end is freed could name a descriptor closed since, which the
	 * application may own now (its close() would be refused).  The
	 * holder is inside a few stores; only a signal handler interrupting
	 * it on this very thread waits in vain, and then reads as it is. */
	for (int i = 0; i < 64 && !got; i++) {
		got = !atomic_flag_test_and_set_explicit(&xw_spare_busy, memory_order_acquire);
		if (!got)
			sched_yield();
	}
	for (int i = 0; i < xw_nspare && i < XW_SPARE_MAX && n < max; i++)
		fds[n++] = xw_spare[i].fd;
	if (got)
		atomic_flag_clear_explicit(&xw_spare_busy, memory_order_release);
	return n;
}

/*
 * The endpoint object: the per-process part (pointers, fds), written only
 * here and in the attach that follows, before anyone else sees it, so a
 * fork()ed child's copy serves it (slab.c), and the pointer-free
 * mutable state (struct xw_ep) in a memfd when want_fd (a local end: an
 * exec can carry it; 2: the caller checked RLIMIT_FSIZE for a larger file)
 * or anonymous memory (a decision channel).
 * ep_fd >= 0: map that existing state instead (validated by the caller),
 * whose locks and indices are live in other processes: nothing in it is
 * initialised here.
 */
static int check_ep_fd(int fd);

static struct xway_chan *chan_alloc2(int want_fd, int ep_fd, int base, int fresh);

static struct xway_chan *chan_alloc(int want_fd, int ep_fd, int base)
{
	return chan_alloc2(want_fd, ep_fd, base, ep_fd < 0);
}

static struct xway_chan *chan_alloc2(int want_fd, int ep_fd, int base, int fresh)
{
	struct xway_chan *c = xw_slab_alloc();
	size_t len = ep_size();
	void *e;

	if (!c)
		return NULL;
	c->fds[0] = c->fds[1] = c->fds[2] = -1;
	c->pollfd = c->peer_efd = -1;
	e = MAP_FAILED;
	if (ep_fd < 0 && want_fd) {
		ep_fd = spare_take(&e);
		if (ep_fd < 0)
			ep_fd = ep_memfd(len, base >= 0 ? base : high_fd_base(), want_fd == 2);
		/* Ours alone until handed over (spare_put). */
		c->ep_own = ep_fd >= 0;
		c->ep_pid = xw_pid();
		c->ep_epoch = atomic_load_explicit(&xw_share_epoch, memory_order_relaxed);
	}
	if (e == MAP_FAILED)
		e = ep_fd >= 0 ? mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, ep_fd, 0)
			       : mmap(NULL, len, PROT_READ | PROT_WRITE,
				      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (e == MAP_FAILED) {
		if (fresh && want_fd && ep_fd >= 0)
			xw_sys_close(ep_fd);
		xw_slab_free(c);
		return NULL;
	}
	c->ep = e;
	c->ep_fd = ep_fd;
	c->ep_len = len;
	if (fresh && (xw_lock_init(&c->ep->tx_lock) || xw_lock_init(&c->ep->rx_lock))) {
		xw_chan_free(c);
		return NULL;
	}
	xw_excl_register(c);
	return c;
}

struct xway_chan *xw_chan_alloc(int want_fd)
{
	return chan_alloc(want_fd, -1, -1);
}

/* An end whose state an exec carried (a Xen end, shim/chan/xen.c): the
 * memfd is checked as a local one's, its content by the caller. */
struct xway_chan *xw_chan_alloc_carried(int ep_fd)
{
	if (check_ep_fd(ep_fd) < 0)
		return NULL;
	return chan_alloc(0, ep_fd, -1);
}

struct xway_chan *xw_chan_alloc_on(int ep_fd)
{
	if (check_ep_fd(ep_fd) < 0)
		return NULL;
	return chan_alloc2(0, ep_fd, -1, 1);
}

int xway_chan_ep_create(void)
{
	return ep_memfd(ep_size(), high_fd_base(), 0);
}

void xw_chan_free(struct xway_chan *c)
{
	xw_excl_unregister(c);
	/* The mutexes are not destroyed: after fork or exec another process
	 * may still use this memory, and a robust pshared mutex holds nothing
	 * outside it. */
	if (spare_put(c) != 0) {
		munmap(c->ep, c->ep_len);
		if (c->ep_fd >= 0)
			xw_sys_close(c->ep_fd);
	}
	xw_slab_free(c);
}

static size_t shm_size(uint32_t o0, uint32_t o1)
{
	return (size_t)XWAY_CHAN_HDR_SIZE + ((size_t)1 << o0) + ((size_t)1 << o1);
}

static int order_ok(uint32_t o)
{
	return o >= XWAY_RING_ORDER_MIN && o <= XWAY_RING_ORDER_MAX;
}

static void close_fds(const int fds[3])
{
	for (int i = 0; i < 3; i++)
		if (fds[i] >= 0)
			xw_sys_close(fds[i]);
}

/* Common tail of create and attach: private copies of the geometry, our
 * trusted indices, the hints.  o0/o1 are validated local copies. */
static int local_setup(struct xway_chan *c, struct xway_chan_shm *shm,
		       size_t len, uint32_t o0, uint32_t o1, int side,
		       const int fds[3], const struct xway_chan_params *p,
		       uint64_t cookie, int fresh)
{
	uint8_t *base = (uint8_t *)shm + XWAY_CHAN_HDR_SIZE;
	uint8_t *data[2] = { base, base + ((size_t)1 << o0) };
	uint32_t order[2] = { o0, o1 };
	int peer = 1 - side;
	int cpu = sched_getcpu();
	struct xw_ep *ep = c->ep;

	c->ops = &xw_local_ops;
	c->backend = XWAY_BACKEND_LOCAL;
	c->side = side;
	c->shm = shm;
	c->shm_len = len;
	for (int i = 0; i < 3; i++)
		c->fds[i] = fds[i];
	c->pollfd = fds[1 + side];
	c->peer_efd = fds[1 + peer];
	xw_ring_init(&c->tx, &shm->ring[side], data[side], order[side]);
	xw_ring_init(&c->rx, &shm->ring[peer], data[peer], order[peer]);

	if (fresh) {
		/* Our own indices, read once from the shared page: zero for
		 * a new channel, the state its previous holder left when it
		 * came by SCM_RIGHTS.  They become trusted only if consistent
		 * with the peer's. */
		ep->tx_prod = xw_load_acquire(&c->tx.ctl->prod);
		ep->rx_cons = xw_load_acquire(&c->rx.ctl->cons);
		int64_t sp = xw_ring_space(&c->tx, ep->tx_prod);
		int64_t av = xw_ring_avail(&c->rx, ep->rx_cons);

		if (sp < 0 || av < 0)
			return -EPROTO;
		ep->tx_cons_seen = ep->tx_prod - (c->tx.size - (uint32_t)sp);
		ep->rx_prod_seen = ep->rx_cons + (uint32_t)av;
		ep->cookie = cookie;
		ep->side = (uint32_t)side;
		ep->magic = XW_EP_MAGIC;
	} else {
		/* The state of this very end, live in the processes we share
		 * it with (exec): it stays as it is; only its consistency
		 * with the ring is checked, under each direction's lock. */
		int64_t sp, av;
		int r;

		if ((r = xw_lock(&ep->tx_lock)))
			return r;
		sp = xw_ring_space(&c->tx, ep->tx_prod);
		xw_unlock(&ep->tx_lock);
		if ((r = xw_lock(&ep->rx_lock)))
			return r;
		av = xw_ring_avail(&c->rx, ep->rx_cons);
		xw_unlock(&ep->rx_lock);
		if (sp < 0 || av < 0)
			return -EPROTO;
	}

	c->spin_ns = xw_spin_param(p);
	c->ncpu = xw_usable_cpus();
	if (c->ncpu < 2)
		c->spin_ns = 0;     /* the peer can never run beside us */
	if (fresh)
		atomic_store(&ep->spin_budget_ns, (int)c->spin_ns);
	c->my_hint = &shm->ring[side].spinning;
	c->peer_hint = &shm->ring[peer].spinning;
	xw_store_relaxed(c->my_hint, XW_HINT_AWAKE | (uint32_t)(cpu + 1));
	return 0;
}

int xway_chan_local_create(const struct xway_chan_params *p, uint64_t cookie,
			   struct xway_chan **out, int fds[3])
{
	int decision = p && (p->flags & XWAY_CHAN_F_DECISION);
	uint32_t order = decision ? XWAY_RING_ORDER_MIN
		       : p && p->ring_order ? p->ring_order : XW_DEFAULT_ORDER;
	int f[3] = { -1, -1, -1 };
	struct xway_chan_shm *shm;
	struct xway_chan *c;
	size_t len;
	int r, base;

	if (!out || !fds)
		return -EINVAL;
	if (!order_ok(order))
		return -EINVAL;
	len = shm_size(order, order);
	{
		/* ftruncate beyond RLIMIT_FSIZE raises SIGXFSZ, which kills
		 * (sshd's pre-auth child sets 0): refuse instead, and the
		 * connection stays on TCP. */
		struct rlimit rl;

		if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
		    rl.rlim_cur < len)
			return -EFBIG;
	}
	f[0] = memfd_create("xway-chan", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (f[0] < 0)
		return -errno;
	if (ftruncate(f[0], len) != 0) {
		r = -errno;
		goto out_close;
	}
	/* Sealed before anyone else sees it: the size can never change, so
	 * no mapping of it can ever SIGBUS. */
	r = (int)xw_sys_fcntl(f[0], F_ADD_SEALS,
			      F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
	if (r != 0)
		goto out_close;
	for (int i = 1; i < 3; i++) {
		f[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (f[i] < 0) {
			r = -errno;
			goto out_close;
		}
	}
	base = high_fd_base();
	for (int i = 0; i < 3; i++)
		f[i] = fd_to_high_at(f[i], base);
	/* No number free above the application's range: a channel would
	 * take three of its low numbers, and enough of them give it EMFILE
	 * where kernel TCP would not.  The connection stays on TCP instead
	 * (an attaching server keeps its fds where they are: it has claimed
	 * already). */
	for (int i = 0; i < 3; i++)
		if (f[i] < base) {
			r = -EMFILE;
			goto out_close;
		}
	shm = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, f[0], 0);
	if (shm == MAP_FAILED) {
		r = -errno;
		goto out_close;
	}
	shm->magic = XWAY_CHAN_MAGIC;
	shm->version = XWAY_CHAN_VERSION;
	shm->hdr_size = XWAY_CHAN_HDR_SIZE;
	shm->ring_order[0] = order;
	shm->ring_order[1] = order;
	shm->attached = XWAY_ATTACH_PENDING;
	shm->cookie = cookie;
	/* 2: a state memfd, RLIMIT_FSIZE checked above for a larger file. */
	c = chan_alloc(decision ? 0 : 2, -1, base);
	if (!c) {
		r = -ENOMEM;
		goto out_unmap;
	}
	r = local_setup(c, shm, len, order, order, 0, f, p, cookie, 1);
	if (r)
		goto out_free;
	for (int i = 0; i < 3; i++)
		fds[i] = f[i];
	*out = c;
	return 0;

out_free:
	xw_chan_free(c);
out_unmap:
	munmap(shm, len);
out_close:
	close_fds(f);
	return r;
}

/*
 * Is fd an eventfd?  The descriptors come from the peer (through the
 * broker): a pipe or a socket in their place could make our reads and
 * writes block.  /proc/self/fdinfo says "eventfd-count:" for eventfds;
 * without /proc (a chroot) we can only check for an anonymous inode (no
 * file type bits).  O_NONBLOCK is then forced on: the peer shares the open
 * file description and could clear it again, but then it could as well
 * stop reading, which blocks a writer on TCP too.
 */
static int check_eventfd(int fd, int checked)
{
	char path[64], buf[512];
	struct stat st;
	int pfd = -1, fl, ok = -1;
	ssize_t n;

	if (fstat(fd, &st) != 0 || (st.st_mode & S_IFMT) != 0)
		return -EINVAL;
	if (!checked) {
		snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
		pfd = open(path, O_RDONLY | O_CLOEXEC);
	}
	if (pfd >= 0) {
		n = xw_sys_read(pfd, buf, sizeof(buf) - 1);
		xw_sys_close(pfd);
		if (n > 0) {
			buf[n] = 0;
			ok = strstr(buf, "eventfd-count:") ? 1 : 0;
		}
	}
	if (ok == 0)
		return -EINVAL;
	fl = xw_sys_fcntl(fd, F_GETFL, 0);
	if (fl < 0 || (!(fl & O_NONBLOCK) &&
		       xw_sys_fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0))
		return -EINVAL;
	return 0;
}

/* The state memfd of an end carried over an exec: a sealed regular file
 * of exactly one state's size (whatever mapping of it can never SIGBUS). */
static int check_ep_fd(int fd)
{
	struct stat st;
	int seals;

	if (fstat(fd, &st) != 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || (size_t)st.st_size != ep_size())
		return -EINVAL;
	seals = xw_sys_fcntl(fd, F_GET_SEALS, 0);
	if (seals < 0 || !(seals & F_SEAL_SHRINK))
		return -EINVAL;
	return 0;
}

/* Attach to the ring memfd fds[0]: with a new state (ep_fd < 0), or with
 * the state in ep_fd that other processes of ours use right now. */
static int local_attach(const int fds[3], int side, uint64_t cookie,
			const struct xway_chan_params *p, int ep_fd,
			struct xway_chan **out)
{
	const volatile struct xway_chan_shm *h;
	struct xway_chan_shm *shm;
	struct xway_chan *c;
	struct stat st;
	uint32_t o0, o1;
	int f[3];
	size_t len = 0, map_len;
	int seals, r, base;

	if (!fds || !out || (side != 0 && side != 1))
		return -EINVAL;
	for (int i = 0; i < 3; i++)
		if (fds[i] < 0)
			return -EBADF;
	if (fstat(fds[0], &st) != 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || st.st_size < (off_t)XWAY_CHAN_HDR_SIZE)
		return -EINVAL;
	/* Unsealed, the creator could shrink the file under our mapping and
	 * turn every ring access into SIGBUS. */
	seals = xw_sys_fcntl(fds[0], F_GET_SEALS, 0);
	if (seals < 0 || !(seals & F_SEAL_SHRINK))
		return -EINVAL;
	int checked = p && (p->flags & XWAY_CHAN_F_BROKER_CHECKED);
	if (check_eventfd(fds[1], checked) || check_eventfd(fds[2], checked))
		return -EINVAL;

	/* One mapping of the file as large as it is, at most as large as the
	 * largest geometry (a creator's channel is exactly its geometry's
	 * size): the header is read through it, then only the geometry's
	 * length is kept.  The file is sealed, so no part of it can vanish. */
	map_len = (uint64_t)st.st_size < shm_size(XWAY_RING_ORDER_MAX, XWAY_RING_ORDER_MAX)
		  ? (size_t)st.st_size
		  : shm_size(XWAY_RING_ORDER_MAX, XWAY_RING_ORDER_MAX);
	shm = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
	if (shm == MAP_FAILED)
		return -errno;
	h = shm;
	/* Each field read once into a local; only the locals are used. */
	o0 = h->ring_order[0];
	o1 = h->ring_order[1];
	r = 0;
	if (h->magic != XWAY_CHAN_MAGIC || h->version != XWAY_CHAN_VERSION ||
	    h->hdr_size != XWAY_CHAN_HDR_SIZE || !order_ok(o0) || !order_ok(o1))
		r = -EINVAL;
	else if (h->cookie != cookie)
		r = -EPERM;
	else if ((len = shm_size(o0, o1)) > map_len)
		r = -EINVAL;
	if (r) {
		munmap(shm, map_len);
		return r;
	}
	/* Page-aligned: the geometry's size is a page plus powers of two. */
	if (map_len > len)
		munmap((uint8_t *)shm + len, map_len - len);
	if (ep_fd >= 0 && (r = check_ep_fd(ep_fd)) < 0) {
		munmap(shm, len);
		return r;
	}
	base = high_fd_base();
	c = chan_alloc(1, ep_fd, base);
	if (!c) {
		munmap(shm, len);
		return -ENOMEM;
	}
	/* Carried state: the end it says it is, of this connection. */
	if (ep_fd >= 0 && (c->ep->magic != XW_EP_MAGIC || c->ep->cookie != cookie ||
			   c->ep->side != (uint32_t)side))
		r = -EPERM;
	else {
		for (int i = 0; i < 3; i++)
			f[i] = fds[i];
		r = local_setup(c, shm, len, o0, o1, side, f, p, cookie, ep_fd < 0);
	}
	if (r) {
		if (ep_fd >= 0)
			c->ep_fd = -1;  /* the caller's, as the other fds */
		xw_chan_free(c);
		munmap(shm, len);
		return r;
	}
	/* Ownership is ours now: move to high numbers. */
	for (int i = 0; i < 3; i++)
		c->fds[i] = fd_to_high_at(f[i], base);
	if (ep_fd >= 0)
		c->ep_fd = fd_to_high_at(ep_fd, base);
	c->pollfd = c->fds[1 + side];
	c->peer_efd = c->fds[2 - side];
	*out = c;
	return 0;
}

int xway_chan_local_attach(const int fds[3], int side, uint64_t cookie,
			   const struct xway_chan_params *p,
			   struct xway_chan **out)
{
	return local_attach(fds, side, cookie, p, -1, out);
}

int xway_chan_local_reattach(const int fds[4], int side, uint64_t cookie,
			     const struct xway_chan_params *p,
			     struct xway_chan **out)
{
	if (!fds || fds[3] < 0)
		return -EBADF;
	return local_attach(fds, side, cookie, p, fds[3], out);
}

const void *xway_chan_local_shm(const struct xway_chan *c, size_t *len)
{
	if (!c || c->backend != XWAY_BACKEND_LOCAL)
		return NULL;
	*len = c->shm_len;
	return c->shm;
}

void *xway_chan_user_word(struct xway_chan *c)
{
	return c->ep->user;
}

void xway_chan_before_exec(struct xway_chan *c)
{
	/* Owner tokens are unique within one image's process tree only: an
	 * image started by exec could mint the token of an owner here and
	 * take the fast path beside it.  On the mutex for good instead. */
	xw_excl_share(&c->ep->tx_lock);
	xw_excl_share(&c->ep->rx_lock);
}

int xway_chan_attached(const struct xway_chan *c)
{
	uint32_t a;

	if (!c || c->backend != XWAY_BACKEND_LOCAL)
		return XWAY_ATTACH_CLAIMED;
	/* Acquire: the broker's decision before anything it implies. */
	a = xw_load_acquire(&c->shm->attached);
	if (a > XWAY_ATTACH_WITHDRAWN)
		return -EPROTO;
	return (int)a;
}

static void local_close(struct xway_chan *c)
{
	munmap(c->shm, c->shm_len);
	close_fds(c->fds);
	xw_chan_free(c);
}

const struct xway_chan_ops xw_local_ops = {
	.sendv = xw_local_sendv,
	.recvv = xw_local_recvv,
	.readable = xw_local_readable,
	.unsent = xw_local_unsent,
	.poll = xw_local_poll,
	.shutdown_wr = xw_local_shutdown_wr,
	.close_rd = xw_local_close_rd,
	.reset = xw_local_reset,
	.wait = xw_local_wait,
	.arm = xw_local_arm,
	.ack = xw_local_ack,
	.close = local_close,
};

enum xway_backend xway_chan_backend(const struct xway_chan *c)
{
	return c->backend;
}

int xway_chan_side(const struct xway_chan *c)
{
	return c->side;
}

void xway_chan_close(struct xway_chan *c)
{
	if (c)
		c->ops->close(c);
}

int xway_chan_pollfd(const struct xway_chan *c)
{
	return c->pollfd;
}

size_t xway_chan_capacity(const struct xway_chan *c)
{
	if (c->backend == XWAY_BACKEND_LOCAL)
		return c->tx.size;
	return c->tx.size;      /* xen.c fills tx.size with its write ring */
}

int xway_chan_fds(const struct xway_chan *c, int *fds, int max)
{
	int n = 0;

	if (c->backend == XWAY_BACKEND_LOCAL) {
		for (int i = 0; i < 3 && n < max; i++)
			fds[n++] = c->fds[i];
		if (c->ep_fd >= 0 && n < max)
			fds[n++] = c->ep_fd;
	} else {
		n = xw_xen_fds(c, fds, max);
	}
	return n;
}

void xway_chan_get_stats(const struct xway_chan *c, struct xway_chan_stats *st)
{
	struct xway_chan *m = (struct xway_chan *)c;

	st->tx_bytes = atomic_load_explicit(&m->ep->st_tx, memory_order_relaxed);
	st->rx_bytes = atomic_load_explicit(&m->ep->st_rx, memory_order_relaxed);
	st->wakeups_sent = atomic_load_explicit(&m->ep->st_wakeups, memory_order_relaxed);
	st->sleeps = atomic_load_explicit(&m->ep->st_sleeps, memory_order_relaxed);
}
