/* SPDX-License-Identifier: MIT */
/*
 * Internals of libxway.so shared by its files: the table of real libc
 * functions (expanded from calls.def), the fd table and the per-connection
 * object, configuration, logging, the broker link, connection set-up and
 * the data path.  Nothing here is exported (the library is built with
 * -fvisibility=hidden; only the interposed calls in libxway.map are
 * visible).  See shim/README.md for how the pieces fit together.
 *
 * Conventions: internal functions return 0, a count or -errno and never
 * touch errno; the interposed entry points (sockcall.c, and poll.c /
 * lifecycle.c of the readiness and process-lifecycle work) convert with
 * xway_ret() from errno.h in exactly one place.
 */
#ifndef XWAY_SHIM_H
#define XWAY_SHIM_H

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "xway/chan.h"
#include "xway/proto.h"
#include "xway/ring.h"

#define XWAY_SHIM_VERSION 1u

/*
 * The channel layer is referenced weakly: libxway.so links (with -z defs)
 * and runs on plain TCP while shim/chan/ is absent; set-up checks
 * xway_chan_local_create before making a channel, and no other channel
 * function is reached without a channel.
 */
#pragma weak xway_chan_local_create
#pragma weak xway_chan_local_attach
#pragma weak xway_chan_local_shm
#pragma weak xway_chan_nofile_changed
#pragma weak xway_chan_set_pid_source
#pragma weak xway_chan_local_reattach
#pragma weak xway_chan_user_word
#pragma weak xway_chan_before_exec
#pragma weak xway_chan_ep_handed
#pragma weak xway_chan_sharing
#pragma weak xway_chan_spare_fds
#pragma weak xway_chan_close
#pragma weak xway_chan_fds
#pragma weak xway_chan_get_stats
#pragma weak xway_chan_readable
#pragma weak xway_chan_unsent
#pragma weak xway_chan_capacity
#pragma weak xway_chan_reset
#pragma weak xway_chan_close_rd
#pragma weak xway_chan_shutdown_wr
#pragma weak xway_chan_wait
#pragma weak xway_chan_send
#pragma weak xway_chan_sendv
#pragma weak xway_chan_recv
#pragma weak xway_chan_recvv
#pragma weak xway_chan_poll
#pragma weak xway_chan_pollfd
#pragma weak xway_chan_arm
#pragma weak xway_chan_ack
#pragma weak xway_chan_revert
#pragma weak xway_chan_take_back
#pragma weak xway_chan_reverted

/* ---- the real functions ------------------------------------------------ */

/*
 * One function pointer per line of calls.def, named like the libc call:
 * real.connect(fd, sa, len).  Filled by xway_real_init() with
 * dlsym(RTLD_NEXT) then dlsym(RTLD_DEFAULT); a symbol found nowhere binds
 * a stub that fails with ENOSYS.  Variadic calls (fcntl, ioctl, prctl) are
 * declared with their widest fixed form.
 */
#define XWAY_CALL(ret, name, params, args) ret (*name) params;
struct xway_real {
#include "calls.def"
};
#undef XWAY_CALL
extern struct xway_real real;

/* ---- start-up guard ------------------------------------------------------ */

/*
 * xway_ready() is true once the real table is bound and the configuration
 * read.  Until then, and while a thread is inside the shim already (the
 * re-entry depth: dlsym may call malloc, logging may call write), the entry
 * points go straight to libc.  xway_ready() binds the table on first use;
 * it never allocates once bound.
 */
int  xway_ready(void);
/* rlimit.c: room for our descriptors above the application's soft
 * RLIMIT_NOFILE (raised at start-up, hidden from the application). */
void xway_nofile_init(void);
void xway_nofile_before_exec(void);
void xway_nofile_after_exec(void);
void xway_real_init(void);          /* real.c: idempotent, thread-safe */
extern _Thread_local int xway_depth;

/* ---- configuration (config.c) -------------------------------------------- */

struct xway_port_rule { uint16_t lo, hi; uint8_t exclude; };
struct xway_addr_rule { uint8_t ip[16]; uint8_t prefix; uint8_t exclude; };

