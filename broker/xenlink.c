/* SPDX-License-Identifier: MIT */
/*
 * Xen mode: the broker-to-broker links (docs/XEN.md §3.1).  Through
 * xenstore alone a cross-domain connection cost about ten xenstore requests
 * and as many watch events, each a round trip to xenstored in dom0: the
 * set-up rate was a fifteenth of kernel TCP's.  So every broker serves one
 * libxenvchan to each peer domain, made once (libxenvchan_server_init, one
 * xenstore transaction) and advertised as /local/xway/<self>/links/<peer> =
 * "GEN PEER-INSTANCE"; the peer's broker attaches to it
 * (libxenvchan_client_init).  On the link we serve ("ours") go our offers
 * and withdraw requests, and come the peer's outcomes for them; on the one
 * the peer serves ("theirs") come its offers and go our outcomes.  A
 * connection's set-up then touches xenstore not at all.
 *
 * Nothing depends on a link being up: a record that cannot go on one (no
 * link yet, the peer's broker restarting, a full ring) goes through
 * xenstore as before, and both brokers always read both.  The decision
 * stays where it was (the server's broker, once), and "the offer is
 * readable by the peer before the SYN leaves" holds for the link too: the
 * offer is in the shared ring before the OFFER reply, and a CLAIM that
 * finds no match reads every link (and xenstore) before answering.
 *
 * The peer may be hostile: records are fixed slots parsed strictly
 * (proto.c), a bad one is counted and logged once a link, and a link is
 * read at most LINK_BUDGET records per wake-up (the rest on an idle call).
 * The link's path is computed here from the advertised generation, never
 * taken from the peer, and libxenvchan checks the shared page's geometry.
 * A link whose peer end is gone (its broker stopped: libxenvchan's unmap
 * notification clears the live flag) is closed; ours is made again once
 * the peer's new instance appears.
 *
 * libxenvchan is loaded with dlopen (xwayd runs in local mode without Xen).
 */
#include <dlfcn.h>
#include <errno.h>
#include <glib-unix.h>
#include <stdio.h>
#include <string.h>

#include <libxenvchan.h>

#include "xwayd.h"

#define XS_ROOT      "/local/xway"
#define LINK_RING    65536u      /* bytes per direction: 256 records */
#define LINK_BUDGET  1024u       /* records read per wake-up */
#define LINK_RETRY_S 2           /* a failed end is tried again after, */
#define LINK_RETRY_MAX_S 64      /* doubling up to this (a crashed peer's
				    stale nodes must not make a log line
				    every 2 s) */

static struct {
	void *dl;
	struct libxenvchan *(*server_init)(struct xentoollog_logger *, int,
					   const char *, size_t, size_t);
	struct libxenvchan *(*client_init)(struct xentoollog_logger *, int,
					   const char *);
	int (*recv)(struct libxenvchan *, void *, size_t);
	int (*send)(struct libxenvchan *, const void *, size_t);
	int (*wait)(struct libxenvchan *);
	int (*fd)(struct libxenvchan *);
	int (*is_open)(struct libxenvchan *);
	int (*data_ready)(struct libxenvchan *);
	void (*close)(struct libxenvchan *);
} vl;

struct link_end {
	struct xen_link *link;
	bool ours;
	struct libxenvchan *v;
	guint src, idle;
	uint64_t gen;
	uint64_t sent, received, refused;
	gint64 retry_us;           /* not before this (monotonic), after a failure */
	unsigned retry_s;          /* the next back-off */
	uint64_t gen_tried;        /* theirs: the advertised generation last tried */
};

struct xen_link {
	uint32_t dom;
	char peer_inst[24];        /* the peer instance ours was made for */
	char adv[64];              /* the peer's last advertisement for us */
	struct link_end ours, theirs;
};

static GHashTable *links;      /* domid -> struct xen_link */
static uint32_t self_dom;
static bool enabled;
static uint64_t next_gen;

