/* SPDX-License-Identifier: MIT */
/*
 * The channel API: a bidirectional byte stream between two endpoints, made
 * of two single-producer single-consumer rings plus notification.  The shim
 * uses it the same way whichever backend carries it (local memfd rings or
 * libxenvchan between Xen domains).
 *
 * Conventions: every function returns 0, a byte count or a mask on success
 * and -errno on failure; none of them touches errno's value as a result.
 * Data calls never block unless their name says "wait".
 *
 * Concurrency: an endpoint may be used by several threads and, after fork,
 * by several processes at once.  Each direction has a lock that lives in
 * memory shared with our own process tree (never with the peer), robust to a
 * holder dying.  The peer is untrusted: a corrupt shared index fails the
 * channel with -EPROTO, it never crashes or hangs the caller.
 */
#ifndef XWAY_CHAN_H
#define XWAY_CHAN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct xway_chan;               /* one endpoint; opaque */

enum xway_backend {
	XWAY_BACKEND_LOCAL = 1,  /* memfd rings + eventfd, one OS */
	XWAY_BACKEND_XEN   = 2,  /* libxenvchan between domains */
};

/* Readiness bits, returned by xway_chan_poll() and the wait calls. */
#define XWAY_EV_IN     0x1u   /* data, EOF or reset to read */
#define XWAY_EV_OUT    0x2u   /* room to write */
#define XWAY_EV_RDHUP  0x4u   /* peer shut down writing (EOF seen in ring) */
#define XWAY_EV_RST    0x8u   /* peer reset the connection */
#define XWAY_EV_HUP    0x10u  /* peer closed its reading side: writes fail */
#define XWAY_EV_ERR    0x20u  /* channel failed (-EPROTO): hostile/corrupt */
#define XWAY_EV_EXTRA  0x40u  /* the extra fd given to a wait became ready */
#define XWAY_EV_ATTACH 0x80u  /* local side 0: the broker's `attached` word is
				 no longer PENDING (the broker writes efd[0]
				 after deciding, so a wait for this wakes) */
#define XWAY_EV_REVERT 0x100u /* the connection left the channel for TCP
				 (XWAY_RING_F_REVERT, either side): see
				 xway_chan_revert; every wait returns on it */
#define XWAY_EV_SELF_DRAIN 0x200u /* only in xway_chan_arm's events: the caller
				 sleeps on xway_chan_pollfd() itself and drains
				 it (xway_chan_ack) when it fires, as poll() does:
				 a notification already pending need not be
				 consumed first (it wakes the caller at once) */

/* Flags for xway_chan_recv(). */
#define XWAY_RECV_PEEK 0x1u

struct xway_chan_params {
	uint32_t ring_order;   /* log2 bytes per direction; 0 = default (1 MiB) */
	uint32_t spin_ns;      /* max adaptive spin before sleeping; 0 = default,
				  UINT32_MAX = never spin */
	uint32_t flags;        /* XWAY_CHAN_F_* */
};

/* xway_chan_local_attach: the descriptors come from the broker, which
 * checked efd0/efd1 are eventfds when the creator offered them (an open
 * file's type cannot change since): the attach skips its own /proc check
 * (three system calls per eventfd) and keeps the cheap ones. */
#define XWAY_CHAN_F_BROKER_CHECKED 1u
/* xway_chan_local_create: the channel only carries the broker's decision
 * (a Xen offer's, docs/XEN.md): rings of the smallest order, and the end's
 * state in anonymous memory (a decision channel is never carried over an
 * exec as an end of its own). */
#define XWAY_CHAN_F_DECISION 2u

struct xway_chan_stats {
	uint64_t tx_bytes;     /* bytes this endpoint wrote into the channel */
	uint64_t rx_bytes;     /* bytes this endpoint consumed from it */
	uint64_t wakeups_sent; /* notifications sent to the peer */
	uint64_t sleeps;       /* times this endpoint slept after spinning */
};

/* ---- set-up (shim/chan/local.c, shim/chan/xen.c) -------------------- */

/*
 * Local backend.  The creator (side 0, the connecting client) makes a sealed
 * memfd holding the header and both rings, and two eventfds: efd[0] is the
 * one side 0 sleeps on, efd[1] the one side 1 sleeps on.  fds[] receives
 * {memfd, efd0, efd1}; they stay owned by the endpoint (close_on_exec set),
 * and are what travels to the peer by SCM_RIGHTS.  The endpoint's own fds
 * are placed at high descriptor numbers so that the application still gets
 * the lowest free ones.
 */
int xway_chan_local_create(const struct xway_chan_params *p, uint64_t cookie,
			   struct xway_chan **out, int fds[3]);

