/* SPDX-License-Identifier: MIT */
/*
 * Xen mode, first part: discovery through xenstore.  The broker publishes
 * its domain's addresses and xway listeners under /local/xway/<domid>/
 * (a directory dom0's tools/xen-setup/xway-xen-setup creates, writable by
 * that domain only, readable by the other participants) and watches
 * /local/xway for the other domains' entries, which `xwayctl peers` shows
 * and OFFER uses to tell "that address is a co-resident domain with an xway
 * listener" from "not co-resident".
 *
 * Second part: the cross-domain handshake, through xenstore (docs/XEN.md,
 * "Cross-domain connections").  The client's broker A publishes a pending
 * offer as /local/xway/<A>/offers/<id> = "v1 COOKIE SRC DST PATH" (only A
 * can write there: the author is authenticated by the node's owner), asks
 * for its withdrawal with /local/xway/<A>/withdraw/<id>, and removes both
 * once decided.  The server's broker B, the single place of decision,
 * matches the offer against CLAIMs like a local one and writes
 * /local/xway/<B>/outcomes/<A>/<id> = "claimed" | "withdrawn", which A
 * applies to the client's header; B removes the outcome when A removed the
 * offer.  Everything read from another domain's entry is untrusted:
 * bounded, parsed strictly, logged once when bad.
 *
 * libxenstore is loaded with dlopen so that xwayd runs (in local mode) on
 * hosts without Xen; only the few calls used are declared here.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <glib-unix.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "xwayd.h"

#define XS_ROOT "/local/xway"
#define XBT_NULL 0u
#define XS_WATCH_PATH 0

struct xs_handle;
/* libxenstore's struct xs_permissions (xenstore_lib.h). */
struct xs_perm {
	unsigned int id;
	unsigned int perms;
};
#define XS_PERM_NONE 0u
#define XS_PERM_READ 1u

static struct {
	void *lib;
	struct xs_handle *(*open)(unsigned long flags);
	void (*close)(struct xs_handle *h);
	void *(*read)(struct xs_handle *h, uint32_t t, const char *path, unsigned *len);
	bool (*write)(struct xs_handle *h, uint32_t t, const char *path,
		      const void *data, unsigned len);
	char **(*directory)(struct xs_handle *h, uint32_t t, const char *path, unsigned *num);
	bool (*watch)(struct xs_handle *h, const char *path, const char *token);
	bool (*rm)(struct xs_handle *h, uint32_t t, const char *path);
	int (*fileno)(struct xs_handle *h);
	char **(*check_watch)(struct xs_handle *h);
	/* Optional (the unit tests' stand-in store has none): without it a
	 * vchan node keeps the permissions it inherits from its parent. */
	bool (*set_permissions)(struct xs_handle *h, uint32_t t, const char *path,
				struct xs_perm *perms, unsigned num);
} xs;

struct xen_peer {
	uint32_t domid;
	char instance[24];
	GArray *addrs;             /* uint8_t[16], v4 mapped */
	GArray *listeners;         /* struct xway_addr */
	double seen;
};

static struct xs_handle *xsh;
static uint32_t self_domid;
static GHashTable *peers;       /* domid -> struct xen_peer */
/* Offers of other domains seen here: "dom/id" -> GINT (1 ok, 2 bad). */
static GHashTable *remote_seen;
static guint xs_watch_src, publish_idle, gc_src;
/* vchan nodes with no live connection at the last collection pass:
 * "dom/xCOOKIE" (see gc_vchans). */
static GHashTable *gc_suspects;

static void peer_free(gpointer p)
{
	struct xen_peer *x = p;

	g_array_free(x->addrs, TRUE);
	g_array_free(x->listeners, TRUE);
	g_free(x);
}

static int load_lib(char **err)
{
	static const char *const names[] = { "libxenstore.so.4", "libxenstore.so", NULL };

	for (int i = 0; names[i] && !xs.lib; i++)
		xs.lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
	if (!xs.lib) {
		*err = g_strdup_printf("cannot load libxenstore (%s); install libxenstore4", dlerror());
		return -ENOENT;
	}
#define SYM(f, n) if (!(*(void **)&xs.f = dlsym(xs.lib, n))) { \
		*err = g_strdup_printf("libxenstore lacks %s", n); return -ENOSYS; }
	SYM(open, "xs_open");
	SYM(close, "xs_close");
	SYM(read, "xs_read");
	SYM(write, "xs_write");
	SYM(directory, "xs_directory");
	SYM(watch, "xs_watch");
	SYM(rm, "xs_rm");
	SYM(fileno, "xs_fileno");
	SYM(check_watch, "xs_check_watch");
#undef SYM
	*(void **)&xs.set_permissions = dlsym(xs.lib, "xs_set_permissions");
	return 0;
}

static char *xs_get(const char *path)
{
	unsigned len = 0;
	char *v = xs.read(xsh, XBT_NULL, path, &len);
	char *out;

	if (!v)
		return NULL;
	/* Untrusted text from another domain: bounded, NUL-terminated. */
	out = g_strndup(v, MIN(len, 65536u));
	free(v);
	return out;
}

static bool xs_put(const char *path, const char *val)
{
	return xs.write(xsh, XBT_NULL, path, val, (unsigned)strlen(val));
}

bool xwayd_xen_put(const char *path, const char *val)
{
	return xsh && xs_put(path, val);
}

void xwayd_xen_rm(const char *path)
{
	if (xsh)
		xs.rm(xsh, XBT_NULL, path);
}

/* ---- publishing -------------------------------------------------------- */

