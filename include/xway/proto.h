/* SPDX-License-Identifier: MIT */
/*
 * The shim <-> broker protocol (and xwayctl <-> broker).  One design with
 * docs/DESIGN.md "Connection set-up".  Transport: an AF_UNIX SOCK_SEQPACKET
 * socket (default XWAY_BROKER_SOCK_DEFAULT, overridden by $XWAY_BROKER_SOCK
 * or xwayd's config), one message per packet, descriptors by SCM_RIGHTS.
 *
 * Every message starts with struct xway_msg_hdr.  All integers are host
 * byte order (both ends are on one OS); addresses are in network order as in
 * struct sockaddr.  A message whose magic, version, type or length is wrong
 * gets an XWAY_MSG_ERROR reply (or the client is dropped) - never a crash.
 * Replies carry the request's seq.
 */
#ifndef XWAY_PROTO_H
#define XWAY_PROTO_H

#include <stdint.h>
#include <netinet/in.h>

#define XWAY_BROKER_SOCK_DEFAULT "/run/xway/xwayd.sock"
#define XWAY_PROTO_MAGIC   0x50574158u  /* "XAWP" */
#define XWAY_PROTO_VERSION 1u
#define XWAY_MSG_MAX       65536u       /* no packet is larger */

enum xway_msg_type {
	/* shim -> broker */
	XWAY_MSG_HELLO        = 1,  /* body: hello; reply HELLO_OK + 1 fd (gen page) */
	XWAY_MSG_LISTEN_ADD   = 2,  /* body: listen; fds: [listening socket] */
	XWAY_MSG_LISTEN_DEL   = 3,  /* body: listen; fds: [listening socket] or none */
	XWAY_MSG_OFFER        = 4,  /* body: offer; fds: [socket, memfd, efd0, efd1] */
	XWAY_MSG_CLAIM        = 5,  /* body: claim; fds: [accepted socket]
				       (+ [end state memfd] in Xen mode) */
	XWAY_MSG_WITHDRAW     = 6,  /* body: withdraw */
	XWAY_MSG_REPORT       = 7,  /* body: report (fallbacks, closes; no reply) */
	XWAY_MSG_REMAP        = 8,  /* body: claim (the socket's names); fds: [socket];
				       reply CLAIMED (xway_claimed_xenfd) + [gntdev]:
				       a fresh map of a Xen connection's grants
				       for a fork child (server domain only) */
	XWAY_MSG_XEN_MUTE     = 9,  /* body: xen_port; fds: [evtchn]; reply RESULT:
				       the broker notifies that port for this link
				       from now on (a sandboxed holder, below) */
	XWAY_MSG_XEN_NOTIFY   = 10, /* body: xen_port; no reply */
	/* xwayctl -> broker */
	XWAY_MSG_QUERY        = 16, /* body: query; reply: TEXT parts */
	/* broker -> client */
	XWAY_MSG_HELLO_OK     = 32,
	XWAY_MSG_RESULT       = 33, /* body: result (reply to LISTEN_*, OFFER, WITHDRAW) */
	XWAY_MSG_CLAIMED      = 34, /* body: claimed; fds: [memfd, efd0, efd1] */
	XWAY_MSG_TEXT         = 35, /* body: text bytes; hdr.flags & MORE until last */
	XWAY_MSG_ERROR        = 36, /* body: result with status = -errno + text */
};

#define XWAY_HDR_F_MORE 0x1u
/* OFFER: the client connects without waiting for the answer (it knows a
 * listener of this broker at dst): its socket may be connected to dst by
 * the time the broker reads the offer, and a CLAIM that matches no offer
 * reads such clients' queued requests before it answers (DESIGN §4). */
#define XWAY_HDR_F_CONNECTING 0x2u

struct xway_msg_hdr {
	uint32_t magic;
	uint16_t version;
	uint16_t type;
	uint32_t len;      /* whole packet, header included */
	uint32_t seq;
	uint32_t flags;
	uint32_t reserved;
};

/* An IPv4 or IPv6 endpoint; IPv4 is stored v4-mapped (::ffff:a.b.c.d). */
struct xway_addr {
	uint8_t  ip[16];
	uint16_t port;     /* network order */
	uint16_t family;   /* AF_INET or AF_INET6 as the app used it */
};

struct xway_hello {
	uint32_t shim_version;
	uint32_t flags;
};

struct xway_hello_ok {
	uint32_t broker_version;
	uint32_t mode;       /* 1 local, 2 xen */
	uint64_t instance;   /* changes when the broker restarts */
};

/* The generation page (an fd the broker sends with HELLO_OK, mapped
 * read-only): bumped whenever the listener directory changes, so a shim may
 * cache "no xway listener at ip:port" until it moves. */
