/* SPDX-License-Identifier: MIT */
/*
 * The one place where an internal result (a count, or -errno) becomes the
 * libc convention (-1 with errno set).  Every interposed entry point returns
 * through xway_ret(); nothing else in the shim writes errno.
 */
#ifndef XWAY_SHIM_ERRNO_H
#define XWAY_SHIM_ERRNO_H

#include <errno.h>

static inline long xway_ret(long r)
{
	if (r < 0) {
		errno = (int)-r;
		return -1;
	}
	return r;
}

/* The reverse, for results of real libc calls inside the shim: -errno on
 * failure.  Saves and restores errno so internal calls leave the
 * application's errno alone. */
#define XWAY_SYS(expr) ({ \
	int saved_ = errno; \
	long r_ = (long)(expr); \
	if (r_ < 0) \
		r_ = -errno; \
	errno = saved_; \
	r_; \
})

#endif /* XWAY_SHIM_ERRNO_H */
