/* SPDX-License-Identifier: MIT */
/*
 * The privileged half of a libxenvchan, done by the broker so that
 * applications need no access to /dev/xen (docs/DESIGN.md §7).  For each
 * channel the broker opens the devices afresh, does the grant and
 * event-channel work libxenvchan's init.c would do (Xen 4.17,
 * tools/libs/vchan/init.c: same ring layout, live flags, notify bits and
 * unmap notifications), and hands the application only those descriptors;
 * once handed over it keeps no copy, so the grants and the port live exactly
 * as long as the application's mapping and descriptors (an application that
 * dies clears its live flag and notifies the peer through the kernel's unmap
 * notify).  Ends may be made before their connection (vchanpool.c, and the
 * early attach in conn.c): they are kept unseen until one is handed over.
 *
 *  - serve (client domain, vchan server end): gntalloc grants for the peer
 *    (the shared page, then the left ring's pages, then the right's), the
 *    shared page initialised as libxenvchan_server_init does, an unbound
 *    port for the peer; the descriptors are [gntalloc, evtchn].
 *  - attach (server domain, vchan client end): the peer's shared page is
 *    mapped once on a private gntdev descriptor to read and validate its
 *    orders and grant list (the peer may be hostile: every value is read
 *    once and bounded), then a fresh gntdev descriptor gets one map of the
 *    validated references for the application, and a fresh evtchn
 *    descriptor is bound to the peer's port; [gntdev, evtchn].
 * Each evtchn descriptor is then restricted to the peer domain
 * (IOCTL_EVTCHN_RESTRICT_DOMID): the application cannot bind unbound ports
 * or VIRQs with it.
 *
 * Test hook (never set in production): XWAY_TEST_XEN_FAKEDEV=1 makes
 * memfds stand in for the grant devices and eventfds for evtchn, with
 * made-up references and ports, so the unit tests (no Xen in CI) run the
 * protocol and descriptor passing; the real devices are exercised by the
 * Xen test bed (workloads 50, 65).
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xen/xen.h>
#include <xen/io/libxenvchan.h>
#include <xen/sys/evtchn.h>
#include <xen/sys/gntalloc.h>
#include <xen/sys/gntdev.h>

#include "xwayd.h"

#define VC_PAGE        4096u
#define VC_SMALL_ORDER 10u            /* ring at offset 1024 of the page */
#define VC_LARGE_ORDER 11u            /* ring at offset 2048 */
#define VC_MAX_ORDER   20u            /* libxenvchan's MAX_RING_SHIFT */
#define VC_MAX_GRANTS  (2u << (VC_MAX_ORDER - 12))

static int fake_dev(void)
{
	const char *v = secure_getenv("XWAY_TEST_XEN_FAKEDEV");

	return v && *v == '1';
}

static uint32_t ring_pages(uint32_t order)
{
	return order >= 12 ? 1u << (order - 12) : 0;
}

/* Where the grant list of a page with these orders must end: before an
 * in-page ring (libxenvchan.h: "must not extend into actual ring"). */
static size_t grants_limit(uint32_t lo, uint32_t ro)
{
	size_t lim = VC_PAGE;

	if (lo == VC_SMALL_ORDER || ro == VC_SMALL_ORDER)
		lim = 1024;
	else if (lo == VC_LARGE_ORDER || ro == VC_LARGE_ORDER)
		lim = 2048;
	return lim;
}

int xwayd_vchan_orders_ok(uint32_t lo, uint32_t ro)
{
	size_t end;

	if (lo < VC_SMALL_ORDER || lo > VC_MAX_ORDER ||
	    ro < VC_SMALL_ORDER || ro > VC_MAX_ORDER)
		return 0;
	if (lo == ro && lo < 12)              /* both in the same place */
		return 0;
	end = offsetof(struct vchan_interface, grants) +
	      sizeof(uint32_t) * (ring_pages(lo) + ring_pages(ro));
	return end <= grants_limit(lo, ro);
}

/* libxenvchan_server_init's choice of orders for read_min = write_min =
 * 1 << order (the shim asks for equal rings). */
