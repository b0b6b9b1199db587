/* SPDX-License-Identifier: MIT */
/*
 * Private to the channel layer: the endpoint object behind the opaque
 * struct xway_chan, the backend ops table, and helpers shared by set-up
 * (local.c, xen.c) and the data path (io.c).
 *
 * The endpoint lives in MAP_SHARED memory, so that after fork() parent and
 * child share the private indices, the locks and the statistics (but never
 * with the peer, which only sees the ring's memfd); its mutable part, struct
 * xw_ep, in a memfd of its own that an exec carries too (below).
 *
 * Lock order: tx_lock and rx_lock are independent and never held together;
 * no other lock of ours is taken while one is held.  Each is a struct
 * xw_excl (excl.c): plain stores for the one thread that uses a direction,
 * a process-shared robust mutex once a second thread or process does.  A
 * holder killed mid-operation leaves the index it had not yet published
 * unpublished (the private copy is written just before the shared one), so
 * the next one continues.  Nobody sleeps while holding one.
 */
#ifndef XWAY_CHAN_INT_H
#define XWAY_CHAN_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "xway/chan.h"
#include "ring.h"

#define XW_DEFAULT_ORDER   20u        /* 1 MiB per direction */
#define XW_DEFAULT_SPIN_NS 30000u     /* see docs/BENCHMARKS.md */

struct xway_chan_ops {
	ssize_t  (*sendv)(struct xway_chan *c, const struct iovec *iov, int iovcnt);
	ssize_t  (*recvv)(struct xway_chan *c, const struct iovec *iov, int iovcnt,
			  unsigned flags);
	size_t   (*readable)(struct xway_chan *c);
	size_t   (*unsent)(struct xway_chan *c);
	unsigned (*poll)(struct xway_chan *c);
	int      (*shutdown_wr)(struct xway_chan *c);
	int      (*close_rd)(struct xway_chan *c);
	int      (*reset)(struct xway_chan *c);
	int      (*wait)(struct xway_chan *c, unsigned events, int extra_fd,
			 int timeout_ms);
	unsigned (*arm)(struct xway_chan *c, unsigned events);
	void     (*ack)(struct xway_chan *c);
	void     (*close)(struct xway_chan *c);
};

struct xw_xen;                         /* xen.c */

/* Exclusion for one direction (excl.c). */
struct xw_excl {
	_Atomic uint64_t owner;    /* 0 none, UINT64_MAX shared, else a thread token */
	_Atomic uint64_t busy;     /* the owner's token while it is inside */
	pthread_mutex_t  lock;     /* once shared: robust, process-shared */
};

/*
 * The mutable state of one end: locks, trusted indices, flags, statistics.
 * It holds no pointer, so that every process holding this end can map it
 * at its own address: fork() children share it as anonymous MAP_SHARED
 * memory, and an image started by exec() maps the same memfd again
 * (xway_chan_local_reattach), which keeps a fork child that execs with a
 * connection its parent goes on using on the same indices (two endpoints
 * with private indices of their own would produce into one ring).  Never
 * shown to the peer.
 */
#define XW_EP_MAGIC 0x7877617965703032ull    /* "xwayep02" */

struct xw_ep {
	uint64_t magic;                    /* XW_EP_MAGIC once set up */
	uint64_t cookie;                   /* the connection's cookie */
	uint32_t side;                     /* 0 creator/client, 1 acceptor */
	uint32_t pad;
	/* The embedder's word (the shim's holder count): shared exactly as
	 * widely as the end itself. */
	_Alignas(8) unsigned char user[8];
	/* Trusted byte counts, at the offsets the broker reads from a Xen
	 * server end's state memfd (include/xway/proto.h XWAY_EP_*_OFF). */
	_Atomic uint64_t st_tx, st_rx;

	/* tx_lock protects tx_prod, tx_cons_seen and wr_shut's transition. */
	struct xw_excl tx_lock;
	uint32_t tx_prod;                  /* trusted producer index */
	uint32_t tx_cons_seen;             /* last validated peer cons: the
					      shared one is re-read only when
					      this leaves too little room */
	/* rx_lock protects rx_cons and rx_prod_seen. */
	struct xw_excl rx_lock;
	uint32_t rx_cons;                  /* trusted consumer index */
	uint32_t rx_prod_seen;             /* last validated peer prod */

