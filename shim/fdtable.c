/* SPDX-License-Identifier: MIT */
/*
 * The fd table: fd number -> struct xway_conn *, read without locks.  The
 * table is a fixed array of chunk pointers; a chunk of XWAY_FD_CHUNK atomic
 * slots is allocated the first time an fd in its range becomes ours and is
 * never moved or freed, so a reader needs two acquire loads.  Writers take
 * xway_fd_lock.  Connection objects come from a pool that is never returned
 * to the system (type-stable memory): a reader that loaded a slot just
 * before close() emptied it still touches a valid object, and
 * xway_conn_tryget refuses an object whose count already reached zero.
 *
 * Also: the shim's own descriptors are moved to high numbers here, and one
 * bit per fd number remembers "not a listener" for listener adoption.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "errno.h"
#include "lifecycle.h"
#include "shim.h"

#define XWAY_FD_CHUNK_SHIFT 10
#define XWAY_FD_CHUNK       (1 << XWAY_FD_CHUNK_SHIFT)
#define XWAY_FD_MAX         (1 << 20)

typedef _Atomic(struct xway_conn *) xway_slot;

static _Atomic(xway_slot *) xway_chunks[XWAY_FD_MAX / XWAY_FD_CHUNK];
static pthread_mutex_t xway_fd_lock = PTHREAD_MUTEX_INITIALIZER;
static struct xway_conn *xway_pool;        /* free list, under xway_fd_lock */

static xway_slot *xway_slot_of(int fd, int create)
{
	xway_slot *ch;

	if (fd < 0 || fd >= XWAY_FD_MAX)
		return NULL;
	/* Acquire: the chunk's zeroed contents before its use. */
	ch = atomic_load_explicit(&xway_chunks[fd >> XWAY_FD_CHUNK_SHIFT],
				  memory_order_acquire);
	if (!ch && create) {
		ch = mmap(NULL, sizeof(xway_slot) * XWAY_FD_CHUNK,
			  PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (ch == MAP_FAILED)
			return NULL;
		/* Release: zeroed chunk before it becomes visible.  Only
		 * writers (under the lock) create, so no race on the store. */
		atomic_store_explicit(&xway_chunks[fd >> XWAY_FD_CHUNK_SHIFT], ch,
				      memory_order_release);
	}
	return ch ? &ch[fd & (XWAY_FD_CHUNK - 1)] : NULL;
}

static struct xway_conn *xway_conn_tryget(struct xway_conn *c)
{
	int r = atomic_load_explicit(&c->refs, memory_order_relaxed);

	do {
		if (r <= 0)
			return NULL;
	} while (!atomic_compare_exchange_weak_explicit(&c->refs, &r, r + 1,
							memory_order_acquire,
							memory_order_relaxed));
	return c;
}

struct xway_conn *xway_fd_get(int fd)
{
	xway_slot *s;
	struct xway_conn *c;

	if ((unsigned)fd >= XWAY_FD_MAX)
		return NULL;
	s = xway_slot_of(fd, 0);
	if (!s)
		return NULL;
	/* Acquire: the object's initialisation before we read it. */
	c = atomic_load_explicit(s, memory_order_acquire);
	if (__builtin_expect(!c, 1))
		return NULL;
	if (!xway_conn_tryget(c))
		return NULL;
	/* The slot may have been emptied (and the object reused) between the
	 * load and the increment: only a slot still naming c counts. */
	if (atomic_load_explicit(s, memory_order_acquire) != c) {
		xway_conn_put(c);
		return NULL;
	}
	return c;
}

int xway_fd_is_ours(int fd)
{
	xway_slot *s = xway_slot_of(fd, 0);

	return s && atomic_load_explicit(s, memory_order_relaxed) != NULL;
}

int xway_fd_set(int fd, struct xway_conn *c)
{
	xway_slot *s;
	int ret = 0;

	pthread_mutex_lock(&xway_fd_lock);
	s = xway_slot_of(fd, 1);
	if (!s) {
		ret = fd < 0 ? -EBADF : -ENOMEM;
	} else if (atomic_load_explicit(s, memory_order_relaxed)) {
		ret = -EEXIST;
	} else {
		atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&c->slots, 1, memory_order_relaxed);
		/* Release: c fully initialised before readers can see it. */
		atomic_store_explicit(s, c, memory_order_release);
	}
	pthread_mutex_unlock(&xway_fd_lock);
	return ret;
}

