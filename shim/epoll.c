/* SPDX-License-Identifier: MIT */
/*
 * epoll over accelerated fds.  The kernel cannot see channel data, so an
 * accelerated fd registered in an epoll instance E is mirrored: E gets,
 * under a tag of ours, the channel's notification fd and the real TCP
 * socket (both EPOLLET: each notification or FIN/RST is one event, nothing
 * stays level-ready in the kernel), and a record (struct xway_epr) keeps
 * the application's events and data.  epoll_wait translates: a tagged
 * kernel event makes us recompute the connection's level (the ring, as
 * kernel TCP would report it) and report it with the app's data; events of
 * the app's other fds pass through untouched.
 *
 * Level-triggered records whose level is up sit on a ready list that is
 * re-checked on every wait (the kernel's LT behaviour); a per-instance
 * eventfd, registered LT in E and kept readable while that list is not
 * empty, makes E itself readable to poll() and to an outer epoll (nested
 * epoll fds).  Edge-triggered records are armed (xway_chan_arm) before
 * their level is computed, so an arrival after the computation always
 * produces a notification: ET wakes on every new arrival even with old
 * data unread, and arrivals while nobody waits merge into one event.
 * EPOLLONESHOT disables a record after one report until EPOLL_CTL_MOD.
 *
 * Tags: records and instances live in a reserved arena, so a kernel
 * event's data is recognised as ours by its address (inside the arena, a
 * live slot of this instance); the app's own data cannot point into it.
 * A registration belongs to the open file: it lasts while the connection
 * has an fd in this process (close() of one fd with a dup alive keeps it).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <linux/kcmp.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "errno.h"
#include "lifecycle.h"

XWAY_EXPORT int epoll_create(int size);
XWAY_EXPORT int epoll_create1(int flags);
XWAY_EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev);
XWAY_EXPORT int epoll_wait(int epfd, struct epoll_event *ev, int max, int tmo);
XWAY_EXPORT int epoll_pwait(int epfd, struct epoll_event *ev, int max, int tmo,
			    const sigset_t *mask);
XWAY_EXPORT int epoll_pwait2(int epfd, struct epoll_event *ev, int max,
			     const struct timespec *tmo, const sigset_t *mask);

#define XWAY_EP_MAGIC   0x7877617965706f6cULL   /* live instance */
#define XWAY_EPR_MAGIC  0x787761796570726bULL   /* live record */
#define XWAY_ARENA_SLOTS (1u << 18)
#define XWAY_SLOT_SIZE   256u
#define XWAY_EP_TABLE    (1u << 20)               /* epfd numbers */
/* Our kernel registration of the TCP socket and of the notification fd. */
#define XWAY_TCP_EVENTS  (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)
#define XWAY_NOTE_EVENTS (EPOLLIN | EPOLLET)

struct xway_ep;

struct xway_epr {
	uint64_t magic;
	struct xway_ep *ep;
	struct xway_conn *c;      /* reference held while registered */
	int fd;                   /* the app's fd number (kernel key) */
	uint32_t events;          /* as the app gave them */
	epoll_data_t data;
	int pfd;                  /* notification fd registered in E */
	int pfd_dup;              /* pfd is our dup (another record had it) */
	int disabled;             /* EPOLLONESHOT fired */
	int queued;               /* on ep->ready */
	uint64_t reported;        /* ep->serial of the last report */
	/* Edge-triggered on a Xen channel: what the last report saw (see
	 * xway_epr_xen_same). */
	int et_valid;
	uint32_t et_prod, et_cons, et_m;
	unsigned sleeping;        /* channel events counted as a sleeper */
	pid_t sl_pid;             /* ... by this process (not a fork child) */
	struct xway_epr *next, *next_ready;
};

struct xway_ep {
	uint64_t magic;
	int epfd;
	dev_t dev;
	ino_t ino;
	int pend_fd;              /* eventfd: readable while ready != NULL */
	int pend_on;
	uint64_t serial;          /* wait calls, for one report per call */
	pthread_mutex_t lock;     /* records and lists; never held asleep */
	struct xway_epr *all, *ready;
	struct xway_ep *next;     /* xway_ep_list */
	int aliased;              /* also used through another number (a dup) */
};

_Static_assert(sizeof(struct xway_epr) <= XWAY_SLOT_SIZE, "slot size");
_Static_assert(sizeof(struct xway_ep) <= XWAY_SLOT_SIZE, "slot size");

/* Lock order: xway_ep_glock, then an instance's lock, then xway_slot_lock
 * (a leaf: the arena's free list). */
static pthread_mutex_t xway_ep_glock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t xway_slot_lock = PTHREAD_MUTEX_INITIALIZER;
static char *xway_arena;                  /* XWAY_ARENA_SLOTS slots */
static uint32_t xway_arena_used;
static void *xway_arena_free;             /* free list of slots */
static _Atomic(struct xway_ep *) *xway_ep_tab;
static struct xway_ep *xway_ep_list;
static _Atomic int xway_ep_count;