static void publish_addrs(void)
{
	GArray *ips = g_array_new(FALSE, FALSE, 16);
	GString *s = g_string_new(NULL);
	char path[96], buf[80];

	xwayd_netns_local_addrs(getpid(), ips);
	for (guint i = 0; i < ips->len; i++) {
		struct xway_addr a = { .family = AF_INET6 };

		memcpy(a.ip, (uint8_t *)ips->data + 16 * i, 16);
		if (xway_addr_is_loopback(&a))
			continue;
		/* "ip:0": the address format of the listeners, port unused. */
		g_string_append_printf(s, "%s%s", s->len ? " " : "",
				       xway_addr_format(&a, buf, sizeof(buf)));
	}
	snprintf(path, sizeof(path), XS_ROOT "/%u/addrs", self_domid);
	if (!xs_put(path, s->str))
		XLOG_WARN("xenstore: cannot write %s: %s", path, g_strerror(errno));
	g_string_free(s, TRUE);
	g_array_free(ips, TRUE);
}

static gboolean publish_listeners(gpointer unused)
{
	GString *s = g_string_new(NULL);
	GHashTableIter it;
	gpointer k, v;
	char path[96], buf[80];

	(void)unused;
	publish_idle = 0;
	g_hash_table_iter_init(&it, xd->listeners);
	while (g_hash_table_iter_next(&it, &k, &v)) {
		struct xwayd_listener *l = v;

		if (xway_addr_is_loopback(&l->addr))
			continue;   /* unreachable from other domains */
		g_string_append_printf(s, "%s%s", s->len ? " " : "",
				       xway_addr_format(&l->addr, buf, sizeof(buf)));
	}
	snprintf(path, sizeof(path), XS_ROOT "/%u/listeners", self_domid);
	if (!xs_put(path, s->str))
		XLOG_WARN("xenstore: cannot write %s: %s", path, g_strerror(errno));
	g_string_free(s, TRUE);
	return G_SOURCE_REMOVE;
}

void xwayd_xen_listeners_changed(void)
{
	/* Coalesce bursts of LISTEN_ADD/DEL into one xenstore write. */
	if (xsh && !publish_idle)
		publish_idle = g_idle_add(publish_listeners, NULL);
}

/* ---- the other domains ----------------------------------------------- */

static void parse_list(const char *text, GArray *out, bool ips_only)
{
	gchar **w = g_strsplit_set(text ? text : "", " \t\n", -1);

	for (int i = 0; w[i] && i < 4096; i++) {
		struct xway_addr a;

		if (!*w[i] || xway_addr_parse(w[i], &a))
			continue;
		if (ips_only)
			g_array_append_vals(out, a.ip, 1);
		else
			g_array_append_val(out, a);
	}
	g_strfreev(w);
}

/* Drop what we remember of a vanished domain's offers. */
static void forget_remote(uint32_t d)
{
	GHashTableIter it;
	gpointer k, v;
	char pre[16];

	if (!remote_seen)
		return;
	snprintf(pre, sizeof(pre), "%u/", d);
	g_hash_table_iter_init(&it, remote_seen);
	while (g_hash_table_iter_next(&it, &k, &v))
		if (g_str_has_prefix(k, pre))
			g_hash_table_iter_remove(&it);
}

/*
 * The shims cache "no listener at this address" while the broker's
 * listener generation stays the same (shim/broker_link.c).  Another
 * domain's listeners appearing (its broker started again, or a listener
 * was added there) must end those entries as a local listener does, or a
 * client that connected while the peer's broker was down stays on TCP.
 * Release: a shim that sees the new generation (acquire load) and then
 * asks the broker finds the new peer view.
 */
static void peer_view_changed(void)
{
	__atomic_store_n(&xd->gen->listener_gen, xd->gen->listener_gen + 1,
			 __ATOMIC_RELEASE);
}

static void rescan(void)
{
	static char *last_view;
	GString *view = g_string_new(NULL);
	unsigned n = 0;
	char **dom = xs.directory(xsh, XBT_NULL, XS_ROOT, &n);
	GArray *before = g_array_new(FALSE, FALSE, sizeof(uint32_t));
	GHashTableIter it;
	gpointer k, v;

	g_hash_table_iter_init(&it, peers);
	while (g_hash_table_iter_next(&it, &k, &v))
		g_array_append_val(before, ((struct xen_peer *)v)->domid);
	g_hash_table_remove_all(peers);
	for (unsigned i = 0; dom && i < n && i < 1024; i++) {
		char path[96], *v;
		guint64 id;
		struct xen_peer *x;

		if (!g_ascii_string_to_unsigned(dom[i], 10, 0, 0x7fef, &id, NULL) ||
		    id == self_domid)
			continue;
		x = g_new0(struct xen_peer, 1);
		x->domid = (uint32_t)id;
		x->addrs = g_array_new(FALSE, FALSE, 16);
		x->listeners = g_array_new(FALSE, FALSE, sizeof(struct xway_addr));
		x->seen = xwayd_now();
		snprintf(path, sizeof(path), XS_ROOT "/%u/instance", x->domid);
		if ((v = xs_get(path))) {
			g_strlcpy(x->instance, v, sizeof(x->instance));
			g_free(v);
		}
		snprintf(path, sizeof(path), XS_ROOT "/%u/addrs", x->domid);
		v = xs_get(path);
		parse_list(v, x->addrs, true);
		g_free(v);
		snprintf(path, sizeof(path), XS_ROOT "/%u/listeners", x->domid);
		v = xs_get(path);
		parse_list(v, x->listeners, false);
		g_string_append_printf(view, "%u %s %s\n", x->domid, x->instance, v ? v : "");
		g_free(v);
		g_hash_table_insert(peers, &x->domid, x);
		/* The link that domain serves to us (xenlink.c). */
		snprintf(path, sizeof(path), XS_ROOT "/%u/links/%u", x->domid, self_domid);
		v = xs_get(path);
		xwayd_xen_link_peer(x->domid, x->instance, v);
		g_free(v);
	}
	free(dom);
	if (g_strcmp0(view->str, last_view)) {
		g_free(last_view);
		last_view = g_strdup(view->str);
		if (xd->gen)
			peer_view_changed();
	}
	g_string_free(view, TRUE);
	/* A domain whose entry went away (dom0 removes it when the domain
	 * is destroyed: xway-xen-setup remove) takes its connections along. */
	for (guint i = 0; i < before->len; i++) {
		uint32_t d = g_array_index(before, uint32_t, i);

		if (!g_hash_table_contains(peers, &d)) {
			XLOG_INFO("Xen domain %u left " XS_ROOT ": resetting its connections", d);
			xwayd_xen_link_gone(d);
			xwayd_vchan_pool_drop(d);
			forget_remote(d);
			xwayd_conn_xen_vanished(d);
		}
	}
	g_array_free(before, TRUE);
}