static void server_orders(uint32_t order, uint32_t *lo, uint32_t *ro)
{
	if (order > VC_MAX_ORDER)
		order = VC_MAX_ORDER;       /* libxenvchan's limit: 1 MiB */
	if (order <= VC_SMALL_ORDER) {
		*lo = VC_SMALL_ORDER;
		*ro = VC_LARGE_ORDER;
	} else if (order <= VC_LARGE_ORDER) {
		*lo = VC_LARGE_ORDER;
		*ro = order < 12 ? 12 : order;
	} else {
		*lo = *ro = order;
	}
}

static int open_dev(const char *name)
{
	char path[64];
	int fd;

	snprintf(path, sizeof(path), "/dev/xen/%s", name);
	fd = open(path, O_RDWR | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

/* A fresh evtchn descriptor with one port: unbound for peer (remote_port
 * 0) or bound to the peer's remote_port; unmasked, then restricted to the
 * peer domain.  Returns the fd and *port, or -errno. */
static int evtchn_make(uint32_t peer, uint32_t remote_port, uint32_t *port,
		       const char **why)
{
	static uint32_t fake_port = 40;
	struct ioctl_evtchn_restrict_domid rd = { .domid = (domid_t)peer };
	uint32_t p;
	int fd, r;

	if (fake_dev()) {
		fd = eventfd(0, EFD_CLOEXEC);
		*port = fake_port++;
		return fd < 0 ? -errno : fd;
	}
	if ((fd = open_dev("evtchn")) < 0) {
		*why = "cannot open /dev/xen/evtchn";
		return fd;
	}
	if (remote_port) {
		struct ioctl_evtchn_bind_interdomain b = {
			.remote_domain = peer, .remote_port = remote_port };

		r = ioctl(fd, IOCTL_EVTCHN_BIND_INTERDOMAIN, &b);
	} else {
		struct ioctl_evtchn_bind_unbound_port b = { .remote_domain = peer };

		r = ioctl(fd, IOCTL_EVTCHN_BIND_UNBOUND_PORT, &b);
	}
	if (r < 0) {
		r = -errno;
		*why = remote_port ? "binding the peer's event channel failed"
				   : "allocating an event channel failed";
		goto out_close;
	}
	p = (uint32_t)r;
	/* libxenvchan unmasks after binding (xenevtchn_unmask writes the
	 * port number). */
	if (write(fd, &p, sizeof(p)) != sizeof(p)) {
		r = -errno;
		*why = "unmasking the event channel failed";
		goto out_close;
	}
	/* Hardening, not a requirement: the kernel refuses domid 0 and
	 * kernels before 4.8 lack the ioctl; the descriptor then stays
	 * unrestricted (it still only reaches the ports bound on it and can
	 * bind new ones, DESIGN §7.1). */
	if (ioctl(fd, IOCTL_EVTCHN_RESTRICT_DOMID, &rd) < 0) {
		static bool told;

		if (!told) {
			told = true;
			XLOG_WARN("evtchn descriptors for domain %u stay unrestricted: %s",
				  peer, g_strerror(errno));
		}
	}
	*port = p;
	return fd;
out_close:
	close(fd);
	return r;
}

static int fake_grants(uint32_t pages, uint32_t *refs, void **page0)
{
	static uint32_t fake_ref = 1000;
	int fd = memfd_create("xway-fake-gnt", MFD_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)pages * VC_PAGE) < 0)
		goto fail;
	for (uint32_t i = 0; refs && i < pages; i++)
		refs[i] = fake_ref++;
	if (page0 && (*page0 = mmap(NULL, VC_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED,
				    fd, 0)) == MAP_FAILED)
		goto fail;
	return fd;
fail:
	{
		int e = -errno;

		close(fd);
		return e;
	}
}

