/* SPDX-License-Identifier: MIT */
/*
 * The link to xwayd: one AF_UNIX SOCK_SEQPACKET socket per process, opened
 * lazily at the first TCP set-up call (so it exists before a sandbox goes
 * up), kept at a high fd with CLOEXEC.  Requests are serialised under one
 * lock and each waits at most XWAY_BROKER_TIMEOUT_MS for its reply; any
 * failure closes the link and backs off for XWAY_BACKOFF_S seconds, during
 * which set-up calls get -EHOSTDOWN at once (the connection stays on TCP:
 * the application never hangs on the broker).  A reply with a stale seq
 * (to a request that timed out) is discarded with its descriptors; a reply
 * to an early request (xway_broker_request: sent now, its reply taken
 * later) is kept for its sender by whichever thread reads it.  A child
 * process never uses its parent's link: replies would interleave.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "errno.h"
#include "lifecycle.h"
#include "shim.h"

#define XWAY_BACKOFF_S   3
#define XWAY_NEG_CACHE   64
#define XWAY_MAX_FDS     4

static pthread_mutex_t xway_blk = PTHREAD_MUTEX_INITIALIZER;
static int      xway_bfd = -1;
static pid_t    xway_bpid;
static uint32_t xway_seq;
static struct timespec xway_retry_at;
static const struct xway_gen_page *xway_gen;
static struct xway_hello_ok xway_hello;
static _Atomic uint32_t xway_link_gen;

/* The broker's answers about destinations, valid while its listener_gen
 * equals the cache's gen: "no listener there" (the negative cache, value
 * 1) and "the listener is in Xen domain D" (value D).  Under xway_blk. */
struct xway_dst_cache {
	struct { struct xway_addr dst; uint32_t val; } e[XWAY_NEG_CACHE];
	int      n, next;
	uint64_t gen;
};
static struct xway_dst_cache xway_neg, xway_xen, xway_loc;

/*
 * Requests whose sender takes the reply later (xway_broker_request): the
 * OFFER of a connection that connects while the broker reads it.  Whichever
 * thread reads such a reply first keeps it here for its sender.  Under
 * xway_blk; seq 0 = free.
 */
#define XWAY_EARLY_MAX 8
static struct xway_early {
	uint32_t seq;
	uint32_t link;            /* xway_link_gen when sent */
	int      type;            /* the reply's type once it came, else 0 */
	size_t   len;
	unsigned char body[256];
	int      fds[XWAY_MAX_FDS], nfds;
} xway_early[XWAY_EARLY_MAX];

static long xway_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void xway_link_close(int backoff)
{
	if (xway_bfd >= 0)
		real.close(xway_bfd);
	xway_bfd = -1;
	if (backoff) {
		clock_gettime(CLOCK_MONOTONIC, &xway_retry_at);
		xway_retry_at.tv_sec += XWAY_BACKOFF_S;
	}
}

static void xway_close_fds(const int *fds, int n)
{
	for (int i = 0; i < n; i++)
		if (fds[i] >= 0)
			real.close(fds[i]);
}

/* Never 0 (a free early slot's seq). */
static uint32_t xway_next_seq(void)
{
	if (++xway_seq == 0)
		++xway_seq;
	return xway_seq;
}

static int xway_send_msg(uint16_t type, uint32_t seq, uint32_t flags,
			 const void *body, size_t len, const int *fds, int nfds)
{
	struct xway_msg_hdr h = {
		.magic = XWAY_PROTO_MAGIC, .version = XWAY_PROTO_VERSION,
		.type = type, .len = (uint32_t)(sizeof(h) + len), .seq = seq,
		.flags = flags,
	};
	struct iovec iov[2] = { { &h, sizeof(h) }, { (void *)body, len } };
	union { struct cmsghdr c; char b[CMSG_SPACE(sizeof(int) * XWAY_MAX_FDS)]; } u;
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = len ? 2 : 1 };

	if (nfds > XWAY_MAX_FDS || sizeof(h) + len > XWAY_MSG_MAX)
		return -EINVAL;
	if (nfds > 0) {
		memset(&u, 0, sizeof(u));
		m.msg_control = u.b;
		m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
	}
	long r = XWAY_SYS(real.sendmsg(xway_bfd, &m, MSG_NOSIGNAL | MSG_DONTWAIT));
	if (r < 0)
		return (int)r;
	return r == (long)(sizeof(h) + len) ? 0 : -EPROTO;
}

