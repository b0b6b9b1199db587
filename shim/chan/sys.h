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

static inline long xw_raw_syscall6(long n, long a, long b, long c, long d, long e, long f)
{
#if defined(__x86_64__)
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	long ret;

	__asm__ __volatile__("syscall"
			     : "=a"(ret)
			     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			     : "rcx", "r11", "memory");
	return ret;
#elif defined(__aarch64__)
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	register long x4 __asm__("x4") = e;
	register long x5 __asm__("x5") = f;

	__asm__ __volatile__("svc 0"
			     : "+r"(x0)
			     : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
			     : "memory");
	return x0;
#else
	int saved = errno;
	long r = syscall(n, a, b, c, d, e, f);

	if (r < 0)
		r = -errno;
	errno = saved;
	return r;
#endif
}

static inline long xw_raw_syscall(long n, long a, long b, long c, long d, long e)
{
	return xw_raw_syscall6(n, a, b, c, d, e, 0);
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


/*
 * ppoll fails with EINVAL when nfds exceeds RLIMIT_NOFILE, and sandboxing
 * daemons lower it to 0 or 1 (vsftpd's pre-login process, sshd's preauth
 * child: "500 OOPS: vsf_sysutil_recv_peek" across Xen, where the first
 * command arrives after the wait began).  pselect6 has no such check (it
 * is bounded by the descriptor table), so the same wait is made with it:
 * bitmaps of our own size (our descriptors live above FD_SETSIZE).
 */
#define XW_SELECT_MAX_FD 8192
static inline long xw_sys_pselect_poll(struct pollfd *p, unsigned n,
				       const struct timespec *ts, const sigset_t *mask)
{
	unsigned long bits[3][XW_SELECT_MAX_FD / (8 * sizeof(unsigned long))];
	const unsigned per = 8 * sizeof(unsigned long);
	struct { const sigset_t *ss; size_t len; } sig = { mask, _NSIG / 8 };
	struct timespec t, *tp = NULL;
	int maxfd = -1;
	long r;

	for (unsigned i = 0; i < n; i++)
		if (p[i].fd > maxfd)
			maxfd = p[i].fd;
	if (maxfd < 0 || (unsigned)maxfd >= sizeof(bits[0]) * 8)
		return -EINVAL;
	size_t words = (size_t)maxfd / per + 1;
	for (int k = 0; k < 3; k++)
		for (size_t w = 0; w < words; w++)
			bits[k][w] = 0;
	for (unsigned i = 0; i < n; i++) {
		int fd = p[i].fd;

		p[i].revents = 0;
		if (fd < 0)
			continue;
		if (p[i].events & (POLLIN | POLLRDHUP))
			bits[0][fd / per] |= 1ul << (fd % per);
		if (p[i].events & POLLOUT)
			bits[1][fd / per] |= 1ul << (fd % per);
		if (p[i].events & POLLPRI)
			bits[2][fd / per] |= 1ul << (fd % per);
	}
	if (ts) {
		t = *ts;              /* the kernel writes the time left */
		tp = &t;
	}
	r = xw_raw_syscall6(SYS_pselect6, maxfd + 1, (long)bits[0], (long)bits[1],
			    (long)bits[2], (long)tp, mask ? (long)&sig : 0);
	if (r <= 0)
		return r;
	r = 0;
	for (unsigned i = 0; i < n; i++) {
		int fd = p[i].fd;

		if (fd < 0)
			continue;
		if (bits[0][fd / per] & (1ul << (fd % per)))
			p[i].revents |= (short)(p[i].events & POLLIN ? POLLIN : POLLRDHUP);
		if (bits[1][fd / per] & (1ul << (fd % per)))
			p[i].revents |= POLLOUT;
		if (bits[2][fd / per] & (1ul << (fd % per)))
			p[i].revents |= POLLPRI;
		if (p[i].revents)
			r++;
	}
	return r;
}

/* No signal mask change (NULL): signals interrupt us with -EINTR. */
static inline long xw_sys_ppoll(struct pollfd *p, unsigned n,
				const struct timespec *ts)
{
	long r = xw_raw_syscall(SYS_ppoll, (long)p, (long)n, (long)ts, 0,
				(long)(_NSIG / 8));

	return r == -EINVAL && n ? xw_sys_pselect_poll(p, n, ts, NULL) : r;
}

/* ppoll with a signal mask for the sleep (the kernel's 8-byte sigset). */
static inline long xw_sys_ppoll_mask(struct pollfd *p, unsigned n,
				     const struct timespec *ts, const sigset_t *mask)
{
	long r = xw_raw_syscall(SYS_ppoll, (long)p, (long)n, (long)ts, (long)mask,
				(long)(_NSIG / 8));

	return r == -EINVAL && n ? xw_sys_pselect_poll(p, n, ts, mask) : r;
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
