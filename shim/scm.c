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
 * control buffer that is too small.  Both processes then use the
 * connection like two forked holders.  A receiver WITHOUT the shim cannot
 * read the channel: the sender notices that nobody took the hand-over (a
 * state word in the marker) and reverts the connection to plain TCP
 * (xway_chan_revert; the peer's shim re-sends on TCP what nobody read and
 * reads the rest of the ring before TCP).  shim/README.md has the protocol.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "errno.h"
#include "lifecycle.h"

#define XWAY_SCM_MAGIC  "XWAYSCM4"
#define XWAY_SCM_MAXFD  253       /* SCM_MAX_FD */
#define XWAY_SCM_MAXREC 32

struct xway_scm_rec {
	int32_t  index;           /* of the socket among the app's fds */
	int32_t  side;
	uint64_t cookie;
	struct xway_addr local, peer;
	uint32_t pending;         /* a client whose offer is not decided yet */
	uint32_t xen;             /* XWAY_SCM_XEN_* (0: a local ring) */
	uint64_t offer_id;        /* its offer, while pending */
	uint32_t nfds;            /* channel fds after the previous record's */
	uint32_t reserved;
	struct xway_xen_vchan geo; /* the Xen grants' geometry */
};

/* A local record's fds: the ring memfd, efd0, efd1 (3).  A Xen client
 * end's (the accepting process's): a grant descriptor its broker mapped
 * again for the receiver (REMAP), the event channel, the end's state memfd
 * (3).  A Xen server end's (the connecting process's): its gntalloc
 * descriptor, the event channel, the state memfd, and while its offer is
 * pending the decision channel's memfd, efd0, efd1 (3 or 6). */
enum { XWAY_SCM_XEN_CLIENT = 1, XWAY_SCM_XEN_SERVER = 2 };
#define XWAY_SCM_RECFD 6

/* Hand-over state word (the marker memfd stays mapped by the sender):
 * OFFERED when sent; a shimmed receiver moves it to TAKEN (CAS); a sender
 * that decides the receiver cannot take it (below) moves it to UNTAKEN and
 * reverts the connection(s) to TCP (xway_chan_revert: the peer re-sends
 * what we never read, and reads what we wrote before its TCP bytes).  The
 * seq_cst CAS on both sides makes exactly one of TAKEN and UNTAKEN win, so
 * a receiver that comes late sees UNTAKEN and keeps the socket as plain TCP,
 * and either outcome is correct: the timing only decides whether the
 * connection stays accelerated.
 *
 * When the sender decides: the receiver consumed the message (SIOCOUTQ of
 * the sending AF_UNIX socket fell to 0: the kernel frees a message's
 * accounting when it is read, or dropped) and XWAY_SCM_GRACE_NS passed
 * without TAKEN (a shimmed receiver CASes inside the same recvmsg call);
 * or XWAY_SCM_AUDIT_NS after sending (the socket was closed or carries
 * other traffic); or at exit after a short wait.  It looks when it closes
 * its own copy of a handed-over connection (bounded wait: xway_scm_closing),
 * at its next SCM_RIGHTS send, and at exit. */
enum { XWAY_SCM_OFFERED = 1, XWAY_SCM_TAKEN = 2, XWAY_SCM_UNTAKEN = 3 };
#define XWAY_SCM_AUDIT_NS (2 * 1000000000LL)
#define XWAY_SCM_GRACE_NS (100 * 1000000LL)
#define XWAY_SCM_OUT 64

struct xway_scm_hdr {
	char     magic[8];
	uint32_t count;
	uint32_t napp;            /* fds the app sent */
	_Atomic uint32_t state;   /* XWAY_SCM_* (shared: both map the memfd) */
	uint32_t audit;           /* 1: the sender settles the hand-over and
				     reverts to TCP if nobody takes it (a
				     receiver that cannot confirm must not
				     attach); 0: it cannot (seccomp) */
	struct xway_scm_rec rec[XWAY_SCM_MAXREC];
};

/* Hand-overs this process sent and has not seen settled yet. */
static struct xway_scm_out {
	struct xway_scm_hdr *map;
	int64_t sent_ns;
	int64_t consumed_ns;      /* when SIOCOUTQ was first seen at 0 */
	pid_t pid;                /* the sender (a fork child forgets them) */
	int usock;                /* the AF_UNIX socket it went through ... */
	dev_t udev;               /* ... identified, the number may be reused */
	ino_t uino;
} xway_scm_out[XWAY_SCM_OUT];
static pthread_mutex_t xway_scm_out_lock = PTHREAD_MUTEX_INITIALIZER;

