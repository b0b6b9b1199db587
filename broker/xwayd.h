/* SPDX-License-Identifier: MIT */
/*
 * xwayd's internal state, shared by its files: the configuration, the
 * connected clients, the listener directory, offers and connection records.
 * Everything runs on the one GMainLoop thread, which is what makes every
 * claim/withdraw decision atomic: no locks anywhere in the broker.
 */
#ifndef XWAY_BROKER_XWAYD_H
#define XWAY_BROKER_XWAYD_H

#include <glib.h>
#include <glib-unix.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <xway/proto.h>
#include <xway/ring.h>
#include <xway/chan.h>

#include "proto.h"

#define XWAYD_VERSION 1u
#define XWAYD_MODE_LOCAL 1u
#define XWAYD_MODE_XEN   2u

/* Limits that keep one client from exhausting the broker. */
#define XWAYD_OUTQ_MAX         512   /* queued reply packets per client */
#define XWAYD_OFFERS_MAX       4096  /* pending offers per client */
#define XWAYD_LISTENERS_MAX    4096  /* listener registrations per client */
#define XWAYD_ERRORS_MAX       64    /* protocol errors before disconnect */
#define XWAYD_MSGS_PER_WAKEUP  64    /* fairness between clients */
#define XWAYD_MSGS_PER_DRAIN   1024  /* xwayd_clients_read_connecting, per client */
#define XWAYD_DRAIN_DEPTH      8     /* ... and its nesting */
#define XWAYD_FINISHED_MAX     4096  /* finished connection records kept */
#define XWAYD_ACTIVE_MAX       65536 /* live + pending connection records */
#define XWAYD_VCHAN_POOL_DEFAULT 2   /* xen_vchan_pool= */
#define XWAYD_VCHAN_POOL_MAX   16
#define XWAYD_PREATTACH_MAX    64    /* peer offers mapped before their claim */

struct xwayd_config {
	char *socket_path;
	uint32_t mode;                 /* XWAYD_MODE_* (as running) */
	bool mode_auto;                /* mode=auto: xen if xenstore works */
	uint32_t claim_timeout_ms;
	int log_level;                 /* syslog priority: 3 err .. 7 debug */
	bool xen_link;                 /* Xen mode: broker-to-broker links */
	uint32_t xen_vchan_pool;       /* Xen mode: vchan ends made ahead per peer */
	struct xway_rule *allow, *deny;
	size_t nallow, ndeny;
};

struct xwayd_outpkt {
	void *buf;
	size_t len;
	int fds[XWAY_BROKER_MAX_FDS];
	unsigned nfds;
};

struct xwayd_client {
	uint64_t id;
	int fd;
	guint watch;
	guint out_watch;               /* G_IO_OUT watch while outq is non-empty */
	pid_t pid;
	uid_t uid;
	gid_t gid;
	char comm[32];
	GQueue outq;                   /* struct xwayd_outpkt * */
	unsigned errors;
	unsigned noffers, nlisten;
	bool dead;                     /* disconnect once the stack unwinds */
	bool connecting;               /* got a local offer pending: may send
					  OFFERs with XWAY_HDR_F_CONNECTING */
	GHashTable *xen_mute;          /* event port -> its descriptor + 1
					  (XEN_MUTE), or NULL */
	guint reap;                    /* idle source that frees a dead client */
};

/* A network namespace: SO_NETNS_COOKIE, or the ns inode with bit 63 set
 * when the kernel lacks the cookie. */
typedef uint64_t xwayd_netns;

struct xwayd_listener {
	struct xway_addr addr;
	xwayd_netns netns;
	bool v6only;
	pid_t pid;                     /* first registrant */
	uid_t uid;
	GHashTable *refs;              /* client id -> refcount (GUINT_TO_POINTER);
					  id XWAYD_RESTORED: restored from the
					  previous instance (persist.c) */
	GArray *inodes;                /* uint64_t: the registered sockets' inodes
					  (SO_REUSEPORT groups have several) */
	double since;
};
#define XWAYD_RESTORED 0u              /* never a client id (they start at 1) */
#define XWAYD_LISTENER_INODES 16

