/* SPDX-License-Identifier: MIT */
/*
 * Offers, claims, withdrawals, expiry and connection records.  This is the
 * one place where a connection's fate is decided: the broker runs on one
 * thread, so an OFFER is PENDING until exactly one of CLAIM (-> claimed,
 * attached = 1), WITHDRAW / claim timeout / offering client gone
 * (-> withdrawn, attached = 2) happens first; whatever comes later sees the
 * decision.  Live accelerated connections keep a read-only mapping of the
 * channel header for their byte counters until both ends reported CLOSED or
 * both processes are gone; then the record joins the last
 * XWAYD_FINISHED_MAX finished ones shown by `xwayctl connections`.
 */
#include <errno.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "xwayd.h"

#define LIVENESS_MS 2000

static guint liveness_timer;
static unsigned preattached;          /* records holding xen_pre_fds */

/* What a record no longer needs once decided: the eventfds and the Xen
 * early attach.  The header's memfd stays for the counters (conn_unmap). */
static void conn_release_fds(struct xwayd_conn *k)
{
	int *fds[4] = { &k->efd0, &k->efd1, &k->xen_pre_fds[0], &k->xen_pre_fds[1] };

	if (k->xen_pre_fds[0] >= 0)
		preattached--;
	for (int i = 0; i < 4; i++)
		if (*fds[i] >= 0) {
			close(*fds[i]);
			*fds[i] = -1;
		}
	xwayd_vchan_grants_free(k->xen_grants);
	k->xen_grants = NULL;
}

static void conn_unmap(struct xwayd_conn *k)
{
	if (k->memfd >= 0) {
		close(k->memfd);
		k->memfd = -1;
	}
	if (k->xen_ep) {
		munmap((void *)k->xen_ep, XWAY_EP_SIZE);
		k->xen_ep = NULL;
	}
}

static void conn_free(gpointer p)
{
	struct xwayd_conn *k = p;

	if (k->timer)
		xwayd_timeout_remove(k->timer);
	conn_release_fds(k);
	conn_unmap(k);
	g_free(k);
}

static struct xwayd_conn *conn_new(uint64_t cookie)
{
	static uint64_t seq;
	struct xwayd_conn *k = g_new0(struct xwayd_conn, 1);

	k->cookie = cookie;
	k->memfd = k->efd0 = k->efd1 = k->xen_pre_fds[0] = k->xen_pre_fds[1] = -1;
	k->seq = ++seq;
	k->started = xwayd_now();
	k->ended = -1;
	for (int i = 0; i < 2; i++)
		k->side[i].tcp_sent = k->side[i].tcp_received =
			k->side[i].chan_tx = k->side[i].chan_rx = -1;
	return k;
}

/* Move k (already out of xd->offers / xd->live) to the finished list. */
static void conn_finish(struct xwayd_conn *k)
{
	if (k->ended < 0)
		k->ended = xwayd_now();
	if (k->timer) {
		xwayd_timeout_remove(k->timer);
		k->timer = 0;
	}
	conn_release_fds(k);
	conn_unmap(k);
	g_queue_push_tail(&xd->finished, k);
	while (g_queue_get_length(&xd->finished) > XWAYD_FINISHED_MAX)
		conn_free(g_queue_pop_head(&xd->finished));
}

static void record_fallback(uint64_t cookie, uint32_t reason,
			    const struct xwayd_side *client,
			    const struct xwayd_side *server, const char *detail)
{
	struct xwayd_conn *k = conn_new(cookie);

	k->state = XC_FALLBACK;
	k->reason = reason;
	g_strlcpy(k->detail, detail, sizeof(k->detail));
	k->side[0] = *client;
	k->side[1] = *server;
	k->ended = k->started;
	xd->st.fallbacks++;
	xd->st.by_reason[reason < XWAY_R__MAX ? reason : 0]++;
	conn_finish(k);
}

void xwayd_conn_refresh(struct xwayd_conn *k)
{
	if (k->xen_ep) {
		/* The server end's own counts (display only, as below). */
		k->bytes_s2c = __atomic_load_n((const uint64_t *)(k->xen_ep + XWAY_EP_TX_BYTES_OFF),
					       __ATOMIC_RELAXED);
		k->bytes_c2s = __atomic_load_n((const uint64_t *)(k->xen_ep + XWAY_EP_RX_BYTES_OFF),
					       __ATOMIC_RELAXED);
		return;
	}
	if (k->memfd < 0)
		return;
	/* Statistics only, from memory the applications can scribble on (a
	 * copy racing a sender's update may mix two values), displayed
	 * only.  One pread of both rings' control blocks. */
	struct xway_ring_ctl ctl[2];

	if (pread(k->memfd, ctl, sizeof(ctl), offsetof(struct xway_chan_shm, ring)) ==
	    (ssize_t)sizeof(ctl)) {
		k->bytes_c2s = ctl[0].tx_bytes;
		k->bytes_s2c = ctl[1].tx_bytes;
	}
}

/*
 * The broker's decision into the header's attached word (only ever from
 * PENDING, 0, to CLAIMED or WITHDRAWN: the value differs from the old one
 * in one byte, so the kernel's copy cannot be seen torn; the broker is the
 * only writer).  A write(2) instead of a mapping: mapping every header cost
 * an mmap, an mprotect and an munmap with its TLB shootdown per connection.
 * Ordering: the client reads attached (acquire) after the wake-up that
 * follows this call, or before it sleeps; the system call completes the
 * store before the eventfd write that wakes it.
 */
static void header_decide(struct xwayd_conn *k, uint32_t word)
{
	if (k->memfd >= 0 &&
	    pwrite(k->memfd, &word, sizeof(word), offsetof(struct xway_chan_shm, attached)) !=
		    (ssize_t)sizeof(word))
		XLOG_WARN("offer %llu: cannot write the decision into its header: %s",
			     (unsigned long long)k->offer_id, g_strerror(errno));
}

/* Wake the client sleeping on efd0.  An eventfd write blocks only when
 * the counter would overflow; check for room first so a hostile client
 * cannot stall the broker (it could still race us by filling the counter
 * between poll and write, which only it can do to its own eventfd, and then
 * we skip the wake-up it sabotaged). */
static void owner_offer_done(struct xwayd_conn *k)
{
	struct xwayd_client *owner = g_hash_table_lookup(xd->clients, &k->client_id);

	if (owner && owner->noffers)
		owner->noffers--;
}

static void wake_efd0(struct xwayd_conn *k)
{
	struct pollfd p = { .fd = k->efd0, .events = POLLOUT };
	uint64_t one = 1;

	if (poll(&p, 1, 0) == 1 && (p.revents & POLLOUT)) {
		if (write(k->efd0, &one, sizeof(one)) != sizeof(one))
			XLOG_DEBUG("offer %llu: efd0 write: %s",
				   (unsigned long long)k->offer_id, g_strerror(errno));
	}
}

/* The withdraw decision.  k is PENDING and in xd->offers / xd->live; its
 * claim timer, if still set, is stopped (conn_finish). */
static void decide_withdrawn(struct xwayd_conn *k, const char *detail)
{
	/* The decision before the wake-up below (header_decide); the client
	 * reads attached (acquire) after waking or before sleeping. */
	if (k->memfd >= 0) {
		header_decide(k, XWAY_ATTACH_WITHDRAWN);
		wake_efd0(k);
	}
	if (k->xen && k->xen_remote)
		xwayd_xen_outcome(k, false);      /* we decide: tell the client's broker */
	else if (k->xen)
		xwayd_xen_unpublish_offer(k);     /* the peer forgets it */
	owner_offer_done(k);
	k->state = XC_FALLBACK;
	k->reason = XWAY_R_WITHDRAWN;
	k->backend = 0;
	g_strlcpy(k->detail, detail, sizeof(k->detail));
	xd->st.withdrawals++;
	xd->st.fallbacks++;
	xd->st.by_reason[XWAY_R_WITHDRAWN]++;
	XLOG_DEBUG("offer %llu withdrawn: %s", (unsigned long long)k->offer_id, detail);
	g_hash_table_steal(xd->live, &k->cookie);
	g_hash_table_steal(xd->offers, &k->offer_id);
	conn_finish(k);
}