/*
 * Attach to a channel made by the peer: validates magic, version, geometry
 * against the memfd's real size, then maps it.  side is 1 for the acceptor;
 * either side for an end passed by SCM_RIGHTS (a new end state, indices
 * from the ring) or an exec'ed image without a carried state.  Takes
 * ownership of fds[] on success only.
 */
int xway_chan_local_attach(const int fds[3], int side, uint64_t cookie,
			   const struct xway_chan_params *p,
			   struct xway_chan **out);

/*
 * After exec: attach to the same end as the previous image, whose state
 * (private indices, locks, statistics, the user word) lives in the memfd
 * fds[3] (the fourth of xway_chan_fds) and may be in use right now by
 * other processes (a fork child execs while its parent goes on using the
 * connection).  fds[0..2] as for xway_chan_local_attach.  The state is
 * checked (sealed size, cookie, side, indices consistent with the ring);
 * -EPERM/-EINVAL/-EPROTO refuse it.  Takes ownership of fds[] on success.
 */
int xway_chan_local_reattach(const int fds[4], int side, uint64_t cookie,
			     const struct xway_chan_params *p,
			     struct xway_chan **out);

/* A local end's mapping of the whole memfd (header and both rings) and its
 * length, valid until the end is closed; NULL for a Xen end. */
const void *xway_chan_local_shm(const struct xway_chan *c, size_t *len);

/* Eight bytes (8-aligned, zero at first) shared by every process holding
 * this end, across fork and exec alike: the embedder's (the shim keeps the
 * holder count of the connection there). */
void *xway_chan_user_word(struct xway_chan *c);

/* Before an exec that carries this end: its locks leave the owner fast
 * path for good (owner tokens are unique within one image's tree). */
void xway_chan_before_exec(struct xway_chan *c);

/* This end's state goes to another process (exec hand-over, SCM_RIGHTS):
 * it is never kept as a spare for a later end (local.c).  The Xen
 * hand-over functions below mark their end themselves. */
void xway_chan_ep_handed(struct xway_chan *c);

/* A fork-like event (fork, a clone() without CLONE_VM) is about to copy
 * this process: no state made before it is kept as a spare. */
void xway_chan_sharing(void);

/* The spare states' descriptors (the shim's own, guarded like the
 * channels'); returns how many were stored (<= max). */
int xway_chan_spare_fds(int *fds, int max);

/* The broker's decision word of a local channel: XWAY_ATTACH_PENDING,
 * _CLAIMED or _WITHDRAWN (the client polls this to learn "claimed"), or
 * -EPROTO for a value out of range.  Xen channels always say CLAIMED. */
int xway_chan_attached(const struct xway_chan *c);

/*
 * A withdrawn offer (attached == XWAY_ATTACH_WITHDRAWN: the peer never
 * attached and never will): take back up to len bytes this endpoint wrote
 * into its ring and nobody consumed, oldest first, so they can go onto TCP
 * in order.  Returns the count (0 when none are left), -EBUSY unless
 * withdrawn, -EOPNOTSUPP for Xen, -EPROTO on corruption.
 */
ssize_t xway_chan_take_unsent(struct xway_chan *c, void *buf, size_t len);

/*
 * Revert to TCP.  The leaver (this endpoint's socket went by SCM_RIGHTS to
 * a process that cannot use the channel; for Xen also a fork or an exec)
 * calls xway_chan_revert(): under each direction's lock it stops for good
 * (later data calls of our whole process tree return -ECANCELED), sets
 * XWAY_RING_F_REVERT in its two words (ring.h; Xen: two bits of the peer's
 * notify byte, shim/chan/xen.c) and wakes the peer.  Xen refuses (-EBUSY)
 * while peeked bytes wait in its stash, and outside the mapping process.
 * The leaver has nothing more to do: what it produced stays in the ring for
 * the peer, what the peer produced is taken back by the peer.
 *
 * On the peer, once the flag is seen (XWAY_EV_REVERT): sends return
 * -ECANCELED without writing; receives return the bytes still in the ring,
 * then -ECANCELED (the ring is drained and final: read TCP from now on).
 * xway_chan_take_back() takes back up to len bytes this endpoint produced
 * that the leaver never consumed, oldest first, so they go onto TCP before
 * anything else; returns the count (0 when none are left), -EBUSY unless the
 * peer reverted, -EPROTO on corruption.
 */