/* Has the receiver read (or dropped) everything we sent on o's socket? */
static int xway_scm_consumed(const struct xway_scm_out *o)
{
	struct stat st;
	int q;

	if (o->usock < 0 || fstat(o->usock, &st) != 0 || st.st_dev != o->udev ||
	    st.st_ino != o->uino || real.ioctl(o->usock, SIOCOUTQ, &q) != 0)
		return 0;
	return q == 0;
}

/* Find the connection of a record in this process (a reference), or NULL. */
struct xway_scm_find { const struct xway_scm_rec *rec; struct xway_conn *c; };

static void xway_scm_find_one(int fd, struct xway_conn *c, void *arg)
{
	struct xway_scm_find *f = arg;

	(void)fd;
	if (!f->c && c->chan && c->cookie == f->rec->cookie && c->side == f->rec->side) {
		xway_conn_hold(c);
		f->c = c;
	}
}

/* The receiver cannot use these connections: leave the channel for TCP.
 * known: a connection being closed (no longer in the fd table). */
static void xway_scm_revert(uint32_t count, const struct xway_scm_rec *recs,
			    struct xway_conn *known, int64_t age_ns)
{
	for (uint32_t k = 0; k < count; k++) {
		struct xway_scm_find f = { &recs[k], NULL };
		const char *why = NULL;
		int st;

		if (known && known->cookie == recs[k].cookie && known->side == recs[k].side) {
			xway_conn_hold(known);
			f.c = known;
		} else {
			xway_fd_foreach(xway_scm_find_one, &f);
		}
		st = f.c ? atomic_load_explicit(&f.c->state, memory_order_acquire) : 0;
		if (!f.c)
			why = "this process no longer holds it";
		else if (st == XWAY_ST_PENDING)
			why = "its offer was still undecided";
		else if (st != XWAY_ST_ACCEL)
			why = NULL;              /* already on TCP */
		else if (xway_chan_revert(f.c->chan) < 0)
			why = "the channel refused the revert";
		if (why)
			XWARN("sendmsg: an accelerated connection passed by SCM_RIGHTS "
			      "%lld ms ago was not taken by a process running libxway.so "
			      "(receiver without the shim, the fds dropped, or a "
			      "receiver under a seccomp filter); it cannot be moved "
			      "back to TCP (%s): the receiver cannot read its bytes",
			      (long long)(age_ns / 1000000), why);
		else if (st == XWAY_ST_ACCEL)
			XWARN("sendmsg: an accelerated connection passed by SCM_RIGHTS "
			      "%lld ms ago was not taken by a process running libxway.so "
			      "(receiver without the shim, or the fds dropped): it "
			      "reverts to plain TCP (the peer re-sends on TCP what "
			      "nobody read)", (long long)(age_ns / 1000000));
		if (f.c) {
			/* Our own copy follows at once (not the one being
			 * closed: its teardown is under way). */
			if (f.c != known && st == XWAY_ST_ACCEL && !why)
				xway_io_revert(f.c);
			xway_conn_put(f.c);
		}
	}
}

/* Settle the hand-overs still out (only those naming `only`, if given):
 * forget the taken ones, decide the ones the receiver cannot take (see
 * above; force_after_ns >= 0 decides every one older than that) and revert
 * them.  Returns how many of ours are still undecided. */
