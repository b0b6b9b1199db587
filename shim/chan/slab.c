// SPDX-License-Identifier: MIT
/*
 * Storage for endpoint objects (struct xway_chan).
 *
 * An endpoint object is written only while its channel is set up, before
 * anything else can see it (local.c, xen.c), and only read afterwards: the
 * mutable state shared by the processes of an end lives in its struct
 * xw_ep.  A fork()ed child therefore needs only a copy, not shared memory:
 * each object used to be a MAP_SHARED anonymous mapping of its own, and
 * each such mapping is a shmem file, set up, faulted in and torn down
 * (with a TLB flush) per connection, about 3 % of the machine in the local
 * short-connection churn.  Now objects come from private chunks made on
 * demand and kept: a fork()ed child gets a copy of the chunks and of their
 * bitmaps, so what it frees or allocates never touches the parent's.
 *
 * Lock-free (a CAS on a bitmap word): objects are allocated inside
 * connect() and accept(), which a signal handler may call, possibly while
 * the thread it interrupted was here.  Past XW_SLAB_CHUNKS chunks, objects
 * are single mappings again (xw_slab_free tells them apart by address).
 */
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "chan_int.h"

#define XW_SLAB_PER    64u           /* objects per chunk: one bitmap word */
#define XW_SLAB_CHUNKS 1024u         /* 65536 objects before single mappings */

struct xw_chunk {
	struct xway_chan obj[XW_SLAB_PER];
};

static _Atomic(struct xw_chunk *) xw_chunks[XW_SLAB_CHUNKS];
static _Atomic uint64_t xw_used[XW_SLAB_CHUNKS];
static _Atomic unsigned xw_nchunks;   /* chunks made so far (a bound) */

/* Chunk i, made if need be; the count covers it before it is returned (a
 * free of an object in it must find it). */
static struct xw_chunk *chunk_get(unsigned i)
{
	struct xw_chunk *ch = atomic_load_explicit(&xw_chunks[i], memory_order_acquire);

	if (!ch) {
		void *m = mmap(NULL, sizeof(struct xw_chunk), PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (m == MAP_FAILED)
			return NULL;
		/* acq_rel: publish the new chunk, or see the winner's. */
		if (atomic_compare_exchange_strong_explicit(&xw_chunks[i], &ch, m,
							    memory_order_acq_rel,
							    memory_order_acquire))
			ch = m;
		else
			munmap(m, sizeof(struct xw_chunk));   /* another thread won */
	}
	unsigned n = atomic_load_explicit(&xw_nchunks, memory_order_relaxed);

	while (n < i + 1 &&
	       !atomic_compare_exchange_weak_explicit(&xw_nchunks, &n, i + 1,
						      memory_order_relaxed,
						      memory_order_relaxed))
		;
	return ch;
}

/* A zeroed object, or NULL (errno from mmap). */
struct xway_chan *xw_slab_alloc(void)
{
	for (unsigned i = 0; i < XW_SLAB_CHUNKS; i++) {
		uint64_t u = atomic_load_explicit(&xw_used[i], memory_order_relaxed);
		struct xw_chunk *ch;

		if (u == UINT64_MAX)
			continue;
		if (!(ch = chunk_get(i)))
			break;
		while (u != UINT64_MAX) {
			unsigned b = (unsigned)__builtin_ctzll(~u);

			/* Acquire: the object's previous user (xw_slab_free,
			 * release) is done with it before we write it. */
			if (atomic_compare_exchange_weak_explicit(&xw_used[i], &u,
								  u | (1ull << b),
								  memory_order_acquire,
								  memory_order_relaxed)) {
				memset(&ch->obj[b], 0, sizeof(ch->obj[b]));
				return &ch->obj[b];
			}
		}
	}
	void *m = mmap(NULL, sizeof(struct xway_chan), PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return m == MAP_FAILED ? NULL : m;
}

void xw_slab_free(struct xway_chan *c)
{
	unsigned n = atomic_load_explicit(&xw_nchunks, memory_order_relaxed);

	for (unsigned i = 0; i < n; i++) {
		struct xw_chunk *ch = atomic_load_explicit(&xw_chunks[i], memory_order_acquire);

		uintptr_t a = (uintptr_t)c, lo = (uintptr_t)ch;

		if (ch && a >= lo && a < lo + sizeof(*ch)) {
			/* Release: our last reads and writes of the object
			 * before anyone may take it again. */
			atomic_fetch_and_explicit(&xw_used[i],
						  ~(1ull << ((a - lo) / sizeof(*c))),
						  memory_order_release);
			return;
		}
	}
	munmap(c, sizeof(*c));
}