int     xway_chan_revert(struct xway_chan *c);
ssize_t xway_chan_take_back(struct xway_chan *c, void *buf, size_t len);
/* Where a revert stands: LEFT, we called xway_chan_revert;
 * PEER_STOPPED, the peer consumes no more (take back now); PEER_FINAL, what
 * the peer produced is final (set after PEER_STOPPED): once
 * xway_chan_readable() is 0 after this, read TCP. */
#define XWAY_REVERT_LEFT          0x1u
#define XWAY_REVERT_PEER_STOPPED  0x2u
#define XWAY_REVERT_PEER_FINAL    0x4u
unsigned xway_chan_reverted(struct xway_chan *c);

/* Where the channel layer logs its few set-up failures (default: one line
 * on stderr).  The shim installs its own sink. */
void xway_chan_set_logger(void (*fn)(const char *line));

/* Where the channel layer learns the calling process's pid (a Xen end
 * checks, at every call, that this process mapped its pages): default
 * getpid(), a system call each time; the shim installs its kept pid,
 * which its fork handlers and a wipe-on-fork page keep true. */
void xway_chan_set_pid_source(pid_t (*fn)(void));

/* Move fd to a high descriptor number (the channel's own policy, see
 * shim/chan/local.c), closing the original; returns the fd to use (the
 * original if no high number was free). */
int xway_chan_fd_to_high(int fd);
/* The lowest number xway_chan_fd_to_high() moves descriptors to. */
int xway_chan_high_fd_base(void);
/* The embedder set RLIMIT_NOFILE: the high-descriptor base is computed
 * again at the next placement (it is kept between placements). */
void xway_chan_nofile_changed(void);

/*
 * Call before a seccomp filter goes up in this process (the shim does at
 * prctl(PR_SET_SECCOMP) and seccomp()): puts every endpoint of the process
 * on its robust mutex now, while the system call that the single-owner
 * fast path needs to hand a direction over (membarrier) is still allowed.
 */
void xway_chan_before_sandbox(void);

/*
 * Xen backend (libxenvchan, loaded with dlopen so that libxway.so runs on a
 * host without Xen).  Returns -ENOSYS with a clear log line when the Xen
 * libraries or /dev/xen are absent.
 */
int xway_chan_xen_server(int peer_domid, const char *xs_path,
			 const struct xway_chan_params *p,
			 struct xway_chan **out);
int xway_chan_xen_client(int peer_domid, const char *xs_path,
			 const struct xway_chan_params *p,
			 struct xway_chan **out);
/* Non-zero when the Xen backend can be used on this host. */
int xway_chan_xen_available(const char **why);
/*
 * The same ends from the descriptors the broker made (privilege model,
 * docs/DESIGN.md §7; what the shim uses): fds = [grant descriptor
 * (gntalloc for the server end, gntdev for the client end), evtchn], v the
 * geometry from the broker's reply (include/xway/proto.h).  Needs no
 * access to /dev/xen or xenstore, only libxenvchan and libxenevtchn.  Takes
 * both descriptors (closed on failure too; the grant descriptor is closed
 * once mapped).  0 or -errno.
 */
struct xway_xen_vchan;
int xway_chan_xen_server_fds(const int fds[2], const struct xway_xen_vchan *v,
			     const struct xway_chan_params *p, struct xway_chan **out);
int xway_chan_xen_client_fds(const int fds[2], const struct xway_xen_vchan *v,
			     const struct xway_chan_params *p, struct xway_chan **out);

/*
 * The client (libxenvchan server) side of a cross-domain connection while
 * its offer is pending: `decision` is the local channel whose header the
 * broker writes the decision into and whose efd[0] it wakes (made with
 * xway_chan_local_create, sent with the OFFER).  The Xen endpoint takes
 * ownership of it: its pollfd then also wakes on the decision, and
 * xway_chan_poll reports XWAY_EV_ATTACH once the decision word is no
 * longer PENDING or the peer connected.  0 or -errno.
 */
int xway_chan_xen_set_decision(struct xway_chan *c, struct xway_chan *decision);
/* 1 once the libxenvchan client (the peer) connected to this server end:
 * it only does after its broker decided "claimed". */
int xway_chan_xen_peer_attached(const struct xway_chan *c);
/* Withdrawn offer, Xen server end: take back up to len bytes this end
 * wrote into the vchan and nobody consumed (the peer never connected),
 * oldest first.  Count, 0 when none are left, -EBUSY once the peer
 * connected, -EINVAL for another backend. */
ssize_t xway_chan_xen_take_unsent(struct xway_chan *c, void *buf, size_t len);