enum xwayd_conn_state {
	XC_PENDING, XC_ACCELERATED, XC_CLOSED, XC_FALLBACK,
};

struct xwayd_side {
	struct xway_addr addr;
	pid_t pid;
	uid_t uid;
	int64_t tcp_sent, tcp_received;   /* -1 unknown */
	int64_t chan_tx, chan_rx;         /* REPORT CLOSED finals; -1 unknown */
	bool closed;                      /* REPORT CLOSED seen */
};

struct xwayd_conn {
	uint64_t cookie;
	uint64_t offer_id;                /* 0 for fallback-only records */
	enum xwayd_conn_state state;
	uint32_t backend;                 /* XWAY_BACKEND_*, 0 = tcp */
	uint32_t reason;
	char detail[160];
	struct xwayd_side side[2];        /* 0 client, 1 server */
	uint64_t client_id;               /* offering broker connection */
	xwayd_netns netns_client, netns_server;
	uint32_t ring_order;
	uint64_t bytes_c2s, bytes_s2c;    /* final, or last read from shm */
	double started, ended;            /* ended < 0: still live */
	uint64_t seq;                     /* creation order (started is coarse) */
	/* PENDING: all three; ACCELERATED: only memfd, read for the
	 * counters (a local channel; a Xen decision header is closed at the
	 * decision). */
	int memfd, efd0, efd1;
	guint timer;                      /* PENDING: claim-timeout source */
	gint64 offered_us;                /* PENDING: g_get_monotonic_time() at OFFER */
	/* Xen mode (xen.c, docs/XEN.md): a cross-domain connection.  On the
	 * client's broker (xen_remote false) the offer is published in
	 * xenstore and decided by the peer's broker; on the server's broker
	 * (xen_remote true) it is a record made from the peer's published
	 * offer, with no descriptors and no header. */
	bool xen, xen_remote, xen_withdraw_asked;
	/* Reports a client sent while its offer was still pending here (the
	 * shim takes "the peer mapped the vchan" as claimed before this broker
	 * applies the outcome): [0] its "left the channel" report, [1] its
	 * close report (the finals), applied in that order when "claimed"
	 * comes, so the record neither stays "xen" nor loses its counters. */
	bool xen_early_has[2];
	struct xway_report xen_early[2];
	uint32_t xen_dom;                 /* the other domain */
	uint64_t xen_id;                  /* offer id in the client's broker */
	char xen_path[XWAY_XEN_PATH_MAX]; /* the vchan's xenstore path */
	/* The offer travelled on the broker-to-broker link (xenlink.c), not
	 * xenstore: no offer or vchan nodes; the vchan's shared page and
	 * port came with it (server's broker).  xen_withdraw_xs: the withdraw
	 * request had to go through xenstore (its node is removed at the
	 * end). */
	bool xen_link, xen_withdraw_xs;
	uint32_t xen_ring_ref, xen_port;
	/* Server domain, ACCELERATED: the grants the claimer mapped, for
	 * REMAP (NULL elsewhere; PENDING when attached early, below). */
	struct xwayd_vchan_grants *xen_grants;
	/* Server domain, PENDING: the vchan's client end, attached when the
	 * offer came on a link ([gntdev, evtchn], -1 when not), for the
	 * claimer. */
	int xen_pre_fds[2];
	struct xway_xen_vchan xen_pre_v;
	/* Server domain, ACCELERATED: the server end's state (the shim's
	 * memfd, read-only) for the byte counters, or NULL. */
	const uint8_t *xen_ep;
};