static gboolean offer_expired(gpointer p)
{
	struct xwayd_conn *k = p;
	char detail[64];

	k->timer = 0;
	if (k->xen && !k->xen_remote)
		snprintf(detail, sizeof(detail), "no decision from Xen domain %u",
			 k->xen_dom);
	else
		snprintf(detail, sizeof(detail), "not claimed within %u ms",
			 xd->cfg.claim_timeout_ms);
	xd->st.expiries++;
	decide_withdrawn(k, detail);
	return G_SOURCE_REMOVE;
}

/* ---- OFFER ---------------------------------------------------------------- */

/* Check the channel header the client made: sealed against shrinking
 * (the server maps it: no SIGBUS there), right magic, version, geometry
 * and cookie, still PENDING.  Read with pread: the broker never maps it
 * (header_decide). */
static int check_header(int memfd, const struct xway_offer *o, const char **why)
{
	struct xway_chan_shm h;
	struct stat st;
	int seals;
	uint64_t need;

	/* Seals first: only shmem and hugetlbfs files have any (anything
	 * else fails at once, in particular without calling into a FUSE
	 * filesystem, where fstat could block us). */
	seals = fcntl(memfd, F_GET_SEALS);
	if (seals < 0) {
		*why = "channel descriptor is not a memfd";
		return -EINVAL;
	}
	if (!(seals & F_SEAL_SHRINK)) {
		*why = "channel memfd is not sealed against shrinking";
		return -EINVAL;
	}
	if (fstat(memfd, &st) < 0 || !S_ISREG(st.st_mode)) {
		*why = "channel descriptor is not a memfd";
		return -EINVAL;
	}
	if (st.st_size < (off_t)XWAY_CHAN_HDR_SIZE) {
		*why = "channel memfd is smaller than its header";
		return -EINVAL;
	}
	/* The words before the rings' control blocks.  The client wrote them
	 * before sending the memfd (its sendmsg and our recvmsg order that);
	 * no one else has decided anything for this offer yet. */
	memset(&h, 0, sizeof(h));
	if (pread(memfd, &h, offsetof(struct xway_chan_shm, ring), 0) !=
	    (ssize_t)offsetof(struct xway_chan_shm, ring)) {
		*why = "cannot read the channel header";
		return -EIO;
	}
	if (h.magic != XWAY_CHAN_MAGIC || h.version != XWAY_CHAN_VERSION ||
	    h.hdr_size != XWAY_CHAN_HDR_SIZE) {
		*why = "channel header has a bad magic, version or size";
		return -EINVAL;
	}
	if (h.cookie != o->cookie) {
		*why = "channel cookie differs from the offer's";
		return -EINVAL;
	}
	for (int i = 0; i < 2; i++)
		if (h.ring_order[i] < XWAY_RING_ORDER_MIN ||
		    h.ring_order[i] > XWAY_RING_ORDER_MAX) {
			*why = "channel ring order out of range";
			return -EINVAL;
		}
	need = XWAY_CHAN_HDR_SIZE + (1ull << h.ring_order[0]) + (1ull << h.ring_order[1]);
	if ((uint64_t)st.st_size < need) {
		*why = "channel memfd is smaller than its rings";
		return -EINVAL;
	}
	if (h.attached != XWAY_ATTACH_PENDING) {
		*why = "channel header is not pending";
		return -EINVAL;
	}
	return 0;
}

/* What every OFFER must pass before it becomes a record (local and Xen):
 * a fresh cookie, room, real eventfds, a pending header in the memfd.
 * On success *out is a new PENDING record for client c with the client's
 * side, an offer id and the ring order; else -errno and *why, and *out
 * is whatever needs freeing (NULL or the half-made record). */
static int offer_admit(struct xwayd_client *c, const struct xway_offer *o, int fds[4],
		       xwayd_netns ns, enum xway_backend backend,
		       struct xwayd_conn **out, const char **why)
{
	struct xwayd_conn *k;
	int e;

	*out = NULL;
	if (g_hash_table_contains(xd->live, &o->cookie)) {
		*why = "OFFER: cookie already in use";
		return -EEXIST;
	}
	if (c->noffers >= XWAYD_OFFERS_MAX ||
	    g_hash_table_size(xd->live) >= XWAYD_ACTIVE_MAX) {
		*why = "OFFER: too many pending offers";
		return -ENOBUFS;
	}
	if ((e = xwayd_fd_is_eventfd(fds[2])) || (e = xwayd_fd_is_eventfd(fds[3]))) {
		*why = "OFFER: efd0/efd1 are not eventfds";
		return e;
	}
	if ((e = check_header(fds[1], o, why)))
		return e;
	*out = k = conn_new(o->cookie);
	k->offer_id = ++xd->next_offer_id;
	k->state = XC_PENDING;
	k->backend = backend;
	k->ring_order = o->ring_order;
	k->client_id = c->id;
	k->netns_client = ns;
	return 0;
}

/* The client's broker: make the vchan server end at the path we named
 * (DESIGN §7: we do the privileged part, the application gets the
 * descriptors), register the offer (PENDING, decided by domain dom's
 * broker) and publish it in xenstore.  fds[1..3] are the decision
 * header's. */
static void xen_offer(struct xwayd_client *c, const struct xway_req *r, int fds[4],
		      uint32_t dom, const struct xwayd_side *cl,
		      const struct xwayd_side *sv, xwayd_netns ns)
{
	const struct xway_offer *o = &r->u.offer;
	struct xway_result_xen rx;
	struct xwayd_conn *k = NULL;
	const char *why = NULL;
	int vfds[2] = { -1, -1 };
	uint32_t ring_ref = 0;
	char detail[200];
	bool pooled = false;
	gint64 t0;
	int e;

	if ((e = offer_admit(c, o, fds, ns, XWAY_BACKEND_XEN, &k, &why)))
		goto reject;
	k->side[0] = *cl;
	k->side[1] = *sv;
	k->xen = true;
	k->xen_dom = dom;
	k->xen_id = k->offer_id;
	memset(&rx, 0, sizeof(rx));
	t0 = xwayd_mono_us();
	if ((e = xwayd_xen_vchan_path(dom, o->cookie, k->xen_path, sizeof(k->xen_path))) ||
	    (e = xwayd_vchan_take(dom, o->ring_order, vfds, &ring_ref, &rx.v, &pooled,
				  &why))) {
		k->xen_path[0] = 0;
		why = why ? why : "OFFER: no vchan path";
		goto reject;
	}
	/* On the broker link when it is up (no xenstore request at all),
	 * else through xenstore: the vchan's nodes before the offer, which
	 * the peer reads once it sees the offer (and only after its CLAIM).
	 * Either way the offer is readable by the peer before we answer. */
	if (!xwayd_xen_link_offer(k, ring_ref, rx.v.port)) {
		if ((e = xwayd_xen_vchan_publish(k->xen_path, dom, ring_ref, rx.v.port))) {
			why = "OFFER: cannot publish the vchan in xenstore";
			goto reject;
		}
		if ((e = xwayd_xen_publish_offer(k))) {
			xwayd_xen_vchan_unpublish(k->xen_path);
			why = "OFFER: cannot publish the offer in xenstore";
			goto reject;
		}
	}
	k->memfd = fds[1];             /* the decision header */
	k->efd0 = fds[2];
	fds[1] = fds[2] = -1;
	/* The peer's broker decides (its claim timeout runs from when it
	 * reads the offer); ours only gives up if it never answers. */
	k->timer = xwayd_timeout_add(3 * xd->cfg.claim_timeout_ms + 2000, offer_expired, k);
	k->offered_us = xwayd_mono_us();
	xd->st.xen_serves++;
	xd->st.xen_serves_pooled += pooled;
	xd->st.xen_serve_us += (uint64_t)(k->offered_us - t0);
	g_hash_table_insert(xd->offers, &k->offer_id, k);
	g_hash_table_insert(xd->live, &k->cookie, k);
	c->noffers++;
	if (snprintf(k->detail, sizeof(k->detail), "Xen domain %u, vchan %s%s", dom,
		     k->xen_path, k->xen_link ? " (offer on the broker link)" : "") < 0)
		k->detail[0] = 0;
	rx.base.status = 1;
	rx.base.offer_id = k->offer_id;
	g_strlcpy(rx.base.text, "pending (xen)", sizeof(rx.base.text));
	xwayd_send(c, XWAY_MSG_RESULT, r->hdr.seq, 0, &rx, sizeof(rx), vfds, 2);
	/* No copy kept: the grants and the port live as long as the
	 * application's mapping and descriptors. */
	close(vfds[0]);
	close(vfds[1]);
	return;
reject:
	for (int i = 0; i < 2; i++)
		if (vfds[i] >= 0)
			close(vfds[i]);
	if (k)
		conn_free(k);
	xwayd_send_result(c, XWAY_MSG_RESULT, r->hdr.seq, e, XWAY_R_SETUP_CHAN, 0,
			  "%s", why);
	snprintf(detail, sizeof(detail), "%s (%s)", why, g_strerror(-e));
	record_fallback(o->cookie, XWAY_R_SETUP_CHAN, cl, sv, detail);
}