static int lib_load(void)
{
	static const char *const names[] = { "libxenvchan.so.4.17", "libxenvchan.so", NULL };
	static bool tried;
	struct { const char *sym; void **slot; } syms[] = {
		{ "libxenvchan_server_init", (void **)&vl.server_init },
		{ "libxenvchan_client_init", (void **)&vl.client_init },
		{ "libxenvchan_recv", (void **)&vl.recv },
		{ "libxenvchan_send", (void **)&vl.send },
		{ "libxenvchan_wait", (void **)&vl.wait },
		{ "libxenvchan_fd_for_select", (void **)&vl.fd },
		{ "libxenvchan_is_open", (void **)&vl.is_open },
		{ "libxenvchan_data_ready", (void **)&vl.data_ready },
		{ "libxenvchan_close", (void **)&vl.close },
	};

	if (tried)
		return vl.dl ? 0 : -ENOENT;
	tried = true;
	for (int i = 0; names[i] && !vl.dl; i++)
		vl.dl = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
	if (!vl.dl) {
		XLOG_WARN("xen links: cannot load libxenvchan (%s); offers go through "
			  "xenstore (install libxenmisc4.17)", dlerror());
		return -ENOENT;
	}
	for (size_t i = 0; i < G_N_ELEMENTS(syms); i++)
		if (!(*syms[i].slot = dlsym(vl.dl, syms[i].sym))) {
			XLOG_WARN("xen links: libxenvchan lacks %s; offers go through xenstore",
				  syms[i].sym);
			dlclose(vl.dl);
			vl.dl = NULL;
			return -ENOSYS;
		}
	return 0;
}

static void link_path(uint32_t server, uint32_t client, uint64_t gen, char *buf, size_t n)
{
	/* Beside the connections' vchans, under the serving domain's data/
	 * (writable by it; libxenvchan lets the client domain read). */
	snprintf(buf, n, "/local/domain/%u/data/vchan/%u/link-%016llx", server, client,
		 (unsigned long long)gen);
}

/* A failed attempt: the next one later, each time twice as late. */
static void end_backoff(struct link_end *e)
{
	e->retry_s = e->retry_s ? MIN(e->retry_s * 2, LINK_RETRY_MAX_S) : LINK_RETRY_S;
	e->retry_us = g_get_monotonic_time() + (gint64)e->retry_s * G_USEC_PER_SEC;
}

static void end_close(struct link_end *e, const char *why)
{
	if (!e->v)
		return;
	if (e->src)
		g_source_remove(e->src);
	if (e->idle)
		g_source_remove(e->idle);
	e->src = e->idle = 0;
	vl.close(e->v);            /* libxenvchan removes a server's nodes */
	e->v = NULL;
	XLOG_INFO("xen link %s domain %u closed: %s", e->ours ? "to" : "from",
		  e->link->dom, why);
	if (e->ours) {
		char path[96];

		snprintf(path, sizeof(path), XS_ROOT "/%u/links/%u", self_dom, e->link->dom);
		xwayd_xen_rm(path);
	} else {
		xwayd_conn_xen_link_lost(e->link->dom);
	}
}

static void dispatch(struct link_end *e, const char rec[XWAY_LINK_REC])
{
	struct xway_link_msg m;
	const char *why = NULL;
	uint32_t dom = e->link->dom;

	if (xway_link_parse(rec, XWAY_LINK_REC, &m, &why) == 0) {
		if (e->ours && m.kind == XWAY_LINK_OUTCOME) {
			e->received++;
			xwayd_conn_xen_link_outcome(dom, m.id, m.claimed);
			return;
		}
		if (!e->ours && m.kind == XWAY_LINK_OFFER) {
			char path[XWAY_XEN_PATH_MAX];

			e->received++;
			/* The connection's vchan path, as the xenstore offer
			 * names it: computed here (kept for display and the
			 * shim). */
			snprintf(path, sizeof(path), "/local/domain/%u/data/vchan/%u/x%016llx",
				 dom, self_dom, (unsigned long long)m.cookie);
			xwayd_conn_remote_offer(dom, m.id, m.cookie, &m.src, &m.dst, path, &m);
			return;
		}
		if (!e->ours && m.kind == XWAY_LINK_WITHDRAW) {
			e->received++;
			xwayd_conn_remote_withdraw(dom, m.id, "withdrawn by the client");
			return;
		}
		why = "a record of the other direction";
	}
	if (!e->refused++)
		XLOG_WARN("xen link %s domain %u: bad record refused (%s); further ones "
			  "are only counted", e->ours ? "to" : "from", dom, why);
}