static int xway_scm_settle(int64_t force_after_ns, struct xway_conn *only)
{
	int left = 0;

	for (int round = 0; round <= XWAY_SCM_OUT; round++) {
		struct xway_scm_rec recs[XWAY_SCM_MAXREC];
		struct xway_scm_hdr *undo = NULL;
		uint32_t count = 0;
		int64_t now = xway_now_ns(), age = 0;

		left = 0;
		pthread_mutex_lock(&xway_scm_out_lock);
		for (int i = 0; i < XWAY_SCM_OUT && !undo; i++) {
			struct xway_scm_out *o = &xway_scm_out[i];
			uint32_t exp = XWAY_SCM_OFFERED;
			int mine = !only;

			if (!o->map)
				continue;
			if (o->pid != xway_pid())
				goto forget;      /* our parent's hand-over: its business */
			for (uint32_t k = 0; only && k < o->map->count && k < XWAY_SCM_MAXREC; k++)
				mine |= o->map->rec[k].cookie == only->cookie &&
					o->map->rec[k].side == only->side;
			/* Acquire: pairs with the receiver's CAS (nothing else is
			 * read from the page after it; the order is for clarity). */
			if (atomic_load_explicit(&o->map->state, memory_order_acquire) !=
			    XWAY_SCM_OFFERED)
				goto forget;
			if (!mine)
				continue;
			age = now - o->sent_ns;
			if (xway_scm_consumed(o)) {
				if (!o->consumed_ns)
					o->consumed_ns = now;
			} else {
				o->consumed_ns = 0;
			}
			if (age < XWAY_SCM_AUDIT_NS &&
			    (force_after_ns < 0 || age < force_after_ns) &&
			    (!o->consumed_ns || now - o->consumed_ns < XWAY_SCM_GRACE_NS)) {
				left++;
				continue;
			}
			/* seq_cst CAS against the receiver's: exactly one of
			 * TAKEN and UNTAKEN wins. */
			if (atomic_compare_exchange_strong(&o->map->state, &exp,
							   XWAY_SCM_UNTAKEN)) {
				/* Read once: the receiver maps this page too. */
				count = *(volatile uint32_t *)&o->map->count;
				if (count > XWAY_SCM_MAXREC)
					count = 0;
				memcpy(recs, o->map->rec, sizeof(recs[0]) * count);
				undo = o->map;
			}
forget:
			munmap(o->map, sizeof(*o->map));
			o->map = NULL;
		}
		pthread_mutex_unlock(&xway_scm_out_lock);
		if (!undo)
			break;
		/* Outside the lock: the revert takes the fd table's and the
		 * channel's locks. */
		xway_scm_revert(count, recs, only, age);
	}
	return left;
}

static void xway_scm_audit(int64_t force_after_ns)
{
	xway_scm_settle(force_after_ns, NULL);
}

/* Keep the marker of a sent hand-over mapped for the audit. */
static void xway_scm_remember(struct xway_scm_hdr *map, int usock)
{
	struct stat st;

	if (fstat(usock, &st) != 0)
		st.st_ino = 0;
	for (int round = 0; round < 2; round++) {
		pthread_mutex_lock(&xway_scm_out_lock);
		for (int i = 0; i < XWAY_SCM_OUT; i++)
			if (!xway_scm_out[i].map) {
				struct xway_scm_out *o = &xway_scm_out[i];
				o->map = map;
				o->sent_ns = xway_now_ns();
				o->consumed_ns = 0;
				o->pid = xway_pid();
				o->usock = st.st_ino ? usock : -1;
				o->udev = st.st_dev;
				o->uino = st.st_ino;
				pthread_mutex_unlock(&xway_scm_out_lock);
				return;
			}
		pthread_mutex_unlock(&xway_scm_out_lock);
		/* Full: settle the oldest at once (force). */
		xway_scm_audit(round == 0 ? XWAY_SCM_AUDIT_NS : 0);
	}
	/* Still full: decide this one now rather than leave it unwatched. */
	uint32_t exp = XWAY_SCM_OFFERED;
	if (atomic_compare_exchange_strong(&map->state, &exp, XWAY_SCM_UNTAKEN)) {
		struct xway_scm_rec recs[XWAY_SCM_MAXREC];
		uint32_t count = *(volatile uint32_t *)&map->count;
		if (count > XWAY_SCM_MAXREC)
			count = 0;
		memcpy(recs, map->rec, sizeof(recs[0]) * count);
		xway_scm_revert(count, recs, NULL, 0);
	}
	munmap(map, sizeof(struct xway_scm_hdr));
}

void xway_scm_closing(struct xway_conn *c)
{
	if (!atomic_load_explicit(&c->handed, memory_order_relaxed) || xway_lc_sandboxed)
		return;
	/* Bounded: XWAY_SCM_AUDIT_NS after the send at most (500 rounds of
	 * 5 ms is more), usually one grace period after the receiver read. */
	for (int i = 0; i < 500 && xway_scm_settle(-1, c) > 0; i++) {
		struct timespec nap = { 0, 5000000 };
		nanosleep(&nap, NULL);
	}
	xway_scm_settle(0, c);
}

