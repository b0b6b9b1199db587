/* SPDX-License-Identifier: MIT */
/*
 * The process lifecycle of accelerated connections: fork (atfork handlers,
 * and a MADV_WIPEONFORK page for children made without them: raw clone(),
 * _Fork), vfork (run as fork), execve/execveat/fexecve (hand-over of the
 * connections whose fd survives the exec, re-attached by the constructor
 * of the new image), close_range/closefrom and close() of the shim's own
 * descriptors, _exit and exit (the last holder's kernel-like teardown), and
 * the calls that announce a sandbox, chroot or a uid change (the broker
 * link is opened before them).  See shim/README.md, "Readiness and
 * process lifecycle".
 */
#include <dirent.h>
#include <spawn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <linux/sched.h>
#include <stdarg.h>
#include <stddef.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include "errno.h"
#include "lifecycle.h"

XWAY_EXPORT pid_t vfork(void);
XWAY_EXPORT pid_t fork(void);
XWAY_EXPORT int execve(const char *path, char *const argv[], char *const envp[]);
XWAY_EXPORT int execveat(int dirfd, const char *path, char *const argv[],
			 char *const envp[], int flags);
XWAY_EXPORT int fexecve(int fd, char *const argv[], char *const envp[]);
XWAY_EXPORT int execv(const char *path, char *const argv[]);
XWAY_EXPORT int execvp(const char *file, char *const argv[]);
XWAY_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[]);
XWAY_EXPORT int execl(const char *path, const char *arg0, ...);
XWAY_EXPORT int execlp(const char *file, const char *arg0, ...);
XWAY_EXPORT int execle(const char *path, const char *arg0, ...);
XWAY_EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
			    const posix_spawnattr_t *at, char *const argv[], char *const envp[]);
XWAY_EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
			     const posix_spawnattr_t *at, char *const argv[], char *const envp[]);
extern char **environ;
XWAY_EXPORT int close_range(unsigned int lo, unsigned int hi, int flags);
XWAY_EXPORT void closefrom(int lo);
XWAY_EXPORT void _exit(int status) __attribute__((noreturn));
XWAY_EXPORT int prctl(int option, ...);
XWAY_EXPORT int chroot(const char *path);
XWAY_EXPORT long syscall(long number, ...);
XWAY_EXPORT int clone(int (*fn)(void *), void *stack, int flags, void *arg, ...);

#define XWAY_EXEC_ENV    "XWAY_EXEC_STATE"
#define XWAY_EXEC_VER    "2"
#define XWAY_MAX_OWN     65536
#define XWAY_MAX_EXEC_FD 16      /* fd numbers of one connection handed over */

volatile unsigned char *xway_lc_page;
int xway_lc_own_floor = INT_MAX;      /* no own fds until set up */
static pid_t xway_lc_pid;
/* A seccomp filter may be up (PR_SET_SECCOMP or the seccomp system call
 * seen): calls beyond read/write/poll class may kill us, so exit does no
 * teardown and close sends no report (the kernel's FIN/RST at exit is what
 * the peer sees).  No-new-privs alone restricts no call: it only makes us
 * open the broker link early. */
int xway_lc_sandboxed;
static _Thread_local int xway_fork_counted;

/* ---- holders: one count per process holding a connection ------------- */

/* One visit per connection: only at its first fd number (c->fd). */
static void xway_hold_one(int fd, struct xway_conn *c, void *arg)
{
	int delta = *(int *)arg;

	if (fd != c->fd || !c->shared)
		return;
	atomic_fetch_add_explicit(&c->shared->holders, delta, memory_order_acq_rel);
}

static void xway_holders_add(int delta)
{
	xway_fd_foreach(xway_hold_one, &delta);
}

/* ---- Xen connections leave the channel at fork and exec --------------- */

/*
 * A Xen channel is one process's mapping: an exec drops it, and an
 * SCM_RIGHTS receiver has none.  So before an exec that keeps the socket
 * the process leaves the channel for TCP (xway_chan_revert: the peer reads
 * what we wrote, re-sends on TCP what we did not read, and both go on on
 * plain TCP; no byte lost): sshd's re-exec and inetd's telnetd work across
 * domains, on TCP for those connections.  A fork is followed (below): the
 * child shares the channel.  Before either, a forking server's child
 * crashed at its first read and an exec'd image lost the peer's bytes
 * (test bed 61, apps 80 and 82).
 */
struct xway_xen_acc { struct xway_conn **c; int n, cap; };

static void xway_xen_collect(int fd, struct xway_conn *c, void *arg)
{
	struct xway_xen_acc *a = arg;

	if (fd != c->fd || !c->chan || c->reverted ||
	    xway_chan_backend(c->chan) != XWAY_BACKEND_XEN ||
	    atomic_load_explicit(&c->state, memory_order_acquire) != XWAY_ST_ACCEL)
		return;
	if (a->n == a->cap) {
		int cap = a->cap ? a->cap * 2 : 16;
		struct xway_conn **m = realloc(a->c, (size_t)cap * sizeof(*m));

		if (!m)
			return;
		a->c = m;
		a->cap = cap;
	}
	xway_conn_hold(c);
	a->c[a->n++] = c;
}

/*
 * Move one connection (held by the caller, outside the fd table's lock) to
 * plain TCP for a new process the channel cannot follow: `what` says why,
 * for the log.  Returns 0 once reverted.
 */
static int xway_lc_leave(struct xway_conn *c, const char *what)
{
	int r = xway_chan_revert(c->chan);

	if (r < 0) {
		XWARN("fd %d: %s: cannot leave the channel for TCP (%s): the new "
		      "process cannot use this connection", c->fd, what,
		      r == -EBUSY ? "peeked bytes not yet read" : strerror(-r));
		return r;
	}
	XINFO("fd %d: %s: the connection continues on plain TCP", c->fd, what);
	xway_io_revert(c);
	return 0;
}

void xway_lc_xen_leave(struct xway_conn *c, const char *why)
{
	char what[320];

	snprintf(what, sizeof(what), "%s: a Xen channel cannot follow it", why);
	xway_lc_leave(c, what);
}

void xway_lc_xen_leave_err(struct xway_conn *c, const char *event, const char *why, int err)
{
	char m[240];

	snprintf(m, sizeof(m), "%s (%s)", event, why && why[0] ? why
		 : err == -EBUSY ? "peeked bytes not yet read" : strerror(-err));
	xway_lc_xen_leave(c, m);
}

/* The exec'ed image will not load the shim: the connection goes to plain
 * TCP first (as for Xen), the one way it can use it, and its record says
 * so (xwayctl: tcp, left-channel, why). */
static void xway_lc_unshimmed_leave(struct xway_conn *c, const char *because)
{
	char what[160];

	snprintf(what, sizeof(what), "exec of an image without libxway.so: %s", because);
	if (xway_lc_leave(c, what) == 0 && !xway_lc_sandboxed) {
		xway_broker_prepare();     /* a fork child may have no link yet */
		xway_report_fallback(c, c->side, XWAY_R_LEFT, what);
	}
}

/*
 * Before a seccomp filter goes in: a Xen channel needs an ioctl on the
 * event channel for every notification, which a filter may forbid or
 * punish (OpenSSH's preauth sandbox kills the process at the first one);
 * local rings only need read/write on eventfds and futexes.  So each Xen
 * connection hands its broker the event channel (XEN_MUTE) and from then
 * on asks it for every notification with a write(2) on the link
 * (XEN_NOTIFY); one that cannot (no link, refused) leaves for TCP.
 */
static void xway_xen_mute_notify(void *arg)
{
	struct xway_xen_port p = { .port = (uint32_t)(uintptr_t)arg };

	xway_broker_post(XWAY_MSG_XEN_NOTIFY, &p, sizeof(p));
}

static void xway_xen_sandbox(void)
{
	struct xway_xen_acc a = { 0 };

	xway_fd_foreach(xway_xen_collect, &a);
	for (int i = 0; i < a.n; i++) {
		struct xway_conn *c = a.c[i];
		struct xway_xen_port p = { 0 };
		struct xway_result res;
		int efd = -1;
		long r = xway_chan_xen_event(c->chan, &efd, &p.port);

		memset(&res, 0, sizeof(res));
		if (r == 0)
			r = xway_broker_call(XWAY_MSG_XEN_MUTE, &p, sizeof(p), &efd, 1,
					     XWAY_MSG_RESULT, &res, sizeof(res), NULL, NULL);
		if (r == XWAY_MSG_RESULT && res.status == 0) {
			xway_chan_xen_mute(c->chan, xway_xen_mute_notify,
					   (void *)(uintptr_t)p.port);
			XDBG("fd %d: sandboxed: the broker notifies event port %u for us",
			     c->fd, p.port);
		} else {
			char m[200];

			res.text[sizeof(res.text) - 1] = 0;
			snprintf(m, sizeof(m), "seccomp filter (the broker cannot notify for "
				 "us: %s)", r < 0 ? "broker unreachable" : res.text);
			xway_lc_xen_leave(c, m);
		}
		xway_conn_put(c);
	}
	free(a.c);
}

