// SPDX-License-Identifier: MIT
/*
 * Exclusion for one direction of an endpoint (struct xw_excl, chan_int.h).
 *
 * Almost always one thread of one process sends on an endpoint, and one
 * receives.  A process-shared robust mutex costs two locked instructions
 * per call (about a quarter of a 64-byte send), so the first thread to use
 * a direction becomes its *owner* and from then on enters with plain
 * stores: `busy := me`, a compiler barrier, re-check `owner == me`; leaves
 * with `busy := 0` (release).  Any other thread or process that wants the
 * direction (a second thread, a fork()ed child, a sibling after exec)
 * converts it, once and for good, to SHARED: it stores `owner := SHARED`,
 * then calls membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED), which runs a full
 * barrier on every CPU running a registered process, and then waits until
 * `busy` is 0.  That is the asymmetric Dekker pair of userspace RCU: the
 * membarrier() stands for the barrier the owner does not execute, so
 * either the owner's re-check sees SHARED, or the converter sees the
 * owner's `busy`.  From then on everyone takes the robust mutex.
 *
 * Robustness and identity: an owner thread holds a robust mutex of its own
 * (a "death detector" slot, below) until it dies; its token names that
 * slot.  A converter waiting for `busy` checks the slot now and then: a
 * dead owner (possibly killed inside its critical section, which leaves
 * nothing half-published: private index before shared one, as with the
 * mutex) is passed over.  A token is valid only in the process incarnation
 * that took it (a mark in a MADV_WIPEONFORK page), so a child made by
 * fork() or a raw clone(), which copies our thread-local token, is never
 * taken for its parent.
 *
 * The fast path is used only where membarrier() is sure to work for a
 * converter: the kernel supports the global expedited command, this
 * process registered for it, and no seccomp filter was seen (a process
 * that starts under a filter never uses it; xway_chan_before_sandbox()
 * converts every endpoint of the process before a filter goes up, while
 * membarrier() is still allowed).  Otherwise every call takes the mutex.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/membarrier.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "barrier.h"
#include "chan_int.h"
#include "sys.h"

#define XW_EXCL_SHARED UINT64_MAX
#define XW_SLOT_BITS   20
#define XW_SLOTS       4096u

/*
 * Death detectors: one robust process-shared mutex per owner thread, held
 * from its first claim until it dies.  They live in one MAP_SHARED region
 * made once per process image and never unmapped, so the kernel's robust
 * list (walked at thread exit, process death and exec) and glibc's list
 * code never meet a freed entry, and fork()ed children share it with us.
 * A slot whose holder died is reclaimed with a new generation; an owner
 * token is (generation << XW_SLOT_BITS | slot + 1), unique among the live
 * threads of a process tree.
 */
struct xw_slot {
	pthread_mutex_t   m;
	_Atomic uint64_t  gen;
	_Atomic uint32_t  ready;     /* m initialised */
};

struct xw_region {
	_Atomic uint32_t next;       /* slots handed out so far */
	struct xw_slot   slot[XW_SLOTS];
};

static struct xw_region *xw_rg;
/* Per-process page, wiped in children: [0] incarnation (non-zero once
 * set), [1] the incarnation that registered for membarrier(). */
static uint64_t *xw_proc_page;
static pthread_once_t xw_proc_once = PTHREAD_ONCE_INIT;
/* Set before a seccomp filter goes up: no more membarrier() calls. */
static _Atomic int xw_sandboxed;

static _Thread_local uint64_t tl_token, tl_proc;

/* Endpoints of this process image, for xway_chan_before_sandbox(). */
static pthread_mutex_t xw_reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct xway_chan **xw_reg;
static size_t xw_reg_n, xw_reg_cap;

static long xw_membarrier(int cmd)
{
	return syscall(SYS_membarrier, cmd, 0, 0);
}

/* A seccomp filter inherited from before exec: "Seccomp: 2" in status.
 * Raw calls and a stack buffer: this runs inside a send, maybe in a signal
 * handler. */
static int xw_seccomp_at_start(void)
{
	char buf[4096];
	long fd = xw_raw_syscall(SYS_openat, AT_FDCWD, (long)"/proc/self/status",
				 O_RDONLY | O_CLOEXEC, 0, 0);
	long n = fd < 0 ? -1 : xw_sys_read((int)fd, buf, sizeof(buf) - 1);
	const char *p;

	if (fd >= 0)
		xw_sys_close((int)fd);
	if (n <= 0)
		return 1;       /* cannot tell: assume the worst */
	buf[n] = 0;
	p = strstr(buf, "\nSeccomp:");
	if (!p)
		return 0;       /* a kernel without seccomp */
	p += strlen("\nSeccomp:");
	while (*p == ' ' || *p == '\t')
		p++;
	return *p != '0';
}

