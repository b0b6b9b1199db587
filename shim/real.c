/* SPDX-License-Identifier: MIT */
/*
 * Start-up of libxway.so: binds the table of real libc functions declared
 * in calls.def, reads the configuration once, and provides the guard that
 * sends every call straight to libc until both are done.  The table starts
 * out filled with an ENOSYS stub, so a call that arrives while binding is
 * in progress (re-entry from dlsym) never jumps through a NULL pointer.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/prctl.h>
#include <sys/stat.h>

#include "shim.h"
#include "lifecycle.h"

static long xway_enosys(void)
{
	errno = ENOSYS;
	return -1;
}

/* Casting through void (*)(void) keeps -Wcast-function-type quiet: the stub
 * is only ever used as "a function that fails"; x86-64 and aarch64 return
 * its -1 in the integer register every prototype here reads. */
#define XWAY_STUB(type) ((type)(void (*)(void))xway_enosys)

#define XWAY_CALL(ret, name, params, args) .name = XWAY_STUB(ret (*) params),
struct xway_real real = {
#include "calls.def"
};
#undef XWAY_CALL

_Thread_local int xway_depth;
struct xway_config xway_cfg = { .disabled = 1, .log_level = XWAY_LOG_WARN,
				.log_fd = -1 };

/* 0: nothing done, 1: a thread is binding or configuring, 2: bound and
 * configured, 3: bound, but the environment was not set up yet (a call
 * from a sanitizer runtime's or libc's early start-up: environ is NULL;
 * configured at a later call).  The release store of 2 or 3 orders every
 * write to `real` and `xway_cfg` before any thread that reads it with
 * acquire uses them. */
static _Atomic int xway_state;

static void *xway_lookup(const char *name)
{
	void *p = dlsym(RTLD_NEXT, name);

	if (!p)
		p = dlsym(RTLD_DEFAULT, name);
	return p;
}

extern char **environ;

static void xway_bind(void)
{
	void *p;

	/* Only XWAY_CALL entries could resolve to ourselves via RTLD_DEFAULT;
	 * RTLD_NEXT finds libc's first, and a symbol libc lacks (closefrom on
	 * an old glibc) is never exported by us while it is an XWAY_REAL. */
#define XWAY_CALL(ret, name, params, args) \
	p = xway_lookup(#name); \
	if (p) real.name = (ret (*) params)p;
#include "calls.def"
#undef XWAY_CALL
}

static void xway_configure(void)
{
	char err[256];

	err[0] = 0;
	(void)xway_config_parse(&xway_cfg, err, sizeof(err));
	if (xway_cfg.log_fd >= 0) {
		/* Out of the application's way (lowest free numbers). */
		int hi = xway_fd_to_high(xway_cfg.log_fd);
		if (hi >= 0)
			xway_cfg.log_fd = hi;
	}
	if (err[0]) {
		/* One line, straight to fd 2 (pr < 0: the app runs on plain
		 * TCP; else a warning, e.g. XWAY_LOG_FILE).  Not into a
		 * socket on fd 2 (inetd children): the peer would read it as
		 * data. */
		struct stat st;
		if (fstat(2, &st) == 0 && !S_ISSOCK(st.st_mode)) {
			size_t n = strlen(err);
			ssize_t w = real.write(2, err, n);
			(void)w;
		}
	}
}

void xway_real_init(void)
{
	int expect = 0;

	if (atomic_load_explicit(&xway_state, memory_order_acquire) == 2)
		return;
	if (atomic_compare_exchange_strong_explicit(&xway_state, &expect, 1,
						    memory_order_acq_rel,
						    memory_order_acquire)) {
		int done = environ != NULL;
		xway_depth++;
		xway_bind();
		if (done)
			xway_configure();
		xway_depth--;
		/* Table and config writes before the flag (see xway_state). */
		atomic_store_explicit(&xway_state, done ? 2 : 3, memory_order_release);
		return;
	}
	expect = 3;
	if (environ && atomic_compare_exchange_strong_explicit(&xway_state, &expect, 1,
							       memory_order_acq_rel,
							       memory_order_acquire)) {
		xway_depth++;
		xway_configure();
		xway_depth--;
		atomic_store_explicit(&xway_state, 2, memory_order_release);
		return;
	}
	if (expect == 3)
		return;            /* still too early: pass through */
	/* Another thread is binding: wait for it, bounded (dlsym of ~60
	 * names takes well under a millisecond; 10^6 yields is generous). */
	for (long i = 0; i < 1000000; i++) {
		if (atomic_load_explicit(&xway_state, memory_order_acquire) == 2)
			return;
		sched_yield();
	}
}

int xway_ready(void)
{
	if (__builtin_expect(xway_depth > 0, 0))
		return 0;
	if (__builtin_expect(atomic_load_explicit(&xway_state,
						  memory_order_acquire) != 2, 0)) {
		xway_real_init();
		return atomic_load_explicit(&xway_state, memory_order_acquire) == 2
		       && xway_depth == 0;
	}
	/* lifecycle.c: a child made by raw clone() (no atfork handler) is
	 * noticed at its first call into the shim; one load otherwise. */
	xway_lc_check();
	return 1;
}

/* Bind at load time, before main and before the application can start
 * threads; a call made by an earlier constructor binds on demand. */
__attribute__((constructor)) static void xway_ctor(void)
{
	xway_real_init();
}
