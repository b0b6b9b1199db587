/* SPDX-License-Identifier: MIT */
/*
 * xwayd: the xway broker daemon (local mode; Xen mode discovery in xen.c).  It owns the AF_UNIX
 * SOCK_SEQPACKET socket every shim (and xwayctl) connects to, reads one
 * message per packet from each client without ever blocking on one (its
 * socket is nonblocking, its replies go through a bounded queue), parses
 * every packet with the pure xway_msg_parse() first, and dispatches to the
 * listener directory (dir.c), the offer/claim logic (conn.c) or the query
 * output (query.c).  Readiness and shutdown are announced with sd_notify.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <glib-unix.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "xwayd.h"

struct xwayd *xd;

/* ---- clients -------------------------------------------------------------- */

static void outpkt_free(struct xwayd_outpkt *p)
{
	for (unsigned i = 0; i < p->nfds; i++)
		close(p->fds[i]);
	g_free(p->buf);
	g_free(p);
}

static gboolean client_destroy(gpointer p)
{
	struct xwayd_client *c = p;

	XLOG_DEBUG("client %llu (pid %d uid %d) gone",
		   (unsigned long long)c->id, (int)c->pid, (int)c->uid);
	xwayd_conn_client_gone(c);
	xwayd_dir_client_gone(c);
	xwayd_xen_mute_gone(c);
	if (c->watch)
		g_source_remove(c->watch);
	if (c->out_watch)
		g_source_remove(c->out_watch);
	g_queue_clear_full(&c->outq, (GDestroyNotify)outpkt_free);
	close(c->fd);
	g_hash_table_remove(xd->clients, &c->id);
	g_free(c);
	return G_SOURCE_REMOVE;
}

/* Disconnect c once the current callback returns (never free it under a
 * caller's feet). */
static void client_kill(struct xwayd_client *c, const char *why)
{
	if (c->dead)
		return;
	c->dead = true;
	xwayd_log(strcmp(why, "disconnected") ? 6 : 7, "dropping client pid %d uid %d: %s",
		  (int)c->pid, (int)c->uid, why);
	c->reap = g_idle_add_full(G_PRIORITY_HIGH, client_destroy, c, NULL);
}

static int send_pkt(int fd, const void *buf, size_t len, const int *fds, unsigned nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * XWAY_BROKER_MAX_FDS)];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (nfds) {
		struct cmsghdr *cm;

		memset(&u, 0, sizeof(u));
		m.msg_control = u.buf;
		m.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		cm = CMSG_FIRSTHDR(&m);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	return sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 ? -errno : 0;
}

static gboolean client_out(gint fd, GIOCondition cond, gpointer p)
{
	struct xwayd_client *c = p;

	(void)fd;
	(void)cond;
	while (!c->dead && !g_queue_is_empty(&c->outq)) {
		struct xwayd_outpkt *o = g_queue_peek_head(&c->outq);
		int e = send_pkt(c->fd, o->buf, o->len, o->fds, o->nfds);

		if (e == -EAGAIN)
			return G_SOURCE_CONTINUE;
		if (e)
			client_kill(c, g_strerror(-e));
		outpkt_free(g_queue_pop_head(&c->outq));
	}
	c->out_watch = 0;
	return G_SOURCE_REMOVE;
}