static gboolean on_idle(gpointer p);

/* Read what the peer wrote (bounded); close the end if the peer is gone. */
static void end_drain(struct link_end *e)
{
	char rec[XWAY_LINK_REC];
	unsigned n = 0;

	while (e->v && n < LINK_BUDGET && vl.data_ready(e->v) >= XWAY_LINK_REC) {
		/* All or nothing (blocking is 0): a slot is consumed whole. */
		if (vl.recv(e->v, rec, sizeof(rec)) != XWAY_LINK_REC)
			break;
		n++;
		dispatch(e, rec);
	}
	if (!e->v)
		return;
	if (n == LINK_BUDGET) {
		if (!e->idle)
			e->idle = g_idle_add(on_idle, e);
		return;
	}
	/* After the reads: a peer that wrote and then went leaves its last
	 * records readable. */
	if (vl.is_open(e->v) == 0) {
		e->retry_us = 0;
		end_close(e, "the peer's broker closed its end");
	}
}

static gboolean on_idle(gpointer p)
{
	struct link_end *e = p;

	e->idle = 0;
	end_drain(e);
	return G_SOURCE_REMOVE;
}

static gboolean on_event(gint fd, GIOCondition cond, gpointer p)
{
	struct link_end *e = p;

	(void)fd;
	(void)cond;
	/* Consumes the pending event and unmasks the port (readable: it
	 * does not block). */
	if (vl.wait(e->v) < 0) {
		e->src = 0;
		end_close(e, "event channel error");
		return G_SOURCE_REMOVE;
	}
	end_drain(e);
	return e->v ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
}

static bool end_watch(struct link_end *e)
{
	int fd = vl.fd(e->v);

	if (fd < 0)
		return false;
	e->src = xwayd_fd_watch(fd, G_IO_IN, on_event, e);
	return true;
}

/* Take v (a fresh end, or NULL when its init failed) as e's, watched and
 * non-blocking: true.  Else back off; errno stays the failure's. */
static bool end_open(struct link_end *e, struct libxenvchan *v, uint64_t gen)
{
	int err = errno;

	e->v = v;
	if (!v || !end_watch(e)) {
		if (v) {
			err = EIO;
			vl.close(v);
		}
		e->v = NULL;
		end_backoff(e);
		errno = err;
		return false;
	}
	v->blocking = 0;
	e->gen = gen;
	return true;
}

static void ours_make(struct xen_link *l)
{
	struct link_end *e = &l->ours;
	char path[96], node[96], val[64];
	uint64_t gen = ++next_gen;

	if (e->v || !l->peer_inst[0] || g_get_monotonic_time() < e->retry_us)
		return;
	link_path(self_dom, l->dom, gen, path, sizeof(path));
	if (!end_open(e, vl.server_init(NULL, (int)l->dom, path, LINK_RING, LINK_RING), gen)) {
		XLOG_DEBUG("xen link to domain %u: libxenvchan_server_init failed: %s",
			   l->dom, g_strerror(errno));
		return;
	}
	snprintf(node, sizeof(node), XS_ROOT "/%u/links/%u", self_dom, l->dom);
	snprintf(val, sizeof(val), "%016llx %s", (unsigned long long)gen, l->peer_inst);
	if (!xwayd_xen_put(node, val)) {
		end_backoff(e);
		end_close(e, "cannot advertise it in xenstore");
		return;
	}
	e->retry_s = 0;
	XLOG_INFO("xen link to domain %u: served at %s", l->dom, path);
}