void xway_scm_at_exit(void)
{
	/* At exit: a receiver that is still about to take the hand-over gets
	 * a moment (bounded), then whatever is untaken is reverted. */
	for (int i = 0; i < 50 && xway_scm_settle(-1, NULL) > 0; i++) {
		struct timespec nap = { 0, 10000000 };
		nanosleep(&nap, NULL);
	}
	xway_scm_audit(0);
}

/* ---- sender ------------------------------------------------------------ */

/*
 * A Xen end follows an SCM_RIGHTS hand-over (docs/DESIGN.md §7.2).  A
 * client end (the accepting process's: gntdev maps) as across an exec: its
 * broker maps the grants once more on a new grant descriptor (REMAP, the
 * socket as proof), the first of fds, ours to close after the send.  A
 * server end (the connecting process's) passes its own gntalloc descriptor
 * and, while its offer is pending, copies of its decision channel's (ours
 * to close too).  Both pass the event channel and the end's state memfd,
 * which holds the holder count, the acknowledgements and the sleepers
 * every process of the end shares.  vsftpd's privileged process accepts
 * the passive data connections, and connects the active ones, and passes
 * them to the session at once.  Returns the number of fds (3 or 6), or
 * -errno and why when the end cannot follow.
 */
static int xway_scm_xen_prepare(struct xway_conn *c, int pending, struct xway_scm_rec *rec,
				int fds[XWAY_SCM_RECFD], char *why, size_t why_len)
{
	int efd, epfd, gfd, r;

	if (xway_lc_sandboxed) {
		snprintf(why, why_len, "a sandboxed process cannot share a Xen channel");
		return -EPERM;
	}
	r = xway_chan_xen_share_fds(c->chan, fds, &rec->geo);
	if (r == 0) {
		if (pending && (r = xway_chan_xen_decision_fds(c->chan, fds + 3)) < 0)
			return r;     /* -ENOENT: decided meanwhile */
		rec->xen = XWAY_SCM_XEN_SERVER;
		return pending ? 6 : 3;
	}
	if (r != -EOPNOTSUPP || pending)
		return r;
	if ((r = xway_chan_xen_exec_fds(c->chan, &efd, &epfd)) < 0)
		return r;
	if ((r = xway_xen_remap(c, &gfd, &rec->geo, why, why_len)) < 0)
		return r;
	fds[0] = gfd;
	fds[1] = efd;
	fds[2] = epfd;
	rec->xen = XWAY_SCM_XEN_CLIENT;
	return 3;
}

/* Close what xway_scm_xen_prepare made for the receiver only. */
static void xway_scm_xen_unprepare(const struct xway_scm_rec *rec,
				   const int fds[XWAY_SCM_RECFD], int nf)
{
	if (rec->xen == XWAY_SCM_XEN_CLIENT && nf >= 1)
		real.close(fds[0]);
	if (rec->xen == XWAY_SCM_XEN_SERVER && nf == 6)
		for (int k = 3; k < 6; k++)
			real.close(fds[k]);
}

