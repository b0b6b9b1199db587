#!/bin/bash
# SPDX-License-Identifier: MIT
# The comparison: the same verified transfer and ping-pong as 10-vchan-raw
# (same program, same sizes) over kernel TCP between the domUs, i.e.
# netfront -> netback -> dom0's bridge -> netback -> netfront.
set -u -o pipefail
role=$1
rc=0
port=47101
for mode in block poll; do
	flag=; [ $mode = poll ] && flag=--poll
	if [ "$role" = server ]; then
		"$TB_BIN/xtb-vchan" server --tcp "$TB_SELF_IP" $port --timeout "$TB_PROBE_TIMEOUT" $flag
	else
		"$TB_BIN/xtb-vchan" client --tcp "$TB_SRV_IP" $port \
			--bytes "$TB_BYTES" --pings "$TB_PINGS" --timeout "$TB_PROBE_TIMEOUT" $flag
	fi | sed "s/^/$mode./" || rc=1
	port=$((port + 1))
done
exit $rc
