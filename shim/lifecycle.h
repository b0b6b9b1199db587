/* SPDX-License-Identifier: MIT */
/*
 * Shared declarations of the readiness (poll.c, epoll.c) and process
 * lifecycle (lifecycle.c, scm.c) parts of libxway.so.  Kept apart from
 * shim.h so that the core files only need the two hooks at the bottom:
 * xway_lc_check() (pid change: raw clone() and fork without atfork
 * handlers) and xway_lc_close_guard() (a daemon closing the shim's own
 * descriptors).  Internal functions return -errno like the rest of the
 * shim.
 */
#ifndef XWAY_SHIM_LIFECYCLE_H
#define XWAY_SHIM_LIFECYCLE_H

#include "shim.h"

#define XWAY_EXPORT __attribute__((visibility("default")))

/* ---- readiness (poll.c) --------------------------------------------- */

/*
 * The level of an fd of ours as kernel TCP would show it to poll(): the
 * mask from xway_io_poll_mask() with the RDNORM/WRNORM aliases added, cut
 * to what `events` asks for plus POLLERR/POLLHUP.
 */
short xway_poll_level(struct xway_conn *c, short events);

/* Does the connection need the channel to be watched (ACCEL, PENDING)?
 * Other states (listener, FLUSH) are watched on the real socket only. */
int xway_poll_on_chan(struct xway_conn *c);

/* Wait of one call: deadline helpers (CLOCK_MONOTONIC ns; -1 forever). */
int64_t xway_now_ns(void);
int64_t xway_deadline_ns(const struct timespec *rel);
/* Remaining time to the deadline as a timespec for ppoll (NULL: forever). */
const struct timespec *xway_left_ts(int64_t deadline, struct timespec *buf);

/* ---- process lifecycle (lifecycle.c) -------------------------------- */

/* What an exec runs (target.c): a path (relative to dirfd; searched in
 * PATH when search), or an open fd (fexecve, execveat AT_EMPTY_PATH). */
struct xway_exec_target {
	const char *path;
	int dirfd, fd, search;
};

/* 1 if the new image will load libxway.so (or it cannot be told), 0 if it
 * will not, with *why saying why not (target.c). */
int xway_exec_target_shimmed(char *const envp[], const struct xway_exec_target *t,
			     const char **why);

/*
 * A page mapped MADV_WIPEONFORK: its first byte is 1 in the process that
 * set it up and reads 0 in any child made without our atfork handlers
 * (raw clone(), _Fork).  xway_lc_check() is the test: one load.
 */
extern volatile unsigned char *xway_lc_page;
void xway_lc_new_process(void);
/* This process's pid without a system call where the page above works
 * (our fork handlers keep it; a child made without them gets getpid()
 * until xway_lc_check() catches it up). */
pid_t xway_pid(void);

static inline void xway_lc_check(void)
{
	if (__builtin_expect(xway_lc_page != NULL && xway_lc_page[0] == 0, 0))
		xway_lc_new_process();
}

/*
 * close(fd) of a descriptor the shim owns (broker link, a live channel's
 * memfd/eventfds, epoll helpers): returns 1 and the caller fails the close
 * with EBADF as if the number were not open (a daemon closing every fd it
 * does not know never opened it).  0: not ours, close normally.
 */
extern int xway_lc_own_floor;        /* own fds are never below this */
int xway_lc_is_own_fd(int fd);
static inline int xway_lc_close_guard(int fd)
{
	if (__builtin_expect(fd < xway_lc_own_floor, 1))
		return 0;
	return xway_lc_is_own_fd(fd);
}
/* Every own descriptor, sorted ascending; returns the count (<= max). */
int xway_lc_own_fds(int *fds, int max);

/* Set once prctl(PR_SET_SECCOMP/PR_SET_NO_NEW_PRIVS) was seen: a sandbox
 * may kill any call outside read/write/poll/futex (HAZARDS.md); teardown
 * paths that would call getsockopt/sendmsg should check it. */
extern int xway_lc_sandboxed;

/* An established Xen connection another process cannot share (a
 * connecting end at an exec or SCM_RIGHTS hand-over, a re-map the broker
 * refused) leaves the channel for TCP (docs/DESIGN.md §7.2).  c is held
 * by the caller. */
void xway_lc_xen_leave(struct xway_conn *c, const char *why);
/* The same, saying "EVENT (why)"; why empty: err (-errno) says it. */
void xway_lc_xen_leave_err(struct xway_conn *c, const char *event, const char *why, int err);

/* A Xen client end another process will use (exec, SCM_RIGHTS): its
 * broker maps the connection's grants once more (REMAP) on a new grant
 * descriptor *gfd, with the geometry in *v.  -errno, and why, when not. */
int xway_xen_remap(struct xway_conn *c, int *gfd, struct xway_xen_vchan *v,
		   char *why, size_t why_len);

/* Open the broker link now if this process holds connections (before a
 * sandbox, chroot or uid change could forbid it). */
void xway_lc_prepare_sandbox(void);

/* ---- epoll.c -------------------------------------------------------- */

/* Own descriptors of the epoll emulation (for the close guard). */
int xway_epoll_own_fds(int *fds, int max);
/* The app is about to close fd (close; dup2/dup3 onto it with dup_src
 * the source, else -1) or every fd in [lo, hi] (close_range): release the
 * accelerated records of an epoll instance closed that way. */
void xway_ep_fd_closing(int fd, int dup_src);
void xway_ep_range_closing(unsigned lo, unsigned hi);
/* In a child after fork: nothing to redo (kept for symmetry, documented). */

/* ---- SCM_RIGHTS (scm.c) --------------------------------------------- */

/* sendmsg/recvmsg with control data on a socket that is not ours (the
 * AF_UNIX socket the fds travel on): hand over accelerated fds. */
ssize_t xway_scm_sendmsg(int fd, const struct msghdr *msg, int flags);
ssize_t xway_scm_recvmsg(int fd, struct msghdr *msg, int flags);
/* At exit: log hand-overs no shimmed process took (bounded wait). */
void xway_scm_at_exit(void);

#endif /* XWAY_SHIM_LIFECYCLE_H */
