/* SPDX-License-Identifier: MIT */
/*
 * xwayctl internals: the subcommand entry points (one file each, like
 * wireguard-tools) and the broker query they share.  Exit codes: 0 ok,
 * 1 broker unreachable, 2 usage, 3 protocol error.
 */
#ifndef XWAYCTL_H
#define XWAYCTL_H

#include <stdbool.h>
#include <stdint.h>

#define XWAYCTL_OK          0
#define XWAYCTL_UNREACHABLE 1
#define XWAYCTL_USAGE       2
#define XWAYCTL_PROTO       3

extern const char *prog;

/* Parse [--json] [--socket PATH], ask the broker, print its answer. */
int xwayctl_query_main(int argc, char **argv, uint32_t what, const char *help);

/* Connect to the broker, send QUERY{what, json}, copy the TEXT reply to
 * stdout.  Returns an XWAYCTL_* exit code and prints why on failure. */
int xwayctl_query(const char *sock, uint32_t what, bool json);

int status_main(int argc, char **argv);
int peers_main(int argc, char **argv);
int listeners_main(int argc, char **argv);
int connections_main(int argc, char **argv);
int stats_main(int argc, char **argv);

#endif /* XWAYCTL_H */
