/* SPDX-License-Identifier: MIT */
/*
 * The broker's timers: one timerfd for all of them, instead of a GLib
 * timeout source each.
 *
 * Why: while any GLib source has a ready time (every timeout source has),
 * the main loop reads CLOCK_MONOTONIC twice per iteration, and each timeout
 * added reads it once more.  Where the clock has no vDSO path (the Xen PV
 * domains: there clock_gettime is a system call, ~55 us under the test
 * bed's emulation) that was ~20 system calls per connection in each
 * broker, a tenth of a set-up's.  Here: adding a timer reads the coarse
 * clock (served by the vDSO from the kernel's tick, with no clock source
 * access), the timerfd is re-armed only when the earliest deadline moves
 * earlier or after it fired, and the precise clock is read only when it
 * fires.  Deadlines are rounded up by the coarse clock's resolution, but
 * that clock can lag the precise one by a tick or two after an idle spell,
 * so a timer may fire that much early, and about a tick late: every broker
 * timer is a give-up timeout or housekeeping, where that does not matter
 * (a claim that comes after the claim timeout is refused by its own check,
 * conn.c, not by this timer).
 *
 * Same contract as g_timeout_add: the callback returns G_SOURCE_CONTINUE
 * to run again after the same interval; xwayd_timeout_remove from inside
 * a callback (its own timer or another) is allowed.  Main-loop thread only.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "xwayd.h"

struct xw_timer {
	guint id;
	guint ms;
	gint64 deadline_us;
	GSourceFunc fn;
	gpointer data;
	GDestroyNotify notify;
	GSequenceIter *it;         /* NULL while its callback runs */
	bool removed;              /* removed while its callback ran */
};

static struct {
	GHashTable *ids;           /* guint id -> struct xw_timer */
	GSequence *order;          /* by deadline, then id */
	int tfd;
	guint watch;               /* the timerfd's source, or the fallback timeout */
	bool fallback;             /* no timerfd: a GLib timeout stands in */
	gint64 armed_us;           /* deadline the timerfd is set for, or 0 */
	gint64 res_us;             /* coarse clock resolution */
	guint next_id;
} tm = { .tfd = -1 };

