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
 * dup2()/dup3() of a connection onto fd 0-2 without an exec replaces the
 * standard stream the same way (sockcall.c).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "lifecycle.h"

static void xway_stdio_arm(void);

static ssize_t xway_ck_read(void *cookie, char *buf, size_t len)
{
	xway_stdio_arm();
	/* read() here is the shim's own (the exported interposer). */
	return read((int)(intptr_t)cookie, buf, len);
}

/* The streams of ours now in stdin/stdout/stderr (compared, never
 * dereferenced: the application may have fclose()d them). */
static FILE *xway_std_ours[3];
static _Atomic int xway_std_flush_armed;

/* exit() flushes stdio in _IO_cleanup, after the destructors (_dl_fini),
 * so after the shim's exit teardown took the connection off the table:
 * a printf() not yet flushed would go out on TCP behind the channel's
 * EOF.  An atexit handler registered after main() started runs before
 * _dl_fini: it flushes every stream then. */
static void xway_stdio_flush(void)
{
	fflush(NULL);
}

/* Registered by a dup2 adoption (main() runs) or the first read or write
 * of a stream of ours; an exec'ed image adopts in the constructor, too
 * early: that handler would run after _dl_fini. */
static void xway_stdio_arm(void)
{
	/* relaxed: only "registered once" matters, nothing is published. */
	if (!atomic_load_explicit(&xway_std_flush_armed, memory_order_relaxed) &&
	    !atomic_exchange_explicit(&xway_std_flush_armed, 1, memory_order_relaxed))
		atexit(xway_stdio_flush);
}

/* Everything or an error, as glibc's fd-based write loop: a short count
 * makes the stream report an error. */
static ssize_t xway_ck_write(void *cookie, const char *buf, size_t len)
{
	size_t done = 0;

	xway_stdio_arm();
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

/* glibc's FILE flag bits for the buffering mode (libio.h; ABI). */
#define XWAY_IO_UNBUFFERED 0x0002
#define XWAY_IO_LINE_BUF   0x0200

/*
 * fd (0, 1 or 2) is an accelerated connection now: replace the matching
 * standard stream by a stream over the shim's read/write.  Called at
 * exec (before main) and by dup2/dup3 onto 0-2 (sockcall.c), where the
 * old stream may hold bytes: those written and not yet flushed move to
 * the new stream (glibc would have written them to the new file), in the
 * old stream's buffering mode.  A stdin holding read-ahead bytes of the
 * previous file keeps its stream (they must come first; shim/README.md).
 */
void xway_stdio_adopt(int fd)
{
	FILE **slot, *f, *old;

	switch (fd) {
	case 0: slot = &stdin; break;
	case 1: slot = &stdout; break;
	case 2: slot = &stderr; break;
	default: return;
	}
	old = *slot;
	if (old && old == xway_std_ours[fd])
		return;                 /* already through the shim */
	if (old)
		flockfile(old);
	if (fd == 0 && old && old->_IO_read_ptr < old->_IO_read_end) {
		funlockfile(old);
		XINFO("stdin holds bytes read ahead from its previous file: it "
		      "stays around the shim (fd 0 is accelerated)");
		return;
	}
	f = xway_ck_open(fd, fd == 0 ? "r" : "w");
	if (!f) {
		if (old)
			funlockfile(old);
		return;                 /* the stream stays glibc's */
	}
	if (fd == 2 || (old && (old->_flags & XWAY_IO_UNBUFFERED)))
		setvbuf(f, NULL, _IONBF, 0);
	else if (old && (old->_flags & XWAY_IO_LINE_BUF))
		setvbuf(f, NULL, _IOLBF, BUFSIZ);
	if (fd != 0 && old && old->_IO_write_ptr > old->_IO_write_base) {
		fwrite(old->_IO_write_base, 1,
		       (size_t)(old->_IO_write_ptr - old->_IO_write_base), f);
		old->_IO_write_ptr = old->_IO_write_base;
	}
	*slot = f;
	xway_std_ours[fd] = f;
	if (old)
		funlockfile(old);
	XDBG("%s goes through the shim (fd %d is accelerated)",
	     fd == 0 ? "stdin" : fd == 1 ? "stdout" : "stderr", fd);
}

/* dup2()/dup3() (sockcall.c) made fd 0-2 an accelerated connection. */
void xway_stdio_adopt_dup(int fd)
{
	xway_stdio_adopt(fd);
	xway_stdio_arm();
}
