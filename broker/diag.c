/* SPDX-License-Identifier: MIT */
/*
 * Live kernel TCP counters of an accelerated connection's two sockets, for
 * `xwayctl connections` while no REPORT CLOSED has come yet: one
 * NETLINK_SOCK_DIAG exact lookup per socket (by its 4-tuple) asking for
 * INET_DIAG_INFO, i.e. struct tcp_info's tcpi_bytes_acked and
 * tcpi_bytes_received, the same numbers the shim reports at close.  Only
 * sockets in the broker's own network namespace can be looked up; others
 * stay unknown (null).  Answers come from the kernel, bounded by a 200 ms
 * receive timeout.
 *
 * Also the connections to a vanished Xen domain: xwayd_tcp_destroy aborts
 * one socket by its 4-tuple (the server side), and for the client side
 * (xwayd_tcp_abort_to) the
 * client's broker knows the peer's address and the client's pid, not the
 * client's port (the OFFER comes before the SYN), so it dumps the TCP
 * sockets to that peer and aborts those the client process holds.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "xwayd.h"

static int nlfd = -1;
static uint32_t nlseq;


/* One inet_diag request: type SOCK_DIAG_BY_FAMILY or SOCK_DESTROY, for
 * the socket local->peer (exact lookup or destroy), or with local NULL
 * every socket of peer's family (a dump: flags NLM_F_DUMP). */
struct diag_req {
	struct nlmsghdr nlh;
	struct inet_diag_req_v2 r;
};

static void diag_req_init(struct diag_req *req, uint16_t type, uint16_t flags, uint32_t seq,
			  const struct xway_addr *local, const struct xway_addr *peer)
{
	bool v4 = xway_addr_is_v4(peer);

	memset(req, 0, sizeof(*req));
	req->nlh.nlmsg_len = sizeof(*req);
	req->nlh.nlmsg_type = type;
	req->nlh.nlmsg_flags = NLM_F_REQUEST | flags;
	req->nlh.nlmsg_seq = seq;
	req->r.sdiag_family = v4 ? AF_INET : AF_INET6;
	req->r.sdiag_protocol = IPPROTO_TCP;
	req->r.idiag_states = ~0u;
	if (!local)
		return;
	req->r.id.idiag_sport = local->port;
	req->r.id.idiag_dport = peer->port;
	memcpy(req->r.id.idiag_src, v4 ? local->ip + 12 : local->ip, v4 ? 4 : 16);
	memcpy(req->r.id.idiag_dst, v4 ? peer->ip + 12 : peer->ip, v4 ? 4 : 16);
	req->r.id.idiag_cookie[0] = req->r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
}

/* A fresh NETLINK_SOCK_DIAG socket with the 200 ms receive bound. */
static int diag_socket(void)
{
	struct timeval tv = { .tv_usec = 200000 };
	int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);

	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

void xwayd_diag_close(void)
{
	if (nlfd >= 0)
		close(nlfd);
	nlfd = -1;
}

/* The socket local->peer: its TCP state (TCP_ESTABLISHED...; a TIME_WAIT
 * one has no tcp_info) and, when sent is given, its counters. */
static int tcp_lookup(const struct xway_addr *local, const struct xway_addr *peer,
		      int *state, int64_t *sent, int64_t *received)
{
	struct diag_req req;
	union {
		char buf[8192];
		struct nlmsghdr align;
	} u;

	if (nlfd < 0 && (nlfd = diag_socket()) < 0) {
		int e = nlfd;

		nlfd = -1;
		return e;
	}
	diag_req_init(&req, SOCK_DIAG_BY_FAMILY, 0, ++nlseq, local, peer);
	req.r.idiag_ext = 1u << (INET_DIAG_INFO - 1);
	if (send(nlfd, &req, sizeof(req), 0) < 0)
		return -errno;
	/* Skip stale answers (a timed-out earlier request), boundedly. */
	for (int tries = 0; tries < 8; tries++) {
		ssize_t n = recv(nlfd, u.buf, sizeof(u.buf), 0);
		struct nlmsghdr *h;

		if (n < 0)
			return -errno;
		for (h = &u.align; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
			struct inet_diag_msg *m;
			struct rtattr *a;
			int alen;

			if (h->nlmsg_seq != nlseq)
				continue;
			if (h->nlmsg_type == NLMSG_ERROR) {
				struct nlmsgerr *err = NLMSG_DATA(h);

				return err->error ? err->error : -ENOENT;
			}
			if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
			    h->nlmsg_len < NLMSG_LENGTH(sizeof(*m)))
				return -EPROTO;
			m = NLMSG_DATA(h);
			if (state)
				*state = m->idiag_state;
			if (!sent)
				return 0;
			a = (struct rtattr *)(m + 1);
			alen = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof(*m)));
			for (; RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
				struct tcp_info ti;
				size_t l = RTA_PAYLOAD(a);

				if (a->rta_type != INET_DIAG_INFO)
					continue;
				if (l < offsetof(struct tcp_info, tcpi_bytes_received) +
					sizeof(ti.tcpi_bytes_received))
					return -ENODATA;
				memset(&ti, 0, sizeof(ti));
				memcpy(&ti, RTA_DATA(a), MIN(l, sizeof(ti)));
				*sent = (int64_t)ti.tcpi_bytes_acked;
				*received = (int64_t)ti.tcpi_bytes_received;
				return 0;
			}
			return -ENODATA;
		}
	}
	return -ETIMEDOUT;
}

