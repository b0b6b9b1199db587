/* SPDX-License-Identifier: MIT */
/*
 * xwayctl listeners: listening sockets registered for acceleration, with namespace and owner.
 * Non-root users only see their own uid's entries (the broker filters).
 */
#include <xway/proto.h>

#include "xwayctl.h"

int listeners_main(int argc, char **argv)
{
	return xwayctl_query_main(argc, argv, XWAY_Q_LISTENERS,
				  "listening sockets registered for acceleration, with namespace and owner");
}