static int serve_once(uint32_t peer, uint32_t ring_order, int fds[2],
		      uint32_t *ring_ref, struct xway_xen_vchan *v, const char **why)
{
	struct ioctl_gntalloc_alloc_gref *a = NULL;
	struct vchan_interface *ring;
	uint32_t lo, ro, n, port = 0;
	void *page = NULL;
	int gfd = -1, efd, e;

	server_orders(ring_order, &lo, &ro);
	n = 1 + ring_pages(lo) + ring_pages(ro);
	memset(v, 0, sizeof(*v));
	/* As libxenvchan_server_init: the event channel first, its port is
	 * the shared page's unmap notification. */
	efd = evtchn_make(peer, 0, &port, why);
	if (efd < 0)
		return efd;
	a = calloc(1, sizeof(*a) + sizeof(uint32_t) * n);
	if (!a) {
		e = -ENOMEM;
		*why = "out of memory";
		goto out_evtchn;
	}
	if (fake_dev()) {
		if ((gfd = fake_grants(n, a->gref_ids, &page)) < 0) {
			e = gfd;
			*why = "fake grant device";
			goto out_evtchn;
		}
	} else {
		struct ioctl_gntalloc_unmap_notify un;

		if ((gfd = open_dev("gntalloc")) < 0) {
			e = gfd;
			*why = "cannot open /dev/xen/gntalloc";
			goto out_evtchn;
		}
		a->domid = (uint16_t)peer;
		a->flags = GNTALLOC_FLAG_WRITABLE;
		a->count = n;
		if (ioctl(gfd, IOCTL_GNTALLOC_ALLOC_GREF, a) < 0) {
			e = -errno;
			*why = "granting pages to the peer failed (gntalloc limit?)";
			goto out_gnt;
		}
		/* When the last mapping and descriptor go (the application
		 * ended): srv_live = 0 and a notification, as
		 * xengntshr_share_page_notify arranges. */
		un = (struct ioctl_gntalloc_unmap_notify){
			.index = a->index + offsetof(struct vchan_interface, srv_live),
			.action = UNMAP_NOTIFY_CLEAR_BYTE | UNMAP_NOTIFY_SEND_EVENT,
			.event_channel_port = port,
		};
		if (ioctl(gfd, IOCTL_GNTALLOC_SET_UNMAP_NOTIFY, &un) < 0) {
			e = -errno;
			*why = "setting the unmap notification failed";
			goto out_gnt;
		}
		page = mmap(NULL, VC_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, gfd,
			    (off_t)a->index);
		if (page == MAP_FAILED) {
			e = -errno;
			*why = "mapping the granted page failed";
			goto out_gnt;
		}
	}
	/* The shared page, exactly as init_gnt_srv leaves it.  Nobody maps it
	 * yet (the peer learns the reference from xenstore after this). */
	ring = page;
	memset(ring, 0, VC_PAGE);
	ring->left_order = (uint16_t)lo;
	ring->right_order = (uint16_t)ro;
	ring->cli_live = 2;
	ring->srv_live = 1;
	ring->cli_notify = VCHAN_NOTIFY_WRITE;
	for (uint32_t i = 1; i < n; i++)
		ring->grants[i - 1] = a->gref_ids[i];
	munmap(page, VC_PAGE);
	*ring_ref = a->gref_ids[0];
	v->map_offset = fake_dev() ? 0 : a->index;
	v->map_pages = n;
	v->port = port;
	v->peer_domid = peer;
	v->left_order = (uint8_t)lo;
	v->right_order = (uint8_t)ro;
	fds[0] = gfd;
	fds[1] = efd;
	free(a);
	return 0;
out_gnt:
	close(gfd);
out_evtchn:
	free(a);
	close(efd);
	return e;
}

/*
 * Ring size per direction: each channel grants its rings' pages plus the
 * shared page, from a budget of gntalloc's limit (1024 by default) and the
 * domain's grant table (64 frames = 32768 entries).  Xen rings are capped
 * at 32 KiB (17 grants a channel, as shim/chan/xen.c does on its own path);
 * when the grants run out anyway, one retry with 4 KiB rings (3 grants)
 * before the connection stays on TCP.
 */
#define VC_ORDER_CAP 15u
#define VC_ORDER_LOW 12u

int xwayd_vchan_serve(uint32_t peer, uint32_t ring_order, int fds[2],
		      uint32_t *ring_ref, struct xway_xen_vchan *v, const char **why)
{
	uint32_t order = ring_order > VC_ORDER_CAP ? VC_ORDER_CAP : ring_order;
	int e = serve_once(peer, order, fds, ring_ref, v, why);

	if (e && order > VC_ORDER_LOW) {
		XLOG_DEBUG("vchan for domain %u with %u KiB rings: %s (%s); retrying with "
			   "%u KiB rings", peer, (1u << order) >> 10, *why, g_strerror(-e),
			   (1u << VC_ORDER_LOW) >> 10);
		e = serve_once(peer, VC_ORDER_LOW, fds, ring_ref, v, why);
	}
	return e;
}