/* ---- Xen connections follow a fork (docs/DESIGN.md §7.2) -------------- */

/*
 * A fork child shares the Xen channel as it does a local ring: what it
 * lacks is the client end's mapping (gntdev's is not copied in a PV
 * domain), so before the fork our broker maps the same grants once more
 * (REMAP, proven by the socket) and the child maps that.  An end that
 * cannot follow (peeked bytes in the private stash, the broker refuses or
 * is down) leaves for TCP as before.  Forking servers (vsftpd, proftpd,
 * smbd, sshd's listener) keep their connections on the channel.
 */
static struct xway_xen_acc xway_xf;     /* from prepare to child/parent */

int xway_xen_remap(struct xway_conn *c, int *gfd, struct xway_xen_vchan *v,
		   char *why, size_t why_len)
{
	struct xway_claim body = { .local = c->local, .peer = c->peer };
	union { struct xway_claimed_xenfd xen; struct xway_result res; } rep;
	int fds[2] = { -1, -1 }, nf = 2;
	long r;

	memset(&rep, 0, sizeof(rep));
	r = xway_broker_call(XWAY_MSG_REMAP, &body, sizeof(body), &c->fd, 1,
			     XWAY_MSG_CLAIMED, &rep, sizeof(rep), fds, &nf);
	if (r == XWAY_MSG_CLAIMED && nf == 1) {
		*gfd = fds[0];
		*v = rep.xen.v;
		return 0;
	}
	for (int i = 0; i < nf; i++)
		if (fds[i] >= 0)
			real.close(fds[i]);
	rep.res.text[sizeof(rep.res.text) - 1] = 0;
	snprintf(why, why_len, "%s", r < 0 ? "broker unreachable"
		 : r == XWAY_MSG_RESULT ? rep.res.text : "bad reply");
	return r < 0 ? (int)r : -EPROTO;
}

static void xway_xen_fork_prepare(const char *what)
{
	struct xway_xen_acc a = { 0 };

	xway_fd_foreach(xway_xen_collect, &a);
	for (int i = 0; i < a.n; i++) {
		struct xway_conn *c = a.c[i];
		struct xway_xen_vchan v;
		char why[160] = "";
		int gfd = -1, r = xway_chan_xen_fork_need(c->chan);

		if (r == 1 && (r = xway_xen_remap(c, &gfd, &v, why, sizeof(why))) == 0)
			r = 1;
		if (r >= 0)
			r = xway_chan_xen_fork_prepare(c->chan, gfd, r ? &v : NULL);
		if (r < 0) {
			char m[240];

			snprintf(m, sizeof(m), "%s (re-map: %s)", what,
				 why[0] ? why : r == -EBUSY ? "peeked bytes not yet read"
				 : strerror(-r));
			xway_lc_xen_leave(c, m);
			xway_conn_put(c);
			a.c[i] = NULL;
		}
	}
	xway_xf = a;
}

static void xway_xen_fork_done(int child)
{
	for (int i = 0; i < xway_xf.n; i++) {
		struct xway_conn *c = xway_xf.c[i];

		if (!c)
			continue;
		if (child) {
			xway_chan_xen_fork_child(c->chan);
			XDBG("fork: fd %d follows on its Xen channel (%s)", c->fd,
			     xway_chan_poll(c->chan) & XWAY_EV_ERR ? "NOT mapped here"
			     : "mapped");
		} else {
			xway_chan_xen_fork_parent(c->chan);
		}
		xway_conn_put(c);
	}
	free(xway_xf.c);
	memset(&xway_xf, 0, sizeof(xway_xf));
}

/* ---- fork ------------------------------------------------------------ */

/*
 * Before every fork-like event the shim sees (fork's prepare handler, the
 * clone() and syscall(SYS_clone*) wrappers): the child will map every
 * endpoint state we have (none of them may be kept as a spare, chan
 * local.c), Xen ends get a mapping to follow, and the child's holding is
 * counted before it exists, since the parent could close its copy right
 * after fork returns.  One place, so no wrapper misses a part.
 */
static void xway_fork_prepare(const char *what)
{
	if (xway_chan_sharing)
		xway_chan_sharing();
	xway_xen_fork_prepare(what);
	xway_holders_add(1);
}

static void xway_atfork_prepare(void)
{
	if (!xway_ready())
		return;
	xway_fork_prepare("fork");
	xway_fork_counted = 1;
}

static void xway_atfork_parent(void)
{
	/* fork() (ours) undoes the count if the fork failed. */
	xway_xen_fork_done(0);
}

static void xway_atfork_child(void)
{
	xway_fork_counted = 0;
	/* Sockets kept only for another thread's call (not in the child). */
	xway_deferred_after_fork();
	if (xway_lc_page) {
		xway_lc_pid = getpid();
		xway_lc_page[0] = 1;
		xway_broker_after_fork();
	}
	/* After the bookkeeping above: anything that enters the shim before
	 * it would count this process a second time (xway_lc_new_process). */
	xway_xen_fork_done(1);
}

pid_t xway_pid(void)
{
	/* The pid our fork handlers keep, where the wipe-on-fork page says
	 * this is the process they kept it for; getpid() (a system call
	 * each time: glibc keeps none) where the page could not be set up,
	 * and in a child made without our handlers until the entry points'
	 * xway_lc_check() has caught it up (not done here: callers may hold
	 * locks that catching up takes). */
	if (xway_lc_page && xway_lc_page[0])
		return xway_lc_pid;
	return getpid();
}

/*
 * A child that ran no atfork handler (raw clone(), _Fork): it shares our
 * connections, count it now (late: see shim/README.md) and give it its own
 * broker link.  Called at the first shim call in the child.
 */
void xway_lc_new_process(void)
{
	if (!xway_lc_page || xway_lc_page[0])
		return;
	xway_lc_page[0] = 1;
	xway_lc_pid = getpid();
	xway_broker_after_fork();
	xway_holders_add(1);
	XDBG("pid %d: new process without fork handlers (clone): connections "
	     "counted", (int)xway_lc_pid);
}

XWAY_EXPORT pid_t fork(void)
{
	pid_t pid;
	int saved;

	xway_fork_counted = 0;
	pid = real.fork();
	if (pid < 0 && xway_fork_counted) {
		saved = errno;
		xway_holders_add(-1);
		errno = saved;
	}
	if (pid != 0)
		xway_fork_counted = 0;
	return pid;
}

/*
 * Raw clone without CLONE_VM, the way vsftpd makes its sessions
 * (syscall(__NR_clone, ...) or glibc's clone()): no atfork handler runs.
 * The child is counted BEFORE it exists, as fork does: otherwise a parent
 * that closes its copy right after the clone would be the last holder and
 * tear the connection down under the child.  The child is then marked so
 * that its first shim call does not count it again.
 */
static void xway_clone_child(void)
{
	if (xway_lc_page) {
		xway_lc_page[0] = 1;
		xway_lc_pid = getpid();
	}
	xway_broker_after_fork();
	xway_xen_fork_done(1);
}

static int xway_clone_counts(unsigned long flags)
{
	return !(flags & CLONE_VM) && !(flags & CLONE_THREAD) && xway_ready();
}

XWAY_EXPORT long syscall(long number, ...)
{
	va_list ap;
	long a[6], r;
	int counted = 0, saved;

	va_start(ap, number);
	for (int i = 0; i < 6; i++)
		a[i] = va_arg(ap, long);
	va_end(ap);
	/* seccomp(2) has no glibc wrapper: a filter installed through
	 * syscall() announces the sandbox as prctl(PR_SET_SECCOMP) does. */
	if (__builtin_expect(number == SYS_seccomp, 0)) {
		saved = errno;
		xway_lc_prepare_sandbox();
		xway_xen_sandbox();
		xway_chan_before_sandbox();
		xway_lc_sandboxed = 1;
		errno = saved;
	}
	/* Only fork-like clones (no new stack: the child returns through
	 * this frame); others pass through untouched. */
	if (__builtin_expect(number == SYS_clone, 0) && a[1] == 0 &&
	    xway_clone_counts((unsigned long)a[0]))
		counted = 1;
#ifdef SYS_clone3
	if (__builtin_expect(number == SYS_clone3, 0) && a[0] &&
	    (size_t)a[1] >= offsetof(struct clone_args, stack_size) &&
	    ((const struct clone_args *)a[0])->stack == 0 &&
	    xway_clone_counts((unsigned long)((const struct clone_args *)a[0])->flags))
		counted = 1;
#endif
	if (!counted)
		return real.syscall(number, a[0], a[1], a[2], a[3], a[4], a[5]);
	xway_fork_prepare("clone");
	r = real.syscall(number, a[0], a[1], a[2], a[3], a[4], a[5]);
	saved = errno;
	if (r == 0) {
		xway_clone_child();
	} else {
		xway_xen_fork_done(0);
		if (r < 0)
			xway_holders_add(-1);
	}
	errno = saved;
	return r;
}