static struct xway_early *xway_early_slot(uint32_t seq)
{
	for (int i = 0; i < XWAY_EARLY_MAX; i++)
		if (xway_early[i].seq == seq && seq)
			return &xway_early[i];
	return NULL;
}

/* A reply's body and descriptors out to a caller: the descriptors it keeps
 * (up to *nfds_out) moved to high numbers, the rest closed. */
static void xway_reply_out(const unsigned char *body, size_t blen, void *reply,
			   size_t reply_len, const int *fds, int nfds,
			   int *fds_out, int *nfds_out)
{
	int keep = nfds_out ? *nfds_out : 0;

	memset(reply, 0, reply_len);
	memcpy(reply, body, blen < reply_len ? blen : reply_len);
	for (int i = 0; i < nfds; i++) {
		if (i < keep) {
			int hi = xway_fd_to_high(fds[i]);
			fds_out[i] = hi >= 0 ? hi : fds[i];
		} else {
			real.close(fds[i]);
		}
	}
	if (nfds_out)
		*nfds_out = nfds < keep ? nfds : keep;
}

/* Wait for the reply to seq until deadline; returns its type or -errno.
 * Descriptors of a stale reply are closed; an early request's reply is
 * kept for its sender. */
static int xway_recv_reply(uint32_t seq, int timeout_ms, void *reply,
			   size_t reply_len, int *fds_out, int *nfds_out)
{
	static _Thread_local char buf[1024];
	/* The clock is read only when a round did not bring the reply (a
	 * clock read is a system call where there is no vDSO clock: Xen PV
	 * guests); the wait may then last up to twice timeout_ms. */
	long deadline = -1;

	for (int round = 0; round < 64; round++) {
		long left = timeout_ms;

		if (round == 1)
			deadline = xway_now_ms() + timeout_ms;
		if (deadline >= 0)
			left = deadline - xway_now_ms();
		struct pollfd p = { .fd = xway_bfd, .events = POLLIN };
		union { struct cmsghdr c; char b[CMSG_SPACE(sizeof(int) * XWAY_MAX_FDS)]; } u;
		struct iovec iov = { buf, sizeof(buf) };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
				    .msg_control = u.b, .msg_controllen = sizeof(u.b) };
		int fds[XWAY_MAX_FDS], nfds = 0;
		struct xway_msg_hdr h;

		if (left <= 0)
			return -ETIMEDOUT;
		long pr = XWAY_SYS(real.poll(&p, 1, (int)left));
		if (pr == -EINTR)
			continue;
		if (pr < 0)
			return (int)pr;
		if (pr == 0)
			return -ETIMEDOUT;
		long n = XWAY_SYS(real.recvmsg(xway_bfd, &m, MSG_CMSG_CLOEXEC | MSG_DONTWAIT));
		if (n == -EAGAIN || n == -EINTR)
			continue;
		if (n <= 0)
			return n == 0 ? -ECONNRESET : (int)n;
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm)) {
			if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
				continue;
			int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			for (int i = 0; i < k; i++) {
				int fd;
				memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
				if (nfds < XWAY_MAX_FDS)
					fds[nfds++] = fd;
				else
					real.close(fd);
			}
		}
		if ((size_t)n < sizeof(h) || (m.msg_flags & MSG_TRUNC)) {
			xway_close_fds(fds, nfds);
			return -EPROTO;
		}
		memcpy(&h, buf, sizeof(h));
		if (h.magic != XWAY_PROTO_MAGIC || h.len != (uint32_t)n) {
			xway_close_fds(fds, nfds);
			return -EPROTO;
		}
		if (h.seq != seq) {
			struct xway_early *e = xway_early_slot(h.seq);

			if (e && !e->type) {  /* another thread's early request */
				e->type = h.type;
				e->len = (size_t)n - sizeof(h);
				if (e->len > sizeof(e->body))
					e->len = sizeof(e->body);
				memcpy(e->body, buf + sizeof(h), e->len);
				memcpy(e->fds, fds, sizeof(int) * (size_t)nfds);
				e->nfds = nfds;
			} else {             /* reply to a request that timed out */
				xway_close_fds(fds, nfds);
			}
			continue;
		}
		xway_reply_out((const unsigned char *)buf + sizeof(h), (size_t)n - sizeof(h),
			       reply, reply_len, fds, nfds, fds_out, nfds_out);
		return h.type;
	}
	return -EPROTO;
}