/*
 * The server's broker: attach to the vchan of a peer's offer as soon as it
 * comes on a link (the record carries the shared page's reference and the
 * port), not when the server's CLAIM comes: the attach (a dozen system
 * calls and hypercalls, 2.5-3 ms emulated) then overlaps the client's
 * handshake and the server's accept, and the claim only hands the
 * descriptors over.  The peer sees nothing of it: its end takes the
 * connection as claimed only when the claiming shim sets cli_live, and an
 * offer withdrawn here closes the mapping unused.  Bounded, since a
 * hostile peer could otherwise make us hold mappings for offers nobody
 * claims: past XWAYD_PREATTACH_MAX records, the attach waits for the claim
 * as before.  A failure here is not final either: the claim attaches again
 * and reports what fails.
 */
static void preattach(struct xwayd_conn *k)
{
	gint64 t0 = xwayd_mono_us();
	const char *why = NULL;
	int e;

	if (preattached >= XWAYD_PREATTACH_MAX)
		return;
	e = xwayd_vchan_attach(k->xen_dom, k->xen_ring_ref, k->xen_port, k->xen_pre_fds,
			       &k->xen_pre_v, &k->xen_grants, &why);
	if (e) {
		k->xen_pre_fds[0] = k->xen_pre_fds[1] = -1;
		XLOG_DEBUG("Xen offer %llu of domain %u: early attach failed: %s (%s); "
			   "again at the claim", (unsigned long long)k->xen_id, k->xen_dom,
			   why ? why : "?", g_strerror(-e));
		return;
	}
	preattached++;
	xd->st.xen_attaches++;
	xd->st.xen_attaches_early++;
	xd->st.xen_attach_us += (uint64_t)(xwayd_mono_us() - t0);
}

/* The server's broker: domain dom's broker published offer id.  A PENDING
 * record that a CLAIM matches like a local offer; we alone decide. */
void xwayd_conn_remote_offer(uint32_t dom, uint64_t id, uint64_t cookie,
			     const struct xway_addr *src, const struct xway_addr *dst,
			     const char *path, const struct xway_link_msg *lm)
{
	struct xwayd_listener *l;
	struct xwayd_conn *k;
	uint32_t reason = 0;

	k = conn_new(cookie);
	k->state = XC_PENDING;
	k->backend = XWAY_BACKEND_XEN;
	k->xen = k->xen_remote = true;
	k->xen_dom = dom;
	k->xen_id = id;
	g_strlcpy(k->xen_path, path, sizeof(k->xen_path));
	if (lm) {
		k->xen_link = true;
		k->xen_ring_ref = lm->ring_ref;
		k->xen_port = lm->port;
	}
	k->side[0].addr = *src;
	k->side[1].addr = *dst;
	k->side[0].uid = k->side[1].uid = (uid_t)-1;
	l = xwayd_dir_lookup(dst, xd->netns, getpid(), &reason);
	if (!l || g_hash_table_contains(xd->live, &cookie) ||
	    g_hash_table_size(xd->live) >= XWAYD_ACTIVE_MAX) {
		/* Decided at once: withdrawn. */
		XLOG_INFO("Xen domain %u offer %llu: %s", dom, (unsigned long long)id,
			  !l ? "no listener here" : "refused (cookie in use or too many)");
		k->offer_id = ++xd->next_offer_id;
		xwayd_xen_outcome(k, false);
		k->state = XC_FALLBACK;
		k->reason = !l ? XWAY_R_NO_LISTENER : XWAY_R_SETUP_CHAN;
		g_strlcpy(k->detail, "offer from another Xen domain refused", sizeof(k->detail));
		conn_finish(k);
		return;
	}
	k->netns_server = l->netns;
	k->side[1].uid = l->uid;
	k->offer_id = ++xd->next_offer_id;
	snprintf(k->detail, sizeof(k->detail), "from Xen domain %u, vchan %s", dom, path);
	k->timer = xwayd_timeout_add(xd->cfg.claim_timeout_ms, offer_expired, k);
	k->offered_us = xwayd_mono_us();
	g_hash_table_insert(xd->offers, &k->offer_id, k);
	g_hash_table_insert(xd->live, &k->cookie, k);
	xd->st.offers++;
	XLOG_DEBUG("Xen domain %u offer %llu pending as %llu", dom,
		   (unsigned long long)id, (unsigned long long)k->offer_id);
	if (lm)
		preattach(k);
}

void xwayd_conn_remote_withdraw(uint32_t dom, uint64_t id, const char *why)
{
	GHashTableIter it;
	gpointer key, v;

	g_hash_table_iter_init(&it, xd->offers);
	while (g_hash_table_iter_next(&it, &key, &v)) {
		struct xwayd_conn *k = v;

		if (k->xen_remote && k->xen_dom == dom && k->xen_id == id) {
			if (k->state == XC_PENDING)
				decide_withdrawn(k, why);
			return;
		}
	}
}

static void fallback_after_claim(struct xwayd_conn *k, int side, uint32_t reason,
				 const char *text);

static void report_closed(struct xwayd_conn *k, const struct xway_report *p);

void xwayd_conn_xen_decided(struct xwayd_conn *k, bool claimed)
{
	if (k->state != XC_PENDING || !k->xen || k->xen_remote)
		return;
	if (k->timer) {
		xwayd_timeout_remove(k->timer);
		k->timer = 0;
	}
	xd->st.xen_decided++;
	xd->st.xen_decide_us += (uint64_t)(xwayd_mono_us() - k->offered_us);
	xwayd_vchan_pool_refill();       /* this set-up no longer needs the CPU */
	if (!claimed) {
		decide_withdrawn(k, k->xen_withdraw_asked ? "withdrawn by the client"
				 : "not claimed in the server's domain");
		return;
	}
	/* The decision before the wake-up (as for a local claim). */
	header_decide(k, XWAY_ATTACH_CLAIMED);
	wake_efd0(k);
	owner_offer_done(k);
	conn_release_fds(k);
	conn_unmap(k);                 /* the counters come with the REPORTs */
	xwayd_xen_unpublish_offer(k);
	/* Stays in xd->offers (as a local claimed offer does): a late
	 * WITHDRAW must get -EALREADY, not "withdrawn". */
	k->state = XC_ACCELERATED;
	xd->st.claims++;
	XLOG_DEBUG("Xen offer %llu claimed in domain %u", (unsigned long long)k->offer_id,
		   k->xen_dom);
	if (k->xen_early_has[0])
		fallback_after_claim(k, k->xen_early[0].side, XWAY_R_LEFT, k->xen_early[0].text);
	if (k->xen_early_has[1])
		report_closed(k, &k->xen_early[1]);
}

void xwayd_conn_xen_link_outcome(uint32_t dom, uint64_t id, bool claimed)
{
	/* Our own offers: xen_id is the offer id. */
	struct xwayd_conn *k = g_hash_table_lookup(xd->offers, &id);

	if (!k || !k->xen || k->xen_remote || k->xen_dom != dom) {
		XLOG_DEBUG("Xen domain %u: outcome for offer %llu, not one of ours pending "
			   "with it: ignored", dom, (unsigned long long)id);
		return;
	}
	xwayd_conn_xen_decided(k, claimed);
}

