/* SPDX-License-Identifier: MIT */
/*
 * The listener directory: which listening TCP sockets of shimmed processes
 * exist, in which network namespace, registered by which broker clients
 * (refcounted per client: forked workers share one listener), and the
 * co-residency lookup an OFFER needs.  Wildcard listeners are resolved
 * against the local addresses of their namespace, read from
 * /proc/<registrant pid>/net/{fib_trie,if_inet6} and cached for a second.
 * Every change bumps the generation page the shims map read-only.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "xwayd.h"

struct netns_cache {
	gint64 fetched_us;
	GArray *ips;          /* uint8_t[16] each, v4 mapped */
};

#define NETNS_CACHE_US (1000 * 1000)

static void netns_cache_free(gpointer p)
{
	struct netns_cache *nc = p;

	g_array_free(nc->ips, TRUE);
	g_free(nc);
}

static void listener_free(gpointer p)
{
	struct xwayd_listener *l = p;

	g_hash_table_destroy(l->refs);
	g_array_free(l->inodes, TRUE);
	g_free(l);
}

void xwayd_dir_init(void)
{
	xd->listeners = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
					      listener_free);
	xd->netns_addrs = g_hash_table_new_full(g_int64_hash, g_int64_equal,
						g_free, netns_cache_free);
}

void xwayd_gen_bump(void)
{
	/* Release: a shim that sees the new generation (acquire load) and
	 * then asks the broker sees the directory as of this change. */
	__atomic_store_n(&xd->gen->listener_gen, xd->gen->listener_gen + 1,
			 __ATOMIC_RELEASE);
	xwayd_xen_listeners_changed();
	xwayd_persist_changed();
}

static char *listener_key(const struct xway_addr *a, xwayd_netns ns)
{
	char buf[80];

	return g_strdup_printf("%016llx|%s", (unsigned long long)ns,
			       xway_addr_format(a, buf, sizeof(buf)));
}

/* ---- namespace addresses ----------------------------------------------- */

static void read_fib_trie(pid_t pid, GArray *ips)
{
	char path[64], line[256], last[INET_ADDRSTRLEN] = "";
	FILE *f;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/net/fib_trie", (int)pid);
	if (!(f = fopen(path, "re")))
		return;
	/* Entries look like "|-- 10.0.0.1" followed by "/32 host LOCAL".
	 * Bounded: a namespace with more than 1M lines is not worth it. */
	while (fgets(line, sizeof(line), f) && n++ < 1000000) {
		char *p = strstr(line, "|-- ");

		if (p) {
			if (sscanf(p + 4, "%15s", last) != 1)
				last[0] = 0;
		} else if (strstr(line, "/32 host LOCAL") && last[0]) {
			uint8_t ip[16] = { [10] = 0xff, [11] = 0xff };

			if (inet_pton(AF_INET, last, ip + 12) == 1)
				g_array_append_vals(ips, ip, 1);
		}
	}
	fclose(f);
}

static void read_if_inet6(pid_t pid, GArray *ips)
{
	char path[64], hex[33];
	FILE *f;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/net/if_inet6", (int)pid);
	if (!(f = fopen(path, "re")))
		return;
	while (fscanf(f, "%32s%*[^\n]", hex) == 1 && n++ < 100000) {
		uint8_t ip[16];
		bool ok = strlen(hex) == 32;

		for (int i = 0; ok && i < 16; i++) {
			unsigned b;

			ok = sscanf(hex + 2 * i, "%2x", &b) == 1;
			ip[i] = (uint8_t)b;
		}
		if (ok)
			g_array_append_vals(ips, ip, 1);
	}
	fclose(f);
}

void xwayd_netns_local_addrs(pid_t pid, GArray *ips)
{
	read_fib_trie(pid, ips);
	read_if_inet6(pid, ips);
}

/* Does namespace ns (pid is a process in it) own address ip? Loopback
 * addresses are owned by every namespace. */
