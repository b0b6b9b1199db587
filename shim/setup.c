/* SPDX-License-Identifier: MIT */
/*
 * Connection set-up and teardown (docs/DESIGN.md §2, §5): registering
 * listeners (made by listen() here, or adopted: systemd, exec, SCM_RIGHTS),
 * the client's OFFER / PENDING / WITHDRAW path with the flush of
 * ring 0 onto TCP when the broker withdraws, the server's CLAIM at accept,
 * and the kernel-like teardown when the last descriptor of a connection in
 * this process tree is closed.  This is the slow path: system calls and
 * broker round trips are fine here, never on the data path (io.c).
 *
 * The channel layer may not be linked in (early in the project): its entry
 * points are weak (shim.h), and a missing xway_chan_local_create means
 * "set-up failed: setup-chan", plain TCP.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "errno.h"
#include "shim.h"
#include "lifecycle.h"


int xway_sockaddr_to_addr(const struct sockaddr *sa, socklen_t len,
			  struct xway_addr *out)
{
	memset(out, 0, sizeof(*out));
	if (!sa)
		return -EINVAL;
	if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *s4 = (const void *)sa;
		out->ip[10] = out->ip[11] = 0xff;
		memcpy(out->ip + 12, &s4->sin_addr, 4);
		out->port = s4->sin_port;
		out->family = AF_INET;
		return 0;
	}
	if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *s6 = (const void *)sa;
		memcpy(out->ip, &s6->sin6_addr, 16);
		out->port = s6->sin6_port;
		out->family = AF_INET6;
		return 0;
	}
	return -EAFNOSUPPORT;
}

static int xway_sock_name(int fd, int peer, struct xway_addr *out)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	long r = peer ? XWAY_SYS(real.getpeername(fd, (struct sockaddr *)&ss, &sl))
		      : XWAY_SYS(real.getsockname(fd, (struct sockaddr *)&ss, &sl));

	if (r < 0)
		return (int)r;
	return xway_sockaddr_to_addr((struct sockaddr *)&ss, sl, out);
}

static int xway_is_tcp_stream(int fd);

/* An AF_INET/AF_INET6 SOCK_STREAM (TCP) socket?  Its family in *family. */
static int xway_is_tcp(int fd, int *family)
{
	int v = 0;
	socklen_t l = sizeof(v);

	if (!xway_is_tcp_stream(fd) ||
	    XWAY_SYS(real.getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &l)) < 0 ||
	    (v != AF_INET && v != AF_INET6))
		return 0;
	*family = v;
	return 1;
}

static int xway_timeo_ms(int fd, int name)
{
	struct timeval tv = { 0, 0 };
	socklen_t l = sizeof(tv);

	if (XWAY_SYS(real.getsockopt(fd, SOL_SOCKET, name, &tv, &l)) < 0)
		return 0;
	long ms = tv.tv_sec * 1000L + (tv.tv_usec + 999) / 1000;
	return ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

/* A TCP socket, family left to the caller (connect learns it from
 * getsockname, which it makes anyway): a raw socket also says IPPROTO_TCP,
 * hence the type; the protocol rules out SCTP and MPTCP streams; an
 * AF_UNIX stream says protocol 0. */
static int xway_is_tcp_stream(int fd)
{
	int v = 0;
	socklen_t l = sizeof(v);

	if (XWAY_SYS(real.getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &v, &l)) < 0 ||
	    v != IPPROTO_TCP)
		return 0;
	l = sizeof(v);
	return XWAY_SYS(real.getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &l)) == 0 &&
	       v == SOCK_STREAM;
}

/* Socket state set before the connection became ours.  fresh: what is
 * known without asking the kernel (xway_fd_fresh's word, or an accepted
 * socket's O_NONBLOCK from accept4's flags; 0: nothing). */
static void xway_snapshot_opts(struct xway_conn *c, int fd, unsigned fresh)
{
	struct linger lg = { 0, 0 };
	socklen_t l = sizeof(lg);
	long fl;

	if (fresh && !(fresh & XWAY_FRESH_NB_SET))
		fl = fresh & XWAY_FRESH_NONBLOCK ? O_NONBLOCK : 0;
	else
		fl = XWAY_SYS(real.fcntl(fd, F_GETFL, 0));
	atomic_store_explicit(&c->nonblock, fl >= 0 && (fl & O_NONBLOCK),
			      memory_order_relaxed);
	if (fresh && !(fresh & XWAY_FRESH_OPTS_SET)) {
		/* The kernel's defaults for a new socket. */
		c->rcvtimeo_ms = c->sndtimeo_ms = 0;
		c->rcvlowat = 1;
		c->linger_on = c->linger_s = 0;
		return;
	}
	c->rcvtimeo_ms = xway_timeo_ms(fd, SO_RCVTIMEO);
	c->sndtimeo_ms = xway_timeo_ms(fd, SO_SNDTIMEO);
	c->rcvlowat = xway_sock_rcvlowat(fd);
	if (XWAY_SYS(real.getsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, &l)) == 0) {
		c->linger_on = lg.l_onoff;
		c->linger_s = lg.l_linger;
	}
}

static struct xway_chan_params xway_params(void)
{
	struct xway_chan_params p = { .ring_order = xway_cfg.ring_order,
				      .spin_ns = xway_cfg.spin_ns };
	return p;
}

static void xway_tcp_counters(int fd, int64_t *sent, int64_t *rcvd)
{
	struct tcp_info ti;
	socklen_t l = sizeof(ti);

	*sent = *rcvd = -1;
	memset(&ti, 0, sizeof(ti));
	if (XWAY_SYS(real.getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l)) == 0 &&
	    l >= offsetof(struct tcp_info, tcpi_bytes_received) + sizeof(ti.tcpi_bytes_received)) {
		*sent = (int64_t)ti.tcpi_bytes_acked;
		*rcvd = (int64_t)ti.tcpi_bytes_received;
	}
}

/* A Xen connection's record gets its bytes and its leaves only from the
 * shims' REPORTs (a local one's broker reads the counters itself): a fork
 * child that never asked the broker anything opens its link for them. */
static void xway_report_link(const struct xway_conn *c)
{
	if (c && c->chan && !xway_lc_sandboxed &&
	    xway_chan_backend(c->chan) == XWAY_BACKEND_XEN && xway_broker_fd() < 0)
		xway_broker_prepare();
}

void xway_report_fallback(const struct xway_conn *c, int side, unsigned reason,
			  const char *text)
{
	struct xway_report rep;

	memset(&rep, 0, sizeof(rep));
	rep.kind = XWAY_REP_FALLBACK;
	rep.reason = reason;
	rep.side = side;
	if (c) {
		rep.local = c->local;
		rep.peer = c->peer;
		rep.cookie = c->cookie;
	}
	rep.chan_tx_bytes = rep.chan_rx_bytes = -1;
	rep.tcp_bytes_sent = rep.tcp_bytes_received = -1;
	snprintf(rep.text, sizeof(rep.text), "%s", text ? text : "");
	xway_report_link(c);
	xway_broker_send(XWAY_MSG_REPORT, &rep, sizeof(rep));
}

