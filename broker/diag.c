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
 */
#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "xwayd.h"

static int nlfd = -1;
static uint32_t nlseq;

static int diag_open(void)
{
	struct timeval tv = { .tv_usec = 200000 };

	if (nlfd >= 0)
		return 0;
	nlfd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (nlfd < 0)
		return -errno;
	setsockopt(nlfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return 0;
}

void xwayd_diag_close(void)
{
	if (nlfd >= 0)
		close(nlfd);
	nlfd = -1;
}

int xwayd_tcp_counters(const struct xway_addr *local, const struct xway_addr *peer,
		       int64_t *sent, int64_t *received)
{
	struct {
		struct nlmsghdr nlh;
		struct inet_diag_req_v2 r;
	} req;
	union {
		char buf[8192];
		struct nlmsghdr align;
	} u;
	bool v4 = local->family == AF_INET;
	int e;

	if ((e = diag_open()))
		return e;
	memset(&req, 0, sizeof(req));
	req.nlh.nlmsg_len = sizeof(req);
	req.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	req.nlh.nlmsg_flags = NLM_F_REQUEST;
	req.nlh.nlmsg_seq = ++nlseq;
	req.r.sdiag_family = v4 ? AF_INET : AF_INET6;
	req.r.sdiag_protocol = IPPROTO_TCP;
	req.r.idiag_ext = 1u << (INET_DIAG_INFO - 1);
	req.r.idiag_states = ~0u;
	req.r.id.idiag_sport = local->port;
	req.r.id.idiag_dport = peer->port;
	memcpy(req.r.id.idiag_src, v4 ? local->ip + 12 : local->ip, v4 ? 4 : 16);
	memcpy(req.r.id.idiag_dst, v4 ? peer->ip + 12 : peer->ip, v4 ? 4 : 16);
	req.r.id.idiag_cookie[0] = req.r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
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