/* "GEN INSTANCE", INSTANCE ours: the generation, else 0. */
static uint64_t adv_gen(const char *adv)
{
	char inst[24], want[24];
	guint64 gen = 0;
	const char *sp = adv ? strchr(adv, ' ') : NULL;

	if (!sp || sp - adv != 16 || strlen(sp + 1) != 16)
		return 0;
	g_strlcpy(inst, sp + 1, sizeof(inst));
	snprintf(want, sizeof(want), "%016llx", (unsigned long long)xd->instance);
	if (strcmp(inst, want))
		return 0;                 /* made for an earlier instance of ours */
	{
		char g[17];

		memcpy(g, adv, 16);
		g[16] = 0;
		if (!g_ascii_string_to_unsigned(g, 16, 1, G_MAXUINT64, &gen, NULL))
			return 0;
	}
	return gen;
}

static void theirs_attach(struct xen_link *l)
{
	struct link_end *e = &l->theirs;
	uint64_t gen = adv_gen(l->adv);
	char path[96];

	if (gen && e->v && e->gen != gen)
		end_close(e, "the peer serves a new link");
	if (gen != e->gen_tried) {
		/* A new advertisement: try it now, whatever the back-off. */
		e->gen_tried = gen;
		e->retry_us = 0;
		e->retry_s = 0;
	}
	if (!gen || e->v || g_get_monotonic_time() < e->retry_us)
		return;
	link_path(l->dom, self_dom, gen, path, sizeof(path));
	if (!end_open(e, vl.client_init(NULL, (int)l->dom, path), gen)) {
		XLOG_DEBUG("xen link from domain %u: libxenvchan_client_init(%s) failed: %s",
			   l->dom, path, g_strerror(errno));
		return;
	}
	e->retry_s = 0;
	XLOG_INFO("xen link from domain %u: attached to %s", l->dom, path);
	end_drain(e);
}

void xwayd_xen_link_init(uint32_t self, bool on)
{
	self_dom = self;
	/* Generations above any earlier instance's (as offer ids). */
	next_gen = (uint64_t)g_get_real_time();
	/* (The unit test's stand-in library, tests/unit/broker/
	 * fake_xenvchan_link.c, is found by LD_LIBRARY_PATH.) */
	enabled = on && lib_load() == 0;
	if (!links)
		links = g_hash_table_new(g_int_hash, g_int_equal);
	if (!on)
		XLOG_INFO("xen links disabled (xen_link=false): offers go through xenstore");
}

static void link_free(struct xen_link *l, const char *why)
{
	end_close(&l->ours, why);
	end_close(&l->theirs, why);
	g_free(l);
}

void xwayd_xen_link_stop(void)
{
	GHashTableIter it;
	gpointer k, v;

	if (!links)
		return;
	g_hash_table_iter_init(&it, links);
	while (g_hash_table_iter_next(&it, &k, &v)) {
		g_hash_table_iter_steal(&it);
		link_free(v, "stopping");
	}
	g_hash_table_destroy(links);
	links = NULL;
}

void xwayd_xen_link_peer(uint32_t dom, const char *instance, const char *adv)
{
	struct xen_link *l;

	if (!enabled)
		return;
	l = g_hash_table_lookup(links, &dom);
	if (!l) {
		l = g_new0(struct xen_link, 1);
		l->dom = dom;
		l->ours.link = l->theirs.link = l;
		l->ours.ours = true;
		g_hash_table_insert(links, &l->dom, l);
	}
	if (strcmp(l->peer_inst, instance ? instance : "")) {
		/* The peer's broker stopped or started again: our link was
		 * for its previous instance. */
		end_close(&l->ours, "the peer's broker changed");
		l->ours.retry_us = 0;
		l->ours.retry_s = 0;
		g_strlcpy(l->peer_inst, instance ? instance : "", sizeof(l->peer_inst));
	}
	g_strlcpy(l->adv, adv ? adv : "", sizeof(l->adv));
	if (!adv_gen(l->adv))
		end_close(&l->theirs, "the peer no longer serves it");
	ours_make(l);
	theirs_attach(l);
}