/*
 * Following a fork with a Xen end (docs/DESIGN.md §7.2).  fork_need: 0 the
 * end follows as is (server end: gntalloc's mapping is copied), 1 it needs
 * a re-map of its grants (client end: the broker's REMAP gives a gntdev
 * descriptor), -EBUSY peeked bytes wait in the private stash, -EOPNOTSUPP
 * an end libxenvchan made itself or one that left (the caller leaves for
 * TCP instead).  fork_prepare (before the fork; takes gfd, -1 for a server
 * end) checks the broker's geometry against ours; then exactly one of
 * fork_child / fork_parent runs in each process.  others_hold: this close
 * is not the connection's last (another process maps the channel): it
 * unmaps without telling the peer "gone".
 */
int  xway_chan_xen_fork_need(struct xway_chan *c);
int  xway_chan_xen_fork_prepare(struct xway_chan *c, int gfd, const struct xway_xen_vchan *g);
void xway_chan_xen_fork_child(struct xway_chan *c);
void xway_chan_xen_fork_parent(struct xway_chan *c);
void xway_chan_xen_others_hold(struct xway_chan *c);
/*
 * An exec that keeps a Xen client end (docs/DESIGN.md §7.2): exec_fds gives
 * the event channel and endpoint-state descriptors the new image needs
 * besides a REMAP'd grant descriptor (-EOPNOTSUPP for a server end or an
 * end without a state memfd: it leaves for TCP instead); the new image
 * calls reattach with [gntdev, evtchn, state memfd] and the REMAP's
 * geometry (all three taken, even on failure... except the state memfd,
 * which stays the caller's on failure).
 */
/*
 * A process about to be sandboxed (a seccomp filter may forbid ioctl):
 * event returns the event channel's descriptor and port, for the broker
 * (XWAY_MSG_XEN_MUTE); after mute, this process never notifies the event
 * channel itself: it calls fn(arg) instead (ask the broker), and copies
 * with its own routines (libxenvchan's notify by themselves).
 */
int  xway_chan_xen_event(struct xway_chan *c, int *fd, uint32_t *port);
void xway_chan_xen_mute(struct xway_chan *c, void (*fn)(void *arg), void *arg);
int  xway_chan_xen_exec_fds(struct xway_chan *c, int *evtchn_fd, int *ep_fd);
/* The Xen end's progress counters: bytes the peer produced for us (its
 * producer index) and bytes it consumed of ours; for telling a real
 * arrival from another wake-up of the one event channel (epoll ET). */
int  xway_chan_xen_progress(struct xway_chan *c, uint32_t *rx_prod, uint32_t *tx_cons);
/* An empty end-state memfd (sealed, placed high) for a client end whose
 * broker reads its counters (proto.h XWAY_EP_*); -errno if none can be
 * made.  client_fds_ep: as xway_chan_xen_client_fds, the state in ep_fd
 * (taken on success only; -1: anonymous state as before). */
int  xway_chan_ep_create(void);
int  xway_chan_xen_client_fds_ep(const int fds[2], const struct xway_xen_vchan *v,
				 int ep_fd, struct xway_chan **out);
int  xway_chan_xen_reattach(const int fds[3], const struct xway_xen_vchan *v,
			    struct xway_chan **out);
/*
 * A Xen server end (the connecting process's: gntalloc grants) shared with
 * another process by SCM_RIGHTS (docs/DESIGN.md §7.2): the end keeps its
 * grant descriptor, so share_fds gives [gntalloc, evtchn, state memfd] and
 * the geometry, nothing to ask a broker (-EOPNOTSUPP for a client end or an
 * end not built from descriptors; -EBUSY with peeked bytes).  While its
 * offer is pending, decision_fds gives copies of the decision channel's
 * three descriptors (xway_chan_local_attach's; the caller closes them),
 * -ENOENT when there is none (decided: the originals are gone).  The
 * receiver calls server_reattach with the three (taken as reattach takes
 * them) and, while pending, xway_chan_xen_set_decision with the decision
 * channel it attached.
 */
int  xway_chan_xen_share_fds(struct xway_chan *c, int fds[3], struct xway_xen_vchan *g);
int  xway_chan_xen_decision_fds(const struct xway_chan *c, int fds[3]);
int  xway_chan_xen_server_reattach(const int fds[3], const struct xway_xen_vchan *v,
				   struct xway_chan **out);

enum xway_backend xway_chan_backend(const struct xway_chan *c);
int  xway_chan_side(const struct xway_chan *c);

/* Release this endpoint (unmap, close its fds).  Does not signal the peer:
 * call xway_chan_shutdown/xway_chan_reset first for that.  After fork, each
 * process closes its own copy; the other keeps working. */
void xway_chan_close(struct xway_chan *c);

/* ---- data path (shim/chan/io.c) ------------------------------------- */

