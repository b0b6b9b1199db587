/* SPDX-License-Identifier: MIT */
/*
 * Which signal interrupted a blocking channel wait, and would the kernel
 * have restarted the call?  The channel's wait sleeps in ppoll, which
 * always fails with EINTR; kernel TCP's recv/send restart under
 * SA_RESTART unless a socket timeout is set.  So sigaction() is
 * interposed: a handler the application installs is wrapped by one that
 * records the signal number in a thread-local variable and then calls the
 * application's handler with the same arguments.  The flags the kernel
 * sees (SA_RESTART, SA_NODEFER, SA_RESETHAND, SA_ONSTACK, the mask) are the
 * application's; only SA_SIGINFO is forced so the wrapper can pass siginfo
 * on.  Handlers installed by libc's signal() (which does not go through
 * our symbol) are not wrapped; signal() always sets SA_RESTART, so "no
 * signal recorded" means "restart".
 */
#include <errno.h>
#include <signal.h>
#include <string.h>

#include "errno.h"
#include "shim.h"

#define XWAY_EXPORT __attribute__((visibility("default")))

_Thread_local int xway_last_sig;

/* The application's handler per signal (as it gave it).  Written under
 * the sigaction call; read by the wrapper in signal context (a racing
 * sigaction in another thread may show the old or the new handler, as
 * with the kernel's own table). */
static struct sigaction xway_app_act[NSIG];
static _Atomic int xway_app_set[NSIG];

static void xway_sig_wrapper(int sig, siginfo_t *si, void *uc)
{
	struct sigaction *a;

	if (sig <= 0 || sig >= NSIG)
		return;
	xway_last_sig = sig;
	a = &xway_app_act[sig];
	if (a->sa_flags & SA_SIGINFO) {
		if (a->sa_sigaction)
			a->sa_sigaction(sig, si, uc);
	} else if (a->sa_handler != SIG_DFL && a->sa_handler != SIG_IGN && a->sa_handler) {
		a->sa_handler(sig);
	}
}

static int xway_is_wrapped(const struct sigaction *k)
{
	return (k->sa_flags & SA_SIGINFO) && k->sa_sigaction == xway_sig_wrapper;
}

XWAY_EXPORT int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
	struct sigaction k, prev;
	int r;

	if (!xway_ready() || sig <= 0 || sig >= NSIG || sig == SIGKILL || sig == SIGSTOP)
		return real.sigaction(sig, act, old);
	if (!act) {
		r = real.sigaction(sig, NULL, &prev);
		if (r == 0 && old)
			*old = xway_is_wrapped(&prev) ? xway_app_act[sig] : prev;
		return r;
	}
	if (act->sa_handler == SIG_DFL || act->sa_handler == SIG_IGN) {
		r = real.sigaction(sig, act, &prev);
	} else {
		k = *act;
		k.sa_flags |= SA_SIGINFO;
		k.sa_sigaction = xway_sig_wrapper;
		/* The wrapper must see the new handler before the kernel can
		 * deliver to it: store first, then install. */
		struct sigaction save = xway_app_act[sig];
		xway_app_act[sig] = *act;
		atomic_store_explicit(&xway_app_set[sig], 1, memory_order_release);
		r = real.sigaction(sig, &k, &prev);
		if (r < 0)
			xway_app_act[sig] = save;
	}
	if (r == 0 && old)
		*old = xway_is_wrapped(&prev) ? xway_app_act[sig] : prev;
	return r;
}

/*
 * After a channel wait returned -EINTR (xway_last_sig was cleared before
 * the wait): restart as the kernel would?  No, with a socket timeout set;
 * else yes iff the interrupting handler has SA_RESTART.
 */
int xway_sig_restarts(int timeo_ms)
{
	int sig = xway_last_sig;

	if (timeo_ms > 0)
		return 0;
	if (sig <= 0 || sig >= NSIG)
		return 1;          /* not one of ours: signal()-style, SA_RESTART */
	return (xway_app_act[sig].sa_flags & SA_RESTART) != 0;
}
