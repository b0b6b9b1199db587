/* SPDX-License-Identifier: MIT */
/*
 * Pure functions over one single-producer single-consumer byte ring of the
 * local channel (layout in include/xway/ring.h).  No system calls, no Xen
 * headers: the same code is unit-tested directly.  The caller keeps the
 * trusted copies: geometry in struct xw_ring (set once, never re-read from
 * shared memory) and its own index (the producer's prod, the consumer's
 * cons) in private memory; the shared copy of its own index is only ever
 * written.  The peer's index is read once per operation and validated: a
 * ring claiming more than `size` bytes in flight gives -EPROTO.
 */
#ifndef XWAY_CHAN_RING_H
#define XWAY_CHAN_RING_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "xway/ring.h"

/* Big transfers publish their index at least this often (PERFORMANCE.md:
 * the consumer starts early; 3.0 -> 5.4 GB/s on the reference ring). */
#define XW_RING_PUBLISH_CHUNK (64u * 1024u)

struct xw_ring {
	struct xway_ring_ctl *ctl;   /* shared: indices, flags, waiting words */
	uint8_t  *data;              /* private copy of the data pointer */
	uint32_t  size;              /* 1 << order, private copy */
	uint32_t  mask;              /* size - 1 */
};

/* order must already be validated against XWAY_RING_ORDER_MIN/MAX. */
void xw_ring_init(struct xw_ring *r, struct xway_ring_ctl *ctl, void *data,
		  uint32_t order);

/* Producer: free bytes given our private prod, or -EPROTO (one read of
 * the shared cons). */
int64_t xw_ring_space(const struct xw_ring *r, uint32_t prod);
/* Consumer: bytes readable given our private cons, or -EPROTO (one read of
 * the shared prod, acquire: the index before the data). */
int64_t xw_ring_avail(const struct xw_ring *r, uint32_t cons);

/* Copy n <= size bytes at ring offset `at` (free-running), wrapping. */
void xw_ring_copy_in(const struct xw_ring *r, uint32_t at, const void *src,
		     size_t n);
void xw_ring_copy_out(const struct xw_ring *r, uint32_t at, void *dst,
		      size_t n);

/*
 * Write as much of iov[] as fits (partial write), publishing *prod (private
 * and shared) every XW_RING_PUBLISH_CHUNK bytes and at the end.  Returns
 * the count, -EAGAIN when the ring is full and something was asked, 0 for
 * an empty request, -EPROTO on a corrupt peer index.
 */
ssize_t xw_ring_writev(struct xw_ring *r, uint32_t *prod,
		       const struct iovec *iov, int iovcnt);

/*
 * Read up to the iov[] total.  An iov_base of NULL discards that many
 * bytes.  peek: copy without consuming.  Otherwise *cons (private and
 * shared) advances, published every XW_RING_PUBLISH_CHUNK bytes.  Returns
 * the count, -EAGAIN when empty (flags are the caller's business), 0 for
 * an empty request, -EPROTO on a corrupt peer index.
 */
ssize_t xw_ring_readv(struct xw_ring *r, uint32_t *cons,
		      const struct iovec *iov, int iovcnt, int peek);

/* The same with the free space (writev_in) or the readable count
 * (readv_in) already known to the caller, e.g. from a cached, validated
 * peer index: no shared index is read.  The bound is clamped to the size. */
ssize_t xw_ring_writev_in(struct xw_ring *r, uint32_t *prod,
			  const struct iovec *iov, int iovcnt, uint32_t space);
ssize_t xw_ring_readv_in(struct xw_ring *r, uint32_t *cons,
			 const struct iovec *iov, int iovcnt, int peek,
			 uint32_t avail);

/* Consume n bytes without copying; n must be <= what avail returned. */
void xw_ring_discard(struct xw_ring *r, uint32_t *cons, uint32_t n);

#endif /* XWAY_CHAN_RING_H */