/* Under xway_blk. */
static int xway_link_open(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timespec now;
	struct xway_hello hello = { .shim_version = XWAY_SHIM_VERSION };
	int gfd[1] = { -1 }, ng = 1;
	long fd;
	int r;

	if (xway_bfd >= 0 && xway_bpid == xway_pid())
		return 0;
	if (xway_bfd >= 0)                  /* inherited: not ours to use */
		xway_link_close(0);
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (now.tv_sec < xway_retry_at.tv_sec ||
	    (now.tv_sec == xway_retry_at.tv_sec && now.tv_nsec < xway_retry_at.tv_nsec))
		return -EHOSTDOWN;
	fd = XWAY_SYS(real.socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
	if (fd < 0)
		goto out_backoff;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", xway_cfg.broker_sock);
	r = (int)XWAY_SYS(real.connect((int)fd, (struct sockaddr *)&sa, sizeof(sa)));
	if (r < 0) {
		real.close((int)fd);
		fd = r;
		goto out_backoff;
	}
	xway_bfd = xway_fd_to_high((int)fd);
	if (xway_bfd < 0)
		xway_bfd = (int)fd;
	xway_bpid = xway_pid();
	r = xway_send_msg(XWAY_MSG_HELLO, xway_next_seq(), 0, &hello, sizeof(hello), NULL, 0);
	if (r == 0)
		r = xway_recv_reply(xway_seq, xway_cfg.broker_timeout_ms,
				    &xway_hello, sizeof(xway_hello), gfd, &ng);
	if (r != XWAY_MSG_HELLO_OK) {
		if (ng > 0 && gfd[0] >= 0)
			real.close(gfd[0]);
		xway_link_close(1);
		XINFO("broker at %s: no HELLO_OK (%d); staying on TCP",
		      xway_cfg.broker_sock, r);
		return -EHOSTDOWN;
	}
	if (ng > 0 && gfd[0] >= 0) {
		void *p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, gfd[0], 0);
		real.close(gfd[0]);
		if (p != MAP_FAILED) {
			if (xway_gen)
				munmap((void *)xway_gen, 4096);
			xway_gen = p;
			/* Another broker's generations: the cached answers
			 * were the previous one's. */
			xway_neg.n = xway_neg.next = 0;
			xway_xen.n = xway_xen.next = 0;
			xway_loc.n = xway_loc.next = 0;
		}
	}
	atomic_fetch_add_explicit(&xway_link_gen, 1, memory_order_relaxed);
	XDBG("broker link open on fd %d (instance %016llx)", xway_bfd,
	     (unsigned long long)xway_hello.instance);
	return 0;
out_backoff:
	XINFO("broker at %s unreachable (%s); staying on TCP",
	      xway_cfg.broker_sock, strerror((int)-fd));
	xway_link_close(1);
	return -EHOSTDOWN;
}

/* Under xway_blk: a failed request or reply (r < 0) closes the link and
 * backs off; the caller then says -EHOSTDOWN. */
static int xway_failed(int r, const char *what, unsigned id)
{
	if (r >= 0)
		return r;
	XINFO("broker %s %u failed (%s); backing off", what, id, strerror(-r));
	xway_link_close(1);
	return -EHOSTDOWN;
}

int xway_broker_call(uint16_t type, const void *body, size_t len,
		     const int *fds, int nfds,
		     uint16_t want_type, void *reply, size_t reply_len,
		     int *fds_out, int *nfds_out)
{
	return xway_broker_call_tmo(xway_cfg.broker_timeout_ms, type, body, len,
				    fds, nfds, want_type, reply, reply_len,
				    fds_out, nfds_out);
}

int xway_broker_call_tmo(int timeout_ms, uint16_t type, const void *body,
			 size_t len, const int *fds, int nfds,
			 uint16_t want_type, void *reply, size_t reply_len,
			 int *fds_out, int *nfds_out)
{
	int r;

	(void)want_type;
	pthread_mutex_lock(&xway_blk);
	for (int attempt = 0; ; attempt++) {
		uint32_t gen = atomic_load_explicit(&xway_link_gen, memory_order_relaxed);

		r = xway_link_open();
		if (r < 0)
			goto out;
		r = xway_send_msg(type, xway_next_seq(), 0, body, len, fds, nfds);
		if (r == 0)
			r = xway_recv_reply(xway_seq, timeout_ms,
					    reply, reply_len, fds_out, nfds_out);
		/* A link that was already open found the broker gone (it
		 * restarted while we did not talk to it: a server blocked in
		 * accept): the request reached nobody, or a broker whose state
		 * died with it.  Once, at once, on a fresh link: the new
		 * instance answers (its restored listeners make this CLAIM the
		 * first accelerated connection after a restart).  A link
		 * opened by this very call gets no second try. */
		if (attempt == 0 && (r == -EPIPE || r == -ECONNRESET || r == -ENOTCONN) &&
		    gen == atomic_load_explicit(&xway_link_gen, memory_order_relaxed)) {
			XDBG("broker link lost (%s): reconnecting once", strerror(-r));
			xway_link_close(0);
			continue;
		}
		break;
	}
	r = xway_failed(r, "request", type);
out:
	if (r < 0 && nfds_out)
		*nfds_out = 0;
	pthread_mutex_unlock(&xway_blk);
	return r;
}