void xwayd_send(struct xwayd_client *c, uint16_t type, uint32_t seq,
		uint32_t flags, const void *body, size_t len,
		const int *fds, unsigned nfds)
{
	struct xway_msg_hdr h = {
		.magic = XWAY_PROTO_MAGIC, .version = XWAY_PROTO_VERSION,
		.type = type, .len = (uint32_t)(sizeof(h) + len), .seq = seq,
		.flags = flags,
	};
	struct xwayd_outpkt *o;
	char *buf;
	int e;

	if (c->dead)
		return;
	buf = g_malloc(sizeof(h) + len);
	memcpy(buf, &h, sizeof(h));
	if (len)
		memcpy(buf + sizeof(h), body, len);
	if (g_queue_is_empty(&c->outq)) {
		e = send_pkt(c->fd, buf, sizeof(h) + len, fds, nfds);
		if (e != -EAGAIN) {
			g_free(buf);
			if (e)
				client_kill(c, g_strerror(-e));
			return;
		}
	}
	if (g_queue_get_length(&c->outq) >= XWAYD_OUTQ_MAX) {
		g_free(buf);
		xd->st.disconnects_forced++;
		client_kill(c, "not reading its replies (output queue full)");
		return;
	}
	/* Queued: keep our own copies of the descriptors until sent. */
	o = g_new0(struct xwayd_outpkt, 1);
	o->buf = buf;
	o->len = sizeof(h) + len;
	for (unsigned i = 0; i < nfds; i++) {
		int d = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);

		if (d < 0) {
			outpkt_free(o);
			client_kill(c, "cannot duplicate a descriptor to queue");
			return;
		}
		o->fds[o->nfds++] = d;
	}
	g_queue_push_tail(&c->outq, o);
	if (!c->out_watch)
		c->out_watch = xwayd_fd_watch(c->fd, G_IO_OUT, client_out, c);
}

void xwayd_send_result(struct xwayd_client *c, uint16_t type, uint32_t seq,
		       int32_t status, uint32_t reason, uint64_t offer_id,
		       const char *fmt, ...)
{
	struct xway_result res = { .status = status, .reason = reason,
				   .offer_id = offer_id };
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(res.text, sizeof(res.text), fmt, ap);
	va_end(ap);
	xwayd_send(c, type, seq, 0, &res, sizeof(res), NULL, 0);
}

static void dispatch(struct xwayd_client *c, const struct xway_req *r, int *fds)
{
	switch (r->hdr.type) {
	case XWAY_MSG_HELLO: {
		struct xway_hello_ok ok = { .broker_version = XWAYD_VERSION,
					    .mode = xd->cfg.mode,
					    .instance = xd->instance };

		xwayd_send(c, XWAY_MSG_HELLO_OK, r->hdr.seq, 0, &ok, sizeof(ok),
			   &xd->gen_fd, 1);
		break;
	}
	case XWAY_MSG_LISTEN_ADD:
		xwayd_listen_add(c, r, fds[0]);
		break;
	case XWAY_MSG_LISTEN_DEL:
		xwayd_listen_del(c, r, r->nfds ? fds[0] : -1);
		break;
	case XWAY_MSG_OFFER:
		xwayd_offer(c, r, fds);
		break;
	case XWAY_MSG_CLAIM:
		xwayd_claim(c, r, fds[0], r->nfds > 1 ? fds[1] : -1);
		break;
	case XWAY_MSG_REMAP:
		xwayd_remap(c, r, fds[0]);
		break;
	case XWAY_MSG_XEN_MUTE:
		xwayd_xen_mute(c, r, fds[0]);
		break;
	case XWAY_MSG_XEN_NOTIFY:
		xwayd_xen_notify(c, r);
		break;
	case XWAY_MSG_WITHDRAW:
		xwayd_withdraw(c, r);
		break;
	case XWAY_MSG_REPORT:
		xwayd_report(c, r);
		break;
	case XWAY_MSG_QUERY:
		xwayd_query(c, r);
		break;
	}
}

static void proto_error(struct xwayd_client *c, const struct xway_req *r,
			int err, const char *why)
{
	xd->st.proto_errors++;
	XLOG_DEBUG("client pid %d: protocol error: %s", (int)c->pid, why);
	xwayd_send_result(c, XWAY_MSG_ERROR, r->hdr.seq, err, XWAY_R_SETUP_PROTO, 0,
			  "%s", why);
	if (++c->errors > XWAYD_ERRORS_MAX) {
		xd->st.disconnects_forced++;
		client_kill(c, "too many protocol errors");
	}
}

