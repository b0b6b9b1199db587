/* SPDX-License-Identifier: MIT */
/*
 * The sd_notify(3) readiness protocol, self-contained (after systemd's
 * man/notify-selfcontained-example.c): one datagram with "READY=1" or
 * "STOPPING=1" to the AF_UNIX socket named by $NOTIFY_SOCKET, which may be a
 * path or an abstract name written with a leading '@'.  We do not link
 * libsystemd: the broker must also run where systemd is absent.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "xwayd.h"

int xwayd_notify(const char *state)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	const char *path = getenv("NOTIFY_SOCKET");
	size_t plen, slen;
	socklen_t alen;
	ssize_t n;
	int fd, r = 0;

	if (!path || !*path)
		return 0;
	/* Only absolute paths and abstract names are valid. */
	if (path[0] != '/' && path[0] != '@')
		return -EAFNOSUPPORT;
	plen = strlen(path);
	if (plen >= sizeof(sa.sun_path))
		return -E2BIG;
	memcpy(sa.sun_path, path, plen);
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = 0;
	alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen +
			   (path[0] == '/'));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	slen = strlen(state);
	n = sendto(fd, state, slen, MSG_NOSIGNAL, (struct sockaddr *)&sa, alen);
	if (n < 0)
		r = -errno;
	else if ((size_t)n != slen)
		r = -EPROTO;
	close(fd);
	return r;
}