int xway_broker_request(uint16_t type, uint32_t flags, const void *body,
			size_t len, const int *fds, int nfds, uint32_t *seq)
{
	struct xway_early *e;
	int r;

	pthread_mutex_lock(&xway_blk);
	e = NULL;
	for (int i = 0; i < XWAY_EARLY_MAX && !e; i++)
		if (!xway_early[i].seq)
			e = &xway_early[i];
	if (!e) {
		r = -EBUSY;
		goto out;
	}
	for (int attempt = 0; ; attempt++) {
		uint32_t gen = atomic_load_explicit(&xway_link_gen, memory_order_relaxed);

		r = xway_link_open();
		if (r < 0)
			goto out;
		r = xway_send_msg(type, xway_next_seq(), flags, body, len, fds, nfds);
		/* A link that was open already but whose broker went away
		 * meanwhile: once more on a fresh link (as xway_broker_call). */
		if (attempt == 0 && (r == -EPIPE || r == -ECONNRESET || r == -ENOTCONN) &&
		    gen == atomic_load_explicit(&xway_link_gen, memory_order_relaxed)) {
			xway_link_close(0);
			continue;
		}
		break;
	}
	if ((r = xway_failed(r, "request", type)) < 0)
		goto out;
	*e = (struct xway_early){
		.seq = xway_seq,
		.link = atomic_load_explicit(&xway_link_gen, memory_order_relaxed),
	};
	*seq = xway_seq;
out:
	pthread_mutex_unlock(&xway_blk);
	return r;
}

int xway_broker_reply(uint32_t seq, int timeout_ms, void *reply, size_t reply_len,
		      int *fds_out, int *nfds_out)
{
	struct xway_early *e;
	int r;

	pthread_mutex_lock(&xway_blk);
	e = xway_early_slot(seq);
	if (!e) {
		r = -EINVAL;
		goto out;
	}
	if (e->type) {
		/* Another thread read it for us. */
		r = e->type;
		xway_reply_out(e->body, e->len, reply, reply_len, e->fds, e->nfds,
			       fds_out, nfds_out);
	} else if (xway_bfd < 0 ||
		   e->link != atomic_load_explicit(&xway_link_gen, memory_order_relaxed)) {
		/* The link it went on is gone (another request failed and
		 * closed it): that broker's answer will never come. */
		r = -ECONNRESET;
	} else {
		r = xway_recv_reply(seq, timeout_ms, reply, reply_len,
				    fds_out, nfds_out);
	}
	e->seq = 0;
	r = xway_failed(r, "reply to request", seq);
out:
	if (r < 0 && nfds_out)
		*nfds_out = 0;
	pthread_mutex_unlock(&xway_blk);
	return r;
}

void xway_broker_send(uint16_t type, const void *body, size_t len)
{
	pthread_mutex_lock(&xway_blk);
	if (xway_bfd >= 0 && xway_bpid == xway_pid())
		xway_send_msg(type, xway_next_seq(), 0, body, len, NULL, 0);
	pthread_mutex_unlock(&xway_blk);
}

void xway_broker_prepare(void)
{
	pthread_mutex_lock(&xway_blk);
	xway_link_open();
	pthread_mutex_unlock(&xway_blk);
}

static uint64_t xway_gen_now(void)
{
	/* Acquire: pairs with the broker's release store of a new generation. */
	return xway_gen ? __atomic_load_n(&xway_gen->listener_gen, __ATOMIC_ACQUIRE)
			: UINT64_MAX;
}