static bool netns_owns(xwayd_netns ns, pid_t pid, const struct xway_addr *a)
{
	struct netns_cache *nc = g_hash_table_lookup(xd->netns_addrs, &ns);
	gint64 now = g_get_monotonic_time();

	if (xway_addr_is_loopback(a))
		return true;
	if (!nc || now - nc->fetched_us > NETNS_CACHE_US) {
		gint64 *k = g_new(gint64, 1);

		if (pid <= 0)
			return false;
		nc = g_new0(struct netns_cache, 1);
		nc->ips = g_array_new(FALSE, FALSE, 16);
		nc->fetched_us = now;
		read_fib_trie(pid, nc->ips);
		read_if_inet6(pid, nc->ips);
		*k = (gint64)ns;
		g_hash_table_replace(xd->netns_addrs, k, nc);
	}
	for (guint i = 0; i < nc->ips->len; i++)
		if (xway_ip_equal((uint8_t *)nc->ips->data + 16 * i, a->ip))
			return true;
	return false;
}

/* ---- LISTEN_ADD / LISTEN_DEL --------------------------------------------- */

/* The reference key of restored records: g_int64_hash wants a pointer to
 * a 64-bit key that lives as long as the table entry. */
static uint64_t restored_id = XWAYD_RESTORED;

/* Remember a registered socket of l (bounded: the oldest goes). */
static void add_inode(struct xwayd_listener *l, uint64_t ino)
{
	for (guint i = 0; i < l->inodes->len; i++)
		if (g_array_index(l->inodes, uint64_t, i) == ino)
			return;
	if (l->inodes->len >= XWAYD_LISTENER_INODES)
		g_array_remove_index(l->inodes, 0);
	g_array_append_val(l->inodes, ino);
}

void xwayd_listen_add(struct xwayd_client *c, const struct xway_req *r, int fd)
{
	const struct xway_listen *b = &r->u.listen;
	struct xwayd_listener *l;
	struct xway_addr name;
	xwayd_netns ns;
	bool listening, v6only = false;
	struct stat st;
	uint64_t ino;
	char *key;
	int dom, e;

	dom = xwayd_sock_check_tcp(fd, &listening);
	if (dom < 0 || !listening) {
		xwayd_close_async(fd);
		if (dom < 0)
			xwayd_send_result(c, XWAY_MSG_RESULT, r->hdr.seq, dom, 0, 0,
					  "LISTEN_ADD: descriptor is not a TCP socket: %s",
					  g_strerror(-dom));
		else
			xwayd_send_result(c, XWAY_MSG_RESULT, r->hdr.seq, -EINVAL, 0, 0,
					  "LISTEN_ADD: socket is not listening");
		return;
	}
	if (dom == AF_INET6) {
		int v = 0;
		socklen_t l6 = sizeof(v);

		if (getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, &l6) == 0)
			v6only = v != 0;
	}
	e = xwayd_sock_addr(fd, false, &name);
	if (!e)
		e = xwayd_sock_netns(fd, c->pid, &ns);
	if (!e && fstat(fd, &st) < 0)
		e = -errno;
	/* The broker's copy must go now: holding it would keep the port
	 * listening after the application closed it. */
	xwayd_close_async(fd);
	if (e) {
		xwayd_send_result(c, XWAY_MSG_RESULT, r->hdr.seq, e, 0, 0,
				  "LISTEN_ADD: cannot inspect the socket");
		return;
	}
	if (!xway_ip_equal(name.ip, b->addr.ip) || name.port != b->addr.port) {
		char a1[64], a2[64];

		xwayd_send_result(c, XWAY_MSG_RESULT, r->hdr.seq, -EINVAL, 0, 0,
				  "LISTEN_ADD: socket is bound to %s, message says %s",
				  xway_addr_format(&name, a1, sizeof(a1)),
				  xway_addr_format(&b->addr, a2, sizeof(a2)));
		return;
	}
	if (c->nlisten >= XWAYD_LISTENERS_MAX) {
		xwayd_send_result(c, XWAY_MSG_RESULT, r->hdr.seq, -ENOBUFS, 0, 0,
				  "LISTEN_ADD: too many listeners on this connection");
		return;
	}
	name.family = (uint16_t)dom;
	key = listener_key(&name, ns);
	l = g_hash_table_lookup(xd->listeners, key);
	if (!l) {
		l = g_new0(struct xwayd_listener, 1);
		l->addr = name;
		l->netns = ns;
		l->uid = c->uid;
		l->since = xwayd_now();
		l->refs = g_hash_table_new(g_int64_hash, g_int64_equal);
		l->inodes = g_array_new(FALSE, FALSE, sizeof(uint64_t));
		g_hash_table_insert(xd->listeners, key, l);
	} else {
		g_free(key);
	}
	/* A live registrant takes over from the previous instance's record. */
	g_hash_table_remove(l->refs, &restored_id);
	ino = (uint64_t)st.st_ino;
	add_inode(l, ino);
	l->v6only = v6only;
	l->pid = c->pid;        /* a live process in l->netns, for /proc */
	{
		gpointer old = g_hash_table_lookup(l->refs, &c->id);

		g_hash_table_replace(l->refs, &c->id,
				     GUINT_TO_POINTER(GPOINTER_TO_UINT(old) + 1));
	}
	c->nlisten++;
	xd->st.listener_adds++;
	xwayd_gen_bump();
	xwayd_send_result(c, XWAY_MSG_RESULT, r->hdr.seq, 0, 0, 0, "listening");
}