ssize_t xway_scm_sendmsg(int fd, const struct msghdr *msg, int flags)
{
	struct cmsghdr *cm;
	struct xway_scm_hdr hdr;
	struct xway_conn *conns[XWAY_SCM_MAXREC];
	int app[XWAY_SCM_MAXFD], napp = 0, nconn = 0, marker = -1;
	int xfd[XWAY_SCM_MAXREC][XWAY_SCM_RECFD];   /* a Xen record's fds */
	int nchan = 0;                    /* channel fds of every record */
	struct xway_scm_hdr *audit_map = NULL;
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
		int xen = c->chan && xway_chan_backend(c->chan) == XWAY_BACKEND_XEN, nf = 3;
		char why[160] = "";
		if (st == XWAY_ST_PENDING && xen) {
			/* Pending too, with the decision channel (a server
			 * end: only a connecting process waits). */
			nf = xway_scm_xen_prepare(c, 1, &hdr.rec[nconn], xfd[nconn],
						  why, sizeof(why));
			if (nf == -ENOENT)   /* decided meanwhile */
				st = xway_pending_resolve(c, 0);
			else if (nf < 0) {
				/* It cannot follow pending: withdraw the offer
				 * and wait, bounded, for the decision (a claim
				 * that won the race leaves below). */
				for (int k = 0; k < 150 && st == XWAY_ST_PENDING; k++)
					st = xway_pending_resolve(c, 1);
				if (st == XWAY_ST_PENDING)
					XWARN("sendmsg: fd %d: no decision on its Xen offer "
					      "within 3 s; the receiver cannot use it", app[i]);
			}
		}
		if (st == XWAY_ST_ACCEL && xen && !c->reverted) {
			nf = xway_scm_xen_prepare(c, 0, &hdr.rec[nconn], xfd[nconn],
						  why, sizeof(why));
			if (nf < 0)   /* the receiver gets the socket on TCP */
				xway_lc_xen_leave_err(c, "SCM_RIGHTS", why, nf);
			st = atomic_load_explicit(&c->state, memory_order_acquire);
		}
		if (st == XWAY_ST_FLUSH)
			xway_flush_owed(c, 0);
		if ((st != XWAY_ST_ACCEL && st != XWAY_ST_PENDING) || !c->chan ||
		    (xen && !hdr.rec[nconn].xen) ||
		    (xen && (st == XWAY_ST_PENDING) != (nf == 6))) {
			xway_scm_xen_unprepare(&hdr.rec[nconn], xfd[nconn], nf);
			memset(&hdr.rec[nconn], 0, sizeof(hdr.rec[nconn]));
			xway_conn_put(c);
			continue;
		}
		hdr.rec[nconn].nfds = (uint32_t)nf;
		nchan += nf;
		if (st == XWAY_ST_PENDING) {
			hdr.rec[nconn].pending = 1;
			hdr.rec[nconn].offer_id = c->offer_id;
		}
		atomic_store_explicit(&c->handed, 1, memory_order_relaxed);
		hdr.rec[nconn].index = i;
		hdr.rec[nconn].side = c->side;
		hdr.rec[nconn].cookie = c->cookie;
		hdr.rec[nconn].local = c->local;
		hdr.rec[nconn].peer = c->peer;
		conns[nconn++] = c;
	}
	if (nconn == 0 || napp + 1 + nchan > XWAY_SCM_MAXFD) {
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
	/* Under a seccomp filter a writable shared mapping may be fatal: no
	 * audit there (and the receiver is told, see xway_scm_recvmsg). */
	hdr.audit = !xway_lc_sandboxed;
	r = XWAY_SYS(memfd_create("xway-scm", MFD_CLOEXEC));
	if (r < 0)
		goto out_plain;
	marker = (int)r;
	if (hdr.audit) {
		if (XWAY_SYS(ftruncate(marker, sizeof(hdr))) == 0)
			audit_map = mmap(NULL, sizeof(hdr), PROT_READ | PROT_WRITE,
					 MAP_SHARED, marker, 0);
		if (audit_map == MAP_FAILED) {
			audit_map = NULL;
			hdr.audit = 0;
			XWARN("sendmsg: cannot watch an SCM_RIGHTS hand-over (%s): a "
			      "receiver without the shim will not be detected",
			      strerror(errno));
		}
	}
	if (XWAY_SYS(pwrite(marker, &hdr, sizeof(hdr), 0)) != (long)sizeof(hdr))
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
		for (int k = 0; k < nconn; k++) {
			if (hdr.rec[k].xen) {
				memcpy(all + nall, xfd[k], hdr.rec[k].nfds * sizeof(int));
				nall += (int)hdr.rec[k].nfds;
			} else {
				nall += xway_chan_fds(conns[k]->chan, all + nall, 3);
			}
		}
		/* A Xen end's holder count lives in its state memfd, which
		 * the receiver shares: count the receiver before it can
		 * attach (and close), uncount it if nothing was sent. */
		for (int k = 0; k < nconn; k++)
			if (hdr.rec[k].xen)
				atomic_fetch_add_explicit(&conns[k]->shared->holders, 1,
							  memory_order_acq_rel);
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
		for (int k = 0; k < nconn; k++)
			if (!hdr.rec[k].xen ? r >= 0 : r < 0)
				atomic_fetch_add_explicit(&conns[k]->shared->holders,
							  r >= 0 ? 1 : -1,
							  memory_order_acq_rel);
		if (r >= 0 && audit_map) {
			xway_scm_remember(audit_map, fd);
			audit_map = NULL;
		}
		XDBG("sendmsg fd %d: %d accelerated connection(s) handed over", fd, nconn);
	}
	goto out_put;
