/* SPDX-License-Identifier: MIT */
/*
 * xwayctl connections: connections: accelerated (with live byte counts), pending, closed, fallen back (with reason).
 * Non-root users only see their own uid's entries (the broker filters).
 */
#include <xway/proto.h>

#include "xwayctl.h"

int connections_main(int argc, char **argv)
{
	return xwayctl_query_main(argc, argv, XWAY_Q_CONNECTIONS,
				  "connections: accelerated (with live byte counts), pending, closed, fallen back (with reason)");
}