#define XWAY_MAX_RULES 32

struct xway_config {
	int      disabled;              /* XWAY_DISABLE=1 or a bad value */
	int      log_level;             /* XWAY_LOG_* */
	int      log_fd;                /* -1: stderr (fd 2) */
	uint32_t ring_order;            /* XWAY_RING_SIZE as log2 */
	uint32_t spin_ns;               /* XWAY_SPIN_US * 1000, 0 default */
	int      broker_timeout_ms;     /* XWAY_BROKER_TIMEOUT_MS, default 100 */
	char     broker_sock[108];      /* XWAY_BROKER_SOCK */
	int      n_ports, n_addrs;
	struct xway_port_rule ports[XWAY_MAX_RULES];
	struct xway_addr_rule addrs[XWAY_MAX_RULES];
};
extern struct xway_config xway_cfg;

/*
 * Parse the XWAY_* variables from getenv into *cfg.  On a bad value, writes
 * one line ("xway: bad XWAY_RING_SIZE='12x': expected ...; acceleration
 * disabled") into err (size errlen), sets cfg->disabled and returns -EINVAL.
 * Pure apart from getenv; unit-tested.
 */
int xway_config_parse(struct xway_config *cfg, char *err, size_t errlen);
/* Is a connection to this destination allowed by XWAY_PORTS/XWAY_ADDRS? */
int xway_config_allows(const struct xway_config *cfg, const struct xway_addr *dst);
/* "5000-6000,!22"-style parsers, exposed for the unit test. */
int xway_parse_size(const char *s, uint64_t *out);
int xway_parse_ports(const char *s, struct xway_port_rule *r, int max);
int xway_parse_addrs(const char *s, struct xway_addr_rule *r, int max);

/* ---- logging (log.c) ----------------------------------------------------- */

enum { XWAY_LOG_ERROR = 0, XWAY_LOG_WARN, XWAY_LOG_INFO, XWAY_LOG_DEBUG };

/* Never called on the pass-through path.  Writes nothing to a regular file
 * when RLIMIT_FSIZE would kill us (sshd's sandbox sets it to 0).  Keeps
 * errno. */
void xway_log(int level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
#define XLOG(lvl, ...) do { if ((lvl) <= xway_cfg.log_level) \
	xway_log((lvl), __VA_ARGS__); } while (0)
#define XDBG(...)  XLOG(XWAY_LOG_DEBUG, __VA_ARGS__)
#define XINFO(...) XLOG(XWAY_LOG_INFO, __VA_ARGS__)
#define XWARN(...) XLOG(XWAY_LOG_WARN, __VA_ARGS__)
const char *xway_reason_name(unsigned reason);

/* ---- per-connection object and fd table (fdtable.c) ---------------------- */

enum xway_state {
	XWAY_ST_LISTENER = 1, /* a listening socket registered with the broker */
	XWAY_ST_PENDING,      /* client offered, broker has not decided yet */
	XWAY_ST_ACCEL,        /* data travels on the channel */
	XWAY_ST_FLUSH,        /* withdrawn: bytes of ring 0 still owed to TCP */
	XWAY_ST_CLOSED,       /* torn down; an in-flight call holds the last ref */
};

/*
 * One per connection (or registered listener) in this process, shared by
 * every fd number that refers to it (dup, dup2, F_DUPFD).  Objects come
 * from a pool that is never returned to the system, so a reader that loaded
 * a slot and lost a race with close() still dereferences valid memory; it
 * takes a reference with xway_conn_tryget() and re-checks the slot.
 *
 * refs counts fd-table slots plus calls in flight.  holders (in MAP_SHARED
 * memory, *shared) counts the processes of this process tree that hold the
 * connection: the last one to close does the kernel-like teardown (reset if
 * unread data, reading side closed).  The lifecycle code increments it at
 * fork and decrements it in a child that closes.
 *
 * Locking: `lock` serialises set-up state changes (PENDING -> ACCEL/FLUSH
 * -> plain TCP) and the flush buffer; the data path on an ACCEL connection
 * takes no lock of ours (the channel has a lock per direction).
 */