/* Read and handle one packet; 0 = more may follow, 1 = nothing to read. */
static int client_read_one(struct xwayd_client *c, uint8_t *buf)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * (XWAY_BROKER_MAX_FDS + 4))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = buf, .iov_len = XWAY_MSG_MAX + 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
			    .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
	int fds[XWAY_BROKER_MAX_FDS + 8];
	unsigned nfds = 0;
	struct xway_req req;
	const char *why = NULL;
	ssize_t n;
	int e;

	n = recvmsg(c->fd, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC | MSG_TRUNC);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return 1;
		client_kill(c, g_strerror(errno));
		return 1;
	}
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		for (size_t i = 0; i < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
			int d;

			memcpy(&d, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (nfds < G_N_ELEMENTS(fds))
				fds[nfds++] = d;
			else
				xwayd_close_async(d);
		}
	}
	if (n == 0 && nfds == 0) {
		/* SEQPACKET: a zero-length read is the peer's close. */
		client_kill(c, "disconnected");
		return 1;
	}
	if (m.msg_flags & MSG_CTRUNC) {
		req = (struct xway_req){ 0 };
		if ((size_t)n >= sizeof(req.hdr))
			memcpy(&req.hdr, buf, sizeof(req.hdr));
		e = -EBADF;
		why = "too many descriptors (control data truncated)";
		goto bad;
	}
	e = xway_msg_parse(buf, (size_t)n, nfds, &req, &why);
	if (e)
		goto bad;
	dispatch(c, &req, fds);
	return 0;
bad:
	for (unsigned i = 0; i < nfds; i++)
		xwayd_close_async(fds[i]);
	proto_error(c, &req, e, why);
	return 0;
}

static gboolean client_in(gint fd, GIOCondition cond, gpointer p)
{
	struct xwayd_client *c = p;
	static uint8_t *buf;

	(void)fd;
	if (!buf)
		buf = g_malloc(XWAY_MSG_MAX + 1);
	for (int i = 0; i < XWAYD_MSGS_PER_WAKEUP && !c->dead; i++)
		if (client_read_one(c, buf))
			break;
	if (!c->dead && (cond & (G_IO_HUP | G_IO_ERR)) && !(cond & G_IO_IN))
		client_kill(c, "hung up");
	if (c->dead) {
		c->watch = 0;
		return G_SOURCE_REMOVE;
	}
	return G_SOURCE_CONTINUE;
}

/*
 * Handle what the links of connecting clients (xwayd_client.connecting)
 * have queued, all but except's (and those of the claims this is nested
 * in): a CLAIM that matched nothing calls this
 * before it answers (xwayd_claim).  A CLAIM read here that matches nothing
 * reads the links again, nested (its offer may wait in a link this loop has
 * not reached yet: a process that both accepts and connects, a proxy), at
 * most XWAYD_DRAIN_DEPTH deep; every level consumes packets, and each
 * parsed request is a copy, so the shared buffer may be reused below.
 * Returns whether any packet was handled.  Clients killed meanwhile are
 * only marked (freed from an idle source), and none is added here, so the
 * table does not change under the iterations.
 */
bool xwayd_clients_read_connecting(struct xwayd_client *except)
{
	/* The claimers being answered, outermost first: none of their links
	 * is read before its claim is (their requests stay in order). */
	static struct xwayd_client *claimers[XWAYD_DRAIN_DEPTH];
	static int depth;
	static uint8_t *buf;
	GHashTableIter it;
	gpointer key, v;
	bool any = false;

	if (depth >= XWAYD_DRAIN_DEPTH)
		return false;
	if (!buf)
		buf = g_malloc(XWAY_MSG_MAX + 1);
	claimers[depth++] = except;
	g_hash_table_iter_init(&it, xd->clients);
	while (g_hash_table_iter_next(&it, &key, &v)) {
		struct xwayd_client *c = v;
		bool claiming = false;

		for (int i = 0; i < depth; i++)
			claiming |= c == claimers[i];
		if (claiming || !c->connecting)
			continue;
		/* All it queued (bounded): the offer may wait behind other
		 * requests of a busy client. */
		for (int i = 0; i < XWAYD_MSGS_PER_DRAIN && !c->dead; i++) {
			if (client_read_one(c, buf))
				break;
			any = true;
		}
	}
	depth--;
	return any;
}