/* glibc's clone(): the child runs fn on its own stack, so fn is wrapped
 * (the argument block is on our stack, copied into the child's memory). */
struct xway_clone_tramp { int (*fn)(void *); void *arg; };

static int xway_clone_start(void *p)
{
	struct xway_clone_tramp *t = p;

	xway_clone_child();
	return t->fn(t->arg);
}

XWAY_EXPORT int clone(int (*fn)(void *), void *stack, int flags, void *arg, ...)
{
	va_list ap;
	pid_t *ptid, *ctid;
	void *tls;
	struct xway_clone_tramp t = { fn, arg };
	int r, saved;

	va_start(ap, arg);
	ptid = va_arg(ap, pid_t *);
	tls = va_arg(ap, void *);
	ctid = va_arg(ap, pid_t *);
	va_end(ap);
	if (!xway_clone_counts((unsigned long)flags))
		return real.clone(fn, stack, flags, arg, ptid, tls, ctid);
	xway_fork_prepare("clone");
	r = real.clone(xway_clone_start, stack, flags, &t, ptid, tls, ctid);
	saved = errno;
	xway_xen_fork_done(0);
	if (r < 0)
		xway_holders_add(-1);
	errno = saved;
	return r;
}

/*
 * vfork cannot be wrapped (the child would return through our frame and
 * clobber the parent's stack), and a vfork child that touches the shim's
 * state would touch the parent's.  POSIX allows vfork to be fork: it is.
 */
XWAY_EXPORT pid_t vfork(void)
{
	return fork();
}

/* ---- the shim's own descriptors ---------------------------------------- */

struct xway_own_acc {
	int *fds;
	int n, max;
	int full;       /* some did not fit: the caller retries bigger */
};

static void xway_own_one(int fd, struct xway_conn *c, void *arg)
{
	struct xway_own_acc *a = arg;
	int st = atomic_load_explicit(&c->state, memory_order_relaxed);

	if (fd != c->fd || !c->chan || st == XWAY_ST_CLOSED)
		return;
	if (a->n + XWAY_CHAN_MAX_FDS <= a->max)
		a->n += xway_chan_fds(c->chan, a->fds + a->n, XWAY_CHAN_MAX_FDS);
	else
		a->full = 1;
}

static int xway_int_cmp(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;

	return x < y ? -1 : x > y;
}

/* Returns how many were stored; max means "maybe more": call again with
 * XWAY_MAX_OWN (a short count is never a truncated list). */
int xway_lc_own_fds(int *fds, int max)
{
	struct xway_own_acc a = { fds, 0, max, 0 };
	int b = xway_broker_fd();

	if (b >= 0 && a.n < max)
		fds[a.n++] = b;
	if (xway_chan_fds)
		xway_fd_foreach(xway_own_one, &a);
	a.n += xway_epoll_own_fds(fds + a.n, max - a.n);
	a.n += xway_deferred_own_fds(fds + a.n, max - a.n);
	if (xway_chan_spare_fds)
		a.n += xway_chan_spare_fds(fds + a.n, max - a.n);
	if (a.full || a.n > max - 1 - XWAY_CHAN_MAX_FDS) {
		/* The epoll or deferred part may not have fit either: say
		 * "full", with no stale entries for a caller that uses it. */
		for (int i = a.n; i < max; i++)
			fds[i] = -1;
		a.n = max;
	}
	qsort(fds, (size_t)a.n, sizeof(int), xway_int_cmp);
	return a.n;
}

int xway_lc_is_own_fd(int fd)
{
	int buf[256], *fds = buf, n, found = 0;

	if (!xway_ready())
		return 0;
	n = xway_lc_own_fds(fds, 256);
	if (n == 256) {
		fds = malloc(sizeof(int) * XWAY_MAX_OWN);
		if (!fds)
			return 0;
		n = xway_lc_own_fds(fds, XWAY_MAX_OWN);
	}
	for (int i = 0; i < n && !found; i++)
		found = fds[i] == fd;
	if (fds != buf)
		free(fds);
	return found;
}

/* close the range [lo, hi] of fds that are not ours (the shim's own fds
 * in it survive); fds of our connections get the shim's close. */
struct xway_cr {
	unsigned lo, hi;
	int *fds;
	int n, max;
};

static void xway_cr_collect(int fd, struct xway_conn *c, void *arg)
{
	struct xway_cr *r = arg;

	(void)c;
	if ((unsigned)fd >= r->lo && (unsigned)fd <= r->hi && r->n < r->max)
		r->fds[r->n++] = fd;
}

static int xway_close_range(unsigned lo, unsigned hi, int flags)
{
	int own_buf[256], *own = own_buf, n_own;
	int conn_buf[256], *conn = conn_buf;
	struct xway_cr cr;
	long r = 0;

	if (lo > hi)
		return -EINVAL;
	if (flags & CLOSE_RANGE_CLOEXEC)
		/* Only the flag changes: our fds are CLOEXEC already, and an
		 * exec hand-over clears it on the channel fds it needs. */
		return (int)XWAY_SYS(real.close_range(lo, hi, flags));
	if (flags & CLOSE_RANGE_UNSHARE) {
		/* Unshare first (nothing closed), then work on our copy. */
		r = XWAY_SYS(real.close_range(~0U, ~0U, CLOSE_RANGE_UNSHARE));
		if (r < 0)
			return (int)r;
		flags &= ~CLOSE_RANGE_UNSHARE;
	}
	/* epoll.c: epoll fds in the range take their accelerated records. */
	xway_ep_range_closing(lo, hi);
	n_own = xway_lc_own_fds(own, 256);
	if (n_own == 256) {
		own = malloc(sizeof(int) * XWAY_MAX_OWN);
		if (!own)
			return -ENOMEM;
		n_own = xway_lc_own_fds(own, XWAY_MAX_OWN);
	}
	/* Our connections' fds in the range: the shim's close (teardown when
	 * it is the last), one by one. */
	cr.lo = lo;
	cr.hi = hi;
	cr.fds = conn;
	cr.n = 0;
	cr.max = 256;
	xway_fd_foreach(xway_cr_collect, &cr);
	if (cr.n == cr.max) {
		conn = malloc(sizeof(int) * XWAY_MAX_OWN);
		if (conn) {
			cr.fds = conn;
			cr.n = 0;
			cr.max = XWAY_MAX_OWN;
			xway_fd_foreach(xway_cr_collect, &cr);
		} else {
			conn = conn_buf;
		}
	}
	for (int i = 0; i < cr.n; i++)
		xway_close_app_fd(cr.fds[i]);
	/* The rest in sub-ranges around our own fds. */
	unsigned cur = lo;
	for (int i = 0; i < n_own && r == 0; i++) {
		unsigned o = (unsigned)own[i];
		if (o < cur || o > hi)
			continue;
		if (o > cur)
			r = XWAY_SYS(real.close_range(cur, o - 1, flags));
		cur = o + 1;
		if (cur == 0)
			break;            /* o was ~0U */
	}
	if (r == 0 && cur <= hi && cur != 0)
		r = XWAY_SYS(real.close_range(cur, hi, flags));
	if (own != own_buf)
		free(own);
	if (conn != conn_buf)
		free(conn);
	return (int)r;
}

XWAY_EXPORT int close_range(unsigned int lo, unsigned int hi, int flags)
{
	if (!xway_ready())
		return real.close_range(lo, hi, flags);
	xway_lc_check();
	if (!(flags & CLOSE_RANGE_CLOEXEC))
		xway_fd_new_files(lo, hi);   /* numbers freed */
	return (int)xway_ret(xway_close_range(lo, hi, flags));
}

XWAY_EXPORT void closefrom(int lo)
{
	if (!xway_ready() || lo < 0) {
		real.closefrom(lo);
		return;
	}
	xway_lc_check();
	xway_fd_new_files((unsigned)lo, ~0U);
	if (xway_close_range((unsigned)lo, ~0U, 0) < 0) {
		/* glibc's closefrom falls back to closing one by one. */
		int saved = errno;
		struct rlimit rl;
		long max = getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
			   rl.rlim_cur != RLIM_INFINITY ? (long)rl.rlim_cur : 65536;
		for (long fd = lo; fd < max && fd < (1 << 20); fd++)
			if (!xway_lc_close_guard((int)fd))
				real.close((int)fd);
		errno = saved;
	}
}

/* ---- exec hand-over --------------------------------------------------- */