struct xway_conn_shared {
	_Atomic int holders;
	uint32_t    pad;
};

struct xway_conn {
	_Atomic int   refs;            /* slots + calls in flight (this process) */
	_Atomic int   slots;           /* fd numbers naming it (this process) */
	_Atomic int   state;           /* enum xway_state */
	int           fd;              /* the real kernel socket (first fd number) */
	int           side;            /* 0 client, 1 server, -1 listener */
	int           family;          /* AF_INET / AF_INET6 */
	pid_t         owner_pid;       /* process that created this object */
	struct xway_chan *chan;        /* NULL for listeners */
	/* The holder count: in shared_page (anonymous MAP_SHARED, made with
	 * the object) until a channel is bound, then in the channel end's
	 * user word, which an exec carries too (xway_conn_bind_chan). */
	struct xway_conn_shared *shared;
	void         *shared_page;
	pthread_mutex_t lock;
	uint64_t      cookie;
	uint64_t      offer_id;        /* client while PENDING */
	const struct xway_chan_shm *hdr; /* client's read-only view of the header
					   while PENDING/FLUSH (attached word) */
	size_t        hdr_len;
	int           hdr_borrowed;    /* hdr is the channel's own mapping */

	/* Tracked socket state (the real socket's flag is set as well). */
	_Atomic int   nonblock;        /* O_NONBLOCK of the open file */
	int           rcvtimeo_ms;     /* SO_RCVTIMEO, 0 = none */
	int           sndtimeo_ms;     /* SO_SNDTIMEO, 0 = none */
	int           rcvlowat;        /* SO_RCVLOWAT as the kernel keeps it (>= 1) */
	int           linger_on, linger_s;   /* SO_LINGER as set */
	int           defer_accept;    /* TCP_DEFER_ACCEPT kept from the kernel */
	_Atomic int   registered;      /* listener: LISTEN_ADD accepted */
	pid_t         reg_pid;         /* ... by this process */
	uint32_t      reg_gen;         /* ... over this broker link generation */
	_Atomic int   rd_shut;         /* SHUT_RD done locally */
	_Atomic int   wr_shut;         /* SHUT_WR done */
	_Atomic int   tcp_eof;         /* the TCP socket showed FIN */
	_Atomic int   rst_state;       /* 0, 1 reset seen (ECONNRESET owed), 2 reported,
					  3 reported to a write: reads drain the
					  ring, then 0 (io.c) */
	_Atomic int   epipe_state;     /* writes after reset/peer close: see io.c */
	_Atomic int   tcp_err_seen;    /* Xen: poll saw POLLERR/POLLHUP on the TCP
					  socket (a write checks it for a reset) */
	_Atomic int   noted;           /* io.c xway_io_note: 1 recv, 2 send logged */

	/* FLUSH: ring 0 bytes not yet on TCP (nonblocking writer). */
	char         *flush_buf;
	size_t        flush_len, flush_off;

	struct xway_addr local, peer;  /* for REPORT */
	struct xway_conn *next_free;   /* pool */

	/* close() of the last fd while calls were in flight (another thread
	 * blocked in recv/send/poll): kernel TCP keeps the socket until they
	 * return.  ep_refs counts the references held by epoll records (they
	 * must not delay anything); deferred goes 0 -> 1 when the app's number
	 * was closed with calls in flight (c->fd is then a private dup) and
	 * 1 -> 2 (CAS) by the one thread that runs the last-holder teardown
	 * once refs == ep_refs (see xway_close_app_fd, fdtable.c). */
	_Atomic int   ep_refs;
	_Atomic int   deferred;

	/* Revert to TCP (scm.c, io.c): `reverted` (under lock) 1 once this
	 * process took its bytes back from the channel, 2 when our tree left
	 * it (nothing to take back); `tcp_payload` 1 once
	 * TCP payload was seen while on the channel (a holder of the peer's
	 * socket without the shim writes there: logged once, and waits stop
	 * watching the socket until the peer reverts); `handed` 1 once this
	 * process passed the connection by SCM_RIGHTS (its close settles the
	 * hand-over first, see xway_scm_closing). */
	int           reverted;
	_Atomic int   tcp_payload;
	_Atomic int   handed;
};

