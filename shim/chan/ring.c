// SPDX-License-Identifier: MIT
/*
 * The ring itself: index arithmetic on free-running 32-bit indices masked on
 * access, copy in/out with wrap-around, partial reads and writes, peek and
 * discard.  Pure (no system calls), so the unit tests drive it directly and
 * a hostile peer can only make it return -EPROTO: every length used to
 * touch memory is bounded by the private size, never by shared values.
 */
#include <errno.h>
#include <string.h>

#include "barrier.h"
#include "ring.h"

void xw_ring_init(struct xw_ring *r, struct xway_ring_ctl *ctl, void *data,
		  uint32_t order)
{
	r->ctl = ctl;
	r->data = data;
	r->size = 1u << order;
	r->mask = r->size - 1;
}

int64_t xw_ring_space(const struct xw_ring *r, uint32_t prod)
{
	/* Acquire: the consumer's copy-out before we overwrite that space. */
	uint32_t cons = xw_load_acquire(&r->ctl->cons);
	uint32_t used = prod - cons;

	if (used > r->size)
		return -EPROTO;
	return r->size - used;
}

int64_t xw_ring_avail(const struct xw_ring *r, uint32_t cons)
{
	/* Acquire: the producer's index before the data it covers. */
	uint32_t prod = xw_load_acquire(&r->ctl->prod);
	uint32_t avail = prod - cons;

	if (avail > r->size)
		return -EPROTO;
	return avail;
}

void xw_ring_copy_in(const struct xw_ring *r, uint32_t at, const void *src,
		     size_t n)
{
	uint32_t off = at & r->mask;
	size_t first = r->size - off;

	if (first > n)
		first = n;
	memcpy(r->data + off, src, first);
	if (n > first)
		memcpy(r->data, (const uint8_t *)src + first, n - first);
}

void xw_ring_copy_out(const struct xw_ring *r, uint32_t at, void *dst,
		      size_t n)
{
	uint32_t off = at & r->mask;
	size_t first = r->size - off;

	if (first > n)
		first = n;
	memcpy(dst, r->data + off, first);
	if (n > first)
		memcpy((uint8_t *)dst + first, r->data, n - first);
}

static size_t iov_total(const struct iovec *iov, int iovcnt)
{
	size_t t = 0;

	for (int i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len > SIZE_MAX - t)
			return SIZE_MAX;
		t += iov[i].iov_len;
	}
	return t;
}

ssize_t xw_ring_writev(struct xw_ring *r, uint32_t *prod,
		       const struct iovec *iov, int iovcnt)
{
	int64_t space;

	if (iov_total(iov, iovcnt) == 0)
		return 0;
	space = xw_ring_space(r, *prod);
	if (space < 0)
		return space;
	return xw_ring_writev_in(r, prod, iov, iovcnt, (uint32_t)space);
}

ssize_t xw_ring_writev_in(struct xw_ring *r, uint32_t *prod,
			  const struct iovec *iov, int iovcnt, uint32_t space)
{
	size_t want = iov_total(iov, iovcnt);
	uint32_t p = *prod;
	uint32_t since_pub = 0;
	size_t left;

	if (want == 0)
		return 0;
	if (space > r->size)
		space = r->size;   /* never trust a caller's bound blindly */
	if (space == 0)
		return -EAGAIN;
	left = want < (size_t)space ? want : (size_t)space;
	const size_t total = left;

	for (int i = 0; i < iovcnt && left; i++) {
		const uint8_t *src = iov[i].iov_base;
		size_t n = iov[i].iov_len < left ? iov[i].iov_len : left;

		while (n) {
			uint32_t k = XW_RING_PUBLISH_CHUNK - since_pub;

			if (k > n)
				k = n;
			xw_ring_copy_in(r, p, src, k);
			p += k; src += k; n -= k; left -= k;
			since_pub += k;
			if (since_pub == XW_RING_PUBLISH_CHUNK && left) {
				/* Private first: a holder that dies between
				 * the two leaves nothing half-published. */
				*prod = p;
				/* Release: the bytes copied before the index
				 * that makes them visible. */
				xw_store_release(&r->ctl->prod, p);
				since_pub = 0;
			}
		}
	}
	*prod = p;
	/* Release: the bytes copied before the index that covers them. */
	xw_store_release(&r->ctl->prod, p);
	return total;
}

ssize_t xw_ring_readv(struct xw_ring *r, uint32_t *cons,
		      const struct iovec *iov, int iovcnt, int peek)
{
	int64_t avail;

	if (iov_total(iov, iovcnt) == 0)
		return 0;
	avail = xw_ring_avail(r, *cons);
	if (avail < 0)
		return avail;
	return xw_ring_readv_in(r, cons, iov, iovcnt, peek, (uint32_t)avail);
}

ssize_t xw_ring_readv_in(struct xw_ring *r, uint32_t *cons,
			 const struct iovec *iov, int iovcnt, int peek,
			 uint32_t avail)
{
	size_t want = iov_total(iov, iovcnt);
	uint32_t c = *cons;
	uint32_t since_pub = 0;
	size_t left;

	if (want == 0)
		return 0;
	if (avail > r->size)
		avail = r->size;
	if (avail == 0)
		return -EAGAIN;
	left = want < (size_t)avail ? want : (size_t)avail;
	const size_t total = left;

	for (int i = 0; i < iovcnt && left; i++) {
		uint8_t *dst = iov[i].iov_base;
		size_t n = iov[i].iov_len < left ? iov[i].iov_len : left;

		while (n) {
			uint32_t k = XW_RING_PUBLISH_CHUNK - since_pub;

			if (k > n)
				k = n;
			if (dst) {
				xw_ring_copy_out(r, c, dst, k);
				dst += k;
			}
			c += k; n -= k; left -= k;
			since_pub += k;
			if (!peek && since_pub == XW_RING_PUBLISH_CHUNK && left) {
				*cons = c;
				/* Release: the copy-out before handing the
				 * space back to the producer. */
				xw_store_release(&r->ctl->cons, c);
				since_pub = 0;
			}
		}
	}
	if (!peek) {
		*cons = c;
		/* Release: the copy-out before handing the space back. */
		xw_store_release(&r->ctl->cons, c);
	}
	return total;
}

void xw_ring_discard(struct xw_ring *r, uint32_t *cons, uint32_t n)
{
	*cons += n;
	/* Release: nothing was copied, but keep the index protocol uniform
	 * (our earlier reads of this space before the producer reuses it). */
	xw_store_release(&r->ctl->cons, *cons);
}