static gint cmp_deadline(gconstpointer a, gconstpointer b, gpointer unused)
{
	const struct xw_timer *x = a, *y = b;

	(void)unused;
	if (x->deadline_us != y->deadline_us)
		return x->deadline_us < y->deadline_us ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

static void timer_free(struct xw_timer *t)
{
	if (t->notify)
		t->notify(t->data);
	g_free(t);
}

static gboolean on_fire(gint fd, GIOCondition cond, gpointer unused);
static gboolean on_fallback(gpointer unused);

/* Set the timerfd for the earliest deadline, if it is not set for it. */
static void arm(void)
{
	GSequenceIter *first = g_sequence_get_begin_iter(tm.order);
	struct xw_timer *t;

	if (g_sequence_iter_is_end(first))
		return;            /* a stale setting only costs a spurious wake */
	t = g_sequence_get(first);
	if (tm.armed_us == t->deadline_us)
		return;
	tm.armed_us = t->deadline_us;
	if (tm.fallback) {
		gint64 now = g_get_monotonic_time();
		gint64 ms = t->deadline_us > now ? (t->deadline_us - now + 999) / 1000 : 0;

		if (tm.watch)
			g_source_remove(tm.watch);
		tm.watch = g_timeout_add((guint)MIN(ms, (gint64)G_MAXUINT), on_fallback, NULL);
		return;
	}
	struct itimerspec its = {
		.it_value = { .tv_sec = t->deadline_us / 1000000,
			      .tv_nsec = (long)(t->deadline_us % 1000000) * 1000 },
	};

	if (timerfd_settime(tm.tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0)
		XLOG_WARN("timerfd_settime: %s", g_strerror(errno));
}

static void run_due(void)
{
	gint64 now = g_get_monotonic_time();

	tm.armed_us = 0;
	for (;;) {
		GSequenceIter *first = g_sequence_get_begin_iter(tm.order);
		struct xw_timer *t;
		gboolean again;

		if (g_sequence_iter_is_end(first))
			break;
		t = g_sequence_get(first);
		if (t->deadline_us > now)
			break;
		g_sequence_remove(first);
		t->it = NULL;
		again = t->fn(t->data);
		if (again && !t->removed) {
			t->deadline_us = now + (gint64)t->ms * 1000 + tm.res_us;
			t->it = g_sequence_insert_sorted(tm.order, t, cmp_deadline, NULL);
		} else {
			g_hash_table_remove(tm.ids, &t->id);
			timer_free(t);
		}
	}
	arm();
}

static gboolean on_fire(gint fd, GIOCondition cond, gpointer unused)
{
	uint64_t n;

	(void)cond;
	(void)unused;
	if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		XLOG_WARN("timerfd read: %s", g_strerror(errno));
	run_due();
	return G_SOURCE_CONTINUE;
}

static gboolean on_fallback(gpointer unused)
{
	(void)unused;
	tm.watch = 0;
	run_due();
	return G_SOURCE_REMOVE;
}

static void init(void)
{
	struct timespec res;

	tm.ids = g_hash_table_new(g_int_hash, g_int_equal);
	tm.order = g_sequence_new(NULL);
	tm.res_us = clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0
			    ? (gint64)res.tv_sec * 1000000 + (res.tv_nsec + 999) / 1000 : 10000;
	tm.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (tm.tfd < 0) {
		XLOG_WARN("timerfd_create: %s; timers use GLib timeouts", g_strerror(errno));
		tm.fallback = true;
		return;
	}
	tm.watch = xwayd_fd_watch(tm.tfd, G_IO_IN, on_fire, NULL);
}

guint xwayd_timeout_add_full(guint ms, GSourceFunc fn, gpointer data, GDestroyNotify notify)
{
	struct xw_timer *t = g_new0(struct xw_timer, 1);

	if (!tm.order)
		init();
	do {
		t->id = ++tm.next_id;
	} while (t->id == 0 || g_hash_table_contains(tm.ids, &t->id));
	t->ms = ms;
	t->fn = fn;
	t->data = data;
	t->notify = notify;
	t->deadline_us = xwayd_mono_us() + (gint64)ms * 1000 + tm.res_us;
	t->it = g_sequence_insert_sorted(tm.order, t, cmp_deadline, NULL);
	g_hash_table_insert(tm.ids, &t->id, t);
	if (tm.armed_us == 0 || t->deadline_us < tm.armed_us)
		arm();
	return t->id;
}

guint xwayd_timeout_add(guint ms, GSourceFunc fn, gpointer data)
{
	return xwayd_timeout_add_full(ms, fn, data, NULL);
}

gboolean xwayd_timeout_remove(guint id)
{
	struct xw_timer *t = tm.ids ? g_hash_table_lookup(tm.ids, &id) : NULL;

	if (!t || t->removed)
		return FALSE;
	if (!t->it) {
		t->removed = true;         /* its callback runs: freed after it */
		return TRUE;
	}
	g_sequence_remove(t->it);
	g_hash_table_remove(tm.ids, &t->id);
	timer_free(t);
	return TRUE;
}

/* At exit: every timer goes (with its destroy notify), then the timerfd. */
void xwayd_timers_shutdown(void)
{
	if (!tm.order)
		return;
	while (!g_sequence_is_empty(tm.order)) {
		GSequenceIter *first = g_sequence_get_begin_iter(tm.order);
		struct xw_timer *t = g_sequence_get(first);

		g_sequence_remove(first);
		g_hash_table_remove(tm.ids, &t->id);
		timer_free(t);
	}
	if (tm.watch)
		g_source_remove(tm.watch);
	if (tm.tfd >= 0)
		close(tm.tfd);
	g_sequence_free(tm.order);
	g_hash_table_destroy(tm.ids);
	memset(&tm, 0, sizeof(tm));
	tm.tfd = -1;
}