static void xway_report_closed(struct xway_conn *c)
{
	struct xway_report rep;
	struct xway_chan_stats st;

	/* Under a seccomp filter (sshd's pre-auth child) getsockopt and the
	 * broker's sendmsg may kill the process: the record then closes when
	 * the broker sees both pids gone. */
	if (xway_lc_sandboxed)
		return;
	memset(&rep, 0, sizeof(rep));
	memset(&st, 0, sizeof(st));
	rep.kind = XWAY_REP_CLOSED;
	rep.side = c->side;
	rep.local = c->local;
	rep.peer = c->peer;
	rep.cookie = c->cookie;
	xway_chan_get_stats(c->chan, &st);
	rep.chan_tx_bytes = (int64_t)st.tx_bytes;
	rep.chan_rx_bytes = (int64_t)st.rx_bytes;
	xway_tcp_counters(c->fd, &rep.tcp_bytes_sent, &rep.tcp_bytes_received);
	XDBG("close fd %d cookie %016llx side %d: channel tx %llu rx %llu, "
	     "kernel TCP sent %lld received %lld", c->fd,
	     (unsigned long long)c->cookie, c->side,
	     (unsigned long long)st.tx_bytes, (unsigned long long)st.rx_bytes,
	     (long long)rep.tcp_bytes_sent, (long long)rep.tcp_bytes_received);
	xway_report_link(c);
	xway_broker_send(XWAY_MSG_REPORT, &rep, sizeof(rep));
}

/* ---- listeners ------------------------------------------------------- */

/* LISTEN_ADD for a listener of ours; on success TCP_DEFER_ACCEPT moves
 * from the kernel into c (the payload of an accelerated connection never
 * arrives on TCP, so the kernel would hold every one of them).  Returns 1
 * registered, 0 broker down (retried at a later accept), -1 refused. */
int xway_listener_register(struct xway_conn *c)
{
	struct xway_listen body = { .addr = c->local };
	struct xway_result res;
	int defer = 0, ret;
	socklen_t l = sizeof(defer);
	long r;

	pthread_mutex_lock(&c->lock);
	if (!xway_listener_stale(c)) {
		pthread_mutex_unlock(&c->lock);
		return 1;
	}
	memset(&res, 0, sizeof(res));
	r = xway_broker_call(XWAY_MSG_LISTEN_ADD, &body, sizeof(body), &c->fd, 1,
			     XWAY_MSG_RESULT, &res, sizeof(res), NULL, NULL);
	if (r != XWAY_MSG_RESULT || res.status < 0) {
		XDBG("listen fd %d: not registered (%s%s%s)", c->fd,
		     r < 0 ? "broker-down" : "refused", res.text[0] ? ": " : "",
		     res.text);
		ret = r < 0 ? 0 : -1;
		goto out;
	}
	if (XWAY_SYS(real.getsockopt(c->fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer, &l)) == 0
	    && defer > 0) {
		int zero = 0;
		c->defer_accept = defer;
		real.setsockopt(c->fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &zero, sizeof(zero));
	}
	c->reg_pid = xway_pid();
	/* The generation of the link the LISTEN_ADD went over (the call may
	 * have opened it). */
	c->reg_gen = xway_broker_link_gen();
	/* Release: defer_accept before the flag readers test. */
	atomic_store_explicit(&c->registered, 1, memory_order_release);
	XDBG("listen fd %d: registered with the broker", c->fd);
	ret = 1;
out:
	pthread_mutex_unlock(&c->lock);
	return ret;
}

struct xway_lst { int n; struct xway_conn *c[64]; };

static void xway_collect_listener(int fd, struct xway_conn *c, void *arg)
{
	struct xway_lst *l = arg;

	(void)fd;
	if (atomic_load_explicit(&c->state, memory_order_acquire) == XWAY_ST_LISTENER &&
	    atomic_load_explicit(&c->registered, memory_order_acquire) &&
	    l->n < (int)(sizeof(l->c) / sizeof(l->c[0]))) {
		xway_conn_hold(c);
		l->c[l->n++] = c;
	}
}

void xway_listeners_reregister(void)
{
	struct xway_lst l;

	l.n = 0;
	xway_fd_foreach(xway_collect_listener, &l);
	for (int i = 0; i < l.n; i++) {
		/* In a fork child the lock may be a copy held by a parent
		 * thread that does not exist here: never wait for it (the
		 * next accept registers instead). */
		if (pthread_mutex_trylock(&l.c[i]->lock) == 0) {
			pthread_mutex_unlock(&l.c[i]->lock);
			xway_listener_register(l.c[i]);    /* no-op for a dup's twin */
		}
		xway_conn_put(l.c[i]);
	}
}

int xway_listener_stale(const struct xway_conn *c)
{
	return !atomic_load_explicit(&c->registered, memory_order_acquire) ||
	       c->reg_gen != xway_broker_link_gen() || c->reg_pid != xway_pid();
}

int xway_setup_listen(int fd, int backlog)
{
	struct xway_addr addr;
	struct xway_conn *c;
	int family;
	long r;

	r = XWAY_SYS(real.listen(fd, backlog));
	if (r < 0 || xway_cfg.disabled || xway_fd_is_ours(fd) || !xway_is_tcp(fd, &family))
		return (int)r;
	if (xway_sock_name(fd, 0, &addr) < 0)
		return 0;
	if (!xway_config_allows(&xway_cfg, &addr)) {
		XDBG("listen fd %d: port/address excluded by config", fd);
		return 0;
	}
	c = xway_conn_new(fd, -1);
	if (!c)
		return 0;
	c->family = family;
	c->local = addr;
	atomic_store_explicit(&c->state, XWAY_ST_LISTENER, memory_order_relaxed);
	/* Refused by the broker: never ours.  Broker down: kept, and
	 * registered at a later accept once the broker is back (daemons
	 * that start before xwayd still get accelerated). */
	if (xway_listener_register(c) < 0 || xway_fd_set(fd, c) < 0) {
		xway_conn_put(c);
		return 0;
	}
	xway_conn_put(c);            /* the slot holds it now */
	return 0;
}

/*
 * Adoption of listeners made elsewhere.  The probe asks the kernel the
 * same questions xway_setup_listen's caller knows the answers to: listening
 * (SO_ACCEPTCONN), TCP over IPv4/IPv6 (xway_is_tcp), an address the config
 * allows.  A "no" is remembered for the fd number (xway_fd_nolisten) so a
 * plain fd passed to accept, or an AF_UNIX listener accepted on in a loop,
 * costs one bit test from the second call on.  The object goes into the
 * table before LISTEN_ADD, unregistered: two threads adopting the same
 * number at once agree on one object (the loser of xway_fd_set takes the
 * winner's), and xway_listener_register sends LISTEN_ADD once under its
 * lock.
 */