/* Lock-free lookup: returns the object with a reference taken, or NULL for
 * an fd that is not ours (the pass-through case: no allocation, errno
 * untouched).  Release with xway_conn_put(). */
struct xway_conn *xway_fd_get(int fd);
/* Without taking a reference: only for "is it ours?" tests. */
int  xway_fd_is_ours(int fd);
/* Install c at fd (takes a slot reference).  Replaces nothing: the caller
 * cleared the slot (dup2 onto an fd of ours closes it first). */
int  xway_fd_set(int fd, struct xway_conn *c);
/* Remove fd's slot and return its object (the slot's reference moves to the
 * caller), or NULL. */
struct xway_conn *xway_fd_take(int fd);

/* Another fd number naming c (not except), or -1. */
int  xway_fd_other(const struct xway_conn *c, int except);
/* Remove every slot naming c (it went back to plain TCP). */
void xway_fd_drop_conn(struct xway_conn *c);

struct xway_conn *xway_conn_new(int fd, int side);   /* refs = 1 */
/* The same, bound to its channel end at once (as xway_conn_bind_chan):
 * the holder count lives in the end's user word from the start, and no
 * page of its own is mapped for it. */
struct xway_conn *xway_conn_new_chan(int fd, int side, struct xway_chan *chan, int adopt);
/* Bind a new object (not yet visible to anyone else) to its channel end.
 * adopt: the end came over an exec and its user word already holds the
 * live holder count of every process sharing it; else the count so far
 * moves there. */
void xway_conn_bind_chan(struct xway_conn *c, struct xway_chan *chan, int adopt);
void xway_conn_hold(struct xway_conn *c);
/* Drops a reference; the last one releases the channel mapping and the
 * object (xway_conn_free).  The kernel-like teardown (reset, linger,
 * REPORT) happens earlier, in xway_close_fd when the last slot goes. */
void xway_conn_put(struct xway_conn *c);
void xway_conn_free(struct xway_conn *c);          /* setup.c */

/* Iterate the table (lifecycle: fork, exec hand-over, close_range). The
 * callback runs with the table write lock held: it must not call back into
 * the fd table. */
void xway_fd_foreach(void (*fn)(int fd, struct xway_conn *c, void *arg), void *arg);

/* "Not a listener we may adopt" remembered per fd number (fdtable.c): set
 * by xway_listener_adopt; forgotten, with a fresh socket's record (below),
 * whenever the number may name a new file (close, dup2/dup3 target,
 * close_range, SCM_RIGHTS reception): xway_fd_new_file(s). */
int  xway_fd_nolisten(int fd);
void xway_fd_nolisten_set(int fd);
void xway_fd_new_file(int fd);
void xway_fd_new_files(unsigned lo, unsigned hi);

/* A TCP socket made by socket() here and untouched since (fdtable.c):
 * xway_fd_fresh is 0, or XWAY_FRESH_YES with the flags. */
#define XWAY_FRESH_V6       0x01u   /* AF_INET6 (else AF_INET) */
#define XWAY_FRESH_NONBLOCK 0x02u   /* SOCK_NONBLOCK at socket() */
#define XWAY_FRESH_NB_SET   0x04u   /* F_SETFL/FIONBIO since: ask the kernel */
#define XWAY_FRESH_OPTS_SET 0x08u   /* an option the set-up reads was set */
#define XWAY_FRESH_YES      0x100u
void     xway_fd_fresh_note(int fd, int domain, int type, int protocol);
unsigned xway_fd_fresh(int fd);
void     xway_fd_fresh_mark(int fd, unsigned flag);
void     xway_fd_fresh_forget(int fd);
void     xway_fd_fresh_forget_range(unsigned lo, unsigned hi);

/* ---- the shim's own descriptors ------------------------------------------ */

