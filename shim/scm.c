/* SPDX-License-Identifier: MIT */
/*
 * SCM_RIGHTS hand-over of accelerated fds (the in-band design: no broker
 * change).  When an accelerated connection's fd is sent over a socket that
 * is not ours (an AF_UNIX socket), the sender appends to the same
 * SCM_RIGHTS message a marker memfd ("xway-scm": magic, and per connection
 * the index of its socket among the app's fds, side, cookie, 4-tuple)
 * followed by the connection's channel fds (memfd, efd0, efd1).  A
 * receiving process that runs the shim finds the marker among the fds it
 * received, validates every record (the socket is TCP with that 4-tuple,
 * the memfd is sealed and carries that cookie: xway_chan_local_attach),
 * re-attaches, closes the marker and hands the app exactly the fds that
 * were sent, in their order, with the kernel's MSG_CTRUNC behaviour for a
 * control buffer that is too small.  A receiver WITHOUT the shim gets the
 * extra fds and a socket whose bytes travel on a channel it cannot read:
 * documented in shim/README.md (LD_PRELOAD reaches every process of the
 * applications in HAZARDS.md that pass sockets).  Both processes then use
 * the connection like two forked holders.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "errno.h"
#include "lifecycle.h"

#define XWAY_SCM_MAGIC  "XWAYSCM3"
#define XWAY_SCM_MAXFD  253       /* SCM_MAX_FD */
#define XWAY_SCM_MAXREC 32

struct xway_scm_rec {
	int32_t  index;           /* of the socket among the app's fds */
	int32_t  side;
	uint64_t cookie;
	struct xway_addr local, peer;
	uint32_t pending;         /* a client whose offer is not decided yet */
	uint32_t reserved;
	uint64_t offer_id;        /* its offer, while pending */
};

/* Hand-over state word (the marker memfd stays mapped by the sender):
 * OFFERED when sent; a shimmed receiver moves it to TAKEN (CAS); a sender
 * that still sees OFFERED XWAY_SCM_AUDIT_NS later (or at its exit) moves it
 * to UNTAKEN and logs that the receiver cannot use the connection. */
enum { XWAY_SCM_OFFERED = 1, XWAY_SCM_TAKEN = 2, XWAY_SCM_UNTAKEN = 3 };
#define XWAY_SCM_AUDIT_NS (2 * 1000000000LL)
#define XWAY_SCM_OUT 64

struct xway_scm_hdr {
	char     magic[8];
	uint32_t count;
	uint32_t napp;            /* fds the app sent */
	_Atomic uint32_t state;   /* XWAY_SCM_* (shared: both map the memfd) */
	uint32_t reserved;
	struct xway_scm_rec rec[XWAY_SCM_MAXREC];
};

/* Hand-overs this process sent and has not seen taken yet. */
static struct xway_scm_out {
	struct xway_scm_hdr *map;
	int64_t sent_ns;
	pid_t pid;                /* the sender (a fork child forgets them) */
} xway_scm_out[XWAY_SCM_OUT];
static pthread_mutex_t xway_scm_out_lock = PTHREAD_MUTEX_INITIALIZER;

/* Look at the hand-overs still out: forget the taken ones; one untaken for
 * XWAY_SCM_AUDIT_NS (every one with wait_ns < 0: exit) is logged.  The
 * receiver of an unshimmed process gets a socket whose bytes travel on a
 * channel it cannot read; nothing here can repair that (see shim/README.md),
 * but it must never be silent. */
static void xway_scm_audit(int64_t force_after_ns)
{
	int64_t now = xway_now_ns();

	pthread_mutex_lock(&xway_scm_out_lock);
	for (int i = 0; i < XWAY_SCM_OUT; i++) {
		struct xway_scm_out *o = &xway_scm_out[i];
		uint32_t exp = XWAY_SCM_OFFERED;

		if (!o->map)
			continue;
		if (o->pid != getpid())
			goto forget;      /* our parent's hand-over: its business */
		/* Acquire: pairs with the receiver's CAS (nothing else is read
		 * from the page after it; the order is for clarity). */
		if (atomic_load_explicit(&o->map->state, memory_order_acquire) ==
		    XWAY_SCM_OFFERED) {
			if (now - o->sent_ns < (force_after_ns >= 0 ? force_after_ns
					       : XWAY_SCM_AUDIT_NS))
				continue;
			/* seq_cst CAS against the receiver's: exactly one of
			 * TAKEN and UNTAKEN wins. */
			if (atomic_compare_exchange_strong(&o->map->state, &exp,
							   XWAY_SCM_UNTAKEN))
				XWARN("sendmsg: %u accelerated connection(s) passed by "
				      "SCM_RIGHTS %lld ms ago were not taken by a process "
				      "running libxway.so (receiver without the shim, or "
				      "the fds were dropped; or a receiver under a seccomp "
				      "filter that could not confirm): a process without "
				      "the shim cannot read their bytes, which travel on "
				      "the channel",
				      o->map->count, (long long)((now - o->sent_ns) / 1000000));
		}
forget:
		munmap(o->map, sizeof(*o->map));
		o->map = NULL;
	}
	pthread_mutex_unlock(&xway_scm_out_lock);
}