/* ---- the cross-domain exchange --------------------------------------- */

#define XEN_OFFERS_PER_SCAN 4096

int xwayd_xen_vchan_path(uint32_t dom, uint64_t cookie, char *buf, size_t n)
{
	/* Under our own domain's data/ (writable by us, the vchan server's
	 * side); libxenvchan gives the peer read access to its two nodes. */
	int w = snprintf(buf, n, "/local/domain/%u/data/vchan/%u/x%016llx",
			 self_domid, dom, (unsigned long long)cookie);

	return w > 0 && (size_t)w < n ? 0 : -ENAMETOOLONG;
}

/* The vchan server end's two nodes, as libxenvchan's init_xs_srv writes
 * them: owner us, the peer may read, nobody else. */
int xwayd_xen_vchan_publish(const char *path, uint32_t peer, uint32_t ring_ref,
			    uint32_t port)
{
	struct xs_perm perms[2] = { { self_domid, XS_PERM_NONE }, { peer, XS_PERM_READ } };
	static const char *const names[2] = { "ring-ref", "event-channel" };
	uint32_t vals[2] = { ring_ref, port };
	char node[XWAY_XEN_PATH_MAX + 32], val[16];

	if (!xsh)
		return -ENODEV;
	for (int i = 0; i < 2; i++) {
		snprintf(node, sizeof(node), "%s/%s", path, names[i]);
		snprintf(val, sizeof(val), "%u", vals[i]);
		if (!xs_put(node, val) ||
		    (xs.set_permissions && !xs.set_permissions(xsh, XBT_NULL, node, perms, 2))) {
			int e = errno ? errno : EIO;

			XLOG_WARN("xenstore: cannot write %s: %s", node, g_strerror(e));
			xs.rm(xsh, XBT_NULL, path);
			return -e;
		}
	}
	return 0;
}

void xwayd_xen_vchan_unpublish(const char *path)
{
	if (xsh && path[0])
		xs.rm(xsh, XBT_NULL, path);
}

/* Strict unsigned decimal in [1, max]. */
static int parse_u32(const char *s, uint32_t max, uint32_t *out)
{
	unsigned long long v = 0;

	if (!s || !*s || strlen(s) > 10)
		return -EINVAL;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
		v = v * 10 + (unsigned)(*p - '0');
	}
	if (v == 0 || v > max)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

int xwayd_xen_vchan_read(const char *path, uint32_t *ring_ref, uint32_t *port,
			 const char **why)
{
	char node[XWAY_XEN_PATH_MAX + 32];
	char *v;
	int e;

	if (!xsh)
		return -ENODEV;
	/* Untrusted: the client's domain wrote them. */
	snprintf(node, sizeof(node), "%s/ring-ref", path);
	v = xs_get(node);
	e = parse_u32(v, UINT32_MAX, ring_ref);
	g_free(v);
	if (e) {
		*why = "the peer's ring-ref is missing or not a number";
		return -EPROTO;
	}
	snprintf(node, sizeof(node), "%s/event-channel", path);
	v = xs_get(node);
	e = parse_u32(v, 1u << 17, port);       /* FIFO ABI: 17-bit ports */
	g_free(v);
	if (e) {
		*why = "the peer's event-channel is missing or out of range";
		return -EPROTO;
	}
	return 0;
}

bool xwayd_xen_link_offer(struct xwayd_conn *k, uint32_t ring_ref, uint32_t port)
{
	struct xway_link_msg m = {
		.kind = XWAY_LINK_OFFER, .id = k->xen_id, .ring_ref = ring_ref,
		.port = port, .cookie = k->cookie, .src = k->side[0].addr,
		.dst = k->side[1].addr,
	};

	k->xen_link = xsh && xwayd_xen_link_send(k->xen_dom, true, &m);
	return k->xen_link;
}

int xwayd_xen_publish_offer(struct xwayd_conn *k)
{
	char path[96], a[80], b[80];
	char *val;
	bool ok;

	if (!xsh)
		return -ENODEV;
	if (k->xen_withdraw_asked) {
		struct xway_link_msg m = { .kind = XWAY_LINK_WITHDRAW, .id = k->xen_id };

		/* Where the offer went, or xenstore (read too) if the link
		 * cannot take it now. */
		if (k->xen_link && xwayd_xen_link_send(k->xen_dom, true, &m))
			return 0;
		snprintf(path, sizeof(path), XS_ROOT "/%u/withdraw/%llu", self_domid,
			 (unsigned long long)k->xen_id);
		ok = xs_put(path, "1");
		k->xen_withdraw_xs = ok;
	} else {
		snprintf(path, sizeof(path), XS_ROOT "/%u/offers/%llu", self_domid,
			 (unsigned long long)k->xen_id);
		val = g_strdup_printf("v1 %016llx %s %s %s", (unsigned long long)k->cookie,
				      xway_addr_format(&k->side[0].addr, a, sizeof(a)),
				      xway_addr_format(&k->side[1].addr, b, sizeof(b)),
				      k->xen_path);
		ok = xs_put(path, val);
		g_free(val);
	}
	if (!ok) {
		int e = errno ? errno : EIO;

		XLOG_WARN("xenstore: cannot write %s: %s", path, g_strerror(e));
		return -e;
	}
	return 0;
}

