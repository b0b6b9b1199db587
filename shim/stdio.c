/* SPDX-License-Identifier: MIT */
/*
 * stdio on an accelerated connection.
 *
 * glibc's stdio moves a FILE's bytes with its internal __read/__write, not
 * through the read()/write() symbols a preload library interposes, so a
 * FILE on an accelerated socket sends its bytes on plain TCP while the
 * peer reads the channel: the peer never sees them (it waits for a revert
 * that does not come).  An inetd-style service gets its connection as fds
 * 0 and 1 across an exec and talks through stdin/stdout: `git daemon`
 * execs `git upload-pack`, whose ref advertisement goes out with
 * fwrite(stdout) (a clone hung).  So when the exec hand-over re-attaches
 * a connection at fd 0, 1 or 2, before main() runs, the matching standard
 * stream is replaced by a stream whose reads and writes are the shim's
 * read()/write() on that fd (fopencookie), buffered as glibc buffers a
 * socket (stdin/stdout fully, stderr not), with fileno() still giving the
 * fd.  Programs read the `stdin`/`stdout`/`stderr` variables at every use,
 * so every later printf/fputs/fwrite/fgets uses the new stream.
 * fdopen() on an accelerated connection gets the same kind of stream, and
 * dprintf()/vdprintf() (a temporary glibc stream on the fd) format into
 * memory and write through the shim.
 * Limit: a standard stream onto which a process dup2()s a connection
 * without an exec still goes around the shim (shim/README.md).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "lifecycle.h"

static ssize_t xway_ck_read(void *cookie, char *buf, size_t len)
{
	/* read() here is the shim's own (the exported interposer). */
	return read((int)(intptr_t)cookie, buf, len);
}

/* Everything or an error, as glibc's fd-based write loop: a short count
 * makes the stream report an error. */
static ssize_t xway_ck_write(void *cookie, const char *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t r = write((int)(intptr_t)cookie, buf + done, len - done);

		if (r <= 0)
			return done ? (ssize_t)done : -1;
		done += (size_t)r;
	}
	return (ssize_t)done;
}

static int xway_ck_close(void *cookie)
{
	return close((int)(intptr_t)cookie);
}

static const cookie_io_functions_t xway_ck_fns = {
	.read = xway_ck_read,
	.write = xway_ck_write,
	.seek = NULL,           /* a socket: ESPIPE, as lseek says */
	.close = xway_ck_close,
};

/* A stream over the shim's read/write on fd; fileno() gives fd (glibc
 * marks cookie streams -2, "no file"), so fileno/isatty/fstat work. */
static FILE *xway_ck_open(int fd, const char *mode)
{
	FILE *f = fopencookie((void *)(intptr_t)fd, mode, xway_ck_fns);

	if (f)
		f->_fileno = fd;
	return f;
}

XWAY_EXPORT FILE *fdopen(int fd, const char *mode)
{
	struct xway_conn *c = xway_ready() && fd >= 0 ? xway_fd_get(fd) : NULL;
	int st;

	if (!c)
		return real.fdopen(fd, mode);
	st = atomic_load_explicit(&c->state, memory_order_acquire);
	xway_conn_put(c);
	if (st == XWAY_ST_LISTENER || !mode)
		return real.fdopen(fd, mode);
	return xway_ck_open(fd, mode);
}

extern int __vasprintf_chk(char **out, int flag, const char *fmt, va_list ap);

/* flag < 0: vdprintf; else the fortify level of __vdprintf_chk (glibc's
 * checking formatter then applies the same %n rules). */
static int xway_vdprintf(int fd, int flag, const char *fmt, va_list ap)
{
	struct xway_conn *c = xway_ready() && fd >= 0 ? xway_fd_get(fd) : NULL;
	char *buf = NULL;
	int n;

	if (!c)
		return flag < 0 ? real.vdprintf(fd, fmt, ap)
				: real.__vdprintf_chk(fd, flag, fmt, ap);
	xway_conn_put(c);
	n = flag < 0 ? vasprintf(&buf, fmt, ap) : __vasprintf_chk(&buf, flag, fmt, ap);
	if (n < 0)
		return -1;
	if (n > 0 && xway_ck_write((void *)(intptr_t)fd, buf, (size_t)n) != n)
		n = -1;
	free(buf);
	return n;
}

XWAY_EXPORT int vdprintf(int fd, const char *fmt, va_list ap)
{
	return xway_vdprintf(fd, -1, fmt, ap);
}

XWAY_EXPORT int __vdprintf_chk(int fd, int flag, const char *fmt, va_list ap)
{
	return xway_vdprintf(fd, flag < 0 ? 0 : flag, fmt, ap);
}

XWAY_EXPORT int dprintf(int fd, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = xway_vdprintf(fd, -1, fmt, ap);
	va_end(ap);
	return n;
}

XWAY_EXPORT int __dprintf_chk(int fd, int flag, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = xway_vdprintf(fd, flag < 0 ? 0 : flag, fmt, ap);
	va_end(ap);
	return n;
}

void xway_stdio_adopt(int fd)
{
	FILE **slot, *f;

	switch (fd) {
	case 0: slot = &stdin; break;
	case 1: slot = &stdout; break;
	case 2: slot = &stderr; break;
	default: return;
	}
	f = xway_ck_open(fd, fd == 0 ? "r" : "w");
	if (!f)
		return;                 /* the stream stays glibc's */
	if (fd == 2)
		setvbuf(f, NULL, _IONBF, 0);
	*slot = f;
	XDBG("exec: %s goes through the shim (fd %d is accelerated)",
	     fd == 0 ? "stdin" : fd == 1 ? "stdout" : "stderr", fd);
}