/* Keep the marker of a sent hand-over mapped for the audit. */
static void xway_scm_remember(int marker)
{
	void *map;

	/* Under a seccomp filter a writable shared mapping may be fatal (see
	 * xway_scm_taken): no audit there. */
	if (xway_lc_sandboxed)
		return;
	map = mmap(NULL, sizeof(struct xway_scm_hdr), PROT_READ | PROT_WRITE,
		   MAP_SHARED, marker, 0);
	if (map == MAP_FAILED)
		return;               /* no audit for this one: not fatal */
	for (int round = 0; round < 2; round++) {
		pthread_mutex_lock(&xway_scm_out_lock);
		for (int i = 0; i < XWAY_SCM_OUT; i++)
			if (!xway_scm_out[i].map) {
				xway_scm_out[i].map = map;
				xway_scm_out[i].sent_ns = xway_now_ns();
				xway_scm_out[i].pid = getpid();
				pthread_mutex_unlock(&xway_scm_out_lock);
				return;
			}
		pthread_mutex_unlock(&xway_scm_out_lock);
		xway_scm_audit(round == 0 ? XWAY_SCM_AUDIT_NS : 0);
	}
	munmap(map, sizeof(struct xway_scm_hdr));
}

void xway_scm_at_exit(void)
{
	/* At exit: a receiver that is still about to take the hand-over gets
	 * a moment (bounded), then whatever is untaken is logged. */
	for (int i = 0; i < 50; i++) {
		int out = 0;
		xway_scm_audit(XWAY_SCM_AUDIT_NS);
		pthread_mutex_lock(&xway_scm_out_lock);
		for (int k = 0; k < XWAY_SCM_OUT; k++)
			out += xway_scm_out[k].map != NULL &&
			       xway_scm_out[k].pid == getpid();
		pthread_mutex_unlock(&xway_scm_out_lock);
		if (!out)
			return;
		struct timespec nap = { 0, 10000000 };
		nanosleep(&nap, NULL);
	}
	xway_scm_audit(0);
}

/* ---- sender ------------------------------------------------------------ */