/*
 * State handed to the new image, one record per connection whose fds
 * survive the exec (some fd number without FD_CLOEXEC):
 *   XWAY_EXEC_STATE=2;<fd>[,<fd>...]:<side>:<cookie>:<memfd>:<efd0>:<efd1>:<epfd>:<local>:<peer>:<shared>;...
 * cookie in hex, local/peer the struct xway_addr bytes in hex.  The new
 * image trusts nothing in it: every fd is checked (socket is TCP with that
 * 4-tuple, memfd is sealed with that cookie in its header) before use.
 *
 * epfd is the memfd of the end's state (indices, locks, statistics, the
 * holder count): the new image maps that same state, so it and any other
 * process still holding the connection (a fork child execs while its
 * parent goes on, `git push git://`, or posix_spawn) are one end with one
 * holder count, as fork children are.  -1 when the end has none (it could
 * not be made: RLIMIT_FSIZE, a sandbox, no high fd): the new image then
 * starts an end of its own from the ring's indices, correct only while it
 * is the one user; shared=1 (posix_spawn) then keeps it from the
 * last-holder teardown.
 */
struct xway_exec_acc {
	char *buf;
	size_t len, cap;
	int *restore;             /* channel fds whose CLOEXEC we cleared */
	int nrestore, maxrestore;
	int ncon;
	int spawn;                        /* posix_spawn: the spawner goes on */
	char *const *envp;                /* the new image's environment */
	struct xway_exec_target tgt;      /* and what it runs */
	int unshimmed;                    /* -1 not asked yet, 1 no libxway there */
	const char *why;
	struct xway_conn *handed[64];     /* written into the state */
	struct xway_conn *seen[64];
	int nseen;
	int xen_gfd[64];                  /* REMAP'd grant fds for the new image */
	int nxen_gfd;
};

static void xway_hex(char *out, const void *p, size_t n)
{
	static const char h[] = "0123456789abcdef";
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = h[b[i] >> 4];
		out[2 * i + 1] = h[b[i] & 15];
	}
	out[2 * n] = 0;
}

static int xway_unhex(const char *s, size_t slen, void *p, size_t n)
{
	unsigned char *b = p;

	if (slen != 2 * n)
		return -EINVAL;
	for (size_t i = 0; i < 2 * n; i++) {
		int v = s[i] >= '0' && s[i] <= '9' ? s[i] - '0'
		      : s[i] >= 'a' && s[i] <= 'f' ? s[i] - 'a' + 10 : -1;
		if (v < 0)
			return -EINVAL;
		if (i % 2 == 0)
			b[i / 2] = (unsigned char)(v << 4);
		else
			b[i / 2] |= (unsigned char)v;
	}
	return 0;
}

static int xway_exec_append(struct xway_exec_acc *a, const char *s)
{
	size_t n = strlen(s);

	if (a->len + n + 1 > a->cap) {
		size_t cap = (a->cap + n + 1) * 2;
		char *nb = realloc(a->buf, cap);
		if (!nb)
			return -ENOMEM;
		a->buf = nb;
		a->cap = cap;
	}
	memcpy(a->buf + a->len, s, n + 1);
	a->len += n;
	return 0;
}

static int xway_is_tcp_fd(int fd, int *family);
static int xway_same_addr(int fd, int peer, const struct xway_addr *want);

/* Fds naming c that survive the exec (no FD_CLOEXEC) and still are its
 * socket: glibc's internal dup2 (login_tty, forkpty, posix_spawn's file
 * actions) replaces a number behind our table's back (telnetd's child
 * puts its pty over the socket's fd 0 before it execs login). */
struct xway_fdlist { struct xway_conn *c; int fds[XWAY_MAX_EXEC_FD]; int n; };

static void xway_exec_fds_of(int fd, struct xway_conn *c, void *arg)
{
	struct xway_fdlist *l = arg;
	int family;

	if (c != l->c || l->n >= XWAY_MAX_EXEC_FD)
		return;
	int fl = real.fcntl(fd, F_GETFD, 0);
	if (fl >= 0 && !(fl & FD_CLOEXEC) && xway_is_tcp_fd(fd, &family) &&
	    xway_same_addr(fd, 0, &c->local) && xway_same_addr(fd, 1, &c->peer))
		l->fds[l->n++] = fd;
}

static void xway_exec_collect(int fd, struct xway_conn *c, void *arg)
{
	struct xway_exec_acc *a = arg;

	if (fd != c->fd || a->nseen >= 64)
		return;
	a->seen[a->nseen++] = c;
	xway_conn_hold(c);
}

/*
 * Will an image without the shim use connection c, whose surviving fds are
 * l?  Leaving the channel costs every other holder its acceleration, so
 * only when it will, or when nobody else holds it: the connection is on
 * fd 0, 1 or 2 (inetd's services, `env -i prog <&3`), or this process is
 * its only holder.  A socket merely leaked into a helper while another
 * process goes on using it (telnetd's child execs login with a clean
 * environment, the socket open above 2) stays on the channel.
 */
static int xway_exec_uses(struct xway_conn *c, const struct xway_fdlist *l)
{
	for (int k = 0; k < l->n; k++)
		if (l->fds[k] <= 2)
			return 1;
	return atomic_load_explicit(&c->shared->holders, memory_order_acquire) <= 1;
}


/* Clear FD_CLOEXEC on fd for the exec, remembering it for xway_exec_undo. */
static int xway_exec_keep(struct xway_exec_acc *a, int fd)
{
	int fl = real.fcntl(fd, F_GETFD, 0);

	if (fl < 0)
		return -EBADF;
	if (!(fl & FD_CLOEXEC))
		return 0;
	if (a->nrestore >= a->maxrestore)
		return -ENOSPC;
	if (real.fcntl(fd, F_SETFD, fl & ~FD_CLOEXEC) != 0)
		return -EBADF;
	a->restore[a->nrestore++] = fd;
	return 0;
}

/*
 * A Xen client end the new image keeps using (docs/DESIGN.md §7.2): the
 * broker maps its grants once more for it (REMAP), the event channel and
 * the endpoint's state memfd cross the exec, and the record says
 * `fds:side:cookie:X<grant fd>:<evtchn fd>:<state fd>:<geometry>:local:peer:spawn`.
 * -errno (and why) when it cannot: the caller leaves for TCP instead.
 */
static int xway_xen_exec_carry(struct xway_exec_acc *a, struct xway_conn *c,
			       const struct xway_fdlist *l, char *why, size_t why_len)
{
	struct xway_xen_vchan v;
	char rec[512], hex1[64], hex2[64], hexg[2 * sizeof(v) + 1];
	int efd, epfd, gfd = -1, r, sf[3], server;

	/* A server end (the connecting process's) keeps its gntalloc
	 * descriptor: the new image maps the grants through it.  A client
	 * end's grants are mapped again by its broker (REMAP). */
	r = xway_chan_xen_share_fds(c->chan, sf, &v);
	if (r < 0 && r != -EOPNOTSUPP)
		return r;
	server = r == 0;
	if (server) {
		gfd = sf[0];
		efd = sf[1];
		epfd = sf[2];
		if ((r = xway_exec_keep(a, gfd)) < 0)
			return r;
	} else {
		if ((r = xway_chan_xen_exec_fds(c->chan, &efd, &epfd)) < 0)
			return r;
		if (a->nxen_gfd >= (int)(sizeof(a->xen_gfd) / sizeof(a->xen_gfd[0])))
			return -ENOSPC;
		if ((r = xway_xen_remap(c, &gfd, &v, why, why_len)) < 0)
			return r;
		a->xen_gfd[a->nxen_gfd++] = gfd;
		int fl = real.fcntl(gfd, F_GETFD, 0);
		if (fl < 0 || real.fcntl(gfd, F_SETFD, fl & ~FD_CLOEXEC) != 0)
			return -EBADF;
	}
	if ((r = xway_exec_keep(a, efd)) < 0 || (r = xway_exec_keep(a, epfd)) < 0)
		return r;
	if (xway_chan_before_exec)
		xway_chan_before_exec(c->chan);
	if (!a->ncon && xway_exec_append(a, XWAY_EXEC_ENV "=" XWAY_EXEC_VER) < 0)
		return -ENOMEM;
	xway_exec_append(a, ";");
	for (int k = 0; k < l->n; k++) {
		snprintf(rec, sizeof(rec), k ? ",%d" : "%d", l->fds[k]);
		xway_exec_append(a, rec);
	}
	xway_hex(hex1, &c->local, sizeof(c->local));
	xway_hex(hex2, &c->peer, sizeof(c->peer));
	xway_hex(hexg, &v, sizeof(v));
	snprintf(rec, sizeof(rec), ":%d:%016llx:%c%d:%d:%d:%s:%s:%s:%d", c->side,
		 (unsigned long long)c->cookie, server ? 'S' : 'X', gfd, efd, epfd, hexg,
		 hex1, hex2, a->spawn);
	if (xway_exec_append(a, rec) < 0)
		return -ENOMEM;
	a->handed[a->ncon++] = c;
	XDBG("exec: fd %d carried on its Xen channel (grants %s on fd %d)", c->fd,
	     server ? "granted through" : "re-mapped", gfd);
	return 0;
}

