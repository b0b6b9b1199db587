/* SPDX-License-Identifier: MIT */
/*
 * Room for the shim's own descriptors above the application's limit.
 *
 * An accelerated connection costs four descriptors of ours besides the
 * socket (the ring's memfd, two eventfds, its end state's memfd), kept
 * above every number the application uses (chan/local.c: from 1024 up
 * when RLIMIT_NOFILE allows, else in the top quarter of the table).  Under the usual soft limit of
 * 1024 that top quarter held ~85 connections; then our descriptors took
 * low numbers and a process with ~250 accelerated connections got EMFILE
 * where kernel TCP serves a thousand.
 *
 * So when the soft limit is small (<= 1280) and the hard limit allows, the
 * shim raises the soft limit by XW_NOFILE_RESERVE at start-up (before any
 * descriptor of ours is placed) and shows the application the limit it
 * had: getrlimit/prlimit (RLIMIT_NOFILE) and sysconf(_SC_OPEN_MAX) and
 * getdtablesize report it, our descriptors live from 1024 up, the
 * application's below.  What remains visible: /proc/self/limits, and a
 * process that really fills all of its own numbers gets one of ours'
 * range instead of EMFILE.  The application setting RLIMIT_NOFILE itself
 * ends all of this (its values apply exactly: sshd and vsftpd lower it to
 * sandbox themselves).  Before an exec the original soft limit is put
 * back (the new image starts as it would without us; its own copy of the
 * shim raises it again), and again raised if the exec failed.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "chan/sys.h"
#include "errno.h"
#include "lifecycle.h"
#include "shim.h"

extern long __sysconf(int name);

#define XWAY_EXPORT __attribute__((visibility("default")))
#define XW_NOFILE_SMALL   1280
#define XW_NOFILE_RESERVE 4096

XWAY_EXPORT int getrlimit(__rlimit_resource_t res, struct rlimit *rl);
XWAY_EXPORT int getrlimit64(__rlimit_resource_t res, struct rlimit64 *rl);
XWAY_EXPORT int setrlimit(__rlimit_resource_t res, const struct rlimit *rl);
XWAY_EXPORT int setrlimit64(__rlimit_resource_t res, const struct rlimit64 *rl);
XWAY_EXPORT int prlimit(pid_t pid, __rlimit_resource_t res, const struct rlimit *nw,
			struct rlimit *old);
XWAY_EXPORT int prlimit64(pid_t pid, __rlimit_resource_t res, const struct rlimit64 *nw,
			  struct rlimit64 *old);
XWAY_EXPORT long sysconf(int name);
XWAY_EXPORT int getdtablesize(void);

/* The soft limit the application believes in, or 0: not managed (we did
 * not raise it, or the application set its own). */
static _Atomic long xw_app_soft;
/* The limits we set instead, and the application's hard one. */
static long xw_our_soft, xw_our_hard, xw_app_hard;

/* Raw: libc's syscall() is one of ours, and none of this may recurse. */
static long xw_prl(pid_t pid, int res, const struct rlimit64 *nw, struct rlimit64 *old)
{
	return xw_raw_syscall(SYS_prlimit64, pid, res, (long)nw, (long)old, 0);
}

static int xw_prlimit(const struct rlimit64 *nw, struct rlimit64 *old)
{
	int r = (int)xw_prl(0, RLIMIT_NOFILE, nw, old);

	/* Where the channel layer places its descriptors depends on it. */
	if (nw && xway_chan_nofile_changed)
		xway_chan_nofile_changed();
	return r;
}

void xway_nofile_init(void)
{
	struct rlimit64 rl, nw;

	const char *keep = getenv("XWAY_NOFILE_KEEP");

	if (keep && *keep && strcmp(keep, "0") && strcmp(keep, "1"))
		XWARN("XWAY_NOFILE_KEEP=%s: want 0 or 1; leaving RLIMIT_NOFILE alone", keep);
	if ((keep && *keep && strcmp(keep, "0")) || xw_prlimit(NULL, &rl) < 0 ||
	    rl.rlim_cur == RLIM64_INFINITY || rl.rlim_cur > XW_NOFILE_SMALL ||
	    rl.rlim_cur < 16 || rl.rlim_max == RLIM64_INFINITY || rl.rlim_max < rl.rlim_cur)
		return;
	nw.rlim_cur = rl.rlim_cur + XW_NOFILE_RESERVE;
	nw.rlim_max = rl.rlim_max;
	if (nw.rlim_cur > nw.rlim_max) {
		/* Root (CAP_SYS_RESOURCE) may raise the hard limit too. */
		nw.rlim_max = nw.rlim_cur;
		if (xw_prlimit(&nw, NULL) < 0) {
			nw.rlim_max = nw.rlim_cur = rl.rlim_max;
			if (nw.rlim_cur <= XW_NOFILE_SMALL || xw_prlimit(&nw, NULL) < 0)
				return;     /* no room above 1024 to gain */
		}
	} else if (xw_prlimit(&nw, NULL) < 0) {
		return;
	}
	xw_our_soft = (long)nw.rlim_cur;
	xw_our_hard = (long)nw.rlim_max;
	xw_app_hard = (long)rl.rlim_max;
	atomic_store(&xw_app_soft, (long)rl.rlim_cur);
	XDBG("RLIMIT_NOFILE: %ld/%ld shown to the application, %ld/%ld set (room for "
	     "the shim's descriptors above it)", (long)rl.rlim_cur, (long)rl.rlim_max,
	     xw_our_soft, xw_our_hard);
}

