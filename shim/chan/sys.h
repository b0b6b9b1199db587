/* SPDX-License-Identifier: MIT */
/*
 * Raw system calls for the channel's own descriptors.  Inside libxway.so
 * the libc names close/read/write/fcntl/ppoll resolve to the shim's own
 * interposed versions; the channel's fds must never depend on that (the
 * shim protects its own fds from the application's close), so the channel
 * layer talks to the kernel directly.  All return -errno on failure.
 */
#ifndef XWAY_CHAN_SYS_H
#define XWAY_CHAN_SYS_H

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static inline long xw_sys_ret(long r)
{
	return r < 0 ? -errno : r;
}

static inline long xw_sys_close(int fd)
{
	return xw_sys_ret(syscall(SYS_close, fd));
}

static inline long xw_sys_read(int fd, void *buf, size_t n)
{
	return xw_sys_ret(syscall(SYS_read, fd, buf, n));
}

static inline long xw_sys_write(int fd, const void *buf, size_t n)
{
	return xw_sys_ret(syscall(SYS_write, fd, buf, n));
}

static inline long xw_sys_fcntl(int fd, int cmd, long arg)
{
	long r = syscall(SYS_fcntl, fd, cmd, arg);

	/* Keep errno for the set-up callers that read it. */
	return r;
}

/* No signal mask change (NULL): signals interrupt us with -EINTR. */
static inline long xw_sys_ppoll(struct pollfd *p, unsigned n,
				const struct timespec *ts)
{
	return xw_sys_ret(syscall(SYS_ppoll, p, (unsigned long)n, ts, NULL,
				  (size_t)(_NSIG / 8)));
}

/* Hint word values (ring ctl `spinning`): AWAKE bit + last cpu + 1. */
#define XW_HINT_AWAKE 0x80000000u
#define XW_HINT_CPU   0x0000ffffu

#endif /* XWAY_CHAN_SYS_H */