/* Before the exec: PENDING/FLUSH connections go to plain TCP with every
 * owed byte written (the new image cannot finish them); ACCEL ones with a
 * surviving fd are written into the state. */
static int xway_exec_prepare(struct xway_exec_acc *a)
{
	char rec[512], hex1[64], hex2[64];

	xway_fd_foreach(xway_exec_collect, a);
	for (int i = 0; i < a->nseen; i++) {
		struct xway_conn *c = a->seen[i];
		struct xway_fdlist l = { .c = c };
		int st = atomic_load_explicit(&c->state, memory_order_acquire), cf[4];

		if (st == XWAY_ST_PENDING)
			st = xway_pending_resolve(c, 1);
		if (st == XWAY_ST_FLUSH) {
			xway_flush_owed(c, 0);
			continue;
		}
		if (st != XWAY_ST_ACCEL || !c->chan || !xway_chan_fds)
			continue;
		/* Foreach holds the table lock: the fd list is taken apart. */
		xway_fd_foreach(xway_exec_fds_of, &l);
		if (l.n == 0)
			continue;                    /* CLOEXEC everywhere: gone */
		if (a->unshimmed < 0)
			a->unshimmed = !xway_exec_target_shimmed(a->envp, &a->tgt, &a->why);
		if (a->unshimmed && xway_exec_uses(c, &l)) {
			/* Its kernel socket is all the new image will see. */
			xway_lc_unshimmed_leave(c, a->why);
			continue;
		}
		if (xway_chan_backend(c->chan) == XWAY_BACKEND_XEN) {
			char why[160] = "";
			int r = xway_xen_exec_carry(a, c, &l, why, sizeof(why));

			if (r == -ENOMEM)
				return r;
			if (r < 0)   /* the new image gets the socket, on TCP */
				xway_lc_xen_leave_err(c, "exec", why, r);
			continue;
		}
		int ncf = xway_chan_fds(c->chan, cf, 4);
		if (ncf < 3)
			continue;
		if (ncf == 3)
			cf[3] = -1;
		if (a->nrestore + ncf > a->maxrestore)
			continue;
		if (cf[3] >= 0 && xway_chan_before_exec)
			xway_chan_before_exec(c->chan);
		if (cf[3] >= 0 && xway_chan_ep_handed)
			xway_chan_ep_handed(c->chan);   /* the new image maps it */
		for (int k = 0; k < ncf; k++)
			(void)xway_exec_keep(a, cf[k]);   /* room checked above */
		if (!a->ncon && xway_exec_append(a, XWAY_EXEC_ENV "=" XWAY_EXEC_VER) < 0)
			return -ENOMEM;
		xway_exec_append(a, ";");
		for (int k = 0; k < l.n; k++) {
			snprintf(rec, sizeof(rec), k ? ",%d" : "%d", l.fds[k]);
			xway_exec_append(a, rec);
		}
		xway_hex(hex1, &c->local, sizeof(c->local));
		xway_hex(hex2, &c->peer, sizeof(c->peer));
		snprintf(rec, sizeof(rec), ":%d:%016llx:%d:%d:%d:%d:%s:%s:%d", c->side,
			 (unsigned long long)c->cookie, cf[0], cf[1], cf[2], cf[3],
			 hex1, hex2, a->spawn);
		if (xway_exec_append(a, rec) < 0)
			return -ENOMEM;
		a->handed[a->ncon++] = c;
	}
	return 0;
}

static void xway_exec_undo(struct xway_exec_acc *a)
{
	for (int i = 0; i < a->nrestore; i++) {
		int fl = real.fcntl(a->restore[i], F_GETFD, 0);
		if (fl >= 0)
			real.fcntl(a->restore[i], F_SETFD, fl | FD_CLOEXEC);
	}
	/* The exec failed: the grant maps made for the new image go (their
	 * descriptor is their only holder). */
	for (int i = 0; i < a->nxen_gfd; i++)
		real.close(a->xen_gfd[i]);
	a->nxen_gfd = 0;
}

static void xway_exec_release(struct xway_exec_acc *a)
{
	for (int i = 0; i < a->nseen; i++)
		xway_conn_put(a->seen[i]);
	free(a->buf);
	free(a->restore);
}

/* The envp for the real exec: the caller's minus any XWAY_EXEC_STATE, plus
 * ours (the caller's array is not modified). */
static char **xway_exec_envp(char *const envp[], char *state)
{
	size_t n = 0, k = 0;
	char **out;

	while (envp && envp[n])
		n++;
	out = malloc(sizeof(char *) * (n + 2));
	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (strncmp(envp[i], XWAY_EXEC_ENV "=", sizeof(XWAY_EXEC_ENV)) != 0)
			out[k++] = envp[i];
	if (state)
		out[k++] = state;
	out[k] = NULL;
	return out;
}

typedef int (*xway_exec_fn)(const void *ctx, char *const envp[]);

static int xway_do_spawn(const void *ctx, char *const envp[]);
static int xway_do_system(const void *ctx, char *const envp[]);
static int xway_do_popen(const void *ctx, char *const envp[]);

/* The calling process goes on after fn (a new process runs the image). */
static int xway_spawnlike(xway_exec_fn fn)
{
	return fn == xway_do_spawn || fn == xway_do_system || fn == xway_do_popen;
}

static void xway_exec_target_of(xway_exec_fn fn, const void *ctx,
				struct xway_exec_target *t);

static int xway_exec_common2(char *const envp[], xway_exec_fn fn, const void *ctx)
{
	struct xway_exec_acc a;
	char **nenv;
	int r, saved;

	if (!xway_ready() || xway_cfg.disabled)
		return fn(ctx, envp);
	xway_lc_check();
	memset(&a, 0, sizeof(a));
	a.spawn = xway_spawnlike(fn);
	a.envp = envp;
	a.unshimmed = -1;                 /* asked at the first connection */
	xway_exec_target_of(fn, ctx, &a.tgt);
	/* The new image forgets our SCM_RIGHTS hand-overs still unsettled
	 * (the markers are mapped in this one): settle them now, as at exit
	 * (bounded), so a receiver without the shim still gets its revert. */
	if (!a.spawn)
		xway_scm_at_exit();
	a.maxrestore = 4 * 64;
	a.restore = malloc(sizeof(int) * (size_t)a.maxrestore);
	if (!a.restore || xway_exec_prepare(&a) < 0) {
		xway_exec_undo(&a);
		xway_exec_release(&a);
		return fn(ctx, envp);
	}
	nenv = xway_exec_envp(envp, a.ncon ? a.buf : NULL);
	if (!nenv) {
		xway_exec_undo(&a);
		xway_exec_release(&a);
		return fn(ctx, envp);
	}
	if (a.ncon)
		XDBG("exec: handing %d accelerated connection(s) over", a.ncon);
	/* posix_spawn: the spawned image is one more holder.  Counted before
	 * it exists, as fork does: it may exit before we return.  With a
	 * carried end it shares our count (its exit takes its one back);
	 * without, it has its own and ours just never reaches 0 under it. */
	if (a.spawn)
		for (int i = 0; i < a.ncon; i++)
			atomic_fetch_add_explicit(&a.handed[i]->shared->holders, 1,
						  memory_order_acq_rel);
	r = fn(ctx, nenv);
	/* Reached when the exec failed, or after posix_spawn (the child has
	 * exec'ed by then): put everything back. */
	saved = errno;
	if (a.spawn && r != 0)
		for (int i = 0; i < a.ncon; i++)
			atomic_fetch_sub_explicit(&a.handed[i]->shared->holders, 1,
						  memory_order_acq_rel);
	xway_exec_undo(&a);
	xway_exec_release(&a);
	free(nenv);
	errno = saved;
	return r;
}

/* The original soft RLIMIT_NOFILE for the new image (rlimit.c); ours again
 * if the exec failed (or after posix_spawn). */
static int xway_exec_common(char *const envp[], xway_exec_fn fn, const void *ctx)
{
	int r, saved, listeners = xway_ready() && !xway_cfg.disabled &&
				 !xway_spawnlike(fn);
	/* system() and popen() return only when the command ends (or run
	 * beside it): our limit stays, or other threads' connections would
	 * find no room above the application's numbers all that time.  The
	 * shell then sees the raised limit (its shim leaves it). */
	int nofile = fn != xway_do_system && fn != xway_do_popen;

	if (nofile)
		xway_nofile_before_exec();
	if (listeners)
		xway_listeners_exec(1);   /* setup.c: TCP_DEFER_ACCEPT for the new image */
	r = xway_exec_common2(envp, fn, ctx);
	saved = errno;
	if (listeners)
		xway_listeners_exec(0);
	if (nofile)
		xway_nofile_after_exec();
	errno = saved;
	return r;
}