static struct xway_conn *xway_listener_adopt_errno(int fd);

struct xway_conn *xway_listener_adopt(int fd)
{
	int saved = errno;      /* mmap, the broker link: errno stays the app's */
	struct xway_conn *c = xway_listener_adopt_errno(fd);

	errno = saved;
	return c;
}

static struct xway_conn *xway_listener_adopt_errno(int fd)
{
	struct xway_conn *c;
	struct xway_addr addr;
	int v = 0, family, reg;
	socklen_t l = sizeof(v);
	long r;

	if (xway_cfg.disabled || fd < 0 || xway_fd_nolisten(fd))
		return NULL;
	if (xway_lc_close_guard(fd) || fd == xway_broker_fd())
		return NULL;            /* the shim's own: never the app's listener */
	r = XWAY_SYS(real.getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &l));
	if (r == -EBADF)
		return NULL;            /* not open: nothing to remember */
	if (r < 0 || !v || !xway_is_tcp(fd, &family) ||
	    xway_sock_name(fd, 0, &addr) < 0) {
		xway_fd_nolisten_set(fd);
		return NULL;
	}
	if (!xway_config_allows(&xway_cfg, &addr)) {
		XDBG("listener fd %d (not made here): port/address excluded by config", fd);
		xway_fd_nolisten_set(fd);
		return NULL;
	}
	c = xway_conn_new(fd, -1);
	if (!c)
		return NULL;
	c->family = family;
	c->local = addr;
	atomic_store_explicit(&c->state, XWAY_ST_LISTENER, memory_order_relaxed);
	if (xway_fd_set(fd, c) < 0) {
		/* Another thread adopted it first (or the number is full). */
		xway_conn_put(c);
		return xway_fd_get(fd);
	}
	XDBG("listener fd %d made outside this process image: adopted", fd);
	reg = xway_listener_register(c);
	if (reg < 0) {
		/* Refused by the broker: never ours, as at listen(). */
		xway_fd_drop_conn(c);
		xway_fd_nolisten_set(fd);
		xway_conn_put(c);
		return NULL;
	}
	return c;
}

/*
 * exec and TCP_DEFER_ACCEPT: a registered listener keeps the value in c,
 * the kernel's is off; the new image adopts the listener and would read 0
 * from the kernel.  Before an exec (not posix_spawn: the spawner goes on
 * accepting) the value goes back to the kernel for each registered
 * listener that survives it (an fd number without FD_CLOEXEC) when this
 * process is its only holder in the tree: a fork relative accepting on the
 * same socket relies on the kernel's being off (with one, the new image
 * reads 0: the listener still works, only the read-back differs).  The new
 * image's adoption remembers it and switches it off again.  If the exec
 * fails, phase 0 switches it off here again.  Runs under the table lock
 * (xway_fd_foreach): only real socket calls.
 */
static void xway_listener_exec_one(int fd, struct xway_conn *c, void *arg)
{
	int phase = *(int *)arg, v = phase ? c->defer_accept : 0;
	long fl;

	if (atomic_load_explicit(&c->state, memory_order_acquire) != XWAY_ST_LISTENER ||
	    !atomic_load_explicit(&c->registered, memory_order_acquire) ||
	    c->defer_accept <= 0 ||
	    atomic_load_explicit(&c->shared->holders, memory_order_acquire) != 1)
		return;
	fl = XWAY_SYS(real.fcntl(fd, F_GETFD, 0));
	if (fl < 0 || (fl & FD_CLOEXEC))
		return;
	XWAY_SYS(real.setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &v, sizeof(v)));
}

void xway_listeners_exec(int phase)
{
	xway_fd_foreach(xway_listener_exec_one, &phase);
}

/* Adopt fd if it is a listener we do not know; keep no reference. */
static void xway_adopt_one(int fd)
{
	struct xway_conn *c;

	if (xway_fd_is_ours(fd))
		return;
	c = xway_listener_adopt(fd);
	if (c)
		xway_conn_put(c);       /* the slot holds it */
}

/* At most this many descriptors are probed at start-up (a process that
 * inherits thousands is left to its first accept). */
#define XWAY_ADOPT_SCAN_MAX 4096

void xway_listeners_adopt_inherited(void)
{
	const char *lf = getenv("LISTEN_FDS"), *lp = getenv("LISTEN_PID");
	struct dirent *de;
	DIR *d;
	int n = 0;

	if (xway_cfg.disabled)
		return;
	/* systemd socket activation (sd_listen_fds(3)): fds 3.. for us only
	 * if LISTEN_PID names this process.  Needs no /proc (sandboxes). */
	if (lf && lp && strtol(lp, NULL, 10) == (long)xway_pid()) {
		long k = strtol(lf, NULL, 10);
		for (long i = 0; i < k && i < XWAY_ADOPT_SCAN_MAX; i++)
			xway_adopt_one(3 + (int)i);
	}
	/* Anything else an exec handed over (inetd "wait" services, binary
	 * upgrades, a supervisor's fork+exec).  No /proc (chroot, some
	 * sandboxes): only the above. */
	d = opendir("/proc/self/fd");
	if (!d)
		return;
	while ((de = readdir(d)) && n < XWAY_ADOPT_SCAN_MAX) {
		char *end;
		long fd = strtol(de->d_name, &end, 10);

		if (end == de->d_name || *end || fd < 0 || fd == dirfd(d))
			continue;
		n++;
		xway_adopt_one((int)fd);
	}
	closedir(d);
}

/* ---- server: accept -------------------------------------------------- */

static int xway_decision_wait_ms(void);

/* OFFER and CLAIM wait this long for the broker's answer: longer than its
 * default claim timeout (2000 ms), after which offers expire. */
#define XWAY_DECISION_WAIT_MS 2500