struct xway_conn *xway_fd_take(int fd)
{
	xway_slot *s;
	struct xway_conn *c = NULL;

	pthread_mutex_lock(&xway_fd_lock);
	s = xway_slot_of(fd, 0);
	if (s) {
		c = atomic_load_explicit(s, memory_order_relaxed);
		atomic_store_explicit(s, NULL, memory_order_release);
		if (c)
			atomic_fetch_sub_explicit(&c->slots, 1, memory_order_relaxed);
	}
	pthread_mutex_unlock(&xway_fd_lock);
	return c;
}

int xway_fd_other(const struct xway_conn *c, int except)
{
	int found = -1;

	pthread_mutex_lock(&xway_fd_lock);
	for (int i = 0; i < XWAY_FD_MAX / XWAY_FD_CHUNK && found < 0; i++) {
		xway_slot *ch = atomic_load_explicit(&xway_chunks[i],
						     memory_order_relaxed);
		for (int j = 0; ch && j < XWAY_FD_CHUNK; j++) {
			int fd = i * XWAY_FD_CHUNK + j;
			if (fd != except &&
			    atomic_load_explicit(&ch[j], memory_order_relaxed) == c) {
				found = fd;
				break;
			}
		}
	}
	pthread_mutex_unlock(&xway_fd_lock);
	return found;
}

void xway_fd_foreach(void (*fn)(int fd, struct xway_conn *c, void *arg), void *arg)
{
	pthread_mutex_lock(&xway_fd_lock);
	for (int i = 0; i < XWAY_FD_MAX / XWAY_FD_CHUNK; i++) {
		xway_slot *ch = atomic_load_explicit(&xway_chunks[i],
						     memory_order_relaxed);
		for (int j = 0; ch && j < XWAY_FD_CHUNK; j++) {
			struct xway_conn *c = atomic_load_explicit(&ch[j],
							memory_order_relaxed);
			if (c)
				fn(i * XWAY_FD_CHUNK + j, c, arg);
		}
	}
	pthread_mutex_unlock(&xway_fd_lock);
}

/* Remove every slot naming c (a connection that went back to plain TCP:
 * its fds become pass-through).  Drops those slots' references. */
void xway_fd_drop_conn(struct xway_conn *c)
{
	int dropped = 0;

	pthread_mutex_lock(&xway_fd_lock);
	for (int i = 0; i < XWAY_FD_MAX / XWAY_FD_CHUNK; i++) {
		xway_slot *ch = atomic_load_explicit(&xway_chunks[i],
						     memory_order_relaxed);
		for (int j = 0; ch && j < XWAY_FD_CHUNK; j++) {
			if (atomic_load_explicit(&ch[j], memory_order_relaxed) == c) {
				atomic_store_explicit(&ch[j], NULL, memory_order_release);
				atomic_fetch_sub_explicit(&c->slots, 1,
							  memory_order_relaxed);
				dropped++;
			}
		}
	}
	pthread_mutex_unlock(&xway_fd_lock);
	while (dropped-- > 0)
		xway_conn_put(c);
}

/* A fresh object for fd; its holder count in sh (an anonymous shared page,
 * freed with the object) or, when sh is NULL, in chan's user word. */
static struct xway_conn *conn_alloc(int fd, int side, void *sh,
				    struct xway_chan *chan, int adopt);

struct xway_conn *xway_conn_new(int fd, int side)
{
	struct xway_conn *c;
	void *sh;

	sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		  -1, 0);
	if (sh == MAP_FAILED)
		return NULL;
	c = conn_alloc(fd, side, sh, NULL, 0);
	if (!c)
		munmap(sh, 4096);
	return c;
}

struct xway_conn *xway_conn_new_chan(int fd, int side, struct xway_chan *chan, int adopt)
{
	struct xway_conn *c;