/*
 * The region and the page are made when the library is loaded, before the
 * program can fork: every process forked from this image must share the
 * one region, or two siblings that each made their own would hand out the
 * same slot numbers, hence the same owner token, and both take the fast
 * path at once.  Two mappings, no page touched: a process that never uses
 * a channel pays two mmap calls.
 */
static void *xw_ctor_page, *xw_ctor_region;

__attribute__((constructor)) static void xw_excl_ctor(void)
{
	void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	void *r = mmap(NULL, sizeof(struct xw_region), PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED || r == MAP_FAILED || madvise(p, 4096, MADV_WIPEONFORK)) {
		if (p != MAP_FAILED)
			munmap(p, 4096);
		if (r != MAP_FAILED)
			munmap(r, sizeof(struct xw_region));
		return;
	}
	xw_ctor_page = p;
	xw_ctor_region = r;
}

/* Once per process image, at the first claim: decide whether the fast
 * path may be used at all. */
static void xw_proc_init(void)
{
	long q;

	if (!xw_ctor_page || getenv("XWAY_CHAN_NO_OWNER") || xw_seccomp_at_start())
		return;
	q = xw_membarrier(MEMBARRIER_CMD_QUERY);
	if (q < 0 || !(q & MEMBARRIER_CMD_GLOBAL_EXPEDITED) ||
	    !(q & MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED))
		return;
	xw_rg = xw_ctor_region;
	/* Release: the region before the page that enables its use. */
	__atomic_store_n(&xw_proc_page, (uint64_t *)xw_ctor_page, __ATOMIC_RELEASE);
}

/* splitmix64 finaliser: spreads a few changing bits over the word. */
static uint64_t xw_mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static int xw_robust_init(pthread_mutex_t *m)
{
	pthread_mutexattr_t a;
	int r;

	if ((r = pthread_mutexattr_init(&a)))
		return -r;
	r = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
	if (!r)
		r = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	if (!r)
		r = pthread_mutex_init(m, &a);
	pthread_mutexattr_destroy(&a);
	return -r;
}

static uint64_t xw_token(uint32_t i, uint64_t gen)
{
	return gen << XW_SLOT_BITS | (i + 1);
}

/* The calling thread's token in this process incarnation, or 0 if it has
 * none yet (it gets one at its first claim). */
static inline uint64_t xw_self(void)
{
	uint64_t *pg = __atomic_load_n(&xw_proc_page, __ATOMIC_ACQUIRE);

	if (__builtin_expect(pg && pg[0] != 0 && tl_proc == pg[0], 1))
		return tl_token;
	return 0;
}

/* Give the calling thread a death-detector slot: a fresh one, or one whose
 * holder died.  Needs no system call beyond what a futex does. */