static void client_new(int fd)
{
	struct xwayd_client *c = g_new0(struct xwayd_client, 1);
	struct ucred cr;
	socklen_t l = sizeof(cr);
	char path[64];
	gchar *comm = NULL;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &l) < 0) {
		XLOG_WARN("SO_PEERCRED: %s; refusing client", g_strerror(errno));
		close(fd);
		g_free(c);
		return;
	}
	c->id = ++xd->next_client_id;
	c->fd = fd;
	c->pid = cr.pid;
	c->uid = cr.uid;
	c->gid = cr.gid;
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)cr.pid);
	if (g_file_get_contents(path, &comm, NULL, NULL))
		g_strlcpy(c->comm, g_strstrip(comm), sizeof(c->comm));
	g_free(comm);
	g_queue_init(&c->outq);
	g_hash_table_insert(xd->clients, &c->id, c);
	c->watch = xwayd_fd_watch(fd, G_IO_IN | G_IO_HUP | G_IO_ERR, client_in, c);
	xd->st.clients_total++;
	XLOG_DEBUG("client %llu: pid %d uid %d gid %d (%s)", (unsigned long long)c->id,
		   (int)c->pid, (int)c->uid, (int)c->gid, c->comm);
}

static guint listen_watch;
static gboolean listener_in(gint fd, GIOCondition cond, gpointer p);

static gboolean listener_resume(gpointer p)
{
	(void)p;
	listen_watch = xwayd_fd_watch(xd->lfd, G_IO_IN, listener_in, NULL);
	return G_SOURCE_REMOVE;
}

static gboolean listener_in(gint fd, GIOCondition cond, gpointer p)
{
	(void)cond;
	(void)p;
	for (int i = 0; i < 64; i++) {
		int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (c >= 0) {
			client_new(c);
			continue;
		}
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
		    errno == ENOMEM) {
			/* Out of descriptors: stop accepting for a moment
			 * instead of spinning on a readable socket. */
			XLOG_WARN("accept: %s; pausing new clients for 200 ms",
				  g_strerror(errno));
			listen_watch = 0;
			xwayd_timeout_add(200, listener_resume, NULL);
			return G_SOURCE_REMOVE;
		}
		break;
	}
	return G_SOURCE_CONTINUE;
}

/* ---- start-up ------------------------------------------------------------- */

static int make_gen_page(void)
{
	char path[64];
	int fd = memfd_create("xway-gen", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	void *p;

	if (fd < 0 || ftruncate(fd, 4096) < 0)
		return -errno;
	p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return -errno;
	fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
	xd->gen = p;
	/* Clients get a read-only open file description: they cannot map
	 * it writable and corrupt everyone's generation. */
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	xd->gen_fd = open(path, O_RDONLY | O_CLOEXEC);
	close(fd);
	return xd->gen_fd < 0 ? -errno : 0;
}

static int make_socket(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	gchar *dir;
	int fd, probe;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	dir = g_path_get_dirname(path);
	g_mkdir_with_parents(dir, 0755);
	g_free(dir);
	/* A live broker answers on the path; a stale socket file does not. */
	probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		close(probe);
		return -EADDRINUSE;
	}
	if (probe >= 0)
		close(probe);
	/* Bind under a temporary name and rename into place after listen():
	 * the path appears only when connecting to it works. */
	if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s.%d.tmp", path, (int)getpid()) >=
	    (int)sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	unlink(sa.sun_path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    chmod(sa.sun_path, 0666) < 0 || listen(fd, 512) < 0 ||
	    rename(sa.sun_path, path) < 0) {
		int e = -errno;

		unlink(sa.sun_path);
		close(fd);
		return e;
	}
	return fd;
}

