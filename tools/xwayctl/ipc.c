/* SPDX-License-Identifier: MIT */
/*
 * xwayctl's side of the broker protocol: one SOCK_SEQPACKET connection, one
 * QUERY, then TEXT packets until one without XWAY_HDR_F_MORE.  libc only.
 * Every wait is bounded (a broker that stops answering makes xwayctl fail
 * with a protocol error after 10 s, never hang).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <xway/proto.h>

#include "xwayctl.h"

static int unreachable(const char *sock, int err)
{
	fprintf(stderr, "%s: cannot reach the xway broker at %s: %s\n"
		"  Start it with 'systemctl start xwayd' (or run 'xwayd --foreground'),\n"
		"  or point to another socket with --socket PATH or $XWAY_BROKER_SOCK.\n",
		prog, sock, strerror(err));
	return XWAYCTL_UNREACHABLE;
}

int xwayctl_query(const char *sock, uint32_t what, bool json)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = 10 };
	struct {
		struct xway_msg_hdr h;
		struct xway_query q;
	} req = {
		.h = { .magic = XWAY_PROTO_MAGIC, .version = XWAY_PROTO_VERSION,
		       .type = XWAY_MSG_QUERY, .len = sizeof(req), .seq = 1 },
		.q = { .what = what, .json = json },
	};
	char *buf;
	int fd, rc = XWAYCTL_PROTO;

	if (strlen(sock) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "%s: socket path too long: %s\n", prog, sock);
		return XWAYCTL_USAGE;
	}
	strcpy(sa.sun_path, sock);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return unreachable(sock, errno);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;

		close(fd);
		return unreachable(sock, e);
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (send(fd, &req, sizeof(req), MSG_NOSIGNAL) != sizeof(req)) {
		int e = errno;

		close(fd);
		return unreachable(sock, e);
	}
	buf = malloc(XWAY_MSG_MAX + 1);
	if (!buf) {
		close(fd);
		return XWAYCTL_PROTO;
	}
	/* A reply is at most a few thousand packets (4096 records); bound
	 * the loop anyway. */
	for (int i = 0; i < 100000; i++) {
		struct xway_msg_hdr h;
		ssize_t n = recv(fd, buf, XWAY_MSG_MAX + 1, 0);

		if (n < 0) {
			fprintf(stderr, "%s: no answer from the broker: %s\n", prog,
				errno == EAGAIN ? "timed out" : strerror(errno));
			break;
		}
		if (n == 0) {
			fprintf(stderr, "%s: the broker closed the connection mid-reply\n", prog);
			break;
		}
		if ((size_t)n < sizeof(h)) {
			fprintf(stderr, "%s: short packet from the broker\n", prog);
			break;
		}
		memcpy(&h, buf, sizeof(h));
		if (h.magic != XWAY_PROTO_MAGIC || h.len != (size_t)n || h.seq != 1) {
			fprintf(stderr, "%s: malformed reply from the broker\n", prog);
			break;
		}
		if (h.type == XWAY_MSG_ERROR &&
		    (size_t)n >= sizeof(h) + sizeof(struct xway_result)) {
			struct xway_result res;

			memcpy(&res, buf + sizeof(h), sizeof(res));
			res.text[sizeof(res.text) - 1] = 0;
			fprintf(stderr, "%s: broker refused the query: %s (%s)\n", prog,
				res.text, strerror(-res.status));
			break;
		}
		if (h.type != XWAY_MSG_TEXT) {
			fprintf(stderr, "%s: unexpected reply type %u from the broker\n",
				prog, h.type);
			break;
		}
		fwrite(buf + sizeof(h), 1, (size_t)n - sizeof(h), stdout);
		if (!(h.flags & XWAY_HDR_F_MORE)) {
			rc = fflush(stdout) == 0 ? XWAYCTL_OK : XWAYCTL_PROTO;
			break;
		}
	}
	free(buf);
	close(fd);
	return rc;
}
