/* SPDX-License-Identifier: MIT */
/*
 * vchan server ends made ahead (the client domain's broker; DESIGN §7.3).
 *
 * Serving a vchan end (an unbound event channel for the peer, gntalloc
 * grants for the shared page and both rings, the shared page initialised)
 * takes about a dozen system calls and hypercalls: 2.5-3 ms in the emulated
 * test bed, and it sat inside every Xen OFFER, before the client's SYN may
 * leave.  So the broker keeps up to cfg.xen_vchan_pool ends per (peer
 * domain, ring order) it served an offer for in the last POOL_IDLE_S
 * seconds, and an OFFER takes one.  The pool is refilled when one of this
 * broker's Xen offers is decided (or POOL_REFILL_LATE_MS after a take, if
 * no decision comes first), one end per idle dispatch of the main loop, so
 * a request never waits behind more than one: while a connection is being
 * set up, the domain's CPU is the set-up's (a domU may have one vCPU; the
 * test bed's have), and once it is decided the client is waiting for its
 * peer domain anyway.
 *
 * A pooled end is exactly what xwayd_vchan_serve returns, kept: its grant
 * references and port have not left this process (they go out only with
 * the offer that takes it), nobody maps it, and its shared page is as
 * libxenvchan_server_init leaves it.  Whoever takes it owns it as a fresh
 * one.  Kept ends cost, each, the grant pages of one channel (17 at the
 * 32 KiB cap) and one event channel of this domain; they are closed when
 * their peer leaves /local/xway (a later domain with the same id must not
 * inherit grants made for this one), when nobody took one for
 * POOL_IDLE_S, when an end cannot be made for an OFFER (the grants may be
 * what is short: the pool is given back and the serve tried once more),
 * and when Xen mode stops.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "xwayd.h"

#define POOL_SLOTS  8          /* (peer, order) pairs kept at once */
#define POOL_IDLE_S 60
#define POOL_REFILL_LATE_MS 500

struct pooled {
	int fds[2];
	uint32_t ring_ref;
	struct xway_xen_vchan v;
};

struct pool_slot {
	bool used;
	bool stalled;            /* the last refill failed: wait for a take */
	uint32_t peer, order;
	gint64 last_take_us;
	unsigned n;
	struct pooled e[XWAYD_VCHAN_POOL_MAX];
};

static struct pool_slot slots[POOL_SLOTS];
static guint refill_src, expire_src, late_src;

static void slot_clear(struct pool_slot *s)
{
	for (unsigned i = 0; i < s->n; i++) {
		close(s->e[i].fds[0]);
		close(s->e[i].fds[1]);
	}
	memset(s, 0, sizeof(*s));
}

static unsigned pool_target(void)
{
	return xd->cfg.xen_vchan_pool > XWAYD_VCHAN_POOL_MAX ? XWAYD_VCHAN_POOL_MAX
							     : xd->cfg.xen_vchan_pool;
}

static gboolean refill(gpointer unused)
{
	(void)unused;
	for (unsigned i = 0; i < POOL_SLOTS; i++) {
		struct pool_slot *s = &slots[i];
		const char *why = NULL;
		struct pooled *p;
		int e;

		if (!s->used || s->stalled || s->n >= pool_target())
			continue;
		p = &s->e[s->n];
		e = xwayd_vchan_serve(s->peer, s->order, p->fds, &p->ring_ref, &p->v, &why);
		if (e) {
			/* Not an error of any connection: the next OFFER
			 * serves its own end (and says why if that fails). */
			XLOG_DEBUG("vchan pool for domain %u: %s (%s); refilled at the next offer",
				   s->peer, why ? why : "?", g_strerror(-e));
			s->stalled = true;
		} else {
			s->n++;
		}
		return G_SOURCE_CONTINUE;     /* one end per idle dispatch */
	}
	refill_src = 0;
	return G_SOURCE_REMOVE;
}

