// SPDX-License-Identifier: MIT
/*
 * The broker's timers (broker/timer.c) in a GLib main loop of their own:
 * order, not early (beyond the coarse clock's lag), repeat and removal
 * (also from inside a callback, its own timer or another), destroy
 * notifies, and no GLib timeout source left in the context (the point of
 * the module: none reads the clock per loop iteration).
 */
#include <criterion/criterion.h>

#include "../../../broker/xwayd.h"

struct rec {
	int order[16];
	gint64 at[16];
	int n;
};

static struct rec rec;
static gint64 t0;

struct shot {
	int tag;
	int repeats;         /* G_SOURCE_CONTINUE this many more times */
	guint kill;          /* a timer to remove when this one runs */
};

static gboolean fire(gpointer p)
{
	struct shot *s = p;

	if (rec.n < 16) {
		rec.order[rec.n] = s->tag;
		rec.at[rec.n] = g_get_monotonic_time() - t0;
		rec.n++;
	}
	if (s->kill)
		cr_assert(xwayd_timeout_remove(s->kill), "removing a pending timer failed");
	return s->repeats-- > 0 ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
}

static gboolean fire_remove_self(gpointer p)
{
	guint *id = p;

	rec.order[rec.n++] = 99;
	cr_assert(xwayd_timeout_remove(*id));
	cr_assert(!xwayd_timeout_remove(*id), "a second remove succeeded");
	return G_SOURCE_CONTINUE;
}

static void run_for(int ms)
{
	gint64 end = g_get_monotonic_time() + ms * 1000;

	while (g_get_monotonic_time() < end)
		g_main_context_iteration(NULL, FALSE), g_usleep(200);
}

static int freed;

static void count_free(gpointer p)
{
	(void)p;
	freed++;
}

Test(timer, order_never_early_repeat_and_remove)
{
	/* Check three timers fire in deadline order and not before their
	 * time (give or take the coarse clock's lag), a repeating one runs
	 * again after its interval, a removed one never runs, one removed by another's callback never runs, and one
	 * that removes itself runs once. */
	struct shot a = { .tag = 1 }, b = { .tag = 2, .repeats = 1 }, c = { .tag = 3 },
		    d = { .tag = 4 }, e = { .tag = 5 };
	guint self_id;

	memset(&rec, 0, sizeof(rec));
	t0 = g_get_monotonic_time();
	xwayd_timeout_add(60, fire, &c);
	xwayd_timeout_add(20, fire, &a);
	xwayd_timeout_add(40, fire, &b);           /* 40, then 80 */
	guint gone = xwayd_timeout_add(30, fire, &d);
	guint victim = xwayd_timeout_add(100, fire, &e);
	struct shot killer = { .tag = 6, .kill = victim };

	xwayd_timeout_add(50, fire, &killer);
	self_id = xwayd_timeout_add(10, fire_remove_self, &self_id);
	cr_assert(xwayd_timeout_remove(gone));
	cr_assert(!xwayd_timeout_remove(gone));
	cr_assert(!xwayd_timeout_remove(12345678));
	run_for(250);
	int want[] = { 99, 1, 2, 6, 3, 2 };
	gint64 due[] = { 10, 20, 40, 50, 60, 80 };

	cr_assert_eq(rec.n, 6, "%d timers ran", rec.n);
	for (int i = 0; i < 6; i++) {
		cr_assert_eq(rec.order[i], want[i], "run %d: timer %d, want %d", i,
			     rec.order[i], want[i]);
		/* Deadlines come from the coarse clock, which can lag the
		 * precise one by a tick or two after an idle spell. */
		cr_assert_geq(rec.at[i], due[i] * 1000 - 10000, "timer %d ran early: %lld us",
			      rec.order[i], (long long)rec.at[i]);
	}
	xwayd_timers_shutdown();
}

Test(timer, earlier_timer_rearms_and_shutdown_frees)
{
	/* Check that a timer added with an earlier deadline than the one
	 * armed runs first (the timerfd is re-armed), that no GLib timeout
	 * source is attached while timers wait (the loop's poll gets no
	 * timeout: -1), and that shutdown calls every destroy notify. */
	struct shot late = { .tag = 1 }, soon = { .tag = 2 };
	gint timeout = 0, max_prio;
	GPollFD fds[64];

	memset(&rec, 0, sizeof(rec));
	freed = 0;
	t0 = g_get_monotonic_time();
	xwayd_timeout_add_full(5000, fire, &late, count_free);
	xwayd_timeout_add_full(20, fire, &soon, count_free);
	xwayd_timeout_add_full(6000, fire, &late, count_free);
	GMainContext *ctx = g_main_context_default();

	cr_assert(g_main_context_acquire(ctx));
	g_main_context_prepare(ctx, &max_prio);
	gint n = g_main_context_query(ctx, max_prio, &timeout, fds, 64);

	cr_assert_eq(timeout, -1, "a GLib timeout source is attached (poll timeout %d)", timeout);
	g_main_context_check(ctx, max_prio, fds, MIN(n, 64));
	g_main_context_release(ctx);
	run_for(100);
	cr_assert_eq(rec.n, 1);
	cr_assert_eq(rec.order[0], 2);
	cr_assert_eq(freed, 1, "the timer that ran was not freed");
	xwayd_timers_shutdown();
	cr_assert_eq(freed, 3, "shutdown freed %d of 3", freed);
}