struct xwayd_stats {
	/* offers_connecting: OFFERs whose client connected meanwhile;
	 * claims_read_first: claims that matched only after reading those
	 * clients' links. */
	uint64_t offers_connecting, claims_read_first;
	uint64_t clients_total, offers, claims, claim_misses, withdrawals,
		 expiries, fallbacks, reports, proto_errors, queries,
		 listener_adds, listener_dels, disconnects_forced;
	/* Xen mode: how many channel ends this broker made (serve: client
	 * domain; attach: server domain) and the microseconds they took, and
	 * on the client's side the time from offer to the peer's decision. */
	uint64_t xen_serves, xen_serve_us, xen_attaches, xen_attach_us,
		 xen_decided, xen_decide_us;
	/* ... of which served from the pool made ahead (vchanpool.c), and
	 * attached when the peer's offer came rather than at its claim. */
	uint64_t xen_serves_pooled, xen_attaches_early;
	uint64_t by_reason[XWAY_R__MAX];
};

struct xwayd {
	struct xwayd_config cfg;
	GMainLoop *loop;
	int lfd;                          /* listening socket */
	uint64_t instance;
	double started;
	uint64_t next_client_id, next_offer_id;
	GHashTable *clients;              /* id -> client */
	GHashTable *listeners;            /* key string -> listener */
	GHashTable *offers;               /* offer_id -> conn (PENDING) */
	GHashTable *live;                 /* cookie -> conn (PENDING/ACCELERATED) */
	GQueue finished;                  /* conn, newest at tail */
	GHashTable *netns_addrs;          /* netns -> struct netns_cache */
	int gen_fd;                       /* memfd with struct xway_gen_page */
	xwayd_netns netns;                /* the broker's own namespace */
	struct xway_gen_page *gen;
	struct xwayd_stats st;
};

extern struct xwayd *xd;