ssize_t xway_scm_sendmsg(int fd, const struct msghdr *msg, int flags)
{
	struct cmsghdr *cm;
	struct xway_scm_hdr hdr;
	struct xway_conn *conns[XWAY_SCM_MAXREC];
	int app[XWAY_SCM_MAXFD], napp = 0, nconn = 0, marker = -1;
	ssize_t r;

	xway_scm_audit(-1);
	/* The app's fds, in order, across its SCM_RIGHTS messages. */
	for (cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR((struct msghdr *)msg, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		int n = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (int i = 0; i < n && napp < XWAY_SCM_MAXFD; i++)
			memcpy(&app[napp++], CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
	}
	memset(&hdr, 0, sizeof(hdr));
	for (int i = 0; i < napp && nconn < XWAY_SCM_MAXREC; i++) {
		struct xway_conn *c = xway_fd_get(app[i]);
		if (!c)
			continue;
		/* A client still waiting for the broker's decision (vsftpd's
		 * privileged process connects for active FTP and passes the
		 * socket at once; the acceptor only accepts after the session
		 * answered on the control connection) is handed over PENDING:
		 * the decision lands in the channel header both processes map,
		 * so whichever holds the connection follows it. */
		int st = atomic_load_explicit(&c->state, memory_order_acquire);
		if (st == XWAY_ST_PENDING)
			st = xway_pending_resolve(c, 0);
		if (st == XWAY_ST_FLUSH)
			xway_flush_owed(c, 0);
		if ((st != XWAY_ST_ACCEL && st != XWAY_ST_PENDING) || !c->chan) {
			xway_conn_put(c);
			continue;
		}
		if (st == XWAY_ST_PENDING) {
			hdr.rec[nconn].pending = 1;
			hdr.rec[nconn].offer_id = c->offer_id;
		}
		hdr.rec[nconn].index = i;
		hdr.rec[nconn].side = c->side;
		hdr.rec[nconn].cookie = c->cookie;
		hdr.rec[nconn].local = c->local;
		hdr.rec[nconn].peer = c->peer;
		conns[nconn++] = c;
	}
	if (nconn == 0 || napp + 1 + 3 * nconn > XWAY_SCM_MAXFD) {
		if (nconn)
			XWARN("sendmsg: too many fds to hand %d accelerated connection(s) "
			      "over; the receiver will not reach their channels", nconn);
		r = XWAY_SYS(real.sendmsg(fd, msg, flags));
		goto out_put;
	}
	memcpy(hdr.magic, XWAY_SCM_MAGIC, 8);
	hdr.count = (uint32_t)nconn;
	hdr.napp = (uint32_t)napp;
	atomic_store_explicit(&hdr.state, XWAY_SCM_OFFERED, memory_order_relaxed);
	r = XWAY_SYS(memfd_create("xway-scm", MFD_CLOEXEC));
	if (r < 0)
		goto out_plain;
	marker = (int)r;
	if (XWAY_SYS(real.write(marker, &hdr, sizeof(hdr))) != (long)sizeof(hdr))
		goto out_plain;

	/* A new control buffer: the app's non-rights cmsgs as they are, then
	 * one SCM_RIGHTS with the app's fds, the marker, the channel fds. */
	{
		int all[XWAY_SCM_MAXFD], nall = napp;
		size_t other = 0, len;
		char *ctl;
		struct msghdr m = *msg;

		memcpy(all, app, sizeof(int) * (size_t)napp);
		all[nall++] = marker;
		for (int k = 0; k < nconn; k++)
			nall += xway_chan_fds(conns[k]->chan, all + nall, 3);
		for (cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR((struct msghdr *)msg, cm))
			if (!(cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS))
				other += CMSG_SPACE(cm->cmsg_len - CMSG_LEN(0));
		len = other + CMSG_SPACE(sizeof(int) * (size_t)nall);
		ctl = calloc(1, len);
		if (!ctl)
			goto out_plain;
		m.msg_control = ctl;
		m.msg_controllen = len;
		struct cmsghdr *o = CMSG_FIRSTHDR(&m);
		for (cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR((struct msghdr *)msg, cm)) {
			if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
				continue;
			memcpy(o, cm, cm->cmsg_len);
			o = CMSG_NXTHDR(&m, o);
		}
		o->cmsg_level = SOL_SOCKET;
		o->cmsg_type = SCM_RIGHTS;
		o->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nall);
		memcpy(CMSG_DATA(o), all, sizeof(int) * (size_t)nall);
		r = XWAY_SYS(real.sendmsg(fd, &m, flags));
		free(ctl);
		/* The receiver holds the connection now, counted in its own
		 * tree: ours must never do the last-holder teardown (reset,
		 * reading side closed) under it.  The kernel's FIN/RST at the
		 * socket's last close anywhere still reaches the peer. */
		for (int k = 0; r >= 0 && k < nconn; k++)
			atomic_fetch_add_explicit(&conns[k]->shared->holders, 1,
						  memory_order_acq_rel);
		if (r >= 0)
			xway_scm_remember(marker);
		XDBG("sendmsg fd %d: %d accelerated connection(s) handed over", fd, nconn);
	}
	goto out_put;
out_plain:
	XWARN("sendmsg: cannot hand accelerated connections over (%s)",
	      strerror(r < 0 ? (int)-r : EIO));
	r = XWAY_SYS(real.sendmsg(fd, msg, flags));
out_put:
	if (marker >= 0)
		real.close(marker);
	for (int k = 0; k < nconn; k++)
		xway_conn_put(conns[k]);
	return r;
}

/* ---- receiver ---------------------------------------------------------- */

/* Is fd our marker?  Reads it into *hdr.  Only regular files are read
 * (fstat is allowed in the sandboxes of HAZARDS.md). */
static int xway_scm_is_marker(int fd, struct xway_scm_hdr *hdr)
{
	struct stat st;

	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size != sizeof(*hdr))
		return 0;
	if (pread(fd, hdr, sizeof(*hdr), 0) != (ssize_t)sizeof(*hdr))
		return 0;
	return memcmp(hdr->magic, XWAY_SCM_MAGIC, 8) == 0 &&
	       hdr->count >= 1 && hdr->count <= XWAY_SCM_MAXREC;
}

