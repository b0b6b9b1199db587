/* SPDX-License-Identifier: MIT */
/*
 * An inetd-style service that talks only through stdio: each line read
 * with fgets(stdin) comes back as "echo:<line>" with printf(stdout), then
 * "bye" at EOF.  stdio.sh execs it with an accelerated connection as fds
 * 0 and 1 (glibc's stdio does not call the interposed read/write).
 */
#include <stdio.h>

int main(void)
{
	char line[4096];
	long n = 0;

	while (fgets(line, sizeof(line), stdin) && n++ < 1000000) {
		if (printf("echo:%s", line) < 0 || fflush(stdout) != 0)
			return 1;
	}
	printf("bye %ld\n", n);
	return fflush(stdout) != 0;
}