/* Move fd to a high number (F_DUPFD_CLOEXEC from xway_high_fd_base()),
 * closing the original; returns the new fd or -errno. */
int xway_fd_to_high(int fd);
int xway_high_fd_base(void);
/* The descriptors the shim owns are listed by lifecycle.c
 * (xway_lc_own_fds) for close_range/closefrom and close() guards. */

/* ---- the broker link (broker_link.c) ------------------------------------- */

/*
 * One request, one reply, under the link's lock, each bounded by
 * XWAY_BROKER_TIMEOUT_MS.  Opens the link lazily (and again in a child
 * after fork: a child never uses its parent's link).  On failure returns
 * -EHOSTDOWN and backs off for a few seconds.  fds_out receives up to
 * *nfds_out descriptors (moved to high numbers, CLOEXEC).
 */
int xway_broker_call(uint16_t type, const void *body, size_t len,
		     const int *fds, int nfds,
		     uint16_t want_type, void *reply, size_t reply_len,
		     int *fds_out, int *nfds_out);
/* The same with an explicit reply timeout (CLAIM: see setup.c). */
int xway_broker_call_tmo(int timeout_ms, uint16_t type, const void *body,
			 size_t len, const int *fds, int nfds,
			 uint16_t want_type, void *reply, size_t reply_len,
			 int *fds_out, int *nfds_out);
/*
 * A request whose reply the caller takes later, letting it work meanwhile
 * (the OFFER of a connection that connects while the broker reads it):
 * 0 and *seq, -EBUSY when too many are outstanding (use xway_broker_call),
 * or -EHOSTDOWN.  Every successful request must be followed by
 * xway_broker_reply(*seq): the reply's type, or -EHOSTDOWN (the link is
 * then closed and backs off, as for a failed call).
 */
int xway_broker_request(uint16_t type, uint32_t flags, const void *body,
			size_t len, const int *fds, int nfds, uint32_t *seq);
int xway_broker_reply(uint32_t seq, int timeout_ms, void *reply, size_t reply_len,
		      int *fds_out, int *nfds_out);
/* Fire and forget (REPORT); only if the link is already open. */
void xway_broker_send(uint16_t type, const void *body, size_t len);
/* Open the link now if it is not (before a sandbox goes up). */
void xway_broker_prepare(void);
/* Cached "no xway listener at dst" (valid while listener_gen is unchanged). */
int  xway_broker_neg_cached(const struct xway_addr *dst);
void xway_broker_neg_add(const struct xway_addr *dst);
/* Cached "the listener at dst is in Xen domain D" (the broker's first
 * answer to an OFFER, same validity): 0, or D; the next connection to dst
 * makes its Xen offer at once, one broker round trip less. */
uint32_t xway_broker_xen_cached(const struct xway_addr *dst);
/* Cached "a listener of this broker's host or domain is at dst" (the
 * broker made a local offer to it pending; same validity): the next
 * connection to dst connects while its OFFER is read (setup.c). */
int  xway_broker_loc_cached(const struct xway_addr *dst);
void xway_broker_loc_add(const struct xway_addr *dst);
void xway_broker_xen_add(const struct xway_addr *dst, uint32_t dom);
/* Forget the parent's link in a child (lifecycle calls it on pid change). */
void xway_broker_after_fork(void);
int  xway_broker_fd(void);           /* -1 when closed */
/* A packet without reply, by write(2) on the open link (sandbox-safe). */
int  xway_broker_post(uint16_t type, const void *body, size_t len);
/* The mode of the last HELLO_OK (1 local, 2 xen), 0 before the first; a
 * fork child keeps its parent's. */
uint32_t xway_broker_mode(void);
/* Bumped at every successful HELLO (new process, broker restart): a
 * listener registered over an older link is registered again. */
uint32_t xway_broker_link_gen(void);
/* The application closed the link's fd number itself: drop it (no close). */
void xway_broker_forget(void);

/* ---- connection set-up and teardown (setup.c) ---------------------------- */

int xway_sockaddr_to_addr(const struct sockaddr *sa, socklen_t len,
			  struct xway_addr *out);