/* Read the peer's shared page once through a private mapping: orders and
 * grant list, validated.  refs[0] = ring_ref, then the grants. */
static int read_peer_page(uint32_t peer, uint32_t ring_ref, uint32_t *lo, uint32_t *ro,
			  uint32_t *refs, uint32_t *n, const char **why)
{
	struct ioctl_gntdev_map_grant_ref m = { .count = 1 };
	const volatile struct vchan_interface *ring;
	void *page;
	int fd, e = 0;

	if (fake_dev())
		return -ENOSYS;          /* the fake attach does not read pages */
	if ((fd = open_dev("gntdev")) < 0) {
		*why = "cannot open /dev/xen/gntdev";
		return fd;
	}
	m.refs[0].domid = peer;
	m.refs[0].ref = ring_ref;
	if (ioctl(fd, IOCTL_GNTDEV_MAP_GRANT_REF, &m) < 0) {
		e = -errno;
		*why = "mapping the peer's shared page failed";
		goto out;
	}
	page = mmap(NULL, VC_PAGE, PROT_READ, MAP_SHARED, fd, (off_t)m.index);
	if (page == MAP_FAILED) {
		e = -errno;
		*why = "mapping the peer's shared page failed (bad reference?)";
		goto out;
	}
	ring = page;
	/* Each value read once into a private copy: the peer may change the
	 * page under us. */
	*lo = ring->left_order;
	*ro = ring->right_order;
	if (!xwayd_vchan_orders_ok(*lo, *ro)) {
		e = -EPROTO;
		*why = "the peer's shared page has invalid ring orders";
	} else {
		*n = 1 + ring_pages(*lo) + ring_pages(*ro);
		refs[0] = ring_ref;
		for (uint32_t i = 1; i < *n; i++)
			refs[i] = ring->grants[i - 1];
	}
	munmap(page, VC_PAGE);
out:
	close(fd);               /* releases the private map */
	return e;
}

/* A fresh gntdev descriptor with one map of exactly these references;
 * its mmap offset in *index.  The descriptor the application gets reaches
 * these pages (and, see DESIGN §7.1, other grants of this peer through
 * further ioctls until it closes it, right after its mmap). */
static int map_refs(uint32_t peer, const uint32_t *refs, uint32_t n, uint64_t *index,
		    const char **why)
{
	struct ioctl_gntdev_map_grant_ref *m;
	int gfd, e;

	m = calloc(1, sizeof(*m) + sizeof(m->refs[0]) * n);
	if (!m) {
		*why = "out of memory";
		return -ENOMEM;
	}
	if ((gfd = open_dev("gntdev")) < 0) {
		*why = "cannot open /dev/xen/gntdev";
		free(m);
		return gfd;
	}
	m->count = n;
	for (uint32_t i = 0; i < n; i++) {
		m->refs[i].domid = peer;
		m->refs[i].ref = refs[i];
	}
	if (ioctl(gfd, IOCTL_GNTDEV_MAP_GRANT_REF, m) < 0) {
		e = -errno;
		*why = "mapping the peer's ring pages failed";
		close(gfd);
		free(m);
		return e;
	}
	/* No unmap notification (libxenvchan arms one on cli_live): a fork
	 * child of the application maps the same grants again (REMAP), and a
	 * holder's unmap that is not the last must not look like a close to
	 * the peer.  The shim clears cli_live when the last holder closes;
	 * a process that dies closes its dual TCP socket, whose FIN or reset
	 * the peer's shim reads as the end (it drains the vchan first). */
	*index = m->index;
	free(m);
	return gfd;
}

void xwayd_vchan_grants_free(struct xwayd_vchan_grants *g)
{
	if (!g)
		return;
	if (g->fake_fd >= 0)
		close(g->fake_fd);
	free(g);
}

int xwayd_vchan_remap(const struct xwayd_vchan_grants *g, int *gfd,
		      struct xway_xen_vchan *v, const char **why)
{
	uint64_t index = 0;
	int fd;