	_Atomic int failed;                /* 1: peer corrupted the ring (-EPROTO);
					      2: we left it for TCP (-ECANCELED,
					      xway_chan_revert; set under both
					      locks, re-read under each) */
	_Atomic int wr_shut;               /* our SHUT_WR (or reset) done */
	_Atomic int reset_done;            /* we reset */
	_Atomic int rst_reported;          /* peer's RST returned once */
	/* Sleepers of our process tree inside xway_chan_wait, per interest:
	 * a waiter that drains the shared eventfd re-arms for the others
	 * (see io.c "Several sleepers"). */
	_Atomic int sleep_in, sleep_out;
	_Atomic int spin_budget_ns;        /* adaptive: shrinks when spins fail */
	_Atomic int just_notified;         /* our last send woke the peer */

	/* Trusted statistics (the ctl copies are for display only). */
	_Atomic uint64_t st_wakeups, st_sleeps;
	/* Xen ends (shim/chan/xen.c xen_wait): notifications consumed and
	 * threads asleep, shared by every process holding the end (fork,
	 * exec), since they all read one event channel. */
	_Atomic unsigned xen_acks;
	_Atomic int      xen_sleepers;
};

struct xway_chan {
	const struct xway_chan_ops *ops;
	enum xway_backend backend;
	int      side;                     /* 0 creator/client, 1 acceptor */
	uint32_t spin_ns;                  /* 0: never spin */
	int      ncpu;                     /* usable CPUs at set-up */
	int      pollfd;                   /* what this side sleeps on */

	/* ---- local backend ---- */
	struct xway_chan_shm *shm;
	size_t   shm_len;
	int      fds[3];                   /* memfd, efd0, efd1 */
	int      peer_efd;
	struct xw_ring tx, rx;             /* private geometry copies */
	uint32_t *my_hint, *peer_hint;     /* ring[side].spinning words */
	struct xw_ep *ep;                  /* shared mutable state (above) */
	int      ep_fd;                    /* its memfd, -1 if anonymous */
	size_t   ep_len;
	/* local.c spares: made by this process (ep_pid) in sharing epoch
	 * ep_epoch and never handed to another: kept for the next end. */
	int      ep_own;
	unsigned ep_epoch;
	pid_t    ep_pid;

	/* ---- xen backend ---- */
	struct xw_xen *xen;                /* process-private (malloc) */
};

/* slab.c: endpoint objects (zeroed), signal- and thread-safe. */
struct xway_chan *xw_slab_alloc(void);
void xw_slab_free(struct xway_chan *c);

/* local.c */
extern const struct xway_chan_ops xw_local_ops;
struct xway_chan *xw_chan_alloc(int want_fd);
struct xway_chan *xw_chan_alloc_carried(int ep_fd);
struct xway_chan *xw_chan_alloc_on(int ep_fd);
void xw_chan_free(struct xway_chan *c);
int  xw_fd_to_high(int fd);

/* xen.c: leaving a Xen channel for TCP (xway_chan_revert and friends). */
int      xw_xen_revert(struct xway_chan *c);
ssize_t  xw_xen_take_back(struct xway_chan *c, void *buf, size_t len);
unsigned xw_xen_reverted(struct xway_chan *c);
int      xw_xen_fds(const struct xway_chan *c, int *fds, int max);
int  xw_usable_cpus(void);
uint32_t xw_spin_param(const struct xway_chan_params *p);

/* io.c: local data path */
ssize_t  xw_local_sendv(struct xway_chan *c, const struct iovec *iov, int iovcnt);
ssize_t  xw_local_recvv(struct xway_chan *c, const struct iovec *iov, int iovcnt,
			unsigned flags);
size_t   xw_local_readable(struct xway_chan *c);
size_t   xw_local_unsent(struct xway_chan *c);
unsigned xw_local_poll(struct xway_chan *c);
int      xw_local_shutdown_wr(struct xway_chan *c);
int      xw_local_close_rd(struct xway_chan *c);
int      xw_local_reset(struct xway_chan *c);
int      xw_local_wait(struct xway_chan *c, unsigned events, int extra_fd,
		       int timeout_ms);
unsigned xw_local_arm(struct xway_chan *c, unsigned events);
void     xw_local_ack(struct xway_chan *c);

/* excl.c: 0 or -errno (a dead holder is repaired). */
int  xw_lock(struct xw_excl *x);
void xw_unlock(struct xw_excl *x);
int  xw_lock_init(struct xw_excl *x);
void xw_excl_share(struct xw_excl *x);
void xw_excl_register(struct xway_chan *c);
void xw_excl_unregister(struct xway_chan *c);
int  xw_excl_sandboxed(void);   /* a seccomp filter may be up */

/* This process's pid (xway_chan_set_pid_source, else getpid()). */
pid_t xw_pid(void);

/* Optional log sink (xway_chan_set_logger). */
void xw_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif /* XWAY_CHAN_INT_H */