int  xway_setup_listen(int fd, int backlog);        /* listen() */
/* Listener: (re)try LISTEN_ADD; 1 registered, 0 broker down, -1 refused.
 * xway_listener_stale(): not registered by this process over the current
 * link (after fork the parent's registration dies with the parent's link;
 * after a broker restart the directory is empty). */
int  xway_listener_register(struct xway_conn *c);
int  xway_listener_stale(const struct xway_conn *c);
/* In a new process (fork child): register every listener it inherited,
 * at once, so the broker knows them even if the parent exits before the
 * child's first accept (apache's start process does). */
void xway_listeners_reregister(void);
/*
 * A listening TCP socket the shim did not see being made (systemd socket
 * activation, inherited through exec, received by SCM_RIGHTS): if fd is
 * one, and the configuration allows its address, put a listener object in
 * the table and register it (LISTEN_ADD; broker down: kept and registered
 * at a later accept, as after listen()).  Returns it with a reference
 * taken, or NULL (not a listener: remembered for this fd number; broker
 * refused; shim disabled).  errno untouched.
 */
struct xway_conn *xway_listener_adopt(int fd);
/* Around an exec (lifecycle.c; not posix_spawn): 1 before, the remembered
 * TCP_DEFER_ACCEPT of the listeners the new image inherits back on the
 * kernel (it adopts them); 0 after a failed exec, off again. */
void xway_listeners_exec(int phase);
/* Constructor (lifecycle.c, after the exec re-attach): adopt the listeners
 * the process already holds: LISTEN_FDS (when LISTEN_PID is ours) and any
 * other in /proc/self/fd (bounded). */
void xway_listeners_adopt_inherited(void);
/* stdio.c: the standard stream on fd (0-2), an accelerated connection
 * re-attached by exec, goes through the shim's read/write. */
void xway_stdio_adopt(int fd);
/* The same after dup2/dup3 of an accelerated connection onto fd 0-2
 * without an exec (sockcall.c). */
void xway_stdio_adopt_dup(int fd);
int  xway_setup_connect(int fd, const struct sockaddr *sa, socklen_t len, unsigned fresh);
/* After a real accept returned nfd on listener lc: CLAIM, attach. */
/* peer (peer_len): the address accept returned, or NULL (then asked). */
void xway_setup_accepted(struct xway_conn *lc, int nfd, int flags,
			 const struct sockaddr *peer, socklen_t peer_len);
/* Client PENDING: look at the broker's decision and act on it (claimed ->
 * ACCEL; withdrawn -> FLUSH/plain TCP).  tcp_ready: TCP data or EOF was
 * seen on the socket (the server is not on the channel: WITHDRAW).
 * Returns the new state. */
int  xway_pending_resolve(struct xway_conn *c, int tcp_ready);
/* FLUSH: push owed ring bytes onto TCP; 0 when all are out, -EAGAIN, ... */
int  xway_flush_owed(struct xway_conn *c, int nonblock);
/* Bytes still owed to TCP?  Readiness code: a FLUSH connection with owed
 * bytes must be flushed (xway_flush_owed(c, 1)) whenever its TCP socket is
 * writable, even if the app only waits to read. */
int  xway_flush_pending(struct xway_conn *c);
/* The last fd of c in this process is being closed (before the real
 * close): teardown as the kernel does when this is the last holder. */
void xway_conn_last_close(struct xway_conn *c);
/* close() of an fd of ours. */
int  xway_close_fd(int fd);
/* The same for the app's close()/close_range(): when the last slot goes
 * while other threads still use the connection, the teardown waits for the
 * last of them (fdtable.c).  Returns 1 if fd is not ours. */
int  xway_close_app_fd(int fd);
/* The last slot of c (number fd, still open) was taken: the last-holder
 * teardown now (0), or deferred while other threads use c (1). */
int  xway_conn_last_slot(struct xway_conn *c, int fd);
/* The dups and channel fds of deferred connections (the shim's own), and
 * their release in a fork child (fdtable.c). */
