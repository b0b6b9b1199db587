/* SPDX-License-Identifier: MIT */
/*
 * Xen mode, first part: discovery through xenstore.  The broker publishes
 * its domain's addresses and xway listeners under /local/xway/<domid>/
 * (a directory dom0's tools/xen-setup/xway-xen-setup creates, writable by
 * that domain only, readable by the other participants) and watches
 * /local/xway for the other domains' entries, which `xwayctl peers` shows
 * and OFFER uses to tell "that address is a co-resident domain with an xway
 * listener" from "not co-resident".  Cross-domain channels (the control
 * vchan between brokers and the data vchan pools of docs/DESIGN.md §7) are
 * NOT implemented: such offers are declined, and the connection stays TCP.
 *
 * libxenstore is loaded with dlopen so that xwayd runs (in local mode) on
 * hosts without Xen; only the few calls used are declared here.
 */
#include <dlfcn.h>
#include <errno.h>
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

static struct {
	void *lib;
	struct xs_handle *(*open)(unsigned long flags);
	void (*close)(struct xs_handle *h);
	void *(*read)(struct xs_handle *h, uint32_t t, const char *path, unsigned *len);
	bool (*write)(struct xs_handle *h, uint32_t t, const char *path,
		      const void *data, unsigned len);
	char **(*directory)(struct xs_handle *h, uint32_t t, const char *path, unsigned *num);
	bool (*watch)(struct xs_handle *h, const char *path, const char *token);
	int (*fileno)(struct xs_handle *h);
	char **(*check_watch)(struct xs_handle *h);
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
static guint xs_watch_src, publish_idle;

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
	SYM(fileno, "xs_fileno");
	SYM(check_watch, "xs_check_watch");
#undef SYM
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

static void rescan(void)
{
	unsigned n = 0;
	char **dom = xs.directory(xsh, XBT_NULL, XS_ROOT, &n);

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
		g_free(v);
		g_hash_table_insert(peers, &x->domid, x);
	}
	free(dom);
}

static gboolean on_xs_event(gint fd, GIOCondition cond, gpointer unused)
{
	char **ev;
	bool changed = false;

	(void)fd;
	(void)cond;
	(void)unused;
	/* Drain every pending event (bounded), then rescan once. */
	for (int i = 0; i < 1024 && (ev = xs.check_watch(xsh)); i++) {
		changed = true;
		free(ev);
	}
	if (changed)
		rescan();
	return G_SOURCE_CONTINUE;
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
	if (!xs.watch(xsh, XS_ROOT, "xway")) {
		*err = g_strdup_printf("cannot watch " XS_ROOT ": %s", g_strerror(errno));
		goto fail;
	}
	xs_watch_src = g_unix_fd_add(xs.fileno(xsh), G_IO_IN, on_xs_event, NULL);
	publish_addrs();
	publish_listeners(NULL);
	rescan();
	XLOG_INFO("xen mode: domain %u, %u other domain(s) in " XS_ROOT, self_domid,
		  g_hash_table_size(peers));
	return 0;
fail:
	xs.close(xsh);
	xsh = NULL;
	if (peers)
		g_hash_table_destroy(peers);
	peers = NULL;
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
	xs_watch_src = publish_idle = 0;
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
			g_string_append_printf(o, "],\"listeners\":%u}", x->listeners->len);
		} else {
			g_string_append_printf(o, "domain %-5u instance %-16s %u address(es), "
					       "%u listener(s)\n", x->domid,
					       x->instance[0] ? x->instance : "(stopped)",
					       x->addrs->len, x->listeners->len);
		}
		first = false;
	}
}

uint32_t xwayd_xen_self(void)
{
	return self_domid;
}