struct xway_gen_page {
	uint64_t listener_gen;
};

struct xway_listen {
	struct xway_addr addr;   /* as bound (may be a wildcard) */
};

/* Why a connection stayed on (or went back to) TCP. */
enum xway_reason {
	XWAY_R_NONE = 0,
	XWAY_R_DISABLED,          /* XWAY_DISABLE or config rule */
	XWAY_R_EXCLUDED,          /* address/port/uid excluded by config */
	XWAY_R_BROKER_DOWN,       /* broker unreachable */
	XWAY_R_NO_LISTENER,       /* no co-resident xway listener at dst */
	XWAY_R_NOT_CORESIDENT,    /* dst is not on this host / domain */
	XWAY_R_WITHDRAWN,         /* client withdrew: server did not claim in time */
	XWAY_R_PEER_TCP,          /* peer spoke TCP first (not shimmed) */
	XWAY_R_SETUP_BIND,        /* setup failed: binding the source port */
	XWAY_R_SETUP_CHAN,        /* setup failed: creating/attaching the channel */
	XWAY_R_SETUP_PROTO,       /* setup failed: broker protocol error */
	XWAY_R_UNSUPPORTED,       /* socket option/flag the channel cannot serve */
	XWAY_R_NO_OFFER,          /* accept: client offered nothing (not shimmed) */
	XWAY_R_LEFT,              /* left the channel for TCP after it was set up
				     (Xen: fork, exec, MSG_OOB, SCM_RIGHTS) */
	XWAY_R__MAX
};

/* The reasons' names as xwayctl prints them and its JSON carries them: one
 * table for the shim's logs and the broker's records, so they cannot drift. */
static inline const char *xway_reason_str(uint32_t reason)
{
	static const char *const names[XWAY_R__MAX] = {
		[XWAY_R_NONE]           = "",
		[XWAY_R_DISABLED]       = "disabled",
		[XWAY_R_EXCLUDED]       = "excluded",
		[XWAY_R_BROKER_DOWN]    = "broker-down",
		[XWAY_R_NO_LISTENER]    = "no-listener",
		[XWAY_R_NOT_CORESIDENT] = "not-coresident",
		[XWAY_R_WITHDRAWN]      = "withdrawn",
		[XWAY_R_PEER_TCP]       = "peer-tcp",
		[XWAY_R_SETUP_BIND]     = "setup-bind",
		[XWAY_R_SETUP_CHAN]     = "setup-chan",
		[XWAY_R_SETUP_PROTO]    = "setup-proto",
		[XWAY_R_UNSUPPORTED]    = "unsupported",
		[XWAY_R_NO_OFFER]       = "no-offer",
		[XWAY_R_LEFT]           = "left-channel",
	};

	return reason < XWAY_R__MAX && names[reason] ? names[reason] : "unknown";
}

struct xway_offer {
	struct xway_addr dst;     /* where the client connects */
	struct xway_addr src;     /* its bound source (port known, ip may be ::) */
	uint64_t cookie;          /* also in the channel header */
	uint32_t ring_order;
	uint32_t backend;         /* XWAY_BACKEND_* wanted */
};

struct xway_claim {
	struct xway_addr local;   /* getsockname of the accepted socket */
	struct xway_addr peer;    /* getpeername of the accepted socket */
};

struct xway_withdraw {
	uint64_t offer_id;
};

struct xway_result {
	int32_t  status;          /* 0 ok, 1 pending, or -errno */
	uint32_t reason;          /* enum xway_reason when not accelerated */
	uint64_t offer_id;        /* OFFER: id for WITHDRAW */
	char     text[128];       /* human-readable detail, NUL-terminated */
};

struct xway_claimed {
	uint64_t offer_id;
	uint64_t cookie;
	uint32_t ring_order;
	uint32_t backend;
	int32_t  peer_pid;
	uint32_t reserved;
};

/*
 * Xen mode (docs/XEN.md "Cross-domain connections").  An OFFER whose
 * destination is an xway listener of another Xen domain is answered with
 * RESULT status XWAY_RESULT_XEN (offer_id 0, nothing registered) and text
 * "xen <peer domid> <xenstore path>": the client shim then sends the OFFER
 * again with backend XWAY_BACKEND_XEN (same cookie, same descriptors; the
 * memfd header then only carries the decision word); the broker makes the
 * vchan server end at that path and answers status 1 with struct
 * xway_result_xen and [gntalloc, evtchn] (privilege model, below).  A
 * WITHDRAW of such an offer is answered status 1: the request went to the
 * server-side broker, which decides; the decision arrives in the header as
 * usual.  The server's CLAIMED for a Xen channel is struct
 * xway_claimed_xenfd (backend XWAY_BACKEND_XEN; peer_domid and path for
 * information) with [gntdev, evtchn]: the broker attached as the vchan
 * client end for it.
 */