/* The value cached for dst, 0 if none. */
static uint32_t dst_cache_get(const struct xway_dst_cache *c, const struct xway_addr *dst)
{
	uint32_t v = 0;

	pthread_mutex_lock(&xway_blk);
	if (xway_gen && xway_gen_now() == c->gen)
		for (int i = 0; i < c->n && !v; i++)
			if (!memcmp(c->e[i].dst.ip, dst->ip, 16) && c->e[i].dst.port == dst->port)
				v = c->e[i].val;
	pthread_mutex_unlock(&xway_blk);
	return v;
}

static void dst_cache_put(struct xway_dst_cache *c, const struct xway_addr *dst, uint32_t val)
{
	pthread_mutex_lock(&xway_blk);
	if (xway_gen) {
		uint64_t g = xway_gen_now();

		if (g != c->gen)
			c->n = c->next = 0;
		c->gen = g;
		c->e[c->next].dst = *dst;
		c->e[c->next].val = val;
		c->next = (c->next + 1) % XWAY_NEG_CACHE;
		if (c->n < XWAY_NEG_CACHE)
			c->n++;
	}
	pthread_mutex_unlock(&xway_blk);
}

int xway_broker_neg_cached(const struct xway_addr *dst)
{
	return dst_cache_get(&xway_neg, dst) != 0;
}

void xway_broker_neg_add(const struct xway_addr *dst)
{
	dst_cache_put(&xway_neg, dst, 1);
}

int xway_broker_loc_cached(const struct xway_addr *dst)
{
	return dst_cache_get(&xway_loc, dst) != 0;
}

void xway_broker_loc_add(const struct xway_addr *dst)
{
	dst_cache_put(&xway_loc, dst, 1);
}

uint32_t xway_broker_xen_cached(const struct xway_addr *dst)
{
	return dst_cache_get(&xway_xen, dst);
}

void xway_broker_xen_add(const struct xway_addr *dst, uint32_t dom)
{
	dst_cache_put(&xway_xen, dst, dom);
}

void xway_broker_after_fork(void)
{
	/* The child's copy of the lock may be held by a parent thread that
	 * does not exist here; the link is the parent's. */
	pthread_mutex_init(&xway_blk, NULL);
	if (xway_bfd >= 0)
		real.close(xway_bfd);
	xway_bfd = -1;
	/* The parent's threads' early requests: their replies go to the
	 * parent; the copies of descriptors kept for them are ours. */
	for (int i = 0; i < XWAY_EARLY_MAX; i++) {
		if (xway_early[i].seq && xway_early[i].type)
			xway_close_fds(xway_early[i].fds, xway_early[i].nfds);
		xway_early[i].seq = 0;
	}
	/* The parent's registrations die with its link (and the parent may
	 * exit first): this process registers the listeners it holds. */
	xway_listeners_reregister();
}

void xway_broker_forget(void)
{
	/* The application closed our link's number (a daemon closing every
	 * fd it does not know): never use that number again. */
	pthread_mutex_lock(&xway_blk);
	xway_bfd = -1;
	pthread_mutex_unlock(&xway_blk);
}

uint32_t xway_broker_link_gen(void)
{
	return atomic_load_explicit(&xway_link_gen, memory_order_relaxed);
}

int xway_broker_fd(void)
{
	return xway_bfd;
}

/*
 * One packet without a reply, written with write(2) on the open link (a
 * sandboxed process: sendmsg may be forbidden, and no lock is taken on the
 * data path: a SEQPACKET write is one packet whatever other threads do).
 * Never opens the link; -EAGAIN when its buffer is full (the broker is
 * not reading: the caller's peer then notices at its next wait slice).
 */
int xway_broker_post(uint16_t type, const void *body, size_t len)
{
	struct {
		struct xway_msg_hdr h;
		unsigned char b[64];
	} pkt;
	int fd = __atomic_load_n(&xway_bfd, __ATOMIC_RELAXED);

	if (fd < 0)
		return -ENOTCONN;
	if (len > sizeof(pkt.b))
		return -EINVAL;
	pkt.h = (struct xway_msg_hdr){
		.magic = XWAY_PROTO_MAGIC, .version = XWAY_PROTO_VERSION,
		.type = type, .len = (uint32_t)(sizeof(pkt.h) + len),
	};
	memcpy(pkt.b, body, len);
	long r = XWAY_SYS(real.write(fd, &pkt, sizeof(pkt.h) + len));
	return r < 0 ? (int)r : 0;
}

uint32_t xway_broker_mode(void)
{
	uint32_t m;

	pthread_mutex_lock(&xway_blk);
	m = xway_hello.mode;
	pthread_mutex_unlock(&xway_blk);
	return m;
}