static gboolean on_signal(gpointer p)
{
	(void)p;
	XLOG_INFO("shutting down");
	g_main_loop_quit(xd->loop);
	return G_SOURCE_CONTINUE;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: xwayd [--foreground] [--config FILE] [--socket PATH] [--check-config]\n"
		"  --foreground     stay in the foreground (what the systemd unit uses)\n"
		"  --config FILE    configuration (default /etc/xway/xwayd.conf; missing is fine\n"
		"                   for the default, an error for an explicit FILE)\n"
		"  --socket PATH    listen here (default %s, or [broker] socket=)\n"
		"  --check-config   parse the configuration, report, and exit (0 ok, 2 bad)\n"
		"  --version        print the version\n", XWAY_BROKER_SOCK_DEFAULT);
}

/*
 * Local mode needs no capability (the unit's header says why); only Xen
 * mode uses the two its unit keeps in the bounding set: CAP_NET_ADMIN to
 * abort the TCP sockets of connections to a vanished domain (SOCK_DESTROY)
 * and CAP_SYS_PTRACE to read another user's /proc/<pid>/fd when looking
 * for them.  So a broker that ends up in local mode drops everything it
 * was started with; failure is logged, not fatal (nothing depends on it).
 */
static void drop_capabilities(void)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[2];

	memset(d, 0, sizeof(d));
	if (syscall(SYS_capset, &h, d) != 0)
		XLOG_WARN("dropping capabilities: %s", g_strerror(errno));
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "foreground", no_argument, NULL, 'f' },
		{ "config", required_argument, NULL, 'c' },
		{ "socket", required_argument, NULL, 's' },
		{ "check-config", no_argument, NULL, 'C' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config = "/etc/xway/xwayd.conf", *sock = NULL;
	bool foreground = false, check = false, explicit_config = false;
	struct rlimit rl;
	char *err = NULL;
	int o, e;

	while ((o = getopt_long(argc, argv, "fc:s:h", opts, NULL)) != -1) {
		switch (o) {
		case 'f': foreground = true; break;
		case 'c': config = optarg; explicit_config = true; break;
		case 's': sock = optarg; break;
		case 'C': check = true; break;
		case 'V': printf("xwayd %u (protocol %u)\n", XWAYD_VERSION, XWAY_PROTO_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	xd = g_new0(struct xwayd, 1);
	if (xwayd_config_load(&xd->cfg, config, explicit_config, &err)) {
		fprintf(stderr, "xwayd: bad configuration: %s\n", err);
		g_free(err);
		return 2;
	}
	if (sock) {
		if (sock[0] != '/' && !g_path_is_absolute(sock)) {
			gchar *cwd = g_get_current_dir();

			g_free(xd->cfg.socket_path);
			xd->cfg.socket_path = g_build_filename(cwd, sock, NULL);
			g_free(cwd);
		} else {
			g_free(xd->cfg.socket_path);
			xd->cfg.socket_path = g_strdup(sock);
		}
	}
	if (check) {
		printf("xwayd: configuration ok: socket %s, claim_timeout_ms %u, "
		       "%zu allow and %zu deny rules\n", xd->cfg.socket_path,
		       xd->cfg.claim_timeout_ms, xd->cfg.nallow, xd->cfg.ndeny);
		return 0;
	}
	xwayd_log_init(xd->cfg.log_level);
	signal(SIGPIPE, SIG_IGN);
	/* Each client and pending offer holds descriptors. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getrandom(&xd->instance, sizeof(xd->instance), 0) != sizeof(xd->instance))
		xd->instance = (uint64_t)g_get_real_time() ^ ((uint64_t)getpid() << 32);
	xd->started = xwayd_now();
	if ((e = make_gen_page())) {
		XLOG_ERR("generation page: %s", g_strerror(-e));
		return 1;
	}
	xd->lfd = make_socket(xd->cfg.socket_path);
	if (xd->lfd < 0) {
		XLOG_ERR("cannot listen on %s: %s%s", xd->cfg.socket_path,
			 g_strerror(-xd->lfd),
			 xd->lfd == -EADDRINUSE ? " (another xwayd answers there)" : "");
		return 1;
	}
	if (xwayd_sock_netns(xd->lfd, getpid(), &xd->netns))
		xd->netns = 0;
	if (!foreground && daemon(0, 1) < 0) {
		XLOG_ERR("daemon: %s", g_strerror(errno));
		return 1;
	}
	xd->clients = g_hash_table_new(g_int64_hash, g_int64_equal);
	xwayd_dir_init();
	xwayd_conn_init();
	xd->loop = g_main_loop_new(NULL, FALSE);
	/* Before Xen mode starts: its first publication of our listeners
	 * then includes the restored ones, so the other domains never see
	 * the new instance without them. */
	xwayd_persist_restore();
	if (xd->cfg.mode == XWAYD_MODE_XEN || xd->cfg.mode_auto) {
		bool want = xd->cfg.mode == XWAYD_MODE_XEN;

		if (xd->cfg.mode_auto)
			want = g_file_test("/proc/xen/capabilities", G_FILE_TEST_EXISTS) ||
			       g_file_test("/dev/xen/xenbus", G_FILE_TEST_EXISTS);
		if (want && (e = xwayd_xen_start(&err))) {
			if (!xd->cfg.mode_auto) {
				XLOG_ERR("mode=xen: %s", err);
				unlink(xd->cfg.socket_path);
				return 1;
			}
			XLOG_WARN("mode=auto: staying in local mode: %s", err);
		}
		g_free(err);
		err = NULL;
		xd->cfg.mode = xwayd_xen_active() ? XWAYD_MODE_XEN : XWAYD_MODE_LOCAL;
	}
	if (xd->cfg.mode != XWAYD_MODE_XEN)
		drop_capabilities();
	listen_watch = xwayd_fd_watch(xd->lfd, G_IO_IN, listener_in, NULL);
	g_unix_signal_add(SIGTERM, on_signal, NULL);
	g_unix_signal_add(SIGINT, on_signal, NULL);
	XLOG_INFO("listening on %s (%s mode, claim timeout %u ms, instance %016llx)",
		  xd->cfg.socket_path, xd->cfg.mode == XWAYD_MODE_XEN ? "xen" : "local",
		  xd->cfg.claim_timeout_ms,
		  (unsigned long long)xd->instance);
	if ((e = xwayd_notify("READY=1")))
		XLOG_WARN("sd_notify READY=1: %s", g_strerror(-e));

	g_main_loop_run(xd->loop);

	xwayd_notify("STOPPING=1");
	/* Before the clients go: their listeners outlive us (persist.c). */
	xwayd_persist_stop();
	xwayd_xen_stop();
	if (listen_watch)
		g_source_remove(listen_watch);
	close(xd->lfd);
	unlink(xd->cfg.socket_path);
	{
		GList *all = g_hash_table_get_values(xd->clients);

		for (GList *n = all; n; n = n->next) {
			struct xwayd_client *c = n->data;

			if (c->reap)
				g_source_remove(c->reap);
			client_destroy(c);
		}
		g_list_free(all);
	}
	xwayd_conn_shutdown();
	xwayd_close_async_shutdown();
	xwayd_timers_shutdown();
	xwayd_diag_close();
	g_hash_table_destroy(xd->clients);
	g_hash_table_destroy(xd->listeners);
	g_hash_table_destroy(xd->netns_addrs);
	g_main_loop_unref(xd->loop);
	munmap(xd->gen, 4096);
	close(xd->gen_fd);
	xwayd_config_free(&xd->cfg);
	g_free(xd);
	return 0;
}