void xway_setup_accepted(struct xway_conn *lc, int nfd, int flags,
			 const struct sockaddr *peer, socklen_t peer_len)
{
	struct xway_claim body;
	union { struct xway_claimed cl; struct xway_claimed_xenfd xen;
		struct xway_result res; } rep;
	struct xway_claimed *clp = &rep.cl;
	struct xway_chan_params p = xway_params();
	struct xway_chan *chan = NULL;
	struct xway_conn *c;
	int fds[3] = { -1, -1, -1 }, nf = 3;
	long r;

	/* The peer's name from accept itself when it came whole. */
	if (xway_sock_name(nfd, 0, &body.local) < 0 ||
	    ((!peer || xway_sockaddr_to_addr(peer, peer_len, &body.peer) < 0) &&
	     xway_sock_name(nfd, 1, &body.peer) < 0))
		return;
	memset(&rep, 0, sizeof(rep));
	/*
	 * Design fix: the server must learn the broker's decision.  If it
	 * gave up after XWAY_BROKER_TIMEOUT_MS (100 ms) and used TCP while a
	 * slow broker then decided "claimed", the client would write into a
	 * ring nobody reads (the connection hangs, its bytes are lost).  The
	 * broker decides within its claim timeout (offers expire after 2 s by
	 * default), so the server waits that long for this one reply.  A dead
	 * broker costs nothing (connect fails at once, then back-off); only a
	 * hung one stalls one accept per back-off period.
	 */
	/* In Xen mode the end's state memfd goes along: if the connection
	 * goes on a Xen channel, its broker reads the byte counters there
	 * (its only source when the last holder never reports its close). */
	int sfds[2] = { nfd, -1 };
	if (xway_broker_mode() == 2)
		sfds[1] = xway_chan_ep_create();
	r = xway_broker_call_tmo(xway_decision_wait_ms(),
				 XWAY_MSG_CLAIM, &body, sizeof(body), sfds, sfds[1] >= 0 ? 2 : 1,
				 XWAY_MSG_CLAIMED, &rep, sizeof(rep), fds, &nf);
	if (r != XWAY_MSG_CLAIMED || clp->backend != XWAY_BACKEND_XEN) {
		if (sfds[1] >= 0)
			real.close(sfds[1]);
		sfds[1] = -1;
	}
	if (r != XWAY_MSG_CLAIMED) {
		rep.res.text[sizeof(rep.res.text) - 1] = 0;
		XDBG("accept fd %d on listener %d: plain TCP (%s%s%s)", nfd, lc->fd,
		     r < 0 ? "broker-down" : r == XWAY_MSG_RESULT ?
		     xway_reason_name(rep.res.reason) : "setup-proto",
		     rep.res.text[0] ? ": " : "", rep.res.text);
		for (int i = 0; i < nf; i++)
			real.close(fds[i]);
		return;
	}
	if (clp->backend == XWAY_BACKEND_XEN) {
		/* Cross-domain: the client's end is the libxenvchan server;
		 * our broker attached to it as the vchan client and hands us
		 * [gntdev, evtchn] (DESIGN §7: we need no /dev/xen access). */
		if (nf == 2) {
			r = xway_chan_xen_client_fds_ep(fds, &rep.xen.v, sfds[1], &chan);
			if (r < 0 && sfds[1] >= 0)
				real.close(sfds[1]);     /* ours unless taken */
			fds[0] = fds[1] = -1;       /* taken, even on failure */
			nf = 0;
		} else {
			if (sfds[1] >= 0)
				real.close(sfds[1]);
			r = -EPROTO;
		}
	} else if (nf != 3 || !xway_chan_local_attach) {
		r = -EPROTO;
	} else {
		/* The broker checked these eventfds at OFFER. */
		p.flags |= XWAY_CHAN_F_BROKER_CHECKED;
		r = xway_chan_local_attach(fds, 1, clp->cookie, &p, &chan);
	}
	if (r < 0) {
		/* Claimed, but the channel is unusable: the client writes into
		 * a ring nobody will read.  End the connection the way a
		 * server that closes at once would (the client sees EOF). */
		for (int i = 0; i < nf; i++)
			real.close(fds[i]);
		XWARN("accept fd %d: claimed but attach failed (%s); shutting "
		      "the connection down", nfd, strerror((int)-r));
		real.shutdown(nfd, SHUT_RDWR);
		return;
	}
	c = xway_conn_new_chan(nfd, 1, chan, 0);
	if (!c) {
		xway_chan_close(chan);
		real.shutdown(nfd, SHUT_RDWR);
		return;
	}
	c->cookie = clp->cookie;
	c->family = lc->family;
	c->local = body.local;
	c->peer = body.peer;
	/* O_NONBLOCK is accept4's flag (Linux does not inherit it from the
	 * listener); the options below it are inherited: asked. */
	xway_snapshot_opts(c, nfd, XWAY_FRESH_YES | XWAY_FRESH_OPTS_SET |
			   (flags & SOCK_NONBLOCK ? XWAY_FRESH_NONBLOCK : 0));
	atomic_store_explicit(&c->state, XWAY_ST_ACCEL, memory_order_relaxed);
	if (xway_fd_set(nfd, c) < 0) {
		real.shutdown(nfd, SHUT_RDWR);
	} else {
		XDBG("accept fd %d: accelerated (cookie %016llx, peer pid %d)",
		     nfd, (unsigned long long)clp->cookie, clp->peer_pid);
	}
	xway_conn_put(c);
}

/* ---- client: connect ------------------------------------------------- */

static int xway_decision_wait_ms(void)
{
	return xway_cfg.broker_timeout_ms > XWAY_DECISION_WAIT_MS
	       ? xway_cfg.broker_timeout_ms : XWAY_DECISION_WAIT_MS;
}

/* The Xen end made by xway_xen_offer, handed to the rest of
 * xway_setup_connect (same thread, set and taken within one call). */
static _Thread_local struct xway_chan *xway_xen_pending_chan;

/* D of the broker's "xen D PATH" answer (untrusted only as far as a broker
 * is), or 0. */
static uint32_t xway_xen_dom_of(struct xway_result *res)
{
	unsigned long dom;
	char *end;

	res->text[sizeof(res->text) - 1] = 0;
	if (strncmp(res->text, "xen ", 4))
		return 0;
	dom = strtoul(res->text + 4, &end, 10);
	if (end == res->text + 4 || *end != ' ' || dom == 0 || dom >= 0x7ff0)
		return 0;
	return (uint32_t)dom;
}

/*
 * A registered offer we cannot follow up (our end of the channel or the
 * connection's record could not be made: allocation failures).  Before
 * the SYN, a withdrawal settles it: nothing can be claimed yet.  After it
 * (an early offer, §2.2) the server may have claimed already and would
 * read a ring nobody writes: unless the broker answers "withdrawn" (both
 * ends on TCP), end the connection as a server that closes at once would
 * (xway_setup_accepted does the same for a claim it cannot attach), so
 * both applications see the failure instead of a silent split.
 */
static void xway_offer_abandon(int fd, uint64_t offer_id, int early, const char *why)
{
	struct xway_withdraw w = { .offer_id = offer_id };
	struct xway_result res;
	long r;

	memset(&res, 0, sizeof(res));
	r = xway_broker_call(XWAY_MSG_WITHDRAW, &w, sizeof(w), NULL, 0,
			     XWAY_MSG_RESULT, &res, sizeof(res), NULL, NULL);
	if (!early || (r == XWAY_MSG_RESULT && res.status == 0))
		return;
	XWARN("connect fd %d: %s after the SYN left, and the offer may be claimed; "
	      "shutting the connection down", fd, why);
	real.shutdown(fd, SHUT_RDWR);
}

