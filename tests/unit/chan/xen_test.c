// SPDX-License-Identifier: MIT
/*
 * The Xen backend on a host without Xen: availability says why not, and
 * set-up fails with -ENOSYS instead of crashing.  (The real Xen transfer
 * runs in the Xen test bed with tools/bench/xway-vchan-test.)
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "xway/chan.h"

static char last_line[256];

static void sink(const char *line)
{
	strncpy(last_line, line, sizeof(last_line) - 1);
}

/* Check that without /dev/xen the backend is unavailable with a reason,
 * and server/client init give -ENOSYS plus a log line. */
Test(xen, unavailable_clear_failure)
{
	struct xway_chan *c = NULL;
	const char *why = NULL;

	if (access("/dev/xen/evtchn", F_OK) == 0)
		cr_skip_test("this host has /dev/xen/evtchn: run the Xen test bed");
	xway_chan_set_logger(sink);
	cr_assert_eq(xway_chan_xen_available(&why), 0);
	cr_assert_not_null(why);
	cr_assert(strstr(why, "/dev/xen"), "why: %s", why);
	cr_assert_eq(xway_chan_xen_server(1, "/local/domain/0/data/x", NULL, &c),
		     -ENOSYS);
	cr_assert_null(c);
	cr_assert(strstr(last_line, "xen backend unavailable"), "log: %s", last_line);
	cr_assert_eq(xway_chan_xen_client(0, "/local/domain/1/data/x", NULL, &c),
		     -ENOSYS);
	xway_chan_set_logger(NULL);
}

/* Check that bad arguments are refused before anything else. */
Test(xen, bad_args)
{
	struct xway_chan *c;

	cr_assert_eq(xway_chan_xen_server(1, "", NULL, &c), -EINVAL);
	cr_assert_eq(xway_chan_xen_client(-1, "/x", NULL, &c), -EINVAL);
	cr_assert_eq(xway_chan_xen_client(1, NULL, NULL, &c), -EINVAL);
}