void xwayd_conn_xen_link_lost(uint32_t dom)
{
	GHashTableIter it;
	gpointer key, v;
	GPtrArray *all = g_ptr_array_new();

	g_hash_table_iter_init(&it, xd->offers);
	while (g_hash_table_iter_next(&it, &key, &v)) {
		struct xwayd_conn *k = v;

		if (k->xen_remote && k->xen_link && k->xen_dom == dom && k->state == XC_PENDING)
			g_ptr_array_add(all, k);
	}
	for (guint i = 0; i < all->len; i++) {
		/* The outcome goes through xenstore now (xwayd_xen_outcome). */
		decide_withdrawn(all->pdata[i], "the link from the client's broker closed");
	}
	g_ptr_array_free(all, TRUE);
}

static void conn_close(struct xwayd_conn *k, const char *detail);

void xwayd_conn_xen_vanished(uint32_t dom)
{
	GHashTableIter it;
	gpointer key, v;
	GPtrArray *all = g_ptr_array_new();

	g_hash_table_iter_init(&it, xd->live);
	while (g_hash_table_iter_next(&it, &key, &v))
		if (((struct xwayd_conn *)v)->xen && ((struct xwayd_conn *)v)->xen_dom == dom)
			g_ptr_array_add(all, v);
	for (guint i = 0; i < all->len; i++) {
		struct xwayd_conn *k = all->pdata[i];
		char detail[64];

		snprintf(detail, sizeof(detail), "Xen domain %u vanished", dom);
		if (k->state == XC_PENDING) {
			/* Nobody else can decide any more: withdraw here. */
			decide_withdrawn(k, detail);
			continue;
		}
		/* Our end's TCP socket: the peer will never send FIN or RST.
		 * On the server's broker that is side 1, whose 4-tuple is
		 * known; on the client's broker the client's port is not (the
		 * OFFER precedes the SYN), so its sockets to the server's
		 * address are found by a dump and matched to its pid. */
		if (k->xen_remote) {
			int e = xwayd_tcp_destroy(&k->side[1].addr, &k->side[0].addr);

			XLOG_INFO("connection %016llx: %s; TCP socket aborted: %s",
				  (unsigned long long)k->cookie, detail,
				  e ? g_strerror(-e) : "ok");
		} else if (k->side[0].pid > 0) {
			int e = xwayd_tcp_abort_to(&k->side[1].addr, k->side[0].pid);

			XLOG_INFO("connection %016llx: %s; client's TCP socket(s) aborted: %s",
				  (unsigned long long)k->cookie, detail,
				  e < 0 ? g_strerror(-e) : e ? "ok" : "none found");
		}
		g_strlcpy(k->detail, detail, sizeof(k->detail));
		conn_close(k, NULL);
	}
	g_ptr_array_free(all, TRUE);
}

void xwayd_offer(struct xwayd_client *c, const struct xway_req *r, int fds[4])
{
	const struct xway_offer *o = &r->u.offer;
	struct xwayd_side cl = { .chan_tx = -1, .chan_rx = -1, .pid = c->pid, .uid = c->uid, .tcp_sent = -1,
				 .tcp_received = -1 };
	struct xwayd_side sv = { .chan_tx = -1, .chan_rx = -1, .addr = o->dst, .uid = (uid_t)-1, .tcp_sent = -1,
				 .tcp_received = -1 };
	struct xwayd_listener *l;
	struct xwayd_conn *k = NULL;
	struct xway_addr peer;
	const char *why = NULL;
	char detail[160];
	xwayd_netns ns;
	uint32_t reason = 0;
	bool listening;
	int e;

	xd->st.offers++;
	cl.addr = o->src;
	/* The socket proves the client holds a bound, unconnected TCP socket
	 * with the offered source port. */
	e = xwayd_sock_check_stream(fds[0], &listening);
	if (e < 0 || listening) {
		why = "OFFER: descriptor is not an unconnected TCP socket";
		e = e < 0 ? e : -EINVAL;
		goto reject;
	}
	e = xwayd_sock_addr(fds[0], true, &peer);
	if (r->hdr.flags & XWAY_HDR_F_CONNECTING) {
		/* The client connects while we read this (shim/setup.c):
		 * its SYN left after the offer was queued to us, and claims
		 * that find nothing read this client's queue first
		 * (xwayd_claim).  Connected already, then to dst. */
		xd->st.offers_connecting++;
		if (e == 0 && (!xway_ip_equal(peer.ip, o->dst.ip) || peer.port != o->dst.port)) {
			why = "OFFER: socket is connected elsewhere than the offer's destination";
			e = -EISCONN;
			goto reject;
		}
	} else if (e != -ENOTCONN) {
		why = "OFFER: socket is already connected";
		e = -EISCONN;
		goto reject;
	}
	if ((e = xwayd_sock_addr(fds[0], false, &cl.addr)) ||
	    cl.addr.port != o->src.port) {
		why = "OFFER: socket's bound port differs from the offer's";
		e = e ? e : -EINVAL;
		goto reject;
	}
	if ((e = xwayd_sock_netns(fds[0], c->pid, &ns))) {
		why = "OFFER: cannot tell the socket's network namespace";
		goto reject;
	}
	xwayd_close_async(fds[0]);
	fds[0] = -1;

	if (xway_rules_exclude(xd->cfg.allow, xd->cfg.nallow, xd->cfg.deny,
			       xd->cfg.ndeny, &o->dst, c->uid)) {
		xwayd_send_result(c, XWAY_MSG_RESULT, r->hdr.seq, -EACCES,
				  XWAY_R_EXCLUDED, 0, "excluded by xwayd.conf rules");
		record_fallback(o->cookie, XWAY_R_EXCLUDED, &cl, &sv,
				"excluded by xwayd.conf rules");
		goto out;
	}
	l = xwayd_dir_lookup(&o->dst, ns, c->pid, &reason);
	if (!l && xwayd_xen_active()) {
		uint32_t dom = xwayd_xen_lookup(&o->dst);

		if (dom != UINT32_MAX && o->backend == XWAY_BACKEND_LOCAL) {
			char path[XWAY_XEN_PATH_MAX];

			/* Tell the shim to make the vchan server and offer
			 * again as a Xen offer; nothing is registered yet. */
			if (xwayd_xen_vchan_path(dom, o->cookie, path, sizeof(path)) == 0) {
				xwayd_send_result(c, XWAY_MSG_RESULT, r->hdr.seq,
						  XWAY_RESULT_XEN, XWAY_R_NONE, 0,
						  "xen %u %s", dom, path);
				goto out;
			}
		}
		if (dom != UINT32_MAX && o->backend == XWAY_BACKEND_XEN) {
			xen_offer(c, r, fds, dom, &cl, &sv, ns);
			goto out;
		}
		if (dom != UINT32_MAX) {
			snprintf(detail, sizeof(detail), "xway listener in Xen domain %u; "
				 "no vchan path for it", dom);
			xwayd_send_result(c, XWAY_MSG_RESULT, r->hdr.seq, -ENOENT,
					  XWAY_R_NOT_CORESIDENT, 0, "%s", detail);
			record_fallback(o->cookie, XWAY_R_NOT_CORESIDENT, &cl, &sv, detail);
			goto out;
		}
	}
	if (l && o->backend != XWAY_BACKEND_LOCAL) {
		why = "OFFER: a Xen offer to a listener of this domain";
		e = -EINVAL;
		goto reject;
	}
	if (!l) {
		const char *t = reason == XWAY_R_NO_LISTENER
			? "no xway listener at the destination"
			: "destination is not on this host";

		xwayd_send_result(c, XWAY_MSG_RESULT, r->hdr.seq, -ENOENT,
				  reason, 0, "%s", t);
		record_fallback(o->cookie, reason, &cl, &sv, t);
		goto out;
	}
	if ((e = offer_admit(c, o, fds, ns, XWAY_BACKEND_LOCAL, &k, &why)))
		goto reject;
	k->netns_server = l->netns;
	k->side[0] = cl;
	k->side[1] = sv;
	k->side[1].uid = l->uid;
	k->memfd = fds[1];
	k->efd0 = fds[2];
	k->efd1 = fds[3];
	fds[1] = fds[2] = fds[3] = -1;
	k->timer = xwayd_timeout_add(xd->cfg.claim_timeout_ms, offer_expired, k);
	k->offered_us = xwayd_mono_us();
	g_hash_table_insert(xd->offers, &k->offer_id, k);
	g_hash_table_insert(xd->live, &k->cookie, k);
	c->noffers++;
	/* The shim remembers a listener here for dst and connects while we
	 * read its next offers to it: from now on a claim that matches
	 * nothing reads this client's link first. */
	c->connecting = true;
	xwayd_send_result(c, XWAY_MSG_RESULT, r->hdr.seq, 1, 0, k->offer_id, "pending");
	goto out;

reject:
	if (k)
		conn_free(k);
	xwayd_send_result(c, XWAY_MSG_RESULT, r->hdr.seq, e, XWAY_R_SETUP_CHAN, 0,
			  "%s", why);
	snprintf(detail, sizeof(detail), "%s (%s)", why, g_strerror(-e));
	record_fallback(o->cookie, XWAY_R_SETUP_CHAN, &cl, &sv, detail);
out:
	for (int i = 0; i < 4; i++)
		if (fds[i] >= 0)
			xwayd_close_async(fds[i]);
}

