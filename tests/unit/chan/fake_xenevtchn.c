// SPDX-License-Identifier: MIT
/*
 * A stand-in libxenevtchn (soname libxenevtchn.so.1, never installed) for
 * xen_test's fd_ends_* tests: the event channel of an end built from
 * descriptors is one end of a SOCK_DGRAM socketpair, so a notify is a
 * datagram the other end's pending() reads.  Loaded first by absolute
 * path, it is the libxenevtchn that the real libxenvchan (its DT_NEEDED)
 * and the shim's xen.c (dlopen by soname) both bind to; libxenvchan's data
 * path then runs for real over the memfd pages the test hands in.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

struct xenevtchn_handle { int fd; };
typedef struct xenevtchn_handle xenevtchn_handle;
typedef uint32_t evtchn_port_t;
struct xentoollog_logger;

xenevtchn_handle *xenevtchn_fdopen(struct xentoollog_logger *l, int fd, unsigned flags)
{
	xenevtchn_handle *h;

	/* Stricter than the real one, which makes a stdio logger when given
	 * none (an isatty system call per end): the shim must pass its own. */
	if (!l) {
		errno = EINVAL;
		return NULL;
	}
	h = malloc(sizeof(*h));
	if (!h || flags) {
		free(h);
		return NULL;
	}
	h->fd = fd;
	return h;
}

xenevtchn_handle *xenevtchn_open(struct xentoollog_logger *l, unsigned flags)
{
	(void)l; (void)flags;
	return NULL;
}

int xenevtchn_close(xenevtchn_handle *h)
{
	if (h) {
		close(h->fd);
		free(h);
	}
	return 0;
}

int xenevtchn_fd(xenevtchn_handle *h)
{
	return h->fd;
}

int xenevtchn_notify(xenevtchn_handle *h, evtchn_port_t port)
{
	return send(h->fd, &port, sizeof(port), MSG_DONTWAIT) == sizeof(port) ? 0 : -1;
}

int xenevtchn_pending(xenevtchn_handle *h)
{
	evtchn_port_t p;

	return read(h->fd, &p, sizeof(p)) == sizeof(p) ? (int)p : -1;
}

int xenevtchn_unmask(xenevtchn_handle *h, evtchn_port_t port)
{
	(void)h; (void)port;
	return 0;
}

int xenevtchn_bind_unbound_port(xenevtchn_handle *h, uint32_t dom)
{
	(void)h; (void)dom;
	return -1;
}

int xenevtchn_bind_interdomain(xenevtchn_handle *h, uint32_t dom, evtchn_port_t p)
{
	(void)h; (void)dom; (void)p;
	return -1;
}

int xenevtchn_unbind(xenevtchn_handle *h, evtchn_port_t p)
{
	(void)h; (void)p;
	return 0;
}