/* log.c */
void xwayd_log_init(int level);
void xwayd_log(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define XLOG_ERR(...)   xwayd_log(3, __VA_ARGS__)
#define XLOG_WARN(...)  xwayd_log(4, __VA_ARGS__)
#define XLOG_INFO(...)  xwayd_log(6, __VA_ARGS__)
#define XLOG_DEBUG(...) xwayd_log(7, __VA_ARGS__)

/* config.c: 0, or -EINVAL with a message in *err (g_free it). */
int xwayd_config_load(struct xwayd_config *cfg, const char *path,
		      bool must_exist, char **err);
void xwayd_config_free(struct xwayd_config *cfg);

/* notify.c: sd_notify(3) protocol without libsystemd; 0 when unset. */
int xwayd_notify(const char *state);

/* xwayd.c: reply helpers. */
bool xwayd_clients_read_connecting(struct xwayd_client *except);
/* g_unix_fd_add, recursion-safe (no poll-set changes around dispatch). */
guint xwayd_fd_watch(int fd, GIOCondition cond, GUnixFDSourceFunc fn, gpointer data);
/* timer.c: the broker's timers, on one timerfd (no GLib timeout sources:
 * while one exists GLib reads the clock twice per loop iteration).  As
 * g_timeout_add / g_source_remove; ids are timer.c's own. */
guint xwayd_timeout_add(guint ms, GSourceFunc fn, gpointer data);
guint xwayd_timeout_add_full(guint ms, GSourceFunc fn, gpointer data, GDestroyNotify notify);
gboolean xwayd_timeout_remove(guint id);
void xwayd_timers_shutdown(void);
void xwayd_send(struct xwayd_client *c, uint16_t type, uint32_t seq,
		uint32_t flags, const void *body, size_t len,
		const int *fds, unsigned nfds);
void xwayd_send_result(struct xwayd_client *c, uint16_t type, uint32_t seq,
		       int32_t status, uint32_t reason, uint64_t offer_id,
		       const char *fmt, ...) __attribute__((format(printf, 7, 8)));
double xwayd_now(void);
gint64 xwayd_mono_us(void);      /* CLOCK_MONOTONIC_COARSE */

/* sock.c: inspection of descriptors received from clients. */
int xwayd_sock_netns(int fd, pid_t pid, xwayd_netns *out);
int xwayd_sock_addr(int fd, bool peer, struct xway_addr *out);
int xwayd_sock_check_tcp(int fd, bool *listening);
int xwayd_sock_check_stream(int fd, bool *listening);
int xwayd_fd_is_eventfd(int fd);
/* /proc/self/fd/<fd> link starts with prefix ("socket:[", "/memfd:"):
 * tells the kind of a descriptor without touching its file system. */
/* Close a descriptor a client sent us on a helper thread: the close of a
 * client-supplied fd can block (a TCP socket with SO_LINGER whose sender
 * closed its own copy, a FUSE file's flush); the main loop never must. */
void xwayd_close_async(int fd);
void xwayd_close_async_shutdown(void);

/* dir.c: the listener directory and per-netns local addresses. */
void xwayd_dir_init(void);
void xwayd_listen_add(struct xwayd_client *c, const struct xway_req *r, int fd);
void xwayd_listen_del(struct xwayd_client *c, const struct xway_req *r, int fd);
void xwayd_dir_client_gone(struct xwayd_client *c);
/* Find the listener for dst as seen from netns; returns it or NULL and a
 * reason (NO_LISTENER or NOT_CORESIDENT). */
/* dir.c: a listener of the previous instance, verified still listening
 * (persist.c); false if it was already registered. */
bool xwayd_dir_restore(const struct xway_addr *a, xwayd_netns ns, uid_t uid,
		       bool v6only, const uint64_t *inodes, unsigned n);
/* dir.c: drop the restored references whose sockets no longer listen
 * (listening: xwayd_tcp_listening); how many listeners remain restored. */
unsigned xwayd_dir_check_restored(const GArray *listening);
/* persist.c: the listener directory as a file beside the socket, so that a
 * restarted broker knows the listeners of processes that outlived it. */
void xwayd_persist_changed(void);
void xwayd_persist_restore(void);
void xwayd_persist_stop(void);
struct xwayd_listener *xwayd_dir_lookup(const struct xway_addr *dst,
					xwayd_netns from, pid_t from_pid,
					uint32_t *reason);
void xwayd_gen_bump(void);

/* conn.c: offers, claims, withdrawals, expiry, reports, records. */
void xwayd_conn_init(void);
void xwayd_offer(struct xwayd_client *c, const struct xway_req *r, int fds[4]);
void xwayd_claim(struct xwayd_client *c, const struct xway_req *r, int fd, int ep_fd);
void xwayd_remap(struct xwayd_client *c, const struct xway_req *r, int fd);
void xwayd_xen_mute(struct xwayd_client *c, const struct xway_req *r, int fd);
void xwayd_xen_notify(struct xwayd_client *c, const struct xway_req *r);
void xwayd_xen_mute_gone(struct xwayd_client *c);
void xwayd_withdraw(struct xwayd_client *c, const struct xway_req *r);
void xwayd_report(struct xwayd_client *c, const struct xway_req *r);
void xwayd_conn_client_gone(struct xwayd_client *c);
void xwayd_conn_refresh(struct xwayd_conn *k);   /* live byte counters */
void xwayd_conn_shutdown(void);

/* dir.c: local addresses of the namespace pid lives in (v4 mapped). */
void xwayd_netns_local_addrs(pid_t pid, GArray *ips);

/* xen.c: Xen mode discovery (xenstore, libxenstore by dlopen). */
int xwayd_xen_start(char **err);
void xwayd_xen_stop(void);
bool xwayd_xen_active(void);
void xwayd_xen_listeners_changed(void);
/* The domid of another domain owning dst with an xway listener there, or
 * UINT32_MAX. */
uint32_t xwayd_xen_lookup(const struct xway_addr *dst);
uint32_t xwayd_xen_self(void);
void xwayd_xen_peers(GString *o, bool json);
/* The vchan path for a connection to domain dom with this cookie. */
int xwayd_xen_vchan_path(uint32_t dom, uint64_t cookie, char *buf, size_t n);
/* Client's broker: publish / re-publish with the withdraw request / remove
 * the offer node /local/xway/<self>/offers/<offer_id>.  0 or -errno. */
int xwayd_xen_publish_offer(struct xwayd_conn *k);
/* Client's broker: send the offer on the link to its domain instead;
 * true (and k->xen_link) if it is in the link's ring. */
bool xwayd_xen_link_offer(struct xwayd_conn *k, uint32_t ring_ref, uint32_t port);
void xwayd_xen_unpublish_offer(const struct xwayd_conn *k);
/* Server's broker: the decision for the peer's offer. */
void xwayd_xen_outcome(const struct xwayd_conn *k, bool claimed);
/* Parse domain dom's offer text (docs/XEN.md); pure, for the unit test. */
int xwayd_xen_parse_offer(uint32_t dom, uint32_t self, const char *text,
			  uint64_t *cookie, struct xway_addr *src,
			  struct xway_addr *dst, char *path, size_t pathlen,
			  const char **why);
/* Client's broker: the vchan server end's ring-ref and event-channel
 * nodes under path (owner us, peer may read); removal when the offer ends.
 * Server's broker: read and parse them (untrusted).  0 or -errno. */
int xwayd_xen_vchan_publish(const char *path, uint32_t peer, uint32_t ring_ref,
			    uint32_t port);
void xwayd_xen_vchan_unpublish(const char *path);
int xwayd_xen_vchan_read(const char *path, uint32_t *ring_ref, uint32_t *port,
			 const char **why);

/* xenvchan.c: the privileged half of a vchan (DESIGN §7).  serve: the
 * server end for peer (client domain), fds [gntalloc, evtchn]; attach: the
 * client end of peer's vchan (server domain), fds [gntdev, evtchn].  The
 * caller owns the fds (send them, then close).  0 or -errno and *why. */
int xwayd_vchan_serve(uint32_t peer, uint32_t ring_order, int fds[2],
		      uint32_t *ring_ref, struct xway_xen_vchan *v, const char **why);
/* vchanpool.c: server ends made ahead (DESIGN §7.3).  take: one for
 * (peer, ring_order) from the pool (*pooled true) or served now; the caller
 * owns the fds as from serve.
 * drop: close the kept ends for peer (UINT32_MAX: all). */
int xwayd_vchan_take(uint32_t peer, uint32_t ring_order, int fds[2], uint32_t *ring_ref,
		     struct xway_xen_vchan *v, bool *pooled, const char **why);
void xwayd_vchan_pool_drop(uint32_t peer);
/* One of our Xen offers was decided: refill the pool when idle. */
void xwayd_vchan_pool_refill(void);
unsigned xwayd_vchan_pool_ready(void);
void xwayd_vchan_pool_stop(void);
/* What the server domain's broker keeps of an attached vchan for REMAP
 * (a fork child of the application maps the same grants again). */
struct xwayd_vchan_grants {
	uint32_t peer, n, port;
	uint8_t  lo, ro;
	int      fake_fd;          /* test stand-in: the fake grant memfd */
	uint32_t refs[];
};
int xwayd_vchan_attach(uint32_t peer, uint32_t ring_ref, uint32_t remote_port,
		       int fds[2], struct xway_xen_vchan *v,
		       struct xwayd_vchan_grants **keep, const char **why);
/* A fresh gntdev descriptor with one map of g's grants: *gfd, geometry. */
int xwayd_vchan_remap(const struct xwayd_vchan_grants *g, int *gfd,
		      struct xway_xen_vchan *v, const char **why);
void xwayd_vchan_grants_free(struct xwayd_vchan_grants *g);
/* A sandboxed holder's event channel (XEN_MUTE): 0 if fd is one (an
 * eventfd under the test stand-in), and the notification made for it. */
int xwayd_vchan_evtchn_ok(int fd);
int xwayd_vchan_notify(int fd, uint32_t port);
/* libxenvchan's limits on a shared page's orders (pure, for tests). */
int xwayd_vchan_orders_ok(uint32_t left_order, uint32_t right_order);

/* conn.c: domain dom vanished: withdraw its pending offers, reset and
 * close its accelerated connections. */
void xwayd_conn_xen_vanished(uint32_t dom);
/* Read the other domains' offers now (a CLAIM found no match). */
void xwayd_xen_scan_now(void);
/* dom published ip among its addresses. */
bool xwayd_xen_dom_owns(uint32_t dom, const uint8_t ip[16]);

/* xenlink.c: the broker-to-broker links (docs/XEN.md §3.1).  Each broker
 * serves one libxenvchan to every peer domain ("ours": our offers and
 * withdraw requests out, the peer's outcomes in) and attaches to the one
 * the peer serves to it ("theirs": the peer's offers in, our outcomes
 * out).  xen.c feeds them what it reads in xenstore. */
void xwayd_xen_link_init(uint32_t self, bool enabled);
void xwayd_xen_link_stop(void);
/* dom's current entry: its broker instance ("" when stopped) and its
 * advertisement of the link it serves to us ("GEN INSTANCE", or NULL). */
void xwayd_xen_link_peer(uint32_t dom, const char *instance, const char *adv);
void xwayd_xen_link_gone(uint32_t dom);
/* Retry ends that failed (xen.c's periodic tick). */
void xwayd_xen_link_tick(void);
/* Send m on our link to dom (ours) or on dom's link to us (!ours); true
 * when the whole record is in the ring (the peer then reads it before it
 * sees anything we do after). */
bool xwayd_xen_link_send(uint32_t dom, bool ours, const struct xway_link_msg *m);
/* Read every record waiting on every link now (a CLAIM found no match). */
void xwayd_xen_links_drain(void);
/* A link node name we serve now (gc keeps it). */
bool xwayd_xen_link_current(uint32_t dom, const char *name);
void xwayd_xen_link_show(GString *o, uint32_t dom, bool json);
/* xen.c, for xenlink.c: xenstore writes and removals under our own tree. */
bool xwayd_xen_put(const char *path, const char *val);
void xwayd_xen_rm(const char *path);

/* conn.c: the Xen exchange's entry points (called from xen.c and
 * xenlink.c).  lm: the link record the offer came in, or NULL (xenstore). */
void xwayd_conn_remote_offer(uint32_t dom, uint64_t id, uint64_t cookie,
			     const struct xway_addr *src, const struct xway_addr *dst,
			     const char *path, const struct xway_link_msg *lm);
/* The client's broker: dom's outcome for our offer id came on the link. */
void xwayd_conn_xen_link_outcome(uint32_t dom, uint64_t id, bool claimed);
/* The server's broker: the link from dom closed; its pending offers that
 * came on it are withdrawn (nobody could tell dom the outcome). */
void xwayd_conn_xen_link_lost(uint32_t dom);
/* The peer asked to withdraw its offer, or the offer node vanished. */
void xwayd_conn_remote_withdraw(uint32_t dom, uint64_t id, const char *why);
/* The client's broker: the peer decided k. */
void xwayd_conn_xen_decided(struct xwayd_conn *k, bool claimed);

/* diag.c: kernel TCP counters of the socket local->peer in the broker's
 * own namespace (NETLINK_SOCK_DIAG); 0 or -errno. */
int xwayd_tcp_counters(const struct xway_addr *local, const struct xway_addr *peer,
		       int64_t *sent, int64_t *received);
/* diag.c: the TCP state (TCP_ESTABLISHED, TCP_TIME_WAIT, ...) of the socket
 * local->peer in the broker's own namespace; -ENOENT if there is none. */
int xwayd_tcp_state(const struct xway_addr *local, const struct xway_addr *peer);
/* diag.c: abort the TCP sockets to peer that process pid holds (the client
 * side of a vanished Xen domain); how many, or -errno. */
int xwayd_tcp_abort_to(const struct xway_addr *peer, pid_t pid);
/* diag.c: abort the TCP socket local->peer (SOCK_DESTROY); 0 or -errno. */
int xwayd_tcp_destroy(const struct xway_addr *local, const struct xway_addr *peer);
/* diag.c: every listening TCP socket of the broker's namespace (both
 * families), or NULL and *err = -errno. */
struct xwayd_tcp_listening {
	uint64_t inode;
	struct xway_addr addr;
};
GArray *xwayd_tcp_listening(int *err);
void xwayd_diag_close(void);

/* query.c */
void xwayd_query(struct xwayd_client *c, const struct xway_req *r);

#endif /* XWAY_BROKER_XWAYD_H */