/* Drop one reference of client c on listener l (key k); all of them if
 * all.  Returns true if the listener went away. */
static bool listener_unref(struct xwayd_client *c, struct xwayd_listener *l,
			   const char *k, bool all)
{
	guint n = GPOINTER_TO_UINT(g_hash_table_lookup(l->refs, &c->id));

	if (!n)
		return false;
	if (all || n == 1) {
		g_hash_table_remove(l->refs, &c->id);
		c->nlisten -= all ? n : 1;
	} else {
		g_hash_table_replace(l->refs, &c->id, GUINT_TO_POINTER(n - 1));
		c->nlisten--;
	}
	if (g_hash_table_size(l->refs) == 0) {
		g_hash_table_remove(xd->listeners, k);
		return true;
	}
	return false;
}

void xwayd_listen_del(struct xwayd_client *c, const struct xway_req *r, int fd)
{
	struct xway_addr a = r->u.listen.addr;
	GHashTableIter it;
	gpointer k, v;
	bool found = false;

	if (fd >= 0)
		xwayd_close_async(fd);   /* the body names the listener */
	/* The namespace may not be derivable any more (socket closed): drop
	 * this client's reference on the matching address in any namespace. */
	g_hash_table_iter_init(&it, xd->listeners);
	while (g_hash_table_iter_next(&it, &k, &v)) {
		struct xwayd_listener *l = v;

		if (!xway_ip_equal(l->addr.ip, a.ip) || l->addr.port != a.port ||
		    !g_hash_table_contains(l->refs, &c->id))
			continue;
		found = true;
		/* May free l and k: leave the loop right after. */
		listener_unref(c, l, k, false);
		break;
	}
	if (!found) {
		/* A process that registered with the previous instance closes
		 * its listener: the restored record goes (same user, or root). */
		g_hash_table_iter_init(&it, xd->listeners);
		while (g_hash_table_iter_next(&it, &k, &v)) {
			struct xwayd_listener *l = v;

			if (!xway_ip_equal(l->addr.ip, a.ip) || l->addr.port != a.port ||
			    !g_hash_table_contains(l->refs, &restored_id) ||
			    (c->uid != 0 && c->uid != l->uid))
				continue;
			found = true;
			g_hash_table_remove(l->refs, &restored_id);
			if (g_hash_table_size(l->refs) == 0)
				g_hash_table_iter_remove(&it);
			break;
		}
	}
	if (found) {
		xd->st.listener_dels++;
		xwayd_gen_bump();
	}
	xwayd_send_result(c, XWAY_MSG_RESULT, r->hdr.seq, found ? 0 : -ENOENT, 0, 0,
			  found ? "removed" : "LISTEN_DEL: no such listener registered by you");
}

void xwayd_dir_client_gone(struct xwayd_client *c)
{
	GHashTableIter it;
	gpointer k, v;
	bool changed = false;

	g_hash_table_iter_init(&it, xd->listeners);
	while (g_hash_table_iter_next(&it, &k, &v)) {
		struct xwayd_listener *l = v;

		if (!g_hash_table_remove(l->refs, &c->id))
			continue;
		changed = true;
		if (g_hash_table_size(l->refs) == 0)
			g_hash_table_iter_remove(&it);
	}
	c->nlisten = 0;
	if (changed)
		xwayd_gen_bump();
}

/* ---- listeners of the previous instance (persist.c) ---------------------- */