/*
 * The listener is in Xen domain dom (the broker said "xen D PATH" to a
 * first OFFER, or did so for this destination before): offer with
 * backend XEN.  The broker makes the vchan server end (DESIGN
 * §7: grants, event channel, the offer to the peer's broker) and answers
 * "pending" with [gntalloc, evtchn] and the geometry; we build our end from
 * them.  XWAY_MSG_RESULT: *res is that answer and the Xen end waits in
 * xway_xen_pending_chan; 0: the broker did not make it pending (*res says
 * why, the broker recorded it); -errno: failed, the offer withdrawn (or
 * never registered).
 */
static long xway_xen_offer(struct xway_offer *off, struct xway_result *res,
			   const struct xway_chan_params *p, struct xway_chan **xc,
			   int ofds[4], uint32_t dom)
{
	struct xway_result_xen rx;
	long r;
	int vfds[2] = { -1, -1 }, nf = 2;

	off->backend = XWAY_BACKEND_XEN;
	memset(&rx, 0, sizeof(rx));
	r = xway_broker_call_tmo(xway_decision_wait_ms(), XWAY_MSG_OFFER, off,
				 sizeof(*off), ofds, 4, XWAY_MSG_RESULT, &rx,
				 sizeof(rx), vfds, &nf);
	*res = rx.base;
	if (r != XWAY_MSG_RESULT || res->status != 1) {
		for (int i = 0; i < nf; i++)
			real.close(vfds[i]);
		return r < 0 ? r : 0;     /* 0: not pending, *res says why */
	}
	if (nf == 2 && rx.v.peer_domid == dom) {
		r = xway_chan_xen_server_fds(vfds, &rx.v, p, xc);   /* takes vfds */
	} else {
		for (int i = 0; i < nf; i++)
			real.close(vfds[i]);
		r = -EPROTO;
	}
	if (r < 0) {
		*xc = NULL;
		/* Registered but unusable: withdraw.  Nobody can claim it
		 * meanwhile (no SYN has left), and our grants are gone. */
		xway_offer_abandon(ofds[0], res->offer_id, 0, "no Xen channel end");
		return r;
	}
	xway_xen_pending_chan = *xc;
	XDBG("offer to Xen domain %u: vchan server end from the broker (port %u, "
	     "%u pages)", dom, rx.v.port, rx.v.map_pages);
	return XWAY_MSG_RESULT;
}

/* The name of a socket bound to the wildcard address of family and port
 * (host order; 0: unbound), as getsockname would give it. */
static int xway_wildcard_name(int family, uint16_t port, struct xway_addr *out)
{
	struct sockaddr_storage ss;
	socklen_t sl = xway_wildcard_sockaddr(family, port, &ss);

	return xway_sockaddr_to_addr((struct sockaddr *)&ss, sl, out);
}

/* Returns 1 when the caller should do a plain connect itself, else the
 * real connect's result as 0 or -errno.  fresh: what xway_fd_fresh knew of
 * fd before this connect (0: nothing; ask the kernel). */