static int xway_scm_same(int fd, int peer, const struct xway_addr *want)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	struct xway_addr got;

	if ((peer ? real.getpeername(fd, (struct sockaddr *)&ss, &len)
		  : real.getsockname(fd, (struct sockaddr *)&ss, &len)) < 0 ||
	    xway_sockaddr_to_addr((struct sockaddr *)&ss, len, &got) < 0)
		return 0;
	/* A client's local address is recorded as bound before connect
	 * (it may be the wildcard): then only the port must match. */
	static const uint8_t any[16], any4[16] = { [10] = 0xff, [11] = 0xff };
	return (got.port == want->port || want->port == 0) &&
	       (memcmp(want->ip, any, 16) == 0 || memcmp(want->ip, any4, 16) == 0 ||
		memcmp(got.ip, want->ip, 16) == 0);
}

/* Attach one handed-over connection; the channel fds are consumed. */
static int xway_scm_attach(int sock, const struct xway_scm_rec *rec, const int cf[3])
{
	struct xway_chan_params p = { xway_cfg.ring_order, xway_cfg.spin_ns };
	struct xway_chan *chan = NULL;
	struct xway_conn *c;
	void *map = NULL;
	size_t map_len = 0;
	int v, r;
	socklen_t l = sizeof(v);

	if (xway_fd_is_ours(sock) ||
	    real.getsockopt(sock, SOL_SOCKET, SO_PROTOCOL, &v, &l) < 0 || v != IPPROTO_TCP ||
	    !xway_scm_same(sock, 0, &rec->local) || !xway_scm_same(sock, 1, &rec->peer) ||
	    (rec->side != 0 && rec->side != 1) || !xway_chan_local_attach)
		return -EBADF;
	if (rec->pending && rec->side != 0) {
		XDBG("scm attach: pending record for side %d", rec->side);
		return -EINVAL;          /* only a client waits for a decision */
	}
	if (rec->pending) {
		/* Our own read-only view of the header (the broker's decision
		 * word) and of ring 0, as the connecting process has.  Mapped
		 * before the attach, which takes the fds over (moves them). */
		struct stat st;
		if (fstat(cf[0], &st) < 0 || st.st_size < (off_t)XWAY_CHAN_HDR_SIZE)
			return -EINVAL;
		map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, cf[0], 0);
		if (map == MAP_FAILED)
			return -errno;
		map_len = (size_t)st.st_size;
	}
	r = xway_chan_local_attach(cf, rec->side, rec->cookie, &p, &chan);
	if (r < 0) {
		XDBG("scm attach: channel attach failed: %d", r);
		if (map)
			munmap(map, map_len);
		return r;
	}
	c = xway_conn_new(sock, rec->side);
	if (!c) {
		if (map)
			munmap(map, map_len);
		xway_chan_close(chan);
		return -ENOMEM;
	}
	if (map) {
		c->hdr = map;
		c->hdr_len = map_len;
		c->offer_id = rec->offer_id;
	}
	c->chan = chan;
	c->cookie = rec->cookie;
	c->family = rec->local.family;
	c->local = rec->local;
	c->peer = rec->peer;
	v = real.fcntl(sock, F_GETFL, 0);
	atomic_store_explicit(&c->nonblock, v >= 0 && (v & O_NONBLOCK), memory_order_relaxed);
	atomic_store_explicit(&c->state, map ? XWAY_ST_PENDING : XWAY_ST_ACCEL,
			      memory_order_release);
	r = xway_fd_set(sock, c);
	if (r < 0)
		XDBG("scm attach: fd table: %d", r);
	xway_conn_put(c);
	return r;
}

/* Tell the sender a shimmed process took the hand-over (CAS on the state
 * word of the marker it keeps mapped). */
static void xway_scm_taken(int marker)
{
	struct xway_scm_hdr *map;
	uint32_t exp = XWAY_SCM_OFFERED;

	/* Under a seccomp filter a writable shared mapping may be fatal
	 * (vsftpd's allows only private anonymous ones): no confirmation
	 * then; the sender's warning names that case too. */
	if (xway_lc_sandboxed)
		return;
	map = mmap(NULL, sizeof(*map), PROT_READ | PROT_WRITE, MAP_SHARED, marker, 0);
	if (map == MAP_FAILED)
		return;       /* the sender will log a false alarm; harmless */
	/* seq_cst CAS: see xway_scm_audit. */
	if (!atomic_compare_exchange_strong(&map->state, &exp, XWAY_SCM_TAKEN) &&
	    exp == XWAY_SCM_UNTAKEN)
		XWARN("recvmsg: taking accelerated connection(s) the sender had "
		      "already reported as not taken (received late)");
	munmap(map, sizeof(*map));
}