/* ---- CLAIM ----------------------------------------------------------------- */

static bool claim_matches(const struct xwayd_conn *k, const struct xway_claim *cl,
			  xwayd_netns ns)
{
	return k->state == XC_PENDING &&
	       k->side[0].addr.port == cl->peer.port &&
	       k->side[1].addr.port == cl->local.port &&
	       xway_ip_equal(k->side[1].addr.ip, cl->local.ip) &&
	       (xway_addr_is_wildcard(&k->side[0].addr) ||
		xway_ip_equal(k->side[0].addr.ip, cl->peer.ip)) &&
	       k->netns_server == ns;
}

/* The pending offer a claim matches: this domain's own offers (local), the
 * peer domains' offers published to us (remote: only from the domain that
 * owns the claim's peer address), or NULL. */
static struct xwayd_conn *find_claimed_offer(const struct xway_claim *cl, xwayd_netns ns,
					     bool local, bool remote)
{
	GHashTableIter it;
	gpointer key, v;

	g_hash_table_iter_init(&it, xd->offers);
	while (g_hash_table_iter_next(&it, &key, &v)) {
		struct xwayd_conn *k = v;

		if (claim_matches(k, cl, ns) &&
		    (k->xen_remote ? remote && xwayd_xen_dom_owns(k->xen_dom, cl->peer.ip)
				   : local))
			return k;
	}
	return NULL;
}

/* A server end's state memfd (CLAIM's second descriptor, Xen mode):
 * mapped read-only for the counters if it is one (a sealed memfd of its
 * size, so the mapping cannot SIGBUS); closed either way. */
static const uint8_t *map_ep(int fd)
{
	struct stat st;
	void *m = MAP_FAILED;
	int seals;

	if (fd < 0)
		return NULL;
	seals = fcntl(fd, F_GET_SEALS);
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == XWAY_EP_SIZE &&
	    seals >= 0 && (seals & F_SEAL_SHRINK))
		m = mmap(NULL, XWAY_EP_SIZE, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	return m == MAP_FAILED ? NULL : m;
}

/*
 * The proof of a CLAIM or REMAP: fd (closed here) is a connected TCP
 * socket whose names are the message's; its names and namespace out.
 * 0, or -errno once the error reply is sent.
 */
static int sock_proof(struct xwayd_client *c, const struct xway_req *r, int fd,
		      const char *what, struct xway_addr *name, struct xway_addr *peer,
		      xwayd_netns *ns)
{
	const struct xway_claim *cl = &r->u.claim;
	/* A TCP stream with a peer (so neither listening nor another
	 * family: xwayd_sock_check_stream). */
	int e = xwayd_sock_check_stream(fd, NULL);

	if (!e)
		e = xwayd_sock_addr(fd, false, name);
	if (!e)
		e = xwayd_sock_addr(fd, true, peer);
	if (!e)
		e = xwayd_sock_netns(fd, c->pid, ns);
	xwayd_close_async(fd);
	if (e) {
		xwayd_send_result(c, XWAY_MSG_RESULT, r->hdr.seq, e, XWAY_R_SETUP_PROTO, 0,
				  "%s: descriptor is not a connected TCP socket: %s", what,
				  g_strerror(-e));
		return e;
	}
	if (!xway_ip_equal(name->ip, cl->local.ip) || name->port != cl->local.port ||
	    !xway_ip_equal(peer->ip, cl->peer.ip) || peer->port != cl->peer.port) {
		xwayd_send_result(c, XWAY_MSG_RESULT, r->hdr.seq, -EINVAL,
				  XWAY_R_SETUP_PROTO, 0, "%s: socket names differ from the message",
				  what);
		return -EINVAL;
	}
	return 0;
}

static void ep_unmap(const uint8_t **p)
{
	if (*p)
		munmap((void *)*p, XWAY_EP_SIZE);
}