int xway_setup_connect(int fd, const struct sockaddr *sa, socklen_t len, unsigned fresh)
{
	struct xway_addr dst, src;
	struct xway_offer off;
	struct xway_result res;
	struct xway_chan_params p = xway_params();
	struct xway_chan *chan = NULL;
	struct xway_conn *c;
	int family, cfds[3], nf, early = 0;
	uint32_t xdom, seq = 0;
	const void *map;
	size_t map_len = 0;
	long r, cr = 0;

	/* A socket made here and untouched is a TCP one, unconnected and
	 * unbound (fdtable.c), so none of these calls is made for it. */
	if (xway_cfg.disabled || xway_sockaddr_to_addr(sa, len, &dst) < 0 ||
	    (!fresh && !xway_is_tcp_stream(fd)))
		return 1;
	if (!fresh && xway_sock_name(fd, 1, &src) == 0)     /* already connected */
		return 1;
	if (!xway_config_allows(&xway_cfg, &dst)) {
		XDBG("connect fd %d: plain TCP (excluded)", fd);
		return 1;
	}
	if (xway_broker_neg_cached(&dst)) {
		XDBG("connect fd %d: plain TCP (no-listener, cached)", fd);
		return 1;
	}
	if (fresh ? xway_wildcard_name(fresh & XWAY_FRESH_V6 ? AF_INET6 : AF_INET, 0, &src)
		  : xway_sock_name(fd, 0, &src))
		return 1;
	family = src.family;          /* the socket's own (getsockname's) */
	memset(&off, 0, sizeof(off));
	if (getrandom(&off.cookie, sizeof(off.cookie), GRND_NONBLOCK) != sizeof(off.cookie))
		off.cookie = ((uint64_t)xway_pid() << 32) ^ (uint64_t)time(NULL) ^
			     (uint64_t)(uintptr_t)&off;
	if (src.port == 0) {
		/* The port is drawn from the cookie's randomness (srcport.c:
		 * why not bind(0)). */
		uint16_t port = 0;

		r = xway_bind_ephemeral(fd, family, off.cookie,
					fresh && !(fresh & XWAY_FRESH_OPTS_SET), &port);
		if (r == 0 && port)
			r = xway_wildcard_name(family, port, &src);
		else if (r == 0)
			r = xway_sock_name(fd, 0, &src);
		if (r < 0) {
			XDBG("connect fd %d: plain TCP (setup-bind: %s)", fd,
			     strerror((int)-r));
			xway_report_fallback(NULL, 0, XWAY_R_SETUP_BIND, r == -EADDRINUSE
					     ? "no source port: the ephemeral range is busy "
					       "(TIME_WAIT), left to connect()"
					     : "bind failed");
			return 1;
		}
	}
	off.dst = dst;
	off.src = src;
	off.ring_order = xway_cfg.ring_order;
	off.backend = XWAY_BACKEND_LOCAL;
	/* This broker said the listener is in Xen domain xdom, and no
	 * listener changed since: the Xen offer at once, and the local
	 * channel only carries the broker's decision (off.ring_order stays
	 * the vchan's). */
	if ((xdom = xway_broker_xen_cached(&dst))) {
		struct xway_chan_params dp = p;

		dp.flags |= XWAY_CHAN_F_DECISION;
		r = xway_chan_local_create ? xway_chan_local_create(&dp, off.cookie, &chan, cfds)
					   : -ENOSYS;
	} else {
		r = xway_chan_local_create ? xway_chan_local_create(&p, off.cookie, &chan, cfds)
					   : -ENOSYS;
	}
	if (r < 0) {
		XDBG("connect fd %d: plain TCP (setup-chan: %s)", fd, strerror((int)-r));
		xway_report_fallback(NULL, 0, XWAY_R_SETUP_CHAN, strerror((int)-r));
		return 1;
	}
	int ofds[4] = { fd, cfds[0], cfds[1], cfds[2] };
	memset(&res, 0, sizeof(res));
	nf = 0;
	/* As for CLAIM (xway_setup_accepted): an offer we gave up on while a
	 * slow broker still registered it could be claimed by the server
	 * while we use TCP; wait for the answer. */
	if (xdom) {
		r = XWAY_MSG_RESULT;
		res.status = XWAY_RESULT_XEN;
	} else if (xway_broker_loc_cached(&dst) &&
		   (r = xway_broker_request(XWAY_MSG_OFFER, XWAY_HDR_F_CONNECTING, &off,
					    sizeof(off), ofds, 4, &seq)) != -EBUSY) {
		/*
		 * A listener of this broker was at dst and none changed since:
		 * connect while the broker reads the offer, one broker round
		 * trip off the set-up.  The offer is queued to the broker
		 * before our SYN leaves, so before the server's CLAIM, and a
		 * CLAIM that matches nothing reads such queued offers first
		 * (broker/conn.c).  The answer is still awaited before
		 * connect returns: the application writes nothing before we
		 * know whether the channel or TCP carries its bytes.
		 */
		if (r == 0) {
			early = 1;
			cr = XWAY_SYS(real.connect(fd, sa, len));
			r = xway_broker_reply(seq, xway_decision_wait_ms(), &res,
					      sizeof(res), NULL, &nf);
			/* Too late for a Xen offer: the SYN is out. */
			if (r == XWAY_MSG_RESULT && res.status == XWAY_RESULT_XEN)
				res.status = -EXDEV;
		}
	} else {
		r = xway_broker_call_tmo(xway_decision_wait_ms(), XWAY_MSG_OFFER, &off,
					 sizeof(off), ofds, 4, XWAY_MSG_RESULT, &res,
					 sizeof(res), NULL, &nf);
		if (r == XWAY_MSG_RESULT && res.status == XWAY_RESULT_XEN &&
		    (xdom = xway_xen_dom_of(&res)))
			xway_broker_xen_add(&dst, xdom);
		else if (r == XWAY_MSG_RESULT && res.status == 1)
			xway_broker_loc_add(&dst);
	}
	if (r == XWAY_MSG_RESULT && res.status == XWAY_RESULT_XEN) {
		/* The listener is in another Xen domain: our data end is a
		 * libxenvchan server there; the local channel only carries
		 * the broker's decision (docs/XEN.md). */
		struct xway_chan *xc = NULL;

		r = xdom ? xway_xen_offer(&off, &res, &p, &xc, ofds, xdom) : -EPROTO;
		if (r == 0) {
			/* The broker's answer is in res (no listener there any
			 * more, or its set-up failed: recorded there). */
			r = XWAY_MSG_RESULT;
		} else if (r < 0) {
			xway_chan_close(chan);
			XDBG("connect fd %d: plain TCP (setup-chan: xen: %s)", fd,
			     strerror((int)-r));
			xway_report_fallback(NULL, 0, XWAY_R_SETUP_CHAN, "xen vchan set-up failed");
			return 1;
		}
		r = XWAY_MSG_RESULT;
	}
	if (r != XWAY_MSG_RESULT || res.status != 1) {
		xway_chan_close(chan);
		if (r == XWAY_MSG_RESULT && res.reason == XWAY_R_NO_LISTENER)
			xway_broker_neg_add(&dst);
		XDBG("connect fd %d: plain TCP (%s%s%s)", fd,
		     r < 0 ? "broker-down" : r == XWAY_MSG_RESULT ?
		     xway_reason_name(res.reason) : "setup-proto",
		     res.text[0] ? ": " : "", res.text);
		return early ? (int)cr : 1;
	}
	/* Our view of the header (the broker's decision word) and of ring 0
	 * (to move it onto TCP if the offer is withdrawn): the local end's
	 * own mapping, which lives as long as the connection's channel (for
	 * a Xen offer that is the decision channel the Xen end keeps). */
	map = xway_chan_local_shm ? xway_chan_local_shm(chan, &map_len) : NULL;
	if (map && off.backend == XWAY_BACKEND_XEN) {
		/* The Xen end owns the decision channel from now on. */
		struct xway_chan *xc = xway_xen_pending_chan;

		xway_xen_pending_chan = NULL;
		if (xway_chan_xen_set_decision(xc, chan) < 0) {
			/* Rare: epoll_create failed.  (Never early: see the
			 * Xen offer above.) */
			xway_offer_abandon(fd, res.offer_id, 0, "no decision channel");
			xway_chan_close(xc);
			xway_chan_close(chan);
			return 1;
		}
		chan = xc;
	}
	c = map ? xway_conn_new_chan(fd, 0, chan, 0) : NULL;
	if (!c) {
		xway_offer_abandon(fd, res.offer_id, early, "no memory for the connection");
		if (xway_xen_pending_chan) {
			xway_chan_close(xway_xen_pending_chan);
			xway_xen_pending_chan = NULL;
		}
		/* A Xen end closes the decision channel it owns with it. */
		xway_chan_close(chan);
		return early ? (int)cr : 1;
	}
	c->family = family;
	c->cookie = off.cookie;
	c->offer_id = res.offer_id;
	c->hdr = map;
	c->hdr_len = map_len;
	c->hdr_borrowed = 1;
	c->local = src;
	c->peer = dst;
	xway_snapshot_opts(c, fd, fresh);
	atomic_store_explicit(&c->state, XWAY_ST_PENDING, memory_order_relaxed);
	if (xway_fd_set(fd, c) < 0) {
		/* Registered: withdraw, or the server could claim it while we
		 * use TCP. */
		xway_offer_abandon(fd, c->offer_id, early, "no room in the descriptor table");
		xway_conn_put(c);
		return early ? (int)cr : 1;
	}
	r = early ? cr : XWAY_SYS(real.connect(fd, sa, len));
	if (r < 0 && r != -EINPROGRESS && r != -EINTR) {
		/* No TCP connection: nothing can be claimed; withdraw and
		 * give the app exactly the kernel's answer. */
		struct xway_withdraw w = { .offer_id = c->offer_id };
		xway_broker_call(XWAY_MSG_WITHDRAW, &w, sizeof(w), NULL, 0,
				 XWAY_MSG_RESULT, &res, sizeof(res), NULL, NULL);
		atomic_store_explicit(&c->state, XWAY_ST_FLUSH, memory_order_release);
		xway_fd_drop_conn(c);
		xway_conn_put(c);
		XDBG("connect fd %d: %s; offer withdrawn", fd, strerror((int)-r));
		return (int)r;
	}
	XDBG("connect fd %d: pending (offer %llu, cookie %016llx)", fd,
	     (unsigned long long)c->offer_id, (unsigned long long)c->cookie);
	xway_conn_put(c);
	return (int)r;
}

