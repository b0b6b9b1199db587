/* SPDX-License-Identifier: MIT */
/*
 * xwayctl stats: broker counters and fallbacks by reason.
 * Non-root users only see their own uid's entries (the broker filters).
 */
#include <xway/proto.h>

#include "xwayctl.h"

int stats_main(int argc, char **argv)
{
	return xwayctl_query_main(argc, argv, XWAY_Q_STATS,
				  "broker counters and fallbacks by reason");
}
