/* SPDX-License-Identifier: MIT */
/*
 * Listener registrations that outlive a restart of the broker.
 *
 * A registration lives as long as the registering shim's broker link, so a
 * restart (systemctl restart, an upgrade, a crash) forgets every listener.
 * A shim registers again only at its next accept() (it cannot notice the
 * restart while it sleeps in accept, poll or epoll_wait), so the first
 * connections after a restart found "no listener" and stayed on TCP; across
 * Xen domains the peer's broker also had to see the listener published
 * again (workload 75).  So the directory is kept in a file beside the
 * socket (<socket>.listeners, rewritten when the set of listeners changes,
 * atomically by rename), and a starting broker restores each entry whose
 * socket (by inode, at the same address) still listens in its own network
 * namespace: the process that registered it holds it, so it runs the shim
 * and will claim.  A restored entry has no owning client; it goes when a
 * live registrant takes over (the shim's next accept), when that user
 * closes the listener (LISTEN_DEL over the new link), or when a check
 * every XWAYD_PERSIST_CHECK_S seconds finds its sockets no longer listening.
 * Listeners of other namespaces are not restored (the broker cannot list
 * their sockets): they come back at their next accept, as before.  Known
 * limit: a socket whose shimmed registrant exec'd an image without the
 * shim (keeping the socket) and that still listens is restored too; its
 * clients then wait up to the claim timeout before TCP when they speak
 * first (before the restart that registration ended with the link).
 *
 * The file is written by root in the broker's runtime directory; it is still
 * parsed strictly (bounded, every field checked) and a bad line is logged
 * and skipped, never trusted beyond what the kernel confirms.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "xwayd.h"

#define XWAYD_PERSIST_CHECK_S  2
#define XWAYD_PERSIST_MAX_SIZE (1024 * 1024)
#define XWAYD_PERSIST_HEADER   "xway-listeners 1"

static guint save_idle, check_timer;
static char *last_saved;
static bool stopped;

static char *state_path(void)
{
	return g_strconcat(xd->cfg.socket_path, ".listeners", NULL);
}

/* One line per listener of our own namespace:
 * FAMILY IP(32 hex, v4 mapped) PORT UID V6ONLY INODE[,INODE...] */
static GString *serialize(void)
{
	GString *o = g_string_new(XWAYD_PERSIST_HEADER "\n");
	GHashTableIter it;
	gpointer k, v;

	g_hash_table_iter_init(&it, xd->listeners);
	while (g_hash_table_iter_next(&it, &k, &v)) {
		const struct xwayd_listener *l = v;

		if (l->netns != xd->netns || !l->inodes->len)
			continue;
		g_string_append_printf(o, "%u ", (unsigned)l->addr.family);
		for (int i = 0; i < 16; i++)
			g_string_append_printf(o, "%02x", l->addr.ip[i]);
		g_string_append_printf(o, " %u %u %d ", (unsigned)ntohs(l->addr.port),
				       (unsigned)l->uid, l->v6only ? 1 : 0);
		for (guint i = 0; i < l->inodes->len; i++)
			g_string_append_printf(o, "%s%" PRIu64, i ? "," : "",
					       g_array_index(l->inodes, uint64_t, i));
		g_string_append_c(o, '\n');
	}
	return o;
}

static void save_now(void)
{
	GString *o = serialize();
	char *path, *tmp;
	int fd;
	bool ok;

	if (!g_strcmp0(o->str, last_saved)) {
		g_string_free(o, TRUE);
		return;
	}
	path = state_path();
	tmp = g_strconcat(path, ".tmp", NULL);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	ok = fd >= 0 && write(fd, o->str, o->len) == (ssize_t)o->len;
	if (fd >= 0 && close(fd) < 0)
		ok = false;
	if (ok && rename(tmp, path) < 0)
		ok = false;
	if (ok) {
		g_free(last_saved);
		last_saved = g_string_free(o, FALSE);
	} else {
		/* Only the next restart is worse off: new connections to
		 * listeners that outlive it wait for their next accept. */
		XLOG_WARN("cannot write %s: %s", path, g_strerror(errno));
		unlink(tmp);
		g_string_free(o, TRUE);
	}
	g_free(tmp);
	g_free(path);
}

static gboolean save_cb(gpointer unused)
{
	(void)unused;
	save_idle = 0;
	save_now();
	return G_SOURCE_REMOVE;
}

void xwayd_persist_changed(void)
{
	/* Coalesced: a burst of registrations (forked workers) is one write. */
	if (!save_idle && !stopped && xd->loop)
		save_idle = g_idle_add(save_cb, NULL);
}

/* Shutdown: write what is pending, then keep the file as it is while the
 * clients are torn down (their listeners outlive us). */
void xwayd_persist_stop(void)
{
	if (save_idle) {
		g_source_remove(save_idle);
		save_idle = 0;
		save_now();
	}
	stopped = true;
	if (check_timer)
		xwayd_timeout_remove(check_timer);
	check_timer = 0;
	g_free(last_saved);
	last_saved = NULL;
}

static gboolean check_cb(gpointer unused)
{
	GArray *listening;
	int e;

	(void)unused;
	listening = xwayd_tcp_listening(&e);
	if (!listening)
		return G_SOURCE_CONTINUE;       /* try again later */
	if (xwayd_dir_check_restored(listening) == 0) {
		g_array_free(listening, TRUE);
		check_timer = 0;
		return G_SOURCE_REMOVE;
	}
	g_array_free(listening, TRUE);
	return G_SOURCE_CONTINUE;
}