struct xway_execve_ctx { const char *path; char *const *argv; int dirfd, flags, fd; };

static int xway_do_execve(const void *ctx, char *const envp[])
{
	const struct xway_execve_ctx *x = ctx;

	return real.execve(x->path, x->argv, envp);
}

static int xway_do_execveat(const void *ctx, char *const envp[])
{
	const struct xway_execve_ctx *x = ctx;

	return real.execveat(x->dirfd, x->path, x->argv, envp, x->flags);
}

static int xway_do_fexecve(const void *ctx, char *const envp[])
{
	const struct xway_execve_ctx *x = ctx;

	return real.fexecve(x->fd, x->argv, envp);
}

/*
 * glibc's execv/execvp/execl* and posix_spawn call its internal execve,
 * not this one: each is interposed and routed through the hand-over
 * (sshd's `sshd -R` re-exec uses execv, inetd starts telnetd with execv).
 */
struct xway_execvp_ctx { const char *file; char *const *argv; };

static int xway_do_execvpe(const void *ctx, char *const envp[])
{
	const struct xway_execvp_ctx *x = ctx;

	return real.execvpe(x->file, x->argv, envp);
}

struct xway_spawn_ctx {
	pid_t *pid;
	const char *path;
	const posix_spawn_file_actions_t *fa;
	const posix_spawnattr_t *at;
	char *const *argv;
	int search;
};

static int xway_do_spawn(const void *ctx, char *const envp[])
{
	const struct xway_spawn_ctx *x = ctx;

	/* posix_spawn returns an error number, never -1/errno. */
	return x->search ? real.posix_spawnp(x->pid, x->path, x->fa, x->at, x->argv, envp)
			 : real.posix_spawn(x->pid, x->path, x->fa, x->at, x->argv, envp);
}

/* What fn will run, for xway_exec_target_shimmed. */
static void xway_exec_target_of(xway_exec_fn fn, const void *ctx,
				struct xway_exec_target *t)
{
	t->path = NULL;
	t->dirfd = AT_FDCWD;
	t->fd = -1;
	t->search = 0;
	if (fn == xway_do_execve) {
		t->path = ((const struct xway_execve_ctx *)ctx)->path;
	} else if (fn == xway_do_execveat) {
		const struct xway_execve_ctx *x = ctx;

		if ((x->flags & AT_EMPTY_PATH) && x->path && !x->path[0])
			t->fd = x->dirfd;
		else
			t->path = x->path, t->dirfd = x->dirfd;
	} else if (fn == xway_do_fexecve) {
		t->fd = ((const struct xway_execve_ctx *)ctx)->fd;
	} else if (fn == xway_do_execvpe) {
		t->path = ((const struct xway_execvp_ctx *)ctx)->file;
		t->search = 1;
	} else if (fn == xway_do_spawn) {
		t->path = ((const struct xway_spawn_ctx *)ctx)->path;
		t->search = ((const struct xway_spawn_ctx *)ctx)->search;
	} else {
		t->path = "/bin/sh";      /* system(), popen() */
	}
}

/*
 * system() and popen(): glibc spawns /bin/sh through its internal
 * __posix_spawn (clone3 CLONE_VM|CLONE_VFORK, then execve), which no
 * preload sees, with the environment in `environ`.  So the hand-over state
 * goes there for the call: the shell (and what it execs) re-attaches the
 * connections it inherits (socat SYSTEM:...,nofork, or a server that
 * dup2s the socket to 0/1 and runs system("sha256sum")).  Without this the
 * command used the kernel socket while the peer's bytes were in the
 * channel: it read nothing, and its output never reached the peer.  The
 * swap is visible to other threads for the call's duration (they see one
 * more variable); it is made only while there is something to hand over.
 */
struct xway_system_ctx { const char *cmd, *mode; int ret; FILE *fp; };

/* envp if it carries hand-over state, else the environment as it is. */
static char **xway_env_for_shell(char *const envp[])
{
	for (size_t i = 0; envp && envp[i]; i++)
		if (!strncmp(envp[i], XWAY_EXEC_ENV "=", sizeof(XWAY_EXEC_ENV)))
			return (char **)envp;
	return environ;
}

static int xway_do_system(const void *ctx, char *const envp[])
{
	struct xway_system_ctx *x = (struct xway_system_ctx *)ctx;
	char **saved = environ;

	environ = xway_env_for_shell(envp);
	x->ret = real.system(x->cmd);
	environ = saved;
	/* -1: no child was made (the shell failing to start is its 127). */
	return x->ret == -1 ? -1 : 0;
}

static int xway_do_popen(const void *ctx, char *const envp[])
{
	struct xway_system_ctx *x = (struct xway_system_ctx *)ctx;
	char **saved = environ;

	environ = xway_env_for_shell(envp);
	x->fp = real.popen(x->cmd, x->mode);
	environ = saved;
	return x->fp ? 0 : -1;
}

XWAY_EXPORT int system(const char *cmd)
{
	struct xway_system_ctx x = { .cmd = cmd };

	if (!cmd)      /* "is there a shell?": no child */
		return real.system(cmd);
	xway_exec_common(environ, xway_do_system, &x);
	return x.ret;
}

XWAY_EXPORT FILE *popen(const char *cmd, const char *mode)
{
	struct xway_system_ctx x = { .cmd = cmd, .mode = mode };

	xway_exec_common(environ, xway_do_popen, &x);
	return x.fp;
}

XWAY_EXPORT int execv(const char *path, char *const argv[])
{
	struct xway_execve_ctx x = { .path = path, .argv = argv };

	return xway_exec_common(environ, xway_do_execve, &x);
}

XWAY_EXPORT int execvp(const char *file, char *const argv[])
{
	struct xway_execvp_ctx x = { file, argv };

	return xway_exec_common(environ, xway_do_execvpe, &x);
}

XWAY_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
	struct xway_execvp_ctx x = { file, argv };

	return xway_exec_common(envp, xway_do_execvpe, &x);
}

/* The execl family: the list becomes an argv (bounded like ARG_MAX's
 * pointer count would be; more arguments fail with E2BIG as the kernel). */
#define XWAY_EXECL_MAX 4096
static int xway_execl_argv(const char *arg0, va_list ap, char **argv, char ***envp)
{
	int n = 0;

	argv[n++] = (char *)arg0;
	while (arg0 && n < XWAY_EXECL_MAX) {
		argv[n] = va_arg(ap, char *);
		if (!argv[n])
			break;
		n++;
	}
	if (n >= XWAY_EXECL_MAX)
		return -E2BIG;
	argv[arg0 ? n : 1] = NULL;
	if (envp)
		*envp = va_arg(ap, char **);
	return 0;
}

enum xway_execl_kind { XWAY_EXECL, XWAY_EXECLP, XWAY_EXECLE };

/* One body for the three list forms: collect the argv (and execle's envp),
 * then call the vector form, which does the hand-over. */
static int xway_execl_run(enum xway_execl_kind kind, const char *path,
			  const char *arg0, va_list ap)
{
	char **argv = malloc(sizeof(char *) * (XWAY_EXECL_MAX + 1)), **envp = NULL;
	int r;

	if (!argv)
		return (int)xway_ret(-ENOMEM);
	r = xway_execl_argv(arg0, ap, argv, kind == XWAY_EXECLE ? &envp : NULL);
	if (r < 0)
		r = (int)xway_ret(r);
	else if (kind == XWAY_EXECL)
		r = execv(path, argv);
	else if (kind == XWAY_EXECLP)
		r = execvp(path, argv);
	else
		r = execve(path, argv, envp);
	int saved = errno;
	free(argv);
	errno = saved;
	return r;
}

XWAY_EXPORT int execl(const char *path, const char *arg0, ...)
{
	va_list ap;
	int r;

	va_start(ap, arg0);
	r = xway_execl_run(XWAY_EXECL, path, arg0, ap);
	va_end(ap);
	return r;
}

XWAY_EXPORT int execlp(const char *file, const char *arg0, ...)
{
	va_list ap;
	int r;

	va_start(ap, arg0);
	r = xway_execl_run(XWAY_EXECLP, file, arg0, ap);
	va_end(ap);
	return r;
}

XWAY_EXPORT int execle(const char *path, const char *arg0, ...)
{
	va_list ap;
	int r;

	va_start(ap, arg0);
	r = xway_execl_run(XWAY_EXECLE, path, arg0, ap);
	va_end(ap);
	return r;
}