void xwayd_xen_unpublish_offer(const struct xwayd_conn *k)
{
	char path[96];

	if (!xsh)
		return;
	if (!k->xen_link) {
		snprintf(path, sizeof(path), XS_ROOT "/%u/offers/%llu", self_domid,
			 (unsigned long long)k->xen_id);
		xs.rm(xsh, XBT_NULL, path);
		/* The vchan's nodes too (libxenvchan's close_xs_srv, done
		 * here now that the application has no xenstore access):
		 * decided, the peer has read them or never will. */
		xwayd_xen_vchan_unpublish(k->xen_path);
	}
	if (!k->xen_withdraw_xs)
		return;                 /* no withdraw node: one request less */
	snprintf(path, sizeof(path), XS_ROOT "/%u/withdraw/%llu", self_domid,
		 (unsigned long long)k->xen_id);
	xs.rm(xsh, XBT_NULL, path);
}

static gboolean rm_later(gpointer p)
{
	xwayd_xen_rm(p);
	return G_SOURCE_REMOVE;
}

void xwayd_xen_outcome(const struct xwayd_conn *k, bool claimed)
{
	struct xway_link_msg m = { .kind = XWAY_LINK_OUTCOME, .id = k->xen_id,
				   .claimed = claimed };
	char path[96];

	if (!xsh)
		return;
	if (k->xen_link && xwayd_xen_link_send(k->xen_dom, false, &m))
		return;
	snprintf(path, sizeof(path), XS_ROOT "/%u/outcomes/%u/%llu", self_domid,
		 k->xen_dom, (unsigned long long)k->xen_id);
	if (!xs_put(path, claimed ? "claimed" : "withdrawn")) {
		XLOG_WARN("xenstore: cannot write %s: %s (domain %u's client waits "
			  "for its broker's timeout)", path, g_strerror(errno), k->xen_dom);
		return;
	}
	/* A link offer's outcome that could not go back on the link (its
	 * ring full, or the link gone): the client's broker reads outcome
	 * nodes of all its pending offers, and gives up on its own after
	 * 3 x claim timeout + 2 s; no offer node will go away to tell us
	 * when to remove this one, so it goes after that time. */
	if (k->xen_link)
		xwayd_timeout_add_full(3 * xd->cfg.claim_timeout_ms + 2000 + 5000,
				       rm_later, g_strdup(path), g_free);
}

bool xwayd_xen_dom_owns(uint32_t dom, const uint8_t ip[16])
{
	struct xen_peer *x = peers ? g_hash_table_lookup(peers, &dom) : NULL;

	for (guint i = 0; x && i < x->addrs->len; i++)
		if (xway_ip_equal((uint8_t *)x->addrs->data + 16 * i, ip))
			return true;
	return false;
}

/*
 * Parse domain dom's offer text "v1 COOKIE SRC DST PATH" strictly.  PATH
 * must be exactly the one our side would compute for (dom, COOKIE), so a
 * peer cannot point our server at anything else.  0 or -EINVAL + *why.
 */
int xwayd_xen_parse_offer(uint32_t dom, uint32_t self, const char *text,
			  uint64_t *cookie, struct xway_addr *src,
			  struct xway_addr *dst, char *path, size_t pathlen,
			  const char **why)
{
	gchar **w = g_strsplit(text, " ", 7);
	guint64 ck = 0;
	char want[XWAY_XEN_PATH_MAX];
	int e = -EINVAL;

	*why = NULL;
	if (g_strv_length(w) != 5 || strcmp(w[0], "v1")) {
		*why = "not 5 fields starting with v1";
		goto out;
	}
	if (strlen(w[1]) != 16 || !g_ascii_string_to_unsigned(w[1], 16, 1, G_MAXUINT64, &ck, NULL)) {
		*why = "bad cookie";
		goto out;
	}
	if (xway_addr_parse(w[2], src) || xway_addr_parse(w[3], dst) ||
	    src->port == 0 || dst->port == 0 || xway_addr_is_wildcard(dst)) {
		*why = "bad address";
		goto out;
	}
	if ((size_t)snprintf(want, sizeof(want), "/local/domain/%u/data/vchan/%u/x%016llx",
			     dom, self, (unsigned long long)ck) >= sizeof(want) ||
	    strcmp(want, w[4]) || strlen(w[4]) >= pathlen) {
		*why = "vchan path is not the expected one";
		goto out;
	}
	g_strlcpy(path, w[4], pathlen);
	*cookie = ck;
	e = 0;
out:
	g_strfreev(w);
	return e;
}

