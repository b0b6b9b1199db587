/* SPDX-License-Identifier: MIT */
/*
 * xwayd's logging: one line per event on stderr.  Under systemd
 * ($JOURNAL_STREAM set) each line starts with the "<N>" priority prefix
 * that journald's stream transport understands (sd-daemon(3)), so
 * priorities survive without linking libsystemd; by hand the prefix is a
 * readable level name instead.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "xwayd.h"

static int log_level = 6;
static int journal;

void xwayd_log_init(int level)
{
	log_level = level;
	journal = getenv("JOURNAL_STREAM") != NULL;
}

void xwayd_log(int prio, const char *fmt, ...)
{
	static const char *const names[8] = {
		"emerg", "alert", "crit", "error", "warning", "notice", "info", "debug",
	};
	char line[1024];
	va_list ap;

	if (prio > log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (journal)
		fprintf(stderr, "<%d>%s\n", prio & 7, line);
	else
		fprintf(stderr, "xwayd: %s: %s\n", names[prio & 7], line);
}