void xwayd_claim(struct xwayd_client *c, const struct xway_req *r, int fd, int ep_fd)
{
	const struct xway_claim *cl = &r->u.claim;
	struct xwayd_side srv = { .chan_tx = -1, .chan_rx = -1, .addr = cl->local, .pid = c->pid, .uid = c->uid,
				  .tcp_sent = -1, .tcp_received = -1 };
	struct xwayd_side cli = { .chan_tx = -1, .chan_rx = -1, .addr = cl->peer, .uid = (uid_t)-1, .tcp_sent = -1,
				  .tcp_received = -1 };
	struct xway_addr name, peer;
	struct xwayd_conn *k = NULL;
	struct xway_claimed out;
	xwayd_netns ns;
	int e;
	/* Only a Xen server end's counters are read there (kept below);
	 * every other way out unmaps it. */
	const uint8_t *ep __attribute__((cleanup(ep_unmap))) = map_ep(ep_fd);

	if (sock_proof(c, r, fd, "CLAIM", &name, &peer, &ns))
		return;
	k = find_claimed_offer(cl, ns, true, true);
	if (!k && xwayd_clients_read_connecting(c)) {
		/* A client that connects while we read its offer (OFFER with
		 * XWAY_HDR_F_CONNECTING) queued that offer before its SYN
		 * left, so before this claim; its link may simply not have
		 * been read yet in this round.  Read those links, then match
		 * again. */
		if ((k = find_claimed_offer(cl, ns, true, false)))
			xd->st.claims_read_first++;
	}
	if (!k && xwayd_xen_active()) {
		/* A Xen peer's broker publishes its offer before its client
		 * connects, but our watch event may not have been read yet:
		 * read the offers now, then match again. */
		xwayd_xen_scan_now();
		k = find_claimed_offer(cl, ns, false, true);
	}
	if (!k) {
		xd->st.claim_misses++;
		xwayd_send_result(c, XWAY_MSG_RESULT, r->hdr.seq, -ENOENT,
				  XWAY_R_NO_OFFER, 0, "no pending offer for this connection");
		record_fallback(0, XWAY_R_NO_OFFER, &cli, &srv,
				"client made no offer (not shimmed, or already decided)");
		return;
	}

	/* Too late, even if the expiry timer has not run yet (a broker that
	 * was stopped or starved): the server gave up waiting 2.5 s after
	 * sending this claim, and the claim came after the offer, so a claim
	 * granted now could leave the server on TCP and the client on the
	 * channel.  Withdraw instead: both ends then agree on TCP. */
	/* The precise clock: the coarse one can lag (an age too small
	 * here would grant a claim too late); offered_us is coarse, so
	 * the age can only come out too large, which withdraws. */
	if (g_get_monotonic_time() - k->offered_us >
	    (gint64)xd->cfg.claim_timeout_ms * 1000) {
		xd->st.expiries++;
		decide_withdrawn(k, "claim arrived after the claim timeout");
		xd->st.claim_misses++;
		xwayd_send_result(c, XWAY_MSG_RESULT, r->hdr.seq, -ENOENT,
				  XWAY_R_NO_OFFER, 0,
				  "the offer for this connection expired");
		return;
	}

	if (k->xen_remote) {
		struct xway_claimed_xenfd xo;
		struct xwayd_vchan_grants *keep = NULL;
		const char *vwhy = NULL;
		uint32_t ring_ref = 0, rport = 0;
		int vfds[2] = { -1, -1 };

		/* The client end of the client's vchan, made here (DESIGN
		 * §7): only the process holding this connection's socket
		 * (checked above) gets its descriptors.  If it cannot be made
		 * the offer is withdrawn: both ends stay on TCP. */
		gint64 t0 = xwayd_mono_us();

		memset(&xo, 0, sizeof(xo));
		if (k->xen_pre_fds[0] >= 0) {
			/* Attached when the offer came (preattach). */
			vfds[0] = k->xen_pre_fds[0];
			vfds[1] = k->xen_pre_fds[1];
			k->xen_pre_fds[0] = k->xen_pre_fds[1] = -1;
			preattached--;
			xo.v = k->xen_pre_v;
			keep = k->xen_grants;
			k->xen_grants = NULL;
			e = 0;
		} else if (k->xen_link) {
			ring_ref = k->xen_ring_ref;     /* came with the offer */
			rport = k->xen_port;
			e = 0;
		} else {
			e = xwayd_xen_vchan_read(k->xen_path, &ring_ref, &rport, &vwhy);
		}
		if (!e && vfds[0] < 0) {
			e = xwayd_vchan_attach(k->xen_dom, ring_ref, rport, vfds, &xo.v,
					       &keep, &vwhy);
			if (!e) {
				xd->st.xen_attaches++;
				xd->st.xen_attach_us += (uint64_t)(xwayd_mono_us() - t0);
			}
		}
		if (e) {
			char d[160];

			snprintf(d, sizeof(d), "vchan attach failed: %s (%s)", vwhy,
				 g_strerror(-e));
			XLOG_WARN("Xen offer %llu of domain %u: %s", (unsigned long long)k->xen_id,
				  k->xen_dom, d);
			decide_withdrawn(k, d);
			xwayd_send_result(c, XWAY_MSG_RESULT, r->hdr.seq, e,
					  XWAY_R_SETUP_CHAN, 0, "%s", d);
			return;
		}
		/* The decision: the server connects to the client's vchan;
		 * the client's broker learns it from xenstore. */
		xo.base.base = (struct xway_claimed){
			.offer_id = k->offer_id, .cookie = k->cookie,
			.ring_order = 0, .backend = XWAY_BACKEND_XEN, .peer_pid = 0,
		};
		xo.base.peer_domid = k->xen_dom;
		g_strlcpy(xo.base.path, k->xen_path, sizeof(xo.base.path));
		xwayd_send(c, XWAY_MSG_CLAIMED, r->hdr.seq, 0, &xo, sizeof(xo), vfds, 2);
		close(vfds[0]);
		close(vfds[1]);
		xwayd_xen_outcome(k, true);
		if (k->timer) {
			xwayd_timeout_remove(k->timer);
			k->timer = 0;
		}
		k->state = XC_ACCELERATED;
		k->xen_grants = keep;
		k->xen_ep = ep;
		ep = NULL;
		srv.addr = name;
		k->side[1] = srv;
		k->side[0].addr = cl->peer;
		xd->st.claims++;
		XLOG_DEBUG("Xen offer %llu of domain %u claimed by pid %d",
			   (unsigned long long)k->xen_id, k->xen_dom, (int)c->pid);
		return;
	}
	/* The claim decision, before the efd0 wake-up (header_decide). */
	header_decide(k, XWAY_ATTACH_CLAIMED);
	out = (struct xway_claimed){
		.offer_id = k->offer_id, .cookie = k->cookie,
		.ring_order = k->ring_order, .backend = XWAY_BACKEND_LOCAL,
		.peer_pid = k->side[0].pid,
	};
	{
		int sfds[3] = { k->memfd, k->efd0, k->efd1 };

		xwayd_send(c, XWAY_MSG_CLAIMED, r->hdr.seq, 0, &out, sizeof(out), sfds, 3);
	}
	wake_efd0(k);
	owner_offer_done(k);
	if (k->timer) {
		xwayd_timeout_remove(k->timer);
		k->timer = 0;
	}
	conn_release_fds(k);          /* the memfd stays: the counters */
	k->state = XC_ACCELERATED;
	srv.addr = name;              /* == cl->local, with the socket's family */
	k->side[1] = srv;
	/* The client offered before connect, maybe bound to a wildcard: its
	 * real address is the accepted socket's peer (keep its socket's
	 * family: the diag lookup needs it). */
	{
		uint16_t fam = k->side[0].addr.family;

		k->side[0].addr = cl->peer;
		k->side[0].addr.family = fam;
	}
	xd->st.claims++;
	XLOG_DEBUG("offer %llu claimed by pid %d", (unsigned long long)k->offer_id,
		   (int)c->pid);
}

/* ---- REMAP ---------------------------------------------------------------- */

/*
 * A holder of an accelerated cross-domain connection (server domain, the
 * vchan client end) asks for a fresh map of its grants, for a fork child
 * that shares the connection (gntdev's mapping is not copied at fork in a
 * PV domain; docs/DESIGN.md §7.2).  Proof of holding is the connection's
 * socket itself, as for CLAIM: its names and namespace must be the
 * record's.  The references are the ones validated at CLAIM; the peer's
 * page is not read again.  Reply: CLAIMED with struct xway_claimed_xenfd
 * and [gntdev], or RESULT with -errno and why.
 */
void xwayd_remap(struct xwayd_client *c, const struct xway_req *r, int fd)
{
	struct xway_claimed_xenfd xo;
	struct xway_addr name, peer;
	struct xwayd_conn *k = NULL;
	const char *why = NULL;
	GHashTableIter it;
	gpointer key, v;
	xwayd_netns ns;
	int e, gfd = -1;

	if (sock_proof(c, r, fd, "REMAP", &name, &peer, &ns))
		return;
	g_hash_table_iter_init(&it, xd->live);
	while (g_hash_table_iter_next(&it, &key, &v)) {
		struct xwayd_conn *q = v;

		if (q->state == XC_ACCELERATED && q->xen_remote && q->xen_grants &&
		    q->netns_server == ns &&
		    q->side[1].addr.port == name.port && xway_ip_equal(q->side[1].addr.ip, name.ip) &&
		    q->side[0].addr.port == peer.port && xway_ip_equal(q->side[0].addr.ip, peer.ip)) {
			k = q;
			break;
		}
	}
	if (!k) {
		xwayd_send_result(c, XWAY_MSG_RESULT, r->hdr.seq, -ENOENT, XWAY_R_LEFT, 0,
				  "REMAP: no accelerated Xen connection of this domain's "
				  "server end with these names");
		return;
	}
	memset(&xo, 0, sizeof(xo));
	e = xwayd_vchan_remap(k->xen_grants, &gfd, &xo.v, &why);
	if (e) {
		xwayd_send_result(c, XWAY_MSG_RESULT, r->hdr.seq, e, XWAY_R_SETUP_CHAN, 0,
				  "REMAP: %s (%s)", why ? why : "failed", g_strerror(-e));
		return;
	}
	xo.base.base = (struct xway_claimed){
		.offer_id = k->offer_id, .cookie = k->cookie,
		.backend = XWAY_BACKEND_XEN,
	};
	xo.base.peer_domid = k->xen_dom;
	g_strlcpy(xo.base.path, k->xen_path, sizeof(xo.base.path));
	xwayd_send(c, XWAY_MSG_CLAIMED, r->hdr.seq, 0, &xo, sizeof(xo), &gfd, 1);
	close(gfd);
	XLOG_DEBUG("Xen connection %016llx re-mapped for pid %d",
		   (unsigned long long)k->cookie, (int)c->pid);
}

/* ---- XEN_MUTE / XEN_NOTIFY --------------------------------------------------- */

#define XWAYD_MUTE_MAX 4096     /* registered ports per link */

