/* SPDX-License-Identifier: MIT */
/*
 * Logging of the shim's decisions (connect/accept outcome with its reason,
 * fallbacks, teardown counters).  Off below the configured level; never on
 * the pass-through path.  One formatted line per write(2), so concurrent
 * processes' lines do not interleave.  A process whose RLIMIT_FSIZE would
 * kill it for writing a regular file (sshd's pre-auth sandbox sets 0) gets
 * no log line at all rather than SIGXFSZ.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lifecycle.h"
#include "shim.h"

const char *xway_reason_name(unsigned reason)
{
	return xway_reason_str(reason);
}

/* Writing to fd would raise SIGXFSZ (a regular file and a file-size limit
 * that leaves no room), or would put our line into the application's data:
 * daemons such as vsftpd and inetd's children have the connection itself
 * on fd 0-2, so stderr may be a socket. */
static int xway_log_forbidden(int fd)
{
	struct stat st;
	struct rlimit rl;

	if (fstat(fd, &st) < 0)
		return 1;
	if (S_ISSOCK(st.st_mode))
		return 1;
	if (!S_ISREG(st.st_mode))
		return 0;
	if (getrlimit(RLIMIT_FSIZE, &rl) < 0)
		return 1;
	return rl.rlim_cur != RLIM_INFINITY &&
	       (rl.rlim_cur == 0 || (rlim_t)st.st_size + 512 > rl.rlim_cur);
}

void xway_log(int level, const char *fmt, ...)
{
	static const char *const lv[] = { "error", "warn", "info", "debug" };
	int saved = errno;
	char line[512];
	int fd = xway_cfg.log_fd >= 0 ? xway_cfg.log_fd : 2;
	va_list ap;
	int n;

	xway_depth++;
	n = snprintf(line, sizeof(line), "xway[%d] %s: ", (int)xway_pid(),
		     lv[level < 0 ? 0 : level > 3 ? 3 : level]);
	va_start(ap, fmt);
	if (n > 0 && (size_t)n < sizeof(line))
		n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	if (n > 0 && !xway_log_forbidden(fd)) {
		line[n++] = '\n';
		ssize_t w = real.write(fd, line, (size_t)n);
		(void)w;
	}
	xway_depth--;
	errno = saved;
}