/* Server side: the offers (and withdraw requests) of every other domain. */
static void scan_remote_offers(void)
{
	GHashTableIter it;
	gpointer k, v;
	GHashTable *present = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	GPtrArray *gone = g_ptr_array_new_with_free_func(g_free);
	unsigned budget = XEN_OFFERS_PER_SCAN;

	g_hash_table_iter_init(&it, peers);
	while (g_hash_table_iter_next(&it, &k, &v)) {
		struct xen_peer *x = v;
		char path[96];
		unsigned n = 0;
		char **ids;

		snprintf(path, sizeof(path), XS_ROOT "/%u/offers", x->domid);
		ids = xs.directory(xsh, XBT_NULL, path, &n);
		for (unsigned i = 0; ids && i < n && budget; i++, budget--) {
			guint64 id;
			char key[48], *val, vpath[XWAY_XEN_PATH_MAX];
			struct xway_addr src, dst;
			uint64_t cookie;
			const char *why;

			if (!g_ascii_string_to_unsigned(ids[i], 10, 1, G_MAXUINT64, &id, NULL))
				continue;
			snprintf(key, sizeof(key), "%u/%llu", x->domid, (unsigned long long)id);
			g_hash_table_add(present, g_strdup(key));
			if (g_hash_table_contains(remote_seen, key))
				continue;
			snprintf(path, sizeof(path), XS_ROOT "/%u/offers/%llu", x->domid,
				 (unsigned long long)id);
			val = xs_get(path);
			if (!val)
				continue;       /* removed meanwhile */
			if (xwayd_xen_parse_offer(x->domid, self_domid, val, &cookie, &src,
						  &dst, vpath, sizeof(vpath), &why)) {
				struct xwayd_conn tmp = { .xen_dom = x->domid, .xen_id = id };

				XLOG_WARN("Xen domain %u: bad offer %llu (%s): refused",
					  x->domid, (unsigned long long)id, why);
				g_hash_table_insert(remote_seen, g_strdup(key), GINT_TO_POINTER(2));
				xwayd_xen_outcome(&tmp, false);
			} else {
				g_hash_table_insert(remote_seen, g_strdup(key), GINT_TO_POINTER(1));
				xwayd_conn_remote_offer(x->domid, id, cookie, &src, &dst, vpath, NULL);
			}
			g_free(val);
		}
		free(ids);
		snprintf(path, sizeof(path), XS_ROOT "/%u/withdraw", x->domid);
		ids = xs.directory(xsh, XBT_NULL, path, &n);
		for (unsigned i = 0; ids && i < n && i < XEN_OFFERS_PER_SCAN; i++) {
			guint64 id;

			if (g_ascii_string_to_unsigned(ids[i], 10, 1, G_MAXUINT64, &id, NULL))
				xwayd_conn_remote_withdraw(x->domid, id, "withdrawn by the client");
		}
		free(ids);
	}
	/* Offers their broker removed: forget them and our outcome. */
	g_hash_table_iter_init(&it, remote_seen);
	while (g_hash_table_iter_next(&it, &k, &v))
		if (!g_hash_table_contains(present, k) && budget)
			g_ptr_array_add(gone, g_strdup(k));
	for (guint i = 0; i < gone->len; i++) {
		const char *key = gone->pdata[i];
		unsigned dom;
		unsigned long long id;
		char path[96];

		if (sscanf(key, "%u/%llu", &dom, &id) == 2) {
			xwayd_conn_remote_withdraw(dom, id, "offer removed by the client's broker");
			snprintf(path, sizeof(path), XS_ROOT "/%u/outcomes/%u/%llu",
				 self_domid, dom, id);
			xs.rm(xsh, XBT_NULL, path);
		}
		g_hash_table_remove(remote_seen, key);
	}
	g_ptr_array_free(gone, TRUE);
	g_hash_table_destroy(present);
}

/* Client side: the decisions on our pending Xen offers. */
static void scan_outcomes(void)
{
	GHashTableIter it;
	gpointer k, v;
	GPtrArray *claimed = g_ptr_array_new(), *withdrawn = g_ptr_array_new();

	g_hash_table_iter_init(&it, xd->offers);
	while (g_hash_table_iter_next(&it, &k, &v)) {
		struct xwayd_conn *c = v;
		char path[96], *val;

		if (!c->xen || c->xen_remote || c->state != XC_PENDING)
			continue;
		snprintf(path, sizeof(path), XS_ROOT "/%u/outcomes/%u/%llu", c->xen_dom,
			 self_domid, (unsigned long long)c->xen_id);
		if (!(val = xs_get(path)))
			continue;
		if (!strcmp(val, "claimed"))
			g_ptr_array_add(claimed, c);
		else if (!strcmp(val, "withdrawn"))
			g_ptr_array_add(withdrawn, c);
		else
			XLOG_WARN("Xen domain %u: bad outcome for offer %llu ignored",
				  c->xen_dom, (unsigned long long)c->xen_id);
		g_free(val);
	}
	for (guint i = 0; i < claimed->len; i++)
		xwayd_conn_xen_decided(claimed->pdata[i], true);
	for (guint i = 0; i < withdrawn->len; i++)
		xwayd_conn_xen_decided(withdrawn->pdata[i], false);
	g_ptr_array_free(claimed, TRUE);
	g_ptr_array_free(withdrawn, TRUE);
}

void xwayd_xen_scan_now(void)
{
	if (!xsh)
		return;
	xwayd_xen_links_drain();
	scan_remote_offers();
}

/* What a watch event on PATH asks us to read again. */
enum { XS_EV_PEERS = 1, XS_EV_OFFERS = 2, XS_EV_OUTCOMES = 4, XS_EV_ALL = 7 };

/*
 * Every write under /local/xway fires the watch of every broker, ours
 * included: a connection makes about five (offer, outcome, their
 * removals), and reading the whole tree again for each made the set-up of
 * a cross-domain connection cost ~100 xenstore requests (3.5 connections/s
 * in the emulated test bed against 72 for plain TCP).  Only what the path
 * can have changed is read again; our own nodes are never read back (we
 * wrote them).  Anything not recognised reads everything.
 */
static unsigned xs_event_scope(const char *path)
{
	const char *p;
	char *end;
	unsigned long d;

	if (!g_str_has_prefix(path, XS_ROOT "/"))
		return XS_EV_ALL;               /* the root itself, or foreign */
	p = path + strlen(XS_ROOT "/");
	d = strtoul(p, &end, 10);
	if (end == p)
		return XS_EV_ALL;
	if (!*end)
		return XS_EV_ALL;               /* a domain entry came or went */
	if (*end != '/')
		return XS_EV_ALL;
	p = end + 1;
	if (d == self_domid)
		return 0;                       /* our own writes */
	if (!strcmp(p, "instance") || !strcmp(p, "addrs") || !strcmp(p, "listeners") ||
	    g_str_has_prefix(p, "links"))
		return XS_EV_PEERS;
	if (g_str_has_prefix(p, "offers") || g_str_has_prefix(p, "withdraw"))
		return XS_EV_OFFERS;
	if (g_str_has_prefix(p, "outcomes"))
		return XS_EV_OUTCOMES;
	return XS_EV_ALL;
}