	if (!chan || !xway_chan_user_word) {
		/* Without the channel layer: the page keeps the count. */
		c = xway_conn_new(fd, side);
		if (c)
			xway_conn_bind_chan(c, chan, adopt);
		return c;
	}
	return conn_alloc(fd, side, NULL, chan, adopt);
}

static struct xway_conn *conn_alloc(int fd, int side, void *sh,
				    struct xway_chan *chan, int adopt)
{
	struct xway_conn *c;

	pthread_mutex_lock(&xway_fd_lock);
	c = xway_pool;
	if (!c) {
		/* Refill with a page's worth; never freed (type-stable). */
		size_t n = 4096 / sizeof(*c) ? 4096 / sizeof(*c) : 1;
		struct xway_conn *blk = mmap(NULL, n * sizeof(*c),
					     PROT_READ | PROT_WRITE,
					     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (blk == MAP_FAILED) {
			pthread_mutex_unlock(&xway_fd_lock);
			return NULL;
		}
		for (size_t i = 0; i < n; i++) {
			blk[i].next_free = xway_pool;
			xway_pool = &blk[i];
		}
		c = xway_pool;
	}
	xway_pool = c->next_free;
	pthread_mutex_unlock(&xway_fd_lock);

	/* refs is 0 here, so no reader can take it; set it last. */
	memset((char *)c + sizeof(c->refs), 0, sizeof(*c) - sizeof(c->refs));
	c->fd = fd;
	c->side = side;
	c->owner_pid = xway_pid();
	if (sh) {
		c->shared = sh;
		c->shared_page = sh;
		atomic_store_explicit(&c->shared->holders, 1, memory_order_relaxed);
	} else {
		/* Nobody else sees c yet: no fork can count it in between.
		 * adopt: the user word already holds the live count of every
		 * process sharing the end (it came over an exec). */
		c->chan = chan;
		c->shared = xway_chan_user_word(chan);
		if (!adopt)
			atomic_store_explicit(&c->shared->holders, 1, memory_order_relaxed);
	}
	pthread_mutex_init(&c->lock, NULL);
	/* Release: fields above before the count that makes c gettable. */
	atomic_store_explicit(&c->refs, 1, memory_order_release);
	return c;
}

void xway_conn_bind_chan(struct xway_conn *c, struct xway_chan *chan, int adopt)
{
	struct xway_conn_shared *w;

	c->chan = chan;
	if (!chan || !xway_chan_user_word)
		return;
	_Static_assert(sizeof(struct xway_conn_shared) == 8, "the user word");
	w = xway_chan_user_word(chan);
	/* Nobody else sees c yet: no fork can count it in between.  The
	 * anonymous page stays mapped (freed with the object) but unused. */
	if (!adopt)
		atomic_store_explicit(&w->holders,
				      atomic_load_explicit(&c->shared->holders,
							   memory_order_relaxed),
				      memory_order_relaxed);
	c->shared = w;
}

void xway_conn_hold(struct xway_conn *c)
{
	atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

/*
 * Connections whose teardown is deferred, under xway_fd_lock: their dup and
 * channel fds are the shim's own (close_range skips them), and a fork child
 * closes their dups (it has none of the threads that use them; the kernel's
 * child would not hold the closed socket either).  Bounded: past the bound a
 * deferral still works, only those two refinements are missing.
 */
#define XWAY_DEFERRED_MAX 64
static struct xway_conn *xway_deferred[XWAY_DEFERRED_MAX];

static void xway_deferred_track(struct xway_conn *c, int add)
{
	pthread_mutex_lock(&xway_fd_lock);
	for (int i = 0; i < XWAY_DEFERRED_MAX; i++)
		if (xway_deferred[i] == (add ? NULL : c)) {
			xway_deferred[i] = add ? c : NULL;
			break;
		}
	pthread_mutex_unlock(&xway_fd_lock);
}

int xway_deferred_own_fds(int *fds, int max)
{
	int n = 0;

	pthread_mutex_lock(&xway_fd_lock);
	for (int i = 0; i < XWAY_DEFERRED_MAX; i++) {
		struct xway_conn *c = xway_deferred[i];
		if (!c || n + 1 + XWAY_CHAN_MAX_FDS > max)
			continue;
		fds[n++] = c->fd;
		if (c->chan && xway_chan_fds)
			n += xway_chan_fds(c->chan, fds + n, XWAY_CHAN_MAX_FDS);
	}
	pthread_mutex_unlock(&xway_fd_lock);
	return n;
}

void xway_deferred_after_fork(void)
{
	/* Only the forking thread exists here: no lock holder to wait for
	 * but ourselves (the atfork handlers run outside the table lock). */
	for (int i = 0; i < XWAY_DEFERRED_MAX; i++) {
		struct xway_conn *c = xway_deferred[i];
		if (!c)
			continue;
		xway_deferred[i] = NULL;
		real.close(c->fd);
		c->fd = -1;
	}
}

/* The deferred last-holder teardown (deferred already moved 1 -> 2 by the
 * caller, so it runs once): c->fd is the private dup taken at close. */
static void xway_conn_deferred_end(struct xway_conn *c)
{
	int keep = c->fd;

	xway_deferred_track(c, 0);
	xway_conn_last_close(c);
	c->fd = -1;
	real.close(keep);
}

/* A put left only epoll records' references on a deferred connection: the
 * last in-flight call has returned.  Take a reference of our own (the
 * records may go meanwhile) and let one thread win the teardown. */
static void xway_conn_deferred_try(struct xway_conn *c)
{
	int exp = 1;

	if (!xway_conn_tryget(c))
		return;                 /* the final put does it */
	/* seq_cst CAS: exactly one thread (this or the final put) runs it. */
	if (atomic_compare_exchange_strong(&c->deferred, &exp, 2))
		xway_conn_deferred_end(c);
	xway_conn_put(c);
}

void xway_conn_put(struct xway_conn *c)
{
	/* acq_rel: every use of c by this thread before the decrement; the
	 * last dropper sees all others' uses before tearing down.  It also
	 * orders the deferred load below: a close() that set deferred before
	 * its own decrement is seen by every later decrement (release
	 * sequence on refs), so the last in-flight call never misses it. */
	int old = atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel);

	/* A plain load, no locked instruction: the hot path stays as it was. */
	if (__builtin_expect(atomic_load_explicit(&c->deferred,
						  memory_order_relaxed) == 1, 0)) {
		if (old != 1) {
			if (old - 1 == atomic_load_explicit(&c->ep_refs,
							    memory_order_acquire))
				xway_conn_deferred_try(c);
			return;
		}
		/* refs is 0: nobody can take c any more; we are alone. */
		int exp = 1;
		if (atomic_compare_exchange_strong(&c->deferred, &exp, 2))
			xway_conn_deferred_end(c);
	} else if (old != 1) {
		return;
	}
	xway_conn_free(c);
	pthread_mutex_destroy(&c->lock);
	if (c->shared_page)
		munmap(c->shared_page, 4096);
	c->shared = NULL;
	c->shared_page = NULL;
	pthread_mutex_lock(&xway_fd_lock);
	c->next_free = xway_pool;
	xway_pool = c;
	pthread_mutex_unlock(&xway_fd_lock);
}

/* ---- "not a listener" answers per fd number ---------------------------- */

/*
 * One bit per fd number: an earlier probe (xway_listener_adopt) found
 * that the file at this number is not a TCP listener we may adopt (not a
 * socket, UDP, AF_UNIX, connected TCP, excluded by config, refused by the
 * broker).  accept() on such a number then costs one load and no system
 * call.  The answer belongs to the open file, not the number: every way a
 * number gets a new file through us clears the bit (close, dup2/dup3 onto
 * it, close_range/closefrom, a number received by SCM_RIGHTS); a number
 * that was not open is never remembered.  A number closed behind our back
 * (raw syscall) and reused for a listener stays unadopted until its next
 * close: the cost is plain TCP, never a wrong answer.  128 KiB of .bss,
 * touched only where numbers are remembered.  Relaxed atomics: a bit is a
 * hint about one fd number, it orders nothing else.
 */
static _Atomic uint64_t xway_nolisten[XWAY_FD_MAX / 64];

int xway_fd_nolisten(int fd)
{
	if ((unsigned)fd >= XWAY_FD_MAX)
		return 0;
	return (atomic_load_explicit(&xway_nolisten[fd >> 6], memory_order_relaxed)
		>> (fd & 63)) & 1;
}

void xway_fd_nolisten_set(int fd)
{
	if ((unsigned)fd < XWAY_FD_MAX)
		atomic_fetch_or_explicit(&xway_nolisten[fd >> 6], 1ULL << (fd & 63),
					 memory_order_relaxed);
}

void xway_fd_new_file(int fd)
{
	/* Load first: close() of an unremembered number (nearly all) writes
	 * nothing, so no cache line bounces between threads. */
	if (xway_fd_nolisten(fd))
		atomic_fetch_and_explicit(&xway_nolisten[fd >> 6], ~(1ULL << (fd & 63)),
					  memory_order_relaxed);
	xway_fd_fresh_forget(fd);
}

void xway_fd_new_files(unsigned lo, unsigned hi)
{
	xway_fd_fresh_forget_range(lo, hi);
	if (lo >= XWAY_FD_MAX)
		return;
	if (hi >= XWAY_FD_MAX)
		hi = XWAY_FD_MAX - 1;
	for (unsigned w = lo >> 6; w <= hi >> 6; w++) {
		uint64_t m = ~0ULL;
		if (w == lo >> 6)
			m &= ~0ULL << (lo & 63);
		if (w == hi >> 6 && (hi & 63) != 63)
			m &= (1ULL << ((hi & 63) + 1)) - 1;
		if (atomic_load_explicit(&xway_nolisten[w], memory_order_relaxed) & m)
			atomic_fetch_and_explicit(&xway_nolisten[w], ~m, memory_order_relaxed);
	}
}

/* ---- TCP sockets made here and untouched --------------------------------- */

/*
 * A TCP socket this process made through socket() and has not bound,
 * connected, listened on, or set an option of that a connection's set-up
 * reads: its connect() then knows without a system call that the socket
 * is TCP, unconnected and unbound, its family, that SO_REUSEADDR and
 * SO_REUSEPORT are off, SO_RCVTIMEO/SO_SNDTIMEO 0, SO_RCVLOWAT 1, no
 * SO_LINGER, and O_NONBLOCK as socket()'s type said (12 calls of a
 * connect, each a trap through the hypervisor in a Xen PV domain).  What
 * could change one of those through us forgets the socket (bind, listen,
 * connect, a new file at the number: xway_fd_new_file) or marks it
 * (setsockopt of those options, F_SETFL, FIONBIO).  Only a raw system
 * call behind our back makes the record wrong; the cost is then bounded:
 * the broker's own proof refuses an offer for a socket that is not an
 * unconnected TCP one, and the connection stays on TCP with the kernel's
 * answer (a wrongly assumed O_NONBLOCK or timeout is the one way an
 * application could notice; raw fcntl on a socket it made through libc
 * is not a pattern HAZARDS.md found).
 *
 * One 64-bit word per slot, fd modulo the slot count: (fd + 1) << 8 |
 * flags.  Two sockets of one slot: the later one wins, the earlier takes
 * the system calls.  Relaxed atomics: each word stands alone.
 */
#define XWAY_FRESH_SLOTS 64
static _Atomic uint64_t xway_fresh[XWAY_FRESH_SLOTS];

void xway_fd_fresh_note(int fd, int domain, int type, int protocol)
{
	uint64_t f = 0;

	if (fd < 0 || (domain != AF_INET && domain != AF_INET6) ||
	    (type & 0xf) != SOCK_STREAM || (protocol != 0 && protocol != IPPROTO_TCP))
		return;
	if (domain == AF_INET6)
		f |= XWAY_FRESH_V6;
	if (type & SOCK_NONBLOCK)
		f |= XWAY_FRESH_NONBLOCK;
	atomic_store_explicit(&xway_fresh[(unsigned)fd % XWAY_FRESH_SLOTS],
			      ((uint64_t)fd + 1) << 8 | f, memory_order_relaxed);
}

unsigned xway_fd_fresh(int fd)
{
	uint64_t v;

	if (fd < 0)
		return 0;
	v = atomic_load_explicit(&xway_fresh[(unsigned)fd % XWAY_FRESH_SLOTS],
				 memory_order_relaxed);
	return (v >> 8) == (uint64_t)fd + 1 ? (unsigned)(v & 0xff) | XWAY_FRESH_YES : 0;
}

/* Set flag in fd's word, or clear the word (forget), if it is still fd's:
 * another socket's may have replaced it. */
static void fresh_change(int fd, unsigned flag, int forget)
{
	_Atomic uint64_t *w;
	uint64_t v;

	if (fd < 0)
		return;
	w = &xway_fresh[(unsigned)fd % XWAY_FRESH_SLOTS];
	v = atomic_load_explicit(w, memory_order_relaxed);
	while ((v >> 8) == (uint64_t)fd + 1 &&
	       !atomic_compare_exchange_weak_explicit(w, &v, forget ? 0 : v | flag,
						      memory_order_relaxed, memory_order_relaxed))
		;
}

void xway_fd_fresh_mark(int fd, unsigned flag)
{
	fresh_change(fd, flag, 0);
}

void xway_fd_fresh_forget(int fd)
{
	fresh_change(fd, 0, 1);
}

void xway_fd_fresh_forget_range(unsigned lo, unsigned hi)
{
	for (unsigned i = 0; i < XWAY_FRESH_SLOTS; i++) {
		uint64_t v = atomic_load_explicit(&xway_fresh[i], memory_order_relaxed);

		if (v && (v >> 8) - 1 >= lo && (v >> 8) - 1 <= hi)
			atomic_compare_exchange_strong_explicit(&xway_fresh[i], &v, 0,
								memory_order_relaxed,
								memory_order_relaxed);
	}
}

int xway_high_fd_base(void)
{
	/* Where the channel layer puts its own (chan/local.c): from 1024 up
	 * when the real limit allows (rlimit.c makes room), else the top. */
	return xway_chan_high_fd_base();
}

int xway_fd_to_high(int fd)
{
	long nfd = XWAY_SYS(real.fcntl(fd, F_DUPFD_CLOEXEC, xway_high_fd_base()));

	if (nfd < 0)
		return (int)nfd;
	real.close(fd);
	return (int)nfd;
}

int xway_conn_last_slot(struct xway_conn *c, int fd)
{
	/* Passed by SCM_RIGHTS: settle that first (a receiver without the
	 * shim makes us revert to TCP while our endpoint still exists). */
	xway_scm_closing(c);

	/* Our reference (the slot's, moved to the caller) and the epoll
	 * records' aside, a reference is a call in flight in another thread
	 * (a blocked recv, send or poll): the kernel keeps the socket open
	 * until it returns and the peer sees nothing.  A transient lookup
	 * counts too: then the teardown just runs at its put, a moment
	 * later. */
	int busy = atomic_load_explicit(&c->refs, memory_order_acquire) - 1 -
		   atomic_load_explicit(&c->ep_refs, memory_order_acquire);
	int keep = busy > 0 ? real.fcntl(fd, F_DUPFD_CLOEXEC, xway_high_fd_base()) : -1;

	if (keep < 0) {
		xway_conn_last_close(c);
		return 0;
	}
	/* The caller closes (or dup2s over) the number now: free for reuse
	 * at once, as in the kernel; the in-flight calls re-read c->fd. */
	c->fd = keep;
	xway_deferred_track(c, 1);
	/* seq_cst store, then the caller's decrement in its put (acq_rel):
	 * see xway_conn_put. */
	atomic_store(&c->deferred, 1);
	XDBG("xway: fd %d closed with calls in flight: teardown deferred "
	     "(socket kept as %d)", fd, keep);
	return 1;
}

int xway_close_app_fd(int fd)
{
	struct xway_conn *c = xway_fd_take(fd);
	long r;

	if (!c)
		return 1;
	if (atomic_load_explicit(&c->slots, memory_order_acquire) == 0)
		xway_conn_last_slot(c, fd);
	else if (c->fd == fd)
		c->fd = xway_fd_other(c, fd);
	r = XWAY_SYS(real.close(fd));
	xway_conn_put(c);
	return (int)r;
}