static int xway_flush_locked(struct xway_conn *c, int nonblock);

/* Under c->lock, state PENDING, the broker decided "withdrawn": copy what
 * we wrote into ring 0 (never consumed: the server never attached) into
 * flush_buf; io.c writes it to TCP before anything else. */
static void xway_go_tcp(struct xway_conn *c)
{
	const struct xway_chan_shm *h = c->hdr;
	uint32_t order, prod, cons, flags, size, n, off;

	if (xway_chan_backend(c->chan) == XWAY_BACKEND_XEN) {
		/* The bytes we wrote into the vchan nobody connected to. */
		size_t cap = xway_chan_capacity(c->chan);
		ssize_t k;

		c->flush_buf = cap ? malloc(cap) : NULL;
		if (c->flush_buf) {
			k = xway_chan_xen_take_unsent(c->chan, c->flush_buf, cap);
			c->flush_len = k > 0 ? (size_t)k : 0;
			c->flush_off = 0;
			if (k < 0)
				XWARN("fd %d: withdrawn Xen offer: unsent bytes lost (%s)",
				      c->fd, strerror((int)-k));
		}
		if (atomic_load_explicit(&c->wr_shut, memory_order_relaxed) == 3)
			atomic_store_explicit(&c->wr_shut, 2, memory_order_relaxed); /* owed */
		goto out;
	}
	order = h->ring_order[0];
	if (order < XWAY_RING_ORDER_MIN || order > XWAY_RING_ORDER_MAX ||
	    XWAY_CHAN_HDR_SIZE + ((size_t)1 << order) > c->hdr_len)
		goto out;
	size = 1u << order;
	/* Acquire: the bytes of ring 0 before its producer index (we wrote
	 * both; other threads of ours may have). */
	prod = __atomic_load_n(&h->ring[0].prod, __ATOMIC_ACQUIRE);
	cons = __atomic_load_n(&h->ring[0].cons, __ATOMIC_ACQUIRE);
	flags = __atomic_load_n(&h->ring[0].prod_flags, __ATOMIC_ACQUIRE);
	n = prod - cons;
	if (n > size)
		goto out;
	if (n) {
		c->flush_buf = malloc(n);
		if (!c->flush_buf)
			goto out;
		off = cons & (size - 1);
		const char *data = (const char *)h + XWAY_CHAN_HDR_SIZE;
		uint32_t first = size - off < n ? size - off : n;
		memcpy(c->flush_buf, data + off, first);
		memcpy(c->flush_buf + first, data, n - first);
		c->flush_len = n;
		c->flush_off = 0;
	}
	if ((flags & XWAY_RING_F_EOF) ||
	    atomic_load_explicit(&c->wr_shut, memory_order_relaxed) == 3)
		atomic_store_explicit(&c->wr_shut, 2, memory_order_relaxed); /* owed */
out:
	XDBG("fd %d: offer withdrawn; %zu bytes move to TCP", c->fd, c->flush_len);
	atomic_store_explicit(&c->state, XWAY_ST_FLUSH, memory_order_release);
	/* Push at once what the socket buffer takes: the app may next wait
	 * for an answer to those bytes without calling into us again. */
	xway_flush_locked(c, 1);
}

int xway_pending_resolve(struct xway_conn *c, int tcp_ready)
{
	int st = atomic_load_explicit(&c->state, memory_order_acquire);
	uint32_t a;

	if (st != XWAY_ST_PENDING)
		return st;
	pthread_mutex_lock(&c->lock);
	st = atomic_load_explicit(&c->state, memory_order_acquire);
	if (st != XWAY_ST_PENDING)
		goto out;
	/* Acquire: the broker's decision before anything it implies. */
	a = __atomic_load_n(&c->hdr->attached, __ATOMIC_ACQUIRE);
	int xen = xway_chan_backend(c->chan) == XWAY_BACKEND_XEN;
	/* Xen: the server connects to our vchan only after its broker said
	 * "claimed"; our broker may not have heard it yet. */
	if (a == XWAY_ATTACH_PENDING && xen && xway_chan_xen_peer_attached(c->chan))
		a = XWAY_ATTACH_CLAIMED;
	if (a == XWAY_ATTACH_PENDING && tcp_ready) {
		/* The server answered on TCP (or closed): it is not on the
		 * channel.  Only "already claimed" keeps us on it. */
		struct xway_withdraw w = { .offer_id = c->offer_id };
		struct xway_result res;
		memset(&res, 0, sizeof(res));
		long r = xway_broker_call(XWAY_MSG_WITHDRAW, &w, sizeof(w), NULL, 0,
					  XWAY_MSG_RESULT, &res, sizeof(res),
					  NULL, NULL);
		if (xen && !(r == XWAY_MSG_RESULT &&
			     (res.status == -EALREADY || res.status == 0))) {
			/* Forwarded to the server-side broker (status 1; our
			 * broker asks once however often we call), or no
			 * answer: only that broker decides, and the decision
			 * lands in the header.  Sleep a little on it rather
			 * than spin on the readable TCP socket. */
			struct pollfd pf = { .fd = xway_chan_pollfd(c->chan), .events = POLLIN };

			real.poll(&pf, 1, 20);
			a = __atomic_load_n(&c->hdr->attached, __ATOMIC_ACQUIRE);
			if (a == XWAY_ATTACH_PENDING && xway_chan_xen_peer_attached(c->chan))
				a = XWAY_ATTACH_CLAIMED;
		} else if (r == XWAY_MSG_RESULT && res.status == -EPERM) {
			/* The offer belongs to another user's link (it was
			 * handed to us by SCM_RIGHTS): only the broker's
			 * expiry can withdraw it now; stay pending until the
			 * decision lands in the header. */
			a = XWAY_ATTACH_PENDING;
		} else {
			a = (r == XWAY_MSG_RESULT && res.status == -EALREADY)
			    ? XWAY_ATTACH_CLAIMED : XWAY_ATTACH_WITHDRAWN;
		}
	}
	if (a == XWAY_ATTACH_CLAIMED) {
		if (atomic_load_explicit(&c->wr_shut, memory_order_relaxed) == 3) {
			/* SHUT_WR while pending: the ring has the EOF; now the
			 * FIN (xway_io_shutdown). */
			real.shutdown(c->fd, SHUT_WR);
			atomic_store_explicit(&c->wr_shut, 1, memory_order_relaxed);
		}
		atomic_store_explicit(&c->state, XWAY_ST_ACCEL, memory_order_release);
		XDBG("fd %d: claimed, accelerated", c->fd);
	} else if (a != XWAY_ATTACH_PENDING) {
		xway_go_tcp(c);
	}
	st = atomic_load_explicit(&c->state, memory_order_acquire);
out:
	pthread_mutex_unlock(&c->lock);
	return st;
}