void xwayd_vchan_pool_refill(void)
{
	if (!refill_src)
		refill_src = g_idle_add(refill, NULL);
}

static gboolean refill_late(gpointer unused)
{
	(void)unused;
	late_src = 0;
	xwayd_vchan_pool_refill();
	return G_SOURCE_REMOVE;
}

static gboolean expire(gpointer unused)
{
	gint64 now = xwayd_mono_us();
	bool any = false;

	(void)unused;
	for (unsigned i = 0; i < POOL_SLOTS; i++) {
		if (slots[i].used && now - slots[i].last_take_us > (gint64)POOL_IDLE_S * 1000000)
			slot_clear(&slots[i]);
		any |= slots[i].used;
	}
	if (any)
		return G_SOURCE_CONTINUE;
	expire_src = 0;
	return G_SOURCE_REMOVE;
}

/* The slot for (peer, order), made if needed: a free one, else the one
 * taken from longest ago (its ends closed). */
static struct pool_slot *slot_for(uint32_t peer, uint32_t order)
{
	struct pool_slot *old = &slots[0];

	for (unsigned i = 0; i < POOL_SLOTS; i++) {
		struct pool_slot *s = &slots[i];

		if (s->used && s->peer == peer && s->order == order)
			return s;
	}
	for (unsigned i = 0; i < POOL_SLOTS; i++) {
		struct pool_slot *s = &slots[i];

		if (!s->used) {
			old = s;
			break;
		}
		if (s->last_take_us < old->last_take_us)
			old = s;
	}
	slot_clear(old);
	old->used = true;
	old->peer = peer;
	old->order = order;
	return old;
}

int xwayd_vchan_take(uint32_t peer, uint32_t ring_order, int fds[2], uint32_t *ring_ref,
		     struct xway_xen_vchan *v, bool *pooled, const char **why)
{
	struct pool_slot *s;
	int e;

	*pooled = false;
	if (!pool_target())
		return xwayd_vchan_serve(peer, ring_order, fds, ring_ref, v, why);
	s = slot_for(peer, ring_order);
	s->last_take_us = xwayd_mono_us();
	s->stalled = false;
	if (!late_src)
		late_src = xwayd_timeout_add(POOL_REFILL_LATE_MS, refill_late, NULL);
	if (!expire_src)
		expire_src = xwayd_timeout_add(POOL_IDLE_S / 6 * 1000, expire, NULL);
	if (s->n) {
		struct pooled *p = &s->e[--s->n];

		fds[0] = p->fds[0];
		fds[1] = p->fds[1];
		*ring_ref = p->ring_ref;
		*v = p->v;
		*pooled = true;
		return 0;
	}
	e = xwayd_vchan_serve(peer, ring_order, fds, ring_ref, v, why);
	if (e && xwayd_vchan_pool_ready()) {
		/* Maybe the grants the pool holds are the ones missing. */
		xwayd_vchan_pool_drop(UINT32_MAX);
		s = slot_for(peer, ring_order);
		s->last_take_us = xwayd_mono_us();
		s->stalled = true;
		e = xwayd_vchan_serve(peer, ring_order, fds, ring_ref, v, why);
	}
	return e;
}

void xwayd_vchan_pool_drop(uint32_t peer)
{
	for (unsigned i = 0; i < POOL_SLOTS; i++)
		if (slots[i].used && (peer == UINT32_MAX || slots[i].peer == peer))
			slot_clear(&slots[i]);
}

unsigned xwayd_vchan_pool_ready(void)
{
	unsigned n = 0;

	for (unsigned i = 0; i < POOL_SLOTS; i++)
		n += slots[i].n;
	return n;
}

void xwayd_vchan_pool_stop(void)
{
	xwayd_vchan_pool_drop(UINT32_MAX);
	if (refill_src)
		g_source_remove(refill_src);
	if (expire_src)
		xwayd_timeout_remove(expire_src);
	if (late_src)
		xwayd_timeout_remove(late_src);
	refill_src = expire_src = late_src = 0;
}
