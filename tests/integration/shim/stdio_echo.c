/* SPDX-License-Identifier: MIT */
/*
 * An inetd-style service that talks only through stdio: each line read
 * with fgets comes back as "echo:<line>" with fprintf, then "bye N" at EOF.
 * Without arguments on stdin/stdout; with "fdopen" on streams it opens
 * itself with fdopen(0, "r") and fdopen(dup(1), "w"); with "dprintf" it
 * writes with dprintf(1, ...) (a temporary glibc stream on the fd).  stdio.sh execs it
 * with an accelerated connection as fds 0 and 1 (glibc's stdio does not
 * call the interposed read/write).
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	FILE *in = stdin, *out = stdout;
	char line[4096];
	long n = 0;
	int dp = argc > 1 && !strcmp(argv[1], "dprintf");

	if (argc > 1 && !strcmp(argv[1], "fdopen")) {
		int o = dup(1);

		in = fdopen(0, "r");
		out = o >= 0 ? fdopen(o, "w") : NULL;
		if (!in || !out || fileno(in) != 0 || fileno(out) != o)
			return 2;
	}
	while (fgets(line, sizeof(line), in) && n++ < 1000000) {
		if (dp ? dprintf(1, "echo:%s", line) < 0 :
			 fprintf(out, "echo:%s", line) < 0 || fflush(out) != 0)
			return 1;
	}
	if (dp)
		return dprintf(1, "bye %ld\n", n) < 0;
	fprintf(out, "bye %ld\n", n);
	return fclose(out) != 0;
}