XWAY_EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
			    const posix_spawnattr_t *at, char *const argv[], char *const envp[])
{
	struct xway_spawn_ctx x = { pid, path, fa, at, argv, 0 };

	return xway_exec_common(envp, xway_do_spawn, &x);
}

XWAY_EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
			     const posix_spawnattr_t *at, char *const argv[], char *const envp[])
{
	struct xway_spawn_ctx x = { pid, file, fa, at, argv, 1 };

	return xway_exec_common(envp, xway_do_spawn, &x);
}

XWAY_EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
	struct xway_execve_ctx x = { .path = path, .argv = argv };

	return xway_exec_common(envp, xway_do_execve, &x);
}

XWAY_EXPORT int execveat(int dirfd, const char *path, char *const argv[],
			 char *const envp[], int flags)
{
	struct xway_execve_ctx x = { .path = path, .argv = argv, .dirfd = dirfd,
				     .flags = flags };

	return xway_exec_common(envp, xway_do_execveat, &x);
}

XWAY_EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
	struct xway_execve_ctx x = { .argv = argv, .fd = fd };

	return xway_exec_common(envp, xway_do_fexecve, &x);
}

/* ---- re-attach in the new image ---------------------------------------- */

static int xway_same_addr(int fd, int peer, const struct xway_addr *want)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	struct xway_addr got;
	long r;

	r = peer ? XWAY_SYS(real.getpeername(fd, (struct sockaddr *)&ss, &len))
		 : XWAY_SYS(real.getsockname(fd, (struct sockaddr *)&ss, &len));
	if (r < 0 || xway_sockaddr_to_addr((struct sockaddr *)&ss, len, &got) < 0)
		return 0;
	/* A client's local address is recorded as bound before connect
	 * (it may be the wildcard): then only the port must match. */
	static const uint8_t any[16], any4[16] = { [10] = 0xff, [11] = 0xff };
	return (got.port == want->port || want->port == 0) &&
	       (memcmp(want->ip, any, 16) == 0 || memcmp(want->ip, any4, 16) == 0 ||
		memcmp(got.ip, want->ip, 16) == 0);
}

static int xway_is_tcp_fd(int fd, int *family)
{
	int v;
	socklen_t len = sizeof(v);

	if (real.getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len) < 0 || v != SOCK_STREAM)
		return 0;
	len = sizeof(v);
	if (real.getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &v, &len) < 0 || v != IPPROTO_TCP)
		return 0;
	len = sizeof(v);
	if (real.getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &len) < 0)
		return 0;
	*family = v;
	return 1;
}