/* Under c->lock. */
static int xway_flush_locked(struct xway_conn *c, int nonblock)
{
	int r = 0;

	for (int spins = 0; c->flush_off < c->flush_len && spins < 1000000; spins++) {
		long n = XWAY_SYS(real.send(c->fd, c->flush_buf + c->flush_off,
					    c->flush_len - c->flush_off,
					    MSG_NOSIGNAL | (nonblock ? MSG_DONTWAIT : 0)));
		if (n == -EINTR)
			continue;
		if (n < 0) {
			r = (int)n;
			break;
		}
		c->flush_off += (size_t)n;
	}
	if (c->flush_off >= c->flush_len) {
		free(c->flush_buf);
		c->flush_buf = NULL;
		c->flush_len = c->flush_off = 0;
		if (atomic_load_explicit(&c->wr_shut, memory_order_relaxed) == 2) {
			real.shutdown(c->fd, SHUT_WR);
			atomic_store_explicit(&c->wr_shut, 1, memory_order_relaxed);
		}
		r = 0;
	}
	return r;
}

int xway_flush_owed(struct xway_conn *c, int nonblock)
{
	int r;

	pthread_mutex_lock(&c->lock);
	r = xway_flush_locked(c, nonblock);
	pthread_mutex_unlock(&c->lock);
	return r;
}

int xway_flush_pending(struct xway_conn *c)
{
	return __atomic_load_n(&c->flush_len, __ATOMIC_RELAXED) > 0;
}

/* ---- teardown -------------------------------------------------------- */

static void xway_linger_wait(struct xway_conn *c)
{
	/* SO_LINGER {1,N}: until the peer consumed what we wrote, or N s. */
	struct timespec t0, now;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < 100000 && xway_chan_unsent(c->chan) > 0; i++) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		long left = (long)c->linger_s * 1000 -
			    ((now.tv_sec - t0.tv_sec) * 1000 +
			     (now.tv_nsec - t0.tv_nsec) / 1000000);
		if (left <= 0)
			break;
		int r = xway_chan_wait(c->chan, XWAY_EV_OUT, c->fd,
				       left < 50 ? (int)left : 50);
		if (r > 0 && (r & (XWAY_EV_EXTRA | XWAY_EV_RST | XWAY_EV_ERR | XWAY_EV_HUP))
		    && !(r & XWAY_EV_OUT)) {
			/* The peer's end is gone (FIN/RST on TCP): nobody will
			 * consume; stop waiting. */
			char b;
			long pk = XWAY_SYS(real.recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT));
			if (pk != -EAGAIN)
				break;
		}
	}
}

void xway_conn_last_close(struct xway_conn *c)
{
	int st = atomic_load_explicit(&c->state, memory_order_acquire);
	int last;

	/* A pending client still held elsewhere (a fork child, or a process
	 * it was handed to by SCM_RIGHTS) stays pending: the holder that
	 * remains follows the broker's decision.  Only the last one gives up. */
	if (st == XWAY_ST_PENDING &&
	    atomic_load_explicit(&c->shared->holders, memory_order_acquire) <= 1) {
		st = xway_pending_resolve(c, 1);
	}
	last = atomic_fetch_sub_explicit(&c->shared->holders, 1,
					 memory_order_acq_rel) == 1;
	/* The peer left the channel (its socket went to a process without
	 * the shim, or across Xen a fork/exec) and we never looked since:
	 * what we wrote and it never consumed must still reach TCP before
	 * our FIN, as the kernel delivers a send buffer after close.  Taking
	 * it back now moves the connection to FLUSH (owed bytes delivered
	 * below) and records the leave; unread bytes of the leaver's final
	 * ring keep it ACCEL, and the close resets as with unread data. */
	if (last && st == XWAY_ST_ACCEL && c->chan && !c->reverted &&
	    (xway_chan_reverted(c->chan) & XWAY_REVERT_PEER_STOPPED))
		st = xway_io_revert(c) < 0 ? XWAY_ST_ACCEL
					   : atomic_load_explicit(&c->state, memory_order_acquire);
	switch (st) {
	case XWAY_ST_LISTENER:
		if (last && atomic_load_explicit(&c->registered, memory_order_acquire)) {
			struct xway_listen body = { .addr = c->local };
			struct xway_result res;
			xway_broker_call(XWAY_MSG_LISTEN_DEL, &body, sizeof(body),
					 &c->fd, 1, XWAY_MSG_RESULT, &res,
					 sizeof(res), NULL, NULL);
		}
		break;
	case XWAY_ST_FLUSH:
		if (c->flush_len > c->flush_off) {
			/* Deliver what the app wrote before it closed, as the
			 * kernel would from its send buffer (bounded). */
			struct pollfd pf = { .fd = c->fd, .events = POLLOUT };
			for (int i = 0; i < 100 && c->flush_off < c->flush_len; i++) {
				if (xway_flush_owed(c, 1) != -EAGAIN)
					break;
				real.poll(&pf, 1, 50);
			}
		}
		break;
	case XWAY_ST_ACCEL:
		if (!last)
			break;
		if ((c->linger_on && c->linger_s == 0) ||
		    xway_chan_readable(c->chan) > 0) {
			/* Abortive close, as the kernel does with unread data
			 * or SO_LINGER {1,0}: RST on both paths. */
			struct linger lg = { 1, 0 };
			xway_chan_reset(c->chan);
			real.setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		} else {
			if (c->linger_on && c->linger_s > 0)
				xway_linger_wait(c);
			xway_chan_close_rd(c->chan);
		}
		xway_report_closed(c);
		break;
	default:
		break;
	}
	atomic_store_explicit(&c->state, XWAY_ST_CLOSED, memory_order_release);
}

int xway_close_fd(int fd)
{
	struct xway_conn *c = xway_fd_take(fd);
	long r;

	if (!c)
		return 1;
	if (atomic_load_explicit(&c->slots, memory_order_acquire) == 0)
		xway_conn_last_close(c);
	else if (c->fd == fd)
		c->fd = xway_fd_other(c, fd);
	r = XWAY_SYS(real.close(fd));
	xway_conn_put(c);
	return (int)r;
}

void xway_conn_free(struct xway_conn *c)
{
	if (c->chan && xway_chan_close) {
		/* Other processes still hold the connection (the count went
		 * down in xway_conn_last_close): a Xen end then only unmaps,
		 * the channel is theirs (a followed fork). */
		if (c->shared && xway_chan_backend(c->chan) == XWAY_BACKEND_XEN &&
		    atomic_load_explicit(&c->shared->holders, memory_order_acquire) > 0)
			xway_chan_xen_others_hold(c->chan);
		xway_chan_close(c->chan);
	}
	c->chan = NULL;
	if (c->hdr && !c->hdr_borrowed)
		munmap((void *)c->hdr, c->hdr_len);
	c->hdr = NULL;
	free(c->flush_buf);
	c->flush_buf = NULL;
}
