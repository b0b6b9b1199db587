/* SPDX-License-Identifier: MIT */
/*
 * Raw system calls for the channel's own descriptors.  Inside libxway.so the
 * libc names close/read/write/fcntl/ppoll - and syscall() itself - resolve
 * to the shim's interposed versions (which guard the shim's own fds and
 * watch for raw clone()); the channel's fds must never depend on that, so
 * on x86-64 and aarch64 the channel enters the kernel directly (inline
 * syscall instruction), elsewhere through libc's syscall().  All return
 * the result or -errno, and never touch errno.
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

static inline long xw_raw_syscall(long n, long a, long b, long c, long d, long e)
{
#if defined(__x86_64__)
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	long ret;

	__asm__ __volatile__("syscall"
			     : "=a"(ret)
			     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8)
			     : "rcx", "r11", "memory");
	return ret;
#elif defined(__aarch64__)
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	register long x4 __asm__("x4") = e;

	__asm__ __volatile__("svc 0"
			     : "+r"(x0)
			     : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4)
			     : "memory");
	return x0;
#else
	int saved = errno;
	long r = syscall(n, a, b, c, d, e);

	if (r < 0)
		r = -errno;
	errno = saved;
	return r;
#endif
}

static inline long xw_sys_close(int fd)
{
	return xw_raw_syscall(SYS_close, fd, 0, 0, 0, 0);
}

static inline long xw_sys_read(int fd, void *buf, size_t n)
{
	return xw_raw_syscall(SYS_read, fd, (long)buf, (long)n, 0, 0);
}

static inline long xw_sys_write(int fd, const void *buf, size_t n)
{
	return xw_raw_syscall(SYS_write, fd, (long)buf, (long)n, 0, 0);
}

static inline long xw_sys_fcntl(int fd, int cmd, long arg)
{
	return xw_raw_syscall(SYS_fcntl, fd, cmd, arg, 0, 0);
}

/* No signal mask change (NULL): signals interrupt us with -EINTR. */
static inline long xw_sys_ppoll(struct pollfd *p, unsigned n,
				const struct timespec *ts)
{
	return xw_raw_syscall(SYS_ppoll, (long)p, (long)n, (long)ts, 0,
			      (long)(_NSIG / 8));
}

/* ppoll with a signal mask for the sleep (the kernel's 8-byte sigset). */
static inline long xw_sys_ppoll_mask(struct pollfd *p, unsigned n,
				     const struct timespec *ts, const sigset_t *mask)
{
	return xw_raw_syscall(SYS_ppoll, (long)p, (long)n, (long)ts, (long)mask,
			      (long)(_NSIG / 8));
}

static inline long xw_sys_sigmask(int how, const sigset_t *set, sigset_t *old)
{
	return xw_raw_syscall(SYS_rt_sigprocmask, how, (long)set, (long)old,
			      (long)(_NSIG / 8), 0);
}

/* Hint word values (ring ctl `spinning`): AWAKE bit + last cpu + 1. */
#define XW_HINT_AWAKE 0x80000000u
#define XW_HINT_CPU   0x0000ffffu

#endif /* XWAY_CHAN_SYS_H */