void xwayd_xen_mute(struct xwayd_client *c, const struct xway_req *r, int fd)
{
	uint32_t port = r->u.xen_port.port;
	int e = xwayd_vchan_evtchn_ok(fd);

	if (!e && !c->xen_mute)
		c->xen_mute = g_hash_table_new(g_direct_hash, g_direct_equal);
	if (!e && g_hash_table_size(c->xen_mute) >= XWAYD_MUTE_MAX &&
	    !g_hash_table_contains(c->xen_mute, GUINT_TO_POINTER(port)))
		e = -ENOSPC;
	if (e) {
		close(fd);
		xwayd_send_result(c, XWAY_MSG_RESULT, r->hdr.seq, e, XWAY_R_SETUP_CHAN, 0,
				  "XEN_MUTE: %s", e == -ENOSPC ? "too many ports on this link"
				  : "descriptor is not an event channel");
		return;
	}
	/* The same port again (a re-registration): the newer descriptor. */
	gpointer old = g_hash_table_lookup(c->xen_mute, GUINT_TO_POINTER(port));
	if (old)
		close(GPOINTER_TO_INT(old) - 1);
	g_hash_table_insert(c->xen_mute, GUINT_TO_POINTER(port), GINT_TO_POINTER(fd + 1));
	xwayd_send_result(c, XWAY_MSG_RESULT, r->hdr.seq, 0, 0, 0, "notifying port %u", port);
	XLOG_DEBUG("pid %d: event port %u notified by the broker from now on (sandbox)",
		   (int)c->pid, port);
}

void xwayd_xen_notify(struct xwayd_client *c, const struct xway_req *r)
{
	gpointer v = c->xen_mute ? g_hash_table_lookup(c->xen_mute,
						       GUINT_TO_POINTER(r->u.xen_port.port)) : NULL;
	int e;

	if (!v) {
		xd->st.proto_errors++;
		XLOG_DEBUG("pid %d: XEN_NOTIFY for port %u it did not register",
			   (int)c->pid, r->u.xen_port.port);
		return;
	}
	if ((e = xwayd_vchan_notify(GPOINTER_TO_INT(v) - 1, r->u.xen_port.port)) < 0)
		XLOG_DEBUG("pid %d: notifying port %u: %s", (int)c->pid,
			   r->u.xen_port.port, g_strerror(-e));
}

void xwayd_xen_mute_gone(struct xwayd_client *c)
{
	GHashTableIter it;
	gpointer k, v;

	if (!c->xen_mute)
		return;
	g_hash_table_iter_init(&it, c->xen_mute);
	while (g_hash_table_iter_next(&it, &k, &v))
		close(GPOINTER_TO_INT(v) - 1);
	g_hash_table_destroy(c->xen_mute);
	c->xen_mute = NULL;
}

/* ---- WITHDRAW ------------------------------------------------------------- */

void xwayd_withdraw(struct xwayd_client *c, const struct xway_req *r)
{
	struct xwayd_conn *k = g_hash_table_lookup(xd->offers, &r->u.withdraw.offer_id);

	if (!k) {
		/* Unknown or already expired: it is withdrawn. */
		xwayd_send_result(c, XWAY_MSG_RESULT, r->hdr.seq, 0, XWAY_R_WITHDRAWN,
				  r->u.withdraw.offer_id, "not pending (withdrawn)");
		return;
	}
	if (k->client_id != c->id && k->side[0].uid != c->uid) {
		xwayd_send_result(c, XWAY_MSG_RESULT, r->hdr.seq, -EPERM, 0,
				  r->u.withdraw.offer_id,
				  "WITHDRAW: offer belongs to another user");
		return;
	}
	if (k->state != XC_PENDING) {
		xwayd_send_result(c, XWAY_MSG_RESULT, r->hdr.seq, -EALREADY, 0,
				  k->offer_id, "already claimed");
		return;
	}
	if (k->xen && !k->xen_remote) {
		/* The server's broker decides: ask it, once. */
		if (!k->xen_withdraw_asked) {
			k->xen_withdraw_asked = true;
			xwayd_xen_publish_offer(k);
		}
		xwayd_send_result(c, XWAY_MSG_RESULT, r->hdr.seq, 1, 0, k->offer_id,
				  "withdraw requested from Xen domain %u", k->xen_dom);
		return;
	}
	decide_withdrawn(k, "withdrawn by the client");
	xwayd_send_result(c, XWAY_MSG_RESULT, r->hdr.seq, 0, XWAY_R_WITHDRAWN,
			  r->u.withdraw.offer_id, "withdrawn");
}

/* ---- REPORT ----------------------------------------------------------------- */

static struct xwayd_conn *find_finished(uint64_t cookie)
{
	for (GList *n = xd->finished.tail; n && cookie; n = n->prev) {
		struct xwayd_conn *k = n->data;

		if (k->cookie == cookie)
			return k;
	}
	return NULL;
}

static bool addr_eq(const struct xway_addr *a, const struct xway_addr *b)
{
	return a->port == b->port && xway_ip_equal(a->ip, b->ip);
}

/* The broker's own fallback record for the connection a cookie-less
 * REPORT describes (e.g. its no-offer answer to the server's claim), among
 * the most recent ones. */
static struct xwayd_conn *find_fallback(const struct xway_report *p)
{
	int n = 0;

	for (GList *i = xd->finished.tail; i && n < 256; i = i->prev, n++) {
		struct xwayd_conn *k = i->data;

		if (k->state == XC_FALLBACK && k->reason == p->reason &&
		    addr_eq(&k->side[p->side].addr, &p->local) &&
		    addr_eq(&k->side[!p->side].addr, &p->peer))
			return k;
	}
	return NULL;
}

/* Final byte counts: what the endpoints reported (the sender's tx, else
 * the receiver's rx), else the last live reading of the header. */
static void conn_finals(struct xwayd_conn *k)
{
	const struct xwayd_side *c = &k->side[0], *s = &k->side[1];

	if (c->chan_tx >= 0 || s->chan_rx >= 0)
		k->bytes_c2s = (uint64_t)(c->chan_tx >= 0 ? c->chan_tx : s->chan_rx);
	if (s->chan_tx >= 0 || c->chan_rx >= 0)
		k->bytes_s2c = (uint64_t)(s->chan_tx >= 0 ? s->chan_tx : c->chan_rx);
}

/* An accelerated connection is over: take it out of the live tables. */
static void conn_close(struct xwayd_conn *k, const char *detail)
{
	xwayd_conn_refresh(k);
	conn_unmap(k);
	conn_finals(k);
	g_hash_table_steal(xd->live, &k->cookie);
	g_hash_table_steal(xd->offers, &k->offer_id);
	k->state = XC_CLOSED;
	if (detail && !k->detail[0])
		g_strlcpy(k->detail, detail, sizeof(k->detail));
	conn_finish(k);
}

/* Claimed, but an endpoint could not use the channel (attaching failed)
 * or left it for TCP: the record says so. */
static void fallback_after_claim(struct xwayd_conn *k, int side, uint32_t reason,
				 const char *text)
{
	xwayd_conn_refresh(k);
	conn_unmap(k);
	g_hash_table_steal(xd->live, &k->cookie);
	g_hash_table_steal(xd->offers, &k->offer_id);
	k->state = XC_FALLBACK;
	k->reason = reason;
	snprintf(k->detail, sizeof(k->detail), "%s side after claim: %s",
		 side ? "server" : "client", text);
	xd->st.fallbacks++;
	xd->st.by_reason[reason]++;
	conn_finish(k);
}

