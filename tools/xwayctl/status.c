/* SPDX-License-Identifier: MIT */
/*
 * xwayctl status: the broker's state: version, mode, socket, uptime, counts.
 * Non-root users only see their own uid's entries (the broker filters).
 */
#include <xway/proto.h>

#include "xwayctl.h"

int status_main(int argc, char **argv)
{
	return xwayctl_query_main(argc, argv, XWAY_Q_STATUS,
				  "the broker's state: version, mode, socket, uptime, counts");
}