int  xway_deferred_own_fds(int *fds, int max);
void xway_deferred_after_fork(void);
void xway_report_fallback(const struct xway_conn *c, int side, unsigned reason,
			  const char *text);

/* ---- a client's source port before its SYN (srcport.c) ------------------ */
/* Bind fd (unbound, family AF_INET or AF_INET6) to the wildcard address and
 * a port of ip_local_port_range chosen from seed, else the kernel's
 * bind(0): 0 or -errno.  reuse_off: SO_REUSEADDR and SO_REUSEPORT are known
 * to be off (not asked).  *port (host order): the port bound, or 0 when the
 * kernel chose it. */
int xway_bind_ephemeral(int fd, int family, uint64_t seed, int reuse_off, uint16_t *port);
/* The wildcard address of family (AF_INET, else AF_INET6) with port (host
 * order) in *ss, as bind takes it and getsockname gives it: its length. */
socklen_t xway_wildcard_sockaddr(int family, uint16_t port, struct sockaddr_storage *ss);
#define XWAY_SRCPORT_RESERVED_MAX 32
struct xway_srcport_range {
	uint16_t lo, hi;
};
struct xway_srcport_cfg {
	uint16_t lo, hi;
	unsigned nres;
	struct xway_srcport_range res[XWAY_SRCPORT_RESERVED_MAX];
};
/* The texts of ip_local_port_range and ip_local_reserved_ports (pure,
 * for tests): 0, or -1 if either is not what the kernel writes. */
int xway_srcport_parse(const char *range, const char *reserved, struct xway_srcport_cfg *c);

/* ---- signals (signal.c) ------------------------------------------------- */

/* Set by the wrapper of every handler installed through sigaction(); the
 * data path clears it before a blocking wait. */
extern _Thread_local int xway_last_sig;
/* After an EINTR from a channel wait: would the kernel restart the call? */
int xway_sig_restarts(int timeo_ms);

/* ---- data path (io.c) ---------------------------------------------------- */

/* All return a count or -errno; flags are MSG_* as the app passed them. */
ssize_t xway_io_recv(struct xway_conn *c, const struct iovec *iov, int iovcnt,
		     int flags);
ssize_t xway_io_send(struct xway_conn *c, const struct iovec *iov, int iovcnt,
		     int flags);
ssize_t xway_io_sendfile(struct xway_conn *c, int in_fd, off_t *offset,
			 size_t count);
int     xway_io_shutdown(struct xway_conn *c, int how);
int     xway_io_ioctl(struct xway_conn *c, unsigned long req, void *arg);
/*
 * Readiness of an accelerated connection as kernel TCP would report it to
 * poll(): POLLIN, POLLOUT, POLLRDHUP, POLLHUP, POLLERR from the ring, the
 * EOF/RST flags and (when the ring says nothing) the TCP socket.  For the
 * readiness code (poll.c): arm with xway_chan_arm() and wait on
 * xway_chan_pollfd(c->chan) and c->fd together.  Does not block.
 */
short   xway_io_poll_mask(struct xway_conn *c, short events);
/*
 * The channel reverted to TCP (XWAY_EV_REVERT, or a data call's
 * -ECANCELED): take back what we produced and the leaver never consumed
 * (once per process, under c->lock) and push it to TCP ahead of anything
 * else; when nothing is left for us in the ring (or we are the leaver) the
 * connection becomes FLUSH for good (a pass-through to the socket that
 * stays in the fd table, so epoll turns its registration into a direct
 * one).  Returns the new state, or -ECONNRESET (logged) when it cannot.
 */
int     xway_io_revert(struct xway_conn *c);

/* ---- SCM_RIGHTS hand-over (scm.c) ---------------------------------------- */

/* The last fd of a connection this process handed over by SCM_RIGHTS is
 * being closed: settle the hand-over first (bounded wait for the receiver
 * to take it; a receiver without the shim makes us revert to TCP). */
void    xway_scm_closing(struct xway_conn *c);
/* SO_RCVLOWAT of the real socket, as the kernel keeps it (>= 1). */
int     xway_sock_rcvlowat(int fd);

#endif /* XWAY_SHIM_H */