out_plain:
	XWARN("sendmsg: cannot hand accelerated connections over (%s)",
	      strerror(r < 0 ? (int)-r : EIO));
	r = XWAY_SYS(real.sendmsg(fd, msg, flags));
out_put:
	if (audit_map)
		munmap(audit_map, sizeof(hdr));
	if (marker >= 0)
		real.close(marker);
	/* The re-mapped grant descriptors and the decision copies were the
	 * receiver's (the kernel gave it its own). */
	for (int k = 0; k < nconn; k++)
		xway_scm_xen_unprepare(&hdr.rec[k], xfd[k], (int)hdr.rec[k].nfds);
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

/* Our own read-only view of a pending offer's channel header (the
 * broker's decision word, and ring 0 behind it), as the connecting
 * process has, from the ring memfd fd.  0, or -errno. */
static int xway_scm_map_hdr(int fd, void **map, size_t *len)
{
	struct stat st;
	void *m;

	if (fstat(fd, &st) < 0 || st.st_size < (off_t)XWAY_CHAN_HDR_SIZE)
		return -EINVAL;
	m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return -errno;
	*map = m;
	*len = (size_t)st.st_size;
	return 0;
}

/* Our own high copies of three received descriptors (the originals stay
 * the caller's); on failure none is left open.  0, or -errno. */
static int xway_scm_dup3(const int src[3], int base, int d[3])
{
	for (int k = 0; k < 3; k++)
		d[k] = -1;
	for (int k = 0; k < 3; k++)
		if ((d[k] = real.fcntl(src[k], F_DUPFD_CLOEXEC, base)) < 0) {
			int e = -errno;

			for (int j = 0; j < k; j++) {
				real.close(d[j]);
				d[j] = -1;
			}
			return e;
		}
	return 0;
}

/* Is sock a TCP socket of the app's with the record's 4-tuple? */
static int xway_scm_sock_ok(int sock, const struct xway_scm_rec *rec)
{
	int v;
	socklen_t l = sizeof(v);

	return !xway_fd_is_ours(sock) &&
	       real.getsockopt(sock, SOL_SOCKET, SO_PROTOCOL, &v, &l) == 0 && v == IPPROTO_TCP &&
	       xway_scm_same(sock, 0, &rec->local) && xway_scm_same(sock, 1, &rec->peer) &&
	       (rec->side == 0 || rec->side == 1);
}

/* A Xen record's end, opened before the hand-over is confirmed. */
struct xway_scm_xen {
	struct xway_chan *chan;
	void *hdr;                /* pending: our view of the decision header */
	size_t hdr_len;
};

/*
 * A Xen record's end, opened BEFORE the hand-over is confirmed (the
 * mapping is what can fail here: no Xen libraries reachable, a geometry or
 * state that is not this end's): once we confirm, the sender forgets the
 * connection and nobody could move it back to TCP.  Our own high copies of
 * the descriptors are consumed; cf (rec->nfds of them) is left to the
 * caller on failure and closed on success.
 */
static int xway_scm_xen_open(int sock, const struct xway_scm_rec *rec, const int *cf,
			     struct xway_scm_xen *o)
{
	struct xway_chan_params p = { xway_cfg.ring_order, xway_cfg.spin_ns, 0 };
	struct xway_chan *dchan = NULL;
	struct stat st0, st1;
	int d[3], base = xway_high_fd_base(), r;
	int server = rec->xen == XWAY_SCM_XEN_SERVER;