static gboolean on_xs_event(gint fd, GIOCondition cond, gpointer unused)
{
	char **ev;
	unsigned scope = 0;

	(void)fd;
	(void)cond;
	(void)unused;
	/* Drain every pending event (bounded), then read once what they
	 * may have changed. */
	for (int i = 0; i < 1024 && (ev = xs.check_watch(xsh)); i++) {
		scope |= xs_event_scope(ev[XS_WATCH_PATH]);
		free(ev);
	}
	if (scope & XS_EV_PEERS)
		rescan();
	if (scope & (XS_EV_PEERS | XS_EV_OFFERS))
		scan_remote_offers();
	if (scope & (XS_EV_PEERS | XS_EV_OUTCOMES))
		scan_outcomes();
	return G_SOURCE_CONTINUE;
}

/* ---- scale and restart ------------------------------------------------ */

/*
 * Grant pages the domain's gntalloc driver lets user space share, all
 * processes together: its module parameter `limit` defaults to 1024 pages,
 * which a few Xen channels exhaust (each shares its rings' pages plus one
 * control page).  Raised, never lowered; a failure only costs scale (the
 * shim then falls back to small rings, then to TCP, with a reason).
 */
#define XEN_GNTALLOC_PARAM "/sys/module/xen_gntalloc/parameters/limit"
#define XEN_GNTALLOC_LIMIT 65536u        /* pages: 256 MiB of shared rings */

static void raise_gntalloc_limit(void)
{
	char *v = NULL;
	guint64 cur = 0;
	int fd;

	if (!g_file_get_contents(XEN_GNTALLOC_PARAM, &v, NULL, NULL) ||
	    !g_ascii_string_to_unsigned(g_strstrip(v), 10, 0, G_MAXUINT32, &cur, NULL)) {
		XLOG_INFO("xen: %s unreadable (xen-gntalloc not loaded?): grant limit unchanged",
			  XEN_GNTALLOC_PARAM);
		g_free(v);
		return;
	}
	g_free(v);
	if (cur >= XEN_GNTALLOC_LIMIT)
		return;
	/* A sysfs attribute: written in place, not replaced by a file. */
	v = g_strdup_printf("%u\n", XEN_GNTALLOC_LIMIT);
	fd = open(XEN_GNTALLOC_PARAM, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, v, strlen(v)) != (ssize_t)strlen(v)) {
		XLOG_WARN("xen: cannot raise the gntalloc limit from %llu pages: %s "
			  "(about %llu concurrent Xen channels)", (unsigned long long)cur,
			  g_strerror(errno), (unsigned long long)cur / 33);
	} else {
		XLOG_INFO("xen: gntalloc limit raised from %llu to %u pages",
			  (unsigned long long)cur, XEN_GNTALLOC_LIMIT);
	}
	if (fd >= 0)
		close(fd);
	g_free(v);
}

/*
 * Collect the vchan nodes of ended connections.  libxenvchan's server end
 * (the connecting client's shim) writes <path>/{ring-ref,event-channel}
 * under /local/domain/<self>/data/vchan/<peer>/x<cookie> and never removes
 * them: three nodes per connection against this domain's xenstore quota
 * (oxenstored: 1000 nodes), so a churn of a few hundred connections
 * exhausted it and every later set-up failed.  A node is ours when named
 * x<16 hex digits>; it is removed once no live connection has had its
 * cookie for XEN_GC_IDLE_S (a set-up between the shim's server_init and its
 * OFFER reaching us is not yet live; the shim waits at most a few seconds
 * for that OFFER's answer, then closes its end).
 *
 * A live connection needs its nodes only until the server's shim has read
 * them, right after its broker's CLAIMED reply, inside the same accept();
 * keeping them for its whole life capped the concurrent connections at
 * about a third of the quota (~320).  So an accelerated connection's nodes
 * go once its offer is older than our give-up time (3 x claim timeout +
 * 2 s, 8 s by default): the claim was decided by then, and a server shim
 * stalled that long between its claim and its client_init already splits
 * the decision (the documented v1 risk, docs/XEN.md §3).  What is left is
 * three nodes per connection set up in the last ~10 s: a domain setting up
 * more than ~30 connections/s for long would still reach the default quota
 * (a notice from the shim once the peer has mapped would remove them at
 * once; it needs a new REPORT kind).
 */
#define XEN_GC_PERIOD_S 2
#define XEN_GC_IDLE_S   10
#define XEN_GC_MAX      4096            /* nodes looked at per pass */

/* 0: keep the nodes of cookie; 1: they may go now; 2: suspect (not live). */
static int gc_verdict(uint64_t cookie, gint64 now_us)
{
	const struct xwayd_conn *k = g_hash_table_lookup(xd->live, &cookie);
	gint64 grace_us = (3 * (gint64)xd->cfg.claim_timeout_ms + 2000) * 1000;

	if (!k)
		return 2;
	return k->xen && !k->xen_remote && k->state == XC_ACCELERATED &&
	       now_us - k->offered_us > grace_us;
}

