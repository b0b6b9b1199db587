/* SPDX-License-Identifier: MIT */
/*
 * The main loop's helpers, apart from the daemon so that tests can link
 * them (timer.c's): descriptor watches and the broker's clocks.
 */
#include <glib-unix.h>
#include <time.h>

#include "xwayd.h"

/*
 * The broker's clocks for records and per-connection statistics: the
 * coarse ones, which the vDSO serves from the kernel's tick even where the
 * clock source has no vDSO path (Xen PV domains: there every precise read
 * is a system call, ~55 us under the test bed's emulation, and a set-up
 * made about six).  Resolution one tick, and a tick or two behind after
 * an idle spell: for statistics (approximate averages) and give-up
 * timeouts, never for a decision that must not come early (conn.c's
 * late-claim check reads the precise clock).
 */
double xwayd_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME_COARSE, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

gint64 xwayd_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (gint64)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/*
 * g_unix_fd_add, with the source marked recursion-safe.  GLib takes a
 * source's descriptors out of its poll set around every dispatch of a
 * source that may not recurse and puts them back after, and each of the
 * two signals the context's wake-up eventfd: two writes, a read and an
 * extra loop iteration (with its clock reads) for every request a client
 * sends.  No callback of ours iterates the main context, so there is no
 * recursion to guard against.
 */
guint xwayd_fd_watch(int fd, GIOCondition cond, GUnixFDSourceFunc fn, gpointer data)
{
	GSource *s = g_unix_fd_source_new(fd, cond);
	guint id;

	g_source_set_callback(s, (GSourceFunc)(void (*)(void))fn, data, NULL);
	g_source_set_can_recurse(s, TRUE);
	id = g_source_attach(s, NULL);
	g_source_unref(s);
	return id;
}
