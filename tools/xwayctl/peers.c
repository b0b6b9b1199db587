/* SPDX-License-Identifier: MIT */
/*
 * xwayctl peers: processes connected to the broker (pid, uid, listeners, pending offers).
 * Non-root users only see their own uid's entries (the broker filters).
 */
#include <xway/proto.h>

#include "xwayctl.h"

int peers_main(int argc, char **argv)
{
	return xwayctl_query_main(argc, argv, XWAY_Q_PEERS,
				  "processes connected to the broker (pid, uid, listeners, pending offers)");
}