static void gc_vchans(void)
{
	GHashTable *now = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	gint64 now_us = xwayd_mono_us();   /* offered_us is coarse too */
	char base[96];
	unsigned ndom = 0, budget = XEN_GC_MAX, removed = 0;
	char **doms;

	snprintf(base, sizeof(base), "/local/domain/%u/data/vchan", self_domid);
	doms = xs.directory(xsh, XBT_NULL, base, &ndom);
	for (unsigned i = 0; doms && i < ndom && budget; i++) {
		char path[160];
		unsigned n = 0;
		char **names;

		snprintf(path, sizeof(path), "%s/%s", base, doms[i]);
		names = xs.directory(xsh, XBT_NULL, path, &n);
		for (unsigned j = 0; names && j < n && budget; j++, budget--) {
			guint64 cookie;
			char key[64];
			gpointer seen;
			int verdict;

			if (g_str_has_prefix(names[j], "link-")) {
				guint64 d;

				/* A broker link of ours that is not the
				 * current one (an earlier instance's). */
				if (g_ascii_string_to_unsigned(doms[i], 10, 0, 0x7fef, &d, NULL) &&
				    !xwayd_xen_link_current((uint32_t)d, names[j])) {
					snprintf(path, sizeof(path), "%s/%s/%s", base, doms[i],
						 names[j]);
					if (xs.rm(xsh, XBT_NULL, path))
						removed++;
				}
				continue;
			}
			if (names[j][0] != 'x' || strlen(names[j]) != 17 ||
			    !g_ascii_string_to_unsigned(names[j] + 1, 16, 1, G_MAXUINT64,
							&cookie, NULL) ||
			    !(verdict = gc_verdict(cookie, now_us)))
				continue;
			snprintf(key, sizeof(key), "%s/%s", doms[i], names[j]);
			/* Seconds of monotonic time when first seen unused. */
			seen = gc_suspects ? g_hash_table_lookup(gc_suspects, key) : NULL;
			if (!seen)
				seen = GINT_TO_POINTER((gint)(now_us / G_USEC_PER_SEC) | 1);
			if (verdict == 1 ||
			    now_us / G_USEC_PER_SEC - GPOINTER_TO_INT(seen) >= XEN_GC_IDLE_S) {
				snprintf(path, sizeof(path), "%s/%s", base, key);
				if (xs.rm(xsh, XBT_NULL, path))
					removed++;
			} else {
				g_hash_table_insert(now, g_strdup(key), seen);
			}
		}
		free(names);
	}
	free(doms);
	if (gc_suspects)
		g_hash_table_destroy(gc_suspects);
	gc_suspects = now;
	if (removed)
		XLOG_DEBUG("xen: removed the vchan nodes of %u connection(s)", removed);
}

static gboolean on_gc(gpointer unused)
{
	static unsigned ticks;

	(void)unused;
	if (!xsh)
		return G_SOURCE_CONTINUE;
	gc_vchans();
	xwayd_xen_link_tick();
	/* The domain list again every 10 s, watch or not: xenstored fires a
	 * watch only to domains that may read the node, and once a destroyed
	 * domain is released its nodes' permissions naming it are void, so
	 * the removal of its entry can reach us without an event.  A rescan
	 * is three reads per peer. */
	if (++ticks % (10 / XEN_GC_PERIOD_S) == 0)
		rescan();
	return G_SOURCE_CONTINUE;
}

/*
 * A broker that starts again (restart, crash) finds what its previous
 * instance left in xenstore.  Offer ids restart with the process, so a new
 * offer could reuse the id of an old one whose outcome the peer has not
 * removed yet and be "decided" by it: ids start above the wall clock in
 * microseconds (above any earlier instance's, barring a clock set back).
 * The previous instance's own pending offers and withdraw requests lost
 * their clients with it: removed (the peer's broker withdraws them).  Our
 * outcomes for offers that still exist are adopted as seen, so the peer's
 * removal of the offer removes them as usual, and the offer is not decided
 * twice; outcomes for offers that are gone are removed.
 */
static void adopt_previous_state(void)
{
	GHashTableIter it;
	gpointer k, v;
	char path[96];
	guint64 base = (guint64)g_get_real_time();

	if (xd->next_offer_id < base)
		xd->next_offer_id = base;
	snprintf(path, sizeof(path), XS_ROOT "/%u/offers", self_domid);
	xs.rm(xsh, XBT_NULL, path);
	snprintf(path, sizeof(path), XS_ROOT "/%u/withdraw", self_domid);
	xs.rm(xsh, XBT_NULL, path);
	g_hash_table_iter_init(&it, peers);
	while (g_hash_table_iter_next(&it, &k, &v)) {
		struct xen_peer *x = v;
		unsigned n = 0;
		char **ids;

		snprintf(path, sizeof(path), XS_ROOT "/%u/outcomes/%u", self_domid, x->domid);
		ids = xs.directory(xsh, XBT_NULL, path, &n);
		for (unsigned i = 0; ids && i < n && i < XEN_OFFERS_PER_SCAN; i++) {
			char opath[160], key[48], *val;
			guint64 id;

			if (!g_ascii_string_to_unsigned(ids[i], 10, 1, G_MAXUINT64, &id, NULL))
				continue;
			snprintf(opath, sizeof(opath), XS_ROOT "/%u/offers/%llu", x->domid,
				 (unsigned long long)id);
			if ((val = xs_get(opath))) {
				snprintf(key, sizeof(key), "%u/%llu", x->domid,
					 (unsigned long long)id);
				g_hash_table_insert(remote_seen, g_strdup(key), GINT_TO_POINTER(1));
				g_free(val);
			} else {
				snprintf(opath, sizeof(opath), "%s/%s", path, ids[i]);
				xs.rm(xsh, XBT_NULL, opath);
			}
		}
		free(ids);
	}
}