int xwayd_tcp_counters(const struct xway_addr *local, const struct xway_addr *peer,
		       int64_t *sent, int64_t *received)
{
	return tcp_lookup(local, peer, NULL, sent, received);
}

int xwayd_tcp_state(const struct xway_addr *local, const struct xway_addr *peer)
{
	int state = 0, e = tcp_lookup(local, peer, &state, NULL, NULL);

	return e ? e : state;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* The socket inodes process pid holds, sorted (for bsearch); NULL if none
 * or the process is gone.  Bounded by max. */
static uint64_t *pid_socket_inodes(pid_t pid, size_t max, size_t *n)
{
	char dir[32], lnk[64], tgt[64];
	uint64_t *v = NULL;
	struct dirent *de;
	size_t cap = 0;
	DIR *d;

	*n = 0;
	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	if (!(d = opendir(dir)))
		return NULL;
	while ((de = readdir(d)) && *n < max) {
		ssize_t l;
		uint64_t ino;

		if (de->d_name[0] == '.')
			continue;
		snprintf(lnk, sizeof(lnk), "%s/%.16s", dir, de->d_name);
		l = readlink(lnk, tgt, sizeof(tgt) - 1);
		if (l <= 0)
			continue;
		tgt[l] = 0;
		if (sscanf(tgt, "socket:[%" SCNu64 "]", &ino) != 1)
			continue;
		if (*n == cap) {
			cap = cap ? cap * 2 : 64;
			v = g_renew(uint64_t, v, cap);
		}
		v[(*n)++] = ino;
	}
	closedir(d);
	if (v)
		qsort(v, *n, sizeof(*v), cmp_u64);
	return v;
}

/*
 * A dump of the TCP sockets of one family (AF_INET/AF_INET6) in the given
 * states (a TCP_* bit mask) in the broker's namespace: fn is called for each
 * socket.  0, or -errno if the dump itself failed.  Bounded: a dump is a few
 * messages; it stops at NLMSG_DONE, an error, a timeout or 4096 reads.
 */
static int diag_dump(int family, uint32_t states,
		     void (*fn)(const struct inet_diag_msg *m, void *arg), void *arg)
{
	struct diag_req req;
	struct xway_addr any = { .family = (uint16_t)family };
	union {
		char buf[16384];
		struct nlmsghdr align;
	} u;
	bool done = false;
	int fd, e = 0;

	if (family == AF_INET)
		any.ip[10] = any.ip[11] = 0xff;     /* v4 mapped: the family */
	if ((fd = diag_socket()) < 0)
		return fd;
	diag_req_init(&req, SOCK_DIAG_BY_FAMILY, NLM_F_DUMP, 1, NULL, &any);
	req.r.idiag_states = states;
	if (send(fd, &req, sizeof(req), 0) < 0) {
		e = -errno;
		goto out;
	}
	for (int reads = 0; !done && reads < 4096; reads++) {
		ssize_t n = recv(fd, u.buf, sizeof(u.buf), 0);
		struct nlmsghdr *h;

		if (n < 0) {
			e = -errno;
			break;
		}
		for (h = &u.align; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_type == NLMSG_DONE) {
				done = true;
				break;
			}
			if (h->nlmsg_type == NLMSG_ERROR) {
				e = ((struct nlmsgerr *)NLMSG_DATA(h))->error;
				done = true;
				break;
			}
			if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
			    h->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg)))
				continue;
			fn(NLMSG_DATA(h), arg);
		}
	}
	if (!done && !e)
		e = -ETIMEDOUT;
out:
	close(fd);
	return e;
}

/* A socket's own address (idiag_src/sport) as a struct xway_addr. */
static void diag_local(const struct inet_diag_msg *m, struct xway_addr *a)
{
	memset(a, 0, sizeof(*a));
	a->family = m->idiag_family;
	a->port = m->id.idiag_sport;
	if (m->idiag_family == AF_INET) {
		a->ip[10] = a->ip[11] = 0xff;
		memcpy(a->ip + 12, m->id.idiag_src, 4);
	} else {
		memcpy(a->ip, m->id.idiag_src, 16);
	}
}