/* Copy up to len bytes into the channel.  Returns the count written (may be
 * short), -EAGAIN when full, -EPIPE after our own SHUT_WR or when the peer
 * closed its reading side, -ECONNRESET after a reset, -EPROTO on corruption,
 * -ECANCELED once the connection reverted to TCP (xway_chan_revert). */
ssize_t xway_chan_send(struct xway_chan *c, const void *buf, size_t len);
ssize_t xway_chan_sendv(struct xway_chan *c, const struct iovec *iov, int iovcnt);

/* Copy up to len bytes out (XWAY_RECV_PEEK leaves them there).  Returns the
 * count, 0 at EOF once all data was read, -EAGAIN when empty, -ECONNRESET
 * once after the peer reset (after the queued data), -EPROTO on corruption,
 * -ECANCELED once reverted to TCP and nothing is left in the ring.
 * buf may be NULL to discard (MSG_TRUNC).  len 0 returns 0 at once: the
 * shim implements TCP's zero-length-read rules itself.  A corrupt peer
 * index is detected when it is read, which may be a few calls after the
 * corruption (the last validated index is reused while it suffices). */
ssize_t xway_chan_recv(struct xway_chan *c, void *buf, size_t len, unsigned flags);
ssize_t xway_chan_recvv(struct xway_chan *c, const struct iovec *iov, int iovcnt,
			unsigned flags);

size_t xway_chan_readable(struct xway_chan *c);  /* FIONREAD */
size_t xway_chan_unsent(struct xway_chan *c);    /* SIOCOUTQ: written, not consumed */
size_t xway_chan_capacity(const struct xway_chan *c);

/* Current readiness, XWAY_EV_* bits, without blocking or syscalls. */
unsigned xway_chan_poll(struct xway_chan *c);

/* Our side's end-of-stream (SHUT_WR), reading side closed (close/SHUT_RD
 * when the app will never read again) and abortive reset.  Each wakes the
 * peer if it waits.  The Xen backend returns -EOPNOTSUPP for all three:
 * there FIN and RST travel on the dual-channel TCP socket. */
int xway_chan_shutdown_wr(struct xway_chan *c);
int xway_chan_close_rd(struct xway_chan *c);
int xway_chan_reset(struct xway_chan *c);

/*
 * Block until one of `events` holds, spinning adaptively first (the spin
 * switches itself off when the peer cannot run beside us).  extra_fd >= 0
 * is polled for POLLIN|POLLRDHUP too (the shim passes the TCP socket, whose
 * EOF/RST means the peer process died).  timeout_ms < 0 waits forever.
 * Returns the ready XWAY_EV_* mask, 0 on timeout, -EINTR on a signal.
 * Uses only atomics, read/write on existing eventfds and ppoll: safe under
 * seccomp sandboxes that allow those.  Several threads or processes may
 * wait on one endpoint at once (a wake-up drained by one is passed on).
 */
int xway_chan_wait(struct xway_chan *c, unsigned events, int extra_fd,
		   int timeout_ms);

/*
 * For external event loops: the fd that becomes readable when this endpoint
 * should look at the channel again.  xway_chan_arm(c, events) asks the peer
 * to notify for those events and returns the mask already ready (then don't
 * sleep).  xway_chan_ack(c) drains the notification fd (and passes the
 * wake-up on to xway_chan_wait sleepers of the same endpoint).  Each arm
 * covers one notification: arm again after every wake-up, before sleeping.
 */
int      xway_chan_pollfd(const struct xway_chan *c);
unsigned xway_chan_arm(struct xway_chan *c, unsigned events);
void     xway_chan_ack(struct xway_chan *c);
/* An external event loop sleeping on xway_chan_pollfd() registers as a
 * sleeper of the endpoint (delta +1 before xway_chan_arm, -1 once its wait
 * returned, with the same events): a wake-up another thread or process of
 * our tree drains (xway_chan_ack or xway_chan_wait) is then passed on to it
 * when what it waits for is ready. */
void     xway_chan_sleeper(struct xway_chan *c, unsigned events, int delta);

void xway_chan_get_stats(const struct xway_chan *c, struct xway_chan_stats *st);

/* Descriptors this endpoint owns (for exec hand-over and close_range
 * protection); returns how many were stored, at most max (a Xen endpoint
 * has up to XWAY_CHAN_MAX_FDS while its offer is pending).  A local one
 * has the ring memfd, efd0, efd1, then (if it has one) its state memfd. */
#define XWAY_CHAN_MAX_FDS 8
int xway_chan_fds(const struct xway_chan *c, int *fds, int max);

#endif /* XWAY_CHAN_H */