/* Are a and b the same open file?  (Two numbers of one socket.) */
static int xway_same_file(int a, int b)
{
	struct stat sa, sb;

	return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 &&
	       sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* An eventfd?  (/proc may be missing, e.g. chrooted: then the attach's
 * own checks and the cookie are what protects.) */
static int xway_is_eventfd(int fd)
{
	char p[64], l[64];
	ssize_t n;

	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	n = readlink(p, l, sizeof(l) - 1);
	if (n < 0)
		return errno == ENOENT && access("/proc/self", F_OK) != 0;
	l[n] = 0;
	return strcmp(l, "anon_inode:[eventfd]") == 0;
}

/* One record of the state; returns 0 when re-attached, -errno if refused
 * (the fds then stay as the kernel left them: plain TCP). */
static int xway_reattach_one(char *rec)
{
	char *f[11], *save = NULL, *tok;
	int nf = 0, fds[XWAY_MAX_EXEC_FD], nfds = 0, side, cf[4], family;
	unsigned long long cookie;
	struct xway_addr local, peer;
	struct xway_chan_params p = { xway_cfg.ring_order, xway_cfg.spin_ns, 0 };
	struct xway_chan *chan = NULL;
	struct xway_conn *c;
	char *end;
	int r;

	for (tok = strtok_r(rec, ":", &save); tok && nf < 11; tok = strtok_r(NULL, ":", &save))
		f[nf++] = tok;
	if (nf != 10 || tok || (strcmp(f[9], "0") && strcmp(f[9], "1")))
		return -EINVAL;
	int shared = f[9][0] == '1';
	for (tok = strtok_r(f[0], ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		long v = strtol(tok, &end, 10);
		if (*end || v < 0 || v > INT_MAX || nfds >= XWAY_MAX_EXEC_FD)
			return -EINVAL;
		fds[nfds++] = (int)v;
	}
	side = (int)strtol(f[1], &end, 10);
	if (*end || (side != 0 && side != 1) || nfds == 0)
		return -EINVAL;
	cookie = strtoull(f[2], &end, 16);
	if (*end)
		return -EINVAL;
	/* A Xen end (xway_xen_exec_carry): X<grant fd> (a client end's,
	 * REMAP'd) or S<grant fd> (a server end's gntalloc), the event
	 * channel's fd, the state memfd, then the geometry. */
	int xen = f[3][0] == 'X' || f[3][0] == 'S', xen_server = f[3][0] == 'S';
	struct xway_xen_vchan geo;
	for (int k = 0; k < (xen ? 3 : 4); k++) {
		const char *t = f[3 + k] + (xen && k == 0);
		long v = strtol(t, &end, 10);
		if (*end || v < (k == 3 ? -1 : 0) || v > INT_MAX || t[0] == 0)
			return -EINVAL;
		cf[k] = (int)v;
	}
	if (xen) {
		if (xway_unhex(f[6], strlen(f[6]), &geo, sizeof(geo)) < 0)
			return -EINVAL;
		cf[3] = -1;
	}
	if (xway_unhex(f[7], strlen(f[7]), &local, sizeof(local)) < 0 ||
	    xway_unhex(f[8], strlen(f[8]), &peer, sizeof(peer)) < 0)
		return -EINVAL;
	/* Every fd is what the state says, in this process, now.  If the
	 * numbers moved (posix_spawn file actions dup2 the socket to 0-2),
	 * look for the sockets with that 4-tuple among the low fds instead. */
	int ok = 1;
	for (int k = 0; k < nfds && ok; k++)
		ok = xway_is_tcp_fd(fds[k], &family) &&
		     xway_same_addr(fds[k], 0, &local) && xway_same_addr(fds[k], 1, &peer) &&
		     (k == 0 || xway_same_file(fds[0], fds[k])) && !xway_fd_is_ours(fds[k]);
	if (!ok) {
		nfds = 0;
		for (int fd = 0; fd < 1024 && nfds < XWAY_MAX_EXEC_FD; fd++)
			if (fd != cf[0] && fd != cf[1] && fd != cf[2] && fd != cf[3] &&
			    xway_is_tcp_fd(fd, &family) && xway_same_addr(fd, 0, &local) &&
			    xway_same_addr(fd, 1, &peer) &&
			    (nfds == 0 || xway_same_file(fds[0], fd)) && !xway_fd_is_ours(fd))
				fds[nfds++] = fd;
		if (nfds == 0) {
			XDBG("exec: no socket with the recorded 4-tuple");
			return -EBADF;
		}
	}
	int carried;
	if (xen) {
		/* The grant and event-channel descriptors are character
		 * devices; the state memfd is checked by the re-attach (sealed,
		 * size, magic, side). */
		struct stat st0, st1;
		if (fstat(cf[0], &st0) != 0 || !S_ISCHR(st0.st_mode) ||
		    fstat(cf[1], &st1) != 0 || !S_ISCHR(st1.st_mode)) {
			XDBG("exec: Xen fds %d/%d are not devices", cf[0], cf[1]);
			return -EBADF;
		}
		r = xen_server ? xway_chan_xen_server_reattach(cf, &geo, &chan)
			       : xway_chan_xen_reattach(cf, &geo, &chan);
		if (r < 0)
			return r;
		carried = 1;
	} else {
		if (!xway_is_eventfd(cf[1]) || !xway_is_eventfd(cf[2]) || !xway_chan_local_attach) {
			XDBG("exec: fds %d/%d are not eventfds", cf[1], cf[2]);
			return -EBADF;
		}
		/* The attach checks the memfd: sealed, geometry, magic, cookie;
		 * the re-attach also the carried state: sealed size, cookie,
		 * side, its indices against the ring. */
		carried = cf[3] >= 0 && xway_chan_local_reattach;
		r = carried ? xway_chan_local_reattach(cf, side, (uint64_t)cookie, &p, &chan)
			    : xway_chan_local_attach(cf, side, (uint64_t)cookie, &p, &chan);
		if (r < 0)
			return r;
	}
	/* Channel fds are CLOEXEC again (they were cleared for this exec). */
	{
		int own[XWAY_CHAN_MAX_FDS], n = xway_chan_fds(chan, own, XWAY_CHAN_MAX_FDS);
		for (int k = 0; k < n; k++) {
			int fl = real.fcntl(own[k], F_GETFD, 0);
			if (fl >= 0)
				real.fcntl(own[k], F_SETFD, fl | FD_CLOEXEC);
		}
	}
	/* A carried end brings the holder count of every process sharing it
	 * (ours included: the image that exec'ed was counted). */
	c = xway_conn_new_chan(fds[0], side, chan, carried);
	if (!c) {
		xway_chan_close(chan);
		return -ENOMEM;
	}
	c->cookie = cookie;
	c->family = family;
	if (shared && !carried) /* the spawner holds it too, uncounted here */
		atomic_store_explicit(&c->shared->holders, 2, memory_order_relaxed);
	c->local = local;
	c->peer = peer;
	{
		int fl = real.fcntl(fds[0], F_GETFL, 0);
		atomic_store_explicit(&c->nonblock, fl >= 0 && (fl & O_NONBLOCK),
				      memory_order_relaxed);
		struct timeval tv;
		socklen_t len = sizeof(tv);
		if (real.getsockopt(fds[0], SOL_SOCKET, SO_RCVTIMEO, &tv, &len) == 0)
			c->rcvtimeo_ms = (int)(tv.tv_sec * 1000 + tv.tv_usec / 1000);
		len = sizeof(tv);
		if (real.getsockopt(fds[0], SOL_SOCKET, SO_SNDTIMEO, &tv, &len) == 0)
			c->sndtimeo_ms = (int)(tv.tv_sec * 1000 + tv.tv_usec / 1000);
		c->rcvlowat = xway_sock_rcvlowat(fds[0]);
		struct linger lg;
		len = sizeof(lg);
		if (real.getsockopt(fds[0], SOL_SOCKET, SO_LINGER, &lg, &len) == 0) {
			c->linger_on = lg.l_onoff;
			c->linger_s = lg.l_linger;
		}
	}
	atomic_store_explicit(&c->state, XWAY_ST_ACCEL, memory_order_release);
	for (int k = 0; k < nfds; k++)
		xway_fd_set(fds[k], c);
	xway_conn_put(c);                 /* the slots hold it now */
	XDBG("exec: fd %d re-attached to its channel (cookie %016llx)", fds[0], cookie);
	return 0;
}

static void xway_reattach_all(void)
{
	const char *env = getenv(XWAY_EXEC_ENV);
	char *copy, *save = NULL, *rec;
	int n = 0;

	if (!env)
		return;
	copy = strdup(env);
	/* The app must not see it (nor pass it on by accident). */
	unsetenv(XWAY_EXEC_ENV);
	if (!copy)
		return;
	rec = strtok_r(copy, ";", &save);
	if (!rec || strcmp(rec, XWAY_EXEC_VER) != 0) {
		XWARN("exec: ignoring %s of another version", XWAY_EXEC_ENV);
		free(copy);
		return;
	}
	while ((rec = strtok_r(NULL, ";", &save))) {
		/* strtok_r inside the record needs its own copy of the rest. */
		char one[1024];
		snprintf(one, sizeof(one), "%s", rec);
		int r = xway_reattach_one(one);
		if (r < 0)
			XWARN("exec: a handed-over connection was refused (%s); it "
			      "stays plain TCP", strerror(-r));
		else
			n++;
	}
	free(copy);
	/* inetd-style images talk through stdin/stdout: their stdio must
	 * go through the shim too (stdio.c). */
	for (int fd = 0; fd < 3 && n; fd++) {
		struct xway_conn *c = xway_fd_get(fd);

		if (!c)
			continue;
		if (atomic_load_explicit(&c->state, memory_order_acquire) == XWAY_ST_ACCEL)
			xway_stdio_adopt(fd);
		xway_conn_put(c);
	}
	/* The link now, before a sandbox (sshd -R chroots and filters). */
	if (n)
		xway_broker_prepare();
}

/* ---- exit -------------------------------------------------------------- */

static void xway_exit_collect(int fd, struct xway_conn *c, void *arg)
{
	struct xway_exec_acc *a = arg;

	if (fd != c->fd || a->nseen >= 64)
		return;
	a->seen[a->nseen++] = c;
	xway_conn_hold(c);
}

/* This process lets go of every connection as the kernel's exit would
 * close its fds: the last holder does the teardown (reset with unread
 * data, else reading side closed).  Batches of 64 until none is left. */
static void xway_exit_teardown(void)
{
	static _Atomic int done;

	if (!xway_ready() || xway_lc_sandboxed || atomic_exchange(&done, 1))
		return;
	xway_lc_check();
	xway_scm_at_exit();
	for (int round = 0; round < 1 << 16; round++) {
		struct xway_exec_acc a;
		memset(&a, 0, sizeof(a));
		xway_fd_foreach(xway_exit_collect, &a);
		if (a.nseen == 0)
			break;
		for (int i = 0; i < a.nseen; i++) {
			struct xway_conn *c = a.seen[i];
			/* Off the table first: no later call finds it. */
			xway_fd_drop_conn(c);
			if (atomic_load_explicit(&c->state, memory_order_acquire)
			    != XWAY_ST_CLOSED)
				xway_conn_last_close(c);
			xway_conn_put(c);
		}
	}
}

XWAY_EXPORT void _exit(int status)
{
	int saved = errno;

	xway_exit_teardown();
	errno = saved;
	real._exit(status);
	__builtin_unreachable();
}

__attribute__((destructor)) static void xway_lc_dtor(void)
{
	int saved = errno;

	xway_exit_teardown();
	errno = saved;
}

/* ---- sandboxes, chroot ------------------------------------------------- */

static void xway_any_conn(int fd, struct xway_conn *c, void *arg)
{
	(void)fd;
	(void)c;
	*(int *)arg = 1;
}

void xway_lc_prepare_sandbox(void)
{
	int any = 0;

	if (!xway_ready() || xway_cfg.disabled)
		return;
	xway_lc_check();
	if (xway_broker_fd() >= 0)
		return;
	xway_fd_foreach(xway_any_conn, &any);
	if (any)
		xway_broker_prepare();
}

XWAY_EXPORT int prctl(int option, ...)
{
	va_list ap;
	unsigned long a2, a3, a4, a5;

	va_start(ap, option);
	a2 = va_arg(ap, unsigned long);
	a3 = va_arg(ap, unsigned long);
	a4 = va_arg(ap, unsigned long);
	a5 = va_arg(ap, unsigned long);
	va_end(ap);
	/* A seccomp filter or no-new-privs announce a sandbox: whatever
	 * needs socket/connect happens now (HAZARDS.md).  Only the filter
	 * itself restricts later calls. */
	if (option == PR_SET_SECCOMP || option == PR_SET_NO_NEW_PRIVS) {
		int saved = errno;
		xway_lc_prepare_sandbox();
		if (option == PR_SET_SECCOMP) {
			/* membarrier() may be forbidden from now on. */
			xway_xen_sandbox();
			xway_chan_before_sandbox();
			xway_lc_sandboxed = 1;
		}
		errno = saved;
	}
	return real.prctl(option, a2, a3, a4, a5);
}

XWAY_EXPORT int chroot(const char *path)
{
	int saved = errno;

	/* After chroot the broker's socket path may not exist. */
	xway_lc_prepare_sandbox();
	errno = saved;
	return real.chroot(path);
}

/* ---- start-up ---------------------------------------------------------- */

__attribute__((constructor)) static void xway_lc_ctor(void)
{
	void *pg;

	if (!xway_ready())
		return;
	if (!xway_cfg.disabled)
		xway_nofile_init();     /* before any descriptor of ours is placed */
	pg = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (pg != MAP_FAILED) {
		/* Zero in every child that ran no atfork handler (Linux >= 4.14;
		 * without it the raw-clone detection is off). */
		if (madvise(pg, 4096, MADV_WIPEONFORK) == 0) {
			((unsigned char *)pg)[0] = 1;
			xway_lc_pid = getpid();
			xway_lc_page = pg;
			if (xway_chan_set_pid_source)
				xway_chan_set_pid_source(xway_pid);
		} else {
			munmap(pg, 4096);
		}
	}
	pthread_atfork(xway_atfork_prepare, xway_atfork_parent, xway_atfork_child);
	/* Own fds live at high numbers: anything below the floor is not ours
	 * (the close guard's fast test).  The channel layer places its fds
	 * from 1024 (or from half the limit when that is lower), the core
	 * from xway_high_fd_base(): the floor is below both. */
	xway_lc_own_floor = xway_high_fd_base() / 2;
	if (xway_lc_own_floor > 1024)
		xway_lc_own_floor = 1024;
	if (xway_lc_own_floor < 3)
		xway_lc_own_floor = 3;
	if (!xway_cfg.disabled) {
		xway_reattach_all();
		/* Listeners made elsewhere (systemd, the previous image):
		 * setup.c registers them before main() runs. */
		xway_listeners_adopt_inherited();
	} else {
		unsetenv(XWAY_EXEC_ENV);
	}
}