ssize_t xway_scm_recvmsg(int fd, struct msghdr *msg, int flags)
{
	char stackbuf[4096];
	size_t extra = CMSG_SPACE(sizeof(int) * XWAY_SCM_MAXFD);
	size_t len = msg->msg_controllen + extra;
	char *ctl = len <= sizeof(stackbuf) ? stackbuf : malloc(len);
	struct msghdr m = *msg;
	struct cmsghdr *cm, *o;
	size_t used = 0;
	int ctrunc = 0;
	ssize_t r;

	if (!ctl)
		return XWAY_SYS(real.recvmsg(fd, msg, flags));
	m.msg_control = ctl;
	m.msg_controllen = len;
	r = XWAY_SYS(real.recvmsg(fd, &m, flags));
	if (r < 0)
		goto out;
	msg->msg_namelen = m.msg_namelen;
	msg->msg_flags = m.msg_flags & ~MSG_CTRUNC;
	ctrunc = m.msg_flags & MSG_CTRUNC;

	/* Hand-over: strip the marker and the channel fds (the rights
	 * cmsg keeps only the app's fds: strip_n of them). */
	struct cmsghdr *strip_cm = NULL;
	int strip_n = 0;
	for (cm = CMSG_FIRSTHDR(&m); cm && !strip_cm; cm = CMSG_NXTHDR(&m, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		int n = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int)), *f = (int *)CMSG_DATA(cm);
		struct xway_scm_hdr hdr;
		for (int i = 0; i < n; i++) {
			if (!xway_scm_is_marker(f[i], &hdr))
				continue;
			if (hdr.napp != (uint32_t)i || i + 1 + 3 * (int)hdr.count > n)
				break;              /* not ours after all */
			int *cf = f + i + 1;
			xway_scm_taken(f[i]);
			for (uint32_t k = 0; k < hdr.count; k++) {
				int idx = hdr.rec[k].index;
				int rr = idx >= 0 && idx < i
					 ? xway_scm_attach(f[idx], &hdr.rec[k], cf + 3 * k) : -EINVAL;
				if (rr < 0) {
					XWARN("recvmsg: a handed-over connection was refused "
					      "(%s); it stays plain TCP", strerror(-rr));
					for (int j = 0; j < 3; j++)
						real.close(cf[3 * k + j]);
				}
			}
			real.close(f[i]);
			for (int j = i + 1 + 3 * (int)hdr.count; j < n; j++)
				real.close(f[j]);   /* nothing else follows ours */
			strip_cm = cm;
			strip_n = i;
			break;
		}
	}
	if (ctrunc && !strip_cm)
		/* The kernel could not give us every fd (RLIMIT_NOFILE): if
		 * the message carried a hand-over, its channel is lost and the
		 * connection unusable here (see shim/README.md). */
		XWARN("recvmsg fd %d: control data truncated by the kernel; an "
		      "accelerated connection passed here cannot be re-attached", fd);
	/* Copy into the app's buffer as the kernel would have: what does not
	 * fit is cut (MSG_CTRUNC) and its fds closed. */
	o = msg->msg_controllen >= sizeof(struct cmsghdr) ? CMSG_FIRSTHDR(msg) : NULL;
	for (cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm)) {
		size_t room = msg->msg_controllen - used;
		int rights = cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS;
		int n = rights ? (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int)) : 0;
		if (cm == strip_cm)
			n = strip_n;
		if (!o || room < CMSG_LEN(0)) {
			ctrunc = 1;
			for (int i = 0; i < n; i++)
				real.close(((int *)CMSG_DATA(cm))[i]);
			continue;
		}
		if (rights) {
			int fit = (int)((room - CMSG_LEN(0)) / sizeof(int));
			if (fit > n)
				fit = n;
			for (int i = fit; i < n; i++)
				real.close(((int *)CMSG_DATA(cm))[i]);
			if (fit < n)
				ctrunc = 1;
			memcpy(o, cm, CMSG_LEN(0));
			o->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)fit);
			memcpy(CMSG_DATA(o), CMSG_DATA(cm), sizeof(int) * (size_t)fit);
		} else {
			size_t l = cm->cmsg_len <= room ? cm->cmsg_len : room;
			if (l < cm->cmsg_len)
				ctrunc = 1;
			memcpy(o, cm, l);
			o->cmsg_len = l;
		}
		size_t adv = CMSG_SPACE(o->cmsg_len - CMSG_LEN(0));
		used += adv < room ? adv : room;
		o = used + sizeof(struct cmsghdr) <= msg->msg_controllen
		    ? (struct cmsghdr *)((char *)msg->msg_control + used) : NULL;
	}
	msg->msg_controllen = used;
	if (ctrunc)
		msg->msg_flags |= MSG_CTRUNC;
out:
	if (ctl != stackbuf)
		free(ctl);
	return r;
}