void xwayd_xen_link_gone(uint32_t dom)
{
	struct xen_link *l = links ? g_hash_table_lookup(links, &dom) : NULL;

	if (!l)
		return;
	g_hash_table_remove(links, &dom);
	link_free(l, "the domain left " XS_ROOT);
}

static void links_each(void (*fn)(struct xen_link *))
{
	GHashTableIter it;
	gpointer k, v;

	if (!enabled)
		return;
	g_hash_table_iter_init(&it, links);
	while (g_hash_table_iter_next(&it, &k, &v))
		fn(v);
}

static void link_retry(struct xen_link *l)
{
	ours_make(l);
	theirs_attach(l);
}

void xwayd_xen_link_tick(void)
{
	links_each(link_retry);
}

bool xwayd_xen_link_send(uint32_t dom, bool ours, const struct xway_link_msg *m)
{
	struct xen_link *l = links ? g_hash_table_lookup(links, &dom) : NULL;
	struct link_end *e = l ? (ours ? &l->ours : &l->theirs) : NULL;
	char rec[XWAY_LINK_REC];

	/* Ours only once the peer attached (it reads what we write from
	 * then on); theirs while the server is live. */
	if (!e || !e->v || vl.is_open(e->v) != 1 || xway_link_format(m, rec))
		return false;
	/* All or nothing: 0 when the ring has no room for the slot. */
	if (vl.send(e->v, rec, sizeof(rec)) != XWAY_LINK_REC)
		return false;
	e->sent++;
	return true;
}

static void link_drain(struct xen_link *l)
{
	if (l->theirs.v)
		end_drain(&l->theirs);
	if (l->ours.v)
		end_drain(&l->ours);
}

void xwayd_xen_links_drain(void)
{
	links_each(link_drain);
}

bool xwayd_xen_link_current(uint32_t dom, const char *name)
{
	struct xen_link *l = links ? g_hash_table_lookup(links, &dom) : NULL;
	char want[32];

	if (!l || !l->ours.v)
		return false;
	snprintf(want, sizeof(want), "link-%016llx", (unsigned long long)l->ours.gen);
	return !strcmp(name, want);
}

static const char *end_state(const struct link_end *e)
{
	if (!e->v)
		return "down";
	switch (vl.is_open(e->v)) {
	case 1:
		return "up";
	case 2:
		return "waiting";
	default:
		return "closing";
	}
}

void xwayd_xen_link_show(GString *o, uint32_t dom, bool json)
{
	struct xen_link *l = links ? g_hash_table_lookup(links, &dom) : NULL;
	static const struct link_end none;
	const struct link_end *a = l ? &l->ours : &none, *b = l ? &l->theirs : &none;

	if (json) {
		g_string_append_printf(o, ",\"link\":{\"enabled\":%s,\"out\":\"%s\",\"in\":\"%s\","
				       "\"sent\":%llu,\"received\":%llu,\"refused\":%llu}",
				       enabled ? "true" : "false", end_state(a), end_state(b),
				       (unsigned long long)(a->sent + b->sent),
				       (unsigned long long)(a->received + b->received),
				       (unsigned long long)(a->refused + b->refused));
	} else if (enabled) {
		g_string_append_printf(o, "  link out %s, in %s; records sent %llu, received "
				       "%llu, refused %llu\n", end_state(a), end_state(b),
				       (unsigned long long)(a->sent + b->sent),
				       (unsigned long long)(a->received + b->received),
				       (unsigned long long)(a->refused + b->refused));
	} else {
		g_string_append(o, "  link disabled: offers go through xenstore\n");
	}
}