/* Parse the first five fields of a line (the inode list is split off
 * before); false (and *why) if they are malformed. */
static bool parse_line(char *line, struct xway_addr *a, uid_t *uid, bool *v6only,
		       const char **why)
{
	char *f[6], *save = NULL, *tok;
	unsigned nf = 0;
	guint64 x;

	for (tok = strtok_r(line, " ", &save); tok && nf < 6; tok = strtok_r(NULL, " ", &save))
		f[nf++] = tok;
	if (nf != 5 || tok) {
		*why = "expected 5 fields";
		return false;
	}
	memset(a, 0, sizeof(*a));
	if (!g_ascii_string_to_unsigned(f[0], 10, 0, 65535, &x, NULL) ||
	    (x != AF_INET && x != AF_INET6)) {
		*why = "bad family";
		return false;
	}
	a->family = (uint16_t)x;
	if (strlen(f[1]) != 32) {
		*why = "bad address";
		return false;
	}
	for (int i = 0; i < 16; i++) {
		char hx[3] = { f[1][2 * i], f[1][2 * i + 1], 0 };

		if (!g_ascii_isxdigit(hx[0]) || !g_ascii_isxdigit(hx[1])) {
			*why = "bad address";
			return false;
		}
		a->ip[i] = (uint8_t)strtoul(hx, NULL, 16);
	}
	if (!g_ascii_string_to_unsigned(f[2], 10, 1, 65535, &x, NULL)) {
		*why = "bad port";
		return false;
	}
	a->port = htons((uint16_t)x);
	if (!g_ascii_string_to_unsigned(f[3], 10, 0, UINT32_MAX - 1, &x, NULL)) {
		*why = "bad uid";
		return false;
	}
	*uid = (uid_t)x;
	if (strcmp(f[4], "0") && strcmp(f[4], "1")) {
		*why = "bad v6only";
		return false;
	}
	*v6only = f[4][0] == '1';
	return true;
}

void xwayd_persist_restore(void)
{
	char *path = state_path(), *text = NULL;
	GArray *listening = NULL;
	unsigned restored = 0, lineno = 0;
	struct stat st;
	GError *err = NULL;
	char **lines;
	int e;

	if (stat(path, &st) < 0) {
		g_free(path);
		return;                 /* first start */
	}
	if (!S_ISREG(st.st_mode) || st.st_size > XWAYD_PERSIST_MAX_SIZE) {
		XLOG_WARN("%s: not a regular file of at most %d bytes: ignored",
			  path, XWAYD_PERSIST_MAX_SIZE);
		g_free(path);
		return;
	}
	if (!g_file_get_contents(path, &text, NULL, &err)) {
		XLOG_WARN("%s: %s: listeners not restored", path, err->message);
		g_error_free(err);
		g_free(path);
		return;
	}
	lines = g_strsplit(text, "\n", 4097);
	g_free(text);
	if (!lines[0] || strcmp(lines[0], XWAYD_PERSIST_HEADER)) {
		XLOG_WARN("%s: unknown format: listeners not restored", path);
		goto out;
	}
	if (!lines[1] || !lines[1][0])
		goto out;               /* none */
	listening = xwayd_tcp_listening(&e);
	if (!listening) {
		XLOG_WARN("cannot list the listening sockets: %s: listeners not restored",
			  g_strerror(-e));
		goto out;
	}
	for (lineno = 1; lines[lineno] && lineno <= 4096; lineno++) {
		uint64_t inodes[XWAYD_LISTENER_INODES], live[XWAYD_LISTENER_INODES];
		char *line = lines[lineno], *list, *tok, *save = NULL;
		unsigned n = 0, nlive = 0;
		struct xway_addr a;
		const char *why = NULL;
		bool v6only, bad = false;
		uid_t uid;

		if (!line[0])
			continue;
		/* The inode list is the last field: split it off first. */
		list = strrchr(line, ' ');
		if (!list) {
			XLOG_WARN("%s line %u: expected 6 fields: ignored", path, lineno + 1);
			continue;
		}
		*list++ = 0;
		if (!parse_line(line, &a, &uid, &v6only, &why)) {
			XLOG_WARN("%s line %u: %s: ignored", path, lineno + 1, why);
			continue;
		}
		for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
			guint64 x;

			if (n == XWAYD_LISTENER_INODES ||
			    !g_ascii_string_to_unsigned(tok, 10, 1, UINT64_MAX, &x, NULL)) {
				bad = true;
				break;
			}
			inodes[n++] = x;
		}
		if (bad || !n) {
			XLOG_WARN("%s line %u: bad inode list: ignored", path, lineno + 1);
			continue;
		}
		/* Only sockets the kernel shows listening at that address. */
		for (unsigned i = 0; i < n; i++)
			for (guint j = 0; j < listening->len; j++) {
				const struct xwayd_tcp_listening *t =
					&g_array_index(listening, struct xwayd_tcp_listening, j);

				if (t->inode == inodes[i] && t->addr.port == a.port &&
				    xway_ip_equal(t->addr.ip, a.ip)) {
					live[nlive++] = inodes[i];
					break;
				}
			}
		if (nlive && xwayd_dir_restore(&a, xd->netns, uid, v6only, live, nlive))
			restored++;
	}
	if (restored) {
		XLOG_INFO("restored %u listener(s) of the previous instance (%s)",
			  restored, path);
		xwayd_gen_bump();
		check_timer = xwayd_timeout_add(XWAYD_PERSIST_CHECK_S * 1000, check_cb, NULL);
	}
out:
	if (listening)
		g_array_free(listening, TRUE);
	g_strfreev(lines);
	g_free(path);
}