	memset(o, 0, sizeof(*o));
	/* Only a connecting process's end (a server end) waits for a
	 * decision, and only then with the decision channel. */
	if ((rec->xen != XWAY_SCM_XEN_CLIENT && !server) ||
	    rec->nfds != (rec->pending ? 6u : 3u) || (rec->pending && (!server || rec->side != 0)))
		return -EINVAL;
	if (!xway_scm_sock_ok(sock, rec))
		return -EBADF;
	/* The grant and event-channel descriptors are character devices;
	 * the state memfd is checked by the re-attach (sealed, size, magic,
	 * side), the geometry against the mapping. */
	if (fstat(cf[0], &st0) != 0 || !S_ISCHR(st0.st_mode) ||
	    fstat(cf[1], &st1) != 0 || !S_ISCHR(st1.st_mode))
		return -EBADF;
	if (rec->pending) {
		/* The decision channel, as a pending local record's ring:
		 * our read-only view of its header (the broker's decision
		 * word), and the channel itself (its eventfd wakes us). */
		int dd[3];

		if ((r = xway_scm_map_hdr(cf[3], &o->hdr, &o->hdr_len)) < 0)
			return r;
		if ((r = xway_scm_dup3(cf + 3, base, dd)) < 0)
			goto fail;
		if ((r = xway_chan_local_attach(dd, 0, rec->cookie, &p, &dchan)) < 0) {
			for (int k = 0; k < 3; k++)
				real.close(dd[k]);
			goto fail;
		}
	}
	if ((r = xway_scm_dup3(cf, base, d)) < 0)
		goto fail;
	r = server ? xway_chan_xen_server_reattach(d, &rec->geo, &o->chan)
		   : xway_chan_xen_reattach(d, &rec->geo, &o->chan);
	if (r < 0) {
		real.close(d[2]);       /* the others were consumed */
		goto fail;
	}
	if (dchan && (r = xway_chan_xen_set_decision(o->chan, dchan)) < 0) {
		xway_chan_xen_others_hold(o->chan);
		xway_chan_close(o->chan);
		o->chan = NULL;
		goto fail;
	}
	for (uint32_t k = 0; k < rec->nfds; k++)
		real.close(cf[k]);
	return 0;
fail:
	if (dchan)
		xway_chan_close(dchan);
	if (o->hdr)
		munmap(o->hdr, o->hdr_len);
	o->hdr = NULL;
	return r;
}

/* A Xen end opened here that is not ours after all: only our mapping
 * goes (the channel is the sender's). */
static void xway_scm_xen_drop(struct xway_scm_xen *o)
{
	if (o->chan) {
		xway_chan_xen_others_hold(o->chan);
		xway_chan_close(o->chan);
	}
	if (o->hdr)
		munmap(o->hdr, o->hdr_len);
	memset(o, 0, sizeof(*o));
}

/* Attach one handed-over connection; the channel fds are consumed (a Xen
 * record's end, x, was opened by xway_scm_xen_open and is taken over, also
 * on failure). */
static int xway_scm_attach(int sock, const struct xway_scm_rec *rec, const int cf[3],
			   struct xway_scm_xen *x)
{
	struct xway_chan_params p = { xway_cfg.ring_order, xway_cfg.spin_ns, 0 };
	struct xway_chan *xchan = x ? x->chan : NULL, *chan = xchan;
	struct xway_conn *c;
	void *map = NULL;
	size_t map_len = 0;
	int v, r;

	if (xchan) {
		if (!xway_scm_sock_ok(sock, rec)) {
			xway_scm_xen_drop(x);
			return -EBADF;
		}
		map = x->hdr;
		map_len = x->hdr_len;
		goto bind;
	}
	if (!xway_scm_sock_ok(sock, rec) || !xway_chan_local_attach)
		return -EBADF;
	if (rec->pending && rec->side != 0) {
		XDBG("scm attach: pending record for side %d", rec->side);
		return -EINVAL;          /* only a client waits for a decision */
	}
	if (rec->pending) {
		/* Mapped before the attach, which takes the fds over
		 * (moves them). */
		if ((r = xway_scm_map_hdr(cf[0], &map, &map_len)) < 0)
			return r;
	}
	r = xway_chan_local_attach(cf, rec->side, rec->cookie, &p, &chan);
	if (r < 0) {
		XDBG("scm attach: channel attach failed: %d", r);
		if (map)
			munmap(map, map_len);
		return r;
	}
bind:
	/* A Xen end's holder count is the one its state memfd carries (the
	 * sender counted us in it); a local end's is this process's own. */
	c = xway_conn_new_chan(sock, rec->side, chan, xchan != NULL);
	if (!c) {
		if (map)
			munmap(map, map_len);
		if (xchan)
			xway_chan_xen_others_hold(xchan);
		xway_chan_close(chan);
		return -ENOMEM;
	}
	if (map) {
		c->hdr = map;
		c->hdr_len = map_len;
		c->offer_id = rec->offer_id;
	}
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
 * word of the marker it keeps mapped).  Returns 1 if we may attach: we
 * won the CAS, or the sender does not audit (then nobody reverts). */