static void *xway_slot_alloc(void)
{
	void *s = NULL;

	pthread_mutex_lock(&xway_slot_lock);
	if (!xway_arena) {
		void *a = mmap(NULL, (size_t)XWAY_ARENA_SLOTS * XWAY_SLOT_SIZE,
			       PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (a == MAP_FAILED) {
			pthread_mutex_unlock(&xway_slot_lock);
			return NULL;
		}
		/* Release: set once; lock-free readers only compare against
		 * the range, never through it before a slot is handed out. */
		__atomic_store_n(&xway_arena, (char *)a, __ATOMIC_RELEASE);
	}
	if (xway_arena_free) {
		s = xway_arena_free;
		memcpy(&xway_arena_free, s, sizeof(void *));
	} else if (xway_arena_used < XWAY_ARENA_SLOTS) {
		s = xway_arena + (size_t)xway_arena_used++ * XWAY_SLOT_SIZE;
	}
	if (s)
		memset(s, 0, XWAY_SLOT_SIZE);
	pthread_mutex_unlock(&xway_slot_lock);
	return s;
}

static void xway_slot_free(void *s)
{
	/* The magic goes with the memset: a late kernel event naming this
	 * slot is then ignored. */
	pthread_mutex_lock(&xway_slot_lock);
	memset(s, 0, XWAY_SLOT_SIZE);
	memcpy(s, &xway_arena_free, sizeof(void *));
	xway_arena_free = s;
	pthread_mutex_unlock(&xway_slot_lock);
}

/* Does tag point into our arena?  Then the event is ours, live or not (a
 * kernel event may name a slot freed since: it is dropped, never passed to
 * the app as its own). */
static int xway_tag_ours(uint64_t tag)
{
	char *p = (char *)(uintptr_t)tag;
	/* Acquire: pairs with the one release store of the arena. */
	char *a = __atomic_load_n(&xway_arena, __ATOMIC_ACQUIRE);

	return a && p >= a && p < a + (size_t)XWAY_ARENA_SLOTS * XWAY_SLOT_SIZE;
}

/* Is tag a live slot of ours with this magic?  (The caller holds the
 * instance lock for records, so a record cannot be freed meanwhile.) */
static void *xway_tag(uint64_t tag, uint64_t magic)
{
	char *p = (char *)(uintptr_t)tag;

	if (!xway_tag_ours(tag) || (size_t)(p - xway_arena) % XWAY_SLOT_SIZE)
		return NULL;
	return *(uint64_t *)p == magic ? p : NULL;
}

/* ---- instances ------------------------------------------------------- */

static int xway_ep_stat(int epfd, dev_t *dev, ino_t *ino)
{
	struct stat st;
	long r = XWAY_SYS(fstat(epfd, &st));

	if (r < 0)
		return (int)r;
	*dev = st.st_dev;
	*ino = st.st_ino;
	return 0;
}

/* Does epfd name the same open file as ep->epfd?  Every epoll fd has the
 * same anonymous inode, so dev/ino only pre-selects; kcmp(KCMP_FILE)
 * decides.  Without kcmp (no CONFIG_KCMP, or a sandbox that may kill the
 * call) an unknown number is taken as another instance: a dup of an epoll
 * fd then gets a record of its own (its ADD of an fd already added through
 * the other number fails with EEXIST, as it would on the kernel anyway). */
static int xway_ep_same_file(const struct xway_ep *ep, int epfd)
{
	int saved = errno, same;
	pid_t me;

	if (xway_lc_sandboxed)
		return 0;
	me = xway_pid();
	same = syscall(SYS_kcmp, me, me, KCMP_FILE, ep->epfd, epfd) == 0;
	errno = saved;          /* a pass-through epoll_wait leaves errno alone */
	return same;
}

/* The instance for epfd, or NULL (pass-through).  A dup of an epoll fd is
 * the same instance: found by its inode and kcmp when the number is not
 * known. */
static struct xway_ep *xway_ep_find(int epfd)
{
	struct xway_ep *ep = NULL;
	dev_t dev;
	ino_t ino;

	if (atomic_load_explicit(&xway_ep_count, memory_order_acquire) == 0 ||
	    epfd < 0 || (unsigned)epfd >= XWAY_EP_TABLE)
		return NULL;
	/* Acquire: the instance's initialisation before its use. */
	ep = atomic_load_explicit(&xway_ep_tab[epfd], memory_order_acquire);
	if (ep)
		return ep;
	if (xway_ep_stat(epfd, &dev, &ino) < 0)
		return NULL;
	pthread_mutex_lock(&xway_ep_glock);
	for (ep = xway_ep_list; ep; ep = ep->next)
		if (ep->dev == dev && ep->ino == ino && xway_ep_same_file(ep, epfd))
			break;
	if (ep)
		ep->aliased = 1;          /* closing ep->epfd leaves it alive */
	pthread_mutex_unlock(&xway_ep_glock);
	return ep;
}

static void xway_pend_set(struct xway_ep *ep)
{
	/* Under ep->lock: the eventfd mirrors "ready list not empty". */
	if (ep->ready && !ep->pend_on) {
		static const uint64_t one = 1;
		if (real.write(ep->pend_fd, &one, sizeof(one)) == sizeof(one))
			ep->pend_on = 1;
	} else if (!ep->ready && ep->pend_on) {
		uint64_t v;
		if (real.read(ep->pend_fd, &v, sizeof(v)) == sizeof(v) || errno == EAGAIN)
			ep->pend_on = 0;
	}
}

static void xway_epr_drop(struct xway_ep *ep, struct xway_epr *r, int kernel_del);
static void xway_epr_sleeper(struct xway_epr *r, uint32_t events);

/* Forget an instance whose epfd number is being closed by the app, or was
 * closed and reused.  Only our side is undone: the kernel object goes with
 * its last reference (with our registrations). */
static void xway_ep_retire(struct xway_ep *ep)
{
	struct xway_epr *r, *n;
	int mine = 0;

	/* Unlink first, under the global lock: of two threads retiring the
	 * same instance (close and close_range at once) one does it. */
	pthread_mutex_lock(&xway_ep_glock);
	for (struct xway_ep **pp = &xway_ep_list; *pp; pp = &(*pp)->next)
		if (*pp == ep) {
			*pp = ep->next;
			mine = 1;
			break;
		}
	if (mine && ep->epfd >= 0 && (unsigned)ep->epfd < XWAY_EP_TABLE &&
	    atomic_load_explicit(&xway_ep_tab[ep->epfd], memory_order_relaxed) == ep)
		atomic_store_explicit(&xway_ep_tab[ep->epfd], NULL, memory_order_release);
	pthread_mutex_unlock(&xway_ep_glock);
	if (!mine)
		return;
	pthread_mutex_lock(&ep->lock);
	for (r = ep->all; r; r = n) {
		n = r->next;
		xway_epr_drop(ep, r, 0);
	}
	ep->all = ep->ready = NULL;
	pthread_mutex_unlock(&ep->lock);
	real.close(ep->pend_fd);
	pthread_mutex_destroy(&ep->lock);
	pthread_mutex_lock(&xway_ep_glock);
	xway_slot_free(ep);
	atomic_fetch_sub_explicit(&xway_ep_count, 1, memory_order_relaxed);
	pthread_mutex_unlock(&xway_ep_glock);
}

/* Create the instance record for epfd at the first accelerated ADD. */
static int xway_ep_make(int epfd, struct xway_ep **out)
{
	struct xway_ep *ep;
	struct epoll_event pev;
	long r;

	pthread_mutex_lock(&xway_ep_glock);
	if (!xway_ep_tab) {
		void *t = mmap(NULL, sizeof(*xway_ep_tab) * XWAY_EP_TABLE,
			       PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (t == MAP_FAILED) {
			pthread_mutex_unlock(&xway_ep_glock);
			return -ENOMEM;
		}
		xway_ep_tab = t;
	}
	pthread_mutex_unlock(&xway_ep_glock);
	ep = xway_slot_alloc();
	if (!ep)
		return -ENOMEM;
	ep->epfd = epfd;
	r = xway_ep_stat(epfd, &ep->dev, &ep->ino);
	if (r < 0)
		goto out_free;
	r = XWAY_SYS(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
	if (r < 0)
		goto out_free;
	r = xway_fd_to_high((int)r);
	if (r < 0)
		goto out_free;
	ep->pend_fd = (int)r;
	pthread_mutex_init(&ep->lock, NULL);
	ep->magic = XWAY_EP_MAGIC;
	pev.events = EPOLLIN;
	pev.data.u64 = (uint64_t)(uintptr_t)ep;
	r = XWAY_SYS(real.epoll_ctl(epfd, EPOLL_CTL_ADD, ep->pend_fd, &pev));
	if (r < 0) {
		real.close(ep->pend_fd);
		goto out_free;
	}
	pthread_mutex_lock(&xway_ep_glock);
	ep->next = xway_ep_list;
	xway_ep_list = ep;
	/* Release: the instance complete before lock-free finders see it. */
	atomic_store_explicit(&xway_ep_tab[epfd], ep, memory_order_release);
	atomic_fetch_add_explicit(&xway_ep_count, 1, memory_order_release);
	pthread_mutex_unlock(&xway_ep_glock);
	*out = ep;
	return 0;
out_free:
	xway_slot_free(ep);
	return (int)r;
}

int xway_epoll_own_fds(int *fds, int max)
{
	int n = 0;

	pthread_mutex_lock(&xway_ep_glock);
	for (struct xway_ep *ep = xway_ep_list; ep; ep = ep->next) {
		if (n < max)
			fds[n++] = ep->pend_fd;
		pthread_mutex_lock(&ep->lock);
		for (struct xway_epr *r = ep->all; r; r = r->next)
			if (r->pfd_dup && n < max)
				fds[n++] = r->pfd;
		pthread_mutex_unlock(&ep->lock);
	}
	pthread_mutex_unlock(&xway_ep_glock);
	return n;
}

/* ---- records --------------------------------------------------------- */

static struct xway_epr *xway_epr_find(struct xway_ep *ep, int fd)
{
	for (struct xway_epr *r = ep->all; r; r = r->next)
		if (r->fd == fd)
			return r;
	return NULL;
}

static void xway_epr_queue(struct xway_ep *ep, struct xway_epr *r)
{
	if (r->queued)
		return;
	r->queued = 1;
	r->next_ready = ep->ready;
	ep->ready = r;
}

static void xway_epr_unqueue(struct xway_ep *ep, struct xway_epr *r)
{
	if (!r->queued)
		return;
	for (struct xway_epr **pp = &ep->ready; *pp; pp = &(*pp)->next_ready)
		if (*pp == r) {
			*pp = r->next_ready;
			break;
		}
	r->queued = 0;
	r->next_ready = NULL;
}

/* Under ep->lock.  kernel_del: also remove our kernel registrations. */
static void xway_epr_drop(struct xway_ep *ep, struct xway_epr *r, int kernel_del)
{
	xway_epr_sleeper(r, 0);
	xway_epr_unqueue(ep, r);
	for (struct xway_epr **pp = &ep->all; *pp; pp = &(*pp)->next)
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	if (kernel_del) {
		/* Only if the number still names this connection: reused by
		 * another file, a DEL would remove the app's registration of
		 * that file (ours then goes when its file is released). */
		struct xway_conn *now = xway_fd_get(r->fd);
		if (now == r->c)
			real.epoll_ctl(ep->epfd, EPOLL_CTL_DEL, r->fd, NULL);
		if (now)
			xway_conn_put(now);
		real.epoll_ctl(ep->epfd, EPOLL_CTL_DEL, r->pfd, NULL);
	}
	if (r->pfd_dup)
		real.close(r->pfd);
	/* Release before the put: a deferred close counts the records'
	 * references apart (xway_conn_put); the count never undershoots. */
	atomic_fetch_sub_explicit(&r->c->ep_refs, 1, memory_order_release);
	xway_conn_put(r->c);
	xway_slot_free(r);
}

static unsigned xway_epr_chan_events(uint32_t events);

/*
 * A record counts as a sleeper of its endpoint (xway_chan_sleeper) for as
 * long as it exists.  Whoever drains the shared notification fd (a thread
 * blocked in recv or send on the same connection, or a poll()) then re-arms
 * the ring and passes the wake-up on when the record's events are ready;
 * without that, a drain made the peer's next arrival go unnotified (the
 * ring's waiting word was spent) and an epoll_wait slept through data
 * (shim/README.md: the drained-wake-up gap).  Undone only by the process
 * that did it: a fork child's copy of the record was never counted.
 */
static void xway_epr_sleeper(struct xway_epr *r, uint32_t events)
{
	unsigned ev = events ? xway_epr_chan_events(events) : 0;

	if (r->sleeping && r->sl_pid == xway_pid() && r->c->chan)
		xway_chan_sleeper(r->c->chan, r->sleeping, -1);
	r->sleeping = 0;
	if (ev && r->c->chan) {
		xway_chan_sleeper(r->c->chan, ev, 1);
		r->sleeping = ev;
		r->sl_pid = xway_pid();
	}
}

static unsigned xway_epr_chan_events(uint32_t events)
{
	unsigned ev = XWAY_EV_ERR;

	if (events & (EPOLLIN | EPOLLRDNORM | EPOLLRDHUP | EPOLLPRI))
		ev |= XWAY_EV_IN | XWAY_EV_RDHUP | XWAY_EV_RST;
	if (events & (EPOLLOUT | EPOLLWRNORM))
		ev |= XWAY_EV_OUT | XWAY_EV_HUP;
	return ev;
}

/*
 * The record's state now: 1 alive on the channel, 0 gone (the app closed
 * its last fd: drop it), -1 the connection went back to plain TCP (turn the
 * registration into a direct one on the socket).
 */
static int xway_epr_alive(struct xway_epr *r)
{
	int st = atomic_load_explicit(&r->c->state, memory_order_acquire);

	if (st == XWAY_ST_CLOSED || atomic_load_explicit(&r->c->slots,
							 memory_order_acquire) == 0)
		return 0;
	return xway_poll_on_chan(r->c) ? 1 : -1;
}

/* Fell back to TCP: our kernel registration of the socket already has the
 * (file, fd) key; give it the app's events and data, drop the rest. */
static void xway_epr_direct(struct xway_ep *ep, struct xway_epr *r)
{
	struct epoll_event ev = { .events = r->events, .data = r->data };

	if (!r->disabled)
		real.epoll_ctl(ep->epfd, EPOLL_CTL_MOD, r->fd, &ev);
	else
		real.epoll_ctl(ep->epfd, EPOLL_CTL_DEL, r->fd, NULL);
	real.epoll_ctl(ep->epfd, EPOLL_CTL_DEL, r->pfd, NULL);
	/* The socket stays registered (now the app's); the rest goes. */
	xway_epr_drop(ep, r, 0);
}

/* Arm, then compute the level (an arrival after the computation will
 * notify).  Returns the epoll mask to report (0: nothing). */
static uint32_t xway_epr_level(struct xway_epr *r, int arm)
{
	if (arm)
		xway_chan_arm(r->c->chan, xway_epr_chan_events(r->events));
	return (uint32_t)(unsigned short)xway_poll_level(r->c, (short)r->events);
}

/* Report r into out[*n] if it has something; keeps LT records queued. */
/*
 * An edge-triggered record on a Xen channel: one event channel carries
 * every wake-up of both directions, and a notification the writer was
 * asked for again between two arrivals comes after the first event was
 * consumed (tcpsem `et`, "ET: only one").  The kernel reports an edge per
 * arrival, so a wake-up that brought no byte (the peer's producer index
 * unchanged), freed no space the app waits for (its consumer index, when
 * EPOLLOUT is wanted) and changed no bit is not reported.  1: the same as
 * the last report (skip); records the new state otherwise.
 */
static int xway_epr_xen_same(struct xway_epr *r, uint32_t m)
{
	uint32_t prod, cons;

	if (!(r->events & EPOLLET) || !r->c || !r->c->chan ||
	    xway_chan_backend(r->c->chan) != XWAY_BACKEND_XEN ||
	    xway_chan_xen_progress(r->c->chan, &prod, &cons) < 0)
		return 0;
	if (!(r->events & EPOLLOUT))
		cons = 0;
	if (r->et_valid && prod == r->et_prod && cons == r->et_cons && m == r->et_m)
		return 1;
	r->et_valid = 1;
	r->et_prod = prod;
	r->et_cons = cons;
	r->et_m = m;
	return 0;
}

static void xway_epr_report(struct xway_ep *ep, struct xway_epr *r, uint32_t m,
			    struct epoll_event *out, int *n)
{
	m &= r->events | EPOLLERR | EPOLLHUP;
	if (!m || r->reported == ep->serial || r->disabled)
		return;
	if (xway_epr_xen_same(r, m))
		return;
	r->reported = ep->serial;
	out[*n].events = m;
	out[*n].data = r->data;
	(*n)++;
	if (r->events & EPOLLONESHOT) {
		r->disabled = 1;
		xway_epr_unqueue(ep, r);
	} else if (!(r->events & EPOLLET)) {
		xway_epr_queue(ep, r);
	}
}

/* ---- epoll_ctl ------------------------------------------------------- */

static int xway_ep_add(struct xway_ep *ep, struct xway_conn *c, int fd,
		       const struct epoll_event *ev)
{
	struct epoll_event kev;
	struct xway_epr *r;
	long res;

	if (xway_epr_find(ep, fd))
		return -EEXIST;
	r = xway_slot_alloc();
	if (!r)
		return -ENOMEM;
	r->ep = ep;
	r->c = c;
	r->fd = fd;
	r->events = ev->events;
	r->data = ev->data;
	r->pfd = xway_chan_pollfd(c->chan);
	kev.events = XWAY_TCP_EVENTS;
	kev.data.u64 = (uint64_t)(uintptr_t)r;
	res = XWAY_SYS(real.epoll_ctl(ep->epfd, EPOLL_CTL_ADD, fd, &kev));
	if (res < 0)
		goto out_free;
	kev.events = XWAY_NOTE_EVENTS;
	res = XWAY_SYS(real.epoll_ctl(ep->epfd, EPOLL_CTL_ADD, r->pfd, &kev));
	if (res == -EEXIST) {
		/* Another fd of the same connection is registered too: its
		 * own number for the notification fd keeps the keys apart. */
		res = XWAY_SYS(real.fcntl(r->pfd, F_DUPFD_CLOEXEC, xway_high_fd_base()));
		if (res >= 0) {
			r->pfd = (int)res;
			r->pfd_dup = 1;
			res = XWAY_SYS(real.epoll_ctl(ep->epfd, EPOLL_CTL_ADD, r->pfd, &kev));
		}
	}
	if (res < 0) {
		real.epoll_ctl(ep->epfd, EPOLL_CTL_DEL, fd, NULL);
		if (r->pfd_dup)
			real.close(r->pfd);
		goto out_free;
	}
	xway_conn_hold(c);
	/* After the hold: counted apart from calls in flight (fdtable.c). */
	atomic_fetch_add_explicit(&c->ep_refs, 1, memory_order_relaxed);
	r->magic = XWAY_EPR_MAGIC;
	r->next = ep->all;
	ep->all = r;
	r->sleeping = 0;
	xway_epr_sleeper(r, r->events);
	/* As the kernel does at ADD: ready now means an event now. */
	if (xway_epr_level(r, 1) & (r->events | EPOLLERR | EPOLLHUP))
		xway_epr_queue(ep, r);
	return 0;
out_free:
	xway_slot_free(r);
	return (int)res;
}

static int xway_ep_ctl(struct xway_ep *ep, struct xway_conn *c, int op, int fd,
		       struct epoll_event *ev)
{
	struct xway_epr *r;
	int ret = 0;

	pthread_mutex_lock(&ep->lock);
	r = xway_epr_find(ep, fd);
	if (r && xway_epr_alive(r) == 0) {
		/* Stale: the fd number was closed and reused. */
		xway_epr_drop(ep, r, 1);
		r = NULL;
	}
	switch (op) {
	case EPOLL_CTL_ADD:
		ret = c ? xway_ep_add(ep, c, fd, ev) : -EEXIST;
		break;
	case EPOLL_CTL_MOD:
		if (!r) {
			ret = -ENOENT;
			break;
		}
		r->events = ev->events;
		r->data = ev->data;
		r->disabled = 0;
		r->et_valid = 0;          /* re-armed: the next level is an edge */
		xway_epr_sleeper(r, r->events);
		xway_epr_unqueue(ep, r);
		if (xway_epr_alive(r) < 0) {
			xway_epr_direct(ep, r);
			break;
		}
		if (xway_epr_level(r, 1) & (r->events | EPOLLERR | EPOLLHUP))
			xway_epr_queue(ep, r);
		break;
	case EPOLL_CTL_DEL:
		if (!r) {
			ret = -ENOENT;
			break;
		}
		xway_epr_drop(ep, r, 1);
		break;
	default:
		ret = -EINVAL;
	}
	xway_pend_set(ep);
	pthread_mutex_unlock(&ep->lock);
	return ret;
}

XWAY_EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
	struct xway_conn *c = NULL;
	struct xway_ep *ep;
	int ret;

	if (!xway_ready())
		return real.epoll_ctl(epfd, op, fd, ev);
	xway_lc_check();
	if (xway_fd_is_ours(fd)) {
		c = xway_fd_get(fd);
		if (c && !xway_poll_on_chan(c)) {   /* listener, FLUSH: kernel */
			xway_conn_put(c);
			c = NULL;
		}
	}
	ep = xway_ep_find(epfd);
	if (!c && (!ep || op == EPOLL_CTL_ADD))
		return real.epoll_ctl(epfd, op, fd, ev);
	if (c && !ep && op != EPOLL_CTL_ADD) {
		/* MOD/DEL of one of ours on an instance we hold no record in
		 * (never added there, or added while it was a plain socket):
		 * the kernel's registration, if any, and its answer (ENOENT,
		 * EBADF, EINVAL).  libuv's uv_close deletes an fd it never
		 * added (node cluster's primary crashed here). */
		xway_conn_put(c);
		return real.epoll_ctl(epfd, op, fd, ev);
	}
	if (!c) {
		/* Not ours now: a record left from when it was (fallen back
		 * to TCP, or the number reused) is handled by xway_ep_ctl. */
		pthread_mutex_lock(&ep->lock);
		int known = xway_epr_find(ep, fd) != NULL;
		pthread_mutex_unlock(&ep->lock);
		if (!known)
			return real.epoll_ctl(epfd, op, fd, ev);
	}
	/* The checks the kernel makes before it looks at the fds. */
	if (op != EPOLL_CTL_DEL && !ev)
		ret = -EFAULT;
	else if (epfd == fd)
		ret = -EINVAL;
	else if (op != EPOLL_CTL_DEL && (ev->events & EPOLLEXCLUSIVE) &&
		 (op == EPOLL_CTL_MOD || (ev->events & EPOLLONESHOT)))
		ret = -EINVAL;
	else if (op == EPOLL_CTL_ADD && !ep) {
		/* Registering our pending eventfd in epfd is also the check
		 * that epfd is an epoll instance (EBADF/EINVAL as the kernel
		 * says). */
		ret = xway_ep_make(epfd, &ep);
		if (ret == 0)
			ret = xway_ep_ctl(ep, c, op, fd, ev);
	} else {
		ret = xway_ep_ctl(ep, c, op, fd, ev);
	}
	if (c)
		xway_conn_put(c);
	return (int)xway_ret(ret);
}

/* ---- the app closes an epoll fd ---------------------------------------- */

/*
 * close(), close_range() and dup2/dup3 over an epoll fd that holds
 * accelerated records: release the records (their connection references,
 * dup'ed notification fds, the instance's eventfd) now, instead of when the
 * number is reused by epoll_create.  Called before the real close, so the
 * number cannot be reused meanwhile.  Our kernel registrations are not
 * touched: the kernel object may live on in a fork child (whose copies of
 * the records are its own) and goes with its last reference.  An instance
 * that was also used through a dup of its number (aliased) is kept: the
 * dup still works (its records stay until that number is reused).
 */
static struct xway_ep *xway_ep_closing_one(int fd)
{
	struct xway_ep *ep;

	if (fd < 0 || (unsigned)fd >= XWAY_EP_TABLE ||
	    atomic_load_explicit(&xway_ep_count, memory_order_acquire) == 0)
		return NULL;
	/* Acquire: the instance's initialisation (and a set tab). */
	ep = atomic_load_explicit(&xway_ep_tab[fd], memory_order_acquire);
	if (!ep || ep->epfd != fd)
		return NULL;
	return ep;
}

void xway_ep_fd_closing(int fd, int dup_src)
{
	struct xway_ep *ep = xway_ep_closing_one(fd);
	int saved = errno;

	if (!ep || ep->aliased)
		return;
	/* dup2(src, fd) closes fd only if src is open (EBADF otherwise). */
	if (dup_src >= 0 && real.fcntl(dup_src, F_GETFD, 0) < 0) {
		errno = saved;
		return;
	}
	xway_ep_retire(ep);
	errno = saved;
}

void xway_ep_range_closing(unsigned lo, unsigned hi)
{
	int saved = errno;

	if (atomic_load_explicit(&xway_ep_count, memory_order_acquire) == 0)
		return;
	/* One instance per round (retire takes the global lock itself);
	 * bounded: each round retires one of a finite list, or stops. */
	for (int round = 0; round < 1 << 20; round++) {
		struct xway_ep *ep;

		pthread_mutex_lock(&xway_ep_glock);
		for (ep = xway_ep_list; ep; ep = ep->next)
			if (ep->epfd >= 0 && (unsigned)ep->epfd >= lo &&
			    (unsigned)ep->epfd <= hi && !ep->aliased)
				break;
		pthread_mutex_unlock(&xway_ep_glock);
		if (!ep)
			break;
		xway_ep_retire(ep);
	}
	errno = saved;
}

/* ---- epoll_create ---------------------------------------------------- */

static int xway_ep_created(int fd)
{
	struct xway_ep *ep;

	if (fd < 0 || !xway_ready() || (unsigned)fd >= XWAY_EP_TABLE ||
	    atomic_load_explicit(&xway_ep_count, memory_order_acquire) == 0)
		return fd;
	ep = atomic_load_explicit(&xway_ep_tab[fd], memory_order_acquire);
	if (ep) {
		int saved = errno;
		xway_ep_retire(ep);       /* that number's old instance is gone */
		errno = saved;
	}
	return fd;
}

XWAY_EXPORT int epoll_create(int size)
{
	return xway_ep_created(real.epoll_create(size));
}

XWAY_EXPORT int epoll_create1(int flags)
{
	return xway_ep_created(real.epoll_create1(flags));
}

/* ---- epoll_wait ------------------------------------------------------ */

/* The LT/ET/pending reports of the ready list into out (under ep->lock). */
static int xway_ep_collect(struct xway_ep *ep, struct epoll_event *out, int max)
{
	struct xway_epr *r, *next;
	int n = 0;

	for (r = ep->ready; r && n < max; r = next) {
		next = r->next_ready;
		int a = xway_epr_alive(r);
		if (a == 0) {
			xway_epr_drop(ep, r, 1);
			continue;
		}
		if (a < 0) {
			xway_epr_direct(ep, r);
			continue;
		}
		if (r->disabled) {
			xway_epr_unqueue(ep, r);
			continue;
		}
		uint32_t m = xway_epr_level(r, 0);
		if (!(m & (r->events | EPOLLERR | EPOLLHUP))) {
			/* Level went down: arm and look once more. */
			xway_epr_unqueue(ep, r);
			m = xway_epr_level(r, 1);
		}
		if (r->events & EPOLLET)
			xway_epr_unqueue(ep, r);   /* an edge is reported once */
		xway_epr_report(ep, r, m, out, &n);
	}
	return n;
}

/* Translate kernel events out[from..from+k) in place; returns the new
 * count of entries from `from` (under ep->lock). */
static int xway_ep_translate(struct xway_ep *ep, struct epoll_event *out,
			     int from, int k)
{
	int n = from;

	for (int i = from; i < from + k; i++) {
		uint64_t tag = out[i].data.u64;
		struct xway_epr *r;

		if (!xway_tag_ours(tag)) {
			out[n++] = out[i];        /* the app's own fd */
			continue;
		}
		r = xway_tag(tag, XWAY_EPR_MAGIC);
		if (!r || r->ep != ep)
			continue;   /* pending eventfd, or a record gone since */
		int a = xway_epr_alive(r);
		if (a == 0) {
			xway_epr_drop(ep, r, 1);
			continue;
		}
		if (a < 0) {
			xway_epr_direct(ep, r);
			continue;
		}
		if (r->disabled)
			continue;
		/* Arm before computing: the next arrival will notify again
		 * (ET: one event per arrival; LT: level re-checked anyway). */
		uint32_t m = xway_epr_level(r, 1);
		struct epoll_event tmp[1];
		int got = 0;
		xway_epr_report(ep, r, m, tmp, &got);
		if (got)
			out[n++] = tmp[0];
	}
	return n - from;
}

static int xway_ep_wait(struct xway_ep *ep, int epfd, struct epoll_event *out,
			int max, int64_t deadline, const sigset_t *mask)
{
	for (long iter = 0; iter < 10000000; iter++) {
		int n, k, tmo_ms;

		pthread_mutex_lock(&ep->lock);
		ep->serial++;
		n = xway_ep_collect(ep, out, max);
		xway_pend_set(ep);
		pthread_mutex_unlock(&ep->lock);
		if (n == max)
			return n;
		if (n > 0 || deadline == 0) {
			tmo_ms = 0;
		} else if (deadline < 0) {
			tmo_ms = -1;
		} else {
			int64_t left = deadline - xway_now_ns();
			/* Round up: never wake before the deadline. */
			left = left <= 0 ? 0 : (left + 999999) / 1000000;
			tmo_ms = left > INT_MAX ? INT_MAX : (int)left;
		}
		k = real.epoll_pwait(epfd, out + n, max - n, tmo_ms, mask);
		if (k < 0) {
			if (n > 0)
				return n;
			return -errno;
		}
		pthread_mutex_lock(&ep->lock);
		k = xway_ep_translate(ep, out, n, k);
		xway_pend_set(ep);
		pthread_mutex_unlock(&ep->lock);
		n += k;
		if (n > 0)
			return n;
		if (deadline == 0 || (deadline > 0 && xway_now_ns() >= deadline))
			return 0;
	}
	return 0;
}

static int xway_ep_wait_entry(int epfd, struct epoll_event *ev, int max,
			      int64_t deadline, const sigset_t *mask, int *done)
{
	struct xway_ep *ep;
	int saved;
	long r;

	*done = 0;
	if (!xway_ready() || !(ep = xway_ep_find(epfd)))
		return 0;
	*done = 1;
	if (max <= 0 || max > INT_MAX / (int)sizeof(*ev))
		return (int)xway_ret(-EINVAL);
	if (!ev)
		return (int)xway_ret(-EFAULT);
	saved = errno;
	r = xway_ep_wait(ep, epfd, ev, max, deadline, mask);
	if (r >= 0)
		errno = saved;
	return (int)xway_ret(r);
}

static int64_t xway_ms_deadline(int tmo)
{
	struct timespec ts;

	if (tmo < 0)
		return -1;
	if (tmo == 0)
		return 0;
	ts.tv_sec = tmo / 1000;
	ts.tv_nsec = (long)(tmo % 1000) * 1000000;
	return xway_deadline_ns(&ts);
}

/*
 * A wait that went to the kernel directly (the instance was not ours yet)
 * may return our tags: another thread registered an accelerated fd while
 * this one slept (apache's event MPM: the listener thread waits while
 * workers add connections).  Translate them; if nothing is left, wait
 * again the proper way for the rest of the time.
 */
static int xway_ep_passthrough_fix(int epfd, struct epoll_event *ev, int max, int r,
				   int64_t deadline, const sigset_t *mask)
{
	struct xway_ep *ep;
	int k, saved = errno;

	if (r <= 0 || atomic_load_explicit(&xway_ep_count, memory_order_acquire) == 0)
		return r;
	k = 0;
	for (int i = 0; i < r && !k; i++)
		k = xway_tag_ours(ev[i].data.u64);
	if (!k || !(ep = xway_ep_find(epfd)))
		return r;
	pthread_mutex_lock(&ep->lock);
	ep->serial++;
	r = xway_ep_translate(ep, ev, 0, r);
	xway_pend_set(ep);
	pthread_mutex_unlock(&ep->lock);
	if (r > 0 || deadline == 0 || (deadline > 0 && xway_now_ns() >= deadline)) {
		errno = saved;
		return r;
	}
	return xway_ep_wait_entry(epfd, ev, max, deadline, mask, &k);
}

XWAY_EXPORT int epoll_pwait(int epfd, struct epoll_event *ev, int max, int tmo,
			    const sigset_t *mask)
{
	int done, r;
	int64_t dl = xway_ms_deadline(tmo);

	r = xway_ep_wait_entry(epfd, ev, max, dl, mask, &done);
	if (done)
		return r;
	r = real.epoll_pwait(epfd, ev, max, tmo, mask);
	return xway_ready() ? xway_ep_passthrough_fix(epfd, ev, max, r, dl, mask) : r;
}

XWAY_EXPORT int epoll_wait(int epfd, struct epoll_event *ev, int max, int tmo)
{
	int done, r;
	int64_t dl = xway_ms_deadline(tmo);

	r = xway_ep_wait_entry(epfd, ev, max, dl, NULL, &done);
	if (done)
		return r;
	r = real.epoll_wait(epfd, ev, max, tmo);
	return xway_ready() ? xway_ep_passthrough_fix(epfd, ev, max, r, dl, NULL) : r;
}

XWAY_EXPORT int epoll_pwait2(int epfd, struct epoll_event *ev, int max,
			     const struct timespec *tmo, const sigset_t *mask)
{
	int done, r;
	int64_t dl;

	if (tmo && (tmo->tv_sec < 0 || tmo->tv_nsec < 0 || tmo->tv_nsec >= 1000000000))
		return real.epoll_pwait2(epfd, ev, max, tmo, mask);   /* EINVAL */
	dl = !tmo ? -1 : (tmo->tv_sec == 0 && tmo->tv_nsec == 0) ? 0
	     : xway_deadline_ns(tmo);
	r = xway_ep_wait_entry(epfd, ev, max, dl, mask, &done);
	if (done)
		return r;
	r = real.epoll_pwait2(epfd, ev, max, tmo, mask);
	return xway_ready() ? xway_ep_passthrough_fix(epfd, ev, max, r, dl, mask) : r;
}