#define XWAY_RESULT_XEN 2
#define XWAY_XEN_PATH_MAX 128

struct xway_claimed_xen {
	struct xway_claimed base;
	uint32_t peer_domid;
	uint32_t reserved;
	char     path[XWAY_XEN_PATH_MAX];   /* NUL-terminated */
};

/*
 * Privilege model (docs/DESIGN.md §7): applications never open /dev/xen
 * nor write xenstore.  The broker makes each end of a vchan with fresh
 * per-channel opens and hands the application only those descriptors:
 *  - client domain (vchan server end): the answer to the Xen OFFER (status 1)
 *    is struct xway_result_xen with fds [gntalloc, evtchn];
 *  - server domain (vchan client end): CLAIMED is struct xway_claimed_xenfd
 *    with fds [gntdev, evtchn].
 * The application maps map_pages pages of the grant descriptor at
 * map_offset (the shared page first, then the left ring's pages, then the
 * right ring's, as libxenvchan lays them out; rings of order 10/11 live
 * inside the shared page) and fills a struct libxenvchan by hand.  The
 * orders are the broker's validated copies: never re-read from the page.
 */
struct xway_xen_vchan {
	uint64_t map_offset;       /* mmap offset in the grant descriptor */
	uint32_t map_pages;        /* 1 + pages of the rings of order >= 12 */
	uint32_t port;             /* local event-channel port (bound on the fd) */
	uint32_t peer_domid;
	uint8_t  left_order;       /* client writes, server reads */
	uint8_t  right_order;      /* server writes, client reads */
	uint16_t reserved;
};

/*
 * The server end's state (a memfd of XWAY_EP_SIZE bytes, sealed against
 * shrinking) may come as a second descriptor with a CLAIM in Xen mode: if
 * the connection goes on a Xen channel, the broker maps it read-only and
 * reads the end's byte counters there (native-endian uint64 at these
 * offsets, the shim's struct xw_ep), so the record shows the bytes even
 * when the last holder never reports its close (sshd's processes end with
 * _exit).  Display only: the application can write that memory.
 */
#define XWAY_EP_SIZE         4096u
#define XWAY_EP_TX_BYTES_OFF 32u
#define XWAY_EP_RX_BYTES_OFF 40u

struct xway_result_xen {
	struct xway_result base;
	struct xway_xen_vchan v;
};

struct xway_claimed_xenfd {
	struct xway_claimed_xen base;
	struct xway_xen_vchan v;
};

/*
 * A process about to install a seccomp filter cannot notify its Xen
 * channels any more (IOCTL_EVTCHN_NOTIFY is an ioctl; OpenSSH's preauth
 * sandbox kills a process that makes one).  Before the filter it hands
 * its broker the event channel's descriptor (XEN_MUTE); from then on it
 * asks for each notification with XEN_NOTIFY, written with write(2) on its
 * link, which sandboxes allow.  The broker notifies only ports registered
 * by the same link, through the registered descriptor (the kernel checks
 * the port is bound on it), and forgets them when the link goes.
 */
struct xway_xen_port {
	uint32_t port;
	uint32_t reserved;
};

enum xway_report_kind {
	XWAY_REP_FALLBACK = 1,    /* a connection stays/went TCP: reason */
	XWAY_REP_CLOSED   = 2,    /* an accelerated endpoint closed */
};

/* Sent by an endpoint when its connection falls back, and when it closes an
 * accelerated connection: the final channel counters, and the kernel's own
 * TCP payload counters for the dual-channel socket (TCP_INFO
 * tcpi_bytes_acked / tcpi_bytes_received), which prove that the payload did
 * not travel on TCP.  -1 where unknown. */
struct xway_report {
	uint32_t kind;
	uint32_t reason;
	int32_t  side;            /* 0 client, 1 server */
	uint32_t reserved;
	struct xway_addr local;
	struct xway_addr peer;
	uint64_t cookie;          /* 0 for a connection that never had a channel */
	int64_t  chan_tx_bytes;
	int64_t  chan_rx_bytes;
	int64_t  tcp_bytes_sent;
	int64_t  tcp_bytes_received;
	char     text[128];
};

enum xway_query_what {
	XWAY_Q_STATUS = 1, XWAY_Q_PEERS, XWAY_Q_LISTENERS,
	XWAY_Q_CONNECTIONS, XWAY_Q_STATS,
};

struct xway_query {
	uint32_t what;
	uint32_t json;            /* 1: JSON text, 0: human table */
};

#endif /* XWAY_PROTO_H */