int xwayd_xen_start(char **err)
{
	char path[96], inst[24], *v;
	int e;

	if ((e = load_lib(err)))
		return e;
	xsh = xs.open(0);
	if (!xsh) {
		*err = g_strdup_printf("cannot open xenstore: %s (not a Xen domain, or "
				       "xenstored/xenbus unavailable)", g_strerror(errno));
		return -ENODEV;
	}
	v = xs_get("domid");
	if (!v || !*v) {
		*err = g_strdup("xenstore has no 'domid' for this domain");
		g_free(v);
		goto fail;
	}
	self_domid = (uint32_t)strtoul(v, NULL, 10);
	g_free(v);
	snprintf(path, sizeof(path), XS_ROOT "/%u/instance", self_domid);
	snprintf(inst, sizeof(inst), "%016llx", (unsigned long long)xd->instance);
	if (!xs_put(path, inst)) {
		*err = g_strdup_printf("cannot write %s: %s (has dom0 run "
				       "'xway-xen-setup add %u'?)", path, g_strerror(errno),
				       self_domid);
		goto fail;
	}
	peers = g_hash_table_new_full(g_int_hash, g_int_equal, NULL, peer_free);
	remote_seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	/* An earlier instance's link advertisements name links that died
	 * with it. */
	snprintf(path, sizeof(path), XS_ROOT "/%u/links", self_domid);
	xs.rm(xsh, XBT_NULL, path);
	xwayd_xen_link_init(self_domid, xd->cfg.xen_link);
	if (!xs.watch(xsh, XS_ROOT, "xway")) {
		*err = g_strdup_printf("cannot watch " XS_ROOT ": %s", g_strerror(errno));
		goto fail;
	}
	xs_watch_src = xwayd_fd_watch(xs.fileno(xsh), G_IO_IN, on_xs_event, NULL);
	publish_addrs();
	publish_listeners(NULL);
	rescan();
	adopt_previous_state();
	raise_gntalloc_limit();
	gc_src = xwayd_timeout_add(XEN_GC_PERIOD_S * 1000, on_gc, NULL);
	XLOG_INFO("xen mode: domain %u, %u other domain(s) in " XS_ROOT, self_domid,
		  g_hash_table_size(peers));
	return 0;
fail:
	xs.close(xsh);
	xsh = NULL;
	if (peers)
		g_hash_table_destroy(peers);
	peers = NULL;
	if (remote_seen)
		g_hash_table_destroy(remote_seen);
	remote_seen = NULL;
	return -EIO;
}

void xwayd_xen_stop(void)
{
	if (!xsh)
		return;
	if (xs_watch_src)
		g_source_remove(xs_watch_src);
	if (publish_idle)
		g_source_remove(publish_idle);
	if (gc_src)
		xwayd_timeout_remove(gc_src);
	xs_watch_src = publish_idle = gc_src = 0;
	xwayd_xen_link_stop();
	xwayd_vchan_pool_stop();
	if (gc_suspects)
		g_hash_table_destroy(gc_suspects);
	gc_suspects = NULL;
	/* Our entry says "gone" by an empty instance; dom0 removes the dir. */
	{
		char path[96];

		snprintf(path, sizeof(path), XS_ROOT "/%u/instance", self_domid);
		xs_put(path, "");
	}
	xs.close(xsh);
	xsh = NULL;
	g_hash_table_destroy(peers);
	peers = NULL;
	g_hash_table_destroy(remote_seen);
	remote_seen = NULL;
}

bool xwayd_xen_active(void)
{
	return xsh != NULL;
}

uint32_t xwayd_xen_lookup(const struct xway_addr *dst)
{
	GHashTableIter it;
	gpointer k, v;

	if (!xsh)
		return UINT32_MAX;
	g_hash_table_iter_init(&it, peers);
	while (g_hash_table_iter_next(&it, &k, &v)) {
		struct xen_peer *x = v;
		bool owns = false;

		if (!x->instance[0])
			continue;       /* its broker stopped: nobody would decide */
		for (guint i = 0; i < x->addrs->len && !owns; i++)
			owns = xway_ip_equal((uint8_t *)x->addrs->data + 16 * i, dst->ip);
		if (!owns)
			continue;
		for (guint i = 0; i < x->listeners->len; i++) {
			const struct xway_addr *l = &g_array_index(x->listeners, struct xway_addr, i);

			if (l->port == dst->port &&
			    (xway_ip_equal(l->ip, dst->ip) || xway_addr_is_wildcard(l)))
				return x->domid;
		}
	}
	return UINT32_MAX;
}

void xwayd_xen_peers(GString *o, bool json)
{
	GHashTableIter it;
	gpointer k, v;
	bool first = true;
	char buf[80];

	if (!xsh)
		return;
	g_hash_table_iter_init(&it, peers);
	while (g_hash_table_iter_next(&it, &k, &v)) {
		struct xen_peer *x = v;

		if (json) {
			g_string_append_printf(o, "%s{\"domid\":%u,\"instance\":\"%s\",\"addrs\":[",
					       first ? "" : ",", x->domid, x->instance);
			for (guint i = 0; i < x->addrs->len; i++) {
				struct xway_addr a = { .family = AF_INET6 };

				memcpy(a.ip, (uint8_t *)x->addrs->data + 16 * i, 16);
				g_string_append_printf(o, "%s\"%s\"", i ? "," : "",
						       xway_addr_format(&a, buf, sizeof(buf)));
			}
			g_string_append_printf(o, "],\"listeners\":%u", x->listeners->len);
			xwayd_xen_link_show(o, x->domid, true);
			g_string_append(o, "}");
		} else {
			g_string_append_printf(o, "domain %-5u instance %-16s %u address(es), "
					       "%u listener(s)\n", x->domid,
					       x->instance[0] ? x->instance : "(stopped)",
					       x->addrs->len, x->listeners->len);
			xwayd_xen_link_show(o, x->domid, false);
		}
		first = false;
	}
}

uint32_t xwayd_xen_self(void)
{
	return self_domid;
}