static int xway_scm_taken(int marker, const struct xway_scm_hdr *hdr)
{
	struct xway_scm_hdr *map;
	uint32_t exp = XWAY_SCM_OFFERED;
	int ok;

	/* Under a seccomp filter a writable shared mapping may be fatal
	 * (vsftpd's allows only private anonymous ones): we cannot confirm,
	 * so an auditing sender will revert the connection to TCP; attaching
	 * too would split it.  Plain TCP here, then. */
	if (xway_lc_sandboxed)
		return !hdr->audit;
	map = mmap(NULL, sizeof(*map), PROT_READ | PROT_WRITE, MAP_SHARED, marker, 0);
	if (map == MAP_FAILED)
		return !hdr->audit;
	/* seq_cst CAS: see the state word above. */
	ok = atomic_compare_exchange_strong(&map->state, &exp, XWAY_SCM_TAKEN) ||
	     exp == XWAY_SCM_TAKEN || !hdr->audit;
	munmap(map, sizeof(*map));
	return ok;
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
			/* Each record's channel fds follow the marker, in
			 * order; all of them are in this message. */
			int off[XWAY_SCM_MAXREC], total = 0;
			for (uint32_t k = 0; k < hdr.count; k++) {
				off[k] = total;
				total += hdr.rec[k].nfds == 3 || hdr.rec[k].nfds == 6
					 ? (int)hdr.rec[k].nfds : 1000;
			}
			if (hdr.napp != (uint32_t)i || i + 1 + total > n)
				break;              /* not ours after all */
			int *cf = f + i + 1;
			struct xway_scm_xen xo[XWAY_SCM_MAXREC];
			int xerr[XWAY_SCM_MAXREC] = { 0 }, xbad = 0;
			memset(xo, 0, sizeof(xo));
			/* Xen records first: their end is opened before we
			 * confirm (xway_scm_xen_open).  One that cannot be
			 * opened makes the whole hand-over untaken (the sender
			 * reverts every connection of it to TCP) rather than
			 * split that one. */
			for (uint32_t k = 0; k < hdr.count; k++) {
				int idx = hdr.rec[k].index;
				if (!hdr.rec[k].xen)
					continue;
				/* Under a seccomp filter the mapping and its
				 * ioctls may be fatal. */
				xerr[k] = xway_lc_sandboxed ? -EPERM : idx >= 0 && idx < i
					? xway_scm_xen_open(f[idx], &hdr.rec[k], cf + off[k], &xo[k])
					: -EINVAL;
				if (xerr[k] < 0) {
					xbad = 1;
					XWARN("recvmsg: a connection handed over on its Xen "
					      "channel cannot be mapped here (%s): the "
					      "hand-over is left to the sender, which moves it "
					      "to plain TCP", strerror(-xerr[k]));
				}
			}
			int take = !xbad && xway_scm_taken(f[i], &hdr);
			if (!take && !xbad)
				XINFO("recvmsg: %u connection(s) received by SCM_RIGHTS "
				      "stay plain TCP (%s)", hdr.count, xway_lc_sandboxed
				      ? "under a seccomp filter we cannot confirm the "
					"hand-over, so the sender reverts them"
				      : "the sender already reverted them: received late");
			for (uint32_t k = 0; k < hdr.count; k++) {
				int idx = hdr.rec[k].index, nk = (int)hdr.rec[k].nfds;
				int rr = 0;
				if (xo[k].chan) {
					/* cf was closed by the open. */
					if (!take) {
						/* Not ours: the channel stays the
						 * sender's. */
						xway_scm_xen_drop(&xo[k]);
					} else if ((rr = xway_scm_attach(f[idx], &hdr.rec[k],
									 NULL, &xo[k])) < 0) {
						XWARN("recvmsg: a connection handed over on its "
						      "Xen channel was refused (%s)", strerror(-rr));
					}
					continue;
				}
				if (take)
					rr = hdr.rec[k].xen || nk != 3 ? -EINVAL
					   : idx >= 0 && idx < i
					   ? xway_scm_attach(f[idx], &hdr.rec[k], cf + off[k], NULL)
					   : -EINVAL;
				if (take && rr < 0)
					XWARN("recvmsg: a handed-over connection was refused "
					      "(%s); it stays plain TCP", strerror(-rr));
				if (!take || rr < 0)
					for (int j = 0; j < nk; j++)
						real.close(cf[off[k] + j]);
			}
			real.close(f[i]);
			for (int j = i + 1 + total; j < n; j++)
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