	memset(v, 0, sizeof(*v));
	if (g->fake_fd >= 0) {
		/* The stand-in grant device: the same memory again. */
		fd = fcntl(g->fake_fd, F_DUPFD_CLOEXEC, 0);
		if (fd < 0) {
			*why = "duplicating the fake grant descriptor failed";
			return -errno;
		}
	} else if ((fd = map_refs(g->peer, g->refs, g->n, &index, why)) < 0) {
		return fd;
	}
	v->map_offset = index;
	v->map_pages = g->n;
	v->port = g->port;
	v->peer_domid = g->peer;
	v->left_order = g->lo;
	v->right_order = g->ro;
	*gfd = fd;
	return 0;
}

int xwayd_vchan_attach(uint32_t peer, uint32_t ring_ref, uint32_t remote_port,
		       int fds[2], struct xway_xen_vchan *v,
		       struct xwayd_vchan_grants **keep, const char **why)
{
	struct xwayd_vchan_grants *g;
	uint32_t lo = 0, ro = 0, n = 0, port = 0;
	uint32_t *refs;
	int gfd = -1, efd, e;

	memset(v, 0, sizeof(*v));
	*keep = NULL;
	if (!ring_ref || !remote_port) {
		*why = "zero ring reference or port";
		return -EPROTO;
	}
	refs = calloc(1 + VC_MAX_GRANTS, sizeof(*refs));
	if (!refs) {
		*why = "out of memory";
		return -ENOMEM;
	}
	if (fake_dev()) {
		lo = ro = 12;
		n = 3;
	} else if ((e = read_peer_page(peer, ring_ref, &lo, &ro, refs, &n, why))) {
		free(refs);
		return e;
	}
	efd = evtchn_make(peer, remote_port, &port, why);
	if (efd < 0) {
		free(refs);
		return efd;
	}
	if (fake_dev()) {
		if ((gfd = fake_grants(n, NULL, NULL)) < 0) {
			e = gfd;
			*why = "fake grant device";
			goto out_evtchn;
		}
		v->map_offset = 0;
	} else {
		uint64_t index = 0;

		if ((gfd = map_refs(peer, refs, n, &index, why)) < 0) {
			e = gfd;
			goto out_evtchn;
		}
		v->map_offset = index;
	}
	/* What a REMAP needs later: the validated references, never the
	 * peer's page again. */
	g = calloc(1, sizeof(*g) + sizeof(g->refs[0]) * n);
	if (!g) {
		e = -ENOMEM;
		*why = "out of memory";
		goto out_gnt;
	}
	g->peer = peer;
	g->n = n;
	g->port = port;
	g->lo = (uint8_t)lo;
	g->ro = (uint8_t)ro;
	g->fake_fd = fake_dev() ? fcntl(gfd, F_DUPFD_CLOEXEC, 0) : -1;
	memcpy(g->refs, refs, sizeof(g->refs[0]) * n);
	*keep = g;
	v->map_pages = n;
	v->port = port;
	v->peer_domid = peer;
	v->left_order = (uint8_t)lo;
	v->right_order = (uint8_t)ro;
	fds[0] = gfd;
	fds[1] = efd;
	free(refs);
	return 0;
out_gnt:
	close(gfd);
out_evtchn:
	free(refs);
	close(efd);
	return e;
}

int xwayd_vchan_evtchn_ok(int fd)
{
	struct stat st, dev;

	if (fstat(fd, &st) != 0)
		return -errno;
	if (fake_dev())
		return S_ISREG(st.st_mode) || S_ISDIR(st.st_mode) ? -EINVAL : 0;
	if (!S_ISCHR(st.st_mode) || stat("/dev/xen/evtchn", &dev) != 0 ||
	    st.st_rdev != dev.st_rdev)
		return -EINVAL;
	return 0;
}

int xwayd_vchan_notify(int fd, uint32_t port)
{
	if (fake_dev()) {
		uint64_t one = 1;

		return write(fd, &one, sizeof(one)) == sizeof(one) ? 0 : -errno;
	}
	/* The driver notifies only a port bound on this descriptor. */
	struct ioctl_evtchn_notify n = { .port = port };

	return ioctl(fd, IOCTL_EVTCHN_NOTIFY, &n) < 0 ? -errno : 0;
}