static int xw_take_slot(void)
{
	uint64_t *pg = xw_proc_page;
	uint32_t i;

	if (pg[0] == 0) {
		/* This incarnation's mark (a child's page was wiped). */
		struct timespec ts;
		uint64_t t;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		t = xw_mix((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^
		    xw_mix((uintptr_t)&ts);
		pg[0] = t ? t : 1;
	}
	i = atomic_fetch_add_explicit(&xw_rg->next, 1, memory_order_relaxed);
	if (i < XW_SLOTS) {
		struct xw_slot *s = &xw_rg->slot[i];

		if (xw_robust_init(&s->m) || pthread_mutex_lock(&s->m))
			return -ENOMEM;
		/* Release: initialised before scanners may try it. */
		atomic_store_explicit(&s->ready, 1, memory_order_release);
		tl_token = xw_token(i, atomic_load(&s->gen));
		tl_proc = pg[0];
		return 0;
	}
	for (i = 0; i < XW_SLOTS; i++) {
		struct xw_slot *s = &xw_rg->slot[i];
		int r;

		if (!atomic_load_explicit(&s->ready, memory_order_acquire))
			continue;
		r = pthread_mutex_trylock(&s->m);
		if (r == EOWNERDEAD)
			pthread_mutex_consistent(&s->m);
		else if (r)
			continue;
		/* Ours now: a new generation makes the dead holder's token
		 * unrecognisable. */
		tl_token = xw_token(i, atomic_fetch_add(&s->gen, 1) + 1);
		tl_proc = pg[0];
		return 0;
	}
	return -ENOSPC;
}

/* Is the thread behind token o gone?  (Its slot changed generation, or its
 * mutex is free or marked dead.) */
static int xw_owner_dead(uint64_t o)
{
	uint32_t i = (uint32_t)(o & ((1u << XW_SLOT_BITS) - 1)) - 1;
	struct xw_slot *s;
	int r;

	/* The region made at load, not xw_rg: a converter that never
	 * claimed anything itself (never ran xw_proc_init) shares the
	 * owner's region all the same (it is the same image's, inherited
	 * by fork; an endpoint never crosses exec), and taking a live owner
	 * for dead here let two senders in at once. */
	struct xw_region *rg = xw_ctor_region;

	if (!rg || i >= XW_SLOTS)
		return 1;   /* no region: no token was ever handed out */
	s = &rg->slot[i];
	if (atomic_load(&s->gen) != o >> XW_SLOT_BITS)
		return 1;
	r = pthread_mutex_trylock(&s->m);
	if (r == EBUSY)
		return 0;
	if (r == EOWNERDEAD)
		pthread_mutex_consistent(&s->m);
	if (r == 0 || r == EOWNERDEAD) {
		/* Retire the token, then leave the slot for reuse. */
		atomic_fetch_add(&s->gen, 1);
		pthread_mutex_unlock(&s->m);
	}
	return 1;
}

int xw_lock_init(struct xw_excl *x)
{
	atomic_store_explicit(&x->owner, 0, memory_order_relaxed);
	atomic_store_explicit(&x->busy, 0, memory_order_relaxed);
	return xw_robust_init(&x->lock);
}

static int xw_mutex_lock(pthread_mutex_t *m)
{
	int r = pthread_mutex_lock(m);

	if (r == EOWNERDEAD) {
		/* The holder died.  Our state is consistent at every point
		 * (private index written just before the shared one), so
		 * the lock can simply be declared consistent. */
		pthread_mutex_consistent(m);
		return 0;
	}
	return -r;
}

/* Become the owner of an unowned direction.  0 on success. */
static int xw_claim(struct xw_excl *x)
{
	uint64_t zero = 0, *pg;

	pthread_once(&xw_proc_once, xw_proc_init);
	pg = __atomic_load_n(&xw_proc_page, __ATOMIC_ACQUIRE);
	if (!pg || atomic_load_explicit(&xw_sandboxed, memory_order_relaxed))
		return -EPERM;
	if (xw_self() == 0 && xw_take_slot())
		return -ENOSPC;
	if (pg[1] != pg[0]) {
		/* Before anyone can see us as an owner: converters' barriers
		 * reach registered processes only. */
		if (xw_membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED))
			return -errno;
		pg[1] = pg[0];
	}
	/* Acq_rel: whatever the previous user published, before our use. */
	if (atomic_compare_exchange_strong_explicit(&x->owner, &zero, tl_token,
						    memory_order_acq_rel,
						    memory_order_acquire))
		return 0;
	return -EBUSY;
}

/* Wait until no owner is inside its critical section: busy is 0, or the
 * thread it names died (possibly mid-operation, which leaves nothing
 * half-published: see the mutex). */
static void xw_wait_idle(struct xw_excl *x)
{
	uint64_t b;

	/* Acquire: the owner's last critical section before ours. */
	for (unsigned i = 1; (b = atomic_load_explicit(&x->busy, memory_order_acquire)); i++) {
		if ((i & 1023) == 0) {
			if (xw_owner_dead(b)) {
				atomic_store_explicit(&x->busy, 0, memory_order_relaxed);
				return;
			}
			sched_yield();
		} else {
			xw_cpu_relax();
		}
	}
}

/* Under x->lock: take the direction from its owner o for good. */
static void xw_convert(struct xw_excl *x, uint64_t o)
{
	/* Seq_cst: our SHARED store before the membarrier() below.  Only
	 * holders of x->lock move an owner to SHARED, so this cannot fail
	 * except to a claim when o was 0 (then we convert that owner). */
	while (o != XW_EXCL_SHARED &&
	       !atomic_compare_exchange_strong_explicit(&x->owner, &o, XW_EXCL_SHARED,
							memory_order_seq_cst,
							memory_order_acquire))
		;
	if (o == 0 || o == XW_EXCL_SHARED)
		return;             /* nobody owned it: nobody to wait for */
	/* The owner's missing StoreLoad barrier: afterwards either its
	 * re-check sees SHARED or we see its busy store. */
	if (atomic_load_explicit(&xw_sandboxed, memory_order_relaxed) ||
	    xw_membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)) {
		/* Not possible here (xway_chan_before_sandbox converted every
		 * endpoint before the filter): the best left is a fence and
		 * a pause far longer than a store buffer holds a store. */
		xw_fence_seq();
		for (int i = 0; i < 200; i++) {
			struct timespec ts = { 0, 1000 };

			xw_wait_idle(x);
			nanosleep(&ts, NULL);
		}
	}
}