struct abort_scan {
	const struct xway_addr *peer;
	const uint64_t *inodes;
	size_t ninodes, nhits;
	struct xway_addr hits[64];
};

static void abort_scan_one(const struct inet_diag_msg *m, void *arg)
{
	struct abort_scan *a = arg;
	bool v4 = xway_addr_is_v4(a->peer);
	uint64_t ino = m->idiag_inode;

	if (m->id.idiag_dport != a->peer->port ||
	    memcmp(m->id.idiag_dst, v4 ? a->peer->ip + 12 : a->peer->ip, v4 ? 4 : 16) ||
	    !bsearch(&ino, a->inodes, a->ninodes, sizeof(ino), cmp_u64) ||
	    a->nhits == G_N_ELEMENTS(a->hits))
		return;
	/* Aborted after the dump: a SOCK_DESTROY on this socket now would
	 * interleave with the dump. */
	diag_local(m, &a->hits[a->nhits]);
	a->hits[a->nhits++].family = a->peer->family;
}

/*
 * Abort (SOCK_DESTROY, as `ss -K`) every TCP socket of this namespace whose
 * peer is *peer and that process pid holds: the client side of connections
 * to a Xen domain that vanished, whose FIN or RST will never come.  Returns
 * how many were aborted, or -errno if the dump itself failed.  Only sockets
 * of that one process are touched, so another application's plain TCP
 * connection to the same address keeps its kernel timeouts.
 */
int xwayd_tcp_abort_to(const struct xway_addr *peer, pid_t pid)
{
	struct abort_scan *a = g_new0(struct abort_scan, 1);
	int e, aborted = 0;

	a->peer = peer;
	a->inodes = pid_socket_inodes(pid, 65536, &a->ninodes);
	if (!a->inodes) {
		g_free(a);
		return 0;
	}
	/* Every state but LISTEN: a listener has no peer. */
	e = diag_dump(xway_addr_is_v4(peer) ? AF_INET : AF_INET6,
		      ~0u & ~(1u << 10) /* 10: TCP_LISTEN */, abort_scan_one, a);
	g_free((void *)a->inodes);
	for (size_t i = 0; i < a->nhits; i++) {
		int r = xwayd_tcp_destroy(&a->hits[i], peer);

		if (r == 0)
			aborted++;
		else
			XLOG_WARN("aborting the TCP socket to a vanished peer: %s",
				     g_strerror(-r));
	}
	g_free(a);
	return e && !aborted ? e : aborted;
}

static void listening_one(const struct inet_diag_msg *m, void *arg)
{
	struct xwayd_tcp_listening l;

	l.inode = m->idiag_inode;
	diag_local(m, &l.addr);
	g_array_append_val((GArray *)arg, l);
}

GArray *xwayd_tcp_listening(int *err)
{
	GArray *out = g_array_new(FALSE, FALSE, sizeof(struct xwayd_tcp_listening));
	int e4 = diag_dump(AF_INET, 1u << 10 /* TCP_LISTEN */, listening_one, out);
	int e6 = diag_dump(AF_INET6, 1u << 10, listening_one, out);

	*err = e4 ? e4 : e6;
	if (*err) {
		g_array_free(out, TRUE);
		return NULL;
	}
	return out;
}

/*
 * Abort the TCP socket local->peer (SOCK_DESTROY, as `ss -K`; needs
 * CAP_NET_ADMIN and a kernel with INET_DIAG_DESTROY): a connection to a
 * vanished Xen domain, whose peer will never send FIN or RST; the shim
 * learns from that socket that its peer is gone (the vchan's other end
 * stays mapped and silent).  0 or -errno.
 */
int xwayd_tcp_destroy(const struct xway_addr *local, const struct xway_addr *peer)
{
	struct diag_req req;
	union {
		char buf[1024];
		struct nlmsghdr align;
	} u;
	int fd, e = -ETIMEDOUT;

	if ((fd = diag_socket()) < 0)
		return fd;
	diag_req_init(&req, SOCK_DESTROY, NLM_F_ACK, 1, local, peer);
	if (send(fd, &req, sizeof(req), 0) < 0) {
		e = -errno;
		goto out;
	}
	for (int tries = 0; tries < 4; tries++) {
		ssize_t n = recv(fd, u.buf, sizeof(u.buf), 0);
		struct nlmsghdr *h;

		if (n < 0) {
			e = -errno;
			break;
		}
		for (h = &u.align; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n))
			if (h->nlmsg_type == NLMSG_ERROR) {
				e = ((struct nlmsgerr *)NLMSG_DATA(h))->error;
				goto out;
			}
	}
out:
	close(fd);
	return e;
}