void xway_nofile_before_exec(void)
{
	long app = atomic_load(&xw_app_soft);
	struct rlimit64 rl;

	if (app > 0 && xw_prlimit(NULL, &rl) == 0 && (long)rl.rlim_cur == xw_our_soft) {
		/* Soft first: a hard limit below the soft one is refused.
		 * Lowering the hard limit back is for good (unprivileged
		 * processes cannot raise it again), so it is only done when
		 * we could raise it ourselves, i.e. we are privileged. */
		rl.rlim_cur = (rlim64_t)app;
		(void)xw_prlimit(&rl, NULL);
		if (xw_our_hard != xw_app_hard) {
			rl.rlim_max = (rlim64_t)xw_app_hard;
			(void)xw_prlimit(&rl, NULL);
		}
	}
}

void xway_nofile_after_exec(void)
{
	long app = atomic_load(&xw_app_soft);
	struct rlimit64 rl;

	if (app > 0 && xw_prlimit(NULL, &rl) == 0 && (long)rl.rlim_cur == app) {
		rl.rlim_cur = (rlim64_t)xw_our_soft;
		rl.rlim_max = (rlim64_t)xw_our_hard;
		if (xw_prlimit(&rl, NULL) < 0)
			atomic_store(&xw_app_soft, 0);   /* could not: plain from now on */
	}
}

/* What the application sees in a read of RLIMIT_NOFILE of itself. */
static void xw_show(struct rlimit64 *rl)
{
	long app = atomic_load(&xw_app_soft);

	if (app > 0 && (long)rl->rlim_cur == xw_our_soft) {
		rl->rlim_cur = (rlim64_t)app;
		if ((long)rl->rlim_max == xw_our_hard)
			rl->rlim_max = (rlim64_t)xw_app_hard;
	}
}

static int xw_self(pid_t pid)
{
	return pid == 0 || pid == xway_pid();
}

XWAY_EXPORT int prlimit64(pid_t pid, __rlimit_resource_t res, const struct rlimit64 *nw,
			  struct rlimit64 *old)
{
	long r;

	if (res == RLIMIT_NOFILE && xw_self(pid) && nw) {
		atomic_store(&xw_app_soft, 0);   /* the application's values now */
		/* A sandbox coming (sshd's preauth child sets 1 before its
		 * seccomp filter): the broker link needs a descriptor, so it
		 * is opened now (the Xen channels' XEN_MUTE goes on it). */
		if (nw->rlim_cur < 64) {
			int saved = errno;

			xway_lc_prepare_sandbox();
			errno = saved;
		}
	}
	r = xw_prl(pid, res, nw, old);
	if (res == RLIMIT_NOFILE && xw_self(pid) && nw && xway_chan_nofile_changed)
		xway_chan_nofile_changed();
	if (r < 0) {
		errno = (int)-r;
		return -1;
	}
	if (res == RLIMIT_NOFILE && xw_self(pid) && old)
		xw_show(old);
	return 0;
}

XWAY_EXPORT int prlimit(pid_t pid, __rlimit_resource_t res, const struct rlimit *nw,
			struct rlimit *old)
{
	/* struct rlimit is struct rlimit64 on the 64-bit ABIs we build for. */
	_Static_assert(sizeof(struct rlimit) == sizeof(struct rlimit64), "LP64 only");
	return prlimit64(pid, res, (const struct rlimit64 *)nw, (struct rlimit64 *)old);
}

XWAY_EXPORT int getrlimit64(__rlimit_resource_t res, struct rlimit64 *rl)
{
	return prlimit64(0, res, NULL, rl);
}

XWAY_EXPORT int getrlimit(__rlimit_resource_t res, struct rlimit *rl)
{
	return prlimit(0, res, NULL, rl);
}

XWAY_EXPORT int setrlimit64(__rlimit_resource_t res, const struct rlimit64 *rl)
{
	return prlimit64(0, res, rl, NULL);
}

XWAY_EXPORT int setrlimit(__rlimit_resource_t res, const struct rlimit *rl)
{
	return prlimit(0, res, rl, NULL);
}

XWAY_EXPORT int getdtablesize(void)
{
	struct rlimit64 rl;

	if (getrlimit64(RLIMIT_NOFILE, &rl) < 0)
		return 256;
	return rl.rlim_cur > INT32_MAX ? INT32_MAX : (int)rl.rlim_cur;
}

XWAY_EXPORT long sysconf(int name)
{
	if (name == _SC_OPEN_MAX) {
		struct rlimit64 rl;

		if (getrlimit64(RLIMIT_NOFILE, &rl) == 0)
			return rl.rlim_cur == RLIM64_INFINITY ? -1 : (long)rl.rlim_cur;
	}
	return __sysconf(name);
}