int xw_lock(struct xw_excl *x)
{
	uint64_t me = xw_self();
	int r;

	for (;;) {
		uint64_t o = atomic_load_explicit(&x->owner, memory_order_acquire);

		if (__builtin_expect(me != 0 && o == me, 1)) {
			if (atomic_load_explicit(&x->busy, memory_order_relaxed) == me)
				return -EDEADLK;   /* re-entered (signal handler) */
			atomic_store_explicit(&x->busy, me, memory_order_relaxed);
			/* Compiler barrier only: a converter's membarrier()
			 * supplies the hardware StoreLoad (see the top). */
			atomic_signal_fence(memory_order_seq_cst);
			if (__builtin_expect(atomic_load_explicit(&x->owner,
								  memory_order_relaxed) == me, 1))
				return 0;
			atomic_store_explicit(&x->busy, 0, memory_order_release);
			continue;
		}
		if (o == 0 && xw_claim(x) == 0) {
			me = tl_token;
			continue;
		}
		break;
	}
	if ((r = xw_mutex_lock(&x->lock)))
		return r;
	xw_convert(x, atomic_load_explicit(&x->owner, memory_order_acquire));
	xw_wait_idle(x);
	return 0;
}
void xw_unlock(struct xw_excl *x)
{
	/* Validated, never the raw thread-local copy: a fork()ed child
	 * inherits its parent thread's token, and the parent may be storing
	 * that very token in busy right now. */
	uint64_t me = xw_self();

	/* Only the owner thread ever stores its token in busy, and tokens
	 * are unique among the live threads of the process tree, so busy ==
	 * our token means we entered on the fast path. */
	if (me != 0 && atomic_load_explicit(&x->busy, memory_order_relaxed) == me) {
		/* Release: our ring and index stores before the converter's
		 * acquire of busy == 0. */
		atomic_store_explicit(&x->busy, 0, memory_order_release);
		return;
	}
	pthread_mutex_unlock(&x->lock);
}

/* Put a direction on the mutex for good (nobody may be inside it from
 * this thread). */
void xw_excl_share(struct xw_excl *x)
{
	if (xw_mutex_lock(&x->lock))
		return;
	xw_convert(x, atomic_load_explicit(&x->owner, memory_order_acquire));
	xw_wait_idle(x);
	pthread_mutex_unlock(&x->lock);
}

/* ---- the sandbox hook ---------------------------------------------------- */

void xw_excl_register(struct xway_chan *c)
{
	pthread_mutex_lock(&xw_reg_lock);
	if (xw_reg_n == xw_reg_cap) {
		size_t cap = xw_reg_cap ? xw_reg_cap * 2 : 64;
		void *n = realloc(xw_reg, cap * sizeof(*xw_reg));

		if (!n) {
			/* Cannot track it: keep it off the fast path. */
			pthread_mutex_unlock(&xw_reg_lock);
			xw_excl_share(&c->ep->tx_lock);
			xw_excl_share(&c->ep->rx_lock);
			return;
		}
		xw_reg = n;
		xw_reg_cap = cap;
	}
	xw_reg[xw_reg_n++] = c;
	pthread_mutex_unlock(&xw_reg_lock);
}

void xw_excl_unregister(struct xway_chan *c)
{
	pthread_mutex_lock(&xw_reg_lock);
	for (size_t i = 0; i < xw_reg_n; i++)
		if (xw_reg[i] == c) {
			xw_reg[i] = xw_reg[--xw_reg_n];
			break;
		}
	pthread_mutex_unlock(&xw_reg_lock);
}

void xway_chan_before_sandbox(void)
{
	pthread_mutex_lock(&xw_reg_lock);
	/* Every direction, ours included: after the filter, another thread
	 * of ours taking one over could not call membarrier(). */
	for (size_t i = 0; i < xw_reg_n; i++) {
		xw_excl_share(&xw_reg[i]->ep->tx_lock);
		xw_excl_share(&xw_reg[i]->ep->rx_lock);
	}
	atomic_store(&xw_sandboxed, 1);
	pthread_mutex_unlock(&xw_reg_lock);
}

int xw_excl_sandboxed(void)
{
	return atomic_load_explicit(&xw_sandboxed, memory_order_relaxed);
}
