/* SPDX-License-Identifier: MIT */
/*
 * xwayctl: look at the xway broker.  A table of subcommands, one file each
 * (wireguard-tools wg.c style); every one takes --json and --socket PATH
 * ($XWAY_BROKER_SOCK, else the default socket).  The broker formats the
 * text; xwayctl carries it.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xway/proto.h>

#include "xwayctl.h"

const char *prog = "xwayctl";

static const struct {
	const char *name;
	int (*main)(int argc, char **argv);
	const char *help;
} subcommands[] = {
	{ "status", status_main, "the broker's state: version, mode, counts" },
	{ "peers", peers_main, "processes (and, in Xen mode, domains) using the broker" },
	{ "listeners", listeners_main, "listening sockets registered for acceleration" },
	{ "connections", connections_main, "accelerated, pending, closed and fallen-back connections" },
	{ "stats", stats_main, "counters, fallbacks by reason" },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: %s [--json] [--socket PATH] <command> [--json] [--socket PATH]\n\ncommands:\n", prog);
	for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++)
		fprintf(f, "  %-12s %s\n", subcommands[i].name, subcommands[i].help);
	fprintf(f, "\nexit status: 0 ok, 1 broker unreachable, 2 usage, 3 protocol error\n");
}

int xwayctl_query_main(int argc, char **argv, uint32_t what, const char *help)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "socket", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *sock = getenv("XWAY_BROKER_SOCK");
	bool json = false;
	int o;

	if (!sock || !*sock)
		sock = XWAY_BROKER_SOCK_DEFAULT;
	optind = 1;
	while ((o = getopt_long(argc, argv, "js:h", opts, NULL)) != -1) {
		switch (o) {
		case 'j': json = true; break;
		case 's': sock = optarg; break;
		case 'h':
			printf("usage: %s %s [--json] [--socket PATH]\n  %s\n", prog, argv[0], help);
			return XWAYCTL_OK;
		default:
			fprintf(stderr, "usage: %s %s [--json] [--socket PATH]\n", prog, argv[0]);
			return XWAYCTL_USAGE;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "%s %s: unexpected argument '%s'\n", prog, argv[0], argv[optind]);
		return XWAYCTL_USAGE;
	}
	return xwayctl_query(sock, what, json);
}

/*
 * Global options may also come before the command (`xwayctl --socket S
 * connections --json`, as `ip`/`ss` users type it): move them after the
 * command name so the subcommand's own parser sees them.
 */
static int hoist_options(int argc, char **argv, char **out)
{
	int n = 0, i = 1;

	while (i < argc && argv[i][0] == '-' && strcmp(argv[i], "-h") && strcmp(argv[i], "--help")) {
		int takes_arg = !strcmp(argv[i], "--socket") || !strcmp(argv[i], "-s");
		if (takes_arg && i + 1 >= argc)
			break;  /* let the subcommand parser report it */
		i += takes_arg ? 2 : 1;
	}
	if (i >= argc)
		return 0;
	out[n++] = argv[i];             /* the command */
	for (int j = 1; j < i; j++)
		out[n++] = argv[j];     /* its hoisted options */
	for (int j = i + 1; j < argc; j++)
		out[n++] = argv[j];
	out[n] = NULL;
	return n;
}

int main(int argc, char **argv)
{
	char *args[argc + 1];
	int nargs;

	if (argc < 2) {
		usage(stderr);
		return XWAYCTL_USAGE;
	}
	if (!strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(stdout);
		return XWAYCTL_OK;
	}
	nargs = hoist_options(argc, argv, args);
	if (nargs == 0) {
		usage(stderr);
		return XWAYCTL_USAGE;
	}
	for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++)
		if (!strcmp(args[0], subcommands[i].name))
			return subcommands[i].main(nargs, args);
	fprintf(stderr, "%s: unknown command '%s'\n", prog, args[0]);
	usage(stderr);
	return XWAYCTL_USAGE;
}