bool xwayd_dir_restore(const struct xway_addr *a, xwayd_netns ns, uid_t uid,
		       bool v6only, const uint64_t *inodes, unsigned n)
{
	char *key = listener_key(a, ns);
	struct xwayd_listener *l;

	if (g_hash_table_lookup(xd->listeners, key)) {
		g_free(key);
		return false;
	}
	l = g_new0(struct xwayd_listener, 1);
	l->addr = *a;
	l->netns = ns;
	l->uid = uid;
	l->v6only = v6only;
	l->pid = getpid();      /* only our own namespace is restored */
	l->since = xwayd_now();
	l->refs = g_hash_table_new(g_int64_hash, g_int64_equal);
	l->inodes = g_array_new(FALSE, FALSE, sizeof(uint64_t));
	for (unsigned i = 0; i < n; i++)
		add_inode(l, inodes[i]);
	g_hash_table_insert(l->refs, &restored_id, GUINT_TO_POINTER(1));
	g_hash_table_insert(xd->listeners, key, l);
	return true;
}

/* Is one of l's sockets still listening on l's address? */
static bool still_listening(const struct xwayd_listener *l, const GArray *listening)
{
	for (guint i = 0; i < listening->len; i++) {
		const struct xwayd_tcp_listening *t =
			&g_array_index(listening, struct xwayd_tcp_listening, i);

		if (t->addr.port != l->addr.port || !xway_ip_equal(t->addr.ip, l->addr.ip))
			continue;
		for (guint j = 0; j < l->inodes->len; j++)
			if (g_array_index(l->inodes, uint64_t, j) == t->inode)
				return true;
	}
	return false;
}

unsigned xwayd_dir_check_restored(const GArray *listening)
{
	GHashTableIter it;
	gpointer k, v;
	unsigned left = 0;
	bool changed = false;

	g_hash_table_iter_init(&it, xd->listeners);
	while (g_hash_table_iter_next(&it, &k, &v)) {
		struct xwayd_listener *l = v;

		if (!g_hash_table_contains(l->refs, &restored_id))
			continue;
		if (still_listening(l, listening)) {
			left++;
			continue;
		}
		g_hash_table_remove(l->refs, &restored_id);
		changed = true;
		if (g_hash_table_size(l->refs) == 0)
			g_hash_table_iter_remove(&it);
	}
	if (changed)
		xwayd_gen_bump();
	return left;
}

/* ---- co-residency -------------------------------------------------------- */

static bool ip_matches(const struct xwayd_listener *l, const struct xway_addr *dst)
{
	if (xway_ip_equal(l->addr.ip, dst->ip))
		return true;
	if (!xway_addr_is_wildcard(&l->addr))
		return false;
	if (xway_addr_is_v4(&l->addr))         /* 0.0.0.0: IPv4 only */
		return xway_addr_is_v4(dst);
	return !(l->v6only && xway_addr_is_v4(dst));   /* [::] */
}

struct xwayd_listener *xwayd_dir_lookup(const struct xway_addr *dst,
					xwayd_netns from, pid_t from_pid,
					uint32_t *reason)
{
	struct xwayd_listener *other = NULL;
	GHashTableIter it;
	gpointer k, v;
	bool local_somewhere;

	g_hash_table_iter_init(&it, xd->listeners);
	while (g_hash_table_iter_next(&it, &k, &v)) {
		struct xwayd_listener *l = v;

		if (l->addr.port != dst->port || !ip_matches(l, dst))
			continue;
		if (l->netns == from) {
			/* The kernel delivers within the namespace when the
			 * address is the listener's own or one of the ns's. */
			if (!xway_addr_is_wildcard(&l->addr) ||
			    netns_owns(from, from_pid, dst))
				return l;
			continue;
		}
		/* Another namespace of this host: never for loopback, and not
		 * when the client's own namespace owns the address. */
		if (!other && !xway_addr_is_loopback(dst) &&
		    !netns_owns(from, from_pid, dst) &&
		    netns_owns(l->netns, l->pid, dst))
			other = l;
	}
	if (other)
		return other;
	local_somewhere = netns_owns(from, from_pid, dst);
	g_hash_table_iter_init(&it, xd->listeners);
	while (!local_somewhere && g_hash_table_iter_next(&it, &k, &v)) {
		struct xwayd_listener *l = v;

		local_somewhere = netns_owns(l->netns, l->pid, dst);
	}
	*reason = local_somewhere ? XWAY_R_NO_LISTENER : XWAY_R_NOT_CORESIDENT;
	return NULL;
}