void xwayd_report(struct xwayd_client *c, const struct xway_req *r)
{
	const struct xway_report *p = &r->u.report;
	struct xwayd_conn *k;

	xd->st.reports++;
	k = p->cookie ? g_hash_table_lookup(xd->live, &p->cookie) : NULL;
	if (!k)
		k = find_finished(p->cookie);
	/* Only the endpoint's own user (or root) may annotate a record. */
	if (k && c->uid != 0 && k->side[p->side].uid != c->uid) {
		XLOG_INFO("REPORT from pid %d uid %d for another user's connection ignored",
			  (int)c->pid, (int)c->uid);
		return;
	}
	if (k && k->state == XC_PENDING && k->xen && !k->xen_remote &&
	    (p->kind == XWAY_REP_CLOSED ||
	     (p->kind == XWAY_REP_FALLBACK && p->reason == XWAY_R_LEFT))) {
		/* Before the outcome (xwayd_conn_xen_decided applies it). */
		int i = p->kind == XWAY_REP_CLOSED;

		k->xen_early[i] = *p;
		k->xen_early_has[i] = true;
		return;
	}
	if (p->kind == XWAY_REP_FALLBACK) {
		struct xwayd_side me = { .chan_tx = -1, .chan_rx = -1, .addr = p->local, .pid = c->pid, .uid = c->uid,
					 .tcp_sent = -1, .tcp_received = -1 };
		struct xwayd_side other = { .chan_tx = -1, .chan_rx = -1, .addr = p->peer, .uid = (uid_t)-1, .tcp_sent = -1,
					    .tcp_received = -1 };

		if (!k && !p->cookie)
			k = find_fallback(p);
		if (k && k->state == XC_ACCELERATED) {
			fallback_after_claim(k, p->side, p->reason, p->text);
			return;
		}
		if (k) {
			/* The broker's own record of this connection: add the
			 * shim's words if it has none (never rewrite the
			 * fate of a pending record). */
			if (k->state == XC_FALLBACK && p->text[0] && !k->detail[0])
				g_strlcpy(k->detail, p->text, sizeof(k->detail));
			return;
		}
		if (p->side == 0)
			record_fallback(p->cookie, p->reason, &me, &other, p->text);
		else
			record_fallback(p->cookie, p->reason, &other, &me, p->text);
		return;
	}
	report_closed(k, p);           /* CLOSED */
}

/* REPORT CLOSED p applied to k (accelerated or closed; else ignored). */
static void report_closed(struct xwayd_conn *k, const struct xway_report *p)
{
	struct xwayd_side *s;

	if (!k || (k->state != XC_ACCELERATED && k->state != XC_CLOSED))
		return;
	s = &k->side[p->side];
	s->closed = true;
	/* A cross-domain connection's other end reports to its own broker. */
	if (k->xen)
		k->side[!p->side].closed = true;
	s->tcp_sent = p->tcp_bytes_sent;
	s->tcp_received = p->tcp_bytes_received;
	s->chan_tx = p->chan_tx_bytes;
	s->chan_rx = p->chan_rx_bytes;
	if (k->state == XC_ACCELERATED && k->side[0].closed && k->side[1].closed)
		conn_close(k, NULL);
	else if (k->state == XC_CLOSED)
		conn_finals(k);
}

/* ---- liveness, disconnects, shutdown -------------------------------------- */

static bool pid_gone(pid_t pid)
{
	return pid <= 0 || (kill(pid, 0) < 0 && errno == ESRCH);
}

/* Side i's socket of a local connection in our namespace is no more: the
 * kernel has none for its 4-tuple, or only TIME_WAIT/CLOSE, or LISTEN (the
 * exact lookup falls back to the listener on the local port, as incoming
 * segments do).  An answer that is not a state (a netlink error) counts
 * as still there. */
static bool socket_gone(const struct xwayd_conn *k, int i)
{
	int st = xwayd_tcp_state(&k->side[i].addr, &k->side[1 - i].addr);

	return st == -ENOENT || st == TCP_TIME_WAIT || st == TCP_CLOSE ||
	       st == TCP_LISTEN;
}

/*
 * Every LIVENESS_MS: accelerated records whose ends are both gone end.  An
 * end is gone once it reported its close or its process exited.  The pid
 * is the process that offered or claimed, which need not be the last
 * holder: sshd's listener claims, the re-exec'ed session holds the socket
 * under a seccomp filter (no close report there by design) and the
 * listener lives on.  So when one end is gone and the other's process
 * lives, the kernel is asked (sock_diag, both sockets in our namespace, a
 * local channel): no socket left on either side ends the record too.
 */
static gboolean liveness_check(gpointer unused)
{
	GHashTableIter it;
	gpointer key, v;
	GPtrArray *done = g_ptr_array_new(), *gone = g_ptr_array_new();

	(void)unused;
	g_hash_table_iter_init(&it, xd->live);
	while (g_hash_table_iter_next(&it, &key, &v)) {
		struct xwayd_conn *k = v;
		bool g0, g1;

		if (k->state != XC_ACCELERATED)
			continue;
		xwayd_conn_refresh(k);
		g0 = k->side[0].closed || pid_gone(k->side[0].pid);
		g1 = k->side[1].closed || pid_gone(k->side[1].pid);
		if (g0 && g1)
			g_ptr_array_add(done, k);
		else if ((g0 || g1) && !k->xen && k->backend == XWAY_BACKEND_LOCAL &&
			 k->netns_client == xd->netns && k->netns_server == xd->netns &&
			 socket_gone(k, 0) && socket_gone(k, 1))
			g_ptr_array_add(gone, k);
		/* A Xen server end: its holders (fork children, an exec'ed
		 * sshd) may end with _exit, without a close report, while the
		 * claiming listener lives on; its socket here is the truth
		 * (the client's is in the other domain). */
		else if (k->xen_remote && k->netns_server == xd->netns && socket_gone(k, 1))
			g_ptr_array_add(gone, k);
	}
	for (guint i = 0; i < done->len; i++)
		conn_close(done->pdata[i], "endpoint processes exited");
	for (guint i = 0; i < gone->len; i++)
		conn_close(gone->pdata[i], ((struct xwayd_conn *)gone->pdata[i])->xen_remote
			   ? "its socket here closed (a holder without a close report)"
			   : "both sockets closed (a holder without a close report)");
	g_ptr_array_free(done, TRUE);
	g_ptr_array_free(gone, TRUE);
	return G_SOURCE_CONTINUE;
}

void xwayd_conn_client_gone(struct xwayd_client *c)
{
	GHashTableIter it;
	gpointer key, v;
	GPtrArray *mine = g_ptr_array_new();

	g_hash_table_iter_init(&it, xd->offers);
	while (g_hash_table_iter_next(&it, &key, &v)) {
		struct xwayd_conn *k = v;

		if (k->state == XC_PENDING && k->client_id == c->id)
			g_ptr_array_add(mine, k);
	}
	for (guint i = 0; i < mine->len; i++)
		decide_withdrawn(mine->pdata[i], "offering client disconnected");
	g_ptr_array_free(mine, TRUE);
}

void xwayd_conn_init(void)
{
	xd->offers = g_hash_table_new(g_int64_hash, g_int64_equal);
	xd->live = g_hash_table_new(g_int64_hash, g_int64_equal);
	g_queue_init(&xd->finished);
	liveness_timer = xwayd_timeout_add(LIVENESS_MS, liveness_check, NULL);
}

void xwayd_conn_shutdown(void)
{
	GHashTableIter it;
	gpointer key, v;
	GPtrArray *all = g_ptr_array_new();

	/* Pending clients must not wait for a decision that never comes:
	 * withdraw them; accelerated channels do not need the broker. */
	g_hash_table_iter_init(&it, xd->offers);
	while (g_hash_table_iter_next(&it, &key, &v))
		if (((struct xwayd_conn *)v)->state == XC_PENDING)
			g_ptr_array_add(all, v);
	for (guint i = 0; i < all->len; i++)
		decide_withdrawn(all->pdata[i], "broker shut down");
	g_ptr_array_set_size(all, 0);
	g_hash_table_iter_init(&it, xd->live);
	while (g_hash_table_iter_next(&it, &key, &v))
		g_ptr_array_add(all, v);
	g_hash_table_steal_all(xd->live);
	g_hash_table_steal_all(xd->offers);
	for (guint i = 0; i < all->len; i++)
		conn_free(all->pdata[i]);
	g_ptr_array_free(all, TRUE);
	while (!g_queue_is_empty(&xd->finished))
		conn_free(g_queue_pop_head(&xd->finished));
	if (liveness_timer)
		xwayd_timeout_remove(liveness_timer);
	liveness_timer = 0;
	g_hash_table_destroy(xd->live);
	g_hash_table_destroy(xd->offers);
}
